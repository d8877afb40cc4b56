//! End-to-end tests of `block:` with `rescue:` and `always:`: the failure, the rescue, the
//! exit code, the journal, the resume, and how `plan` shows them.

use crate::common;

use std::time::Duration;

use common::Test;

/// A block whose `risky` step fails until the file `fixed` exists; every step appends its
/// name to `ran.log`.
const SWITCH_OVER: &str = r#"
runbook: 1
name: switch-over
steps:
  - id: first
    run: {shell: true, command: "echo first >> ran.log"}
  - id: switch
    name: Switch over
    block:
      - id: offline
        run: {shell: true, command: "echo offline >> ran.log"}
      - id: risky
        run: [test, -e, fixed]
    rescue:
      - id: roll-back
        run: {shell: true, command: "echo roll-back >> ran.log"}
    always:
      - id: tidy
        run: {shell: true, command: "echo tidy >> ran.log"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#;

/// The `event` names of a journal, in order, for the events about blocks.
fn block_events(journal: &[serde_json::Value]) -> Vec<serde_json::Value> {
    journal
        .iter()
        .filter(|event| {
            event["event"]
                .as_str()
                .is_some_and(|name| name.starts_with("block_"))
        })
        .cloned()
        .collect()
}

#[test]
fn a_failed_block_runs_its_rescue_and_always_exits_1_and_a_fixed_rerun_starts_the_block_over() {
    let test = Test::new()
        .playbook(SWITCH_OVER)
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(1)
        .stderr_has("risky failed")
        .stderr_has("block switch: step risky failed; its rescue runs now, then its always steps")
        .stderr_has("block switch: risky failed and its rescue ran; the run stops here, not done")
        .stderr_has("a step failed")
        .stderr_has("\n  block switch: risky failed; its rescue ran\n  time in steps:");
    assert_eq!(
        test.lines_of("ran.log"),
        ["first", "offline", "roll-back", "tidy"],
        "the steps after the block ran, or the rescue or always did not"
    );
    let journal = test.journal();
    let blocks = block_events(&journal);
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    assert_eq!(blocks[0]["event"], "block_failed");
    assert_eq!(blocks[0]["block"], "switch");
    assert_eq!(blocks[0]["step"], "risky");
    assert_eq!(
        blocks[0]["steps"],
        serde_json::json!(["offline", "risky", "roll-back", "tidy"])
    );
    assert_eq!(blocks[1]["event"], "block_finished");
    assert_eq!(blocks[1]["failed"], "risky");
    assert_eq!(blocks[1]["rescued"], true);
    assert!(blocks[1].get("handler_failed").is_none());
    let last = journal.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["exit_code"], 1);

    // The rescue may have undone what the block did: the next run starts the block over
    // (`offline` again), skips the rescue, runs `always` again and goes on.
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run()
        .status(0)
        .stderr_has("first skipped: done in an earlier run")
        .stderr_has("roll-back skipped: rescue of block `switch`, not needed");
    assert_eq!(
        test.lines_of("ran.log"),
        [
            "first",
            "offline",
            "roll-back",
            "tidy",
            "offline",
            "tidy",
            "last"
        ]
    );
}

#[test]
fn a_block_that_succeeds_skips_its_rescue_and_a_rerun_repeats_nothing() {
    let test = Test::new()
        .playbook(SWITCH_OVER)
        .args(["run", "playbook.yaml"]);
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run().status(0);
    assert_eq!(
        test.lines_of("ran.log"),
        ["first", "offline", "tidy", "last"]
    );
    test.run()
        .status(0)
        .stderr_has("tidy skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        ["first", "offline", "tidy", "last"],
        "a rerun of a done playbook repeated steps"
    );
}

