//! The PATCH bodies the API accepts: JSON patch (RFC 6902), merge patch (RFC 7386) and
//! strategic merge patch (lists merged by key, `$patch` directives), chosen by content type.
//! Server-side apply has its own module ([`super::apply`]) and reuses the strategic merge.

use serde_json::{Map, Value};

use super::schema::{ListStrategy, list_strategy};
use kube_kinds::Kind;

/// The kinds of patch, by their content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch of its type (400 BadRequest on the real server).
    #[error("{0}")]
    Malformed(String),
    /// A JSON patch operation failed, e.g. a `test` or a `remove` of a missing path (422).
    #[error("{0}")]
    Failed(String),
}

/// Applies a JSON, merge or strategic merge patch to `original`.
pub fn apply_patch(
    kind: &Kind,
    original: &Value,
    patch_type: PatchType,
    body: &Value,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch =
                serde_json::from_value(body.clone()).map_err(|error| {
                    PatchError::Malformed(format!("unable to parse JSON patch: {error}"))
                })?;
            let mut document = original.clone();
            json_patch::patch(&mut document, &patch)
                .map_err(|error| PatchError::Failed(error.to_string()))?;
            Ok(document)
        }
        PatchType::Merge => {
            if !body.is_object() {
                return Err(PatchError::Malformed(
                    "merge patch must be a JSON object".into(),
                ));
            }
            let mut document = original.clone();
            json_patch::merge(&mut document, body);
            Ok(document)
        }
        PatchType::Strategic | PatchType::Apply => strategic_merge(kind, original, body),
    }
}

/// Applies a strategic merge patch: maps merge, `null` deletes, lists with a merge key merge
/// item by item, `$patch: replace|delete`, `$setElementOrder/`, `$deleteFromPrimitiveList/`
/// and `$retainKeys` are honoured.
pub fn strategic_merge(kind: &Kind, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "strategic merge patch must be a JSON object".into(),
        ));
    };
    let mut document = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match merge_map(kind, &mut document, patch, &mut path)? {
        MapOutcome::Kept => Ok(Value::Object(document)),
        MapOutcome::Deleted => Ok(Value::Object(Map::new())),
    }
}

enum MapOutcome {
    Kept,
    Deleted,
}

fn directive(map: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(text)) if matches!(text.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(text))
        }
        Some(other) => Err(PatchError::Malformed(format!(
            "Unknown patch type: {other}"
        ))),
    }
}

fn merge_map(
    kind: &Kind,
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<MapOutcome, PatchError> {
    match directive(patch)? {
        Some("delete") => {
            original.clear();
            return Ok(MapOutcome::Deleted);
        }
        Some("replace") => {
            let mut without = patch.clone();
            without.remove("$patch");
            original.clear();
            merge_map(kind, original, &without, path)?;
            return Ok(MapOutcome::Kept);
        }
        _ => {}
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), value));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = merge_value(kind, original.get(key), value, path)?;
        path.pop();
        match merged {
            Some(merged) => {
                original.insert(key.clone(), merged);
            }
            None => {
                original.remove(key);
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(items)) = original.get_mut(&field) {
            let mut field_path = path.clone();
            field_path.push(field);
            reorder(items, order, list_strategy(kind, &field_path));
        }
    }
    if let Some(Value::Array(retained)) = patch.get("$retainKeys") {
        original.retain(|key, _| retained.iter().any(|kept| kept.as_str() == Some(key)));
    }
    Ok(MapOutcome::Kept)
}

