//! `kube.wait`: until an object exists, is gone, or an expression over it is true.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{KindName, describe};
use crate::actions::{Action, Check, Outcome, Preview, StepContext};
use crate::syntax::{Condition, HumanDuration, Templated};

/// `kube.wait: {kind, name, namespace, for: exists | gone | EXPRESSION, timeout}`; the
/// expression sees the object as `object`, e.g. `object.status.phase == 'Bound'`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeWait {
    /// The kind.
    pub kind: KindName,
    /// The object's name.
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `exists`, `gone`, or an expression over `object`.
    #[serde(rename = "for")]
    pub until: Condition,
    /// How long to wait (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Templated<HumanDuration>>,
}

/// Default limit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl KubeWait {
    /// Whether the condition holds now, and the object as it is.
    async fn holds(&self, cx: &StepContext<'_>) -> anyhow::Result<(bool, serde_json::Value)> {
        let kind = self.kind.resolve(cx).await?;
        let name = cx.render(&self.name)?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        let object = cx.cluster()?.get(kind, &name, namespace.as_deref()).await?;
        let holds = match (self.until.as_str(), &object) {
            ("exists", found) => found.is_some(),
            ("gone", found) => found.is_none(),
            (_, None) => false,
            (expression, Some(object)) => {
                let mut vars = cx.vars.clone();
                vars.insert("object".into(), crate::render::to_value(object));
                cx.renderer.is_true(expression, &vars)?
            }
        };
        Ok((holds, object.unwrap_or(serde_json::Value::Null)))
    }

    async fn target(&self, cx: &StepContext<'_>) -> anyhow::Result<String> {
        let kind = self.kind.resolve(cx).await?;
        let namespace = cx.render_optional(self.namespace.as_deref())?;
        Ok(describe(
            kind,
            &cx.render(&self.name)?,
            namespace.as_deref(),
        ))
    }

    fn goal(&self) -> String {
        match self.until.as_str() {
            "exists" => "exists".into(),
            "gone" => "is gone".into(),
            expression => format!("`{expression}`"),
        }
    }
}

#[async_trait::async_trait]
impl Action for KubeWait {
    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        Ok(match self.holds(cx).await? {
            (true, _) => Check::Done(format!(
                "{} {} already",
                self.target(cx).await?,
                self.goal()
            )),
            (false, _) => Check::Pending,
        })
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let mut summary = format!("wait until {} {}", self.target(cx).await?, self.goal());
        if let Some(timeout) = &self.timeout
            && let Some(note) = timeout.rendered_note("timeout", &cx.setting("timeout", timeout)?)
        {
            summary.push_str(&format!(" ({note})"));
        }
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let limit = cx
            .optional_setting("timeout", self.timeout.as_ref())?
            .map_or(DEFAULT_TIMEOUT, |timeout| timeout.0);
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let (holds, object) = self.holds(cx).await?;
            if holds {
                return Ok(Outcome::new(false, object));
            }
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "{} did not reach {} within {}",
                    self.target(cx).await?,
                    self.goal(),
                    HumanDuration(limit)
                );
            }
            tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn expression_names(&self) -> &'static [&'static str] {
        &["object"]
    }

    fn changes_nothing(&self) -> bool {
        true
    }

    fn expressions(&self) -> Vec<&Condition> {
        // `exists` and `gone` are keywords here, not variables.
        match self.until.as_str() {
            "exists" | "gone" => Vec::new(),
            _ => vec![&self.until],
        }
    }
}
