//! The comparison of the source and destination trees by metadata, with a concurrent walk
//! of both. It yields what a pass must copy (the planner's input), what a mirror must delete,
//! and, for `verify`, the differences in words.
//!
//! Its cost grows with the number of entries times the metadata latency divided by the
//! walk's concurrency, not with the bytes: a final pass where little changed is short.
//!
//! rsync's quick check (same size and modification time: skip) misses a file rewritten with
//! its old size and time (`cp -p`, `tar x`); its change time (ctime) cannot be set back, so
//! a file whose ctime is newer than the start of the previous pass is copied regardless.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::cutter::Walked;
use super::filter::ExcludeFilter;
use super::manifest::{self, Manifest, ManifestWriter};
use super::planner::{DirWork, Item};
use super::walker::{self, Entry, Kind, Meta, ThreadCounts, WalkControl, WalkCounters, WalkError};

/// Which files count as changed whatever their size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangedSince {
    /// None (a verification compares what rsync can see).
    Never,
    /// Those whose ctime is after this time (the start of the previous pass).
    Time {
        /// Seconds since the epoch.
        secs: i64,
        /// Nanoseconds.
        nanos: i64,
    },
    /// No previous pass is known: those whose ctime is not clearly older than their
    /// destination copy's (written when that copy was made), allowing for the time the
    /// copy of the file took and for clock differences between file servers.
    DestinationCopy,
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Entries only at the destination are to be deleted (and are differences).
    pub delete: bool,
    /// Files hard-linked together in the source must be so at the destination.
    pub hard_links: bool,
    /// Compare owners and groups (rsync can only set them as root).
    pub owners: bool,
    /// The rule for files rewritten with the same size and time.
    pub changed_since: ChangedSince,
    /// How many differences to describe in words.
    pub max_differences: usize,
    /// Paths an interrupted pass finished copying, judged by that pass's start instead of
    /// `changed_since` (see [`Settled`]).
    pub settled: Option<Settled>,
    /// A pause before each directory is read: tests slow the walk with it, to stop a pass
    /// whose walk and copy are both in flight (`RUNBOOK_SYNC_WALK_DELAY_MS`).
    pub dir_delay: Option<std::time::Duration>,
    /// Manifests of the destination: the one to read its listings from, the next to write.
    pub listings: DestinationListings,
}

/// What a comparison does with the manifests of the destination (see [`manifest`]).
#[derive(Debug, Clone, Default)]
pub struct DestinationListings {
    /// Its directories' listings come from this manifest rather than from the destination
    /// (`trust_destination`); those it lacks are read. Never for a verification.
    pub trusted: Option<Arc<Manifest>>,
    /// The listings the pass leaves go to this writer, for the next pass.
    pub recorded: Option<Arc<ManifestWriter>>,
}

/// What the finished shards of a pass that stopped during its walk copied: the next pass
/// judges those paths (and everything below them) by the change-time rule with the start
/// of the stopped pass, so that it does not copy them again unless they changed since.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The shards' entries (each a file or a whole directory).
    pub paths: HashSet<Vec<u8>>,
    /// When the stopped pass started: seconds, nanoseconds.
    pub since: (i64, i64),
}

impl Settled {
    /// Whether `path` is one of the paths or below one.
    fn covers(&self, path: &[u8]) -> bool {
        let mut prefix = path;
        loop {
            if self.paths.contains(prefix) {
                return true;
            }
            match prefix.iter().rposition(|&b| b == b'/') {
                Some(slash) => prefix = &prefix[..slash],
                None => return false,
            }
        }
    }
}

/// Where a streamed comparison sends each directory as it is compared (with the entries
/// to delete in it, with `delete`), instead of gathering the work for the planner.
pub type Sink<'a> = &'a (dyn Fn(Walked, Vec<Vec<u8>>) + Sync);

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The work per directory, for the planner.
    pub dirs: Vec<DirWork>,
    /// Entries only at the destination, outermost only, sorted (with `delete`).
    pub deletions: Vec<Vec<u8>>,
    /// Files whose hard links must be redone with `rsync -H`, sorted.
    pub hard_links: Vec<Vec<u8>>,
    /// The first differences, in words, sorted.
    pub differences: Vec<String>,
    /// How many differences in all (a missing directory counts once).
    pub difference_count: u64,
    /// Files that are copied only because of their change time.
    pub forced: u64,
    /// Source entries seen.
    pub entries: u64,
    /// The thread counts the walk went through.
    pub threads: ThreadCounts,
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A directory or entry could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The step was interrupted.
    #[error("the comparison was interrupted")]
    Cancelled,
}

