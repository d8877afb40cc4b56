//! `sync:` as written in a playbook, its validation when the playbook loads, and the settings
//! of one run once its templates are rendered and its paths checked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize, Serializer};
use sha2::Digest as _;

use crate::actions::{InvalidInput, StepContext};
use crate::diagnostic::ValueError;
use crate::syntax::{Count, Setting, Templated};

/// Workers `jobs: auto` starts with.
pub const AUTO_START: u32 = 4;
/// The most workers `jobs: auto` uses when `max_jobs:` is not given.
pub const DEFAULT_MAX_JOBS: u32 = 32;

/// `sync: {from, to, jobs, max_jobs, delete, bwlimit, exclude, rsync_args, verify,
/// quick_check, trust_destination}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "SyncFields")]
pub struct SyncAction {
    /// The directory to copy from.
    pub from: String,
    /// The directory to copy into (created if its parent exists).
    pub to: String,
    /// Parallel rsync workers: a number, or `auto` (the default), tuned while the copy runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Templated<Jobs>>,
    /// The most workers `jobs: auto` may use (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<Templated<Count>>,
    /// Make the destination an exact mirror: delete what is not in the source.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub delete: Templated<bool>,
    /// Total bandwidth for all workers, in rsync's syntax (`50M` = 50 MiB/s; a bare number
    /// is KiB/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<Templated<Rate>>,
    /// rsync exclude patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// More rsync options (`-H` for hard links, `-S` for sparse files, `-A`, `-X`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsync_args: Vec<String>,
    /// End with a comparison that must find no difference.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub verify: Templated<bool>,
    /// Keep the destination warm: a copy detached in a pod (`on:`) runs a catch-up pass this
    /// often after its first one, until the step that continues it (`after:`) starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Templated<Repeat>>,
    /// Decide what to copy by size and modification time only (rsync's quick check), without
    /// looking for files changed with their size and time kept (by their change time): for a
    /// destination this copy did not make, such as live homes a backup is restored into.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub quick_check: Templated<bool>,
    /// Take the destination's listings from the manifest the last pass left there instead
    /// of walking it (see [`super::manifest`]): only when nothing else writes to it.
    #[serde(default, skip_serializing_if = "Templated::is_false")]
    pub trust_destination: Templated<bool>,
    /// An earlier `sync` step whose copy this one continues: until this step has a pass of
    /// its own, what changed since the start of that step's last finished pass is copied
    /// whatever its size and time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Run the comparisons and the rsync workers inside this pod, detached from `runbook`
    /// (see [`super::remote`]); `from` and `to` are then paths in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<RunsOn>,
    /// `on: {job: ...}`: the shards run as an Indexed Job (see [`super::job`]). Written
    /// back as `on: {job: ...}`, so that the definition hash and the load-time check of
    /// template variables see it (only one of `on` and `on_job` is ever set).
    #[serde(
        rename = "on",
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_on_job"
    )]
    pub on_job: Option<RunsOnJob>,
    /// Notes recorded by this process. The engine hands an action the notes of earlier runs
    /// only; a retry within the same run (`retries:`) must also see the shards the try
    /// before it finished.
    #[serde(skip)]
    pub(super) session_notes: Mutex<Vec<serde_json::Value>>,
    /// Notes of the step this one continues that this process collected: the catch-up
    /// passes it stopped before it started (see [`super::catch_up`]).
    #[serde(skip)]
    pub(super) caught_up: Mutex<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncFields {
    from: String,
    to: String,
    jobs: Option<Templated<Jobs>>,
    max_jobs: Option<Templated<Count>>,
    #[serde(default)]
    delete: Templated<bool>,
    bwlimit: Option<Templated<Rate>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    rsync_args: Vec<String>,
    #[serde(default)]
    verify: Templated<bool>,
    #[serde(default)]
    quick_check: Templated<bool>,
    #[serde(default)]
    trust_destination: Templated<bool>,
    repeat: Option<Templated<Repeat>>,
    after: Option<String>,
    on: Option<RunsOnFields>,
}

/// `on: {pod: NAME, namespace: NS, container: C}`: where the copy runs. Values may be
/// templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsOn {
    /// The pod.
    pub pod: String,
    /// Its namespace (the kubeconfig's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its container (the only one when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsOnFields {
    pod: Option<String>,
    namespace: Option<String>,
    container: Option<String>,
    job: Option<RunsOnJob>,
}

/// `on: {job: {parallelism: N, namespace: NS, template: POD_TEMPLATE, backoff_limit: B}}`:
/// the shards of the plan run as an Indexed Job of `parallelism` pods, index `i` copying
/// shards `i`, `i + N`, ... The template's strings may be templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsOnJob {
    /// Pods, and completion indexes.
    pub parallelism: Templated<Count>,
    /// The Job's namespace (the kubeconfig's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod template (`{metadata, spec}`); the first container runs the agent.
    pub template: serde_json::Value,
    /// Failed pods before the Job fails (Kubernetes' default, 6, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<Templated<u32>>,
}

