//! Scenarios for the controllers: build a state, reconcile, look at the end state.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::reconcile;
use crate::cluster::{Cluster, WriteOptions};
use crate::delete::{DeleteOptions, Propagation};
use crate::meta;
use crate::update::{PatchBody, Subresource};
use kube_kinds::find_kind;

struct Scenario {
    cluster: Cluster,
    now: Timestamp,
}

impl Scenario {
    fn new() -> Self {
        Scenario {
            cluster: Cluster::new(3),
            now: Timestamp::now(),
        }
    }

    fn create(&self, kind: &str, body: Value) -> &Self {
        let kind = find_kind(kind).unwrap();
        let options = WriteOptions {
            field_manager: "test".into(),
            ..WriteOptions::default()
        };
        let namespace = meta::namespace(&body).to_string();
        self.cluster
            .write(|state| state.create(kind, &namespace, body, &options))
            .unwrap();
        self.settle()
    }

    fn delete(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        propagation: Option<Propagation>,
    ) -> &Self {
        let kind = find_kind(kind).unwrap();
        let options = DeleteOptions {
            propagation,
            ..DeleteOptions::default()
        };
        self.cluster
            .write(|state| state.delete(kind, namespace, name, &options, false))
            .unwrap();
        self.settle()
    }

    fn settle(&self) -> &Self {
        self.cluster.write(|state| reconcile(state, self.now));
        self
    }

    /// Lets pods' grace periods run out.
    fn later(&mut self) -> &Self {
        self.now += SignedDuration::from_secs(5);
        self.settle()
    }

    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = find_kind(kind).unwrap();
        self.cluster
            .read(|state| state.get(kind, namespace, name))
            .ok()
    }

    fn names(&self, kind: &str, namespace: &str) -> Vec<String> {
        let kind = find_kind(kind).unwrap();
        self.cluster.read(|state| {
            state
                .store
                .list(kind, Some(namespace))
                .map(|object| meta::name(object).to_string())
                .collect()
        })
    }
}

