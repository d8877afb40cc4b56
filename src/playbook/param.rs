//! Params: declared in the playbook, given with `--var K=V` and `--vars-file`, checked
//! against their type and pattern before anything runs.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Source, did_you_mean};

/// The type of a param's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any text (the default).
    #[default]
    String,
    /// A whole number.
    Int,
    /// `true` or `false`.
    Bool,
}

/// A param as declared under `params:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Value type.
    #[serde(rename = "type", default)]
    pub kind: ParamType,
    /// Must be given; defaults to true when there is no `default`.
    pub required: Option<bool>,
    /// Value when none is given.
    pub default: Option<Spanned<serde_json::Value>>,
    /// A regular expression the value (as text) must match.
    pub pattern: Option<Spanned<String>>,
    /// Mask the value as `***` everywhere it would be shown.
    #[serde(default)]
    pub secret: bool,
    /// For people reading `validate` and the README.
    pub description: Option<String>,
}

impl ParamSpec {
    /// Whether a value must be given.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// Where a given value came from, for error messages.
#[derive(Debug, Clone)]
pub enum ValueOrigin {
    /// `--var NAME=VALUE`.
    Flag(String),
    /// A key in a `--vars-file`, at a position.
    File(crate::diagnostic::Location),
    /// The param's `default:`.
    Default(crate::diagnostic::Location),
}

impl ValueOrigin {
    fn diagnostic(&self, message: String) -> Diagnostic {
        match self {
            ValueOrigin::Flag(flag) => Diagnostic::new(format!("{flag}: {message}")),
            ValueOrigin::File(location) | ValueOrigin::Default(location) => {
                Diagnostic::at(location.clone(), message)
            }
        }
    }
}

/// A value given for a param before it is checked.
#[derive(Debug, Clone)]
pub struct GivenValue {
    /// The value: text from a flag, typed from a file.
    pub value: serde_json::Value,
    /// Where it came from.
    pub origin: ValueOrigin,
}

/// Parses `--var K=V` flags.
pub fn parse_var_flags(flags: &[String]) -> Result<IndexMap<String, GivenValue>, Diagnostic> {
    let mut given = IndexMap::new();
    for flag in flags {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(
                Diagnostic::new(format!("--var {flag}: expected NAME=VALUE"))
                    .help(format!("write it as --var {flag}=VALUE")),
            );
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Diagnostic::new(format!(
                "--var {flag}: `{name}` is not a param name (letters, digits and `_`)"
            ))
            .help("write it as --var NAME=VALUE"));
        }
        given.insert(
            name.to_string(),
            GivenValue {
                value: serde_json::Value::String(value.to_string()),
                origin: ValueOrigin::Flag(format!("--var {flag}")),
            },
        );
    }
    Ok(given)
}

/// Reads a `--vars-file`: a YAML mapping of param names to values.
pub fn read_vars_file(path: &str) -> Result<IndexMap<String, GivenValue>, Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| Diagnostic::new(format!("--vars-file {path}: cannot read it: {error}")))?;
    let source = Source::new(path, text.as_str());
    let entries: IndexMap<Spanned<String>, Spanned<serde_json::Value>> = if text.trim().is_empty() {
        IndexMap::new()
    } else {
        serde_saphyr::from_str(&text).map_err(|error| Diagnostic::from_yaml(&source, &error))?
    };
    Ok(entries
        .into_iter()
        .map(|(name, value)| {
            let location = source.at(name.referenced.line(), name.referenced.column());
            (
                name.value,
                GivenValue {
                    value: value.value,
                    origin: ValueOrigin::File(location),
                },
            )
        })
        .collect())
}

