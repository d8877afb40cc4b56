//! Jobs (`batch/v1`), as Kubernetes' Job controller runs them: at most `parallelism` active
//! pods until `completions` of them succeeded (in `Indexed` mode, until every index in
//! `0..completions` did, each pod named `<job>-<index>-<5 random characters>` and told its
//! index by a label, an annotation and `JOB_COMPLETION_INDEX`); a failed pod is replaced,
//! and the Job fails once more than `backoffLimit` pods failed. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer until the Job has counted them, so that a
//! pod deleted early is still counted (as failed). The [`kubelet`](crate::kubelet)
//! runs the pods' commands and ends them.
//!
//! As since Kubernetes 1.31, reaching the end adds `SuccessCriteriaMet` or `FailureTarget`
//! at once, deletes the pods still active, and adds `Complete` or `Failed` once no pod is
//! terminating. Deliberate differences: a failed pod is replaced at once, without the
//! exponential back-off delay; `suspend`, `activeDeadlineSeconds`, `backoffLimitPerIndex`,
//! `podFailurePolicy`, `successPolicy` and `ttlSecondsAfterFinished` are stored but not
//! acted on; `restartPolicy: OnFailure` is run as `Never` (a failed container fails its
//! pod, which the Job replaces, rather than restarting in place).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::super::meta;
use super::workloads::owner_reference;
use super::{State, is_ready};
use kube_kinds::{Kind, find_kind, has_condition};

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The label and annotation that give an Indexed Job's pod its index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The variable that gives an Indexed Job's containers their index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Runs the Job controller.
pub fn reconcile(state: &mut State) -> bool {
    let (Some(jobs), Some(pods)) = (find_kind("Job"), find_kind("Pod")) else {
        return false;
    };
    let mut changed = release_untracked(state, jobs, pods);
    let all: Vec<Value> = state
        .store
        .list(jobs, None)
        .filter(|job| !meta::is_deleting(job))
        .cloned()
        .collect();
    for job in all {
        changed |= sync_job(state, jobs, pods, &job);
    }
    changed
}

/// What a Job's spec asks for, defaults applied.
struct JobSpec {
    parallelism: i64,
    /// `None`: any success, once no pod is active, completes the Job.
    completions: Option<i64>,
    backoff_limit: i64,
    indexed: bool,
}

impl JobSpec {
    fn of(job: &Value) -> Self {
        let number = |field: &str| {
            job.pointer(&format!("/spec/{field}"))
                .and_then(Value::as_i64)
        };
        JobSpec {
            parallelism: number("parallelism").unwrap_or(1).max(0),
            completions: number("completions"),
            backoff_limit: number("backoffLimit").unwrap_or(6),
            indexed: meta::str_at(job, &["spec", "completionMode"]) == Some("Indexed"),
        }
    }
}

fn phase(pod: &Value) -> &str {
    meta::str_at(pod, &["status", "phase"]).unwrap_or_default()
}

fn is_terminal(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// A pod that failed, or was deleted before it succeeded (the Job controller counts those
/// as failures too: they never get a chance to fail).
fn has_failed(pod: &Value) -> bool {
    phase(pod) == "Failed" || (meta::is_deleting(pod) && phase(pod) != "Succeeded")
}

fn is_active(pod: &Value) -> bool {
    !is_terminal(pod) && !meta::is_deleting(pod)
}

/// An Indexed Job's pod's index, from its annotation.
pub fn completion_index(pod: &Value) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(COMPLETION_INDEX))
        .and_then(Value::as_str)
        .and_then(|index| index.parse().ok())
        .filter(|index| *index >= 0)
}

/// `completedIndexes` (`"0-2,5"`) as a set.
fn parse_indexes(text: &str) -> BTreeSet<i64> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let first = first.trim().parse::<i64>().unwrap_or(0);
            let last = last.trim().parse::<i64>().unwrap_or(-1);
            first..=last
        })
        .collect()
}

