//! `runbook sandbox deployer deploy CLUSTER HUB`: the sandbox's stand-in for 2i2c's
//! `deployer deploy`, for the objects the NFS procedure touches. It reads the hub's
//! configuration the way the deployer does and creates or updates, as the basehub helm
//! chart does, the hub's namespace, its PersistentVolume `<hub>-home-nfs`, the claim
//! `home-nfs` bound to it, and the `proxy-public` Service, through the cluster of the global
//! `--kubeconfig`/`--context`.
//!
//! What it reads: `DIR/CLUSTER/cluster.yaml`, the hub under `hubs:` by `name`, and its
//! `helm_chart_values_files` (relative to the cluster's directory; later files override
//! earlier ones, maps merged deeply, lists replaced; files with `secret` in the name are
//! sops-encrypted in real repositories and are skipped with a note). A `daskhub` hub's
//! basehub values are under a top-level `basehub:` key. From the values: `nfs.enabled`
//! (default true), `nfs.pv.enabled` (default true), `nfs.pv.serverIP` (required when
//! enabled), `nfs.pv.baseShareName` (default `/homes/`), `nfs.pv.shareNameOverride` (the
//! directory under the base share instead of the hub's name) and `nfs.pv.mountOptions`
//! (the chart's default `[soft, noatime, vers=4.2]`).
//!
//! Like helm, it applies every object even when one fails, then reports every failure
//! (`UPGRADE FAILED: a && b`) and exits 1: a PV whose NFS source changed fails with the
//! API's "is immutable after creation", while the claim and the Service are still applied.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::kube::{Cluster, ClusterOptions, Kind, KubeError, find_kind};

/// The field manager of the applies, as helm's server-side apply names itself.
pub const FIELD_MANAGER: &str = "helm";

/// The deployer stand-in's subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployerCommand {
    /// Deploy a hub: create or update its NFS PersistentVolume and claim and its
    /// `proxy-public` Service from its values files, as `deployer deploy` and the basehub
    /// chart do.
    Deploy(DeployArgs),
}

/// The arguments of `runbook sandbox deployer deploy`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The cluster: a directory under the config directory, holding `cluster.yaml`.
    pub cluster: String,
    /// The hub: a `name` under `hubs:` in `cluster.yaml`; also its namespace and release.
    pub hub: String,
    /// The deployer repository's `config/clusters` directory.
    #[arg(long, value_name = "DIR", default_value = "config/clusters")]
    pub config_dir: PathBuf,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A configuration file cannot be read or is not YAML.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `cluster.yaml` lists no hub of that name.
    #[error("{path}: no hub named {hub:?} under `hubs:` (hubs: {known})")]
    NoSuchHub {
        /// `cluster.yaml`.
        path: PathBuf,
        /// The hub asked for.
        hub: String,
        /// The hubs it lists.
        known: String,
    },
    /// NFS is enabled and no values file sets the server, as the chart requires.
    #[error(
        "{action} FAILED: execution error at (basehub/templates/nfs.yaml): nfs.pv.serverIP is \
         required when nfs.enabled is true, and no values file of hub {hub:?} sets it ({files}){layout}"
    )]
    MissingServer {
        /// `UPGRADE` or `INSTALLATION`.
        action: &'static str,
        /// The hub.
        hub: String,
        /// The files read and skipped.
        files: String,
        /// A hint when the values may be under the other chart's layout.
        layout: String,
    },
    /// The API refused objects.
    #[error("{action} FAILED: {}", .errors.join(" && "))]
    Rejected {
        /// `UPGRADE` or `INSTALLATION`.
        action: &'static str,
        /// One message per refused object, as helm words them.
        errors: Vec<String>,
    },
    /// The cluster could not be reached or answered unexpectedly.
    #[error(transparent)]
    Kube(Box<KubeError>),
}

/// The NFS share the hub's PersistentVolume points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsShare {
    /// `nfs.pv.serverIP`: an IP or a DNS name.
    pub server: String,
    /// `baseShareName` followed by `shareNameOverride` or the hub's name.
    pub path: String,
    /// `nfs.pv.mountOptions`.
    pub mount_options: Vec<Value>,
}

/// A hub's release as the stand-in deploys it.
#[derive(Debug, Clone)]
pub struct HubRelease {
    /// The hub: namespace and release name.
    pub hub: String,
    /// `helm_chart`: `basehub` or `daskhub`.
    pub chart: String,
    /// The values files read, in order, as `cluster.yaml` names them.
    pub files_read: Vec<String>,
    /// The encrypted values files skipped.
    pub files_skipped: Vec<String>,
    /// The merged values (for `daskhub`, those under `basehub:`).
    pub values: Value,
}

