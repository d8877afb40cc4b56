//! What the API server adds to objects on their way in: defaults (on every write, as the real
//! server defaults every decoded object), and on creation the parts that other components
//! would add at once in a real cluster (a pod's node and running status, a service's IP,
//! the protection finalizers of volumes and claims).
//!
//! Pods are scheduled and started on creation, unless the scheduler would refuse them: a
//! pod whose claim is missing, unbound or being deleted stays `Pending` without a node,
//! and the controllers schedule it once the claim is usable ([`why_unschedulable`]).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::identities::Identities;
use super::meta;
use super::store::{ObjectKey, Store};
use kube_kinds::{Kind, find_kind};

/// The node every sandbox pod runs on.
pub const NODE_NAME: &str = "sandbox-node";
/// The node's address, the pods' `hostIP`.
pub const NODE_IP: &str = "10.0.0.10";
/// The sandbox's one Node, where every pod runs: Ready, its capacity the machine's (its CPUs,
/// its memory), its kubelet the version discovery claims.
pub fn node(now: &str) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // `MemTotal:  16310412 kB` (kibibytes, which Kubernetes writes `Ki`).
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
        })
        .map_or_else(|| "0".to_string(), |kib| format!("{kib}Ki"));
    let resources = json!({"cpu": cpus.to_string(), "memory": memory, "pods": "110"});
    let ready = json!({
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    });
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [ready],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "nodeInfo": {
                "kubeletVersion": super::discovery::version()["gitVersion"],
                "kubeProxyVersion": "",
                "osImage": "runbook sandbox",
                "kernelVersion": "",
                "containerRuntimeVersion": "sandbox://1",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

fn set_default(map: &mut Map<String, Value>, field: &str, value: Value) {
    if map.get(field).is_none_or(Value::is_null) {
        map.insert(field.to_string(), value);
    }
}

fn object_at<'a>(object: &'a mut Value, pointer: &str) -> Option<&'a mut Map<String, Value>> {
    object.pointer_mut(pointer)?.as_object_mut()
}

/// Fills in the defaults the real server sets when fields are omitted.
pub fn apply_defaults(kind: &Kind, object: &mut Value) {
    match (kind.group, kind.kind) {
        ("", "Pod") => default_pod_spec(object, "/spec"),
        ("apps", "Deployment") => {
            if let Some(spec) = object_at(object, "/spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
            }
            default_pod_spec(object, "/spec/template/spec");
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = object_at(object, "/spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(templates) = spec
                    .get_mut("volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for template in templates {
                        if let Some(claim) = object_at(template, "/spec") {
                            set_default(claim, "volumeMode", json!("Filesystem"));
                        }
                    }
                }
            }
            default_pod_spec(object, "/spec/template/spec");
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(object, "/spec") {
                set_default(spec, "replicas", json!(1));
            }
            default_pod_spec(object, "/spec/template/spec");
        }
        ("batch", "Job") => {
            if let Some(spec) = object_at(object, "/spec") {
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "completions", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
            default_pod_spec(object, "/spec/template/spec");
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = object_at(object, "/spec") {
                // Manually created volumes default to Retain (dynamic ones get the class's).
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object_at(object, "/spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "Service") => default_service(object),
        ("", "Secret") => {
            if let Some(secret) = object.as_object_mut() {
                // An empty type (as protobuf clients send it) means Opaque too.
                if secret.get("type").and_then(Value::as_str) == Some("") {
                    secret.remove("type");
                }
                set_default(secret, "type", json!("Opaque"));
            }
            fold_string_data(object);
        }
        _ => {}
    }
}

fn default_pod_spec(object: &mut Value, pointer: &str) {
    let Some(spec) = object_at(object, pointer) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = container
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // The image's tag decides: untagged or `latest` images are always pulled.
            let last = image.rsplit('/').next().unwrap_or_default();
            let tag = last.split_once('@').map_or_else(
                || last.split_once(':').map(|(_, tag)| tag),
                |_| Some("digest"),
            );
            let policy = if matches!(tag, None | Some("latest")) {
                "Always"
            } else {
                "IfNotPresent"
            };
            set_default(container, "imagePullPolicy", json!(policy));
            set_default(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            set_default(container, "terminationMessagePolicy", json!("File"));
            set_default(container, "resources", json!({}));
            if let Some(Value::Array(ports)) = container.get_mut("ports") {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
    }
}

fn default_service(object: &mut Value) {
    let Some(spec) = object_at(object, "/spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                set_default(port, "targetPort", number);
            }
        }
    }
}

/// `stringData` is write-only: the server folds it into `data`, base64-encoded.
fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(strings)) = meta::remove_at(secret, &["stringData"]) else {
        return;
    };
    for (key, value) in strings {
        let bytes = k8s_openapi::ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
        // ByteString serializes as base64; serializing a byte vector cannot fail.
        let encoded = serde_json::to_value(bytes).unwrap_or(Value::Null);
        meta::set_at(secret, &["data", key.as_str()], encoded);
    }
}

