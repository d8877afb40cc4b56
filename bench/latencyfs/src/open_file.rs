//! A file the kernel opened through the passthrough.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

/// A backing file behind one FUSE file handle, and whether it was written since it was
/// last flushed (what makes a `close` cost a round trip on NFS).
#[derive(Debug)]
pub struct OpenFile {
    /// The FUSE inode it is a file of.
    pub inode: u64,
    /// The backing file, opened with the access mode the kernel asked for.
    pub file: File,
    written: AtomicBool,
}

impl OpenFile {
    /// A handle on inode `inode`, with nothing written yet.
    pub fn new(inode: u64, file: File) -> Self {
        OpenFile {
            inode,
            file,
            written: AtomicBool::new(false),
        }
    }

    /// Records a write through this handle.
    pub fn mark_written(&self) {
        self.written.store(true, Ordering::Relaxed);
    }

    /// Whether anything was written since the last call.
    pub fn take_written(&self) -> bool {
        self.written.swap(false, Ordering::Relaxed)
    }
}