fn read_yaml(path: &Path) -> Result<Value, DeployError> {
    let config_error = |message: String| DeployError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| config_error(error.to_string()))?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|error| config_error(error.to_string()))?;
    // An empty file (or one of comments) is an empty map, as helm reads it.
    Ok(documents
        .into_iter()
        .find(|document| !document.is_null())
        .unwrap_or_else(|| json!({})))
}

/// Merges `overlay` into `base` as helm merges values files: maps deeply, anything else
/// replaced, `null` removes the key.
pub fn merge_values(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(&key);
                } else if let Some(existing) = base.get_mut(&key) {
                    merge_values(existing, value);
                } else {
                    base.insert(key, value);
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn lookup<'a>(values: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(values, |value, key| value.get(*key))
        .filter(|value| !value.is_null())
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl HubRelease {
    /// Reads `config_dir/cluster/cluster.yaml` and the hub's values files. Notes about
    /// skipped files go to `note`.
    pub fn read(
        config_dir: &Path,
        cluster: &str,
        hub: &str,
        mut note: impl FnMut(&str),
    ) -> Result<Self, DeployError> {
        let cluster_dir = config_dir.join(cluster);
        let cluster_file = cluster_dir.join("cluster.yaml");
        let config = read_yaml(&cluster_file)?;
        let hubs: Vec<&Value> = config
            .get("hubs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let Some(entry) = hubs
            .iter()
            .find(|entry| entry.get("name").and_then(Value::as_str) == Some(hub))
        else {
            let known: Vec<&str> = hubs
                .iter()
                .filter_map(|entry| entry.get("name").and_then(Value::as_str))
                .collect();
            return Err(DeployError::NoSuchHub {
                path: cluster_file,
                hub: hub.into(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let chart = entry
            .get("helm_chart")
            .and_then(Value::as_str)
            .unwrap_or("basehub")
            .to_string();
        let mut values = json!({});
        let mut files_read = Vec::new();
        let mut files_skipped = Vec::new();
        for file in entry
            .get("helm_chart_values_files")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if file.contains("secret") {
                note(&format!(
                    "skipping {file}: files with `secret` in their name are sops-encrypted; the \
                     sandbox's deployer does not decrypt them"
                ));
                files_skipped.push(file.to_string());
                continue;
            }
            merge_values(&mut values, read_yaml(&cluster_dir.join(file))?);
            files_read.push(file.to_string());
        }
        if chart == "daskhub" {
            values = values.get("basehub").cloned().unwrap_or_else(|| json!({}));
        }
        Ok(HubRelease {
            hub: hub.into(),
            chart,
            files_read,
            files_skipped,
            values,
        })
    }

    /// The NFS share of the hub's PersistentVolume; `None` when NFS is disabled, an error
    /// (as the chart fails) when it is enabled without a server. `installing` words it.
    pub fn nfs_share(&self, installing: bool) -> Result<Option<NfsShare>, DeployError> {
        let enabled = |path: &[&str]| lookup(&self.values, path) != Some(&Value::Bool(false));
        if !enabled(&["nfs", "enabled"]) || !enabled(&["nfs", "pv", "enabled"]) {
            return Ok(None);
        }
        let Some(server) = lookup(&self.values, &["nfs", "pv", "serverIP"])
            .and_then(text_of)
            .filter(|server| !server.is_empty())
        else {
            let mut files = format!("read: {}", self.files_read.join(", "));
            if !self.files_skipped.is_empty() {
                files += &format!("; skipped: {}", self.files_skipped.join(", "));
            }
            // The commonest cause: values written for the other chart's layout.
            let layout = match self.chart.as_str() {
                "daskhub" => String::new(),
                _ if self.values.get("basehub").is_some() => format!(
                    "; the values have a top-level `basehub:` key, which only a daskhub reads, \
                     and hub {:?} uses helm_chart {:?}",
                    self.hub, self.chart
                ),
                _ => String::new(),
            };
            return Err(DeployError::MissingServer {
                action: action(installing),
                hub: self.hub.clone(),
                files,
                layout,
            });
        };
        let base = lookup(&self.values, &["nfs", "pv", "baseShareName"])
            .and_then(text_of)
            .unwrap_or_else(|| "/homes/".into());
        let share = lookup(&self.values, &["nfs", "pv", "shareNameOverride"])
            .and_then(text_of)
            .filter(|share| !share.is_empty())
            .unwrap_or_else(|| self.hub.clone());
        let mount_options = lookup(&self.values, &["nfs", "pv", "mountOptions"])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![json!("soft"), json!("noatime"), json!("vers=4.2")]);
        Ok(Some(NfsShare {
            server,
            path: format!("{base}{share}"),
            mount_options,
        }))
    }

    /// The objects of the release, in helm's install order: the PersistentVolume and its
    /// claim (when NFS is enabled), then the `proxy-public` Service.
    pub fn manifests(&self, share: Option<&NfsShare>) -> Vec<Value> {
        let hub = &self.hub;
        let metadata = |name: &str, namespaced: bool, labels: Value| {
            let mut labels = labels;
            labels["app.kubernetes.io/managed-by"] = json!("Helm");
            let mut metadata = json!({
                "name": name,
                "labels": labels,
                "annotations": {
                    "meta.helm.sh/release-name": hub,
                    "meta.helm.sh/release-namespace": hub,
                },
            });
            if namespaced {
                metadata["namespace"] = json!(hub);
            }
            metadata
        };
        let mut objects = Vec::new();
        if let Some(share) = share {
            let volume = format!("{hub}-home-nfs");
            // No reclaim policy: the chart sets none, so the API's default applies (Retain
            // for a volume created by hand).
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": metadata(&volume, false, json!({})),
                "spec": {
                    "capacity": {"storage": "1Mi"},
                    "accessModes": ["ReadWriteMany"],
                    "nfs": {"server": share.server, "path": share.path},
                    "mountOptions": share.mount_options,
                },
            }));
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": metadata("home-nfs", true, json!({})),
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "volumeName": volume,
                    "storageClassName": "",
                    "resources": {"requests": {"storage": "1Mi"}},
                },
            }));
        }
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(
                "proxy-public",
                true,
                json!({"app": "jupyterhub", "component": "proxy-public", "release": hub}),
            ),
            "spec": {
                "type": "ClusterIP",
                "ports": [{"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"}],
                "selector": {"component": "proxy"},
            },
        }));
        objects
    }
}

