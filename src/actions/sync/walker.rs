//! A concurrent tree walker. On NFS every readdir and every stat is a network round trip, so a
//! walk done one directory at a time is bound by latency, not by the file server: many threads
//! reading directories at once hide it (20k files behind 300 µs: a serial rsync walk takes
//! 24 s, 16 threads a few). Plain threads, not async: these are blocking system calls.
//!
//! Knows nothing of runbook: [`run_jobs`] runs directory jobs on a thread pool whose size it
//! tunes by the walk's throughput (with [`super::tuner`]), and [`read_dir`] reads one
//! directory with the metadata of its entries.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::tuner::{Change, CpuMeter, Sample, Tuner};
use std::sync::{Condvar, Mutex};

/// How many threads walk a tree: enough to hide a network file system's latency on a
/// 2-core machine (the threads mostly wait).
pub const WALK_THREADS: usize = 16;

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, fifo or socket.
    Special,
}

/// The metadata of one entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds part (rsync compares seconds; the manifest keeps it).
    pub mtime_nsec: i64,
    /// Change time (any change to the inode), seconds.
    pub ctime: i64,
    /// Change time, nanoseconds part.
    pub ctime_nsec: i64,
    /// Device of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device number of a device file.
    pub rdev: u64,
}

impl From<&std::fs::Metadata> for Meta {
    fn from(meta: &std::fs::Metadata) -> Self {
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else if file_type.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Special
        };
        Meta {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            dev: meta.dev(),
            ino: meta.ino(),
            nlink: meta.nlink(),
            rdev: meta.rdev(),
        }
    }
}

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    /// Its metadata.
    pub meta: Meta,
}

/// Reads a directory: names, then `lstat` of each one that `keep(name, is_dir)` accepts.
/// Entries are sorted by name. `Ok(None)` when the directory itself vanished (people keep
/// working during a first pass); an entry that vanishes between readdir and stat is left out.
pub fn read_dir(dir: &Path, keep: impl Fn(&[u8], bool) -> bool) -> io::Result<Option<Vec<Entry>>> {
    let reader = match std::fs::read_dir(dir) {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut entries = Vec::new();
    for item in reader {
        let item = item?;
        let name = item.file_name();
        // d_type from readdir: no stat needed to apply directory-only patterns.
        let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !keep(name.as_bytes(), is_dir) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(item.path()) {
            Ok(meta) => Meta::from(&meta),
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        entries.push(Entry {
            name: name.as_bytes().to_vec(),
            meta,
        });
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(entries))
}

/// Joins a relative path (empty for the root) and a name with `/`.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(parent.len() + name.len() + 1);
    if !parent.is_empty() {
        path.extend_from_slice(parent);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// A relative path for people and logs: UTF-8 as it is, control characters and bytes that
/// are not UTF-8 escaped (`\n`, `\xff`), so that one name stays on one line.
pub fn display(path: &[u8]) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let mut shown = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                shown.extend(c.escape_default());
            } else {
                shown.push(c);
            }
        }
        for byte in chunk.invalid() {
            shown.push_str(&format!("\\x{byte:02x}"));
        }
    }
    shown
}

/// An absolute path from a root and a relative path.
pub fn absolute(root: &Path, relative: &[u8]) -> std::path::PathBuf {
    if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(relative))
    }
}

/// Counters a walk updates as it goes, for progress lines while it runs.
#[derive(Debug, Default)]
pub struct WalkCounters {
    /// Directories read.
    pub dirs: AtomicU64,
    /// Entries seen.
    pub entries: AtomicU64,
}

impl WalkCounters {
    /// Counts one directory with `entries` entries.
    pub fn count(&self, entries: usize) {
        self.dirs.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries as u64, Ordering::Relaxed);
    }
}

/// How many threads read directories at once: `start`, tuned between 1 and `most` by the
/// walk's throughput (entries per second over [`TUNE_WINDOW`]) when `most` is above
/// `start`, the way `jobs: auto` tunes the copy's workers (#17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkThreads {
    /// Threads at the start.
    pub start: usize,
    /// The most threads the tuning may reach.
    pub most: usize,
}

impl WalkThreads {
    /// What a sync's walk uses: [`WALK_THREADS`] at first, up to four times as many. A
    /// network file system's server answers some dozens of requests at once (NFS servers
    /// run 8 to 64 threads), and each thread of a walk waits on one request at a time.
    pub const AUTO: WalkThreads = WalkThreads {
        start: WALK_THREADS,
        most: 4 * WALK_THREADS,
    };

