//! `loop:` steps: the step runs once per item of a list, the item as `item`. Each item is
//! run, journaled and reported as a step of its own, `STEP[KEY]`, so that a resumed run does
//! not redo the items that were done; the key comes from the item itself (its text, or a hash
//! of it), not from its place in the list, so that a list that changed between two runs
//! (a lookup's result) still finds the items done before.

use std::collections::{BTreeSet, HashMap};

use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use super::{Loader, Step, StepExtent, TemplateSite};
use crate::diagnostic::Diagnostic;

/// The name a loop step's templates see the current item under.
pub const ITEM: &str = "item";

/// One item of a loop step: the step it is an item of, its key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopItem {
    /// The loop step's id.
    pub step: String,
    /// The item's key in its id (`STEP[KEY]`).
    pub key: String,
    /// The item.
    pub value: serde_json::Value,
}

impl Step {
    /// Whether the step has a `loop:`.
    pub fn loops(&self) -> bool {
        self.spec.loop_over.is_some()
    }

    /// The id the step is known by in the playbook: a loop step's for one of its items.
    pub fn playbook_id(&self) -> &str {
        self.item.as_ref().map_or(self.id(), |item| &item.step)
    }

    /// The step for each item of its loop, with the ids `STEP[KEY]`. Two equal items get
    /// `KEY`, `KEY#2`, ...: each runs, as the list says.
    pub fn items(
        &self,
        values: Vec<serde_json::Value>,
        mask: &dyn Fn(&str) -> String,
    ) -> Vec<Step> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        values
            .into_iter()
            .map(|value| {
                let mut key = item_key(&value, mask);
                let count = seen.entry(key.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    key = format!("{key}#{count}");
                }
                let mut step = self.clone();
                step.spec.id.value = format!("{}[{key}]", self.id());
                step.item = Some(LoopItem {
                    step: self.id().to_string(),
                    key,
                    value,
                });
                step
            })
            .collect()
    }
}

/// An item's key: a short name, number or boolean as it is written; anything else (a mapping,
/// a long or odd string, a string that shows a secret) as a hash of its JSON.
fn item_key(value: &serde_json::Value, mask: &dyn Fn(&str) -> String) -> String {
    let plain = |text: &str| {
        !text.is_empty()
            && text.chars().count() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
            && mask(text) == text
    };
    match value {
        serde_json::Value::String(text) if plain(text) => text.clone(),
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Bool(flag) => flag.to_string(),
        other => {
            let digest = Sha256::digest(other.to_string().as_bytes());
            digest
                .iter()
                .take(4)
                .map(|byte| format!("{byte:02x}"))
                .collect()
        }
    }
}

impl Loader<'_> {
    /// A step's `loop:`: a list (whose strings may be templates), or an expression, bare or
    /// in braces, that gives one; it may use what the step's other templates use, but not
    /// `item`. Returns the names it uses.
    pub(super) fn validate_loop(
        &self,
        over: &Spanned<serde_json::Value>,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let at = self.at(over);
        let what = format!("step `{}`", extent.id);
        match &over.value {
            serde_json::Value::Array(_) => {
                let site = TemplateSite {
                    what: &what,
                    condition: None,
                    first_line: at.line,
                    last_line: extent.end_line,
                    also_known: &[],
                };
                self.check_json_templates(&over.value, known, &site)
            }
            serde_json::Value::String(expression) if !expression.trim().is_empty() => {
                let site = TemplateSite {
                    what: &what,
                    condition: Some("loop"),
                    first_line: at.line,
                    last_line: at.line,
                    also_known: &[],
                };
                self.check_template(expression, known, &site)
            }
            _ => Err(Diagnostic::at(
                at,
                format!(
                    "step `{}`: `loop:` is not a list nor an expression that gives one",
                    extent.id
                ),
            )
            .help(
                "write a list (`loop: [alice, bob]`), or an expression that gives one \
                 (`loop: users`, `loop: \"{{ hubs | map(attribute='name') | list }}\"`)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: serde_json::Value) -> String {
        item_key(&value, &|text: &str| text.replace("s3cret", "***"))
    }

    #[test]
    fn an_item_s_key_is_its_text_when_short_and_plain_else_a_hash() {
        assert_eq!(key(serde_json::json!("alice")), "alice");
        assert_eq!(key(serde_json::json!(42)), "42");
        assert_eq!(key(serde_json::json!("with space")).len(), 8);
        assert_eq!(key(serde_json::json!({"name": "alice"})).len(), 8);
        // A key never shows a secret.
        assert_ne!(key(serde_json::json!("s3cret")), "s3cret");
        // The same item has the same key, whatever its place in the list.
        assert_eq!(
            key(serde_json::json!({"name": "bob"})),
            key(serde_json::json!({"name": "bob"}))
        );
    }
}
