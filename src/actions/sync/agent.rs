//! The copy's agent: `runbook sync-agent ...` (a hidden subcommand) run inside the pod of a
//! `sync` with `on:`. It runs the same pass as a local copy ([`CopyPass`]), detached
//! from the exec connection that started it, and keeps everything `runbook` needs to watch
//! and collect it in a directory of the pod:
//!
//! - `lock`: held (`flock`) by the running agent for its whole life, so a second start is
//!   refused as "already running", and a status can tell a live agent from a dead one;
//! - `request.json`: what to copy (the rendered settings) and the step's notes so far;
//! - `state.json`: the agent's id and pid, the notes of the pass (its plan, each finished
//!   shard), the lines it printed, the progress counters, and at the end its result;
//!   replaced atomically, so a reader never sees half of it;
//! - `agent.log`: its stdout and stderr (a panic, for one).
//!
//! `start` takes the lock, writes the request and spawns `run` in a session of its own
//! (`setsid`), handing it the lock, then returns at once; `status` prints the state as JSON
//! lines (`--follow` keeps printing every 2 s), and needs nothing but the directory.
//!
//! A copy with `repeat:` keeps the destination warm: once its first pass has a result, the
//! agent runs a catch-up pass that often, each from the start of the previous finished pass
//! (see [`CatchUp`]), until `stop` writes the `stop` file; a pass in flight then stops too.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::copy_pass::CopyPass;
use super::pass::{Ledger, Note, PassRecord};
use super::pass_reporter::PassReporter;
use super::progress::Board;
use super::spec::Settings;
use crate::actions::InvalidInput;

/// The lock file in an agent's directory.
const LOCK_FILE: &str = "lock";
/// The request file.
const REQUEST_FILE: &str = "request.json";
/// The state file.
const STATE_FILE: &str = "state.json";
/// The agent's own output.
const LOG_FILE: &str = "agent.log";
/// Written by `stop`: a repeating agent ends its catch-up passes.
const STOP_FILE: &str = "stop";
/// How often `status --follow` prints, and the agent writes its progress.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// `runbook sync-agent ...`: the agent of a `sync` that runs in a pod. Not for people.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Start an agent for the request on stdin, detached, unless one is running there.
    Start {
        /// The agent's state directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run the copy (started by `start`, which holds the lock for it).
    Run {
        /// The agent's state directory.
        #[arg(long)]
        dir: PathBuf,
        /// The lock, inherited from `start`.
        #[arg(long)]
        lock_fd: RawFd,
    },
    /// Print the agent's state as a JSON line (a [`StatusReport`]), or, with `--follow`,
    /// a [`StatusBeat`] line every 2 s.
    Status {
        /// The agent's state directory.
        #[arg(long)]
        dir: PathBuf,
        /// Leave out the first N notes (the caller has them).
        #[arg(long, default_value_t = 0)]
        notes_from: usize,
        /// Leave out the first N lines.
        #[arg(long, default_value_t = 0)]
        said_from: usize,
        /// Print a [`StatusBeat`] every 2 s instead, for up to this many seconds, until the
        /// agent ends or has notes or lines past `--notes-from`/`--said-from`.
        #[arg(long, default_value_t = 0)]
        follow: u64,
    },
    /// Stop the catch-up passes of a repeating agent (a pass in flight stops too); prints
    /// nothing, the agent's state says when it has ended.
    Stop {
        /// The agent's state directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Copy the shards of one index of an Indexed Job (`on: {job: ...}`), in the foreground:
    /// the request is in `RUNBOOK_SYNC_JOB`, the state goes to `DIR/INDEX`.
    Shards {
        /// The Job's state directory (each index has one below it).
        #[arg(long)]
        dir: PathBuf,
        /// The completion index.
        #[arg(long, env = "JOB_COMPLETION_INDEX")]
        index: usize,
    },
}

/// The variable that carries a Job pod's [`ShardsRequest`].
pub const SHARDS_REQUEST_ENV: &str = "RUNBOOK_SYNC_JOB";

/// What the pods of a Job copy: index `i` of `parallelism` copies shards `i`, `i + N`, ...
/// of the pass's plan, leaving out those in `done`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardsRequest {
    /// The Job's name: a state directory left by another Job is not continued.
    pub job: String,
    /// The step.
    pub step: String,
    /// What to copy.
    pub settings: Settings,
    /// The pass and its plan.
    pub pass: PassRecord,
    /// Shards finished before the Job was created.
    pub done: BTreeSet<usize>,
    /// The Job's completion indexes.
    pub parallelism: usize,
}

