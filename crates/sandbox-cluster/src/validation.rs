//! The semantic validation the real API server does after decoding (the 422 `Invalid`
//! answers), for the kinds the playbooks touch, and the rules on what an update may change.
//! Field types and required struct fields are checked before, by the kind's typed
//! [`Validator`](kube_kinds::Validator) (a custom resource's kind has none).

use serde_json::{Value, json};

use super::api_error::FieldError;
use super::controllers::{LIFETIME_ANNOTATION, lifetime};
use super::meta;
use super::selectors::{LabelSelector, check_key, check_value, is_dns_label, is_dns_subdomain};
use kube_kinds::Kind;

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_RULE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_RULE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE: &str = "field is immutable";

/// The volume sources a PersistentVolume can have; exactly one must be set.
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// Everything wrong with `object` of `kind`; `old` is the stored object for an update.
pub fn validate(kind: &Kind, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_metadata(kind, object, &mut errors);
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            validate_pod_spec(&spec, "spec", &mut errors);
            validate_lifetime(object, &mut errors);
        }
        ("apps", "Deployment" | "ReplicaSet") => validate_replicated(&spec, &mut errors),
        ("apps", "StatefulSet") => {
            validate_replicated(&with_claim_volumes(&spec), &mut errors);
            validate_retention(&spec, &mut errors);
        }
        ("batch", "Job") => validate_job(&spec, &mut errors),
        ("", "PersistentVolume") => validate_volume(&spec, &mut errors),
        ("", "PersistentVolumeClaim") => validate_claim(&spec, &mut errors),
        ("", "Service") => validate_service(&spec, &mut errors),
        ("", "ConfigMap" | "Secret") => validate_config_keys(object, &mut errors),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            super::custom_resources::validate(object, &mut errors);
        }
        _ => {}
    }
    if let Some(old) = old {
        validate_update(kind, object, old, &mut errors);
    }
    errors
}

fn validate_metadata(kind: &Kind, object: &Value, errors: &mut Vec<FieldError>) {
    let name = meta::name(object);
    let name_value = json!(name);
    // Namespaces are DNS labels; services DNS-1035 labels (they become DNS names).
    match kind.kind {
        "Namespace" if !is_dns_label(name) => errors.push(FieldError::invalid(
            "metadata.name",
            &name_value,
            LABEL_RULE,
        )),
        "Service"
            if !(is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())) =>
        {
            errors.push(FieldError::invalid(
                "metadata.name",
                &name_value,
                DNS1035_RULE,
            ));
        }
        "Namespace" | "Service" => {}
        _ if !is_dns_subdomain(name) => errors.push(FieldError::invalid(
            "metadata.name",
            &name_value,
            SUBDOMAIN_RULE,
        )),
        _ => {}
    }
    for (key, value) in meta::labels(object) {
        if let Err(error) = check_key(&key) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                &json!(key),
                strip_parse_prefix(&error.0),
            ));
        }
        match value.as_str() {
            Some(text) => {
                if let Err(error) = check_value(text) {
                    errors.push(FieldError::invalid(
                        "metadata.labels",
                        &value,
                        strip_parse_prefix(&error.0),
                    ));
                }
            }
            None => errors.push(FieldError::invalid(
                "metadata.labels",
                &value,
                "must be a string",
            )),
        }
    }
}

/// The sandbox's own annotation must be a duration: a typo would otherwise leave a pod that
/// was meant to go running forever, silently.
fn validate_lifetime(pod: &Value, errors: &mut Vec<FieldError>) {
    if let Some(Err(message)) = lifetime(pod) {
        errors.push(FieldError::invalid(
            format!("metadata.annotations[{LIFETIME_ANNOTATION}]"),
            &pod["metadata"]["annotations"][LIFETIME_ANNOTATION],
            message,
        ));
    }
}

/// The rule text of a selector error, without the parser's framing.
fn strip_parse_prefix(message: &str) -> String {
    message.rsplit(": ").next().unwrap_or(message).to_string()
}

