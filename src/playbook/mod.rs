//! The playbook language: loading YAML with positions, validating it, binding params.

mod block;
mod include;
mod looping;
mod param;
mod vocabulary;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

pub use crate::actions::StepSpec;
use crate::diagnostic::{Diagnostic, Location, Source};
use crate::render::{Masker, Renderer, TemplateProblem, Vars};
pub use crate::syntax::{CheckSpec, CommandLine, CommandSpec, Condition, HumanDuration};
pub use crate::syntax::{Count, ExitCode, Setting, Templated};
pub use block::{Block, BlockPart, FAILED, Section};
pub use include::{Include, Scopes};
pub use looping::{ITEM, LoopItem};
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
    #[serde(default)]
    maintenance_window: Option<WindowDocument>,
}

/// `maintenance_window: {from: STEP, to: STEP}` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDocument {
    from: Spanned<String>,
    to: Spanned<String>,
}

/// The steps that open and close the maintenance window (users locked out): it opens when
/// `from` (an approval gate) is approved and closes when `to` finishes. The run's summary
/// says how long it lasted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// The step that opens it.
    pub from: String,
    /// The step that closes it.
    pub to: String,
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
    /// The steps in order, those of blocks (with their rescue and always) in their place.
    pub steps: Vec<Step>,
    /// The `block:` steps, whose steps are in `steps`.
    pub blocks: Vec<Block>,
    /// The `include:` steps (those of included playbooks too), whose steps are in `steps`.
    pub includes: Vec<Include>,
    /// sha256 of the file's content and of the files it includes.
    pub hash: String,
    /// `maintenance_window:`, when the playbook declares one.
    pub maintenance_window: Option<MaintenanceWindow>,
}

/// One validated step.
#[derive(Debug, Clone)]
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
    /// The block it belongs to, and in which part.
    pub part: Option<BlockPart>,
    /// `context:` (its own, its block's or its include's), as written, with where it is
    /// written: the kubeconfig context whose cluster the step talks to.
    pub context: Option<(String, Location)>,
    /// The include whose params, vars and registered names the step's templates use;
    /// `None` for a step of the playbook itself.
    pub scope: Option<usize>,
    /// The scope whose names `context` uses: the step's own, or its include's parent's
    /// when the context is the include step's.
    pub context_scope: Option<usize>,
    /// For one item of a `loop:` step (see [`Step::items`]), the item.
    pub item: Option<LoopItem>,
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

    /// Whether it is a step of a block's `rescue:` or `always:`.
    pub fn handles_failure(&self) -> bool {
        self.part.is_some_and(|part| part.section != Section::Body)
    }
}

/// Values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--var K=V`, in order.
    pub vars: Vec<String>,
    /// `--vars-file F`.
    pub vars_file: Option<String>,
    /// Values the environment offers (the sandbox's hub): used for the params the playbook
    /// declares, below the vars file and the flags.
    pub defaults: Vec<(String, String)>,
}

/// A playbook with its params checked and its vars rendered.
#[derive(Debug)]
pub struct Bound {
    /// Typed param values.
    pub params: IndexMap<String, serde_json::Value>,
    /// Params and derived vars, as templates see them.
    pub vars: Vars,
    /// The names of each included playbook's steps, with `vars` for the playbook's own.
    pub scopes: Scopes,
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

