//! `include:` steps: another playbook whose steps run in the include step's place, their ids
//! prefixed with its id (`migrate.copy-homes`), with the params the include step gives it.
//!
//! Like a block, an include is not a step of its own: the included steps join the playbook's
//! steps in order, so that `plan`, `run`, the journal and every report keep working on one
//! flat list of steps with unique ids. What differs is the names the steps see: an included
//! playbook keeps its own params, vars and registered names (its scope), bound from the
//! include's `params:` when the params of the whole run are bound, before anything runs.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_saphyr::Spanned;

use super::param::{self, GivenValue, ParamSpec, ValueOrigin};
use super::{Loader, Playbook, StepExtent, StepList};
use crate::actions::StepSpec;
use crate::diagnostic::{Diagnostic, Location, Source};
use crate::render::{Masker, Renderer, Vars};
use crate::syntax::Condition;

/// An `include:` step, whose steps are in [`Playbook::steps`].
#[derive(Debug, Clone)]
pub struct Include {
    /// The include step's id: the prefix of the included steps' ids.
    pub id: String,
    /// `name:`.
    pub name: Option<String>,
    /// Where the include step starts.
    pub location: Location,
    /// The included file, as found from the including playbook's directory.
    pub path: PathBuf,
    /// The included playbook's `name:`.
    pub playbook: String,
    /// The include whose names the include step's `params:` and `when:` use: `None` for the
    /// top playbook, else an earlier include (an include in an included playbook).
    pub parent: Option<usize>,
    /// The included playbook's params.
    pub params: IndexMap<String, (ParamSpec, Location)>,
    /// What the include step gives them, as written: name, value, where the name and the
    /// value are.
    pub given: Vec<(String, serde_json::Value, Location, Location)>,
    /// The included playbook's vars.
    pub vars: Vec<(String, serde_json::Value, Location)>,
    /// The include step's `when:`: the included steps are skipped unless it holds.
    pub when: Option<Condition>,
    /// The included file's text, for lookups of the cluster in its templates.
    pub source: Source,
    /// The included steps in [`Playbook::steps`].
    pub steps: Range<usize>,
}

impl Include {
    /// A label for people: the name, or the id.
    pub fn title(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The names the steps of each scope see: the top playbook's and each include's.
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    /// The top playbook's params, vars and registered names.
    pub root: Vars,
    /// Each include's, by index in [`Playbook::includes`].
    pub included: Vec<Vars>,
    /// Why the steps of each include are skipped (its `when:`, or its parent's, is false).
    pub skipped: Vec<Option<String>>,
}

impl Scopes {
    /// The names of a scope (`None`: the top playbook).
    pub fn of(&self, scope: Option<usize>) -> &Vars {
        match scope {
            None => &self.root,
            Some(index) => &self.included[index],
        }
    }

    /// The names of a scope, to register a step's output in.
    pub fn of_mut(&mut self, scope: Option<usize>) -> &mut Vars {
        match scope {
            None => &mut self.root,
            Some(index) => &mut self.included[index],
        }
    }

