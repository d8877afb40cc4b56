//! A CI maintenance window, as the workflows of examples/github-actions/ play it: commands
//! run with `CI=true`, no stdin and `GITHUB_STEP_SUMMARY` set, with the run's state kept in
//! the cluster (`--state cluster`), each job on a "machine" of its own (a state directory
//! that nothing else uses, as a runner's disk that is thrown away).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common;

use common::{Sandbox, Test};

const PLAYBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/nfs-migrate.yaml");
const HUB: &str = include_str!("data/scenarios/hub.yaml");

/// A CI job: `CI=true`, the GitHub Actions variables a job has, and its step summary file.
fn ci_job(test: Test, run_id: &str, summary: &Path) -> Test {
    test.env("CI", "true")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "team/deployer")
        .env("GITHUB_RUN_ID", run_id)
        .env("GITHUB_RUN_ATTEMPT", "1")
        .env("GITHUB_STEP_SUMMARY", summary.to_str().expect("UTF-8 path"))
        .env("USER", "runner")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| panic!("{} is missing", path.display()))
}

/// The NFS migration in two jobs: phase 1 stops at the gate (exit 5, the job's success),
/// phase 2 on another machine goes on from the cluster's journal with `--approve` to the end,
/// running the plan saved after phase 1 (a plan saved before it is refused, exit 6). Both
/// jobs' summaries say what happened and how to go on.
#[test]
fn phase_1_and_phase_2_run_from_two_machines_through_the_cluster_with_step_summaries() {
    // Both jobs drive the same sandbox directory (the cluster and its NFS exports); each has
    // a state directory of its own.
    let cluster = tempfile::tempdir().expect("sandbox dir");
    let sandbox = cluster.path().join("sandbox");
    let job = |number: &str| {
        let test = Test::new().env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"));
        let summary = test.path("step-summary.md");
        let test = ci_job(test, number, &summary);
        (test, summary)
    };
    let args = |state: PathBuf, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["run", PLAYBOOK, "--sandbox", "--sandbox-dir"]
            .map(String::from)
            .to_vec();
        args.push(sandbox.display().to_string());
        args.extend(["--state", "cluster", "--state-dir"].map(String::from));
        args.push(state.display().to_string());
        args.extend(extra.iter().map(ToString::to_string));
        args
    };

    // The pull request's plan, saved before phase 1 ran.
    let (pull_request, _) = job("100");
    let mut plan_args = args(pull_request.path("state"), &["--out", "early-plan.json"]);
    plan_args[0] = "plan".into();
    pull_request.run_args(&plan_args).status(0);

    // Phase 1 (the workflow's "Run to the approval gate"): exit 5.
    let (phase_1, summary_1) = job("101");
    phase_1
        .run_args(&args(phase_1.path("state"), &[]))
        .status(5)
        .stderr_has("start-maintenance waits for approval");
    let markdown = read(&summary_1);
    assert!(
        markdown.contains("### runbook: nfs-migrate (`nfs-migrate-")
            && markdown.contains("**Stopped at the approval gate `start-maintenance`** (exit 5)")
            && markdown.contains("| `start-maintenance` |  | **waits for approval** |")
            && markdown.contains("over 1 command.")
            && markdown.contains("): not opened yet."),
        "{markdown}"
    );
    let initial_copy = markdown
        .lines()
        .find(|line| line.starts_with("| `initial-copy` |"))
        .expect("a row for the initial copy");
    assert!(
        initial_copy.contains("| changed |") && initial_copy.contains(" files |"),
        "{initial_copy}"
    );
    // The command that goes on: the same, with the gate approved.
    let go_on = markdown
        .lines()
        .find(|line| line.starts_with("runbook run "))
        .expect("the command that goes on");
    assert!(
        go_on.contains("--state cluster") && go_on.ends_with(" --approve start-maintenance"),
        "{go_on}"
    );

    // Phase 2 (the protected environment's job), on a machine that has never seen the run,
    // runs a saved plan. The pull request's plan no longer holds: phase 1 moved the journal
    // since (exit 6, nothing run).
    let (phase_2, summary_2) = job("102");
    let state_2 = phase_2.path("state");
    assert!(!state_2.exists());
    let early = pull_request.path("early-plan.json");
    let stale = phase_2
        .run_args(&args(
            state_2.clone(),
            &[
                "--plan",
                early.to_str().expect("UTF-8 path"),
                "--approve",
                "start-maintenance",
            ],
        ))
        .status(6);
    assert!(stale.stderr.contains("journal"), "{}", stale.stderr);
    std::fs::remove_file(&summary_2).ok();
    // The workflow's plan job, after phase 1: its plan is the one the window runs.
    let mut plan_args = args(state_2.clone(), &["--out", "plan.json"]);
    plan_args[0] = "plan".into();
    phase_2.run_args(&plan_args).status(0);
    let plan = phase_2.path("plan.json");
    phase_2
        .run_args(&args(
            state_2.clone(),
            &[
                "--plan",
                plan.to_str().expect("UTF-8 path"),
                "--approve",
                "start-maintenance",
            ],
        ))
        .status(0)
        .stderr_has("every step is done");
    let markdown = read(&summary_2);
    assert!(
        markdown.contains("**Every step is done** (exit 0)")
            && markdown.contains("over 2 commands.")
            && markdown.contains("Maintenance window (`start-maintenance` to `hub-online`): **")
            && !markdown.contains("To go on"),
        "{markdown}"
    );
    // Phase 2 knew from the cluster's journal that phase 1's steps were done: the initial
    // copy ran once, in phase 1, and the final copy after the gate.
    let journal = std::fs::read_dir(state_2.join("cluster/runbook/runs"))
        .expect("the cache of the cluster's runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path()
        .join("journal.jsonl");
    let events: Vec<serde_json::Value> = read(&journal)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    let started = |step: &str| {
        events
            .iter()
            .filter(|event| event["event"] == "step_started" && event["step"] == step)
            .count()
    };
    assert_eq!(started("initial-copy"), 1, "{events:#?}");
    assert_eq!(started("final-copy"), 1, "{events:#?}");
    let values = read(&sandbox.join("deployer/config/clusters/sandbox/staging.values.yaml"));
    assert!(values.contains("serverIP: 10.0.0.9"), "{values}");
}

