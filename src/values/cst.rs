//! Finding a path in the file's text: yaml-edit's lossless syntax tree says where each key,
//! value, comment and line break is, so that an edit can touch exactly the bytes it means to.

use rowan::NodeOrToken;
use yaml_edit::{Lang, SyntaxKind};

use super::path::{PathSegment, ValuesPath};

/// A node of yaml-edit's syntax tree.
pub type SyntaxNode = rowan::SyntaxNode<Lang>;
type SyntaxToken = rowan::SyntaxToken<Lang>;

/// What holds a value: a mapping entry (`key: value`), a list item (`- value`) or the
/// document itself.
#[derive(Debug, Clone)]
pub enum Holder {
    /// A `MAPPING_ENTRY`.
    Entry(SyntaxNode),
    /// A `SEQUENCE_ENTRY`.
    Item(SyntaxNode),
    /// The top of the document.
    Document,
}

/// Where a path leads in the syntax tree.
#[derive(Debug, Clone)]
pub enum Located {
    /// An existing scalar, possibly an empty one (`key:` with no value).
    Scalar {
        /// The `SCALAR` node.
        node: SyntaxNode,
        /// What holds it.
        holder: Holder,
    },
    /// The path ends at a mapping or a list.
    Collection {
        /// The `MAPPING` or `SEQUENCE` node.
        node: SyntaxNode,
    },
    /// The path reaches an alias (`*name`) after `at` segments; the syntax tree cannot follow
    /// it.
    Alias {
        /// The `ALIAS` node.
        node: SyntaxNode,
        /// How many segments led to it.
        at: usize,
    },
    /// The path reaches a tagged value (`!!str x`) after `at` segments.
    Tagged {
        /// The `TAGGED_NODE`.
        node: SyntaxNode,
        /// How many segments led to it.
        at: usize,
    },
    /// The segments from `at` on do not exist; `parent` is where they would be added.
    Missing {
        /// Where the first missing key goes.
        parent: MissingParent,
        /// Index of the first missing segment.
        at: usize,
    },
}

/// Where missing keys are added.
#[derive(Debug, Clone)]
pub enum MissingParent {
    /// A mapping that lacks the key.
    Mapping(SyntaxNode),
    /// A null value (`key:`, `key: null`) that becomes a mapping.
    Null {
        /// The null `SCALAR`.
        node: SyntaxNode,
        /// What holds it.
        holder: Holder,
    },
    /// A document with nothing in it.
    EmptyDocument,
}

/// Why a path cannot go on.
#[derive(Debug, Clone)]
pub enum Blocked {
    /// A key was asked of a scalar.
    Scalar,
    /// A key was asked of a list.
    List,
    /// A list index was asked of a mapping.
    Mapping,
    /// The list has only this many items.
    IndexOutOfRange(usize),
}

/// A path that cannot be followed: after `at` segments, `node` is in the way.
#[derive(Debug, Clone)]
pub struct Obstacle {
    /// How many segments were followed.
    pub at: usize,
    /// The node in the way.
    pub node: SyntaxNode,
    /// What it is.
    pub blocked: Blocked,
}

fn is_value(kind: SyntaxKind) -> bool {
    matches!(
        kind,
        SyntaxKind::SCALAR
            | SyntaxKind::MAPPING
            | SyntaxKind::SEQUENCE
            | SyntaxKind::ALIAS
            | SyntaxKind::TAGGED_NODE
    )
}

/// The value node inside a `KEY`, `VALUE`, `SEQUENCE_ENTRY` or `DOCUMENT`.
fn content(wrapper: &SyntaxNode) -> Option<SyntaxNode> {
    wrapper.children().find(|child| is_value(child.kind()))
}

fn child_of_kind(node: &SyntaxNode, kind: SyntaxKind) -> Option<SyntaxNode> {
    node.children().find(|child| child.kind() == kind)
}

/// The documents of a parsed file.
pub fn documents(root: &SyntaxNode) -> impl Iterator<Item = SyntaxNode> {
    root.children()
        .filter(|child| child.kind() == SyntaxKind::DOCUMENT)
}

/// The top value of a document.
pub fn document_content(document: &SyntaxNode) -> Option<SyntaxNode> {
    content(document)
}

/// The entries of a mapping.
pub fn entries(mapping: &SyntaxNode) -> impl Iterator<Item = SyntaxNode> {
    mapping
        .children()
        .filter(|child| child.kind() == SyntaxKind::MAPPING_ENTRY)
}

/// The key node of a mapping entry.
pub fn entry_key(entry: &SyntaxNode) -> Option<SyntaxNode> {
    child_of_kind(entry, SyntaxKind::KEY).and_then(|key| content(&key))
}

/// The value node of a mapping entry.
pub fn entry_value(entry: &SyntaxNode) -> Option<SyntaxNode> {
    child_of_kind(entry, SyntaxKind::VALUE).and_then(|value| content(&value))
}

/// The items of a list.
fn items(sequence: &SyntaxNode) -> impl Iterator<Item = SyntaxNode> {
    sequence
        .children()
        .filter(|child| child.kind() == SyntaxKind::SEQUENCE_ENTRY)
}

