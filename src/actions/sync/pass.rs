//! A pass's records in the run's journal (the step's notes): its start and its plan, each
//! finished shard, the deletions, its end. From them a resumed run knows which shards of the
//! same pass are finished, and the next pass knows when the previous one started.

use std::collections::{BTreeSet, HashSet};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::compare::Settled;
use super::planner::{PlannedDir, Shard, ShardPlan};

/// A path relative to the root of the copy, in JSON: a string when it is UTF-8, otherwise
/// `{"hex": "..."}`, since names may be any bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(pub Vec<u8>);

/// Writes bytes in JSON: a string when they are UTF-8, otherwise `{"hex": "..."}`.
pub fn serialize_bytes<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serializer.serialize_str(text),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut map = std::collections::BTreeMap::new();
            map.insert("hex", hex);
            map.serialize(serializer)
        }
    }
}

/// Reads what [`serialize_bytes`] wrote; `None` when the hex is not whole pairs of digits.
pub fn deserialize_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<u8>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Text(String),
        Hex { hex: String },
    }
    Ok(match Shape::deserialize(deserializer)? {
        Shape::Text(text) => Some(text.into_bytes()),
        Shape::Hex { hex } => (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect(),
    })
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes =
            deserialize_bytes(deserializer)?.ok_or_else(|| de::Error::custom("bad hex path"))?;
        // A journal is a file people can edit: never let a path out of the tree.
        let escapes = bytes.first() == Some(&b'/')
            || bytes.contains(&0)
            || (bytes != b"."
                && bytes
                    .split(|&b| b == b'/')
                    .any(|part| part.is_empty() || part == b"." || part == b".."));
        if escapes && !bytes.is_empty() {
            return Err(de::Error::custom("a path outside the tree"));
        }
        Ok(RelPath(bytes))
    }
}

/// One note of the sync action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sync", rename_all = "snake_case")]
pub enum Note {
    /// A pass started, with its plan (or, when it copies while it walks, with no shards:
    /// they come as [`Note::Planned`], the rest of its plan as [`Note::Walked`]).
    Pass(Box<PassRecord>),
    /// A shard of a pass that copies while it walks, cut from what the walk has seen;
    /// journaled before the shard is copied.
    Planned {
        /// Pass number.
        pass: u32,
        /// Its index in the pass's plan.
        shard: usize,
        /// The shard.
        record: ShardRecord,
    },
    /// The walk of a pass that copies while it walks is over: the rest of its plan.
    Walked(Box<WalkedRecord>),
    /// The pass deleted what was only at the destination.
    Deleted {
        /// Pass number.
        pass: u32,
        /// Entries deleted (each maybe a whole directory).
        entries: u64,
    },
    /// A shard of the pass finished.
    Shard {
        /// Pass number.
        pass: u32,
        /// Its index in the pass's plan.
        shard: usize,
        /// Its bytes.
        bytes: u64,
        /// Its entries.
        files: u64,
        /// How many tries it took, when more than one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tries: Option<u32>,
    },
    /// A shard of the pass was given up on (after its retries); the pass fails, and the
    /// next run tries the shard again.
    ShardFailed {
        /// Pass number.
        pass: u32,
        /// Its index in the pass's plan.
        shard: usize,
        /// How many tries it had.
        tries: u32,
        /// What rsync said the last time.
        error: String,
    },
    /// `jobs: auto` changed the number of rsync workers of the pass (see [`super::tuner`]).
    Workers {
        /// Pass number.
        pass: u32,
        /// The count before.
        from: usize,
        /// The count from then on.
        to: usize,
        /// Why: `throughput rose 18% at 8 workers`.
        why: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The pass's comparison ended: how many source entries it walked, and in how long.
    /// Journaled after [`Note::Pass`]; the window's prediction rests on it.
    Compared {
        /// Pass number.
        pass: u32,
        /// Source entries compared.
        entries: u64,
        /// How long the comparison took, in milliseconds.
        ms: u64,
        /// The counts of threads the walk went through (`[16, 32]`; one when never tuned).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        walk_threads: Vec<usize>,
    },
    /// The pass's copying (deletions, shards, links, directories) ended, journaled just
    /// before [`Note::PassDone`]: when, and what the process that ended it copied in how
    /// long (a resumed pass counts only what its last process copied, so that the time a
    /// killed process lay dead does not lower the rate).
    Ended {
        /// Pass number.
        pass: u32,
        /// When (RFC 3339).
        at: String,
        /// Milliseconds from the end of the comparison (or the resumption) to now.
        copy_ms: u64,
        /// Bytes of the shards copied in that time (not `bytes`: the summary adds up
        /// notes with `bytes` and `files` as work done, which the shards' notes are).
        copied_bytes: u64,
        /// Entries of those shards.
        copied_files: u64,
    },
    /// The pass finished: the destination had everything the source had at its start.
    PassDone {
        /// Pass number.
        pass: u32,
    },
    /// A copy was started detached in a pod (`on:`): its agent, so that a later `runbook`
    /// re-attaches to it rather than start a second copy.
    Agent(Box<AgentRecord>),
    /// The shards of a pass were handed to an Indexed Job (`on: {job: ...}`), so that a
    /// later `runbook` follows it rather than create a second one. Journaled before the Job
    /// is created; its name ends with a random part, so no other Job has it.
    Job(Box<JobRecord>),
    /// The agent's result was collected (the step finished or failed with it): a later run
    /// starts a new agent.
    Collected {
        /// The agent's id.
        agent: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A catch-up pass of a repeating copy (`repeat:`), collected from its agent: when it
    /// started and ended, how it ended, what it compared and copied.
    CatchUp(Box<super::agent::CatchUpPass>),
    /// The catch-up passes of an agent are over: the step that continues the copy stopped
    /// them; no later run starts them again.
    CatchUpStopped {
        /// The agent's id.
        agent: String,
    },
}

/// An Indexed Job that copies the shards of a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The Job's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The pass whose shards it copies.
    pub pass: u32,
    /// Its completion indexes.
    pub parallelism: usize,
    /// The agents' state directory in its pods.
    pub dir: String,
    /// The `runbook` binary in its pods.
    pub binary: String,
    /// When it was created (RFC 3339).
    pub started: String,
}

/// Where a detached copy runs and keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its id, unique to this start.
    pub agent: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The agent's state directory in the pod.
    pub dir: String,
    /// The `runbook` binary in the pod.
    pub binary: String,
    /// When it was started (RFC 3339).
    pub started: String,
    /// `repeat:`: it runs a catch-up pass this often once its first pass has a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_secs: Option<u64>,
}

