//! Writing one scalar so that every YAML reader gets the value that was meant.
//!
//! Helm reads values files with go-yaml v2 (YAML 1.1 rules: `on`, `no`, `y`, `0777`, `1_000`
//! are not strings), other tools with YAML 1.2 rules. A string is written plain only when
//! neither set of rules would read it as something else and the plain form is unambiguous;
//! otherwise it is quoted.

use std::sync::LazyLock;

use regex::Regex;

/// How a scalar is written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// `value`
    Plain,
    /// `'value'`
    SingleQuoted,
    /// `"value"`
    DoubleQuoted,
    /// `|` (with its chomping indicator)
    Literal,
    /// `>`
    Folded,
}

impl ScalarStyle {
    /// The style of a scalar from its source text.
    pub fn of(text: &str) -> ScalarStyle {
        match text.chars().next() {
            Some('\'') => ScalarStyle::SingleQuoted,
            Some('"') => ScalarStyle::DoubleQuoted,
            Some('|') => ScalarStyle::Literal,
            Some('>') => ScalarStyle::Folded,
            _ => ScalarStyle::Plain,
        }
    }
}

/// Words YAML 1.1 (go-yaml v2, which helm uses) or 1.2 read as null or a boolean.
const SPECIAL_WORDS: &[&str] = &[
    "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
    "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
    ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf",
    "-.INF", "<<", "=",
];

/// Numbers in YAML 1.1 (the spec and go-yaml v2's Go-syntax integers), YAML 1.2 core, and
/// timestamps, which some readers turn into dates.
static NON_STRING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        // integers: decimal, octal (0777, 0o777), hex, binary, with underscores (1_000)
        r"[-+]?(?:0[bB][01_]+|0[oO]?[0-7_]+|0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)",
        // floats: 1.10, .5, 1., 1e3, 6.8523015e+5, with underscores
        r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+",
        // sexagesimal (YAML 1.1): 190:20:30, 1:30.5
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?",
        // timestamps: 2001-12-14, 2001-12-14t21:59:43.10-05:00
        r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?",
        r")$"
    ))
    .expect("a valid regular expression")
});

/// Whether YAML 1.1 or 1.2 would read this text, written plain, as anything but a string.
pub fn reads_as_non_string(text: &str) -> bool {
    SPECIAL_WORDS.contains(&text) || NON_STRING.is_match(text)
}

/// Whether YAML 1.1 (helm) reads the plain scalar `text` as the same value as `parsed`, the
/// YAML 1.2 reading: not for `yes` read as a string, `0777` (octal in 1.1), `1_000`, `1:30`.
pub fn same_in_yaml_1_1(text: &str, parsed: &super::tree::Node) -> bool {
    use super::tree::Node;
    let text = text.trim();
    match parsed {
        Node::Str(string) => !reads_as_non_string(string),
        Node::Int(_) => {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            digits == "0"
                || (!digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()))
        }
        // serde-saphyr reads `0777` as a float; YAML 1.1 as an octal integer.
        Node::Float(_) => !text.contains(['_', ':']) && text.contains(['.', 'e', 'E']),
        Node::Bool(_) | Node::Null | Node::Seq(_) | Node::Map(_) => true,
    }
}

/// Whether `text` can be written as a plain scalar and read back as this same string, in
/// block context (`key: text`) and, with `flow`, inside `{...}` or `[...]`.
pub fn can_be_plain(text: &str, flow: bool) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if reads_as_non_string(text)
        || text.trim() != text
        || text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.chars().any(|c| c.is_control() || c == '\u{feff}')
        || (flow && text.contains([',', '[', ']', '{', '}']))
    {
        return false;
    }
    match first {
        // Indicators that start something other than a plain scalar.
        '[' | ']' | '{' | '}' | ',' | '#' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%'
        | '@' | '`' => false,
        // `-x`, `?x`, `:x` are plain scalars; `- x`, `? x`, `:` alone are not.
        '-' | '?' | ':' => text
            .chars()
            .nth(1)
            .is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '_' || c == '.'),
        _ => true,
    }
}

/// A string in single quotes (`'` doubled), or `None` when it cannot be (line breaks,
/// control characters).
fn single_quoted(text: &str) -> Option<String> {
    if text.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(format!("'{}'", text.replace('\'', "''")))
}

/// A string in double quotes with escapes.
pub fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || c == '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number, boolean or null as YAML text, or `None` for a string (or a list, a mapping).
pub fn non_string_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => Some("null".into()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        serde_json::Value::Number(number) => Some(
            if let Some(float) = number.as_f64()
                && !number.is_i64()
                && !number.is_u64()
            {
                float_text(float)
            } else {
                number.to_string()
            },
        ),
        _ => None,
    }
}

/// A float that reads back as a float: `1.0`, not `1`.
fn float_text(float: f64) -> String {
    if float.is_nan() {
        ".nan".into()
    } else if float.is_infinite() {
        if float > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        }
    } else {
        // Debug keeps a `.0` on whole numbers and uses exponents for very large or small ones.
        let text = format!("{float:?}");
        if text.contains(['.', 'e', 'E']) {
            text
        } else {
            format!("{text}.0")
        }
    }
}

/// How to write a string where a scalar of style `old` was (or a new scalar, `old` = plain):
/// keeps the quotes the file used there when they can hold the value, and adds quotes
/// (`preferred`) only where the plain form would be read as something else.
pub fn inline_string(text: &str, old: ScalarStyle, preferred: ScalarStyle, flow: bool) -> String {
    let quoted_as = |style: ScalarStyle| match style {
        ScalarStyle::DoubleQuoted => double_quoted(text),
        _ => single_quoted(text).unwrap_or_else(|| double_quoted(text)),
    };
    match old {
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => quoted_as(old),
        _ if text.contains('\n') || text.chars().any(char::is_control) => double_quoted(text),
        _ if can_be_plain(text, flow) => text.to_string(),
        _ => quoted_as(preferred),
    }
}