fn items<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value
        .get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn validate_pod_spec(spec: &Value, at: &str, errors: &mut Vec<FieldError>) {
    let volumes = items(spec, "volumes");
    let mut volume_names = Vec::new();
    for (index, volume) in volumes.iter().enumerate() {
        let name = text(volume, "name");
        let field = format!("{at}.volumes[{index}].name");
        if name.is_empty() {
            errors.push(FieldError::required(field, ""));
        } else if volume_names.contains(&name) {
            errors.push(FieldError::duplicate(field, &json!(name)));
        } else {
            volume_names.push(name);
        }
    }
    let containers = items(spec, "containers");
    if containers.is_empty() {
        errors.push(FieldError::required(format!("{at}.containers"), ""));
    }
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for (index, container) in items(spec, list).iter().enumerate() {
            let here = format!("{at}.{list}[{index}]");
            let name = text(container, "name");
            if name.is_empty() {
                errors.push(FieldError::required(format!("{here}.name"), ""));
            } else if !is_dns_label(name) {
                errors.push(FieldError::invalid(
                    format!("{here}.name"),
                    &json!(name),
                    LABEL_RULE,
                ));
            } else if names.contains(&name) {
                errors.push(FieldError::duplicate(format!("{here}.name"), &json!(name)));
            } else {
                names.push(name);
            }
            if text(container, "image").is_empty() {
                errors.push(FieldError::required(format!("{here}.image"), ""));
            }
            for (mount_index, mount) in items(container, "volumeMounts").iter().enumerate() {
                let mount_name = text(mount, "name");
                let field = format!("{here}.volumeMounts[{mount_index}]");
                if mount_name.is_empty() {
                    errors.push(FieldError::required(format!("{field}.name"), ""));
                } else if !volume_names.contains(&mount_name) {
                    errors.push(FieldError::not_found(
                        format!("{field}.name"),
                        &json!(mount_name),
                    ));
                }
                if text(mount, "mountPath").is_empty() {
                    errors.push(FieldError::required(format!("{field}.mountPath"), ""));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{at}.restartPolicy"),
            &json!(policy),
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// A StatefulSet's spec with a volume in its pod template for each claim template, as its
/// pods will have: the containers may mount them.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let names: Vec<String> = items(&spec, "volumeClaimTemplates")
        .iter()
        .map(|template| meta::name(template).to_string())
        .collect();
    if names.is_empty() {
        return spec;
    }
    let mut volumes = spec
        .pointer("/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for name in names {
        volumes.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
    }
    meta::set_at(
        &mut spec,
        &["template", "spec", "volumes"],
        Value::Array(volumes),
    );
    spec
}

/// A StatefulSet's `persistentVolumeClaimRetentionPolicy`: Retain or Delete, each way.
fn validate_retention(spec: &Value, errors: &mut Vec<FieldError>) {
    for field in ["whenDeleted", "whenScaled"] {
        if let Some(policy) = spec
            .pointer(&format!("/persistentVolumeClaimRetentionPolicy/{field}"))
            .and_then(Value::as_str)
            && !["Retain", "Delete"].contains(&policy)
        {
            errors.push(FieldError::not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                &json!(policy),
                &["Retain", "Delete"],
            ));
        }
    }
}

fn validate_replicated(spec: &Value, errors: &mut Vec<FieldError>) {
    if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64)
        && replicas < 0
    {
        errors.push(FieldError::invalid(
            "spec.replicas",
            &json!(replicas),
            "must be greater than or equal to 0",
        ));
    }
    validate_selector_and_template(spec, errors);
    let template_spec = spec
        .pointer("/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    validate_pod_spec(&template_spec, "spec.template.spec", errors);
    if let Some(policy) = template_spec.get("restartPolicy").and_then(Value::as_str)
        && policy != "Always"
    {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(policy),
            &["Always"],
        ));
    }
}

