//! End-to-end tests of `runbook plan`: honest decisions, three formats, no side effects.

use crate::common;

use common::Test;

const PLAYBOOK: &str = r#"
runbook: 1
name: planned
params:
  users: {type: int, default: 0}
  token: {secret: true, default: s3cr3t-value}
steps:
  - id: already-there
    check: {run: [test, -e, playbook.yaml]}
    run: {shell: true, command: "echo already-there >> ran.log"}
  - id: read-server
    run: [echo, '{"server": "10.0.0.7"}']
    register: server
  - id: use-server
    run: {shell: true, command: "echo {{ server.json.server }} >> ran.log"}
  - id: not-applicable
    when: "users > 100"
    run: {shell: true, command: "echo not-applicable >> ran.log"}
  - id: sanity
    assert: "users >= 0"
  - id: gate
    pause: "Go on with token {{ token }}?"
  - id: offline
    require: "users == 0"
    run: {shell: true, command: "echo offline >> ran.log"}
"#;

#[test]
fn plan_shows_each_decision_and_writes_nothing() {
    let test = Test::new()
        .playbook(PLAYBOOK)
        .args(["plan", "playbook.yaml", "--format", "json"]);
    let output = test.run().status(0);
    assert!(!test.path(".runbook").exists(), "plan wrote a state dir");
    assert!(!test.path("ran.log").exists(), "plan ran an action");
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let decisions: Vec<(&str, &str)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["id"].as_str().unwrap(),
                step["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("already-there", "skip"),
            ("read-server", "run"),
            ("use-server", "unknown"),
            ("not-applicable", "skip"),
            ("sanity", "run"),
            ("gate", "run"),
            ("offline", "run"),
        ]
    );
    assert!(
        plan["steps"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("depends on step `read-server`")
    );
    assert!(
        !output.stdout.contains("s3cr3t-value"),
        "plan shows a secret"
    );
    assert!(output.stdout.contains("Go on with token ***?"));
}

#[test]
fn plan_reports_a_false_guard_as_refused() {
    let output = Test::new()
        .playbook(PLAYBOOK)
        .args(["plan", "playbook.yaml", "--var", "users=3"])
        .run()
        .status(0);
    assert!(
        output.stdout.contains("refused  offline"),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("guard is false: users == 0"));
}

#[test]
fn what_the_plan_skips_the_run_skips() {
    let test = Test::new().playbook(PLAYBOOK);
    // Run part of the playbook, so the plan has journaled steps, checks and guards to judge.
    test.run_args(&["run", "playbook.yaml"]).status(5);
    let plan = test
        .run_args(&["plan", "playbook.yaml", "--format", "json"])
        .status(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let planned_skips: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["decision"] == "skip")
        .map(|step| step["id"].as_str().unwrap().to_string())
        .collect();
    assert!(planned_skips.len() >= 4, "{planned_skips:?}");
    let run = test
        .run_args(&["run", "playbook.yaml", "--yes", "--format", "json"])
        .status(0);
    let events = run.events();
    for id in &planned_skips {
        assert!(
            events
                .iter()
                .any(|event| event["event"] == "step_skipped" && event["step"] == id.as_str()),
            "the plan said `{id}` is skipped, but the run did not skip it"
        );
        assert!(
            !events
                .iter()
                .any(|event| event["event"] == "step_started" && event["step"] == id.as_str()),
            "the plan said `{id}` is skipped, but the run started it"
        );
    }
}

#[test]
fn plan_in_text_and_markdown() {
    let test = Test::new().playbook(PLAYBOOK);
    let text = test.run_args(&["plan", "playbook.yaml"]).status(0);
    insta::assert_snapshot!("plan_text", text.stdout);
    let markdown = test
        .run_args(&["plan", "playbook.yaml", "--format", "markdown"])
        .status(0);
    insta::assert_snapshot!("plan_markdown", markdown.stdout);
}

#[test]
fn a_wait_changes_nothing_so_a_later_guard_is_refused_not_unknown() {
    let sandbox = common::Sandbox::start(include_str!("data/scenarios/hub.yaml"));
    let output = Test::new()
        .playbook(
            r#"
runbook: 1
name: wait-then-delete
steps:
  - id: users-gone
    kube.wait: {kind: Pod, name: jupyter-alice, namespace: staging, for: gone, timeout: 1s}
  - id: delete-pods
    kube.delete: {kind: Pod, namespace: staging, selector: "component in (singleuser-server, shared-volume-metrics)", max: 1}
"#,
        )
        .env(
            "KUBECONFIG",
            sandbox.kubeconfig().to_str().expect("UTF-8 path"),
        )
        .args(["plan", "playbook.yaml", "--format", "json"])
        .run()
        .status(0);
    let plan: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(plan["steps"][0]["decision"], "run", "{}", output.stdout);
    assert_eq!(plan["steps"][1]["decision"], "refused", "{}", output.stdout);
}
