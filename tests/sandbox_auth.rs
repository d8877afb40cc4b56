//! Who may use a sandbox (issue #13, finding F5): it serves HTTPS with a certificate of its
//! own CA, answers only requests that carry the bearer token of its kubeconfig and name the
//! loopback interface as their Host, and keeps its credentials across restarts. The
//! refusals are checked with a raw TLS client that trusts the sandbox's CA (so that nothing
//! but the token or the Host differs from an accepted request), and with our own client;
//! the accepted side with the real kubectl and our client, exec included.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{Sandbox, wait_until};
use runbook::kube::{Cluster, ClusterOptions, KubeError, find_kind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// A pod to exec into.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: transfer, namespace: default}
spec:
  containers: [{name: shell, image: ubuntu:22.04}]
"#;

/// What a client needs from a sandbox's kubeconfig.
struct Endpoint {
    /// `127.0.0.1:PORT`.
    address: String,
    ca: CertificateDer<'static>,
    token: String,
}

impl Endpoint {
    fn of(kubeconfig: &Path) -> Self {
        let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
        let config: Value = serde_saphyr::from_str(&text).expect("the kubeconfig is YAML");
        let cluster = &config["clusters"][0]["cluster"];
        let address = cluster["server"]
            .as_str()
            .expect("a server")
            .strip_prefix("https://")
            .expect("an https:// server")
            .to_string();
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(
                cluster["certificate-authority-data"]
                    .as_str()
                    .expect("certificate-authority-data"),
            )
            .expect("base64");
        let ca = CertificateDer::from_pem_slice(&ca_pem).expect("a PEM certificate");
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .expect("a token")
            .to_string();
        Endpoint { address, ca, token }
    }

    fn port(&self) -> &str {
        self.address.rsplit_once(':').expect("a port").1
    }
}

/// One HTTP/1.1 request over TLS, headers as given: the Host and the token are the test's.
struct RawRequest<'a> {
    method: &'a str,
    path: &'a str,
    host: String,
    token: Option<String>,
    body: Option<String>,
}

/// The status code and body of an answer.
#[derive(Debug)]
struct Answer {
    code: u16,
    body: Value,
}

impl<'a> RawRequest<'a> {
    /// A request that differs from kubectl's only in what the test changes.
    fn new(endpoint: &Endpoint, method: &'a str, path: &'a str) -> Self {
        RawRequest {
            method,
            path,
            host: endpoint.address.clone(),
            token: Some(endpoint.token.clone()),
            body: None,
        }
    }

    fn send(&self, endpoint: &Endpoint) -> Answer {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(endpoint.ca.clone()).expect("the CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").expect("a server name");
        let connection =
            rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
        let socket = TcpStream::connect(&endpoint.address).expect("connect to the sandbox");
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.method, self.path, self.host
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = self.body.clone().unwrap_or_default();
        if self.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .expect("send the request");
        let mut answer = Vec::new();
        // The sandbox closes the connection after its answer; an end without TLS's
        // close_notify still leaves the whole answer read.
        let _ = stream.read_to_end(&mut answer);
        parse_answer(&answer)
    }
}

fn parse_answer(answer: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Answer { code, body }
}

/// Asserts that an answer is a full `Status` of a failure, as a real API server sends.
#[track_caller]
fn assert_failure_status(answer: &Answer, code: u16, reason: &str) {
    assert_eq!(answer.code, code, "{answer:?}");
    let status = &answer.body;
    assert_eq!(status["kind"], "Status", "{answer:?}");
    assert_eq!(status["apiVersion"], "v1", "{answer:?}");
    assert_eq!(status["status"], "Failure", "{answer:?}");
    assert_eq!(status["reason"], reason, "{answer:?}");
    assert_eq!(status["code"], code, "{answer:?}");
    assert!(
        !status["message"].as_str().unwrap_or_default().is_empty(),
        "{answer:?}"
    );
}

/// The finding's Job: it would run `id` on the host, writing to `marker`.
fn job_running_id(name: &str, marker: &Path) -> String {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "run",
                "image": "busybox",
                "command": ["sh", "-c", format!("id > {}", marker.display())],
            }],
        }}},
    })
    .to_string()
}

