//! One pass of the copy where this process runs (here, or in a pod's agent): its phases in
//! the order [`CopyPass::run`] calls them, each a method.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::compare::{ChangedSince, Comparison, DestinationListings};
use super::cutter::{Cut, Cutter, CutterConfig, Walked};
use super::job::JobCopier;
use super::manifest::{self, ManifestWriter};
use super::pace::{self, Pace};
use super::pass::{
    CompareFigures, DirRecord, Ledger, Note, PassRecord, PassState, RelPath, ShardRecord,
    WalkedRecord,
};
use super::pass_reporter::PassReporter;
use super::planner::{self, PlannerConfig, ShardPlan};
use super::pool::{self, PoolOutcome, Task};
use super::progress::{self, Board};
use super::rsync::{self, Transfer};
use super::spec::Settings;
use super::{
    CLOCK_MARGIN_SECS, CancelOnDrop, Stream, changed_since, compare_trees, describe_plan,
    env_number, manifest_key, trusted_manifest, walker,
};
use crate::actions::Outcome;

/// How often a pass that copies while it walks looks for an idle worker, to cut the shards
/// being filled early for it.
const IDLE_CHECK_EVERY: Duration = Duration::from_millis(200);

/// How often a pass that copies while it walks decides whether the walk holds ([`Pace`]).
const PACE_CHECK_EVERY: Duration = Duration::from_millis(50);

/// What a streamed walk reports: each directory, with what to delete in it.
type Found = mpsc::UnboundedReceiver<(Walked, Vec<Vec<u8>>)>;

/// Whether passes compare the whole trees before they copy (`RUNBOOK_SYNC_WALK_FIRST=1`),
/// as a Job's always do, instead of copying while they walk: for benchmarks and to
/// compare the two.
fn walk_first() -> bool {
    std::env::var_os("RUNBOOK_SYNC_WALK_FIRST").is_some_and(|value| value == "1")
}

/// How far the walk may run ahead of the copy ([`pace::LEAD`], or
/// `RUNBOOK_SYNC_WALK_LEAD_MS`; 0 never holds the walk): for benchmarks.
fn walk_lead() -> Duration {
    env_number("RUNBOOK_SYNC_WALK_LEAD_MS").map_or(pace::LEAD, Duration::from_millis)
}

/// One pass: plan it (or resume the journaled plan) and journal it, delete, copy the shards,
/// fix hard links and directories, verify, and say what it did. Everything it has to say
/// goes to `reporter`; `ledger` is the step's notes so far, `continued` those of the step it
/// continues (`after:`); with `job`, the shards run in its Indexed Job.
pub(crate) struct CopyPass<'a> {
    settings: &'a Settings,
    ledger: &'a Ledger,
    continued: Option<&'a Ledger>,
    reporter: &'a dyn PassReporter,
    job: Option<&'a JobCopier<'a>>,
    /// The rsync command line every task of the pass shares.
    transfer: Transfer,
    /// Stops the comparison's walking threads when the pass is dropped.
    cancel: CancelOnDrop,
    /// Things a person should know, gathered from every phase for the step's output.
    warnings: Vec<String>,
    /// The manifest of what this pass leaves at the destination, written while it
    /// compared; `None` for a resumed pass (its comparison was another process's).
    manifest: Option<Arc<ManifestWriter>>,
}

/// How a pass starts.
enum Begin {
    /// With its whole plan journaled (resumed, or compared first).
    Planned(Box<PassState>),
    /// New, to copy while it walks.
    Walking(NewPass),
}

/// A pass about to start.
struct NewPass {
    started: jiff::Timestamp,
    /// Where its comparison takes the destination's listings from and records them to.
    listings: DestinationListings,
    /// Its settings' fingerprint.
    fingerprint: String,
    /// `rsync  version 3.2.7 ...`, said when the comparison starts.
    rsync_version: String,
}

