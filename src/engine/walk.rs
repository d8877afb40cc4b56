//! The one step walker of `plan` and `run`: for each step in order it restores what done
//! steps registered, renders the step's `env:`, builds its context and decides what happens
//! to it ([`decide`]); a [`StepVisitor`] says what to do with that decision. A plan writes
//! an entry; a run asks for approval, applies the action and journals it.

use std::collections::HashMap;

use crate::actions::{NoteSink, RunEnvironment, StepContext};
use crate::kube::Cluster;
use crate::kube::readings::Readings;
use crate::playbook::{Playbook, Step};
use crate::render::{Renderer, Vars};

use super::decision::{GuardPolicy, StepDecision, Tries, decide};
use super::render_env;

/// What a visitor says of a step before it is evaluated.
pub(super) enum Before {
    /// Evaluate it and call [`StepVisitor::visit`].
    Evaluate,
    /// Go past it without evaluating it, registering the output it had when it ran (a step
    /// done in an earlier run, or out of this command's scope).
    Pass {
        /// The step's registered output, if it has a `register:`.
        output: Option<serde_json::Value>,
    },
}

/// What a visitor did with a step.
pub(super) enum After<T> {
    /// Go on to the next step, registering this step's output and keeping its new notes.
    Next {
        /// The output for the step's `register:`, when the action produced one.
        output: Option<serde_json::Value>,
        /// The notes the step recorded in this command, for the steps after it.
        notes: Vec<serde_json::Value>,
    },
    /// Stop the walk with this result.
    Stop(T),
}

/// A step's decision, with the tries its `retries` and `delay` render to.
pub(super) struct Evaluated {
    /// What happens to the step.
    pub decision: StepDecision,
    /// How often it is tried.
    pub tries: Tries,
}

/// What `plan` and `run` do with the steps the walker hands them.
#[async_trait::async_trait]
pub(super) trait StepVisitor: Send {
    /// What a walk that went through every step gives.
    type Output: Send;

    /// Whether the step is evaluated at all.
    fn before(&mut self, index: usize, step: &Step) -> anyhow::Result<Before>;

    /// How the guard is evaluated: once in a plan, as `retries` says in a run.
    fn guard_policy(&self, tries: &Tries) -> GuardPolicy;

    /// Whether checks' output is shown (`--verbose` in a run).
    fn verbose(&self) -> bool {
        false
    }

    /// Where the step's action records notes; `None` writes nothing (plans).
    fn note_sink(&self, step: &Step) -> Option<Box<dyn StepNotes>>;

    /// Does what the visitor does with the step: `evaluated` is the decision, or why it
    /// could not be made (a template that does not render, a check that failed).
    async fn visit(
        &mut self,
        step: &Step,
        cx: &StepContext<'_>,
        evaluated: anyhow::Result<Evaluated>,
    ) -> anyhow::Result<After<Self::Output>>;

    /// What the walk gives when every step was visited.
    fn finished(&mut self) -> anyhow::Result<Self::Output>;
}

/// A step's note sink that also keeps what it recorded, for the steps after it.
pub(super) trait StepNotes: NoteSink {
    /// The notes recorded by this command.
    fn recorded(self: Box<Self>) -> anyhow::Result<Vec<serde_json::Value>>;
}

/// What every step of a walk shares.
pub(super) struct Walk<'a> {
    /// The playbook.
    pub playbook: &'a Playbook,
    /// Templates and conditions.
    pub renderer: &'a Renderer,
    /// What templates see; registered outputs are added as steps finish.
    pub vars: &'a mut Vars,
    /// Every step's notes, with those of this command added as its steps finish.
    pub notes: HashMap<String, Vec<serde_json::Value>>,
    /// Where steps' output goes.
    pub reporter: &'a dyn crate::actions::StepOutput,
    /// The cluster, when the playbook uses one.
    pub cluster: Option<&'a Cluster>,
    /// What the command line says about the run's surroundings.
    pub surroundings: &'a RunEnvironment,
    /// Where steps' reads are recorded (a plan to be saved); the visitor takes each step's.
    pub readings: Option<&'a Readings>,
}

impl Walk<'_> {
    /// Walks every step in order with `visitor`.
    pub async fn run<V: StepVisitor>(mut self, visitor: &mut V) -> anyhow::Result<V::Output> {
        for (index, step) in self.playbook.steps.iter().enumerate() {
            let id = step.id();
            if let Before::Pass { output } = visitor.before(index, step)? {
                self.register(step, output);
                continue;
            }
            let sink = visitor.note_sink(step);
            let mut env = self.surroundings.process_env.clone();
            let env_error = match render_env(step, self.renderer, self.vars) {
                Ok(rendered) => {
                    env.extend(rendered);
                    None
                }
                Err(error) => Some(error),
            };
            let cx = StepContext {
                step_id: id,
                renderer: self.renderer,
                vars: self.vars,
                env: &env,
                reporter: self.reporter,
                base_dir: self.playbook.base_dir(),
                cluster: self.cluster,
                notes: self.notes.get(id).map_or(&[], Vec::as_slice),
                all_notes: &self.notes,
                note_sink: sink.as_deref().map(|sink| sink as &dyn NoteSink),
                surroundings: self.surroundings,
                readings: self.readings,
            };
            let evaluated = match env_error {
                None => self.evaluate(step, &cx, visitor).await,
                Some(error) => Err(error),
            };
            let after = visitor.visit(step, &cx, evaluated).await?;
            match after {
                After::Next { output, notes } => {
                    self.register(step, output);
                    let recorded = match sink {
                        Some(sink) => sink.recorded()?,
                        None => Vec::new(),
                    };
                    let kept = self.notes.entry(id.to_string()).or_default();
                    kept.extend(notes);
                    kept.extend(recorded);
                }
                After::Stop(output) => return Ok(output),
            }
        }
        visitor.finished()
    }

    async fn evaluate<V: StepVisitor>(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        visitor: &V,
    ) -> anyhow::Result<Evaluated> {
        let tries = Tries::of(step, cx)?;
        let policy = visitor.guard_policy(&tries);
        let decision = decide(step, self.playbook, cx, policy, visitor.verbose()).await?;
        Ok(Evaluated { decision, tries })
    }

    /// Makes a step's output visible to the steps after it under its `register:` name.
    fn register(&mut self, step: &Step, output: Option<serde_json::Value>) {
        if let (Some(name), Some(output)) = (step.register(), output) {
            self.vars
                .insert(name.to_string(), crate::render::to_value(&output));
        }
    }
}
