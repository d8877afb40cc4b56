//! The cluster's state behind one lock, and the options every write takes. The verbs
//! (`create`, `update`, `apply`, `delete`) are `impl State` blocks in their own files; the
//! HTTP routes and the controllers both go through them, so the rules hold for both.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::api_error::{ApiError, FieldError};
use super::identities::Identities;
use super::meta;
use super::scenario::ScenarioError;
use super::schema;
use super::state_file::StateFile;
use super::store::{ObjectKey, Store};
use super::validation;
use kube_kinds::{Kind, find_kind};

/// How many changes the store keeps for watches to resume from.
const HISTORY: usize = 10_000;

/// The namespaces every cluster starts with.
pub const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The shared cluster: state behind a lock, a signal raised after every change, and the
/// file the state is kept in, if any.
#[derive(Debug)]
pub struct Cluster {
    state: Mutex<State>,
    revision: watch::Sender<u64>,
    /// Only locked while `state` is: the file always holds a state that was current.
    state_file: Mutex<Option<StateFile>>,
}

/// Everything the cluster holds.
#[derive(Debug)]
pub struct State {
    /// The objects.
    pub store: Store,
    /// Uids, names and addresses.
    pub identities: Identities,
}

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header (the server's default).
    #[default]
    Warn,
    /// Refuse the request (kubectl's default).
    Strict,
}

/// The options of a write request.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`, or the client's name from its user agent.
    pub field_manager: String,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply only): take fields owned by other managers.
    pub force: bool,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// Whether the write created the object (201 instead of 200).
    pub created: bool,
    /// Texts for `Warning` headers.
    pub warnings: Vec<String>,
}

