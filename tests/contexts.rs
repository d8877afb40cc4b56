//! End-to-end tests of steps that name a kubeconfig context (`context:`): one playbook
//! talking to two clusters (two sandboxes, one kubeconfig with a context for each).

use crate::common;

use common::{Sandbox, Test};

const HUB: &str = include_str!("data/scenarios/hub.yaml");

/// A kubeconfig whose context `east` is the sandbox `east` (its current context) and `west`
/// the sandbox `west`.
fn east_and_west(east: &Sandbox, west: &Sandbox) -> String {
    let entries = |name: &str, sandbox: &Sandbox| {
        let (server, ca, token) = sandbox.credentials();
        (
            format!(
                "- {{name: {name}, cluster: {{server: \"{server}\", certificate-authority-data: \"{ca}\"}}}}\n"
            ),
            format!(
                "- {{name: {name}, context: {{cluster: {name}, user: {name}, namespace: default}}}}\n"
            ),
            format!("- {{name: {name}, user: {{token: {token}}}}}\n"),
        )
    };
    let (east_cluster, east_context, east_user) = entries("east", east);
    let (west_cluster, west_context, west_user) = entries("west", west);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{east_cluster}{west_cluster}contexts:\n{east_context}{west_context}current-context: east\nusers:\n{east_user}{west_user}"
    )
}

/// Two clusters and a test whose kubeconfig (`clusters.yaml`) has a context for each.
fn two_clusters(playbook: &str) -> (Sandbox, Sandbox, Test) {
    let east = Sandbox::start(HUB);
    let west = Sandbox::start(HUB);
    let test = Test::new()
        .playbook(playbook)
        .file("clusters.yaml", &east_and_west(&east, &west))
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    (east, west, test)
}

/// The `cluster` entry of the ConfigMap `settings` in `staging`, read with kubectl.
fn settings_in(sandbox: &Sandbox) -> Option<String> {
    sandbox
        .get("configmap", "settings", Some("staging"))
        .map(|object| {
            object["data"]["cluster"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
}

const MOVE: &str = r#"
runbook: 1
name: move
params:
  to: {default: west}
steps:
  - id: settings-east
    kube.apply:
      namespace: staging
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {cluster: east}}
  - id: moved
    context: "{{ to }}"
    block:
      - id: settings-west
        kube.apply:
          namespace: staging
          manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {cluster: west}}
      - id: read-west
        kube.get: {kind: ConfigMap, name: settings, namespace: staging}
        register: west
  - id: read-east
    context: east
    kube.get: {kind: ConfigMap, name: settings, namespace: staging}
    register: east
  - id: check
    assert:
      - "east.data.cluster == 'east' and west.data.cluster == 'west'"
      - "kube_get('ConfigMap', 'settings', namespace='staging').data.cluster == 'east'"
  - id: lookup-west
    context: west
    assert:
      - "kube_get('ConfigMap', 'settings', namespace='staging').data.cluster == 'west'"
"#;

#[test]
fn each_step_talks_to_the_cluster_of_its_context() {
    let (east, west, test) = two_clusters(MOVE);
    test.run_args(&["run", "playbook.yaml", "--kubeconfig", "clusters.yaml"])
        .status(0);
    assert_eq!(settings_in(&east).as_deref(), Some("east"));
    assert_eq!(settings_in(&west).as_deref(), Some("west"));
}

#[test]
fn plan_shows_each_step_s_context() {
    let (east, west, test) = two_clusters(MOVE);
    let text = test
        .run_args(&["plan", "playbook.yaml", "--kubeconfig", "clusters.yaml"])
        .status(0);
    insta::assert_snapshot!("plan_text", text.stdout);
    let markdown = test
        .run_args(&[
            "plan",
            "playbook.yaml",
            "--kubeconfig",
            "clusters.yaml",
            "--format",
            "markdown",
        ])
        .status(0);
    insta::assert_snapshot!("plan_markdown", markdown.stdout);
    let json = test
        .run_args(&[
            "plan",
            "playbook.yaml",
            "--kubeconfig",
            "clusters.yaml",
            "--format",
            "json",
        ])
        .status(0);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    let contexts: Vec<&serde_json::Value> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| &step["context"])
        .collect();
    assert_eq!(
        contexts,
        [
            &serde_json::Value::Null,
            &serde_json::json!("west"),
            &serde_json::json!("west"),
            &serde_json::json!("east"),
            &serde_json::Value::Null,
            &serde_json::json!("west"),
        ]
    );
    // A plan changes nothing in either cluster.
    assert_eq!(settings_in(&east), None);
    assert_eq!(settings_in(&west), None);
}