    /// Why the steps of a scope are skipped, when its include's `when` is false.
    pub fn skipped(&self, scope: Option<usize>) -> Option<&str> {
        scope.and_then(|index| self.skipped.get(index)?.as_deref())
    }
}

/// The step keys an include step may have.
const INCLUDE_KEYS: &str = "`id`, `name`, `when`, `context`, `include` and `params`";

impl Loader<'_> {
    /// An `include:` step: a new id, a playbook that loads (not one of the files that
    /// include it), params it declares with values of this playbook's params and vars, and
    /// its steps (and blocks, and includes) added to `list` with prefixed ids.
    pub(super) fn validate_include(
        &self,
        spanned: Spanned<StepSpec>,
        end_line: usize,
        outer: Option<super::BlockPart>,
        list: &mut StepList,
        known: &BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
        let location = self.at(&spanned);
        let spec = spanned.value;
        self.check_step_id(&spec.id, &list.ids)?;
        self.check_step_id(&spec.id, &list.block_ids)?;
        let id = spec.id.value.clone();
        let extent = StepExtent {
            id: &id,
            location: &location,
            end_line,
        };
        let Some(written) = &spec.include else {
            return Err(Diagnostic::at(
                self.find_key("params", &location, end_line),
                format!("step `{id}` has `params:` without `include:`"),
            )
            .help("`params:` gives the params of an included playbook: add `include: FILE`, or set the values with `vars:`"));
        };
        self.include_keys_only(&spec, &extent)?;
        let inner = self.load_included(written, &id)?;
        if outer.is_some() && !inner.blocks.is_empty() {
            return Err(Diagnostic::at(
                self.at(written),
                format!(
                    "step `{id}` includes `{}`, which has blocks, inside a block; blocks do not nest",
                    written.value
                ),
            )
            .help("include it outside the block"));
        }
        let given = self.include_params(&spec, &inner, &extent, known)?;
        let when = match &spec.when {
            Some(when) => {
                self.check_static(when.as_str(), "when", &extent, known)?;
                Some(when.clone())
            }
            None => None,
        };
        let context = spec
            .context
            .as_ref()
            .map(|context| self.validate_context(context, &extent, known))
            .transpose()?;
        list.block_ids.insert(id.clone(), location.line);
        let include = Include {
            id,
            name: spec.name.clone(),
            location,
            path: inner.path.clone(),
            playbook: inner.name.clone(),
            parent: None,
            params: inner.params.clone(),
            given,
            vars: inner.vars.clone(),
            when,
            source: inner.source.clone(),
            steps: 0..0,
        };
        list.add_included(include, inner, outer, context);
        Ok(())
    }

    /// An include step does nothing itself: no action, no step settings.
    fn include_keys_only(
        &self,
        spec: &StepSpec,
        extent: &StepExtent<'_>,
    ) -> Result<(), Diagnostic> {
        let mut present = super::block::working_keys(spec);
        let parts = [
            ("block", spec.block.is_some()),
            ("rescue", spec.rescue.is_some()),
            ("always", spec.always.is_some()),
        ];
        present.extend(parts.iter().filter(|(_, set)| *set).map(|(key, _)| *key));
        let Some(key) = present.first() else {
            return Ok(());
        };
        Err(Diagnostic::at(
            self.find_key(key, extent.location, extent.end_line),
            format!(
                "include step `{}` has `{key}:`, which an include step cannot have",
                extent.id
            ),
        )
        .help(format!(
            "an include step takes only {INCLUDE_KEYS}; give `{key}:` to the steps of the included playbook"
        )))
    }

