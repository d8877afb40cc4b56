//! The rsync worker pool: workers take tasks (shards, biggest first) from one queue, so all
//! stay busy until the queue is empty. A transient rsync failure is retried with backoff; a
//! full destination or a usage error stops the pool; any other failure fails its task while
//! the others go on, so that one unreadable file does not stop a night's copy.
//!
//! How many workers: a fixed `jobs`, or with `jobs: auto` a count the [`Tuner`] moves every
//! window (a few seconds) from the throughput and the CPU of that window. The pool has a
//! worker for each count up to `max_jobs`; worker `i` takes a task only while `i` is below
//! the count, so a lower count lets the workers above it finish the shard they copy and take
//! no other: no rsync is ever stopped halfway for it.
//!
//! Everything runs inside the step's future: dropping it (Ctrl-C, a step timeout) kills the
//! rsync processes with their process groups.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::pass::Note;
use super::progress::Board;
use super::rsync::{self, Listing, Transfer, Verdict};
use super::tuner::{Change, CpuMeter, Sample, Tuner};
use super::walker;

/// How long a window of `jobs: auto` lasts once the count holds: the throughput of each
/// one decides the count.
const WINDOW: Duration = Duration::from_secs(3);
/// How long a window lasts while the count climbs: short, so that a copy of a few seconds
/// (20k files behind 300 µs take five) climbs before it ends.
const CLIMBING_WINDOW: Duration = Duration::from_secs(1);
/// Sets every window's length in milliseconds, for tests that cannot wait seconds per window.
pub const WINDOW_ENV: &str = "RUNBOOK_SYNC_WINDOW_MS";

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
    /// The task that copies shard `index` of `count` (journaled when done); `count` is
    /// unknown while the walk that cuts the shards goes on.
    pub fn for_shard(index: usize, count: Option<usize>, shard: &super::planner::Shard) -> Self {
        Task {
            label: match count {
                Some(count) => format!("shard {}/{count}", index + 1),
                None => format!("shard {}", index + 1),
            },
            // What the walk listed goes as it is; a planned (or resumed) shard's
            // directories bring everything below them.
            entries: if shard.listed.is_empty() {
                shard.entries.clone()
            } else {
                shard.listed.clone()
            },
            recursive: shard.listed.is_empty(),
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

/// How many workers a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Always this many (`jobs: 4`).
    Fixed(usize),
    /// `jobs: auto`: start with `start`, tuned every window, never above `max`.
    Auto {
        /// The count of the first window.
        start: usize,
        /// `max_jobs`.
        max: usize,
    },
}

impl Concurrency {
    /// The count the pool starts with.
    pub fn start(self) -> usize {
        match self {
            Concurrency::Fixed(jobs) => jobs.max(1),
            Concurrency::Auto { start, max } => start.clamp(1, max.max(1)),
        }
    }

    /// The most workers that may run at once.
    pub fn most(self) -> usize {
        match self {
            Concurrency::Fixed(jobs) => jobs.max(1),
            Concurrency::Auto { max, .. } => max.max(1),
        }
    }
}

/// A change of the worker count by `jobs: auto`, for the journal and the display.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkersChange {
    /// The count before.
    pub from: usize,
    /// The count from now on.
    pub to: usize,
    /// Why, for a person.
    pub why: String,
}

/// What the pool tells its caller, besides the outcome it returns.
pub struct Hooks<'a> {
    /// Called after each task that finished or was given up on (to journal it).
    pub on_end: &'a (dyn Fn(&Task, TaskEnd<'_>) -> anyhow::Result<()> + Sync),
    /// Shows a warning at once.
    pub warn: &'a (dyn Fn(&str) + Sync),
    /// Called when `jobs: auto` changes the count (to journal it and say so).
    pub on_workers: &'a (dyn Fn(&WorkersChange) -> anyhow::Result<()> + Sync),
}

/// Runs the tasks, in order, on `concurrency` workers, telling `hooks` what happens.
pub async fn run(
    tasks: Vec<Task>,
    concurrency: Concurrency,
    transfer: &Transfer,
    board: &Board,
    hooks: &Hooks<'_>,
) -> anyhow::Result<PoolOutcome> {
    run_fed(tasks, None, concurrency, transfer, board, hooks).await
}

