//! `sync` with `on: {job: ...}` against the sandbox: the pass is planned here, its shards run
//! as an Indexed Job whose pods the sandbox runs as local processes (with
//! `RUNBOOK_AGENT_PATH` = this build, and the paths as they are on this host), and `runbook`
//! follows the Job and journals each finished shard once.
//!
//! The pods' container gets `PATH` with a fake `rsync` first: it can fail a shard once, or
//! hold one while a file exists, so that a test can act in the middle of a copy.

use crate::common;

use std::time::Duration;

use common::copies::{
    assert_same_tree, fake_rsync, make_homes, notes_of, shards_planned_and_done, write,
};
use common::{Sandbox, Test, wait_until};

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
    make_homes(&test.path("src"), 1);
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
    // One Job, deleted with its pods once its work was journaled.
    let created = notes_of(&test, "job");
    assert_eq!(created.len(), 1, "{created:?}");
    let name = created[0]["name"].as_str().expect("the Job's name");
    assert!(
        sandbox
            .requests_of("delete")
            .iter()
            .any(|request| request["path"]
                .as_str()
                .is_some_and(|path| path.ends_with(name))),
        "the finished Job was not deleted"
    );
    wait_until(
        "the Job and its pods are gone",
        Duration::from_secs(30),
        || {
            job_names(&sandbox).is_empty()
                && sandbox
                    .kubectl(&[
                        "get",
                        "pods",
                        "-n",
                        "default",
                        "-l",
                        &format!("runbook.dev/sync-job={name}"),
                        "-o",
                        "name",
                    ])
                    .trim()
                    .is_empty()
        },
    );
}

#[test]
fn a_shard_that_fails_once_is_run_again_by_the_job() {
    let test = scene();
    write(&test.path("fail-once"), b"");
    let sandbox = Sandbox::start("");
    let test = against(test, &sandbox);
    test.run()
        .status(0)
        .stderr_has("failed with exit code 1; the Job runs the index again");
    assert!(
        !test.path("fail-once").exists(),
        "the fake rsync never failed"
    );
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_one_pass_every_shard_once(&test);
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
    let job = sandbox
        .get("job", &job_names(&sandbox)[0], Some("default"))
        .expect("the Job");
    assert_eq!(job["spec"]["parallelism"], 3);
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    // Every shard but the held one is journaled as the Job's pods report them; then kill
    // runbook while the held one still runs.
    wait_until(
        "the copy reaches the held shard",
        Duration::from_secs(120),
        || shards_planned_and_done(&test).is_some_and(|(shards, done)| done + 1 == shards),
    );
    child.kill().expect("kill -9 runbook");
    child.wait().expect("wait");
    let first = job_names(&sandbox);
    // `status` lists the Job that goes on, with its counts from the cluster.
    let status = test
        .run_args(&["status", "--kubeconfig", &kubeconfig(&sandbox)])
        .status(0);
    assert!(
        status
            .stdout
            .contains(&format!("copy running as Job {}", first[0]))
            && status.stdout.contains("running: ")
            && status.stdout.contains("indexes complete"),
        "{}",
        status.stdout
    );
    // Its grid shows the held shard as running: the running pods' agents say which shards
    // their workers copy (they write them with their progress, every few seconds).
    wait_until(
        "status shows the held shard running",
        Duration::from_secs(30),
        || {
            let json = test
                .run_args(&[
                    "status",
                    "--format",
                    "json",
                    "--kubeconfig",
                    &kubeconfig(&sandbox),
                ])
                .status(0);
            let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("status JSON");
            let running: Vec<&serde_json::Value> = json["copies"][0]["shards"]
                .as_array()
                .expect("the copy's grid")
                .iter()
                .filter(|shard| shard["state"] == "running")
                .collect();
            running.len() == 1
                && json["detached"][0]["live"]["running_shards"]
                    == serde_json::json!([running[0]["shard"]])
        },
    );

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
    assert_eq!(first.len(), 1);
    assert_eq!(notes_of(&test, "job").len(), 1, "a second Job was created");
    assert!(job_names(&sandbox).is_empty(), "the finished Job stays");
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

#[test]
fn the_job_template_is_checked_for_undefined_variables_when_the_playbook_loads() {
    let playbook = r#"runbook: 1
name: j
steps:
  - id: copy
    sync:
      from: src
      to: dst
      on:
        job:
          parallelism: 2
          template:
            spec:
              containers:
                - name: copy
                  image: "{{ transfer_imag }}"
"#;
    Test::new()
        .playbook(playbook)
        .args(["validate", "playbook.yaml"])
        .run()
        .status(2)
        .stderr_has("undefined variable `transfer_imag`")
        .stderr_has("playbook.yaml:15:30");
}