#[test]
fn a_rescue_that_fails_names_both_failures_still_runs_always_and_exits_1() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: rescue-fails
steps:
  - id: switch
    block:
      - id: risky
        run: {shell: true, command: "echo the copy broke >&2; exit 3"}
    rescue:
      - id: roll-back
        run: {shell: true, command: "echo cannot roll back >&2; exit 4"}
      - id: after-roll-back
        run: {shell: true, command: "echo after-roll-back >> ran.log"}
    always:
      - id: tidy
        run: {shell: true, command: "echo tidy >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(1)
        .stderr_has("risky failed")
        .stderr_has("exited with code 3")
        .stderr_has("roll-back failed")
        .stderr_has("block switch: risky failed, and then roll-back failed too")
        .stderr_has("the same command again: it starts the block over from its first step")
        .stderr_has("exited with code 4");
    assert_eq!(test.lines_of("ran.log"), ["tidy"]);
    let journal = test.journal();
    let blocks = block_events(&journal);
    assert_eq!(blocks[1]["event"], "block_finished");
    assert_eq!(blocks[1]["failed"], "risky");
    assert_eq!(blocks[1]["handler_failed"], "roll-back");
    assert!(
        blocks[1]["handler_error"]
            .as_str()
            .unwrap()
            .contains("exited with code 4"),
        "{blocks:#?}"
    );
    assert_eq!(journal.last().unwrap()["exit_code"], 1);
}

#[test]
fn an_always_step_runs_after_a_block_without_rescue_fails() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: always-only
steps:
  - id: work
    block:
      - id: risky
        run: [false]
    always:
      - id: tidy
        run: {shell: true, command: "echo tidy >> ran.log"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml", "--format", "json"]);
    let run = test.run().status(1);
    assert_eq!(test.lines_of("ran.log"), ["tidy"]);
    let events = run.events();
    let finished = events
        .iter()
        .find(|event| event["event"] == "block_finished")
        .expect("a block_finished event in the JSON events");
    assert_eq!(finished["rescued"], false);
    assert_eq!(finished["failed"], "risky");
}

#[test]
fn an_approval_inside_a_rescued_block_is_asked_again() {
    let test = Test::new().playbook(
        r#"
runbook: 1
name: gated
steps:
  - id: switch
    block:
      - id: lock-out
        pause: Lock the users out?
      - id: risky
        run: [test, -e, fixed]
    rescue:
      - id: roll-back
        run: {shell: true, command: "echo roll-back >> ran.log"}
"#,
    );
    test.run_args(&["run", "playbook.yaml", "--yes"]).status(1);
    assert_eq!(test.lines_of("ran.log"), ["roll-back"]);
    // The users were let back in: locking them out again needs a new approval.
    test.run_args(&["run", "playbook.yaml"])
        .status(5)
        .stderr_has("lock-out waits for approval");
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run_args(&["run", "playbook.yaml", "--approve", "lock-out"])
        .status(0);
}

#[test]
fn kill_9_in_the_rescue_then_a_rerun_starts_the_block_over() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: killed-rescue
steps:
  - id: switch
    block:
      - id: offline
        run: {shell: true, command: "echo offline >> ran.log"}
      - id: risky
        run: [test, -e, fixed]
    rescue:
      - id: roll-back
        # Long the first time; instant once the marker exists.
        run: {shell: true, command: "echo roll-back >> ran.log; if [ -e marker ]; then exit 0; fi; touch marker; sleep 60"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started" && event["step"] == "roll-back");
    while !test.path("marker").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The block failed and its rescue started: `offline` is not done any more, the failed
    // step is tried again, and with it fixed the run goes on past the block.
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run().status(0);
    assert_eq!(
        test.lines_of("ran.log"),
        ["offline", "roll-back", "offline", "last"]
    );
}

