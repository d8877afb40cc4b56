//! serde-saphyr errors in our words.
//!
//! The parser reports where it noticed a problem, which is not always where the problem is: an
//! unterminated quote is noticed lines later, a tab where the next line starts, a missing key
//! at the last key of the mapping. So besides rewording, this module re-reads the file with
//! serde-saphyr's own parser ([`events`]) to point at the mistake, and to find which key a
//! value belongs to (serde-saphyr does not say), so that messages can name it.

mod events;

use std::fmt;

use serde_saphyr::Error as YamlError;

use super::{Diagnostic, Location, Source, did_you_mean};
use events::Events;

/// One step on the way from the top of a document to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// The value of this key in a mapping.
    Key(String),
    /// An item of a list.
    Item,
}

/// Where a value is in a document: the keys and list items that lead to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(pub Vec<Segment>);

impl YamlPath {
    /// The path as text to match on, `-` standing for a list item: `["steps", "-", "id"]`.
    pub fn parts(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Key(key) => key.as_str(),
                Segment::Item => "-",
            })
            .collect()
    }

    /// The nearest key on the path: for an item of `ok_codes`, `ok_codes`.
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|segment| match segment {
            Segment::Key(key) => Some(key.as_str()),
            Segment::Item => None,
        })
    }

    fn is_item(&self) -> bool {
        matches!(self.0.last(), Some(Segment::Item))
    }

    fn join(&self, key: &str) -> YamlPath {
        let mut joined = self.clone();
        joined.0.push(Segment::Key(key.to_string()));
        joined
    }
}

/// How one kind of document names its parts, so that errors speak its language. Every method
/// may answer `None`; the messages then use the key names.
pub trait Vocabulary {
    /// What the whole document is ("playbook").
    fn document(&self) -> Option<&'static str> {
        None
    }
    /// A noun for the value at `path` ("step", "step id", "param type"), used in "a step must
    /// be ...", "the step id is empty", "unknown param type `x`".
    fn noun(&self, _path: &YamlPath) -> Option<&'static str> {
        None
    }
    /// What the value at `path` must be, said after "must be" ("a list of steps").
    fn expected(&self, _path: &YamlPath) -> Option<&'static str> {
        None
    }
    /// How to write the value at `path`, as a `help:` line.
    fn help(&self, _path: &YamlPath) -> Option<String> {
        None
    }
    /// The key at the end of `path` with a typical value, on one line ("name: my-playbook").
    fn example(&self, _path: &YamlPath) -> Option<&'static str> {
        None
    }
    /// The numbers the value at `path` may be, when narrower than its type says ("an exit
    /// code is 0 to 255"): the `help:` of a number out of range.
    fn range(&self, _path: &YamlPath) -> Option<&'static str> {
        None
    }
}

/// The words of a document we know nothing about: keys are named as they are written.
pub(super) struct AnyDocument;

impl Vocabulary for AnyDocument {}

/// A complaint about a value, for `serde::de::Error::custom` in our `Deserialize` impls: it
/// carries a `help:` line through serde, and [`Diagnostic::from_yaml`] splits it out again.
///
/// In the message and help, `{key}` stands for the key whose value is wrong, which a
/// `Deserialize` impl does not know.
#[derive(Debug, Clone)]
pub struct ValueError {
    message: String,
    help: String,
    key: Option<String>,
}

const HELP_MARK: &str = "\nhelp: ";
const KEY_MARK: &str = "\nkey: ";

impl ValueError {
    /// A complaint and how to fix it.
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
            help: help.into(),
            key: None,
        }
    }

    /// The complaint is about the value of `key` in the mapping being read, rather than
    /// about the mapping as a whole (where the parser would point).
    pub fn about_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// Reads one back from an error message; `None` for other messages.
    fn parse(text: &str) -> Option<ValueError> {
        let (message, rest) = text.split_once(HELP_MARK)?;
        let (help, key) = match rest.split_once(KEY_MARK) {
            Some((help, key)) => (help, Some(key)),
            None => (rest, None),
        };
        Some(ValueError {
            message: message.to_string(),
            help: help.to_string(),
            key: key.map(str::to_string),
        })
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{HELP_MARK}{}", self.message, self.help)?;
        if let Some(key) = &self.key {
            write!(f, "{KEY_MARK}{key}")?;
        }
        Ok(())
    }
}

