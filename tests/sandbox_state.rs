//! A sandbox's durable state (`runbook sandbox up --state FILE`): every acknowledged write
//! survives a `kill -9`, controllers' changes too, and a restart from the file gives the
//! same objects; pods' lifetimes run on across a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runbook::kube::{Cluster, ClusterOptions, find_kind};
use sandbox_cluster::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

const HUB: &str = include_str!("data/scenarios/hub-no-users.yaml");

fn options(dir: &Path, objects: Option<PathBuf>) -> SandboxOptions {
    SandboxOptions {
        dir: dir.join("sandbox"),
        objects,
        state_file: Some(dir.join("state.yaml")),
        faults: sandbox_cluster::Faults {
            seed: Some(5),
            ..Default::default()
        },
        ..SandboxOptions::default()
    }
}

async fn client(kubeconfig: &Path) -> Cluster {
    Cluster::connect(&ClusterOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
    })
    .await
    .expect("connect to the sandbox")
}

/// The objects of a sandbox, without what a restart may change (versions), by key.
fn objects(sandbox: &Sandbox) -> Vec<Value> {
    let list = sandbox.cluster().read(|state| state.snapshot());
    list["items"].as_array().cloned().unwrap_or_default()
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "staging"}, "data": {"n": name}})
}

async fn wait_for<F: FnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_sandbox_dropped_without_shutdown_restarts_with_the_same_objects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = dir.path().join("hub.yaml");
    std::fs::write(&hub, HUB).expect("write the hub");
    let sandbox = Sandbox::start(options(dir.path(), Some(hub.clone())))
        .await
        .expect("start");
    let cluster = client(sandbox.kubeconfig()).await;
    let config_maps = find_kind("ConfigMap").expect("ConfigMaps");
    cluster
        .apply_as(
            config_maps,
            "settings",
            Some("staging"),
            &config_map("settings"),
            "test",
        )
        .await
        .expect("create a ConfigMap");
    let pods = find_kind("Pod").expect("pods");
    let running = cluster
        .list(pods, Some("staging"), None, None)
        .await
        .expect("list pods");
    assert_eq!(
        running.len(),
        2,
        "the controllers made the Deployment's pods"
    );
    // One pod goes: its replacement is the controllers' own change.
    let name = running[0]["metadata"]["name"].as_str().expect("a name");
    cluster
        .delete(pods, name, Some("staging"), None, false)
        .await
        .expect("delete a pod");
    wait_for("the pod to be replaced", || {
        objects(&sandbox)
            .iter()
            .filter(|object| object["kind"] == "Pod")
            .all(|pod| pod["metadata"]["name"] != name)
    })
    .await;
    let before = objects(&sandbox);
    let last_version = sandbox.cluster().read(|state| state.store.revision());
    drop(sandbox);

    // The scenario file is gone: only the state file can bring the cluster back.
    std::fs::remove_file(&hub).expect("remove the scenario");
    let again = Sandbox::start(options(dir.path(), Some(hub)))
        .await
        .expect("restart from the state file");
    assert_eq!(objects(&again), before);
    let settings = again
        .cluster()
        .get(config_maps, "staging", "settings")
        .expect("the ConfigMap");
    let version: u64 = settings["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|version| version.parse().ok())
        .expect("a version");
    assert!(version > last_version, "versions never go back");
    let claim = again
        .cluster()
        .get(find_kind("pvc").expect("pvc"), "staging", "home-nfs")
        .expect("the claim");
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(
        claim["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
}

#[tokio::test]
async fn a_lifetime_runs_on_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = dir.path().join("hub.yaml");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: jupyter-alice\n  namespace: staging\n  \
               annotations: {sandbox.runbook.dev/lifetime: 2s}\nspec:\n  containers: [{name: notebook, image: \"jupyter/base:1\"}]\n";
    std::fs::write(&hub, format!("{HUB}---\n{pod}")).expect("write the hub");
    let sandbox = Sandbox::start(options(dir.path(), Some(hub)))
        .await
        .expect("start");
    let pods = find_kind("Pod").expect("pods");
    let created = sandbox
        .cluster()
        .get(pods, "staging", "jupyter-alice")
        .expect("the user's pod");
    drop(sandbox);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = Sandbox::start(options(dir.path(), None))
        .await
        .expect("restart from the state file");
    match again.cluster().get(pods, "staging", "jupyter-alice") {
        Ok(pod) => {
            assert_eq!(pod["metadata"]["uid"], created["metadata"]["uid"]);
            assert!(
                pod["metadata"].get("deletionTimestamp").is_some(),
                "deleted at the restart: {pod}"
            );
        }
        Err(error) => assert_eq!(error.code, 404),
    }
    wait_for("the pod to go", || {
        again
            .cluster()
            .get(pods, "staging", "jupyter-alice")
            .is_err()
    })
    .await;
}

/// A `runbook sandbox up --state` process.
struct Process {
    child: Child,
    dir: PathBuf,
}

impl Process {
    fn start(dir: &Path, state: &Path, objects: &Path) -> Self {
        let _ = std::fs::remove_file(dir.join("kubeconfig"));
        let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["sandbox", "up", "--port", "0", "--dir"])
            .arg(dir)
            .arg("--state")
            .arg(state)
            .arg("--objects")
            .arg(objects)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sandbox");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("kubeconfig").exists() {
            assert!(Instant::now() < deadline, "the sandbox wrote no kubeconfig");
            std::thread::sleep(Duration::from_millis(20));
        }
        Process {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// SIGKILL: no shutdown, no save.
    fn kill(&mut self) {
        self.child.kill().expect("kill the sandbox");
        self.child.wait().expect("reap the sandbox");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn no_acknowledged_write_is_lost_to_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = dir.path().join("hub.yaml");
    std::fs::write(&objects, HUB).expect("write the hub");
    let state = dir.path().join("state.yaml");
    let mut process = Process::start(&dir.path().join("one"), &state, &objects);
    let cluster = client(&process.kubeconfig()).await;
    let config_maps = find_kind("ConfigMap").expect("ConfigMaps");
    // Writes go on while the process is killed: every one answered must be in the file.
    let acknowledged: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let writer = {
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            for index in 0.. {
                let name = format!("c-{index}");
                let Ok(object) = cluster
                    .apply_as(
                        config_maps,
                        &name,
                        Some("staging"),
                        &config_map(&name),
                        "test",
                    )
                    .await
                else {
                    return;
                };
                let uid = object["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let version = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|version| version.parse().ok())
                    .unwrap_or_default();
                acknowledged
                    .lock()
                    .expect("the list")
                    .push((name, uid, version));
            }
        })
    };
    wait_for("some writes", || {
        acknowledged.lock().expect("the list").len() >= 20
    })
    .await;
    process.kill();
    writer.abort();
    let acknowledged = acknowledged.lock().expect("the list").clone();
    let newest = acknowledged.iter().map(|(_, _, version)| *version).max();

    let process = Process::start(&dir.path().join("two"), &state, &objects);
    let cluster = client(&process.kubeconfig()).await;
    for (name, uid, _) in &acknowledged {
        let object = cluster
            .get(config_maps, name, Some("staging"))
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{name} was acknowledged and is lost"));
        assert_eq!(object["metadata"]["uid"], uid.as_str());
    }
    let next = cluster
        .apply_as(
            config_maps,
            "after",
            Some("staging"),
            &config_map("after"),
            "test",
        )
        .await
        .expect("a write after the restart");
    let version: u64 = next["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|version| version.parse().ok())
        .expect("a version");
    assert!(
        Some(version) > newest,
        "{version} after {newest:?}: versions never go back"
    );
}
