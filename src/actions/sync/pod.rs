//! The pod a detached copy runs in, and reading its agent's state through exec.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;

use super::agent::StatusReport;
use crate::kube::{Cluster, ExecError, ExecOutput};

/// Tries of one exec whose connection drops before it ends.
pub(super) const EXEC_TRIES: u32 = 8;

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
    pub(super) fn describe(&self) -> String {
        match &self.container {
            Some(container) => format!(
                "pod {} (container {container}) in namespace {}",
                self.name, self.namespace
            ),
            None => format!("pod {} in namespace {}", self.name, self.namespace),
        }
    }

    pub(super) async fn exec<S: AsRef<str>>(
        &self,
        command: &[S],
        stdin: Option<Bytes>,
    ) -> Result<ExecOutput, ExecError> {
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

    pub(super) fn exec_failed(&self, error: ExecError) -> anyhow::Error {
        match error {
            ExecError::Request(_) => anyhow::Error::new(error).context(format!(
                "cannot run the copy in {}: is the pod running?",
                self.describe()
            )),
            other => other.into(),
        }
    }
}

/// One `status` of the agent, without following it.
pub(super) async fn status_once(
    pod: &Pod<'_>,
    binary: &str,
    dir: &str,
) -> anyhow::Result<StatusReport> {
    let output = pod
        .exec_retrying(&[binary, "sync-agent", "status", "--dir", dir], None)
        .await?;
    parse_status(pod, &output)
}

/// The agent's [`StatusReport`] in the whole output of a `status` (never cut into lines: it
/// holds the notes, whose size grows with the pass).
pub(super) fn parse_status(pod: &Pod<'_>, output: &ExecOutput) -> anyhow::Result<StatusReport> {
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
pub(super) fn excerpt(text: &str) -> String {
    const SHOWN: usize = 200;
    let text = text.trim();
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None if text.is_empty() => "nothing".to_string(),
        None => text.to_string(),
    }
}
