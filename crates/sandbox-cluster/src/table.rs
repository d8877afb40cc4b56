//! Server-side printing: the `Table` kubectl asks for on `get`, with the columns the real
//! server prints for each kind (a plain list would only give NAME and AGE).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::meta;
use kube_kinds::Kind;

/// The columns of a kind after NAME, and how to fill them.
fn columns(kind: &Kind) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Pod") => &["Ready", "Status", "Restarts"],
        ("", "Service") => &["Type", "Cluster-IP", "External-IP", "Port(s)"],
        ("", "PersistentVolume") => &[
            "Capacity",
            "Access Modes",
            "Reclaim Policy",
            "Status",
            "Claim",
            "StorageClass",
            "VolumeAttributesClass",
            "Reason",
        ],
        ("", "PersistentVolumeClaim") => &[
            "Status",
            "Volume",
            "Capacity",
            "Access Modes",
            "StorageClass",
            "VolumeAttributesClass",
        ],
        ("", "Namespace") => &["Status"],
        ("", "ConfigMap") => &["Data"],
        ("", "Secret") => &["Type", "Data"],
        ("apps", "Deployment") => &["Ready", "Up-to-date", "Available"],
        ("apps", "ReplicaSet") => &["Desired", "Current", "Ready"],
        ("apps", "StatefulSet") => &["Ready"],
        ("batch", "Job") => &["Status", "Completions"],
        ("coordination.k8s.io", "Lease") => &["Holder"],
        ("", "Node") => &["Status", "Roles", "Age", "Version"],
        // Events have no NAME column: it is replaced below.
        ("", "Event") => &["Last Seen", "Type", "Reason", "Object", "Message"],
        _ => &[],
    }
}

/// Whether a kind's table starts with NAME (every kind but Event).
fn has_name_column(kind: &Kind) -> bool {
    !(kind.group.is_empty() && kind.kind == "Event")
}

/// Whether AGE is among a kind's own columns rather than after them (Node's VERSION follows
/// it), or missing (Event).
fn places_age_itself(kind: &Kind) -> bool {
    !has_name_column(kind) || columns(kind).contains(&"Age")
}

/// The columns `-o wide` adds after AGE (priority 1).
fn wide_columns(kind: &Kind) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Pod") => &["IP", "Node", "Nominated Node", "Readiness Gates"],
        ("", "Service") => &["Selector"],
        ("", "PersistentVolume" | "PersistentVolumeClaim") => &["VolumeMode"],
        ("apps", "Deployment" | "ReplicaSet") | ("batch", "Job") => {
            &["Containers", "Images", "Selector"]
        }
        ("apps", "StatefulSet") => &["Containers", "Images"],
        ("", "Node") => &[
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime",
        ],
        ("", "Event") => &["Subobject", "Source", "First Seen", "Count", "Name"],
        _ => &[],
    }
}

