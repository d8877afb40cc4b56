//! `kube.apply`: create, or update what differs, from a manifest written inline or a template
//! in the playbook's `templates/` directory, by server-side apply.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::describe;
use crate::actions::{Action, Check, Outcome, Preview, StepContext};
use crate::kube::{Kind, ObjectPatch, diff, kind_of_manifest};

/// `kube.apply: {manifest: {...}}` or `{template: transfer-pod.yaml}`, with `namespace` for
/// objects that do not name one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ApplyFields")]
pub struct KubeApply {
    /// An object, inline; its strings may be templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
    /// A file under `templates/` next to the playbook, rendered with the step's variables;
    /// it may hold several YAML documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Namespace of namespaced objects that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyFields {
    manifest: Option<serde_json::Value>,
    template: Option<String>,
    namespace: Option<String>,
}

impl TryFrom<ApplyFields> for KubeApply {
    type Error = String;
    fn try_from(fields: ApplyFields) -> Result<Self, String> {
        match (&fields.manifest, &fields.template) {
            (Some(_), Some(_)) => {
                return Err("give either `manifest:` or `template:`, not both".into());
            }
            (None, None) => {
                return Err("missing the object: add `manifest: {...}` or `template: FILE`".into());
            }
            (Some(manifest), None) if !contains_template(manifest) => {
                check_manifest(manifest)?;
            }
            _ => {}
        }
        Ok(KubeApply {
            manifest: fields.manifest,
            template: fields.template,
            namespace: fields.namespace,
        })
    }
}

fn contains_template(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => crate::render::is_template(text),
        serde_json::Value::Array(items) => items.iter().any(contains_template),
        serde_json::Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

/// Checks that a manifest names a known kind, has a name, and has the shape of its kind.
fn check_manifest(manifest: &serde_json::Value) -> Result<&'static Kind, String> {
    let api_version = manifest
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .ok_or("the manifest has no `apiVersion`")?;
    let kind_name = manifest
        .get("kind")
        .and_then(|v| v.as_str())
        .ok_or("the manifest has no `kind`")?;
    let kind = kind_of_manifest(api_version, kind_name).ok_or_else(|| {
        let known: Vec<String> = crate::kube::kinds()
            .iter()
            .map(|k| format!("{} {}", k.api_version, k.kind))
            .collect();
        format!(
            "unknown kind `{kind_name}` in `{api_version}`; known: {}",
            known.join(", ")
        )
    })?;
    if manifest
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(format!("the {kind_name} manifest has no `metadata.name`"));
    }
    kind.validate(manifest)
        .map_err(|error| format!("the {kind_name} manifest is not valid: {error}"))?;
    Ok(kind)
}

/// One object to apply, rendered and checked.
struct Desired {
    kind: &'static Kind,
    name: String,
    namespace: Option<String>,
    manifest: serde_json::Value,
}

impl KubeApply {
    fn desired(&self, cx: &StepContext<'_>) -> anyhow::Result<Vec<Desired>> {
        let documents = match (&self.manifest, &self.template) {
            (Some(manifest), _) => vec![cx.render_json(manifest)?],
            (None, Some(template)) => {
                let path: PathBuf = cx.base_dir.join("templates").join(cx.render(template)?);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the template {}", path.display()))?;
                let rendered = cx
                    .render(&text)
                    .with_context(|| format!("in the template {}", path.display()))?;
                serde_saphyr::from_multiple::<serde_json::Value>(&rendered)
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "{}: the rendered template is not valid YAML: {error}",
                            path.display()
                        )
                    })?
                    .into_iter()
                    .filter(|document| !document.is_null())
                    .collect()
            }
            (None, None) => anyhow::bail!("missing the object"),
        };
        let default_namespace = cx.render_optional(self.namespace.as_deref())?;
        documents
            .into_iter()
            .map(|mut manifest| {
                let kind = check_manifest(&manifest).map_err(|message| anyhow::anyhow!(message))?;
                let name = manifest
                    .pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let namespace = match manifest
                    .pointer("/metadata/namespace")
                    .and_then(|v| v.as_str())
                {
                    Some(namespace) => Some(namespace.to_string()),
                    None if kind.namespaced => {
                        let namespace = default_namespace.clone().unwrap_or_else(|| {
                            cx.cluster
                                .map_or("default", |c| c.default_namespace())
                                .to_string()
                        });
                        manifest["metadata"]["namespace"] =
                            serde_json::Value::from(namespace.clone());
                        Some(namespace)
                    }
                    None => None,
                };
                Ok(Desired {
                    kind,
                    name,
                    namespace,
                    manifest,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Action for KubeApply {
    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        let cluster = cx.cluster()?;
        for desired in self.desired(cx)? {
            match cluster
                .get(desired.kind, &desired.name, desired.namespace.as_deref())
                .await?
            {
                Some(live) if diff::contains(&live, &desired.manifest) => {}
                _ => return Ok(Check::Pending),
            }
        }
        Ok(Check::Done("the live objects already match".into()))
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let cluster = cx.cluster()?;
        let mut summaries = Vec::new();
        let mut diffs = Vec::new();
        for desired in self.desired(cx)? {
            let what = describe(desired.kind, &desired.name, desired.namespace.as_deref());
            let namespace = desired.namespace.as_deref();
            match cluster.get(desired.kind, &desired.name, namespace).await? {
                None => {
                    summaries.push(format!("create {what}"));
                    diffs.extend(diff::object_diff(&what, None, &desired.manifest));
                }
                Some(live) => {
                    let patch = ObjectPatch::Apply(desired.manifest.clone());
                    let after = cluster
                        .patch(desired.kind, &desired.name, namespace, &patch, true)
                        .await?;
                    match diff::object_diff(&what, Some(&live), &after) {
                        Some(change) => {
                            summaries.push(format!("update {what}"));
                            diffs.push(change);
                        }
                        None => summaries.push(format!("{what} already matches")),
                    }
                }
            }
        }
        Ok(Preview {
            summary: summaries.join("; "),
            diff: (!diffs.is_empty()).then(|| diffs.join("")),
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let cluster = cx.cluster()?;
        let mut applied = Vec::new();
        for desired in self.desired(cx)? {
            let patch = ObjectPatch::Apply(desired.manifest);
            applied.push(
                cluster
                    .patch(
                        desired.kind,
                        &desired.name,
                        desired.namespace.as_deref(),
                        &patch,
                        false,
                    )
                    .await?,
            );
        }
        let output = match applied.len() {
            1 => applied.remove(0),
            _ => serde_json::Value::Array(applied),
        };
        Ok(Outcome::new(true, output))
    }
}
