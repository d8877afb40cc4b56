//! `sync`: a parallel, sharded rsync of a directory tree, with progress, retries, resume and
//! verification.
//!
//! A pass: compare the two trees by metadata with a concurrent walk ([`compare`]); plan
//! shards of what differs, balanced by bytes and files ([`planner`]); journal the plan;
//! delete what is only at the destination (with `delete: true`); run `jobs` rsync workers
//! over the shards, biggest first, journaling each finished one ([`pool`]); redo hard links
//! across shards; set the attributes of the directories the shards shared; journal the end;
//! with `verify: true`, compare again and fail on any difference. A resumed run continues
//! the journaled plan without redoing its finished shards.
//!
//! Where the copy runs: here; `on: {pod: ...}` in a pod, detached ([`remote`]); or
//! `on: {job: ...}` here but for the shards, which an Indexed Job copies ([`job`]).

mod agent;
mod compare;
mod detached;
mod filter;
mod job;
mod pass;
mod pass_reporter;
mod planner;
mod pod;
mod pool;
mod progress;
mod remote;
mod rsync;
mod spec;
mod walker;
mod watch;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;

pub use agent::{AgentCommand, run_command as run_agent_command};
pub use detached::{DetachedCopy, LiveCopy, detached_copies};
pub use spec::SyncAction;

use super::{Action, Check, InvalidInput, Outcome, Preview, StepContext};
use compare::{ChangedSince, CompareOptions, Comparison};
use pass::{Ledger, Note, PassRecord, RelPath};
use pass_reporter::{PassReporter, StepReporter};
use planner::{PlannerConfig, ShardPlan};
use pool::Task;
use progress::{Board, bytes};
use rsync::Transfer;
use spec::Settings;

/// Differences listed when `verify` fails, and in plans.
const LISTED: usize = 20;
/// Allowance for the file servers' clocks against ours when comparing change times with
/// the start of the previous pass.
const CLOCK_MARGIN_SECS: i64 = 1;
/// How often a line says how far a comparison has got.
const WALK_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Raises a flag when dropped, so that the walking threads stop when the step is.
struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    fn new() -> Self {
        CancelOnDrop(Arc::new(AtomicBool::new(false)))
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl SyncAction {
    /// The notes of earlier runs and of this process.
    fn notes(&self, cx: &StepContext<'_>) -> Vec<serde_json::Value> {
        let mut notes = cx.notes.to_vec();
        if let Ok(session) = self.session_notes.lock() {
            notes.extend(session.iter().cloned());
        }
        notes
    }

    /// The ledger of the step this one continues (`after:`).
    fn continued(&self, cx: &StepContext<'_>) -> Option<Ledger> {
        self.after
            .as_deref()
            .map(|step| Ledger::read(cx.notes_of(step)))
    }

    fn note(&self, cx: &StepContext<'_>, note: &Note) -> anyhow::Result<()> {
        let value = serde_json::to_value(note)?;
        cx.record_note(value.clone())?;
        if cx.note_sink.is_some()
            && let Ok(mut session) = self.session_notes.lock()
        {
            session.push(value);
        }
        Ok(())
    }
}

/// Compares the trees on blocking threads, saying every few seconds how far it got.
async fn compare_trees(
    reporter: &dyn PassReporter,
    settings: &Settings,
    changed_since: ChangedSince,
    cancel: &CancelOnDrop,
) -> anyhow::Result<Comparison> {
    let options = CompareOptions {
        delete: settings.delete,
        hard_links: settings.hard_links,
        // Only root can give files away; as another user rsync keeps its own ids.
        // SAFETY: geteuid cannot fail and has no side effects.
        owners: unsafe { libc::geteuid() } == 0,
        changed_since,
        max_differences: LISTED,
    };
    let filter = filter::ExcludeFilter::new(&settings.exclude).map_err(InvalidInput)?;
    let counters = Arc::new(walker::WalkCounters::default());
    let (from, to, flag) = (settings.from.clone(), settings.to.clone(), cancel.0.clone());
    let walk_counters = counters.clone();
    let walk = tokio::task::spawn_blocking(move || {
        compare::compare(
            &from,
            &to,
            &filter,
            &options,
            walker::WALK_THREADS,
            &flag,
            &walk_counters,
        )
    });
    let report = async {
        let mut interval = tokio::time::interval(WALK_REPORT_EVERY);
        interval.tick().await;
        loop {
            interval.tick().await;
            reporter.line(&format!(
                "comparing: {} directories, {} entries so far",
                counters.dirs.load(Ordering::Relaxed),
                counters.entries.load(Ordering::Relaxed)
            ));
        }
    };
    let joined = tokio::select! {
        joined = walk => joined,
        () = report => unreachable!("the report loop never ends"),
    };
    Ok(joined.context("the comparison thread panicked")??)
}

/// `copy 1,234 entries (5.6 GiB) in 16 shards ...`.
fn describe_plan(
    settings: &Settings,
    plan: &ShardPlan,
    deletions: usize,
    forced: u64,
    hard_links: usize,
) -> String {
    if plan.shards.is_empty() && plan.dirs.is_empty() && deletions == 0 && hard_links == 0 {
        return format!(
            "nothing to copy: {} matches {}",
            settings.to.display(),
            settings.from.display()
        );
    }
    let mut text = format!(
        "copy {} entries ({}) from {} to {} in {} shard{} with {} rsync worker{}",
        plan.total_files,
        bytes(plan.total_bytes),
        settings.from.display(),
        settings.to.display(),
        plan.shards.len(),
        if plan.shards.len() == 1 { "" } else { "s" },
        settings.jobs,
        if settings.jobs == 1 { "" } else { "s" },
    );
    if !plan.dirs.is_empty() {
        text.push_str(&format!(
            "; set the attributes of {} director{}",
            plan.dirs.len(),
            if plan.dirs.len() == 1 { "y" } else { "ies" }
        ));
    }
    if deletions > 0 {
        text.push_str(&format!(
            "; delete {deletions} entr{} found only in the destination",
            if deletions == 1 { "y" } else { "ies" }
        ));
    }
    if hard_links > 0 {
        text.push_str(&format!("; link {hard_links} hard-linked files together"));
    }
    if forced > 0 {
        text.push_str(&format!(
            "; {forced} of the files changed since the previous pass without a new size or time"
        ));
    }
    text
}

/// Deletes entries (files, links or whole directories) below `root`.
async fn delete_entries(root: &Path, entries: &[RelPath]) -> anyhow::Result<u64> {
    let root = root.to_path_buf();
    let entries: Vec<Vec<u8>> = entries.iter().map(|path| path.0.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let mut deleted = 0;
        for entry in &entries {
            let path = walker::absolute(&root, entry);
            let result = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => deleted += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(anyhow::anyhow!("cannot delete {}: {error}", path.display()));
                }
            }
        }
        Ok(deleted)
    })
    .await
    .context("the deleting thread panicked")?
}

