//! What both sides of the Kubernetes API need to agree on and nothing else: the kinds we
//! know ([`kinds`]), reading `status.conditions` ([`condition`], [`has_condition`]), and the
//! label and field selector grammar of the API server ([`selectors`]). runbook's client
//! checks selectors with the same parser the sandbox cluster serves them with.
//!
//! Knows nothing of runbooks or of the sandbox: it depends on k8s-openapi and kube-core only.

mod conditions;
mod kinds;
pub mod selectors;

pub use conditions::{condition, has_condition};
pub use kinds::{
    CustomKind, Kind, Schema, Validator, custom_kind, find_kind, kind_of_manifest, kinds,
};
