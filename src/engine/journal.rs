//! The journal: `runs/<run>/journal.jsonl`, append-only, one event per line, fsynced after
//! each write. Replaying it tells which steps are done, with their outputs and approvals.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indexmap::IndexMap;

use super::cluster_journal::ClusterJournal;
use super::event::{Event, EventKind, RunStatus, StepDefinition, StepStatus};

/// File name of the journal inside a run directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// An open journal to append to: the local file, and with `--state cluster` the journal
/// in the cluster it is a cache of.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    cluster: Option<ClusterMirror>,
}

/// The cluster's copy of a journal, written before the local one.
#[derive(Debug)]
struct ClusterMirror {
    journal: ClusterJournal,
    /// The runtime the cluster's client runs on: appends come from the step loop's thread
    /// and from action threads too, and wait for the API server's answer.
    runtime: tokio::runtime::Handle,
}

impl Journal {
    /// Opens (creating) the journal of a run directory for appending.
    pub fn open(run_dir: &Path) -> anyhow::Result<Self> {
        let path = run_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        Ok(Journal {
            file,
            path,
            cluster: None,
        })
    }

    /// Opens the journal of a run kept in the cluster: the local file becomes what the
    /// cluster holds (the cluster's journal is the truth, the file its cache), and every
    /// event is written to the cluster first. Needs the multi-threaded runtime `main`
    /// builds.
    pub fn mirrored(run_dir: &Path, cluster: ClusterJournal) -> anyhow::Result<Self> {
        let path = run_dir.join(JOURNAL_FILE);
        let cached = run_dir.join(format!("{JOURNAL_FILE}.from-cluster"));
        std::fs::write(&cached, cluster.text())
            .and_then(|()| std::fs::rename(&cached, &path))
            .with_context(|| format!("cannot write the journal cache {}", path.display()))?;
        let mut journal = Journal::open(run_dir)?;
        journal.cluster = Some(ClusterMirror {
            journal: cluster,
            runtime: tokio::runtime::Handle::current(),
        });
        Ok(journal)
    }

    /// The run directory the journal is in.
    pub fn run_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Appends one event as a line (one write, so a line is never interleaved) and, when
    /// `durable`, waits until it and every line before it are on disk, so that a crash right
    /// after a step never forgets that the step was done.
    ///
    /// With the journal in the cluster, the event is in the cluster (the API server
    /// answered) before it is written here: a step never starts before the cluster knows.
    pub fn append(&mut self, event: &serde_json::Value, durable: bool) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        if let Some(mirror) = &mut self.cluster {
            mirror.append(&line)?;
        }
        self.file
            .write_all(&line)
            .and_then(|()| {
                if durable {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .with_context(|| format!("cannot write the journal {}", self.path.display()))
    }
}

impl ClusterMirror {
    /// Appends a line to the cluster's journal, waiting for the answer.
    fn append(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let line = std::str::from_utf8(line).context("a journal line is not UTF-8")?;
        let write = self.journal.append(line);
        let written = match tokio::runtime::Handle::try_current() {
            // On a worker of the runtime or in a thread that entered it: hand the worker's
            // other tasks over while this one waits.
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(write)),
            Err(_) => self.runtime.block_on(write),
        };
        written.with_context(|| {
            format!(
                "cannot write the run's journal to the cluster ({}), so the run stops here (a copy detached in a pod or Job goes on); run the same command again once the API server answers: it goes on from what the cluster's journal says",
                self.journal.object()
            )
        })
    }
}

/// What a step's journal says about it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepState {
    /// Not started in this run.
    Pending,
    /// Started, with no end recorded (running now, or the process died).
    Started,
    /// Finished or skipped as done.
    Done {
        /// ok or changed; `None` when a check said it was already done.
        status: Option<StepStatus>,
        /// Why it was skipped, when it was.
        reason: Option<String>,
        /// Definition hash when it was done.
        hash: Option<String>,
        /// Registered output.
        output: Option<serde_json::Value>,
        /// Wall time.
        duration_ms: u64,
    },
    /// Skipped because `when` was false.
    NotApplicable(String),
    /// Failed, refused or interrupted, with the reason.
    Stopped {
        /// failed, refused or interrupted.
        status: StepStatus,
        /// Why.
        error: Option<String>,
    },
    /// Waiting at its approval gate.
    Paused(String),
}

/// A run as its journal tells it.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The last `run_started`: playbook, params, steps.
    pub started: Option<Event>,
    /// State of each step that appears in the journal.
    pub steps: HashMap<String, StepState>,
    /// Notes each step's action recorded, in order.
    pub notes: HashMap<String, Vec<serde_json::Value>>,
    /// Steps whose gate or `confirm` was approved.
    pub approvals: HashSet<String>,
    /// How the last `run` command ended, if it did.
    pub finished: Option<(RunStatus, u8)>,
    /// Time of the last event.
    pub last_ts: Option<String>,
    /// Lines that could not be read (a torn last line after a crash).
    pub unreadable_lines: usize,
    /// The items of loop steps (`STEP[KEY]`) in the order they first appear.
    pub item_order: Vec<String>,
}

