//! What a step does. One file per action; each implements [`Action`] and is registered by
//! one line in the `step_spec!` list below, which also makes it a key of the YAML step.

#[macro_use]
mod step_spec;
mod assert;
mod kube;
pub mod output;
mod pause;
mod process;
mod run;
pub mod state;
mod sync;
mod values_get;
mod values_set;

use std::path::Path;

use indexmap::IndexMap;

pub use assert::AssertAction;
pub use kube::{KubeApply, KubeCount, KubeDelete, KubeExec, KubeGet, KubePatch, KubeWait};
pub use pause::PauseAction;
pub use process::{ProcessOutput, RenderedCommand, render_ok_codes, run_process};
pub use run::RunAction;
pub use state::State;
pub use sync::{
    AgentCommand, CopyGrid, DetachedCopy, LiveCopy, ShardCell, ShardState, SyncAction, copy_grids,
    detached_copies, run_agent_command,
};
pub use sync::{CompareFigures, CopyFigures, FinishedPass, finished_passes};
pub use values_get::ValuesGet;
pub use values_set::ValuesSet;

use crate::render::{Renderer, Vars};
use crate::syntax::{Condition, Setting, Templated};
pub use output::{Progress, StepOutput};

crate::step_spec! {
    "run" => run: RunAction,
    "sync" => sync: SyncAction,
    "assert" => assert: AssertAction,
    "pause" => pause: PauseAction,
    "kube.get" => kube_get: KubeGet,
    "kube.count" => kube_count: KubeCount,
    "kube.patch" => kube_patch: KubePatch,
    "kube.delete" => kube_delete: KubeDelete,
    "kube.apply" => kube_apply: KubeApply,
    "kube.wait" => kube_wait: KubeWait,
    "kube.exec" => kube_exec: KubeExec,
    "values.set" => values_set: ValuesSet,
    "values.get" => values_get: ValuesGet,
}

pub use crate::failure::{InvalidInput, Refusal, StepError};

/// The answer of an action's own "already done?" check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do; the reason is shown in plans and logs.
    Done(String),
    /// The action has work to do (or cannot tell).
    Pending,
}

/// What `apply` would do, for a person reviewing a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// One line: "run `deployer deploy c h`".
    pub summary: String,
    /// A diff of an object or a file, when the action changes one.
    pub diff: Option<String>,
}

/// The result of `apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the action changed something (`changed`) or only looked (`ok`).
    pub changed: bool,
    /// Registered under the step's `register:` name and journaled for resume.
    pub output: serde_json::Value,
    /// The last lines a command printed, journaled with every finished step.
    pub tail: Vec<String>,
}

impl Outcome {
    /// An outcome with no command output.
    pub fn new(changed: bool, output: serde_json::Value) -> Self {
        Outcome {
            changed,
            output,
            tail: Vec::new(),
        }
    }
}

/// Where an action keeps notes in the run's journal (see [`StepContext::record_note`]).
pub trait NoteSink: Send + Sync {
    /// Appends a note for the step, durably.
    fn record(&self, data: serde_json::Value) -> anyhow::Result<()>;

    /// Appends a note for an earlier step, durably: what a copy learns of the copy it
    /// continues (its catch-up passes, collected when they are stopped).
    fn record_for(&self, step: &str, data: serde_json::Value) -> anyhow::Result<()>;
}

/// What the command line says about the world the run's steps work in, the same for every
/// step. `main` builds it once; nothing is passed through the process's own environment.
#[derive(Debug, Clone, Default)]
pub struct RunEnvironment {
    /// Added to the environment of every process a step starts (a step's and a command's
    /// own `env:` win): `KUBECONFIG`, so that `kubectl`, `helm` and `deployer` talk to the
    /// cluster of `--kubeconfig`, `--context` or `--sandbox`, as `kube.*` steps do.
    pub process_env: IndexMap<String, String>,
    /// Where the agents of copies `on:` a pod or a Job keep their state and binary; `None`
    /// for `RUNBOOK_AGENT_DIR`, else `/var/tmp/runbook-sync`. The sandbox's pods run on
    /// this machine, so it points them into the sandbox directory.
    pub agent_dir: Option<String>,
}

