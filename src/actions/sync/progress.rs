//! Progress of a copy: totals from the plan, what the finished shards and the running rsync
//! processes have done, the rate and the time left. Every 2 s a `progress` event, and on a
//! terminal a display redrawn in place (a bar with rate and ETA, one line per worker);
//! elsewhere (CI, logs) every 10 s a line with a bar, the rate and the ETA.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::pass_reporter::PassReporter;
use crate::actions::Progress;
pub use crate::syntax::format_bytes as bytes;

/// How often a `progress` event is sent.
const EVENT_EVERY: Duration = Duration::from_secs(2);
/// How often (in events) the detailed lines are printed.
const LINES_EVERY: u32 = 5;

/// What one worker is doing.
#[derive(Debug, Clone, Default)]
struct Worker {
    /// The shard (index, first path, more paths) it copies, if any.
    shard: Option<(usize, String, usize)>,
    shard_bytes: u64,
    shard_files: u64,
    /// Done so far in its shard.
    bytes: u64,
    files: u64,
}

#[derive(Debug)]
struct State {
    total_bytes: u64,
    total_files: u64,
    total_shards: usize,
    /// In finished shards.
    done_bytes: u64,
    done_files: u64,
    done_shards: usize,
    /// Done before this run started (a resumed pass): not part of the rate.
    resumed_bytes: u64,
    started: Instant,
    workers: Vec<Worker>,
    /// The workers that may copy now (`jobs`, or the count `jobs: auto` chose last).
    count: usize,
}

/// The progress of one pass, shared by its workers and the ticker.
#[derive(Debug)]
pub struct Board {
    state: Mutex<State>,
}

impl Board {
    /// A board for a plan's totals, with up to `jobs` workers (all of them may copy until
    /// [`Board::set_workers`] says otherwise).
    pub fn new(total_bytes: u64, total_files: u64, total_shards: usize, jobs: usize) -> Self {
        Board {
            state: Mutex::new(State {
                total_bytes,
                total_files,
                total_shards,
                done_bytes: 0,
                done_files: 0,
                done_shards: 0,
                resumed_bytes: 0,
                started: Instant::now(),
                workers: vec![Worker::default(); jobs],
                count: jobs,
            }),
        }
    }

    /// The workers that may copy from now on.
    pub fn set_workers(&self, count: usize) {
        self.with(|state| state.count = count);
    }

