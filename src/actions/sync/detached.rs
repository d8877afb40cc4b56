//! The detached copies of a run (agents in pods, Indexed Jobs) whose results were not
//! collected, and what the cluster says of each: `runbook status`'s view of them.

use std::time::Duration;

use super::agent::StatusReport;
use super::pass::{AgentRecord, Note, journaled_agents};
use super::pod::Pod;
use crate::kube::Cluster;

/// A copy of a run that goes on without runbook, whose result was not collected yet: an
/// agent in a pod (`on: {pod}`) or an Indexed Job (`on: {job}`). For `runbook status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetachedCopy {
    /// The step.
    pub step: String,
    /// `pod` or `job`.
    pub kind: &'static str,
    /// The namespace of the pod or Job.
    pub namespace: String,
    /// The pod or Job.
    pub name: String,
    /// The agent's id (a Job's is its name).
    pub agent: String,
    /// When runbook started it (RFC 3339).
    pub started: String,
    /// How far the journal is: the last pass, and its shards journaled.
    pub journaled: Option<JournaledPass>,
    /// What the cluster says now; `None` when it was not asked.
    pub live: Option<LiveCopy>,
    /// Where it runs, as journaled: what [`DetachedCopy::ask`] asks.
    #[serde(skip)]
    runs_as: RunsAs,
}

/// The journal's record of where a detached copy runs.
#[derive(Debug, Clone, PartialEq)]
enum RunsAs {
    Pod(Box<AgentRecord>),
    Job(Box<super::pass::JobRecord>),
}

/// The last pass of a step as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JournaledPass {
    /// The pass.
    pub pass: u32,
    /// Its shards journaled as finished.
    pub shards_done: usize,
    /// Its shards.
    pub shards: usize,
}

/// A detached copy as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveCopy {
    /// One of the state words of the README's "States": `running` (a pass in flight),
    /// `waiting` (a repeating copy between its catch-up passes), `done` (a result runbook has
    /// not collected yet), `failed`, `stopped` (no result and no process; a Job deleted; a
    /// repeating copy's passes stopped); or `unreachable` when the cluster does not answer.
    pub state: &'static str,
    /// For people: the progress line, the Job's counts, ...
    pub detail: String,
    /// The shards its workers copy now (their index in the pass's plan), when its agent says
    /// so (a pod's copy; a Job's pods each copy their own part and are not asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub running_shards: Vec<usize>,
}

impl LiveCopy {
    /// What the cluster says, with no shards known to be running.
    fn said(state: &'static str, detail: impl Into<String>) -> Self {
        LiveCopy {
            state,
            detail: detail.into(),
            running_shards: Vec::new(),
        }
    }
}

impl DetachedCopy {
    /// Asks the cluster how the copy is now (within 10 s): its agent's status, or its Job.
    pub async fn ask(&mut self, cluster: &Cluster) {
        self.live = Some(match &self.runs_as {
            RunsAs::Pod(record) => pod_copy_now(cluster, record).await,
            RunsAs::Job(record) => job_copy_now(cluster, record).await,
        });
    }

    /// The lines `runbook status` prints.
    pub fn lines(&self) -> Vec<String> {
        let journaled = self
            .journaled
            .map(|pass| {
                format!(
                    "; pass {}: {} of {} shards journaled",
                    pass.pass, pass.shards_done, pass.shards
                )
            })
            .unwrap_or_default();
        let what = match self.kind {
            "job" => format!("copy running as Job {}", self.name),
            _ => format!("copy detached in pod {}", self.name),
        };
        let mut lines = vec![format!(
            "  {}: {what} in namespace {} (agent {}, started {}){journaled}",
            self.step, self.namespace, self.agent, self.started
        )];
        if let Some(live) = &self.live {
            lines.push(format!("    {}", live.detail));
        }
        lines
    }
}

