//! The protobuf bodies kubectl's imperative commands send (`kubectl create namespace`,
//! `create configmap`, `create secret generic`): client-go's typed clients encode built-in
//! kinds as protobuf and do not fall back to JSON. The sandbox reads the few kinds those
//! commands create; any other protobuf body is refused with 415.
//!
//! The format: the magic `k8s\0`, then a `runtime.Unknown` message (type meta, the raw
//! object), the raw object being the kind's message from `generated.proto`.

use serde_json::{Map, Value, json};

/// How a field is encoded.
#[derive(Debug, Clone, Copy)]
enum Type {
    String,
    Bytes,
    Int,
    Bool,
    Message(&'static [Field]),
    RepeatedString,
    RepeatedMessage(&'static [Field]),
    StringMap,
    BytesMap,
}

/// A field of a message: its number, its JSON name, its type.
type Field = (u32, &'static str, Type);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Type::String),
    (3, "name", Type::String),
    (4, "uid", Type::String),
    (5, "apiVersion", Type::String),
    (6, "controller", Type::Bool),
    (7, "blockOwnerDeletion", Type::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Type::String),
    (2, "generateName", Type::String),
    (3, "namespace", Type::String),
    (5, "uid", Type::String),
    (6, "resourceVersion", Type::String),
    (7, "generation", Type::Int),
    (11, "labels", Type::StringMap),
    (12, "annotations", Type::StringMap),
    (
        13,
        "ownerReferences",
        Type::RepeatedMessage(OWNER_REFERENCE),
    ),
    (14, "finalizers", Type::RepeatedString),
];

const NAMESPACE: &[Field] = &[
    (1, "metadata", Type::Message(OBJECT_META)),
    (
        2,
        "spec",
        Type::Message(&[(1, "finalizers", Type::RepeatedString)]),
    ),
];

const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Type::Message(OBJECT_META)),
    (2, "data", Type::StringMap),
    (3, "binaryData", Type::BytesMap),
    (4, "immutable", Type::Bool),
];

const SECRET: &[Field] = &[
    (1, "metadata", Type::Message(OBJECT_META)),
    (2, "data", Type::BytesMap),
    (3, "type", Type::String),
    (4, "stringData", Type::StringMap),
    (5, "immutable", Type::Bool),
];

/// Whether a body is protobuf-encoded (starts with the magic).
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(b"k8s\0")
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body.strip_prefix(b"k8s\0").ok_or("not a protobuf body")?;
    let unknown = message(
        envelope,
        &[
            (
                1,
                "typeMeta",
                Type::Message(&[(1, "apiVersion", Type::String), (2, "kind", Type::String)]),
            ),
            (2, "raw", Type::Bytes),
        ],
    )?;
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        _ => {
            return Err(format!(
                "the sandbox reads {kind} in {api_version} as JSON only"
            ));
        }
    };
    let raw = raw_bytes(envelope)?;
    let mut object = message(&raw, schema)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// The `raw` field of the envelope, as bytes (not base64 like the JSON view of it).
fn raw_bytes(envelope: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = Reader {
        bytes: envelope,
        position: 0,
    };
    while let Some((number, wire)) = reader.field()? {
        if let (2, Wire::Bytes(bytes)) = (number, wire) {
            return Ok(bytes.to_vec());
        }
    }
    Err("the protobuf body holds no object".into())
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.position).ok_or("truncated varint")?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or("truncated field")?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.position >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number too large")?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let length = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Wire::Bytes(self.take(length)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((number, wire)))
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn base64(bytes: &[u8]) -> Value {
    // ByteString serializes as base64, which cannot fail.
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap_or(Value::Null)
}

fn message(bytes: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut object = Map::new();
    let mut reader = Reader { bytes, position: 0 };
    while let Some((number, wire)) = reader.field()? {
        let Some((_, name, field_type)) = schema.iter().find(|(field, _, _)| *field == number)
        else {
            continue;
        };
        let name = name.to_string();
        match (field_type, wire) {
            (Type::String, Wire::Bytes(bytes)) => {
                object.insert(name, json!(text(bytes)?));
            }
            (Type::Bytes, Wire::Bytes(bytes)) => {
                object.insert(name, base64(bytes));
            }
            // Two's complement: protobuf int64 carries negatives as large varints.
            (Type::Int, Wire::Varint(value)) => {
                object.insert(name, json!(value as i64));
            }
            (Type::Bool, Wire::Varint(value)) => {
                object.insert(name, json!(value != 0));
            }
            (Type::Message(fields), Wire::Bytes(bytes)) => {
                object.insert(name, message(bytes, fields)?);
            }
            (Type::RepeatedString, Wire::Bytes(bytes)) => {
                push(&mut object, name, json!(text(bytes)?));
            }
            (Type::RepeatedMessage(fields), Wire::Bytes(bytes)) => {
                push(&mut object, name, message(bytes, fields)?);
            }
            (Type::StringMap | Type::BytesMap, Wire::Bytes(bytes)) => {
                let value_type = if matches!(field_type, Type::StringMap) {
                    Type::String
                } else {
                    Type::Bytes
                };
                let entry = message(bytes, &[(1, "key", Type::String), (2, "value", value_type)])?;
                let key = entry
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let value = entry.get("value").cloned().unwrap_or_else(|| {
                    if matches!(field_type, Type::StringMap) {
                        json!("")
                    } else {
                        base64(&[])
                    }
                });
                let map = object.entry(name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            _ => return Err(format!("field {name} has an unexpected encoding")),
        }
    }
    Ok(Value::Object(object))
}

fn push(object: &mut Map<String, Value>, name: String, value: Value) {
    if let Value::Array(items) = object.entry(name).or_insert_with(|| json!([])) {
        items.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, key.as_bytes(), &mut out);
        bytes_field(2, value, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut out = b"k8s\0".to_vec();
        bytes_field(1, &type_meta, &mut out);
        bytes_field(2, raw, &mut out);
        bytes_field(4, b"application/vnd.kubernetes.protobuf", &mut out);
        out
    }

    #[test]
    fn a_config_map_from_kubectl_create() {
        let mut metadata = Vec::new();
        bytes_field(1, b"settings", &mut metadata);
        bytes_field(3, b"staging", &mut metadata);
        bytes_field(11, &entry("app", b"hub"), &mut metadata);
        bytes_field(14, b"example.com/hold", &mut metadata);
        let mut raw = Vec::new();
        bytes_field(1, &metadata, &mut raw);
        bytes_field(2, &entry("hub", b"staging"), &mut raw);
        bytes_field(2, &entry("empty", b""), &mut raw);
        varint(4 << 3, &mut raw);
        varint(1, &mut raw);
        let body = envelope("v1", "ConfigMap", &raw);
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
    fn secrets_carry_base64_data_and_other_kinds_are_refused() {
        let mut raw = Vec::new();
        let mut metadata = Vec::new();
        bytes_field(1, b"token", &mut metadata);
        bytes_field(1, &metadata, &mut raw);
        bytes_field(2, &entry("token", b"abc"), &mut raw);
        bytes_field(3, b"Opaque", &mut raw);
        let secret = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(secret["data"]["token"], "YWJj");
        assert_eq!(secret["type"], "Opaque");
        assert!(
            decode(&envelope("apps/v1", "Deployment", &raw))
                .unwrap_err()
                .contains("JSON only")
        );
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
