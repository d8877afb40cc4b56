//! Reading an object's `status.conditions`, as both sides of the API use them: runbook
//! watching a Job it created, and the sandbox's controllers and printers.

use serde_json::Value;

/// The conditions listed in a `status`.
fn conditions(status: &Value) -> impl Iterator<Item = &Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The first condition of type `kind` in a `status`, whatever its status.
pub fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions(status).find(|condition| condition.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether a `status` has a condition of type `kind` whose status is `True`.
pub fn has_condition(status: &Value, kind: &str) -> bool {
    conditions(status).any(|condition| {
        condition.get("type").and_then(Value::as_str) == Some(kind)
            && condition.get("status").and_then(Value::as_str) == Some("True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_are_found_by_type_and_true_only_when_their_status_says_so() {
        let status = json!({"conditions": [
            {"type": "Ready", "status": "False", "message": "not yet"},
            {"type": "Complete", "status": "True"},
        ]});
        assert!(has_condition(&status, "Complete"));
        assert!(!has_condition(&status, "Ready"));
        assert!(!has_condition(&status, "Failed"));
        assert_eq!(condition(&status, "Ready").unwrap()["message"], "not yet");
        assert_eq!(condition(&status, "Failed"), None);
        assert!(!has_condition(&json!(null), "Ready"));
    }
}
