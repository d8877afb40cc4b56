//! `runbook fleet run`: every hub its own run of the playbook, in this process, `concurrency`
//! at a time in cluster.yaml's order, all sharing one cluster client.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::engine::event::RunOutput;
use crate::engine::{self, RunOptions, StateDir};
use crate::kube::Cluster;
use crate::playbook::{Bound, Playbook};
use crate::{Error, Exit};

use super::namespace_mark::NamespaceMark;

/// A hub with its params bound, ready to run.
#[derive(Debug, Clone)]
pub struct BoundHub {
    /// The hub.
    pub name: String,
    /// Its params and vars.
    pub bound: Arc<Bound>,
}

/// The flags of `fleet run`.
#[derive(Debug, Clone)]
pub struct FleetRunOptions {
    /// How many hubs run at a time (at least 1).
    pub concurrency: usize,
    /// Stop starting hubs once this many failed.
    pub max_failures: Option<usize>,
    /// What every hub's run is given (gates approved, state in the cluster).
    pub run: RunOptions,
}

/// How one hub's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubOutcome {
    /// It ran, and ended with this exit.
    Ran(Exit),
    /// It could not start or stopped with an error (its lock held, its input invalid).
    Error(Exit, String),
    /// The fleet stopped before its turn.
    NotStarted,
}

impl HubOutcome {
    /// The exit this hub adds to the fleet's; `None` for a hub never started.
    pub fn exit(&self) -> Option<Exit> {
        match self {
            HubOutcome::Ran(exit) | HubOutcome::Error(exit, _) => Some(*exit),
            HubOutcome::NotStarted => None,
        }
    }

    /// Whether it counts towards `--max-failures`: a step failed or its input was invalid.
    /// A refusal (users that never leave) is an answer, not a failure.
    fn failed(&self) -> bool {
        matches!(self.exit(), Some(Exit::StepFailed | Exit::InvalidInput))
    }
}

/// How a fleet run ended: each hub's outcome in cluster.yaml's order, and whether a signal
/// stopped it.
#[derive(Debug)]
pub struct FleetOutcome {
    /// Each hub and how its run ended.
    pub hubs: Vec<(String, HubOutcome)>,
    /// SIGINT or SIGTERM stopped the fleet.
    pub interrupted: bool,
    /// `--max-failures` stopped it from starting more hubs.
    pub stopped_after_failures: bool,
}

impl FleetOutcome {
    /// The fleet's exit: 130 when a signal stopped it; else 0 when every hub is done, and
    /// otherwise the most serious of its hubs' exits, in this order: 1 (a step failed), 2
    /// (invalid input), 3 (refused), 4 (locked by another run), 5 (at a gate), 130 (a hub
    /// stopped by the fleet); a hub never started makes it 1 at least (it only happens
    /// after failures).
    pub fn exit(&self) -> Exit {
        if self.interrupted {
            return Exit::Interrupted;
        }
        let severity = [
            Exit::StepFailed,
            Exit::InvalidInput,
            Exit::Refused,
            Exit::Locked,
            Exit::Paused,
            Exit::Interrupted,
        ];
        let mut exits: Vec<Exit> = self
            .hubs
            .iter()
            .map(|(_, outcome)| outcome.exit().unwrap_or(Exit::StepFailed))
            .collect();
        exits.retain(|exit| *exit != Exit::Success);
        severity
            .into_iter()
            .find(|serious| exits.contains(serious))
            .unwrap_or(Exit::Success)
    }
}