/// The diagnostic for a serde-saphyr error, in the words of `vocabulary`.
pub(super) fn explain(
    source: &Source,
    error: &YamlError,
    vocabulary: &dyn Vocabulary,
) -> Diagnostic {
    let error = innermost(error);
    let Some(reported) = error.location().filter(|location| location.line() > 0) else {
        let message = strip_position_suffix(&error.to_string()).to_string();
        return Diagnostic::new(format!("{}: {message}", source.path))
            .help("this is not valid YAML; check the file's syntax");
    };
    let text = TextMap::new(source);
    let mut at = text.clamp(source.at_yaml(&reported));
    let explained = match error {
        YamlError::ExternalMessage { msg, .. } => {
            // The parser's span is one character; let the caret cover the token instead.
            at.width = None;
            Some(syntax_error(&text, &mut at, msg))
        }
        YamlError::Budget { breach, .. } => Some(over_budget(breach)),
        YamlError::Eof { .. } => Some((
            "the file ends in the middle of a value".to_string(),
            "check for an unclosed quote or bracket".to_string(),
        )),
        _ => document_error(error, &text, &mut at, vocabulary)
            .or_else(|| key_error(error, &text, &mut at, vocabulary))
            .or_else(|| value_error(error, &text, &mut at, vocabulary)),
    };
    let (message, help) = explained.unwrap_or_else(|| {
        (
            strip_position_suffix(&error.to_string()).to_string(),
            "this is not valid here; check the YAML around this position".to_string(),
        )
    });
    Diagnostic::at(at, message).help(help)
}

/// The errors about the file as a whole: several documents, anchors, duplicate keys.
fn document_error(
    error: &YamlError,
    text: &TextMap,
    at: &mut Location,
    vocabulary: &dyn Vocabulary,
) -> Option<(String, String)> {
    Some(match error {
        YamlError::MultipleDocuments { .. } => {
            if let Some(line) = text.events.document_marker_before(at.line) {
                *at = text.point(line, 1, 3);
            }
            match vocabulary.document() {
                Some(document) => (
                    format!("a {document} is one YAML document, but this file has several"),
                    format!("remove the `---` line, or put each {document} in its own file"),
                ),
                None => (
                    "this file has several YAML documents, but only one is expected".to_string(),
                    "remove the `---` line, or split the file".to_string(),
                ),
            }
        }
        YamlError::UnknownAnchor { .. } => {
            let alias = text.word_at(at.line, at.column);
            (
                format!("unknown anchor `{alias}`"),
                format!(
                    "`*name` needs an earlier `&name`; to write a literal `*`, quote the value: \
                     `\"{alias}\"`"
                ),
            )
        }
        YamlError::DuplicateMappingKey { key, .. } => (
            match key {
                Some(key) => format!("duplicate key `{key}`"),
                None => "duplicate key".to_string(),
            },
            "a key may appear only once in a mapping; remove or rename one of them".to_string(),
        ),
        _ => return None,
    })
}

/// The errors about keys: unknown, missing, or an unknown variant of a value that names one.
fn key_error(
    error: &YamlError,
    text: &TextMap,
    at: &mut Location,
    vocabulary: &dyn Vocabulary,
) -> Option<(String, String)> {
    Some(match error {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            let help = match (did_you_mean(field, expected), expected.as_slice()) {
                (Some(close), _) => format!("did you mean `{close}`?"),
                (None, []) => "no keys are allowed here".to_string(),
                (None, [only]) => format!("the only key allowed here is `{only}`"),
                (None, candidates) => format!("known keys here: {}", candidates.join(", ")),
            };
            (format!("unknown key `{field}`"), help)
        }
        YamlError::SerdeMissingField { field, .. } => {
            let (line, column) = text.events.mapping_start(at.line, at.column);
            *at = text.point(line, column, 0);
            let path = text.events.path_at(line, column);
            missing_key(vocabulary, &path, field)
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let path = text.events.path_at(at.line, at.column);
            let message = match (vocabulary.noun(&path), path.last_key()) {
                (Some(noun), _) => format!("unknown {noun} `{variant}`"),
                (None, Some(key)) => format!("`{key}` cannot be `{variant}`"),
                (None, None) => format!("unknown value `{variant}`"),
            };
            let help = match did_you_mean(variant, expected) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("use one of: {}", expected.join(", ")),
            };
            (message, help)
        }
        _ => return None,
    })
}

/// The errors about values: empty, of the wrong kind, not a valid scalar, or refused by the type that reads them.
fn value_error(
    error: &YamlError,
    text: &TextMap,
    at: &mut Location,
    vocabulary: &dyn Vocabulary,
) -> Option<(String, String)> {
    Some(match error {
        YamlError::NullIntoString { .. } => {
            let explained;
            (*at, explained) = empty(vocabulary, text, at);
            explained
        }
        YamlError::Unexpected { expected, .. } => {
            let wanted = match *expected {
                "mapping start" | "empty mapping start" => Kind::Mapping,
                "sequence start" => Kind::List,
                "string scalar" | "str expected" | "missing string" => Kind::Text,
                "bool expected" | "missing bool" => Kind::Bool,
                _ => Kind::Value,
            };
            let found = text.events.kind_at(at.line, at.column);
            if found == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.events.path_at(at.line, at.column);
                // A block value starts on the line after its key; point at the key.
                if let Some(key) = text.events.owning_key(at.line, at.column) {
                    *at = text.point(key.at.0, key.at.1, key.width);
                }
                wrong_kind(vocabulary, text, at, &path, wanted.phrase(), found)
            }
        }
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => {
            // serde-saphyr may report these at the key; the mistake is in its value.
            if let Some((line, column)) = text.events.value_after_key(at.line, at.column) {
                *at = text.value_point(line, column);
            }
            let found = Kind::from_serde(unexpected);
            if found == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.events.path_at(at.line, at.column);
                let expected = plain_expected(expected);
                wrong_kind(vocabulary, text, at, &path, &expected, found)
            }
        }
        YamlError::InvalidScalar { ty, .. } => {
            if text.events.kind_at(at.line, at.column) == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.events.path_at(at.line, at.column);
                invalid_scalar(vocabulary, text, at, &path, ty)
            }
        }
        YamlError::Message { msg, .. } => match ValueError::parse(msg) {
            Some(complaint) => {
                if let Some(key) = &complaint.key
                    && let Some((line, column)) = text.events.value_of_key(at.line, at.column, key)
                {
                    *at = text.value_point(line, column);
                }
                let path = text.events.path_at(at.line, at.column);
                let key = path.last_key().unwrap_or("value");
                let fill = |template: &str| template.replace("{key}", key);
                (fill(&complaint.message), fill(&complaint.help))
            }
            None => (
                msg.clone(),
                "see the README for how to write this value".to_string(),
            ),
        },
        _ => return None,
    })
}

