//! The shard planner: splits the work of a copy into shards of about equal cost, for parallel
//! rsync workers.
//!
//! Cost counts bytes and files alike (a shard of a million small files is as slow as one of a
//! few huge ones): each is a fraction of the total, summed. A directory whose cost is above a
//! shard's share is split into its children, so that one huge home directory does not make
//! one worker copy for days while the others idle; units are grouped into shards in tree
//! order (neighbours together), and the shards are handed out biggest first.
//!
//! Knows nothing of rsync or runbook: paths are `/`-separated bytes relative to the root of
//! the copy (empty for the root itself).

use std::collections::HashMap;

/// An entry that is not a directory, to be copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its name in its directory.
    pub name: Vec<u8>,
    /// Its size.
    pub bytes: u64,
    /// Must be copied even if size and modification time match (changed since the last
    /// pass in a way rsync's quick check cannot see).
    pub forced: bool,
}

/// One directory of the work, as a comparison of the two trees found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirWork {
    /// Its path; empty for the root.
    pub path: Vec<u8>,
    /// Absent at the destination: the directory and everything below it is to be copied;
    /// its subdirectories appear as `DirWork`s of their own, also `whole`.
    pub whole: bool,
    /// Present at both ends, but its own attributes differ or its contents change: it gets
    /// an attribute pass after the shards.
    pub touched: bool,
    /// Its entries to copy that are not directories (all of them when `whole`).
    pub items: Vec<Item>,
}

/// How many shards, and how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Parallel workers.
    pub jobs: usize,
    /// Shards per worker: more give better balance at the end and finer resume.
    pub shards_per_job: usize,
    /// At most this many bytes in a shard (more shards for big trees).
    pub max_shard_bytes: u64,
    /// At most this many files in a shard.
    pub max_shard_files: u64,
    /// Not fewer bytes than this in a shard, unless files make it worth it (tiny trees
    /// need no 16 rsync processes).
    pub min_shard_bytes: u64,
    /// Not fewer files than this in a shard, unless bytes make it worth it.
    pub min_shard_files: u64,
}

impl PlannerConfig {
    /// Defaults for `jobs` workers.
    pub fn new(jobs: usize) -> Self {
        PlannerConfig {
            jobs: jobs.max(1),
            shards_per_job: 4,
            max_shard_bytes: 64 << 30,
            max_shard_files: 200_000,
            min_shard_bytes: 16 << 20,
            min_shard_files: 256,
        }
    }

    /// The number of shards for a tree of this size.
    pub fn shard_count(&self, bytes: u64, files: u64) -> usize {
        let wanted = (self.jobs * self.shards_per_job) as u64;
        let for_size = bytes.div_ceil(self.max_shard_bytes.max(1));
        let for_files = files.div_ceil(self.max_shard_files.max(1));
        let worth = bytes
            .div_ceil(self.min_shard_bytes.max(1))
            .max(files.div_ceil(self.min_shard_files.max(1)));
        let count = wanted.max(for_size).max(for_files).min(worth.max(1));
        usize::try_from(count).unwrap_or(usize::MAX).max(1)
    }
}

/// What one rsync process copies: entries listed for `--files-from` with `-r`, so a listed
/// directory brings everything below it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shard {
    /// Paths: whole directories and single entries. `.` is the whole tree.
    pub entries: Vec<Vec<u8>>,
    /// Bytes in it.
    pub bytes: u64,
    /// Entries in it (files, links and directories).
    pub files: u64,
    /// Copy even what has the same size and time (rsync's `-I`).
    pub ignore_times: bool,
    /// Everything in it is absent at the destination: rsync may write the files in place.
    pub fresh: bool,
    /// Every path in it, directories before what they hold, when the walk that cut it
    /// listed them ([`super::cutter`]): rsync is given these without `-r`, so that it reads
    /// no directory the walk has read already (three round trips a directory on NFS).
    /// Empty: `entries`, with `-r`. Never journaled: a resumed shard lists its entries.
    pub listed: Vec<Vec<u8>>,
}

