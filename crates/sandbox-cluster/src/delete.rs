//! Deleting objects: preconditions, propagation (`Background`, `Foreground`, `Orphan` through
//! their finalizers), pods' grace periods, and finalizers that keep an object, marked with a
//! `deletionTimestamp`, until the controllers (or a client) remove them.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::api_error::ApiError;
use super::cluster::{BUILTIN_NAMESPACES, State};
use super::meta;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::ObjectKey;
use kube_kinds::Kind;

/// The longest a pod takes to terminate in the sandbox, whatever its grace period says: a
/// test should not wait 30 s for nothing to happen.
pub const MAX_GRACE_SECONDS: i64 = 1;

/// The finalizer of a foreground deletion: the owner stays until its dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion: dependents lose their owner reference first.
pub const ORPHAN: &str = "orphan";

/// What happens to the dependents of a deleted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now, the garbage collector deletes the dependents after.
    Background,
    /// The dependents go first, then the owner.
    Foreground,
    /// The dependents stay, without their owner reference.
    Orphan,
}

impl Propagation {
    /// Parses `propagationPolicy`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// The `DeleteOptions` of a request (its body or its query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy` (or the deprecated `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
}

/// How a deletion ended.
#[derive(Debug, Clone)]
pub enum Deletion {
    /// The object is gone; its last state.
    Gone(Value),
    /// The object stays, being deleted, until its finalizers or grace period are through.
    Pending(Value),
}

/// Kinds whose registry answers a deletion with the deleted object rather than a `Status`.
pub fn returns_deleted_object(kind: &Kind) -> bool {
    kind.group.is_empty()
        && matches!(
            kind.kind,
            "Pod" | "Service" | "PersistentVolume" | "PersistentVolumeClaim" | "Namespace"
        )
}

/// A deletion's preconditions (uid, resourceVersion) hold for `object`.
fn check_preconditions(
    kind: &'static Kind,
    object: &Value,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let name = meta::name(object);
    if let Some(uid) = &options.precondition_uid
        && uid != meta::uid(object)
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta::uid(object)
        );
        return Err(ApiError::conflict(kind, name, &why));
    }
    if let Some(version) = &options.precondition_resource_version
        && version != meta::resource_version(object)
    {
        let why = format!(
            "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
            meta::resource_version(object)
        );
        return Err(ApiError::conflict(kind, name, &why));
    }
    Ok(())
}

