//! Creating an object (POST on a collection), with the checks in the real server's order:
//! shape and rules (400/422), then the namespace (404/403), then the name (409).

use serde_json::{Value, json};

use super::admission;
use super::api_error::{ApiError, FieldError};
use super::cluster::{State, WriteOptions, Written, check_type_meta};
use super::field_set::FieldSet;
use super::managed_fields::{ManagedFields, Operation};
use super::meta;
use super::schema;
use super::store::ObjectKey;
use kube_kinds::{Kind, find_kind};

/// A namespaced object takes the request's namespace (a different one is refused); a
/// cluster-scoped one has none.
fn place_in_namespace(kind: &Kind, namespace: &str, object: &mut Value) -> Result<(), ApiError> {
    if !kind.namespaced {
        meta::remove_at(object, &["metadata", "namespace"]);
        return Ok(());
    }
    match meta::namespace(object) {
        "" => meta::set_at(object, &["metadata", "namespace"], json!(namespace)),
        given if given != namespace => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => {}
    }
    Ok(())
}

impl State {
    /// Creates `body` as an object of `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub fn create(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.create_as(kind, namespace, body, options, Operation::Update)
    }

    /// [`State::create`], recording the manager's fields under `operation` (server-side apply
    /// creates with `Apply`).
    pub(super) fn create_as(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        mut object: Value,
        options: &WriteOptions,
        operation: Operation,
    ) -> Result<Written, ApiError> {
        check_type_meta(kind, &mut object)?;
        place_in_namespace(kind, namespace, &mut object)?;
        self.name_if_generated(kind, &mut object)?;
        let name = meta::name(&object).to_string();
        // The manager owns what it sent, not what the server defaults or allocates.
        let requested = FieldSet::of(kind, &object);
        admission::apply_defaults(kind, &mut object);
        let warnings = self.check(kind, &mut object, None, options.field_validation)?;
        if kind.namespaced {
            self.check_namespace_accepts(kind, namespace, &name)?;
        }
        let key = ObjectKey::new(kind, namespace, &name);
        if self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        self.set_what_the_server_owns(kind, &mut object);
        admission::admit_create(kind, &mut object, &mut self.identities, &self.store);
        let mut managed = ManagedFields::default();
        // Unknown fields the check dropped are owned by nobody.
        let fields = requested.present_in(&object);
        match operation {
            Operation::Apply => {
                managed.record_apply(&options.field_manager, kind.api_version, &fields, &[])
            }
            Operation::Update => {
                managed.record_update(&options.field_manager, kind.api_version, &fields, &object)
            }
        }
        managed.write(&mut object);
        if options.dry_run {
            return Ok(Written {
                object,
                created: true,
                warnings,
            });
        }
        let object = self.store.insert(key, object);
        Ok(Written {
            object,
            created: true,
            warnings,
        })
    }

    /// An object without a name gets one from its `generateName`, as the server makes it.
    fn name_if_generated(
        &mut self,
        kind: &'static Kind,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        if !meta::name(object).is_empty() {
            return Ok(());
        }
        let prefix = meta::str_at(object, &["metadata", "generateName"])
            .unwrap_or_default()
            .to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                kind,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let name = format!("{prefix}{}", self.identities.suffix(5));
        meta::set_at(object, &["metadata", "name"], json!(name));
        Ok(())
    }

    /// The metadata only the server writes (the client's values are ignored): a new uid,
    /// the creation time, generation 1 for kinds with a spec; no status yet.
    fn set_what_the_server_owns(&mut self, kind: &'static Kind, object: &mut Value) {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta::remove_at(object, &["metadata", field]);
        }
        meta::set_at(object, &["metadata", "uid"], json!(self.identities.uid()));
        meta::set_at(
            object,
            &["metadata", "creationTimestamp"],
            json!(meta::now()),
        );
        // Kinds with a spec count its changes; ConfigMaps and the like have no generation.
        if schema::has_field(kind, "spec") {
            meta::set_at(object, &["metadata", "generation"], json!(1));
        }
        if schema::has_field(kind, "status") {
            meta::remove_at(object, &["status"]);
        }
    }

    /// 404 when the namespace does not exist, 403 while it is being deleted.
    fn check_namespace_accepts(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(namespaces) = find_kind("Namespace") else {
            return Ok(());
        };
        match self.store.get(&ObjectKey::new(namespaces, "", namespace)) {
            None => Err(ApiError::not_found(namespaces, namespace)),
            Some(existing) if meta::is_deleting(existing) => Err(ApiError::forbidden(
                kind,
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::{Cluster, FieldValidation, WriteOptions};
    use crate::meta;
    use kube_kinds::find_kind;
    use serde_json::json;

    fn options() -> WriteOptions {
        WriteOptions {
            field_manager: "test".into(),
            field_validation: FieldValidation::Strict,
            ..WriteOptions::default()
        }
    }

    fn config_map(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn creation_sets_identity_and_refuses_duplicates() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let written = cluster
            .write(|state| state.create(kind, "default", config_map("c"), &options()))
            .unwrap();
        assert!(written.created);
        assert_eq!(written.object["metadata"]["namespace"], "default");
        assert_eq!(meta::uid(&written.object).len(), 36);
        assert!(!meta::resource_version(&written.object).is_empty());
        assert_eq!(
            written.object["metadata"]["managedFields"][0]["manager"],
            "test"
        );
        let again = cluster
            .write(|state| state.create(kind, "default", config_map("c"), &options()))
            .unwrap_err();
        assert_eq!(
            (again.code, again.reason, again.message.as_str()),
            (409, "AlreadyExists", "configmaps \"c\" already exists")
        );
    }

    #[test]
    fn a_missing_namespace_is_named() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let error = cluster
            .write(|state| state.create(kind, "nowhere", config_map("c"), &options()))
            .unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (404, "namespaces \"nowhere\" not found")
        );
        assert_eq!(
            error.status()["details"],
            json!({"name": "nowhere", "kind": "namespaces"})
        );
    }

    #[test]
    fn generate_name_and_dry_run() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let body = json!({"metadata": {"generateName": "job-"}, "data": {}});
        let dry = WriteOptions {
            dry_run: true,
            ..options()
        };
        let written = cluster
            .write(|state| state.create(kind, "default", body, &dry))
            .unwrap();
        let name = meta::name(&written.object).to_string();
        assert!(name.starts_with("job-") && name.len() == 9, "{name}");
        assert!(
            cluster
                .read(|state| state.get(kind, "default", &name))
                .is_err(),
            "a dry run stores nothing"
        );
        let namespace_mismatch = json!({"metadata": {"name": "x", "namespace": "other"}});
        assert_eq!(
            cluster
                .write(|state| state.create(kind, "default", namespace_mismatch, &options()))
                .unwrap_err()
                .code,
            400
        );
    }
}