/// A directory that is not copied whole by any shard: it is created before the shards
/// (when `new`) and gets its attributes (permissions, owner, times) after them, since the
/// shards writing into it change its modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDir {
    /// Its path; empty for the root.
    pub path: Vec<u8>,
    /// Absent at the destination.
    pub new: bool,
}

/// The plan of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardPlan {
    /// Biggest first.
    pub shards: Vec<Shard>,
    /// Directories split between shards or only touched, parents before children.
    pub dirs: Vec<PlannedDir>,
    /// Bytes in all shards.
    pub total_bytes: u64,
    /// Entries in all shards.
    pub total_files: u64,
}

impl ShardPlan {
    /// A plan of these shards and directories, with their totals.
    pub fn of(shards: Vec<Shard>, dirs: Vec<PlannedDir>) -> Self {
        ShardPlan {
            total_bytes: shards.iter().map(|s| s.bytes).sum(),
            total_files: shards.iter().map(|s| s.files).sum(),
            shards,
            dirs,
        }
    }
}

struct Node {
    work: DirWork,
    children: Vec<usize>,
    bytes: u64,
    files: u64,
}

impl Node {
    fn new(work: DirWork) -> Self {
        Node {
            work,
            children: Vec::new(),
            bytes: 0,
            files: 0,
        }
    }
}

/// A unit of work that cannot be split further by the planner.
struct Unit {
    path: Vec<u8>,
    bytes: u64,
    files: u64,
    forced: bool,
    /// Absent at the destination.
    fresh: bool,
}

/// The directories of the work as a tree, each with the total of its subtree.
struct WorkTree {
    nodes: Vec<Node>,
    root: usize,
}

/// How costly a part of the tree is: bytes and files alike, each as a fraction of the
/// total; `share` is what one shard should hold.
struct Cost {
    total_bytes: u64,
    total_files: u64,
    share: f64,
}

impl Cost {
    fn of(&self, bytes: u64, files: u64) -> f64 {
        bytes as f64 / self.total_bytes.max(1) as f64
            + files as f64 / self.total_files.max(1) as f64
    }
}

/// Plans shards for the work found by a comparison. Directories may come in any order; a
/// directory whose parent is missing gets an empty parent (unchanged directories are not
/// reported).
pub fn plan(dirs: Vec<DirWork>, config: &PlannerConfig) -> ShardPlan {
    let tree = WorkTree::build(dirs);
    let root = &tree.nodes[tree.root];
    let (total_bytes, total_files) = (root.bytes, root.files);
    let shard_count = config.shard_count(total_bytes, total_files);
    let mut cost = Cost {
        total_bytes,
        total_files,
        share: 0.0,
    };
    cost.share = cost.of(total_bytes, total_files) / shard_count as f64;
    let (units, dirs) = tree.units(&cost);
    ShardPlan::of(group_into_shards(&units, &cost), dirs)
}

impl WorkTree {
    /// The tree of `dirs`, with the root and any missing parent added empty, children in
    /// path order and every subtree totalled.
    fn build(dirs: Vec<DirWork>) -> Self {
        let mut nodes: Vec<Node> = Vec::with_capacity(dirs.len() + 1);
        let mut index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(dirs.len() + 1);
        for work in dirs {
            if let Some(&existing) = index.get(&work.path) {
                // The same directory twice: merge (does not happen with a tree walk).
                let node = &mut nodes[existing];
                node.work.whole |= work.whole;
                node.work.touched |= work.touched;
                node.work.items.extend(work.items);
                continue;
            }
            index.insert(work.path.clone(), nodes.len());
            nodes.push(Node::new(work));
        }
        if let std::collections::hash_map::Entry::Vacant(root) = index.entry(Vec::new()) {
            root.insert(nodes.len());
            nodes.push(Node::new(DirWork::default()));
        }
        // Link every node to its parent, creating empty parents where a walk reported none.
        let mut next = 0;
        while next < nodes.len() {
            let path = nodes[next].work.path.clone();
            if !path.is_empty() {
                let parent_path = match path.iter().rposition(|&b| b == b'/') {
                    Some(slash) => path[..slash].to_vec(),
                    None => Vec::new(),
                };
                let parent = match index.get(&parent_path) {
                    Some(&parent) => parent,
                    None => {
                        index.insert(parent_path.clone(), nodes.len());
                        nodes.push(Node::new(DirWork {
                            path: parent_path,
                            ..DirWork::default()
                        }));
                        nodes.len() - 1
                    }
                };
                nodes[parent].children.push(next);
            }
            next += 1;
        }
        let mut tree = WorkTree {
            root: index[&Vec::new()],
            nodes,
        };
        tree.total();
        tree
    }

