//! `sync` with `on: {pod: ...}` against the sandbox, through its real exec protocol: the copy
//! runs in the pod (on this host, where the sandbox runs its pods' commands) as a detached
//! agent; `runbook` only starts, watches and collects it. A `kill -9` of `runbook` leaves
//! the copy running, and `run` again re-attaches to it; dropped exec connections do not
//! fail a copy.
//!
//! The pod's container gets `PATH` with a fake `rsync` first (the sandbox gives a
//! container's literal `env` to its commands): it hangs on one shard while a file exists,
//! so that a test can act in the middle of a copy.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::copies::{
    assert_same_tree, fake_rsync, make_homes, notes_of, shards_planned_and_done, write,
};
use common::{Sandbox, Test, is_alive, wait_until};

/// A transfer pod whose volumes are the test's directories, with `path` as its PATH.
fn transfer_pod(test: &Test, path: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: transfer, namespace: default}}
spec:
  containers:
  - name: shell
    image: ubuntu:22.04
    env: [{{name: PATH, value: "{path}"}}]
    volumeMounts:
    - {{name: old, mountPath: "{src}"}}
    - {{name: new, mountPath: "{dst}"}}
  volumes:
  - {{name: old, hostPath: {{path: "{src}"}}}}
  - {{name: new, hostPath: {{path: "{dst}"}}}}
"#,
        src = test.path("src").display(),
        dst = test.path("dst").display(),
    )
}

/// A playbook named `name` whose step `copy` runs in the transfer pod.
fn playbook(name: &str, extra: &str) -> String {
    format!(
        r#"runbook: 1
name: {name}
steps:
  - id: copy
    sync:
      from: src
      to: dst
      jobs: 2
      delete: true
      verify: true
      on: {{pod: transfer, namespace: default, container: shell}}{extra}
    register: copied
"#
    )
}

/// A scratch directory with the playbook and the source tree; `from`/`to` are absolute, as
/// paths in the pod are.
fn scene(extra: &str) -> Test {
    let test = Test::new();
    let text = playbook("sync-in-pod", extra)
        .replace(
            "from: src",
            &format!("from: {}", test.path("src").display()),
        )
        .replace("to: dst", &format!("to: {}", test.path("dst").display()));
    let test = test.playbook(&text);
    make_homes(&test.path("src"), 3);
    test
}

/// Runs the playbook against the sandbox, with the agents' directories in the scratch
/// directory.
fn against(test: Test, sandbox: &Sandbox) -> Test {
    let agents = test.path("agents").display().to_string();
    test.env("RUNBOOK_AGENT_DIR", &agents).args([
        "run".to_string(),
        "playbook.yaml".into(),
        "--kubeconfig".into(),
        kubeconfig(sandbox),
    ])
}

/// `--kubeconfig FILE` of the sandbox, for other command lines.
fn kubeconfig(sandbox: &Sandbox) -> String {
    sandbox.kubeconfig().display().to_string()
}