#[test]
fn a_context_the_kubeconfig_lacks_is_invalid_input_before_anything_runs() {
    let (east, west, test) = two_clusters(
        r#"
runbook: 1
name: typo
params:
  to: {default: west}
steps:
  - id: first
    run: {shell: true, command: "touch ran"}
  - id: settings
    context: wset
    kube.apply:
      namespace: staging
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}
  - id: later
    context: "{{ to }}"
    kube.get: {kind: ConfigMap, name: settings, namespace: staging}
"#,
    );
    for command in ["run", "plan"] {
        let output = test
            .run_args(&[command, "playbook.yaml", "--kubeconfig", "clusters.yaml"])
            .status(2);
        insta::assert_snapshot!(format!("missing_literal_{command}"), output.stderr);
    }
    assert!(!test.path("ran").exists());
    assert!(!test.path(".runbook/runs").exists() || test.journal().is_empty());

    // A templated context is checked once the params are bound, still before any step.
    let fixed = std::fs::read_to_string(test.path("playbook.yaml"))
        .unwrap()
        .replace("context: wset", "context: west");
    std::fs::write(test.path("playbook.yaml"), fixed).unwrap();
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        "clusters.yaml",
        "--var",
        "to=nowhere",
    ])
    .status(2)
    .stderr_has("playbook.yaml:15:14")
    .stderr_has("step `later`: context `nowhere`: no such context in clusters.yaml");
    assert!(!test.path("ran").exists());
    assert_eq!(settings_in(&east), None);
    assert_eq!(settings_in(&west), None);
}

#[test]
fn a_run_killed_between_its_clusters_resumes_in_the_second() {
    let (east, west, test) = two_clusters(
        r#"
runbook: 1
name: resume
steps:
  - id: settings-east
    kube.apply:
      namespace: staging
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {cluster: east}}
  - id: between
    run: {shell: true, command: "touch between; while [ ! -e go ]; do sleep 0.1; done"}
  - id: settings-west
    context: west
    kube.apply:
      namespace: staging
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {cluster: west}}
"#,
    );
    let test = test.args(["run", "playbook.yaml", "--kubeconfig", "clusters.yaml"]);
    let mut child = test.spawn();
    test.wait_for_event(|event| event["event"] == "step_started" && event["step"] == "between");
    common::wait_until(
        "the step between the clusters starts",
        std::time::Duration::from_secs(30),
        || test.path("between").exists(),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(settings_in(&east).as_deref(), Some("east"));
    assert_eq!(settings_in(&west), None);

    std::fs::write(test.path("go"), "").unwrap();
    test.run().status(0).stderr_has("done in an earlier run");
    assert_eq!(settings_in(&east).as_deref(), Some("east"));
    assert_eq!(settings_in(&west).as_deref(), Some("west"));
}

#[test]
fn run_with_a_saved_plan_refuses_step_contexts() {
    let (_east, _west, test) = two_clusters(MOVE);
    test.run_args(&[
        "plan",
        "playbook.yaml",
        "--kubeconfig",
        "clusters.yaml",
        "--out",
        "move.plan",
    ])
    .status(0);
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        "clusters.yaml",
        "--plan",
        "move.plan",
    ])
    .status(2)
    .stderr_has("--plan: step `settings-west` names a `context:`")
    .stderr_has("playbook.yaml:12:14");
}

/// With `--state cluster` the run's Lease is taken in every context's cluster: a second
/// machine pointed at the other cluster sees the run locked, and both are released at the
/// end.
#[test]
fn with_state_in_the_cluster_the_run_is_locked_in_every_context_s_cluster() {
    const PLAYBOOK: &str = r#"
runbook: 1
name: locked
steps:
  - id: between
    run: {shell: true, command: "touch between; while [ ! -e go ]; do sleep 0.1; done"}
  - id: settings-west
    context: west
    kube.apply:
      namespace: staging
      manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {cluster: west}}
"#;
    let (east, west, first) = two_clusters(PLAYBOOK);
    let kubeconfig = east_and_west(&east, &west);
    let first = first.env("USER", "alice").args([
        "run",
        "playbook.yaml",
        "--kubeconfig",
        "clusters.yaml",
        "--state",
        "cluster",
    ]);
    let mut holder = first.spawn();
    common::wait_until(
        "the first runner holds the run",
        std::time::Duration::from_secs(30),
        || first.path("between").exists(),
    );
    assert!(
        east.lease_holder()
            .is_some_and(|held| held.starts_with("alice@"))
    );
    assert!(
        west.lease_holder()
            .is_some_and(|held| held.starts_with("alice@"))
    );

    // Another machine, whose current context is the other cluster.
    let second = Test::new()
        .playbook(PLAYBOOK)
        .file("clusters.yaml", &kubeconfig)
        .env("USER", "bob")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    second
        .run_args(&[
            "run",
            "playbook.yaml",
            "--kubeconfig",
            "clusters.yaml",
            "--context",
            "west",
            "--state",
            "cluster",
        ])
        .status(4)
        .stderr_has("is locked by alice@");
    assert!(!second.path("between").exists());

    std::fs::write(first.path("go"), "").unwrap();
    let status = holder.wait().expect("the first runner ends");
    assert_eq!(status.code(), Some(0));
    assert_eq!(settings_in(&west).as_deref(), Some("west"));
    assert_eq!(east.lease_holder(), None);
    assert_eq!(west.lease_holder(), None);
}
