//! `playbooks/restore-homes.yaml` end to end against the sandbox: a whole hub restored from
//! its backup export, one user's directory restored with deletions, and a run killed at every
//! step boundary that still ends as a run that was never killed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Test;
use common::boundaries::{Killer, assert_no_step_redone, step_ids};
use common::copies::tree;

const PLAYBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/restore-homes.yaml");

/// A restore in a scratch directory: the sandbox lives in `sandbox/`.
struct Restore {
    test: Test,
}

impl Restore {
    fn new() -> Self {
        // The sandbox's pods run on this machine: the copy uses the test's runbook as agent.
        let test = Test::new().env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"));
        let restore = Restore { test };
        // A plan seeds the sandbox (and writes nothing).
        restore.test.run_args(&restore.args("plan", &[])).status(0);
        restore
    }

    fn sandbox(&self) -> PathBuf {
        self.test.path("sandbox")
    }

    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [command, PLAYBOOK, "--sandbox", "--sandbox-dir"]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.push(self.sandbox().display().to_string());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    }

    fn run(&self, extra: &[&str]) -> common::Output {
        self.test.run_args(&self.args("run", extra))
    }

    fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(self.args("run", &["--yes"]))
            .current_dir(self.test.dir())
            .env("NO_COLOR", "1")
            .env("HOME", self.test.dir())
            .env("RUNBOOK_AGENT_PATH", env!("CARGO_BIN_EXE_runbook"))
            .env_remove("RUNBOOK_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.test.path("spawned.stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn runbook")
    }

    fn homes(&self) -> PathBuf {
        self.sandbox().join("nfs/10.0.0.7/homes/staging")
    }

    fn backup(&self) -> PathBuf {
        self.sandbox().join("nfs/10.0.0.8/homes/staging")
    }

    /// The journal's events so far (none before the run has one).
    fn journal(&self) -> Vec<serde_json::Value> {
        let runs = self.sandbox().join("state/runs");
        let Some(Ok(run)) = std::fs::read_dir(&runs).ok().and_then(|mut dir| dir.next()) else {
            return Vec::new();
        };
        std::fs::read_to_string(run.path().join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Whether the sandbox still has the restore pod.
    fn has_restore_pod(&self) -> bool {
        let text = std::fs::read_to_string(self.sandbox().join("sandbox-state.yaml"))
            .expect("the sandbox's state file");
        let list: serde_json::Value =
            serde_saphyr::from_str(&text).expect("the state file is YAML");
        list["items"]
            .as_array()
            .expect("a List")
            .iter()
            .any(|object| {
                object["kind"] == "Pod" && object["metadata"]["name"] == "staging-restore-homes"
            })
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Entries the restore's passes copied, from its journaled shard notes.
fn copied(journal: &[serde_json::Value]) -> u64 {
    journal
        .iter()
        .filter(|event| event["event"] == "step_note" && event["data"]["sync"] == "shard")
        .filter_map(|event| event["data"]["files"].as_u64())
        .sum()
}

#[test]
fn a_whole_hub_is_restored_from_its_backup_keeping_what_was_written_since() {
    let restore = Restore::new();
    let backup_before = tree(&restore.backup());
    let homes = restore.homes();
    assert!(!homes.join("carol/thesis/run-3/results.csv").exists());
    // The gate says what is restored and that nothing is deleted.
    restore
        .run(&[])
        .status(5)
        .stderr_has("Restore every home directory of staging from the backup 10.0.0.8:/homes/?")
        .stderr_has("files written since the backup are kept");
    assert!(!homes.join("carol/thesis/run-3/results.csv").exists());
    restore.run(&["--yes"]).status(0);
    assert_eq!(
        read(&homes.join("carol/thesis/run-3/results.csv")),
        read(&restore.backup().join("carol/thesis/run-3/results.csv")),
        "the deleted file is not back"
    );
    assert_eq!(
        read(&homes.join("bob/.gitconfig")),
        "[user]\n\tname = Bob\n"
    );
    assert!(
        homes.join("alice/since-the-backup.ipynb").exists(),
        "a file written since the backup was deleted"
    );
    assert_eq!(tree(&restore.backup()), backup_before, "the backup changed");
    // Only what differs was copied: the two files, not the 2,500 the backup holds.
    assert_eq!(copied(&restore.journal()), 2);
    assert!(!restore.has_restore_pod(), "the restore pod is left");
}

#[test]
fn one_user_s_directory_is_restored_with_deletions_and_the_others_are_left_alone() {
    let restore = Restore::new();
    let homes = restore.homes();
    let one_user = ["--var", "path=alice", "--var", "delete=true"];
    let plan = restore
        .test
        .run_args(&restore.args("plan", &one_user))
        .status(0);
    assert!(
        plan.stdout
            .contains("Restore the home directory alice of staging")
            && plan
                .stdout
                .contains("files that are not in the backup are DELETED"),
        "{}",
        plan.stdout
    );
    restore
        .run(&[&["--yes"][..], &one_user[..]].concat())
        .status(0);
    assert_eq!(
        tree(&homes.join("alice")),
        tree(&restore.backup().join("alice"))
    );
    // Bob and carol keep what they changed since the backup.
    assert!(!homes.join("carol/thesis/run-3/results.csv").exists());
    assert!(read(&homes.join("bob/.gitconfig")).contains("bob@example.org"));
}

#[test]
fn a_path_out_of_the_hub_s_homes_is_refused_before_anything_changes() {
    let restore = Restore::new();
    let output = restore
        .run(&["--yes", "--var", "path=alice/../../prod"])
        .status(1)
        .stderr_has("`path` must stay under the hub's homes");
    assert!(output.stderr.contains("preflight"), "{}", output.stderr);
    assert!(!restore.has_restore_pod());
}

#[test]
fn a_kill_at_every_step_boundary_and_inside_the_copy_loses_nothing() {
    let restore = Restore::new();
    let steps = step_ids(Path::new(PLAYBOOK));
    let spawn = || restore.spawn();
    let journal = || restore.journal();
    let stderr = restore.test.path("spawned.stderr");
    let killer = Killer {
        spawn: &spawn,
        journal: &journal,
        stderr: &stderr,
        retry_locked: false,
        rounds: steps.len() * 2,
    };
    let kills = killer.kill_at_every_boundary(|_| {});
    assert_eq!(kills.finished, steps, "every step finished once, in order");
    let inside: Vec<String> = kills
        .inside
        .iter()
        .map(|(step, note)| format!("{step} {note}"))
        .collect();
    assert_eq!(inside, ["restore pass", "restore shard"]);
    assert_no_step_redone(&restore.journal(), &steps);
    let homes = restore.homes();
    assert!(homes.join("carol/thesis/run-3/results.csv").exists());
    assert!(homes.join("alice/since-the-backup.ipynb").exists());
    assert!(!restore.has_restore_pod(), "the restore pod is left");
}
