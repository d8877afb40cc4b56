//! The file system: a read-only view of a backing directory that delays metadata.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use crate::inode_table::InodeTable;
use crate::latency::Latency;
use crate::op_counts::{Op, OpCounts};

/// How long the kernel may keep what we answered, per kind of entry (NFS keeps file
/// attributes 3 s and directory attributes 30 s by default: `acregmin`, `acdirmin`).
#[derive(Debug, Clone, Copy)]
pub struct CacheTimeouts {
    /// Entries and attributes of anything but a directory.
    pub file: Duration,
    /// Entries and attributes of directories.
    pub dir: Duration,
}

impl CacheTimeouts {
    fn of(&self, kind: FileType) -> Duration {
        if kind == FileType::Directory {
            self.dir
        } else {
            self.file
        }
    }
}

/// One entry of an open directory, as listed when it was opened.
#[derive(Debug)]
struct Listed {
    name: OsString,
    number: u64,
    kind: FileType,
}

/// A read-only passthrough of `root` that makes every metadata request take `latency`.
///
/// Request threads run handlers concurrently (the session has several threads, each with a
/// cloned `/dev/fuse` fd), so the delays of concurrent callers overlap as NFS round trips
/// do; only data reads are not delayed.
#[derive(Debug)]
pub struct Passthrough {
    latency: Latency,
    timeouts: CacheTimeouts,
    readdirplus: bool,
    inodes: RwLock<InodeTable>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    next_handle: AtomicU64,
    counts: Arc<OpCounts>,
}

impl Passthrough {
    /// A passthrough of the directory `root`.
    pub fn new(
        root: &Path,
        latency: Latency,
        timeouts: CacheTimeouts,
        readdirplus: bool,
    ) -> io::Result<Self> {
        let root = root.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(Passthrough {
            latency,
            timeouts,
            readdirplus,
            inodes: RwLock::new(InodeTable::new(root, meta.dev(), meta.ino())),
            files: Mutex::default(),
            dirs: Mutex::default(),
            next_handle: AtomicU64::new(1),
            counts: Arc::default(),
        })
    }

    /// The request counters, to print when the session ends.
    pub fn counts(&self) -> Arc<OpCounts> {
        self.counts.clone()
    }

    /// Starts a delayed request: counts it and returns when it started.
    fn begin(&self, op: Op) -> Instant {
        self.counts.add(op);
        Instant::now()
    }

    fn path(&self, number: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .path(number.0)
            .map(Path::to_path_buf)
            .ok_or(Errno::ESTALE)
    }

    /// The attributes of `path`, numbering it for the kernel.
    fn attributes(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(&path)?;
        let number = self
            .inodes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .number(meta.dev(), meta.ino(), path);
        Ok(file_attr(number, &meta))
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists directory `number` with `.` and `..`, numbering its entries.
    fn list(&self, number: INodeNo) -> Result<Vec<Listed>, Errno> {
        let path = self.path(number)?;
        let meta = std::fs::symlink_metadata(&path)?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push((entry.file_name(), entry.ino(), kind));
        }
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        // `..` only serves `ls -ia` and the like; the kernel resolves `..` itself.
        let mut listed = vec![
            Listed {
                name: ".".into(),
                number: number.0,
                kind: FileType::Directory,
            },
            Listed {
                name: "..".into(),
                number: number.0,
                kind: FileType::Directory,
            },
        ];
        for (name, inode, kind) in entries {
            let child = inodes.number(meta.dev(), inode, path.join(&name));
            listed.push(Listed {
                name,
                number: child,
                kind,
            });
        }
        Ok(listed)
    }

    fn listing(&self, handle: FileHandle) -> Option<Arc<Vec<Listed>>> {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&handle.0)
            .cloned()
    }
}

