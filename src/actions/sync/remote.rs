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

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use sha2::Digest as _;

use super::SyncAction;
use super::agent::{AgentRequest, AgentResult, Said, StartReport, StatusBeat, StatusReport};
use super::pass::{AgentRecord, Note};
use super::pass_reporter::show_board_lines;
use super::spec::{RunsOn, Settings};
use crate::actions::{InvalidInput, Outcome, StepContext};
use crate::kube::{Cluster, ExecError, ExecOutput, OutputStream};
use crate::report::Progress;

/// Where agents keep their directories in the pod, unless `RUNBOOK_AGENT_DIR` says.
pub(super) const DEFAULT_AGENT_ROOT: &str = "/var/tmp/runbook-sync";
/// How long one `status --follow` exec lasts before it is opened again.
const FOLLOW_SECS: u64 = 60;
/// How long `runbook` keeps trying to reach the pod before it gives up watching (the copy
/// goes on in the pod; `run` again re-attaches).
const UNREACHABLE_FOR: Duration = Duration::from_secs(600);
/// The binary goes into the pod in pieces this big, each one sent again alone if its
/// connection drops.
const UPLOAD_CHUNK: usize = 8 << 20;
/// Tries of one exec whose connection drops before it ends.
const EXEC_TRIES: u32 = 8;

/// The pod a copy runs in.
pub struct Pod<'a> {
    pub(super) cluster: &'a Cluster,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its container, when named.
    pub container: Option<String>,
}

impl Pod<'_> {
    /// `pod NAME in namespace NS`.
    fn describe(&self) -> String {
        match &self.container {
            Some(container) => format!(
                "pod {} (container {container}) in namespace {}",
                self.name, self.namespace
            ),
            None => format!("pod {} in namespace {}", self.name, self.namespace),
        }
    }

    async fn exec(&self, command: &[&str], stdin: Option<Bytes>) -> Result<ExecOutput, ExecError> {
        self.cluster
            .exec(
                Some(&self.namespace),
                &self.name,
                self.container.as_deref(),
                command,
                stdin,
            )
            .await
    }

    /// Runs a command that may be repeated, again when its connection drops.
    pub(super) async fn exec_retrying(
        &self,
        command: &[&str],
        stdin: Option<Bytes>,
    ) -> anyhow::Result<ExecOutput> {
        let mut delay = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.exec(command, stdin.clone()).await {
                Ok(output) => return Ok(output),
                Err(error) if error.is_transient() && tries < EXEC_TRIES => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(self.exec_failed(error)),
            }
        }
    }

    fn exec_failed(&self, error: ExecError) -> anyhow::Error {
        match error {
            ExecError::Request(_) => anyhow::Error::new(error).context(format!(
                "cannot run the copy in {}: is the pod running?",
                self.describe()
            )),
            other => other.into(),
        }
    }
}

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
            "copy from {} to {} in {place}, detached, with {} rsync worker{} (the trees are compared there when the step runs)",
            settings.from.display(),
            settings.to.display(),
            settings.jobs,
            if settings.jobs == 1 { "" } else { "s" }
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

/// The agents this step's notes know of, and those whose result was collected.
fn journaled_agents(notes: &[serde_json::Value]) -> (HashSet<String>, HashSet<String>) {
    let mut started = HashSet::new();
    let mut collected = HashSet::new();
    for note in notes {
        match serde_json::from_value::<Note>(note.clone()) {
            Ok(Note::Agent(record)) => {
                started.insert(record.agent);
            }
            Ok(Note::Collected { agent, .. }) => {
                collected.insert(agent);
            }
            _ => {}
        }
    }
    (started, collected)
}

/// The keys of the notes already journaled for the step.
fn journaled_keys(notes: &[serde_json::Value]) -> HashSet<String> {
    notes
        .iter()
        .filter_map(|note| serde_json::from_value::<Note>(note.clone()).ok())
        .map(|note| note.key())
        .collect()
}

/// One `status` of the agent, without following it.
async fn status_once(pod: &Pod<'_>, binary: &str, dir: &str) -> anyhow::Result<StatusReport> {
    let output = pod
        .exec_retrying(&[binary, "sync-agent", "status", "--dir", dir], None)
        .await?;
    parse_status(pod, &output)
}

