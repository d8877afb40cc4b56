//! `--state cluster`: runs whose Lease and journal live in the cluster, so that two
//! "machines" (two state directories, two processes) share them. Against the sandbox
//! (`runbook sandbox up`), checked with the real kubectl.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common;

use common::{Output, Sandbox, Test};

const HUB: &str = include_str!("data/scenarios/hub.yaml");

/// A playbook whose one step counts its runs in `runs.log`, then waits until the file
/// `release` exists in the directory given by the `dir` param (so a test decides how long a
/// runner holds the run), then a gate.
const HOLDING: &str = r#"
runbook: 1
name: holding
params:
  dir: {required: true}
  try: {type: int, default: 0}
  token: {secret: true, default: NOT-A-SECRET}
steps:
  - id: hold
    run:
      shell: true
      command: |
        echo "token {{ token }} {{ token | upper }}"
        echo "{{ try }}" >> "{{ dir }}/runs.log"
        while [ ! -e "{{ dir }}/release" ]; do sleep 0.05; done
  - id: gate
    pause: "go on?"
  - id: after
    run: [sh, -c, 'echo after >> "$1/after.log"', sh, "{{ dir }}"]
"#;

/// One machine: a scratch directory of its own (state dir, home), the sandbox's
/// kubeconfig, `--state cluster`.
fn machine(sandbox: &Sandbox) -> Test {
    Test::new()
        .playbook(HOLDING)
        .env(
            "KUBECONFIG",
            sandbox.kubeconfig().to_str().expect("UTF-8 path"),
        )
        .env("RUNBOOK_STATE", "cluster")
}

fn run_args(shared: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "playbook.yaml", "--var"]
        .iter()
        .map(ToString::to_string)
        .collect();
    args.push(format!("dir={}", shared.display()));
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run's journal as the cluster holds it (every part, in order), through kubectl.
fn cluster_journal(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    let args = [
        "get",
        "configmap",
        "-n",
        "runbook",
        "-l",
        "runbook.dev/journal-part",
        "-o",
        "json",
    ];
    // Tried again: a sandbox that injects faults answers some requests with 500.
    let list = (0..20)
        .find_map(|_| sandbox.try_kubectl(&args))
        .expect("kubectl lists the journal parts");
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    let mut parts: Vec<(u64, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["metadata"]["labels"]["runbook.dev/journal-part"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .expect("part number"),
                item["data"]["journal.jsonl"]
                    .as_str()
                    .expect("journal text")
                    .to_string(),
            )
        })
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|(_, text)| text.lines())
        .map(|line| serde_json::from_str(line).expect("a journal line is JSON"))
        .collect()
}

#[test]
fn a_run_started_on_one_machine_is_finished_on_another_through_the_cluster() {
    let sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let laptop = machine(&sandbox);
    let ci = machine(&sandbox).env("CI", "true");

    laptop
        .run_args(&run_args(shared.path(), &["--var", "token=hunter2-s3cret"]))
        .status(5)
        .stderr_has("waits for approval");
    // Secrets never reach the cluster's copy of the journal (nor anything derived).
    let parts = sandbox.kubectl(&["get", "configmap", "-n", "runbook", "-o", "yaml"]);
    assert!(parts.contains("token ***"), "{parts}");
    assert!(
        !parts.to_lowercase().contains("hunter2-s3cret"),
        "a secret reached the cluster: {parts}"
    );
    // The other machine has nothing local, and sees the run in the cluster.
    let listed = ci.run_args(&["list"]).status(0);
    assert!(
        listed.stdout.contains("holding-") && listed.stdout.contains("waiting (at a gate)"),
        "{}",
        listed.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&ci.run_args(&["list", "--format", "json"]).status(0).stdout)
            .expect("list JSON");
    assert_eq!(json[0]["state"], "waiting", "{json}");
    assert_eq!(json[0]["why"], "at a gate", "{json}");
    assert_eq!(json[0]["steps_done"], 1, "{json}");

    // It goes on from the gate: the first step is not run again.
    ci.run_args(&run_args(shared.path(), &["--approve", "gate"]))
        .status(0);
    let runs = std::fs::read_to_string(shared.path().join("runs.log")).expect("runs.log");
    assert_eq!(runs.lines().count(), 1, "the first step ran again: {runs}");
    assert_eq!(
        std::fs::read_to_string(shared.path().join("after.log")).expect("after.log"),
        "after\n"
    );
    let status = ci.run_args(&["status"]).status(0);
    assert!(status.stdout.contains(": done"), "{}", status.stdout);

    // The cluster's journal has both commands, and the local cache of each machine is a
    // copy of what the cluster had when it last ran.
    let events = cluster_journal(&sandbox);
    let started = events
        .iter()
        .filter(|event| event["event"] == "run_started")
        .count();
    assert_eq!(started, 2, "{events:#?}");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    // Released at the end: nobody holds the Lease.
    assert_eq!(sandbox.lease_holder(), None);
}