impl Filesystem for Passthrough {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Without it the kernel serializes lookups in one directory, and concurrent
        // walkers of a directory would queue behind each other's delays.
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS;
        if self.readdirplus {
            wanted |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        }
        if let Err(missing) = config.add_capabilities(wanted) {
            eprintln!("latencyfs: the kernel does not offer {missing:?}");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let started = self.begin(Op::Lookup);
        let result = self
            .path(parent)
            .and_then(|dir| self.attributes(dir.join(name)));
        self.latency.wait_since(started);
        match result {
            Ok(attr) => {
                let ttl = self.timeouts.of(attr.kind);
                reply.entry(&ttl, &attr, Generation(0));
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let started = self.begin(Op::Getattr);
        let result = self.path(ino).and_then(|path| self.attributes(path));
        self.latency.wait_since(started);
        match result {
            Ok(attr) => reply.attr(&self.timeouts.of(attr.kind), &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let started = self.begin(Op::Readlink);
        let result = self
            .path(ino)
            .and_then(|path| std::fs::read_link(path).map_err(Errno::from));
        self.latency.wait_since(started);
        match result {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let started = self.begin(Op::Open);
        let result = if flags.acc_mode() == OpenAccMode::O_RDONLY {
            self.path(ino)
                .and_then(|path| File::open(path).map_err(Errno::from))
        } else {
            Err(Errno::EROFS)
        };
        let result = result.map(|file| {
            let handle = self.new_handle();
            self.files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(handle, Arc::new(file));
            handle
        });
        self.latency.wait_since(started);
        match result {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.counts.add(Op::Read);
        let file = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh.0)
            .cloned();
        let Some(file) = file else {
            reply.error(Errno::EBADF);
            return;
        };
        let mut buffer = vec![0; size as usize];
        let mut filled = 0;
        // A short read only at the end of the file: the kernel takes a short answer as EOF.
        while filled < buffer.len() {
            match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    reply.error(error.into());
                    return;
                }
            }
        }
        reply.data(&buffer[..filled]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Closing a file opened for reading is no round trip on NFS: not delayed.
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let started = self.begin(Op::Opendir);
        let result = self.list(ino).map(|listed| {
            let handle = self.new_handle();
            self.dirs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(handle, Arc::new(listed));
            handle
        });
        self.latency.wait_since(started);
        match result {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let started = self.begin(Op::Readdir);
        let Some(listed) = self.listing(fh) else {
            self.latency.wait_since(started);
            reply.error(Errno::EBADF);
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listed.iter().enumerate().skip(skip) {
            // The offset of an entry is where the next call starts.
            if reply.add(
                INodeNo(entry.number),
                index as u64 + 1,
                entry.kind,
                &entry.name,
            ) {
                break;
            }
        }
        self.latency.wait_since(started);
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let started = self.begin(Op::Readdir);
        let (Some(listed), Ok(dir)) = (self.listing(fh), self.path(ino)) else {
            self.latency.wait_since(started);
            reply.error(Errno::EBADF);
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listed.iter().enumerate().skip(skip) {
            let path = if index < 2 {
                dir.clone()
            } else {
                dir.join(&entry.name)
            };
            // An entry removed since the listing is left out, as NFS would.
            let Ok(attr) = self.attributes(path) else {
                continue;
            };
            let ttl = self.timeouts.of(attr.kind);
            let full = reply.add(
                attr.ino,
                index as u64 + 1,
                &entry.name,
                &ttl,
                &attr,
                Generation(0),
            );
            if full {
                break;
            }
        }
        self.latency.wait_since(started);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let started = self.begin(Op::Statfs);
        let result = self.path(INodeNo::ROOT).and_then(|root| statvfs(&root));
        self.latency.wait_since(started);
        match result {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                u32::try_from(s.f_namemax).unwrap_or(255),
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(errno) => reply.error(errno),
        }
    }
}

fn statvfs(path: &Path) -> Result<libc::statvfs, Errno> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid C string and `stat` points to writable memory of the right
    // size; statvfs fills it on success.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    Ok(unsafe { stat.assume_init() })
}

/// The attributes the kernel gets for backing `meta`, under FUSE inode `number`.
fn file_attr(number: u64, meta: &Metadata) -> FileAttr {
    let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino: INodeNo(number),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        // Passed through exactly: `sync`'s final pass compares change times.
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos,
    }
}