/// Sets what a new object gets on creation, besides its identity: the status a freshly
/// scheduled pod or a new volume has, a service's cluster IP, the protection finalizers.
pub fn admit_create(kind: &Kind, object: &mut Value, identities: &mut Identities, store: &Store) {
    let now = meta::now();
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            let bound_to_node =
                meta::str_at(object, &["spec", "nodeName"]).is_some_and(|node| !node.is_empty());
            match why_unschedulable(object, store) {
                // A pod given a node skips the scheduler, as on a real cluster.
                Some(reason) if !bound_to_node => hold_pending(object, &reason, &now),
                _ => start_pod(object, identities, store, &now),
            }
        }
        ("", "Service") => allocate_cluster_ip(object, identities, store),
        ("", "PersistentVolume") => {
            meta::add_finalizer(object, PV_PROTECTION);
            object["status"] = json!({"phase": "Pending"});
        }
        ("", "PersistentVolumeClaim") => {
            meta::add_finalizer(object, PVC_PROTECTION);
            object["status"] = json!({"phase": "Pending"});
        }
        ("", "Namespace") => {
            meta::set_at(object, &["spec", "finalizers"], json!(["kubernetes"]));
            object["status"] = json!({"phase": "Active"});
            meta::set_at(
                object,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                json!(meta::name(object)),
            );
        }
        ("batch", "Job") => select_own_pods(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            super::custom_resources::admit(object, &now);
        }
        _ => {}
    }
}

/// Keeps what the server allocated when an update omits it (a replaced Service keeps its IP).
pub fn admit_update(kind: &Kind, new: &mut Value, old: &Value) {
    if kind.kind == "Service" && kind.group.is_empty() {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let missing = new
                .pointer(&format!("/spec/{field}"))
                .is_none_or(|value| value.is_null() || value == "");
            if missing && let Some(value) = old.pointer(&format!("/spec/{field}")) {
                meta::set_at(new, &["spec", field], value.clone());
            }
        }
    }
    if kind.kind == "Namespace" && kind.group.is_empty() {
        meta::set_at(
            new,
            &["metadata", "labels", "kubernetes.io/metadata.name"],
            json!(meta::name(old)),
        );
    }
}

/// Why the scheduler would not place the pod now, in its words; `None` if it would. Only
/// the volume rules matter in the sandbox (its one node has room for everything): every
/// claim the pod mounts must exist, not be being deleted, and be bound (claims without a
/// class bind immediately, so an unbound one blocks the pod).
pub fn why_unschedulable(pod: &Value, store: &Store) -> Option<String> {
    let claims = find_kind("PersistentVolumeClaim")?;
    let namespace = meta::namespace(pod);
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            volume
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        })
        .find_map(
            |name| match store.get(&ObjectKey::new(claims, namespace, name)) {
                None => Some(format!("persistentvolumeclaim {name:?} not found")),
                Some(claim) if meta::is_deleting(claim) => {
                    Some(format!("persistentvolumeclaim {name:?} is being deleted"))
                }
                Some(claim) if meta::str_at(claim, &["status", "phase"]) != Some("Bound") => {
                    Some("pod has unbound immediate PersistentVolumeClaims".to_string())
                }
                Some(_) => None,
            },
        )
}

/// The `PodScheduled` message of an unschedulable pod on the sandbox's single node.
pub fn unschedulable_message(reason: &str) -> String {
    format!(
        "0/1 nodes are available: {reason}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
}

/// Leaves a pod `Pending` and unscheduled, saying why, as the scheduler does.
pub fn hold_pending(pod: &mut Value, reason: &str, now: &str) {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": unschedulable_message(reason),
            "lastProbeTime": null,
            "lastTransitionTime": now,
        }],
        "qosClass": qos_class(&spec),
    });
}

