//! A container's log on disk, in the pod's directory: `CONTAINER.log` holds exactly what the
//! command wrote (stdout and stderr interleaved as written, as before there were times), and
//! `CONTAINER.log.times` when each line of it began: one `OFFSET TIME` line per log line, the
//! byte offset where the line starts and the RFC 3339 time, with nanoseconds, at which the
//! sandbox read its first byte from the command's output pipe.
//!
//! A real node's runtime writes one file in the CRI format (`TIME STREAM P|F TEXT`) instead.
//! Keeping the text whole in its own file leaves everything that reads it as it was: the
//! kubelet's termination message ([`super::kubelet`]), people and tests reading the file, a
//! sandbox restarted on a directory whose logs have no times yet (their lines take the log
//! file's modification time). The times are written before the text they describe, so a
//! reader that reads the text first, then the times, finds a time for every line it read.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// How much of what is left in the pipe is copied once the command has ended, before its
/// end is recorded (a detached child may go on writing; it is not waited for).
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Where a container's log and its line times are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLog {
    path: PathBuf,
}

impl ContainerLog {
    /// The log of `container` in the pod directory `pod_dir`.
    pub fn new(pod_dir: &Path, container: &str) -> Self {
        ContainerLog {
            path: pod_dir.join(format!("{container}.log")),
        }
    }

    /// `CONTAINER.log`: what the command wrote.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `CONTAINER.log.times`: when each line began.
    pub fn times_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".times");
        PathBuf::from(name)
    }

    /// When each line of the log began, as far as recorded.
    pub fn times(&self) -> LineTimes {
        let recorded = std::fs::read_to_string(self.times_path()).unwrap_or_default();
        let unrecorded = std::fs::metadata(&self.path)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| Timestamp::try_from(modified).ok())
            .unwrap_or_else(Timestamp::now);
        LineTimes::parse(&recorded, unrecorded)
    }

    /// A pipe for the command's output, and the task that copies it into the log: it runs
    /// until every writer has closed the pipe (detached children included, so that their
    /// writes never get SIGPIPE).
    pub fn record(&self) -> io::Result<(io::PipeWriter, Recording)> {
        let (reader, writer) = io::pipe()?;
        let reader = pipe::Receiver::from_owned_fd(reader.into())?;
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| {
                    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
                })
        };
        let sink = LogSink {
            text: open(&self.path)?,
            times: open(&self.times_path())?,
            at_line_start: true,
        };
        let (ended, ended_seen) = oneshot::channel();
        tokio::spawn(copy(reader, sink, ended_seen));
        Ok((writer, Recording { ended }))
    }
}

/// The copy of a command's output into its log, as it runs.
#[derive(Debug)]
pub struct Recording {
    ended: oneshot::Sender<oneshot::Sender<()>>,
}

impl Recording {
    /// The command has ended: waits until what it left in the pipe is in the log.
    pub async fn drained(self) {
        let (done, drained) = oneshot::channel();
        if self.ended.send(done).is_ok() {
            // An error means the copy ended (the pipe closed): everything was written.
            let _ = drained.await;
        }
    }
}

/// The two files a copy appends to.
struct LogSink {
    text: File,
    times: File,
    /// Whether the next byte starts a line.
    at_line_start: bool,
}

impl LogSink {
    /// Appends `chunk`, read at `now`, recording the lines that start in it. Errors are
    /// dropped: the command's output is still read, so that it is not stopped by SIGPIPE.
    fn append(&mut self, chunk: &[u8], now: Timestamp) {
        // The text's length, not a count of ours: a later pod of the same name appends to
        // the same file.
        let Ok(length) = self.text.metadata().map(|metadata| metadata.len()) else {
            return;
        };
        let mut entries = String::new();
        for start in line_starts(chunk, self.at_line_start) {
            entries.push_str(&format!("{} {}\n", length + start as u64, format_time(now)));
        }
        self.at_line_start = chunk.last().is_some_and(|byte| *byte == b'\n');
        let _ = self.times.write_all(entries.as_bytes());
        let _ = self.text.write_all(chunk);
    }
}

/// The offsets in `chunk` where a line starts; the chunk's first byte does if the previous
/// chunk ended a line.
fn line_starts(chunk: &[u8], at_line_start: bool) -> Vec<usize> {
    let mut starts = Vec::new();
    if at_line_start && !chunk.is_empty() {
        starts.push(0);
    }
    starts.extend(
        chunk
            .iter()
            .enumerate()
            .filter(|(position, byte)| **byte == b'\n' && position + 1 < chunk.len())
            .map(|(position, _)| position + 1),
    );
    starts
}

