//! Durable state (`runbook sandbox up --state FILE`): the cluster's objects written to a file
//! after every change, before the change is acknowledged, so that a sandbox killed at any
//! moment (`kill -9` included) restarts from the file with every write a client was told
//! about.
//!
//! The file is a scenario snapshot ([`State::snapshot`]: a `kind: List` of the objects with
//! their uids, timestamps, finalizers and statuses, without resource versions) whose list
//! `metadata.resourceVersion` carries the version counter, so that versions handed out
//! after a restart are higher than any a client saw before it. `--objects` and `kubectl
//! apply -f` read it too.
//!
//! Writes go to a temporary file in the same directory, are synced, and are renamed over the
//! old file: a reader (or a restart) sees the old state or the new one, never half of one.
//! A snapshot of tens of objects is tens of kilobytes; nothing is written when nothing
//! changed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::cluster::{Cluster, State};
use super::scenario::{self, ScenarioError};

/// The file a cluster's state is kept in, and the version last written there.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    written: Option<u64>,
}

impl StateFile {
    /// A state file at `path`, not written yet.
    pub fn new(path: PathBuf) -> Self {
        StateFile {
            path,
            written: None,
        }
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` unless it is the version written last; returns whether it wrote.
    pub fn write(&mut self, state: &State) -> Result<bool, ScenarioError> {
        let revision = state.store.revision();
        if self.written == Some(revision) {
            return Ok(false);
        }
        let text = render(state).map_err(|message| ScenarioError::Parse {
            path: self.path.clone(),
            message,
        })?;
        write_atomically(&self.path, text.as_bytes()).map_err(|source| ScenarioError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.written = Some(revision);
        Ok(true)
    }
}

/// The text of a state file.
fn render(state: &State) -> Result<String, String> {
    let mut snapshot = state.snapshot();
    snapshot["metadata"] = json!({"resourceVersion": state.store.revision().to_string()});
    let yaml = serde_saphyr::to_string(&snapshot).map_err(|error| error.to_string())?;
    Ok(format!(
        "# The state of a runbook sandbox cluster, rewritten after every change; resume it with\n\
         # `runbook sandbox up --state FILE`.\n{yaml}"
    ))
}

/// Replaces `path` with `bytes` so that a crash leaves the old content or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".runbook-sandbox-state")
        .tempfile_in(dir)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    // The rename itself is durable once the directory is synced (a process kill does not
    // need it, a machine crash does).
    std::fs::File::open(dir)?.sync_all()
}

/// Loads the state saved in `path` into `cluster`: objects as they were, the version
/// counter past the saved one, and fresh identities (a fixed seed would otherwise hand out
/// the saved objects' uids again). Returns how many objects the file held.
pub fn load(cluster: &Cluster, path: &Path) -> Result<usize, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.into(),
        source,
    })?;
    let documents = scenario::parse_documents(&text, path)?;
    let revision = documents.iter().find_map(|document| {
        document
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|version| version.parse::<u64>().ok())
    });
    let objects = scenario::objects_of(documents);
    cluster.write(|state| {
        if let Some(revision) = revision {
            state.store.advance_to(revision);
        }
        // Any salt but 0 moves to another sequence; the saved version differs per save.
        state.identities.reseed(revision.unwrap_or(1).max(1));
        state.load_objects(objects, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::WriteOptions;
    use kube_kinds::find_kind;

    fn config_map(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "data": {"on": "yes", "n": "1"}})
    }

    fn create(cluster: &Cluster, body: Value) {
        let kind = find_kind("ConfigMap").unwrap();
        let options = WriteOptions {
            field_manager: "test".into(),
            ..WriteOptions::default()
        };
        cluster
            .write(|state| state.create(kind, "default", body, &options))
            .unwrap();
    }

    #[test]
    fn every_change_is_written_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        let cluster = Cluster::new(7);
        cluster.persist_to(path.clone()).unwrap();
        create(&cluster, config_map("settings"));
        // No shutdown, no save: the file is all there is.
        let again = Cluster::new(7);
        // The three namespaces, the node, the config map.
        assert_eq!(load(&again, &path).unwrap(), 5);
        assert_eq!(again.read(State::snapshot), cluster.read(State::snapshot));
        let kind = find_kind("ConfigMap").unwrap();
        let restored = again.get(kind, "default", "settings").unwrap();
        assert_eq!(restored["data"], json!({"on": "yes", "n": "1"}));
        let version = |cluster: &Cluster| cluster.read(|state| state.store.revision());
        assert!(
            version(&again) > version(&cluster),
            "versions never go back"
        );
        create(&again, config_map("other"));
        let uids = |cluster: &Cluster| {
            cluster.read(|state| {
                state
                    .store
                    .all()
                    .map(|(_, object)| crate::meta::uid(object).to_string())
                    .collect::<std::collections::BTreeSet<_>>()
            })
        };
        assert_eq!(
            uids(&again).len(),
            6,
            "the same seed does not give the restored uids again"
        );
    }

    #[test]
    fn nothing_is_written_when_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        let cluster = Cluster::new(1);
        let mut file = StateFile::new(path);
        assert!(cluster.read(|state| file.write(state)).unwrap());
        assert!(!cluster.read(|state| file.write(state)).unwrap());
        create(&cluster, config_map("c"));
        assert!(cluster.read(|state| file.write(state)).unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("state.yaml")]);
    }

    #[test]
    fn a_state_file_is_a_scenario_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        let cluster = Cluster::new(1);
        cluster.persist_to(path.clone()).unwrap();
        create(&cluster, config_map("c"));
        let again = Cluster::new(2);
        scenario::load(&again, &path).unwrap();
        assert_eq!(again.read(State::snapshot), cluster.read(State::snapshot));
    }
}