    /// The workers that may copy now.
    pub fn workers(&self) -> usize {
        self.with(|state| state.count).unwrap_or(1)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut state| f(&mut state))
    }

    /// Shards finished in an earlier run of the same pass.
    pub fn already_done(&self, bytes: u64, files: u64) {
        self.with(|state| {
            state.done_bytes += bytes;
            state.done_files += files;
            state.done_shards += 1;
            state.resumed_bytes += bytes;
        });
    }

    /// A shard cut while the walk goes on joins the totals.
    pub fn add_shard(&self, bytes: u64, files: u64) {
        self.with(|state| {
            state.total_bytes += bytes;
            state.total_files += files;
            state.total_shards += 1;
        });
    }

    /// The shards of the pass (those cut so far, while the walk goes on).
    pub fn total_shards(&self) -> usize {
        self.with(|state| state.total_shards).unwrap_or(0)
    }

    /// Whether a worker that may copy has no shard: nothing waits for it.
    pub fn has_idle_worker(&self) -> bool {
        self.with(|state| {
            let busy = state.workers.iter().filter(|w| w.shard.is_some()).count();
            busy < state.count
        })
        .unwrap_or(false)
    }

    /// A worker starts (or retries) a shard.
    pub fn start(
        &self,
        worker: usize,
        shard: usize,
        label: (String, usize),
        bytes: u64,
        files: u64,
    ) {
        self.with(|state| {
            if let Some(slot) = state.workers.get_mut(worker) {
                *slot = Worker {
                    shard: Some((shard, label.0, label.1)),
                    shard_bytes: bytes,
                    shard_files: files,
                    ..Worker::default()
                };
            }
        });
    }

    /// What a worker's rsync reported.
    pub fn report(&self, worker: usize, report: &super::rsync::Report) {
        self.with(|state| {
            let Some(slot) = state.workers.get_mut(worker) else {
                return;
            };
            slot.bytes = report.bytes.min(slot.shard_bytes);
            if let Some(checked) = report.checked {
                slot.files = checked.min(slot.shard_files);
            }
        });
    }

    /// A worker finished its shard.
    pub fn finish(&self, worker: usize) {
        self.with(|state| {
            if let Some(slot) = state.workers.get_mut(worker) {
                let slot = std::mem::take(slot);
                state.done_bytes += slot.shard_bytes;
                state.done_files += slot.shard_files;
                state.done_shards += 1;
            }
        });
    }

    /// A worker has no shard (it failed, or there are none left).
    pub fn idle(&self, worker: usize) {
        self.with(|state| {
            if let Some(slot) = state.workers.get_mut(worker) {
                *slot = Worker::default();
            }
        });
    }

    /// Files in the shards started so far (finished or running): what the workers have
    /// taken, as against what waits for them.
    pub fn started_files(&self) -> u64 {
        self.with(|state| {
            state.done_files + state.workers.iter().map(|w| w.shard_files).sum::<u64>()
        })
        .unwrap_or(0)
    }

    /// The totals for a `progress` event.
    pub fn snapshot(&self) -> Progress {
        self.with(|state| Progress {
            done_bytes: state.done_bytes + state.workers.iter().map(|w| w.bytes).sum::<u64>(),
            total_bytes: state.total_bytes,
            done_files: state.done_files + state.workers.iter().map(|w| w.files).sum::<u64>(),
            total_files: state.total_files,
            workers: u32::try_from(state.count).ok(),
        })
        .unwrap_or_default()
    }

    /// The shards the workers copy now.
    pub fn running_shards(&self) -> Vec<usize> {
        self.with(|state| {
            state
                .workers
                .iter()
                .filter_map(|worker| worker.shard.as_ref().map(|(index, ..)| *index))
                .collect()
        })
        .unwrap_or_default()
    }

    /// What a redrawn display shows beside its bar: the shards done and the workers.
    pub fn detail(&self) -> String {
        self.with(|state| {
            format!(
                "shards {}/{}, {}",
                state.done_shards,
                state.total_shards,
                workers(state.count)
            )
        })
        .unwrap_or_default()
    }

    /// A summary line (bar, amounts, rate, ETA) and one line per busy worker.
    pub fn lines(&self) -> Vec<String> {
        let progress = self.snapshot();
        self.with(|state| {
            let fraction = if progress.total_bytes > 0 {
                progress.done_bytes as f64 / progress.total_bytes as f64
            } else if progress.total_files > 0 {
                progress.done_files as f64 / progress.total_files as f64
            } else {
                1.0
            };
            let elapsed = state.started.elapsed().as_secs_f64().max(0.001);
            let rate = progress.done_bytes.saturating_sub(state.resumed_bytes) as f64 / elapsed;
            let left = progress.total_bytes.saturating_sub(progress.done_bytes);
            let eta = if left == 0 {
                "0s".to_string()
            } else if rate >= 1.0 {
                crate::syntax::format_duration_ms((left as f64 / rate * 1000.0) as u64)
            } else {
                "unknown".to_string()
            };
            let mut lines = vec![format!(
                "{} {:>3.0}% {} of {}, {} of {} files, shards {}/{}, {}, {}/s, ETA {eta}",
                bar(fraction, 20),
                fraction * 100.0,
                bytes(progress.done_bytes),
                bytes(progress.total_bytes),
                progress.done_files,
                progress.total_files,
                state.done_shards,
                state.total_shards,
                workers(state.count),
                bytes(rate as u64),
            )];
            for (i, worker) in state.workers.iter().enumerate() {
                if let Some((shard, first, more)) = &worker.shard {
                    let others = if *more > 0 {
                        format!(" +{more}")
                    } else {
                        String::new()
                    };
                    lines.push(format!(
                        "  worker {}: shard {} ({first}{others}) {} of {}, {} of {} files",
                        i + 1,
                        shard + 1,
                        bytes(worker.bytes),
                        bytes(worker.shard_bytes),
                        worker.files,
                        worker.shard_files,
                    ));
                }
            }
            lines
        })
        .unwrap_or_default()
    }
}

/// Sends progress until dropped: every 2 s the totals; every 10 s the summary, and on a
/// terminal the workers' lines.
pub async fn tick(board: &Board, reporter: &dyn PassReporter) {
    let mut count: u32 = 0;
    let mut interval = tokio::time::interval(EVENT_EVERY);
    interval.tick().await;
    loop {
        interval.tick().await;
        count += 1;
        reporter.progress(board, count.is_multiple_of(LINES_EVERY));
    }
}

/// `4 workers`.
fn workers(count: usize) -> String {
    format!("{count} worker{}", if count == 1 { "" } else { "s" })
}

/// `[#####.....]`.
fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::sync::rsync::Report;

    #[test]
    fn done_counts_finished_shards_and_running_ones() {
        let board = Board::new(1000, 10, 3, 2);
        board.already_done(100, 1);
        board.start(0, 1, ("a".into(), 0), 500, 5);
        board.report(
            0,
            &Report {
                bytes: 200,
                checked: Some(1),
            },
        );
        assert_eq!(
            board.snapshot(),
            Progress {
                done_bytes: 300,
                total_bytes: 1000,
                done_files: 2,
                total_files: 10,
                workers: Some(2),
            }
        );
        board.finish(0);
        assert_eq!(board.snapshot().done_bytes, 600);
        assert!(board.lines()[0].contains("60%"), "{:?}", board.lines());
        board.set_workers(1);
        assert!(
            board.lines()[0].contains(", 1 worker, "),
            "{:?}",
            board.lines()
        );
        assert_eq!(board.detail(), "shards 2/3, 1 worker");
    }

    #[test]
    fn shards_cut_during_the_walk_grow_the_totals_and_idle_workers_are_seen() {
        let board = Board::new(0, 0, 0, 2);
        assert!(board.has_idle_worker());
        board.add_shard(100, 4);
        board.add_shard(50, 2);
        board.start(0, 0, ("a".into(), 0), 100, 4);
        board.start(1, 1, ("b".into(), 0), 50, 2);
        assert!(!board.has_idle_worker());
        board.finish(1);
        assert!(board.has_idle_worker());
        let progress = board.snapshot();
        assert_eq!((progress.total_bytes, progress.total_files), (150, 6));
        assert_eq!(board.detail(), "shards 1/2, 2 workers");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bar(0.5, 4), "[##..]");
    }
}