impl Note {
    /// What makes a note of a pass unique in the journal: a copy collected from an agent
    /// is journaled once, however many times `runbook` re-attached to it.
    pub fn key(&self) -> String {
        match self {
            Note::Pass(record) => format!("pass {}", record.pass),
            Note::Planned { pass, shard, .. } => format!("planned {pass} {shard}"),
            Note::Walked(walked) => format!("walked {}", walked.pass),
            Note::Deleted { pass, .. } => format!("deleted {pass}"),
            Note::Shard { pass, shard, .. } => format!("shard {pass} {shard}"),
            Note::ShardFailed { pass, shard, .. } => format!("shard failed {pass} {shard}"),
            Note::Workers { pass, at, to, .. } => format!("workers {pass} {at} {to}"),
            Note::Compared { pass, .. } => format!("compared {pass}"),
            Note::Ended { pass, .. } => format!("ended {pass}"),
            Note::PassDone { pass } => format!("done {pass}"),
            Note::Agent(record) => format!("agent {}", record.agent),
            Note::Job(record) => format!("job {}", record.name),
            Note::Collected { agent, .. } => format!("collected {agent}"),
            Note::CatchUp(pass) => format!("catch-up {} {}", pass.pass, pass.state),
            Note::CatchUpStopped { agent } => format!("catch-up stopped {agent}"),
        }
    }
}

/// The start of a pass and its plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassRecord {
    /// 1, 2, ... within the step.
    pub pass: u32,
    /// When it started (RFC 3339), for people.
    pub started: String,
    /// When it started: seconds since the epoch.
    pub started_secs: i64,
    /// Nanoseconds.
    pub started_nanos: i64,
    /// A hash of the settings the plan depends on; another one makes a new pass.
    pub settings: String,
    /// Shards, biggest first.
    pub shards: Vec<ShardRecord>,
    /// Directories created before and set after the shards.
    #[serde(default)]
    pub dirs: Vec<DirRecord>,
    /// Entries only at the destination, to delete.
    #[serde(default)]
    pub deletions: Vec<RelPath>,
    /// Files whose hard links are redone after the shards.
    #[serde(default)]
    pub hard_links: Vec<RelPath>,
    /// Files copied only because their change time is newer than the previous pass.
    #[serde(default)]
    pub forced: u64,
    /// It copies while it walks: its shards are journaled one by one, and its plan is
    /// complete once its walk is ([`PassState::walked`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streamed: bool,
}

