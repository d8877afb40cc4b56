//! One rsync process: its command line, its output read for progress, its exit code read
//! for what to do next. The child runs in its own process group, dies with runbook
//! (PR_SET_PDEATHSIG, even on `kill -9`) and is killed with its group when the step is
//! dropped (Ctrl-C, a step timeout).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::actions::InvalidInput;

/// Lines of rsync's own error message kept for the step's error.
const MESSAGE_LINES: usize = 8;

/// The rsync that was found, with its version.
#[derive(Debug, Clone)]
pub struct Rsync {
    /// What `rsync --version` said first.
    pub version: String,
}

/// Finds rsync in PATH and checks that it is 3.1 or later (`--info=progress2`,
/// `--ignore-missing-args`).
pub async fn detect() -> Result<Rsync, InvalidInput> {
    let output = Command::new("rsync")
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(InvalidInput(
                "rsync is not installed (no `rsync` in PATH); install it, e.g. `apt-get install rsync`"
                    .into(),
            ));
        }
        Err(error) => {
            return Err(InvalidInput(format!(
                "cannot run `rsync --version`: {error}"
            )));
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default().trim().to_string();
    let version = first
        .split_whitespace()
        .skip_while(|word| *word != "version")
        .nth(1)
        .unwrap_or_default();
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if !output.status.success() || major == 0 {
        return Err(InvalidInput(format!(
            "`rsync --version` did not say which version it is ({first:?})"
        )));
    }
    if (major, minor) < (3, 1) {
        return Err(InvalidInput(format!(
            "rsync {version} is too old: `sync` needs rsync 3.1 or later"
        )));
    }
    Ok(Rsync { version: first })
}

/// What one rsync process copies.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// These paths (`--files-from`), directories recursively when `recursive`.
    Paths {
        /// The paths, relative to `from`.
        entries: &'a [Vec<u8>],
        /// Listed directories bring everything below them.
        recursive: bool,
        /// Copy even what has the same size and time (`-I`).
        ignore_times: bool,
        /// Nothing of it is at the destination yet: files are written where they go
        /// (`--inplace`) instead of into a temporary file renamed at the end, which saves a
        /// create and a rename per file (a round trip each on NFS). A copy stopped halfway
        /// leaves a file with another size and time than the source's, which the next pass
        /// copies again.
        fresh: bool,
    },
    /// The attributes of the root directory itself, nothing in it.
    Root,
}

/// How the processes of one pass are started.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// `from/`.
    pub from: OsString,
    /// `to/`.
    pub to: OsString,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// The user's extra options.
    pub extra: Vec<String>,
    /// Each process's `--bwlimit`, KiB/s.
    pub bwlimit_kib: Option<u64>,
}

/// What a running rsync reports: an update of `--info=progress2`, printed after each file
/// and every second during a long one. (rsync could name every file with `--out-format`,
/// but on a copy of small files that line costs a quarter of rsync's time.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Bytes this process has copied so far.
    pub bytes: u64,
    /// Entries of its file list it is through with (copied or found up to date): the
    /// `T - M` of `to-chk=M/T` (`ir-chk` while the list still grows), when printed.
    pub checked: Option<u64>,
}

/// How an rsync process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its exit code (128+N for signal N).
    pub rc: i32,
    /// The first lines of its error output.
    pub message: Vec<String>,
}

/// What to do after an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Done,
    /// Done, but files vanished while copying (people still work): a warning.
    Vanished,
    /// A transient failure (a timeout, a broken pipe, a protocol hiccup): try again.
    Transient,
    /// A file I/O error: try once more, then report.
    RetryOnce,
    /// The destination is full (or over quota): stop the whole copy.
    NoSpace,
    /// A usage or protocol error that every shard would hit: stop the whole copy.
    Stop,
    /// This shard failed (permissions, ...); the others go on and the step fails at the end.
    Failed,
}

/// Reads an exit code, with rsync's message for the ones that depend on it.
pub fn verdict(finished: &Finished) -> Verdict {
    let full = finished.message.iter().any(|line| {
        line.contains("No space left on device") || line.contains("Disk quota exceeded")
    });
    match finished.rc {
        0 => Verdict::Done,
        24 => Verdict::Vanished,
        _ if full => Verdict::NoSpace,
        5 | 10 | 12 | 14 | 20 | 21 | 30 | 35 => Verdict::Transient,
        rc if rc > 128 => Verdict::Transient,
        11 => Verdict::RetryOnce,
        1 | 2 | 4 => Verdict::Stop,
        _ => Verdict::Failed,
    }
}

