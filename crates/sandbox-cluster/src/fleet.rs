//! A cluster with several hubs to migrate: what `runbook fleet run --sandbox
//! --sandbox-hubs N` seeds in its directory.
//!
//! ```text
//! DIR/hub-objects.yaml                         every hub's objects
//! DIR/nfs/10.0.0.7/homes/HUB/...               each hub's homes, of different sizes
//! DIR/nfs/10.0.0.9/homes/                      the new export, empty
//! DIR/deployer/config/clusters/sandbox/        cluster.yaml listing every hub, values files
//! DIR/vars/sandbox/HUB.yaml                    the vars files of some hubs
//! DIR/seeded                                   written last
//! ```
//!
//! What a real cluster of hubs has that a single hub does not: hubs of different sizes,
//! users that leave at different times, one hub whose users never leave (its migration is
//! refused, the others go on), two hubs sharing the values file that sets their NFS server
//! (changing it for one would move the other), and hubs with vars files of their own.

use std::path::Path;

use anyhow::Context;

use super::hub::{COMMON_VALUES, HomeSizes, Hub, SECRET_VALUES, SEEDED_MARKER, write_file};

/// Hub names, in the order they are seeded.
const NAMES: [&str; 26] = [
    "staging", "prod", "workshop", "research", "climate", "ocean", "genomics", "astro", "seismic",
    "neuro", "ecology", "hydro", "polar", "solar", "marine", "forest", "urban", "health",
    "quantum", "geo", "bio", "chem", "physics", "math", "stats", "data",
];

/// The values file two hubs share, which sets their NFS server.
pub const SHARED_VALUES: &str = "shared-nfs.values.yaml";

/// A cluster of hubs as the sandbox seeds it.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The hubs, in cluster.yaml's order.
    pub hubs: Vec<Hub>,
}

impl Fleet {
    /// `count` hubs (at most 26) of cluster `sandbox`: sizes from 1 to 12 MiB; the third
    /// hub's users never leave (with 3 hubs or more), and its vars file gives up on them
    /// after 3 looks a second apart; the fourth and fifth share [`SHARED_VALUES`]; the
    /// second has a vars file that sets `jobs: 2`.
    pub fn new(count: usize) -> Self {
        let sizes = [(2, 4), (8, 2), (1, 1), (4, 6), (12, 3), (3, 2)];
        let hubs = NAMES
            .iter()
            .take(count.clamp(1, NAMES.len()))
            .enumerate()
            .map(|(index, name)| {
                let (big_file_mib, small_file_folders) = sizes[index % sizes.len()];
                let leave = (index != 2 || count < 3).then_some(3 + 2 * index as u64);
                Hub::new(name)
                    .with_homes(HomeSizes {
                        big_file_mib,
                        small_file_folders,
                    })
                    .users_leave_after(leave)
            })
            .collect();
        Fleet { hubs }
    }

    /// The hub whose users never leave, if there is one.
    pub fn stuck_hub(&self) -> Option<&Hub> {
        self.hubs
            .iter()
            .find(|hub| hub.users_leave_after_secs.is_none())
    }

    /// The two hubs that share [`SHARED_VALUES`], if there are enough hubs.
    pub fn sharing_hubs(&self) -> Option<(&Hub, &Hub)> {
        Some((self.hubs.get(3)?, self.hubs.get(4)?))
    }

    fn shares_values(&self, hub: &Hub) -> bool {
        self.sharing_hubs()
            .is_some_and(|(a, b)| a.name == hub.name || b.name == hub.name)
    }