/// The events of a run's journal, oldest first, and how many lines could not be read (a
/// `kill -9` can tear the last line; everything before it is intact). A missing journal has
/// no events.
pub fn read_events(run_dir: &Path) -> anyhow::Result<(Vec<Event>, usize)> {
    let path = run_dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), 0));
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let mut events = Vec::new();
    let mut unreadable = 0;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(event) => events.push(event),
            Err(_) => unreadable += 1,
        }
    }
    Ok((events, unreadable))
}

impl History {
    /// Reads a journal; a missing file is an empty history.
    pub fn load(run_dir: &Path) -> anyhow::Result<Self> {
        let (events, unreadable_lines) = read_events(run_dir)?;
        let mut history = History {
            unreadable_lines,
            ..History::default()
        };
        for event in events {
            history.apply(event);
        }
        Ok(history)
    }

    fn apply(&mut self, event: Event) {
        self.last_ts = Some(event.ts.clone());
        if let EventKind::StepStarted { step, .. }
        | EventKind::StepSkipped { step, .. }
        | EventKind::StepFinished { step, .. } = &event.kind
            && step.ends_with(']')
            && !self.steps.contains_key(step)
        {
            self.item_order.push(step.clone());
        }
        match &event.kind {
            EventKind::RunStarted { .. } => {
                self.finished = None;
                self.started = Some(event);
            }
            EventKind::StepStarted { step, .. } => {
                self.steps.insert(step.clone(), StepState::Started);
            }
            EventKind::StepSkipped {
                step,
                reason,
                done,
                hash,
            } => {
                let state = if *done {
                    StepState::Done {
                        status: None,
                        reason: Some(reason.clone()),
                        hash: hash.clone(),
                        output: None,
                        duration_ms: 0,
                    }
                } else {
                    StepState::NotApplicable(reason.clone())
                };
                // Showing that a done step was skipped on resume must not forget its output.
                if !matches!(self.steps.get(step), Some(StepState::Done { .. })) || !*done {
                    self.steps.insert(step.clone(), state);
                }
            }
            EventKind::Approved { step, .. } => {
                self.approvals.insert(step.clone());
            }
            EventKind::StepFinished {
                step,
                status,
                duration_ms,
                hash,
                output,
                error,
                ..
            } => {
                let state = if status.is_done() {
                    StepState::Done {
                        status: Some(*status),
                        reason: None,
                        hash: hash.clone(),
                        output: output.clone(),
                        duration_ms: *duration_ms,
                    }
                } else {
                    StepState::Stopped {
                        status: *status,
                        error: error.clone(),
                    }
                };
                self.steps.insert(step.clone(), state);
            }
            EventKind::Paused { step, message } => {
                self.steps
                    .insert(step.clone(), StepState::Paused(message.clone()));
            }
            EventKind::RunFinished { status, exit_code } => {
                self.finished = Some((*status, *exit_code));
            }
            EventKind::StepNote { step, data } => {
                self.notes
                    .entry(step.clone())
                    .or_default()
                    .push(data.clone());
            }
            EventKind::BlockFailed { steps, .. } => {
                // The rescue may undo what the block did: the next run starts it again. The
                // failed step keeps its record, which says where the run stopped.
                for step in steps {
                    if matches!(self.steps.get(step), Some(StepState::Done { .. })) {
                        self.steps.remove(step);
                    }
                    self.approvals.remove(step);
                }
            }
            EventKind::Progress { .. }
            | EventKind::BlockFinished { .. }
            | EventKind::Warning { .. }
            | EventKind::WindowPredicted { .. }
            | EventKind::PlanChanged { .. } => {}
        }
    }

    /// The done record of a step, if it is done.
    pub fn done(&self, step: &str) -> Option<(&Option<String>, &Option<serde_json::Value>)> {
        match self.steps.get(step) {
            Some(StepState::Done { hash, output, .. }) => Some((hash, output)),
            _ => None,
        }
    }

    /// The items of loop step `step` (`STEP[KEY]`) that are done, with their definition
    /// hashes and outputs.
    pub fn done_items(&self, step: &str) -> Vec<(&Option<String>, &Option<serde_json::Value>)> {
        self.steps
            .iter()
            .filter(|(id, _)| is_item_of(id, step))
            .filter_map(|(_, state)| match state {
                StepState::Done { hash, output, .. } => Some((hash, output)),
                _ => None,
            })
            .collect()
    }

