//! End-to-end tests of the `kube.*` actions and lookups, through the binary, against the
//! sandbox cluster (`runbook sandbox up`), checked with the real kubectl.

use crate::common;

use common::{Sandbox, Test};

const HUB: &str = include_str!("data/scenarios/hub.yaml");

fn test_with(sandbox: &Sandbox, playbook: &str) -> Test {
    Test::new().playbook(playbook).env(
        "KUBECONFIG",
        sandbox.kubeconfig().to_str().expect("UTF-8 path"),
    )
}

#[test]
fn get_count_and_lookups_read_the_cluster() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: read
params:
  hub: {default: staging}
steps:
  - id: read-pv
    kube.get: {kind: PersistentVolume, name: "{{ hub }}-home-nfs"}
    register: pv
  - id: users
    kube.count: {kind: Pod, namespace: "{{ hub }}", selector: component=singleuser-server}
    register: users
  - id: check
    assert:
      - "pv.spec.nfs.server == '10.0.0.7'"
      - "users.count == 1 and users.names == ['jupyter-alice']"
      - "kube_get('pvc', 'home-nfs', namespace=hub).spec.volumeName == hub ~ '-home-nfs'"
      - "kube_get('Service', 'nothing-here', namespace=hub) is none"
      - "kube_count('Pod', namespace=hub, selector='component=singleuser-server') == 1"
"#,
    )
    .args(["run", "playbook.yaml"]);
    test.run().status(0);
}

#[test]
fn patch_changes_once_then_skips_and_plans_a_diff() {
    let sandbox = Sandbox::start(HUB);
    let playbook = r#"
runbook: 1
name: retain
steps:
  - id: retain-pv
    kube.patch:
      kind: PersistentVolume
      name: staging-home-nfs
      merge: {spec: {persistentVolumeReclaimPolicy: Retain}}
"#;
    let test = test_with(&sandbox, playbook);
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    assert!(
        plan.stdout
            .contains("-  persistentVolumeReclaimPolicy: Delete"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("+  persistentVolumeReclaimPolicy: Retain"),
        "{}",
        plan.stdout
    );
    let writes_before_run: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|request| request["method"] != "GET" && request["dry_run"] != true)
        .collect();
    assert!(
        writes_before_run.is_empty(),
        "plan wrote to the cluster: {writes_before_run:?}"
    );
    test.run_args(&["run", "playbook.yaml"]).status(0);
    let pv = sandbox.get("pv", "staging-home-nfs", None).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    test.run_args(&["run", "playbook.yaml", "--restart"])
        .status(0)
        .stderr_has("retain-pv skipped: the patch would change nothing");
}

#[test]
fn delete_by_selector_refuses_when_more_match_than_max() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: too-many
steps:
  - id: delete-pods
    kube.delete: {kind: Pod, namespace: staging, selector: "component in (singleuser-server, shared-volume-metrics)", max: 1}
"#,
    );
    test.run_args(&["run", "playbook.yaml"])
        .status(3)
        .stderr_has("delete-pods refused: 2 Pods matching");
    assert!(
        sandbox
            .get("pod", "jupyter-alice", Some("staging"))
            .is_some(),
        "a refused delete deleted"
    );
}

#[test]
fn deleting_a_pvc_in_use_waits_for_its_pods_then_the_pv_goes() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: order
steps:
  - id: retain
    kube.patch: {kind: pv, name: staging-home-nfs, merge: {spec: {persistentVolumeReclaimPolicy: Retain}}}
  - id: delete-pv
    kube.delete: {kind: PersistentVolume, name: staging-home-nfs}
  - id: delete-pvc
    kube.delete: {kind: PersistentVolumeClaim, namespace: staging, name: home-nfs}
  - id: still-there
    assert: "kube_get('pvc', 'home-nfs', namespace='staging').metadata.deletionTimestamp is defined"
  - id: delete-users
    kube.delete: {kind: Pod, namespace: staging, selector: component=singleuser-server, max: 5, wait: true, timeout: 30s}
  - id: scale-down-metrics
    kube.patch: {kind: Deployment, namespace: staging, name: shared-volume-metrics, merge: {spec: {replicas: 0}}}
  - id: pvc-gone
    kube.wait: {kind: pvc, namespace: staging, name: home-nfs, for: gone, timeout: 30s}
  - id: pv-gone
    kube.wait: {kind: pv, name: staging-home-nfs, for: gone, timeout: 30s}
