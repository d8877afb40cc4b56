//! The HTTP face of the cluster: parses paths, query parameters and bodies, calls the verbs,
//! and answers with objects, lists, tables, watch streams or `Status` errors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as AxumPath, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::api_error::ApiError;
use super::api_path::{ApiPath, ResourcePath, Served};
use super::cluster::{Cluster, FieldValidation, State, WriteOptions, Written};
use super::delete::{DeleteOptions, Deletion, Propagation, returns_deleted_object};
use super::exec;
use super::patch::PatchType;
use super::pod_logs;
use super::scale::has_scale;
use super::schema;
use super::selectors::{FieldSelector, LabelSelector};
use super::table;
use super::update::{PatchBody, Subresource};
use super::watch::{WatchRequest, stream};
use super::{discovery, meta, openapi, protobuf};
use kube_kinds::Kind;

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// `127.0.0.1:PORT`, as discovery reports it.
    pub address: String,
    /// The sandbox's directory (`--dir`): exec commands run under `pods/` there.
    pub dir: PathBuf,
    /// Turns true when the sandbox shuts down; ends the watches.
    pub shutdown: watch::Receiver<bool>,
}

/// The router: every path goes through one handler that parses it as the API does, except
/// `pods/exec`, which upgrades its connection.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            any(exec_handler),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            axum::routing::get(log_handler),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(access_review_handler),
        )
        .fallback(handle)
        .with_state(app)
}

async fn exec_handler(
    AxumState(app): AxumState<Arc<App>>,
    AxumPath((namespace, name)): AxumPath<(String, String)>,
    request: Request,
) -> Response {
    exec::answer(app, namespace, name, request).await
}

async fn log_handler(
    AxumState(app): AxumState<Arc<App>>,
    AxumPath((namespace, name)): AxumPath<(String, String)>,
    uri: Uri,
) -> Response {
    pod_logs::answer(
        app,
        &namespace,
        &name,
        &Query::parse(uri.query().unwrap_or_default()),
    )
}

/// `kubectl auth can-i`: a SelfSubjectAccessReview. The sandbox's user may do everything (as
/// a cluster admin may), so every review is allowed; the review is answered, not stored.
async fn access_review_handler(headers: HeaderMap, body: Body) -> Response {
    let answer = async {
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::too_large(MAX_BODY))?;
        let mut review = parse_body(&body, &headers)?;
        if review.get("kind").and_then(Value::as_str) != Some("SelfSubjectAccessReview") {
            return Err(ApiError::bad_request(
                "the body is not a SelfSubjectAccessReview",
            ));
        }
        if review.pointer("/spec/resourceAttributes").is_none()
            && review.pointer("/spec/nonResourceAttributes").is_none()
        {
            return Err(ApiError::bad_request(
                "spec: exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] =
            json!({"allowed": true, "reason": "the sandbox allows its user everything"});
        Ok(json_response(StatusCode::CREATED, &review, &[]))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The query parameters of a request, repeated keys kept.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> Self {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order (`command` repeats in exec requests).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether `name` is `true` (or `1`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    /// Whether the request asks for `dryRun=All`.
    pub fn dry_run(&self) -> bool {
        self.0
            .iter()
            .any(|(key, value)| key == "dryRun" && value == "All")
    }
}

/// The largest request body the API server reads, as `kube-apiserver`'s
/// `--max-request-body-bytes` defaults it: 3 MiB (a Secret or ConfigMap holds at most 1 MiB
/// of data, and a client may send it with its metadata and more).
const MAX_BODY: usize = 3 * 1024 * 1024;

async fn handle(
    AxumState(app): AxumState<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::too_large(MAX_BODY).into_response();
    };
    let query = Query::parse(uri.query().unwrap_or_default());
    let served = app.cluster.read(State::served_kinds);
    let served = Served(&served);
    let Some(path) = ApiPath::parse(uri.path(), served) else {
        return ApiError::no_route(uri.path()).into_response();
    };
    let reading = method == Method::GET || method == Method::HEAD;
    let answer = match path {
        ApiPath::Resource(resource) => {
            let call = ApiCall {
                method: &method,
                query: &query,
                headers: &headers,
                body: &body,
            };
            resource_request(&app, resource, &call).await
        }
        _ if !reading => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            uri.path()
        ))),
        ApiPath::Version => Ok(json_response(StatusCode::OK, &discovery::version(), &[])),
        ApiPath::Health => Ok((StatusCode::OK, "ok").into_response()),
        ApiPath::CoreVersions => Ok(json_response(
            StatusCode::OK,
            &discovery::core_versions(&app.address),
            &[],
        )),
        ApiPath::Groups => Ok(json_response(
            StatusCode::OK,
            &discovery::group_list(served),
            &[],
        )),
        ApiPath::Group(group) => Ok(json_response(
            StatusCode::OK,
            &discovery::group(served, &group),
            &[],
        )),
        ApiPath::Resources { group, version } => Ok(json_response(
            StatusCode::OK,
            &discovery::resource_list(served, &group, &version),
            &[],
        )),
        ApiPath::OpenApiIndex => Ok(json_response(StatusCode::OK, &openapi::index(served), &[])),
        ApiPath::OpenApi { group, version } => Ok(json_response(
            StatusCode::OK,
            &openapi::document(served, &group, &version),
            &[],
        )),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A JSON answer with `Warning` headers.
fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 - {warning:?}")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn written(result: Written) -> Response {
    let status = if result.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, &result.object, &result.warnings)
}

/// The write options of a request: `dryRun`, `fieldManager` (or the client's name from its
/// user agent, as the real server derives it), `fieldValidation`, `force`.
fn write_options(query: &Query, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    if let Some(value) = query.get("dryRun")
        && value != "All"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid dry run value: dryRun: Unsupported value: {value:?}: supported values: \"All\""
        )));
    }
    let field_validation = match query.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid field validation directive: {other:?}, supported values: Ignore, Warn, Strict"
            )));
        }
    };
    let field_manager = match query.get("fieldManager") {
        Some(manager) if !manager.is_empty() => manager.to_string(),
        _ => headers
            .get(header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok())
            .and_then(|agent| agent.split('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteOptions {
        dry_run: query.dry_run(),
        field_manager,
        field_validation,
        force: query.flag("force"),
    })
}

