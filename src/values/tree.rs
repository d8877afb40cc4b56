//! The meaning of a document, as a YAML reader sees it (aliases expanded, quotes gone), used
//! to read values and to prove that an edit changed nothing but what was asked.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::path::{PathSegment, ValuesPath};

/// A parsed YAML value. Mappings keep their order, so a reordering counts as a change.
#[derive(Debug, Clone)]
pub enum Node {
    /// `~`, `null`, or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Null, Node::Null) => true,
            (Node::Bool(a), Node::Bool(b)) => a == b,
            (Node::Int(a), Node::Int(b)) => a == b,
            // Same bits, so that NaN equals NaN and an unchanged document equals itself.
            (Node::Float(a), Node::Float(b)) => a.to_bits() == b.to_bits(),
            (Node::Str(a), Node::Str(b)) => a == b,
            (Node::Seq(a), Node::Seq(b)) => a == b,
            (Node::Map(a), Node::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Node {
    /// A key as a path segment sees it: helm turns every key into a string.
    pub fn key_text(&self) -> String {
        match self {
            Node::Str(text) => text.clone(),
            Node::Null => "null".into(),
            Node::Bool(flag) => flag.to_string(),
            Node::Int(int) => int.to_string(),
            Node::Float(float) => float.to_string(),
            Node::Seq(_) | Node::Map(_) => format!("{:?}", self),
        }
    }

    /// What kind of value this is, for messages: "a mapping", "a list", "the string `x`".
    pub fn describe(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(flag) => format!("the boolean `{flag}`"),
            Node::Int(int) => format!("the number `{int}`"),
            Node::Float(float) => format!("the number `{float}`"),
            Node::Str(text) => format!("the string `{text}`"),
            Node::Seq(_) => "a list".into(),
            Node::Map(_) => "a mapping".into(),
        }
    }

    /// The value at `path`, if every step of it exists.
    pub fn get(&self, path: &ValuesPath) -> Option<&Node> {
        path.segments()
            .iter()
            .try_fold(self, |node, segment| node.child(segment))
    }

    fn child(&self, segment: &PathSegment) -> Option<&Node> {
        match (self, segment) {
            (Node::Map(entries), PathSegment::Key(key)) => entries
                .iter()
                .find(|(candidate, _)| candidate.key_text() == *key)
                .map(|(_, value)| value),
            (Node::Seq(items), PathSegment::Index(index)) => items.get(*index),
            _ => None,
        }
    }

    /// This document with `value` at `path`, as an edit that adds missing keys at the end of
    /// their mapping and replaces a null on the way by a mapping should leave it. `None` when
    /// the path crosses a list, a scalar, or a missing list item.
    pub fn with(&self, path: &ValuesPath, value: Node) -> Option<Node> {
        let mut copy = self.clone();
        let mut node = &mut copy;
        for segment in path.segments() {
            if matches!(node, Node::Null) && matches!(segment, PathSegment::Key(_)) {
                *node = Node::Map(Vec::new());
            }
            node = match (node, segment) {
                (Node::Map(entries), PathSegment::Key(key)) => {
                    let at = match entries.iter().position(|(k, _)| k.key_text() == *key) {
                        Some(at) => at,
                        None => {
                            entries.push((Node::Str(key.clone()), Node::Null));
                            entries.len() - 1
                        }
                    };
                    &mut entries[at].1
                }
                (Node::Seq(items), PathSegment::Index(index)) => items.get_mut(*index)?,
                _ => return None,
            };
        }
        *node = value;
        Some(copy)
    }

    /// The first place, in document order, where `self` and `other` differ (`None` when they
    /// are equal), as a path and the two values there.
    pub fn first_difference<'a>(
        &'a self,
        other: &'a Node,
    ) -> Option<(ValuesPath, Option<&'a Node>, Option<&'a Node>)> {
        let mut segments = Vec::new();
        first_difference(self, other, &mut segments).map(|(a, b)| (ValuesPath::new(segments), a, b))
    }

