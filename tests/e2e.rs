//! The end-to-end, snapshot and property tests, in one test binary so the crate is linked
//! once (one binary per file linked the whole crate twenty times). Each module is a file of
//! `tests/`; `common` is the fluent builder and the sandbox they share. Run one file's tests
//! with `cargo test --test e2e nfs::`.

mod common;

mod bad_playbooks;
mod blocks;
mod ci_window;
mod cluster_state;
mod contexts;
mod custom_kinds;
mod fleet;
mod includes;
mod interrupts;
mod kube_actions;
mod loops;
mod nfs;
mod plan;
mod real_clients;
mod restore;
mod run;
mod sandbox_auth;
mod sandbox_client;
mod sandbox_dir;
mod sandbox_exec;
mod sandbox_jobs;
mod sandbox_kubectl;
mod sandbox_nfs_sequence;
mod sandbox_state;
mod saved_plans;
mod sync;
mod sync_in_job;
mod sync_in_pod;
mod sync_trust;
mod values_actions;
mod values_fixtures;
mod values_props;
