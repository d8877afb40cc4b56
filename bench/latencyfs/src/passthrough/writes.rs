//! The operations of a writable mount: making, linking, renaming and removing names,
//! changing attributes, and writing and syncing files, each done on the backing tree and
//! mirrored in the inode table.
//!
//! New entries get exactly the mode the kernel sends: it has applied the caller's umask
//! already (we do not ask for `FUSE_DONT_MASK`), and `main` clears our own.

use std::ffi::{CString, OsStr};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileHandle, INodeNo, OpenFlags, RenameFlags, Request, TimeOrNow};

use super::{Passthrough, file_attr};
use crate::open_file::OpenFile;

/// The attributes one `setattr` changes (`None`: left as they are).
#[derive(Debug)]
pub struct AttrChange {
    /// Permission bits (chmod).
    pub mode: Option<u32>,
    /// Owner (chown).
    pub uid: Option<u32>,
    /// Group (chown).
    pub gid: Option<u32>,
    /// Length (truncate).
    pub size: Option<u64>,
    /// Access time, a given one or now (utimens).
    pub atime: Option<TimeOrNow>,
    /// Modification time, a given one or now (utimens).
    pub mtime: Option<TimeOrNow>,
}

/// What a change applies to: the inode's backing path, or its open file once it has no
/// name left (unlinked while open).
enum Target {
    Path(PathBuf),
    Open(Arc<OpenFile>),
}

impl Passthrough {
    /// A device, FIFO, socket or file (`mknod`); `mode` holds the type.
    pub(super) fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<FileAttr, Errno> {
        self.add_entry(req, parent, name, |path| {
            let path = c_path(path)?;
            // SAFETY: `path` is a valid C string; mknod reads nothing else.
            check(unsafe { libc::mknod(path.as_ptr(), mode, libc::dev_t::from(rdev)) })
        })
        .map(|(attr, ())| attr)
    }