/// Schedules a pod on the sandbox's node and starts it at once: no image pulls in the
/// sandbox. `store` holds the pods whose IPs are taken.
pub fn start_pod(pod: &mut Value, identities: &mut Identities, store: &Store, now: &str) {
    if meta::str_at(pod, &["spec", "nodeName"]).is_none_or(str::is_empty) {
        meta::set_at(pod, &["spec", "nodeName"], json!(NODE_NAME));
    }
    let container_status = |container: &Value, identities: &mut Identities, running: bool| {
        let image = container.get("image").cloned().unwrap_or(Value::Null);
        let state = if running {
            json!({"running": {"startedAt": now}})
        } else {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now, "containerID": ""}})
        };
        json!({
            "name": container.get("name").cloned().unwrap_or(Value::Null),
            "image": image,
            "imageID": format!("sandbox://{}", image.as_str().unwrap_or_default()),
            "containerID": format!("containerd://{}", identities.container_id()),
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
        })
    };
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|container| container_status(container, identities, true))
        .collect();
    let init: Vec<Value> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|container| container_status(container, identities, false))
        .collect();
    let in_use: BTreeSet<String> = find_kind("Pod")
        .map(|kind| {
            store
                .list(kind, None)
                .filter_map(|pod| meta::str_at(pod, &["status", "podIP"]).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ip = identities.pod_ip(&in_use);
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let conditions = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .map(condition);
    let mut status = json!({
        "phase": "Running",
        "conditions": conditions,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": containers,
        "qosClass": qos_class(&spec),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = Value::Array(init);
    }
    pod["status"] = status;
}

/// BestEffort without any request or limit, Guaranteed when every container's limits equal
/// its requests for cpu and memory, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let resources = |container: &Value, which: &str| {
        container
            .pointer(&format!("/resources/{which}"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    if containers.iter().all(|container| {
        resources(container, "requests").is_empty() && resources(container, "limits").is_empty()
    }) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|container| {
        let limits = resources(container, "limits");
        let requests = resources(container, "requests");
        ["cpu", "memory"].iter().all(|name| {
            limits.get(*name).is_some()
                && requests
                    .get(*name)
                    .is_none_or(|request| Some(request) == limits.get(*name))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn allocate_cluster_ip(service: &mut Value, identities: &mut Identities, store: &Store) {
    let service_type = meta::str_at(service, &["spec", "type"])
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type == "ExternalName" {
        return;
    }
    let requested = meta::str_at(service, &["spec", "clusterIP"])
        .unwrap_or_default()
        .to_string();
    let ip = if requested.is_empty() {
        let in_use: BTreeSet<String> = find_kind("Service")
            .map(|kind| {
                store
                    .list(kind, None)
                    .filter_map(|service| {
                        meta::str_at(service, &["spec", "clusterIP"]).map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        identities.cluster_ip(&in_use)
    } else {
        requested
    };
    meta::set_at(service, &["spec", "clusterIP"], json!(ip));
    meta::set_at(service, &["spec", "clusterIPs"], json!([ip]));
    if ip != "None" {
        meta::set_at(service, &["spec", "ipFamilies"], json!(["IPv4"]));
        meta::set_at(service, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
    }
    service["status"] = json!({"loadBalancer": {}});
}

/// A Job selects its pods by its own uid unless `manualSelector` is set.
fn select_own_pods(job: &mut Value) {
    if meta::value_at(job, &["spec", "manualSelector"]) == Some(&json!(true)) {
        return;
    }
    let uid = meta::uid(job).to_string();
    let name = meta::name(job).to_string();
    meta::set_at(
        job,
        &["spec", "selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        meta::set_at(
            job,
            &["spec", "template", "metadata", "labels", key],
            json!(value),
        );
    }
    job["status"] = json!({});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_start_running_on_the_sandbox_node() {
        let kind = find_kind("Pod").unwrap();
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
        apply_defaults(kind, &mut pod);
        admit_create(kind, &mut pod, &mut Identities::new(1), &Store::new(10));
        assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["podIP"], "10.244.0.2");
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn services_get_an_ip_and_keep_it() {
        let kind = find_kind("Service").unwrap();
        let mut service =
            json!({"metadata": {"name": "proxy-public"}, "spec": {"ports": [{"port": 80}]}});
        apply_defaults(kind, &mut service);
        admit_create(kind, &mut service, &mut Identities::new(1), &Store::new(10));
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            service["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let mut replaced =
            json!({"metadata": {"name": "proxy-public"}, "spec": {"ports": [{"port": 81}]}});
        admit_update(kind, &mut replaced, &service);
        assert_eq!(replaced["spec"]["clusterIP"], "10.96.0.10");
    }

    #[test]
    fn secrets_fold_string_data() {
        let kind = find_kind("Secret").unwrap();
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"token": "abc"}, "data": {"old": "eA=="}});
        apply_defaults(kind, &mut secret);
        assert_eq!(
            secret,
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"old": "eA==", "token": "YWJj"}})
        );
    }

    #[test]
    fn volumes_and_claims_get_protection_finalizers() {
        let mut pv = json!({"metadata": {"name": "v"}, "spec": {}});
        let pv_kind = find_kind("pv").unwrap();
        apply_defaults(pv_kind, &mut pv);
        admit_create(pv_kind, &mut pv, &mut Identities::new(1), &Store::new(10));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["metadata"]["finalizers"], json!([PV_PROTECTION]));
        let mut claim = json!({"metadata": {"name": "c"}, "spec": {}});
        admit_create(
            find_kind("pvc").unwrap(),
            &mut claim,
            &mut Identities::new(1),
            &Store::new(10),
        );
        assert_eq!(claim["metadata"]["finalizers"], json!([PVC_PROTECTION]));
        assert_eq!(claim["status"]["phase"], "Pending");
    }
}