impl ShardsRequest {
    /// The shards of `index`.
    pub fn shards_of(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        (index..self.pass.shards.len()).step_by(self.parallelism.max(1))
    }
}

/// What `runbook` asks an agent to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRequest {
    /// The agent's id.
    pub agent: String,
    /// The step, for people reading the directory.
    pub step: String,
    /// What to copy.
    pub settings: Settings,
    /// The step's notes so far (earlier passes, finished shards of an unfinished one).
    pub notes: Vec<serde_json::Value>,
    /// The notes of the step this one continues (`after:`).
    #[serde(default)]
    pub continued: Option<Vec<serde_json::Value>>,
    /// `repeat:`: seconds between catch-up passes once the first pass has a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_secs: Option<u64>,
    /// Go straight to the catch-up passes, the first one at once: an earlier agent of the
    /// step did its first pass, and died.
    #[serde(default)]
    pub catch_up_now: bool,
}

/// The catch-up passes of a repeating agent, in its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatchUp {
    /// Seconds between two passes.
    pub every_secs: u64,
    /// The passes that started, in order.
    pub passes: Vec<CatchUpPass>,
    /// When the next pass starts (RFC 3339), while the agent waits for it.
    #[serde(default)]
    pub next: Option<String>,
    /// `stop` was asked: no pass starts any more.
    #[serde(default)]
    pub stopped: bool,
}

/// One catch-up pass: what the journal keeps of it once collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUpPass {
    /// Its pass number in the step.
    pub pass: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended, once it has.
    #[serde(default)]
    pub ended: Option<String>,
    /// `running`, `done`, `failed` or `stopped` (by `stop`, in flight).
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Entries it compared (the source's).
    #[serde(default)]
    pub entries: u64,
    /// Entries it copied.
    #[serde(default)]
    pub files: u64,
    /// Bytes it copied.
    #[serde(default)]
    pub bytes: u64,
}

/// Something the agent said, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Said {
    /// A line for a person.
    Line(String),
    /// A warning.
    Warning(String),
}

/// How far the shards are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Entries done.
    pub done_files: u64,
    /// Entries in all.
    pub total_files: u64,
    /// Workers copying now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// How an agent ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AgentResult {
    /// The pass finished (and verified, if asked).
    Done {
        /// Whether it changed anything.
        changed: bool,
        /// The step's output.
        output: serde_json::Value,
    },
    /// It failed.
    Failed {
        /// Why, with rsync's own message.
        message: String,
        /// Bad input (a missing source, an old rsync): exit 2 rather than 1.
        #[serde(default)]
        invalid: bool,
    },
}

/// An agent's state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Its id.
    pub agent: String,
    /// The step it copies for.
    pub step: String,
    /// Its process.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it last wrote this file.
    pub updated: String,
    /// The notes of its pass, in order.
    pub notes: Vec<Note>,
    /// What it said, in order.
    pub said: Vec<Said>,
    /// Progress of the shards, once they are being copied.
    #[serde(default)]
    pub progress: Option<Counters>,
    /// The progress bar and the workers' lines.
    #[serde(default)]
    pub board: Vec<String>,
    /// The shards (their index in the pass's plan) its workers copy now, for `status`'s grid.
    #[serde(default)]
    pub running_shards: Vec<usize>,
    /// How it ended, once it has (a repeating agent: its first pass).
    #[serde(default)]
    pub result: Option<AgentResult>,
    /// Its catch-up passes, when it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

impl AgentState {
    /// The state of an agent that has not run yet (`pid` 0 until it does).
    fn fresh(request: &AgentRequest) -> Self {
        Self::new(&request.agent, &request.step, 0)
    }

    /// The state of agent `agent` (process `pid`) of `step`, started now, nothing done.
    fn new(agent: &str, step: &str, pid: u32) -> Self {
        let now = jiff::Timestamp::now().to_string();
        AgentState {
            agent: agent.to_string(),
            step: step.to_string(),
            pid,
            started: now.clone(),
            updated: now,
            notes: Vec::new(),
            said: Vec::new(),
            progress: None,
            board: Vec::new(),
            running_shards: Vec::new(),
            result: None,
            catch_up: None,
        }
    }
}

