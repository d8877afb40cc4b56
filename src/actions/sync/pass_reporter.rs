//! Where a pass of the copy reports what it does: to the engine (a copy run by `runbook`
//! itself) or to the agent's state file (a copy run inside a pod, see [`super::agent`]).
//! The pass is the same code either way; only this interface differs.

use super::SyncAction;
use super::pass::Note;
use super::progress::Board;
use crate::actions::StepContext;

/// What a pass tells the outside world.
pub trait PassReporter: Sync {
    /// A line for a person ("comparing ...", "copy 12 entries ...").
    fn line(&self, line: &str);
    /// A warning, shown at once (a shard retried, files that vanished).
    fn warn(&self, message: &str);
    /// How far the shards are, every few seconds; `detailed` every tenth second or so, when
    /// the bar and the workers' lines are due.
    fn progress(&self, board: &Board, detailed: bool);
    /// A record for the journal (a planned pass, a finished shard); durable when it returns.
    fn note(&self, note: &Note) -> anyhow::Result<()>;
}

/// A pass run by `runbook` itself: lines, warnings and progress go to the step's reporter,
/// notes to the run's journal.
pub struct StepReporter<'a> {
    /// The step's action (for the notes of this process).
    pub action: &'a SyncAction,
    /// The step.
    pub cx: &'a StepContext<'a>,
}

impl PassReporter for StepReporter<'_> {
    fn line(&self, line: &str) {
        self.cx.output_line(line);
    }

    fn warn(&self, message: &str) {
        self.cx
            .reporter
            .warn(&format!("[{}] {message}", self.cx.step_id));
    }

    fn progress(&self, board: &Board, detailed: bool) {
        let progress = board.snapshot();
        self.cx.progress(progress);
        let lines = board.lines();
        show_board(
            self.cx,
            progress,
            (&board.detail(), &board.running_shards()),
            &lines,
            detailed,
        );
    }

    fn note(&self, note: &Note) -> anyhow::Result<()> {
        self.action.note(self.cx, note)
    }
}

/// Shows a copy's board: on a display redrawn in place (a terminal) every time, with a line
/// per busy worker; elsewhere, when `detailed` is due, its summary line only (a log gets a
/// line every 10 s, not a redrawn screen). Either way the step's output keeps the running
/// shards for `status`. `lines` are the summary line, then the workers'; `(detail,
/// running)` what the bar adds and the shards being copied.
pub fn show_board(
    cx: &StepContext<'_>,
    progress: crate::actions::Progress,
    (detail, running): (&str, &[usize]),
    lines: &[String],
    detailed: bool,
) {
    let view = crate::actions::output::LiveView {
        progress,
        detail,
        workers: lines.get(1..).unwrap_or_default(),
        running,
    };
    cx.reporter.live(cx.step_id, view);
    if !cx.reporter.redraws()
        && detailed
        && let Some(summary) = lines.first()
    {
        cx.output_line(summary);
    }
}
