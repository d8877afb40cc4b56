//! `pods/exec` in the sandbox, through the real kubectl and through runbook's own client
//! (`Cluster::exec` over kube-rs): outputs, exit codes, stdin, errors, streaming, detached
//! children and dropped connections. The sandbox runs its exec commands on this host, in
//! `DIR/pods/NAMESPACE/POD/`, which is where the tests look for the files they leave.
//!
//! Waits are for states (a line arrives, a file appears, a process is gone); the limits
//! only guard against a hang.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sandbox, is_alive, pid_in};
use runbook::kube::{Cluster, ExecError, ExecOutput, KubeError, OutputStream};

/// A transfer pod as the NFS playbook creates it (one container, a literal env value), and
/// a pod held Pending by a claim that does not exist.
const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: transfer, namespace: default}
spec:
  containers:
  - name: shell
    image: ubuntu:22.04
    env: [{name: GREETING, value: hello}]
---
apiVersion: v1
kind: Pod
metadata: {name: waiting, namespace: default}
spec:
  containers: [{name: shell, image: ubuntu:22.04}]
  volumes: [{name: home, persistentVolumeClaim: {claimName: missing}}]
"#;

/// How a kubectl command ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the real kubectl against the sandbox, with `stdin` piped in if given.
fn kubectl(sandbox: &Sandbox, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", sandbox.kubeconfig())
        .env("HOME", sandbox_dir(sandbox).join("home"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("kubectl's stdin");
        pipe.write_all(text.as_bytes())
            .expect("write kubectl's stdin");
    }
    let output = child.wait_with_output().expect("wait for kubectl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn sandbox_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox
        .kubeconfig()
        .parent()
        .expect("the kubeconfig is in the sandbox's directory")
        .to_path_buf()
}

/// Where the transfer pod's commands run.
fn transfer_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox_dir(sandbox).join("pods/default/transfer")
}

/// Runs `sh -c SCRIPT` in the transfer pod with runbook's client.
async fn sh_in_transfer(cluster: &Cluster, script: &str) -> ExecOutput {
    cluster
        .exec(None, "transfer", None, &["sh", "-c", script], None)
        .await
        .expect("the command ran")
}

/// Waits until `done` holds; fails the test if that takes absurdly long.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    common::wait_until(what, Duration::from_secs(30), done);
}

