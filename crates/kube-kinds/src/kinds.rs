//! The Kubernetes kinds we know, shared by runbook's client (actions, template lookups) and
//! the sandbox cluster (discovery, storage). Adding a kind is one line in [`kinds`].
//!
//! Kinds a cluster serves beyond the table (those of CustomResourceDefinitions) are learnt
//! at run time and made with [`custom_kind`]: they have no typed schema.

use std::any::TypeId;
use std::sync::{LazyLock, Mutex, PoisonError};

use k8s_openapi::{NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;

/// One kind of object and how the API serves it.
#[derive(Debug, Clone)]
pub struct Kind {
    /// `PersistentVolume`.
    pub kind: &'static str,
    /// `""` for the core group, `apps`, `batch`, ...
    pub group: &'static str,
    /// `v1`.
    pub version: &'static str,
    /// `v1` or `apps/v1`.
    pub api_version: &'static str,
    /// `persistentvolumes`: the URL path segment.
    pub plural: &'static str,
    /// `persistentvolume`.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `pv`, `pvc`, `svc`, ...
    pub short_names: &'static [&'static str],
    /// What checks the kind's manifests.
    pub schema: Schema,
}

/// What is known of a kind's fields.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    /// A k8s-openapi type: field types and required fields are checked here.
    Typed(Validator),
    /// A kind learnt from a cluster: a custom resource's (its schema is the
    /// CustomResourceDefinition's, which only the server holds) or any built-in kind the
    /// table lacks. Nothing here checks its fields.
    Custom {
        /// Whether the definition declares the `status` subresource (writes to the object
        /// then keep its status, and `/status` writes only the status).
        status_subresource: bool,
    },
}

/// Checks manifests against a k8s-openapi type.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    validate: fn(&serde_json::Value) -> Result<(), String>,
    validate_yaml: fn(&str) -> Result<(), serde_saphyr::Error>,
}

impl Validator {
    /// Checks that a manifest has the shape of the type (field types, required fields).
    pub fn validate(&self, manifest: &serde_json::Value) -> Result<(), String> {
        (self.validate)(manifest)
    }

    /// Checks a manifest written in YAML as [`Validator::validate`] does, with the line and
    /// column of the value at fault in the error. Only the manifest may be in `text`: other
    /// lines of its file are blanked out, so that positions are the file's.
    pub fn validate_yaml(&self, text: &str) -> Result<(), serde_saphyr::Error> {
        (self.validate_yaml)(text)
    }
}

fn validate_as<K: DeserializeOwned>(manifest: &serde_json::Value) -> Result<(), String> {
    K::deserialize(manifest)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

fn validate_yaml_as<K: DeserializeOwned>(text: &str) -> Result<(), serde_saphyr::Error> {
    serde_saphyr::from_str::<K>(text).map(|_| ())
}

impl Kind {
    /// The kind of a k8s-openapi type, with its short names.
    pub fn of<K>(short_names: &'static [&'static str]) -> Self
    where
        K: Resource + DeserializeOwned + 'static,
        K::Scope: 'static,
    {
        Kind {
            kind: K::KIND,
            group: K::GROUP,
            version: K::VERSION,
            api_version: K::API_VERSION,
            plural: K::URL_PATH_SEGMENT,
            singular: K::KIND.to_ascii_lowercase(),
            namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
            short_names,
            schema: Schema::Typed(Validator {
                validate: validate_as::<K>,
                validate_yaml: validate_yaml_as::<K>,
            }),
        }
    }

    /// The typed schema's checks; `None` for a custom resource's kind, which has none here.
    pub fn validator(&self) -> Option<Validator> {
        match self.schema {
            Schema::Typed(validator) => Some(validator),
            Schema::Custom { .. } => None,
        }
    }

    /// Whether the kind was learnt from a cluster (a custom resource's), not from the table.
    pub fn is_custom(&self) -> bool {
        matches!(self.schema, Schema::Custom { .. })
    }

    /// kube's description of the resource, for `Api<DynamicObject>`.
    pub fn api_resource(&self) -> kube_core::discovery::ApiResource {
        kube_core::discovery::ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version.into(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// Whether `name` designates this kind: its kind, plural, singular or a short name, in
    /// any case (`PersistentVolume`, `pv`, `persistentvolumes`).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        name == self.singular
            || name == self.plural
            || name == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&name.as_str())
    }
}

/// A kind the API serves that is not in the table, as discovery or a
/// CustomResourceDefinition describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomKind {
    /// `data.fluid.io`.
    pub group: String,
    /// `v1alpha1`.
    pub version: String,
    /// `DataMigrate`.
    pub kind: String,
    /// `datamigrates`.
    pub plural: String,
    /// `datamigrate` (the lowercase kind when empty).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `dm`, ...
    pub short_names: Vec<String>,
    /// Whether the `status` subresource is served.
    pub status_subresource: bool,
}

