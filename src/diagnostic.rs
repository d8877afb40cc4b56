//! Errors a person can act on: a message, where it is (file, line, column, with the source
//! line and a caret under the problem) and a `help:` line that says how to fix it.

mod yaml;

use std::fmt;
use std::sync::Arc;

pub use yaml::{Segment, ValueError, Vocabulary, YamlPath};

/// A source file that positions point into.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it.
    pub path: String,
    /// The whole text of the file.
    pub text: Arc<str>,
}

impl Source {
    /// Wraps a file's path and text.
    pub fn new(path: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The text of line `line` (1-based), without its newline.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }

    /// A position in this file.
    pub fn at(&self, line: u64, column: u64) -> Location {
        Location {
            source: self.clone(),
            line: line as usize,
            column: column as usize,
            width: None,
        }
    }

    /// The position of a value read with serde-saphyr, underlining the whole value when it
    /// fits on its line (a plain scalar with spaces, a quoted string).
    pub fn at_yaml(&self, location: &serde_saphyr::Location) -> Location {
        let at = self.at(location.line(), location.column());
        let width = usize::try_from(location.span().len()).unwrap_or(0);
        // The rest of the line from the value's byte offset, when the parser gives one: the
        // loader asks for a position per step, and finding the line by its number scans the
        // file from the start (20,000 steps took minutes).
        let rest_of_line = location
            .span()
            .byte_offset()
            .and_then(|offset| self.text.get(usize::try_from(offset).ok()?..))
            .map(|rest| rest.split(['\n', '\r']).next().unwrap_or_default());
        let room = match rest_of_line {
            Some(rest) => rest.chars().count() + 1,
            None => self.line_text(at.line).map_or(0, |text| {
                (text.chars().count() + 1).saturating_sub(at.column)
            }),
        };
        // A span of one character is often just where a `[...]` or a key starts; the token
        // found at the position is the better underline then.
        if width > 1 && width <= room {
            at.with_width(width)
        } else {
            at
        }
    }

    /// This file's text with every occurrence of `secret` replaced by `***`, so that a
    /// snippet of it can be shown.
    pub fn masking(&self, secret: &str) -> Source {
        if secret.is_empty() || !self.text.contains(secret) {
            return self.clone();
        }
        Source::new(self.path.clone(), self.text.replace(secret, "***"))
    }
}

/// A line and column (both 1-based) in a [`Source`].
#[derive(Debug, Clone)]
pub struct Location {
    /// The file.
    pub source: Source,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// How many characters the caret underlines; the token at `column` when not set.
    pub width: Option<usize>,
}

impl Location {
    /// The same position, underlining `width` characters.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = Some(width.max(1));
        self
    }

    /// The same position in another copy of the file (one with secrets masked).
    pub fn in_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }
}

