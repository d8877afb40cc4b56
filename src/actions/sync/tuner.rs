//! The worker count of `jobs: auto` (#17): start at 4, raise the count while the copy's
//! throughput keeps rising and the CPU it may use is not saturated, lower it when throughput
//! falls or the CPU is saturated, never above `max_jobs`. Seed 001's advice ("start with -j4,
//! monitor, and increase the number of threads until you reach high CPU utilisation"), done
//! by the tool instead of by a person for hours.
//!
//! The tuner is a pure state machine fed one [`Sample`] per window (a few seconds of the copy:
//! files and bytes per second, the share of the CPU used); each [`Tuner::observe`] answers a
//! [`Change`] with the reason, which the pass shows and journals. The CPU share is the copy's
//! own use (this process and the rsyncs below it, [`CpuMeter`]) of the CPU it may use: its
//! cgroup's limit when it has one (a pod's CPU limit), not the node's core count
//! ([`cpu_capacity`]).
//!
//! The worker pool ([`super::pool`]) feeds it a window every few seconds and applies its
//! changes between shards.
//!
//! How it moves: it doubles the count while each raise pays (throughput up by more than
//! [`GAIN`]), then steps by a quarter; a raise that does not pay is undone and the count is
//! held; a fall of throughput by more than [`LOSS`] while holding (the server got slower, or
//! the files got smaller) steps down, as does a busy CPU (but a lowering for the CPU that
//! costs throughput is undone: the load was other work); and every [`PROBE_EVERY`] steady
//! windows it tries one step up again, so that it follows a copy whose best concurrency
//! changes.

use std::collections::HashMap;
use std::time::Duration;

/// A raise pays when throughput rises by more than this share.
const GAIN: f64 = 0.05;
/// Throughput that falls by more than this share is a fall.
const LOSS: f64 = 0.15;
/// The CPU is saturated above this share of what the copy may use.
const CPU_SATURATED: f64 = 0.90;
/// Windows held before trying one step up again.
const PROBE_EVERY: u32 = 6;

/// What one window of the copy did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Files (entries) copied per second.
    pub files_per_second: f64,
    /// Bytes copied per second.
    pub bytes_per_second: f64,
    /// The share (0 to 1) of the CPU the copy may use that was busy.
    pub cpu_busy: f64,
}

/// What the tuner decided after a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Keep the count.
    Keep,
    /// Use this many workers from now on, for this reason.
    To {
        /// The new count.
        workers: usize,
        /// Why, for a person: `throughput rose 18% at 8 workers`.
        why: String,
    },
}

/// What the tuner is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Doubling while raises pay.
    Climbing,
    /// Stepping by a quarter after the first raise that paid less.
    Stepping,
    /// Holding the best count found.
    Holding { steady: u32 },
}

/// The worker count of one copy, tuned window by window.
#[derive(Debug, Clone)]
pub struct Tuner {
    workers: usize,
    max: usize,
    phase: Phase,
    /// The count before the last raise, and the throughput it had.
    before_raise: Option<(usize, Throughput)>,
    /// The count before the last lowering for a busy CPU, and the throughput it had.
    before_lower: Option<(usize, Throughput)>,
    /// A busy CPU lowers the count no further than this: a lowering that cost throughput
    /// showed that the load is not the copy's (other work on the machine) and that fewer
    /// workers only copy less. Cleared when a raise pays.
    cpu_floor: usize,
    /// The count during the last window, and its throughput.
    last: Option<(usize, Throughput)>,
    /// What is counted, in the reasons: `workers` (the copy's rsyncs), `threads` (a walk's).
    unit: &'static str,
}

/// Files and bytes per second, compared as the better of the two relative changes (a copy of
/// small files is bound by files per second, one of big files by bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Throughput {
    files: f64,
    bytes: f64,
}

impl Throughput {
    /// How much `self` is above `earlier`, as a share (negative when below): the larger of
    /// the changes in files and in bytes per second.
    fn gain_over(self, earlier: Throughput) -> f64 {
        let change = |now: f64, then: f64| {
            if then > 0.0 {
                (now - then) / then
            } else if now > 0.0 {
                1.0
            } else {
                0.0
            }
        };
        change(self.files, earlier.files).max(change(self.bytes, earlier.bytes))
    }
}

