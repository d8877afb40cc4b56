//! `run`: a command, as an argv list or (with `shell: true`) a script.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{
    Action, Check, Outcome, Preview, RenderedCommand, StepContext, render_ok_codes, run_process,
};
use crate::syntax::{CommandLine, CommandSpec, HumanDuration};

/// `run: [program, args...]` or `run: {command: ..., shell, cwd, env, timeout, ok_codes, creates}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunAction(pub CommandSpec);

#[async_trait::async_trait]
impl Action for RunAction {
    async fn check(&self, cx: &StepContext<'_>) -> anyhow::Result<Check> {
        if let Some(creates) = &self.0.creates {
            let path = cx.render(creates)?;
            if std::path::Path::new(&path).exists() {
                return Ok(Check::Done(format!("{path} exists")));
            }
        }
        Ok(Check::Pending)
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let command = RenderedCommand::render(&self.0, cx)?;
        let shown = if matches!(self.0.command, CommandLine::Script(_)) {
            // A plan line stays one line: the script's first line and how many follow.
            let script = command
                .argv
                .last()
                .map(String::as_str)
                .unwrap_or_default()
                .trim();
            let mut lines = script.lines();
            let first = lines.next().unwrap_or_default().to_string();
            match lines.count() {
                0 => first,
                more => format!("{first} …(+{more} lines)"),
            }
        } else {
            command.display()
        };
        let mut summary = format!("run `{}`", cx.renderer.masker().mask(&shown));
        let mut notes = Vec::new();
        notes.extend(
            self.0
                .shell
                .rendered_note("shell", &cx.setting("shell", &self.0.shell)?),
        );
        if let (Some(timeout), Some(limit)) = (&self.0.timeout, command.timeout) {
            notes.extend(timeout.rendered_note("timeout", &HumanDuration(limit)));
        }
        notes.extend(render_ok_codes(self.0.ok_codes.as_deref(), cx)?.1);
        if !notes.is_empty() {
            summary.push_str(&format!(" ({})", notes.join(", ")));
        }
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let command = RenderedCommand::render(&self.0, cx)?;
        let (ok_codes, _) = render_ok_codes(self.0.ok_codes.as_deref(), cx)?;
        let result = run_process(&command, cx, true).await?;
        // An exit status is 0..=255; the loader refuses any other `ok_codes`.
        let succeeded = u8::try_from(result.rc).is_ok_and(|rc| ok_codes.contains(&rc));
        if result.timed_out {
            bail!(
                "`{}` timed out after {}; its process group was killed",
                command.display(),
                HumanDuration(command.timeout.unwrap_or_default())
            );
        }
        if !succeeded {
            let mut message = format!("`{}` exited with code {}", command.display(), result.rc);
            if !result.tail.is_empty() {
                message.push_str("; last lines:\n");
                message.push_str(&result.tail.join("\n"));
            }
            bail!(message);
        }
        Ok(Outcome {
            changed: true,
            output: command_output(result.rc, &result.stdout, &result.stderr),
            tail: result.tail,
        })
    }
}

/// What a command step registers: `rc`, `stdout` and `stderr` (without their last newline),
/// and `json` when stdout parses as JSON.
pub(crate) fn command_output(rc: i32, stdout: &str, stderr: &str) -> serde_json::Value {
    let stdout = stdout.strip_suffix('\n').unwrap_or(stdout);
    let mut output = serde_json::json!({
        "rc": rc,
        "stdout": stdout,
        "stderr": stderr.strip_suffix('\n').unwrap_or(stderr),
    });
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(stdout) {
        output["json"] = json;
    }
    output
}