/// Runs `hubs` in order, `concurrency` at a time, each with the reporter `reporter_of`
/// gives it. On SIGINT or SIGTERM every hub's run stops at a consistent point (each run
/// handles the signal itself) and no hub is started; after `max_failures` failures the
/// running hubs stop before their next step and no hub is started.
pub async fn run_hubs(
    playbook: Arc<Playbook>,
    hubs: Vec<BoundHub>,
    state: &StateDir,
    options: &FleetRunOptions,
    reporter_of: &dyn Fn(&str) -> Arc<dyn RunOutput>,
    cluster: Option<&Cluster>,
) -> anyhow::Result<FleetOutcome> {
    // Listening from the start: the first listener replaces the default action of the
    // signal, so a Ctrl-C between two hubs' runs stops the fleet rather than nothing.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let order: Vec<String> = hubs.iter().map(|hub| hub.name.clone()).collect();
    let mut pending: VecDeque<BoundHub> = hubs.into();
    let mut running: JoinSet<(String, HubOutcome)> = JoinSet::new();
    let mut ended: Vec<(String, HubOutcome)> = Vec::new();
    let halt = options.run.halt.clone();
    let mut interrupted = false;
    let mut failures = 0;
    let limit_reached =
        |failures: usize| options.max_failures.is_some_and(|limit| failures >= limit);
    loop {
        while running.len() < options.concurrency.max(1)
            && !halt.is_halted()
            && let Some(hub) = pending.pop_front()
        {
            let reporter = reporter_of(&hub.name);
            let playbook = playbook.clone();
            let state = state.clone();
            let run_options = options.run.clone();
            let cluster = cluster.cloned();
            running.spawn(async move {
                // The hub's namespace shows the run's phase while it goes on.
                let mark = cluster.as_ref().map(|cluster| {
                    NamespaceMark::new(reporter.clone(), cluster.clone(), &hub.name, &playbook.name)
                });
                let output: Arc<dyn RunOutput> = match &mark {
                    Some(mark) => mark.clone(),
                    None => reporter,
                };
                let outcome = run_hub(
                    playbook,
                    &hub.bound,
                    &state,
                    &run_options,
                    output,
                    cluster.as_ref(),
                )
                .await;
                if let Some(mark) = mark {
                    mark.finish().await;
                }
                (hub.name, outcome)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (hub, outcome) = joined?;
                if outcome.failed() {
                    failures += 1;
                    if limit_reached(failures) {
                        halt.halt();
                    }
                }
                ended.push((hub, outcome));
            }
            _ = interrupt.recv() => {
                interrupted = true;
                halt.halt();
            }
            _ = terminate.recv() => {
                interrupted = true;
                halt.halt();
            }
        }
    }
    let hubs = order
        .into_iter()
        .map(|hub| {
            let outcome = ended
                .iter()
                .find(|(name, _)| *name == hub)
                .map_or(HubOutcome::NotStarted, |(_, outcome)| outcome.clone());
            (hub, outcome)
        })
        .collect();
    Ok(FleetOutcome {
        hubs,
        interrupted,
        stopped_after_failures: limit_reached(failures),
    })
}

/// One hub's run; an error that ends it (its lock held, a changed step) is told through
/// its reporter.
async fn run_hub(
    playbook: Arc<Playbook>,
    bound: &Bound,
    state: &StateDir,
    options: &RunOptions,
    reporter: Arc<dyn RunOutput>,
    cluster: Option<&Cluster>,
) -> HubOutcome {
    match engine::run(playbook, bound, state, options, reporter.clone(), cluster).await {
        Ok(result) => HubOutcome::Ran(result.exit),
        Err(error) => {
            let text = match &error {
                Error::Invalid(diagnostic) => diagnostic.to_string(),
                Error::Locked(message) => format!("error: {message}"),
                Error::Other(cause) => format!("error: {cause:#}"),
            };
            reporter.notice(text.trim_end());
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            HubOutcome::Error(error.exit(), first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(exits: &[Option<Exit>], interrupted: bool) -> FleetOutcome {
        FleetOutcome {
            hubs: exits
                .iter()
                .enumerate()
                .map(|(index, exit)| {
                    let outcome = match exit {
                        Some(exit) => HubOutcome::Ran(*exit),
                        None => HubOutcome::NotStarted,
                    };
                    (format!("hub{index}"), outcome)
                })
                .collect(),
            interrupted,
            stopped_after_failures: false,
        }
    }

    #[test]
    fn the_fleets_exit_is_its_most_serious_hubs() {
        use Exit::*;
        assert_eq!(
            outcome(&[Some(Success), Some(Success)], false).exit(),
            Success
        );
        assert_eq!(
            outcome(&[Some(Success), Some(Paused)], false).exit(),
            Paused
        );
        assert_eq!(
            outcome(&[Some(Paused), Some(Refused), Some(Success)], false).exit(),
            Refused
        );
        assert_eq!(
            outcome(&[Some(Locked), Some(StepFailed), Some(Refused)], false).exit(),
            StepFailed
        );
        assert_eq!(outcome(&[Some(StepFailed), None], false).exit(), StepFailed);
        assert_eq!(
            outcome(&[Some(Paused), Some(Success)], true).exit(),
            Interrupted
        );
    }
}
