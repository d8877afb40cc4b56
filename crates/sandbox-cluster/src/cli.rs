//! `runbook sandbox up`: the sandbox cluster as a command in the foreground.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::Sandbox;
use super::duration::parse_duration;
use super::faults::Faults;
use super::options::SandboxOptions;

/// The options of `runbook sandbox up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where to write `kubeconfig` and the request log `requests.jsonl`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Objects to start with: a YAML stream, a YAML list or a `kind: List`.
    #[arg(long, value_name = "FILE")]
    pub objects: Option<PathBuf>,
    /// Keep the cluster's state in FILE: resume from it if it exists (--objects is then
    /// ignored), and rewrite it after every change, before answering, so that a killed
    /// sandbox restarts with every acknowledged write.
    #[arg(long = "state", value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Save the cluster's state to FILE on shutdown (loadable with --objects).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Latency added to every request: `50ms`, `1s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0ms")]
    pub latency: Duration,
    /// Share of requests answered 500 InternalError (0 to 1).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of requests whose connection is closed without an answer (0 to 1); an exec
    /// drawn for a drop is answered and its stream cut within its first second.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Cut every exec stream still open this long after it started (`30s`), as a network
    /// that drops long connections does; the command is hung up, detached children live on.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub exec_drop_after: Option<Duration>,
    /// Share of writes answered 409 Conflict (0 to 1).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub conflict_rate: f64,
    /// Seed of the faults and of generated names, for reproducible runs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Refuse VERB on RESOURCE with 403 Forbidden, as RBAC refuses a user without that rule
    /// (repeatable): `create:namespaces`, `delete:pods`, `*:leases`.
    #[arg(long, value_name = "VERB:RESOURCE", value_parser = crate::faults::Forbidden::parse)]
    pub forbid: Vec<crate::faults::Forbidden>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("`{text}` is not between 0 and 1"))
    }
}

/// Runs a sandbox in the foreground until SIGINT or SIGTERM, then saves its state (with
/// `--save`) and stops.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let options = SandboxOptions {
        dir: args.dir,
        port: args.port,
        objects: args.objects,
        state_file: args.state_file,
        save: args.save,
        faults: Faults {
            latency: args.latency,
            error_rate: args.error_rate,
            drop_rate: args.drop_rate,
            conflict_rate: args.conflict_rate,
            exec_drop_after: args.exec_drop_after,
            seed: args.seed,
            forbidden: args.forbid,
        },
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let sandbox = Sandbox::start(options).await?;
    eprintln!(
        "sandbox listening on {}; kubeconfig: {}",
        sandbox.url(),
        sandbox.kubeconfig().display()
    );
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    sandbox.shutdown().await
}