    /// Always `threads` threads, never tuned.
    pub fn fixed(threads: usize) -> Self {
        WalkThreads {
            start: threads.max(1),
            most: threads.max(1),
        }
    }
}

/// How long the tuning of a walk's threads looks at its throughput before deciding: a walk
/// of 20k entries behind 300 µs lasts a few seconds, so a window must be short.
pub const TUNE_WINDOW: std::time::Duration = std::time::Duration::from_millis(300);

/// What a walk is told while it runs, beside its jobs.
#[derive(Clone, Copy)]
pub struct WalkControl<'a> {
    /// The thread count and its tuning.
    pub threads: WalkThreads,
    /// Raised to stop the walk.
    pub cancel: &'a AtomicBool,
    /// While raised, no thread starts another job (the copy fed by the walk is behind, see
    /// `copy_pass`); the jobs running go on.
    pub hold: Option<&'a AtomicBool>,
    /// What the walk has seen; the tuning reads its throughput there.
    pub counters: &'a WalkCounters,
}

/// The thread counts a walk went through, in order (one, when it was never changed), and
/// why each change was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    /// The counts: the first is [`WalkThreads::start`].
    pub counts: Vec<usize>,
    /// Why each count after the first was chosen.
    pub reasons: Vec<String>,
}

impl ThreadCounts {
    /// The highest count used.
    pub fn most(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(1)
    }

    /// `16>32>24`.
    pub fn path(&self) -> String {
        self.counts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(">")
    }
}

/// Why a walk stopped early.
#[derive(Debug)]
pub enum WalkError<E> {
    /// The cancel flag was raised (the step was interrupted).
    Cancelled,
    /// A job failed; the first failure is kept.
    Failed(E),
}

struct Queue<J> {
    jobs: VecDeque<J>,
    running: usize,
    stopped: bool,
    /// Since the tuning last looked, a thread allowed to work found nothing to do (no job
    /// queued, or the walk held): that window says nothing of what more threads would do.
    starved: bool,
}

/// Runs `visit` on every job, and on the jobs it pushes, on as many threads as `control`
/// says. Stops at the first error or when the cancel flag is raised. Jobs are taken
/// last-in first-out, which keeps the queue as small as the tree is deep rather than as
/// wide. Returns the thread counts it went through.
pub fn run_jobs<J, E>(
    roots: Vec<J>,
    control: WalkControl<'_>,
    visit: impl Fn(J, &mut Vec<J>) -> Result<(), E> + Sync,
) -> Result<ThreadCounts, WalkError<E>>
where
    J: Send,
    E: Send,
{
    // Read only when the walk is tuned: the first call starts the meter.
    let mut meter: Option<CpuMeter> = None;
    let cpu_busy = move || match &mut meter {
        Some(meter) => meter.busy_since_last(),
        None => {
            meter = Some(CpuMeter::start());
            None
        }
    };
    run_jobs_metered(roots, control, cpu_busy, visit)
}