/// A block scalar (`|`) holding `text`, its content lines indented by `indent` spaces, up to
/// the end of its last line (without the line break); or `None` when a clipped or stripped
/// block scalar cannot hold it exactly (leading spaces on the first line, control
/// characters, several trailing line breaks).
pub fn literal_block(text: &str, indent: usize, folded: bool) -> Option<String> {
    if text.is_empty()
        || text.starts_with([' ', '\t', '\n'])
        || text.chars().any(|c| c.is_control() && c != '\n')
    {
        return None;
    }
    let body = text.trim_end_matches('\n');
    let chomping = match text.len() - body.len() {
        0 => "-",
        1 => "",
        _ => return None,
    };
    // A folded scalar folds line breaks into spaces: keep `>` only for one line.
    let indicator = if folded && !body.contains('\n') {
        ">"
    } else {
        "|"
    };
    let pad = " ".repeat(indent);
    let mut out = format!("{indicator}{chomping}");
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_words_and_numbers_are_not_plain_strings() {
        for text in [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "N",
            "true",
            "False",
            "~",
            "null",
            "1.10",
            "0777",
            "0o17",
            "0x1F",
            "1_000",
            "12",
            "-3",
            "1e3",
            "1.5e+3",
            ".5",
            ".inf",
            "-.Inf",
            ".NaN",
            "190:20:30",
            "2001-12-14",
            "2001-12-14 21:59:43.10 -5",
            "<<",
            "=",
            "",
        ] {
            assert!(reads_as_non_string(text), "{text:?} should be quoted");
            assert!(!can_be_plain(text, false), "{text:?} should be quoted");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for text in [
            "10.100.113.233",
            "fs-0c29370cc50856b5d.efs.us-west-2.amazonaws.com",
            "/2i2cutorontohubstorage/homes/",
            "vol-097e117991afc3759",
            "3.4G",
            "n2-highmem-2",
            "https://2i2c.org",
            "-c",
            "a:b:c",
            "yess",
            "onion",
            "1.2.3",
        ] {
            assert!(can_be_plain(text, false), "{text:?} should stay plain");
        }
        for text in [
            "a: b", "a #b", "- x", "#x", "*x", "&x", "!x", "'x", "x:", " x", "x ", "@x", "a\nb",
        ] {
            assert!(!can_be_plain(text, false), "{text:?} should be quoted");
        }
        assert!(!can_be_plain("a,b", true));
        assert!(can_be_plain("a,b", false));
    }

    #[test]
    fn yaml_1_1_readings_are_told_apart() {
        use super::super::tree::Node;
        assert!(!same_in_yaml_1_1("yes", &Node::Str("yes".into())));
        assert!(same_in_yaml_1_1("yess", &Node::Str("yess".into())));
        assert!(!same_in_yaml_1_1("0777", &Node::Int(777)));
        assert!(!same_in_yaml_1_1("1_000", &Node::Int(1000)));
        assert!(same_in_yaml_1_1("-12", &Node::Int(-12)));
        assert!(same_in_yaml_1_1("0", &Node::Int(0)));
        assert!(same_in_yaml_1_1("0.5", &Node::Float(0.5)));
        assert!(!same_in_yaml_1_1("0777", &Node::Float(777.0)));
    }

    #[test]
    fn keeps_the_quotes_of_the_old_value() {
        use ScalarStyle::*;
        assert_eq!(
            inline_string("x", DoubleQuoted, SingleQuoted, false),
            "\"x\""
        );
        assert_eq!(
            inline_string("it's", SingleQuoted, SingleQuoted, false),
            "'it''s'"
        );
        assert_eq!(inline_string("x", Plain, SingleQuoted, false), "x");
        assert_eq!(inline_string("on", Plain, SingleQuoted, false), "'on'");
        assert_eq!(inline_string("on", Plain, DoubleQuoted, false), "\"on\"");
        assert_eq!(
            inline_string("a\nb", SingleQuoted, SingleQuoted, false),
            "\"a\\nb\""
        );
        assert_eq!(
            inline_string("tab\there", Plain, SingleQuoted, false),
            "\"tab\\there\""
        );
    }

    #[test]
    fn numbers_keep_their_type() {
        assert_eq!(non_string_text(&serde_json::json!(1)).unwrap(), "1");
        assert_eq!(non_string_text(&serde_json::json!(1.0)).unwrap(), "1.0");
        assert_eq!(non_string_text(&serde_json::json!(0.01)).unwrap(), "0.01");
        assert_eq!(non_string_text(&serde_json::json!(1e300)).unwrap(), "1e300");
        assert_eq!(non_string_text(&serde_json::json!(true)).unwrap(), "true");
        assert_eq!(non_string_text(&serde_json::json!(null)).unwrap(), "null");
        assert!(non_string_text(&serde_json::json!("1")).is_none());
    }

    #[test]
    fn literal_blocks_choose_their_chomping() {
        assert_eq!(literal_block("a\nb\n", 2, false).unwrap(), "|\n  a\n  b");
        assert_eq!(
            literal_block("a\n\nb", 4, false).unwrap(),
            "|-\n    a\n\n    b"
        );
        assert!(literal_block("a\n\n", 2, false).is_none());
        assert_eq!(
            literal_block("one line", 2, true).unwrap(),
            ">-\n  one line"
        );
        assert!(literal_block(" lead", 2, false).is_none());
    }
}
