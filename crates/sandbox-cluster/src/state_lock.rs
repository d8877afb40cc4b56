//! The lock beside a state file, `FILE.lock`: two sandboxes writing one state would lose
//! each other's changes. It is an flock (std's [`File::try_lock`], released by the kernel
//! when its holder dies), and the file holds a line naming its holder, so that the next
//! one is told who has it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a process that finds the lock taken waits for its holder to write who it is:
/// the holder takes the lock first and writes its line just after.
const HOLDER_RECORD_WAIT: Duration = Duration::from_secs(2);

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    file: File,
}

impl StateLock {
    /// Takes the lock held in the file `path` (created if missing), or says who holds it:
    /// `pid 123 on HOST since TIME`, or `None` when the holder has not written its line
    /// within two seconds.
    pub fn acquire(path: &Path) -> std::io::Result<Result<StateLock, Option<String>>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let deadline = Instant::now() + HOLDER_RECORD_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    // Empty or a dead holder's: the holder took the lock a moment ago and is
                    // writing its own line; ask again until it has.
                    if let Some(holder) = read_holder(&mut file).filter(|line| may_be_alive(line)) {
                        return Ok(Err(Some(holder)));
                    }
                    if Instant::now() >= deadline {
                        return Ok(Err(None));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(error),
            }
        }
        let holder = format!(
            "pid {} on {} since {}",
            std::process::id(),
            host_name(),
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
        );
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(holder.as_bytes())?;
        file.sync_data()?;
        Ok(Ok(StateLock { file }))
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Leave no line behind: the next holder is not told of a holder that is gone.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The holder's line, if it has written one.
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// False for a line of a process on this host that is gone (a holder killed before it
/// could clear its line, which the new holder has not replaced yet).
fn may_be_alive(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some("pid"), Some(pid), Some("on"), Some(host)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return true;
    };
    if host != host_name() {
        return true;
    }
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's host name.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "unknown".into();
    }
    let end = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_who_has_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml.lock");
        let first = StateLock::acquire(&path).unwrap().unwrap();
        // flock is per open file description, so a second open in this process conflicts.
        let holder = StateLock::acquire(&path).unwrap().unwrap_err().unwrap();
        assert!(
            holder.starts_with(&format!("pid {} on ", std::process::id())),
            "{holder}"
        );
        drop(first);
        assert!(StateLock::acquire(&path).unwrap().is_ok());
    }

    #[test]
    fn a_dead_holders_line_is_not_reported() {
        assert!(!may_be_alive(&format!(
            "pid {} on {} since now",
            libc::pid_t::MAX,
            host_name()
        )));
        assert!(may_be_alive(&format!(
            "pid {} on {} since now",
            std::process::id(),
            host_name()
        )));
    }
}
