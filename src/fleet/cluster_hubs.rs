//! The hubs a fleet command works on: deployer's `config/clusters/C/cluster.yaml` lists them,
//! `--hub` and `--skip-hub` choose among them, and a vars directory may hold a file per hub.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Source, did_you_mean};
use crate::values::{ClusterConfig, ClusterError};

/// One hub of the fleet, with the vars file that is its own, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHub {
    /// Its name, as cluster.yaml lists it (its namespace).
    pub name: String,
    /// `VARS_DIR/CLUSTER/HUB.yaml`, when it exists.
    pub vars_file: Option<PathBuf>,
}

/// The hubs of a cluster, in the order its `cluster.yaml` lists them, as selected.
#[derive(Debug, Clone)]
pub struct ClusterHubs {
    /// The cluster's folder name under the config directory.
    pub cluster: String,
    /// Its `cluster.yaml`.
    pub file: PathBuf,
    /// The hubs to work on, in the file's order.
    pub hubs: Vec<FleetHub>,
}

/// How hubs are chosen among those of the cluster.
#[derive(Debug, Clone, Default)]
pub struct HubSelection {
    /// `--hub H` (repeatable): only these; none means every hub.
    pub only: Vec<String>,
    /// `--skip-hub H` (repeatable): not these.
    pub skip: Vec<String>,
}

impl ClusterHubs {
    /// Reads `config_dir/cluster/cluster.yaml`, selects its hubs and finds their vars files in
    /// `vars_dir/cluster/`. Invalid input (a file that does not parse or lists no hubs, a
    /// `--hub` it does not list, a vars file for a hub it does not list) names the file, line
    /// and column, or the flag.
    pub fn load(
        config_dir: &Path,
        cluster: &str,
        selection: &HubSelection,
        vars_dir: &Path,
    ) -> Result<Self, Diagnostic> {
        let file = config_dir.join(cluster).join("cluster.yaml");
        let path = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|error| {
            Diagnostic::new(format!("--cluster {cluster}: cannot read {path}: {error}")).help(
                "--config-dir is deployer's config/clusters folder, and --cluster a folder in it",
            )
        })?;
        let source = Source::new(path.as_str(), text.as_str());
        let config =
            ClusterConfig::parse(&text).map_err(|error| match (&error, error.position()) {
                (ClusterError::Syntax(yaml), _) => Diagnostic::from_yaml(&source, yaml),
                (other, Some(position)) => Diagnostic::at(
                    source.at(position.line as u64, position.column as u64),
                    other.to_string(),
                ),
                (other, None) => Diagnostic::new(format!("{path}: {other}")),
            })?;
        let listed: Vec<&str> = config.hubs().iter().map(|hub| hub.name.as_str()).collect();
        if listed.is_empty() {
            let at = config.hubs_position();
            return Err(Diagnostic::at(
                source.at(at.line as u64, at.column as u64),
                "this cluster file lists no hubs",
            )
            .help("a fleet runs the playbook once per hub of `hubs:`, each with a `name:`"));
        }
        for (flag, names) in [("--hub", &selection.only), ("--skip-hub", &selection.skip)] {
            for name in names {
                if !listed.contains(&name.as_str()) {
                    let help = match did_you_mean(name, &listed) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("its hubs are: {}", listed.join(", ")),
                    };
                    return Err(Diagnostic::new(format!(
                        "{flag} {name}: {path} lists no hub `{name}`"
                    ))
                    .help(help));
                }
            }
        }
        check_vars_dir(&vars_dir.join(cluster), &listed, &path)?;
        let hubs: Vec<FleetHub> = listed
            .iter()
            .filter(|name| selection.only.is_empty() || selection.only.iter().any(|n| n == *name))
            .filter(|name| !selection.skip.iter().any(|n| n == *name))
            .map(|name| {
                let own = vars_dir.join(cluster).join(format!("{name}.yaml"));
                FleetHub {
                    name: name.to_string(),
                    vars_file: own.is_file().then_some(own),
                }
            })
            .collect();
        if hubs.is_empty() {
            return Err(
                Diagnostic::new(format!("--skip-hub leaves no hub of {path} to work on"))
                    .help("skip fewer hubs"),
            );
        }
        Ok(ClusterHubs {
            cluster: cluster.to_string(),
            file,
            hubs,
        })
    }
}

