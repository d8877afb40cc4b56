//! The run lock kept in the cluster: a `coordination.k8s.io/v1` Lease per run, named
//! `runbook-<run id>` in the state namespace, so that runners on different machines (a
//! laptop, a CI job) cannot hold the same run at once.
//!
//! `spec.holderIdentity` says who holds it (user, host, pid, the CI job's URL, and a token
//! that tells two acquisitions apart); `acquireTime`, `renewTime` and
//! `leaseDurationSeconds` say since when and for how long. The holder renews it every third
//! of its duration; a Lease not renewed for its duration is taken over. Every write carries
//! the resourceVersion it was computed from, so of two runners racing for it the server
//! accepts one write and answers the other 409: nobody decides alone that a lock is free.
//!
//! A holder stops believing it holds the lock a tenth of the duration before anyone else may
//! take it over ([`HeldLease::check`]), so a late renewal cannot leave two holders, as long
//! as the runners' clocks agree within that margin.
//!
//! How `engine::run` will use it, with `--state cluster` (which comes with the journal in
//! the cluster): where it takes the [flock](super::lock) of the run directory today, it calls
//! [`LeaseLock::acquire`]; `Err(holder)` becomes [`Error::Locked`] (exit 4) naming the holder
//! and since when, [`Acquired::TakenOver`] a warning naming the previous holder. At each step
//! boundary it calls [`HeldLease::check`] and stops (exit 1) when the lease was lost, and at
//! the end it calls [`HeldLease::release`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::DynamicObject;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::lock::host_name;
use crate::diagnostic::Diagnostic;
use crate::kube::{Cluster, Kind, KubeError, find_kind};
use crate::{Error, Exit};

/// The namespace the Leases (and, later, the journals) of runs live in by default.
pub const DEFAULT_NAMESPACE: &str = "runbook";

/// How long a Lease stays valid without a renewal, by default: what a runner killed with
/// SIGKILL makes the next one wait.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);

/// How many times [`LeaseLock::acquire`] reads and writes again after losing a race (a 409)
/// before it gives up: each loss means another runner wrote, so a few are plenty.
const MAX_ATTEMPTS: usize = 10;

/// How long a failed renewal waits before it tries again (the client has retried already).
const RENEW_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The name of the Lease of a run: `runbook-<run id>`, lowercased, with every character a
/// Kubernetes name may not hold made a `-`.
pub fn lease_name(run_id: &str) -> String {
    let name: String = format!("runbook-{run_id}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(253)
        .collect();
    name.trim_end_matches(['-', '.']).to_string()
}

/// Who holds a Lease: the `spec.holderIdentity` runbook writes,
/// `USER@HOST pid=PID [ci=URL] id=TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderIdentity {
    /// The user the runner runs as.
    pub user: String,
    /// The machine.
    pub host: String,
    /// The runner's process id.
    pub pid: u32,
    /// The CI job's URL (GitHub Actions), when the runner is one.
    pub ci: Option<String>,
    /// Random, per acquisition: tells apart two runners of one host and pid (a container
    /// restarted with pid 1) and lets a runner recognise its own write whose answer was lost.
    pub token: String,
}

impl HolderIdentity {
    /// The identity of this process, reading the user and the CI job from `env` (the
    /// process environment as a map: `USER` or `LOGNAME`; `GITHUB_SERVER_URL`,
    /// `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`, `GITHUB_RUN_ATTEMPT`).
    pub fn of_this_process(env: &HashMap<String, String>) -> Self {
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|name| env.get(*name).filter(|value| !value.is_empty()).cloned())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|user| user.name)
            })
            .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()));
        HolderIdentity {
            user: word(&user),
            host: word(&host_name()),
            pid: std::process::id(),
            ci: github_job_url(env),
            token: format!("{:08x}", fastrand::u32(..)),
        }
    }

    /// Reads a `spec.holderIdentity`; `None` when runbook did not write it.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let (user, host) = words.next()?.split_once('@')?;
        let (mut pid, mut ci, mut token) = (None, None, None);
        for word in words {
            match word.split_once('=')? {
                ("pid", value) if pid.is_none() => pid = Some(value.parse().ok()?),
                ("ci", value) if ci.is_none() && !value.is_empty() => ci = Some(value.into()),
                ("id", value)
                    if token.is_none()
                        && !value.is_empty()
                        && value.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    token = Some(value.into());
                }
                _ => return None,
            }
        }
        if user.is_empty() || host.is_empty() {
            return None;
        }
        Some(HolderIdentity {
            user: user.into(),
            host: host.into(),
            pid: pid?,
            ci,
            token: token?,
        })
    }

    /// The `spec.holderIdentity` it is written as.
    pub fn to_field(&self) -> String {
        let ci = self
            .ci
            .as_ref()
            .map(|url| format!(" ci={url}"))
            .unwrap_or_default();
        format!(
            "{}@{} pid={}{ci} id={}",
            self.user, self.host, self.pid, self.token
        )
    }
}

