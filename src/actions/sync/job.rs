//! `sync` with `on: {job: ...}`: the shards of a pass run as an Indexed Job, so that the copy
//! spreads over nodes and Kubernetes runs a failed shard again.
//!
//! The pass is planned and finished where `runbook` runs, as a local copy is (the source
//! must be readable here: the comparison, the deletions, the directories, the hard links and
//! `verify`); only the shards go to the Job:
//!
//! 1. The pass's plan is journaled as a local pass's is. Then a [`Note::Job`] names the Job
//!    (the step, a hash of the paths and a random part), and only then is the Job created:
//!    `completions = parallelism = N`, index `i` runs `AGENT sync-agent shards` on shards
//!    `i`, `i + N`, ... (the request, with the plan, is in the container's environment).
//! 2. The agent must be in the pods at `RUNBOOK_AGENT_PATH` (in the image, or on a shared
//!    volume): the Job makes pods later, which nothing ships a binary into. Each index keeps
//!    its state in `RUNBOOK_AGENT_DIR/JOB/INDEX`; on a volume the pods share, a pod that
//!    replaces a failed one skips the shards its predecessor finished.
//! 3. `runbook` follows the Job: the shards of every index in `completedIndexes`, and those
//!    the live pods' agents report (`sync-agent status` through exec), are journaled, each
//!    once. `Complete` ends the shards; `Failed` fails the step with what the failed pods
//!    said. `run` again, with the Job still there, follows it rather than create another.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::agent::{AgentResult, SHARDS_REQUEST_ENV, ShardsRequest, StatusReport};
use super::pass::{JobRecord, Note, PassRecord};
use super::pass_reporter::PassReporter;
use super::pod::Pod;
use super::pool::PoolOutcome;
use super::progress::Board;
use super::remote::agent_root;
use super::spec::{RunsOnJob, Settings};
use crate::actions::{InvalidInput, StepContext};
use crate::kube::{Cluster, Kind, find_kind, has_condition};

/// The label that ties a Job's pods to it (Kubernetes adds its own, the sandbox does not).
pub(super) const JOB_LABEL: &str = "runbook.dev/sync-job";
/// How often the Job is looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The Job of a step, rendered.
pub struct JobPlacement {
    /// Its namespace.
    pub namespace: String,
    /// Its completion indexes (and pods at once).
    pub parallelism: usize,
    /// Failed pods before the Job fails.
    pub backoff_limit: Option<u32>,
    /// The pod template, rendered.
    pub template: Value,
}

impl JobPlacement {
    /// Renders `on: {job: ...}`.
    pub fn render(on: &RunsOnJob, cx: &StepContext<'_>) -> anyhow::Result<Self> {
        let parallelism = cx.setting("on.job.parallelism", &on.parallelism)?.0;
        let namespace = cx.namespace_or_default(on.namespace.as_deref())?;
        Ok(JobPlacement {
            namespace,
            parallelism: parallelism as usize,
            backoff_limit: cx
                .optional_setting("on.job.backoff_limit", on.backoff_limit.as_ref())?,
            template: cx.render_json(&on.template)?,
        })
    }

    /// `an Indexed Job of 3 pods in namespace NS`.
    pub fn describe(&self) -> String {
        format!(
            "an Indexed Job of {} pod{} in namespace {} (index i copies shards i, i+{}, ...)",
            self.parallelism,
            if self.parallelism == 1 { "" } else { "s" },
            self.namespace,
            self.parallelism
        )
    }
}

/// A new Job's name: the step, a hash of the namespace and paths, a random part; short
/// enough for its pods' names (`JOB-INDEX-xxxxx`) and host names.
fn job_name(step: &str, namespace: &str, settings: &Settings) -> String {
    let mut base: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    base = base.trim_matches('-').to_string();
    let key = json!([
        step,
        namespace,
        settings.from.to_string_lossy(),
        settings.to.to_string_lossy()
    ])
    .to_string();
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("sync-{base}-{hash}-{:04x}", fastrand::u16(..))
}

