//! End-to-end tests of `runbook run`: resume, failures, signals, locks, approvals.

use crate::common;

use std::time::Duration;

use common::Test;

/// Three steps that append to `ran.log`, so a test can count what ran.
const THREE_STEPS: &str = r#"
runbook: 1
name: three
steps:
  - id: one
    run: {shell: true, command: "echo one >> ran.log"}
  - id: two
    run: {shell: true, command: "echo two >> ran.log"}
  - id: three
    run: {shell: true, command: "echo three >> ran.log"}
"#;

#[test]
fn a_run_then_a_rerun_that_skips_everything() {
    let test = Test::new()
        .playbook(THREE_STEPS)
        .args(["run", "playbook.yaml"]);
    test.run().status(0).stderr_has("every step is done");
    assert_eq!(test.lines_of("ran.log"), ["one", "two", "three"]);
    test.run()
        .status(0)
        .stderr_has("one skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        ["one", "two", "three"],
        "the rerun repeated steps"
    );
}

#[test]
fn a_failing_step_then_a_fixed_rerun_resumes_at_it() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: flaky
steps:
  - id: before
    run: {shell: true, command: "echo before >> ran.log"}
  - id: needs-fix
    run: [test, -e, fixed]
  - id: after
    run: {shell: true, command: "echo after >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(1)
        .stderr_has("needs-fix failed")
        .stderr_has("exited with code 1");
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run().status(0);
    assert_eq!(test.lines_of("ran.log"), ["before", "after"]);
    let statuses: Vec<String> = test
        .journal()
        .iter()
        .filter(|event| event["event"] == "step_finished" && event["step"] == "needs-fix")
        .map(|event| event["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["failed", "changed"]);
}

#[test]
fn kill_9_in_a_long_step_then_a_rerun_finishes_without_repeating_earlier_steps() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: long
steps:
  - id: first
    run: {shell: true, command: "echo first >> ran.log"}
  - id: long
    # Long the first time; instant once the marker exists.
    run: {shell: true, command: "if [ -e marker ]; then exit 0; fi; touch marker; sleep 60"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started" && event["step"] == "long");
    while !test.path("marker").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    test.run()
        .status(0)
        .stderr_has("first skipped: done in an earlier run");
    assert_eq!(test.lines_of("ran.log"), ["first", "last"]);
}

#[test]
fn sigint_stops_the_run_with_130_kills_the_command_and_a_rerun_resumes() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: interrupted
steps:
  - id: first
    run: {shell: true, command: "echo first >> ran.log"}
  - id: sleepy
    run: {shell: true, command: "if [ -e marker ]; then exit 0; fi; touch marker; sleep 60 & echo $! > sleep.pid; wait"}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started" && event["step"] == "sleepy");
    while !test.path("sleep.pid").exists() || test.lines_of("sleep.pid").is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleep_pid: i32 = test.lines_of("sleep.pid")[0].parse().unwrap();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));

    // The grandchild `sleep` went with its process group.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !common::is_alive(sleep_pid),
        "the step's grandchild survived Ctrl-C"
    );

    let journal = test.journal();
    let last = journal.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "interrupted");
    assert_eq!(last["exit_code"], 130);
    assert!(
        journal
            .iter()
            .any(|event| event["step"] == "sleepy" && event["status"] == "interrupted")
    );

    test.run().status(0);
    assert_eq!(test.lines_of("ran.log"), ["first", "last"]);
}