/// Copies the pipe into the log until every writer has closed it. When the command has
/// ended (`ended` says so), what it left in the pipe is copied at once and acknowledged.
async fn copy(
    mut reader: pipe::Receiver,
    mut sink: LogSink,
    mut ended: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut waiting_for_end = true;
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(count) => sink.append(&buffer[..count], Timestamp::now()),
            },
            done = &mut ended, if waiting_for_end => {
                waiting_for_end = false;
                // Read the pipe itself (it is non-blocking): the reactor may not have seen
                // yet that it is readable, and `try_read` would trust it.
                let Ok(mut pipe) = reader.as_fd().try_clone_to_owned().map(File::from) else {
                    continue;
                };
                let mut copied = 0;
                while copied < DRAIN_LIMIT {
                    match pipe.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(count) => {
                            sink.append(&buffer[..count], Timestamp::now());
                            copied += count;
                        }
                    }
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// A time as kubelet prints it before a line: RFC 3339, UTC, always nine fractional digits.
pub fn format_time(time: Timestamp) -> String {
    format!("{time:.9}")
}

/// When the lines of a log began: `(offset, time)` in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct LineTimes {
    entries: Vec<(usize, Timestamp)>,
    /// The time of a line written before times were recorded.
    unrecorded: Timestamp,
}

impl LineTimes {
    /// Reads a times file; lines that are not `OFFSET TIME` (a write cut short) are skipped.
    /// Lines before the first recorded one take `unrecorded` (the log file's modification
    /// time), or the first recorded time if that is earlier, so that times never go back.
    pub fn parse(text: &str, unrecorded: Timestamp) -> Self {
        let entries: Vec<(usize, Timestamp)> = text
            .lines()
            .filter_map(|line| {
                let (offset, time) = line.split_once(' ')?;
                Some((offset.parse().ok()?, time.parse().ok()?))
            })
            .collect();
        let unrecorded = entries
            .first()
            .map_or(unrecorded, |(_, first)| unrecorded.min(*first));
        LineTimes {
            entries,
            unrecorded,
        }
    }

    /// When the line starting at `offset` began: the time recorded for it, else for the line
    /// before it (a write of times that failed), else the log's own time.
    pub fn at(&self, offset: usize) -> Timestamp {
        let recorded = self.entries.partition_point(|(start, _)| *start <= offset);
        recorded
            .checked_sub(1)
            .map_or(self.unrecorded, |index| self.entries[index].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn lines_start_after_each_newline_and_where_the_last_chunk_ended_one() {
        assert_eq!(line_starts(b"a\nbc\n", true), [0, 2]);
        assert_eq!(line_starts(b"a\nbc", true), [0, 2]);
        assert_eq!(line_starts(b"rest\nnext", false), [5]);
        assert_eq!(line_starts(b"\n\n", true), [0, 1]);
        assert_eq!(line_starts(b"", true), Vec::<usize>::new());
    }

    #[test]
    fn times_are_printed_with_nine_digits_in_utc() {
        assert_eq!(
            format_time(time("2016-10-06T02:17:09.6697942+02:00")),
            "2016-10-06T00:17:09.669794200Z"
        );
        assert_eq!(
            format_time(time("2016-10-06T00:17:09Z")),
            "2016-10-06T00:17:09.000000000Z"
        );
    }

    #[test]
    fn a_line_takes_its_own_time_else_the_one_before_else_the_logs() {
        let unrecorded = time("2016-10-06T00:00:00Z");
        let times = LineTimes::parse(
            "4 2016-10-06T00:00:01.5Z\n10 2016-10-06T00:00:02Z\ncut sh\n",
            unrecorded,
        );
        assert_eq!(times.at(0), unrecorded);
        let later = LineTimes::parse("4 2016-10-06T00:00:01.5Z\n", time("2016-10-06T00:00:09Z"));
        assert_eq!(later.at(0), time("2016-10-06T00:00:01.5Z"));
        assert_eq!(times.at(4), time("2016-10-06T00:00:01.5Z"));
        assert_eq!(times.at(7), time("2016-10-06T00:00:01.5Z"));
        assert_eq!(times.at(10), time("2016-10-06T00:00:02Z"));
        assert_eq!(times.at(99), time("2016-10-06T00:00:02Z"));
    }

    #[tokio::test]
    async fn output_is_copied_whole_with_the_time_of_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = ContainerLog::new(dir.path(), "worker");
        std::fs::write(log.path(), "before\n").unwrap();
        let (mut writer, recording) = log.record().unwrap();
        let before = Timestamp::now();
        writer.write_all(b"one\ntw").unwrap();
        writer.write_all(b"o\nthree").unwrap();
        recording.drained().await;
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap(),
            "before\none\ntwo\nthree"
        );
        let times = log.times();
        let offsets: Vec<usize> = times.entries.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, [7, 11, 15]);
        assert!(times.entries.iter().all(|(_, at)| *at >= before));
        // The line written before the recording has the log's own time, never one after the
        // first recorded line's. Not equal to it: the file's modification time comes from
        // the kernel's coarse clock (a tick behind the precise one at times), and the earlier
        // of the two is taken.
        assert!(
            times.at(0) <= times.at(7),
            "an unrecorded line dated after the first recorded one"
        );
        drop(writer);
    }
}