/// What `status` prints: whether an agent holds the lock, and its state (with the notes and
/// lines before `notes_from` and `said_from` left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// An agent process holds the lock.
    pub alive: bool,
    /// Index of the first note in `state.notes`.
    pub notes_from: usize,
    /// Index of the first line in `state.said`.
    pub said_from: usize,
    /// The state, when there is one.
    pub state: Option<AgentState>,
}

/// One line of `status --follow`: how the agent is doing, in a size that does not grow with
/// the copy. A follow is read line by line, so a line must stay small enough to arrive whole:
/// it carries counts of the notes and lines, not the notes themselves (a pass's plan lists
/// every path it copies, megabytes for a big pass); the caller fetches those with a plain
/// `status`, whose whole output is read at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBeat {
    /// An agent process holds the lock.
    pub alive: bool,
    /// The agent whose state it is; `None` while there is no state.
    pub agent: Option<String>,
    /// How many notes the state holds.
    pub notes: usize,
    /// How many lines it said.
    pub said: usize,
    /// Progress of the shards, once they are being copied.
    pub progress: Option<Counters>,
    /// The progress bar and the workers' lines (one per worker).
    pub board: Vec<String>,
    /// The agent has a result.
    pub finished: bool,
}

impl StatusBeat {
    /// The beat of a state (`None`: there is none).
    fn of(alive: bool, state: Option<&AgentState>) -> Self {
        StatusBeat {
            alive,
            agent: state.map(|state| state.agent.clone()),
            notes: state.map_or(0, |state| state.notes.len()),
            said: state.map_or(0, |state| state.said.len()),
            progress: state.and_then(|state| state.progress),
            board: state.map(|state| state.board.clone()).unwrap_or_default(),
            finished: state.is_some_and(|state| state.result.is_some()),
        }
    }

    /// Whether the agent has something that a caller holding `notes_from` notes and
    /// `said_from` lines must fetch with a plain `status`: new notes or lines, a result, an
    /// end, or no state at all.
    pub fn has_news(&self, notes_from: usize, said_from: usize) -> bool {
        self.agent.is_none()
            || !self.alive
            || self.finished
            || self.notes > notes_from
            || self.said > said_from
    }
}

/// The output of `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartReport {
    /// A new agent was started.
    pub started: bool,
    /// The agent that runs there now (the new one, or the one already running).
    pub agent: String,
    /// Its pid.
    pub pid: u32,
}

/// Runs a `sync-agent` subcommand; the exit code says whether it could do its job.
pub fn run_command(command: AgentCommand) -> ExitCode {
    let result = match command {
        AgentCommand::Start { dir } => start(&dir),
        AgentCommand::Run { dir, lock_fd } => run(&dir, lock_fd),
        AgentCommand::Status {
            dir,
            notes_from,
            said_from,
            follow,
        } => status(&dir, notes_from, said_from, Duration::from_secs(follow)),
        AgentCommand::Shards { dir, index } => shards(&dir, index),
        AgentCommand::Stop { dir } => stop(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Takes a lock without waiting: `Ok(false)` when another open file holds it.
fn try_lock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    let operation = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: flock only acts on the open file description of a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

fn open_lock(dir: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("cannot open {}", dir.join(LOCK_FILE).display()))
}

/// Whether an agent holds the directory's lock. A probe takes a shared lock for an instant,
/// so `start` tries its exclusive lock a few times before it says "already running".
pub fn is_running(dir: &Path) -> anyhow::Result<bool> {
    if !dir.join(LOCK_FILE).exists() {
        return Ok(false);
    }
    let file = open_lock(dir)?;
    Ok(!try_lock(&file, false)?)
}

/// Reads the state file; `None` when there is none yet.
pub fn read_state(dir: &Path) -> anyhow::Result<Option<AgentState>> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not an agent's state", path.display())
        })?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the state file atomically; `durable` waits until it is on disk.
