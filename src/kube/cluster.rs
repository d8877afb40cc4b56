//! A connection to a cluster: the client built from a kubeconfig (or in-cluster config),
//! and JSON-object helpers over `Api<DynamicObject>` with retries on transient errors;
//! commands run in pods through the exec API (kube's `ws` feature).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy,
};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Kind;
use super::exec_credential::{ExecToken, ExecTokenLayer};
use super::readings::{ListReading, ObjectReading, Reading, Readings, Written};
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
async fn with_retries<T, F, Fut>(call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    retrying(call, is_transient).await
}

/// Whether a write that carries its own precondition (a create, a replace with a
/// resourceVersion) is worth another try: as [`is_transient`], except that a 409 is the
/// answer the caller asked for and is returned at once.
fn is_transient_conditional_write(error: &kube::Error) -> bool {
    !matches!(error, kube::Error::Api(status) if status.code == 409) && is_transient(error)
}

/// Tries a request up to 6 times with exponential backoff while `transient` says so.
async fn retrying<T, F, Fut>(
    mut call: F,
    transient: fn(&kube::Error) -> bool,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if attempt < 6 && transient(&error) => {
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
    /// Where `get` and `list` report what they read, for a saved plan.
    readings: Option<Readings>,
    /// What it was connected with, to connect to another context of the same kubeconfig.
    options: ClusterOptions,
    /// The API server's URL: two contexts may name the same cluster.
    server: String,
    /// The kinds its discovery found, once asked (see [`super::discovery`]).
    pub(super) discovered: super::discovery::Discovered,
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

/// The kubeconfig files kubectl reads without `--kubeconfig`: those listed in `KUBECONFIG`
/// when it is set, else `~/.kube/config` (whether they exist or not).
pub fn default_kubeconfig_files() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG").filter(|list| !list.is_empty()) {
        Some(list) => std::env::split_paths(&list).collect(),
        None => std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".kube/config"))
            .into_iter()
            .collect(),
    }
}

/// The kubeconfig to use and where it came from: `--kubeconfig`; else the
/// [default files](default_kubeconfig_files) that exist, merged as kubectl merges them;
/// `None` when there is none (in a pod).
fn read_kubeconfig(options: &ClusterOptions) -> Result<Option<(PathBuf, Kubeconfig)>, Diagnostic> {
    if let Some(path) = &options.kubeconfig {
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|error| kubeconfig_error(path, error))?;
        return Ok(Some((path.clone(), kubeconfig)));
    }
    let files = default_kubeconfig_files();
    let mut merged: Option<Kubeconfig> = None;
    for path in files.iter().filter(|path| path.exists()) {
        let next = Kubeconfig::read_from(path).map_err(|error| kubeconfig_error(path, error))?;
        merged = Some(match merged {
            Some(merged) => merged
                .merge(next)
                .map_err(|error| kubeconfig_error(path, error))?,
            None => next,
        });
    }
    // Named as the user wrote it: the `KUBECONFIG` list, or the one file.
    let source = match files.as_slice() {
        [one] => one.clone(),
        _ => std::env::join_paths(&files).map_or_else(|_| PathBuf::new(), PathBuf::from),
    };
    Ok(merged.map(|kubeconfig| (source, kubeconfig)))
}

impl Cluster {
    /// Builds a client. Reads and checks the kubeconfig now (a bad file or a missing context
    /// is invalid input) and runs its exec credential plugin, if it has one, once; sends no
    /// request. Clones share the client, its connections and its credential.
    pub async fn connect(options: &ClusterOptions) -> Result<Self, Diagnostic> {
        let what = options
            .context
            .as_ref()
            .map(|context| format!("--context {context}"));
        Self::connect_as(options, what.as_deref()).await
    }

    /// The cluster of another context of the kubeconfig this one was connected with (a
    /// step's `context:`); a missing context is invalid input, as with `--context`.
    pub async fn in_context(&self, context: &str) -> Result<Self, Diagnostic> {
        let options = ClusterOptions {
            kubeconfig: self.options.kubeconfig.clone(),
            context: Some(context.to_string()),
        };
        Self::connect_as(&options, Some(&format!("context `{context}`"))).await
    }