/// What the walk of a pass that copies while it walks found, once it is over.
struct WalkedPass {
    /// The rest of the plan, as journaled.
    record: WalkedRecord,
    /// The shards cut, as journaled.
    shards: Vec<ShardRecord>,
    /// Entries deleted at the destination during the walk.
    deleted: u64,
    compared: CompareFigures,
}

/// What the copying phases did, for the step's output.
struct Copied {
    /// Entries deleted at the destination.
    deleted: u64,
    /// Shards copied by this run (not those a run before finished).
    shards: usize,
    /// Files whose hard links were redone.
    linked: usize,
}

impl<'a> CopyPass<'a> {
    /// A pass over `settings`' trees; nothing happens before [`CopyPass::run`].
    pub(crate) fn new(
        settings: &'a Settings,
        ledger: &'a Ledger,
        continued: Option<&'a Ledger>,
        reporter: &'a dyn PassReporter,
        job: Option<&'a JobCopier<'a>>,
    ) -> Self {
        let mut transfer = Transfer::new(&settings.from, &settings.to);
        transfer.exclude.clone_from(&settings.exclude);
        transfer.extra.clone_from(&settings.rsync_args);
        transfer.bwlimit_kib = settings.worker_bwlimit_kib();
        CopyPass {
            settings,
            ledger,
            continued,
            reporter,
            job,
            transfer,
            cancel: CancelOnDrop::new(),
            warnings: Vec::new(),
            manifest: None,
        }
    }

    /// Runs the pass's phases in order.
    pub(crate) async fn run(mut self) -> anyhow::Result<Outcome> {
        let begun = self.begin().await?;
        // The previous pass's manifest no longer says what the destination holds once this
        // pass copies anything (it was read, if trusted, before).
        self.forget_manifest()?;
        let warned_before_copying = self.warnings.len();
        let copying = Instant::now();
        let (pass, plan, deleted, shards) = match begun {
            Begin::Planned(pass) => {
                let plan = pass.record.plan();
                let deleted = self.delete_extra_entries(&pass).await?;
                let shards = self.copy_shards(&pass, &plan).await?;
                (*pass, plan, deleted, shards)
            }
            Begin::Walking(new) => {
                let (pass, deleted, shards) = self.walk_and_copy(new).await?;
                let plan = pass.record.plan();
                (pass, plan, deleted, shards)
            }
        };
        let linked = self.finish_links_and_dirs(&pass, &plan, copying).await?;
        let verified = self.verify().await?;
        self.record_manifest(self.warnings.len() > warned_before_copying);
        let copied = Copied {
            deleted,
            shards,
            linked,
        };
        Ok(self.outcome(&pass.record, &plan, &copied, verified))
    }

    /// How the pass starts: the journaled one when it was interrupted with the same
    /// settings; else a new one, which copies while it walks where this process copies, or
    /// is compared, planned and journaled before anything is copied when a Job copies (an
    /// Indexed Job's pods are counted before it starts).
    async fn begin(&mut self) -> anyhow::Result<Begin> {
        let destination_exists = self.settings.check_paths()?;
        let found = rsync::detect().await?;
        let fingerprint = self.settings.fingerprint();
        if let Some(state) = self.ledger.resumable(&fingerprint) {
            self.reporter.line(&format!(
                "resuming pass {} (started {}): {} of {} shards were finished before",
                state.record.pass,
                state.record.started,
                state.done_shards.len(),
                state.record.shards.len()
            ));
            self.manifest_not_recorded("the pass resumes one whose comparison an earlier run made");
            return Ok(Begin::Planned(Box::new(state.clone())));
        }
        let settings = self.settings;
        if !destination_exists {
            std::fs::create_dir(&settings.to).with_context(|| {
                format!("cannot create the destination {}", settings.to.display())
            })?;
        }
        let started = jiff::Timestamp::now();
        let new = NewPass {
            listings: self.destination_listings(started),
            started,
            fingerprint,
            rsync_version: found.version,
        };
        if self.job.is_none() && !walk_first() {
            return Ok(Begin::Walking(new));
        }
        Ok(Begin::Planned(Box::new(self.compare_then_plan(new).await?)))
    }

