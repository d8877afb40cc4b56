//! What a step's decision read: the cluster objects its checks, guards and preview looked
//! at, and the files it read. A saved plan keeps them; a run of that plan takes them again
//! before each step and names what differs (`PersistentVolume staging-home-nfs:
//! spec.persistentVolumeReclaimPolicy was Delete, is Retain`).
//!
//! A [`Cluster`] made with [`Cluster::recording`] reports every `get` and `list` to its
//! [`Readings`]; an action reports the files it reads through its step's context. The
//! recorder lives here, below the actions and the engine, so that both report to it without
//! importing each other. Files are readings too although they are not the cluster's: this is
//! the one recorder of what a decision depended on.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Cluster, Kind, KubeError, find_kind};

/// Metadata that changes without the object changing in a way a decision cares about.
const VOLATILE_METADATA: [&str; 4] = ["resourceVersion", "managedFields", "generation", "selfLink"];

/// One object as a decision read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectReading {
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// `PersistentVolume`.
    pub kind: String,
    /// The namespace, for a namespaced kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// `metadata.uid`: another uid is another object under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `metadata.resourceVersion` when it was read (for the record: two reads of an
    /// unchanged object may differ here, so the content is what is compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The object without its volatile metadata, and with a Secret's values replaced by
    /// their sha256; `None` when it did not exist.
    pub content: Option<Value>,
}

/// A list of objects as a decision read it (`kube_count`, a selector).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReading {
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// The kind listed.
    pub kind: String,
    /// The namespace listed, for a namespaced kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// The field selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<String>,
    /// The objects found, by name.
    pub items: Vec<ObjectReading>,
}

/// A file as a decision read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReading {
    /// The path as the step named it.
    pub path: String,
    /// sha256 of its content; `None` when it could not be read.
    pub sha256: Option<String>,
}

/// Something a decision read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reading {
    /// One object (`kube_get`, an action's own look at its target).
    Object(ObjectReading),
    /// Objects by selector.
    List(ListReading),
    /// A file (a values file).
    File(FileReading),
}

/// Something a step changed, as a recording [`Cluster`] or an action reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// An object written or deleted; `name` is empty for a create that let the server pick it.
    Object {
        /// `v1`, `apps/v1`.
        api_version: String,
        /// `PersistentVolume`.
        kind: String,
        /// The namespace, for a namespaced kind.
        namespace: Option<String>,
        /// The object's name.
        name: String,
    },
    /// A file written.
    File {
        /// The path as the step named it.
        path: String,
    },
}

impl Written {
    /// The write of an object of `kind`.
    pub fn object(kind: &Kind, namespace: Option<&str>, name: &str) -> Self {
        Written::Object {
            api_version: kind.api_version.to_string(),
            kind: kind.kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

/// What was read and written since the last look.
#[derive(Debug, Default)]
struct Record {
    taken: Vec<Reading>,
    written: Vec<Written>,
}

/// How two readings of the same source are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Everything read (but volatile metadata): before a run has changed anything.
    Strict,
    /// What people and tools set, not what controllers report: no `status`, of `metadata`
    /// only the labels, and of a list only the items found both times. Once a run has
    /// changed something, controllers answer it (a ReplicaSet's counts, the Pods it makes
    /// again); those are not changes to the plan. `existence: false` also takes an object
    /// that came, went or was made again for the run's own doing (an object it deleted
    /// goes once its finalizers are done).
    Intent {
        /// Whether an object that came, went or was made again is a change.
        existence: bool,
    },
}

/// An object as [`Compare::Intent`] sees it.
fn intent(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
        if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.retain(|key, _| key == "labels");
        }
    }
    object
}

/// Where a recording [`Cluster`] and the actions report their readings (and, in a run of a
/// saved plan, their writes). Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    record: Arc<Mutex<Record>>,
}

impl Readings {
    /// Records a reading; one that was already taken since the last [`Readings::take`] is
    /// kept as it was first read (what the decision started from).
    pub fn record(&self, reading: Reading) {
        if let Ok(mut record) = self.record.lock()
            && !record.taken.iter().any(|known| known.same_source(&reading))
        {
            record.taken.push(reading);
        }
    }

    /// Records a write.
    pub fn record_write(&self, written: Written) {
        if let Ok(mut record) = self.record.lock() {
            record.written.push(written);
        }
    }

    /// The writes since the last call.
    pub fn take_written(&self) -> Vec<Written> {
        self.record
            .lock()
            .map(|mut record| std::mem::take(&mut record.written))
            .unwrap_or_default()
    }

