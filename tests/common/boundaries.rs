//! Kill a shipped playbook's run at every step boundary (and inside its copies), run it
//! again each time, and check that it ends as a run that was never killed: the proof each
//! shipped playbook gives that a crash at any point loses nothing.

use std::path::Path;
use std::process::Child;

use serde_json::Value;

/// The step ids of a playbook file, in order, those of a block's `block:` in its place; not
/// its rescue and always steps, which a run that goes well does not do.
pub fn step_ids(playbook: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(playbook).expect("playbook");
    let playbook: Value = serde_saphyr::from_str(&text).expect("playbook YAML");
    playbook["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|step| match step["block"].as_array() {
            Some(steps) => steps.clone(),
            None => vec![step.clone()],
        })
        .map(|step| step["id"].as_str().expect("id").to_string())
        .collect()
}

/// How to run the playbook again and again, and what to look at.
pub struct Killer<'a> {
    /// Starts `run` (with `--yes`) without waiting.
    pub spawn: &'a dyn Fn() -> Child,
    /// The run's journal so far (none before the run has one).
    pub journal: &'a dyn Fn() -> Vec<Value>,
    /// Where the spawned command's stderr goes, for the message of a run that failed.
    pub stderr: &'a Path,
    /// With the state in the cluster, a killed holder's Lease makes the next command exit 4
    /// until it expires: such a command is tried again.
    pub retry_locked: bool,
    /// The most commands to run (each kills one point).
    pub rounds: usize,
}

/// Where the commands were killed.
pub struct Kills {
    /// The steps in the order they were found done.
    pub finished: Vec<String>,
    /// The points inside copies (step, `pass` or `shard`) a command was killed at.
    pub inside: Vec<(String, String)>,
}

impl Killer<'_> {
    /// Runs the playbook until a command ends by itself, killing each command (`kill -9`) at
    /// the first point it reaches that no command was killed at yet: a step found done, a
    /// copy's pass planned, a copy's shard done. `between` is called after each killed
    /// command with the steps done so far (users who work on while the copy runs).
    pub fn kill_at_every_boundary(&self, mut between: impl FnMut(&[String])) -> Kills {
        let mut kills = Kills {
            finished: Vec::new(),
            inside: Vec::new(),
        };
        let mut read_events = 0;
        let mut refused = 0;
        let mut round = 0;
        while round < self.rounds {
            let mut child = (self.spawn)();
            let (status, killed) = self.watch(&mut child, &mut kills, &mut read_events);
            // What the killed command journaled after the kill point is read next round.
            if self.retry_locked && status.code() == Some(4) {
                refused += 1;
                assert!(refused < 400, "the run stayed locked");
                std::thread::sleep(std::time::Duration::from_millis(500));
                continue;
            }
            round += 1;
            if !killed {
                assert!(
                    status.success(),
                    "round {round}: the run failed: {status}\n{}",
                    std::fs::read_to_string(self.stderr).unwrap_or_default()
                );
                break;
            }
            between(&kills.finished);
        }
        kills
    }

    /// Follows one command through the journal until it ends, or kills it at the first new
    /// point; returns how it ended and whether it was killed.
    fn watch(
        &self,
        child: &mut Child,
        kills: &mut Kills,
        read_events: &mut usize,
    ) -> (std::process::ExitStatus, bool) {
        loop {
            let exited = child.try_wait().expect("wait");
            let events = (self.journal)();
            for event in events.iter().skip(*read_events) {
                *read_events += 1;
                let step = event["step"].as_str().unwrap_or_default().to_string();
                let kind = event["event"].as_str().unwrap_or_default();
                let done = kind == "step_finished"
                    && matches!(event["status"].as_str(), Some("ok" | "changed"))
                    || kind == "step_skipped" && event["done"] == true;
                // Inside a copy: once its pass is planned and journaled, once a shard is done.
                let inside = (kind == "step_note")
                    .then(|| {
                        event["data"]["sync"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .filter(|note| note == "pass" || note == "shard")
                    .map(|note| (step.clone(), note))
                    .filter(|point| !kills.inside.contains(point));
                let new_done = done && !kills.finished.contains(&step);
                if new_done {
                    kills.finished.push(step.clone());
                }
                if exited.is_some() {
                    // The command ended by itself: only take note of what it finished.
                    continue;
                }
                if let Some(point) = inside.filter(|_| !new_done) {
                    kills.inside.push(point);
                } else if !new_done {
                    continue;
                }
                child.kill().expect("kill -9");
                return (child.wait().expect("wait"), true);
            }
            if let Some(status) = exited {
                return (status, false);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Checks that no step of `steps` was started again after the journal said it was done.
pub fn assert_no_step_redone(journal: &[Value], steps: &[String]) {
    for step in steps {
        let done_at = journal.iter().position(|event| {
            event["step"] == step.as_str()
                && (event["event"] == "step_finished"
                    && matches!(event["status"].as_str(), Some("ok" | "changed"))
                    || event["event"] == "step_skipped" && event["done"] == true)
        });
        let done_at = done_at.unwrap_or_else(|| panic!("{step} is not done in the journal"));
        assert!(
            !journal[done_at + 1..]
                .iter()
                .any(|event| event["event"] == "step_started" && event["step"] == step.as_str()),
            "{step} was started again after it was done"
        );
    }
}
