//! The crate's layers, lowest first, and the test that keeps every import pointing down.
//!
//! A module may use the crate root's own items (`Exit`, `Error`, `Result`, `Diagnostic`) and
//! the modules of lower layers, never a module of its own or a higher layer: that is what
//! keeps the core free of import circles (an action that wants to reach the screen goes
//! through [`crate::actions::StepOutput`], which `report` implements; the engine emits
//! through [`crate::engine::event::RunOutput`]). The README's Development section explains
//! the layers; this table is what the test checks.

/// Top-level modules by layer, lowest first. Modules of one layer do not import each other.
pub const LAYERS: &[&[&str]] = &[
    // Knows nothing of runbooks: positioned messages, the helm values editor, how a step
    // can fail.
    &["diagnostic", "values", "failure"],
    // The forms settings are written in: durations, commands, conditions, templated values.
    &["syntax"],
    // The Kubernetes client.
    &["kube"],
    // Templates and masking.
    &["render"],
    // What a step does.
    &["actions"],
    // The language: loading and checking a playbook.
    &["playbook"],
    // Plan and run: the step loop, the journal, the lock.
    &["engine"],
    // How runs, plans and statuses are shown.
    &["report"],
    // A playbook over every hub of a deployer cluster: one run per hub.
    &["fleet"],
    // `--sandbox`: the simulated cluster (crates/sandbox-cluster) started for a run.
    &["sandbox"],
];

/// Imports that break the layering today and are being removed, as (from, to).
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

/// The layer of a top-level module, if it is one.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules a file's code (its tests left out) names through `crate::`, with
/// the line of each mention.
fn crate_modules_named(code: &str) -> Vec<(usize, String)> {
    let mut named = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                named.extend(group_heads(group).into_iter().map(|head| (index + 1, head)));
            } else {
                named.push((index + 1, identifier_at(rest)));
            }
        }
    }
    named
}

/// The first path segment of each item of a `{a, b::c, d::{e, f}}` group (without the `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item_start = true;
    for (index, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            ch if at_item_start && !ch.is_whitespace() => {
                heads.push(identifier_at(&group[index..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier_at(text: &str) -> String {
    text.chars()
        .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
        .collect()
}

/// The code of a file without its unit tests: tests may use anything.
fn without_tests(code: &str) -> &str {
    code.find("#[cfg(test)]\nmod tests")
        .map_or(code, |at| &code[..at])
}

/// Every import of `file` (its top-level module `from`) that reaches a module of its own or
/// a higher layer, as "file:line: from -> to".
fn violations(from: &str, file: &str, code: &str) -> Vec<String> {
    let Some(own) = layer_of(from) else {
        return Vec::new();
    };
    crate_modules_named(without_tests(code))
        .into_iter()
        .filter(|(_, to)| to != from && !KNOWN_EXCEPTIONS.contains(&(from, to.as_str())))
        .filter(|(_, to)| layer_of(to).is_some_and(|layer| layer >= own))
        .map(|(line, to)| format!("{file}:{line}: {from} -> {to}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every `.rs` file under `dir`, with its path relative to `src/`.
    fn sources(dir: &Path, src: &Path, found: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, src, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(src).unwrap_or(&path);
                let code = std::fs::read_to_string(&path).expect("a source file reads");
                found.push((relative.display().to_string(), code));
            }
        }
    }

    #[test]
    fn every_import_points_to_a_lower_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &src, &mut files);
        assert!(
            files.len() > 50,
            "found only {} files under src/",
            files.len()
        );
        let mut found = Vec::new();
        for (file, code) in &files {
            let top = file
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".rs");
            found.extend(violations(top, file, code));
        }
        assert!(
            found.is_empty(),
            "imports that reach a module of the same or a higher layer (see src/layering.rs):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn a_lower_module_importing_a_higher_one_is_found() {
        let code = "use std::fmt;\nuse crate::engine::lock::RunLock;\n";
        assert_eq!(
            violations("kube", "kube/cluster.rs", code),
            ["kube/cluster.rs:2: kube -> engine"]
        );
        let grouped = "use crate::{diagnostic::Source, report::{Progress, Verbosity}};\n";
        assert_eq!(
            violations("actions", "actions/mod.rs", grouped),
            ["actions/mod.rs:1: actions -> report"]
        );
        let same_layer = "let x = crate::values::read(path);\n";
        assert_eq!(
            violations("failure", "failure.rs", same_layer),
            ["failure.rs:1: failure -> values"]
        );
    }

    #[test]
    fn downward_imports_comments_and_tests_pass() {
        let code = "use crate::syntax::Templated;\n// crate::engine is above us\n\
                    use crate::{Exit, Result};\n#[cfg(test)]\nmod tests {\n    use crate::engine::run;\n}\n";
        assert!(violations("actions", "actions/run.rs", code).is_empty());
    }
}
