//! Checking a manifest before it is applied: a kind, a name, the shape of its kind. A
//! problem is explained at the value at fault when the manifest's text is known (an inline
//! manifest in the playbook, a rendered template), by reading that text again with the
//! kind's typed schema, which then reports the line and column of the value it rejects.
//! A kind the table does not know may be one the cluster serves (a custom resource's): it is
//! looked up there when the step runs, and the server checks its fields.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Location, Source};
use crate::kube::{Kind, kind_of_manifest, kinds};

/// Why a manifest cannot be applied.
#[derive(Debug, Clone)]
pub enum ManifestProblem {
    /// `apiVersion` or `kind` is missing (or not a string).
    Missing(&'static str),
    /// A built-in group version with a kind it does not have, close to one runbook knows.
    UnknownKind {
        /// As written.
        api_version: String,
        /// As written.
        kind: String,
        /// The known `apiVersion kind` it is close to.
        close: String,
    },
    /// `metadata.name` is missing or empty.
    NoName {
        /// The kind, as written.
        kind: String,
    },
    /// The manifest does not have the shape of its kind.
    Invalid {
        /// The kind.
        kind: &'static Kind,
        /// What the schema says.
        detail: String,
    },
}

impl ManifestProblem {
    /// One sentence.
    pub fn message(&self) -> String {
        match self {
            ManifestProblem::Missing(key) => format!("the manifest has no `{key}`"),
            ManifestProblem::UnknownKind {
                api_version, kind, ..
            } => {
                format!("unknown kind `{kind}` in `{api_version}`")
            }
            ManifestProblem::NoName { kind } => {
                format!("the {kind} manifest has no `metadata.name`")
            }
            ManifestProblem::Invalid { kind, detail } => {
                format!("the {} manifest is not valid: {detail}", kind.kind)
            }
        }
    }

    /// How to fix it.
    pub fn help(&self) -> String {
        match self {
            ManifestProblem::Missing(_) => {
                "a manifest starts with `apiVersion:` and `kind:`, e.g. `apiVersion: v1` and \
                 `kind: ConfigMap`"
                    .into()
            }
            ManifestProblem::UnknownKind { close, .. } => format!("did you mean `{close}`?"),
            ManifestProblem::NoName { .. } => "name the object: `metadata: {name: ...}`".into(),
            ManifestProblem::Invalid { kind, .. } => format!(
                "check the field against the {} API reference ({})",
                kind.kind, kind.api_version
            ),
        }
    }

    /// The problem as a diagnostic without a position.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::new(self.message()).help(self.help())
    }
}

/// Checks that a manifest names a kind, has a name, and has the shape of its kind. Returns
/// the kind when the table has it; `None` for a kind to look up in what the cluster serves.
pub fn check_manifest(
    manifest: &serde_json::Value,
) -> Result<Option<&'static Kind>, ManifestProblem> {
    let text = |key: &'static str| {
        manifest
            .get(key)
            .and_then(|value| value.as_str())
            .ok_or(ManifestProblem::Missing(key))
    };
    let api_version = text("apiVersion")?;
    let kind_name = text("kind")?;
    let kind = kind_of_manifest(api_version, kind_name);
    if kind.is_none()
        && let Some(close) = typo_of_known_kind(api_version, kind_name)
    {
        return Err(ManifestProblem::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind_name.to_string(),
            close,
        });
    }
    if manifest
        .pointer("/metadata/name")
        .and_then(|name| name.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(ManifestProblem::NoName {
            kind: kind_name.to_string(),
        });
    }
    if let Some(kind) = kind
        && let Some(validator) = kind.validator()
    {
        validator
            .validate(manifest)
            .map_err(|detail| ManifestProblem::Invalid { kind, detail })?;
    }
    Ok(kind)
}

/// The known `apiVersion kind` that a pair in one of the table's group versions (`v1`,
/// `apps/v1`, ...) is a typo of, or names in the wrong version (`v1 Deployment`). Only
/// those group versions: any other may hold a custom resource's kind, with any name.
fn typo_of_known_kind(api_version: &str, kind: &str) -> Option<String> {
    if !kinds().iter().any(|known| known.api_version == api_version) {
        return None;
    }
    let names: Vec<&str> = kinds().iter().map(|known| known.kind).collect();
    let close = crate::diagnostic::did_you_mean(kind, &names)?;
    kinds()
        .iter()
        .find(|known| known.kind == close)
        .map(|known| format!("{} {}", known.api_version, known.kind))
}