/// How long a pod being deleted may take to stop, when it gets time at all: a running pod
/// on a node, with a grace period above zero (the request's, else its spec's, else 30 s).
fn pod_grace_period(pod: &Value, options: &DeleteOptions) -> Option<i64> {
    let terminal = matches!(
        meta::str_at(pod, &["status", "phase"]),
        Some("Succeeded" | "Failed")
    );
    let scheduled = meta::str_at(pod, &["spec", "nodeName"]).is_some_and(|node| !node.is_empty());
    let grace = options
        .grace_period_seconds
        .or_else(|| {
            meta::value_at(pod, &["spec", "terminationGracePeriodSeconds"]).and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .clamp(0, MAX_GRACE_SECONDS);
    (grace > 0 && scheduled && !terminal).then_some(grace)
}

/// Marks an object as being deleted: from `at`, given `grace_seconds` to go.
fn mark_deleting(object: &mut Value, at: Timestamp, grace_seconds: i64) {
    meta::set_at(
        object,
        &["metadata", "deletionTimestamp"],
        json!(meta::format_time(at)),
    );
    meta::set_at(
        object,
        &["metadata", "deletionGracePeriodSeconds"],
        json!(grace_seconds),
    );
}

impl State {
    /// Deletes the object `name`.
    pub fn delete(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Deletion, ApiError> {
        let key = ObjectKey::new(kind, namespace, name);
        let Some(old) = self.store.get(&key).cloned() else {
            return Err(ApiError::not_found(kind, name));
        };
        check_preconditions(kind, &old, options)?;
        if meta::is_deleting(&old) {
            return Ok(Deletion::Pending(old));
        }
        let mut object = old.clone();
        let now = Timestamp::now();
        if kind.kind == "Namespace" && kind.group.is_empty() {
            if BUILTIN_NAMESPACES.contains(&name) {
                return Err(ApiError::forbidden(
                    kind,
                    name,
                    "this namespace may not be deleted",
                ));
            }
            // The namespace controller empties it, then drops its `kubernetes` finalizer.
            mark_deleting(&mut object, now, 0);
            meta::set_at(&mut object, &["status", "phase"], json!("Terminating"));
            return Ok(Deletion::Pending(
                self.store_unless_dry(key, object, dry_run),
            ));
        }
        // batch/v1 Jobs still orphan their pods unless told otherwise, as on a real server.
        let default = if kind.kind == "Job" {
            Propagation::Orphan
        } else {
            Propagation::Background
        };
        match options.propagation.unwrap_or(default) {
            Propagation::Foreground => {
                meta::add_finalizer(&mut object, FOREGROUND);
            }
            Propagation::Orphan => {
                meta::add_finalizer(&mut object, ORPHAN);
            }
            Propagation::Background => {}
        }
        if kind.kind == "Pod"
            && kind.group.is_empty()
            && let Some(grace) = pod_grace_period(&object, options)
        {
            let deadline = now + SignedDuration::from_secs(grace);
            mark_deleting(&mut object, deadline, grace);
            return Ok(Deletion::Pending(
                self.store_unless_dry(key, object, dry_run),
            ));
        }
        if !meta::finalizers(&object).is_empty() {
            mark_deleting(&mut object, now, 0);
            return Ok(Deletion::Pending(
                self.store_unless_dry(key, object, dry_run),
            ));
        }
        if dry_run {
            return Ok(Deletion::Gone(old));
        }
        Ok(Deletion::Gone(self.store.remove(&key).unwrap_or(old)))
    }

    fn store_unless_dry(&mut self, key: ObjectKey, object: Value, dry_run: bool) -> Value {
        if dry_run {
            object
        } else {
            self.store.insert(key, object)
        }
    }

    /// Deletes every object of `kind` (in `namespace` if given) that the selectors match.
    pub fn delete_collection(
        &mut self,
        kind: &'static Kind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let doomed: Vec<(String, String)> = self
            .store
            .list(kind, namespace)
            .filter(|object| labels.matches(object) && fields.matches(object))
            .map(|object| {
                (
                    meta::namespace(object).to_string(),
                    meta::name(object).to_string(),
                )
            })
            .collect();
        let mut deleted = Vec::new();
        for (namespace, name) in doomed {
            match self.delete(kind, &namespace, &name, options, dry_run)? {
                Deletion::Gone(object) | Deletion::Pending(object) => deleted.push(object),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Cluster, WriteOptions};
    use kube_kinds::find_kind;

    fn create(cluster: &Cluster, kind: &'static Kind, body: Value) {
        let options = WriteOptions {
            field_manager: "test".into(),
            ..WriteOptions::default()
        };
        cluster
            .write(|state| state.create(kind, "default", body, &options))
            .unwrap();
    }

    #[test]
    fn objects_without_finalizers_go_at_once() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        create(&cluster, kind, json!({"metadata": {"name": "c"}}));
        let dry = cluster
            .write(|state| state.delete(kind, "default", "c", &DeleteOptions::default(), true))
            .unwrap();
        assert!(matches!(dry, Deletion::Gone(_)));
        assert!(
            cluster
                .read(|state| state.get(kind, "default", "c"))
                .is_ok(),
            "a dry run deletes nothing"
        );
        let gone = cluster
            .write(|state| state.delete(kind, "default", "c", &DeleteOptions::default(), false))
            .unwrap();
        assert!(matches!(gone, Deletion::Gone(_)));
        let again = cluster
            .write(|state| state.delete(kind, "default", "c", &DeleteOptions::default(), false))
            .unwrap_err();
        assert_eq!(
            (again.code, again.message.as_str()),
            (404, "configmaps \"c\" not found")
        );
    }

    #[test]
    fn pods_terminate_within_a_second_and_finalizers_hold() {
        let cluster = Cluster::new(1);
        let pods = find_kind("Pod").unwrap();
        create(
            &cluster,
            pods,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        );
        let pending = cluster
            .write(|state| state.delete(pods, "default", "p", &DeleteOptions::default(), false))
            .unwrap();
        let Deletion::Pending(pod) = pending else {
            panic!("a running pod terminates gracefully")
        };
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 1);
        let claims = find_kind("pvc").unwrap();
        create(
            &cluster,
            claims,
            json!({"metadata": {"name": "home"}, "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Mi"}}}}),
        );
        let held = cluster
            .write(|state| {
                state.delete(claims, "default", "home", &DeleteOptions::default(), false)
            })
            .unwrap();
        assert!(matches!(held, Deletion::Pending(claim) if meta::is_deleting(&claim)));
    }

    #[test]
    fn preconditions_and_built_in_namespaces() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        create(&cluster, kind, json!({"metadata": {"name": "c"}}));
        let options = DeleteOptions {
            precondition_uid: Some("other".into()),
            ..DeleteOptions::default()
        };
        assert_eq!(
            cluster
                .write(|state| state.delete(kind, "default", "c", &options, false))
                .unwrap_err()
                .code,
            409
        );
        let namespaces = find_kind("Namespace").unwrap();
        assert_eq!(
            cluster
                .write(|state| state.delete(
                    namespaces,
                    "",
                    "default",
                    &DeleteOptions::default(),
                    false
                ))
                .unwrap_err()
                .code,
            403
        );
    }
}
