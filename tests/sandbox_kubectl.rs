//! The sandbox cluster as the real kubectl sees it: `runbook sandbox up` runs as a child
//! process, kubectl talks to it through the kubeconfig it writes, and each test checks
//! kubectl's exit codes and output. kubectl caches discovery under `~/.kube/cache`, so
//! `HOME` points into the test's directory.
//!
//! Waits are for states (a file appears, kubectl's own `--wait`/`wait --for=delete`), never
//! for durations; the limits only guard against a hang.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A hub as the basehub chart leaves it: the home volume (Retain) and claim, a user server,
/// the metrics Deployment that mounts the claim, and proxy-public.
const HUB: &str = include_str!("data/scenarios/hub-retained.yaml");

/// A `runbook sandbox up` child process and its directory.
struct Sandbox {
    child: Child,
    dir: tempfile::TempDir,
}

/// How a kubectl command ended.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    /// Starts a sandbox with `objects` that saves its state to `saved.yaml` on shutdown.
    fn start(objects: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("objects.yaml"), objects).expect("write the objects");
        Sandbox::start_in(dir, &PathBuf::from("objects.yaml"))
    }

    fn start_in(dir: tempfile::TempDir, objects: &Path) -> Self {
        let stderr = std::fs::File::create(dir.path().join("sandbox.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["sandbox", "up", "--port", "0", "--dir"])
            .arg(dir.path())
            .arg("--objects")
            .arg(dir.path().join(objects))
            .arg("--save")
            .arg(dir.path().join("saved.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the sandbox");
        let mut sandbox = Sandbox { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sandbox.path("kubeconfig").exists() {
            if let Ok(Some(status)) = sandbox.child.try_wait() {
                panic!("the sandbox exited ({status}): {}", sandbox.log());
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox wrote no kubeconfig: {}",
                sandbox.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sandbox
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sandbox.log")).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .args(args)
            .env("KUBECONFIG", self.path("kubeconfig"))
            .env("HOME", self.path("home"));
        command
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("run kubectl");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs kubectl, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert_eq!(output.code, 0, "kubectl {args:?} failed: {}", output.stderr);
        output.stdout
    }

    /// Runs kubectl, which must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert_eq!(output.code, 1, "kubectl {args:?} should fail: {output:?}");
        output.stderr
    }

    /// Runs kubectl with `input` on its stdin (`apply -f -`), which must succeed; returns its
    /// stdout.
    fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("kubectl's stdin")
            .write_all(input.as_bytes())
            .expect("write to kubectl");
        let output = child.wait_with_output().expect("wait for kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("kubectl printed JSON")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write a manifest");
        path.to_string_lossy().into_owned()
    }

    /// Sends SIGTERM and waits; returns the exit code.
    fn terminate(&mut self) -> i32 {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM could not be sent");
        let status = self.child.wait().expect("wait for the sandbox");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn reads_with_selectors_as_json_and_as_tables() {
    let sandbox = Sandbox::start(HUB);
    assert_eq!(
        sandbox.ok(&[
            "get",
            "pods",
            "-n",
            "staging",
            "-l",
            "component=singleuser-server",
            "-o",
            "name"
        ]),
        "pod/jupyter-alice\n"
    );
    assert_eq!(
        sandbox.ok(&[
            "get",
            "pods",
            "-n",
            "staging",
            "-l",
            "component in (nothing, other)",
            "-o",
            "name"
        ]),
        ""
    );
    let notin = sandbox.ok(&[
        "get",
        "pods",
        "-n",
        "staging",
        "-l",
        "component notin (singleuser-server),!missing",
        "-o",
        "name",
    ]);
    assert!(notin.starts_with("pod/shared-volume-metrics-"), "{notin}");
    let pod = sandbox.json(&["get", "pod", "jupyter-alice", "-n", "staging"]);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["metadata"]["labels"]["component"], "singleuser-server");
    let all = sandbox.json(&["get", "pods", "--all-namespaces"]);
    assert_eq!(all["items"].as_array().expect("items").len(), 2);

    let volumes = sandbox.ok(&["get", "pv"]);
    let header: Vec<&str> = volumes
        .lines()
        .next()
        .expect("a header")
        .split_whitespace()
        .collect();
    assert_eq!(&header[..3], ["NAME", "CAPACITY", "ACCESS"]);
    let row: Vec<&str> = volumes
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        [
            "staging-home-nfs",
            "1Mi",
            "RWX",
            "Retain",
            "Bound",
            "staging/home-nfs"
        ]
    );
    assert!(
        sandbox
            .ok(&["get", "pvc", "-n", "staging"])
            .contains("Bound")
    );
    assert!(
        sandbox
            .ok(&["get", "svc", "-n", "staging"])
            .contains("10.96.")
    );

    let missing = sandbox.fails(&["get", "pod", "nobody", "-n", "staging"]);
    assert_eq!(
        missing.trim(),
        "Error from server (NotFound): pods \"nobody\" not found"
    );
    let malformed = sandbox.fails(&["get", "pods", "-l", "component in singleuser-server"]);
    assert!(
        malformed.contains("Error from server (BadRequest)")
            && malformed.contains("unable to parse requirement"),
        "{malformed}"
    );
}

#[test]
fn merge_and_strategic_patches() {
    let sandbox = Sandbox::start(HUB);
    let retain = r#"{"spec": {"persistentVolumeReclaimPolicy": "Delete"}}"#;
    assert_eq!(
        sandbox.ok(&[
            "patch",
            "pv",
            "staging-home-nfs",
            "--type",
            "merge",
            "-p",
            retain
        ]),
        "persistentvolume/staging-home-nfs patched\n"
    );
    assert_eq!(
        sandbox.ok(&[
            "patch",
            "pv",
            "staging-home-nfs",
            "--type",
            "merge",
            "-p",
            retain
        ]),
        "persistentvolume/staging-home-nfs patched (no change)\n"
    );
    assert_eq!(
        sandbox.json(&["get", "pv", "staging-home-nfs"])["spec"]["persistentVolumeReclaimPolicy"],
        "Delete"
    );

    // kubectl's default patch type is strategic: the container merges by name.
    let image = r#"{"spec": {"template": {"spec": {"containers": [{"name": "metrics", "image": "prom/node-exporter:v2"}]}}}}"#;
    sandbox.ok(&[
        "patch",
        "deployment",
        "shared-volume-metrics",
        "-n",
        "staging",
        "-p",
        image,
    ]);
    let deployment = sandbox.json(&[
        "get",
        "deployment",
        "shared-volume-metrics",
        "-n",
        "staging",
    ]);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["containers"].as_array().expect("containers").len(), 1);
    assert_eq!(spec["containers"][0]["image"], "prom/node-exporter:v2");
    assert_eq!(
        spec["volumes"][0]["name"], "home",
        "a strategic patch keeps the other fields"
    );

    let nfs = r#"{"spec": {"nfs": {"server": "10.0.0.8"}}}"#;
    let refused = sandbox.fails(&[
        "patch",
        "pv",
        "staging-home-nfs",
        "--type",
        "merge",
        "-p",
        nfs,
    ]);
    assert_eq!(
        refused.trim(),
        "The PersistentVolume \"staging-home-nfs\" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"
    );
}

#[test]
fn create_apply_and_server_side_apply() {
    let sandbox = Sandbox::start(HUB);
    let config_map = sandbox.file("settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: staging}\ndata: {hub: staging}\n");
    assert_eq!(
        sandbox.ok(&["create", "-f", &config_map]),
        "configmap/settings created\n"
    );
    let again = sandbox.fails(&["create", "-f", &config_map]);
    assert!(
        again.contains("Error from server (AlreadyExists): error when creating")
            && again.contains("configmaps \"settings\" already exists"),
        "{again}"
    );
    let typo = sandbox.file("typo.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: staging}\ndatta: {hub: staging}\n");
    let strict = sandbox.fails(&["create", "-f", &typo]);
    assert!(
        strict.contains("strict decoding error: unknown field \"datta\""),
        "{strict}"
    );
    let nowhere = sandbox.file(
        "nowhere.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere}\n",
    );
    assert!(
        sandbox
            .fails(&["create", "-f", &nowhere])
            .contains("namespaces \"nowhere\" not found")
    );

    let service = |port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: transfer, namespace: staging}}\nspec:\n  ports: [{{port: {port}}}]\n  selector: {{app: transfer}}\n"
        )
    };
    let manifest = sandbox.file("transfer.yaml", &service(80));
    assert_eq!(
        sandbox.ok(&["apply", "-f", &manifest]),
        "service/transfer created\n"
    );
    let manifest = sandbox.file("transfer.yaml", &service(8080));
    assert_eq!(
        sandbox.ok(&["apply", "-f", &manifest]),
        "service/transfer configured\n"
    );
    assert_eq!(
        sandbox.ok(&["apply", "-f", &manifest]),
        "service/transfer unchanged\n"
    );
    let ports = &sandbox.json(&["get", "svc", "transfer", "-n", "staging"])["spec"]["ports"];
    assert_eq!(ports.as_array().expect("ports").len(), 1);
    assert_eq!(ports[0]["port"], 8080);

    let lease = |holder: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: migration, namespace: staging}}\nspec: {{holderIdentity: {holder}}}\n"
        )
    };
    let manifest = sandbox.file("lease.yaml", &lease("alice"));
    assert_eq!(
        sandbox.ok(&["apply", "--server-side", "-f", &manifest]),
        "lease.coordination.k8s.io/migration serverside-applied\n"
    );
    let manifest = sandbox.file("lease.yaml", &lease("bob"));
    sandbox.ok(&["apply", "--server-side", "-f", &manifest]);
    assert_eq!(
        sandbox.json(&["get", "lease", "migration", "-n", "staging"])["spec"]["holderIdentity"],
        "bob"
    );
    // A field another manager set conflicts, until forced.
    let settings = sandbox.file("settings.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: staging}\ndata: {hub: prod}\n");
    let conflict = sandbox.fails(&["apply", "--server-side", "-f", &settings]);
    assert!(
        conflict.contains("conflict with \"kubectl-create\"") && conflict.contains(".data.hub"),
        "{conflict}"
    );
    sandbox.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &settings,
    ]);
    assert_eq!(
        sandbox.json(&["get", "configmap", "settings", "-n", "staging"])["data"]["hub"],
        "prod"
    );

    // Imperative creates send protobuf bodies.
    assert_eq!(
        sandbox.ok(&["create", "namespace", "scratch"]),
        "namespace/scratch created\n"
    );
    sandbox.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "scratch",
        "--from-literal=token=abc",
    ]);
    assert_eq!(
        sandbox.json(&["get", "secret", "token", "-n", "scratch"])["data"]["token"],
        "YWJj"
    );
}