fn write_state(dir: &Path, state: &AgentState, durable: bool) -> anyhow::Result<()> {
    let path = dir.join(STATE_FILE);
    let partial = dir.join(format!("{STATE_FILE}.{}", std::process::id()));
    let mut file =
        File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(&serde_json::to_vec(state)?)?;
    if durable {
        file.sync_data()?;
    }
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// `start`: refuses while an agent runs, else writes the request and the first state, and
/// starts `run` detached with the lock.
fn start(dir: &Path) -> anyhow::Result<()> {
    let request: AgentRequest = serde_json::from_reader(std::io::stdin().lock())
        .context("the request on stdin is not an agent request")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = open_lock(dir)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !try_lock(&lock, true)? {
        if Instant::now() >= deadline {
            let running = read_state(dir)?;
            let report = StartReport {
                started: false,
                agent: running
                    .as_ref()
                    .map(|s| s.agent.clone())
                    .unwrap_or_default(),
                pid: running.as_ref().map_or(0, |s| s.pid),
            };
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stop asked of an earlier agent here is not this one's.
    match std::fs::remove_file(dir.join(STOP_FILE)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).context("cannot clear the earlier agent's stop");
        }
        _ => {}
    }
    std::fs::write(dir.join(REQUEST_FILE), serde_json::to_vec(&request)?)?;
    // The new agent's state replaces the one an earlier agent left, before the new agent
    // runs: it must never read (and write back) the earlier one's.
    write_state(dir, &AgentState::fresh(&request), true)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))?;
    // A descriptor without close-on-exec, for the child to inherit: the lock belongs to the
    // open file description, which the child then shares, so it stays held once we exit.
    // SAFETY: dup of a descriptor we own; the result is checked.
    let inherited = unsafe { libc::dup(lock.as_raw_fd()) };
    if inherited < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot pass the lock on");
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["sync-agent", "run", "--dir"])
        .arg(dir)
        .arg("--lock-fd")
        .arg(inherited.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent. A session of
    // its own: the hang-up of the exec that started it (its process group) does not reach it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().context("cannot start the agent")?;
    println!(
        "{}",
        serde_json::to_string(&StartReport {
            started: true,
            agent: request.agent,
            pid: child.id(),
        })?
    );
    Ok(())
}

/// The async runtime of an agent: two workers, as for runbook itself.
fn agent_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The agent's reporter: everything goes into the state file.
struct StateReporter {
    dir: PathBuf,
    state: Mutex<AgentState>,
}

impl StateReporter {
    fn update(&self, durable: bool, change: impl FnOnce(&mut AgentState)) -> anyhow::Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("a copy thread panicked"))?;
        change(&mut state);
        state.updated = jiff::Timestamp::now().to_string();
        write_state(&self.dir, &state, durable)
    }
}

impl PassReporter for StateReporter {
    fn line(&self, line: &str) {
        let said = Said::Line(line.to_string());
        if let Err(error) = self.update(false, |state| state.said.push(said)) {
            eprintln!("cannot record a line: {error:#}");
        }
    }

    fn warn(&self, message: &str) {
        let said = Said::Warning(message.to_string());
        if let Err(error) = self.update(false, |state| state.said.push(said)) {
            eprintln!("cannot record a warning: {error:#}");
        }
    }

    fn progress(&self, board: &Board, _detailed: bool) {
        let snapshot = board.snapshot();
        let lines = board.lines();
        let running = board.running_shards();
        let counters = Counters {
            done_bytes: snapshot.done_bytes,
            total_bytes: snapshot.total_bytes,
            done_files: snapshot.done_files,
            total_files: snapshot.total_files,
            workers: snapshot.workers,
        };
        if let Err(error) = self.update(false, |state| {
            state.progress = Some(counters);
            state.board = lines;
            state.running_shards = running;
        }) {
            eprintln!("cannot record progress: {error:#}");
        }
    }

    fn note(&self, note: &Note) -> anyhow::Result<()> {
        self.update(true, |state| state.notes.push(note.clone()))
    }
}

/// The state `start` wrote for the agent of `request` (with its start time), or a fresh
/// one: never the state another agent left in the directory, which the new agent would
/// otherwise write back as its own.
fn own_state(dir: &Path, request: &AgentRequest) -> anyhow::Result<AgentState> {
    Ok(read_state(dir)?
        .filter(|state| state.agent == request.agent)
        .unwrap_or_else(|| AgentState::fresh(request)))
}

