//! Editing helm values files the way a careful person would: change the value that was asked
//! for and nothing else — every comment, blank line, key order, quote and indentation stays.
//!
//! This module knows YAML and helm, not runbooks. [`ValuesDocument`] reads a file's text,
//! answers [`get`](ValuesDocument::get), and [`set`](ValuesDocument::set)s scalars at
//! [`ValuesPath`]s. It finds the bytes to change in yaml-edit's lossless syntax tree, writes
//! the change itself (in the file's indentation, quotes and line breaks), then parses the
//! result again and refuses the edit unless the document means exactly what it meant before
//! with only that path changed and every comment is still there.
//!
//! ```
//! use runbook::values::{ValuesDocument, ValuesPath};
//!
//! let mut doc = ValuesDocument::parse("nfs:\n  pv:\n    serverIP: 10.0.0.1 # old filer\n")?;
//! let path = ValuesPath::parse("nfs.pv.serverIP")?;
//! doc.set(&path, &serde_json::json!("10.0.0.2"))?;
//! assert_eq!(doc.text(), "nfs:\n  pv:\n    serverIP: 10.0.0.2 # old filer\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cluster;
mod cst;
mod edit;
mod path;
mod read;
mod scalar;
mod tree;
mod write;

pub use cluster::{ClusterConfig, ClusterError, HubValues};
pub use path::{PathError, PathSegment, ValuesPath};
pub use read::{ReadError, read_regular};
pub use scalar::{can_be_plain, reads_as_non_string};
pub use write::{WriteError, check_writable, write_atomically};

use cst::{Blocked, Located, SyntaxNode};
use tree::Node;

/// A line and column in the file, both from 1 (the column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of(text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: text[line_start..offset].chars().count() + 1,
        }
    }
}

/// Why a document cannot be read or edited. Every variant that points into the file has a
/// [`position`](ValuesError::position).
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The text is not YAML.
    #[error("not valid YAML: {0}")]
    Syntax(Box<serde_saphyr::Error>),
    /// yaml-edit could not read text that serde-saphyr could.
    #[error("cannot edit this file: {message}")]
    Unreadable {
        /// yaml-edit's message.
        message: String,
        /// Where.
        position: Position,
    },
    /// More than one YAML document (`---`).
    #[error("the file holds {count} YAML documents; a values file holds one")]
    SeveralDocuments {
        /// How many.
        count: usize,
        /// Where the second one starts.
        position: Position,
    },
    /// A top-level `sops:` key: the file is encrypted.
    #[error("the file is encrypted with SOPS")]
    Encrypted {
        /// The `sops:` key.
        position: Position,
    },
    /// The top of the document is a list or a scalar.
    #[error("the top of the file is {found}, not a mapping of keys to values")]
    NotAMapping {
        /// What it is.
        found: String,
        /// Where.
        position: Position,
    },
    /// The path goes through something that has no keys (or no items).
    #[error("`{path}` cannot be followed: `{prefix}` is {found}")]
    Crosses {
        /// The whole path.
        path: ValuesPath,
        /// The part of it that leads to the obstacle.
        prefix: ValuesPath,
        /// What is there: "a list", "a scalar (`true`)".
        found: String,
        /// The obstacle.
        position: Position,
    },
    /// A list index past the end.
    #[error("`{path}` cannot be followed: `{prefix}` is a list of {len} item{}", if *.len == 1 { "" } else { "s" })]
    NoSuchItem {
        /// The whole path.
        path: ValuesPath,
        /// The list.
        prefix: ValuesPath,
        /// How many items it has.
        len: usize,
        /// The list.
        position: Position,
    },
    /// The value at the path is a mapping or a list, not a scalar.
    #[error("`{path}` is {found}; only scalars (strings, numbers, booleans, null) can be set")]
    NotAScalar {
        /// The path.
        path: ValuesPath,
        /// "a mapping" or "a list".
        found: String,
        /// Where it starts.
        position: Position,
    },
    /// The path goes through an alias (`*name`) or ends at one: editing it would change the
    /// anchor and every other alias of it.
    #[error(
        "`{path}` goes through the alias `{alias}` at `{prefix}`; edit the anchor it refers to, or replace the alias"
    )]
    Alias {
        /// The path.
        path: ValuesPath,
        /// Where the alias is.
        prefix: ValuesPath,
        /// `*name`.
        alias: String,
        /// Where.
        position: Position,
    },
    /// A tagged value (`!!str x`, `!custom`) is on the path.
    #[error("`{path}` goes through a tagged value (`{tag}`) at `{prefix}`, which is not edited")]
    Tagged {
        /// The path.
        path: ValuesPath,
        /// Where.
        prefix: ValuesPath,
        /// The tag.
        tag: String,
        /// Where.
        position: Position,
    },
    /// The missing part of the path would need a new list item, or sits under an empty list
    /// item.
    #[error("`{path}` does not exist and cannot be added: {reason}")]
    CannotAdd {
        /// The path.
        path: ValuesPath,
        /// Why.
        reason: String,
        /// The mapping or list where it stops.
        position: Position,
    },
    /// The value to set is a list or a mapping.
    #[error("the value for `{path}` is a {kind}; set each scalar under it by its own path")]
    UnsupportedValue {
        /// The path.
        path: ValuesPath,
        /// "list" or "mapping".
        kind: &'static str,
    },
    /// The edited text did not parse back to the original document with only the path
    /// changed. Nothing was changed.
    #[error("refusing the edit of `{path}`: {detail}")]
    Unverified {
        /// The path being set.
        path: ValuesPath,
        /// What went wrong.
        detail: String,
        /// Where in the original file, when known.
        position: Option<Position>,
    },
}

