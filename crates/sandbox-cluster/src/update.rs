//! Updating an object: replace (PUT), patch (PATCH), on the object or its `status`
//! subresource. Every path ends in `State::commit_update`, which keeps what the server
//! owns, checks `resourceVersion`, validates, and stores only real changes.

use serde_json::{Value, json};

use super::admission;
use super::api_error::{ApiError, FieldError};
use super::cluster::{State, WriteOptions, Written, check_type_meta};
use super::field_set;
use super::managed_fields::ManagedFields;
use super::meta;
use super::patch::{self, PatchError, PatchType};
use super::schema;
use super::store::ObjectKey;
use kube_kinds::Kind;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself; its `status` is kept as it was.
    Main,
    /// `/status`: only the status changes.
    Status,
}

/// A PATCH request's body and the kind of patch its content type says it is.
#[derive(Debug, Clone, Copy)]
pub struct PatchBody<'a> {
    /// JSON, merge, strategic merge, or apply.
    pub patch_type: PatchType,
    /// The patch (or the configuration to apply).
    pub body: &'a Value,
}

/// Who owns the fields an update changes.
#[derive(Debug, Clone)]
pub(super) enum Ownership {
    /// The request's field manager takes what it changed (create, replace, patch).
    Update,
    /// Server-side apply worked the managers out already.
    Decided(ManagedFields),
}

impl State {
    /// Replaces the object `name` with `body` (PUT).
    pub fn replace(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        mut body: Value,
        subresource: Subresource,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        check_type_meta(kind, &mut body)?;
        let given = meta::name(&body);
        if given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        if kind.namespaced {
            match meta::namespace(&body) {
                "" => meta::set_at(&mut body, &["metadata", "namespace"], json!(namespace)),
                given if given != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        let old = self.get(kind, namespace, name)?;
        self.commit_update(kind, old, body, subresource, options, Ownership::Update)
    }

    /// Patches the object `name` (PATCH) with a JSON, merge or strategic merge patch, or
    /// applies a configuration (server-side apply).
    pub fn patch(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &PatchBody,
        subresource: Subresource,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let PatchBody { patch_type, body } = *patch;
        if patch_type == PatchType::Apply {
            return self.apply(kind, namespace, name, body, options);
        }
        let old = self.get(kind, namespace, name)?;
        let new =
            patch::apply_patch(kind, &old, patch_type, body).map_err(|error| match error {
                PatchError::Malformed(message) => ApiError::bad_request(message),
                PatchError::Failed(message) => ApiError::patch_failed(message),
            })?;
        self.commit_update(kind, old, new, subresource, options, Ownership::Update)
    }

    /// Stores `new` in place of `old` after the checks every update goes through.
    pub(super) fn commit_update(
        &mut self,
        kind: &'static Kind,
        old: Value,
        mut new: Value,
        subresource: Subresource,
        options: &WriteOptions,
        ownership: Ownership,
    ) -> Result<Written, ApiError> {
        check_type_meta(kind, &mut new)?;
        check_same_object(kind, &old, &new)?;
        new = keep_what_the_server_owns(kind, &old, new, subresource);
        admission::apply_defaults(kind, &mut new);
        admission::admit_update(kind, &mut new, &old);
        let warnings = self.check(kind, &mut new, Some(&old), options.field_validation)?;
        check_no_finalizer_added(kind, &old, &new)?;
        let spec_of = |object: &Value| {
            let mut copy = object.clone();
            if let Some(map) = copy.as_object_mut() {
                map.remove("metadata");
                map.remove("status");
            }
            copy
        };
        let generation = meta::value_at(&old, &["metadata", "generation"]).and_then(Value::as_i64);
        if let Some(generation) = generation
            && spec_of(&new) != spec_of(&old)
        {
            meta::set_at(&mut new, &["metadata", "generation"], json!(generation + 1));
        }
        if meta::without_volatile(&new) == meta::without_volatile(&old) {
            return Ok(Written {
                object: old,
                created: false,
                warnings,
            });
        }
        let managed = match ownership {
            Ownership::Update => {
                let mut managed = ManagedFields::read(&old);
                if subresource == Subresource::Main {
                    let changed = field_set::changed(kind, &old, &new);
                    managed.record_update(&options.field_manager, kind.api_version, &changed, &new);
                }
                managed
            }
            Ownership::Decided(managed) => managed,
        };
        managed.write(&mut new);
        if options.dry_run {
            return Ok(Written {
                object: new,
                created: false,
                warnings,
            });
        }
        let key = ObjectKey::of(kind, &old);
        let stored = if meta::deletion_complete(&new) {
            // Removing the last finalizer of an object being deleted completes the deletion.
            self.store.insert(key.clone(), new);
            self.store.remove(&key)
        } else {
            Some(self.store.insert(key, new))
        };
        Ok(Written {
            object: stored.unwrap_or(Value::Null),
            created: false,
            warnings,
        })
    }
}

/// An update names the object of its URL, at its resourceVersion if it gives one.
fn check_same_object(kind: &'static Kind, old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = meta::name(old);
    if meta::name(new) != name || (kind.namespaced && meta::namespace(new) != meta::namespace(old))
    {
        return Err(ApiError::bad_request(format!(
            "the name or namespace of the object ({}/{}) does not match the one on the URL ({}/{name})",
            meta::namespace(new),
            meta::name(new),
            meta::namespace(old)
        )));
    }
    let requested = meta::resource_version(new);
    if !requested.is_empty() && requested != meta::resource_version(old) {
        return Err(ApiError::conflict(kind, name, ApiError::MODIFIED));
    }
    Ok(())
}

/// `new` with what a client cannot change through this request taken from `old`: the
/// status (through the main resource) or everything but the status (through `/status`),
/// and the server's own metadata.
fn keep_what_the_server_owns(
    kind: &'static Kind,
    old: &Value,
    mut new: Value,
    subresource: Subresource,
) -> Value {
    if subresource == Subresource::Status {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(status) => new["status"] = status,
            None => {
                meta::remove_at(&mut new, &["status"]);
            }
        }
    } else if schema::has_field(kind, "status") {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                meta::remove_at(&mut new, &["status"]);
            }
        }
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
        "managedFields",
    ] {
        match meta::value_at(old, &["metadata", field]) {
            Some(value) => meta::set_at(&mut new, &["metadata", field], value.clone()),
            None => {
                meta::remove_at(&mut new, &["metadata", field]);
            }
        }
    }
    new
}