/// The agent's [`StatusReport`] in the whole output of a `status` (never cut into lines: it
/// holds the notes, whose size grows with the pass).
fn parse_status(pod: &Pod<'_>, output: &ExecOutput) -> anyhow::Result<StatusReport> {
    if output.exit_code != 0 {
        anyhow::bail!(
            "cannot read the copy's state in {}: {}",
            pod.describe(),
            output.stderr_text().trim()
        );
    }
    serde_json::from_str(output.stdout_text().trim()).with_context(|| {
        format!(
            "the agent in {} printed something else than its status: {}",
            pod.describe(),
            excerpt(&output.stdout_text())
        )
    })
}

/// The start of a text that was not what we expected, short enough for a message.
fn excerpt(text: &str) -> String {
    const SHOWN: usize = 200;
    let text = text.trim();
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None if text.is_empty() => "nothing".to_string(),
        None => text.to_string(),
    }
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
    let root = std::env::var("RUNBOOK_AGENT_DIR").unwrap_or_else(|_| DEFAULT_AGENT_ROOT.into());
    let dir = agent_dir(&root, cx.step_id, (&pod.namespace, &pod.name), &settings);
    let binary = agent_path(&root, &local_binary()?)?;
    install_agent(&pod, cx, &binary).await?;
    ensure_rsync(&pod, cx).await?;

    let (ours, collected) = journaled_agents(&notes);
    let found = status_once(&pod, &binary, &dir).await?;
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
        _ => start_agent(action, cx, &pod, &settings, &notes, &binary, &dir).await?,
    };
    watch(action, cx, &pod, &binary, &dir, &agent, &notes).await
}

