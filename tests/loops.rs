//! End-to-end tests of `loop:`: a step runs once per item, each item journaled as a step of
//! its own (`STEP[KEY]`), so that a failed or killed run resumes without redoing the items
//! that were done; a loop over a lookup's result in the sandbox; a loop over something that
//! is not a list.

use crate::common;

use std::time::Duration;

use common::{Sandbox, Test};

/// Greets each user; `bob` fails until the file `fixed` exists, and `carol` waits for the
/// file `go` when `slow` exists. The last step sees what the loop registered.
const GREET: &str = r#"
runbook: 1
name: greet
params:
  users: {default: "alice,bob,carol"}
steps:
  - id: list
    run: [echo, "{{ users }}"]
    register: listed
  - id: greet
    loop: "listed.stdout.split(',')"
    run:
      shell: true
      command: |
        test {{ item }} != bob -o -e fixed || exit 1
        if test {{ item }} = carol -a -e slow; then echo started > carol.started; while ! test -e go; do sleep 0.05; done; fi
        echo "hi {{ item }}" >> ran.log; echo "hi {{ item }}"
    register: greeted
  - id: count
    run: {shell: true, command: "echo '{{ greeted.results | length }}: {{ greeted.results | map(attribute=\"stdout\") | join(\", \") }}' >> ran.log"}
"#;

fn finished(test: &Test) -> Vec<String> {
    test.journal()
        .iter()
        .filter(|event| event["event"] == "step_finished" && event["status"] != "failed")
        .map(|event| event["step"].as_str().expect("a step id").to_string())
        .collect()
}

#[test]
fn each_item_runs_once_and_a_failed_item_resumes_without_redoing_the_others() {
    let test = Test::new().playbook(GREET).args(["run", "playbook.yaml"]);
    test.run().status(1).stderr_has("greet[bob] failed");
    assert_eq!(test.lines_of("ran.log"), ["hi alice"]);
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run()
        .status(0)
        .stderr_has("greet[alice] skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        [
            "hi alice",
            "hi bob",
            "hi carol",
            "3: hi alice, hi bob, hi carol"
        ],
        "an item ran twice, or the loop's registered results lost the item done before"
    );
    assert_eq!(
        finished(&test),
        [
            "list",
            "greet[alice]",
            "greet[bob]",
            "greet[carol]",
            "count"
        ]
    );
    // `status` shows the items in the loop step's place.
    let status = test.run_args(&["status"]).status(0);
    let order: Vec<&str> = status
        .stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("✓ "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        order,
        [
            "list",
            "greet[alice]",
            "greet[bob]",
            "greet[carol]",
            "count"
        ]
    );
}

#[test]
fn a_run_killed_in_an_item_resumes_with_that_item() {
    let test = Test::new()
        .playbook(GREET)
        .file("fixed", "")
        .file("slow", "")
        .args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    common::wait_until("carol's item starts", Duration::from_secs(30), || {
        test.path("carol.started").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(test.path("go"), "").unwrap();
    test.run().status(0);
    assert_eq!(
        test.lines_of("ran.log"),
        [
            "hi alice",
            "hi bob",
            "hi carol",
            "3: hi alice, hi bob, hi carol"
        ]
    );
}

#[test]
fn only_runs_every_item_of_a_loop_step_again() {
    let test = Test::new()
        .playbook(GREET)
        .file("fixed", "")
        .args(["run", "playbook.yaml"]);
    test.run().status(0);
    test.run_args(&["run", "playbook.yaml", "--only", "greet"])
        .status(0);
    assert_eq!(test.lines_of("ran.log").len(), 4 + 3);
}

#[test]
fn plan_lists_each_item_of_a_list_it_can_render() {
    let playbook = r#"
runbook: 1
name: hubs
params:
  hubs: {default: "staging,prod"}
steps:
  - id: redeploy
    loop: "{{ hubs.split(',') }}"
    run: [echo, deployer, deploy, "{{ item }}"]
  - id: each
    loop: [1, "{{ hubs }}", {name: x}]
    run: [echo, "{{ item }}"]
"#;
    let test = Test::new().playbook(playbook);
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    insta::assert_snapshot!("plan", plan.stdout);
}

#[test]
fn a_loop_over_something_that_is_not_a_list_is_invalid_input() {
    let playbook = r#"
runbook: 1
name: not-a-list
params:
  users: {default: "alice,bob"}
steps:
  - id: greet
    loop: users
    run: [echo, "{{ item }}"]
"#;
    let test = Test::new()
        .playbook(playbook)
        .args(["run", "playbook.yaml"]);
    let output = test.run().status(2);
    assert!(
        output
            .stderr
            .contains("step `greet`: `loop:` gives a string, not a list"),
        "{}",
        output.stderr
    );
    let failed = test
        .journal()
        .into_iter()
        .find(|event| event["event"] == "step_finished")
        .expect("the step is journaled");
    assert_eq!(failed["step"], "greet");
    assert_eq!(failed["status"], "failed");
}

#[test]
fn a_loop_over_a_lookup_s_result_in_the_sandbox() {
    let sandbox = Sandbox::start(include_str!("data/scenarios/hub.yaml"));
    let playbook = r#"
runbook: 1
name: mark-users
params:
  hub: {default: staging}
steps:
  - id: users
    kube.count: {kind: Pod, namespace: "{{ hub }}", selector: component=singleuser-server}
    register: users
  - id: mark
    loop: users.names
    kube.patch:
      kind: Pod
      namespace: "{{ hub }}"
      name: "{{ item }}"
      merge: {metadata: {labels: {runbook.dev/seen: "yes"}}}
"#;
    let test = Test::new()
        .playbook(playbook)
        .env("KUBECONFIG", sandbox.kubeconfig().to_str().unwrap())
        .args(["run", "playbook.yaml"]);
    test.run().status(0).stderr_has("mark[jupyter-alice]");
    let marked = sandbox.kubectl(&[
        "get",
        "pods",
        "-n",
        "staging",
        "-l",
        "runbook.dev/seen=yes",
        "-o",
        "name",
    ]);
    assert_eq!(marked.trim(), "pod/jupyter-alice");
}