#[test]
fn deletes_wait_for_grace_periods_and_protection_finalizers() {
    let sandbox = Sandbox::start(HUB);
    // A Service goes at once, and can be created again.
    assert_eq!(
        sandbox.ok(&["delete", "svc", "proxy-public", "-n", "staging"]),
        "service \"proxy-public\" deleted\n"
    );
    sandbox.fails(&["get", "svc", "proxy-public", "-n", "staging"]);
    let service = sandbox.file("proxy.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: proxy-public, namespace: staging}\nspec:\n  ports: [{port: 80}]\n");
    sandbox.ok(&["create", "-f", &service]);

    // The claim is in use: without --wait it stays Terminating.
    assert_eq!(
        sandbox.ok(&["delete", "pvc", "home-nfs", "-n", "staging", "--wait=false"]),
        "persistentvolumeclaim \"home-nfs\" deleted\n"
    );
    sandbox.ok(&["delete", "pv", "staging-home-nfs", "--wait=false"]);
    let claim = sandbox.json(&["get", "pvc", "home-nfs", "-n", "staging"]);
    assert!(claim["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        claim["metadata"]["finalizers"][0],
        "kubernetes.io/pvc-protection"
    );
    assert!(
        sandbox
            .ok(&["get", "pvc", "-n", "staging"])
            .contains("Terminating")
    );
    assert!(sandbox.ok(&["get", "pv"]).contains("Terminating"));

    // kubectl delete waits until the pod is gone (its grace period is capped at a second).
    assert_eq!(
        sandbox.ok(&["delete", "pod", "jupyter-alice", "-n", "staging"]),
        "pod \"jupyter-alice\" deleted\n"
    );
    sandbox.fails(&["get", "pod", "jupyter-alice", "-n", "staging"]);
    assert!(
        sandbox.json(&["get", "pvc", "home-nfs", "-n", "staging"])["metadata"]["deletionTimestamp"]
            .is_string(),
        "the metrics pods still mount it"
    );
    sandbox.ok(&[
        "scale",
        "deployment",
        "shared-volume-metrics",
        "-n",
        "staging",
        "--replicas=0",
    ]);
    sandbox.ok(&[
        "wait",
        "--for=delete",
        "pvc/home-nfs",
        "-n",
        "staging",
        "--timeout=60s",
    ]);
    sandbox.ok(&[
        "wait",
        "--for=delete",
        "pv/staging-home-nfs",
        "--timeout=60s",
    ]);
    let missing = sandbox.fails(&["get", "pv", "staging-home-nfs"]);
    assert_eq!(
        missing.trim(),
        "Error from server (NotFound): persistentvolumes \"staging-home-nfs\" not found"
    );
}

#[test]
fn a_watch_prints_changes() {
    let sandbox = Sandbox::start(HUB);
    sandbox.ok(&["create", "configmap", "watched", "--from-literal=a=1"]);
    let mut watch = sandbox
        .command(&[
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "--request-timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get --watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok);
    // The header, then the existing object; the watch itself starts from that list's version,
    // so the changes below are seen however soon they come.
    assert!(lines.next().expect("a header").starts_with("EVENT"));
    assert!(
        lines
            .next()
            .expect("the existing object")
            .starts_with("ADDED")
    );
    sandbox.ok(&[
        "patch",
        "configmap",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"data": {"b": "2"}}"#,
    ]);
    sandbox.ok(&["delete", "configmap", "watched"]);
    let events: Vec<String> = lines
        .take(2)
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(events, ["MODIFIED watched 2", "DELETED watched 2"]);
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn sigterm_saves_a_state_that_loads_again() {
    let mut sandbox = Sandbox::start(HUB);
    let stderr = sandbox.log();
    assert!(
        stderr.starts_with("sandbox listening on https://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("kubeconfig"), "{stderr}");
    sandbox.ok(&["label", "pv", "staging-home-nfs", "migrated=yes"]);
    let uid = sandbox.json(&["get", "pv", "staging-home-nfs"])["metadata"]["uid"].clone();
    assert_eq!(sandbox.terminate(), 0);
    let saved = std::fs::read_to_string(sandbox.path("saved.yaml")).expect("the saved state");
    assert!(saved.contains("kind: List"));

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(sandbox.path("saved.yaml"), dir.path().join("saved.yaml"))
        .expect("copy the state");
    let again = Sandbox::start_in(dir, Path::new("saved.yaml"));
    let volume = again.json(&["get", "pv", "staging-home-nfs"]);
    assert_eq!(volume["metadata"]["uid"], uid);
    assert_eq!(volume["metadata"]["labels"]["migrated"], "yes");
    assert_eq!(volume["status"]["phase"], "Bound");
    assert_eq!(
        again.ok(&[
            "get",
            "pods",
            "-n",
            "staging",
            "-l",
            "component=singleuser-server",
            "-o",
            "name"
        ]),
        "pod/jupyter-alice\n"
    );
}

#[test]
fn imperative_creates_send_protobuf_that_is_read() {
    let sandbox = Sandbox::start(HUB);
    assert_eq!(
        sandbox.ok(&[
            "create",
            "job",
            "cleanup",
            "-n",
            "staging",
            "--image=busybox",
            "--",
            "true"
        ]),
        "job.batch/cleanup created\n"
    );
    let job = sandbox.json(&["get", "job", "cleanup", "-n", "staging"]);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["true"])
    );
    assert_eq!(
        sandbox.ok(&[
            "create",
            "service",
            "clusterip",
            "web",
            "-n",
            "staging",
            "--tcp=80:8080"
        ]),
        "service/web created\n"
    );
    let service = sandbox.json(&["get", "service", "web", "-n", "staging"]);
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        serde_json::json!(8080)
    );
    assert_eq!(service["spec"]["selector"]["app"], "web");
}

#[test]
fn logs_follow_a_container_until_it_ends_and_take_their_flags() {
    let sandbox = Sandbox::start(HUB);
    sandbox.ok(&[
        "create",
        "job",
        "slow",
        "-n",
        "staging",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo one; sleep 2; echo two",
    ]);
    sandbox.ok(&[
        "wait",
        "--for=jsonpath={.status.active}=1",
        "job/slow",
        "-n",
        "staging",
        "--timeout=60s",
    ]);
    // Without following, this would answer at once with what the command wrote so far.
    assert_eq!(
        sandbox.ok(&["logs", "-f", "job/slow", "-n", "staging"]),
        "one\ntwo\n"
    );
    assert_eq!(
        sandbox.ok(&["logs", "job/slow", "-n", "staging", "--limit-bytes=5"]),
        "one\nt"
    );
    assert_eq!(
        sandbox.ok(&["logs", "job/slow", "-n", "staging", "--tail=1"]),
        "two\n"
    );
    let previous = sandbox.fails(&["logs", "job/slow", "-n", "staging", "--previous"]);
    assert!(
        previous.contains("previous terminated container \"slow\" in pod"),
        "{previous}"
    );
}

/// The lines of `kubectl logs --timestamps`: each line's time and text.
fn stamped_lines(output: &str) -> Vec<(jiff::Timestamp, String)> {
    output
        .lines()
        .map(|line| {
            let (time, text) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("no timestamp before {line:?}"));
            assert_eq!(time.len(), 30, "nine fractional digits, UTC: {time}");
            let time = time
                .parse()
                .unwrap_or_else(|error| panic!("{time:?} is not RFC 3339: {error}"));
            (time, text.to_string())
        })
        .collect()
}

#[test]
fn logs_take_the_time_of_each_line_and_filter_by_it() {
    let sandbox = Sandbox::start(HUB);
    sandbox.ok(&[
        "create",
        "job",
        "stamps",
        "-n",
        "staging",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo early 1; echo early 2; sleep 5; echo late 1; echo late 2",
    ]);
    sandbox.ok(&[
        "wait",
        "--for=jsonpath={.status.active}=1",
        "job/stamps",
        "-n",
        "staging",
        "--timeout=60s",
    ]);
    let logs = |flags: &[&str]| {
        let mut args = vec!["logs", "job/stamps", "-n", "staging"];
        args.extend(flags);
        sandbox.ok(&args)
    };
    // Followed until the container ends, each line with its time.
    let followed = stamped_lines(&logs(&["-f", "--timestamps"]));
    let texts: Vec<&str> = followed.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts, ["early 1", "early 2", "late 1", "late 2"]);
    assert!(
        followed.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "{followed:?}"
    );
    let [_, (early, _), (late, _), (last, _)] = followed[..] else {
        unreachable!("four lines")
    };
    assert!(late > early, "{followed:?}");
    // Read again, the lines have the times they had.
    assert_eq!(stamped_lines(&logs(&["--timestamps"])), followed);
    assert_eq!(logs(&[]), "early 1\nearly 2\nlate 1\nlate 2\n");
    assert_eq!(
        stamped_lines(&logs(&["--timestamps", "--tail=1"])),
        [(last, "late 2".to_string())]
    );

    // kubectl sends sinceTime in whole seconds: the second after the early lines.
    let after_early = early
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc),
        )
        .expect("a time in range")
        + jiff::SignedDuration::from_secs(1);
    assert_eq!(
        logs(&[&format!("--since-time={after_early}")]),
        "late 1\nlate 2\n"
    );
    // sinceSeconds counts back from when the server answers: aim between the early and the
    // late lines, seconds before the late ones, whatever the time kubectl takes to start.
    let middle = early + early.duration_until(late) / 2;
    let seconds = jiff::Timestamp::now().duration_since(middle).as_secs() + 1;
    assert_eq!(logs(&[&format!("--since={seconds}s")]), "late 1\nlate 2\n");
    assert_eq!(
        logs(&[&format!("--since={}s", seconds + 60)]),
        "early 1\nearly 2\nlate 1\nlate 2\n"
    );

    // kubectl refuses both itself; the API server does too.
    let pod = sandbox.ok(&[
        "get",
        "pods",
        "-n",
        "staging",
        "-l",
        "job-name=stamps",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let both = sandbox.fails(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/staging/pods/{pod}/log?sinceSeconds=5&sinceTime={after_early}"
        ),
    ]);
    assert!(
        both.contains("at most one of `sinceTime` or `sinceSeconds` may be specified"),
        "{both}"
    );
}

