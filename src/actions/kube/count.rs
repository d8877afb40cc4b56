//! `kube.count`: how many objects match a label and/or field selector, and their names.

use serde::{Deserialize, Serialize};

use super::selectors::render_selectors;
use super::{FieldSelector, KindName, LabelSelector, list_matching};
use crate::actions::{Action, Outcome, Preview, StepContext};

/// `kube.count: {kind, namespace, selector, field_selector}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeCount {
    /// The kind.
    pub kind: KindName,
    /// The namespace (the context's by default; ignored for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A label selector, e.g. `component=singleuser-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// A field selector, e.g. `status.phase=Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<FieldSelector>,
}

impl KubeCount {
    fn selectors(&self, cx: &StepContext<'_>) -> anyhow::Result<(Option<String>, Option<String>)> {
        render_selectors(cx, self.selector.as_ref(), self.field_selector.as_ref())
    }
}

#[async_trait::async_trait]
impl Action for KubeCount {
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let kind = self.kind.resolve(cx).await?;
        let (labels, fields) = self.selectors(cx)?;
        let mut summary = format!("count {}s", kind.kind);
        if let Some(labels) = labels {
            summary.push_str(&format!(" matching {labels}"));
        }
        if let Some(fields) = fields {
            summary.push_str(&format!(" with {fields}"));
        }
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let kind = self.kind.resolve(cx).await?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        let (labels, fields) = self.selectors(cx)?;
        let items = list_matching(
            cx.cluster()?,
            kind,
            namespace.as_deref(),
            labels.as_deref(),
            fields.as_deref(),
        )
        .await?;
        let names: Vec<&str> = items
            .iter()
            .filter_map(|item| {
                item.pointer("/metadata/name")
                    .and_then(|name| name.as_str())
            })
            .collect();
        Ok(Outcome::new(
            false,
            serde_json::json!({"count": items.len(), "names": names}),
        ))
    }

    fn is_read_only(&self) -> bool {
        true
    }
}
