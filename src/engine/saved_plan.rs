//! A saved plan: `plan --out FILE` writes what `run` would do with each step and what each
//! decision read (objects, files, the journal); `run --plan FILE` runs exactly that plan,
//! and stops (exit 6) before a step whose readings differ from the plan's.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::kube::Cluster;
use crate::kube::readings::{Compare, Reading, Written};
use crate::playbook::{Bound, Playbook};
use crate::render::Masker;

use super::event::now_rfc3339;
use super::plan_report::{PlanDecision, PlanEntry, PlanReport};

/// The version of the file's format; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// How old a plan `run --plan` takes by default (`--plan-max-age`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The playbook a plan was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlaybook {
    /// The path it was read from.
    pub path: String,
    /// `name:`.
    pub name: String,
    /// sha256 of the file.
    pub sha256: String,
}

/// One step of a saved plan: the plan's entry, the definition it was made from, and what
/// its decision read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedStep {
    /// What `run` would do, and why.
    #[serde(flatten)]
    pub entry: PlanEntry,
    /// sha256 of the step's definition.
    pub definition_sha256: String,
    /// What the decision read: objects (kind, namespace, name, uid, resourceVersion and
    /// content without volatile metadata) and files (path and sha256).
    #[serde(default)]
    pub readings: Vec<Reading>,
}

/// A plan as `plan --out` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// When the plan was made (RFC 3339).
    pub created: String,
    /// The playbook.
    pub playbook: SavedPlaybook,
    /// The run id.
    pub run: String,
    /// The params without the secret ones (which never reach the file).
    pub params: IndexMap<String, Value>,
    /// How many events the run's journal had: a run that went on since moved it.
    pub journal_position: usize,
    /// Every step, in order.
    pub steps: Vec<SavedStep>,
}

