//! `kube.apply`: create, or update what differs, from a manifest written inline or a template
//! in the playbook's `templates/` directory, by server-side apply.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::describe;
use super::manifest::{ManifestText, check_manifest};
use crate::actions::{Action, Check, InvalidInput, Outcome, Preview, StepContext};
use crate::diagnostic::{Diagnostic, Source};
use crate::kube::{Kind, ObjectPatch, diff};

/// `kube.apply: {manifest: {...}}` or `{template: transfer-pod.yaml}`, with `namespace` for
/// objects that do not name one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ApplyFields")]
pub struct KubeApply {
    /// An object, inline; its strings may be templates. Checked when the playbook loads
    /// unless it has templates (see [`Action::check_source`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Spanned<serde_json::Value>>,
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
    manifest: Option<Spanned<serde_json::Value>>,
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
        serde_json::Value::String(text) => crate::syntax::is_template(text),
        serde_json::Value::Array(items) => items.iter().any(contains_template),
        serde_json::Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

/// The first lines and last lines of the YAML documents of a text (split at `---` lines).
fn document_lines(text: &str) -> Vec<(usize, usize)> {
    let mut documents = Vec::new();
    let mut first = 1;
    let count = text.lines().count();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if marker && number > first {
            documents.push((first, number - 1));
            first = number;
        }
    }
    documents.push((first, count.max(first)));
    documents
}

/// The manifests of a rendered template, each checked; a problem is invalid input, shown
/// in the rendered text.
fn checked_documents(
    path: &std::path::Path,
    rendered: &str,
) -> anyhow::Result<Vec<(Option<&'static Kind>, serde_json::Value)>> {
    let source = Source::new(format!("{} (rendered)", path.display()), rendered);
    let documents =
        serde_saphyr::from_multiple::<serde_json::Value>(rendered).map_err(|error| {
            let mut diagnostic = Diagnostic::from_yaml(&source, &error);
            diagnostic.message = format!(
                "the rendered template is not valid YAML: {}",
                diagnostic.message
            );
            InvalidInput::from_diagnostic(&diagnostic)
        })?;
    let mut checked = Vec::new();
    for manifest in documents.into_iter().filter(|document| !document.is_null()) {
        match check_manifest(&manifest) {
            Ok(kind) => checked.push((kind, manifest)),
            Err(problem) => {
                let diagnostic = document_lines(rendered)
                    .into_iter()
                    .map(|(first, last)| ManifestText::document(&source, first, last))
                    .find(|text| text.value().as_ref() == Some(&manifest))
                    .map_or_else(|| problem.diagnostic(), |text| text.explain(&problem));
                return Err(InvalidInput::from_diagnostic(&diagnostic).into());
            }
        }
    }
    Ok(checked)
}

/// One object to apply, rendered and checked.
struct Desired {
    kind: &'static Kind,
    name: String,
    namespace: Option<String>,
    manifest: serde_json::Value,
}

impl KubeApply {
    async fn desired(&self, cx: &StepContext<'_>) -> anyhow::Result<Vec<Desired>> {
        let documents = match (&self.manifest, &self.template) {
            (Some(manifest), _) => {
                let rendered = cx.render_json(&manifest.value)?;
                let kind = check_manifest(&rendered).map_err(|problem| {
                    let mut diagnostic = problem.diagnostic();
                    diagnostic.message = format!("`manifest` (rendered): {}", diagnostic.message);
                    InvalidInput::from_diagnostic(&diagnostic)
                })?;
                vec![(kind, rendered)]
            }
            (None, Some(template)) => {
                let path: PathBuf = cx.base_dir.join("templates").join(cx.render(template)?);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    InvalidInput::new(format!(
                        "`template`: cannot read the template {}: {error}",
                        path.display()
                    ))
                })?;
                let rendered = cx
                    .render(&text)
                    .with_context(|| format!("in the template {}", path.display()))?;
                checked_documents(&path, &rendered)?
            }
            (None, None) => anyhow::bail!("missing the object"),
        };
        // Namespaced objects that name none go to the step's `namespace`, or the kubeconfig's.
        let default_namespace = cx.namespace_or_default(self.namespace.as_deref())?;
        let mut resolved = Vec::new();
        for (kind, manifest) in documents {
            let kind = match kind {
                Some(kind) => kind,
                // Not in the table: a kind the cluster serves, or invalid input.
                None => {
                    let text = |key: &str| {
                        manifest
                            .get(key)
                            .and_then(|value| value.as_str())
                            .unwrap_or_default()
                    };
                    cx.cluster()?
                        .served_manifest_kind(text("apiVersion"), text("kind"))
                        .await?
                }
            };
            resolved.push((kind, manifest));
        }
        resolved
            .into_iter()
            .map(|(kind, mut manifest)| {
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
                        let namespace = default_namespace.clone();
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
    /// Every write goes through the cluster client.
    fn reports_its_writes(&self) -> bool {
        true
    }

    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        let cluster = cx.cluster()?;
        for desired in self.desired(cx).await? {
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
        for desired in self.desired(cx).await? {
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

    fn check_source(&self, source: &Source) -> Result<(), Diagnostic> {
        let Some(manifest) = &self.manifest else {
            return Ok(());
        };
        if contains_template(&manifest.value) {
            return Ok(());
        }
        let Err(problem) = check_manifest(&manifest.value) else {
            return Ok(());
        };
        let start = &manifest.referenced;
        let text = ManifestText::at(
            source,
            usize::try_from(start.line()).unwrap_or(0),
            usize::try_from(start.column()).unwrap_or(0),
            &manifest.value,
        );
        Err(match text {
            Some(text) => text.explain(&problem),
            None => Diagnostic::at(source.at_yaml(start), problem.message()).help(problem.help()),
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let cluster = cx.cluster()?;
        let mut applied = Vec::new();
        for desired in self.desired(cx).await? {
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
