//! StatefulSets. A StatefulSet keeps `spec.replicas` pods named `<set>-<ordinal>` (ordinals
//! from `spec.ordinals.start`, 0 by default), each with a claim `<template>-<set>-<ordinal>`
//! per `volumeClaimTemplates` entry, created before the pod. Claims stay (the default
//! `persistentVolumeClaimRetentionPolicy`, Retain) unless the policy says `Delete`: then the
//! set (`whenDeleted`) or the pod of an ordinal scaled away (`whenScaled`) owns them, and the
//! garbage collector deletes them after their owner, as a real controller arranges it.
//!
//! With the default `OrderedReady` policy, as a real controller: a pod is created only once
//! every lower ordinal is Ready, a scale down deletes the highest ordinal first and waits
//! for it to be gone before the next, and a new template replaces the pods from the highest
//! ordinal down (to `updateStrategy.rollingUpdate.partition`), one at a time; `Parallel`
//! creates and deletes without waiting. `OnDelete` leaves pods of an old template alone.
//! Pods are always created from the current template: the sandbox keeps no
//! ControllerRevisions, so a pod below the partition that is deleted comes back updated.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde_json::{Value, json};

use super::super::identities::safe_hash;
use super::super::meta;
use super::super::store::ObjectKey;
use super::workloads::{owned_by, owner_reference, replicas};
use super::{State, is_ready};
use kube_kinds::{Kind, find_kind};

/// The label naming a StatefulSet's pod (a Service can select one pod by it).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label giving a StatefulSet's pod its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the revision (template) a pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

struct Kinds {
    sets: &'static Kind,
    pods: &'static Kind,
    claims: &'static Kind,
}

/// Runs the StatefulSet controller.
pub fn reconcile(state: &mut State) -> bool {
    let (Some(sets), Some(pods), Some(claims)) = (
        find_kind("StatefulSet"),
        find_kind("Pod"),
        find_kind("PersistentVolumeClaim"),
    ) else {
        return false;
    };
    let kinds = Kinds { sets, pods, claims };
    let all: Vec<Value> = state
        .store
        .list(sets, None)
        .filter(|object| !meta::is_deleting(object))
        .cloned()
        .collect();
    let mut changed = false;
    for set in all {
        changed |= sync(state, &kinds, &set);
        changed |= update_status(state, &kinds, &set);
    }
    changed
}

fn spec_str<'a>(set: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    let mut full = vec!["spec"];
    full.extend_from_slice(path);
    meta::str_at(set, &full).unwrap_or(default)
}

