//! What the tests of copies in pods and Jobs share: a source tree, a fake rsync that can
//! hold or fail a shard, and the checks of a finished copy.

use super::Test;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Writes a file, creating its directories.
pub fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// Changes the byte at `at` of `file` to `byte` and gives it the modification time of
/// `like`: a change that size and time do not show (as `cp -p` or `tar x` leave), which only
/// the change-time rule finds. Returns the new content.
pub fn rewrite_keeping_size_and_time(file: &Path, (at, byte): (usize, u8), like: &Path) -> Vec<u8> {
    let mut content = std::fs::read(file).expect("read");
    content[at] = byte;
    std::fs::write(file, &content).expect("write");
    let status = Command::new("touch")
        .arg("-r")
        .arg(like)
        .arg(file)
        .status()
        .expect("touch -r");
    assert!(status.success());
    content
}

/// Home directories (over a thousand entries, so that a plan has several shards): dotfiles,
/// a symlink, an empty directory, `data-hog/big.bin` of `big_mib` MiB, and `slow/`, the
/// shard the fake rsync can hold.
pub fn make_homes(root: &Path, big_mib: u32) {
    for home in 0..12 {
        for file in 0..100 {
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
    let big: Vec<u8> = (0..big_mib << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&root.join("data-hog/big.bin"), &big);
    std::os::unix::fs::symlink("notebooks/n000.ipynb", root.join("home00/link")).expect("symlink");
    std::fs::create_dir_all(root.join("home01/empty")).expect("mkdir");
    write(&root.join("slow/one-file"), b"copied last\n");
}

/// The rsync in PATH.
pub fn real_rsync() -> String {
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

/// A fake `rsync` in `dir/fake-bin`: a shard listing `slow` waits while `dir/block` exists;
/// a shard listing `data-hog` fails (exit 23) once if `dir/fail-once` exists. Returns a PATH
/// with it first.
pub fn fake_rsync(dir: &Path) -> String {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let script = format!(
        r#"#!/bin/sh
REAL='{}'
DIR='{}'
case " $* " in
  *" --files-from=- "*)
    list="$(mktemp -p "$DIR")"; cat > "$list"
    if [ -e "$DIR/block" ] && tr '\0' '\n' < "$list" | grep -q '^slow'; then
      while [ -e "$DIR/block" ]; do sleep 0.1; done
    fi
    if [ -e "$DIR/fail-once" ] && tr '\0' '\n' < "$list" | grep -q '^data-hog'; then
      rm -f "$DIR/fail-once" "$list"; echo "rsync: simulated failure" >&2; exit 23
    fi
    "$REAL" "$@" < "$list"; rc=$?; rm -f "$list"; exit $rc ;;
esac
exec "$REAL" "$@"
"#,
        real_rsync(),
        dir.display()
    );
    let path = bin.join("rsync");
    std::fs::write(&path, script).expect("write fake rsync");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The notes of every step in the journal, in order.
pub fn notes(test: &Test) -> Vec<serde_json::Value> {
    test.journal()
        .into_iter()
        .filter(|event| event["event"] == "step_note")
        .map(|event| event["data"].clone())
        .collect()
}

/// The `sync` notes of one kind (`pass`, `shard`, `agent`, `job`, ...).
pub fn notes_of(test: &Test, kind: &str) -> Vec<serde_json::Value> {
    notes(test)
        .into_iter()
        .filter(|note| note["sync"] == kind)
        .collect()
}

/// The shards of pass `pass` (1 for the first) in the plan's order: those of its `pass` note,
/// or for a pass that copies while it walks, of its `planned` notes; `None` until its plan is
/// whole (journaled, and for such a pass, its walk's end too).
pub fn pass_shards(test: &Test, pass: u64) -> Option<Vec<serde_json::Value>> {
    let notes = notes(test);
    let of_pass = |kind: &'static str| {
        notes
            .iter()
            .filter(move |note| note["sync"] == kind && note["pass"] == pass)
    };
    let record = of_pass("pass").next_back()?;
    if record["streamed"] != true {
        return record["shards"].as_array().cloned();
    }
    of_pass("walked").next()?;
    Some(
        of_pass("planned")
            .map(|note| note["record"].clone())
            .collect(),
    )
}

/// The shards of the first pass and how many are journaled as finished; `None` until the
/// pass's plan is whole (a journal line being written does not parse yet).
pub fn shards_planned_and_done(test: &Test) -> Option<(usize, usize)> {
    std::panic::catch_unwind(|| {
        let shards = pass_shards(test, 1)?.len();
        Some((shards, notes_of(test, "shard").len()))
    })
    .ok()
    .flatten()
}

/// The trees are the same: `rsync -ain --delete` lists nothing and `diff -r` finds nothing.
pub fn assert_same_tree(source: &Path, destination: &Path) {
    let itemized = Command::new("rsync")
        .arg("-ain")
        .arg("--delete")
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", destination.display()))
        .output()
        .expect("rsync -ain");
    assert!(
        itemized.stdout.is_empty(),
        "rsync -ain --delete lists differences:\n{}",
        String::from_utf8_lossy(&itemized.stdout)
    );
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(source)
        .arg(destination)
        .output()
        .expect("diff -r");
    assert!(
        diff.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// Every entry of a tree: type, mode, size, mtime, and content or link target.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let what = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {:o}", meta.mode())
            } else {
                let content = std::fs::read(&path).expect("read");
                format!(
                    "file {:o} {} {} {:x}",
                    meta.mode(),
                    meta.len(),
                    meta.mtime(),
                    content
                        .iter()
                        .fold(0u64, |hash, byte| hash.rotate_left(5) ^ u64::from(*byte))
                )
            };
            entries.insert(relative, what);
        }
    }
    entries
}