    /// Orders children by path, and totals the subtrees bottom-up (children have longer
    /// paths).
    fn total(&mut self) {
        let nodes = &mut self.nodes;
        let mut by_depth: Vec<usize> = (0..nodes.len()).collect();
        by_depth.sort_by_key(|&i| std::cmp::Reverse(depth(&nodes[i].work.path)));
        for &i in &by_depth {
            let mut children = std::mem::take(&mut nodes[i].children);
            children.sort_by(|&a, &b| nodes[a].work.path.cmp(&nodes[b].work.path));
            let (mut bytes, mut files) = (0u64, 0u64);
            for &child in &children {
                bytes += nodes[child].bytes;
                files += nodes[child].files;
            }
            let node = &mut nodes[i];
            node.children = children;
            bytes += node.work.items.iter().map(|item| item.bytes).sum::<u64>();
            files += node.work.items.len() as u64 + u64::from(node.work.whole);
            node.bytes = bytes;
            node.files = files;
        }
    }

    /// Depth first, in path order: whole directories within their share become units;
    /// others are split into their entries and subdirectories (and are planned directories
    /// when new or touched).
    fn units(&self, cost: &Cost) -> (Vec<Unit>, Vec<PlannedDir>) {
        let mut units = Vec::new();
        let mut planned_dirs = Vec::new();
        let mut stack = vec![self.root];
        while let Some(i) = stack.pop() {
            let node = &self.nodes[i];
            if node.work.whole && cost.of(node.bytes, node.files) <= cost.share {
                units.push(Unit {
                    path: if node.work.path.is_empty() {
                        b".".to_vec()
                    } else {
                        node.work.path.clone()
                    },
                    bytes: node.bytes,
                    files: node.files,
                    forced: false,
                    fresh: true,
                });
                continue;
            }
            if node.work.whole || node.work.touched {
                planned_dirs.push(PlannedDir {
                    path: node.work.path.clone(),
                    new: node.work.whole,
                });
            }
            for item in &node.work.items {
                units.push(Unit {
                    path: join(&node.work.path, &item.name),
                    bytes: item.bytes,
                    files: 1,
                    forced: item.forced,
                    fresh: node.work.whole,
                });
            }
            stack.extend(node.children.iter().rev());
        }
        (units, planned_dirs)
    }
}