#[test]
fn a_second_concurrent_run_exits_4_and_names_the_holder() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: busy
steps:
  - id: wait
    run: {shell: true, command: "while [ ! -e release ]; do sleep 0.05; done"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    let mut first = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started");
    let second = test
        .run()
        .status(4)
        .stderr_has("is locked by pid")
        .stderr_has(&first.id().to_string());
    assert!(second.stderr.contains(" on ") && second.stderr.contains(" since "));
    test.run_args(&["status"])
        .status(0)
        .stdout_has("running")
        .stdout_has("held by pid");
    std::fs::write(test.path("release"), "").unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over_with_a_warning() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: stale
steps:
  - id: long
    run: {shell: true, command: "if [ -e marker ]; then exit 0; fi; touch marker; sleep 60"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    let mut child = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started");
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    test.run_args(&["list"]).status(0).stdout_has("crashed");
    test.run()
        .status(0)
        .stderr_has(&format!("took over the lock left by pid {pid}"));
}

#[test]
fn an_approval_gate_stops_with_5_without_a_terminal_and_is_journaled() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: gated
steps:
  - id: before
    run: {shell: true, command: "echo before >> ran.log"}
  - id: gate
    pause: "Lock users out?"
  - id: risky
    confirm: "Really delete?"
    run: {shell: true, command: "echo risky >> ran.log; test -e fixed"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(5)
        .stderr_has("gate waits for approval: Lock users out?")
        .stderr_has("--approve gate");
    assert_eq!(test.lines_of("ran.log"), ["before"]);
    test.run_args(&["run", "playbook.yaml", "--approve", "gate"])
        .status(5)
        .stderr_has("risky waits for approval: Really delete?");
    // Both approvals given; the step then fails, and the rerun does not ask again.
    test.run_args(&["run", "playbook.yaml", "--approve", "risky"])
        .status(1);
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run().status(0);
    assert_eq!(test.lines_of("ran.log"), ["before", "risky", "risky"]);
    let approvals: Vec<(String, String)> = test
        .journal()
        .iter()
        .filter(|event| event["event"] == "approved")
        .map(|event| {
            (
                event["step"].as_str().unwrap().into(),
                event["via"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [
            ("gate".into(), "--approve".into()),
            ("risky".into(), "--approve".into())
        ]
    );
}

#[test]
fn on_a_terminal_the_gate_asks_and_only_yes_approves() {
    let test = Test::new()
        .playbook("runbook: 1\nname: asked\nsteps:\n  - id: gate\n    pause: Lock users out?\n  - id: after\n    run: {shell: true, command: 'echo after >> ran.log'}\n")
        .args(["run", "playbook.yaml"]);
    test.run_in_terminal("n\n")
        .status(5)
        .stderr_has("approve step `gate`? Lock users out? [y/N]");
    assert!(test.lines_of("ran.log").is_empty());
    test.run_in_terminal("y\n")
        .status(0)
        .stderr_has("gate approved (terminal)");
    assert_eq!(test.lines_of("ran.log"), ["after"]);
}

#[test]
fn yes_approves_every_gate() {
    Test::new()
        .playbook("runbook: 1\nname: y\nsteps:\n  - id: gate\n    pause: ok?\n  - id: after\n    run: [true]\n")
        .args(["run", "playbook.yaml", "--yes"])
        .run()
        .status(0)
        .stderr_has("gate approved (--yes)");
}

#[test]
fn a_done_step_whose_definition_changed_is_refused_until_from_or_restart() {
    let test = Test::new()
        .playbook(THREE_STEPS)
        .args(["run", "playbook.yaml"]);
    test.run().status(0);
    let changed = THREE_STEPS.replace("echo two >>", "echo TWO >>");
    let test = test.playbook(&changed);
    test.run()
        .status(2)
        .stderr_has("step `two` was done in an earlier run, but its definition has changed since")
        .stderr_has("--from two")
        .stderr_has("--restart");
    assert_eq!(
        test.lines_of("ran.log"),
        ["one", "two", "three"],
        "a refused run ran something"
    );
    test.run_args(&["run", "playbook.yaml", "--from", "two"])
        .status(0);
    assert_eq!(
        test.lines_of("ran.log"),
        ["one", "two", "three", "TWO", "three"]
    );
    test.run_args(&["run", "playbook.yaml", "--restart"])
        .status(0);
    assert_eq!(test.lines_of("ran.log").len(), 8);
}

#[test]
fn only_runs_one_step_even_when_done() {
    let test = Test::new()
        .playbook(THREE_STEPS)
        .args(["run", "playbook.yaml"]);
    test.run().status(0);
    test.run_args(&["run", "playbook.yaml", "--only", "two"])
        .status(0);
    assert_eq!(test.lines_of("ran.log"), ["one", "two", "three", "two"]);
    test.run_args(&["run", "playbook.yaml", "--only", "tow"])
        .status(2)
        .stderr_has("--only tow")
        .stderr_has("did you mean `two`?");
}

#[test]
fn a_false_guard_refuses_with_3_after_its_retries_and_changes_nothing() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: guarded
params:
  users: {type: int}
steps:
  - id: offline
    require: "users == 0"
    retries: 2
    delay: 10ms
    run: {shell: true, command: "echo offline >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml", "--var", "users=2"]);
    test.run()
        .status(3)
        .stderr_has("offline refused: guard is false after 3 tries: users == 0");
    assert!(test.lines_of("ran.log").is_empty());
    test.run_args(&["run", "playbook.yaml", "--var", "users=0"])
        .status(0);
    assert_eq!(test.lines_of("ran.log"), ["offline"]);
}

/// A guard like the NFS playbook's "wait for active users to leave", whose tries and wait
/// come from params, so that tests and demos can shorten it.
const TEMPLATED_TRIES: &str = r#"
runbook: 1
name: guarded
params:
  users: {type: int}
  user_checks: {type: int, default: 30}
  check_interval: {default: 60s}
steps:
  - id: offline
    require: "users == 0"
    retries: "{{ user_checks }}"
    delay: "{{ check_interval }}"
    run: {shell: true, command: "echo offline >> ran.log"}
"#;

#[test]
fn retries_and_delay_can_be_templates_rendered_when_the_step_runs() {
    let test = Test::new().playbook(TEMPLATED_TRIES);
    let vars = ["--var", "user_checks=2", "--var", "check_interval=10ms"];
    let plan = test
        .run_args(&[&["plan", "playbook.yaml", "--var", "users=2"][..], &vars].concat())
        .status(0);
    assert!(
        plan.stdout.contains(
            "guard is false: users == 0; a run evaluates it again up to 2 times, 10ms apart, and stops here if it stays false"
        ),
        "{}",
        plan.stdout
    );
    let started = std::time::Instant::now();
    test.run_args(&[&["run", "playbook.yaml", "--var", "users=2"][..], &vars].concat())
        .status(3)
        .stderr_has("evaluating again in 10ms (1/2)")
        .stderr_has("offline refused: guard is false after 3 tries: users == 0");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(test.lines_of("ran.log").is_empty());
    // The defaults apply when the params are not given: 30 tries a minute apart would be
    // too long to wait for here, so the guard holds this time.
    test.run_args(&["run", "playbook.yaml", "--var", "users=0"])
        .status(0);
    assert_eq!(test.lines_of("ran.log"), ["offline"]);
}

#[test]
fn a_templated_retries_or_delay_that_renders_badly_is_invalid_input() {
    for (vars, says) in [
        (
            ["--var", "user_checks=-1"],
            "step `offline`: `retries: {{ user_checks }}` renders to `-1`, which is not a whole number of 0 or more",
        ),
        (
            ["--var", "check_interval=soon"],
            "step `offline`: `delay: {{ check_interval }}` renders to `soon`, which is not a duration such as 30, 90s, 5m or 1h30m",
        ),
    ] {
        let test = Test::new().playbook(TEMPLATED_TRIES);
        let output = test
            .run_args(&[&["run", "playbook.yaml", "--var", "users=0"][..], &vars].concat())
            .status(2)
            .stderr_has(says)
            .stderr_has("invalid input (exit 2)");
        assert!(test.lines_of("ran.log").is_empty(), "{}", output.stderr);
        let statuses: Vec<String> = test
            .journal()
            .iter()
            .filter(|event| event["event"] == "step_finished" || event["event"] == "run_finished")
            .map(|event| event["status"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(statuses, ["failed", "invalid"]);
        // `plan` says the same without running anything.
        let plan = test
            .run_args(&[&["plan", "playbook.yaml", "--var", "users=0"][..], &vars].concat())
            .status(0);
        assert!(plan.stdout.contains(says), "{}", plan.stdout);
    }

    // The step was journaled as failed, not done: once what it renders is fixed, the same
    // run (same params) evaluates it again.
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: from-env
steps:
  - id: offline
    retries: "{{ env('USER_CHECKS') }}"
    run: {shell: true, command: "echo offline >> ran.log"}
"#,
        )
        .env("USER_CHECKS", "a few")
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(2)
        .stderr_has("renders to `a few`, which is not a whole number");
    let test = test.env("USER_CHECKS", "2");
    test.run().status(0).stderr_lacks("done in an earlier run");
    assert_eq!(test.lines_of("ran.log"), ["offline"]);
}

/// A boolean option of an action (`shell` of `run`) and the step's `timeout` from params:
/// rendered when the step runs, shown by `plan`, and invalid input (exit 2) naming the step
/// and the key when what they render to does not fit.
#[test]
fn a_templated_boolean_of_an_action_is_rendered_when_the_step_runs() {
    let playbook = r#"
runbook: 1
name: templated-shell
params:
  use_shell: {type: bool, default: true}
  limit: {default: 30s}
steps:
  - id: hello
    timeout: "{{ limit }}"
    run: {command: "echo $((1 + 1)) >> ran.log", shell: "{{ use_shell }}"}
"#;
    let test = Test::new().playbook(playbook);
    test.run_args(&["plan", "playbook.yaml"])
        .status(0)
        .stdout_has("(`shell: {{ use_shell }}` is true)")
        .stdout_has("(`timeout: {{ limit }}` is 30s)");
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert_eq!(test.lines_of("ran.log"), ["2"]);

    for (vars, says) in [
        (
            ["--var", "use_shell=false"],
            "step `hello`: `shell: {{ use_shell }}` renders to `false`: `command` is a string, which needs a shell",
        ),
        (
            ["--var", "limit=soon"],
            "step `hello`: `timeout: {{ limit }}` renders to `soon`, which is not a duration",
        ),
    ] {
        let test = Test::new().playbook(playbook);
        test.run_args(&[&["run", "playbook.yaml"][..], &vars].concat())
            .status(2)
            .stderr_has(says)
            .stderr_has("invalid input (exit 2)");
        assert!(test.lines_of("ran.log").is_empty());
        let plan = test
            .run_args(&[&["plan", "playbook.yaml"][..], &vars].concat())
            .status(0);
        assert!(plan.stdout.contains(says), "{}", plan.stdout);
    }
}

/// An item of `ok_codes` from a param: rendered before the command runs, so a bad one runs
/// nothing.
#[test]
fn a_templated_exit_code_is_rendered_before_the_command_runs() {
    let playbook = r#"
runbook: 1
name: templated-ok-codes
params:
  allowed: {default: "3"}
steps:
  - id: grep
    run: {command: "echo ran >> ran.log; exit 3", shell: true, ok_codes: [0, "{{ allowed }}"]}
"#;
    let test = Test::new().playbook(playbook);
    test.run_args(&["plan", "playbook.yaml"])
        .status(0)
        .stdout_has("(`ok_codes: {{ allowed }}` is 3)");
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert_eq!(test.lines_of("ran.log"), ["ran"]);
    let test = Test::new().playbook(playbook);
    test.run_args(&["run", "playbook.yaml", "--var", "allowed=300"])
        .status(2)
        .stderr_has("step `grep`: `ok_codes: {{ allowed }}` renders to `300`, which is not an exit code from 0 to 255");
    assert!(test.lines_of("ran.log").is_empty());
}

/// `max` of `kube.delete` from a param: the guard counts against the rendered limit; a
/// limit that is not a number is invalid input and deletes nothing.
#[test]
fn a_templated_max_is_the_limit_of_a_delete() {
    let sandbox = common::Sandbox::start(include_str!("data/scenarios/hub.yaml"));
    let playbook = r#"
runbook: 1
name: templated-max
params:
  limit: {default: "1"}
steps:
  - id: delete-pods
    kube.delete: {kind: Pod, namespace: staging, selector: "component in (singleuser-server, shared-volume-metrics)", max: "{{ limit }}", wait: "{{ limit == '2' }}"}
"#;
    let test = Test::new().playbook(playbook).env(
        "KUBECONFIG",
        sandbox.kubeconfig().to_str().expect("UTF-8 path"),
    );
    let alice = || sandbox.get("pod", "jupyter-alice", Some("staging"));
    test.run_args(&["run", "playbook.yaml"])
        .status(3)
        .stderr_has("delete-pods refused: 2 Pods matching")
        .stderr_has("more than max 1");
    assert!(alice().is_some(), "a refused delete deleted");
    test.run_args(&["run", "playbook.yaml", "--var", "limit=lots"])
        .status(2)
        .stderr_has("step `delete-pods`: `max: {{ limit }}` renders to `lots`, which is not a whole number of 0 or more");
    assert!(alice().is_some(), "invalid input deleted");
    test.run_args(&["plan", "playbook.yaml", "--var", "limit=2"])
        .status(0)
        .stdout_has("`max: {{ limit }}` is 2")
        .stdout_has("`wait: {{ limit == '2' }}` is true");
    test.run_args(&["run", "playbook.yaml", "--var", "limit=2"])
        .status(0);
    assert!(
        alice().is_none(),
        "the delete within the limit did not delete"
    );
}

#[test]
fn argv_elements_are_rendered_one_by_one_and_never_split() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: argv
params:
  name: {}
steps:
  - id: args
    run: [python3, -c, "import sys, json; print(json.dumps(sys.argv[1:]))", "{{ name }}", "x"]
    register: printed
  - id: check
    assert: "printed.json == [name, 'x']"
"#,
        )
        .args(["run", "playbook.yaml", "--var", "name=a b; touch pwned"]);
    test.run().status(0);
    assert!(!test.path("pwned").exists());
}

#[test]
fn registered_output_is_restored_on_resume() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: register
steps:
  - id: produce
    run: [echo, '{"server": "10.0.0.7", "path": "/homes/"}']
    register: pv
  - id: consume
    run: {shell: true, command: "echo {{ pv.json.server }}{{ pv.json.path }} >> ran.log; test -e fixed"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run().status(1);
    std::fs::write(test.path("fixed"), "").unwrap();
    test.run()
        .status(0)
        .stderr_has("produce skipped: done in an earlier run");
    assert_eq!(
        test.lines_of("ran.log"),
        ["10.0.0.7/homes/", "10.0.0.7/homes/"]
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: slow
steps:
  - id: slow
    run:
      shell: true
      command: "sleep 30 & echo $! > sleep.pid; wait"
      timeout: 300ms
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run().status(1).stderr_has("timed out after 300ms");
    let sleep_pid: i32 = test.lines_of("sleep.pid")[0].parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !common::is_alive(sleep_pid),
        "the grandchild outlived the timeout"
    );
}

#[test]
fn retries_and_until_repeat_the_action() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: until
steps:
  - id: count
    run: {shell: true, command: "echo x >> tries.log; wc -l < tries.log"}
    register: tries
    until: "result.stdout | int >= 3"
    retries: 5
    delay: 10ms
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run().status(0).stderr_has("try 2 of 6 failed");
    assert_eq!(test.lines_of("tries.log").len(), 3);
}

