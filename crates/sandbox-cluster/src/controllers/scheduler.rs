//! The scheduler: a pod left `Pending` without a node (a claim it mounts was missing,
//! unbound or being deleted) is placed and started once its claims are usable; until then
//! its `PodScheduled` condition says why, in the scheduler's words. See
//! [`why_unschedulable`](super::super::admission::why_unschedulable) for the rules.

use jiff::Timestamp;
use serde_json::Value;

use super::super::admission::{hold_pending, start_pod, unschedulable_message, why_unschedulable};
use super::super::cluster::State;
use super::super::meta;
use kube_kinds::find_kind;

fn waits_for_a_node(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && meta::str_at(pod, &["spec", "nodeName"]).is_none_or(str::is_empty)
        && meta::str_at(pod, &["status", "phase"]).is_none_or(|phase| phase == "Pending")
}

fn scheduled_message(pod: &Value) -> Option<&str> {
    kube_kinds::condition(&pod["status"], "PodScheduled")
        .and_then(|condition| condition.get("message"))
        .and_then(Value::as_str)
}

/// Schedules the pods that can run now; keeps the others' reasons current.
pub fn reconcile(state: &mut State, now: Timestamp) -> bool {
    let Some(pods) = find_kind("Pod") else {
        return false;
    };
    let waiting: Vec<Value> = state
        .store
        .list(pods, None)
        .filter(|pod| waits_for_a_node(pod))
        .cloned()
        .collect();
    let now = meta::format_time(now);
    let mut changed = false;
    for mut pod in waiting {
        match why_unschedulable(&pod, &state.store) {
            None => start_pod(&mut pod, &mut state.identities, &state.store, &now),
            Some(reason) => {
                if scheduled_message(&pod) == Some(unschedulable_message(&reason).as_str()) {
                    continue;
                }
                hold_pending(&mut pod, &reason, &now);
            }
        }
        changed |= state.put(pods, pod);
    }
    changed
}
