//! Where one hub of a fleet stands, from its run's journal: the phase it is in, what its
//! copies moved, how long its maintenance window lasted, and when it last changed.

use jiff::Timestamp;

use crate::actions::State;
use crate::engine::event::{RunStatus, StepStatus};
use crate::engine::journal::{History, StepState};
use crate::engine::summary::RunSummary;
use crate::playbook::Playbook;
use crate::syntax::format_bytes;

/// The phase a hub is in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum HubPhase {
    /// No run of the playbook for this hub yet.
    NotStarted,
    /// A step is running (or was, when its process died without a word).
    Running {
        /// The step.
        step: String,
        /// How far its copy is, as the journal says (`pass 1: 3 of 8 shards`).
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<String>,
    },
    /// Waiting at an approval gate.
    AtGate {
        /// The gate's step.
        step: String,
    },
    /// A guard refused a step.
    Refused {
        /// The step.
        step: String,
        /// Why, first line.
        reason: String,
    },
    /// A step failed.
    Failed {
        /// The step.
        step: String,
        /// The error's first line.
        error: String,
    },
    /// Its process died during a step (`kill -9`, a machine that went down): nobody holds
    /// the run and its journal has no end; `fleet run` again goes on.
    Crashed {
        /// The step it was in.
        step: String,
    },
    /// Stopped by a signal (or by the fleet) before or during a step.
    Interrupted {
        /// The step it stopped at, if one was running.
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// Every step is done.
    Done,
}

impl HubPhase {
    /// The phase in a few words, for the table: the hub's [`State`] first.
    pub fn describe(&self) -> String {
        match self {
            HubPhase::NotStarted => "pending (not started)".into(),
            HubPhase::Running {
                step,
                progress: None,
            } => format!("running {step}"),
            HubPhase::Running {
                step,
                progress: Some(progress),
            } => format!("running {step} ({progress})"),
            HubPhase::AtGate { step } => format!("waiting at gate {step}"),
            HubPhase::Refused { step, reason } => format!("stopped: refused at {step}: {reason}"),
            HubPhase::Failed { step, error } => format!("failed at {step}: {error}"),
            HubPhase::Crashed { step } => format!("failed at {step}: its process is gone"),
            HubPhase::Interrupted { step: Some(step) } => {
                format!("stopped: interrupted at {step}")
            }
            HubPhase::Interrupted { step: None } => "stopped: interrupted".into(),
            HubPhase::Done => "done".into(),
        }
    }

    /// The phase in the words every view uses.
    pub fn state(&self) -> State {
        match self {
            HubPhase::NotStarted => State::Pending,
            HubPhase::Running { .. } => State::Running,
            HubPhase::AtGate { .. } => State::Waiting,
            HubPhase::Refused { .. } | HubPhase::Interrupted { .. } => State::Stopped,
            HubPhase::Failed { .. } | HubPhase::Crashed { .. } => State::Failed,
            HubPhase::Done => State::Done,
        }
    }

    /// Whether the hub is done.
    pub fn is_done(&self) -> bool {
        *self == HubPhase::Done
    }
}

/// One hub's line of `fleet status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubStatus {
    /// The hub.
    pub hub: String,
    /// Its run's id, once it has one.
    pub run: Option<String>,
    /// Where it stands, in the words every view uses.
    pub state: State,
    /// Where it stands, in the fleet's own terms.
    #[serde(flatten)]
    pub phase: HubPhase,
    /// Bytes its copies moved, over every command.
    pub bytes_copied: u64,
    /// How long the maintenance window lasted (or has lasted so far), in milliseconds.
    pub window_ms: Option<u64>,
    /// Whether the maintenance window is open now.
    pub window_open: bool,
    /// When its journal last changed (RFC 3339).
    pub last_change: Option<String>,
}

impl HubStatus {
    /// A hub with no run yet.
    pub fn not_started(hub: &str) -> Self {
        HubStatus {
            hub: hub.to_string(),
            run: None,
            state: State::Pending,
            phase: HubPhase::NotStarted,
            bytes_copied: 0,
            window_ms: None,
            window_open: false,
            last_change: None,
        }
    }

    /// A hub's status from its run's journal (`history` and its `events`) and whether a
    /// process holds the run now, with an open maintenance window measured up to `now`.
    pub fn from_journal(
        hub: &str,
        run: &str,
        held: bool,
        history: &History,
        events: &[crate::engine::event::Event],
        playbook: &Playbook,
        now: Timestamp,
    ) -> Self {
        let order: Vec<&str> = playbook.steps.iter().map(|step| step.id()).collect();
        let summary = RunSummary::from_events(events, &order, playbook.maintenance_window.as_ref());
        let bytes_copied = summary.steps.values().map(|totals| totals.bytes).sum();
        let (window_ms, window_open) = match &summary.window {
            Some((_, Some(opened), closed)) => {
                let end = closed.unwrap_or(now);
                let length = end.duration_since(*opened).as_millis().max(0) as u64;
                (Some(length), closed.is_none())
            }
            _ => (None, false),
        };
        // A run whose process is gone while a copy it started goes on in a pod or Job is
        // running still (`fleet run` again re-attaches), not crashed.
        let detached = !crate::actions::detached_copies(&history.notes).is_empty();
        let phase = match phase_of(history) {
            HubPhase::Running { step, .. } if !held && !detached => HubPhase::Crashed { step },
            phase => phase,
        };
        HubStatus {
            hub: hub.to_string(),
            run: Some(run.to_string()),
            state: phase.state(),
            phase,
            bytes_copied,
            window_ms,
            window_open,
            last_change: history.last_ts.clone(),
        }
    }
}

