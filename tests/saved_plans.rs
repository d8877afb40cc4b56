//! End-to-end tests of saved plans: `plan --out FILE` records each step's decision and what
//! it read; `run --plan FILE` runs exactly that plan, and stops with exit 6 before changing
//! anything when the cluster (changed here with the real kubectl) no longer reads the same.

use crate::common;

use common::{Sandbox, Test};

const HUB: &str = include_str!("data/scenarios/hub.yaml");

const PLAYBOOK: &str = r#"
runbook: 1
name: saved
params:
  hub: {default: staging}
  token: {secret: true, default: s3cr3t-value}
steps:
  - id: marked
    check: {run: [test, -e, marker]}
    run: {shell: true, command: "echo marked >> ran.log"}
  - id: label-namespace
    kube.patch:
      kind: Namespace
      name: "{{ hub }}"
      merge: {metadata: {labels: {migrating: "yes"}}}
  - id: retain-pv
    require: "kube_get('PersistentVolume', hub ~ '-home-nfs').spec.persistentVolumeReclaimPolicy == 'Delete'"
    kube.patch:
      kind: PersistentVolume
      name: "{{ hub }}-home-nfs"
      merge: {spec: {persistentVolumeReclaimPolicy: Retain}}
  - id: turn-off-nfs
    values.set:
      file: hub.values.yaml
      set: {nfs.enabled: false, nfs.token: "{{ token }}"}
"#;

const VALUES: &str = "nfs:\n  enabled: true\n  server: 10.0.0.7\n";

fn test_with(sandbox: &Sandbox) -> Test {
    Test::new()
        .playbook(PLAYBOOK)
        .file("hub.values.yaml", VALUES)
        .file("marker", "")
        .env(
            "KUBECONFIG",
            sandbox.kubeconfig().to_str().expect("UTF-8 path"),
        )
}

fn reclaim_policy(sandbox: &Sandbox) -> String {
    let pv = sandbox.get("pv", "staging-home-nfs", None).expect("the PV");
    pv["spec"]["persistentVolumeReclaimPolicy"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn namespace_labels(sandbox: &Sandbox) -> serde_json::Value {
    let namespace = sandbox
        .get("namespace", "staging", None)
        .expect("the namespace");
    namespace["metadata"]["labels"].clone()
}

/// Times, hashes and resource versions as placeholders, for snapshots.
fn scrubbed(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\dT[\d:.]+Z", "[time]"),
        (r"sha256 `?[0-9a-f]{12}`?", "sha256 [hash]"),
        (r"resourceVersion \d+", "resourceVersion [version]"),
    ];
    let mut text = text.to_string();
    for (pattern, placeholder) in rules {
        let regex = regex::Regex::new(pattern).expect("regex");
        text = regex.replace_all(&text, placeholder).into_owned();
    }
    text
}

#[test]
fn a_saved_plan_records_decisions_and_readings_without_secrets() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0)
        .stdout_has("plan for playbook.yaml");
    let text = std::fs::read_to_string(test.path("plan.json")).unwrap();
    assert!(
        !text.contains("s3cr3t-value"),
        "a secret in the plan: {text}"
    );
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["playbook"]["name"], "saved");
    assert_eq!(plan["params"], serde_json::json!({"hub": "staging"}));
    assert_eq!(plan["journal_position"], 0);
    let step = |id: &str| {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|step| step["id"] == id)
            .unwrap()
            .clone()
    };
    let retain = step("retain-pv");
    assert_eq!(retain["decision"], "run");
    assert_eq!(retain["definition_sha256"].as_str().unwrap().len(), 64);
    let pv = &retain["readings"][0];
    assert_eq!(pv["type"], "object");
    assert_eq!(pv["kind"], "PersistentVolume");
    assert_eq!(pv["name"], "staging-home-nfs");
    assert!(
        pv["uid"].is_string() && pv["resource_version"].is_string(),
        "{pv}"
    );
    assert_eq!(
        pv["content"]["spec"]["persistentVolumeReclaimPolicy"],
        "Delete"
    );
    assert!(pv["content"]["metadata"]["resourceVersion"].is_null());
    let values = &step("turn-off-nfs")["readings"][0];
    assert_eq!(values["type"], "file");
    assert_eq!(values["path"], "hub.values.yaml");
    assert_eq!(values["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(step("marked")["decision"], "skip");
}

#[test]
fn a_change_since_the_plan_stops_the_run_before_anything_changes() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    sandbox.kubectl(&[
        "patch",
        "pv",
        "staging-home-nfs",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
    ]);
    let output = test
        .run_args(&["run", "playbook.yaml", "--plan", "plan.json", "--yes"])
        .status(6)
        .stderr_has("retain-pv")
        .stderr_has(
            "PersistentVolume staging-home-nfs: spec.persistentVolumeReclaimPolicy was Delete, is Retain",
        );
    insta::assert_snapshot!("plan_changed", scrubbed(&output.stderr_scrubbed()));
    let events = test
        .run_args(&[
            "run",
            "playbook.yaml",
            "--plan",
            "plan.json",
            "--format",
            "json",
        ])
        .status(6)
        .events();
    let changed = events
        .iter()
        .find(|event| event["event"] == "plan_changed")
        .expect("a plan_changed event");
    assert_eq!(changed["step"], "retain-pv");
    assert_eq!(changed["before_any_step"], true);
    assert_eq!(
        changed["changes"][0],
        "PersistentVolume staging-home-nfs: spec.persistentVolumeReclaimPolicy was Delete, is Retain"
    );
    assert_eq!(events.last().unwrap()["exit_code"], 6);
    // Stopped before its first step: the namespace is not labelled, the file untouched.
    assert!(
        namespace_labels(&sandbox).get("migrating").is_none(),
        "{}",
        namespace_labels(&sandbox)
    );
    assert_eq!(
        std::fs::read_to_string(test.path("hub.values.yaml")).unwrap(),
        VALUES
    );
    // Nothing was journaled either: once the PV is back as planned, the plan holds again.
    sandbox.kubectl(&[
        "patch",
        "pv",
        "staging-home-nfs",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}"#,
    ]);
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(0);
    assert_eq!(reclaim_policy(&sandbox), "Retain");
}

