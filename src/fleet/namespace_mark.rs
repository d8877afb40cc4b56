//! While a fleet works on a hub, the hub's namespace says so: labels that `kubectl get ns -L
//! runbook.dev/phase,runbook.dev/step` shows, and annotations with the run, its holder and
//! since when, updated at each phase change (as seed 000's "the dataset is marked
//! Migrating"). At the end the phase says how the run ended and the holder is removed.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::actions::{Progress, StepOutput};
use crate::engine::event::{Event, EventKind, RunOutput, RunStatus, StepStatus};
use crate::kube::{Cluster, ObjectPatch, find_kind};
use crate::render::Masker;

/// The label with the run's phase: `running`, `at-gate`, `refused`, `failed`,
/// `interrupted`, `done`.
pub const PHASE_LABEL: &str = "runbook.dev/phase";
/// The label with the step the run is at (removed once it is done).
pub const STEP_LABEL: &str = "runbook.dev/step";
/// The annotation with the run's id.
pub const RUN_ANNOTATION: &str = "runbook.dev/run";
/// The annotation with the playbook's name.
pub const PLAYBOOK_ANNOTATION: &str = "runbook.dev/playbook";
/// The annotation naming who runs it, `USER@HOST pid=PID` (removed at the end).
pub const HOLDER_ANNOTATION: &str = "runbook.dev/holder";
/// The annotation with when the phase last changed (RFC 3339).
pub const SINCE_ANNOTATION: &str = "runbook.dev/since";

/// Where a run stands, as the namespace shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    run: String,
    playbook: String,
    phase: &'static str,
    step: Option<String>,
    /// Whether the run has ended (the holder goes).
    ended: bool,
    /// When the event that set it happened (RFC 3339).
    since: String,
}

impl Mark {
    /// The merge patch that puts the mark on a namespace.
    fn patch(&self, holder: &str) -> serde_json::Value {
        let ended_or = |value: &str| {
            if self.ended {
                serde_json::Value::Null
            } else {
                value.into()
            }
        };
        serde_json::json!({
            "metadata": {
                "labels": {
                    PHASE_LABEL: self.phase,
                    STEP_LABEL: match (&self.step, self.ended && self.phase == "done") {
                        (Some(step), false) => serde_json::Value::from(step.as_str()),
                        _ => serde_json::Value::Null,
                    },
                },
                "annotations": {
                    RUN_ANNOTATION: self.run,
                    PLAYBOOK_ANNOTATION: self.playbook,
                    HOLDER_ANNOTATION: ended_or(holder),
                    SINCE_ANNOTATION: self.since,
                },
            }
        })
    }
}

/// A hub's run output that also marks the hub's namespace; [`NamespaceMark::finish`] waits
/// for the last mark to be written.
pub struct NamespaceMark {
    inner: Arc<dyn RunOutput>,
    playbook: String,
    /// Mark only once a step starts: a `run` whose steps are all done does not work on the
    /// hub, and leaves its namespace as it is.
    from_first_step: bool,
    marks: std::sync::Mutex<MarkState>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct MarkState {
    sender: Option<mpsc::UnboundedSender<Mark>>,
    last: Option<Mark>,
}

impl NamespaceMark {
    /// Marks namespace `hub` of `cluster` as the run that `inner` shows goes on. Must be
    /// called inside the runtime.
    pub fn new(
        inner: Arc<dyn RunOutput>,
        cluster: Cluster,
        hub: &str,
        playbook: &str,
    ) -> Arc<Self> {
        NamespaceMark::start(inner, cluster, hub, playbook, false)
    }

    /// As [`NamespaceMark::new`], for a single `run` on a hub: the namespace is marked from
    /// the first step that starts, so that a run with nothing left to do changes nothing.
    pub fn from_first_step(
        inner: Arc<dyn RunOutput>,
        cluster: Cluster,
        hub: &str,
        playbook: &str,
    ) -> Arc<Self> {
        NamespaceMark::start(inner, cluster, hub, playbook, true)
    }

    fn start(
        inner: Arc<dyn RunOutput>,
        cluster: Cluster,
        hub: &str,
        playbook: &str,
        from_first_step: bool,
    ) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let holder = format!(
            "{}@{} pid={}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            crate::engine::lock::host_name(),
            std::process::id()
        );
        let writer = tokio::spawn(write_marks(
            receiver,
            cluster,
            hub.to_string(),
            holder,
            inner.clone(),
        ));
        Arc::new(NamespaceMark {
            inner,
            playbook: playbook.to_string(),
            from_first_step,
            marks: std::sync::Mutex::new(MarkState {
                sender: Some(sender),
                last: None,
            }),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Waits (up to 20 s) until the last mark is written.
    pub async fn finish(&self) {
        if let Ok(mut marks) = self.marks.lock() {
            marks.sender = None;
        }
        let writer = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), writer).await;
        }
    }