fn hub() -> Scenario {
    let scenario = Scenario::new();
    scenario
        .create("Namespace", json!({"metadata": {"name": "hub"}}))
        .create("PersistentVolume", json!({"metadata": {"name": "hub-home-nfs"}, "spec": {
            "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": "10.0.0.5", "path": "/homes/hub"}}}))
        .create("PersistentVolumeClaim", json!({"metadata": {"name": "home-nfs", "namespace": "hub"}, "spec": {
            "accessModes": ["ReadWriteMany"], "volumeName": "hub-home-nfs", "storageClassName": "",
            "resources": {"requests": {"storage": "1Mi"}}}}))
        .create("Pod", json!({"metadata": {"name": "jupyter-alice", "namespace": "hub", "labels": {"component": "singleuser-server"}}, "spec": {
            "containers": [{"name": "notebook", "image": "jupyter/base:1", "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}]}}));
    scenario
}

fn phase(object: &Option<Value>) -> String {
    object
        .as_ref()
        .and_then(|object| meta::str_at(object, &["status", "phase"]))
        .unwrap_or("gone")
        .to_string()
}

#[test]
fn a_claim_binds_to_the_volume_it_names() {
    let scenario = hub();
    let volume = scenario.get("pv", "", "hub-home-nfs");
    let claim = scenario.get("pvc", "hub", "home-nfs");
    assert_eq!(phase(&volume), "Bound");
    assert_eq!(phase(&claim), "Bound");
    let volume = volume.unwrap();
    let claim = claim.unwrap();
    assert_eq!(volume["spec"]["claimRef"]["name"], "home-nfs");
    assert_eq!(volume["spec"]["claimRef"]["uid"], claim["metadata"]["uid"]);
    assert_eq!(claim["status"]["capacity"]["storage"], "1Mi");
    assert_eq!(meta::finalizers(&volume), ["kubernetes.io/pv-protection"]);
    assert_eq!(meta::finalizers(&claim), ["kubernetes.io/pvc-protection"]);
}

#[test]
fn protection_holds_the_volume_and_claim_until_the_pod_is_gone() {
    let mut scenario = hub();
    scenario.delete("pv", "", "hub-home-nfs", None);
    scenario.delete("pvc", "hub", "home-nfs", None);
    let claim = scenario
        .get("pvc", "hub", "home-nfs")
        .expect("the claim is in use");
    assert!(meta::is_deleting(&claim));
    let volume = scenario
        .get("pv", "", "hub-home-nfs")
        .expect("the volume is bound");
    assert!(meta::is_deleting(&volume));
    scenario.delete("Pod", "hub", "jupyter-alice", None);
    assert!(
        scenario.get("Pod", "hub", "jupyter-alice").is_some(),
        "the pod terminates for its grace period"
    );
    scenario.later();
    assert!(scenario.get("Pod", "hub", "jupyter-alice").is_none());
    assert!(scenario.get("pvc", "hub", "home-nfs").is_none());
    assert!(scenario.get("pv", "", "hub-home-nfs").is_none());
}

#[test]
fn a_retained_volume_is_released_and_does_not_bind_again() {
    let mut scenario = hub();
    scenario.delete("Pod", "hub", "jupyter-alice", None);
    scenario.later();
    scenario.delete("pvc", "hub", "home-nfs", None);
    let volume = scenario.get("pv", "", "hub-home-nfs");
    assert_eq!(phase(&volume), "Released");
    assert_eq!(volume.unwrap()["spec"]["claimRef"]["name"], "home-nfs");
    scenario.create(
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "home-nfs", "namespace": "hub"}, "spec": {
        "accessModes": ["ReadWriteMany"], "volumeName": "hub-home-nfs", "storageClassName": "",
        "resources": {"requests": {"storage": "1Mi"}}}}),
    );
    assert_eq!(phase(&scenario.get("pvc", "hub", "home-nfs")), "Pending");
    let kind = find_kind("pv").unwrap();
    let options = WriteOptions {
        field_manager: "test".into(),
        ..WriteOptions::default()
    };
    scenario
        .cluster
        .write(|state| {
            state.patch(
                kind,
                "",
                "hub-home-nfs",
                &PatchBody {
                    patch_type: crate::patch::PatchType::Merge,
                    body: &json!({"spec": {"claimRef": null}}),
                },
                crate::update::Subresource::Main,
                &options,
            )
        })
        .unwrap();
    scenario.settle();
    assert_eq!(phase(&scenario.get("pvc", "hub", "home-nfs")), "Bound");
}

#[test]
fn a_volume_with_the_delete_policy_goes_with_its_claim() {
    let mut scenario = Scenario::new();
    scenario
        .create("PersistentVolume", json!({"metadata": {"name": "scratch"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": "/tmp/scratch"}}}))
        .create("PersistentVolumeClaim", json!({"metadata": {"name": "scratch", "namespace": "default"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "500Mi"}}}}));
    let claim = scenario.get("pvc", "default", "scratch").unwrap();
    assert_eq!(
        claim["spec"]["volumeName"], "scratch",
        "a matching volume is chosen"
    );
    scenario.delete("pvc", "default", "scratch", None);
    scenario.later();
    assert!(scenario.get("pv", "", "scratch").is_none());
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shared-volume-metrics", "namespace": "default"}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "metrics"}},
        "template": {"metadata": {"labels": {"app": "metrics"}}, "spec": {"containers": [{"name": "m", "image": image}]}}}})
}

#[test]
fn deployments_keep_their_pods() {
    let mut scenario = Scenario::new();
    scenario.create("Deployment", deployment(2, "metrics:1"));
    let sets = scenario.names("ReplicaSet", "default");
    assert_eq!(sets.len(), 1);
    assert!(sets[0].starts_with("shared-volume-metrics-"));
    let pods = scenario.names("Pod", "default");
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|pod| pod.starts_with(&format!("{}-", sets[0])) && pod.len() == sets[0].len() + 6)
    );
    let pod = scenario.get("Pod", "default", &pods[0]).unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["pod-template-hash"],
        sets[0].rsplit('-').next().unwrap()
    );
    let status = scenario
        .get("Deployment", "default", "shared-volume-metrics")
        .unwrap()["status"]
        .clone();
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64(),
            status["availableReplicas"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
    scenario.delete("Pod", "default", &pods[0], Some(Propagation::Background));
    scenario.later();
    let replaced = scenario.names("Pod", "default");
    assert_eq!(replaced.len(), 2);
    assert!(!replaced.contains(&pods[0]));
}

