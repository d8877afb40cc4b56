//! `runbook fleet status`: one line per hub, as a table that fits the terminal, as JSON, or
//! as Markdown for an issue or a pull request.

use crate::syntax::{format_bytes, format_duration_ms};

use super::hub_status::{HubPhase, HubStatus};

/// The hubs of a fleet and where each stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetStatus {
    /// The playbook's name.
    pub playbook: String,
    /// The deployer cluster.
    pub cluster: String,
    /// One entry per hub, in cluster.yaml's order.
    pub hubs: Vec<HubStatus>,
}

/// The table's columns, after the phase.
const HEADERS: [&str; 5] = ["HUB", "PHASE", "COPIED", "WINDOW", "LAST CHANGE"];

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl FleetStatus {
    /// Whether every hub is done.
    pub fn all_done(&self) -> bool {
        self.hubs.iter().all(|hub| hub.phase.is_done())
    }

    /// How many hubs are done.
    fn done_count(&self) -> usize {
        self.hubs.iter().filter(|hub| hub.phase.is_done()).count()
    }

    /// The cells of a hub's row, the phase second.
    fn cells(hub: &HubStatus) -> [String; 5] {
        [
            hub.hub.clone(),
            hub.phase.describe(),
            if hub.run.is_some() {
                format_bytes(hub.bytes_copied)
            } else {
                "-".into()
            },
            match (hub.window_ms, hub.window_open) {
                (Some(ms), false) => format_duration_ms(ms),
                (Some(ms), true) => format!("{} (open)", format_duration_ms(ms)),
                (None, _) => "-".into(),
            },
            hub.last_change
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "-".into()),
        ]
    }

    /// A table no wider than `width` columns (the phase is cut to fit, with `…`), coloured
    /// when `color`.
    pub fn to_text(&self, width: usize, color: bool) -> String {
        let rows: Vec<[String; 5]> = self.hubs.iter().map(Self::cells).collect();
        let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
        // Two spaces between columns; the phase takes what the others leave.
        let others: usize = widths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, w)| w)
            .sum();
        let room = width.saturating_sub(others + 2 * (HEADERS.len() - 1));
        widths[1] = widths[1].min(room.max(HEADERS[1].len() + 8));
        let line = |cells: [String; 5], paint: Option<&str>| -> String {
            let mut text = String::new();
            for (column, cell) in cells.into_iter().enumerate() {
                let cell = fit(&cell, widths[column]);
                let padded = if column + 1 == HEADERS.len() {
                    cell
                } else {
                    format!("{cell:<width$}  ", width = widths[column])
                };
                match (column, paint) {
                    (1, Some(paint)) if color => text.push_str(&format!("{paint}{padded}{RESET}")),
                    _ => text.push_str(&padded),
                }
            }
            text.trim_end().to_string() + "\n"
        };
        let mut text = line(HEADERS.map(String::from), None);
        for (hub, row) in self.hubs.iter().zip(rows) {
            text.push_str(&line(row, Some(phase_colour(&hub.phase))));
        }
        text.push_str(&format!(
            "{} of {} hubs of cluster {} done ({})\n",
            self.done_count(),
            self.hubs.len(),
            self.cluster,
            self.playbook
        ));
        text
    }

    /// The status as one JSON object.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("all_done".into(), self.all_done().into());
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// A Markdown table, for an issue or a pull request.
    pub fn to_markdown(&self) -> String {
        let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let mut text = format!(
            "### Fleet: `{}` on cluster `{}`\n\n{} of {} hubs done.\n\n| Hub | Phase | Copied | Window | Last change |\n| --- | --- | --- | --- | --- |\n",
            self.playbook,
            self.cluster,
            self.done_count(),
            self.hubs.len()
        );
        for hub in &self.hubs {
            let [name, phase, copied, window, changed] = Self::cells(hub);
            let mark = match hub.phase {
                HubPhase::Done => "✅ ",
                HubPhase::Failed { .. } | HubPhase::Refused { .. } => "❌ ",
                HubPhase::AtGate { .. } => "⏸️ ",
                _ => "",
            };
            text.push_str(&format!(
                "| `{}` | {mark}{} | {copied} | {window} | {changed} |\n",
                escape(&name),
                escape(&phase)
            ));
        }
        text
    }
}

fn phase_colour(phase: &HubPhase) -> &'static str {
    match phase {
        HubPhase::Done => GREEN,
        HubPhase::Failed { .. } | HubPhase::Refused { .. } => RED,
        HubPhase::NotStarted => DIM,
        _ => YELLOW,
    }
}

/// `text` cut to `width` characters, ending with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// An RFC 3339 time as `2026-12-03 10:04:05` in UTC, short enough for a table.
fn short_time(ts: &str) -> String {
    ts.parse::<jiff::Timestamp>()
        .map(|time| time.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// The width of the terminal on stdout: its size when it is one, else `COLUMNS`, else 100.
pub fn terminal_width() -> usize {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ only writes a winsize into the struct it is given.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
        if ok && size.ws_col > 0 {
            return usize::from(size.ws_col);
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> FleetStatus {
        let hub = |name: &str, phase: HubPhase, bytes: u64, window: Option<u64>| HubStatus {
            hub: name.into(),
            run: Some(format!("nfs-migrate-{name}")),
            state: phase.state(),
            phase,
            bytes_copied: bytes,
            window_ms: window,
            window_open: false,
            last_change: Some("2026-12-03T10:04:05Z".into()),
        };
        FleetStatus {
            playbook: "nfs-migrate".into(),
            cluster: "sandbox".into(),
            hubs: vec![
                hub("staging", HubPhase::Done, 31 << 20, Some(12_300)),
                hub(
                    "prod",
                    HubPhase::Failed {
                        step: "redeploy".into(),
                        error: "the command exited with 1: Error: UPGRADE FAILED: an error occurred while patching PersistentVolume prod-home-nfs".into(),
                    },
                    4096,
                    Some(60_000),
                ),
                HubStatus::not_started("workshop"),
            ],
        }
    }

    #[test]
    fn the_table_fits_the_width_it_is_given() {
        let text = status().to_text(80, false);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
        }
        assert!(text.contains("failed at redeploy: the comm"), "{text}");
        assert!(text.contains('…'), "{text}");
        assert!(
            text.contains("1 of 3 hubs of cluster sandbox done"),
            "{text}"
        );
        assert!(!status().all_done());
    }

    #[test]
    fn colours_only_when_asked() {
        assert!(!status().to_text(100, false).contains('\x1b'));
        assert!(status().to_text(100, true).contains(GREEN));
    }
}
