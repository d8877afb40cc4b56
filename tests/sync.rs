//! End-to-end tests of the `sync` action with real rsync processes, on trees the tests make:
//! dotfiles, symlinks (one dangling), hard links, empty directories, names with spaces,
//! newlines and bytes that are not UTF-8, permissions and owners, a big file, many small
//! ones, and one directory holding most of the bytes.

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Test;
use common::copies::{notes, notes_of, pass_shards};

// ---------------------------------------------------------------------------------------
// Trees

fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A tree like users' home directories after some years.
fn make_tree(root: &Path) {
    // Many small files in several homes.
    for home in 0..12 {
        for file in 0..60 {
            write(
                &root.join(format!("home{home:02}/notebooks/n{file:03}.ipynb")),
                format!("{{\"cell\": {file}, \"home\": {home}}}\n").as_bytes(),
            );
        }
        write(
            &root.join(format!("home{home:02}/.bashrc")),
            b"export A=1\n",
        );
    }
    // One home with most of the bytes: a big file and some medium ones.
    let big: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&root.join("data-hog/datasets/big.bin"), &big);
    for i in 0..8 {
        write(
            &root.join(format!("data-hog/datasets/part{i}.bin")),
            &big[..1 << 20],
        );
    }
    // Dotfiles and dot directories at the top.
    write(&root.join(".hidden-top"), b"top secret\n");
    write(&root.join(".config/app/settings.json"), b"{}\n");
    // Symlinks, one dangling, one to a directory.
    std::os::unix::fs::symlink("notebooks/n000.ipynb", root.join("home00/link")).expect("symlink");
    std::os::unix::fs::symlink("../nowhere/at/all", root.join("home00/dangling")).expect("symlink");
    std::os::unix::fs::symlink("home01", root.join("home-alias")).expect("symlink");
    // Hard links within a home and across homes (so across shards).
    write(&root.join("home02/original"), b"linked content\n");
    std::fs::hard_link(
        root.join("home02/original"),
        root.join("home02/same-home-link"),
    )
    .expect("link");
    std::fs::hard_link(
        root.join("home02/original"),
        root.join("home09/other-home-link"),
    )
    .expect("link");
    // Empty directories.
    std::fs::create_dir_all(root.join("empty/nested/deeper")).expect("mkdir");
    std::fs::create_dir_all(root.join("home03/empty")).expect("mkdir");
    // Unusual names.
    let odd = root.join("odd names");
    std::fs::create_dir_all(&odd).expect("mkdir");
    write(&odd.join("with spaces.txt"), b"spaces\n");
    write(&odd.join(name(b"new\nline")), b"newline\n");
    write(&odd.join(name(b"latin1-\xe9t\xe9")), b"not utf-8\n");
    write(&odd.join("-starts-with-dash"), b"dash\n");
    write(&odd.join("*star?"), b"glob\n");
    write(&odd.join("caf\u{e9} \u{1f600}"), b"utf-8\n");
    std::fs::create_dir_all(odd.join(name(b"dir\nwith\xffbytes"))).expect("mkdir");
    write(&odd.join(name(b"dir\nwith\xffbytes/inside")), b"inside\n");
    // Permissions, and owners when we can give files away.
    let private = root.join("home04/private");
    write(&private, b"mine\n");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(root.join("home04"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let script = root.join("home05/run.sh");
    write(&script, b"#!/bin/sh\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    if is_root() {
        std::os::unix::fs::lchown(root.join("home06"), Some(1000), Some(1000)).expect("chown");
        std::os::unix::fs::lchown(root.join("home06/.bashrc"), Some(1000), Some(100))
            .expect("chown");
        std::os::unix::fs::lchown(root.join("home00/link"), Some(4321), Some(4321)).expect("chown");
    }
    // Old times, so that a copy that forgets them shows.
    set_old_times(root);
}

/// Sets every entry's modification time to a fixed old date (directories last).
fn set_old_times(root: &Path) {
    let status = Command::new("find")
        .arg(root)
        .args([
            "-depth",
            "-exec",
            "touch",
            "-h",
            "-d",
            "2020-02-02 12:00:00",
            "{}",
            "+",
        ])
        .status()
        .expect("find");
    assert!(status.success());
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// One entry as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    mtime: i64,
    content: Vec<u8>,
    /// The first path (in order) of its inode, for hard links.
    linked_to: Option<Vec<u8>>,
}

/// Our own walk of a tree: every entry with what `rsync -a -H` keeps.
fn describe(root: &Path, with_ctime: bool) -> BTreeMap<Vec<u8>, (Described, i64)> {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(relative) = stack.pop() {
        let dir = root.join(&relative);
        for item in std::fs::read_dir(&dir).expect("read_dir") {
            let item = item.expect("entry");
            let path = relative.join(item.file_name());
            let meta = std::fs::symlink_metadata(root.join(&path)).expect("lstat");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            all.push((path, meta));
        }
    }
    all.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    for (path, meta) in all {
        let key = path.as_os_str().as_bytes().to_vec();
        let full = root.join(&path);
        let (kind, content) = if meta.file_type().is_symlink() {
            (
                "symlink",
                std::fs::read_link(&full)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if meta.is_dir() {
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(&full).expect("read"))
        };
        let linked_to = (kind == "file" && meta.nlink() > 1).then(|| {
            inodes
                .entry(meta.ino())
                .or_insert_with(|| key.clone())
                .clone()
        });
        entries.insert(
            key,
            (
                Described {
                    kind,
                    mode: if kind == "symlink" {
                        0
                    } else {
                        meta.mode() & 0o7777
                    },
                    owner: (meta.uid(), meta.gid()),
                    size: if kind == "dir" { 0 } else { meta.size() },
                    mtime: if kind == "symlink" { 0 } else { meta.mtime() },
                    content,
                    linked_to,
                },
                if with_ctime {
                    meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
                } else {
                    0
                },
            ),
        );
    }
    entries
}

#[track_caller]
fn assert_same_tree(source: &Path, destination: &Path) {
    let a = describe(source, false);
    let b = describe(destination, false);
    for (path, (entry, _)) in &a {
        match b.get(path) {
            None => panic!(
                "missing at the destination: {}",
                String::from_utf8_lossy(path)
            ),
            Some((other, _)) => {
                assert_eq!(entry, other, "{} differs", String::from_utf8_lossy(path))
            }
        }
    }
    for path in b.keys() {
        assert!(
            a.contains_key(path),
            "only at the destination: {}",
            String::from_utf8_lossy(path)
        );
    }
    // rsync's own opinion, with checksums: nothing to do.
    let output = Command::new(real_rsync())
        .args(["-anicH", "--delete", "--numeric-ids"])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", destination.display()))
        .output()
        .expect("rsync -n");
    assert!(output.status.success(), "rsync -n failed: {output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "",
        "rsync -anic --delete sees differences"
    );
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(source)
        .arg(destination)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// The rsync in PATH, for the fake ones to call.
fn real_rsync() -> String {
    let output = Command::new("sh")
        .args(["-c", "command -v rsync"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "rsync is not installed (apt-get install rsync)"
    );
    path
}

/// A directory holding a fake `rsync` (a shell script), to put first in PATH.
fn fake_rsync(test: &Test, script: &str) -> String {
    let bin = test.path("fake-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let path = bin.join("rsync");
    let text = format!(
        "#!/bin/sh\nREAL='{}'\nDIR='{}'\n{script}\n",
        real_rsync(),
        test.dir().display()
    );
    std::fs::write(&path, text).expect("write fake rsync");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn playbook(step: &str) -> String {
    format!(
        "runbook: 1\nname: sync-test\nsteps:\n  - id: copy\n    sync: {step}\n    register: copied\n"
    )
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn a_copy_is_identical_and_a_mirror_pass_follows_every_change() {
    let test = Test::new()
        .playbook(&playbook(
            "{from: src, to: dst, jobs: 4, rsync_args: [-H], verify: true}",
        ))
        .args(["run", "playbook.yaml"]);
    make_tree(&test.path("src"));
    // Change times older than the first pass's start by more than the clock allowance, so
    // that the second pass copies only what is edited below.
    std::thread::sleep(Duration::from_millis(1300));
    let before = describe(&test.path("src"), true);
    test.run().status(0).stderr_has("verified:");
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_eq!(
        before,
        describe(&test.path("src"), true),
        "the copy modified the source"
    );
    // Hard links across shards are links at the destination too.
    let a = std::fs::metadata(test.path("dst/home02/original")).expect("stat");
    let b = std::fs::metadata(test.path("dst/home09/other-home-link")).expect("stat");
    assert_eq!(a.ino(), b.ino());
    // Several shards were cut as the walk went, none with most of the files.
    let shards = pass_shards(&test, 1).expect("the first pass's shards");
    assert!(shards.len() >= 4, "{} shards", shards.len());
    let files: Vec<u64> = shards
        .iter()
        .map(|s| s["files"].as_u64().expect("files"))
        .collect();
    let most = files.iter().max().copied().unwrap_or(0);
    assert!(most * 2 <= files.iter().sum::<u64>(), "{files:?}");

    // Users work: edits, deletions (one at the top level), a rewrite that keeps size and
    // time, a new file and directory, a changed mode and symlink.
    let src = test.path("src");
    write(
        &src.join("home01/notebooks/n001.ipynb"),
        b"edited, and longer than before\n",
    );
    std::fs::remove_file(src.join("home03/.bashrc")).expect("rm");
    std::fs::remove_dir_all(src.join("home07")).expect("rm -r");
    std::fs::remove_file(src.join(".hidden-top")).expect("rm");
    let same_size = common::copies::rewrite_keeping_size_and_time(
        &src.join("home05/notebooks/n010.ipynb"),
        (2, b'X'),
        &src.join("home05/notebooks/n011.ipynb"),
    );
    write(&src.join("home08/new/file"), b"new\n");
    std::fs::set_permissions(
        src.join("home04/private"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::fs::remove_file(src.join("home00/link")).expect("rm");
    std::os::unix::fs::symlink("notebooks/n002.ipynb", src.join("home00/link")).expect("symlink");
    let edited = describe(&src, true);

    // Rsync's quick check alone would miss the rewrite.
    let quick = Command::new(real_rsync())
        .args(["-ani"])
        .arg(format!("{}/home05/notebooks/", src.display()))
        .arg(format!("{}/home05/notebooks/", test.path("dst").display()))
        .output()
        .expect("rsync");
    assert!(!String::from_utf8_lossy(&quick.stdout).contains("n010"));

    let test = test
        .file(
            "playbook.yaml",
            &playbook(
                "{from: src, to: dst, jobs: 4, delete: true, rsync_args: [-H], verify: true}",
            ),
        )
        .args(["run", "playbook.yaml", "--from", "copy"]);
    test.run().status(0).stderr_has("deleted");
    assert_same_tree(&src, &test.path("dst"));
    assert!(!test.path("dst/home07").exists());
    assert!(!test.path("dst/.hidden-top").exists());
    assert_eq!(
        std::fs::read(test.path("dst/home05/notebooks/n010.ipynb")).expect("read"),
        same_size
    );
    // The second pass copied only what changed, not the tree again.
    let second = &notes_of(&test, "pass")[1];
    let entries: usize = pass_shards(&test, 2)
        .expect("the second pass's shards")
        .iter()
        .map(|s| s["entries"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(entries < 50, "the mirror pass listed {entries} entries");
    // A pass that copies while it walks journals the rest of its plan when the walk ends.
    assert_eq!(second["streamed"], true);
    let walked = &notes_of(&test, "walked")[1];
    assert!(walked["forced"].as_u64().expect("forced") >= 1);

    // The source was never touched (its change times would show it).
    assert_eq!(
        edited,
        describe(&src, true),
        "the mirror pass modified the source"
    );
}

#[test]
fn the_source_is_not_modified_by_a_copy() {
    let test = Test::new()
        .playbook(&playbook(
            "{from: src, to: dst, delete: true, rsync_args: [-H]}",
        ))
        .args(["run", "playbook.yaml"]);
    make_tree(&test.path("src"));
    let before = describe(&test.path("src"), true);
    test.run().status(0);
    assert_eq!(before, describe(&test.path("src"), true));
}

#[test]
fn a_pass_with_nothing_changed_copies_nothing() {
    let test = Test::new()
        .playbook(&playbook(
            "{from: src, to: dst, delete: true, rsync_args: [-H]}",
        ))
        .args(["run", "playbook.yaml"]);
    make_tree(&test.path("src"));
    // Change times older than the first pass's start by more than the clock allowance.
    std::thread::sleep(Duration::from_millis(1300));
    test.run().status(0);
    test.run_args(&["run", "playbook.yaml", "--from", "copy"])
        .status(0)
        .stderr_has("nothing to copy");
    let passes = notes_of(&test, "pass");
    assert_eq!(passes.len(), 2);
    assert_eq!(pass_shards(&test, 2), Some(Vec::new()));
    let walked = &notes_of(&test, "walked")[1];
    assert_eq!(walked["deletions"], serde_json::json!([]));
    assert_eq!(walked["forced"], 0);
    assert_same_tree(&test.path("src"), &test.path("dst"));
}

#[test]
fn a_killed_copy_resumes_without_redoing_finished_shards() {
    let test = Test::new().playbook(&playbook(
        "{from: src, to: dst, jobs: 2, delete: true, rsync_args: [-H]}",
    ));
    make_tree(&test.path("src"));
    write(&test.path("src/slow/one-file"), b"copied last\n");
    // A fake rsync that hangs on the shard listing `slow` while the file `block` exists.
    let path = fake_rsync(
        &test,
        r#"case " $* " in
  *" --files-from=- "*)
    list="$(mktemp -p "$DIR")"; cat > "$list"
    if [ -e "$DIR/block" ] && tr '\0' '\n' < "$list" | grep -q '^slow'; then exec sleep 600; fi
    "$REAL" "$@" < "$list"; rc=$?; rm -f "$list"; exit $rc ;;
esac
exec "$REAL" "$@""#,
    );
    write(&test.path("block"), b"");
    let test = test.env("PATH", &path).args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    // Wait until every shard but the blocked one is journaled.
    let deadline = Instant::now() + Duration::from_secs(120);
    let total = loop {
        let ready = std::panic::catch_unwind(|| {
            let shards = pass_shards(&test, 1)?.len();
            (notes_of(&test, "shard").len() + 1 == shards).then_some(shards)
        })
        .ok()
        .flatten();
        if let Some(total) = ready {
            break total;
        }
        assert!(
            Instant::now() < deadline,
            "the copy did not reach the blocked shard"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "runbook ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let finished_before: Vec<u64> = notes_of(&test, "shard")
        .iter()
        .map(|n| n["shard"].as_u64().expect("shard"))
        .collect();
    assert_eq!(finished_before.len(), total - 1);

    std::fs::remove_file(test.path("block")).expect("unblock");
    test.run().status(0).stderr_has("resuming pass 1");
    assert_same_tree(&test.path("src"), &test.path("dst"));
    // One pass, each shard finished exactly once: the rerun did only the blocked one.
    assert_eq!(notes_of(&test, "pass").len(), 1);
    let mut finished: Vec<u64> = notes_of(&test, "shard")
        .iter()
        .map(|n| n["shard"].as_u64().expect("shard"))
        .collect();
    finished.sort_unstable();
    let expected: Vec<u64> = (0..total as u64).collect();
    assert_eq!(finished, expected);
    assert_eq!(notes_of(&test, "pass_done").len(), 1);
}

#[test]
fn verify_lists_the_differences_it_finds() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst, verify: true}"));
    make_tree(&test.path("src"));
    // An rsync that says it copied and copies nothing.
    let path = fake_rsync(
        &test,
        r#"case " $* " in *" --files-from=- "*) cat > /dev/null; exit 0 ;; esac
exec "$REAL" "$@""#,
    );
    test.env("PATH", &path)
        .args(["run", "playbook.yaml"])
        .run()
        .status(1)
        .stderr_has("verify found")
        .stderr_has("missing in the destination: .config/")
        .stderr_has("missing in the destination: home00/");
}

#[test]
fn transient_failures_are_retried_and_vanished_files_are_a_warning() {
    let test = Test::new().playbook(&playbook(
        "{from: src, to: dst, jobs: 4, bwlimit: 64M, rsync_args: [-H]}",
    ));
    make_tree(&test.path("src"));
    // The first rsync fails with 12 (protocol stream); one of the others ends with 24.
    let path = fake_rsync(
        &test,
        r#"echo "$*" >> "$DIR/rsync-args.log"
case " $* " in
  *" --files-from=- "*)
    if mkdir "$DIR/failed-once" 2>/dev/null; then
      cat > /dev/null; echo "rsync: connection unexpectedly closed" >&2; exit 12
    fi
    "$REAL" "$@"; rc=$?
    if [ $rc = 0 ] && mkdir "$DIR/vanished-once" 2>/dev/null; then
      echo 'file has vanished: "/src/x"' >&2; exit 24
    fi
    exit $rc ;;
esac
exec "$REAL" "$@""#,
    );
    let test = test
        .env("PATH", &path)
        .args(["run", "playbook.yaml", "--format", "json"]);
    let output = test
        .run()
        .status(0)
        .stderr_has("exited with code 12")
        .stderr_has("trying again")
        .stderr_has("vanished");
    assert_same_tree(&test.path("src"), &test.path("dst"));
    // bwlimit is the total: each of the 4 workers gets a quarter of 64 MiB/s.
    let args = std::fs::read_to_string(test.path("rsync-args.log")).expect("args log");
    assert!(args.contains("--bwlimit=16384"), "{args}");
    // The last progress event says everything is done.
    let progress: Vec<serde_json::Value> = output
        .events()
        .into_iter()
        .filter(|event| event["event"] == "progress")
        .collect();
    let last = progress.last().expect("a progress event");
    assert_eq!(last["done_bytes"], last["total_bytes"]);
    assert!(last["total_bytes"].as_u64().expect("bytes") > 16 << 20);
    assert!(last["total_files"].as_u64().expect("files") > 700);
    let finished = output
        .events()
        .into_iter()
        .find(|event| event["event"] == "step_finished")
        .expect("step_finished");
    assert_eq!(
        finished["output"]["warnings"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn a_full_destination_fails_the_step_with_rsyncs_message() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst}"));
    make_tree(&test.path("src"));
    let path = fake_rsync(
        &test,
        r#"case " $* " in *" --files-from=- "*)
  cat > /dev/null
  echo 'rsync: [receiver] write failed on "/dst/data-hog/datasets/big.bin": No space left on device (28)' >&2
  echo 'rsync error: error in file IO (code 11) at receiver.c(381) [receiver=3.2.7]' >&2
  exit 11 ;;
esac
exec "$REAL" "$@""#,
    );
    test.env("PATH", &path)
        .args(["run", "playbook.yaml"])
        .run()
        .status(1)
        .stderr_has("full or over its quota")
        .stderr_has("No space left on device (28)")
        .stderr_lacks("trying again");
}

#[test]
fn excluded_entries_are_neither_copied_nor_deleted() {
    let test = Test::new().playbook(&playbook(
        "{from: src, to: dst, delete: true, exclude: ['*.tmp', '/home01/', 'cache/***']}",
    ));
    let src = test.path("src");
    write(&src.join("keep/a.txt"), b"a\n");
    write(&src.join("keep/b.tmp"), b"b\n");
    write(&src.join("home01/x"), b"x\n");
    write(&src.join("keep/cache/deep/c"), b"c\n");
    write(
        &test.path("dst/old.tmp"),
        b"kept: excluded at the destination too\n",
    );
    write(&test.path("dst/gone"), b"deleted: not in the source\n");
    let test = test.args(["run", "playbook.yaml"]);
    test.run().status(0);
    assert!(test.path("dst/keep/a.txt").exists());
    assert!(!test.path("dst/keep/b.tmp").exists());
    assert!(!test.path("dst/home01").exists());
    assert!(!test.path("dst/keep/cache").exists());
    assert!(test.path("dst/old.tmp").exists());
    assert!(!test.path("dst/gone").exists());
}

#[test]
fn without_delete_nothing_is_deleted_at_the_destination() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst, verify: true}"));
    write(&test.path("src/a/file"), b"new\n");
    write(&test.path("dst/extra"), b"mine\n");
    write(&test.path("dst/a/extra"), b"mine too\n");
    let test = test.args(["run", "playbook.yaml"]);
    test.run().status(0);
    assert!(test.path("dst/extra").exists());
    assert!(test.path("dst/a/extra").exists());
    assert!(test.path("dst/a/file").exists());
}

/// `delete` as a template of a bool param: a mirror or a plain copy, chosen when the run
/// starts; `plan` says what the template rendered to.
#[test]
fn a_templated_delete_follows_a_bool_param() {
    let text = playbook("{from: src, to: dst, delete: \"{{ mirror }}\", verify: \"{{ mirror }}\"}")
        .replace("steps:", "params:\n  mirror: {type: bool}\nsteps:");
    for mirror in [true, false] {
        let test = Test::new().playbook(&text);
        write(&test.path("src/a/file"), b"new\n");
        write(&test.path("dst/extra"), b"mine\n");
        write(&test.path("dst/a/extra"), b"mine too\n");
        let var = format!("mirror={mirror}");
        let plan = test
            .run_args(&["plan", "playbook.yaml", "--var", &var])
            .status(0);
        assert!(
            plan.stdout
                .contains(&format!("`delete: {{{{ mirror }}}}` is {mirror}")),
            "{}",
            plan.stdout
        );
        assert!(test.path("dst/extra").exists());
        test.run_args(&["run", "playbook.yaml", "--var", &var])
            .status(0);
        assert_eq!(test.path("dst/extra").exists(), !mirror, "mirror={mirror}");
        assert_eq!(
            test.path("dst/a/extra").exists(),
            !mirror,
            "mirror={mirror}"
        );
        assert_eq!(
            std::fs::read(test.path("dst/a/file")).expect("copied"),
            b"new\n"
        );
    }
}

/// A templated option that renders to something it cannot be is invalid input (exit 2)
/// that names the step and the key, found before anything is copied or deleted.
#[test]
fn a_templated_option_that_renders_badly_is_invalid_input_and_changes_nothing() {
    for (step, says) in [
        (
            "{from: src, to: dst, delete: \"{{ name }}\"}",
            "step `copy`: `delete: {{ name }}` renders to `yes-please`, which is not true or false",
        ),
        (
            "{from: src, to: dst, verify: \"{{ name }}\"}",
            "step `copy`: `verify: {{ name }}` renders to `yes-please`, which is not true or false",
        ),
        (
            "{from: src, to: dst, bwlimit: \"{{ name }}\"}",
            "step `copy`: `bwlimit: {{ name }}` renders to `yes-please`, which is not a rate",
        ),
    ] {
        let text =
            playbook(step).replace("steps:", "params:\n  name: {default: yes-please}\nsteps:");
        let test = Test::new().playbook(&text);
        write(&test.path("src/a"), b"a\n");
        write(&test.path("dst/extra"), b"mine\n");
        let output = test
            .run_args(&["run", "playbook.yaml"])
            .status(2)
            .stderr_has(says)
            .stderr_has("invalid input (exit 2)");
        assert!(test.path("dst/extra").exists(), "{}", output.stderr);
        assert!(!test.path("dst/a").exists(), "{}", output.stderr);
    }
}

/// `jobs` and `bwlimit` from params: each worker gets its share of the rendered total.
#[test]
fn templated_jobs_and_bwlimit_are_rendered_when_the_step_runs() {
    let text = playbook("{from: src, to: dst, jobs: \"{{ workers }}\", bwlimit: \"{{ rate }}\"}")
        .replace(
            "steps:",
            "params:\n  workers: {type: int}\n  rate: {default: 64M}\nsteps:",
        );
    let test = Test::new().playbook(&text);
    for home in 0..8 {
        write(&test.path(&format!("src/home{home}/file")), b"data\n");
    }
    let path = fake_rsync(
        &test,
        "echo \"$@\" >> \"$DIR/rsync-args.log\"\nexec \"$REAL\" \"$@\"",
    );
    let plan = test
        .run_args(&["plan", "playbook.yaml", "--var", "workers=2"])
        .status(0);
    assert!(
        plan.stdout.contains("with 2 rsync workers"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("`bwlimit: {{ rate }}` is 64M"),
        "{}",
        plan.stdout
    );
    let test = test.env("PATH", &path);
    test.run_args(&["run", "playbook.yaml", "--var", "workers=2"])
        .status(0);
    let args = std::fs::read_to_string(test.path("rsync-args.log")).expect("rsync ran");
    // 64 MiB/s shared by 2 workers.
    assert!(args.contains("--bwlimit=32768"), "{args}");
}

#[test]
fn plan_walks_the_trees_and_changes_nothing() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst, jobs: 3}"));
    make_tree(&test.path("src"));
    let before = describe(&test.path("src"), true);
    let test = test.args(["plan", "playbook.yaml", "--format", "json"]);
    let output = test.run().status(0);
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).expect("plan JSON");
    let summary = plan["steps"][0]["summary"]
        .as_str()
        .expect("summary")
        .to_string();
    assert!(
        summary.contains("copy ") && summary.contains("shards with 3 rsync workers"),
        "{summary}"
    );
    assert!(!test.path("dst").exists(), "plan created the destination");
    assert!(!test.path(".runbook").exists() || notes(&test).is_empty());
    assert_eq!(before, describe(&test.path("src"), true));
}

#[test]
fn a_plan_lists_what_a_mirror_would_delete() {
    let test = Test::new().playbook(&playbook(
        "{from: src, to: dst, delete: true, rsync_args: [-H]}",
    ));
    write(&test.path("src/kept"), b"k\n");
    write(&test.path("dst/kept"), b"k\n");
    write(&test.path("dst/removed-home/file"), b"r\n");
    let test = test.args(["plan", "playbook.yaml", "--format", "json"]);
    let output = test.run().status(0);
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).expect("plan JSON");
    let diff = plan["steps"][0]["diff"].as_str().expect("diff");
    assert!(diff.contains("- removed-home"), "{diff}");
    assert!(test.path("dst/removed-home/file").exists());
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn static_mistakes_are_caught_when_the_playbook_loads() {
    for (step, says) in [
        ("{from: src, to: dst, jobs: 0}", "`jobs` must be at least 1"),
        (
            "{from: src, to: dst, jobs: many}",
            "must be a whole number of at least 1 or `auto`, not `many`",
        ),
        (
            "{from: src, to: dst, max_jobs: 0}",
            "`max_jobs` must be at least 1",
        ),
        (
            "{from: src, to: dst, max_jobs: 2}",
            "`max_jobs` is 2, below the 4 workers `jobs: auto` starts with",
        ),
        (
            "{from: src, to: dst, jobs: 8, max_jobs: 4}",
            "`max_jobs` is 4, below `jobs` (8)",
        ),
        (
            "{from: src, to: dst, rsync_args: [--delete]}",
            "`--delete` is not allowed",
        ),
        (
            "{from: src, to: dst, rsync_args: [-avr]}",
            "not allowed in `rsync_args`",
        ),
        ("{from: src, to: dst, bwlimit: fast}", "is not a rate"),
        ("{from: src, to: dst, exclude: ['[oops']}", "unclosed"),
        ("{from: src, to: dst, jbos: 2}", "jbos"),
        ("{from: src}", "to"),
        ("{from: src, to: src/inside}", "is inside the source"),
        ("{from: src, to: ./src/}", "the same directory"),
        ("{from: src/sub, to: src}", "is inside the destination"),
    ] {
        let test = Test::new()
            .playbook(&playbook(step))
            .args(["run", "playbook.yaml"]);
        write(&test.path("src/a"), b"a\n");
        test.run()
            .status(2)
            .stderr_has(says)
            .stderr_has("playbook.yaml:5");
        assert!(!test.path("dst").exists());
    }
}

/// Mistakes known only once templates are rendered or the directories are looked at are
/// invalid input (exit 2), found before anything is copied, and not retried.
#[test]
fn bad_paths_and_values_fail_before_anything_is_copied() {
    for (step, setup, says) in [
        (
            "{from: missing, to: dst}",
            "",
            "the source missing does not exist",
        ),
        ("{from: afile, to: dst}", "afile", "is not a directory"),
        // Templates: literal paths are compared when the playbook loads.
        (
            "{from: src, to: \"{{ 'src' }}/inside\"}",
            "",
            "is inside the source",
        ),
        ("{from: src, to: \"{{ 'src' }}\"}", "", "the same directory"),
        (
            "{from: src/sub, to: \"{{ 'src' }}\"}",
            "",
            "is inside the destination",
        ),
        ("{from: src, to: no/such/parent}", "", "nor does its parent"),
        (
            "{from: src, to: dst, jobs: '{{ n }}'}",
            "",
            "step `copy`: `jobs: {{ n }}` renders to `0`, which is not a whole number of at least 1 or `auto`",
        ),
        (
            "{from: src, to: dst, max_jobs: '{{ n + 2 }}'}",
            "",
            "step `copy`: `max_jobs` is 2, below the 4 workers `jobs: auto` starts with",
        ),
    ] {
        let text =
            playbook(step).replace("steps:", "params:\n  n: {type: int, default: 0}\nsteps:");
        let test = Test::new().playbook(&text).args(["run", "playbook.yaml"]);
        write(&test.path("src/sub/a"), b"a\n");
        if !setup.is_empty() {
            write(&test.path(setup), b"a file\n");
        }
        test.run()
            .status(2)
            .stderr_has("invalid input: ")
            .stderr_has(says)
            .stderr_has("invalid input (exit 2)");
        assert!(!test.path("dst").exists());
        assert!(!test.path("src/inside").exists());
    }
}

/// The same invalid input would fail every try the same way: `retries` does not apply, and
/// the step is journaled as failed (not done), so `run` again checks it again.
#[test]
fn invalid_input_is_not_retried_and_is_checked_again_on_the_next_run() {
    let text = playbook("{from: src, to: dst}")
        .replace("    sync:", "    retries: 3\n    delay: 5s\n    sync:");
    let test = Test::new().playbook(&text).args(["run", "playbook.yaml"]);
    let started = std::time::Instant::now();
    test.run()
        .status(2)
        .stderr_has("`from`: the source src does not exist")
        .stderr_lacks("trying again");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let attempts = test
        .journal()
        .iter()
        .filter(|event| event["event"] == "step_started")
        .count();
    assert_eq!(attempts, 1);
    assert!(!test.path("dst").exists());
    write(&test.path("src/a"), b"a\n");
    test.run().status(0);
    assert_eq!(std::fs::read(test.path("dst/a")).expect("copied"), b"a\n");
}

#[test]
fn a_missing_or_old_rsync_is_invalid_input() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst}"));
    write(&test.path("src/a"), b"a\n");
    let empty = test.path("no-bin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let test = test
        .env("PATH", &empty.display().to_string())
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(2)
        .stderr_has("invalid input: rsync is not installed");
    assert!(!test.path("dst").exists());
    let test = Test::new().playbook(&playbook("{from: src, to: dst}"));
    write(&test.path("src/a"), b"a\n");
    let path = fake_rsync(&test, "echo 'rsync  version 3.0.9  protocol version 30'");
    let test = test.env("PATH", &path).args(["run", "playbook.yaml"]);
    test.run().status(2).stderr_has("rsync 3.0.9 is too old");
    assert!(!test.path("dst").exists());
}

/// `run playbook.yaml` of a copy (2 workers) whose shard listing `slow` waits while the file
/// `block` exists in the test's directory (the shared fake rsync of `common::copies`).
fn held_copy() -> Test {
    let test = Test::new().playbook(&playbook("{from: src, to: dst, jobs: 2, rsync_args: [-H]}"));
    make_tree(&test.path("src"));
    write(&test.path("src/slow/one-file"), b"copied last\n");
    let path = common::copies::fake_rsync(test.dir());
    test.env("PATH", &path).args(["run", "playbook.yaml"])
}

/// The `live.json` of the only run in the test's state directory, while there is one.
fn live_file(test: &Test) -> Option<std::path::PathBuf> {
    std::fs::read_dir(test.path(".runbook/runs"))
        .ok()
        .and_then(|mut runs| runs.next())
        .and_then(Result::ok)
        .map(|run| run.path().join("live.json"))
        .filter(|file| file.exists())
}

#[test]
fn on_a_terminal_the_copy_is_a_display_redrawn_in_place_and_in_a_log_a_line_every_ten_seconds() {
    let test = held_copy();
    let block = test.path("block");
    let unblock_after = |seconds: u64| {
        write(&block, b"");
        let block = block.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            let _ = std::fs::remove_file(block);
        })
    };

    let unblocked = unblock_after(7);
    let screen = test.run_in_terminal("");
    unblocked.join().expect("unblock");
    assert_eq!(screen.code, 0, "{}", screen.stderr);
    // indicatif's bar with rate and ETA, a line for the busy worker, redrawn in place
    // (cursor moves and line clears), and no scrolling 10 s lines or 2 s counts.
    assert!(screen.stderr.contains("[copy] "), "{}", screen.stderr);
    assert!(screen.stderr.contains("ETA "), "{}", screen.stderr);
    assert!(screen.stderr.contains("worker "), "{}", screen.stderr);
    assert!(
        screen.stderr.contains("\x1b[2K"),
        "not redrawn: {:?}",
        screen.stderr
    );
    assert!(!screen.stderr.contains("[#"), "{}", screen.stderr);
    assert!(!screen.stderr.contains(" bytes"), "{}", screen.stderr);
    assert_same_tree(&test.path("src"), &test.path("dst"));

    // In a log (no terminal), the same copy prints its summary line every 10 s and no
    // worker lines, and nothing is redrawn.
    std::fs::remove_dir_all(test.path("dst")).expect("rm dst");
    let unblocked = unblock_after(12);
    let log = test.run_args(&["run", "playbook.yaml", "--restart"]);
    unblocked.join().expect("unblock");
    let log = log.status(0);
    assert!(log.stderr.contains("[copy] ["), "{}", log.stderr);
    assert!(log.stderr.contains("% "), "{}", log.stderr);
    assert!(!log.stderr.contains("worker 1:"), "{}", log.stderr);
    assert!(!log.stderr.contains("\x1b["), "{:?}", log.stderr);
}

#[test]
fn status_from_another_terminal_shows_how_far_a_copy_in_the_runbook_process_is() {
    let test = held_copy();
    write(&test.path("block"), b"");
    let mut child = test.spawn();
    let live = || live_file(&test);
    common::wait_until(
        "the copy reports its progress",
        Duration::from_secs(60),
        || live().is_some(),
    );
    let status = test.run_args(&["status"]).status(0);
    assert!(
        status.stdout.contains("▶ copy") && status.stdout.contains("    copying: "),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains(" files, 2 workers, as of "),
        "{}",
        status.stdout
    );
    let json = test.run_args(&["status", "--format", "json"]).status(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json["live"]["step"], "copy", "{json:#}");
    assert_eq!(json["live"]["workers"], 2, "{json:#}");
    assert!(json["live"]["total_bytes"].as_u64() > Some(0), "{json:#}");

    std::fs::remove_file(test.path("block")).expect("unblock");
    assert!(child.wait().expect("wait").success());
    assert!(live().is_none(), "live.json is removed when the step ends");
    let done = test.run_args(&["status", "--format", "json"]).status(0);
    let done: serde_json::Value = serde_json::from_str(&done.stdout).expect("JSON");
    assert_eq!(done["live"], serde_json::Value::Null);
}

#[test]
fn status_shows_each_copy_as_a_grid_of_shards_with_the_failed_ones_errors() {
    let test = Test::new().playbook(&playbook("{from: src, to: dst, jobs: 2, rsync_args: [-H]}"));
    make_tree(&test.path("src"));
    write(&test.path("src/bad/one-file"), b"never copied\n");
    // A fake rsync that fails on the shard listing `bad` every time.
    let path = fake_rsync(
        &test,
        r#"case " $* " in
  *" --files-from=- "*)
    list="$(mktemp -p "$DIR")"; cat > "$list"
    if tr '\0' '\n' < "$list" | grep -q '^bad'; then
      rm -f "$list"; echo "rsync: send_files failed to open \"bad/one-file\": Permission denied (13)" >&2; exit 23
    fi
    "$REAL" "$@" < "$list"; rc=$?; rm -f "$list"; exit $rc ;;
esac
exec "$REAL" "$@""#,
    );
    // Shards cut as the walk goes depend on the walking threads' timing: this snapshot of
    // the grid wants the planner's shards, which are the same every time.
    let test = test
        .env("PATH", &path)
        .env("RUNBOOK_SYNC_WALK_FIRST", "1")
        .args(["run", "playbook.yaml"]);
    test.run().status(1);

    let status = test.run_args(&["status"]).status(0);
    let grid: String = status
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("  copy: pass"))
        .map(|line| format!("{line}\n"))
        .collect();
    insta::assert_snapshot!("status_grid_text", grid);

    let json = test.run_args(&["status", "--format", "json"]).status(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    insta::assert_json_snapshot!("status_grid_json", json["copies"]);
}

#[test]
fn status_watch_redraws_on_a_terminal_until_the_run_ends_and_prints_once_elsewhere() {
    let test = held_copy();
    write(&test.path("block"), b"");
    let mut child = test.spawn();
    common::wait_until(
        "the copy reports its progress",
        Duration::from_secs(60),
        || live_file(&test).is_some(),
    );
    // Without a terminal: once, at once.
    let once = test.run_args(&["status", "--watch"]).status(0);
    assert!(
        once.stdout.contains("▶ copy") && !once.stdout.contains("\x1b[2J"),
        "{}",
        once.stdout
    );

    let block = test.path("block");
    let unblock = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        std::fs::remove_file(block).expect("unblock");
    });
    let watched = test.run_args_in_terminal(&["status", "--watch"], "");
    unblock.join().expect("unblock");
    assert!(child.wait().expect("wait").success());
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    let redraws = watched.stderr.matches("\x1b[2J").count();
    assert!(redraws >= 2, "{redraws} redraws: {}", watched.stderr);
    assert!(
        watched.stderr.contains("    copying: "),
        "{}",
        watched.stderr
    );
    assert!(
        watched.stderr.trim_end().ends_with("changed") || watched.stderr.contains(": done"),
        "the last redraw shows the run done: {}",
        watched.stderr
    );
}