#[test]
fn deleting_a_deployment_collects_its_replica_sets_and_pods() {
    let mut scenario = Scenario::new();
    scenario.create("Deployment", deployment(1, "metrics:1"));
    scenario.delete("Deployment", "default", "shared-volume-metrics", None);
    scenario.later();
    assert!(scenario.names("ReplicaSet", "default").is_empty());
    assert!(scenario.names("Pod", "default").is_empty());

    scenario.create("Deployment", deployment(1, "metrics:1"));
    scenario.delete(
        "Deployment",
        "default",
        "shared-volume-metrics",
        Some(Propagation::Orphan),
    );
    scenario.later();
    assert!(
        scenario
            .get("Deployment", "default", "shared-volume-metrics")
            .is_none()
    );
    let sets = scenario.names("ReplicaSet", "default");
    assert_eq!(sets.len(), 1, "orphaned replica sets stay");
    assert!(
        scenario.get("ReplicaSet", "default", &sets[0]).unwrap()["metadata"]
            .get("ownerReferences")
            .is_none()
    );
}

#[test]
fn foreground_deletion_waits_for_the_dependents() {
    let mut scenario = Scenario::new();
    scenario.create("Deployment", deployment(1, "metrics:1"));
    scenario.delete(
        "Deployment",
        "default",
        "shared-volume-metrics",
        Some(Propagation::Foreground),
    );
    let held = scenario.get("Deployment", "default", "shared-volume-metrics");
    assert!(held.is_some_and(|deployment| meta::has_finalizer(&deployment, "foregroundDeletion")));
    scenario.later();
    assert!(
        scenario
            .get("Deployment", "default", "shared-volume-metrics")
            .is_none()
    );
    assert!(scenario.names("Pod", "default").is_empty());
}

#[test]
fn a_new_template_gets_a_new_replica_set() {
    let scenario = Scenario::new();
    scenario.create("Deployment", deployment(1, "metrics:1"));
    let kind = find_kind("Deployment").unwrap();
    let options = WriteOptions {
        field_manager: "test".into(),
        ..WriteOptions::default()
    };
    scenario
        .cluster
        .write(|state| {
            state.apply(
                kind,
                "default",
                "shared-volume-metrics",
                &deployment(1, "metrics:2"),
                &WriteOptions {
                    force: true,
                    ..options
                },
            )
        })
        .unwrap();
    scenario.settle();
    let sets = scenario.names("ReplicaSet", "default");
    assert_eq!(sets.len(), 2);
    let replicas: Vec<i64> = sets
        .iter()
        .map(|name| {
            scenario.get("ReplicaSet", "default", name).unwrap()["spec"]["replicas"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(replicas.iter().sum::<i64>(), 1);
}

#[test]
fn deleting_a_namespace_deletes_its_contents() {
    let mut scenario = hub();
    scenario.create(
        "ConfigMap",
        json!({"metadata": {"name": "c", "namespace": "hub"}}),
    );
    scenario.delete("Namespace", "", "hub", None);
    assert_eq!(phase(&scenario.get("Namespace", "", "hub")), "Terminating");
    scenario.later();
    assert!(scenario.get("Namespace", "", "hub").is_none());
    assert!(scenario.get("pvc", "hub", "home-nfs").is_none());
    assert_eq!(phase(&scenario.get("pv", "", "hub-home-nfs")), "Released");
}

fn user_pod(name: &str, lifetime: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "hub",
        "labels": {"component": "singleuser-server"},
        "annotations": {super::LIFETIME_ANNOTATION: lifetime}},
        "spec": {"containers": [{"name": "notebook", "image": "jupyter/base:1"}],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}]}})
}