struct Job {
    path: Vec<u8>,
    /// The directory exists at the destination too.
    both: bool,
    /// Its own attributes differ (found by its parent's job).
    touched: bool,
}

/// A source file with more than one link: its path, its destination copy's identity, and
/// whether this pass copies it (which breaks its links at the destination).
type LinkedFile = (Vec<u8>, Option<(u64, u64)>, bool);

#[derive(Default)]
struct Found {
    dirs: Vec<DirWork>,
    deletions: Vec<Vec<u8>>,
    differences: Vec<String>,
    difference_count: u64,
    forced: u64,
    entries: u64,
    /// Source files with more than one link, by (dev, ino).
    linked: HashMap<(u64, u64), Vec<LinkedFile>>,
}

/// How the comparison walks (its threads, cancel flag, hold and counters), and (streamed)
/// where it sends each directory.
pub struct Walking<'a> {
    /// How the walk's threads run.
    pub control: WalkControl<'a>,
    /// With a sink, each directory goes there as it is compared.
    pub sink: Option<Sink<'a>>,
}

/// Compares `source` and `destination` (which may be absent) below their roots.
pub fn compare(
    source: &Path,
    destination: &Path,
    filter: &ExcludeFilter,
    options: &CompareOptions,
    walking: Walking<'_>,
) -> Result<Comparison, CompareError> {
    let Walking { control, sink } = walking;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| CompareError::Io { path, error }
    };
    // The roots may be symlinks to directories (mount points often are): follow them.
    let source_root = std::fs::metadata(source)
        .map(|meta| Meta::from(&meta))
        .map_err(io_error(source))?;
    let destination_root = match std::fs::metadata(destination) {
        Ok(meta) => Some(Meta::from(&meta)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(destination)(error)),
    };
    let trees = Trees {
        source,
        destination,
        filter,
        options,
        counters: control.counters,
        sink,
        found: Mutex::new(Found::default()),
    };
    let root = match destination_root {
        Some(dst) => Job {
            path: Vec::new(),
            both: true,
            touched: attributes_differ(&source_root, &dst, options.owners),
        },
        None => Job {
            path: Vec::new(),
            both: false,
            touched: false,
        },
    };
    let result = walker::run_jobs(vec![root], control, |job, pushed| {
        trees.compare_dir(job, pushed)
    });
    let threads = match result {
        Ok(threads) => threads,
        Err(WalkError::Cancelled) => return Err(CompareError::Cancelled),
        Err(WalkError::Failed(error)) => return Err(error),
    };
    let mut found = trees
        .found
        .into_inner()
        .map_err(|_| CompareError::Cancelled)?;
    let mut hard_links = Vec::new();
    for (_, mut group) in found.linked.drain() {
        if group.len() < 2 {
            continue;
        }
        let first = group[0].1;
        let linked_alike = first.is_some() && group.iter().all(|(_, copy, _)| *copy == first);
        if linked_alike && !group.iter().any(|(_, _, copied)| *copied) {
            continue;
        }
        group.sort();
        if !linked_alike && group.iter().all(|(_, copy, _)| copy.is_some()) {
            found.difference_count += 1;
            found.differences.push(format!(
                "not hard-linked as in the source: {}",
                group
                    .iter()
                    .map(|(path, _, _)| walker::display(path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        hard_links.extend(group.into_iter().map(|(path, _, _)| path));
    }
    hard_links.sort();
    found.deletions.sort();
    found.differences.sort();
    found.differences.truncate(options.max_differences);
    Ok(Comparison {
        dirs: found.dirs,
        deletions: found.deletions,
        hard_links,
        differences: found.differences,
        difference_count: found.difference_count,
        forced: found.forced,
        entries: found.entries,
        threads,
    })
}

fn attributes_differ(source: &Meta, destination: &Meta, owners: bool) -> bool {
    source.mode != destination.mode
        || (owners && (source.uid != destination.uid || source.gid != destination.gid))
        || (source.kind != Kind::Symlink && source.mtime != destination.mtime)
}

/// A margin for [`ChangedSince::DestinationCopy`]: a minute for clocks, plus the time the
/// copy of a file of this size may have taken at 1 MiB/s.
fn copy_margin(size: u64) -> i64 {
    60 + i64::try_from(size >> 20).unwrap_or(i64::MAX / 2)
}

/// What every directory's comparison shares: the two trees, what to compare, and where
/// the walk's findings gather.
struct Trees<'a> {
    source: &'a Path,
    destination: &'a Path,
    filter: &'a ExcludeFilter,
    options: &'a CompareOptions,
    counters: &'a WalkCounters,
    sink: Option<Sink<'a>>,
    found: Mutex<Found>,
}

impl Trees<'_> {
    /// Compares one directory's entries at both ends; its subdirectories go to `pushed`,
    /// to be compared by whichever thread is free.
    fn compare_dir(&self, job: Job, pushed: &mut Vec<Job>) -> Result<(), CompareError> {
        if let Some(delay) = self.options.dir_delay {
            std::thread::sleep(delay);
        }
        let Some(source_entries) = self.read_dir(self.source, &job.path)? else {
            // Removed while we walked: the next pass sees it gone.
            if let Some(sink) = self.sink {
                sink(Walked::Gone { path: job.path }, Vec::new());
            }
            return Ok(());
        };
        self.counters.count(source_entries.len());
        let destination_entries = if job.both {
            self.destination_listing(&job.path)?
        } else {
            None
        };
        if let Some(recorded) = &self.options.listings.recorded {
            let left = manifest::left_listing(
                &source_entries,
                destination_entries.as_deref(),
                self.options.delete,
                self.options.owners,
            );
            recorded.record(&job.path, &left);
        }
        let mut dir = DirScan {
            options: self.options,
            local: Found {
                entries: source_entries.len() as u64,
                ..Found::default()
            },
            items: Vec::new(),
            contents_change: false,
            pushed,
        };
        match destination_entries {
            // Absent at the destination: everything here is copied.
            None => {
                for entry in source_entries {
                    let path = walker::join(&job.path, &entry.name);
                    dir.copy_new(entry, path);
                }
                let items = std::mem::take(&mut dir.items);
                dir.local.dirs.push(DirWork {
                    path: job.path,
                    whole: true,
                    touched: false,
                    items,
                });
            }
            Some(destination_entries) => {
                self.compare_listings(&mut dir, &job.path, source_entries, destination_entries);
                let touched = job.touched || dir.contents_change;
                if touched || !dir.items.is_empty() {
                    let items = std::mem::take(&mut dir.items);
                    dir.local.dirs.push(DirWork {
                        path: job.path,
                        whole: false,
                        touched,
                        items,
                    });
                }
            }
        }
        let subdirs = dir.pushed.len();
        let mut local = dir.local;
        // Streamed: the directory (its one piece of work, if any) goes now, before anything
        // below it is walked.
        if let Some(sink) = self.sink
            && let Some(work) = local.dirs.pop()
        {
            sink(Walked::Dir { work, subdirs }, local.deletions.clone());
        }
        merge(&self.found, local);
        Ok(())
    }

    /// The destination's entries of directory `path`: from the trusted manifest when it
    /// has them, else read.
    fn destination_listing(&self, path: &[u8]) -> Result<Option<Vec<Entry>>, CompareError> {
        let trusted = self.options.listings.trusted.as_ref();
        match trusted.and_then(|manifest| manifest.listing(path)) {
            Some(entries) => Ok(Some(entries)),
            None => self.read_dir(self.destination, path),
        }
    }

    /// The entries of `root/path` the filter keeps, sorted by name; `None` when it is gone.
    fn read_dir(&self, root: &Path, path: &[u8]) -> Result<Option<Vec<Entry>>, CompareError> {
        let filter = self.filter;
        let keep = |name: &[u8], is_dir: bool| {
            filter.is_empty() || !filter.excludes(&walker::join(path, name), is_dir)
        };
        let dir = walker::absolute(root, path);
        walker::read_dir(&dir, keep).map_err(|error| CompareError::Io { path: dir, error })
    }

    /// Walks both sorted listings of directory `path` side by side, as a merge does.
    fn compare_listings(
        &self,
        dir: &mut DirScan<'_>,
        path: &[u8],
        source_entries: Vec<Entry>,
        destination_entries: Vec<Entry>,
    ) {
        let mut source_iter = source_entries.into_iter().peekable();
        let mut destination_iter = destination_entries.into_iter().peekable();
        loop {
            let order = match (source_iter.peek(), destination_iter.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(s), Some(d)) => s.name.cmp(&d.name),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(entry) = source_iter.next() else {
                        break;
                    };
                    dir.only_in_source(path, entry);
                }
                std::cmp::Ordering::Greater => {
                    let Some(entry) = destination_iter.next() else {
                        break;
                    };
                    dir.only_in_destination(path, &entry);
                }
                std::cmp::Ordering::Equal => {
                    let (Some(s), Some(d)) = (source_iter.next(), destination_iter.next()) else {
                        break;
                    };
                    self.in_both(dir, path, s, &d);
                }
            }
        }
    }

    /// An entry at both ends: a directory to walk, or an entry to copy if it differs (or
    /// changed since the previous pass), noting hard-linked files either way.
    fn in_both(&self, dir: &mut DirScan<'_>, parent: &[u8], s: Entry, d: &Entry) {
        let options = self.options;
        let path = walker::join(parent, &s.name);
        if s.meta.kind != d.meta.kind {
            dir.differs(format!("not the same type: {}", walker::display(&path)));
            if options.delete {
                dir.local.deletions.push(path.clone());
            }
            dir.contents_change = true;
            dir.copy_new(s, path);
            return;
        }
        if s.meta.kind == Kind::Dir {
            let touched = attributes_differ(&s.meta, &d.meta, options.owners);
            if touched {
                dir.differs(format!("attributes differ: {}/", walker::display(&path)));
            }
            dir.pushed.push(Job {
                path,
                both: true,
                touched,
            });
            return;
        }
        let s_name = if options.hard_links {
            s.name.clone()
        } else {
            Vec::new()
        };
        if let Some(reason) = entry_differs(
            &s.meta,
            &d.meta,
            options,
            &walker::absolute(self.source, &path),
            &walker::absolute(self.destination, &path),
        ) {
            dir.differs(format!("{reason}: {}", walker::display(&path)));
            dir.items.push(Item {
                name: s.name,
                bytes: s.meta.size,
                forced: false,
            });
            dir.contents_change = true;
        } else if s.meta.kind == Kind::File && changed_since(&s.meta, &d.meta, options, &path) {
            dir.local.forced += 1;
            dir.items.push(Item {
                name: s.name,
                bytes: s.meta.size,
                forced: true,
            });
            dir.contents_change = true;
        }
        if options.hard_links && s.meta.kind == Kind::File && s.meta.nlink > 1 {
            let copied = dir.items.last().is_some_and(|item| item.name == s_name);
            dir.local
                .linked
                .entry((s.meta.dev, s.meta.ino))
                .or_default()
                .push((path, Some((d.meta.dev, d.meta.ino)), copied));
        }
    }
}