impl Tuner {
    /// A tuner starting at `start` workers, never above `max` (nor below 1).
    pub fn new(start: usize, max: usize) -> Self {
        let max = max.max(1);
        Tuner {
            workers: start.clamp(1, max),
            max,
            phase: Phase::Climbing,
            before_raise: None,
            before_lower: None,
            cpu_floor: 1,
            last: None,
            unit: "workers",
        }
    }

    /// The same tuner saying `unit` for what it counts in its reasons (`threads`).
    pub fn counting(self, unit: &'static str) -> Self {
        Tuner { unit, ..self }
    }

    /// The count in use.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether it holds a count it found, rather than climbing (or stepping) to find one.
    pub fn settled(&self) -> bool {
        matches!(self.phase, Phase::Holding { .. })
    }

    /// Takes one window's sample and says whether to change the count.
    pub fn observe(&mut self, sample: Sample) -> Change {
        let now = Throughput {
            files: sample.files_per_second,
            bytes: sample.bytes_per_second,
        };
        // A window is compared with the one before only at the same count: after a lower
        // count the throughput falls by itself, which says nothing of the server.
        let last = self
            .last
            .replace((self.workers, now))
            .filter(|(workers, _)| *workers == self.workers)
            .map(|(_, throughput)| throughput);
        if let Some(change) = self.for_the_cpu(now, sample.cpu_busy) {
            return change;
        }
        // The window after a raise says whether it paid.
        if let Some((previous, before)) = self.before_raise.take() {
            let gain = now.gain_over(before);
            if gain <= GAIN {
                self.phase = Phase::Holding { steady: 0 };
                return self.move_to(
                    previous,
                    format!(
                        "throughput {} at {} {}; back to {previous}",
                        percent_change(gain),
                        self.workers,
                        self.unit
                    ),
                );
            }
            let why = format!(
                "throughput {} at {} {}",
                percent_change(gain),
                self.workers,
                self.unit
            );
            if gain < 0.5 && self.phase == Phase::Climbing {
                self.phase = Phase::Stepping;
            }
            self.cpu_floor = 1;
            return self.raise(now, why);
        }
        match self.phase {
            Phase::Climbing | Phase::Stepping => self.raise(now, "the first window".into()),
            Phase::Holding { steady } => {
                let fell = last.is_some_and(|last| now.gain_over(last) < -LOSS);
                if fell && self.workers > 1 {
                    let gain = last.map_or(0.0, |last| now.gain_over(last));
                    let workers = (self.workers - (self.workers / 4).max(1)).max(1);
                    self.phase = Phase::Holding { steady: 0 };
                    return self.move_to(
                        workers,
                        format!(
                            "throughput {} at {} {}",
                            percent_change(gain),
                            self.workers,
                            self.unit
                        ),
                    );
                }
                if steady + 1 >= PROBE_EVERY {
                    self.phase = Phase::Stepping;
                    return self.raise(
                        now,
                        format!(
                            "steady for {PROBE_EVERY} windows; trying more {}",
                            self.unit
                        ),
                    );
                }
                self.phase = Phase::Holding { steady: steady + 1 };
                Change::Keep
            }
        }
    }

    /// What a busy CPU decides, before the throughput: a lowering for the CPU that cost
    /// throughput is undone (and the CPU lowers no further than that count from then on);
    /// a CPU busier than [`CPU_SATURATED`] lowers the count by a quarter, down to that floor.
    fn for_the_cpu(&mut self, now: Throughput, cpu_busy: f64) -> Option<Change> {
        if let Some((previous, before)) = self.before_lower.take() {
            let gain = now.gain_over(before);
            if gain < -LOSS {
                self.cpu_floor = previous;
                self.phase = Phase::Holding { steady: 0 };
                return Some(self.move_to(
                    previous,
                    format!(
                        "throughput {} at {} {unit}; back to {previous}: the CPU is busy with other work, and fewer {unit} only copy less",
                        percent_change(gain),
                        self.workers,
                        unit = self.unit
                    ),
                ));
            }
        }
        if cpu_busy <= CPU_SATURATED {
            return None;
        }
        self.phase = Phase::Holding { steady: 0 };
        self.before_raise = None;
        let workers = (self.workers - (self.workers / 4).max(1)).max(self.cpu_floor);
        if workers >= self.workers {
            return Some(Change::Keep);
        }
        self.before_lower = Some((self.workers, now));
        Some(self.move_to(
            workers,
            format!(
                "the CPU the copy may use is {:.0}% busy at {} {}",
                cpu_busy * 100.0,
                self.workers,
                self.unit
            ),
        ))
    }

