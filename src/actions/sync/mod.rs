//! `sync`: a parallel, sharded rsync of a directory tree, with progress, retries, resume and
//! verification.
//!
//! A pass: compare the two trees by metadata with a concurrent walk ([`compare`]); plan
//! shards of what differs, balanced by bytes and files ([`planner`]); journal the plan;
//! delete what is only at the destination (with `delete: true`); run rsync workers over the
//! shards, biggest first, journaling each finished one ([`pool`]): `jobs` of them, or with
//! `jobs: auto` a count tuned while they copy ([`tuner`]); redo hard links
//! across shards; set the attributes of the directories the shards shared; journal the end;
//! with `verify: true`, compare again and fail on any difference. A resumed run continues
//! the journaled plan without redoing its finished shards.
//!
//! Where the copy runs: here; `on: {pod: ...}` in a pod, detached ([`remote`]); or
//! `on: {job: ...}` here but for the shards, which an Indexed Job copies ([`job`]).

mod agent;
mod catch_up;
mod compare;
mod copy_pass;
mod cutter;
mod detached;
mod filter;
mod grid;
mod job;
mod manifest;
mod pace;
mod pass;
mod pass_reporter;
mod planner;
mod pod;
mod pool;
mod progress;
mod remote;
mod rsync;
mod spec;
mod tuner;
mod walker;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;

pub use agent::{AgentCommand, run_command as run_agent_command};
pub use detached::{DetachedCopy, LiveCopy, detached_copies};
pub use grid::{CopyGrid, ShardCell, ShardState, copy_grids};
pub use pass::{CompareFigures, CopyFigures, FinishedPass, finished_passes};
pub use spec::SyncAction;

use super::{Action, Check, InvalidInput, Outcome, Preview, StepContext};
use compare::{ChangedSince, CompareOptions, Comparison, DestinationListings};
use copy_pass::CopyPass;
use pass::{Ledger, Note};
use pass_reporter::{PassReporter, StepReporter};
use planner::{PlannerConfig, ShardPlan};
use progress::bytes;
use spec::Settings;

