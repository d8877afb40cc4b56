//! The sandbox cluster driven through kube-rs, the client `runbook`'s own `kube.*` actions use:
//! a kube `Client` built from the kubeconfig the sandbox writes, typed `Api<Pod>`s and
//! `Api<DynamicObject>`s. Scenarios set up a state, act, and look at the end state; waits
//! poll for a state (with a generous limit that only guards against hanging), never for a
//! duration.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use sandbox_cluster::{Faults, Sandbox, SandboxOptions};
use serde_json::{Value, json};

/// A sandbox for one test, and a client for it.
struct Harness {
    sandbox: Sandbox,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Harness::with_faults(Faults {
            seed: Some(7),
            ..Faults::default()
        })
        .await
    }

    async fn with_faults(faults: Faults) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SandboxOptions {
            dir: dir.path().to_path_buf(),
            port: 0,
            objects: None,
            state_file: None,
            save: None,
            faults,
        };
        let sandbox = Sandbox::start(options).await.expect("start the sandbox");
        let kubeconfig = Kubeconfig::read_from(sandbox.kubeconfig()).expect("read the kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config from the kubeconfig");
        let client = Client::try_from(config).expect("client");
        Harness {
            sandbox,
            client,
            _dir: dir,
        }
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.sandbox.request_log())
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// Polls `probe` until it returns `Some`; fails the test if that takes absurdly long (a hang
/// guard, not a timing assertion).
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

fn typed<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid manifest")
}

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, data: Value) -> ConfigMap {
    typed(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
}

fn hub_volume(policy: &str) -> PersistentVolume {
    typed(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "hub-home-nfs"},
        "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": policy,
                 "nfs": {"server": "10.0.0.7", "path": "/homes/hub"}}
    }))
}

fn hub_claim() -> PersistentVolumeClaim {
    typed(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "home-nfs"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "hub-home-nfs",
                 "resources": {"requests": {"storage": "1Mi"}}}
    }))
}

fn user_pod(name: &str) -> Pod {
    typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"component": "singleuser-server"}},
        "spec": {"containers": [{"name": "notebook", "image": "jupyter/base-notebook:2024"}],
                 "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}]}
    }))
}