fn validate_selector_and_template(spec: &Value, errors: &mut Vec<FieldError>) {
    let Some(selector) = spec.get("selector").filter(|selector| !selector.is_null()) else {
        errors.push(FieldError::required("spec.selector", ""));
        return;
    };
    match LabelSelector::from_object(selector) {
        Some(parsed) if parsed.is_empty() => {
            errors.push(FieldError::invalid(
                "spec.selector",
                selector,
                "empty selector is invalid for deployment",
            ));
        }
        Some(parsed) => {
            let template = json!({"metadata": {"labels": spec.pointer("/template/metadata/labels").cloned().unwrap_or(json!({}))}});
            if !parsed.matches(&template) {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &template["metadata"]["labels"],
                    "`selector` does not match template `labels`",
                ));
            }
        }
        None => errors.push(FieldError::invalid(
            "spec.selector",
            selector,
            "invalid label selector",
        )),
    }
}

fn validate_job(spec: &Value, errors: &mut Vec<FieldError>) {
    let template_spec = spec
        .pointer("/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    validate_pod_spec(&template_spec, "spec.template.spec", errors);
    // Pod defaulting has already made a missing policy `Always`, which is what the real
    // server then complains about.
    let policy = template_spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !["OnFailure", "Never"].contains(&policy) {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(policy),
            &["OnFailure", "Never"],
        ));
    }
}

fn validate_access_modes(spec: &Value, errors: &mut Vec<FieldError>) {
    let modes = items(spec, "accessModes");
    if modes.is_empty() {
        errors.push(FieldError::required("spec.accessModes", ""));
    }
    for mode in modes {
        if !mode
            .as_str()
            .is_some_and(|mode| ACCESS_MODES.contains(&mode))
        {
            errors.push(FieldError::not_supported(
                "spec.accessModes",
                mode,
                ACCESS_MODES,
            ));
        }
    }
}

fn validate_volume(spec: &Value, errors: &mut Vec<FieldError>) {
    if spec
        .get("capacity")
        .and_then(Value::as_object)
        .is_none_or(|capacity| capacity.is_empty())
    {
        errors.push(FieldError::required("spec.capacity", ""));
    } else if spec.pointer("/capacity/storage").is_none() {
        errors.push(FieldError::required("spec.capacity.storage", ""));
    }
    validate_access_modes(spec, errors);
    let sources: Vec<&str> = VOLUME_SOURCES
        .iter()
        .copied()
        .filter(|source| spec.get(source).is_some_and(|value| !value.is_null()))
        .collect();
    match sources.as_slice() {
        [] => errors.push(FieldError::required("spec", "must specify a volume type")),
        [_] => {}
        _ => errors.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(nfs) = spec.get("nfs").filter(|nfs| nfs.is_object()) {
        if text(nfs, "server").is_empty() {
            errors.push(FieldError::required("spec.nfs.server", ""));
        }
        let path = text(nfs, "path");
        if path.is_empty() {
            errors.push(FieldError::required("spec.nfs.path", ""));
        } else if !path.starts_with('/') {
            errors.push(FieldError::invalid(
                "spec.nfs.path",
                &json!(path),
                "must be an absolute path",
            ));
        }
    }
    if let Some(policy) = spec
        .get("persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
        && !["Retain", "Delete", "Recycle"].contains(&policy)
    {
        errors.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            &json!(policy),
            &["Delete", "Recycle", "Retain"],
        ));
    }
}

fn validate_claim(spec: &Value, errors: &mut Vec<FieldError>) {
    validate_access_modes(spec, errors);
    if spec.pointer("/resources/requests/storage").is_none() {
        errors.push(FieldError::required("spec.resources[storage]", ""));
    }
}

fn validate_service(spec: &Value, errors: &mut Vec<FieldError>) {
    let ports = items(spec, "ports");
    let headless = text(spec, "clusterIP") == "None";
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported(
            "spec.type",
            &json!(service_type),
            TYPES,
        ));
    }
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            errors.push(FieldError::invalid(
                format!("spec.ports[{index}].port"),
                &json!(number),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = text(port, "name");
        if ports.len() > 1 && name.is_empty() {
            errors.push(FieldError::required(
                format!("spec.ports[{index}].name"),
                "",
            ));
        } else if !name.is_empty() && names.contains(&name) {
            errors.push(FieldError::duplicate(
                format!("spec.ports[{index}].name"),
                &json!(name),
            ));
        }
        names.push(name);
    }
}

