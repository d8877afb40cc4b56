//! `runs/<run>/live.json`: how far the running step's long action is (a copy), rewritten at
//! most every 2 s while the run holds its lock, so that `runbook status` from another
//! terminal shows a copy that runs in the `runbook` process itself, as it shows detached ones.
//! Removed when the step ends; `status` reads it only while the lock is held.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::event::{Event, EventKind, RunOutput, now_rfc3339};
use crate::actions::output::LiveView;
use crate::actions::{Progress, StepOutput};
use crate::render::Masker;

/// The file's name in a run directory.
pub const LIVE_FILE: &str = "live.json";

/// How often the file is rewritten at most.
const WRITE_EVERY: Duration = Duration::from_secs(2);

/// What `live.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveProgress {
    /// The step.
    pub step: String,
    /// When it was written (RFC 3339).
    pub ts: String,
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Files done.
    pub done_files: u64,
    /// Files in all.
    pub total_files: u64,
    /// The shards being copied (indexes in the pass's plan), when the action says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_shards: Vec<usize>,
    /// Workers copying in parallel now, when the action says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

impl LiveProgress {
    /// The file of the run directory `run_dir`, if there is a readable one.
    pub fn read(run_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(run_dir.join(LIVE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A run's output that also keeps `live.json` up to date; everything is passed on.
pub struct LiveRecording {
    inner: Arc<dyn RunOutput>,
    path: PathBuf,
    last_write: Mutex<Option<Instant>>,
    /// The shards the running step's action said it copies, with the step.
    running: Mutex<(String, Vec<usize>)>,
}

impl LiveRecording {
    /// Passes everything on to `inner`, and keeps `run_dir/live.json`.
    pub fn new(inner: Arc<dyn RunOutput>, run_dir: &Path) -> Self {
        LiveRecording {
            inner,
            path: run_dir.join(LIVE_FILE),
            last_write: Mutex::new(None),
            running: Mutex::new((String::new(), Vec::new())),
        }
    }

    fn record(&self, step: &str, progress: Progress) {
        let Ok(mut last) = self.last_write.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < WRITE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let live = LiveProgress {
            step: step.to_string(),
            ts: now_rfc3339(),
            done_bytes: progress.done_bytes,
            total_bytes: progress.total_bytes,
            done_files: progress.done_files,
            total_files: progress.total_files,
            workers: progress.workers,
            running_shards: self
                .running
                .lock()
                .ok()
                .filter(|running| running.0 == step)
                .map(|running| running.1.clone())
                .unwrap_or_default(),
        };
        let Ok(text) = serde_json::to_string(&live) else {
            return;
        };
        // Whole or not at all: a reader never sees half a file. A failure only costs the
        // other terminal its view.
        let mut partial = self.path.clone().into_os_string();
        partial.push(".partial");
        let _ = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &self.path));
    }

    fn forget(&self) {
        if let Ok(mut last) = self.last_write.lock() {
            *last = None;
        }
        if let Ok(mut running) = self.running.lock() {
            *running = (String::new(), Vec::new());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl StepOutput for LiveRecording {
    fn line(&self, step: &str, line: &str) {
        self.inner.line(step, line);
    }

    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }

    fn progress(&self, step: &str, progress: Progress) {
        self.record(step, progress);
        self.inner.progress(step, progress);
    }

    fn notice(&self, text: &str) {
        self.inner.notice(text);
    }

    fn redraws(&self) -> bool {
        self.inner.redraws()
    }

    fn live(&self, step: &str, view: LiveView<'_>) {
        if let Ok(mut running) = self.running.lock() {
            *running = (step.to_string(), view.running.to_vec());
        }
        self.inner.live(step, view);
    }
}

impl RunOutput for LiveRecording {
    fn event(&self, event: &Event, json: &serde_json::Value) {
        if matches!(
            event.kind,
            EventKind::StepFinished { .. } | EventKind::RunFinished { .. }
        ) {
            self.forget();
        }
        self.inner.event(event, json);
    }

    fn verbose(&self) -> bool {
        self.inner.verbose()
    }

    fn set_masker(&self, masker: Masker) {
        self.inner.set_masker(masker);
    }

    fn set_run(&self, run_id: &str) {
        self.inner.set_run(run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Nothing;

    impl StepOutput for Nothing {
        fn line(&self, _: &str, _: &str) {}
        fn warn(&self, _: &str) {}
        fn progress(&self, _: &str, _: Progress) {}
        fn notice(&self, _: &str) {}
    }

    impl RunOutput for Nothing {
        fn event(&self, _: &Event, _: &serde_json::Value) {}
        fn verbose(&self) -> bool {
            false
        }
        fn set_masker(&self, _: Masker) {}
        fn set_run(&self, _: &str) {}
    }

    #[test]
    fn the_file_holds_the_last_progress_until_the_step_ends() {
        let dir = tempfile::tempdir().unwrap();
        let recording = LiveRecording::new(Arc::new(Nothing), dir.path());
        let progress = Progress {
            done_bytes: 5,
            total_bytes: 10,
            done_files: 1,
            total_files: 2,
            workers: Some(8),
        };
        recording.progress("copy", progress);
        let live = LiveProgress::read(dir.path()).expect("written");
        assert_eq!(
            (
                live.step.as_str(),
                live.done_bytes,
                live.total_files,
                live.workers
            ),
            ("copy", 5, 2, Some(8))
        );
        // Within 2 s, not rewritten.
        recording.progress(
            "copy",
            Progress {
                done_bytes: 6,
                ..progress
            },
        );
        assert_eq!(LiveProgress::read(dir.path()).unwrap().done_bytes, 5);
        let finished = Event {
            ts: now_rfc3339(),
            run: "r".into(),
            kind: EventKind::RunFinished {
                status: super::super::event::RunStatus::Ok,
                exit_code: 0,
            },
        };
        recording.event(&finished, &serde_json::Value::Null);
        assert_eq!(LiveProgress::read(dir.path()), None);
    }
}