#[test]
fn a_pod_with_a_lifetime_goes_once_it_has_lived_it() {
    let mut scenario = hub();
    scenario.create("Pod", user_pod("jupyter-bob", "8s"));
    let created =
        scenario.get("Pod", "hub", "jupyter-bob").unwrap()["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(meta::parse_time)
            .unwrap();
    let wake = scenario
        .cluster
        .write(|state| reconcile(state, scenario.now))
        .unwrap();
    assert_eq!(
        wake,
        created + SignedDuration::from_secs(8),
        "the loop wakes up for it"
    );
    assert!(!meta::is_deleting(
        &scenario.get("Pod", "hub", "jupyter-bob").unwrap()
    ));
    scenario.now = created + SignedDuration::from_secs(8);
    scenario.settle();
    let pod = scenario.get("Pod", "hub", "jupyter-bob");
    assert!(
        pod.as_ref().is_none_or(meta::is_deleting),
        "deleted when its lifetime is over"
    );
    scenario.later();
    assert!(scenario.get("Pod", "hub", "jupyter-bob").is_none());
    assert!(
        scenario.get("Pod", "hub", "jupyter-alice").is_some(),
        "a pod without the annotation stays"
    );
}

#[test]
fn a_lifetime_that_is_not_a_duration_is_refused() {
    let scenario = hub();
    let kind = find_kind("Pod").unwrap();
    let options = WriteOptions {
        field_manager: "test".into(),
        ..WriteOptions::default()
    };
    let error = scenario
        .cluster
        .write(|state| state.create(kind, "hub", user_pod("jupyter-bob", "soon"), &options))
        .unwrap_err();
    assert_eq!(error.code, 422);
    assert!(
        error.message.contains(
            "metadata.annotations[sandbox.runbook.dev/lifetime]: Invalid value: \"soon\""
        ),
        "{}",
        error.message
    );
}

fn scheduled(pod: &Value) -> Option<&str> {
    meta::str_at(pod, &["spec", "nodeName"]).filter(|node| !node.is_empty())
}

#[test]
fn pods_whose_claim_is_going_wait_unscheduled_and_do_not_hold_it() {
    let mut scenario = hub();
    let mut metrics = deployment(1, "metrics:1");
    metrics["metadata"]["namespace"] = json!("hub");
    metrics["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}]);
    scenario.create("Deployment", metrics);
    scenario.delete("pvc", "hub", "home-nfs", None);
    scenario.delete("Pod", "hub", "jupyter-alice", None);
    let first = scenario
        .names("Pod", "hub")
        .into_iter()
        .find(|name| name.starts_with("shared-volume-metrics-"))
        .unwrap();
    scenario.delete("Pod", "hub", &first, None);
    let replacement = scenario
        .names("Pod", "hub")
        .into_iter()
        .find(|name| name.starts_with("shared-volume-metrics-") && *name != first)
        .expect("the ReplicaSet replaces its pod at once");
    let pod = scenario.get("Pod", "hub", &replacement).unwrap();
    assert_eq!(phase(&Some(pod.clone())), "Pending");
    assert_eq!(scheduled(&pod), None);
    assert_eq!(
        pod["status"]["conditions"][0]["message"],
        "0/1 nodes are available: persistentvolumeclaim \"home-nfs\" is being deleted. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    scenario.later();
    assert!(
        scenario.get("pvc", "hub", "home-nfs").is_none(),
        "an unscheduled pod does not hold the claim"
    );
    assert_eq!(phase(&scenario.get("pv", "", "hub-home-nfs")), "Released");
    let pod = scenario.get("Pod", "hub", &replacement).unwrap();
    assert!(
        pod["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("persistentvolumeclaim \"home-nfs\" not found"),
        "{pod}"
    );
    // A new volume and claim, as a deploy creates them: the pod is scheduled and runs.
    scenario.delete("pv", "", "hub-home-nfs", None);
    assert!(scenario.get("pv", "", "hub-home-nfs").is_none());
    scenario
        .create(
            "PersistentVolume",
            json!({"metadata": {"name": "hub-home-nfs"}, "spec": {
            "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": "10.0.0.9", "path": "/homes/hub"}}}),
        )
        .create(
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "home-nfs", "namespace": "hub"}, "spec": {
            "accessModes": ["ReadWriteMany"], "volumeName": "hub-home-nfs", "storageClassName": "",
            "resources": {"requests": {"storage": "1Mi"}}}}),
        );
    let pod = scenario.get("Pod", "hub", &replacement).unwrap();
    assert_eq!(phase(&Some(pod.clone())), "Running");
    assert_eq!(scheduled(&pod), Some("sandbox-node"));
    let ips: std::collections::BTreeSet<String> = scenario
        .names("Pod", "hub")
        .iter()
        .filter_map(|name| scenario.get("Pod", "hub", name))
        .filter_map(|pod| meta::str_at(&pod, &["status", "podIP"]).map(str::to_string))
        .collect();
    assert_eq!(ips.len(), scenario.names("Pod", "hub").len());
}