/// The end of the walk of a pass that copies while it walks: what only the whole walk
/// knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalkedRecord {
    /// Pass number.
    pub pass: u32,
    /// Directories made before and set after the shards.
    #[serde(default)]
    pub dirs: Vec<DirRecord>,
    /// Entries only at the destination, deleted during the walk.
    #[serde(default)]
    pub deletions: Vec<RelPath>,
    /// Files whose hard links are redone after the shards.
    #[serde(default)]
    pub hard_links: Vec<RelPath>,
    /// Files copied only because their change time is newer than the previous pass.
    #[serde(default)]
    pub forced: u64,
}

/// A shard in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Its paths.
    pub entries: Vec<RelPath>,
    /// Its bytes.
    pub bytes: u64,
    /// Its entries.
    pub files: u64,
    /// Copied with `-I`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_times: bool,
    /// Absent at the destination when planned (written in place).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

impl ShardRecord {
    /// The shard it records.
    pub fn shard(&self) -> Shard {
        Shard {
            entries: self.entries.iter().map(|path| path.0.clone()).collect(),
            bytes: self.bytes,
            files: self.files,
            ignore_times: self.ignore_times,
            fresh: self.fresh,
            listed: Vec::new(),
        }
    }

    /// The record of a planned shard.
    pub fn of(shard: &Shard) -> Self {
        ShardRecord {
            entries: shard.entries.iter().cloned().map(RelPath).collect(),
            bytes: shard.bytes,
            files: shard.files,
            ignore_times: shard.ignore_times,
            fresh: shard.fresh,
        }
    }
}

/// A planned directory in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirRecord {
    /// Its path.
    pub path: RelPath,
    /// Absent at the destination when planned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
}

impl DirRecord {
    /// The record of a planned directory.
    pub fn of(dir: &PlannedDir) -> Self {
        DirRecord {
            path: RelPath(dir.path.clone()),
            new: dir.new,
        }
    }
}

impl PassRecord {
    /// Pass `pass`, started at `started` with the settings whose fingerprint is `settings`,
    /// with no plan yet.
    pub fn starting(pass: u32, started: jiff::Timestamp, settings: String) -> Self {
        PassRecord {
            pass,
            started: started.to_string(),
            started_secs: started.as_second(),
            started_nanos: i64::from(started.subsec_nanosecond()),
            settings,
            shards: Vec::new(),
            dirs: Vec::new(),
            deletions: Vec::new(),
            hard_links: Vec::new(),
            forced: 0,
            streamed: false,
        }
    }

    /// Takes the rest of the plan of a pass that copies while it walks, known when its walk
    /// ends.
    pub fn finish_plan(&mut self, walked: WalkedRecord) {
        let WalkedRecord {
            dirs,
            deletions,
            hard_links,
            forced,
            ..
        } = walked;
        self.dirs = dirs;
        self.deletions = deletions;
        self.hard_links = hard_links;
        self.forced = forced;
    }

    /// The plan as the planner made it.
    pub fn plan(&self) -> ShardPlan {
        ShardPlan::of(
            self.shards.iter().map(ShardRecord::shard).collect(),
            self.dirs
                .iter()
                .map(|dir| PlannedDir {
                    path: dir.path.0.clone(),
                    new: dir.new,
                })
                .collect(),
        )
    }

    /// The records of a plan.
    pub fn shard_records(plan: &ShardPlan) -> (Vec<ShardRecord>, Vec<DirRecord>) {
        let shards = plan.shards.iter().map(ShardRecord::of).collect();
        let dirs = plan.dirs.iter().map(DirRecord::of).collect();
        (shards, dirs)
    }
}

