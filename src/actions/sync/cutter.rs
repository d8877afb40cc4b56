//! Shards cut while the walk goes on (#17): the planner's rules, applied as the comparison
//! reports each directory, so that the copy starts at once instead of after the whole walk.
//!
//! The walk reports a directory before it walks what is below it. A directory absent at the
//! destination (a "whole" one, copied with everything below it) is complete once its own
//! entries and every subdirectory below it are reported; then, bottom-up as the planner does:
//! - a small subtree (below a quarter of a shard) waits in its parent, which may take it
//!   whole;
//! - a subtree within a shard's budget becomes one unit (one recursive entry);
//! - a bigger one, or one of which a part already went, is split: its files go one by one,
//!   the small subtrees that waited in it go whole, and it becomes a planned directory (made
//!   before the shards that write into it, its attributes set after them).
//!
//! Entries of directories present at both ends (a final pass's changed files) are units as
//! soon as their directory is reported. Units fill the open shard of their kind (new, changed,
//! forced) until it reaches the budget, which grows with what the walk has seen: small shards
//! first, so that the workers start at once, bigger ones later. [`Cutter::flush`] cuts the open
//! shards early, when the workers have nothing left to copy.
//!
//! Knows nothing of rsync or runbook: plain data in, shards and directories out.

use std::collections::{HashMap, HashSet};

use super::planner::{DirWork, PlannedDir, Shard, depth};

/// What the walk found, in the order it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walked {
    /// A directory compared; `subdirs` is how many directories the walk reports below it
    /// (those it will walk, for a directory absent at the destination).
    Dir {
        /// Its work.
        work: DirWork,
        /// Subdirectories to come.
        subdirs: usize,
    },
    /// A directory that vanished before the walk read it.
    Gone {
        /// Its path.
        path: Vec<u8>,
    },
}

/// What the cutter asks for, in order: a directory to make before anything after it is
/// copied, or a shard to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Make this new directory (its parent exists or came before).
    MakeDir(Vec<u8>),
    /// Copy this shard.
    Shard(Shard),
}

/// How big the shards are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutterConfig {
    /// The most workers the copy may use: the budget is what the walk has seen divided
    /// among `jobs × shards_per_job` shards.
    pub jobs: usize,
    /// Shards per worker.
    pub shards_per_job: usize,
    /// The budget never goes below these (a tree's first shards) ...
    pub min_files: u64,
    /// ... bytes.
    pub min_bytes: u64,
    /// ... nor above these.
    pub max_files: u64,
    /// ... bytes.
    pub max_bytes: u64,
}

impl CutterConfig {
    /// Defaults for a copy with up to `jobs` workers: those of the planner
    /// ([`super::planner::PlannerConfig::new`]).
    pub fn new(jobs: usize) -> Self {
        CutterConfig {
            jobs: jobs.max(1),
            shards_per_job: 4,
            min_files: 256,
            min_bytes: 16 << 20,
            max_files: 200_000,
            max_bytes: 64 << 30,
        }
    }
}

/// A part of the tree copied by one rsync invocation's entries.
#[derive(Debug, Clone, Default)]
struct Unit {
    entries: Vec<Vec<u8>>,
    /// Every path of it, directories before what they hold ([`Shard::listed`]).
    listed: Vec<Vec<u8>>,
    files: u64,
    bytes: u64,
}

impl Unit {
    /// One file, link or directory on its own.
    fn single(path: Vec<u8>, bytes: u64) -> Self {
        Unit {
            listed: vec![path.clone()],
            entries: vec![path],
            files: 1,
            bytes,
        }
    }

    /// A complete directory with everything below it.
    fn whole(path: Vec<u8>, node: Node) -> Self {
        let (files, bytes) = size_of(&node);
        let mut listed = Vec::with_capacity(usize::try_from(files).unwrap_or(0));
        listed.push(path.clone());
        listed.extend(node.own.into_iter().map(|(file, _)| file));
        for held in node.held {
            listed.extend(held.listed);
        }
        Unit {
            entries: vec![path],
            listed,
            files,
            bytes,
        }
    }
}

/// A directory absent at the destination, waiting for what is below it.
#[derive(Debug, Default)]
struct Node {
    /// Its files (and links), by path, with their sizes.
    own: Vec<(Vec<u8>, u64)>,
    /// Subdirectories not complete yet.
    pending: usize,
    /// A part of it went already: it is never copied whole.
    split: bool,
    /// Small complete subtrees that waited for it.
    held: Vec<Unit>,
}

