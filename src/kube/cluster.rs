//! A connection to a cluster: the client built from a kubeconfig (or in-cluster config),
//! and JSON-object helpers over `Api<DynamicObject>` with retries on transient errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::Kind;
use crate::diagnostic::{Diagnostic, Source, did_you_mean};

/// Where the cluster's credentials come from (`--kubeconfig`, `--context`).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config`, or in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

/// An error from the API server, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The server refused the credentials' right to do this.
    #[error("forbidden: cannot {verb} {kind}{place}: {message}")]
    Forbidden {
        /// get, list, patch, delete, ...
        verb: String,
        /// The kind.
        kind: String,
        /// " in namespace X", or empty.
        place: String,
        /// The server's message.
        message: String,
    },
    /// The namespace does not exist.
    #[error("namespace `{0}` does not exist")]
    NamespaceNotFound(String),
    /// Any other answer of the server.
    #[error("{verb} {kind} {name}{place}: {message} ({reason}, HTTP {code})")]
    Api {
        /// The request.
        verb: String,
        /// The kind.
        kind: String,
        /// The object, when there is one.
        name: String,
        /// " in namespace X", or empty.
        place: String,
        /// The server's message.
        message: String,
        /// `NotFound`, `Conflict`, `Invalid`, ...
        reason: String,
        /// HTTP status code.
        code: u16,
    },
    /// The server could not be reached.
    #[error("{verb} {kind} {name}: cannot reach the API server: {0}", verb = .1, kind = .2, name = .3)]
    Transport(String, String, String, String),
}

impl KubeError {
    /// The HTTP status, for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            KubeError::Forbidden { .. } => Some(403),
            KubeError::NamespaceNotFound(_) => Some(404),
            KubeError::Transport(..) => None,
        }
    }
}

/// What a request is about, for error messages.
struct Request<'a> {
    verb: &'a str,
    kind: &'a Kind,
    name: &'a str,
    namespace: Option<&'a str>,
}

impl Request<'_> {
    fn place(&self) -> String {
        self.namespace
            .map(|ns| format!(" in namespace {ns}"))
            .unwrap_or_default()
    }

    fn error(&self, error: kube::Error) -> KubeError {
        match error {
            kube::Error::Api(status) => {
                let code = status.code;
                if code == 403 {
                    return KubeError::Forbidden {
                        verb: self.verb.into(),
                        kind: self.kind.kind.into(),
                        place: self.place(),
                        message: status.message.clone(),
                    };
                }
                // A 404 that names a namespace is about the namespace, not the object.
                if code == 404
                    && let Some(details) = &status.details
                    && details.kind == "namespaces"
                {
                    return KubeError::NamespaceNotFound(details.name.clone());
                }
                KubeError::Api {
                    verb: self.verb.into(),
                    kind: self.kind.kind.into(),
                    name: self.name.into(),
                    place: self.place(),
                    message: status.message.clone(),
                    reason: status.reason.clone(),
                    code,
                }
            }
            other => KubeError::Transport(
                other.to_string(),
                self.verb.into(),
                self.kind.kind.into(),
                self.name.into(),
            ),
        }
    }
}

/// Whether an error is worth another try: the server is overloaded or briefly down, or the
/// connection dropped.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        // A 409 `Conflict` (not `AlreadyExists`) on a patch means the object changed under
        // us; runbook's patches carry no resourceVersion, so sending it again re-reads.
        kube::Error::Api(status) => {
            status.code == 429
                || status.code >= 500
                || (status.code == 409 && status.reason == "Conflict")
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

/// Whether `error` says the requested object of `kind` does not exist (and not, say, that
/// its namespace does not: a 404 naming a namespace is about the object only when the
/// object is a namespace).
fn is_not_found(error: &kube::Error, kind: &Kind) -> bool {
    // kube's `is_not_found` trusts `reason` only; a 404 with an empty reason is not found too.
    let is_namespace = kind.group.is_empty() && kind.kind == "Namespace";
    matches!(error, kube::Error::Api(status) if status.code == 404
        && (is_namespace || status.details.as_ref().is_none_or(|d| d.kind != "namespaces")))
}

/// Tries a request up to 6 times with exponential backoff on transient errors.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if attempt < 6 && is_transient(&error) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    default_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("default_namespace", &self.default_namespace)
            .finish()
    }
}