    /// Raises the count (doubling while climbing, a quarter more while stepping), remembering
    /// where it was so that the next window can undo a raise that does not pay.
    fn raise(&mut self, now: Throughput, why: String) -> Change {
        let step = match self.phase {
            Phase::Climbing => self.workers,
            _ => (self.workers / 4).max(1),
        };
        let workers = (self.workers + step).min(self.max);
        if workers == self.workers {
            self.phase = Phase::Holding { steady: 0 };
            return Change::Keep;
        }
        self.before_raise = Some((self.workers, now));
        self.move_to(workers, why)
    }

    fn move_to(&mut self, workers: usize, why: String) -> Change {
        let workers = workers.clamp(1, self.max);
        if workers == self.workers {
            return Change::Keep;
        }
        self.workers = workers;
        Change::To { workers, why }
    }
}

/// `rose 18%`, `fell 12%`, `stayed the same`.
fn percent_change(gain: f64) -> String {
    let percent = (gain * 100.0).round();
    if percent > 0.0 {
        format!("rose {percent:.0}%")
    } else if percent < 0.0 {
        format!("fell {:.0}%", -percent)
    } else {
        "stayed the same".into()
    }
}

/// The CPUs the copy may use: its cgroup's quota (cgroup v2 `cpu.max`, or v1
/// `cpu.cfs_quota_us` over `cpu.cfs_period_us`, as a pod's CPU limit sets them) when there
/// is one, else the CPUs this process may run on.
pub fn cpu_capacity() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let read = |path: &str| std::fs::read_to_string(path).ok();
    read("/sys/fs/cgroup/cpu.max")
        .and_then(|text| cgroup_quota(&text))
        .or_else(|| {
            let quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?;
            let period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?;
            cgroup_quota(&format!("{} {}", quota.trim(), period.trim()))
        })
        .map_or(cores, |quota| quota.min(cores))
}

/// The CPUs a cgroup v2 `cpu.max` (`QUOTA PERIOD`, or `max PERIOD`) allows; `None` for no
/// limit (cgroup v1 writes it as a quota of -1).
fn cgroup_quota(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let quota: f64 = words.next()?.parse().ok()?;
    let period: f64 = words.next()?.parse().ok()?;
    (period > 0.0 && quota > 0.0).then(|| quota / period)
}

/// How much of the CPU the copy may use it used between two readings: the CPU time of this
/// process and of every process below it (the rsyncs and what they start), against
/// [`cpu_capacity`]. Only the copy's own use counts: on a shared machine (a laptop, a CI
/// runner) other work keeps the CPU busy, and counting it made a copy that waits on its file
/// server lower its workers instead of raising them; whether more workers still pay is the
/// throughput's to say. In a transfer pod the copy is all there is, so this is the pod's use.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    last: Option<(Duration, std::time::Instant)>,
    capacity: f64,
}

impl CpuMeter {
    /// A meter that starts now.
    pub fn start() -> Self {
        CpuMeter {
            last: copy_cpu_time().map(|used| (used, std::time::Instant::now())),
            capacity: cpu_capacity(),
        }
    }

    /// The share (0 to 1) of the CPU it may use that the copy used since the last call (or
    /// the start); `None` when it cannot be read here (no `/proc`).
    pub fn busy_since_last(&mut self) -> Option<f64> {
        let now = copy_cpu_time().map(|used| (used, std::time::Instant::now()));
        let busy = match (self.last, now) {
            (Some((then, at)), Some((used, now_at))) => {
                let elapsed = now_at.duration_since(at).as_secs_f64();
                (elapsed > 0.0).then(|| {
                    used.saturating_sub(then).as_secs_f64() / (elapsed * self.capacity.max(0.01))
                })
            }
            _ => None,
        };
        self.last = now;
        busy.map(|busy| busy.clamp(0.0, 1.0))
    }
}

