//! A small fluent builder for end-to-end tests that run the real `runbook` binary:
//! `Test::new().playbook("...").args(["run", "playbook.yaml"]).run().status(0)`.
#![allow(dead_code)]

pub mod boundaries;
pub mod copies;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory with a playbook, and the command line to run in it.
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    /// An empty scratch directory; commands run there, with the state dir `.runbook/` in it.
    pub fn new() -> Self {
        Test {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Writes `playbook.yaml`.
    pub fn playbook(self, text: &str) -> Self {
        self.file("playbook.yaml", text)
    }

    /// Writes a file in the scratch directory.
    pub fn file(self, name: &str, text: &str) -> Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write file");
        self
    }

    /// Replaces the command line.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the scratch directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .env_remove("RUNBOOK_STATE_DIR")
            // Tests run inside a CI job write nothing to that job's summary.
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs the command line and waits.
    pub fn run(&self) -> Output {
        self.run_args(&self.args)
    }

    /// Runs another command line in the same directory and waits.
    pub fn run_args<S: AsRef<str>>(&self, args: &[S]) -> Output {
        let args: Vec<String> = args.iter().map(|arg| arg.as_ref().to_string()).collect();
        let output = self.command(&args).output().expect("run runbook");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs the command line inside a pseudo-terminal (util-linux `script`), typing `input`,
    /// so that `runbook` sees a person at a terminal. Returns the exit code and the screen.
    pub fn run_in_terminal(&self, input: &str) -> Output {
        self.run_args_in_terminal(&self.args, input)
    }

    /// Runs another command line inside a pseudo-terminal, as [`Test::run_in_terminal`].
    pub fn run_args_in_terminal<S: AsRef<str>>(&self, args: &[S], input: &str) -> Output {
        use std::io::Write;
        let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_runbook").to_string())
            .chain(args.iter().map(|arg| arg.as_ref().to_string()))
            .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
            .collect();
        let mut child = Command::new("script")
            .args(["-qec", &quoted.join(" "), "/dev/null"])
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .env_remove("RUNBOOK_STATE_DIR")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        // Give runbook time to print its question before the answer arrives.
        std::thread::sleep(Duration::from_millis(300));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("type input");
        let output = child.wait_with_output().expect("wait for script");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stdout).into_owned(),
        }
    }

    /// Starts the command line without waiting; output goes to files in the scratch dir.
    pub fn spawn(&self) -> Child {
        let stdout = std::fs::File::create(self.path("spawned.stdout")).expect("stdout file");
        let stderr = std::fs::File::create(self.path("spawned.stderr")).expect("stderr file");
        self.command(&self.args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn runbook")
    }

    /// The journal of the only run in the state dir, as JSON events.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let runs = self.path(".runbook/runs");
        let mut entries = std::fs::read_dir(&runs).expect("runs dir");
        let run = entries.next().expect("one run").expect("entry").path();
        assert!(
            entries.next().is_none(),
            "more than one run in {}",
            runs.display()
        );
        std::fs::read_to_string(run.join("journal.jsonl"))
            .expect("journal")
            .lines()
            .map(|line| serde_json::from_str(line).expect("journal line is JSON"))
            .collect()
    }

    /// Waits until the journal has an event matching `predicate` (for tests that interrupt
    /// a run in the middle of a step).
    pub fn wait_for_event(&self, predicate: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = std::panic::catch_unwind(|| self.journal())
                .ok()
                .is_some_and(|events| events.iter().any(&predicate));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a journal event"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines of a file in the scratch dir (counters that steps append to).
    pub fn lines_of(&self, relative: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(relative))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Waits until `done`, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid a process wrote into `path`.
pub fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("a pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// Whether a process is alive: it exists and is not a zombie (in a container nobody may
/// reap an orphan, and `kill(pid, 0)` succeeds on zombies).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

impl Output {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn status(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains a text.
    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stderr does not contain a text.
    #[track_caller]
    pub fn stderr_lacks(self, text: &str) -> Self {
        assert!(
            !self.stderr.contains(text),
            "stderr has {text:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout contains a text.
    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }

    /// stdout parsed as JSON lines (`--format json`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON event: {line}"))
            })
            .collect()
    }

    /// stderr with timestamps removed, for snapshots.
    pub fn stderr_scrubbed(&self) -> String {
        let timestamp = regex::Regex::new(r"(?m)^\d{4}-\d\d-\d\dT[\d:.]+Z ").expect("regex");
        let durations = regex::Regex::new(r"\(\d+(\.\d+)?m?s\)").expect("regex");
        let text = timestamp.replace_all(&self.stderr, "");
        durations.replace_all(&text, "([duration])").into_owned()
    }
}

/// A sandbox cluster (`runbook sandbox up`) running for one test, stopped when dropped.
pub struct Sandbox {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Starts a sandbox seeded with `objects` (YAML documents) and waits for its kubeconfig.
    pub fn start(objects: &str) -> Self {
        Self::start_with(objects, &[])
    }

    /// Like [`Sandbox::start`], with more `sandbox up` flags (fault injection).
    pub fn start_with(objects: &str, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("sandbox dir");
        let objects_path = dir.path().join("objects.yaml");
        std::fs::write(&objects_path, objects).expect("write objects");
        let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["sandbox", "up", "--port", "0", "--dir"])
            .arg(dir.path())
            .arg("--objects")
            .arg(&objects_path)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sandbox");
        let sandbox = Sandbox { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sandbox.kubeconfig().exists() {
            assert!(
                Instant::now() < deadline,
                "the sandbox did not write its kubeconfig"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sandbox
    }

    /// Its kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Its server's address, its CA (base64) and its token, from its kubeconfig: what a
    /// kubeconfig of a test's own needs to reach it (it serves TLS to holders of its token).
    pub fn credentials(&self) -> (String, String, String) {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("the sandbox's kubeconfig");
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(key))
                .unwrap_or_else(|| panic!("the sandbox's kubeconfig has no {key}"))
                .trim()
                .to_string()
        };
        (
            field("server:"),
            field("certificate-authority-data:"),
            field("token:"),
        )
    }

    /// Who holds a Lease in its namespace `runbook` (where `--state cluster` keeps runs),
    /// read with kubectl.
    pub fn lease_holder(&self) -> Option<String> {
        let text = self.kubectl(&[
            "get",
            "lease",
            "-n",
            "runbook",
            "-o",
            "jsonpath={.items[*].spec.holderIdentity}",
        ]);
        (!text.trim().is_empty()).then(|| text.trim().to_string())
    }

    /// Requests it served so far (JSON lines of its request log).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Our own client for it.
    pub async fn client(&self) -> runbook::kube::Cluster {
        runbook::kube::Cluster::connect(&runbook::kube::ClusterOptions {
            kubeconfig: Some(self.kubeconfig()),
            context: None,
        })
        .await
        .expect("a client for the sandbox")
    }

    /// The requests of one verb (`exec`, `list`, `delete`, ...) it served so far.
    pub fn requests_of(&self, verb: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|request| request["verb"] == verb)
            .collect()
    }

    /// Runs the real kubectl against it; its stdout, or `None` when it failed (a sandbox
    /// that injects faults answers some requests with 500).
    pub fn try_kubectl(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path().join("home"))
            .output()
            .expect("run kubectl");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs the real kubectl against it; returns stdout, failing the test on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let home = self.dir.path().join("home");
        let output = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", home)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// An object as JSON through kubectl, or None when it does not exist.
    pub fn get(
        &self,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<serde_json::Value> {
        let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
        if let Some(namespace) = namespace {
            args.extend(["-n", namespace]);
        }
        let text = self.kubectl(&args);
        (!text.trim().is_empty()).then(|| serde_json::from_str(&text).expect("kubectl JSON"))
    }
}

impl Sandbox {
    /// Stops it at once (SIGKILL), as an API server that stops answering.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
