//! Property test of the values editor: random documents with comments and blank lines,
//! random paths (existing scalars, list items, missing keys and branches) and random values.
//! After the edits, an independent parse gives the original document with only those paths
//! changed, every comment is still there in the same order, and only the edited lines of the
//! original are gone.

use proptest::prelude::*;
use proptest::sample::Index;
use runbook::values::{PathSegment, ValuesDocument, ValuesPath, reads_as_non_string};
use serde_json::{Value, json};

/// A generated scalar: how it is written and what it means.
#[derive(Debug, Clone)]
struct Scalar {
    text: &'static str,
}

/// A generated node.
#[derive(Debug, Clone)]
enum Node {
    Scalar(Scalar),
    List(Vec<Scalar>),
    Map(Vec<(String, Node)>),
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop::sample::select(vec![
        "alpha",
        "10.100.113.233",
        "fs-0c29370cc50856b5d.efs.us-west-2.amazonaws.com",
        "/homes/",
        "3.4G",
        "42",
        "0.5",
        "true",
        "false",
        "",
        "~",
        "'on'",
        "'20024'",
        "\"double quoted\"",
        "'it''s'",
        "https://2i2c.org",
        "s3://bucket/$(JUPYTERHUB_USER)",
        // YAML 1.1 words written plain, as in old files: helm reads them as booleans.
        "yes",
        "off",
        "y",
        "0777",
    ])
    .prop_map(|text| Scalar { text })
}

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-zA-Z0-9_-]{0,7}"
        .prop_filter("keys that read as strings", |key| !reads_as_non_string(key))
}

fn entries(inner: impl Strategy<Value = Node>) -> impl Strategy<Value = Vec<(String, Node)>> {
    prop::collection::vec((key(), inner), 1..5).prop_map(|mut entries| {
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(key, _)| seen.insert(key.clone()));
        entries
    })
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        3 => scalar().prop_map(Node::Scalar),
        1 => prop::collection::vec(scalar(), 1..4).prop_map(Node::List),
    ];
    leaf.prop_recursive(3, 30, 5, |inner| entries(inner).prop_map(Node::Map))
}

/// Writes a document: two-space (or four-space) maps, lists indented or not, comment lines
/// and blank lines before entries and comments after scalars, as `decor` says.
struct Writer<'a> {
    out: String,
    comments: Vec<String>,
    decor: &'a [bool],
    next: usize,
    step: usize,
    indent_lists: bool,
}

impl Writer<'_> {
    fn flip(&mut self) -> bool {
        let flag = self.decor[self.next % self.decor.len()];
        self.next += 1;
        flag
    }

    fn comment(&mut self) -> String {
        let comment = format!("# note {} here", self.comments.len());
        self.comments.push(comment.clone());
        comment
    }

    fn scalar_line(&mut self, text: &str) {
        self.out.push_str(text);
        if self.flip() && self.flip() {
            let comment = self.comment();
            // A trailing comment needs a space after the value (or the key's colon).
            self.out.push(' ');
            self.out.push_str(&comment);
        }
        self.out.push('\n');
    }

    fn map(&mut self, entries: &[(String, Node)], indent: usize) {
        let pad = " ".repeat(indent);
        for (key, value) in entries {
            if self.flip() && self.flip() {
                self.out.push('\n');
            }
            if self.flip() && self.flip() {
                let comment = self.comment();
                // Sometimes deeper than the key, as people leave them.
                let extra = if self.flip() { "  " } else { "" };
                self.out.push_str(&format!("{pad}{extra}{comment}\n"));
            }
            match value {
                Node::Scalar(scalar) => {
                    let line = if scalar.text.is_empty() {
                        format!("{pad}{key}:")
                    } else {
                        format!("{pad}{key}: {}", scalar.text)
                    };
                    self.scalar_line(&line);
                }
                Node::List(items) => {
                    self.out.push_str(&format!("{pad}{key}:\n"));
                    let item_pad = if self.indent_lists {
                        " ".repeat(indent + self.step)
                    } else {
                        pad.clone()
                    };
                    for item in items {
                        let line = if item.text.is_empty() {
                            format!("{item_pad}-")
                        } else {
                            format!("{item_pad}- {}", item.text)
                        };
                        self.scalar_line(&line);
                    }
                }
                Node::Map(children) => {
                    self.out.push_str(&format!("{pad}{key}:\n"));
                    self.map(children, indent + self.step);
                }
            }
        }
    }
}

