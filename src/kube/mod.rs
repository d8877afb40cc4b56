//! Talking to a Kubernetes API server: the kinds we know, building a client, typed helpers,
//! and the template functions that read the cluster.

mod cluster;
mod conditions;
pub mod diff;
mod exec_credential;
pub mod kinds;
pub mod lookups;
pub mod selectors;

pub use cluster::{
    Cluster, ClusterOptions, ExecError, ExecOutput, KubeError, ObjectPatch, OutputStream,
    default_kubeconfig_files,
};
pub use conditions::{condition, has_condition};
pub use kinds::{Kind, find_kind, kind_of_manifest, kinds};