/// `on_job` as the playbook writes it: `{job: {...}}`.
fn serialize_on_job<S: serde::Serializer>(
    on_job: &Option<RunsOnJob>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct On<'a> {
        job: &'a Option<RunsOnJob>,
    }
    On { job: on_job }.serialize(serializer)
}

const JOB_HELP: &str = "write `on: {job: {parallelism: 3, namespace: NS, template: {spec: {containers: [{name: copy, image: IMAGE}]}}}}`";

const ON_HELP: &str =
    "write `on: {pod: NAME, namespace: NS, container: C}` (namespace and container are optional)";

impl RunsOnFields {
    /// The pod, or the Job.
    fn check(self) -> Result<(Option<RunsOn>, Option<RunsOnJob>), String> {
        if let Some(job) = self.job {
            if self.pod.is_some() || self.container.is_some() || self.namespace.is_some() {
                return Err(ValueError::new(
                    "`on` has both `job` and `pod`, `namespace` or `container`",
                    "give `namespace` inside `job`, and either `pod` or `job`",
                )
                .about_key("on")
                .to_string());
            }
            let containers = job.template.pointer("/spec/containers");
            if containers
                .and_then(serde_json::Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return Err(ValueError::new(
                    "`on.job.template` has no `spec.containers`",
                    JOB_HELP,
                )
                .about_key("on")
                .to_string());
            }
            if job
                .namespace
                .as_ref()
                .is_some_and(|ns| ns.trim().is_empty())
            {
                return Err(
                    ValueError::new("`namespace` in `on.job` is empty", JOB_HELP)
                        .about_key("on")
                        .to_string(),
                );
            }
            return Ok((None, Some(job)));
        }
        let pod = match self.pod {
            Some(pod) if !pod.trim().is_empty() => pod,
            Some(_) => {
                return Err(ValueError::new("`pod` in `on` is empty", ON_HELP)
                    .about_key("on")
                    .to_string());
            }
            None => {
                return Err(ValueError::new("`on` needs `pod`", ON_HELP)
                    .about_key("on")
                    .to_string());
            }
        };
        for (key, value) in [
            ("namespace", &self.namespace),
            ("container", &self.container),
        ] {
            if value.as_ref().is_some_and(|value| value.trim().is_empty()) {
                return Err(
                    ValueError::new(format!("`{key}` in `on` is empty"), ON_HELP)
                        .about_key("on")
                        .to_string(),
                );
            }
        }
        Ok((
            Some(RunsOn {
                pod,
                namespace: self.namespace,
                container: self.container,
            }),
            None,
        ))
    }
}

/// A copy of the step's settings with notes of its own: each item of a `loop:` is a copy
/// whose retries must see the shards of its own tries, not another item's.
impl Clone for SyncAction {
    fn clone(&self) -> Self {
        SyncAction {
            from: self.from.clone(),
            to: self.to.clone(),
            jobs: self.jobs.clone(),
            max_jobs: self.max_jobs.clone(),
            delete: self.delete.clone(),
            bwlimit: self.bwlimit.clone(),
            exclude: self.exclude.clone(),
            rsync_args: self.rsync_args.clone(),
            verify: self.verify.clone(),
            quick_check: self.quick_check.clone(),
            trust_destination: self.trust_destination.clone(),
            repeat: self.repeat.clone(),
            after: self.after.clone(),
            on: self.on.clone(),
            on_job: self.on_job.clone(),
            session_notes: Mutex::default(),
            caught_up: Mutex::default(),
        }
    }
}