fn indexed_job(completions: i64, parallelism: i64, backoff_limit: i64) -> Value {
    json!({"metadata": {"name": "copy", "namespace": "default"}, "spec": {
        "completionMode": "Indexed", "completions": completions, "parallelism": parallelism,
        "backoffLimit": backoff_limit,
        "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "worker", "image": "busybox:1.36", "command": ["true"]}]}}}})
}

impl Scenario {
    /// The job's pods, running or not, as (index, phase, deleting), by index.
    fn job_pods(&self) -> Vec<Value> {
        let pods = find_kind("Pod").unwrap();
        self.cluster.read(|state| {
            state
                .store
                .list(pods, Some("default"))
                .filter(|pod| meta::name(pod).starts_with("copy-"))
                .cloned()
                .collect()
        })
    }

    /// Ends the live pod of `index` as its container would, with `exit_code`.
    fn end(&self, index: i64, exit_code: i32) -> &Self {
        let pod = self
            .job_pods()
            .into_iter()
            .find(|pod| {
                super::completion_index(pod) == Some(index)
                    && meta::str_at(pod, &["status", "phase"]) == Some("Running")
                    && !meta::is_deleting(pod)
            })
            .expect("a running pod for the index");
        let run = crate::kubelet::container_run(&pod, std::path::Path::new("/dir"))
            .expect("a Job pod runs");
        let ended = crate::kubelet::Termination {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
        };
        self.cluster
            .write(|state| crate::kubelet::record_end(state, &run.target, &run.uid, &ended));
        self.settle()
    }

    fn running_indexes(&self) -> Vec<i64> {
        let mut indexes: Vec<i64> = self
            .job_pods()
            .iter()
            .filter(|pod| {
                meta::str_at(pod, &["status", "phase"]) == Some("Running")
                    && !meta::is_deleting(pod)
            })
            .filter_map(super::completion_index)
            .collect();
        indexes.sort_unstable();
        indexes
    }
}

fn conditions(job: &Value) -> Vec<String> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|condition| condition["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_indexed_job_runs_parallelism_pods_until_every_index_succeeded() {
    let scenario = Scenario::new();
    scenario.create("Job", indexed_job(3, 2, 6));
    assert_eq!(scenario.running_indexes(), [0, 1]);
    let pod = &scenario.job_pods()[0];
    let name = meta::name(pod);
    let index = super::completion_index(pod).unwrap();
    assert!(name.starts_with(&format!("copy-{index}-")) && name.len() == "copy-0-".len() + 5);
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "copy"
    );
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
        index.to_string()
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(meta::finalizers(pod), [super::TRACKING_FINALIZER]);
    assert_eq!(pod["spec"]["hostname"], format!("copy-{index}"));
    assert_eq!(
        pod["spec"]["containers"][0]["env"][0]["name"],
        "JOB_COMPLETION_INDEX"
    );
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["active"], 2);

    scenario.end(0, 0);
    assert_eq!(scenario.running_indexes(), [1, 2]);
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0");
    assert_eq!(job["status"]["succeeded"], 1);
    scenario.end(2, 0).end(1, 0);
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    assert!(job["status"].get("active").is_none());
    assert_eq!(conditions(&job), ["SuccessCriteriaMet", "Complete"]);
    assert!(job["status"]["completionTime"].is_string());
    assert!(
        scenario
            .job_pods()
            .iter()
            .all(|pod| meta::finalizers(pod).is_empty()),
        "counted pods are let go"
    );
}

#[test]
fn a_failing_index_is_retried_until_the_backoff_limit() {
    let mut scenario = Scenario::new();
    scenario.create("Job", indexed_job(2, 2, 1));
    scenario.end(0, 0).end(1, 3);
    assert_eq!(
        scenario.running_indexes(),
        [1],
        "the failed index gets a new pod"
    );
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["failed"], 1);
    assert!(conditions(&job).is_empty());
    scenario.end(1, 3);
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["failed"], 2);
    assert_eq!(conditions(&job), ["FailureTarget", "Failed"]);
    assert_eq!(
        job["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    assert!(scenario.running_indexes().is_empty());
    scenario.later();
    assert_eq!(
        scenario.job_pods().len(),
        3,
        "ended pods stay, as in a cluster"
    );
}

#[test]
fn a_deleted_running_pod_counts_as_failed_and_is_replaced() {
    let mut scenario = Scenario::new();
    scenario.create("Job", indexed_job(1, 1, 6));
    let first = meta::name(&scenario.job_pods()[0]).to_string();
    scenario.delete("Pod", "default", &first, None);
    let job = scenario.get("Job", "default", "copy").unwrap();
    assert_eq!(job["status"]["failed"], 1);
    assert_eq!(job["status"]["terminating"], 1);
    assert_eq!(scenario.running_indexes(), [0]);
    scenario.later();
    assert!(scenario.get("Pod", "default", &first).is_none());
}

#[test]
fn deleting_a_job_deletes_its_pods() {
    for propagation in [Propagation::Background, Propagation::Foreground] {
        let mut scenario = Scenario::new();
        scenario.create("Job", indexed_job(3, 3, 6));
        assert_eq!(scenario.job_pods().len(), 3);
        scenario.delete("Job", "default", "copy", Some(propagation));
        assert!(
            scenario.job_pods().iter().all(meta::is_deleting),
            "{propagation:?}"
        );
        scenario.later();
        scenario.later();
        assert!(scenario.job_pods().is_empty(), "{propagation:?}");
        assert!(scenario.get("Job", "default", "copy").is_none());
    }
}

fn stateful_set(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"}, "spec": {
        "replicas": replicas,
        "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image,
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Mi"}}}}]}})
}

impl Scenario {
    /// Volumes the claims of a StatefulSet's pods can bind to.
    fn with_volumes(&self, count: usize) -> &Self {
        for index in 0..count {
            self.create(
                "PersistentVolume",
                json!({"metadata": {"name": format!("disk-{index}")}, "spec": {
                "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": format!("/disks/{index}")}}}),
            );
        }
        self
    }

    fn set_replicas(&self, kind: &str, name: &str, replicas: i64) -> &Self {
        let kind = find_kind(kind).unwrap();
        let options = WriteOptions {
            field_manager: "test".into(),
            ..WriteOptions::default()
        };
        self.cluster
            .write(|state| {
                let mut object = state.get(kind, "default", name)?;
                object["spec"]["replicas"] = json!(replicas);
                state.replace(kind, "default", name, object, Subresource::Main, &options)
            })
            .unwrap();
        self.settle()
    }
}