/// The CPU time this process and the processes below it have used so far, from `/proc`: each
/// one's own time and that of its children it has reaped, so that a finished rsync's time
/// stays counted in its parent's.
fn copy_cpu_time() -> Option<Duration> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        // A process may end between the listing and the read: it is simply not counted.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(process) = ProcessTimes::parse(&text)
        {
            processes.push(process);
        }
    }
    let ticks = tree_ticks(&processes, std::process::id());
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    Some(Duration::from_secs_f64(ticks as f64 / per_second))
}

/// A process's parent and CPU time, from its `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessTimes {
    pid: u32,
    parent: u32,
    /// Its user and system time and those of its reaped children, in clock ticks.
    ticks: u64,
}

impl ProcessTimes {
    /// Parses `PID (COMM) STATE PPID ...`: the command may hold spaces and parentheses, so the
    /// fields are counted from the last `)`; utime, stime, cutime and cstime are the 14th to
    /// 17th.
    fn parse(text: &str) -> Option<Self> {
        let (head, rest) = text.rsplit_once(')')?;
        let pid = head.split_whitespace().next()?.parse().ok()?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let parent = fields.get(1)?.parse().ok()?;
        let ticks = fields
            .get(11..15)?
            .iter()
            .filter_map(|field| field.parse::<i64>().ok())
            .map(|value| value.max(0) as u64)
            .sum();
        Some(ProcessTimes { pid, parent, ticks })
    }
}

