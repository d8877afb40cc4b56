//! A hub to migrate: what `runbook run playbooks/nfs-migrate.yaml --sandbox` sets up in its
//! directory before it runs the playbook.
//!
//! ```text
//! DIR/hub-objects.yaml                      the cluster's objects at the start (--objects)
//! DIR/nfs/10.0.0.7/homes/staging/...        the old export, with generated home directories
//! DIR/nfs/10.0.0.9/homes/                   the new export, empty
//! DIR/nfs/10.0.0.8/homes/staging/...        last night's backup of the homes (a Filestore
//!                                           backup restored to an instance of its own)
//! DIR/deployer/config/clusters/sandbox/     cluster.yaml and commented values files
//! DIR/seeded                                written last: the directory is complete
//! ```
//!
//! The objects are those the basehub chart and JupyterHub leave in a hub's namespace, with
//! the traps of the real procedure: the PV's reclaim policy is Delete (changed by hand, as
//! happens), user servers are still running when the run starts (they stop by themselves
//! after a few seconds, see [`LIFETIME_ANNOTATION`]), and the jupyterhub-home-nfs server pod
//! carries the label `component: shared-volume-metrics` that the metrics pods also carry.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::controllers::LIFETIME_ANNOTATION;

/// The file whose presence says the directory was seeded completely.
pub(crate) const SEEDED_MARKER: &str = "seeded";

/// A hub as the sandbox seeds it, built like a fixture:
/// `Hub::new("staging").with_users(2).pv_policy("Delete")`.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The deployer's cluster folder name.
    pub cluster: String,
    /// The hub's name, which is also its namespace.
    pub name: String,
    /// The NFS server the hub's PV points at now.
    pub old_server: String,
    /// The server the migration moves it to.
    pub new_server: String,
    /// The server that holds a backup of the homes, as restoring a Filestore backup to an
    /// instance of its own leaves it: same base share, the homes as they were.
    pub backup_server: String,
    /// `nfs.pv.baseShareName` on both servers.
    pub base_share: String,
    /// The PV's `persistentVolumeReclaimPolicy`.
    pub pv_policy: String,
    /// Running user servers.
    pub users: usize,
    /// When the user servers stop (the first after this, the next ones a few seconds
    /// later); `None`: they never stop by themselves.
    pub users_leave_after_secs: Option<u64>,
    /// How much its users keep in their homes.
    pub homes: HomeSizes,
}

/// How big the generated home directories are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeSizes {
    /// MiB of alice's biggest file (her second one is a quarter of it).
    pub big_file_mib: usize,
    /// Folders of 50 small files in bob's project.
    pub small_file_folders: usize,
}

impl Default for HomeSizes {
    /// About 30 MiB, 2,500 small files.
    fn default() -> Self {
        HomeSizes {
            big_file_mib: 24,
            small_file_folders: 50,
        }
    }
}

impl Hub {
    /// A hub named `name` in cluster `sandbox`, moving from 10.0.0.7 to 10.0.0.9.
    pub fn new(name: &str) -> Self {
        Hub {
            cluster: "sandbox".into(),
            name: name.into(),
            old_server: "10.0.0.7".into(),
            new_server: "10.0.0.9".into(),
            backup_server: "10.0.0.8".into(),
            base_share: "/homes/".into(),
            pv_policy: "Delete".into(),
            users: 2,
            users_leave_after_secs: Some(6),
            homes: HomeSizes::default(),
        }
    }

    /// With homes of these sizes.
    pub fn with_homes(mut self, homes: HomeSizes) -> Self {
        self.homes = homes;
        self
    }

    /// With `count` user servers running.
    pub fn with_users(mut self, count: usize) -> Self {
        self.users = count;
        self
    }

    /// With this reclaim policy on the PV.
    pub fn pv_policy(mut self, policy: &str) -> Self {
        self.pv_policy = policy.into();
        self
    }

