//! `runbook fleet plan|run|status`: one playbook over every hub of a deployer cluster, each
//! hub its own run. The NFS migration over a sandbox of six hubs; a small playbook for the
//! status formats and for bad input.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use common::Test;
use common::copies::tree;
use sandbox_cluster::fleet::{Fleet, SHARED_VALUES};

const NFS_PLAYBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/nfs-migrate.yaml");

/// A sandbox of six hubs in a scratch directory (`sandbox/`), seeded before the first
/// command so that the test knows the original files.
struct SandboxFleet {
    test: Test,
    fleet: Fleet,
}

impl SandboxFleet {
    fn new() -> Self {
        Self::with_hubs(6)
    }

    fn with_hubs(count: usize) -> Self {
        // The sandbox's pods run on this machine, where the test binary already is.
        let test = Test::new().env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"));
        let fleet = Fleet::new(count);
        fleet.seed(&test.path("sandbox")).expect("seed the sandbox");
        SandboxFleet { test, fleet }
    }

    fn sandbox(&self) -> PathBuf {
        self.test.path("sandbox")
    }

    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["fleet", command, NFS_PLAYBOOK]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        if command != "status" {
            args.push("--sandbox".into());
        }
        args.push("--sandbox-dir".into());
        args.push(self.sandbox().display().to_string());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    }

    fn run(&self, extra: &[&str]) -> common::Output {
        self.test.run_args(&self.args("run", extra))
    }

    /// `fleet status --format json`, each hub's entry by name.
    fn status(&self) -> BTreeMap<String, Value> {
        let output = self
            .test
            .run_args(&self.args("status", &["--format", "json"]));
        let status: Value = serde_json::from_str(&output.stdout).expect("status JSON");
        status["hubs"]
            .as_array()
            .expect("hubs")
            .iter()
            .map(|hub| (hub["hub"].as_str().expect("hub").to_string(), hub.clone()))
            .collect()
    }

    /// Each hub namespace's `runbook.dev/phase` and `runbook.dev/step` labels and
    /// `runbook.dev/run` annotation, as the sandbox saved them.
    fn marks(&self) -> BTreeMap<String, (Value, Value, Value)> {
        let text = std::fs::read_to_string(self.sandbox().join("sandbox-state.yaml"))
            .expect("the sandbox's state file");
        let list: Value = serde_saphyr::from_str(&text).expect("the state file is YAML");
        list["items"]
            .as_array()
            .expect("a List")
            .iter()
            .filter(|object| object["kind"] == "Namespace")
            .filter(|object| !object["metadata"]["labels"]["runbook.dev/phase"].is_null())
            .map(|object| {
                let metadata = &object["metadata"];
                (
                    metadata["name"].as_str().expect("name").to_string(),
                    (
                        metadata["labels"]["runbook.dev/phase"].clone(),
                        metadata["labels"]["runbook.dev/step"].clone(),
                        metadata["annotations"]["runbook.dev/run"].clone(),
                    ),
                )
            })
            .collect()
    }

    fn config(&self) -> PathBuf {
        self.sandbox().join("deployer/config/clusters/sandbox")
    }

    fn values_files(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.config())
            .expect("config dir")
            .map(|entry| entry.expect("entry").path())
            .map(|path| {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read_to_string(&path).expect("read"))
            })
            .collect()
    }
}

/// The lines of `after` that are not in `before`, and those of `before` gone from `after`.
fn changed_lines(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let before_lines: Vec<&str> = before.lines().collect();
    let after_lines: Vec<&str> = after.lines().collect();
    let added = after_lines
        .iter()
        .filter(|line| !before_lines.contains(line))
        .map(|line| line.to_string())
        .collect();
    let removed = before_lines
        .iter()
        .filter(|line| !after_lines.contains(line))
        .map(|line| line.to_string())
        .collect();
    (added, removed)
}