/// Everything an action may use while it checks, plans or applies.
pub struct StepContext<'a> {
    /// The step's id, for output prefixes and progress.
    pub step_id: &'a str,
    /// Templates and conditions.
    pub renderer: &'a Renderer,
    /// What templates see: params, vars, registered outputs.
    pub vars: &'a Vars,
    /// The step's rendered `env:`.
    pub env: &'a IndexMap<String, String>,
    /// Where output lines and progress go.
    pub reporter: &'a dyn StepOutput,
    /// The playbook's directory (for `templates/`).
    pub base_dir: &'a Path,
    /// The cluster, when the playbook uses one.
    pub cluster: Option<&'a crate::kube::Cluster>,
    /// Notes this step's action recorded in earlier runs of this journal, oldest first.
    pub notes: &'a [serde_json::Value],
    /// The notes of every step so far, by step id (see [`StepContext::notes_of`]).
    pub all_notes: &'a std::collections::HashMap<String, Vec<serde_json::Value>>,
    /// Where new notes go; `None` in plans, which write nothing.
    pub note_sink: Option<&'a dyn NoteSink>,
    /// What the command line says about the run's surroundings.
    pub surroundings: &'a RunEnvironment,
    /// Where what the step's decision reads is recorded (a plan to be saved); the cluster
    /// reports its reads itself, the actions report the files they read.
    pub readings: Option<&'a crate::kube::readings::Readings>,
}

impl StepContext<'_> {
    /// Records that the step wrote the file at `path`, for a run of a saved plan.
    pub fn record_written_file(&self, path: &str) {
        if let Some(readings) = self.readings {
            readings.record_write(crate::kube::readings::Written::File {
                path: path.to_string(),
            });
        }
    }

    /// Records that the step read the file at `path` (`None`: it could not be read), for
    /// a saved plan; does nothing when nothing is recorded.
    pub fn record_file(&self, path: &str, content: Option<&[u8]>) {
        let Some(readings) = self.readings else {
            return;
        };
        match content {
            Some(content) => readings.record_file(path, content),
            None => readings.record(crate::kube::readings::Reading::File(
                crate::kube::readings::FileReading {
                    path: path.to_string(),
                    sha256: None,
                },
            )),
        }
    }

    /// The notes another step's action recorded (a copy continues the one an earlier
    /// `sync` step made), including those of this command; empty for a step with none.
    pub fn notes_of(&self, step: &str) -> &[serde_json::Value] {
        self.all_notes.get(step).map_or(&[], Vec::as_slice)
    }

    /// Renders a template to text.
    pub fn render(&self, template: &str) -> anyhow::Result<String> {
        Ok(self.renderer.render_string(template, self.vars)?)
    }

    /// The value of an option of the step or of its action, rendering it when it is a
    /// template. What a template renders to that is not a value of the option is invalid
    /// input naming the step and the key (`on.job.parallelism` for a nested one), so that
    /// every templated option fails the same way, before the action changes anything.
    pub fn setting<T: Setting>(&self, key: &str, setting: &Templated<T>) -> anyhow::Result<T> {
        match setting {
            Templated::Literal(value) => Ok(value.clone()),
            Templated::Template(template) => {
                let rendered = self.render(template)?;
                T::from_text(&rendered).ok_or_else(|| {
                    InvalidInput::new(format!(
                        "step `{}`: `{key}: {template}` renders to `{rendered}`, which is not {}",
                        self.step_id,
                        T::EXPECTED
                    ))
                    .into()
                })
            }
        }
    }

    /// [`StepContext::setting`] of an option that may be absent.
    pub fn optional_setting<T: Setting>(
        &self,
        key: &str,
        setting: Option<&Templated<T>>,
    ) -> anyhow::Result<Option<T>> {
        setting
            .map(|setting| self.setting(key, setting))
            .transpose()
    }

    /// Renders an optional template (a namespace, a selector).
    pub fn render_optional(&self, template: Option<&str>) -> anyhow::Result<Option<String>> {
        template.map(|template| self.render(template)).transpose()
    }

    /// A namespace template rendered, or else the kubeconfig's namespace (`default` without
    /// a cluster, as in a plan run without one).
    pub fn namespace_or_default(&self, template: Option<&str>) -> anyhow::Result<String> {
        Ok(match self.render_optional(template)? {
            Some(namespace) => namespace,
            None => self
                .cluster
                .map_or("default", crate::kube::Cluster::default_namespace)
                .to_string(),
        })
    }

    /// Renders every string inside a JSON value.
    pub fn render_json(&self, value: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        Ok(self.renderer.render_json(value, self.vars)?)
    }

    /// Evaluates a condition.
    pub fn is_true(&self, condition: &Condition) -> anyhow::Result<bool> {
        Ok(self.renderer.is_true(condition.as_str(), self.vars)?)
    }

    /// The cluster, or invalid input (a missing flag) that says how to give one.
    pub fn cluster(&self) -> anyhow::Result<&crate::kube::Cluster> {
        self.cluster.ok_or_else(|| {
            InvalidInput::new(
                "this step needs a cluster: pass --kubeconfig (or set KUBECONFIG), or use --sandbox",
            )
            .into()
        })
    }

    /// Records a note in the journal (fsynced) that the action gets back in `notes` when the
    /// run resumes, e.g. which shards of a copy are finished. A no-op in plans.
    pub fn record_note(&self, data: serde_json::Value) -> anyhow::Result<()> {
        match self.note_sink {
            Some(sink) => sink.record(data),
            None => Ok(()),
        }
    }

    /// Records a note for an earlier step (see [`NoteSink::record_for`]); plans record
    /// nothing.
    pub fn record_note_for(&self, step: &str, data: serde_json::Value) -> anyhow::Result<()> {
        match self.note_sink {
            Some(sink) => sink.record_for(step, data),
            None => Ok(()),
        }
    }

    /// Reports progress of a long action (a `progress` event; not journaled).
    pub fn progress(&self, progress: Progress) {
        self.reporter.progress(self.step_id, progress);
    }

    /// Shows one line of a command's output, prefixed by the step id (masked).
    pub fn output_line(&self, line: &str) {
        self.reporter.line(self.step_id, line);
    }
}