#[test]
fn kubectl_exec_gives_the_outputs_and_the_exit_code() {
    let sandbox = Sandbox::start(PODS);
    let run = kubectl(
        &sandbox,
        &[
            "exec",
            "transfer",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "out\n");
    assert!(
        run.stderr.starts_with("err\n")
            && run.stderr.contains("command terminated with exit code 3"),
        "{}",
        run.stderr
    );

    let run = kubectl(
        &sandbox,
        &[
            "exec",
            "transfer",
            "--",
            "sh",
            "-c",
            "pwd; echo $HOSTNAME $GREETING",
        ],
        None,
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let cwd = std::fs::canonicalize(transfer_dir(&sandbox)).expect("the pod's directory");
    assert_eq!(
        run.stdout,
        format!("{}\ntransfer hello\n", cwd.display()),
        "the command runs in the pod's directory with its env"
    );

    let execs = sandbox.requests_of("exec");
    assert_eq!(execs.len(), 2, "{execs:?}");
    assert!(execs.iter().all(|request| request["status"] == 101
        && request["path"] == "/api/v1/namespaces/default/pods/transfer/exec"));
}

#[test]
fn kubectl_exec_pipes_stdin_through() {
    let sandbox = Sandbox::start(PODS);
    let run = kubectl(
        &sandbox,
        &["exec", "-i", "transfer", "--", "tr", "a-z", "A-Z"],
        Some("hello\nworld\n"),
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "HELLO\nWORLD\n");
}

#[test]
fn kubectl_reports_a_missing_pod_or_container_as_the_api_server_does() {
    let sandbox = Sandbox::start(PODS);
    let run = kubectl(&sandbox, &["exec", "nosuch", "--", "true"], None);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim(),
        "Error from server (NotFound): pods \"nosuch\" not found"
    );
    let run = kubectl(
        &sandbox,
        &["exec", "transfer", "-c", "nope", "--", "true"],
        None,
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim(),
        "Error from server (BadRequest): container nope is not valid for pod transfer"
    );
}

#[tokio::test]
async fn the_client_collects_outputs_exit_codes_and_feeds_stdin() {
    let sandbox = Sandbox::start(PODS);
    let cluster = sandbox.client().await;
    let output = sh_in_transfer(&cluster, "echo out; echo err >&2; exit 3").await;
    assert_eq!(
        (
            output.stdout_text().as_str(),
            output.stderr_text().as_str(),
            output.exit_code
        ),
        ("out\n", "err\n", 3)
    );

    let input = "line\n".repeat(20_000);
    let output = cluster
        .exec(
            Some("default"),
            "transfer",
            Some("shell"),
            &["sh", "-c", "wc -l; kill -9 $$"],
            Some(input.into()),
        )
        .await
        .expect("the command ran");
    assert_eq!(output.stdout_text().trim(), "20000");
    assert_eq!(output.exit_code, 137, "a death by SIGKILL is 128 + 9");

    let output = sh_in_transfer(&cluster, "seq 1 1000000; echo done >&2").await;
    let expected: String = (1..=1_000_000).map(|n| format!("{n}\n")).collect();
    assert!(
        output.stdout == expected.as_bytes(),
        "all of a large output, in order"
    );
    assert_eq!(output.stderr_text(), "done\n");
}

#[tokio::test]
async fn the_client_reports_refusals_as_api_errors() {
    let sandbox = Sandbox::start(PODS);
    let cluster = sandbox.client().await;
    let refusal = |error: ExecError| match error {
        ExecError::Request(KubeError::Api {
            code,
            reason,
            message,
            ..
        }) => (code, reason, message),
        other => panic!("not a refusal: {other:?}"),
    };
    let missing = cluster
        .exec(None, "nosuch", None, &["true"], None)
        .await
        .expect_err("no such pod");
    assert_eq!(
        refusal(missing),
        (404, "NotFound".into(), "pods \"nosuch\" not found".into())
    );
    let pending = cluster
        .exec(None, "waiting", None, &["true"], None)
        .await
        .expect_err("a pending pod");
    assert_eq!(
        refusal(pending),
        (
            400,
            "BadRequest".into(),
            "pod waiting does not have a host assigned".into()
        )
    );
    let unknown = cluster
        .exec(None, "transfer", None, &["no-such-program"], None)
        .await
        .expect_err("no such program");
    assert!(
        matches!(&unknown, ExecError::Failed { reason, message, .. } if reason == "InternalError" && message.contains("executable file not found in $PATH")),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn lines_stream_before_the_command_ends() {
    let sandbox = Sandbox::start(PODS);
    let cluster = sandbox.client().await;
    let (lines, mut arriving) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(async move {
        cluster
            .exec_lines(
                None,
                "transfer",
                None,
                &[
                    "sh",
                    "-c",
                    "echo first; echo warning >&2; while [ ! -e release ]; do sleep 0.05; done; printf 'second\\r50%%\\r100%%\\n'",
                ],
                None,
                move |stream, line| {
                    let _ = lines.send((stream, line.to_string()));
                },
            )
            .await
    });
    // stdout and stderr are separate streams: their relative order is not kept.
    let mut early = Vec::new();
    while early.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), arriving.recv())
            .await
            .expect("lines before the command ends")
            .expect("a line");
        early.push(line);
    }
    early.sort_by_key(|(stream, _)| *stream == OutputStream::Stderr);
    assert_eq!(
        early,
        [
            (OutputStream::Stdout, "first".to_string()),
            (OutputStream::Stderr, "warning".to_string())
        ]
    );
    assert!(!running.is_finished(), "the command waits for `release`");
    std::fs::write(transfer_dir(&sandbox).join("release"), "").expect("release the command");
    let code = running
        .await
        .expect("the exec task")
        .expect("the command ran");
    assert_eq!(code, 0);
    let mut rest = Vec::new();
    while let Ok(line) = arriving.try_recv() {
        rest.push(line);
    }
    let stdout: Vec<&str> = rest.iter().map(|(_, line)| line.as_str()).collect();
    assert_eq!(stdout, ["second", "50%", "100%"]);
    assert!(
        rest.iter()
            .all(|(stream, _)| *stream == OutputStream::Stdout)
    );
}