/// A set of indexes as `completedIndexes` writes it: ascending ranges, `"0-2,5"`.
fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &index in indexes {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == index => *last = index,
            _ => ranges.push((index, index)),
        }
    }
    ranges
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn add_condition(status: &mut Value, kind: &str, reason: &str, message: &str) {
    let now = meta::now();
    let condition = json!({
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    });
    match status.get_mut("conditions").and_then(Value::as_array_mut) {
        Some(conditions) => conditions.push(condition),
        None => status["conditions"] = json!([condition]),
    }
}

/// The pods a Job controls, as they are now.
fn owned_pods(state: &State, pods: &Kind, job: &Value) -> Vec<Value> {
    let uid = meta::uid(job);
    state
        .store
        .list(pods, Some(meta::namespace(job)))
        .filter(|pod| meta::controller_uid(pod).as_deref() == Some(uid))
        .cloned()
        .collect()
}

/// Removes the tracking finalizer from pods no live Job will count: their Job is gone or
/// being deleted, or they were orphaned.
fn release_untracked(state: &mut State, jobs: &Kind, pods: &'static Kind) -> bool {
    let counting: BTreeSet<String> = state
        .store
        .list(jobs, None)
        .filter(|job| !meta::is_deleting(job))
        .map(|job| meta::uid(job).to_string())
        .collect();
    let released: Vec<Value> = state
        .store
        .list(pods, None)
        .filter(|pod| meta::has_finalizer(pod, TRACKING_FINALIZER))
        .filter(|pod| meta::controller_uid(pod).is_none_or(|uid| !counting.contains(&uid)))
        .cloned()
        .collect();
    let mut changed = false;
    for mut pod in released {
        meta::remove_finalizer(&mut pod, TRACKING_FINALIZER);
        changed |= state.put(pods, pod);
    }
    changed
}

/// The pods of a job that ended, as its status counts them.
#[derive(Debug, Default)]
struct Ended {
    succeeded: i64,
    failed: i64,
    /// Indexed mode: the indexes whose pod succeeded.
    completed: BTreeSet<i64>,
}

fn sync_job(state: &mut State, jobs: &'static Kind, pods: &'static Kind, job: &Value) -> bool {
    let mut status = job.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let decided = ["SuccessCriteriaMet", "FailureTarget", "Complete", "Failed"]
        .iter()
        .any(|kind| has_condition(&status, kind));
    let sync = JobSync {
        jobs,
        pods,
        job,
        spec: JobSpec::of(job),
    };
    let (mut ended, mut changed) = sync.count_ended_pods(state, &status, decided);
    if sync.spec.indexed {
        ended.succeeded = i64::try_from(ended.completed.len()).unwrap_or(i64::MAX);
    }
    let owned = owned_pods(state, pods, job);
    let active: Vec<&Value> = owned.iter().filter(|pod| is_active(pod)).collect();
    if !decided {
        decide(&mut status, &sync.spec, &ended, active.is_empty());
    }
    let finished =
        has_condition(&status, "SuccessCriteriaMet") || has_condition(&status, "FailureTarget");
    changed |= if finished {
        let namespace = meta::namespace(job);
        active.iter().fold(false, |changed, pod| {
            changed | state.delete_for_controller(pods, namespace, meta::name(pod))
        })
    } else {
        sync.scale(state, &ended, &active)
    };
    changed | sync.write_status(state, status, &ended, finished)
}