#[test]
fn can_i_nodes_and_events() {
    let sandbox = Sandbox::start(HUB);
    assert_eq!(
        sandbox.ok(&["auth", "can-i", "delete", "pods", "-n", "staging"]),
        "yes\n"
    );
    let nodes = sandbox.ok(&["get", "nodes"]);
    assert!(
        nodes.starts_with("NAME") && nodes.contains("sandbox-node   Ready    control-plane"),
        "{nodes}"
    );
    // The scheduler placed the hub's pods when the sandbox loaded them.
    let events = sandbox.ok(&["get", "events", "-n", "staging"]);
    assert!(
        events.starts_with("LAST SEEN   TYPE     REASON"),
        "{events}"
    );
    assert!(
        events.lines().any(|line| line.contains("Scheduled")
            && line.contains("pod/jupyter-alice")
            && line.ends_with("Successfully assigned staging/jupyter-alice to sandbox-node")),
        "{events}"
    );
    let described = sandbox.ok(&["describe", "pod", "jupyter-alice", "-n", "staging"]);
    let section = described
        .split("Events:")
        .nth(1)
        .expect("describe has an Events section");
    assert!(
        section.contains("default-scheduler  Successfully assigned staging/jupyter-alice"),
        "{described}"
    );
    assert!(
        section.contains("kubelet            Started container notebook"),
        "{described}"
    );
}