/// Reads a JSON body (or YAML, which server-side apply and some clients send).
fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // kubectl's imperative `create` commands send protobuf, and do not fall back to JSON.
    if content_type.contains("protobuf") || protobuf::is_protobuf(body) {
        return protobuf::decode(body).map_err(|error| {
            let accepted = format!("application/json, application/yaml ({error})");
            ApiError::unsupported_media_type(content_type, &accepted)
        });
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(
            content_type,
            "application/json, application/yaml",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(json_error) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
            if content_type.contains("yaml") {
                serde_saphyr::from_str(text)
                    .map_err(|error| ApiError::bad_request(format!("error decoding YAML: {error}")))
            } else {
                Err(ApiError::bad_request(format!(
                    "couldn't get version/kind; json parse error: {json_error}"
                )))
            }
        }
    }
}

fn subresource(resource: &ResourcePath) -> Result<Subresource, ApiError> {
    match resource.subresource.as_deref() {
        None => Ok(Subresource::Main),
        Some("status") if schema::has_field(resource.kind, "status") => Ok(Subresource::Status),
        Some(other) => Err(ApiError::not_found(
            resource.kind,
            &format!("{}/{other}", resource.name.as_deref().unwrap_or_default()),
        )),
    }
}

/// What a request to a resource brings besides its path.
struct ApiCall<'a> {
    method: &'a Method,
    query: &'a Query,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl ApiCall<'_> {
    /// The write options of the query and headers, and the body parsed as an object.
    fn write(&self) -> Result<(WriteOptions, Value), ApiError> {
        Ok((
            write_options(self.query, self.headers)?,
            parse_body(self.body, self.headers)?,
        ))
    }

    /// The kind of patch the Content-Type names (`apply` only where `allow_apply`).
    fn patch_type(&self, allow_apply: bool) -> Result<PatchType, ApiError> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        PatchType::from_content_type(content_type)
            .filter(|patch_type| allow_apply || *patch_type != PatchType::Apply)
            .ok_or_else(|| ApiError::unsupported_media_type(content_type, PATCH_TYPES))
    }
}

