//! What a deleted pod takes with it. A real kubelet stops every process of a deleted pod's
//! containers, including those a `kubectl exec` started and those they detached (`setsid`,
//! `nohup`): they all live in the container. The sandbox has no containers, so each process
//! it starts for a pod (an exec's command, a Job pod's container command) carries the pod's
//! uid in its environment ([`POD_UID_ENV`]), which its children inherit. When the pod starts
//! terminating, or goes, the processes that carry its uid get SIGTERM, and SIGKILL if they
//! are still there the sandbox's grace period later.
//!
//! Difference from a real cluster: a process that clears its environment escapes.

use std::time::Duration;

/// The variable that marks a process as one of a pod's: its value is the pod's uid.
pub const POD_UID_ENV: &str = "RUNBOOK_SANDBOX_POD_UID";

/// The processes whose environment says they belong to the pod `uid`.
pub fn processes_of(uid: &str) -> Vec<i32> {
    let marker = format!("{POD_UID_ENV}={uid}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // A process that ended meanwhile, or that we may not read, is not ours to stop.
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|variable| variable == marker.as_bytes())
            })
        })
        .collect()
}

/// Sends `signal` to the processes of the pod `uid`; returns how many there were. Reads
/// procfs only, which never waits for a disk.
fn signal_processes_of(uid: &str, signal: i32) -> usize {
    let pids = processes_of(uid);
    for &pid in &pids {
        // SAFETY: only sends a signal. A pid read from /proc a moment ago may have ended and,
        // in theory, been reused; the environment check just before makes that window tiny,
        // as with any `pkill`.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    pids.len()
}

/// Stops the processes of the pod `uid`: SIGTERM, then SIGKILL to those left after `grace`.
pub async fn stop_processes_of(uid: String, grace: Duration) {
    if signal_processes_of(&uid, libc::SIGTERM) == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if processes_of(&uid).is_empty() {
            return;
        }
    }
    signal_processes_of(&uid, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_processes_of_a_pod_are_found_by_their_uid_and_stopped() {
        let uid = format!("test-{}", std::process::id());
        // `sh` ignores nothing: SIGTERM ends it; its `sleep` child inherits the marker.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .env(POD_UID_ENV, &uid)
            .spawn()
            .expect("sh starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes_of(&uid).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "sh and sleep not found"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(processes_of("another-pod").is_empty());
        stop_processes_of(uid.clone(), Duration::from_secs(5)).await;
        child.wait().expect("sh ends");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // The orphaned sleep is reaped by whoever adopts it; a zombie still has its environ
        // empty, so it is not listed.
        while !processes_of(&uid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pod's processes survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