impl std::fmt::Display for HolderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} (pid {}", self.user, self.host, self.pid)?;
        if let Some(url) = &self.ci {
            write!(f, ", CI job {url}")?;
        }
        write!(f, ")")
    }
}

/// `text` as one word of a holderIdentity: no spaces, no `=` or `@` that would make it
/// read back differently.
fn word(text: &str) -> String {
    let word: String = text
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '=' || c == '@' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if word.is_empty() {
        "unknown".into()
    } else {
        word
    }
}

/// The URL of the GitHub Actions job run this process is part of, from the variables
/// GitHub sets: `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`, and
/// `/attempts/$GITHUB_RUN_ATTEMPT` when set.
fn github_job_url(env: &HashMap<String, String>) -> Option<String> {
    let get = |name: &str| env.get(name).filter(|value| !value.is_empty());
    let run = get("GITHUB_RUN_ID")?;
    let repository = get("GITHUB_REPOSITORY")?;
    let server = get("GITHUB_SERVER_URL").map_or("https://github.com", String::as_str);
    let mut url = format!(
        "{}/{repository}/actions/runs/{run}",
        server.trim_end_matches('/')
    );
    if let Some(attempt) = get("GITHUB_RUN_ATTEMPT") {
        url.push_str(&format!("/attempts/{attempt}"));
    }
    Some(word(&url))
}

/// Who holds (or held) a Lease, as read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Who.
    pub identity: HolderIdentity,
    /// When it took the Lease (`acquireTime`).
    pub since: Timestamp,
    /// When it last renewed it (`renewTime`).
    pub renewed: Timestamp,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
}

impl LeaseHolder {
    /// When the Lease may be taken over if it is not renewed before.
    pub fn expires(&self) -> Timestamp {
        let duration = SignedDuration::try_from(self.duration).unwrap_or(SignedDuration::MAX);
        self.renewed.checked_add(duration).unwrap_or(Timestamp::MAX)
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} since {}, last renewed {}",
            self.identity,
            self.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            self.renewed.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

impl LeaseHolder {
    /// The holder as `status` and `list` show a lock's holder.
    pub fn as_lock_holder(&self, lease: &str) -> super::lock::LockHolder {
        let time = |at: Timestamp| at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        super::lock::LockHolder {
            pid: self.identity.pid,
            host: self.identity.host.clone(),
            since: time(self.since),
            lease: Some(Box::new(super::lock::LeaseDetails {
                object: lease.into(),
                user: self.identity.user.clone(),
                ci: self.identity.ci.clone(),
                renewed: time(self.renewed),
            })),
        }
    }
}

/// An error taking, renewing or releasing a Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The Lease holds something runbook did not write (edited by hand): nothing is changed.
    #[error("Lease {object}: {problem}")]
    Invalid {
        /// `namespace/name`.
        object: String,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// The state namespace does not exist and the credentials may not create it.
    #[error("namespace `{namespace}` does not exist and cannot be created: {message}")]
    NamespaceForbidden {
        /// The namespace.
        namespace: String,
        /// The server's message.
        message: String,
    },
    /// Other runners kept winning the race for the Lease.
    #[error(
        "Lease {object}: gave up after {attempts} attempts, another runner changed it each time"
    )]
    Contended {
        /// `namespace/name`.
        object: String,
        /// How many reads and writes were tried.
        attempts: usize,
    },
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(Box<KubeError>),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl LeaseError {
    /// The exit status this error maps to: 2 for what the user must fix (a Lease edited
    /// into nonsense, a namespace that cannot be created), 1 for the rest.
    pub fn exit(&self) -> Exit {
        match self {
            LeaseError::Invalid { .. } | LeaseError::NamespaceForbidden { .. } => {
                Exit::InvalidInput
            }
            _ => Exit::StepFailed,
        }
    }
}

