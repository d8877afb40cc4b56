//! The rsync worker pool: `jobs` workers take tasks (shards, biggest first) from one queue,
//! so all stay busy until the queue is empty. A transient rsync failure is retried with
//! backoff; a full destination or a usage error stops the pool; any other failure fails its
//! task while the others go on, so that one unreadable file does not stop a night's copy.
//!
//! Everything runs inside the step's future: dropping it (Ctrl-C, a step timeout) kills the
//! rsync processes with their process groups.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::pass::Note;
use super::progress::Board;
use super::rsync::{self, Listing, Transfer, Verdict};
use super::walker;

/// Waits before the retries of a transient failure.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
    Duration::from_secs(60),
];

/// One rsync process's work.
#[derive(Debug, Clone)]
pub struct Task {
    /// `shard 3/16`, `directories`, ...
    pub label: String,
    /// Paths for `--files-from` (ignored for the root's attributes).
    pub entries: Vec<Vec<u8>>,
    /// Directories listed bring everything below them.
    pub recursive: bool,
    /// rsync's `-I`.
    pub ignore_times: bool,
    /// Everything is new at the destination: written in place (see [`Listing::Paths`]).
    pub fresh: bool,
    /// Only the root directory's attributes.
    pub root: bool,
    /// Bytes, for progress.
    pub bytes: u64,
    /// Entries, for progress.
    pub files: u64,
    /// The shard's index in the plan, journaled when done.
    pub shard: Option<usize>,
}

impl Task {
    /// The task that copies shard `index` of `count` (recursively, journaled when done).
    pub fn for_shard(index: usize, count: usize, shard: &super::planner::Shard) -> Self {
        Task {
            label: format!("shard {}/{count}", index + 1),
            entries: shard.entries.clone(),
            recursive: true,
            ignore_times: shard.ignore_times,
            fresh: shard.fresh,
            root: false,
            bytes: shard.bytes,
            files: shard.files,
            shard: Some(index),
        }
    }

    fn listing(&self) -> Listing<'_> {
        if self.root {
            Listing::Root
        } else {
            Listing::Paths {
                entries: &self.entries,
                recursive: self.recursive,
                ignore_times: self.ignore_times,
                fresh: self.fresh,
            }
        }
    }

    /// `home/alice` and how many more paths.
    fn first_path(&self) -> (String, usize) {
        match self.entries.first() {
            Some(first) if !self.root => (walker::display(first), self.entries.len() - 1),
            _ => (".".into(), 0),
        }
    }
}

/// How the pool ended.
#[derive(Debug, Default)]
pub struct PoolOutcome {
    /// Tasks that failed, each with rsync's message.
    pub failures: Vec<String>,
    /// Why the pool stopped early (a full destination, a usage error).
    pub stopped: Option<String>,
    /// Things a person should know (files vanished during the copy).
    pub warnings: Vec<String>,
}

/// How a task ended, for the pool's caller to journal.
#[derive(Debug, Clone, Copy)]
pub enum TaskEnd<'a> {
    /// Copied, after this many tries.
    Done {
        /// Tries, the last one included.
        tries: u32,
    },
    /// Given up on after this many tries.
    Failed {
        /// Tries, the last one included.
        tries: u32,
        /// What rsync said the last time.
        error: &'a str,
    },
}

impl TaskEnd<'_> {
    /// The journal note of a shard's task that ended so (`None` for a helper task).
    pub fn note(&self, pass: u32, task: &Task) -> Option<Note> {
        let shard = task.shard?;
        Some(match *self {
            TaskEnd::Done { tries } => Note::Shard {
                pass,
                shard,
                bytes: task.bytes,
                files: task.files,
                tries: (tries > 1).then_some(tries),
            },
            TaskEnd::Failed { tries, error } => Note::ShardFailed {
                pass,
                shard,
                tries,
                error: error.to_string(),
            },
        })
    }
}

/// Runs the tasks, in order, on `jobs` workers. `on_end` is called after each task that
/// finished or was given up on (to journal it); `warn` shows a warning at once.
pub async fn run(
    tasks: Vec<Task>,
    jobs: usize,
    transfer: &Transfer,
    board: &Board,
    on_end: &(dyn Fn(&Task, TaskEnd<'_>) -> anyhow::Result<()> + Sync),
    warn: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<PoolOutcome> {
    let pool = Pool {
        queue: Mutex::new(tasks.into_iter().collect()),
        transfer,
        board,
        on_end,
        warn,
        stop: AtomicBool::new(false),
        outcome: Mutex::new(PoolOutcome::default()),
    };
    let workers = (0..jobs.max(1)).map(|worker| pool.work(worker));
    let results: Vec<anyhow::Result<()>> = futures::future::join_all(workers).await;
    for result in results {
        result?;
    }
    pool.outcome
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a copy worker panicked"))
}

/// What the workers of one pool share: the queue, how to copy, where to report, and the
/// pool's outcome so far.
struct Pool<'a> {
    queue: Mutex<VecDeque<Task>>,
    transfer: &'a Transfer,
    board: &'a Board,
    /// Called after each task that finished or was given up on (to journal it).
    on_end: &'a (dyn Fn(&Task, TaskEnd<'_>) -> anyhow::Result<()> + Sync),
    /// Shows a warning at once.
    warn: &'a (dyn Fn(&str) + Sync),
    /// Raised by a task whose failure no other task can avoid (a full destination).
    stop: AtomicBool,
    outcome: Mutex<PoolOutcome>,
}

