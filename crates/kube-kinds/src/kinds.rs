//! The Kubernetes kinds we know, shared by runbook's client (actions, template lookups) and
//! the sandbox cluster (discovery, storage). Adding a kind is one line in [`kinds`].

use std::any::TypeId;
use std::sync::LazyLock;

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
    /// Checks a manifest against the kind's typed schema.
    validate: fn(&serde_json::Value) -> Result<(), String>,
    /// The same check of a manifest written in YAML, whose error has a position.
    validate_yaml: fn(&str) -> Result<(), serde_saphyr::Error>,
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
            validate: validate_as::<K>,
            validate_yaml: validate_yaml_as::<K>,
        }
    }

    /// Checks that a manifest has the shape of this kind (field types, required fields).
    pub fn validate(&self, manifest: &serde_json::Value) -> Result<(), String> {
        (self.validate)(manifest)
    }

    /// Checks a manifest written in YAML as [`Kind::validate`] does, with the line and
    /// column of the value at fault in the error. Only the manifest may be in `text`: other
    /// lines of its file are blanked out, so that positions are the file's.
    pub fn validate_yaml(&self, text: &str) -> Result<(), serde_saphyr::Error> {
        (self.validate_yaml)(text)
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
        name == self.singular || name == self.plural || self.short_names.contains(&name.as_str())
    }
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
        assert!(deployment.validate(&bad).is_err());
    }
}