impl From<LeaseError> for Error {
    fn from(error: LeaseError) -> Self {
        match &error {
            LeaseError::Invalid { object, .. } => {
                let (namespace, name) = object.split_once('/').unwrap_or(("", object));
                Error::Invalid(Box::new(Diagnostic::new(error.to_string()).help(format!(
                    "runbook did not write this; if no run is using it, delete it: kubectl delete lease -n {namespace} {name}"
                ))))
            }
            LeaseError::NamespaceForbidden { namespace, .. } => {
                Error::Invalid(Box::new(Diagnostic::new(error.to_string()).help(format!(
                    "create the namespace `{namespace}` with credentials that may, or choose another state namespace"
                ))))
            }
            _ => Error::Other(error.into()),
        }
    }
}

impl From<KubeError> for LeaseError {
    fn from(error: KubeError) -> Self {
        LeaseError::Api(Box::new(error))
    }
}

/// Why a holder lost its Lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lost the lock of Lease {object}: {reason}")]
pub struct LeaseLost {
    /// `namespace/name`.
    pub object: String,
    /// Who holds it now, when the Lease says.
    pub holder: Option<Box<LeaseHolder>>,
    /// What happened.
    pub reason: String,
}

/// The outcome of a successful [`LeaseLock::acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// The Lease was free (new, or released by its last holder).
    Free(HeldLease),
    /// The Lease had not been renewed for its duration; this is who held it.
    TakenOver(HeldLease, LeaseHolder),
}

/// The Lease of one run, to be taken.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    cluster: Cluster,
    kind: &'static Kind,
    namespace: String,
    name: String,
    identity: HolderIdentity,
    duration: Duration,
}

/// A Lease as read, with the holder it names (if any).
struct Reading {
    lease: Lease,
    holder: Option<LeaseHolder>,
}

impl LeaseLock {
    /// The Lease of run `run_id` in `namespace`, to be held by `identity` for `duration`
    /// (whole seconds, at least one) between renewals.
    pub fn new(
        cluster: Cluster,
        namespace: &str,
        run_id: &str,
        identity: HolderIdentity,
        duration: Duration,
    ) -> Result<Self, LeaseError> {
        let kind = find_kind("Lease")
            .filter(|kind| kind.group == "coordination.k8s.io")
            .ok_or_else(|| anyhow::anyhow!("the kinds table has no coordination.k8s.io Lease"))?;
        Ok(LeaseLock {
            cluster,
            kind,
            namespace: namespace.into(),
            name: lease_name(run_id),
            identity,
            duration: Duration::from_secs(duration.as_secs().max(1)),
        })
    }

    /// `namespace/name`, as errors name the Lease.
    pub fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Who this lock is taken as.
    pub fn identity(&self) -> &HolderIdentity {
        &self.identity
    }