/// Differences listed when `verify` fails, and in plans.
const LISTED: usize = 20;
/// Allowance for the file servers' clocks against ours when comparing change times with
/// the start of the previous pass.
const CLOCK_MARGIN_SECS: i64 = 1;
/// How often a line says how far a comparison has got.
const WALK_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Tests slow the walk by this many milliseconds per directory (see
/// [`CompareOptions::dir_delay`]).
const WALK_DELAY_ENV: &str = "RUNBOOK_SYNC_WALK_DELAY_MS";

/// A number from the environment variable `name` (the knobs tests and benchmarks turn),
/// or `None` when it is unset or not a number.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.trim().parse().ok()
}

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

    /// The notes of the step this one continues (`after:`): the journal's, and the catch-up
    /// passes this process collected from its agent.
    fn continued_notes(&self, cx: &StepContext<'_>) -> Option<Vec<serde_json::Value>> {
        let step = self.after.as_deref()?;
        let mut notes = cx.notes_of(step).to_vec();
        if let Ok(caught_up) = self.caught_up.lock() {
            notes.extend(caught_up.iter().cloned());
        }
        Some(notes)
    }

    /// The ledger of the step this one continues (`after:`).
    fn continued(&self, cx: &StepContext<'_>) -> Option<Ledger> {
        self.continued_notes(cx).map(|notes| Ledger::read(&notes))
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

/// Whether a copy sets owners: only root can give files away; as another user rsync keeps
/// its own ids.
fn sets_owners() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// The key of the manifests of `settings`' copy (see [`manifest::key`]).
fn manifest_key(settings: &Settings) -> String {
    manifest::key(
        &settings.from,
        &settings.to,
        &settings.exclude,
        settings.hard_links,
        sets_owners(),
    )
}

/// With `trust_destination`, the manifest an earlier pass left, when it can be trusted;
/// says which, or why the destination is walked (a line when there is none, a warning,
/// also returned, when there is one not to trust).
fn trusted_manifest(
    reporter: &dyn PassReporter,
    settings: &Settings,
) -> (Option<Arc<manifest::Manifest>>, Option<String>) {
    if !settings.trust_destination {
        return (None, None);
    }
    if settings.quick_check {
        // A file changed while a pass copied it and then given back its old size and time
        // would match the manifest's claim; only the change-time rule catches it.
        let warning = "trust_destination is ignored with quick_check: true (without the change-time rule, a file changed while the last pass copied it could be missed): walking the destination".to_string();
        reporter.warn(&warning);
        return (None, Some(warning));
    }
    match manifest::Manifest::load(&settings.to, &manifest_key(settings)) {
        Ok(trusted) => {
            reporter.line(&format!(
                "trust_destination: the destination's listings come from {} (left by the pass started {}), not from a walk",
                trusted.path.display(),
                trusted.pass_started
            ));
            (Some(Arc::new(trusted)), None)
        }
        Err(distrust @ (manifest::Distrust::Missing(_) | manifest::Distrust::Nowhere)) => {
            reporter.line(&format!(
                "trust_destination: {distrust}: walking the destination"
            ));
            (None, None)
        }
        Err(distrust) => {
            let warning = format!(
                "trust_destination: {distrust}; it is not trusted: walking the destination"
            );
            reporter.warn(&warning);
            (None, Some(warning))
        }
    }
}

/// The walk's threads: tuned ([`walker::WalkThreads::AUTO`]), or a fixed count from
/// `RUNBOOK_SYNC_WALK_THREADS` (for benchmarks, to compare the two).
fn walk_threads() -> walker::WalkThreads {
    env_number("RUNBOOK_SYNC_WALK_THREADS")
        .map_or(walker::WalkThreads::AUTO, walker::WalkThreads::fixed)
}

/// Where a streamed comparison sends each directory as it compares it (see
/// [`compare::Sink`]), and the paths an interrupted pass settled.
struct Stream {
    found: tokio::sync::mpsc::UnboundedSender<(cutter::Walked, Vec<Vec<u8>>)>,
    settled: Option<compare::Settled>,
    /// Raised while the copy is too far behind the walk (see [`pace::Pace`]).
    hold: Arc<AtomicBool>,
}

/// Compares the trees on blocking threads, saying every few seconds how far it got. With
/// `stream`, each directory goes there as it is compared (the result's `dirs` stay empty).
async fn compare_trees(
    reporter: &dyn PassReporter,
    settings: &Settings,
    changed_since: ChangedSince,
    listings: DestinationListings,
    cancel: &CancelOnDrop,
    stream: Option<Stream>,
) -> anyhow::Result<Comparison> {
    let (found, settled, hold) = match stream {
        Some(Stream {
            found,
            settled,
            hold,
        }) => (Some(found), settled, Some(hold)),
        None => (None, None, None),
    };
    let options = CompareOptions {
        delete: settings.delete,
        hard_links: settings.hard_links,
        owners: sets_owners(),
        changed_since,
        max_differences: LISTED,
        settled,
        dir_delay: env_number(WALK_DELAY_ENV).map(Duration::from_millis),
        listings,
    };
    let filter = filter::ExcludeFilter::new(&settings.exclude).map_err(InvalidInput)?;
    let counters = Arc::new(walker::WalkCounters::default());
    let (from, to, flag) = (settings.from.clone(), settings.to.clone(), cancel.0.clone());
    let walk_counters = counters.clone();
    let walk = tokio::task::spawn_blocking(move || {
        // A closed receiver means the pass is going away; its cancel flag stops the walk.
        let send = |walked, deletions| {
            if let Some(found) = &found {
                let _ = found.send((walked, deletions));
            }
        };
        compare::compare(
            &from,
            &to,
            &filter,
            &options,
            compare::Walking {
                control: walker::WalkControl {
                    threads: walk_threads(),
                    cancel: &flag,
                    hold: hold.as_deref(),
                    counters: &walk_counters,
                },
                sink: found.is_some().then_some(&send as compare::Sink<'_>),
            },
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
    let comparison = joined.context("the comparison thread panicked")??;
    let threads = &comparison.threads;
    if threads.counts.len() > 1 {
        // The counts are journaled too (the pass's `compared` note).
        reporter.line(&format!(
            "walk threads: {} ({}; last change: {})",
            threads.most(),
            threads.path(),
            threads.reasons.last().map_or("", String::as_str)
        ));
    }
    Ok(comparison)
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
        "copy {} entries ({}) from {} to {} in {} shard{} with {}",
        plan.total_files,
        bytes(plan.total_bytes),
        settings.from.display(),
        settings.to.display(),
        plan.shards.len(),
        if plan.shards.len() == 1 { "" } else { "s" },
        settings.describe_workers(),
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

#[async_trait::async_trait]
impl Action for SyncAction {
    /// Its cluster objects (Jobs, pods) go through the client; the files it copies are
    /// no decision's readings (values files are read, not synced).
    fn reports_its_writes(&self) -> bool {
        true
    }

    fn step_references(&self) -> Vec<(&'static str, &str)> {
        self.after
            .iter()
            .map(|step| ("after", step.as_str()))
            .collect()
    }

    fn rename_step_references(&mut self, rename: &dyn Fn(&str) -> String) {
        if let Some(after) = &mut self.after {
            *after = rename(after);
        }
    }

    fn uses_cluster(&self) -> bool {
        self.on.is_some() || self.on_job.is_some()
    }

    fn keeps_going(&self) -> bool {
        self.repeat.is_some()
    }

    async fn keep_going(&self, cx: &StepContext<'_>) -> anyhow::Result<()> {
        catch_up::keep_going(self, cx).await
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
        // The copy this one continues may still be kept warm: its catch-up passes stop
        // first, and what they did counts.
        if let Some(after) = &self.after {
            let caught_up = catch_up::stop_before_continuing(cx, after).await?;
            if let Ok(mut kept) = self.caught_up.lock() {
                kept.extend(caught_up);
            }
        }
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
        let reporter = StepReporter { action: self, cx };
        CopyPass::new(
            &settings,
            &ledger,
            continued.as_ref(),
            &reporter,
            copier.as_ref(),
        )
        .run()
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
        let changed_since = changed_since(settings, &ledger, self.continued(cx).as_ref());
        let reporter = StepReporter { action: self, cx };
        let (trusted, _) = trusted_manifest(&reporter, settings);
        let listings = DestinationListings {
            trusted,
            recorded: None,
        };
        let comparison =
            compare_trees(&reporter, settings, changed_since, listings, &cancel, None).await?;
        let deletions = comparison.deletions.clone();
        let differences = comparison.differences.clone();
        let count = comparison.difference_count;
        let forced = comparison.forced;
        let comparison_links = comparison.hard_links.len();
        let plan = planner::plan(comparison.dirs, &PlannerConfig::new(settings.most_jobs()));
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

/// The change-time rule of a new pass: since the start of the last finished pass of this
/// step, or of the step it continues (`after:`), or, with none, against the destination's
/// copies; none with `quick_check`.
fn changed_since(settings: &Settings, ledger: &Ledger, continued: Option<&Ledger>) -> ChangedSince {
    if settings.quick_check {
        return ChangedSince::Never;
    }
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
