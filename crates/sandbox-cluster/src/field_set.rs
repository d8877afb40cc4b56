//! Sets of field paths, as server-side apply tracks who owns what (`managedFields`,
//! `fieldsV1`). A path is a list of `fieldsV1` keys: `f:spec` for a field, `k:{"name":"app"}`
//! for the item of a list merged by key, `v:"x"` for a member of a set.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::schema::{ListStrategy, list_strategy};
use kube_kinds::Kind;

/// One path of `fieldsV1` keys.
pub type FieldPath = Vec<String>;

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<FieldPath>);

/// Metadata fields that belong to the server, not to any manager.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

impl FieldSet {
    /// The fields an object (or an apply configuration) sets: its leaves, and the items of
    /// keyed lists. `status` and the server's own metadata are left out.
    pub fn of(kind: &Kind, object: &Value) -> Self {
        let mut set = BTreeSet::new();
        if let Value::Object(map) = object {
            for (key, value) in map {
                if matches!(key.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                let mut path = vec![format!("f:{key}")];
                let mut names = vec![key.clone()];
                if key == "metadata" {
                    if let Value::Object(metadata) = value {
                        for (field, child) in metadata {
                            if SERVER_METADATA.contains(&field.as_str()) {
                                continue;
                            }
                            path.push(format!("f:{field}"));
                            names.push(field.clone());
                            collect(kind, child, &mut path, &mut names, &mut set);
                            path.pop();
                            names.pop();
                        }
                    }
                } else {
                    collect(kind, value, &mut path, &mut names, &mut set);
                }
            }
        }
        FieldSet(set)
    }

    /// Reads a `fieldsV1` object.
    pub fn from_fields_v1(fields: &Value) -> Self {
        fn walk(node: &Map<String, Value>, path: &mut FieldPath, set: &mut BTreeSet<FieldPath>) {
            if (node.is_empty() || node.contains_key(".")) && !path.is_empty() {
                set.insert(path.clone());
            }
            for (key, child) in node {
                if key == "." {
                    continue;
                }
                path.push(key.clone());
                match child {
                    Value::Object(child) => walk(child, path, set),
                    _ => {
                        set.insert(path.clone());
                    }
                }
                path.pop();
            }
        }
        let mut set = BTreeSet::new();
        if let Value::Object(node) = fields {
            walk(node, &mut Vec::new(), &mut set);
        }
        FieldSet(set)
    }

    /// Writes the set as a `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for (index, key) in path.iter().enumerate() {
                let child = node.entry(key.clone()).or_insert_with(|| json!({}));
                if !child.is_object() {
                    *child = json!({});
                }
                let Value::Object(child) = child else {
                    unreachable!("just made an object");
                };
                // A path that is also a prefix of others marks itself with ".".
                if index + 1 == path.len() && self.has_children(path) {
                    child.insert(".".into(), json!({}));
                }
                node = child;
            }
        }
        Value::Object(root)
    }

    fn has_children(&self, path: &FieldPath) -> bool {
        self.0
            .range(path.clone()..)
            .nth(1)
            .is_some_and(|next| next.starts_with(path))
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the set holds `path`.
    pub fn contains(&self, path: &FieldPath) -> bool {
        self.0.contains(path)
    }

    /// The paths, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// Adds a path.
    pub fn insert(&mut self, path: FieldPath) {
        self.0.insert(path);
    }

    /// Removes a path.
    pub fn remove(&mut self, path: &FieldPath) {
        self.0.remove(path);
    }

    /// The paths of `self` that are set in `object`.
    pub fn present_in(&self, object: &Value) -> FieldSet {
        FieldSet(
            self.0
                .iter()
                .filter(|path| value_at(object, path).is_some())
                .cloned()
                .collect(),
        )
    }

    /// The paths of `self` that `other` does not hold.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }
}

fn collect(
    kind: &Kind,
    value: &Value,
    path: &mut FieldPath,
    names: &mut Vec<String>,
    set: &mut BTreeSet<FieldPath>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(format!("f:{key}"));
                names.push(key.clone());
                collect(kind, child, path, names, set);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => match list_strategy(kind, names) {
            ListStrategy::MergeByKey(key) => {
                for item in items {
                    let Some(id) = item.get(key) else {
                        continue;
                    };
                    path.push(format!("k:{}", json!({key: id})));
                    set.insert(path.clone());
                    collect(kind, item, path, names, set);
                    path.pop();
                }
            }
            ListStrategy::MergeSet => {
                for item in items {
                    path.push(format!("v:{item}"));
                    set.insert(path.clone());
                    path.pop();
                }
            }
            ListStrategy::Replace => {
                set.insert(path.clone());
            }
        },
        _ => {
            set.insert(path.clone());
        }
    }
}

/// Whether a path names an item of a keyed list (`...k:{"name":"app"}`).
pub fn is_item(path: &[String]) -> bool {
    path.last().is_some_and(|key| key.starts_with("k:"))
}

/// Whether a path names a key field of a keyed list item (`...k:{"name":"app"}, f:name`):
/// removing it alone would leave an item that no key finds.
pub fn is_item_key(path: &[String]) -> bool {
    let [.., item, field] = path else {
        return false;
    };
    let (Some(id), Some(field)) = (item.strip_prefix("k:"), field.strip_prefix("f:")) else {
        return false;
    };
    serde_json::from_str::<Map<String, Value>>(id).is_ok_and(|id| id.contains_key(field))
}