    /// Records a file read as `content`.
    pub fn record_file(&self, path: &str, content: &[u8]) {
        self.record(Reading::File(FileReading {
            path: path.to_string(),
            sha256: Some(sha256_hex(content)),
        }));
    }

    /// The readings since the last call, oldest first.
    pub fn take(&self) -> Vec<Reading> {
        self.record
            .lock()
            .map(|mut record| std::mem::take(&mut record.taken))
            .unwrap_or_default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An object as a reading keeps it: no volatile metadata, a Secret's values hashed (a saved
/// plan never holds a secret, and a changed secret is still seen).
pub fn normalized(kind: &Kind, object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in VOLATILE_METADATA {
            metadata.remove(key);
        }
    }
    if kind.group.is_empty() && kind.kind == "Secret" {
        for key in ["data", "stringData"] {
            if let Some(values) = object.get_mut(key).and_then(Value::as_object_mut) {
                for value in values.values_mut() {
                    let text = value.as_str().unwrap_or_default();
                    *value = Value::from(format!("sha256:{}", sha256_hex(text.as_bytes())));
                }
            }
        }
    }
    object
}

impl ObjectReading {
    /// The reading of `name`, found as `object` (or absent).
    pub fn of(kind: &Kind, namespace: Option<&str>, name: &str, object: Option<&Value>) -> Self {
        let metadata = |key: &str| {
            object
                .and_then(|object| object.pointer(&format!("/metadata/{key}")))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        ObjectReading {
            api_version: kind.api_version.to_string(),
            kind: kind.kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            uid: metadata("uid"),
            resource_version: metadata("resourceVersion"),
            content: object.map(|object| normalized(kind, object)),
        }
    }

    /// `PersistentVolume staging-home-nfs`, `PersistentVolumeClaim hub/home`.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// How this object changed into `now`, one line per difference.
    pub fn changes(&self, now: &ObjectReading, compare: Compare) -> Vec<String> {
        let label = self.label();
        let existence = !matches!(compare, Compare::Intent { existence: false });
        match (&self.content, &now.content) {
            (None, None) => Vec::new(),
            (None, Some(_)) | (Some(_), None) if !existence => Vec::new(),
            (None, Some(_)) => vec![format!("{label}: was absent, exists now")],
            (Some(_), None) => vec![format!("{label}: was there, is gone")],
            (Some(before), Some(after)) => {
                if self.uid.is_some() && now.uid.is_some() && self.uid != now.uid {
                    if !existence {
                        return Vec::new();
                    }
                    return vec![format!(
                        "{label}: was deleted and made again (uid {} is {})",
                        self.uid.as_deref().unwrap_or_default(),
                        now.uid.as_deref().unwrap_or_default()
                    )];
                }
                let mut found = Vec::new();
                match compare {
                    Compare::Strict => field_changes("", before, after, &mut found),
                    Compare::Intent { .. } => {
                        field_changes("", &intent(before), &intent(after), &mut found);
                    }
                }
                found
                    .into_iter()
                    .map(|change| format!("{label}: {change}"))
                    .collect()
            }
        }
    }
}

impl ListReading {
    /// `PersistentVolumeClaim in hub (app=home)`.
    pub fn label(&self) -> String {
        let mut label = format!("{} list", self.kind);
        if let Some(namespace) = &self.namespace {
            label.push_str(&format!(" in {namespace}"));
        }
        let selectors: Vec<&str> = [&self.label_selector, &self.field_selector]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !selectors.is_empty() {
            label.push_str(&format!(" ({})", selectors.join(", ")));
        }
        label
    }

    fn changes(&self, now: &ListReading, compare: Compare) -> Vec<String> {
        let label = self.label();
        let membership = compare == Compare::Strict;
        let mut changes = Vec::new();
        for item in &now.items {
            match self.items.iter().find(|before| before.name == item.name) {
                Some(before) => changes.extend(before.changes(item, compare)),
                None if membership => changes.push(format!("{label}: {} is new", item.name)),
                None => {}
            }
        }
        for before in &self.items {
            if membership && !now.items.iter().any(|item| item.name == before.name) {
                changes.push(format!("{label}: {} is gone", before.name));
            }
        }
        changes
    }
}

impl Reading {
    /// Whether two readings read the same thing (perhaps at different times).
    pub fn same_source(&self, other: &Reading) -> bool {
        match (self, other) {
            (Reading::Object(a), Reading::Object(b)) => {
                (&a.api_version, &a.kind, &a.namespace, &a.name)
                    == (&b.api_version, &b.kind, &b.namespace, &b.name)
            }
            (Reading::List(a), Reading::List(b)) => {
                (
                    &a.api_version,
                    &a.kind,
                    &a.namespace,
                    &a.label_selector,
                    &a.field_selector,
                ) == (
                    &b.api_version,
                    &b.kind,
                    &b.namespace,
                    &b.label_selector,
                    &b.field_selector,
                )
            }
            (Reading::File(a), Reading::File(b)) => a.path == b.path,
            _ => false,
        }
    }

