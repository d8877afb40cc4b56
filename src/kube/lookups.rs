//! Template functions that read the cluster: `kube_get(kind, name, namespace=None)` and
//! `kube_count(kind, namespace=None, selector=None, field_selector=None)`. Read-only, so
//! they may be used in `check`, `require` and `when`, and by `plan`.

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::{Cluster, Kind, find_kind};

/// A call that cannot work as written (a bad selector, an unknown kind, no cluster): the
/// step that renders it fails as invalid input (exit 2), not as a failed step.
fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(crate::failure::InvalidInput::new(message))
}

/// The kind a lookup names: a kind of the table, or one the cluster serves.
fn kind_named(cluster: &Cluster, name: &str) -> Result<&'static Kind, Error> {
    match find_kind(name) {
        Some(kind) => Ok(kind),
        None => block_on(cluster.served_kind(name))?.map_err(|error| invalid(error.to_string())),
    }
}

/// Runs a cluster request from inside a (synchronous) template function. Templates are
/// rendered on the engine's tokio runtime, so the request is driven with `block_in_place`,
/// which needs the multi-threaded runtime that `main` builds.
fn block_on<T>(future: impl Future<Output = T>) -> Result<T, Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        Ok(_) => Err(invalid(
            "cluster lookups need the multi-threaded runtime".into(),
        )),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(future))
            .map_err(|error| {
                invalid(format!(
                    "cannot start a runtime for a cluster lookup: {error}"
                ))
            }),
    }
}

fn no_cluster(function: &str) -> Error {
    invalid(format!(
        "{function}() needs a cluster: pass --kubeconfig (or set KUBECONFIG), or use --sandbox"
    ))
}

/// Adds `kube_get` and `kube_count` to a template environment. Without a cluster they are
/// still known (so `validate` accepts them) but fail when called.
pub fn register(env: &mut Environment<'static>, cluster: Option<Cluster>) {
    let for_get = cluster.clone();
    env.add_function(
        "kube_get",
        move |kind: String,
              name: String,
              namespace: Option<String>,
              options: Kwargs|
              -> Result<Value, Error> {
            let namespace = match namespace {
                Some(namespace) => Some(namespace),
                None => options.get::<Option<String>>("namespace")?,
            };
            options.assert_all_used()?;
            let cluster = for_get.as_ref().ok_or_else(|| no_cluster("kube_get"))?;
            let kind = kind_named(cluster, &kind)?;
            let object = block_on(cluster.get(kind, &name, namespace.as_deref()))?
                .map_err(|error| invalid(error.to_string()))?;
            Ok(object.map_or(Value::from(()), |object| {
                Value::from(minijinja::value::Serde(&object))
            }))
        },
    );
    env.add_function(
        "kube_count",
        move |kind: String,
              positional: minijinja::value::Rest<Option<String>>,
              options: Kwargs|
              -> Result<usize, Error> {
            // kube_count(kind, namespace=None, selector=None, field_selector=None), by
            // position or by name.
            let argument = |index: usize, name: &str| -> Result<Option<String>, Error> {
                match positional.get(index).cloned().flatten() {
                    Some(value) => Ok(Some(value)),
                    None => options.get::<Option<String>>(name),
                }
            };
            let namespace = argument(0, "namespace")?;
            let selector = argument(1, "selector")?;
            let field_selector = argument(2, "field_selector")?;
            options.assert_all_used()?;
            // A malformed selector is named before any request is sent.
            if let Some(selector) = &selector {
                super::selectors::check_label_selector(selector).map_err(|message| {
                    invalid(format!(
                        "kube_count(): `selector='{selector}'` is not a valid label selector: {message}"
                    ))
                })?;
            }
            if let Some(selector) = &field_selector {
                super::selectors::check_field_selector(selector).map_err(|message| {
                    invalid(format!(
                        "kube_count(): `field_selector='{selector}'` is not a valid field selector: {message}"
                    ))
                })?;
            }
            let cluster = cluster.as_ref().ok_or_else(|| no_cluster("kube_count"))?;
            let kind = kind_named(cluster, &kind)?;
            let items = block_on(cluster.list(
                kind,
                namespace.as_deref(),
                selector.as_deref(),
                field_selector.as_deref(),
            ))?
            .map_err(|error| invalid(error.to_string()))?;
            Ok(items.len())
        },
    );
}