impl ValuesError {
    /// Where in the file the problem is, when it is somewhere.
    pub fn position(&self) -> Option<Position> {
        match self {
            ValuesError::Syntax(error) => error.location().map(|location| Position {
                line: usize::try_from(location.line()).unwrap_or(1).max(1),
                column: usize::try_from(location.column()).unwrap_or(1).max(1),
            }),
            ValuesError::Unreadable { position, .. }
            | ValuesError::SeveralDocuments { position, .. }
            | ValuesError::Encrypted { position }
            | ValuesError::NotAMapping { position, .. }
            | ValuesError::Crosses { position, .. }
            | ValuesError::NoSuchItem { position, .. }
            | ValuesError::NotAScalar { position, .. }
            | ValuesError::Alias { position, .. }
            | ValuesError::Tagged { position, .. }
            | ValuesError::CannotAdd { position, .. } => Some(*position),
            ValuesError::Unverified { position, .. } => *position,
            ValuesError::UnsupportedValue { .. } => None,
        }
    }

    /// How to fix it, when there is a usual way.
    pub fn help(&self) -> Option<String> {
        match self {
            ValuesError::Encrypted { .. } => Some(
                "secret values files are edited with `sops`; put the value in the hub's plain values file instead"
                    .into(),
            ),
            ValuesError::SeveralDocuments { .. } => {
                Some("helm reads one document per values file; split the file".into())
            }
            ValuesError::Crosses { prefix, .. } => Some(format!(
                "check the path; to replace `{prefix}` itself, set `{prefix}`"
            )),
            ValuesError::NoSuchItem { len, .. } => Some(format!(
                "list items are numbered from 0, so the last one is [{}]",
                len.saturating_sub(1)
            )),
            _ => None,
        }
    }
}

/// A value read from a document, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The value, as JSON (keys as strings).
    pub value: serde_json::Value,
    /// Where it is written (for a value reached through an alias, where the alias is).
    pub position: Position,
}

/// A values file: its exact text and what it means.
#[derive(Debug, Clone)]
pub struct ValuesDocument {
    text: String,
    tree: Node,
}

