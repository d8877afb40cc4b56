//! The forms a step's settings are written in, shared by the actions that read them and the
//! playbook loader that checks them: durations (`90s`, `1h30m`), commands (a string or an
//! argument list, with their environment and timeout), conditions (`that:` expressions or a
//! command's exit code) and settings that may be a literal or a template
//! ([`Templated`]). This layer knows nothing of actions, playbooks or runs; it sits just above
//! [`crate::diagnostic`] (see the layering in the README's Development section).

mod command;
mod condition;
mod duration;
mod templated;
mod units;

pub use command::{CommandLine, CommandSpec};
pub use condition::{CheckSpec, Condition};
pub use duration::HumanDuration;
pub use templated::{Count, ExitCode, Setting, Templated};
pub use units::{format_bytes, format_duration_ms};

/// Does `text` contain template syntax? Plain strings are used as they are.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}
