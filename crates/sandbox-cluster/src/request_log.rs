//! The request log, `DIR/requests.jsonl`: one JSON object per request served, so that a test
//! can tell what a command did to the cluster (a `plan` must only read, or use `dryRun=All`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// When it arrived, RFC 3339 with milliseconds.
    pub ts: String,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL path.
    pub path: String,
    /// The raw query string (`""` when none).
    pub query: String,
    /// The `Content-Type` header (`""` when none).
    pub content_type: String,
    /// The status answered; 0 when the connection was dropped on purpose (an exec whose
    /// stream is cut later is logged with its 101 and the fault `drop`).
    pub status: u16,
    /// The API verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `exec`, or `discovery` for the rest.
    pub verb: &'static str,
    /// Whether the request asked for `dryRun=All`.
    pub dry_run: bool,
    /// The fault injected, if any: `drop`, `error`, `conflict`.
    pub fault: Option<&'static str>,
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct RequestLog {
    file: Mutex<File>,
}

impl RequestLog {
    /// Opens (or creates) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog {
            file: Mutex::new(file),
        })
    }

    /// Appends one record; a failure to log never fails the request.
    pub fn record(&self, record: &RequestRecord) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write per line: readers never see half a record.
        let _ = file.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let log = RequestLog::open(&path).unwrap();
        let record = RequestRecord {
            ts: "2026-11-02T10:00:00.000Z".into(),
            method: "GET".into(),
            path: "/api/v1/pods".into(),
            query: "labelSelector=a%3Db".into(),
            content_type: String::new(),
            status: 200,
            verb: "list",
            dry_run: false,
            fault: None,
        };
        log.record(&record);
        log.record(&RequestRecord {
            status: 500,
            fault: Some("error"),
            ..record
        });
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["verb"], "list");
        assert_eq!(lines[1]["fault"], "error");
    }
}