/// Runs `tasks`, then those that arrive from `feed` as they arrive (a pass that copies
/// while it walks), until the feed is closed and every task is over.
pub async fn run_fed(
    tasks: Vec<Task>,
    feed: Option<mpsc::UnboundedReceiver<Task>>,
    concurrency: Concurrency,
    transfer: &Transfer,
    board: &Board,
    hooks: &Hooks<'_>,
) -> anyhow::Result<PoolOutcome> {
    // No feed: one closed from the start.
    let mut feed = feed.unwrap_or_else(|| mpsc::unbounded_channel().1);
    let start = concurrency.start();
    board.set_workers(start);
    let pool = Pool {
        queue: Mutex::new(tasks.into_iter().collect()),
        fed: AtomicBool::new(true),
        arrived: Notify::new(),
        transfer,
        board,
        hooks,
        gate: Gate::new(start),
        stop: AtomicBool::new(false),
        outcome: Mutex::new(PoolOutcome::default()),
    };
    let feeding = async {
        while let Some(task) = feed.recv().await {
            if let Ok(mut queue) = pool.queue.lock() {
                queue.push_back(task);
            }
            pool.arrived.notify_waiters();
        }
        pool.fed.store(false, Ordering::Relaxed);
        pool.arrived.notify_waiters();
        pool.gate.wake_all();
        std::future::pending::<()>().await;
    };
    // A resumed pass starts with shards done: the first window counts from there.
    let done = board.snapshot();
    let done = (done.done_files, done.done_bytes);
    let workers = (0..concurrency.most()).map(|worker| pool.work(worker));
    let all_done = async {
        tokio::select! {
            results = futures::future::join_all(workers) => results,
            () = feeding => unreachable!("feeding waits once the feed is closed"),
        }
    };
    let results: Vec<anyhow::Result<()>> = match concurrency {
        Concurrency::Fixed(_) => all_done.await,
        Concurrency::Auto { start, max } => {
            tokio::select! {
                results = all_done => results,
                tuned = pool.tune(Scaling::new(start, max, Instant::now(), done)) => {
                    tuned?;
                    unreachable!("tuning ends only with an error")
                }
            }
        }
    };
    for result in results {
        result?;
    }
    pool.outcome
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a copy worker panicked"))
}

/// What the workers of one pool share: the queue, how to copy, where to report, the worker
/// count, and the pool's outcome so far.
struct Pool<'a> {
    queue: Mutex<VecDeque<Task>>,
    /// More tasks may arrive (the walk that cuts them goes on).
    fed: AtomicBool,
    /// A task arrived, or the feed closed.
    arrived: Notify,
    transfer: &'a Transfer,
    board: &'a Board,
    hooks: &'a Hooks<'a>,
    /// Which workers may take a task.
    gate: Gate,
    /// Raised by a task whose failure no other task can avoid (a full destination).
    stop: AtomicBool,
    outcome: Mutex<PoolOutcome>,
}

/// Which workers may take a task: those numbered below the count. A worker at or above it
/// waits (after the shard it copies, if any) until the count rises or there is nothing left.
struct Gate {
    count: watch::Sender<usize>,
}

impl Gate {
    fn new(count: usize) -> Self {
        Gate {
            count: watch::Sender::new(count),
        }
    }

    fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// From now on, workers below `count` take tasks.
    fn set(&self, count: usize) {
        self.count.send_replace(count);
    }

    /// Wakes the waiting workers to look at `over` again.
    fn wake_all(&self) {
        self.count.send_modify(|_| {});
    }

    /// Whether `worker` may take a task now: waits while it is above the count, and says
    /// no once `over` (the queue is empty, the pool stopped).
    async fn admit(
        &self,
        worker: usize,
        count: &mut watch::Receiver<usize>,
        over: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        loop {
            if over() {
                return false;
            }
            if worker < *count.borrow_and_update() {
                return true;
            }
            // The sender lives as long as the gate, so this returns on a send only.
            let _ = count.changed().await;
        }
    }
}