#[test]
fn checks_skip_done_steps_and_when_skips_without_marking_done() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: checks
params:
  enabled: {type: bool, default: false}
steps:
  - id: by-expression
    check: "1 + 1 == 2"
    run: [false]
  - id: by-command
    check: {run: [test, -e, playbook.yaml]}
    run: [false]
  - id: by-creates
    run: {command: [false], creates: playbook.yaml}
  - id: disabled
    when: "{{ enabled }}"
    run: {shell: true, command: "echo enabled >> ran.log"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run()
        .status(0)
        .stderr_has("by-expression skipped: check is true: 1 + 1 == 2")
        .stderr_has("by-command skipped: check `test -e playbook.yaml` exited 0")
        .stderr_has("by-creates skipped: playbook.yaml exists")
        .stderr_has("disabled skipped: `when` is false");
    // `when` is evaluated again: enabling it later runs the step.
    test.run_args(&["run", "playbook.yaml", "--var", "enabled=true"])
        .status(0);
    assert_eq!(test.lines_of("ran.log"), ["enabled"]);
}

#[test]
fn json_events_follow_the_spec() {
    let output = Test::new()
        .playbook(THREE_STEPS)
        .args(["run", "playbook.yaml", "--format", "json"])
        .run()
        .status(0);
    let events = output.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "run_finished"
        ]
    );
    for event in &events {
        assert!(
            event["ts"].is_string() && event["run"].is_string(),
            "{event}"
        );
    }
    let finished = &events[2];
    assert_eq!(finished["step"], "one");
    assert_eq!(finished["status"], "changed");
    assert!(finished["duration_ms"].is_u64());
    assert_eq!(events[7]["status"], "ok");
    assert_eq!(events[7]["exit_code"], 0);
}