#[test]
fn bodies_over_3_mib_get_a_status() {
    let sandbox = Sandbox::start(HUB);
    let big = sandbox.file("big.txt", &"a".repeat(3 * 1024 * 1024 + 1));
    let error = sandbox.fails(&[
        "create",
        "configmap",
        "big",
        "-n",
        "staging",
        &format!("--from-file={big}"),
    ]);
    assert!(
        error.contains("Request entity too large: limit is 3145728"),
        "{error}"
    );
}

/// A StatefulSet of two with a claim template, and the two volumes its claims bind to.
const STATEFUL_SET: &str = include_str!("data/scenarios/statefulset.yaml");

#[test]
fn stateful_sets_scale_and_go_with_their_pods() {
    let sandbox = Sandbox::start("");
    sandbox.ok_with_input(&["apply", "-f", "-"], STATEFUL_SET);
    sandbox.ok(&[
        "wait",
        "sts/db",
        "--for=jsonpath={.status.readyReplicas}=2",
        "--timeout=60s",
    ]);
    let table = sandbox.ok(&["get", "sts"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("a header")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "AGE"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..2], ["db", "2/2"]);
    assert_eq!(
        sandbox.ok(&["get", "pods", "-l", "app=db", "-o", "name"]),
        "pod/db-0\npod/db-1\n"
    );
    let pod = sandbox.json(&["get", "pod", "db-1"]);
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(
        sandbox.ok(&["get", "pvc", "-o", "name"]),
        "persistentvolumeclaim/data-db-0\npersistentvolumeclaim/data-db-1\n"
    );
    assert!(sandbox.ok(&["get", "all"]).contains("statefulset.apps/db"));

    // A restart replaces the pods, the highest ordinal first, and rollout status waits for it.
    sandbox.ok(&["rollout", "restart", "sts/db"]);
    let status = sandbox.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert!(status.contains("partitioned roll out complete"), "{status}");
    for name in ["db-0", "db-1"] {
        let pod = sandbox.json(&["get", "pod", name]);
        assert!(
            pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
            "{name} was replaced"
        );
    }

    assert_eq!(
        sandbox.ok(&["scale", "sts", "db", "--replicas=1"]),
        "statefulset.apps/db scaled\n"
    );
    sandbox.ok(&["wait", "pod/db-1", "--for=delete", "--timeout=60s"]);
    sandbox.ok(&[
        "wait",
        "sts/db",
        "--for=jsonpath={.status.replicas}=1",
        "--timeout=60s",
    ]);
    assert_eq!(sandbox.ok(&["get", "pods", "-o", "name"]), "pod/db-0\n");
    assert_eq!(
        sandbox.ok(&["get", "pvc", "-o", "name"]).lines().count(),
        2,
        "the claims stay"
    );

    assert_eq!(
        sandbox.ok(&["delete", "sts", "db"]),
        "statefulset.apps \"db\" deleted\n"
    );
    sandbox.ok(&["wait", "pod/db-0", "--for=delete", "--timeout=60s"]);
    assert_eq!(sandbox.ok(&["get", "pods", "-o", "name"]), "");
    assert_eq!(sandbox.ok(&["get", "pvc", "-o", "name"]).lines().count(), 2);
}

