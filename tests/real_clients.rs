//! The sandbox as clients other than kubectl see it: helm (install, upgrade, rollback and
//! uninstall of the chart in `tests/data/real_clients/chart`) and the official Python client
//! (`tests/data/real_clients/python_client.py`: exec with stdin, a watch, a 404). Both talk to
//! the sandbox only through its kubeconfig file, as a user would.
//!
//! `scripts/install-deps` installs both under `.clients/` (or point `RUNBOOK_TEST_HELM` and
//! `RUNBOOK_TEST_PYTHON` at others). A missing client fails the test, and says how to get it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Sandbox;
use serde_json::Value;

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: staging}
---
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: staging}
spec:
  containers: [{name: shell, image: ubuntu:24.04}]
"#;

/// A client installed by `scripts/install-deps`, or named by `variable`.
fn client(variable: &str, installed: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(installed),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps (or set {variable})",
        path.display()
    );
    path
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/real_clients")
        .join(name)
}

/// helm with its caches and configuration in `home`, talking to the sandbox.
struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn new(sandbox: &Sandbox) -> Self {
        Helm {
            binary: client("RUNBOOK_TEST_HELM", ".clients/bin/helm"),
            kubeconfig: sandbox.kubeconfig(),
            home: tempfile::tempdir().expect("helm home"),
        }
    }

    /// Runs helm in namespace `staging`, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let home = self.home.path();
        let output = Command::new(&self.binary)
            .args(args)
            .args(["--namespace", "staging", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("helm printed JSON")
    }
}

fn message(sandbox: &Sandbox) -> Option<String> {
    sandbox
        .get("configmap", "greeter-settings", Some("staging"))
        .map(|config_map| {
            config_map["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
}

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls_a_chart() {
    let sandbox = Sandbox::start(NAMESPACE);
    let helm = Helm::new(&sandbox);
    let chart = data("chart");
    let chart = chart.to_str().expect("a UTF-8 path");

    helm.ok(&["install", "greeter", chart]);
    assert_eq!(message(&sandbox).as_deref(), Some("hello"));
    let service = sandbox
        .get("service", "greeter", Some("staging"))
        .expect("the chart's service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);

    helm.ok(&["upgrade", "greeter", chart, "--set", "message=bye"]);
    assert_eq!(message(&sandbox).as_deref(), Some("bye"));

    helm.ok(&["rollback", "greeter", "1"]);
    assert_eq!(message(&sandbox).as_deref(), Some("hello"));
    let history = helm.json(&["history", "greeter"]);
    let revisions: Vec<(i64, &str)> = history
        .as_array()
        .expect("a list of revisions")
        .iter()
        .map(|revision| {
            (
                revision["revision"].as_i64().unwrap_or_default(),
                revision["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    );

    // helm deletes its release Secrets with a protobuf DeleteOptions body.
    helm.ok(&["uninstall", "greeter"]);
    assert_eq!(message(&sandbox), None);
    assert!(sandbox.get("service", "greeter", Some("staging")).is_none());
    assert_eq!(helm.json(&["list"]), serde_json::json!([]));
    let secrets = sandbox.kubectl(&["get", "secrets", "-n", "staging", "-o", "name"]);
    assert!(!secrets.contains("sh.helm.release"), "{secrets}");
}

#[test]
fn the_python_client_execs_with_stdin_and_watches() {
    let sandbox = Sandbox::start(NAMESPACE);
    let python = client("RUNBOOK_TEST_PYTHON", ".clients/python/bin/python");
    let output = Command::new(python)
        .arg(data("python_client.py"))
        .arg(sandbox.kubeconfig())
        .args(["staging", "shell"])
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python scenario failed: {stderr}"
    );
    let reports: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let report = |scenario: &str| {
        reports
            .iter()
            .find(|report| report["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} report: {reports:?} {stderr}"))
            .clone()
    };
    // Before text frames were read, the command never got its line and printed `got:`.
    assert_eq!(report("exec")["stdout"], "got:hello from python\n");
    assert_eq!(
        report("watch")["event"],
        serde_json::json!({"type": "ADDED", "data": {"a": "1"}})
    );
    assert_eq!(
        report("missing"),
        serde_json::json!({"scenario": "missing", "status": 404, "reason": "NotFound"})
    );
}
