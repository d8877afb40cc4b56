//! `runbook plan`: what `run` would do now, step by step, without doing it.
//!
//! Reads the journal but never writes, never asks, and never calls an action's `apply`
//! except for read-only actions, whose output later steps need.

use crate::Result;
use crate::actions::{RunEnvironment, StepContext};
use crate::kube::Cluster;
use crate::kube::readings::Readings;
use crate::playbook::{Block, Bound, HumanDuration, Playbook, Section, Step};
use crate::render::{Masker, Renderer};

use super::decision::{GuardPolicy, StepDecision, Tries};
use super::event::RunOutput;
use super::journal::History;
use super::plan_report::{PlanDecision, PlanEntry, PlanReport};
use super::step_clusters::StepClusters;
use super::walk::{After, Before, Evaluated, Failure, StepNotes, StepVisitor, Walk};
use super::{StateDir, run_id};

/// Plans every step of a playbook.
pub async fn plan(
    playbook: &Playbook,
    bound: &Bound,
    state: &StateDir,
    reporter: &dyn RunOutput,
    cluster: Option<&Cluster>,
    surroundings: &RunEnvironment,
) -> Result<PlanReport> {
    reporter.set_masker(bound.masker.clone());
    let run_id = run_id(playbook, &bound.params);
    let history = History::load(&state.run_dir(&run_id))?;
    let (events, _) = super::journal::read_events(&state.run_dir(&run_id))?;
    // Every read of the steps' decisions is recorded, for a saved plan (`--out`).
    let readings = Readings::default();
    let cluster = cluster.map(|cluster| cluster.recording(readings.clone()));
    let contexts =
        StepClusters::connect(playbook, &bound.scopes, &bound.masker, cluster.as_ref()).await?;
    let renderer = Renderer::with_cluster(bound.masker.clone(), cluster.clone());
    let mut vars = bound.scopes.clone();
    let mut visitor = PlanVisitor {
        playbook,
        history: &history,
        masker: &bound.masker,
        entries: Vec::new(),
        stopped_at: None,
        last_change: None,
    };
    let walk = Walk {
        playbook,
        renderer: &renderer,
        vars: &mut vars,
        notes: history.notes.clone(),
        reporter,
        cluster: cluster.as_ref(),
        contexts: &contexts,
        surroundings,
        readings: Some(&readings),
    };
    let mut steps = walk.run(&mut visitor).await?;
    for entry in &mut steps {
        let index = playbook.steps.iter().position(|step| step.id() == entry.id);
        entry.context = index
            .and_then(|index| contexts.context(index))
            .map(|context| bound.masker.mask(context));
    }
    let window = super::window::forecast_run(playbook, &state.run_dir(&run_id));
    Ok(PlanReport {
        run: run_id,
        playbook: playbook.path.display().to_string(),
        name: playbook.name.clone(),
        steps,
        journal_position: events.len(),
        window,
    })
}

/// What `plan` does with each step: an entry saying what `run` would do, without doing it.
struct PlanVisitor<'a> {
    playbook: &'a Playbook,
    history: &'a History,
    masker: &'a Masker,
    entries: Vec<PlanEntry>,
    /// The step where the run would stop (a refusal): the steps after it are unknown.
    stopped_at: Option<String>,
    /// The last step this plan says would change something. What a later step's check or
    /// guard finds now may no longer hold when a run gets to it (`retain-pv` patches the PV
    /// that `delete-pv`'s guard reads; `delete-pvc` deletes the claim that `pvc-bound` finds
    /// bound), so after a change such answers are only possibilities.
    last_change: Option<String>,
}

/// A step's entry before it is decided.
fn entry_for(playbook: &Playbook, step: &Step) -> PlanEntry {
    let part = playbook
        .block_of(step)
        .map(|(block, section)| match section {
            Section::Body => format!("block {}", block.id),
            section => format!("{} of {}", section.key(), block.id),
        });
    PlanEntry {
        id: step.id().to_string(),
        name: step.spec.name.clone(),
        action: step.action_key.to_string(),
        part,
        context: None,
        decision: PlanDecision::Run,
        reason: String::new(),
        summary: None,
        diff: None,
        readings: Vec::new(),
    }
}

