//! `values.get`: read a path from a helm values file, or find which of a hub's values files
//! sets it (the file a later `values.set` should edit). Read-only.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::values_set::{check_path, explain, read_values, render_path, render_under};
use super::{Action, InvalidInput, Outcome, Preview, StepContext};
use crate::diagnostic::{Diagnostic, Source, ValueError};
use crate::values::{ClusterConfig, ClusterError, HubValues, ValuesError, ValuesPath};

/// `values.get: {file: F, path: P}`, `{files: [F, ...], path: P}` or
/// `{cluster: config/clusters/C/cluster.yaml, hub: H, path: P}`, with an optional `under`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "GetFields")]
pub struct ValuesGet {
    /// One values file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Several values files, in the order helm merges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// A deployer `cluster.yaml`, whose `hubs[].helm_chart_values_files` list the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The hub of `cluster` whose files are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The path to read (`nfs.pv.serverIP`).
    pub path: String,
    /// A key the path is under (`basehub`); with `cluster`, `basehub` for a daskhub unless
    /// given. Empty for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under: Option<String>,
}

/// The keys as written, checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetFields {
    file: Option<String>,
    #[serde(default)]
    files: Vec<String>,
    cluster: Option<String>,
    hub: Option<String>,
    path: String,
    under: Option<String>,
}

impl TryFrom<GetFields> for ValuesGet {
    type Error = ValueError;
    fn try_from(fields: GetFields) -> Result<Self, ValueError> {
        let sources = usize::from(fields.file.is_some())
            + usize::from(!fields.files.is_empty())
            + usize::from(fields.cluster.is_some());
        if sources != 1 {
            return Err(ValueError::new(
                "give exactly one of `file`, `files` or `cluster` (with `hub`)",
                "e.g. `values.get: {cluster: config/clusters/c/cluster.yaml, hub: staging, path: nfs.pv.serverIP}`",
            ));
        }
        if fields.cluster.is_some() != fields.hub.is_some() {
            return Err(ValueError::new(
                "`hub` goes with `cluster`, and `cluster` needs a `hub`",
                "name the hub whose values files to read: `cluster: .../cluster.yaml, hub: staging`",
            ));
        }
        check_path(&fields.path, "path")?;
        if let Some(under) = &fields.under
            && !under.is_empty()
            && !crate::syntax::is_template(under)
        {
            check_path(under, "under")?;
        }
        Ok(ValuesGet {
            file: fields.file,
            files: fields.files,
            cluster: fields.cluster,
            hub: fields.hub,
            path: fields.path,
            under: fields.under,
        })
    }
}

/// The files to read, rendered, with what the hub's files mean.
struct Sources {
    /// Paths to read, in merge order.
    files: Vec<String>,
    /// Encrypted files (by name) that are not read.
    unread: Vec<String>,
    /// Where a value that no file sets yet should go.
    fallback: Option<String>,
    /// The prefix the path is under.
    under: Option<ValuesPath>,
    /// For a file of `files` that other hubs of the cluster use too, their names.
    shared: std::collections::HashMap<String, Vec<String>>,
}

fn cluster_error(path: &str, text: &str, error: &ClusterError) -> anyhow::Error {
    let source = Source::new(path, text);
    let diagnostic = match (error, error.position()) {
        (ClusterError::Syntax(yaml), _) => Diagnostic::from_yaml(&source, yaml),
        (other, Some(position)) => Diagnostic::at(
            source.at(position.line as u64, position.column as u64),
            other.to_string(),
        ),
        (other, None) => Diagnostic::new(format!("{path}: {other}")),
    };
    let diagnostic = match error {
        ClusterError::UnknownHub { name, known, .. } => {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            match crate::diagnostic::did_you_mean(name, &known) {
                Some(close) => diagnostic.help(format!("did you mean `{close}`?")),
                None => diagnostic,
            }
        }
        ClusterError::Syntax(_) => diagnostic,
    };
    InvalidInput::from_diagnostic(&diagnostic).into()
}