/// The shards of the three kinds being filled.
#[derive(Debug, Default)]
struct OpenShards {
    /// Everything absent at the destination (written in place).
    fresh: Shard,
    /// Changed entries.
    changed: Shard,
    /// Entries copied for their change time (`-I`).
    forced: Shard,
}

/// Cuts shards from what the walk reports; see the module's documentation.
#[derive(Debug)]
pub struct Cutter {
    config: CutterConfig,
    nodes: HashMap<Vec<u8>, Node>,
    /// Every directory absent at the destination the walk reported, and those made.
    new_dirs: HashSet<Vec<u8>>,
    made: HashSet<Vec<u8>>,
    open: OpenShards,
    planned_dirs: Vec<PlannedDir>,
    /// Files and bytes the walk reported so far: the budget grows with them.
    seen: (u64, u64),
    /// The most files a shard may hold for the copy's pace ([`Cutter::limit_files`]).
    paced_files: Option<u64>,
    out: Vec<Cut>,
}

impl Cutter {
    /// An empty cutter.
    pub fn new(config: CutterConfig) -> Self {
        Cutter {
            config,
            nodes: HashMap::new(),
            new_dirs: HashSet::new(),
            made: HashSet::new(),
            open: OpenShards::default(),
            planned_dirs: Vec::new(),
            seen: (0, 0),
            paced_files: None,
            out: Vec::new(),
        }
    }

    /// Cuts shards of at most `files` files from now on (never fewer than the configured
    /// least): what a worker copies in a second, so that rsync reaches a shard's last file
    /// while the file system still caches what the walk and rsync's file list read
    /// ([`super::pace::Pace::shard_files`]).
    pub fn limit_files(&mut self, files: u64) {
        self.paced_files = Some(files);
    }

    /// The entries the walk reported to copy so far (files, links and directories).
    pub fn seen_files(&self) -> u64 {
        self.seen.0
    }