"#,
    );
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert!(sandbox.get("pv", "staging-home-nfs", None).is_none());
}

#[test]
fn apply_creates_then_matches_then_updates() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: apply
params:
  port: {type: int}
steps:
  - id: service
    kube.apply:
      namespace: staging
      manifest:
        apiVersion: v1
        kind: Service
        metadata: {name: transfer, labels: {app: transfer}}
        spec:
          ports: [{port: "{{ port }}"}]
          selector: {app: transfer}
"#,
    );
    test.run_args(&["run", "playbook.yaml", "--var", "port=80"])
        .status(0);
    let service = sandbox.get("svc", "transfer", Some("staging")).unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    test.run_args(&["run", "playbook.yaml", "--var", "port=80", "--restart"])
        .status(0)
        .stderr_has("service skipped: the live objects already match");
    // Another port is another run; its plan shows the update against the live object.
    let plan = test
        .run_args(&["plan", "playbook.yaml", "--var", "port=8080"])
        .status(0);
    assert!(
        plan.stdout.contains("update Service transfer"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("-  - port: 80") && plan.stdout.contains("+  - port: 8080"),
        "{}",
        plan.stdout
    );
    test.run_args(&["run", "playbook.yaml", "--var", "port=8080"])
        .status(0);
    let service = sandbox.get("svc", "transfer", Some("staging")).unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert!(
        service["spec"]["clusterIP"].is_string(),
        "apply dropped a field it does not manage"
    );
}

#[test]
fn apply_renders_a_template_from_the_playbook_directory() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: template
params:
  hub: {default: staging}
steps:
  - id: config
    kube.apply: {template: settings.yaml}
"#,
    )
    .file(
        "templates/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {{ hub }}\ndata:\n  hub: {{ hub }}\n",
    );
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert_eq!(
        sandbox.get("cm", "settings", Some("staging")).unwrap()["data"]["hub"],
        "staging"
    );
}

#[test]
fn a_missing_namespace_is_named() {
    let sandbox = Sandbox::start(HUB);
    test_with(
        &sandbox,
        "runbook: 1\nname: ns\nsteps:\n  - id: count\n    kube.count: {kind: Pod, namespace: nowhere}\n  - id: get\n    kube.apply: {namespace: nowhere, manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}}\n",
    )
    .args(["run", "playbook.yaml"])
    .run()
    .status(1)
    .stderr_has("nowhere");
}

#[test]
fn a_bad_kubeconfig_or_context_is_invalid_input_and_sends_nothing() {
    let playbook = "runbook: 1\nname: k\nsteps:\n  - id: get\n    kube.get: {kind: pv, name: x}\n";
    let test = Test::new()
        .playbook(playbook)
        .file("kubeconfig", "apiVersion: v1\nclusters: [\n");
    test.run_args(&["run", "playbook.yaml", "--kubeconfig", "kubeconfig"])
        .status(2)
        .stderr_has("kubeconfig");
    let sandbox = Sandbox::start(HUB);
    let kubeconfig = sandbox.kubeconfig();
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--context",
        "sandbx",
    ])
    .status(2)
    .stderr_has("--context sandbx: no such context")
    .stderr_has("did you mean `sandbox`?");
    assert!(
        sandbox.requests().is_empty(),
        "requests were sent: {:?}",
        sandbox.requests()
    );
}

#[test]
fn a_typo_of_a_known_kind_is_rejected_when_loading() {
    Test::new()
        .playbook(
            "runbook: 1\nname: k\nsteps:\n  - id: get\n    kube.get: {kind: Secrte, name: x}\n",
        )
        .args(["validate", "playbook.yaml"])
        .run()
        .status(2)
        .stderr_has("unknown kind `Secrte`")
        .stderr_has("did you mean `Secret`?")
        .stderr_has("playbook.yaml:5:");
}