/// One kind of step. The engine calls `check` (is it already done?), then `plan` or `apply`.
///
/// `check` and `plan` are read-only by contract: `runbook plan` calls them and must change
/// nothing outside the state directory.
#[async_trait::async_trait]
pub trait Action: Send + Sync + std::fmt::Debug {
    /// Read-only. `Done` lets the engine skip the step, in plans and in runs.
    async fn check(&self, _cx: &StepContext<'_>) -> anyhow::Result<Check> {
        Ok(Check::Pending)
    }

    /// Read-only. What `apply` would change.
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview>;

    /// Does the work and returns the output to register.
    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome>;

    /// Conditions written as bare expressions (not `{{ }}` templates), so that `validate`
    /// checks their variables too.
    fn expressions(&self) -> Vec<&Condition> {
        Vec::new()
    }

    /// Steps whose notes this action reads, with the key that names each (`after:` of a
    /// `sync`); the loader checks that each is an earlier step of the playbook.
    fn step_references(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }

    /// Whether a run that goes past the step because an earlier run did it calls
    /// [`Action::keep_going`]: a copy that keeps its destination warm.
    fn keeps_going(&self) -> bool {
        false
    }

    /// What a run does for a step an earlier run did, when [`Action::keeps_going`]: a copy
    /// that keeps its destination warm makes sure its catch-up passes go on. A failure is a
    /// warning, not the step's.
    async fn keep_going(&self, _cx: &StepContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Renames the steps [`Action::step_references`] names: an included playbook's steps
    /// get the including step's id as a prefix.
    fn rename_step_references(&mut self, _rename: &dyn Fn(&str) -> String) {}

    /// Checks made when the playbook loads that need its text, to point inside a value
    /// (the field of an inline manifest that its kind does not accept).
    fn check_source(&self, _source: &crate::diagnostic::Source) -> Result<(), crate::Diagnostic> {
        Ok(())
    }

    /// Names the action defines for its own expressions (`object` for `kube.wait`).
    fn expression_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// Read-only. A reason to refuse the step (exit 3) before `apply`, such as a selector
    /// that matches more objects than allowed. Evaluated after the step's `require`.
    async fn guard(&self, _cx: &StepContext<'_>) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    /// Whether the action talks to the cluster (a `sync` that runs in a pod), so that the
    /// run connects to one even when no `kube.*` step does.
    fn uses_cluster(&self) -> bool {
        false
    }

    /// Read-only actions (`assert`, lookups) are evaluated by `plan` too, so that the steps
    /// after them can be planned with their output.
    fn is_read_only(&self) -> bool {
        false
    }

    /// Whether `apply` leaves the world as it found it, so that `plan` still trusts what the
    /// steps after it find now (a guard that refuses stays refused). True of every read-only
    /// action, and of those that only watch but are not worth evaluating in a plan
    /// (`kube.wait` would wait there).
    fn changes_nothing(&self) -> bool {
        self.is_read_only()
    }

    /// For approval gates: the question to approve before `apply`.
    fn approval_prompt(&self) -> Option<&str> {
        None
    }

    /// Whether everything `apply` changes that a later step's decision may read goes
    /// through the cluster client or [`StepContext::record_written_file`], so that a run of
    /// a saved plan knows what this step changed and takes any other change since the plan
    /// for what it is. False for actions that start processes (`run`, `kube.exec`), whose
    /// writes runbook does not see.
    fn reports_its_writes(&self) -> bool {
        false
    }
}