/// The throughput of `jobs: auto`'s windows, from the copy's running totals, and what the
/// tuner makes of it. Plain code over readings (a clock and counters passed in), so that
/// its decisions can be tested without waiting.
#[derive(Debug)]
pub struct Scaling {
    tuner: Tuner,
    /// The end of the last window: when, and the files and bytes done then.
    last: (Instant, u64, u64),
}

impl Scaling {
    /// Starts at `start` workers, at `now`, with `(files, bytes)` done already (by the runs
    /// before of a resumed pass).
    pub fn new(start: usize, max: usize, now: Instant, (files, bytes): (u64, u64)) -> Self {
        Scaling {
            tuner: Tuner::new(start, max),
            last: (now, files, bytes),
        }
    }

    /// Whether the tuner holds a count it found (rather than climbing to find one).
    pub fn settled(&self) -> bool {
        self.tuner.settled()
    }

    /// Starts the next window at `now` without judging the last one.
    pub fn skip(&mut self, now: Instant, (files, bytes): (u64, u64)) {
        self.last = (now, files, bytes);
    }

    /// Ends a window at `now` with `files` and `bytes` done in all (from the start) and the
    /// share of the CPU the copy may use that was busy (`None` when it cannot be read: not
    /// saturated, as far as anyone knows). Returns the change of count, if any.
    pub fn window(
        &mut self,
        now: Instant,
        (files, bytes): (u64, u64),
        cpu_busy: Option<f64>,
    ) -> Option<WorkersChange> {
        let (then, files_then, bytes_then) = self.last;
        let seconds = now.saturating_duration_since(then).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        self.last = (now, files, bytes);
        let from = self.tuner.workers();
        let sample = Sample {
            files_per_second: files.saturating_sub(files_then) as f64 / seconds,
            bytes_per_second: bytes.saturating_sub(bytes_then) as f64 / seconds,
            cpu_busy: cpu_busy.unwrap_or(0.0),
        };
        match self.tuner.observe(sample) {
            Change::Keep => None,
            Change::To { workers, why } => Some(WorkersChange {
                from,
                to: workers,
                why,
            }),
        }
    }
}

/// The next window of `jobs: auto`: [`CLIMBING_WINDOW`] while the tuner climbs, then
/// [`WINDOW`]; or what [`WINDOW_ENV`] says, always.
fn window_length(settled: bool) -> Duration {
    let set = super::env_number(WINDOW_ENV)
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    match set {
        Some(set) => set,
        None if settled => WINDOW,
        None => CLIMBING_WINDOW,
    }
}

/// How one rsync run of a task ended, as the pool acts on it.
enum Attempt {
    /// The task is over (done, failed or stopping the pool).
    Over,
    /// Try again after this delay.
    Retry(Duration),
}