/// The error itself, without the wrappers that add snippets or alias positions.
fn innermost(error: &YamlError) -> &YamlError {
    match error.without_snippet() {
        YamlError::AliasError { error, .. } => innermost(error),
        other => other,
    }
}

/// serde-saphyr appends " at line L, column C" to messages; we show the position ourselves.
fn strip_position_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(", column ") => &message[..index],
        _ => message,
    }
}

/// The YAML parser's own errors, keyed by its exact wording: the message and the help, with
/// `at` moved to where the mistake was made when the parser found it later.
fn syntax_error(text: &TextMap, at: &mut Location, message: &str) -> (String, String) {
    if let Some((message, help)) = fixed_wording(message) {
        return (message.to_string(), help.to_string());
    }
    match message {
        "while scanning a plain scalar, found a tab"
        | "tabs disallowed within this context (block indentation)"
        | "tabs disallowed in this context"
        | "tab cannot be used as indentation" => {
            if let Some((line, column)) = text.tab_from(at.line) {
                *at = text.point(line, column, 1);
            }
            (
                "tabs are not allowed for indentation in YAML".to_string(),
                "indent with spaces".to_string(),
            )
        }
        "unclosed quote"
        | "invalid indentation in multiline quoted scalar"
        | "while scanning a quoted scalar, found unexpected document indicator" => {
            unterminated_quote(text, at)
        }
        "illegal placement of ':' indicator"
        | "while parsing a flow sequence, expected ',' or ']'"
        | "while parsing a flow mapping, did not find expected ',' or '}'"
        | "unexpected EOF while parsing a flow sequence"
        | "unexpected EOF while parsing a flow mapping"
        | "unexpected EOF while parsing an implicit flow mapping"
        | "unclosed bracket '['"
        | "unclosed bracket '{'" => broken_brackets(text, at, message),
        "while parsing a block collection, did not find expected '-' indicator" => {
            let subject = text.key_or_word(at.line);
            (
                format!("`{subject}` is not lined up with the list above it"),
                text.indentation_help(at.line, &subject),
            )
        }
        "while parsing a block mapping, did not find expected key" | "invalid indentation" => {
            let subject = text.key_or_word(at.line);
            (
                format!("`{subject}` is not lined up with the keys above it"),
                text.indentation_help(at.line, &subject),
            )
        }
        "simple key expected ':'" => {
            let line: String = text.line(at.line).iter().collect();
            (
                "this line is not a `key: value` pair".to_string(),
                missing_colon_help(line.trim()),
            )
        }
        "misplaced bracket" => (
            format!(
                "`{}` closes nothing",
                text.char_at(at.line, at.column).unwrap_or(']')
            ),
            "remove it, or add the bracket that it closes".to_string(),
        ),
        other if other.starts_with("mismatched bracket") => (
            "a bracket is closed by the wrong kind of bracket".to_string(),
            "close a mapping `{` with `}` and a list `[` with `]`".to_string(),
        ),
        other if other.starts_with("unexpected character") => (
            format!(
                "`{}` cannot start a value",
                text.char_at(at.line, at.column).unwrap_or(' ')
            ),
            "quote the value".to_string(),
        ),
        other => (
            format!("invalid YAML: {other}"),
            "check the indentation and quoting around this position".to_string(),
        ),
    }
}

/// The parser's messages whose wording and help do not depend on the text around them.
fn fixed_wording(message: &str) -> Option<(&'static str, &'static str)> {
    Some(match message {
        "mapping values are not allowed in this context" => (
            "a `key: value` cannot start here",
            "if this is text, quote the whole value; if it is a nested key, put it on its own \
             line, indented under its parent",
        ),
        "invalid trailing content after double-quoted scalar"
        | "invalid trailing content after single-quoted scalar" => (
            "unexpected text after the closing quote",
            "put the whole value inside the quotes",
        ),
        "\"-\" is only valid inside a block"
        | "block sequence entries are not allowed in this context" => (
            "a `- ` list item cannot go here",
            "start each `- ` item on its own line, indented under its key; inside `[...]`, \
             separate items with `,`",
        ),
        "while scanning a block scalar, did not find expected comment or line break" => (
            "`|` or `>` starts a block of text, and must end its line",
            "put the text on the lines below, indented; or quote the value if it starts with \
             `|` or `>`",
        ),
        "while scanning an anchor or alias, did not find expected alphabetic or numeric character" => {
            (
                "`&` and `*` must be followed by an anchor's name",
                "quote the value if `&` or `*` is part of the text",
            )
        }
        "comments must be separated from other tokens by whitespace" => (
            "a `#` starts a comment only after a space",
            "put a space before `#`, or quote the value if `#` is part of it",
        ),
        _ => return None,
    })
}