/// Parses the meaning of `text`: one document, aliases expanded, duplicate keys refused.
///
/// Booleans are YAML 1.2's (`true`, `false`): serde-saphyr would otherwise also read any
/// capitalisation of `yes`/`no`/`on`/`off` (`oFF`) as a boolean, where helm reads a string,
/// and a key would then not match its text. What YAML 1.1 reads as a boolean is kept away
/// from the values written by quoting (see `scalar`).
fn parse_tree(text: &str) -> Result<Vec<Node>, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options.strict_booleans = true;
    serde_saphyr::from_multiple_with_options(text, options)
}

/// yaml-edit's syntax tree of `text`, or where it stumbled.
fn parse_syntax(text: &str) -> Result<SyntaxNode, ValuesError> {
    let parsed = yaml_edit::YamlFile::parse(text);
    if let Some(error) = parsed.positioned_errors().first() {
        return Err(ValuesError::Unreadable {
            message: error.message.clone(),
            position: Position::of(text, error.range.start as usize),
        });
    }
    Ok(rowan::ast::AstNode::syntax(&parsed.tree()).clone())
}

impl ValuesDocument {
    /// Reads a values file: one YAML document whose top is a mapping (or nothing), not
    /// SOPS-encrypted.
    pub fn parse(text: impl Into<String>) -> Result<Self, ValuesError> {
        let text = text.into();
        let documents = parse_tree(&text).map_err(|error| ValuesError::Syntax(Box::new(error)))?;
        let root = parse_syntax(&text)?;
        if documents.len() > 1 {
            let second = cst::documents(&root)
                .filter(|document| cst::document_content(document).is_some())
                .nth(1)
                .map_or(0, |document| cst::range(&document).start);
            return Err(ValuesError::SeveralDocuments {
                count: documents.len(),
                position: Position::of(&text, second),
            });
        }
        let tree = documents.into_iter().next().unwrap_or(Node::Null);
        let top = cst::documents(&root).find_map(|document| cst::document_content(&document));
        let top_offset = top.as_ref().map_or(0, |node| cst::range(node).start);
        match &tree {
            Node::Map(entries) => {
                if entries
                    .iter()
                    .any(|(key, _)| *key == Node::Str("sops".into()))
                {
                    let at = top
                        .iter()
                        .flat_map(cst::entries)
                        .find_map(|entry| {
                            let key = cst::entry_key(&entry)?;
                            (cst::key_text(&key)? == "sops").then(|| cst::range(&key).start)
                        })
                        .unwrap_or(top_offset);
                    return Err(ValuesError::Encrypted {
                        position: Position::of(&text, at),
                    });
                }
            }
            Node::Null => {}
            other => {
                return Err(ValuesError::NotAMapping {
                    found: other.describe(),
                    position: Position::of(&text, top_offset),
                });
            }
        }
        Ok(ValuesDocument { text, tree })
    }

