//! The playbook language: loading YAML with positions, validating it, binding params.

mod command;
mod condition;
mod duration;
mod param;
#[macro_use]
mod step;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

pub use crate::actions::StepSpec;
use crate::diagnostic::{Diagnostic, Location, Source};
use crate::render::{Masker, Renderer, Vars};
pub use command::{CommandLine, CommandSpec};
pub use condition::{CheckSpec, Condition};
pub use duration::HumanDuration;
pub use param::{GivenValue, ParamSpec, ParamType, parse_var_flags, read_vars_file};

/// The playbook format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// The top level of a playbook file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookDocument {
    runbook: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    params: IndexMap<Spanned<String>, Spanned<Option<ParamSpec>>>,
    #[serde(default)]
    vars: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
    steps: Spanned<Vec<Spanned<StepSpec>>>,
}

/// A loaded and validated playbook.
#[derive(Debug)]
pub struct Playbook {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its text, for error snippets.
    pub source: Source,
    /// `name:`; with the params it identifies a run.
    pub name: String,
    /// `description:`.
    pub description: Option<String>,
    /// Declared params with the position of their declaration.
    pub params: IndexMap<String, (ParamSpec, Location)>,
    /// Derived values, rendered in order after the params.
    pub vars: Vec<(String, serde_json::Value, Location)>,
    /// The steps in order.
    pub steps: Vec<Step>,
    /// sha256 of the file's content.
    pub hash: String,
}

/// One validated step.
#[derive(Debug)]
pub struct Step {
    /// The step as written.
    pub spec: StepSpec,
    /// Where it starts.
    pub location: Location,
    /// sha256 of its definition; a done step whose hash changed is not silently skipped.
    pub hash: String,
    /// YAML key of its action (`run`, `pause`, ...).
    pub action_key: &'static str,
    /// Variables its templates and conditions use.
    pub references: BTreeSet<String>,
}

impl Step {
    /// The step's id.
    pub fn id(&self) -> &str {
        &self.spec.id.value
    }

    /// Its action. Validation guarantees there is exactly one.
    pub fn action(&self) -> &dyn crate::actions::Action {
        self.spec.actions()[0].1
    }

    /// The name under which its output is registered.
    pub fn register(&self) -> Option<&str> {
        self.spec.register.as_ref().map(|name| name.value.as_str())
    }

