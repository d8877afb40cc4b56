//! The state directory: `<state-dir>/runs/<run>/` holds each run's journal and lock.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indexmap::IndexMap;

use crate::playbook::Playbook;

/// Where runs are kept (`--state-dir`, `RUNBOOK_STATE_DIR`, default `.runbook/`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state directory at `root` (not created until a run needs it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Directory of one run.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    /// Creates the directory of a run.
    pub fn create_run_dir(&self, run_id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.run_dir(run_id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        Ok(dir)
    }

    /// Ids of the runs in this state directory, most recently active first.
    pub fn runs(&self) -> anyhow::Result<Vec<String>> {
        let runs_dir = self.root.join("runs");
        let entries = match std::fs::read_dir(&runs_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot list {}", runs_dir.display()));
            }
        };
        let mut runs: Vec<(std::time::SystemTime, String)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let journal = entry.path().join(super::journal::JOURNAL_FILE);
            if let Ok(metadata) = std::fs::metadata(&journal) {
                let modified = metadata.modified().unwrap_or(std::time::UNIX_EPOCH);
                runs.push((modified, entry.file_name().to_string_lossy().into_owned()));
            }
        }
        runs.sort_by(|a, b| b.cmp(a));
        Ok(runs.into_iter().map(|(_, id)| id).collect())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The id of a run: the playbook's name and a hash of its non-secret param values, so the
/// same command run again continues the same run.
pub fn run_id(playbook: &Playbook, params: &IndexMap<String, serde_json::Value>) -> String {
    playbook.run_id(params)
}
