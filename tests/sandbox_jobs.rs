//! Jobs in the sandbox: its Job controller makes the pods, and its kubelet runs each pod's
//! command as a local process in `DIR/pods/NAMESPACE/POD/`. Driven through the real
//! kubectl (`create -f`, `wait --for=condition=...`, `logs`, `delete`) and through runbook's own
//! client. The commands write to a scratch directory of the test, which they see as is
//! (the sandbox does not remap paths).
//!
//! Waits are for states (a condition, a file, a process gone); the limits only guard
//! against a hang.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Sandbox, is_alive, pid_in};
use runbook::kube::{Cluster, find_kind};

/// An Indexed Job whose pods run `script` with `sh -c`.
fn indexed_job(
    name: &str,
    completions: u32,
    parallelism: u32,
    backoff: u32,
    script: &str,
) -> String {
    let script = serde_json::to_string(script).expect("a JSON string");
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
  completionMode: Indexed
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: busybox:1.36
        command: [sh, -c]
        args: [{script}]
        env: [{{name: OUT, value: placeholder}}]
"
    )
}

/// Creates the objects of `yaml` with `kubectl create -f`.
fn create(sandbox: &Sandbox, scratch: &Path, yaml: &str) {
    let file = scratch.join("job.yaml");
    std::fs::write(&file, yaml).expect("write the manifest");
    sandbox.kubectl(&["create", "-f", file.to_str().expect("a UTF-8 path")]);
}

/// Waits until `done` holds; fails the test if that takes absurdly long.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    common::wait_until(what, Duration::from_secs(60), done);
}

fn sandbox_dir(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox
        .kubeconfig()
        .parent()
        .expect("the kubeconfig is in the sandbox's directory")
        .to_path_buf()
}