/// A quoted string the parser ran off the end of: points at its opening quote when it can
/// find it, else says the continuation lines are not indented enough.
fn unterminated_quote(text: &TextMap, at: &mut Location) -> (String, String) {
    match events::unterminated_quote(&text.source.text) {
        Some(((line, column), quote)) => {
            *at = text.point(line, column, 1);
            (
                "unterminated quoted string".to_string(),
                format!("close the string with a matching `{quote}`"),
            )
        }
        None => (
            "the lines of this quoted string are not indented enough".to_string(),
            "indent the continuation lines of a quoted string more than its key".to_string(),
        ),
    }
}

/// A `[...]` or `{...}` the parser found broken: points at the bracket left open when there
/// is one.
fn broken_brackets(text: &TextMap, at: &mut Location, message: &str) -> (String, String) {
    let bracket = text
        .events
        .unclosed_bracket()
        .and_then(|(line, column)| Some((line, column, text.char_at(line, column)?)));
    match bracket {
        Some((line, column, bracket)) => {
            *at = text.point(line, column, 1);
            let (what, close) = if bracket == '[' {
                ("list", ']')
            } else {
                ("mapping", '}')
            };
            (
                format!("unclosed `{bracket}`"),
                format!("close the {what} with `{close}`"),
            )
        }
        None if message.starts_with("illegal placement") => (
            "a `:` cannot go here".to_string(),
            "quote the value if the `:` is part of the text".to_string(),
        ),
        None => (
            "expected `,` or a closing bracket".to_string(),
            "separate the items of `[...]` and `{...}` with `,`".to_string(),
        ),
    }
}

/// The kind of a value, as the user wrote it or as a key needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mapping,
    List,
    Text,
    Number,
    Bool,
    Empty,
    /// A single value (for "expected scalar").
    Value,
}

impl Kind {
    fn phrase(self) -> &'static str {
        match self {
            Kind::Mapping => "a mapping",
            Kind::List => "a list",
            Kind::Text => "a string",
            Kind::Number => "a number",
            Kind::Bool => "true or false",
            Kind::Empty => "empty",
            Kind::Value => "a single value",
        }
    }

    /// From serde's description of what it found: "map", "integer `42`", "string \"x\"".
    fn from_serde(unexpected: &str) -> Kind {
        let word = unexpected.split([' ', '`']).next().unwrap_or_default();
        match word {
            "map" => Kind::Mapping,
            "sequence" => Kind::List,
            "integer" | "floating" => Kind::Number,
            "boolean" => Kind::Bool,
            "unit" | "null" | "Option" | "option" => Kind::Empty,
            _ => Kind::Text,
        }
    }
}

/// How to fix a line that should be `key: value`.
fn missing_colon_help(line: &str) -> String {
    let line = line.trim_start_matches("- ");
    match line.split_once(':') {
        Some((key, value)) if !value.starts_with(' ') && !key.contains(' ') => {
            format!("put a space after the `:`: `{key}: {value}`")
        }
        _ => match line.split_once(' ') {
            Some((key, value)) => format!("add a `:` after the key: `{key}: {}`", value.trim()),
            None => format!(
                "write it as `key: value`, e.g. `{line}: ...`, or join it to the line above"
            ),
        },
    }
}

/// serde's description of what a type wants, without Rust's names for types.
fn plain_expected(expected: &str) -> String {
    let expected = expected.trim();
    if expected.starts_with("struct ") || expected.starts_with("a map") || expected == "map" {
        return "a mapping".to_string();
    }
    match expected {
        "a sequence" | "sequence" => "a list".to_string(),
        "a string" | "string" | "a borrowed string" => "a string".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        other => other.to_string(),
    }
}

/// "the step id", "an item of `ok_codes`", "`retries`": what a sentence is about.
fn subject(vocabulary: &dyn Vocabulary, path: &YamlPath, article: &str) -> String {
    if let Some(noun) = vocabulary.noun(path) {
        return format!("{article} {noun}");
    }
    match path.last_key() {
        Some(key) if path.is_item() => format!("an item of `{key}`"),
        Some(key) => format!("`{key}`"),
        None => "the value".to_string(),
    }
}

/// A help line from the vocabulary: its help, or an example, or `fallback`.
fn help_for(vocabulary: &dyn Vocabulary, path: &YamlPath, fallback: String) -> String {
    vocabulary
        .help(path)
        .or_else(|| {
            vocabulary
                .example(path)
                .map(|example| format!("for example `{example}`"))
        })
        .unwrap_or(fallback)
}