/// Journals a new agent, then starts it.
async fn start_agent(
    action: &SyncAction,
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    settings: &Settings,
    notes: &[serde_json::Value],
    binary: &str,
    dir: &str,
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
    };
    // Journaled first: whatever happens to this process next, a later run knows the agent
    // in that directory is this step's.
    action.note(cx, &Note::Agent(Box::new(record)))?;
    let request = AgentRequest {
        agent: agent.clone(),
        step: cx.step_id.to_string(),
        settings: settings.clone(),
        notes: notes.to_vec(),
        continued: action
            .after
            .as_deref()
            .map(|step| cx.notes_of(step).to_vec()),
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

/// What the watcher has taken from the agent so far.
struct Watched {
    notes_from: usize,
    said_from: usize,
    journaled: HashSet<String>,
    last: Option<StatusReport>,
    beats: u32,
}

impl Watched {
    /// Takes a whole status: journals the new notes and shows the new lines. Whether it
    /// brought anything new.
    fn take(
        &mut self,
        action: &SyncAction,
        cx: &StepContext<'_>,
        report: StatusReport,
    ) -> anyhow::Result<bool> {
        let Some(state) = &report.state else {
            self.last = Some(report);
            return Ok(false);
        };
        // We asked from our counts; an answer from elsewhere (it should not be) is not taken.
        if report.notes_from != self.notes_from || report.said_from != self.said_from {
            return Ok(false);
        }
        for note in &state.notes {
            if self.journaled.insert(note.key()) {
                action.note(cx, note)?;
            }
        }
        for said in &state.said {
            match said {
                Said::Line(line) => cx.output_line(line),
                Said::Warning(message) => cx.reporter.warn(&format!("[{}] {message}", cx.step_id)),
            }
        }
        let news = !state.notes.is_empty() || !state.said.is_empty();
        self.notes_from += state.notes.len();
        self.said_from += state.said.len();
        self.last = Some(report);
        Ok(news)
    }

    /// Takes a beat of a follow: shows the progress.
    fn beat(&mut self, cx: &StepContext<'_>, beat: &StatusBeat) {
        if let Some(progress) = beat.progress
            && !beat.finished
        {
            cx.progress(Progress {
                done_bytes: progress.done_bytes,
                total_bytes: progress.total_bytes,
                done_files: progress.done_files,
                total_files: progress.total_files,
            });
            self.beats += 1;
            if self.beats.is_multiple_of(5) {
                show_board_lines(cx, &beat.board);
            }
        }
    }
}

/// How a `status --follow` ended.
struct Followed {
    /// Readable beats received.
    beats: usize,
    /// The last beat said there is something to fetch.
    news: bool,
    /// A line that was not a beat, if any.
    unreadable: Option<String>,
    /// What became of the exec.
    ended: Result<i32, ExecError>,
    /// What the command printed on stderr.
    stderr: String,
}

/// Rounds in a row that bring nothing (no beat, no new note or line) before the watcher gives
/// up: with the back-off between them, about a minute.
const STALLED_ROUNDS: u32 = 7;

/// Follows the agent until it ends, then collects its result. Each round fetches what the
/// agent has that we do not (a whole `status`), then follows its beats until it has news.
async fn watch(
    action: &SyncAction,
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    binary: &str,
    dir: &str,
    agent: &str,
    notes: &[serde_json::Value],
) -> anyhow::Result<Outcome> {
    let mut watched = Watched {
        notes_from: 0,
        said_from: 0,
        journaled: journaled_keys(notes),
        last: None,
        beats: 0,
    };
    let mut unreachable = Unreachable::new(pod);
    let mut stalled = Stalled::new(pod);
    // Why the last follow made no progress of its own, for the next fetch to confirm.
    let mut unconfirmed: Option<String> = None;
    loop {
        let brought_news = match fetch_news(pod, binary, dir, &watched).await {
            Ok(output) => {
                unreachable.reset();
                let report = parse_status(pod, &output)?;
                watched.take(action, cx, report)?
            }
            Err(error) if error.is_transient() => {
                unreachable.wait(cx, &error).await?;
                continue;
            }
            Err(error) => return Err(pod.exec_failed(error)),
        };
        // A follow that showed nothing readable, or said there was news that this fetch did
        // not bring, made no progress: wait longer each time, then say why instead of asking
        // again for ever.
        match unconfirmed.take() {
            Some(why) if !brought_news => stalled.wait(&why).await?,
            _ => stalled.reset(),
        }
        if let Some(outcome) = ended(action, cx, pod, dir, agent, &watched).await? {
            return Ok(outcome);
        }

        let Followed {
            beats,
            news,
            unreadable,
            ended,
            stderr,
        } = follow(cx, pod, binary, dir, &mut watched).await;
        match ended {
            Ok(0) => unreachable.reset(),
            Ok(code) => anyhow::bail!(
                "cannot follow the copy in {} (exit {code}): {}",
                pod.describe(),
                stderr.trim()
            ),
            Err(error) if error.is_transient() => {
                if beats > 0 {
                    unreachable.reset();
                } else {
                    unreachable.wait(cx, &error).await?;
                }
                continue;
            }
            Err(error) => return Err(pod.exec_failed(error)),
        }
        unconfirmed = match (&unreadable, beats, news) {
            // Followed until its time was up: the copy goes on, nothing to fetch.
            (_, 1.., false) => None,
            (_, 1.., true) => Some(format!(
                "it says it has news past note {} and line {}, but gives none",
                watched.notes_from, watched.said_from
            )),
            (Some(line), 0, _) => Some(format!("its status was not readable: {}", excerpt(line))),
            (None, 0, _) => Some(format!("its status printed nothing ({})", excerpt(&stderr))),
        };
    }
}

/// A whole `status` with what the watcher does not have yet.
async fn fetch_news(
    pod: &Pod<'_>,
    binary: &str,
    dir: &str,
    watched: &Watched,
) -> Result<ExecOutput, ExecError> {
    let (notes_from, said_from) = (
        watched.notes_from.to_string(),
        watched.said_from.to_string(),
    );
    pod.exec(
        &[
            binary,
            "sync-agent",
            "status",
            "--dir",
            dir,
            "--notes-from",
            &notes_from,
            "--said-from",
            &said_from,
        ],
        None,
    )
    .await
}

/// Follows the agent's beats (`status --follow`) until it has news, its follow time is up or
/// the connection drops, showing its progress.
async fn follow(
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    binary: &str,
    dir: &str,
    watched: &mut Watched,
) -> Followed {
    let (notes_from, said_from, follow) = (
        watched.notes_from.to_string(),
        watched.said_from.to_string(),
        FOLLOW_SECS.to_string(),
    );
    let command = [
        binary,
        "sync-agent",
        "status",
        "--dir",
        dir,
        "--notes-from",
        &notes_from,
        "--said-from",
        &said_from,
        "--follow",
        &follow,
    ];
    let mut followed = Followed {
        beats: 0,
        news: false,
        unreadable: None,
        ended: Ok(0),
        stderr: String::new(),
    };
    let (have_notes, have_said) = (watched.notes_from, watched.said_from);
    followed.ended = pod
        .cluster
        .exec_lines(
            Some(&pod.namespace),
            &pod.name,
            pod.container.as_deref(),
            &command,
            None,
            |stream, line| match stream {
                OutputStream::Stdout => match serde_json::from_str::<StatusBeat>(line) {
                    Ok(beat) => {
                        followed.beats += 1;
                        followed.news = beat.has_news(have_notes, have_said);
                        watched.beat(cx, &beat);
                    }
                    // A line cut by a dropped connection is not JSON: the next round fetches
                    // the state again. One that keeps coming is reported as a stall.
                    Err(_) => followed.unreadable = Some(line.to_string()),
                },
                OutputStream::Stderr => {
                    followed.stderr.push_str(line);
                    followed.stderr.push('\n');
                }
            },
        )
        .await;
    followed
}

/// Whether the agent's last state ends the watch: its result collected, or an error saying
/// why it cannot go on.
async fn ended(
    action: &SyncAction,
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    dir: &str,
    agent: &str,
    watched: &Watched,
) -> anyhow::Result<Option<Outcome>> {
    let Some(last) = &watched.last else {
        return Ok(None);
    };
    let Some(state) = &last.state else {
        anyhow::bail!(
            "the copy's state directory {dir} is gone from {} (was the pod restarted?); run again to start the copy over, finished shards are journaled",
            pod.describe()
        );
    };
    if state.agent != agent {
        anyhow::bail!(
            "another copy (agent {}) took over {dir} in {}",
            state.agent,
            pod.describe()
        );
    }
    if let Some(result) = state.result.clone() {
        return collect(action, cx, pod, agent, result).map(Some);
    }
    if last.alive {
        return Ok(None);
    }
    action.note(
        cx,
        &Note::Collected {
            agent: agent.to_string(),
            ok: false,
        },
    )?;
    let log = pod
        .exec_retrying(&["sh", "-c", "tail -n 20 \"$0/agent.log\" 2>&1", dir], None)
        .await
        .map(|output| output.stdout_text())
        .unwrap_or_default();
    anyhow::bail!(
        "the copy in {} stopped without a result (pid {} is gone){}\nfinished shards are journaled; run again to continue",
        pod.describe(),
        state.pid,
        if log.trim().is_empty() {
            String::new()
        } else {
            format!(
                "; its log ends with:\n  {}",
                log.trim().replace('\n', "\n  ")
            )
        }
    );
}

/// How long the pod has not answered: a back-off between tries, and an error once it has
/// been too long (the copy goes on in the pod).
struct Unreachable<'a> {
    pod: &'a Pod<'a>,
    since: Option<Instant>,
    delay: Duration,
}