/// A pass as the notes tell it.
#[derive(Debug, Clone)]
pub struct PassState {
    /// Its start and plan.
    pub record: PassRecord,
    /// Shards finished.
    pub done_shards: BTreeSet<usize>,
    /// Shards done after more than one try: how many.
    pub retried_shards: std::collections::BTreeMap<usize, u32>,
    /// Shards given up on and not done since: tries and rsync's last message.
    pub failed_shards: std::collections::BTreeMap<usize, (u32, String)>,
    /// Its deletions are done.
    pub deleted: bool,
    /// Its plan is complete: always, except for a pass that copies while it walks and
    /// stopped before its walk ended.
    pub walked: bool,
    /// It finished.
    pub done: bool,
    /// What its comparison walked, in how long, when journaled.
    pub compared: Option<CompareFigures>,
    /// What its copying did, in how long, when journaled.
    pub copied: Option<CopyFigures>,
}

impl PassState {
    /// A pass this process has just compared and planned (its plan whole), with nothing
    /// copied yet.
    pub fn planned(record: PassRecord, compared: CompareFigures) -> Self {
        PassState {
            record,
            done_shards: BTreeSet::new(),
            retried_shards: Default::default(),
            failed_shards: Default::default(),
            deleted: false,
            walked: true,
            done: false,
            compared: Some(compared),
            copied: None,
        }
    }
}

/// What a pass's comparison walked, and in how long ([`Note::Compared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareFigures {
    /// Source entries compared.
    pub entries: u64,
    /// Milliseconds.
    pub ms: u64,
}

/// What a pass's copying did, and in how long ([`Note::Ended`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFigures {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Milliseconds.
    pub ms: u64,
    /// Bytes copied in them.
    pub bytes: u64,
    /// Entries copied in them.
    pub files: u64,
}

/// A finished pass of a copy, as the window's prediction needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedPass {
    /// 1, 2, ... within the step.
    pub pass: u32,
    /// When it started.
    pub started: jiff::Timestamp,
    /// What it found changed (its plan): entries and bytes.
    pub changed_files: u64,
    /// Bytes.
    pub changed_bytes: u64,
    /// Its comparison, when journaled (journals of older versions lack it).
    pub compared: Option<CompareFigures>,
    /// Its copying, when journaled.
    pub copied: Option<CopyFigures>,
}

/// The finished passes of a copy step, oldest first, from its notes.
pub fn finished_passes(notes: &[serde_json::Value]) -> Vec<FinishedPass> {
    Ledger::read(notes)
        .passes
        .into_iter()
        .filter(|pass| pass.done)
        .filter_map(|pass| {
            let record = pass.record;
            let started = jiff::Timestamp::new(
                record.started_secs,
                i32::try_from(record.started_nanos).unwrap_or(0),
            )
            .ok()?;
            Some(FinishedPass {
                pass: record.pass,
                started,
                changed_files: record.shards.iter().map(|shard| shard.files).sum(),
                changed_bytes: record.shards.iter().map(|shard| shard.bytes).sum(),
                compared: pass.compared,
                copied: pass.copied,
            })
        })
        .collect()
}

/// Every pass of the step, from its notes.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    passes: Vec<PassState>,
}