#[test]
fn six_hubs_three_at_a_time_phase_one_then_phase_two_with_one_hub_refused() {
    let fleet = SandboxFleet::new();
    let original = fleet.values_files();
    let stuck = fleet.fleet.stuck_hub().expect("a stuck hub").name.clone();
    let (shared_a, shared_b) = fleet.fleet.sharing_hubs().expect("two sharing hubs");
    let sharing = [shared_a.name.clone(), shared_b.name.clone()];

    // Phase 1 everywhere: every hub copies, then stops at its gate.
    fleet
        .run(&["--concurrency", "3"])
        .status(5)
        .stderr_has("[prod] ⏸ start-maintenance waits for approval")
        .stderr_has("0 of 6 hubs of cluster sandbox done");
    let status = fleet.status();
    assert_eq!(status.len(), 6);
    for (hub, entry) in &status {
        assert_eq!(entry["phase"], "at_gate", "{hub}: {entry}");
        assert_eq!(entry["step"], "start-maintenance", "{hub}: {entry}");
        assert!(entry["bytes_copied"].as_u64().expect("bytes") > 0, "{hub}");
    }
    assert_eq!(
        fleet.values_files(),
        original,
        "phase 1 changed a values file"
    );
    // Each hub's namespace says where its run is.
    let marks = fleet.marks();
    assert_eq!(marks.len(), 6, "{marks:?}");
    for (hub, (phase, step, run)) in &marks {
        assert_eq!(phase, "at-gate", "{hub}");
        assert_eq!(step, "start-maintenance", "{hub}");
        assert_eq!(run, &status[hub]["run"], "{hub}");
    }

    // Phase 2: the five hubs whose users leave are migrated; the sixth is refused.
    let output = fleet
        .run(&["--concurrency", "3", "--approve", "start-maintenance"])
        .status(3)
        .stderr_has(&format!("[{stuck}] ✗ no-active-users refused"))
        .stderr_has("5 of 6 hubs of cluster sandbox done");
    let status = fleet.status();
    for (hub, entry) in &status {
        if *hub == stuck {
            assert_eq!(entry["phase"], "refused", "{entry}");
            assert_eq!(entry["step"], "no-active-users", "{entry}");
        } else {
            assert_eq!(entry["phase"], "done", "{hub}: {entry}\n{}", output.stderr);
            assert!(entry["window_ms"].as_u64().is_some(), "{hub}: {entry}");
        }
    }
    for (hub, (phase, step, _)) in &fleet.marks() {
        if *hub == stuck {
            assert_eq!(phase, "refused", "{hub}");
            assert_eq!(step, "no-active-users", "{hub}");
        } else {
            assert_eq!(phase, "done", "{hub}");
            assert!(step.is_null(), "{hub}: {step}");
        }
    }
    let homes = fleet.sandbox().join("nfs");
    for hub in &fleet.fleet.hubs {
        let old = tree(&homes.join("10.0.0.7/homes").join(&hub.name));
        if hub.name == stuck {
            continue;
        }
        let new = tree(&homes.join("10.0.0.9/homes").join(&hub.name));
        assert_eq!(old, new, "{}: the new tree differs", hub.name);
    }

    // Values: each migrated hub's serverIP moved to the new server, on its own line only;
    // the shared file, which both sharing hubs read, did not change (each got an override
    // in its own file), nor did the refused hub's.
    let after = fleet.values_files();
    for (file, text) in &after {
        let (added, removed) = changed_lines(&original[file], text);
        let hub = file.strip_suffix(".values.yaml").unwrap_or(file);
        if *file == SHARED_VALUES || hub == stuck || !file.ends_with(".values.yaml") {
            assert_eq!(&original[file], text, "{file} changed");
        } else if sharing.iter().any(|name| name == hub) {
            assert_eq!(added, ["nfs:", "  pv:", "    serverIP: 10.0.0.9"], "{file}");
            assert!(removed.is_empty(), "{file}: {removed:?}");
        } else if file.starts_with("enc-") || file == "common.values.yaml" {
            assert_eq!(&original[file], text, "{file} changed");
        } else {
            assert_eq!(added, ["    serverIP: 10.0.0.9"], "{file}");
            assert_eq!(removed, ["    serverIP: 10.0.0.7"], "{file}");
        }
    }

    // Again: the five are done and stay so; the refused hub is refused again.
    fleet
        .run(&[
            "--concurrency",
            "3",
            "--approve",
            "start-maintenance",
            "--skip-hub",
            &stuck,
        ])
        .status(0)
        .stderr_has("every step is done");
}