#[test]
fn secrets_are_masked_in_output_events_journal_and_plans() {
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: secret
params:
  token: {secret: true}
  hub: {}
steps:
  - id: use-token
    run: [echo, "token is {{ token }} for {{ hub }}"]
    register: echoed
"#,
        )
        .args([
            "run",
            "playbook.yaml",
            "--var",
            "token=hunter2-s3cret",
            "--var",
            "hub=staging",
            "--format",
            "json",
        ]);
    let output = test.run().status(0);
    assert!(
        output.stderr.contains("token is *** for staging"),
        "{}",
        output.stderr
    );
    assert!(!output.stderr.contains("hunter2-s3cret"));
    assert!(!output.stdout.contains("hunter2-s3cret"));
    let journal = std::fs::read_dir(test.path(".runbook/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal = std::fs::read_to_string(journal.join("journal.jsonl")).unwrap();
    assert!(!journal.contains("hunter2-s3cret"));
    assert!(journal.contains("token is *** for staging"));
    let plan = test.run_args(&[
        "plan",
        "playbook.yaml",
        "--var",
        "token=hunter2-s3cret",
        "--var",
        "hub=staging",
        "--format",
        "json",
    ]);
    assert!(!plan.stdout.contains("hunter2-s3cret"));
    // Secret values do not name the run: another token continues the same run.
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--var",
        "token=other",
        "--var",
        "hub=staging",
    ])
    .status(0)
    .stderr_has("use-token skipped: done in an earlier run");
}