    /// The text, with every edit made so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn document(&self) -> Result<SyntaxNode, ValuesError> {
        let root = parse_syntax(&self.text)?;
        let first = cst::documents(&root).next();
        Ok(first.unwrap_or(root))
    }

    fn position(&self, node: &SyntaxNode) -> Position {
        Position::of(&self.text, cst::range(node).start)
    }

    /// The error for a path that the syntax tree cannot follow.
    fn obstacle(&self, path: &ValuesPath, obstacle: &cst::Obstacle) -> ValuesError {
        let prefix = path.prefix(obstacle.at);
        let position = self.position(&obstacle.node);
        match obstacle.blocked {
            Blocked::IndexOutOfRange(len) => ValuesError::NoSuchItem {
                path: path.clone(),
                prefix,
                len,
                position,
            },
            Blocked::List => ValuesError::Crosses {
                path: path.clone(),
                prefix,
                found: "a list (use `[n]` for an item)".into(),
                position,
            },
            Blocked::Mapping => ValuesError::Crosses {
                path: path.clone(),
                prefix,
                found: "a mapping, not a list".into(),
                position,
            },
            Blocked::Scalar => {
                let found = self
                    .tree
                    .get(&path.prefix(obstacle.at))
                    .map_or_else(|| "a scalar".into(), Node::describe);
                ValuesError::Crosses {
                    path: path.clone(),
                    prefix,
                    found,
                    position,
                }
            }
        }
    }

    /// The value at `path`, or `None` when the path does not exist (a missing key, or a key
    /// under a null). A path that crosses a scalar or a list, or a list index past its end,
    /// is an error.
    pub fn get(&self, path: &ValuesPath) -> Result<Option<Found>, ValuesError> {
        let document = self.document()?;
        let node = match cst::locate(&document, path) {
            Err(obstacle) => return Err(self.obstacle(path, &obstacle)),
            Ok(Located::Missing { .. }) => return Ok(None),
            Ok(Located::Scalar { node, .. } | Located::Collection { node }) => node,
            // The syntax tree stops at an alias or a tag; the parsed document goes on.
            Ok(Located::Alias { node, .. } | Located::Tagged { node, .. }) => node,
        };
        Ok(self.tree.get(path).map(|value| Found {
            value: value.to_json(),
            position: self.position(&node),
        }))
    }

    /// Whether the value at `path` is already `value` as helm reads it: numbers by value, and
    /// a plain scalar that YAML 1.1 reads otherwise than YAML 1.2 (`yes`, `0777`, `1_000`) is
    /// not taken for the value it seems to be.
    pub fn has(&self, path: &ValuesPath, value: &serde_json::Value) -> bool {
        let Some(current) = self.tree.get(path) else {
            return false;
        };
        if !current.matches_json(value) {
            return false;
        }
        match self.plain_text(path) {
            Some(text) => scalar::same_in_yaml_1_1(&text, current),
            None => true,
        }
    }

    /// The text of the scalar at `path` when it is written plain (not quoted, not a block).
    fn plain_text(&self, path: &ValuesPath) -> Option<String> {
        let document = self.document().ok()?;
        match cst::locate(&document, path) {
            Ok(Located::Scalar { node, .. }) => {
                let text = node.text().to_string();
                (scalar::ScalarStyle::of(&text) == scalar::ScalarStyle::Plain).then_some(text)
            }
            _ => None,
        }
    }

    /// Sets the scalar at `path` to `value` (a string, number, boolean or null), adding the
    /// keys that are missing. Returns whether the text changed: setting a value that is
    /// already there (as helm reads it) changes nothing. On error the document is unchanged.
    pub fn set(
        &mut self,
        path: &ValuesPath,
        value: &serde_json::Value,
    ) -> Result<bool, ValuesError> {
        let Some(wanted) = Node::from_json_scalar(value) else {
            return Err(ValuesError::UnsupportedValue {
                path: path.clone(),
                kind: if value.is_array() { "list" } else { "mapping" },
            });
        };
        if self.has(path, value) {
            return Ok(false);
        }
        let root = parse_syntax(&self.text)?;
        let document = cst::documents(&root).next().unwrap_or_else(|| root.clone());
        let layout = edit::Layout::of(&self.text, &root);
        let splices = match cst::locate(&document, path) {
            Err(obstacle) => return Err(self.obstacle(path, &obstacle)),
            Ok(Located::Collection { node }) => {
                return Err(ValuesError::NotAScalar {
                    path: path.clone(),
                    found: if node.kind() == yaml_edit::SyntaxKind::MAPPING {
                        "a mapping".into()
                    } else {
                        "a list".into()
                    },
                    position: self.position(&node),
                });
            }
            Ok(Located::Alias { node, at }) => {
                return Err(ValuesError::Alias {
                    path: path.clone(),
                    prefix: path.prefix(at),
                    alias: node.text().to_string(),
                    position: self.position(&node),
                });
            }
            Ok(Located::Tagged { node, at }) => {
                let tag = node.text().to_string();
                return Err(ValuesError::Tagged {
                    path: path.clone(),
                    prefix: path.prefix(at),
                    tag: tag
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    position: self.position(&node),
                });
            }
            Ok(Located::Scalar { node, holder }) => {
                edit::replace_scalar(&self.text, &node, &holder, value, &layout)
                    .into_iter()
                    .collect()
            }
            Ok(Located::Missing { parent, at }) => {
                let where_ = match &parent {
                    cst::MissingParent::Mapping(node) | cst::MissingParent::Null { node, .. } => {
                        self.position(node)
                    }
                    cst::MissingParent::EmptyDocument => Position { line: 1, column: 1 },
                };
                edit::add_missing(&self.text, &parent, &path.segments()[at..], value, &layout)
                    .map_err(|reason| ValuesError::CannotAdd {
                        path: path.clone(),
                        reason: match reason {
                            edit::CannotAdd::ListItem => format!(
                                "`{}` is missing and list items are not created; add the item first",
                                path.prefix(at + 1)
                            ),
                            edit::CannotAdd::NullItem => {
                                "it is under an empty list item (`-`)".into()
                            }
                        },
                        position: where_,
                    })?
            }
        };
        if splices.is_empty() {
            return Err(ValuesError::Unverified {
                path: path.clone(),
                detail: "found no place to write the value".into(),
                position: None,
            });
        }
        let text = edit::apply(&self.text, splices);
        self.verify(path, &wanted, &text, &comments(&root))?;
        self.tree = self
            .tree
            .with(path, wanted)
            .unwrap_or_else(|| self.tree.clone());
        self.text = text;
        Ok(true)
    }

    /// The alias (`*name`) that `path` goes through, if it does.
    fn alias_on(&self, path: &ValuesPath) -> Option<String> {
        match cst::locate(&self.document().ok()?, path) {
            Ok(Located::Alias { node, .. }) => Some(node.text().to_string()),
            _ => None,
        }
    }

    /// Checks that `text` means this document with `wanted` at `path` and nothing else
    /// changed, and that it has every comment this one has.
    fn verify(
        &self,
        path: &ValuesPath,
        wanted: &Node,
        text: &str,
        old_comments: &[String],
    ) -> Result<(), ValuesError> {
        let refuse = |detail: String, position: Option<Position>| ValuesError::Unverified {
            path: path.clone(),
            detail,
            position,
        };
        let parsed = match parse_tree(text) {
            Ok(documents) if documents.len() == 1 => documents.into_iter().next(),
            Ok(documents) if documents.is_empty() => Some(Node::Null),
            Ok(documents) => {
                return Err(refuse(
                    format!("the result would hold {} documents", documents.len()),
                    None,
                ));
            }
            Err(error) => {
                return Err(refuse(format!("the result would not parse: {error}"), None));
            }
        }
        .unwrap_or(Node::Null);
        let Some(expected) = self.tree.with(path, wanted.clone()) else {
            return Err(refuse("the path cannot hold a value".into(), None));
        };
        if let Some((at, _, after)) = expected.first_difference(&parsed) {
            let what = if at == *path {
                format!(
                    "`{path}` would read back as {}, not {}",
                    after.map_or_else(|| "missing".into(), Node::describe),
                    wanted.describe()
                )
            } else {
                match self.alias_on(&at) {
                    Some(alias) => format!(
                        "the value is inside an anchor that the alias `{alias}` repeats, so the \
                         edit would also change `{at}`; replace the alias by a copy first"
                    ),
                    None => format!("the edit would also change `{at}`"),
                }
            };
            let position = self.get(&at).ok().flatten().map(|found| found.position);
            return Err(refuse(what, position));
        }
        if old_comments != comments(&parse_syntax(text)?) {
            return Err(refuse("the edit would change a comment".into(), None));
        }
        Ok(())
    }
}

