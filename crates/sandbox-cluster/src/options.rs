//! How a sandbox is started.

use std::path::PathBuf;

use super::faults::Faults;

/// Where the sandbox keeps its files, where it listens, what it starts with and what it
/// injects.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Holds `kubeconfig` and `requests.jsonl`; created if missing.
    pub dir: PathBuf,
    /// The port on 127.0.0.1; 0 picks any free port.
    pub port: u16,
    /// A scenario file of objects to start with (when there is no state file to resume).
    pub objects: Option<PathBuf>,
    /// Where the cluster's state lives: loaded at start if the file exists (instead of
    /// `objects`), and rewritten after every change, before the change is acknowledged, so
    /// that a sandbox killed at any moment restarts from it with every acknowledged write.
    pub state_file: Option<PathBuf>,
    /// Where to save the state on shutdown.
    pub save: Option<PathBuf>,
    /// Latency, failures and the seed.
    pub faults: Faults,
}