fn missing_key(vocabulary: &dyn Vocabulary, path: &YamlPath, key: &str) -> (String, String) {
    let message = match vocabulary.noun(path) {
        Some(noun) => format!("the {noun} has no `{key}`"),
        None => format!("missing key `{key}`"),
    };
    let place = if path.0.is_empty() {
        "at the top level".to_string()
    } else {
        match vocabulary.noun(path) {
            Some(noun) => format!("to the {noun}"),
            None => "to this mapping".to_string(),
        }
    };
    let line = match vocabulary.example(&path.join(key)) {
        Some(example) => example.to_string(),
        None => format!("{key}:"),
    };
    (message, format!("add `{line}` {place}"))
}

/// An empty value where one is needed: where to point, the message and the help.
fn empty(
    vocabulary: &dyn Vocabulary,
    text: &TextMap,
    at: &Location,
) -> (Location, (String, String)) {
    let chars = text.line(at.line);
    let index = at.column.saturating_sub(1);
    // A `:` with no key before it reads as an empty key with an empty value.
    if chars.get(index) == Some(&':') && content_start(chars) == index {
        return (
            text.point(at.line, at.column, 1),
            (
                "this `:` has no key before it".to_string(),
                "write `key: value`, or remove the `:`".to_string(),
            ),
        );
    }
    let (at, path) = text.empty_value_at(at);
    (at, empty_value(vocabulary, &path))
}

fn empty_value(vocabulary: &dyn Vocabulary, path: &YamlPath) -> (String, String) {
    let message = format!("{} is empty", subject(vocabulary, path, "the"));
    let fallback = match path.last_key() {
        Some(key) => format!("give `{key}` a value, or remove it"),
        None => "write a value here, or remove this line".to_string(),
    };
    (message, help_for(vocabulary, path, fallback))
}

fn wrong_kind(
    vocabulary: &dyn Vocabulary,
    text: &TextMap,
    at: &Location,
    path: &YamlPath,
    expected: &str,
    found: Kind,
) -> (String, String) {
    let expected = vocabulary.expected(path).unwrap_or(expected);
    let message = format!(
        "{} must be {expected}, not {}",
        subject(vocabulary, path, "a"),
        found.phrase()
    );
    let flow = text.char_at(at.line, at.column);
    if found == Kind::Text && expected.contains("mapping") && text.missing_colon(at.line) {
        let written: String = text.line(at.line).iter().collect();
        return (message, missing_colon_help(written.trim()));
    }
    let fallback = match found {
        // `{a: b}` or `[a]` where text was meant: braces and brackets need quotes.
        Kind::Mapping | Kind::List if matches!(flow, Some('{' | '[')) => {
            format!("quote it if it is text: `\"{}\"`", text.token(at))
        }
        _ => match expected {
            "a mapping" => "write `key: value` pairs, one per line, indented under the key".into(),
            "a list" => "write `[a, b]`, or one `- item` per line, indented under the key".into(),
            other => format!("write {other} here"),
        },
    };
    (message, help_for(vocabulary, path, fallback))
}

/// A YAML safety limit of serde-saphyr that the file went over (an alias bomb: anchors that
/// repeat each other multiply into millions of values), said with the limit.
fn over_budget(breach: &serde_saphyr::budget::BudgetBreach) -> (String, String) {
    use serde_saphyr::budget::BudgetBreach;
    let limits = serde_saphyr::Budget::default();
    let aliases = "aliases (`*name`) that repeat an anchor (`&name`) which itself holds aliases \
                   multiply the values; write the values out, or alias each anchor fewer times";
    match breach {
        BudgetBreach::Nodes { .. } => (
            format!(
                "too many YAML nodes (over {}): alias expansion?",
                thousands(limits.max_nodes)
            ),
            aliases.to_string(),
        ),
        BudgetBreach::Aliases { .. } | BudgetBreach::AliasAnchorRatio { .. } => (
            "too many aliases (`*name`) for the anchors they repeat: alias expansion?".to_string(),
            aliases.to_string(),
        ),
        BudgetBreach::RecordedAnchorEvents { .. } | BudgetBreach::RecordedAnchorBytes { .. } => (
            "the anchors (`&name`) hold too much to repeat: alias expansion?".to_string(),
            aliases.to_string(),
        ),
        BudgetBreach::Depth { .. } => (
            format!(
                "the YAML is nested too deeply (over {} levels)",
                limits.max_depth
            ),
            "flatten the structure; a playbook needs only a few levels".to_string(),
        ),
        other => (
            format!("the file is over a YAML size limit ({other:?})"),
            "a playbook is a few thousand lines at most; check that this is the right file"
                .to_string(),
        ),
    }
}

