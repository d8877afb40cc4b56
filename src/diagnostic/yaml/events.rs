//! Where keys, values and brackets are in a YAML text, from the events of granit-parser: the
//! parser serde-saphyr itself runs, re-run only on a file that failed to load.
//!
//! serde-saphyr reports a position but not what is there. The events say which keys and list
//! items lead to a position, what kind of value starts there and where it ends, and which
//! collections were still open when the parser stopped. granit yields every event before an
//! error, so this works on broken files too.

use granit_parser::{
    ErrorKind, Event, Parser, ScalarStyle, ScanError, Scanner, Span, StrInput, StructureStyle,
    TokenType,
};

use super::{Kind, Segment, YamlPath};

/// A 1-based line and column (in characters), as in a `Location`.
pub(super) type Pos = (usize, usize);

fn start_of(span: &Span) -> Pos {
    (span.start.line(), span.start.col() + 1)
}

fn end_of(span: &Span) -> Pos {
    (span.end.line(), span.end.col() + 1)
}

/// Where a key is written, and how wide it is (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) name: String,
    pub(super) at: Pos,
    pub(super) width: usize,
}

/// A value in the document: a scalar, an alias or a collection.
#[derive(Debug, Clone)]
struct Node {
    /// The collection it is in. Paths are walked up on demand rather than stored: a file of
    /// many deep values would hold a copy of its path per value.
    parent: Option<usize>,
    kind: Kind,
    start: Pos,
    /// Exclusive. For a collection still open when the parser stopped, the end of the file.
    end: Pos,
    /// A `[...]` or `{...}`.
    flow: bool,
    /// The key whose value this is.
    key: Option<Key>,
    /// For a mapping: its keys, each with the index of its value's node.
    keys: Vec<(Key, usize)>,
}

impl Node {
    /// Does this value start on `line` with something written (not an empty value)?
    fn written_on(&self, line: usize) -> bool {
        self.start.0 == line && (self.kind != Kind::Empty || self.width().is_some())
    }

    /// Its width, when it ends on the line where it starts.
    fn width(&self) -> Option<usize> {
        (self.start.0 == self.end.0 && self.end.1 > self.start.1).then(|| self.end.1 - self.start.1)
    }
}

/// A collection being read: its node (`None` for a complex key, which playbooks do not use)
/// and, in a mapping, the key waiting for its value.
struct Frame {
    node: Option<usize>,
    mapping: bool,
    key: Option<Key>,
}

/// The nodes of a YAML text, in the order they start, and how the parse ended.
pub(super) struct Events {
    nodes: Vec<Node>,
    error: Option<ScanError>,
    /// Collections open when the parser stopped, innermost last. A dedent makes the parser
    /// close collections at the error's own position before failing; those count as open.
    open_at_error: Vec<usize>,
    /// The lines of explicit `---` markers.
    document_markers: Vec<usize>,
}

