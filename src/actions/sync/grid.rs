//! A copy's shards as `status` shows them: the last pass of each `sync` step, every shard
//! with its state (pending, running, done, failed), size, tries and last error, from the
//! journal's notes (local, pod and Job copies journal the same notes) and, for the shards
//! running now, from what the running copy last said.

use std::collections::HashMap;

use serde::Serialize;

use super::pass::Ledger;
use super::walker;

/// One shard's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    /// Not copied yet.
    Pending,
    /// Being copied now.
    Running,
    /// Copied.
    Done,
    /// Given up on after its retries (the next run tries it again).
    Failed,
}

/// One shard of a [`CopyGrid`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardCell {
    /// Its index in the pass's plan (from 0).
    pub shard: usize,
    /// Its state.
    pub state: ShardState,
    /// Its first path, and how many more it has.
    pub first: String,
    /// More paths than the first.
    pub more: usize,
    /// Its entries (files, links, directories).
    pub entries: u64,
    /// Its bytes.
    pub bytes: u64,
    /// Tries, when known: how many it took (done) or had (failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
    /// What rsync said the last time, for a failed shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shards of the last pass of one `sync` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyGrid {
    /// The step.
    pub step: String,
    /// The pass's number.
    pub pass: u32,
    /// Whether the pass finished.
    pub finished: bool,
    /// Every shard, in the plan's order (biggest first).
    pub shards: Vec<ShardCell>,
}

impl CopyGrid {
    /// How many shards are in `state`.
    pub fn count(&self, state: ShardState) -> usize {
        self.shards
            .iter()
            .filter(|cell| cell.state == state)
            .count()
    }
}

/// The grids of the steps whose notes hold a copy's passes, in step order of `order`;
/// `running` names the steps whose copy runs now (in the runbook process, or detached in a
/// pod whose agent said so) and their running shards.
pub fn copy_grids(
    notes: &HashMap<String, Vec<serde_json::Value>>,
    order: &[&str],
    running: &[(&str, &[usize])],
) -> Vec<CopyGrid> {
    let mut grids = Vec::new();
    for step in order {
        let Some(step_notes) = notes.get(*step) else {
            continue;
        };
        let ledger = Ledger::read(step_notes);
        let Some(pass) = ledger.last() else {
            continue;
        };
        let running_now: &[usize] = running
            .iter()
            .find(|(running_step, _)| running_step == step)
            .map_or(&[], |(_, shards)| shards);
        let shards = pass
            .record
            .shards
            .iter()
            .enumerate()
            .map(|(index, shard)| {
                let failed = pass.failed_shards.get(&index);
                let state = if pass.done_shards.contains(&index) {
                    ShardState::Done
                } else if running_now.contains(&index) {
                    ShardState::Running
                } else if failed.is_some() {
                    ShardState::Failed
                } else {
                    ShardState::Pending
                };
                ShardCell {
                    shard: index,
                    state,
                    first: shard
                        .entries
                        .first()
                        .map_or_else(|| ".".to_string(), |path| walker::display(&path.0)),
                    more: shard.entries.len().saturating_sub(1),
                    entries: shard.files,
                    bytes: shard.bytes,
                    tries: match state {
                        ShardState::Done => {
                            Some(pass.retried_shards.get(&index).copied().unwrap_or(1))
                        }
                        ShardState::Failed => failed.map(|(tries, _)| *tries),
                        _ => None,
                    },
                    error: failed
                        .filter(|_| state == ShardState::Failed)
                        .map(|(_, error)| error.clone()),
                }
            })
            .collect();
        grids.push(CopyGrid {
            step: step.to_string(),
            pass: pass.record.pass,
            finished: pass.done,
            shards,
        });
    }
    grids
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notes() -> HashMap<String, Vec<serde_json::Value>> {
        let shard = |path: &str, bytes: u64| json!({"entries": [path], "bytes": bytes, "files": 2});
        HashMap::from([(
            "copy".to_string(),
            vec![
                json!({"sync": "pass", "pass": 1, "started": "t", "started_secs": 0, "started_nanos": 0,
                       "settings": "s", "shards": [shard("a", 30), shard("b", 20), shard("c", 10), shard("d", 5)]}),
                json!({"sync": "shard", "pass": 1, "shard": 0, "bytes": 30, "files": 2}),
                json!({"sync": "shard_failed", "pass": 1, "shard": 2, "tries": 3, "error": "rsync exited with code 23"}),
                json!({"sync": "shard", "pass": 1, "shard": 3, "bytes": 5, "files": 2, "tries": 2}),
            ],
        )])
    }

    #[test]
    fn every_shard_has_its_state_size_tries_and_error() {
        let grids = copy_grids(&notes(), &["copy"], &[("copy", &[1])]);
        let [grid] = &grids[..] else {
            panic!("{grids:?}")
        };
        let states: Vec<ShardState> = grid.shards.iter().map(|cell| cell.state).collect();
        assert_eq!(
            states,
            [
                ShardState::Done,
                ShardState::Running,
                ShardState::Failed,
                ShardState::Done
            ]
        );
        assert_eq!(grid.shards[2].tries, Some(3));
        assert_eq!(
            grid.shards[2].error.as_deref(),
            Some("rsync exited with code 23")
        );
        assert_eq!(grid.shards[3].tries, Some(2));
        assert_eq!(
            (grid.shards[1].first.as_str(), grid.shards[1].bytes),
            ("b", 20)
        );
        // Without a running copy, the shard not done is pending.
        let idle = copy_grids(&notes(), &["copy"], &[]);
        assert_eq!(idle[0].shards[1].state, ShardState::Pending);
    }
}
