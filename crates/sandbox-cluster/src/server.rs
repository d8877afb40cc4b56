//! The connection loop: HTTP/1.1 over TLS on 127.0.0.1, with the [`access`](super::access)
//! check, fault injection and the request log in front of the routes. It is hand-rolled on
//! hyper rather than `axum::serve` because a dropped connection (a fault) must close the
//! socket without any answer, which only the owner of the connection can do.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::access::Access;
use super::api_error::ApiError;
use super::api_path::{ApiPath, Served};
use super::cluster::{Cluster, State};
use super::faults::{Fault, FaultInjector};
use super::request_log::{RequestLog, RequestRecord};
use super::routes::{Query, body_dry_run};

/// What the connection loop needs besides the listener.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// The routes.
    pub router: Router,
    /// The faults to inject.
    pub faults: Arc<FaultInjector>,
    /// Where requests are logged.
    pub log: Arc<RequestLog>,
    /// Who may make requests.
    pub access: Access,
    /// The TLS side of every connection.
    pub tls: Arc<rustls::ServerConfig>,
    /// The cluster, for the kinds it serves (the log names a custom resource's too).
    pub cluster: Arc<Cluster>,
}

/// Accepts connections until `shutdown` turns true; then closes every open connection
/// (watches included) and returns.
pub async fn serve(listener: TcpListener, frontend: Frontend, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let frontend = frontend.clone();
                connections.spawn(connection(stream, frontend));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    connections.shutdown().await;
}

/// The TLS handshake, or None when it fails; a plain HTTP request is told why.
async fn open(
    mut stream: tokio::net::TcpStream,
    tls: Arc<rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    if matches!(stream.peek(&mut first).await, Ok(1) if first[0] != TLS_HANDSHAKE) {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_HTTP_ANSWER).await;
        return None;
    }
    TlsAcceptor::from(tls).accept(stream).await.ok()
}

/// What Go's servers, the API server's among them, answer to plain HTTP on a TLS port, so
/// that a client with an `http://` kubeconfig learns why it gets nothing.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n\
    Client sent an HTTP request to an HTTPS server.\n";

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

async fn connection(stream: tokio::net::TcpStream, frontend: Frontend) {
    // A client that opens a connection and says nothing must not hold a task for ever.
    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        open(stream, frontend.tls.clone()),
    );
    let Ok(Some(stream)) = opened.await else {
        return;
    };
    let hang_up = Arc::new(Notify::new());
    let service = {
        let hang_up = hang_up.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let frontend = frontend.clone();
            let hang_up = hang_up.clone();
            async move { Ok::<_, Infallible>(answer(request, frontend, hang_up).await) }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = served => {}
        // Dropping the connection closes the socket: the client sees it reset, unanswered.
        () = hang_up.notified() => {}
    }
}

/// What the log says about a request, known before it is answered.
struct Described {
    method: String,
    path: String,
    query: String,
    content_type: String,
    verb: &'static str,
    dry_run: bool,
    /// The resource (plural), its group, namespace and object name, for a resource path.
    resource: Option<(&'static str, &'static str, Option<String>, Option<String>)>,
}

fn describe(request: &Request<Body>, body: &[u8], cluster: &Cluster) -> Described {
    let query = request.uri().query().unwrap_or_default().to_string();
    let parsed = Query::parse(&query);
    let path = request.uri().path().to_string();
    let served = cluster.read(State::served_kinds);
    let resource = match ApiPath::parse(&path, Served(&served)) {
        Some(ApiPath::Resource(resource)) => Some(resource),
        _ => None,
    };
    let method = request.method().clone();
    let verb = match (&method, &resource) {
        (_, None) => "discovery",
        (_, Some(resource)) if resource.subresource.as_deref() == Some("exec") => "exec",
        (&Method::GET, Some(_)) if parsed.flag("watch") => "watch",
        (&Method::GET, Some(resource)) if resource.name.is_none() => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, Some(_)) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(resource)) if resource.name.is_none() => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "other",
    };
    Described {
        method: method.to_string(),
        path,
        query,
        content_type: request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        verb,
        dry_run: parsed.dry_run() || body_dry_run(body),
        resource: resource.map(|resource| {
            (
                resource.kind.plural,
                resource.kind.group,
                resource.namespace.clone(),
                resource.name.clone(),
            )
        }),
    }
}

