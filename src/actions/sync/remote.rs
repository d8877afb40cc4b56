//! `sync` with `on: {pod: ...}`: the copy runs inside a pod, detached, and `runbook` only
//! starts it, watches it and collects it, through the Kubernetes exec API.
//!
//! 1. The agent (this program, `runbook sync-agent`, see [`super::agent`]) must be in the pod:
//!    `PATH --version` says whether it is; if not, the binary is streamed through exec's
//!    stdin in chunks (each one retried alone when a connection drops), checked (size,
//!    `--version`) and moved into place. rsync must be there too; if it is not, it is
//!    installed with the image's package manager.
//! 2. The step's agent directory is named after the step, the pod and the two paths, so a
//!    later `runbook` finds it. If the agent there is one this step started (its
//!    [`Note::Agent`] is journaled) and its result was not collected yet, `runbook`
//!    re-attaches to it, running or finished. Otherwise a new agent is journaled, then
//!    started; the agent's lock refuses a second one while one runs.
//! 3. `runbook` follows the agent's status (a long `status --follow` exec, opened again
//!    whenever it ends or its connection drops), turns it into progress events and lines,
//!    and journals the agent's notes (its plan, each finished shard) as the step's own,
//!    each once. The step's result is the agent's.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use sha2::Digest as _;

use super::SyncAction;
use super::agent::{AgentRequest, StartReport};
use super::pass::{AgentRecord, Note, journaled_agents};
use super::pod::{EXEC_TRIES, Pod, status_once};
use super::spec::{RunsOn, Settings};
use super::watch::watch;
use crate::actions::{InvalidInput, Outcome, StepContext};

/// Where agents keep their directories in the pod, unless `RUNBOOK_AGENT_DIR` says.
pub(super) const DEFAULT_AGENT_ROOT: &str = "/var/tmp/runbook-sync";

/// Where agents keep their directories in the pod: the run's `agent_dir` (the sandbox's),
/// else `RUNBOOK_AGENT_DIR`, else [`DEFAULT_AGENT_ROOT`].
pub(super) fn agent_root(cx: &StepContext<'_>) -> String {
    cx.surroundings
        .agent_dir
        .clone()
        .or_else(|| std::env::var("RUNBOOK_AGENT_DIR").ok())
        .unwrap_or_else(|| DEFAULT_AGENT_ROOT.into())
}
/// The binary goes into the pod in pieces this big, each one sent again alone if its
/// connection drops.
const UPLOAD_CHUNK: usize = 8 << 20;
impl SyncAction {
    /// The pod of `on:`, rendered.
    fn pod<'a>(&self, on: &RunsOn, cx: &'a StepContext<'_>) -> anyhow::Result<Pod<'a>> {
        let cluster = cx.cluster()?;
        let name = cx.render(&on.pod)?;
        let namespace = cx.namespace_or_default(on.namespace.as_deref())?;
        let container = cx.render_optional(on.container.as_deref())?;
        for (key, value) in [("pod", Some(&name)), ("namespace", Some(&namespace))]
            .into_iter()
            .chain([("container", container.as_ref())])
        {
            if value.is_some_and(|value| value.trim().is_empty()) {
                return Err(InvalidInput(format!("`on.{key}` renders to an empty name")).into());
            }
        }
        Ok(Pod {
            cluster,
            namespace,
            name,
            container,
        })
    }
}

/// What `plan` says of a copy in a pod, from the journal only: the trees are compared
/// in the pod when the step runs, and a plan changes nothing there.
pub(super) fn preview(
    action: &SyncAction,
    cx: &StepContext<'_>,
    settings: &Settings,
    on: &RunsOn,
) -> anyhow::Result<crate::actions::Preview> {
    let namespace = cx.namespace_or_default(on.namespace.as_deref())?;
    let place = format!("pod {} in namespace {namespace}", cx.render(&on.pod)?);
    let notes = action.notes(cx);
    let ledger = super::pass::Ledger::read(&notes);
    let (started, collected) = journaled_agents(&notes);
    let detached = started.difference(&collected).next().is_some();
    let summary = match ledger.resumable(&settings.fingerprint()) {
        Some(state) => format!(
            "{} pass {} from {} to {} in {place}: {} of {} shards were finished",
            if detached { "re-attach to" } else { "resume" },
            state.record.pass,
            settings.from.display(),
            settings.to.display(),
            state.done_shards.len(),
            state.record.shards.len()
        ),
        None if detached => format!(
            "re-attach to the copy from {} to {} detached in {place}, and collect its result",
            settings.from.display(),
            settings.to.display()
        ),
        None => format!(
            "copy from {} to {} in {place}, detached, with {} (the trees are compared there when the step runs)",
            settings.from.display(),
            settings.to.display(),
            settings.describe_workers()
        ),
    };
    Ok(crate::actions::Preview {
        summary,
        diff: None,
    })
}

