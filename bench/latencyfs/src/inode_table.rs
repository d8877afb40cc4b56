//! The numbers the kernel knows our files by, and the backing paths behind them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use fuser::INodeNo;

/// Deeper than any real tree: a walk up the parents that gets this far has met a loop
/// (possible only if the backing tree changed behind our back).
const MAX_DEPTH: usize = 4096;

/// One file the kernel was told about.
#[derive(Debug)]
struct Node {
    /// Its backing (device, inode).
    backing: (u64, u64),
    /// The names it is known by, as (parent number, name), the latest first: any of them
    /// leads to it, as long as the backing tree is changed through us (a second name is a
    /// hard link; the backing tree changed under us, the latest is the likeliest right).
    names: Vec<(u64, OsString)>,
}

/// Maps FUSE inode numbers to the names under which they sit in the backing directory, and
/// backing inodes (device, inode) to FUSE inode numbers, so a file keeps one number however
/// it is reached (hard links, a second lookup after the kernel forgot it).
///
/// A file's number is its backing inode number, as an NFS file id is the server's: callers
/// see the same `st_ino` from one mount to the next (the bench mounts afresh for each
/// command, and `sync` trusts its manifest only if the destination's top directory kept its
/// inode). The exceptions get spare numbers from 2^63 up: the mount's root is 1 for FUSE,
/// and a backing inode whose number is taken (by a file of another device below the root,
/// or by one that lost its last link earlier in this mount) gets a spare one.
///
/// Names, not paths: renaming a directory moves one name, and every path below it follows.
/// Numbers are never reused: a benchmark mount lives for one command over a tree of a few
/// hundred thousand files, and `forget` bookkeeping would only cost time. A file that loses
/// its last link keeps its number, nameless, so that the kernel's stale requests for it
/// fail; its backing inode is forgotten, so that a new file the backing file system gives
/// the same inode gets a number of its own.
#[derive(Debug)]
pub struct InodeTable {
    root: PathBuf,
    /// Every numbered file but the root.
    nodes: HashMap<u64, Node>,
    numbers: HashMap<(u64, u64), u64>,
    /// What each known name leads to: the inverse of the nodes' `names`.
    entries: HashMap<(u64, OsString), u64>,
    next_spare: u64,
}

impl InodeTable {
    /// A table holding only the root, `root` itself.
    pub fn new(root: PathBuf, device: u64, inode: u64) -> Self {
        InodeTable {
            root,
            nodes: HashMap::new(),
            numbers: HashMap::from([((device, inode), INodeNo::ROOT.0)]),
            entries: HashMap::new(),
            next_spare: 1 << 63,
        }
    }

