//! `sync` with `on: {job: ...}` against the sandbox: the pass is planned here, its shards run
//! as an Indexed Job whose pods the sandbox runs as local processes (with
//! `RUNBOOK_AGENT_PATH` = this build, and the paths as they are on this host), and `runbook`
//! follows the Job and journals each finished shard once.
//!
//! The pods' container gets `PATH` with a fake `rsync` first: it can fail a shard once, or
//! hold one while a file exists, so that a test can act in the middle of a copy.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Sandbox, Test};

fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// Home directories (over a thousand entries, so that a plan has several shards), a bigger
/// file, a symlink, an empty directory, and `slow/`, the shard a fake rsync can hold.
fn make_tree(root: &Path) {
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
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&root.join("data-hog/big.bin"), &big);
    std::os::unix::fs::symlink("notebooks/n000.ipynb", root.join("home00/link")).expect("symlink");
    std::fs::create_dir_all(root.join("home01/empty")).expect("mkdir");
    write(&root.join("slow/one-file"), b"copied last\n");
}

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

/// A fake `rsync` in `dir/fake-bin`: a shard listing `slow` waits while `dir/block` exists;
/// a shard listing `data-hog` fails (exit 23) once if `dir/fail-once` exists. Returns a PATH
/// with it first.
fn fake_rsync(dir: &Path) -> String {
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

/// A scratch directory with the source tree and a playbook whose step `copy` runs its
/// shards as an Indexed Job of 3 pods.
fn scene() -> Test {
    scene_with_backoff_limit(2)
}

/// [`scene`], with another `backoff_limit`.
fn scene_with_backoff_limit(backoff_limit: u32) -> Test {
    let test = Test::new();
    let path = fake_rsync(test.dir());
    let text = format!(
        r#"runbook: 1
name: sync-in-job
steps:
  - id: copy
    sync:
      from: {src}
      to: {dst}
      jobs: 2
      delete: true
      verify: true
      on:
        job:
          parallelism: 3
          namespace: default
          backoff_limit: {backoff_limit}
          template:
            spec:
              containers:
              - name: copy
                image: ubuntu:22.04
                env: [{{name: PATH, value: "{path}"}}]
    register: copied
"#,
        src = test.path("src").display(),
        dst = test.path("dst").display(),
    );
    let test = test.playbook(&text);
    make_tree(&test.path("src"));
    test
}

fn kubeconfig(sandbox: &Sandbox) -> String {
    sandbox.kubeconfig().display().to_string()
}

/// `run` against the sandbox, with the agent (this build) and its directories.
fn against(test: Test, sandbox: &Sandbox) -> Test {
    let agents = test.path("agents").display().to_string();
    test.env("RUNBOOK_AGENT_DIR", &agents)
        .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
        .args([
            "run".to_string(),
            "playbook.yaml".into(),
            "--kubeconfig".into(),
            kubeconfig(sandbox),
        ])
}

fn notes_of(test: &Test, kind: &str) -> Vec<serde_json::Value> {
    test.journal()
        .into_iter()
        .filter(|event| event["event"] == "step_note" && event["data"]["sync"] == kind)
        .map(|event| event["data"].clone())
        .collect()
}

/// One pass in the journal, each of its shards finished once.
fn assert_one_pass_every_shard_once(test: &Test) {
    let passes = notes_of(test, "pass");
    assert_eq!(passes.len(), 1, "{passes:?}");
    let shards = passes[0]["shards"].as_array().expect("shards").len();
    assert!(shards >= 3, "a plan of {shards} shards");
    let mut finished: Vec<u64> = notes_of(test, "shard")
        .iter()
        .map(|note| note["shard"].as_u64().expect("shard"))
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, (0..shards as u64).collect::<Vec<_>>());
    assert_eq!(notes_of(test, "pass_done").len(), 1);
}