/// `completedIndexes` (`"0-2,5"`) as a set.
pub(super) fn parse_indexes(text: &str) -> BTreeSet<usize> {
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|n| n.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(first)), None) => {
                set.insert(first);
            }
            (Some(Ok(first)), Some(Ok(last))) => set.extend(first..=last),
            _ => {}
        }
    }
    set
}

/// The binary the Job's pods run: it must already be there.
fn agent_binary() -> anyhow::Result<String> {
    std::env::var("RUNBOOK_AGENT_PATH").map_err(|_| {
        InvalidInput(
            "`on: {job: ...}` needs RUNBOOK_AGENT_PATH: the path of runbook (this version) in the Job's pods\nhelp: put runbook in the image or on a volume the pods mount, and set RUNBOOK_AGENT_PATH to it"
                .into(),
        )
        .into()
    })
}

/// The user's pod template with what the Job needs: the label that finds its pods, a
/// restart policy a Job accepts, and the agent as the first container's command, with the
/// request in its environment.
fn pod_template(
    user_template: &Value,
    name: &str,
    dir: &str,
    binary: &str,
    request: &ShardsRequest,
) -> anyhow::Result<Value> {
    let mut template = user_template.clone();
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    template["metadata"]["labels"][JOB_LABEL] = json!(name);
    if template["spec"]["restartPolicy"]
        .as_str()
        .is_none_or(|p| p == "Always")
    {
        template["spec"]["restartPolicy"] = json!("Never");
    }
    let container = template
        .pointer_mut("/spec/containers/0")
        .filter(|container| container.is_object())
        .ok_or_else(|| InvalidInput("`on.job.template` has no container".into()))?;
    container["command"] = json!([binary, "sync-agent", "shards", "--dir", dir]);
    if let Some(object) = container.as_object_mut() {
        object.remove("args");
    }
    // A failed pod's status then ends with its last log lines, which the step shows.
    if container["terminationMessagePolicy"].is_null() {
        container["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    }
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    if let Some(env) = container["env"].as_array_mut() {
        env.push(json!({"name": SHARDS_REQUEST_ENV, "value": serde_json::to_string(request)?}));
    }
    Ok(template)
}

/// Copies a pass's shards through an Indexed Job.
pub struct JobCopier<'a> {
    /// The step's context.
    pub cx: &'a StepContext<'a>,
    /// Where.
    pub placement: JobPlacement,
    /// The step's notes before this run.
    pub notes: Vec<Value>,
}

impl JobCopier<'_> {
    /// Runs (or follows) the Job for the shards of `record` not in `done`; journals each
    /// shard it finished, once.
    pub async fn copy(
        &self,
        reporter: &dyn PassReporter,
        settings: &Settings,
        record: &PassRecord,
        done: &BTreeSet<usize>,
        board: &Board,
    ) -> anyhow::Result<PoolOutcome> {
        if (0..record.shards.len()).all(|i| done.contains(&i)) {
            return Ok(PoolOutcome::default());
        }
        let cluster = self.cx.cluster()?;
        let jobs = find_kind("Job").context("the Job kind is not known")?;
        let collected: HashSet<String> = self
            .notes
            .iter()
            .filter_map(|note| match serde_json::from_value::<Note>(note.clone()) {
                Ok(Note::Collected { agent, .. }) => Some(agent),
                _ => None,
            })
            .collect();
        let journaled = self
            .notes
            .iter()
            .filter_map(|note| match serde_json::from_value::<Note>(note.clone()) {
                Ok(Note::Job(job)) if job.pass == record.pass && !collected.contains(&job.name) => {
                    Some(*job)
                }
                _ => None,
            })
            .next_back();
        let mut found = None;
        if let Some(job) = journaled
            && cluster
                .get(jobs, &job.name, Some(&job.namespace))
                .await?
                .is_some()
        {
            reporter.line(&format!(
                "re-attaching to Job {} in namespace {} (created {}), which copies the shards of pass {}",
                job.name, job.namespace, job.started, job.pass
            ));
            found = Some(job);
        }
        let job = match found {
            Some(job) => job,
            None => self.create(reporter, settings, record, done).await?,
        };
        self.follow(reporter, cluster, &job, record, done, board)
            .await
    }

    /// Journals a new Job, then creates it.
    async fn create(
        &self,
        reporter: &dyn PassReporter,
        settings: &Settings,
        record: &PassRecord,
        done: &BTreeSet<usize>,
    ) -> anyhow::Result<JobRecord> {
        let cluster = self.cx.cluster()?;
        let jobs = find_kind("Job").context("the Job kind is not known")?;
        let placement = &self.placement;
        let binary = agent_binary()?;
        let root = agent_root(self.cx);
        let name = job_name(self.cx.step_id, &placement.namespace, settings);
        let dir = format!("{}/{name}", root.trim_end_matches('/'));
        // `bwlimit` is for the whole copy: each pod gets its share.
        let mut pod_settings = settings.clone();
        pod_settings.bwlimit = settings
            .bwlimit
            .map(|rate| (rate / placement.parallelism as u64).max(1));
        let request = ShardsRequest {
            job: name.clone(),
            step: self.cx.step_id.to_string(),
            settings: pod_settings,
            pass: record.clone(),
            done: done.clone(),
            parallelism: placement.parallelism,
        };
        let manifest = self.manifest(&name, &dir, &binary, &request)?;
        let job = JobRecord {
            name: name.clone(),
            namespace: placement.namespace.clone(),
            pass: record.pass,
            parallelism: placement.parallelism,
            dir,
            binary,
            started: jiff::Timestamp::now().to_string(),
        };
        // Journaled first: whatever happens to this process next, a later run follows it.
        reporter.note(&Note::Job(Box::new(job.clone())))?;
        cluster
            .apply_as(
                jobs,
                &name,
                Some(&placement.namespace),
                &manifest,
                "runbook",
            )
            .await
            .with_context(|| format!("cannot create the Job {name}"))?;
        reporter.line(&format!(
            "created Job {name}: {} shards of pass {} in {}; it goes on if runbook stops, and `runbook run` again follows it",
            record.shards.len() - done.len(),
            record.pass,
            placement.describe()
        ));
        Ok(job)
    }

    /// The Job's manifest: Indexed, one completion index per pod, each running the agent
    /// on its share of `request`'s shards.
    fn manifest(
        &self,
        name: &str,
        dir: &str,
        binary: &str,
        request: &ShardsRequest,
    ) -> anyhow::Result<Value> {
        let placement = &self.placement;
        let template = pod_template(&placement.template, name, dir, binary, request)?;
        let mut spec = json!({
            "completionMode": "Indexed",
            "completions": placement.parallelism,
            "parallelism": placement.parallelism,
            "template": template,
        });
        if let Some(limit) = placement.backoff_limit {
            spec["backoffLimit"] = json!(limit);
        }
        Ok(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": placement.namespace,
                "labels": {"runbook.dev/sync-step": self.cx.step_id.chars().filter(char::is_ascii_alphanumeric).take(63).collect::<String>()},
            },
            "spec": spec,
        }))
    }

    /// Follows the Job until it is `Complete` or `Failed`.
    async fn follow(
        &self,
        reporter: &dyn PassReporter,
        cluster: &Cluster,
        job: &JobRecord,
        record: &PassRecord,
        done: &BTreeSet<usize>,
        board: &Board,
    ) -> anyhow::Result<PoolOutcome> {
        let jobs = find_kind("Job").context("the Job kind is not known")?;
        let pods = find_kind("Pod").context("the Pod kind is not known")?;
        let mut follower = JobFollower {
            reporter,
            cluster,
            jobs,
            pods,
            job,
            record,
            board,
            journaled: done.clone(),
            last_said: BTreeMap::new(),
            failures_told: HashSet::new(),
        };
        loop {
            let Some(live) = cluster.get(jobs, &job.name, Some(&job.namespace)).await? else {
                anyhow::bail!(
                    "the Job {} in namespace {} is gone before it ended; finished shards are journaled, run again to continue",
                    job.name,
                    job.namespace
                );
            };
            let completed = parse_indexes(
                live.pointer("/status/completedIndexes")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            for index in completed {
                follower.journal_index(index)?;
            }
            let failed_pods = follower.look_at_pods().await?;
            reporter.progress(board, false);
            if has_condition(&live["status"], "Complete") {
                return follower.complete().await;
            }
            if has_condition(&live["status"], "Failed") {
                return follower.failed(failed_pods);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// A pod of the Job that failed: its name, completion index, exit code and termination
/// message (its last log lines).
type FailedPod = (String, Option<usize>, Option<i64>, Option<String>);

/// The state of following one Job: which shards are journaled, and what its pods said.
struct JobFollower<'a> {
    reporter: &'a dyn PassReporter,
    cluster: &'a Cluster,
    /// The Job kind, to delete the Job when it completes.
    jobs: &'static Kind,
    /// The Pod kind, to list the Job's pods.
    pods: &'static Kind,
    job: &'a JobRecord,
    record: &'a PassRecord,
    board: &'a Board,
    /// Shards journaled (by a run before, or by this one), each once.
    journaled: BTreeSet<usize>,
    /// What each index's agent said last when it failed, for when its pod has no message.
    last_said: BTreeMap<usize, String>,
    /// Failed pods already told about.
    failures_told: HashSet<String>,
}

impl JobFollower<'_> {
    /// Journals a finished shard, once.
    fn journal(&mut self, shard: usize) -> anyhow::Result<()> {
        if shard >= self.record.shards.len() || !self.journaled.insert(shard) {
            return Ok(());
        }
        let planned = &self.record.shards[shard];
        self.board.already_done(planned.bytes, planned.files);
        self.reporter.note(&Note::Shard {
            tries: None,
            pass: self.record.pass,
            shard,
            bytes: planned.bytes,
            files: planned.files,
        })
    }

    /// Journals the shards of a completed index: `index`, `index + parallelism`, ...
    fn journal_index(&mut self, index: usize) -> anyhow::Result<()> {
        let shards = self.record.shards.len();
        for shard in (index..shards).step_by(self.job.parallelism.max(1)) {
            self.journal(shard)?;
        }
        Ok(())
    }

    /// Looks at the Job's pods: tells of those that failed (and returns them), and
    /// journals the shards the running ones' agents say they finished.
    async fn look_at_pods(&mut self) -> anyhow::Result<Vec<FailedPod>> {
        let job = self.job;
        let selector = format!("{JOB_LABEL}={}", job.name);
        let listed = self
            .cluster
            .list(self.pods, Some(&job.namespace), Some(&selector), None)
            .await?;
        let mut failed_pods = Vec::new();
        for pod in &listed {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let index = pod
                .pointer("/metadata/annotations/batch.kubernetes.io~1job-completion-index")
                .and_then(Value::as_str)
                .and_then(|index| index.parse::<usize>().ok());
            let phase = pod.pointer("/status/phase").and_then(Value::as_str);
            if phase == Some("Failed") {
                failed_pods.push(self.pod_failed(pod, name, index));
            }
            if let (Some(index), Some("Running")) = (index, phase) {
                self.collect_from_agent(name, index).await?;
            }
        }
        Ok(failed_pods)
    }

    /// A failed pod, told about once: the Job may run its index again.
    fn pod_failed(&mut self, pod: &Value, name: &str, index: Option<usize>) -> FailedPod {
        let terminated = pod.pointer("/status/containerStatuses/0/state/terminated");
        let code = terminated
            .and_then(|t| t.get("exitCode"))
            .and_then(Value::as_i64);
        let message = terminated
            .and_then(|t| t.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if self.failures_told.insert(name.to_string()) {
            self.reporter.line(&format!(
                "pod {name} (index {}) failed{}; the Job runs the index again until its backoffLimit",
                index.map_or("?".to_string(), |i| i.to_string()),
                code.map(|code| format!(" with exit code {code}"))
                    .unwrap_or_default()
            ));
        }
        (name.to_string(), index, code, message)
    }

    /// Asks a running pod's agent (through exec) which shards it finished, and journals
    /// them. A pod that cannot answer yet is asked again at the next look.
    async fn collect_from_agent(&mut self, name: &str, index: usize) -> anyhow::Result<()> {
        let job = self.job;
        let target = Pod {
            cluster: self.cluster,
            namespace: job.namespace.clone(),
            name: name.to_string(),
            container: None,
        };
        let dir = format!("{}/{index}", job.dir);
        let Ok(output) = target
            .exec_retrying(
                &[job.binary.as_str(), "sync-agent", "status", "--dir", &dir],
                None,
            )
            .await
        else {
            return Ok(());
        };
        let Ok(report) = serde_json::from_str::<StatusReport>(output.stdout_text().trim()) else {
            return Ok(());
        };
        let Some(state) = report.state.filter(|state| state.agent == job.name) else {
            return Ok(());
        };
        for note in &state.notes {
            if let Note::Shard { pass, shard, .. } = note
                && *pass == self.record.pass
            {
                self.journal(*shard)?;
            }
        }
        if let Some(AgentResult::Failed { message, .. }) = &state.result {
            self.last_said.insert(index, message.clone());
        }
        Ok(())
    }

    /// The Job completed: every shard is journaled, and the Job and its pods go (a failed
    /// one stays, for its pods' logs).
    async fn complete(&mut self) -> anyhow::Result<PoolOutcome> {
        let job = self.job;
        for shard in 0..self.record.shards.len() {
            self.journal(shard)?;
        }
        self.reporter.note(&Note::Collected {
            agent: job.name.clone(),
            ok: true,
        })?;
        let deleted = self
            .cluster
            .delete(
                self.jobs,
                &job.name,
                Some(&job.namespace),
                Some(kube::api::PropagationPolicy::Background),
                false,
            )
            .await;
        let mut warnings = Vec::new();
        if let Err(error) = deleted {
            let message = format!(
                "the finished Job {} in namespace {} could not be deleted (delete it by hand): {error}",
                job.name, job.namespace
            );
            self.reporter.warn(&message);
            warnings.push(message);
        }
        Ok(PoolOutcome {
            warnings,
            ..PoolOutcome::default()
        })
    }

    /// The Job failed: each failed pod, with its last log lines or what its agent said.
    fn failed(&self, failed_pods: Vec<FailedPod>) -> anyhow::Result<PoolOutcome> {
        self.reporter.note(&Note::Collected {
            agent: self.job.name.clone(),
            ok: false,
        })?;
        let mut failures = Vec::new();
        for (name, index, code, message) in failed_pods {
            let mut text = format!(
                "pod {name} (index {}) failed{}",
                index.map_or("?".to_string(), |i| i.to_string()),
                code.map(|code| format!(" with exit code {code}"))
                    .unwrap_or_default()
            );
            // The pod's last log lines, else what its agent said last.
            let said =
                message.or_else(|| index.and_then(|index| self.last_said.get(&index).cloned()));
            if let Some(said) = said {
                text.push_str(", its log ends with:\n  ");
                text.push_str(&said.replace('\n', "\n  "));
            }
            failures.push(text);
        }
        if failures.is_empty() {
            failures.push(format!("the Job {} failed", self.job.name));
        }
        Ok(PoolOutcome {
            failures,
            stopped: None,
            warnings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_as_kubernetes_writes_them() {
        assert_eq!(parse_indexes("0-2,5"), BTreeSet::from([0, 1, 2, 5]));
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn job_names_fit_pod_names() {
        let settings = Settings::for_test("/a", "/b");
        let name = job_name("Copy_The_Homes_Of_Everyone_Please", "default", &settings);
        assert!(name.len() <= 40, "{name}");
        assert!(name.starts_with("sync-copy-the-homes-of-"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
