//! One exec's WebSocket stream, in the channel protocol of the kubelet's streaming server:
//! every message is binary and its first byte is the channel (0 stdin, 1 stdout, 2 stderr,
//! 3 status, 4 resize); in v5 the client ends stdin with `[0xFF, 0x00]`.
//!
//! The session forwards stdin to the process and its output to the client as it comes (a
//! copy may print progress for hours; nothing is buffered whole). Once the command has
//! exited and its output is drained, it sends exactly one channel-3 `Status` (kube-rs stops
//! reading there), then a Close frame with code 1000 (without it kubectl reports 1006), and
//! keeps reading until the client closes, so that pings still get their pongs.
//!
//! Output is drained until the pipes close, except that a background child the command
//! left behind may hold them open: forwarding stops at the first [`OUTPUT_IDLE`] without
//! output after the command's exit, or [`OUTPUT_AFTER_EXIT`] after it at the latest. (A real
//! container runtime waits for the pipes; the sandbox ends the exec so that a detached
//! child that kept its output does not hold the connection.)
//!
//! A connection that ends before the status (the client left, the network dropped it, a
//! [`StreamCut`](super::faults::StreamCut) fault, the sandbox shutting down) hangs up a
//! command that still runs ([`PodProcess::hang_up`]).

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, BytesMut};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::exec::ExecOptions;
use super::pod_process::{PodProcess, exit_code};

/// Channel numbers: the first byte of every message.
pub mod channel {
    /// Client to server: the command's stdin.
    pub const STDIN: u8 = 0;
    /// Server to client: the command's stdout.
    pub const STDOUT: u8 = 1;
    /// Server to client: the command's stderr.
    pub const STDERR: u8 = 2;
    /// Server to client: the one `Status` that ends the exec.
    pub const STATUS: u8 = 3;
    /// Client to server: terminal size changes (ignored: there is no terminal).
    pub const RESIZE: u8 = 4;
    /// Client to server, v5 only: `[CLOSE, STDIN]` ends stdin.
    pub const CLOSE: u8 = 0xFF;
}

/// After the command exits, forwarding its output stops at the first pause this long.
pub const OUTPUT_IDLE: Duration = Duration::from_millis(250);
/// After the command exits, forwarding its output stops this long after at the latest.
pub const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How long the session keeps reading after its Close frame, for the client's reply.
const LINGER: Duration = Duration::from_secs(5);
/// The most read from a pipe into one message.
const CHUNK: usize = 32 * 1024;

/// The channel protocols served, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 plus the stdin close signal.
    V5,
    /// `v4.channel.k8s.io`: JSON `Status` on channel 3.
    V4,
}

impl Protocol {
    /// The subprotocol's name in `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// The protocol of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Protocol::V5, Protocol::V4]
            .into_iter()
            .find(|protocol| protocol.name() == name)
    }
}

/// The channel-3 `Status` of a command that exited: `Success`, or `NonZeroExitCode` with
/// the code as the `ExitCode` cause (how kubectl and kube-rs learn the exit code).
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The channel-3 `Status` of a command that could not be started, in containerd's words.
pub fn start_failure(command: &[String], error: &io::Error) -> Value {
    let program = command.first().map(String::as_str).unwrap_or_default();
    let why = match error.kind() {
        io::ErrorKind::NotFound => format!("exec: {program:?}: executable file not found in $PATH"),
        io::ErrorKind::PermissionDenied => format!("exec: {program:?}: permission denied"),
        _ => format!("exec: {program:?}: {error}"),
    };
    let message = format!(
        "Internal error occurred: error executing command in container: failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: {why}: unknown"
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
        "details": {"causes": [{"message": message}]},
    })
}

/// A message on a channel.
fn framed(channel: u8, data: &[u8]) -> Message {
    let mut message = BytesMut::with_capacity(data.len() + 1);
    message.put_u8(channel);
    message.put_slice(data);
    Message::Binary(message.freeze())
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The command exited and its output was sent.
    Completed(io::Result<ExitStatus>),
    /// The connection ended before the status.
    Lost,
}