/// Splits paths into up to `jobs` tasks of at least a few hundred.
fn chunked(label: &str, paths: Vec<Vec<u8>>, jobs: usize) -> Vec<Task> {
    if paths.is_empty() {
        return Vec::new();
    }
    let chunks = paths.len().div_ceil(500).clamp(1, jobs.max(1));
    let size = paths.len().div_ceil(chunks);
    paths
        .chunks(size)
        .map(|chunk| Task {
            label: label.to_string(),
            entries: chunk.to_vec(),
            recursive: false,
            ignore_times: false,
            fresh: false,
            root: false,
            bytes: 0,
            files: chunk.len() as u64,
            shard: None,
        })
        .collect()
}

/// Runs helper tasks (directories, hard links) and fails on the first failure.
async fn run_helpers(
    reporter: &dyn PassReporter,
    tasks: Vec<Task>,
    jobs: usize,
    transfer: &Transfer,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let board = Board::new(0, 0, tasks.len(), jobs);
    let warn = |message: &str| reporter.warn(message);
    let outcome = pool::run(tasks, jobs, transfer, &board, &|_| Ok(()), &warn).await?;
    warnings.extend(outcome.warnings);
    if let Some(stopped) = outcome.stopped {
        anyhow::bail!("the copy stopped: {stopped}");
    }
    if let Some(first) = outcome.failures.first() {
        anyhow::bail!("{first}");
    }
    Ok(())
}

#[async_trait::async_trait]
impl Action for SyncAction {
    fn step_references(&self) -> Vec<(&'static str, &str)> {
        self.after
            .iter()
            .map(|step| ("after", step.as_str()))
            .collect()
    }

    fn uses_cluster(&self) -> bool {
        self.on.is_some() || self.on_job.is_some()
    }

    async fn check(&self, _cx: &StepContext<'_>) -> anyhow::Result<Check> {
        // The copy is incremental: running it again copies only what differs.
        Ok(Check::Pending)
    }

