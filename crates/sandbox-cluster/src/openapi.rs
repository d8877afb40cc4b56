//! The OpenAPI v3 documents kubectl reads before `create` and `apply`: it only needs to see
//! that the server validates fields itself (a `fieldValidation` query parameter on the PATCH
//! operation of the kind) and which schema carries which group-version-kind. So each
//! document is a stub: paths, parameters, `x-kubernetes-group-version-kind`, and schemas with
//! the top-level fields only.
//!
//! The PATCH operations deliberately declare no strategic-merge request body: kubectl would
//! then compute client-side apply patches from these (stub) schemas instead of from its own
//! built-in types, and lose the merge keys.

use serde_json::{Map, Value, json};

use super::api_path::Served;
use super::identities::safe_hash;
use super::schema;
use kube_kinds::Kind;

/// The path of a group version's document, as the index and the URLs name it.
fn document_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group version's document is, with a hash that changes when the
/// document does (kubectl caches by it).
pub fn index(served: Served<'_>) -> Value {
    let mut paths = Map::new();
    for kind in served.0 {
        let path = document_path(kind.group, kind.version);
        if paths.contains_key(&path) {
            continue;
        }
        let hash =
            safe_hash(&document(served, kind.group, kind.version).to_string()).to_uppercase();
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `io.k8s.api.core.v1.Pod`: the schema name the real server uses; a custom resource's is
/// its group reversed (`io.fluid.data.v1alpha1.DataMigrate`).
fn schema_name(kind: &Kind) -> String {
    if kind.is_custom() {
        let reversed: Vec<&str> = kind.group.split('.').rev().collect();
        return format!("{}.{}.{}", reversed.join("."), kind.version, kind.kind);
    }
    let package = if kind.group.is_empty() {
        "core"
    } else {
        kind.group.split('.').next().unwrap_or(kind.group)
    };
    format!("io.k8s.api.{package}.{}.{}", kind.version, kind.kind)
}

fn parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn gvk(kind: &Kind) -> Value {
    json!({"group": kind.group, "version": kind.version, "kind": kind.kind})
}

fn operation(kind: &Kind, action: &str, parameters: Vec<Value>) -> Value {
    let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(kind))});
    json!({
        "operationId": format!("{action}{}", kind.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind),
    })
}

/// The document of one group version.
pub fn document(served: Served<'_>, group: &str, version: &str) -> Value {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let write_parameters = || {
        vec![
            parameter(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            parameter(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
            ),
            parameter(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
            ),
        ]
    };
    for kind in served
        .0
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
    {
        let collection = if kind.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
        } else {
            format!("{prefix}/{}", kind.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(kind, "list", vec![parameter("labelSelector", ""), parameter("fieldSelector", ""), parameter("watch", "")]),
                "post": operation(kind, "post", write_parameters()),
            }),
        );
        let mut patch_parameters = write_parameters();
        patch_parameters.push(parameter(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(kind, "get", Vec::new()),
                "put": operation(kind, "put", write_parameters()),
                "patch": operation(kind, "patch", patch_parameters),
                "delete": operation(kind, "delete", vec![parameter("dryRun", ""), parameter("propagationPolicy", "")]),
            }),
        );
        let mut properties = json!({
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        });
        for field in [
            "spec",
            "status",
            "data",
            "stringData",
            "binaryData",
            "type",
            "immutable",
        ] {
            if schema::has_field(kind, field) {
                properties[field] = json!({});
            }
        }
        if kind.is_custom() {
            // The sandbox does not read the definition's schema: any field is accepted.
            properties["spec"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
            properties["status"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        }
        schemas.insert(
            schema_name(kind),
            json!({
                "type": "object",
                "description": format!("{} (sandbox schema: top-level fields only).", kind.kind),
                "properties": properties,
                "x-kubernetes-group-version-kind": [gvk(kind)],
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<&'static Kind> {
        kube_kinds::kinds().iter().collect()
    }

    fn index() -> Value {
        super::index(Served(&table()))
    }

    fn document(group: &str, version: &str) -> Value {
        super::document(Served(&table()), group, version)
    }

    #[test]
    fn the_index_points_at_each_group_version() {
        let index = index();
        let core = index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(core.starts_with("/openapi/v3/api/v1?hash="));
        assert!(index["paths"]["apis/apps/v1"].is_object());
    }

    #[test]
    fn stateful_sets_have_their_paths_and_schema() {
        let document = document("apps", "v1");
        let patch =
            &document["paths"]["/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "StatefulSet"
        );
        assert!(document["components"]["schemas"]["io.k8s.api.apps.v1.StatefulSet"].is_object());
    }

    #[test]
    fn patch_operations_declare_field_validation() {
        let document = document("", "v1");
        let patch = &document["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|parameter| parameter["name"] == "fieldValidation")
        );
        assert!(document["paths"]["/api/v1/persistentvolumes/{name}"]["patch"].is_object());
        assert_eq!(
            document["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"]
                [0]["version"],
            "v1"
        );
    }
}