/// The 403 RBAC answers a request a `--forbid` rule refuses, in its words:
/// `namespaces "x" is forbidden: User "sandbox" cannot create resource "namespaces" in API
/// group "" at the cluster scope`.
fn rbac_refusal(described: &Described) -> Option<ApiError> {
    let (plural, group, namespace, name) = described.resource.as_ref()?;
    let subject = match name {
        Some(name) if described.verb != "create" => format!("{plural} {name:?}"),
        _ => plural.to_string(),
    };
    let scope = match namespace {
        Some(namespace) => format!("in the namespace {namespace:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut details = serde_json::json!({"kind": plural});
    if let Some(name) = name {
        details["name"] = serde_json::json!(name);
    }
    if !group.is_empty() {
        details["group"] = serde_json::json!(group);
    }
    Some(ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{subject} is forbidden: User \"sandbox\" cannot {} resource {plural:?} in API group {group:?} {scope} (refused by the sandbox: --forbid)",
            described.verb
        ),
        details: Some(details),
    })
}

async fn answer(
    request: Request<Incoming>,
    frontend: Frontend,
    hang_up: Arc<Notify>,
) -> Response<Body> {
    let ts = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    // Before anything else: a refused request reads no body and draws no fault.
    let refusal = frontend.access.check(request.headers()).err();
    // A deletion's dry run is in its body (kube-rs puts it there); the log must see it, so
    // DELETE bodies, which are small, are read here and handed on.
    let (request, delete_body) = if request.method() == Method::DELETE && refusal.is_none() {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .unwrap_or_default();
        (Request::from_parts(parts, Body::from(bytes.clone())), bytes)
    } else {
        (request.map(Body::new), bytes::Bytes::new())
    };
    let described = describe(&request, &delete_body, &frontend.cluster);
    let refusal = refusal.or_else(|| {
        let (plural, ..) = described.resource.as_ref()?;
        frontend
            .faults
            .forbids(described.verb, plural)
            .then(|| rbac_refusal(&described))
            .flatten()
    });
    let latency = frontend.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let is_write = !matches!(described.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    let exec = described.verb == "exec";
    let mut request = request;
    let fault = if refusal.is_some() {
        None
    } else if exec {
        // An exec is not dropped before its answer but cut mid-stream, by its session.
        let (fault, cut) = frontend.faults.draw_exec();
        if let Some(cut) = cut {
            request.extensions_mut().insert(cut);
        }
        fault
    } else {
        frontend.faults.draw(is_write)
    };
    let response = if let Some(refusal) = refusal {
        Some(refusal.into_response())
    } else {
        match fault {
            Some(Fault::Drop) if !exec => None,
            Some(Fault::Error) => Some(ApiError::internal("injected by the sandbox (--error-rate)").into_response()),
            Some(Fault::Conflict) => Some(
                ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Operation cannot be fulfilled on {}: {} (injected by the sandbox: --conflict-rate)",
                        described.path,
                        ApiError::MODIFIED
                    ),
                    details: Some(serde_json::json!({})),
                }
                .into_response(),
            ),
            Some(Fault::Drop) | None => Some(match frontend.router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }),
        }
    };
    let status = response
        .as_ref()
        .map_or(0, |response| response.status().as_u16());
    // An exec refused before its stream starts has no stream to cut.
    let fault = fault.filter(|fault| !(exec && *fault == Fault::Drop && status != 101));
    frontend.log.record(&RequestRecord {
        ts,
        method: described.method,
        path: described.path,
        query: described.query,
        content_type: described.content_type,
        status,
        verb: described.verb,
        dry_run: described.dry_run,
        fault: fault.map(Fault::as_str),
    });
    match response {
        Some(response) => response,
        None => {
            hang_up.notify_one();
            std::future::pending().await
        }
    }
}