#[test]
fn forbidden_names_the_verb_the_kind_and_the_namespace() {
    // The sandbox answers 403 to new objects in a namespace that is being deleted, as a real
    // server does (a finalizer keeps this one Terminating).
    let sandbox = Sandbox::start(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: closing, finalizers: [example.com/hold]}\n",
    );
    test_with(
        &sandbox,
        r#"
runbook: 1
name: forbidden
steps:
  - id: close
    kube.delete: {kind: Namespace, name: closing}
  - id: add
    kube.apply: {namespace: closing, manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}}
"#,
    )
    .args(["run", "playbook.yaml"])
    .run()
    .status(1)
    .stderr_has("add failed")
    .stderr_has("forbidden: cannot patch ConfigMap in namespace closing: ");
}

#[test]
fn a_malformed_rendered_selector_is_invalid_input_and_sends_no_request() {
    let sandbox = Sandbox::start(HUB);
    for (step, says) in [
        (
            "kube.count: {kind: Pod, namespace: staging, selector: \"component in {{ component }}\"}",
            "`selector`: `component in singleuser-server` (rendered from `component in {{ component }}`) is not a valid label selector: unable to parse requirement: found 'singleuser-server', expected: '('",
        ),
        (
            "kube.delete: {kind: Pod, namespace: staging, field_selector: \"status.phase:{{ phase }}\", max: 1}",
            "`field_selector`: `status.phase:Running` (rendered from `status.phase:{{ phase }}`) is not a valid field selector",
        ),
        (
            "kube.delete: {kind: Pod, namespace: staging, owner: {kind: \"{{ owner }}\", name: x}, max: 1}",
            "`{{ owner }}` renders to `Deploymnet`, which is not a known kind",
        ),
    ] {
        let before = sandbox.requests().len();
        let test = test_with(
            &sandbox,
            &format!(
                "runbook: 1\nname: bad-selector\nparams:\n  component: {{default: singleuser-server}}\n  phase: {{default: Running}}\n  owner: {{default: Deploymnet}}\nsteps:\n  - id: select\n    retries: 2\n    {step}\n"
            ),
        );
        test.run_args(&["validate", "playbook.yaml"]).status(0);
        test.run_args(&["run", "playbook.yaml"])
            .status(2)
            .stderr_has(says)
            .stderr_has("invalid input (exit 2)")
            .stderr_lacks("trying again");
        let lists: Vec<_> = sandbox.requests()[before..]
            .iter()
            .filter(|request| {
                request["path"]
                    .as_str()
                    .is_some_and(|path| path.contains("/pods"))
            })
            .cloned()
            .collect();
        assert!(lists.is_empty(), "requests were sent: {lists:?}");
    }
    assert!(
        sandbox
            .get("pod", "jupyter-alice", Some("staging"))
            .is_some()
    );
    // Well formed, but not a field the server can select pods by: its 400 is invalid input.
    test_with(
        &sandbox,
        "runbook: 1\nname: unsupported\nsteps:\n  - id: count\n    kube.count: {kind: Pod, namespace: staging, field_selector: spec.volumes=x}\n",
    )
    .args(["run", "playbook.yaml"])
    .run()
    .status(2)
    .stderr_has("invalid input: the server refused the selectors: ")
    .stderr_has("field label not supported: spec.volumes");
}