/// The ticks of `root` and of every process below it.
fn tree_ticks(processes: &[ProcessTimes], root: u32) -> u64 {
    let mut children: HashMap<u32, Vec<&ProcessTimes>> = HashMap::new();
    for process in processes {
        children.entry(process.parent).or_default().push(process);
    }
    let mut total = processes
        .iter()
        .find(|process| process.pid == root)
        .map_or(0, |process| process.ticks);
    let mut below: Vec<u32> = vec![root];
    while let Some(pid) = below.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            total += child.ticks;
            below.push(child.pid);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file server whose throughput grows with concurrency up to `saturation` workers and
    /// stays flat after it (a server with that many threads), with the CPU never the limit.
    fn server(saturation: usize) -> impl Fn(usize) -> Sample {
        move |workers| {
            let effective = workers.min(saturation) as f64;
            Sample {
                files_per_second: 300.0 * effective,
                bytes_per_second: 3e6 * effective,
                cpu_busy: 0.2 + 0.01 * workers as f64,
            }
        }
    }

    fn run(tuner: &mut Tuner, measure: &dyn Fn(usize) -> Sample, windows: usize) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let sample = measure(tuner.workers());
                tuner.observe(sample);
                tuner.workers()
            })
            .collect()
    }

    #[test]
    fn it_converges_near_the_servers_saturation_point() {
        for saturation in [6, 16, 24] {
            let mut tuner = Tuner::new(4, 32);
            let counts = run(&mut tuner, &server(saturation), 40);
            let settled = &counts[counts.len() - 10..];
            let (low, high) = (saturation, saturation + saturation / 2 + 1);
            assert!(
                settled
                    .iter()
                    .all(|count| (low - low / 4..=high).contains(count)),
                "saturation {saturation}: {counts:?}"
            );
        }
    }

    #[test]
    fn it_says_it_is_settled_once_it_holds_a_count_and_not_while_it_climbs() {
        // The pool's windows are short while the tuner climbs, long once it settles.
        let mut tuner = Tuner::new(4, 32);
        assert!(!tuner.settled(), "a new tuner climbs");
        run(&mut tuner, &server(8), 1);
        assert!(!tuner.settled(), "still climbing after its first window");
        run(&mut tuner, &server(8), 10);
        assert!(tuner.settled(), "holding near 8: {}", tuner.workers());
    }

    #[test]
    fn it_backs_off_when_the_throughput_drops_and_when_the_cpu_is_saturated() {
        let mut tuner = Tuner::new(4, 32);
        run(&mut tuner, &server(16), 30);
        let before = tuner.workers();
        // The server slows down: half the throughput at any concurrency.
        let slower = |workers: usize| {
            let sample = server(16)(workers);
            Sample {
                files_per_second: sample.files_per_second / 2.0,
                bytes_per_second: sample.bytes_per_second / 2.0,
                ..sample
            }
        };
        let change = tuner.observe(slower(tuner.workers()));
        assert!(
            matches!(&change, Change::To { workers, why } if *workers < before && why.contains("fell 50%")),
            "{change:?}"
        );
        // Two cores busy: fewer workers, whatever the throughput.
        let busy = |workers: usize| Sample {
            cpu_busy: 0.97,
            ..server(16)(workers)
        };
        let at = tuner.workers();
        let change = tuner.observe(busy(at));
        assert!(
            matches!(&change, Change::To { workers, why } if *workers < at && why.contains("97% busy")),
            "{change:?}"
        );
    }

    #[test]
    fn it_never_leaves_one_to_max_jobs() {
        let mut tuner = Tuner::new(4, 6);
        let counts = run(&mut tuner, &server(100), 30);
        assert!(
            counts.iter().all(|count| (1..=6).contains(count)),
            "{counts:?}"
        );
        assert_eq!(tuner.workers(), 6);
        // A copy bound by the CPU (as many files a second at any count, the CPU always
        // saturated) goes down to one worker.
        let mut tuner = Tuner::new(4, 32);
        let saturated = |workers: usize| Sample {
            cpu_busy: 1.0,
            ..server(1)(workers)
        };
        let counts = run(&mut tuner, &saturated, 30);
        assert_eq!(counts.last(), Some(&1), "{counts:?}");
    }

    /// Other work keeps the CPU busy while the copy waits on its file server: fewer workers
    /// only copy less, so the lowering is undone and the count stays.
    #[test]
    fn a_lowering_for_a_cpu_busy_with_other_work_that_costs_throughput_is_undone() {
        let mut tuner = Tuner::new(4, 32);
        let busy_elsewhere = |workers: usize| Sample {
            cpu_busy: 0.97,
            ..server(100)(workers)
        };
        let mut changes = Vec::new();
        let counts: Vec<usize> = (0..20)
            .map(|_| {
                changes.push(tuner.observe(busy_elsewhere(tuner.workers())));
                tuner.workers()
            })
            .collect();
        assert_eq!(&counts[..3], &[3, 4, 4], "{counts:?}");
        assert!(
            counts.iter().all(|count| (3..=4).contains(count)),
            "{counts:?}"
        );
        assert_eq!(counts.last(), Some(&4), "{counts:?}");
        assert!(
            matches!(&changes[1], Change::To { workers: 4, why } if why.contains("fell 25% at 3 workers; back to 4")),
            "{changes:?}"
        );
    }

    #[test]
    fn a_process_stat_line_gives_its_parent_and_its_times() {
        // The command holds a space and a parenthesis; utime 11, stime 7, cutime 20, cstime 2.
        let line = "4242 (rsync (x) y) S 17 4242 4242 0 -1 4194560 300 0 0 0 11 7 20 2 20 0 1 0 \
                    555 1000 10 18446744073709551615\n";
        assert_eq!(
            ProcessTimes::parse(line),
            Some(ProcessTimes {
                pid: 4242,
                parent: 17,
                ticks: 40
            })
        );
        assert_eq!(ProcessTimes::parse("garbage"), None);
    }

    #[test]
    fn the_copys_time_is_its_process_and_everything_below_it() {
        let process = |pid, parent, ticks| ProcessTimes { pid, parent, ticks };
        let table = [
            process(1, 0, 1000),
            process(10, 1, 5),
            process(11, 10, 7),
            process(12, 11, 3),
            process(13, 1, 100),
        ];
        // 10 and everything below it; not its parent 1 nor its sibling 13.
        assert_eq!(tree_ticks(&table, 10), 15);
        assert_eq!(tree_ticks(&table, 99), 0);
    }

    #[test]
    fn the_meter_sees_this_process_work() {
        let mut meter = CpuMeter::start();
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let busy = meter.busy_since_last().expect("/proc is readable here");
        assert!(busy > 0.0 && busy <= 1.0, "{busy}");
    }

    #[test]
    fn a_pods_cpu_limit_is_its_cgroup_quota() {
        assert_eq!(cgroup_quota("200000 100000\n"), Some(2.0));
        assert_eq!(cgroup_quota("50000 100000"), Some(0.5));
        assert_eq!(cgroup_quota("max 100000"), None);
        // cgroup v1: `cpu.cfs_quota_us` is -1 without a limit.
        assert_eq!(cgroup_quota("-1 100000"), None);
        assert_eq!(cgroup_quota("150000 100000"), Some(1.5));
        assert!(cpu_capacity() > 0.0);
    }
}
