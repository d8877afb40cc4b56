//! The summary at the end of a run, as data: time per step over every command that worked
//! on the run, the data the copies moved, and how long the maintenance window lasted.
//! `report` renders it.

use indexmap::IndexMap;
use jiff::Timestamp;

use super::event::{Event, EventKind, RunStatus, StepStatus};
use super::window::WindowForecast;
use crate::playbook::MaintenanceWindow;

/// What one step cost over the whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepTotals {
    /// Wall time of every attempt that ended (a killed attempt has no end to count).
    pub(crate) duration_ms: u64,
    /// How it last ended: `ok`, `changed`, `skipped`, `failed`...
    pub(crate) last: String,
    /// Bytes and files its notes say it moved.
    pub(crate) bytes: u64,
    pub(crate) files: u64,
}

/// How the last command on the run ended, and the step it stopped at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    pub(crate) status: RunStatus,
    pub(crate) exit_code: u8,
    /// The gate it waits at, or the step that failed, was refused or was interrupted.
    pub(crate) step: Option<String>,
}

/// A block whose step failed in the last command, and what its handlers did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FailedBlock {
    pub(crate) block: String,
    /// The step of the block that failed.
    pub(crate) failed: String,
    /// Whether it has a rescue (which then ran).
    pub(crate) rescued: bool,
    /// A rescue or always step that failed too.
    pub(crate) handler_failed: Option<String>,
}

impl FailedBlock {
    /// One line for people.
    pub(crate) fn sentence(&self) -> String {
        let FailedBlock { block, failed, .. } = self;
        match (&self.handler_failed, self.rescued) {
            (Some(handler), _) => {
                format!("block {block}: {failed} failed, and then {handler} failed too")
            }
            (None, true) => format!("block {block}: {failed} failed; its rescue ran"),
            (None, false) => format!("block {block}: {failed} failed; it has no rescue"),
        }
    }
}

/// A run's summary, built from its journal.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run id and the playbook's name, from the journal's events.
    pub(crate) run: String,
    pub(crate) name: String,
    pub(crate) steps: IndexMap<String, StepTotals>,
    pub(crate) commands: usize,
    pub(crate) window: Option<(MaintenanceWindow, Option<Timestamp>, Option<Timestamp>)>,
    /// What the window was predicted to take when it last opened.
    pub(crate) predicted: Option<WindowForecast>,
    /// `None` while the last command has not finished (or its end was not journaled).
    pub(crate) ending: Option<Ending>,
    /// The blocks whose step failed in the last command.
    pub(crate) failed_blocks: Vec<FailedBlock>,
}

impl RunSummary {
    /// Sums up `events` (a journal, oldest first) for the steps in `order`.
    pub fn from_events(
        events: &[Event],
        order: &[&str],
        window: Option<&MaintenanceWindow>,
    ) -> Self {
        let mut tally = Tally {
            steps: order
                .iter()
                .map(|id| (id.to_string(), StepTotals::default()))
                .collect(),
            window,
            ..Tally::default()
        };
        for event in events {
            tally.add(event);
        }
        RunSummary {
            run: events
                .first()
                .map(|event| event.run.clone())
                .unwrap_or_default(),
            name: tally.name,
            steps: tally.steps,
            commands: tally.commands,
            window: window.map(|window| (window.clone(), tally.opened, tally.closed)),
            predicted: tally.predicted,
            ending: tally.ending,
            failed_blocks: tally.failed_blocks,
        }
    }
}

/// A summary being summed up, one journal event at a time.
#[derive(Default)]
struct Tally<'a> {
    steps: IndexMap<String, StepTotals>,
    window: Option<&'a MaintenanceWindow>,
    commands: usize,
    name: String,
    /// When the maintenance window opened and closed.
    opened: Option<Timestamp>,
    closed: Option<Timestamp>,
    /// What the window was predicted to take when it last opened.
    predicted: Option<WindowForecast>,
    ending: Option<Ending>,
    /// The blocks whose steps failed in the last command.
    failed_blocks: Vec<FailedBlock>,
    /// Where the last command stopped: the last gate it paused at, or the last step that
    /// ended without being done.
    stopped_at: Option<String>,
}