/// The agent's state directory (the one that is not `bin`).
fn agent_dir(test: &Test) -> PathBuf {
    std::fs::read_dir(test.path("agents"))
        .expect("agents dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.file_name().is_some_and(|name| name != "bin"))
        .expect("an agent directory")
}

fn agent_state(test: &Test) -> serde_json::Value {
    let text = std::fs::read_to_string(agent_dir(test).join("state.json")).expect("state.json");
    serde_json::from_str(&text).expect("state is JSON")
}

#[test]
fn a_killed_runbook_leaves_the_copy_running_and_run_again_re_attaches() {
    let test = scene("");
    let sandbox = Sandbox::start(&transfer_pod(&test, &fake_rsync(test.dir())));
    write(&test.path("block"), b"");
    // No RUNBOOK_AGENT_PATH: runbook ships itself into the pod.
    let test = against(test, &sandbox);
    let mut child = test.spawn();
    // Every shard but the held one is journaled by runbook as the agent reports it.
    wait_until(
        "the copy reaches the held shard",
        Duration::from_secs(180),
        || {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "runbook ended early: {}",
                std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default()
            );
            shards_planned_and_done(&test).is_some_and(|(shards, done)| {
                assert!(shards > 2, "a plan of {shards} shards");
                done + 1 == shards
            })
        },
    );
    child.kill().expect("kill -9 runbook");
    child.wait().expect("wait");
    let pid = agent_state(&test)["pid"].as_i64().expect("pid") as i32;
    assert!(is_alive(pid), "the agent died with runbook");
    let first_stderr = std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default();
    assert!(first_stderr.contains("shipping runbook"), "{first_stderr}");

    // `status` shows the detached copy, from the journal and from the pod.
    let status = test
        .run_args(&["status", "--kubeconfig", &kubeconfig(&sandbox)])
        .status(0);
    assert!(
        status.stdout.contains(": running (detached)\n")
            && status.stdout.contains("copy detached in pod transfer")
            && status.stdout.contains("running: "),
        "{}",
        status.stdout
    );
    let status_json = || -> serde_json::Value {
        let json = test
            .run_args(&[
                "status",
                "--format",
                "json",
                "--kubeconfig",
                &kubeconfig(&sandbox),
            ])
            .status(0);
        serde_json::from_str(&json.stdout).expect("status JSON")
    };
    let json = status_json();
    let detached = &json["detached"][0];
    assert_eq!(
        (
            &detached["kind"],
            &detached["name"],
            &detached["live"]["state"]
        ),
        (&"pod".into(), &"transfer".into(), &"running".into()),
        "{json:#}"
    );
    // Its grid shows the held shard as running: the agent says which shards its workers copy
    // (it writes them with its progress, every few seconds).
    wait_until(
        "status shows the held shard running",
        Duration::from_secs(30),
        || {
            let json = status_json();
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

    // Another run (another playbook, the same step, pod and paths) finds it running.
    let other = std::fs::read_to_string(test.path("playbook.yaml"))
        .expect("playbook")
        .replace("name: sync-in-pod", "name: another-run");
    std::fs::write(test.path("other.yaml"), other).expect("write");
    let other_state = test.path("other-state").display().to_string();
    test.run_args(&[
        "run",
        "other.yaml",
        "--kubeconfig",
        &kubeconfig(&sandbox),
        "--state-dir",
        &other_state,
    ])
    .status(1)
    .stderr_has("a copy is already running in pod transfer");

    // Run again: it re-attaches to the running copy, which then finishes.
    let mut child = test.spawn();
    wait_until("runbook re-attaches", Duration::from_secs(60), || {
        std::fs::read_to_string(test.path("spawned.stderr"))
            .unwrap_or_default()
            .contains("re-attaching to the copy running")
    });
    std::fs::remove_file(test.path("block")).expect("unblock");
    let status = child.wait().expect("wait");
    let stderr = std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("shipping runbook"),
        "shipped twice: {stderr}"
    );
    assert_same_tree(&test.path("src"), &test.path("dst"));
    wait_until("the agent exits", Duration::from_secs(10), || {
        !is_alive(pid)
    });

    // One copy in the journal of this run: one agent, one pass, each shard once, one end.
    let passes = notes_of(&test, "pass");
    assert_eq!(passes.len(), 1, "{passes:?}");
    let shards = common::copies::pass_shards(&test, 1)
        .expect("the pass's shards")
        .len();
    let mut finished: Vec<u64> = notes_of(&test, "shard")
        .iter()
        .map(|note| note["shard"].as_u64().expect("shard"))
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, (0..shards as u64).collect::<Vec<_>>());
    assert_eq!(notes_of(&test, "pass_done").len(), 1);
    assert_eq!(notes_of(&test, "agent").len(), 1);
    assert_eq!(notes_of(&test, "collected").len(), 1);
    let output = step_output(&test);
    assert_eq!(
        (output["verified"].clone(), output["pass"].clone()),
        (true.into(), 1.into()),
        "{output}"
    );
}

/// The output of the last finished `copy` step.
fn step_output(test: &Test) -> serde_json::Value {
    test.journal()
        .into_iter()
        .rfind(|event| event["event"] == "step_finished" && event["step"] == "copy")
        .expect("the step finished")["output"]
        .clone()
}

