//! Running a command as a child process in its own process group: output streamed line by
//! line, a timeout that kills the whole group, and no orphan left when the step is dropped
//! (Ctrl-C, a step timeout).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use indexmap::IndexMap;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{InvalidInput, StepContext};
use crate::syntax::{CommandLine, CommandSpec, ExitCode, Templated};

/// Output kept for `register` and the journal.
const MAX_CAPTURE_BYTES: usize = 1 << 20;
/// Lines kept for error messages.
const TAIL_LINES: usize = 20;

/// A command with its templates rendered, ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedCommand {
    /// Program and arguments (`sh -c SCRIPT` for shell commands).
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Environment added to runbook's own.
    pub env: IndexMap<String, String>,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
}

impl RenderedCommand {
    /// Renders a [`CommandSpec`]: each argv element on its own, so a value with spaces stays
    /// one argument. The step's `env` comes first; the command's own `env` wins.
    pub fn render(spec: &CommandSpec, cx: &StepContext<'_>) -> anyhow::Result<Self> {
        let shell = cx.setting("shell", &spec.shell)?;
        if let (Some(template), Err(problem)) = (spec.shell.template(), spec.check_shell(shell)) {
            return Err(InvalidInput::new(format!(
                "step `{}`: `shell: {template}` renders to `{shell}`: {problem}",
                cx.step_id
            ))
            .into());
        }
        let timeout = cx.optional_setting("timeout", spec.timeout.as_ref())?;
        let argv = match &spec.command {
            CommandLine::Argv(argv) => argv
                .iter()
                .map(|arg| cx.render(arg))
                .collect::<anyhow::Result<Vec<_>>>()?,
            CommandLine::Script(script) => vec!["sh".into(), "-c".into(), cx.render(script)?],
        };
        let mut env = cx.env.clone();
        for (name, value) in &spec.env {
            env.insert(name.clone(), cx.render(value)?);
        }
        Ok(RenderedCommand {
            argv,
            cwd: spec
                .cwd
                .as_deref()
                .map(|cwd| cx.render(cwd))
                .transpose()?
                .map(PathBuf::from),
            env,
            timeout: timeout.map(|timeout| timeout.0),
        })
    }

    /// The command as a person would type it (for plans and logs).
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|arg| {
                if !arg.is_empty()
                    && arg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
                {
                    arg.clone()
                } else {
                    format!("'{}'", arg.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `ok_codes` rendered (`[0]` when absent), before the command runs: a template that renders
/// to no exit code is invalid input, and the command must not have run then. With what a
/// plan says of the templated ones (`` `ok_codes: {{ code }}` is 1``).
pub fn render_ok_codes(
    codes: Option<&[Templated<ExitCode>]>,
    cx: &StepContext<'_>,
) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let Some(codes) = codes else {
        return Ok((vec![0], Vec::new()));
    };
    let mut rendered = Vec::new();
    let mut notes = Vec::new();
    for code in codes {
        let value = cx.setting("ok_codes", code)?;
        notes.extend(code.rendered_note("ok_codes", &value));
        rendered.push(value.0);
    }
    Ok((rendered, notes))
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Exit code; 128+N when killed by signal N.
    pub rc: i32,
    /// Standard output (the first MiB).
    pub stdout: String,
    /// Standard error (the first MiB).
    pub stderr: String,
    /// The last lines of both streams, in order.
    pub tail: Vec<String>,
    /// Killed because it ran past its timeout.
    pub timed_out: bool,
}

/// Kills the child's process group unless the child was reaped: dropping a running step
/// (Ctrl-C, a step timeout) must not leave its processes behind.
struct ProcessGroup {
    pgid: Option<i32>,
}

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; a stale pgid at worst hits nothing.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion, streaming its lines through `cx` when `echo` is set.
pub async fn run_process(
    command: &RenderedCommand,
    cx: &StepContext<'_>,
    echo: bool,
) -> anyhow::Result<ProcessOutput> {
    let (program, args) = command.argv.split_first().context("the command is empty")?;
    let mut child_command = Command::new(program);
    child_command
        .args(args)
        .envs(&command.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &command.cwd {
        child_command.current_dir(cwd);
    }
    // SAFETY: prctl is async-signal-safe; it makes the child die with runbook (kill -9).
    unsafe {
        child_command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = child_command.spawn().with_context(|| {
        let place = command
            .cwd
            .as_ref()
            .map(|cwd| format!(" in {}", cwd.display()))
            .unwrap_or_default();
        format!("cannot start `{program}`{place}")
    })?;
    let mut group = ProcessGroup {
        pgid: child.id().map(|pid| pid as i32),
    };
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let tail = std::sync::Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let read_both = async {
        tokio::join!(
            read_lines(stdout, cx, echo, &tail),
            read_lines(stderr, cx, echo, &tail)
        )
    };
    let waited = async {
        let (stdout, stderr) = read_both.await;
        let status = child.wait().await;
        (stdout, stderr, status)
    };
    let (result, timed_out) = match command.timeout {
        Some(limit) => match tokio::time::timeout(limit, waited).await {
            Ok(result) => (Some(result), false),
            Err(_) => (None, true),
        },
        None => (Some(waited.await), false),
    };
    let Some((stdout, stderr, status)) = result else {
        group.kill();
        let tail = tail.into_inner().unwrap_or_default().into_iter().collect();
        return Ok(ProcessOutput {
            rc: 128 + libc::SIGKILL,
            stdout: String::new(),
            stderr: String::new(),
            tail,
            timed_out,
        });
    };
    // The group leader is reaped; members it left behind are killed with the group.
    group.kill();
    let status = status.context("waiting for the command")?;
    let rc = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    Ok(ProcessOutput {
        rc,
        stdout: stdout?,
        stderr: stderr?,
        tail: tail.into_inner().unwrap_or_default().into_iter().collect(),
        timed_out,
    })
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    cx: &StepContext<'_>,
    echo: bool,
    tail: &std::sync::Mutex<VecDeque<String>>,
) -> anyhow::Result<String> {
    let mut reader = BufReader::new(stream);
    let mut captured = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if captured.len() < MAX_CAPTURE_BYTES {
            captured.extend_from_slice(&line);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if echo {
            cx.output_line(text);
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.to_string());
        }
    }
    Ok(String::from_utf8_lossy(&captured).into_owned())
}