fn spec_int(set: &Value, pointer: &str) -> i64 {
    set.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// `<set>-<hash of the template>`, as the revision label reads on a real cluster.
fn revision(set: &Value) -> String {
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    format!("{}-{}", meta::name(set), safe_hash(&template.to_string()))
}

/// The ordinal in a pod's name, if the pod is named as this set's pods are.
fn ordinal(set: &Value, pod: &Value) -> Option<i64> {
    meta::name(pod)
        .strip_prefix(meta::name(set))?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn claim_templates(set: &Value) -> Vec<Value> {
    set.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn claim_name(template: &Value, set: &Value, ordinal: i64) -> String {
    format!("{}-{}-{ordinal}", meta::name(template), meta::name(set))
}

/// The set's pods by ordinal.
fn pods_of(state: &State, kinds: &Kinds, set: &Value) -> BTreeMap<i64, Value> {
    owned_by(state, kinds.pods, set)
        .filter_map(|pod| Some((ordinal(set, pod)?, pod.clone())))
        .collect()
}

/// Moves the set one step: creates missing claims and pods, deletes surplus and outdated
/// pods. Returns whether anything changed.
fn sync(state: &mut State, kinds: &Kinds, set: &Value) -> bool {
    let ordered = spec_str(set, &["podManagementPolicy"], "OrderedReady") != "Parallel";
    let start = spec_int(set, "/spec/ordinals/start");
    let wanted = start..start + replicas(set).max(0);
    let mut pods = pods_of(state, kinds, set);
    let mut changed = own_claims(state, kinds, set, &wanted, &pods);
    // Creation, lowest ordinal first.
    for ordinal in wanted.clone() {
        let pod = match pods.entry(ordinal) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                changed |= create_pod(state, kinds, set, ordinal);
                let Some(pod) = pods_of(state, kinds, set).remove(&ordinal) else {
                    // Refused (an invalid claim template, or a pod of that name that the
                    // set does not own: orphans are not adopted): nothing above it either.
                    return changed;
                };
                entry.insert(pod)
            }
        };
        if ordered && (meta::is_deleting(pod) || !is_ready(pod)) {
            return changed;
        }
    }
    let terminating = pods.values().any(meta::is_deleting);
    // Scale down, highest ordinal first.
    let condemned: Vec<&Value> = pods
        .iter()
        .rev()
        .filter(|(ordinal, pod)| !wanted.contains(ordinal) && !meta::is_deleting(pod))
        .map(|(_, pod)| pod)
        .collect();
    if !condemned.is_empty() {
        if ordered && terminating {
            return changed;
        }
        let count = if ordered { 1 } else { condemned.len() };
        let names: Vec<String> = condemned
            .iter()
            .take(count)
            .map(|pod| meta::name(pod).to_string())
            .collect();
        for name in names {
            changed |= state.delete_for_controller(kinds.pods, meta::namespace(set), &name);
        }
        return changed;
    }
    // Rolling update, highest ordinal first, one pod at a time once all are Ready.
    if spec_str(set, &["updateStrategy", "type"], "RollingUpdate") != "RollingUpdate"
        || terminating
        || pods.values().any(|pod| !is_ready(pod))
    {
        return changed;
    }
    let partition = start + spec_int(set, "/spec/updateStrategy/rollingUpdate/partition");
    let revision = revision(set);
    let outdated = pods.iter().rev().find(|(ordinal, pod)| {
        **ordinal >= partition
            && meta::str_at(pod, &["metadata", "labels", REVISION_LABEL]) != Some(&revision)
    });
    if let Some((_, pod)) = outdated {
        let name = meta::name(pod).to_string();
        changed |= state.delete_for_controller(kinds.pods, meta::namespace(set), &name);
    }
    changed
}

/// Gives the set's claims the owners its retention policy asks for: the set itself with
/// `whenDeleted: Delete`, the pod of an ordinal outside `wanted` with `whenScaled: Delete`,
/// neither with Retain (a policy changed back to Retain takes them away). Other owners stay.
fn own_claims(
    state: &mut State,
    kinds: &Kinds,
    set: &Value,
    wanted: &Range<i64>,
    pods: &BTreeMap<i64, Value>,
) -> bool {
    let deletes = |field: &str| {
        spec_str(
            set,
            &["persistentVolumeClaimRetentionPolicy", field],
            "Retain",
        ) == "Delete"
    };
    let (when_deleted, when_scaled) = (deletes("whenDeleted"), deletes("whenScaled"));
    let ours: BTreeSet<&str> = pods
        .values()
        .map(meta::uid)
        .chain([meta::uid(set)])
        .collect();
    let prefixes: Vec<String> = claim_templates(set)
        .iter()
        .map(|template| format!("{}-{}-", meta::name(template), meta::name(set)))
        .collect();
    let claims: Vec<(i64, Value)> = state
        .store
        .list(kinds.claims, Some(meta::namespace(set)))
        .filter(|claim| !meta::is_deleting(claim))
        .filter_map(|claim| {
            let ordinal = prefixes.iter().find_map(|prefix| {
                meta::name(claim)
                    .strip_prefix(prefix.as_str())?
                    .parse()
                    .ok()
            })?;
            Some((ordinal, claim.clone()))
        })
        .collect();
    let mut changed = false;
    for (ordinal, mut claim) in claims {
        let mut owners: Vec<Value> = meta::owner_references(&claim)
            .into_iter()
            .filter(|owner| {
                owner
                    .get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(|uid| !ours.contains(uid))
            })
            .collect();
        if when_deleted {
            owners.push(json!({
                "apiVersion": kinds.sets.api_version,
                "kind": kinds.sets.kind,
                "name": meta::name(set),
                "uid": meta::uid(set),
                "blockOwnerDeletion": true,
            }));
        }
        if when_scaled
            && !wanted.contains(&ordinal)
            && let Some(pod) = pods.get(&ordinal)
        {
            owners.push(json!({
                "apiVersion": kinds.pods.api_version,
                "kind": kinds.pods.kind,
                "name": meta::name(pod),
                "uid": meta::uid(pod),
            }));
        }
        if owners == meta::owner_references(&claim) {
            continue;
        }
        if owners.is_empty() {
            meta::remove_at(&mut claim, &["metadata", "ownerReferences"]);
        } else {
            meta::set_at(
                &mut claim,
                &["metadata", "ownerReferences"],
                Value::Array(owners),
            );
        }
        changed |= state.put(kinds.claims, claim);
    }
    changed
}

/// Creates the claims of `ordinal` that are missing, then its pod. Returns whether anything
/// was created.
fn create_pod(state: &mut State, kinds: &Kinds, set: &Value, ordinal: i64) -> bool {
    let namespace = meta::namespace(set).to_string();
    let set_name = meta::name(set);
    let name = format!("{set_name}-{ordinal}");
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut changed = false;
    let mut volumes: Vec<Value> = template
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for claim_template in claim_templates(set) {
        let claim = claim_name(&claim_template, set, ordinal);
        let key = ObjectKey::new(kinds.claims, &namespace, &claim);
        if state.store.get(&key).is_none() {
            let mut labels = claim_template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            if let Some(selected) = set
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
            {
                for (label, value) in selected {
                    meta::set_at(&mut labels, &[label], value.clone());
                }
            }
            let mut metadata = claim_template.get("metadata").cloned().unwrap_or(json!({}));
            metadata["name"] = json!(claim);
            metadata["namespace"] = json!(namespace);
            metadata["labels"] = labels;
            let body = json!({
                "apiVersion": kinds.claims.api_version,
                "kind": kinds.claims.kind,
                "metadata": metadata,
                "spec": claim_template.get("spec").cloned().unwrap_or(json!({})),
            });
            if !state.create_for_controller(kinds.claims, &namespace, body) {
                return changed;
            }
            changed = true;
        }
        let volume_name = meta::name(&claim_template).to_string();
        volumes.retain(|volume| volume.get("name").and_then(Value::as_str) != Some(&volume_name));
        volumes.push(json!({"name": volume_name, "persistentVolumeClaim": {"claimName": claim}}));
    }
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace);
    metadata["ownerReferences"] = owner_reference(kinds.sets, set);
    for (label, value) in [
        (REVISION_LABEL, revision(set)),
        (POD_NAME_LABEL, name.clone()),
        (POD_INDEX_LABEL, ordinal.to_string()),
    ] {
        meta::set_at(&mut metadata, &["labels", label], json!(value));
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(name);
    let service = spec_str(set, &["serviceName"], "");
    if !service.is_empty() {
        spec["subdomain"] = json!(service);
    }
    if !volumes.is_empty() {
        spec["volumes"] = Value::Array(volumes);
    }
    let pod = json!({
        "apiVersion": kinds.pods.api_version,
        "kind": kinds.pods.kind,
        "metadata": metadata,
        "spec": spec,
    });
    changed | state.create_for_controller(kinds.pods, &namespace, pod)
}

/// The set's status, from its pods as they are now.
fn update_status(state: &mut State, kinds: &Kinds, set: &Value) -> bool {
    let Some(mut latest) = state.store.get(&ObjectKey::of(kinds.sets, set)).cloned() else {
        return false;
    };
    let pods: Vec<Value> = pods_of(state, kinds, set)
        .into_values()
        .filter(|pod| !meta::is_deleting(pod))
        .collect();
    let update_revision = revision(set);
    let with_revision = |revision: &str| {
        pods.iter()
            .filter(|pod| {
                meta::str_at(pod, &["metadata", "labels", REVISION_LABEL]) == Some(revision)
            })
            .count()
    };
    let updated = with_revision(&update_revision);
    // The current revision moves to the update revision once every pod has it.
    let current_revision = match meta::str_at(set, &["status", "currentRevision"]) {
        Some(previous) if updated < pods.len() && with_revision(previous) > 0 => {
            previous.to_string()
        }
        _ => update_revision.clone(),
    };
    let ready = pods.iter().filter(|pod| is_ready(pod)).count();
    let mut status = json!({
        "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": pods.len(),
        "readyReplicas": ready,
        "currentReplicas": with_revision(&current_revision),
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": 0,
    });
    if let Some(map) = status.as_object_mut() {
        // Zero counts are omitted, as the API's omitempty does.
        map.retain(|field, value| {
            matches!(field.as_str(), "replicas" | "collisionCount") || value != &json!(0)
        });
        // Not omitempty in the API: always there.
        map.insert("availableReplicas".into(), json!(ready));
    }
    latest["status"] = status;
    state.put(kinds.sets, latest)
}