impl Cluster {
    /// A cluster with the built-in namespaces and its node, whose identities are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = State {
            store: Store::new(HISTORY),
            identities: Identities::new(seed),
        };
        state.bootstrap();
        let (revision, _) = watch::channel(state.store.revision());
        Cluster {
            state: Mutex::new(state),
            revision,
            state_file: Mutex::new(None),
        }
    }

    /// Keeps the state in `path` from now on: writes it now, then after every change,
    /// before the change is answered or seen by a watch ([`state_file`](super::state_file)).
    pub fn persist_to(&self, path: PathBuf) -> Result<(), ScenarioError> {
        let state = self.lock();
        let mut file = StateFile::new(path);
        file.write(&state)?;
        *self
            .state_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(file);
        Ok(())
    }

    /// Writes the state to its file if it changed. Called with the state locked, so that
    /// nobody sees a change before it is on disk.
    fn persist(&self, state: &State) {
        let mut file = self
            .state_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = file.as_mut()
            && let Err(error) = file.write(state)
        {
            // The change stays in memory and is answered; the next change tries again.
            eprintln!("sandbox: cannot keep the state: {error}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any single
        // step leaves it; the sandbox keeps serving rather than failing every request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the state.
    pub fn read<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        read(&self.lock())
    }

    /// Changes the state, keeps it in the state file if there is one, then wakes the
    /// watches and controllers if anything was stored.
    pub fn write<R>(&self, write: impl FnOnce(&mut State) -> R) -> R {
        let (result, revision) = {
            let mut state = self.lock();
            let result = write(&mut state);
            self.persist(&state);
            (result, state.store.revision())
        };
        self.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
        result
    }

    /// The object of `kind` called `name` (in `namespace`), or 404.
    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.read(|state| state.get(kind, namespace, name))
    }

    /// A receiver that sees the latest `resourceVersion` after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

impl State {
    fn bootstrap(&mut self) {
        let Some(kind) = find_kind("Namespace") else {
            return;
        };
        for name in BUILTIN_NAMESPACES {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let options = WriteOptions {
                field_manager: "kube-apiserver".into(),
                ..WriteOptions::default()
            };
            // Creating a well-formed namespace in an empty store cannot fail.
            let _ = self.create(kind, "", namespace, &options);
        }
        if let Some(nodes) = find_kind("Node") {
            let options = WriteOptions {
                field_manager: "kubelet".into(),
                ..WriteOptions::default()
            };
            let mut node = super::admission::node(&meta::now());
            let status = meta::remove_at(&mut node, &["status"]).unwrap_or_default();
            // As a kubelet registers its node: create it, then report its status.
            if let Ok(written) = self.create(nodes, "", node, &options) {
                let mut node = written.object;
                node["status"] = status;
                self.store.insert(ObjectKey::of(nodes, &node), node);
            }
        }
    }

    /// The object of `kind` called `name` (in `namespace`), or 404.
    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.store
            .get(&ObjectKey::new(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Checks a manifest's shape against the kind's typed schema and its semantic rules
    /// (`old` for an update); drops unknown fields, or refuses them under `Strict`.
    /// Returns the warnings to send.
    pub fn check(
        &self,
        kind: &'static Kind,
        object: &mut Value,
        old: Option<&Value>,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let name = meta::name(object).to_string();
        // A custom resource has no typed schema here: only the rules every object follows
        // (its metadata) are checked.
        let shape = kind
            .validator()
            .map_or(Ok(()), |validator| validator.validate(object));
        if let Err(error) = &shape
            && !error.starts_with("missing field")
        {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {error}",
                kind.kind, kind.version, kind.kind
            )));
        }
        let mut warnings = Vec::new();
        if shape.is_ok() {
            let unknown = schema::unknown_fields(kind, object);
            if !unknown.is_empty() {
                let described: Vec<String> = unknown
                    .iter()
                    .map(|field| format!("unknown field {field:?}"))
                    .collect();
                match validation {
                    FieldValidation::Strict => {
                        return Err(ApiError::bad_request(format!(
                            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                            kind.kind,
                            kind.version,
                            kind.kind,
                            described.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings = described,
                    FieldValidation::Ignore => {}
                }
                schema::prune(object, kind);
            }
        }
        let mut errors = validation::validate(kind, object, old);
        if let Err(error) = shape {
            // A required struct field the semantic rules did not name.
            if errors.is_empty() {
                let field = error.split('`').nth(1).unwrap_or("object").to_string();
                errors.push(FieldError::required(field, ""));
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(ApiError::invalid(kind, &name, &errors))
        }
    }
}

/// Fills in `apiVersion` and `kind` from the URL, or refuses a body of another kind.
pub fn check_type_meta(kind: &Kind, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {} object",
            kind.kind
        )));
    }
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(kind.api_version),
        Some(version) if version != kind.api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({})",
                kind.api_version
            )));
        }
        Some(_) => {}
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(kind.kind),
        Some(other) if other != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        Some(_) => {}
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_starts_with_its_namespaces() {
        let cluster = Cluster::new(1);
        let kind = find_kind("Namespace").unwrap();
        let names: Vec<String> = cluster.read(|state| {
            state
                .store
                .list(kind, None)
                .map(|ns| meta::name(ns).to_string())
                .collect()
        });
        assert_eq!(names, ["default", "kube-public", "kube-system"]);
        let default = cluster
            .read(|state| state.get(kind, "", "default"))
            .unwrap();
        assert_eq!(default["status"]["phase"], "Active");
    }

    #[test]
    fn type_errors_are_bad_requests_and_rules_are_invalid() {
        let cluster = Cluster::new(1);
        let kind = find_kind("Pod").unwrap();
        let mut typed = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "x"}});
        let error = cluster
            .read(|state| state.check(kind, &mut typed, None, FieldValidation::Strict))
            .unwrap_err();
        assert_eq!(error.code, 400);
        let mut missing =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
        let error = cluster
            .read(|state| state.check(kind, &mut missing, None, FieldValidation::Strict))
            .unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (422, "Pod \"p\" is invalid: spec.containers: Required value")
        );
        let mut unknown = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "colour": 1}});
        let error = cluster
            .read(|state| state.check(kind, &mut unknown.clone(), None, FieldValidation::Strict))
            .unwrap_err();
        assert!(
            error
                .message
                .ends_with("strict decoding error: unknown field \"spec.colour\""),
            "{}",
            error.message
        );
        let warnings = cluster
            .read(|state| state.check(kind, &mut unknown, None, FieldValidation::Warn))
            .unwrap();
        assert_eq!(warnings, ["unknown field \"spec.colour\""]);
        assert!(unknown["spec"].get("colour").is_none());
    }
}
