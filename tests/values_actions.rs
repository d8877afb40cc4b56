//! End-to-end tests of `values.set` and `values.get` through the binary, on copies of real
//! values files (`tests/data/values/`).

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::{Output, Test};

const STAGING: &str = include_str!("data/values/hhmi_staging.values.yaml");
const CLUSTER: &str = include_str!("data/values/hhmi_cluster.yaml");
const NASA_CRYO: &str = include_str!("data/values/nasa-cryo_prod.values.yaml");
const UTORONTO: &str = include_str!("data/values/utoronto_common.values.yaml");

const STAGING_FILE: &str = "config/clusters/hhmi/staging.values.yaml";

/// A playbook that points the staging hub at a new NFS server.
const SET_SERVER: &str = r#"
runbook: 1
name: point-at-new-server
params:
  server: {default: 10.100.0.42}
steps:
  - id: point-values-at-new-server
    values.set:
      file: config/clusters/hhmi/staging.values.yaml
      set:
        nfs.pv.serverIP: "{{ server }}"
        nfs.pv.baseShareName: /
"#;

fn staging() -> Test {
    Test::new()
        .file("config/clusters/hhmi/cluster.yaml", CLUSTER)
        .file(STAGING_FILE, STAGING)
}

fn read(test: &Test, file: &str) -> String {
    std::fs::read_to_string(test.path(file)).expect("read the values file")
}

/// stderr without timestamps and durations, for snapshots.
fn scrubbed(output: &Output) -> String {
    let durations = regex::Regex::new(r"after \d+(\.\d+)?m?s").expect("regex");
    durations
        .replace_all(&output.stderr_scrubbed(), "after [duration]")
        .into_owned()
}