    /// Where a new pass started at `started` takes the destination's listings from (a
    /// manifest it trusts, with `trust_destination`) and records them to (the manifest it
    /// leaves for the next pass, kept in `self.manifest`).
    fn destination_listings(&mut self, started: jiff::Timestamp) -> DestinationListings {
        let settings = self.settings;
        let (trusted, warning) = trusted_manifest(self.reporter, settings);
        self.warnings.extend(warning);
        self.manifest = match ManifestWriter::create(&settings.to, &manifest_key(settings), started)
        {
            Ok(writer) => Some(Arc::new(writer)),
            Err(why) => {
                self.manifest_not_recorded(&why);
                None
            }
        };
        DestinationListings {
            trusted,
            recorded: self.manifest.clone(),
        }
    }

    /// A new pass whose plan is whole before anything is copied: compared, planned and
    /// journaled.
    async fn compare_then_plan(&self, new: NewPass) -> anyhow::Result<PassState> {
        let settings = self.settings;
        let comparing = Instant::now();
        self.reporter.line(&format!(
            "comparing {} with {} ({})",
            settings.from.display(),
            settings.to.display(),
            new.rsync_version
        ));
        let comparison = compare_trees(
            self.reporter,
            settings,
            changed_since(settings, self.ledger, self.continued),
            new.listings,
            &self.cancel,
            None,
        )
        .await?;
        let compared = CompareFigures {
            entries: comparison.entries,
            ms: millis(comparing.elapsed()),
        };
        let walk_threads = comparison.threads.counts.clone();
        let record = self.new_record(comparison, new.started, new.fingerprint);
        self.reporter.note(&Note::Pass(Box::new(record.clone())))?;
        self.reporter.note(&Note::Compared {
            pass: record.pass,
            entries: compared.entries,
            ms: compared.ms,
            walk_threads,
        })?;
        Ok(PassState::planned(record, compared))
    }

    /// Plans the shards of what `comparison` found, says so, and makes the journal's record.
    fn new_record(
        &self,
        comparison: Comparison,
        started: jiff::Timestamp,
        fingerprint: String,
    ) -> PassRecord {
        let settings = self.settings;
        let Comparison {
            dirs,
            deletions,
            hard_links,
            forced,
            ..
        } = comparison;
        let plan = planner::plan(dirs, &PlannerConfig::new(settings.most_jobs()));
        let links = if settings.hard_links {
            hard_links.len()
        } else {
            0
        };
        self.reporter.line(&describe_plan(
            settings,
            &plan,
            deletions.len(),
            forced,
            links,
        ));
        let (shards, dirs) = PassRecord::shard_records(&plan);
        PassRecord {
            shards,
            dirs,
            deletions: deletions.into_iter().map(RelPath).collect(),
            hard_links: journaled_hard_links(settings, hard_links),
            forced,
            ..PassRecord::starting(self.ledger.next_pass(), started, fingerprint)
        }
    }

    /// With `delete`, removes what is only at the destination, once per pass. Deletions
    /// come first: they free room (quotas) and clear entries that change type.
    async fn delete_extra_entries(&self, pass: &PassState) -> anyhow::Result<u64> {
        let record = &pass.record;
        if !self.settings.delete || pass.deleted || record.deletions.is_empty() {
            return Ok(0);
        }
        let entries = record.deletions.iter().map(|path| path.0.clone()).collect();
        let deleted = delete_entries(&self.settings.to, entries).await?;
        self.reporter.line(&format!(
            "deleted {deleted} entries found only in the destination"
        ));
        self.reporter.note(&Note::Deleted {
            pass: record.pass,
            entries: deleted,
        })?;
        Ok(deleted)
    }