impl TryFrom<SyncFields> for SyncAction {
    type Error = String;
    fn try_from(fields: SyncFields) -> Result<Self, String> {
        for (key, value) in [("from", &fields.from), ("to", &fields.to)] {
            if value.trim().is_empty() {
                return Err(ValueError::new(
                    "`{key}` is empty",
                    "give a directory, e.g. `/mnt/old/homes`",
                )
                .about_key(key)
                .to_string());
            }
        }
        let literal = |text: &&String| !crate::syntax::is_template(text);
        if let Err(message) = check_rsync_args(fields.rsync_args.iter().filter(literal)) {
            return Err(ValueError::new(
                message,
                "`sync` runs rsync with -a --numeric-ids and lists files itself; use `exclude`, `delete` and `bwlimit` for those",
            )
            .about_key("rsync_args")
            .to_string());
        }
        let literal_patterns: Vec<String> =
            fields.exclude.iter().filter(literal).cloned().collect();
        if let Err(message) = super::filter::ExcludeFilter::new(&literal_patterns) {
            return Err(ValueError::new(
                message,
                "write rsync patterns such as `*.tmp`, `/scratch/` or `cache/***`",
            )
            .about_key("exclude")
            .to_string());
        }
        if literal(&&fields.from)
            && literal(&&fields.to)
            && let (Some(source), Some(destination)) = (lexical(&fields.from), lexical(&fields.to))
            && let Some((key, message)) = nesting(&source, &destination, &fields.from, &fields.to)
        {
            return Err(ValueError::new(
                message,
                "give two separate directories, e.g. `from: /mnt/old/homes` and `to: /mnt/new/homes`",
            )
            .about_key(key)
            .to_string());
        }
        let literal_jobs = match &fields.jobs {
            None => Some(Jobs::Auto),
            Some(Templated::Literal(jobs)) => Some(*jobs),
            Some(Templated::Template(_)) => None,
        };
        if let (Some(jobs), Some(Templated::Literal(Count(max_jobs)))) =
            (literal_jobs, &fields.max_jobs)
            && let Err(message) = jobs.check_max(*max_jobs)
        {
            return Err(ValueError::new(message, MAX_JOBS_HELP)
                .about_key("max_jobs")
                .to_string());
        }
        let (on, on_job) = match fields.on {
            Some(on) => on.check()?,
            None => (None, None),
        };
        if let Some(repeat) = &fields.repeat {
            if on.is_none() {
                return Err(ValueError::new(
                    "`repeat:` keeps a copy detached in a pod warm, and this copy is not one",
                    "give the step `on: {pod: ..., namespace: ...}` (a copy in a Job or in runbook itself does not repeat), or leave `repeat:` out",
                )
                .about_key("repeat")
                .to_string());
            }
            if let Templated::Literal(every) = repeat {
                every.check_minimum().map_err(|message| {
                    ValueError::new(message, REPEAT_HELP)
                        .about_key("repeat")
                        .to_string()
                })?;
            }
        }
        Ok(SyncAction {
            from: fields.from,
            to: fields.to,
            jobs: fields.jobs,
            max_jobs: fields.max_jobs,
            delete: fields.delete,
            bwlimit: fields.bwlimit,
            exclude: fields.exclude,
            rsync_args: fields.rsync_args,
            verify: fields.verify,
            quick_check: fields.quick_check,
            trust_destination: fields.trust_destination,
            repeat: fields.repeat,
            after: fields.after,
            on,
            on_job,
            session_notes: Mutex::new(Vec::new()),
            caught_up: Mutex::new(Vec::new()),
        })
    }
}

/// `jobs:`: a fixed number of rsync workers, or `auto`: start at [`AUTO_START`] and tune the
/// count while the copy runs (see [`super::tuner`]). Written back as written (a number stays
/// a number), so that a step's definition hash does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// `auto`.
    Auto,
    /// A number of at least 1.
    Fixed(u32),
}

const JOBS_HELP: &str =
    "for example `jobs: 4`, or `jobs: auto` (the default) to let the copy tune its workers";
const REPEAT_HELP: &str = "for example `repeat: 30m`, or `repeat: never`";

/// `repeat:`: how often a detached copy runs a catch-up pass, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat(pub Option<std::time::Duration>);

impl Repeat {
    /// The shortest `repeat:`: a pass every few seconds would keep the servers busy for
    /// nothing. `RUNBOOK_REPEAT_MIN_SECS` lowers it, for tests.
    fn minimum() -> std::time::Duration {
        let secs = super::env_number("RUNBOOK_REPEAT_MIN_SECS").unwrap_or(60);
        std::time::Duration::from_secs(secs)
    }

    /// Refuses a repeat shorter than [`Repeat::minimum`].
    pub fn check_minimum(self) -> Result<(), String> {
        let minimum = Self::minimum();
        match self.0 {
            Some(every) if every < minimum => Err(format!(
                "`repeat: {}` is shorter than {}: a catch-up pass that often keeps the file servers busy for nothing",
                crate::syntax::HumanDuration(every),
                crate::syntax::HumanDuration(minimum)
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Repeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(every) => crate::syntax::HumanDuration(every).fmt(f),
            None => f.write_str("never"),
        }
    }
}

impl Serialize for Repeat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Setting for Repeat {
    const EXPECTED: &'static str = "a duration such as 30m or 1h, or never";

    fn from_number(seconds: u64) -> Result<Self, ValueError> {
        Ok(Repeat(
            (seconds > 0).then(|| std::time::Duration::from_secs(seconds)),
        ))
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new("`{key}` cannot be negative", REPEAT_HELP))
    }

    fn from_text(text: &str) -> Option<Self> {
        match text.trim() {
            "never" | "" => Some(Repeat(None)),
            text => crate::syntax::HumanDuration::parse(text)
                .ok()
                .map(|every| Repeat(Some(every.0))),
        }
    }

    fn not_a_value(text: &str) -> ValueError {
        ValueError::new(
            format!("`{{key}}` must be a duration such as 30m, or never, not `{text}`"),
            REPEAT_HELP,
        )
    }
}

const MAX_JOBS_HELP: &str = "for example `max_jobs: 32` (the default); `jobs: auto` starts at 4 workers and never goes above `max_jobs`";

impl fmt::Display for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jobs::Auto => f.write_str("auto"),
            Jobs::Fixed(count) => count.fmt(f),
        }
    }
}

impl Serialize for Jobs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Jobs::Auto => serializer.serialize_str("auto"),
            Jobs::Fixed(count) => serializer.serialize_u32(*count),
        }
    }
}

