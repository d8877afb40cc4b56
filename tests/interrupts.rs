//! End-to-end tests of Ctrl-C and SIGTERM while a step is blocked in a system call that
//! does not return by itself: the run still stops with 130, its journal consistent.

use crate::common;

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Sandbox, Test};

const HUB: &str = include_str!("data/scenarios/hub.yaml");

/// Sends `signal` and waits for the exit code; fails the test (killing the process) when
/// the run ignores the signal: before the fix it stayed blocked for minutes.
fn stop_with(child: &mut Child, signal: i32) -> i32 {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait for runbook") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runbook did not exit within 30 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_event(test: &Test) -> serde_json::Value {
    test.journal().last().cloned().expect("a journal event")
}

#[test]
fn ctrl_c_stops_a_step_blocked_reading_a_fifo_and_a_rerun_resumes() {
    let sandbox = Sandbox::start(HUB);
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: blocked-read
steps:
  - id: first
    run: {shell: true, command: "echo first >> ran.log"}
  - id: apply
    kube.apply: {template: settings.yaml, namespace: staging}
  - id: last
    run: {shell: true, command: "echo last >> ran.log"}
"#,
        )
        .env(
            "KUBECONFIG",
            sandbox.kubeconfig().to_str().expect("UTF-8 path"),
        )
        .args(["run", "playbook.yaml"]);
    std::fs::create_dir(test.path("templates")).unwrap();
    let fifo = test.path("templates/settings.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());

    let mut child = test.spawn();
    // A writer that opens the FIFO once runbook has it open for reading (a non-blocking
    // open for writing fails until then) and never writes: runbook's read then blocks.
    let mut writer = None;
    common::wait_until("runbook opens the FIFO", Duration::from_secs(30), || {
        writer = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ok();
        writer.is_some()
    });
    assert_eq!(stop_with(&mut child, libc::SIGINT), 130);
    drop(writer);

    let last = last_event(&test);
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["status"], "interrupted");
    assert_eq!(last["exit_code"], 130);
    let journal = test.journal();
    assert!(
        !journal.iter().any(|event| event["step"] == "apply"
            && event["event"] == "step_finished"
            && event["status"] != "interrupted"),
        "the blocked step was recorded as finished: {journal:?}"
    );
    assert!(
        sandbox
            .get("configmap", "settings", Some("staging"))
            .is_none()
    );
    assert_eq!(test.lines_of("ran.log"), ["first"]);

    // With a readable template the run goes on from the interrupted step.
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(
        &fifo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
    )
    .unwrap();
    test.run().status(0);
    assert_eq!(test.lines_of("ran.log"), ["first", "last"]);
    assert!(
        sandbox
            .get("configmap", "settings", Some("staging"))
            .is_some()
    );
}

#[test]
fn sigterm_stops_a_step_waiting_on_a_server_that_never_answers() {
    // Connections are accepted (by the kernel, then here) and never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let test = Test::new()
        .playbook(
            r#"
runbook: 1
name: silent-server
steps:
  - id: look
    assert: "kube_get('ConfigMap', 'settings', namespace='default') is none"
"#,
        )
        .file(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: silent\n\
                 clusters: [{{name: silent, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
                 users: [{{name: nobody, user: {{}}}}]\n\
                 contexts: [{{name: silent, context: {{cluster: silent, user: nobody}}}}]\n"
            ),
        )
        .args(["run", "playbook.yaml", "--kubeconfig", "kubeconfig"]);
    let mut child = test.spawn();
    listener.set_nonblocking(true).unwrap();
    let mut connection = None;
    common::wait_until(
        "runbook connects to the API server",
        Duration::from_secs(30),
        || {
            connection = listener.accept().ok();
            connection.is_some()
        },
    );
    test.wait_for_event(|event| event["event"] == "step_started" && event["step"] == "look");
    assert_eq!(stop_with(&mut child, libc::SIGTERM), 130);

    let journal = test.journal();
    assert!(
        journal.iter().any(|event| event["step"] == "look"
            && event["event"] == "step_finished"
            && event["status"] == "interrupted"),
        "{journal:?}"
    );
    let last = last_event(&test);
    assert_eq!(last["status"], "interrupted");
    drop(connection);
}
