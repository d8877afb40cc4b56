//! `runbook plan`: what `run` would do now, step by step, without doing it.
//!
//! Reads the journal but never writes, never asks, and never calls an action's `apply`
//! except for read-only actions, whose output later steps need.

use crate::Result;
use crate::actions::StepContext;
use crate::kube::Cluster;
use crate::playbook::{Bound, Playbook};
use crate::render::Renderer;
use crate::report::{PlanDecision, PlanEntry, PlanReport, Reporter};

use super::decision::{GuardPolicy, StepDecision, decide};
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
            note_sink: None,
        };
        let decision = decide(step, playbook, &cx, GuardPolicy::Once, false).await;
        let mut registered = None;
        match decision {
            Err(error) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = format!("cannot evaluate: {error:#}");
            }
            Ok(StepDecision::Skip { reason, .. }) => {
                entry.decision = PlanDecision::Skip;
                entry.reason = reason;
            }
            Ok(StepDecision::Unknown { reason }) => {
                entry.decision = PlanDecision::Unknown;
                entry.reason = reason;
            }
            Ok(StepDecision::Refused { reason }) => {
                entry.decision = PlanDecision::Refused;
                entry.reason = format!("{reason} (the run would stop here)");
                stopped_at = Some(id.to_string());
            }
            Ok(StepDecision::Run) => {
                match step.action().plan(&cx).await {
                    Ok(preview) => {
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
                if step.action().is_read_only() {
                    match step.action().apply(&cx).await {
                        Ok(outcome) => registered = Some(outcome.output),
                        Err(error) => {
                            entry.reason =
                                format!("read-only; evaluated now, it would fail: {error:#}")
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