/// The params a plan records: all but the secret ones.
fn public_params(playbook: &Playbook, bound: &Bound) -> IndexMap<String, Value> {
    bound
        .params
        .iter()
        .filter(|(name, _)| {
            !playbook
                .params
                .get(*name)
                .is_some_and(|(spec, _)| spec.secret)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

impl SavedPlan {
    /// The saved form of a plan just made.
    pub fn new(playbook: &Playbook, bound: &Bound, report: &PlanReport) -> Self {
        SavedPlan {
            format_version: FORMAT_VERSION,
            created: now_rfc3339(),
            playbook: SavedPlaybook {
                path: playbook.path.display().to_string(),
                name: playbook.name.clone(),
                sha256: playbook.hash.clone(),
            },
            run: report.run.clone(),
            params: public_params(playbook, bound),
            journal_position: report.journal_position,
            steps: report
                .steps
                .iter()
                .zip(&playbook.steps)
                .map(|(entry, step)| SavedStep {
                    entry: entry.clone(),
                    definition_sha256: step.hash.clone(),
                    readings: entry.readings.clone(),
                })
                .collect(),
        }
    }

    /// Writes the plan to `path` as JSON, every value that is a secret masked.
    pub fn save(&self, path: &Path, masker: &Masker) -> crate::Result<()> {
        let mut json = serde_json::to_value(self).map_err(anyhow::Error::from)?;
        masker.mask_json(&mut json);
        let text = serde_json::to_string_pretty(&json).map_err(anyhow::Error::from)? + "\n";
        std::fs::write(path, text).map_err(|error| {
            Diagnostic::new(format!(
                "--out {}: cannot write the plan: {error}",
                path.display()
            ))
            .into()
        })
    }

    /// Reads a saved plan; a file that cannot be read, is not JSON or not a plan of this
    /// version is invalid input naming the file.
    pub fn load(flag: &str, path: &Path) -> Result<Self, Diagnostic> {
        let shown = path.display();
        let help = "make one with `runbook plan PLAYBOOK --out FILE`";
        let text = std::fs::read_to_string(path).map_err(|error| {
            Diagnostic::new(format!("{flag} {shown}: cannot read the plan: {error}")).help(help)
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|error| {
            Diagnostic::new(format!(
                "{flag} {shown} is not a saved plan: it is not JSON ({error})"
            ))
            .help(help)
        })?;
        let version = json.get("format_version").and_then(Value::as_u64);
        if version != Some(u64::from(FORMAT_VERSION)) {
            let found = version.map_or("no format_version".to_string(), |version| {
                format!("format version {version}")
            });
            return Err(Diagnostic::new(format!(
                "{flag} {shown} is not a saved plan of this runbook: {found}, this runbook reads version {FORMAT_VERSION}"
            ))
            .help(help));
        }
        serde_json::from_value(json).map_err(|error| {
            Diagnostic::new(format!("{flag} {shown} is not a saved plan: {error}")).help(help)
        })
    }

    /// Refuses a plan made from another playbook, with other params, from other step
    /// definitions, or older than `max_age`.
    pub fn check(
        &self,
        path: &Path,
        playbook: &Playbook,
        bound: &Bound,
        max_age: Duration,
    ) -> Result<(), Diagnostic> {
        let shown = path.display();
        let replan = format!(
            "make a new plan: runbook plan {} --out {shown}",
            playbook.path.display()
        );
        if self.playbook.name != playbook.name {
            return Err(Diagnostic::new(format!(
                "--plan {shown} is a plan of playbook `{}` ({}), not of `{}` ({})",
                self.playbook.name,
                self.playbook.path,
                playbook.name,
                playbook.path.display()
            ))
            .help(format!("run it with its own playbook, or {replan}")));
        }
        let params = public_params(playbook, bound);
        let differing = param_differences(&self.params, &params);
        if !differing.is_empty() {
            return Err(Diagnostic::new(format!(
                "--plan {shown} was made with other params: {}",
                differing.join("; ")
            ))
            .help(format!(
                "give the params the plan was made with, or {replan}"
            )));
        }
        let steps = step_differences(self, playbook);
        if !steps.is_empty() {
            return Err(Diagnostic::new(format!(
                "--plan {shown}: the playbook's steps changed since the plan: {}",
                steps.join(", ")
            ))
            .help(replan));
        }
        if self.playbook.sha256 != playbook.hash {
            return Err(Diagnostic::new(format!(
                "--plan {shown}: {} changed since the plan (outside its steps: params, vars or settings)",
                playbook.path.display()
            ))
            .help(replan));
        }
        let created = self.created.parse::<jiff::Timestamp>().map_err(|error| {
            Diagnostic::new(format!(
                "--plan {shown}: `created` is not a time ({}: {error})",
                self.created
            ))
            .help(replan.clone())
        })?;
        let age = jiff::Timestamp::now().duration_since(created);
        let age = Duration::from_secs(age.as_secs().max(0) as u64);
        if age > max_age {
            return Err(Diagnostic::new(format!(
                "--plan {shown} was made {} ago ({}), longer than --plan-max-age {}",
                rounded(age),
                self.created,
                exact(max_age)
            ))
            .help(format!("the cluster may have changed since: {replan}")));
        }
        Ok(())
    }

    /// The step `id` of the plan, with its index.
    pub fn step(&self, id: &str) -> Option<(usize, &SavedStep)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, step)| step.entry.id == id)
    }

    /// The plan as a report, for showing it again (`show-plan`).
    pub fn report(&self) -> PlanReport {
        PlanReport {
            run: self.run.clone(),
            playbook: self.playbook.path.clone(),
            name: self.playbook.name.clone(),
            steps: self.steps.iter().map(|step| step.entry.clone()).collect(),
            journal_position: self.journal_position,
            // A prediction is of the time it is made: a saved plan does not keep one.
            window: None,
        }
    }
}

/// An age in its largest whole unit: `3d`, `5h`, `12m`, `40s`.
fn rounded(age: Duration) -> String {
    let seconds = age.as_secs();
    match seconds {
        172_800.. => format!("{}d", seconds / 86_400),
        3_600.. => format!("{}h", seconds / 3_600),
        60.. => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}

/// A duration as it would be given: `24h`, `90m`, `45s`.
fn exact(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds > 0 && seconds.is_multiple_of(3_600) {
        format!("{}h", seconds / 3_600)
    } else if seconds > 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// `hub was staging, is prod`, one per param that differs.
fn param_differences(
    planned: &IndexMap<String, Value>,
    now: &IndexMap<String, Value>,
) -> Vec<String> {
    let shown = |value: Option<&Value>| match value {
        None => "not given".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    let mut names: Vec<&String> = planned.keys().collect();
    names.extend(now.keys().filter(|name| !planned.contains_key(*name)));
    names
        .into_iter()
        .filter(|name| planned.get(*name) != now.get(*name))
        .map(|name| {
            format!(
                "{name} was {}, is {}",
                shown(planned.get(name)),
                shown(now.get(name))
            )
        })
        .collect()
}

/// `` `retain-pv` changed``, `` `check-x` is new``, `` `old` is gone``.
fn step_differences(plan: &SavedPlan, playbook: &Playbook) -> Vec<String> {
    let mut found = Vec::new();
    for step in &playbook.steps {
        match plan.step(step.id()) {
            Some((_, saved)) if saved.definition_sha256 != step.hash => {
                found.push(format!("`{}` changed", step.id()));
            }
            Some(_) => {}
            None => found.push(format!("`{}` is new", step.id())),
        }
    }
    for saved in &plan.steps {
        if playbook.step(&saved.entry.id).is_none() {
            found.push(format!("`{}` is gone", saved.entry.id));
        }
    }
    if found.is_empty() {
        let order = |ids: Vec<&str>| ids.join(" ");
        let planned = order(
            plan.steps
                .iter()
                .map(|step| step.entry.id.as_str())
                .collect(),
        );
        let now = order(playbook.steps.iter().map(|step| step.id()).collect());
        if planned != now {
            found.push("the steps are in another order".to_string());
        }
    }
    found
}

/// Whether the run is held to what the plan's step read. Not when the plan could not
/// decide it (`unknown`: the run decides, as the plan said), nor for a rescue step (it runs
/// only after a failure, in a world the plan did not see), nor when the step waits for
/// what it reads to change (a `kube.wait`, a guard or `until` evaluated again with
/// `retries`: users logging off while `no-active-users` waits for them is what it is for).
fn held_to(saved: &SavedStep, step: &crate::playbook::Step) -> bool {
    !matches!(
        saved.entry.decision,
        PlanDecision::Unknown | PlanDecision::Rescue
    ) && !waits(step)
}

/// Whether a step waits for the world to change: a `kube.wait`, or a guard or `until`
/// evaluated again with `retries`.
fn waits(step: &crate::playbook::Step) -> bool {
    step.spec.retries.is_some()
        || step.spec.until.is_some()
        || (step.action().changes_nothing() && !step.action().is_read_only())
}

/// The index of the first step the plan runs that changes something or waits for a
/// change: up to it the world is at rest, and every reading is compared as it was read;
/// after it, the procedure itself moves the world (users log off while a step waits for
/// them, their pods go), and readings are compared by intent.
fn at_rest_until(plan: &SavedPlan, playbook: &Playbook) -> usize {
    plan.steps
        .iter()
        .position(|saved| {
            saved.entry.decision == PlanDecision::Run
                && playbook
                    .step(&saved.entry.id)
                    .is_some_and(|step| !step.action().changes_nothing() || waits(step))
        })
        .unwrap_or(plan.steps.len())
}

/// What a run of a saved plan holds to: the plan, and what each step's readings are
/// expected to be (the plan's, until a step of this run changes them).
pub(super) struct PlanGuard {
    plan: SavedPlan,
    /// Each step's readings as they should be found now, by step index; empty for a step
    /// the run is not held to (see [`held_to`]).
    expected: Vec<Vec<Reading>>,
    masker: Masker,
    /// See [`at_rest_until`].
    at_rest_until: usize,
    /// Whether a step of this run changed something: from then on readings are compared
    /// by their intent ([`Compare::Intent`]).
    changed: bool,
    /// What the steps of this run wrote, as their actions reported it.
    touched: Vec<Written>,
    /// Whether a step whose writes runbook does not see ran (`run`, `kube.exec`).
    unseen_writes: bool,
}

/// What differs from a saved plan before a step.
pub(super) struct PlanChange {
    /// The step whose readings differ; `None` when the journal moved.
    pub step: Option<String>,
    /// One line per difference.
    pub changes: Vec<String>,
}

impl PlanGuard {
    /// Holds a run of `playbook` to `plan` (checked to be of it); `masker` masks readings
    /// taken again as the plan's were.
    pub fn new(plan: SavedPlan, playbook: &Playbook, masker: Masker) -> Self {
        let expected = plan
            .steps
            .iter()
            .map(|saved| match playbook.step(&saved.entry.id) {
                Some(step) if held_to(saved, step) => saved.readings.clone(),
                _ => Vec::new(),
            })
            .collect();
        PlanGuard {
            at_rest_until: at_rest_until(&plan, playbook),
            plan,
            expected,
            masker,
            changed: false,
            touched: Vec::new(),
            unseen_writes: false,
        }
    }

    /// Takes a reading again, masked as the saved one was.
    async fn take_again(
        &self,
        reading: &Reading,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<Reading> {
        let again = reading
            .take_again(cluster)
            .await
            .map_err(|error| anyhow::anyhow!("cannot take a reading of the plan again: {error}"))?;
        let mut json = serde_json::to_value(&again)?;
        self.masker.mask_json(&mut json);
        Ok(serde_json::from_value(json)?)
    }

    /// How a reading of the step at `index` is compared now: strictly while the world is
    /// at rest (see [`at_rest_until`]), then by intent; and once this run changed
    /// something, an object it wrote (or may have, through a process) may come and go as
    /// the run's own doing.
    fn compare(&self, index: usize, reading: &Reading) -> Compare {
        if !self.changed {
            return if index <= self.at_rest_until {
                Compare::Strict
            } else {
                Compare::Intent { existence: true }
            };
        }
        let ours =
            self.unseen_writes || self.touched.iter().any(|write| reading.affected_by(write));
        Compare::Intent { existence: !ours }
    }

    /// What differs in the readings of the step at `index`.
    async fn changes_of(
        &self,
        index: usize,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<Vec<String>> {
        let mut changes = Vec::new();
        for reading in &self.expected[index] {
            let again = self.take_again(reading, cluster).await?;
            changes.extend(reading.changes(&again, self.compare(index, reading)));
        }
        Ok(changes)
    }

    /// Before the run starts: whether its journal moved since the plan (`journal_position`
    /// events now), else the first step whose readings differ, so that a change the plan
    /// did not foresee stops the run before it changed anything.
    pub async fn before_run(
        &self,
        journal_position: usize,
        run_id: &str,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<Option<PlanChange>> {
        if self.plan.journal_position != journal_position {
            return Ok(Some(PlanChange {
                step: None,
                changes: vec![format!(
                    "the run's journal had {} events when the plan was made and has {journal_position} now: a run went on since (`runbook status {run_id}` shows it)",
                    self.plan.journal_position
                )],
            }));
        }
        for (at, step) in self.plan.steps.iter().enumerate() {
            let changes = self.changes_of(at, cluster).await?;
            if !changes.is_empty() {
                return Ok(Some(PlanChange {
                    step: Some(step.entry.id.clone()),
                    changes,
                }));
            }
        }
        Ok(None)
    }

    /// Before step `id` (of the plan) runs: what differs in its readings, if anything.
    pub async fn before_step(
        &self,
        id: &str,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<Option<PlanChange>> {
        let Some((index, _)) = self.plan.step(id) else {
            return Ok(None);
        };
        let changes = self.changes_of(index, cluster).await?;
        Ok((!changes.is_empty()).then(|| PlanChange {
            step: Some(id.to_string()),
            changes,
        }))
    }

    /// After step `id` ran: what the steps after it read and this step changed is taken
    /// again and expected from now on (`retain-pv` patches the PV that `delete-pv`'s guard
    /// reads). `written` is what the step wrote, when its action reports every write; `None`
    /// (a `run:` step's `kubectl` writes where runbook does not see) takes everything again,
    /// so that a change someone else made while such a step ran is taken as the step's.
    pub async fn after_step(
        &mut self,
        id: &str,
        cluster: Option<&Cluster>,
        written: Option<&[Written]>,
    ) -> anyhow::Result<()> {
        let Some((index, _)) = self.plan.step(id) else {
            return Ok(());
        };
        self.changed = true;
        match written {
            Some(written) => self.touched.extend(written.iter().cloned()),
            None => self.unseen_writes = true,
        }
        let changed_by_step = |reading: &Reading| {
            written.is_none_or(|written| written.iter().any(|write| reading.affected_by(write)))
        };
        for at in index + 1..self.expected.len() {
            let mut now = Vec::with_capacity(self.expected[at].len());
            for reading in &self.expected[at] {
                if changed_by_step(reading) {
                    now.push(self.take_again(reading, cluster).await?);
                } else {
                    now.push(reading.clone());
                }
            }
            self.expected[at] = now;
        }
        Ok(())
    }

    /// What the plan says of step `id`: its decision and why.
    pub fn decision(&self, id: &str) -> Option<(PlanDecision, &str)> {
        self.plan
            .step(id)
            .map(|(_, step)| (step.entry.decision, step.entry.reason.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, Value)]) -> IndexMap<String, Value> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    const PLAYBOOK: &str = r#"
runbook: 1
name: guarded
params:
  hub: {default: staging}
  token: {secret: true, default: s3cr3t}
steps:
  - id: look
    assert: "hub != ''"
  - id: gate
    pause: "go on?"
  - id: users-gone
    require: "hub != ''"
    retries: 3
    run: [echo, gone]
  - id: change
    run: [echo, "{{ hub }}"]
"#;

    fn load(text: &str, vars: &[&str]) -> (tempfile::TempDir, Playbook, Bound) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("playbook.yaml");
        std::fs::write(&path, text).unwrap();
        let playbook = Playbook::load(&path).unwrap();
        let bound = playbook
            .bind(&crate::playbook::Inputs {
                vars: vars.iter().map(ToString::to_string).collect(),
                ..Default::default()
            })
            .unwrap();
        (dir, playbook, bound)
    }

    fn saved(playbook: &Playbook, bound: &Bound, decisions: &[PlanDecision]) -> SavedPlan {
        let steps = playbook
            .steps
            .iter()
            .zip(decisions)
            .map(|(step, decision)| PlanEntry {
                part: None,
                context: None,
                id: step.id().to_string(),
                name: None,
                action: step.action_key.to_string(),
                decision: *decision,
                reason: String::new(),
                summary: None,
                diff: None,
                readings: Vec::new(),
            })
            .collect();
        let report = PlanReport {
            run: super::super::run_id(playbook, &bound.params),
            playbook: playbook.path.display().to_string(),
            name: playbook.name.clone(),
            steps,
            journal_position: 0,
            window: None,
        };
        SavedPlan::new(playbook, bound, &report)
    }

    const RUN_ALL: [PlanDecision; 4] = [PlanDecision::Run; 4];

    #[test]
    fn a_plan_holds_for_its_playbook_and_params_and_names_what_differs() {
        let (_dir, playbook, bound) = load(PLAYBOOK, &[]);
        let plan = saved(&playbook, &bound, &RUN_ALL);
        assert_eq!(plan.params, params(&[("hub", json!("staging"))]));
        let file = Path::new("plan.json");
        plan.check(file, &playbook, &bound, DEFAULT_MAX_AGE)
            .unwrap();
        let (_other_dir, _, other_params) = load(PLAYBOOK, &["hub=prod"]);
        let error = plan
            .check(file, &playbook, &other_params, DEFAULT_MAX_AGE)
            .unwrap_err();
        assert_eq!(
            error.message,
            "--plan plan.json was made with other params: hub was staging, is prod"
        );
        let (_edited_dir, edited, edited_params) =
            load(&PLAYBOOK.replace("[echo, gone]", "[echo, left]"), &[]);
        let error = plan
            .check(file, &edited, &edited_params, DEFAULT_MAX_AGE)
            .unwrap_err();
        assert_eq!(
            error.message,
            "--plan plan.json: the playbook's steps changed since the plan: `users-gone` changed"
        );
        let mut old = plan;
        old.created = "2026-01-01T00:00:00Z".into();
        let error = old
            .check(file, &playbook, &bound, DEFAULT_MAX_AGE)
            .unwrap_err();
        assert!(
            error.message.contains("longer than --plan-max-age 24h"),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_run_is_held_to_decided_steps_that_do_not_wait() {
        let (_dir, playbook, bound) = load(PLAYBOOK, &[]);
        let plan = saved(
            &playbook,
            &bound,
            &[
                PlanDecision::Run,
                PlanDecision::Run,
                PlanDecision::Run,
                PlanDecision::Unknown,
            ],
        );
        let held: Vec<bool> = plan
            .steps
            .iter()
            .zip(&playbook.steps)
            .map(|(saved, step)| held_to(saved, step))
            .collect();
        assert_eq!(held, [true, true, false, false]);
        // `look` only reads; the gate is the first step that may change something.
        assert_eq!(at_rest_until(&plan, &playbook), 1);
    }

    #[test]
    fn ages_and_limits_read_as_people_write_them() {
        assert_eq!(rounded(Duration::from_secs(3 * 86_400 + 7)), "3d");
        assert_eq!(rounded(Duration::from_secs(25 * 3_600)), "25h");
        assert_eq!(rounded(Duration::from_secs(59)), "59s");
        assert_eq!(exact(DEFAULT_MAX_AGE), "24h");
        assert_eq!(exact(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(exact(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn differing_params_are_named() {
        let planned = params(&[("hub", json!("staging")), ("users", json!(2))]);
        let now = params(&[
            ("hub", json!("prod")),
            ("users", json!(2)),
            ("extra", json!(true)),
        ]);
        assert_eq!(
            param_differences(&planned, &now),
            ["hub was staging, is prod", "extra was not given, is true"]
        );
        assert!(param_differences(&planned, &planned).is_empty());
    }

    #[test]
    fn a_file_that_is_not_json_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, "steps:\n  - nope\n").unwrap();
        let error = SavedPlan::load("--plan", &path).unwrap_err();
        assert!(
            error
                .message
                .contains("is not a saved plan: it is not JSON"),
            "{}",
            error.message
        );
        assert!(error.message.contains("plan.json"));
        std::fs::write(&path, "{\"format_version\": 99}").unwrap();
        let error = SavedPlan::load("--plan", &path).unwrap_err();
        assert!(
            error.message.contains("format version 99"),
            "{}",
            error.message
        );
    }
}