async fn resource_request(
    app: &App,
    resource: ResourcePath,
    call: &ApiCall<'_>,
) -> Result<Response, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.clone().unwrap_or_default();
    let cluster = &app.cluster;
    if let (Some("log"), Some(name), &Method::GET) = (
        resource.subresource.as_deref(),
        resource.name.as_deref(),
        call.method,
    ) && kind.kind == "Pod"
        && kind.group.is_empty()
    {
        // Sandbox containers run nothing, so their logs are empty; the pod must exist.
        cluster.read(|state| state.get(kind, &namespace, name))?;
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response());
    }
    if let (Some("scale"), Some(name)) = (resource.subresource.as_deref(), resource.name.as_deref())
        && has_scale(kind)
    {
        return scale_request(cluster, kind, &namespace, name, call);
    }
    let sub = subresource(&resource)?;
    let (query, headers) = (call.query, call.headers);
    match (call.method.clone(), resource.name.as_deref()) {
        (Method::GET, None) if query.flag("watch") => {
            watch_response(app, &resource, query, headers, None)
        }
        (Method::GET, Some(name)) if query.flag("watch") => {
            watch_response(app, &resource, query, headers, Some(name))
        }
        (Method::GET, None) => list(cluster, kind, resource.namespace.as_deref(), query, headers),
        (Method::GET, Some(name)) => get_object(cluster, kind, &namespace, name, headers),
        (Method::POST, None) if kind.namespaced && resource.namespace.is_none() => {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource (post {})",
                kind.plural
            )))
        }
        (Method::POST, None) => {
            let (options, body) = call.write()?;
            cluster
                .write(|state| state.create(kind, &namespace, body, &options))
                .map(written)
        }
        (Method::PUT, Some(name)) => {
            let (options, body) = call.write()?;
            cluster
                .write(|state| state.replace(kind, &namespace, name, body, sub, &options))
                .map(written)
        }
        (Method::PATCH, Some(name)) => {
            let patch_type = call.patch_type(true)?;
            let options = write_options(query, headers)?;
            if patch_type == PatchType::Apply && query.get("fieldManager").is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(
                    "PATCH: fieldManager is required for apply requests",
                ));
            }
            let body = parse_body(call.body, headers)?;
            let patch = PatchBody {
                patch_type,
                body: &body,
            };
            cluster
                .write(|state| state.patch(kind, &namespace, name, &patch, sub, &options))
                .map(written)
        }
        (Method::DELETE, Some(name)) => delete_object(cluster, kind, &namespace, name, call),
        (Method::DELETE, None) => {
            delete_collection(cluster, kind, resource.namespace.as_deref(), call)
        }
        (method, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            kind.plural
        ))),
    }
}

/// GET of one object, as JSON or as a table.
fn get_object(
    cluster: &Cluster,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let object = cluster.read(|state| state.get(kind, namespace, name))?;
    if wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(
                kind,
                std::slice::from_ref(&object),
                meta::resource_version(&object),
                None,
            ),
            &[],
        ));
    }
    Ok(json_response(StatusCode::OK, &object, &[]))
}

/// DELETE of one object: the object (still there with finalizers, or gone) or a `Status`.
fn delete_object(
    cluster: &Cluster,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    call: &ApiCall<'_>,
) -> Result<Response, ApiError> {
    let options = delete_options(call.query, call.body)?;
    let deletion = cluster.write(|state| {
        let dry_run = call.query.dry_run() || body_dry_run(call.body);
        state.delete(kind, namespace, name, &options, dry_run)
    })?;
    Ok(match deletion {
        Deletion::Gone(object) if !returns_deleted_object(kind) => {
            json_response(StatusCode::OK, &deleted_status(kind, &object), &[])
        }
        Deletion::Gone(object) | Deletion::Pending(object) => {
            json_response(StatusCode::OK, &object, &[])
        }
    })
}

/// DELETE of a collection: the list of the objects it deleted.
fn delete_collection(
    cluster: &Cluster,
    kind: &'static Kind,
    namespace: Option<&str>,
    call: &ApiCall<'_>,
) -> Result<Response, ApiError> {
    let options = delete_options(call.query, call.body)?;
    let (labels, fields) = selectors(kind, call.query)?;
    let items = cluster.write(|state| {
        state.delete_collection(
            kind,
            namespace,
            &labels,
            &fields,
            &options,
            call.query.dry_run() || body_dry_run(call.body),
        )
    })?;
    let revision = cluster.read(|state| state.store.revision());
    Ok(json_response(
        StatusCode::OK,
        &list_document(kind, items, revision, None),
        &[],
    ))
}

/// GET, PUT and PATCH on a `scale` subresource.
fn scale_request(
    cluster: &Cluster,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    call: &ApiCall<'_>,
) -> Result<Response, ApiError> {
    match *call.method {
        Method::GET => {
            let scale = cluster.read(|state| state.scale(kind, namespace, name))?;
            Ok(json_response(StatusCode::OK, &scale, &[]))
        }
        Method::PUT => {
            let (options, body) = call.write()?;
            cluster
                .write(|state| state.replace_scale(kind, namespace, name, &body, &options))
                .map(written)
        }
        Method::PATCH => {
            let patch_type = call.patch_type(false)?;
            let (options, body) = call.write()?;
            cluster
                .write(|state| {
                    state.patch_scale(kind, namespace, name, patch_type, &body, &options)
                })
                .map(written)
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}/scale)",
            call.method, kind.plural
        ))),
    }
}