/// The first line of a message.
fn first_line(text: Option<&str>) -> String {
    text.unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// How far a copy is, from its step's notes: the last pass's plan (`sync: pass`, with its
/// shards and their bytes) and the shards of that pass journaled as done (`sync: shard`).
fn copy_progress(notes: &[serde_json::Value]) -> Option<String> {
    let plan = notes.iter().rev().find(|note| note["sync"] == "pass")?;
    let pass = plan["pass"].as_u64()?;
    let shards = plan["shards"].as_array()?;
    let total: u64 = shards
        .iter()
        .filter_map(|shard| shard["bytes"].as_u64())
        .sum();
    let done: Vec<&serde_json::Value> = notes
        .iter()
        .filter(|note| note["sync"] == "shard" && note["pass"].as_u64() == Some(pass))
        .collect();
    let copied: u64 = done.iter().filter_map(|note| note["bytes"].as_u64()).sum();
    Some(format!(
        "pass {pass}: {} of {} shards, {} of {}",
        done.len(),
        shards.len(),
        format_bytes(copied),
        format_bytes(total)
    ))
}

/// The phase a run's journal says it is in.
fn phase_of(history: &History) -> HubPhase {
    if history.started.is_none() {
        return HubPhase::NotStarted;
    }
    let steps = history.ordered_steps();
    let stopped = |wanted: &[StepStatus]| {
        steps.iter().find_map(|(id, state)| match state {
            StepState::Stopped { status, error } if wanted.contains(status) => {
                Some((id.clone(), first_line(error.as_deref())))
            }
            _ => None,
        })
    };
    match history.finished {
        Some((RunStatus::Ok, _)) => HubPhase::Done,
        Some((RunStatus::Paused, _)) => {
            let step = steps
                .iter()
                .find_map(|(id, state)| matches!(state, StepState::Paused(_)).then(|| id.clone()))
                .unwrap_or_default();
            HubPhase::AtGate { step }
        }
        Some((RunStatus::Refused, _)) => {
            let (step, reason) = stopped(&[StepStatus::Refused]).unwrap_or_default();
            HubPhase::Refused { step, reason }
        }
        Some((RunStatus::Failed | RunStatus::Invalid, _)) => {
            let (step, error) = stopped(&[StepStatus::Failed]).unwrap_or_default();
            HubPhase::Failed { step, error }
        }
        Some((RunStatus::PlanChanged, _)) => HubPhase::Failed {
            step: String::new(),
            error: "its saved plan no longer holds (exit 6): make a new plan".into(),
        },
        Some((RunStatus::Interrupted, _)) => HubPhase::Interrupted {
            step: stopped(&[StepStatus::Interrupted]).map(|(step, _)| step),
        },
        None => {
            let step = steps
                .iter()
                .rev()
                .find_map(|(id, state)| matches!(state, StepState::Started).then(|| id.clone()));
            match step {
                Some(step) => {
                    let progress = history
                        .notes
                        .get(&step)
                        .and_then(|notes| copy_progress(notes));
                    HubPhase::Running { step, progress }
                }
                None => HubPhase::Running {
                    step: "(between steps)".into(),
                    progress: None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history from journal lines.
    fn history(lines: &[serde_json::Value]) -> History {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
        std::fs::write(dir.path().join("journal.jsonl"), text.join("\n") + "\n").unwrap();
        History::load(dir.path()).unwrap()
    }

    fn event(kind: serde_json::Value) -> serde_json::Value {
        let mut event = serde_json::json!({"ts": "2026-12-03T10:00:00Z", "run": "r-1"});
        for (key, value) in kind.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    }

    fn started() -> serde_json::Value {
        event(serde_json::json!({
            "event": "run_started", "playbook": "p.yaml", "name": "p", "playbook_hash": "h",
            "steps": [{"id": "prepare", "hash": "a"}, {"id": "copy", "hash": "b"}],
            "params": {"cluster": "c", "hub": "h"}, "pid": 1, "host": "vm",
        }))
    }

    #[test]
    fn a_running_copy_shows_its_progress_and_a_dead_one_is_told() {
        let lines = [
            started(),
            event(
                serde_json::json!({"event": "step_started", "step": "copy", "name": "copy", "action": "sync", "attempt": 1}),
            ),
            event(
                serde_json::json!({"event": "step_note", "step": "copy", "data": {
                "sync": "pass", "pass": 1, "shards": [{"bytes": 1024}, {"bytes": 3072}]}}),
            ),
            event(
                serde_json::json!({"event": "step_note", "step": "copy", "data": {
                "sync": "shard", "pass": 1, "shard": 0, "bytes": 1024, "files": 3}}),
            ),
        ];
        let history = history(&lines);
        assert_eq!(
            phase_of(&history).describe(),
            "running copy (pass 1: 1 of 2 shards, 1.0 KiB of 4.0 KiB)"
        );
    }

    #[test]
    fn a_failed_run_says_where_and_the_errors_first_line() {
        let lines = [
            started(),
            event(
                serde_json::json!({"event": "step_finished", "step": "prepare", "status": "failed",
                "duration_ms": 5, "error": "disk full\nmore"}),
            ),
            event(serde_json::json!({"event": "run_finished", "status": "failed", "exit_code": 1})),
        ];
        assert_eq!(
            phase_of(&history(&lines)).describe(),
            "failed at prepare: disk full"
        );
        assert_eq!(phase_of(&history(&[])), HubPhase::NotStarted);
    }
}
