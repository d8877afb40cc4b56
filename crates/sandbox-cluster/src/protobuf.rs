//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`). client-go's typed clients
//! encode built-in kinds as protobuf and do not fall back to JSON: kubectl's imperative
//! `create` commands (`create namespace`, `create job`, `create service` ...) and helm, which
//! keeps its releases in Secrets and deletes them with a protobuf `DeleteOptions`.
//!
//! The format: the magic `k8s\0`, then a `runtime.Unknown` message (type meta, the raw
//! object), the raw object being the kind's message from the Kubernetes `generated.proto`
//! files. The sandbox decodes it by reflection over those files' descriptors
//! (`protobuf.descriptors`, compiled by `scripts/protobuf-descriptors` for every API group the
//! sandbox serves), and turns it into the JSON object the same request would have carried: the
//! proto field names are the JSON names, and a few apimachinery messages (`Time`, `Quantity`,
//! `IntOrString`, `RawExtension` ...) have a JSON form of their own.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value as Field};
use serde_json::{Map, Value, json};

/// The descriptors of the Kubernetes messages, as `protoc --descriptor_set_out` writes them.
static DESCRIPTORS: &[u8] = include_bytes!("protobuf.descriptors");

/// The pool built from [`DESCRIPTORS`]; `None` only if the file is not a descriptor set, which
/// the unit tests rule out.
static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(DESCRIPTORS).ok());

/// The package of apimachinery's meta/v1 messages (`DeleteOptions`, `ObjectMeta` ...).
const META_V1: &str = "apimachinery.pkg.apis.meta.v1";

/// Whether a body is protobuf-encoded (starts with the magic).
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(b"k8s\0")
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let pool = POOL
        .as_ref()
        .ok_or("the sandbox's protobuf descriptors do not load")?;
    let envelope = body.strip_prefix(b"k8s\0").ok_or("not a protobuf body")?;
    let unknown = message(pool, "apimachinery.pkg.runtime.Unknown", envelope)?;
    let type_meta = |field: &str| {
        unknown
            .get_field_by_name("typeMeta")
            .and_then(|meta| match meta.as_ref() {
                Field::Message(meta) => meta
                    .get_field_by_name(field)
                    .and_then(|value| value.as_str().map(str::to_string)),
                _ => None,
            })
            .unwrap_or_default()
    };
    let (api_version, kind) = (type_meta("apiVersion"), type_meta("kind"));
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|raw| raw.as_bytes().cloned())
        .ok_or("the protobuf body holds no object")?;
    // Options kinds (`DeleteOptions`) are registered in every group but live in meta/v1.
    let name = [package(&api_version), META_V1.to_string()]
        .into_iter()
        .map(|package| format!("{package}.{kind}"))
        .find(|name| pool.get_message_by_name(name).is_some())
        .ok_or_else(|| format!("the sandbox does not know {kind} in {api_version}"))?;
    let object = message(pool, &name, &raw)?;
    let mut object = to_json(&Field::Message(object))?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// The proto package of an API version: `apps/v1` is `api.apps.v1`, `v1` is `api.core.v1`,
/// `events.k8s.io/v1` is `api.events.v1`.
fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        Some((group, version)) => {
            let group = group.split('.').next().unwrap_or(group);
            format!("api.{group}.{version}")
        }
        None => format!("api.core.{api_version}"),
    }
}

fn message(pool: &DescriptorPool, name: &str, bytes: &[u8]) -> Result<DynamicMessage, String> {
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("the sandbox does not know the message {name}"))?;
    DynamicMessage::decode(descriptor, bytes).map_err(|error| format!("{name}: {error}"))
}

