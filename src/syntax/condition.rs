//! Conditions (`when`, `require`, `until`, `check`, `assert`): a minijinja expression, written
//! bare (`jobs > 2`) or in braces (`"{{ jobs > 2 }}"`), or a literal `true`/`false`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::CommandSpec;
use crate::diagnostic::ValueError;

/// An expression that decides something; see the module docs for the forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Condition(pub String);

impl Condition {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConditionVisitor;
        impl Visitor<'_> for ConditionVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression or true/false")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Condition, E> {
                if text.trim().is_empty() {
                    return Err(E::custom(ValueError::new(
                        "`{key}` is empty",
                        "write an expression such as `jobs > 2`, or remove `{key}`",
                    )));
                }
                Ok(Condition(text.to_string()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Condition, E> {
                Ok(Condition(value.to_string()))
            }
        }
        deserializer.deserialize_any(ConditionVisitor)
    }
}

/// `check:` says whether a step is already done: an expression, or a read-only command whose
/// exit code 0 means done.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CheckSpec {
    /// Done when the expression is true.
    Expression(Condition),
    /// Done when the command exits 0.
    Command {
        /// The probe to run.
        run: CommandSpec,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckCommand {
    run: CommandSpec,
}

impl<'de> Deserialize<'de> for CheckSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckVisitor;
        impl<'de> Visitor<'de> for CheckVisitor {
            type Value = CheckSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression, or a mapping with `run:`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<CheckSpec, E> {
                Condition::deserialize(de::value::StrDeserializer::new(text))
                    .map(CheckSpec::Expression)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<CheckSpec, E> {
                Ok(CheckSpec::Expression(Condition(value.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CheckSpec, A::Error> {
                let check = CheckCommand::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(CheckSpec::Command { run: check.run })
            }
        }
        deserializer.deserialize_any(CheckVisitor)
    }
}
