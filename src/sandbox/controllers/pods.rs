//! Pod termination: a deleted pod goes once its (capped) grace period is over, as the kubelet
//! would delete it after stopping its containers.

use jiff::Timestamp;
use serde_json::Value;

use super::super::cluster::State;
use super::super::meta;
use super::super::store::ObjectKey;
use crate::kube::find_kind;

fn deadline(pod: &Value) -> Option<Timestamp> {
    meta::str_at(pod, &["metadata", "deletionTimestamp"]).and_then(meta::parse_time)
}

/// Removes the pods whose grace period is over and that no finalizer holds.
pub fn reconcile(state: &mut State, now: Timestamp) -> bool {
    let Some(kind) = find_kind("Pod") else {
        return false;
    };
    let done: Vec<ObjectKey> = state
        .store
        .list(kind, None)
        .filter(|pod| deadline(pod).is_some_and(|at| at <= now) && meta::finalizers(pod).is_empty())
        .map(|pod| ObjectKey::of(kind, pod))
        .collect();
    for key in &done {
        state.store.remove(key);
    }
    !done.is_empty()
}

/// When the next terminating pod is due.
pub fn next_deadline(state: &State, now: Timestamp) -> Option<Timestamp> {
    let kind = find_kind("Pod")?;
    state
        .store
        .list(kind, None)
        .filter(|pod| meta::finalizers(pod).is_empty())
        .filter_map(deadline)
        .filter(|at| *at > now)
        .min()
}