fn validate_config_keys(object: &Value, errors: &mut Vec<FieldError>) {
    for field in ["data", "binaryData", "stringData"] {
        for key in object
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|map| map.keys())
        {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !valid {
                errors.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    &json!(key),
                    CONFIG_KEY_RULE,
                ));
            }
        }
    }
}

fn validate_update(kind: &Kind, new: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    errors.extend(changed_immutable_spec(kind, new, old));
    let spec = |object: &Value| object.get("spec").cloned().unwrap_or(Value::Null);
    match (kind.group, kind.kind) {
        ("apps", "Deployment" | "ReplicaSet") | ("batch", "Job") => {
            let selector = |object: &Value| spec(object).get("selector").cloned();
            if selector(new) != selector(old) {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    &selector(new).unwrap_or(Value::Null),
                    IMMUTABLE,
                ));
            }
            if kind.kind == "Job" {
                let template = |object: &Value| spec(object).get("template").cloned();
                if template(new) != template(old) {
                    errors.push(FieldError::invalid(
                        "spec.template",
                        &template(new).unwrap_or(Value::Null),
                        IMMUTABLE,
                    ));
                }
            }
        }
        ("", "Service") => {
            let ip = |object: &Value| text(&spec(object), "clusterIP").to_string();
            if ip(new) != ip(old) {
                errors.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &json!([ip(new)]),
                    "may not change once set",
                ));
            }
        }
        ("", "ConfigMap" | "Secret") if old.get("immutable") == Some(&json!(true)) => {
            for field in ["data", "binaryData"] {
                if new.get(field) != old.get(field) {
                    errors.push(FieldError::forbidden(
                        field,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if new.get("immutable") != Some(&json!(true)) {
                errors.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        _ => {}
    }
    if kind.kind == "Secret" && new.get("type") != old.get("type") {
        errors.push(FieldError::invalid(
            "type",
            new.get("type").unwrap_or(&Value::Null),
            IMMUTABLE,
        ));
    }
}

/// For the kinds whose spec is immutable but for some fields (PersistentVolume,
/// PersistentVolumeClaim, Pod, StatefulSet): the error when an update changes another field,
/// worded as the real server words it.
fn changed_immutable_spec(kind: &Kind, new: &Value, old: &Value) -> Option<FieldError> {
    let spec = |object: &Value| object.get("spec").cloned().unwrap_or(Value::Null);
    let (fixed, error): (fn(Value, &Value) -> Value, _) = match (kind.group, kind.kind) {
        ("", "PersistentVolume") => {
            // What the API calls the "persistentvolumesource": the inlined volume source.
            let source = |object: &Value| {
                VOLUME_SOURCES
                    .iter()
                    .map(|field| spec(object).get(field).cloned().unwrap_or(Value::Null))
                    .collect::<Vec<_>>()
            };
            return (source(new) != source(old)).then(|| {
                FieldError::forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                )
            });
        }
        ("", "PersistentVolumeClaim") => (
            fixed_claim_spec,
            FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ),
        ),
        ("", "Pod") => (
            fixed_pod_spec,
            FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ),
        ),
        ("apps", "StatefulSet") => (
            fixed_stateful_set_spec,
            FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ),
        ),
        _ => return None,
    };
    (fixed(spec(new), old) != fixed(spec(old), old)).then_some(error)
}

/// A claim's spec without what an update may change (`old` is the claim before it).
fn fixed_claim_spec(mut spec: Value, old: &Value) -> Value {
    if let Some(map) = spec.as_object_mut() {
        map.remove("volumeAttributesClassName");
        if let Some(resources) = map.get_mut("resources").and_then(Value::as_object_mut) {
            resources.remove("requests");
        }
        // Set by the binder on claims that named no volume.
        if old.pointer("/spec/volumeName").is_none() {
            map.remove("volumeName");
        }
    }
    spec
}

