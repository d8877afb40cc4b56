//! Plan and run: the step loop, checks, guards, approvals, retries, the journal (resume),
//! the lock and the events.

mod approval;
pub mod decision;
pub mod event;
pub mod journal;
pub mod lock;
mod plan;
pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio::signal::unix::{SignalKind, signal};

use crate::actions::{InvalidInput, Refusal, StepContext};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::kube::Cluster;
use crate::playbook::{Bound, HumanDuration, Playbook, Step};
use crate::render::{Masker, Renderer, Vars};
use crate::report::Reporter;
use crate::{Error, Exit, Result};
use decision::{StepDecision, Tries, decide};
use event::{Event, EventKind, RunStatus, StepDefinition, StepStatus, now_rfc3339};
use journal::{History, Journal};
use lock::{Acquired, RunLock};
pub use plan::plan;
pub use state::{StateDir, run_id};

/// Flags of `runbook run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Approve every gate.
    pub yes: bool,
    /// Approve these gates.
    pub approve: Vec<String>,
    /// Run again from this step on, even steps already done.
    pub from: Option<String>,
    /// Run only this step, even if it is done.
    pub only: Option<String>,
    /// Forget the journal and start over.
    pub restart: bool,
}

/// Checks that a step id given by a flag exists.
fn check_step_flag(playbook: &Playbook, flag: &str, id: &str) -> Result<(), Diagnostic> {
    if playbook.step(id).is_some() {
        return Ok(());
    }
    let ids: Vec<&str> = playbook.steps.iter().map(Step::id).collect();
    let help = match did_you_mean(id, &ids) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!("the steps are: {}", ids.join(", ")),
    };
    Err(Diagnostic::new(format!(
        "{flag} {id}: no step has this id in {}",
        playbook.path.display()
    ))
    .help(help))
}

/// Renders a step's `env:`.
fn render_env(
    step: &Step,
    renderer: &Renderer,
    vars: &Vars,
) -> anyhow::Result<IndexMap<String, String>> {
    step.spec
        .env
        .iter()
        .map(|(name, value)| Ok((name.clone(), renderer.render_string(value, vars)?)))
        .collect()
}

/// How long an interrupted step gets to unwind (its processes killed, its temporary files
/// removed) before the run ends without it: a step blocked in a system call (a read of a
/// FIFO, of a file server that does not answer) never unwinds, and the process's exit ends it.
const UNWIND_GRACE: Duration = Duration::from_secs(1);

/// The step whose action is running, for the `interrupted` record.
#[derive(Debug, Clone)]
struct RunningStep {
    id: String,
    started: Instant,
    hash: String,
}

/// Where the journal stands for the step loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The loop writes.
    Open,
    /// The loop wrote `run_finished`.
    Finished,
    /// A signal stopped the run: the loop, possibly still stuck in a step, writes nothing
    /// more, so that the journal ends with the interruption.
    Interrupted,
}

/// The run's journal, shared by the step loop's thread and the signal handling of [`run`].
#[derive(Debug)]
struct RunJournal {
    journal: Journal,
    running: Option<RunningStep>,
    phase: Phase,
}

/// Writes events to the journal and the reporter, masked.
#[derive(Clone)]
struct Recorder {
    run_id: String,
    journal: Arc<Mutex<RunJournal>>,
    reporter: Arc<Reporter>,
    masker: Masker,
}

/// What [`Recorder::emit`] returns once the run was interrupted: the step loop stops there.
#[derive(Debug, thiserror::Error)]
#[error("the run was interrupted")]
struct Stopped;

impl Recorder {
    fn emit(&self, kind: EventKind) -> anyhow::Result<()> {
        self.write(kind, None, false)
    }

    /// Writes the `step_started` of an action that runs from now on.
    fn start(&self, kind: EventKind, running: RunningStep) -> anyhow::Result<()> {
        self.write(kind, Some(running), false)
    }