impl PlanVisitor<'_> {
    /// Adds an entry, masked.
    fn push(&mut self, mut entry: PlanEntry) {
        entry.reason = self.masker.mask(&entry.reason);
        entry.summary = entry.summary.map(|summary| self.masker.mask(&summary));
        entry.diff = entry.diff.map(|diff| self.masker.mask(&diff));
        self.entries.push(entry);
    }
}

impl PlanVisitor<'_> {
    /// What a step found now may no longer hold when a run gets to it, after a step that
    /// changes something.
    fn may_change(&self, what: &str, reason: &str) -> String {
        format!(
            "{what} now ({reason}), but `{}` runs before it and may change that",
            self.last_change.as_deref().unwrap_or_default()
        )
    }

    /// A step a run would skip: done (for sure, unless a change before it may undo that),
    /// or left out (`when`).
    fn would_skip(&self, step: &Step, reason: String, done: bool, entry: &mut PlanEntry) {
        if done && self.last_change.is_some() && check_reads_the_world(step) {
            entry.decision = PlanDecision::Unknown;
            entry.reason = self.may_change("done", &reason);
        } else {
            entry.decision = PlanDecision::Skip;
            entry.reason = reason;
        }
    }

    /// A step a run would be refused at (where it would stop), unless a change before it
    /// may make its guard hold.
    fn would_refuse(
        &mut self,
        step: &Step,
        reason: &str,
        by_require: bool,
        tries: &Tries,
        entry: &mut PlanEntry,
    ) {
        if self.last_change.is_some() && (!by_require || guard_reads_the_world(step)) {
            entry.decision = PlanDecision::Unknown;
            entry.reason = self.may_change("refused", reason);
            return;
        }
        entry.decision = PlanDecision::Refused;
        entry.reason = if by_require && tries.retries > 0 {
            format!(
                "{reason}; a run evaluates it again up to {} times, {} apart, and stops here if it stays false",
                tries.retries,
                HumanDuration(tries.delay)
            )
        } else {
            format!("{reason} (the run would stop here)")
        };
        self.stopped_at = Some(step.id().to_string());
    }

    /// A step a run would run: its preview, whether it waits for an approval, and, for a
    /// read-only action, its output now (which later steps may use).
    async fn would_run(
        &mut self,
        step: &Step,
        cx: &StepContext<'_>,
        tries: &Tries,
        entry: &mut PlanEntry,
    ) -> Option<serde_json::Value> {
        let id = step.id();
        match step.action().plan(cx).await {
            Ok(mut preview) => {
                if let (Some(timeout), Some(limit)) = (&step.spec.timeout, tries.timeout)
                    && let Some(note) = timeout.rendered_note("timeout", &HumanDuration(limit))
                {
                    preview.summary = format!("{} ({note})", preview.summary);
                }
                entry.summary = Some(preview.summary);
                entry.diff = preview.diff;
            }
            Err(error) => entry.summary = Some(format!("cannot preview: {error:#}")),
        }
        let gate = step.spec.confirm.is_some() || step.action().approval_prompt().is_some();
        entry.reason = if self.history.approvals.contains(id) {
            "not done yet; its approval is already recorded".into()
        } else if gate {
            format!("not done yet; needs approval (--approve {id} or --yes) or the run pauses here")
        } else {
            "not done yet".into()
        };
        if !step.action().changes_nothing() {
            self.last_change = Some(id.to_string());
        }
        if !step.action().is_read_only() {
            return None;
        }
        match step.action().apply(cx).await {
            Ok(outcome) => Some(outcome.output),
            Err(error) => {
                entry.reason = match &self.last_change {
                    Some(change) => format!(
                        "read-only; evaluated now, it would fail ({error:#}), but `{change}` runs before it and may change that"
                    ),
                    None => format!("read-only; evaluated now, it would fail: {error:#}"),
                };
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl StepVisitor for PlanVisitor<'_> {
    type Output = Vec<PlanEntry>;

    fn before(&mut self, _index: usize, step: &Step, fresh: bool) -> anyhow::Result<Before> {
        let id = step.id();
        let mut entry = entry_for(self.playbook, step);
        if let Some((hash, output)) = self.history.done(id).filter(|_| !fresh) {
            if hash.as_deref().is_none_or(|hash| hash == step.hash) {
                entry.decision = PlanDecision::Skip;
                entry.reason = "done in an earlier run".into();
            } else {
                entry.decision = PlanDecision::Refused;
                entry.reason = format!(
                    "done in an earlier run, but its definition changed since; `run` refuses unless --from {id} or --restart"
                );
            }
            let output = Some(output.clone().unwrap_or(serde_json::Value::Null));
            self.push(entry);
            return Ok(Before::Pass { output });
        }
        if let Some(blocker) = &self.stopped_at {
            entry.decision = PlanDecision::Unknown;
            entry.reason = format!("the run stops before it, at step `{blocker}`");
            self.push(entry);
            return Ok(Before::Pass { output: None });
        }
        Ok(Before::Evaluate)
    }

    /// A plan evaluates a guard once; a run evaluates it again as `retries` and `delay`
    /// say, which the reason tells with their rendered values.
    fn guard_policy(&self, _tries: &Tries) -> GuardPolicy {
        GuardPolicy::Once
    }

    fn note_sink(&self, _step: &Step) -> Option<Box<dyn StepNotes>> {
        None
    }

    async fn visit(
        &mut self,
        step: &Step,
        cx: &StepContext<'_>,
        evaluated: anyhow::Result<Evaluated>,
    ) -> anyhow::Result<After<Vec<PlanEntry>>> {
        let mut entry = entry_for(self.playbook, step);
        let registered = match evaluated {
            Err(error) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!("cannot evaluate: {error:#}");
                None
            }
            Ok(Evaluated {
                decision: StepDecision::Run,
                tries,
            }) => self.would_run(step, cx, &tries, &mut entry).await,
            Ok(Evaluated {
                decision: StepDecision::Skip { reason, done },
                ..
            }) => {
                self.would_skip(step, reason, done, &mut entry);
                None
            }
            Ok(Evaluated {
                decision: StepDecision::Unknown { reason },
                ..
            }) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = reason;
                None
            }
            Ok(Evaluated {
                decision: StepDecision::Refused { reason, by_require },
                tries,
            }) => {
                self.would_refuse(step, &reason, by_require, &tries, &mut entry);
                None
            }
        };
        entry.readings = cx.readings.map(Readings::take).unwrap_or_default();
        self.push(entry);
        Ok(After::Next {
            output: registered,
            notes: Vec::new(),
        })
    }

    fn finished(&mut self) -> anyhow::Result<Vec<PlanEntry>> {
        Ok(std::mem::take(&mut self.entries))
    }

    /// A plan does not run its steps, so no rescue is needed in it: each rescue step says
    /// when a run would do it.
    fn rescue_not_needed(&mut self, step: &Step, block: &Block) -> anyhow::Result<()> {
        let mut entry = entry_for(self.playbook, step);
        entry.decision = PlanDecision::Rescue;
        entry.reason = format!(
            "runs only if a step of block `{}` fails; then the run stops, not done",
            block.id
        );
        self.push(entry);
        Ok(())
    }

    /// Never called: no step fails in a plan.
    fn block_failed(&mut self, _block: &Block, _failure: &Failure) -> anyhow::Result<()> {
        Ok(())
    }

    /// Never called: no step fails in a plan.
    fn block_finished(
        &mut self,
        _block: &Block,
        _failure: &Failure,
        _handler: Option<&Failure>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Never called: no step fails in a plan.
    fn failed(&mut self, _failure: Failure) -> anyhow::Result<Vec<PlanEntry>> {
        Ok(std::mem::take(&mut self.entries))
    }
}

/// Whether an expression reads the cluster or the environment, which the steps before it
/// may change, rather than only params and registered values.
fn reads_the_world(expression: &str) -> bool {
    ["kube_get", "kube_count", "env("]
        .iter()
        .any(|function| expression.contains(function))
}

/// Whether the step's `require` reads the world.
fn guard_reads_the_world(step: &Step) -> bool {
    step.spec
        .require
        .as_ref()
        .is_some_and(|require| reads_the_world(require.value.as_str()))
}

/// Whether what found the step done reads the world: a command, the action's own check, or
/// an expression that looks at the cluster.
fn check_reads_the_world(step: &Step) -> bool {
    match &step.spec.check {
        Some(crate::playbook::CheckSpec::Expression(check)) => reads_the_world(check.as_str()),
        _ => true,
    }
}