/// Neighbouring units share a shard until it holds its share (forced units in shards of
/// their own); biggest shard first.
fn group_into_shards(units: &[Unit], cost: &Cost) -> Vec<Shard> {
    let mut shards: Vec<Shard> = Vec::new();
    for forced in [false, true] {
        let new_shard = || Shard {
            ignore_times: forced,
            fresh: true,
            ..Shard::default()
        };
        let mut current = new_shard();
        for unit in units.iter().filter(|unit| unit.forced == forced) {
            let full = cost.of(current.bytes + unit.bytes, current.files + unit.files) > cost.share;
            if full && !current.entries.is_empty() {
                shards.push(std::mem::replace(&mut current, new_shard()));
            }
            current.entries.push(unit.path.clone());
            current.fresh &= unit.fresh;
            current.bytes += unit.bytes;
            current.files += unit.files;
        }
        if !current.entries.is_empty() {
            shards.push(current);
        }
    }
    // Biggest first: the longest shard must start first or it finishes last, alone.
    shards.sort_by(|a, b| {
        cost.of(b.bytes, b.files)
            .partial_cmp(&cost.of(a.bytes, a.files))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    shards
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    [parent, b"/", name].concat()
}

/// How deep a path is: 0 for the root, 1 for its entries, ...
pub(super) fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|&&b| b == b'/').count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: u64) -> Item {
        Item {
            name: name.as_bytes().to_vec(),
            bytes,
            forced: false,
        }
    }

    fn whole(path: &str, items: Vec<Item>) -> DirWork {
        DirWork {
            path: path.as_bytes().to_vec(),
            whole: true,
            touched: false,
            items,
        }
    }

    /// A fresh copy: the root exists at the destination (touched), the rest is new.
    fn homes(sizes: &[(usize, u64)]) -> Vec<DirWork> {
        let mut dirs = vec![DirWork {
            path: Vec::new(),
            touched: true,
            ..DirWork::default()
        }];
        for (i, &(files, bytes)) in sizes.iter().enumerate() {
            let items = (0..files)
                .map(|f| file(&format!("f{f}"), bytes / files as u64))
                .collect();
            dirs.push(whole(&format!("home{i:03}"), items));
        }
        dirs
    }

    fn config(jobs: usize) -> PlannerConfig {
        PlannerConfig {
            min_shard_bytes: 1,
            min_shard_files: 1,
            ..PlannerConfig::new(jobs)
        }
    }

    #[test]
    fn equal_homes_make_balanced_shards() {
        let plan = plan(homes(&[(100, 1_000_000); 64]), &config(4));
        assert_eq!(plan.shards.len(), 16);
        for shard in &plan.shards {
            assert_eq!(shard.entries.len(), 4, "{shard:?}");
            assert_eq!(shard.bytes, 4_000_000);
        }
        assert_eq!(plan.total_bytes, 64_000_000);
        // Every home is a whole unit; only the root is a planned directory.
        assert_eq!(
            plan.dirs,
            vec![PlannedDir {
                path: Vec::new(),
                new: false
            }]
        );
    }

    #[test]
    fn a_directory_bigger_than_its_share_is_split_into_its_children() {
        // One home holds half the bytes, in 100 files under two subdirectories.
        let mut dirs = homes(&[(10, 1_000_000); 20]);
        dirs.push(whole("big", vec![file("top", 1_000_000)]));
        dirs.push(whole(
            "big/a",
            (0..50).map(|i| file(&format!("a{i}"), 200_000)).collect(),
        ));
        dirs.push(whole(
            "big/b",
            (0..50).map(|i| file(&format!("b{i}"), 200_000)).collect(),
        ));
        let plan = plan(dirs, &config(4));
        let total = plan.total_bytes;
        assert_eq!(total, 41_000_000);
        // No shard is much above its share: the big home was split.
        let share = total / plan.shards.len() as u64;
        for shard in &plan.shards {
            assert!(shard.bytes <= share * 2, "{} > 2 × {share}", shard.bytes);
            assert!(!shard.entries.contains(&b"big".to_vec()));
        }
        assert!(plan.dirs.iter().any(|d| d.path == b"big" && d.new));
        let listed: Vec<&[u8]> = plan
            .shards
            .iter()
            .flat_map(|s| s.entries.iter().map(Vec::as_slice))
            .collect();
        assert!(listed.contains(&&b"big/top"[..]));
        // Every byte is in exactly one shard.
        assert_eq!(plan.shards.iter().map(|s| s.bytes).sum::<u64>(), total);
        // An initial copy: nothing is at the destination, every shard is written in place.
        assert!(plan.shards.iter().all(|s| s.fresh));
    }

    #[test]
    fn shards_come_biggest_first() {
        let mut dirs = homes(&[(1, 1_000); 30]);
        dirs.push(whole("huge", vec![file("disk.img", 50_000_000)]));
        let plan = plan(dirs, &config(2));
        let first = &plan.shards[0];
        assert!(
            first.entries.contains(&b"huge/disk.img".to_vec())
                || first.entries.contains(&b"huge".to_vec())
        );
        let costs: Vec<u64> = plan.shards.iter().map(|s| s.bytes).collect();
        assert!(costs[0] >= costs[costs.len() - 1]);
    }

    #[test]
    fn file_counts_weigh_as_much_as_bytes() {
        // Two homes with the same bytes, one in 10 000 files: it must be split, the other not.
        let mut dirs = homes(&[]);
        dirs.push(whole(
            "many",
            (0..10_000).map(|i| file(&format!("f{i}"), 100)).collect(),
        ));
        dirs.push(whole("few", vec![file("one", 1_000_000)]));
        let plan = plan(dirs, &config(2));
        let with_many: Vec<&Shard> = plan
            .shards
            .iter()
            .filter(|s| s.entries.iter().any(|e| e.starts_with(b"many/")))
            .collect();
        assert!(
            with_many.len() >= 3,
            "the home with many files stays in {} shards",
            with_many.len()
        );
    }

    #[test]
    fn a_tiny_tree_is_one_shard() {
        let mut dirs = vec![whole("", vec![file("a", 10), file("b", 20)])];
        dirs.push(whole("sub", vec![file("c", 5)]));
        let plan = plan(dirs, &PlannerConfig::new(4));
        assert_eq!(plan.shards.len(), 1);
        assert_eq!(plan.shards[0].entries, vec![b".".to_vec()]);
        assert_eq!(plan.shards[0].files, 5);
        assert!(plan.dirs.is_empty());
    }

    #[test]
    fn a_final_pass_lists_only_what_differs_and_forced_files_apart() {
        let dirs = vec![
            DirWork {
                path: b"a/b".to_vec(),
                touched: true,
                items: vec![
                    file("changed", 10),
                    Item {
                        name: b"same-size-and-time".to_vec(),
                        bytes: 10,
                        forced: true,
                    },
                ],
                ..DirWork::default()
            },
            whole("a/new", vec![file("x", 1)]),
        ];
        let plan = plan(dirs, &PlannerConfig::new(4));
        let forced: Vec<&Shard> = plan.shards.iter().filter(|s| s.ignore_times).collect();
        assert_eq!(forced.len(), 1);
        assert_eq!(forced[0].entries, vec![b"a/b/same-size-and-time".to_vec()]);
        let normal: Vec<&Vec<u8>> = plan
            .shards
            .iter()
            .filter(|s| !s.ignore_times)
            .flat_map(|s| &s.entries)
            .collect();
        assert_eq!(normal, vec![&b"a/b/changed".to_vec(), &b"a/new".to_vec()]);
        // A file that is at the destination is not written in place, nor its shard.
        assert!(plan.shards.iter().all(|s| !s.fresh));
        let only_new = super::plan(
            vec![whole("a/new", vec![file("x", 1)])],
            &PlannerConfig::new(4),
        );
        assert!(only_new.shards.iter().all(|s| s.fresh));
        // The unchanged parents `a` and the root were not reported and need no pass.
        assert_eq!(
            plan.dirs,
            vec![PlannedDir {
                path: b"a/b".to_vec(),
                new: false
            }]
        );
    }

    #[test]
    fn nothing_to_do_is_an_empty_plan() {
        let plan = plan(Vec::new(), &PlannerConfig::new(4));
        assert!(plan.shards.is_empty());
        assert!(plan.dirs.is_empty());
    }

    #[test]
    fn shard_count_grows_with_the_tree_and_shrinks_for_tiny_ones() {
        let config = PlannerConfig::new(4);
        assert_eq!(config.shard_count(0, 3), 1);
        assert_eq!(config.shard_count(100 << 30, 1_000_000), 16);
        assert_eq!(config.shard_count(10 << 40, 1_000_000), 160);
    }
}