/// A manifest's text inside a file: the file's text with everything else blanked out, so
/// that it parses alone and positions in it are the file's.
#[derive(Debug, Clone)]
pub struct ManifestText {
    source: Source,
    text: String,
    /// Where the manifest starts.
    start: Location,
}

/// The keys of a manifest that say what it is, with their positions.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<Spanned<serde_json::Value>>,
    kind: Option<Spanned<serde_json::Value>>,
    metadata: Option<Spanned<serde_json::Value>>,
}

impl ManifestText {
    /// The manifest that starts at `line`:`column` of `source`: a block mapping (its keys at
    /// that column, down to the first line indented less), or a flow mapping (`{` to its
    /// matching `}`). `None` when the text there is not `manifest` (a YAML anchor, say).
    pub fn at(
        source: &Source,
        line: usize,
        column: usize,
        manifest: &serde_json::Value,
    ) -> Option<Self> {
        let lines: Vec<&str> = source.text.lines().collect();
        let first = lines.get(line.checked_sub(1)?)?;
        if column == 0 {
            return None;
        }
        let before: String = first.chars().take(column - 1).collect();
        let last_line = if first.chars().nth(column - 1) == Some('{') {
            flow_end(&lines, line, column)?
        } else if before.trim().is_empty() {
            block_end(&lines, line, column - 1)
        } else {
            return None;
        };
        let mut text = String::new();
        for (index, content) in lines.iter().enumerate() {
            let number = index + 1;
            if (line..=last_line.0).contains(&number) {
                let mut kept = if number == line {
                    // Blanks keep the columns of what follows.
                    format!(
                        "{}{}",
                        " ".repeat(before.chars().count()),
                        &content[before.len()..]
                    )
                } else {
                    content.to_string()
                };
                // Cut what follows a flow mapping on its last line (`}, namespace: x}`).
                if let (true, Some(end)) = (number == last_line.0, last_line.1) {
                    kept = kept.chars().take(end).collect();
                }
                text.push_str(&kept);
            }
            text.push('\n');
        }
        let found = ManifestText {
            source: source.clone(),
            text,
            start: source.at(line as u64, column as u64),
        };
        // A manifest written with anchors or merge keys is read differently alone: rather no
        // position than a wrong one.
        (found.value().as_ref() == Some(manifest)).then_some(found)
    }

    /// A whole document of a file (a rendered template with several).
    pub fn document(source: &Source, first_line: usize, last_line: usize) -> Self {
        let mut text = String::new();
        for (index, content) in source.text.lines().enumerate() {
            if (first_line..=last_line).contains(&(index + 1)) {
                text.push_str(content);
            }
            text.push('\n');
        }
        ManifestText {
            source: source.clone(),
            text,
            start: source.at(first_line as u64, 1),
        }
    }

    /// The manifest as data; `None` when its text is not one YAML document.
    pub fn value(&self) -> Option<serde_json::Value> {
        serde_saphyr::from_str(&self.text).ok()
    }

    /// The problem at the value at fault: `kind:` for an unknown kind, the field the schema
    /// rejects; the start of the manifest when nothing more precise is known.
    pub fn explain(&self, problem: &ManifestProblem) -> Diagnostic {
        let head: Option<Head> = serde_saphyr::from_str(&self.text).ok();
        let at_key = |pick: fn(&Head) -> Option<&Spanned<serde_json::Value>>| {
            head.as_ref()
                .and_then(pick)
                .map(|value| self.source.at_yaml(&value.referenced))
        };
        let at = match problem {
            ManifestProblem::Missing(_) => None,
            ManifestProblem::UnknownKind { .. } => {
                at_key(|head| head.kind.as_ref()).or_else(|| at_key(|h| h.api_version.as_ref()))
            }
            ManifestProblem::NoName { .. } => at_key(|head| head.metadata.as_ref()),
            ManifestProblem::Invalid { kind, .. } => {
                if let Some(Err(error)) = kind
                    .validator()
                    .map(|validator| validator.validate_yaml(&self.text))
                {
                    let local = Source::new(self.source.path.clone(), self.text.as_str());
                    let explained = Diagnostic::from_yaml(&local, &error);
                    if let Some(location) = explained.location {
                        return Diagnostic::at(
                            location.in_source(self.source.clone()),
                            format!(
                                "the {} manifest is not valid: {}",
                                kind.kind, explained.message
                            ),
                        )
                        .help(problem.help());
                    }
                }
                None
            }
        };
        Diagnostic::at(at.unwrap_or_else(|| self.start.clone()), problem.message())
            .help(problem.help())
    }
}

