//! runbook's side of the sandbox cluster (the `sandbox-cluster` crate): the `runbook sandbox`
//! commands, the [`session`] of `run|plan --sandbox`, and the [`deployer`] stand-in, which
//! is a client of a cluster (through [`crate::kube::Cluster`]), not part of one.
//!
//! The cluster itself comes in with the `sandbox` feature, on by default. Without it,
//! `--sandbox` and `runbook sandbox up` stay in the command line and say how to get them
//! (invalid input, exit 2); the deployer stand-in works either way.

pub mod deployer;
#[cfg(feature = "sandbox")]
pub mod session;

use clap::Subcommand;

use crate::kube::ClusterOptions;
use deployer::DeployerCommand;

/// The sandbox's subcommands.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run a simulated Kubernetes cluster on 127.0.0.1 in the foreground, until SIGINT or
    /// SIGTERM; `kubectl` and `runbook` reach it through DIR/kubeconfig.
    Up(UpArgs),
    /// The stand-in for 2i2c's `deployer`, against the cluster of --kubeconfig/--context.
    Deployer {
        /// What to do.
        #[command(subcommand)]
        command: DeployerCommand,
    },
}

#[cfg(feature = "sandbox")]
pub use sandbox_cluster::UpArgs;

/// The options of `runbook sandbox up`, taken as they come: this runbook was built without
/// the sandbox, and says so rather than that the flags are unknown.
#[cfg(not(feature = "sandbox"))]
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The options of a runbook built with the sandbox.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true, hide = true)]
    args: Vec<String>,
}

/// Runs a sandbox command; `cluster` is the cluster of the global `--kubeconfig` and
/// `--context`, which the deployer stand-in talks to.
pub async fn run_command(command: SandboxCommand, cluster: &ClusterOptions) -> crate::Result<()> {
    match command {
        #[cfg(feature = "sandbox")]
        SandboxCommand::Up(args) => Ok(sandbox_cluster::up(args).await?),
        #[cfg(not(feature = "sandbox"))]
        SandboxCommand::Up(_) => Err(not_built("`runbook sandbox up`").into()),
        SandboxCommand::Deployer { command } => deployer::run_command(command, cluster).await,
    }
}

/// Ok when this runbook has the sandbox cluster; else the invalid input `what` (a flag or
/// a command) is, naming it and the feature.
pub fn check_built(what: &str) -> Result<(), crate::Diagnostic> {
    if cfg!(feature = "sandbox") {
        Ok(())
    } else {
        Err(not_built(what))
    }
}

fn not_built(what: &str) -> crate::Diagnostic {
    crate::Diagnostic::new(format!(
        "{what} needs the sandbox cluster, and this runbook was built without it (the `sandbox` feature)"
    ))
    .help("build runbook with its default features (`cargo build`), or add `--features sandbox`")
}

/// Without the sandbox no session can exist: this type has no values, so that `main` reads
/// the same either way.
#[cfg(not(feature = "sandbox"))]
pub mod session {
    use std::path::{Path, PathBuf};

    use crate::Exit;

    /// A sandbox session, which this runbook cannot have.
    #[derive(Debug)]
    pub enum SandboxSession {}

    impl SandboxSession {
        /// Refuses: there is no sandbox to prepare.
        pub fn prepare(_dir: Option<&Path>, _announce: bool) -> crate::Result<Self> {
            Err(super::not_built("--sandbox").into())
        }

        /// Refuses: there is no sandbox to prepare.
        pub fn prepare_fleet(
            _dir: Option<&Path>,
            _hubs: usize,
            _announce: bool,
        ) -> crate::Result<Self> {
            Err(super::not_built("--sandbox").into())
        }

        /// Refuses: there is no sandbox to read.
        pub fn existing(_dir: &Path) -> crate::Result<Self> {
            Err(super::not_built("--sandbox-dir").into())
        }

        /// What a fleet command needs of the sandbox.
        pub fn fleet_facts(&self) -> crate::fleet::SandboxFacts {
            match *self {}
        }

        /// The sandbox directory.
        pub fn dir(&self) -> &Path {
            match *self {}
        }

        /// The param values the sandbox offers the playbook.
        pub fn params(&self) -> Vec<(String, String)> {
            match *self {}
        }

        /// Where the run's journal goes.
        pub fn state_dir(&self) -> PathBuf {
            match *self {}
        }

        /// The kubeconfig that reaches the sandbox.
        pub fn kubeconfig(&self) -> PathBuf {
            match *self {}
        }

        /// Serves the sandbox.
        pub fn serve(&self) -> anyhow::Result<std::convert::Infallible> {
            match *self {}
        }

        /// After the command.
        pub fn finish(self, _exit: Exit, _was_run: bool, _quiet: bool, _state_dir: &Path) {
            match self {}
        }
    }
}
