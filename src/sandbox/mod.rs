//! The sandbox cluster: an HTTP server on 127.0.0.1 that speaks the Kubernetes API for the
//! kinds in [`crate::kube::kinds`], for tests, demos and dry runs.