    /// Writes an event; `after_interrupt` only for the records of the interruption itself.
    /// The running step changes with the event that says so, under the same lock, so that
    /// an interruption finds the journal and the running step in agreement.
    fn write(
        &self,
        kind: EventKind,
        starts: Option<RunningStep>,
        after_interrupt: bool,
    ) -> anyhow::Result<()> {
        let finishes_step = matches!(kind, EventKind::StepFinished { .. });
        let finishes_run = matches!(kind, EventKind::RunFinished { .. });
        let (masked, json) = masked_event(&self.run_id, &self.masker, kind)?;
        {
            let mut journal = lock_journal(&self.journal)?;
            if journal.phase == Phase::Interrupted && !after_interrupt {
                return Err(Stopped.into());
            }
            if masked.kind.is_journaled() {
                journal.journal.append(&json, masked.kind.needs_sync())?;
            }
            if starts.is_some() || finishes_step {
                journal.running = starts;
            }
            if finishes_run && journal.phase == Phase::Open {
                journal.phase = Phase::Finished;
            }
        }
        self.reporter.event(&masked, &json);
        Ok(())
    }

    /// Stops the step loop's writes after a signal. Returns the step that was running, or
    /// `None` when the loop had already finished the run (its outcome stands).
    fn interrupt(&self) -> anyhow::Result<Option<Option<RunningStep>>> {
        let mut journal = lock_journal(&self.journal)?;
        if journal.phase == Phase::Finished {
            return Ok(None);
        }
        journal.phase = Phase::Interrupted;
        Ok(Some(journal.running.take()))
    }

    /// Shows an event without journaling it (a done step skipped again on resume).
    fn show(&self, kind: EventKind) {
        if let Ok((masked, json)) = masked_event(&self.run_id, &self.masker, kind) {
            self.reporter.event(&masked, &json);
        }
    }

    fn finish(&self, exit: Exit) -> anyhow::Result<Exit> {
        self.write(run_finished(exit), None, false)?;
        Ok(exit)
    }
}

/// The `run_finished` event of an exit.
fn run_finished(exit: Exit) -> EventKind {
    let status = match exit {
        Exit::Success => RunStatus::Ok,
        Exit::StepFailed => RunStatus::Failed,
        Exit::Refused => RunStatus::Refused,
        Exit::Paused => RunStatus::Paused,
        Exit::Interrupted => RunStatus::Interrupted,
        Exit::InvalidInput | Exit::Locked => RunStatus::Invalid,
    };
    EventKind::RunFinished {
        status,
        exit_code: exit.code(),
    }
}

/// An event of this run with secrets masked, typed and as the JSON that is written: every
/// event goes through here, so nothing reaches the journal or the screen unmasked.
fn masked_event(
    run_id: &str,
    masker: &Masker,
    kind: EventKind,
) -> anyhow::Result<(Event, serde_json::Value)> {
    let event = Event {
        ts: now_rfc3339(),
        run: run_id.to_string(),
        kind,
    };
    let mut json = serde_json::to_value(&event)?;
    masker.mask_json(&mut json);
    Ok((serde_json::from_value(json.clone())?, json))
}

fn lock_journal(journal: &Mutex<RunJournal>) -> anyhow::Result<MutexGuard<'_, RunJournal>> {
    journal
        .lock()
        .map_err(|_| anyhow::anyhow!("the journal writer panicked"))
}

/// Writes one step's notes into the journal, masked like every event.
struct NoteWriter {
    run_id: String,
    step: String,
    journal: Arc<Mutex<RunJournal>>,
    masker: Masker,
    /// What this step recorded in this command, for the steps after it.
    recorded: Mutex<Vec<serde_json::Value>>,
}

impl crate::actions::NoteSink for NoteWriter {
    fn record(&self, data: serde_json::Value) -> anyhow::Result<()> {
        let kind = EventKind::StepNote {
            step: self.step.clone(),
            data,
        };
        let (masked, json) = masked_event(&self.run_id, &self.masker, kind)?;
        {
            let mut journal = lock_journal(&self.journal)?;
            if journal.phase == Phase::Interrupted {
                return Err(Stopped.into());
            }
            journal.journal.append(&json, masked.kind.needs_sync())?;
        }
        if let EventKind::StepNote { data, .. } = masked.kind
            && let Ok(mut recorded) = self.recorded.lock()
        {
            recorded.push(data);
        }
        Ok(())
    }
}

