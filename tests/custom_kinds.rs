//! `kube.*` on kinds beyond runbook's table: a CustomResourceDefinition applied by a
//! playbook, an object of its kind created, its status set (by kubectl, standing in for the
//! controller the sandbox does not run) and waited on; a kind the cluster does not serve;
//! a StatefulSet scaled down and its pods waited on, as a Deployment's are.

use crate::common::{Sandbox, Test};

/// Fluid's `DataMigrate` definition, trimmed.
const DATA_MIGRATE_CRD: &str = include_str!("data/custom/datamigrate-crd.yaml");

fn test_with(sandbox: &Sandbox, playbook: &str) -> Test {
    Test::new().playbook(playbook).env(
        "KUBECONFIG",
        sandbox.kubeconfig().to_str().expect("UTF-8 path"),
    )
}

/// The definition as an inline manifest of a `kube.apply` step, indented under it.
fn definition_step() -> String {
    let manifest: String = DATA_MIGRATE_CRD
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("        {line}\n"))
        .collect();
    format!("  - id: define\n    kube.apply:\n      manifest:\n{manifest}")
}

#[test]
fn a_custom_resource_is_created_and_waited_on() {
    let sandbox = Sandbox::start("apiVersion: v1\nkind: Namespace\nmetadata: {name: staging}\n");
    let playbook = format!(
        r#"runbook: 1
name: migrate-data
steps:
{define}  - id: migrate
    kube.apply:
      namespace: staging
      manifest:
        apiVersion: data.fluid.io/v1alpha1
        kind: DataMigrate
        metadata: {{name: jfs-migrate}}
        spec:
          image: juicefs-fuse
          from: {{externalStorage: {{uri: "minio://minio:9000/test/"}}}}
          to: {{dataset: {{name: jfsdemo, namespace: staging, path: /dir1}}}}
  - id: controller
    run: [kubectl, patch, datamigrate, jfs-migrate, -n, staging, --subresource=status, --type=merge, -p, '{{"status": {{"phase": "Complete"}}}}']
  - id: complete
    kube.wait: {{kind: DataMigrate, name: jfs-migrate, namespace: staging, for: "object.status.phase == 'Complete'", timeout: 60s}}
  - id: read
    kube.get: {{kind: datamigrates.data.fluid.io, name: jfs-migrate, namespace: staging}}
    register: migrate
  - id: count
    kube.count: {{kind: datamigrates, namespace: staging}}
    register: migrates
  - id: check
    assert:
      - "migrate.spec.to.dataset.path == '/dir1'"
      - "migrates.count == 1"
      - "kube_get('DataMigrate', 'jfs-migrate', namespace='staging').status.phase == 'Complete'"
      - "kube_count('datamigrate', namespace='staging') == 1"
  - id: clean-up
    kube.delete: {{kind: DataMigrate, name: jfs-migrate, namespace: staging, wait: true}}
"#,
        define = definition_step()
    );
    let test = test_with(&sandbox, &playbook).env("HOME", "/nonexistent-home");
    test.run_args(&["run", "playbook.yaml"]).status(0);
    let listed = sandbox.kubectl(&["get", "crd", "-o", "name"]);
    assert_eq!(
        listed,
        "customresourcedefinition.apiextensions.k8s.io/datamigrates.data.fluid.io\n"
    );
    assert!(
        sandbox
            .get("datamigrate", "jfs-migrate", Some("staging"))
            .is_none()
    );
    // Everything was done: a second run finds it so (the wait and the apply check the live
    // objects through the same discovery).
    test.run_args(&["run", "playbook.yaml", "--restart"])
        .status(0);
}

/// stderr without timestamps and durations, for snapshots.
fn scrubbed(output: &crate::common::Output) -> String {
    let durations = regex::Regex::new(r"\d+(\.\d+)?(ms|s)\b").expect("regex");
    durations
        .replace_all(&output.stderr_scrubbed(), "[duration]")
        .into_owned()
}

#[test]
fn a_kind_the_cluster_does_not_serve_is_invalid_input() {
    let sandbox = Sandbox::start(DATA_MIGRATE_CRD);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: snapshot
steps:
  - id: snapshot
    kube.get: {kind: VolumeSnapshot, name: homes, namespace: default}
"#,
    );
    let output = test.run_args(&["run", "playbook.yaml"]).status(2);
    insta::assert_snapshot!("not_served_kind", scrubbed(&output));

    let close = test_with(
        &sandbox,
        r#"
runbook: 1
name: migrate
steps:
  - id: wait
    kube.wait: {kind: DataMigrat, name: m, namespace: default, for: exists, timeout: 5s}
"#,
    );
    let output = close.run_args(&["run", "playbook.yaml"]).status(2);
    insta::assert_snapshot!("not_served_close_kind", scrubbed(&output));

    let manifest = test_with(
        &sandbox,
        r#"
runbook: 1
name: migrate
steps:
  - id: migrate
    kube.apply:
      namespace: default
      manifest: {apiVersion: data.fluid.io/v1beta1, kind: DataMigrate, metadata: {name: m}}
"#,
    );
    let output = manifest.run_args(&["run", "playbook.yaml"]).status(2);
    insta::assert_snapshot!("not_served_manifest_version", scrubbed(&output));
    assert!(
        sandbox.requests_of("create").is_empty() && sandbox.requests_of("patch").is_empty(),
        "nothing was written"
    );
}

#[test]
fn a_stateful_set_is_scaled_down_and_its_pods_waited_on() {
    let sandbox = Sandbox::start(include_str!("data/scenarios/statefulset.yaml"));
    sandbox.kubectl(&[
        "wait",
        "sts/db",
        "--for=jsonpath={.status.readyReplicas}=2",
        "--timeout=60s",
    ]);
    let test = test_with(
        &sandbox,
        r#"
runbook: 1
name: stop-db
steps:
  - id: scale-down
    kube.patch: {kind: sts, name: db, namespace: default, merge: {spec: {replicas: 0}}}
  - id: pods-gone
    kube.wait: {kind: Pod, name: db-0, namespace: default, for: gone, timeout: 60s}
  - id: settled
    kube.wait: {kind: StatefulSet, name: db, namespace: default, for: "object.status.replicas == 0", timeout: 60s}
  - id: check
    assert:
      - "kube_count('Pod', namespace='default', selector='app=db') == 0"
      - "kube_count('pvc', namespace='default') == 2"
"#,
    );
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert!(sandbox.get("pod", "db-1", Some("default")).is_none());
}