/// The kind of a [`CustomKind`], made once per process and description.
///
/// Every user of kinds (object keys, paths, watches, the actions) holds `&'static Kind`, as
/// the table's kinds are; a kind learnt at run time is leaked once so that it can be used the
/// same way, and the same description gives back the same kind, so the leak is bounded by
/// the distinct custom kinds a process meets (a handful of CustomResourceDefinitions).
pub fn custom_kind(custom: CustomKind) -> &'static Kind {
    static MADE: Mutex<Vec<(CustomKind, &'static Kind)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, kind)) = made.iter().find(|(known, _)| *known == custom) {
        return kind;
    }
    let leak = |text: &str| -> &'static str { Box::leak(text.to_string().into_boxed_str()) };
    let group = leak(&custom.group);
    let version = leak(&custom.version);
    let api_version = if custom.group.is_empty() {
        version
    } else {
        leak(&format!("{}/{}", custom.group, custom.version))
    };
    let short_names: Vec<&'static str> = custom.short_names.iter().map(|name| leak(name)).collect();
    let singular = if custom.singular.is_empty() {
        custom.kind.to_ascii_lowercase()
    } else {
        custom.singular.clone()
    };
    let kind: &'static Kind = Box::leak(Box::new(Kind {
        kind: leak(&custom.kind),
        group,
        version,
        api_version,
        plural: leak(&custom.plural),
        singular,
        namespaced: custom.namespaced,
        short_names: Box::leak(short_names.into_boxed_slice()),
        schema: Schema::Custom {
            status_subresource: custom.status_subresource,
        },
    }));
    made.push((custom, kind));
    kind
}

/// Every kind runbook knows.
pub fn kinds() -> &'static [Kind] {
    use k8s_openapi::api::{apps, batch, coordination, core};
    static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
        vec![
            Kind::of::<core::v1::Namespace>(&["ns"]),
            Kind::of::<core::v1::Pod>(&["po"]),
            Kind::of::<core::v1::Service>(&["svc"]),
            Kind::of::<core::v1::PersistentVolume>(&["pv"]),
            Kind::of::<core::v1::PersistentVolumeClaim>(&["pvc"]),
            Kind::of::<core::v1::ConfigMap>(&["cm"]),
            Kind::of::<core::v1::Secret>(&[]),
            Kind::of::<apps::v1::Deployment>(&["deploy"]),
            Kind::of::<apps::v1::ReplicaSet>(&["rs"]),
            Kind::of::<apps::v1::StatefulSet>(&["sts"]),
            Kind::of::<batch::v1::Job>(&[]),
            Kind::of::<coordination::v1::Lease>(&[]),
            Kind::of::<core::v1::Node>(&["no"]),
            Kind::of::<core::v1::Event>(&["ev"]),
        ]
    });
    &KINDS
}

/// The kind called `name` (see [`Kind::matches`]).
pub fn find_kind(name: &str) -> Option<&'static Kind> {
    kinds().iter().find(|kind| kind.matches(name))
}

/// The kind of an `apiVersion` and `kind` pair, as in a manifest.
pub fn kind_of_manifest(api_version: &str, kind: &str) -> Option<&'static Kind> {
    kinds()
        .iter()
        .find(|known| known.api_version == api_version && known.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_any_of_their_names() {
        let pv = find_kind("pv").unwrap();
        assert_eq!(pv.kind, "PersistentVolume");
        assert!(!pv.namespaced);
        assert_eq!(pv.plural, "persistentvolumes");
        assert!(find_kind("PersistentVolumeClaim").unwrap().namespaced);
        assert_eq!(find_kind("deployments").unwrap().api_version, "apps/v1");
        assert_eq!(find_kind("sts").unwrap().kind, "StatefulSet");
        assert!(find_kind("Gadget").is_none());
    }

    #[test]
    fn manifests_are_checked_against_their_kind() {
        let deployment = find_kind("Deployment").unwrap();
        let bad = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "three"}});
        assert!(deployment.validator().unwrap().validate(&bad).is_err());
    }

    fn data_migrate() -> CustomKind {
        CustomKind {
            group: "data.fluid.io".into(),
            version: "v1alpha1".into(),
            kind: "DataMigrate".into(),
            plural: "datamigrates".into(),
            singular: String::new(),
            namespaced: true,
            short_names: vec!["dm".into()],
            status_subresource: true,
        }
    }

    #[test]
    fn custom_kinds_are_made_once_and_have_no_typed_schema() {
        let kind = custom_kind(data_migrate());
        assert!(std::ptr::eq(kind, custom_kind(data_migrate())));
        assert_eq!(kind.api_version, "data.fluid.io/v1alpha1");
        assert_eq!(kind.singular, "datamigrate");
        assert!(kind.matches("DataMigrate") && kind.matches("dm") && kind.matches("datamigrates"));
        assert!(kind.is_custom() && kind.validator().is_none());
        let other = custom_kind(CustomKind {
            namespaced: false,
            ..data_migrate()
        });
        assert!(!std::ptr::eq(kind, other));
    }
}
