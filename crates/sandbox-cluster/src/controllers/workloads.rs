//! Deployments and ReplicaSets. A Deployment owns one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, scaled to `spec.replicas` (older ones to 0 at once:
//! the sandbox has no rolling update); a ReplicaSet keeps `spec.replicas` pods named
//! `<replicaset>-<5 random characters>`. Statuses follow. Jobs are in [`super::jobs`].

use serde_json::{Value, json};

use super::super::identities::safe_hash;
use super::super::meta;
use super::super::store::ObjectKey;
use super::{State, is_ready};
use kube_kinds::{Kind, find_kind};

/// Runs the Deployment and ReplicaSet controllers.
pub fn reconcile(state: &mut State) -> bool {
    let (Some(deployments), Some(replica_sets), Some(pods)) = (
        find_kind("Deployment"),
        find_kind("ReplicaSet"),
        find_kind("Pod"),
    ) else {
        return false;
    };
    let mut changed = false;
    let all: Vec<Value> = state
        .store
        .list(deployments, None)
        .filter(|object| !meta::is_deleting(object))
        .cloned()
        .collect();
    for deployment in all {
        changed |= sync_deployment(state, deployments, replica_sets, deployment);
    }
    let all: Vec<Value> = state
        .store
        .list(replica_sets, None)
        .filter(|object| !meta::is_deleting(object))
        .cloned()
        .collect();
    for replica_set in all {
        changed |= sync_replica_set(state, replica_sets, pods, replica_set);
    }
    changed
}

pub(super) fn owned_by<'a>(
    state: &'a State,
    kind: &'a Kind,
    owner: &'a Value,
) -> impl Iterator<Item = &'a Value> + 'a {
    let uid = meta::uid(owner);
    state
        .store
        .list(kind, Some(meta::namespace(owner)))
        .filter(move |object| meta::controller_uid(object).as_deref() == Some(uid))
}

