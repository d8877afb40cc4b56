//! serde-saphyr errors in our words.
//!
//! The parser reports where it noticed a problem, which is not always where the problem is: an
//! unterminated quote is noticed lines later, a tab where the next line starts, a missing key
//! at the last key of the mapping. So besides rewording, this module looks at the source text
//! around the reported position to point at the mistake, and finds which key a value belongs
//! to (serde-saphyr does not say), so that messages can name it.

use std::fmt;

use serde_saphyr::Error as YamlError;

use super::{Diagnostic, Location, Source, did_you_mean};

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
            if let Some(line) = text.document_marker_before(at.line) {
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
            let (line, column) = text.mapping_start(at.line, at.column);
            *at = text.point(line, column, 0);
            let path = text.path_at(line, column);
            missing_key(vocabulary, &path, field)
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let path = text.path_at(at.line, at.column);
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
            let found = text.kind_at(at.line, at.column);
            if found == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.path_at(at.line, at.column);
                // A block value starts on the line after its key; point at the key.
                if let Some((line, column, width)) = text.owning_key(at.line, at.column) {
                    *at = text.point(line, column, width);
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
            if let Some(column) = text.value_after_key(at.line, at.column) {
                *at = text.value_point(at.line, column);
            }
            let found = Kind::from_serde(unexpected);
            if found == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.path_at(at.line, at.column);
                let expected = plain_expected(expected);
                wrong_kind(vocabulary, text, at, &path, &expected, found)
            }
        }
        YamlError::InvalidScalar { ty, .. } => {
            if text.kind_at(at.line, at.column) == Kind::Empty {
                let explained;
                (*at, explained) = empty(vocabulary, text, at);
                explained
            } else {
                let path = text.path_at(at.line, at.column);
                invalid_scalar(vocabulary, text, at, &path, ty)
            }
        }
        YamlError::Message { msg, .. } => match ValueError::parse(msg) {
            Some(complaint) => {
                if let Some(key) = &complaint.key
                    && let Some((line, column)) = text.value_of_key(at.line, at.column, key)
                {
                    *at = text.value_point(line, column);
                }
                let path = text.path_at(at.line, at.column);
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
    match text.unterminated_quote_before(at.line, at.column) {
        Some((line, column, quote)) => {
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
    match text.unclosed_bracket_before(at.line, at.column) {
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

/// The source split into lines of characters, with the scans that find what the parser meant.
struct TextMap<'a> {
    source: &'a Source,
    lines: Vec<Vec<char>>,
}

/// A node on a line: where it starts (0-based character index) and what it is.
type Node = (usize, Segment);

impl<'a> TextMap<'a> {
    fn new(source: &'a Source) -> Self {
        TextMap {
            source,
            lines: source
                .text
                .lines()
                .map(|line| line.chars().collect())
                .collect(),
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

    /// The position of a value, underlining all of it: a plain scalar up to the end of the
    /// line (or the next `,` in flow style), a quoted string, a `[...]` or `{...}`.
    fn value_point(&self, line: usize, column: usize) -> Location {
        let chars = self.line(line);
        let start = column.saturating_sub(1).min(chars.len());
        let rest = &chars[start..];
        let width = match rest.first() {
            None => 0,
            Some('"' | '\'' | '[' | '{') => 0,
            Some(_) => {
                let in_flow = self.unclosed_bracket_before(line, column).is_some();
                let end = rest
                    .iter()
                    .enumerate()
                    .position(|(index, c)| {
                        (*c == '#' && index > 0 && rest[index - 1] == ' ')
                            || (in_flow && matches!(c, ',' | ']' | '}'))
                    })
                    .unwrap_or(rest.len());
                rest[..end]
                    .iter()
                    .collect::<String>()
                    .trim_end()
                    .chars()
                    .count()
            }
        };
        self.clamp(self.point(line, column, width))
    }

    /// For an empty value (`id:` or a lone `-`), where to point and the value's path. The
    /// parser reports the `:` or the end of the line; the key or the `-` is clearer.
    fn empty_value_at(&self, at: &Location) -> (Location, YamlPath) {
        let chars = self.line(at.line);
        let index = at.column.saturating_sub(1).min(chars.len());
        // The last character before the empty value: the key's `:` or a `-`. serde-saphyr
        // may also report the key itself.
        let before = key_at(chars, index, false)
            .map(|(_, after)| after - 1)
            .or_else(|| {
                chars[..(index + 1).min(chars.len())]
                    .iter()
                    .rposition(|c| !c.is_whitespace())
            });
        let path = self.path_at(at.line, before.map_or(at.column, |index| index + 2));
        let anchor = match before.map(|index| (index, chars[index])) {
            Some((_, ':')) => self
                .nodes_at(at.line, before.map_or(0, |index| index + 2))
                .into_iter()
                .rev()
                .find(|(line, _, segment)| *line == at.line && matches!(segment, Segment::Key(_)))
                .map(|(line, start, segment)| {
                    let width = match segment {
                        Segment::Key(key) => key.chars().count(),
                        Segment::Item => 1,
                    };
                    self.point(line, start + 1, width)
                }),
            Some((dash, '-')) => Some(self.point(at.line, dash + 1, 1)),
            _ => None,
        };
        (anchor.unwrap_or_else(|| at.clone()), path)
    }

    /// Is this line (not a `- ` item) a `key: value` with its `:` missing? It is when the
    /// lines next to it, at its indentation, are `key: value` pairs.
    fn missing_colon(&self, line: usize) -> bool {
        let chars = self.line(line);
        if starts_with_dash(chars) || key_at(chars, indent_of(chars), false).is_some() {
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
                        && key_at(other, indent, false).is_some()
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
        let chars = self.line(line);
        let start = content_start(chars);
        match key_at(chars, start, false) {
            Some((key, _)) => format!("{key}:"),
            None => self.word_at(line, start + 1),
        }
    }

    /// The path of keys and items that leads to the value at a position.
    fn path_at(&self, line: usize, column: usize) -> YamlPath {
        YamlPath(
            self.nodes_at(line, column)
                .into_iter()
                .map(|(_, _, segment)| segment)
                .collect(),
        )
    }

    /// The nodes enclosing a position, each with its line and start (0-based).
    fn nodes_at(&self, line: usize, column: usize) -> Vec<(usize, usize, Segment)> {
        let chars = self.line(line);
        let mut nodes = self.block_parent(line);
        nodes.extend(
            inline_nodes(chars, column.saturating_sub(1))
                .into_iter()
                .map(|(start, segment)| (line, start, segment)),
        );
        nodes
    }

    /// The nodes of the lines above that a line is nested in, found by indentation.
    fn block_parent(&self, line: usize) -> Vec<(usize, usize, Segment)> {
        let chars = self.line(line);
        let indent = indent_of(chars);
        let dash = starts_with_dash(chars);
        for above in (1..line).rev() {
            let text = self.line(above);
            if blank(text) || is_document_marker(text) {
                continue;
            }
            let their_indent = indent_of(text);
            let nodes = inline_nodes(text, text.len());
            let opens_block = ends_with_open_key(text);
            let keep: Vec<Node> = if their_indent < indent {
                nodes
                    .into_iter()
                    .filter(|(start, _)| *start < indent)
                    .collect()
            } else if their_indent == indent && dash && opens_block && !starts_with_dash(text) {
                // A list may sit at its key's indentation: `steps:` then `- id: ...`.
                nodes
            } else {
                continue;
            };
            let mut path = self.block_parent(above);
            path.extend(
                keep.into_iter()
                    .map(|(start, segment)| (above, start, segment)),
            );
            return path;
        }
        Vec::new()
    }

    /// For a value that starts a line (a block value), the key it belongs to: line, column,
    /// width.
    fn owning_key(&self, line: usize, column: usize) -> Option<(usize, usize, usize)> {
        let chars = self.line(line);
        if column.saturating_sub(1) > content_start(chars) {
            return None;
        }
        let (key_line, start, segment) = self.nodes_at(line, column).pop()?;
        match segment {
            Segment::Key(key) if key_line < line => {
                Some((key_line, start + 1, key.chars().count()))
            }
            _ => None,
        }
    }

    /// What kind of value is written at a position.
    fn kind_at(&self, line: usize, column: usize) -> Kind {
        let chars = self.line(line);
        let start = column.saturating_sub(1).min(chars.len());
        let rest: String = chars[start..].iter().collect();
        let rest = strip_comment(&rest).trim();
        // serde-saphyr reports an empty value at its key's `:`.
        let rest = match rest.strip_prefix(':') {
            Some(after) if after.is_empty() || after.starts_with(' ') => after.trim(),
            _ => rest,
        };
        if rest.is_empty() {
            return self.block_kind_below(line);
        }
        let rest_chars: Vec<char> = rest.chars().collect();
        match rest_chars[0] {
            '[' => Kind::List,
            '{' => Kind::Mapping,
            '-' if rest_chars.len() == 1 || rest_chars[1] == ' ' => Kind::List,
            '"' | '\'' | '|' | '>' => Kind::Text,
            '~' => Kind::Empty,
            // `a: b` starts a mapping only at the start of a line (or of a `- ` item); after
            // `key: ` on the same line it is text.
            _ if start <= content_start(chars) && key_at(&rest_chars, 0, false).is_some() => {
                Kind::Mapping
            }
            _ => match rest {
                "null" | "Null" | "NULL" => Kind::Empty,
                "true" | "false" | "True" | "False" | "TRUE" | "FALSE" => Kind::Bool,
                number if number.parse::<f64>().is_ok() => Kind::Number,
                _ => Kind::Text,
            },
        }
    }

    /// The kind of a block value that starts on the line after `line`, or `Empty`.
    fn block_kind_below(&self, line: usize) -> Kind {
        let indent = indent_of(self.line(line));
        let key_line = ends_with_open_key(self.line(line));
        for below in line + 1..=self.lines.len() {
            let chars = self.line(below);
            if blank(chars) {
                continue;
            }
            let their_indent = indent_of(chars);
            let nested = their_indent > indent
                || (their_indent == indent && key_line && starts_with_dash(chars));
            if !nested {
                return Kind::Empty;
            }
            return self.kind_at(below, their_indent + 1);
        }
        Kind::Empty
    }

    /// If a position is at a `key:` with its value on the same line, the value's column.
    fn value_after_key(&self, line: usize, column: usize) -> Option<usize> {
        let chars = self.line(line);
        let (_, after) = key_at(chars, column.checked_sub(1)?, false)?;
        let value = after + chars[after..].iter().take_while(|c| **c == ' ').count();
        (value < chars.len() && chars[value] != '#').then_some(value + 1)
    }

    /// Where the mapping that has a key at this position starts: its first key.
    fn mapping_start(&self, line: usize, column: usize) -> (usize, usize) {
        let chars = self.line(line);
        let index = column.saturating_sub(1).min(chars.len());
        let before: String = chars[..index].iter().collect();
        let trimmed = before.trim_end();
        // A key in a flow mapping (`{a: 1, b: 2}`): the mapping starts after its `{`.
        if (trimmed.ends_with('{') || trimmed.ends_with(','))
            && let Some(open) = opening_brace(chars, index)
        {
            let first = open + 1 + chars[open + 1..].iter().take_while(|c| **c == ' ').count();
            return (line, first + 1);
        }
        let key_indent = index;
        let mut start = (line, column);
        for above in (1..line).rev() {
            let text = self.line(above);
            if blank(text) {
                continue;
            }
            let indent = indent_of(text);
            if starts_with_dash(text) && content_start(text) == key_indent {
                return (above, column);
            }
            if indent == key_indent && !starts_with_dash(text) {
                start = (above, column);
            } else if indent < key_indent || is_document_marker(text) {
                break;
            }
        }
        start
    }

    /// The value of `key` in the mapping that starts at a position: line and column.
    fn value_of_key(&self, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
        let first = self.line(line);
        let start = column.checked_sub(1)?;
        if first.get(start) == Some(&'{') {
            let mut index = start + 1;
            while index < first.len() {
                if let Some((found, after)) = key_at(first, index, true)
                    && found == key
                {
                    let value = after + first[after..].iter().take_while(|c| **c == ' ').count();
                    return Some((line, value + 1));
                }
                index += 1;
            }
            return None;
        }
        for below in line..=self.lines.len() {
            let chars = self.line(below);
            if blank(chars) {
                continue;
            }
            if below > line && indent_of(chars) < start {
                break;
            }
            if let Some((found, after)) = key_at(chars, start, false)
                && found == key
            {
                let value = after + chars[after..].iter().take_while(|c| **c == ' ').count();
                if value < chars.len() {
                    return Some((below, value + 1));
                }
                return Some((below, start + 1));
            }
        }
        None
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

    /// The nearest quote before a position that is opened and never closed on its line.
    fn unterminated_quote_before(
        &self,
        line: usize,
        column: usize,
    ) -> Option<(usize, usize, char)> {
        (1..=line.min(self.lines.len())).rev().find_map(|number| {
            let chars = self.line(number);
            let end = if number == line {
                // The parser may stop on the quote itself.
                column.min(chars.len())
            } else {
                chars.len()
            };
            unclosed_quote(&chars[..end]).map(|(index, quote)| (number, index + 1, quote))
        })
    }

    /// The innermost `[` or `{` before a position that is not closed by then.
    fn unclosed_bracket_before(&self, line: usize, column: usize) -> Option<(usize, usize, char)> {
        let mut open: Vec<(usize, usize, char)> = Vec::new();
        for number in 1..=line.min(self.lines.len()) {
            let chars = self.line(number);
            // The parser may stop on the bracket itself, so its character counts.
            let end = if number == line {
                column.min(chars.len())
            } else {
                chars.len()
            };
            let mut quote: Option<char> = None;
            let mut index = 0;
            while index < end {
                let c = chars[index];
                match quote {
                    Some('"') if c == '\\' => index += 1,
                    Some('\'') if c == '\'' && chars.get(index + 1) == Some(&'\'') => index += 1,
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None => match c {
                        '"' | '\'' if starts_value(chars, index) => quote = Some(c),
                        '#' if index == 0 || chars[index - 1].is_whitespace() => break,
                        '[' | '{' if !open.is_empty() || starts_value(chars, index) => {
                            open.push((number, index + 1, c));
                        }
                        ']' | '}' => {
                            open.pop();
                        }
                        _ => {}
                    },
                }
                index += 1;
            }
        }
        open.pop()
    }

    /// The `---` line at or before `line`.
    fn document_marker_before(&self, line: usize) -> Option<usize> {
        (1..=line.min(self.lines.len()))
            .rev()
            .find(|number| is_document_marker(self.line(*number)))
    }

    /// How to indent a line that does not fit the block above it.
    fn indentation_help(&self, line: usize, subject: &str) -> String {
        let indent = indent_of(self.line(line));
        // The levels open above the line, innermost first: a key's column, or a `- `.
        let mut levels: Vec<(usize, Option<String>)> = Vec::new();
        let mut lowest = usize::MAX;
        for above in (1..line).rev() {
            let chars = self.line(above);
            if blank(chars) {
                continue;
            }
            let (their_indent, content) = (indent_of(chars), content_start(chars));
            if content < lowest {
                if let Some((key, _)) = key_at(chars, content, false) {
                    levels.push((content, Some(key)));
                }
                lowest = content;
            }
            if starts_with_dash(chars) && their_indent < lowest {
                levels.push((their_indent, None));
                lowest = their_indent;
            }
            if their_indent == 0 {
                break;
            }
        }
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

fn blank(chars: &[char]) -> bool {
    let start = content_start(chars);
    start >= chars.len() || chars[start] == '#'
}

fn is_document_marker(chars: &[char]) -> bool {
    chars.starts_with(&['-', '-', '-']) && chars.get(3).is_none_or(|c| c.is_whitespace())
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

/// Does the line end with `key:`, its value being the block below?
fn ends_with_open_key(chars: &[char]) -> bool {
    let text: String = chars.iter().collect();
    strip_comment(&text).trim_end().ends_with(':')
}

/// The text without a trailing ` # comment` (outside quotes).
fn strip_comment(text: &str) -> &str {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut quote: Option<char> = None;
    for (position, &(byte, c)) in chars.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && (position == 0 || chars[position - 1].1.is_whitespace()) => {
                return &text[..byte];
            }
            None => {}
        }
    }
    text
}

/// Does a quote or bracket at `index` begin a value (rather than sit inside plain text)?
fn starts_value(chars: &[char], index: usize) -> bool {
    let before = chars[..index].iter().rev().find(|c| !c.is_whitespace());
    matches!(before, None | Some(':' | '-' | ',' | '[' | '{' | '?'))
}

/// A `key:` starting at `index` (plain or quoted): the key and the index after the `:`.
/// In flow context (`{a: 1, b: 2}`), keys also end at `,` and brackets.
fn key_at(chars: &[char], index: usize, flow: bool) -> Option<(String, usize)> {
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
            if (c == '#' && end > 0 && chars[end - 1] == ' ')
                || (flow && matches!(c, ',' | '[' | ']' | '{' | '}'))
            {
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

/// The nodes a line opens before character `end`: `- ` items, `key:` whose value comes after,
/// and the lists and mappings of flow style.
fn inline_nodes(chars: &[char], end: usize) -> Vec<Node> {
    let end = end.min(chars.len());
    let mut nodes = Vec::new();
    let mut index = indent_of(chars);
    while index < end && chars[index] == '-' && chars.get(index + 1).is_none_or(|c| *c == ' ') {
        nodes.push((index, Segment::Item));
        index += 1;
        index += chars[index..].iter().take_while(|c| **c == ' ').count();
    }
    if index >= end {
        return nodes;
    }
    if let Some((key, after)) = key_at(chars, index, false) {
        if after > end {
            return nodes;
        }
        nodes.push((index, Segment::Key(key)));
        index = after;
    }
    // Flow style: `[a, {b: c}]`. Each open bracket remembers how many nodes were open before.
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut expect_key = false;
    while index < end {
        let c = chars[index];
        if expect_key && c != ' ' {
            expect_key = false;
            match key_at(chars, index, true) {
                Some((key, after)) if after <= end => {
                    nodes.push((index, Segment::Key(key)));
                    index = after;
                    continue;
                }
                Some(_) => break,
                None => {}
            }
        }
        match c {
            '"' | '\'' => {
                let close = chars[index + 1..]
                    .iter()
                    .position(|q| *q == c)
                    .map_or(chars.len(), |offset| index + 1 + offset);
                index = close;
            }
            '#' if index == 0 || chars[index - 1] == ' ' => break,
            '[' => {
                open.push(('[', nodes.len()));
                nodes.push((index, Segment::Item));
            }
            '{' => {
                open.push(('{', nodes.len()));
                expect_key = true;
            }
            ']' | '}' => {
                if let Some((_, depth)) = open.pop() {
                    nodes.truncate(depth);
                }
            }
            ',' => {
                if let Some(&(bracket, depth)) = open.last() {
                    nodes.truncate(depth);
                    if bracket == '[' {
                        nodes.push((index, Segment::Item));
                    } else {
                        expect_key = true;
                    }
                }
            }
            _ => {}
        }
        index += 1;
    }
    nodes
}

/// The `{` that opens the flow mapping around `index` on this line.
fn opening_brace(chars: &[char], index: usize) -> Option<usize> {
    let mut depth = 0usize;
    for position in (0..index.min(chars.len())).rev() {
        match chars[position] {
            '}' | ']' => depth += 1,
            '[' if depth > 0 => depth -= 1,
            '{' if depth == 0 => return Some(position),
            '{' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A quote that begins a value on this line and is not closed on it.
fn unclosed_quote(chars: &[char]) -> Option<(usize, char)> {
    let mut open: Option<(usize, char)> = None;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match open {
            Some((_, '"')) if c == '\\' => index += 1,
            Some((_, '\'')) if c == '\'' && chars.get(index + 1) == Some(&'\'') => index += 1,
            Some((_, quote)) if c == quote => open = None,
            Some(_) => {}
            None if (c == '"' || c == '\'') && starts_value(chars, index) => {
                open = Some((index, c));
            }
            None if c == '#' && (index == 0 || chars[index - 1].is_whitespace()) => break,
            None => {}
        }
        index += 1;
    }
    open
}

/// The width of a `[...]` or `{...}` that closes on the same line (quotes respected).
pub(super) fn flow_width(chars: &[char]) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match quote {
            Some('"') if c == '\\' => index += 1,
            Some('\'') if c == '\'' && chars.get(index + 1) == Some(&'\'') => index += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if starts_value(chars, index) => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(index + 1);
                    }
                }
                _ => {}
            },
        }
        index += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::new("t.yaml", text)
    }

    fn path(text: &str, line: usize, column: usize) -> Vec<String> {
        TextMap::new(&source(text))
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
        assert_eq!(map.mapping_start(5, 5), (4, 5));
        assert_eq!(map.mapping_start(2, 1), (1, 1));
        let flow = source("a: {b: 1, c: 2}\n");
        assert_eq!(TextMap::new(&flow).mapping_start(1, 11), (1, 5));
    }

    #[test]
    fn finds_what_the_parser_noticed_late() {
        let text = "a: 1\nb: \"open\n  c: [x, y\nd: 2\n";
        let text = source(text);
        let map = TextMap::new(&text);
        assert_eq!(map.unterminated_quote_before(4, 1), Some((2, 4, '"')));
        assert_eq!(map.unclosed_bracket_before(4, 2), Some((3, 6, '[')));
        // Quotes and brackets inside text do not count.
        let text = source("a: it's [fine]\nb: \"x [\" \nc: [1\n");
        let map = TextMap::new(&text);
        assert_eq!(map.unterminated_quote_before(2, 1), None);
        assert_eq!(map.unclosed_bracket_before(3, 6), Some((3, 4, '[')));
        let text = source("a:\n  b: 1\n\tc: 2\n");
        let map = TextMap::new(&text);
        assert_eq!(map.tab_from(2), Some((3, 1)));
    }

    #[test]
    fn tells_what_kind_of_value_is_written() {
        let text = source("a: [1]\nb:\n  c: 1\nd: -1\ne:\nf: x y\n");
        let map = TextMap::new(&text);
        assert_eq!(map.kind_at(1, 4), Kind::List);
        assert_eq!(map.kind_at(2, 3), Kind::Mapping);
        assert_eq!(map.kind_at(4, 4), Kind::Number);
        assert_eq!(map.kind_at(5, 3), Kind::Empty);
        assert_eq!(map.kind_at(6, 4), Kind::Text);
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
