//! Watches: a stream of `{"type", "object"}` JSON lines, from a `resourceVersion` (or from
//! the current state, sent as `ADDED` events first), filtered by namespace and selectors,
//! with optional bookmarks and a timeout. A version older than the history is answered the
//! way the real server does: an `ERROR` event carrying a 410 `Expired` Status.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::api_error::ApiError;
use super::cluster::{Cluster, State};
use super::selectors::{FieldSelector, LabelSelector};
use super::store::ChangeType;
use super::{meta, table};
use kube_kinds::Kind;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The kind.
    pub kind: &'static Kind,
    /// Only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector` (and the name, for a watch on an object's path).
    pub fields: FieldSelector,
    /// `resourceVersion`: start after it; `None` (or `0`) starts with the current state.
    pub resource_version: Option<u64>,
    /// `sendInitialEvents=true`: the current state first, then a bookmark marking its end.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Whether objects are sent as one-row `Table`s (`kubectl get --watch` asks for that).
    pub table: bool,
}

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.namespace
            .as_deref()
            .is_none_or(|wanted| wanted == namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// An event about an object, as a one-row table when the client asked for tables.
    fn object_event(&self, kind: &str, object: &Value) -> Bytes {
        if self.table {
            let rows = table::table(
                self.kind,
                std::slice::from_ref(object),
                meta::resource_version(object),
                None,
            );
            WatchRequest::event(kind, &rows)
        } else {
            WatchRequest::event(kind, object)
        }
    }

    fn event(kind: &str, object: &Value) -> Bytes {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, revision: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        WatchRequest::event(
            "BOOKMARK",
            &json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": metadata}),
        )
    }

    /// The current state as `ADDED` events, and the version it is at.
    fn initial(&self, state: &State) -> (Vec<Bytes>, u64) {
        let events = state
            .store
            .list(self.kind, self.namespace.as_deref())
            .filter(|object| self.selects(object))
            .map(|object| self.object_event("ADDED", object))
            .collect();
        (events, state.store.revision())
    }

    /// The events after `since`, and the version they reach; `Err` with the `ERROR` event
    /// when the history no longer goes back that far.
    fn since(&self, state: &State, since: u64) -> Result<(Vec<Bytes>, u64), Bytes> {
        let changes = state.store.changes_since(since).map_err(|too_old| {
            let status = ApiError::expired(too_old.to_string()).status();
            WatchRequest::event("ERROR", &status)
        })?;
        let mut events = Vec::new();
        for change in changes.filter(|change| change.key.is(self.kind)) {
            let now = self.selects(&change.object);
            let before = change
                .previous
                .as_ref()
                .is_some_and(|previous| self.selects(previous));
            let kind = match change.change {
                ChangeType::Added if now => Some("ADDED"),
                ChangeType::Modified if now && before => Some("MODIFIED"),
                // An object that starts or stops matching appears or disappears for this watch.
                ChangeType::Modified if now => Some("ADDED"),
                ChangeType::Modified if before => Some("DELETED"),
                ChangeType::Deleted if before || now => Some("DELETED"),
                _ => None,
            };
            if let Some(kind) = kind {
                events.push(self.object_event(kind, &change.object));
            }
        }
        Ok((events, state.store.revision()))
    }
}

