//! The summary at the end of a run: time per step over every command that worked on the
//! run, the data the copies moved, and how long the maintenance window lasted.

use std::fmt::Write as _;

use super::{format_bytes, format_duration_ms};
use crate::engine::summary::RunSummary;

impl RunSummary {
    /// The summary as text for the terminal.
    pub fn to_text(&self) -> String {
        let width = self.steps.keys().map(String::len).max().unwrap_or(4).max(4);
        let mut text = String::from("summary:\n");
        let mut total_ms = 0;
        let mut total_bytes = 0;
        let mut total_files = 0;
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
            total_ms += totals.duration_ms;
            total_bytes += totals.bytes;
            total_files += totals.files;
        }
        let commands = if self.commands == 1 {
            "1 command".to_string()
        } else {
            format!("{} commands", self.commands)
        };
        let _ = writeln!(
            text,
            "  time in steps: {} over {commands}",
            format_duration_ms(total_ms)
        );
        if total_files > 0 || total_bytes > 0 {
            let _ = writeln!(
                text,
                "  copied: {} in {total_files} files",
                format_bytes(total_bytes)
            );
        }
        if let Some((steps, opened, closed)) = &self.window {
            let span = format!("{} to {}", steps.from, steps.to);
            let line = match (opened, closed) {
                (Some(opened), Some(closed)) => format!(
                    "maintenance window ({span}): {}",
                    format_duration_ms(closed.duration_since(*opened).as_millis().max(0) as u64)
                ),
                (Some(opened), None) => format!(
                    "maintenance window ({span}): open since {}",
                    opened.strftime("%Y-%m-%d %H:%M:%S UTC")
                ),
                (None, _) => format!("maintenance window ({span}): not opened yet"),
            };
            let _ = writeln!(text, "  {line}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Event, EventKind, StepStatus};
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
}