/// A trimmed Fluid `DataMigrate` definition (data.fluid.io), with its status subresource.
const DATA_MIGRATE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: datamigrates.data.fluid.io
spec:
  group: data.fluid.io
  names: {kind: DataMigrate, plural: datamigrates, singular: datamigrate, listKind: DataMigrateList, shortNames: [dm]}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

#[test]
fn custom_resources_are_served_once_defined() {
    let sandbox = Sandbox::start(HUB);
    let migrate = sandbox.file(
        "migrate.yaml",
        "apiVersion: data.fluid.io/v1alpha1\nkind: DataMigrate\nmetadata: {name: jfs-migrate, namespace: staging}\nspec:\n  image: juicefs-fuse\n  to: {dataset: {name: jfsdemo, path: /dir1}}\n",
    );
    // Not served before its definition exists.
    sandbox.fails(&["apply", "-f", &migrate]);

    let definition = sandbox.file("crd.yaml", DATA_MIGRATE_CRD);
    assert_eq!(
        sandbox.ok(&["apply", "-f", &definition]),
        "customresourcedefinition.apiextensions.k8s.io/datamigrates.data.fluid.io created\n"
    );
    sandbox.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/datamigrates.data.fluid.io",
        "--timeout=30s",
    ]);
    assert!(
        sandbox
            .ok(&["api-resources", "--api-group=data.fluid.io"])
            .contains("datamigrates")
    );
    assert_eq!(
        sandbox.ok(&["apply", "-f", &migrate]),
        "datamigrate.data.fluid.io/jfs-migrate created\n"
    );
    assert_eq!(
        sandbox.ok(&["apply", "-f", &migrate]),
        "datamigrate.data.fluid.io/jfs-migrate unchanged\n"
    );
    let listed = sandbox.ok(&["get", "datamigrates", "-n", "staging"]);
    assert!(
        listed.starts_with("NAME") && listed.contains("jfs-migrate"),
        "{listed}"
    );
    let object = sandbox.json(&["get", "DataMigrate", "jfs-migrate", "-n", "staging"]);
    assert_eq!(object["spec"]["to"]["dataset"]["path"], "/dir1");

    // Status goes through its subresource, as a controller writes it.
    sandbox.ok(&[
        "patch",
        "datamigrate",
        "jfs-migrate",
        "-n",
        "staging",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Complete"}}"#,
    ]);
    sandbox.ok(&[
        "wait",
        "datamigrate/jfs-migrate",
        "-n",
        "staging",
        "--for=jsonpath={.status.phase}=Complete",
        "--timeout=30s",
    ]);
    // A JSON patch and a server-side apply of the spec keep the status.
    sandbox.ok(&[
        "patch",
        "datamigrate",
        "jfs-migrate",
        "-n",
        "staging",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/image","value":"juicefs-nightly"}]"#,
    ]);
    sandbox.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &migrate,
    ]);
    let object = sandbox.json(&["get", "dm.data.fluid.io", "jfs-migrate", "-n", "staging"]);
    assert_eq!(
        (&object["spec"]["image"], &object["status"]["phase"]),
        (&Value::from("juicefs-fuse"), &Value::from("Complete"))
    );

    // Without its definition the kind is not served (kubectl, whose discovery is cached,
    // learns it from the 404 of the list), and its objects are gone.
    sandbox.ok(&["delete", "-f", &definition, "--wait=true"]);
    let gone = sandbox.fails(&["get", "datamigrates", "-n", "staging"]);
    assert!(
        gone.contains("NotFound") && gone.contains("datamigrates"),
        "{gone}"
    );
}