/// 250000 as `250,000`.
fn thousands(number: usize) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn invalid_scalar(
    vocabulary: &dyn Vocabulary,
    text: &TextMap,
    at: &Location,
    path: &YamlPath,
    ty: &str,
) -> (String, String) {
    let written = text.token(at);
    let bare = written.trim_matches(|c| c == '"' || c == '\'');
    let subject = subject(vocabulary, path, "the");
    let example = |fallback: &str| {
        vocabulary
            .example(path)
            .map(|example| format!("for example `{example}`"))
            .unwrap_or_else(|| fallback.to_string())
    };
    let unsigned = ty.starts_with('u');
    let whole = matches!(
        ty,
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
    );
    if whole {
        if let Ok(number) = bare.parse::<i128>() {
            let range = vocabulary.range(path);
            if number < 0 && unsigned {
                return (
                    format!("{subject} cannot be negative"),
                    range.unwrap_or("use 0 or more").to_string(),
                );
            }
            if written != bare {
                return (
                    format!("{subject} must be a number, not text"),
                    format!("remove the quotes: `{bare}`"),
                );
            }
            return (
                format!("{subject} is too large: `{bare}`"),
                range.map_or_else(|| example("use a smaller number"), str::to_string),
            );
        }
        return (
            format!("{subject} must be a whole number, not `{written}`"),
            example("write a whole number such as `3`, without quotes"),
        );
    }
    let wanted = match ty {
        "bool" | "boolean" => "true or false",
        "f32" | "f64" => "a number",
        "char" => "a single character",
        _ => "a different value",
    };
    (
        format!("{subject} must be {wanted}, not `{written}`"),
        example(&format!("write {wanted} here")),
    )
}

/// The source split into lines of characters, and what granit-parser's events say is where.
///
/// Most questions (which keys lead to a value, what kind it is, which bracket or quote is
/// left open, which levels a line could line up with) are answered by [`Events`]. A few stay
/// with the text, because the parser's events do not hold the answer:
/// - where the tab is: granit reports the start of the scalar before it, and a tab is no
///   token;
/// - whether a line is `key: value` with its `:` left out: a guess from how the line and its
///   neighbours look, not a fact about the structure;
/// - the `-` of an empty list item, which no event covers (the empty value is after it).
struct TextMap<'a> {
    source: &'a Source,
    lines: Vec<Vec<char>>,
    events: Events,
}

impl<'a> TextMap<'a> {
    fn new(source: &'a Source) -> Self {
        TextMap {
            source,
            lines: source
                .text
                .lines()
                .map(|line| line.chars().collect())
                .collect(),
            events: Events::new(&source.text),
        }
    }

    /// Line `line` (1-based); empty past the end.
    fn line(&self, line: usize) -> &[char] {
        line.checked_sub(1)
            .and_then(|index| self.lines.get(index))
            .map_or(&[], Vec::as_slice)
    }

    fn char_at(&self, line: usize, column: usize) -> Option<char> {
        self.line(line).get(column.checked_sub(1)?).copied()
    }

    /// A position in the file; `width` 0 leaves the caret to the token there.
    fn point(&self, line: usize, column: usize, width: usize) -> Location {
        let at = self.source.at(line as u64, column as u64);
        if width > 0 { at.with_width(width) } else { at }
    }

    /// The position of a value, underlining all of it when it fits on its line: a plain
    /// scalar, a quoted string, a `[...]` or `{...}`.
    fn value_point(&self, line: usize, column: usize) -> Location {
        let width = self.events.width_at(line, column).unwrap_or(0);
        self.clamp(self.point(line, column, width))
    }

    /// For an empty value (`id:` or a lone `-`), where to point and the value's path. The
    /// parser reports the `:` or the end of the line; the key or the `-` is clearer.
    fn empty_value_at(&self, at: &Location) -> (Location, YamlPath) {
        let Some((path, key, (line, column))) = self.events.empty_value(at.line, at.column) else {
            return (at.clone(), self.events.path_at(at.line, at.column));
        };
        if let Some(key) = key {
            return (self.point(key.at.0, key.at.1, key.width), path);
        }
        // An empty list item: no event covers its `-`, the last thing written before it.
        let chars = self.line(line);
        let end = column.min(chars.len());
        let dash = chars[..end]
            .iter()
            .rposition(|c| !c.is_whitespace())
            .filter(|index| chars[*index] == '-');
        match dash {
            Some(index) => (self.point(line, index + 1, 1), path),
            None => (at.clone(), path),
        }
    }

    /// Is this line (not a `- ` item) a `key: value` with its `:` missing? It is when the
    /// lines next to it, at its indentation, are `key: value` pairs.
    fn missing_colon(&self, line: usize) -> bool {
        let chars = self.line(line);
        if starts_with_dash(chars) || key_at(chars, indent_of(chars)).is_some() {
            return false;
        }
        let indent = indent_of(chars);
        let neighbour = |numbers: &mut dyn Iterator<Item = usize>| {
            numbers
                .map(|number| self.line(number))
                .find(|other| !blank(other))
                .is_some_and(|other| {
                    indent_of(other) == indent
                        && !starts_with_dash(other)
                        && key_at(other, indent).is_some()
                })
        };
        neighbour(&mut (line + 1..=self.lines.len())) || neighbour(&mut (1..line).rev())
    }