    /// The steps of the last `run_started`, in order.
    pub fn step_definitions(&self) -> &[StepDefinition] {
        match &self.started {
            Some(Event {
                kind: EventKind::RunStarted { steps, .. },
                ..
            }) => steps,
            _ => &[],
        }
    }

    /// Playbook path, name and params of the last `run_started`.
    pub fn identity(&self) -> Option<(&str, &str, &serde_json::Value)> {
        match &self.started {
            Some(Event {
                kind:
                    EventKind::RunStarted {
                        playbook,
                        name,
                        params,
                        ..
                    },
                ..
            }) => Some((playbook, name, params)),
            _ => None,
        }
    }

    /// Step states in playbook order; the items of a loop step that has run in its place
    /// (`STEP[KEY]`, in the order they were first journaled).
    pub fn ordered_steps(&self) -> IndexMap<String, StepState> {
        let mut ordered = IndexMap::new();
        for definition in self.step_definitions() {
            let items: Vec<&String> = self
                .item_order
                .iter()
                .filter(|id| is_item_of(id, &definition.id))
                .collect();
            if items.is_empty() || self.steps.contains_key(&definition.id) {
                let state = self.steps.get(&definition.id).cloned();
                ordered.insert(definition.id.clone(), state.unwrap_or(StepState::Pending));
            }
            for id in items {
                let state = self.steps.get(id).cloned().unwrap_or(StepState::Pending);
                ordered.insert(id.clone(), state);
            }
        }
        ordered
    }
}

/// Whether `id` is an item of loop step `step`: `STEP[KEY]`.
pub fn is_item_of(id: &str, step: &str) -> bool {
    id.strip_prefix(step)
        .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(kinds: Vec<EventKind>) -> History {
        let mut history = History::default();
        for kind in kinds {
            history.apply(Event {
                ts: "2026-12-03T00:00:00Z".into(),
                run: "r".into(),
                kind,
            });
        }
        history
    }

    fn finished(step: &str, status: StepStatus) -> EventKind {
        EventKind::StepFinished {
            step: step.into(),
            status,
            duration_ms: 1,
            hash: None,
            output: None,
            error: (!status.is_done()).then(|| "it broke".into()),
            tail: Vec::new(),
        }
    }

    /// The items of a loop step take its place, in the order they ran; the step itself is
    /// listed only when something was journaled under its own id (a list that did not
    /// render); a step whose id merely starts like the loop step's is not an item.
    #[test]
    fn the_items_of_a_loop_step_are_listed_in_its_place() {
        let definitions = ["list", "greet", "greet-all", "count"]
            .iter()
            .map(|id| StepDefinition {
                id: id.to_string(),
                hash: "h".into(),
            })
            .collect();
        let history = history(vec![
            EventKind::RunStarted {
                playbook: "p.yaml".into(),
                name: "p".into(),
                playbook_hash: "h".into(),
                steps: definitions,
                params: serde_json::json!({}),
                pid: 1,
                host: "h".into(),
            },
            finished("list", StepStatus::Ok),
            finished("greet[bob]", StepStatus::Ok),
            finished("greet[alice]", StepStatus::Failed),
            finished("greet-all", StepStatus::Ok),
        ]);
        let ordered = history.ordered_steps();
        let ordered: Vec<&str> = ordered.keys().map(String::as_str).collect();
        assert_eq!(
            ordered,
            ["list", "greet[bob]", "greet[alice]", "greet-all", "count"]
        );
        assert_eq!(history.done_items("greet").len(), 1);
        assert!(is_item_of("greet[a-b]", "greet"));
        assert!(!is_item_of("greet-all", "greet"));
        assert!(!is_item_of("greet[a]x", "greet"));
    }

    /// A rescued block's done steps and approvals are forgotten, so the next run starts it
    /// over; its failed step keeps its record, which says where the run stopped; what the
    /// rescue did after the failure is kept.
    #[test]
    fn a_failed_block_forgets_its_done_steps_and_approvals_but_not_where_it_failed() {
        let history = history(vec![
            finished("before", StepStatus::Ok),
            EventKind::Approved {
                step: "gate".into(),
                via: "--yes".into(),
            },
            finished("gate", StepStatus::Ok),
            finished("copy", StepStatus::Failed),
            EventKind::BlockFailed {
                block: "switch".into(),
                step: "copy".into(),
                error: "it broke".into(),
                steps: vec!["gate".into(), "copy".into(), "roll-back".into()],
            },
            finished("roll-back", StepStatus::Changed),
        ]);
        assert!(history.done("before").is_some());
        assert!(history.done("gate").is_none());
        assert!(!history.approvals.contains("gate"));
        assert!(matches!(
            history.steps.get("copy"),
            Some(StepState::Stopped {
                status: StepStatus::Failed,
                ..
            })
        ));
        assert!(history.done("roll-back").is_some());
    }
}