impl Setting for Jobs {
    const EXPECTED: &'static str = "a whole number of at least 1 or `auto`";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        match u32::try_from(number) {
            Ok(0) => Err(ValueError::new(
                "`{key}` must be at least 1 (or `auto`)",
                JOBS_HELP,
            )),
            Ok(number) => Ok(Jobs::Fixed(number)),
            Err(_) => Err(ValueError::new("`{key}` is too big", JOBS_HELP)),
        }
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new(
            "`{key}` must be at least 1 (or `auto`)",
            JOBS_HELP,
        ))
    }

    fn from_text(text: &str) -> Option<Self> {
        match text.trim() {
            "auto" => Some(Jobs::Auto),
            number => Count::from_text(number).map(|count| Jobs::Fixed(count.0)),
        }
    }

    fn not_a_value(text: &str) -> ValueError {
        match text.trim().parse::<i64>() {
            Ok(number) if number < 1 => {
                ValueError::new("`{key}` must be at least 1 (or `auto`)", JOBS_HELP)
            }
            Ok(_) => ValueError::new("`{key}` is too big", JOBS_HELP),
            Err(_) => ValueError::new(
                format!("`{{key}}` must be a whole number of at least 1 or `auto`, not `{text}`"),
                JOBS_HELP,
            ),
        }
    }
}

impl Jobs {
    /// Whether `max_jobs` suits these jobs: `auto` starts at 4, so it needs at least 4; a
    /// fixed count must not be above it.
    fn check_max(self, max_jobs: u32) -> Result<(), String> {
        match self {
            Jobs::Auto if max_jobs < AUTO_START => Err(format!(
                "`max_jobs` is {max_jobs}, below the {AUTO_START} workers `jobs: auto` starts with"
            )),
            Jobs::Fixed(jobs) if max_jobs < jobs => {
                Err(format!("`max_jobs` is {max_jobs}, below `jobs` ({jobs})"))
            }
            _ => Ok(()),
        }
    }
}

/// A bandwidth in rsync's syntax (`50M`), as bytes per second and the text as written
/// (which a step's definition keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second.
    pub bytes: u64,
    text: String,
}

const RATE_HELP: &str =
    "write a rate such as `50M` (MiB/s), `800K` or `1G`; a bare number is KiB/s, as in rsync";

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl Setting for Rate {
    const EXPECTED: &'static str = "a rate such as 50M, 800K or 1G";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        Self::read(&number.to_string())
    }

    fn from_negative(number: i64) -> Result<Self, ValueError> {
        Self::read(&number.to_string())
    }

    fn from_float(number: f64) -> Result<Self, ValueError> {
        Self::read(&number.to_string())
    }

    fn from_text(text: &str) -> Option<Self> {
        Self::read(text).ok()
    }

    fn not_a_value(text: &str) -> ValueError {
        Self::read(text)
            .err()
            .unwrap_or_else(|| ValueError::new(format!("`{text}` is not a rate"), RATE_HELP))
    }
}

impl Rate {
    fn read(text: &str) -> Result<Self, ValueError> {
        parse_rate(text)
            .map(|bytes| Rate {
                bytes,
                text: text.to_string(),
            })
            .map_err(|message| ValueError::new(message, RATE_HELP))
    }
}

/// Parses rsync's `--bwlimit` syntax into bytes per second: `1024` (KiB/s), `50M`, `50MiB`,
/// `50MB` (10^6), `1.5G`, with an optional `/s`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed);
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate"))?;
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "b" => 1.0,
        _ => return Err(format!("`{text}` has an unknown unit `{unit}`")),
    };
    let bytes = number * multiplier;
    if !(0.0..=1e18).contains(&bytes) {
        return Err(format!("`{text}` is not a usable rate"));
    }
    Ok(bytes as u64)
}

/// rsync options that would defeat what `sync` does itself. An error says which and why.
pub fn check_rsync_args<'a>(args: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
    const LONG: &[(&str, &str)] = &[
        (
            "--delete",
            "deletions are `delete: true`, which also mirrors top-level entries",
        ),
        ("--del", "deletions are `delete: true`"),
        ("--remove-source-files", "the source is never modified"),
        (
            "--files-from",
            "`sync` lists the files of each shard itself",
        ),
        ("--from0", "`sync` lists the files of each shard itself"),
        ("--dry-run", "use `runbook plan` to preview a copy"),
        ("--list-only", "use `runbook plan` to preview a copy"),
        ("--recursive", "each shard decides what is recursive"),
        ("--no-recursive", "each shard decides what is recursive"),
        ("--relative", "paths are relative to `from` already"),
        ("--no-relative", "paths are relative to `from` already"),
        (
            "--exclude",
            "use `exclude:`, so the comparisons skip the same files",
        ),
        (
            "--include",
            "use `exclude:`, so the comparisons skip the same files",
        ),
        (
            "--filter",
            "use `exclude:`, so the comparisons skip the same files",
        ),
        (
            "--out-format",
            "`sync` reads rsync's output for its progress",
        ),
        ("--info", "`sync` reads rsync's output for its progress"),
        ("--progress", "`sync` reports progress itself"),
        ("--bwlimit", "use `bwlimit:`, the total for all workers"),
        ("--rsh", "`from` and `to` are local directories"),
        ("--server", "`from` and `to` are local directories"),
        ("--daemon", "`from` and `to` are local directories"),
    ];
    // Short options: -r, -R, -n, -0, -f, -F, -e (and -P for --progress).
    const SHORT: &[(char, &str)] = &[
        ('r', "each shard decides what is recursive"),
        ('R', "paths are relative to `from` already"),
        ('n', "use `runbook plan` to preview a copy"),
        ('0', "`sync` lists the files of each shard itself"),
        (
            'f',
            "use `exclude:`, so the comparisons skip the same files",
        ),
        (
            'F',
            "use `exclude:`, so the comparisons skip the same files",
        ),
        ('e', "`from` and `to` are local directories"),
        ('P', "`sync` reports progress itself"),
    ];
    for arg in args {
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            let name = format!("--{name}");
            if let Some((_, why)) = LONG
                .iter()
                .find(|(option, _)| name == *option || name.starts_with(&format!("{option}-")))
            {
                return Err(format!("`{arg}` is not allowed in `rsync_args`: {why}"));
            }
        } else if let Some(short) = arg.strip_prefix('-') {
            for c in short.chars() {
                if let Some((_, why)) = SHORT.iter().find(|(option, _)| *option == c) {
                    return Err(format!(
                        "`{arg}` is not allowed in `rsync_args` (-{c}): {why}"
                    ));
                }
            }
        } else {
            return Err(format!(
                "`{arg}` in `rsync_args` is not an option; `from` and `to` say what to copy"
            ));
        }
    }
    Ok(())
}