/// The directory of the step's agent in the pod: one per step, pod and pair of paths, so
/// that every `runbook` that runs this step finds the same one.
pub fn agent_dir(root: &str, step: &str, pod: (&str, &str), settings: &Settings) -> String {
    let key = serde_json::json!([
        step,
        pod.0,
        pod.1,
        settings.from.to_string_lossy(),
        settings.to.to_string_lossy(),
    ])
    .to_string();
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}/{step}-{hash}", root.trim_end_matches('/'))
}

/// The `--version` line of this program, which an agent in the pod must print.
fn version_line() -> String {
    format!("runbook {}", env!("CARGO_PKG_VERSION"))
}

/// The binary to ship into pods: `RUNBOOK_AGENT_BINARY` (a static build, for images whose
/// libc cannot run ours), or this program.
fn local_binary() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("RUNBOOK_AGENT_BINARY") {
        Some(path) => Ok(path.into()),
        None => std::env::current_exe().context("cannot find this program to ship it"),
    }
}

/// Where the agent binary goes in the pod: `RUNBOOK_AGENT_PATH`, or a name of this build
/// (its version, size and time), so that another build never runs an older agent.
fn agent_path(root: &str, binary: &Path) -> anyhow::Result<String> {
    if let Some(path) = std::env::var_os("RUNBOOK_AGENT_PATH") {
        return Ok(path.to_string_lossy().into_owned());
    }
    let meta = std::fs::metadata(binary)
        .with_context(|| format!("cannot read the agent binary {}", binary.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let key = format!(
        "{} {} {}",
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    );
    let digest = sha2::Sha256::digest(key.as_bytes());
    let build: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}/bin/runbook-{}-{build}",
        root.trim_end_matches('/'),
        env!("CARGO_PKG_VERSION")
    ))
}

/// Whether the agent at `path` runs in the pod and is this version.
async fn agent_runs(pod: &Pod<'_>, path: &str) -> anyhow::Result<Result<(), String>> {
    let output = pod
        .exec_retrying(&["sh", "-c", "exec \"$0\" --version", path], None)
        .await?;
    let printed = output.stdout_text();
    if output.exit_code == 0 && printed.trim() == version_line() {
        Ok(Ok(()))
    } else if output.exit_code == 0 {
        Ok(Err(format!("it is {}", printed.trim())))
    } else {
        Ok(Err(output.stderr_text().trim().to_string()))
    }
}

