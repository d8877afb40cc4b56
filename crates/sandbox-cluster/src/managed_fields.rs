//! `metadata.managedFields`: which manager set which fields, and with which operation.
//! Server-side apply decides conflicts and removals from it; every other write moves the
//! fields it changed to its own manager, as the real server does.

use serde_json::{Value, json};

use super::field_set::{self, FieldPath, FieldSet};
use super::meta;

/// The managers of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagedFields {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: String,
    fields: FieldSet,
}

/// How a manager last wrote: server-side apply, or any other write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `Apply`.
    Apply,
    /// `Update` (create, replace, patch).
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager.
    pub manager: String,
    /// The API version it wrote with.
    pub api_version: String,
    /// The field.
    pub path: FieldPath,
}

impl ManagedFields {
    /// The managers recorded on an object.
    pub fn read(object: &Value) -> Self {
        let entries = meta::value_at(object, &["metadata", "managedFields"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|entry| entry.get("subresource").is_none())
            .map(|entry| Entry {
                manager: entry
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                operation: if entry.get("operation").and_then(Value::as_str) == Some("Apply") {
                    Operation::Apply
                } else {
                    Operation::Update
                },
                api_version: entry
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: entry
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                fields: FieldSet::from_fields_v1(entry.get("fieldsV1").unwrap_or(&Value::Null)),
            })
            .collect();
        ManagedFields { entries }
    }

    /// Writes the managers into the object's metadata (removing the field when there are none).
    pub fn write(&self, object: &mut Value) {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .filter(|entry| !entry.fields.is_empty())
            .map(|entry| {
                json!({
                    "manager": entry.manager,
                    "operation": entry.operation.as_str(),
                    "apiVersion": entry.api_version,
                    "time": entry.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": entry.fields.to_fields_v1(),
                })
            })
            .collect();
        if entries.is_empty() {
            meta::remove_at(object, &["metadata", "managedFields"]);
        } else {
            meta::set_at(
                object,
                &["metadata", "managedFields"],
                Value::Array(entries),
            );
        }
    }

    fn entry_mut(&mut self, manager: &str, operation: Operation, api_version: &str) -> &mut Entry {
        let index = match self
            .entries
            .iter()
            .position(|entry| entry.manager == manager && entry.operation == operation)
        {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    manager: manager.to_string(),
                    operation,
                    api_version: api_version.to_string(),
                    time: String::new(),
                    fields: FieldSet::default(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.api_version = api_version.to_string();
        entry.time = meta::now();
        entry
    }

    /// A non-apply write by `manager` changed `changed`: it owns those still set, and nobody
    /// else owns any of them any more.
    pub fn record_update(
        &mut self,
        manager: &str,
        api_version: &str,
        changed: &FieldSet,
        new: &Value,
    ) {
        if changed.is_empty() {
            return;
        }
        for entry in &mut self.entries {
            entry.fields = entry.fields.difference(changed);
        }
        let entry = self.entry_mut(manager, Operation::Update, api_version);
        for path in changed.iter() {
            if field_set::value_at(new, path).is_some() {
                entry.fields.insert(path.clone());
            }
        }
        self.entries.retain(|entry| !entry.fields.is_empty());
    }

    /// The fields `manager` last applied.
    pub fn applied_by(&self, manager: &str) -> FieldSet {
        self.entries
            .iter()
            .find(|entry| entry.manager == manager && entry.operation == Operation::Apply)
            .map(|entry| entry.fields.clone())
            .unwrap_or_default()
    }

    /// Whether a manager other than `manager`'s apply owns `path`.
    pub fn owned_by_others(&self, manager: &str, path: &FieldPath) -> bool {
        self.entries
            .iter()
            .filter(|entry| !(entry.manager == manager && entry.operation == Operation::Apply))
            .any(|entry| entry.fields.contains(path))
    }

    /// Whether a manager other than `manager`'s apply owns a field under `path`.
    pub fn owns_under_by_others(&self, manager: &str, path: &FieldPath) -> bool {
        self.entries
            .iter()
            .filter(|entry| !(entry.manager == manager && entry.operation == Operation::Apply))
            .any(|entry| {
                entry
                    .fields
                    .iter()
                    .any(|owned| owned.len() > path.len() && owned.starts_with(path))
            })
    }

    /// The fields of an apply by `manager` that other managers own with another value.
    pub fn conflicts(
        &self,
        manager: &str,
        applied: &FieldSet,
        live: &Value,
        config: &Value,
    ) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        for entry in self.entries.iter().filter(|entry| entry.manager != manager) {
            for path in applied.iter().filter(|path| entry.fields.contains(path)) {
                // Keyed items only mark membership; their fields conflict one by one.
                let is_item = path.last().is_some_and(|key| key.starts_with("k:"));
                if !is_item && field_set::value_at(live, path) != field_set::value_at(config, path)
                {
                    conflicts.push(Conflict {
                        manager: entry.manager.clone(),
                        api_version: entry.api_version.clone(),
                        path: path.clone(),
                    });
                }
            }
        }
        conflicts
    }

    /// Records an apply by `manager` of `applied`; with `force`, the fields it conflicted on
    /// move to it.
    pub fn record_apply(
        &mut self,
        manager: &str,
        api_version: &str,
        applied: &FieldSet,
        taken: &[Conflict],
    ) {
        for conflict in taken {
            for entry in self
                .entries
                .iter_mut()
                .filter(|entry| entry.manager == conflict.manager)
            {
                entry.fields.remove(&conflict.path);
            }
        }
        let entry = self.entry_mut(manager, Operation::Apply, api_version);
        entry.fields = applied.clone();
        self.entries.retain(|entry| !entry.fields.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    #[test]
    fn updates_take_the_fields_they_change() {
        let kind = find_kind("ConfigMap").unwrap();
        let created = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let mut managed = ManagedFields::default();
        managed.record_update("creator", "v1", &FieldSet::of(kind, &created), &created);
        let mut patched = created.clone();
        patched["data"]["a"] = json!("9");
        managed.record_update(
            "patcher",
            "v1",
            &field_set::changed(kind, &created, &patched),
            &patched,
        );
        let mut object = patched.clone();
        managed.write(&mut object);
        let entries = object["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["fieldsV1"], json!({"f:data": {"f:b": {}}}));
        assert_eq!(entries[1]["manager"], "patcher");
        assert_eq!(entries[1]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
        assert_eq!(ManagedFields::read(&object), managed);
    }

    #[test]
    fn applies_conflict_on_fields_owned_with_other_values() {
        let kind = find_kind("ConfigMap").unwrap();
        let live = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let mut managed = ManagedFields::default();
        managed.record_update("kubectl-create", "v1", &FieldSet::of(kind, &live), &live);
        let same = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        assert!(
            managed
                .conflicts("kubectl", &FieldSet::of(kind, &same), &live, &same)
                .is_empty()
        );
        let other = json!({"metadata": {"name": "c"}, "data": {"a": "2"}});
        let conflicts = managed.conflicts("kubectl", &FieldSet::of(kind, &other), &live, &other);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].manager, "kubectl-create");
        managed.record_apply("kubectl", "v1", &FieldSet::of(kind, &other), &conflicts);
        assert!(!managed.owned_by_others("kubectl", &conflicts[0].path));
        assert_eq!(managed.applied_by("kubectl"), FieldSet::of(kind, &other));
    }
}
