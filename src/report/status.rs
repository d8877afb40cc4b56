//! `runbook status` and `runbook list`: a run's state as its journal and lock tell it.

use serde_json::json;

use super::format_duration_ms;
use crate::engine::event::{RunStatus, StepStatus};
use crate::engine::journal::{History, StepState};
use crate::engine::lock::LockHolder;

/// The state of a whole run, in one word.
pub fn run_state(history: &History, holder: Option<&LockHolder>) -> String {
    if holder.is_some() {
        return "running".into();
    }
    match history.finished {
        Some((RunStatus::Ok, _)) => "done",
        Some((RunStatus::Failed, _)) => "failed",
        Some((RunStatus::Refused, _)) => "refused",
        Some((RunStatus::Paused, _)) => "paused",
        Some((RunStatus::Interrupted, _)) => "interrupted",
        Some((RunStatus::Invalid, _)) => "invalid",
        // Started and never finished, and nobody holds the lock: the process died.
        None if history.started.is_some() => "crashed",
        None => "new",
    }
    .into()
}

fn step_word(state: &StepState) -> (&'static str, String) {
    match state {
        StepState::Pending => ("·", "pending".into()),
        StepState::Started => ("▶", "started".into()),
        StepState::Done {
            status: Some(StepStatus::Ok),
            duration_ms,
            ..
        } => ("✓", format!("ok ({})", format_duration_ms(*duration_ms))),
        StepState::Done {
            status: Some(_),
            duration_ms,
            ..
        } => (
            "✓",
            format!("changed ({})", format_duration_ms(*duration_ms)),
        ),
        StepState::Done {
            status: None,
            reason,
            ..
        } => (
            "✓",
            format!("already done: {}", reason.as_deref().unwrap_or("")),
        ),
        StepState::NotApplicable(reason) => ("↷", format!("skipped: {reason}")),
        StepState::Stopped { status, error } => {
            let word = match status {
                StepStatus::Refused => "refused",
                StepStatus::Interrupted => "interrupted",
                _ => "failed",
            };
            ("✗", format!("{word}: {}", error.as_deref().unwrap_or("")))
        }
        StepState::Paused(message) => ("⏸", format!("waiting for approval: {message}")),
    }
}

/// `status` as text or JSON.
pub fn render_status(
    run_id: &str,
    history: &History,
    holder: Option<&LockHolder>,
    json_format: bool,
) -> String {
    let state = run_state(history, holder);
    let (playbook, name, params) =
        history
            .identity()
            .unwrap_or(("?", "?", &serde_json::Value::Null));
    let steps = history.ordered_steps();
    if json_format {
        let steps: Vec<serde_json::Value> = steps
            .iter()
            .map(|(id, step)| {
                let (_, text) = step_word(step);
                json!({"id": id, "state": text.split([':', ' ']).next().unwrap_or(""), "detail": text})
            })
            .collect();
        return serde_json::to_string_pretty(&json!({
            "run": run_id,
            "playbook": playbook,
            "name": name,
            "params": params,
            "state": state,
            "holder": holder,
            "last_event": history.last_ts,
            "steps": steps,
        }))
        .unwrap_or_default();
    }
    let mut text = format!("run {run_id}: {state}\n  playbook: {playbook}\n");
    if let Some(params) = params.as_object().filter(|params| !params.is_empty()) {
        let shown: Vec<String> = params
            .iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => format!("{key}={text}"),
                other => format!("{key}={other}"),
            })
            .collect();
        text.push_str(&format!("  params: {}\n", shown.join(" ")));
    }
    if let Some(holder) = holder {
        text.push_str(&format!("  held by {holder}\n"));
    }
    if let Some(ts) = &history.last_ts {
        text.push_str(&format!("  last event: {ts}\n"));
    }
    let width = steps.keys().map(String::len).max().unwrap_or(0);
    for (id, step) in &steps {
        let (mark, word) = step_word(step);
        text.push_str(&format!("  {mark} {id:<width$}  {word}\n"));
    }
    text
}

/// One line per run for `list`.
pub fn render_list(runs: &[(String, History, Option<LockHolder>)]) -> String {
    if runs.is_empty() {
        return "no runs in this state directory\n".into();
    }
    let width = runs
        .iter()
        .map(|(id, _, _)| id.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut text = format!(
        "{:<width$}  {:<11}  {:>9}  LAST EVENT\n",
        "RUN", "STATE", "DONE"
    );
    for (id, history, holder) in runs {
        let steps = history.ordered_steps();
        let done = steps
            .values()
            .filter(|state| matches!(state, StepState::Done { .. } | StepState::NotApplicable(_)))
            .count();
        text.push_str(&format!(
            "{id:<width$}  {:<11}  {:>9}  {}\n",
            run_state(history, holder.as_ref()),
            format!("{done}/{}", steps.len()),
            history.last_ts.as_deref().unwrap_or("-")
        ));
    }
    text
}