#[test]
fn an_unchanged_plan_runs_and_skips_what_the_plan_skips() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    // Read by a command, which runbook does not see: the plan's `skip` holds.
    std::fs::remove_file(test.path("marker")).unwrap();
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(0)
        .stderr_has("marked skipped: the plan skips it");
    assert_eq!(reclaim_policy(&sandbox), "Retain");
    assert_eq!(namespace_labels(&sandbox)["migrating"], "yes");
    assert!(!test.path("ran.log").exists(), "a step the plan skips ran");
    let values = std::fs::read_to_string(test.path("hub.values.yaml")).unwrap();
    assert!(values.contains("enabled: false"), "{values}");
    // The run moved the journal: the same plan again is a plan of another moment.
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(6)
        .stderr_has("a run went on since");
}

#[test]
fn a_changed_values_file_is_named() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    std::fs::write(test.path("hub.values.yaml"), "nfs:\n  enabled: maybe\n").unwrap();
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(6)
        .stderr_has("turn-off-nfs")
        .stderr_has("file hub.values.yaml: its content changed");
    assert_eq!(reclaim_policy(&sandbox), "Delete");
}

#[test]
fn a_plan_too_old_is_refused() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    let path = test.path("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    plan["created"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&path, plan.to_string()).unwrap();
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(2)
        .stderr_has("longer than --plan-max-age 24h");
    assert_eq!(reclaim_policy(&sandbox), "Delete");
    assert!(
        !test.path(".runbook").exists(),
        "a refused plan started a run"
    );
}

#[test]
fn a_file_that_is_not_a_plan_of_this_playbook_and_params_is_refused() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox).file("notes.json", "this is not JSON\n");
    test.run_args(&["run", "playbook.yaml", "--plan", "notes.json"])
        .status(2)
        .stderr_has("--plan notes.json is not a saved plan: it is not JSON");
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--plan",
        "plan.json",
        "--var",
        "hub=production",
    ])
    .status(2)
    .stderr_has("--plan plan.json was made with other params: hub was staging, is production");
    let other = PLAYBOOK.replace("name: saved", "name: other");
    let test = test.file("other.yaml", &other);
    test.run_args(&["run", "other.yaml", "--plan", "plan.json"])
        .status(2)
        .stderr_has("is a plan of playbook `saved`");
    let edited = PLAYBOOK.replace("migrating: \"yes\"", "migrating: \"soon\"");
    let test = test.file("playbook.yaml", &edited);
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(2)
        .stderr_has("the playbook's steps changed since the plan: `label-namespace` changed");
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json", "--restart"])
        .status(2)
        .stderr_has("--restart cannot be used with it");
    assert_eq!(reclaim_policy(&sandbox), "Delete");
    assert!(namespace_labels(&sandbox).get("migrating").is_none());
}

#[test]
fn a_saved_plan_shows_as_markdown_without_the_cluster() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(&sandbox);
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    drop(sandbox);
    let requests_free = Test::new().file(
        "plan.json",
        &std::fs::read_to_string(test.path("plan.json")).unwrap(),
    );
    let markdown = requests_free
        .run_args(&["show-plan", "plan.json", "--format", "markdown"])
        .status(0);
    insta::assert_snapshot!("saved_plan_markdown", scrubbed(&markdown.stdout));
    let json = requests_free
        .run_args(&["show-plan", "plan.json", "--format", "json"])
        .status(0);
    let shown: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(shown["steps"][2]["id"], "retain-pv");
    assert_eq!(shown["steps"][2]["decision"], "run");
    requests_free
        .run_args(&["show-plan", "playbook.yaml"])
        .status(2)
        .stderr_has("show-plan playbook.yaml: cannot read the plan");
}

