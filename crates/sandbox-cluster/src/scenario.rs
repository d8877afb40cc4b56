//! Scenario files: the objects a sandbox starts with (a YAML stream of objects, a YAML list,
//! or a `kind: List`), and the state it saves on shutdown (a `kind: List` that `--objects`
//! and `kubectl apply -f` both read).
//!
//! Manifests without a uid are created through the API's rules (defaults, validation, a
//! pod's running status, a service's IP). Objects with a uid are saved state and are put
//! back as they were (uid, status, finalizers), so a saved cluster comes back identical up
//! to resource versions.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::api_error::ApiError;
use super::cluster::{Cluster, FieldValidation, State, WriteOptions};
use super::meta;
use super::store::ObjectKey;
use kube_kinds::{Kind, find_kind};

/// The field manager of objects created from a scenario.
const MANAGER: &str = "runbook-sandbox-scenario";

/// A scenario that cannot be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An object the sandbox does not serve, or that is not an object at all.
    #[error("{path}: object {index}: {message}")]
    Unknown {
        /// The file.
        path: PathBuf,
        /// The object's position, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The API refused an object.
    #[error("{path}: object {index} ({kind} {name:?}): {error}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// The object's position, from 1.
        index: usize,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// The API's answer.
        error: Box<ApiError>,
    },
}

/// The YAML documents of a scenario file's text, as they are.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<Value>, ScenarioError> {
    serde_saphyr::from_multiple(text).map_err(|error| ScenarioError::Parse {
        path: path.into(),
        message: error.to_string(),
    })
}

/// The objects in a scenario file's text.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Value>, ScenarioError> {
    Ok(objects_of(parse_documents(text, path)?))
}

/// The objects of a file's documents: lists and `kind: List`s are flattened.
pub fn objects_of(documents: Vec<Value>) -> Vec<Value> {
    let mut objects = Vec::new();
    for document in documents {
        match document {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                objects.extend(
                    map.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => objects.push(other),
        }
    }
    objects
}

/// Loads a scenario file into the cluster; returns how many objects it held.
pub fn load(cluster: &Cluster, path: &Path) -> Result<usize, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.into(),
        source,
    })?;
    let objects = parse(&text, path)?;
    cluster.write(|state| state.load_objects(objects, path))
}

impl State {
    /// Loads objects read from `path` (for error messages); returns how many there were.
    pub fn load_objects(
        &mut self,
        objects: Vec<Value>,
        path: &Path,
    ) -> Result<usize, ScenarioError> {
        let mut indexed: Vec<(usize, Value)> = objects
            .into_iter()
            .enumerate()
            .map(|(index, object)| (index + 1, object))
            .collect();
        // Namespaces first, wherever the file lists them, then the CustomResourceDefinitions
        // that the objects of their kinds need.
        indexed.sort_by_key(
            |(_, object)| match object.get("kind").and_then(Value::as_str) {
                Some("Namespace") => 0,
                Some("CustomResourceDefinition") => 1,
                _ => 2,
            },
        );
        let count = indexed.len();
        for (index, object) in indexed {
            self.load_object(index, object, path)?;
        }
        Ok(count)
    }

    fn load_object(
        &mut self,
        index: usize,
        mut object: Value,
        path: &Path,
    ) -> Result<(), ScenarioError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind_name = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(kind) = self.served_kind_of(&api_version, &kind_name) else {
            let message = if object.is_object() {
                format!("the sandbox serves no kind {kind_name:?} in {api_version:?}")
            } else {
                format!("not an object: {object}")
            };
            return Err(ScenarioError::Unknown {
                path: path.into(),
                index,
                message,
            });
        };
        let rejected = |error: ApiError, object: &Value| ScenarioError::Rejected {
            path: path.into(),
            index,
            kind: kind.kind.to_string(),
            name: meta::name(object).to_string(),
            error: Box::new(error),
        };
        if kind.namespaced && meta::namespace(&object).is_empty() {
            meta::set_at(&mut object, &["metadata", "namespace"], json!("default"));
        }
        let namespace = meta::namespace(&object).to_string();
        if meta::uid(&object).is_empty() {
            let options = WriteOptions {
                field_manager: MANAGER.into(),
                field_validation: FieldValidation::Strict,
                ..WriteOptions::default()
            };
            return match self.create(kind, &namespace, object.clone(), &options) {
                Ok(_) => Ok(()),
                // The built-in namespaces are there already.
                Err(error) if error.reason == "AlreadyExists" && kind.kind == "Namespace" => Ok(()),
                Err(error) => Err(rejected(error, &object)),
            };
        }
        self.restore(kind, object.clone())
            .map_err(|error| rejected(error, &object))
    }

    /// Puts back a saved object as it was, after the same checks as an update.
    fn restore(&mut self, kind: &'static Kind, mut object: Value) -> Result<(), ApiError> {
        meta::remove_at(&mut object, &["metadata", "resourceVersion"]);
        self.check(kind, &mut object, None, FieldValidation::Strict)?;
        let namespace = meta::namespace(&object).to_string();
        if kind.namespaced
            && let Some(namespaces) = find_kind("Namespace")
            && self
                .store
                .get(&ObjectKey::new(namespaces, "", &namespace))
                .is_none()
        {
            return Err(ApiError::not_found(namespaces, &namespace));
        }
        self.store.insert(ObjectKey::of(kind, &object), object);
        Ok(())
    }
}