fn job_names(sandbox: &Sandbox) -> Vec<String> {
    let text = sandbox.kubectl(&["get", "jobs", "-n", "default", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&text).expect("kubectl JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|job| job["metadata"]["name"].as_str().expect("name").to_string())
        .collect()
}

fn assert_same_tree(source: &Path, destination: &Path) {
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

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_shards_run_as_an_indexed_job_and_each_is_journaled_once() {
    let test = scene();
    let sandbox = Sandbox::start("");
    let test = against(test, &sandbox);
    let output = test.run().status(0);
    assert!(
        output.stderr.contains("created Job sync-copy-"),
        "{}",
        output.stderr
    );
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_one_pass_every_shard_once(&test);
    let jobs = job_names(&sandbox);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = sandbox
        .get("job", &jobs[0], Some("default"))
        .expect("the Job");
    assert_eq!(job["spec"]["parallelism"], 3);
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["status"]["completedIndexes"], "0-2");
}

#[test]
fn a_shard_that_fails_once_is_run_again_by_the_job() {
    let test = scene();
    write(&test.path("fail-once"), b"");
    let sandbox = Sandbox::start("");
    let test = against(test, &sandbox);
    test.run().status(0);
    assert!(
        !test.path("fail-once").exists(),
        "the fake rsync never failed"
    );
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_one_pass_every_shard_once(&test);
    let job = sandbox
        .get("job", &job_names(&sandbox)[0], Some("default"))
        .expect("the Job");
    assert_eq!(job["status"]["failed"], 1, "{job}");
}

#[test]
fn a_failed_job_fails_the_step_with_the_pods_last_log_lines() {
    let test = scene_with_backoff_limit(0);
    write(&test.path("fail-once"), b"");
    let sandbox = Sandbox::start("");
    let test = against(test, &sandbox);
    test.run()
        .status(1)
        .stderr_has("failed with exit code 1, its log ends with:")
        .stderr_has("rsync: simulated failure");
    // The shards of the indexes that finished are journaled: a run again copies the rest.
    let shards = notes_of(&test, "shard").len();
    let planned = notes_of(&test, "pass")[0]["shards"]
        .as_array()
        .expect("shards")
        .len();
    assert!(shards < planned, "{shards} of {planned}");
}

#[test]
fn a_killed_runbook_leaves_the_job_running_and_run_again_follows_it() {
    let test = scene();
    write(&test.path("block"), b"");
    let sandbox = Sandbox::start("");
    let test = against(test, &sandbox);
    let mut child = test.spawn();
    wait_until("the Job is created", Duration::from_secs(120), || {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "runbook ended early: {}",
            std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default()
        );
        job_names(&sandbox).len() == 1
    });
    // Every shard but the held one is journaled as the Job's pods report them; then kill
    // runbook while the held one still runs.
    wait_until(
        "the copy reaches the held shard",
        Duration::from_secs(120),
        || {
            std::panic::catch_unwind(|| {
                let shards = notes_of(&test, "pass").first()?["shards"].as_array()?.len();
                (notes_of(&test, "shard").len() + 1 == shards).then_some(())
            })
            .ok()
            .flatten()
            .is_some()
        },
    );
    child.kill().expect("kill -9 runbook");
    child.wait().expect("wait");
    let first = job_names(&sandbox);

    let mut child = test.spawn();
    wait_until(
        "runbook follows the Job again",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(test.path("spawned.stderr"))
                .unwrap_or_default()
                .contains("re-attaching to Job")
        },
    );
    std::fs::remove_file(test.path("block")).expect("unblock");
    let status = child.wait().expect("wait");
    let stderr = std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert_eq!(job_names(&sandbox), first, "a second Job was created");
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_one_pass_every_shard_once(&test);
}

#[test]
fn a_plan_says_what_runs_where() {
    let test = scene();
    let sandbox = Sandbox::start("");
    test.run_args(&["plan", "playbook.yaml", "--kubeconfig", &kubeconfig(&sandbox)])
        .status(0)
        .stdout_has("the shards run as an Indexed Job of 3 pods in namespace default (index i copies shards i, i+3, ...)");
    assert!(job_names(&sandbox).is_empty(), "a plan created a Job");
}
