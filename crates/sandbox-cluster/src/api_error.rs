//! Errors as the Kubernetes API reports them: a `Status` body with `reason` and `code`.
//!
//! Clients decide what an error means from these fields (kube-rs' `is_not_found` reads
//! `reason`, kubectl prints `Error from server (NotFound): ...` from `reason` and `message`),
//! so every failure the sandbox sends is a full `Status`, never a bare status line.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use kube_kinds::Kind;

/// One failure, as the API server would describe it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiError {
    /// The HTTP status code, repeated in the body as `code`.
    pub code: u16,
    /// The machine-readable reason: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...
    pub reason: &'static str,
    /// The sentence kubectl prints.
    pub message: String,
    /// `details`: which object (`name`, `group`, `kind`), and field `causes` for `Invalid`.
    pub details: Option<Value>,
}

/// One field-level problem of an `Invalid` error (`spec.containers: Required value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, `spec.containers[0].image`.
    pub field: String,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

/// The kinds of field errors the real API server reports, with their texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// `Required value`, with an optional detail.
    Required(String),
    /// `Invalid value: VALUE: DETAIL`; the value is already formatted the way Go prints it.
    Invalid(String, String),
    /// `Forbidden: DETAIL`.
    Forbidden(String),
    /// `Unsupported value: VALUE: supported values: ...`.
    NotSupported(String, String),
    /// `Not found: VALUE` (a reference to something that is not there).
    NotFound(String),
    /// `Duplicate value: VALUE`.
    Duplicate(String),
}