    /// User servers that stop after `secs` seconds, or never (`None`).
    pub fn users_leave_after(mut self, secs: Option<u64>) -> Self {
        self.users_leave_after_secs = secs;
        self
    }

    /// The PV's name: `<hub>-home-nfs`, as the basehub chart names it.
    pub fn pv_name(&self) -> String {
        format!("{}-home-nfs", self.name)
    }

    /// The Kubernetes objects of the hub, as a YAML stream for `--objects`.
    pub fn manifests(&self) -> String {
        [
            self.core_manifests(),
            self.metrics_manifests(),
            self.nfs_server_manifest(),
            self.user_pods(),
        ]
        .concat()
    }

    /// The namespace, the `proxy-public` service, the PV and its claim, as helm left them.
    fn core_manifests(&self) -> String {
        let hub = &self.name;
        format!(
            r#"# The hub "{hub}" as the basehub chart and JupyterHub leave it, seeded by runbook.
apiVersion: v1
kind: Namespace
metadata: {{name: {hub}}}
---
apiVersion: v1
kind: Service
metadata:
  name: proxy-public
  namespace: {hub}
  labels: {{app: jupyterhub, component: proxy-public, app.kubernetes.io/managed-by: Helm}}
  annotations: {{meta.helm.sh/release-name: {hub}, meta.helm.sh/release-namespace: {hub}}}
spec:
  type: ClusterIP
  ports: [{{name: http, port: 80, targetPort: 8000}}]
  selector: {{component: proxy}}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {pv}
  labels: {{app.kubernetes.io/managed-by: Helm}}
  annotations: {{meta.helm.sh/release-name: {hub}, meta.helm.sh/release-namespace: {hub}}}
spec:
  capacity: {{storage: 1Mi}}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: {policy}
  nfs: {{server: {server}, path: {path}}}
  mountOptions: [soft, noatime, vers=4.1]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: home-nfs
  namespace: {hub}
  labels: {{app.kubernetes.io/managed-by: Helm}}
  annotations: {{meta.helm.sh/release-name: {hub}, meta.helm.sh/release-namespace: {hub}}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: {pv}
  resources: {{requests: {{storage: 1Mi}}}}
"#,
            pv = self.pv_name(),
            policy = self.pv_policy,
            server = self.old_server,
            path = self.old_path(),
        )
    }

    /// The two metrics deployments that mount the home directories.
    fn metrics_manifests(&self) -> String {
        let hub = &self.name;
        let mut text = String::new();
        for (deployment, component, image) in [
            (
                "shared-dirsize-metrics",
                "shared-dirsize-metrics",
                "quay.io/yuvipanda/prometheus-dirsize-exporter:v3.1",
            ),
            (
                "shared-volume-metrics",
                "shared-volume-metrics",
                "quay.io/prometheus/node-exporter:v1.8.2",
            ),
        ] {
            let _ = write!(
                text,
                r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {deployment}, namespace: {hub}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: jupyterhub, component: {component}}}}}
  template:
    metadata: {{labels: {{app: jupyterhub, component: {component}}}}}
    spec:
      containers:
      - name: metrics
        image: {image}
        volumeMounts: [{{name: home, mountPath: /shared-volume, readOnly: true}}]
      volumes: [{{name: home, persistentVolumeClaim: {{claimName: home-nfs}}}}]
"#
            );
        }
        text
    }

    /// The jupyterhub-home-nfs server's deployment.
    fn nfs_server_manifest(&self) -> String {
        let hub = &self.name;
        let mut text = String::new();
        // The jupyterhub-home-nfs server (the usual destination of such a migration): its pod
        // carries `component: shared-volume-metrics` too, and must survive the procedure.
        let _ = write!(
            text,
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: storage-quota-home-nfs, namespace: {hub}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: jupyterhub-home-nfs}}}}
  template:
    metadata: {{labels: {{app: jupyterhub-home-nfs, component: shared-volume-metrics}}}}
    spec:
      containers:
      - name: nfs-server
        image: ghcr.io/sunu/nfs-ganesha:2024-11-07
        volumeMounts: [{{name: export, mountPath: /export}}]
      volumes: [{{name: export, emptyDir: {{}}}}]
