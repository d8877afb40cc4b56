//! Params: declared in the playbook, given with `--var K=V` and `--vars-file`, checked
//! against their type and pattern before anything runs.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::vocabulary::VarsFileWords;
use crate::diagnostic::{Diagnostic, Location, Source, did_you_mean};

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
    Flag {
        /// The param's name.
        name: String,
        /// The value as given.
        value: String,
    },
    /// A `key: value` in a `--vars-file`.
    File {
        /// Where the key is.
        key: Location,
        /// Where the value is.
        value: Location,
    },
    /// The param's `default:`, at the value.
    Default(Location),
    /// A `key: value` in the `params:` of an include step.
    Include {
        /// Where the key is.
        key: Location,
        /// Where the value is.
        value: Location,
    },
}

impl ValueOrigin {
    /// An error about the name the value was given under.
    fn name_diagnostic(&self, message: String) -> Diagnostic {
        match self {
            // The value does not matter here, and it may be a secret given under a typo.
            ValueOrigin::Flag { name, .. } => Diagnostic::new(format!("--var {name}: {message}")),
            ValueOrigin::File { key, .. } | ValueOrigin::Include { key, .. } => {
                Diagnostic::at(key.clone(), message)
            }
            ValueOrigin::Default(location) => Diagnostic::at(location.clone(), message),
        }
    }

    /// An error about the value; a secret value is never shown, not even in the snippet.
    fn value_diagnostic(&self, message: String, secret: Option<&str>) -> Diagnostic {
        match self {
            ValueOrigin::Flag { name, value } => {
                let shown = if secret.is_some() { "***" } else { value };
                Diagnostic::new(format!("--var {name}={shown}: {message}"))
            }
            ValueOrigin::File {
                value: location, ..
            }
            | ValueOrigin::Include {
                value: location, ..
            }
            | ValueOrigin::Default(location) => {
                let location = match secret {
                    Some(secret) => {
                        let masked = location.source.masking(secret);
                        location.clone().in_source(masked).with_width(3)
                    }
                    None => location.clone(),
                };
                Diagnostic::at(location, message)
            }
        }
    }

