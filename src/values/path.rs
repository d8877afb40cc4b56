//! Paths into a values document: `nfs.pv.serverIP`, `singleuser.profileList[2].slug`,
//! `nodeSelector."node.kubernetes.io/instance-type"`.

use std::fmt;

/// One step of a [`ValuesPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// The value of this key in a mapping.
    Key(String),
    /// The item at this index (from 0) of a list.
    Index(usize),
}

/// Where a value is in a document, from the top: keys separated by dots, list items as
/// `[n]`. A key with a dot, a bracket or a quote in it is quoted: `a."b.c"` or `a["b.c"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValuesPath(Vec<PathSegment>);

/// A path that does not parse, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path `{text}`: {problem}")]
pub struct PathError {
    /// The path as written.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

impl ValuesPath {
    /// A path made of these segments.
    pub fn new(segments: Vec<PathSegment>) -> Self {
        ValuesPath(segments)
    }

    /// Parses `a.b[2]."c.d"`. The path must not be empty.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let error = |problem: &str| PathError {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        let chars: Vec<char> = text.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        // Whether the next segment must be a key (at the start and after a dot).
        let mut expect_key = true;
        while i < chars.len() {
            match chars[i] {
                '.' if expect_key => {
                    return Err(error("a key is empty (two dots, or a dot at the start)"));
                }
                '.' => {
                    expect_key = true;
                    i += 1;
                    if i == chars.len() {
                        return Err(error("it ends with a dot"));
                    }
                }
                '[' => {
                    let close = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .map(|end| i + end)
                        .ok_or_else(|| error("a `[` is not closed"))?;
                    let inside: String = chars[i + 1..close].iter().collect();
                    let segment = match inside.chars().next() {
                        Some(quote @ ('"' | '\'')) => {
                            if inside.len() < 2 || !inside.ends_with(quote) {
                                return Err(error("a quoted key in `[...]` is not closed"));
                            }
                            PathSegment::Key(inside[1..inside.len() - 1].to_string())
                        }
                        _ => PathSegment::Index(inside.trim().parse().map_err(|_| {
                            error("`[...]` holds a list index (a number from 0) or a quoted key")
                        })?),
                    };
                    if expect_key && !segments.is_empty() {
                        return Err(error("a dot is followed by `[`; write `a[0]`, not `a.[0]`"));
                    }
                    segments.push(segment);
                    expect_key = false;
                    i = close + 1;
                    if i < chars.len() && !matches!(chars[i], '.' | '[') {
                        return Err(error("expected `.` or `[` after `]`"));
                    }
                }
                quote @ ('"' | '\'') if expect_key => {
                    let close = chars[i + 1..]
                        .iter()
                        .position(|&c| c == quote)
                        .map(|end| i + 1 + end)
                        .ok_or_else(|| error("a quoted key is not closed"))?;
                    segments.push(PathSegment::Key(chars[i + 1..close].iter().collect()));
                    expect_key = false;
                    i = close + 1;
                    if i < chars.len() && !matches!(chars[i], '.' | '[') {
                        return Err(error("expected `.` or `[` after a quoted key"));
                    }
                }
                _ if expect_key => {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| matches!(c, '.' | '['))
                        .map_or(chars.len(), |end| i + end);
                    let key: String = chars[i..end].iter().collect();
                    if key.contains(['"', '\'', ']']) {
                        return Err(error(
                            "quote a key that holds quotes or brackets as a whole: `a.\"b.c\"`",
                        ));
                    }
                    segments.push(PathSegment::Key(key));
                    expect_key = false;
                    i = end;
                }
                _ => return Err(error("expected `.` or `[`")),
            }
        }
        if segments.is_empty() {
            return Err(error("the path is empty"));
        }
        Ok(ValuesPath(segments))
    }

    /// The segments, from the top.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// This path below `prefix`: `basehub` + `nfs.pv` is `basehub.nfs.pv`.
    pub fn under(&self, prefix: &ValuesPath) -> ValuesPath {
        ValuesPath(prefix.0.iter().chain(&self.0).cloned().collect())
    }

    /// The first `len` segments.
    pub fn prefix(&self, len: usize) -> ValuesPath {
        ValuesPath(self.0[..len.min(self.0.len())].to_vec())
    }

    /// The number of segments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the path has no segments (only [`ValuesPath::new`] can make one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ValuesPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Index(index) => write!(f, "[{index}]")?,
                PathSegment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !key.is_empty() && !key.contains(['.', '[', ']', '"', '\'']);
                    if plain {
                        f.write_str(key)?;
                    } else if key.contains('"') {
                        write!(f, "'{key}'")?;
                    } else {
                        write!(f, "\"{key}\"")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for ValuesPath {
    type Err = PathError;
    fn from_str(text: &str) -> Result<Self, PathError> {
        ValuesPath::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<PathSegment> {
        ValuesPath::parse(path).unwrap().0
    }

    #[test]
    fn parses_keys_indexes_and_quoted_keys() {
        use PathSegment::{Index, Key};
        assert_eq!(
            keys("nfs.pv.serverIP"),
            vec![Key("nfs".into()), Key("pv".into()), Key("serverIP".into())]
        );
        assert_eq!(
            keys("a.b[2].c"),
            vec![Key("a".into()), Key("b".into()), Index(2), Key("c".into())]
        );
        assert_eq!(
            keys("sel.\"node.kubernetes.io/instance-type\""),
            vec![
                Key("sel".into()),
                Key("node.kubernetes.io/instance-type".into())
            ]
        );
        assert_eq!(
            keys("a['b.c'][0][1]"),
            vec![Key("a".into()), Key("b.c".into()), Index(0), Index(1)]
        );
        assert_eq!(
            keys("00-set-gitconfig.py"),
            vec![Key("00-set-gitconfig".into()), Key("py".into())]
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "", ".a", "a.", "a..b", "a[", "a[x]", "a.[0]", "a[0]b", "\"a", "a\"b",
        ] {
            assert!(ValuesPath::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn displays_back_to_a_parseable_path() {
        for text in ["nfs.pv.serverIP", "a[2].c", "sel.\"a.b\"", "x.'say \"hi\"'"] {
            let path = ValuesPath::parse(text).unwrap();
            assert_eq!(
                ValuesPath::parse(&path.to_string()).unwrap(),
                path,
                "{text}"
            );
        }
        assert_eq!(
            ValuesPath::parse("a['b.c']").unwrap().to_string(),
            "a.\"b.c\""
        );
    }
}
