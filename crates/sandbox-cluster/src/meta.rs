//! Reading and writing the well-known parts of an object kept as JSON: metadata, finalizers,
//! owner references, timestamps. Objects stay `serde_json::Value` in the sandbox so that any
//! kind in the registry is stored without code of its own.

use serde_json::{Map, Value};

/// The string at a path of object keys, if every step exists and the leaf is a string.
pub fn str_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(object, path)?.as_str()
}

/// The value at a path of object keys.
pub fn value_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| value.get(key))
}

/// Sets the value at a path of object keys, creating the objects on the way (and replacing
/// anything in the way that is not an object).
pub fn set_at(object: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *object = value;
        return;
    };
    let mut current = object;
    for key in parents {
        current = object_entry(current)
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    object_entry(current).insert(last.to_string(), value);
}

/// Removes the value at a path of object keys; returns it.
pub fn remove_at(object: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = object;
    for key in parents {
        current = current.get_mut(key)?;
    }
    current.as_object_mut()?.remove(*last)
}

/// The map inside `value`, turning `value` into an empty map first if it is not one.
fn object_entry(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        // The branch above made it an object.
        _ => unreachable!("value was just made an object"),
    }
}

/// `metadata.name`, or `""`.
pub fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).unwrap_or_default()
}

/// `metadata.namespace`, or `""`.
pub fn namespace(object: &Value) -> &str {
    str_at(object, &["metadata", "namespace"]).unwrap_or_default()
}

/// `metadata.uid`, or `""`.
pub fn uid(object: &Value) -> &str {
    str_at(object, &["metadata", "uid"]).unwrap_or_default()
}

/// `metadata.resourceVersion`, or `""`.
pub fn resource_version(object: &Value) -> &str {
    str_at(object, &["metadata", "resourceVersion"]).unwrap_or_default()
}

/// `metadata.labels` as a map (empty when absent).
pub fn labels(object: &Value) -> Map<String, Value> {
    value_at(object, &["metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether the object has a `deletionTimestamp`: it is being deleted.
pub fn is_deleting(object: &Value) -> bool {
    value_at(object, &["metadata", "deletionTimestamp"]).is_some_and(|value| !value.is_null())
}

/// Whether a deleted object may leave the store: no finalizer holds it and its deletion
/// time has come (a terminating pod's lies in the future until its grace period is over).
pub fn deletion_complete(object: &Value) -> bool {
    let due = str_at(object, &["metadata", "deletionTimestamp"])
        .and_then(parse_time)
        .is_some_and(|at| at <= jiff::Timestamp::now());
    due && finalizers(object).is_empty()
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    value_at(object, &["metadata", "finalizers"])
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.finalizers` holds `finalizer`.
pub fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    finalizers(object)
        .iter()
        .any(|present| present == finalizer)
}

/// Adds a finalizer unless present; returns whether it changed the object.
pub fn add_finalizer(object: &mut Value, finalizer: &str) -> bool {
    let mut all = finalizers(object);
    if all.iter().any(|present| present == finalizer) {
        return false;
    }
    all.push(finalizer.to_string());
    set_finalizers(object, all);
    true
}

/// Removes a finalizer; returns whether it was there.
pub fn remove_finalizer(object: &mut Value, finalizer: &str) -> bool {
    let mut all = finalizers(object);
    let before = all.len();
    all.retain(|present| present != finalizer);
    if all.len() == before {
        return false;
    }
    set_finalizers(object, all);
    true
}

fn set_finalizers(object: &mut Value, finalizers: Vec<String>) {
    if finalizers.is_empty() {
        remove_at(object, &["metadata", "finalizers"]);
    } else {
        set_at(object, &["metadata", "finalizers"], Value::from(finalizers));
    }
}

/// `metadata.ownerReferences`.
pub fn owner_references(object: &Value) -> Vec<Value> {
    value_at(object, &["metadata", "ownerReferences"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The uid of the owner reference with `controller: true`, if any.
pub fn controller_uid(object: &Value) -> Option<String> {
    owner_references(object)
        .iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|owner| owner.get("uid")?.as_str().map(str::to_string))
}

/// Now, as the API writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

/// A timestamp as the API writes it.
pub fn format_time(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an API timestamp.
pub fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// The object without what the server alone decides (for "did this change anything?").
pub fn without_volatile(object: &Value) -> Value {
    let mut copy = object.clone();
    for field in ["resourceVersion", "managedFields", "generation"] {
        remove_at(&mut copy, &["metadata", field]);
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_created_and_removed() {
        let mut object = json!({"metadata": {"name": "a"}});
        set_at(&mut object, &["spec", "claimRef", "name"], json!("c"));
        assert_eq!(str_at(&object, &["spec", "claimRef", "name"]), Some("c"));
        assert_eq!(
            remove_at(&mut object, &["spec", "claimRef"]),
            Some(json!({"name": "c"}))
        );
        assert_eq!(object, json!({"metadata": {"name": "a"}, "spec": {}}));
    }

    #[test]
    fn finalizers_are_a_set_and_vanish_when_empty() {
        let mut object = json!({"metadata": {"name": "a"}});
        assert!(add_finalizer(&mut object, "x"));
        assert!(!add_finalizer(&mut object, "x"));
        assert!(has_finalizer(&object, "x"));
        assert!(remove_finalizer(&mut object, "x"));
        assert!(!remove_finalizer(&mut object, "x"));
        assert_eq!(object, json!({"metadata": {"name": "a"}}));
    }

    #[test]
    fn timestamps_have_whole_seconds() {
        let time: jiff::Timestamp = "2026-11-02T10:00:00.75Z".parse().unwrap();
        assert_eq!(format_time(time), "2026-11-02T10:00:00Z");
        assert_eq!(
            parse_time("2026-11-02T10:00:00Z")
                .map(format_time)
                .as_deref(),
            Some("2026-11-02T10:00:00Z")
        );
    }
}
