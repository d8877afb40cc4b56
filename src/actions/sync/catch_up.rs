//! `repeat:` on a copy detached in a pod: catch-up passes that keep the destination warm
//! while the run waits at its next gate. The agent runs them (see [`super::agent`]); here is
//! what `runbook` does about them:
//!
//! - the step counts as done after its first pass, and a run that comes back to it (at the
//!   gate, days later) journals what the passes did so far and makes sure they go on: an
//!   agent that died (a pod restarted, a `kill -9`) is started again in the same directory,
//!   its first pass being a catch-up;
//! - the step that continues the copy (`after:`) stops them before it starts: it asks the
//!   agent to stop (a pass in flight stops too), waits for it to end, and journals what the
//!   passes did as notes of the repeating step (each pass's plan and shards, so the final
//!   copy copies only what changed since the start of the last finished one, and one
//!   [`Note::CatchUp`] per pass: start, end, how it ended, what it compared and copied);
//! - `runbook run --only STEP` on the repeating step stops its agent the same way and runs
//!   a pass at once, after which the passes go on.

use std::time::{Duration, Instant};

use super::SyncAction;
use super::agent::{AgentState, CatchUpPass};
use super::pass::{AgentRecord, Note, journaled_keys};
use super::pod::{Pod, status_once};
use crate::actions::{InvalidInput, StepContext};
use crate::syntax::{HumanDuration, format_bytes};

/// How long a stopped agent gets to end its pass in flight.
const STOP_WAIT: Duration = Duration::from_secs(600);

impl SyncAction {
    /// `repeat:` rendered: seconds between catch-up passes, or none.
    pub(super) fn repeat_secs(&self, cx: &StepContext<'_>) -> anyhow::Result<Option<u64>> {
        let Some(repeat) = &self.repeat else {
            return Ok(None);
        };
        let every = cx.setting("repeat", repeat)?;
        every
            .check_minimum()
            .map_err(|message| InvalidInput(format!("step `{}`: {message}", cx.step_id)))?;
        Ok(every.0.map(|every| every.as_secs()))
    }
}

/// The last agent a step's notes record, with whether its catch-up passes were stopped.
fn last_agent(notes: &[serde_json::Value]) -> Option<(AgentRecord, bool)> {
    let mut last: Option<(AgentRecord, bool)> = None;
    for note in notes {
        match serde_json::from_value::<Note>(note.clone()) {
            Ok(Note::Agent(record)) => last = Some((*record, false)),
            Ok(Note::CatchUpStopped { agent }) => {
                if let Some((record, stopped)) = &mut last
                    && record.agent == agent
                {
                    *stopped = true;
                }
            }
            _ => {}
        }
    }
    last
}

/// The pod an agent record names.
fn pod_of<'a>(record: &AgentRecord, cx: &'a StepContext<'_>) -> anyhow::Result<Pod<'a>> {
    Ok(Pod {
        cluster: cx.cluster()?,
        namespace: record.namespace.clone(),
        name: record.pod.clone(),
        container: record.container.clone(),
    })
}

/// Before a copy that continues `step` (`after:`) starts: stops the catch-up passes of
/// `step`'s agent, if it repeats, and journals them as `step`'s notes. Returns those notes,
/// which the journal this process read did not have.
pub(super) async fn stop_before_continuing(
    cx: &StepContext<'_>,
    step: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let notes = cx.notes_of(step);
    let Some((record, false)) = last_agent(notes) else {
        return Ok(Vec::new());
    };
    let pod = pod_of(&record, cx)?;
    let report = status_once(&pod, &record.binary, &record.dir).await?;
    let Some(state) = report.state.filter(|state| state.agent == record.agent) else {
        return Ok(Vec::new());
    };
    if state.catch_up.is_none() {
        return Ok(Vec::new());
    }
    let state = stop_agent(cx, &pod, &record, report.alive, step).await?;
    let collected = collect(cx, step, notes, &state)?;
    let stopped = serde_json::to_value(Note::CatchUpStopped {
        agent: record.agent.clone(),
    })?;
    cx.record_note_for(step, stopped.clone())?;
    Ok(collected.into_iter().chain([stopped]).collect())
}