/// An error in the user's input.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where, when the problem is in a file.
    pub location: Option<Location>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with no position (a flag, a missing file).
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            help: None,
        }
    }

    /// An error at a position in a file.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: Some(location),
            help: None,
        }
    }

    /// Adds the `help:` line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Turns a serde-saphyr error into a diagnostic: keeps its position (moved to where the
    /// mistake is when the parser noticed it later), rewrites its message in our words and
    /// adds help where we know the usual fix.
    pub fn from_yaml(source: &Source, error: &serde_saphyr::Error) -> Self {
        yaml::explain(source, error, &yaml::AnyDocument)
    }

    /// Like [`Diagnostic::from_yaml`], in the words of one kind of document: what its parts
    /// are called and how to write them.
    pub fn from_yaml_in(
        source: &Source,
        error: &serde_saphyr::Error,
        vocabulary: &dyn Vocabulary,
    ) -> Self {
        yaml::explain(source, error, vocabulary)
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
///
/// Distance is optimal string alignment (a swap of two neighbouring characters is one edit),
/// since transposed letters are the most common typo in keys and ids.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (strsim::osa_distance(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(word.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Width of the caret: the token that starts at `column` (a key, a word, a quoted string,
/// a `[...]` or `{...}` that closes on the same line).
fn token_width(line: &str, column: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(column.saturating_sub(1)).collect();
    match rest.first() {
        Some(&quote @ ('"' | '\'')) => rest[1..]
            .iter()
            .position(|&c| c == quote)
            .map_or(rest.len(), |end| end + 2),
        Some('[' | '{') => flow_width(&rest).unwrap_or(1),
        Some(_) => rest
            .iter()
            .position(|&c| c.is_whitespace() || matches!(c, ':' | ',' | '}' | ']' | '{' | '['))
            .unwrap_or(rest.len())
            .max(1),
        None => 1,
    }
}

/// The width of a `[...]` or `{...}` that closes on the same line (quotes respected).
///
/// The caret's fallback when a diagnostic comes with a position but no width: the renderer
/// sees one line, not a parse. Diagnostics explained from a YAML error take their widths from
/// granit-parser's events instead (`yaml::events`).
fn flow_width(chars: &[char]) -> Option<usize> {
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

/// Does a quote at `index` begin a value (rather than sit inside plain text)?
fn starts_value(chars: &[char], index: usize) -> bool {
    let before = chars[..index].iter().rev().find(|c| !c.is_whitespace());
    matches!(before, None | Some(':' | '-' | ',' | '[' | '{' | '?'))
}

/// How many characters of a source line a snippet shows: a minified or generated file can
/// have a line of megabytes, which would make the message as big.
const SNIPPET_WIDTH: usize = 120;

/// How many characters of the line a snippet shows before the caret when it has to cut.
const SNIPPET_CONTEXT: usize = 40;

/// A `quoted` token in a message or help longer than this is cut, for the same reason. Wide
/// enough for the longest example our own help lines quote (94 characters).
const QUOTED_WIDTH: usize = 100;

/// The part of a source line a snippet shows: at most [`SNIPPET_WIDTH`] characters around
/// the caret, with `…` where it was cut. Returns the text, the caret's 1-based column in it
/// and the caret's width, kept inside the text.
fn snippet_window(line: &str, column: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SNIPPET_WIDTH {
        return (line.to_string(), column, width);
    }
    let caret = column.saturating_sub(1).min(chars.len());
    let start = caret
        .saturating_sub(SNIPPET_CONTEXT)
        .min(chars.len() - SNIPPET_WIDTH);
    let end = start + SNIPPET_WIDTH;
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let column = caret - start + 1 + usize::from(start > 0);
    let width = width.min(end.saturating_sub(caret)).max(1);
    (shown, column, width)
}

/// `text` with every `quoted` token longer than [`QUOTED_WIDTH`] characters cut to its
/// start and `…`.
fn shorten_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    for (index, part) in text.split('`').enumerate() {
        if index > 0 {
            out.push('`');
        }
        // Odd parts are inside backticks.
        if index % 2 == 1 && part.chars().count() > QUOTED_WIDTH {
            out.extend(part.chars().take(QUOTED_WIDTH));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", shorten_quoted(&self.message))?;
        if let Some(location) = &self.location {
            let gutter = location.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(
                f,
                "{pad}--> {}:{}:{}",
                location.source.path, location.line, location.column
            )?;
            if let Some(text) = location.source.line_text(location.line) {
                let width = location
                    .width
                    .unwrap_or_else(|| token_width(text, location.column));
                let (text, column, width) = snippet_window(text, location.column, width);
                let caret_pad: String = text
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {text}", location.line)?;
                writeln!(f, "{pad} | {caret_pad}{}", "^".repeat(width.max(1)))?;
            }
        }
        if let Some(help) = &self.help {
            writeln!(f, "help: {}", shorten_quoted(help))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        assert_eq!(did_you_mean("nmae", &["id", "name", "when"]), Some("name"));
        assert_eq!(did_you_mean("tow", &["one", "two"]), Some("two"));
        assert_eq!(did_you_mean("zzzzzz", &["id", "name"]), None);
    }

    #[test]
    fn renders_position_snippet_and_caret() {
        let source = Source::new("p.yaml", "steps:\n  - id: a\n    nmae: b\n");
        let diagnostic =
            Diagnostic::at(source.at(3, 5), "unknown key `nmae`").help("did you mean `name`?");
        insta::assert_snapshot!(diagnostic.to_string(), @r"
        error: unknown key `nmae`
         --> p.yaml:3:5
          |
        3 |     nmae: b
          |     ^^^^
        help: did you mean `name`?
        ");
    }

    #[test]
    fn a_long_line_is_cut_around_the_caret() {
        let long = "x".repeat(200_000);
        let text = format!("steps:\n  - id: a\n    retries: {long}\n");
        let source = Source::new("p.yaml", text);
        let diagnostic = Diagnostic::at(
            source.at(3, 14),
            format!("`retries` must be a whole number, not `{long}`"),
        )
        .help(format!("did you mean `{long}`?"));
        let shown = diagnostic.to_string();
        assert!(shown.len() < 1_000, "{} bytes", shown.len());
        insta::assert_snapshot!(shown, @r"
        error: `retries` must be a whole number, not `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`
         --> p.yaml:3:14
          |
        3 |     retries: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…
          |              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        help: did you mean `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`?
        ");
    }

    #[test]
    fn a_caret_far_into_a_long_line_keeps_its_place() {
        let line = format!("{}needle{}", "a".repeat(500), "b".repeat(500));
        let source = Source::new("p.yaml", line);
        let diagnostic = Diagnostic::at(source.at(1, 501), "here").help("there");
        insta::assert_snapshot!(diagnostic.to_string(), @r"
        error: here
         --> p.yaml:1:501
          |
        1 | …aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaneedlebbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb…
          |                                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        help: there
        ");
    }
}
