//! `runbook status` and `runbook list`: a run's state as its journal and lock tell it.

use crate::engine::window::WindowForecast;
use serde::Serialize;

use super::format_duration_ms;
use crate::actions::{CopyGrid, DetachedCopy, ShardState, State};
use crate::engine::event::{RunStatus, StepStatus};
use crate::engine::journal::{History, StepState};
use crate::engine::live_file::LiveProgress;
use crate::engine::lock::LockHolder;

/// The state of a whole run, and why when the word alone does not say it: `refused`,
/// `interrupted`, `plan changed`, `invalid input`, `crashed` (the process died with nothing
/// left running), `detached` (the process is gone, a copy it started goes on in a pod or
/// Job: `run` again re-attaches), `at a gate`.
pub fn run_state(history: &History, holder: Option<&LockHolder>) -> (State, Option<&'static str>) {
    if holder.is_some() {
        return (State::Running, None);
    }
    match history.finished {
        Some((RunStatus::Ok, _)) => (State::Done, None),
        Some((RunStatus::Failed, _)) => (State::Failed, None),
        Some((RunStatus::Invalid, _)) => (State::Failed, Some("invalid input")),
        Some((RunStatus::Refused, _)) => (State::Stopped, Some("refused")),
        Some((RunStatus::Paused, _)) => (State::Waiting, Some("at a gate")),
        Some((RunStatus::Interrupted, _)) => (State::Stopped, Some("interrupted")),
        Some((RunStatus::PlanChanged, _)) => (State::Stopped, Some("plan changed")),
        None if history.started.is_some()
            && !crate::actions::detached_copies(&history.notes).is_empty() =>
        {
            (State::Running, Some("detached"))
        }
        None if history.started.is_some() => (State::Failed, Some("crashed")),
        None => (State::Pending, None),
    }
}

/// A run's state as text: the word, and why in parentheses.
fn run_state_text(history: &History, holder: Option<&LockHolder>) -> String {
    match run_state(history, holder) {
        (state, Some(why)) => format!("{state} ({why})"),
        (state, None) => state.to_string(),
    }
}

