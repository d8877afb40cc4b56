//! Showing how an object would change, as a unified diff of its YAML, without the fields
//! the server manages (resourceVersion, managedFields, status, ...).

use similar::TextDiff;

/// Metadata fields set by the server; a diff of them says nothing to a reviewer.
const SERVER_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
];

/// The object without server-managed fields and without `status`.
pub fn comparable(object: &serde_json::Value) -> serde_json::Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for field in SERVER_METADATA {
                metadata.remove(*field);
            }
            let empty_annotations = metadata
                .get("annotations")
                .and_then(|a| a.as_object())
                .is_some_and(|a| a.is_empty());
            if empty_annotations {
                metadata.remove("annotations");
            }
        }
    }
    object
}

fn to_yaml(object: &serde_json::Value) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|_| object.to_string())
}

/// A unified diff from `before` (absent: a creation) to `after`, or `None` when they are the
/// same once server-managed fields are left out.
pub fn object_diff(
    label: &str,
    before: Option<&serde_json::Value>,
    after: &serde_json::Value,
) -> Option<String> {
    let before_yaml = before
        .map(|object| to_yaml(&comparable(object)))
        .unwrap_or_default();
    let after_yaml = to_yaml(&comparable(after));
    if before_yaml == after_yaml {
        return None;
    }
    let diff = TextDiff::from_lines(&before_yaml, &after_yaml);
    let old_header = if before.is_some() {
        format!("{label} (live)")
    } else {
        "/dev/null".to_string()
    };
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(&old_header, &format!("{label} (after)"))
            .to_string(),
    )
}

/// Whether every field given in `desired` has the same value in `live` (fields that
/// `desired` does not mention are left alone, as server-side apply does).
pub fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    match (live, desired) {
        (serde_json::Value::Object(live), serde_json::Value::Object(desired)) => {
            desired.iter().all(|(key, value)| {
                live.get(key)
                    .is_some_and(|live_value| contains(live_value, value))
                    || value.is_null() && !live.contains_key(key)
            })
        }
        (serde_json::Value::Array(live), serde_json::Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_diff_shows_only_what_changes() {
        let live = json!({"metadata": {"name": "pv", "resourceVersion": "7"}, "spec": {"persistentVolumeReclaimPolicy": "Delete", "capacity": {"storage": "1Mi"}}});
        let after = json!({"metadata": {"name": "pv", "resourceVersion": "8"}, "spec": {"persistentVolumeReclaimPolicy": "Retain", "capacity": {"storage": "1Mi"}}});
        let diff = object_diff("PersistentVolume pv", Some(&live), &after).unwrap();
        assert!(
            diff.contains("-  persistentVolumeReclaimPolicy: Delete"),
            "{diff}"
        );
        assert!(
            diff.contains("+  persistentVolumeReclaimPolicy: Retain"),
            "{diff}"
        );
        assert!(!diff.contains("resourceVersion"));
        assert!(object_diff("x", Some(&live), &live).is_none());
    }

    #[test]
    fn containment_ignores_fields_the_manifest_does_not_mention() {
        let live = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(contains(
            &live,
            &json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}})
        ));
        assert!(!contains(&live, &json!({"spec": {"type": "NodePort"}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}})
        ));
    }
}