/// The merged value of one field; `None` when the patch deletes it.
fn merge_value(
    kind: &Kind,
    original: Option<&Value>,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => {
            let mut merged = match original {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            };
            match merge_map(kind, &mut merged, patch, path)? {
                MapOutcome::Kept => Ok(Some(Value::Object(merged))),
                MapOutcome::Deleted => Ok(None),
            }
        }
        Value::Array(patch) => {
            let original = match original {
                Some(Value::Array(items)) => items.as_slice(),
                _ => &[],
            };
            Ok(Some(Value::Array(merge_list(kind, original, patch, path)?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

fn merge_list(
    kind: &Kind,
    original: &[Value],
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    let replace_all = patch
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    match list_strategy(kind, path) {
        ListStrategy::Replace => Ok(patch.to_vec()),
        ListStrategy::MergeSet => {
            let mut merged = if replace_all {
                Vec::new()
            } else {
                original.to_vec()
            };
            for item in patch {
                if item.is_object() {
                    continue;
                }
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(merged)
        }
        ListStrategy::MergeByKey(key) => {
            let mut merged: Vec<Value> = if replace_all {
                Vec::new()
            } else {
                original.to_vec()
            };
            for item in patch {
                let Value::Object(fields) = item else {
                    return Err(PatchError::Malformed(format!(
                        "a list merged by {key:?} must hold objects, found {item}"
                    )));
                };
                let directive = directive(fields)?;
                if directive == Some("replace") && fields.len() == 1 {
                    continue;
                }
                let Some(id) = fields.get(key) else {
                    return Err(PatchError::Malformed(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let position = merged
                    .iter()
                    .position(|existing| existing.get(key) == Some(id));
                match (directive, position) {
                    (Some("delete"), Some(position)) => {
                        merged.remove(position);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(position)) => {
                        let mut target = match &merged[position] {
                            Value::Object(map) => map.clone(),
                            _ => Map::new(),
                        };
                        merge_map(kind, &mut target, fields, path)?;
                        merged[position] = Value::Object(target);
                    }
                    (_, None) => {
                        let mut target = Map::new();
                        merge_map(kind, &mut target, fields, path)?;
                        merged.push(Value::Object(target));
                    }
                }
            }
            Ok(merged)
        }
    }
}

/// Puts the items in the order a `$setElementOrder/` directive gives; items it does not name
/// keep their relative order after the named ones.
fn reorder(items: &mut [Value], order: &Value, strategy: ListStrategy) {
    let Some(order) = order.as_array() else {
        return;
    };
    let rank = |item: &Value| {
        order.iter().position(|wanted| match strategy {
            ListStrategy::MergeByKey(key) => {
                wanted.get(key).is_some() && wanted.get(key) == item.get(key)
            }
            _ => wanted == item,
        })
    };
    items.sort_by_key(|item| rank(item).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["--one"]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}]
            }
        })
    }

    fn smp(patch: Value) -> Value {
        strategic_merge(find_kind("Pod").unwrap(), &pod(), &patch).unwrap()
    }

    #[test]
    fn keyed_lists_merge_item_by_item() {
        let merged = smp(json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}}));
        assert_eq!(merged["spec"]["containers"][0]["image"], "app:2");
        assert_eq!(merged["spec"]["containers"][0]["env"][1]["value"], "2");
        assert_eq!(merged["spec"]["containers"][1]["name"], "sidecar");
        let added = smp(json!({"spec": {"containers": [{"name": "extra", "image": "e"}]}}));
        assert_eq!(added["spec"]["containers"].as_array().unwrap().len(), 3);
        let env = smp(
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}),
        );
        assert_eq!(
            env["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
    }

    #[test]
    fn directives_delete_and_replace() {
        let deleted =
            smp(json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}));
        assert_eq!(deleted["spec"]["containers"].as_array().unwrap().len(), 1);
        let replaced = smp(
            json!({"spec": {"volumes": [{"name": "new", "emptyDir": {}}, {"$patch": "replace"}]}}),
        );
        assert_eq!(
            replaced["spec"]["volumes"],
            json!([{"name": "new", "emptyDir": {}}])
        );
        let map_replaced = smp(json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}}));
        assert_eq!(map_replaced["metadata"]["labels"], json!({"c": "3"}));
        let map_deleted = smp(json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert!(map_deleted["metadata"].get("labels").is_none());
        let unset = smp(json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(unset["metadata"]["labels"], json!({"b": "2"}));
        let primitive = smp(json!({"$deleteFromPrimitiveList/finalizers": ["x"], "metadata": {}}));
        assert_eq!(
            primitive["metadata"]["finalizers"],
            json!(["x"]),
            "the directive is scoped to its own map"
        );
        let primitive = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}));
        assert_eq!(primitive["metadata"]["finalizers"], json!([]));
        assert!(
            strategic_merge(
                find_kind("Pod").unwrap(),
                &pod(),
                &json!({"metadata": {"$patch": "explode"}})
            )
            .is_err()
        );
    }

    #[test]
    fn atomic_lists_are_replaced_and_sets_are_merged() {
        let args = smp(json!({"spec": {"containers": [{"name": "app", "args": ["--two"]}]}}));
        assert_eq!(args["spec"]["containers"][0]["args"], json!(["--two"]));
        let finalizers = smp(json!({"metadata": {"finalizers": ["y", "x"]}}));
        assert_eq!(finalizers["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn element_order_is_applied() {
        let ordered = smp(
            json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}], "containers": [{"name": "app", "image": "app:3"}]}}),
        );
        assert_eq!(ordered["spec"]["containers"][0]["name"], "sidecar");
        assert_eq!(ordered["spec"]["containers"][1]["image"], "app:3");
        assert!(ordered["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn a_merge_key_is_required() {
        let error = strategic_merge(
            find_kind("Pod").unwrap(),
            &pod(),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert!(
            matches!(error, Err(PatchError::Malformed(message)) if message.contains("merge key: name"))
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let kind = find_kind("Pod").unwrap();
        let merged = apply_patch(
            kind,
            &pod(),
            PatchType::Merge,
            &json!({"spec": {"volumes": null}, "metadata": {"labels": {"a": "9"}}}),
        )
        .unwrap();
        assert!(merged["spec"].get("volumes").is_none());
        assert_eq!(merged["metadata"]["labels"]["a"], "9");
        let patched = apply_patch(
            kind,
            &pod(),
            PatchType::Json,
            &json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "app:9"}]),
        )
        .unwrap();
        assert_eq!(patched["spec"]["containers"][0]["image"], "app:9");
        let failed = apply_patch(
            kind,
            &pod(),
            PatchType::Json,
            &json!([{"op": "test", "path": "/metadata/name", "value": "q"}]),
        );
        assert!(matches!(failed, Err(PatchError::Failed(_))));
        assert!(matches!(
            apply_patch(kind, &pod(), PatchType::Json, &json!({"op": "add"})),
            Err(PatchError::Malformed(_))
        ));
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