    /// Whether `written` may have changed what this reading read: the same object, an
    /// object of a listed kind and namespace, the same file.
    pub fn affected_by(&self, written: &Written) -> bool {
        match (self, written) {
            (
                Reading::Object(read),
                Written::Object {
                    api_version,
                    kind,
                    namespace,
                    name,
                },
            ) => {
                (&read.api_version, &read.kind, &read.namespace) == (api_version, kind, namespace)
                    && (name.is_empty() || &read.name == name)
            }
            (
                Reading::List(read),
                Written::Object {
                    api_version,
                    kind,
                    namespace,
                    ..
                },
            ) => {
                (&read.api_version, &read.kind) == (api_version, kind)
                    && (read.namespace.is_none() || &read.namespace == namespace)
            }
            (Reading::File(read), Written::File { path }) => &read.path == path,
            _ => false,
        }
    }

    /// How what was read as `self` changed into `now` (the same source read again), one
    /// line per difference; empty when nothing did.
    pub fn changes(&self, now: &Reading, compare: Compare) -> Vec<String> {
        match (self, now) {
            (Reading::Object(before), Reading::Object(after)) => before.changes(after, compare),
            (Reading::List(before), Reading::List(after)) => before.changes(after, compare),
            (Reading::File(before), Reading::File(after)) => {
                match (&before.sha256, &after.sha256) {
                    (before_hash, after_hash) if before_hash == after_hash => Vec::new(),
                    (Some(_), None) => {
                        vec![format!("file {}: cannot be read any more", before.path)]
                    }
                    (None, Some(_)) => vec![format!("file {}: can be read now", before.path)],
                    _ => vec![format!(
                        "file {}: its content changed (sha256 was {}, is {})",
                        before.path,
                        short(before.sha256.as_deref()),
                        short(after.sha256.as_deref())
                    )],
                }
            }
            _ => vec!["a reading of another kind".to_string()],
        }
    }

    /// Takes this reading again, now: the same object, list or file.
    pub async fn take_again(&self, cluster: Option<&Cluster>) -> Result<Reading, String> {
        let cluster_for = async |api_version: &str, kind: &str| {
            let cluster = cluster
                .ok_or_else(|| format!("{kind} cannot be read again: there is no cluster"))?;
            // A kind beyond the table (a custom resource's) is looked up in the cluster again.
            let kind = match kind_of(api_version, kind) {
                Ok(kind) => kind,
                Err(_) => cluster
                    .served_manifest_kind(api_version, kind)
                    .await
                    .map_err(|error| error.to_string())?,
            };
            Ok::<_, String>((kind, cluster))
        };
        match self {
            Reading::Object(before) => {
                let (kind, cluster) = cluster_for(&before.api_version, &before.kind).await?;
                let object = cluster
                    .get(kind, &before.name, before.namespace.as_deref())
                    .await
                    .map_err(|error: KubeError| error.to_string())?;
                Ok(Reading::Object(ObjectReading::of(
                    kind,
                    before.namespace.as_deref(),
                    &before.name,
                    object.as_ref(),
                )))
            }
            Reading::List(before) => {
                let (kind, cluster) = cluster_for(&before.api_version, &before.kind).await?;
                let items = cluster
                    .list(
                        kind,
                        before.namespace.as_deref(),
                        before.label_selector.as_deref(),
                        before.field_selector.as_deref(),
                    )
                    .await
                    .map_err(|error| error.to_string())?;
                Ok(Reading::List(ListReading::of(
                    kind,
                    before.namespace.as_deref(),
                    before.label_selector.as_deref(),
                    before.field_selector.as_deref(),
                    &items,
                )))
            }
            Reading::File(before) => Ok(Reading::File(FileReading {
                path: before.path.clone(),
                sha256: std::fs::read(&before.path)
                    .ok()
                    .map(|content| sha256_hex(&content)),
            })),
        }
    }
}

impl ListReading {
    /// The reading of a list that found `items`.
    pub fn of(
        kind: &Kind,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
        items: &[Value],
    ) -> Self {
        let non_empty = |selector: Option<&str>| {
            selector
                .filter(|selector| !selector.is_empty())
                .map(str::to_string)
        };
        ListReading {
            api_version: kind.api_version.to_string(),
            kind: kind.kind.to_string(),
            namespace: namespace.map(str::to_string),
            label_selector: non_empty(label_selector),
            field_selector: non_empty(field_selector),
            items: items
                .iter()
                .map(|item| {
                    let name = item
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str);
                    ObjectReading::of(kind, namespace, name, Some(item))
                })
                .collect(),
        }
    }
}

/// The kind a reading names.
fn kind_of(api_version: &str, kind: &str) -> Result<&'static Kind, String> {
    super::kind_of_manifest(api_version, kind)
        .or_else(|| find_kind(kind))
        .ok_or_else(|| format!("{api_version} {kind} is not a kind runbook knows"))
}