#[test]
fn an_invalid_manifest_is_invalid_input_with_its_position() {
    let sandbox = Sandbox::start(HUB);
    // Inline: found when the playbook loads, at the field at fault.
    let inline = test_with(
        &sandbox,
        r#"
runbook: 1
name: apply
steps:
  - id: transfer-pod
    kube.apply:
      namespace: staging
      manifest:
        apiVersion: v1
        kind: Pod
        metadata: {name: transfer}
        spec:
          containers:
            - name: copy
              image: alpine
              ports:
                - containerPort: rsync
"#,
    );
    for command in ["validate", "plan", "run"] {
        inline
            .run_args(&[command, "playbook.yaml"])
            .status(2)
            .stderr_has("error: the Pod manifest is not valid: `containerPort` must be a whole number, not `rsync`")
            .stderr_has(" --> playbook.yaml:17:34");
    }
    assert!(!inline.path(".runbook").exists());

    // Rendered from a template: found when the step runs, shown in the rendered text.
    let templated = test_with(
        &sandbox,
        r#"
runbook: 1
name: apply
params:
  port: {default: rsync}
steps:
  - id: settings
    kube.apply: {namespace: staging, manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}}
  - id: transfer-pod
    kube.apply: {template: pod.yaml, namespace: staging}
"#,
    )
    .file(
        "templates/pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: transfer}\nspec:\n  containers:\n    - name: copy\n      image: alpine\n      ports:\n        - containerPort: {{ port }}\n",
    );
    let output = templated
        .run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has("settings changed")
        .stderr_has("transfer-pod failed")
        .stderr_has("invalid input: the Pod manifest is not valid: `containerPort` must be a whole number, not `rsync`")
        .stderr_has("templates/pod.yaml (rendered):9:26");
    assert!(
        output.stderr.contains("9 |         - containerPort: rsync"),
        "{}",
        output.stderr
    );
    assert!(sandbox.get("pod", "transfer", Some("staging")).is_none());

    // An inline manifest with templates is checked once rendered.
    let rendered = test_with(
        &sandbox,
        r#"
runbook: 1
name: apply-rendered
params:
  kind: {default: Gadget}
steps:
  - id: odd
    kube.apply: {namespace: staging, manifest: {apiVersion: v1, kind: "{{ kind }}", metadata: {name: x}}}
"#,
    );
    rendered
        .run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has("the cluster does not serve a kind `Gadget` in `v1`");
}

#[test]
fn transient_errors_and_conflicts_are_retried() {
    let sandbox = Sandbox::start_with(
        HUB,
        &[
            "--error-rate",
            "0.2",
            "--conflict-rate",
            "0.2",
            "--seed",
            "7",
        ],
    );
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: flaky-api
steps:
  - id: read-pv
    kube.get: {kind: pv, name: staging-home-nfs}
  - id: retain
    kube.patch: {kind: pv, name: staging-home-nfs, merge: {spec: {persistentVolumeReclaimPolicy: Retain}}}
  - id: count
    kube.count: {kind: Pod, namespace: staging}
"#,
    );
    test.run_args(&["run", "playbook.yaml"]).status(0);
    let failures = sandbox
        .requests()
        .iter()
        .filter(|request| request["status"].as_u64().is_some_and(|code| code >= 409))
        .count();
    assert!(failures > 0, "no fault was injected, so nothing was tested");
}

#[test]
fn exec_runs_in_the_pod_registers_its_output_and_fails_on_a_bad_code() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: exec
params:
  word: {default: "two words; not a command"}
steps:
  - id: probe
    kube.exec:
      pod: jupyter-alice
      namespace: staging
      read_only: true
      command: [sh, -c, 'printf "%s\n" "$1"; echo "{\"pod\": \"$HOSTNAME\"}" >&2', sh, "{{ word }}"]
    register: probe
  - id: check
    assert:
      - "probe.rc == 0"
      - "probe.stdout == word"
      - "probe.stderr == '{\"pod\": \"jupyter-alice\"}'"
  - id: fails
    kube.exec:
      pod: jupyter-alice
      namespace: staging
      command: [sh, -c, "echo something went wrong; exit 3"]
"#,
    )
    .args(["run", "playbook.yaml"]);
    // A read-only exec is run by `plan` too; the other one only described.
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    assert!(
        plan.stdout
            .contains("`sh -c 'echo something went wrong; exit 3'` in pod jupyter-alice"),
        "{}",
        plan.stdout
    );
    test.run()
        .status(1)
        .stderr_has("[fails] something went wrong")
        .stderr_has("in namespace staging exited with code 3; last lines:");
    let execs = sandbox.requests_of("exec").len();
    assert_eq!(execs, 3, "plan ran the probe once, run ran both steps");
}

