//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets (`kubectl scale`): an
//! `autoscaling/v1` `Scale` view of `spec.replicas`.

use serde_json::{Value, json};

use super::api_error::{ApiError, FieldError};
use super::cluster::{State, WriteOptions, Written};
use super::meta;
use super::patch::{self, PatchError, PatchType};
use super::selectors::LabelSelector;
use super::update::{Ownership, Subresource};
use kube_kinds::Kind;

/// Whether the kind has a `scale` subresource.
pub fn has_scale(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet")
    )
}

/// The `Scale` of an object.
fn to_scale(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(object),
            "namespace": meta::namespace(object),
            "uid": meta::uid(object),
            "resourceVersion": meta::resource_version(object),
            "creationTimestamp": object.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

impl State {
    /// The `Scale` of `name`.
    pub fn scale(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get(kind, namespace, name)
            .map(|object| to_scale(&object))
    }

    /// Replaces the `Scale` of `name` (PUT on `/scale`).
    pub fn replace_scale(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        scale: &Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let old = self.get(kind, namespace, name)?;
        let requested = meta::resource_version(scale);
        if !requested.is_empty() && requested != meta::resource_version(&old) {
            return Err(ApiError::conflict(kind, name, ApiError::MODIFIED));
        }
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            let error = FieldError::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            );
            return Err(ApiError::invalid(kind, name, &[error]));
        }
        let mut new = old.clone();
        meta::set_at(&mut new, &["spec", "replicas"], json!(replicas));
        // The selector must still parse for the Scale to be meaningful.
        if LabelSelector::from_object(new.pointer("/spec/selector").unwrap_or(&Value::Null))
            .is_none()
        {
            return Err(ApiError::bad_request("the object's selector is not valid"));
        }
        let written = self.commit_update(
            kind,
            old,
            new,
            Subresource::Main,
            options,
            Ownership::Update,
        )?;
        Ok(Written {
            object: to_scale(&written.object),
            ..written
        })
    }

    /// Patches the `Scale` of `name` (PATCH on `/scale`).
    pub fn patch_scale(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        body: &Value,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let current = self.scale(kind, namespace, name)?;
        let patched =
            patch::apply_patch(kind, &current, patch_type, body).map_err(|error| match error {
                PatchError::Malformed(message) => ApiError::bad_request(message),
                PatchError::Failed(message) => ApiError::patch_failed(message),
            })?;
        self.replace_scale(kind, namespace, name, &patched, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use kube_kinds::find_kind;

    #[test]
    fn scaling_changes_the_replicas() {
        let cluster = Cluster::new(1);
        let kind = find_kind("Deployment").unwrap();
        let options = WriteOptions {
            field_manager: "t".into(),
            ..WriteOptions::default()
        };
        let deployment = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        cluster
            .write(|state| state.create(kind, "default", deployment, &options))
            .unwrap();
        let scale = cluster
            .read(|state| state.scale(kind, "default", "d"))
            .unwrap();
        assert_eq!(scale["spec"]["replicas"], 1);
        assert_eq!(scale["status"]["selector"], "app=x");
        let written = cluster
            .write(|state| {
                state.patch_scale(
                    kind,
                    "default",
                    "d",
                    PatchType::Merge,
                    &json!({"spec": {"replicas": 0}}),
                    &options,
                )
            })
            .unwrap();
        assert_eq!(written.object["spec"]["replicas"], 0);
        assert_eq!(
            cluster
                .read(|state| state.get(kind, "default", "d"))
                .unwrap()["spec"]["replicas"],
            0
        );
    }
}