/// Runs a playbook: resumes its journal, holds its lock, stops cleanly on SIGINT/SIGTERM.
///
/// The steps run on a thread of their own, so that a signal is answered whatever a step is
/// doing, even blocked in a system call that never returns.
pub async fn run(
    playbook: Arc<Playbook>,
    bound: &Bound,
    state: &StateDir,
    options: &RunOptions,
    reporter: Arc<Reporter>,
    cluster: Option<&Cluster>,
) -> Result<Exit> {
    let playbook = &playbook;
    for (flag, id) in options
        .from
        .iter()
        .map(|id| ("--from", id))
        .chain(options.only.iter().map(|id| ("--only", id)))
        .chain(options.approve.iter().map(|id| ("--approve", id)))
    {
        check_step_flag(playbook, flag, id)?;
    }
    if options.from.is_some() && options.only.is_some() {
        return Err(Diagnostic::new("--from and --only cannot be used together")
            .help("use --from STEP to run STEP and the steps after it, or --only STEP for one step")
            .into());
    }
    reporter.set_masker(bound.masker.clone());
    let run_id = run_id(playbook, &bound.params);
    reporter.set_run(&run_id);
    let run_dir = state.create_run_dir(&run_id)?;
    let (lock, taken_over) = match RunLock::acquire(&run_dir)? {
        Ok(Acquired::Free(lock)) => (lock, None),
        Ok(Acquired::TakenOver(lock, previous)) => (lock, Some(previous)),
        Err(holder) => {
            let who = holder.map_or_else(
                || "another process".to_string(),
                |holder| holder.to_string(),
            );
            return Err(Error::Locked(format!(
                "run {run_id} is locked by {who}\nhelp: wait for it to finish, or check it with `runbook status {run_id}`"
            )));
        }
    };
    if options.restart {
        let journal = run_dir.join(journal::JOURNAL_FILE);
        if journal.exists() {
            let archived = run_dir.join(format!(
                "journal.{}.jsonl",
                jiff::Timestamp::now().as_second()
            ));
            std::fs::rename(&journal, &archived).map_err(anyhow::Error::from)?;
            reporter.human(&format!(
                "--restart: the previous journal is kept as {}",
                archived.display()
            ));
        }
    }
    let history = History::load(&run_dir)?;
    refuse_changed_definitions(playbook, &history, options)?;

    let recorder = Recorder {
        run_id: run_id.clone(),
        journal: Arc::new(Mutex::new(RunJournal {
            journal: Journal::open(&run_dir)?,
            running: None,
            phase: Phase::Open,
        })),
        reporter: reporter.clone(),
        masker: bound.masker.clone(),
    };
    recorder.emit(EventKind::RunStarted {
        playbook: playbook.path.display().to_string(),
        name: playbook.name.clone(),
        playbook_hash: playbook.hash.clone(),
        steps: playbook
            .steps
            .iter()
            .map(|step| StepDefinition {
                id: step.id().to_string(),
                hash: step.hash.clone(),
            })
            .collect(),
        params: serde_json::to_value(masked_params(playbook, bound))
            .map_err(anyhow::Error::from)?,
        pid: std::process::id(),
        host: lock::host_name(),
    })?;
    if let Some(previous) = taken_over {
        recorder.emit(EventKind::Warning {
            message: format!("took over the lock left by {previous}; that process is gone"),
        })?;
    }
    if history.unreadable_lines > 0 {
        recorder.emit(EventKind::Warning {
            message: format!(
                "{} unreadable journal line(s) ignored (a write cut short by a crash)",
                history.unreadable_lines
            ),
        })?;
    }

    let mut interrupt = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let step_loop = run_steps(
        playbook.clone(),
        Renderer::with_cluster(bound.masker.clone(), cluster.cloned()),
        bound.vars.clone(),
        history,
        options.clone(),
        recorder.clone(),
        cluster.cloned(),
    );
    // On a thread of its own, not on a worker of the runtime: a step blocked in a system
    // call then blocks neither this function nor the workers that deliver signals and fire
    // timers. Cancelling drops the loop's future where it waits, which kills its processes.
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let mut steps = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            tokio::select! {
                outcome = step_loop => Some(outcome),
                _ = cancelled => None,
            }
        })
    });
    let outcome = tokio::select! {
        joined = &mut steps => joined.map_err(anyhow::Error::from),
        _ = interrupt.recv() => stop_on_signal(&recorder, steps, cancel).await,
        _ = terminate.recv() => stop_on_signal(&recorder, steps, cancel).await,
    };
    let exit = match outcome.and_then(|outcome| {
        outcome.ok_or_else(|| anyhow::anyhow!("the step loop was cancelled"))?
    }) {
        Ok(exit) => exit,
        Err(error) => {
            let _ = recorder.finish(Exit::StepFailed);
            return Err(error.into());
        }
    };
    drop(lock);
    Ok(exit)
}