/// A copy of the kubeconfig with the user's token replaced (`None`: no token at all).
fn kubeconfig_with_token(sandbox: &Sandbox, token: Option<&str>, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(sandbox.kubeconfig()).expect("read the kubeconfig");
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("token:"))
        .expect("a token line");
    let replaced = match token {
        Some(token) => text.replace(line, &format!("    token: \"{token}\"")),
        None => text.replace(&format!("  user:\n{line}\n"), "  user: {}\n"),
    };
    assert_ne!(replaced, text, "the token was replaced");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, replaced).expect("write the kubeconfig");
    path
}

async fn client_of(kubeconfig: &Path) -> Cluster {
    Cluster::connect(&ClusterOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
    })
    .await
    .expect("a client")
}

#[test]
fn requests_without_the_token_get_401_statuses() {
    let sandbox = Sandbox::start(POD);
    let endpoint = Endpoint::of(&sandbox.kubeconfig());
    let path = "/api/v1/namespaces/default/pods";
    let accepted = RawRequest::new(&endpoint, "GET", path).send(&endpoint);
    assert_eq!(accepted.code, 200, "{accepted:?}");
    assert_eq!(accepted.body["items"][0]["metadata"]["name"], "transfer");

    let anonymous = RawRequest {
        token: None,
        ..RawRequest::new(&endpoint, "GET", path)
    }
    .send(&endpoint);
    assert_failure_status(&anonymous, 401, "Unauthorized");
    let wrong = RawRequest {
        token: Some("0".repeat(64)),
        ..RawRequest::new(&endpoint, "GET", path)
    }
    .send(&endpoint);
    assert_failure_status(&wrong, 401, "Unauthorized");
    // Discovery too: a real server with anonymous access off answers 401 to everything.
    let version = RawRequest {
        token: None,
        ..RawRequest::new(&endpoint, "GET", "/version")
    }
    .send(&endpoint);
    assert_failure_status(&version, 401, "Unauthorized");
    let refused: Vec<Value> = sandbox
        .requests()
        .into_iter()
        .filter(|request| request["status"] == 401)
        .collect();
    assert_eq!(refused.len(), 3, "the refusals are logged: {refused:?}");
}

#[test]
fn the_anonymous_job_of_the_finding_creates_nothing() {
    let sandbox = Sandbox::start(POD);
    let endpoint = Endpoint::of(&sandbox.kubeconfig());
    let scratch = tempfile::tempdir().expect("temp dir");
    let marker = scratch.path().join("id.out");
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    let anonymous = RawRequest {
        token: None,
        body: Some(job_running_id("intruder", &marker)),
        ..RawRequest::new(&endpoint, "POST", jobs)
    }
    .send(&endpoint);
    assert_failure_status(&anonymous, 401, "Unauthorized");
    assert_eq!(sandbox.get("job", "intruder", Some("default")), None);
    assert_eq!(
        sandbox.kubectl(&["get", "pods", "-o", "name"]),
        "pod/transfer\n"
    );

    // The same request with the token is the finding's attack when it works: it is, so the
    // refusal above was the token's doing, not a malformed request's.
    let authorized = RawRequest {
        body: Some(job_running_id("owner", &marker)),
        ..RawRequest::new(&endpoint, "POST", jobs)
    }
    .send(&endpoint);
    assert_eq!(authorized.code, 201, "{authorized:?}");
    wait_until("the authorized Job ran", Duration::from_secs(30), || {
        marker.exists()
    });
    assert_eq!(sandbox.get("job", "intruder", Some("default")), None);
}

#[test]
fn a_host_other_than_the_loopback_is_refused() {
    let sandbox = Sandbox::start(POD);
    let endpoint = Endpoint::of(&sandbox.kubeconfig());
    let path = "/api/v1/namespaces/default/pods";
    for host in ["evil.example", "evil.example:80", "127.0.0.1.nip.io"] {
        let answer = RawRequest {
            host: host.to_string(),
            ..RawRequest::new(&endpoint, "GET", path)
        }
        .send(&endpoint);
        assert_failure_status(&answer, 403, "Forbidden");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{host:?}")), "{message}");
    }
    let port = endpoint.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let answer = RawRequest {
            host: host.clone(),
            ..RawRequest::new(&endpoint, "GET", path)
        }
        .send(&endpoint);
        assert_eq!(answer.code, 200, "{host}: {answer:?}");
    }
}