/// Every comment of a file, in order.
fn comments(root: &SyntaxNode) -> Vec<String> {
    root.descendants_with_tokens()
        .filter_map(rowan::NodeOrToken::into_token)
        .filter(|token| token.kind() == yaml_edit::SyntaxKind::COMMENT)
        .map(|token| token.text().to_string())
        .collect()
}

impl std::fmt::Display for ValuesDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(text: &str, path: &str, value: serde_json::Value) -> String {
        let mut document = ValuesDocument::parse(text).unwrap();
        document
            .set(&ValuesPath::parse(path).unwrap(), &value)
            .unwrap();
        document.text().to_string()
    }

    fn error(text: &str, path: &str, value: serde_json::Value) -> ValuesError {
        let mut document = ValuesDocument::parse(text).unwrap();
        let error = document
            .set(&ValuesPath::parse(path).unwrap(), &value)
            .unwrap_err();
        assert_eq!(document.text(), text, "unchanged after an error");
        error
    }

    #[test]
    fn replaces_a_value_and_keeps_its_quotes_and_comment() {
        assert_eq!(set("a: \"x\" # c\n", "a", json!("y")), "a: \"y\" # c\n");
        assert_eq!(set("a: 'x'\n", "a", json!("it's")), "a: 'it''s'\n");
        assert_eq!(set("a: x\n", "a", json!("on")), "a: 'on'\n");
        assert_eq!(
            set("a: \"x\"\nb: \"y\"\n", "c", json!("no")),
            "a: \"x\"\nb: \"y\"\nc: \"no\"\n"
        );
        assert_eq!(set("a: 1\n", "a", json!(2.5)), "a: 2.5\n");
        assert_eq!(set("a: 1\n", "a", json!(null)), "a: null\n");
        assert_eq!(set("a: # c\n", "a", json!(3)), "a: 3 # c\n");
        assert_eq!(
            set("a: x\n", "a", json!("two\nlines")),
            "a: \"two\\nlines\"\n"
        );
    }

    #[test]
    fn adds_missing_keys_in_the_style_of_the_file() {
        assert_eq!(
            set(
                "top:\n    a: 1\n    b:\n        c: 2\n",
                "top.b.d.e",
                json!("x")
            ),
            "top:\n    a: 1\n    b:\n        c: 2\n        d:\n            e: x\n"
        );
        assert_eq!(
            set("a: {b: 1}\n", "a.c.d", json!(2)),
            "a: {b: 1, c: {d: 2}}\n"
        );
        assert_eq!(set("a: {}\n", "a.b", json!("x y")), "a: {b: x y}\n");
        assert_eq!(set("a: {}\n", "a.b", json!("x,y")), "a: {b: 'x,y'}\n");
        assert_eq!(set("", "a.b", json!(1)), "a:\n  b: 1\n");
        assert_eq!(
            set("# only a comment\n", "a", json!(1)),
            "# only a comment\na: 1\n"
        );
        assert_eq!(set("a: 1", "b", json!(2)), "a: 1\nb: 2\n");
        assert_eq!(set("~\n", "a.b", json!(1)), "a:\n  b: 1\n");
        assert_eq!(
            set("a: null # c\nz: 1\n", "a.b", json!(1)),
            "a: # c\n  b: 1\nz: 1\n"
        );
        assert_eq!(
            set("a:\n  b: 1\n", "a.\"c.d\"", json!("@x")),
            "a:\n  b: 1\n  c.d: '@x'\n"
        );
        assert_eq!(
            set("a:\n  b: 1\n", "a.s", json!("one\ntwo\n")),
            "a:\n  b: 1\n  s: |\n    one\n    two\n"
        );
    }

    #[test]
    fn keeps_windows_line_breaks() {
        assert_eq!(
            set("a:\r\n  b: 1 # c\r\n", "a.b", json!(2)),
            "a:\r\n  b: 2 # c\r\n"
        );
        assert_eq!(
            set("a:\r\n  b: 1\r\n", "a.c.d", json!(2)),
            "a:\r\n  b: 1\r\n  c:\r\n    d: 2\r\n"
        );
    }

    #[test]
    fn a_block_scalar_stays_a_block() {
        assert_eq!(
            set("a: |\n  old\n  text\n\nb: 1\n", "a", json!("new\n")),
            "a: |\n  new\n\nb: 1\n"
        );
        assert_eq!(
            set("a: >-\n  old\nb: 1\n", "a", json!("new")),
            "a: >-\n  new\nb: 1\n"
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_without_changing_the_text() {
        assert!(matches!(
            error("a: [1, 2]\n", "a[5]", json!(1)),
            ValuesError::NoSuchItem { len: 2, .. }
        ));
        assert!(matches!(
            error("a:\n- x\n", "a[1].b", json!(1)),
            ValuesError::NoSuchItem { .. }
        ));
        assert!(matches!(
            error("a: {b: 1}\n", "a[0]", json!(1)),
            ValuesError::Crosses { .. }
        ));
        assert!(matches!(
            error("a:\n- x\n", "a", json!(1)),
            ValuesError::NotAScalar { .. }
        ));
        assert!(matches!(
            error("a: {}\n", "a.b[0]", json!(1)),
            ValuesError::CannotAdd { .. }
        ));
        assert!(matches!(
            error("a: !!str 1\n", "a", json!("2")),
            ValuesError::Tagged { .. }
        ));
        assert!(matches!(
            error("a: 1\n", "a", json!([1])),
            ValuesError::UnsupportedValue { .. }
        ));
    }

    #[test]
    fn reads_what_is_there() {
        let document =
            ValuesDocument::parse("a:\n  b: [x, 'y']\n  c:\nd: &d {e: 1}\nf: *d\n").unwrap();
        let get = |path: &str| document.get(&ValuesPath::parse(path).unwrap()).unwrap();
        assert_eq!(get("a.b[1]").unwrap().value, json!("y"));
        assert_eq!(
            get("a.b[1]").unwrap().position,
            Position {
                line: 2,
                column: 10
            }
        );
        assert_eq!(get("a.c").unwrap().value, json!(null));
        assert!(get("a.c.x").is_none());
        assert!(get("zz.top").is_none());
        assert_eq!(get("f.e").unwrap().value, json!(1));
        assert!(document.get(&ValuesPath::parse("a.b.x").unwrap()).is_err());
    }

    #[test]
    fn rejects_files_that_are_not_one_plain_mapping() {
        let parse = |text: &str| ValuesDocument::parse(text).unwrap_err();
        assert!(matches!(parse("a: [\n"), ValuesError::Syntax(_)));
        assert!(matches!(parse("a: 1\na: 2\n"), ValuesError::Syntax(_)));
        assert!(matches!(
            parse("a: 1\n---\nb: 2\n"),
            ValuesError::SeveralDocuments {
                count: 2,
                position: Position { line: 2, column: 1 }
            }
        ));
        assert!(matches!(
            parse("a: 1\nsops:\n  mac: x\n"),
            ValuesError::Encrypted {
                position: Position { line: 2, column: 1 }
            }
        ));
        assert!(matches!(parse("- a\n"), ValuesError::NotAMapping { .. }));
        assert!(ValuesDocument::parse("---\na: 1\n").is_ok());
    }

    #[test]
    fn a_plain_yaml_1_1_word_is_not_the_string_it_looks_like() {
        let document = ValuesDocument::parse("a: yes\nb: 'yes'\nc: 0777\n").unwrap();
        let path = |p: &str| ValuesPath::parse(p).unwrap();
        assert!(!document.has(&path("a"), &json!("yes")));
        assert!(document.has(&path("b"), &json!("yes")));
        assert!(!document.has(&path("c"), &json!(777)));
        assert_eq!(set("a: yes\n", "a", json!("yes")), "a: 'yes'\n");
    }
}
