//! The Kubernetes side of the NFS migration, step by step, against the sandbox through
//! runbook's own client (`runbook::kube::Cluster`) and the deployer stand-in: what the
//! playbook relies on the cluster to do, checked on a hub shaped like a real one. Waits poll
//! for a state (with a generous limit that only guards against hanging).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runbook::kube::{Cluster, ClusterOptions, ObjectPatch, find_kind};
use sandbox_cluster::hub::Hub;
use sandbox_cluster::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

/// The hub `staging` as the basehub chart and JupyterHub leave it, with its PV's policy
/// changed to Delete by hand, and two user servers that leave by themselves.
fn hub(server: &str) -> Hub {
    let mut hub = Hub::new("staging").users_leave_after(Some(1));
    hub.old_server = server.into();
    hub
}

/// The deployer repository of the cluster `sandbox`, pointing the hub at `server`: a shared
/// values file, the hub's own, and an encrypted one the stand-in skips.
fn write_config(dir: &Path, server: &str) -> PathBuf {
    let config = Hub::config_dir(dir);
    hub(server)
        .write_deployer_config(&config.join("sandbox"))
        .expect("write the deployer config");
    config
}

/// A sandbox seeded with [`hub`] and runbook's client for it.
struct Harness {
    sandbox: Sandbox,
    cluster: Cluster,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let objects = dir.path().join("hub.yaml");
        std::fs::write(&objects, hub("10.0.0.7").manifests()).expect("write the hub");
        let sandbox = Sandbox::start(SandboxOptions {
            dir: dir.path().join("sandbox"),
            objects: Some(objects),
            faults: sandbox_cluster::Faults {
                seed: Some(11),
                ..Default::default()
            },
            ..SandboxOptions::default()
        })
        .await
        .expect("start the sandbox");
        let cluster = Cluster::connect(&ClusterOptions {
            kubeconfig: Some(sandbox.kubeconfig().to_path_buf()),
            context: None,
        })
        .await
        .expect("connect to the sandbox");
        Harness {
            sandbox,
            cluster,
            dir,
        }
    }

    async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let kind = find_kind(kind).expect("a kind the sandbox serves");
        self.cluster
            .get(kind, name, Some("staging"))
            .await
            .expect("get")
    }

    async fn list(&self, kind: &str, labels: Option<&str>) -> Vec<Value> {
        let kind = find_kind(kind).expect("a kind the sandbox serves");
        self.cluster
            .list(kind, Some("staging"), labels, None)
            .await
            .expect("list")
    }

    async fn delete(&self, kind: &str, name: &str) {
        let kind = find_kind(kind).expect("a kind the sandbox serves");
        let deleted = self
            .cluster
            .delete(kind, name, Some("staging"), None, false)
            .await
            .expect("delete");
        assert!(deleted, "{name} was there to delete");
    }

    /// The pods of a Deployment, found through its ReplicaSets' owner references.
    async fn pods_of(&self, deployment: &str) -> Vec<Value> {
        let owner = self
            .get("Deployment", deployment)
            .await
            .expect("the Deployment");
        let sets: Vec<String> = self
            .list("ReplicaSet", None)
            .await
            .iter()
            .filter(|set| owned_by(set, &owner))
            .map(|set| uid(set).to_string())
            .collect();
        self.list("Pod", None)
            .await
            .into_iter()
            .filter(|pod| {
                owners(pod)
                    .iter()
                    .any(|owner| sets.iter().any(|set| owner["uid"] == set.as_str()))
            })
            .collect()
    }

    /// Runs `runbook sandbox deployer deploy sandbox staging` against the sandbox.
    async fn deploy(&self, server: &str) -> std::process::Output {
        let config = write_config(self.dir.path(), server);
        tokio::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--kubeconfig")
            .arg(self.sandbox.kubeconfig())
            .args(["sandbox", "deployer", "deploy", "sandbox", "staging"])
            .arg("--config-dir")
            .arg(config)
            .output()
            .await
            .expect("run the deployer stand-in")
    }
}

fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

fn owners(object: &Value) -> Vec<Value> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn owned_by(object: &Value, owner: &Value) -> bool {
    owners(object)
        .iter()
        .any(|reference| reference["uid"] == uid(owner))
}

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

