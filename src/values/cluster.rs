//! A deployer `cluster.yaml`: which values files each hub is deployed with, in the order helm
//! merges them (later files override earlier ones).

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Position;

/// The hubs of a cluster and their values files.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    hubs: Vec<HubValues>,
    /// Where `hubs:` is (or the top of the file when it has none).
    hubs_position: Position,
}

/// One hub of a cluster.
#[derive(Debug, Clone)]
pub struct HubValues {
    /// Its name (`staging`).
    pub name: String,
    /// Its chart (`basehub`, `daskhub`), if the file says.
    pub helm_chart: Option<String>,
    /// Its values files, relative to the folder of `cluster.yaml`, in merge order, each with
    /// where it is listed.
    pub values_files: Vec<(String, Position)>,
    /// Where the hub's `name:` is.
    pub position: Position,
}

/// A `cluster.yaml` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not YAML, or not the shape of a cluster file.
    #[error("not a valid cluster file: {0}")]
    Syntax(Box<serde_saphyr::Error>),
    /// No hub of that name.
    #[error("no hub `{name}` in this cluster file{}", known_list(.known))]
    UnknownHub {
        /// The name asked for.
        name: String,
        /// The hubs there are.
        known: Vec<String>,
        /// Where the hubs are listed.
        position: Position,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it lists no hubs)".into()
    } else {
        format!(" (its hubs: {})", known.join(", "))
    }
}

impl ClusterError {
    /// Where in the file the problem is.
    pub fn position(&self) -> Option<Position> {
        match self {
            ClusterError::Syntax(error) => error.location().map(|location| Position {
                line: usize::try_from(location.line()).unwrap_or(1).max(1),
                column: usize::try_from(location.column()).unwrap_or(1).max(1),
            }),
            ClusterError::UnknownHub { position, .. } => Some(*position),
        }
    }
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    hubs: Option<Spanned<Vec<RawHub>>>,
}

#[derive(Deserialize)]
struct RawHub {
    name: Spanned<String>,
    #[serde(default)]
    helm_chart: Option<String>,
    #[serde(default)]
    helm_chart_values_files: Vec<Spanned<String>>,
}

fn position(location: &serde_saphyr::Location) -> Position {
    Position {
        line: usize::try_from(location.line()).unwrap_or(1).max(1),
        column: usize::try_from(location.column()).unwrap_or(1).max(1),
    }
}

impl ClusterConfig {
    /// Reads a `cluster.yaml`; keys other than `hubs` (and, in each hub, `name`, `helm_chart`
    /// and `helm_chart_values_files`) are ignored.
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let raw: RawCluster =
            serde_saphyr::from_str(text).map_err(|error| ClusterError::Syntax(Box::new(error)))?;
        // Point at the `hubs:` key itself rather than at its first item.
        let hubs_key = text
            .lines()
            .position(|line| line.starts_with("hubs:"))
            .map(|index| Position {
                line: index + 1,
                column: 1,
            });
        let (hubs, hubs_position) = match raw.hubs {
            Some(hubs) => (hubs.value, hubs_key.unwrap_or(position(&hubs.referenced))),
            None => (Vec::new(), Position { line: 1, column: 1 }),
        };
        Ok(ClusterConfig {
            hubs: hubs
                .into_iter()
                .map(|hub| HubValues {
                    position: position(&hub.name.referenced),
                    name: hub.name.value,
                    helm_chart: hub.helm_chart,
                    values_files: hub
                        .helm_chart_values_files
                        .into_iter()
                        .map(|file| (file.value, position(&file.referenced)))
                        .collect(),
                })
                .collect(),
            hubs_position,
        })
    }

    /// The hub called `name`.
    pub fn hub(&self, name: &str) -> Result<&HubValues, ClusterError> {
        self.hubs
            .iter()
            .find(|hub| hub.name == name)
            .ok_or_else(|| ClusterError::UnknownHub {
                name: name.to_string(),
                known: self.hubs.iter().map(|hub| hub.name.clone()).collect(),
                position: self.hubs_position,
            })
    }
}

impl ClusterConfig {
    /// Its hubs, in the order the file lists them.
    pub fn hubs(&self) -> &[HubValues] {
        &self.hubs
    }

    /// Where `hubs:` is (or the top of the file when it has none).
    pub fn hubs_position(&self) -> Position {
        self.hubs_position
    }

    /// The hubs other than `hub` whose values files include `file`.
    pub fn other_hubs_using(&self, file: &str, hub: &str) -> Vec<&str> {
        self.hubs
            .iter()
            .filter(|other| other.name != hub)
            .filter(|other| other.values_files.iter().any(|(listed, _)| listed == file))
            .map(|other| other.name.as_str())
            .collect()
    }
}

impl HubValues {
    /// The key its values sit under: `basehub` for a daskhub (whose chart wraps basehub),
    /// none otherwise.
    pub fn values_prefix(&self) -> Option<&'static str> {
        (self.helm_chart.as_deref() == Some("daskhub")).then_some("basehub")
    }

    /// Whether a values file is SOPS-encrypted by the deployer's naming rule (`secret` in its
    /// name), so that it cannot be read or edited as plain YAML.
    pub fn is_encrypted(file: &str) -> bool {
        std::path::Path::new(file)
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains("secret"))
    }

    /// The hub's own values file, where a value it does not set yet is best added: the last
    /// plain (not encrypted) file, since the deployer lists shared files first.
    pub fn own_file(&self) -> Option<&str> {
        self.values_files
            .iter()
            .rev()
            .map(|(file, _)| file.as_str())
            .find(|file| !Self::is_encrypted(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hubs_and_their_files_in_order() {
        let text = "name: c\nhubs:\n- name: staging\n  helm_chart: daskhub\n  helm_chart_values_files:\n  - common.values.yaml\n  - staging.values.yaml\n  - enc-staging.secret.values.yaml\n";
        let cluster = ClusterConfig::parse(text).unwrap();
        let hub = cluster.hub("staging").unwrap();
        let files: Vec<&str> = hub.values_files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "common.values.yaml",
                "staging.values.yaml",
                "enc-staging.secret.values.yaml"
            ]
        );
        assert_eq!(hub.values_files[1].1, Position { line: 7, column: 5 });
        assert_eq!(hub.own_file(), Some("staging.values.yaml"));
        assert_eq!(hub.values_prefix(), Some("basehub"));
        assert!(
            cluster
                .other_hubs_using("common.values.yaml", "staging")
                .is_empty()
        );
        let error = cluster.hub("prod").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no hub `prod` in this cluster file (its hubs: staging)"
        );
        assert_eq!(error.position(), Some(Position { line: 2, column: 1 }));
    }
}