/// The value at a path, if present.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| step(value, key))
}

fn step<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(field) = key.strip_prefix("f:") {
        return value.get(field);
    }
    let items = value.as_array()?;
    position(items, key).map(|index| &items[index])
}

fn position(items: &[Value], key: &str) -> Option<usize> {
    if let Some(id) = key.strip_prefix("k:") {
        let id: Map<String, Value> = serde_json::from_str(id).ok()?;
        return items.iter().position(|item| {
            id.iter()
                .all(|(field, wanted)| item.get(field) == Some(wanted))
        });
    }
    let member: Value = serde_json::from_str(key.strip_prefix("v:")?).ok()?;
    items.iter().position(|item| *item == member)
}

/// Removes the value at a path, and the maps this leaves empty on the way up.
pub fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut parent = Some(&mut *object);
    for key in parents {
        parent = parent.and_then(|value| step_mut(value, key));
    }
    let Some(parent) = parent else {
        return;
    };
    match (last.strip_prefix("f:"), parent) {
        (Some(field), Value::Object(map)) => {
            map.remove(field);
        }
        (None, Value::Array(items)) => {
            if let Some(index) = position(items, last) {
                items.remove(index);
            }
        }
        _ => return,
    }
    // Drop parents left empty, as the real server does not keep `labels: {}` for nobody.
    for depth in (1..path.len()).rev() {
        let prefix = &path[..depth];
        if value_at(object, prefix)
            .is_some_and(|value| value.as_object().is_some_and(Map::is_empty))
        {
            let (last, parents) = prefix.split_last().expect("depth >= 1");
            let mut parent = Some(&mut *object);
            for key in parents {
                parent = parent.and_then(|value| step_mut(value, key));
            }
            if let (Some(Value::Object(map)), Some(field)) = (parent, last.strip_prefix("f:")) {
                map.remove(field);
            }
        } else {
            break;
        }
    }
}

fn step_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    if let Some(field) = key.strip_prefix("f:") {
        return value.get_mut(field);
    }
    let items = value.as_array_mut()?;
    let index = position(items, key)?;
    items.get_mut(index)
}

/// The path as server-side apply conflicts print it: `.spec.containers[name="app"].image`.
pub fn display(path: &[String]) -> String {
    let mut text = String::new();
    for key in path {
        if let Some(field) = key.strip_prefix("f:") {
            text.push('.');
            text.push_str(field);
        } else if let Some(id) = key.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(id).unwrap_or_default();
            let parts: Vec<String> = id
                .iter()
                .map(|(field, value)| format!("{field}={value}"))
                .collect();
            text.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(member) = key.strip_prefix("v:") {
            text.push_str(&format!("[={member}]"));
        }
    }
    text
}

/// The paths whose values differ between two versions of an object (set in either).
pub fn changed(kind: &Kind, old: &Value, new: &Value) -> FieldSet {
    let mut all = FieldSet::of(kind, old);
    all.0.extend(FieldSet::of(kind, new).0);
    FieldSet(
        all.0
            .into_iter()
            .filter(|path| value_at(old, path) != value_at(new, path))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "hub", "labels": {"app": "x"}, "finalizers": ["f"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "i", "args": ["a"]}]}}},
            "status": {"replicas": 2}
        })
    }

    #[test]
    fn paths_cover_leaves_keyed_items_and_set_members() {
        let kind = find_kind("Deployment").unwrap();
        let set = FieldSet::of(kind, &deployment());
        let displayed: Vec<String> = set.iter().map(|path| display(path)).collect();
        assert_eq!(
            displayed,
            [
                ".metadata.finalizers[=\"f\"]",
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"app\"]",
                ".spec.template.spec.containers[name=\"app\"].args",
                ".spec.template.spec.containers[name=\"app\"].image",
                ".spec.template.spec.containers[name=\"app\"].name",
            ]
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let kind = find_kind("Deployment").unwrap();
        let set = FieldSet::of(kind, &deployment());
        let fields = set.to_fields_v1();
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."],
            json!({})
        );
        assert_eq!(FieldSet::from_fields_v1(&fields), set);
    }

    #[test]
    fn values_are_found_and_removed_by_path() {
        let kind = find_kind("Deployment").unwrap();
        let mut object = deployment();
        let image: FieldPath = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:image",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(value_at(&object, &image), Some(&json!("i")));
        remove(&mut object, &image);
        assert_eq!(value_at(&object, &image), None);
        let label: FieldPath = ["f:metadata", "f:labels", "f:app"]
            .map(String::from)
            .to_vec();
        remove(&mut object, &label);
        assert!(
            object["metadata"].get("labels").is_none(),
            "an emptied map goes too"
        );
        let mut other = deployment();
        other["spec"]["replicas"] = json!(3);
        let changes: Vec<String> = changed(kind, &deployment(), &other)
            .iter()
            .map(|path| display(path))
            .collect();
        assert_eq!(changes, [".spec.replicas"]);
    }
}