#[test]
fn kill_9_after_the_failure_before_the_rescue_then_a_rerun_tries_the_failed_step_again() {
    let test = Test::new()
        .playbook(SWITCH_OVER)
        .args(["run", "playbook.yaml"]);
    // A journal cut right after the failed step: as if the process died before the rescue.
    test.run().status(1);
    let run = std::fs::read_dir(test.path(".runbook/runs"))
        .expect("runs dir")
        .next()
        .expect("one run")
        .expect("entry");
    let journal = run.path().join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let cut = text
        .lines()
        .position(|line| line.contains("\"block_failed\""))
        .unwrap();
    let kept: Vec<&str> = text.lines().take(cut).collect();
    std::fs::write(&journal, format!("{}\n", kept.join("\n"))).unwrap();

    std::fs::write(test.path("fixed"), "").unwrap();
    test.run()
        .status(0)
        .stderr_has("offline skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        ["first", "offline", "roll-back", "tidy", "tidy", "last"]
    );
}

#[test]
fn plan_shows_the_block_its_rescue_and_always() {
    let test = Test::new().playbook(SWITCH_OVER);
    let text = test.run_args(&["plan", "playbook.yaml"]).status(0);
    insta::assert_snapshot!("plan_text", text.stdout);
    let markdown = test
        .run_args(&["plan", "playbook.yaml", "--format", "markdown"])
        .status(0);
    insta::assert_snapshot!("plan_markdown", markdown.stdout);
    let json = test
        .run_args(&["plan", "playbook.yaml", "--format", "json"])
        .status(0);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rescue = &plan["steps"][3];
    assert_eq!(rescue["id"], "roll-back");
    assert_eq!(rescue["decision"], "rescue");
    assert_eq!(rescue["part"], "rescue of switch");
}

/// A run of a saved plan whose block fails still runs the rescue: a rescue step runs in a
/// world the plan did not see, so what it reads is not held to the plan.
#[test]
fn a_saved_plan_runs_the_rescue_of_a_block_that_fails() {
    let sandbox = common::Sandbox::start(include_str!("data/scenarios/hub.yaml"));
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: saved-rescue
steps:
  - id: switch
    block:
      - id: label-namespace
        kube.patch:
          kind: Namespace
          name: staging
          merge: {metadata: {labels: {migrating: "yes"}}}
      - id: risky
        run: [test, -e, fixed]
    rescue:
      - id: unlabel-namespace
        check: "kube_get('Namespace', 'staging').metadata.labels.migrating is not defined"
        kube.patch:
          kind: Namespace
          name: staging
          merge: {metadata: {labels: {migrating: null}}}
"#,
        )
        .env(
            "KUBECONFIG",
            sandbox.kubeconfig().to_str().expect("UTF-8 path"),
        );
    test.run_args(&["plan", "playbook.yaml", "--out", "plan.json"])
        .status(0)
        .stdout_has("rescue   unlabel-namespace");
    test.run_args(&["run", "playbook.yaml", "--plan", "plan.json"])
        .status(1)
        .stderr_has("block switch: risky failed and its rescue ran");
    let namespace = sandbox
        .get("namespace", "staging", None)
        .expect("the namespace");
    assert!(
        namespace["metadata"]["labels"]["migrating"].is_null(),
        "the rescue did not run: {namespace:#}"
    );
}

/// A block's `when` applies to each of its steps, rescue and always included.
#[test]
fn a_blocks_when_applies_to_its_steps() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: conditional-block
params:
  switch: {type: bool, default: false}
steps:
  - id: switch
    when: switch
    block:
      - id: risky
        when: "true"
        run: [false]
    rescue:
      - id: roll-back
        run: {shell: true, command: "echo roll-back >> ran.log"}
    always:
      - id: tidy
        run: {shell: true, command: "echo tidy >> ran.log"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(0)
        .stderr_has("risky skipped: `when` is false: (switch) and (true)")
        .stderr_has("tidy skipped: `when` is false: switch");
    assert_eq!(test.lines_of("ran.log"), ["last"]);
    test.run_args(&["run", "playbook.yaml", "--var", "switch=true"])
        .status(1)
        .stderr_has("block switch: risky failed and its rescue ran");
}
