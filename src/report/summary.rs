//! The summary at the end of a run: time per step over every command that worked on the
//! run, the data the copies moved, and how long the maintenance window lasted.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::{format_bytes, format_duration_ms};
use crate::engine::event::RunStatus;
use crate::engine::summary::{Ending, RunSummary};
use crate::render::{Masker, quote_for_shell};

/// How long the maintenance window lasted, as far as the journal says.
enum WindowLength {
    /// Opened and closed: this many milliseconds.
    Lasted(u64),
    /// Opened at this time (UTC), not closed yet.
    OpenSince(String),
    /// Not opened yet.
    NotOpened,
}

impl RunSummary {
    /// Time in steps, bytes and files copied, over every step.
    fn totals(&self) -> (u64, u64, u64) {
        self.steps
            .values()
            .fold((0, 0, 0), |(ms, bytes, files), step| {
                (
                    ms + step.duration_ms,
                    bytes + step.bytes,
                    files + step.files,
                )
            })
    }

    /// `1 command`, `3 commands`: how many commands worked on the run.
    fn commands_phrase(&self) -> String {
        if self.commands == 1 {
            "1 command".to_string()
        } else {
            format!("{} commands", self.commands)
        }
    }

    /// The window's first and last steps and how long it lasted, when the playbook has one.
    fn window_length(&self) -> Option<(&str, &str, WindowLength)> {
        let (steps, opened, closed) = self.window.as_ref()?;
        let length = match (opened, closed) {
            (Some(opened), Some(closed)) => {
                WindowLength::Lasted(closed.duration_since(*opened).as_millis().max(0) as u64)
            }
            (Some(opened), None) => {
                WindowLength::OpenSince(opened.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            }
            (None, _) => WindowLength::NotOpened,
        };
        Some((steps.from.as_str(), steps.to.as_str(), length))
    }

    /// The summary as text for the terminal.
    pub fn to_text(&self) -> String {
        let width = self.steps.keys().map(String::len).max().unwrap_or(4).max(4);
        let mut text = String::from("summary:\n");
        for (id, totals) in &self.steps {
            let last = if totals.last.is_empty() {
                "not run"
            } else {
                &totals.last
            };
            let _ = write!(
                text,
                "  {id:<width$}  {:>7}  {last}",
                format_duration_ms(totals.duration_ms)
            );
            if totals.files > 0 || totals.bytes > 0 {
                let _ = write!(
                    text,
                    ", {} in {} files copied",
                    format_bytes(totals.bytes),
                    totals.files
                );
            }
            text.push('\n');
        }
        for block in &self.failed_blocks {
            let _ = writeln!(text, "  {}", block.sentence());
        }
        let (total_ms, total_bytes, total_files) = self.totals();
        let _ = writeln!(
            text,
            "  time in steps: {} over {}",
            format_duration_ms(total_ms),
            self.commands_phrase()
        );
        if total_files > 0 || total_bytes > 0 {
            let _ = writeln!(
                text,
                "  copied: {} in {total_files} files",
                format_bytes(total_bytes)
            );
        }
        if let Some((from, to, length)) = self.window_length() {
            let length = match length {
                WindowLength::Lasted(ms) => match &self.predicted {
                    Some(predicted) => {
                        format!("{} ({})", format_duration_ms(ms), predicted.against(ms))
                    }
                    None => format_duration_ms(ms),
                },
                WindowLength::OpenSince(since) => format!("open since {since}"),
                WindowLength::NotOpened => "not opened yet".into(),
            };
            let _ = writeln!(text, "  maintenance window ({from} to {to}): {length}");
        }
        text
    }

    /// The summary as Markdown, for a CI job's summary (`GITHUB_STEP_SUMMARY`): the steps
    /// with time and result, the bytes copied, the maintenance window, where the run stopped
    /// and the command that goes on. `args` is the command line that ran, without the
    /// program's name; the caller masks secrets in what this returns.
    pub fn to_markdown(&self, args: &[String]) -> String {
        let mut text = format!("### runbook: {} (`{}`)\n\n", self.name, self.run);
        if let Some(ending) = &self.ending {
            let _ = writeln!(text, "{}\n", ending_sentence(ending));
        }
        for block in &self.failed_blocks {
            let _ = writeln!(text, "{}.\n", block.sentence());
        }
        text.push_str("| step | time | result | copied |\n| --- | ---: | --- | ---: |\n");
        for (id, totals) in &self.steps {
            let waits = self.ending.as_ref().is_some_and(|ending| {
                ending.status == RunStatus::Paused && ending.step.as_ref() == Some(id)
            });
            let result = if waits {
                "**waits for approval**"
            } else if totals.last.is_empty() {
                "not run"
            } else {
                &totals.last
            };
            let time = if totals.last.is_empty() {
                String::new()
            } else {
                format_duration_ms(totals.duration_ms)
            };
            let copied = if totals.files > 0 || totals.bytes > 0 {
                format!("{} in {} files", format_bytes(totals.bytes), totals.files)
            } else {
                String::new()
            };
            let _ = writeln!(text, "| `{id}` | {time} | {result} | {copied} |");
        }
        let (total_ms, total_bytes, total_files) = self.totals();
        let _ = write!(
            text,
            "\nTime in steps: {} over {}.",
            format_duration_ms(total_ms),
            self.commands_phrase()
        );
        if total_files > 0 || total_bytes > 0 {
            let _ = write!(
                text,
                " Copied: {} in {total_files} files.",
                format_bytes(total_bytes)
            );
        }
        text.push('\n');
        if let Some((from, to, length)) = self.window_length() {
            let length = match length {
                WindowLength::Lasted(ms) => match &self.predicted {
                    Some(predicted) => {
                        format!("**{}** ({})", format_duration_ms(ms), predicted.against(ms))
                    }
                    None => format!("**{}**", format_duration_ms(ms)),
                },
                WindowLength::OpenSince(since) => format!("open since {since}"),
                WindowLength::NotOpened => "not opened yet".into(),
            };
            let _ = writeln!(text, "\nMaintenance window (`{from}` to `{to}`): {length}.");
        }
        if let Some(command) = self.ending.as_ref().and_then(|ending| go_on(ending, args)) {
            let _ = writeln!(text, "\nTo go on:\n\n```sh\n{command}\n```");
        }
        text.push('\n');
        text
    }
}

impl RunSummary {
    /// Appends [`RunSummary::to_markdown`], secrets masked, to the file at `path` (a CI
    /// job's `GITHUB_STEP_SUMMARY`, which other steps append to as well).
    pub fn append_markdown(
        &self,
        path: &Path,
        args: &[String],
        masker: &Masker,
    ) -> std::io::Result<()> {
        let markdown = masker.mask(&self.to_markdown(args));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(markdown.as_bytes())
    }
}

/// One sentence on how the last command ended.
fn ending_sentence(ending: &Ending) -> String {
    let code = ending.exit_code;
    let step = ending.step.as_deref().unwrap_or("?");
    match ending.status {
        RunStatus::Ok => format!("**Every step is done** (exit {code})."),
        RunStatus::Paused => {
            format!(
                "**Stopped at the approval gate `{step}`** (exit {code}): it waits for approval."
            )
        }
        RunStatus::Failed => {
            format!("**Step `{step}` failed** (exit {code}); the same command resumes there.")
        }
        RunStatus::Refused => {
            format!("**A guard refused step `{step}`** (exit {code}); that step changed nothing.")
        }
        RunStatus::Interrupted => format!(
            "**Interrupted in step `{step}`** (exit {code}); the same command resumes there."
        ),
        RunStatus::Invalid => format!("**Stopped on invalid input** (exit {code})."),
        RunStatus::PlanChanged => format!(
            "**The saved plan no longer holds at step `{step}`** (exit {code}); nothing was changed by that step: make a new plan."
        ),
    }
}

/// The command that goes on from where the run stopped: the same command line, with the gate
/// it waits at approved, and without `--restart` (which would start over again). `None` when
/// there is nothing to go on with: every step is done, or the input must be fixed first.
fn go_on(ending: &Ending, args: &[String]) -> Option<String> {
    if matches!(ending.status, RunStatus::Ok | RunStatus::Invalid) {
        return None;
    }
    let mut words = vec!["runbook".to_string()];
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--restart" => {}
            // Going on from a step would run it and the steps after it once more.
            "--from" => {
                args.next();
            }
            _ if arg.starts_with("--from=") => {}
            _ => words.push(quote_for_shell(arg)),
        }
    }
    if let (RunStatus::Paused, Some(step)) = (ending.status, &ending.step) {
        words.extend(["--approve".to_string(), quote_for_shell(step)]);
    }
    Some(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Event, EventKind, RunStatus, StepStatus};
    use crate::playbook::MaintenanceWindow;

    fn event(ts: &str, kind: EventKind) -> Event {
        Event {
            ts: ts.into(),
            run: "r".into(),
            kind,
        }
    }

    fn finished(step: &str, status: StepStatus, duration_ms: u64) -> EventKind {
        EventKind::StepFinished {
            step: step.into(),
            status,
            duration_ms,
            hash: None,
            output: None,
            error: None,
            tail: Vec::new(),
        }
    }

    fn started() -> EventKind {
        EventKind::RunStarted {
            playbook: "p.yaml".into(),
            name: "p".into(),
            playbook_hash: String::new(),
            steps: Vec::new(),
            params: serde_json::Value::Null,
            pid: 1,
            host: "h".into(),
        }
    }

    #[test]
    fn sums_attempts_over_commands_and_measures_the_window() {
        let events = [
            event("2026-01-01T00:00:00Z", started()),
            event(
                "2026-01-01T00:00:01Z",
                finished("copy", StepStatus::Failed, 1000),
            ),
            event(
                "2026-01-01T00:00:01Z",
                EventKind::StepNote {
                    step: "copy".into(),
                    data: serde_json::json!({"sync": "shard", "bytes": 2048, "files": 3}),
                },
            ),
            event("2026-01-01T00:01:00Z", started()),
            event(
                "2026-01-01T00:01:02Z",
                finished("copy", StepStatus::Changed, 2000),
            ),
            event(
                "2026-01-01T00:01:03Z",
                EventKind::Approved {
                    step: "gate".into(),
                    via: "--yes".into(),
                },
            ),
            event("2026-01-01T00:01:03Z", finished("gate", StepStatus::Ok, 0)),
            event(
                "2026-01-01T00:01:45Z",
                finished("online", StepStatus::Changed, 500),
            ),
        ];
        let window = MaintenanceWindow {
            from: "gate".into(),
            to: "online".into(),
        };
        let summary =
            RunSummary::from_events(&events, &["copy", "gate", "online", "later"], Some(&window));
        let text = summary.to_text();
        assert!(
            text.contains("copy       3.0s  changed, 2.0 KiB in 3 files copied"),
            "{text}"
        );
        assert!(text.contains("later       0ms  not run"), "{text}");
        assert!(text.contains("over 2 commands"), "{text}");
        assert!(
            text.contains("maintenance window (gate to online): 42.0s"),
            "{text}"
        );
    }

    #[test]
    fn a_window_not_closed_yet_says_since_when() {
        let events = [event(
            "2026-01-01T00:00:03Z",
            EventKind::Approved {
                step: "gate".into(),
                via: "terminal".into(),
            },
        )];
        let window = MaintenanceWindow {
            from: "gate".into(),
            to: "online".into(),
        };
        let text = RunSummary::from_events(&events, &["gate", "online"], Some(&window)).to_text();
        assert!(
            text.contains("open since 2026-01-01 00:00:03 UTC"),
            "{text}"
        );
    }

    fn paused_at_the_gate() -> Vec<Event> {
        vec![
            event("2026-01-01T00:00:00Z", started()),
            event(
                "2026-01-01T00:00:02Z",
                finished("copy", StepStatus::Changed, 2000),
            ),
            event(
                "2026-01-01T00:00:02Z",
                EventKind::StepNote {
                    step: "copy".into(),
                    data: serde_json::json!({"sync": "shard", "bytes": 3 << 20, "files": 12}),
                },
            ),
            event(
                "2026-01-01T00:00:02Z",
                EventKind::Paused {
                    step: "gate".into(),
                    message: "lock users out?".into(),
                },
            ),
            event(
                "2026-01-01T00:00:02Z",
                EventKind::RunFinished {
                    status: RunStatus::Paused,
                    exit_code: 5,
                },
            ),
        ]
    }

    #[test]
    fn markdown_of_a_run_paused_at_its_gate_says_how_to_go_on_with_secrets_masked() {
        let window = MaintenanceWindow {
            from: "gate".into(),
            to: "online".into(),
        };
        let summary = RunSummary::from_events(
            &paused_at_the_gate(),
            &["copy", "gate", "online"],
            Some(&window),
        );
        let args: Vec<String> = [
            "run",
            "playbooks/p.yaml",
            "--var",
            "token=s3cr3t-t0ken",
            "--var",
            "hub=my hub",
            "--restart",
            "--from",
            "copy",
            "--state",
            "cluster",
        ]
        .map(String::from)
        .to_vec();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("summary.md");
        std::fs::write(&path, "# the job's own heading\n\n").expect("write");
        let masker = Masker::new(["s3cr3t-t0ken".to_string()]);
        summary
            .append_markdown(&path, &args, &masker)
            .expect("append");
        let markdown = std::fs::read_to_string(&path).expect("read");
        assert!(
            markdown.starts_with("# the job's own heading\n\n### runbook"),
            "{markdown}"
        );
        assert!(!markdown.contains("s3cr3t"), "{markdown}");
        insta::assert_snapshot!("markdown_paused_at_the_gate", markdown);
    }

    #[test]
    fn markdown_of_a_finished_run_has_the_window_and_no_command() {
        let mut events = paused_at_the_gate();
        events.pop();
        events.extend([
            event("2026-01-01T01:00:00Z", started()),
            event(
                "2026-01-01T01:00:00Z",
                EventKind::Approved {
                    step: "gate".into(),
                    via: "--approve".into(),
                },
            ),
            event("2026-01-01T01:00:00Z", finished("gate", StepStatus::Ok, 0)),
            event(
                "2026-01-01T01:01:30Z",
                finished("online", StepStatus::Changed, 90_000),
            ),
            event(
                "2026-01-01T01:01:30Z",
                EventKind::RunFinished {
                    status: RunStatus::Ok,
                    exit_code: 0,
                },
            ),
        ]);
        let window = MaintenanceWindow {
            from: "gate".into(),
            to: "online".into(),
        };
        let markdown = RunSummary::from_events(&events, &["copy", "gate", "online"], Some(&window))
            .to_markdown(&["run".into(), "p.yaml".into()]);
        insta::assert_snapshot!("markdown_done", markdown);
    }
}