/// What the step loop's thread returns: `None` when it was cancelled.
type StepLoop = tokio::task::JoinHandle<Option<anyhow::Result<Exit>>>;

/// After SIGINT or SIGTERM: stops the step loop's writes, cancels it, gives the running step
/// [`UNWIND_GRACE`] to unwind, and records it as interrupted. A loop that had just finished
/// the run keeps its outcome.
async fn stop_on_signal(
    recorder: &Recorder,
    mut steps: StepLoop,
    cancel: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Option<anyhow::Result<Exit>>> {
    let Some(running) = recorder.interrupt()? else {
        return Ok(steps.await?);
    };
    let _ = cancel.send(());
    let _ = tokio::time::timeout(UNWIND_GRACE, &mut steps).await;
    if let Some(RunningStep { id, started, hash }) = running {
        recorder.write(
            EventKind::StepFinished {
                step: id,
                status: StepStatus::Interrupted,
                duration_ms: started.elapsed().as_millis() as u64,
                hash: Some(hash),
                output: None,
                error: Some("interrupted by a signal".into()),
                tail: Vec::new(),
            },
            None,
            true,
        )?;
    }
    recorder.write(run_finished(Exit::Interrupted), None, true)?;
    Ok(Some(Ok(Exit::Interrupted)))
}

fn masked_params(playbook: &Playbook, bound: &Bound) -> IndexMap<String, serde_json::Value> {
    bound
        .params
        .iter()
        .map(|(name, value)| {
            let secret = playbook
                .params
                .get(name)
                .is_some_and(|(spec, _)| spec.secret);
            let shown = if secret && !value.is_null() {
                serde_json::Value::from("***")
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

/// A done step whose definition changed must not be skipped silently, nor redone silently.
fn refuse_changed_definitions(
    playbook: &Playbook,
    history: &History,
    options: &RunOptions,
) -> Result<()> {
    let from_index = options
        .from
        .as_deref()
        .and_then(|id| playbook.steps.iter().position(|step| step.id() == id));
    for (index, step) in playbook.steps.iter().enumerate() {
        let redone = options.only.as_deref() == Some(step.id())
            || from_index.is_some_and(|from| index >= from);
        if redone {
            continue;
        }
        if let Some((Some(hash), _)) = history.done(step.id())
            && *hash != step.hash
        {
            return Err(Diagnostic::at(
                step.location.clone(),
                format!("step `{}` was done in an earlier run, but its definition has changed since", step.id()),
            )
            .help(format!(
                "to run it again with the new definition use --from {} (it and the steps after it), \
                 --only {} (just it), or --restart (everything)",
                step.id(),
                step.id()
            ))
            .into());
        }
    }
    Ok(())
}

/// The step loop, on a thread of its own (see [`run`]).
async fn run_steps(
    playbook: Arc<Playbook>,
    renderer: Renderer,
    mut vars: Vars,
    history: History,
    options: RunOptions,
    recorder: Recorder,
    cluster: Option<Cluster>,
) -> anyhow::Result<Exit> {
    // Owned, to live on the loop's thread; the loop borrows them as the steps' contexts do.
    let (playbook, renderer, vars, history, options, recorder, cluster) = (
        &*playbook,
        &renderer,
        &mut vars,
        &history,
        &options,
        &recorder,
        cluster.as_ref(),
    );
    let from_index = options
        .from
        .as_deref()
        .and_then(|id| playbook.steps.iter().position(|step| step.id() == id));
    let mut approvals = history.approvals.clone();
    // Every step's notes, with those recorded by this command added as its steps finish.
    let mut notes = history.notes.clone();
    for (index, step) in playbook.steps.iter().enumerate() {
        let id = step.id();
        let forced =
            options.only.as_deref() == Some(id) || from_index.is_some_and(|from| index >= from);
        if !forced && let Some((_, output)) = history.done(id) {
            if let Some(name) = step.register() {
                vars.insert(
                    name.to_string(),
                    crate::render::to_value(output.as_ref().unwrap_or(&serde_json::Value::Null)),
                );
            }
            recorder.show(EventKind::StepSkipped {
                step: id.to_string(),
                reason: "done in an earlier run".into(),
                done: true,
                hash: None,
            });
            continue;
        }
        let out_of_scope = match (&options.only, from_index) {
            (Some(only), _) => only != id,
            (None, Some(from)) => index < from,
            (None, None) => false,
        };
        if out_of_scope {
            let reason = match &options.only {
                Some(only) => format!("not selected (--only {only})"),
                None => format!(
                    "before --from {}",
                    options.from.as_deref().unwrap_or_default()
                ),
            };
            recorder.show(EventKind::StepSkipped {
                step: id.to_string(),
                reason,
                done: false,
                hash: None,
            });
            continue;
        }

        let started = Instant::now();
        let env = match render_env(step, renderer, vars) {
            Ok(env) => env,
            Err(error) => return fail(recorder, step, started, &error),
        };
        let note_writer = NoteWriter {
            run_id: recorder.run_id.clone(),
            step: id.to_string(),
            journal: recorder.journal.clone(),
            masker: recorder.masker.clone(),
            recorded: Mutex::new(Vec::new()),
        };
        let cx = StepContext {
            step_id: id,
            renderer,
            vars,
            env: &env,
            reporter: &recorder.reporter,
            base_dir: playbook.base_dir(),
            cluster,
            notes: notes.get(id).map_or(&[], Vec::as_slice),
            all_notes: &notes,
            note_sink: Some(&note_writer),
        };
        let tries = match Tries::of(step, &cx) {
            Ok(tries) => tries,
            Err(error) => return fail(recorder, step, started, &error),
        };
        let Tries { retries, delay, .. } = tries;
        let verbose = recorder.reporter.verbosity() == crate::report::Verbosity::Verbose;
        let decision = match decide(step, playbook, &cx, tries.guard_policy(), verbose).await {
            Ok(decision) => decision,
            Err(error) => return fail(recorder, step, started, &error),
        };
        match decision {
            StepDecision::Skip { reason, done } => {
                recorder.emit(EventKind::StepSkipped {
                    step: id.to_string(),
                    reason,
                    done,
                    hash: done.then(|| step.hash.clone()),
                })?;
                continue;
            }
            StepDecision::Unknown { reason } => {
                let error =
                    anyhow::anyhow!("cannot run this step yet: it {reason}; run that step first");
                return fail(recorder, step, started, &error);
            }
            StepDecision::Refused { reason, .. } => {
                recorder.emit(EventKind::StepFinished {
                    step: id.to_string(),
                    status: StepStatus::Refused,
                    duration_ms: started.elapsed().as_millis() as u64,
                    hash: Some(step.hash.clone()),
                    output: None,
                    error: Some(reason),
                    tail: Vec::new(),
                })?;
                return recorder.finish(Exit::Refused);
            }
            StepDecision::Run => {}
        }

        let question = step
            .spec
            .confirm
            .as_deref()
            .or_else(|| step.action().approval_prompt());
        if let Some(question) = question
            && !approvals.contains(id)
        {
            let question = cx.render(question).unwrap_or_else(|_| question.to_string());
            let via = if options.yes {
                Some("--yes")
            } else if options.approve.iter().any(|approved| approved == id) {
                Some("--approve")
            } else if approval::can_ask() {
                approval::ask(id, &question).await.then_some("terminal")
            } else {
                None
            };
            let Some(via) = via else {
                recorder.emit(EventKind::Paused {
                    step: id.to_string(),
                    message: question,
                })?;
                return recorder.finish(Exit::Paused);
            };
            recorder.emit(EventKind::Approved {
                step: id.to_string(),
                via: via.into(),
            })?;
            approvals.insert(id.to_string());
        }

        let mut attempt = 1;
        let outcome = loop {
            recorder.start(
                EventKind::StepStarted {
                    step: id.to_string(),
                    name: step.title().to_string(),
                    action: step.action_key.to_string(),
                    attempt,
                },
                RunningStep {
                    id: id.to_string(),
                    started: Instant::now(),
                    hash: step.hash.clone(),
                },
            )?;
            let result = apply_once(step, &cx, tries.timeout).await;
            match result {
                Ok(outcome) => break outcome,
                // A refusal stands, and the same invalid input fails the same way again.
                Err(error)
                    if attempt <= retries
                        && error.downcast_ref::<Refusal>().is_none()
                        && InvalidInput::find(&error).is_none() =>
                {
                    recorder.emit(EventKind::Warning {
                        message: format!(
                            "step `{id}` try {attempt} of {} failed: {error:#}; trying again in {}",
                            retries + 1,
                            HumanDuration(delay)
                        ),
                    })?;
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return fail(recorder, step, started, &error),
            }
        };
        recorder.emit(EventKind::StepFinished {
            step: id.to_string(),
            status: if outcome.changed {
                StepStatus::Changed
            } else {
                StepStatus::Ok
            },
            duration_ms: started.elapsed().as_millis() as u64,
            hash: Some(step.hash.clone()),
            output: step.register().map(|_| outcome.output.clone()),
            error: None,
            tail: outcome.tail,
        })?;
        if let Some(name) = step.register() {
            vars.insert(name.to_string(), crate::render::to_value(&outcome.output));
        }
        let recorded = note_writer
            .recorded
            .into_inner()
            .map_err(|_| anyhow::anyhow!("the notes of step `{id}` were poisoned"))?;
        notes.entry(id.to_string()).or_default().extend(recorded);
    }
    recorder.finish(Exit::Success)
}

/// One try of the action, bounded by the step's `timeout` (rendered), then its `until`
/// condition.
async fn apply_once(
    step: &Step,
    cx: &StepContext<'_>,
    timeout: Option<Duration>,
) -> anyhow::Result<crate::actions::Outcome> {
    let outcome = match timeout {
        Some(limit) => tokio::time::timeout(limit, step.action().apply(cx))
            .await
            .map_err(|_| anyhow::anyhow!("the step timed out after {}", HumanDuration(limit)))??,
        None => step.action().apply(cx).await?,
    };
    if let Some(until) = &step.spec.until {
        let mut vars = cx.vars.clone();
        vars.insert("result".into(), crate::render::to_value(&outcome.output));
        if !cx.renderer.is_true(until.as_str(), &vars)? {
            anyhow::bail!("`until` is not met yet: {}", until.as_str());
        }
    }
    Ok(outcome)
}

/// Records a step that failed, that its action refused (exit 3) while applying, or whose
/// input turned out invalid once rendered or read (exit 2). An invalid step is journaled as
/// failed, not done, so that `run` again evaluates it anew once the input is fixed.
fn fail(
    recorder: &Recorder,
    step: &Step,
    started: Instant,
    error: &anyhow::Error,
) -> anyhow::Result<Exit> {
    let refused = error.downcast_ref::<Refusal>().is_some();
    let exit = if refused {
        Exit::Refused
    } else if InvalidInput::find(error).is_some() {
        Exit::InvalidInput
    } else {
        Exit::StepFailed
    };
    recorder.emit(EventKind::StepFinished {
        step: step.id().to_string(),
        status: if refused {
            StepStatus::Refused
        } else {
            StepStatus::Failed
        },
        duration_ms: started.elapsed().as_millis() as u64,
        hash: Some(step.hash.clone()),
        output: None,
        error: Some(format!("{error:#}")),
        tail: Vec::new(),
    })?;
    recorder.finish(exit)
}
