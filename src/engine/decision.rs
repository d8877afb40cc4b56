//! The one place that decides, for plans and runs alike, whether a step runs, is skipped,
//! cannot be known yet, or is refused by its guard.

use std::time::Duration;

use crate::actions::{Check, RenderedCommand, StepContext, run_process};
use crate::playbook::{CheckSpec, Playbook, Step};

/// What will happen to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDecision {
    /// The action will run.
    Run,
    /// Nothing to do. `done` when a check said so (journaled as done); not when `when` is false.
    Skip {
        /// Why.
        reason: String,
        /// The step counts as done.
        done: bool,
    },
    /// Cannot be evaluated before an earlier step has run.
    Unknown {
        /// Which step and value it waits for.
        reason: String,
    },
    /// The guard is false.
    Refused {
        /// The guard.
        reason: String,
        /// The step's `require` refused it (evaluated again as `retries` says), rather than
        /// the action's own guard (evaluated once).
        by_require: bool,
    },
}

/// How to treat a false guard.
#[derive(Debug, Clone, Copy)]
pub enum GuardPolicy {
    /// Evaluate once (plans).
    Once,
    /// Evaluate again after `delay`, up to `retries` more times (runs).
    Retry {
        /// More evaluations after the first.
        retries: u32,
        /// Wait between evaluations.
        delay: Duration,
    },
}

/// Wait between tries when a step sets `retries` but no `delay`.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

/// How often and how long a step is tried: its `retries`, `delay` and `timeout`, rendered
/// when they are templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    /// More tries after the first (of the action, or of the guard).
    pub retries: u32,
    /// Wait between tries.
    pub delay: Duration,
    /// Limit of one try of the action.
    pub timeout: Option<Duration>,
}

impl Default for Tries {
    /// One try, no limit: a step without `retries`, `delay` or `timeout`.
    fn default() -> Self {
        Tries {
            retries: 0,
            delay: DEFAULT_DELAY,
            timeout: None,
        }
    }
}

impl Tries {
    /// The step's settings as they apply now. A template that renders to something that is
    /// not a count or a duration is invalid input that names the step and the key.
    pub fn of(step: &Step, cx: &StepContext<'_>) -> anyhow::Result<Self> {
        Ok(Tries {
            retries: cx
                .optional_setting("retries", step.spec.retries.as_ref())?
                .unwrap_or(0),
            delay: cx
                .optional_setting("delay", step.spec.delay.as_ref())?
                .map_or(DEFAULT_DELAY, |delay| delay.0),
            timeout: cx
                .optional_setting("timeout", step.spec.timeout.as_ref())?
                .map(|timeout| timeout.0),
        })
    }

    /// The guard policy of a run: evaluate again after `delay`, up to `retries` times.
    pub fn guard_policy(self) -> GuardPolicy {
        GuardPolicy::Retry {
            retries: self.retries,
            delay: self.delay,
        }
    }
}

/// The first variable the step uses that an earlier step registers but has not produced yet,
/// with that step's id.
pub fn missing_dependency<'a>(
    step: &Step,
    playbook: &'a Playbook,
    available: &crate::render::Vars,
) -> Option<(String, &'a str)> {
    step.references.iter().find_map(|name| {
        if available.contains_key(name) {
            return None;
        }
        // Each included playbook has names of its own.
        playbook
            .steps
            .iter()
            .filter(|producer| producer.scope == step.scope)
            .find(|producer| producer.register() == Some(name.as_str()))
            .map(|producer| (name.clone(), producer.id()))
    })
}

/// Decides what happens to `step`. Read-only: evaluates `when`, `check` (an expression or a
/// read-only command), the action's own check and the guard, never the action itself.
pub async fn decide(
    step: &Step,
    playbook: &Playbook,
    cx: &StepContext<'_>,
    guard: GuardPolicy,
    echo_checks: bool,
) -> anyhow::Result<StepDecision> {
    if let Some((name, producer)) = missing_dependency(step, playbook, cx.vars) {
        return Ok(StepDecision::Unknown {
            reason: format!("depends on step `{producer}` (uses `{name}`, which it registers)"),
        });
    }
    if let Some(when) = &step.spec.when
        && !cx.is_true(when)?
    {
        return Ok(StepDecision::Skip {
            reason: format!("`when` is false: {}", when.as_str()),
            done: false,
        });
    }
    match &step.spec.check {
        Some(CheckSpec::Expression(check)) if cx.is_true(check)? => {
            return Ok(StepDecision::Skip {
                reason: format!("check is true: {}", check.as_str()),
                done: true,
            });
        }
        Some(CheckSpec::Command { run }) => {
            let command = RenderedCommand::render(run, cx)?;
            let result = run_process(&command, cx, echo_checks).await?;
            if result.rc == 0 {
                return Ok(StepDecision::Skip {
                    reason: format!(
                        "check `{}` exited 0",
                        cx.renderer.masker().mask(&command.display())
                    ),
                    done: true,
                });
            }
        }
        _ => {}
    }
    if let Check::Done(reason) = step.action().check(cx).await? {
        return Ok(StepDecision::Skip { reason, done: true });
    }
    if let Some(require) = &step.spec.require {
        let condition = &require.value;
        let (retries, delay) = match guard {
            GuardPolicy::Once => (0, Duration::ZERO),
            GuardPolicy::Retry { retries, delay } => (retries, delay),
        };
        let mut attempt = 0;
        while !cx.is_true(condition)? {
            if attempt == retries {
                let tried = if retries > 0 {
                    format!(" after {} tries", retries + 1)
                } else {
                    String::new()
                };
                return Ok(StepDecision::Refused {
                    reason: format!("guard is false{tried}: {}", condition.as_str()),
                    by_require: true,
                });
            }
            attempt += 1;
            cx.reporter.notice(&format!(
                "[{}] guard is false: {}; evaluating again in {} ({attempt}/{retries})",
                step.id(),
                condition.as_str(),
                crate::playbook::HumanDuration(delay)
            ));
            tokio::time::sleep(delay).await;
        }
    }
    if let Some(reason) = step.action().guard(cx).await? {
        return Ok(StepDecision::Refused {
            reason,
            by_require: false,
        });
    }
    Ok(StepDecision::Run)
}
