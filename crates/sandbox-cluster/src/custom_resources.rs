//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) and the kinds they define: once a
//! definition is stored, each version it serves is a kind the sandbox serves like its own
//! (discovery, OpenAPI, paths, the verbs, watches), with no typed schema
//! ([`kube_kinds::Schema::Custom`]).
//!
//! Which kinds are served is read from the stored definitions at every request
//! ([`State::served_kinds`]), never kept beside them, so a definition created, restored from
//! a state file or deleted is served or not at once. The kind of a definition's version is
//! made once per process by [`kube_kinds::custom_kind`] (`&'static`, as every kind is here).
//!
//! Differences from a real cluster: the definition's `openAPIV3Schema` is not enforced (its
//! objects keep every field, as with `x-kubernetes-preserve-unknown-fields`), there is no
//! conversion between versions (objects are stored once, in the version they were written
//! in), `additionalPrinterColumns` and `categories` are not shown, and a definition is
//! established at once.

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::api_error::FieldError;
use super::cluster::State;
use super::meta;
use super::selectors::is_dns_label;
use super::store::ObjectKey;
use kube_kinds::{CustomKind, Kind, custom_kind, kinds};

/// The kind of CustomResourceDefinitions. It is the sandbox's, not in the shared table:
/// runbook learns it from discovery like any kind it has no type for.
pub fn definitions() -> &'static Kind {
    static DEFINITIONS: LazyLock<Kind> =
        LazyLock::new(|| Kind::of::<CustomResourceDefinition>(&["crd", "crds"]));
    &DEFINITIONS
}

/// Whether `kind` is the kind of CustomResourceDefinitions.
pub fn is_definitions(kind: &Kind) -> bool {
    kind.group == "apiextensions.k8s.io" && kind.kind == "CustomResourceDefinition"
}

/// The kinds a definition serves: one per version marked `served`.
pub fn defined_kinds(definition: &Value) -> Vec<&'static Kind> {
    let text = |pointer: &str| {
        definition
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (group, kind, plural) = (
        text("/spec/group"),
        text("/spec/names/kind"),
        text("/spec/names/plural"),
    );
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let short_names: Vec<String> = definition
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let versions = definition
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|version| version.get("served").and_then(Value::as_bool) == Some(true))
        .filter_map(|version| version.get("name").and_then(Value::as_str))
        .map(|name| {
            let version = versions
                .iter()
                .find(|version| version.get("name").and_then(Value::as_str) == Some(name));
            custom_kind(CustomKind {
                group: group.clone(),
                version: name.to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: text("/spec/names/singular"),
                namespaced: text("/spec/scope") != "Cluster",
                short_names: short_names.clone(),
                status_subresource: version
                    .and_then(|version| version.pointer("/subresources/status"))
                    .is_some(),
            })
        })
        .collect()
}

impl State {
    /// Every kind the cluster serves now: the table's, CustomResourceDefinitions, and the
    /// kinds of the stored definitions.
    pub fn served_kinds(&self) -> Vec<&'static Kind> {
        let mut served: Vec<&'static Kind> = kinds().iter().collect();
        served.push(definitions());
        for definition in self.store.list(definitions(), None) {
            for kind in defined_kinds(definition) {
                // A resource already served (a built-in one redefined) stays what it was.
                let taken = served.iter().any(|known| {
                    known.group == kind.group
                        && known.plural == kind.plural
                        && (known.version == kind.version || !known.is_custom())
                });
                if !taken {
                    served.push(kind);
                }
            }
        }
        served
    }

    /// The served kind of an `apiVersion` and `kind` pair, as in a manifest.
    pub fn served_kind_of(&self, api_version: &str, kind: &str) -> Option<&'static Kind> {
        self.served_kinds()
            .into_iter()
            .find(|served| served.api_version == api_version && served.kind == kind)
    }

    /// Removes the objects of kinds no stored definition serves any more (their definition
    /// was deleted), as the real server's finalizer on a definition deletes its objects.
    /// Returns whether it removed any.
    pub(super) fn remove_undefined_objects(&mut self) -> bool {
        let served = self.served_kinds();
        let orphans: Vec<ObjectKey> = self
            .store
            .all()
            .map(|(key, _)| key)
            .filter(|key| !served.iter().any(|kind| key.is(kind)))
            .cloned()
            .collect();
        for key in &orphans {
            self.store.remove(key);
        }
        !orphans.is_empty()
    }
}