impl Ledger {
    /// Reads the notes, oldest first; notes of another shape are ignored.
    pub fn read(notes: &[serde_json::Value]) -> Self {
        let mut passes: Vec<PassState> = Vec::new();
        for note in notes {
            let Ok(note) = serde_json::from_value::<Note>(note.clone()) else {
                continue;
            };
            match note {
                Note::Pass(record) => passes.push(PassState {
                    walked: !record.streamed,
                    record: *record,
                    done_shards: BTreeSet::new(),
                    retried_shards: Default::default(),
                    failed_shards: Default::default(),
                    deleted: false,
                    done: false,
                    compared: None,
                    copied: None,
                }),
                Note::Planned {
                    pass,
                    shard,
                    record,
                } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass)
                        && shard == state.record.shards.len()
                    {
                        state.record.shards.push(record);
                    }
                }
                Note::Walked(walked) => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == walked.pass) {
                        state.record.finish_plan(*walked);
                        // Deleted during the walk.
                        state.deleted = true;
                        state.walked = true;
                    }
                }
                Note::Shard {
                    pass, shard, tries, ..
                } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass) {
                        state.done_shards.insert(shard);
                        state.failed_shards.remove(&shard);
                        if let Some(tries) = tries {
                            state.retried_shards.insert(shard, tries);
                        }
                    }
                }
                Note::ShardFailed {
                    pass,
                    shard,
                    tries,
                    error,
                } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass)
                        && !state.done_shards.contains(&shard)
                    {
                        state.failed_shards.insert(shard, (tries, error));
                    }
                }
                Note::Deleted { pass, .. } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass) {
                        state.deleted = true;
                    }
                }
                Note::PassDone { pass } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass) {
                        state.done = true;
                    }
                }
                Note::Compared {
                    pass, entries, ms, ..
                } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass) {
                        state.compared = Some(CompareFigures { entries, ms });
                    }
                }
                Note::Ended {
                    pass,
                    at,
                    copy_ms,
                    copied_bytes,
                    copied_files,
                } => {
                    if let Some(state) = passes.iter_mut().rfind(|p| p.record.pass == pass) {
                        state.copied = Some(CopyFigures {
                            at,
                            ms: copy_ms,
                            bytes: copied_bytes,
                            files: copied_files,
                        });
                    }
                }
                Note::Agent(_)
                | Note::Job(_)
                | Note::Collected { .. }
                | Note::Workers { .. }
                | Note::CatchUp(_)
                | Note::CatchUpStopped { .. } => {}
            }
        }
        Ledger { passes }
    }

    /// The last pass, finished or not.
    pub fn last(&self) -> Option<&PassState> {
        self.passes.last()
    }

    /// The number of the next pass.
    pub fn next_pass(&self) -> u32 {
        self.passes.iter().map(|p| p.record.pass).max().unwrap_or(0) + 1
    }

    /// The last pass, when it did not finish, was planned with the same settings and its
    /// plan is complete.
    pub fn resumable(&self, settings: &str) -> Option<&PassState> {
        self.passes
            .last()
            .filter(|pass| !pass.done && pass.walked && pass.record.settings == settings)
    }

    /// What the last passes, when they copied while they walked and stopped before their
    /// walk ended, finished copying: their done shards' paths and the earliest one's start.
    /// Such a pass cannot be resumed (its plan is not whole): the next pass walks again and
    /// judges those paths by that start (see [`Settled`]). Also how many passes stopped so.
    pub fn settled_by_stopped_walks(&self) -> Option<(Settled, usize)> {
        let stopped: Vec<&PassState> = self
            .passes
            .iter()
            .rev()
            .take_while(|pass| !pass.done && !pass.walked)
            .collect();
        let earliest = stopped.last()?;
        let paths = stopped
            .iter()
            .flat_map(|pass| {
                pass.done_shards
                    .iter()
                    .filter_map(|&index| pass.record.shards.get(index))
            })
            .flat_map(|shard| shard.entries.iter().map(|path| path.0.clone()))
            .collect();
        let settled = Settled {
            paths,
            since: (earliest.record.started_secs, earliest.record.started_nanos),
        };
        Some((settled, stopped.len()))
    }

    /// When the last finished pass started: anything that changed after it may be stale
    /// at the destination.
    pub fn previous_start(&self) -> Option<(i64, i64)> {
        self.passes
            .iter()
            .rev()
            .find(|pass| pass.done)
            .map(|pass| (pass.record.started_secs, pass.record.started_nanos))
    }
}

/// The agents this step's notes know of, and those whose result was collected.
pub(super) fn journaled_agents(notes: &[serde_json::Value]) -> (HashSet<String>, HashSet<String>) {
    let mut started = HashSet::new();
    let mut collected = HashSet::new();
    for note in notes {
        match serde_json::from_value::<Note>(note.clone()) {
            Ok(Note::Agent(record)) => {
                started.insert(record.agent);
            }
            Ok(Note::Collected { agent, .. }) => {
                collected.insert(agent);
            }
            _ => {}
        }
    }
    (started, collected)
}

