//! Talking to a Kubernetes API server: the kinds we know (and those the cluster serves, by
//! discovery), building a client, typed helpers, and the template functions that read the
//! cluster.

mod cluster;
pub mod diff;
mod discovery;
mod exec_credential;
pub mod lookups;
pub mod readings;
pub mod selectors;

pub use cluster::{
    Cluster, ClusterOptions, ExecError, ExecOutput, KubeError, ObjectPatch, OutputStream,
    default_kubeconfig_files,
};
// The kinds table and the condition helpers live in the kube-kinds crate, shared with the
// sandbox cluster.
pub use kube_kinds::{Kind, condition, find_kind, has_condition, kind_of_manifest, kinds};