#[tokio::test]
async fn a_detached_child_outlives_its_exec() {
    let sandbox = Sandbox::start(PODS);
    let cluster = sandbox.client().await;
    let pod_dir = transfer_dir(&sandbox);
    // The child keeps the exec's output pipes: the exec ends anyway.
    let output = sh_in_transfer(
        &cluster,
        "setsid sh -c 'sleep 3; touch detached' & echo started",
    )
    .await;
    assert_eq!(
        (output.stdout_text().as_str(), output.exit_code),
        ("started\n", 0)
    );
    assert!(
        !pod_dir.join("detached").exists(),
        "the exec ended before its detached child"
    );
    wait_until("the detached child finishes", || {
        pod_dir.join("detached").exists()
    });
}

#[tokio::test]
async fn deleting_the_pod_stops_what_was_execd_into_it_detached_children_too() {
    let sandbox = Sandbox::start(PODS);
    let cluster = sandbox.client().await;
    let pod_dir = transfer_dir(&sandbox);
    // As runbook starts a copy inside a pod: a child in a session of its own, that no
    // hang-up of the exec reaches and that outlives the exec.
    sh_in_transfer(
        &cluster,
        "setsid sh -c 'echo $$ > detached.pid; exec sleep 600' >/dev/null 2>&1 &",
    )
    .await;
    // `echo > file` makes the file before it writes: wait for the whole pid.
    wait_until("the detached child writes its pid", || {
        std::fs::read_to_string(pod_dir.join("detached.pid"))
            .is_ok_and(|text| text.ends_with('\n') && text.trim().parse::<i32>().is_ok())
    });
    let detached = pid_in(&pod_dir.join("detached.pid"));
    assert!(is_alive(detached), "the detached child runs");
    let deleted = kubectl(&sandbox, &["delete", "pod", "transfer"], None);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    // A kubelet stops every process of a deleted pod's containers, whatever session
    // they are in.
    wait_until("the deleted pod's detached child is stopped", || {
        !is_alive(detached)
    });
}

#[tokio::test]
async fn a_dropped_connection_is_reported_and_hangs_up_only_the_attached_command() {
    let sandbox = Sandbox::start_with(PODS, &["--exec-drop-after", "1s"]);
    let cluster = sandbox.client().await;
    let pod_dir = transfer_dir(&sandbox);
    let mut lines = Vec::new();
    let error = cluster
        .exec_lines(
            None,
            "transfer",
            None,
            &[
                "sh",
                "-c",
                "setsid sh -c 'sleep 2; touch detached' > /dev/null 2>&1 & \
                 nohup sh -c 'sleep 2; echo still here; touch ignored-hangup' & \
                 echo $$ > attached.pid; echo started; exec sleep 60",
            ],
            None,
            |_, line| lines.push(line.to_string()),
        )
        .await
        .expect_err("the connection is cut after 1s");
    assert!(
        error.is_connection_lost() && error.is_transient(),
        "{error:?}"
    );
    assert!(lines.contains(&"started".to_string()), "{lines:?}");
    let attached = pid_in(&pod_dir.join("attached.pid"));
    wait_until("the attached command is hung up", || !is_alive(attached));
    wait_until("the setsid child finishes", || {
        pod_dir.join("detached").exists()
    });
    wait_until(
        "the nohup child finishes, writing to its old stdout",
        || pod_dir.join("ignored-hangup").exists(),
    );
}

#[tokio::test]
async fn the_drop_rate_cuts_exec_streams_mid_way() {
    let sandbox = Sandbox::start_with(PODS, &["--drop-rate", "1", "--seed", "5"]);
    let cluster = sandbox.client().await;
    let error = cluster
        .exec(None, "transfer", None, &["sleep", "30"], None)
        .await
        .expect_err("the stream is cut");
    assert!(error.is_connection_lost(), "{error:?}");
    let execs = sandbox.requests_of("exec");
    assert!(
        !execs.is_empty()
            && execs
                .iter()
                .all(|request| request["status"] == 101 && request["fault"] == "drop"),
        "{execs:?}"
    );
}

#[test]
fn kubectl_sees_a_cut_stream_as_a_failure() {
    let sandbox = Sandbox::start_with(PODS, &["--exec-drop-after", "1s"]);
    let run = kubectl(
        &sandbox,
        &[
            "exec",
            "transfer",
            "--",
            "sh",
            "-c",
            "echo started; sleep 30",
        ],
        None,
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "started\n");
}
