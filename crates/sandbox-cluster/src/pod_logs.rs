//! `pods/log`: a container's log, as the [`kubelet`](super::kubelet) wrote it to
//! `DIR/pods/NAMESPACE/POD/CONTAINER.log`. `tailLines` and `limitBytes` cut it as a real
//! kubelet does; `follow` keeps the answer open, sending what the command writes, until the
//! container has terminated (or the pod is gone, or the sandbox stops); `previous` asks for a
//! container instance the sandbox never has (it does not restart containers), so it is
//! answered with the kubelet's 400. Deliberate differences: `sinceSeconds`, `sinceTime` and
//! `timestamps` are ignored (the log file does not record when each line was written), and a
//! container that runs nothing (any pod but a Job's) has an empty log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api_error::ApiError;
use super::routes::{App, Query};
use kube_kinds::find_kind;

/// How often a followed log is read again for what the command wrote since.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Answers `GET /api/v1/namespaces/NS/pods/NAME/log`.
pub fn answer(app: Arc<App>, namespace: &str, name: &str, query: &Query) -> Response {
    match open(&app, namespace, name, query) {
        Ok(log) if query.flag("follow") => {
            let stream = futures::stream::unfold(
                (log, app, namespace.to_string(), name.to_string(), true),
                |(mut log, app, namespace, name, first)| async move {
                    let chunk = follow_step(&mut log, &app, &namespace, &name, first).await?;
                    Some((
                        Ok::<_, std::io::Error>(chunk),
                        (log, app, namespace, name, false),
                    ))
                },
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(mut log) => {
            let text = log.read_new(true);
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// A container's log being read: where it is, how far it was sent, how much more may be.
struct Log {
    path: PathBuf,
    container: String,
    sent: usize,
    tail_lines: Option<usize>,
    bytes_left: Option<usize>,
}

impl Log {
    /// What the file holds past what was sent, cut to `tailLines` the first time and to
    /// `limitBytes` overall.
    fn read_new(&mut self, first: bool) -> Bytes {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        let mut new = bytes.get(self.sent..).unwrap_or_default();
        self.sent = bytes.len();
        if first && let Some(count) = self.tail_lines {
            new = tail(new, count);
        }
        if let Some(left) = self.bytes_left.as_mut() {
            new = &new[..new.len().min(*left)];
            *left -= new.len();
        }
        Bytes::copy_from_slice(new)
    }

    fn exhausted(&self) -> bool {
        self.bytes_left == Some(0)
    }
}

/// The last `count` lines of `bytes`.
fn tail(bytes: &[u8], count: usize) -> &[u8] {
    if count == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(count - 1)
        .map_or(0, |(position, _)| position + 1);
    &bytes[start..]
}

/// The next chunk of a followed log: what is there now (the first time), else what the
/// command writes next; `None` once the container has terminated and its log was sent.
async fn follow_step(
    log: &mut Log,
    app: &App,
    namespace: &str,
    name: &str,
    first: bool,
) -> Option<Bytes> {
    if first {
        return Some(log.read_new(true));
    }
    let mut shutdown = app.shutdown.clone();
    loop {
        if log.exhausted() || *shutdown.borrow() {
            return None;
        }
        // Read whether it ended before reading the file, so that nothing written just
        // before the end is missed.
        let ended = terminated(app, namespace, name, &log.container);
        let chunk = log.read_new(false);
        if !chunk.is_empty() {
            return Some(chunk);
        }
        if ended {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

/// Whether the container has terminated, or its pod is gone.
fn terminated(app: &App, namespace: &str, name: &str, container: &str) -> bool {
    let Some(pods) = find_kind("Pod") else {
        return true;
    };
    let Ok(pod) = app.cluster.get(pods, namespace, name) else {
        return true;
    };
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|status| status.get("name").and_then(Value::as_str) == Some(container))
        .any(|status| status.pointer("/state/terminated").is_some())
}

/// Checks the request against the pod and opens the log of the container it names.
fn open(app: &App, namespace: &str, name: &str, query: &Query) -> Result<Log, ApiError> {
    let pods = find_kind("Pod").ok_or_else(|| ApiError::bad_request("no pods"))?;
    let pod = app.cluster.get(pods, namespace, name)?;
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| container.get("name")?.as_str())
        .collect();
    let container = match (
        query.get("container").filter(|c| !c.is_empty()),
        containers.as_slice(),
    ) {
        (Some(container), _) if containers.contains(&container) => container.to_string(),
        (Some(container), _) => {
            return Err(ApiError::bad_request(format!(
                "container {container} is not valid for pod {name}"
            )));
        }
        (None, [only]) => (*only).to_string(),
        (None, many) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            )));
        }
    };
    if query.flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let number = |field: &str| -> Result<Option<usize>, ApiError> {
        query
            .get(field)
            .map(|value| {
                value.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{field}: Invalid value: {value:?}"))
                })
            })
            .transpose()
    };
    let path = app
        .dir
        .join("pods")
        .join(namespace)
        .join(name)
        .join(format!("{container}.log"));
    Ok(Log {
        path,
        container,
        sent: 0,
        tail_lines: number("tailLines")?,
        bytes_left: number("limitBytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_count_lines_from_the_end() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }

    #[test]
    fn limit_bytes_holds_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, "hello\n").unwrap();
        let mut log = Log {
            path: path.clone(),
            container: "c".into(),
            sent: 0,
            tail_lines: None,
            bytes_left: Some(8),
        };
        assert_eq!(log.read_new(true), "hello\n");
        std::fs::write(&path, "hello\nworld\n").unwrap();
        assert_eq!(log.read_new(false), "wo");
        assert!(log.exhausted());
    }
}
