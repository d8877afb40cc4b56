//! What the parts of a playbook and of a vars file are called, and how to write them, so that
//! YAML errors in them are explained in the playbook's own words.

use crate::diagnostic::{Vocabulary, YamlPath};

/// The words of a playbook file.
pub(super) struct PlaybookWords;

/// The keys of a block step whose value is a list of steps.
fn is_block_part(key: &str) -> bool {
    matches!(key, "block" | "rescue" | "always")
}

/// Keys whose value is a condition.
fn is_condition(key: &str) -> bool {
    matches!(key, "when" | "require" | "until" | "check")
}

impl Vocabulary for PlaybookWords {
    fn document(&self) -> Option<&'static str> {
        Some("playbook")
    }

    fn noun(&self, path: &YamlPath) -> Option<&'static str> {
        match path.parts().as_slice() {
            [] => Some("playbook"),
            ["steps", "-"] => Some("step"),
            ["steps", "-", "id"] => Some("step id"),
            ["steps", "-", part, "-"] if is_block_part(part) => Some("step"),
            ["steps", "-", part, "-", "id"] if is_block_part(part) => Some("step id"),
            ["params", _] => Some("param"),
            ["params", _, "type"] => Some("param type"),
            _ => None,
        }
    }

    fn expected(&self, path: &YamlPath) -> Option<&'static str> {
        Some(match path.parts().as_slice() {
            [] => "a mapping with `runbook:`, `name:` and `steps:`",
            ["steps"] => "a list",
            ["steps", "-"] => "a mapping with `id:` and one action",
            ["steps", "-", part] if is_block_part(part) => "a list of steps",
            ["steps", "-", part, "-"] if is_block_part(part) => {
                "a mapping with `id:` and one action"
            }
            ["params"] => "a mapping from param names to their settings",
            ["params", _] => "a mapping of settings such as `{type: int, default: 4}`",
            ["vars"] => "a mapping from var names to values",
            [.., "env"] => "a mapping from variable names to values",
            [.., "ok_codes"] => "a list of exit codes",
            [.., "confirm"] => "a question (a string)",
            [.., "context"] => "the name of a kubeconfig context (a string)",
            ["steps", "-", "loop"] | ["steps", "-", _, "-", "loop"] => {
                "a list, or an expression that gives one"
            }
            [.., key] if is_condition(key) => "an expression or true/false",
            _ => return None,
        })
    }

    fn help(&self, path: &YamlPath) -> Option<String> {
        Some(match path.parts().as_slice() {
            [] => "start the file with `runbook: 1`, then `name:` and a list of `steps:`".into(),
            ["steps"] => "start each step with `- id: ...`, indented under `steps:`".into(),
            ["steps", "-"] => "a step has an id and one action, e.g.\n\
                               \x20     - id: bye\n\
                               \x20       run: [echo, bye]"
                .into(),
            ["steps", "-", "id"] => "give the step a unique id such as `copy-homes`".into(),
            ["steps", "-", part] if is_block_part(part) => format!(
                "put each step under `{part}:` on its own line, e.g.\n\
                 \x20   {part}:\n\
                 \x20     - id: bye\n\
                 \x20       run: [echo, bye]"
            ),
            ["params"] => "put each param on its own line under `params:`, e.g. \
                           `hub: {required: true}`"
                .into(),
            ["params", _] => "describe the param with a mapping, e.g. `{type: int, default: 4}`, \
                              or leave it empty for a required string"
                .into(),
            ["vars"] => "put each var on its own line under `vars:`, e.g. \
                         `pv: \"{{ hub }}-home\"`"
                .into(),
            [.., "ok_codes"] => {
                "list the exit codes that count as success, e.g. `ok_codes: [0, 1]`".into()
            }
            [.., "confirm"] => {
                "write the question as a string, e.g. `confirm: \"Delete the old homes?\"`".into()
            }
            [.., "env"] => "write one `NAME: value` per line under `env:`".into(),
            _ => return None,
        })
    }

    fn example(&self, path: &YamlPath) -> Option<&'static str> {
        Some(match path.parts().as_slice() {
            ["runbook"] => "runbook: 1",
            ["name"] => "name: my-playbook",
            ["description"] => "description: What this playbook does.",
            ["steps", "-", "id"] => "id: copy-homes",
            ["params", _, "type"] => "type: string",
            [.., "when"] => "when: \"jobs > 2\"",
            [.., "require"] => "require: \"users == 0\"",
            [.., "until"] => "until: \"result.rc == 0\"",
            [.., "check"] => "check: \"result.rc == 0\"",
            [.., "retries"] => "retries: 3",
            [.., "delay"] => "delay: 10s",
            [.., "timeout"] => "timeout: 5m",
            [.., "register"] => "register: counted",
            [.., "context"] => "context: other-cluster",
            [.., "cwd"] => "cwd: /tmp",
            [.., "shell"] => "shell: true",
            [.., "secret"] => "secret: true",
            [.., "required"] => "required: true",
            _ => return None,
        })
    }

    fn range(&self, path: &YamlPath) -> Option<&'static str> {
        match path.parts().as_slice() {
            [.., "ok_codes", _] => Some("an exit code is a number from 0 to 255"),
            _ => None,
        }
    }
}

/// The words of a `--vars-file`.
pub(super) struct VarsFileWords;

impl Vocabulary for VarsFileWords {
    fn document(&self) -> Option<&'static str> {
        Some("vars file")
    }

    fn noun(&self, path: &YamlPath) -> Option<&'static str> {
        path.0.is_empty().then_some("vars file")
    }

    fn expected(&self, path: &YamlPath) -> Option<&'static str> {
        path.0
            .is_empty()
            .then_some("a mapping from param names to values")
    }

    fn help(&self, path: &YamlPath) -> Option<String> {
        path.0
            .is_empty()
            .then(|| "write one `name: value` per line, e.g. `hub: prod`".to_string())
    }
}
