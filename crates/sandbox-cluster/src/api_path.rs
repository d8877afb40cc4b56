//! The URL paths the API serves, parsed: discovery documents, OpenAPI documents, and
//! resource paths (`/api/v1/namespaces/{ns}/pods/{name}/status`, `/apis/apps/v1/deployments`).

use kube_kinds::Kind;

/// What a path addresses.
#[derive(Debug, Clone)]
pub enum ApiPath {
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: the named groups.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of a group version.
    Resources {
        /// `""` for the core group.
        group: String,
        /// `v1`.
        version: String,
    },
    /// `/openapi/v3`: the index of OpenAPI documents.
    OpenApiIndex,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`.
    OpenApi {
        /// `""` for the core group.
        group: String,
        /// `v1`.
        version: String,
    },
    /// A resource path.
    Resource(ResourcePath),
}

/// A collection, an object or an object's subresource.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    /// The kind served there.
    pub kind: &'static Kind,
    /// The namespace in the path (`None` for cluster-scoped kinds and all-namespace lists).
    pub namespace: Option<String>,
    /// The object's name (`None` for a collection).
    pub name: Option<String>,
    /// `status`, ...
    pub subresource: Option<String>,
}

/// The kinds the cluster serves at the time of a request (the table's and those of its
/// CustomResourceDefinitions, see [`State::served_kinds`](super::cluster::State::served_kinds)).
#[derive(Debug, Clone, Copy)]
pub struct Served<'a>(pub &'a [&'static Kind]);

impl Served<'_> {
    fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
        self.0
            .iter()
            .copied()
            .find(|kind| kind.group == group && kind.version == version && kind.plural == plural)
    }

    /// Whether `group`/`version` is served.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.0
            .iter()
            .any(|kind| kind.group == group && kind.version == version)
    }

    fn serves_group(&self, group: &str) -> bool {
        self.0
            .iter()
            .any(|kind| kind.group == group && !group.is_empty())
    }
}

impl ApiPath {
    /// Parses a URL path; `None` for anything the sandbox does not serve.
    pub fn parse(path: &str, served: Served<'_>) -> Option<Self> {
        let serves = |group: &str, version: &str| served.serves(group, version);
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        match segments.as_slice() {
            ["version"] => Some(ApiPath::Version),
            ["healthz" | "readyz" | "livez", ..] => Some(ApiPath::Health),
            ["api"] => Some(ApiPath::CoreVersions),
            ["apis"] => Some(ApiPath::Groups),
            ["apis", group] => served
                .serves_group(group)
                .then(|| ApiPath::Group(group.to_string())),
            ["openapi", "v3"] => Some(ApiPath::OpenApiIndex),
            ["openapi", "v3", "api", version] => serves("", version).then(|| ApiPath::OpenApi {
                group: String::new(),
                version: version.to_string(),
            }),
            ["openapi", "v3", "apis", group, version] => {
                serves(group, version).then(|| ApiPath::OpenApi {
                    group: group.to_string(),
                    version: version.to_string(),
                })
            }
            ["api", version] => serves("", version).then(|| ApiPath::Resources {
                group: String::new(),
                version: version.to_string(),
            }),
            ["apis", group, version] => serves(group, version).then(|| ApiPath::Resources {
                group: group.to_string(),
                version: version.to_string(),
            }),
            ["api", version, rest @ ..] => resource(served, "", version, rest),
            ["apis", group, version, rest @ ..] => resource(served, group, version, rest),
            _ => None,
        }
    }
}

fn resource(served: Served<'_>, group: &str, version: &str, rest: &[&str]) -> Option<ApiPath> {
    let find = |group: &str, version: &str, plural: &str| served.find(group, version, plural);
    let path = |kind: &'static Kind,
                namespace: Option<&str>,
                name: Option<&str>,
                subresource: Option<&str>| {
        // A namespaced kind is only addressed by name inside its namespace, and a
        // cluster-scoped one never inside a namespace.
        let fits = if kind.namespaced {
            namespace.is_some() || name.is_none()
        } else {
            namespace.is_none()
        };
        fits.then(|| {
            ApiPath::Resource(ResourcePath {
                kind,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: subresource.map(str::to_string),
            })
        })
    };
    match rest {
        // `namespaces/{name}/status` is the namespace's subresource, not a collection.
        ["namespaces", namespace, plural] if !matches!(*plural, "status" | "finalize") => {
            path(find(group, version, plural)?, Some(namespace), None, None)
        }
        ["namespaces", namespace, plural, name] => path(
            find(group, version, plural)?,
            Some(namespace),
            Some(name),
            None,
        ),
        ["namespaces", namespace, plural, name, subresource] => path(
            find(group, version, plural)?,
            Some(namespace),
            Some(name),
            Some(subresource),
        ),
        [plural] => path(find(group, version, plural)?, None, None, None),
        [plural, name] => path(find(group, version, plural)?, None, Some(name), None),
        [plural, name, subresource] => path(
            find(group, version, plural)?,
            None,
            Some(name),
            Some(subresource),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Option<ApiPath> {
        let table: Vec<&'static Kind> = kube_kinds::kinds().iter().collect();
        ApiPath::parse(path, Served(&table))
    }

    fn resource_path(path: &str) -> ResourcePath {
        match parse(path) {
            Some(ApiPath::Resource(resource)) => resource,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let pods = resource_path("/api/v1/namespaces/hub/pods");
        assert_eq!(
            (
                pods.kind.kind,
                pods.namespace.as_deref(),
                pods.name.as_deref()
            ),
            ("Pod", Some("hub"), None)
        );
        let all = resource_path("/api/v1/pods");
        assert_eq!((all.kind.kind, all.namespace.as_deref()), ("Pod", None));
        let status = resource_path("/apis/apps/v1/namespaces/hub/deployments/d/status");
        assert_eq!(
            (
                status.kind.kind,
                status.name.as_deref(),
                status.subresource.as_deref()
            ),
            ("Deployment", Some("d"), Some("status"))
        );
        let namespace = resource_path("/api/v1/namespaces/hub");
        assert_eq!(
            (namespace.kind.kind, namespace.name.as_deref()),
            ("Namespace", Some("hub"))
        );
        let namespace_status = resource_path("/api/v1/namespaces/hub/status");
        assert_eq!(
            (
                namespace_status.kind.kind,
                namespace_status.subresource.as_deref()
            ),
            ("Namespace", Some("status"))
        );
        let pv = resource_path("/api/v1/persistentvolumes/v");
        assert_eq!(
            (pv.kind.kind, pv.name.as_deref()),
            ("PersistentVolume", Some("v"))
        );
        let lease = resource_path("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l");
        assert_eq!(lease.kind.kind, "Lease");
    }

    #[test]
    fn paths_that_address_nothing() {
        for path in [
            "/api/v1/gadgets",
            "/api/v1/pods/p",
            "/api/v1/namespaces/hub/persistentvolumes",
            "/apis/apps/v2/deployments",
            "/apis/nothing",
            "/other",
        ] {
            assert!(parse(path).is_none(), "{path}");
        }
        assert!(
            matches!(parse("/apis/apps/v1"), Some(ApiPath::Resources { group, version }) if group == "apps" && version == "v1")
        );
        assert!(
            matches!(parse("/openapi/v3/api/v1"), Some(ApiPath::OpenApi { group, .. }) if group.is_empty())
        );
    }
}
