//! Label and field selectors, parsed with the grammar and the error cases of the real API
//! server (`k8s.io/apimachinery/pkg/labels` and `.../fields`).

use serde_json::Value;

use crate::Kind;

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// A selector that does not parse; the message is what the server answers (400 BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Identifier(text) => text.clone(),
            Token::Not => "!".into(),
            Token::Equals => "=".into(),
            Token::DoubleEquals => "==".into(),
            Token::NotEquals => "!=".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::Greater => ">".into(),
            Token::Less => "<".into(),
        }
    }
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Greater,
                    _ => Token::Less,
                });
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::DoubleEquals);
                } else {
                    tokens.push(Token::Equals);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEquals);
                } else {
                    tokens.push(Token::Not);
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t\n\r(),=!<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                });
            }
        }
    }
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn error(found: Option<&Token>, expected: &str) -> SelectorError {
        let found = found.map(Token::text).unwrap_or_default();
        SelectorError(format!(
            "unable to parse requirement: found '{found}', expected: {expected}"
        ))
    }

    fn identifier(&mut self, expected: &str) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Identifier(word)) => Ok(word),
            // The words `in` and `notin` are fine as keys and values elsewhere.
            Some(Token::In) => Ok("in".into()),
            Some(Token::NotIn) => Ok("notin".into()),
            other => Err(Parser::error(other.as_ref(), expected)),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            let key = self.identifier("identifier")?;
            check_key(&key)?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            });
        }
        let key = self.identifier("identifier")?;
        check_key(&key)?;
        let operator = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: Vec::new(),
                });
            }
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            Some(Token::In) => Operator::In,
            Some(Token::NotIn) => Operator::NotIn,
            Some(Token::Greater) => Operator::GreaterThan,
            Some(Token::Less) => Operator::LessThan,
            other => {
                return Err(Parser::error(other, "'=', '!=', '==', 'in', notin'"));
            }
        };
        self.next();
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => {
                // `key=` selects an empty value.
                let value = match self.peek() {
                    None | Some(Token::Comma) => String::new(),
                    _ => self.identifier("identifier")?,
                };
                if matches!(operator, Operator::GreaterThan | Operator::LessThan)
                    && value.parse::<i64>().is_err()
                {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                    )));
                }
                vec![value]
            }
        };
        for value in &values {
            check_value(value)?;
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            other => return Err(Parser::error(other.as_ref(), "'('")),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Close) if values.is_empty() => {
                    return Err(SelectorError(
                        "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty".into(),
                    ));
                }
                Some(Token::Identifier(word)) => values.push(word),
                Some(Token::In) => values.push("in".into()),
                Some(Token::NotIn) => values.push("notin".into()),
                other => return Err(Parser::error(other.as_ref(), "',', ')' or identifier")),
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                other => return Err(Parser::error(other.as_ref(), "',' or ')'")),
            }
        }
    }
}

const NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// A DNS subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && !text.is_empty() && text.split('.').all(is_dns_label)
}

/// A DNS label (RFC 1123): lowercase alphanumerics and `-`, at most 63 characters.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Checks a label key (`[prefix/]name`); the same rule applies to label keys on objects.
pub fn check_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(SelectorError(format!(
            "unable to parse requirement: <nil>: Invalid value: {key:?}: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )));
    }
    if !is_label_name(name) {
        return Err(SelectorError(format!(
            "unable to parse requirement: <nil>: Invalid value: {key:?}: {NAME_RULE}"
        )));
    }
    Ok(())
}

/// Checks a label value.
pub fn check_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[0][{value}]: Invalid value: {value:?}: {VALUE_RULE}"
        )))
    }
}

impl LabelSelector {
    /// Parses `app=hub,tier in (a, b),!legacy`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: tokenize(text),
            position: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                other => return Err(Parser::error(other.as_ref(), "',' or 'end of string'")),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// The selector a `matchLabels`/`matchExpressions` object (a Deployment's) describes;
    /// `None` when it selects nothing valid.
    pub fn from_object(selector: &Value) -> Option<Self> {
        let mut requirements = Vec::new();
        for (key, value) in selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![value.as_str()?.to_string()],
            });
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let operator = match expression.get("operator")?.as_str()? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => return None,
            };
            let values = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            requirements.push(Requirement {
                key: expression.get("key")?.as_str()?.to_string(),
                operator,
                values,
            });
        }
        Some(LabelSelector { requirements })
    }

    /// Whether the selector has no requirement (it selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        self.requirements.iter().all(|requirement| {
            let value = labels.get(&requirement.key).and_then(Value::as_str);
            let listed = |value: &str| requirement.values.iter().any(|wanted| wanted == value);
            let number = |value: Option<&str>| value.and_then(|value| value.parse::<i64>().ok());
            let bound = number(requirement.values.first().map(String::as_str));
            match requirement.operator {
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::Equals | Operator::In => value.is_some_and(listed),
                Operator::NotEquals | Operator::NotIn => !value.is_some_and(listed),
                Operator::GreaterThan => {
                    matches!((number(value), bound), (Some(v), Some(b)) if v > b)
                }
                Operator::LessThan => matches!((number(value), bound), (Some(v), Some(b)) if v < b),
            }
        })
    }
}