fn node(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn is_deleting(object: &Value) -> bool {
    object["metadata"].get("deletionTimestamp").is_some()
}

fn finalizers(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Polls `probe` until it returns `Some`; fails the test if that takes absurdly long.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_whole_sequence_of_the_migration() {
    let hub = Harness::start().await;
    let pv_kind = find_kind("PersistentVolume").expect("PVs");
    let volume = || async {
        hub.cluster
            .get(pv_kind, "staging-home-nfs", None)
            .await
            .expect("get the PV")
    };
    let quota_server = hub.pods_of("storage-quota-home-nfs").await;
    assert_eq!(quota_server.len(), 1);
    let quota_server_uid = uid(&quota_server[0]).to_string();

    // The users leave by themselves (their servers have a lifetime).
    eventually("the users to leave", || async {
        hub.list("Pod", Some("component=singleuser-server"))
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // The PV's policy is made Retain.
    hub.cluster
        .patch(
            pv_kind,
            "staging-home-nfs",
            None,
            &ObjectPatch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
            false,
        )
        .await
        .expect("patch the PV");
    let pv = volume().await.expect("the PV");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");

    // The hub goes offline.
    hub.delete("Service", "proxy-public").await;
    assert!(hub.get("Service", "proxy-public").await.is_none());

    // The PV and PVC are deleted without waiting: protection keeps both.
    hub.cluster
        .delete(pv_kind, "staging-home-nfs", None, None, false)
        .await
        .expect("delete the PV");
    hub.delete("PersistentVolumeClaim", "home-nfs").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pv = volume().await.expect("a bound PV stays");
    assert!(is_deleting(&pv));
    assert_eq!(finalizers(&pv), ["kubernetes.io/pv-protection"]);
    assert_eq!(phase(&pv), "Bound");
    let claim = hub
        .get("PersistentVolumeClaim", "home-nfs")
        .await
        .expect("a claim in use stays");
    assert!(is_deleting(&claim));
    assert_eq!(finalizers(&claim), ["kubernetes.io/pvc-protection"]);

    // The metrics Deployments' pods go; the Deployments recreate them at once, and the new
    // pods, unschedulable while their claim is being deleted, do not hold it.
    let mut old_metrics = Vec::new();
    for deployment in ["shared-dirsize-metrics", "shared-volume-metrics"] {
        for pod in hub.pods_of(deployment).await {
            let name = pod["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_string();
            hub.delete("Pod", &name).await;
            old_metrics.push(name);
        }
    }
    assert_eq!(old_metrics.len(), 2);
    eventually("the claim to go", || async {
        hub.get("PersistentVolumeClaim", "home-nfs")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually("the PV to go", || async {
        volume().await.is_none().then_some(())
    })
    .await;
    for deployment in ["shared-dirsize-metrics", "shared-volume-metrics"] {
        let pods = hub.pods_of(deployment).await;
        assert_eq!(pods.len(), 1, "{deployment} keeps one pod");
        let pod = &pods[0];
        assert!(
            !old_metrics.contains(
                &pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            )
        );
        assert_eq!(phase(pod), "Pending", "{pod}");
        assert_eq!(node(pod), "", "{pod}");
        assert_eq!(pod["status"]["conditions"][0]["reason"], "Unschedulable");
    }

    // The deploy recreates the PV (Retain by default), the claim and proxy-public.
    let output = hub.deploy("10.0.0.9").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Release \"staging\" has been upgraded. Happy Helming!"),
        "{stdout}"
    );
    assert!(
        stderr.contains("note: skipping enc-staging.secret.values.yaml"),
        "{stderr}"
    );
    let pv = volume().await.expect("a new PV");
    assert_eq!(
        pv["spec"]["nfs"],
        json!({"server": "10.0.0.9", "path": "/homes/staging"})
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        pv["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(
        pv["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "staging"
    );
    let service = hub
        .get("Service", "proxy-public")
        .await
        .expect("proxy-public again");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8000);
    eventually("the claim to bind", || async {
        let claim = hub.get("PersistentVolumeClaim", "home-nfs").await?;
        (phase(&claim) == "Bound").then_some(())
    })
    .await;
    for deployment in ["shared-dirsize-metrics", "shared-volume-metrics"] {
        eventually("the metrics pods to run", || async {
            let pods = hub.pods_of(deployment).await;
            (pods.len() == 1 && phase(&pods[0]) == "Running" && node(&pods[0]) == "sandbox-node")
                .then_some(())
        })
        .await;
        eventually("the Deployment to be available", || async {
            let deployment = hub.get("Deployment", deployment).await?;
            (deployment["status"]["availableReplicas"] == 1).then_some(())
        })
        .await;
    }

    // The jupyterhub-home-nfs server, which carries a metrics label, was never touched.
    let quota_server = hub.pods_of("storage-quota-home-nfs").await;
    assert_eq!(quota_server.len(), 1);
    assert_eq!(uid(&quota_server[0]), quota_server_uid);
    assert!(!is_deleting(&quota_server[0]));
    assert_eq!(phase(&quota_server[0]), "Running");
    let deletions: Vec<String> = std::fs::read_to_string(hub.sandbox.request_log())
        .expect("the request log")
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|request| request["verb"] == "delete")
        .map(|request| request["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        deletions.iter().all(|path| !path.contains("storage-quota")),
        "{deletions:?}"
    );
}

#[tokio::test]
async fn a_deploy_with_a_new_server_fails_while_the_old_pv_exists() {
    let hub = Harness::start().await;
    let output = hub.deploy("10.0.0.9").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "UPGRADE FAILED: cannot patch \"staging-home-nfs\" with kind PersistentVolume: \
             PersistentVolume \"staging-home-nfs\" is invalid: spec.persistentvolumesource: \
             Forbidden: spec.persistentvolumesource is immutable after creation"
        ),
        "{stderr}"
    );
    let pv_kind = find_kind("PersistentVolume").expect("PVs");
    let pv = hub
        .cluster
        .get(pv_kind, "staging-home-nfs", None)
        .await
        .expect("get the PV")
        .expect("the PV");
    assert_eq!(pv["spec"]["nfs"]["server"], "10.0.0.7", "unchanged");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");

    // The same server: an upgrade that changes nothing that matters.
    let output = hub.deploy("10.0.0.7").await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pv = hub
        .cluster
        .get(pv_kind, "staging-home-nfs", None)
        .await
        .expect("get the PV")
        .expect("the PV");
    assert_eq!(
        pv["spec"]["persistentVolumeReclaimPolicy"], "Delete",
        "the chart sets no policy, so a hand-made change stays"
    );
    assert_eq!(
        pv["spec"]["mountOptions"],
        json!(["soft", "noatime", "vers=4.1"])
    );
}

#[tokio::test]
async fn a_first_deploy_installs_the_release_and_its_namespace() {
    let hub = Harness::start().await;
    let dir = hub.dir.path().join("other");
    let cluster = dir.join("config/clusters/sandbox");
    std::fs::create_dir_all(&cluster).expect("config dir");
    std::fs::write(
        cluster.join("cluster.yaml"),
        "name: sandbox\nhubs:\n- name: fresh\n  helm_chart: daskhub\n  helm_chart_values_files: [fresh.values.yaml]\n",
    )
    .expect("cluster.yaml");
    std::fs::write(
        cluster.join("fresh.values.yaml"),
        "basehub:\n  nfs:\n    pv:\n      serverIP: nfs.example.org\n      shareNameOverride: shared\n",
    )
    .expect("values");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--kubeconfig")
        .arg(hub.sandbox.kubeconfig())
        .args([
            "sandbox",
            "deployer",
            "deploy",
            "sandbox",
            "fresh",
            "--config-dir",
        ])
        .arg(dir.join("config/clusters"))
        .output()
        .await
        .expect("run the deployer stand-in");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Release \"fresh\" does not exist. Installing it now."),
        "{stdout}"
    );
    let namespaces = find_kind("Namespace").expect("namespaces");
    assert!(
        hub.cluster
            .get(namespaces, "fresh", None)
            .await
            .expect("get")
            .is_some()
    );
    let pv = hub
        .cluster
        .get(find_kind("pv").expect("pv"), "fresh-home-nfs", None)
        .await
        .expect("get")
        .expect("the PV");
    assert_eq!(
        pv["spec"]["nfs"],
        json!({"server": "nfs.example.org", "path": "/homes/shared"})
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        pv["spec"]["mountOptions"],
        json!(["soft", "noatime", "vers=4.2"])
    );
    let managers: Vec<&str> = pv["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["manager"].as_str())
        .collect();
    assert!(managers.contains(&"helm"), "{managers:?}");
    eventually("the claim to bind", || async {
        let claim = hub
            .cluster
            .get(find_kind("pvc").expect("pvc"), "home-nfs", Some("fresh"))
            .await
            .expect("get")?;
        (phase(&claim) == "Bound").then_some(())
    })
    .await;
}
