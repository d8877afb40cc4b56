//! `pods/log`: a container's log, as the [`kubelet`](super::kubelet) wrote it to
//! `DIR/pods/NAMESPACE/POD/CONTAINER.log`. Deliberate differences: `follow`, `previous`,
//! `sinceSeconds`, `timestamps` and `limitBytes` are ignored (the log so far is answered
//! whole, `tailLines` aside), and a container that ran nothing (any pod but a Job's) has
//! an empty log.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api_error::ApiError;
use super::routes::{App, Query};
use crate::kube::find_kind;

/// Answers `GET /api/v1/namespaces/NS/pods/NAME/log`.
pub fn answer(app: &App, namespace: &str, name: &str, query: &Query) -> Response {
    match log_text(app, namespace, name, query) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
        Err(error) => error.into_response(),
    }
}

fn log_text(app: &App, namespace: &str, name: &str, query: &Query) -> Result<String, ApiError> {
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
    let path = app
        .dir
        .join("pods")
        .join(namespace)
        .join(name)
        .join(format!("{container}.log"));
    let text = std::fs::read(&path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    Ok(
        match query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
            Some(count) => {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(count);
                lines[start..]
                    .iter()
                    .map(|line| format!("{line}\n"))
                    .collect()
            }
            None => text,
        },
    )
}
