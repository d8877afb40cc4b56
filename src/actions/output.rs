//! Where a step's action says what it is doing while it runs: its commands' output lines,
//! warnings, and the progress of a long action. The engine gives each step one; the terminal
//! and JSON reporter (`report`, a higher layer) implements it, so actions never reach up to
//! the screen themselves.

/// How far a long action is; totals are 0 while unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Files done.
    pub done_files: u64,
    /// Files in all.
    pub total_files: u64,
    /// Workers copying in parallel now (a copy's rsync processes), when the action has any.
    pub workers: Option<u32>,
}

/// What a long action shows on a display redrawn in place: its totals (a bar with rate and
/// ETA) and one line per worker.
#[derive(Debug, Clone, Copy)]
pub struct LiveView<'a> {
    /// How far it is.
    pub progress: Progress,
    /// What the bar's line adds (`shards 3/12`), if anything.
    pub detail: &'a str,
    /// One line per busy worker.
    pub workers: &'a [String],
    /// The shards being copied now (indexes in the pass's plan), when known.
    pub running: &'a [usize],
}

/// What an action shows while it runs. Implementations mask secrets and add the run's id.
pub trait StepOutput: Send + Sync {
    /// One line of a command's output, prefixed by its step.
    fn line(&self, step: &str, line: &str);
    /// A warning that does not stop anything.
    fn warn(&self, message: &str);
    /// How far a long action is (a `progress` event; not journaled). Actions decide how
    /// often to report.
    fn progress(&self, step: &str, progress: Progress);
    /// A line about the step that is neither output nor a warning (a guard evaluated again).
    fn notice(&self, text: &str);
    /// Whether the output redraws a display in place ([`StepOutput::live`]): a person at a
    /// terminal. When it does not (CI, logs, JSON), actions print their progress as lines.
    fn redraws(&self) -> bool {
        false
    }
    /// A long action's state, every few seconds: shown on the display redrawn in place when
    /// [`StepOutput::redraws`], and kept for `status` (the shards running).
    fn live(&self, _step: &str, _view: LiveView<'_>) {}
}
