//! The sandbox's kubelet, for Job pods only: a running pod whose controller is a Job has its
//! first container's `command` + `args` run as a local [`PodProcess`], in
//! `DIR/pods/NAMESPACE/POD/`, with `HOSTNAME` (the pod's `spec.hostname`, else its name),
//! the container's literal `env` values and, in an Indexed Job, `JOB_COMPLETION_INDEX`; its
//! stdout and stderr go to `CONTAINER.log` there, with the time of each line beside it
//! ([`ContainerLog`]). When the command ends, the pod becomes
//! `Succeeded` (exit 0) or `Failed`, every container `terminated` with the command's exit
//! code, and the rest of its process group is killed, as a container's end kills what runs
//! in it. A pod being deleted (or gone) has its command's group sent SIGTERM, then SIGKILL
//! after the sandbox's grace period ([`MAX_GRACE_SECONDS`]); so has every other process
//! started for it, in any pod: exec'd commands and what they detached
//! ([`pod_reaper`]).
//!
//! Deliberate differences from a real cluster: only Job pods run anything (other pods stay
//! `Running` with nothing behind them, and `exec` runs its own processes); only the first
//! container runs, the others end with it; a container without `command` fails its pod at
//! start (there are no images, so no entrypoint to fall back on). Processes are not
//! restarted across a sandbox restart: a Job pod still running in the state file the
//! sandbox resumes from becomes `Failed` (`ContainerStatusUnknown`, as for a container a
//! real kubelet lost), so that its Job replaces it ([`fail_lost_pods`]); a process of a
//! sandbox killed with SIGKILL keeps running unwatched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::cluster::{Cluster, State};
use super::container_log::{ContainerLog, Recording};
use super::controllers::{COMPLETION_INDEX_ENV, completion_index};
use super::delete::MAX_GRACE_SECONDS;
use super::exec::{ExecTarget, container_env};
use super::meta;
use super::pod_process::{PodProcess, exit_code};
use super::pod_reaper;
use super::store::ObjectKey;
use kube_kinds::find_kind;

/// How long a stopped pod's processes have between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(MAX_GRACE_SECONDS.unsigned_abs());
/// The exit code of a container that could not start, as a real runtime reports it.
const START_ERROR_CODE: i32 = 128;
/// The exit code recorded for a container lost across a restart (SIGKILL's).
const LOST_CODE: i32 = 137;

/// A Job pod the kubelet should run: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRun {
    /// The pod's uid: a pod of the same name created later is another pod.
    pub uid: String,
    /// The command's directory and environment.
    pub target: ExecTarget,
    /// `command` + `args`; empty when the container has no command.
    pub argv: Vec<String>,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: a failed container's message is
    /// the end of its log.
    pub message_from_log: bool,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The exit code, 128 + the signal for a command a signal ended.
    pub exit_code: i32,
    /// `Completed`, `Error`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    /// Why, when the sandbox knows better than the exit code.
    pub message: Option<String>,
}

impl Termination {
    fn of_exit(exit_code: i32) -> Self {
        Termination {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
            message: None,
        }
    }
}

/// Whether a pod's controller is a Job.
fn is_job_pod(pod: &Value) -> bool {
    meta::owner_references(pod).iter().any(|owner| {
        owner.get("controller").and_then(Value::as_bool) == Some(true)
            && owner.get("kind").and_then(Value::as_str) == Some("Job")
    })
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        meta::str_at(pod, &["status", "phase"]),
        Some("Succeeded" | "Failed")
    )
}

