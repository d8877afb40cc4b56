//! Plan and run: the step loop, checks, guards, approvals, retries, the journal (resume),
//! the lock and the events.

mod approval;
pub mod cluster_journal;
pub mod cluster_state;
pub mod decision;
pub mod event;
pub mod journal;
pub mod lease;
pub mod live_file;
pub mod lock;
mod plan;
pub mod plan_report;
pub mod saved_plan;
pub mod state;
mod step_clusters;
pub mod summary;
mod walk;
pub mod window;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio::signal::unix::{SignalKind, signal};

use crate::actions::StepContext;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::failure::StepError;
use crate::kube::Cluster;
use crate::kube::readings::Readings;
use crate::playbook::{Block, Bound, HumanDuration, Playbook, Step};
use crate::render::{Masker, Renderer, Vars};
use crate::{Error, Exit, Result};
use cluster_journal::ClusterJournal;
pub use cluster_state::{ClusterState, StateArgs, StateLocation};
use decision::{GuardPolicy, StepDecision, Tries};
use event::RunOutput;
use event::{Event, EventKind, RunStatus, StepDefinition, StepStatus, now_rfc3339};
use journal::{History, Journal};
use lock::{Acquired, RunLock};
pub use plan::plan;
use plan_report::PlanDecision;
use saved_plan::{PlanGuard, SavedPlan};
pub use state::{StateDir, run_id};
use step_clusters::StepClusters;
use summary::RunSummary;
use walk::{After, Before, Evaluated, Failure, StepNotes, StepVisitor, Walk};

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
    /// What the command line says about the run's surroundings (the environment of the
    /// processes steps start, where agents go).
    pub surroundings: crate::actions::RunEnvironment,
    /// `--state cluster`: the run's lock and journal are kept in the cluster too.
    pub cluster_state: Option<ClusterState>,
    /// `--plan FILE`: run exactly this saved plan.
    pub plan: Option<PlanFile>,
    /// Asks the run, from outside, to stop before its next step (a fleet that stopped
    /// after too many failures).
    pub halt: Halt,
    /// Stop at a gate that is not approved rather than ask at the terminal (the hubs of a
    /// fleet go to their gates together, and are approved together).
    pub never_ask: bool,
}

/// A request to stop a run before its next step, shared with whoever started it: the run
/// then ends as interrupted (exit 130), its journal consistent, and `run` again goes on.
#[derive(Debug, Clone, Default)]
pub struct Halt(Arc<std::sync::atomic::AtomicBool>);

