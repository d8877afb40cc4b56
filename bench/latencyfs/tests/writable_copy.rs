//! A copy into a `--writable` mount comes out whole: `rsync -aHAX --delete` of a tree
//! holding what home directories hold (dotfiles, symlinks, hard links, names with spaces,
//! a newline or bytes that are not UTF-8, modes with set-ID bits, other owners, old times, a
//! FIFO) into the mount, three passes with changes in between (one `--inplace`, some made
//! through the mount itself: a renamed directory, a file unlinked while open); then another
//! pass through the mount changes nothing, and `rsync -nc -i -aH --delete` of the source
//! against the backing directory itemizes nothing.
//!
//! It mounts, so it needs root, `/dev/fuse` and rsync, and is ignored by default:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo test -p latencyfs --release -- --ignored --nocapture
//! ```

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[test]
#[ignore = "needs root, /dev/fuse and rsync"]
fn rsync_into_a_writable_mount_copies_the_tree_exactly() {
    let scratch = Scratch::new();
    let (source, backing, point) = (
        scratch.dir("source"),
        scratch.dir("backing"),
        scratch.dir("mnt"),
    );
    fill(&source);

    let mount = Mount::start(&backing, &point);
    rsync(&["-aHAX", "--delete"], &source, &point);
    // Inode numbers are the backing ones, the same in every mount, as NFS file ids are.
    let ino = |path: PathBuf| fs::symlink_metadata(path).expect("stat").ino();
    assert_eq!(
        ino(point.join("dir with space")),
        ino(backing.join("dir with space"))
    );

    // Through the mount, behind rsync's back: the inode table must follow a directory the
    // kernel knows the children of to its new name, and a file unlinked while open.
    fs::rename(point.join("dir with space"), point.join("moved"))
        .expect("rename a directory through the mount");
    fs::write(point.join("moved/sub/file"), b"written under the new name")
        .expect("write below the renamed directory");
    assert_eq!(
        fs::read(backing.join("moved/sub/file")).expect("the backing file, renamed"),
        b"written under the new name"
    );
    let mut open = OpenOptions::new()
        .append(true)
        .open(point.join("moved/sub/file"))
        .expect("open");
    fs::remove_file(point.join("moved/sub/file")).expect("unlink while open");
    open.write_all(b"!").expect("write to an unlinked file");
    assert_eq!(open.metadata().expect("fstat an unlinked file").nlink(), 0);
    drop(open);

    change(&source);
    rsync(&["-aHAX", "--delete"], &source, &point);
    // A shorter and a longer file, rewritten in place (truncate and write at offsets).
    fs::write(source.join("dir with space/sub/file"), b"shorter").expect("rewrite");
    fs::write(source.join("renamed/grown"), vec![b'g'; 300_000]).expect("rewrite");
    rsync(&["-aHAX", "--delete", "--inplace"], &source, &point);
    // What the mount says of the copy agrees with the source: another pass does nothing.
    let again = rsync(&["-aHAX", "--delete", "-i"], &source, &point);
    assert_eq!(again, "", "a pass after the copy still changed things");
    let served = mount.stop();
    println!("{served}");
    for kind in [
        "create", "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "setattr",
    ] {
        assert!(
            served.contains(&format!(" {kind} ")),
            "no {kind} in: {served}"
        );
    }

    let differences = rsync(&["-nc", "-i", "-aH", "--delete"], &source, &backing);
    assert_eq!(differences, "", "the copy differs from the source");
    println!(
        "rsync -nc -i -aH --delete of the source against the backing directory: no differences"
    );
}

