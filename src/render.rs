//! The template language: a minijinja environment with strict undefined, our filters and
//! functions, expression evaluation for conditions, and masking of secrets.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use minijinja::value::{Object, ValueKind};
use minijinja::{Environment, UndefinedBehavior, Value};

/// Variables visible to templates: params, derived vars and registered outputs.
pub type Vars = BTreeMap<String, Value>;

/// Converts any serializable value (a JSON output, a param) into a template value.
pub fn to_value(value: &impl serde::Serialize) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// Replaces secret values with `***` wherever they appear. Clones share their secrets, so
/// a secret learnt during a run (a Secret's data read by a step) is masked everywhere.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Masker {
    /// A masker for these secret values (empty values are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let masker = Masker::default();
        masker.add(secrets);
        masker
    }

    /// Masks these values too from now on (empty values are ignored).
    pub fn add(&self, secrets: impl IntoIterator<Item = String>) {
        let mut secrets = secrets.into_iter().peekable();
        if secrets.peek().is_none() {
            return;
        }
        if let Ok(mut known) = self.secrets.write() {
            known.extend(secrets.filter(|s| !s.is_empty()));
            known.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
            known.dedup();
        }
    }

    fn is_empty(&self) -> bool {
        self.secrets
            .read()
            .map(|known| known.is_empty())
            .unwrap_or(true)
    }

    /// A stand-in for every secret known now, or None when there is none.
    fn stand_ins(&self) -> Option<StandIns> {
        let secrets = self.secrets.read().ok()?.clone();
        StandIns::new(secrets)
    }

    /// `text` with every secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_string();
        let Ok(secrets) = self.secrets.read() else {
            return masked;
        };
        for secret in secrets.iter() {
            if masked.contains(secret.as_str()) {
                masked = masked.replace(secret.as_str(), "***");
            }
        }
        masked
    }

    /// Masks every string inside a JSON value, in place.
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(text) => *text = self.mask(text),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|item| self.mask_json(item))
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|item| self.mask_json(item))
            }
            _ => {}
        }
    }
}

/// Derived strings shorter than this many characters are not masked: a `| length` of 32 or
/// a first letter would otherwise mask every "32" or "a" of the output.
pub const DERIVED_MIN_CHARS: usize = 4;

/// Each secret with a stand-in of the same length that differs from it in every ASCII letter
/// and digit (letters rotated by 13, digits by 5) and keeps its punctuation, so that a
/// template treats both alike (`split('-')` splits both in the same places) but every string
/// derived from the secret comes out different.
struct StandIns {
    secrets: AhoCorasick,
    stand_ins: Vec<String>,
    /// The secrets, to recognise a number param that is one.
    exact: HashSet<String>,
}

impl StandIns {
    /// None when there are no secrets (or, impossibly for plain strings, when the matcher
    /// cannot be built: then nothing is substituted and nothing derived is found).
    fn new(secrets: Vec<String>) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        // Leftmost-longest, so a secret that contains another is replaced whole, and in one
        // pass, so a stand-in that happens to be another secret is not replaced again.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&secrets)
            .ok()?;
        Some(StandIns {
            secrets: matcher,
            stand_ins: secrets.iter().map(|secret| stand_in(secret)).collect(),
            exact: secrets.into_iter().collect(),
        })
    }

    /// `text` with every secret replaced by its stand-in, or None when it holds none.
    fn replace(&self, text: &str) -> Option<String> {
        self.secrets
            .is_match(text)
            .then(|| self.secrets.replace_all(text, &self.stand_ins))
    }

    /// `value` with every secret in its strings (and numbers that are secrets) replaced, or
    /// None when it holds none.
    fn value(&self, value: &Value) -> Option<Value> {
        match value.kind() {
            ValueKind::String => self.replace(value.as_str()?).map(Value::from),
            ValueKind::Number => {
                let text = value.to_string();
                self.exact.contains(&text).then(|| {
                    let other = stand_in(&text);
                    match (other.parse::<i64>(), other.parse::<f64>()) {
                        (Ok(integer), _) => Value::from(integer),
                        (_, Ok(float)) => Value::from(float),
                        _ => Value::from(other),
                    }
                })
            }
            ValueKind::Seq => {
                let items: Vec<Value> = value.try_iter().ok()?.collect();
                let replaced: Vec<Option<Value>> =
                    items.iter().map(|item| self.value(item)).collect();
                replaced.iter().any(Option::is_some).then(|| {
                    items
                        .into_iter()
                        .zip(replaced)
                        .map(|(item, replaced)| replaced.unwrap_or(item))
                        .collect()
                })
            }
            ValueKind::Map => {
                let mut changed = false;
                let pairs: Vec<(Value, Value)> = value
                    .try_iter()
                    .ok()?
                    .map(|key| {
                        let item = value.get_item(&key).unwrap_or_default();
                        let new_key = self.value(&key);
                        let new_item = self.value(&item);
                        changed |= new_key.is_some() || new_item.is_some();
                        (new_key.unwrap_or(key), new_item.unwrap_or(item))
                    })
                    .collect();
                changed.then(|| Value::from_pairs(pairs))
            }
            _ => None,
        }
    }
}

