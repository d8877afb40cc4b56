//! `kube.get`: read one object and register it.

use serde::{Deserialize, Serialize};

use super::{KindName, describe, register_object};
use crate::actions::{Action, Outcome, Preview, StepContext};
use crate::syntax::Templated;

/// `kube.get: {kind, name, namespace, optional}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeGet {
    /// The kind.
    pub kind: KindName,
    /// The object's name.
    pub name: String,
    /// Its namespace (the context's by default; ignored for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Register `none` instead of failing when the object does not exist.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub optional: Templated<bool>,
}

#[async_trait::async_trait]
impl Action for KubeGet {
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let kind = self.kind.resolve(cx).await?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        let mut summary = format!(
            "read {}",
            describe(kind, &cx.render(&self.name)?, namespace.as_deref())
        );
        let optional = cx.setting("optional", &self.optional)?;
        if let Some(note) = self.optional.rendered_note("optional", &optional) {
            summary.push_str(&format!(" ({note})"));
        }
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let kind = self.kind.resolve(cx).await?;
        let name = cx.render(&self.name)?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        let optional = cx.setting("optional", &self.optional)?;
        let cluster = cx.cluster()?;
        match cluster.get(kind, &name, namespace.as_deref()).await? {
            Some(object) => {
                register_object(cx, kind, &object);
                Ok(Outcome::new(false, object))
            }
            None if optional => Ok(Outcome::new(false, serde_json::Value::Null)),
            None => {
                let namespace = cluster.namespace_for(kind, namespace.as_deref());
                anyhow::bail!("{} does not exist", describe(kind, &name, namespace))
            }
        }
    }

    fn is_read_only(&self) -> bool {
        true
    }
}
