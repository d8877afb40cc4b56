//! `kube.patch`: a merge or strategic merge patch; skipped when it would change nothing.

use serde::{Deserialize, Serialize};

use super::{KindName, describe};
use crate::actions::{Action, Check, Outcome, Preview, StepContext};
use crate::kube::{Kind, ObjectPatch, diff};

/// `kube.patch: {kind, name, namespace, merge: {...}}` or `strategic: {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "PatchFields")]
pub struct KubePatch {
    /// The kind.
    pub kind: KindName,
    /// The object's name.
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// An RFC 7386 merge patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<serde_json::Value>,
    /// A Kubernetes strategic merge patch (lists merged by their keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategic: Option<serde_json::Value>,
}

/// The keys as written, checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchFields {
    kind: KindName,
    name: String,
    namespace: Option<String>,
    merge: Option<serde_json::Value>,
    strategic: Option<serde_json::Value>,
}

impl TryFrom<PatchFields> for KubePatch {
    type Error = String;
    fn try_from(fields: PatchFields) -> Result<Self, String> {
        match (&fields.merge, &fields.strategic) {
            (Some(_), Some(_)) => Err("give either `merge:` or `strategic:`, not both".into()),
            (None, None) => {
                Err("missing the patch: add `merge: {...}` or `strategic: {...}`".into())
            }
            _ => Ok(KubePatch {
                kind: fields.kind,
                name: fields.name,
                namespace: fields.namespace,
                merge: fields.merge,
                strategic: fields.strategic,
            }),
        }
    }
}

/// A patch with its target rendered.
struct Target {
    kind: &'static Kind,
    name: String,
    namespace: Option<String>,
    patch: ObjectPatch,
}

impl KubePatch {
    async fn target(&self, cx: &StepContext<'_>) -> anyhow::Result<Target> {
        let patch = match (&self.merge, &self.strategic) {
            (Some(body), _) => ObjectPatch::Merge(cx.render_json(body)?),
            (None, Some(body)) => ObjectPatch::Strategic(cx.render_json(body)?),
            (None, None) => anyhow::bail!("the patch is missing"),
        };
        Ok(Target {
            kind: self.kind.resolve(cx).await?,
            name: cx.render(&self.name)?,
            namespace: cx.render_optional(self.namespace.as_deref())?,
            patch,
        })
    }

    /// The live object and what the server says it would become (dry run): read-only.
    async fn preview(
        &self,
        cx: &StepContext<'_>,
    ) -> anyhow::Result<(Target, serde_json::Value, serde_json::Value)> {
        let target = self.target(cx).await?;
        let cluster = cx.cluster()?;
        let namespace = target.namespace.as_deref();
        let Some(live) = cluster.get(target.kind, &target.name, namespace).await? else {
            anyhow::bail!(
                "cannot patch {}: it does not exist",
                describe(
                    target.kind,
                    &target.name,
                    cluster.namespace_for(target.kind, namespace)
                )
            );
        };
        let after = cluster
            .patch(target.kind, &target.name, namespace, &target.patch, true)
            .await?;
        Ok((target, live, after))
    }
}

#[async_trait::async_trait]
impl Action for KubePatch {
    /// Every write goes through the cluster client.
    fn reports_its_writes(&self) -> bool {
        true
    }

    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        let (_, live, after) = self.preview(cx).await?;
        Ok(if diff::comparable(&live) == diff::comparable(&after) {
            Check::Done("the patch would change nothing".into())
        } else {
            Check::Pending
        })
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let (target, live, after) = self.preview(cx).await?;
        let what = describe(target.kind, &target.name, target.namespace.as_deref());
        Ok(Preview {
            summary: format!("patch {what}"),
            diff: diff::object_diff(&what, Some(&live), &after),
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let target = self.target(cx).await?;
        let object = cx
            .cluster()?
            .patch(
                target.kind,
                &target.name,
                target.namespace.as_deref(),
                &target.patch,
                false,
            )
            .await?;
        Ok(Outcome::new(true, object))
    }
}