    /// Copies the shards a run before did not finish, here or in the Job, journaling each
    /// as it finishes; fails when any failed. Returns how many this run copied.
    async fn copy_shards(&mut self, pass: &PassState, plan: &ShardPlan) -> anyhow::Result<usize> {
        let jobs = self.settings.jobs;
        let done_shards = &pass.done_shards;
        // Directories shared by several shards exist before the shards write into them.
        if !(0..plan.shards.len()).all(|i| done_shards.contains(&i)) {
            let new_dirs: Vec<Vec<u8>> = plan
                .dirs
                .iter()
                .filter(|dir| dir.new && !dir.path.is_empty())
                .map(|dir| dir.path.clone())
                .collect();
            self.run_helpers(chunked("new directories", new_dirs, jobs), jobs)
                .await?;
        }
        let board = Board::new(
            plan.total_bytes,
            plan.total_files,
            plan.shards.len(),
            self.settings.most_jobs(),
        );
        let mut tasks = Vec::new();
        for (index, shard) in plan.shards.iter().enumerate() {
            if done_shards.contains(&index) {
                board.already_done(shard.bytes, shard.files);
                continue;
            }
            tasks.push(Task::for_shard(index, Some(plan.shards.len()), shard));
        }
        let copied_shards = tasks.len();
        let outcome = self.run_shard_tasks(pass, tasks, &board).await?;
        if plan.total_files > 0 {
            self.reporter.progress(&board, false);
        }
        self.judge(outcome, plan.shards.len())?;
        Ok(copied_shards)
    }

    /// Keeps the warnings of the pool's `outcome`, and fails when the copy stopped or any of
    /// the pass's `shards` failed.
    fn judge(&mut self, outcome: PoolOutcome, shards: usize) -> anyhow::Result<()> {
        self.warnings.extend(outcome.warnings);
        if let Some(stopped) = outcome.stopped {
            anyhow::bail!(
                "the copy stopped: {stopped}\nfinished shards are journaled; run again to continue"
            );
        }
        if !outcome.failures.is_empty() {
            let mut message = format!(
                "{} of {shards} shards failed; the others are done and journaled, and a run again copies only the failed ones:",
                outcome.failures.len(),
            );
            for failure in outcome.failures.iter().take(5) {
                message.push_str("\n  ");
                message.push_str(&failure.replace('\n', "\n  "));
            }
            anyhow::bail!(message);
        }
        Ok(())
    }