/// Makes sure this program is in the pod at `path`, shipping it if needed.
async fn install_agent(pod: &Pod<'_>, cx: &StepContext<'_>, path: &str) -> anyhow::Result<()> {
    if agent_runs(pod, path).await?.is_ok() {
        return Ok(());
    }
    let binary = local_binary()?;
    let content = tokio::fs::read(&binary)
        .await
        .with_context(|| format!("cannot read the agent binary {}", binary.display()))?;
    cx.output_line(&format!(
        "shipping runbook ({}) into {} as {path}",
        super::progress::bytes(content.len() as u64),
        pod.describe()
    ));
    let token = format!("{:08x}", fastrand::u32(..));
    let content = Bytes::from(content);
    for (index, start) in (0..content.len()).step_by(UPLOAD_CHUNK).enumerate() {
        let end = (start + UPLOAD_CHUNK).min(content.len());
        let part = format!("{path}.upload-{token}.{index:05}");
        let output = pod
            .exec_retrying(
                &[
                    "sh",
                    "-c",
                    "mkdir -p \"${0%/*}\" && cat > \"$0\"",
                    part.as_str(),
                ],
                Some(content.slice(start..end)),
            )
            .await?;
        if output.exit_code != 0 {
            anyhow::bail!(
                "cannot write {part} in {}: {}",
                pod.describe(),
                output.stderr_text().trim()
            );
        }
    }
    // Join the pieces, check them, and only then put the binary where it is looked for.
    // Again from the pieces if its connection drops: they are removed only at the end.
    let script = r#"set -e
if [ -x "$0" ] && [ "$("$0" --version 2>/dev/null)" = "$3" ]; then rm -f "$0.upload-$1".*; exit 0; fi
t="$0.upload-$1"
cat "$t".[0-9]* > "$t"
chmod 755 "$t"
size=$(wc -c < "$t")
if [ "$size" -ne "$2" ]; then echo "the binary arrived with $size bytes instead of $2" >&2; rm -f "$t"*; exit 1; fi
if ! version=$("$t" --version 2>&1); then echo "$version" >&2; rm -f "$t"*; exit 3; fi
mv -f "$t" "$0"
rm -f "$t".*
"#;
    let (size, version) = (content.len().to_string(), version_line());
    let output = pod
        .exec_retrying(&["sh", "-c", script, path, &token, &size, &version], None)
        .await?;
    match output.exit_code {
        0 => {}
        3 => {
            return Err(InvalidInput(format!(
                "runbook cannot run in {}: {}\nhelp: the pod needs a binary its libc can run: build a static one (`cargo build --release --target x86_64-unknown-linux-musl`) and set RUNBOOK_AGENT_BINARY to it",
                pod.describe(),
                output.stderr_text().trim()
            ))
            .into());
        }
        _ => anyhow::bail!(
            "cannot install runbook in {}: {}",
            pod.describe(),
            output.stderr_text().trim()
        ),
    }
    match agent_runs(pod, path).await? {
        Ok(()) => Ok(()),
        Err(why) => Err(InvalidInput(format!(
            "the runbook shipped into {} as {path} is not {}: {why}\nhelp: RUNBOOK_AGENT_BINARY must be a build of the same version",
            pod.describe(),
            version_line()
        ))
        .into()),
    }
}

/// Installs rsync in the pod if it is missing, with the image's package manager.
async fn ensure_rsync(pod: &Pod<'_>, cx: &StepContext<'_>) -> anyhow::Result<()> {
    let found = pod
        .exec_retrying(&["sh", "-c", "command -v rsync"], None)
        .await?;
    if found.exit_code == 0 {
        return Ok(());
    }
    cx.output_line(&format!(
        "rsync is not installed in {}: installing it with the image's package manager",
        pod.describe()
    ));
    let script = r#"if command -v apt-get >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync
elif command -v apk >/dev/null; then apk add --no-cache rsync
elif command -v dnf >/dev/null; then dnf install -y rsync
elif command -v microdnf >/dev/null; then microdnf install -y rsync
elif command -v yum >/dev/null; then yum install -y rsync
else echo "no apt-get, apk, dnf or yum in the image" >&2; exit 127; fi"#;
    let output = pod.exec_retrying(&["sh", "-c", script], None).await?;
    if output.exit_code != 0 {
        let text = output.stderr_text();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(InvalidInput(format!(
            "rsync is not installed in {} and could not be installed (exit {}):\n  {}\nhelp: use an image with rsync, or one whose package manager can reach its mirror",
            pod.describe(),
            output.exit_code,
            tail.join("\n  ")
        ))
        .into());
    }
    Ok(())
}

/// A new agent id: the time and some randomness.
fn new_agent_id() -> String {
    format!(
        "{}-{:06x}",
        jiff::Timestamp::now().as_second(),
        fastrand::u32(..1 << 24)
    )
}