#[test]
fn stateful_sets_keep_numbered_pods_with_their_claims() {
    let scenario = Scenario::new();
    scenario
        .with_volumes(3)
        .create("StatefulSet", stateful_set(3, "db:1"));
    assert_eq!(scenario.names("Pod", "default"), ["db-0", "db-1", "db-2"]);
    assert_eq!(
        scenario.names("PersistentVolumeClaim", "default"),
        ["data-db-0", "data-db-1", "data-db-2"]
    );
    let pod = scenario.get("Pod", "default", "db-1").unwrap();
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app"], "db");
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "db-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert!(
        labels["controller-revision-hash"]
            .as_str()
            .unwrap()
            .starts_with("db-")
    );
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("StatefulSet"), Some(true))
    );
    assert_eq!(pod["spec"]["hostname"], "db-1");
    assert_eq!(pod["spec"]["subdomain"], "db");
    assert_eq!(
        pod["spec"]["volumes"][0],
        json!({"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}})
    );
    assert_eq!(
        phase(&scenario.get("PersistentVolumeClaim", "default", "data-db-1")),
        "Bound"
    );
    let set = scenario.get("StatefulSet", "default", "db").unwrap();
    let status = &set["status"];
    for field in [
        "replicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ] {
        assert_eq!(status[field], 3, "{field}");
    }
    assert_eq!(status["observedGeneration"], set["metadata"]["generation"]);
    assert_eq!(
        status["currentRevision"],
        labels["controller-revision-hash"]
    );
    assert_eq!(set["spec"]["podManagementPolicy"], "OrderedReady");
}

#[test]
fn ordered_pods_wait_for_the_lower_ordinals_to_be_ready() {
    let scenario = Scenario::new();
    // One volume: db-1's claim stays unbound, so db-1 never starts and db-2 never comes.
    scenario
        .with_volumes(1)
        .create("StatefulSet", stateful_set(3, "db:1"));
    assert_eq!(scenario.names("Pod", "default"), ["db-0", "db-1"]);
    let status = scenario.get("StatefulSet", "default", "db").unwrap()["status"].clone();
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64()
        ),
        (Some(2), Some(1))
    );

    let parallel = Scenario::new();
    let mut set = stateful_set(3, "db:1");
    set["spec"]["podManagementPolicy"] = json!("Parallel");
    parallel.with_volumes(1).create("StatefulSet", set);
    assert_eq!(parallel.names("Pod", "default"), ["db-0", "db-1", "db-2"]);
}