    /// [`Cluster::connect`], naming the context as `what` when it is missing.
    async fn connect_as(options: &ClusterOptions, what: Option<&str>) -> Result<Self, Diagnostic> {
        let mut config = match read_kubeconfig(options)? {
            Some((path, kubeconfig)) => {
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
                        "{}: no such context in {}",
                        what.unwrap_or(context),
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
        let exec_token = match &config.auth_info.exec {
            Some(plugin) => ExecToken::obtain(plugin).await.map_err(|error| {
                Diagnostic::new(format!("cannot get the cluster's credential: {error:#}")).help(
                    "check the kubeconfig user's `exec` plugin (is it installed and logged in?)",
                )
            })?,
            None => None,
        };
        if exec_token.is_some() {
            // The layer below gives the token; kube would run the plugin three times more.
            config.auth_info.exec = None;
        }
        let default_namespace = config.default_namespace.clone();
        let server = config.cluster_url.to_string();
        let builder = kube::client::ClientBuilder::try_from(config).map_err(|error| {
            Diagnostic::new(format!("cannot build a Kubernetes client: {error}"))
        })?;
        let client = match exec_token {
            Some(token) => builder.with_layer(&ExecTokenLayer(token)).build(),
            None => builder.build(),
        };
        Ok(Cluster {
            client,
            default_namespace,
            readings: None,
            options: options.clone(),
            server,
            discovered: super::discovery::Discovered::default(),
        })
    }

    /// The same cluster, reporting every `get` and `list` to `readings` (what a plan's
    /// decisions read, for a saved plan).
    pub fn recording(&self, readings: Readings) -> Cluster {
        Cluster {
            readings: Some(readings),
            ..self.clone()
        }
    }

    /// The client, for discovery.
    pub(super) fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The API server's URL (two contexts may name the same cluster).
    pub fn server(&self) -> &str {
        &self.server
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

    /// What a request is about, for its error messages.
    fn request<'a>(
        &'a self,
        verb: &'a str,
        kind: &'a Kind,
        name: &'a str,
        namespace: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            verb,
            kind,
            name,
            namespace: self.namespace_for(kind, namespace),
        }
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match self.namespace_for(kind, namespace) {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Reports a write to the readings, if any (not a dry run's). Before the request: a
    /// write whose answer was lost may have happened all the same.
    fn wrote(&self, kind: &Kind, namespace: Option<&str>, name: &str) {
        if let Some(readings) = &self.readings {
            readings.record_write(Written::object(
                kind,
                self.namespace_for(kind, namespace),
                name,
            ));
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
        let request = self.request("get", kind, name, namespace);
        let object = match with_retries(|| api.get(name)).await {
            Ok(object) => Some(to_json(&object)),
            Err(error) if is_not_found(&error, kind) => None,
            Err(error) => return Err(request.error(error)),
        };
        if let Some(readings) = &self.readings {
            let namespace = self.namespace_for(kind, namespace);
            readings.record(Reading::Object(ObjectReading::of(
                kind,
                namespace,
                name,
                object.as_ref(),
            )));
        }
        Ok(object)
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
        let request = self.request("list", kind, "", namespace);
        let list = with_retries(|| api.list(&params))
            .await
            .map_err(|error| request.error(error))?;
        let items: Vec<serde_json::Value> = list.items.iter().map(to_json).collect();
        if let Some(readings) = &self.readings {
            readings.record(Reading::List(ListReading::of(
                kind,
                self.namespace_for(kind, namespace),
                label_selector,
                field_selector,
                &items,
            )));
        }
        Ok(items)
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
        if !dry_run {
            self.wrote(kind, namespace, name);
        }
        let request = self.request("patch", kind, name, namespace);
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
        self.wrote(kind, namespace, name);
        let request = self.request("apply", kind, name, namespace);
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
        if !dry_run {
            self.wrote(kind, namespace, name);
        }
        let request = self.request("delete", kind, name, namespace);
        match with_retries(|| api.delete(name, &params)).await {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error, kind) => Ok(false),
            Err(error) => Err(request.error(error)),
        }
    }

    /// Creates an object. A name already taken is a 409 `AlreadyExists` error, returned at
    /// once: a caller that creates to claim a name wants that answer, not a retry. Other
    /// transient errors are retried, so a create whose answer was lost can come back as
    /// `AlreadyExists` although it was this call that created the object.
    pub async fn create(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        object: &DynamicObject,
    ) -> Result<serde_json::Value, KubeError> {
        let api = self.api(kind, namespace);
        let name = object.metadata.name.as_deref().unwrap_or_default();
        self.wrote(kind, namespace, name);
        let request = self.request("create", kind, name, namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let result = retrying(
            || api.create(&params, object),
            is_transient_conditional_write,
        )
        .await
        .map_err(|error| request.error(error))?;
        Ok(to_json(&result))
    }

    /// Replaces an object (PUT). When `object` carries `metadata.resourceVersion` the server
    /// refuses with 409 `Conflict` if the object changed since that version; the 409 is
    /// returned at once (optimistic concurrency: the caller re-reads and decides).
    pub async fn replace(
        &self,
        kind: &Kind,
        name: &str,
        namespace: Option<&str>,
        object: &DynamicObject,
    ) -> Result<serde_json::Value, KubeError> {
        let api = self.api(kind, namespace);
        self.wrote(kind, namespace, name);
        let request = self.request("replace", kind, name, namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let result = retrying(
            || api.replace(name, &params, object),
            is_transient_conditional_write,
        )
        .await
        .map_err(|error| request.error(error))?;
        Ok(to_json(&result))
    }
}

/// Field manager for server-side apply and patches.
const FIELD_MANAGER: &str = "runbook";

/// What a command run in a pod printed, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code (128 + n for a death by signal n).
    pub exit_code: i32,
}

impl ExecOutput {
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Which output of a command a piece came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Why running a command in a pod failed. A command that ran and exited non-zero is not an
/// error: its code is in [`ExecOutput::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The exec request was refused (no such pod, a pod not running, no such container,
    /// forbidden) or got no answer: the command did not start.
    #[error(transparent)]
    Request(KubeError),
    /// The connection dropped after the command started and before its exit status came:
    /// the command may still be running, or have ended either way. Retry a command that
    /// can be repeated; re-attach to one that was started detached.
    #[error(
        "exec in pod {pod}{place}: the connection was lost before the command's exit status came ({message}); the command may still be running"
    )]
    ConnectionLost {
        /// The pod.
        pod: String,
        /// " in namespace X".
        place: String,
        /// What the client saw.
        message: String,
    },
    /// The server ended the command's stream with a failure that is not an exit code (the
    /// command could not be started, for one).
    #[error("exec in pod {pod}{place}: {message} ({reason})")]
    Failed {
        /// The pod.
        pod: String,
        /// " in namespace X".
        place: String,
        /// The `Status`'s reason: `InternalError`, ...
        reason: String,
        /// The `Status`'s message.
        message: String,
    },
}

impl ExecError {
    /// Whether the connection dropped while the command ran (its outcome is unknown).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ExecError::ConnectionLost { .. })
    }

    /// Whether trying again may succeed: a lost connection, an unreachable or overloaded
    /// server.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecError::ConnectionLost { .. } => true,
            ExecError::Request(KubeError::Transport(..)) => true,
            ExecError::Request(KubeError::Api { code, .. }) => *code == 429 || *code >= 500,
            ExecError::Request(_) | ExecError::Failed { .. } => false,
        }
    }
}