/// `run`: the copy, then its result in the state file.
fn run(dir: &Path, lock_fd: RawFd) -> anyhow::Result<()> {
    // SAFETY: `start` handed this descriptor to us and nothing else in this process owns it;
    // keeping it open keeps the lock.
    let _lock = unsafe { File::from_raw_fd(lock_fd) };
    let request: AgentRequest = serde_json::from_slice(
        &std::fs::read(dir.join(REQUEST_FILE)).context("cannot read the request")?,
    )?;
    let mut state = own_state(dir, &request)?;
    state.pid = std::process::id();
    let reporter = StateReporter {
        dir: dir.to_path_buf(),
        state: Mutex::new(state),
    };
    reporter.update(false, |_| {})?;
    let runtime = agent_runtime()?;
    if let Some(every) = request.repeat_secs.filter(|_| request.catch_up_now) {
        reporter.update(true, |state| {
            state.catch_up = Some(CatchUp {
                every_secs: every,
                ..CatchUp::default()
            });
        })?;
        return catch_up(dir, &request, &reporter, &runtime, 0);
    }
    let ledger = Ledger::read(&request.notes);
    let continued = request.continued.as_deref().map(Ledger::read);
    let pass = CopyPass::new(
        &request.settings,
        &ledger,
        continued.as_ref(),
        &reporter,
        None,
    );
    let outcome = runtime.block_on(pass.run());
    let result = match outcome {
        Ok(outcome) => AgentResult::Done {
            changed: outcome.changed,
            output: outcome.output,
        },
        Err(error) => AgentResult::Failed {
            invalid: InvalidInput::find(&error).is_some(),
            message: match InvalidInput::find(&error) {
                Some(invalid) => invalid.0.clone(),
                None => format!("{error:#}"),
            },
        },
    };
    let done = matches!(result, AgentResult::Done { .. });
    reporter.update(true, |state| {
        state.result = Some(result);
        if let Some(every_secs) = request.repeat_secs.filter(|_| done) {
            state.catch_up = Some(CatchUp {
                every_secs,
                ..CatchUp::default()
            });
        }
    })?;
    match request.repeat_secs {
        Some(every) if done => catch_up(dir, &request, &reporter, &runtime, every),
        _ => Ok(()),
    }
}

/// The catch-up passes of a repeating agent: the first `first_wait` seconds from now, then
/// one every `repeat_secs` after the previous one ended, each continuing the step's notes (so it copies what changed since the start
/// of the last finished pass), until `stop`. A failed pass is recorded and the next one
/// tries again.
fn catch_up(
    dir: &Path,
    request: &AgentRequest,
    reporter: &StateReporter,
    runtime: &tokio::runtime::Runtime,
    first_wait: u64,
) -> anyhow::Result<()> {
    let stop_file = dir.join(STOP_FILE);
    let continued = request.continued.as_deref().map(Ledger::read);
    let every = request.repeat_secs.unwrap_or(first_wait);
    let mut wait = first_wait;
    loop {
        let next = jiff::Timestamp::now() + Duration::from_secs(wait);
        wait = every;
        reporter.update(false, |state| {
            if let Some(catch_up) = &mut state.catch_up {
                catch_up.next = Some(next.to_string());
            }
        })?;
        while jiff::Timestamp::now() < next && !stop_file.exists() {
            std::thread::sleep(Duration::from_millis(200));
        }
        if stop_file.exists() {
            return reporter.update(true, |state| mark_stopped(state, None));
        }
        let mut notes = request.notes.clone();
        let own = reporter
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("a copy thread panicked"))?
            .notes
            .clone();
        notes.extend(
            own.iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
        );
        let ledger = Ledger::read(&notes);
        let number = ledger.next_pass();
        let started = jiff::Timestamp::now().to_string();
        reporter.update(true, |state| {
            if let Some(catch_up) = &mut state.catch_up {
                catch_up.next = None;
                catch_up.passes.push(CatchUpPass {
                    pass: number,
                    started,
                    ended: None,
                    state: "running".into(),
                    error: None,
                    entries: 0,
                    files: 0,
                    bytes: 0,
                });
            }
        })?;
        let pass = CopyPass::new(
            &request.settings,
            &ledger,
            continued.as_ref(),
            reporter,
            None,
        );
        // The pass stops with the agent's `stop`: dropping it stops its walk and its rsyncs.
        let outcome = runtime.block_on(async {
            tokio::select! {
                outcome = pass.run() => Some(outcome),
                () = stop_asked(&stop_file) => None,
            }
        });
        let Some(outcome) = outcome else {
            return reporter.update(true, |state| mark_stopped(state, Some("stopped")));
        };
        let error = outcome.err().map(|error| format!("{error:#}"));
        reporter.update(true, |state| {
            let totals = pass_totals(&state.notes, number);
            if let Some(last) = state.catch_up.as_mut().and_then(|c| c.passes.last_mut()) {
                last.ended = Some(jiff::Timestamp::now().to_string());
                last.state = if error.is_some() { "failed" } else { "done" }.into();
                last.error = error;
                (last.entries, last.files, last.bytes) = totals;
            }
        })?;
    }
}

