//! `exclude:` patterns, matched the way rsync matches `--exclude`, so that the tree walks see
//! the same tree as the rsync processes (which get the same patterns).
//!
//! Supported: `*` (not across `/`), `**` (across `/`), `?`, `[...]` classes, a leading `/`
//! (anchored at the root of the copy), a trailing `/` (directories only), `dir/***` (the
//! directory and everything in it). A pattern with a `/` or `**` is matched against the whole
//! relative path (or any tail of it at a `/`); one without is matched against the name.

use regex::bytes::Regex;

/// The compiled `exclude:` list.
#[derive(Debug, Clone, Default)]
pub struct ExcludeFilter {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    dirs_only: bool,
}

impl ExcludeFilter {
    /// Compiles the patterns; an error names the pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let rules = patterns
            .iter()
            .map(|pattern| compile(pattern))
            .collect::<Result<_, _>>()?;
        Ok(ExcludeFilter { rules })
    }

    /// Whether the entry at `path` (relative to the root, `/`-separated) is excluded.
    pub fn excludes(&self, path: &[u8], is_dir: bool) -> bool {
        self.rules
            .iter()
            .any(|rule| (is_dir || !rule.dirs_only) && rule.regex.is_match(path))
    }

    /// No patterns at all (the walks skip the matching then).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn compile(pattern: &str) -> Result<Rule, String> {
    if pattern.is_empty() {
        return Err("an `exclude` pattern is empty".into());
    }
    let mut text = pattern;
    let anchored = text.starts_with('/');
    if anchored {
        text = &text[1..];
    }
    let mut dirs_only = false;
    let mut with_contents = false;
    if let Some(base) = text.strip_suffix("/***") {
        text = base;
        with_contents = true;
    } else if let Some(base) = text.strip_suffix('/') {
        text = base;
        dirs_only = true;
    }
    let mut regex = String::from(if anchored { "^" } else { "(?:^|/)" });
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                regex.push_str(".*");
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '[' => {
                let mut class = String::from("[");
                if chars.peek() == Some(&'!') || chars.peek() == Some(&'^') {
                    chars.next();
                    class.push('^');
                }
                let mut closed = false;
                let mut first = true;
                for c in chars.by_ref() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    if c == '\\' || c == '[' {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if !closed {
                    return Err(format!(
                        "the `exclude` pattern `{pattern}` has an unclosed `[`"
                    ));
                }
                class.push(']');
                regex.push_str(&class);
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    regex.push_str(&regex::escape(&next.to_string()));
                }
            }
            other => regex.push_str(&regex::escape(&other.to_string())),
        }
    }
    if with_contents {
        regex.push_str("(?:/.*)?");
    }
    regex.push('$');
    // `(?s-u)`: `.` also matches newlines, and names need not be UTF-8.
    let regex = Regex::new(&format!("(?s-u){regex}"))
        .or_else(|_| Regex::new(&format!("(?s){regex}")))
        .map_err(|error| format!("the `exclude` pattern `{pattern}` is not valid: {error}"))?;
    Ok(Rule { regex, dirs_only })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> ExcludeFilter {
        ExcludeFilter::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .expect("patterns compile")
    }

    #[test]
    fn a_name_pattern_matches_the_last_component_anywhere() {
        let f = filter(&["*.tmp", ".cache"]);
        assert!(f.excludes(b"a/b/x.tmp", false));
        assert!(f.excludes(b"x.tmp", false));
        assert!(f.excludes(b"home/.cache", true));
        assert!(!f.excludes(b"home/.cache2", true));
        assert!(!f.excludes(b"a.tmp/b", false));
    }

    #[test]
    fn anchored_and_slash_patterns_match_whole_paths() {
        let f = filter(&["/top", "a/b"]);
        assert!(f.excludes(b"top", false));
        assert!(!f.excludes(b"x/top", false));
        assert!(f.excludes(b"a/b", true));
        assert!(f.excludes(b"x/a/b", true));
        assert!(!f.excludes(b"xa/b", true));
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let f = filter(&["build/"]);
        assert!(f.excludes(b"p/build", true));
        assert!(!f.excludes(b"p/build", false));
    }

    #[test]
    fn double_star_crosses_directories_and_triple_star_takes_the_contents() {
        let f = filter(&["/data/**/*.log", "/scratch/***"]);
        assert!(f.excludes(b"data/a/b/c.log", false));
        assert!(f.excludes(b"scratch", true));
        assert!(f.excludes(b"scratch/x/y", false));
        assert!(!f.excludes(b"scratch2", true));
    }

    #[test]
    fn classes_and_non_utf8_names() {
        let f = filter(&["[ab]?.txt"]);
        assert!(f.excludes(b"dir/a1.txt", false));
        assert!(!f.excludes(b"dir/c1.txt", false));
        assert!(filter(&["*.bin"]).excludes(b"d/\xff\xfe.bin", false));
        assert!(ExcludeFilter::new(&["[ab".to_string()]).is_err());
    }
}
