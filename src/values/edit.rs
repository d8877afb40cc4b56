//! The text of one edit: which bytes of the file change, written the way the file writes
//! things (its indentation step, its quotes, its line breaks, its blank lines).

use std::ops::Range;

use super::cst::{self, Holder, MissingParent, SyntaxNode};
use super::path::PathSegment;
use super::scalar::{self, ScalarStyle};

/// Bytes `range` of the file become `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    /// The bytes replaced (empty for an insertion).
    pub range: Range<usize>,
    /// What replaces them.
    pub text: String,
}

/// Applies splices that do not overlap.
pub fn apply(text: &str, mut splices: Vec<Splice>) -> String {
    splices.sort_by_key(|splice| std::cmp::Reverse(splice.range.start));
    let mut out = text.to_string();
    for splice in splices {
        out.replace_range(splice.range, &splice.text);
    }
    out
}

/// How the file is written, learnt from the file itself.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Spaces between a key and the keys of the mapping under it (2 unless the file says).
    pub step: usize,
    /// The quotes to add when a new string needs some.
    pub quote: ScalarStyle,
    /// `\n`, or `\r\n` for a file written with those.
    pub newline: &'static str,
}

impl Layout {
    /// Reads the layout of `text`, parsed as `root`, in one walk of its syntax tree.
    pub fn of(text: &str, root: &SyntaxNode) -> Layout {
        let mut steps = std::collections::BTreeMap::<usize, usize>::new();
        let (mut single, mut double) = (0usize, 0usize);
        for node in root.descendants() {
            match node.kind() {
                yaml_edit::SyntaxKind::SCALAR => match text[cst::range(&node)].chars().next() {
                    Some('\'') => single += 1,
                    Some('"') => double += 1,
                    _ => {}
                },
                yaml_edit::SyntaxKind::MAPPING_ENTRY => {
                    let (Some(key), Some(value)) = (cst::entry_key(&node), cst::entry_value(&node))
                    else {
                        continue;
                    };
                    if value.kind() != yaml_edit::SyntaxKind::MAPPING || cst::is_flow(&value) {
                        continue;
                    }
                    let Some(child_key) =
                        cst::entries(&value).next().and_then(|e| cst::entry_key(&e))
                    else {
                        continue;
                    };
                    let parent = column(text, cst::range(&key).start);
                    let child = column(text, cst::range(&child_key).start);
                    if child > parent {
                        *steps.entry(child - parent).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        let step = steps
            .iter()
            .max_by_key(|(step, count)| (**count, std::cmp::Reverse(**step)))
            .map_or(2, |(step, _)| *step);
        Layout {
            step,
            // Single quotes unless the file prefers double: the ruamel-based formatter that
            // these files go through writes single quotes.
            quote: if double > single {
                ScalarStyle::DoubleQuoted
            } else {
                ScalarStyle::SingleQuoted
            },
            newline: if text.contains("\r\n") { "\r\n" } else { "\n" },
        }
    }
}

/// The column (0-based, in bytes; the text before a key is spaces and `- `) of an offset.
pub fn column(text: &str, offset: usize) -> usize {
    offset - text[..offset].rfind('\n').map_or(0, |newline| newline + 1)
}

/// The offset just after the line break that ends the line holding `offset` (the end of the
/// text when that line has no line break).
fn after_line(text: &str, offset: usize) -> usize {
    text[offset..]
        .find('\n')
        .map_or(text.len(), |newline| offset + newline + 1)
}

/// What to write for `value` where a new scalar goes (after `key: `), its block content
/// indented by `indent`.
fn new_scalar(value: &serde_json::Value, indent: usize, flow: bool, layout: &Layout) -> String {
    match value {
        serde_json::Value::String(text) if text.contains('\n') && !flow => {
            scalar::literal_block(text, indent, false)
                .unwrap_or_else(|| scalar::double_quoted(text))
        }
        serde_json::Value::String(text) => {
            scalar::inline_string(text, ScalarStyle::Plain, layout.quote, flow)
        }
        other => scalar::non_string_text(other).unwrap_or_default(),
    }
}

/// A key as it is written: plain when it reads back as the same string.
fn key_text(key: &str, flow: bool, layout: &Layout) -> String {
    scalar::inline_string(key, ScalarStyle::Plain, layout.quote, flow)
}

/// Replaces the scalar `node` (held by `holder`) by `value`, keeping its quotes or block style
/// where they can hold the new value.
pub fn replace_scalar(
    text: &str,
    node: &SyntaxNode,
    holder: &Holder,
    value: &serde_json::Value,
    layout: &Layout,
) -> Option<Splice> {
    let range = cst::range(node);
    let old = &text[range.clone()];
    let flow = cst::in_flow(node);
    if old.trim().is_empty() {
        // `key:` with nothing after it: the value goes right after the `:` (before a comment).
        let indicator = match holder {
            Holder::Entry(holder) | Holder::Item(holder) => cst::indicator(holder)?,
            Holder::Document => return None,
        };
        let at = cst::token_end(&indicator);
        let written = match value {
            serde_json::Value::String(string) => {
                scalar::inline_string(string, ScalarStyle::Plain, layout.quote, flow)
            }
            other => scalar::non_string_text(other)?,
        };
        return Some(Splice {
            range: at..at,
            text: format!(" {written}"),
        });
    }
    let style = ScalarStyle::of(old);
    let written = match (style, value) {
        (ScalarStyle::Literal | ScalarStyle::Folded, serde_json::Value::String(string)) => {
            let indent = block_indent(old).unwrap_or_else(|| {
                column(text, range.start).max(holder_column(text, holder)) + layout.step
            });
            scalar::literal_block(string, indent, style == ScalarStyle::Folded)
                .unwrap_or_else(|| scalar::double_quoted(string))
        }
        (_, serde_json::Value::String(string)) => {
            scalar::inline_string(string, style, layout.quote, flow)
        }
        (_, other) => scalar::non_string_text(other)?,
    };
    // A block scalar's node runs on over the blank lines after it; they stay.
    let end = range.start + old.trim_end().len();
    Some(Splice {
        range: range.start..end,
        text: written,
    })
}

/// The indentation of a block scalar's first content line.
fn block_indent(block: &str) -> Option<usize> {
    block
        .lines()
        .skip(1)
        .find(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start_matches(' ').len())
}

fn holder_column(text: &str, holder: &Holder) -> usize {
    match holder {
        Holder::Entry(entry) => {
            cst::entry_key(entry).map_or(0, |key| column(text, cst::range(&key).start))
        }
        Holder::Item(item) => column(text, cst::range(item).start),
        Holder::Document => 0,
    }
}

/// Lines for keys that do not exist yet, the first at `column`, each nested one `step`
/// deeper, the last holding `value`.
fn block_lines(keys: &[&str], column: usize, value: &serde_json::Value, layout: &Layout) -> String {
    let mut out = String::new();
    for (depth, key) in keys.iter().enumerate() {
        let indent = column + depth * layout.step;
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key, false, layout));
        out.push(':');
        if depth + 1 == keys.len() {
            out.push(' ');
            out.push_str(&new_scalar(value, indent + layout.step, false, layout));
        }
        out.push('\n');
    }
    out
}

/// `a: {b: value}` for keys that do not exist yet inside a flow mapping.
fn flow_entry(keys: &[&str], value: &serde_json::Value, layout: &Layout) -> String {
    let (first, rest) = keys
        .split_first()
        .map_or((String::new(), &[][..]), |(first, rest)| {
            (key_text(first, true, layout), rest)
        });
    let inner = if rest.is_empty() {
        new_scalar(value, 0, true, layout)
    } else {
        format!("{{{}}}", flow_entry(rest, value, layout))
    };
    format!("{first}: {inner}")
}

/// Why missing keys cannot be added.
#[derive(Debug, Clone)]
pub enum CannotAdd {
    /// The missing part of the path goes through a list item, which is not created.
    ListItem,
    /// The null to replace is a list item (`-` with nothing after it).
    NullItem,
}

/// Adds the keys `segments` (the missing end of a path) under `parent`, with `value` at the
/// end: as a block in the style of the file, after the last entry of the mapping.
pub fn add_missing(
    text: &str,
    parent: &MissingParent,
    segments: &[PathSegment],
    value: &serde_json::Value,
    layout: &Layout,
) -> Result<Vec<Splice>, CannotAdd> {
    let keys = segments
        .iter()
        .map(|segment| match segment {
            PathSegment::Key(key) => Ok(key.as_str()),
            PathSegment::Index(_) => Err(CannotAdd::ListItem),
        })
        .collect::<Result<Vec<&str>, _>>()?;
    let addition = Addition {
        text,
        keys,
        value,
        layout,
    };
    Ok(match parent {
        MissingParent::EmptyDocument => addition.at_document_end(),
        MissingParent::Mapping(mapping) if cst::in_flow(mapping) => {
            addition.append_to_flow_mapping(mapping)
        }
        MissingParent::Mapping(mapping) => addition.append_to_block_mapping(mapping),
        MissingParent::Null {
            node,
            holder: Holder::Document,
        } => addition.instead_of_null_document(node),
        MissingParent::Null {
            node,
            holder: holder @ Holder::Entry(entry),
        } => addition.instead_of_null_value(node, entry, holder),
        MissingParent::Null {
            holder: Holder::Item(_),
            ..
        } => return Err(CannotAdd::NullItem),
    })
}

/// Keys to add to a file, with the value at their end: the splices for each kind of place
/// they go.
struct Addition<'a> {
    text: &'a str,
    keys: Vec<&'a str>,
    value: &'a serde_json::Value,
    layout: &'a Layout,
}

impl Addition<'_> {
    /// The keys as block lines at `column`, with the file's newlines.
    fn lines(&self, column: usize) -> String {
        block_lines(&self.keys, column, self.value, self.layout).replace('\n', self.layout.newline)
    }

