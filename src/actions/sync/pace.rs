//! How far a walk may run ahead of the copy it feeds (#17).
//!
//! A network file system caches what a lookup brought back only for a few seconds (NFS's
//! `acregmin` is 3 s). A walk that copies as it goes reads a directory's attributes, and the
//! rsync given those files looks each of them up again, all of them as it starts (rsync
//! builds its file list first): if the rsync starts within the cache's time, its lookups
//! are answered from the cache; if the walk ran far ahead (it reads 20k files in about a
//! second behind 300 µs, while the copy takes ten), every lookup goes to the server a
//! second time. So the walk holds while what it has found and no worker has taken yet is
//! more than the workers take in [`LEAD`], as long as every worker has a shard: a walk is
//! never held while a worker waits for it.
//!
//! For the same reason a shard holds no more than a worker copies in [`SHARD_SPAN`]: rsync
//! opens a shard's last file as long after its file list as the shard takes.
//!
//! Plain code over readings (a clock and counts passed in), so that it can be tested
//! without waiting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much work the walk may have found ahead of the workers, in the copy's time: inside
/// NFS's 3 s attribute cache, with a margin for the walk's own order (a directory's files
/// wait for the rest of its subtree before they are cut, see [`super::cutter`]).
pub const LEAD: Duration = Duration::from_millis(1500);

/// Files the walk may always be ahead by, per worker: one shard's least
/// ([`super::cutter::CutterConfig`]'s `min_files`), so that each worker has the next shard
/// ready when it ends one, whatever the copy's rate.
pub const FLOOR_PER_WORKER: u64 = 256;

/// How long a worker may take over one shard. rsync looks up all of a shard's files as it
/// starts (its file list) and opens each when it reaches it: a shard that lasts longer than
/// the file system caches those lookups, less the [`LEAD`] the walk read them before, has
/// its later files looked up a third time (a 200k-file tree in four shards of 12k files:
/// 609k requests against 418k for `ls | parallel`).
pub const SHARD_SPAN: Duration = Duration::from_secs(1);

/// How far back the copy's rate is measured.
const RATE_SPAN: Duration = Duration::from_secs(2);

/// What the workers took over the last [`RATE_SPAN`], and the lead it allows.
#[derive(Debug)]
pub struct Pace {
    lead: Duration,
    /// When, and how many files the workers had taken then, oldest first.
    taken: VecDeque<(Instant, u64)>,
}

impl Pace {
    /// A pace that lets the walk be `lead` of the copy's time ahead.
    pub fn new(lead: Duration) -> Self {
        Pace {
            lead,
            taken: VecDeque::new(),
        }
    }

    /// Whether the walk should hold at `now`: it has found `walked` files to copy, the
    /// `workers` workers have taken `taken` of them, `idle` says whether one of them has no
    /// shard.
    pub fn hold(
        &mut self,
        now: Instant,
        walked: u64,
        taken: u64,
        workers: usize,
        idle: bool,
    ) -> bool {
        self.taken.push_back((now, taken));
        while self
            .taken
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_SPAN)
        {
            self.taken.pop_front();
        }
        if idle || self.lead.is_zero() {
            return false;
        }
        let allowed = (self.files_per_second(now) * self.lead.as_secs_f64()) as u64;
        let floor = FLOOR_PER_WORKER * workers.max(1) as u64;
        walked.saturating_sub(taken) > allowed.max(floor)
    }

    /// The most files a shard should hold for each of `workers` workers to copy it within
    /// [`SHARD_SPAN`], at the rate the workers took files over the last two seconds; `None`
    /// until that rate is known.
    pub fn shard_files(&self, now: Instant, workers: usize) -> Option<u64> {
        let rate = self.files_per_second(now);
        (rate > 0.0).then(|| (rate / workers.max(1) as f64 * SHARD_SPAN.as_secs_f64()) as u64)
    }

    /// The files per second the workers take, over the span measured (0 until half a second
    /// is).
    fn files_per_second(&self, now: Instant) -> f64 {
        let (Some((first_at, first)), Some((_, last))) = (self.taken.front(), self.taken.back())
        else {
            return 0.0;
        };
        let seconds = now.duration_since(*first_at).as_secs_f64();
        if seconds < 0.5 {
            return 0.0;
        }
        last.saturating_sub(*first) as f64 / seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_holds_when_it_is_more_than_the_lead_ahead_of_a_busy_copy() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(1));
        let at = |millis| start + Duration::from_millis(millis);
        // At first the rate is unknown: one shard per worker is the lead.
        assert!(!pace.hold(at(0), 1024, 0, 4, false));
        assert!(pace.hold(at(100), 1025, 0, 4, false));
        // An idle worker always lets the walk go on.
        assert!(!pace.hold(at(200), 5000, 0, 4, true));
        // The workers took 2,000 files in a second: 2,000 ahead is allowed, more is not.
        assert!(!pace.hold(at(1000), 4000, 2000, 4, false));
        assert!(pace.hold(at(1000), 4001, 2000, 4, false));
        // More workers, more floor.
        assert!(!pace.hold(at(1000), 2000 + 16 * 256, 2000, 16, false));
    }

    #[test]
    fn the_rate_is_measured_over_the_last_two_seconds_only() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut pace = Pace::new(Duration::from_secs(1));
        for second in 0..=4 {
            // Fast for two seconds, then stopped.
            let done = 5000 * second.min(2);
            pace.hold(at(1000 * second), done + 100, done, 1, false);
        }
        // The last two seconds did nothing: only the floor is allowed.
        assert!(pace.hold(at(4000), 10_000 + 257, 10_000, 1, false));
    }

    #[test]
    fn a_shard_holds_what_one_worker_copies_in_the_span() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut pace = Pace::new(Duration::from_secs(1));
        pace.hold(at(0), 0, 0, 4, true);
        assert_eq!(pace.shard_files(at(0), 4), None, "no rate yet");
        // Four workers took 8,000 files in two seconds: 1,000 a second each.
        pace.hold(at(2000), 8000, 8000, 4, true);
        assert_eq!(pace.shard_files(at(2000), 4), Some(1000));
        assert_eq!(pace.shard_files(at(2000), 8), Some(500));
    }

    #[test]
    fn no_lead_never_holds() {
        let mut pace = Pace::new(Duration::ZERO);
        assert!(!pace.hold(Instant::now(), 1_000_000, 0, 1, false));
    }
}
