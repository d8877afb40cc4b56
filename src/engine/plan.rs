//! `runbook plan`: what `run` would do now, step by step, without doing it.
//!
//! Reads the journal but never writes, never asks, and never calls an action's `apply`
//! except for read-only actions, whose output later steps need.

use crate::Result;
use crate::actions::StepContext;
use crate::kube::Cluster;
use crate::playbook::{Bound, HumanDuration, Playbook};
use crate::render::Renderer;
use crate::report::{PlanDecision, PlanEntry, PlanReport, Reporter};

use super::decision::{GuardPolicy, StepDecision, Tries, decide};
use super::journal::History;
use super::{StateDir, render_env, run_id};

/// Plans every step of a playbook.
pub async fn plan(
    playbook: &Playbook,
    bound: &Bound,
    state: &StateDir,
    reporter: &Reporter,
    cluster: Option<&Cluster>,
) -> Result<PlanReport> {
    reporter.set_masker(bound.masker.clone());
    let run_id = run_id(playbook, &bound.params);
    let history = History::load(&state.run_dir(&run_id))?;
    let renderer = Renderer::with_cluster(bound.masker.clone(), cluster.cloned());
    let mut vars = bound.vars.clone();
    let mut entries = Vec::new();
    let mut stopped_at: Option<String> = None;
    // The last step this plan says would change something. What a later step's check or
    // guard finds now may no longer hold when a run gets to it (`retain-pv` patches the PV
    // that `delete-pv`'s guard reads; `delete-pvc` deletes the claim that `pvc-bound` finds
    // bound), so after a change such answers are only possibilities.
    let mut last_change: Option<String> = None;
    for step in &playbook.steps {
        let id = step.id();
        let mut entry = PlanEntry {
            id: id.to_string(),
            name: step.spec.name.clone(),
            action: step.action_key.to_string(),
            decision: PlanDecision::Run,
            reason: String::new(),
            summary: None,
            diff: None,
        };
        if let Some((hash, output)) = history.done(id) {
            if let Some(name) = step.register() {
                vars.insert(
                    name.to_string(),
                    crate::render::to_value(output.as_ref().unwrap_or(&serde_json::Value::Null)),
                );
            }
            if hash.as_deref().is_none_or(|hash| hash == step.hash) {
                entry.decision = PlanDecision::Skip;
                entry.reason = "done in an earlier run".into();
            } else {
                entry.decision = PlanDecision::Refused;
                entry.reason = format!(
                    "done in an earlier run, but its definition changed since; `run` refuses unless --from {id} or --restart"
                );
            }
            entries.push(entry);
            continue;
        }
        if let Some(blocker) = &stopped_at {
            entry.decision = PlanDecision::Unknown;
            entry.reason = format!("the run stops before it, at step `{blocker}`");
            entries.push(entry);
            continue;
        }
        let env = match render_env(step, &renderer, &vars) {
            Ok(env) => env,
            Err(error) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!("cannot evaluate: {error:#}");
                entries.push(entry);
                continue;
            }
        };
        let cx = StepContext {
            step_id: id,
            renderer: &renderer,
            vars: &vars,
            env: &env,
            reporter,
            base_dir: playbook.base_dir(),
            cluster,
            notes: history.notes.get(id).map_or(&[], Vec::as_slice),
            all_notes: &history.notes,
            note_sink: None,
        };
        // A plan evaluates a guard once; a run evaluates it again as `retries` and `delay`
        // say, which the reason tells with their rendered values.
        let decision = match Tries::of(step, &cx) {
            Ok(tries) => decide(step, playbook, &cx, GuardPolicy::Once, false)
                .await
                .map(|decision| (decision, tries)),
            Err(error) => Err(error),
        };
        let mut registered = None;
        match decision {
            Err(error) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!("cannot evaluate: {error:#}");
            }
            Ok((StepDecision::Skip { reason, done: true }, _))
                if last_change.is_some() && check_reads_the_world(step) =>
            {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!(
                    "done now ({reason}), but `{}` runs before it and may change that",
                    last_change.as_deref().unwrap_or_default()
                );
            }
            Ok((StepDecision::Skip { reason, .. }, _)) => {
                entry.decision = PlanDecision::Skip;
                entry.reason = reason;
            }
            Ok((StepDecision::Unknown { reason }, _)) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = reason;
            }
            Ok((StepDecision::Refused { reason, by_require }, _))
                if last_change.is_some() && (!by_require || guard_reads_the_world(step)) =>
            {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!(
                    "refused now ({reason}), but `{}` runs before it and may change that",
                    last_change.as_deref().unwrap_or_default()
                );
            }
            Ok((StepDecision::Refused { reason, by_require }, tries)) => {
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
                stopped_at = Some(id.to_string());
            }
            Ok((StepDecision::Run, tries)) => {
                match step.action().plan(&cx).await {
                    Ok(mut preview) => {
                        if let (Some(timeout), Some(limit)) = (&step.spec.timeout, tries.timeout)
                            && let Some(note) =
                                timeout.rendered_note("timeout", &HumanDuration(limit))
                        {
                            preview.summary = format!("{} ({note})", preview.summary);
                        }
                        entry.summary = Some(preview.summary);
                        entry.diff = preview.diff;
                    }
                    Err(error) => entry.summary = Some(format!("cannot preview: {error:#}")),
                }
                let gate = step.spec.confirm.is_some() || step.action().approval_prompt().is_some();
                entry.reason = if history.approvals.contains(id) {
                    "not done yet; its approval is already recorded".into()
                } else if gate {
                    format!(
                        "not done yet; needs approval (--approve {id} or --yes) or the run pauses here"
                    )
                } else {
                    "not done yet".into()
                };
                if !step.action().changes_nothing() {
                    last_change = Some(id.to_string());
                }
                if step.action().is_read_only() {
                    match step.action().apply(&cx).await {
                        Ok(outcome) => registered = Some(outcome.output),
                        Err(error) => {
                            entry.reason = match &last_change {
                                Some(change) => format!(
                                    "read-only; evaluated now, it would fail ({error:#}), but `{change}` runs before it and may change that"
                                ),
                                None => {
                                    format!("read-only; evaluated now, it would fail: {error:#}")
                                }
                            }
                        }
                    }
                }
            }
        }
        if let (Some(name), Some(output)) = (step.register(), registered) {
            vars.insert(name.to_string(), crate::render::to_value(&output));
        }
        let masker = bound.masker.clone();
        entry.reason = masker.mask(&entry.reason);
        entry.summary = entry.summary.map(|summary| masker.mask(&summary));
        entry.diff = entry.diff.map(|diff| masker.mask(&diff));
        entries.push(entry);
    }
    Ok(PlanReport {
        run: run_id,
        playbook: playbook.path.display().to_string(),
        name: playbook.name.clone(),
        steps: entries,
    })
}

/// Whether an expression reads the cluster or the environment, which the steps before it
/// may change, rather than only params and registered values.
fn reads_the_world(expression: &str) -> bool {
    ["kube_get", "kube_count", "env("]
        .iter()
        .any(|function| expression.contains(function))
}

/// Whether the step's `require` reads the world.
fn guard_reads_the_world(step: &crate::playbook::Step) -> bool {
    step.spec
        .require
        .as_ref()
        .is_some_and(|require| reads_the_world(require.value.as_str()))
}

/// Whether what found the step done reads the world: a command, the action's own check, or
/// an expression that looks at the cluster.
fn check_reads_the_world(step: &crate::playbook::Step) -> bool {
    match &step.spec.check {
        Some(crate::playbook::CheckSpec::Expression(check)) => reads_the_world(check.as_str()),
        _ => true,
    }
}