/// An object being deleted may lose finalizers, never gain one.
fn check_no_finalizer_added(kind: &'static Kind, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !meta::is_deleting(old) {
        return Ok(());
    }
    let before = meta::finalizers(old);
    let added: Vec<String> = meta::finalizers(new)
        .into_iter()
        .filter(|finalizer| !before.contains(finalizer))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        kind,
        meta::name(old),
        &[FieldError::forbidden(
            "metadata.finalizers",
            format!(
                "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
            ),
        )],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, FieldValidation};
    use kube_kinds::find_kind;

    fn options() -> WriteOptions {
        WriteOptions {
            field_manager: "test".into(),
            field_validation: FieldValidation::Strict,
            ..WriteOptions::default()
        }
    }

    fn pv(server: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "hub-home-nfs"}, "spec": {
            "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": server, "path": "/homes/hub"}}})
    }

    #[test]
    fn a_stale_resource_version_conflicts() {
        let cluster = Cluster::new(1);
        let kind = find_kind("pv").unwrap();
        let created = cluster
            .write(|state| state.create(kind, "", pv("a"), &options()))
            .unwrap()
            .object;
        let mut first = created.clone();
        first["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
        let updated = cluster
            .write(|state| {
                state.replace(
                    kind,
                    "",
                    "hub-home-nfs",
                    first,
                    Subresource::Main,
                    &options(),
                )
            })
            .unwrap();
        assert_ne!(
            meta::resource_version(&updated.object),
            meta::resource_version(&created)
        );
        let mut stale = created;
        stale["metadata"]["labels"] = json!({"x": "y"});
        let error = cluster
            .write(|state| {
                state.replace(
                    kind,
                    "",
                    "hub-home-nfs",
                    stale,
                    Subresource::Main,
                    &options(),
                )
            })
            .unwrap_err();
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Operation cannot be fulfilled on persistentvolumes \"hub-home-nfs\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn the_nfs_source_of_a_volume_is_immutable() {
        let cluster = Cluster::new(1);
        let kind = find_kind("pv").unwrap();
        cluster
            .write(|state| state.create(kind, "", pv("a"), &options()))
            .unwrap();
        let error = cluster
            .write(|state| {
                state.patch(
                    kind,
                    "",
                    "hub-home-nfs",
                    &PatchBody {
                        patch_type: PatchType::Merge,
                        body: &json!({"spec": {"nfs": {"server": "b"}}}),
                    },
                    Subresource::Main,
                    &options(),
                )
            })
            .unwrap_err();
        assert_eq!(error.code, 422);
        assert_eq!(
            error.message,
            "PersistentVolume \"hub-home-nfs\" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"
        );
    }

    #[test]
    fn no_op_patches_store_nothing_and_status_is_kept() {
        let cluster = Cluster::new(1);
        let kind = find_kind("pv").unwrap();
        let created = cluster
            .write(|state| state.create(kind, "", pv("a"), &options()))
            .unwrap()
            .object;
        let same = cluster
            .write(|state| {
                state.patch(kind, "", "hub-home-nfs", &PatchBody { patch_type: PatchType::Merge, body: &json!({"spec": {"nfs": {"server": "a"}}, "status": {"phase": "Bound"}}) }, Subresource::Main, &options())
            })
            .unwrap();
        assert_eq!(
            meta::resource_version(&same.object),
            meta::resource_version(&created)
        );
        assert_eq!(same.object["status"]["phase"], "Pending");
        let status = cluster
            .write(|state| {
                state.patch(
                    kind,
                    "",
                    "hub-home-nfs",
                    &PatchBody {
                        patch_type: PatchType::Merge,
                        body: &json!({"status": {"phase": "Available"}}),
                    },
                    Subresource::Status,
                    &options(),
                )
            })
            .unwrap();
        assert_eq!(status.object["status"]["phase"], "Available");
        assert_eq!(status.object["metadata"]["generation"], 1);
    }

    #[test]
    fn removing_the_last_finalizer_of_a_deleting_object_deletes_it() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let body = json!({"metadata": {"name": "c", "finalizers": ["example.com/hold"]}});
        cluster
            .write(|state| state.create(kind, "default", body, &options()))
            .unwrap();
        cluster
            .write(|state| state.delete(kind, "default", "c", &Default::default(), false))
            .unwrap();
        let held = cluster
            .read(|state| state.get(kind, "default", "c"))
            .unwrap();
        assert!(meta::is_deleting(&held));
        let error = cluster
            .write(|state| {
                state.patch(
                    kind,
                    "default",
                    "c",
                    &PatchBody {
                        patch_type: PatchType::Merge,
                        body: &json!({"metadata": {"finalizers": ["example.com/hold", "more"]}}),
                    },
                    Subresource::Main,
                    &options(),
                )
            })
            .unwrap_err();
        assert_eq!(error.code, 422);
        cluster
            .write(|state| {
                state.patch(
                    kind,
                    "default",
                    "c",
                    &PatchBody {
                        patch_type: PatchType::Merge,
                        body: &json!({"metadata": {"finalizers": null}}),
                    },
                    Subresource::Main,
                    &options(),
                )
            })
            .unwrap();
        assert_eq!(
            cluster
                .read(|state| state.get(kind, "default", "c"))
                .unwrap_err()
                .code,
            404
        );
    }
}