    /// The keys in flow style (`a: {b: 1}`).
    fn flow_entry(&self) -> String {
        flow_entry(&self.keys, self.value, self.layout)
    }

    /// An empty document: the keys are all it has.
    fn at_document_end(&self) -> Vec<Splice> {
        let text = self.text;
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            self.layout.newline
        };
        vec![Splice {
            range: text.len()..text.len(),
            text: format!("{separator}{}", self.lines(0)),
        }]
    }

    /// A flow mapping (`{a: 1}`): a new entry after its last one.
    fn append_to_flow_mapping(&self, mapping: &SyntaxNode) -> Vec<Splice> {
        let entry = self.flow_entry();
        match cst::entries(mapping).last() {
            Some(last) => {
                let at = cst::last_content_token(&last)
                    .map_or(cst::range(&last).end, |token| cst::token_end(&token));
                vec![Splice {
                    range: at..at,
                    text: format!(", {entry}"),
                }]
            }
            None => {
                let at = cst::range(mapping).start + 1;
                vec![Splice {
                    range: at..at,
                    text: entry,
                }]
            }
        }
    }

    /// A block mapping: new lines after its last entry, at that entry's column, after a
    /// blank line when its entries are separated by blank lines.
    fn append_to_block_mapping(&self, mapping: &SyntaxNode) -> Vec<Splice> {
        let (text, newline) = (self.text, self.layout.newline);
        let all: Vec<SyntaxNode> = cst::entries(mapping).collect();
        let Some(last) = all.last() else {
            return Vec::new();
        };
        let key_start =
            cst::entry_key(last).map_or(cst::range(last).start, |key| cst::range(&key).start);
        let end = cst::last_content_token(last)
            .map_or(cst::range(last).end, |token| cst::token_end(&token));
        let at = after_line(text, end);
        let mut prefix = String::new();
        if !text[..at].ends_with('\n') {
            prefix.push_str(newline);
        }
        if let [.., before, _] = all.as_slice() {
            let before_end = cst::last_content_token(before)
                .map_or(cst::range(before).end, |token| cst::token_end(&token));
            let gap_start = after_line(text, before_end).min(key_start);
            let gap_end = key_start - column(text, key_start);
            if gap_start < gap_end
                && text[gap_start..gap_end]
                    .lines()
                    .any(|line| line.trim().is_empty())
            {
                prefix.push_str(newline);
            }
        }
        vec![Splice {
            range: at..at,
            text: format!("{prefix}{}", self.lines(column(text, key_start))),
        }]
    }

    /// The whole document is `~` or `null`: it becomes the mapping.
    fn instead_of_null_document(&self, node: &SyntaxNode) -> Vec<Splice> {
        let range = cst::range(node);
        let end = range.start + self.text[range.clone()].trim_end().len();
        let block = self.lines(0);
        vec![Splice {
            range: range.start..end,
            text: block.trim_end_matches(['\r', '\n']).to_string(),
        }]
    }

    /// `key:` or `key: null` becomes the mapping: in flow after the colon when the entry is
    /// in flow, else on the lines below, one step in from the key.
    fn instead_of_null_value(
        &self,
        node: &SyntaxNode,
        entry: &SyntaxNode,
        holder: &Holder,
    ) -> Vec<Splice> {
        let text = self.text;
        let range = cst::range(node);
        let colon_end = cst::indicator(entry).map_or(range.start, |colon| cst::token_end(&colon));
        if cst::in_flow(node) {
            return vec![Splice {
                range: colon_end..range.end.max(colon_end),
                text: format!(" {{{}}}", self.flow_entry()),
            }];
        }
        let mut splices = Vec::new();
        if !text[range.clone()].trim().is_empty() {
            // `key: null` loses its `null`; the mapping goes on the lines below.
            splices.push(Splice {
                range: colon_end..range.end,
                text: String::new(),
            });
        }
        let at = after_line(text, colon_end.max(range.end));
        let prefix = if text[..at].ends_with('\n') {
            ""
        } else {
            self.layout.newline
        };
        splices.push(Splice {
            range: at..at,
            text: format!(
                "{prefix}{}",
                self.lines(holder_column(text, holder) + self.layout.step)
            ),
        });
        splices
    }
}