    /// Validates a playbook's text; `path` is used in messages and to find the files it
    /// includes.
    pub fn from_str(path: &Path, text: &str) -> Result<Self, Diagnostic> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        Self::from_str_in(path, text, &[(canonical, path.display().to_string())])
    }

    /// [`Playbook::from_str`] for a file included by the files of `chain` (itself last),
    /// each with its canonical path and the path shown in messages.
    fn from_str_in(
        path: &Path,
        text: &str,
        chain: &[(PathBuf, String)],
    ) -> Result<Self, Diagnostic> {
        let source = Source::new(path.display().to_string(), text);
        if has_no_content(text) {
            return Err(
                Diagnostic::new(format!("{}: the playbook is empty", source.path))
                    .help("start with `runbook: 1`, a `name:` and a list of `steps:`"),
            );
        }
        let document: PlaybookDocument = serde_saphyr::from_str(text).map_err(|error| {
            Diagnostic::from_yaml_in(&source, &error, &vocabulary::PlaybookWords)
        })?;
        // Every registered name with its step, to explain a use before the step that sets it.
        let registers = document
            .steps
            .value
            .iter()
            .filter_map(|step| {
                let register = step.value.register.as_ref()?;
                let line = step.referenced.line() as usize;
                Some((register.value.clone(), (step.value.id.value.clone(), line)))
            })
            .collect();
        Loader {
            source: &source,
            path,
            chain,
            renderer: Renderer::new(Masker::default()),
            registers,
            static_names: std::cell::OnceCell::new(),
        }
        .validate(document, path)
    }

    /// Checks the given values against the params and renders the vars.
    pub fn bind(&self, inputs: &Inputs) -> Result<Bound, Diagnostic> {
        self.bind_with(inputs, None)
    }

    /// [`Playbook::bind`] with one more vars file, read after `inputs.vars_file` and before
    /// the flags: a fleet's per-hub file, which wins over the file every hub shares.
    pub fn bind_with(&self, inputs: &Inputs, more: Option<&str>) -> Result<Bound, Diagnostic> {
        let mut given = IndexMap::new();
        let defaults: Vec<String> = inputs
            .defaults
            .iter()
            .filter(|(name, _)| self.params.contains_key(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        given.extend(parse_var_flags(&defaults)?);
        if let Some(file) = &inputs.vars_file {
            given.extend(read_vars_file(file)?);
        }
        if let Some(file) = more {
            given.extend(read_vars_file(file)?);
        }
        // Flags win over the files.
        given.extend(parse_var_flags(&inputs.vars)?);
        let params = param::resolve(&self.params, given, &self.source)?;
        let masker = Masker::new(param::secret_values(&self.params, &params));
        let renderer = Renderer::new(masker.clone());
        // The names every template may use besides params, vars and registers (a param of
        // the same name wins).
        let builtins: Vars = [
            ("playbook", serde_json::json!(self.name)),
            ("run_id", serde_json::json!(self.run_id(&params))),
        ]
        .iter()
        .map(|(name, value)| (name.to_string(), crate::render::to_value(value)))
        .collect();
        let vars = param::scope_names(&builtins, &params, &self.vars, &renderer)?;
        let scopes = include::bind_includes(&self.includes, &vars, &builtins, &masker)?;
        Ok(Bound {
            params,
            vars,
            scopes,
            masker,
        })
    }

    /// The id of the run of this playbook with these params: its name and a hash of the
    /// params that are not secret, so that the same command finds the same run.
    pub fn run_id(&self, params: &IndexMap<String, serde_json::Value>) -> String {
        let identity: BTreeMap<&str, &serde_json::Value> = params
            .iter()
            .filter(|(name, _)| !self.params.get(*name).is_some_and(|(spec, _)| spec.secret))
            .map(|(name, value)| (name.as_str(), value))
            .collect();
        let canonical = serde_json::to_string(&identity).unwrap_or_default();
        let digest = Sha256::digest(canonical.as_bytes());
        let short: String = digest
            .iter()
            .take(4)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{}-{short}", self.name)
    }

    /// Whether the playbook talks to a cluster (a `kube.*` action or a lookup function), so
    /// that a client must be configured before it runs.
    pub fn uses_kube(&self) -> bool {
        self.steps.iter().any(|step| {
            step.action_key.starts_with("kube.")
                || step.action().uses_cluster()
                || step.context.is_some()
        }) || std::iter::once(&self.source)
            .chain(self.includes.iter().map(|include| &include.source))
            .any(|source| source.text.contains("kube_get") || source.text.contains("kube_count"))
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id() == id)
    }

    /// The block a step belongs to, with its part.
    pub fn block_of(&self, step: &Step) -> Option<(&Block, Section)> {
        step.part
            .map(|part| (&self.blocks[part.block], part.section))
    }

    /// Where the playbook's own files (`templates/`) are looked up: the playbook's directory
    /// when it has a `templates/`, else the directory above it when that has one (the
    /// repository layout: `playbooks/` and `templates/` side by side).
    pub fn base_dir(&self) -> &Path {
        base_dir_of(&self.path)
    }

    /// Where a step's files are looked up: those of the playbook it is written in, which is
    /// an included one for an included step.
    pub fn base_dir_of(&self, step: &Step) -> &Path {
        match step.scope {
            Some(include) => base_dir_of(&self.includes[include].path),
            None => self.base_dir(),
        }
    }
}

/// [`Playbook::base_dir`] of the playbook at `path`.
fn base_dir_of(path: &Path) -> &Path {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match dir.parent() {
        Some(parent) if !dir.join("templates").is_dir() && parent.join("templates").is_dir() => {
            parent
        }
        _ => dir,
    }
}

/// A file with nothing but blank lines, comments and document markers.
fn has_no_content(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// Validation after parsing: what serde cannot check.
struct Loader<'a> {
    source: &'a Source,
    /// The file, whose directory included files are found from.
    path: &'a Path,
    /// The files that include this one, and itself last (canonical path, path as shown): an
    /// include of one of them is a cycle.
    chain: &'a [(PathBuf, String)],
    renderer: Renderer,
    /// Every `register:` name, with the id and line of the step that registers it.
    registers: BTreeMap<String, (String, usize)>,
    /// The names known before the first step (params, vars, built-in names): what the
    /// templates rendered before anything runs may use.
    static_names: std::cell::OnceCell<BTreeSet<String>>,
}

