//! The values editor against real values files (`tests/data/values/`, from 2i2c's public
//! infrastructure repository, BSD-3-Clause, licence beside them): for every file, an
//! existing scalar, a missing leaf, a missing branch and, in daskhub files, all of it under
//! `basehub:`. Each edit is snapshotted as a diff, checked by parsing the result
//! independently, and done a second time to see that it changes nothing.

use runbook::values::{PathSegment, ValuesDocument, ValuesError, ValuesPath};
use serde_json::{Value, json};

/// Parses YAML the way a reader would, independently of the editor's own check.
fn meaning(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("the file parses")
}

/// `document` with `value` at `path`, adding missing keys (what the edit must amount to).
fn with(document: &Value, path: &ValuesPath, value: &Value) -> Value {
    let mut copy = document.clone();
    let mut node = &mut copy;
    for segment in path.segments() {
        if node.is_null() {
            *node = json!({});
        }
        node = match segment {
            PathSegment::Key(key) => node
                .as_object_mut()
                .expect("a mapping on the way")
                .entry(key.clone())
                .or_insert(Value::Null),
            PathSegment::Index(index) => &mut node[*index],
        };
    }
    *node = value.clone();
    copy
}

fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

/// Changed lines of a diff: (removed, added).
fn changed_lines(diff: &str) -> (usize, usize) {
    let lines = diff.lines().filter(|line| !line.starts_with("@@"));
    let (mut removed, mut added) = (0, 0);
    for line in lines {
        if line.starts_with('-') {
            removed += 1;
        } else if line.starts_with('+') {
            added += 1;
        }
    }
    (removed, added)
}

/// Sets `path` to `value` in `text`, checks the result every way, and returns the diff.
fn edit_and_check(text: &str, path: &str, value: &Value) -> String {
    let path = ValuesPath::parse(path).expect("a valid path");
    let mut document = ValuesDocument::parse(text).expect("the fixture parses");
    let existed = document.get(&path).expect("the path can be followed");
    assert!(
        document.set(&path, value).expect("the edit is made"),
        "{path}: something changed"
    );
    let after = document.text().to_string();

    // The re-parse check, independent of the editor's: only `path` differs.
    assert_eq!(
        meaning(&after),
        with(&meaning(text), &path, value),
        "{path}"
    );
    // Every comment line is still there, in order (lines of a replaced block scalar that
    // start with `#` are its text, not comments).
    let old_lines: Vec<String> = existed
        .as_ref()
        .and_then(|found| found.value.as_str())
        .map(|old| old.lines().map(|line| line.trim().to_string()).collect())
        .unwrap_or_default();
    let comments = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.trim_start().starts_with('#'))
            .filter(|line| !old_lines.contains(&line.trim().to_string()))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(comments(&after), comments(text), "{path}: comments kept");

    // The second run is a skip: the value is there, and setting it again changes nothing.
    let mut again = ValuesDocument::parse(after.as_str()).expect("the result parses");
    assert!(again.has(&path, value), "{path}: the check sees the value");
    assert!(!again.set(&path, value).expect("setting again works"));
    assert_eq!(again.text(), after);

    let diff = diff(text, &after);
    let one_line = |found: &runbook::values::Found| {
        found
            .value
            .as_str()
            .map_or(found.value.is_number(), |old| !old.contains('\n'))
    };
    if existed.as_ref().is_some_and(one_line) {
        assert_eq!(
            changed_lines(&diff),
            (1, 1),
            "{path}: one line changes\n{diff}"
        );
    }
    diff
}

