//! The words every view uses for how far something is: a run, a step, a pass or a shard of a
//! copy, a hub of a fleet. Text, JSON and the fleet's table say the same six words, and each
//! view adds what it knows beside them (why a run stopped, the step's detail, the error).

use serde::Serialize;

/// How far something is, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started yet.
    Pending,
    /// A process works on it now (for a run: or a copy it started goes on in a pod or Job).
    Running,
    /// A run at an approval gate (and the gate's step): `run --approve STEP` goes on.
    Waiting,
    /// Finished: everything it had to do is done (for a step: or there was nothing to do).
    Done,
    /// Something went wrong: a step failed, the input was invalid, the process died. `run`
    /// again tries once more.
    Failed,
    /// Stopped on purpose before the end: Ctrl-C or SIGTERM, a guard that refused, a saved
    /// plan that no longer held. `run` again goes on (after a refusal, once it would pass).
    Stopped,
}

impl State {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Waiting => "waiting",
            State::Done => "done",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_says_the_same_word_as_text() {
        for state in [
            State::Pending,
            State::Running,
            State::Waiting,
            State::Done,
            State::Failed,
            State::Stopped,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.to_string())
            );
        }
    }
}