/// The patch content types, as a 415 lists them.
const PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json";

/// The `Status` a deletion answers with when the registry does not return the object.
fn deleted_status(kind: &Kind, object: &Value) -> Value {
    let mut details =
        json!({"name": meta::name(object), "kind": kind.plural, "uid": meta::uid(object)});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// Whether a `DeleteOptions` body asks for `dryRun: [All]` (kube-rs sends it there, not in
/// the query).
pub fn body_dry_run(body: &[u8]) -> bool {
    delete_body(body)
        .ok()
        .and_then(|options| options.get("dryRun").cloned())
        .and_then(|values| values.as_array().cloned())
        .is_some_and(|values| values.iter().any(|value| value == "All"))
}

/// A `DeleteOptions` body: JSON, or protobuf from client-go's typed clients (helm's
/// `uninstall` deletes its release Secrets so).
fn delete_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        Ok(json!({}))
    } else if protobuf::is_protobuf(body) {
        protobuf::decode(body)
            .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))
    }
}

fn delete_options(query: &Query, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let body = delete_body(body)?;
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| query.get(field).map(str::to_string))
    };
    let propagation = match text("propagationPolicy") {
        Some(policy) => Some(Propagation::parse(&policy).ok_or_else(|| {
            ApiError::bad_request(format!("propagationPolicy: Unsupported value: {policy:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""))
        })?),
        None => match body.get("orphanDependents").and_then(Value::as_bool).or_else(|| query.get("orphanDependents").map(|value| value == "true")) {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
    };
    let grace_period_seconds = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            query
                .get("gracePeriodSeconds")
                .and_then(|value| value.parse().ok())
        });
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn selectors(
    kind: &'static Kind,
    query: &Query,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(|error| ApiError::bad_request(error.0))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), kind)
        .map_err(|error| ApiError::bad_request(error.0))?;
    Ok((labels, fields))
}

/// Whether the client asked for a `Table` (kubectl's `get` does, for its columns).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

fn list_document(
    kind: &Kind,
    items: Vec<Value>,
    revision: u64,
    next: Option<(String, usize)>,
) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some((token, remaining)) = next {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version, "metadata": metadata, "items": items})
}

fn list(
    cluster: &Cluster,
    kind: &'static Kind,
    namespace: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(kind, query)?;
    let (mut items, revision) = cluster.read(|state| {
        let items: Vec<Value> = state
            .store
            .list(kind, namespace)
            .filter(|object| labels.matches(object) && fields.matches(object))
            .cloned()
            .collect();
        (items, state.store.revision())
    });
    // A continue token is the position of the next item; the list is re-read, not a
    // snapshot (a real server serves continued pages from the first page's version).
    let start: usize = match query.get("continue").filter(|token| !token.is_empty()) {
        Some(token) => token
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid continue token {token:?}")))?,
        None => 0,
    };
    items.drain(..start.min(items.len()));
    let limit: usize = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(0);
    let next = if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        Some(((start + limit).to_string(), remaining))
    } else {
        None
    };
    if wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(
                kind,
                &items,
                &revision.to_string(),
                next.map(|(token, _)| token),
            ),
            &[],
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &list_document(kind, items, revision, next),
        &[],
    ))
}

fn watch_response(
    app: &App,
    resource: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    name: Option<&str>,
) -> Result<Response, ApiError> {
    let (labels, mut fields) = selectors(resource.kind, query)?;
    if let Some(name) = name {
        fields = FieldSelector::name(name);
    }
    let resource_version = match query
        .get("resourceVersion")
        .filter(|version| !version.is_empty())
    {
        Some(version) => Some(version.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {version:?}"))
        })?),
        None => None,
    };
    let request = WatchRequest {
        kind: resource.kind,
        namespace: resource.namespace.clone(),
        labels,
        fields,
        resource_version,
        send_initial_events: query.flag("sendInitialEvents"),
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout: query
            .get("timeoutSeconds")
            .and_then(|seconds| seconds.parse().ok())
            .map(Duration::from_secs),
        table: wants_table(headers),
    };
    let body: Body = stream(app.cluster.clone(), request, app.shutdown.clone());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