#[test]
fn scaling_down_removes_the_highest_ordinals_and_keeps_the_claims() {
    let mut scenario = Scenario::new();
    scenario
        .with_volumes(3)
        .create("StatefulSet", stateful_set(3, "db:1"));
    scenario.set_replicas("StatefulSet", "db", 1);
    let terminating: Vec<String> = scenario
        .names("Pod", "default")
        .into_iter()
        .filter(|name| meta::is_deleting(&scenario.get("Pod", "default", name).unwrap()))
        .collect();
    assert_eq!(terminating, ["db-2"], "one at a time, the highest first");
    scenario.later();
    scenario.later();
    assert_eq!(scenario.names("Pod", "default"), ["db-0"]);
    assert_eq!(
        scenario.names("PersistentVolumeClaim", "default"),
        ["data-db-0", "data-db-1", "data-db-2"]
    );
    let status = scenario.get("StatefulSet", "default", "db").unwrap()["status"].clone();
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["readyReplicas"].as_i64()
        ),
        (Some(1), Some(1))
    );

    scenario.set_replicas("StatefulSet", "db", 0);
    scenario.later();
    assert!(scenario.names("Pod", "default").is_empty());
    let status = scenario.get("StatefulSet", "default", "db").unwrap()["status"].clone();
    assert_eq!(status["replicas"], 0);
    assert_eq!(status["availableReplicas"], 0);
    assert!(status.get("readyReplicas").is_none());

    scenario.set_replicas("StatefulSet", "db", 2);
    assert_eq!(scenario.names("Pod", "default"), ["db-0", "db-1"]);
    assert_eq!(
        phase(&scenario.get("PersistentVolumeClaim", "default", "data-db-1")),
        "Bound"
    );
}

