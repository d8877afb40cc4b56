//! The `kube.*` actions: read, count, patch, delete, apply and wait for Kubernetes objects.

mod apply;
mod count;
mod delete;
mod exec;
mod get;
mod manifest;
mod patch;
mod selectors;
mod wait;

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

pub use apply::KubeApply;
pub use count::KubeCount;
pub use delete::KubeDelete;
pub use exec::KubeExec;
pub use get::KubeGet;
pub use patch::KubePatch;
pub use selectors::{FieldSelector, LabelSelector};
pub use wait::KubeWait;

use super::{InvalidInput, StepContext};
use crate::diagnostic::ValueError;
use crate::kube::{Cluster, Kind, find_kind, kinds};

/// A kind as written in a step (`PersistentVolume`, `pv`, `pvc`, `Deployment`, `DataMigrate`,
/// ...). A kind of the table is used as it is; any other name is looked up in what the
/// cluster serves when the step reaches it ([`Cluster::served_kind`]), since it may be a
/// custom resource's. Only a name one typo away from a kind of the table is refused when the
/// playbook loads: no kind a cluster serves is that close to a built-in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KindName(pub String);

/// The kind of the table that `name` is a typo of, if it is one (not a name of that kind).
fn typo_of_known_kind(name: &str) -> Option<&'static str> {
    if find_kind(name).is_some() {
        return None;
    }
    let known: Vec<&str> = kinds().iter().map(|kind| kind.kind).collect();
    crate::diagnostic::did_you_mean(name, &known)
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = KindName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kind such as PersistentVolume or Pod")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<KindName, E> {
                if name.trim().is_empty() {
                    return Err(E::custom(ValueError::new(
                        "the kind is empty",
                        "name a kind such as PersistentVolume, pod or DataMigrate",
                    )));
                }
                if !crate::syntax::is_template(name)
                    && let Some(close) = typo_of_known_kind(name)
                {
                    return Err(E::custom(ValueError::new(
                        format!("unknown kind `{name}`"),
                        format!("did you mean `{close}`?"),
                    )));
                }
                Ok(KindName(name.to_string()))
            }
        }
        deserializer.deserialize_str(KindVisitor)
    }
}

impl KindName {
    /// The kind, after rendering: a kind of the table, or one the cluster serves.
    pub async fn resolve(&self, cx: &StepContext<'_>) -> anyhow::Result<&'static Kind> {
        let name = cx.render(&self.0)?;
        if let Some(kind) = find_kind(&name) {
            return Ok(kind);
        }
        if let Some(close) = typo_of_known_kind(&name) {
            return Err(InvalidInput::new(format!(
                "`{}` renders to `{name}`, which is not a known kind; did you mean `{close}`?",
                self.0
            ))
            .into());
        }
        cx.cluster()?.served_kind(&name).await
    }
}

/// Lists the objects that match selectors. A 400 from the server is about the selectors
/// (a field the server cannot select by): invalid input, like a selector that does not parse.
async fn list_matching(
    cluster: &Cluster,
    kind: &Kind,
    namespace: Option<&str>,
    labels: Option<&str>,
    fields: Option<&str>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    match cluster.list(kind, namespace, labels, fields).await {
        Ok(items) => Ok(items),
        Err(error) if error.code() == Some(400) => {
            Err(InvalidInput::new(format!("the server refused the selectors: {error}")).into())
        }
        Err(error) => Err(error.into()),
    }
}

/// `Kind name` or `Kind name in namespace ns`, for plans and messages.
fn describe(kind: &Kind, name: &str, namespace: Option<&str>) -> String {
    match namespace.filter(|_| kind.namespaced) {
        Some(namespace) => format!("{} {name} in namespace {namespace}", kind.kind),
        None => format!("{} {name}", kind.kind),
    }
}

/// A registered object with the values of a Secret masked from now on.
fn register_object(cx: &StepContext<'_>, kind: &Kind, object: &serde_json::Value) {
    if kind.kind != "Secret" {
        return;
    }
    let mut secrets = Vec::new();
    if let Some(data) = object.get("data").and_then(|data| data.as_object()) {
        for value in data.values().filter_map(|value| value.as_str()) {
            secrets.push(value.to_string());
            if let Some(decoded) = decode_base64(value) {
                secrets.push(decoded);
            }
        }
    }
    if let Some(data) = object.get("stringData").and_then(|data| data.as_object()) {
        secrets.extend(
            data.values()
                .filter_map(|value| value.as_str())
                .map(str::to_string),
        );
    }
    cx.renderer.masker().add(secrets);
}

/// Standard base64 (as in a Secret's `data`), decoded as UTF-8 text.
fn decode_base64(text: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    String::from_utf8(bytes)
        .ok()
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_secret_data() {
        assert_eq!(decode_base64("aHVudGVyMg==").as_deref(), Some("hunter2"));
        assert_eq!(decode_base64("not base64!"), None);
    }
}