/// Starts a watch; the returned body streams its events until the client goes away, the
/// timeout passes or the sandbox shuts down.
pub fn stream(
    cluster: Arc<Cluster>,
    request: WatchRequest,
    mut shutdown: watch::Receiver<bool>,
) -> Body {
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut changes = cluster.subscribe();
        let (initial, mut last) = match request.resource_version {
            Some(version) if version > 0 && !request.send_initial_events => (Vec::new(), version),
            _ => cluster.read(|state| request.initial(state)),
        };
        for event in initial {
            if sender.send(event).await.is_err() {
                return;
            }
        }
        if request.send_initial_events && sender.send(request.bookmark(last, true)).await.is_err() {
            return;
        }
        let deadline = request
            .timeout
            .map(|timeout| tokio::time::Instant::now() + timeout);
        loop {
            changes.borrow_and_update();
            let batch = cluster.read(|state| request.since(state, last));
            let events = match batch {
                Ok((events, revision)) => {
                    last = revision;
                    events
                }
                Err(error) => {
                    let _ = sender.send(error).await;
                    return;
                }
            };
            for event in events {
                if sender.send(event).await.is_err() {
                    return;
                }
            }
            let until_deadline = deadline.map_or(Duration::from_secs(3600), |deadline| {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            });
            let idle = if request.bookmarks {
                BOOKMARK_EVERY.min(until_deadline)
            } else {
                until_deadline
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(idle) => {
                    if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                        return;
                    }
                    if request.bookmarks && sender.send(request.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
                () = sender.closed() => return,
            }
        }
    });
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<Bytes, std::convert::Infallible>(bytes), receiver))
    });
    Body::from_stream(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::WriteOptions;
    use kube_kinds::find_kind;

    fn request(labels: &str) -> WatchRequest {
        WatchRequest {
            kind: find_kind("ConfigMap").unwrap(),
            namespace: Some("default".into()),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
            resource_version: None,
            send_initial_events: false,
            bookmarks: false,
            timeout: None,
            table: false,
        }
    }

    fn types(events: &[Bytes]) -> Vec<String> {
        events
            .iter()
            .map(|event| {
                serde_json::from_slice::<Value>(event).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn objects_entering_and_leaving_a_selector_are_added_and_deleted() {
        let cluster = Cluster::new(1);
        let kind = find_kind("ConfigMap").unwrap();
        let options = WriteOptions {
            field_manager: "t".into(),
            ..WriteOptions::default()
        };
        let start = cluster.read(|state| state.store.revision());
        cluster
            .write(|state| {
                state.create(
                    kind,
                    "default",
                    json!({"metadata": {"name": "c", "labels": {"app": "a"}}}),
                    &options,
                )
            })
            .unwrap();
        let patch = |labels: Value| {
            cluster
                .write(|state| {
                    state.patch(
                        kind,
                        "default",
                        "c",
                        &crate::update::PatchBody {
                            patch_type: crate::patch::PatchType::Merge,
                            body: &json!({"metadata": {"labels": labels}}),
                        },
                        crate::update::Subresource::Main,
                        &options,
                    )
                })
                .unwrap();
        };
        patch(json!({"app": "b"}));
        patch(json!({"app": "a"}));
        patch(json!({"other": "x"}));
        let (events, _) = cluster
            .read(|state| request("app=a").since(state, start))
            .unwrap();
        assert_eq!(types(&events), ["ADDED", "DELETED", "ADDED", "MODIFIED"]);
        let (all, _) = cluster
            .read(|state| request("").since(state, start))
            .unwrap();
        assert_eq!(types(&all), ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED"]);
        let (initial, _) = cluster.read(|state| request("").initial(state));
        assert_eq!(types(&initial), ["ADDED"]);
    }

    #[test]
    fn a_version_older_than_the_history_is_expired() {
        let kind = find_kind("ConfigMap").unwrap();
        let mut state = State {
            store: crate::store::Store::new(2),
            identities: crate::identities::Identities::new(1),
        };
        for name in ["a", "b", "c", "d"] {
            let object = json!({"metadata": {"name": name, "namespace": "default"}});
            state
                .store
                .insert(crate::store::ObjectKey::of(kind, &object), object);
        }
        let error = request("").since(&state, 1).unwrap_err();
        let event: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(event["type"], "ERROR");
        assert_eq!(event["object"]["code"], 410);
        assert_eq!(event["object"]["reason"], "Expired");
        assert_eq!(
            event["object"]["message"],
            "too old resource version: 1 (2)"
        );
        assert_eq!(
            types(&request("").since(&state, 2).unwrap().0),
            ["ADDED", "ADDED"]
        );
    }
}