#[test]
fn a_new_template_replaces_the_pods_from_the_highest_ordinal() {
    let mut scenario = Scenario::new();
    scenario
        .with_volumes(2)
        .create("StatefulSet", stateful_set(2, "db:1"));
    let kind = find_kind("StatefulSet").unwrap();
    let options = WriteOptions {
        field_manager: "test".into(),
        force: true,
        ..WriteOptions::default()
    };
    scenario
        .cluster
        .write(|state| state.apply(kind, "default", "db", &stateful_set(2, "db:2"), &options))
        .unwrap();
    scenario.settle();
    assert!(meta::is_deleting(
        &scenario.get("Pod", "default", "db-1").unwrap()
    ));
    assert!(!meta::is_deleting(
        &scenario.get("Pod", "default", "db-0").unwrap()
    ));
    let status = scenario.get("StatefulSet", "default", "db").unwrap()["status"].clone();
    assert_ne!(status["currentRevision"], status["updateRevision"]);
    scenario.later();
    scenario.later();
    let images: Vec<Value> = ["db-0", "db-1"]
        .iter()
        .map(|name| {
            scenario.get("Pod", "default", name).unwrap()["spec"]["containers"][0]["image"].clone()
        })
        .collect();
    assert_eq!(images, ["db:2", "db:2"]);
    let status = scenario.get("StatefulSet", "default", "db").unwrap()["status"].clone();
    assert_eq!(status["currentRevision"], status["updateRevision"]);
    assert_eq!(
        (
            status["currentReplicas"].as_i64(),
            status["updatedReplicas"].as_i64()
        ),
        (Some(2), Some(2))
    );
}

#[test]
fn deleting_a_stateful_set_deletes_its_pods_and_keeps_its_claims() {
    let mut scenario = Scenario::new();
    scenario
        .with_volumes(2)
        .create("StatefulSet", stateful_set(2, "db:1"));
    scenario.delete("StatefulSet", "default", "db", None);
    scenario.later();
    assert!(scenario.names("Pod", "default").is_empty());
    assert_eq!(
        scenario.names("PersistentVolumeClaim", "default"),
        ["data-db-0", "data-db-1"]
    );
}

#[test]
fn a_stateful_set_may_not_change_its_claim_templates() {
    let scenario = Scenario::new();
    scenario.create("StatefulSet", stateful_set(1, "db:1"));
    let kind = find_kind("StatefulSet").unwrap();
    let mut changed = stateful_set(1, "db:1");
    changed["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!("2Mi");
    let options = WriteOptions {
        field_manager: "test".into(),
        force: true,
        ..WriteOptions::default()
    };
    let error = scenario
        .cluster
        .write(|state| state.apply(kind, "default", "db", &changed, &options))
        .unwrap_err();
    assert!(
        error.status()["message"]
            .as_str()
            .unwrap()
            .contains("updates to statefulset spec")
    );
}

#[test]
fn claims_go_with_their_set_or_their_pod_when_the_retention_policy_says_delete() {
    let mut scenario = Scenario::new();
    let mut set = stateful_set(2, "db:1");
    set["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Retain", "whenScaled": "Delete"});
    scenario.with_volumes(2).create("StatefulSet", set);
    scenario.set_replicas("StatefulSet", "db", 1);
    scenario.later();
    scenario.later();
    assert_eq!(scenario.names("Pod", "default"), ["db-0"]);
    assert_eq!(
        scenario.names("PersistentVolumeClaim", "default"),
        ["data-db-0"],
        "the claim of the ordinal scaled away went with its pod"
    );
    assert!(
        scenario
            .get("PersistentVolumeClaim", "default", "data-db-0")
            .unwrap()["metadata"]
            .get("ownerReferences")
            .is_none()
    );

    let mut scenario = Scenario::new();
    let mut set = stateful_set(2, "db:1");
    set["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
    scenario.with_volumes(2).create("StatefulSet", set);
    let claim = scenario
        .get("PersistentVolumeClaim", "default", "data-db-1")
        .unwrap();
    assert_eq!(
        claim["metadata"]["ownerReferences"][0]["kind"],
        "StatefulSet"
    );
    scenario.set_replicas("StatefulSet", "db", 1);
    scenario.later();
    scenario.later();
    assert_eq!(scenario.names("PersistentVolumeClaim", "default").len(), 2);
    scenario.delete("StatefulSet", "default", "db", None);
    scenario.later();
    scenario.later();
    assert!(scenario.names("Pod", "default").is_empty());
    assert!(
        scenario
            .names("PersistentVolumeClaim", "default")
            .is_empty()
    );
}
