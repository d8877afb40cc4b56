//! `pause`: an approval gate. The engine asks (or stops with exit 5); approving is journaled.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Action, Outcome, Preview, StepContext};

/// `pause: "message"` or `pause: {message: "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseAction {
    /// Shown when asking for approval.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseOptions {
    message: String,
}

impl<'de> Deserialize<'de> for PauseAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PauseVisitor;
        impl<'de> Visitor<'de> for PauseVisitor {
            type Value = PauseAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message, or `{message: ...}`")
            }
            fn visit_str<E: de::Error>(self, message: &str) -> Result<PauseAction, E> {
                Ok(PauseAction {
                    message: message.to_string(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PauseAction, A::Error> {
                let options =
                    PauseOptions::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PauseAction {
                    message: options.message,
                })
            }
        }
        deserializer.deserialize_any(PauseVisitor)
    }
}

#[async_trait::async_trait]
impl Action for PauseAction {
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        Ok(Preview {
            summary: format!("approval gate: {}", cx.render(&self.message)?),
            diff: None,
        })
    }

    async fn apply(&self, _cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        // The engine has already obtained the approval before calling apply.
        Ok(Outcome::new(false, serde_json::Value::Null))
    }

    fn approval_prompt(&self) -> Option<&str> {
        Some(&self.message)
    }
}