/// A parsed `fieldSelector`: `metadata.name=x,status.phase!=Running`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// The fields each kind can be selected by: the real server's set, plus the spec fields the
/// NFS playbooks look objects up by (`spec.volumeName` on claims, `spec.claimRef.*` and
/// `status.phase` on volumes), which a real server does not index.
fn selectable_fields(kind: &Kind) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Namespace") => &["status.phase"],
        ("", "Secret") => &["type"],
        ("", "PersistentVolumeClaim") => &["spec.volumeName", "status.phase"],
        ("", "PersistentVolume") => &[
            "spec.claimRef.name",
            "spec.claimRef.namespace",
            "status.phase",
        ],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        // What `kubectl describe` selects an object's events by.
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses a field selector for `kind`; unknown fields are refused as the server does.
    pub fn parse(text: &str, kind: &Kind) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in split_unescaped(text, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, true, value)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !(field == "metadata.name"
                || field == "metadata.namespace"
                || selectable_fields(kind).contains(&field))
            {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), equal, unescape(value.trim())));
        }
        Ok(FieldSelector { terms })
    }

    /// A selector for one name (what a watch on an item path means).
    pub fn name(name: &str) -> Self {
        FieldSelector {
            terms: vec![("metadata.name".into(), true, name.into())],
        }
    }

    /// Whether the object's fields match every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, wanted)| {
            let path: Vec<&str> = field.split('.').collect();
            let actual = match path.iter().try_fold(object, |value, key| value.get(key)) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *wanted) == *equal
        })
    }
}

/// Splits on `separator` except where it is escaped with a backslash.
pub fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        let current = parts
            .last_mut()
            .expect("parts starts non-empty and only grows");
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else {
            current.push(c);
        }
    }
    parts
}

fn unescape(text: &str) -> String {
    let mut result = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped || c != '\\' {
            result.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_kind;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "hub", "labels": labels}, "status": {"phase": "Running"}, "spec": {"nodeName": "n1"}})
    }

    fn selects(selector: &str, labels: Value) -> bool {
        LabelSelector::parse(selector)
            .unwrap()
            .matches(&labelled(labels))
    }

    #[test]
    fn equality_and_inequality() {
        assert!(selects("app=hub", json!({"app": "hub"})));
        assert!(selects("app==hub", json!({"app": "hub"})));
        assert!(!selects("app=hub", json!({"app": "proxy"})));
        assert!(selects("app!=hub", json!({"app": "proxy"})));
        // A missing label is "not equal".
        assert!(selects("app!=hub", json!({})));
        assert!(selects(
            "component=singleuser-server, app = jupyterhub",
            json!({"app": "jupyterhub", "component": "singleuser-server"})
        ));
        assert!(selects("empty=", json!({"empty": ""})));
    }

    #[test]
    fn sets_and_existence() {
        assert!(selects("tier in (a, b)", json!({"tier": "b"})));
        assert!(!selects("tier in (a,b)", json!({"tier": "c"})));
        assert!(!selects("tier in (a,b)", json!({})));
        assert!(selects("tier notin (a,b)", json!({"tier": "c"})));
        assert!(selects("tier notin (a,b)", json!({})));
        assert!(selects("tier", json!({"tier": "x"})));
        assert!(!selects("tier", json!({})));
        assert!(selects("!tier", json!({})));
        assert!(!selects("!tier", json!({"tier": "x"})));
        assert!(selects(
            "hub.jupyter.org/username in (alice),!legacy",
            json!({"hub.jupyter.org/username": "alice"})
        ));
        assert!(selects("replicas>2", json!({"replicas": "3"})));
        assert!(selects("", json!({})));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "app in b",
            "app in ()",
            "app in (a",
            "=x",
            "app=a=b",
            "a b",
            "Bad Key=1",
            "app=!x",
            "x>y",
            "app=va lue",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
        let error = LabelSelector::parse("app in b").unwrap_err();
        assert_eq!(
            error.0,
            "unable to parse requirement: found 'b', expected: '('"
        );
        assert!(
            LabelSelector::parse("app=-x")
                .unwrap_err()
                .0
                .contains("Invalid value: \"-x\"")
        );
    }

    #[test]
    fn object_selectors_become_label_selectors() {
        let selector = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "hub"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]
        }))
        .unwrap();
        assert!(selector.matches(&labelled(json!({"app": "hub", "tier": "a"}))));
        assert!(!selector.matches(&labelled(json!({"app": "hub"}))));
    }

    #[test]
    fn field_selectors() {
        let pods = find_kind("Pod").unwrap();
        let object = labelled(json!({}));
        let matches = |text: &str| FieldSelector::parse(text, pods).unwrap().matches(&object);
        assert!(matches("metadata.name=p"));
        assert!(matches("metadata.namespace==hub,status.phase=Running"));
        assert!(matches("status.phase!=Pending"));
        assert!(!matches("spec.nodeName=n2"));
        assert!(matches("status.podIP="));
        assert_eq!(
            FieldSelector::parse("spec.volumes=x", pods).unwrap_err().0,
            "field label not supported: spec.volumes"
        );
        assert!(FieldSelector::parse("nonsense", pods).is_err());
        let claims = find_kind("pvc").unwrap();
        let claim = json!({"metadata": {"name": "c"}, "spec": {"volumeName": "v"}});
        assert!(
            FieldSelector::parse("spec.volumeName=v", claims)
                .unwrap()
                .matches(&claim)
        );
    }
}