/// Runs the step's copy in its pod: see the module's comment.
pub(super) async fn apply(
    action: &SyncAction,
    cx: &StepContext<'_>,
    settings: Settings,
    notes: Vec<serde_json::Value>,
) -> anyhow::Result<Outcome> {
    let on = action.on.as_ref().context("a copy in a pod needs `on:`")?;
    let pod = action.pod(on, cx)?;
    let root = agent_root(cx);
    let dir = agent_dir(&root, cx.step_id, (&pod.namespace, &pod.name), &settings);
    let binary = agent_path(&root, &local_binary()?)?;
    install_agent(&pod, cx, &binary).await?;
    ensure_rsync(&pod, cx).await?;

    let repeat_secs = action.repeat_secs(cx)?;
    let mut notes = notes;
    let (ours, collected) = journaled_agents(&notes);
    let found = status_once(&pod, &binary, &dir).await?;
    let start = AgentStart {
        repeat_secs,
        catch_up_now: false,
    };
    let agent = match &found.state {
        Some(state) if ours.contains(&state.agent) && !collected.contains(&state.agent) => {
            let how = if state.result.is_some() {
                "collecting the copy that finished"
            } else if found.alive {
                "re-attaching to the copy running"
            } else {
                "collecting the copy that stopped"
            };
            cx.output_line(&format!(
                "{how} in {} (agent {}, pid {}, started {})",
                pod.describe(),
                state.agent,
                state.pid,
                state.started
            ));
            state.agent.clone()
        }
        // This step's agent, repeating (or stopped in its catch-up passes): its passes are
        // collected, and a new agent runs a pass now (`run --only STEP`).
        Some(state) if ours.contains(&state.agent) && state.catch_up.is_some() => {
            let record = AgentRecord {
                agent: state.agent.clone(),
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container: pod.container.clone(),
                dir: dir.clone(),
                binary: binary.clone(),
                started: state.started.clone(),
                repeat_secs: None,
            };
            let collected =
                super::catch_up::stop_own(cx, &pod, &record, found.alive, &notes).await?;
            notes.extend(collected);
            start_agent(action, cx, &pod, &settings, &notes, (&binary, &dir), start).await?
        }
        Some(state) if found.alive => {
            anyhow::bail!(
                "a copy is already running in {} with the state directory {dir} (agent {}, pid {}, started {}), started by another run\nhelp: wait for it to end, or stop it (`kill {}` in the pod), then run again",
                pod.describe(),
                state.agent,
                state.pid,
                state.started,
                state.pid
            );
        }
        _ => start_agent(action, cx, &pod, &settings, &notes, (&binary, &dir), start).await?,
    };
    watch(action, cx, &pod, &binary, &dir, &agent, &notes).await
}

/// How a new agent starts: whether it repeats, and whether it goes straight to its
/// catch-up passes (the first pass was done by an agent that died).
pub(super) struct AgentStart {
    /// `repeat:`, in seconds.
    pub repeat_secs: Option<u64>,
    /// Its first pass is a catch-up pass, and nobody waits for its result.
    pub catch_up_now: bool,
}