impl Halt {
    /// Asks every run that shares this request to stop before its next step.
    pub fn halt(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the runs were asked to stop.
    pub fn is_halted(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `--plan FILE` and `--plan-max-age`.
#[derive(Debug, Clone)]
pub struct PlanFile {
    /// The saved plan.
    pub path: std::path::PathBuf,
    /// How old the plan may be.
    pub max_age: Duration,
}

/// Reads and checks `--plan`: it must be a plan of this playbook and params, made from
/// these step definitions, not too old, and not mixed with flags that run something else.
fn load_plan(
    playbook: &Playbook,
    bound: &Bound,
    options: &RunOptions,
) -> Result<Option<SavedPlan>> {
    let Some(file) = &options.plan else {
        return Ok(None);
    };
    for (given, flag) in [
        (options.from.is_some(), "--from"),
        (options.only.is_some(), "--only"),
        (options.restart, "--restart"),
    ] {
        if given {
            return Err(Diagnostic::new(format!(
                "--plan runs the saved plan as it was made; {flag} cannot be used with it"
            ))
            .help(format!(
                "drop {flag}, or drop --plan and review the plan `run` makes"
            ))
            .into());
        }
    }
    // A saved plan's readings are checked against the default cluster only.
    if let Some(step) = playbook.steps.iter().find(|step| step.context.is_some()) {
        let at = step.context.as_ref().map(|(_, at)| at.clone());
        let mut refusal = Diagnostic::new(format!(
            "--plan: step `{}` names a `context:`, and a saved plan checks what it read in the default cluster only",
            step.id()
        ))
        .help("drop --plan and review the plan `run` makes, or run the steps of each context from a playbook of their own");
        refusal.location = at;
        return Err(refusal.into());
    }
    let plan = SavedPlan::load("--plan", &file.path)?;
    plan.check(&file.path, playbook, bound, file.max_age)?;
    Ok(Some(plan))
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
    reporter: Arc<dyn RunOutput>,
    masker: Masker,
    /// With `--state cluster`: whether the run still holds its Lease, checked before each
    /// step starts.
    lease: Option<lease::LeaseWatch>,
}

/// What [`Recorder::emit`] returns once the run was interrupted: the step loop stops there.
#[derive(Debug, thiserror::Error)]
#[error("the run was interrupted")]
struct Stopped;

impl Recorder {
    fn emit(&self, kind: EventKind) -> anyhow::Result<()> {
        self.write(kind, None, false)
    }

    /// Writes the `step_started` of an action that runs from now on, if the run still holds
    /// its Lease (with `--state cluster`): a runner that lost it stops before the step.
    fn start(&self, kind: EventKind, running: RunningStep) -> anyhow::Result<()> {
        if let Some(lease) = &self.lease {
            lease
                .check()
                .map_err(|lost| anyhow::anyhow!("{lost}; stopped before step `{}`", running.id))?;
        }
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

    /// The run's directory (where its journal is).
    fn run_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        Ok(lock_journal(&self.journal)?.journal.run_dir().to_path_buf())
    }

    /// Shows an event without journaling it (a done step skipped again on resume).
    fn show(&self, kind: EventKind) {
        if let Ok((masked, json)) = masked_event(&self.run_id, &self.masker, kind) {
            self.reporter.event(&masked, &json);
        }
    }

    /// Journals the start of a command on the run (the playbook, its steps' hashes, the
    /// params with secrets masked), then the warnings it has for it: locks taken over, and
    /// journal lines a crash left unreadable.
    fn start_run(
        &self,
        playbook: &Playbook,
        bound: &Bound,
        warnings: Vec<String>,
        history: &History,
    ) -> anyhow::Result<()> {
        self.emit(EventKind::RunStarted {
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
            params: serde_json::to_value(masked_params(playbook, bound))?,
            pid: std::process::id(),
            host: lock::host_name(),
        })?;
        for message in warnings {
            self.emit(EventKind::Warning { message })?;
        }
        if history.unreadable_lines > 0 {
            self.emit(EventKind::Warning {
                message: format!(
                    "{} unreadable journal line(s) ignored (a write cut short by a crash)",
                    history.unreadable_lines
                ),
            })?;
        }
        Ok(())
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
        Exit::PlanChanged => RunStatus::PlanChanged,
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

impl NoteWriter {
    /// Journals a note of `step`; `recorded` keeps those of the writer's own step.
    fn journal_note(&self, step: &str, data: serde_json::Value) -> anyhow::Result<()> {
        let kind = EventKind::StepNote {
            step: step.to_string(),
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
            && step == self.step
            && let Ok(mut recorded) = self.recorded.lock()
        {
            recorded.push(data);
        }
        Ok(())
    }
}

impl crate::actions::NoteSink for NoteWriter {
    fn record(&self, data: serde_json::Value) -> anyhow::Result<()> {
        self.journal_note(&self.step.clone(), data)
    }

    fn record_for(&self, step: &str, data: serde_json::Value) -> anyhow::Result<()> {
        self.journal_note(step, data)
    }
}

impl StepNotes for NoteWriter {
    fn recorded(self: Box<Self>) -> anyhow::Result<Vec<serde_json::Value>> {
        self.recorded
            .into_inner()
            .map_err(|_| anyhow::anyhow!("the notes of step `{}` were poisoned", self.step))
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
    reporter: Arc<dyn RunOutput>,
    cluster: Option<&Cluster>,
) -> Result<RunResult> {
    let playbook = &playbook;
    check_run_flags(playbook, options)?;
    let plan = load_plan(playbook, bound, options)?;
    // Every context's cluster is connected before the lock is taken: a missing one is
    // invalid input, and nothing has run.
    let contexts = StepClusters::connect(playbook, &bound.scopes, &bound.masker, cluster).await?;
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
    let mut warnings: Vec<String> = taken_over
        .map(|previous| format!("took over the lock left by {previous}; that process is gone"))
        .into_iter()
        .collect();
    let mut leases = match &options.cluster_state {
        None => Leases::default(),
        Some(shared) => Leases::take(shared, cluster, &contexts, &run_id, &mut warnings).await?,
    };
    let locked = LockedRun {
        run_id: &run_id,
        run_dir: &run_dir,
        warnings,
        lease: leases.held.as_ref().map(lease::HeldLease::watch),
        cluster_journal: leases.journal.take(),
        plan,
        contexts,
    };
    let result = run_locked(playbook, bound, options, reporter.clone(), cluster, locked).await;
    leases.release(&*reporter).await;
    drop(lock);
    result
}

/// `--from`, `--only` and `--approve` name steps of the playbook, and `--from` and `--only`
/// do not go together.
fn check_run_flags(playbook: &Playbook, options: &RunOptions) -> Result<()> {
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
    Ok(())
}

/// With `--state cluster`: the run's Lease and journal in the default cluster, and its Lease
/// in the cluster of every other step context, so that a runner pointed at any of them sees
/// the run locked.
#[derive(Default)]
struct Leases {
    held: Option<lease::HeldLease>,
    journal: Option<ClusterJournal>,
    elsewhere: Vec<lease::HeldLease>,
}

impl Leases {
    /// Takes them all, or none: what was taken is released when one cannot be.
    async fn take(
        shared: &ClusterState,
        cluster: Option<&Cluster>,
        contexts: &StepClusters,
        run_id: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Self> {
        let cluster = cluster.ok_or_else(|| {
            Diagnostic::new("--state cluster keeps the run in a cluster, and there is none")
                .help("give --kubeconfig (or set KUBECONFIG) or --context, or use --sandbox")
        })?;
        let (held, previous) = take_lease(cluster, shared, run_id).await?;
        if let Some(previous) = previous {
            warnings.push(format!(
                "took over Lease {} from {previous}: it was not renewed for {}s",
                held.object(),
                previous.duration.as_secs()
            ));
        }
        let journal = match ClusterJournal::open(cluster, &shared.namespace, run_id).await {
            Ok(journal) => journal,
            Err(error) => {
                // Released now rather than left to expire: nothing was started.
                let _ = held.release().await;
                return Err(cluster_state::invalid_journal(error));
            }
        };
        let mut leases = Leases {
            held: Some(held),
            journal: Some(journal),
            elsewhere: Vec::new(),
        };
        for (context, other) in contexts.other_clusters(cluster) {
            match take_lease(other, shared, run_id).await {
                Ok((taken, previous)) => {
                    if let Some(previous) = previous {
                        warnings.push(format!(
                            "took over Lease {} in context {context} from {previous}: it was not renewed for {}s",
                            taken.object(),
                            previous.duration.as_secs()
                        ));
                    }
                    leases.elsewhere.push(taken);
                }
                Err(error) => {
                    // Released now rather than left to expire: nothing was started.
                    leases.release_quietly().await;
                    return Err(match error {
                        Error::Locked(message) => {
                            Error::Locked(format!("in context {context}: {message}"))
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(leases)
    }

    /// Releases every Lease, before anything was started.
    async fn release_quietly(self) {
        for taken in self.elsewhere {
            let _ = taken.release().await;
        }
        if let Some(held) = self.held {
            let _ = held.release().await;
        }
    }

    /// Releases every Lease at the end of the run, saying which could not be (the next run
    /// takes it over once it expires).
    async fn release(self, reporter: &dyn RunOutput) {
        for taken in self.elsewhere {
            let object = taken.object().to_string();
            if let Err(error) = taken.release().await {
                reporter.notice(&format!(
                    "could not release the run's Lease {object} ({error}); the next run takes it over once it expires"
                ));
            }
        }
        if let Some(held) = self.held
            && let Err(error) = held.release().await
        {
            reporter.notice(&format!(
                "could not release the run's Lease ({error}); the next run takes it over once it expires"
            ));
        }
    }
}

/// What [`run`] has once it holds the run's locks.
struct LockedRun<'a> {
    run_id: &'a str,
    run_dir: &'a std::path::Path,
    /// Warnings to journal once the run has started (locks taken over).
    warnings: Vec<String>,
    /// With `--state cluster`: the Lease the run holds.
    lease: Option<lease::LeaseWatch>,
    /// With `--state cluster`: the journal in the cluster.
    cluster_journal: Option<ClusterJournal>,
    /// `--plan`: the saved plan the run holds to.
    plan: Option<SavedPlan>,
    /// The clusters of the steps' `context:`s, connected.
    contexts: StepClusters,
}

/// Takes the run's Lease in the cluster, or says who holds it (exit 4). Returns the Lease
/// and, when it was taken over, who held it before.
async fn take_lease(
    cluster: &Cluster,
    shared: &ClusterState,
    run_id: &str,
) -> Result<(lease::HeldLease, Option<lease::LeaseHolder>)> {
    let lock = shared.lease(cluster, run_id)?;
    match lock.acquire().await? {
        Ok(lease::Acquired::Free(held)) => Ok((held, None)),
        Ok(lease::Acquired::TakenOver(held, previous)) => Ok((held, Some(previous))),
        Err(holder) => Err(Error::Locked(format!(
            "run {run_id} is locked by {holder} (Lease {})\nhelp: wait for it to finish, or check it with `runbook status --state cluster {run_id}`",
            lock.object()
        ))),
    }
}

/// The run once its locks are held: the journal (resumed), the steps on a thread of their
/// own, signals.
async fn run_locked(
    playbook: &Arc<Playbook>,
    bound: &Bound,
    options: &RunOptions,
    reporter: Arc<dyn RunOutput>,
    cluster: Option<&Cluster>,
    locked: LockedRun<'_>,
) -> Result<RunResult> {
    let LockedRun {
        run_id,
        run_dir,
        warnings,
        lease,
        mut cluster_journal,
        plan,
        contexts,
    } = locked;
    let run_dir = run_dir.to_path_buf();
    let run_id = run_id.to_string();
    // `status` from another terminal sees how far a copy in this process is.
    let reporter: Arc<dyn RunOutput> = Arc::new(live_file::LiveRecording::new(reporter, &run_dir));
    if options.restart {
        keep_journal_aside(&run_dir, cluster_journal.as_mut(), &*reporter).await?;
    }
    // With the journal in the cluster, the local file becomes the cluster's copy first.
    let journal = match cluster_journal {
        Some(in_cluster) => Journal::mirrored(&run_dir, in_cluster)?,
        None => Journal::open(&run_dir)?,
    };
    let history = History::load(&run_dir)?;
    refuse_changed_definitions(playbook, &history, options)?;
    let journal_position = journal::read_events(&run_dir)?.0.len();

    let recorder = Recorder {
        run_id: run_id.clone(),
        journal: Arc::new(Mutex::new(RunJournal {
            journal,
            running: None,
            phase: Phase::Open,
        })),
        reporter: reporter.clone(),
        masker: bound.masker.clone(),
        lease,
    };
    let plan = plan.map(|plan| PlanGuard::new(plan, playbook, bound.masker.clone()));
    if let Some(plan) = &plan
        && let Some(change) = plan.before_run(journal_position, &run_id, cluster).await?
    {
        // Shown, not journaled: a plan that no longer holds leaves the run as it was, so
        // that a plan made now holds.
        recorder.show(EventKind::PlanChanged {
            step: change.step,
            before_any_step: true,
            changes: change.changes,
        });
        recorder.show(run_finished(Exit::PlanChanged));
        return finished_run(playbook, &run_dir, Exit::PlanChanged);
    }
    recorder.start_run(playbook, bound, warnings, &history)?;

    let step_loop = run_steps(
        playbook.clone(),
        bound.scopes.clone(),
        history,
        options.clone(),
        recorder.clone(),
        (cluster.cloned(), contexts),
        plan,
    );
    let exit = drive_steps(step_loop, &recorder).await?;
    finished_run(playbook, &run_dir, exit)
}

/// `run --restart`: keeps the run's journal aside (in the cluster as archived ConfigMaps,
/// and the local file as `journal.<time>.jsonl`), so that the run starts over.
async fn keep_journal_aside(
    run_dir: &std::path::Path,
    cluster_journal: Option<&mut ClusterJournal>,
    reporter: &dyn RunOutput,
) -> Result<()> {
    if let Some(in_cluster) = cluster_journal
        && !in_cluster.is_empty()
    {
        let kept = in_cluster
            .archive(jiff::Timestamp::now().as_second())
            .await
            .map_err(anyhow::Error::from)?;
        reporter.notice(&format!(
            "--restart: the previous journal in the cluster is kept as {}",
            kept.join(", ")
        ));
    }
    let journal = run_dir.join(journal::JOURNAL_FILE);
    if journal.exists() {
        let archived = run_dir.join(format!(
            "journal.{}.jsonl",
            jiff::Timestamp::now().as_second()
        ));
        std::fs::rename(&journal, &archived).map_err(anyhow::Error::from)?;
        reporter.notice(&format!(
            "--restart: the previous journal is kept as {}",
            archived.display()
        ));
    }
    Ok(())
}

/// Runs the step loop on a thread of its own, not on a worker of the runtime: a step blocked
/// in a system call then blocks neither this function nor the workers that deliver signals
/// and fire timers. SIGINT or SIGTERM cancels it (dropping the loop's future where it waits,
/// which kills its processes) and journals the interruption.
async fn drive_steps(
    step_loop: impl std::future::Future<Output = anyhow::Result<Exit>> + Send + 'static,
    recorder: &Recorder,
) -> Result<Exit> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
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
        _ = interrupt.recv() => stop_on_signal(recorder, steps, cancel).await,
        _ = terminate.recv() => stop_on_signal(recorder, steps, cancel).await,
    };
    match outcome.and_then(|outcome| {
        outcome.ok_or_else(|| anyhow::anyhow!("the step loop was cancelled"))?
    }) {
        Ok(exit) => Ok(exit),
        Err(error) => {
            let _ = recorder.finish(Exit::StepFailed);
            Err(error.into())
        }
    }
}

/// How a run ended, with its summary from the journal.
fn finished_run(playbook: &Playbook, run_dir: &std::path::Path, exit: Exit) -> Result<RunResult> {
    let (events, _) = journal::read_events(run_dir)?;
    let order: Vec<&str> = playbook.steps.iter().map(|step| step.id()).collect();
    Ok(RunResult {
        exit,
        summary: RunSummary::from_events(&events, &order, playbook.maintenance_window.as_ref()),
    })
}

/// How a run ended, and its summary over every command that worked on it.
#[derive(Debug)]
pub struct RunResult {
    /// The exit status.
    pub exit: Exit,
    /// Time per step, data copied, the maintenance window (from the whole journal).
    pub summary: RunSummary,
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
        // A loop step is done item by item.
        let done = history.done(step.id()).into_iter();
        let changed = done
            .chain(history.done_items(step.id()))
            .any(|(hash, _)| hash.as_ref().is_some_and(|hash| *hash != step.hash));
        if changed {
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

/// The step loop, on a thread of its own (see [`run`]); `clusters` are the default cluster
/// and those of the steps' contexts.
async fn run_steps(
    playbook: Arc<Playbook>,
    mut vars: crate::playbook::Scopes,
    history: History,
    options: RunOptions,
    recorder: Recorder,
    (cluster, contexts): (Option<Cluster>, StepClusters),
    plan: Option<PlanGuard>,
) -> anyhow::Result<Exit> {
    // With a saved plan, what the steps write through the client is recorded, so that a
    // change the plan's steps did not make is told from theirs.
    let readings = plan.as_ref().map(|_| Readings::default());
    let cluster = match &readings {
        Some(readings) => cluster.map(|cluster| cluster.recording(readings.clone())),
        None => cluster,
    };
    let renderer = Renderer::with_cluster(recorder.masker.clone(), cluster.clone());
    let from_index = options
        .from
        .as_deref()
        .and_then(|id| playbook.steps.iter().position(|step| step.id() == id));
    let mut visitor = RunVisitor {
        playbook: &playbook,
        history: &history,
        options: &options,
        recorder: &recorder,
        from_index,
        approvals: history.approvals.clone(),
        started: Instant::now(),
        plan,
    };
    let walk = Walk {
        playbook: &playbook,
        renderer: &renderer,
        vars: &mut vars,
        notes: history.notes.clone(),
        reporter: &*recorder.reporter,
        cluster: cluster.as_ref(),
        contexts: &contexts,
        surroundings: &options.surroundings,
        readings: readings.as_ref(),
    };
    walk.run(&mut visitor).await
}

/// What `run` does with each step: skips what is done or out of scope, asks for approval,
/// applies the action with its retries, and journals it all.
struct RunVisitor<'a> {
    playbook: &'a Playbook,
    history: &'a History,
    options: &'a RunOptions,
    recorder: &'a Recorder,
    /// The index of `--from`'s step.
    from_index: Option<usize>,
    /// Approvals journaled and given so far.
    approvals: std::collections::HashSet<String>,
    /// When the step being visited started.
    started: Instant,
    /// `--plan`: the saved plan the run holds to.
    plan: Option<PlanGuard>,
}

#[async_trait::async_trait]
impl StepVisitor for RunVisitor<'_> {
    type Output = Exit;

    fn before(&mut self, index: usize, step: &Step, fresh: bool) -> anyhow::Result<Before> {
        let id = step.id();
        let options = self.options;
        self.started = Instant::now();
        // `--only` names a loop step, not one of its items.
        let forced = fresh
            || options.only.as_deref() == Some(step.playbook_id())
            || self.from_index.is_some_and(|from| index >= from);
        if !forced && let Some((_, output)) = self.history.done(id) {
            self.recorder.show(EventKind::StepSkipped {
                step: id.to_string(),
                reason: "done in an earlier run".into(),
                done: true,
                hash: None,
            });
            return Ok(Before::Done {
                output: output.clone().unwrap_or(serde_json::Value::Null),
            });
        }
        let out_of_scope = match (&options.only, self.from_index) {
            (Some(only), _) => only != step.playbook_id(),
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
            self.recorder.show(EventKind::StepSkipped {
                step: id.to_string(),
                reason,
                done: false,
                hash: None,
            });
            return Ok(Before::Pass { output: None });
        }
        Ok(Before::Evaluate)
    }

    fn guard_policy(&self, tries: &Tries) -> GuardPolicy {
        tries.guard_policy()
    }

    fn verbose(&self) -> bool {
        self.recorder.reporter.verbose()
    }

    fn note_sink(&self, step: &Step) -> Option<Box<dyn StepNotes>> {
        Some(Box::new(NoteWriter {
            run_id: self.recorder.run_id.clone(),
            step: step.id().to_string(),
            journal: self.recorder.journal.clone(),
            masker: self.recorder.masker.clone(),
            recorded: Mutex::new(Vec::new()),
        }))
    }

    fn rescue_not_needed(&mut self, step: &Step, block: &Block) -> anyhow::Result<()> {
        self.recorder.show(EventKind::StepSkipped {
            step: step.id().to_string(),
            reason: format!(
                "rescue of block `{}`, not needed: no step of the block failed",
                block.id
            ),
            done: false,
            hash: None,
        });
        Ok(())
    }

    /// Journals the failure; with a rescue, which may undo what the block did, the block's
    /// steps are no longer done for the next run. Without one, the next run goes on at the
    /// failed step, as outside a block.
    fn block_failed(&mut self, block: &Block, failure: &Failure) -> anyhow::Result<()> {
        let forgotten = if block.rescue.is_empty() {
            Vec::new()
        } else {
            self.playbook.steps[block.steps()]
                .iter()
                .map(|step| step.id().to_string())
                .collect()
        };
        self.recorder.emit(EventKind::BlockFailed {
            block: block.id.clone(),
            step: failure.step.clone(),
            error: failure.error.clone(),
            steps: forgotten,
        })
    }

    fn block_finished(
        &mut self,
        block: &Block,
        failure: &Failure,
        handler: Option<&Failure>,
    ) -> anyhow::Result<()> {
        self.recorder.emit(EventKind::BlockFinished {
            block: block.id.clone(),
            failed: failure.step.clone(),
            rescued: !block.rescue.is_empty(),
            handler_failed: handler.map(|handler| handler.step.clone()),
            handler_error: handler.map(|handler| handler.error.clone()),
        })
    }

    fn failed(&mut self, failure: Failure) -> anyhow::Result<Exit> {
        self.recorder.finish(failure.exit)
    }

    async fn visit(
        &mut self,
        step: &Step,
        cx: &StepContext<'_>,
        evaluated: anyhow::Result<Evaluated>,
    ) -> anyhow::Result<After<Exit>> {
        let (recorder, started, id) = (self.recorder, self.started, step.id());
        let stop = |exit: anyhow::Result<Exit>| exit.map(After::Stop);
        let failed = |error: StepError| fail(recorder, step, started, error).map(After::Failed);
        if self.options.halt.is_halted() {
            return stop(recorder.finish(Exit::Interrupted));
        }
        if let Some(stopped) = self.hold_to_plan(step, cx, &evaluated).await? {
            return Ok(stopped);
        }
        let Evaluated { decision, tries } = match evaluated {
            Ok(evaluated) => evaluated,
            Err(error) => return failed(error.into()),
        };
        match decision {
            StepDecision::Skip { reason, done } => {
                recorder.emit(EventKind::StepSkipped {
                    step: id.to_string(),
                    reason,
                    done,
                    hash: done.then(|| step.hash.clone()),
                })?;
                return Ok(After::Next {
                    output: None,
                    notes: Vec::new(),
                });
            }
            StepDecision::Unknown { reason } => {
                let error =
                    anyhow::anyhow!("cannot run this step yet: it {reason}; run that step first");
                return failed(error.into());
            }
            StepDecision::Refused { reason, .. } => {
                return failed(StepError::Refused(anyhow::anyhow!(reason)));
            }
            StepDecision::Run => {}
        }
        if !self.approved(step, cx).await? {
            return stop(recorder.finish(Exit::Paused));
        }
        let outcome = match self.apply_with_retries(step, cx, &tries).await? {
            Ok(outcome) => outcome,
            Err(error) => return failed(error),
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
        if let Some(plan) = &mut self.plan
            && !step.action().changes_nothing()
        {
            let written = step
                .action()
                .reports_its_writes()
                .then(|| cx.readings.map(Readings::take_written).unwrap_or_default());
            plan.after_step(id, cx.cluster, written.as_deref()).await?;
        }
        Ok(After::Next {
            output: Some(outcome.output),
            notes: Vec::new(),
        })
    }

    fn finished(&mut self) -> anyhow::Result<Exit> {
        self.recorder.finish(Exit::Success)
    }
}

impl RunVisitor<'_> {
    /// Applies the step's action, trying again as its `retries` and `delay` say while the
    /// error is one worth retrying. The outer error is the journal's.
    async fn apply_with_retries(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        tries: &Tries,
    ) -> anyhow::Result<Result<crate::actions::Outcome, StepError>> {
        let (recorder, id) = (self.recorder, step.id());
        let mut attempt = 1;
        loop {
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
            match apply_once(step, cx, tries.timeout)
                .await
                .map_err(StepError::from)
            {
                Ok(outcome) => return Ok(Ok(outcome)),
                Err(error) if attempt <= tries.retries && error.is_retryable() => {
                    recorder.emit(EventKind::Warning {
                        message: format!(
                            "step `{id}` try {attempt} of {} failed: {:#}; trying again in {}",
                            tries.retries + 1,
                            error.error(),
                            HumanDuration(tries.delay)
                        ),
                    })?;
                    attempt += 1;
                    tokio::time::sleep(tries.delay).await;
                }
                Err(error) => return Ok(Err(error)),
            }
        }
    }

    /// With `--plan`, before a step: stops the run (exit 6) when what the step's decision
    /// read differs from the plan, and skips a step the plan skips. `None` goes on as
    /// without a plan.
    async fn hold_to_plan(
        &self,
        step: &Step,
        cx: &StepContext<'_>,
        evaluated: &anyhow::Result<Evaluated>,
    ) -> anyhow::Result<Option<After<Exit>>> {
        let (recorder, id) = (self.recorder, step.id());
        let Some(plan) = &self.plan else {
            return Ok(None);
        };
        // What the step's evaluation read is not needed; what it writes from here on is.
        if let Some(readings) = cx.readings {
            readings.take();
            readings.take_written();
        }
        let change = match plan.before_step(id, cx.cluster).await {
            Ok(change) => change,
            Err(error) => {
                return fail(recorder, step, self.started, error)
                    .and_then(|failure| recorder.finish(failure.exit))
                    .map(|exit| Some(After::Stop(exit)));
            }
        };
        if let Some(change) = change {
            recorder.emit(EventKind::PlanChanged {
                step: change.step,
                before_any_step: false,
                changes: change.changes,
            })?;
            return recorder
                .finish(Exit::PlanChanged)
                .map(|exit| Some(After::Stop(exit)));
        }
        let skipped_now = matches!(
            evaluated,
            Ok(Evaluated {
                decision: StepDecision::Skip { .. },
                ..
            })
        );
        if let Some((PlanDecision::Skip, reason)) = plan.decision(id)
            && !skipped_now
        {
            recorder.emit(EventKind::StepSkipped {
                step: id.to_string(),
                reason: format!("the plan skips it ({reason})"),
                done: false,
                hash: None,
            })?;
            return Ok(Some(After::Next {
                output: None,
                notes: Vec::new(),
            }));
        }
        Ok(None)
    }

    /// When `gate` opens the maintenance window, journals how long the window is predicted
    /// to take, so that the summary (of this command or a later one) can say how the
    /// prediction fared.
    fn predict_window(&self, gate: &str) -> anyhow::Result<()> {
        let opens = self
            .playbook
            .maintenance_window
            .as_ref()
            .is_some_and(|window| window.from == gate);
        let run_dir = self.recorder.run_dir()?;
        if let Some(forecast) = opens
            .then(|| window::forecast_run(self.playbook, &run_dir))
            .flatten()
        {
            self.recorder
                .emit(EventKind::WindowPredicted { forecast })?;
        }
        Ok(())
    }

    /// Whether the step may run: it has no gate, its approval is journaled, or it is given
    /// now (`--yes`, `--approve`, or a yes at the terminal), which is journaled. `false`
    /// when the run must pause here.
    async fn approved(&mut self, step: &Step, cx: &StepContext<'_>) -> anyhow::Result<bool> {
        let id = step.id();
        let question = step
            .spec
            .confirm
            .as_deref()
            .or_else(|| step.action().approval_prompt());
        let Some(question) = question else {
            return Ok(true);
        };
        if self.approvals.contains(id) {
            return Ok(true);
        }
        let question = cx.render(question).unwrap_or_else(|_| question.to_string());
        let via = if self.options.yes {
            Some("--yes")
        } else if self.options.approve.iter().any(|approved| approved == id) {
            Some("--approve")
        } else if !self.options.never_ask && approval::can_ask() {
            approval::ask(id, &question).await.then_some("terminal")
        } else {
            None
        };
        let Some(via) = via else {
            self.recorder.emit(EventKind::Paused {
                step: id.to_string(),
                message: question,
            })?;
            return Ok(false);
        };
        self.recorder.emit(EventKind::Approved {
            step: id.to_string(),
            via: via.into(),
        })?;
        self.approvals.insert(id.to_string());
        self.predict_window(id)?;
        Ok(true)
    }
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

/// Records a step that failed, that was refused (exit 3), or whose input turned out invalid
/// once rendered or read (exit 2). An invalid step is journaled as failed, not done, so that
/// `run` again evaluates it anew once the input is fixed.
fn fail(
    recorder: &Recorder,
    step: &Step,
    started: Instant,
    error: impl Into<StepError>,
) -> anyhow::Result<Failure> {
    let error = error.into();
    let (exit, status) = match &error {
        StepError::Refused(_) => (Exit::Refused, StepStatus::Refused),
        StepError::Invalid(_) => (Exit::InvalidInput, StepStatus::Failed),
        StepError::Failed(_) => (Exit::StepFailed, StepStatus::Failed),
    };
    recorder.emit(EventKind::StepFinished {
        step: step.id().to_string(),
        status,
        duration_ms: started.elapsed().as_millis() as u64,
        hash: Some(step.hash.clone()),
        output: None,
        error: Some(format!("{:#}", error.error())),
        tail: Vec::new(),
    })?;
    Ok(Failure {
        step: step.id().to_string(),
        error: format!("{:#}", error.error()),
        exit,
    })
}