/// Asks a repeating agent to stop, and waits for it to end; its last state.
async fn stop_agent(
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    record: &AgentRecord,
    alive: bool,
    step: &str,
) -> anyhow::Result<AgentState> {
    if alive {
        cx.output_line(&format!(
            "stopping the catch-up passes of `{step}` in {} (agent {})",
            pod.describe(),
            record.agent
        ));
        let asked = pod
            .exec_retrying(
                &[&record.binary, "sync-agent", "stop", "--dir", &record.dir],
                None,
            )
            .await?;
        if asked.exit_code != 0 {
            anyhow::bail!(
                "cannot stop the catch-up passes of `{step}` in {}: {}",
                pod.describe(),
                asked.stderr_text().trim()
            );
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        let report = status_once(pod, &record.binary, &record.dir).await?;
        let state = report
            .state
            .filter(|state| state.agent == record.agent)
            .ok_or_else(|| {
                anyhow::anyhow!("the agent of `{step}` in {} is gone", pod.describe())
            })?;
        if !report.alive {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the catch-up pass of `{step}` in {} did not stop within {} (agent {}, pid {})\nhelp: stop it (`kill {}` in the pod), then run again",
                pod.describe(),
                HumanDuration(STOP_WAIT),
                record.agent,
                state.pid,
                state.pid
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The agent of this step that repeats, stopped (if it still runs) and collected as the
/// step's notes before a new agent starts (`runbook run --only STEP`). Returns the notes.
pub(super) async fn stop_own(
    cx: &StepContext<'_>,
    pod: &Pod<'_>,
    record: &AgentRecord,
    alive: bool,
    notes: &[serde_json::Value],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let state = stop_agent(cx, pod, record, alive, cx.step_id).await?;
    collect(cx, cx.step_id, notes, &state)
}

/// Journals, as notes of `step`, what its agent did that the journal does not have yet:
/// its passes' notes, then one [`Note::CatchUp`] per catch-up pass; says what they did.
fn collect(
    cx: &StepContext<'_>,
    step: &str,
    journaled: &[serde_json::Value],
    state: &AgentState,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut known = journaled_keys(journaled);
    let mut collected = Vec::new();
    // A pass is summed up once it has ended (a pass of a dead agent never does).
    let passes = state
        .catch_up
        .iter()
        .flat_map(|catch_up| catch_up.passes.iter().cloned())
        .filter(|pass| pass.ended.is_some());
    let summaries: Vec<Note> = passes.map(|pass| Note::CatchUp(Box::new(pass))).collect();
    for note in state.notes.iter().chain(&summaries) {
        if known.insert(note.key()) {
            let value = serde_json::to_value(note)?;
            cx.record_note_for(step, value.clone())?;
            collected.push(value);
        }
    }
    for note in &summaries {
        if let Note::CatchUp(pass) = note {
            cx.output_line(&describe(step, pass));
        }
    }
    Ok(collected)
}

/// One catch-up pass for people.
pub fn describe(step: &str, pass: &CatchUpPass) -> String {
    let ended = pass
        .ended
        .as_deref()
        .map_or(String::new(), |ended| format!(" to {ended}"));
    let error = pass
        .error
        .as_deref()
        .map_or(String::new(), |error| format!(": {error}"));
    format!(
        "catch-up pass {} of `{step}` ({}{ended}): {}{error}; {} entries compared, {} copied ({})",
        pass.pass,
        pass.started,
        pass.state,
        pass.entries,
        pass.files,
        format_bytes(pass.bytes)
    )
}

/// For a repeating step that an earlier run did: makes sure its catch-up passes go on. An
/// agent that died (a pod restarted, a `kill -9`) is started again in the same directory,
/// its first pass a catch-up; what the dead one journaled is collected first.
pub(super) async fn keep_going(action: &SyncAction, cx: &StepContext<'_>) -> anyhow::Result<()> {
    let Some(repeat_secs) = action.repeat_secs(cx)? else {
        return Ok(());
    };
    let mut notes = action.notes(cx);
    let Some((record, false)) = last_agent(&notes) else {
        return Ok(());
    };
    let pod = pod_of(&record, cx)?;
    let report = status_once(&pod, &record.binary, &record.dir).await?;
    let state = report.state.filter(|state| state.agent == record.agent);
    if let Some(state) = &state
        && report.alive
    {
        // What the passes did so far goes into the journal now, for `plan` and `status`'s
        // prediction of the window.
        collect(cx, cx.step_id, &notes, state)?;
        let catch_up = state.catch_up.as_ref();
        cx.output_line(&format!(
            "catch-up passes go on in {} (agent {}, {} so far{})",
            pod.describe(),
            record.agent,
            catch_up.map_or(0, |catch_up| catch_up.passes.len()),
            catch_up
                .and_then(|catch_up| catch_up.next.as_deref())
                .map_or(String::new(), |next| format!(", the next at {next}"))
        ));
        return Ok(());
    }
    cx.output_line(&format!(
        "the catch-up passes in {} had stopped (agent {} is gone): starting them again",
        pod.describe(),
        record.agent
    ));
    if let Some(state) = &state {
        notes.extend(collect(cx, cx.step_id, &notes, state)?);
    }
    let settings = action.settings(cx)?;
    let start = super::remote::AgentStart {
        repeat_secs: Some(repeat_secs),
        catch_up_now: true,
    };
    let place = (record.binary.as_str(), record.dir.as_str());
    super::remote::start_agent(action, cx, &pod, &settings, &notes, place, start)
        .await
        .map(|_| ())
}
