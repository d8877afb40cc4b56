//! `runbook run|plan PLAYBOOK --sandbox [--sandbox-dir DIR]`: a sandbox directory seeded with
//! a [`Hub`], served from the runbook process while the command runs, and kept for the next
//! command when the run is not finished.

use std::path::{Path, PathBuf};

use anyhow::Context;

use sandbox_cluster::SandboxOptions;
use sandbox_cluster::embedded::EmbeddedSandbox;
use sandbox_cluster::fleet::Fleet;
use sandbox_cluster::hub::Hub;

use crate::Exit;

/// The file the sandbox keeps its objects in between commands.
const STATE_FILE: &str = "sandbox-state.yaml";

/// A seeded sandbox directory for one command.
#[derive(Debug)]
pub struct SandboxSession {
    dir: PathBuf,
    temporary: bool,
    hub: Hub,
}

impl SandboxSession {
    /// Uses `dir` (seeding it unless it was seeded before), or seeds a new temporary
    /// directory.
    pub fn prepare(dir: Option<&Path>, announce: bool) -> anyhow::Result<Self> {
        Self::prepare_with(dir, announce, None)
    }

    /// Like [`SandboxSession::prepare`], seeding a cluster of `hubs` hubs (a [`Fleet`]) for
    /// `runbook fleet`.
    pub fn prepare_fleet(dir: Option<&Path>, hubs: usize, announce: bool) -> anyhow::Result<Self> {
        Self::prepare_with(dir, announce, Some(Fleet::new(hubs)))
    }

    /// A directory seeded before, to read (`fleet status --sandbox-dir`): not seeded, not
    /// locked, not served.
    pub fn existing(dir: &Path) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir).context("cannot resolve --sandbox-dir")?;
        if !Hub::is_seeded(&dir) {
            anyhow::bail!(
                "--sandbox-dir {}: no sandbox was seeded there (run `runbook fleet run ... --sandbox --sandbox-dir {}` first)",
                dir.display(),
                dir.display()
            );
        }
        Ok(SandboxSession {
            dir,
            temporary: false,
            hub: Hub::new("staging"),
        })
    }

    /// What a fleet command needs of the sandbox.
    pub fn fleet_facts(&self) -> crate::fleet::SandboxFacts {
        crate::fleet::SandboxFacts {
            dir: self.dir.clone(),
            state_dir: self.state_dir(),
            params: self.params(),
        }
    }

    fn prepare_with(
        dir: Option<&Path>,
        announce: bool,
        fleet: Option<Fleet>,
    ) -> anyhow::Result<Self> {
        let (dir, temporary) = match dir {
            Some(dir) => (
                std::path::absolute(dir).context("cannot resolve --sandbox-dir")?,
                false,
            ),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("runbook-sandbox-")
                    .tempdir()
                    .context("cannot create a temporary directory for the sandbox")?;
                (dir.keep(), true)
            }
        };
        let hub = fleet
            .as_ref()
            .and_then(|fleet| fleet.hubs.first().cloned())
            .unwrap_or_else(|| Hub::new("staging"));
        if !Hub::is_seeded(&dir) {
            match &fleet {
                Some(fleet) => {
                    if announce {
                        let names: Vec<&str> =
                            fleet.hubs.iter().map(|hub| hub.name.as_str()).collect();
                        eprintln!(
                            "sandbox: seeding hubs {} of cluster `{}` in {}",
                            names.join(", "),
                            fleet.cluster(),
                            dir.display()
                        );
                    }
                    fleet.seed(&dir)?;
                }
                None => {
                    if announce {
                        eprintln!(
                            "sandbox: seeding hub `{}` of cluster `{}` in {}",
                            hub.name,
                            hub.cluster,
                            dir.display()
                        );
                    }
                    hub.seed(&dir)?;
                }
            }
            // Copies treat a file changed less than a second before a pass started as
            // possibly changed since (a margin for file servers' clocks). Real home
            // directories are older than that: let the new ones age, so that the final
            // copy of a demo shows what users changed, not the whole tree again.
            std::thread::sleep(std::time::Duration::from_millis(1200));
        } else if announce {
            eprintln!("sandbox: continuing in {}", dir.display());
        }
        Ok(SandboxSession {
            dir,
            temporary,
            hub,
        })
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The param values the sandbox offers the playbook.
    pub fn params(&self) -> Vec<(String, String)> {
        let runbook = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("runbook"));
        self.hub.params(&self.dir, &runbook)
    }

    /// Where the run's journal goes unless `--state-dir` says otherwise: beside the cluster
    /// it changed, so that the two stay together.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The kubeconfig that reaches the sandbox once it is served.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Serves the sandbox from this process until the returned handle is stopped or dropped.
    pub fn serve(&self) -> anyhow::Result<EmbeddedSandbox> {
        EmbeddedSandbox::start(SandboxOptions {
            dir: self.dir.clone(),
            objects: Some(self.dir.join("hub-objects.yaml")),
            state_file: Some(self.dir.join(STATE_FILE)),
            ..SandboxOptions::default()
        })
    }

    /// After the command: a temporary sandbox is removed when there is nothing left to
    /// continue; otherwise says where the sandbox is and how to go on (the run's journal is
    /// in `state_dir`, the sandbox's own unless `--state-dir` said otherwise).
    pub fn finish(self, exit: Exit, was_run: bool, quiet: bool, state_dir: &Path) {
        if self.temporary && (exit == Exit::Success || !was_run) {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        if quiet {
            return;
        }
        let dir = self.dir.display();
        eprintln!("sandbox: kept in {dir}");
        if was_run && exit != Exit::Success {
            eprintln!("  continue: the same command with --sandbox-dir {dir}");
        }
        eprintln!(
            "  look at it: runbook sandbox up --dir {dir} --state {dir}/{STATE_FILE}, then \
             kubectl --kubeconfig {dir}/kubeconfig get pv,pvc,pods -A"
        );
        eprintln!(
            "  the run's journal: runbook status --state-dir {}",
            state_dir.display()
        );
    }
}
