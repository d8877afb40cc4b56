//! The one step walker of `plan` and `run`: for each step in order it restores what done
//! steps registered, renders the step's `env:`, builds its context and decides what happens
//! to it ([`decide`]); a [`StepVisitor`] says what to do with that decision. A plan writes
//! an entry; a run asks for approval, applies the action and journals it. A block's steps
//! are walked as one: a failure among them runs its rescue, and its always steps run
//! whatever happened.

use std::collections::HashMap;

use crate::actions::InvalidInput;
use crate::actions::{NoteSink, RunEnvironment, StepContext};
use crate::kube::Cluster;
use crate::kube::readings::Readings;
use crate::playbook::{Block, FAILED, ITEM, Playbook, Scopes, Step};
use crate::render::Renderer;

use super::decision::{GuardPolicy, StepDecision, Tries, decide, missing_dependency};
use super::render_env;
use super::step_clusters::StepClusters;

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
    /// Go past a step an earlier run did, registering its output; a run lets its action
    /// keep going ([`crate::actions::Action::keep_going`]: catch-up passes).
    Done {
        /// The step's registered output.
        output: serde_json::Value,
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
    /// The step failed (journaled as such): its block's rescue runs, or the walk ends.
    Failed(Failure),
}

/// A step that failed, was refused or had invalid input, and how the run exits for it.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// The step.
    pub step: String,
    /// Why, as journaled.
    pub error: String,
    /// The exit code it gives the run.
    pub exit: crate::Exit,
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

    /// Whether the step is evaluated at all; `fresh` when it must be evaluated even if an
    /// earlier run did it (a block's rescue and always steps, whose block ran again).
    fn before(&mut self, index: usize, step: &Step, fresh: bool) -> anyhow::Result<Before>;

    /// A rescue step the walk goes past: no step of its block failed.
    fn rescue_not_needed(&mut self, step: &Step, block: &Block) -> anyhow::Result<()>;

    /// A step of `block` failed; its rescue runs next.
    fn block_failed(&mut self, block: &Block, failure: &Failure) -> anyhow::Result<()>;

    /// A block whose step failed is over: its rescue and always steps ran, or `handler`
    /// failed too.
    fn block_finished(
        &mut self,
        block: &Block,
        failure: &Failure,
        handler: Option<&Failure>,
    ) -> anyhow::Result<()>;

    /// What the walk gives when a step failed and nothing handled it (or its block's
    /// rescue ran).
    fn failed(&mut self, failure: Failure) -> anyhow::Result<Self::Output>;

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
    /// What templates see, in the playbook and in each included one; registered outputs
    /// are added as steps finish.
    pub vars: &'a mut Scopes,
    /// Every step's notes, with those of this command added as its steps finish.
    pub notes: HashMap<String, Vec<serde_json::Value>>,
    /// Where steps' output goes.
    pub reporter: &'a dyn crate::actions::StepOutput,
    /// The cluster, when the playbook uses one.
    pub cluster: Option<&'a Cluster>,
    /// The clusters of the steps that name a `context:`, which they talk to instead.
    pub contexts: &'a StepClusters,
    /// What the command line says about the run's surroundings.
    pub surroundings: &'a RunEnvironment,
    /// Where steps' reads are recorded (a plan to be saved); the visitor takes each step's.
    pub readings: Option<&'a Readings>,
}

/// What a step's `loop:` gives.
enum LoopItems {
    /// The step has no `loop:`.
    NotALoop,
    /// A step for each item.
    Items(Vec<Step>),
    /// The list cannot be known yet (it uses what an earlier step registers, in a plan), or
    /// need not be (the step's include is skipped): the step is decided as a whole.
    Unknown,
    /// It does not render, or gives something else than a list.
    Invalid(anyhow::Error),
}