/// What home directories hold.
fn fill(root: &Path) {
    let sub = root.join("dir with space/sub");
    fs::create_dir_all(&sub).expect("mkdir");
    fs::write(root.join(".bashrc"), b"export PS1='$ '\n").expect("write");
    fs::write(sub.join("file"), vec![b'x'; 200_000]).expect("write");
    fs::write(
        root.join(OsStr::from_bytes(b"latin1 caf\xe9")),
        b"not UTF-8",
    )
    .expect("write");
    fs::write(root.join("new\nline"), b"a newline in the name").expect("write");
    fs::write(root.join("-starts with a dash"), b"").expect("write");
    symlink("dir with space/sub/file", root.join("link")).expect("symlink");
    symlink("/nowhere/at/all", root.join("dangling")).expect("symlink");
    fs::hard_link(root.join(".bashrc"), root.join("hard link")).expect("link");
    fs::create_dir(root.join("private")).expect("mkdir");
    fs::write(root.join("private/tool"), b"#!/bin/sh\n").expect("write");
    chmod(&root.join("private/tool"), 0o4755);
    chmod(&root.join("private"), 0o2750);
    chmod(&sub.join("file"), 0o640);
    std::os::unix::fs::chown(root.join(".bashrc"), Some(1234), Some(5678)).expect("chown");
    std::os::unix::fs::lchown(root.join("link"), Some(1234), None).expect("lchown");
    fs::create_dir_all(root.join("old/deep/er")).expect("mkdir");
    fs::write(root.join("old/deep/er/f"), b"to be deleted").expect("write");
    fs::write(root.join("grown"), b"small").expect("write");
    mkfifo(&root.join("fifo"));
    set_mtime(
        &root.join("new\nline"),
        SystemTime::UNIX_EPOCH + Duration::new(1, 5),
    );
}

/// Changes between passes: deletions (a tree), a renamed directory, a file replaced by a
/// symlink, a new hard link, an append, a mode.
fn change(root: &Path) {
    fs::remove_dir_all(root.join("old")).expect("rm -r");
    fs::create_dir(root.join("renamed")).expect("mkdir");
    fs::rename(root.join("grown"), root.join("renamed/grown")).expect("mv");
    fs::remove_file(root.join("-starts with a dash")).expect("rm");
    symlink(".bashrc", root.join("-starts with a dash")).expect("symlink");
    fs::hard_link(
        root.join("dir with space/sub/file"),
        root.join("renamed/second name"),
    )
    .expect("link");
    let mut append = OpenOptions::new()
        .append(true)
        .open(root.join(".bashrc"))
        .expect("open");
    append.write_all(b"alias ll='ls -l'\n").expect("append");
    chmod(&root.join("dir with space"), 0o711);
}

/// Runs `rsync ARGS FROM/ TO/`, which must succeed, and returns its output.
fn rsync(args: &[&str], from: &Path, to: &Path) -> String {
    let slash = |path: &Path| format!("{}/", path.display());
    let output = Command::new("rsync")
        .args(args)
        .arg(slash(from))
        .arg(slash(to))
        .output()
        .expect("rsync runs");
    assert!(
        output.status.success(),
        "rsync {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A latencyfs process serving a writable mount.
struct Mount {
    child: Option<Child>,
    point: PathBuf,
}

impl Mount {
    fn start(backing: &Path, point: &Path) -> Mount {
        let child = Command::new(env!("CARGO_BIN_EXE_latencyfs"))
            .arg(backing)
            .arg(point)
            .args(["--writable", "--delay-us", "50"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("latencyfs starts");
        let mount = Mount {
            child: Some(child),
            point: point.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mount.mounted() {
            assert!(Instant::now() < deadline, "latencyfs did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn mounted(&self) -> bool {
        let device = |path: &Path| fs::metadata(path).map(|meta| meta.dev()).ok();
        device(&self.point) != self.point.parent().and_then(device)
    }

    /// Unmounts and returns what latencyfs printed.
    fn stop(mut self) -> String {
        let status = Command::new("umount").arg(&self.point).status();
        assert!(status.is_ok_and(|status| status.success()), "umount failed");
        let child = self.child.take().expect("stopped once");
        let output = child.wait_with_output().expect("latencyfs exits");
        assert!(
            output.status.success(),
            "latencyfs failed: {}",
            output.status
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory of its own under the temp dir, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let path = std::env::temp_dir().join(format!("latencyfs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("scratch dir");
        Scratch(path)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir(&path).expect("mkdir");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(time))
        .expect("set mtime");
}

fn mkfifo(path: &Path) {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: `path` is a valid C string.
    let result = unsafe { libc::mkfifo(path.as_ptr(), 0o640) };
    assert_eq!(result, 0, "mkfifo: {}", std::io::Error::last_os_error());
}