    /// Takes the Lease, or says who holds it. Creates the namespace if it is missing.
    pub async fn acquire(&self) -> Result<Result<Acquired, LeaseHolder>, LeaseError> {
        let mut created_namespace = false;
        // Set once a takeover was attempted: if that write landed but its answer was lost,
        // the next reading shows us as the holder, and the warning is still due.
        let mut taking_over: Option<LeaseHolder> = None;
        // When our last write began: a tenure counts from there, even when we learn only
        // from a later reading that the write landed.
        let mut wrote_at = Instant::now();
        for _ in 0..MAX_ATTEMPTS {
            let Some(reading) = self.read().await? else {
                wrote_at = Instant::now();
                let lease = self.lease(ObjectMeta::default(), None, 0);
                match self
                    .cluster
                    .create(self.kind, Some(&self.namespace), &dynamic(&lease)?)
                    .await
                {
                    Ok(written) => {
                        let held = self.hold(self.written(written)?, wrote_at);
                        return Ok(Ok(Acquired::Free(held)));
                    }
                    Err(KubeError::NamespaceNotFound(_)) if !created_namespace => {
                        self.create_namespace().await?;
                        created_namespace = true;
                    }
                    // Another runner created it first (or our own create's answer was
                    // lost): read it again.
                    Err(error) if error.code() == Some(409) => {}
                    Err(error) => return Err(error.into()),
                }
                continue;
            };
            let previous = match reading.holder {
                Some(holder) if holder.identity == self.identity => {
                    let held = self.hold(reading.lease, wrote_at);
                    return Ok(Ok(match taking_over {
                        Some(previous) => Acquired::TakenOver(held, previous),
                        None => Acquired::Free(held),
                    }));
                }
                Some(holder) if holder.expires() > Timestamp::now() => return Ok(Err(holder)),
                previous => previous,
            };
            wrote_at = Instant::now();
            let transitions = reading
                .lease
                .spec
                .as_ref()
                .and_then(|spec| spec.lease_transitions)
                .unwrap_or(0);
            let lease = self.lease(
                reading.lease.metadata.clone(),
                reading.lease.spec.as_ref(),
                if previous.is_some() {
                    transitions.saturating_add(1)
                } else {
                    transitions
                },
            );
            if previous.is_some() {
                taking_over.clone_from(&previous);
            }
            match self
                .cluster
                .replace(
                    self.kind,
                    &self.name,
                    Some(&self.namespace),
                    &dynamic(&lease)?,
                )
                .await
            {
                Ok(written) => {
                    let held = self.hold(self.written(written)?, wrote_at);
                    return Ok(Ok(match previous {
                        Some(previous) => Acquired::TakenOver(held, previous),
                        None => Acquired::Free(held),
                    }));
                }
                // The Lease changed since we read it (or is gone): whoever wrote won.
                Err(error) if matches!(error.code(), Some(409 | 404)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(LeaseError::Contended {
            object: self.object(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Who holds the Lease now, if anyone does and has renewed it within its duration
    /// (for `status`).
    pub async fn holder(&self) -> Result<Option<LeaseHolder>, LeaseError> {
        Ok(self
            .read()
            .await?
            .and_then(|reading| reading.holder)
            .filter(|holder| holder.expires() > Timestamp::now()))
    }

    /// Reads and checks the Lease; `None` when there is none.
    async fn read(&self) -> Result<Option<Reading>, LeaseError> {
        let Some(object) = self
            .cluster
            .get(self.kind, &self.name, Some(&self.namespace))
            .await?
        else {
            return Ok(None);
        };
        reading(&self.object(), object).map(Some)
    }

    /// Reads the object a write returned.
    fn written(&self, object: serde_json::Value) -> Result<Lease, LeaseError> {
        reading(&self.object(), object).map(|reading| reading.lease)
    }

    /// The Lease with us as its holder from now on, keeping `metadata` (its resourceVersion
    /// is the write's precondition) and the fields of `spec` runbook does not set.
    fn lease(&self, metadata: ObjectMeta, spec: Option<&LeaseSpec>, transitions: i32) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                managed_fields: None,
                ..metadata
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.to_field()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(seconds(self.duration)),
                lease_transitions: Some(transitions),
                ..spec.cloned().unwrap_or_default()
            }),
        }
    }

    /// Creates the state namespace; one that appeared meanwhile is fine.
    async fn create_namespace(&self) -> Result<(), LeaseError> {
        let kind = find_kind("Namespace")
            .ok_or_else(|| anyhow::anyhow!("the kinds table has no Namespace"))?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match self.cluster.create(kind, None, &dynamic(&namespace)?).await {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some(409) => Ok(()),
            Err(KubeError::Forbidden { message, .. }) => Err(LeaseError::NamespaceForbidden {
                namespace: self.namespace.clone(),
                message,
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Starts renewing `lease`, written by the write that began at `started`.
    fn hold(&self, lease: Lease, started: Instant) -> HeldLease {
        let (status, watcher) = watch::channel(Tenure::Held {
            until: started + tenure(self.duration),
        });
        let (stop, stopped) = oneshot::channel();
        let renewer = Renewer {
            lock: self.clone(),
            lease,
            status,
        };
        HeldLease {
            object: self.object(),
            status: watcher,
            stop: Some(stop),
            task: Some(tokio::spawn(renewer.run(stopped))),
        }
    }
}

/// How long after a successful write began its writer may rely on it: the Lease's duration
/// less a tenth, so that it stops before anyone else may take the Lease over.
fn tenure(duration: Duration) -> Duration {
    duration - duration / 10
}

/// A duration as `leaseDurationSeconds`.
fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// A typed object as the client's dynamic one.
fn dynamic<T: serde::Serialize>(object: &T) -> Result<DynamicObject, LeaseError> {
    let value = serde_json::to_value(object).map_err(anyhow::Error::from)?;
    Ok(serde_json::from_value(value).map_err(anyhow::Error::from)?)
}

/// Reads and checks a Lease object: anything runbook would not have written is an error
/// naming the object and the field.
fn reading(object: &str, value: serde_json::Value) -> Result<Reading, LeaseError> {
    let invalid = |problem: String| LeaseError::Invalid {
        object: object.into(),
        problem,
    };
    let lease: Lease = serde_json::from_value(value)
        .map_err(|error| invalid(format!("does not read as a Lease: {error}")))?;
    let spec = lease.spec.clone().unwrap_or_default();
    let duration = match spec.lease_duration_seconds {
        Some(seconds) if seconds <= 0 => {
            return Err(invalid(format!(
                "spec.leaseDurationSeconds is {seconds}, not a positive number of seconds"
            )));
        }
        seconds => seconds,
    };
    if let Some(transitions) = spec.lease_transitions.filter(|n| *n < 0) {
        return Err(invalid(format!(
            "spec.leaseTransitions is {transitions}, a negative count"
        )));
    }
    let holder = match spec
        .holder_identity
        .as_deref()
        .filter(|text| !text.is_empty())
    {
        None => None,
        Some(text) => {
            let identity = HolderIdentity::parse(text).ok_or_else(|| {
                invalid(format!(
                    "spec.holderIdentity {text:?} is not one runbook writes (USER@HOST pid=PID [ci=URL] id=TOKEN)"
                ))
            })?;
            let duration = duration.ok_or_else(|| {
                invalid(
                    "spec.leaseDurationSeconds is missing while spec.holderIdentity is set".into(),
                )
            })?;
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .ok_or_else(|| {
                    invalid(
                        "spec.renewTime and spec.acquireTime are missing while spec.holderIdentity is set"
                            .into(),
                    )
                })?
                .0;
            Some(LeaseHolder {
                identity,
                since: spec.acquire_time.as_ref().map_or(renewed, |time| time.0),
                renewed,
                duration: Duration::from_secs(u64::try_from(duration).unwrap_or(1)),
            })
        }
    };
    Ok(Reading { lease, holder })
}

/// Whether the holder may still rely on its Lease.
#[derive(Debug, Clone)]
enum Tenure {
    /// Until this instant, unless a renewal extends it.
    Held { until: Instant },
    /// For good.
    Lost(LeaseLost),
}

/// A Lease this process holds, renewed in the background every third of its duration.
/// Dropping it stops the renewals and releases the Lease in the background when a tokio
/// runtime is still running; [`HeldLease::release`] waits for the release.
#[derive(Debug)]
pub struct HeldLease {
    object: String,
    status: watch::Receiver<Tenure>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Renewer>>,
}

/// Whether a [`HeldLease`] is still held, as seen from elsewhere (see
/// [`HeldLease::watch`]).
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    object: String,
    status: watch::Receiver<Tenure>,
}

impl LeaseWatch {
    /// Ok while the Lease is ours (see [`HeldLease::check`]).
    pub fn check(&self) -> Result<(), LeaseLost> {
        match &*self.status.borrow() {
            Tenure::Lost(lost) => Err(lost.clone()),
            Tenure::Held { until } if Instant::now() >= *until => Err(LeaseLost {
                object: self.object.clone(),
                holder: None,
                reason: "it was not renewed in time, so another runner may take it over".into(),
            }),
            Tenure::Held { .. } => Ok(()),
        }
    }
}

impl HeldLease {
    /// `namespace/name` of the Lease.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Ok while the Lease is ours: it was renewed recently enough that nobody may have
    /// taken it over. The engine calls this at step boundaries.
    pub fn check(&self) -> Result<(), LeaseLost> {
        self.watch().check()
    }

    /// A handle that answers [`HeldLease::check`] for whoever holds it (the step loop),
    /// while the lease itself stays with its owner, who releases it.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch {
            object: self.object.clone(),
            status: self.status.clone(),
        }
    }

    /// Waits until the Lease is lost (for a `select!` beside long work).
    pub async fn lost(&self) -> LeaseLost {
        let mut status = self.status.clone();
        loop {
            let until = match &*status.borrow_and_update() {
                Tenure::Lost(lost) => return lost.clone(),
                Tenure::Held { until } => *until,
            };
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        // The renewer is gone (stopped): the tenure it last gave is final.
                        tokio::time::sleep_until(until.into()).await;
                        if let Err(lost) = self.check() {
                            return lost;
                        }
                    }
                }
                () = tokio::time::sleep_until(until.into()) => {
                    if let Err(lost) = self.check() {
                        return lost;
                    }
                }
            }
        }
    }

    /// Stops renewing and clears the holder, so the next runner takes the Lease at once
    /// without a warning. Nothing is written when the Lease was lost to someone else.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        match self.stop_renewing().await {
            Some(renewer) => renewer.release().await,
            None => Ok(()),
        }
    }

    async fn stop_renewing(&mut self) -> Option<Renewer> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()?.await.ok()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let (Some(task), Ok(runtime)) = (self.task.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Ok(renewer) = task.await {
                    let _ = renewer.release().await;
                }
            });
        }
    }
}

