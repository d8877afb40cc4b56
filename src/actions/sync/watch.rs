//! Following a detached copy's agent in its pod until it ends, then collecting its result:
//! see [`watch`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::SyncAction;
use super::agent::{AgentResult, Said, StatusBeat, StatusReport};
use super::pass::{Note, journaled_keys};
use super::pass_reporter::show_board;
use super::pod::{Pod, excerpt, parse_status};
use crate::actions::Progress;
use crate::actions::{InvalidInput, Outcome, StepContext};
use crate::kube::{ExecError, ExecOutput, OutputStream};

/// How long one `status --follow` exec lasts before it is opened again.
const FOLLOW_SECS: u64 = 60;
/// How long `runbook` keeps trying to reach the pod before it gives up watching (the copy
/// goes on in the pod; `run` again re-attaches).
const UNREACHABLE_FOR: Duration = Duration::from_secs(600);
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
            let progress = Progress {
                done_bytes: progress.done_bytes,
                total_bytes: progress.total_bytes,
                done_files: progress.done_files,
                total_files: progress.total_files,
                workers: progress.workers,
            };
            cx.progress(progress);
            self.beats += 1;
            let detail = progress
                .workers
                .map(|count| format!("{count} worker{}", if count == 1 { "" } else { "s" }))
                .unwrap_or_default();
            show_board(
                cx,
                progress,
                (&detail, &[]),
                &beat.board,
                self.beats.is_multiple_of(5),
            );
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
pub(super) async fn watch(
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
    let command = status_command(binary, dir, watched, None);
    pod.exec(&command, None).await
}

/// The agent's `status` command from what the watcher has, following for `follow` seconds
/// when given.
fn status_command(binary: &str, dir: &str, watched: &Watched, follow: Option<u64>) -> Vec<String> {
    let mut command: Vec<String> = [binary, "sync-agent", "status", "--dir", dir]
        .map(str::to_string)
        .into();
    command.extend([
        "--notes-from".to_string(),
        watched.notes_from.to_string(),
        "--said-from".to_string(),
        watched.said_from.to_string(),
    ]);
    if let Some(seconds) = follow {
        command.extend(["--follow".to_string(), seconds.to_string()]);
    }
    command
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
    let command = status_command(binary, dir, watched, Some(FOLLOW_SECS));
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