/// The detached copies of a run whose results were not collected, from its journal (steps
/// in order of their ids); [`DetachedCopy::ask`] adds what the cluster says of each.
pub fn detached_copies(
    notes: &std::collections::HashMap<String, Vec<serde_json::Value>>,
) -> Vec<DetachedCopy> {
    let mut copies = Vec::new();
    let mut steps: Vec<_> = notes.iter().collect();
    steps.sort_by(|a, b| a.0.cmp(b.0));
    for (step, notes) in steps {
        let (_, collected) = journaled_agents(notes);
        let stopped: std::collections::HashSet<String> = notes
            .iter()
            .filter_map(|note| match serde_json::from_value::<Note>(note.clone()) {
                Ok(Note::CatchUpStopped { agent }) => Some(agent),
                _ => None,
            })
            .collect();
        let ledger = super::pass::Ledger::read(notes);
        let journaled = ledger.last().map(|pass| JournaledPass {
            pass: pass.record.pass,
            shards_done: pass.done_shards.len(),
            shards: pass.record.shards.len(),
        });
        // The step's last agent or Job, if its result was not collected.
        let last = notes
            .iter()
            .filter_map(|note| match serde_json::from_value::<Note>(note.clone()) {
                Ok(note @ (Note::Agent(_) | Note::Job(_))) => Some(note),
                _ => None,
            })
            .next_back();
        let copy = match last {
            // Not collected yet, or collected and keeping the destination warm.
            Some(Note::Agent(record))
                if !collected.contains(&record.agent)
                    || record.repeat_secs.is_some() && !stopped.contains(&record.agent) =>
            {
                DetachedCopy {
                    step: step.clone(),
                    kind: "pod",
                    namespace: record.namespace.clone(),
                    name: record.pod.clone(),
                    agent: record.agent.clone(),
                    started: record.started.clone(),
                    journaled,
                    live: None,
                    runs_as: RunsAs::Pod(record),
                }
            }
            Some(Note::Job(record)) if !collected.contains(&record.name) => DetachedCopy {
                step: step.clone(),
                kind: "job",
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                agent: record.name.clone(),
                started: record.started.clone(),
                journaled,
                live: None,
                runs_as: RunsAs::Job(record),
            },
            _ => continue,
        };
        copies.push(copy);
    }
    copies
}

/// What the agent of a pod copy says now.
async fn pod_copy_now(cluster: &Cluster, record: &AgentRecord) -> LiveCopy {
    let pod = Pod {
        cluster,
        namespace: record.namespace.clone(),
        name: record.pod.clone(),
        container: record.container.clone(),
    };
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        pod.exec(
            &[
                record.binary.as_str(),
                "sync-agent",
                "status",
                "--dir",
                &record.dir,
            ],
            None,
        ),
    )
    .await;
    let report = match asked {
        Ok(Ok(output)) if output.exit_code == 0 => {
            serde_json::from_str::<StatusReport>(output.stdout_text().trim()).ok()
        }
        _ => None,
    };
    let state = report.as_ref().and_then(|report| {
        report
            .state
            .as_ref()
            .filter(|state| state.agent == record.agent)
            .map(|state| (report.alive, state))
    });
    let (word, detail) = match state {
        None => ("unreachable", "(its pod does not answer now)".to_string()),
        Some((alive, state)) if state.catch_up.is_some() => catching_up(alive, state),
        Some((_, state)) if state.result.is_some() => (
            "done",
            "done in the pod; `runbook run` again collects it".to_string(),
        ),
        Some((false, _)) => ("stopped", "stopped in the pod without a result".to_string()),
        Some((true, state)) => (
            "running",
            format!(
                "running: {}",
                state
                    .board
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "comparing the trees".to_string())
            ),
        ),
    };
    let running_shards = match state {
        Some((true, state)) if state.result.is_none() => state.running_shards.clone(),
        _ => Vec::new(),
    };
    LiveCopy {
        state: word,
        detail,
        running_shards,
    }
}