/// What a JSON value is, for messages: "a string", "a mapping", ...
fn describe_json(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "nothing (null)",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// How a step, or a run of steps, ended for the walk.
enum Flow<T> {
    /// Go on; `evaluated` when a step was evaluated rather than passed as done.
    Next { evaluated: bool },
    /// Stop the walk with this result.
    Stop(T),
    /// A step failed.
    Failed(Failure),
}

impl Walk<'_> {
    /// Walks every step in order with `visitor`: a block as one (see [`Walk::block`]).
    pub async fn run<V: StepVisitor>(mut self, visitor: &mut V) -> anyhow::Result<V::Output> {
        let playbook = self.playbook;
        let mut index = 0;
        while let Some(step) = playbook.steps.get(index) {
            let (flow, next) = match playbook.block_of(step) {
                Some((block, _)) => (self.block(block, visitor).await?, block.always.end),
                None => (self.step(index, false, visitor).await?, index + 1),
            };
            match flow {
                Flow::Next { .. } => index = next,
                Flow::Stop(output) => return Ok(output),
                Flow::Failed(failure) => return visitor.failed(failure),
            }
        }
        visitor.finished()
    }

    /// A block: its steps until one fails, then its rescue, then its always steps whatever
    /// happened. A failure ends the walk once they ran, even when the rescue went well: the
    /// block did not do its work. A stop (a gate, an interruption) ends it at once, and the
    /// next run goes on from there.
    async fn block<V: StepVisitor>(
        &mut self,
        block: &Block,
        visitor: &mut V,
    ) -> anyhow::Result<Flow<V::Output>> {
        let (failed, ran) = match self.steps_in(block.body.clone(), false, visitor).await? {
            Flow::Next { evaluated } => (None, evaluated),
            Flow::Failed(failure) => (Some(failure), true),
            stop => return Ok(stop),
        };
        // A param or var of that name is shadowed while the handlers run, in the block's
        // scope (the scope of its steps).
        let scope = self.playbook.steps[block.body.start].scope;
        let mut shadowed = None;
        let rescue_failed = match &failed {
            None => {
                for index in block.rescue.clone() {
                    visitor.rescue_not_needed(&self.playbook.steps[index], block)?;
                }
                None
            }
            Some(failure) => {
                visitor.block_failed(block, failure)?;
                let what = serde_json::json!({"step": failure.step, "error": failure.error});
                shadowed = self
                    .vars
                    .of_mut(scope)
                    .insert(FAILED.to_string(), crate::render::to_value(&what));
                match self.steps_in(block.rescue.clone(), true, visitor).await? {
                    Flow::Next { .. } => None,
                    Flow::Failed(failure) => Some(failure),
                    stop => return Ok(stop),
                }
            }
        };
        // Once the block's steps ran in this walk, its always steps run again too, even
        // when an earlier run did them.
        let always_failed = match self.steps_in(block.always.clone(), ran, visitor).await? {
            Flow::Next { .. } => None,
            Flow::Failed(failure) => Some(failure),
            stop => return Ok(stop),
        };
        if failed.is_some() {
            let vars = self.vars.of_mut(scope);
            match shadowed {
                Some(value) => vars.insert(FAILED.to_string(), value),
                None => vars.remove(FAILED),
            };
        }
        let Some(failure) = failed else {
            return Ok(match always_failed {
                None => Flow::Next { evaluated: ran },
                Some(failure) => Flow::Failed(failure),
            });
        };
        let handlers = [rescue_failed, always_failed];
        visitor.block_finished(block, &failure, handlers.iter().flatten().next())?;
        Ok(Flow::Failed(failure))
    }

    /// The steps of a range in order, until one fails or stops the walk; `fresh` evaluates
    /// them even when an earlier run did them.
    async fn steps_in<V: StepVisitor>(
        &mut self,
        range: std::ops::Range<usize>,
        fresh: bool,
        visitor: &mut V,
    ) -> anyhow::Result<Flow<V::Output>> {
        let mut evaluated = false;
        for index in range {
            match self.step(index, fresh, visitor).await? {
                Flow::Next { evaluated: this } => evaluated |= this,
                other => return Ok(other),
            }
        }
        Ok(Flow::Next { evaluated })
    }

    /// One step, or each item of a loop step in turn; what it registers is made visible to
    /// the steps after it.
    async fn step<V: StepVisitor>(
        &mut self,
        index: usize,
        fresh: bool,
        visitor: &mut V,
    ) -> anyhow::Result<Flow<V::Output>> {
        let step = &self.playbook.steps[index];
        let items = match self.loop_items(index, step) {
            LoopItems::NotALoop => None,
            LoopItems::Items(items) => Some(items),
            // The step as a whole is what the visitor decides on: a list that cannot be
            // known yet (unknown in a plan), or that does not render (invalid input).
            LoopItems::Unknown => None,
            LoopItems::Invalid(error) => {
                let (flow, _) = self.one(index, step, fresh, Some(error), visitor).await?;
                return Ok(flow);
            }
        };
        let Some(items) = items else {
            let (flow, output) = self.one(index, step, fresh, None, visitor).await?;
            if matches!(flow, Flow::Next { .. }) {
                self.register(step, output);
            }
            return Ok(flow);
        };
        let mut evaluated = false;
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            match self.one(index, item, fresh, None, visitor).await? {
                (Flow::Next { evaluated: this }, output) => {
                    evaluated |= this;
                    results.push(output.unwrap_or(serde_json::Value::Null));
                }
                (other, _) => return Ok(other),
            }
        }
        let values: Vec<_> = items
            .into_iter()
            .filter_map(|item| item.item.map(|item| item.value))
            .collect();
        self.register(
            step,
            Some(serde_json::json!({"results": results, "items": values})),
        );
        Ok(Flow::Next { evaluated })
    }

    /// The items of a loop step: its `loop:` rendered with the names of its scope.
    fn loop_items(&self, index: usize, step: &Step) -> LoopItems {
        let Some(over) = &step.spec.loop_over else {
            return LoopItems::NotALoop;
        };
        let vars = self.vars.of(step.scope);
        if self.vars.skipped(step.scope).is_some()
            || missing_dependency(step, self.playbook, vars).is_some()
        {
            return LoopItems::Unknown;
        }
        let renderer = match self.contexts.for_step(index) {
            Some((_, renderer)) => renderer,
            None => self.renderer,
        };
        let id = step.id();
        let list = match &over.value {
            serde_json::Value::String(expression) => renderer
                .evaluate(expression, vars)
                .map_err(anyhow::Error::from)
                .and_then(|value| Ok(serde_json::to_value(&value)?)),
            written => renderer.render_json(written, vars).map_err(Into::into),
        };
        match list {
            Ok(serde_json::Value::Array(values)) => {
                let masker = renderer.masker();
                LoopItems::Items(step.items(values, &|text| masker.mask(text)))
            }
            Ok(other) => LoopItems::Invalid(
                InvalidInput::new(format!(
                    "step `{id}`: `loop:` gives {}, not a list",
                    describe_json(&other)
                ))
                .into(),
            ),
            Err(error) => LoopItems::Invalid(
                InvalidInput::new(format!("step `{id}`: `loop:` does not render: {error}")).into(),
            ),
        }
    }

    /// One step (or one item of a loop step): restores what it registered if the visitor
    /// passes it, else evaluates it (unless `invalid` says why it cannot be) and hands it
    /// to the visitor. Returns what the step registers.
    async fn one<V: StepVisitor>(
        &mut self,
        index: usize,
        step: &Step,
        fresh: bool,
        invalid: Option<anyhow::Error>,
        visitor: &mut V,
    ) -> anyhow::Result<(Flow<V::Output>, Option<serde_json::Value>)> {
        let id = step.id();
        match visitor.before(index, step, fresh)? {
            Before::Pass { output } => return Ok((Flow::Next { evaluated: false }, output)),
            Before::Done { output } => {
                if step.action().keeps_going() {
                    self.keep_going(index, step, visitor).await?;
                }
                return Ok((Flow::Next { evaluated: false }, Some(output)));
            }
            Before::Evaluate => {}
        }
        let sink = visitor.note_sink(step);
        let (_, renderer) = self.cluster_of(index);
        let scope_vars = self.vars.of(step.scope);
        // An item of a loop sees it as `item`.
        let item_vars = step.item.as_ref().map(|item| {
            let mut vars = scope_vars.clone();
            vars.insert(ITEM.to_string(), crate::render::to_value(&item.value));
            vars
        });
        let vars = item_vars.as_ref().unwrap_or(scope_vars);
        let mut env = self.surroundings.process_env.clone();
        // The steps of an include whose `when` is false are not rendered at all: their
        // params are not bound.
        let skipped = self.vars.skipped(step.scope);
        let env_error = match (invalid, skipped) {
            (Some(error), _) => Some(error),
            (None, Some(_)) => None,
            (None, None) => match render_env(step, renderer, vars) {
                Ok(rendered) => {
                    env.extend(rendered);
                    None
                }
                Err(error) => Some(error),
            },
        };
        let sink_ref = sink.as_deref().map(|sink| sink as &dyn NoteSink);
        let cx = self.context(index, step, (vars, &env), sink_ref, self.readings);
        let evaluated = match (env_error, skipped) {
            (Some(error), _) => Err(error),
            (None, Some(why)) => Ok(Evaluated {
                decision: StepDecision::Skip {
                    reason: why.to_string(),
                    done: false,
                },
                tries: Tries::default(),
            }),
            (None, None) => self.evaluate(step, &cx, visitor).await,
        };
        match visitor.visit(step, &cx, evaluated).await? {
            After::Next { output, notes } => {
                let recorded = match sink {
                    Some(sink) => sink.recorded()?,
                    None => Vec::new(),
                };
                let kept = self.notes.entry(id.to_string()).or_default();
                kept.extend(notes);
                kept.extend(recorded);
                Ok((Flow::Next { evaluated: true }, output))
            }
            After::Stop(output) => Ok((Flow::Stop(output), None)),
            After::Failed(failure) => Ok((Flow::Failed(failure), None)),
        }
    }

    /// What a step's action gets: its cluster (its context's), the names its templates see
    /// and its environment, where its notes go, where reads are recorded.
    fn context<'s>(
        &'s self,
        index: usize,
        step: &'s Step,
        (vars, env): (
            &'s crate::render::Vars,
            &'s indexmap::IndexMap<String, String>,
        ),
        note_sink: Option<&'s dyn NoteSink>,
        readings: Option<&'s Readings>,
    ) -> StepContext<'s> {
        let (cluster, renderer) = self.cluster_of(index);
        let id = step.id();
        StepContext {
            step_id: id,
            renderer,
            vars,
            env,
            reporter: self.reporter,
            base_dir: self.playbook.base_dir_of(step),
            cluster,
            notes: self.notes.get(id).map_or(&[], Vec::as_slice),
            all_notes: &self.notes,
            note_sink,
            surroundings: self.surroundings,
            readings,
        }
    }

    /// The cluster step `index` talks to (its `context:`'s), with the renderer whose lookups
    /// read it.
    fn cluster_of(&self, index: usize) -> (Option<&Cluster>, &Renderer) {
        match self.contexts.for_step(index) {
            Some((cluster, renderer)) => (Some(cluster), renderer),
            None => (self.cluster, self.renderer),
        }
    }

    /// Lets the action of a step an earlier run did keep going (a copy's catch-up passes);
    /// what it journals is kept for the steps after it. A failure is a warning: the step
    /// stays done.
    async fn keep_going<V: StepVisitor>(
        &mut self,
        index: usize,
        step: &Step,
        visitor: &V,
    ) -> anyhow::Result<()> {
        let sink = visitor.note_sink(step);
        let id = step.id();
        let env = self.surroundings.process_env.clone();
        let sink_ref = sink.as_deref().map(|sink| sink as &dyn NoteSink);
        let cx = self.context(
            index,
            step,
            (self.vars.of(step.scope), &env),
            sink_ref,
            None,
        );
        if let Err(error) = step.action().keep_going(&cx).await {
            self.reporter.warn(&format!("[{id}] {error:#}"));
        }
        let recorded = match sink {
            Some(sink) => sink.recorded()?,
            None => Vec::new(),
        };
        self.notes
            .entry(id.to_string())
            .or_default()
            .extend(recorded);
        Ok(())
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
                .of_mut(step.scope)
                .insert(name.to_string(), crate::render::to_value(&output));
        }
    }
}