/// Paths that exist (scalars and list items) and paths that do not (new keys, new branches).
fn paths(entries: &[(String, Node)], prefix: &mut Vec<PathSegment>, out: &mut Vec<ValuesPath>) {
    let with = |prefix: &Vec<PathSegment>, segment: PathSegment| {
        let mut path = prefix.clone();
        path.push(segment);
        path
    };
    out.push(ValuesPath::new(with(
        prefix,
        PathSegment::Key("Added".into()),
    )));
    let mut branch = with(prefix, PathSegment::Key("NewBranch".into()));
    branch.push(PathSegment::Key("leaf".into()));
    out.push(ValuesPath::new(branch));
    for (key, node) in entries {
        prefix.push(PathSegment::Key(key.clone()));
        match node {
            Node::Scalar(_) => out.push(ValuesPath::new(prefix.clone())),
            Node::List(items) => {
                for index in 0..items.len() {
                    out.push(ValuesPath::new(with(prefix, PathSegment::Index(index))));
                }
            }
            Node::Map(children) => paths(children, prefix, out),
        }
        prefix.pop();
    }
}

fn new_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
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
            "12:30",
            "2001-12-14",
            "1e3",
            ".inf",
            "",
            " ",
            "a: b",
            "a #b",
            "#x",
            "- x",
            "-x",
            "*x",
            "&x",
            "!x",
            "@x",
            "%x",
            "'q'",
            "\"q\"",
            "{x}",
            "[x]",
            "x,y",
            "10.0.0.9",
            "/",
            "it's",
            "tab\there",
            "line\nbreak",
            "é ü 日本",
        ])
        .prop_map(|text| json!(text)),
        "[ -~]{0,12}".prop_map(|text| json!(text)),
        any::<i64>().prop_map(|int| json!(int)),
        (-1e6f64..1e6).prop_map(|float| json!(float)),
        any::<bool>().prop_map(|flag| json!(flag)),
        Just(Value::Null),
    ]
}

fn set_in(document: &mut Value, path: &ValuesPath, value: &Value) {
    let mut node = document;
    for segment in path.segments() {
        if node.is_null() {
            *node = json!({});
        }
        node = match segment {
            PathSegment::Key(key) => node
                .as_object_mut()
                .expect("a mapping")
                .entry(key.clone())
                .or_insert(Value::Null),
            PathSegment::Index(index) => &mut node[*index],
        };
    }
    *node = value.clone();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn only_the_set_paths_change_and_every_comment_stays(
        top in entries(node()),
        decor in prop::collection::vec(any::<bool>(), 16..64),
        four_spaces in any::<bool>(),
        indent_lists in any::<bool>(),
        picks in prop::collection::vec((any::<Index>(), new_value()), 1..4),
    ) {
        let mut writer = Writer {
            out: String::new(),
            comments: Vec::new(),
            decor: &decor,
            next: 0,
            step: if four_spaces { 4 } else { 2 },
            indent_lists,
        };
        writer.map(&top, 0);
        let text = writer.out.clone();
        let before: Value = serde_saphyr::from_str(&text).expect("the generated document parses");

        let mut candidates = Vec::new();
        paths(&top, &mut Vec::new(), &mut candidates);
        let mut document = ValuesDocument::parse(text.as_str()).expect("the editor reads it");
        let mut expected = before;
        let mut edited_lines = 0;
        for (index, value) in &picks {
            let path = index.get(&candidates);
            let existed = document.get(path).expect("a path that can be followed").is_some();
            document.set(path, value).expect("the edit is made");
            set_in(&mut expected, path, value);
            edited_lines += usize::from(existed);
        }
        let after_text = document.text().to_string();
        let after: Value = serde_saphyr::from_str(&after_text).expect("the result parses");
        prop_assert_eq!(&after, &expected, "\n--- before\n{}\n--- after\n{}", text, after_text);

        // Every comment, once, in the same order.
        let mut from = 0;
        for comment in &writer.comments {
            let found = after_text[from..].find(comment.as_str());
            prop_assert!(found.is_some(), "lost `{}`\n{}", comment, after_text);
            from += found.unwrap_or_default() + comment.len();
            prop_assert_eq!(after_text.matches(comment.as_str()).count(), 1);
        }

        // Only the lines of edited existing values are gone from the original.
        let diff = similar::TextDiff::from_lines(&text, &after_text);
        let removed = diff
            .iter_all_changes()
            .filter(|change| change.tag() == similar::ChangeTag::Delete)
            .count();
        prop_assert!(removed <= edited_lines, "{} lines removed\n{}", removed, diff.unified_diff());

        // Setting the same values again changes nothing.
        let mut again = ValuesDocument::parse(after_text.as_str()).expect("the result parses");
        for (index, value) in &picks {
            let path = index.get(&candidates);
            if expected_at(&expected, path) == Some(value) {
                prop_assert!(!again.set(path, value).expect("setting again works"));
            }
        }
        prop_assert_eq!(again.text(), after_text.as_str());
    }
}

fn expected_at<'a>(document: &'a Value, path: &ValuesPath) -> Option<&'a Value> {
    path.segments()
        .iter()
        .try_fold(document, |node, segment| match segment {
            PathSegment::Key(key) => node.get(key),
            PathSegment::Index(index) => node.get(index),
        })
}