    /// The mark an event leads to, if it changes the phase or the step.
    fn mark_of(&self, event: &Event, last: Option<&Mark>) -> Option<Mark> {
        let step_of = |step: &str| Some(step.to_string());
        let (phase, step, ended) = match &event.kind {
            EventKind::RunStarted { .. } => ("running", None, false),
            EventKind::StepStarted { step, .. } => ("running", step_of(step), false),
            EventKind::Paused { step, .. } => ("at-gate", step_of(step), false),
            EventKind::StepFinished { step, status, .. } => match status {
                StepStatus::Refused => ("refused", step_of(step), false),
                StepStatus::Failed => ("failed", step_of(step), false),
                StepStatus::Interrupted => ("interrupted", step_of(step), false),
                StepStatus::Ok | StepStatus::Changed => return None,
            },
            // The run ends at the block's step that failed, not at its rescue's last step.
            EventKind::BlockFinished { failed, .. } => ("running", step_of(failed), false),
            EventKind::RunFinished { status, .. } => {
                let phase = match status {
                    RunStatus::Ok => "done",
                    RunStatus::Paused => "at-gate",
                    RunStatus::Refused => "refused",
                    RunStatus::Failed | RunStatus::Invalid => "failed",
                    RunStatus::Interrupted => "interrupted",
                    RunStatus::PlanChanged => "plan-changed",
                };
                (phase, last.and_then(|mark| mark.step.clone()), true)
            }
            _ => return None,
        };
        let mark = Mark {
            run: event.run.clone(),
            playbook: self.playbook.clone(),
            phase,
            step,
            ended,
            since: event.ts.clone(),
        };
        let same = |other: &Mark| {
            (&other.run, other.phase, &other.step, other.ended)
                == (&mark.run, mark.phase, &mark.step, mark.ended)
        };
        (!last.is_some_and(same)).then_some(mark)
    }
}

/// Writes marks in order, each over the one before; a namespace that is missing is left
/// alone, and a mark that cannot be written is said once, without stopping the run.
async fn write_marks(
    mut receiver: mpsc::UnboundedReceiver<Mark>,
    cluster: Cluster,
    hub: String,
    holder: String,
    output: Arc<dyn RunOutput>,
) {
    let Some(namespaces) = find_kind("Namespace") else {
        return;
    };
    let mut warned = false;
    while let Some(mut mark) = receiver.recv().await {
        // Only the latest counts: skip the marks that queued up meanwhile.
        while let Ok(newer) = receiver.try_recv() {
            mark = newer;
        }
        let patch = ObjectPatch::Merge(mark.patch(&holder));
        match cluster.patch(namespaces, &hub, None, &patch, false).await {
            Ok(_) => {}
            Err(error) if error.code() == Some(404) => {}
            Err(error) if !warned => {
                warned = true;
                output.warn(&format!(
                    "could not mark namespace {hub} with the run's phase ({error}); the run goes on"
                ));
            }
            Err(_) => {}
        }
    }
}

impl StepOutput for NamespaceMark {
    fn line(&self, step: &str, line: &str) {
        self.inner.line(step, line);
    }

    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }

    fn progress(&self, step: &str, progress: Progress) {
        self.inner.progress(step, progress);
    }

    fn notice(&self, text: &str) {
        self.inner.notice(text);
    }

    fn redraws(&self) -> bool {
        self.inner.redraws()
    }

    fn live(&self, step: &str, view: crate::actions::output::LiveView<'_>) {
        self.inner.live(step, view);
    }
}

impl RunOutput for NamespaceMark {
    fn event(&self, event: &Event, json: &serde_json::Value) {
        let waiting = |marks: &MarkState| {
            self.from_first_step
                && marks.last.is_none()
                && !matches!(event.kind, EventKind::StepStarted { .. })
        };
        if let Ok(mut marks) = self.marks.lock()
            && !waiting(&marks)
            && let Some(mark) = self.mark_of(event, marks.last.as_ref())
        {
            if let Some(sender) = &marks.sender {
                let _ = sender.send(mark.clone());
            }
            marks.last = Some(mark);
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

    #[test]
    fn a_finished_run_keeps_its_phase_and_drops_its_holder() {
        let mark = Mark {
            run: "nfs-migrate-1234".into(),
            playbook: "nfs-migrate".into(),
            phase: "running",
            step: Some("initial-copy".into()),
            ended: false,
            since: "2026-12-03T10:00:00Z".into(),
        };
        let patch = mark.patch("me@host pid=1");
        assert_eq!(patch["metadata"]["labels"][STEP_LABEL], "initial-copy");
        assert_eq!(
            patch["metadata"]["annotations"][HOLDER_ANNOTATION],
            "me@host pid=1"
        );
        let done = Mark {
            phase: "done",
            ended: true,
            ..mark
        };
        let patch = done.patch("me@host pid=1");
        assert_eq!(patch["metadata"]["labels"][PHASE_LABEL], "done");
        assert!(patch["metadata"]["labels"][STEP_LABEL].is_null());
        assert!(patch["metadata"]["annotations"][HOLDER_ANNOTATION].is_null());
        assert_eq!(
            patch["metadata"]["annotations"][RUN_ANNOTATION],
            "nfs-migrate-1234"
        );
    }
}
