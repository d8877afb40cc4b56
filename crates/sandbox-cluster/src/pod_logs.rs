//! `pods/log`: a container's log, as the [`kubelet`](super::kubelet) recorded it in
//! `DIR/pods/NAMESPACE/POD/` ([`ContainerLog`]: the text the command wrote, and when each
//! line began). Answered as a real kubelet does: without options, exactly the text the
//! command wrote; `timestamps` prefixes each line with the time it began (RFC 3339, UTC,
//! nine fractional digits) and a space; `sinceSeconds` or `sinceTime` (not both: 422, as
//! the API server validates `PodLogOptions`) keep the lines begun at or after that time;
//! `tailLines` then keeps the last lines of those, and `limitBytes` cuts what is sent,
//! prefixes included. `follow` keeps the answer open with the same options, sending the
//! lines the command writes, until the container has terminated (or the pod is gone, or
//! the sandbox stops); `previous` asks for a container instance the sandbox never has (it
//! does not restart containers), so it is answered with the kubelet's 400. A difference
//! that remains: a container that runs nothing (any pod but a Job's) has an empty log.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::api_error::{ApiError, FieldError};
use super::container_log::{ContainerLog, format_time};
use super::meta;
use super::routes::{App, Query};
use kube_kinds::find_kind;

/// How often a followed log is read again for what the command wrote since.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Answers `GET /api/v1/namespaces/NS/pods/NAME/log`.
pub fn answer(app: Arc<App>, namespace: &str, name: &str, query: &Query) -> Response {
    match open(&app, namespace, name, query) {
        Ok(log) if query.flag("follow") => {
            let stream = futures::stream::unfold(
                (log, app, namespace.to_string(), name.to_string(), true),
                |(mut log, app, namespace, name, first)| async move {
                    let chunk = follow_step(&mut log, &app, &namespace, &name, first).await?;
                    Some((
                        Ok::<_, std::io::Error>(chunk),
                        (log, app, namespace, name, false),
                    ))
                },
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(mut log) => {
            let text = log.read_new(true);
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// What a `pods/log` request asks for, checked as the API server checks `PodLogOptions`.
#[derive(Debug, Clone, PartialEq)]
struct LogOptions {
    /// Each line is prefixed by its time and a space.
    timestamps: bool,
    /// Only lines begun at or after this time (`sinceSeconds` before the request, or
    /// `sinceTime`).
    since: Option<Timestamp>,
    /// Only the last lines of what the first read finds (after `since`).
    tail_lines: Option<usize>,
    /// At most this many bytes in all, time prefixes included.
    limit_bytes: Option<usize>,
}

impl LogOptions {
    /// Reads the query of a request for the logs of `pod`, made at `now`: a value that is not
    /// a number or a time gets 400, as the query's decoding refuses it; values the API
    /// refuses get its 422.
    fn parse(query: &Query, pod: &str, now: Timestamp) -> Result<LogOptions, ApiError> {
        let given = |field: &str| query.get(field).filter(|value| !value.is_empty());
        let integer = |field: &str| -> Result<Option<i64>, ApiError> {
            given(field)
                .map(|value| {
                    value.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!("{field}: Invalid value: {value:?}"))
                    })
                })
                .transpose()
        };
        let tail_lines = integer("tailLines")?;
        let limit_bytes = integer("limitBytes")?;
        let since_seconds = integer("sinceSeconds")?;
        let since_time = given("sinceTime")
            .map(|value| {
                meta::parse_time(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "sinceTime: Invalid value: {value:?}: not an RFC 3339 time"
                    ))
                })
            })
            .transpose()?;
        let mut errors = Vec::new();
        if let Some(lines) = tail_lines.filter(|lines| *lines < 0) {
            errors.push(FieldError::invalid(
                "tailLines",
                &json!(lines),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(bytes) = limit_bytes.filter(|bytes| *bytes < 1) {
            errors.push(FieldError::invalid(
                "limitBytes",
                &json!(bytes),
                "must be greater than 0",
            ));
        }
        match (since_seconds, since_time) {
            (Some(_), Some(_)) => errors.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(seconds), None) if seconds < 1 => errors.push(FieldError::invalid(
                "sinceSeconds",
                &json!(seconds),
                "must be greater than 0",
            )),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_options("PodLogOptions", pod, &errors));
        }
        let since = match since_seconds {
            Some(seconds) => Some(
                now.checked_sub(SignedDuration::from_secs(seconds))
                    .unwrap_or(Timestamp::MIN),
            ),
            None => since_time,
        };
        let size =
            |value: Option<i64>| value.map(|value| usize::try_from(value).unwrap_or(usize::MAX));
        Ok(LogOptions {
            timestamps: query.flag("timestamps"),
            since,
            tail_lines: size(tail_lines),
            limit_bytes: size(limit_bytes),
        })
    }

    /// Whether the lines' times matter.
    fn needs_times(&self) -> bool {
        self.timestamps || self.since.is_some()
    }
}

