//! Events: what `--format json` prints, one per line, and what the journal stores.

use crate::actions::StepOutput;
use crate::render::Masker;
use serde::{Deserialize, Serialize};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Ran and changed nothing (read-only actions).
    Ok,
    /// Ran and changed something.
    Changed,
    /// Failed; `run` again retries it.
    Failed,
    /// Its guard stayed false; nothing was changed.
    Refused,
    /// Stopped by SIGINT/SIGTERM; `run` again starts it over.
    Interrupted,
}

impl StepStatus {
    /// Whether the step counts as done for resume.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Ok | StepStatus::Changed)
    }
}

/// How a whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step is done.
    Ok,
    /// A step failed.
    Failed,
    /// A guard refused a step.
    Refused,
    /// Waiting at an approval gate.
    Paused,
    /// Stopped by a signal.
    Interrupted,
    /// `run --plan`: the cluster, a file or the journal changed since the plan.
    PlanChanged,
    /// Bad input found after the run started: a changed step definition, or input a step
    /// found invalid when it ran (a values file, a rendered selector, a `sync` source).
    Invalid,
}

/// A step id and its definition hash, as recorded when a run starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDefinition {
    /// Step id.
    pub id: String,
    /// Definition hash.
    pub hash: String,
}

/// One event. `ts` and `run` are on every event; `event` names the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 time.
    pub ts: String,
    /// The run id.
    pub run: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A `run` command started (or resumed) this run.
    RunStarted {
        /// Playbook path.
        playbook: String,
        /// Playbook name.
        name: String,
        /// sha256 of the playbook's content.
        playbook_hash: String,
        /// Every step with its definition hash, in order.
        steps: Vec<StepDefinition>,
        /// Param values (secrets masked).
        params: serde_json::Value,
        /// The runbook process.
        pid: u32,
        /// Its host.
        host: String,
    },
    /// A step's action starts.
    StepStarted {
        /// Step id.
        step: String,
        /// Step name or id.
        name: String,
        /// Action key.
        action: String,
        /// 1 for the first try.
        attempt: u32,
    },
    /// A step was not run.
    StepSkipped {
        /// Step id.
        step: String,
        /// Why.
        reason: String,
        /// Skipped because it is done (a check passed, or an earlier run did it); a step
        /// skipped by `when` is not done and is evaluated again on resume.
        done: bool,
        /// Definition hash, when `done`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    /// An approval gate or `confirm` was approved.
    Approved {
        /// Step id.
        step: String,
        /// `terminal`, `--yes` or `--approve`.
        via: String,
    },
    /// A step ended.
    StepFinished {
        /// Step id.
        step: String,
        /// How.
        status: StepStatus,
        /// Wall time.
        duration_ms: u64,
        /// Definition hash.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
        /// Registered output (secrets masked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
        /// Why it failed or was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The last lines the step's command printed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tail: Vec<String>,
    },
    /// Progress of a long step.
    Progress {
        /// Step id.
        step: String,
        /// Bytes done.
        done_bytes: u64,
        /// Bytes in all.
        total_bytes: u64,
        /// Files done.
        done_files: u64,
        /// Files in all.
        total_files: u64,
        /// Workers copying in parallel now (`sync`: its rsync processes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workers: Option<u32>,
    },
    /// An action's own record of its progress (a finished shard of a copy, the start of a
    /// pass), given back to it when the run resumes.
    StepNote {
        /// Step id.
        step: String,
        /// Whatever the action needs to resume.
        data: serde_json::Value,
    },
    /// Stopped at an approval gate.
    Paused {
        /// Step id.
        step: String,
        /// The gate's question.
        message: String,
    },
    /// `run --plan`: what a step's decision read (or the journal) differs from the saved
    /// plan; the run stops before the step.
    PlanChanged {
        /// The step whose readings differ; `None` for the journal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// Found before the run's first step (every step's readings are taken then), so
        /// that the run stopped before changing anything.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        before_any_step: bool,
        /// What differs, one line each.
        changes: Vec<String>,
    },
    /// A step of a block failed; the block's rescue runs now. With a rescue, the steps of
    /// the block (rescue and always included) are no longer done for the next run: the
    /// rescue may have undone them, so the next run starts the block again from its first
    /// step.
    BlockFailed {
        /// Block id.
        block: String,
        /// The step that failed.
        step: String,
        /// Why.
        error: String,
        /// The block's step ids, whose earlier records the next run forgets (none for a
        /// block without rescue).
        steps: Vec<String>,
    },
    /// A block whose step failed is over: its rescue and always steps ran (the run stops
    /// here, not done), or one of them failed too.
    BlockFinished {
        /// Block id.
        block: String,
        /// The step of the block that failed.
        failed: String,
        /// Whether the block has rescue steps.
        rescued: bool,
        /// A rescue or always step that failed too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handler_failed: Option<String>,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handler_error: Option<String>,
    },
    /// The maintenance window opened (its gate was approved): how long it was predicted to
    /// take then, which the summary sets beside how long it took.
    WindowPredicted {
        /// The prediction.
        forecast: super::window::WindowForecast,
    },
    /// Something a person should know that is not an error.
    Warning {
        /// What.
        message: String,
    },
    /// The run command ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// The process exit code.
        exit_code: u8,
    },
}

impl EventKind {
    /// Events that go to the journal; progress is only shown.
    pub fn is_journaled(&self) -> bool {
        !matches!(self, EventKind::Progress { .. })
    }

    /// Events that record a state the next run relies on (a step done, an approval, the end
    /// of a run) are fsynced before runbook moves on. The others (`step_started`, a `when`
    /// skip, warnings) are written but not synced: a kill -9 loses no written line, and after
    /// a power loss a started step shows as pending, which is run again either way. This
    /// halves the syncs per step, which dominate the engine's overhead on slow disks.
    pub fn needs_sync(&self) -> bool {
        match self {
            EventKind::StepFinished { .. }
            | EventKind::StepNote { .. }
            | EventKind::Approved { .. }
            | EventKind::Paused { .. }
            | EventKind::BlockFailed { .. }
            | EventKind::BlockFinished { .. }
            | EventKind::WindowPredicted { .. }
            | EventKind::RunFinished { .. } => true,
            EventKind::StepSkipped { done, .. } => *done,
            EventKind::RunStarted { .. }
            | EventKind::StepStarted { .. }
            | EventKind::Progress { .. }
            | EventKind::PlanChanged { .. }
            | EventKind::Warning { .. } => false,
        }
    }

    /// The step the event is about.
    pub fn step(&self) -> Option<&str> {
        match self {
            EventKind::StepStarted { step, .. }
            | EventKind::StepSkipped { step, .. }
            | EventKind::Approved { step, .. }
            | EventKind::StepFinished { step, .. }
            | EventKind::Progress { step, .. }
            | EventKind::StepNote { step, .. }
            | EventKind::Paused { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Where a run's events go, besides the journal: the terminal and JSON reporter (`report`,
/// a higher layer) implements it. It also takes what the run's actions show
/// ([`StepOutput`]), so one value serves the engine and the steps.
pub trait RunOutput: StepOutput {
    /// An already masked event, with its JSON form.
    fn event(&self, event: &Event, json: &serde_json::Value);
    /// Whether `--verbose` asked for the details of checks and skipped steps.
    fn verbose(&self) -> bool;
    /// The secrets to mask from now on (known once the params are bound).
    fn set_masker(&self, masker: Masker);
    /// The run the events are about from now on (known once the params are bound).
    fn set_run(&self, run_id: &str);
}