/// Every file under `dir`, as text, one after the other (the state dir: journals, locks).
fn all_text_under(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("read the state dir") {
        let path = entry.expect("list the state dir").path();
        if path.is_dir() {
            text.push_str(&all_text_under(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read a state file"),
            ));
        }
    }
    text
}

#[test]
fn strings_derived_from_a_secret_are_masked_in_output_journal_and_plans() {
    // Each derived string, printed by the step to stdout and to stderr.
    let derived = [
        "HUNTER2-S3CRET", // {{ token | upper }}, and the `set` target
        "nter2-s3cret",   // {{ token[2:] }}
        "terc3s-2retnuh", // {{ token | reverse }}
        "junter2-s3cret", // {{ token | lower | replace('h', 'j') }}
        "Hunter2-S3cret", // {{ token | title }}, as a whole argument
        "hunter2-s3cret", // the secret itself
    ];
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: derived-secret
params:
  token: {secret: true}
steps:
  - id: use-derived
    run:
      shell: true
      command: >-
        {% set shout = token | upper %}
        echo "{{ shout }} {{ token[2:] }} {{ token | reverse }} {{ token | lower | replace('h', 'j') }} {{ token | length }}";
        echo "{{ token | upper }} {{ token[2:] }}" >&2
    register: echoed
  - id: as-argument
    run: [echo, "{{ token | title }}"]
"#,
        )
        .args([
            "run",
            "playbook.yaml",
            "--var",
            "token=hunter2-s3cret",
            "--format",
            "json",
        ]);
    // The plan first, while the steps are still to run, so that it shows their commands.
    let plan = test
        .run_args(&[
            "plan",
            "playbook.yaml",
            "--var",
            "token=hunter2-s3cret",
            "--format",
            "markdown",
        ])
        .status(0);
    assert!(plan.stdout.contains("*** *** *** ***"), "{}", plan.stdout);
    let output = test.run().status(0);
    let plain = test
        .run_args(&["run", "playbook.yaml", "--var", "token=hunter2-s3cret"])
        .status(0);
    let state = all_text_under(&test.path(".runbook"));
    for (place, text) in [
        ("stdout", &output.stdout),
        ("stderr", &output.stderr),
        ("the state dir", &state),
        ("the Markdown plan", &plan.stdout),
        ("the plain rerun", &plain.stderr),
    ] {
        for derived in derived {
            assert!(!text.contains(derived), "{derived} in {place}:\n{text}");
        }
    }
    // The step did print them, masked; a short derivation (the length, 14) stays readable.
    assert!(
        output.stdout.contains("*** *** *** *** 14")
            || output.stderr.contains("*** *** *** *** 14"),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    assert!(state.contains("*** *** *** *** 14"), "{state}");
}