/// A step's state, from what its journal says.
fn step_state(step: &StepState) -> State {
    match step {
        StepState::Pending => State::Pending,
        StepState::Started => State::Running,
        StepState::Done { .. } | StepState::NotApplicable(_) => State::Done,
        StepState::Stopped {
            status: StepStatus::Refused | StepStatus::Interrupted,
            ..
        } => State::Stopped,
        StepState::Stopped { .. } => State::Failed,
        StepState::Paused(_) => State::Waiting,
    }
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

/// `runbook status`: a run as its journal, its lock and the cluster tell it. Text and JSON are
/// both rendered from it.
#[derive(Debug, Serialize)]
pub struct RunStatusView {
    /// The run id.
    pub run: String,
    /// The playbook's path, as the run's first command gave it.
    pub playbook: String,
    /// The playbook's name.
    pub name: String,
    /// The params the run was started with, secrets masked.
    pub params: serde_json::Value,
    /// The whole run in one word: pending, running, waiting, done, failed, stopped.
    pub state: State,
    /// Why, when the word alone does not say it: refused, interrupted, plan changed,
    /// invalid input, crashed, detached, at a gate.
    pub why: Option<&'static str>,
    /// Who holds the run's lock, when a process does.
    pub holder: Option<LockHolder>,
    /// When the journal last changed (RFC 3339).
    pub last_event: Option<String>,
    /// Every step, in the playbook's order.
    pub steps: Vec<StepStatusView>,
    /// The run's copies that go on without runbook (pods, Jobs).
    pub detached: Vec<DetachedCopy>,
    /// How far the running step's copy in the runbook process is, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveProgress>,
    /// The shards of each copy's last pass.
    pub copies: Vec<CopyGrid>,
    /// How long the maintenance window will probably take (what is left of it, once open),
    /// until it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowForecast>,
}

/// One step of [`RunStatusView`].
#[derive(Debug, Serialize)]
pub struct StepStatusView {
    /// The step id.
    pub id: String,
    /// One word: pending, running, waiting, done, failed, stopped.
    pub state: State,
    /// The word with what the journal adds: the time it took, the error, the question.
    pub detail: String,
    /// The mark shown before it on a terminal.
    #[serde(skip)]
    mark: &'static str,
}

impl RunStatusView {
    /// The status of run `run_id` from its journal and lock, with its detached copies.
    pub fn new(
        run_id: &str,
        history: &History,
        holder: Option<LockHolder>,
        detached: Vec<DetachedCopy>,
    ) -> Self {
        let (playbook, name, params) =
            history
                .identity()
                .unwrap_or(("?", "?", &serde_json::Value::Null));
        let steps = history
            .ordered_steps()
            .iter()
            .map(|(id, step)| {
                let (mark, detail) = step_word(step);
                StepStatusView {
                    id: id.clone(),
                    state: step_state(step),
                    detail,
                    mark,
                }
            })
            .collect();
        let (state, why) = run_state(history, holder.as_ref());
        RunStatusView {
            run: run_id.to_string(),
            playbook: playbook.to_string(),
            name: name.to_string(),
            params: params.clone(),
            state,
            why,
            holder,
            last_event: history.last_ts.clone(),
            steps,
            detached,
            live: None,
            copies: Vec::new(),
            window: None,
        }
    }

    /// Adds the maintenance window's forecast.
    pub fn with_window(mut self, window: Option<WindowForecast>) -> Self {
        self.window = window;
        self
    }

    /// Adds how far the running step's copy is (from `live.json`), when the run is held and
    /// that step is the one running (a file left by a process that is gone is ignored), and
    /// the shards of every copy's last pass, those running now among them.
    pub fn with_live(mut self, history: &History, live: Option<LiveProgress>) -> Self {
        self.live = live.filter(|live| {
            self.holder.is_some()
                && self
                    .steps
                    .iter()
                    .any(|step| step.id == live.step && step.state == State::Running)
        });
        let order: Vec<&str> = self.steps.iter().map(|step| step.id.as_str()).collect();
        // The shards copied now: by the runbook process itself, and by detached copies whose
        // agent said which.
        let running: Vec<(&str, &[usize])> = self
            .live
            .iter()
            .map(|live| (live.step.as_str(), live.running_shards.as_slice()))
            .chain(self.detached.iter().filter_map(|copy| {
                let live = copy.live.as_ref()?;
                Some((copy.step.as_str(), live.running_shards.as_slice()))
            }))
            .collect();
        self.copies = crate::actions::copy_grids(&history.notes, &order, &running);
        self
    }

    /// For `--format json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// For a log or a file: no colours.
    pub fn to_text(&self) -> String {
        self.to_terminal(false)
    }

    /// For a terminal: the copies' grids in colour when `color`.
    pub fn to_terminal(&self, color: bool) -> String {
        let state = match self.why {
            Some(why) => format!("{} ({why})", self.state),
            None => self.state.to_string(),
        };
        let mut text = format!("run {}: {state}\n  playbook: {}\n", self.run, self.playbook);
        if let Some(params) = self.params.as_object().filter(|params| !params.is_empty()) {
            let shown: Vec<String> = params
                .iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => format!("{key}={text}"),
                    other => format!("{key}={other}"),
                })
                .collect();
            text.push_str(&format!("  params: {}\n", shown.join(" ")));
        }
        if let Some(holder) = &self.holder {
            text.push_str(&format!("  held by {holder}\n"));
        }
        if let Some(ts) = &self.last_event {
            text.push_str(&format!("  last event: {ts}\n"));
        }
        let width = self
            .steps
            .iter()
            .map(|step| step.id.len())
            .max()
            .unwrap_or(0);
        for step in &self.steps {
            text.push_str(&format!(
                "  {} {:<width$}  {}\n",
                step.mark, step.id, step.detail
            ));
            if let Some(live) = self.live.as_ref().filter(|live| live.step == step.id) {
                text.push_str(&format!("    {}\n", live_line(live)));
            }
        }
        for grid in &self.copies {
            text.push_str(&grid_text(grid, color));
        }
        if let Some(window) = &self.window {
            for line in window.to_text().lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        for copy in &self.detached {
            for line in copy.lines() {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    }
}

/// How many cells a grid line holds.
const GRID_WIDTH: usize = 60;

/// The mark and colour of a shard's state in the grid: a character that reads without
/// colour, coloured on a terminal.
fn cell(state: ShardState) -> (char, &'static str) {
    match state {
        ShardState::Pending => ('.', "\x1b[2m"),
        ShardState::Running => ('>', "\x1b[34m"),
        ShardState::Done => ('#', "\x1b[32m"),
        ShardState::Failed => ('X', "\x1b[31m"),
    }
}

/// A copy's shards as a grid of cells, a legend, and the failed shards' errors.
fn grid_text(grid: &CopyGrid, color: bool) -> String {
    let state = if grid.finished {
        "finished"
    } else {
        "not finished"
    };
    let mut text = format!(
        "  {}: pass {} ({state}), {} shard(s)\n",
        grid.step,
        grid.pass,
        grid.shards.len()
    );
    for row in grid.shards.chunks(GRID_WIDTH) {
        text.push_str("    ");
        for shard in row {
            let (mark, paint) = cell(shard.state);
            if color {
                text.push_str(&format!("{paint}{mark}\x1b[0m"));
            } else {
                text.push(mark);
            }
        }
        text.push('\n');
    }
    let legend: Vec<String> = [
        (ShardState::Done, "done"),
        (ShardState::Running, "running"),
        (ShardState::Failed, "failed"),
        (ShardState::Pending, "pending"),
    ]
    .into_iter()
    .map(|(state, word)| format!("{} {word} {}", cell(state).0, grid.count(state)))
    .collect();
    text.push_str(&format!("    {}\n", legend.join("  ")));
    for shard in grid
        .shards
        .iter()
        .filter(|shard| shard.state == ShardState::Failed)
    {
        let more = if shard.more > 0 {
            format!(" +{}", shard.more)
        } else {
            String::new()
        };
        let tries = match shard.tries.unwrap_or(1) {
            1 => "1 try".to_string(),
            tries => format!("{tries} tries"),
        };
        text.push_str(&format!(
            "    X shard {} ({}{more}), after {tries}: {}\n",
            shard.shard + 1,
            shard.first,
            shard
                .error
                .as_deref()
                .unwrap_or("")
                .replace('\n', "\n      ")
        ));
    }
    text
}

/// `copying: 45% (1.2 GiB of 2.6 GiB), 12000 of 30000 files, 8 workers, as of TIME`.
fn live_line(live: &LiveProgress) -> String {
    let percent = if live.total_bytes > 0 {
        live.done_bytes as f64 * 100.0 / live.total_bytes as f64
    } else if live.total_files > 0 {
        live.done_files as f64 * 100.0 / live.total_files as f64
    } else {
        100.0
    };
    let workers = match live.workers {
        Some(count) => format!(", {count} worker{}", if count == 1 { "" } else { "s" }),
        None => String::new(),
    };
    format!(
        "copying: {percent:.0}% ({} of {}), {} of {} files{workers}, as of {}",
        crate::syntax::format_bytes(live.done_bytes),
        crate::syntax::format_bytes(live.total_bytes),
        live.done_files,
        live.total_files,
        live.ts
    )
}

/// One run of `list`: its id, journal and who holds it.
#[derive(Debug)]
pub struct RunRow {
    /// The run id.
    pub id: String,
    /// Its journal.
    pub history: History,
    /// Who holds its lock (or Lease), when someone does.
    pub holder: Option<LockHolder>,
}

impl RunRow {
    /// A param the run was started with, as text (`-` when it has none of that name).
    fn param(&self, name: &str) -> String {
        let params = self.history.identity().map(|(_, _, params)| params);
        match params.and_then(|params| params.get(name)) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        }
    }

    /// Steps done (or not applicable), and steps.
    fn progress(&self) -> (usize, usize) {
        let steps = self.history.ordered_steps();
        let done = steps
            .values()
            .filter(|state| matches!(state, StepState::Done { .. } | StepState::NotApplicable(_)))
            .count();
        (done, steps.len())
    }
}

/// One line per run for `list`: the deployer's cluster and hub (the run's `cluster` and
/// `hub` params) beside the run's state.
pub fn render_list(runs: &[RunRow]) -> String {
    if runs.is_empty() {
        return "no runs in this state directory\n".into();
    }
    let column = |header: &str, cell: &dyn Fn(&RunRow) -> String| {
        let cells: Vec<String> = runs.iter().map(cell).collect();
        let width = cells
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(header.len());
        (header.to_string(), cells, width)
    };
    let columns = [
        column("RUN", &|run| run.id.clone()),
        column("CLUSTER", &|run| run.param("cluster")),
        column("HUB", &|run| run.param("hub")),
        column("STATE", &|run| {
            run_state_text(&run.history, run.holder.as_ref())
        }),
    ];
    let mut text = String::new();
    let mut line = |cells: Vec<&str>, done: &str, last: &str| {
        for ((_, _, width), cell) in columns.iter().zip(cells) {
            text.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(&format!("{done:>9}  {last}\n"));
    };
    line(
        columns
            .iter()
            .map(|(header, _, _)| header.as_str())
            .collect(),
        "DONE",
        "LAST EVENT",
    );
    for (index, run) in runs.iter().enumerate() {
        let (done, steps) = run.progress();
        line(
            columns
                .iter()
                .map(|(_, cells, _)| cells[index].as_str())
                .collect(),
            &format!("{done}/{steps}"),
            run.history.last_ts.as_deref().unwrap_or("-"),
        );
    }
    text
}

/// `list --format json`: one object per run.
pub fn list_json(runs: &[RunRow]) -> String {
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|run| {
            let (done, steps) = run.progress();
            let (playbook, name, params) =
                run.history
                    .identity()
                    .unwrap_or(("?", "?", &serde_json::Value::Null));
            let (state, why) = run_state(&run.history, run.holder.as_ref());
            serde_json::json!({
                "run": run.id,
                "playbook": playbook,
                "name": name,
                "params": params,
                "state": state,
                "why": why,
                "steps_done": done,
                "steps": steps,
                "holder": run.holder,
                "last_event": run.history.last_ts,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}
