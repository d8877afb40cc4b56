//! The local process an exec runs (the sandbox has no containers): started in its own
//! process group, in the pod's directory, with pipes for the streams the client asked for.
//! The [`kubelet`](super::kubelet) starts a Job pod's container command the same way, with
//! its output going to a pipe that a [`ContainerLog`](super::container_log::ContainerLog)
//! copies into the log, with the time of each line ([`PodProcess::spawn_logged`]).
//!
//! When the exec connection is lost while the command runs, the process group gets SIGHUP,
//! as a terminal's hang-up delivers it, and the command itself gets SIGKILL if it is still
//! there [`HANG_UP_GRACE`] later. Children the command detached survive: `setsid` moved
//! them to a group of their own, `nohup` made them ignore SIGHUP. Their output pipes are
//! still read (and the output discarded) after the exec ends, so that writing to them never
//! kills them with SIGPIPE.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};

use super::exec::{ExecOptions, ExecTarget};

/// How long the command of a lost exec has, after SIGHUP, before SIGKILL.
pub const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// A started exec command.
#[derive(Debug)]
pub struct PodProcess {
    /// `None` once handed to the hang-up task.
    child: Option<Child>,
    /// The command's pid, which is also its process group's id.
    pid: i32,
    stdin: Option<ChildStdin>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    exited: bool,
}

/// The exit code a shell would report: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128)
}

/// A pipe whose read end the sandbox keeps and whose write end goes to the process.
fn output_pipe() -> io::Result<(pipe::Receiver, io::PipeWriter)> {
    let (reader, writer) = io::pipe()?;
    Ok((pipe::Receiver::from_owned_fd(reader.into())?, writer))
}

/// `kill(2)` or `killpg(2)` without caring whether anything was still there to signal.
fn signal(pid: i32, signal: i32, group: bool) {
    // SAFETY: these calls only send a signal. The pid is our own unreaped child (or its
    // group), so it cannot have been reused by another process.
    unsafe {
        if group {
            libc::killpg(pid, signal);
        } else {
            libc::kill(pid, signal);
        }
    }
}

/// A command that runs `argv` in the target's directory and environment, in a process group
/// of its own.
fn command_in(target: &ExecTarget, argv: &[String]) -> io::Result<Command> {
    std::fs::create_dir_all(&target.cwd)?;
    let Some((program, arguments)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    };
    let mut command = Command::new(program);
    command
        .args(arguments)
        .current_dir(&target.cwd)
        // Not the sandbox's own working directory, which shells would believe.
        .env("PWD", &target.cwd)
        .envs(target.env.iter().map(|(name, value)| (name, value)))
        .process_group(0);
    Ok(command)
}

impl PodProcess {
    /// Starts the command as the target's container would run it (see [`super::exec`] for
    /// where that differs).
    pub fn spawn(target: &ExecTarget, options: &ExecOptions) -> io::Result<PodProcess> {
        let mut command = command_in(target, &options.command)?;
        command.stdin(if options.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut stdout = None;
        if options.stdout || options.tty {
            let (reader, writer) = output_pipe()?;
            if options.tty {
                // A terminal has one output: stderr goes where stdout goes.
                command.stderr(writer.try_clone()?);
            }
            command.stdout(writer);
            stdout = Some(reader);
        } else {
            command.stdout(Stdio::null());
        }
        let stderr = if options.tty {
            None
        } else if options.stderr {
            let (reader, writer) = output_pipe()?;
            command.stderr(writer);
            Some(reader)
        } else {
            command.stderr(Stdio::null());
            None
        };
        let mut process = PodProcess::start(command)?;
        process.stdout = stdout;
        process.stderr = stderr;
        Ok(process)
    }

    /// Starts a container's command (`argv`) as the target's container would run it, without
    /// stdin, its stdout and stderr both written to `output` (the pipe of its
    /// [`ContainerLog`](super::container_log::ContainerLog), so that they interleave as
    /// written).
    pub fn spawn_logged(
        target: &ExecTarget,
        argv: &[String],
        output: io::PipeWriter,
    ) -> io::Result<PodProcess> {
        let mut command = command_in(target, argv)?;
        command
            .stdin(Stdio::null())
            .stderr(output.try_clone()?)
            .stdout(output);
        PodProcess::start(command)
    }

    fn start(mut command: Command) -> io::Result<PodProcess> {
        let mut child = command.spawn()?;
        // The command holds the write ends of the pipes; only the process may keep them, or
        // their readers would never see the end.
        drop(command);
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other("the process has no pid"))?;
        Ok(PodProcess {
            stdin: child.stdin.take(),
            child: Some(child),
            pid,
            stdout: None,
            stderr: None,
            exited: false,
        })
    }

    /// Sends `number` to the command's process group: the command and what it started
    /// without leaving the group.
    pub fn signal_group(&self, number: i32) {
        signal(self.pid, number, true);
    }

    /// The pid of the command (and id of its process group).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The command's stdin, if the client sends it.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The read end of the command's stdout, if the client wants it (or a terminal).
    pub fn take_stdout(&mut self) -> Option<pipe::Receiver> {
        self.stdout.take()
    }

    /// The read end of the command's stderr, if the client wants it without a terminal.
    pub fn take_stderr(&mut self) -> Option<pipe::Receiver> {
        self.stderr.take()
    }

    /// Waits for the command to end (cancel-safe).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("the process was hung up"));
        };
        let status = child.wait().await?;
        self.exited = true;
        Ok(status)
    }

    /// The exec connection is gone while the command runs: SIGHUP to its process group,
    /// SIGKILL to the command after [`HANG_UP_GRACE`] if it is still there; reaps it.
    pub fn hang_up(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.exited {
            return;
        }
        self.exited = true;
        let pid = self.pid;
        signal(pid, libc::SIGHUP, true);
        tokio::spawn(async move {
            if tokio::time::timeout(HANG_UP_GRACE, child.wait())
                .await
                .is_err()
            {
                signal(pid, libc::SIGKILL, false);
                let _ = child.wait().await;
            }
        });
    }
}

impl Drop for PodProcess {
    /// A session dropped without ending its command (the sandbox's runtime shut down under
    /// it) hangs it up all the same; nothing is left to wait for the grace period.
    fn drop(&mut self) {
        if !self.exited && self.child.is_some() {
            signal(self.pid, libc::SIGHUP, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_count_as_128_plus_their_number() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