#[test]
fn set_changes_only_the_asked_lines_and_a_second_run_skips() {
    let test = staging().playbook(SET_SERVER);
    test.run_args(&["run", "playbook.yaml"])
        .status(0)
        .stderr_has("point-values-at-new-server changed");
    let after = read(&test, STAGING_FILE);
    let diff = similar::TextDiff::from_lines(STAGING, &after)
        .unified_diff()
        .context_radius(1)
        .to_string();
    insta::assert_snapshot!(diff, @r"
    @@ -7,3 +7,4 @@
         shareNameOverride: spyglass
    -    serverIP: storage-quota-home-nfs.spyglass.svc.cluster.local
    +    serverIP: 10.100.0.42
    +    baseShareName: /
     
    ");

    // The journal says done; with the journal set aside, the action's own check says so.
    test.run_args(&["run", "playbook.yaml"])
        .status(0)
        .stderr_has("done in an earlier run");
    test.run_args(&["run", "playbook.yaml", "--restart"])
        .status(0)
        .stderr_has(
            "point-values-at-new-server skipped: `nfs.pv.serverIP` is 10.100.0.42 and \
             `nfs.pv.baseShareName` is / in config/clusters/hhmi/staging.values.yaml",
        );
    assert_eq!(
        read(&test, STAGING_FILE),
        after,
        "the second run wrote nothing"
    );
}

#[test]
fn set_registers_what_changed_and_keeps_the_file_mode() {
    let test = staging().playbook(
        r#"
runbook: 1
name: register
steps:
  - id: point
    values.set:
      file: config/clusters/hhmi/staging.values.yaml
      set: {nfs.pv.serverIP: 10.100.0.42, nfs.enabled: true}
    register: edit
  - id: check
    assert:
      - "edit.changed == ['nfs.pv.serverIP']"
      - "edit.previous['nfs.pv.serverIP'] == 'storage-quota-home-nfs.spyglass.svc.cluster.local'"
      - "edit.file == 'config/clusters/hhmi/staging.values.yaml'"
"#,
    );
    let path = test.path(STAGING_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    test.run_args(&["run", "playbook.yaml"]).status(0);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn plan_shows_the_diff_and_writes_nothing() {
    let test = staging().playbook(SET_SERVER);
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    insta::assert_snapshot!(plan.stdout);
    let json = test
        .run_args(&["plan", "playbook.yaml", "--format", "json"])
        .status(0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let step = &report["steps"][0];
    assert_eq!(step["decision"], "run");
    let diff = step["diff"].as_str().unwrap();
    assert!(diff.contains("+    serverIP: 10.100.0.42\n"), "{diff}");
    assert_eq!(read(&test, STAGING_FILE), STAGING, "plan wrote nothing");
    assert!(!test.path(".runbook/runs").exists() || journal_is_empty(&test));
}

fn journal_is_empty(test: &Test) -> bool {
    walk(&test.path(".runbook")).iter().all(|file| {
        !file.ends_with("journal.jsonl")
            || std::fs::read_to_string(file)
                .expect("read the journal")
                .is_empty()
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|entry| {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn under_basehub_edits_the_nested_layout() {
    let test = Test::new()
        .file("config/nasa-cryo.values.yaml", NASA_CRYO)
        .playbook(
            r#"
runbook: 1
name: daskhub
steps:
  - id: point
    values.set:
      file: config/nasa-cryo.values.yaml
      under: basehub
      set: {nfs.pv.serverIP: 10.100.0.42, jupyterhub-home-nfs.enabled: "on"}
"#,
        )
        .args(["run", "playbook.yaml"]);
    test.run().status(0);
    let diff =
        similar::TextDiff::from_lines(NASA_CRYO, read(&test, "config/nasa-cryo.values.yaml"))
            .unified_diff()
            .context_radius(1)
            .to_string();
    insta::assert_snapshot!(diff, @r"
    @@ -3,3 +3,3 @@
         pv:
    -      serverIP: 10.100.102.109
    +      serverIP: 10.100.0.42
       jupyterhub:
    @@ -65,2 +65,3 @@
               hard_quota: 35 # in GiB
    +    enabled: 'on'
       binderhub-service:
    ");
}

#[test]
fn get_reads_a_value_and_where_it_is() {
    let test = staging()
        .playbook(
            r#"
runbook: 1
name: get
steps:
  - id: read
    values.get: {file: config/clusters/hhmi/staging.values.yaml, path: nfs.pv.serverIP}
    register: server
  - id: read-missing
    values.get: {file: config/clusters/hhmi/staging.values.yaml, path: nfs.pv.baseShareName}
    register: base
  - id: check
    assert:
      - "server.found and server.value == 'storage-quota-home-nfs.spyglass.svc.cluster.local'"
      - "server.line == 8"
      - "not base.found and base.value is none"
"#,
        )
        .args(["run", "playbook.yaml"]);
    // `plan` evaluates reads too, so that the steps after them are planned with real values:
    // the assertion is evaluated, and holds.
    let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
    assert!(!plan.stdout.contains("would fail"), "{}", plan.stdout);
    test.run().status(0);
}

/// A cluster whose hubs share a common file, the daskhub one nested under `basehub:`.
fn cluster_test() -> Test {
    Test::new()
        .file(
            "config/clusters/c/cluster.yaml",
            r#"name: c
hubs:
- name: staging
  helm_chart: basehub
  helm_chart_values_files:
  - common.values.yaml
  - staging.values.yaml
  - enc-staging.secret.values.yaml
- name: prod
  helm_chart: basehub
  helm_chart_values_files:
  - common.values.yaml
  - prod.values.yaml
- name: dask
  helm_chart: daskhub
  helm_chart_values_files:
  - dask.values.yaml
"#,
        )
        .file("config/clusters/c/common.values.yaml", UTORONTO)
        .file(
            "config/clusters/c/staging.values.yaml",
            "jupyterhub:\n  custom:\n    homepage:\n      gitRepoBranch: staging # the staging page\n",
        )
        .file(
            "config/clusters/c/enc-staging.secret.values.yaml",
            "jupyterhub:\n  hub: ENC[AES256_GCM,data:x]\nsops:\n  version: 3.8.1\n",
        )
        .file("config/clusters/c/prod.values.yaml", "nfs:\n  pv:\n    serverIP: 10.0.0.1\n")
        .file("config/clusters/c/dask.values.yaml", NASA_CRYO)
}

#[test]
fn get_finds_the_file_to_edit_among_a_hubs_values_files() {
    let test = cluster_test().playbook(
        r#"
runbook: 1
name: find
params:
  hub: {default: staging}
steps:
  - id: find
    values.get:
      cluster: config/clusters/c/cluster.yaml
      hub: "{{ hub }}"
      path: nfs.pv.serverIP
    register: nfs
  - id: point
    values.set:
      file: "{{ nfs.file }}"
      under: "{{ nfs.under }}"
      set: {nfs.pv.serverIP: 10.100.0.42}
"#,
    );
    // staging: defined in the common file, which prod uses too: the override goes in the
    // hub's own file, and the common file is left alone.
    let staging = test
        .run_args(&["run", "playbook.yaml", "--format", "json"])
        .status(0);
    let found = staging
        .events()
        .into_iter()
        .find(|event| event["event"] == "step_finished" && event["step"] == "find")
        .unwrap()["output"]
        .clone();
    insta::assert_json_snapshot!(found, @r#"
    {
      "defined_in": [
        "config/clusters/c/common.values.yaml"
      ],
      "file": "config/clusters/c/staging.values.yaml",
      "found": true,
      "line": 17,
      "path": "nfs.pv.serverIP",
      "shared_with": [
        "prod"
      ],
      "under": "",
      "unread": [
        "config/clusters/c/enc-staging.secret.values.yaml"
      ],
      "value": "2i2cutorontohubstorage.file.core.windows.net"
    }
    "#);
    assert_eq!(
        read(&test, "config/clusters/c/common.values.yaml"),
        UTORONTO
    );
    assert_eq!(
        read(&test, "config/clusters/c/staging.values.yaml"),
        "jupyterhub:\n  custom:\n    homepage:\n      gitRepoBranch: staging # the staging page\nnfs:\n  pv:\n    serverIP: 10.100.0.42\n"
    );

    // prod: its own file sets it; that file is edited.
    test.run_args(&["run", "playbook.yaml", "--var", "hub=prod"])
        .status(0);
    assert_eq!(
        read(&test, "config/clusters/c/prod.values.yaml"),
        "nfs:\n  pv:\n    serverIP: 10.100.0.42\n"
    );

    // dask: a daskhub's values are under `basehub:`.
    test.run_args(&["run", "playbook.yaml", "--var", "hub=dask"])
        .status(0);
    assert!(
        read(&test, "config/clusters/c/dask.values.yaml").contains("      serverIP: 10.100.0.42\n")
    );
}

#[test]
fn get_names_an_unknown_hub_and_a_missing_file() {
    let playbook = |hub: &str| {
        format!(
            "runbook: 1\nname: find\nsteps:\n  - id: find\n    values.get: {{cluster: config/clusters/c/cluster.yaml, hub: {hub}, path: nfs.pv.serverIP}}\n"
        )
    };
    let test = cluster_test().playbook(&playbook("stagign"));
    let output = test.run_args(&["run", "playbook.yaml"]).status(2);
    // Up to the run's last line; a summary may follow it.
    let shown = scrubbed(&output);
    let shown = &shown[..shown.find("\nsummary:").map_or(shown.len(), |end| end + 1)];
    insta::assert_snapshot!(shown, @r"
    run find (playbook.yaml)
    ▶ find
    ✗ find failed after [duration]: invalid input: no hub `stagign` in this cluster file (its hubs: staging, prod, dask)
     --> config/clusters/c/cluster.yaml:2:1
      |
    2 | hubs:
      | ^^^^
    help: did you mean `staging`?
    invalid input (exit 2)
    ");
    std::fs::remove_file(test.path("config/clusters/c/prod.values.yaml")).unwrap();
    std::fs::write(test.path("playbook.yaml"), playbook("prod")).unwrap();
    let output = test.run_args(&["run", "playbook.yaml"]).status(2);
    assert!(
        output.stderr.contains("hub `prod` lists `prod.values.yaml`, but config/clusters/c/prod.values.yaml does not exist")
            && output.stderr.contains("config/clusters/c/cluster.yaml:13:5"),
        "{}",
        output.stderr
    );
}

/// A playbook that sets `path` in `config/x.values.yaml`.
fn set_playbook(path: &str) -> String {
    format!(
        "runbook: 1\nname: bad\nsteps:\n  - id: edit\n    values.set:\n      file: config/x.values.yaml\n      set:\n        {path}: 10.100.0.42\n"
    )
}

#[test]
fn bad_values_files_fail_with_a_position_and_stay_byte_identical() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("missing file", None, "nfs.pv.serverIP"),
        (
            "not YAML",
            Some("nfs:\n  pv: [10.0.0.1\n"),
            "nfs.pv.serverIP",
        ),
        (
            "several documents",
            Some("nfs:\n  pv:\n    serverIP: 10.0.0.1\n---\nnfs: {}\n"),
            "nfs.pv.serverIP",
        ),
        (
            "SOPS-encrypted",
            Some(
                "nfs:\n  pv:\n    serverIP: ENC[AES256_GCM,data:abc=,type:str]\nsops:\n  version: 3.8.1\n",
            ),
            "nfs.pv.serverIP",
        ),
        (
            "path crosses a list",
            Some("nfs:\n  pv:\n  - serverIP: 10.0.0.1\n"),
            "nfs.pv.serverIP",
        ),
        (
            "path crosses a scalar",
            Some("nfs:\n  enabled: true # keep\n"),
            "nfs.enabled.serverIP",
        ),
        (
            "list index past the end",
            Some("nfs:\n  pv:\n  - serverIP: 10.0.0.1\n"),
            "nfs.pv[3].serverIP",
        ),
        (
            "value is a mapping",
            Some("nfs:\n  pv:\n    serverIP: 10.0.0.1\n"),
            "nfs.pv",
        ),
        (
            "path goes through an alias",
            Some("base: &base\n  serverIP: 10.0.0.1\nnfs:\n  pv: *base\n"),
            "nfs.pv.serverIP",
        ),
        (
            "value inside an anchor an alias repeats",
            Some("base: &base\n  serverIP: 10.0.0.1\nnfs:\n  pv: *base\n"),
            "base.serverIP",
        ),
    ];
    let mut report = String::new();
    for (what, text, path) in cases {
        let mut test = Test::new().playbook(&set_playbook(path));
        if let Some(text) = text {
            test = test.file("config/x.values.yaml", text);
        }
        let output = test.run_args(&["run", "playbook.yaml"]);
        // Invalid input (exit 2): the file is left as it was.
        assert_eq!(output.code, 2, "{what}: {}", output.stderr);
        match text {
            Some(text) => assert_eq!(&read(&test, "config/x.values.yaml"), text, "{what}"),
            None => assert!(!test.path("config/x.values.yaml").exists()),
        }
        // Journaled as failed, not done: `run` again reads the file again.
        let journal = test.journal();
        let finished: Vec<(&str, &str)> = journal
            .iter()
            .filter_map(|event| match event["event"].as_str()? {
                "step_finished" => Some(("step", event["status"].as_str()?)),
                "run_finished" => Some(("run", event["status"].as_str()?)),
                _ => None,
            })
            .collect();
        assert_eq!(finished, [("step", "failed"), ("run", "invalid")], "{what}");
        let plan = test.run_args(&["plan", "playbook.yaml"]).status(0);
        assert!(
            plan.stdout.contains("cannot evaluate"),
            "{what}: {}",
            plan.stdout
        );
        let stderr = scrubbed(&output);
        let message: Vec<&str> = stderr
            .lines()
            // The run's last line says "invalid input (exit 2)"; what follows (a summary)
            // is not about the file.
            .take_while(|line| !line.starts_with("invalid input (exit"))
            .filter(|line| !line.starts_with("run "))
            .map(|line| line.trim_end())
            .collect::<Vec<_>>();
        let message = message
            .join("\n")
            .replace(&test.dir().display().to_string(), "[dir]");
        report.push_str(&format!("## {what}: {path}\n{message}\n\n"));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn a_bad_file_is_invalid_input_and_is_read_again_once_fixed() {
    // values.set on a file that does not exist yet: exit 2, nothing written.
    let test = Test::new().playbook(&set_playbook("nfs.pv.serverIP"));
    test.run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has("invalid input: cannot read the values file config/x.values.yaml")
        .stderr_has("invalid input (exit 2)");
    assert!(!test.path("config/x.values.yaml").exists());
    // Once the file is there, the same command runs the step (it was not journaled done).
    let test = test.file(
        "config/x.values.yaml",
        "nfs:\n  pv:\n    serverIP: 10.0.0.1 # old\n",
    );
    test.run_args(&["run", "playbook.yaml"])
        .status(0)
        .stderr_has("edit changed");
    assert_eq!(
        read(&test, "config/x.values.yaml"),
        "nfs:\n  pv:\n    serverIP: 10.100.0.42 # old\n"
    );

    // values.get: a SOPS-encrypted file, a file that is not YAML, a missing file.
    let encrypted =
        "nfs:\n  pv:\n    serverIP: ENC[AES256_GCM,data:abc=,type:str]\nsops:\n  version: 3.8.1\n";
    for (what, text, says) in [
        (
            "encrypted",
            Some(encrypted),
            "the file is encrypted with SOPS",
        ),
        ("not YAML", Some("nfs: [\n"), "config/x.values.yaml:"),
        ("missing", None, "cannot read the values file"),
    ] {
        let mut test = Test::new().playbook(
            "runbook: 1\nname: read\nsteps:\n  - id: read\n    values.get: {file: config/x.values.yaml, path: nfs.pv.serverIP}\n    register: server\n",
        );
        if let Some(text) = text {
            test = test.file("config/x.values.yaml", text);
        }
        let output = test.run_args(&["run", "playbook.yaml"]);
        assert_eq!(output.code, 2, "{what}: {}", output.stderr);
        assert!(output.stderr.contains(says), "{what}: {}", output.stderr);
        if let Some(text) = text {
            assert_eq!(read(&test, "config/x.values.yaml"), text, "{what}");
        }
    }
}

#[test]
fn bad_steps_are_rejected_when_the_playbook_is_loaded() {
    let cases = [
        ("a path that does not parse", "set: {nfs..pv: 1}"),
        (
            "a template path with an unknown variable",
            "set: {\"{{ kee }}.serverIP\": 1}",
        ),
        ("a list as a value", "set: {nfs.pv.mountOptions: [vers=4]}"),
        ("nothing to set", "set: {}"),
        ("an unknown key", "set: {a: 1}\n      unde: basehub"),
    ];
    let mut report = String::new();
    for (what, body) in cases {
        let test = Test::new().playbook(&format!(
            "runbook: 1\nname: bad\nparams:\n  key: {{default: a}}\nsteps:\n  - id: edit\n    values.set:\n      file: x.yaml\n      {body}\n"
        ));
        let output = test.run_args(&["validate", "playbook.yaml"]).status(2);
        report.push_str(&format!("## {what}\n{}\n", output.stderr));
    }
    let get_cases = [
        (
            "two sources",
            "{file: a.yaml, cluster: c.yaml, hub: h, path: a}",
        ),
        ("a hub without a cluster", "{file: a.yaml, hub: h, path: a}"),
        ("a bad path", "{file: a.yaml, path: \"a[x]\"}"),
    ];
    for (what, body) in get_cases {
        let test = Test::new().playbook(&format!(
            "runbook: 1\nname: bad\nsteps:\n  - id: read\n    values.get: {body}\n"
        ));
        let output = test.run_args(&["validate", "playbook.yaml"]).status(2);
        report.push_str(&format!("## values.get: {what}\n{}\n", output.stderr));
    }
    insta::assert_snapshot!(report);
}

/// A values file that is a FIFO is refused without reading it (before, the read blocked
/// until something wrote to the pipe). A thread writes a valid file into the pipe, so that
/// the old code, which read it (each time it opened it), finished instead of hanging the test.
#[test]
fn set_refuses_a_fifo_and_writes_nothing() {
    let test = staging().playbook(
        r#"
runbook: 1
name: fifo
steps:
  - id: point
    values.set:
      file: config/clusters/hhmi/pipe.values.yaml
      set: {nfs.pv.serverIP: 10.100.0.42}
"#,
    );
    let fifo = test.path("config/clusters/hhmi/pipe.values.yaml");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other requirement.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let writer = fifo.clone();
    // Never joined: with the fix, nobody reads the pipe and the thread stays blocked.
    std::thread::spawn(move || {
        use std::io::Write;
        // The old code read the file more than once (check, then apply).
        for _ in 0..10 {
            if let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&writer) {
                let _ = pipe.write_all(b"nfs:\n  pv:\n    serverIP: 10.0.0.1\n");
            }
        }
    });
    test.run_args(&["run", "playbook.yaml"])
        .status(2)
        .stderr_has(
            "the values file config/clusters/hhmi/pipe.values.yaml is a FIFO (named pipe), \
             not a regular file",
        );
    let file_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&file_type));
}

/// The mode bits, owner and group of a file.
fn mode_and_owner(path: &std::path::Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).expect("stat the values file");
    (metadata.mode() & 0o7777, metadata.uid(), metadata.gid())
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A playbook that sets the staging hub's server.
const SET_STAGING_SERVER: &str = r#"
runbook: 1
name: read-only
steps:
  - id: point
    values.set:
      file: config/clusters/hhmi/staging.values.yaml
      set: {nfs.pv.serverIP: 10.100.0.42}
"#;

#[test]
fn set_refuses_a_read_only_file_naming_its_mode_and_owner_then_resumes_once_writable() {
    // Run as root here, which open() would let write anything: the mode bits decide.
    let test = staging().playbook(SET_STAGING_SERVER);
    let path = test.path(STAGING_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = mode_and_owner(&path);
    let runner = nix::unistd::Uid::effective();
    // The plan says so before anything runs.
    test.run_args(&["plan", "playbook.yaml"])
        .status(0)
        .stdout_has(&format!(
            "this will fail: {STAGING_FILE} is read-only (mode 0444, owner "
        ));
    test.run_args(&["run", "playbook.yaml"])
        .status(1)
        .stderr_has(&format!("{STAGING_FILE} is read-only (mode 0444, owner "))
        .stderr_has(&format!("(uid {runner})"))
        .stderr_has("nothing was written");
    assert_eq!(read(&test, STAGING_FILE), STAGING);
    assert_eq!(mode_and_owner(&path), before);
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|name| !name.ends_with(".tmp")),
        "{names:?}"
    );
    // A failed step, not done: once the file is writable, the same command edits it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    test.run_args(&["run", "playbook.yaml"])
        .status(0)
        .stderr_has("point changed");
    assert!(read(&test, STAGING_FILE).contains("serverIP: 10.100.0.42"));
    assert_eq!(mode_and_owner(&path).0, 0o644);
}

#[test]
fn set_keeps_the_owner_group_and_mode_of_a_file_it_may_write() {
    assert!(
        is_root(),
        "this test gives the values file to another uid, which needs root: run it as root \
         (as CI does), or leave it out with --skip set_keeps_the_owner"
    );
    let test = staging().playbook(SET_STAGING_SERVER);
    let path = test.path(STAGING_FILE);
    std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    test.run_args(&["run", "playbook.yaml"])
        .status(0)
        .stderr_has("point changed");
    assert!(read(&test, STAGING_FILE).contains("serverIP: 10.100.0.42"));
    assert_eq!(mode_and_owner(&path), (0o640, 4242, 4343));

    // Read-only for its owner: refused for root too, naming the owner.
    let test = staging().playbook(SET_STAGING_SERVER);
    let path = test.path(STAGING_FILE);
    std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    test.run_args(&["run", "playbook.yaml"])
        .status(1)
        .stderr_has("is read-only (mode 0444, owner uid 4242, group gid 4343)");
    assert_eq!(read(&test, STAGING_FILE), STAGING);
    assert_eq!(mode_and_owner(&path), (0o444, 4242, 4343));
}

#[test]
fn set_refuses_to_give_a_file_a_new_owner_it_cannot_give_back() {
    assert!(
        is_root(),
        "this test runs runbook as another uid, which needs root: run it as root (as CI \
         does), or leave it out with --skip set_refuses_to_give"
    );
    use std::os::unix::process::CommandExt;
    // A file root owns and lets everyone write: uid 4242 may write it, but a replacement
    // it writes would be its own, and it cannot give it back to root.
    let test = staging().playbook(SET_STAGING_SERVER);
    let path = test.path(STAGING_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for dir in [
        test.dir().to_path_buf(),
        path.parent().unwrap().to_path_buf(),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(test.path("config"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        test.path("config/clusters"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["run", "playbook.yaml"])
        .current_dir(test.dir())
        .env("NO_COLOR", "1")
        .env("HOME", test.dir())
        .env_remove("RUNBOOK_STATE_DIR")
        .uid(4242)
        .gid(4343)
        .output()
        .expect("run runbook as uid 4242");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot keep the owner of {STAGING_FILE} (owner root (uid 0), group root (gid 0)) \
             when replacing it as uid 4242"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(read(&test, STAGING_FILE), STAGING);
    assert_eq!(mode_and_owner(&path), (0o666, 0, 0));
}

#[test]
fn paths_may_be_templates_rendered_when_the_step_runs() {
    let playbook = r#"
runbook: 1
name: templated-paths
params:
  prefix: {default: nfs.pv}
  server: {default: 10.100.0.42}
steps:
  - id: point-values-at-new-server
    values.set:
      file: config/clusters/hhmi/staging.values.yaml
      set:
        "{{ prefix }}.serverIP": "{{ server }}"
    register: edited
  - id: read-back
    values.get:
      file: config/clusters/hhmi/staging.values.yaml
      path: "{{ prefix }}.serverIP"
    register: read
  - id: check
    assert: ["read.value == server", "edited.changed == ['nfs.pv.serverIP']"]
"#;
    let test = staging().playbook(playbook);
    test.run_args(&["plan", "playbook.yaml"])
        .status(0)
        .stdout_has("set `nfs.pv.serverIP` in config/clusters/hhmi/staging.values.yaml");
    test.run_args(&["run", "playbook.yaml"]).status(0);
    assert!(read(&test, STAGING_FILE).contains("serverIP: 10.100.0.42"));

    // A template that renders to something that is not a path: invalid input, the file
    // untouched.
    let before = read(&test, STAGING_FILE);
    let bad = test.run_args(&[
        "run",
        "playbook.yaml",
        "--var",
        "prefix=nfs..pv",
        "--var",
        "server=10.0.0.1",
    ]);
    let bad = bad.status(2);
    assert!(
        bad.stderr.contains(
            "`set`: the path `{{ prefix }}.serverIP` renders to `nfs..pv.serverIP`, which is not a path"
        ),
        "{}",
        bad.stderr
    );
    assert_eq!(read(&test, STAGING_FILE), before);
}