/// The first 12 hex digits of a hash, or `none`.
fn short(hash: Option<&str>) -> &str {
    hash.map_or("none", |hash| &hash[..hash.len().min(12)])
}

/// A value as a change line shows it: strings bare, the rest as JSON, long ones cut.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// The differences between two JSON values, by field path (`spec.claimRef.name`,
/// `spec.containers[0].image`).
fn field_changes(path: &str, before: &Value, after: &Value, found: &mut Vec<String>) {
    if before == after {
        return;
    }
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => {
            for (key, old) in before {
                match after.get(key) {
                    Some(new) => field_changes(&at(key), old, new, found),
                    None => found.push(format!("{} was {}, is absent", at(key), shown(old))),
                }
            }
            for (key, new) in after {
                if !before.contains_key(key) {
                    found.push(format!("{} was absent, is {}", at(key), shown(new)));
                }
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (index, (old, new)) in old.iter().zip(new).enumerate() {
                field_changes(&format!("{path}[{index}]"), old, new, found);
            }
        }
        _ => {
            let path = if path.is_empty() { "the object" } else { path };
            found.push(format!("{path} was {}, is {}", shown(before), shown(after)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(policy: &str, version: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "staging-home-nfs", "uid": "u1", "resourceVersion": version,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"persistentVolumeReclaimPolicy": policy, "capacity": {"storage": "1Gi"}},
        })
    }

    fn pv_kind() -> &'static Kind {
        find_kind("PersistentVolume").unwrap()
    }

    fn reading(object: Option<&Value>) -> ObjectReading {
        ObjectReading::of(pv_kind(), None, "staging-home-nfs", object)
    }

    #[test]
    fn a_changed_field_is_named_with_its_values() {
        let before = reading(Some(&pv("Delete", "1")));
        let after = reading(Some(&pv("Retain", "2")));
        assert_eq!(
            before.changes(&after, Compare::Strict),
            [
                "PersistentVolume staging-home-nfs: spec.persistentVolumeReclaimPolicy was Delete, is Retain"
            ]
        );
    }

    #[test]
    fn volatile_metadata_is_no_change() {
        let before = reading(Some(&pv("Delete", "1")));
        let mut touched = pv("Delete", "7");
        touched["metadata"]["managedFields"] = json!([{"manager": "other"}]);
        let after = reading(Some(&touched));
        assert_eq!(after.resource_version.as_deref(), Some("7"));
        assert!(before.changes(&after, Compare::Strict).is_empty());
    }

    #[test]
    fn appearing_vanishing_and_recreated_objects_are_named() {
        let there = reading(Some(&pv("Delete", "1")));
        let gone = reading(None);
        assert_eq!(
            gone.changes(&there, Compare::Strict),
            ["PersistentVolume staging-home-nfs: was absent, exists now"]
        );
        assert_eq!(
            there.changes(&gone, Compare::Strict),
            ["PersistentVolume staging-home-nfs: was there, is gone"]
        );
        let mut again = pv("Delete", "9");
        again["metadata"]["uid"] = json!("u2");
        assert_eq!(
            there.changes(&reading(Some(&again)), Compare::Strict),
            ["PersistentVolume staging-home-nfs: was deleted and made again (uid u1 is u2)"]
        );
    }

    #[test]
    fn intent_leaves_out_status_metadata_and_the_runs_own_comings_and_goings() {
        let mut before = pv("Delete", "1");
        before["status"] = json!({"phase": "Bound"});
        let mut after = before.clone();
        after["status"]["phase"] = json!("Released");
        after["metadata"]["annotations"] = json!({"pv.kubernetes.io/bound-by-controller": "yes"});
        let (before, after) = (reading(Some(&before)), reading(Some(&after)));
        let intent = Compare::Intent { existence: true };
        assert!(before.changes(&after, intent).is_empty());
        assert_eq!(before.changes(&after, Compare::Strict).len(), 2);
        let mut relabelled = pv("Retain", "2");
        relabelled["metadata"]["labels"] = json!({"hub": "staging"});
        assert_eq!(
            before.changes(&reading(Some(&relabelled)), intent),
            [
                "PersistentVolume staging-home-nfs: metadata.labels was absent, is {\"hub\":\"staging\"}",
                "PersistentVolume staging-home-nfs: spec.persistentVolumeReclaimPolicy was Delete, is Retain"
            ]
        );
        let gone = reading(None);
        assert_eq!(before.changes(&gone, intent).len(), 1);
        assert!(
            before
                .changes(&gone, Compare::Intent { existence: false })
                .is_empty()
        );
        let kind = pv_kind();
        let item = |name: &str| json!({"metadata": {"name": name}, "spec": {}});
        let list = ListReading::of(kind, None, None, None, &[item("a")]);
        let replaced = ListReading::of(kind, None, None, None, &[item("b")]);
        assert!(
            Reading::List(list)
                .changes(&Reading::List(replaced), intent)
                .is_empty()
        );
    }

    #[test]
    fn added_removed_and_indexed_fields() {
        let mut found = Vec::new();
        field_changes(
            "",
            &json!({"a": 1, "b": {"c": [1, 2]}, "gone": true}),
            &json!({"a": 1, "b": {"c": [1, 3]}, "new": "x"}),
            &mut found,
        );
        assert_eq!(
            found,
            [
                "b.c[1] was 2, is 3",
                "gone was true, is absent",
                "new was absent, is x"
            ]
        );
    }

    #[test]
    fn a_secret_keeps_hashes_not_values() {
        let kind = find_kind("Secret").unwrap();
        let secret = json!({"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}});
        let kept = normalized(kind, &secret);
        let value = kept["data"]["password"].as_str().unwrap();
        assert!(value.starts_with("sha256:"));
        assert!(!kept.to_string().contains("aHVudGVyMg=="));
    }

    #[test]
    fn lists_name_new_and_gone_items() {
        let kind = pv_kind();
        let item = |name: &str| json!({"metadata": {"name": name}, "spec": {}});
        let before = ListReading::of(kind, None, Some("app=hub"), None, &[item("a"), item("b")]);
        let after = ListReading::of(kind, None, Some("app=hub"), None, &[item("b"), item("c")]);
        assert_eq!(
            Reading::List(before).changes(&Reading::List(after), Compare::Strict),
            [
                "PersistentVolume list (app=hub): c is new",
                "PersistentVolume list (app=hub): a is gone"
            ]
        );
    }

    #[test]
    fn a_reading_taken_twice_in_a_step_is_kept_as_first_read() {
        let readings = Readings::default();
        readings.record(Reading::Object(reading(Some(&pv("Delete", "1")))));
        readings.record(Reading::Object(reading(Some(&pv("Retain", "2")))));
        readings.record_file("values.yaml", b"a: 1\n");
        let taken = readings.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0], Reading::Object(reading(Some(&pv("Delete", "1")))));
        assert!(readings.take().is_empty());
    }

    #[test]
    fn a_write_affects_the_same_object_lists_of_its_kind_and_the_same_file() {
        let pv = Reading::Object(reading(Some(&pv("Delete", "1"))));
        let kind = pv_kind();
        assert!(pv.affected_by(&Written::object(kind, None, "staging-home-nfs")));
        assert!(!pv.affected_by(&Written::object(kind, None, "other")));
        let namespace = find_kind("Namespace").unwrap();
        assert!(!pv.affected_by(&Written::object(namespace, None, "staging-home-nfs")));
        let pods = find_kind("Pod").unwrap();
        let list = Reading::List(ListReading::of(pods, Some("staging"), None, None, &[]));
        assert!(list.affected_by(&Written::object(pods, Some("staging"), "new-pod")));
        assert!(!list.affected_by(&Written::object(pods, Some("prod"), "new-pod")));
        let file = Reading::File(FileReading {
            path: "hub.values.yaml".into(),
            sha256: None,
        });
        assert!(file.affected_by(&Written::File {
            path: "hub.values.yaml".into()
        }));
        assert!(!file.affected_by(&Written::object(kind, None, "hub.values.yaml")));
    }

    #[test]
    fn a_changed_file_is_named() {
        let before = Reading::File(FileReading {
            path: "hub.values.yaml".into(),
            sha256: Some("a".repeat(64)),
        });
        let after = Reading::File(FileReading {
            path: "hub.values.yaml".into(),
            sha256: Some("b".repeat(64)),
        });
        assert_eq!(
            before.changes(&after, Compare::Strict),
            [
                "file hub.values.yaml: its content changed (sha256 was aaaaaaaaaaaa, is bbbbbbbbbbbb)"
            ]
        );
    }
}
