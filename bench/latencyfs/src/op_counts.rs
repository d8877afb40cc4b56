//! How many operations of each kind the kernel sent, printed when the file system stops.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of request the passthrough counts; all but `Read` are delayed.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `lookup`: a name in a directory (`stat`, `open` of a path not in the dentry cache).
    Lookup,
    /// `getattr`: attributes whose cache entry expired.
    Getattr,
    /// `readlink`.
    Readlink,
    /// `open` of a file.
    Open,
    /// `opendir`.
    Opendir,
    /// One batch of `readdir` or `readdirplus` entries.
    Readdir,
    /// `statfs`.
    Statfs,
    /// `read` of file data (not delayed: the benchmark emulates round trips, not bandwidth).
    Read,
}

const KINDS: [(Op, &str); 8] = [
    (Op::Lookup, "lookup"),
    (Op::Getattr, "getattr"),
    (Op::Readlink, "readlink"),
    (Op::Open, "open"),
    (Op::Opendir, "opendir"),
    (Op::Readdir, "readdir"),
    (Op::Statfs, "statfs"),
    (Op::Read, "read"),
];

/// One counter per [`Op`], shared by the request threads.
#[derive(Debug, Default)]
pub struct OpCounts([AtomicU64; KINDS.len()]);

impl OpCounts {
    /// Counts one request.
    pub fn add(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Display for OpCounts {
    /// `lookup 20412, getattr 3, ...`, the kinds that were seen.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for ((_, name), count) in KINDS.iter().zip(&self.0) {
            let count = count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{name} {count}")?;
            first = false;
        }
        if first {
            f.write_str("no requests")?;
        }
        Ok(())
    }
}