#[test]
fn a_single_hub_run_during_the_fleets_exits_4_and_ctrl_c_stops_the_fleet() {
    let fleet = SandboxFleet::new();
    let stuck = fleet.fleet.stuck_hub().expect("a stuck hub").name.clone();
    // The stuck hub waits a long time for its users: the fleet holds it meanwhile.
    let args = fleet.args(
        "run",
        &[
            "--hub",
            &stuck,
            "--hub",
            "staging",
            "--concurrency",
            "2",
            "--yes",
            "--var",
            "active_user_checks=600",
            "--var",
            "active_user_check_interval=1s",
        ],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(&args)
        .current_dir(fleet.test.dir())
        .env("NO_COLOR", "1")
        .env("HOME", fleet.test.dir())
        .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
        .env_remove("RUNBOOK_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(fleet.test.path("fleet.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn the fleet");
    let state = fleet.sandbox().join("state/runs");
    let run_of = |hub: &str| -> Option<(PathBuf, Value)> {
        for entry in std::fs::read_dir(&state).ok()? {
            let dir = entry.ok()?.path();
            let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
            let started = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| event["event"] == "run_started")?;
            if started["params"]["hub"] == hub {
                return Some((dir, started));
            }
        }
        None
    };
    common::wait_until(
        "the stuck hub waits for its users",
        Duration::from_secs(120),
        || {
            run_of(&stuck).is_some_and(|(dir, _)| {
                std::fs::read_to_string(dir.join("journal.jsonl"))
                    .unwrap_or_default()
                    .contains(r#""event":"approved""#)
            })
        },
    );

    // The same hub's run, by hand, with the same params: its lock is held.
    let (_, started) = run_of(&stuck).expect("the stuck hub's run");
    let mut single = vec![
        "--kubeconfig".to_string(),
        fleet.sandbox().join("kubeconfig").display().to_string(),
        "--state-dir".to_string(),
        fleet.sandbox().join("state").display().to_string(),
        "run".to_string(),
        NFS_PLAYBOOK.to_string(),
        "--yes".to_string(),
    ];
    for (name, value) in started["params"].as_object().expect("params") {
        let value = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        single.push("--var".into());
        single.push(format!("{name}={value}"));
    }
    fleet
        .test
        .run_args(&single)
        .status(4)
        .stderr_has("is locked by");

    // Ctrl-C: the fleet stops its hubs where they are, exits 130, and says so.
    nix_kill(child.id(), libc::SIGINT);
    let status = child.wait().expect("wait for the fleet");
    assert_eq!(status.code(), Some(130));
    let statuses = fleet.status();
    assert_eq!(
        statuses[&stuck]["phase"], "interrupted",
        "{}",
        statuses[&stuck]
    );
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child this test started.
    let result = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(result, 0, "kill {pid}");
}

/// A playbook whose outcome each hub's vars file decides.
const DEMO_PLAYBOOK: &str = r#"runbook: 1
name: fleet-demo
params:
  cluster: {required: true}
  hub: {required: true}
  outcome: {default: done}
maintenance_window: {from: gate, to: finish}
steps:
  - id: prepare
    run: [sh, -c, 'if [ "$0" = fail ]; then echo "disk full on {{ hub }}" >&2; echo "second line" >&2; exit 1; fi', "{{ outcome }}"]
  - id: guard
    require: "outcome != 'refuse'"
    run: ["true"]
  - id: gate
    pause: "Go on with {{ hub }}?"
  - id: finish
    run: ["true"]
"#;

const DEMO_CLUSTER: &str = r#"name: demo
provider: gcp
hubs:
- name: alpha
  helm_chart_values_files: [alpha.values.yaml]
- name: bravo
- name: charlie
- name: delta
- name: echo
"#;

fn demo() -> Test {
    Test::new()
        .playbook(DEMO_PLAYBOOK)
        .file("config/clusters/demo/cluster.yaml", DEMO_CLUSTER)
        .file("vars/demo/bravo.yaml", "outcome: fail\n")
        .file("vars/demo/charlie.yaml", "outcome: refuse\n")
}

/// Output with times and durations made stable.
fn scrubbed(text: &str) -> String {
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?").expect("regex");
    let duration = regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b|\b\d+m\d\ds\b").expect("regex");
    let window = regex::Regex::new(r#""window_ms": \d+"#).expect("regex");
    let text = time.replace_all(text, "[TIME]");
    let text = window.replace_all(&text, r#""window_ms": "[MS]""#);
    duration.replace_all(&text, "[DURATION]").into_owned()
}

/// A scrubbed table, its padding (whose width follows times and durations) made two spaces.
fn scrubbed_table(text: &str) -> String {
    let spaces = regex::Regex::new(r"  +").expect("regex");
    spaces.replace_all(&scrubbed(text), "  ").into_owned()
}

#[test]
fn status_in_text_json_and_markdown() {
    let test = demo();
    let fleet = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["fleet", "run", "playbook.yaml", "--cluster", "demo"];
        args.extend(extra);
        args.into_iter().map(str::to_string).collect()
    };
    // Everyone but echo: alpha and delta stop at the gate, bravo fails, charlie is refused.
    test.run_args(&fleet(&["--skip-hub", "echo", "--concurrency", "2"]))
        .status(1)
        .stderr_has("[bravo] ✗ prepare failed")
        .stderr_has("[charlie] ✗ guard refused")
        .stderr_has("[delta] ⏸ gate waits for approval");
    // Then alpha goes through its gate.
    test.run_args(&fleet(&["--hub", "alpha", "--approve", "gate"]))
        .status(0);

    let status = |format: &str| {
        test.run_args(&[
            "fleet",
            "status",
            "playbook.yaml",
            "--cluster",
            "demo",
            "--format",
            format,
        ])
        .status(1)
    };
    insta::assert_snapshot!("status_text", scrubbed_table(&status("text").stdout));
    insta::assert_snapshot!("status_json", scrubbed(&status("json").stdout));
    insta::assert_snapshot!("status_markdown", scrubbed(&status("markdown").stdout));

    // Every hub done: exit 0.
    test.run_args(&fleet(&["--hub", "delta", "--approve", "gate"]))
        .status(0);
    test.run_args(&[
        "fleet",
        "status",
        "playbook.yaml",
        "--cluster",
        "demo",
        "--hub",
        "alpha",
        "--hub",
        "delta",
    ])
    .status(0)
    .stdout_has("2 of 2 hubs of cluster demo done");
}

#[test]
fn max_failures_stops_starting_hubs() {
    let test = demo()
        .file("vars/demo/alpha.yaml", "outcome: fail\n")
        .file("vars/demo/charlie.yaml", "outcome: done\n");
    // One at a time: alpha fails, bravo fails, and nothing more starts.
    test.run_args(&[
        "fleet",
        "run",
        "playbook.yaml",
        "--cluster",
        "demo",
        "--max-failures",
        "2",
    ])
    .status(1)
    .stderr_has("charlie: not started (--max-failures reached)")
    .stderr_has("echo: not started (--max-failures reached)")
    .stderr_lacks("[charlie]");
}

#[test]
fn bad_input_is_refused_before_any_hub_starts() {
    let nothing_started = |test: &Test| assert!(!test.path(".runbook").exists());
    let run = |test: &Test, extra: &[&str]| {
        let mut args = vec!["fleet", "run", "playbook.yaml", "--cluster", "demo"];
        args.extend(extra);
        test.run_args(&args)
    };

    let test = demo().file("config/clusters/demo/cluster.yaml", "name: demo\nhubs: [\n");
    run(&test, &[]).status(2).stderr_has("cluster.yaml:");
    nothing_started(&test);

    let test = demo().file(
        "config/clusters/demo/cluster.yaml",
        "name: demo\nprovider: gcp\n",
    );
    run(&test, &[])
        .status(2)
        .stderr_has("lists no hubs")
        .stderr_has("config/clusters/demo/cluster.yaml:1:1");
    nothing_started(&test);

    let test = demo();
    run(&test, &["--hub", "alpah"])
        .status(2)
        .stderr_has("--hub alpah")
        .stderr_has("did you mean `alpha`?");
    run(&test, &["--concurrency", "0"])
        .status(2)
        .stderr_has("--concurrency");
    nothing_started(&test);

    let test = demo().file("vars/demo/foxtrot.yaml", "outcome: done\n");
    run(&test, &[])
        .status(2)
        .stderr_has("vars/demo/foxtrot.yaml:1:1")
        .stderr_has("hub `foxtrot`");
    nothing_started(&test);

    // A hub's vars file with a param the playbook does not have.
    let test = demo().file("vars/demo/delta.yaml", "outcom: done\n");
    run(&test, &[])
        .status(2)
        .stderr_has("hub `delta`")
        .stderr_has("vars/demo/delta.yaml:1:1");
    nothing_started(&test);

    let test = demo();
    run(&test, &["--var", "hub=alpha"])
        .status(2)
        .stderr_has("--var hub=alpha");
    nothing_started(&test);
}

impl SandboxFleet {
    /// The events of each hub's journal, by hub.
    fn journals(&self) -> BTreeMap<String, Vec<Value>> {
        let mut journals = BTreeMap::new();
        let Ok(runs) = std::fs::read_dir(self.sandbox().join("state/runs")) else {
            return journals;
        };
        for run in runs {
            let dir = run.expect("entry").path();
            let events: Vec<Value> = std::fs::read_to_string(dir.join("journal.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            let hub = events
                .iter()
                .find(|event| event["event"] == "run_started")
                .and_then(|event| event["params"]["hub"].as_str())
                .map(str::to_string);
            if let Some(hub) = hub {
                journals.insert(hub, events);
            }
        }
        journals
    }
}

/// The notes of `step` that started a copy agent in a pod.
fn agents_started(events: &[Value], step: &str) -> usize {
    events
        .iter()
        .filter(|event| {
            event["event"] == "step_note"
                && event["step"] == step
                && event["data"]["sync"] == "agent"
        })
        .count()
}

#[test]
fn a_kill_9_of_the_fleet_during_the_copies_then_fleet_run_again_repeats_nothing() {
    let fleet = SandboxFleet::with_hubs(3);
    let args = fleet.args("run", &["--concurrency", "3"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(&args)
        .current_dir(fleet.test.dir())
        .env("NO_COLOR", "1")
        .env("HOME", fleet.test.dir())
        .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
        .env_remove("RUNBOOK_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(fleet.test.path("fleet.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn the fleet");
    common::wait_until(
        "a hub's copy runs in its pod",
        Duration::from_secs(120),
        || {
            fleet
                .journals()
                .values()
                .any(|events| agents_started(events, "initial-copy") > 0)
        },
    );
    child.kill().expect("kill -9 the fleet");
    child.wait().expect("reap the fleet");
    let before: BTreeMap<String, usize> = fleet
        .journals()
        .iter()
        .map(|(hub, events)| (hub.clone(), agents_started(events, "initial-copy")))
        .collect();

    let again = fleet
        .run(&["--concurrency", "3"])
        .status(5)
        .stderr_has("0 of 3 hubs of cluster sandbox done");
    let journals = fleet.journals();
    assert_eq!(journals.len(), 3);
    for (hub, events) in &journals {
        // A copy the killed fleet had started was re-attached to (or collected, finished)
        // rather than started again; a new agent is started only when the one journaled
        // before the kill had not begun (the pod has no trace of it), never beside one.
        let said = |what: &str| {
            again
                .stderr
                .contains(&format!("[{hub}] [initial-copy] {what}"))
        };
        let after = agents_started(events, "initial-copy");
        if said("re-attaching to the copy running") || said("collecting the copy that finished") {
            assert_eq!(after, before.get(hub).copied().unwrap_or(0), "{hub}");
            assert!(!said("started the copy"), "{hub}: {}", again.stderr);
        } else {
            assert!(said("started the copy"), "{hub}: {}", again.stderr);
            assert_eq!(after, before.get(hub).copied().unwrap_or(0) + 1, "{hub}");
        }
        assert!(after <= 2, "{hub}: {after} agents");
        // No step was done twice.
        let mut done: BTreeMap<String, usize> = BTreeMap::new();
        for event in events {
            if event["event"] == "step_finished"
                && (event["status"] == "ok" || event["status"] == "changed")
            {
                *done
                    .entry(event["step"].as_str().expect("step").to_string())
                    .or_default() += 1;
            }
        }
        for (step, times) in done {
            assert_eq!(times, 1, "{hub}: {step} done {times} times");
        }
        let homes = fleet.sandbox().join("nfs");
        assert_eq!(
            tree(&homes.join("10.0.0.7/homes").join(hub)),
            tree(&homes.join("10.0.0.9/homes").join(hub)),
            "{hub}"
        );
    }
}

#[test]
fn with_the_state_in_the_cluster_each_hub_has_its_lease_and_journal_there() {
    let sandbox =
        common::Sandbox::start("apiVersion: v1\nkind: Namespace\nmetadata: {name: alpha}\n");
    let kubeconfig = sandbox.kubeconfig().display().to_string();
    let test = demo();
    let fleet = |command: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--kubeconfig",
            &kubeconfig,
            "fleet",
            command,
            "playbook.yaml",
            "--cluster",
            "demo",
            "--state",
            "cluster",
        ];
        args.extend(extra);
        args.into_iter().map(str::to_string).collect()
    };
    test.run_args(&fleet(
        "run",
        &["--hub", "alpha", "--hub", "delta", "--concurrency", "2"],
    ))
    .status(5);
    let leases = sandbox.kubectl(&["get", "lease", "-n", "runbook", "-o", "name"]);
    assert_eq!(leases.lines().count(), 2, "{leases}");
    let journals = sandbox.kubectl(&["get", "configmap", "-n", "runbook", "-o", "name"]);
    assert!(journals.lines().count() >= 2, "{journals}");
    // The hub's namespace (alpha has one, delta none) says where its run is.
    let phase = sandbox.kubectl(&[
        "get",
        "ns",
        "alpha",
        "-o",
        "jsonpath={.metadata.labels.runbook\\.dev/phase} {.metadata.labels.runbook\\.dev/step}",
    ]);
    assert_eq!(phase.trim(), "at-gate gate");

    // Another machine (another state directory) sees the same hubs from the cluster.
    let elsewhere = Test::new()
        .playbook(DEMO_PLAYBOOK)
        .file("config/clusters/demo/cluster.yaml", DEMO_CLUSTER);
    elsewhere
        .run_args(&fleet(
            "status",
            &["--hub", "alpha", "--hub", "delta", "--format", "json"],
        ))
        .status(1)
        .stdout_has(r#""phase": "at_gate""#);
    elsewhere
        .run_args(&fleet(
            "run",
            &["--hub", "alpha", "--hub", "delta", "--yes"],
        ))
        .status(0);
    test.run_args(&fleet("status", &["--hub", "alpha", "--hub", "delta"]))
        .status(0)
        .stdout_has("2 of 2 hubs of cluster demo done");
}

#[test]
fn plan_shows_each_hubs_plan_and_run_json_is_every_hubs_events() {
    let test = demo();
    let output = test
        .run_args(&[
            "fleet",
            "plan",
            "playbook.yaml",
            "--cluster",
            "demo",
            "--skip-hub",
            "echo",
            "--format",
            "json",
        ])
        .status(0);
    let plan: Value = serde_json::from_str(&output.stdout).expect("plan JSON");
    let hubs: Vec<&str> = plan["hubs"]
        .as_array()
        .expect("hubs")
        .iter()
        .map(|hub| hub["hub"].as_str().expect("hub"))
        .collect();
    assert_eq!(hubs, ["alpha", "bravo", "charlie", "delta"]);
    // The guard reads charlie's own vars file.
    let charlie = &plan["hubs"][2]["plan"]["steps"];
    assert_eq!(charlie[1]["id"], "guard");
    assert_eq!(charlie[1]["decision"], "refused", "{charlie}");
    assert!(!test.path(".runbook").exists(), "a plan wrote state");

    let run = test
        .run_args(&[
            "fleet",
            "run",
            "playbook.yaml",
            "--cluster",
            "demo",
            "--hub",
            "alpha",
            "--hub",
            "delta",
            "--yes",
            "--format",
            "json",
        ])
        .status(0);
    let events = run.events();
    let finished: Vec<&Value> = events
        .iter()
        .filter(|event| event["event"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 2, "{}", run.stdout);
    assert!(finished.iter().all(|event| event["status"] == "ok"));
}