#[test]
fn plain_http_is_told_to_use_https() {
    let sandbox = Sandbox::start(POD);
    let endpoint = Endpoint::of(&sandbox.kubeconfig());
    let mut socket = TcpStream::connect(&endpoint.address).expect("connect");
    socket
        .write_all(
            format!(
                "GET /api/v1/pods HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                endpoint.address
            )
            .as_bytes(),
        )
        .expect("send");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = parse_answer(&answer);
    assert_eq!(answer.code, 400);
    assert_eq!(
        answer.body,
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    assert!(
        sandbox.requests().is_empty(),
        "nothing reached the routes: {:?}",
        sandbox.requests()
    );
}

#[test]
fn kubectl_works_with_the_kubeconfig_and_not_without_its_token() {
    let sandbox = Sandbox::start(POD);
    let mode = std::fs::metadata(sandbox.kubeconfig())
        .expect("the kubeconfig")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds the token");
    let credentials = sandbox
        .kubeconfig()
        .parent()
        .expect("the sandbox dir")
        .join("credentials");
    for file in ["server.key", "token"] {
        let mode = std::fs::metadata(credentials.join(file))
            .expect(file)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    assert_eq!(
        sandbox.kubectl(&["get", "pods", "-o", "name"]),
        "pod/transfer\n"
    );
    assert_eq!(
        sandbox.kubectl(&["exec", "transfer", "--", "sh", "-c", "echo over TLS"]),
        "over TLS\n"
    );

    let scratch = tempfile::tempdir().expect("temp dir");
    let wrong = kubeconfig_with_token(&sandbox, Some("not-the-token"), scratch.path());
    let output = Command::new("kubectl")
        .args(["get", "pods"])
        .env("KUBECONFIG", &wrong)
        .env("HOME", scratch.path())
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("You must be logged in to the server"),
        "{stderr}"
    );
}

#[tokio::test]
async fn our_client_works_with_the_kubeconfig_and_not_without_its_token() {
    let sandbox = Sandbox::start(POD);
    let cluster = sandbox.client().await;
    let pod = find_kind("Pod").expect("pods");
    let pods = cluster
        .list(pod, Some("default"), None, None)
        .await
        .expect("list pods");
    assert_eq!(pods.len(), 1);
    let output = cluster
        .exec(
            Some("default"),
            "transfer",
            Some("shell"),
            &["sh", "-c", "read line; echo \"got $line\""],
            Some("it\n".into()),
        )
        .await
        .expect("exec over TLS");
    assert_eq!(
        (output.stdout_text().as_str(), output.exit_code),
        ("got it\n", 0)
    );

    let scratch = tempfile::tempdir().expect("temp dir");
    for token in [None, Some("not-the-token")] {
        let kubeconfig = kubeconfig_with_token(&sandbox, token, scratch.path());
        let stranger = client_of(&kubeconfig).await;
        match stranger.list(pod, Some("default"), None, None).await {
            Err(KubeError::Api { code, reason, .. }) => {
                assert_eq!((code, reason.as_str()), (401, "Unauthorized"), "{token:?}");
            }
            other => panic!("{token:?}: {other:?}"),
        }
    }
}

/// `runbook sandbox up --dir DIR --port PORT`, once its kubeconfig is written.
fn up(dir: &Path, port: u16) -> Child {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["sandbox", "up", "--port", &port.to_string(), "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox");
    wait_until(
        "the sandbox wrote its kubeconfig",
        Duration::from_secs(30),
        || kubeconfig.exists(),
    );
    child
}

#[test]
fn a_sandbox_restarted_on_its_directory_keeps_its_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut first = up(dir.path(), port);
    let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig")).expect("read");
    let _ = first.kill();
    let _ = first.wait();

    let mut second = up(dir.path(), port);
    let again = std::fs::read_to_string(dir.path().join("kubeconfig")).expect("read");
    assert_eq!(again, kubeconfig, "same CA, same token, same port");
    let kept = dir.path().join("kept-kubeconfig");
    std::fs::write(&kept, &kubeconfig).expect("write");
    let output = Command::new("kubectl")
        .args(["get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", &kept)
        .env("HOME", dir.path())
        .output()
        .expect("run kubectl");
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
