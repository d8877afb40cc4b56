//! What the sandbox knows of the kinds' schemas beyond their field types: how each list
//! merges (the `patchMergeKey`/`patchStrategy` tags of the Go types, which strategic merge
//! patch and server-side apply both follow) and whether a kind has a field at all.

use serde_json::{Value, json};

use kube_kinds::{Kind, Schema};

/// How a list merges in a strategic merge patch or an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Items are objects identified by this field; patches merge into the matching item.
    MergeByKey(&'static str),
    /// A list of scalars treated as a set (`finalizers`).
    MergeSet,
    /// The list is replaced whole (the default, "atomic").
    Replace,
}

/// Lists merged by key, wherever they appear (pod specs sit at `spec` in a Pod and at
/// `spec.template.spec` in a Deployment or a Job, so the field name is what identifies them).
const KEYED_LISTS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("volumes", "name"),
    ("imagePullSecrets", "name"),
    ("env", "name"),
    ("volumeMounts", "mountPath"),
    ("volumeDevices", "devicePath"),
    ("hostAliases", "ip"),
    ("resourceClaims", "name"),
    ("schedulingGates", "name"),
    ("resizePolicy", "resourceName"),
    ("conditions", "type"),
    ("ownerReferences", "uid"),
];

/// How the list at `path` (object keys from the root, list positions left out) merges.
pub fn list_strategy(kind: &Kind, path: &[String]) -> ListStrategy {
    let Some(field) = path.last() else {
        return ListStrategy::Replace;
    };
    match field.as_str() {
        "finalizers" if path.len() == 2 && path[0] == "metadata" => ListStrategy::MergeSet,
        // A Service's ports are keyed by port, a container's by containerPort.
        "ports" if kind.kind == "Service" && path.len() == 2 => ListStrategy::MergeByKey("port"),
        "ports" => ListStrategy::MergeByKey("containerPort"),
        _ => KEYED_LISTS
            .iter()
            .find(|(name, _)| name == field)
            .map_or(ListStrategy::Replace, |(_, key)| {
                ListStrategy::MergeByKey(key)
            }),
    }
}

/// Whether the kind's typed schema has a top-level field `field` (e.g. `status`, `spec`).
///
/// Found by asking the typed deserializer: a known field rejects a value of the wrong type,
/// an unknown one is ignored. Both an empty list and an empty map are offered, since no
/// typed field accepts both.
///
/// A custom resource has no typed schema: it has a `spec` (the server counts its changes in
/// `generation`) and a `status` the server keeps apart only when its definition declares
/// the `status` subresource; otherwise its status is a field like any other.
pub fn has_field(kind: &Kind, field: &str) -> bool {
    let validator = match kind.schema {
        Schema::Typed(validator) => validator,
        Schema::Custom { status_subresource } => {
            return match field {
                "spec" => true,
                "status" => status_subresource,
                _ => false,
            };
        }
    };
    [json!([]), json!({})].into_iter().any(|probe| {
        let mut manifest = json!({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": "probe"}});
        manifest[field] = probe;
        validator.validate(&manifest).is_err()
    })
}

/// Field paths present in `manifest` that the kind's typed schema does not know, as the real
/// server names them for `fieldValidation=Strict` (`spec.containers[0].imagee`).
///
/// The typed deserializer ignores unknown fields, so each field is probed: replaced by an
/// empty list, then by an empty map. A known field rejects at least one of them (nothing
/// typed accepts both); an unknown field accepts both. The manifest must validate as is.
/// A custom resource's fields are all kept: the sandbox does not read its definition's
/// schema (as a definition with `x-kubernetes-preserve-unknown-fields` would keep them). So
/// are a CustomResourceDefinition's: its schemas hold free-form JSON (`default`, `example`)
/// and empty objects (`subresources.status: {}`), which accept both probes like unknown
/// fields do.
pub fn unknown_fields(kind: &Kind, manifest: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if kind.is_custom() || super::custom_resources::is_definitions(kind) {
        return unknown;
    }
    let mut pointer = Vec::new();
    walk_fields(kind, manifest, manifest, &mut pointer, &mut unknown);
    unknown
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn walk_fields(
    kind: &Kind,
    root: &Value,
    value: &Value,
    steps: &mut Vec<Step>,
    unknown: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                steps.push(Step::Key(key.clone()));
                // managedFields hold free-form field sets; the real server skips them too.
                let skip = steps.len() == 2
                    && matches!(&steps[0], Step::Key(k) if k == "metadata")
                    && key == "managedFields";
                if !skip {
                    if is_known(kind, root, steps) {
                        walk_fields(kind, root, child, steps, unknown);
                    } else {
                        unknown.push(display_path(steps));
                    }
                }
                steps.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                steps.push(Step::Index(index));
                walk_fields(kind, root, child, steps, unknown);
                steps.pop();
            }
        }
        _ => {}
    }
}