/// Decides the job once its pods say so: too many failures, or enough successes.
fn decide(status: &mut Value, spec: &JobSpec, ended: &Ended, none_active: bool) {
    let complete = match spec.completions {
        Some(total) => ended.succeeded >= total,
        None => ended.succeeded > 0 && none_active,
    };
    if ended.failed > spec.backoff_limit {
        add_condition(
            status,
            "FailureTarget",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
    } else if complete {
        add_condition(
            status,
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
    }
}

/// One pass of the controller over one job.
struct JobSync<'a> {
    jobs: &'static Kind,
    pods: &'static Kind,
    job: &'a Value,
    spec: JobSpec,
}

impl JobSync<'_> {
    /// Counts the pods that ended since the last pass (unless the job is already decided), and
    /// lets them go (their tracking finalizer); whether a pod changed.
    fn count_ended_pods(&self, state: &mut State, status: &Value, decided: bool) -> (Ended, bool) {
        let (pods, job, spec) = (self.pods, self.job, &self.spec);
        let count = |field: &str| status.get(field).and_then(Value::as_i64).unwrap_or(0);
        let mut ended = Ended {
            succeeded: count("succeeded"),
            failed: count("failed"),
            completed: parse_indexes(
                status
                    .get("completedIndexes")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
        };
        let pods_that_ended: Vec<Value> = owned_pods(state, pods, job)
            .into_iter()
            .filter(|pod| meta::has_finalizer(pod, TRACKING_FINALIZER))
            .filter(|pod| phase(pod) == "Succeeded" || has_failed(pod))
            .collect();
        let mut changed = false;
        for mut pod in pods_that_ended {
            if !decided {
                if phase(&pod) == "Succeeded" {
                    match completion_index(&pod) {
                        Some(index) if spec.indexed => {
                            if spec.completions.is_some_and(|total| index < total) {
                                ended.completed.insert(index);
                            }
                        }
                        _ => ended.succeeded += 1,
                    }
                } else {
                    ended.failed += 1;
                }
            }
            meta::remove_finalizer(&mut pod, TRACKING_FINALIZER);
            changed |= state.put(pods, pod);
        }
        (ended, changed)
    }

    /// An undecided job's pods, brought to its parallelism (or what remains of its completions):
    /// new pods (each for a free index in Indexed mode), or the newest ones deleted.
    fn scale(&self, state: &mut State, ended: &Ended, active: &[&Value]) -> bool {
        let (jobs, pods, job, spec) = (self.jobs, self.pods, self.job, &self.spec);
        let namespace = meta::namespace(job);
        let active_count = i64::try_from(active.len()).unwrap_or(i64::MAX);
        let remaining = spec
            .completions
            .map_or(spec.parallelism, |total| (total - ended.succeeded).max(0));
        let wanted = spec.parallelism.min(remaining);
        let mut changed = false;
        if active_count < wanted {
            let missing = usize::try_from(wanted - active_count).unwrap_or(0);
            let indexes: Vec<Option<i64>> = if spec.indexed {
                let busy: BTreeSet<i64> = active
                    .iter()
                    .filter_map(|pod| completion_index(pod))
                    .collect();
                (0..spec.completions.unwrap_or(0))
                    .filter(|index| !ended.completed.contains(index) && !busy.contains(index))
                    .take(missing)
                    .map(Some)
                    .collect()
            } else {
                vec![None; missing]
            };
            for index in indexes {
                let pod = pod_for(jobs, pods, job, index);
                changed |= state.create_for_controller(pods, namespace, pod);
            }
        } else if active_count > wanted {
            // Parallelism went down: the newest pods go.
            let mut newest: Vec<&&Value> = active.iter().collect();
            newest.sort_by_key(|pod| {
                std::cmp::Reverse(
                    meta::str_at(pod, &["metadata", "creationTimestamp"])
                        .unwrap_or_default()
                        .to_string(),
                )
            });
            let surplus = usize::try_from(active_count - wanted).unwrap_or(0);
            for pod in newest.into_iter().take(surplus) {
                changed |= state.delete_for_controller(pods, namespace, meta::name(pod));
            }
        }
        changed
    }

    /// The job's status, from its pods as they are now: the counts, and `Complete` or `Failed`
    /// once a finished job has no pod left running.
    fn write_status(
        &self,
        state: &mut State,
        mut status: Value,
        ended: &Ended,
        finished: bool,
    ) -> bool {
        let (jobs, pods, job, spec) = (self.jobs, self.pods, self.job, &self.spec);
        let owned = owned_pods(state, pods, job);
        let active = owned.iter().filter(|pod| is_active(pod)).count();
        let terminating = owned
            .iter()
            .filter(|pod| meta::is_deleting(pod) && !is_terminal(pod))
            .count();
        let ready = owned
            .iter()
            .filter(|pod| is_active(pod) && is_ready(pod))
            .count();
        if finished && active == 0 && terminating == 0 {
            if has_condition(&status, "FailureTarget") && !has_condition(&status, "Failed") {
                add_condition(
                    &mut status,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                );
            } else if has_condition(&status, "SuccessCriteriaMet")
                && !has_condition(&status, "Complete")
            {
                add_condition(
                    &mut status,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                status["completionTime"] = json!(meta::now());
            }
        }
        if status.get("startTime").is_none() {
            status["startTime"] = json!(meta::now());
        }
        for (field, value) in [
            ("active", active),
            ("terminating", terminating),
            ("ready", ready),
        ] {
            status[field] = json!(value);
        }
        status["succeeded"] = json!(ended.succeeded);
        status["failed"] = json!(ended.failed);
        if spec.indexed && !ended.completed.is_empty() {
            status["completedIndexes"] = json!(format_indexes(&ended.completed));
        }
        status["uncountedTerminatedPods"] = json!({});
        if let Some(map) = status.as_object_mut() {
            // Zero counts are omitted, as the API's omitempty does; `ready` and `terminating`
            // are pointers, shown when zero.
            map.retain(|field, value| {
                !matches!(field.as_str(), "active" | "succeeded" | "failed") || value != &json!(0)
            });
        }
        let Some(mut latest) = state.get(jobs, meta::namespace(job), meta::name(job)).ok() else {
            return false;
        };
        latest["status"] = status;
        state.put(jobs, latest)
    }
}

/// A new pod for `job` (for `index`, in Indexed mode), from its template.
fn pod_for(jobs: &Kind, pods: &Kind, job: &Value, index: Option<i64>) -> Value {
    let name = meta::name(job);
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["namespace"] = json!(meta::namespace(job));
    metadata["ownerReferences"] = owner_reference(jobs, job);
    metadata["finalizers"] = json!([TRACKING_FINALIZER]);
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    match index {
        Some(index) => {
            metadata["generateName"] = json!(format!("{name}-{index}-"));
            meta::set_at(
                &mut metadata,
                &["labels", COMPLETION_INDEX],
                json!(index.to_string()),
            );
            meta::set_at(
                &mut metadata,
                &["annotations", COMPLETION_INDEX],
                json!(index.to_string()),
            );
            if meta::str_at(&spec, &["hostname"]).is_none_or(str::is_empty) {
                spec["hostname"] = json!(format!("{name}-{index}"));
            }
            let variable = json!({
                "name": COMPLETION_INDEX_ENV,
                "valueFrom": {"fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }},
            });
            for list in ["initContainers", "containers"] {
                let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                    continue;
                };
                for container in containers.iter_mut().filter(|c| c.is_object()) {
                    match container.get_mut("env").and_then(Value::as_array_mut) {
                        Some(env) => env.push(variable.clone()),
                        None => container["env"] = json!([variable]),
                    }
                }
            }
        }
        None => metadata["generateName"] = json!(format!("{name}-")),
    }
    json!({
        "apiVersion": pods.api_version,
        "kind": pods.kind,
        "metadata": metadata,
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_read_and_write_as_ranges() {
        let indexes = parse_indexes("0-2,5,7-8");
        assert_eq!(
            indexes.iter().copied().collect::<Vec<_>>(),
            [0, 1, 2, 5, 7, 8]
        );
        assert_eq!(format_indexes(&indexes), "0-2,5,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("").is_empty());
    }
}