async fn job_pods(cluster: &Cluster, job: &str) -> Vec<serde_json::Value> {
    cluster
        .list(
            find_kind("Pod").expect("pods"),
            Some("default"),
            Some(&format!("batch.kubernetes.io/job-name={job}")),
            None,
        )
        .await
        .expect("list the job's pods")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_runs_each_index_as_a_local_process() {
    let sandbox = Sandbox::start("");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = scratch.path().display().to_string();
    // Each index says who it is, and how many pods ran at its start.
    let script = format!(
        "touch {out}/running.$HOSTNAME; ls {out} | grep -c '^running' >> {out}/concurrency; \
         echo \"$JOB_COMPLETION_INDEX $HOSTNAME $OUT\" > {out}/index-$JOB_COMPLETION_INDEX; \
         echo said $JOB_COMPLETION_INDEX; sleep 0.5; rm {out}/running.$HOSTNAME"
    );
    create(
        &sandbox,
        scratch.path(),
        &indexed_job("copy", 3, 2, 6, &script).replace("placeholder", "literal"),
    );
    sandbox.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/copy",
        "--timeout=60s",
    ]);
    for index in 0..3 {
        let said = std::fs::read_to_string(scratch.path().join(format!("index-{index}")))
            .expect("each index ran");
        assert_eq!(said, format!("{index} copy-{index} literal\n"));
    }
    let most = std::fs::read_to_string(scratch.path().join("concurrency"))
        .expect("the counts")
        .lines()
        .map(|count| count.trim().parse::<u32>().expect("a count"))
        .max();
    assert!(
        most.is_some_and(|most| most <= 2),
        "parallelism 2: {most:?}"
    );

    let job = sandbox.get("job", "copy", None).expect("the job");
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    let table = sandbox.kubectl(&["get", "job", "copy"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    let cluster = sandbox.client().await;
    let pods = job_pods(&cluster, "copy").await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().expect("a name");
        let index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("an index label");
        assert!(name.starts_with(&format!("copy-{index}-")), "{name}");
        assert_eq!(
            pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
            index
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], "copy");
        assert_eq!(pod["status"]["phase"], "Succeeded");
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        let log = sandbox_dir(&sandbox).join(format!("pods/default/{name}/worker.log"));
        assert_eq!(
            std::fs::read_to_string(&log).expect("the container's log"),
            format!("said {index}\n")
        );
        assert_eq!(sandbox.kubectl(&["logs", name]), format!("said {index}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_index_is_retried_until_the_job_fails_at_its_backoff_limit() {
    let sandbox = Sandbox::start("");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = scratch.path().display().to_string();
    let script = format!(
        "echo $HOSTNAME >> {out}/attempts-$JOB_COMPLETION_INDEX; [ $JOB_COMPLETION_INDEX != 1 ] || exit 3"
    );
    create(
        &sandbox,
        scratch.path(),
        &indexed_job("flaky", 2, 2, 2, &script),
    );
    sandbox.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=60s",
    ]);
    let attempts = |index: u32| {
        std::fs::read_to_string(scratch.path().join(format!("attempts-{index}")))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(attempts(0), 1);
    assert_eq!(attempts(1), 3, "two retries, then past backoffLimit 2");
    let job = sandbox.get("job", "flaky", None).expect("the job");
    assert_eq!(job["status"]["failed"], 3);
    assert_eq!(job["status"]["completedIndexes"], "0");
    let failed = job["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|condition| condition["type"] == "Failed")
        .expect("a Failed condition")
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");

    let cluster = sandbox.client().await;
    let failed_pods: Vec<serde_json::Value> = job_pods(&cluster, "flaky")
        .await
        .into_iter()
        .filter(|pod| pod["status"]["phase"] == "Failed")
        .collect();
    assert_eq!(failed_pods.len(), 3);
    for pod in &failed_pods {
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_or_its_job_kills_the_running_processes() {
    let sandbox = Sandbox::start("");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = scratch.path().display().to_string();
    let script = format!("echo $$ >> {out}/pids-$JOB_COMPLETION_INDEX; exec sleep 60");
    create(
        &sandbox,
        scratch.path(),
        &indexed_job("long", 2, 2, 6, &script),
    );
    let pids = |index: u32| -> Vec<i32> {
        std::fs::read_to_string(scratch.path().join(format!("pids-{index}")))
            .unwrap_or_default()
            .lines()
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    };
    wait_until("both indexes run", || {
        !pids(0).is_empty() && !pids(1).is_empty()
    });
    let first = pids(0)[0];
    assert!(is_alive(first));

    // A deleted pod's process is killed, and the Job replaces the pod.
    let cluster = sandbox.client().await;
    let pod_of_zero = job_pods(&cluster, "long")
        .await
        .into_iter()
        .find(|pod| pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0")
        .expect("index 0's pod");
    let name = pod_of_zero["metadata"]["name"].as_str().expect("a name");
    sandbox.kubectl(&["delete", "pod", name, "--wait=false"]);
    wait_until("the deleted pod's process is gone", || !is_alive(first));
    wait_until("index 0 runs again", || pids(0).len() == 2);

    // Deleting the Job (kubectl's background propagation) kills the rest.
    let running = [pids(0)[1], pids(1)[0]];
    assert!(running.iter().all(|pid| is_alive(*pid)));
    sandbox.kubectl(&["delete", "job", "long"]);
    wait_until("the job's processes are gone", || {
        running.iter().all(|pid| !is_alive(*pid))
    });
    let cluster = &cluster;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !job_pods(cluster, "long").await.is_empty() {
        assert!(Instant::now() < deadline, "the job's pods stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Foreground, through runbook's client.
    let script = format!("echo $$ > {out}/fore-$JOB_COMPLETION_INDEX; exec sleep 60");
    create(
        &sandbox,
        scratch.path(),
        &indexed_job("fore", 1, 1, 6, &script),
    );
    let pid_file = scratch.path().join("fore-0");
    wait_until("the foreground job runs", || pid_file.exists());
    wait_until("the pid is written", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.ends_with('\n'))
    });
    let pid = pid_in(&pid_file);
    cluster
        .delete(
            find_kind("Job").expect("jobs"),
            "fore",
            Some("default"),
            Some(kube::api::PropagationPolicy::Foreground),
            false,
        )
        .await
        .expect("delete the job");
    wait_until("the foreground job's process is gone", || !is_alive(pid));
    wait_until("the foreground job is gone", || {
        sandbox.get("job", "fore", None).is_none()
    });
}
