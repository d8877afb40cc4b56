//! `block:` steps with their `rescue:` and `always:` steps (Ansible's shape). A block is not
//! a step of its own: its steps join the playbook's steps in order (block, then rescue,
//! then always), each knowing the part it belongs to, so that `plan`, `run`, the journal
//! and every report keep working on one flat list of steps with unique ids.

use std::ops::Range;

use serde_saphyr::Spanned;

use super::{Loader, StepExtent, StepList};
use crate::actions::StepSpec;
use crate::diagnostic::{Diagnostic, Location};
use crate::syntax::Condition;

/// The part of a block a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `block:`, the steps proper.
    Body,
    /// `rescue:`, run when a step of the block fails.
    Rescue,
    /// `always:`, run once the block and its rescue ended, failed or not.
    Always,
}

impl Section {
    /// The YAML key of the part.
    pub fn key(self) -> &'static str {
        match self {
            Section::Body => "block",
            Section::Rescue => "rescue",
            Section::Always => "always",
        }
    }
}

/// Where a step sits in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPart {
    /// The block's index in [`super::Playbook::blocks`].
    pub block: usize,
    /// Its part.
    pub section: Section,
}

/// A `block:` step: the ranges of its parts in [`super::Playbook::steps`].
#[derive(Debug, Clone)]
pub struct Block {
    /// The block's id (unique among every step and block id).
    pub id: String,
    /// `name:`.
    pub name: Option<String>,
    /// Where it starts.
    pub location: Location,
    /// The steps of `block:`.
    pub body: Range<usize>,
    /// The steps of `rescue:`.
    pub rescue: Range<usize>,
    /// The steps of `always:`.
    pub always: Range<usize>,
}

impl Block {
    /// Every step of the block, rescue and always included.
    pub fn steps(&self) -> Range<usize> {
        self.body.start..self.always.end
    }

    /// A label for people: the name, or the id.
    pub fn title(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The variable a block's rescue and always steps see once a step of the block failed:
/// `{step, error}` (undefined in always steps when none failed).
pub const FAILED: &str = "failed";

/// The step keys a block may have besides `block`, `rescue` and `always`.
const BLOCK_KEYS: &str = "`id`, `name`, `when`, `context`, `block`, `rescue` and `always`";

impl Loader<'_> {
    /// A `block:` step: a new id, steps in each part it has (none of them a block), and
    /// nothing else but a name, a `when` and a `context`, which apply to each of its steps.
    pub(super) fn validate_block(
        &self,
        spanned: Spanned<StepSpec>,
        end_line: usize,
        outer: Option<BlockPart>,
        list: &mut StepList,
        known: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), Diagnostic> {
        let location = self.at(&spanned);
        let mut spec = spanned.value;
        self.check_step_id(&spec.id, &list.ids)?;
        self.check_step_id(&spec.id, &list.block_ids)?;
        let id = spec.id.value.clone();
        let extent = StepExtent {
            id: &id,
            location: &location,
            end_line,
        };
        let Some(body) = spec.block.take() else {
            let key = if spec.rescue.is_some() {
                "rescue"
            } else {
                "always"
            };
            return Err(Diagnostic::at(
                self.find_key(key, &location, end_line),
                format!("step `{id}` has `{key}:` without `block:`"),
            )
            .help(format!(
                "`{key}:` belongs to a block: put the steps it handles under `block:` in the same step"
            )));
        };
        if let Some(outer) = outer {
            return Err(Diagnostic::at(
                self.find_key("block", &location, end_line),
                format!("block `{id}` is inside the `{}:` of another block; blocks do not nest", outer.section.key()),
            )
            .help("put its steps straight into the outer block, or make it a block of its own after the outer one"));
        }
        self.block_keys_only(&spec, &extent)?;
        let parts = [
            (Section::Body, Some(body)),
            (Section::Rescue, spec.rescue.take()),
            (Section::Always, spec.always.take()),
        ];
        let index = list.blocks.len();
        list.blocks.push(Block {
            id: id.clone(),
            name: spec.name.clone(),
            location: location.clone(),
            body: 0..0,
            rescue: 0..0,
            always: 0..0,
        });
        list.block_ids.insert(id.clone(), location.line);
        for (section, steps) in parts {
            let start = list.steps.len();
            if let Some(mut steps) = steps {
                if steps.value.is_empty() {
                    return Err(Diagnostic::at(
                        self.find_key(section.key(), &location, end_line),
                        format!("the `{}:` of block `{id}` has no steps", section.key()),
                    )
                    .help(format!(
                        "give it at least one step, or leave `{}:` out",
                        section.key()
                    )));
                }
                for step in &mut steps.value {
                    step.value.when = both(spec.when.as_ref(), step.value.when.take());
                    // A step's own context wins over its block's.
                    if step.value.context.is_none() {
                        step.value.context = spec.context.clone();
                    }
                }
                let part = BlockPart {
                    block: index,
                    section,
                };
                // Rescue and always steps may look at what failed.
                let adds_failed = section != Section::Body && known.insert(FAILED.to_string());
                let validated = self.validate_list(steps, end_line, Some(part), list, known);
                if adds_failed {
                    known.remove(FAILED);
                }
                validated?;
            }
            let range = start..list.steps.len();
            let block = &mut list.blocks[index];
            match section {
                Section::Body => block.body = range,
                Section::Rescue => block.rescue = range,
                Section::Always => block.always = range,
            }
        }
        Ok(())
    }

    /// A block does nothing itself: no action, no step settings.
    fn block_keys_only(&self, spec: &StepSpec, extent: &StepExtent<'_>) -> Result<(), Diagnostic> {
        let present = working_keys(spec);
        let Some(key) = present.first() else {
            return Ok(());
        };
        Err(Diagnostic::at(
            self.find_key(key, extent.location, extent.end_line),
            format!(
                "block `{}` has `{key}:`, which a block cannot have",
                extent.id
            ),
        )
        .help(format!(
            "a block takes only {BLOCK_KEYS}; give `{key}:` to the steps under `block:`"
        )))
    }
}

/// The keys of a step that make it do something (its actions and the settings of an
/// action), which a block or an include step cannot have.
pub(super) fn working_keys(spec: &StepSpec) -> Vec<&'static str> {
    let mut present: Vec<&'static str> = spec.actions().iter().map(|(key, _)| *key).collect();
    let settings = [
        ("check", spec.check.is_some()),
        ("require", spec.require.is_some()),
        ("until", spec.until.is_some()),
        ("register", spec.register.is_some()),
        ("retries", spec.retries.is_some()),
        ("delay", spec.delay.is_some()),
        ("timeout", spec.timeout.is_some()),
        ("confirm", spec.confirm.is_some()),
        ("env", !spec.env.is_empty()),
        ("loop", spec.loop_over.is_some()),
    ];
    present.extend(settings.iter().filter(|(_, set)| *set).map(|(key, _)| *key));
    present
}

/// A block's `when` and its step's own: the step runs when both hold.
fn both(block: Option<&Condition>, step: Option<Condition>) -> Option<Condition> {
    match (block, step) {
        (None, step) => step,
        (Some(block), None) => Some(block.clone()),
        (Some(block), Some(step)) => Some(Condition(format!(
            "({}) and ({})",
            block.as_str(),
            step.as_str()
        ))),
    }
}