pub(super) fn owner_reference(kind: &Kind, owner: &Value) -> Value {
    json!([{
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "name": meta::name(owner),
        "uid": meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

pub(super) fn replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn status_count(object: &Value, field: &str) -> i64 {
    object
        .pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn sync_deployment(
    state: &mut State,
    deployments: &'static Kind,
    replica_sets: &'static Kind,
    deployment: Value,
) -> bool {
    let namespace = meta::namespace(&deployment).to_string();
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let hash = safe_hash(&template.to_string());
    let name = format!("{}-{hash}", meta::name(&deployment));
    let wanted = replicas(&deployment);
    let owned: Vec<Value> = owned_by(state, replica_sets, &deployment)
        .cloned()
        .collect();
    let mut changed = false;
    if !owned
        .iter()
        .any(|replica_set| meta::name(replica_set) == name)
    {
        let revision = latest_revision(&owned) + 1;
        let replica_set = NewReplicaSet {
            kind: replica_sets,
            owner_kind: deployments,
            deployment: &deployment,
            template,
            hash: &hash,
            revision,
        }
        .object();
        changed |= state.create_for_controller(replica_sets, &namespace, replica_set);
    }
    // Every replica set but the current one scales down to zero.
    for mut replica_set in owned {
        let target = if meta::name(&replica_set) == name {
            wanted
        } else {
            0
        };
        if replicas(&replica_set) != target {
            replica_set["spec"]["replicas"] = json!(target);
            changed |= state.put(replica_sets, replica_set);
        }
    }
    let status = deployment_status(state, replica_sets, &deployment, &name);
    let mut updated_deployment = deployment;
    updated_deployment["status"] = status;
    changed | state.put(deployments, updated_deployment)
}

/// The highest `deployment.kubernetes.io/revision` of a deployment's replica sets (0 for
/// none).
fn latest_revision(replica_sets: &[Value]) -> i64 {
    replica_sets
        .iter()
        .filter_map(|replica_set| {
            meta::str_at(
                replica_set,
                &[
                    "metadata",
                    "annotations",
                    "deployment.kubernetes.io/revision",
                ],
            )
        })
        .filter_map(|revision| revision.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
}

/// The replica set a deployment's controller creates for a new pod template.
struct NewReplicaSet<'a> {
    kind: &'static Kind,
    owner_kind: &'static Kind,
    deployment: &'a Value,
    /// The deployment's pod template.
    template: Value,
    /// The template's hash, in the set's name, labels and selector.
    hash: &'a str,
    revision: i64,
}

impl NewReplicaSet<'_> {
    fn object(self) -> Value {
        let deployment = self.deployment;
        let wanted = replicas(deployment);
        let mut pod_template = self.template;
        meta::set_at(
            &mut pod_template,
            &["metadata", "labels", "pod-template-hash"],
            json!(self.hash),
        );
        let mut selector = deployment
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(json!({}));
        meta::set_at(
            &mut selector,
            &["matchLabels", "pod-template-hash"],
            json!(self.hash),
        );
        json!({
            "apiVersion": self.kind.api_version,
            "kind": self.kind.kind,
            "metadata": {
                "name": format!("{}-{}", meta::name(deployment), self.hash),
                "namespace": meta::namespace(deployment),
                "labels": pod_template["metadata"]["labels"],
                "annotations": {
                    "deployment.kubernetes.io/revision": self.revision.to_string(),
                    "deployment.kubernetes.io/desired-replicas": wanted.to_string(),
                    "deployment.kubernetes.io/max-replicas": wanted.to_string(),
                },
                "ownerReferences": owner_reference(self.owner_kind, deployment),
            },
            "spec": {"replicas": wanted, "selector": selector, "template": pod_template},
        })
    }
}

/// A deployment's status, from its replica sets as they are now (`current` is the one of its
/// pod template).
fn deployment_status(
    state: &State,
    replica_sets: &'static Kind,
    deployment: &Value,
    current: &str,
) -> Value {
    let wanted = replicas(deployment);
    let owned: Vec<Value> = owned_by(state, replica_sets, deployment).cloned().collect();
    let sum = |field: &str| {
        owned
            .iter()
            .map(|replica_set| status_count(replica_set, field))
            .sum::<i64>()
    };
    let updated = owned
        .iter()
        .find(|replica_set| meta::name(replica_set) == current)
        .map_or(0, |replica_set| status_count(replica_set, "replicas"));
    let available = sum("availableReplicas");
    let mut status = json!({
        "observedGeneration": deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": sum("replicas"),
        "updatedReplicas": updated,
        "readyReplicas": sum("readyReplicas"),
        "availableReplicas": available,
    });
    if wanted > available {
        status["unavailableReplicas"] = json!(wanted - available);
    }
    let (available_status, available_reason, available_message) = if available >= wanted {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let (progressing_reason, progressing_message) = if updated >= wanted && available >= wanted {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet {current:?} has successfully progressed."),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet {current:?} is progressing."),
        )
    };
    status["conditions"] = json!([
        condition(
            deployment,
            "Available",
            available_status,
            available_reason,
            available_message
        ),
        condition(
            deployment,
            "Progressing",
            "True",
            progressing_reason,
            &progressing_message
        ),
    ]);
    // Zero counts are omitted, as the API's omitempty does.
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, value| value != &json!(0));
    }
    status
}

/// A condition that keeps its timestamps while its status and reason stay the same (else
/// every pass would change the object, and the loop would never settle).
fn condition(object: &Value, kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let previous = kube_kinds::condition(&object["status"], kind);
    let now = meta::now();
    let same = previous.is_some_and(|previous| {
        previous.get("status").and_then(Value::as_str) == Some(status)
            && previous.get("reason").and_then(Value::as_str) == Some(reason)
    });
    let (transition, update) = match previous {
        Some(previous) if same => (
            previous
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or(json!(now)),
            previous
                .get("lastUpdateTime")
                .cloned()
                .unwrap_or(json!(now)),
        ),
        _ => (json!(now), json!(now)),
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
}

fn sync_replica_set(
    state: &mut State,
    replica_sets: &'static Kind,
    pods: &'static Kind,
    replica_set: Value,
) -> bool {
    let namespace = meta::namespace(&replica_set).to_string();
    let wanted = replicas(&replica_set);
    let mut active: Vec<Value> = owned_by(state, pods, &replica_set)
        .filter(|pod| !meta::is_deleting(pod))
        .cloned()
        .collect();
    let mut changed = false;
    let count = i64::try_from(active.len()).unwrap_or(i64::MAX);
    if count < wanted {
        let template = replica_set
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(json!({}));
        for _ in count..wanted {
            let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
            metadata["generateName"] = json!(format!("{}-", meta::name(&replica_set)));
            metadata["namespace"] = json!(namespace);
            metadata["ownerReferences"] = owner_reference(replica_sets, &replica_set);
            let pod = json!({
                "apiVersion": pods.api_version,
                "kind": pods.kind,
                "metadata": metadata,
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
            });
            changed |= state.create_for_controller(pods, &namespace, pod);
        }
    } else if count > wanted {
        // The newest pods go first.
        active.sort_by(|a, b| {
            let key = |pod: &Value| {
                (
                    meta::str_at(pod, &["metadata", "creationTimestamp"])
                        .unwrap_or_default()
                        .to_string(),
                    meta::name(pod).to_string(),
                )
            };
            key(b).cmp(&key(a))
        });
        let surplus = usize::try_from(count - wanted).unwrap_or(0);
        for pod in active.iter().take(surplus) {
            changed |= state.delete_for_controller(pods, &namespace, meta::name(pod));
        }
    }
    let current: Vec<Value> = owned_by(state, pods, &replica_set)
        .filter(|pod| !meta::is_deleting(pod))
        .cloned()
        .collect();
    let ready = current.iter().filter(|pod| is_ready(pod)).count();
    let mut status = json!({
        "replicas": current.len(),
        "fullyLabeledReplicas": current.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": replica_set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    if let Some(map) = status.as_object_mut() {
        // `replicas` is always shown; the other counts are omitted when zero.
        map.retain(|field, value| field == "replicas" || value != &json!(0));
    }
    let key = ObjectKey::of(replica_sets, &replica_set);
    if let Some(mut latest) = state.store.get(&key).cloned() {
        latest["status"] = status;
        changed |= state.put(replica_sets, latest);
    }
    changed
}