/// The state word and the detail of a repeating agent whose first pass is done.
fn catching_up(alive: bool, state: &super::agent::AgentState) -> (&'static str, String) {
    let Some(catch_up) = &state.catch_up else {
        return ("done", String::new());
    };
    let every = crate::syntax::HumanDuration(Duration::from_secs(catch_up.every_secs));
    let last = catch_up
        .passes
        .iter()
        .rev()
        .find(|pass| pass.ended.is_some())
        .map(|pass| format!("; last: {}", super::catch_up::describe(&state.step, pass)))
        .unwrap_or_default();
    let count = catch_up.passes.len();
    if !alive {
        let why = if catch_up.stopped {
            "stopped"
        } else {
            "the agent is gone; `runbook run` again starts them again"
        };
        return (
            "stopped",
            format!("catch-up passes every {every}: {count} ran, {why}{last}"),
        );
    }
    match (&catch_up.next, catch_up.passes.last()) {
        (Some(next), _) => (
            "waiting",
            format!("catch-up passes every {every}: {count} so far, the next at {next}{last}"),
        ),
        (None, Some(pass)) => (
            "running",
            format!(
                "catch-up pass {} running: {}{last}",
                pass.pass,
                state
                    .board
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "comparing the trees".to_string())
            ),
        ),
        (None, None) => ("running", format!("catch-up passes every {every}")),
    }
}

/// What a Job copy's Job says now.
async fn job_copy_now(cluster: &Cluster, record: &super::pass::JobRecord) -> LiveCopy {
    let Some(jobs) = crate::kube::find_kind("Job") else {
        return LiveCopy::said("unreachable", "(the Job kind is not known)");
    };
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.get(jobs, &record.name, Some(&record.namespace)),
    )
    .await;
    let job = match asked {
        Ok(Ok(Some(job))) => job,
        Ok(Ok(None)) => {
            return LiveCopy::said(
                "stopped",
                "the Job is gone; `runbook run` again copies the shards not journaled",
            );
        }
        _ => {
            return LiveCopy::said("unreachable", "(the cluster does not answer now)");
        }
    };
    let status = &job["status"];
    let count = |key: &str| status[key].as_u64().unwrap_or(0);
    let completed =
        super::job::parse_indexes(status["completedIndexes"].as_str().unwrap_or_default()).len();
    let counts = format!(
        "{completed} of {} indexes complete, {} pods running, {} failed",
        record.parallelism,
        count("active"),
        count("failed")
    );
    let condition = |kind: &str| crate::kube::has_condition(&job["status"], kind);
    let (state, detail) = if condition("Complete") {
        (
            "done",
            format!("done ({counts}); `runbook run` again collects it"),
        )
    } else if condition("Failed") {
        ("failed", format!("failed ({counts})"))
    } else {
        ("running", format!("running: {counts}"))
    };
    let running_shards = match state {
        "running" => job_running_shards(cluster, record).await,
        _ => Vec::new(),
    };
    LiveCopy {
        state,
        detail,
        running_shards,
    }
}

/// The shards the workers of a Job's running pods copy now, as their agents say (each pod
/// asked through exec, all within 10 s; a pod that does not answer adds none).
async fn job_running_shards(cluster: &Cluster, record: &super::pass::JobRecord) -> Vec<usize> {
    let Some(pods) = crate::kube::find_kind("Pod") else {
        return Vec::new();
    };
    let ask = async {
        let selector = format!("{}={}", super::job::JOB_LABEL, record.name);
        let listed = cluster
            .list(pods, Some(&record.namespace), Some(&selector), None)
            .await
            .unwrap_or_default();
        let mut running = Vec::new();
        for pod in &listed {
            let index = pod
                .pointer("/metadata/annotations/batch.kubernetes.io~1job-completion-index")
                .and_then(serde_json::Value::as_str);
            let (Some(index), Some("Running")) = (
                index,
                pod.pointer("/status/phase")
                    .and_then(serde_json::Value::as_str),
            ) else {
                continue;
            };
            let target = Pod {
                cluster,
                namespace: record.namespace.clone(),
                name: pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                container: None,
            };
            let dir = format!("{}/{index}", record.dir);
            let asked = target
                .exec(
                    &[
                        record.binary.as_str(),
                        "sync-agent",
                        "status",
                        "--dir",
                        &dir,
                    ],
                    None,
                )
                .await;
            let report = match asked {
                Ok(output) if output.exit_code == 0 => {
                    serde_json::from_str::<StatusReport>(output.stdout_text().trim()).ok()
                }
                _ => None,
            };
            if let Some(state) = report
                .and_then(|report| report.state)
                .filter(|state| state.agent == record.name && state.result.is_none())
            {
                running.extend(state.running_shards);
            }
        }
        running.sort_unstable();
        running
    };
    tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .unwrap_or_default()
}