/// The paths each fixture is edited at: `(what, path, value)`. A leading `^` stands for
/// `basehub.` in the daskhub files and nothing elsewhere.
fn cases(file: &str) -> Vec<(&'static str, String, Value)> {
    let mut cases: Vec<(&'static str, &str, Value)> = vec![
        ("existing scalar", "^nfs.pv.serverIP", json!("10.100.0.42")),
        ("missing leaf", "^nfs.pv.baseShareName", json!("/")),
        (
            "missing branch",
            "^nfs.volumeReporter.resources.requests.memory",
            json!("64Mi"),
        ),
        (
            "missing branch, YAML 1.1 word",
            "^jupyterhub.hub.annotations.runbook/nfs-migrated",
            json!("yes"),
        ),
    ];
    match file {
        "utoronto_common.values.yaml" => {
            cases[1] = ("missing leaf", "^nfs.pv.shareNameOverride", json!("homes"));
            cases.push((
                "existing scalar, quoted, in a list",
                "jupyterhub.singleuser.initContainers[0].volumeMounts[0].subPath",
                json!("{username}"),
            ));
            cases.push((
                "existing scalar with comments around it",
                "nfs.pv.baseShareName",
                json!("/2i2cutorontohubstorage/"),
            ));
        }
        "jupyter-health_staging.values.yaml" => cases.push((
            "list item with a trailing comment",
            "jupyterhub.hub.config.GenericOAuthenticator.allowed_groups[1]",
            json!("20018"),
        )),
        "nasa-cryo_prod.values.yaml" => cases.push((
            "number with a trailing comment",
            "^jupyterhub-home-nfs.quotaEnforcer.config.QuotaManager.hard_quota",
            json!(40),
        )),
        "2i2c-aws-us_showcase.values.yaml" => cases.push((
            "empty value (null)",
            "^jupyterhub.singleuser.profileList[0].kubespawner_override.mem_limit",
            json!("8G"),
        )),
        "ucmerced_prod.values.yaml" => cases.push((
            "missing leaf after deeper-indented comments",
            "jupyterhub.singleuser.profileList[1].kubespawner_override.cpu_limit",
            json!(2.0),
        )),
        "projectpythia_common.values.yaml" => {
            cases.push((
                "octal-looking string",
                "jupyterhub.singleuser.extraFiles.00-credential-helper.mode",
                json!("0777"),
            ));
            cases.push((
                "block scalar",
                "jupyterhub.hub.extraConfig.\"00-set-gitconfig.py\"",
                json!("c.Spawner.default_url = '/lab'\n"),
            ));
        }
        "hhmi_staging.values.yaml" => cases.push((
            "under a null with a comment above it",
            "jupyterhub.custom.singleuserAdmin.extraVolumeMounts.home.readOnly",
            json!(true),
        )),
        _ => {}
    }
    let text = std::fs::read_to_string(format!("tests/data/values/{file}")).expect("fixture");
    let prefix = if meaning(&text).get("basehub").is_some() {
        "basehub."
    } else {
        ""
    };
    cases
        .into_iter()
        .map(|(what, path, value)| {
            let path = match path.strip_prefix('^') {
                Some(rest) => format!("{prefix}{rest}"),
                None => path.to_string(),
            };
            (what, path, value)
        })
        .collect()
}

#[test]
fn every_fixture_is_edited_at_several_paths() {
    insta::glob!("data/values/*.values.yaml", |file| {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let mut report = String::new();
        for (what, path, value) in cases(&name) {
            let diff = edit_and_check(&text, &path, &value);
            report.push_str(&format!("## {what}: {path} = {value}\n{diff}\n"));
        }
        insta::assert_snapshot!(report);
    });
}

/// Every scalar leaf of a JSON value, as paths.
fn leaves(value: &Value, path: &mut Vec<PathSegment>, out: &mut Vec<ValuesPath>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(PathSegment::Key(key.clone()));
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(PathSegment::Index(index));
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => out.push(ValuesPath::new(path.clone())),
    }
}

/// Scalars of every fixture (every third one, to keep the test quick), replaced one at a
/// time: one line changes (unless the old value had several lines), the rest of the document
/// means the same; the only refusals are values that an alias repeats.
#[test]
fn every_scalar_of_every_fixture_can_be_replaced() {
    let mut edited = 0;
    for entry in std::fs::read_dir("tests/data/values").unwrap() {
        let file = entry.unwrap().path();
        if !file.to_string_lossy().ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let before = meaning(&text);
        let mut paths = Vec::new();
        leaves(&before, &mut Vec::new(), &mut paths);
        for path in paths.into_iter().step_by(3) {
            let value = json!("replaced-by-test");
            let mut document = ValuesDocument::parse(text.as_str()).unwrap();
            let old = document.get(&path).unwrap().expect("a leaf exists");
            match document.set(&path, &value) {
                Ok(changed) => assert!(changed, "{}: {path}", file.display()),
                Err(ValuesError::Alias { .. }) => continue,
                Err(ValuesError::Unverified { detail, .. }) if detail.contains("alias") => continue,
                Err(error) => panic!("{}: {path}: {error}", file.display()),
            }
            assert_eq!(
                meaning(document.text()),
                with(&before, &path, &value),
                "{}: {path}",
                file.display()
            );
            let diff = diff(&text, document.text());
            if !old.value.as_str().unwrap_or_default().contains('\n') {
                assert_eq!(
                    changed_lines(&diff),
                    (1, 1),
                    "{}: {path}\n{diff}",
                    file.display()
                );
            }
            edited += 1;
        }
    }
    assert!(edited > 140, "edited {edited} scalars");
}