/// Waits until the `stop` file exists.
async fn stop_asked(stop_file: &Path) {
    while !stop_file.exists() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A repeating agent's state once `stop` was asked: no next pass, and the pass in flight
/// (if `in_flight` says how it ended) ended.
fn mark_stopped(state: &mut AgentState, in_flight: Option<&str>) {
    let totals_of = |number| pass_totals(&state.notes, number);
    let totals = state
        .catch_up
        .as_ref()
        .and_then(|catch_up| catch_up.passes.last())
        .map(|last| totals_of(last.pass));
    if let Some(catch_up) = &mut state.catch_up {
        catch_up.stopped = true;
        catch_up.next = None;
        if let (Some(how), Some(last), Some(totals)) =
            (in_flight, catch_up.passes.last_mut(), totals)
            && last.ended.is_none()
        {
            last.ended = Some(jiff::Timestamp::now().to_string());
            last.state = how.into();
            (last.entries, last.files, last.bytes) = totals;
        }
    }
}

/// What a pass compared and copied so far, from its notes: the entries it compared, and the
/// entries and bytes of its finished shards.
fn pass_totals(notes: &[Note], number: u32) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    for note in notes {
        match note {
            Note::Compared { pass, entries, .. } if *pass == number => totals.0 = *entries,
            Note::Shard {
                pass, files, bytes, ..
            } if *pass == number => {
                totals.1 += files;
                totals.2 += bytes;
            }
            _ => {}
        }
    }
    totals
}

/// `stop`: asks a repeating agent to end its catch-up passes.
fn stop(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join(STOP_FILE), b"")
        .with_context(|| format!("cannot ask the agent in {} to stop", dir.display()))
}