/// Whether the rsync options ask for hard links to be kept.
fn wants_hard_links(args: &[String]) -> bool {
    args.iter().any(|arg| {
        arg == "--hard-links"
            || (arg.starts_with('-')
                && !arg.starts_with("--")
                && arg[1..].chars().all(|c| c.is_ascii_alphanumeric())
                && arg.contains('H'))
    })
}

/// The settings of one run of the step, rendered and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The source directory.
    pub from: PathBuf,
    /// The destination directory.
    pub to: PathBuf,
    /// Workers: the fixed count, or the count `jobs: auto` starts with.
    pub jobs: usize,
    /// With `jobs: auto`, the most workers the copy may use; `None` for a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<usize>,
    /// Mirror deletions.
    pub delete: bool,
    /// Bytes per second for all workers.
    pub bwlimit: Option<u64>,
    /// Exclude patterns.
    pub exclude: Vec<String>,
    /// Extra rsync options.
    pub rsync_args: Vec<String>,
    /// Hard links are kept (`-H` in `rsync_args`).
    pub hard_links: bool,
    /// Verify at the end.
    pub verify: bool,
    /// Size and modification time only decide what is copied (`quick_check`).
    #[serde(default)]
    pub quick_check: bool,
    /// The destination's listings come from the last pass's manifest (`trust_destination`).
    #[serde(default)]
    pub trust_destination: bool,
}

#[cfg(test)]
impl Settings {
    /// A copy from `from` to `to` with 4 jobs and nothing else asked, for tests.
    pub fn for_test(from: &str, to: &str) -> Self {
        Settings {
            from: from.into(),
            to: to.into(),
            jobs: 4,
            max_jobs: None,
            delete: false,
            bwlimit: None,
            exclude: Vec::new(),
            rsync_args: Vec::new(),
            hard_links: false,
            verify: false,
            quick_check: false,
            trust_destination: false,
        }
    }
}

impl SyncAction {
    /// What a plan says of the templated options it does not show otherwise, rendered
    /// (`` `delete: {{ mirror }}` is true``).
    pub fn rendered_notes(&self, cx: &StepContext<'_>) -> anyhow::Result<Vec<String>> {
        fn note<T: Setting>(
            cx: &StepContext<'_>,
            key: &str,
            setting: Option<&Templated<T>>,
        ) -> anyhow::Result<Option<String>> {
            Ok(match setting {
                Some(setting) => setting.rendered_note(key, &cx.setting(key, setting)?),
                None => None,
            })
        }
        // `jobs` and `on.job.parallelism` are in the plan's own words already ("with 4
        // rsync workers", "an Indexed Job of 3 pods").
        let on_job = self.on_job.as_ref();
        Ok([
            note(cx, "delete", Some(&self.delete))?,
            note(cx, "bwlimit", self.bwlimit.as_ref())?,
            note(cx, "verify", Some(&self.verify))?,
            note(cx, "quick_check", Some(&self.quick_check))?,
            note(cx, "trust_destination", Some(&self.trust_destination))?,
            note(
                cx,
                "on.job.backoff_limit",
                on_job.and_then(|job| job.backoff_limit.as_ref()),
            )?,
        ]
        .into_iter()
        .flatten()
        .collect())
    }

    /// `jobs` and `max_jobs` rendered and checked: the workers to start with, and with
    /// `jobs: auto` the most it may use.
    fn jobs(&self, cx: &StepContext<'_>) -> anyhow::Result<(usize, Option<usize>)> {
        let jobs = cx
            .optional_setting("jobs", self.jobs.as_ref())?
            .unwrap_or(Jobs::Auto);
        let max_jobs = cx
            .optional_setting("max_jobs", self.max_jobs.as_ref())?
            .map_or(DEFAULT_MAX_JOBS, |count| count.0);
        jobs.check_max(max_jobs).map_err(|message| {
            InvalidInput(format!("step `{}`: {message}; {MAX_JOBS_HELP}", cx.step_id))
        })?;
        Ok(match jobs {
            Jobs::Auto => (AUTO_START as usize, Some(max_jobs as usize)),
            Jobs::Fixed(count) => (count as usize, None),
        })
    }

