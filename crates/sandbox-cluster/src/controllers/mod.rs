//! The control loops that make the sandbox behave like a cluster: each looks at the whole
//! state and moves it one step towards what the objects ask for, and the loop repeats until
//! nothing moves. Level-triggered, like the real controllers, so the order of events never
//! matters, only the state.
//!
//! - `namespaces`: a deleted namespace is emptied, then goes.
//! - `volumes`: claims bind to volumes; protection finalizers; reclaim policies.
//! - `scheduler`: pods left unscheduled (their claim missing, unbound or being deleted)
//!   are placed and started once their claims are usable.
//! - `pods`: a deleted pod goes when its grace period is over; a pod with a lifetime
//!   ([`LIFETIME_ANNOTATION`]) is deleted when it has lived it.
//! - `workloads`: Deployments keep a ReplicaSet per template, ReplicaSets keep their pods.
//! - `statefulsets`: StatefulSets keep their numbered pods and each pod's claims.
//! - `jobs`: Jobs keep up to `parallelism` pods until enough succeeded, or too many failed
//!   (the [`kubelet`](super::kubelet) runs those pods' commands).
//! - `garbage`: dependents of deleted owners go (or lose their owner, or go first); the
//!   objects of a deleted CustomResourceDefinition go.
//! - `events`: the `Event`s the scheduler, the kubelet and the controllers record.

mod events;
mod garbage;
mod jobs;
mod namespaces;
mod pods;
mod scheduler;
mod statefulsets;
mod volumes;
mod workloads;

pub use jobs::{COMPLETION_INDEX, COMPLETION_INDEX_ENV, TRACKING_FINALIZER, completion_index};
pub use pods::{LIFETIME_ANNOTATION, lifetime};
pub use statefulsets::{POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::watch;

use super::cluster::{Cluster, FieldValidation, State, WriteOptions};
use super::delete::{DeleteOptions, Deletion, Propagation};
use super::meta;
use super::store::ObjectKey;
use kube_kinds::Kind;

/// The field manager of the controllers' writes.
const MANAGER: &str = "kube-controller-manager";

/// After this many passes without settling, the loop waits for the next change: a guard
/// against two rules undoing each other forever.
const MAX_PASSES: usize = 50;

/// The longest the controllers wait between two passes.
const RESYNC: Duration = Duration::from_secs(1);

/// Runs the controllers until `shutdown` turns true (or its sender goes away).
pub async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = cluster.subscribe();
    loop {
        let (wake_at, revision) =
            cluster.write(|state| (reconcile(state, Timestamp::now()), state.store.revision()));
        // Something changed between the pass and now: look again before sleeping.
        if *changes.borrow_and_update() != revision {
            continue;
        }
        // Like a real controller's resync period, a pass at least every second, so that no
        // state waits for an unrelated change to be looked at (a Job pod's end recorded by
        // the kubelet was sometimes left uncounted, and its Job never completed).
        let sleep = wake_at
            .map_or(RESYNC, |at| {
                let wait = at.duration_since(Timestamp::now());
                Duration::try_from(wait)
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_millis(10))
            })
            .min(RESYNC);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Runs every controller until the state settles; returns when a timer (a pod's grace
/// period or lifetime) next needs a look.
pub fn reconcile(state: &mut State, now: Timestamp) -> Option<Timestamp> {
    for _ in 0..MAX_PASSES {
        let mut changed = false;
        changed |= namespaces::reconcile(state);
        changed |= volumes::reconcile(state);
        changed |= scheduler::reconcile(state, now);
        changed |= pods::reconcile(state, now);
        changed |= workloads::reconcile(state);
        changed |= statefulsets::reconcile(state);
        changed |= jobs::reconcile(state);
        changed |= garbage::reconcile(state);
        changed |= state.remove_undefined_objects();
        changed |= events::reconcile(state, now);
        if !changed {
            break;
        }
    }
    pods::next_deadline(state, now)
}

/// Whether a pod is Ready.
fn is_ready(pod: &Value) -> bool {
    kube_kinds::has_condition(&pod["status"], "Ready")
}

/// The kind an object key belongs to, among the kinds served (a custom resource's too).
fn kind_of(served: &[&'static Kind], key: &ObjectKey) -> Option<&'static Kind> {
    served.iter().copied().find(|kind| key.is(kind))
}

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_manager: MANAGER.into(),
        field_validation: FieldValidation::Ignore,
        force: false,
    }
}

impl State {
    /// Stores a controller's change to an object, if it changes anything; an object being
    /// deleted whose last finalizer this removes is deleted. Returns whether it stored.
    fn put(&mut self, kind: &Kind, object: Value) -> bool {
        let key = ObjectKey::of(kind, &object);
        let Some(current) = self.store.get(&key) else {
            return false;
        };
        if meta::without_volatile(current) == meta::without_volatile(&object) {
            return false;
        }
        let finished = meta::deletion_complete(&object);
        self.store.insert(key.clone(), object);
        if finished {
            self.store.remove(&key);
        }
        true
    }

    /// Creates an object on a controller's behalf; returns whether it did.
    fn create_for_controller(&mut self, kind: &'static Kind, namespace: &str, body: Value) -> bool {
        self.create(kind, namespace, body, &options()).is_ok()
    }

    /// Deletes an object on a controller's behalf, in the background; returns whether
    /// anything changed.
    fn delete_for_controller(&mut self, kind: &'static Kind, namespace: &str, name: &str) -> bool {
        self.delete_propagating(kind, namespace, name, Propagation::Background)
    }

    /// Deletes an object on a controller's behalf; returns whether anything changed.
    fn delete_propagating(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> bool {
        let before = self.store.revision();
        let options = DeleteOptions {
            propagation: Some(propagation),
            ..DeleteOptions::default()
        };
        matches!(
            self.delete(kind, namespace, name, &options, false),
            Ok(Deletion::Gone(_) | Deletion::Pending(_))
        ) && self.store.revision() != before
    }
}

#[cfg(test)]
mod tests;