"#
        );
        text
    }

    /// A running server pod per user, each mounting its home directory.
    fn user_pods(&self) -> String {
        let hub = &self.name;
        let mut text = String::new();
        for (index, user) in USERS.iter().take(self.users).enumerate() {
            let lifetime = match self.users_leave_after_secs {
                Some(secs) => format!(
                    "\n  annotations: {{{LIFETIME_ANNOTATION}: {}s}}",
                    secs + 4 * index as u64
                ),
                None => String::new(),
            };
            let _ = write!(
                text,
                r#"---
apiVersion: v1
kind: Pod
metadata:
  name: jupyter-{user}
  namespace: {hub}
  labels: {{app: jupyterhub, component: singleuser-server, hub.jupyter.org/username: {user}}}{lifetime}
spec:
  containers:
  - name: notebook
    image: quay.io/jupyter/scipy-notebook:2024-12-09
    volumeMounts: [{{name: home, mountPath: /home/jovyan, subPath: {user}}}]
  volumes: [{{name: home, persistentVolumeClaim: {{claimName: home-nfs}}}}]
"#
            );
        }
        text
    }

    /// The PV's `spec.nfs.path` now: the base share and the hub's name.
    fn old_path(&self) -> String {
        format!("{}{}", self.base_share, self.name)
    }

    /// Where the sandbox keeps the export `server:base_share` of this hub.
    pub fn export_dir(&self, dir: &Path, server: &str) -> PathBuf {
        dir.join("nfs")
            .join(server)
            .join(self.base_share.trim_matches('/'))
    }

    /// The deployer's `config/clusters` directory in the sandbox.
    pub fn config_dir(dir: &Path) -> PathBuf {
        dir.join("deployer").join("config").join("clusters")
    }

    /// Whether `dir` holds a complete seed.
    pub fn is_seeded(dir: &Path) -> bool {
        dir.join(SEEDED_MARKER).exists()
    }

    /// Writes the hub into `dir`: objects, exports, deployer configuration. A directory left
    /// half-seeded by a crash is seeded again; a complete one is left alone.
    pub fn seed(&self, dir: &Path) -> anyhow::Result<()> {
        if Self::is_seeded(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for partial in ["nfs", "deployer"] {
            let path = dir.join(partial);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
        write_file(&dir.join("hub-objects.yaml"), &self.manifests())?;
        let homes = self.export_dir(dir, &self.old_server).join(&self.name);
        write_homes_sized(&homes, self.homes)
            .with_context(|| format!("cannot write {}", homes.display()))?;
        let new_export = self.export_dir(dir, &self.new_server);
        std::fs::create_dir_all(&new_export)
            .with_context(|| format!("cannot create {}", new_export.display()))?;
        let backup = self.export_dir(dir, &self.backup_server).join(&self.name);
        write_backup(&homes, &backup, self.homes)
            .with_context(|| format!("cannot write {}", backup.display()))?;
        self.write_deployer_config(&Self::config_dir(dir).join(&self.cluster))?;
        write_file(&dir.join(SEEDED_MARKER), "")?;
        Ok(())
    }

    /// `cluster.yaml` and the values files, in the deployer repository's layout and style.
    pub fn write_deployer_config(&self, cluster_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(cluster_dir)
            .with_context(|| format!("cannot create {}", cluster_dir.display()))?;
        let hub = &self.name;
        let cluster = &self.cluster;
        write_file(
            &cluster_dir.join("cluster.yaml"),
            &format!(
                r#"name: {cluster}
provider: gcp
gcp:
  key: enc-deployer-credentials.secret.json
  project: {cluster}-sandbox
  cluster: {cluster}-cluster
  zone: us-central1
support:
  helm_chart_values_files:
  - support.values.yaml
hubs:
- name: {hub}
  display_name: Sandbox {hub}
  domain: {hub}.{cluster}.example.org
  helm_chart: basehub
  helm_chart_values_files:
  - common.values.yaml
  - {hub}.values.yaml
  - enc-{hub}.secret.values.yaml
- name: prod
  display_name: Sandbox prod
  domain: prod.{cluster}.example.org
  helm_chart: basehub
  helm_chart_values_files:
  - common.values.yaml
  - prod.values.yaml
"#
            ),
        )?;
        write_file(&cluster_dir.join("common.values.yaml"), COMMON_VALUES)?;
        write_file(
            &cluster_dir.join(format!("{hub}.values.yaml")),
            &self.own_values(true),
        )?;
        // Encrypted in a real repository; read by nobody here.
        write_file(
            &cluster_dir.join(format!("enc-{hub}.secret.values.yaml")),
            SECRET_VALUES,
        )?;
        write_file(
            &cluster_dir.join("prod.values.yaml"),
            r#"nfs:
  pv:
    serverIP: 10.0.0.8
"#,
        )?;
        Ok(())
    }

    /// The hub's own values file, in the style of the deployer repository: with
    /// `nfs.pv.serverIP` when `with_server`, else the server comes from a file it shares.
    pub fn own_values(&self, with_server: bool) -> String {
        let hub = &self.name;
        let cluster = &self.cluster;
        let server = if with_server {
            format!(
                "nfs:\n  pv:\n    # Google FileStore IP\n    serverIP: {}\n\n",
                self.old_server
            )
        } else {
            format!("# {hub}'s NFS server is set in the values file it shares with another hub.\n")
        };
        format!(
            r#"{server}jupyterhub:
  custom:
    2i2c:
      add_staff_user_ids_to_admin_users: true
      add_staff_user_ids_of_type: "github"
    homepage:
      templateVars:
        org:
          name: Sandbox
          url: https://example.org
          logo_url: https://example.org/logo.png
        designed_by:
          name: 2i2c
          url: https://2i2c.org
  hub:
    config:
      JupyterHub:
        authenticator_class: github
      GitHubOAuthenticator:
        # MUST HAVE TRAILING SLASH
        oauth_callback_url: https://{hub}.{cluster}.example.org/hub/oauth_callback/
        allowed_organizations:
        - 2i2c-org
        scope:
        - read:org
  singleuser:
    memory:
      guarantee: 1G
      limit: 2G   # a user's server is killed above this
"#
        )
    }

    /// The param values `--sandbox` gives the NFS playbook for this hub seeded in `dir`;
    /// `runbook` is the path of the runbook binary (the deployer stand-in is one of its
    /// subcommands).
    pub fn params(&self, dir: &Path, runbook: &Path) -> Vec<(String, String)> {
        let config_dir = Self::config_dir(dir);
        let deploy = format!(
            "{} sandbox deployer deploy --config-dir {}",
            shell_words::quote(&runbook.to_string_lossy()),
            shell_words::quote(&config_dir.to_string_lossy()),
        );
        let source = self.export_dir(dir, &self.old_server);
        let dest = self.export_dir(dir, &self.new_server);
        [
            ("cluster", self.cluster.clone()),
            ("hub", self.name.clone()),
            ("new_server", self.new_server.clone()),
            ("new_base_path", self.base_share.clone()),
            ("source_mount", source.to_string_lossy().into_owned()),
            ("dest_mount", dest.to_string_lossy().into_owned()),
            ("config_dir", config_dir.to_string_lossy().into_owned()),
            ("deploy_command", deploy),
            // The sandbox's users leave within seconds, not within the hour.
            ("active_user_check_interval", "2s".into()),
            // playbooks/restore-homes.yaml
            ("backup_server", self.backup_server.clone()),
            ("backup_path", self.base_share.clone()),
            ("homes_mount", source.to_string_lossy().into_owned()),
            (
                "restore_mount",
                self.export_dir(dir, &self.backup_server)
                    .to_string_lossy()
                    .into_owned(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }
}

/// `common.values.yaml`: shared by every hub of the cluster.
pub const COMMON_VALUES: &str = r#"# Shared by every hub of this cluster.
nfs:
  enabled: true
  pv:
    enabled: true
    # from https://cloud.google.com/filestore/docs/mounting-fileshares
    mountOptions:
    - soft
    - noatime
    - vers=4.1
    baseShareName: /homes/

jupyterhub:
  singleuser:
    defaultUrl: /lab
  scheduling:
    userScheduler:
      enabled: true
"#;

/// A hub's sops-encrypted values file: encrypted in a real repository, read by nobody here.
pub const SECRET_VALUES: &str = r#"jupyterhub:
  hub:
    config:
      GitHubOAuthenticator:
        client_id: ENC[AES256_GCM,data:c2FuZGJveA==,type:str]
        client_secret: ENC[AES256_GCM,data:c2VjcmV0,type:str]
sops:
  version: 3.9.1
"#;

/// User names, in the order their servers are seeded.
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

pub(crate) fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Home directories with what makes copies go wrong: dotfiles and dot-directories, symlinks
/// (one dangling), an empty directory, private modes, names with spaces and accents, one
/// home with most of the bytes (a 24 MiB file), and one with thousands of small files.
pub fn write_homes(homes: &Path) -> std::io::Result<()> {
    write_homes_sized(homes, HomeSizes::default())
}

/// [`write_homes`] with alice's files and bob's project of the sizes given.
pub fn write_homes_sized(homes: &Path, sizes: HomeSizes) -> std::io::Result<()> {
    let mut random = fastrand::Rng::with_seed(0x5eed);
    let file = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::File::create(path)?;
        file.write_all(bytes)
    };

    // alice: most of the bytes.
    let alice = homes.join("alice");
    let mut big = vec![0u8; sizes.big_file_mib << 20];
    random.fill(&mut big);
    file(&alice.join("data/survey-2024.h5"), &big)?;
    big.truncate((sizes.big_file_mib << 20) / 4);
    random.fill(&mut big);
    file(&alice.join("data/survey-2023.h5"), &big)?;
    file(
        &alice.join("analysis.ipynb"),
        br#"{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
    )?;
    file(
        &alice.join(".bash_history"),
        b"ls\ncd data\nh5ls survey-2024.h5\n",
    )?;

    // bob: thousands of small files.
    let bob = homes.join("bob");
    for module in 0..sizes.small_file_folders {
        for index in 0..50 {
            let size = 200 + random.usize(..3000);
            let body: String = (0..size)
                .map(|_| char::from(b'a' + random.u8(..26)))
                .collect();
            file(
                &bob.join(format!("project/src/module_{module:02}/part_{index:02}.py")),
                format!("# module {module} part {index}\n{body}\n").as_bytes(),
            )?;
        }
    }
    file(&bob.join(".gitconfig"), b"[user]\n\tname = Bob\n")?;

    // carol: dotfiles, links, modes and odd names.
    let carol = homes.join("carol");
    file(
        &carol.join(".bashrc"),
        b"export PATH=$HOME/.local/bin:$PATH\n",
    )?;
    file(
        &carol.join(".jupyter/jupyter_server_config.json"),
        br#"{"ServerApp": {"terminado_settings": {"shell_command": ["/bin/bash"]}}}"#,
    )?;
    file(
        &carol.join(".ipynb_checkpoints/thesis-checkpoint.ipynb"),
        br#"{"cells": []}"#,
    )?;
    file(
        &carol.join("thesis/run-3/results.csv"),
        b"step,loss\n1,0.9\n2,0.4\n",
    )?;
    file(
        &carol.join("My Notebook (final).ipynb"),
        br#"{"cells": []}"#,
    )?;
    file(
        &carol.join("données.csv"),
        "ville,population\nLyon,522250\n".as_bytes(),
    )?;
    file(
        &carol.join(".ssh/id_ed25519"),
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )?;
    std::fs::set_permissions(carol.join(".ssh"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(
        carol.join(".ssh/id_ed25519"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    symlink("thesis/run-3", carol.join("latest"))?;
    symlink("/home/jovyan/shared", carol.join("shared"))?;
    std::fs::create_dir_all(carol.join("empty"))?;

    // dave: a usual home; erin: never used hers.
    let dave = homes.join("dave");
    file(&dave.join(".local/share/jupyter/runtime/.keep"), b"")?;
    file(&dave.join("notes.md"), b"# Notes\n")?;
    std::fs::create_dir_all(homes.join("erin"))?;
    Ok(())
}

/// Last night's backup of `homes` in `backup`, and what users did in `homes` since: the
/// files they did not touch have the same size and time in both (as a backup keeps them),
/// carol deleted her results, bob changed his `.gitconfig`, alice wrote a new notebook.
pub fn write_backup(homes: &Path, backup: &Path, sizes: HomeSizes) -> std::io::Result<()> {
    // The same seed writes the same files; their times are then made the same.
    write_homes_sized(backup, sizes)?;
    for entry in walkdir::WalkDir::new(backup) {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(backup)
            .map_err(std::io::Error::other)?;
        let modified = std::fs::metadata(entry.path())?.modified()?;
        std::fs::File::options()
            .write(true)
            .open(homes.join(relative))?
            .set_modified(modified)?;
    }
    std::fs::remove_file(homes.join("carol/thesis/run-3/results.csv"))?;
    std::fs::write(
        homes.join("bob/.gitconfig"),
        "[user]\n\tname = Bob\n\temail = bob@example.org\n",
    )?;
    std::fs::write(
        homes.join("alice/since-the-backup.ipynb"),
        r#"{"cells": [], "metadata": {}}"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_load_into_a_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.yaml");
        std::fs::write(&path, Hub::new("staging").manifests()).unwrap();
        let cluster = crate::Cluster::new(1);
        let count = crate::scenario::load(&cluster, &path).unwrap();
        assert_eq!(count, 9);
        let pv = cluster
            .get(
                kube_kinds::find_kind("PersistentVolume").unwrap(),
                "",
                "staging-home-nfs",
            )
            .unwrap();
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(pv["spec"]["nfs"]["path"], "/homes/staging");
    }

    #[test]
    fn users_that_stay_have_no_lifetime() {
        let manifests = Hub::new("staging").users_leave_after(None).manifests();
        assert!(!manifests.contains(LIFETIME_ANNOTATION));
        let manifests = Hub::new("staging").with_users(3).manifests();
        assert_eq!(manifests.matches(LIFETIME_ANNOTATION).count(), 3);
    }

    #[test]
    fn seeding_is_complete_and_done_once() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::new("staging");
        hub.seed(dir.path()).unwrap();
        assert!(Hub::is_seeded(dir.path()));
        let homes = dir.path().join("nfs/10.0.0.7/homes/staging");
        assert!(homes.join("carol/.ssh/id_ed25519").is_file());
        assert!(homes.join("carol/shared").is_symlink());
        assert!(homes.join("erin").is_dir());
        assert!(dir.path().join("nfs/10.0.0.9/homes").is_dir());
        let values = dir
            .path()
            .join("deployer/config/clusters/sandbox/staging.values.yaml");
        assert!(
            std::fs::read_to_string(&values)
                .unwrap()
                .contains("serverIP: 10.0.0.7")
        );
        // A second seed leaves a change alone.
        std::fs::write(homes.join("dave/notes.md"), "changed").unwrap();
        hub.seed(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(homes.join("dave/notes.md")).unwrap(),
            "changed"
        );
    }
}
