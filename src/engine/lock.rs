//! The run lock: `runs/<run>/run.lock`, held with flock for the whole run, and holding the
//! pid, host and start time of its holder so a second run can say who has it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::event::now_rfc3339;

/// File name of the lock inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// How long a process that finds the lock taken waits for its holder to write who it is:
/// the holder takes the lock first and writes its record just after.
const HOLDER_RECORD_WAIT: Duration = Duration::from_secs(2);

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it took the lock.
    pub since: String,
    /// With `--state cluster`: what the run's Lease says besides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Box<LeaseDetails>>,
}

/// What a run's Lease says of its holder besides a lock file's pid, host and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDetails {
    /// The Lease, `namespace/name`.
    pub object: String,
    /// The user the holder runs as.
    pub user: String,
    /// The CI job's URL, when the holder is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<String>,
    /// When the holder last renewed the Lease.
    pub renewed: String,
}

impl LockHolder {
    /// False for a record whose process is known to be gone (a previous holder's, that the
    /// new holder has not replaced yet); true for one on another host, which cannot be
    /// checked from here.
    fn may_be_alive(&self) -> bool {
        if self.host != host_name() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let result = unsafe { libc::kill(pid, 0) };
        result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lease {
            None => write!(f, "pid {} on {} since {}", self.pid, self.host, self.since),
            Some(lease) => {
                write!(f, "{}@{} (pid {}", lease.user, self.host, self.pid)?;
                if let Some(url) = &lease.ci {
                    write!(f, ", CI job {url}")?;
                }
                write!(f, ") since {}, last renewed {}", self.since, lease.renewed)
            }
        }
    }
}

/// A held run lock; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

/// What happened when taking the lock.
#[derive(Debug)]
pub enum Acquired {
    /// The lock was free and clean.
    Free(RunLock),
    /// The lock was free but a holder that died without releasing it left its record.
    TakenOver(RunLock, LockHolder),
}

/// This machine's host name.
pub fn host_name() -> String {
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

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl RunLock {
    /// Takes the lock of a run directory, or says who holds it.
    pub fn acquire(run_dir: &Path) -> anyhow::Result<Result<Acquired, Option<LockHolder>>> {
        Self::acquire_file(&run_dir.join(LOCK_FILE))
    }

    /// Takes the lock held in the file `path` (created if missing), or says who holds it.
    /// The holder is `None` only when it has not written its record within
    /// [`HOLDER_RECORD_WAIT`] of taking the lock.
    pub fn acquire_file(path: &Path) -> anyhow::Result<Result<Acquired, Option<LockHolder>>> {
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
                    // Empty, half-written or a dead holder's: the holder took the lock a
                    // moment ago and is writing its own; ask again until it has (or has let
                    // go of the lock).
                    if let Some(holder) = read_holder(&mut file).filter(LockHolder::may_be_alive) {
                        return Ok(Err(Some(holder)));
                    }
                    if Instant::now() >= deadline {
                        return Ok(Err(None));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(error.into()),
            }
        }
        // flock is released by the kernel when a process dies, so a record left in the file
        // means its holder died (kill -9, a crash) without cleaning up.
        let previous = read_holder(&mut file);
        let holder = LockHolder {
            pid: std::process::id(),
            host: host_name(),
            since: now_rfc3339(),
            lease: None,
        };
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(serde_json::to_string(&holder)?.as_bytes())?;
        file.sync_data()?;
        let lock = RunLock { file };
        Ok(Ok(match previous {
            Some(previous) => Acquired::TakenOver(lock, previous),
            None => Acquired::Free(lock),
        }))
    }

    /// Who holds the lock of a run directory now, if anyone (for `status`).
    pub fn holder(run_dir: &Path) -> Option<LockHolder> {
        let mut file = File::open(run_dir.join(LOCK_FILE)).ok()?;
        match file.try_lock_shared() {
            // Nobody holds it; dropping the file releases our probe at once.
            Ok(()) => None,
            Err(_) => read_holder(&mut file),
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // A clean exit leaves an empty record, so the next run does not warn.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_who_has_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap().unwrap();
        assert!(matches!(first, Acquired::Free(_)));
        // flock is per open file description, so a second open in this process conflicts.
        let second = RunLock::acquire(dir.path()).unwrap();
        let holder = second.unwrap_err().unwrap();
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(RunLock::holder(dir.path()).unwrap().pid, std::process::id());
        drop(first);
        assert!(RunLock::holder(dir.path()).is_none());
        assert!(matches!(
            RunLock::acquire(dir.path()).unwrap().unwrap(),
            Acquired::Free(_)
        ));
    }

    #[test]
    fn every_loser_of_simultaneous_takes_names_the_holder() {
        // Many rounds of many takers at once: the holder writes its record just after it
        // takes the lock, and a loser that looked in between used to find nothing.
        const TAKERS: usize = 8;
        for _ in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(TAKERS);
            let done = std::sync::Barrier::new(TAKERS);
            let results: Vec<Result<(), Option<LockHolder>>> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..TAKERS)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            let result = RunLock::acquire(dir.path()).unwrap();
                            // The winner keeps the lock until every loser has looked.
                            done.wait();
                            result.map(drop)
                        })
                    })
                    .collect();
                takers
                    .into_iter()
                    .map(|taker| taker.join().unwrap())
                    .collect()
            });
            assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
            for result in results {
                if let Err(holder) = result {
                    let holder = holder.expect("a loser could not say who holds the lock");
                    assert_eq!(holder.pid, std::process::id());
                    assert_eq!(holder.host, host_name());
                }
            }
        }
    }

    #[test]
    fn a_dead_holders_record_is_not_named_as_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockHolder {
            pid: 999_999,
            host: host_name(),
            since: "earlier".into(),
            lease: None,
        };
        assert!(!dead.may_be_alive());
        let elsewhere = LockHolder {
            host: format!("{}-elsewhere", host_name()),
            ..dead.clone()
        };
        assert!(elsewhere.may_be_alive());
        // Held (by a second open) with the dead holder's record still in it.
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let held = File::open(&path).unwrap();
        held.lock().unwrap();
        assert!(RunLock::acquire(dir.path()).unwrap().unwrap_err().is_none());
    }

    #[test]
    fn a_record_left_by_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockHolder {
            pid: 999_999,
            host: host_name(),
            since: "earlier".into(),
            lease: None,
        };
        std::fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        match RunLock::acquire(dir.path()).unwrap().unwrap() {
            Acquired::TakenOver(_, previous) => assert_eq!(previous, dead),
            Acquired::Free(_) => panic!("the dead holder's record was not noticed"),
        }
    }
}
