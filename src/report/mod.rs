//! How a run is shown: human lines on stderr (colours on a terminal, timestamps in CI logs)
//! and, with `--format json`, one event per line on stdout.

mod live;
mod plan;
mod status;
mod summary;
mod window;

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, RwLock};

pub use crate::engine::plan_report::{PlanDecision, PlanEntry, PlanReport};
pub use crate::engine::summary::RunSummary;
pub use status::{RunRow, RunStatusView, StepStatusView, list_json, render_list};

pub use crate::actions::{Progress, StepOutput};
use crate::engine::event::{Event, EventKind, RunOutput, RunStatus, StepStatus};
use crate::render::Masker;
pub use crate::syntax::{format_bytes, format_duration_ms};

/// Output format of `run` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human text on stderr.
    #[default]
    Text,
    /// JSON events on stdout, human text on stderr.
    Json,
}

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Only failures, pauses and the final line.
    Quiet,
    /// Steps and command output.
    #[default]
    Normal,
    /// Also check commands' output and skipped-step details.
    Verbose,
}

/// Prints events and command output; safe to share between tasks.
#[derive(Debug)]
pub struct Reporter {
    format: Format,
    verbosity: Verbosity,
    terminal: bool,
    color: bool,
    masker: RwLock<Masker>,
    stderr: Mutex<()>,
    run_id: RwLock<String>,
    /// The display a long action redraws on a terminal, while one is shown.
    live: Mutex<Option<live::LiveDisplay>>,
    /// Put before every human line: `[hub] ` when a fleet runs several hubs at once.
    prefix: String,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Reporter {
    /// A reporter; colours only when stderr is a terminal and `NO_COLOR` is not set.
    pub fn new(format: Format, verbosity: Verbosity) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Reporter {
            format,
            verbosity,
            terminal,
            color: terminal && std::env::var_os("NO_COLOR").is_none(),
            masker: RwLock::new(Masker::default()),
            stderr: Mutex::new(()),
            run_id: RwLock::new(String::new()),
            live: Mutex::new(None),
            prefix: String::new(),
        }
    }

    /// The same reporter with every human line starting with `[label] `, so that lines of
    /// runs that go on side by side (the hubs of a fleet) can be told apart.
    pub fn labelled(mut self, label: &str) -> Self {
        self.prefix = format!("{} ", self.paint(BOLD, &format!("[{label}]")));
        self
    }

    /// Secrets to mask from now on.
    pub fn set_masker(&self, masker: Masker) {
        if let Ok(mut current) = self.masker.write() {
            *current = masker;
        }
    }

    /// The run that events are about from now on.
    pub fn set_run(&self, run_id: &str) {
        if let Ok(mut current) = self.run_id.write() {
            *current = run_id.to_string();
        }
    }