/// The stand-in of one secret: see [`StandIns`].
fn stand_in(secret: &str) -> String {
    let rotated: String = secret
        .chars()
        .map(|c| match c {
            'a'..='z' => (b'a' + (c as u8 - b'a' + 13) % 26) as char,
            'A'..='Z' => (b'A' + (c as u8 - b'A' + 13) % 26) as char,
            '0'..='9' => (b'0' + (c as u8 - b'0' + 5) % 10) as char,
            other => other,
        })
        .collect();
    if rotated != secret {
        return rotated;
    }
    // Nothing to rotate (all punctuation or other scripts): any other text of the same length.
    secret
        .chars()
        .map(|c| if c == 'Z' { 'Y' } else { 'Z' })
        .collect()
}

/// What `{{ ... }}` blocks printed during one render, in order, recorded by the formatter
/// (it finds this object among the render's variables under [`EMITTED`]).
#[derive(Debug, Default)]
struct Emitted(Mutex<Vec<Value>>);

impl Object for Emitted {}

/// The variable under which a render's [`Emitted`] travels to the formatter; not an
/// identifier, so no param, var or register can take it, nor a template name it.
const EMITTED: &str = "runbook:emitted";

/// Prints a value as minijinja would, and records it when the render is being recorded.
fn recording_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if let Some(emitted) = state.lookup(EMITTED)
        && let Some(emitted) = emitted.downcast_object_ref::<Emitted>()
        && let Ok(mut values) = emitted.0.lock()
    {
        values.push(value.clone());
    }
    minijinja::escape_formatter(out, state, value)
}