    /// How to give a value of type `kind` this way.
    fn type_help(&self, kind: ParamType, name: &str) -> String {
        let (what, example) = match kind {
            ParamType::String => ("a string", "prod"),
            ParamType::Int => ("a whole number", "8"),
            ParamType::Bool => ("true or false", "true"),
        };
        match self {
            ValueOrigin::Flag { .. } => format!("give {what}, e.g. --var {name}={example}"),
            ValueOrigin::File { .. } => format!("write {what}, e.g. `{name}: {example}`"),
            ValueOrigin::Default(_) => format!("write {what}, e.g. `default: {example}`"),
            ValueOrigin::Include { .. } => {
                format!("give {what} under the include's `params:`, e.g. `{name}: {example}`")
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
            // Only the name: the value may be a secret.
            return Err(Diagnostic::new(format!(
                "--var {name}=...: `{name}` is not a param name (letters, digits and `_`)"
            ))
            .help("write it as --var NAME=VALUE"));
        }
        given.insert(
            name.to_string(),
            GivenValue {
                value: serde_json::Value::String(value.to_string()),
                origin: ValueOrigin::Flag {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            },
        );
    }
    Ok(given)
}

/// Reads a `--vars-file`: a YAML mapping of param names to values.
pub fn read_vars_file(path: &str) -> Result<IndexMap<String, GivenValue>, Diagnostic> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Diagnostic::new(format!("--vars-file {path}: cannot read it: {error}"))
            .help("give the path of a YAML file with one `name: value` per line")
    })?;
    let source = Source::new(path, text.as_str());
    let entries: IndexMap<Spanned<String>, Spanned<serde_json::Value>> =
        if super::has_no_content(&text) {
            IndexMap::new()
        } else {
            serde_saphyr::from_str(&text)
                .map_err(|error| Diagnostic::from_yaml_in(&source, &error, &VarsFileWords))?
        };
    Ok(entries
        .into_iter()
        .map(|(name, value)| {
            let origin = ValueOrigin::File {
                key: source.at_yaml(&name.referenced),
                value: source.at_yaml(&value.referenced),
            };
            (
                name.value,
                GivenValue {
                    value: value.value,
                    origin,
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
            .name_diagnostic(format!("unknown param `{name}`"))
            .help(help));
    }
    let mut values = IndexMap::new();
    for (name, (spec, location)) in declared {
        let given = match given.shift_remove(name) {
            Some(given) => given,
            None => match &spec.default {
                Some(default) => GivenValue {
                    value: default.value.clone(),
                    origin: ValueOrigin::Default(source.at_yaml(&default.referenced)),
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
        let given_text = as_text(&given.value);
        let secret = spec.secret.then_some(given_text.as_str());
        let typed = convert(&given.value, spec.kind).ok_or_else(|| {
            let expected = match spec.kind {
                ParamType::String => "a string",
                ParamType::Int => "a whole number",
                ParamType::Bool => "true or false",
            };
            let message = match secret {
                Some(_) => format!("param `{name}` must be {expected}; the value given is not"),
                None => format!("param `{name}` must be {expected}, not `{given_text}`"),
            };
            given
                .origin
                .value_diagnostic(message, secret)
                .help(given.origin.type_help(spec.kind, name))
        })?;
        if let Some(pattern) = &spec.pattern {
            let text = as_text(&typed);
            // The pattern was compiled once at load; a failure here cannot happen.
            let regex = regex::Regex::new(&pattern.value)
                .map_err(|error| Diagnostic::new(error.to_string()))?;
            if !regex.is_match(&text) {
                let shown = if spec.secret { "***".to_string() } else { text };
                return Err(given
                    .origin
                    .value_diagnostic(
                        format!(
                            "param `{name}`: `{shown}` does not match the pattern `{}`",
                            pattern.value
                        ),
                        secret,
                    )
                    .help(format!("give a value that matches `{}`", pattern.value)));
            }
        }
        values.insert(name.clone(), typed);
    }
    Ok(values)
}

/// The values of the secret params among `values`, as a masker takes them.
pub(super) fn secret_values(
    declared: &IndexMap<String, (ParamSpec, crate::diagnostic::Location)>,
    values: &IndexMap<String, serde_json::Value>,
) -> Vec<String> {
    declared
        .iter()
        .filter(|(_, (spec, _))| spec.secret)
        .filter_map(|(name, _)| match values.get(name)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        })
        .collect()
}

/// The names a playbook's templates see before any step: the built-in ones, its params,
/// then its vars, each rendered with the names before it.
pub(super) fn scope_names(
    builtins: &crate::render::Vars,
    params: &IndexMap<String, serde_json::Value>,
    vars: &[(String, serde_json::Value, crate::diagnostic::Location)],
    renderer: &crate::render::Renderer,
) -> Result<crate::render::Vars, Diagnostic> {
    let mut names = builtins.clone();
    names.extend(
        params
            .iter()
            .map(|(name, value)| (name.clone(), crate::render::to_value(value))),
    );
    for (name, template, location) in vars {
        let value = renderer.render_json(template, &names).map_err(|error| {
            Diagnostic::at(
                location.clone(),
                format!("var `{name}`: {}", renderer.masker().mask(&error.message)),
            )
            .help("a var may use params and the vars above it")
        })?;
        names.insert(name.clone(), crate::render::to_value(&value));
    }
    Ok(names)
}

/// A given value as text: a string as it is, anything else as JSON.
fn as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Converts a given value to the declared type; `None` when it is not one. The caller words
/// the error, since only it knows whether the value may be shown.
fn convert(value: &serde_json::Value, kind: ParamType) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    match (kind, value) {
        (ParamType::String, Json::String(_)) => Some(value.clone()),
        (ParamType::String, Json::Number(number)) => Some(Json::String(number.to_string())),
        (ParamType::String, Json::Bool(flag)) => Some(Json::String(flag.to_string())),
        (ParamType::Int, Json::Number(number)) if number.is_i64() => Some(value.clone()),
        (ParamType::Int, Json::String(text)) => text.trim().parse::<i64>().ok().map(Json::from),
        (ParamType::Bool, Json::Bool(_)) => Some(value.clone()),
        (ParamType::Bool, Json::String(text)) => match text.trim() {
            "true" | "True" | "yes" => Some(Json::Bool(true)),
            "false" | "False" | "no" => Some(Json::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_flag_text_to_the_declared_type() {
        assert_eq!(convert(&"8".into(), ParamType::Int), Some(8.into()));
        assert!(convert(&"eight".into(), ParamType::Int).is_none());
        assert_eq!(convert(&"true".into(), ParamType::Bool), Some(true.into()));
        assert_eq!(
            convert(&serde_json::json!(3), ParamType::String),
            Some("3".into())
        );
    }

    fn declared(spec: &str) -> IndexMap<String, (ParamSpec, Location)> {
        let source = Source::new("p.yaml", "");
        let spec: ParamSpec = serde_saphyr::from_str(spec).unwrap();
        IndexMap::from([("token".to_string(), (spec, source.at(1, 1)))])
    }

    #[test]
    fn errors_about_a_secret_never_show_it() {
        let source = Source::new("p.yaml", "");
        for (spec, value) in [
            ("{secret: true, pattern: '^[a-f0-9]{8}$'}", "hunter2-s3cret"),
            ("{secret: true, type: int}", "hunter2-s3cret"),
        ] {
            let given = parse_var_flags(&[format!("token={value}")]).unwrap();
            let error = resolve(&declared(spec), given, &source).unwrap_err();
            let shown = error.to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("--var token=***"), "{shown}");
        }
        // A secret in a vars file is masked in the snippet too.
        let file = Source::new("v.yaml", "token: hunter2-s3cret\n");
        let given = IndexMap::from([(
            "token".to_string(),
            GivenValue {
                value: "hunter2-s3cret".into(),
                origin: ValueOrigin::File {
                    key: file.at(1, 1),
                    value: file.at(1, 8),
                },
            },
        )]);
        let error = resolve(&declared("{secret: true, type: int}"), given, &source).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn rejects_malformed_var_flags() {
        assert!(parse_var_flags(&["novalue".into()]).is_err());
        assert!(parse_var_flags(&["bad name=x".into()]).is_err());
        let given = parse_var_flags(&["hub=a=b".into()]).unwrap();
        assert_eq!(given["hub"].value, serde_json::json!("a=b"));
    }
}