/// rsync's words for its exit codes.
pub fn describe(rc: i32) -> &'static str {
    match rc {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or directories",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        rc if rc > 128 => "killed by a signal",
        _ => "unknown error",
    }
}

/// Kills a child's process group when dropped, unless the child was reaped first.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal; a stale group id at worst reaches nothing.
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

impl Transfer {
    /// A transfer from `from` into `to` (both directories).
    pub fn new(from: &Path, to: &Path) -> Self {
        let slash = |path: &Path| {
            let mut text = path.as_os_str().to_os_string();
            if !text.as_bytes().ends_with(b"/") {
                text.push("/");
            }
            text
        };
        Transfer {
            from: slash(from),
            to: slash(to),
            exclude: Vec::new(),
            extra: Vec::new(),
            bwlimit_kib: None,
        }
    }

    /// Whether `--inplace` goes with the user's options: not with those that need the
    /// temporary file (`--delay-updates`, `--partial-dir`, `--backup`), nor with sparse
    /// files, which rsync before 3.1.3 refuses to write in place.
    fn in_place_fits(&self) -> bool {
        !self.extra.iter().any(|arg| {
            let long = |name: &str| arg == name || arg.starts_with(&format!("{name}="));
            long("--delay-updates")
                || long("--partial-dir")
                || long("--backup")
                || long("--backup-dir")
                || long("--sparse")
                || (arg.starts_with('-') && !arg.starts_with("--") && arg.contains(['S', 'b']))
        })
    }

    /// The arguments after `rsync`.
    pub fn args(&self, listing: Listing<'_>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "--numeric-ids".into(),
            "--info=progress2".into(),
            "--outbuf=L".into(),
        ];
        match listing {
            Listing::Paths {
                recursive,
                ignore_times,
                fresh,
                ..
            } => {
                // With --files-from, -a does not recurse unless -r is given.
                args.extend(
                    ["--from0", "--files-from=-", "--ignore-missing-args"].map(OsString::from),
                );
                if recursive {
                    args.push("-r".into());
                }
                if ignore_times {
                    args.push("-I".into());
                }
                if fresh && self.in_place_fits() {
                    args.push("--inplace".into());
                }
                for pattern in &self.exclude {
                    args.push(format!("--exclude={pattern}").into());
                }
            }
            Listing::Root => {
                args.extend(["-d", "--exclude=/*"].map(OsString::from));
            }
        }
        if let Some(kib) = self.bwlimit_kib {
            args.push(format!("--bwlimit={kib}").into());
        }
        args.extend(self.extra.iter().map(OsString::from));
        args.push("--".into());
        args.push(self.from.clone());
        args.push(self.to.clone());
        args
    }

    /// Runs one rsync to its end, calling `report` as it goes.
    pub async fn run(
        &self,
        listing: Listing<'_>,
        mut report: impl FnMut(Report) + Send,
    ) -> anyhow::Result<Finished> {
        let mut command = Command::new("rsync");
        command
            .args(self.args(listing))
            // English messages, to recognise "No space left on device".
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it makes rsync die with runbook (kill -9).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().context("cannot start rsync")?;
        let mut group = ProcessGroup(child.id().and_then(|pid| i32::try_from(pid).ok()));
        let mut stdin = child.stdin.take().context("no stdin pipe to rsync")?;
        let stdout = child.stdout.take().context("no stdout pipe from rsync")?;
        let stderr = child.stderr.take().context("no stderr pipe from rsync")?;
        let list: Vec<u8> = match listing {
            Listing::Paths { entries, .. } => entries
                .iter()
                .flat_map(|entry| entry.iter().copied().chain([0]))
                .collect(),
            Listing::Root => Vec::new(),
        };
        let write = async move {
            // rsync may stop reading early (it failed): a broken pipe is not our error.
            let _ = stdin.write_all(&list).await;
            let _ = stdin.shutdown().await;
        };
        let read_out = async {
            let mut stdout = stdout;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match stdout.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buffer[..n]);
                // Every complete line, then what is left moved to the front once: a read
                // holds a thousand lines of a copy of small files.
                let mut start = 0;
                while let Some(length) = pending[start..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                {
                    if let Some(parsed) = parse_output(&pending[start..start + length]) {
                        report(parsed);
                    }
                    start += length + 1;
                }
                pending.drain(..start);
            }
            if let Some(parsed) = parse_output(&pending) {
                report(parsed);
            }
        };
        let read_err = async {
            let mut lines = BufReader::new(stderr).lines();
            let mut message = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if message.len() < MESSAGE_LINES && !line.trim().is_empty() {
                    message.push(line);
                }
            }
            message
        };
        let ((), (), message) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await.context("waiting for rsync")?;
        // The leader is reaped; anything it left behind in its group goes with it.
        group.kill();
        let rc = status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        });
        Ok(Finished { rc, message })
    }
}