impl ValuesGet {
    fn sources(&self, cx: &StepContext<'_>) -> anyhow::Result<Sources> {
        let under = render_under(cx, self.under.as_ref())?;
        if let Some(file) = &self.file {
            let file = cx.render(file)?;
            return Ok(Sources {
                files: vec![file.clone()],
                unread: Vec::new(),
                fallback: Some(file),
                under,
                shared: Default::default(),
            });
        }
        if !self.files.is_empty() {
            let files = self
                .files
                .iter()
                .map(|file| cx.render(file))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (unread, files): (Vec<String>, Vec<String>) = files
                .into_iter()
                .partition(|file| HubValues::is_encrypted(file));
            return Ok(Sources {
                fallback: files.last().cloned(),
                files,
                unread,
                under,
                shared: Default::default(),
            });
        }
        let (Some(cluster), Some(hub)) = (&self.cluster, &self.hub) else {
            anyhow::bail!("`values.get` needs `file`, `files` or `cluster` with `hub`");
        };
        let cluster_path = cx.render(cluster)?;
        let hub = cx.render(hub)?;
        let text = crate::values::read_regular(Path::new(&cluster_path)).map_err(|error| {
            InvalidInput::new(match error {
                crate::values::ReadError::NotRegular { .. } => format!("the cluster file {error}"),
                crate::values::ReadError::Io { source, .. } => {
                    format!("cannot read the cluster file {cluster_path}: {source}")
                }
            })
        })?;
        let config = ClusterConfig::parse(&text)
            .map_err(|error| cluster_error(&cluster_path, &text, &error))?;
        let hub_values = config
            .hub(&hub)
            .map_err(|error| cluster_error(&cluster_path, &text, &error))?;
        let dir = Path::new(&cluster_path).parent().unwrap_or(Path::new(""));
        let in_dir = |file: &str| dir.join(file).display().to_string();
        let mut files = Vec::new();
        let mut unread = Vec::new();
        let mut shared = std::collections::HashMap::new();
        for (file, position) in &hub_values.values_files {
            let path = in_dir(file);
            if HubValues::is_encrypted(file) {
                unread.push(path);
                continue;
            }
            if !Path::new(&path).is_file() {
                let source = Source::new(cluster_path.as_str(), text.as_str());
                let diagnostic = Diagnostic::at(
                    source.at(position.line as u64, position.column as u64),
                    format!("hub `{hub}` lists `{file}`, but {path} does not exist"),
                )
                .help("values files are relative to the folder of cluster.yaml");
                return Err(InvalidInput::from_diagnostic(&diagnostic).into());
            }
            let others = config.other_hubs_using(file, &hub);
            if !others.is_empty() {
                shared.insert(
                    path.clone(),
                    others.into_iter().map(str::to_string).collect(),
                );
            }
            files.push(path);
        }
        let under = match (&self.under, under) {
            (Some(_), given) => given,
            (None, _) => hub_values
                .values_prefix()
                .map(ValuesPath::parse)
                .transpose()?,
        };
        Ok(Sources {
            files,
            unread,
            fallback: hub_values.own_file().map(in_dir),
            under,
            shared,
        })
    }

    fn read(&self, cx: &StepContext<'_>) -> anyhow::Result<serde_json::Value> {
        let sources = self.sources(cx)?;
        let relative = render_path(cx, &self.path, "path")?;
        let full = match &sources.under {
            Some(prefix) => relative.under(prefix),
            None => relative,
        };
        let several = self.file.is_none();
        let mut unread = sources.unread;
        let mut defined_in = Vec::new();
        let mut last = None;
        for path in &sources.files {
            let file = match read_values(cx, path) {
                Ok(file) => file,
                // A file of a list that turns out to be encrypted is skipped, not fatal.
                Err(_) if several && is_sops(path) => {
                    unread.push(path.clone());
                    continue;
                }
                Err(error) => return Err(error),
            };
            let found = file
                .document
                .get(&full)
                .map_err(|error| explain(path, file.document.text(), &error))?;
            if let Some(found) = found {
                defined_in.push(path.clone());
                last = Some((path.clone(), found));
            }
        }
        let (file, value, line, shared_with) = match last {
            Some((file, found)) => {
                let shared_with = sources.shared.get(&file).cloned().unwrap_or_default();
                // A file other hubs use too is not the place to change one hub: its own file,
                // merged after it, gets an override instead.
                let position = |name: &String| sources.files.iter().position(|f| f == name);
                let target = match &sources.fallback {
                    Some(own) if !shared_with.is_empty() && position(own) > position(&file) => {
                        own.clone()
                    }
                    _ => file,
                };
                (
                    Some(target),
                    found.value,
                    Some(found.position.line),
                    shared_with,
                )
            }
            None => (sources.fallback, serde_json::Value::Null, None, Vec::new()),
        };
        Ok(serde_json::json!({
            "path": self.path,
            "found": line.is_some(),
            "value": value,
            "file": file,
            "line": line,
            "defined_in": defined_in,
            "shared_with": shared_with,
            "under": sources.under.map(|under| under.to_string()).unwrap_or_default(),
            "unread": unread,
        }))
    }
}

/// Whether a file is SOPS-encrypted (a top-level `sops:` key).
fn is_sops(path: &str) -> bool {
    crate::values::read_regular(Path::new(path)).is_ok_and(|text| {
        matches!(
            crate::values::ValuesDocument::parse(text),
            Err(ValuesError::Encrypted { .. })
        )
    })
}

#[async_trait::async_trait]
impl Action for ValuesGet {
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let where_ = match (&self.file, &self.cluster, &self.hub) {
            (Some(file), _, _) => cx.render(file)?,
            (None, Some(_), Some(hub)) => format!("the values files of hub {}", cx.render(hub)?),
            _ => "the values files".into(),
        };
        Ok(Preview {
            summary: format!("read `{}` from {where_}", self.path),
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        Ok(Outcome::new(false, self.read(cx)?))
    }

    fn is_read_only(&self) -> bool {
        true
    }
}
