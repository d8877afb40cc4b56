//! Label and field selectors checked before they are sent, with the grammar of the API server
//! as the sandbox cluster implements it ([`kube_kinds::selectors`]; one parser for both),
//! so that a malformed selector is invalid input found before any request, not a 400.

use kube_kinds::selectors::{FieldSelector, LabelSelector, split_unescaped};

/// How to write a label selector, for `help:` lines.
pub const LABEL_SELECTOR_HELP: &str = "write requirements separated by commas: `key=value`, \
     `key!=value`, `key in (a, b)`, `key notin (a, b)`, `key` or `!key`, e.g. \
     `component=singleuser-server`";

/// How to write a field selector, for `help:` lines.
pub const FIELD_SELECTOR_HELP: &str = "write `field=value` or `field!=value` terms separated by \
     commas, e.g. `status.phase=Running,spec.nodeName=node-1`";

/// Checks a label selector (`component=singleuser-server,tier in (a, b)`): its syntax and its
/// keys and values. The error is the server's own message.
pub fn check_label_selector(text: &str) -> Result<(), String> {
    LabelSelector::parse(text)
        .map(|_| ())
        .map_err(|error| error.0)
}

/// Checks the syntax of a field selector (`status.phase=Running`). Which fields a kind can be
/// selected by is left to the server: servers add selectable fields from version to version,
/// and the sandbox knows a few more than real ones do, so a field it does not know is not
/// refused here (a real server answers 400 for it, which the actions report as invalid input).
pub fn check_field_selector(text: &str) -> Result<(), String> {
    // The grammar is the same for every kind; the kind only decides the supported fields.
    let Some(kind) = super::kinds().first() else {
        return Ok(());
    };
    // Term by term: the parser stops at the first unsupported field, and the terms after it
    // must still be checked.
    for term in split_unescaped(text, ',') {
        match FieldSelector::parse(&term, kind) {
            Err(error) if !is_unsupported_field(&error.0) => {
                // The message quotes the selector; here that is the term, so put the
                // whole selector back.
                return Err(error.0.replacen(
                    &format!("invalid selector: '{term}'"),
                    &format!("invalid selector: '{text}'"),
                    1,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the parser's complaint is only that the kind is not selectable by a field.
fn is_unsupported_field(message: &str) -> bool {
    message.starts_with("field label not supported")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_are_checked_as_the_server_does() {
        assert!(check_label_selector("component=singleuser-server").is_ok());
        assert!(check_label_selector("tier in (a, b),!legacy").is_ok());
        assert!(check_label_selector("").is_ok());
        assert_eq!(
            check_label_selector("app in b"),
            Err("unable to parse requirement: found 'b', expected: '('".into())
        );
        assert!(check_label_selector("app=va lue").is_err());
    }

    #[test]
    fn field_selectors_are_checked_for_syntax_not_for_supported_fields() {
        assert!(check_field_selector("status.phase=Running,spec.nodeName!=n1").is_ok());
        // Not a field the parser's kind is selectable by; the server decides.
        assert!(check_field_selector("spec.volumeName=pv-1").is_ok());
        assert_eq!(
            check_field_selector("spec.nodeName=n1,status.phase:Running"),
            Err("invalid selector: 'spec.nodeName=n1,status.phase:Running'; can't understand 'status.phase:Running'".into())
        );
        // The parser's wording that the check relies on.
        let pods = crate::kube::find_kind("Pod").expect("Pod is a known kind");
        let error = FieldSelector::parse("spec.volumes=x", pods).expect_err("unsupported");
        assert!(is_unsupported_field(&error.0), "{}", error.0);
    }
}