/// Runs a copy slowed by `bwlimit` (so that it lasts several seconds) in a sandbox that cuts
/// exec streams as `flags` say; the agent is this test binary's runbook, already "in" the
/// pod.
fn copy_with_faults(flags: &[&str]) -> (Test, Sandbox) {
    let test = scene("\n      bwlimit: 1M");
    let sandbox = Sandbox::start_with(
        &transfer_pod(&test, &std::env::var("PATH").unwrap_or_default()),
        flags,
    );
    let test = against(test, &sandbox).env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"));
    let output = test.run().status(0);
    assert!(
        !output.stderr.contains("shipping runbook"),
        "{}",
        output.stderr
    );
    assert_same_tree(&test.path("src"), &test.path("dst"));
    assert_eq!(notes_of(&test, "pass").len(), 1);
    assert_eq!(notes_of(&test, "pass_done").len(), 1);
    assert_eq!(notes_of(&test, "agent").len(), 1);
    assert_eq!(step_output(&test)["verified"], true);
    (test, sandbox)
}

#[test]
fn exec_streams_cut_every_second_do_not_fail_the_copy() {
    let (_test, sandbox) = copy_with_faults(&["--exec-drop-after", "1s"]);
    // The status of a copy of several seconds is followed over one exec stream at a time,
    // and each one was cut after a second.
    let execs = sandbox.requests_of("exec").len();
    assert!(execs >= 6, "{execs} execs");
}

#[test]
fn exec_streams_dropped_at_random_do_not_fail_the_copy() {
    let (_test, sandbox) = copy_with_faults(&["--drop-rate", "0.3", "--seed", "11"]);
    let dropped = sandbox
        .requests_of("exec")
        .iter()
        .filter(|request| request["fault"] == "drop")
        .count();
    assert!(dropped > 0, "no exec was dropped");
}

#[test]
fn on_is_checked_when_the_playbook_loads() {
    for (on, message) in [
        ("{job: {parallelism: 4}}", "missing key `template`"),
        (
            "{job: {parallelism: 4, template: {spec: {}}}}",
            "`on.job.template` has no `spec.containers`",
        ),
        (
            "{pod: transfer, job: {parallelism: 4, template: {spec: {containers: [{name: c}]}}}}",
            "`on` has both `job` and `pod`",
        ),
        ("{namespace: hub}", "`on` needs `pod`"),
        ("{pod: transfer, nod: 1}", "nod"),
        ("{pod: ''}", "`pod` in `on` is empty"),
    ] {
        let text = playbook("check", "").replace(
            "on: {pod: transfer, namespace: default, container: shell}",
            &format!("on: {on}"),
        );
        Test::new()
            .playbook(&text)
            .args(["validate", "playbook.yaml"])
            .run()
            .status(2)
            .stderr_has(message);
    }
}

#[test]
fn a_plan_names_the_pod_and_a_missing_pod_fails_the_step() {
    let test = scene("");
    let sandbox = Sandbox::start("");
    test.run_args(&[
        "plan",
        "playbook.yaml",
        "--kubeconfig",
        &kubeconfig(&sandbox),
    ])
    .status(0)
    .stdout_has("in pod transfer in namespace default, detached, with 2 rsync workers");
    against(test, &sandbox)
        .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
        .run()
        .status(1)
        .stderr_has("cannot run the copy in pod transfer (container shell) in namespace default: is the pod running?");
}

/// The NFS migration playbook: both its copies run `on:` the transfer pod.
fn nfs_playbook_in_pod(_test: &Test) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/nfs-migrate.yaml").into()
}

/// A fake rsync that holds every shard while `block` exists in `dir`.
fn rsync_held_while_blocked(dir: &Path) -> String {
    let path = fake_rsync(dir);
    let script = dir.join("fake-bin/rsync");
    let text = std::fs::read_to_string(&script)
        .expect("fake rsync")
        .replace(
            "if [ -e \"$DIR/block\" ] && tr '\\0' '\\n' < \"$list\" | grep -q '^slow'; then",
            "if [ -e \"$DIR/block\" ]; then",
        );
    assert!(!text.contains("'^slow'"), "the fake rsync was not changed");
    std::fs::write(&script, text).expect("write fake rsync");
    path
}

