//! Label and field selectors as written in a step: checked when the playbook loads unless
//! they are templates, and checked again once rendered, before any request is sent.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::actions::{InvalidInput, StepContext};
use crate::diagnostic::ValueError;
use crate::kube::selectors::{
    FIELD_SELECTOR_HELP, LABEL_SELECTOR_HELP, check_field_selector, check_label_selector,
};

/// A label selector, e.g. `component=singleuser-server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LabelSelector(pub String);

/// A field selector, e.g. `status.phase=Running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldSelector(pub String);

/// What distinguishes the two: the name used in messages, the step key, the check.
trait SelectorKind {
    const WHAT: &'static str;
    const KEY: &'static str;
    const HELP: &'static str;
    fn check(text: &str) -> Result<(), String>;
}

impl SelectorKind for LabelSelector {
    const WHAT: &'static str = "label selector";
    const KEY: &'static str = "selector";
    const HELP: &'static str = LABEL_SELECTOR_HELP;
    fn check(text: &str) -> Result<(), String> {
        check_label_selector(text)
    }
}

impl SelectorKind for FieldSelector {
    const WHAT: &'static str = "field selector";
    const KEY: &'static str = "field_selector";
    const HELP: &'static str = FIELD_SELECTOR_HELP;
    fn check(text: &str) -> Result<(), String> {
        check_field_selector(text)
    }
}

/// Reads a selector, checking it unless it is a template.
fn read_selector<'de, S: SelectorKind, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    struct SelectorVisitor<S>(std::marker::PhantomData<S>);
    impl<S: SelectorKind> Visitor<'_> for SelectorVisitor<S> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {}", S::WHAT)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            if !crate::syntax::is_template(text)
                && let Err(message) = S::check(text)
            {
                return Err(E::custom(ValueError::new(
                    format!("`{{key}}` is not a valid {}: {message}", S::WHAT),
                    S::HELP,
                )));
            }
            Ok(text.to_string())
        }
    }
    deserializer.deserialize_str(SelectorVisitor::<S>(std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for LabelSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read_selector::<LabelSelector, D>(deserializer).map(LabelSelector)
    }
}

impl<'de> Deserialize<'de> for FieldSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read_selector::<FieldSelector, D>(deserializer).map(FieldSelector)
    }
}

/// Renders a selector; one that renders malformed is invalid input.
fn render<S: SelectorKind>(template: &str, cx: &StepContext<'_>) -> anyhow::Result<String> {
    let text = cx.render(template)?;
    S::check(&text).map_err(|message| {
        InvalidInput::new(format!(
            "`{}`: `{text}` (rendered from `{template}`) is not a valid {}: {message}",
            S::KEY,
            S::WHAT
        ))
    })?;
    Ok(text)
}

/// Renders the selectors of a step that has them, checking what they render to.
pub(super) fn render_selectors(
    cx: &StepContext<'_>,
    labels: Option<&LabelSelector>,
    fields: Option<&FieldSelector>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    Ok((
        labels
            .map(|selector| render::<LabelSelector>(&selector.0, cx))
            .transpose()?,
        fields
            .map(|selector| render::<FieldSelector>(&selector.0, cx))
            .transpose()?,
    ))
}