/// What the comparison of one directory found so far, merged into the walk's findings at
/// its end (one lock per directory, not per entry).
struct DirScan<'p> {
    options: &'p CompareOptions,
    local: Found,
    /// Its entries to copy.
    items: Vec<Item>,
    /// An entry was added, removed or changed: the directory's times change at the
    /// destination, so its attributes are set again after the shards.
    contents_change: bool,
    /// Subdirectories to walk.
    pushed: &'p mut Vec<Job>,
}

impl DirScan<'_> {
    /// Counts a difference, and lists it while the list is short.
    fn differs(&mut self, text: String) {
        self.local.difference_count += 1;
        if self.local.differences.len() < self.options.max_differences {
            self.local.differences.push(text);
        }
    }

    /// A source entry missing at the destination.
    fn only_in_source(&mut self, parent: &[u8], entry: Entry) {
        let path = walker::join(parent, &entry.name);
        self.differs(format!(
            "missing in the destination: {}{}",
            walker::display(&path),
            if entry.meta.kind == Kind::Dir {
                "/"
            } else {
                ""
            }
        ));
        self.contents_change = true;
        self.copy_new(entry, path);
    }

    /// A destination entry missing in the source: a deletion, with `delete`.
    fn only_in_destination(&mut self, parent: &[u8], entry: &Entry) {
        if self.options.delete {
            let path = walker::join(parent, &entry.name);
            self.differs(format!(
                "only in the destination: {}",
                walker::display(&path)
            ));
            self.local.deletions.push(path);
            self.contents_change = true;
        }
    }

    /// A source entry absent at the destination (or of another type there).
    fn copy_new(&mut self, entry: Entry, path: Vec<u8>) {
        if entry.meta.kind == Kind::Dir {
            self.pushed.push(Job {
                path,
                both: false,
                touched: false,
            });
            return;
        }
        if self.options.hard_links && entry.meta.kind == Kind::File && entry.meta.nlink > 1 {
            self.local
                .linked
                .entry((entry.meta.dev, entry.meta.ino))
                .or_default()
                .push((path, None, true));
        }
        self.items.push(Item {
            name: entry.name,
            bytes: entry.meta.size,
            forced: false,
        });
    }
}

