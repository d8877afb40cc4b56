//! Namespace deletion: everything in a terminating namespace is deleted (finalizers and grace
//! periods still apply), and the namespace goes when it is empty.

use super::super::cluster::State;
use super::super::meta;
use super::super::store::ObjectKey;
use kube_kinds::find_kind;

/// Empties terminating namespaces and removes the empty ones.
pub fn reconcile(state: &mut State) -> bool {
    let Some(namespaces) = find_kind("Namespace") else {
        return false;
    };
    let terminating: Vec<String> = state
        .store
        .list(namespaces, None)
        .filter(|namespace| meta::is_deleting(namespace))
        .map(|namespace| meta::name(namespace).to_string())
        .collect();
    let mut changed = false;
    let served = state.served_kinds();
    for namespace in terminating {
        let mut remaining = 0;
        for kind in served.iter().copied().filter(|kind| kind.namespaced) {
            let contents: Vec<(String, bool)> = state
                .store
                .list(kind, Some(&namespace))
                .map(|object| (meta::name(object).to_string(), meta::is_deleting(object)))
                .collect();
            remaining += contents.len();
            for (name, deleting) in contents {
                if !deleting {
                    changed |= state.delete_for_controller(kind, &namespace, &name);
                }
            }
        }
        if remaining == 0 {
            let key = ObjectKey::new(namespaces, "", &namespace);
            if let Some(mut object) = state.store.get(&key).cloned() {
                // The namespace controller's own finalizer, in `spec`, goes last.
                meta::remove_at(&mut object, &["spec", "finalizers"]);
                if meta::finalizers(&object).is_empty() {
                    state.store.remove(&key);
                    changed = true;
                } else {
                    changed |= state.put(namespaces, object);
                }
            }
        }
    }
    changed
}