/// A container's log being read: where it is, how far it was read, how much more may be
/// sent, and where the last read stopped within a line.
struct Log {
    file: ContainerLog,
    container: String,
    options: LogOptions,
    /// How many bytes of the log were read.
    read: usize,
    bytes_left: Option<usize>,
    /// Whether the next byte of the log starts a line.
    at_line_start: bool,
    /// Whether the line being read is sent (it began at or after `since`).
    keeping: bool,
}

impl Log {
    fn new(file: ContainerLog, container: String, options: LogOptions) -> Self {
        Log {
            file,
            container,
            bytes_left: options.limit_bytes,
            options,
            read: 0,
            at_line_start: true,
            keeping: true,
        }
    }

    /// What the log holds past what was read, as kubelet sends it: lines begun before
    /// `since` left out, the last `tailLines` of them the first time, each line prefixed by
    /// its time with `timestamps` (the rest of a line the last read cut is not), cut to
    /// `limitBytes` overall.
    fn read_new(&mut self, first: bool) -> Bytes {
        let text = std::fs::read(self.file.path()).unwrap_or_default();
        // Read after the text: the times of every line in it were written before it.
        let times = self.options.needs_times().then(|| self.file.times());
        let start = self.read.min(text.len());
        self.read = text.len();
        let mut lines: Vec<(Option<Timestamp>, &[u8])> = Vec::new();
        let mut offset = start;
        for segment in text[start..].split_inclusive(|byte| *byte == b'\n') {
            if self.at_line_start {
                let time = times.as_ref().map(|times| times.at(offset));
                self.keeping = match (self.options.since, time) {
                    (Some(since), Some(time)) => time >= since,
                    _ => true,
                };
                if self.keeping {
                    lines.push((time.filter(|_| self.options.timestamps), segment));
                }
            } else if self.keeping {
                lines.push((None, segment));
            }
            self.at_line_start = segment.ends_with(b"\n");
            offset += segment.len();
        }
        if first && let Some(count) = self.options.tail_lines {
            lines.drain(..lines.len().saturating_sub(count));
        }
        let mut answer = Vec::new();
        for (time, segment) in lines {
            if let Some(time) = time {
                answer.extend_from_slice(format_time(time).as_bytes());
                answer.push(b' ');
            }
            answer.extend_from_slice(segment);
        }
        if let Some(left) = self.bytes_left.as_mut() {
            answer.truncate(*left);
            *left -= answer.len();
        }
        Bytes::from(answer)
    }

    fn exhausted(&self) -> bool {
        self.bytes_left == Some(0)
    }
}