/// [`run_jobs`] with the CPU read by `cpu_busy` (the share busy since the last call; the
/// tuning calls it once as it starts).
fn run_jobs_metered<J, E>(
    roots: Vec<J>,
    control: WalkControl<'_>,
    cpu_busy: impl FnMut() -> Option<f64> + Send,
    visit: impl Fn(J, &mut Vec<J>) -> Result<(), E> + Sync,
) -> Result<ThreadCounts, WalkError<E>>
where
    J: Send,
    E: Send,
{
    let WalkControl {
        threads,
        cancel,
        hold,
        counters,
    } = control;
    let most = threads.most.max(threads.start).max(1);
    let queue = Mutex::new(Queue {
        jobs: roots.into_iter().collect(),
        running: 0,
        stopped: false,
        starved: false,
    });
    let wakeup = Condvar::new();
    let failure: Mutex<Option<E>> = Mutex::new(None);
    // Threads numbered at or above this wait, so that the count can change at any time.
    let allowed = AtomicUsize::new(threads.start.clamp(1, most));
    let over = AtomicBool::new(false);
    let work = |number: usize| {
        let mut pushed = Vec::new();
        loop {
            let job = {
                let Ok(mut state) = queue.lock() else { return };
                loop {
                    if state.stopped || cancel.load(Ordering::Relaxed) {
                        state.stopped = true;
                        wakeup.notify_all();
                        return;
                    }
                    if state.jobs.is_empty() && state.running == 0 {
                        wakeup.notify_all();
                        return;
                    }
                    let admitted = number < allowed.load(Ordering::Relaxed);
                    let held = hold.is_some_and(|hold| hold.load(Ordering::Relaxed));
                    if admitted
                        && !held
                        && let Some(job) = state.jobs.pop_back()
                    {
                        state.running += 1;
                        break job;
                    }
                    state.starved |= admitted;
                    // A timeout so that a raised flag, a release of the hold or a new count
                    // is seen without a push; shorter while held, to follow the copy closely.
                    let wait = std::time::Duration::from_millis(if held { 10 } else { 100 });
                    state = match wakeup.wait_timeout(state, wait) {
                        Ok((state, _)) => state,
                        Err(_) => return,
                    };
                }
            };
            let result = visit(job, &mut pushed);
            let Ok(mut state) = queue.lock() else { return };
            state.running -= 1;
            match result {
                Ok(()) => state.jobs.extend(pushed.drain(..)),
                Err(error) => {
                    state.stopped = true;
                    if let Ok(mut first) = failure.lock()
                        && first.is_none()
                    {
                        *first = Some(error);
                    }
                }
            }
            wakeup.notify_all();
        }
    };
    let counts = std::thread::scope(|scope| {
        let tuning = (most > threads.start).then(|| {
            scope.spawn(|| {
                tune_threads(
                    Tuner::new(threads.start, most).counting("threads"),
                    counters,
                    &over,
                    cpu_busy,
                    || {
                        queue
                            .lock()
                            .is_ok_and(|mut q| std::mem::take(&mut q.starved))
                    },
                    |count| {
                        allowed.store(count, Ordering::Relaxed);
                        wakeup.notify_all();
                    },
                )
            })
        });
        let workers: Vec<_> = (0..most)
            .map(|number| {
                let work = &work;
                scope.spawn(move || work(number))
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        over.store(true, Ordering::Relaxed);
        match tuning.map(|tuning| tuning.join()) {
            Some(Ok(counts)) => counts,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => ThreadCounts {
                counts: vec![allowed.load(Ordering::Relaxed)],
                reasons: Vec::new(),
            },
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(WalkError::Failed(error));
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(WalkError::Cancelled);
    }
    Ok(counts)
}

/// The tuning of a walk's threads, until `over`: every [`TUNE_WINDOW`], the entries and
/// directories per second (and the CPU) go to `tuner`, whose changes go to `apply`. A window
/// in which a thread allowed to work found nothing to do (`starved` says so and clears) is
/// not judged. Returns the counts it went through, with their reasons.
fn tune_threads(
    mut tuner: Tuner,
    counters: &WalkCounters,
    over: &AtomicBool,
    mut cpu_busy: impl FnMut() -> Option<f64>,
    starved: impl Fn() -> bool,
    apply: impl Fn(usize),
) -> ThreadCounts {
    let seen = || counters.dirs.load(Ordering::Relaxed) + counters.entries.load(Ordering::Relaxed);
    let mut last = (Instant::now(), seen());
    let mut counts = ThreadCounts {
        counts: vec![tuner.workers()],
        reasons: Vec::new(),
    };
    starved();
    cpu_busy();
    loop {
        let window_end = last.0 + TUNE_WINDOW;
        while Instant::now() < window_end {
            if over.load(Ordering::Relaxed) {
                return counts;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let now = (Instant::now(), seen());
        let (then, seen_then) = std::mem::replace(&mut last, now);
        let busy = cpu_busy();
        if starved() {
            continue;
        }
        let seconds = now.0.duration_since(then).as_secs_f64();
        let sample = Sample {
            files_per_second: now.1.saturating_sub(seen_then) as f64 / seconds,
            bytes_per_second: 0.0,
            cpu_busy: busy.unwrap_or(0.0),
        };
        if let Change::To { workers, why } = tuner.observe(sample) {
            apply(workers);
            counts.counts.push(workers);
            counts.reasons.push(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control<'a>(
        threads: WalkThreads,
        cancel: &'a AtomicBool,
        counters: &'a WalkCounters,
    ) -> WalkControl<'a> {
        WalkControl {
            threads,
            cancel,
            hold: None,
            counters,
        }
    }

    #[test]
    fn every_pushed_job_is_visited_once() {
        // A binary tree of depth 10 as jobs: 2047 nodes.
        let seen = AtomicU64::new(0);
        let (cancel, counters) = (AtomicBool::new(false), WalkCounters::default());
        let counts = run_jobs(
            vec![0u32],
            control(WalkThreads::fixed(8), &cancel, &counters),
            |depth, pushed| {
                seen.fetch_add(1, Ordering::Relaxed);
                if depth < 10 {
                    pushed.push(depth + 1);
                    pushed.push(depth + 1);
                }
                Ok::<(), ()>(())
            },
        )
        .map_err(|_| "walk failed")
        .expect("walk");
        assert_eq!(seen.load(Ordering::Relaxed), 2047);
        assert_eq!(counts.counts, vec![8], "a fixed count is never tuned");
    }

    #[test]
    fn the_first_error_stops_the_walk() {
        let (cancel, counters) = (AtomicBool::new(false), WalkCounters::default());
        let result = run_jobs(
            vec![0u32],
            control(WalkThreads::fixed(4), &cancel, &counters),
            |n, pushed| {
                if n == 5 {
                    return Err(n);
                }
                pushed.push(n + 1);
                Ok(())
            },
        );
        assert!(matches!(result, Err(WalkError::Failed(5))));
    }

    #[test]
    fn a_raised_cancel_flag_stops_the_walk() {
        let (cancel, counters) = (AtomicBool::new(true), WalkCounters::default());
        let result = run_jobs(
            vec![0u32],
            control(WalkThreads::fixed(4), &cancel, &counters),
            |n, pushed| {
                pushed.push(n + 1);
                Ok::<(), ()>(())
            },
        );
        assert!(matches!(result, Err(WalkError::Cancelled)));
    }

    #[test]
    fn a_held_walk_starts_no_job_until_released() {
        let (cancel, counters) = (AtomicBool::new(false), WalkCounters::default());
        let hold = AtomicBool::new(false);
        let visited = AtomicU64::new(0);
        let walk = WalkControl {
            hold: Some(&hold),
            ..control(WalkThreads::fixed(4), &cancel, &counters)
        };
        std::thread::scope(|scope| {
            let walking = scope.spawn(|| {
                run_jobs(vec![0u32], walk, |n, pushed| {
                    visited.fetch_add(1, Ordering::Relaxed);
                    if n == 0 {
                        // The first job holds the walk: its children wait.
                        hold.store(true, Ordering::Relaxed);
                        pushed.extend([1, 1, 1]);
                    }
                    Ok::<(), ()>(())
                })
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(
                visited.load(Ordering::Relaxed),
                1,
                "held: nothing more started"
            );
            hold.store(false, Ordering::Relaxed);
            assert!(walking.join().expect("walk thread").is_ok());
        });
        assert_eq!(visited.load(Ordering::Relaxed), 4);
    }

    /// A file server that answers `capacity` requests at once, each in `latency`: the
    /// walk's throughput rises with its threads up to `capacity`, then stays flat.
    struct SimulatedServer {
        capacity: usize,
        latency: std::time::Duration,
        busy: Mutex<usize>,
        freed: Condvar,
    }

    impl SimulatedServer {
        fn request(&self) {
            let mut busy = self.busy.lock().expect("server");
            while *busy >= self.capacity {
                busy = self.freed.wait(busy).expect("server");
            }
            *busy += 1;
            drop(busy);
            std::thread::sleep(self.latency);
            *self.busy.lock().expect("server") -= 1;
            self.freed.notify_one();
        }
    }

    #[test]
    fn the_tuned_walk_climbs_to_what_the_server_sustains_and_no_further() {
        // Directories of 10 entries each, one request per directory, 2 ms a request, a
        // server of 24 threads: starting at 4 threads, the tuning must climb past 16 (where
        // throughput still rises) and never reach 64 (it cannot pay beyond 24).
        let server = SimulatedServer {
            capacity: 24,
            latency: std::time::Duration::from_millis(2),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        };
        let (cancel, counters) = (AtomicBool::new(false), WalkCounters::default());
        let left = AtomicU64::new(40_000);
        // The CPU is not read: other tests share this process.
        let counts = run_jobs_metered(
            vec![(); 64],
            control(WalkThreads { start: 4, most: 64 }, &cancel, &counters),
            || None,
            |(), pushed| {
                server.request();
                counters.count(10);
                // Each directory has one subdirectory until the tree's directories run out.
                if left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    pushed.push(());
                }
                Ok::<(), ()>(())
            },
        )
        .map_err(|_| "walk failed")
        .expect("walk");
        assert!(
            counts.most() >= 16,
            "climbed to {} ({})",
            counts.most(),
            counts.path()
        );
        let last = *counts.counts.last().expect("a count");
        assert!(
            (12..=48).contains(&last),
            "settled near the server's 24 threads, at {last} ({}: {:?})",
            counts.path(),
            counts.reasons
        );
    }

    #[test]
    fn join_builds_relative_paths() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a", b"b"), b"a/b");
    }
}