/// The background task that keeps a held Lease renewed.
#[derive(Debug)]
struct Renewer {
    lock: LeaseLock,
    /// The Lease as last written or read (its resourceVersion is the next write's
    /// precondition).
    lease: Lease,
    status: watch::Sender<Tenure>,
}

/// What one round of renewing came to.
enum Renewal {
    Renewed,
    Stopped,
    Lost(LeaseLost),
}

impl Renewer {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Renewer {
        let period = self.lock.duration / 3;
        loop {
            tokio::select! {
                _ = &mut stop => return self,
                () = tokio::time::sleep(period) => {}
            }
            match self.renew(&mut stop).await {
                Renewal::Renewed => {}
                Renewal::Stopped => return self,
                Renewal::Lost(lost) => {
                    self.status.send_replace(Tenure::Lost(lost));
                    return self;
                }
            }
        }
    }

    fn until(&self) -> Option<Instant> {
        match &*self.status.borrow() {
            Tenure::Held { until } => Some(*until),
            Tenure::Lost(_) => None,
        }
    }

    fn lost(&self, holder: Option<Box<LeaseHolder>>, reason: String) -> LeaseLost {
        LeaseLost {
            object: self.lock.object(),
            holder,
            reason,
        }
    }

    /// Writes a fresh `renewTime`, trying again on failures until the tenure ends.
    async fn renew(&mut self, stop: &mut oneshot::Receiver<()>) -> Renewal {
        let mut last_error = String::from("no answer");
        loop {
            let Some(until) = self.until() else {
                return Renewal::Stopped;
            };
            let started = Instant::now();
            if started >= until {
                return Renewal::Lost(self.lost(
                    None,
                    format!("could not renew it within its duration ({last_error})"),
                ));
            }
            let mut lease = self.lease.clone();
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            let object = match dynamic(&lease) {
                Ok(object) => object,
                Err(error) => return Renewal::Lost(self.lost(None, error.to_string())),
            };
            let write = self.lock.cluster.replace(
                self.lock.kind,
                &self.lock.name,
                Some(&self.lock.namespace),
                &object,
            );
            let answer = tokio::select! {
                _ = &mut *stop => return Renewal::Stopped,
                answer = tokio::time::timeout_at(until.into(), write) => answer,
            };
            match answer {
                Err(_elapsed) => {
                    last_error = "the API server did not answer in time".into();
                }
                Ok(Ok(written)) => match self.lock.written(written) {
                    Ok(lease) => {
                        self.lease = lease;
                        self.status.send_replace(Tenure::Held {
                            until: started + tenure(self.lock.duration),
                        });
                        return Renewal::Renewed;
                    }
                    Err(error) => return Renewal::Lost(self.lost(None, error.to_string())),
                },
                // Someone wrote since our last write: read who.
                Ok(Err(error)) if error.code() == Some(409) => match self.reread().await {
                    Ok(Some(reading)) => match reading.holder {
                        Some(holder) if holder.identity == self.lock.identity => {
                            // Still ours (a write of ours whose answer was lost, or a
                            // refusal that was not about the object): go on from there.
                            self.lease = reading.lease;
                            continue;
                        }
                        Some(holder) => {
                            let reason = format!("{} took it over", holder.identity);
                            return Renewal::Lost(self.lost(Some(Box::new(holder)), reason));
                        }
                        None => {
                            return Renewal::Lost(self.lost(None, "its holder was cleared".into()));
                        }
                    },
                    Ok(None) => {
                        return Renewal::Lost(self.lost(None, "the Lease was deleted".into()));
                    }
                    Err(LeaseError::Invalid { problem, .. }) => {
                        return Renewal::Lost(self.lost(None, problem));
                    }
                    Err(error) => last_error = error.to_string(),
                },
                Ok(Err(error)) if error.code() == Some(404) => {
                    return Renewal::Lost(self.lost(None, "the Lease was deleted".into()));
                }
                Ok(Err(error)) => last_error = error.to_string(),
            }
            tokio::select! {
                _ = &mut *stop => return Renewal::Stopped,
                () = tokio::time::sleep(RENEW_RETRY_DELAY) => {}
            }
        }
    }