#[test]
fn status_and_list_show_each_run() {
    let test = Test::new()
        .playbook(THREE_STEPS)
        .args(["run", "playbook.yaml"]);
    test.run_args(&["status"])
        .status(2)
        .stderr_has("no runs in .runbook");
    test.run().status(0);
    let status = test.run_args(&["status", "--format", "json"]).status(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["state"], "done");
    assert_eq!(status["steps"].as_array().unwrap().len(), 3);
    test.run_args(&["list"])
        .status(0)
        .stdout_has("three-")
        .stdout_has("3/3");
}

#[test]
fn of_ten_simultaneous_runs_one_runs_and_every_other_exits_4_naming_it() {
    let test = Test::new().playbook(
        r#"
runbook: 1
name: crowd
steps:
  - id: wait
    run: {shell: true, command: "while [ ! -e release ]; do sleep 0.05; done"}
"#,
    );
    let runs: Vec<std::process::Child> = (0..10)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
                .args(["run", "playbook.yaml"])
                .current_dir(test.dir())
                .env("NO_COLOR", "1")
                .env_remove("RUNBOOK_STATE_DIR")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start runbook")
        })
        .collect();
    test.wait_for_event(|event| event["event"] == "step_started");
    let holder = test
        .journal()
        .iter()
        .find(|event| event["event"] == "run_started")
        .map(|event| event["pid"].as_u64().expect("a pid"))
        .expect("a run_started event");
    let (mut winner, losers): (Vec<_>, Vec<_>) = runs
        .into_iter()
        .partition(|run| u64::from(run.id()) == holder);
    assert_eq!(winner.len(), 1);
    for loser in losers {
        let output = loser.wait_with_output().expect("wait for a loser");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains(&format!("is locked by pid {holder} on ")),
            "{stderr}"
        );
    }
    std::fs::write(test.path("release"), "").unwrap();
    let winner = winner.pop().expect("the winner");
    assert_eq!(winner.wait_with_output().unwrap().status.code(), Some(0));
}