impl<'a> Unreachable<'a> {
    fn new(pod: &'a Pod<'a>) -> Self {
        Unreachable {
            pod,
            since: None,
            delay: Duration::from_millis(500),
        }
    }

    fn reset(&mut self) {
        self.since = None;
        self.delay = Duration::from_millis(500);
    }

    /// Waits before the next try, or fails when the pod has not answered for too long.
    async fn wait(&mut self, cx: &StepContext<'_>, error: &ExecError) -> anyhow::Result<()> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() > UNREACHABLE_FOR {
            anyhow::bail!(
                "lost the connection to {} for {} minutes ({error}); the copy goes on there: `runbook run` again re-attaches to it",
                self.pod.describe(),
                UNREACHABLE_FOR.as_secs() / 60
            );
        }
        cx.output_line(&format!(
            "lost the connection to {}; trying again in {:.1}s (the copy goes on there)",
            self.pod.describe(),
            self.delay.as_secs_f64()
        ));
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(15));
        Ok(())
    }
}

/// Rounds of the watch in a row that made no progress: a back-off between them, and an error
/// once there were [`STALLED_ROUNDS`].
struct Stalled<'a> {
    pod: &'a Pod<'a>,
    rounds: u32,
    delay: Duration,
}

impl<'a> Stalled<'a> {
    fn new(pod: &'a Pod<'a>) -> Self {
        Stalled {
            pod,
            rounds: 0,
            delay: Duration::from_millis(500),
        }
    }

    fn reset(&mut self) {
        self.rounds = 0;
        self.delay = Duration::from_millis(500);
    }

