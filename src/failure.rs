//! How a step can go wrong, as the engine tells the cases apart: input found invalid once
//! rendered or read (exit 2, not retried), an action that refused to do something unsafe
//! (exit 3, not retried), or a failure with its cause (exit 1, retried when the step says so).
//! Actions and the layers under them (templates, the Kubernetes client) raise the first two
//! as typed errors inside an `anyhow::Error`; [`StepError::from`] sorts an error into one of
//! the three once, where the engine receives it, so the engine branches on a type.

/// An action that stops itself rather than do something unsafe (more objects match than
/// allowed): the step is refused, exit 3, as for a false guard.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Input that is wrong and that only the run could find, because it is rendered from a
/// template or read from a file or a directory when the step runs: a values file that is not
/// YAML, a sync source that does not exist, a selector that renders malformed. Found before
/// the action changes anything, so the run ends with exit 2 ("invalid input") rather than
/// as a failed step, and it is not retried (the same input fails the same way). The step is
/// journaled as failed, not done: `run` again evaluates it anew once the input is fixed.
///
/// The message names what is wrong: the file (with its line and column, and a snippet,
/// when the problem is inside it), the step key, or the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    /// Invalid input described by a message.
    pub fn new(message: impl Into<String>) -> Self {
        InvalidInput(message.into())
    }

    /// Invalid input inside a file, shown as a diagnostic (position, snippet, `help:`).
    /// The engine says "invalid input: " before it, so without the leading "error: ".
    pub fn from_diagnostic(diagnostic: &crate::Diagnostic) -> Self {
        let text = diagnostic.to_string();
        let text = text.trim_end();
        InvalidInput(text.strip_prefix("error: ").unwrap_or(text).to_string())
    }

    /// The invalid input an error is or was caused by, anywhere in its chain of causes.
    pub fn find(error: &anyhow::Error) -> Option<&InvalidInput> {
        error
            .downcast_ref::<InvalidInput>()
            .or_else(|| error.chain().find_map(|cause| cause.downcast_ref()))
    }
}

/// A step's error, sorted into what the engine does with it.
#[derive(Debug)]
pub enum StepError {
    /// Exit 2; the step is journaled as failed and evaluated anew by the next run.
    Invalid(anyhow::Error),
    /// Exit 3; a refusal stands, so it is not retried.
    Refused(anyhow::Error),
    /// Exit 1, after the step's retries.
    Failed(anyhow::Error),
}

impl StepError {
    /// Whether another try could end differently: a refusal stands, and the same invalid
    /// input fails the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Failed(_))
    }

    /// The error with its chain of causes, whichever case it is.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            StepError::Invalid(error) | StepError::Refused(error) | StepError::Failed(error) => {
                error
            }
        }
    }
}

impl From<anyhow::Error> for StepError {
    fn from(error: anyhow::Error) -> Self {
        if error.downcast_ref::<Refusal>().is_some() {
            StepError::Refused(error)
        } else if InvalidInput::find(&error).is_some() {
            StepError::Invalid(error)
        } else {
            StepError::Failed(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_sorted_by_what_it_is_or_was_caused_by() {
        let refused = anyhow::Error::new(Refusal("3 pods match, at most 1 allowed".into()));
        assert!(matches!(StepError::from(refused), StepError::Refused(_)));
        let invalid = anyhow::Error::new(InvalidInput::new("`retries` renders to `x`"))
            .context("step `wait`");
        let invalid = StepError::from(invalid);
        assert!(matches!(invalid, StepError::Invalid(_)));
        assert!(!invalid.is_retryable());
        let failed = StepError::from(anyhow::anyhow!("connection refused"));
        assert!(matches!(failed, StepError::Failed(_)));
        assert!(failed.is_retryable());
        assert_eq!(failed.error().to_string(), "connection refused");
    }
}
