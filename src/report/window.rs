//! The maintenance window's forecast as text (under a plan, in a status) and Markdown, and
//! the prediction set beside what the window took (in a summary).

use std::fmt::Write as _;

use super::format_duration_ms;
use crate::engine::window::{StepForecast, WindowForecast};

/// A range of milliseconds in words: `about 3.0s`, `3.0s to 12.0s`, `at least 3.0s`,
/// `unknown`.
fn range(low_ms: Option<u64>, high_ms: Option<u64>) -> String {
    match (low_ms, high_ms) {
        (Some(low), Some(high)) if low == high => format!("about {}", format_duration_ms(low)),
        (Some(low), Some(high)) => {
            format!(
                "{} to {}",
                format_duration_ms(low),
                format_duration_ms(high)
            )
        }
        (Some(low), None) if low > 0 => format!("at least {}", format_duration_ms(low)),
        _ => "unknown".into(),
    }
}

impl StepForecast {
    /// The step's figure in words; `-` for an approval, which is not counted.
    fn figure(&self) -> String {
        if self.counted {
            range(self.low_ms, self.high_ms)
        } else {
            "-".into()
        }
    }
}

impl WindowForecast {
    /// The whole window's figure in words (`3.0s to 12.0s`, `at least 3.0s (no figure
    /// for hub-online)`), or why there is none (`no estimate (no figure for final-copy)`).
    pub fn range_words(&self) -> String {
        let untimed = self.untimed();
        let missing = if untimed.is_empty() {
            String::new()
        } else {
            format!(" (no figure for {})", untimed.join(", "))
        };
        if self.low_ms == 0 && self.high_ms.is_none() {
            return format!("no estimate{missing}");
        }
        format!("{}{missing}", range(Some(self.low_ms), self.high_ms))
    }

    /// The heading line: the window, and how long it (or what is left of it) will take.
    fn heading(&self) -> String {
        let what = match &self.opened {
            Some(opened) => format!("open since {opened}; predicted for what is left"),
            None => "predicted".into(),
        };
        format!(
            "maintenance window ({} to {}), {what}: {}",
            self.from,
            self.to,
            self.range_words()
        )
    }

    /// For a terminal, below a plan or a status: the heading, then one line per step.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n", self.heading());
        let width = self
            .steps
            .iter()
            .map(|step| step.step.len())
            .max()
            .unwrap_or(0);
        let figures: Vec<String> = self.steps.iter().map(StepForecast::figure).collect();
        let figure_width = figures.iter().map(String::len).max().unwrap_or(0);
        for (step, figure) in self.steps.iter().zip(&figures) {
            let _ = writeln!(
                text,
                "  {:<width$}  {figure:<figure_width$}  {}",
                step.step, step.basis
            );
        }
        text
    }

    /// For a pull request, below a plan: the heading, then a table of the steps.
    pub fn to_markdown(&self) -> String {
        let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let mut text = format!(
            "\n**{}**\n\n| Step | Time | Rests on |\n| --- | ---: | --- |\n",
            escape(&self.heading())
        );
        for step in &self.steps {
            let _ = writeln!(
                text,
                "| `{}` | {} | {} |",
                step.step,
                step.figure(),
                escape(&step.basis)
            );
        }
        text
    }

    /// Set beside how long the window took: `predicted 3.0s to 12.0s`.
    pub fn against(&self, actual_ms: u64) -> String {
        let within = match (self.low_ms, self.high_ms) {
            (low, Some(high)) if self.untimed().is_empty() => {
                if actual_ms < low {
                    ", shorter than predicted"
                } else if actual_ms > high {
                    ", longer than predicted"
                } else {
                    ", within the prediction"
                }
            }
            (low, None) if low > 0 && actual_ms < low => ", shorter than predicted",
            _ => "",
        };
        if self.low_ms == 0 && self.high_ms.is_none() {
            return format!(
                "no prediction: {}",
                self.range_words()
                    .replacen("no estimate (", "", 1)
                    .trim_end_matches(')')
            );
        }
        format!("predicted {}{within}", self.range_words())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, low: Option<u64>, high: Option<u64>, basis: &str) -> StepForecast {
        StepForecast {
            step: id.into(),
            low_ms: low,
            high_ms: high,
            basis: basis.into(),
            counted: true,
        }
    }

    fn forecast(steps: Vec<StepForecast>) -> WindowForecast {
        let counted: Vec<&StepForecast> = steps.iter().filter(|step| step.counted).collect();
        WindowForecast {
            from: "start-maintenance".into(),
            to: "hub-online".into(),
            opened: None,
            low_ms: counted.iter().filter_map(|step| step.low_ms).sum(),
            high_ms: counted.iter().map(|step| step.high_ms).sum(),
            steps,
        }
    }

    fn approval(id: &str) -> StepForecast {
        StepForecast {
            counted: false,
            ..step(id, Some(0), Some(0), "an approval: its wait is not counted")
        }
    }

    #[test]
    fn a_window_with_a_catch_up_pass_and_timed_steps() {
        let forecast = forecast(vec![
            step(
                "final-copy",
                Some(372_000),
                Some(760_000),
                "last pass of initial-copy (pass 3) ended 42m00s ago: 1,200,000 entries compared in 6m10s, 3,100 files (1.2 GiB) changed, copied in 2m05s; changes since then counted at the rate it saw (3,100 files in the 60m00s between its start and that of pass 2)",
            ),
            step(
                "no-active-users",
                Some(1_200),
                Some(3_400),
                "done 3 times in 2 runs",
            ),
            approval("confirm-delete"),
            step("hub-online", Some(800), Some(800), "done once in 1 run"),
        ]);
        insta::assert_snapshot!("forecast_text", forecast.to_text());
        insta::assert_snapshot!("forecast_markdown", forecast.to_markdown());
        assert_eq!(
            forecast.against(400_000),
            "predicted 6m14s to 12m44s, within the prediction"
        );
    }

    #[test]
    fn no_pass_yet_and_an_untimed_step_leave_it_unknown() {
        let forecast = forecast(vec![
            step("final-copy", None, None, "no pass of initial-copy yet"),
            step("take-hub-offline", None, None, "never timed"),
        ]);
        insta::assert_snapshot!("forecast_unknown", forecast.to_text());
        assert_eq!(
            forecast.against(5_000),
            "no prediction: no figure for final-copy, take-hub-offline"
        );
    }

    #[test]
    fn one_pass_gives_a_lower_bound_only() {
        let mut forecast = forecast(vec![
            step(
                "final-copy",
                Some(4_000),
                None,
                "last pass of initial-copy (pass 1) ended 5.0s ago: 120 entries compared in 4.0s, 120 files (1.0 MiB) changed, copied in 1.0s; what changed since is unknown until initial-copy has a second pass",
            ),
            step("hub-online", Some(800), Some(900), "done 2 times in 2 runs"),
        ]);
        forecast.opened = Some("2026-12-03T10:00:00Z".into());
        insta::assert_snapshot!("forecast_open_lower_bound", forecast.to_text());
        assert_eq!(
            forecast.against(2_000),
            "predicted at least 4.8s, shorter than predicted"
        );
    }
}