/// `shards`: copies one Job index's shards, then fails (exit 1) if any failed, so that the
/// Job runs the index again; a pod that follows a failed one continues its state.
fn shards(root: &Path, index: usize) -> anyhow::Result<()> {
    let text = std::env::var(SHARDS_REQUEST_ENV)
        .with_context(|| format!("{SHARDS_REQUEST_ENV} is not set: this runs in a Job's pod"))?;
    let request: ShardsRequest =
        serde_json::from_str(&text).context("the Job's request is not a shard request")?;
    let dir = root.join(index.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The pod this one replaces may still be ending: wait for its lock.
    let lock = open_lock(&dir)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !try_lock(&lock, true)? {
        if Instant::now() >= deadline {
            anyhow::bail!("another agent holds {} for a minute", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pass = request.pass.pass;
    let earlier = read_state(&dir)?.filter(|state| state.agent == request.job);
    let mut done = request.done.clone();
    let notes = match earlier {
        Some(state) => {
            for note in &state.notes {
                if let Note::Shard { pass: p, shard, .. } = note
                    && *p == pass
                {
                    done.insert(*shard);
                }
            }
            state.notes
        }
        None => Vec::new(),
    };
    let reporter = StateReporter {
        dir,
        state: Mutex::new(AgentState {
            notes,
            ..AgentState::new(&request.job, &request.step, std::process::id())
        }),
    };
    reporter.update(true, |_| {})?;
    let runtime = agent_runtime()?;
    let outcome = runtime.block_on(copy_shards(&request, index, &done, &reporter));
    let result = match outcome {
        Ok(failures) if failures.is_empty() => AgentResult::Done {
            changed: true,
            output: serde_json::json!({ "index": index }),
        },
        Ok(failures) => AgentResult::Failed {
            message: failures.join("\n"),
            invalid: false,
        },
        Err(error) => AgentResult::Failed {
            message: format!("{error:#}"),
            invalid: InvalidInput::find(&error).is_some(),
        },
    };
    let failed = match &result {
        AgentResult::Failed { message, .. } => Some(message.clone()),
        AgentResult::Done { .. } => None,
    };
    reporter.update(true, |state| state.result = Some(result))?;
    match failed {
        Some(message) => anyhow::bail!("{message}"),
        None => Ok(()),
    }
}

/// Runs the index's shards that are not done; returns the failures.
async fn copy_shards(
    request: &ShardsRequest,
    index: usize,
    done: &BTreeSet<usize>,
    reporter: &StateReporter,
) -> anyhow::Result<Vec<String>> {
    let settings = &request.settings;
    super::rsync::detect().await?;
    let plan = request.pass.plan();
    let mut transfer = super::rsync::Transfer::new(&settings.from, &settings.to);
    transfer.exclude.clone_from(&settings.exclude);
    transfer.extra.clone_from(&settings.rsync_args);
    transfer.bwlimit_kib = settings.worker_bwlimit_kib();
    let mine: Vec<usize> = request.shards_of(index).collect();
    let (bytes, files) = mine.iter().fold((0, 0), |(b, f), &i| {
        (b + plan.shards[i].bytes, f + plan.shards[i].files)
    });
    let board = Board::new(bytes, files, mine.len(), settings.most_jobs());
    let mut tasks = Vec::new();
    for &i in &mine {
        let shard = &plan.shards[i];
        if done.contains(&i) {
            board.already_done(shard.bytes, shard.files);
            continue;
        }
        tasks.push(super::pool::Task::for_shard(
            i,
            Some(plan.shards.len()),
            shard,
        ));
    }
    let outcome = super::copy_pass::run_journaled(
        tasks,
        None,
        settings.concurrency(),
        &transfer,
        &board,
        reporter,
        request.pass.pass,
    )
    .await?;
    reporter.progress(&board, false);
    let mut failures = outcome.failures;
    if let Some(stopped) = outcome.stopped {
        failures.insert(0, format!("the copy stopped: {stopped}"));
    }
    Ok(failures)
}

/// A report of the state with what the caller already has left out.
pub fn report(dir: &Path, notes_from: usize, said_from: usize) -> anyhow::Result<StatusReport> {
    // The liveness first: an agent that ends between the two reads leaves its result.
    let alive = is_running(dir)?;
    let state = read_state(dir)?.map(|mut state| {
        state.notes.drain(..notes_from.min(state.notes.len()));
        state.said.drain(..said_from.min(state.said.len()));
        state
    });
    Ok(StatusReport {
        alive,
        notes_from,
        said_from,
        state,
    })
}

/// `status`: one [`StatusReport`] line; or, following, a [`StatusBeat`] line every 2 s until
/// the agent has news for the caller (see [`StatusBeat::has_news`]) or `follow` has passed.
fn status(dir: &Path, notes_from: usize, said_from: usize, follow: Duration) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if follow.is_zero() {
        let report = report(dir, notes_from, said_from)?;
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
        return Ok(stdout.flush()?);
    }
    let deadline = Instant::now() + follow;
    loop {
        let alive = is_running(dir)?;
        let beat = StatusBeat::of(alive, read_state(dir)?.as_ref());
        writeln!(stdout, "{}", serde_json::to_string(&beat)?)?;
        stdout.flush()?;
        if beat.has_news(notes_from, said_from) || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(STATUS_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(agent: &str) -> AgentState {
        AgentState {
            agent: agent.into(),
            step: "copy".into(),
            pid: 1,
            started: "t".into(),
            updated: "t".into(),
            notes: vec![
                Note::PassDone { pass: 1 },
                Note::PassDone { pass: 2 },
                Note::PassDone { pass: 3 },
            ],
            said: vec![Said::Line("a".into()), Said::Warning("b".into())],
            progress: None,
            board: Vec::new(),
            running_shards: Vec::new(),
            result: None,
            catch_up: None,
        }
    }

    #[test]
    fn one_lock_holder_at_a_time_and_a_probe_sees_it() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(!is_running(dir.path()).expect("probe"));
        let first = open_lock(dir.path()).expect("open");
        assert!(try_lock(&first, true).expect("lock"));
        let second = open_lock(dir.path()).expect("open");
        assert!(!try_lock(&second, true).expect("lock"), "a second start");
        assert!(is_running(dir.path()).expect("probe"));
        drop(first);
        assert!(!is_running(dir.path()).expect("probe"));
        assert!(try_lock(&second, true).expect("lock"));
    }

    #[test]
    fn a_beat_stays_small_however_big_the_pass_and_says_when_to_fetch() {
        use super::super::pass::{PassRecord, RelPath, ShardRecord};
        let dir = tempfile::tempdir().expect("dir");
        let mut big = state("x");
        let entries = (0..20_000)
            .map(|i| RelPath(format!("dave/a-long-directory-name/file-{i:05}.ipynb").into_bytes()))
            .collect();
        big.notes.push(Note::Pass(Box::new(PassRecord {
            pass: 4,
            started: "t".into(),
            started_secs: 0,
            started_nanos: 0,
            settings: "s".into(),
            shards: vec![ShardRecord {
                entries,
                bytes: 1,
                files: 20_000,
                ignore_times: false,
                fresh: false,
            }],
            dirs: Vec::new(),
            deletions: Vec::new(),
            hard_links: Vec::new(),
            forced: 0,
            streamed: false,
        })));
        write_state(dir.path(), &big, false).expect("write");
        let whole =
            serde_json::to_string(&report(dir.path(), 0, 0).expect("report")).expect("json");
        assert!(
            whole.len() > 500_000,
            "the pass's plan is big: {}",
            whole.len()
        );

        let beat = StatusBeat::of(true, read_state(dir.path()).expect("read").as_ref());
        let line = serde_json::to_string(&beat).expect("json");
        assert!(line.len() < 1024, "a beat of {} bytes", line.len());
        assert_eq!((beat.notes, beat.said), (4, 2));
        assert!(beat.has_news(3, 2), "a note the caller lacks");
        assert!(beat.has_news(4, 1), "a line the caller lacks");
        assert!(!beat.has_news(4, 2), "nothing new");
        let finished = StatusBeat {
            finished: true,
            ..beat.clone()
        };
        assert!(finished.has_news(4, 2), "a result to collect");
        let gone = StatusBeat {
            alive: false,
            ..beat
        };
        assert!(gone.has_news(4, 2), "an agent that stopped");
        assert!(StatusBeat::of(false, None).has_news(0, 0), "no state");
    }

    #[test]
    fn a_report_leaves_out_what_the_caller_has() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(report(dir.path(), 0, 0).expect("report").state, None);
        write_state(dir.path(), &state("x"), false).expect("write");
        let report = report(dir.path(), 2, 1).expect("report");
        let state = report.state.expect("state");
        assert_eq!(state.notes, vec![Note::PassDone { pass: 3 }]);
        assert_eq!(state.said, vec![Said::Warning("b".into())]);
        assert!(!report.alive);
    }

    #[test]
    fn a_new_agent_never_takes_the_state_an_earlier_one_left() {
        let dir = tempfile::tempdir().expect("dir");
        let mut earlier = state("earlier");
        earlier.result = Some(AgentResult::Done {
            changed: true,
            output: serde_json::Value::Null,
        });
        write_state(dir.path(), &earlier, false).expect("write");
        let request = AgentRequest {
            agent: "new".into(),
            step: "copy".into(),
            settings: Settings::for_test("/a", "/b"),
            notes: Vec::new(),
            continued: None,
            repeat_secs: None,
            catch_up_now: false,
        };
        let own = own_state(dir.path(), &request).expect("state");
        assert_eq!((own.agent.as_str(), own.notes.len()), ("new", 0));
        assert_eq!(own.result, None);
        // The state `start` wrote for it is kept (its start time).
        let mut started = AgentState::fresh(&request);
        started.started = "when start ran".into();
        write_state(dir.path(), &started, false).expect("write");
        assert_eq!(
            own_state(dir.path(), &request).expect("state").started,
            "when start ran"
        );
    }

    /// A stop in the middle of a catch-up pass ends it as `stopped`, with what its finished
    /// shards copied, and no next pass.
    #[test]
    fn a_stop_in_flight_ends_the_pass_with_what_its_shards_copied() {
        let mut state = state("a");
        state.notes = vec![
            Note::Shard {
                pass: 3,
                shard: 0,
                bytes: 10,
                files: 2,
                tries: None,
            },
            Note::Shard {
                pass: 2,
                shard: 0,
                bytes: 99,
                files: 9,
                tries: None,
            },
        ];
        state.catch_up = Some(CatchUp {
            every_secs: 60,
            passes: vec![CatchUpPass {
                pass: 3,
                started: "t".into(),
                ended: None,
                state: "running".into(),
                error: None,
                entries: 0,
                files: 0,
                bytes: 0,
            }],
            next: Some("later".into()),
            stopped: false,
        });
        mark_stopped(&mut state, Some("stopped"));
        let catch_up = state.catch_up.expect("catch-up");
        assert!(catch_up.stopped && catch_up.next.is_none());
        let pass = &catch_up.passes[0];
        assert_eq!(pass.state, "stopped");
        assert!(pass.ended.is_some());
        assert_eq!((pass.files, pass.bytes), (2, 10));
    }

    #[test]
    fn results_round_trip() {
        let failed = AgentResult::Failed {
            message: "rsync exited with code 23".into(),
            invalid: false,
        };
        let json = serde_json::to_value(&failed).expect("json");
        assert_eq!(json["result"], "failed");
        assert_eq!(
            serde_json::from_value::<AgentResult>(json).expect("back"),
            failed
        );
    }
}