impl Pool<'_> {
    /// One worker: takes tasks from the queue until it is empty or the pool stops, while
    /// its number is below the count; above it, waits for the count to rise.
    async fn work(&self, worker: usize) -> anyhow::Result<()> {
        let mut count = self.gate.subscribe();
        let over = || self.stop.load(Ordering::Relaxed) || self.drained();
        while self.gate.admit(worker, &mut count, &over).await {
            // Listening before looking, so that an arrival in between is not missed.
            let arrival = self.arrived.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            match self.queue.lock().ok().and_then(|mut q| q.pop_front()) {
                Some(task) => self.run_task(worker, &task).await?,
                None if self.fed.load(Ordering::Relaxed) => arrival.await,
                None => break,
            }
        }
        // The workers waiting above the count see the empty queue or the stop, and end.
        self.gate.wake_all();
        Ok(())
    }

    fn queue_is_empty(&self) -> bool {
        self.queue.lock().map_or(true, |queue| queue.is_empty())
    }

    /// No task waits and none will come.
    fn drained(&self) -> bool {
        !self.fed.load(Ordering::Relaxed) && self.queue_is_empty()
    }

    /// `jobs: auto`: every window, feeds the tuner the window's throughput and CPU and
    /// applies its changes, until the queue is empty (a new count could start nothing
    /// then). Returns only on an error (journaling a change failed); the caller drops it
    /// when the workers are done.
    async fn tune(&self, mut scaling: Scaling) -> anyhow::Result<()> {
        let mut meter = CpuMeter::start();
        loop {
            tokio::time::sleep(window_length(scaling.settled())).await;
            if self.drained() || self.stop.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
            let done = self.board.snapshot();
            if self.queue_is_empty() {
                // Workers waited for the walk to cut shards: this window says nothing of
                // what more workers would copy.
                scaling.skip(Instant::now(), (done.done_files, done.done_bytes));
                meter.busy_since_last();
                continue;
            }
            let change = scaling.window(
                Instant::now(),
                (done.done_files, done.done_bytes),
                meter.busy_since_last(),
            );
            if let Some(change) = change {
                (self.hooks.on_workers)(&change)?;
                self.board.set_workers(change.to);
                self.gate.set(change.to);
            }
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
                    (self.hooks.warn)(&message);
                    if let Ok(mut outcome) = self.outcome.lock() {
                        outcome.warnings.push(message);
                    }
                }
                self.board.finish(worker);
                (self.hooks.on_end)(task, TaskEnd::Done { tries })?;
            }
            _ if retries < limit => {
                let delay = RETRY_DELAYS[retries.min(RETRY_DELAYS.len() - 1)];
                (self.hooks.warn)(&format!(
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
                (self.hooks.on_end)(
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
                (self.hooks.warn)(&message);
                (self.hooks.on_end)(
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    /// A file server whose throughput grows with the workers up to `saturation` and stays
    /// flat above it: files and bytes per second at `workers`.
    fn server(saturation: usize) -> impl Fn(usize) -> (u64, u64) {
        move |workers| {
            let effective = workers.min(saturation) as u64;
            (200 * effective, 2_000_000 * effective)
        }
    }

    /// Runs `windows` windows of 3 s on a clock of its own, feeding the running totals the
    /// server reaches at each window's count; returns the counts and the changes.
    fn simulate(
        scaling: &mut Scaling,
        start: Instant,
        rate: &dyn Fn(usize) -> (u64, u64),
        cpu: &dyn Fn(usize) -> Option<f64>,
        windows: u32,
    ) -> (Vec<usize>, Vec<WorkersChange>) {
        let (mut workers, mut files, mut bytes) = (scaling.tuner.workers(), 0, 0);
        let (mut counts, mut changes) = (Vec::new(), Vec::new());
        for window in 1..=windows {
            let (f, b) = rate(workers);
            files += 3 * f;
            bytes += 3 * b;
            let now = start + Duration::from_secs(3 * u64::from(window));
            if let Some(change) = scaling.window(now, (files, bytes), cpu(workers)) {
                assert_eq!(change.from, workers, "{change:?}");
                workers = change.to;
                changes.push(change);
            }
            counts.push(workers);
        }
        (counts, changes)
    }

    #[test]
    fn auto_doubles_from_four_then_settles_near_where_the_server_saturates() {
        let start = Instant::now();
        let mut scaling = Scaling::new(4, 32, start, (0, 0));
        let (counts, changes) = simulate(&mut scaling, start, &server(16), &|_| None, 30);
        assert_eq!(&counts[..2], &[8, 16], "{counts:?}");
        assert_eq!(changes[0].why, "the first window");
        assert!(
            changes[1].why.contains("rose 100% at 8 workers"),
            "{changes:?}"
        );
        let settled = &counts[counts.len() - 10..];
        assert!(
            settled.iter().all(|count| (12..=24).contains(count)),
            "{counts:?}"
        );
        assert!(counts.iter().all(|count| (1..=32).contains(count)));
    }

    #[test]
    fn a_raise_that_does_not_pay_is_undone_and_max_jobs_is_never_passed() {
        let start = Instant::now();
        // Saturated at 4 already: the first raise to 8 brings nothing and is undone.
        let mut scaling = Scaling::new(4, 32, start, (0, 0));
        let (counts, changes) = simulate(&mut scaling, start, &server(4), &|_| None, 3);
        assert_eq!(counts, vec![8, 4, 4], "{changes:?}");
        assert_eq!(
            changes[1].why,
            "throughput stayed the same at 8 workers; back to 4"
        );
        // A server that scales without end: the count stops at max_jobs.
        let mut scaling = Scaling::new(4, 6, start, (0, 0));
        let (counts, _) = simulate(&mut scaling, start, &server(1000), &|_| None, 20);
        assert!(counts.iter().all(|count| *count <= 6), "{counts:?}");
        assert_eq!(counts.last(), Some(&6));
    }

    /// A copy bound by the CPU: the throughput stops growing at 2 workers, where the CPU
    /// saturates.
    #[test]
    fn a_saturated_cpu_lowers_the_count_to_where_it_is_not() {
        let start = Instant::now();
        let mut scaling = Scaling::new(4, 32, start, (0, 0));
        let busy = |workers: usize| Some(if workers > 2 { 0.97 } else { 0.5 });
        let (counts, changes) = simulate(&mut scaling, start, &server(2), &busy, 12);
        assert_eq!(counts[0], 3, "{changes:?}");
        assert!(
            changes[0].why.contains("97% busy at 4 workers"),
            "{changes:?}"
        );
        assert!(counts.iter().all(|count| *count <= 4), "{counts:?}");
        // It holds at 2, where the CPU is not saturated, and probes 3 now and then.
        let settled = &counts[2..];
        assert!(
            settled.iter().all(|count| (2..=3).contains(count)),
            "{counts:?}"
        );
        assert!(settled.iter().filter(|count| **count == 2).count() > settled.len() / 2);
    }

    #[test]
    fn a_window_of_no_time_decides_nothing() {
        let start = Instant::now();
        let mut scaling = Scaling::new(4, 32, start, (0, 0));
        assert_eq!(scaling.window(start, (100, 100), None), None);
        assert_eq!(scaling.tuner.workers(), 4);
    }

    /// A resumed pass's shards done before are no throughput of its first window: a raise
    /// compared with it would look like a loss.
    #[test]
    fn what_a_resumed_pass_had_done_is_not_counted_as_throughput() {
        let start = Instant::now();
        let mut scaling = Scaling::new(4, 32, start, (50_000, 5_000_000_000));
        let rate = server(16);
        let (mut files, mut bytes) = (50_000, 5_000_000_000);
        let mut counts = Vec::new();
        for window in 1..=3u64 {
            let (f, b) = rate(scaling.tuner.workers());
            files += 3 * f;
            bytes += 3 * b;
            scaling.window(
                start + Duration::from_secs(3 * window),
                (files, bytes),
                None,
            );
            counts.push(scaling.tuner.workers());
        }
        assert_eq!(counts, vec![8, 16, 32]);
    }

    #[test]
    fn workers_above_the_count_wait_and_end_when_nothing_is_left() {
        let gate = Gate::new(2);
        let over = AtomicBool::new(false);
        let is_over = || over.load(Ordering::Relaxed);
        let mut below = gate.subscribe();
        let mut above = gate.subscribe();
        assert_eq!(
            gate.admit(1, &mut below, &is_over).now_or_never(),
            Some(true)
        );
        // Worker 3 (index 2) waits while the count is 2.
        let mut waiting = Box::pin(gate.admit(2, &mut above, &is_over));
        assert_eq!(waiting.as_mut().now_or_never(), None);
        gate.set(3);
        assert_eq!(waiting.now_or_never(), Some(true));
        // Lowered: it takes no new task; it ends when the queue is empty.
        gate.set(2);
        let mut waiting = Box::pin(gate.admit(2, &mut above, &is_over));
        assert_eq!(waiting.as_mut().now_or_never(), None);
        over.store(true, Ordering::Relaxed);
        gate.wake_all();
        assert_eq!(waiting.now_or_never(), Some(false));
    }

    #[test]
    fn the_count_starts_at_four_and_never_passes_max_jobs() {
        let auto = Concurrency::Auto { start: 4, max: 32 };
        assert_eq!((auto.start(), auto.most()), (4, 32));
        assert_eq!(Concurrency::Fixed(2).start(), 2);
        assert_eq!(Concurrency::Fixed(2).most(), 2);
        assert_eq!(Concurrency::Auto { start: 4, max: 2 }.start(), 2);
    }
}