/// What a new definition's status says: its names accepted, established, stored in its
/// storage version (a real server takes a moment; the sandbox establishes it at once).
pub fn admit(definition: &mut Value, now: &str) {
    let names = definition
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let stored: Vec<Value> = definition
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter(|version| version.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|version| version.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    definition["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
}

/// The rules on a definition the real server checks (422): its name, group, names, scope
/// and versions.
pub fn validate(definition: &Value, errors: &mut Vec<FieldError>) {
    let text = |pointer: &str| {
        definition
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let group = text("/spec/group");
    let plural = text("/spec/names/plural");
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errors.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    } else if !is_dns_label(plural) {
        errors.push(FieldError::invalid(
            "spec.names.plural",
            &json!(plural),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    }
    if text("/spec/names/kind").is_empty() {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    let name = meta::name(definition);
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = text("/spec/scope");
    if !matches!(scope, "Namespaced" | "Cluster") {
        errors.push(FieldError::not_supported(
            "spec.scope",
            &json!(scope),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = definition
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions
        .iter()
        .filter(|version| version.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions
        .iter()
        .any(|version| version.get("served").and_then(Value::as_bool) == Some(true))
    {
        errors.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions),
            "must have at least one version marked as served",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, WriteOptions};
    use crate::delete::DeleteOptions;
    use crate::patch::PatchType;
    use crate::update::{PatchBody, Subresource};

    fn data_migrates() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "datamigrates.data.fluid.io"},
            "spec": {
                "group": "data.fluid.io",
                "names": {"kind": "DataMigrate", "plural": "datamigrates", "singular": "datamigrate", "shortNames": ["dm"]},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"status": {}},
                }],
            },
        })
    }

    #[test]
    fn a_definition_defines_a_kind_per_served_version() {
        let kinds = defined_kinds(&data_migrates());
        assert_eq!(kinds.len(), 1);
        let kind = kinds[0];
        assert_eq!(
            (kind.api_version, kind.plural, kind.namespaced),
            ("data.fluid.io/v1alpha1", "datamigrates", true)
        );
        assert!(kind.matches("dm") && kind.is_custom());
        assert!(crate::schema::has_field(kind, "status"));
    }

    fn write() -> WriteOptions {
        WriteOptions {
            field_manager: "test".into(),
            ..WriteOptions::default()
        }
    }

    #[test]
    fn objects_of_a_defined_kind_are_served_until_the_definition_goes() {
        let cluster = Cluster::new(7);
        let served = |cluster: &Cluster| {
            cluster.read(|state| state.served_kind_of("data.fluid.io/v1alpha1", "DataMigrate"))
        };
        assert!(served(&cluster).is_none());
        let created = cluster
            .write(|state| state.create(definitions(), "", data_migrates(), &write()))
            .expect("the definition is created");
        assert!(kube_kinds::has_condition(
            &created.object["status"],
            "Established"
        ));
        let kind = served(&cluster).expect("its kind is served");
        let migrate = json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "DataMigrate", "metadata": {"name": "m"}, "spec": {"anything": [1, {"goes": true}]}, "status": {"phase": "Complete"}});
        let stored = cluster
            .write(|state| state.create(kind, "default", migrate, &write()))
            .expect("an object of the kind is created")
            .object;
        // No schema: every field is kept; the status subresource keeps status apart.
        assert_eq!(stored["spec"]["anything"][1]["goes"], true);
        assert!(stored.get("status").is_none());
        assert_eq!(stored["metadata"]["generation"], 1);
        let status = json!({"status": {"phase": "Executing"}});
        let patch = PatchBody {
            patch_type: PatchType::Merge,
            body: &status,
        };
        let patched = cluster
            .write(|state| state.patch(kind, "default", "m", &patch, Subresource::Status, &write()))
            .expect("the status is patched")
            .object;
        assert_eq!(patched["status"]["phase"], "Executing");
        let wrong = json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "DataLoad", "metadata": {"name": "l"}});
        let refused = cluster
            .write(|state| state.create(kind, "default", wrong, &write()))
            .expect_err("another kind is refused");
        assert_eq!(refused.code, 400);

        cluster
            .write(|state| {
                state.delete(
                    definitions(),
                    "",
                    "datamigrates.data.fluid.io",
                    &DeleteOptions::default(),
                    false,
                )
            })
            .expect("the definition is deleted");
        cluster.write(|state| crate::controllers::reconcile(state, jiff::Timestamp::now()));
        assert!(served(&cluster).is_none());
        assert!(cluster.read(|state| state.store.list(kind, None).next().is_none()));
    }

    #[test]
    fn saved_objects_load_after_their_definition() {
        let cluster = Cluster::new(7);
        cluster
            .write(|state| state.create(definitions(), "", data_migrates(), &write()))
            .expect("the definition is created");
        let kind = cluster
            .read(|state| state.served_kind_of("data.fluid.io/v1alpha1", "DataMigrate"))
            .expect("served");
        let migrate = json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "DataMigrate", "metadata": {"name": "m"}});
        cluster
            .write(|state| state.create(kind, "default", migrate, &write()))
            .expect("created");
        // A snapshot lists the object before its definition (`data.fluid.io` sorts first).
        let mut items = cluster.read(State::snapshot)["items"]
            .as_array()
            .cloned()
            .expect("items");
        items.reverse();
        let restored = Cluster::new(8);
        let loaded = restored
            .write(|state| state.load_objects(items, std::path::Path::new("state.yaml")))
            .expect("the state loads");
        assert!(loaded >= 2);
        assert!(
            restored
                .read(|state| state.get(kind, "default", "m"))
                .is_ok()
        );
    }

    #[test]
    fn a_definition_is_checked() {
        let mut errors = Vec::new();
        validate(&data_migrates(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut wrong = data_migrates();
        wrong["metadata"]["name"] = json!("migrates.data.fluid.io");
        wrong["spec"]["scope"] = json!("Everywhere");
        wrong["spec"]["versions"][0]["storage"] = json!(false);
        validate(&wrong, &mut errors);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "spec.scope", "spec.versions"]);
    }
}