impl FieldError {
    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Required(detail.into()),
        }
    }

    /// `field: Invalid value: "value": detail`; strings are quoted as the real server does.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Invalid(go_value(value), detail.into()),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Forbidden(detail.into()),
        }
    }

    /// `field: Unsupported value: "value": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let supported = supported
            .iter()
            .map(|value| format!("{value:?}"))
            .collect::<Vec<_>>();
        FieldError {
            field: field.into(),
            problem: FieldProblem::NotSupported(go_value(value), supported.join(", ")),
        }
    }

    /// `field: Not found: "value"`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::NotFound(go_value(value)),
        }
    }

    /// `field: Duplicate value: "value"`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Duplicate(go_value(value)),
        }
    }

    fn reason(&self) -> &'static str {
        match self.problem {
            FieldProblem::Required(_) => "FieldValueRequired",
            FieldProblem::Invalid(..) => "FieldValueInvalid",
            FieldProblem::Forbidden(_) => "FieldValueForbidden",
            FieldProblem::NotSupported(..) => "FieldValueNotSupported",
            FieldProblem::NotFound(_) => "FieldValueNotFound",
            FieldProblem::Duplicate(_) => "FieldValueDuplicate",
        }
    }

    /// The text after the field name.
    fn detail(&self) -> String {
        match &self.problem {
            FieldProblem::Required(detail) if detail.is_empty() => "Required value".into(),
            FieldProblem::Required(detail) => format!("Required value: {detail}"),
            FieldProblem::Invalid(value, detail) => format!("Invalid value: {value}: {detail}"),
            FieldProblem::Forbidden(detail) => format!("Forbidden: {detail}"),
            FieldProblem::NotSupported(value, supported) => {
                format!("Unsupported value: {value}: supported values: {supported}")
            }
            FieldProblem::NotFound(value) => format!("Not found: {value}"),
            FieldProblem::Duplicate(value) => format!("Duplicate value: {value}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail())
    }
}

/// A value the way Go's `%#v` shows it in field errors: strings quoted, the rest as JSON.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// `pods` for the core group, `deployments.apps` elsewhere: how messages name a resource.
pub fn qualified_resource(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

/// `details` naming one object of `kind` the way the generic registry does (plural name).
fn object_details(kind: &Kind, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind.plural});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    details
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        let message = format!("{} {name:?} not found", qualified_resource(kind));
        ApiError::new(404, "NotFound", message).with_details(object_details(kind, name))
    }

    /// 404 for a path that names no resource the sandbox serves.
    pub fn no_route(path: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
        .with_details(json!({}))
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        let message = format!("{} {name:?} already exists", qualified_resource(kind));
        ApiError::new(409, "AlreadyExists", message).with_details(object_details(kind, name))
    }

    /// 409: the optimistic-concurrency failure (stale `resourceVersion`, failed precondition).
    pub fn conflict(kind: &Kind, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified_resource(kind)
        );
        ApiError::new(409, "Conflict", message).with_details(object_details(kind, name))
    }

    /// The `why` of [`ApiError::conflict`] for a stale `resourceVersion`.
    pub const MODIFIED: &'static str = "the object has been modified; please apply your changes to the latest version and try again";

    /// 409 from server-side apply: fields owned by another manager.
    pub fn apply_conflict(kind: &Kind, name: &str, message: String, causes: Vec<Value>) -> Self {
        let mut details = object_details(kind, name);
        details["causes"] = Value::Array(causes);
        ApiError::new(409, "Conflict", message).with_details(details)
    }

    /// 422: `Pod "x" is invalid: spec.containers: Required value`.
    pub fn invalid(kind: &Kind, name: &str, errors: &[FieldError]) -> Self {
        ApiError::invalid_of(kind.kind, kind.group, name, errors)
    }

    /// 422 for the options of a request, as the registry checks them before it looks at the
    /// object: `PodLogOptions "x" is invalid: limitBytes: Invalid value: 0: ...`.
    pub fn invalid_options(kind: &str, name: &str, errors: &[FieldError]) -> Self {
        ApiError::invalid_of(kind, "", name, errors)
    }

    fn invalid_of(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let display_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let listed = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes = errors
            .iter()
            .map(|error| json!({"reason": error.reason(), "message": error.detail(), "field": error.field}))
            .collect::<Vec<_>>();
        // Unlike NotFound, the registry names the kind (not the resource) in Invalid details.
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{display_kind} {name:?} is invalid: {listed}"),
        )
        .with_details(details)
    }

    /// 422 for a patch that does not apply (a JSON patch `test` that fails, a missing path).
    pub fn patch_failed(message: impl Into<String>) -> Self {
        ApiError::new(422, "Invalid", message).with_details(json!({}))
    }

    /// 400: a request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 403: `pods "x" is forbidden: WHY`.
    pub fn forbidden(kind: &Kind, name: &str, why: &str) -> Self {
        let message = format!("{} {name:?} is forbidden: {why}", qualified_resource(kind));
        ApiError::new(403, "Forbidden", message).with_details(object_details(kind, name))
    }

    /// 405: a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message).with_details(json!({}))
    }

    /// 415: a body in a format the server does not read (kubectl's protobuf, an unknown
    /// patch type).
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {accepted}; got {content_type:?}"
        );
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 413: a request body over the server's limit of `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 410 `Expired`: a watch or list from a `resourceVersion` the history no longer holds.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 500: an injected failure, or a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let details = json!({"causes": [{"message": message}]});
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(details)
    }

    /// The `Status` object sent as the response body (and inside watch `ERROR` events).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    #[test]
    fn not_found_names_the_resource_like_the_registry() {
        let pod = find_kind("Pod").unwrap();
        let status = ApiError::not_found(pod, "web").status();
        assert_eq!(status["message"], "pods \"web\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"], json!({"name": "web", "kind": "pods"}));
        let deployment = find_kind("Deployment").unwrap();
        let status = ApiError::not_found(deployment, "hub").status();
        assert_eq!(status["message"], "deployments.apps \"hub\" not found");
        assert_eq!(status["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_several_errors_in_brackets() {
        let pod = find_kind("Pod").unwrap();
        let one = ApiError::invalid(pod, "p", &[FieldError::required("spec.containers", "")]);
        assert_eq!(
            one.message,
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        let two = ApiError::invalid(
            pod,
            "p",
            &[
                FieldError::required("spec.containers[0].image", ""),
                FieldError::invalid("metadata.name", &json!("P"), "bad"),
            ],
        );
        assert_eq!(
            two.message,
            "Pod \"p\" is invalid: [spec.containers[0].image: Required value, metadata.name: Invalid value: \"P\": bad]"
        );
        assert_eq!(
            two.status()["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
    }
}
