//! Feeds arbitrary bytes to the playbook loader; nothing may panic.
//!
//! The bytes are read as (lossy) UTF-8 and given to `Playbook::from_str`. When the playbook
//! loads, `bind` is called several times: with no `--var` flags; with one `NAME=VALUE` per
//! declared param, the values taken from the input's first and last lines (plus one raw flag
//! from the input, which may lack `=` or name no param); and with every param set to `1`, `a`
//! and `true`, so that the vars are rendered too.
//! Every `Diagnostic` is rendered with `Display`, which must not panic either.
#![no_main]

use std::fmt::Write as _;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runbook::playbook::{Inputs, Playbook};

fn render(error: &impl std::fmt::Display) {
    let mut out = String::new();
    let _ = write!(out, "{error}");
    std::hint::black_box(out);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let playbook = match Playbook::from_str(Path::new("fuzz.yaml"), &text) {
        Ok(playbook) => playbook,
        Err(error) => {
            render(&error);
            return;
        }
    };

    // Values for the flags: the input's last line, and its first line.
    let last = text.lines().last().unwrap_or_default().to_string();
    let first = text.lines().next().unwrap_or_default().to_string();

    let mut sets: Vec<Vec<String>> = vec![Vec::new()];
    let mut flags: Vec<String> = playbook
        .params
        .keys()
        .enumerate()
        .map(|(i, name)| format!("{name}={}", if i % 2 == 0 { &last } else { &first }))
        .collect();
    sets.push(flags.clone());
    // A raw flag straight from the input: may lack `=`, or name no param.
    flags.push(first.clone());
    sets.push(flags);
    sets.push(vec![format!("{}=1", first.trim())]);
    // Plain values that satisfy most types and patterns, so the vars get rendered.
    for value in ["1", "a", "true"] {
        sets.push(
            playbook
                .params
                .keys()
                .map(|name| format!("{name}={value}"))
                .collect(),
        );
    }

    for vars in sets {
        let inputs = Inputs {
            vars,
            vars_file: None,
            defaults: Vec::new(),
        };
        match playbook.bind(&inputs) {
            Ok(bound) => {
                std::hint::black_box(&bound);
            }
            Err(error) => render(&error),
        }
    }
});