    async fn plan(&self, cx: &StepContext<'_>) -> anyhow::Result<Preview> {
        let settings = self.settings(cx)?;
        let mut preview = match &self.on {
            Some(on) => remote::preview(self, cx, &settings, on)?,
            None => self.local_preview(cx, &settings).await?,
        };
        if let Some(on) = &self.on_job {
            let placement = job::JobPlacement::render(on, cx)?;
            preview.summary = format!(
                "{}; the shards run as {}",
                preview.summary,
                placement.describe()
            );
        }
        let notes = self.rendered_notes(cx)?;
        if !notes.is_empty() {
            preview.summary = format!("{} ({})", preview.summary, notes.join(", "));
        }
        // A final copy planned before the copy it continues has run: what it would copy
        // now is what that copy is about to copy.
        if let Some(after) = &self.after
            && self
                .continued(cx)
                .is_some_and(|ledger| ledger.previous_start().is_none())
        {
            preview.summary = format!(
                "{} (as the trees are now: `{after}`, which this copy continues, has not finished a pass yet, and the copy left for this step then is what changed after it)",
                preview.summary
            );
        }
        Ok(preview)
    }

    async fn apply(&self, cx: &StepContext<'_>) -> anyhow::Result<Outcome> {
        let settings = self.settings(cx)?;
        let notes = self.notes(cx);
        if self.on.is_some() {
            return remote::apply(self, cx, settings, notes).await;
        }
        let ledger = Ledger::read(&notes);
        let continued = self.continued(cx);
        let copier = match &self.on_job {
            Some(on) => Some(job::JobCopier {
                cx,
                placement: job::JobPlacement::render(on, cx)?,
                notes,
            }),
            None => None,
        };
        run_pass(
            &settings,
            &ledger,
            continued.as_ref(),
            &StepReporter { action: self, cx },
            copier.as_ref(),
        )
        .await
    }
}

impl SyncAction {
    /// The plan of a copy whose trees this process reads.
    async fn local_preview(
        &self,
        cx: &StepContext<'_>,
        settings: &Settings,
    ) -> anyhow::Result<Preview> {
        settings.check_paths()?;
        rsync::detect().await?;
        let ledger = Ledger::read(&self.notes(cx));
        if let Some(state) = ledger.resumable(&settings.fingerprint()) {
            let plan = state.record.plan();
            let left: Vec<_> = (0..plan.shards.len())
                .filter(|i| !state.done_shards.contains(i))
                .collect();
            let files: u64 = left.iter().map(|&i| plan.shards[i].files).sum();
            let size: u64 = left.iter().map(|&i| plan.shards[i].bytes).sum();
            return Ok(Preview {
                summary: format!(
                    "resume pass {} from {} to {}: {} of {} shards left ({files} entries, {})",
                    state.record.pass,
                    settings.from.display(),
                    settings.to.display(),
                    left.len(),
                    plan.shards.len(),
                    bytes(size)
                ),
                diff: None,
            });
        }
        let cancel = CancelOnDrop::new();
        let changed_since = changed_since(&ledger, self.continued(cx).as_ref());
        let comparison = compare_trees(
            &StepReporter { action: self, cx },
            settings,
            changed_since,
            &cancel,
        )
        .await?;
        let deletions = comparison.deletions.clone();
        let differences = comparison.differences.clone();
        let count = comparison.difference_count;
        let forced = comparison.forced;
        let comparison_links = comparison.hard_links.len();
        let plan = planner::plan(comparison.dirs, &PlannerConfig::new(settings.jobs));
        let hard_links = if settings.hard_links {
            comparison_links
        } else {
            0
        };
        let summary = describe_plan(settings, &plan, deletions.len(), forced, hard_links);
        // The first differences (and every deletion, up to a limit) for a person to review.
        let mut diff = String::new();
        for path in deletions.iter().take(200) {
            diff.push_str(&format!("- {}\n", walker::display(path)));
        }
        if deletions.len() > 200 {
            diff.push_str(&format!("- ... and {} more\n", deletions.len() - 200));
        }
        for line in differences
            .iter()
            .filter(|line| !line.starts_with("only in the destination"))
        {
            diff.push_str(&format!("~ {line}\n"));
        }
        if count > differences.len() as u64 {
            diff.push_str(&format!("~ ... {} differences in all\n", count));
        }
        Ok(Preview {
            summary,
            diff: (!diff.is_empty()).then_some(diff),
        })
    }
}

