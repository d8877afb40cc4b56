//! End-to-end tests of `trust_destination`: the manifest a `sync` pass leaves beside the
//! destination, a later pass that takes the destination's listings from it, and what that
//! trade-off means when something else writes to the destination.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Test;

fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// A small tree with what a copy can get wrong: dotfiles, odd names, a symlink, hard links.
fn make_tree(root: &Path) {
    for home in 0..4 {
        for file in 0..10 {
            write(
                &root.join(format!("home{home}/notes/n{file}.txt")),
                format!("home {home} file {file}\n").as_bytes(),
            );
        }
        write(&root.join(format!("home{home}/.bashrc")), b"export A=1\n");
    }
    write(
        &root.join(OsStr::from_bytes(b"odd/new\nline \xff")),
        b"odd\n",
    );
    std::os::unix::fs::symlink("notes/n0.txt", root.join("home0/link")).expect("symlink");
    std::fs::hard_link(root.join("home1/.bashrc"), root.join("home2/linked")).expect("link");
}

/// rsync's own opinion, with checksums: nothing differs.
#[track_caller]
fn assert_same_tree(source: &Path, destination: &Path) {
    let differences = rsync_differences(source, destination);
    assert_eq!(differences, "", "rsync -anicH --delete sees differences");
}

fn rsync_differences(source: &Path, destination: &Path) -> String {
    let output = Command::new("rsync")
        .args(["-anicH", "--delete", "--numeric-ids"])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", destination.display()))
        .output()
        .expect("rsync (apt-get install rsync)");
    assert!(output.status.success(), "rsync -n failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn playbook(options: &str) -> String {
    format!(
        "runbook: 1\nname: trust-test\nsteps:\n  - id: copy\n    sync: {{from: src, to: dst, delete: true, rsync_args: [-H]{options}}}\n"
    )
}

/// A first pass, then change times old enough for the next pass's change-time rule.
fn copied_once(options: &str) -> Test {
    let test = Test::new()
        .playbook(&playbook(options))
        .args(["run", "playbook.yaml"]);
    make_tree(&test.path("src"));
    std::thread::sleep(Duration::from_millis(1300));
    test.run().status(0);
    std::thread::sleep(Duration::from_millis(1300));
    test
}

fn again(test: &Test) -> common::Output {
    test.run_args(&["run", "playbook.yaml", "--from", "copy"])
}

#[test]
fn a_trusting_pass_copies_what_changed_in_the_source() {
    let test = Test::new()
        .playbook(&playbook(", trust_destination: true"))
        .args(["run", "playbook.yaml"]);
    make_tree(&test.path("src"));
    std::thread::sleep(Duration::from_millis(1300));
    // The first pass has no manifest to trust: it walks, and says so.
    test.run()
        .status(0)
        .stderr_has("trust_destination: no manifest of an earlier finished pass")
        .stderr_has("walking the destination");
    let manifest = test.path(".dst.runbook-manifest");
    assert!(manifest.exists(), "no manifest beside the destination");
    assert!(!test.path("dst/.dst.runbook-manifest").exists());
    assert_same_tree(&test.path("src"), &test.path("dst"));
    std::thread::sleep(Duration::from_millis(1300));

    // Users work: an edit, a rewrite with size and time kept, a deletion, new entries, a
    // changed symlink and a new hard link.
    let src = test.path("src");
    write(
        &src.join("home0/notes/n1.txt"),
        b"edited, and longer than before\n",
    );
    let same_size = common::copies::rewrite_keeping_size_and_time(
        &src.join("home1/notes/n1.txt"),
        (0, b'H'),
        &src.join("home1/notes/n2.txt"),
    );
    std::fs::remove_dir_all(src.join("home3")).expect("rm -r");
    write(&src.join("home4/new/file"), b"new\n");
    std::fs::remove_file(src.join("home0/link")).expect("rm");
    std::os::unix::fs::symlink("notes/n5.txt", src.join("home0/link")).expect("symlink");
    std::fs::hard_link(src.join("home0/notes/n9.txt"), src.join("home1/n9-link")).expect("link");
    // Older than the second pass's start by the clock allowance: the third pass does not
    // copy them again for their change time.
    std::thread::sleep(Duration::from_millis(1300));

    again(&test)
        .status(0)
        .stderr_has("trust_destination: the destination's listings come from")
        .stderr_has("deleted");
    assert_same_tree(&src, &test.path("dst"));
    assert_eq!(
        std::fs::read(test.path("dst/home1/notes/n1.txt")).expect("read"),
        same_size
    );
    // And a third pass, trusting the manifest the second one left, finds nothing to do.
    again(&test)
        .status(0)
        .stderr_has("trust_destination: the destination's listings come from")
        .stderr_has("nothing to copy");
}

#[test]
fn a_destination_changed_behind_its_back_is_not_seen_with_trust_but_verify_catches_it() {
    let test = copied_once(", trust_destination: true");
    let dst = test.path("dst");
    // Something else writes deep in the destination: an edit, and a file of its own.
    write(
        &dst.join("home2/notes/n3.txt"),
        b"changed at the destination\n",
    );
    write(&dst.join("home2/notes/stray"), b"not in the source\n");

    // The documented trade-off: a trusting pass does not see it.
    again(&test)
        .status(0)
        .stderr_has("trust_destination: the destination's listings come from")
        .stderr_has("nothing to copy");
    assert!(!rsync_differences(&test.path("src"), &dst).is_empty());

    // `verify: true` walks both trees for real, and fails on the difference; the pass
    // leaves no manifest then.
    let test = test.file(
        "playbook.yaml",
        &playbook(", trust_destination: true, verify: true"),
    );
    again(&test)
        .status(1)
        .stderr_has("verify found")
        .stderr_has("home2/notes/n3.txt")
        .stderr_has("only in the destination: home2/notes/stray");
    assert!(!test.path(".dst.runbook-manifest").exists());

    // The next trusting pass has no manifest: it walks, and so repairs the destination.
    again(&test)
        .status(0)
        .stderr_has("trust_destination: no manifest of an earlier finished pass")
        .stderr_has("verified:");
    assert_same_tree(&test.path("src"), &dst);
}

#[test]
fn a_broken_or_foreign_manifest_is_not_trusted_and_the_pass_walks() {
    let test = copied_once("");
    let manifest = test.path(".dst.runbook-manifest");
    assert!(manifest.exists(), "every pass records a manifest");
    let good = std::fs::read(&manifest).expect("read");
    let test = test.file("playbook.yaml", &playbook(", trust_destination: true"));

    // Cut short: a warning, and a walk that sees what changed at the destination.
    std::fs::write(&manifest, &good[..good.len() / 2]).expect("write");
    std::fs::remove_file(test.path("dst/home0/notes/n4.txt")).expect("rm");
    again(&test)
        .status(0)
        .stderr_has("does not parse")
        .stderr_has("it is not trusted: walking the destination");
    assert_same_tree(&test.path("src"), &test.path("dst"));

    // Written with other settings (another exclude): not trusted either.
    let test = test.file(
        "playbook.yaml",
        &playbook(", trust_destination: true, exclude: ['*.tmp']"),
    );
    again(&test)
        .status(0)
        .stderr_has("was written with other settings")
        .stderr_has("walking the destination");

    // Garbage in place of the manifest.
    std::fs::write(&manifest, b"{\"runbook_manifest\": 1}\nnot json\n").expect("write");
    again(&test).status(0).stderr_has("does not parse");
    // Each of these passes wrote a good one again.
    again(&test)
        .status(0)
        .stderr_has("trust_destination: the destination's listings come from");

    // Without the change-time rule the manifest is not trusted.
    let test = test.file(
        "playbook.yaml",
        &playbook(", trust_destination: true, exclude: ['*.tmp'], quick_check: true"),
    );
    again(&test)
        .status(0)
        .stderr_has("trust_destination is ignored with quick_check: true");
}

#[test]
fn a_templated_trust_destination_that_renders_badly_is_invalid_input() {
    let text = playbook(", trust_destination: \"{{ name }}\"")
        .replace("steps:", "params:\n  name: {default: yes-please}\nsteps:");
    let test = Test::new().playbook(&text);
    make_tree(&test.path("src"));
    test.run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has(
            "step `copy`: `trust_destination: {{ name }}` renders to `yes-please`, which is not true or false",
        );
    assert!(!test.path("dst/home0").exists());
    // A literal that is not a boolean is refused when the playbook loads.
    let test = test.file("playbook.yaml", &playbook(", trust_destination: perhaps"));
    test.run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has("trust_destination")
        .stderr_has("playbook.yaml:5");
    assert!(!test.path("dst/home0").exists());
}