fn kubeconfig_error(path: &Path, error: KubeconfigError) -> Diagnostic {
    match error {
        KubeconfigError::Parse(parse) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut diagnostic =
                Diagnostic::from_yaml(&Source::new(path.display().to_string(), text), &parse);
            diagnostic.message = format!("the kubeconfig does not parse: {}", diagnostic.message);
            diagnostic.help("fix the kubeconfig, or point --kubeconfig at another one")
        }
        other => Diagnostic::new(format!("{}: {other}", path.display()))
            .help("point --kubeconfig at a valid kubeconfig, or set KUBECONFIG"),
    }
}

impl Cluster {
    /// Builds a client. Reads and checks the kubeconfig now (a bad file or a missing context
    /// is invalid input); sends no request.
    pub async fn connect(options: &ClusterOptions) -> Result<Self, Diagnostic> {
        let path = options
            .kubeconfig
            .clone()
            .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube/config")))
            .filter(|path| options.kubeconfig.is_some() || path.exists());
        let config = match path {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(&path).map_err(|error| kubeconfig_error(&path, error))?;
                if let Some(context) = &options.context
                    && !kubeconfig
                        .contexts
                        .iter()
                        .any(|named| &named.name == context)
                {
                    let names: Vec<&str> = kubeconfig
                        .contexts
                        .iter()
                        .map(|named| named.name.as_str())
                        .collect();
                    let help = match did_you_mean(context, &names) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("its contexts are: {}", names.join(", ")),
                    };
                    return Err(Diagnostic::new(format!(
                        "--context {context}: no such context in {}",
                        path.display()
                    ))
                    .help(help));
                }
                let config_options = KubeConfigOptions {
                    context: options.context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &config_options)
                    .await
                    .map_err(|error| kubeconfig_error(&path, error))?
            }
            None => kube::Config::incluster().map_err(|error| {
                Diagnostic::new(format!(
                    "no kubeconfig found and not running in a pod: {error}"
                ))
                .help("pass --kubeconfig FILE, set KUBECONFIG, or run with --sandbox")
            })?,
        };
        let default_namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config).map_err(|error| {
            Diagnostic::new(format!("cannot build a Kubernetes client: {error}"))
        })?;
        Ok(Cluster {
            client,
            default_namespace,
        })
    }

    /// The namespace for a namespaced kind when none is given (the context's).
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The namespace a request for `kind` goes to: none for cluster-scoped kinds.
    pub fn namespace_for<'a>(&'a self, kind: &Kind, namespace: Option<&'a str>) -> Option<&'a str> {
        kind.namespaced
            .then(|| namespace.unwrap_or(&self.default_namespace))
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match self.namespace_for(kind, namespace) {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// One object as JSON, or `None` when it does not exist.
    pub async fn get(
        &self,
        kind: &Kind,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<Option<serde_json::Value>, KubeError> {
        let api = self.api(kind, namespace);
        let request = Request {
            verb: "get",
            kind,
            name,
            namespace: self.namespace_for(kind, namespace),
        };
        match with_retries(|| api.get(name)).await {
            Ok(object) => Ok(Some(to_json(&object))),
            Err(error) if is_not_found(&error, kind) => Ok(None),
            Err(error) => Err(request.error(error)),
        }
    }

    /// Objects matching selectors; `namespace: None` for a namespaced kind means the default
    /// namespace, and `all_namespaces` lists across all of them.
    pub async fn list(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, KubeError> {
        let api = self.api(kind, namespace);
        let mut params = ListParams::default();
        if let Some(selector) = label_selector.filter(|s| !s.is_empty()) {
            params = params.labels(selector);
        }
        if let Some(selector) = field_selector.filter(|s| !s.is_empty()) {
            params = params.fields(selector);
        }
        let request = Request {
            verb: "list",
            kind,
            name: "",
            namespace: self.namespace_for(kind, namespace),
        };
        let list = with_retries(|| api.list(&params))
            .await
            .map_err(|error| request.error(error))?;
        Ok(list.items.iter().map(to_json).collect())
    }

    /// Patches an object; with `dry_run` the server computes the result and stores nothing.
    pub async fn patch(
        &self,
        kind: &Kind,
        name: &str,
        namespace: Option<&str>,
        patch: &ObjectPatch,
        dry_run: bool,
    ) -> Result<serde_json::Value, KubeError> {
        let api = self.api(kind, namespace);
        let mut params = match patch {
            ObjectPatch::Apply(_) => PatchParams::apply(FIELD_MANAGER).force(),
            _ => PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
        };
        params.dry_run = dry_run;
        let request = Request {
            verb: "patch",
            kind,
            name,
            namespace: self.namespace_for(kind, namespace),
        };
        let result = with_retries(|| async {
            match patch {
                ObjectPatch::Merge(body) => api.patch(name, &params, &Patch::Merge(body)).await,
                ObjectPatch::Strategic(body) => {
                    api.patch(name, &params, &Patch::Strategic(body)).await
                }
                ObjectPatch::Apply(body) => api.patch(name, &params, &Patch::Apply(body)).await,
            }
        })
        .await
        .map_err(|error| request.error(error))?;
        Ok(to_json(&result))
    }

    /// Server-side applies a whole manifest as `field_manager`, taking over fields other
    /// managers own (`force`), as a tool that owns the object's configuration does.
    pub async fn apply_as(
        &self,
        kind: &Kind,
        name: &str,
        namespace: Option<&str>,
        manifest: &serde_json::Value,
        field_manager: &str,
    ) -> Result<serde_json::Value, KubeError> {
        let api = self.api(kind, namespace);
        let params = PatchParams::apply(field_manager).force();
        let request = Request {
            verb: "apply",
            kind,
            name,
            namespace: self.namespace_for(kind, namespace),
        };
        let patch = Patch::Apply(manifest);
        let result = with_retries(|| api.patch(name, &params, &patch))
            .await
            .map_err(|error| request.error(error))?;
        Ok(to_json(&result))
    }

    /// Deletes an object; `Ok(false)` when it was already absent.
    pub async fn delete(
        &self,
        kind: &Kind,
        name: &str,
        namespace: Option<&str>,
        propagation: Option<PropagationPolicy>,
        dry_run: bool,
    ) -> Result<bool, KubeError> {
        let api = self.api(kind, namespace);
        let params = DeleteParams {
            propagation_policy: propagation,
            dry_run,
            ..DeleteParams::default()
        };
        let request = Request {
            verb: "delete",
            kind,
            name,
            namespace: self.namespace_for(kind, namespace),
        };
        match with_retries(|| api.delete(name, &params)).await {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error, kind) => Ok(false),
            Err(error) => Err(request.error(error)),
        }
    }
}

/// Field manager for server-side apply and patches.
const FIELD_MANAGER: &str = "runbook";

/// A patch body and its type.
#[derive(Debug, Clone)]
pub enum ObjectPatch {
    /// RFC 7386 JSON merge patch.
    Merge(serde_json::Value),
    /// Kubernetes strategic merge patch.
    Strategic(serde_json::Value),
    /// Server-side apply of a whole manifest.
    Apply(serde_json::Value),
}

fn to_json(object: &DynamicObject) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                reason: reason.into(),
                message: message.into(),
                ..kube::core::Status::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn forbidden_names_the_verb_the_kind_and_the_namespace() {
        let pods = super::super::find_kind("Pod").expect("Pod is a known kind");
        let request = Request {
            verb: "delete",
            kind: pods,
            name: "jupyter-alice",
            namespace: Some("staging"),
        };
        let error = request.error(api_error(
            403,
            "Forbidden",
            "pods \"jupyter-alice\" is forbidden: User \"deployer\" cannot delete resource \"pods\" in API group \"\" in the namespace \"staging\"",
        ));
        assert!(matches!(error, KubeError::Forbidden { .. }), "{error:?}");
        assert_eq!(error.code(), Some(403));
        let message = error.to_string();
        assert!(
            message.starts_with("forbidden: cannot delete Pod in namespace staging: "),
            "{message}"
        );

        // Cluster-scoped: no namespace to name.
        let volumes = super::super::find_kind("pv").expect("pv is a known kind");
        let request = Request {
            verb: "patch",
            kind: volumes,
            name: "staging-home-nfs",
            namespace: None,
        };
        let message = request.error(api_error(403, "Forbidden", "no")).to_string();
        assert_eq!(message, "forbidden: cannot patch PersistentVolume: no");
    }

    #[test]
    fn other_answers_keep_the_servers_reason_and_code() {
        let services = super::super::find_kind("svc").expect("svc is a known kind");
        let request = Request {
            verb: "get",
            kind: services,
            name: "proxy-public",
            namespace: Some("staging"),
        };
        let message = request
            .error(api_error(500, "InternalError", "etcd is down"))
            .to_string();
        assert_eq!(
            message,
            "get Service proxy-public in namespace staging: etcd is down (InternalError, HTTP 500)"
        );
    }
}