/// A playbook whose first step waits until the file `release` exists in `dir`, so that a
/// test decides how long the CI job holds the run's Lease.
const WINDOW: &str = r#"
runbook: 1
name: window
params:
  dir: {required: true}
steps:
  - id: hold
    run:
      shell: true
      command: |
        touch "{{ dir }}/holding"
        while [ ! -e "{{ dir }}/release" ]; do sleep 0.05; done
  - id: gate
    pause: "lock users out?"
  - id: after
    run: [sh, -c, 'echo after >> "$1/after.log"', sh, "{{ dir }}"]
"#;

fn wait_for(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "the CI job did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// While a CI job holds a run's Lease, a laptop running the same command is refused with
/// exit 4, naming the job; once the job has stopped at its gate, the laptop goes on.
#[test]
fn a_laptop_is_refused_while_the_ci_job_holds_the_lease() {
    let sandbox = Sandbox::start(HUB);
    let shared = tempfile::tempdir().expect("shared dir");
    let kubeconfig = sandbox.kubeconfig().display().to_string();
    let args: Vec<String> = vec![
        "run".into(),
        "playbook.yaml".into(),
        "--var".into(),
        format!("dir={}", shared.path().display()),
        "--kubeconfig".into(),
        kubeconfig,
        "--state".into(),
        "cluster".into(),
    ];
    let ci = Test::new().playbook(WINDOW);
    let summary = ci.path("step-summary.md");
    let ci = ci_job(ci, "7", &summary).args(args.clone());
    let mut job = ci.spawn();
    common::wait_until("the CI job holds the run", Duration::from_secs(30), || {
        shared.path().join("holding").exists()
    });

    let laptop = Test::new().playbook(WINDOW).env("USER", "alice");
    let refused = laptop.run_args(&args).status(4);
    assert!(
        refused.stderr.contains("is locked by runner@")
            && refused
                .stderr
                .contains("CI job https://github.com/team/deployer/actions/runs/7/attempts/1")
            && refused.stderr.contains(" since "),
        "{}",
        refused.stderr
    );
    assert!(!shared.path().join("after.log").exists());

    std::fs::write(shared.path().join("release"), "").expect("release");
    assert_eq!(wait_for(&mut job, Duration::from_secs(60)), 5);
    let markdown = read(&summary);
    assert!(
        markdown.contains("**Stopped at the approval gate `gate`** (exit 5)")
            && markdown.contains("--state cluster --approve gate"),
        "{markdown}"
    );
    // The Lease is free again: the laptop goes on from the gate.
    let mut approved = args;
    approved.extend(["--approve".to_string(), "gate".to_string()]);
    laptop.run_args(&approved).status(0);
    assert_eq!(read(&shared.path().join("after.log")), "after\n");
}