/// How much of each stream kube-rs buffers between its connection and our readers.
const EXEC_BUFFER: usize = 64 * 1024;

/// A line longer than this is handed on in pieces, so a command that never ends a line cannot
/// fill memory. Lines are for output shown to people and for small status lines; what must
/// arrive whole (a JSON document of any size) is read with [`Cluster::exec`] instead.
const MAX_LINE: usize = 64 * 1024;

/// Cuts output into lines at `\n`, `\r` (progress lines that rewrite themselves) or
/// `\r\n`, without their ends.
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
    after_cr: bool,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8], emit: &mut impl FnMut(&str)) {
        for &byte in data {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.emit(emit),
                _ => {
                    self.pending.push(byte);
                    if self.pending.len() >= MAX_LINE {
                        self.emit(emit);
                    }
                }
            }
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        if !self.pending.is_empty() {
            self.emit(emit);
        }
    }

    fn emit(&mut self, emit: &mut impl FnMut(&str)) {
        emit(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }
}

/// Reads some of an output, or waits forever once it is gone.
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buffer).await,
        None => std::future::pending().await,
    }
}

/// The exit code in a channel-3 `Status`, or the failure it reports instead.
fn exit_code_of(status: &Status) -> Result<i32, (String, String)> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|details| details.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
        .and_then(|cause| cause.message.as_deref()?.trim().parse().ok());
    match (status.reason.as_deref(), code) {
        (Some("NonZeroExitCode"), Some(code)) => Ok(code),
        (reason, _) => Err((
            reason.unwrap_or("Failure").to_string(),
            status.message.clone().unwrap_or_default(),
        )),
    }
}