#[test]
fn a_second_runner_is_refused_naming_the_holder_and_a_killed_one_is_taken_over() {
    let sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    let first = machine(&sandbox)
        .env("USER", "alice")
        .args(run_args(shared.path(), &["--lease-duration", "4s"]));
    let mut holder = first.spawn();
    common::wait_until(
        "the first runner holds the run",
        Duration::from_secs(30),
        || shared.path().join("runs.log").exists(),
    );
    let held_by = sandbox.lease_holder().expect("a holder");
    assert!(held_by.starts_with("alice@"), "{held_by}");

    let second = machine(&sandbox).env("USER", "bob");
    let refused = second
        .run_args(&run_args(shared.path(), &["--lease-duration", "4s"]))
        .status(4);
    assert!(
        refused.stderr.contains("is locked by alice@")
            && refused.stderr.contains(&format!("(pid {}", holder.id()))
            && refused.stderr.contains(" since "),
        "{}",
        refused.stderr
    );

    // kill -9: the Lease is not released, and is taken over once it expires.
    holder.kill().expect("kill -9");
    holder.wait().expect("wait");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let started = Instant::now();
    let taken = loop {
        let output: Output = second.run_args(&run_args(shared.path(), &["--lease-duration", "4s"]));
        if output.code != 4 {
            break output;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never taken over: {}",
            output.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let taken = taken.status(5);
    assert!(
        taken
            .stderr
            .contains("took over Lease runbook/runbook-holding-")
            && taken.stderr.contains("from alice@"),
        "{}",
        taken.stderr
    );
    // The step the killed runner was in is run again (it was started, never finished).
    let runs = std::fs::read_to_string(shared.path().join("runs.log")).expect("runs.log");
    assert_eq!(runs.lines().count(), 2, "{runs}");
}

#[test]
fn two_runners_started_at_the_same_instant_never_both_hold_a_run() {
    let sandbox = Sandbox::start(HUB);
    for attempt in 0..50 {
        let shared = tempfile::tempdir().expect("shared dir");
        let args = run_args(shared.path(), &["--var", &format!("try={attempt}")]);
        let one = machine(&sandbox).args(args.clone());
        let two = machine(&sandbox).args(args);
        let mut first = one.spawn();
        let mut second = two.spawn();
        // The loser answers at once; the winner waits in its first step for `release`.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (loser, mut winner, winner_test) = loop {
            if let Some(code) = first.try_wait().expect("wait").map(|s| s.code()) {
                break ((code, one.path("spawned.stderr")), second, &two);
            }
            if let Some(code) = second.try_wait().expect("wait").map(|s| s.code()) {
                break ((code, two.path("spawned.stderr")), first, &one);
            }
            assert!(
                Instant::now() < deadline,
                "attempt {attempt}: neither runner was refused: both hold the run"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let loser_stderr = std::fs::read_to_string(&loser.1).unwrap_or_default();
        assert_eq!(loser.0, Some(4), "attempt {attempt}: {loser_stderr}");
        assert!(loser_stderr.contains("is locked by"), "{loser_stderr}");
        std::fs::write(shared.path().join("release"), "").expect("release");
        let code = wait_for(&mut winner, Duration::from_secs(60));
        let winner_stderr =
            std::fs::read_to_string(winner_test.path("spawned.stderr")).unwrap_or_default();
        assert_eq!(code, Some(5), "attempt {attempt}: {winner_stderr}");
        let runs = std::fs::read_to_string(shared.path().join("runs.log")).expect("runs.log");
        assert_eq!(runs.lines().count(), 1, "attempt {attempt}: {runs}");
    }
}

#[test]
fn faults_while_writing_the_journal_and_the_lease_lose_nothing_and_run_nothing_twice() {
    let sandbox = Sandbox::start_with(
        HUB,
        &[
            "--conflict-rate",
            "0.2",
            "--error-rate",
            "0.1",
            "--seed",
            "7",
        ],
    );
    let shared = tempfile::tempdir().expect("shared dir");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let laptop = machine(&sandbox);
    laptop.run_args(&run_args(shared.path(), &[])).status(5);
    let ci = machine(&sandbox);
    ci.run_args(&run_args(shared.path(), &["--yes"])).status(0);

    let events = cluster_journal(&sandbox);
    let kinds: Vec<String> = events
        .iter()
        .map(|event| {
            format!(
                "{} {}",
                event["event"].as_str().unwrap_or(""),
                event["step"].as_str().unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "step_started hold",
            "step_finished hold",
            "paused gate",
            "run_finished",
            "run_started",
            "approved gate",
            "step_started gate",
            "step_finished gate",
            "step_started after",
            "step_finished after",
            "run_finished",
        ],
        "{events:#?}"
    );
    // The second machine's cache is exactly the cluster's journal.
    let cache = std::fs::read_dir(ci.path(".runbook/cluster/runbook/runs"))
        .expect("cache")
        .next()
        .expect("one run")
        .expect("entry")
        .path()
        .join("journal.jsonl");
    let cached: Vec<serde_json::Value> = std::fs::read_to_string(cache)
        .expect("cache")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(cached, events);
    let runs = std::fs::read_to_string(shared.path().join("runs.log")).expect("runs.log");
    assert_eq!(runs.lines().count(), 1, "{runs}");
}

#[test]
fn a_lease_or_journal_runbook_did_not_write_is_refused_naming_it() {
    let sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let laptop = machine(&sandbox);
    laptop.run_args(&run_args(shared.path(), &[])).status(5);
    let lease = sandbox
        .kubectl(&["get", "lease", "-n", "runbook", "-o", "name"])
        .trim()
        .to_string();
    sandbox.kubectl(&[
        "patch",
        &lease,
        "-n",
        "runbook",
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"somebody","leaseDurationSeconds":30,"renewTime":"2026-01-01T00:00:00.000000Z"}}"#,
    ]);
    let refused = laptop
        .run_args(&run_args(shared.path(), &["--yes"]))
        .status(2);
    assert!(
        refused.stderr.contains("Lease runbook/runbook-holding-")
            && refused.stderr.contains("spec.holderIdentity \"somebody\""),
        "{}",
        refused.stderr
    );
    sandbox.kubectl(&["delete", &lease, "-n", "runbook"]);

    let part = sandbox
        .kubectl(&[
            "get",
            "configmap",
            "-n",
            "runbook",
            "-l",
            "runbook.dev/journal-part=0",
            "-o",
            "name",
        ])
        .trim()
        .to_string();
    sandbox.kubectl(&[
        "patch",
        &part,
        "-n",
        "runbook",
        "--type=merge",
        "-p",
        r#"{"data":{"journal.jsonl":"{\"event\": \"run_st"}}"#,
    ]);
    let refused = laptop
        .run_args(&run_args(shared.path(), &["--yes"]))
        .status(2);
    assert!(
        refused
            .stderr
            .contains("ConfigMap runbook/runbook-holding-")
            && refused.stderr.contains("does not end with a whole line"),
        "{}",
        refused.stderr
    );
    // Nothing ran.
    assert!(!shared.path().join("after.log").exists());

    let bad_namespace = laptop
        .run_args(&run_args(
            shared.path(),
            &["--state-namespace", "Not_A_Name"],
        ))
        .status(2);
    assert!(
        bad_namespace
            .stderr
            .contains("--state-namespace \"Not_A_Name\" is not a namespace name"),
        "{}",
        bad_namespace.stderr
    );
}

#[test]
fn state_push_and_pull_move_a_run_between_a_laptop_and_the_cluster() {
    let sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let laptop = machine(&sandbox).env("RUNBOOK_STATE", "local");
    laptop.run_args(&run_args(shared.path(), &[])).status(5);
    let run = laptop.run_args(&["list", "--format", "json"]).status(0);
    let run: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let run = run[0]["run"].as_str().expect("run id").to_string();

    let pushed = laptop.run_args(&["state", "push", &run]).status(0);
    assert!(
        pushed.stdout.contains("5 journal line(s) added"),
        "{}",
        pushed.stdout
    );
    // Pushed again: nothing to add.
    let again = laptop.run_args(&["state", "push", &run]).status(0);
    assert!(
        again.stdout.contains("0 journal line(s) added"),
        "{}",
        again.stdout
    );

    let ci = machine(&sandbox);
    ci.run_args(&run_args(shared.path(), &["--yes"])).status(0);
    let runs = std::fs::read_to_string(shared.path().join("runs.log")).expect("runs.log");
    assert_eq!(runs.lines().count(), 1, "{runs}");

    // The laptop's journal is behind the cluster's: a push is refused, a pull brings it.
    let refused = laptop.run_args(&["state", "push", &run]).status(2);
    assert!(
        refused.stderr.contains("has events the local one"),
        "{}",
        refused.stderr
    );
    laptop.run_args(&["state", "pull", &run]).status(0);
    let status = laptop.run_args(&["status", &run]).status(0);
    assert!(status.stdout.contains(": done"), "{}", status.stdout);
}

#[test]
fn an_api_server_that_stops_answering_stops_the_run_at_the_next_step_boundary() {
    let mut sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    let laptop = machine(&sandbox).args(run_args(shared.path(), &[]));
    let mut runner = laptop.spawn();
    common::wait_until(
        "the runner is in its first step",
        Duration::from_secs(30),
        || shared.path().join("runs.log").exists(),
    );
    sandbox.kill();
    std::fs::write(shared.path().join("release"), "").expect("release");
    let code = wait_for(&mut runner, Duration::from_secs(120));
    let stderr = std::fs::read_to_string(laptop.path("spawned.stderr")).unwrap_or_default();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write the run's journal to the cluster (runbook/runbook-holding-")
            && stderr.contains("run the same command again once the API server answers"),
        "{stderr}"
    );
    // The step after it never started.
    assert!(!stderr.contains("▶ gate"), "{stderr}");
}

#[test]
fn a_state_namespace_that_cannot_be_created_is_refused_before_anything_runs() {
    let sandbox = Sandbox::start_with(HUB, &["--forbid", "create:namespaces"]);
    let shared = tempfile::tempdir().expect("shared dir");
    std::fs::write(shared.path().join("release"), "").expect("release");
    let laptop = machine(&sandbox);
    let refused = laptop
        .run_args(&run_args(
            shared.path(),
            &["--state-namespace", "runbook-state"],
        ))
        .status(2);
    assert!(
        refused
            .stderr
            .contains("namespace `runbook-state` does not exist and cannot be created: ")
            && refused
                .stderr
                .contains("cannot create resource \"namespaces\""),
        "{}",
        refused.stderr
    );
    assert!(
        !shared.path().join("runs.log").exists(),
        "a step ran: {}",
        refused.stderr
    );
    // The real kubectl is refused the same way, in RBAC's words.
    let kubectl = std::process::Command::new("kubectl")
        .args(["create", "namespace", "runbook-state"])
        .env("KUBECONFIG", sandbox.kubeconfig())
        .output()
        .expect("run kubectl");
    let said = String::from_utf8_lossy(&kubectl.stderr);
    assert!(
        said.contains("namespaces is forbidden: User \"sandbox\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{said}"
    );
}
