//! A corpus of broken playbooks (`tests/data/bad/*.yaml`), each named after its mistake.
//!
//! For every file, `runbook validate data/bad/NAME.yaml` runs from the `tests/` directory (so
//! the path in messages is stable), with the extra arguments of `NAME.args` when that file
//! exists (one argument per line, for mistakes in `--var` and `--vars-file`). Every case must
//! exit 2, print nothing on stdout, create no state, and explain itself on stderr: `error:`,
//! ` --> FILE:LINE:COL` with the source line and a caret, and a `help:` line. stderr is
//! snapshotted so that a reviewer reads every message.

use std::path::Path;
use std::process::{Command, Stdio};

/// Cases where no position in a file applies; they still need `error:` and `help:`.
const WITHOUT_POSITION: &[&str] = &[
    // Nothing to point at.
    "empty-file",
    "only-comments",
    // The mistake is in a `--var` flag, not in a file.
    "malformed-var-flag",
    "unknown-var-flag",
    "param-wrong-type-int",
    "param-bool-maybe",
    "param-pattern-mismatch",
    "param-pattern-mismatch-secret",
    // The `--vars-file` does not exist.
    "vars-file-missing",
];

/// Secret values in the corpus contain this marker; no output may show it.
const SECRET_MARKER: &str = "TOPSECRET";

/// Extra command-line arguments from `NAME.args`, one per line.
fn extra_args(playbook: &Path) -> Vec<String> {
    match std::fs::read_to_string(playbook.with_extension("args")) {
        Ok(text) => text
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn bad_playbooks_are_rejected_with_a_positioned_diagnostic() {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut problems: Vec<String> = Vec::new();
    let mut cases = 0;

    insta::glob!("data/bad/*.yaml", |path| {
        cases += 1;
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("file name is UTF-8");
        let file_name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("file name is UTF-8");
        let relative = format!("data/bad/{file_name}");
        let home = tempfile::tempdir().expect("temp dir");
        let state_dir = home.path().join("state");

        let mut args = vec!["validate".to_string(), relative];
        args.extend(extra_args(path));
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&args)
            .current_dir(&tests_dir)
            .env("NO_COLOR", "1")
            .env("HOME", home.path())
            .env_remove("RUNBOOK_STATE_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run runbook");
        let code = output.status.code();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);

        // Snapshot first, so that every message can be reviewed even when a check below fails.
        insta::with_settings!({
            description => format!("runbook {}", args.join(" ")),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(stderr);
        });

        let mut problem = |what: String| problems.push(format!("{file_name}: {what}"));
        if code != Some(2) {
            problem(format!("exit code {code:?}, expected 2"));
        }
        if !stdout.is_empty() {
            problem(format!("stdout is not empty: {stdout:?}"));
        }
        if state_dir.exists() {
            problem(format!("the state dir {} was created", state_dir.display()));
        }
        if !stderr.starts_with("error: ") {
            problem("stderr does not start with `error: `".into());
        }
        if stderr.contains(SECRET_MARKER) {
            problem("a secret value is shown unmasked".into());
        }
        if stderr.contains("panicked") {
            problem("the binary panicked".into());
        }
        if !stderr.lines().any(|line| line.starts_with("help: ")) {
            problem("no `help:` line".into());
        }
        // `--vars-file` mistakes point into the vars file, which is under data/bad/ too.
        let positioned = stderr.contains(" --> data/bad/");
        if WITHOUT_POSITION.contains(&stem) {
            if stderr.contains(" --> ") {
                problem("listed as having no position, but stderr has ` --> `".into());
            }
        } else if !positioned {
            problem("no ` --> data/bad/FILE:LINE:COL` position".into());
        } else if !stderr
            .lines()
            .any(|line| line.trim_start().starts_with("| ") && line.contains('^'))
        {
            problem("the position has no source line with a caret".into());
        }
    });

    assert!(cases >= 45, "only {cases} bad playbooks in tests/data/bad");
    assert!(
        !tests_dir.join(".runbook").exists(),
        "a state dir was created under tests/"
    );
    assert!(
        problems.is_empty(),
        "{} bad playbook(s) are not reported as the contract says:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