/// Phase 1 on one machine, the plan made on a second, phase 2 run on a third, all through
/// the cluster's state: the saved plan holds, since the journal it saw is the cluster's.
#[test]
fn a_plan_made_on_one_machine_runs_on_another_through_the_cluster() {
    const PHASES: &str = r#"
runbook: 1
name: phases
steps:
  - id: label-namespace
    kube.patch:
      kind: Namespace
      name: staging
      merge: {metadata: {labels: {migrating: "yes"}}}
  - id: window
    pause: "Is the maintenance window open?"
  - id: retain-pv
    kube.patch:
      kind: PersistentVolume
      name: staging-home-nfs
      merge: {spec: {persistentVolumeReclaimPolicy: Retain}}
"#;
    let sandbox = Sandbox::start(HUB);
    let machine = || {
        Test::new()
            .playbook(PHASES)
            .env(
                "KUBECONFIG",
                sandbox.kubeconfig().to_str().expect("UTF-8 path"),
            )
            .env("RUNBOOK_STATE", "cluster")
    };
    let (laptop, reviewer, ci) = (machine(), machine(), machine());
    laptop
        .run_args(&["run", "playbook.yaml"])
        .status(5)
        .stderr_has("window waits for approval");
    reviewer
        .run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0)
        .stdout_has("done in an earlier run");
    let plan = std::fs::read_to_string(reviewer.path("plan.json")).unwrap();
    let ci = ci.file("plan.json", &plan);
    ci.run_args(&[
        "run",
        "playbook.yaml",
        "--plan",
        "plan.json",
        "--approve",
        "window",
    ])
    .status(0);
    assert_eq!(reclaim_policy(&sandbox), "Retain");
}

/// A change made while the run waits in an earlier step, to an object that step does not
/// write, is caught before the step that read it.
#[test]
fn a_change_during_the_run_is_caught_before_the_step_that_read_it() {
    const WINDOW: &str = r#"
runbook: 1
name: window
steps:
  - id: wait-for-window
    kube.wait: {kind: ConfigMap, namespace: staging, name: window, for: exists, timeout: 2m}
  - id: label-namespace
    kube.patch:
      kind: Namespace
      name: staging
      merge: {metadata: {labels: {migrating: "yes"}}}
  - id: retain-pv
    require: "kube_get('PersistentVolume', 'staging-home-nfs').spec.persistentVolumeReclaimPolicy == 'Delete'"
    kube.patch:
      kind: PersistentVolume
      name: staging-home-nfs
      merge: {spec: {persistentVolumeReclaimPolicy: Retain}}
"#;
    let sandbox = Sandbox::start(HUB);
    let test = Test::new().playbook(WINDOW).env(
        "KUBECONFIG",
        sandbox.kubeconfig().to_str().expect("UTF-8 path"),
    );
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0);
    let test = test.args(["run", "playbook.yaml", "--plan", "plan.json"]);
    let mut run = test.spawn();
    test.wait_for_event(|event| {
        event["event"] == "step_started" && event["step"] == "wait-for-window"
    });
    sandbox.kubectl(&[
        "patch",
        "pv",
        "staging-home-nfs",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
    ]);
    sandbox.kubectl(&["create", "configmap", "window", "-n", "staging"]);
    let status = run.wait().expect("wait for the run");
    let stderr = std::fs::read_to_string(test.path("spawned.stderr")).unwrap();
    assert_eq!(status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(
            "retain-pv: what its decision read changed since the plan; stopped before it"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "PersistentVolume staging-home-nfs: spec.persistentVolumeReclaimPolicy was Delete, is Retain"
        ),
        "{stderr}"
    );
    // The step between, whose own write is expected, ran; the one whose reading changed did not.
    assert_eq!(namespace_labels(&sandbox)["migrating"], "yes");
    let started: Vec<String> = test
        .journal()
        .iter()
        .filter(|event| event["event"] == "step_started")
        .map(|event| event["step"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(started, ["wait-for-window", "label-namespace"]);
}

const NFS_PLAYBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/nfs-migrate.yaml");

/// The NFS migration's two phases, the second from a saved plan: the plan holds through
/// the run's own changes (pods deleted and made again by their ReplicaSets, a claim that
/// goes once its pods are gone, a redeploy) and the sandbox's users logging off while
/// `no-active-users` waits for them; a second plan made before that run is then stale.
#[test]
fn the_nfs_migrations_second_phase_runs_from_a_saved_plan() {
    let test = Test::new();
    let sandbox_dir = test.path("sandbox");
    let args = |command: &str, extra: &[&str]| {
        let mut args: Vec<String> = [command, NFS_PLAYBOOK, "--sandbox", "--sandbox-dir"]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.push(sandbox_dir.display().to_string());
        args.extend(extra.iter().map(ToString::to_string));
        args
    };
    test.run_args(&args("run", &[]))
        .status(5)
        .stderr_has("start-maintenance waits for approval");
    test.run_args(&args("plan", &["--out", "phase-2.json"]))
        .status(0);
    test.run_args(&args("plan", &["--out", "stale.json"]))
        .status(0);
    test.run_args(&args("run", &["--plan", "phase-2.json", "--yes"]))
        .status(0)
        .stderr_has("every step is done");
    test.run_args(&args("run", &["--plan", "stale.json", "--yes"]))
        .status(6)
        .stderr_has("a run went on since");
}