    /// The included playbook, loaded and validated, from the including file's directory.
    fn load_included(&self, written: &Spanned<String>, id: &str) -> Result<Playbook, Diagnostic> {
        let at = self.at(written);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(&written.value);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            Diagnostic::at(
                at.clone(),
                format!("step `{id}`: cannot read `{}`: {error}", path.display()),
            )
            .help("`include:` names a playbook file, relative to the directory of the playbook that includes it")
        })?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(first) = self.chain.iter().position(|(file, _)| *file == canonical) {
            let mut cycle: Vec<String> = self.chain[first..]
                .iter()
                .map(|(_, shown)| shown.clone())
                .collect();
            cycle.push(path.display().to_string());
            return Err(Diagnostic::at(
                at,
                format!("step `{id}`: include cycle: {}", cycle.join(" → ")),
            )
            .help("a playbook cannot include itself, directly or through another"));
        }
        let mut chain = self.chain.to_vec();
        chain.push((canonical, path.display().to_string()));
        Playbook::from_str_in(&path, &text, &chain).map_err(|mut diagnostic| {
            let by = format!(
                "{} is included by step `{id}` at {}:{}",
                path.display(),
                at.source.path,
                at.line
            );
            diagnostic.help = Some(match diagnostic.help.take() {
                Some(help) => format!("{help}\n{by}"),
                None => by,
            });
            diagnostic
        })
    }

    /// The include's `params:`: each a param of the included playbook, with a value whose
    /// templates use this playbook's params and vars only; none of its required params left
    /// out.
    fn include_params(
        &self,
        spec: &StepSpec,
        inner: &Playbook,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<Vec<(String, serde_json::Value, Location, Location)>, Diagnostic> {
        let id = extent.id;
        let mut given = Vec::new();
        for (name, value) in &spec.params {
            if !inner.params.contains_key(&name.value) {
                let names: Vec<&str> = inner.params.keys().map(String::as_str).collect();
                let help = match crate::diagnostic::did_you_mean(&name.value, &names) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None if names.is_empty() => format!("`{}` declares no params", inner.name),
                    None => format!("the params of `{}` are: {}", inner.name, names.join(", ")),
                };
                return Err(Diagnostic::at(
                    self.at(name),
                    format!(
                        "step `{id}`: `{}` has no param `{}`",
                        inner.name, name.value
                    ),
                )
                .help(help));
            }
            let value_at = self.at(value);
            self.check_static_json(&value.value, &value_at, extent, known)?;
            given.push((
                name.value.clone(),
                value.value.clone(),
                self.at(name),
                value_at,
            ));
        }
        let missing = inner.params.iter().find(|(name, (param, _))| {
            param.is_required()
                && param.default.is_none()
                && !given.iter().any(|(given, ..)| given == *name)
        });
        if let Some((name, _)) = missing {
            return Err(Diagnostic::at(
                self.find_key("include", extent.location, extent.end_line),
                format!(
                    "step `{id}` does not give `{}` its required param `{name}`",
                    inner.name
                ),
            )
            .help(format!(
                "add it under `params:`, e.g. `params: {{{name}: \"{{{{ {name} }}}}\"}}`"
            )));
        }
        Ok(given)
    }

    /// Every template in a value uses only params and vars.
    fn check_static_json(
        &self,
        value: &serde_json::Value,
        at: &Location,
        extent: &StepExtent<'_>,
        known: &BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
        match value {
            serde_json::Value::String(text) if crate::render::is_template(text) => {
                let line = StepExtent {
                    id: extent.id,
                    location: at,
                    end_line: extent.end_line,
                };
                self.check_static(text, "params", &line, known)
            }
            serde_json::Value::Array(items) => items
                .iter()
                .try_for_each(|item| self.check_static_json(item, at, extent, known)),
            serde_json::Value::Object(map) => map
                .values()
                .try_for_each(|item| self.check_static_json(item, at, extent, known)),
            _ => Ok(()),
        }
    }
}

impl StepList {
    /// Adds an included playbook's steps, blocks and includes with prefixed ids; they belong
    /// to the outer block part the include is in, and take the include's context when they
    /// have none of their own.
    fn add_included(
        &mut self,
        mut include: Include,
        inner: Playbook,
        outer: Option<super::BlockPart>,
        context: Option<(String, Location)>,
    ) {
        let prefix = format!("{}.", include.id);
        let rename = |id: &str| format!("{prefix}{id}");
        let step_offset = self.steps.len();
        let block_offset = self.blocks.len();
        let scope = self.includes.len();
        include.steps = step_offset..step_offset + inner.steps.len();
        self.includes.push(include);
        let include_offset = self.includes.len();
        let shift = |range: &Range<usize>| range.start + step_offset..range.end + step_offset;
        for mut nested in inner.includes {
            nested.id = rename(&nested.id);
            nested.parent = Some(
                nested
                    .parent
                    .map_or(scope, |parent| parent + include_offset),
            );
            nested.steps = shift(&nested.steps);
            self.block_ids
                .insert(nested.id.clone(), nested.location.line);
            self.includes.push(nested);
        }
        for mut block in inner.blocks {
            block.id = rename(&block.id);
            block.body = shift(&block.body);
            block.rescue = shift(&block.rescue);
            block.always = shift(&block.always);
            self.block_ids.insert(block.id.clone(), block.location.line);
            self.blocks.push(block);
        }
        for mut step in inner.steps {
            step.spec.id.value = rename(step.id());
            for action in step.spec.actions_mut() {
                action.rename_step_references(&rename);
            }
            step.part = match step.part {
                Some(part) => Some(super::BlockPart {
                    block: part.block + block_offset,
                    ..part
                }),
                None => outer,
            };
            let own_scope = step.scope.map_or(scope, |nested| nested + include_offset);
            step.scope = Some(own_scope);
            match step.context_scope {
                Some(nested) => step.context_scope = Some(nested + include_offset),
                None if step.context.is_some() => step.context_scope = Some(scope),
                // The include's own context is written in the including playbook's names.
                None => step.context.clone_from(&context),
            }
            self.ids.insert(step.id().to_string(), step.location.line);
            self.steps.push(step);
        }
        if let Some(window) = inner.maintenance_window {
            self.windows.push(super::MaintenanceWindow {
                from: rename(&window.from),
                to: rename(&window.to),
            });
        }
    }
}