/// Every file of the cluster's vars directory must be the vars file of a hub the cluster
/// lists: a file for a hub that is not there (a typo, a hub since removed) would otherwise
/// be ignored silently.
fn check_vars_dir(dir: &Path, listed: &[&str], cluster_file: &str) -> Result<(), Diagnostic> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    names.sort();
    for path in names {
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if !is_yaml {
            continue;
        }
        let hub = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.extension().is_some_and(|ext| ext == "yml") || !listed.contains(&hub.as_str()) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let source = Source::new(path.display().to_string(), text.as_str());
            let help = match did_you_mean(&hub, listed) {
                Some(close) => format!("did you mean `{close}.yaml`?"),
                None => format!(
                    "a hub's vars file is named after it, `HUB.yaml`; the hubs of {cluster_file} are: {}",
                    listed.join(", ")
                ),
            };
            return Err(Diagnostic::at(
                source.at(1, 1),
                format!("a vars file for hub `{hub}`, which {cluster_file} does not list"),
            )
            .help(help));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "name: c\nhubs:\n- name: staging\n  helm_chart_values_files: [staging.values.yaml]\n- name: prod\n- name: workshop\n";

    fn setup(cluster_yaml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config/c")).unwrap();
        std::fs::write(dir.path().join("config/c/cluster.yaml"), cluster_yaml).unwrap();
        dir
    }

    fn load(dir: &Path, selection: &HubSelection) -> Result<ClusterHubs, Diagnostic> {
        ClusterHubs::load(&dir.join("config"), "c", selection, &dir.join("vars"))
    }

    fn names(hubs: &ClusterHubs) -> Vec<&str> {
        hubs.hubs.iter().map(|hub| hub.name.as_str()).collect()
    }

    #[test]
    fn hubs_come_in_the_files_order_and_flags_select_them() {
        let dir = setup(CLUSTER);
        let all = load(dir.path(), &HubSelection::default()).unwrap();
        assert_eq!(names(&all), ["staging", "prod", "workshop"]);
        let some = load(
            dir.path(),
            &HubSelection {
                only: vec!["workshop".into(), "staging".into()],
                skip: vec![],
            },
        )
        .unwrap();
        assert_eq!(names(&some), ["staging", "workshop"]);
        let skipped = load(
            dir.path(),
            &HubSelection {
                only: vec![],
                skip: vec!["prod".into()],
            },
        )
        .unwrap();
        assert_eq!(names(&skipped), ["staging", "workshop"]);
    }

    #[test]
    fn a_hubs_own_vars_file_is_found() {
        let dir = setup(CLUSTER);
        std::fs::create_dir_all(dir.path().join("vars/c")).unwrap();
        std::fs::write(dir.path().join("vars/c/prod.yaml"), "jobs: 8\n").unwrap();
        let hubs = load(dir.path(), &HubSelection::default()).unwrap();
        assert_eq!(hubs.hubs[0].vars_file, None);
        assert_eq!(
            hubs.hubs[1].vars_file,
            Some(dir.path().join("vars/c/prod.yaml"))
        );
    }

    #[test]
    fn bad_input_names_the_file_or_the_flag() {
        let dir = setup("hubs:\n- name: [\n");
        let error = load(dir.path(), &HubSelection::default()).unwrap_err();
        assert!(error.to_string().contains("cluster.yaml:"), "{error}");

        let dir = setup("name: c\nprovider: gcp\n");
        let error = load(dir.path(), &HubSelection::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("lists no hubs"), "{error}");
        assert!(error.contains("cluster.yaml:1:1"), "{error}");

        let dir = setup(CLUSTER);
        let error = load(
            dir.path(),
            &HubSelection {
                only: vec!["stagign".into()],
                skip: vec![],
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("--hub stagign"), "{error}");
        assert!(error.contains("did you mean `staging`?"), "{error}");

        std::fs::create_dir_all(dir.path().join("vars/c")).unwrap();
        std::fs::write(dir.path().join("vars/c/prdo.yaml"), "jobs: 8\n").unwrap();
        let error = load(dir.path(), &HubSelection::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("prdo.yaml:1:1"), "{error}");
        assert!(error.contains("hub `prdo`"), "{error}");
    }
}
