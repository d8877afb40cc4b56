//! `--state cluster`: runs whose lock ([a Lease](super::lease)) and journal ([a chain of
//! ConfigMaps](super::cluster_journal)) live in the cluster, so that a laptop and a CI job see
//! the same runs. The local state directory keeps a cache of each journal, which the
//! commands that read runs (`list`, `status`) refresh from the cluster first; `state push`
//! and `state pull` move a run between a local state directory and the cluster.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;

use super::cluster_journal::{self, ClusterJournal};
use super::journal::JOURNAL_FILE;
use super::lease::{self, HolderIdentity, LeaseLock};
use super::lock::LockHolder;
use super::state::StateDir;
use crate::diagnostic::Diagnostic;
use crate::kube::Cluster;
use crate::{Error, Result};

/// `--state` and its options, flattened into every command that reads or writes runs (`plan`,
/// `run`, `status`, `list`, `fleet`): where runs keep their lock and journal.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Where runs keep their lock and journal: this machine's state directory, or the
    /// cluster the playbook talks to (a Lease and ConfigMaps in --state-namespace), so that
    /// every machine with the cluster's credentials sees the same runs.
    #[arg(long, env = "RUNBOOK_STATE", value_enum, default_value = "local")]
    pub state: StateLocation,
    /// With --state cluster: the namespace runs are kept in (created if missing).
    #[arg(
        long,
        env = "RUNBOOK_STATE_NAMESPACE",
        default_value = lease::DEFAULT_NAMESPACE,
        value_name = "NAMESPACE"
    )]
    pub state_namespace: String,
    /// With --state cluster: how long a run's Lease holds without being renewed; a runner
    /// killed with SIGKILL makes the next one wait this long before it takes over.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub lease_duration: Duration,
}

/// Where runs keep their lock and journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateLocation {
    /// The state directory (--state-dir) of this machine.
    Local,
    /// The cluster, with a cache in the state directory.
    Cluster,
}

impl StateArgs {
    /// With `--state cluster`, where in the cluster runs are kept and who this process is
    /// (its environment says); none with `--state local`.
    pub fn cluster_state(&self) -> Result<Option<ClusterState>, Diagnostic> {
        match self.state {
            StateLocation::Local => Ok(None),
            StateLocation::Cluster => {
                let env: HashMap<String, String> = std::env::vars().collect();
                ClusterState::new(&self.state_namespace, self.lease_duration, &env).map(Some)
            }
        }
    }
}

/// A `--lease-duration` such as `30s` or `2m`.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    crate::syntax::HumanDuration::parse(text).map(|duration| duration.0)
}

/// Where in the cluster runs keep their lock and journal.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// The state namespace (created if missing).
    pub namespace: String,
    /// How long the Lease stays valid without a renewal.
    pub lease_duration: Duration,
    /// Who this runner is, as the Lease names it.
    pub identity: HolderIdentity,
}

impl ClusterState {
    /// The state of `--state-namespace NAMESPACE` (checked: a namespace name) for this
    /// process, whose environment says who it is.
    pub fn new(
        namespace: &str,
        lease_duration: Duration,
        env: &HashMap<String, String>,
    ) -> Result<Self, Diagnostic> {
        check_namespace_name(namespace)?;
        if lease_duration < Duration::from_secs(3) {
            return Err(Diagnostic::new(format!(
                "--lease-duration {}s is too short: a runner renews its Lease every third of it",
                lease_duration.as_secs()
            ))
            .help("give at least 3s; the default is 30s"));
        }
        Ok(ClusterState {
            namespace: namespace.into(),
            lease_duration,
            identity: HolderIdentity::of_this_process(env),
        })
    }

    /// The Lease of a run (to take it, or to ask who holds it).
    pub fn lease(&self, cluster: &Cluster, run_id: &str) -> Result<LeaseLock> {
        Ok(LeaseLock::new(
            cluster.clone(),
            &self.namespace,
            run_id,
            self.identity.clone(),
            self.lease_duration,
        )?)
    }

    /// Who holds run `run_id`'s Lease now, as `status` and `list` show a holder.
    pub async fn holder(&self, cluster: &Cluster, run_id: &str) -> Result<Option<LockHolder>> {
        let lock = self.lease(cluster, run_id)?;
        Ok(lock
            .holder()
            .await?
            .map(|holder| holder.as_lock_holder(&lock.object())))
    }

    /// Refreshes the cache in `cache` with every run the cluster holds; returns their ids,
    /// most recently active first.
    pub async fn refresh_cache(&self, cluster: &Cluster, cache: &StateDir) -> Result<Vec<String>> {
        let mut runs = Vec::new();
        for run_id in cluster_journal::runs_in(cluster, &self.namespace)
            .await
            .map_err(anyhow::Error::from)?
        {
            let text = self.refresh_run(cluster, cache, &run_id).await?;
            let last = text
                .lines()
                .rev()
                .find_map(|line| serde_json::from_str::<super::event::Event>(line).ok())
                .map(|event| event.ts)
                .unwrap_or_default();
            runs.push((last, run_id));
        }
        runs.sort_by(|a, b| b.cmp(a));
        Ok(runs.into_iter().map(|(_, id)| id).collect())
    }

    /// Refreshes the cache of one run (`plan` reads it to know what is done); returns the
    /// journal's text.
    pub async fn refresh_run(
        &self,
        cluster: &Cluster,
        cache: &StateDir,
        run_id: &str,
    ) -> Result<String> {
        let journal = ClusterJournal::open(cluster, &self.namespace, run_id)
            .await
            .map_err(invalid_journal)?;
        let text = journal.text();
        let run_dir = cache.create_run_dir(run_id)?;
        write_atomically(&run_dir.join(JOURNAL_FILE), &text)?;
        Ok(text)
    }