/// A pod's spec without what an update may change.
fn fixed_pod_spec(mut spec: Value, _old: &Value) -> Value {
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                if let Some(map) = container.as_object_mut() {
                    map.remove("image");
                }
            }
        }
    }
    if let Some(map) = spec.as_object_mut() {
        for field in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
        ] {
            map.remove(field);
        }
    }
    spec
}

/// A StatefulSet's spec without what an update may change.
fn fixed_stateful_set_spec(mut spec: Value, _old: &Value) -> Value {
    if let Some(map) = spec.as_object_mut() {
        for field in [
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ] {
            map.remove(field);
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_kinds::find_kind;

    fn messages(kind: &str, object: Value, old: Option<Value>) -> Vec<String> {
        validate(find_kind(kind).unwrap(), &object, old.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn pv(server: &str) -> Value {
        json!({"metadata": {"name": "hub-home-nfs"}, "spec": {
            "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": server, "path": "/homes/hub"}, "persistentVolumeReclaimPolicy": "Retain"}})
    }

    #[test]
    fn a_volume_source_cannot_change() {
        assert!(messages("pv", pv("10.0.0.1"), None).is_empty());
        let mut retained = pv("10.0.0.1");
        retained["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
        assert!(messages("pv", retained, Some(pv("10.0.0.1"))).is_empty());
        assert_eq!(
            messages("pv", pv("10.0.0.2"), Some(pv("10.0.0.1"))),
            [
                "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"
            ]
        );
    }

    #[test]
    fn volumes_need_a_source_capacity_and_modes() {
        let errors = messages("pv", json!({"metadata": {"name": "v"}, "spec": {}}), None);
        assert_eq!(
            errors,
            [
                "spec.capacity: Required value",
                "spec.accessModes: Required value",
                "spec: Required value: must specify a volume type"
            ]
        );
    }

    #[test]
    fn pods_need_containers_with_images_and_known_volumes() {
        assert_eq!(
            messages(
                "Pod",
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
                None
            ),
            ["spec.containers: Required value"]
        );
        let errors = messages(
            "Pod",
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "home", "mountPath": "/home"}]}]}}),
            None,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(errors[1], "spec.containers[0].image: Required value");
        assert_eq!(
            errors[2],
            "spec.containers[0].volumeMounts[0].name: Not found: \"home\""
        );
    }

    #[test]
    fn pod_specs_are_mostly_immutable() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("b");
        assert!(messages("Pod", new_image, Some(pod.clone())).is_empty());
        let mut new_command = pod.clone();
        new_command["spec"]["containers"][0]["command"] = json!(["x"]);
        assert!(
            messages("Pod", new_command, Some(pod))[0]
                .starts_with("spec: Forbidden: pod updates may not change fields")
        );
    }

    #[test]
    fn deployments_need_a_selector_matching_the_template() {
        let deployment = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            messages("Deployment", deployment, None),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"y\"}: `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn services_and_jobs() {
        assert_eq!(
            messages(
                "Service",
                json!({"metadata": {"name": "proxy-public"}, "spec": {}}),
                None
            ),
            ["spec.ports: Required value"]
        );
        assert!(
            messages(
                "Service",
                json!({"metadata": {"name": "1proxy"}, "spec": {"clusterIP": "None"}}),
                None
            )[0]
            .contains("DNS-1035")
        );
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            messages("Job", job, None),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn claims_are_immutable_except_their_requests() {
        let claim = json!({"metadata": {"name": "home-nfs"}, "spec": {"accessModes": ["ReadWriteMany"], "volumeName": "v", "resources": {"requests": {"storage": "1Mi"}}}});
        let mut bigger = claim.clone();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Mi");
        assert!(messages("pvc", bigger, Some(claim.clone())).is_empty());
        let mut other = claim.clone();
        other["spec"]["volumeName"] = json!("w");
        assert!(
            messages("pvc", other, Some(claim))[0]
                .starts_with("spec: Forbidden: spec is immutable")
        );
    }
}