/// The JSON form of a decoded field value, as the API server would have written it.
fn to_json(value: &Field) -> Result<Value, String> {
    Ok(match value {
        Field::Bool(value) => json!(value),
        Field::I32(value) => json!(value),
        Field::I64(value) => json!(value),
        Field::U32(value) => json!(value),
        Field::U64(value) => json!(value),
        Field::F32(value) => json!(value),
        Field::F64(value) => json!(value),
        Field::String(value) => json!(value),
        Field::EnumNumber(value) => json!(value),
        // Go's []byte is base64 in JSON (a Secret's data).
        Field::Bytes(bytes) => base64(bytes),
        Field::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Field::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(key) => key.clone(),
                    MapKey::Bool(key) => key.to_string(),
                    MapKey::I32(key) => key.to_string(),
                    MapKey::I64(key) => key.to_string(),
                    MapKey::U32(key) => key.to_string(),
                    MapKey::U64(key) => key.to_string(),
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
        Field::Message(message) => message_json(message)?,
    })
}

fn message_json(message: &DynamicMessage) -> Result<Value, String> {
    let field = |name: &str| {
        message
            .get_field_by_name(name)
            .map(|value| value.into_owned())
    };
    let full_name = message.descriptor().full_name().to_string();
    match full_name.as_str() {
        "apimachinery.pkg.apis.meta.v1.Time" => time(message, "%Y-%m-%dT%H:%M:%SZ"),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => time(message, "%Y-%m-%dT%H:%M:%S%.6fZ"),
        "apimachinery.pkg.apis.meta.v1.Duration" => Ok(json!(go_duration(
            field("duration")
                .and_then(|value| value.as_i64())
                .unwrap_or(0)
        ))),
        "apimachinery.pkg.api.resource.Quantity" => Ok(json!(
            field("string")
                .and_then(|value| value.as_str().map(str::to_string))
                .unwrap_or_default()
        )),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            // type 0 is an int, 1 a string.
            if field("type").and_then(|value| value.as_i64()) == Some(1) {
                Ok(json!(
                    field("strVal")
                        .and_then(|value| value.as_str().map(str::to_string))
                        .unwrap_or_default()
                ))
            } else {
                Ok(json!(
                    field("intVal")
                        .and_then(|value| value.as_i32())
                        .unwrap_or(0)
                ))
            }
        }
        // Embedded objects and managed-field sets carry their JSON as bytes.
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = field("raw")
                .and_then(|value| value.as_bytes().cloned())
                .unwrap_or_default();
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&raw).map_err(|error| format!("{full_name}: {error}"))
        }
        _ => {
            let mut object = Map::new();
            for (descriptor, value) in message.fields() {
                object.insert(descriptor.name().to_string(), to_json(value)?);
            }
            Ok(Value::Object(object))
        }
    }
}

/// A `Time` (`seconds`, `nanos`) in the RFC 3339 form the API writes.
fn time(message: &DynamicMessage, format: &str) -> Result<Value, String> {
    let seconds = message
        .get_field_by_name("seconds")
        .and_then(|value| value.as_i64())
        .unwrap_or(0);
    let nanos = message
        .get_field_by_name("nanos")
        .and_then(|value| value.as_i32())
        .unwrap_or(0);
    let timestamp = jiff::Timestamp::new(seconds, nanos)
        .map_err(|error| format!("a time out of range: {error}"))?;
    Ok(json!(timestamp.strftime(format).to_string()))
}

/// Go's `time.Duration.String()` of a whole number of nanoseconds: `1h2m3s`, `1.5s`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    let (hours, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (seconds, fraction) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let mut text = sign.to_string();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    let fraction = format!("{fraction:09}");
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        text.push_str(&format!("{seconds}s"));
    } else {
        text.push_str(&format!("{seconds}.{fraction}s"));
    }
    text
}