#[test]
fn a_malformed_selector_in_a_lookup_is_invalid_input() {
    let sandbox = Sandbox::start(HUB);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: lookup
params:
  selector: {default: "component in (singleuser-server"}
steps:
  - id: users-gone
    assert:
      - "kube_count('Pod', namespace='staging', selector=selector) == 0"
"#,
    )
    .args(["run", "playbook.yaml"]);
    test.run()
        .status(2)
        .stderr_has("is not a valid label selector");
    let lists = sandbox.requests_of("list").len();
    assert_eq!(lists, 0, "the malformed selector was sent");
}

/// A kubeconfig whose current context points nowhere, with a `sandbox` context that points
/// at the sandbox: what a person with several clusters has.
fn two_contexts(sandbox: &Sandbox) -> String {
    // The sandbox serves TLS to holders of its token: its CA and token come along.
    let (server, ca, token) = sandbox.credentials();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- {{name: sandbox, cluster: {{server: \"{server}\", certificate-authority-data: \"{ca}\"}}}}
- {{name: nowhere, cluster: {{server: \"http://127.0.0.1:9\"}}}}
contexts:
- {{name: sandbox, context: {{cluster: sandbox, user: sandbox, namespace: default}}}}
- {{name: elsewhere, context: {{cluster: nowhere, user: sandbox}}}}
current-context: elsewhere
users:
- {{name: sandbox, user: {{token: {token}}}}}
"
    )
}

#[test]
fn run_steps_talk_to_the_cluster_and_context_of_the_flags() {
    let sandbox = Sandbox::start(HUB);
    let playbook = r#"
runbook: 1
name: kubectl
steps:
  - id: pv
    kube.get: {kind: PersistentVolume, name: staging-home-nfs}
  - id: kubectl
    run:
      shell: true
      cwd: /
      command: kubectl config current-context && kubectl get pv staging-home-nfs -o name
"#;
    let test = Test::new()
        .playbook(playbook)
        .file("clusters.yaml", &two_contexts(&sandbox))
        // A KUBECONFIG of its own, which the flags override for kube steps and kubectl alike.
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        "clusters.yaml",
        "--context",
        "sandbox",
    ])
    .status(0)
    .stderr_has("[kubectl] sandbox")
    .stderr_has("persistentvolume/staging-home-nfs");

    // `--context` alone: the files of KUBECONFIG, with that context.
    let test = Test::new()
        .playbook(playbook)
        .file("clusters.yaml", &two_contexts(&sandbox));
    let listed = format!(
        "/nonexistent/kubeconfig:{}",
        test.path("clusters.yaml").display()
    );
    test.env("KUBECONFIG", &listed)
        .run_args(&["run", "playbook.yaml", "--context", "sandbox"])
        .status(0)
        .stderr_has("persistentvolume/staging-home-nfs");
}

/// A kubeconfig for `sandbox` whose user is an exec credential plugin (as EKS, GKE and AKS
/// use): a script that counts its calls in `plugin-calls` and prints the sandbox's own token
/// (any token when the sandbox takes requests without one).
fn exec_plugin_kubeconfig(sandbox: &Sandbox, test: &Test) -> std::path::PathBuf {
    exec_plugin_kubeconfig_expiring(sandbox, test, false)
}

/// Like [`exec_plugin_kubeconfig`]; with `expiring`, each token the plugin gives expires
/// five seconds after it gave it.
fn exec_plugin_kubeconfig_expiring(
    sandbox: &Sandbox,
    test: &Test,
    expiring: bool,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(sandbox.kubeconfig()).expect("the sandbox's kubeconfig");
    let mut kubeconfig: serde_json::Value =
        serde_saphyr::from_str(&text).expect("the sandbox's kubeconfig is YAML");
    let token = kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .unwrap_or("any-token")
        .to_string();
    let mut credential = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token},
    });
    if expiring {
        // Expanded by the shell of the plugin, each time it runs.
        credential["status"]["expirationTimestamp"] =
            "$(date -u -d '+5 seconds' +%Y-%m-%dT%H:%M:%SZ)".into();
    }
    let plugin = test.path("credential-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho call >> '{}'\ncat <<EOF\n{credential}\nEOF\n",
            test.path("plugin-calls").display()
        ),
    )
    .expect("write the plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make the plugin executable");
    kubeconfig["users"][0]["user"] = serde_json::json!({"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": plugin,
        "interactiveMode": "Never",
    }});
    let path = test.path("exec-kubeconfig");
    // JSON is YAML.
    std::fs::write(&path, kubeconfig.to_string()).expect("write the kubeconfig");
    path
}

