//! Kinds beyond the table: whatever the cluster serves (a CustomResourceDefinition's kind, a
//! `VolumeSnapshot`, an `Ingress`), learnt from its discovery documents and used through the
//! dynamic API like the table's kinds. The table's kinds never ask the cluster.
//!
//! Discovery reads `/api`, `/apis` and each group version's resource list (the documents
//! `kube::discovery` reads too; read here directly because its `ApiResource` drops the short
//! and singular names a step may use, `dm` or `datamigrate`). What it found is kept for the
//! cluster's life, and read again when a name is not in it: an earlier step may have
//! installed the definition.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

use super::{Cluster, Kind, find_kind, kind_of_manifest, kinds};
use crate::diagnostic::did_you_mean;
use crate::failure::InvalidInput;
use kube_kinds::{CustomKind, custom_kind};

/// The kinds a cluster was found to serve, shared by the clones of its [`Cluster`].
#[derive(Debug, Clone, Default)]
pub(super) struct Discovered(Arc<Mutex<Vec<&'static Kind>>>);

impl Discovered {
    fn get(&self) -> Vec<&'static Kind> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, kinds: Vec<&'static Kind>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = kinds;
    }
}

/// The kinds of one resource list (subresources such as `pods/status` left out).
fn kinds_of(group: &str, version: &str, list: &APIResourceList) -> Vec<&'static Kind> {
    let has_status = |plural: &str| {
        list.resources
            .iter()
            .any(|resource| resource.name == format!("{plural}/status"))
    };
    list.resources
        .iter()
        .filter(|resource| !resource.name.contains('/'))
        .map(|resource| {
            // The table's kinds keep their typed schema.
            let api_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            kind_of_manifest(&api_version, &resource.kind).unwrap_or_else(|| {
                custom_kind(CustomKind {
                    group: group.to_string(),
                    version: version.to_string(),
                    kind: resource.kind.clone(),
                    plural: resource.name.clone(),
                    singular: resource.singular_name.clone(),
                    namespaced: resource.namespaced,
                    short_names: resource.short_names.clone().unwrap_or_default(),
                    status_subresource: has_status(&resource.name),
                })
            })
        })
        .collect()
}

/// Whether `name` designates `kind`: as [`Kind::matches`], or qualified by its group as
/// kubectl takes it (`datamigrates.data.fluid.io`, `DataMigrate.data.fluid.io`).
fn designates(kind: &Kind, name: &str) -> bool {
    kind.matches(name)
        || name.split_once('.').is_some_and(|(short, group)| {
            !kind.group.is_empty() && group.eq_ignore_ascii_case(kind.group) && kind.matches(short)
        })
}