/// One exec stream: what it was asked for, and what can end it early.
#[derive(Debug)]
pub struct ExecSession {
    /// The subprotocol agreed on.
    pub protocol: Protocol,
    /// The exec's options.
    pub options: ExecOptions,
    /// Cut the connection (no Close frame) this long after the start: an injected fault.
    pub cut: Option<Duration>,
    /// Turns true when the sandbox shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl ExecSession {
    /// Runs the session to its end.
    pub async fn run(mut self, socket: WebSocket, process: io::Result<PodProcess>) {
        let (mut sink, stream) = socket.split();
        let mut process = match process {
            Ok(process) => process,
            Err(error) => {
                let status = start_failure(&self.options.command, &error);
                let _ = sink
                    .send(framed(channel::STATUS, status.to_string().as_bytes()))
                    .await;
                let _ = sink.send(normal_close()).await;
                let mut inbound = tokio::spawn(read_inbound(stream, None, self.protocol));
                if tokio::time::timeout(LINGER, &mut inbound).await.is_err() {
                    inbound.abort();
                }
                return;
            }
        };
        let (frames, mut outputs) = mpsc::channel::<Message>(16);
        let (exited, exit_seen) = watch::channel(false);
        for (number, pipe) in [
            (channel::STDOUT, process.take_stdout()),
            (channel::STDERR, process.take_stderr()),
        ] {
            if let Some(pipe) = pipe {
                tokio::spawn(forward_output(
                    pipe,
                    number,
                    frames.clone(),
                    exit_seen.clone(),
                ));
            }
        }
        drop(frames);
        let mut inbound = tokio::spawn(read_inbound(stream, process.take_stdin(), self.protocol));
        let cut_at = self.cut.map(|after| Instant::now() + after);
        let mut exit: Option<io::Result<ExitStatus>> = None;
        let mut outputs_open = true;
        let end = loop {
            if !outputs_open && let Some(status) = exit.take() {
                break End::Completed(status);
            }
            tokio::select! {
                () = sleep_until(cut_at) => break End::Lost,
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break End::Lost;
                    }
                }
                // The client stops reading only when it leaves (or its connection does).
                _ = &mut inbound => break End::Lost,
                status = process.wait(), if exit.is_none() => {
                    exit = Some(status);
                    let _ = exited.send(true);
                }
                frame = outputs.recv(), if outputs_open => match frame {
                    Some(frame) => {
                        if sink.send(frame).await.is_err() {
                            break End::Lost;
                        }
                    }
                    None => outputs_open = false,
                },
            }
        };
        match end {
            End::Completed(status) => {
                let status = match status {
                    Ok(status) => exit_status(&self.options.command, exit_code(status)),
                    Err(error) => start_failure(&self.options.command, &error),
                };
                let _ = sink
                    .send(framed(channel::STATUS, status.to_string().as_bytes()))
                    .await;
                let _ = sink.send(normal_close()).await;
                if tokio::time::timeout(LINGER, &mut inbound).await.is_err() {
                    inbound.abort();
                }
            }
            End::Lost => {
                // Dropping the socket's halves closes the connection without a Close frame.
                inbound.abort();
                drop(sink);
                if exit.is_none() {
                    process.hang_up();
                }
            }
        }
    }
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the client's messages (binary or text) until its connection ends: stdin goes to the
/// process (and
/// its backpressure to the client), `[0xFF, 0]` closes stdin in v5, anything else is
/// ignored. Reading is also what answers the client's pings.
async fn read_inbound(
    mut stream: SplitStream<WebSocket>,
    mut stdin: Option<ChildStdin>,
    protocol: Protocol,
) {
    while let Some(Ok(message)) = stream.next().await {
        // A real server reads text frames as binary ones: the Python client sends a str
        // stdin as text (the channel byte being the string's first character).
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => bytes::Bytes::from(text),
            _ => continue,
        };
        match data.as_ref() {
            [channel::STDIN, input @ ..] => {
                if let Some(pipe) = stdin.as_mut()
                    && pipe.write_all(input).await.is_err()
                {
                    // The command closed its stdin or ended: the rest has nowhere to go.
                    stdin = None;
                }
            }
            [channel::CLOSE, channel::STDIN, ..] if protocol == Protocol::V5 => {
                // Dropping the pipe's write end is the end of file for the command.
                stdin = None;
            }
            _ => {}
        }
    }
}

/// Forwards a pipe to the session as messages on `number`, until the pipe closes or the
/// output grace after the command's exit is over; then keeps reading and discarding, so
/// that whoever still holds the pipe never gets SIGPIPE.
async fn forward_output(
    mut pipe: pipe::Receiver,
    number: u8,
    frames: mpsc::Sender<Message>,
    mut exited: watch::Receiver<bool>,
) {
    let mut forwarding = Some(frames);
    let mut buffer = vec![0; CHUNK];
    let mut limit: Option<Instant> = None;
    loop {
        let read = if forwarding.is_none() {
            pipe.read(&mut buffer).await
        } else if let Some(limit) = limit {
            let until = (Instant::now() + OUTPUT_IDLE).min(limit);
            match tokio::time::timeout_at(until, pipe.read(&mut buffer)).await {
                Ok(read) => read,
                Err(_) => {
                    forwarding = None;
                    continue;
                }
            }
        } else {
            tokio::select! {
                read = pipe.read(&mut buffer) => read,
                changed = exited.changed() => {
                    match changed {
                        Ok(()) if *exited.borrow() => {
                            limit = Some(Instant::now() + OUTPUT_AFTER_EXIT);
                        }
                        Ok(()) => {}
                        // The session is over.
                        Err(_) => forwarding = None,
                    }
                    continue;
                }
            }
        };
        let count = match read {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        if let Some(frames) = &forwarding
            && frames.send(framed(number, &buffer[..count])).await.is_err()
        {
            forwarding = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn statuses_carry_the_exit_code_as_kubelet_sends_it() {
        assert_eq!(
            exit_status(&["true".into()], 0),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let missing = start_failure(
            &["nosuch".into()],
            &io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(missing["reason"], "InternalError");
        assert!(
            missing["message"]
                .as_str()
                .unwrap()
                .contains("exec: \"nosuch\": executable file not found in $PATH")
        );
    }

    #[test]
    fn protocols_by_name() {
        assert_eq!(Protocol::from_name("v5.channel.k8s.io"), Some(Protocol::V5));
        assert_eq!(Protocol::from_name("v4.channel.k8s.io"), Some(Protocol::V4));
        assert_eq!(Protocol::from_name("channel.k8s.io"), None);
    }

    #[test]
    fn messages_start_with_their_channel() {
        assert_eq!(
            framed(channel::STDERR, b"oops"),
            Message::Binary(Bytes::from_static(b"\x02oops"))
        );
    }
}
