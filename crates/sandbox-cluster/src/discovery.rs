//! Discovery: `/version`, `/api`, `/apis`, `/apis/{group}` and the resource lists of each
//! group version, all derived from the kind registry so that a new kind is served at once.

use serde_json::{Value, json};

use super::api_path::Served;
use super::scale::has_scale;
use super::schema;
use kube_kinds::Kind;

/// The Kubernetes version the sandbox claims. kubectl's dispatcher picks its client from it;
/// 1.33 gets a client that speaks WebSocket for exec.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

/// The named groups and their versions, in the order the registry lists them (then the
/// CustomResourceDefinitions' groups, in the order they were defined).
fn groups(served: Served<'_>) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for kind in served.0.iter().filter(|kind| !kind.group.is_empty()) {
        match groups.iter_mut().find(|(group, _)| *group == kind.group) {
            Some((_, versions)) if !versions.contains(&kind.version) => versions.push(kind.version),
            Some(_) => {}
            None => groups.push((kind.group, vec![kind.version])),
        }
    }
    groups
}

fn group_document(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(served: Served<'_>) -> Value {
    let groups: Vec<Value> = groups(served)
        .iter()
        .map(|(group, versions)| {
            let mut document = group_document(group, versions);
            if let Some(map) = document.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            document
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(served: Served<'_>, group: &str) -> Value {
    let versions = groups(served)
        .into_iter()
        .find(|(name, _)| *name == group)
        .map(|(_, versions)| versions)
        .unwrap_or_default();
    group_document(group, &versions)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The categories a kind belongs to: `kubectl get all` lists the kinds in `all`.
fn categories(kind: &Kind) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Pod" | "Service")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet")
        | ("batch", "Job") => &["all"],
        _ => &[],
    }
}

fn resource_entry(kind: &Kind) -> Value {
    json!({
        "categories": categories(kind),
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": VERBS,
        "shortNames": kind.short_names,
    })
}

/// `/api/v1`, `/apis/{group}/{version}`: each kind, and its `status` subresource if it has one.
pub fn resource_list(served: Served<'_>, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for kind in served
        .0
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
    {
        resources.push(resource_entry(kind));
        if schema::has_field(kind, "status") {
            resources.push(json!({
                "name": format!("{}/status", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if has_scale(kind) {
            resources.push(json!({
                "name": format!("{}/scale", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<&'static Kind> {
        kube_kinds::kinds().iter().collect()
    }

    fn resource_list(group: &str, version: &str) -> Value {
        super::resource_list(Served(&table()), group, version)
    }

    fn group_list() -> Value {
        super::group_list(Served(&table()))
    }

    fn group(group: &str) -> Value {
        super::group(Served(&table()), group)
    }

    #[test]
    fn the_core_group_lists_its_kinds_with_short_names() {
        let list = resource_list("", "v1");
        let resources = list["resources"].as_array().unwrap();
        let pv = resources
            .iter()
            .find(|resource| resource["name"] == "persistentvolumes")
            .unwrap();
        assert_eq!(pv["namespaced"], false);
        assert_eq!(pv["shortNames"], json!(["pv"]));
        assert_eq!(pv["singularName"], "persistentvolume");
        assert!(
            resources
                .iter()
                .any(|resource| resource["name"] == "pods/status")
        );
        assert!(
            !resources
                .iter()
                .any(|resource| resource["name"] == "configmaps/status")
        );
    }

    #[test]
    fn named_groups_come_from_the_registry() {
        let names: Vec<Value> = group_list()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|group| group["name"].clone())
            .collect();
        assert_eq!(
            names,
            [json!("apps"), json!("batch"), json!("coordination.k8s.io")]
        );
        assert_eq!(group("apps")["preferredVersion"]["groupVersion"], "apps/v1");
        assert_eq!(resource_list("apps", "v1")["groupVersion"], "apps/v1");
    }

    #[test]
    fn stateful_sets_are_served_with_their_status_and_scale() {
        let list = resource_list("apps", "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|resource| resource["name"].as_str())
            .filter(|name| name.starts_with("statefulsets"))
            .collect();
        assert_eq!(
            names,
            ["statefulsets", "statefulsets/status", "statefulsets/scale"]
        );
        let sets = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|resource| resource["name"] == "statefulsets")
            .unwrap();
        assert_eq!(sets["shortNames"], json!(["sts"]));
        assert_eq!(sets["categories"], json!(["all"]));
    }
}
