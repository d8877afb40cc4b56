//! Talking to a Kubernetes API server: the kinds we know, building a client, typed helpers.

pub mod kinds;

pub use kinds::{Kind, find_kind, kind_of_manifest, kinds};