/// A hub's volume, its claim bound to it, and a user pod mounting the claim.
async fn hub(harness: &Harness, policy: &str) {
    let post = PostParams::default();
    harness
        .volumes()
        .create(&post, &hub_volume(policy))
        .await
        .expect("create the volume");
    harness
        .api::<PersistentVolumeClaim>("default")
        .create(&post, &hub_claim())
        .await
        .expect("create the claim");
    harness
        .api::<Pod>("default")
        .create(&post, &user_pod("jupyter-alice"))
        .await
        .expect("create the pod");
    let claims = harness.api::<PersistentVolumeClaim>("default");
    eventually("the claim to bind", || async {
        let claim = claims.get("home-nfs").await.ok()?;
        (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn get_opt_on_a_missing_object_is_none() {
    let harness = Harness::start().await;
    let pods = harness.api::<Pod>("default");
    assert!(pods.get_opt("nobody").await.expect("get_opt").is_none());
    let status = api_error(pods.get("nobody").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (404, "NotFound", "pods \"nobody\" not found")
    );
    // A missing namespace is named when creating in it.
    let nowhere = harness.api::<ConfigMap>("nowhere");
    let status = api_error(
        nowhere
            .create(&PostParams::default(), &config_map("c", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn stale_writes_and_duplicates_conflict() {
    let harness = Harness::start().await;
    let maps = harness.api::<ConfigMap>("default");
    let post = PostParams::default();
    let created = maps
        .create(&post, &config_map("settings", json!({"hub": "a"})))
        .await
        .expect("create");
    let status = api_error(
        maps.create(&post, &config_map("settings", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    let mut first = created.clone();
    first.data = Some([("hub".to_string(), "b".to_string())].into());
    let replaced = maps
        .replace("settings", &post, &first)
        .await
        .expect("replace with the current version");
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let mut stale = created;
    stale.data = Some([("hub".to_string(), "c".to_string())].into());
    let status = api_error(maps.replace("settings", &post, &stale).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    assert_eq!(
        maps.get("settings").await.expect("get").data.expect("data")["hub"],
        "b"
    );
}

#[tokio::test]
async fn a_watch_sees_added_modified_and_deleted() {
    let harness = Harness::start().await;
    let maps = harness.api::<ConfigMap>("default");
    let version = maps
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list version");
    let mut events = maps
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    let post = PostParams::default();
    maps.create(&post, &config_map("watched", json!({"a": "1"})))
        .await
        .expect("create");
    maps.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .expect("patch");
    maps.delete("watched", &DeleteParams::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(60), events.try_next())
            .await
            .expect("an event in time")
            .expect("a watch event")
            .expect("the stream goes on");
        match event {
            WatchEvent::Added(map) => {
                seen.push(("ADDED", map.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Modified(map) => {
                seen.push(("MODIFIED", map.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Deleted(map) => {
                seen.push(("DELETED", map.data.unwrap_or_default().get("a").cloned()))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(error) => panic!("watch error: {error:?}"),
        }
    }
    let expected = [
        ("ADDED", Some("1".to_string())),
        ("MODIFIED", Some("2".to_string())),
        ("DELETED", Some("2".to_string())),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_deployment_replaces_its_deleted_pods() {
    let harness = Harness::start().await;
    let deployments = harness.api::<Deployment>("default");
    let deployment: Deployment = typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shared-dirsize-metrics"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "metrics"}},
                 "template": {"metadata": {"labels": {"app": "metrics"}}, "spec": {"containers": [{"name": "m", "image": "metrics:1"}]}}}
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create");
    let pods = harness.api::<Pod>("default");
    let selector = ListParams::default().labels("app=metrics");
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| pod.metadata.name)
            .collect()
    };
    let first = eventually("two pods", || async {
        Some(names(pods.list(&selector).await.ok()?)).filter(|names| names.len() == 2)
    })
    .await;
    let pod = pods.get(&first[0]).await.expect("get a pod");
    let owner = &pod.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!(owner.kind, "ReplicaSet");
    let hash = pod.metadata.labels.as_ref().expect("labels")["pod-template-hash"].clone();
    assert_eq!(owner.name, format!("shared-dirsize-metrics-{hash}"));
    assert!(first[0].starts_with(&format!("{}-", owner.name)));
    pods.delete(&first[0], &DeleteParams::default())
        .await
        .expect("delete a pod");
    let replaced = eventually("a replacement pod", || async {
        let current = names(pods.list(&selector).await.ok()?);
        (current.len() == 2 && !current.contains(&first[0])).then_some(current)
    })
    .await;
    assert!(replaced.contains(&first[1]));
    let ready = eventually("the deployment's status", || async {
        let status = deployments
            .get("shared-dirsize-metrics")
            .await
            .ok()?
            .status?;
        (status.ready_replicas == Some(2) && status.available_replicas == Some(2)).then_some(status)
    })
    .await;
    assert_eq!(ready.replicas, Some(2));
}

#[tokio::test]
async fn protection_keeps_the_volume_and_claim_until_the_pod_is_gone() {
    let harness = Harness::start().await;
    hub(&harness, "Retain").await;
    let volumes = harness.volumes();
    let claims = harness.api::<PersistentVolumeClaim>("default");
    let pods = harness.api::<Pod>("default");
    let volume = volumes.get("hub-home-nfs").await.expect("the volume");
    assert_eq!(
        volume.metadata.finalizers.as_deref(),
        Some(&["kubernetes.io/pv-protection".to_string()][..])
    );
    assert_eq!(
        volume
            .spec
            .expect("spec")
            .claim_ref
            .expect("a claimRef")
            .name
            .as_deref(),
        Some("home-nfs")
    );

    // The order the NFS procedure must follow: the volume and the claim stay while used.
    volumes
        .delete("hub-home-nfs", &DeleteParams::default())
        .await
        .expect("delete the volume");
    claims
        .delete("home-nfs", &DeleteParams::default())
        .await
        .expect("delete the claim");
    let claim = claims
        .get("home-nfs")
        .await
        .expect("the claim stays while the pod uses it");
    assert!(claim.metadata.deletion_timestamp.is_some());
    assert_eq!(
        claim.metadata.finalizers.as_deref(),
        Some(&["kubernetes.io/pvc-protection".to_string()][..])
    );
    let volume = volumes
        .get("hub-home-nfs")
        .await
        .expect("the volume stays while bound");
    assert!(volume.metadata.deletion_timestamp.is_some());

    pods.delete("jupyter-alice", &DeleteParams::default())
        .await
        .expect("delete the pod");
    eventually("the pod, the claim and the volume to go", || async {
        let pod = pods.get_opt("jupyter-alice").await.ok()?;
        let claim = claims.get_opt("home-nfs").await.ok()?;
        let volume = volumes.get_opt("hub-home-nfs").await.ok()?;
        (pod.is_none() && claim.is_none() && volume.is_none()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_retained_volume_is_released_and_keeps_its_claim_ref() {
    let harness = Harness::start().await;
    hub(&harness, "Retain").await;
    let pods = harness.api::<Pod>("default");
    let claims = harness.api::<PersistentVolumeClaim>("default");
    pods.delete("jupyter-alice", &DeleteParams::default())
        .await
        .expect("delete the pod");
    claims
        .delete("home-nfs", &DeleteParams::default())
        .await
        .expect("delete the claim");
    let volumes = harness.volumes();
    let volume = eventually("the volume to be released", || async {
        let volume = volumes.get("hub-home-nfs").await.ok()?;
        (volume.status.as_ref()?.phase.as_deref() == Some("Released")).then_some(volume)
    })
    .await;
    assert_eq!(
        volume
            .spec
            .expect("spec")
            .claim_ref
            .expect("the claimRef is kept")
            .name
            .as_deref(),
        Some("home-nfs")
    );
    // A new claim of the same name does not bind to it: the claimRef names the old uid.
    claims
        .create(&PostParams::default(), &hub_claim())
        .await
        .expect("create a new claim");
    let claim = claims.get("home-nfs").await.expect("the new claim");
    assert_eq!(
        claim.status.and_then(|status| status.phase).as_deref(),
        Some("Pending")
    );
    // The volume source is immutable, as on a real cluster.
    let patch = Patch::Merge(json!({"spec": {"nfs": {"server": "10.0.0.8"}}}));
    let status = api_error(
        volumes
            .patch("hub-home-nfs", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "PersistentVolume \"hub-home-nfs\" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"
    );
}

#[tokio::test]
async fn dry_runs_store_nothing() {
    let harness = Harness::start().await;
    let maps = harness.api::<ConfigMap>("default");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = maps
        .create(&dry, &config_map("ghost", json!({"a": "1"})))
        .await
        .expect("a dry-run create");
    assert_eq!(answered.metadata.name.as_deref(), Some("ghost"));
    assert!(maps.get_opt("ghost").await.expect("get_opt").is_none());
    maps.create(
        &PostParams::default(),
        &config_map("real", json!({"a": "1"})),
    )
    .await
    .expect("create");
    let patch = Patch::Merge(json!({"data": {"a": "2"}}));
    let patched = maps
        .patch("real", &PatchParams::default().dry_run(), &patch)
        .await
        .expect("a dry-run patch");
    assert_eq!(patched.data.expect("data")["a"], "2");
    let delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    maps.delete("real", &delete)
        .await
        .expect("a dry-run delete");
    assert_eq!(
        maps.get("real")
            .await
            .expect("still there")
            .data
            .expect("data")["a"],
        "1"
    );
    let writes: Vec<Value> = harness
        .requests()
        .into_iter()
        .filter(|request| request["method"] != "GET")
        .collect();
    assert_eq!(
        writes
            .iter()
            .filter(|request| request["dry_run"] == true)
            .count(),
        3,
        "{writes:?}"
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let harness = Harness::start().await;
    let maps = harness.api::<ConfigMap>("default");
    let apply = PatchParams::apply("runbook");
    let first = Patch::Apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1", "b": "2"}}),
    );
    maps.patch("applied", &apply, &first)
        .await
        .expect("apply creates");
    let second = Patch::Apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "3"}}),
    );
    let merged = maps
        .patch("applied", &apply, &second)
        .await
        .expect("apply merges");
    assert_eq!(
        merged.data.expect("data"),
        [("a".to_string(), "3".to_string())].into()
    );
    let other = PatchParams::apply("someone-else");
    let status = api_error(maps.patch("applied", &other, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "4"}}))).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let forced = maps.patch("applied", &other.force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "4"}}))).await.expect("forced");
    assert_eq!(forced.data.expect("data")["a"], "4");
}

#[tokio::test]
async fn every_request_fails_with_an_error_rate_of_one() {
    let harness = Harness::with_faults(Faults {
        error_rate: 1.0,
        seed: Some(1),
        ..Faults::default()
    })
    .await;
    let maps = harness.api::<ConfigMap>("default");
    let status = api_error(maps.get("anything").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str(), status.status),
        (
            500,
            "InternalError",
            Some(kube::core::response::StatusSummary::Failure)
        )
    );
    let status = api_error(
        maps.create(&PostParams::default(), &config_map("c", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 500);
    let requests = harness.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|request| request["status"] == 500 && request["fault"] == "error"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn conflicts_and_dropped_connections_are_injected() {
    let harness = Harness::with_faults(Faults {
        conflict_rate: 1.0,
        seed: Some(1),
        ..Faults::default()
    })
    .await;
    let maps = harness.api::<ConfigMap>("default");
    assert!(
        maps.get_opt("anything")
            .await
            .expect("reads are not conflicts")
            .is_none()
    );
    let status = api_error(
        maps.create(&PostParams::default(), &config_map("c", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let dropping = Harness::with_faults(Faults {
        drop_rate: 1.0,
        seed: Some(1),
        ..Faults::default()
    })
    .await;
    let error = dropping
        .api::<ConfigMap>("default")
        .get("anything")
        .await
        .unwrap_err();
    assert!(
        !matches!(error, kube::Error::Api(_)),
        "a dropped connection gets no answer: {error:?}"
    );
    assert!(
        dropping
            .requests()
            .iter()
            .all(|request| request["status"] == 0 && request["fault"] == "drop")
    );
}
