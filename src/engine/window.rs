//! The maintenance window, predicted: how long the steps between the window's gate and its
//! closing step will probably take, from what the journals say, and what that rests on.
//!
//! A copy that continues an earlier one (`sync` with `after:`) costs a comparison of both
//! trees (which grows with the entries, not the bytes) plus the copy of what changed since
//! the last finished pass of the step it continues. What changed is not known before the
//! comparison runs, so the estimate is a range:
//!
//! - the comparison takes as long as the last pass's did (same tree);
//! - the changes go on at the rate the last pass saw: it copied what changed between the
//!   start of the pass before it and its own start, so since its start about that much
//!   times (time since its start / time between those starts) has changed, and copying
//!   that takes its copying time scaled the same way. With only one pass (the initial copy,
//!   which copied everything) the rate of change is unknown: the range has no upper end;
//! - low: one comparison and half the expected copying; high: two comparisons (a `verify`
//!   compares both trees again) and twice the expected copying.
//!
//! Any other step counts from its journaled durations (this run's and those of the other
//! runs of the same playbook in the state directory): low the shortest, high the longest.
//! A step never timed makes the range open-ended; approvals are not counted (their wait is
//! a person's).

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::event::{Event, EventKind};
use super::journal::is_item_of;
use crate::actions::{FinishedPass, finished_passes};
use crate::playbook::{Playbook, Section};
use crate::syntax::{format_bytes, format_duration_ms};

/// The steps inside a playbook's maintenance window, and what each is for the prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowShape {
    /// The gate that opens the window.
    pub from: String,
    /// The step that closes it.
    pub to: String,
    /// The steps after `from` up to `to`, in order, without the rescue steps (they run
    /// only when a step fails).
    pub steps: Vec<WindowStep>,
}

/// A step inside the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStep {
    /// Its id.
    pub id: String,
    /// What it is for the prediction.
    pub role: StepRole,
}

/// What a step is for the prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRole {
    /// An approval (a `pause` or a `confirm`): its wait is not counted.
    Approval,
    /// A copy that continues the copy of another step (`sync` with `after:`).
    Copy {
        /// The step it continues.
        continues: String,
    },
    /// Anything else: timed by its journaled durations.
    Timed,
}

impl WindowShape {
    /// The window of `playbook`, when it declares one.
    pub fn of(playbook: &Playbook) -> Option<Self> {
        let window = playbook.maintenance_window.as_ref()?;
        let position = |id: &str| playbook.steps.iter().position(|step| step.id() == id);
        let (from, to) = (position(&window.from)?, position(&window.to)?);
        let steps = playbook.steps[from + 1..=to]
            .iter()
            .filter(|step| {
                !matches!(playbook.block_of(step), Some((_, Section::Rescue)))
                    && step.item.is_none()
            })
            .map(|step| {
                let references = if step.action_key == "sync" {
                    step.action().step_references()
                } else {
                    Vec::new()
                };
                let continues = references
                    .into_iter()
                    .find(|(key, _)| *key == "after")
                    .map(|(_, step)| step.to_string());
                let role =
                    if step.spec.confirm.is_some() || step.action().approval_prompt().is_some() {
                        StepRole::Approval
                    } else if let Some(continues) = continues {
                        StepRole::Copy { continues }
                    } else {
                        StepRole::Timed
                    };
                WindowStep {
                    id: step.id().to_string(),
                    role,
                }
            })
            .collect();
        Some(WindowShape {
            from: window.from.clone(),
            to: window.to.clone(),
            steps,
        })
    }
}

/// How long the window will probably take (or, once open, what is left of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowForecast {
    /// The gate that opens it.
    pub from: String,
    /// The step that closes it.
    pub to: String,
    /// When it opened, when it has (the forecast is then of what is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<String>,
    /// The least it will take, in milliseconds, over the steps that have a figure.
    pub low_ms: u64,
    /// The most, when every step has an upper figure.
    pub high_ms: Option<u64>,
    /// Each step still to run, with its figures and what they rest on.
    pub steps: Vec<StepForecast>,
}