impl Events {
    /// Parses `text` up to its end or its first error.
    pub(super) fn new(text: &str) -> Events {
        let mut events = Events {
            nodes: Vec::new(),
            error: None,
            open_at_error: Vec::new(),
            document_markers: Vec::new(),
        };
        let mut stack: Vec<Frame> = Vec::new();
        // Collections as they closed: where their end event was, and their node.
        let mut closed: Vec<(Pos, usize)> = Vec::new();
        for result in Parser::new_from_str(text) {
            let (event, span) = match result {
                Ok(pair) => pair,
                Err(error) => {
                    events.error = Some(error);
                    break;
                }
            };
            let (kind, flow) = match &event {
                Event::Scalar(value, style, ..) => (scalar_kind(value, *style), false),
                Event::MappingStart(style, ..) => (Kind::Mapping, *style == StructureStyle::Flow),
                Event::SequenceStart(style, ..) => (Kind::List, *style == StructureStyle::Flow),
                Event::Alias(..) => (Kind::Text, false),
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame {
                        node: Some(node), ..
                    }) = stack.pop()
                    {
                        events.nodes[node].end = end_of(&span);
                        closed.push((start_of(&span), node));
                    }
                    continue;
                }
                Event::DocumentStart(true, ..) => {
                    events.document_markers.push(span.start.line());
                    continue;
                }
                _ => continue,
            };
            let is_collection = matches!(kind, Kind::Mapping | Kind::List);
            if let Some(frame) = stack.last_mut()
                && frame.mapping
                && frame.key.is_none()
            {
                // In a mapping, every other node is a key.
                let name = match &event {
                    Event::Scalar(value, ..) => value.to_string(),
                    _ => String::new(),
                };
                frame.key = Some(Key {
                    name,
                    at: start_of(&span),
                    width: span.end.index().saturating_sub(span.start.index()),
                });
                if is_collection {
                    stack.push(Frame {
                        node: None,
                        mapping: false,
                        key: None,
                    });
                }
                continue;
            }
            let index = events.nodes.len();
            let (parent, key) = match stack.last_mut() {
                None => (None, None),
                Some(frame) => {
                    let key = frame.key.take();
                    if let (Some(key), Some(parent)) = (&key, frame.node) {
                        events.nodes[parent].keys.push((key.clone(), index));
                    }
                    (frame.node, key)
                }
            };
            events.nodes.push(Node {
                parent,
                kind,
                start: start_of(&span),
                end: end_of(&span),
                flow,
                key,
                keys: Vec::new(),
            });
            if is_collection {
                stack.push(Frame {
                    node: Some(index),
                    mapping: kind == Kind::Mapping,
                    key: None,
                });
            }
        }
        events.mark_open_at_error(&stack, &closed);
        events
    }

    /// The collections still open when the parser stopped (`stack`), and those it closed at
    /// the error's position (a dedent closes them before the error is raised): they run to
    /// the end of the file.
    fn mark_open_at_error(&mut self, stack: &[Frame], closed: &[(Pos, usize)]) {
        self.open_at_error = stack.iter().filter_map(|frame| frame.node).collect();
        if let Some(error) = &self.error {
            let at = (error.marker().line(), error.marker().col() + 1);
            let reopened = closed.iter().rev().take_while(|(end, _)| *end == at);
            self.open_at_error.extend(reopened.map(|(_, node)| *node));
        }
        for &node in &self.open_at_error {
            self.nodes[node].end = (usize::MAX, usize::MAX);
        }
    }

    /// The node at a position: the one that starts there (a block mapping starts at its first
    /// key), else the mapping that has a key there, else the value of a key just before it on
    /// the same line (serde-saphyr reports an empty value at or after its `:`), else the
    /// innermost node around it.
    fn node_at(&self, at: Pos) -> Option<&Node> {
        if let Some(node) = self.nodes.iter().rev().find(|node| node.start == at) {
            return Some(node);
        }
        if let Some(mapping) = self.mapping_with_key(at) {
            return Some(mapping);
        }
        let after_key = self.nodes.iter().rev().find(|node| {
            node.key
                .as_ref()
                .is_some_and(|key| key.at.0 == at.0 && key.at.1 < at.1)
                && (node.start >= at || node.width().is_none())
        });
        after_key.or_else(|| {
            self.nodes
                .iter()
                .rev()
                .find(|node| node.start <= at && at < node.end)
        })
    }

    /// The innermost mapping that has a key written at `at`.
    fn mapping_with_key(&self, at: Pos) -> Option<&Node> {
        self.nodes
            .iter()
            .rev()
            .find(|node| node.keys.iter().any(|(key, _)| key.at == at))
    }

    /// The keys and list items that lead to the value at a position. At a key, the path of
    /// the mapping that holds it.
    pub(super) fn path_at(&self, line: usize, column: usize) -> YamlPath {
        self.node_at((line, column))
            .map(|node| self.path(node))
            .unwrap_or_default()
    }

    /// The keys and list items from the top of the document to a node.
    fn path(&self, node: &Node) -> YamlPath {
        let mut segments = Vec::new();
        let mut current = Some(node);
        while let Some(node) = current {
            match (&node.key, node.parent) {
                (Some(key), _) => segments.push(Segment::Key(key.name.clone())),
                (None, Some(_)) => segments.push(Segment::Item),
                (None, None) => {}
            }
            current = node.parent.map(|parent| &self.nodes[parent]);
        }
        segments.reverse();
        YamlPath(segments)
    }

    /// The kind of value written at a position; text when nothing is known there.
    pub(super) fn kind_at(&self, line: usize, column: usize) -> Kind {
        self.node_at((line, column))
            .map_or(Kind::Text, |node| node.kind)
    }

    /// The width of the value that starts at a position, when it fits on its line: a plain
    /// scalar, a quoted string with its quotes, or a `[...]` or `{...}` to its bracket.
    pub(super) fn width_at(&self, line: usize, column: usize) -> Option<usize> {
        self.nodes
            .iter()
            .rev()
            .find(|node| node.start == (line, column))?
            .width()
    }

    /// For a value that starts on a later line than its key (a block value), the key.
    pub(super) fn owning_key(&self, line: usize, column: usize) -> Option<&Key> {
        let node = self.node_at((line, column))?;
        node.key.as_ref().filter(|key| key.at.0 < node.start.0)
    }

    /// If a position is at a key whose value starts on the same line, where the value starts.
    pub(super) fn value_after_key(&self, line: usize, column: usize) -> Option<Pos> {
        let mapping = self.mapping_with_key((line, column))?;
        let (_, value) = mapping
            .keys
            .iter()
            .find(|(key, _)| key.at == (line, column))?;
        let value = &self.nodes[*value];
        value.written_on(line).then_some(value.start)
    }

    /// The value of the key written at a position.
    fn value_of_key_at(&self, at: Pos) -> Option<&Node> {
        let (_, value) = self
            .mapping_with_key(at)?
            .keys
            .iter()
            .find(|(key, _)| key.at == at)?;
        self.nodes.get(*value)
    }

    /// The first key of the mapping that has a key at a position (or starts or runs there):
    /// where a missing key is best reported.
    pub(super) fn mapping_start(&self, line: usize, column: usize) -> Pos {
        let at = (line, column);
        let mapping = self
            .mapping_with_key(at)
            .or_else(|| {
                self.nodes.iter().rev().find(|node| {
                    node.kind == Kind::Mapping
                        && ((node.start <= at && at < node.end) || node.end == at)
                })
            })
            .and_then(|mapping| mapping.keys.first());
        mapping.map_or(at, |(key, _)| key.at)
    }

    /// Where the value of `key` starts, in the mapping that starts (or has its first key) at a
    /// position; an empty value is reported at its key.
    pub(super) fn value_of_key(&self, line: usize, column: usize, key: &str) -> Option<Pos> {
        let at = (line, column);
        let mapping = self.nodes.iter().rev().find(|node| {
            node.kind == Kind::Mapping
                && (node.start == at || node.keys.first().is_some_and(|(key, _)| key.at == at))
        })?;
        let (found, value) = mapping.keys.iter().find(|(found, _)| found.name == key)?;
        let value = &self.nodes[*value];
        Some(if value.written_on(found.at.0) {
            value.start
        } else {
            found.at
        })
    }

    /// For an empty value reported at `at` (its key, its `:`, or after a `-`): the value's
    /// path, its key (when it has one on that line) and where the empty value is.
    pub(super) fn empty_value(
        &self,
        line: usize,
        column: usize,
    ) -> Option<(YamlPath, Option<&Key>, Pos)> {
        let at = (line, column);
        let node = self
            .value_of_key_at(at)
            .filter(|node| node.kind == Kind::Empty)
            .or_else(|| {
                self.nodes.iter().rev().find(|node| {
                    node.kind == Kind::Empty && node.start.0 == line && node.start <= at
                })
            })?;
        let key = node.key.as_ref().filter(|key| key.at.0 == node.start.0);
        Some((self.path(node), key, node.start))
    }

    /// The `[` or `{` left open where the parser stopped: granit names it when it reaches the
    /// end of the file, else it is the innermost flow collection still open.
    pub(super) fn unclosed_bracket(&self) -> Option<Pos> {
        let error = self.error.as_ref()?;
        if let ErrorKind::UnclosedFlowCollection { .. } = error.kind() {
            return Some((error.marker().line(), error.marker().col() + 1));
        }
        self.open_at_error
            .iter()
            .rev()
            .map(|node| &self.nodes[*node])
            .find(|node| node.flow)
            .map(|node| node.start)
    }

    /// The line of the last `---` at or before `line`.
    pub(super) fn document_marker_before(&self, line: usize) -> Option<usize> {
        self.document_markers
            .iter()
            .rev()
            .find(|marker| **marker <= line)
            .copied()
    }

    /// The block levels open where the parser stopped, innermost first: the column (0-based)
    /// of a mapping's last key with the key, or of a list's `- `.
    pub(super) fn levels(&self) -> Vec<(usize, Option<String>)> {
        let mut levels = Vec::new();
        for node in self
            .open_at_error
            .iter()
            .rev()
            .map(|node| &self.nodes[*node])
        {
            if node.flow {
                continue;
            }
            match node.kind {
                Kind::Mapping => {
                    if let Some((key, _)) = node.keys.last() {
                        levels.push((key.at.1 - 1, Some(key.name.clone())));
                    }
                }
                Kind::List => levels.push((node.start.1 - 1, None)),
                _ => {}
            }
        }
        levels
    }
}

