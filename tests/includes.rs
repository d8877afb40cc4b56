//! End-to-end tests of `include:`: an included playbook's steps run in the include step's
//! place with prefixed ids and the params the include gives them, in names of their own;
//! a failed run resumes inside the included steps; `when` skips them all; `plan` shows them.

use crate::common;

use common::Test;

/// An included playbook: greets `who`, then records what it said. `again` fails until the
/// file `fixed` exists.
const GREET: &str = r#"
runbook: 1
name: greet
params:
  who: {required: true}
  times: {type: int, default: 1}
vars:
  greeting: "hello {{ who }} x{{ times }}"
steps:
  - id: greet
    run: {shell: true, command: "echo '{{ greeting }}' >> ran.log; echo '{{ greeting }}'"}
    register: said
  - id: again
    run: {shell: true, command: "test -e fixed && echo 'again: {{ said.stdout }}' >> ran.log"}
"#;

/// A playbook that includes `greet` twice, with a register of its own named like the
/// included one's.
const TWICE: &str = r#"
runbook: 1
name: twice
params:
  hub: {default: staging}
  who: {default: nobody}
steps:
  - id: first
    run: {shell: true, command: "echo 'first {{ who }}' >> ran.log; echo outer"}
    register: said
  - id: hub
    include: parts/greet.yaml
    params:
      who: "{{ hub }}"
      times: 2
  - id: users
    name: Greet the users
    include: parts/greet.yaml
    params:
      who: users
  - id: last
    run: {shell: true, command: "echo 'last {{ said.stdout }}' >> ran.log"}
"#;

fn twice() -> Test {
    Test::new()
        .playbook(TWICE)
        .file("parts/greet.yaml", GREET)
        .file("fixed", "")
        .args(["run", "playbook.yaml"])
}

#[test]
fn included_steps_run_in_place_with_prefixed_ids_and_names_of_their_own() {
    let test = twice();
    test.run().status(0);
    assert_eq!(
        test.lines_of("ran.log"),
        [
            "first nobody",
            "hello staging x2",
            "again: hello staging x2",
            "hello users x1",
            "again: hello users x1",
            "last outer",
        ],
        "each include sees its own params and registers, and the playbook keeps its own"
    );
    let finished: Vec<String> = test
        .journal()
        .iter()
        .filter(|event| event["event"] == "step_finished")
        .map(|event| event["step"].as_str().expect("a step id").to_string())
        .collect();
    assert_eq!(
        finished,
        [
            "first",
            "hub.greet",
            "hub.again",
            "users.greet",
            "users.again",
            "last"
        ]
    );
}

#[test]
fn plan_shows_the_included_steps_with_their_ids_and_values() {
    let test = twice();
    let output = test.run_args(&["plan", "playbook.yaml"]).status(0);
    insta::assert_snapshot!("plan", output.stdout);
}

#[test]
fn a_run_that_failed_inside_an_include_resumes_there() {
    let test = Test::new()
        .playbook(TWICE)
        .file("parts/greet.yaml", GREET)
        .args(["run", "playbook.yaml"]);
    test.run().status(1).stderr_has("hub.again failed");
    assert_eq!(
        test.lines_of("ran.log"),
        ["first nobody", "hello staging x2"]
    );
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run()
        .status(0)
        .stderr_has("hub.greet skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        [
            "first nobody",
            "hello staging x2",
            "again: hello staging x2",
            "hello users x1",
            "again: hello users x1",
            "last outer",
        ],
        "the done steps ran again, or the registered output of `hub.greet` was lost"
    );
}

#[test]
fn an_include_whose_when_is_false_skips_its_steps_without_binding_its_params() {
    let outer = r#"
runbook: 1
name: maybe
params:
  enabled: {type: bool, default: false}
  count: {default: "not a number"}
steps:
  - id: hub
    include: parts/greet.yaml
    when: enabled
    params:
      who: hub
      times: "{{ count }}"
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#;
    let test = Test::new()
        .playbook(outer)
        .file("parts/greet.yaml", GREET)
        .file("fixed", "")
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(0)
        .stderr_has("hub.greet skipped: `when` of include `hub` is false: enabled");
    assert_eq!(test.lines_of("ran.log"), ["last"]);
    // Enabled, the param that does not convert is invalid input before anything runs.
    let enabled = test
        .run_args(&[
            "run",
            "playbook.yaml",
            "--var",
            "enabled=true",
            "--var",
            "count=3",
        ])
        .status(0);
    assert!(enabled.stderr.contains("hub.greet"), "{}", enabled.stderr);
    let refused = test
        .run_args(&["plan", "playbook.yaml", "--var", "enabled=true"])
        .status(2);
    insta::assert_snapshot!("param_that_does_not_convert", refused.stderr);
}

#[test]
fn only_runs_one_included_step() {
    let test = twice();
    test.run_args(&["run", "playbook.yaml", "--only", "users.greet"])
        .status(0);
    assert_eq!(test.lines_of("ran.log"), ["hello users x1"]);
}

#[test]
fn an_included_playbook_s_maintenance_window_is_the_run_s() {
    let inner = r#"
runbook: 1
name: offline
steps:
  - id: gate
    pause: "Lock users out?"
  - id: work
    run: [true]
  - id: back
    run: [true]
maintenance_window: {from: gate, to: back}
"#;
    let outer = r#"
runbook: 1
name: outer
steps:
  - id: prepare
    run: [true]
  - id: window
    include: offline.yaml
"#;
    let test = Test::new()
        .playbook(outer)
        .file("offline.yaml", inner)
        .args(["run", "playbook.yaml", "--yes"]);
    test.run()
        .status(0)
        .stderr_has("maintenance window (window.gate to window.back)");
    let journal = test.journal();
    let opened = journal
        .iter()
        .find(|event| event["event"] == "approved")
        .expect("the gate was approved");
    assert_eq!(opened["step"], "window.gate");
}