/// Checks given values against the declarations and returns the typed values of every param.
///
/// `declared` maps each param name to its spec and the position of its declaration.
pub fn resolve(
    declared: &IndexMap<String, (ParamSpec, crate::diagnostic::Location)>,
    mut given: IndexMap<String, GivenValue>,
    source: &Source,
) -> Result<IndexMap<String, serde_json::Value>, Diagnostic> {
    if let Some((name, value)) = given.iter().find(|(name, _)| !declared.contains_key(*name)) {
        let names: Vec<&str> = declared.keys().map(String::as_str).collect();
        let help = match did_you_mean(name, &names) {
            Some(close) => format!("did you mean `{close}`?"),
            None if names.is_empty() => "this playbook declares no params".to_string(),
            None => format!("this playbook's params are: {}", names.join(", ")),
        };
        return Err(value
            .origin
            .diagnostic(format!("unknown param `{name}`"))
            .help(help));
    }
    let mut values = IndexMap::new();
    for (name, (spec, location)) in declared {
        let given = match given.shift_remove(name) {
            Some(given) => given,
            None => match &spec.default {
                Some(default) => GivenValue {
                    value: default.value.clone(),
                    origin: ValueOrigin::Default(
                        source.at(default.referenced.line(), default.referenced.column()),
                    ),
                },
                None if spec.is_required() => {
                    return Err(Diagnostic::at(
                        location.clone(),
                        format!("missing required param `{name}`"),
                    )
                    .help(format!(
                        "pass it with --var {name}=VALUE or in a --vars-file"
                    )));
                }
                None => {
                    values.insert(name.clone(), serde_json::Value::Null);
                    continue;
                }
            },
        };
        let typed = convert(&given.value, spec.kind).map_err(|message| {
            given
                .origin
                .diagnostic(format!("param `{name}`: {message}"))
                .help(type_help(spec.kind))
        })?;
        if let Some(pattern) = &spec.pattern {
            let text = match &typed {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            // The pattern was compiled once at load; a failure here cannot happen.
            let regex = regex::Regex::new(&pattern.value)
                .map_err(|error| Diagnostic::new(error.to_string()))?;
            if !regex.is_match(&text) {
                let shown = if spec.secret { "***".to_string() } else { text };
                return Err(given
                    .origin
                    .diagnostic(format!(
                        "param `{name}`: `{shown}` does not match the pattern `{}`",
                        pattern.value
                    ))
                    .help(format!("give a value that matches {}", pattern.value)));
            }
        }
        values.insert(name.clone(), typed);
    }
    Ok(values)
}

fn type_help(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "give a text value",
        ParamType::Int => "give a whole number, e.g. --var jobs=8",
        ParamType::Bool => "give true or false",
    }
}

/// Converts a given value to the declared type.
fn convert(value: &serde_json::Value, kind: ParamType) -> Result<serde_json::Value, String> {
    use serde_json::Value as Json;
    match (kind, value) {
        (ParamType::String, Json::String(_)) => Ok(value.clone()),
        (ParamType::String, Json::Number(number)) => Ok(Json::String(number.to_string())),
        (ParamType::String, Json::Bool(flag)) => Ok(Json::String(flag.to_string())),
        (ParamType::Int, Json::Number(number)) if number.is_i64() => Ok(value.clone()),
        (ParamType::Int, Json::String(text)) => text
            .trim()
            .parse::<i64>()
            .map(Json::from)
            .map_err(|_| format!("expected an int, got `{text}`")),
        (ParamType::Bool, Json::Bool(_)) => Ok(value.clone()),
        (ParamType::Bool, Json::String(text)) => match text.trim() {
            "true" | "True" | "yes" => Ok(Json::Bool(true)),
            "false" | "False" | "no" => Ok(Json::Bool(false)),
            _ => Err(format!("expected true or false, got `{text}`")),
        },
        (ParamType::String, _) => Err(format!("expected a text value, got {value}")),
        (ParamType::Int, _) => Err(format!("expected an int, got {value}")),
        (ParamType::Bool, _) => Err(format!("expected true or false, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_flag_text_to_the_declared_type() {
        assert_eq!(convert(&"8".into(), ParamType::Int), Ok(8.into()));
        assert!(convert(&"eight".into(), ParamType::Int).is_err());
        assert_eq!(convert(&"true".into(), ParamType::Bool), Ok(true.into()));
        assert_eq!(
            convert(&serde_json::json!(3), ParamType::String),
            Ok("3".into())
        );
    }

    #[test]
    fn rejects_malformed_var_flags() {
        assert!(parse_var_flags(&["novalue".into()]).is_err());
        assert!(parse_var_flags(&["bad name=x".into()]).is_err());
        let given = parse_var_flags(&["hub=a=b".into()]).unwrap();
        assert_eq!(given["hub"].value, serde_json::json!("a=b"));
    }
}
