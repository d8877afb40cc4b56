//! The delay added to each metadata operation, calibrated against this machine's timers.

use std::time::{Duration, Instant};

/// Sleeps measured when calibrating.
const SAMPLES: usize = 200;

/// A fixed time per operation, counted from when its handler starts, so the work the
/// handler does itself (the `lstat` on the backing directory) is part of it, as the
/// server's work is part of an NFS round trip.
///
/// `thread::sleep` overshoots what it is asked for (timer slack, wake-up latency: about
/// 50 µs with a 1 ns slack here, 100 µs without), so a wait asks for less, by the overshoot
/// measured when the file system starts.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// What each delayed operation should take.
    pub target: Duration,
    /// The median amount by which a sleep of `target` overshot when calibrating.
    pub overshoot: Duration,
}

impl Latency {
    /// Measures how much a sleep of `target` overshoots on this thread (set the timer slack
    /// first: it is per thread and inherited by the threads spawned afterwards).
    pub fn calibrate(target: Duration) -> Self {
        if target.is_zero() {
            return Latency {
                target,
                overshoot: Duration::ZERO,
            };
        }
        let overshoots = sample(|| {
            std::thread::sleep(target);
        })
        .into_iter()
        .map(|took| took.saturating_sub(target))
        .collect();
        Latency {
            target,
            overshoot: median(overshoots),
        }
    }

    /// The median time a calibrated wait takes, to print next to the target.
    pub fn measured(&self) -> Duration {
        median(sample(|| self.wait_since(Instant::now())))
    }

    /// Blocks until `target` has passed since `started`.
    pub fn wait_since(&self, started: Instant) {
        let remaining = self.target.saturating_sub(started.elapsed());
        let sleep = remaining.saturating_sub(self.overshoot);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}

/// How long `operation` took, `SAMPLES` times.
fn sample(mut operation: impl FnMut()) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            operation();
            started.elapsed()
        })
        .collect()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