/// Reads one line (or `\r`-ended progress update) of rsync's output.
fn parse_output(segment: &[u8]) -> Option<Report> {
    // `    1,234,567  45%   12.34MB/s    0:00:12 (xfr#3, to-chk=10/20)`
    let text = String::from_utf8_lossy(segment);
    let first = text.split_whitespace().next()?;
    if !first.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = first.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != first.chars().filter(|&c| c != ',' && c != '.').count() {
        return None;
    }
    let bytes = digits.parse().ok()?;
    let checked = ["to-chk=", "ir-chk="].iter().find_map(|key| {
        let rest = &text[text.find(key)? + key.len()..];
        let (left, total) = rest.split_once('/')?;
        let total: u64 = total.trim_end_matches(')').trim().parse().ok()?;
        Some(total.saturating_sub(left.parse().ok()?))
    });
    Some(Report { bytes, checked })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_and_progress_updates_are_read() {
        assert_eq!(
            parse_output(b"     98,402,304  46%   93.81MB/s    0:00:01"),
            Some(Report {
                bytes: 98_402_304,
                checked: None
            })
        );
        assert_eq!(
            parse_output(
                b"    209,697,600 100%  280.47MB/s    0:00:00 (xfr#20004, to-chk=0/20057)"
            ),
            Some(Report {
                bytes: 209_697_600,
                checked: Some(20_057)
            })
        );
        assert_eq!(
            parse_output(b"          5,242   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1599/1653)"),
            Some(Report {
                bytes: 5_242,
                checked: Some(54)
            })
        );
        assert_eq!(parse_output(b"created directory d"), None);
        assert_eq!(parse_output(b""), None);
    }

    #[test]
    fn exit_codes_say_what_to_do() {
        let finished = |rc: i32, line: &str| Finished {
            rc,
            message: vec![line.to_string()],
        };
        assert_eq!(verdict(&finished(0, "")), Verdict::Done);
        assert_eq!(
            verdict(&finished(24, "file has vanished")),
            Verdict::Vanished
        );
        for rc in [10, 12, 14, 21, 30, 35] {
            assert_eq!(verdict(&finished(rc, "")), Verdict::Transient, "{rc}");
        }
        assert_eq!(
            verdict(&finished(23, "Permission denied (13)")),
            Verdict::Failed
        );
        assert_eq!(
            verdict(&finished(11, "write failed: No space left on device (28)")),
            Verdict::NoSpace
        );
        assert_eq!(verdict(&finished(1, "syntax")), Verdict::Stop);
    }

    #[test]
    fn the_command_line_lists_files_on_stdin() {
        let mut transfer = Transfer::new(Path::new("/src"), Path::new("/dst/"));
        transfer.bwlimit_kib = Some(100);
        transfer.exclude = vec!["*.tmp".into()];
        let entries = [b"a".to_vec()];
        let args: Vec<String> = transfer
            .args(Listing::Paths {
                entries: &entries,
                recursive: true,
                ignore_times: false,
                fresh: false,
            })
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.contains(&"--inplace".to_string()), "{args:?}");
        for expected in [
            "-a",
            "--numeric-ids",
            "--from0",
            "--files-from=-",
            "-r",
            "--bwlimit=100",
            "--exclude=*.tmp",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "{expected} in {args:?}"
            );
        }
        assert_eq!(&args[args.len() - 2..], ["/src/", "/dst/"]);
    }

    #[test]
    fn new_files_are_written_in_place_unless_an_option_needs_the_temporary_file() {
        let entries = [b"home".to_vec()];
        let fresh = Listing::Paths {
            entries: &entries,
            recursive: true,
            ignore_times: false,
            fresh: true,
        };
        let in_place = |extra: &[&str]| {
            let mut transfer = Transfer::new(Path::new("/src"), Path::new("/dst"));
            transfer.extra = extra.iter().map(ToString::to_string).collect();
            transfer.args(fresh).contains(&"--inplace".into())
        };
        assert!(in_place(&[]));
        assert!(in_place(&["-H", "--bwlimit=10", "--checksum"]));
        for extra in [
            "--delay-updates",
            "--partial-dir=.rsync-partial",
            "--backup",
            "-b",
            "--sparse",
            "-HS",
        ] {
            assert!(!in_place(&[extra]), "{extra}");
        }
    }
}