/// A template or condition to check, and where it is.
struct TemplateSite<'a> {
    /// "step `copy`", "var `pv`".
    what: &'a str,
    /// The key of a condition (`when`, `until`, ...), whose text is an expression.
    condition: Option<&'a str>,
    /// The lines it may be on.
    first_line: usize,
    last_line: usize,
    /// Names this site adds to the playbook's (`result` in `until`, `object` in a
    /// `kube.wait` expression); a slice rather than a copy of the known names, which grow
    /// with every registering step.
    also_known: &'a [&'a str],
}

/// The steps validated so far, with their ids and those of the blocks.
#[derive(Default)]
struct StepList {
    steps: Vec<Step>,
    blocks: Vec<Block>,
    includes: Vec<Include>,
    /// The maintenance windows of the included playbooks, their ids prefixed.
    windows: Vec<MaintenanceWindow>,
    /// Each step id with the line of its step: a lookup per step, not a scan of the
    /// earlier ones.
    ids: HashMap<String, usize>,
    /// Each block (and include) id with its line: unique like step ids, but not a step to
    /// refer to.
    block_ids: HashMap<String, usize>,
}

/// A step as its diagnostics need it: its id, where it starts, and its last line.
struct StepExtent<'a> {
    id: &'a str,
    location: &'a Location,
    end_line: usize,
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
        self.source.at_yaml(&spanned.referenced)
    }

    fn validate(&self, document: PlaybookDocument, path: &Path) -> Result<Playbook, Diagnostic> {
        self.validate_header(&document.runbook, &document.name)?;
        let params = self.validate_params(document.params)?;
        let mut known: BTreeSet<String> = params.keys().cloned().collect();
        known.extend(BUILTIN_NAMES.iter().map(|name| name.to_string()));
        let vars = self.validate_vars(document.vars, &mut known)?;
        let _ = self.static_names.set(known.clone());
        let list = self.validate_steps(document.steps, &mut known)?;
        let maintenance_window = match document.maintenance_window {
            Some(window) => Some(self.validate_window(window, &list.steps)?),
            // An included playbook's window is the run's when it is the only one.
            None if list.windows.len() == 1 => list.windows.into_iter().next(),
            None => None,
        };
        let mut hashed = self.source.text.as_bytes().to_vec();
        for include in &list.includes {
            hashed.extend_from_slice(include.source.text.as_bytes());
        }
        Ok(Playbook {
            path: path.to_path_buf(),
            source: self.source.clone(),
            name: document.name.value,
            description: document.description,
            params,
            vars,
            steps: list.steps,
            blocks: list.blocks,
            includes: list.includes,
            hash: sha256_hex(&hashed),
            maintenance_window,
        })
    }

    /// The format version this build reads, and a name fit for the run's directory.
    fn validate_header(
        &self,
        version: &Spanned<u32>,
        name: &Spanned<String>,
    ) -> Result<(), Diagnostic> {
        if version.value != FORMAT_VERSION {
            return Err(Diagnostic::at(
                self.at(version),
                format!("unsupported playbook format version {}", version.value),
            )
            .help(format!("this runbook reads `runbook: {FORMAT_VERSION}`")));
        }
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
        Ok(())
    }

    /// Params with identifiers for names and patterns that compile.
    fn validate_params(
        &self,
        declared: IndexMap<Spanned<String>, Spanned<Option<ParamSpec>>>,
    ) -> Result<IndexMap<String, (ParamSpec, Location)>, Diagnostic> {
        let mut params = IndexMap::new();
        for (param_name, spec) in declared {
            if !is_identifier(&param_name.value) {
                return Err(Diagnostic::at(self.at(&param_name), format!("`{}` is not a valid param name", param_name.value))
                    .help("a param name is an identifier: letters, digits and `_`, not starting with a digit"));
            }
            let location = self.at(&param_name);
            let spec_value = spec.value.unwrap_or_default();
            if let Some(pattern) = &spec_value.pattern
                && let Err(error) = regex::Regex::new(&pattern.value)
            {
                return Err(self.pattern_error(&param_name.value, pattern, &error));
            }
            params.insert(param_name.value, (spec_value, location));
        }
        Ok(params)
    }

    /// Vars in order: each a new identifier whose templates use only the names before it,
    /// which it then joins (`known`).
    fn validate_vars(
        &self,
        declared: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
        known: &mut BTreeSet<String>,
    ) -> Result<Vec<(String, serde_json::Value, Location)>, Diagnostic> {
        let mut vars = Vec::new();
        for (var_name, value) in declared {
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
            let what = format!("var `{}`", var_name.value);
            let site = TemplateSite {
                what: &what,
                condition: None,
                first_line: location.line,
                last_line: location.line,
                also_known: &[],
            };
            self.check_json_templates(&value.value, known, &site)?;
            known.insert(var_name.value.clone());
            let location = self.at(&var_name);
            vars.push((var_name.value, value.value, location));
        }
        Ok(vars)
    }

    /// The steps in order, at least one; each may use the names registered before it.
    fn validate_steps(
        &self,
        declared: Spanned<Vec<Spanned<StepSpec>>>,
        known: &mut BTreeSet<String>,
    ) -> Result<StepList, Diagnostic> {
        if declared.value.is_empty() {
            return Err(
                Diagnostic::at(self.at(&declared), "the playbook has no steps")
                    .help("add at least one step under `steps:`"),
            );
        }
        let mut list = StepList::default();
        self.validate_list(declared, usize::MAX, None, &mut list, known)?;
        Ok(list)
    }

    /// A list of steps (the playbook's, or a part of a block), each ending before the next
    /// one starts and the last one at `last_line`.
    fn validate_list(
        &self,
        declared: Spanned<Vec<Spanned<StepSpec>>>,
        last_line: usize,
        part: Option<BlockPart>,
        list: &mut StepList,
        known: &mut BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
        let step_lines: Vec<usize> = declared
            .value
            .iter()
            .map(|step| step.referenced.line() as usize)
            .collect();
        for (index, spanned) in declared.value.into_iter().enumerate() {
            let end_line = step_lines.get(index + 1).map_or(last_line, |next| next - 1);
            let spec = &spanned.value;
            if spec.block.is_some() || spec.rescue.is_some() || spec.always.is_some() {
                self.validate_block(spanned, end_line, part, list, known)?;
                continue;
            }
            if spec.include.is_some() || !spec.params.is_empty() {
                self.validate_include(spanned, end_line, part, list, known)?;
                continue;
            }
            self.check_step_id(&spec.id, &list.block_ids)?;
            let mut step = self.validate_step(spanned, end_line, list, known)?;
            step.part = part;
            list.ids.insert(step.id().to_string(), step.location.line);
            list.steps.push(step);
        }
        Ok(())
    }

    /// Both ends of the window are steps of the playbook, the opening one first.
    fn validate_window(
        &self,
        window: WindowDocument,
        steps: &[Step],
    ) -> Result<MaintenanceWindow, Diagnostic> {
        let ids: Vec<&str> = steps.iter().map(Step::id).collect();
        let position = |end: &Spanned<String>, key: &str| {
            ids.iter().position(|id| *id == end.value).ok_or_else(|| {
                let help = match crate::diagnostic::did_you_mean(&end.value, &ids) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("`{key}:` names a step id of this playbook"),
                };
                Diagnostic::at(
                    self.at(end),
                    format!("maintenance_window: no step `{}`", end.value),
                )
                .help(help)
            })
        };
        let from = position(&window.from, "from")?;
        let to = position(&window.to, "to")?;
        if from >= to {
            return Err(Diagnostic::at(
                self.at(&window.to),
                format!(
                    "maintenance_window: `{}` does not come after `{}`",
                    window.to.value, window.from.value
                ),
            )
            .help("`from:` is the step that opens the window, `to:` a later step that closes it"));
        }
        Ok(MaintenanceWindow {
            from: window.from.value,
            to: window.to.value,
        })
    }

    /// One step: a new valid id, exactly one action, references to earlier steps only,
    /// templates that use only known names, and a new name to register its output under
    /// (which joins `known`).
    fn validate_step(
        &self,
        spanned: Spanned<StepSpec>,
        end_line: usize,
        earlier: &StepList,
        known: &mut BTreeSet<String>,
    ) -> Result<Step, Diagnostic> {
        let location = self.at(&spanned);
        let spec = spanned.value;
        self.check_step_id(&spec.id, &earlier.ids)?;
        let extent = StepExtent {
            id: &spec.id.value,
            location: &location,
            end_line,
        };
        let (action_key, action) = self.single_action(&spec, &extent)?;
        action.check_source(self.source)?;
        self.check_step_references(action, &extent, earlier)?;
        // Every string of the step may be a template.
        let definition =
            serde_json::to_value(&spec).map_err(|error| Diagnostic::new(error.to_string()))?;
        let references = self.step_template_references(
            &spec,
            (action_key, action),
            &definition,
            &extent,
            known,
        )?;
        let context = spec
            .context
            .as_ref()
            .map(|context| self.validate_context(context, &extent, known))
            .transpose()?;
        if let Some(register) = &spec.register {
            self.register_name(register, known)?;
        }
        let hash = sha256_hex(definition.to_string().as_bytes());
        Ok(Step {
            spec,
            location,
            hash,
            action_key,
            references,
            part: None,
            context,
            scope: None,
            context_scope: None,
            item: None,
        })
    }

    /// A step's `context:`: a name, or a template of params and vars only, since every
    /// context's cluster is connected before the first step.
    fn validate_context(
        &self,
        context: &Spanned<String>,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<(String, Location), Diagnostic> {
        let at = self.at(context);
        if context.value.trim().is_empty() {
            return Err(
                Diagnostic::at(at, format!("step `{}`: `context:` is empty", extent.id))
                    .help("name a context of the kubeconfig, or leave `context:` out"),
            );
        }
        if crate::render::is_template(&context.value) {
            let line = StepExtent {
                id: extent.id,
                location: &at,
                end_line: at.line,
            };
            self.check_static(&context.value, "context", &line, known)?;
        }
        Ok((context.value.clone(), at))
    }

    /// A template rendered before the first step (`context:`, an include's `params:` and
    /// `when:`): it may use params and vars, not what steps register.
    fn check_static(
        &self,
        text: &str,
        key: &str,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
        let what = format!("step `{}`", extent.id);
        let site = TemplateSite {
            what: &what,
            condition: (key == "when").then_some("when"),
            first_line: extent.location.line,
            last_line: extent.end_line,
            also_known: &[],
        };
        let variables = self.check_template(text, known, &site)?;
        let statics = self.static_names.get();
        let late = variables
            .iter()
            .find(|name| statics.is_some_and(|statics| !statics.contains(*name)));
        let Some(late) = late else {
            return Ok(());
        };
        let help = match key {
            "context" => {
                "a context may use params and vars: every context's cluster is connected before the first step"
            }
            _ => {
                "the `params` and `when` of an include may use params and vars: the included playbook's params are bound before the first step"
            }
        };
        Err(Diagnostic::at(
            self.find_word(late, extent.location.line, extent.end_line),
            format!(
                "step `{}`: `{key}:` uses `{late}`, which is known only while the run goes on",
                extent.id
            ),
        )
        .help(help))
    }

    /// A step id is well formed and not taken by an earlier step.
    fn check_step_id(
        &self,
        id: &Spanned<String>,
        earlier_ids: &HashMap<String, usize>,
    ) -> Result<(), Diagnostic> {
        if !is_step_id(&id.value) {
            return Err(Diagnostic::at(
                self.at(id),
                format!("`{}` is not a valid step id", id.value),
            )
            .help("a step id uses lowercase letters, digits and `-`, e.g. `copy-homes`"));
        }
        if let Some(first_line) = earlier_ids.get(&id.value) {
            return Err(
                Diagnostic::at(self.at(id), format!("duplicate step id `{}`", id.value)).help(
                    format!(
                        "the id is already used by the step at line {first_line}; ids must be unique"
                    ),
                ),
            );
        }
        Ok(())
    }

    /// The step's one action, with its key.
    fn single_action<'s>(
        &self,
        spec: &'s StepSpec,
        extent: &StepExtent<'_>,
    ) -> Result<(&'static str, &'s dyn crate::actions::Action), Diagnostic> {
        let id = extent.id;
        match spec.actions().as_slice() {
            [(key, action)] => Ok((*key, *action)),
            [] => Err(Diagnostic::at(
                extent.location.clone(),
                format!("step `{id}` has no action"),
            )
            .help(format!(
                "give it one of: {}",
                StepSpec::ACTION_KEYS.join(", ")
            ))),
            several => {
                let keys: Vec<&str> = several.iter().map(|(key, _)| *key).collect();
                // Point at the second action: the first one is where the step is fine.
                let second = self.find_key(keys[1], extent.location, extent.end_line);
                Err(Diagnostic::at(
                    second,
                    format!(
                        "step `{id}` has {} actions: {}",
                        keys.len(),
                        keys.join(", ")
                    ),
                )
                .help("a step does exactly one thing: split it into several steps"))
            }
        }
    }

    /// The steps an action names (`after:`) come before it.
    fn check_step_references(
        &self,
        action: &dyn crate::actions::Action,
        extent: &StepExtent<'_>,
        earlier: &StepList,
    ) -> Result<(), Diagnostic> {
        let id = extent.id;
        for (key, referenced) in action.step_references() {
            if !earlier.ids.contains_key(referenced) {
                let ids: Vec<&str> = earlier.steps.iter().map(Step::id).collect();
                let block = earlier.blocks.iter().find(|block| block.id == referenced);
                let help = match (block, crate::diagnostic::did_you_mean(referenced, &ids)) {
                    (Some(block), _) => match earlier.steps.get(block.body.clone()) {
                        Some([.., last]) => format!(
                            "`{referenced}` is a block, not a step: name one of its steps, e.g. `{}`",
                            last.id()
                        ),
                        _ => format!("`{referenced}` is a block, not a step: name an earlier step"),
                    },
                    (None, Some(close)) => format!("did you mean `{close}`?"),
                    (None, None) => format!("`{key}:` names a step that comes before `{id}`"),
                };
                let at = self.find_nested_key(key, extent.location, extent.end_line);
                return Err(Diagnostic::at(
                    at,
                    format!("step `{id}`: `{key}: {referenced}` is not an earlier step"),
                )
                .help(help));
            }
        }
        Ok(())
    }

    /// The names the step's templates and expressions use, each checked to be known.
    fn step_template_references(
        &self,
        spec: &StepSpec,
        (action_key, action): (&'static str, &dyn crate::actions::Action),
        definition: &serde_json::Value,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let what = format!("step `{}`", extent.id);
        // A loop step's templates also see `item`; its `loop:` itself does not.
        let item: &[&str] = if spec.loop_over.is_some() {
            &[looping::ITEM]
        } else {
            &[]
        };
        let site = |condition, also_known| TemplateSite {
            what: &what,
            condition,
            first_line: extent.location.line,
            last_line: extent.end_line,
            also_known,
        };
        let mut written = definition.clone();
        if let Some(fields) = written.as_object_mut() {
            fields.remove("loop");
        }
        let mut references = self.check_json_templates(&written, known, &site(None, item))?;
        if let Some(over) = &spec.loop_over {
            references.extend(self.validate_loop(over, extent, known)?);
        }
        // Conditions are expressions even without braces.
        let mut conditions: Vec<(&str, &str)> = Vec::new();
        conditions.extend(spec.when.as_ref().map(|when| ("when", when.as_str())));
        conditions.extend(
            spec.require
                .as_ref()
                .map(|guard| ("require", guard.value.as_str())),
        );
        if let Some(CheckSpec::Expression(check)) = &spec.check {
            conditions.push(("check", check.as_str()));
        }
        for (key, condition) in conditions {
            references.extend(self.check_template(condition, known, &site(Some(key), item))?);
        }
        // An action's own expressions may also use the names it provides (`object`).
        let action_names: Vec<&str> = action
            .expression_names()
            .iter()
            .chain(item)
            .copied()
            .collect();
        for expression in action.expressions() {
            references.extend(self.check_template(
                expression.as_str(),
                known,
                &site(Some(action_key), &action_names),
            )?);
        }
        if let Some(until) = &spec.until {
            let names: Vec<&str> = ["result"].iter().chain(item).copied().collect();
            references.extend(self.check_template(
                until.as_str(),
                known,
                &site(Some("until"), &names),
            )?);
        }
        references.remove(looping::ITEM);
        Ok(references)
    }

    /// A step's `register:` is an identifier not yet taken; it joins `known`.
    fn register_name(
        &self,
        register: &Spanned<String>,
        known: &mut BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
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
        Ok(())
    }

    /// Checks every template string inside a JSON value.
    fn check_json_templates(
        &self,
        value: &serde_json::Value,
        known: &BTreeSet<String>,
        site: &TemplateSite,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let mut references = BTreeSet::new();
        match value {
            serde_json::Value::String(text) if crate::render::is_template(text) => {
                references.extend(self.check_template(text, known, site)?);
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    references.extend(self.check_json_templates(item, known, site)?);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    // A key may be a template too (a path of `values.set`).
                    if crate::render::is_template(key) {
                        references.extend(self.check_template(key, known, site)?);
                    }
                    references.extend(self.check_json_templates(item, known, site)?);
                }
            }
            _ => {}
        }
        Ok(references)
    }

    /// Checks one template's syntax, that its filters, tests and functions exist and that
    /// every variable it uses is known.
    fn check_template(
        &self,
        text: &str,
        known: &BTreeSet<String>,
        site: &TemplateSite,
    ) -> Result<BTreeSet<String>, Diagnostic> {
        let (first_line, last_line, what) = (site.first_line, site.last_line, site.what);
        let variables = self
            .renderer
            .variables(text, site.condition.is_some())
            .map_err(|problem| self.template_error(problem, text, site))?;
        let is_known = |name: &str| known.contains(name) || site.also_known.contains(&name);
        if let Some(unknown) = variables.iter().find(|name| !is_known(name)) {
            let at = self.find_word(unknown, first_line, last_line);
            if let Some((step, line)) = self.registers.get(unknown) {
                return Err(Diagnostic::at(
                    at,
                    format!(
                        "{what} uses `{unknown}`, which is registered by step `{step}` \
                         (line {line}) after this step"
                    ),
                )
                .help(format!(
                    "a step sees only what earlier steps registered: move this step after `{step}`"
                )));
            }
            let candidates: Vec<&str> = known
                .iter()
                .map(String::as_str)
                .chain(site.also_known.iter().copied())
                .collect();
            let help = match crate::diagnostic::did_you_mean(unknown, &candidates) {
                _ if unknown == looping::ITEM && site.condition == Some("loop") => {
                    "`item` is each item of the list `loop:` gives; the list itself cannot use it"
                        .to_string()
                }
                _ if unknown == looping::ITEM => {
                    "`item` is known in a step with a `loop:`: add one, e.g. `loop: [a, b]`"
                        .to_string()
                }
                Some(close) => format!("did you mean `{close}`?"),
                None => "a template may use params, vars and names registered by earlier steps"
                    .to_string(),
            };
            return Err(
                Diagnostic::at(at, format!("{what} uses undefined variable `{unknown}`"))
                    .help(help),
            );
        }
        Ok(variables)
    }

    /// The diagnostic for a template that cannot be used.
    fn template_error(
        &self,
        problem: TemplateProblem,
        text: &str,
        site: &TemplateSite,
    ) -> Diagnostic {
        let what = site.what;
        match problem {
            TemplateProblem::Syntax(detail) => {
                let needle = text.lines().next().unwrap_or(text);
                let at = self
                    .find(needle, site.first_line, site.last_line)
                    .with_width(needle.chars().count());
                match site.condition {
                    Some(key) if !crate::render::is_template(text) => Diagnostic::at(
                        at,
                        format!("{what}: `{key}`: invalid expression `{text}`: {detail}"),
                    )
                    .help(
                        "write a complete expression, such as `jobs > 2`, `hub == 'staging'` \
                         or `counted.stdout | int >= 3`",
                    ),
                    _ => Diagnostic::at(at, format!("{what}: invalid template `{text}`: {detail}"))
                        .help(
                            "templates use minijinja syntax: `{{ variable }}`, \
                             `{{ value | filter }}`, `{% if ... %}...{% endif %}`",
                        ),
                }
            }
            TemplateProblem::Unknown {
                kind,
                name,
                suggestion,
            } => {
                let help = match suggestion {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("there is no {kind} `{name}`; check its spelling"),
                };
                Diagnostic::at(
                    self.find_word(&name, site.first_line, site.last_line),
                    format!("{what} uses unknown {kind} `{name}`"),
                )
                .help(help)
            }
        }
    }

    /// The line of a step's `key:`: a key of the step's mapping, at its column.
    fn find_key(&self, key: &str, step: &Location, last_line: usize) -> Location {
        let column = step.column;
        let found = self.find_matching(step.line, last_line, |line| {
            let start = line.char_indices().nth(column.saturating_sub(1))?.0;
            let rest = &line[start..];
            let quoted = format!("\"{key}\"");
            let has_key = [key, quoted.as_str()].iter().any(|written| {
                rest.strip_prefix(written)
                    .is_some_and(|after| after.trim_start().starts_with(':'))
            });
            has_key.then_some(start)
        });
        found.with_width(key.chars().count())
    }

    /// The error for a `pattern:` that is not a regular expression, pointing into it when
    /// the regex crate says where.
    fn pattern_error(
        &self,
        param: &str,
        pattern: &Spanned<String>,
        error: &regex::Error,
    ) -> Diagnostic {
        let report = error.to_string();
        let detail = report
            .lines()
            .last()
            .unwrap_or("not a regular expression")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        let mut at = self.at(pattern);
        // The report shows the pattern and a line of carets under the problem.
        let lines: Vec<&str> = report.lines().collect();
        let offset = lines
            .iter()
            .position(|line| line.trim() == pattern.value)
            .and_then(|row| {
                let carets = lines.get(row + 1)?;
                let indent = lines[row].len() - lines[row].trim_start().len();
                let start = carets.find('^')?.checked_sub(indent)?;
                Some((start, carets.trim().len()))
            });
        let written = self
            .source
            .line_text(at.line)
            .map(|line| line.chars().skip(at.column - 1).collect::<String>())
            .unwrap_or_default();
        let quote = usize::from(written.starts_with(['"', '\'']));
        // Only when the pattern is written as it is (no escapes) do columns match.
        // The report counts columns in characters.
        if let Some((start, width)) = offset
            && start < pattern.value.chars().count()
            && written[quote..].starts_with(&pattern.value)
        {
            at.column += quote + start;
            at = at.with_width(width);
        }
        let help = if detail.contains("character class range") {
            "inside `[...]`, `-` between two characters makes a range; put it first or last to \
             match a literal `-`, e.g. `[A-Za-z0-9.:+-]`"
        } else {
            "write a regular expression in the syntax of https://docs.rs/regex, \
             e.g. `^[a-z0-9-]+$`"
        };
        Diagnostic::at(at, format!("invalid pattern for param `{param}`: {detail}")).help(help)
    }

    /// The first place `needle` appears between two lines (the start of the range otherwise).
    fn find(&self, needle: &str, first_line: usize, last_line: usize) -> Location {
        self.find_matching(first_line, last_line, |line| line.find(needle))
    }

    /// The first whole-word occurrence of `word` between two lines, underlined.
    fn find_word(&self, word: &str, first_line: usize, last_line: usize) -> Location {
        let pattern = regex::Regex::new(&format!(r"\b{}\b", regex::escape(word)));
        let at = match pattern {
            Ok(pattern) => self.find_matching(first_line, last_line, |line| {
                pattern.find(line).map(|m| m.start())
            }),
            Err(_) => self.find(word, first_line, last_line),
        };
        at.with_width(word.chars().count())
    }

    /// The first `key:` inside a step, at any depth (block or flow style), or the step.
    fn find_nested_key(&self, key: &str, step: &Location, last_line: usize) -> Location {
        let found = self.find_matching(step.line, last_line, |line| {
            line.match_indices(key).find_map(|(start, _)| {
                let before = line[..start].chars().next_back();
                let after = line[start + key.len()..].trim_start();
                let starts_word = before.is_none_or(|c| c.is_whitespace() || "{,-".contains(c));
                (starts_word && after.starts_with(':')).then_some(start)
            })
        });
        found.with_width(key.chars().count())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,000 steps load (each step's position used to be found by scanning the file from
    /// its start, and each id compared with every earlier one), and a duplicate id at the
    /// end still names the line of the first.
    #[test]
    fn a_playbook_of_twenty_thousand_steps_loads() {
        let mut text = String::from("runbook: 1\nname: big\nsteps:\n");
        for index in 0..20_000 {
            text.push_str(&format!(
                "  - id: s{index}\n    run: [echo, \"{{{{ playbook }}}}/{index}\"]\n"
            ));
        }
        let playbook = Playbook::from_str(Path::new("big.yaml"), &text).expect("loads");
        assert_eq!(playbook.steps.len(), 20_000);
        assert_eq!(playbook.steps[19_999].location.line, 3 + 2 * 19_999 + 1);

        text.push_str("  - id: s7\n    run: [true]\n");
        let error = Playbook::from_str(Path::new("big.yaml"), &text).expect_err("duplicate");
        assert_eq!(error.message, "duplicate step id `s7`");
        assert_eq!(error.location.map(|at| at.line), Some(3 + 2 * 20_000 + 1));
        assert!(error.help.is_some_and(|help| help.contains("line 18")));
    }

    fn load(text: &str) -> Result<Playbook, Diagnostic> {
        Playbook::from_str(Path::new("contexts.yaml"), text)
    }

    /// A step's `context:` is kept with its position; a block's applies to its steps
    /// unless a step names its own; and a playbook with one talks to a cluster.
    #[test]
    fn a_context_is_a_step_key_and_a_block_key() {
        let playbook = load(
            "runbook: 1\nname: two\nparams:\n  to: {default: b}\nsteps:\n  - id: one\n    context: a\n    run: [true]\n  - id: moved\n    context: \"{{ to }}\"\n    block:\n      - id: two\n        run: [true]\n      - id: three\n        context: c\n        run: [true]\n  - id: four\n    run: [true]\n",
        )
        .expect("loads");
        let contexts: Vec<Option<(&str, usize)>> = playbook
            .steps
            .iter()
            .map(|step| {
                step.context
                    .as_ref()
                    .map(|(name, at)| (name.as_str(), at.line))
            })
            .collect();
        assert_eq!(
            contexts,
            [
                Some(("a", 7)),
                Some(("{{ to }}", 10)),
                Some(("c", 15)),
                None
            ]
        );
        assert!(playbook.uses_kube());
    }

    /// A context must be known before anything runs: a registered name is refused where it
    /// is written, and an unknown name as in any template.
    #[test]
    fn a_context_uses_params_and_vars_only() {
        let error = load(
            "runbook: 1\nname: two\nsteps:\n  - id: which\n    run: [echo, b]\n    register: which\n  - id: two\n    context: \"{{ which.stdout }}\"\n    run: [true]\n",
        )
        .expect_err("a register");
        assert!(
            error.message.contains("`context:` uses `which`"),
            "{}",
            error.message
        );
        assert_eq!(error.location.as_ref().map(|at| at.line), Some(8));
        assert!(
            error
                .help
                .is_some_and(|help| help.contains("params and vars"))
        );

        let error = load(
            "runbook: 1\nname: two\nsteps:\n  - id: two\n    context: \"{{ nowhere }}\"\n    run: [true]\n",
        )
        .expect_err("unknown");
        assert!(
            error.message.contains("undefined variable `nowhere`"),
            "{}",
            error.message
        );

        let error = load(
            "runbook: 1\nname: two\nsteps:\n  - id: two\n    context: \"\"\n    run: [true]\n",
        )
        .expect_err("empty");
        assert_eq!(error.message, "step `two`: `context:` is empty");
        assert_eq!(error.location.map(|at| (at.line, at.column)), Some((5, 14)));
    }

    /// A context is a string.
    #[test]
    fn a_context_that_is_not_a_string_is_refused_where_it_is() {
        let error = load(
            "runbook: 1\nname: two\nsteps:\n  - id: two\n    context: [a, b]\n    run: [true]\n",
        )
        .expect_err("a list");
        assert_eq!(error.location.map(|at| at.line), Some(5));
    }
}
