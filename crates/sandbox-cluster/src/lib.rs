//! The sandbox cluster: an HTTPS server on 127.0.0.1 that speaks the Kubernetes API for the
//! kinds in [`kube_kinds::kinds()`], CustomResourceDefinitions and the kinds they define
//! ([`custom_resources`]), for tests, demos and dry runs. The real `kubectl` and
//! kube-rs clients work against it, with the kubeconfig it writes (mode 0600): its CA and
//! its bearer token ([`credentials`]), without which every request gets 401 ([`access`]).
//!
//! The data's way through it:
//! - [`server`] accepts TLS connections, lets in only what [`access`] allows, injects
//!   [`faults`], writes the [`request_log`];
//! - [`routes`] parses [`api_path`]s and queries and answers [`discovery`], [`openapi`],
//!   lists (or kubectl's [`table`]s), [`watch`]es and the verbs, and [`exec`] (a WebSocket
//!   [`exec_session`] that runs the command as a local [`pod_process`]), and [`pod_logs`];
//! - the verbs ([`create`], [`update`], [`apply`], [`delete`]) run on the [`cluster`]'s
//!   state with the API's rules: [`admission`] (defaults, what a new object gets),
//!   [`validation`], [`patch`]es, [`managed_fields`] over [`field_set`]s, [`selectors`];
//! - the [`store`] keeps objects and their history;
//! - [`controllers`] react to changes (binding, protection finalizers, scheduling,
//!   deployments, StatefulSets, Jobs, pods' lifetimes, garbage collection, namespace deletion);
//! - the [`kubelet`] runs Job pods' commands as local [`pod_process`]es and records how
//!   they end;
//! - [`scenario`] loads objects at start and saves them at shutdown; [`state_file`] keeps
//!   the state on disk after every change (`--state`), so a killed sandbox resumes, under a
//!   lock ([`state_lock`]); [`cli`] is `runbook sandbox up`. The deployer stand-in
//!   (`runbook sandbox deployer`) is runbook's: it is a client of a cluster, not part of one.
//!
//! This crate knows nothing of runbooks: it depends on [`kube_kinds`] for the kinds it
//! serves, and runbook depends on it (behind its `sandbox` feature) for `--sandbox` and
//! `runbook sandbox up`.
//!
//! Deliberate differences from a real cluster are documented where they are made: pods are
//! scheduled and run at once (unless a claim they mount is missing, unbound or being
//! deleted) and terminate within a second ([`admission`], [`delete`]), Deployments replace
//! their ReplicaSets at once, StatefulSets keep no ControllerRevisions, only Job pods run
//! anything: their first container's command, as a local process in `DIR/pods/NS/POD/` with
//! its output in `CONTAINER.log` there ([`kubelet`]), failed Job pods are replaced at once
//! (no back-off delay) and `suspend`, `activeDeadlineSeconds`, `podFailurePolicy`,
//! `backoffLimitPerIndex` and `ttlSecondsAfterFinished` are not acted on ([`controllers`]),
//! processes are not restarted across a restart from a state file: a Job pod that was
//! running becomes `Failed` and its Job replaces it ([`kubelet`]), a pod annotated
//! `sandbox.runbook.dev/lifetime: "8s"` is deleted gracefully that long after its creation,
//! as JupyterHub's culler stops a user server ([`controllers::LIFETIME_ANNOTATION`]; a real
//! cluster ignores the annotation), continue tokens are positions ([`routes`]), a few spec
//! fields are selectable ([`selectors`]), unknown fields are found by probing the typed
//! schema ([`schema`]), only some kinds are read from protobuf ([`protobuf`]), resource
//! versions jump (never back) across a restart from a state file and watches from before it
//! get 410 Gone ([`state_file`]), exec runs its command on the host in `DIR/pods/NS/POD/`
//! with volume mounts not remapped, over WebSocket only ([`exec`]), logs are answered
//! whole, without `follow` ([`pod_logs`]).

pub mod access;
pub mod admission;
pub mod api_error;
pub mod api_path;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod container_log;
pub mod controllers;
pub mod create;
pub mod credentials;
pub mod custom_resources;
pub mod delete;
pub mod discovery;
mod duration;
pub mod embedded;
pub mod exec;
pub mod exec_session;
pub mod faults;
pub mod field_set;
pub mod fleet;
pub mod hub;
pub mod identities;
pub mod kubelet;
pub mod managed_fields;
pub mod meta;
pub mod openapi;
pub mod options;
pub mod patch;
pub mod pod_logs;
pub mod pod_process;
pub mod pod_reaper;
pub mod protobuf;
pub mod request_log;
pub mod routes;
pub mod scale;
pub mod scenario;
pub mod schema;
pub mod server;
pub mod state_file;
pub mod state_lock;
pub mod store;
pub mod table;
pub mod update;
pub mod validation;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use cli::{UpArgs, up};
pub use cluster::Cluster;
pub use faults::Faults;
pub use options::SandboxOptions;