    /// `state push`: puts the local run `run_id` of `local` into the cluster, holding its
    /// Lease meanwhile. The cluster's journal of the run, if there is one, must be the
    /// beginning of the local one (the local run went on from it); the lines it lacks are
    /// added. Returns how many lines were written.
    pub async fn push(&self, cluster: &Cluster, local: &StateDir, run_id: &str) -> Result<usize> {
        let path = local.run_dir(run_id).join(JOURNAL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            Error::from(
                Diagnostic::new(format!(
                    "no run `{run_id}` to push: {}: {error}",
                    path.display()
                ))
                .help("`runbook list` (without --state cluster) shows the local runs"),
            )
        })?;
        let held = self.take(cluster, run_id).await?;
        let result = async {
            let mut journal = ClusterJournal::open(cluster, &self.namespace, run_id)
                .await
                .map_err(invalid_journal)?;
            let Some(missing) = text.strip_prefix(journal.text().as_str()) else {
                return Err(Error::from(
                    Diagnostic::new(format!(
                        "run `{run_id}`: the cluster's journal ({}) has events the local one ({}) lacks",
                        journal.object(),
                        path.display()
                    ))
                    .help("the run went on elsewhere: `runbook state pull` it, or go on with --state cluster"),
                ));
            };
            let lines: Vec<&str> = missing.split_inclusive('\n').collect();
            for line in &lines {
                journal
                    .append(line)
                    .await
                    .with_context(|| format!("cannot push run `{run_id}` to the cluster"))?;
            }
            Ok(lines.len())
        }
        .await;
        let _ = held.release().await;
        result
    }

    /// `state pull`: copies run `run_id`'s journal from the cluster into `local`, to go on
    /// there without the cluster. The local journal, if there is one, must be the beginning
    /// of the cluster's. Returns how many lines the local journal gained.
    pub async fn pull(&self, cluster: &Cluster, local: &StateDir, run_id: &str) -> Result<usize> {
        let held = self.take(cluster, run_id).await?;
        let result = async {
            let journal = ClusterJournal::open(cluster, &self.namespace, run_id)
                .await
                .map_err(invalid_journal)?;
            if journal.is_empty() {
                return Err(Error::from(
                    Diagnostic::new(format!(
                        "no run `{run_id}` in namespace `{}` of the cluster",
                        self.namespace
                    ))
                    .help("`runbook list --state cluster` shows the runs kept there"),
                ));
            }
            let run_dir = local.create_run_dir(run_id)?;
            let path = run_dir.join(JOURNAL_FILE);
            let local_text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(error) => {
                    return Err(anyhow::Error::from(error)
                        .context(format!("cannot read {}", path.display()))
                        .into());
                }
            };
            let cluster_text = journal.text();
            let Some(missing) = cluster_text.strip_prefix(local_text.as_str()) else {
                return Err(Error::from(
                    Diagnostic::new(format!(
                        "run `{run_id}`: the local journal ({}) has events the cluster's ({}) lacks",
                        path.display(),
                        journal.object()
                    ))
                    .help("the run went on locally: `runbook state push` it instead"),
                ));
            };
            write_atomically(&path, &cluster_text)?;
            Ok(missing.lines().count())
        }
        .await;
        let _ = held.release().await;
        result
    }

    /// Takes a run's Lease for `state push` or `pull`: a run being run elsewhere is not
    /// moved under it (exit 4).
    async fn take(&self, cluster: &Cluster, run_id: &str) -> Result<lease::HeldLease> {
        let lock = self.lease(cluster, run_id)?;
        match lock.acquire().await? {
            Ok(lease::Acquired::Free(held) | lease::Acquired::TakenOver(held, _)) => Ok(held),
            Err(holder) => Err(Error::Locked(format!(
                "run {run_id} is locked by {holder} (Lease {})\nhelp: wait for it to finish",
                lock.object()
            ))),
        }
    }
}

/// A journal in the cluster that runbook did not write is invalid input (exit 2), named.
pub(super) fn invalid_journal(error: cluster_journal::JournalError) -> Error {
    match error {
        cluster_journal::JournalError::Invalid { ref object, .. } => {
            let (namespace, name) = object.split_once('/').unwrap_or(("", object));
            Error::from(Diagnostic::new(error.to_string()).help(format!(
                "runbook did not write it so; look at it with `kubectl get configmap -n {namespace} {name} -o yaml`"
            )))
        }
        other => Error::Other(other.into()),
    }
}

/// Writes `text` to `path` whole or not at all.
fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A namespace name: a DNS label (lowercase letters, digits and `-`, at most 63, starting
/// and ending with a letter or digit).
fn check_namespace_name(name: &str) -> Result<(), Diagnostic> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Diagnostic::new(format!(
            "--state-namespace {name:?} is not a namespace name"
        ))
        .help("a namespace name has at most 63 lowercase letters, digits and '-', and starts and ends with a letter or digit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_namespaces_are_namespace_names() {
        for good in ["runbook", "runbook-state", "a", "x1"] {
            assert!(check_namespace_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Runbook", "-a", "a-", "a_b", &"a".repeat(64)] {
            let error = check_namespace_name(bad).unwrap_err();
            assert!(
                error.message.contains("--state-namespace"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_lease_duration_under_three_seconds_is_refused_naming_the_flag() {
        let error =
            ClusterState::new("runbook", Duration::from_secs(2), &HashMap::new()).unwrap_err();
        assert!(error.message.starts_with("--lease-duration 2s"), "{error}");
    }
}