/// What a scalar is, as YAML's core schema reads it.
fn scalar_kind(value: &str, style: ScalarStyle) -> Kind {
    if style != ScalarStyle::Plain {
        return Kind::Text;
    }
    match value {
        "~" | "null" | "Null" | "NULL" | "" => Kind::Empty,
        "true" | "false" | "True" | "False" | "TRUE" | "FALSE" => Kind::Bool,
        number if number.parse::<f64>().is_ok() => Kind::Number,
        _ => Kind::Text,
    }
}

/// The quote that opens a string never closed: the scanner fails inside it, so it is the
/// first character after the last token it produced. Usually the error is reported lines
/// later (at a line indented too little to continue the string), and no token holds the
/// quote.
pub(super) fn unterminated_quote(text: &str) -> Option<(Pos, char)> {
    let last = Scanner::new(StrInput::new(text))
        .map_while(Result::ok)
        .last()?
        .span();
    // A `Value` or `-` token may be an empty span at its indicator: step over it.
    let after = last.end.index();
    let (mut line, mut column) = (1, 1);
    for (index, c) in text.chars().enumerate() {
        if index >= after
            && !c.is_whitespace()
            && !(index == after && matches!(c, ':' | '-' | ',' | '?'))
        {
            return matches!(c, '"' | '\'').then_some(((line, column), c));
        }
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    None
}

/// The `key:` written on a line, or its first scalar. The scanner keeps going where the
/// parser stopped on an indentation error, so its tokens still hold that line.
pub(super) fn key_on_line(text: &str, line: usize) -> Option<String> {
    let mut previous: Option<String> = None;
    for token in Scanner::new(StrInput::new(text)).map_while(Result::ok) {
        let (span, token) = token.into_parts();
        if span.start.line() < line {
            continue;
        }
        if span.start.line() > line {
            break;
        }
        match token {
            TokenType::Scalar(_, value) => previous = Some(value.to_string()),
            TokenType::Value => return previous.map(|key| format!("{key}:")),
            _ => {}
        }
    }
    previous
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: YamlPath) -> Vec<String> {
        path.parts().into_iter().map(str::to_string).collect()
    }

    #[test]
    fn finds_keys_values_and_items_of_a_valid_file() {
        let text = "steps:\n  - id: hello\n    run: \"echo # hi\"\n    ok_codes: [0, 1]\n";
        let events = Events::new(text);
        assert!(events.error.is_none());
        // A value, its path and its kind.
        assert_eq!(parts(events.path_at(2, 9)), ["steps", "-", "id"]);
        assert_eq!(events.kind_at(2, 9), Kind::Text);
        // At a key: the mapping that holds it.
        assert_eq!(parts(events.path_at(3, 5)), ["steps", "-"]);
        // A quoted value's width includes the quotes; a flow list's runs to its bracket.
        assert_eq!(events.width_at(3, 10), Some(11));
        assert_eq!(events.width_at(4, 15), Some(6));
        assert_eq!(events.kind_at(4, 15), Kind::List);
        assert_eq!(
            parts(events.path_at(4, 19)),
            ["steps", "-", "ok_codes", "-"]
        );
        assert_eq!(events.kind_at(4, 19), Kind::Number);
        assert_eq!(events.value_after_key(4, 5), Some((4, 15)));
        assert_eq!(events.value_of_key(2, 5, "run"), Some((3, 10)));
        assert_eq!(events.mapping_start(4, 5), (2, 5));
    }

    #[test]
    fn finds_the_key_of_a_block_value_and_empty_values() {
        let text = "name: demo\nsteps:\n  id: a\nwhen:\nlist:\n  -\n";
        let events = Events::new(text);
        let key = events.owning_key(3, 3).expect("steps owns the mapping");
        assert_eq!((key.at, key.width), ((2, 1), 5));
        assert_eq!(events.kind_at(3, 3), Kind::Mapping);
        assert_eq!(events.owning_key(1, 7), None);
        let (path, key, _) = events.empty_value(4, 1).expect("when is empty");
        assert_eq!(parts(path), ["when"]);
        assert_eq!(key.map(|key| key.at), Some((4, 1)));
        let (path, key, _) = events.empty_value(6, 4).expect("the item is empty");
        assert_eq!(parts(path), ["list", "-"]);
        assert_eq!(key, None);
    }

    #[test]
    fn finds_what_is_open_in_a_broken_file() {
        // Still open at the end of the file: granit names the bracket.
        let events = Events::new("a: 1\nb: [x, {c: d}\n");
        assert_eq!(events.unclosed_bracket(), Some((2, 4)));
        // Keys and values before the error are known, inside the open bracket too; the
        // last ones before it may not be (the parser holds a node back until it knows
        // whether a `:` makes it a key), so `{c: d}` is not there.
        assert_eq!(events.value_after_key(2, 1), Some((2, 4)));
        assert_eq!(parts(events.path_at(2, 5)), ["b", "-"]);
        assert_eq!(parts(events.path_at(2, 12)), ["b"]);
        // Open when a `:` breaks the list: the innermost flow collection still open.
        let events = Events::new("steps:\n  - run: [echo, hi\n    name: x\n");
        assert_eq!(events.unclosed_bracket(), Some((2, 10)));
        // Events before the error are kept.
        assert_eq!(parts(events.path_at(2, 11)), ["steps", "-", "run", "-"]);
        // An indentation error: the levels the line could line up with.
        let text = "steps:\n  - id: a\n    run: x\n   name: b\n";
        let events = Events::new(text);
        assert!(events.error.is_some());
        assert_eq!(
            events.levels(),
            [
                (4, Some("run".to_string())),
                (2, None),
                (0, Some("steps".to_string()))
            ]
        );
        assert_eq!(key_on_line(text, 4).as_deref(), Some("name:"));
    }

    #[test]
    fn finds_the_quote_left_open() {
        let text = "a: 1\nb: \"open\n  c: x\nd: 2\n";
        assert_eq!(unterminated_quote(text), Some(((2, 4), '"')));
        assert_eq!(
            unterminated_quote("a:\n  - 'x\nb: 1\n"),
            Some(((2, 5), '\''))
        );
        assert_eq!(unterminated_quote("a: it's fine\nb: [1\n"), None);
    }

    #[test]
    fn finds_document_markers() {
        let events = Events::new("a: 1\n---\nb: 2\n");
        assert_eq!(events.document_marker_before(3), Some(2));
        assert_eq!(events.document_marker_before(1), None);
    }
}
