//! How many operations of each kind the kernel sent, printed when the file system stops.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of request the passthrough counts. Each is a metadata round trip on NFS, and
/// delayed, except the data transfers (`Read`, `Write`: the benchmark emulates round trips,
/// not bandwidth) and `Close`. Closing a directory or releasing a file is not counted: no
/// round trip, and the read-only mount never counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `read` of file data.
    Read,
    /// `create`: a new file, opened (`open` with `O_CREAT`).
    Create,
    /// `mknod`: a device, FIFO or socket (or a file, on kernels that do not `create`).
    Mknod,
    /// `mkdir`.
    Mkdir,
    /// `symlink`.
    Symlink,
    /// `link`: a hard link.
    Link,
    /// `unlink`.
    Unlink,
    /// `rmdir`.
    Rmdir,
    /// `rename`.
    Rename,
    /// `setattr`: chmod, chown, truncate, utimens.
    Setattr,
    /// `write` of file data.
    Write,
    /// `flush` of a file written through that handle since its last flush: NFS writes
    /// back and commits when a written file is closed.
    Flush,
    /// `flush` of a file not written through that handle: a `close` with nothing to commit,
    /// which NFS answers without the server.
    Close,
    /// `fsync`.
    Fsync,
    /// `fsyncdir`.
    Fsyncdir,
    /// `fallocate`.
    Fallocate,
}

impl Op {
    /// Whether requests of this kind take the configured delay.
    pub fn delayed(self) -> bool {
        !matches!(self, Op::Read | Op::Write | Op::Close)
    }
}

const KINDS: [(Op, &str); 23] = [
    (Op::Lookup, "lookup"),
    (Op::Getattr, "getattr"),
    (Op::Readlink, "readlink"),
    (Op::Open, "open"),
    (Op::Opendir, "opendir"),
    (Op::Readdir, "readdir"),
    (Op::Statfs, "statfs"),
    (Op::Read, "read"),
    (Op::Create, "create"),
    (Op::Mknod, "mknod"),
    (Op::Mkdir, "mkdir"),
    (Op::Symlink, "symlink"),
    (Op::Link, "link"),
    (Op::Unlink, "unlink"),
    (Op::Rmdir, "rmdir"),
    (Op::Rename, "rename"),
    (Op::Setattr, "setattr"),
    (Op::Write, "write"),
    (Op::Flush, "flush"),
    (Op::Close, "close"),
    (Op::Fsync, "fsync"),
    (Op::Fsyncdir, "fsyncdir"),
    (Op::Fallocate, "fallocate"),
];

/// One counter per [`Op`], shared by the request threads.
#[derive(Debug, Default)]
pub struct OpCounts([AtomicU64; KINDS.len()]);

impl OpCounts {
    /// Counts one request.
    pub fn add(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The requests counted so far that took the delay.
    pub fn delayed(&self) -> u64 {
        KINDS
            .iter()
            .zip(&self.0)
            .filter(|((op, _), _)| op.delayed())
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum()
    }
}

impl fmt::Display for OpCounts {
    /// `lookup 20412, getattr 3, ..., read 812 (20415 delayed)`: the kinds that were seen,
    /// then how many of the requests took the delay.
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
        write!(f, " ({} delayed)", self.delayed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_in_the_order_of_the_enum() {
        for (index, (op, _)) in KINDS.iter().enumerate() {
            assert_eq!(*op as usize, index, "{op:?}");
        }
    }

    #[test]
    fn data_and_closes_are_counted_but_not_delayed() {
        let counts = OpCounts::default();
        for op in [
            Op::Lookup,
            Op::Lookup,
            Op::Read,
            Op::Write,
            Op::Flush,
            Op::Close,
            Op::Rename,
        ] {
            counts.add(op);
        }
        assert_eq!(counts.delayed(), 4);
        assert_eq!(
            counts.to_string(),
            "lookup 2, read 1, rename 1, write 1, flush 1, close 1 (4 delayed)"
        );
        assert_eq!(OpCounts::default().to_string(), "no requests (0 delayed)");
    }
}
