//! The display a long action redraws in place on a terminal: a bar for its total (bytes,
//! rate, ETA) and one line per busy worker, drawn with indicatif. Lines printed meanwhile
//! (steps, output, warnings) go above it, so that nothing scrolls the display away.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::actions::output::LiveView;

/// How often the display is redrawn at most (indicatif's default is 20 per second).
const REFRESH_PER_SECOND: u8 = 4;

/// The display of one step's action.
#[derive(Debug)]
pub struct LiveDisplay {
    step: String,
    multi: MultiProgress,
    total: ProgressBar,
    workers: Vec<ProgressBar>,
}

impl LiveDisplay {
    /// A display for `step`, drawn on stderr, showing `view` at once.
    pub fn new(step: &str, view: LiveView<'_>) -> Self {
        let multi =
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(REFRESH_PER_SECOND));
        // Created where the action is (a resumed copy starts part done), so that the rate
        // and the ETA count only what is done from now on.
        let total = ProgressBar::new(view.progress.total_bytes)
            .with_position(view.progress.done_bytes.min(view.progress.total_bytes));
        total.set_style(
            ProgressStyle::with_template(
                "[{prefix}] {bar:30} {percent:>3}% {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, ETA {eta} {msg}",
            )
            .expect("a valid template")
            .progress_chars("#>."),
        );
        total.set_prefix(step.to_string());
        total.reset_eta();
        let total = multi.add(total);
        let mut display = LiveDisplay {
            step: step.to_string(),
            multi,
            total,
            workers: Vec::new(),
        };
        display.update(view);
        // Rate and ETA move with the copy, not only when a report comes in.
        display.total.enable_steady_tick(Duration::from_millis(500));
        display
    }

    /// The step it shows.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Shows `view`: the bar's totals, and one line per busy worker (lines are added and
    /// removed as the count changes).
    pub fn update(&mut self, view: LiveView<'_>) {
        let progress = view.progress;
        self.total.set_length(progress.total_bytes);
        self.total
            .set_position(progress.done_bytes.min(progress.total_bytes));
        let files = format!("{}/{} files", progress.done_files, progress.total_files);
        self.total.set_message(if view.detail.is_empty() {
            files
        } else {
            format!("{files}, {}", view.detail)
        });
        while self.workers.len() < view.workers.len() {
            let line = self.multi.add(ProgressBar::new_spinner());
            line.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
            self.workers.push(line);
        }
        while self.workers.len() > view.workers.len() {
            if let Some(line) = self.workers.pop() {
                line.finish_and_clear();
                self.multi.remove(&line);
            }
        }
        for (line, text) in self.workers.iter().zip(view.workers) {
            line.set_message(text.clone());
        }
    }

    /// Runs `print` (which writes lines to stderr) with the display out of the way, then
    /// draws it again below them.
    pub fn above<T>(&self, print: impl FnOnce() -> T) -> T {
        self.multi.suspend(print)
    }

    /// Removes the display from the screen.
    pub fn clear(self) {
        for line in &self.workers {
            line.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}