impl Cluster {
    /// Runs `command` in a container of a pod (the only one when `container` is `None`),
    /// feeding it `stdin` if given, and collects its output and exit code. `namespace: None`
    /// is the default namespace. The command is not retried once started.
    pub async fn exec<S: AsRef<str>>(
        &self,
        namespace: Option<&str>,
        pod: &str,
        container: Option<&str>,
        command: &[S],
        stdin: Option<Bytes>,
    ) -> Result<ExecOutput, ExecError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit_code =
            self.exec_streaming(namespace, pod, container, command, stdin, |stream, data| {
                match stream {
                    OutputStream::Stdout => stdout.extend_from_slice(data),
                    OutputStream::Stderr => stderr.extend_from_slice(data),
                }
            })
            .await?;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    /// Like [`Cluster::exec`], but hands each line of output to `on_line` as soon as it is
    /// complete (lines end at `\n` or `\r`, and are given without it); returns the exit
    /// code. For commands that print progress for hours.
    pub async fn exec_lines<S: AsRef<str>>(
        &self,
        namespace: Option<&str>,
        pod: &str,
        container: Option<&str>,
        command: &[S],
        stdin: Option<Bytes>,
        mut on_line: impl FnMut(OutputStream, &str),
    ) -> Result<i32, ExecError> {
        let mut stdout = LineSplitter::default();
        let mut stderr = LineSplitter::default();
        let code = self
            .exec_streaming(namespace, pod, container, command, stdin, |stream, data| {
                let splitter = match stream {
                    OutputStream::Stdout => &mut stdout,
                    OutputStream::Stderr => &mut stderr,
                };
                splitter.push(data, &mut |line| on_line(stream, line));
            })
            .await;
        // What came before a lost connection is output all the same.
        stdout.finish(&mut |line| on_line(OutputStream::Stdout, line));
        stderr.finish(&mut |line| on_line(OutputStream::Stderr, line));
        code
    }