/// A pod template's containers' names and images, joined by commas.
fn containers(object: &Value, field: &str) -> String {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|container| text(container, &format!("/{field}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// `a=b,c=d` from a map of labels.
fn label_list(labels: Option<&Value>) -> String {
    labels
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn wide_cell(kind: &Kind, column: &str, object: &Value) -> Value {
    match (kind.kind, column) {
        ("Pod", "IP") => json!(or_none(text(object, "/status/podIP"))),
        ("Pod", "Node") => json!(or_none(text(object, "/spec/nodeName"))),
        ("Pod", "Nominated Node" | "Readiness Gates") => json!("<none>"),
        ("Node", "Internal-IP") => json!(node_address(object, "InternalIP")),
        ("Node", "External-IP") => json!(node_address(object, "ExternalIP")),
        ("Node", "OS-Image") => json!(text(object, "/status/nodeInfo/osImage")),
        ("Node", "Kernel-Version") => json!(text(object, "/status/nodeInfo/kernelVersion")),
        ("Node", "Container-Runtime") => {
            json!(text(object, "/status/nodeInfo/containerRuntimeVersion"))
        }
        ("Event", "Subobject") => json!(text(object, "/involvedObject/fieldPath")),
        ("Event", "Source") => {
            let component = text(object, "/source/component");
            let host = text(object, "/source/host");
            json!(if host.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {host}")
            })
        }
        ("Event", "First Seen") => json!(age(text(object, "/firstTimestamp"), Timestamp::now())),
        ("Event", "Count") => json!(count(object, "/count")),
        ("Event", "Name") => json!(meta::name(object)),
        ("Service", "Selector") => json!(or_none(&label_list(object.pointer("/spec/selector")))),
        (_, "VolumeMode") => json!(text(object, "/spec/volumeMode")),
        (_, "Containers") => json!(containers(object, "name")),
        (_, "Images") => json!(containers(object, "image")),
        (_, "Selector") => json!(or_none(&label_list(
            object.pointer("/spec/selector/matchLabels")
        ))),
        _ => json!(""),
    }
}

/// A node's address of one type, or `<none>`.
fn node_address(node: &Value, address_type: &str) -> String {
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|address| address.get("type").and_then(Value::as_str) == Some(address_type))
        .map(|address| text(address, "/address"))
        .unwrap_or_default();
    or_none(address)
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn count(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text.into()
    }
}

fn access_modes(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|mode| match mode {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn entries(object: &Value, field: &str) -> usize {
    object
        .get(field)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

fn cell(kind: &Kind, column: &str, object: &Value) -> Value {
    if column == "Age" {
        return json!(age(
            text(object, "/metadata/creationTimestamp"),
            Timestamp::now()
        ));
    }
    let cell_of = match kind.kind {
        "Pod" => pod_cell,
        "Service" => service_cell,
        "PersistentVolume" | "PersistentVolumeClaim" => volume_cell,
        "Node" => node_cell,
        "Event" => event_cell,
        _ => other_cell,
    };
    cell_of(kind.kind, column, object)
}

/// A pod's columns.
fn pod_cell(kind: &str, column: &str, object: &Value) -> Value {
    match (kind, column) {
        ("Pod", "Ready") => {
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|status| status.get("ready") == Some(&json!(true)))
                .count();
            json!(format!("{ready}/{total}"))
        }
        ("Pod", "Status") => json!(pod_status(object)),
        ("Pod", "Restarts") => {
            let restarts: i64 = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|status| count(status, "/restartCount"))
                .sum();
            json!(restarts)
        }
        _ => json!(""),
    }
}

/// A service's columns.
fn service_cell(kind: &str, column: &str, object: &Value) -> Value {
    match (kind, column) {
        ("Service", "Type") => json!(text(object, "/spec/type")),
        ("Service", "Cluster-IP") => json!(or_none(text(object, "/spec/clusterIP"))),
        ("Service", "External-IP") => json!("<none>"),
        ("Service", "Port(s)") => {
            let ports: Vec<String> = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|port| {
                    format!(
                        "{}/{}",
                        port.get("port").unwrap_or(&Value::Null),
                        text(port, "/protocol")
                    )
                })
                .collect();
            json!(or_none(&ports.join(",")))
        }
        _ => json!(""),
    }
}

/// The columns of volumes and claims.
fn volume_cell(kind: &str, column: &str, object: &Value) -> Value {
    let deleting = meta::is_deleting(object);
    match (kind, column) {
        ("PersistentVolume", "Capacity") => json!(text(object, "/spec/capacity/storage")),
        ("PersistentVolume", "Access Modes") => json!(access_modes(object, "/spec/accessModes")),
        ("PersistentVolume", "Reclaim Policy") => {
            json!(text(object, "/spec/persistentVolumeReclaimPolicy"))
        }
        ("PersistentVolume", "Status") if deleting => json!("Terminating"),
        ("PersistentVolume", "Status") => json!(text(object, "/status/phase")),
        ("PersistentVolume", "Claim") => {
            let namespace = text(object, "/spec/claimRef/namespace");
            let name = text(object, "/spec/claimRef/name");
            json!(if name.is_empty() {
                String::new()
            } else {
                format!("{namespace}/{name}")
            })
        }
        ("PersistentVolume" | "PersistentVolumeClaim", "StorageClass") => {
            json!(text(object, "/spec/storageClassName"))
        }
        ("PersistentVolume" | "PersistentVolumeClaim", "VolumeAttributesClass") => {
            json!(or_none(text(object, "/spec/volumeAttributesClassName")))
        }
        ("PersistentVolume", "Reason") => json!(text(object, "/status/reason")),
        ("PersistentVolumeClaim", "Status") if deleting => json!("Terminating"),
        ("PersistentVolumeClaim", "Status") => json!(text(object, "/status/phase")),
        ("PersistentVolumeClaim", "Volume") => json!(text(object, "/spec/volumeName")),
        ("PersistentVolumeClaim", "Capacity") => json!(text(object, "/status/capacity/storage")),
        ("PersistentVolumeClaim", "Access Modes") => {
            json!(access_modes(object, "/status/accessModes"))
        }
        _ => json!(""),
    }
}

/// A node's columns.
fn node_cell(kind: &str, column: &str, object: &Value) -> Value {
    match (kind, column) {
        ("Node", "Status") => {
            let ready = kube_kinds::has_condition(&object["status"], "Ready");
            let status = if ready { "Ready" } else { "NotReady" };
            json!(
                if object.pointer("/spec/unschedulable") == Some(&json!(true)) {
                    format!("{status},SchedulingDisabled")
                } else {
                    status.to_string()
                }
            )
        }
        ("Node", "Roles") => {
            let labels = meta::labels(object);
            let roles: Vec<&str> = labels
                .keys()
                .filter_map(|label| label.strip_prefix("node-role.kubernetes.io/"))
                .map(|role| role.trim_start_matches('/'))
                .filter(|role| !role.is_empty())
                .collect::<Vec<_>>();
            json!(or_none(&roles.join(",")))
        }
        ("Node", "Version") => json!(text(object, "/status/nodeInfo/kubeletVersion")),
        _ => json!(""),
    }
}

/// An event's columns.
fn event_cell(kind: &str, column: &str, object: &Value) -> Value {
    match (kind, column) {
        ("Event", "Last Seen") => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .map(|pointer| text(object, pointer))
            .find(|time| !time.is_empty())
            .unwrap_or_default();
            json!(age(last, Timestamp::now()))
        }
        ("Event", "Type") => json!(text(object, "/type")),
        ("Event", "Reason") => json!(text(object, "/reason")),
        ("Event", "Object") => json!(format!(
            "{}/{}",
            text(object, "/involvedObject/kind").to_ascii_lowercase(),
            text(object, "/involvedObject/name")
        )),
        ("Event", "Message") => json!(text(object, "/message").trim()),
        _ => json!(""),
    }
}

/// The columns of the other kinds.
fn other_cell(kind: &str, column: &str, object: &Value) -> Value {
    match (kind, column) {
        ("Namespace", "Status") => json!(text(object, "/status/phase")),
        ("ConfigMap", "Data") => json!(entries(object, "data") + entries(object, "binaryData")),
        ("Secret", "Type") => json!(text(object, "/type")),
        ("Secret", "Data") => json!(entries(object, "data")),
        ("Deployment" | "StatefulSet", "Ready") => json!(format!(
            "{}/{}",
            count(object, "/status/readyReplicas"),
            count(object, "/spec/replicas")
        )),
        ("Deployment", "Up-to-date") => json!(count(object, "/status/updatedReplicas")),
        ("Deployment", "Available") => json!(count(object, "/status/availableReplicas")),
        ("ReplicaSet", "Desired") => json!(count(object, "/spec/replicas")),
        ("ReplicaSet", "Current") => json!(count(object, "/status/replicas")),
        ("ReplicaSet", "Ready") => json!(count(object, "/status/readyReplicas")),
        ("Job", "Status") => json!(job_status(object)),
        ("Job", "Completions") => json!(format!(
            "{}/{}",
            count(object, "/status/succeeded"),
            object
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        ("Lease", "Holder") => json!(text(object, "/spec/holderIdentity")),
        _ => json!(""),
    }
}

/// A pod's STATUS as the server's printer shows it: a terminated container's reason
/// (`Completed`, `Error`) over the phase, `Terminating` while a live pod is deleted.
fn pod_status(pod: &Value) -> String {
    let phase = text(pod, "/status/phase");
    if meta::is_deleting(pod) && !matches!(phase, "Succeeded" | "Failed") {
        return "Terminating".into();
    }
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .rev()
        .find_map(|status| status.pointer("/state/terminated/reason")?.as_str())
        .filter(|reason| !reason.is_empty())
        .unwrap_or(phase)
        .to_string()
}

/// A Job's STATUS as the server's printer shows it.
fn job_status(job: &Value) -> &'static str {
    let has = |kind: &str| kube_kinds::has_condition(&job["status"], kind);
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if meta::is_deleting(job) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// How long ago, the way kubectl shows ages: `45s`, `3m12s`, `5h`, `12d`.
pub fn age(created: &str, now: Timestamp) -> String {
    let Some(created) = meta::parse_time(created) else {
        return "<unknown>".into();
    };
    let seconds = now.duration_since(created).as_secs().max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    // The steps of kubectl's `duration.HumanDuration`.
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        if seconds % 60 == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{}s", seconds % 60)
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        if minutes % 60 == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", minutes % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 192 {
        if hours % 24 == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{}h", hours % 24)
        }
    } else if days < 730 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

/// A `Table` of `objects`.
pub fn table(
    kind: &Kind,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<String>,
) -> Value {
    let now = Timestamp::now();
    let mut definitions = Vec::new();
    if has_name_column(kind) {
        definitions.push(json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}));
    }
    for column in columns(kind) {
        let column_type = if matches!(
            *column,
            "Restarts" | "Data" | "Up-to-date" | "Available" | "Desired" | "Current" | "Count"
        ) {
            "integer"
        } else {
            "string"
        };
        let ready_for_replicasets = kind.kind == "ReplicaSet" && *column == "Ready";
        definitions.push(json!({
            "name": column,
            "type": if ready_for_replicasets { "integer" } else { column_type },
            "format": "",
            "description": "",
            "priority": 0,
        }));
    }
    if !places_age_itself(kind) {
        definitions.push(
            json!({"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}),
        );
    }
    for column in wide_columns(kind) {
        definitions.push(json!({"name": column, "type": "string", "format": "", "description": "", "priority": 1}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = Vec::new();
            if has_name_column(kind) {
                cells.push(json!(meta::name(object)));
            }
            cells.extend(columns(kind).iter().map(|column| cell(kind, column, object)));
            if !places_age_itself(kind) {
                cells.push(json!(age(text(object, "/metadata/creationTimestamp"), now)));
            }
            cells.extend(wide_columns(kind).iter().map(|column| wide_cell(kind, column, object)));
            let metadata = object.get("metadata").cloned().unwrap_or(json!({}));
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata},
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    #[test]
    fn volumes_show_their_claim_and_policy() {
        let pv = json!({"metadata": {"name": "v", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {
            "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "hub", "name": "home-nfs"}}, "status": {"phase": "Bound"}});
        let table = table(find_kind("pv").unwrap(), &[pv], "7", None);
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "v");
        assert_eq!(cells[1], "1Mi");
        assert_eq!(cells[2], "RWX");
        assert_eq!(cells[3], "Retain");
        assert_eq!(cells[4], "Bound");
        assert_eq!(cells[5], "hub/home-nfs");
        assert_eq!(
            table["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(age("2026-01-01T23:59:15Z", now), "45s");
        assert_eq!(age("2026-01-01T23:56:48Z", now), "3m12s");
        assert_eq!(age("2026-01-01T19:00:00Z", now), "5h");
        assert_eq!(age("2025-12-20T00:00:00Z", now), "13d");
    }
}