impl Cluster {
    /// Reads the cluster's discovery documents: every kind of every group version, each
    /// group's preferred version first. A group version whose list cannot be read (an
    /// aggregated API that is down) is left out, as kubectl leaves it out.
    async fn discover(&self) -> Result<Vec<&'static Kind>, kube::Error> {
        let client = self.client();
        let mut served = Vec::new();
        let core = client.list_core_api_versions().await?;
        for version in &core.versions {
            if let Ok(list) = client.list_core_api_resources(version).await {
                served.extend(kinds_of("", version, &list));
            }
        }
        for group in client.list_api_groups().await?.groups {
            let preferred = group
                .preferred_version
                .as_ref()
                .map(|preferred| preferred.version.clone());
            let mut versions: Vec<_> = group.versions.iter().collect();
            versions.sort_by_key(|version| Some(&version.version) != preferred.as_ref());
            for version in versions {
                if let Ok(list) = client
                    .list_api_group_resources(&version.group_version)
                    .await
                {
                    served.extend(kinds_of(&group.name, &version.version, &list));
                }
            }
        }
        self.discovered.set(served.clone());
        Ok(served)
    }

    /// The kinds served, from what was discovered if `found` finds one there, else from a
    /// fresh discovery.
    async fn served_where(
        &self,
        found: impl Fn(&[&'static Kind]) -> Option<&'static Kind>,
    ) -> anyhow::Result<Result<&'static Kind, Vec<&'static Kind>>> {
        if let Some(kind) = found(&self.discovered.get()) {
            return Ok(Ok(kind));
        }
        let served = self.discover().await.map_err(|error| {
            anyhow::anyhow!("cannot read the kinds the cluster serves: {error}")
        })?;
        Ok(found(&served).ok_or(served))
    }

    /// The kind a step names (`DataMigrate`, `datamigrates`, `dm`, `VolumeSnapshot`): a kind
    /// of the table, or else one the cluster serves. A kind the cluster does not serve is
    /// invalid input that names it, with a close served name when there is one.
    pub async fn served_kind(&self, name: &str) -> anyhow::Result<&'static Kind> {
        if let Some(kind) = find_kind(name) {
            return Ok(kind);
        }
        let served = self
            .served_where(|served| served.iter().copied().find(|kind| designates(kind, name)))
            .await?;
        served.map_err(|served| {
            let names: Vec<&str> = served
                .iter()
                .map(|kind| kind.kind)
                .chain(kinds().iter().map(|kind| kind.kind))
                .collect();
            not_served(format!("kind `{name}`"), did_you_mean(name, &names))
        })
    }

    /// The kind of a manifest's `apiVersion` and `kind`: a kind of the table, or else one
    /// the cluster serves in that version; invalid input otherwise, as
    /// [`Cluster::served_kind`].
    pub async fn served_manifest_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> anyhow::Result<&'static Kind> {
        if let Some(known) = kind_of_manifest(api_version, kind) {
            return Ok(known);
        }
        let served = self
            .served_where(|served| {
                served
                    .iter()
                    .copied()
                    .find(|served| served.api_version == api_version && served.kind == kind)
            })
            .await?;
        served.map_err(|served| {
            // The same kind in another version, or a close name in this one.
            let elsewhere = served.iter().find(|served| served.kind == kind);
            let names: Vec<String> = served
                .iter()
                .map(|served| format!("{} {}", served.api_version, served.kind))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let suggestion = match elsewhere {
                Some(served) => Some(format!("{} {}", served.api_version, served.kind)),
                None => did_you_mean(&format!("{api_version} {kind}"), &names).map(str::to_string),
            };
            not_served(
                format!("kind `{kind}` in `{api_version}`"),
                suggestion.as_deref(),
            )
        })
    }
}

fn not_served(what: String, suggestion: Option<&str>) -> anyhow::Error {
    let help = match suggestion {
        Some(close) => format!("did you mean `{close}`?"),
        None => "is its CustomResourceDefinition installed? `kubectl api-resources` lists the \
                 kinds the cluster serves"
            .to_string(),
    };
    InvalidInput::new(format!("the cluster does not serve a {what}; {help}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_give_kinds_and_keep_the_tables() {
        let list: APIResourceList = serde_json::from_value(serde_json::json!({
            "groupVersion": "data.fluid.io/v1alpha1",
            "resources": [
                {"name": "datamigrates", "singularName": "datamigrate", "namespaced": true, "kind": "DataMigrate", "verbs": ["get"], "shortNames": ["dm"]},
                {"name": "datamigrates/status", "singularName": "", "namespaced": true, "kind": "DataMigrate", "verbs": ["get"]},
            ],
        }))
        .unwrap();
        let found = kinds_of("data.fluid.io", "v1alpha1", &list);
        assert_eq!(found.len(), 1);
        let kind = found[0];
        assert!(kind.is_custom() && kind.namespaced);
        assert!(designates(kind, "dm") && designates(kind, "datamigrates.data.fluid.io"));
        assert!(!designates(kind, "datamigrates.other.io"));
        let pods: APIResourceList = serde_json::from_value(serde_json::json!({
            "groupVersion": "v1",
            "resources": [{"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get"]}],
        }))
        .unwrap();
        let found = kinds_of("", "v1", &pods);
        assert!(std::ptr::eq(found[0], find_kind("Pod").unwrap()));
    }
}