    /// Runs a command in a pod and hands its output to `on_output` as it arrives, in
    /// pieces of any size; returns the exit code.
    pub async fn exec_streaming<S: AsRef<str>>(
        &self,
        namespace: Option<&str>,
        pod: &str,
        container: Option<&str>,
        command: &[S],
        stdin: Option<Bytes>,
        mut on_output: impl FnMut(OutputStream, &[u8]),
    ) -> Result<i32, ExecError> {
        let namespace = namespace.unwrap_or(&self.default_namespace);
        // Pod is in the kind registry: `kinds()` lists the core kinds first.
        let pods = super::find_kind("Pod").expect("Pod is a known kind");
        let request = Request {
            verb: "exec",
            kind: pods,
            name: pod,
            namespace: Some(namespace),
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = AttachParams {
            container: container.map(str::to_string),
            stdin: stdin.is_some(),
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(EXEC_BUFFER),
            max_stdout_buf_size: Some(EXEC_BUFFER),
            max_stderr_buf_size: Some(EXEC_BUFFER),
        };
        let command: Vec<String> = command
            .iter()
            .map(|part| part.as_ref().to_string())
            .collect();
        let mut attached = connect_exec(|| api.exec(pod, command.clone(), &params))
            .await
            .map_err(|error| ExecError::Request(request.error(error)))?;
        let status = attached.take_status();
        let ended = pump_exec_output(attached, stdin, &mut on_output).await;
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let place = request.place();
        match status {
            Some(status) => exit_code_of(&status).map_err(|(reason, message)| ExecError::Failed {
                pod: pod.to_string(),
                place,
                reason,
                message,
            }),
            None => Err(ExecError::ConnectionLost {
                pod: pod.to_string(),
                place,
                message: ended.err().unwrap_or_else(|| {
                    "the server closed the stream without an exit status".into()
                }),
            }),
        }
    }
}

/// Feeds `stdin` to an exec stream and hands its output to `on_output` until the
/// connection ends; the connection's error, if it failed.
async fn pump_exec_output(
    mut attached: kube::api::AttachedProcess,
    stdin: Option<Bytes>,
    on_output: &mut impl FnMut(OutputStream, &[u8]),
) -> Result<(), String> {
    let stdin_writer = attached.stdin();
    let mut stdout = attached.stdout();
    let mut stderr = attached.stderr();
    let feed = async move {
        if let (Some(mut writer), Some(data)) = (stdin_writer, stdin) {
            let _ = writer.write_all(&data).await;
            // The end of stdin: kube-rs tells the server (v5).
            let _ = writer.shutdown().await;
        }
    };
    tokio::pin!(feed);
    let connection = attached.join();
    tokio::pin!(connection);
    let mut fed = false;
    let mut out_buffer = vec![0; EXEC_BUFFER];
    let mut err_buffer = vec![0; EXEC_BUFFER];
    // kube-rs does not end our readers when its connection fails, so the connection's
    // end, not the readers', ends the loop.
    let ended = loop {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buffer) => match read {
                Ok(count) if count > 0 => on_output(OutputStream::Stdout, &out_buffer[..count]),
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buffer) => match read {
                Ok(count) if count > 0 => on_output(OutputStream::Stderr, &err_buffer[..count]),
                _ => stderr = None,
            },
            () = &mut feed, if !fed => fed = true,
            ended = &mut connection => break ended,
        }
    };
    // What kube-rs buffered before its connection ended is all there will be.
    for (stream, reader, buffer) in [
        (OutputStream::Stdout, &mut stdout, &mut out_buffer),
        (OutputStream::Stderr, &mut stderr, &mut err_buffer),
    ] {
        while let Some(pending) = reader.as_mut() {
            match pending.read(buffer).now_or_never() {
                Some(Ok(count)) if count > 0 => on_output(stream, &buffer[..count]),
                _ => *reader = None,
            }
        }
    }
    ended.map_err(|error| error.to_string())
}

/// Opens an exec stream, trying again (as [`with_retries`] does) only on answers that say
/// the server did not start anything: 429 and 5xx. A connection error may have come after
/// the server started the command, so it is not retried here.
async fn connect_exec<T, F, Fut>(mut connect: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match connect().await {
            Err(kube::Error::Api(status))
                if attempt < 6 && (status.code == 429 || status.code >= 500) =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
                attempt += 1;
            }
            result => return result,
        }
    }
}

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

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut |line| lines.push(line.to_string()));
        }
        splitter.finish(&mut |line| lines.push(line.to_string()));
        lines
    }

    #[test]
    fn lines_end_at_newlines_and_carriage_returns() {
        assert_eq!(
            lines(&[b"one\ntw", b"o\r\n\nthree\r 10%\r 20%", b"\rlast"]),
            ["one", "two", "", "three", " 10%", " 20%", "last"]
        );
        assert_eq!(lines(&[b"a\r", b"\nb\n"]), ["a", "b"]);
    }

    #[test]
    fn exit_codes_come_from_the_status_causes() {
        let status = |value: serde_json::Value| -> Status {
            serde_json::from_value(value).expect("a Status")
        };
        assert_eq!(
            exit_code_of(&status(
                serde_json::json!({"metadata": {}, "status": "Success"})
            )),
            Ok(0)
        );
        assert_eq!(
            exit_code_of(&status(serde_json::json!({
                "status": "Failure", "reason": "NonZeroExitCode", "message": "m",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
            }))),
            Ok(3)
        );
        assert_eq!(
            exit_code_of(&status(serde_json::json!({
                "status": "Failure", "reason": "InternalError", "message": "no such file",
            }))),
            Err(("InternalError".to_string(), "no such file".to_string()))
        );
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