// ---------------------------------------------------------------------------------------
// jobs: auto

/// A copy of 40 homes (several shards more than 4) whose every shard's rsync waits while
/// `hold` exists, marking itself in `held/PID` meanwhile, unless it takes a ticket (removes a
/// file of `tickets/`); `jobs: auto` windows last 200 ms. Run in JSON.
fn copy_held_at_every_shard(step: &str) -> Test {
    let test = Test::new().playbook(&playbook(step));
    for home in 0..40 {
        for file in 0..64 {
            write(
                &test.path(&format!("src/home{home:02}/f{file:02}")),
                format!("{home} {file}\n").as_bytes(),
            );
        }
    }
    std::fs::create_dir_all(test.path("held")).expect("mkdir");
    std::fs::create_dir_all(test.path("tickets")).expect("mkdir");
    // Shards are the rsyncs that write in place (`--inplace`: everything is new at the
    // destination); the directory tasks are not held. (Not `-r`: shards cut while the walk
    // goes on list every path instead.)
    let path = fake_rsync(
        &test,
        r#"case " $* " in
  *" --inplace "*)
    touch "$DIR/held/$$"
    while [ -e "$DIR/hold" ]; do
      for ticket in "$DIR"/tickets/*; do
        if rm "$ticket" 2>/dev/null; then break 2; fi
      done
      sleep 0.05
    done
    rm -f "$DIR/held/$$" ;;
esac
exec "$REAL" "$@""#,
    );
    test.env("PATH", &path)
        .env("RUNBOOK_SYNC_WINDOW_MS", "200")
        .args(["run", "playbook.yaml", "--format", "json"])
}

/// The JSON events the spawned run printed so far (a line being written is left out).
fn spawned_events(test: &Test) -> Vec<serde_json::Value> {
    std::fs::read_to_string(test.path("spawned.stdout"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The worker counts of the spawned run's progress events.
fn progress_workers(test: &Test) -> Vec<u64> {
    spawned_events(test)
        .iter()
        .filter(|event| event["event"] == "progress")
        .filter_map(|event| event["workers"].as_u64())
        .collect()
}

/// Held in its first shards (so that the throughput of its windows is nothing), the copy
/// changes its worker count (the first window raises it, or lowers it where the CPU is
/// saturated, and a raise that brings nothing is undone); each change is journaled with
/// its reason and said on a line; the JSON progress events carry the count; workers lowered
/// in the middle of a shard finish it, and every shard is copied once.
#[test]
fn jobs_auto_changes_the_worker_count_and_journals_why() {
    let test = copy_held_at_every_shard("{from: src, to: dst}");
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    assert!(
        plan.stdout
            .contains(" shards with 4 to 32 rsync workers (jobs: auto)"),
        "{}",
        plan.stdout
    );
    write(&test.path("hold"), b"");
    let mut child = test.spawn();
    common::wait_until(
        "a change of the worker count and a progress event",
        Duration::from_secs(60),
        || {
            // A journal line being written does not parse yet.
            let changed = std::panic::catch_unwind(|| !notes_of(&test, "workers").is_empty());
            changed.unwrap_or(false) && !progress_workers(&test).is_empty()
        },
    );
    std::fs::remove_file(test.path("hold")).expect("release");
    assert!(child.wait().expect("wait").success());

    let changes = notes_of(&test, "workers");
    assert!(!changes.is_empty());
    assert_eq!(changes[0]["from"], 4, "{changes:?}");
    for change in &changes {
        let to = change["to"].as_u64().expect("to");
        assert!((1..=32).contains(&to), "{change}");
        assert!(change["why"].as_str().is_some_and(|why| !why.is_empty()));
        assert_eq!(change["pass"], 1);
    }
    let stdout = std::fs::read_to_string(test.path("spawned.stdout")).expect("stdout");
    let stderr = std::fs::read_to_string(test.path("spawned.stderr")).expect("stderr");
    assert!(stderr.contains("jobs: auto: 4 to "), "{stderr}");
    let workers = progress_workers(&test);
    assert!(!workers.is_empty(), "{stdout}");
    assert!(workers.iter().all(|count| (1..=32).contains(count)));
    // Every shard copied once, none failed, whatever the count did.
    let planned = pass_shards(&test, 1).map(|shards| shards.len());
    assert!(planned > Some(4), "{planned:?}");
    assert_eq!(Some(notes_of(&test, "shard").len()), planned);
    assert!(notes_of(&test, "shard_failed").is_empty());
    assert_same_tree(&test.path("src"), &test.path("dst"));
}

/// A fixed `jobs: 2` runs two rsyncs, says so, and never changes, however many windows go by.
#[test]
fn a_fixed_jobs_count_never_changes() {
    let test = copy_held_at_every_shard("{from: src, to: dst, jobs: 2}");
    write(&test.path("hold"), b"");
    let mut child = test.spawn();
    common::wait_until(
        "two progress events (over ten windows)",
        Duration::from_secs(60),
        || progress_workers(&test).len() >= 2,
    );
    let held = std::fs::read_dir(test.path("held")).expect("held").count();
    std::fs::remove_file(test.path("hold")).expect("release");
    assert!(child.wait().expect("wait").success());
    assert_eq!(held, 2);
    assert!(notes_of(&test, "workers").is_empty());
    let workers = progress_workers(&test);
    assert!(workers.iter().all(|count| *count == 2), "{workers:?}");
    let planned = pass_shards(&test, 1).map(|shards| shards.len());
    assert_eq!(Some(notes_of(&test, "shard").len()), planned);
    assert_same_tree(&test.path("src"), &test.path("dst"));
}

/// `jobs: auto` keeps resume as it was: killed (-9) after it changed its count and after three
/// shards finished, the rerun resumes the pass and copies only the shards not journaled.
#[test]
fn a_killed_auto_copy_resumes_without_redoing_finished_shards() {
    let test = copy_held_at_every_shard("{from: src, to: dst}");
    write(&test.path("hold"), b"");
    let mut child = test.spawn();
    let journaled =
        |kind: &str| std::panic::catch_unwind(|| notes_of(&test, kind).len()).unwrap_or(0);
    common::wait_until(
        "a change of the worker count",
        Duration::from_secs(60),
        || journaled("workers") > 0,
    );
    for ticket in 0..3 {
        write(&test.path(&format!("tickets/{ticket}")), b"");
    }
    common::wait_until("three shards journaled", Duration::from_secs(60), || {
        journaled("shard") == 3
    });
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    // The held rsyncs outlive runbook (kill -9 spares its children): end them too.
    for held in std::fs::read_dir(test.path("held"))
        .expect("held")
        .flatten()
    {
        let pid = held
            .file_name()
            .to_string_lossy()
            .parse::<i32>()
            .expect("a pid");
        // SAFETY: kill has no memory effects; a pid that is gone is an error we ignore.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let before: Vec<u64> = notes_of(&test, "shard")
        .iter()
        .map(|n| n["shard"].as_u64().expect("shard"))
        .collect();
    assert_eq!(before.len(), 3);

    std::fs::remove_file(test.path("hold")).expect("release");
    let rerun = test.run().status(0).stderr_has("resuming pass 1");
    let total = pass_shards(&test, 1).map_or(0, |shards| shards.len());
    let output = rerun
        .events()
        .into_iter()
        .find(|event| event["event"] == "step_finished")
        .expect("step_finished");
    assert_eq!(output["output"]["shards_copied"], total - 3, "{output}");
    assert_eq!(notes_of(&test, "pass").len(), 1);
    let mut finished: Vec<u64> = notes_of(&test, "shard")
        .iter()
        .map(|n| n["shard"].as_u64().expect("shard"))
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, (0..total as u64).collect::<Vec<_>>());
    assert_same_tree(&test.path("src"), &test.path("dst"));
}

/// A pass copies while it walks (#17): killed (-9) with shards finished and its walk still
/// going, the rerun walks again and copies none of the finished shards' entries again.
#[test]
fn a_pass_killed_while_it_walks_and_copies_does_not_redo_finished_shards() {
    let test = Test::new()
        .playbook(&playbook("{from: src, to: dst, jobs: 2}"))
        .args(["run", "playbook.yaml"]);
    // A first pass, finished: the homes come after it, so that the change-time rule would
    // copy them again (their change times are newer than its start) unless the rerun knows
    // that the killed pass copied them.
    write(&test.path("src/first"), b"first\n");
    std::thread::sleep(Duration::from_millis(1300));
    test.run().status(0);
    for home in 0..40 {
        for file in 0..64 {
            write(
                &test.path(&format!("src/home{home:02}/f{file:02}")),
                format!("{home} {file}\n").as_bytes(),
            );
        }
    }
    // Change times older than the pass's start by more than the clock allowance.
    std::thread::sleep(Duration::from_millis(1300));
    // Each directory takes 3 s to read: with 16 walking threads the walk of 41 directories
    // takes about 12 s, and the shards of the first homes (read after 6 s) are copied long
    // before it ends.
    let slow = test.env("RUNBOOK_SYNC_WALK_DELAY_MS", "3000").args([
        "run",
        "playbook.yaml",
        "--from",
        "copy",
    ]);
    let mut child = slow.spawn();
    let journaled = |kind: &str| {
        std::panic::catch_unwind(|| {
            let notes = notes_of(&slow, kind);
            notes.iter().filter(|note| note["pass"] == 2).count()
        })
        .unwrap_or(0)
    };
    common::wait_until("two finished shards", Duration::from_secs(60), || {
        journaled("shard") >= 2
    });
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert_eq!(journaled("walked"), 0, "the walk ended before the kill");
    let of_killed_pass = |kind: &str| -> Vec<serde_json::Value> {
        notes_of(&slow, kind)
            .into_iter()
            .filter(|note| note["pass"] == 2)
            .collect()
    };
    let done = of_killed_pass("shard");
    let planned = of_killed_pass("planned");
    let finished_entries: Vec<String> = done
        .iter()
        .flat_map(|note| {
            let index = note["shard"].as_u64().expect("shard");
            planned
                .iter()
                .find(|plan| plan["shard"].as_u64() == Some(index))
                .and_then(|plan| plan["record"]["entries"].as_array().cloned())
                .unwrap_or_default()
        })
        .filter_map(|entry| entry.as_str().map(str::to_string))
        .collect();
    assert!(
        finished_entries
            .iter()
            .any(|entry| entry.starts_with("home")),
        "{finished_entries:?}"
    );

    let test = slow.env("RUNBOOK_SYNC_WALK_DELAY_MS", "0");
    test.run()
        .status(0)
        .stderr_has("the last pass stopped during its walk");
    assert_same_tree(&test.path("src"), &test.path("dst"));
    // The third pass's shards hold nothing the killed one finished.
    let third = pass_shards(&test, 3).expect("the third pass's shards");
    let again: Vec<&str> = third
        .iter()
        .flat_map(|shard| shard["entries"].as_array().into_iter().flatten())
        .filter_map(serde_json::Value::as_str)
        .filter(|entry| {
            finished_entries
                .iter()
                .any(|done| entry == done || entry.starts_with(&format!("{done}/")))
        })
        .collect();
    assert!(again.is_empty(), "copied again: {again:?}");
    assert!(!third.is_empty(), "the rest of the tree was copied");
}