/// What the kubelet would run for `pod`, if it runs it now: a running, scheduled Job pod
/// that is not being deleted.
pub fn container_run(pod: &Value, dir: &Path) -> Option<ContainerRun> {
    let running = meta::str_at(pod, &["status", "phase"]) == Some("Running")
        && meta::str_at(pod, &["spec", "nodeName"]).is_some_and(|node| !node.is_empty());
    if !is_job_pod(pod) || !running || meta::is_deleting(pod) {
        return None;
    }
    let container = pod.pointer("/spec/containers/0")?;
    let name = meta::name(pod);
    let namespace = meta::namespace(pod);
    let container_name = container.get("name").and_then(Value::as_str)?.to_string();
    let strings = |field: &str| -> Vec<String> {
        container
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let mut argv = strings("command");
    if !argv.is_empty() {
        argv.extend(strings("args"));
    }
    let hostname = meta::str_at(pod, &["spec", "hostname"])
        .filter(|hostname| !hostname.is_empty())
        .unwrap_or(name);
    let mut env = container_env(pod, &container_name, hostname);
    if let Some(index) = completion_index(pod) {
        env.push((COMPLETION_INDEX_ENV.to_string(), index.to_string()));
    }
    let message_from_log = container
        .get("terminationMessagePolicy")
        .and_then(Value::as_str)
        == Some("FallbackToLogsOnError");
    Some(ContainerRun {
        message_from_log,
        uid: meta::uid(pod).to_string(),
        target: ExecTarget {
            namespace: namespace.to_string(),
            pod: name.to_string(),
            container: container_name,
            cwd: dir.join("pods").join(namespace).join(name),
            env,
        },
        argv,
    })
}

/// The pod, ended: its phase from the first container's exit, every container terminated,
/// not ready.
pub fn terminate(pod: &mut Value, ended: &Termination, now: &str) {
    let phase = if ended.exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    meta::set_at(pod, &["status", "phase"], json!(phase));
    if let Some(statuses) = pod
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for (position, status) in statuses.iter_mut().enumerate() {
            let started = status
                .pointer("/state/running/startedAt")
                .cloned()
                .unwrap_or(json!(now));
            let container_id = status.get("containerID").cloned().unwrap_or(json!(""));
            let mut terminated = if position == 0 {
                json!({"exitCode": ended.exit_code, "reason": ended.reason})
            } else {
                json!({"exitCode": 0, "reason": "Completed"})
            };
            if position == 0
                && let Some(message) = &ended.message
            {
                terminated["message"] = json!(message);
            }
            terminated["startedAt"] = started;
            terminated["finishedAt"] = json!(now);
            terminated["containerID"] = container_id;
            status["state"] = json!({"terminated": terminated});
            status["ready"] = json!(false);
            status["started"] = json!(false);
        }
    }
    if let Some(conditions) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for condition in conditions.iter_mut() {
            let kind = condition
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string);
            let kind = kind.as_deref();
            if matches!(
                kind,
                Some("Ready" | "ContainersReady" | "PodReadyToStartContainers")
            ) {
                condition["status"] = json!("False");
                condition["lastTransitionTime"] = json!(now);
                if kind != Some("PodReadyToStartContainers") {
                    condition["reason"] = json!("PodCompleted");
                }
            }
        }
    }
}

/// Records how the container of the pod `uid` ended, if that pod is still there and has not
/// ended yet; returns whether it stored anything.
pub fn record_end(state: &mut State, target: &ExecTarget, uid: &str, ended: &Termination) -> bool {
    let Some(pods) = find_kind("Pod") else {
        return false;
    };
    let key = ObjectKey::new(pods, &target.namespace, &target.pod);
    let Some(mut pod) = state.store.get(&key).cloned() else {
        return false;
    };
    if meta::uid(&pod) != uid || is_terminal(&pod) {
        return false;
    }
    terminate(&mut pod, ended, &meta::now());
    state.store.insert(key, pod);
    true
}

/// After a restart from a state file: the Job pods that were running have no process any
/// more, and become `Failed`, so that their Jobs replace them. Returns how many.
pub fn fail_lost_pods(state: &mut State) -> usize {
    let Some(pods) = find_kind("Pod") else {
        return 0;
    };
    let lost: Vec<(ObjectKey, Value)> = state
        .store
        .list(pods, None)
        .filter(|pod| is_job_pod(pod) && !is_terminal(pod))
        .filter(|pod| meta::str_at(pod, &["status", "phase"]) == Some("Running"))
        .map(|pod| (ObjectKey::of(pods, pod), pod.clone()))
        .collect();
    let ended = Termination {
        exit_code: LOST_CODE,
        reason: "ContainerStatusUnknown".into(),
        message: Some(
            "The container could not be located when the pod was terminated: the sandbox restarted, and it does not restart processes".into(),
        ),
    };
    let now = meta::now();
    for (key, mut pod) in lost.iter().cloned() {
        terminate(&mut pod, &ended, &now);
        state.store.insert(key, pod);
    }
    lost.len()
}

/// A container the kubelet started and has not seen end.
#[derive(Debug)]
struct Running {
    /// Dropping or sending stops the command.
    stop: oneshot::Sender<()>,
}