    /// Waits before the next round, or fails with `why` once too many made no progress.
    async fn wait(&mut self, why: &str) -> anyhow::Result<()> {
        self.rounds += 1;
        if self.rounds >= STALLED_ROUNDS {
            anyhow::bail!(
                "cannot follow the copy in {}: {why} ({} tries in a row); the copy may go on there: `runbook run` again re-attaches to it",
                self.pod.describe(),
                self.rounds
            );
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(15));
        Ok(())
    }
}

/// The step's result from the agent's.
fn collect(
    action: &SyncAction,
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    agent: &str,
    result: AgentResult,
) -> anyhow::Result<Outcome> {
    let ok = matches!(result, AgentResult::Done { .. });
    action.note(
        cx,
        &Note::Collected {
            agent: agent.to_string(),
            ok,
        },
    )?;
    match result {
        AgentResult::Done { changed, output } => Ok(Outcome::new(changed, output)),
        AgentResult::Failed {
            message,
            invalid: true,
        } => Err(InvalidInput(format!("in {}: {message}", pod.describe())).into()),
        AgentResult::Failed { message, .. } => {
            anyhow::bail!("the copy in {} failed: {message}", pod.describe())
        }
    }
}

/// A copy of a run that goes on without runbook, whose result was not collected yet: an
/// agent in a pod (`on: {pod}`) or an Indexed Job (`on: {job}`). For `runbook status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetachedCopy {
    /// The step.
    pub step: String,
    /// `pod` or `job`.
    pub kind: &'static str,
    /// The namespace of the pod or Job.
    pub namespace: String,
    /// The pod or Job.
    pub name: String,
    /// The agent's id (a Job's is its name).
    pub agent: String,
    /// When runbook started it (RFC 3339).
    pub started: String,
    /// How far the journal is: the last pass, and its shards journaled.
    pub journaled: Option<JournaledPass>,
    /// What the cluster says now; `None` when it was not asked.
    pub live: Option<LiveCopy>,
    /// Where it runs, as journaled: what [`DetachedCopy::ask`] asks.
    #[serde(skip)]
    runs_as: RunsAs,
}

/// The journal's record of where a detached copy runs.
#[derive(Debug, Clone, PartialEq)]
enum RunsAs {
    Pod(Box<AgentRecord>),
    Job(Box<super::pass::JobRecord>),
}

/// The last pass of a step as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JournaledPass {
    /// The pass.
    pub pass: u32,
    /// Its shards journaled as finished.
    pub shards_done: usize,
    /// Its shards.
    pub shards: usize,
}

/// A detached copy as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveCopy {
    /// `running`, `finished`, `failed`, `stopped` (no result and no process), `gone` (the
    /// Job was deleted) or `unreachable`.
    pub state: &'static str,
    /// For people: the progress line, the Job's counts, ...
    pub detail: String,
}

impl DetachedCopy {
    /// Asks the cluster how the copy is now (within 10 s): its agent's status, or its Job.
    pub async fn ask(&mut self, cluster: &Cluster) {
        self.live = Some(match &self.runs_as {
            RunsAs::Pod(record) => pod_copy_now(cluster, record).await,
            RunsAs::Job(record) => job_copy_now(cluster, record).await,
        });
    }

    /// The lines `runbook status` prints.
    pub fn lines(&self) -> Vec<String> {
        let journaled = self
            .journaled
            .map(|pass| {
                format!(
                    "; pass {}: {} of {} shards journaled",
                    pass.pass, pass.shards_done, pass.shards
                )
            })
            .unwrap_or_default();
        let what = match self.kind {
            "job" => format!("copy running as Job {}", self.name),
            _ => format!("copy detached in pod {}", self.name),
        };
        let mut lines = vec![format!(
            "  {}: {what} in namespace {} (agent {}, started {}){journaled}",
            self.step, self.namespace, self.agent, self.started
        )];
        if let Some(live) = &self.live {
            lines.push(format!("    {}", live.detail));
        }
        lines
    }
}