    /// Takes what the walk reported; returns what to do now, in order.
    pub fn add(&mut self, walked: Walked) -> Vec<Cut> {
        match walked {
            Walked::Dir { work, subdirs } => {
                self.seen.0 += work.items.len() as u64 + 1;
                self.seen.1 += work.items.iter().map(|item| item.bytes).sum::<u64>();
                if work.whole {
                    self.add_whole(work, subdirs);
                } else {
                    self.add_both(work);
                }
            }
            Walked::Gone { path } => {
                let parent = parent_of(&path);
                if let Some(node) = self.nodes.get_mut(&parent) {
                    node.pending = node.pending.saturating_sub(1);
                    self.complete_upwards(parent);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Cuts the open shards that hold anything (the workers are idle).
    pub fn flush(&mut self) -> Vec<Cut> {
        for kind in [Kind::Fresh, Kind::Changed, Kind::Forced] {
            self.cut(kind);
        }
        std::mem::take(&mut self.out)
    }

    /// The walk is over: everything still waiting goes (a directory whose subdirectories
    /// were not all reported, as after an error, is split), and the planned directories,
    /// parents first.
    pub fn finish(mut self) -> (Vec<Cut>, Vec<PlannedDir>) {
        let mut waiting: Vec<Vec<u8>> = self.nodes.keys().cloned().collect();
        // Deepest first, so that a parent sees its children's units.
        waiting.sort_by_key(|path| std::cmp::Reverse(depth(path)));
        for path in waiting {
            if let Some(node) = self.nodes.remove(&path) {
                self.split(path, node);
            }
        }
        let mut cuts = self.flush();
        cuts.extend(std::mem::take(&mut self.out));
        let mut dirs = self.planned_dirs;
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        dirs.dedup();
        (cuts, dirs)
    }

    fn add_whole(&mut self, work: DirWork, subdirs: usize) {
        let own = work
            .items
            .iter()
            .map(|item| (join(&work.path, &item.name), item.bytes))
            .collect();
        self.new_dirs.insert(work.path.clone());
        self.nodes.insert(
            work.path.clone(),
            Node {
                own,
                pending: subdirs,
                ..Node::default()
            },
        );
        self.complete_upwards(work.path);
    }

    fn add_both(&mut self, work: DirWork) {
        if work.touched || !work.items.is_empty() {
            self.planned_dirs.push(PlannedDir {
                path: work.path.clone(),
                new: false,
            });
        }
        for item in work.items {
            let unit = Unit::single(join(&work.path, &item.name), item.bytes);
            let kind = if item.forced {
                Kind::Forced
            } else {
                Kind::Changed
            };
            self.emit(unit, kind);
        }
    }

    /// Settles `path` if it is complete, then its parents that this completes.
    fn complete_upwards(&mut self, mut path: Vec<u8>) {
        while self.nodes.get(&path).is_some_and(|node| node.pending == 0) {
            let Some(node) = self.nodes.remove(&path) else {
                return;
            };
            let parent = parent_of(&path);
            let (files, bytes) = size_of(&node);
            let (budget_files, budget_bytes) = self.budget();
            let waits_in_parent = self.nodes.contains_key(&parent)
                && files < budget_files / 4
                && bytes < budget_bytes / 4;
            if !node.split && waits_in_parent {
                let whole = Unit::whole(path, node);
                if let Some(parent_node) = self.nodes.get_mut(&parent) {
                    parent_node.held.push(whole);
                }
            } else if !node.split && files <= budget_files && bytes <= budget_bytes {
                self.emit(Unit::whole(path, node), Kind::Fresh);
                self.mark_split(&parent);
            } else {
                self.split(path, node);
                self.mark_split(&parent);
            }
            let Some(parent_node) = self.nodes.get_mut(&parent) else {
                return;
            };
            parent_node.pending = parent_node.pending.saturating_sub(1);
            path = parent;
        }
    }

    fn mark_split(&mut self, path: &[u8]) {
        if let Some(node) = self.nodes.get_mut(path) {
            node.split = true;
        }
    }

    /// A new directory that is not copied whole: its files one by one, the subtrees that
    /// waited in it whole; it is planned.
    fn split(&mut self, path: Vec<u8>, node: Node) {
        self.make_dirs_for(&join(&path, b"x"));
        for (file, bytes) in node.own {
            self.emit(Unit::single(file, bytes), Kind::Fresh);
        }
        for held in node.held {
            self.emit(held, Kind::Fresh);
        }
        self.planned_dirs.push(PlannedDir { path, new: true });
    }

    /// Asks for the new directories above `path` that are not made yet, parents first.
    fn make_dirs_for(&mut self, path: &[u8]) {
        let mut missing = Vec::new();
        let mut dir = parent_of(path);
        while self.new_dirs.contains(&dir) && !self.made.contains(&dir) {
            missing.push(dir.clone());
            if dir.is_empty() {
                break;
            }
            dir = parent_of(&dir);
        }
        for dir in missing.into_iter().rev() {
            self.made.insert(dir.clone());
            self.out.push(Cut::MakeDir(dir));
        }
    }

    /// What a shard may hold now: what the walk has seen divided among the shards the
    /// starting workers want, within the configured bounds and the copy's pace.
    fn budget(&self) -> (u64, u64) {
        let config = &self.config;
        let shards = (config.jobs * config.shards_per_job).max(1) as u64;
        let most_files = config
            .max_files
            .min(self.paced_files.unwrap_or(u64::MAX))
            .max(config.min_files);
        (
            (self.seen.0 / shards).clamp(config.min_files, most_files),
            (self.seen.1 / shards).clamp(config.min_bytes, config.max_bytes.max(config.min_bytes)),
        )
    }

    /// Puts a unit into the open shard of its kind, cutting it before when the unit would
    /// overfill it, and after when it is full.
    fn emit(&mut self, unit: Unit, kind: Kind) {
        for entry in &unit.entries {
            self.make_dirs_for(entry);
        }
        let (budget_files, budget_bytes) = self.budget();
        let open = self.open.of(kind);
        if !open.entries.is_empty()
            && (open.files + unit.files > budget_files || open.bytes + unit.bytes > budget_bytes)
        {
            self.cut(kind);
        }
        let open = self.open.of(kind);
        open.entries.extend(unit.entries);
        open.listed.extend(unit.listed);
        open.files += unit.files;
        open.bytes += unit.bytes;
        if open.files >= budget_files || open.bytes >= budget_bytes {
            self.cut(kind);
        }
    }

    fn cut(&mut self, kind: Kind) {
        let open = self.open.of(kind);
        if open.entries.is_empty() {
            return;
        }
        let mut shard = std::mem::take(open);
        shard.fresh = kind == Kind::Fresh;
        shard.ignore_times = kind == Kind::Forced;
        self.out.push(Cut::Shard(shard));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fresh,
    Changed,
    Forced,
}

impl OpenShards {
    fn of(&mut self, kind: Kind) -> &mut Shard {
        match kind {
            Kind::Fresh => &mut self.fresh,
            Kind::Changed => &mut self.changed,
            Kind::Forced => &mut self.forced,
        }
    }
}

/// Entries (the directory itself counts) and bytes of a complete node.
fn size_of(node: &Node) -> (u64, u64) {
    let files = 1 + node.own.len() as u64 + node.held.iter().map(|u| u.files).sum::<u64>();
    let bytes = node.own.iter().map(|(_, b)| b).sum::<u64>()
        + node.held.iter().map(|u| u.bytes).sum::<u64>();
    (files, bytes)
}

fn parent_of(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => path[..slash].to_vec(),
        None => Vec::new(),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    super::walker::join(parent, name)
}

#[cfg(test)]
mod tests {
    use super::super::planner::Item;
    use super::*;

    fn dir(path: &str, whole: bool, files: &[(&str, u64)], subdirs: usize) -> Walked {
        Walked::Dir {
            work: DirWork {
                path: path.as_bytes().to_vec(),
                whole,
                touched: false,
                items: files
                    .iter()
                    .map(|(name, bytes)| Item {
                        name: name.as_bytes().to_vec(),
                        bytes: *bytes,
                        forced: false,
                    })
                    .collect(),
            },
            subdirs,
        }
    }

    fn small() -> CutterConfig {
        CutterConfig {
            jobs: 1,
            shards_per_job: 1,
            min_files: 10,
            min_bytes: 1 << 40,
            max_files: 10,
            max_bytes: 1 << 40,
        }
    }

    fn shards(cuts: &[Cut]) -> Vec<Vec<String>> {
        cuts.iter()
            .filter_map(|cut| match cut {
                Cut::Shard(shard) => Some(
                    shard
                        .entries
                        .iter()
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect(),
                ),
                Cut::MakeDir(_) => None,
            })
            .collect()
    }

    fn files(n: usize) -> Vec<(String, u64)> {
        (0..n).map(|i| (format!("f{i}"), 1)).collect()
    }

    fn dir_of(path: &str, names: &[(String, u64)], subdirs: usize) -> Walked {
        let named: Vec<(&str, u64)> = names.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        dir(path, true, &named, subdirs)
    }

    #[test]
    fn a_home_goes_whole_as_soon_as_it_is_walked_before_the_rest_of_the_tree() {
        let mut cutter = Cutter::new(CutterConfig {
            min_files: 20,
            max_files: 20,
            ..small()
        });
        assert!(cutter.add(dir("", false, &[], 0)).is_empty());
        // home a: 4 files and one small subdirectory (it waits in a): whole once it is in.
        assert!(cutter.add(dir_of("a", &files(4), 1)).is_empty());
        let cuts = cutter.add(dir_of("a/sub", &files(2), 0));
        assert!(cuts.is_empty(), "a unit waits in its open shard: {cuts:?}");
        // home b: 16 more entries overfill the open shard (8 + 16 > 20): a is cut alone.
        let cuts = cutter.add(dir_of("b", &files(15), 0));
        assert_eq!(shards(&cuts), vec![vec!["a"]]);
        let (rest, dirs) = cutter.finish();
        assert_eq!(shards(&rest), vec![vec!["b"]]);
        assert!(dirs.is_empty(), "no directory was split: {dirs:?}");
    }

    #[test]
    fn a_shard_lists_every_path_the_walk_saw_so_that_rsync_reads_no_directory_again() {
        let mut cutter = Cutter::new(CutterConfig {
            min_files: 20,
            max_files: 20,
            ..small()
        });
        cutter.add(dir("", false, &[], 0));
        cutter.add(dir_of("a", &files(2), 2));
        cutter.add(dir_of("a/empty", &[], 0));
        cutter.add(dir_of("a/sub", &files(1), 0));
        let (cuts, _) = cutter.finish();
        let [Cut::Shard(shard)] = cuts.as_slice() else {
            panic!("one shard: {cuts:?}");
        };
        assert_eq!(shard.entries, vec![b"a".to_vec()], "journaled as one entry");
        let listed: Vec<String> = shard
            .listed
            .iter()
            .map(|path| String::from_utf8_lossy(path).into_owned())
            .collect();
        assert_eq!(
            listed,
            ["a", "a/f0", "a/f1", "a/empty", "a/sub", "a/sub/f0"],
            "every directory before what it holds, empty ones too"
        );
        assert_eq!(shard.files, listed.len() as u64);
    }

    #[test]
    fn a_directory_bigger_than_a_shard_is_split_and_made_first() {
        let mut cutter = Cutter::new(small());
        cutter.add(dir("", false, &[], 0));
        // big: 25 files of its own and two subdirectories of 6 files each.
        let mut cuts = cutter.add(dir_of("big", &files(25), 2));
        assert!(cuts.is_empty());
        // x (7 entries) is a unit of its own: big, which it is copied into, is made first.
        cuts.extend(cutter.add(dir_of("big/x", &files(6), 0)));
        assert_eq!(cuts, vec![Cut::MakeDir(b"big".to_vec())]);
        cuts.extend(cutter.add(dir_of("big/y", &files(6), 0)));
        let (rest, dirs) = cutter.finish();
        cuts.extend(rest);
        let all: Vec<String> = shards(&cuts).into_iter().flatten().collect();
        assert_eq!(
            all.len(),
            2 + 25,
            "both subtrees and every file once: {all:?}"
        );
        assert!(all.contains(&"big/x".to_string()) && all.contains(&"big/y".to_string()));
        assert!(all.contains(&"big/f24".to_string()));
        assert!(shards(&cuts).iter().all(|shard| shard.len() <= 10));
        let made = cuts
            .iter()
            .filter(|cut| matches!(cut, Cut::MakeDir(_)))
            .count();
        assert_eq!(made, 1, "big is made once: {cuts:?}");
        assert_eq!(
            dirs,
            vec![PlannedDir {
                path: b"big".to_vec(),
                new: true
            }]
        );
    }

    #[test]
    fn small_subtrees_wait_in_their_parent_which_goes_whole() {
        let mut cutter = Cutter::new(CutterConfig {
            min_files: 100,
            max_files: 100,
            ..small()
        });
        cutter.add(dir("", false, &[], 0));
        cutter.add(dir_of("h", &files(3), 2));
        assert!(cutter.add(dir_of("h/a", &files(2), 0)).is_empty());
        assert!(cutter.add(dir_of("h/b", &files(2), 1)).is_empty());
        assert!(cutter.add(dir_of("h/b/c", &files(2), 0)).is_empty());
        let (cuts, dirs) = cutter.finish();
        assert_eq!(shards(&cuts), vec![vec!["h"]]);
        assert!(dirs.is_empty());
        assert!(!cuts.iter().any(|cut| matches!(cut, Cut::MakeDir(_))));
    }

    #[test]
    fn changed_and_forced_files_of_a_final_pass_go_at_once_in_shards_of_their_kind() {
        let mut cutter = Cutter::new(small());
        let mut work = DirWork {
            path: b"home".to_vec(),
            whole: false,
            touched: true,
            items: Vec::new(),
        };
        for i in 0..12 {
            work.items.push(Item {
                name: format!("f{i}").into_bytes(),
                bytes: 1,
                forced: i % 6 == 0,
            });
        }
        let cuts = cutter.add(Walked::Dir { work, subdirs: 0 });
        assert_eq!(shards(&cuts).len(), 1, "ten changed files fill a shard");
        let (rest, dirs) = cutter.finish();
        let Cut::Shard(forced) = &rest[0] else {
            panic!("{rest:?}")
        };
        assert!(forced.ignore_times && !forced.fresh);
        assert_eq!(forced.entries.len(), 2);
        assert_eq!(
            dirs,
            vec![PlannedDir {
                path: b"home".to_vec(),
                new: false
            }]
        );
    }

    #[test]
    fn a_vanished_subdirectory_does_not_keep_its_parent_waiting() {
        let mut cutter = Cutter::new(small());
        cutter.add(dir("", false, &[], 0));
        cutter.add(dir_of("h", &files(2), 1));
        cutter.add(Walked::Gone {
            path: b"h/gone".to_vec(),
        });
        let cuts = cutter.flush();
        assert_eq!(shards(&cuts), vec![vec!["h"]]);
    }

    #[test]
    fn the_budget_grows_with_what_the_walk_has_seen() {
        let mut cutter = Cutter::new(CutterConfig {
            jobs: 1,
            shards_per_job: 2,
            min_files: 10,
            min_bytes: 1 << 40,
            max_files: 1000,
            max_bytes: 1 << 40,
        });
        assert_eq!(cutter.budget().0, 10);
        cutter.add(dir("", false, &[], 0));
        cutter.add(dir_of("a", &files(99), 0));
        cutter.add(dir_of("b", &files(99), 0));
        cutter.add(dir_of("c", &files(99), 0));
        assert_eq!(cutter.budget().0, 150, "301 entries seen, over two shards");
        // The copy's pace caps it, never below the configured least.
        cutter.limit_files(40);
        assert_eq!(cutter.budget().0, 40);
        cutter.limit_files(3);
        assert_eq!(cutter.budget().0, 10);
    }
}