    async fn reread(&self) -> Result<Option<Reading>, LeaseError> {
        self.lock.read().await
    }

    /// Clears the holder if it is still us.
    async fn release(mut self) -> Result<(), LeaseError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut lease = self.lease.clone();
            match lease.spec.as_mut() {
                Some(spec) if spec.holder_identity == Some(self.lock.identity.to_field()) => {
                    spec.holder_identity = None;
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                _ => return Ok(()),
            }
            match self
                .lock
                .cluster
                .replace(
                    self.lock.kind,
                    &self.lock.name,
                    Some(&self.lock.namespace),
                    &dynamic(&lease)?,
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if error.code() == Some(404) => return Ok(()),
                Err(error) if error.code() == Some(409) => match self.lock.read().await? {
                    Some(reading) => self.lease = reading.lease,
                    None => return Ok(()),
                },
                Err(error) => return Err(error.into()),
            }
        }
        Err(LeaseError::Contended {
            object: self.lock.object(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_laptop_runner_is_named_by_user_host_and_pid() {
        let identity = HolderIdentity::of_this_process(&env(&[("USER", "alice")]));
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.host, word(&host_name()));
        assert_eq!(identity.pid, std::process::id());
        assert_eq!(identity.ci, None);
        let field = identity.to_field();
        assert!(
            field.starts_with(&format!("alice@{} pid={} id=", identity.host, identity.pid)),
            "{field}"
        );
        assert_eq!(HolderIdentity::parse(&field), Some(identity.clone()));
        assert_eq!(
            identity.to_string(),
            format!("alice@{} (pid {})", identity.host, identity.pid)
        );
    }

    #[test]
    fn a_github_actions_runner_is_named_by_its_job_url() {
        let identity = HolderIdentity::of_this_process(&env(&[
            ("USER", "runner"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "2i2c-org/infrastructure"),
            ("GITHUB_RUN_ID", "1234567"),
            ("GITHUB_RUN_ATTEMPT", "2"),
        ]));
        let url = "https://github.com/2i2c-org/infrastructure/actions/runs/1234567/attempts/2";
        assert_eq!(identity.ci.as_deref(), Some(url));
        assert!(identity.to_field().contains(&format!(" ci={url} id=")));
        assert_eq!(
            HolderIdentity::parse(&identity.to_field()),
            Some(identity.clone())
        );
        assert!(identity.to_string().ends_with(&format!(", CI job {url})")));
        // Without the repository there is no URL to give.
        let partial = HolderIdentity::of_this_process(&env(&[("GITHUB_RUN_ID", "1")]));
        assert_eq!(partial.ci, None);
        // GitHub Enterprise has a server of its own; the attempt is optional.
        let enterprise = HolderIdentity::of_this_process(&env(&[
            ("GITHUB_SERVER_URL", "https://ghe.example.org/"),
            ("GITHUB_REPOSITORY", "team/deployer"),
            ("GITHUB_RUN_ID", "9"),
        ]));
        assert_eq!(
            enterprise.ci.as_deref(),
            Some("https://ghe.example.org/team/deployer/actions/runs/9")
        );
    }

    #[test]
    fn two_acquisitions_of_one_process_are_told_apart() {
        let environment = env(&[("USER", "alice")]);
        let tokens: std::collections::HashSet<String> = (0..20)
            .map(|_| HolderIdentity::of_this_process(&environment).token)
            .collect();
        assert!(tokens.len() > 1, "every acquisition drew the same token");
    }

    #[test]
    fn a_user_name_with_spaces_still_reads_back() {
        let identity = HolderIdentity::of_this_process(&env(&[("USER", "a b=c@d")]));
        assert_eq!(identity.user, "a_b_c_d");
        assert_eq!(HolderIdentity::parse(&identity.to_field()), Some(identity));
    }

    #[test]
    fn identities_runbook_did_not_write_are_refused() {
        for text in [
            "someone",
            "leader-7f9c",
            "alice@laptop",
            "alice@laptop pid=x id=ab",
            "alice@laptop pid=1 id=zz",
            "alice@laptop pid=1 id=ab extra",
            "alice@laptop pid=1 pid=2 id=ab",
            "@laptop pid=1 id=ab",
        ] {
            assert_eq!(HolderIdentity::parse(text), None, "{text}");
        }
        assert!(HolderIdentity::parse("alice@laptop pid=1 id=ab").is_some());
    }

    #[test]
    fn lease_names_are_kubernetes_names() {
        assert_eq!(
            lease_name("nfs-migration-1a2b3c4d"),
            "runbook-nfs-migration-1a2b3c4d"
        );
        assert_eq!(lease_name("My_Playbook-00ff"), "runbook-my-playbook-00ff");
        assert!(lease_name(&"x".repeat(400)).len() <= 253);
    }

    fn lease(spec: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "runbook-r", "namespace": "runbook", "resourceVersion": "3"},
            "spec": spec,
        })
    }

    fn problem(spec: serde_json::Value) -> String {
        match reading("runbook/runbook-r", lease(spec)) {
            Err(LeaseError::Invalid { object, problem }) => {
                assert_eq!(object, "runbook/runbook-r");
                problem
            }
            Err(other) => panic!("not an Invalid error: {other}"),
            Ok(_) => panic!("nonsense was accepted"),
        }
    }

    #[test]
    fn a_lease_edited_into_nonsense_names_the_field() {
        let now = "2026-12-03T14:00:00.000000Z";
        let ours = "alice@laptop pid=42 id=0badcafe";
        assert!(
            problem(serde_json::json!({"holderIdentity": "someone", "leaseDurationSeconds": 30, "renewTime": now}))
                .contains("spec.holderIdentity \"someone\"")
        );
        assert!(
            problem(serde_json::json!({"holderIdentity": ours, "leaseDurationSeconds": -5, "renewTime": now}))
                .contains("spec.leaseDurationSeconds is -5")
        );
        assert!(
            problem(serde_json::json!({"holderIdentity": ours, "renewTime": now}))
                .contains("spec.leaseDurationSeconds is missing")
        );
        assert!(
            problem(serde_json::json!({"holderIdentity": ours, "leaseDurationSeconds": 30}))
                .contains("spec.renewTime and spec.acquireTime are missing")
        );
        assert!(
            problem(serde_json::json!({"holderIdentity": ours, "leaseDurationSeconds": 30, "renewTime": "yesterday"}))
                .contains("does not read as a Lease")
        );
        assert!(
            problem(serde_json::json!({"leaseTransitions": -1}))
                .contains("spec.leaseTransitions is -1")
        );
        let error: Error = LeaseError::Invalid {
            object: "runbook/runbook-r".into(),
            problem: "x".into(),
        }
        .into();
        assert_eq!(error.exit(), Exit::InvalidInput);
        assert!(error.to_string().contains("Lease runbook/runbook-r: x"));
    }

    #[test]
    fn a_released_lease_has_no_holder_and_a_held_one_names_it() {
        let released = reading(
            "runbook/runbook-r",
            lease(serde_json::json!({"leaseDurationSeconds": 30, "leaseTransitions": 2})),
        )
        .unwrap();
        assert!(released.holder.is_none());
        let held = reading(
            "runbook/runbook-r",
            lease(serde_json::json!({
                "holderIdentity": "alice@laptop pid=42 id=0badcafe",
                "leaseDurationSeconds": 30,
                "acquireTime": "2026-12-03T13:00:00.000000Z",
                "renewTime": "2026-12-03T14:00:00.000000Z",
            })),
        )
        .unwrap()
        .holder
        .unwrap();
        assert_eq!(held.identity.user, "alice");
        assert_eq!(held.expires().to_string(), "2026-12-03T14:00:30Z");
        assert_eq!(
            held.to_string(),
            "alice@laptop (pid 42) since 2026-12-03T13:00:00Z, last renewed 2026-12-03T14:00:00Z"
        );
    }
}