    /// A position past the end of the file moves to the end of its last line.
    fn clamp(&self, mut at: Location) -> Location {
        if at.line > self.lines.len()
            && let Some(index) = self.lines.iter().rposition(|line| !blank(line))
        {
            at.line = index + 1;
            at.column = self.lines[index].len() + 1;
            at.width = None;
        }
        at
    }

    /// The value as written at a position: the caret's extent.
    fn token(&self, at: &Location) -> String {
        let line: String = self.line(at.line).iter().collect();
        let width = at
            .width
            .unwrap_or_else(|| super::token_width(&line, at.column));
        line.chars()
            .skip(at.column.saturating_sub(1))
            .take(width)
            .collect()
    }

    /// `*name` or any word at a position.
    fn word_at(&self, line: usize, column: usize) -> String {
        self.line(line)
            .iter()
            .skip(column.saturating_sub(1))
            .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
            .collect()
    }

    /// The `key:` a line starts with, or its first word.
    fn key_or_word(&self, line: usize) -> String {
        events::key_on_line(&self.source.text, line)
            .unwrap_or_else(|| self.word_at(line, content_start(self.line(line)) + 1))
    }

    /// The first tab in the indentation of a line, from `line` on.
    fn tab_from(&self, line: usize) -> Option<(usize, usize)> {
        (line..=self.lines.len()).find_map(|number| {
            let chars = self.line(number);
            chars
                .iter()
                .take_while(|c| c.is_whitespace())
                .position(|c| *c == '\t')
                .map(|index| (number, index + 1))
        })
    }

    /// How to indent a line that does not fit the block above it.
    fn indentation_help(&self, line: usize, subject: &str) -> String {
        let indent = indent_of(self.line(line));
        // The levels open where the parser stopped, innermost first: a key's column, or a `- `.
        let levels = self.events.levels();
        let spaces = |n: usize| match n {
            0 => "no spaces".to_string(),
            1 => "1 space".to_string(),
            n => format!("{n} spaces"),
        };
        let key_level = |(level, key): &(usize, Option<String>)| Some((*level, key.clone()?));
        let deeper = levels
            .iter()
            .filter_map(key_level)
            .filter(|(level, _)| *level > indent)
            .min_by_key(|(level, _)| *level);
        // The innermost level at or left of the line: a list (start an item) or a key.
        let below = levels
            .iter()
            .filter(|(level, _)| *level <= indent)
            .max_by_key(|(level, _)| *level);
        let mut options: Vec<String> = Vec::new();
        if let Some((level, key)) = deeper {
            options.push(format!(
                "indent `{subject}` by {} to line it up with `{key}:`",
                spaces(level)
            ));
        }
        match below {
            Some((level, None)) => {
                options.push(format!(
                    "start a new list item with `- ` at {}",
                    spaces(*level)
                ));
            }
            Some((level, Some(key))) if *level < indent => {
                let verb = if options.is_empty() {
                    format!("indent `{subject}` by")
                } else {
                    "by".to_string()
                };
                options.push(format!(
                    "{verb} {} to line it up with `{key}:`",
                    spaces(*level)
                ));
            }
            _ => {}
        }
        if options.is_empty() {
            return "YAML nests by indentation: line this up with the keys it belongs with"
                .to_string();
        }
        format!("YAML nests by indentation: {}", options.join(", or "))
    }
}

// How a line looks, for the guesses that stay with the text (see `TextMap`).

fn blank(chars: &[char]) -> bool {
    let start = content_start(chars);
    start >= chars.len() || chars[start] == '#'
}

fn indent_of(chars: &[char]) -> usize {
    chars.iter().take_while(|c| **c == ' ').count()
}

/// Where the content of a line starts, after its indentation and any `- `.
fn content_start(chars: &[char]) -> usize {
    let mut index = indent_of(chars);
    while index < chars.len()
        && chars[index] == '-'
        && chars.get(index + 1).is_none_or(|c| *c == ' ')
    {
        index += 1;
        index += chars[index..].iter().take_while(|c| **c == ' ').count();
    }
    index
}

fn starts_with_dash(chars: &[char]) -> bool {
    let index = indent_of(chars);
    chars.get(index) == Some(&'-') && chars.get(index + 1).is_none_or(|c| *c == ' ')
}