    pub(super) fn make_dir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        self.add_entry(req, parent, name, |path| {
            std::fs::DirBuilder::new()
                .mode(mode & 0o7777)
                .create(path)
                .map_err(Errno::from)
        })
        .map(|(attr, ())| attr)
    }

    pub(super) fn make_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        self.add_entry(req, parent, name, |path| {
            std::os::unix::fs::symlink(target, path).map_err(Errno::from)
        })
        .map(|(attr, ())| attr)
    }

    /// A new file, opened as `flags` say (`open` with `O_CREAT`).
    pub(super) fn create_file(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: OpenFlags,
    ) -> Result<(FileAttr, File), Errno> {
        let flags = flags.0 & (libc::O_ACCMODE | libc::O_EXCL | libc::O_TRUNC) | libc::O_CREAT;
        self.add_entry(req, parent, name, |path| open(path, flags, mode & 0o7777))
    }

    /// A second name for inode `ino`.
    pub(super) fn make_link(
        &self,
        ino: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        let from = inodes.path(ino.0).ok_or(Errno::ESTALE)?;
        let to = inodes
            .child_path(new_parent.0, new_name)
            .ok_or(Errno::ESTALE)?;
        std::fs::hard_link(from, &to)?;
        let meta = std::fs::symlink_metadata(&to)?;
        let number = inodes.number(meta.dev(), meta.ino(), new_parent.0, new_name);
        Ok(file_attr(number, &meta))
    }

    /// Removes `name` from `parent`: an empty directory (`rmdir`) or anything else
    /// (`unlink`).
    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        let path = inodes.child_path(parent.0, name).ok_or(Errno::ESTALE)?;
        let meta = std::fs::symlink_metadata(&path)?;
        if dir {
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        inodes.remove(parent.0, name, last_link(&meta));
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent` (`renameat2`, with its
    /// flags).
    pub(super) fn move_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        let from = inodes.child_path(parent.0, name).ok_or(Errno::ESTALE)?;
        let to = inodes
            .child_path(new_parent.0, new_name)
            .ok_or(Errno::ESTALE)?;
        let moved = std::fs::symlink_metadata(&from)?;
        let replaced = std::fs::symlink_metadata(&to).ok();
        let (from_c, to_c) = (c_path(&from)?, c_path(&to)?);
        // SAFETY: both are valid C strings; renameat2 reads nothing else.
        check(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                flags.bits(),
            )
        })?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            inodes.exchange(parent.0, name, new_parent.0, new_name);
            return Ok(());
        }
        if let Some(replaced) = replaced {
            // Two names of one file: the rename did nothing, both are still there.
            if (replaced.dev(), replaced.ino()) == (moved.dev(), moved.ino()) {
                return Ok(());
            }
            inodes.remove(new_parent.0, new_name, last_link(&replaced));
        }
        inodes.rename(parent.0, name, new_parent.0, new_name);
        Ok(())
    }

    /// Applies `change` to inode `ino` (through an open file if it has no name left) and
    /// returns its attributes.
    pub(super) fn set_attributes(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        change: &AttrChange,
    ) -> Result<FileAttr, Errno> {
        let target = match self.path(ino) {
            Ok(path) => Target::Path(path),
            Err(errno) => Target::Open(self.open_nameless(ino, fh).ok_or(errno)?),
        };
        // In this order: a chown clears the set-user-ID bit a chmod may set, and a
        // truncate moves the mtime that utimens sets after it.
        if change.uid.is_some() || change.gid.is_some() {
            match &target {
                Target::Path(path) => std::os::unix::fs::lchown(path, change.uid, change.gid)?,
                Target::Open(open) => {
                    std::os::unix::fs::fchown(&open.file, change.uid, change.gid)?
                }
            }
        }
        if let Some(mode) = change.mode {
            let permissions = Permissions::from_mode(mode & 0o7777);
            match &target {
                Target::Path(path) => {
                    // chmod follows symlinks, out of the backing tree maybe; Linux has no
                    // modes on symlinks (and the kernel sends no chmod for them).
                    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    std::fs::set_permissions(path, permissions)?;
                }
                Target::Open(open) => open.file.set_permissions(permissions)?,
            }
        }
        if let Some(size) = change.size {
            match &target {
                Target::Path(path) => {
                    let path = c_path(path)?;
                    let size = libc::off_t::try_from(size).map_err(|_| Errno::EFBIG)?;
                    // SAFETY: `path` is a valid C string; truncate reads nothing else.
                    check(unsafe { libc::truncate(path.as_ptr(), size) })?;
                }
                Target::Open(open) => open.file.set_len(size)?,
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let times = [timespec(change.atime), timespec(change.mtime)];
            match &target {
                Target::Path(path) => {
                    let path = c_path(path)?;
                    // SAFETY: `path` is a valid C string and `times` two timespecs.
                    check(unsafe {
                        libc::utimensat(
                            libc::AT_FDCWD,
                            path.as_ptr(),
                            times.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })?;
                }
                Target::Open(open) => {
                    // SAFETY: the fd is open as long as `open` lives; `times` two timespecs.
                    check(unsafe { libc::futimens(open.file.as_raw_fd(), times.as_ptr()) })?;
                }
            }
        }
        let meta = match &target {
            Target::Path(path) => std::fs::symlink_metadata(path)?,
            Target::Open(open) => open.file.metadata()?,
        };
        Ok(file_attr(ino.0, &meta))
    }

    /// Opens inode `ino` for writing, or reading and writing, as `flags` say.
    pub(super) fn open_for_writing(&self, ino: INodeNo, flags: OpenFlags) -> Result<File, Errno> {
        // Not O_APPEND: the kernel sends each write's offset (the end, for an appending
        // caller), and pwrite to an O_APPEND file would ignore it.
        let flags = flags.0 & (libc::O_ACCMODE | libc::O_TRUNC);
        open(&self.path(ino)?, flags, 0)
    }

    /// Writes `data` at `offset` through handle `fh`; not delayed, as reads are not.
    pub(super) fn write_at(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let open = self.open_file(fh).ok_or(Errno::EBADF)?;
        open.file.write_all_at(data, offset)?;
        open.mark_written();
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    pub(super) fn sync_file(&self, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        let open = self.open_file(fh).ok_or(Errno::EBADF)?;
        if datasync {
            open.file.sync_data()?;
        } else {
            open.file.sync_all()?;
        }
        Ok(())
    }

    pub(super) fn sync_dir(&self, ino: INodeNo) -> Result<(), Errno> {
        File::open(self.path(ino)?)?.sync_all()?;
        Ok(())
    }

    pub(super) fn allocate(
        &self,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let open = self.open_file(fh).ok_or(Errno::EBADF)?;
        let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let length = libc::off_t::try_from(length).map_err(|_| Errno::EFBIG)?;
        // SAFETY: the fd is open as long as `open` lives.
        check(unsafe { libc::fallocate(open.file.as_raw_fd(), mode, offset, length) })
    }

    /// Makes `name` in `parent` with `make`, gives it to the caller and numbers it.
    fn add_entry<T>(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&Path) -> Result<T, Errno>,
    ) -> Result<(FileAttr, T), Errno> {
        // Held while the name is made: a concurrent rename cannot move the directory
        // between the path and the table.
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        let path = inodes.child_path(parent.0, name).ok_or(Errno::ESTALE)?;
        let made = make(&path)?;
        hand_over(&path, req)?;
        let meta = std::fs::symlink_metadata(&path)?;
        let number = inodes.number(meta.dev(), meta.ino(), parent.0, name);
        Ok((file_attr(number, &meta), made))
    }
}

/// Gives a new entry, which we made, to the caller, as the file system would have made it
/// for them: their user, and their group unless the directory's set-group-ID bit gave it
/// the directory's.
fn hand_over(path: &Path, req: &Request) -> Result<(), Errno> {
    // SAFETY: geteuid and getegid take nothing and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if req.uid() == uid && req.gid() == gid {
        return Ok(());
    }
    let group_from_dir = path
        .parent()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .is_some_and(|dir| dir.mode() & libc::S_ISGID != 0);
    let new_uid = (req.uid() != uid).then_some(req.uid());
    let new_gid = (req.gid() != gid && !group_from_dir).then_some(req.gid());
    std::os::unix::fs::lchown(path, new_uid, new_gid)?;
    Ok(())
}

/// Whether removing a name of the file `meta` describes removes the file: its backing
/// inode may then be given to another.
fn last_link(meta: &std::fs::Metadata) -> bool {
    meta.is_dir() || meta.nlink() <= 1
}

/// Opens `path` with open(2) `flags` (and `O_CLOEXEC`), creating it with `mode` if they
/// say `O_CREAT`.
fn open(path: &Path, flags: i32, mode: u32) -> Result<File, Errno> {
    let path = c_path(path)?;
    // SAFETY: `path` is a valid C string; open reads the mode only with O_CREAT.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: open returned a new fd that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The error of a libc call that returned `result`.
fn check(result: libc::c_int) -> Result<(), Errno> {
    if result < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// `time` for utimensat: a given time, now (`UTIME_NOW`) or unchanged (`UTIME_OMIT`).
fn timespec(time: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match time {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(time)) => seconds_and_nanos(time),
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// `time` as seconds since the epoch (negative before it) and nanoseconds in [0, 1e9).
fn seconds_and_nanos(time: SystemTime) -> (libc::time_t, libc::c_long) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
            libc::c_long::from(after.subsec_nanos()),
        ),
        Err(before) => {
            let before = before.duration();
            let seconds = libc::time_t::try_from(before.as_secs()).unwrap_or(libc::time_t::MAX);
            match before.subsec_nanos() {
                0 => (-seconds, 0),
                nanos => (-seconds - 1, 1_000_000_000 - libc::c_long::from(nanos)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_before_the_epoch_count_nanoseconds_forward() {
        let at = |secs: u64, nanos: u32| Duration::new(secs, nanos);
        assert_eq!(seconds_and_nanos(UNIX_EPOCH + at(5, 250)), (5, 250));
        assert_eq!(seconds_and_nanos(UNIX_EPOCH - at(5, 0)), (-5, 0));
        assert_eq!(
            seconds_and_nanos(UNIX_EPOCH - at(5, 250)),
            (-6, 999_999_750)
        );
    }

    #[test]
    fn unset_times_are_omitted_and_now_is_now() {
        assert_eq!(timespec(None).tv_nsec, libc::UTIME_OMIT);
        assert_eq!(timespec(Some(TimeOrNow::Now)).tv_nsec, libc::UTIME_NOW);
    }
}