    /// A `progress` event: JSON on stdout in json mode, a line on stderr otherwise. Actions
    /// decide how often to report.
    pub fn progress(&self, step: &str, progress: Progress) {
        let event = Event {
            ts: crate::engine::event::now_rfc3339(),
            run: self.run_id.read().map(|id| id.clone()).unwrap_or_default(),
            kind: EventKind::Progress {
                step: step.to_string(),
                done_bytes: progress.done_bytes,
                total_bytes: progress.total_bytes,
                done_files: progress.done_files,
                total_files: progress.total_files,
                workers: progress.workers,
            },
        };
        if let Ok(json) = serde_json::to_value(&event) {
            self.event(&event, &json);
        }
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The verbosity.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    fn mask(&self, text: &str) -> String {
        self.masker
            .read()
            .map(|masker| masker.mask(text))
            .unwrap_or_else(|_| text.to_string())
    }

    fn paint(&self, color: &str, text: &str) -> String {
        if self.color {
            format!("{color}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Writes human lines to stderr, each with a time prefix: short on a terminal, full
    /// RFC 3339 in logs.
    pub fn human(&self, text: &str) {
        let time = if self.terminal {
            self.paint(DIM, &jiff::Zoned::now().strftime("%H:%M:%S").to_string())
        } else {
            super::engine::event::now_rfc3339()
        };
        let _guard = self.stderr.lock();
        let print = || {
            let mut stderr = std::io::stderr().lock();
            for line in self.mask(text).lines() {
                let _ = writeln!(stderr, "{time} {}{line}", self.prefix);
            }
        };
        match self.live.lock().ok().as_deref() {
            Some(Some(display)) => display.above(print),
            _ => print(),
        }
    }

    /// Whether a long action's progress is redrawn in place: text on a terminal, not quiet,
    /// and one run at a time (the hubs of a fleet, labelled, print lines instead).
    pub fn redraws(&self) -> bool {
        self.terminal
            && self.format == Format::Text
            && self.verbosity != Verbosity::Quiet
            && self.prefix.is_empty()
    }

    /// Shows a long action's state on the display redrawn in place (see [`Reporter::redraws`]).
    pub fn live(&self, step: &str, view: crate::actions::output::LiveView<'_>) {
        if !self.redraws() {
            return;
        }
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        match live.as_mut() {
            Some(display) if display.step() == step => display.update(view),
            _ => {
                if let Some(display) = live.take() {
                    display.clear();
                }
                *live = Some(live::LiveDisplay::new(step, view));
            }
        }
    }

    /// Takes the display off the screen (its step ended, or another began).
    fn end_live(&self) {
        if let Ok(mut live) = self.live.lock()
            && let Some(display) = live.take()
        {
            display.clear();
        }
    }

    /// A line of a command's output, prefixed by its step.
    pub fn output_line(&self, step: &str, line: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let prefix = self.paint(DIM, &format!("[{step}]"));
        self.human(&format!("{prefix} {line}"));
    }

    /// A warning that does not stop anything.
    pub fn warn(&self, message: &str) {
        self.human(&format!("{} {message}", self.paint(YELLOW, "warning:")));
    }

    /// An already masked event: JSON on stdout in json mode, and a human line on stderr.
    pub fn event(&self, event: &Event, json: &serde_json::Value) {
        if !matches!(
            event.kind,
            EventKind::Progress { .. } | EventKind::StepNote { .. }
        ) {
            // A step's end (or anything but its progress) ends its live display.
            self.end_live();
        }
        if self.format == Format::Json {
            let _guard = self.stderr.lock();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{json}");
            let _ = stdout.flush();
        }
        if let Some(line) = self.describe(&event.kind) {
            self.human(&line);
        }
    }

    /// The human line of an event, if the verbosity shows it.
    fn describe(&self, kind: &EventKind) -> Option<String> {
        let quiet = self.verbosity == Verbosity::Quiet;
        Some(match kind {
            EventKind::RunStarted { name, playbook, .. } if !quiet => {
                format!("{} {name} ({playbook})", self.paint(BOLD, "run"))
            }
            EventKind::StepStarted {
                step,
                name,
                attempt,
                ..
            } if !quiet => {
                let again = if *attempt > 1 {
                    format!(" (try {attempt})")
                } else {
                    String::new()
                };
                let title = if name == step {
                    String::new()
                } else {
                    format!(" {name}")
                };
                format!(
                    "{} {}{title}{again}",
                    self.paint(BOLD, "▶"),
                    self.paint(BOLD, step)
                )
            }
            EventKind::StepSkipped { step, reason, .. } if !quiet => {
                format!("{} {step} skipped: {reason}", self.paint(DIM, "↷"))
            }
            EventKind::Approved { step, via } if !quiet => {
                format!("{} {step} approved ({via})", self.paint(GREEN, "✓"))
            }
            EventKind::StepFinished {
                step,
                status,
                duration_ms,
                error,
                ..
            } => return self.describe_step_finished(step, status, *duration_ms, error.as_deref()),
            EventKind::Paused { step, message } => format!(
                "{} {step} waits for approval: {message}\n  to go on, run again with --approve {step} (or --yes)",
                self.paint(YELLOW, "⏸")
            ),
            EventKind::Warning { message } => {
                format!("{} {message}", self.paint(YELLOW, "warning:"))
            }
            EventKind::PlanChanged {
                step,
                before_any_step,
                changes,
            } => self.describe_plan_changed(step.as_deref(), *before_any_step, changes),
            // Only a block with a rescue forgets its steps.
            EventKind::BlockFailed {
                block, step, steps, ..
            } => format!(
                "{} block {block}: step {step} failed; {}",
                self.paint(YELLOW, "↺"),
                if steps.is_empty() {
                    "it has no rescue; its always steps run now"
                } else {
                    "its rescue runs now, then its always steps"
                }
            ),
            EventKind::BlockFinished {
                block,
                failed,
                rescued,
                handler_failed,
                handler_error,
            } => self.describe_block_finished(
                block,
                failed,
                *rescued,
                handler_failed.as_deref().zip(handler_error.as_deref()),
            ),
            EventKind::WindowPredicted { forecast } if !quiet => format!(
                "maintenance window ({} to {}) opens: predicted {}",
                forecast.from,
                forecast.to,
                forecast.range_words()
            ),
            EventKind::RunFinished { status, exit_code } => {
                let (color, text) = run_verdict(status);
                format!("{} (exit {exit_code})", self.paint(color, text))
            }
            _ => return None,
        })
    }

    /// A saved plan that no longer holds: where the run stopped and what changed.
    fn describe_plan_changed(
        &self,
        step: Option<&str>,
        before_any_step: bool,
        changes: &[String],
    ) -> String {
        let stopped = if before_any_step {
            "nothing was run"
        } else {
            "stopped before it"
        };
        let what = match step {
            Some(step) => {
                format!("{step}: what its decision read changed since the plan; {stopped}")
            }
            None => format!("the run went on since the plan; {stopped}"),
        };
        let mut text = format!("{} {what}", self.paint(RED, "✗"));
        for change in changes {
            text.push_str(&format!("\n  {change}"));
        }
        text.push_str(
            "\n  make a new plan (runbook plan ... --out FILE), review it, and run that one",
        );
        text
    }

    /// How a block whose step failed ended: what its rescue did, or that it failed too.
    fn describe_block_finished(
        &self,
        block: &str,
        failed: &str,
        rescued: bool,
        handler: Option<(&str, &str)>,
    ) -> String {
        let (handled, again) = if rescued {
            (
                "its rescue ran",
                "starts the block over from its first step".to_string(),
            )
        } else {
            ("it has no rescue", format!("tries {failed} again"))
        };
        match handler {
            None => format!(
                "{} block {block}: {failed} failed and {handled}; the run stops here, not done: \
                 the same command again {again}",
                self.paint(YELLOW, "↺")
            ),
            Some((step, error)) => format!(
                "{} block {block}: {failed} failed, and then {step} failed too: {error}\n  \
                 fix what made them fail, then run the same command again: it {again}",
                self.paint(RED, "✗")
            ),
        }
    }

    /// How a step ended; quiet shows only failures, refusals and interruptions.
    fn describe_step_finished(
        &self,
        step: &str,
        status: &StepStatus,
        duration_ms: u64,
        error: Option<&str>,
    ) -> Option<String> {
        let quiet = self.verbosity == Verbosity::Quiet;
        let took = format_duration_ms(duration_ms);
        Some(match status {
            StepStatus::Ok | StepStatus::Changed if quiet => return None,
            StepStatus::Ok => format!("{} {step} ok ({took})", self.paint(GREEN, "✓")),
            StepStatus::Changed => {
                format!("{} {step} changed ({took})", self.paint(GREEN, "✓"))
            }
            StepStatus::Failed => format!(
                "{} {step} failed after {took}: {}",
                self.paint(RED, "✗"),
                error.unwrap_or("unknown error")
            ),
            StepStatus::Refused => format!(
                "{} {step} refused: {}",
                self.paint(RED, "✗"),
                error.unwrap_or("its guard is false")
            ),
            StepStatus::Interrupted => format!(
                "{} {step} interrupted after {took}",
                self.paint(YELLOW, "■")
            ),
        })
    }
}

/// The color and words of how a run ended.
fn run_verdict(status: &RunStatus) -> (&'static str, &'static str) {
    match status {
        RunStatus::Ok => (GREEN, "every step is done"),
        RunStatus::Failed => (RED, "a step failed; run the same command again to resume"),
        RunStatus::Refused => (
            RED,
            "a guard refused a step; nothing was changed by that step",
        ),
        RunStatus::Paused => (YELLOW, "paused at an approval gate"),
        RunStatus::Interrupted => (YELLOW, "interrupted; run the same command again to resume"),
        RunStatus::Invalid => (RED, "invalid input"),
        RunStatus::PlanChanged => (
            RED,
            "what the plan read changed; the run stopped there, before changing anything more",
        ),
    }
}

impl StepOutput for Reporter {
    fn line(&self, step: &str, line: &str) {
        self.output_line(step, line);
    }

    fn warn(&self, message: &str) {
        Reporter::warn(self, message);
    }

    fn progress(&self, step: &str, progress: Progress) {
        Reporter::progress(self, step, progress);
    }

    fn notice(&self, text: &str) {
        self.human(text);
    }

    fn redraws(&self) -> bool {
        Reporter::redraws(self)
    }

    fn live(&self, step: &str, view: crate::actions::output::LiveView<'_>) {
        Reporter::live(self, step, view);
    }
}

impl RunOutput for Reporter {
    fn event(&self, event: &Event, json: &serde_json::Value) {
        Reporter::event(self, event, json);
    }

    fn verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    fn set_masker(&self, masker: Masker) {
        Reporter::set_masker(self, masker);
    }

    fn set_run(&self, run_id: &str) {
        Reporter::set_run(self, run_id);
    }
}

/// Writes a command's output to stdout. A reader that went away (`runbook list | head`)
/// ends the output quietly, as it does for other Unix tools, instead of a panic; another
/// write error is said on stderr.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("runbook: cannot write to stdout: {error}");
    }
}