/// Why two entries of the same kind (not directories) differ, as rsync -a would see it.
fn entry_differs(
    source: &Meta,
    destination: &Meta,
    options: &CompareOptions,
    source_path: &Path,
    destination_path: &Path,
) -> Option<&'static str> {
    if options.owners && (source.uid != destination.uid || source.gid != destination.gid) {
        return Some("owner differs");
    }
    match source.kind {
        Kind::File => {
            if source.size != destination.size {
                Some("size differs")
            } else if source.mtime != destination.mtime {
                Some("modification time differs")
            } else if source.mode != destination.mode {
                Some("permissions differ")
            } else {
                None
            }
        }
        Kind::Symlink => {
            let targets = (
                std::fs::read_link(source_path),
                std::fs::read_link(destination_path),
            );
            match targets {
                (Ok(a), Ok(b)) if a == b => None,
                _ => Some("symlink target differs"),
            }
        }
        Kind::Special => {
            if source.mode != destination.mode || source.rdev != destination.rdev {
                Some("special file differs")
            } else {
                None
            }
        }
        Kind::Dir => None,
    }
}

fn changed_since(source: &Meta, destination: &Meta, options: &CompareOptions, path: &[u8]) -> bool {
    if let Some(settled) = &options.settled
        && options.changed_since != ChangedSince::Never
        && settled.covers(path)
    {
        let (secs, nanos) = settled.since;
        return (source.ctime, source.ctime_nsec) > (secs, nanos);
    }
    match options.changed_since {
        ChangedSince::Never => false,
        ChangedSince::Time { secs, nanos } => (source.ctime, source.ctime_nsec) > (secs, nanos),
        ChangedSince::DestinationCopy => {
            source.ctime.saturating_add(copy_margin(source.size)) >= destination.ctime
        }
    }
}

fn merge(found: &Mutex<Found>, local: Found) {
    let Ok(mut found) = found.lock() else { return };
    found.dirs.extend(local.dirs);
    found.deletions.extend(local.deletions);
    found.difference_count += local.difference_count;
    // Enough to pick the first ones by path later, without keeping millions.
    if found.differences.len() < 10_000 {
        found.differences.extend(local.differences);
    }
    found.forced += local.forced;
    found.entries += local.entries;
    for (key, paths) in local.linked {
        found.linked.entry(key).or_default().extend(paths);
    }
}