#[test]
fn the_nfs_migration_with_its_copies_in_the_transfer_pod_survives_a_kill() {
    let test = Test::new();
    let playbook = nfs_playbook_in_pod(&test);
    let path = rsync_held_while_blocked(test.dir());
    write(&test.path("block"), b"");
    let sandbox = test.path("sandbox").display().to_string();
    let agents = test.path("agents").display().to_string();
    // The sandbox runs in the `runbook` process (--sandbox), and its pods' commands get
    // that process's environment: the fake rsync, and the agent already "in" the pod.
    let test = test
        .env("PATH", &path)
        .env("RUNBOOK_AGENT_DIR", &agents)
        .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
        .args([
            "run",
            playbook.as_str(),
            "--sandbox",
            "--sandbox-dir",
            sandbox.as_str(),
            "--yes",
        ]);
    let journal = |test: &Test| -> Vec<serde_json::Value> {
        std::fs::read_dir(test.path("sandbox/state/runs"))
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(Result::ok)
            .and_then(|run| std::fs::read_to_string(run.path().join("journal.jsonl")).ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let notes_of = |test: &Test, step: &str, kind: &str| -> usize {
        journal(test)
            .iter()
            .filter(|event| {
                event["event"] == "step_note"
                    && event["step"] == step
                    && event["data"]["sync"] == kind
            })
            .count()
    };
    let mut child = test.spawn();
    wait_until(
        "the initial copy is planned in the pod",
        Duration::from_secs(120),
        || {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "runbook ended early: {}",
                std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default()
            );
            notes_of(&test, "initial-copy", "pass") == 1
        },
    );
    // kill -9: runbook, and with it the sandbox it served; the copy goes on.
    child.kill().expect("kill -9 runbook");
    child.wait().expect("wait");
    let pid = agent_state(&test)["pid"].as_i64().expect("pid") as i32;
    assert!(is_alive(pid), "the agent died with runbook");

    let mut child = test.spawn();
    wait_until("runbook re-attaches", Duration::from_secs(60), || {
        std::fs::read_to_string(test.path("spawned.stderr"))
            .unwrap_or_default()
            .contains("re-attaching to the copy running")
    });
    std::fs::remove_file(test.path("block")).expect("unblock");
    let status = child.wait().expect("wait");
    let stderr = std::fs::read_to_string(test.path("spawned.stderr")).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    assert_same_tree(
        &test.path("sandbox/nfs/10.0.0.7/homes/staging"),
        &test.path("sandbox/nfs/10.0.0.9/homes/staging"),
    );
    // One initial copy in the journal, and one final copy, each by one agent.
    for step in ["initial-copy", "final-copy"] {
        assert_eq!(notes_of(&test, step, "pass"), 1, "{step}");
        assert_eq!(notes_of(&test, step, "pass_done"), 1, "{step}");
        assert_eq!(notes_of(&test, step, "agent"), 1, "{step}");
        assert_eq!(notes_of(&test, step, "collected"), 1, "{step}");
    }
}

/// `trust_destination` in the pod: the agent's pass records its manifest beside `to` (in
/// the pod; here the same directory), and the next run's agent takes the destination's
/// listings from it.
#[test]
fn a_copy_in_the_pod_records_its_manifest_and_a_trusting_pass_uses_it() {
    let test = scene("\n      trust_destination: true");
    let sandbox = Sandbox::start(&transfer_pod(
        &test,
        &std::env::var("PATH").unwrap_or_default(),
    ));
    let test = against(test, &sandbox).env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"));
    test.run()
        .status(0)
        .stderr_has("trust_destination: no manifest of an earlier finished pass");
    assert!(test.path(".dst.runbook-manifest").exists());
    std::thread::sleep(Duration::from_millis(1300));
    write(&test.path("src/home03/notebooks/new.ipynb"), b"{}\n");
    std::fs::remove_file(test.path("src/home04/.bashrc")).expect("rm");
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        &kubeconfig(&sandbox),
        "--from",
        "copy",
    ])
    .status(0)
    .stderr_has("trust_destination: the destination's listings come from")
    .stderr_has("verified:");
    assert_same_tree(&test.path("src"), &test.path("dst"));
}
