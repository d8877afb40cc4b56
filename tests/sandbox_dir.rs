//! `--sandbox-dir DIR` shared by commands: seeded once, by one command at a time, and the
//! hints at the end of a run name the directories it used.

use crate::common;

use std::process::{Command, Stdio};

use common::Test;

const PLAYBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/nfs-migrate.yaml");

#[test]
fn two_runs_on_one_fresh_sandbox_dir_seed_it_once_and_the_second_exits_4() {
    let test = Test::new();
    let sandbox = test.path("sandbox");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["run", PLAYBOOK, "--sandbox", "--sandbox-dir"])
            .arg(&sandbox)
            .current_dir(test.dir())
            .env("NO_COLOR", "1")
            .env("HOME", test.dir())
            .env_remove("RUNBOOK_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runbook")
    };
    let (first, second) = (start(), start());
    let outputs = [first, second].map(|run| run.wait_with_output().expect("wait for runbook"));
    let stderrs = outputs
        .each_ref()
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned());
    let codes = outputs.each_ref().map(|output| output.status.code());
    let loser = codes
        .iter()
        .position(|code| *code == Some(4))
        .unwrap_or_else(|| panic!("no run exited 4: {codes:?}\n{stderrs:#?}"));
    let winner = 1 - loser;
    assert_ne!(codes[winner], Some(4), "{stderrs:#?}");
    // The migration stops at its approval gate: it went through phase 1 in the sandbox.
    assert_eq!(codes[winner], Some(5), "{}", stderrs[winner]);
    assert!(
        stderrs[loser].contains("is in use by pid"),
        "{}",
        stderrs[loser]
    );
    let seedings = stderrs
        .iter()
        .filter(|stderr| stderr.contains("sandbox: seeding"))
        .count();
    assert_eq!(seedings, 1, "{stderrs:#?}");
    assert!(!stderrs[loser].contains("sandbox: seeding"));

    // Once the first has finished, the directory is free for the next command.
    let again = test.run_args(&["run", PLAYBOOK, "--sandbox", "--sandbox-dir", "sandbox"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(again.stderr.contains("sandbox: continuing in"));
}

#[test]
fn the_end_of_run_hint_names_the_state_dir_of_the_flag() {
    let test = Test::new().playbook(
        r#"
runbook: 1
name: fails
steps:
  - id: fail
    run: [false]
"#,
    );
    let output = test
        .run_args(&[
            "run",
            "playbook.yaml",
            "--sandbox",
            "--sandbox-dir",
            "sandbox",
            "--state-dir",
            "elsewhere",
        ])
        .status(1);
    assert!(
        output
            .stderr
            .contains("the run's journal: runbook status --state-dir elsewhere\n"),
        "{}",
        output.stderr
    );
    test.run_args(&["status", "--state-dir", "elsewhere"])
        .status(0)
        .stdout_has("fails");
}