/// A key's text as a path segment sees it: without quotes or escapes.
pub fn key_text(key: &SyntaxNode) -> Option<String> {
    let scalar: yaml_edit::Scalar = rowan::ast::AstNode::cast(key.clone())?;
    let raw = scalar.value();
    if raw.starts_with('"') || raw.starts_with('\'') {
        Some(scalar.as_string())
    } else {
        Some(raw.trim().to_string())
    }
}

/// Whether a mapping or list is written in flow style (`{...}`, `[...]`).
pub fn is_flow(node: &SyntaxNode) -> bool {
    node.children_with_tokens()
        .find_map(|child| child.into_token())
        .is_some_and(|token| {
            matches!(
                token.kind(),
                SyntaxKind::LEFT_BRACE | SyntaxKind::LEFT_BRACKET
            )
        })
}

/// Whether any ancestor of `node` (or the node) is a flow collection.
pub fn in_flow(node: &SyntaxNode) -> bool {
    node.ancestors().any(|ancestor| {
        matches!(ancestor.kind(), SyntaxKind::MAPPING | SyntaxKind::SEQUENCE) && is_flow(&ancestor)
    })
}

/// Whether a scalar is a null: nothing, `~` or `null`.
pub fn is_null(scalar: &SyntaxNode) -> bool {
    matches!(
        scalar.text().to_string().trim(),
        "" | "~" | "null" | "Null" | "NULL"
    )
}

/// Follows `path` through the syntax tree of `document`.
pub fn locate(document: &SyntaxNode, path: &ValuesPath) -> Result<Located, Obstacle> {
    let mut current = document_content(document);
    let mut holder = Holder::Document;
    for (at, segment) in path.segments().iter().enumerate() {
        let Some(node) = current else {
            return Ok(Located::Missing {
                parent: MissingParent::EmptyDocument,
                at,
            });
        };
        let obstacle = |blocked| Obstacle {
            at,
            node: node.clone(),
            blocked,
        };
        match (node.kind(), segment) {
            (SyntaxKind::MAPPING, PathSegment::Key(key)) => {
                let found = entries(&node).find(|entry| {
                    entry_key(entry).and_then(|k| key_text(&k)).as_deref() == Some(key.as_str())
                });
                let Some(entry) = found else {
                    return Ok(Located::Missing {
                        parent: MissingParent::Mapping(node),
                        at,
                    });
                };
                current = entry_value(&entry);
                holder = Holder::Entry(entry);
            }
            (SyntaxKind::MAPPING, PathSegment::Index(_)) => return Err(obstacle(Blocked::Mapping)),
            (SyntaxKind::SEQUENCE, PathSegment::Index(index)) => {
                let Some(item) = items(&node).nth(*index) else {
                    return Err(obstacle(Blocked::IndexOutOfRange(items(&node).count())));
                };
                current = content(&item);
                holder = Holder::Item(item);
            }
            (SyntaxKind::SEQUENCE, PathSegment::Key(_)) => return Err(obstacle(Blocked::List)),
            (SyntaxKind::SCALAR, PathSegment::Key(_)) if is_null(&node) => {
                return Ok(Located::Missing {
                    parent: MissingParent::Null { node, holder },
                    at,
                });
            }
            (SyntaxKind::ALIAS, _) => return Ok(Located::Alias { node, at }),
            (SyntaxKind::TAGGED_NODE, _) => return Ok(Located::Tagged { node, at }),
            _ => return Err(obstacle(Blocked::Scalar)),
        }
    }
    Ok(match current {
        None => Located::Missing {
            parent: MissingParent::EmptyDocument,
            at: path.len(),
        },
        Some(node) => match node.kind() {
            SyntaxKind::SCALAR => Located::Scalar { node, holder },
            SyntaxKind::ALIAS => Located::Alias {
                node,
                at: path.len(),
            },
            SyntaxKind::TAGGED_NODE => Located::Tagged {
                node,
                at: path.len(),
            },
            _ => Located::Collection { node },
        },
    })
}

/// Tokens that carry no content: spaces, line breaks, comments, commas.
fn is_trivia(kind: SyntaxKind) -> bool {
    matches!(
        kind,
        SyntaxKind::WHITESPACE
            | SyntaxKind::NEWLINE
            | SyntaxKind::INDENT
            | SyntaxKind::COMMENT
            | SyntaxKind::COMMA
    )
}

/// The last token of `node` that carries content.
pub fn last_content_token(node: &SyntaxNode) -> Option<SyntaxToken> {
    node.descendants_with_tokens()
        .filter_map(NodeOrToken::into_token)
        .filter(|token| !is_trivia(token.kind()) && !token.text().is_empty())
        .last()
}

/// The `:` of a mapping entry, or the `-` of a list item.
pub fn indicator(holder: &SyntaxNode) -> Option<SyntaxToken> {
    holder
        .children_with_tokens()
        .filter_map(NodeOrToken::into_token)
        .find(|token| matches!(token.kind(), SyntaxKind::COLON | SyntaxKind::DASH))
}

/// The byte range of a node.
pub fn range(node: &SyntaxNode) -> std::ops::Range<usize> {
    let range = node.text_range();
    usize::from(range.start())..usize::from(range.end())
}

/// The byte offset where a token ends.
pub fn token_end(token: &SyntaxToken) -> usize {
    usize::from(token.text_range().end())
}
