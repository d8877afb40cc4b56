//! The numbers the kernel knows our files by, and the backing paths behind them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Maps FUSE inode numbers to paths under the backing directory, and backing inodes
/// (device, inode) to FUSE inode numbers, so a file keeps one number however it is reached
/// (hard links, a second lookup after the kernel forgot it).
///
/// Entries are never dropped: a benchmark mount lives for one command over a tree of a few
/// hundred thousand files, and `forget` bookkeeping would only cost time.
#[derive(Debug)]
pub struct InodeTable {
    /// The backing path of FUSE inode `i + 1` (the root is 1).
    paths: Vec<PathBuf>,
    numbers: HashMap<(u64, u64), u64>,
}

impl InodeTable {
    /// A table holding only the root, `root` itself.
    pub fn new(root: PathBuf, device: u64, inode: u64) -> Self {
        InodeTable {
            paths: vec![root],
            numbers: HashMap::from([((device, inode), fuser::INodeNo::ROOT.0)]),
        }
    }

    /// The backing path of a FUSE inode the kernel got from us.
    pub fn path(&self, number: u64) -> Option<&Path> {
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        self.paths.get(index).map(PathBuf::as_path)
    }

    /// The FUSE inode of a backing inode found at `path`, numbering it if new. The latest
    /// path wins: after a rename in the backing tree the old one is gone.
    pub fn number(&mut self, device: u64, inode: u64, path: PathBuf) -> u64 {
        if let Some(&number) = self.numbers.get(&(device, inode)) {
            if let Some(known) = self.paths.get_mut(index(number))
                && *known != path
            {
                *known = path;
            }
            return number;
        }
        self.paths.push(path);
        let number = self.paths.len() as u64;
        self.numbers.insert((device, inode), number);
        number
    }
}

/// Where inode `number` sits in `paths` (numbers start at 1).
fn index(number: u64) -> usize {
    usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX)
}