/// Journals a new agent, then starts it in `place` (the binary and the agent's directory).
pub(super) async fn start_agent(
    action: &SyncAction,
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    settings: &Settings,
    notes: &[serde_json::Value],
    (binary, dir): (&str, &str),
    start: AgentStart,
) -> anyhow::Result<String> {
    let agent = new_agent_id();
    let record = AgentRecord {
        agent: agent.clone(),
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        container: pod.container.clone(),
        dir: dir.to_string(),
        binary: binary.to_string(),
        started: jiff::Timestamp::now().to_string(),
        repeat_secs: start.repeat_secs,
    };
    // Journaled first: whatever happens to this process next, a later run knows the agent
    // in that directory is this step's.
    action.note(cx, &Note::Agent(Box::new(record)))?;
    let request = AgentRequest {
        agent: agent.clone(),
        step: cx.step_id.to_string(),
        settings: settings.clone(),
        notes: notes.to_vec(),
        continued: action.continued_notes(cx),
        repeat_secs: start.repeat_secs,
        catch_up_now: start.catch_up_now,
    };
    let request = Bytes::from(serde_json::to_vec(&request)?);
    for _ in 0..EXEC_TRIES {
        let started = pod
            .exec(
                &[binary, "sync-agent", "start", "--dir", dir],
                Some(request.clone()),
            )
            .await;
        let report = match started {
            Ok(output) if output.exit_code == 0 => {
                serde_json::from_str::<StartReport>(output.stdout_text().trim()).ok()
            }
            Ok(output) => anyhow::bail!(
                "cannot start the copy in {}: {}",
                pod.describe(),
                output.stderr_text().trim()
            ),
            Err(error) if error.is_transient() => None,
            Err(error) => return Err(pod.exec_failed(error)),
        };
        // A start whose answer was lost may have started the agent: its state says.
        let report = match report {
            Some(report) => report,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let status = status_once(pod, binary, dir).await?;
                match status.state {
                    Some(state) if state.agent == agent => StartReport {
                        started: true,
                        agent: state.agent,
                        pid: state.pid,
                    },
                    Some(state) if status.alive => StartReport {
                        started: false,
                        agent: state.agent,
                        pid: state.pid,
                    },
                    _ => continue,
                }
            }
        };
        if report.agent == agent {
            cx.output_line(&format!(
                "started the copy in {}, detached (agent {agent}, pid {}); it goes on if runbook stops, and `runbook run` again re-attaches",
                pod.describe(),
                report.pid
            ));
            return Ok(agent);
        }
        anyhow::bail!(
            "a copy is already running in {} with the state directory {dir} (agent {}, pid {}), started by another run\nhelp: wait for it to end, or stop it (`kill {}` in the pod), then run again",
            pod.describe(),
            report.agent,
            report.pid,
            report.pid
        );
    }
    anyhow::bail!(
        "cannot start the copy in {}: the connection kept dropping",
        pod.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::pass::journaled_keys;
    use super::*;

    fn note(note: Note) -> serde_json::Value {
        serde_json::to_value(note).expect("note")
    }

    fn record(agent: &str) -> Note {
        Note::Agent(Box::new(AgentRecord {
            agent: agent.into(),
            namespace: "default".into(),
            pod: "transfer".into(),
            container: None,
            dir: "/var/tmp/runbook-sync/copy-x".into(),
            binary: "/var/tmp/runbook-sync/bin/runbook".into(),
            started: "t".into(),
            repeat_secs: None,
        }))
    }

    #[test]
    fn agents_of_the_journal_and_those_collected() {
        let notes = vec![
            note(record("a")),
            note(Note::Collected {
                agent: "a".into(),
                ok: true,
            }),
            note(record("b")),
            serde_json::json!({"something": "else"}),
        ];
        let (started, collected) = journaled_agents(&notes);
        assert_eq!(started, HashSet::from(["a".to_string(), "b".to_string()]));
        assert_eq!(collected, HashSet::from(["a".to_string()]));
    }

    #[test]
    fn a_note_collected_again_keeps_its_key() {
        let notes = vec![
            note(Note::Shard {
                tries: None,
                pass: 1,
                shard: 3,
                bytes: 10,
                files: 1,
            }),
            note(Note::PassDone { pass: 1 }),
        ];
        let keys = journaled_keys(&notes);
        assert!(keys.contains("shard 1 3") && keys.contains("done 1"));
        assert!(!keys.contains("shard 2 3"));
    }

    #[test]
    fn one_directory_per_step_pod_and_paths() {
        let settings = |from: &str, to: &str| Settings::for_test(from, to);
        let pod = ("default", "transfer");
        let dir = agent_dir("/var/tmp/runbook-sync/", "copy", pod, &settings("/a", "/b"));
        assert!(dir.starts_with("/var/tmp/runbook-sync/copy-"), "{dir}");
        // The same step again (more jobs, another run) finds the same directory.
        let mut more_jobs = settings("/a", "/b");
        more_jobs.jobs = 8;
        assert_eq!(
            dir,
            agent_dir("/var/tmp/runbook-sync", "copy", pod, &more_jobs)
        );
        for other in [
            agent_dir("/var/tmp/runbook-sync", "final", pod, &settings("/a", "/b")),
            agent_dir(
                "/var/tmp/runbook-sync",
                "copy",
                ("hub", "transfer"),
                &settings("/a", "/b"),
            ),
            agent_dir("/var/tmp/runbook-sync", "copy", pod, &settings("/a", "/c")),
        ] {
            assert_ne!(dir, other);
        }
    }
}