    /// A scalar value from JSON (`None` for a list or an object).
    pub fn from_json_scalar(value: &serde_json::Value) -> Option<Node> {
        Some(match value {
            serde_json::Value::Null => Node::Null,
            serde_json::Value::Bool(flag) => Node::Bool(*flag),
            serde_json::Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    Node::Int(i128::from(int))
                } else if let Some(int) = number.as_u64() {
                    Node::Int(i128::from(int))
                } else {
                    Node::Float(number.as_f64()?)
                }
            }
            serde_json::Value::String(text) => Node::Str(text.clone()),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
        })
    }

    /// Whether this value is what helm would also read from `value`: numbers compare by
    /// value (helm reads every number as a float), everything else exactly.
    pub fn matches_json(&self, value: &serde_json::Value) -> bool {
        match (self, value) {
            (Node::Int(_) | Node::Float(_), serde_json::Value::Number(number)) => {
                number.as_f64() == self.as_f64()
            }
            _ => Node::from_json_scalar(value).is_some_and(|wanted| wanted == *self),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Int(int) => Some(*int as f64),
            Node::Float(float) => Some(*float),
            _ => None,
        }
    }

    /// As JSON: keys become strings; NaN and infinities (which JSON cannot hold) become
    /// the strings `.nan`, `.inf`, `-.inf`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Node::Null => serde_json::Value::Null,
            Node::Bool(flag) => serde_json::Value::Bool(*flag),
            Node::Int(int) => i64::try_from(*int)
                .map(serde_json::Value::from)
                .or_else(|_| u64::try_from(*int).map(serde_json::Value::from))
                .unwrap_or_else(|_| serde_json::Value::String(int.to_string())),
            Node::Float(float) => serde_json::Number::from_f64(*float)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| {
                    let text = if float.is_nan() {
                        ".nan"
                    } else if *float > 0.0 {
                        ".inf"
                    } else {
                        "-.inf"
                    };
                    serde_json::Value::String(text.into())
                }),
            Node::Str(text) => serde_json::Value::String(text.clone()),
            Node::Seq(items) => items.iter().map(Node::to_json).collect(),
            Node::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(key, value)| (key.key_text(), value.to_json()))
                    .collect(),
            ),
        }
    }
}

fn first_difference<'a>(
    a: &'a Node,
    b: &'a Node,
    segments: &mut Vec<PathSegment>,
) -> Option<(Option<&'a Node>, Option<&'a Node>)> {
    match (a, b) {
        (Node::Map(left), Node::Map(right)) => {
            for (i, (key, value)) in left.iter().enumerate() {
                match right.get(i) {
                    Some((other_key, other_value)) if other_key == key => {
                        segments.push(PathSegment::Key(key.key_text()));
                        if let Some(found) = first_difference(value, other_value, segments) {
                            return Some(found);
                        }
                        segments.pop();
                    }
                    Some(_) | None => {
                        segments.push(PathSegment::Key(key.key_text()));
                        let moved = right.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                        return Some((Some(value), moved));
                    }
                }
            }
            right.get(left.len()).map(|(key, value)| {
                segments.push(PathSegment::Key(key.key_text()));
                (None, Some(value))
            })
        }
        (Node::Seq(left), Node::Seq(right)) => {
            for (i, value) in left.iter().enumerate() {
                segments.push(PathSegment::Index(i));
                match right.get(i) {
                    Some(other) => {
                        if let Some(found) = first_difference(value, other, segments) {
                            return Some(found);
                        }
                    }
                    None => return Some((Some(value), None)),
                }
                segments.pop();
            }
            right.get(left.len()).map(|value| {
                segments.push(PathSegment::Index(left.len()));
                (None, Some(value))
            })
        }
        _ if a == b => None,
        _ => Some((Some(a), Some(b))),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn reads_types_as_a_yaml_reader_does() {
        let node = parse("a: 1\nb: '1'\nc: 1.5\nd: ~\ne: [x]\n1: int key\n");
        let path = |p: &str| ValuesPath::parse(p).unwrap();
        assert_eq!(node.get(&path("a")), Some(&Node::Int(1)));
        assert_eq!(node.get(&path("b")), Some(&Node::Str("1".into())));
        assert_eq!(node.get(&path("c")), Some(&Node::Float(1.5)));
        assert_eq!(node.get(&path("d")), Some(&Node::Null));
        assert_eq!(node.get(&path("e[0]")), Some(&Node::Str("x".into())));
        assert_eq!(node.get(&path("1")), Some(&Node::Str("int key".into())));
        assert_eq!(node.get(&path("e[1]")), None);
    }

    #[test]
    fn with_adds_missing_keys_at_the_end_and_finds_differences() {
        let before = parse("a: {b: 1}\nz: 2\n");
        let path = ValuesPath::parse("a.c.d").unwrap();
        let after = before.with(&path, Node::Str("x".into())).unwrap();
        assert_eq!(after, parse("a: {b: 1, c: {d: x}}\nz: 2\n"));
        let (at, old, new) = before.first_difference(&after).unwrap();
        assert_eq!(at.to_string(), "a.c");
        assert!(old.is_none() && new.is_some());
        assert!(
            before
                .with(&ValuesPath::parse("z.q").unwrap(), Node::Null)
                .is_none()
        );
        assert!(before.first_difference(&before.clone()).is_none());
    }
}
