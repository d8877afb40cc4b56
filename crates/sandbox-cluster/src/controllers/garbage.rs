//! The garbage collector: objects whose owners are all gone are deleted (background
//! propagation); owners deleted in the foreground wait for their dependents; owners deleted
//! with `Orphan` first strip their reference from their dependents.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::delete::{FOREGROUND, ORPHAN, Propagation};
use super::super::meta;
use super::super::store::ObjectKey;
use super::{State, kind_of};
use kube_kinds::Kind;

/// Runs the garbage collector once over every object.
pub fn reconcile(state: &mut State) -> bool {
    let served = state.served_kinds();
    let objects: Vec<(ObjectKey, Value)> = state
        .store
        .all()
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect();
    let mut changed = collect_orphans(state, &served, &objects);
    for (key, object) in objects
        .iter()
        .filter(|(_, object)| meta::is_deleting(object))
    {
        let Some(kind) = kind_of(&served, key) else {
            continue;
        };
        let dependents = dependents_of(state, meta::uid(object));
        if meta::has_finalizer(object, ORPHAN) {
            changed |= orphan_dependents(state, &served, meta::uid(object), dependents);
            changed |= drop_finalizer(state, kind, key, ORPHAN);
        } else if meta::has_finalizer(object, FOREGROUND) {
            if dependents.is_empty() {
                changed |= drop_finalizer(state, kind, key, FOREGROUND);
            }
            for (dependent_key, dependent) in dependents {
                if let Some(dependent_kind) = kind_of(&served, &dependent_key)
                    && !meta::is_deleting(&dependent)
                {
                    // Dependents of a foreground deletion go in the foreground too, so the
                    // owner outlives the whole tree below it.
                    changed |= state.delete_propagating(
                        dependent_kind,
                        &dependent_key.namespace,
                        &dependent_key.name,
                        Propagation::Foreground,
                    );
                }
            }
        }
    }
    changed
}

/// Deletes the objects whose owners are all gone, and drops the references to gone owners
/// from objects that still have one.
fn collect_orphans(
    state: &mut State,
    served: &[&'static Kind],
    objects: &[(ObjectKey, Value)],
) -> bool {
    let uids: BTreeSet<String> = objects
        .iter()
        .map(|(_, object)| meta::uid(object).to_string())
        .collect();
    let mut changed = false;
    for (key, object) in objects {
        let Some(kind) = kind_of(served, key) else {
            continue;
        };
        let owners = meta::owner_references(object);
        let alive: Vec<Value> = owners
            .iter()
            .filter(|owner| {
                owner
                    .get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|uid| uids.contains(uid))
            })
            .cloned()
            .collect();
        if owners.is_empty() || alive.len() == owners.len() {
            continue;
        }
        if alive.is_empty() {
            if !meta::is_deleting(object) {
                changed |= state.delete_for_controller(kind, &key.namespace, &key.name);
            }
        } else {
            // Some owners remain: only the dangling references go.
            let mut updated = object.clone();
            meta::set_at(
                &mut updated,
                &["metadata", "ownerReferences"],
                Value::Array(alive),
            );
            changed |= state.put(kind, updated);
        }
    }
    changed
}

/// The objects that name `uid` among their owners.
fn dependents_of(state: &State, uid: &str) -> Vec<(ObjectKey, Value)> {
    state
        .store
        .all()
        .filter(|(_, dependent)| {
            meta::owner_references(dependent)
                .iter()
                .any(|owner| owner.get("uid").and_then(Value::as_str) == Some(uid))
        })
        .map(|(key, dependent)| (key.clone(), dependent.clone()))
        .collect()
}

/// Removes the owner `uid` from its dependents' references (an `Orphan` deletion).
fn orphan_dependents(
    state: &mut State,
    served: &[&'static Kind],
    uid: &str,
    dependents: Vec<(ObjectKey, Value)>,
) -> bool {
    let mut changed = false;
    for (dependent_key, mut dependent) in dependents {
        let Some(dependent_kind) = kind_of(served, &dependent_key) else {
            continue;
        };
        let remaining: Vec<Value> = meta::owner_references(&dependent)
            .into_iter()
            .filter(|owner| owner.get("uid").and_then(Value::as_str) != Some(uid))
            .collect();
        if remaining.is_empty() {
            meta::remove_at(&mut dependent, &["metadata", "ownerReferences"]);
        } else {
            meta::set_at(
                &mut dependent,
                &["metadata", "ownerReferences"],
                Value::Array(remaining),
            );
        }
        changed |= state.put(dependent_kind, dependent);
    }
    changed
}

/// Drops a finalizer the collector handled from the object as it is now.
fn drop_finalizer(
    state: &mut State,
    kind: &'static kube_kinds::Kind,
    key: &ObjectKey,
    finalizer: &str,
) -> bool {
    match state.store.get(key).cloned() {
        Some(mut current) => {
            meta::remove_finalizer(&mut current, finalizer);
            state.put(kind, current)
        }
        None => false,
    }
}
