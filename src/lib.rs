//! `runbook` runs maintenance procedures written as declarative YAML playbooks: step by step,
//! with idempotent checks, resume after a stop, honest dry-run plans and approval gates.
//!
//! The modules are layers, and each imports only from the layers below it (lowest first):
//! [`diagnostic`], [`values`] and [`failure`] (they know nothing of runbooks); [`syntax`] (how
//! settings are written); [`kube`] (the client); [`render`] (templates, masking); [`actions`]
//! (what a step does); [`playbook`] (load and check); [`engine`] (plan and run, journal,
//! lock); [`report`] (how it is shown); [`fleet`] (a playbook over every hub of a cluster).
//! A test in `layering.rs` keeps it so.

pub mod actions;
pub mod diagnostic;
pub mod engine;
pub mod failure;
pub mod fleet;
pub mod kube;
#[cfg(test)]
mod layering;
pub mod playbook;
pub mod render;
pub mod report;
pub mod sandbox;
pub mod syntax;
pub mod values;

pub use diagnostic::Diagnostic;

/// How a command ended, as the exit code the SPEC defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Every step is done.
    Success,
    /// A step failed; `run` again resumes there.
    StepFailed,
    /// Invalid input; nothing was executed.
    InvalidInput,
    /// A guard refused a step.
    Refused,
    /// Another process holds the run's lock.
    Locked,
    /// Stopped at an approval gate.
    Paused,
    /// `run --plan`: what a step's decision read differs from the saved plan; stopped
    /// before the step.
    PlanChanged,
    /// Interrupted by SIGINT or SIGTERM.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::StepFailed => 1,
            Exit::InvalidInput => 2,
            Exit::Refused => 3,
            Exit::Locked => 4,
            Exit::Paused => 5,
            Exit::PlanChanged => 6,
            Exit::Interrupted => 130,
        }
    }
}

/// Errors that end a command before or outside the step loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: a playbook, a flag, a params file. Exit 2.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// The run's lock is held by another live process. Exit 4.
    #[error("{0}")]
    Locked(String),
    /// Anything else (I/O on the state dir, ...): reported as is.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The exit status this error maps to.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid(_) => Exit::InvalidInput,
            Error::Locked(_) => Exit::Locked,
            Error::Other(_) => Exit::StepFailed,
        }
    }
}

impl From<Diagnostic> for Error {
    fn from(diagnostic: Diagnostic) -> Self {
        Error::Invalid(Box::new(diagnostic))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