/// How one rsync run of a task ended, as the pool acts on it.
enum Attempt {
    /// The task is over (done, failed or stopping the pool).
    Over,
    /// Try again after this delay.
    Retry(Duration),
}

impl Pool<'_> {
    /// One worker: takes tasks from the queue until it is empty or the pool stops.
    async fn work(&self, worker: usize) -> anyhow::Result<()> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(task) = self.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return Ok(());
            };
            self.run_task(worker, &task).await?;
        }
    }

    /// Runs one task's rsync, retrying transient failures with backoff.
    async fn run_task(&self, worker: usize, task: &Task) -> anyhow::Result<()> {
        let (first, more) = task.first_path();
        let what = if more > 0 {
            format!("{} ({first} and {more} more)", task.label)
        } else {
            format!("{} ({first})", task.label)
        };
        let mut retries = 0;
        loop {
            self.board.start(
                worker,
                task.shard.unwrap_or(0),
                (first.clone(), more),
                task.bytes,
                task.files,
            );
            let finished = self
                .transfer
                .run(task.listing(), |report| self.board.report(worker, &report))
                .await?;
            match self.settle(worker, task, &what, &finished, retries)? {
                Attempt::Over => return Ok(()),
                Attempt::Retry(delay) => {
                    retries += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Acts on how an attempt ended: journals a finished task, schedules a retry, stops the
    /// pool, or records the task's failure.
    fn settle(
        &self,
        worker: usize,
        task: &Task,
        what: &str,
        finished: &rsync::Finished,
        retries: usize,
    ) -> anyhow::Result<Attempt> {
        let verdict = rsync::verdict(finished);
        let tries = u32::try_from(retries + 1).unwrap_or(u32::MAX);
        let limit = match verdict {
            Verdict::Transient => RETRY_DELAYS.len(),
            Verdict::RetryOnce => 1,
            _ => 0,
        };
        match verdict {
            Verdict::Done | Verdict::Vanished => {
                if verdict == Verdict::Vanished {
                    let message = format!(
                        "{what}: some files vanished while they were copied (rsync exit 24); a later pass copies what changed"
                    );
                    (self.warn)(&message);
                    if let Ok(mut outcome) = self.outcome.lock() {
                        outcome.warnings.push(message);
                    }
                }
                self.board.finish(worker);
                (self.on_end)(task, TaskEnd::Done { tries })?;
            }
            _ if retries < limit => {
                let delay = RETRY_DELAYS[retries.min(RETRY_DELAYS.len() - 1)];
                (self.warn)(&format!(
                    "{what}: {}; trying again in {}s (retry {} of {limit})",
                    rsync_said(finished),
                    delay.as_secs(),
                    retries + 1
                ));
                self.board.idle(worker);
                return Ok(Attempt::Retry(delay));
            }
            Verdict::NoSpace | Verdict::Stop => {
                self.board.idle(worker);
                self.stop.store(true, Ordering::Relaxed);
                let why = if verdict == Verdict::NoSpace {
                    "the destination is full or over its quota"
                } else {
                    "rsync refused its command line"
                };
                let message = format!("{why}: {what}: {}", rsync_said(finished));
                (self.on_end)(
                    task,
                    TaskEnd::Failed {
                        tries,
                        error: &message,
                    },
                )?;
                if let Ok(mut outcome) = self.outcome.lock()
                    && outcome.stopped.is_none()
                {
                    outcome.stopped = Some(message);
                }
            }
            _ => {
                self.board.idle(worker);
                let message = format!("{what}: {}", rsync_said(finished));
                (self.warn)(&message);
                (self.on_end)(
                    task,
                    TaskEnd::Failed {
                        tries,
                        error: &message,
                    },
                )?;
                if let Ok(mut outcome) = self.outcome.lock() {
                    outcome.failures.push(message);
                }
            }
        }
        Ok(Attempt::Over)
    }
}

/// `rsync exited with code 23 (...)` and what it printed.
fn rsync_said(finished: &rsync::Finished) -> String {
    let mut text = format!(
        "rsync exited with code {} ({})",
        finished.rc,
        rsync::describe(finished.rc)
    );
    if !finished.message.is_empty() {
        text.push_str(":\n    ");
        text.push_str(&finished.message.join("\n    "));
    }
    text
}
