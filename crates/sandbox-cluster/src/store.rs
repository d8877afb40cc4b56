//! The sandbox's etcd: objects by kind, namespace and name, one global `resourceVersion`
//! that every write increments, and a bounded history of changes that watches resume from.
//!
//! The store knows nothing of Kubernetes rules (validation, finalizers, defaults); those
//! live in the verbs that call it. It only guarantees that every change gets a new
//! `resourceVersion` and is recorded once, in order.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::meta;
use kube_kinds::Kind;

/// Where an object lives: its resource and, for namespaced kinds, its namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The API group, `""` for the core group.
    pub group: &'static str,
    /// The resource, `pods`.
    pub plural: &'static str,
    /// `""` for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` of `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub fn new(kind: &Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: kind.group,
            plural: kind.plural,
            namespace: if kind.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    /// The key of a stored object of `kind`.
    pub fn of(kind: &Kind, object: &Value) -> Self {
        ObjectKey::new(kind, meta::namespace(object), meta::name(object))
    }

    /// Whether the key is of `kind`.
    pub fn is(&self, kind: &Kind) -> bool {
        self.group == kind.group && self.plural == kind.plural
    }
}

/// What happened to an object, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed from the store.
    Deleted,
}

impl ChangeType {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The `resourceVersion` the change produced.
    pub revision: u64,
    /// Added, modified or deleted.
    pub change: ChangeType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for a deletion: its last state, with the new version).
    pub object: Value,
    /// The object before the change; watches with selectors need it to tell an object that
    /// stopped matching (sent as `DELETED`) from one that never matched.
    pub previous: Option<Value>,
}

/// The history no longer reaches back to the requested version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    /// The version asked for.
    pub requested: u64,
    /// The oldest version a watch can still start from.
    pub oldest: u64,
}

/// Objects and their history.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    revision: u64,
    history: VecDeque<Change>,
    history_limit: usize,
}

impl Store {
    /// An empty store that keeps the last `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        Store {
            objects: BTreeMap::new(),
            revision: 0,
            history: VecDeque::new(),
            history_limit,
        }
    }

    /// The current (latest) `resourceVersion`.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Moves the `resourceVersion` counter up to `revision` (never down), so that versions a
    /// client saw before a restart are not handed out again.
    pub fn advance_to(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `kind`, in `namespace` if given, ordered by namespace and name.
    pub fn list<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(key, _)| {
                key.is(kind) && namespace.is_none_or(|namespace| key.namespace == namespace)
            })
            .map(|(_, object)| object)
    }

    /// Every object with its key.
    pub fn all(&self) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.objects.iter()
    }

    /// Stores a new object; returns it with its `resourceVersion`.
    pub fn insert(&mut self, key: ObjectKey, object: Value) -> Value {
        let previous = self.objects.get(&key).cloned();
        let change = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(key, object, previous, change)
    }

    /// Removes an object; returns its last state with the deletion's `resourceVersion`.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Value> {
        let object = self.objects.remove(key)?;
        Some(self.record(
            key.clone(),
            object.clone(),
            Some(object),
            ChangeType::Deleted,
        ))
    }

    fn record(
        &mut self,
        key: ObjectKey,
        mut object: Value,
        previous: Option<Value>,
        change: ChangeType,
    ) -> Value {
        self.revision += 1;
        meta::set_at(
            &mut object,
            &["metadata", "resourceVersion"],
            Value::String(self.revision.to_string()),
        );
        if change != ChangeType::Deleted {
            self.objects.insert(key.clone(), object.clone());
        }
        self.history.push_back(Change {
            revision: self.revision,
            change,
            key,
            object: object.clone(),
            previous,
        });
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
        object
    }

    /// The changes after `revision`, oldest first; `TooOld` when some of them were dropped.
    pub fn changes_since(&self, revision: u64) -> Result<impl Iterator<Item = &Change>, TooOld> {
        // The history covers (oldest - 1, latest]; anything before that is lost.
        let oldest = self
            .history
            .front()
            .map_or(self.revision + 1, |change| change.revision);
        if revision + 1 < oldest {
            return Err(TooOld {
                requested: revision,
                oldest: oldest - 1,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(move |change| change.revision > revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;
    use serde_json::json;

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn every_write_gets_a_new_resource_version() {
        let kind = find_kind("Pod").unwrap();
        let mut store = Store::new(100);
        let key = ObjectKey::of(kind, &pod("a"));
        let first = store.insert(key.clone(), pod("a"));
        let second = store.insert(key.clone(), pod("a"));
        let gone = store.remove(&key).unwrap();
        assert_eq!(meta::resource_version(&first), "1");
        assert_eq!(meta::resource_version(&second), "2");
        assert_eq!(meta::resource_version(&gone), "3");
        assert!(store.get(&key).is_none());
        let changes: Vec<_> = store
            .changes_since(1)
            .unwrap()
            .map(|change| change.change)
            .collect();
        assert_eq!(changes, [ChangeType::Modified, ChangeType::Deleted]);
    }

    #[test]
    fn lists_are_scoped_by_kind_and_namespace() {
        let pods = find_kind("Pod").unwrap();
        let pvs = find_kind("PersistentVolume").unwrap();
        let mut store = Store::new(100);
        store.insert(ObjectKey::of(pods, &pod("a")), pod("a"));
        let mut other = pod("b");
        other["metadata"]["namespace"] = json!("hub");
        store.insert(ObjectKey::of(pods, &other), other);
        store.insert(
            ObjectKey::new(pvs, "", "v"),
            json!({"metadata": {"name": "v"}}),
        );
        assert_eq!(store.list(pods, None).count(), 2);
        assert_eq!(store.list(pods, Some("hub")).count(), 1);
        assert_eq!(store.list(pvs, None).count(), 1);
        assert_eq!(ObjectKey::new(pvs, "ignored", "v").namespace, "");
    }

    #[test]
    fn the_counter_only_moves_up() {
        let kind = find_kind("Pod").unwrap();
        let mut store = Store::new(10);
        store.advance_to(40);
        store.advance_to(3);
        let stored = store.insert(ObjectKey::of(kind, &pod("a")), pod("a"));
        assert_eq!(meta::resource_version(&stored), "41");
    }

    #[test]
    fn a_watch_too_far_back_is_refused() {
        let kind = find_kind("Pod").unwrap();
        let mut store = Store::new(2);
        for _ in 0..5 {
            store.insert(ObjectKey::of(kind, &pod("a")), pod("a"));
        }
        // Versions 4 and 5 are kept: a watch from 3 sees both, from 2 would miss 3.
        assert_eq!(store.changes_since(3).unwrap().count(), 2);
        assert_eq!(store.changes_since(5).unwrap().count(), 0);
        assert_eq!(
            store.changes_since(2).err(),
            Some(TooOld {
                requested: 2,
                oldest: 3
            })
        );
    }
}