fn base64(bytes: &[u8]) -> Value {
    // ByteString serializes as base64, which cannot fail.
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use prost_reflect::prost::Message;

    use super::*;

    fn pool() -> &'static DescriptorPool {
        POOL.as_ref().expect("the descriptors load")
    }

    /// Encodes a JSON-like description of a message (field name to value) as protobuf, with
    /// prost-reflect: the inverse of what the sandbox does, built independently of `to_json`.
    fn build(name: &str, fields: &[(&str, Field)]) -> DynamicMessage {
        let descriptor = pool().get_message_by_name(name).expect(name);
        let mut message = DynamicMessage::new(descriptor);
        for (field, value) in fields {
            message.set_field_by_name(field, value.clone());
        }
        message
    }

    fn string(value: &str) -> Field {
        Field::String(value.into())
    }

    fn object_meta(name: &str) -> Field {
        Field::Message(build(
            "apimachinery.pkg.apis.meta.v1.ObjectMeta",
            &[("name", string(name))],
        ))
    }

    fn envelope(api_version: &str, kind: &str, raw: &DynamicMessage) -> Vec<u8> {
        let type_meta = build(
            "apimachinery.pkg.runtime.TypeMeta",
            &[("apiVersion", string(api_version)), ("kind", string(kind))],
        );
        let unknown = build(
            "apimachinery.pkg.runtime.Unknown",
            &[
                ("typeMeta", Field::Message(type_meta)),
                ("raw", Field::Bytes(raw.encode_to_vec().into())),
                ("contentType", string("")),
            ],
        );
        let mut body = b"k8s\0".to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    #[test]
    fn a_config_map_from_kubectl_create() {
        let metadata = build(
            "apimachinery.pkg.apis.meta.v1.ObjectMeta",
            &[
                ("name", string("settings")),
                ("namespace", string("staging")),
                (
                    "labels",
                    Field::Map([(MapKey::String("app".into()), string("hub"))].into()),
                ),
                ("finalizers", Field::List(vec![string("example.com/hold")])),
            ],
        );
        let config_map = build(
            "api.core.v1.ConfigMap",
            &[
                ("metadata", Field::Message(metadata)),
                (
                    "data",
                    Field::Map(
                        [
                            (MapKey::String("hub".into()), string("staging")),
                            (MapKey::String("empty".into()), string("")),
                        ]
                        .into(),
                    ),
                ),
                ("immutable", Field::Bool(true)),
            ],
        );
        let body = envelope("v1", "ConfigMap", &config_map);
        assert!(is_protobuf(&body));
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "staging", "labels": {"app": "hub"}, "finalizers": ["example.com/hold"]},
                "data": {"hub": "staging", "empty": ""},
                "immutable": true,
            })
        );
    }

    #[test]
    fn a_stateful_set_from_a_typed_client() {
        let claim = build(
            "api.core.v1.PersistentVolumeClaim",
            &[("metadata", object_meta("data"))],
        );
        let spec = build(
            "api.apps.v1.StatefulSetSpec",
            &[
                ("replicas", Field::I32(2)),
                ("serviceName", string("db")),
                (
                    "volumeClaimTemplates",
                    Field::List(vec![Field::Message(claim)]),
                ),
            ],
        );
        let set = build(
            "api.apps.v1.StatefulSet",
            &[
                ("metadata", object_meta("db")),
                ("spec", Field::Message(spec)),
            ],
        );
        let set = decode(&envelope("apps/v1", "StatefulSet", &set)).unwrap();
        assert_eq!(set["kind"], "StatefulSet");
        assert_eq!(set["spec"]["replicas"], 2);
        assert_eq!(set["spec"]["serviceName"], "db");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "data"
        );
    }

    #[test]
    fn secrets_carry_base64_data() {
        let secret = build(
            "api.core.v1.Secret",
            &[
                ("metadata", object_meta("token")),
                (
                    "data",
                    Field::Map(
                        [(
                            MapKey::String("token".into()),
                            Field::Bytes(b"abc".to_vec().into()),
                        )]
                        .into(),
                    ),
                ),
                ("type", string("Opaque")),
            ],
        );
        let secret = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(secret["data"]["token"], "YWJj");
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn a_service_has_int_or_string_ports_and_a_job_a_pod_template() {
        let port = build(
            "api.core.v1.ServicePort",
            &[
                ("name", string("http")),
                ("port", Field::I32(80)),
                (
                    "targetPort",
                    Field::Message(build(
                        "apimachinery.pkg.util.intstr.IntOrString",
                        &[("type", Field::I64(1)), ("strVal", string("web"))],
                    )),
                ),
            ],
        );
        let spec = build(
            "api.core.v1.ServiceSpec",
            &[
                ("ports", Field::List(vec![Field::Message(port)])),
                ("type", string("ClusterIP")),
            ],
        );
        let service = build(
            "api.core.v1.Service",
            &[
                ("metadata", object_meta("web")),
                ("spec", Field::Message(spec)),
            ],
        );
        let service = decode(&envelope("v1", "Service", &service)).unwrap();
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "http", "port": 80, "targetPort": "web"}])
        );

        let memory = build(
            "apimachinery.pkg.api.resource.Quantity",
            &[("string", string("64Mi"))],
        );
        let resources = build(
            "api.core.v1.ResourceRequirements",
            &[(
                "limits",
                Field::Map([(MapKey::String("memory".into()), Field::Message(memory))].into()),
            )],
        );
        let container = build(
            "api.core.v1.Container",
            &[
                ("name", string("cleanup")),
                ("image", string("busybox")),
                ("command", Field::List(vec![string("date")])),
                ("resources", Field::Message(resources)),
            ],
        );
        let pod_spec = build(
            "api.core.v1.PodSpec",
            &[
                ("containers", Field::List(vec![Field::Message(container)])),
                ("restartPolicy", string("Never")),
            ],
        );
        let template = build(
            "api.core.v1.PodTemplateSpec",
            &[("spec", Field::Message(pod_spec))],
        );
        let job_spec = build(
            "api.batch.v1.JobSpec",
            &[
                ("template", Field::Message(template)),
                ("backoffLimit", Field::I32(0)),
            ],
        );
        let created = build(
            "apimachinery.pkg.apis.meta.v1.Time",
            &[("seconds", Field::I64(1_800_000_000))],
        );
        let metadata = build(
            "apimachinery.pkg.apis.meta.v1.ObjectMeta",
            &[
                ("name", string("cleanup")),
                ("creationTimestamp", Field::Message(created)),
            ],
        );
        let job = build(
            "api.batch.v1.Job",
            &[
                ("metadata", Field::Message(metadata)),
                ("spec", Field::Message(job_spec)),
            ],
        );
        let job = decode(&envelope("batch/v1", "Job", &job)).unwrap();
        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["metadata"]["creationTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(
            job["spec"]["template"]["spec"],
            json!({"containers": [{"name": "cleanup", "image": "busybox", "command": ["date"], "resources": {"limits": {"memory": "64Mi"}}}], "restartPolicy": "Never"})
        );
    }

    #[test]
    fn delete_options_are_read_under_any_group_and_unknown_kinds_are_refused() {
        let options = build(
            "apimachinery.pkg.apis.meta.v1.DeleteOptions",
            &[
                ("propagationPolicy", string("Background")),
                ("gracePeriodSeconds", Field::I64(0)),
                ("dryRun", Field::List(vec![string("All")])),
            ],
        );
        for api_version in ["v1", "batch/v1", "meta.k8s.io/v1"] {
            assert_eq!(
                decode(&envelope(api_version, "DeleteOptions", &options)).unwrap(),
                json!({"apiVersion": api_version, "kind": "DeleteOptions", "propagationPolicy": "Background", "gracePeriodSeconds": 0, "dryRun": ["All"]})
            );
        }
        assert!(
            decode(&envelope("v1", "Gadget", &options))
                .unwrap_err()
                .contains("does not know Gadget")
        );
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
    }
}