    /// A label for people: the name, or the id.
    pub fn title(&self) -> &str {
        self.spec.name.as_deref().unwrap_or(self.id())
    }
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--var K=V`, in order.
    pub vars: Vec<String>,
    /// `--vars-file F`.
    pub vars_file: Option<String>,
}

/// A playbook with its params checked and its vars rendered.
#[derive(Debug)]
pub struct Bound {
    /// Typed param values.
    pub params: IndexMap<String, serde_json::Value>,
    /// Params and derived vars, as templates see them.
    pub vars: Vars,
    /// Masks secret param values.
    pub masker: Masker,
}

impl Playbook {
    /// Reads and validates a playbook file.
    pub fn load(path: &Path) -> Result<Self, Diagnostic> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Diagnostic::new(format!(
                "{}: cannot read the playbook: {error}",
                path.display()
            ))
            .help("give the path of a playbook file, e.g. playbooks/example.yaml")
        })?;
        Self::from_str(path, &text)
    }

    /// Validates a playbook's text; `path` is used in messages.
    pub fn from_str(path: &Path, text: &str) -> Result<Self, Diagnostic> {
        let source = Source::new(path.display().to_string(), text);
        if text.trim().is_empty() {
            return Err(
                Diagnostic::new(format!("{}: the playbook is empty", source.path))
                    .help("start with `runbook: 1`, a `name:` and a list of `steps:`"),
            );
        }
        let document: PlaybookDocument =
            serde_saphyr::from_str(text).map_err(|error| Diagnostic::from_yaml(&source, &error))?;
        Loader {
            source: &source,
            renderer: Renderer::new(Masker::default()),
        }
        .validate(document, path)
    }

    /// Checks the given values against the params and renders the vars.
    pub fn bind(&self, inputs: &Inputs) -> Result<Bound, Diagnostic> {
        let mut given = IndexMap::new();
        if let Some(file) = &inputs.vars_file {
            given.extend(read_vars_file(file)?);
        }
        // Flags win over the file.
        given.extend(parse_var_flags(&inputs.vars)?);
        let params = param::resolve(&self.params, given, &self.source)?;
        let masker = Masker::new(
            self.params
                .iter()
                .filter(|(_, (spec, _))| spec.secret)
                .filter_map(|(name, _)| match &params[name] {
                    serde_json::Value::String(text) => Some(text.clone()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                }),
        );
        let renderer = Renderer::new(masker.clone());
        let mut vars: Vars = params
            .iter()
            .map(|(name, value)| (name.clone(), crate::render::to_value(value)))
            .collect();
        for (name, template, location) in &self.vars {
            let value = renderer.render_json(template, &vars).map_err(|error| {
                Diagnostic::at(
                    location.clone(),
                    format!("var `{name}`: {}", masker.mask(&error.message)),
                )
                .help("a var may use params and the vars above it")
            })?;
            vars.insert(name.clone(), crate::render::to_value(&value));
        }
        Ok(Bound {
            params,
            vars,
            masker,
        })
    }

    /// Whether the playbook talks to a cluster (a `kube.*` action or a lookup function), so
    /// that a client must be configured before it runs.
    pub fn uses_kube(&self) -> bool {
        self.steps
            .iter()
            .any(|step| step.action_key.starts_with("kube."))
            || self.source.text.contains("kube_get")
            || self.source.text.contains("kube_count")
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id() == id)
    }

    /// Where the playbook's own files (`templates/`) are looked up.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Validation after parsing: what serde cannot check.
struct Loader<'a> {
    source: &'a Source,
    renderer: Renderer,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_step_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Names every step may use besides params, vars and earlier registers.
const BUILTIN_NAMES: &[&str] = &["playbook", "run_id"];

impl Loader<'_> {
    fn at<T>(&self, spanned: &Spanned<T>) -> Location {
        self.source
            .at(spanned.referenced.line(), spanned.referenced.column())
    }

    fn validate(&self, document: PlaybookDocument, path: &Path) -> Result<Playbook, Diagnostic> {
        if document.runbook.value != FORMAT_VERSION {
            return Err(Diagnostic::at(
                self.at(&document.runbook),
                format!(
                    "unsupported playbook format version {}",
                    document.runbook.value
                ),
            )
            .help(format!("this runbook reads `runbook: {FORMAT_VERSION}`")));
        }
        let name = &document.name;
        if name.value.is_empty()
            || !name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Diagnostic::at(
                self.at(name),
                format!("`{}` is not a valid playbook name", name.value),
            )
            .help(
                "use letters, digits, `-`, `_` and `.`; the name is part of the run's directory",
            ));
        }

        let mut params = IndexMap::new();
        for (param_name, spec) in document.params {
            if !is_identifier(&param_name.value) {
                return Err(Diagnostic::at(self.at(&param_name), format!("`{}` is not a valid param name", param_name.value))
                    .help("a param name is an identifier: letters, digits and `_`, not starting with a digit"));
            }
            let location = self.at(&param_name);
            let spec_value = spec.value.unwrap_or_default();
            if let Some(pattern) = &spec_value.pattern
                && let Err(error) = regex::Regex::new(&pattern.value)
            {
                return Err(Diagnostic::at(
                    self.at(pattern),
                    format!("invalid pattern for param `{}`", param_name.value),
                )
                .help(
                    error
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("fix the regular expression")
                        .trim()
                        .to_string(),
                ));
            }
            params.insert(param_name.value, (spec_value, location));
        }

        let mut known: BTreeSet<String> = params.keys().cloned().collect();
        known.extend(BUILTIN_NAMES.iter().map(|name| name.to_string()));
        let mut vars = Vec::new();
        for (var_name, value) in document.vars {
            if !is_identifier(&var_name.value) {
                return Err(Diagnostic::at(
                    self.at(&var_name),
                    format!("`{}` is not a valid var name", var_name.value),
                )
                .help("a var name is an identifier: letters, digits and `_`"));
            }
            if known.contains(&var_name.value) {
                return Err(Diagnostic::at(
                    self.at(&var_name),
                    format!("var `{}` has the name of a param", var_name.value),
                )
                .help("rename the var"));
            }
            let location = self.at(&value);
            self.check_json_templates(
                &value.value,
                &known,
                location.line,
                location.line,
                &format!("var `{}`", var_name.value),
            )?;
            known.insert(var_name.value.clone());
            let location = self.at(&var_name);
            vars.push((var_name.value, value.value, location));
        }

        if document.steps.value.is_empty() {
            return Err(
                Diagnostic::at(self.at(&document.steps), "the playbook has no steps")
                    .help("add at least one step under `steps:`"),
            );
        }
        let step_lines: Vec<usize> = document
            .steps
            .value
            .iter()
            .map(|step| step.referenced.line() as usize)
            .collect();
        let mut steps: Vec<Step> = Vec::new();
        for (index, spanned) in document.steps.value.into_iter().enumerate() {
            let end_line = step_lines
                .get(index + 1)
                .map_or(usize::MAX, |next| next - 1);
            let step = self.validate_step(spanned, end_line, &steps, &mut known)?;
            steps.push(step);
        }
        Ok(Playbook {
            path: path.to_path_buf(),
            source: self.source.clone(),
            name: name.value.clone(),
            description: document.description,
            params,
            vars,
            steps,
            hash: sha256_hex(self.source.text.as_bytes()),
        })
    }

    fn validate_step(
        &self,
        spanned: Spanned<StepSpec>,
        end_line: usize,
        earlier: &[Step],
        known: &mut BTreeSet<String>,
    ) -> Result<Step, Diagnostic> {
        let location = self.at(&spanned);
        let spec = spanned.value;
        let id = &spec.id;
        if !is_step_id(&id.value) {
            return Err(Diagnostic::at(
                self.at(id),
                format!("`{}` is not a valid step id", id.value),
            )
            .help("a step id uses lowercase letters, digits and `-`, e.g. `copy-homes`"));
        }
        if let Some(first) = earlier.iter().find(|step| step.id() == id.value) {
            return Err(
                Diagnostic::at(self.at(id), format!("duplicate step id `{}`", id.value)).help(
                    format!(
                        "the id is already used by the step at line {}; ids must be unique",
                        first.location.line
                    ),
                ),
            );
        }
        let actions = spec.actions();
        let action_key = match actions.as_slice() {
            [(key, _)] => *key,
            [] => {
                return Err(
                    Diagnostic::at(location, format!("step `{}` has no action", id.value)).help(
                        format!("give it one of: {}", StepSpec::ACTION_KEYS.join(", ")),
                    ),
                );
            }
            several => {
                let keys: Vec<&str> = several.iter().map(|(key, _)| *key).collect();
                return Err(Diagnostic::at(
                    location,
                    format!(
                        "step `{}` has {} actions: {}",
                        id.value,
                        keys.len(),
                        keys.join(", ")
                    ),
                )
                .help("a step does exactly one thing: split it into several steps"));
            }
        };
        let step_line = location.line;
        let what = format!("step `{}`", id.value);

        // Every string of the step may be a template.
        let definition =
            serde_json::to_value(&spec).map_err(|error| Diagnostic::new(error.to_string()))?;
        let mut references =
            self.check_json_templates(&definition, known, step_line, end_line, &what)?;
        // Conditions are expressions even without braces.
        let mut conditions: Vec<&str> = Vec::new();
        conditions.extend(spec.when.as_ref().map(Condition::as_str));
        conditions.extend(spec.require.as_ref().map(|guard| guard.value.as_str()));
        if let Some(CheckSpec::Expression(check)) = &spec.check {
            conditions.push(check.as_str());
        }
        conditions.extend(
            actions[0]
                .1
                .expressions()
                .into_iter()
                .map(Condition::as_str),
        );
        for condition in conditions {
            references
                .extend(self.check_template(condition, true, known, step_line, end_line, &what)?);
        }
        if let Some(until) = &spec.until {
            let mut with_result = known.clone();
            with_result.insert("result".into());
            references.extend(self.check_template(
                until.as_str(),
                true,
                &with_result,
                step_line,
                end_line,
                &what,
            )?);
        }

        if let Some(register) = &spec.register {
            if !is_identifier(&register.value) {
                return Err(Diagnostic::at(
                    self.at(register),
                    format!("`{}` is not a valid name to register", register.value),
                )
                .help("use an identifier: letters, digits and `_`"));
            }
            if known.contains(&register.value) {
                return Err(Diagnostic::at(
                    self.at(register),
                    format!(
                        "`{}` is already a param, var or registered name",
                        register.value
                    ),
                )
                .help("register the output under a name of its own"));
            }
            known.insert(register.value.clone());
        }
        let hash = sha256_hex(definition.to_string().as_bytes());
        Ok(Step {
            spec,
            location,
            hash,
            action_key,
            references,
        })
    }

    /// Checks every template string inside a JSON value.
    fn check_json_templates(
        &self,
        value: &serde_json::Value,
        known: &BTreeSet<String>,
        first_line: usize,
        last_line: usize,
        what: &str,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let mut references = BTreeSet::new();
        match value {
            serde_json::Value::String(text) if crate::render::is_template(text) => {
                references
                    .extend(self.check_template(text, false, known, first_line, last_line, what)?);
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    references.extend(
                        self.check_json_templates(item, known, first_line, last_line, what)?,
                    );
                }
            }
            serde_json::Value::Object(map) => {
                for item in map.values() {
                    references.extend(
                        self.check_json_templates(item, known, first_line, last_line, what)?,
                    );
                }
            }
            _ => {}
        }
        Ok(references)
    }

    /// Checks one template's syntax and that every variable it uses is known.
    fn check_template(
        &self,
        text: &str,
        expression: bool,
        known: &BTreeSet<String>,
        first_line: usize,
        last_line: usize,
        what: &str,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let variables = self.renderer.variables(text, expression).map_err(|message| {
            let needle = text.lines().next().unwrap_or(text);
            Diagnostic::at(self.find(needle, first_line, last_line), format!("{what}: invalid template `{text}`: {message}"))
                .help("templates use minijinja syntax: {{ variable }}, {{ a | filter }}, {% if ... %}")
        })?;
        if let Some(unknown) = variables.iter().find(|name| !known.contains(*name)) {
            let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
            let help = match crate::diagnostic::did_you_mean(unknown, &candidates) {
                Some(close) => format!("did you mean `{close}`?"),
                None => "a template may use params, vars and names registered by earlier steps"
                    .to_string(),
            };
            return Err(Diagnostic::at(
                self.find_word(unknown, first_line, last_line),
                format!("{what} uses undefined variable `{unknown}`"),
            )
            .help(help));
        }
        Ok(variables)
    }

    /// The first place `needle` appears between two lines (the start of the range otherwise).
    fn find(&self, needle: &str, first_line: usize, last_line: usize) -> Location {
        self.find_matching(first_line, last_line, |line| line.find(needle))
    }

    /// The first whole-word occurrence of `word` between two lines.
    fn find_word(&self, word: &str, first_line: usize, last_line: usize) -> Location {
        let pattern = regex::Regex::new(&format!(r"\b{}\b", regex::escape(word)));
        match pattern {
            Ok(pattern) => self.find_matching(first_line, last_line, |line| {
                pattern.find(line).map(|m| m.start())
            }),
            Err(_) => self.find(word, first_line, last_line),
        }
    }

    fn find_matching(
        &self,
        first_line: usize,
        last_line: usize,
        position: impl Fn(&str) -> Option<usize>,
    ) -> Location {
        for (index, line) in self
            .source
            .text
            .lines()
            .enumerate()
            .skip(first_line.saturating_sub(1))
        {
            let number = index + 1;
            if number > last_line {
                break;
            }
            if let Some(byte) = position(line) {
                let column = line[..byte].chars().count() + 1;
                return self.source.at(number as u64, column as u64);
            }
        }
        self.source.at(first_line as u64, 1)
    }
}