/// The detached copies of a run whose results were not collected, from its journal (steps
/// in order of their ids); [`DetachedCopy::ask`] adds what the cluster says of each.
pub fn detached_copies(
    notes: &std::collections::HashMap<String, Vec<serde_json::Value>>,
) -> Vec<DetachedCopy> {
    let mut copies = Vec::new();
    let mut steps: Vec<_> = notes.iter().collect();
    steps.sort_by(|a, b| a.0.cmp(b.0));
    for (step, notes) in steps {
        let (_, collected) = journaled_agents(notes);
        let ledger = super::pass::Ledger::read(notes);
        let journaled = ledger.last().map(|pass| JournaledPass {
            pass: pass.record.pass,
            shards_done: pass.done_shards.len(),
            shards: pass.record.shards.len(),
        });
        // The step's last agent or Job, if its result was not collected.
        let last = notes
            .iter()
            .filter_map(|note| match serde_json::from_value::<Note>(note.clone()) {
                Ok(note @ (Note::Agent(_) | Note::Job(_))) => Some(note),
                _ => None,
            })
            .next_back();
        let copy = match last {
            Some(Note::Agent(record)) if !collected.contains(&record.agent) => DetachedCopy {
                step: step.clone(),
                kind: "pod",
                namespace: record.namespace.clone(),
                name: record.pod.clone(),
                agent: record.agent.clone(),
                started: record.started.clone(),
                journaled,
                live: None,
                runs_as: RunsAs::Pod(record),
            },
            Some(Note::Job(record)) if !collected.contains(&record.name) => DetachedCopy {
                step: step.clone(),
                kind: "job",
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                agent: record.name.clone(),
                started: record.started.clone(),
                journaled,
                live: None,
                runs_as: RunsAs::Job(record),
            },
            _ => continue,
        };
        copies.push(copy);
    }
    copies
}

/// What the agent of a pod copy says now.
async fn pod_copy_now(cluster: &Cluster, record: &AgentRecord) -> LiveCopy {
    let pod = Pod {
        cluster,
        namespace: record.namespace.clone(),
        name: record.pod.clone(),
        container: record.container.clone(),
    };
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        pod.exec(
            &[
                record.binary.as_str(),
                "sync-agent",
                "status",
                "--dir",
                &record.dir,
            ],
            None,
        ),
    )
    .await;
    let report = match asked {
        Ok(Ok(output)) if output.exit_code == 0 => {
            serde_json::from_str::<StatusReport>(output.stdout_text().trim()).ok()
        }
        _ => None,
    };
    let state = report.as_ref().and_then(|report| {
        report
            .state
            .as_ref()
            .filter(|state| state.agent == record.agent)
            .map(|state| (report.alive, state))
    });
    let (state, detail) = match state {
        None => ("unreachable", "(its pod does not answer now)".to_string()),
        Some((_, state)) if state.result.is_some() => (
            "finished",
            "finished in the pod; `runbook run` again collects it".to_string(),
        ),
        Some((false, _)) => ("stopped", "stopped in the pod without a result".to_string()),
        Some((true, state)) => (
            "running",
            format!(
                "running: {}",
                state
                    .board
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "comparing the trees".to_string())
            ),
        ),
    };
    LiveCopy { state, detail }
}

/// What a Job copy's Job says now.
async fn job_copy_now(cluster: &Cluster, record: &super::pass::JobRecord) -> LiveCopy {
    let Some(jobs) = crate::kube::find_kind("Job") else {
        return LiveCopy {
            state: "unreachable",
            detail: "(the Job kind is not known)".into(),
        };
    };
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.get(jobs, &record.name, Some(&record.namespace)),
    )
    .await;
    let job = match asked {
        Ok(Ok(Some(job))) => job,
        Ok(Ok(None)) => {
            return LiveCopy {
                state: "gone",
                detail: "the Job is gone; `runbook run` again copies the shards not journaled"
                    .into(),
            };
        }
        _ => {
            return LiveCopy {
                state: "unreachable",
                detail: "(the cluster does not answer now)".into(),
            };
        }
    };
    let status = &job["status"];
    let count = |key: &str| status[key].as_u64().unwrap_or(0);
    let completed =
        super::job::parse_indexes(status["completedIndexes"].as_str().unwrap_or_default()).len();
    let counts = format!(
        "{completed} of {} indexes complete, {} pods running, {} failed",
        record.parallelism,
        count("active"),
        count("failed")
    );
    let condition = |kind: &str| crate::kube::has_condition(&job["status"], kind);
    let (state, detail) = if condition("Complete") {
        (
            "finished",
            format!("finished ({counts}); `runbook run` again collects it"),
        )
    } else if condition("Failed") {
        ("failed", format!("failed ({counts})"))
    } else {
        ("running", format!("running: {counts}"))
    };
    LiveCopy { state, detail }
}

#[cfg(test)]
mod tests {
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