/// The last line of a block mapping whose keys start at `indent` (0-based), from `line`.
fn block_end(lines: &[&str], line: usize, indent: usize) -> (usize, Option<usize>) {
    let mut last = line;
    for (index, content) in lines.iter().enumerate().skip(line) {
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if content.len() - trimmed.len() < indent {
            break;
        }
        last = index + 1;
    }
    (last, None)
}

/// The line and column (in characters, exclusive) where the flow mapping that opens at
/// `line`:`column` closes.
fn flow_end(lines: &[&str], line: usize, column: usize) -> Option<(usize, Option<usize>)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (index, content) in lines.iter().enumerate().skip(line - 1) {
        let skip = if index + 1 == line { column - 1 } else { 0 };
        let mut chars = content.chars().enumerate().skip(skip).peekable();
        while let Some((at, c)) = chars.next() {
            match (quote, c) {
                (Some('\''), '\'') if chars.peek().is_some_and(|(_, next)| *next == '\'') => {
                    chars.next();
                }
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(open), c) if c == open => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if at > 0 && content.chars().nth(at - 1) == Some(' ') => break,
                (None, '{' | '[') => depth += 1,
                (None, '}' | ']') => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some((index + 1, Some(at + 1)));
                    }
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_beyond_the_table_are_left_to_the_cluster() {
        let migrate = serde_json::json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "DataMigrate", "metadata": {"name": "m"}, "spec": {"any": "thing"}});
        assert!(matches!(check_manifest(&migrate), Ok(None)));
        let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}});
        assert!(matches!(check_manifest(&account), Ok(None)));
        let typo = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "d"}});
        let problem = check_manifest(&typo).expect_err("a typo");
        assert_eq!(problem.help(), "did you mean `apps/v1 Deployment`?");
        let elsewhere = serde_json::json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "d"}});
        assert!(check_manifest(&elsewhere).is_err());
        let nameless = serde_json::json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "DataMigrate", "metadata": {}});
        assert!(matches!(
            check_manifest(&nameless),
            Err(ManifestProblem::NoName { .. })
        ));
    }

    fn source(text: &str) -> Source {
        Source::new("playbook.yaml", text)
    }

    #[test]
    fn a_block_manifest_is_cut_out_of_its_file() {
        let text = "steps:\n  - id: a\n    kube.apply:\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n\n        metadata: {name: x}\n  - id: b\n    run: [x]\n";
        let manifest =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let found = ManifestText::at(&source(text), 5, 9, &manifest).expect("found");
        assert_eq!(found.value(), Some(manifest));
    }

    #[test]
    fn a_flow_manifest_is_cut_at_its_closing_brace() {
        let text = "steps:\n  - id: a\n    kube.apply: {manifest: {apiVersion: v1, kind: \"Con}fig\",\n      metadata: {name: x}}, namespace: y}\n";
        let manifest =
            serde_json::json!({"apiVersion": "v1", "kind": "Con}fig", "metadata": {"name": "x"}});
        let found = ManifestText::at(&source(text), 3, 28, &manifest).expect("found");
        assert_eq!(found.value(), Some(manifest));
    }

    #[test]
    fn the_field_at_fault_is_pointed_at() {
        let text = "steps:\n  - id: a\n    kube.apply:\n      manifest:\n        apiVersion: apps/v1\n        kind: Deployment\n        metadata: {name: x}\n        spec:\n          replicas: three\n";
        let manifest = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "three"}});
        let problem = check_manifest(&manifest).expect_err("invalid");
        assert!(matches!(problem, ManifestProblem::Invalid { .. }));
        let found = ManifestText::at(&source(text), 5, 9, &manifest).expect("found");
        let diagnostic = found.explain(&problem);
        let at = diagnostic.location.clone().expect("a position");
        assert_eq!((at.line, at.column), (9, 21), "{diagnostic}");
    }
}
