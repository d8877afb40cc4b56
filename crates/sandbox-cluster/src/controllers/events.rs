//! Events (`v1` `Event`), as the scheduler, the kubelet and the controllers record them:
//! what `kubectl get events` lists and `kubectl describe` shows under `Events:`. Recorded
//! level-triggered like everything here: an event is added when the state it reports holds
//! and no event of the object says so yet (by the object's uid, reason and message), so a
//! pass that sees the same state again records nothing.
//!
//! - the scheduler: `Scheduled` (a pod got its node), `FailedScheduling` (why it did not);
//! - the kubelet: `Pulled`, `Created`, `Started` for each container that started;
//! - the ReplicaSet, StatefulSet and Job controllers: `SuccessfulCreate` for each pod they
//!   own;
//! - the Job controller: `Completed`, or `BackoffLimitExceeded`.
//!
//! Deliberate differences: events are never merged into a `count` above 1 and never expire
//! (a real server keeps them an hour); Deployments record no `ScalingReplicaSet`.

use std::collections::HashSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::super::admission::NODE_NAME;
use super::super::meta;
use super::State;
use kube_kinds::{Kind, find_kind, has_condition};

/// What one event says about one object.
struct Record {
    /// The object, as `involvedObject` refers to it.
    involved: Value,
    /// `Normal` or `Warning`.
    kind: &'static str,
    reason: &'static str,
    message: String,
    /// `default-scheduler`, `kubelet`, `replicaset-controller`, `job-controller`.
    component: &'static str,
}

/// A reference to `object` of `kind`, with a container's `fieldPath` if any.
fn reference(kind: &Kind, object: &Value, field_path: Option<String>) -> Value {
    let mut reference = json!({
        "kind": kind.kind,
        "namespace": meta::namespace(object),
        "name": meta::name(object),
        "uid": meta::uid(object),
        "apiVersion": kind.api_version,
        "resourceVersion": meta::resource_version(object),
    });
    if let Some(field_path) = field_path {
        reference["fieldPath"] = json!(field_path);
    }
    reference
}

