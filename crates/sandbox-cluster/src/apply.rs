//! Server-side apply (`application/apply-patch+yaml`): create the object if it is absent,
//! else merge the configuration into it; fields another manager owns with another value
//! conflict unless `force`; fields this manager applied before and dropped now are removed
//! unless someone else owns them.

use serde_json::{Value, json};

use super::api_error::ApiError;
use super::cluster::{State, WriteOptions, Written, check_type_meta};
use super::field_set::{self, FieldSet};
use super::managed_fields::{Conflict, ManagedFields, Operation};
use super::meta;
use super::patch::{self, PatchError};
use super::store::ObjectKey;
use super::update::{Ownership, Subresource};
use kube_kinds::Kind;

impl State {
    /// Applies `config` to the object `name` for `options.field_manager`.
    pub fn apply(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        config: &Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut config = config.clone();
        check_type_meta(kind, &mut config)?;
        match meta::name(&config) {
            "" => meta::set_at(&mut config, &["metadata", "name"], json!(name)),
            given if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        if kind.namespaced {
            match meta::namespace(&config) {
                "" => meta::set_at(&mut config, &["metadata", "namespace"], json!(namespace)),
                given if given != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        let Some(live) = self
            .store
            .get(&ObjectKey::new(kind, namespace, name))
            .cloned()
        else {
            return self.create_as(kind, namespace, config, options, Operation::Apply);
        };
        let manager = options.field_manager.as_str();
        let applied = FieldSet::of(kind, &config);
        let mut managed = ManagedFields::read(&live);
        let conflicts = managed.conflicts(manager, &applied, &live, &config);
        if !conflicts.is_empty() && !options.force {
            return Err(conflict_error(kind, name, &conflicts));
        }
        let mut base = live.clone();
        let dropped = managed.applied_by(manager).difference(&applied);
        // Shallowest first: a dropped list item goes whole (its fields then have nothing
        // left to remove), unless another manager still owns something in it.
        for path in dropped.iter() {
            let shared = managed.owned_by_others(manager, path)
                || (field_set::is_item(path) && managed.owns_under_by_others(manager, path));
            if !shared && !field_set::is_item_key(path) {
                field_set::remove(&mut base, path);
            }
        }
        let merged = patch::strategic_merge(kind, &base, &config).map_err(|error| match error {
            PatchError::Malformed(message) | PatchError::Failed(message) => {
                ApiError::bad_request(message)
            }
        })?;
        managed.record_apply(manager, kind.api_version, &applied, &conflicts);
        self.commit_update(
            kind,
            live,
            merged,
            Subresource::Main,
            options,
            Ownership::Decided(managed),
        )
    }
}

/// The 409 server-side apply answers, worded as the real server words it.
fn conflict_error(kind: &Kind, name: &str, conflicts: &[Conflict]) -> ApiError {
    let mut managers: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for conflict in conflicts {
        let path = field_set::display(&conflict.path);
        match managers
            .iter_mut()
            .find(|(manager, _, _)| *manager == conflict.manager)
        {
            Some((_, _, paths)) => paths.push(path),
            None => managers.push((&conflict.manager, &conflict.api_version, vec![path])),
        }
    }
    let sections: Vec<String> = managers
        .iter()
        .map(|(manager, version, paths)| match paths.as_slice() {
            [one] => format!("conflict with {manager:?} using {version}: {one}"),
            many => format!(
                "conflicts with {manager:?} using {version}:\n{}",
                many.iter()
                    .map(|path| format!("- {path}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        })
        .collect();
    let count = conflicts.len();
    let plural = if count == 1 { "" } else { "s" };
    let message = format!(
        "Apply failed with {count} conflict{plural}: {}",
        sections.join("\n")
    );
    let causes = conflicts
        .iter()
        .map(|conflict| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {:?} using {}", conflict.manager, conflict.api_version),
                "field": field_set::display(&conflict.path),
            })
        })
        .collect();
    ApiError::apply_conflict(kind, name, message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, FieldValidation};
    use kube_kinds::find_kind;

    fn options(manager: &str, force: bool) -> WriteOptions {
        WriteOptions {
            field_manager: manager.into(),
            field_validation: FieldValidation::Strict,
            force,
            dry_run: false,
        }
    }

    fn config(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn apply_creates_then_merges_and_removes_what_it_no_longer_sets() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let created = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "c",
                    &config(json!({"a": "1", "b": "2"})),
                    &options("ops", false),
                )
            })
            .unwrap();
        assert!(created.created);
        assert_eq!(
            created.object["metadata"]["managedFields"][0]["operation"],
            "Apply"
        );
        let updated = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "c",
                    &config(json!({"a": "3"})),
                    &options("ops", false),
                )
            })
            .unwrap();
        assert!(!updated.created);
        assert_eq!(updated.object["data"], json!({"a": "3"}));
    }

    #[test]
    fn fields_of_other_managers_conflict_unless_forced() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        cluster
            .write(|state| {
                state.create(
                    kind,
                    "default",
                    config(json!({"a": "1"})),
                    &options("kubectl-create", false),
                )
            })
            .unwrap();
        let same = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "c",
                    &config(json!({"a": "1", "b": "2"})),
                    &options("ops", false),
                )
            })
            .unwrap();
        assert_eq!(same.object["data"], json!({"a": "1", "b": "2"}));
        let error = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "c",
                    &config(json!({"a": "9"})),
                    &options("ops", false),
                )
            })
            .unwrap_err();
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.a"
        );
        let forced = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "c",
                    &config(json!({"a": "9"})),
                    &options("ops", true),
                )
            })
            .unwrap();
        assert_eq!(forced.object["data"], json!({"a": "9"}));
        // The creator no longer owns `a`; `b` was only ops', so dropping it removed it.
        let managed = ManagedFields::read(&forced.object);
        assert_eq!(managed.applied_by("ops").iter().count(), 1);
    }

    #[test]
    fn a_dropped_list_item_goes_whole_and_defaults_are_nobody_s() {
        let cluster = Cluster::new(1);
        let kind = find_kind("Service").unwrap();
        let service = |port: u16| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "transfer"}, "spec": {"ports": [{"port": port}]}});
        let created = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "transfer",
                    &service(80),
                    &options("runbook", false),
                )
            })
            .unwrap();
        let owned = ManagedFields::read(&created.object).applied_by("runbook");
        let displayed: Vec<String> = owned.iter().map(|path| field_set::display(path)).collect();
        assert_eq!(
            displayed,
            [".spec.ports[port=80]", ".spec.ports[port=80].port"]
        );
        let updated = cluster
            .write(|state| {
                state.apply(
                    kind,
                    "default",
                    "transfer",
                    &service(8080),
                    &options("runbook", false),
                )
            })
            .unwrap();
        assert_eq!(
            updated.object["spec"]["ports"],
            json!([{"port": 8080, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(
            updated.object["spec"]["clusterIP"],
            created.object["spec"]["clusterIP"]
        );
    }
}