/// One step of a [`WindowForecast`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepForecast {
    /// Its id.
    pub step: String,
    /// The least it will take; `None` when nothing tells.
    pub low_ms: Option<u64>,
    /// The most; `None` when nothing bounds it.
    pub high_ms: Option<u64>,
    /// What the figures rest on, in words.
    pub basis: String,
    /// Whether it is counted at all (an approval is not).
    #[serde(default = "counted", skip_serializing_if = "is_counted")]
    pub counted: bool,
}

fn counted() -> bool {
    true
}

fn is_counted(counted: &bool) -> bool {
    *counted
}

impl WindowForecast {
    /// The steps with no figure at all.
    pub fn untimed(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|step| step.counted && step.low_ms.is_none())
            .map(|step| step.step.as_str())
            .collect()
    }
}

/// Predicts the window of `shape` from this run's journal (`events`, oldest first) and
/// those of `earlier` runs of the same playbook, at `now`.
pub fn forecast(
    shape: &WindowShape,
    events: &[Event],
    earlier: &[Vec<Event>],
    now: Timestamp,
) -> WindowForecast {
    let opened = opened_at(shape, events);
    // Changes at the source go on until users are locked out: until the window opened,
    // or, while it has not, at least until now.
    let until = opened.unwrap_or(now);
    let done_since_open: Vec<&str> = match opened {
        Some(opened) => events
            .iter()
            .filter(|event| event.ts.parse::<Timestamp>().is_ok_and(|ts| ts >= opened))
            .filter_map(|event| match &event.kind {
                EventKind::StepFinished { step, status, .. } if status.is_done() => {
                    Some(step.as_str())
                }
                EventKind::StepSkipped {
                    step, done: true, ..
                } => Some(step.as_str()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let steps: Vec<StepForecast> = shape
        .steps
        .iter()
        .filter(|step| !done_since_open.contains(&step.id.as_str()))
        .map(|step| match &step.role {
            StepRole::Approval => StepForecast {
                step: step.id.clone(),
                low_ms: Some(0),
                high_ms: Some(0),
                basis: "an approval: its wait is not counted".into(),
                counted: false,
            },
            StepRole::Copy { continues } => copy_forecast(&step.id, continues, events, until, now),
            StepRole::Timed => timed_forecast(&step.id, events, earlier),
        })
        .collect();
    let counted = steps.iter().filter(|step| step.counted);
    let low_ms = counted.clone().filter_map(|step| step.low_ms).sum();
    let high_ms = counted.map(|step| step.high_ms).sum();
    WindowForecast {
        from: shape.from.clone(),
        to: shape.to.clone(),
        opened: opened.map(|opened| opened.to_string()),
        low_ms,
        high_ms,
        steps,
    }
}

/// When the window opened last (its gate approved, or its first step done), if it is open.
fn opened_at(shape: &WindowShape, events: &[Event]) -> Option<Timestamp> {
    let mut opened = None;
    for event in events {
        let at = event.ts.parse::<Timestamp>().ok();
        match &event.kind {
            EventKind::Approved { step, .. } if *step == shape.from => opened = at,
            EventKind::StepFinished { step, status, .. }
                if *step == shape.from && status.is_done() && opened.is_none() =>
            {
                opened = at;
            }
            EventKind::StepFinished { step, status, .. }
                if *step == shape.to && status.is_done() =>
            {
                opened = None;
            }
            EventKind::StepSkipped {
                step, done: true, ..
            } if *step == shape.to => opened = None,
            _ => {}
        }
    }
    opened
}

/// The notes a step journaled in `events`, in order.
fn notes_of(events: &[Event], step: &str) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::StepNote { step: of, data } if of == step => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// A copy continuing `continues`: from the last finished pass of that step.
fn copy_forecast(
    step: &str,
    continues: &str,
    events: &[Event],
    until: Timestamp,
    now: Timestamp,
) -> StepForecast {
    let passes = finished_passes(&notes_of(events, continues));
    let unknown = |basis: String| StepForecast {
        step: step.to_string(),
        low_ms: None,
        high_ms: None,
        basis,
        counted: true,
    };
    let Some(last) = passes.last() else {
        return unknown(format!("no pass of {continues} yet"));
    };
    let Some(compared) = last.compared else {
        return unknown(format!(
            "pass {} of {continues} has no timings (journaled by an older runbook)",
            last.pass
        ));
    };
    let mut basis = pass_sentence(continues, last, now);
    let previous = passes.iter().rev().nth(1);
    let expected = match (previous, &last.copied) {
        (Some(previous), Some(copied)) => {
            let covered = millis_between(previous.started, last.started).max(1);
            let since = millis_between(last.started, until);
            basis.push_str(&format!(
                "; changes since then counted at the rate it saw ({} files in the {} between its start and that of pass {})",
                with_commas(last.changed_files),
                format_duration_ms(covered),
                previous.pass
            ));
            Some((copied.ms as f64 * since as f64 / covered as f64) as u64)
        }
        (None, _) => {
            basis.push_str(&format!(
                "; what changed since is unknown until {continues} has a second pass"
            ));
            None
        }
        (Some(_), None) => None,
    };
    let overhead = copy_overhead(continues, events, &passes);
    if overhead > 0 {
        basis.push_str(&format!(
            "; plus {} of starting and following the copy, as {continues} took beyond its first pass",
            format_duration_ms(overhead)
        ));
    }
    StepForecast {
        step: step.to_string(),
        low_ms: Some(overhead + compared.ms + expected.unwrap_or(0) / 2),
        high_ms: expected.map(|copy| overhead + 2 * compared.ms + 2 * copy),
        basis,
        counted: true,
    }
}

/// What running a copy costs beside its pass (shipping and starting an agent in a pod,
/// following it, stopping catch-up passes): how much longer the first run of `continues`
/// took than its first pass's comparison and copy. 0 when the journal cannot tell.
fn copy_overhead(continues: &str, events: &[Event], passes: &[FinishedPass]) -> u64 {
    let (Some(first), Some(took)) = (
        passes.first(),
        durations(events, continues).first().copied(),
    ) else {
        return 0;
    };
    let (Some(compared), Some(copied)) = (first.compared, &first.copied) else {
        return 0;
    };
    took.saturating_sub(compared.ms + copied.ms)
}

/// "last pass of initial-copy (pass 2) ended 42m00s ago: 1,234,567 entries compared in
/// 6m10s, 3,100 files (1.2 GiB) changed, copied in 2m05s".
fn pass_sentence(continues: &str, pass: &FinishedPass, now: Timestamp) -> String {
    let (when, ended) = match pass
        .copied
        .as_ref()
        .and_then(|copied| copied.at.parse::<Timestamp>().ok())
    {
        Some(ended) => ("ended", ended),
        None => ("started", pass.started),
    };
    let mut sentence = format!(
        "last pass of {continues} (pass {}) {when} {} ago",
        pass.pass,
        format_duration_ms(millis_between(ended, now))
    );
    if let Some(compared) = pass.compared {
        sentence.push_str(&format!(
            ": {} entries compared in {}",
            with_commas(compared.entries),
            format_duration_ms(compared.ms)
        ));
    }
    sentence.push_str(&format!(
        ", {} files ({}) changed",
        with_commas(pass.changed_files),
        format_bytes(pass.changed_bytes)
    ));
    if let Some(copied) = &pass.copied {
        sentence.push_str(&format!(", copied in {}", format_duration_ms(copied.ms)));
    }
    sentence
}

/// A step timed by its journaled durations in this run and the earlier ones.
fn timed_forecast(step: &str, events: &[Event], earlier: &[Vec<Event>]) -> StepForecast {
    let this_run = durations(events, step);
    let mut runs = usize::from(!this_run.is_empty());
    let mut all = this_run;
    for events in earlier {
        let durations = durations(events, step);
        runs += usize::from(!durations.is_empty());
        all.extend(durations);
    }
    let (Some(low), Some(high)) = (all.iter().min(), all.iter().max()) else {
        return StepForecast {
            step: step.to_string(),
            low_ms: None,
            high_ms: None,
            basis: "never timed".into(),
            counted: true,
        };
    };
    let times = match all.len() {
        1 => "once".to_string(),
        count => format!("{count} times"),
    };
    let runs = if runs == 1 {
        "1 run".into()
    } else {
        format!("{runs} runs")
    };
    StepForecast {
        step: step.to_string(),
        low_ms: Some(*low),
        high_ms: Some(*high),
        basis: format!("done {times} in {runs}"),
        counted: true,
    }
}

/// How long `step` (or, for a loop step, its items together) took each time it was done.
fn durations(events: &[Event], step: &str) -> Vec<u64> {
    let mut durations = Vec::new();
    let mut items = 0;
    for event in events {
        if let EventKind::StepFinished {
            step: id,
            status,
            duration_ms,
            ..
        } = &event.kind
            && status.is_done()
        {
            if id == step {
                durations.push(*duration_ms);
            } else if is_item_of(id, step) {
                items += duration_ms;
            }
        }
    }
    if durations.is_empty() && items > 0 {
        durations.push(items);
    }
    durations
}

fn millis_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.duration_since(from).as_millis()).unwrap_or(0)
}

/// `1,234,567`.
fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// The journals of the other runs of playbook `name` kept beside the run in `run_dir`
/// (`runs/<run>`), for the durations of their steps. Unreadable ones are left out: they
/// only lose a prediction its figures.
pub fn earlier_runs(run_dir: &Path, name: &str) -> Vec<Vec<Event>> {
    let (Some(runs), Some(this)) = (run_dir.parent(), run_dir.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name() != this)
        .filter_map(|entry| super::journal::read_events(&entry.path()).ok())
        .map(|(events, _)| events)
        .filter(|events| {
            events.iter().any(
                |event| matches!(&event.kind, EventKind::RunStarted { name: of, .. } if of == name),
            )
        })
        .collect()
}

/// The forecast of `playbook`'s window for the run in `run_dir`, now; `None` without a
/// window.
pub fn forecast_run(playbook: &Playbook, run_dir: &Path) -> Option<WindowForecast> {
    let shape = WindowShape::of(playbook)?;
    let (events, _) = super::journal::read_events(run_dir).ok()?;
    let earlier = earlier_runs(run_dir, &playbook.name);
    Some(forecast(&shape, &events, &earlier, Timestamp::now()))
}

/// For `status`: the forecast of the window of the run in `run_dir` (what is left of it
/// when it is open), from the playbook its journal names (the path as the run's command
/// gave it, so from the same directory). `None` when the playbook has no window, cannot be
/// read here, or the window has closed (the summary then says how it went).
pub fn status_forecast(run_dir: &Path) -> Option<WindowForecast> {
    let (events, _) = super::journal::read_events(run_dir).ok()?;
    let path = events.iter().rev().find_map(|event| match &event.kind {
        EventKind::RunStarted { playbook, .. } => Some(playbook.clone()),
        _ => None,
    })?;
    let playbook = Playbook::load(Path::new(&path)).ok()?;
    let shape = WindowShape::of(&playbook)?;
    let closed = events.iter().any(|event| match &event.kind {
        EventKind::StepFinished { step, status, .. } => *step == shape.to && status.is_done(),
        EventKind::StepSkipped { step, done, .. } => *step == shape.to && *done,
        _ => false,
    });
    if closed {
        return None;
    }
    let earlier = earlier_runs(run_dir, &playbook.name);
    Some(forecast(&shape, &events, &earlier, Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::StepStatus;

    const T0: i64 = 1_780_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).expect("a time")
    }

    fn event(secs: i64, kind: EventKind) -> Event {
        Event {
            ts: at(secs).to_string(),
            run: "r".into(),
            kind,
        }
    }

    fn note(secs: i64, step: &str, data: serde_json::Value) -> Event {
        event(
            secs,
            EventKind::StepNote {
                step: step.into(),
                data,
            },
        )
    }

    fn finished(secs: i64, step: &str, duration_ms: u64) -> Event {
        event(
            secs,
            EventKind::StepFinished {
                step: step.into(),
                status: StepStatus::Changed,
                duration_ms,
                hash: None,
                output: None,
                error: None,
                tail: Vec::new(),
            },
        )
    }

    /// The notes of a finished pass of `initial-copy` that started at `start` (seconds
    /// after T0), compared `entries` in `compare_ms`, found `files` changed and copied
    /// them in `copy_ms`.
    fn pass(
        number: u32,
        start: i64,
        entries: u64,
        compare_ms: u64,
        files: u64,
        copy_ms: u64,
    ) -> Vec<Event> {
        let end = start + ((compare_ms + copy_ms) / 1000) as i64;
        vec![
            note(
                start,
                "initial-copy",
                serde_json::json!({
                    "sync": "pass", "pass": number, "started": at(start).to_string(),
                    "started_secs": T0 + start, "started_nanos": 0, "settings": "s",
                    "shards": [{"entries": ["home"], "bytes": files * 1000, "files": files}],
                }),
            ),
            note(
                start,
                "initial-copy",
                serde_json::json!({"sync": "compared", "pass": number, "entries": entries, "ms": compare_ms}),
            ),
            note(
                end,
                "initial-copy",
                serde_json::json!({
                    "sync": "ended", "pass": number, "at": at(end).to_string(), "copy_ms": copy_ms,
                    "copied_bytes": files * 1000, "copied_files": files,
                }),
            ),
            note(
                end,
                "initial-copy",
                serde_json::json!({"sync": "pass_done", "pass": number}),
            ),
        ]
    }

    fn shape() -> WindowShape {
        let step = |id: &str, role| WindowStep {
            id: id.into(),
            role,
        };
        WindowShape {
            from: "start-maintenance".into(),
            to: "hub-online".into(),
            steps: vec![
                step("take-hub-offline", StepRole::Timed),
                step(
                    "final-copy",
                    StepRole::Copy {
                        continues: "initial-copy".into(),
                    },
                ),
                step("confirm-delete", StepRole::Approval),
                step("hub-online", StepRole::Timed),
            ],
        }
    }

    fn step<'a>(forecast: &'a WindowForecast, id: &str) -> &'a StepForecast {
        forecast
            .steps
            .iter()
            .find(|step| step.step == id)
            .expect("the step")
    }

    #[test]
    fn with_no_pass_yet_the_copy_is_unknown() {
        let forecast = forecast(&shape(), &[], &[], at(0));
        let copy = step(&forecast, "final-copy");
        assert_eq!((copy.low_ms, copy.high_ms), (None, None));
        assert_eq!(copy.basis, "no pass of initial-copy yet");
        assert_eq!(step(&forecast, "hub-online").basis, "never timed");
        assert_eq!(
            forecast.untimed(),
            ["take-hub-offline", "final-copy", "hub-online"]
        );
        assert_eq!((forecast.low_ms, forecast.high_ms), (0, None));
        assert!(!step(&forecast, "confirm-delete").counted);
    }

    #[test]
    fn one_pass_bounds_the_copy_from_below_only() {
        let events = pass(1, 0, 1_200_000, 370_000, 5_000, 3_600_000);
        let forecast = forecast(&shape(), &events, &[], at(7_200));
        let copy = step(&forecast, "final-copy");
        assert_eq!((copy.low_ms, copy.high_ms), (Some(370_000), None));
        assert_eq!(
            copy.basis,
            "last pass of initial-copy (pass 1) ended 53m50s ago: 1,200,000 entries compared in 6m10s, 5,000 files (4.8 MiB) changed, copied in 60m00s; what changed since is unknown until initial-copy has a second pass"
        );
        assert_eq!(forecast.high_ms, None);
    }

    /// What the first run of the continued copy took beyond its pass (an agent shipped,
    /// started and followed) is added to both ends: the final copy pays it too.
    #[test]
    fn the_copy_s_own_overhead_counts_from_its_first_run() {
        let mut events = pass(1, 0, 1_000, 6_000, 1_000, 60_000);
        events.push(finished(70, "initial-copy", 6_000 + 60_000 + 4_000));
        events.extend(pass(2, 3_600, 1_000, 6_000, 100, 10_000));
        let forecast = forecast(&shape(), &events, &[], at(3_600 + 1_800));
        let copy = step(&forecast, "final-copy");
        assert_eq!(copy.low_ms, Some(4_000 + 6_000 + 2_500));
        assert_eq!(copy.high_ms, Some(4_000 + 2 * 6_000 + 2 * 5_000));
        assert!(
            copy.basis
                .ends_with("; plus 4.0s of starting and following the copy, as initial-copy took beyond its first pass"),
            "{}",
            copy.basis
        );
    }

    #[test]
    fn several_passes_give_a_range_from_the_last_one_and_its_rate_of_change() {
        let mut events = pass(1, 0, 1_000, 6_000, 1_000, 60_000);
        events.extend(pass(2, 3_600, 1_000, 6_000, 100, 10_000));
        // Half an hour after pass 2 started: half as much has changed as pass 2 found.
        let forecast = forecast(&shape(), &events, &[], at(3_600 + 1_800));
        let copy = step(&forecast, "final-copy");
        assert_eq!(copy.low_ms, Some(6_000 + 2_500));
        assert_eq!(copy.high_ms, Some(2 * 6_000 + 2 * 5_000));
        assert!(
            copy.basis.starts_with(
                "last pass of initial-copy (pass 2) ended 29m44s ago: 1,000 entries compared in 6.0s, 100 files (97.7 KiB) changed, copied in 10.0s; changes since then counted at the rate it saw (100 files in the 60m00s between its start and that of pass 1)"
            ),
            "{}",
            copy.basis
        );
    }

    #[test]
    fn other_steps_count_from_their_durations_in_this_run_and_earlier_ones() {
        let mut events = pass(1, 0, 1_000, 6_000, 1_000, 60_000);
        events.extend(pass(2, 600, 1_000, 6_000, 10, 1_000));
        events.push(finished(700, "hub-online", 800));
        let earlier = vec![vec![
            finished(0, "hub-online", 1_200),
            finished(1, "take-hub-offline", 300),
        ]];
        let forecast = forecast(&shape(), &events, &earlier, at(1_200));
        let online = step(&forecast, "hub-online");
        assert_eq!((online.low_ms, online.high_ms), (Some(800), Some(1_200)));
        assert_eq!(online.basis, "done 2 times in 2 runs");
        assert_eq!(
            step(&forecast, "take-hub-offline").basis,
            "done once in 1 run"
        );
        assert!(forecast.untimed().is_empty());
        let copy = step(&forecast, "final-copy");
        let sum = |pick: fn(&StepForecast) -> Option<u64>| -> u64 {
            forecast
                .steps
                .iter()
                .filter(|s| s.counted)
                .filter_map(pick)
                .sum()
        };
        assert_eq!(forecast.low_ms, sum(|s| s.low_ms));
        assert_eq!(forecast.high_ms, Some(sum(|s| s.high_ms)));
        assert!(copy.high_ms.is_some());
    }

    #[test]
    fn an_open_window_forecasts_what_is_left_with_changes_up_to_its_opening() {
        let mut events = pass(1, 0, 1_000, 6_000, 1_000, 60_000);
        events.extend(pass(2, 600, 1_000, 6_000, 100, 10_000));
        events.push(event(
            1_200,
            EventKind::Approved {
                step: "start-maintenance".into(),
                via: "--yes".into(),
            },
        ));
        events.push(finished(1_201, "take-hub-offline", 300));
        // Long after the opening: the changes stopped when users were locked out.
        let forecast = forecast(&shape(), &events, &[], at(100_000));
        assert_eq!(forecast.opened, Some(at(1_200).to_string()));
        let left: Vec<&str> = forecast.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(left, ["final-copy", "confirm-delete", "hub-online"]);
        let copy = step(&forecast, "final-copy");
        assert_eq!(copy.low_ms, Some(6_000 + 5_000));
    }
}
