//! `assert`: fail unless every expression is true. Read-only.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Action, Outcome, Preview, StepContext};
use crate::diagnostic::ValueError;
use crate::syntax::Condition;

/// `assert: EXPR`, `assert: [EXPR, ...]` or `assert: {that: [...], message: "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssertAction {
    /// Expressions that must all be true.
    pub that: Vec<Condition>,
    /// Shown instead of the failing expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertOptions {
    that: OneOrMany,
    message: Option<String>,
}

struct OneOrMany(Vec<Condition>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression or a list of expressions")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<OneOrMany, E> {
                Condition::deserialize(de::value::StrDeserializer::new(text))
                    .map(|c| OneOrMany(vec![c]))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![Condition(value.to_string())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut conditions = Vec::new();
                while let Some(condition) = seq.next_element::<Condition>()? {
                    conditions.push(condition);
                }
                if conditions.is_empty() {
                    return Err(de::Error::custom(ValueError::new(
                        "`{key}` has no expressions",
                        "list at least one expression, e.g. `{key}: [\"jobs > 2\"]`",
                    )));
                }
                Ok(OneOrMany(conditions))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

impl<'de> Deserialize<'de> for AssertAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AssertVisitor;
        impl<'de> Visitor<'de> for AssertVisitor {
            type Value = AssertAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an expression, a list of expressions, or `{that: [...], message: ...}`",
                )
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AssertAction, E> {
                let that = OneOrMany::deserialize(de::value::StrDeserializer::new(text))?.0;
                Ok(AssertAction {
                    that,
                    message: None,
                })
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<AssertAction, E> {
                Ok(AssertAction {
                    that: vec![Condition(value.to_string())],
                    message: None,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<AssertAction, A::Error> {
                let that = OneOrMany::deserialize(de::value::SeqAccessDeserializer::new(seq))?.0;
                Ok(AssertAction {
                    that,
                    message: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AssertAction, A::Error> {
                let options =
                    AssertOptions::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(AssertAction {
                    that: options.that.0,
                    message: options.message,
                })
            }
        }
        deserializer.deserialize_any(AssertVisitor)
    }
}

#[async_trait::async_trait]
impl Action for AssertAction {
    async fn plan(&self, _cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let expressions: Vec<&str> = self.that.iter().map(Condition::as_str).collect();
        Ok(Preview {
            summary: format!("check that {}", expressions.join(" and ")),
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        for condition in &self.that {
            if !cx.is_true(condition)? {
                let message = match &self.message {
                    Some(message) => cx.render(message)?,
                    None => format!("assertion failed: {}", condition.as_str()),
                };
                anyhow::bail!(message);
            }
        }
        Ok(Outcome::new(false, serde_json::Value::Bool(true)))
    }

    fn is_read_only(&self) -> bool {
        true
    }

    fn expressions(&self) -> Vec<&Condition> {
        self.that.iter().collect()
    }
}