/// Runs Job pods' commands until `shutdown` turns true; then stops them (SIGTERM, SIGKILL
/// after the grace period) and records their end.
pub async fn run(cluster: Arc<Cluster>, dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let mut changes = cluster.subscribe();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // Every pod started, so that none starts twice (its status may lag behind its end).
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut containers = JoinSet::new();
    // The pods whose processes may run (there, not being deleted). A pod that leaves this set
    // has every process started for it stopped, exec'd and detached ones too, as a kubelet
    // stops a container and all it holds. `None` until the first look, which counts every
    // pod: one found already being deleted (a restarted sandbox) is stopped as well.
    let mut live: Option<BTreeSet<String>> = None;
    loop {
        changes.borrow_and_update();
        let (runs, present) = cluster.read(|state| {
            let Some(pods) = find_kind("Pod") else {
                return (Vec::new(), BTreeMap::new());
            };
            let runs: Vec<ContainerRun> = state
                .store
                .list(pods, None)
                .filter_map(|pod| container_run(pod, &dir))
                .collect();
            // The pods that may go on running: there and not being deleted.
            let present: BTreeMap<String, bool> = state
                .store
                .list(pods, None)
                .map(|pod| (meta::uid(pod).to_string(), !meta::is_deleting(pod)))
                .collect();
            (runs, present)
        });
        let live_now: BTreeSet<String> = present
            .iter()
            .filter(|(_, may_run)| **may_run)
            .map(|(uid, _)| uid.clone())
            .collect();
        let live_before = live.get_or_insert_with(|| present.keys().cloned().collect());
        for uid in live_before.difference(&live_now) {
            tokio::spawn(pod_reaper::stop_processes_of(uid.clone(), GRACE));
        }
        *live_before = live_now;
        running.retain(|uid, container| {
            !container.stop.is_closed() && present.get(uid).copied().unwrap_or(false)
        });
        started.retain(|uid| present.contains_key(uid));
        for run in runs {
            if !started.insert(run.uid.clone()) {
                continue;
            }
            let (stop, stopped) = oneshot::channel();
            running.insert(run.uid.clone(), Running { stop });
            containers.spawn(run_container(cluster.clone(), run, stopped));
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
            Some(_) = containers.join_next() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    // Dropping the senders stops every command; wait for their ends to be recorded.
    running.clear();
    while containers.join_next().await.is_some() {}
}

/// Runs one container's command until it ends or is stopped, then records its end.
async fn run_container(cluster: Arc<Cluster>, run: ContainerRun, stop: oneshot::Receiver<()>) {
    let ended = match start(&run) {
        Ok((mut process, recording)) => {
            let outcome = tokio::select! {
                status = process.wait() => Some(status),
                _ = stop => None,
            };
            let status = match outcome {
                Some(status) => status,
                None => {
                    process.signal_group(libc::SIGTERM);
                    match tokio::time::timeout(GRACE, process.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            process.signal_group(libc::SIGKILL);
                            process.wait().await
                        }
                    }
                }
            };
            // What the command left in its group ends with it, as with a container. At once:
            // the group's id cannot be reused while members are left.
            process.signal_group(libc::SIGKILL);
            // Its last lines are in the log before its end is: a follower of the log stops
            // at the end, and the termination message is read from it.
            recording.drained().await;
            match status {
                Ok(status) => {
                    let mut ended = Termination::of_exit(exit_code(status));
                    if ended.exit_code != 0 && run.message_from_log {
                        ended.message = log_tail(&run);
                    }
                    ended
                }
                Err(error) => Termination {
                    exit_code: START_ERROR_CODE,
                    reason: "Error".into(),
                    message: Some(format!("cannot wait for the command: {error}")),
                },
            }
        }
        Err(message) => Termination {
            exit_code: START_ERROR_CODE,
            reason: "StartError".into(),
            message: Some(message),
        },
    };
    cluster.write(|state| record_end(state, &run.target, &run.uid, &ended));
}

/// The end of a container's log, as Kubernetes' kubelet takes it for
/// `FallbackToLogsOnError`: the last 80 lines, at most 2048 bytes.
fn log_tail(run: &ContainerRun) -> Option<String> {
    let log = ContainerLog::new(&run.target.cwd, &run.target.container);
    let bytes = std::fs::read(log.path()).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let mut start = tail.len().saturating_sub(2048);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    let tail = tail[start..].trim();
    (!tail.is_empty()).then(|| tail.to_string())
}

/// Starts the command, its output recorded in `CONTAINER.log` in the pod's directory.
fn start(run: &ContainerRun) -> Result<(PodProcess, Recording), String> {
    if run.argv.is_empty() {
        return Err(format!(
            "the sandbox runs a container's command, and container {:?} has none (there is no image entrypoint to run)",
            run.target.container
        ));
    }
    std::fs::create_dir_all(&run.target.cwd)
        .map_err(|error| format!("cannot create {}: {error}", run.target.cwd.display()))?;
    let log = ContainerLog::new(&run.target.cwd, &run.target.container);
    let (output, recording) = log
        .record()
        .map_err(|error| format!("cannot open the container's log: {error}"))?;
    let process = PodProcess::spawn_logged(&run.target, &run.argv, output).map_err(|error| {
        format!(
            "failed to start the container's command {:?}: {error}",
            run.argv[0]
        )
    })?;
    Ok((process, recording))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_pod() -> Value {
        json!({
            "metadata": {
                "name": "copy-1-abcde",
                "namespace": "staging",
                "uid": "u1",
                "ownerReferences": [{"kind": "Job", "name": "copy", "uid": "j", "controller": true}],
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
            },
            "spec": {
                "nodeName": "sandbox-node",
                "hostname": "copy-1",
                "containers": [{
                    "name": "worker",
                    "command": ["sh", "-c"],
                    "args": ["echo $JOB_COMPLETION_INDEX"],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
                    ],
                }],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "worker", "containerID": "containerd://1", "ready": true, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}],
            },
        })
    }

    #[test]
    fn a_running_job_pod_runs_its_first_containers_command() {
        let run = container_run(&job_pod(), Path::new("/sandbox")).unwrap();
        assert_eq!(run.argv, ["sh", "-c", "echo $JOB_COMPLETION_INDEX"]);
        assert_eq!(
            run.target.cwd,
            Path::new("/sandbox/pods/staging/copy-1-abcde")
        );
        assert_eq!(
            run.target.env,
            [
                ("HOSTNAME", "copy-1"),
                (pod_reaper::POD_UID_ENV, "u1"),
                ("A", "1"),
                ("JOB_COMPLETION_INDEX", "1")
            ]
            .map(|(name, value)| (name.to_string(), value.to_string()))
        );
        let mut plain = job_pod();
        plain["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(container_run(&plain, Path::new("/sandbox")), None);
        let mut deleting = job_pod();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert_eq!(container_run(&deleting, Path::new("/sandbox")), None);
    }

    #[test]
    fn an_ended_container_ends_its_pod() {
        let mut pod = job_pod();
        terminate(&mut pod, &Termination::of_exit(3), "2025-01-01T00:01:00Z");
        assert_eq!(pod["status"]["phase"], "Failed");
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 3);
        assert_eq!(terminated["reason"], "Error");
        assert_eq!(terminated["startedAt"], "2025-01-01T00:00:00Z");
        assert_eq!(pod["status"]["conditions"][0]["status"], "False");
        let mut pod = job_pod();
        terminate(&mut pod, &Termination::of_exit(0), "2025-01-01T00:01:00Z");
        assert_eq!(pod["status"]["phase"], "Succeeded");
    }

    #[test]
    fn job_pods_running_at_a_restart_are_lost() {
        let cluster = Cluster::new(1);
        let pods = find_kind("Pod").unwrap();
        let mut other = job_pod();
        other["metadata"]["name"] = json!("web");
        other["metadata"]["ownerReferences"] = json!([]);
        cluster.write(|state| {
            for pod in [job_pod(), other] {
                state.store.insert(ObjectKey::of(pods, &pod), pod);
            }
        });
        assert_eq!(cluster.write(fail_lost_pods), 1);
        let lost = cluster.get(pods, "staging", "copy-1-abcde").unwrap();
        assert_eq!(lost["status"]["phase"], "Failed");
        let terminated = &lost["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["reason"], "ContainerStatusUnknown");
        assert_eq!(terminated["exitCode"], 137);
        let web = cluster.get(pods, "staging", "web").unwrap();
        assert_eq!(
            web["status"]["phase"], "Running",
            "only Job pods run processes"
        );
    }
}