impl From<KubeError> for DeployError {
    fn from(error: KubeError) -> Self {
        DeployError::Kube(Box::new(error))
    }
}

fn action(installing: bool) -> &'static str {
    if installing {
        "INSTALLATION"
    } else {
        "UPGRADE"
    }
}

fn kind(name: &str) -> Result<&'static Kind, DeployError> {
    find_kind(name).ok_or_else(|| DeployError::Config {
        path: PathBuf::new(),
        message: format!("the sandbox serves no kind {name}"),
    })
}

/// The API's own words for a refused request.
fn api_message(error: &KubeError) -> String {
    match error {
        KubeError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// What a deploy says as it goes: helm's own lines (stdout), and notes about what the
/// stand-in did not read (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A line helm (or the deployer) prints.
    Line(&'a str),
    /// A note about the configuration.
    Note(&'a str),
}

/// Deploys the hub, telling `say` what it does.
pub async fn deploy(
    args: &DeployArgs,
    cluster: &Cluster,
    mut say: impl FnMut(Message<'_>),
) -> Result<(), DeployError> {
    let release = HubRelease::read(&args.config_dir, &args.cluster, &args.hub, |note| {
        say(Message::Note(note));
    })?;
    let hub = release.hub.as_str();
    let namespaces = kind("Namespace")?;
    let installing = cluster.get(namespaces, hub, None).await?.is_none();
    let files: Vec<String> = release
        .files_read
        .iter()
        .map(|file| format!("--values={file}"))
        .collect();
    say(Message::Line(&format!(
        "Running helm upgrade --install --create-namespace --namespace={hub} {hub} \
         helm-charts/{chart} {files} (the sandbox's stand-in: namespace, NFS volume and \
         claim, proxy-public)",
        chart = release.chart,
        files = files.join(" "),
    )));
    // The chart fails before anything is applied.
    let share = release.nfs_share(installing)?;
    if installing {
        say(Message::Line(&format!(
            "Release {hub:?} does not exist. Installing it now."
        )));
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": hub}});
        cluster
            .apply_as(namespaces, hub, None, &namespace, FIELD_MANAGER)
            .await?;
    }
    let mut errors = Vec::new();
    for manifest in release.manifests(share.as_ref()) {
        let kind_name = manifest["kind"].as_str().unwrap_or_default().to_string();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = kind(&kind_name)?;
        let namespace = kind.namespaced.then_some(hub);
        let exists = cluster.get(kind, &name, namespace).await?.is_some();
        match cluster
            .apply_as(kind, &name, namespace, &manifest, FIELD_MANAGER)
            .await
        {
            Ok(_) => {}
            Err(error @ KubeError::Transport(..)) => return Err(error.into()),
            // Like helm, go on with the other objects and report every failure at the end.
            Err(error) => {
                let message = api_message(&error);
                errors.push(if exists {
                    format!("cannot patch {name:?} with kind {kind_name}: {message}")
                } else {
                    format!("failed to create resource: {message}")
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(DeployError::Rejected {
            action: action(installing),
            errors,
        });
    }
    if !installing {
        say(Message::Line(&format!(
            "Release {hub:?} has been upgraded. Happy Helming!"
        )));
    }
    let deployed = jiff::Zoned::now()
        .strftime("%a %b %e %H:%M:%S %Y")
        .to_string();
    for line in [
        format!("NAME: {hub}"),
        format!("LAST DEPLOYED: {deployed}"),
        format!("NAMESPACE: {hub}"),
        "STATUS: deployed".into(),
    ] {
        say(Message::Line(&line));
    }
    Ok(())
}

/// Runs a deployer command against the cluster of `--kubeconfig`/`--context`.
pub async fn run_command(command: DeployerCommand, options: &ClusterOptions) -> crate::Result<()> {
    match command {
        DeployerCommand::Deploy(args) => {
            let cluster = Cluster::connect(options).await?;
            deploy(&args, &cluster, |message| match message {
                Message::Line(line) => println!("{line}"),
                Message::Note(note) => eprintln!("note: {note}"),
            })
            .await
            .map_err(anyhow::Error::from)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values files of real hubs (2i2c's infrastructure repository).
    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/values")
    }

    /// A `config/clusters` tree with one cluster `c`: `cluster.yaml` and files copied from
    /// the fixtures (`(fixture, name in the tree)`) or written (`("text:...", name)`).
    fn tree(cluster_yaml: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cluster_dir = dir.path().join("c");
        std::fs::create_dir_all(&cluster_dir).unwrap();
        std::fs::write(cluster_dir.join("cluster.yaml"), cluster_yaml).unwrap();
        for (source, name) in files {
            let text = match source.strip_prefix("text:") {
                Some(text) => text.to_string(),
                None => std::fs::read_to_string(fixtures().join(source)).unwrap(),
            };
            std::fs::write(cluster_dir.join(name), text).unwrap();
        }
        dir
    }

    fn cluster_yaml(hub: &str, chart: &str, files: &[&str]) -> String {
        let files: String = files.iter().map(|file| format!("  - {file}\n")).collect();
        format!(
            "name: c\nhubs:\n- name: other\n  helm_chart: basehub\n  helm_chart_values_files: []\n\
             - name: {hub}\n  helm_chart: {chart}\n  helm_chart_values_files:\n{files}"
        )
    }

    fn share(dir: &Path, hub: &str) -> Result<Option<NfsShare>, DeployError> {
        HubRelease::read(dir, "c", hub, |_| {})?.nfs_share(false)
    }

    #[test]
    fn the_hhmi_cluster_file_and_a_share_name_override() {
        let dir = tree(
            &std::fs::read_to_string(fixtures().join("hhmi_cluster.yaml")).unwrap(),
            &[("hhmi_staging.values.yaml", "staging.values.yaml")],
        );
        let share = share(dir.path(), "staging").unwrap().unwrap();
        assert_eq!(
            share.server,
            "storage-quota-home-nfs.spyglass.svc.cluster.local"
        );
        assert_eq!(share.path, "/homes/spyglass");
        assert_eq!(
            share.mount_options,
            [json!("soft"), json!("noatime"), json!("vers=4.2")]
        );
    }

    #[test]
    fn secret_files_are_skipped_with_a_note() {
        let dir = tree(
            &cluster_yaml(
                "prod",
                "basehub",
                &["common.values.yaml", "enc-prod.secret.values.yaml"],
            ),
            &[
                ("utoronto_common.values.yaml", "common.values.yaml"),
                ("text:not: [yaml", "enc-prod.secret.values.yaml"),
            ],
        );
        let mut notes = Vec::new();
        let release = HubRelease::read(dir.path(), "c", "prod", |note| {
            notes.push(note.to_string());
        })
        .unwrap();
        assert_eq!(release.files_skipped, ["enc-prod.secret.values.yaml"]);
        assert!(notes[0].starts_with("skipping enc-prod.secret.values.yaml"));
        let share = release.nfs_share(false).unwrap().unwrap();
        assert_eq!(
            (share.server.as_str(), share.path.as_str()),
            (
                "2i2cutorontohubstorage.file.core.windows.net",
                "/2i2cutorontohubstorage/homes/prod"
            )
        );
        assert_eq!(share.mount_options.len(), 3);
    }

    #[test]
    fn later_files_override_earlier_ones() {
        let dir = tree(
            &cluster_yaml(
                "prod",
                "basehub",
                &["common.values.yaml", "prod.values.yaml"],
            ),
            &[
                ("projectpythia_common.values.yaml", "common.values.yaml"),
                (
                    "text:# The new server.\nnfs:\n  pv:\n    serverIP: 10.0.0.9\n    baseShareName: /\n",
                    "prod.values.yaml",
                ),
            ],
        );
        let release = HubRelease::read(dir.path(), "c", "prod", |_| {}).unwrap();
        let share = release.nfs_share(false).unwrap().unwrap();
        assert_eq!(
            (share.server.as_str(), share.path.as_str()),
            ("10.0.0.9", "/prod")
        );
        // The rest of the shared file is still there.
        assert_eq!(release.values["nfs"]["enabled"], true);
    }

    #[test]
    fn a_daskhub_reads_the_values_under_basehub() {
        for (fixture, server) in [
            ("2i2c-aws-us_showcase.values.yaml", "10.100.220.250"),
            ("nasa-cryo_prod.values.yaml", "10.100.102.109"),
            ("openscapeshub_prod.values.yaml", "10.100.200.56"),
        ] {
            let dir = tree(
                &cluster_yaml("hub", "daskhub", &["hub.values.yaml"]),
                &[(fixture, "hub.values.yaml")],
            );
            let share = share(dir.path(), "hub").unwrap().unwrap();
            assert_eq!(share.server, server, "{fixture}");
            assert_eq!(share.path, "/homes/hub");
        }
    }

    #[test]
    fn a_missing_server_fails_naming_the_hub_and_the_files() {
        let dir = tree(
            &cluster_yaml(
                "prod",
                "basehub",
                &["prod.values.yaml", "enc-prod.secret.values.yaml"],
            ),
            &[("openscapeshub_prod.values.yaml", "prod.values.yaml")],
        );
        let error = share(dir.path(), "prod").unwrap_err().to_string();
        assert!(
            error.starts_with("UPGRADE FAILED: execution error at (basehub/templates/nfs.yaml): nfs.pv.serverIP is required"),
            "{error}"
        );
        assert!(error.contains("hub \"prod\""), "{error}");
        assert!(
            error.contains("read: prod.values.yaml; skipped: enc-prod.secret.values.yaml"),
            "{error}"
        );
        assert!(error.contains("only a daskhub reads"), "{error}");
    }

    #[test]
    fn disabled_nfs_deploys_only_the_service() {
        let dir = tree(
            &cluster_yaml("prod", "basehub", &["prod.values.yaml"]),
            &[("text:nfs:\n  enabled: false\n", "prod.values.yaml")],
        );
        let release = HubRelease::read(dir.path(), "c", "prod", |_| {}).unwrap();
        let share = release.nfs_share(true).unwrap();
        assert!(share.is_none());
        let objects = release.manifests(None);
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0]["kind"], "Service");
    }

    #[test]
    fn unknown_hubs_and_files_are_named() {
        let dir = tree(&cluster_yaml("prod", "basehub", &["gone.values.yaml"]), &[]);
        let error = share(dir.path(), "staging").unwrap_err().to_string();
        assert!(
            error.ends_with("no hub named \"staging\" under `hubs:` (hubs: other, prod)"),
            "{error}"
        );
        let error = share(dir.path(), "prod").unwrap_err().to_string();
        assert!(error.contains("gone.values.yaml"), "{error}");
    }

    #[test]
    fn values_merge_like_helm() {
        let mut base = json!({"nfs": {"enabled": true, "pv": {"mountOptions": ["a", "b"], "serverIP": "1"}}, "x": 1});
        merge_values(
            &mut base,
            json!({"nfs": {"pv": {"mountOptions": ["c"], "serverIP": null}}, "y": 2}),
        );
        assert_eq!(
            base,
            json!({"nfs": {"enabled": true, "pv": {"mountOptions": ["c"]}}, "x": 1, "y": 2})
        );
    }
}