/// A `key:` starting at `index` (plain or quoted): the key and the index after the `:`. Only
/// for the missing-colon guess: which keys a file has comes from its events.
fn key_at(chars: &[char], index: usize) -> Option<(String, usize)> {
    let first = *chars.get(index)?;
    let (key, mut after) = if first == '"' || first == '\'' {
        let close = chars[index + 1..].iter().position(|c| *c == first)? + index + 1;
        (
            chars[index + 1..close].iter().collect::<String>(),
            close + 1,
        )
    } else {
        if matches!(
            first,
            '-' | '[' | '{' | '#' | '&' | '*' | '!' | '|' | '>' | ' '
        ) {
            return None;
        }
        let mut end = index;
        while end < chars.len() {
            let c = chars[end];
            if c == ':'
                && chars
                    .get(end + 1)
                    .is_none_or(|c| c.is_whitespace() || *c == ',')
            {
                break;
            }
            if c == '#' && end > 0 && chars[end - 1] == ' ' {
                return None;
            }
            end += 1;
        }
        if end >= chars.len() {
            return None;
        }
        (chars[index..end].iter().collect::<String>(), end)
    };
    after += chars[after..].iter().take_while(|c| **c == ' ').count();
    let key = key.trim();
    if chars.get(after) != Some(&':') || key.is_empty() {
        return None;
    }
    Some((key.to_string(), after + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::new("t.yaml", text)
    }

    fn path(text: &str, line: usize, column: usize) -> Vec<String> {
        TextMap::new(&source(text))
            .events
            .path_at(line, column)
            .parts()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn finds_the_key_a_value_belongs_to() {
        let text = "steps:\n  - id: hello\n    run:\n      ok_codes: 1\n  - echo bye\n";
        assert_eq!(path(text, 4, 17), ["steps", "-", "run", "ok_codes"]);
        assert_eq!(path(text, 5, 5), ["steps", "-"]);
        assert_eq!(path(text, 2, 9), ["steps", "-", "id"]);
        // A list at its key's indentation.
        assert_eq!(path("steps:\n- id: a\n", 2, 7), ["steps", "-", "id"]);
        // Flow style.
        assert_eq!(
            path("params:\n  ratio: {type: float, default: 0.5}\n", 2, 17),
            ["params", "ratio", "type"]
        );
        assert_eq!(path("run: [echo, {a: b}]\n", 1, 13), ["run", "-"]);
    }

    #[test]
    fn finds_the_start_of_a_mapping() {
        let text = "runbook: 1\nsteps:\n  - id: a\n  - name: b\n    run: [x]\n";
        let text = source(text);
        let map = TextMap::new(&text);
        assert_eq!(map.events.mapping_start(5, 5), (4, 5));
        assert_eq!(map.events.mapping_start(2, 1), (1, 1));
        let flow = source("a: {b: 1, c: 2}\n");
        assert_eq!(TextMap::new(&flow).events.mapping_start(1, 11), (1, 5));
    }

    #[test]
    fn finds_what_the_parser_noticed_late() {
        // A file breaks at its first mistake, so each question has its own file: the `[` that
        // used to follow the open quote here is inside the string for the parser.
        let text = "a: 1\nb: \"open\n  c: [x, y\nd: 2\n";
        assert_eq!(events::unterminated_quote(text), Some(((2, 4), '"')));
        let text = Events::new("a: 1\nb:\n  c: [x, y\nd: 2\n");
        assert_eq!(text.unclosed_bracket(), Some((3, 6)));
        // Quotes and brackets inside text do not count.
        let text = "a: it's [fine]\nb: \"x [\" \nc: [1\n";
        assert_eq!(events::unterminated_quote(text), None);
        assert_eq!(Events::new(text).unclosed_bracket(), Some((3, 4)));
        let text = source("a:\n  b: 1\n\tc: 2\n");
        let map = TextMap::new(&text);
        assert_eq!(map.tab_from(2), Some((3, 1)));
    }

    #[test]
    fn tells_what_kind_of_value_is_written() {
        let text = source("a: [1]\nb:\n  c: 1\nd: -1\ne:\nf: x y\n");
        let map = TextMap::new(&text);
        assert_eq!(map.events.kind_at(1, 4), Kind::List);
        assert_eq!(map.events.kind_at(2, 3), Kind::Mapping);
        assert_eq!(map.events.kind_at(4, 4), Kind::Number);
        assert_eq!(map.events.kind_at(5, 3), Kind::Empty);
        assert_eq!(map.events.kind_at(6, 4), Kind::Text);
    }

    #[test]
    fn value_errors_travel_through_serde() {
        let complaint =
            ValueError::new("`{key}` is empty", "write `{key}: x`").about_key("command");
        let parsed = ValueError::parse(&complaint.to_string()).expect("round trip");
        assert_eq!(parsed.message, "`{key}` is empty");
        assert_eq!(parsed.help, "write `{key}: x`");
        assert_eq!(parsed.key.as_deref(), Some("command"));
        assert!(ValueError::parse("some other message").is_none());
    }

    #[test]
    fn speaks_plainly_about_types() {
        assert_eq!(plain_expected("struct ParamSpec"), "a mapping");
        assert_eq!(plain_expected("u32"), "a whole number, 0 or more");
        assert_eq!(Kind::from_serde("integer `42`"), Kind::Number);
        assert_eq!(Kind::from_serde("map"), Kind::Mapping);
    }

    #[test]
    fn suggests_the_missing_colon() {
        assert_eq!(
            missing_colon_help("runbook 1"),
            "add a `:` after the key: `runbook: 1`"
        );
        assert_eq!(
            missing_colon_help("name:demo"),
            "put a space after the `:`: `name: demo`"
        );
        let text = source("runbook 1\nname: demo\nsteps:\n  - echo bye\n");
        let map = TextMap::new(&text);
        assert!(map.missing_colon(1));
        assert!(!map.missing_colon(4));
    }
}