    /// Renders the templates and checks the values (not the paths).
    pub fn settings(&self, cx: &StepContext<'_>) -> anyhow::Result<Settings> {
        let path = |key: &str, template: &str| -> anyhow::Result<PathBuf> {
            let text = cx.render(template)?;
            if text.trim().is_empty() {
                return Err(InvalidInput(format!(
                    "`{key}`: `{template}` renders to an empty path"
                ))
                .into());
            }
            Ok(PathBuf::from(text))
        };
        let (jobs, max_jobs) = self.jobs(cx)?;
        let bwlimit = cx
            .optional_setting("bwlimit", self.bwlimit.as_ref())?
            .map(|rate| rate.bytes)
            .filter(|&rate| rate > 0);
        let exclude = self
            .exclude
            .iter()
            .map(|pattern| cx.render(pattern))
            .collect::<anyhow::Result<Vec<_>>>()?;
        super::filter::ExcludeFilter::new(&exclude).map_err(InvalidInput)?;
        let rsync_args = self
            .rsync_args
            .iter()
            .map(|arg| cx.render(arg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        check_rsync_args(&rsync_args).map_err(InvalidInput)?;
        Ok(Settings {
            from: path("from", &self.from)?,
            to: path("to", &self.to)?,
            jobs,
            max_jobs,
            delete: cx.setting("delete", &self.delete)?,
            bwlimit,
            hard_links: wants_hard_links(&rsync_args),
            exclude,
            rsync_args,
            verify: cx.setting("verify", &self.verify)?,
            quick_check: cx.setting("quick_check", &self.quick_check)?,
            trust_destination: cx.setting("trust_destination", &self.trust_destination)?,
        })
    }
}

impl Settings {
    /// Checks the paths: the source is a directory; the destination is a directory or can
    /// be created (its parent exists); neither is inside the other. Returns whether the
    /// destination exists.
    pub fn check_paths(&self) -> Result<bool, InvalidInput> {
        let from = &self.from;
        match std::fs::metadata(from) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(InvalidInput(format!(
                    "`from`: the source {} is not a directory",
                    from.display()
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(InvalidInput(format!(
                    "`from`: the source {} does not exist",
                    from.display()
                )));
            }
            Err(error) => {
                return Err(InvalidInput(format!(
                    "`from`: cannot read the source {}: {error}",
                    from.display()
                )));
            }
        }
        let source = std::fs::canonicalize(from).map_err(|error| {
            InvalidInput(format!(
                "`from`: cannot resolve the source {}: {error}",
                from.display()
            ))
        })?;
        let to = &self.to;
        let (destination, exists) = match std::fs::metadata(to) {
            Ok(meta) if meta.is_dir() => (
                std::fs::canonicalize(to).map_err(|error| {
                    InvalidInput(format!(
                        "`to`: cannot resolve the destination {}: {error}",
                        to.display()
                    ))
                })?,
                true,
            ),
            Ok(_) => {
                return Err(InvalidInput(format!(
                    "`to`: the destination {} exists and is not a directory",
                    to.display()
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (parent_of(to), to.file_name()) else {
                    return Err(InvalidInput(format!(
                        "`to`: the destination {} cannot be created",
                        to.display()
                    )));
                };
                let parent = std::fs::canonicalize(&parent).map_err(|_| {
                    InvalidInput(format!(
                        "`to`: the destination {} does not exist, nor does its parent {}; create the parent first",
                        to.display(),
                        parent.display()
                    ))
                })?;
                (parent.join(name), false)
            }
            Err(error) => {
                return Err(InvalidInput(format!(
                    "`to`: cannot read the destination {}: {error}",
                    to.display()
                )));
            }
        };
        if let Some((_, message)) = nesting(&source, &destination, from.display(), to.display()) {
            return Err(InvalidInput(format!("`from` and `to`: {message}")));
        }
        Ok(exists)
    }

    /// A hash of what a plan depends on: a resumed pass must have been planned with these.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::json!({
            "from": self.from.to_string_lossy(),
            "to": self.to.to_string_lossy(),
            "delete": self.delete,
            "exclude": self.exclude,
            "rsync_args": self.rsync_args,
        })
        .to_string();
        let digest = sha2::Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The most workers the copy may run at once: `max_jobs` with `jobs: auto`.
    pub fn most_jobs(&self) -> usize {
        self.max_jobs.unwrap_or(self.jobs).max(1)
    }

    /// The workers as the pool takes them: a fixed count, or tuned from 4 to `max_jobs`.
    pub fn concurrency(&self) -> super::pool::Concurrency {
        match self.max_jobs {
            Some(max) => super::pool::Concurrency::Auto {
                start: self.jobs.min(max),
                max,
            },
            None => super::pool::Concurrency::Fixed(self.jobs),
        }
    }

    /// `4 rsync workers`, or `4 to 32 rsync workers (jobs: auto)`.
    pub fn describe_workers(&self) -> String {
        match self.max_jobs {
            Some(max) => format!("{} to {max} rsync workers (jobs: auto)", self.jobs),
            None => format!(
                "{} rsync worker{}",
                self.jobs,
                if self.jobs == 1 { "" } else { "s" }
            ),
        }
    }

    /// The bandwidth of each worker, in KiB/s for `--bwlimit` (at least 1): the total
    /// shared by the most workers that may run, so that a tuned count never goes over it.
    pub fn worker_bwlimit_kib(&self) -> Option<u64> {
        self.bwlimit
            .map(|rate| (rate / 1024 / self.most_jobs() as u64).max(1))
    }
}

/// Why two directories, resolved the same way, cannot be a copy's source and destination:
/// the same directory, or one inside the other; with the key to point at. The run checks
/// the canonical paths; the loader checks literal paths as written ([`lexical`]), so that a
/// playbook that could never copy is refused before any step runs.
fn nesting(
    source: &Path,
    destination: &Path,
    from: impl fmt::Display,
    to: impl fmt::Display,
) -> Option<(&'static str, String)> {
    if destination == source {
        return Some((
            "to",
            format!(
                "the source and the destination are the same directory ({})",
                source.display()
            ),
        ));
    }
    if destination.starts_with(source) {
        return Some((
            "to",
            format!("the destination {to} is inside the source {from}: the copy would copy itself"),
        ));
    }
    if source.starts_with(destination) {
        return Some((
            "from",
            format!(
                "the source {from} is inside the destination {to}: a mirror would delete or overwrite it"
            ),
        ));
    }
    None
}

/// A literal path with `.` components and trailing slashes dropped, to compare two paths
/// as written. None when it has `..` (through a symlink, `a/link/..` is not `a`): only the
/// run, on the real files, can tell then.
fn lexical(path: &str) -> Option<PathBuf> {
    use std::path::Component;
    let mut resolved = PathBuf::new();
    for component in Path::new(path.trim()).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => return None,
            other => resolved.push(other),
        }
    }
    Some(resolved)
}

/// The parent of a path, with `.` for a relative name without one.
fn parent_of(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(parent) => Some(parent.to_path_buf()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_rsync_syntax() {
        assert_eq!(parse_rate("1024"), Ok(1024 * 1024));
        assert_eq!(parse_rate("50M"), Ok(50 << 20));
        assert_eq!(parse_rate("50MB"), Ok(50_000_000));
        assert_eq!(parse_rate("1.5G/s"), Ok(1_610_612_736));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5X").is_err());
    }

    #[test]
    fn rates_are_read_from_yaml_and_from_rendered_text() {
        let read = |yaml: &str| -> Result<Templated<Rate>, String> {
            serde_saphyr::from_str(yaml).map_err(|error| error.to_string())
        };
        let bytes = |yaml: &str| match read(yaml) {
            Ok(Templated::Literal(rate)) => Some(rate.bytes),
            _ => None,
        };
        assert_eq!(bytes("50M"), Some(50 << 20));
        assert_eq!(bytes("1024"), Some(1024 * 1024));
        assert_eq!(bytes("1.5"), Some(1536));
        assert_eq!(bytes("'800K'"), Some(800 * 1024));
        assert_eq!(
            read("'{{ bwlimit }}'"),
            Ok(Templated::Template("{{ bwlimit }}".into()))
        );
        assert!(read("fast").unwrap_err().contains("is not a rate"));
        assert!(read("-5").unwrap_err().contains("is not a rate"));
        assert!(read("5X").unwrap_err().contains("unknown unit"));
        assert!(read("true").is_err());
        assert_eq!(
            Rate::from_text("64M").map(|rate| rate.bytes),
            Some(64 << 20)
        );
        assert_eq!(Rate::from_text("lots"), None);
        // Written back as written, so that a step's definition hash does not change.
        let rate = Rate::from_text("64M").expect("a rate");
        assert_eq!(rate.to_string(), "64M");
        assert_eq!(
            serde_json::to_value(&rate).ok(),
            Some(serde_json::json!("64M"))
        );
    }

    /// A step's definition hash is of the step written back: options read as `Templated`
    /// are written as the plain types before them were, so journals of earlier versions
    /// still match.
    #[test]
    fn options_are_written_back_as_they_were_before_they_could_be_templates() {
        let action: SyncAction = serde_saphyr::from_str(
            "{from: a, to: b, jobs: 2, bwlimit: 1024, delete: false, verify: true}",
        )
        .expect("a sync step");
        assert_eq!(
            serde_json::to_value(&action).ok(),
            Some(serde_json::json!({
                "from": "a", "to": "b", "jobs": 2, "bwlimit": "1024", "verify": true
            }))
        );
        let templated: SyncAction =
            serde_saphyr::from_str("{from: a, to: b, delete: '{{ mirror }}'}").expect("a step");
        assert_eq!(
            serde_json::to_value(&templated).ok(),
            Some(serde_json::json!({"from": "a", "to": "b", "delete": "{{ mirror }}"}))
        );
    }

    #[test]
    fn jobs_is_a_count_or_auto_and_max_jobs_must_leave_room_for_it() {
        let read = |yaml: &str| -> Result<Templated<Jobs>, String> {
            serde_saphyr::from_str(yaml).map_err(|error| error.to_string())
        };
        assert_eq!(read("auto"), Ok(Templated::Literal(Jobs::Auto)));
        assert_eq!(read("4"), Ok(Templated::Literal(Jobs::Fixed(4))));
        assert_eq!(read("'2'"), Ok(Templated::Literal(Jobs::Fixed(2))));
        assert_eq!(read("'{{ n }}'"), Ok(Templated::Template("{{ n }}".into())));
        for bad in ["0", "-1"] {
            let error = read(bad).unwrap_err();
            assert!(error.contains("must be at least 1 (or `auto`)"), "{error}");
        }
        let error = read("many").unwrap_err();
        assert!(
            error.contains("at least 1 or `auto`, not `many`"),
            "{error}"
        );
        assert_eq!(Jobs::from_text(" auto\n"), Some(Jobs::Auto));
        assert_eq!(Jobs::from_text("0"), None);
        // Written back as written: a number stays a number.
        assert_eq!(
            serde_json::to_value(Jobs::Fixed(2)).ok(),
            Some(serde_json::json!(2))
        );
        assert_eq!(
            serde_json::to_value(Jobs::Auto).ok(),
            Some(serde_json::json!("auto"))
        );
        let load = |yaml: &str| serde_saphyr::from_str::<SyncAction>(yaml).map(|_| ());
        assert!(load("{from: a, to: b, max_jobs: 4}").is_ok());
        assert!(load("{from: a, to: b, jobs: 2, max_jobs: 2}").is_ok());
        assert!(load("{from: a, to: b, jobs: auto, max_jobs: '{{ n }}'}").is_ok());
        for (yaml, says) in [
            ("{from: a, to: b, max_jobs: 2}", "below the 4 workers"),
            (
                "{from: a, to: b, jobs: auto, max_jobs: 3}",
                "below the 4 workers",
            ),
            ("{from: a, to: b, jobs: 8, max_jobs: 4}", "below `jobs` (8)"),
            ("{from: a, to: b, max_jobs: 0}", "must be at least 1"),
            ("{from: a, to: b, max_jobs: lots}", "not `lots`"),
        ] {
            let error = load(yaml).unwrap_err().to_string();
            assert!(error.contains(says), "{yaml}: {error}");
        }
    }

    #[test]
    fn auto_starts_at_four_and_shares_the_bandwidth_among_max_jobs() {
        let mut settings = Settings::for_test("/a", "/b");
        settings.max_jobs = Some(32);
        settings.bwlimit = Some(64 << 20);
        assert_eq!(
            settings.concurrency(),
            super::super::pool::Concurrency::Auto { start: 4, max: 32 }
        );
        assert_eq!(
            settings.describe_workers(),
            "4 to 32 rsync workers (jobs: auto)"
        );
        assert_eq!(settings.worker_bwlimit_kib(), Some(2048));
        settings.max_jobs = None;
        settings.jobs = 1;
        assert_eq!(settings.describe_workers(), "1 rsync worker");
        assert_eq!(settings.worker_bwlimit_kib(), Some(65536));
    }

    #[test]
    fn options_that_fight_the_action_are_refused() {
        let check = |args: &[&str]| {
            check_rsync_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        };
        assert!(check(&["-H", "-S", "--sparse", "-AX", "--inplace"]).is_ok());
        assert!(check(&["--delete"]).is_err());
        assert!(check(&["--delete-after"]).is_err());
        assert!(check(&["--remove-source-files"]).is_err());
        assert!(check(&["-avr"]).is_err());
        assert!(check(&["--exclude=*.tmp"]).is_err());
        assert!(check(&["/etc"]).is_err());
    }

    #[test]
    fn hard_links_are_asked_by_h() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(wants_hard_links(&args(&["-H"])));
        assert!(wants_hard_links(&args(&["-aHS"])));
        assert!(wants_hard_links(&args(&["--hard-links"])));
        assert!(!wants_hard_links(&args(&["-S", "--chmod=H"])));
    }

    #[test]
    fn literal_paths_are_compared_as_written_without_guessing_at_dot_dot() {
        assert_eq!(lexical("./homes/./a/"), Some(PathBuf::from("homes/a")));
        assert_eq!(lexical("/srv//homes/"), Some(PathBuf::from("/srv/homes")));
        assert_eq!(lexical("/srv/link/../homes"), None);
        let inside = |from: &str, to: &str| {
            nesting(&lexical(from).unwrap(), &lexical(to).unwrap(), from, to).map(|(key, _)| key)
        };
        assert_eq!(inside("/srv/homes/staging", "/srv/homes/"), Some("from"));
        assert_eq!(inside("homes", "./homes/backup"), Some("to"));
        assert_eq!(inside("/srv/homes", "/srv/homes2"), None);
        assert_eq!(inside("/srv/homes", "srv/homes/x"), None);
    }
}