/// The keys of the notes already journaled for the step.
pub(super) fn journaled_keys(notes: &[serde_json::Value]) -> HashSet<String> {
    notes
        .iter()
        .filter_map(|note| serde_json::from_value::<Note>(note.clone()).ok())
        .map(|note| note.key())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pass: u32) -> PassRecord {
        PassRecord {
            pass,
            started: "2026-01-01T00:00:00Z".into(),
            started_secs: 100 * i64::from(pass),
            started_nanos: 0,
            settings: "s".into(),
            shards: vec![ShardRecord {
                entries: vec![RelPath(b"a\nb".to_vec()), RelPath(b"x/\xff".to_vec())],
                bytes: 3,
                files: 2,
                ignore_times: false,
                fresh: true,
            }],
            dirs: vec![],
            deletions: vec![],
            hard_links: vec![],
            forced: 0,
            streamed: false,
        }
    }

    fn note(note: Note) -> serde_json::Value {
        serde_json::to_value(note).expect("note")
    }

    /// A pass that copies while it walks: journaled with no shards, then each shard.
    fn streamed(pass: u32) -> Vec<serde_json::Value> {
        let mut first = record(pass);
        let shard = first.shards.remove(0);
        first.streamed = true;
        let done = |index: usize| {
            note(Note::Shard {
                tries: None,
                pass,
                shard: index,
                bytes: 3,
                files: 2,
            })
        };
        let planned = |index: usize| {
            let mut record = shard.clone();
            record.entries = vec![RelPath(format!("home{pass}{index}").into_bytes())];
            note(Note::Planned {
                pass,
                shard: index,
                record,
            })
        };
        vec![
            note(Note::Pass(Box::new(first))),
            planned(0),
            planned(1),
            done(1),
        ]
    }

    #[test]
    fn a_pass_stopped_during_its_walk_is_not_resumed_and_settles_its_finished_shards() {
        let mut notes = vec![
            note(Note::Pass(Box::new(record(1)))),
            note(Note::PassDone { pass: 1 }),
        ];
        notes.extend(streamed(2));
        notes.extend(streamed(3));
        let ledger = Ledger::read(&notes);
        assert!(ledger.resumable("s").is_none(), "its plan is not whole");
        let (settled, passes) = ledger.settled_by_stopped_walks().expect("settled");
        assert_eq!(passes, 2);
        // The finished shard of each stopped pass, judged from the first one's start.
        let mut paths: Vec<&[u8]> = settled.paths.iter().map(Vec::as_slice).collect();
        paths.sort_unstable();
        assert_eq!(paths, vec![&b"home21"[..], &b"home31"[..]]);
        assert_eq!(settled.since, (200, 0));
        assert_eq!(ledger.previous_start(), Some((100, 0)));

        // Once its walk is journaled, the pass is whole and resumes.
        notes.push(note(Note::Walked(Box::new(WalkedRecord {
            pass: 3,
            dirs: vec![],
            deletions: vec![RelPath(b"gone".to_vec())],
            hard_links: vec![],
            forced: 1,
        }))));
        let ledger = Ledger::read(&notes);
        assert!(ledger.settled_by_stopped_walks().is_none());
        let resumed = ledger.resumable("s").expect("resumable");
        assert_eq!(resumed.record.shards.len(), 2);
        assert_eq!(resumed.done_shards, BTreeSet::from([1]));
        assert!(resumed.deleted, "its deletions happened during the walk");
        assert_eq!(resumed.record.forced, 1);
    }

    #[test]
    fn paths_that_are_not_utf8_round_trip() {
        let json = note(Note::Pass(Box::new(record(1))));
        assert_eq!(json["shards"][0]["entries"][1]["hex"], "782fff");
        let back: Note = serde_json::from_value(json).expect("back");
        assert_eq!(back, Note::Pass(Box::new(record(1))));
    }

    #[test]
    fn paths_out_of_the_tree_are_refused() {
        for bad in ["/etc", "a/../../b", "../x"] {
            assert!(
                serde_json::from_value::<RelPath>(serde_json::json!(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_value::<RelPath>(serde_json::json!(".")).is_ok());
    }

    #[test]
    fn an_unfinished_pass_resumes_and_a_finished_one_gives_its_start() {
        let notes = vec![
            note(Note::Pass(Box::new(record(1)))),
            note(Note::PassDone { pass: 1 }),
            note(Note::Pass(Box::new(record(2)))),
            note(Note::Shard {
                tries: None,
                pass: 2,
                shard: 0,
                bytes: 3,
                files: 2,
            }),
            serde_json::json!({"something": "else"}),
        ];
        let ledger = Ledger::read(&notes);
        assert_eq!(ledger.next_pass(), 3);
        assert_eq!(ledger.previous_start(), Some((100, 0)));
        let resumable = ledger.resumable("s").expect("pass 2 resumes");
        assert_eq!(resumable.record.pass, 2);
        assert!(resumable.done_shards.contains(&0));
        assert!(ledger.resumable("other settings").is_none());
    }
}
