//! `values.set`: set dotted paths in a helm values file, keeping its comments and layout.
//! Skipped when every path already has its value; `plan` shows the diff of the file.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{Action, Check, InvalidInput, Outcome, Preview, StepContext};
use crate::diagnostic::{Diagnostic, Source, ValueError};
use crate::values::{ValuesDocument, ValuesError, ValuesPath, check_writable, write_atomically};

/// `values.set: {file: F, set: {nfs.pv.serverIP: "{{ new_server }}"}, under: basehub}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "SetFields")]
pub struct ValuesSet {
    /// The values file, relative to the directory runbook runs in.
    pub file: String,
    /// Paths (`a.b[0].c`) and the scalar each must hold, set in this order.
    pub set: IndexMap<String, serde_json::Value>,
    /// A key the paths are under (`basehub` for a daskhub's values); empty for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under: Option<String>,
}

/// The keys as written, checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFields {
    file: String,
    set: IndexMap<String, serde_json::Value>,
    under: Option<String>,
}

/// Checks a path written in a playbook: well formed, unless it is a template (then it is
/// rendered and checked when the step runs, see [`render_path`]).
pub(super) fn check_path(text: &str, key: &str) -> Result<(), ValueError> {
    if crate::syntax::is_template(text) {
        return Ok(());
    }
    ValuesPath::parse(text).map(|_| ()).map_err(|error| {
        ValueError::new(
            error.to_string(),
            "write keys separated by dots and list items as `[n]`, e.g. `nfs.pv.serverIP` or \
             `singleuser.profileList[0].slug`; quote a key with dots: `nodeSelector.\"node.kubernetes.io/instance-type\"`",
        )
        .about_key(key)
    })
}

impl TryFrom<SetFields> for ValuesSet {
    type Error = ValueError;
    fn try_from(fields: SetFields) -> Result<Self, ValueError> {
        if fields.set.is_empty() {
            return Err(ValueError::new(
                "`set` is empty",
                "give at least one path and its value, e.g. `set: {nfs.pv.serverIP: 10.0.0.2}`",
            )
            .about_key("set"));
        }
        for (path, value) in &fields.set {
            check_path(path, "set")?;
            if value.is_array() || value.is_object() {
                return Err(ValueError::new(
                    format!("the value of `{path}` is a list or a mapping; only scalars are set"),
                    "set each scalar under it by its own path, e.g. `nfs.pv.serverIP: 10.0.0.2`",
                )
                .about_key("set"));
            }
        }
        if let Some(under) = &fields.under
            && !under.is_empty()
            && !crate::syntax::is_template(under)
        {
            check_path(under, "under")?;
        }
        Ok(ValuesSet {
            file: fields.file,
            set: fields.set,
            under: fields.under,
        })
    }
}

/// A values file read for an action: where it is and its text.
pub(super) struct ValuesFile {
    /// The path as given (rendered).
    pub path: String,
    /// Its parsed text.
    pub document: ValuesDocument,
}

/// A diagnostic for an error in `text`, the file at `path`, as an error for the engine:
/// invalid input (exit 2), since every [`ValuesError`] leaves the file as it was and is fixed
/// by changing the file or the step (the path, `under:`), not by running again.
pub(super) fn explain(path: &str, text: &str, error: &ValuesError) -> anyhow::Error {
    let source = Source::new(path, text);
    let mut diagnostic = match error {
        ValuesError::Syntax(yaml) => Diagnostic::from_yaml(&source, yaml),
        other => match other.position() {
            Some(position) => Diagnostic::at(
                source.at(position.line as u64, position.column as u64),
                other.to_string(),
            ),
            None => Diagnostic::new(format!("{path}: {other}")),
        },
    };
    if let Some(help) = error.help() {
        diagnostic = diagnostic.help(help);
    }
    InvalidInput::from_diagnostic(&diagnostic).into()
}

/// Reads and parses a values file; a missing file, bad YAML, several documents or an
/// encrypted file is invalid input that names the file (and the line and column).
pub(super) fn read_values(cx: &StepContext<'_>, path: &str) -> anyhow::Result<ValuesFile> {
    let text = crate::values::read_regular(std::path::Path::new(path));
    cx.record_file(path, text.as_ref().ok().map(String::as_bytes));
    let text = text.map_err(|error| {
        let diagnostic = match error {
            crate::values::ReadError::NotRegular { .. } => Diagnostic::new(format!(
                "the values file {error}"
            ))
            .help("give the path of a YAML file; pipes, devices and directories are not read"),
            crate::values::ReadError::Io { source, .. } => {
                let cwd = std::env::current_dir()
                    .map(|dir| dir.display().to_string())
                    .unwrap_or_default();
                Diagnostic::new(format!("cannot read the values file {path}: {source}")).help(
                    format!("a relative path is read from the directory runbook runs in ({cwd})"),
                )
            }
        };
        InvalidInput::from_diagnostic(&diagnostic)
    })?;
    let document =
        ValuesDocument::parse(text.as_str()).map_err(|error| explain(path, &text, &error))?;
    Ok(ValuesFile {
        path: path.to_string(),
        document,
    })
}