/// One pass of the copy where this process runs: compare, plan (or resume the journaled
/// plan), delete, copy the shards, fix hard links and directories, verify. Everything it
/// has to say goes to `reporter`; `ledger` is the step's notes so far, `continued` those of
/// the step it continues (`after:`); with `job`, the shards run in its Indexed Job.
pub(crate) async fn run_pass(
    settings: &Settings,
    ledger: &Ledger,
    continued: Option<&Ledger>,
    reporter: &dyn PassReporter,
    job: Option<&job::JobCopier<'_>>,
) -> anyhow::Result<Outcome> {
    let destination_exists = settings.check_paths()?;
    let found = rsync::detect().await?;
    let fingerprint = settings.fingerprint();
    let cancel = CancelOnDrop::new();
    let mut transfer = Transfer::new(&settings.from, &settings.to);
    transfer.exclude.clone_from(&settings.exclude);
    transfer.extra.clone_from(&settings.rsync_args);
    transfer.bwlimit_kib = settings.worker_bwlimit_kib();
    let jobs = settings.jobs;
    let warn = |message: &str| reporter.warn(message);

    let resumed = ledger.resumable(&fingerprint).cloned();
    let (record, done_shards, deleted) = match resumed {
        Some(state) => {
            reporter.line(&format!(
                "resuming pass {} (started {}): {} of {} shards were finished before",
                state.record.pass,
                state.record.started,
                state.done_shards.len(),
                state.record.shards.len()
            ));
            (state.record, state.done_shards, state.deleted)
        }
        None => {
            if !destination_exists {
                std::fs::create_dir(&settings.to).with_context(|| {
                    format!("cannot create the destination {}", settings.to.display())
                })?;
            }
            let started = jiff::Timestamp::now();
            reporter.line(&format!(
                "comparing {} with {} ({})",
                settings.from.display(),
                settings.to.display(),
                found.version
            ));
            let comparison = compare_trees(
                reporter,
                settings,
                changed_since(ledger, continued),
                &cancel,
            )
            .await?;
            let Comparison {
                dirs,
                deletions,
                hard_links,
                forced,
                ..
            } = comparison;
            let plan = planner::plan(dirs, &PlannerConfig::new(jobs));
            let links = if settings.hard_links {
                hard_links.len()
            } else {
                0
            };
            reporter.line(&describe_plan(
                settings,
                &plan,
                deletions.len(),
                forced,
                links,
            ));
            let (shards, dirs) = PassRecord::shard_records(&plan);
            let record = PassRecord {
                pass: ledger.next_pass(),
                started: started.to_string(),
                started_secs: started.as_second(),
                started_nanos: i64::from(started.subsec_nanosecond()),
                settings: fingerprint,
                shards,
                dirs,
                deletions: deletions.into_iter().map(RelPath).collect(),
                hard_links: if settings.hard_links {
                    hard_links.into_iter().map(RelPath).collect()
                } else {
                    Vec::new()
                },
                forced,
            };
            reporter.note(&Note::Pass(Box::new(record.clone())))?;
            (record, BTreeSet::new(), false)
        }
    };
    let pass_number = record.pass;
    let plan = record.plan();
    let mut warnings = Vec::new();

    // Deletions first: they free room (quotas) and clear entries that change type.
    let mut deleted_entries = 0;
    if settings.delete && !deleted && !record.deletions.is_empty() {
        deleted_entries = delete_entries(&settings.to, &record.deletions).await?;
        reporter.line(&format!(
            "deleted {deleted_entries} entries found only in the destination"
        ));
        reporter.note(&Note::Deleted {
            pass: pass_number,
            entries: deleted_entries,
        })?;
    }

    // Directories shared by several shards exist before the shards write into them.
    let new_dirs: Vec<Vec<u8>> = plan
        .dirs
        .iter()
        .filter(|dir| dir.new && !dir.path.is_empty())
        .map(|dir| dir.path.clone())
        .collect();
    if !plan
        .shards
        .iter()
        .enumerate()
        .all(|(i, _)| done_shards.contains(&i))
    {
        run_helpers(
            reporter,
            chunked("new directories", new_dirs, jobs),
            jobs,
            &transfer,
            &mut warnings,
        )
        .await?;
    }

    // The shards.
    let board = Board::new(plan.total_bytes, plan.total_files, plan.shards.len(), jobs);
    let mut tasks = Vec::new();
    for (index, shard) in plan.shards.iter().enumerate() {
        if done_shards.contains(&index) {
            board.already_done(shard.bytes, shard.files);
            continue;
        }
        tasks.push(Task::for_shard(index, plan.shards.len(), shard));
    }
    let copied_shards = tasks.len();
    let journal_shard = |task: &Task| -> anyhow::Result<()> {
        let Some(index) = task.shard else {
            return Ok(());
        };
        reporter.note(&Note::Shard {
            pass: pass_number,
            shard: index,
            bytes: task.bytes,
            files: task.files,
        })
    };
    let outcome = match job {
        Some(job) => {
            job.copy(reporter, settings, &record, &done_shards, &board)
                .await?
        }
        None => tokio::select! {
            outcome = pool::run(tasks, jobs, &transfer, &board, &journal_shard, &warn) => outcome?,
            () = progress::tick(&board, reporter) => unreachable!("the progress loop never ends"),
        },
    };
    if plan.total_files > 0 {
        reporter.progress(&board, false);
    }
    warnings.extend(outcome.warnings);
    if let Some(stopped) = outcome.stopped {
        anyhow::bail!(
            "the copy stopped: {stopped}\nfinished shards are journaled; run again to continue"
        );
    }
    if !outcome.failures.is_empty() {
        let mut message = format!(
            "{} of {} shards failed; the others are done and journaled, and a run again copies only the failed ones:",
            outcome.failures.len(),
            plan.shards.len()
        );
        for failure in outcome.failures.iter().take(5) {
            message.push_str("\n  ");
            message.push_str(&failure.replace('\n', "\n  "));
        }
        anyhow::bail!(message);
    }

    // Hard links that span shards, then the attributes of the shared directories
    // (writing into them changed their times).
    let hard_links: Vec<Vec<u8>> = record.hard_links.iter().map(|p| p.0.clone()).collect();
    let linked = hard_links.len();
    let mut hard_link_tasks = chunked("hard links", hard_links, 1);
    for task in &mut hard_link_tasks {
        task.ignore_times = false;
    }
    run_helpers(reporter, hard_link_tasks, 1, &transfer, &mut warnings).await?;
    let mut dir_tasks = chunked(
        "directory attributes",
        plan.dirs
            .iter()
            .filter(|dir| !dir.path.is_empty())
            .map(|dir| dir.path.clone())
            .collect(),
        jobs,
    );
    if plan.dirs.iter().any(|dir| dir.path.is_empty()) {
        dir_tasks.push(Task {
            label: "root attributes".into(),
            entries: Vec::new(),
            recursive: false,
            ignore_times: false,
            fresh: false,
            root: true,
            bytes: 0,
            files: 1,
            shard: None,
        });
    }
    run_helpers(reporter, dir_tasks, jobs, &transfer, &mut warnings).await?;
    reporter.note(&Note::PassDone { pass: pass_number })?;

    let mut verified = false;
    if settings.verify {
        reporter.line("verifying: comparing both trees again");
        let check = compare_trees(reporter, settings, ChangedSince::Never, &cancel).await?;
        if check.difference_count > 0 {
            let mut message = format!(
                "verify found {} difference{} between {} and {} after the copy:",
                check.difference_count,
                if check.difference_count == 1 { "" } else { "s" },
                settings.from.display(),
                settings.to.display()
            );
            for line in &check.differences {
                message.push_str("\n  ");
                message.push_str(line);
            }
            if check.difference_count > check.differences.len() as u64 {
                message.push_str("\n  ...");
            }
            message.push_str(
                "\nhelp: files that change while they are copied show up here; stop the writers and run the step again",
            );
            anyhow::bail!(message);
        }
        reporter.line(&format!(
            "verified: {} entries are the same at both ends",
            check.entries
        ));
        verified = true;
    }

    let changed =
        !plan.shards.is_empty() || !plan.dirs.is_empty() || deleted_entries > 0 || linked > 0;
    Ok(Outcome::new(
        changed,
        serde_json::json!({
            "pass": pass_number,
            "started": record.started,
            "shards": plan.shards.len(),
            "shards_copied": copied_shards,
            "files": plan.total_files,
            "bytes": plan.total_bytes,
            "deleted": deleted_entries,
            "forced": record.forced,
            "hard_links": linked,
            "verified": verified,
            "warnings": warnings,
        }),
    ))
}

/// The change-time rule of a new pass: since the start of the last finished pass of this
/// step, or of the step it continues (`after:`), or, with none, against the destination's
/// copies.
fn changed_since(ledger: &Ledger, continued: Option<&Ledger>) -> ChangedSince {
    let previous = ledger
        .previous_start()
        .or_else(|| continued.and_then(Ledger::previous_start));
    match previous {
        Some((secs, nanos)) => ChangedSince::Time {
            secs: secs - CLOCK_MARGIN_SECS,
            nanos,
        },
        None => ChangedSince::DestinationCopy,
    }
}