    /// The backing path of a FUSE inode the kernel got from us; `None` if it has no name
    /// left (unlinked) or was never given.
    pub fn path(&self, number: u64) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = number;
        while at != INodeNo::ROOT.0 {
            let (parent, name) = self.node(at)?.names.first()?;
            names.push(name);
            if names.len() > MAX_DEPTH {
                return None;
            }
            at = *parent;
        }
        let mut path = self.root.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    /// The backing path of `name` in directory `parent`.
    pub fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.path(parent).map(|dir| dir.join(name))
    }

    /// The FUSE inode of a backing inode found as `name` in directory `parent`, numbering
    /// it if new, and remembering the name.
    pub fn number(&mut self, device: u64, inode: u64, parent: u64, name: &OsStr) -> u64 {
        let number = match self.numbers.get(&(device, inode)) {
            Some(&number) => number,
            None => {
                let number = if inode != INodeNo::ROOT.0 && !self.nodes.contains_key(&inode) {
                    inode
                } else {
                    self.next_spare += 1;
                    self.next_spare - 1
                };
                self.nodes.insert(
                    number,
                    Node {
                        backing: (device, inode),
                        names: Vec::new(),
                    },
                );
                self.numbers.insert((device, inode), number);
                number
            }
        };
        let key = (parent, name.to_os_string());
        match self.entries.get(&key) {
            Some(&known) if known == number => {
                // Already first in the common case of one name: nothing to move.
                if let Some(node) = self.node_mut(number)
                    && node.names.first() != Some(&key)
                {
                    node.names.retain(|known| *known != key);
                    node.names.insert(0, key);
                }
            }
            known => {
                // The name led to another file: the backing tree changed under us.
                if let Some(&other) = known
                    && let Some(node) = self.node_mut(other)
                {
                    node.names.retain(|known| *known != key);
                }
                if let Some(node) = self.node_mut(number) {
                    node.names.insert(0, key.clone());
                }
                self.entries.insert(key, number);
            }
        }
        number
    }

    /// `name` in `parent` is gone (unlinked, removed, or replaced by a rename). `last_link`:
    /// the backing file had no other link, so its backing inode may be reused.
    pub fn remove(&mut self, parent: u64, name: &OsStr, last_link: bool) {
        let key = (parent, name.to_os_string());
        let Some(number) = self.entries.remove(&key) else {
            return;
        };
        let Some(node) = self.node_mut(number) else {
            return;
        };
        node.names.retain(|known| *known != key);
        if last_link {
            let backing = node.backing;
            self.numbers.remove(&backing);
        }
    }

    /// The file named `name` in `parent` is now `new_name` in `new_parent` (a rename that
    /// replaced nothing; remove the replaced name first).
    pub fn rename(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        let Some(number) = self.entries.remove(&(parent, name.to_os_string())) else {
            return;
        };
        let new_key = (new_parent, new_name.to_os_string());
        if let Some(node) = self.node_mut(number) {
            for known in &mut node.names {
                if known.0 == parent && known.1 == name {
                    known.clone_from(&new_key);
                }
            }
        }
        self.entries.insert(new_key, number);
    }

    /// The files named `a` in `a_parent` and `b` in `b_parent` swapped names
    /// (`RENAME_EXCHANGE`).
    pub fn exchange(&mut self, a_parent: u64, a: &OsStr, b_parent: u64, b: &OsStr) {
        let a_key = (a_parent, a.to_os_string());
        let b_key = (b_parent, b.to_os_string());
        let a_number = self.entries.remove(&a_key);
        let b_number = self.entries.remove(&b_key);
        for (number, from, to) in [(a_number, &a_key, &b_key), (b_number, &b_key, &a_key)] {
            let Some(number) = number else { continue };
            if let Some(node) = self.node_mut(number) {
                for known in &mut node.names {
                    if known == from {
                        known.clone_from(to);
                    }
                }
            }
            self.entries.insert(to.clone(), number);
        }
    }

    fn node(&self, number: u64) -> Option<&Node> {
        self.nodes.get(&number)
    }

    fn node_mut(&mut self, number: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = INodeNo::ROOT.0;

    fn table() -> InodeTable {
        InodeTable::new("/backing".into(), 1, 100)
    }

    fn path(table: &InodeTable, number: u64) -> Option<String> {
        table.path(number).map(|p| p.display().to_string())
    }

    #[test]
    fn numbers_are_backing_inodes_unless_taken() {
        let mut table = table();
        assert_eq!(table.number(1, 200, ROOT, "home".as_ref()), 200);
        // Another device below the root, and a backing inode 1 (the root's number).
        let other = table.number(2, 200, ROOT, "mounted".as_ref());
        let one = table.number(1, 1, ROOT, "one".as_ref());
        assert!(other >= 1 << 63 && one >= 1 << 63 && other != one);
        assert_eq!(table.number(2, 200, ROOT, "mounted".as_ref()), other);
        assert_eq!(path(&table, other).as_deref(), Some("/backing/mounted"));
    }

    #[test]
    fn numbers_follow_backing_inodes_across_names() {
        let mut table = table();
        let dir = table.number(1, 200, ROOT, "home".as_ref());
        let file = table.number(1, 300, dir, "a".as_ref());
        assert_eq!(table.number(1, 300, dir, "a".as_ref()), file);
        assert_eq!(path(&table, ROOT).as_deref(), Some("/backing"));
        assert_eq!(path(&table, file).as_deref(), Some("/backing/home/a"));
        // A hard link: the same number, either name leads there.
        assert_eq!(table.number(1, 300, ROOT, "b".as_ref()), file);
        assert_eq!(path(&table, file).as_deref(), Some("/backing/b"));
        table.remove(ROOT, "b".as_ref(), false);
        assert_eq!(path(&table, file).as_deref(), Some("/backing/home/a"));
    }

    #[test]
    fn a_renamed_directory_takes_its_tree_along() {
        let mut table = table();
        let dir = table.number(1, 200, ROOT, "old".as_ref());
        let sub = table.number(1, 201, dir, "sub".as_ref());
        let file = table.number(1, 300, sub, "f".as_ref());
        table.rename(ROOT, "old".as_ref(), ROOT, "new".as_ref());
        assert_eq!(path(&table, file).as_deref(), Some("/backing/new/sub/f"));
        assert_eq!(
            table
                .child_path(dir, "g".as_ref())
                .unwrap()
                .display()
                .to_string(),
            "/backing/new/g"
        );
        // The old name is free again, for another file.
        let other = table.number(1, 400, ROOT, "old".as_ref());
        assert_ne!(other, dir);
        assert_eq!(path(&table, dir).as_deref(), Some("/backing/new"));
    }

    #[test]
    fn an_unlinked_file_loses_its_path_and_its_backing_inode() {
        let mut table = table();
        let file = table.number(1, 300, ROOT, "f".as_ref());
        table.remove(ROOT, "f".as_ref(), true);
        assert_eq!(table.path(file), None);
        // The backing file system reuses inode 300 for a new file: a new number.
        let new = table.number(1, 300, ROOT, "g".as_ref());
        assert_ne!(new, file);
        assert_eq!(path(&table, new).as_deref(), Some("/backing/g"));
    }

    #[test]
    fn a_rename_over_a_file_replaces_it() {
        let mut table = table();
        let temporary = table.number(1, 300, ROOT, ".f.XYZ".as_ref());
        let old = table.number(1, 301, ROOT, "f".as_ref());
        table.remove(ROOT, "f".as_ref(), true);
        table.rename(ROOT, ".f.XYZ".as_ref(), ROOT, "f".as_ref());
        assert_eq!(path(&table, temporary).as_deref(), Some("/backing/f"));
        assert_eq!(table.path(old), None);
        assert_eq!(table.number(1, 300, ROOT, "f".as_ref()), temporary);
    }

    #[test]
    fn an_exchange_swaps_names() {
        let mut table = table();
        let a = table.number(1, 300, ROOT, "a".as_ref());
        let dir = table.number(1, 200, ROOT, "d".as_ref());
        let b = table.number(1, 301, dir, "b".as_ref());
        table.exchange(ROOT, "a".as_ref(), dir, "b".as_ref());
        assert_eq!(path(&table, a).as_deref(), Some("/backing/d/b"));
        assert_eq!(path(&table, b).as_deref(), Some("/backing/a"));
    }

    #[test]
    fn a_name_found_on_another_file_moves_to_it() {
        // The backing tree changed under a read-only mount: `f` is now another file.
        let mut table = table();
        let first = table.number(1, 300, ROOT, "f".as_ref());
        let second = table.number(1, 301, ROOT, "f".as_ref());
        assert_ne!(first, second);
        assert_eq!(table.path(first), None);
        assert_eq!(path(&table, second).as_deref(), Some("/backing/f"));
    }
}