/// The rendered `under:` as a path prefix; `None` when absent or empty.
pub(super) fn render_under(
    cx: &StepContext<'_>,
    under: Option<&String>,
) -> anyhow::Result<Option<ValuesPath>> {
    let Some(under) = under else {
        return Ok(None);
    };
    let rendered = cx.render(under)?;
    if rendered.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(ValuesPath::parse(rendered.trim()).map_err(
        |error| InvalidInput::new(format!("`under`: `{rendered}` is not a path: {error}")),
    )?))
}

/// A path of the step's `key` (`set`, `path`), rendered when it is a template: one that does
/// not render to a path is invalid input naming the key, the template and what it gave.
pub(super) fn render_path(
    cx: &StepContext<'_>,
    text: &str,
    key: &str,
) -> anyhow::Result<ValuesPath> {
    if !crate::syntax::is_template(text) {
        return Ok(ValuesPath::parse(text)?);
    }
    let rendered = cx.render(text)?;
    ValuesPath::parse(rendered.trim()).map_err(|error| {
        InvalidInput::new(format!(
            "`{key}`: the path `{text}` renders to `{rendered}`, which is not a path: {error}"
        ))
        .into()
    })
}

/// What a `values.set` step does to its file.
struct Edit {
    file: ValuesFile,
    /// The text before the edit.
    original: String,
    /// The paths whose value changes, with the value they had (null when absent).
    changed: Vec<(ValuesPath, serde_json::Value)>,
    /// Every path with its wanted value.
    wanted: Vec<(ValuesPath, serde_json::Value)>,
}

impl ValuesSet {
    /// Renders the step, reads the file and makes the edit in memory: read-only.
    fn edit(&self, cx: &StepContext<'_>) -> anyhow::Result<Edit> {
        let path = cx.render(&self.file)?;
        let under = render_under(cx, self.under.as_ref())?;
        let mut file = read_values(cx, &path)?;
        let original = file.document.text().to_string();
        let mut changed = Vec::new();
        let mut wanted = Vec::new();
        for (text, value) in &self.set {
            let relative = render_path(cx, text, "set")?;
            let full = match &under {
                Some(prefix) => relative.under(prefix),
                None => relative,
            };
            let value = cx.render_json(value)?;
            // Read first: the old value goes into the output (for a rollback), and a path
            // that cannot be followed fails here, with its position.
            let before = file
                .document
                .get(&full)
                .map_err(|error| explain(&path, file.document.text(), &error))?;
            let was_changed = file
                .document
                .set(&full, &value)
                .map_err(|error| explain(&path, file.document.text(), &error))?;
            if was_changed {
                let old = before.map_or(serde_json::Value::Null, |found| found.value);
                changed.push((full.clone(), old));
            }
            wanted.push((full, value));
        }
        Ok(Edit {
            file,
            original,
            changed,
            wanted,
        })
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl Action for ValuesSet {
    /// Its one write is the values file, recorded.
    fn reports_its_writes(&self) -> bool {
        true
    }

    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        let edit = self.edit(cx)?;
        if !edit.changed.is_empty() {
            return Ok(Check::Pending);
        }
        let settled: Vec<String> = edit
            .wanted
            .iter()
            .map(|(path, value)| format!("`{path}` is {}", show(value)))
            .collect();
        Ok(Check::Done(format!(
            "{} in {}",
            and_list(&settled),
            edit.file.path
        )))
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let edit = self.edit(cx)?;
        let paths: Vec<String> = edit
            .changed
            .iter()
            .map(|(path, _)| format!("`{path}`"))
            .collect();
        let diff = (edit.original != edit.file.document.text()).then(|| {
            similar::TextDiff::from_lines(&edit.original, edit.file.document.text())
                .unified_diff()
                .context_radius(3)
                .header(&edit.file.path, &edit.file.path)
                .to_string()
        });
        let mut summary = format!("set {} in {}", and_list(&paths), edit.file.path);
        // Said now rather than found by the run, after the steps before this one ran.
        if diff.is_some()
            && let Err(error) = check_writable(std::path::Path::new(&edit.file.path))
        {
            summary.push_str(&format!("; this will fail: {error}"));
        }
        Ok(Preview { summary, diff })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let edit = self.edit(cx)?;
        let changed = !edit.changed.is_empty();
        if changed {
            write_atomically(
                std::path::Path::new(&edit.file.path),
                edit.file.document.text(),
                &edit.original,
            )
            // A failed step, not invalid input: the playbook is right, the file's mode or
            // owner (or a concurrent edit) is in the way, and the same run goes on once that
            // is fixed.
            .map_err(anyhow::Error::from)?;
            cx.record_written_file(&edit.file.path);
        }
        let previous: serde_json::Map<String, serde_json::Value> = edit
            .changed
            .iter()
            .map(|(path, old)| (path.to_string(), old.clone()))
            .collect();
        Ok(Outcome::new(
            changed,
            serde_json::json!({
                "file": edit.file.path,
                "changed": edit.changed.iter().map(|(path, _)| path.to_string()).collect::<Vec<_>>(),
                "previous": previous,
            }),
        ))
    }
}