    /// A new pass that copies while it walks: each shard is cut from the part of the tree
    /// already walked, journaled and handed to the workers at once, while the walk goes on
    /// (deleting, with `delete`, what only the destination has as it finds it). The rest of
    /// the plan (the directories to set, the hard links) is journaled when the walk ends.
    /// Returns the pass as journaled, the entries deleted and the shards copied.
    async fn walk_and_copy(&mut self, new: NewPass) -> anyhow::Result<(PassState, u64, usize)> {
        let settings = self.settings;
        let reporter = self.reporter;
        let mut record = PassRecord {
            streamed: true,
            ..PassRecord::starting(self.ledger.next_pass(), new.started, new.fingerprint)
        };
        reporter.line(&format!(
            "comparing {} with {} and copying as the walk goes ({})",
            settings.from.display(),
            settings.to.display(),
            new.rsync_version
        ));
        let settled = self.ledger.settled_by_stopped_walks().map(|(mut settled, passes)| {
            settled.since.0 -= CLOCK_MARGIN_SECS;
            let entries = settled.paths.len();
            let entries = if entries == 1 {
                "1 entry".to_string()
            } else {
                format!("{entries} entries")
            };
            reporter.line(&if passes == 1 {
                format!(
                    "the last pass stopped during its walk: the {entries} of its finished shards are copied again only if they changed since it started"
                )
            } else {
                format!(
                    "the last {passes} passes stopped during their walks: the {entries} of their finished shards are copied again only if they changed since the first of them started"
                )
            });
            settled
        });
        reporter.note(&Note::Pass(Box::new(record.clone())))?;
        let board = Board::new(0, 0, 0, settings.most_jobs());
        let (found_sender, found) = mpsc::unbounded_channel();
        let (task_sender, tasks) = mpsc::unbounded_channel();
        let hold = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            found: found_sender,
            settled,
            hold: hold.clone(),
        };
        let (walked, outcome) = {
            let walking = self.walk_and_cut(
                record.pass,
                (stream, new.listings),
                (found, &hold),
                task_sender,
                &board,
            );
            let copying = run_journaled(
                Vec::new(),
                Some(tasks),
                settings.concurrency(),
                &self.transfer,
                &board,
                reporter,
                record.pass,
            );
            tokio::pin!(walking, copying);
            tokio::select! {
                walked = &mut walking => (walked, copying.await),
                outcome = &mut copying => {
                    // Before the walk ends, the pool ends only when the copy stopped (a full
                    // destination) or a shard's end could not be journaled: stop the walk.
                    // (It may also end as the walk journals its end, with nothing to stop.)
                    if outcome.as_ref().map_or(true, |outcome| outcome.stopped.is_some()) {
                        self.cancel.0.store(true, Ordering::Relaxed);
                    }
                    (walking.await, outcome)
                }
            }
        };
        let outcome = outcome?;
        if board.snapshot().total_files > 0 {
            reporter.progress(&board, false);
        }
        self.judge(outcome, board.total_shards())?;
        let walked = walked?;
        let copied_shards = walked.shards.len();
        record.shards = walked.shards;
        record.finish_plan(walked.record);
        let state = PassState {
            // Deleted during the walk.
            deleted: true,
            ..PassState::planned(record, walked.compared)
        };
        Ok((state, walked.deleted, copied_shards))
    }

    /// The walk of a pass that copies while it walks, and the cutting of its shards from
    /// what it reports, until it ends; then the rest of the plan, journaled. Closing `tasks`
    /// (dropped on return) tells the pool no more shards come.
    async fn walk_and_cut(
        &self,
        pass: u32,
        (stream, listings): (Stream, DestinationListings),
        (found, hold): (Found, &AtomicBool),
        tasks: mpsc::UnboundedSender<Task>,
        board: &Board,
    ) -> anyhow::Result<WalkedPass> {
        let settings = self.settings;
        let comparing = Instant::now();
        let changed_since = changed_since(settings, self.ledger, self.continued);
        let cutting = self.cut_while_walking(pass, (found, hold), &tasks, board);
        let (comparison, cutting) = tokio::join!(
            compare_trees(
                self.reporter,
                settings,
                changed_since,
                listings,
                &self.cancel,
                Some(stream)
            ),
            cutting
        );
        // The walk's error first: a cutting that ended early stopped it.
        let comparison = comparison?;
        let (cutter, mut shards, deleted) = cutting?;
        let (cuts, dirs) = cutter.finish();
        self.hand_out(cuts, pass, &tasks, board, &mut shards)
            .await?;
        drop(tasks);
        let Comparison {
            deletions,
            hard_links,
            forced,
            entries,
            threads,
            ..
        } = comparison;
        let record = WalkedRecord {
            pass,
            dirs: dirs.iter().map(DirRecord::of).collect(),
            deletions: deletions.into_iter().map(RelPath).collect(),
            hard_links: journaled_hard_links(settings, hard_links),
            forced,
        };
        let compared = CompareFigures {
            entries,
            ms: millis(comparing.elapsed()),
        };
        self.reporter
            .note(&Note::Walked(Box::new(record.clone())))?;
        self.reporter.note(&Note::Compared {
            pass,
            entries: compared.entries,
            ms: compared.ms,
            walk_threads: threads.counts,
        })?;
        let plan = ShardPlan::of(shards.iter().map(ShardRecord::shard).collect(), dirs);
        let mut line = describe_plan(
            settings,
            &plan,
            record.deletions.len(),
            record.forced,
            record.hard_links.len(),
        );
        line.insert_str(0, "the walk is over: ");
        self.reporter.line(&line);
        if deleted > 0 {
            self.reporter.line(&format!(
                "deleted {deleted} entries found only in the destination"
            ));
        }
        Ok(WalkedPass {
            record,
            shards,
            deleted,
            compared,
        })
    }

    /// Feeds what the walk reports to a [`Cutter`] and hands out what it cuts; when a
    /// worker is idle, cuts the shards being filled early. Raises `hold` while the walk is
    /// too far ahead of the copy ([`Pace`]). Returns the cutter (to finish once the walk
    /// succeeded), the shards cut and the entries deleted.
    async fn cut_while_walking(
        &self,
        pass: u32,
        (mut found, hold): (Found, &AtomicBool),
        tasks: &mpsc::UnboundedSender<Task>,
        board: &Board,
    ) -> anyhow::Result<(Cutter, Vec<ShardRecord>, u64)> {
        let result = async {
            let mut cutter = Cutter::new(CutterConfig::new(self.settings.most_jobs()));
            let mut shards = Vec::new();
            let mut deleted = 0;
            let mut idle_check = tokio::time::interval(IDLE_CHECK_EVERY);
            let mut pace = Pace::new(walk_lead());
            let mut pace_check = tokio::time::interval(PACE_CHECK_EVERY);
            loop {
                let cuts = tokio::select! {
                    walked = found.recv() => {
                        let Some((walked, deletions)) = walked else { break };
                        // Before anything below is copied: an entry may change type.
                        if !deletions.is_empty() {
                            deleted += delete_entries(&self.settings.to, deletions).await?;
                        }
                        cutter.add(walked)
                    }
                    _ = idle_check.tick() => {
                        if !board.has_idle_worker() {
                            continue;
                        }
                        cutter.flush()
                    }
                    _ = pace_check.tick() => {
                        let held = pace.hold(
                            Instant::now(),
                            cutter.seen_files(),
                            board.started_files(),
                            board.workers(),
                            board.has_idle_worker(),
                        );
                        hold.store(held, Ordering::Relaxed);
                        if let Some(files) = pace.shard_files(Instant::now(), board.workers()) {
                            cutter.limit_files(files);
                        }
                        continue;
                    }
                };
                self.hand_out(cuts, pass, tasks, board, &mut shards).await?;
            }
            anyhow::Ok((cutter, shards, deleted))
        }
        .await;
        if result.is_err() {
            // Nothing more is cut: the walk has no reason to go on.
            self.cancel.0.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Makes the new directories and journals and hands out the shards that `cuts` asks
    /// for, in order.
    async fn hand_out(
        &self,
        cuts: Vec<Cut>,
        pass: u32,
        tasks: &mpsc::UnboundedSender<Task>,
        board: &Board,
        shards: &mut Vec<ShardRecord>,
    ) -> anyhow::Result<()> {
        for cut in cuts {
            match cut {
                Cut::MakeDir(path) => {
                    let dir = walker::absolute(&self.settings.to, &path);
                    match tokio::fs::create_dir(&dir).await {
                        Ok(()) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(error) => {
                            return Err(error)
                                .with_context(|| format!("cannot create {}", dir.display()));
                        }
                    }
                }
                Cut::Shard(shard) => {
                    let index = shards.len();
                    let record = ShardRecord::of(&shard);
                    self.reporter.note(&Note::Planned {
                        pass,
                        shard: index,
                        record: record.clone(),
                    })?;
                    shards.push(record);
                    board.add_shard(shard.bytes, shard.files);
                    // A pool that stopped takes no more (and the walk is stopped then).
                    let _ = tasks.send(Task::for_shard(index, None, &shard));
                }
            }
        }
        Ok(())
    }

    /// Runs the shards' tasks on the worker pool (showing progress meanwhile), or hands the
    /// shards to the Job.
    async fn run_shard_tasks(
        &self,
        pass: &PassState,
        tasks: Vec<Task>,
        board: &Board,
    ) -> anyhow::Result<PoolOutcome> {
        let reporter = self.reporter;
        if let Some(job) = self.job {
            return job
                .copy(
                    reporter,
                    self.settings,
                    &pass.record,
                    &pass.done_shards,
                    board,
                )
                .await;
        }
        let concurrency = self.settings.concurrency();
        run_journaled(
            tasks,
            None,
            concurrency,
            &self.transfer,
            board,
            reporter,
            pass.record.pass,
        )
        .await
    }

    /// Redoes the hard links that span shards, then sets the attributes of the shared
    /// directories (writing into them changed their times), and journals the pass's end
    /// with what this process copied since `copying`. Returns how many hard-linked files
    /// there were.
    async fn finish_links_and_dirs(
        &mut self,
        pass: &PassState,
        plan: &ShardPlan,
        copying: std::time::Instant,
    ) -> anyhow::Result<usize> {
        let record = &pass.record;
        let jobs = self.settings.jobs;
        let hard_links: Vec<Vec<u8>> = record.hard_links.iter().map(|p| p.0.clone()).collect();
        let linked = hard_links.len();
        let mut hard_link_tasks = chunked("hard links", hard_links, 1);
        for task in &mut hard_link_tasks {
            task.ignore_times = false;
        }
        self.run_helpers(hard_link_tasks, 1).await?;
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
        self.run_helpers(dir_tasks, jobs).await?;
        let copied = plan
            .shards
            .iter()
            .enumerate()
            .filter(|(index, _)| !pass.done_shards.contains(index));
        let (copied_bytes, copied_files) = copied.fold((0, 0), |(bytes, files), (_, shard)| {
            (bytes + shard.bytes, files + shard.files)
        });
        self.reporter.note(&Note::Ended {
            pass: record.pass,
            at: jiff::Timestamp::now().to_string(),
            copy_ms: millis(copying.elapsed()),
            copied_bytes,
            copied_files,
        })?;
        self.reporter.note(&Note::PassDone { pass: record.pass })?;
        Ok(linked)
    }

    /// With `verify`, compares both trees again and fails on any difference. Returns
    /// whether it verified.
    async fn verify(&self) -> anyhow::Result<bool> {
        let settings = self.settings;
        if !settings.verify {
            return Ok(false);
        }
        self.reporter.line("verifying: comparing both trees again");
        // Both trees for real: a verification never trusts a manifest.
        let check = compare_trees(
            self.reporter,
            settings,
            ChangedSince::Never,
            DestinationListings::default(),
            &self.cancel,
            None,
        )
        .await?;
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
        self.reporter.line(&format!(
            "verified: {} entries are the same at both ends",
            check.entries
        ));
        Ok(true)
    }

    /// Removes the manifest an earlier pass left, before anything is copied: from here on
    /// it would claim what may no longer be there. A manifest that cannot be removed fails
    /// the pass (a later pass would trust it).
    fn forget_manifest(&self) -> anyhow::Result<()> {
        manifest::forget(&self.settings.to).with_context(|| {
            "the manifest of the previous pass must go before this pass copies; remove it by hand".to_string()
        })
    }

    /// Puts the manifest of this pass in place, now that it is done (and verified, with
    /// `verify`), unless the copy `warned` (files that vanished): then rsync did not do
    /// all that the manifest says.
    fn record_manifest(&mut self, warned: bool) {
        let Some(writer) = self.manifest.take() else {
            return;
        };
        if warned {
            self.manifest_not_recorded("the copy warned");
            return;
        }
        match writer.finish() {
            Ok(path) => self.reporter.line(&format!(
                "recorded what the destination holds in {}",
                path.display()
            )),
            Err(why) => self.manifest_not_recorded(&why),
        }
    }

    /// Says that this pass leaves no manifest: a warning when the next pass would want one
    /// (`trust_destination`), a line otherwise.
    fn manifest_not_recorded(&mut self, why: &str) {
        let text = format!(
            "no manifest of this pass is recorded ({why}); a pass with trust_destination will walk the destination"
        );
        if self.settings.trust_destination {
            self.reporter.warn(&text);
            self.warnings.push(text);
        } else {
            self.reporter.line(&text);
        }
    }

    /// The step's outcome: whether the pass changed anything, and its numbers.
    fn outcome(
        self,
        record: &PassRecord,
        plan: &ShardPlan,
        copied: &Copied,
        verified: bool,
    ) -> Outcome {
        let changed = !plan.shards.is_empty()
            || !plan.dirs.is_empty()
            || copied.deleted > 0
            || copied.linked > 0;
        Outcome::new(
            changed,
            serde_json::json!({
                "pass": record.pass,
                "started": record.started,
                "shards": plan.shards.len(),
                "shards_copied": copied.shards,
                "files": plan.total_files,
                "bytes": plan.total_bytes,
                "deleted": copied.deleted,
                "forced": record.forced,
                "hard_links": copied.linked,
                "verified": verified,
                "warnings": self.warnings,
            }),
        )
    }

    /// Runs helper tasks (directories, hard links) and fails on the first failure.
    async fn run_helpers(&mut self, tasks: Vec<Task>, jobs: usize) -> anyhow::Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let board = Board::new(0, 0, tasks.len(), jobs);
        let reporter = self.reporter;
        let hooks = pool::Hooks {
            on_end: &|_, _| Ok(()),
            warn: &|message: &str| reporter.warn(message),
            on_workers: &|_| Ok(()),
        };
        let concurrency = pool::Concurrency::Fixed(jobs);
        let outcome = pool::run(tasks, concurrency, &self.transfer, &board, &hooks).await?;
        self.warnings.extend(outcome.warnings);
        if let Some(stopped) = outcome.stopped {
            anyhow::bail!("the copy stopped: {stopped}");
        }
        if let Some(first) = outcome.failures.first() {
            anyhow::bail!("{first}");
        }
        Ok(())
    }
}

