//! `kube.exec`: run a command in a pod's container through the Kubernetes exec API, with the
//! same cluster as every other `kube.*` step (not whatever `kubectl`'s context is).

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::actions::run::command_output;
use crate::actions::{Action, Outcome, Preview, StepContext, render_ok_codes};
use crate::kube::OutputStream;
use crate::syntax::{ExitCode, Templated};

/// Lines of output kept for the journal and for a failure's message.
const TAIL_LINES: usize = 20;

/// `kube.exec: {pod, namespace, container, command: [...], stdin, ok_codes, read_only}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeExec {
    /// The pod.
    pub pod: String,
    /// Its namespace (the context's by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container, needed when the pod has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The argv; each element is rendered on its own, so a value stays one argument.
    pub command: Vec<String>,
    /// Text for the command's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Exit codes that count as success (default `[0]`), 0 to 255; each a number or a
    /// template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_codes: Option<Vec<Templated<ExitCode>>>,
    /// The command only reads (a probe such as `df`): `plan` runs it too, and the step
    /// counts as `ok`, not `changed`. A template is rendered when the step runs; `plan`,
    /// which decides before rendering whether to run a step, runs only a literal `true`.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub read_only: Templated<bool>,
}

impl KubeExec {
    fn rendered(&self, cx: &StepContext<'_>) -> anyhow::Result<Rendered> {
        if self.command.is_empty() {
            bail!("`command` is empty: give the program and its arguments as a list");
        }
        Ok(Rendered {
            pod: cx.render(&self.pod)?,
            namespace: cx.render_optional(self.namespace.as_deref())?,
            container: cx.render_optional(self.container.as_deref())?,
            argv: self
                .command
                .iter()
                .map(|arg| cx.render(arg))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// The command with its templates rendered.
struct Rendered {
    pod: String,
    namespace: Option<String>,
    container: Option<String>,
    argv: Vec<String>,
}

impl Rendered {
    /// One line: a script argument shows its first line and how many follow.
    fn describe(&self, cx: &StepContext<'_>) -> String {
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|arg| {
                let mut lines = arg.trim().lines();
                let first = lines.next().unwrap_or_default();
                match lines.count() {
                    0 => crate::render::quote_for_shell(arg),
                    more => format!("{} …(+{more} lines)", crate::render::quote_for_shell(first)),
                }
            })
            .collect();
        let mut text = format!("`{}` in pod {}", argv.join(" "), self.pod);
        if let Some(container) = &self.container {
            text.push_str(&format!(" (container {container})"));
        }
        if let Some(namespace) = &self.namespace {
            text.push_str(&format!(" in namespace {namespace}"));
        }
        cx.renderer.masker().mask(&text)
    }
}

#[async_trait::async_trait]
impl Action for KubeExec {
    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let rendered = self.rendered(cx)?;
        let mut summary = format!("run {}", rendered.describe(cx));
        let mut notes = render_ok_codes(self.ok_codes.as_deref(), cx)?.1;
        let read_only = cx.setting("read_only", &self.read_only)?;
        if let Some(note) = self.read_only.rendered_note("read_only", &read_only) {
            notes.push(format!(
                "{note}; a plan runs only a literal `read_only: true`"
            ));
        }
        if !notes.is_empty() {
            summary.push_str(&format!(" ({})", notes.join(", ")));
        }
        Ok(Preview {
            summary,
            diff: None,
        })
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let read_only = cx.setting("read_only", &self.read_only)?;
        let (ok_codes, _) = render_ok_codes(self.ok_codes.as_deref(), cx)?;
        let rendered = self.rendered(cx)?;
        let stdin = self
            .stdin
            .as_deref()
            .map(|text| cx.render(text))
            .transpose()?
            .map(bytes::Bytes::from);
        let (stdout, stderr) = (Mutex::new(String::new()), Mutex::new(String::new()));
        let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
        let rc = cx
            .cluster()?
            .exec_lines(
                rendered.namespace.as_deref(),
                &rendered.pod,
                rendered.container.as_deref(),
                &rendered.argv,
                stdin,
                |stream, line| {
                    let line = cx.renderer.masker().mask(line);
                    cx.output_line(&line);
                    let buffer = match stream {
                        OutputStream::Stdout => &stdout,
                        OutputStream::Stderr => &stderr,
                    };
                    if let Ok(mut buffer) = buffer.lock() {
                        buffer.push_str(&line);
                        buffer.push('\n');
                    }
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                },
            )
            .await
            .map_err(|error| anyhow::anyhow!("{}: {error}", rendered.describe(cx)))?;
        let tail: Vec<String> = tail.into_inner().unwrap_or_default().into();
        if !u8::try_from(rc).is_ok_and(|rc| ok_codes.contains(&rc)) {
            let mut message = format!("{} exited with code {rc}", rendered.describe(cx));
            if !tail.is_empty() {
                message.push_str("; last lines:\n");
                message.push_str(&tail.join("\n"));
            }
            bail!(message);
        }
        Ok(Outcome {
            changed: !read_only,
            output: command_output(
                rc,
                &stdout.into_inner().unwrap_or_default(),
                &stderr.into_inner().unwrap_or_default(),
            ),
            tail,
        })
    }

    fn is_read_only(&self) -> bool {
        self.read_only == Templated::Literal(true)
    }
}