/// The next chunk of a followed log: what is there now (the first time), else what the
/// command writes next; `None` once the container has terminated and its log was sent.
async fn follow_step(
    log: &mut Log,
    app: &App,
    namespace: &str,
    name: &str,
    first: bool,
) -> Option<Bytes> {
    if first {
        return Some(log.read_new(true));
    }
    let mut shutdown = app.shutdown.clone();
    loop {
        if log.exhausted() || *shutdown.borrow() {
            return None;
        }
        // Read whether it ended before reading the file, so that nothing written just
        // before the end is missed.
        let ended = terminated(app, namespace, name, &log.container);
        let chunk = log.read_new(false);
        if !chunk.is_empty() {
            return Some(chunk);
        }
        if ended {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

/// Whether the container has terminated, or its pod is gone.
fn terminated(app: &App, namespace: &str, name: &str, container: &str) -> bool {
    let Some(pods) = find_kind("Pod") else {
        return true;
    };
    let Ok(pod) = app.cluster.get(pods, namespace, name) else {
        return true;
    };
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|status| status.get("name").and_then(Value::as_str) == Some(container))
        .any(|status| status.pointer("/state/terminated").is_some())
}

/// Checks the request's options, then the pod, and opens the log of the container it names.
fn open(app: &App, namespace: &str, name: &str, query: &Query) -> Result<Log, ApiError> {
    let options = LogOptions::parse(query, name, Timestamp::now())?;
    let pods = find_kind("Pod").ok_or_else(|| ApiError::bad_request("no pods"))?;
    let pod = app.cluster.get(pods, namespace, name)?;
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| container.get("name")?.as_str())
        .collect();
    let container = match (
        query.get("container").filter(|c| !c.is_empty()),
        containers.as_slice(),
    ) {
        (Some(container), _) if containers.contains(&container) => container.to_string(),
        (Some(container), _) => {
            return Err(ApiError::bad_request(format!(
                "container {container} is not valid for pod {name}"
            )));
        }
        (None, [only]) => (*only).to_string(),
        (None, many) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            )));
        }
    };
    if query.flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let pod_dir = app.dir.join("pods").join(namespace).join(name);
    Ok(Log::new(
        ContainerLog::new(&pod_dir, &container),
        container,
        options,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn options(query: &str) -> Result<LogOptions, ApiError> {
        LogOptions::parse(&Query::parse(query), "p", time("2026-01-01T00:01:00Z"))
    }

    fn plain() -> LogOptions {
        options("").unwrap()
    }

    /// A log of three lines written at 00:00:01, :02 and :03, the last one unfinished.
    fn written(dir: &std::path::Path) -> ContainerLog {
        let log = ContainerLog::new(dir, "c");
        std::fs::write(log.path(), "one\ntwo\nthr").unwrap();
        std::fs::write(
            log.times_path(),
            "0 2026-01-01T00:00:01Z\n4 2026-01-01T00:00:02.5Z\n8 2026-01-01T00:00:03Z\n",
        )
        .unwrap();
        log
    }

    fn read_once(options: LogOptions) -> Bytes {
        let dir = tempfile::tempdir().unwrap();
        Log::new(written(dir.path()), "c".into(), options).read_new(true)
    }

    #[test]
    fn options_are_read_and_checked_as_the_api_server_does() {
        assert_eq!(
            options("timestamps=true&sinceSeconds=30&tailLines=2&limitBytes=9").unwrap(),
            LogOptions {
                timestamps: true,
                since: Some(time("2026-01-01T00:00:30Z")),
                tail_lines: Some(2),
                limit_bytes: Some(9),
            }
        );
        assert_eq!(
            options("sinceTime=2026-01-01T01:00:00%2B01:00")
                .unwrap()
                .since,
            Some(time("2026-01-01T00:00:00Z"))
        );
        let both = options("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z").unwrap_err();
        assert_eq!((both.code, both.reason), (422, "Invalid"));
        assert_eq!(
            both.message,
            "PodLogOptions \"p\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        let zero = options("sinceSeconds=0&limitBytes=0&tailLines=-1").unwrap_err();
        assert_eq!(
            zero.message,
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0, sinceSeconds: Invalid value: 0: must be greater than 0]"
        );
        for query in ["tailLines=x", "sinceSeconds=1s", "sinceTime=yesterday"] {
            assert_eq!(options(query).unwrap_err().code, 400, "{query}");
        }
    }

    #[test]
    fn without_options_the_text_is_what_the_command_wrote() {
        assert_eq!(read_once(plain()), "one\ntwo\nthr");
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_time() {
        let options = LogOptions {
            timestamps: true,
            ..plain()
        };
        assert_eq!(
            read_once(options),
            "2026-01-01T00:00:01.000000000Z one\n\
             2026-01-01T00:00:02.500000000Z two\n\
             2026-01-01T00:00:03.000000000Z thr"
        );
    }

    #[test]
    fn since_keeps_the_lines_begun_at_or_after_it() {
        let since = |at: &str| LogOptions {
            since: Some(time(at)),
            ..plain()
        };
        assert_eq!(read_once(since("2026-01-01T00:00:02Z")), "two\nthr");
        assert_eq!(read_once(since("2026-01-01T00:00:02.5Z")), "two\nthr");
        assert_eq!(read_once(since("2026-01-01T00:00:02.6Z")), "thr");
        assert_eq!(read_once(since("2026-01-01T00:00:04Z")), "");
    }

    #[test]
    fn tail_and_limit_apply_after_since_and_count_the_prefixes() {
        assert_eq!(
            read_once(LogOptions {
                since: Some(time("2026-01-01T00:00:02Z")),
                tail_lines: Some(5),
                ..plain()
            }),
            "two\nthr"
        );
        assert_eq!(
            read_once(LogOptions {
                timestamps: true,
                tail_lines: Some(1),
                ..plain()
            }),
            "2026-01-01T00:00:03.000000000Z thr"
        );
        assert_eq!(
            read_once(LogOptions {
                timestamps: true,
                limit_bytes: Some(33),
                ..plain()
            }),
            "2026-01-01T00:00:01.000000000Z on"
        );
    }

    #[test]
    fn tails_count_lines_from_the_end() {
        let tail = |text: &str, count: usize| {
            let dir = tempfile::tempdir().unwrap();
            let log = ContainerLog::new(dir.path(), "c");
            std::fs::write(log.path(), text).unwrap();
            let options = LogOptions {
                tail_lines: Some(count),
                ..plain()
            };
            Log::new(log, "c".into(), options).read_new(true)
        };
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail("a\nb\n", 0), "");
    }

    #[test]
    fn a_followed_line_is_prefixed_once_and_kept_or_left_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = written(dir.path());
        let options = LogOptions {
            timestamps: true,
            since: Some(time("2026-01-01T00:00:02Z")),
            ..plain()
        };
        let mut followed = Log::new(log.clone(), "c".into(), options);
        assert_eq!(
            followed.read_new(true),
            "2026-01-01T00:00:02.500000000Z two\n2026-01-01T00:00:03.000000000Z thr"
        );
        std::fs::write(log.path(), "one\ntwo\nthree\nfour\n").unwrap();
        let mut times = std::fs::read_to_string(log.times_path()).unwrap();
        times.push_str("14 2026-01-01T00:00:04Z\n");
        std::fs::write(log.times_path(), times).unwrap();
        assert_eq!(
            followed.read_new(false),
            "ee\n2026-01-01T00:00:04.000000000Z four\n"
        );

        // The rest of a line begun before `since` is left out with it.
        let mut late = Log::new(
            log.clone(),
            "c".into(),
            LogOptions {
                since: Some(time("2026-01-01T00:00:04Z")),
                ..plain()
            },
        );
        std::fs::write(log.path(), "one\ntwo\nthr").unwrap();
        assert_eq!(late.read_new(true), "");
        std::fs::write(log.path(), "one\ntwo\nthree\nfour\n").unwrap();
        assert_eq!(late.read_new(false), "four\n");
    }

    #[test]
    fn limit_bytes_holds_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let log = ContainerLog::new(dir.path(), "c");
        std::fs::write(log.path(), "hello\n").unwrap();
        let options = LogOptions {
            limit_bytes: Some(8),
            ..plain()
        };
        let mut followed = Log::new(log.clone(), "c".into(), options);
        assert_eq!(followed.read_new(true), "hello\n");
        std::fs::write(log.path(), "hello\nworld\n").unwrap();
        assert_eq!(followed.read_new(false), "wo");
        assert!(followed.exhausted());
    }
}