/// Records the events the current state calls for; returns whether it recorded any.
pub fn reconcile(state: &mut State, now: Timestamp) -> bool {
    let Some(events) = find_kind("Event").filter(|kind| kind.group.is_empty()) else {
        return false;
    };
    let recorded: HashSet<(String, String, String)> = state
        .store
        .list(events, None)
        .map(|event| {
            (
                meta::str_at(event, &["involvedObject", "uid"])
                    .unwrap_or_default()
                    .to_string(),
                meta::str_at(event, &["reason"])
                    .unwrap_or_default()
                    .to_string(),
                meta::str_at(event, &["message"])
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut wanted = Vec::new();
    pod_records(state, &mut wanted);
    owner_records(state, &mut wanted);
    job_records(state, &mut wanted);
    let time = meta::format_time(now);
    let mut changed = false;
    for (sequence, record) in wanted.into_iter().enumerate() {
        let key = (
            meta::str_at(&record.involved, &["uid"])
                .unwrap_or_default()
                .to_string(),
            record.reason.to_string(),
            record.message.clone(),
        );
        if recorded.contains(&key) {
            continue;
        }
        let namespace = meta::str_at(&record.involved, &["namespace"])
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or("default")
            .to_string();
        // client-go names an event after its object and the time in nanoseconds, in hex.
        let name = format!(
            "{}.{:x}",
            meta::str_at(&record.involved, &["name"]).unwrap_or_default(),
            now.as_nanosecond() + sequence as i128
        );
        let mut source = json!({"component": record.component});
        if record.component == "kubelet" {
            source["host"] = json!(NODE_NAME);
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": record.involved,
            "reason": record.reason,
            "message": record.message,
            "type": record.kind,
            "source": source,
            "reportingComponent": record.component,
            "reportingInstance": if record.component == "kubelet" { NODE_NAME } else { "" },
            "firstTimestamp": time,
            "lastTimestamp": time,
            "count": 1,
        });
        changed |= state.create_for_controller(events, &namespace, event);
    }
    changed
}

/// The scheduler's and the kubelet's events of every pod.
fn pod_records(state: &State, wanted: &mut Vec<Record>) {
    let Some(pods) = find_kind("Pod") else {
        return;
    };
    for pod in state.store.list(pods, None) {
        let scheduled = kube_kinds::condition(&pod["status"], "PodScheduled");
        let status = scheduled
            .and_then(|condition| condition.get("status"))
            .and_then(Value::as_str);
        let node = meta::str_at(pod, &["spec", "nodeName"]).unwrap_or_default();
        if status == Some("True") && !node.is_empty() {
            wanted.push(Record {
                involved: reference(pods, pod, None),
                kind: "Normal",
                reason: "Scheduled",
                message: format!(
                    "Successfully assigned {}/{} to {node}",
                    meta::namespace(pod),
                    meta::name(pod)
                ),
                component: "default-scheduler",
            });
        } else if status == Some("False")
            && let Some(message) = scheduled
                .and_then(|condition| condition.get("message"))
                .and_then(Value::as_str)
        {
            wanted.push(Record {
                involved: reference(pods, pod, None),
                kind: "Warning",
                reason: "FailedScheduling",
                message: message.to_string(),
                component: "default-scheduler",
            });
        }
        let specs = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let statuses = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for container in &specs {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let started = statuses.iter().any(|status| {
                status.get("name").and_then(Value::as_str) == Some(name)
                    && (status.pointer("/state/running").is_some()
                        || status.pointer("/state/terminated/startedAt").is_some())
            });
            if !started {
                continue;
            }
            let image = container
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let field_path = Some(format!("spec.containers{{{name}}}"));
            for (reason, message) in [
                (
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ),
                ("Created", format!("Created container: {name}")),
                ("Started", format!("Started container {name}")),
            ] {
                wanted.push(Record {
                    involved: reference(pods, pod, field_path.clone()),
                    kind: "Normal",
                    reason,
                    message,
                    component: "kubelet",
                });
            }
        }
    }
}

/// `SuccessfulCreate` on the ReplicaSet, StatefulSet or Job of each pod it owns.
fn owner_records(state: &State, wanted: &mut Vec<Record>) {
    let Some(pods) = find_kind("Pod") else {
        return;
    };
    for (owner_name, component) in [
        ("ReplicaSet", "replicaset-controller"),
        ("StatefulSet", "statefulset-controller"),
        ("Job", "job-controller"),
    ] {
        let Some(owners) = find_kind(owner_name) else {
            continue;
        };
        for owner in state.store.list(owners, None) {
            for pod in state.store.list(pods, Some(meta::namespace(owner))) {
                if meta::controller_uid(pod).as_deref() == Some(meta::uid(owner)) {
                    wanted.push(Record {
                        involved: reference(owners, owner, None),
                        kind: "Normal",
                        reason: "SuccessfulCreate",
                        message: if owner_name == "StatefulSet" {
                            format!(
                                "create Pod {} in StatefulSet {} successful",
                                meta::name(pod),
                                meta::name(owner)
                            )
                        } else {
                            format!("Created pod: {}", meta::name(pod))
                        },
                        component,
                    });
                }
            }
        }
    }
}

/// A Job's end.
fn job_records(state: &State, wanted: &mut Vec<Record>) {
    let Some(jobs) = find_kind("Job") else {
        return;
    };
    for job in state.store.list(jobs, None) {
        let (kind, reason, message) = if has_condition(&job["status"], "Complete") {
            ("Normal", "Completed", "Job completed")
        } else if has_condition(&job["status"], "Failed") {
            (
                "Warning",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        } else {
            continue;
        };
        wanted.push(Record {
            involved: reference(jobs, job, None),
            kind,
            reason,
            message: message.to_string(),
            component: "job-controller",
        });
    }
}