/// The selector grammar, shared with runbook's client.
pub use kube_kinds::selectors;

use access::Access;
use credentials::Credentials;
use faults::FaultInjector;
use request_log::RequestLog;
use routes::App;
use server::Frontend;
use state_lock::StateLock;

/// A running sandbox: its server and controllers run on the tokio runtime that started it,
/// until [`Sandbox::shutdown`] (or until it is dropped, without saving).
#[derive(Debug)]
pub struct Sandbox {
    url: String,
    kubeconfig: PathBuf,
    request_log: PathBuf,
    cluster: Arc<Cluster>,
    save: Option<PathBuf>,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Held while the sandbox keeps a state file, so that no second sandbox writes it.
    _state_lock: Option<StateLock>,
}

/// Locks `FILE.lock` beside a state file: two sandboxes writing one state would lose each
/// other's changes (a `runbook sandbox up --state` while a `run --sandbox` uses it).
fn lock_state_file(state: &Path) -> anyhow::Result<StateLock> {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    match StateLock::acquire(Path::new(&name))
        .with_context(|| format!("cannot lock {}", state.display()))?
    {
        Ok(lock) => Ok(lock),
        Err(holder) => {
            let who = holder.unwrap_or_else(|| "another process".to_string());
            anyhow::bail!(
                "the sandbox state {} is in use by {who}; stop that sandbox (or let that run finish) first",
                state.display()
            )
        }
    }
}

impl Sandbox {
    /// Binds 127.0.0.1:`port`, loads the state file if it exists (else the scenario), starts
    /// keeping the state file, serving (over TLS, to holders of its token: [`credentials`])
    /// and reconciling on the current tokio runtime, and writes `DIR/kubeconfig`, mode 0600
    /// (last, so that a file there means the sandbox is ready).
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Sandbox> {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create {}", options.dir.display()))?;
        let seed = options.faults.seed.unwrap_or_else(|| fastrand::u64(..));
        let cluster = Arc::new(Cluster::new(seed));
        let state_lock = options
            .state_file
            .as_deref()
            .map(lock_state_file)
            .transpose()?;
        match (&options.state_file, &options.objects) {
            (Some(state), _) if state.exists() => {
                state_file::load(&cluster, state)?;
                // Before the controllers look: they replace what failed.
                cluster.write(kubelet::fail_lost_pods);
            }
            (_, Some(objects)) => {
                scenario::load(&cluster, objects)?;
            }
            _ => {}
        }
        if let Some(state) = &options.state_file {
            cluster.persist_to(state.clone())?;
        }
        // Settle the scenario before the first request: its claims bound, its
        // Deployments' pods there, whenever the controller task first gets to run.
        cluster.write(|state| controllers::reconcile(state, jiff::Timestamp::now()));
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
        let address = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let url = format!("https://{address}");
        let credentials = Credentials::load_or_create(&options.dir)?;
        let tls = Arc::new(credentials.server_config()?);
        let request_log = options.dir.join("requests.jsonl");
        let log = RequestLog::open(&request_log)
            .with_context(|| format!("cannot open {}", request_log.display()))?;
        let (stop, stopped) = signal::channel(false);
        let app_dir = std::path::absolute(&options.dir).unwrap_or_else(|_| options.dir.clone());
        let app = Arc::new(App {
            cluster: cluster.clone(),
            address: address.to_string(),
            dir: app_dir.clone(),
            shutdown: stopped.clone(),
        });
        let frontend = Frontend {
            router: routes::router(app),
            // The faults draw from the seed too, but apart from names, so that adding a
            // fault does not rename objects.
            faults: Arc::new(FaultInjector::new(
                options.faults.clone(),
                seed.rotate_left(17),
            )),
            log: Arc::new(log),
            access: Access::new(address.port(), credentials.token()),
            tls,
            cluster: cluster.clone(),
        };
        let tasks = vec![
            tokio::spawn(controllers::run(cluster.clone(), stopped.clone())),
            tokio::spawn(kubelet::run(cluster.clone(), app_dir, stopped.clone())),
            tokio::spawn(server::serve(listener, frontend, stopped)),
        ];
        let kubeconfig = options.dir.join("kubeconfig");
        // It holds the token: readable by the owner only, like the credentials.
        credentials::write_private(&kubeconfig, &credentials.kubeconfig_text(&url))?;
        Ok(Sandbox {
            url,
            kubeconfig,
            request_log,
            cluster,
            save: options.save,
            stop,
            tasks,
            _state_lock: state_lock,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `DIR/kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `DIR/requests.jsonl`.
    pub fn request_log(&self) -> &Path {
        &self.request_log
    }

    /// The cluster's state, for tests that look at it directly.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Stops serving (open watches end), stops the controllers, and saves the state if asked.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        if let Some(path) = &self.save {
            scenario::save(&self.cluster, path)?;
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
