//! `pods/exec`: checks an exec request as the API server does (the pod, the container, the
//! streams asked for), then upgrades the connection to a WebSocket and hands it to an
//! [`ExecSession`] that runs the command as a [`PodProcess`].
//!
//! Only the WebSocket channel protocols are served (`v5.channel.k8s.io`, then
//! `v4.channel.k8s.io`): kubectl from 1.30 and kube-rs speak them. A SPDY request (older
//! kubectl, or kubectl's fallback after a failed WebSocket attempt) gets the same checks, so
//! that a missing container is reported the same way, and then a `Status` that says SPDY is
//! not served.
//!
//! Deliberate differences from a real cluster (there are no containers): the command runs
//! on the sandbox's host, in `DIR/pods/NAMESPACE/POD/` (created on first use), with the
//! sandbox's own environment plus `HOSTNAME=<pod>`, the pod's uid (a deleted pod's processes
//! are stopped, see [`pod_reaper`](super::pod_reaper)) and the container's literal `env` values
//! (no `valueFrom`, no `$(VAR)` expansion); volume mounts are not remapped, so a pod whose
//! `mountPath` is a real directory of the host sees its files there. `tty` is accepted but
//! gives no terminal: stderr is merged into stdout as through a terminal, and resize
//! messages are ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, ws::WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api_error::ApiError;
use super::exec_session::{ExecSession, Protocol};
use super::faults::StreamCut;
use super::meta;
use super::pod_process::PodProcess;
use super::pod_reaper::POD_UID_ENV;
use super::routes::{App, Query};
use kube_kinds::find_kind;

/// What an exec request asks for, from its query (`command` may repeat; flags absent are
/// false, as in `PodExecOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The container; the only one when absent.
    pub container: Option<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr.
    pub stderr: bool,
    /// Whether the client asked for a terminal.
    pub tty: bool,
}

impl ExecOptions {
    /// Reads the options from a query.
    pub fn parse(query: &Query) -> Self {
        ExecOptions {
            command: query.all("command").map(str::to_string).collect(),
            container: query
                .get("container")
                .filter(|name| !name.is_empty())
                .map(str::to_string),
            stdin: query.flag("stdin"),
            stdout: query.flag("stdout"),
            stderr: query.flag("stderr"),
            tty: query.flag("tty"),
        }
    }
}

/// Where and how an exec's process runs: the pod's container, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container chosen.
    pub container: String,
    /// The working directory: `DIR/pods/NAMESPACE/POD/`.
    pub cwd: PathBuf,
    /// Variables set on top of the sandbox's environment.
    pub env: Vec<(String, String)>,
}

/// The names of a pod's containers of one list (`containers`, `initContainers`).
fn container_names<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| container.get("name").and_then(Value::as_str))
        .collect()
}

/// Checks an exec request against its pod, in the order and with the words of the API
/// server (and of the kubelet, for what it would refuse), and resolves where it runs.
pub fn resolve(pod: &Value, options: &ExecOptions, dir: &Path) -> Result<ExecTarget, ApiError> {
    let name = meta::name(pod);
    let namespace = meta::namespace(pod);
    let containers = container_names(pod, "containers");
    let container = match &options.container {
        Some(container) => {
            let init = container_names(pod, "initContainers");
            if !containers.contains(&container.as_str()) && !init.contains(&container.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "container {container} is not valid for pod {name}"
                )));
            }
            container.clone()
        }
        None => match containers.as_slice() {
            [only] => (*only).to_string(),
            [] => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                )));
            }
            many => {
                let mut message = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                );
                let init = container_names(pod, "initContainers");
                if !init.is_empty() {
                    message.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                return Err(ApiError::bad_request(message));
            }
        },
    };
    if meta::str_at(pod, &["spec", "nodeName"]).is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if !options.stdin && !options.stdout && !options.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if options.command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    match meta::str_at(pod, &["status", "phase"]) {
        Some("Running") => {}
        Some(phase @ ("Succeeded" | "Failed")) => {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        // What the kubelet answers for a container it is not running.
        _ => {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade connection: container not found ({container:?})"
            )));
        }
    }
    let env = container_env(pod, &container, name);
    Ok(ExecTarget {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        container,
        cwd: dir.join("pods").join(namespace).join(name),
        env,
    })
}

/// What a process of the pod's `container` finds in its environment on top of the sandbox's:
/// `HOSTNAME`, the pod's uid (so that the pod's deletion stops it, see
/// [`pod_reaper`](super::pod_reaper)) and the container's literal `env` values.
pub fn container_env(pod: &Value, container: &str, hostname: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOSTNAME".to_string(), hostname.to_string()),
        (POD_UID_ENV.to_string(), meta::uid(pod).to_string()),
    ];
    env.extend(literal_env(pod, container));
    env
}

