//! The file system: a view of a backing directory that delays metadata, read-only unless
//! [`Settings::writable`] (the operations that change the tree are in [`writes`]).

mod writes;

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
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::inode_table::InodeTable;
use crate::latency::Latency;
use crate::op_counts::{Op, OpCounts};
use crate::open_file::OpenFile;

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

/// How the passthrough behaves.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The time each metadata request takes.
    pub latency: Latency,
    /// How long the kernel may cache entries and attributes.
    pub timeouts: CacheTimeouts,
    /// Answer directory listings with attributes (READDIRPLUS).
    pub readdirplus: bool,
    /// Let callers change the tree (create, write, rename, remove, chmod, ...); the mount
    /// is read-only otherwise.
    pub writable: bool,
}

/// One entry of an open directory, as listed when it was opened.
#[derive(Debug)]
struct Listed {
    name: OsString,
    number: u64,
    kind: FileType,
}

/// A passthrough of `root` that makes every metadata request take `latency`.
///
/// Request threads run handlers concurrently (the session has several threads, each with a
/// cloned `/dev/fuse` fd), so the delays of concurrent callers overlap as NFS round trips
/// do; only data reads and writes are not delayed.
#[derive(Debug)]
pub struct Passthrough {
    latency: Latency,
    timeouts: CacheTimeouts,
    readdirplus: bool,
    writable: bool,
    inodes: RwLock<InodeTable>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    next_handle: AtomicU64,
    counts: Arc<OpCounts>,
}

impl Passthrough {
    /// A passthrough of the directory `root`.
    pub fn new(root: &Path, settings: Settings) -> io::Result<Self> {
        let root = root.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(Passthrough {
            latency: settings.latency,
            timeouts: settings.timeouts,
            readdirplus: settings.readdirplus,
            writable: settings.writable,
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

    /// Runs `work` as a delayed request of kind `op`: counted, and taking `latency` in all.
    fn delayed<T>(&self, op: Op, work: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        let started = self.begin(op);
        let result = work();
        self.latency.wait_since(started);
        result
    }

    fn path(&self, number: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .path(number.0)
            .ok_or(Errno::ESTALE)
    }

    /// The attributes of `name` in directory `parent`, numbering it for the kernel.
    fn entry(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = self
            .inodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .child_path(parent.0, name)
            .ok_or(Errno::ESTALE)?;
        let meta = std::fs::symlink_metadata(&path)?;
        let number = self
            .inodes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .number(meta.dev(), meta.ino(), parent.0, name);
        Ok(file_attr(number, &meta))
    }

    /// The attributes of inode `number`; through an open file when it has no name left
    /// (unlinked while open).
    fn attributes(&self, number: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let meta = match self.path(number) {
            Ok(path) => std::fs::symlink_metadata(path)?,
            Err(errno) => self
                .open_nameless(number, fh)
                .ok_or(errno)?
                .file
                .metadata()?,
        };
        Ok(file_attr(number.0, &meta))
    }

    fn open_file(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh.0)
            .cloned()
    }

    /// An open file of inode `number`, which has no name left: `fh` if the kernel sent one,
    /// else any handle open on it (`fstat` and `fchmod` come without one).
    fn open_nameless(&self, number: INodeNo, fh: Option<FileHandle>) -> Option<Arc<OpenFile>> {
        if let Some(open) = fh.and_then(|fh| self.open_file(fh)) {
            return Some(open);
        }
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|open| open.inode == number.0)
            .cloned()
    }

    /// Registers `file`, inode `number`'s, as opened by the kernel, under a new handle.
    fn keep_open(&self, number: INodeNo, file: File) -> u64 {
        let handle = self.new_handle();
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle, Arc::new(OpenFile::new(number.0, file)));
        handle
    }

    fn reply_entry(&self, reply: ReplyEntry, result: Result<FileAttr, Errno>) {
        match result {
            Ok(attr) => reply.entry(&self.timeouts.of(attr.kind), &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
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
            let child = inodes.number(meta.dev(), inode, number.0, &name);
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
        let result = self.delayed(Op::Lookup, || self.entry(parent, name));
        self.reply_entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let started = self.begin(Op::Getattr);
        let result = self.attributes(ino, fh);
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
        } else if self.writable {
            self.open_for_writing(ino, flags)
        } else {
            Err(Errno::EROFS)
        };
        let result = result.map(|file| self.keep_open(ino, file));
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
        let Some(open) = self.open_file(fh) else {
            reply.error(Errno::EBADF);
            return;
        };
        let file = &open.file;
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
        // Closing is no round trip on NFS (writes were committed by `flush`): not delayed.
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
        let Some(listed) = self.listing(fh) else {
            self.latency.wait_since(started);
            reply.error(Errno::EBADF);
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listed.iter().enumerate().skip(skip) {
            let attr = if index < 2 {
                self.attributes(ino, None)
            } else {
                self.entry(ino, &entry.name)
            };
            // An entry removed since the listing is left out, as NFS would.
            let Ok(attr) = attr else {
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

    // The operations below change the tree; the kernel sends them only to a writable
    // mount (a read-only one refuses them itself), and they are in `writes`.

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self.delayed(Op::Mknod, || self.make_node(req, parent, name, mode, rdev));
        self.reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.delayed(Op::Mkdir, || self.make_dir(req, parent, name, mode));
        self.reply_entry(reply, result);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.delayed(Op::Symlink, || {
            self.make_symlink(req, parent, link_name, target)
        });
        self.reply_entry(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.delayed(Op::Link, || self.make_link(ino, newparent, newname));
        self.reply_entry(reply, result);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.delayed(Op::Create, || {
            self.create_file(req, parent, name, mode, OpenFlags(flags))
        });
        match result {
            Ok((attr, file)) => reply.created(
                &self.timeouts.of(attr.kind),
                &attr,
                Generation(0),
                FileHandle(self.keep_open(attr.ino, file)),
                FopenFlags::empty(),
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.delayed(Op::Unlink, || self.remove(parent, name, false)),
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.delayed(Op::Rmdir, || self.remove(parent, name, true)),
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.delayed(Op::Rename, || {
            self.move_entry(parent, name, newparent, newname, flags)
        });
        reply_empty(reply, result)
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = writes::AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let result = self.delayed(Op::Setattr, || self.set_attributes(ino, fh, &change));
        match result {
            Ok(attr) => reply.attr(&self.timeouts.of(attr.kind), &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.counts.add(Op::Write);
        match self.write_at(fh, offset, data) {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Read-only, as before: unanswered, after which the kernel stops sending flushes,
        // saving a request per close.
        if !self.writable {
            reply.error(Errno::ENOSYS);
            return;
        }
        if self.open_file(fh).is_some_and(|open| open.take_written()) {
            let _ = self.delayed(Op::Flush, || Ok(()));
        } else {
            self.counts.add(Op::Close);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Read-only, as before (a read-only file can be fsynced): see `flush`.
        if !self.writable {
            reply.error(Errno::ENOSYS);
            return;
        }
        reply_empty(
            reply,
            self.delayed(Op::Fsync, || self.sync_file(fh, datasync)),
        )
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.writable {
            reply.error(Errno::ENOSYS);
            return;
        }
        reply_empty(reply, self.delayed(Op::Fsyncdir, || self.sync_dir(ino)))
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.delayed(Op::Fallocate, || self.allocate(fh, offset, length, mode));
        reply_empty(reply, result)
    }
}

/// Answers an operation that returns nothing but success or an error.
fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
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