/// Binds each include's params from its parent scope's names and renders its vars, in order
/// (a parent comes before the includes it contains); the secret ones join `masker`.
pub(super) fn bind_includes(
    includes: &[Include],
    root: &Vars,
    builtins: &Vars,
    masker: &Masker,
) -> Result<Scopes, Diagnostic> {
    let renderer = Renderer::new(masker.clone());
    let mut scopes = Scopes {
        root: root.clone(),
        included: Vec::with_capacity(includes.len()),
        skipped: Vec::with_capacity(includes.len()),
    };
    for include in includes {
        let parent = scopes.of(include.parent);
        let skipped = match scopes.skipped(include.parent) {
            Some(why) => Some(why.to_string()),
            None => include
                .when
                .as_ref()
                .map(|when| {
                    let holds = renderer.is_true(when.as_str(), parent).map_err(|error| {
                        Diagnostic::at(
                            include.location.clone(),
                            format!(
                                "include `{}`: `when`: {}",
                                include.id,
                                masker.mask(&error.to_string())
                            ),
                        )
                    })?;
                    Ok::<_, Diagnostic>((!holds).then(|| {
                        format!(
                            "`when` of include `{}` is false: {}",
                            include.id,
                            when.as_str()
                        )
                    }))
                })
                .transpose()?
                .flatten(),
        };
        // The params of an include whose steps are skipped are not bound: a `when` often
        // says that the values they come from are not there.
        let vars = match skipped {
            Some(_) => Vars::new(),
            None => bind_one(include, parent, builtins, &renderer, masker)?,
        };
        scopes.included.push(vars);
        scopes.skipped.push(skipped);
    }
    Ok(scopes)
}

/// One include's names: the built-in ones, its params from the include step's values, then
/// its vars.
fn bind_one(
    include: &Include,
    parent: &Vars,
    builtins: &Vars,
    renderer: &Renderer,
    masker: &Masker,
) -> Result<Vars, Diagnostic> {
    let mut given = IndexMap::new();
    for (name, value, key, at) in &include.given {
        let rendered = renderer.render_json(value, parent).map_err(|error| {
            Diagnostic::at(
                at.clone(),
                format!(
                    "include `{}`: param `{name}`: {}",
                    include.id,
                    masker.mask(&error.message)
                ),
            )
            .help("the params of an include may use the including playbook's params and vars")
        })?;
        let origin = ValueOrigin::Include {
            key: key.clone(),
            value: at.clone(),
        };
        given.insert(
            name.clone(),
            GivenValue {
                value: rendered,
                origin,
            },
        );
    }
    let params = param::resolve(&include.params, given, &include.source)?;
    masker.add(param::secret_values(&include.params, &params));
    param::scope_names(builtins, &params, &include.vars, renderer)
}