/// `runbook list | head`, `runbook status | head`: when the reader of stdout goes away, the
/// command ends quietly with its own exit code (it panicked with "failed printing to
/// stdout: Broken pipe" before).
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let test = Test::new().playbook(THREE_STEPS);
    test.run_args(&["run", "playbook.yaml"]).status(0);
    for args in [
        &["validate", "playbook.yaml"][..],
        &["list", "--format", "json"],
        &["status"],
        &["plan", "playbook.yaml"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        // Closed before the command writes: its first write finds no reader.
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .current_dir(test.dir())
            .stdout(writer)
            .output()
            .expect("runbook runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `playbook` and `run_id` are names every template may use: the playbook's name and the
/// run's id (the loader accepted them, but a run rendered them as undefined before).
#[test]
fn templates_see_the_playbook_name_and_the_run_id() {
    let test = Test::new().playbook(
        r#"
runbook: 1
name: named
params:
  hub: {default: staging}
steps:
  - id: say
    run: {shell: true, command: "echo {{ playbook }} {{ run_id }} > ids"}
"#,
    );
    let validated = test.run_args(&["validate", "playbook.yaml"]).status(0);
    let run_id = validated
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .expect("validate names the run id")
        .to_string();
    assert!(run_id.starts_with("named-"), "{}", validated.stdout);
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert_eq!(test.lines_of("ids"), [format!("named {run_id}")]);
}

/// `playbooks/example.yaml`, killed (`kill -9`) at every step boundary and run again each
/// time, ends as a run that was never killed: every step done once, in order.
#[test]
fn the_example_killed_at_every_step_boundary_loses_nothing() {
    use common::boundaries::{Killer, assert_no_step_redone, step_ids};
    let playbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/example.yaml");
    let test = Test::new();
    let workdir = test.path("work").display().to_string();
    let args: Vec<String> = [
        "run",
        &playbook.display().to_string(),
        "--yes",
        "--var",
        &format!("workdir={workdir}"),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let test = test.args(args);
    let steps = step_ids(&playbook);
    let spawn = || test.spawn();
    let journal = || std::panic::catch_unwind(|| test.journal()).unwrap_or_default();
    let stderr = test.path("spawned.stderr");
    let killer = Killer {
        spawn: &spawn,
        journal: &journal,
        stderr: &stderr,
        retry_locked: false,
        rounds: steps.len() * 2,
    };
    let kills = killer.kill_at_every_boundary(|_| {});
    assert_eq!(kills.finished, steps, "every step finished once, in order");
    assert_no_step_redone(&test.journal(), &steps);
    assert!(std::path::Path::new(&format!("{workdir}.tar")).exists());
}