    /// Writes the cluster into `dir`, unless it was seeded before.
    pub fn seed(&self, dir: &Path) -> anyhow::Result<()> {
        if Hub::is_seeded(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for partial in ["nfs", "deployer", "vars"] {
            let path = dir.join(partial);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
        let objects: Vec<String> = self.hubs.iter().map(Hub::manifests).collect();
        write_file(&dir.join("hub-objects.yaml"), &objects.join("---\n"))?;
        for hub in &self.hubs {
            let homes = hub.export_dir(dir, &hub.old_server).join(&hub.name);
            super::hub::write_homes_sized(&homes, hub.homes)
                .with_context(|| format!("cannot write {}", homes.display()))?;
            let new_export = hub.export_dir(dir, &hub.new_server);
            std::fs::create_dir_all(&new_export)
                .with_context(|| format!("cannot create {}", new_export.display()))?;
        }
        let cluster = self.cluster();
        self.write_deployer_config(&Hub::config_dir(dir).join(&cluster))?;
        let vars = dir.join("vars").join(&cluster);
        if let Some(hub) = self.stuck_hub() {
            write_file(
                &vars.join(format!("{}.yaml", hub.name)),
                "# Its users never leave: look 3 times, a second apart, then give up (exit 3).\nactive_user_checks: 3\nactive_user_check_interval: 1s\n",
            )?;
        }
        if let Some(hub) = self.hubs.get(1) {
            write_file(
                &vars.join(format!("{}.yaml", hub.name)),
                "# A small transfer pod: fewer rsync workers.\njobs: 2\n",
            )?;
        }
        write_file(&dir.join(SEEDED_MARKER), "")?;
        Ok(())
    }

    /// The cluster's folder name.
    pub fn cluster(&self) -> String {
        self.hubs
            .first()
            .map_or_else(|| "sandbox".to_string(), |hub| hub.cluster.clone())
    }

    /// `cluster.yaml` listing every hub, and their values files.
    pub fn write_deployer_config(&self, cluster_dir: &Path) -> anyhow::Result<()> {
        let cluster = self.cluster();
        let mut text = format!(
            "name: {cluster}\nprovider: gcp\ngcp:\n  key: enc-deployer-credentials.secret.json\n  project: {cluster}-sandbox\n  cluster: {cluster}-cluster\n  zone: us-central1\nsupport:\n  helm_chart_values_files:\n  - support.values.yaml\nhubs:\n"
        );
        for hub in &self.hubs {
            let name = &hub.name;
            let shared = if self.shares_values(hub) {
                format!("  - {SHARED_VALUES}\n")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "- name: {name}\n  display_name: Sandbox {name}\n  domain: {name}.{cluster}.example.org\n  helm_chart: basehub\n  helm_chart_values_files:\n  - common.values.yaml\n{shared}  - {name}.values.yaml\n  - enc-{name}.secret.values.yaml\n"
            ));
        }
        write_file(&cluster_dir.join("cluster.yaml"), &text)?;
        write_file(&cluster_dir.join("common.values.yaml"), COMMON_VALUES)?;
        if let Some((a, b)) = self.sharing_hubs() {
            write_file(
                &cluster_dir.join(SHARED_VALUES),
                &format!(
                    "# The NFS server of {} and {}, which share a Filestore instance.\nnfs:\n  pv:\n    serverIP: {}\n",
                    a.name, b.name, a.old_server
                ),
            )?;
        }
        for hub in &self.hubs {
            write_file(
                &cluster_dir.join(format!("{}.values.yaml", hub.name)),
                &hub.own_values(!self.shares_values(hub)),
            )?;
            write_file(
                &cluster_dir.join(format!("enc-{}.secret.values.yaml", hub.name)),
                SECRET_VALUES,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hubs_with_the_traps_of_a_real_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::new(6);
        fleet.seed(dir.path()).unwrap();
        assert!(Hub::is_seeded(dir.path()));
        let config = dir.path().join("deployer/config/clusters/sandbox");
        let cluster_yaml = std::fs::read_to_string(config.join("cluster.yaml")).unwrap();
        for hub in &fleet.hubs {
            assert!(cluster_yaml.contains(&format!("- name: {}\n", hub.name)));
            assert!(
                dir.path()
                    .join("nfs/10.0.0.7/homes")
                    .join(&hub.name)
                    .join("alice/data/survey-2024.h5")
                    .is_file()
            );
        }
        assert_eq!(cluster_yaml.matches(SHARED_VALUES).count(), 2);
        let stuck = fleet.stuck_hub().unwrap();
        assert_eq!(stuck.name, "workshop");
        assert!(dir.path().join("vars/sandbox/workshop.yaml").is_file());
        let (a, _) = fleet.sharing_hubs().unwrap();
        let own = std::fs::read_to_string(config.join(format!("{}.values.yaml", a.name))).unwrap();
        assert!(!own.contains("serverIP"), "{own}");
        let objects = std::fs::read_to_string(dir.path().join("hub-objects.yaml")).unwrap();
        let path = dir.path().join("objects.yaml");
        std::fs::write(&path, objects).unwrap();
        let cluster = crate::Cluster::new(1);
        assert_eq!(crate::scenario::load(&cluster, &path).unwrap(), 6 * 9);
    }
}