#[test]
fn an_exec_credential_plugin_runs_once_per_run() {
    let sandbox = Sandbox::start(HUB);
    let test = Test::new().playbook(
        r#"
runbook: 1
name: exec-credential
steps:
  - id: read-pv
    kube.get: {kind: PersistentVolume, name: staging-home-nfs}
    register: pv
  - id: users
    kube.count: {kind: Pod, namespace: staging, selector: component=singleuser-server}
    register: users
  - id: check
    assert:
      - "pv.spec.nfs.server == '10.0.0.7'"
      - "kube_get('pvc', 'home-nfs', namespace='staging').spec.volumeName == 'staging-home-nfs'"
"#,
    );
    let kubeconfig = exec_plugin_kubeconfig(&sandbox, &test);
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8 path"),
    ])
    .status(0);
    assert_eq!(test.lines_of("plugin-calls"), ["call"]);
}

#[test]
fn an_exec_credential_about_to_expire_is_renewed_by_running_the_plugin_again() {
    let sandbox = Sandbox::start(HUB);
    let test = Test::new().playbook(
        r#"
runbook: 1
name: exec-credential-expiring
steps:
  - id: read-pv
    kube.get: {kind: PersistentVolume, name: staging-home-nfs}
  - id: users
    kube.count: {kind: Pod, namespace: staging, selector: component=singleuser-server}
"#,
    );
    let kubeconfig = exec_plugin_kubeconfig_expiring(&sandbox, &test, true);
    test.run_args(&[
        "run",
        "playbook.yaml",
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8 path"),
    ])
    .status(0);
    // Once to connect, then before each request: the token is never more than 10 s from
    // its expiry.
    assert!(test.lines_of("plugin-calls").len() >= 3);
}

#[test]
fn a_stateful_set_scaled_to_zero_through_its_spec_loses_its_pods_and_keeps_its_claims() {
    let sandbox = Sandbox::start(include_str!("data/scenarios/statefulset.yaml"));
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: stop-db
steps:
  - id: db-ready
    kube.wait: {kind: StatefulSet, namespace: default, name: db, for: "object.status.readyReplicas == 2", timeout: 30s}
  - id: count-before
    kube.count: {kind: Pod, namespace: default, selector: app=db}
    register: before
  - id: scale-down
    kube.patch: {kind: sts, namespace: default, name: db, merge: {spec: {replicas: 0}}}
  - id: db-stopped
    kube.wait: {kind: sts, namespace: default, name: db, for: "object.status.replicas == 0", timeout: 30s}
  - id: first-pod-gone
    kube.wait: {kind: Pod, namespace: default, name: db-0, for: gone, timeout: 30s}
  - id: count-after
    kube.count: {kind: Pod, namespace: default, selector: app=db}
    register: after
  - id: check
    assert:
      - "before.names == ['db-0', 'db-1']"
      - "after.count == 0"
      - "kube_count('PersistentVolumeClaim', namespace='default', selector='app=db') == 2"
"#,
    )
    .args(["run", "playbook.yaml"]);
    test.run().status(0);
    assert_eq!(
        sandbox.kubectl(&["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]),
        "0"
    );
}