/// Every object, namespaces first, without resource versions, as a `kind: List`.
pub fn snapshot(cluster: &Cluster) -> Value {
    cluster.read(State::snapshot)
}

impl State {
    /// Every object, namespaces first, without resource versions, as a `kind: List`.
    pub fn snapshot(&self) -> Value {
        let mut items: Vec<(bool, &ObjectKey, &Value)> = self
            .store
            .all()
            .map(|(key, object)| {
                (
                    key.plural != "namespaces" || !key.group.is_empty(),
                    key,
                    object,
                )
            })
            .collect();
        items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let items: Vec<Value> = items
            .into_iter()
            .map(|(_, _, object)| {
                let mut object = object.clone();
                meta::remove_at(&mut object, &["metadata", "resourceVersion"]);
                object
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }
}

/// Saves the cluster's state to `path` (written aside, then renamed into place).
pub fn save(cluster: &Cluster, path: &Path) -> Result<(), ScenarioError> {
    let yaml =
        serde_saphyr::to_string(&snapshot(cluster)).map_err(|error| ScenarioError::Parse {
            path: path.into(),
            message: error.to_string(),
        })?;
    let text = format!(
        "# The state of a runbook sandbox cluster; load it with `runbook sandbox up --objects`.\n{yaml}"
    );
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| ScenarioError::Io {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"
# A comment, then a stream.
apiVersion: v1
kind: Namespace
metadata: {name: staging}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: staging-home-nfs}
spec:
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteMany]
  nfs: {server: 10.0.0.7, path: /homes/staging}
---
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, namespace: staging}
  data: {hub: staging}
"#;

    #[test]
    fn streams_lists_and_list_objects_are_read() {
        let path = Path::new("hub.yaml");
        assert_eq!(parse(HUB, path).unwrap().len(), 3);
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n";
        assert_eq!(parse(list, path).unwrap().len(), 1);
        assert!(matches!(
            parse("a: [", path),
            Err(ScenarioError::Parse { .. })
        ));
    }

    #[test]
    fn a_saved_state_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("hub.yaml");
        std::fs::write(&source, HUB).unwrap();
        let cluster = Cluster::new(1);
        assert_eq!(load(&cluster, &source).unwrap(), 3);
        let saved = dir.path().join("saved.yaml");
        save(&cluster, &saved).unwrap();
        let again = Cluster::new(2);
        load(&again, &saved).unwrap();
        assert_eq!(snapshot(&again), snapshot(&cluster));
        let pv = again
            .read(|state| state.get(find_kind("pv").unwrap(), "", "staging-home-nfs"))
            .unwrap();
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    }

    #[test]
    fn unknown_kinds_and_invalid_objects_are_refused_with_their_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n").unwrap();
        let error = load(&Cluster::new(1), &path).unwrap_err().to_string();
        assert!(
            error.ends_with("object 1: the sandbox serves no kind \"Gadget\" in \"v1\""),
            "{error}"
        );
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere}\n",
        )
        .unwrap();
        let error = load(&Cluster::new(1), &path).unwrap_err().to_string();
        assert!(
            error.ends_with(
                "object 1 (ConfigMap \"c\"): NotFound: namespaces \"nowhere\" not found"
            ),
            "{error}"
        );
    }
}