fn is_known(kind: &Kind, root: &Value, steps: &[Step]) -> bool {
    [json!([]), json!({})].into_iter().any(|probe| {
        let mut manifest = root.clone();
        if let Some(slot) = slot_mut(&mut manifest, steps) {
            *slot = probe;
        }
        kind.validator()
            .is_some_and(|validator| validator.validate(&manifest).is_err())
    })
}

fn slot_mut<'a>(value: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    steps.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.get_mut(key),
        Step::Index(index) => value.get_mut(*index),
    })
}

fn display_path(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// Removes the fields at the given display paths (as [`unknown_fields`] returns them): the
/// real server drops unknown fields when it decodes a request into its typed object.
pub fn prune(manifest: &mut Value, kind: &Kind) {
    // Deepest first, so that indices and parents stay valid while removing.
    let mut paths = unknown_fields(kind, manifest);
    paths.reverse();
    for path in paths {
        remove_display_path(manifest, &path);
    }
}

fn remove_display_path(manifest: &mut Value, path: &str) {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        steps.push(Step::Key(key.to_string()));
        for index in indices.split(['[', ']']).filter(|index| !index.is_empty()) {
            if let Ok(index) = index.parse() {
                steps.push(Step::Index(index));
            }
        }
    }
    if let Some((Step::Key(last), parents)) = steps.split_last()
        && let Some(Value::Object(parent)) = slot_mut(manifest, parents)
    {
        parent.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_string).collect()
    }

    #[test]
    fn lists_merge_by_their_go_tags() {
        let pod = find_kind("Pod").unwrap();
        let deployment = find_kind("Deployment").unwrap();
        let service = find_kind("Service").unwrap();
        assert_eq!(
            list_strategy(pod, &path("spec.containers")),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy(deployment, &path("spec.template.spec.volumes")),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            list_strategy(pod, &path("spec.containers.volumeMounts")),
            ListStrategy::MergeByKey("mountPath")
        );
        assert_eq!(
            list_strategy(pod, &path("spec.containers.ports")),
            ListStrategy::MergeByKey("containerPort")
        );
        assert_eq!(
            list_strategy(service, &path("spec.ports")),
            ListStrategy::MergeByKey("port")
        );
        assert_eq!(
            list_strategy(pod, &path("metadata.finalizers")),
            ListStrategy::MergeSet
        );
        assert_eq!(
            list_strategy(pod, &path("spec.containers.args")),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy(pod, &path("spec.tolerations")),
            ListStrategy::Replace
        );
    }

    #[test]
    fn top_level_fields_are_found_from_the_typed_schema() {
        assert!(has_field(find_kind("Pod").unwrap(), "status"));
        assert!(has_field(find_kind("Deployment").unwrap(), "status"));
        assert!(!has_field(find_kind("ConfigMap").unwrap(), "status"));
        assert!(!has_field(find_kind("Lease").unwrap(), "status"));
        assert!(has_field(find_kind("ConfigMap").unwrap(), "data"));
    }

    #[test]
    fn unknown_fields_are_named_with_their_paths() {
        let pod = find_kind("Pod").unwrap();
        let mut manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"anything": "goes"}, "colour": "red"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo", "env": [{"name": "A", "value": "1", "vlaue": "2"}]}]},
            "extra": {"deep": 1}
        });
        assert_eq!(
            unknown_fields(pod, &manifest),
            [
                "extra",
                "metadata.colour",
                "spec.containers[0].env[0].vlaue",
                "spec.containers[0].imagee"
            ]
        );
        prune(&mut manifest, pod);
        assert!(unknown_fields(pod, &manifest).is_empty());
        assert_eq!(
            manifest["spec"]["containers"][0]["env"][0],
            json!({"name": "A", "value": "1"})
        );
        assert_eq!(manifest["metadata"]["labels"], json!({"anything": "goes"}));
    }
}