/// The strings of a printed value that a reader could see: the value itself when it is a
/// string or a number, the strings and numbers inside a list or map. Booleans and none are
/// left out: "true" is not a secret, even when a comparison with one decided it.
fn shown_texts(value: &Value) -> Vec<String> {
    match value.kind() {
        ValueKind::String | ValueKind::Number => vec![value_to_text(value)],
        ValueKind::Seq | ValueKind::Map => value
            .try_iter()
            .map(|items| {
                items
                    .flat_map(|item| {
                        let mut texts = shown_texts(&item);
                        if value.kind() == ValueKind::Map {
                            texts.extend(shown_texts(&value.get_item(&item).unwrap_or_default()));
                        }
                        texts
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The strings derived from secrets, given what a template printed with the real values
/// (`real`) and with the secrets' stand-ins (`stand_in`): what differs was derived from a
/// secret. Printed pieces that differ and follow each other (a loop over a secret's letters)
/// are derived as a whole too. When the two did not print the same number of things (a
/// secret decided an `if`), whatever only the real render printed counts as derived.
fn derived_texts(real: &[Value], stand_in: &[Value]) -> Vec<String> {
    let mut derived = Vec::new();
    if real.len() == stand_in.len() {
        // A run of consecutive differing prints; equal prints of punctuation alone (which a
        // stand-in keeps: `-` of a secret's letters) continue it without ending it.
        let mut run = String::new();
        let mut pieces = 0;
        let mut pending = String::new();
        let end_run = |run: &mut String, pieces: &mut usize, derived: &mut Vec<String>| {
            if *pieces > 1 {
                derived.push(std::mem::take(run));
            }
            run.clear();
            *pieces = 0;
        };
        for (real, stand_in) in real.iter().zip(stand_in) {
            if real == stand_in {
                match real.as_str() {
                    Some(text)
                        if pieces > 0 && !text.chars().any(|c| c.is_ascii_alphanumeric()) =>
                    {
                        pending.push_str(text)
                    }
                    _ => {
                        end_run(&mut run, &mut pieces, &mut derived);
                        pending.clear();
                    }
                }
                continue;
            }
            let (real_texts, stand_in_texts) = (shown_texts(real), shown_texts(stand_in));
            if real_texts.len() == stand_in_texts.len() {
                derived.extend(
                    real_texts
                        .into_iter()
                        .zip(stand_in_texts)
                        .filter(|(real, stand_in)| real != stand_in)
                        .map(|(real, _)| real),
                );
            } else {
                derived.extend(
                    real_texts
                        .into_iter()
                        .filter(|text| !stand_in_texts.contains(text)),
                );
            }
            match real.as_str() {
                Some(text) => {
                    run.push_str(&std::mem::take(&mut pending));
                    run.push_str(text);
                    pieces += 1;
                }
                None => {
                    end_run(&mut run, &mut pieces, &mut derived);
                    pending.clear();
                }
            }
        }
        end_run(&mut run, &mut pieces, &mut derived);
    } else {
        let printed: HashSet<String> = stand_in.iter().flat_map(shown_texts).collect();
        derived.extend(
            real.iter()
                .flat_map(shown_texts)
                .filter(|text| !printed.contains(text)),
        );
    }
    derived.retain(|text| text.chars().count() >= DERIVED_MIN_CHARS);
    derived
}

/// What a render recorded in its [`Emitted`].
fn printed(emitted: &Value) -> Vec<Value> {
    emitted
        .downcast_object_ref::<Emitted>()
        .and_then(|emitted| emitted.0.lock().ok().map(|values| values.clone()))
        .unwrap_or_default()
}

/// A template or expression could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    /// What went wrong, naming the variable when one is undefined.
    pub message: String,
    /// The undefined variable, when that is the problem.
    pub undefined: Option<String>,
    /// Set when a function the template called was given input that cannot work (a
    /// malformed selector), so that the step ends as invalid input.
    #[source]
    pub invalid_input: Option<crate::failure::InvalidInput>,
}

impl RenderError {
    fn from_minijinja(error: &minijinja::Error, vars: Option<&Vars>, source: &str) -> Self {
        let undefined = (error.kind() == minijinja::ErrorKind::UndefinedError)
            .then(|| first_missing_variable(source, vars))
            .flatten();
        let message = match &undefined {
            Some(name) => format!("undefined variable `{name}` in `{source}`"),
            None => {
                let detail = error
                    .detail()
                    .map(str::to_string)
                    .unwrap_or_else(|| error.kind().to_string());
                format!("{detail} in `{source}`")
            }
        };
        let invalid_input =
            std::iter::successors(std::error::Error::source(error), |cause| cause.source())
                .find_map(|cause| cause.downcast_ref::<crate::failure::InvalidInput>())
                .cloned();
        RenderError {
            message,
            undefined,
            invalid_input,
        }
    }
}

/// Which top-level variable of `source` is not in `vars` (minijinja's error does not say).
fn first_missing_variable(source: &str, vars: Option<&Vars>) -> Option<String> {
    let vars = vars?;
    let env = Renderer::bare_environment();
    let mut names: Vec<String> = variables_of(&env, source).ok()?.into_iter().collect();
    names.sort();
    names
        .into_iter()
        .find(|name| !vars.contains_key(name) && env.globals().all(|(g, _)| g != name))
}

/// The top-level variables a template or bare expression uses.
fn variables_of(
    env: &Environment<'static>,
    source: &str,
) -> Result<BTreeSet<String>, minijinja::Error> {
    let mut names = undeclared_variables(env, source)?;
    // minijinja 3.0.5 does not look inside a sliced value: `tokn[2:]` names no variable.
    // The same code with its slices written as item lookups names them.
    if source.contains('[')
        && source.contains(':')
        && let Ok(sliced) = undeclared_variables(env, &without_slices(source))
    {
        names.extend(sliced);
    }
    Ok(names)
}

fn undeclared_variables(
    env: &Environment<'static>,
    source: &str,
) -> Result<BTreeSet<String>, minijinja::Error> {
    let names = if is_template(source) {
        env.template_from_str(source)?.undeclared_variables(false)
    } else {
        env.compile_expression(source)?.undeclared_variables(false)
    };
    Ok(names.into_iter().collect())
}

pub use crate::syntax::is_template;

/// `source` with every slice `x[a:b]` written `x[a ~ b]` (an empty bound as `none`), for
/// finding variables only: the result uses the same names in the same places.
fn without_slices(source: &str) -> String {
    let mut rewritten = String::new();
    let mut copied = 0;
    for_each_code(source, !is_template(source), |code, _, offset| {
        rewritten.push_str(&source[copied..offset]);
        let chars: Vec<char> = code.chars().collect();
        copy_unsliced(&chars, &mut 0, &[], &mut rewritten);
        copied = offset + code.len();
    });
    rewritten.push_str(&source[copied..]);
    rewritten
}

/// Copies code from `index` up to the first of `stops` outside brackets and strings (left
/// at `index`), writing the slices on the way as [`without_slices`] says.
fn copy_unsliced(chars: &[char], index: &mut usize, stops: &[char], out: &mut String) {
    while let Some(&c) = chars.get(*index) {
        if stops.contains(&c) {
            return;
        }
        *index += 1;
        out.push(c);
        match c {
            '"' | '\'' => {
                while let Some(&d) = chars.get(*index) {
                    *index += 1;
                    out.push(d);
                    if d == '\\' {
                        if let Some(&escaped) = chars.get(*index) {
                            *index += 1;
                            out.push(escaped);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '(' | '{' => {
                copy_unsliced(chars, index, &[if c == '(' { ')' } else { '}' }], out);
                if let Some(&close) = chars.get(*index) {
                    *index += 1;
                    out.push(close);
                }
            }
            '[' => {
                let mut bounds = Vec::new();
                loop {
                    let mut bound = String::new();
                    copy_unsliced(chars, index, &[']', ':'], &mut bound);
                    bounds.push(bound);
                    if chars.get(*index) != Some(&':') {
                        break;
                    }
                    *index += 1;
                }
                let bounds: Vec<&str> = bounds
                    .iter()
                    .map(|bound| {
                        if bound.trim().is_empty() {
                            "none"
                        } else {
                            bound
                        }
                    })
                    .collect();
                out.push_str(&bounds.join(" ~ "));
                if let Some(&close) = chars.get(*index) {
                    *index += 1;
                    out.push(close);
                }
            }
            _ => {}
        }
    }
}

/// When a whole string is one `{{ expression }}`, the expression inside; such a string
/// renders to the expression's value with its type (a number stays a number).
fn sole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

/// Renders templates and evaluates conditions against [`Vars`].
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    masker: Masker,
}

impl Renderer {
    /// The environment with our filters and functions but no lookups that need a cluster.
    fn bare_environment() -> Environment<'static> {
        Self::environment(None)
    }

    /// The environment with our filters and functions; cluster lookups use `cluster`.
    fn environment(cluster: Option<crate::kube::Cluster>) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Python's string, list and dict methods (`path.endswith(hub)`, `s.rstrip('/')`,
        // `d.items()`), as people who write Ansible and Jinja templates expect.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Records what each `{{ }}` prints, so that strings derived from secrets are known.
        env.set_formatter(recording_formatter);
        env.add_filter("shell_quote", shell_quote);
        env.add_function("env", env_var);
        crate::kube::lookups::register(&mut env, cluster);
        env
    }

    /// A renderer whose output is masked with `masker` where it is shown.
    pub fn new(masker: Masker) -> Self {
        Renderer {
            env: Self::bare_environment(),
            masker,
        }
    }

    /// A renderer whose `kube_get` and `kube_count` read `cluster`.
    pub fn with_cluster(masker: Masker, cluster: Option<crate::kube::Cluster>) -> Self {
        Renderer {
            env: Self::environment(cluster),
            masker,
        }
    }

    /// The masker for secrets known to this run.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Names of globals and functions (`env`, `range`, ...), which are not variables.
    pub fn is_global(&self, name: &str) -> bool {
        self.env.globals().any(|(global, _)| global == name)
    }

    /// Checks a template (or a bare expression when `expression` is set) before anything
    /// runs: its syntax, and that the filters, tests and functions it names exist. Returns the
    /// variables it needs, globals left out.
    pub fn variables(
        &self,
        source: &str,
        expression: bool,
    ) -> Result<BTreeSet<String>, TemplateProblem> {
        // A bare expression compiles as one, so that errors speak of expressions.
        let names = variables_of(&self.env, source)
            .map_err(|error| TemplateProblem::Syntax(syntax_message(&error)))?;
        let named = NamedCallables::scan(source, expression && !is_template(source));
        if let Some(name) = named
            .filters
            .iter()
            .find(|name| !has_filter(&self.env, name))
        {
            return Err(TemplateProblem::unknown(
                "filter",
                name,
                &callable_names(&self.env, "filters"),
                |candidate| has_filter(&self.env, candidate),
            ));
        }
        if let Some(name) = named.tests.iter().find(|name| !has_test(&self.env, name)) {
            return Err(TemplateProblem::unknown(
                "test",
                name,
                &callable_names(&self.env, "tests"),
                |candidate| has_test(&self.env, candidate),
            ));
        }
        // minijinja counts a called name among the variables; one that is not a global is a
        // function that does not exist, not a variable to define.
        if let Some(name) = named
            .functions
            .iter()
            .find(|name| names.contains(*name) && !self.is_global(name))
        {
            let globals: Vec<String> = self
                .env
                .globals()
                .map(|(name, _)| name.to_string())
                .collect();
            return Err(TemplateProblem::unknown("function", name, &globals, |_| {
                true
            }));
        }
        Ok(names
            .into_iter()
            .filter(|name| !self.is_global(name))
            .collect())
    }

    /// Renders a string. A string that is one `{{ expression }}` keeps the expression's type.
    /// Every string the template derives from a secret (`{{ token | upper }}`) is added to
    /// the masker before this returns, so it is masked wherever it is shown later.
    pub fn render(&self, source: &str, vars: &Vars) -> Result<Value, RenderError> {
        if !is_template(source) {
            return Ok(Value::from(source));
        }
        let Some(stand_in_vars) = self.stand_in_vars(source, vars) else {
            return self.render_recording(source, vars, None);
        };
        let real = Value::from_object(Emitted::default());
        let value = self.render_recording(source, vars, Some(&real))?;
        let stand_in = Value::from_object(Emitted::default());
        let real = printed(&real);
        let derived = match self.render_recording(source, &stand_in_vars, Some(&stand_in)) {
            Ok(_) => derived_texts(&real, &printed(&stand_in)),
            // What the stand-ins would give cannot be known (a secret read as JSON whose
            // stand-in no longer parses): everything printed is taken as derived, as long
            // as it is long enough to be masked without masking common words.
            Err(_) => real
                .iter()
                .flat_map(shown_texts)
                .filter(|text| text.chars().count() >= DERIVED_MIN_CHARS)
                .collect(),
        };
        self.masker.add(derived);
        Ok(value)
    }

    /// `vars` with every secret in the variables `source` uses replaced by its stand-in, or
    /// None when those variables hold no secret (then nothing can be derived from one).
    fn stand_in_vars(&self, source: &str, vars: &Vars) -> Option<Vars> {
        let stand_ins = self.masker.stand_ins()?;
        // Every name in the template's code, not minijinja's `undeclared_variables`, which
        // misses the sliced variable of `token[2:]` (minijinja 3.0.5).
        let replaced: Vec<(String, Value)> = names_in_code(source)
            .into_iter()
            .filter_map(|name| {
                let value = stand_ins.value(vars.get(&name)?)?;
                Some((name, value))
            })
            .collect();
        if replaced.is_empty() {
            return None;
        }
        let mut stand_in_vars = vars.clone();
        stand_in_vars.extend(replaced);
        Some(stand_in_vars)
    }

    /// Renders a template; what its `{{ }}` blocks print is recorded in `emitted` when
    /// given (a sole expression prints its value).
    fn render_recording(
        &self,
        source: &str,
        vars: &Vars,
        emitted: Option<&Value>,
    ) -> Result<Value, RenderError> {
        if let Some(expression) = sole_expression(source) {
            let value = self.eval_expression(expression, vars)?;
            if let Some(emitted) =
                emitted.and_then(|emitted| emitted.downcast_object_ref::<Emitted>())
                && let Ok(mut values) = emitted.0.lock()
            {
                values.push(value.clone());
            }
            return Ok(value);
        }
        let mut context = vars.clone();
        if let Some(emitted) = emitted {
            context.insert(EMITTED.to_string(), emitted.clone());
        }
        self.env
            .render_str(source, Value::from(context))
            .map(Value::from)
            .map_err(|error| RenderError::from_minijinja(&error, Some(vars), source))
    }

    /// Renders a string to text.
    pub fn render_string(&self, source: &str, vars: &Vars) -> Result<String, RenderError> {
        Ok(value_to_text(&self.render(source, vars)?))
    }

    /// Renders every string inside a JSON value (used for manifests and structured params).
    pub fn render_json(
        &self,
        value: &serde_json::Value,
        vars: &Vars,
    ) -> Result<serde_json::Value, RenderError> {
        Ok(match value {
            serde_json::Value::String(text) if is_template(text) => {
                serde_json::to_value(self.render(text, vars)?).map_err(|error| RenderError {
                    message: format!("cannot use the value of `{text}`: {error}"),
                    undefined: None,
                    invalid_input: None,
                })?
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|item| self.render_json(item, vars))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), self.render_json(item, vars)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluates an expression, bare or as one `{{ expression }}`, to its value with its type
    /// (a list stays a list); a template with text around its `{{ }}` gives that text.
    pub fn evaluate(&self, expression: &str, vars: &Vars) -> Result<Value, RenderError> {
        if is_template(expression) {
            self.render(expression, vars)
        } else {
            self.eval_expression(expression, vars)
        }
    }

    /// Evaluates a condition: a bare expression, `{{ expression }}`, or a template whose
    /// text is then read as a boolean.
    pub fn is_true(&self, condition: &str, vars: &Vars) -> Result<bool, RenderError> {
        // A condition's value is never shown, so nothing derived from it needs masking.
        let value = if is_template(condition) {
            self.render_recording(condition, vars, None)?
        } else {
            self.eval_expression(condition, vars)?
        };
        Ok(truthy(&value))
    }

    fn eval_expression(&self, expression: &str, vars: &Vars) -> Result<Value, RenderError> {
        let compiled = self
            .env
            .compile_expression(expression)
            .map_err(|error| RenderError::from_minijinja(&error, Some(vars), expression))?;
        let value = compiled
            .eval(Value::from(vars.clone()))
            .map_err(|error| RenderError::from_minijinja(&error, Some(vars), expression))?;
        if value.is_undefined() {
            let error = minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "undefined");
            return Err(RenderError::from_minijinja(&error, Some(vars), expression));
        }
        Ok(value)
    }
}

/// A rendered value as text: strings as they are, everything else as JSON-ish display.
pub fn value_to_text(value: &Value) -> String {
    match value.as_str() {
        Some(text) => text.to_string(),
        None => value.to_string(),
    }
}

/// Truthiness of a condition's value; the strings "false", "no", "0" and "" are false, so a
/// template that renders to `False` is false too.
fn truthy(value: &Value) -> bool {
    match value.as_str() {
        Some(text) => !matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "0" | "none"
        ),
        None => value.is_true(),
    }
}

fn syntax_message(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) if error.kind() == minijinja::ErrorKind::SyntaxError => detail.to_string(),
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Why a template cannot be used, found by [`Renderer::variables`] before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateProblem {
    /// Not valid syntax: minijinja's description.
    Syntax(String),
    /// A filter, test or function the environment does not have.
    Unknown {
        /// "filter", "test" or "function".
        kind: &'static str,
        /// As written.
        name: String,
        /// The closest known name, when one is close.
        suggestion: Option<String>,
    },
}

impl TemplateProblem {
    /// An unknown `name`, with the closest of `candidates` that `exists`.
    fn unknown(
        kind: &'static str,
        name: &str,
        candidates: &[String],
        exists: impl Fn(&str) -> bool,
    ) -> Self {
        let candidates: Vec<&str> = candidates
            .iter()
            .map(String::as_str)
            .filter(|candidate| exists(candidate))
            .collect();
        TemplateProblem::Unknown {
            kind,
            name: name.to_string(),
            suggestion: crate::diagnostic::did_you_mean(name, &candidates).map(str::to_string),
        }
    }
}

/// Does the environment have this filter? minijinja has no lookup without a call, so this
/// calls it without arguments: a known filter then fails on the missing value (or returns),
/// an unknown one fails as unknown.
fn has_filter(env: &Environment<'static>, name: &str) -> bool {
    let result = env.empty_state().apply_filter(name, &[]);
    !matches!(result, Err(error) if error.kind() == minijinja::ErrorKind::UnknownFilter)
}

/// Does the environment have this test? Checked like [`has_filter`].
fn has_test(env: &Environment<'static>, name: &str) -> bool {
    let result = env.empty_state().perform_test(name, &[]);
    !matches!(result, Err(error) if error.kind() == minijinja::ErrorKind::UnknownTest)
}

/// The names of the environment's filters or tests (`which`), to suggest one. minijinja does
/// not list them except in its `Debug` output, so they are read from there; should that
/// format change, suggestions are fewer but checks stay right ([`has_filter`] decides).
fn callable_names(env: &Environment<'static>, which: &str) -> Vec<String> {
    let debug = format!("{env:?}");
    let Some(start) = debug.find(&format!("{which}: [")) else {
        return Vec::new();
    };
    let list = &debug[start + which.len() + 3..];
    let list = &list[..list.find(']').unwrap_or(list.len())];
    list.split(',')
        .map(|name| name.trim().trim_matches('"').to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The filters, tests and functions a template names. minijinja's parser is not public, so
/// this is a small tokenizer over the code parts of the template (`{{ }}` and `{% %}`).
#[derive(Debug, Default, PartialEq, Eq)]
struct NamedCallables {
    filters: Vec<String>,
    tests: Vec<String>,
    functions: Vec<String>,
}

/// A token of template code.
#[derive(Debug, PartialEq)]
enum CodeToken {
    Name(String),
    Literal,
    Punct(char),
}

impl NamedCallables {
    /// Scans a template, or a bare expression when `bare` is set.
    fn scan(source: &str, bare: bool) -> Self {
        let mut named = NamedCallables::default();
        for_each_code(source, bare, |code, statement, _| {
            named.scan_code(code, statement)
        });
        named
    }

    fn scan_code(&mut self, code: &str, statement: bool) {
        let tokens = tokenize(code);
        let mut consumed = vec![false; tokens.len()];
        // `{% filter upper %}...{% endfilter %}` names a filter.
        if statement
            && tokens.first() == Some(&CodeToken::Name("filter".into()))
            && let Some(name) = dotted_name(&tokens, 1, &mut consumed)
        {
            self.filters.push(name);
        }
        for index in 0..tokens.len() {
            let previous = index.checked_sub(1).map(|before| &tokens[before]);
            match &tokens[index] {
                CodeToken::Punct('|') => {
                    if let Some(name) = dotted_name(&tokens, index + 1, &mut consumed) {
                        self.filters.push(name);
                    }
                }
                CodeToken::Name(word)
                    if word == "is" && previous != Some(&CodeToken::Punct('.')) =>
                {
                    let mut next = index + 1;
                    if tokens.get(next) == Some(&CodeToken::Name("not".into())) {
                        next += 1;
                    }
                    if let Some(name) = dotted_name(&tokens, next, &mut consumed) {
                        self.tests.push(name);
                    }
                }
                CodeToken::Name(name)
                    if !consumed[index]
                        && previous != Some(&CodeToken::Punct('.'))
                        && tokens.get(index + 1) == Some(&CodeToken::Punct('(')) =>
                {
                    self.functions.push(name.clone());
                }
                _ => {}
            }
        }
    }
}

/// Calls `visit` with the code of each `{{ }}` and `{% %}` tag of a template, whether it is
/// a statement and where it starts in `source`; or with the whole of a bare expression when
/// `bare` is set.
fn for_each_code(source: &str, bare: bool, mut visit: impl FnMut(&str, bool, usize)) {
    if bare {
        visit(source, false, 0);
        return;
    }
    let mut rest = source;
    while let Some(start) = rest.find('{') {
        let tag = rest.get(start..start + 2).unwrap_or_default();
        match tag {
            "{#" => {
                let after = &rest[start + 2..];
                rest = after.find("#}").map_or("", |end| &after[end + 2..]);
            }
            "{{" | "{%" => {
                let after = &rest[start + 2..];
                let closer = if tag == "{{" { "}}" } else { "%}" };
                let end = code_end(after, closer);
                let code = &after[..end];
                if tag == "{%" && code.trim_matches(['-', '+', ' ']).starts_with("raw") {
                    rest = after.find("endraw").map_or("", |end| &after[end..]);
                    continue;
                }
                // `after` is a suffix of `source`.
                visit(code, tag == "{%", source.len() - after.len());
                rest = after.get(end + 2..).unwrap_or_default();
            }
            _ => rest = &rest[start + 1..],
        }
    }
}

/// Every name in a template's code: its variables among filter names, attributes and
/// keywords. A superset, for when missing a variable matters more than naming too many.
fn names_in_code(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for_each_code(source, !is_template(source), |code, _, _| {
        names.extend(tokenize(code).into_iter().filter_map(|token| match token {
            CodeToken::Name(name) => Some(name),
            _ => None,
        }));
    });
    names
}

/// `name` or `name.name` starting at token `index`, marked as consumed.
fn dotted_name(tokens: &[CodeToken], index: usize, consumed: &mut [bool]) -> Option<String> {
    let CodeToken::Name(first) = tokens.get(index)? else {
        return None;
    };
    consumed[index] = true;
    let mut name = first.clone();
    let mut next = index + 1;
    while tokens.get(next) == Some(&CodeToken::Punct('.')) {
        let Some(CodeToken::Name(segment)) = tokens.get(next + 1) else {
            break;
        };
        name.push('.');
        name.push_str(segment);
        consumed[next + 1] = true;
        next += 2;
    }
    Some(name)
}

/// Where the code of a tag ends: the first `closer` outside string literals.
fn code_end(code: &str, closer: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (index, c) in code.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if code[index..].starts_with(closer) => return index,
            None => {}
        }
    }
    code.len()
}

fn tokenize(code: &str) -> Vec<CodeToken> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = index;
            while index < chars.len() && (chars[index].is_alphanumeric() || chars[index] == '_') {
                index += 1;
            }
            tokens.push(CodeToken::Name(chars[start..index].iter().collect()));
        } else if c.is_ascii_digit() {
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '_')
            {
                index += 1;
            }
            tokens.push(CodeToken::Literal);
        } else if c == '"' || c == '\'' {
            index += 1;
            while index < chars.len() && chars[index] != c {
                index += if chars[index] == '\\' { 2 } else { 1 };
            }
            index += 1;
            tokens.push(CodeToken::Literal);
        } else {
            tokens.push(CodeToken::Punct(c));
            index += 1;
        }
    }
    tokens
}

/// `{{ path | shell_quote }}`: one argument for a POSIX shell, whatever it contains.
fn shell_quote(value: Value) -> String {
    quote_for_shell(&value_to_text(&value))
}

/// `text` as one argument for a POSIX shell: as is when that is safe, else single-quoted.
pub fn quote_for_shell(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `env(name, default)`: an environment variable of the runbook process.
fn env_var(name: String, default: Option<String>) -> Result<String, minijinja::Error> {
    match std::env::var(&name) {
        Ok(value) => Ok(value),
        Err(_) => default.ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("environment variable `{name}` is not set (give a default: env('{name}', '...'))"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut vars = Vars::new();
        vars.insert("hub".into(), Value::from("staging"));
        vars.insert("jobs".into(), Value::from(4));
        vars
    }

    #[test]
    fn a_sole_expression_keeps_its_type() {
        let renderer = Renderer::new(Masker::default());
        assert_eq!(
            renderer.render("{{ jobs }}", &vars()).unwrap(),
            Value::from(4)
        );
        assert_eq!(
            renderer.render_string("/src/{{ hub }}/", &vars()).unwrap(),
            "/src/staging/"
        );
    }

    #[test]
    fn undefined_variables_are_named() {
        let renderer = Renderer::new(Masker::default());
        let error = renderer.render_string("{{ hbu }}-x", &vars()).unwrap_err();
        assert_eq!(error.undefined.as_deref(), Some("hbu"));
        let error = renderer.is_true("hbu == 'x'", &vars()).unwrap_err();
        assert_eq!(error.undefined.as_deref(), Some("hbu"));
    }

    #[test]
    fn python_string_methods_work() {
        let renderer = Renderer::new(Masker::default());
        assert!(
            renderer
                .is_true("'/homes/staging/'.rstrip('/').endswith(hub)", &vars())
                .unwrap()
        );
        assert_eq!(
            renderer
                .render_string("{{ '/homes/staging'.split('/') | last }}", &vars())
                .unwrap(),
            "staging"
        );
    }

    #[test]
    fn conditions_in_both_forms() {
        let renderer = Renderer::new(Masker::default());
        assert!(renderer.is_true("jobs > 2", &vars()).unwrap());
        assert!(!renderer.is_true("{{ jobs > 5 }}", &vars()).unwrap());
        assert!(!renderer.is_true("false", &vars()).unwrap());
    }

    #[test]
    fn finds_the_filters_tests_and_functions_a_template_names() {
        let named = NamedCallables::scan(
            "{{ a | shell_quote }} {{ 'x | no' }} {% if b is not defined %}{{ f(c) | default(g(1)) }}{% endif %}{# h | i #}{{ d.e(1) }}",
            false,
        );
        assert_eq!(named.filters, ["shell_quote", "default"]);
        assert_eq!(named.tests, ["defined"]);
        assert_eq!(named.functions, ["f", "g"]);
        let named = NamedCallables::scan("kube_count('Pod') == 0 and x is even", true);
        assert_eq!(named.functions, ["kube_count"]);
        assert_eq!(named.tests, ["even"]);
        let named = NamedCallables::scan("{% filter upper %}x{% endfilter %}", false);
        assert_eq!(named.filters, ["upper"]);
    }

    #[test]
    fn unknown_filters_tests_and_functions_are_found_with_a_suggestion() {
        let renderer = Renderer::new(Masker::default());
        let unknown = |source: &str, expression: bool| match renderer.variables(source, expression)
        {
            Err(TemplateProblem::Unknown {
                kind,
                name,
                suggestion,
            }) => Some((kind, name, suggestion)),
            _ => None,
        };
        assert_eq!(
            unknown("{{ hub | shell_qoute }}", false),
            Some(("filter", "shell_qoute".into(), Some("shell_quote".into())))
        );
        assert_eq!(
            unknown("hub is strnig", true),
            Some(("test", "strnig".into(), Some("string".into())))
        );
        assert_eq!(
            unknown("{{ enb('HOME') }}", false),
            Some(("function", "enb".into(), Some("env".into())))
        );
        assert_eq!(unknown("{{ hub | upper }} {{ range(3) }}", false), None);
        assert!(matches!(
            renderer.variables("jobs >", true),
            Err(TemplateProblem::Syntax(detail)) if detail.starts_with("unexpected end of input")
        ));
    }

    #[test]
    fn variables_leave_out_functions() {
        let renderer = Renderer::new(Masker::default());
        let names = renderer
            .variables("{{ env('HOME') }}/{{ hub | shell_quote }}", false)
            .unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["hub".to_string()]
        );
    }

    #[test]
    fn shell_quote_makes_one_argument() {
        assert_eq!(shell_quote(Value::from("a b;c")), "'a b;c'");
        assert_eq!(shell_quote(Value::from("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(Value::from("/plain/path")), "/plain/path");
    }

    #[test]
    fn masks_secrets_longest_first() {
        let masker = Masker::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(masker.mask("x abcdef y abc"), "x *** y ***");
    }

    /// A renderer that knows `token` as a secret, and vars holding it.
    fn with_secret(token: &str) -> (Renderer, Vars) {
        let renderer = Renderer::new(Masker::new([token.to_string()]));
        let mut vars = vars();
        vars.insert("token".into(), Value::from(token));
        (renderer, vars)
    }

    #[test]
    fn strings_derived_from_a_secret_are_masked() {
        let cases = [
            ("{{ token | upper }}", "HUNTER2-S3CRET"),
            ("x {{ token[2:] }} y", "nter2-s3cret"),
            ("{{ token | reverse }}", "terc3s-2retnuh"),
            ("{{ token | lower | replace('h', 'j') }}!", "junter2-s3cret"),
            ("{% set t = token | upper %}[{{ t }}]", "HUNTER2-S3CRET"),
            (
                "{% for part in token.split('-') %}<{{ part | title }}>{% endfor %}",
                "Hunter2",
            ),
            (
                "{% macro shout(s) %}{{ s | upper }}{% endmacro %}{{ shout(token) }}",
                "HUNTER2-S3CRET",
            ),
            (
                "{% filter upper %}{{ token }}{% endfilter %}",
                "HUNTER2-S3CRET",
            ),
            ("{{ {'a': token | capitalize} }}", "Hunter2-s3cret"),
        ];
        for (template, derived) in cases {
            let (renderer, vars) = with_secret("hunter2-s3cret");
            let rendered = renderer.render_string(template, &vars).unwrap();
            assert!(rendered.contains(derived), "{template}: {rendered}");
            let masked = renderer
                .masker()
                .mask(&format!("out: {rendered} / {derived}"));
            assert!(!masked.contains(derived), "{template}: {masked}");
        }
    }

    #[test]
    fn a_secret_printed_a_letter_at_a_time_is_masked_whole() {
        let (renderer, vars) = with_secret("hunter2-s3cret");
        let rendered = renderer
            .render_string("{% for c in token %}{{ c | upper }}{% endfor %}", &vars)
            .unwrap();
        assert_eq!(rendered, "HUNTER2-S3CRET");
        assert_eq!(renderer.masker().mask(&rendered), "***");
    }

    #[test]
    fn secrets_inside_vars_and_maps_are_followed() {
        let (renderer, mut vars) = with_secret("hunter2-s3cret");
        vars.insert(
            "output".into(),
            to_value(&serde_json::json!({"data": {"url": "https://u:hunter2-s3cret@host"}})),
        );
        let rendered = renderer
            .render_string("{{ output.data.url | replace('https', 'HTTP') }}", &vars)
            .unwrap();
        assert_eq!(rendered, "HTTP://u:hunter2-s3cret@host");
        assert_eq!(renderer.masker().mask(&rendered), "***");
    }

    #[test]
    fn short_or_unchanged_derivations_mask_nothing_else() {
        let (renderer, vars) = with_secret("hunter2-s3cret-with-32-chars-xyz");
        let rendered = renderer
            .render_string(
                "{{ token | length }} {{ token[:3] }} {{ hub }} {{ token == 'x' }} {{ jobs }}",
                &vars,
            )
            .unwrap();
        assert_eq!(rendered, "32 hun staging False 4");
        assert_eq!(
            renderer.masker().mask("32 hun staging False 4"),
            "32 hun staging False 4"
        );
    }

    #[test]
    fn a_number_secret_is_followed_too() {
        let renderer = Renderer::new(Masker::new(["982451653".to_string()]));
        let mut vars = vars();
        vars.insert("pin".into(), Value::from(982451653));
        let rendered = renderer.render_string("{{ pin * 2 }}", &vars).unwrap();
        assert_eq!(rendered, "1964903306");
        assert_eq!(renderer.masker().mask("pin*2=1964903306"), "pin*2=***");
    }

    #[test]
    fn templates_without_secrets_add_nothing() {
        let renderer = Renderer::new(Masker::new(["hunter2-s3cret".to_string()]));
        renderer
            .render_string("{{ hub | upper }} {{ hub | reverse }}", &vars())
            .unwrap();
        assert_eq!(renderer.masker().mask("STAGING gnigats"), "STAGING gnigats");
    }

    #[test]
    fn stand_ins_differ_in_every_letter_and_digit_and_keep_punctuation() {
        assert_eq!(stand_in("Hunter2-s3cret!"), "Uhagre7-f8perg!");
        assert_eq!(stand_in("--"), "ZZ");
        let stand_ins = StandIns::new(vec!["abcdef".into(), "abc".into(), "nop".into()]).unwrap();
        // One pass: `abc` becomes `nop`, which is a secret too but is not replaced back.
        assert_eq!(stand_ins.replace("abc abcdef").unwrap(), "nop nopqrs");
        assert!(stand_ins.replace("xyz").is_none());
    }

    #[test]
    fn an_if_decided_by_a_secret_masks_what_only_the_secret_printed() {
        let (renderer, vars) = with_secret("hunter2-s3cret");
        let rendered = renderer
            .render_string(
                "{% if token.startswith('h') %}{{ 'starts-with-h' }}{% endif %} {{ hub }}",
                &vars,
            )
            .unwrap();
        assert_eq!(rendered, "starts-with-h staging");
        assert_eq!(renderer.masker().mask(&rendered), "*** staging");
    }

    #[test]
    fn sliced_variables_are_found() {
        assert_eq!(
            without_slices(
                "a {{ tokn[2:] }} {{ x[:n] }} {{ y[::-1] }} {{ {'k': z}[w] }} {{ 'a[1:2]' }}"
            ),
            "a {{ tokn[2 ~ none] }} {{ x[none ~ n] }} {{ y[none ~ none ~ -1] }} {{ {'k': z}[w] }} {{ 'a[1:2]' }}"
        );
        assert_eq!(
            without_slices("s[i:(j)]|length > 2"),
            "s[i ~ (j)]|length > 2"
        );
        let renderer = Renderer::new(Masker::default());
        let names = |source: &str, expression: bool| -> Vec<String> {
            renderer
                .variables(source, expression)
                .unwrap()
                .into_iter()
                .collect()
        };
        assert_eq!(names("x {{ tokn[2:] }}", false), ["tokn"]);
        assert_eq!(names("s[i:j] == 'x'", true), ["i", "j", "s"]);
        assert_eq!(
            names("{% for t in ts %}{{ t[1:] }}{% endfor %}", false),
            ["ts"]
        );
        let error = renderer
            .render_string("x {{ tokn[2:] }}", &vars())
            .unwrap_err();
        assert_eq!(error.undefined.as_deref(), Some("tokn"));
    }
}