/// Runs the shards' tasks of pass `pass` on the pool, showing progress meanwhile: each
/// finished or failed shard, and each change of the worker count, is journaled through
/// `reporter`, and a change is said as a line. With `feed`, the tasks that arrive there
/// until it closes run too. The agents of copies in pods and Jobs run their shards through
/// this too.
pub(crate) async fn run_journaled(
    tasks: Vec<Task>,
    feed: Option<mpsc::UnboundedReceiver<Task>>,
    concurrency: pool::Concurrency,
    transfer: &Transfer,
    board: &Board,
    reporter: &dyn PassReporter,
    pass: u32,
) -> anyhow::Result<PoolOutcome> {
    let on_end = |task: &Task, end: pool::TaskEnd<'_>| -> anyhow::Result<()> {
        match end.note(pass, task) {
            Some(note) => reporter.note(&note),
            None => Ok(()),
        }
    };
    let on_workers = |change: &pool::WorkersChange| -> anyhow::Result<()> {
        reporter.line(&format!(
            "jobs: auto: {} to {} workers: {}",
            change.from, change.to, change.why
        ));
        reporter.note(&Note::Workers {
            pass,
            from: change.from,
            to: change.to,
            why: change.why.clone(),
            at: jiff::Timestamp::now().to_string(),
        })
    };
    let hooks = pool::Hooks {
        on_end: &on_end,
        warn: &|message: &str| reporter.warn(message),
        on_workers: &on_workers,
    };
    tokio::select! {
        outcome = pool::run_fed(tasks, feed, concurrency, transfer, board, &hooks) => outcome,
        () = progress::tick(board, reporter) => unreachable!("the progress loop never ends"),
    }
}

/// The files whose hard links a pass redoes after its shards: none without `-H`.
fn journaled_hard_links(settings: &Settings, hard_links: Vec<Vec<u8>>) -> Vec<RelPath> {
    if settings.hard_links {
        hard_links.into_iter().map(RelPath).collect()
    } else {
        Vec::new()
    }
}

/// Milliseconds of a duration, for the journal.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Deletes entries (files, links or whole directories) below `root`.
async fn delete_entries(root: &Path, entries: Vec<Vec<u8>>) -> anyhow::Result<u64> {
    let root = root.to_path_buf();
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