/// The container's `env` entries that are values, not references (`valueFrom`); an entry
/// with neither is the empty string, as in a real container.
pub fn literal_env(pod: &Value, container: &str) -> Vec<(String, String)> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/spec/{list}"))?.as_array())
        .flatten()
        .find(|spec| spec.get("name").and_then(Value::as_str) == Some(container))
        .and_then(|spec| spec.get("env")?.as_array())
        .into_iter()
        .flatten()
        .filter(|variable| variable.get("valueFrom").is_none())
        .filter_map(|variable| {
            let name = variable.get("name")?.as_str()?;
            let value = variable
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// How the client asks to upgrade the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    WebSocket,
    Spdy,
    None,
}

fn upgrade_asked(headers: &HeaderMap) -> Upgrade {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade.contains("websocket") {
        Upgrade::WebSocket
    } else if upgrade.contains("spdy") {
        Upgrade::Spdy
    } else {
        Upgrade::None
    }
}

/// Answers `GET`/`POST /api/v1/namespaces/NS/pods/NAME/exec`: a `Status` error, or 101
/// and the session.
pub async fn answer(app: Arc<App>, namespace: String, name: String, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or_default());
    let options = ExecOptions::parse(&query);
    let target = find_kind("Pod")
        .ok_or_else(|| ApiError::no_route(parts.uri.path()))
        .and_then(|pods| app.cluster.get(pods, &namespace, &name))
        .and_then(|pod| resolve(&pod, &options, &app.dir));
    let target = match target {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    match upgrade_asked(&parts.headers) {
        Upgrade::WebSocket => {}
        Upgrade::Spdy => {
            return ApiError::bad_request(format!(
                "the sandbox serves pods/exec over WebSocket only ({}, {}), not SPDY: use kubectl 1.30 or later",
                Protocol::V5.name(),
                Protocol::V4.name()
            ))
            .into_response();
        }
        Upgrade::None => return ApiError::bad_request("Upgrade request required").into_response(),
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade.protocols([Protocol::V5.name(), Protocol::V4.name()]),
        Err(rejection) => return ApiError::bad_request(rejection.body_text()).into_response(),
    };
    let Some(protocol) = upgrade
        .selected_protocol()
        .and_then(|name| name.to_str().ok())
        .and_then(Protocol::from_name)
    else {
        let offered = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        return ApiError::bad_request(format!(
            "the sandbox speaks {} and {} only; the client offered [{offered}]",
            Protocol::V5.name(),
            Protocol::V4.name()
        ))
        .into_response();
    };
    let cut = parts
        .extensions
        .get::<StreamCut>()
        .map(|StreamCut(after)| *after);
    let shutdown = app.shutdown.clone();
    upgrade.on_upgrade(move |socket| async move {
        // The process starts only once the connection is upgraded, as the kubelet starts it
        // once its stream is set up.
        let process = PodProcess::spawn(&target, &options);
        ExecSession {
            protocol,
            options,
            cut,
            shutdown,
        }
        .run(socket, process)
        .await;
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(phase: &str) -> Value {
        json!({
            "metadata": {"name": "transfer", "namespace": "staging", "uid": "pod-uid"},
            "spec": {
                "nodeName": "sandbox-node",
                "containers": [
                    {"name": "shell", "env": [
                        {"name": "A", "value": "1"},
                        {"name": "EMPTY"},
                        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    ]},
                    {"name": "sidecar"},
                ],
                "initContainers": [{"name": "setup"}],
            },
            "status": {"phase": phase},
        })
    }

    fn options(container: Option<&str>) -> ExecOptions {
        ExecOptions {
            command: vec!["true".into()],
            container: container.map(str::to_string),
            stdout: true,
            ..ExecOptions::default()
        }
    }

    fn refusal(pod: &Value, options: &ExecOptions) -> String {
        let error = resolve(pod, options, Path::new("/sandbox")).unwrap_err();
        assert_eq!((error.code, error.reason), (400, "BadRequest"));
        error.message
    }

    #[test]
    fn the_query_repeats_command_and_defaults_flags_to_false() {
        let query =
            Query::parse("&stdout=true&container=shell&command=sh&command=-c&command=echo%20a");
        assert_eq!(
            ExecOptions::parse(&query),
            ExecOptions {
                command: vec!["sh".into(), "-c".into(), "echo a".into()],
                container: Some("shell".into()),
                stdout: true,
                ..ExecOptions::default()
            }
        );
    }

    #[test]
    fn a_target_runs_in_the_pods_directory_with_its_uid_and_literal_env() {
        let target = resolve(
            &pod("Running"),
            &options(Some("shell")),
            Path::new("/sandbox"),
        )
        .unwrap();
        assert_eq!(target.cwd, Path::new("/sandbox/pods/staging/transfer"));
        assert_eq!(
            target.env,
            [
                ("HOSTNAME", "transfer"),
                (POD_UID_ENV, "pod-uid"),
                ("A", "1"),
                ("EMPTY", "")
            ]
            .map(|(name, value)| (name.to_string(), value.to_string()))
        );
    }

    #[test]
    fn a_terminating_pod_takes_execs_until_its_containers_stop() {
        // As on a real cluster: the containers run through the grace period.
        let mut terminating = pod("Running");
        terminating["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(resolve(&terminating, &options(Some("shell")), Path::new("/sandbox")).is_ok());
    }

    #[test]
    fn refusals_use_the_api_servers_words() {
        let running = pod("Running");
        assert_eq!(
            refusal(&running, &options(Some("nope"))),
            "container nope is not valid for pod transfer"
        );
        assert_eq!(
            refusal(&running, &options(None)),
            "a container name must be specified for pod transfer, choose one of: [shell sidecar] or one of the init containers: [setup]"
        );
        assert_eq!(
            refusal(&pod("Succeeded"), &options(Some("shell"))),
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
        assert_eq!(
            refusal(&pod("Pending"), &options(Some("shell"))),
            "unable to upgrade connection: container not found (\"shell\")"
        );
        let mut unscheduled = pod("Pending");
        unscheduled["spec"]["nodeName"] = json!("");
        assert_eq!(
            refusal(&unscheduled, &options(Some("shell"))),
            "pod transfer does not have a host assigned"
        );
        let silent = ExecOptions {
            stdout: false,
            ..options(Some("shell"))
        };
        assert_eq!(
            refusal(&running, &silent),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn upgrades_are_told_apart_by_their_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(upgrade_asked(&headers), Upgrade::None);
        headers.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert_eq!(upgrade_asked(&headers), Upgrade::Spdy);
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(upgrade_asked(&headers), Upgrade::WebSocket);
    }
}