impl Tally<'_> {
    /// The totals of a step of the playbook, or of an item of a loop step (`STEP[KEY]`),
    /// which takes its place after the step's other items (and the step's own line, when
    /// nothing was journaled under the step's own id).
    fn totals(&mut self, step: &str) -> Option<&mut StepTotals> {
        if !self.steps.contains_key(step) {
            let base = &step[..step.find('[')?];
            if !super::journal::is_item_of(step, base) {
                return None;
            }
            let last = self
                .steps
                .keys()
                .rposition(|id| id == base || super::journal::is_item_of(id, base))?;
            self.steps
                .shift_insert(last + 1, step.to_string(), StepTotals::default());
            if let Some(at) = self.steps.get_index_of(base)
                && self.steps[at].last.is_empty()
            {
                self.steps.shift_remove_index(at);
            }
        }
        self.steps.get_mut(step)
    }

    fn add(&mut self, event: &Event) {
        let at = event.ts.parse::<Timestamp>().ok();
        match &event.kind {
            EventKind::RunStarted { name, .. } => {
                self.commands += 1;
                self.name.clone_from(name);
                self.ending = None;
                self.stopped_at = None;
                self.failed_blocks.clear();
            }
            EventKind::BlockFinished {
                block,
                failed,
                rescued,
                handler_failed,
                ..
            } => self.failed_blocks.push(FailedBlock {
                block: block.clone(),
                failed: failed.clone(),
                rescued: *rescued,
                handler_failed: handler_failed.clone(),
            }),
            EventKind::Paused { step, .. } => self.stopped_at = Some(step.clone()),
            EventKind::RunFinished { status, exit_code } => {
                self.ending = Some(Ending {
                    status: *status,
                    exit_code: *exit_code,
                    step: self.stopped_at.clone(),
                });
            }
            EventKind::StepFinished {
                step,
                status,
                duration_ms,
                ..
            } => self.step_finished(step, *status, *duration_ms, at),
            EventKind::StepSkipped { step, done, .. } => self.step_skipped(step, *done, at),
            EventKind::Approved { step, .. }
                if self.window.is_some_and(|window| step == &window.from) =>
            {
                self.opened = at;
                self.closed = None;
                self.predicted = None;
            }
            EventKind::WindowPredicted { forecast } => self.predicted = Some(forecast.clone()),
            EventKind::StepNote { step, data } => {
                // An action's note that carries `bytes` and `files` records work done
                // (a finished shard of a copy).
                if let (Some(totals), Some(bytes), Some(files)) = (
                    self.steps.get_mut(step),
                    data.get("bytes").and_then(serde_json::Value::as_u64),
                    data.get("files").and_then(serde_json::Value::as_u64),
                ) {
                    totals.bytes += bytes;
                    totals.files += files;
                }
            }
            _ => {}
        }
    }

    fn step_finished(
        &mut self,
        step: &str,
        status: StepStatus,
        duration_ms: u64,
        at: Option<Timestamp>,
    ) {
        if !status.is_done() {
            self.stopped_at = Some(step.to_string());
        }
        if let Some(totals) = self.totals(step) {
            totals.duration_ms += duration_ms;
            totals.last = status_word(status).into();
        }
        if let Some(window) = self.window {
            if step == window.from && self.opened.is_none() && status.is_done() {
                self.opened = at;
            }
            if step == window.to && status.is_done() {
                self.close_window(at);
            }
        }
    }

    fn step_skipped(&mut self, step: &str, done: bool, at: Option<Timestamp>) {
        if let Some(totals) = self.totals(step)
            && (totals.last.is_empty() || !done)
        {
            totals.last = if done { "skipped (done)" } else { "skipped" }.into();
        }
        // A step found done by its check closes the window as well as one that ran (the
        // hub came back online without waiting).
        if self.window.is_some_and(|window| done && step == window.to) {
            self.close_window(at);
        }
    }

    /// The window's closing step is done: it closes the window, once, if it was open.
    fn close_window(&mut self, at: Option<Timestamp>) {
        if self.opened.is_some() && self.closed.is_none() {
            self.closed = at;
        }
    }
}

fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Ok => "ok",
        StepStatus::Changed => "changed",
        StepStatus::Failed => "failed",
        StepStatus::Refused => "refused",
        StepStatus::Interrupted => "interrupted",
    }
}
