//! Pods' ends: a deleted pod goes once its (capped) grace period is over, as the kubelet
//! would delete it after stopping its containers; a pod annotated with a lifetime
//! ([`LIFETIME_ANNOTATION`]) is deleted, gracefully, once that lifetime has passed since its
//! creation, as JupyterHub's culler stops an idle user server.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::super::cluster::State;
use super::super::meta;
use super::super::store::ObjectKey;
use crate::duration::parse_duration;
use kube_kinds::{Kind, find_kind};

/// The annotation that gives a pod a lifetime, a human duration (`8s`, `2m`): the sandbox
/// deletes the pod once `metadata.creationTimestamp` plus that has passed, also after a
/// restart from a state file. A sandbox's own stand-in for JupyterHub's culler; a real
/// cluster ignores it.
pub const LIFETIME_ANNOTATION: &str = "sandbox.runbook.dev/lifetime";

fn deadline(pod: &Value) -> Option<Timestamp> {
    meta::str_at(pod, &["metadata", "deletionTimestamp"]).and_then(meta::parse_time)
}

/// The lifetime a pod's annotation asks for: `None` without the annotation, an error
/// message when it is not a duration.
pub fn lifetime(pod: &Value) -> Option<Result<Duration, String>> {
    pod.pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(LIFETIME_ANNOTATION))
        .map(|value| match value.as_str() {
            Some(text) => parse_duration(text),
            None => Err(format!("`{value}` is not a duration")),
        })
}

/// When a pod's lifetime runs out, if it has one.
fn lifetime_end(pod: &Value) -> Option<Timestamp> {
    let lifetime = lifetime(pod)?.ok()?;
    let created =
        meta::str_at(pod, &["metadata", "creationTimestamp"]).and_then(meta::parse_time)?;
    created.checked_add(lifetime).ok()
}

/// Deletes the pods whose lifetime is over, then removes those whose grace period is over
/// and that no finalizer holds.
pub fn reconcile(state: &mut State, now: Timestamp) -> bool {
    let Some(kind) = find_kind("Pod") else {
        return false;
    };
    let mut changed = expire(state, kind, now);
    let done: Vec<ObjectKey> = state
        .store
        .list(kind, None)
        .filter(|pod| deadline(pod).is_some_and(|at| at <= now) && meta::finalizers(pod).is_empty())
        .map(|pod| ObjectKey::of(kind, pod))
        .collect();
    for key in &done {
        state.store.remove(key);
    }
    changed |= !done.is_empty();
    changed
}

/// Deletes, with their grace period, the pods that have lived their lifetime.
fn expire(state: &mut State, kind: &'static Kind, now: Timestamp) -> bool {
    let expired: Vec<(String, String)> = state
        .store
        .list(kind, None)
        .filter(|pod| !meta::is_deleting(pod) && lifetime_end(pod).is_some_and(|end| end <= now))
        .map(|pod| {
            (
                meta::namespace(pod).to_string(),
                meta::name(pod).to_string(),
            )
        })
        .collect();
    let mut changed = false;
    for (namespace, name) in expired {
        changed |= state.delete_for_controller(kind, &namespace, &name);
    }
    changed
}

/// When the next terminating pod is due, or the next pod's lifetime runs out.
pub fn next_deadline(state: &State, now: Timestamp) -> Option<Timestamp> {
    let kind = find_kind("Pod")?;
    let terminating = state
        .store
        .list(kind, None)
        .filter(|pod| meta::finalizers(pod).is_empty())
        .filter_map(deadline);
    let expiring = state
        .store
        .list(kind, None)
        .filter(|pod| !meta::is_deleting(pod))
        .filter_map(lifetime_end);
    terminating.chain(expiring).filter(|at| *at > now).min()
}
