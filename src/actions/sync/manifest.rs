//! The manifest of what a pass left at the destination (`trust_destination`): the listing of
//! every directory the pass compared, as the destination holds it once the pass is done. A
//! later pass may take the destination's listings from it instead of walking the
//! destination, which halves the metadata round trips of a final pass; it is right only
//! while nothing else writes to the destination.
//!
//! It lives beside the destination, not in it (a mirror would copy or delete it): for `to:
//! /mnt/new/data` it is `/mnt/new/.data.runbook-manifest`, readable by its owner only (it
//! names every file). A pass removes it before it copies anything and writes the next one
//! (a temporary file, renamed) only when it ends cleanly, so a pass that fails or is killed
//! leaves none, and the next pass walks.
//!
//! What it says of an entry the source has is what rsync -a made of it: the source's kind,
//! mode, size and times as the comparison saw them; the destination's owners
//! unless the pass runs as root; a change time never later than the real one (for the
//! change-time rule); and an identity per source inode, so that files hard-linked in the
//! source are linked in the manifest, as the pass linked them (`rsync -H`), and no other
//! (without `-H` the comparison never looks at identities, and a manifest written with it
//! is not trusted without it, nor the other way round).
//!
//! Format: JSON lines. A header (`{"runbook_manifest": 1, ...}`); a line per directory
//! (`{"dir": "a/b", "entries": [[name, kind, mode, uid, gid, size, mtime, mtime_ns, ctime,
//! ctime_ns, dev, ino, nlink, rdev], ...]}`, entries sorted by name); a trailer with the
//! number of directories and the destination root's inode and change time (`{"end":
//! ...}`). Names are strings, or `{"hex": "..."}` when not UTF-8.
//!
//! Symlinks' targets are not in it: recording them would cost a `readlink` in the source
//! per symlink on every pass, as many as a trusting pass saves by not reading them at the
//! destination, where the comparison still reads them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use sha2::Digest as _;

use super::pass::{RelPath, deserialize_bytes, serialize_bytes};
use super::walker::{Entry, Kind, Meta};

/// The format's version; a manifest of another one is not trusted.
const VERSION: u32 = 1;

/// Set in the `dev` of the identities the manifest gives entries (their source inode's
/// device and inode): no real device number has it, so they never match a real identity.
const CLAIMED_DEV: u64 = 1 << 63;

/// The listings of the destination an earlier pass left, read and checked.
#[derive(Debug)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// When the pass that wrote it started (RFC 3339).
    pub pass_started: String,
    listings: HashMap<Vec<u8>, Vec<Entry>>,
}

/// Why the destination is walked although `trust_destination` is set.
#[derive(Debug, thiserror::Error)]
pub enum Distrust {
    /// No earlier pass left a manifest (or the last one did not finish).
    #[error("no manifest of an earlier finished pass at {}", .0.display())]
    Missing(PathBuf),
    /// The destination has no parent directory to keep one in (`/`).
    #[error("the destination has no parent directory to keep a manifest in")]
    Nowhere,
    /// One is there, but is not to be trusted.
    #[error("the manifest {} {why}", path.display())]
    Unusable {
        /// Where.
        path: PathBuf,
        /// Why: `does not parse: ...`, `is of other settings`, ...
        why: String,
    },
}

/// Where the manifest of `destination` lives: beside it, hidden. `None` when it has no
/// parent (`/`).
pub fn manifest_path(destination: &Path) -> Option<PathBuf> {
    let named = if destination.file_name().is_some() {
        destination.to_path_buf()
    } else {
        std::fs::canonicalize(destination).ok()?
    };
    let mut file = OsString::from(".");
    file.push(named.file_name()?);
    file.push(".runbook-manifest");
    Some(named.parent()?.join(file))
}

/// What a manifest must have been written with to be trusted: the same trees, the same
/// excludes (listings leave excluded entries out), hard links and owners (both change what
/// the listings claim).
pub fn key(from: &Path, to: &Path, exclude: &[String], hard_links: bool, owners: bool) -> String {
    let text = serde_json::json!({
        "from": from.to_string_lossy(),
        "to": to.to_string_lossy(),
        "exclude": exclude,
        "hard_links": hard_links,
        "owners": owners,
    })
    .to_string();
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Removes the manifest of `destination`, durably: a pass that copies makes it untrue, and
/// it must not come back after a crash.
pub fn forget(destination: &Path) -> io::Result<()> {
    let Some(path) = manifest_path(destination) else {
        return Ok(());
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            sync_parent(&path);
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("cannot remove {}: {error}", path.display()),
        )),
    }
}

impl Manifest {
    /// Reads the manifest of `destination` and checks that it is whole, of this
    /// destination and of settings with this `key`, and that the destination's root has not
    /// changed since it was written.
    pub fn load(destination: &Path, key: &str) -> Result<Manifest, Distrust> {
        let Some(path) = manifest_path(destination) else {
            return Err(Distrust::Nowhere);
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(Distrust::Missing(path));
            }
            Err(error) => {
                return Err(Distrust::Unusable {
                    path,
                    why: format!("cannot be read: {error}"),
                });
            }
        };
        let unusable = |why: String| Distrust::Unusable {
            path: path.clone(),
            why,
        };
        let parsed = parse(&text).map_err(|why| unusable(format!("does not parse: {why}")))?;
        if parsed.header.destination.0 != destination.as_os_str().as_bytes() {
            return Err(unusable(format!(
                "is of another destination ({})",
                String::from_utf8_lossy(&parsed.header.destination.0)
            )));
        }
        if parsed.header.key != key {
            return Err(unusable(
                "was written with other settings (source, exclude, hard links or owners)".into(),
            ));
        }
        let root = std::fs::metadata(destination)
            .map_err(|error| unusable(format!("is of a destination that is gone: {error}")))?;
        if root_identity(&root) != parsed.end.root {
            return Err(unusable(
                "is older than a change of the destination's top directory (something else wrote to it)".into(),
            ));
        }
        Ok(Manifest {
            path,
            pass_started: parsed.header.started,
            listings: parsed.listings,
        })
    }

    /// The entries of directory `dir`, sorted by name; `None` when the manifest does not
    /// know it (it was only at the destination): the comparison reads it.
    pub fn listing(&self, dir: &[u8]) -> Option<Vec<Entry>> {
        self.listings.get(dir).cloned()
    }
}

/// The listing of a directory once the pass is done, from its `source` and `destination`
/// listings (both sorted by name; no destination: it is created): the source's entries as
/// rsync -a copies them, and, without `delete`, the entries only at the destination.
/// `owners`: the pass sets owners (it runs as root).
pub fn left_listing(
    source: &[Entry],
    destination: Option<&[Entry]>,
    delete: bool,
    owners: bool,
) -> Vec<Entry> {
    let destination = destination.unwrap_or(&[]);
    let mut listing = Vec::with_capacity(source.len());
    let (mut s, mut d) = (0, 0);
    while s < source.len() || d < destination.len() {
        let order = match (source.get(s), destination.get(d)) {
            (Some(a), Some(b)) => a.name.cmp(&b.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Greater => {
                if !delete {
                    listing.push(destination[d].clone());
                }
                d += 1;
            }
            _ => {
                let at_destination = (order == std::cmp::Ordering::Equal)
                    .then(|| &destination[d])
                    .filter(|other| other.meta.kind == source[s].meta.kind);
                listing.push(left_entry(&source[s], at_destination, owners));
                s += 1;
                if order == std::cmp::Ordering::Equal {
                    d += 1;
                }
            }
        }
    }
    listing
}

/// A source entry as the pass leaves it at the destination, where `at_destination` is the
/// entry of the same kind there before the pass.
fn left_entry(source: &Entry, at_destination: Option<&Entry>, owners: bool) -> Entry {
    let mut meta = source.meta;
    // Only root gives files away: otherwise the destination keeps its own owners.
    if !owners && let Some(there) = at_destination {
        meta.uid = there.meta.uid;
        meta.gid = there.meta.gid;
    }
    // Never later than the real change time, which the pass may only have moved forward:
    // the writer lowers it to the pass's start, for entries the pass wrote.
    (meta.ctime, meta.ctime_nsec) = at_destination.map_or((i64::MAX, 0), |there| {
        (there.meta.ctime, there.meta.ctime_nsec)
    });
    meta.dev |= CLAIMED_DEV;
    Entry {
        name: source.name.clone(),
        meta,
    }
}

/// Writes the manifest of a pass while its comparison walks, into a temporary file beside
/// the destination; [`ManifestWriter::finish`] renames it into place once the pass is done.
/// Dropped unfinished, it removes the temporary file.
#[derive(Debug)]
pub struct ManifestWriter {
    path: PathBuf,
    temporary: PathBuf,
    destination: PathBuf,
    started: (i64, i64),
    state: Mutex<Writing>,
}

#[derive(Debug)]
struct Writing {
    file: Option<BufWriter<File>>,
    dirs: u64,
    /// The first write that failed: the manifest is not written.
    failure: Option<String>,
}

impl ManifestWriter {
    /// Starts the manifest of a pass over `destination` that started at `started`, with
    /// settings of `key`.
    pub fn create(destination: &Path, key: &str, started: jiff::Timestamp) -> Result<Self, String> {
        let path = manifest_path(destination)
            .ok_or_else(|| format!("{} has no parent directory", destination.display()))?;
        // One name, not one per process: a pass killed while it compared leaves it, and the
        // next one writes over it.
        let mut temporary = path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| format!("cannot write {}: {error}", temporary.display()))?;
        let mut file = BufWriter::new(file);
        let header = Header {
            runbook_manifest: VERSION,
            destination: Bytes(destination.as_os_str().as_bytes().to_vec()),
            key: key.to_string(),
            started: started.to_string(),
        };
        let written = serde_json::to_writer(&mut file, &header)
            .map_err(io::Error::from)
            .and_then(|()| file.write_all(b"\n"));
        let writer = ManifestWriter {
            path,
            temporary,
            destination: destination.to_path_buf(),
            started: (started.as_second(), i64::from(started.subsec_nanosecond())),
            state: Mutex::new(Writing {
                file: Some(file),
                dirs: 0,
                failure: None,
            }),
        };
        written.map_err(|error| format!("cannot write {}: {error}", writer.temporary.display()))?;
        Ok(writer)
    }

    /// Records the listing of directory `dir` (called by the walking threads).
    pub fn record(&self, dir: &[u8], entries: &[Entry]) {
        let line = DirLine {
            dir: RelPath(dir.to_vec()),
            entries: entries
                .iter()
                .map(|entry| EntryLine::of(entry, self.started))
                .collect(),
        };
        // Serialised before the lock: the threads wait on each other for the write only.
        let mut text = match serde_json::to_vec(&line) {
            Ok(text) => text,
            Err(error) => {
                self.fail(format!("cannot encode a listing: {error}"));
                return;
            }
        };
        text.push(b'\n');
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(file) = state.file.as_mut() else {
            return;
        };
        match file.write_all(&text) {
            Ok(()) => state.dirs += 1,
            Err(error) => {
                state.failure = Some(format!(
                    "cannot write {}: {error}",
                    self.temporary.display()
                ));
                state.file = None;
            }
        }
    }

    fn fail(&self, why: String) {
        if let Ok(mut state) = self.state.lock() {
            state.failure.get_or_insert(why);
            state.file = None;
        }
    }

    /// Ends the manifest with the destination root's identity as it is now, and puts it in
    /// place. Call it once the pass is done and nothing more is written at the destination.
    pub fn finish(&self) -> Result<PathBuf, String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| "a walking thread panicked".to_string())?;
        if let Some(failure) = state.failure.take() {
            return Err(failure);
        }
        let mut file = state
            .file
            .take()
            .ok_or_else(|| "the manifest was finished already".to_string())?;
        let cannot =
            |error: io::Error| format!("cannot write {}: {error}", self.temporary.display());
        let root = std::fs::metadata(&self.destination).map_err(cannot)?;
        let end = Trailer {
            end: End {
                dirs: state.dirs,
                root: root_identity(&root),
            },
        };
        serde_json::to_writer(&mut file, &end)
            .map_err(io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.into_inner().map_err(io::IntoInnerError::into_error))
            .and_then(|file| file.sync_all())
            .map_err(cannot)?;
        std::fs::rename(&self.temporary, &self.path).map_err(|error| {
            format!(
                "cannot rename {} to {}: {error}",
                self.temporary.display(),
                self.path.display()
            )
        })?;
        sync_parent(&self.path);
        Ok(self.path.clone())
    }
}

/// Makes a rename or removal of `path` durable: it is once its directory is. Best effort (a
/// file system may refuse to sync a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

impl Drop for ManifestWriter {
    fn drop(&mut self) {
        // Gone already when finished (renamed).
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// What the trailer says of the destination's root: its inode and change time. Another
/// one means something changed the root after the manifest was written.
fn root_identity(meta: &std::fs::Metadata) -> RootIdentity {
    RootIdentity {
        ino: meta.ino(),
        ctime: meta.ctime(),
        ctime_ns: meta.ctime_nsec(),
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    runbook_manifest: u32,
    destination: Bytes,
    key: String,
    /// When the pass that wrote it started (RFC 3339).
    started: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirLine {
    dir: RelPath,
    entries: Vec<EntryLine>,
}

/// An entry as an array: name, kind, mode, uid, gid, size, mtime, mtime_ns, ctime,
/// ctime_ns, dev, ino, nlink, rdev.
#[derive(Debug, Serialize, Deserialize)]
struct EntryLine(
    Bytes,
    char,
    u32,
    u32,
    u32,
    u64,
    i64,
    i64,
    i64,
    i64,
    u64,
    u64,
    u64,
    u64,
);

impl EntryLine {
    /// The line of `entry`, its change time no later than `started` (the pass's start).
    fn of(entry: &Entry, started: (i64, i64)) -> Self {
        let meta = &entry.meta;
        let (ctime, ctime_ns) = (meta.ctime, meta.ctime_nsec).min(started);
        EntryLine(
            Bytes(entry.name.clone()),
            match meta.kind {
                Kind::Dir => 'd',
                Kind::File => 'f',
                Kind::Symlink => 'l',
                Kind::Special => 's',
            },
            meta.mode,
            meta.uid,
            meta.gid,
            meta.size,
            meta.mtime,
            meta.mtime_nsec,
            ctime,
            ctime_ns,
            meta.dev,
            meta.ino,
            meta.nlink,
            meta.rdev,
        )
    }

    fn entry(self) -> Result<Entry, String> {
        let EntryLine(
            name,
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            mtime_nsec,
            ctime,
            ctime_nsec,
            dev,
            ino,
            nlink,
            rdev,
        ) = self;
        let name = name.0;
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(format!("a bad name: {}", String::from_utf8_lossy(&name)));
        }
        let kind = match kind {
            'd' => Kind::Dir,
            'f' => Kind::File,
            'l' => Kind::Symlink,
            's' => Kind::Special,
            other => return Err(format!("an unknown kind `{other}`")),
        };
        Ok(Entry {
            name,
            meta: Meta {
                kind,
                mode,
                uid,
                gid,
                size,
                mtime,
                mtime_nsec,
                ctime,
                ctime_nsec,
                dev,
                ino,
                nlink,
                rdev,
            },
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: End,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    dirs: u64,
    root: RootIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootIdentity {
    ino: u64,
    ctime: i64,
    ctime_ns: i64,
}

/// A manifest's content, parsed.
struct Parsed {
    header: Header,
    listings: HashMap<Vec<u8>, Vec<Entry>>,
    end: End,
}

/// Parses a whole manifest: a header, directory lines, a trailer that counts them; every
/// listing sorted by name, no directory twice.
fn parse(text: &[u8]) -> Result<Parsed, String> {
    let mut lines = text.split(|&b| b == b'\n').enumerate().peekable();
    let (_, first) = lines.next().ok_or("it is empty")?;
    let header: Header =
        serde_json::from_slice(first).map_err(|error| format!("line 1: {error}"))?;
    if header.runbook_manifest != VERSION {
        return Err(format!(
            "version {} (this runbook reads {VERSION})",
            header.runbook_manifest
        ));
    }
    let mut listings = HashMap::new();
    let mut end = None;
    for (index, line) in lines {
        let at = |error: String| format!("line {}: {error}", index + 1);
        if end.is_some() {
            if line.is_empty() {
                continue;
            }
            return Err(at("more after the end".into()));
        }
        if line.starts_with(b"{\"end\"") {
            let trailer: Trailer = serde_json::from_slice(line).map_err(|e| at(e.to_string()))?;
            end = Some(trailer.end);
            continue;
        }
        let dir: DirLine = serde_json::from_slice(line).map_err(|e| at(e.to_string()))?;
        let entries = dir
            .entries
            .into_iter()
            .map(EntryLine::entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        if !entries.is_sorted_by(|a, b| a.name < b.name) {
            return Err(at("entries out of order".into()));
        }
        if listings.insert(dir.dir.0, entries).is_some() {
            return Err(at("a directory listed twice".into()));
        }
    }
    let end = end.ok_or("it has no end (cut short)")?;
    if end.dirs != listings.len() as u64 {
        return Err(format!(
            "its end counts {} directories, it lists {}",
            end.dirs,
            listings.len()
        ));
    }
    Ok(Parsed {
        header,
        listings,
        end,
    })
}

/// Bytes in JSON: a string when UTF-8, otherwise `{"hex": "..."}` (as [`RelPath`], without
/// its checks: the destination's own path is absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_bytes(deserializer)?
            .map(Bytes)
            .ok_or_else(|| de::Error::custom("bad hex"))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::actions::sync::compare::{
        self, ChangedSince, CompareOptions, Comparison, DestinationListings,
    };
    use crate::actions::sync::filter::ExcludeFilter;
    use crate::actions::sync::walker::{WalkControl, WalkCounters, WalkThreads};

    fn write(path: &Path, content: &[u8]) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write");
    }

    fn entry(name: &[u8], kind: Kind, size: u64) -> Entry {
        Entry {
            name: name.to_vec(),
            meta: Meta {
                kind,
                mode: 0o644,
                uid: 1000,
                gid: 100,
                size,
                mtime: 1_600_000_000,
                mtime_nsec: 123_456_789,
                ctime: 1_600_000_001,
                ctime_nsec: 5,
                dev: CLAIMED_DEV | 42,
                ino: 7 + size,
                nlink: 1,
                rdev: 0,
            },
        }
    }

    fn written(destination: &Path, key: &str, listings: &[(&[u8], Vec<Entry>)]) {
        let started = jiff::Timestamp::new(1_700_000_000, 0).expect("time");
        let writer = ManifestWriter::create(destination, key, started).expect("create");
        for (dir, entries) in listings {
            writer.record(dir, entries);
        }
        writer.finish().expect("finish");
    }

    #[test]
    fn a_manifest_round_trips_names_that_are_any_bytes() {
        let root = tempfile::tempdir().expect("dir");
        let destination = root.path().join("dst");
        std::fs::create_dir(&destination).expect("mkdir");
        let odd: &[u8] = b"odd\ndir \xff";
        let listings = vec![
            (
                &b""[..],
                vec![
                    entry(b"-dash", Kind::File, 1),
                    entry(b"a\nnewline", Kind::File, 2),
                    entry(b"link", Kind::Symlink, 3),
                    entry(odd, Kind::Dir, 0),
                ],
            ),
            (odd, vec![entry(b"\xe9t\xe9", Kind::File, 4)]),
        ];
        written(&destination, "k", &listings);
        let path = manifest_path(&destination).expect("path");
        assert_eq!(path, root.path().join(".dst.runbook-manifest"));
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        let manifest = Manifest::load(&destination, "k").expect("load");
        for (dir, entries) in &listings {
            let read = manifest.listing(dir).expect("listing");
            assert_eq!(read.len(), entries.len());
            for (read, wrote) in read.iter().zip(entries) {
                assert_eq!(read.name, wrote.name);
                assert_eq!(read.meta, wrote.meta);
            }
        }
        assert!(manifest.listing(b"unknown").is_none());
        // Entries the pass wrote claim a change time no later than its start.
        let mut fresh = entry(b"fresh", Kind::File, 1);
        fresh.meta.ctime = i64::MAX;
        written(&destination, "k", &[(b"", vec![fresh])]);
        let manifest = Manifest::load(&destination, "k").expect("load");
        let read = manifest.listing(b"").expect("root");
        assert_eq!(
            (read[0].meta.ctime, read[0].meta.ctime_nsec),
            (1_700_000_000, 0)
        );
    }

    #[test]
    fn a_broken_or_foreign_manifest_is_not_trusted() {
        let root = tempfile::tempdir().expect("dir");
        let destination = root.path().join("dst");
        std::fs::create_dir(&destination).expect("mkdir");
        assert!(matches!(
            Manifest::load(&destination, "k"),
            Err(Distrust::Missing(_))
        ));
        written(
            &destination,
            "k",
            &[(b"", vec![entry(b"a", Kind::File, 1)])],
        );
        let path = manifest_path(&destination).expect("path");
        let good = std::fs::read(&path).expect("read");
        assert!(Manifest::load(&destination, "k").is_ok());

        let unusable = |why: &str| match Manifest::load(&destination, "k") {
            Err(Distrust::Unusable { why: said, .. }) => {
                assert!(said.contains(why), "{said}");
            }
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            Manifest::load(&destination, "other settings"),
            Err(Distrust::Unusable { .. })
        ));
        // Cut short: no end.
        let cut = good.len() - 40;
        std::fs::write(&path, &good[..cut]).expect("write");
        unusable("does not parse");
        std::fs::write(&path, b"garbage\n").expect("write");
        unusable("does not parse");
        std::fs::write(&path, b"").expect("write");
        unusable("does not parse");
        // A name that leaves its directory, and a count that does not match.
        let text = String::from_utf8(good.clone()).expect("utf-8");
        std::fs::write(&path, text.replace("[\"a\",", "[\"../a\",")).expect("write");
        unusable("bad name");
        std::fs::write(&path, text.replace("\"dirs\":1", "\"dirs\":2")).expect("write");
        unusable("counts 2 directories");
        // Something wrote to the destination's top directory after the manifest.
        std::fs::write(&path, &good).expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&destination.join("behind its back"), b"x");
        unusable("something else wrote");
        // Another destination's manifest copied here.
        let other = root.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::copy(&path, manifest_path(&other).expect("path")).expect("cp");
        assert!(matches!(
            Manifest::load(&other, "k"),
            Err(Distrust::Unusable { why, .. }) if why.contains("another destination")
        ));
    }

    fn options(listings: DestinationListings, changed_since: ChangedSince) -> CompareOptions {
        CompareOptions {
            delete: true,
            hard_links: true,
            owners: false,
            changed_since,
            max_differences: 100,
            settled: None,
            dir_delay: None,
            listings,
        }
    }

    fn compared(source: &Path, destination: &Path, options: &CompareOptions) -> Comparison {
        let mut comparison = compare::compare(
            source,
            destination,
            &ExcludeFilter::new(&["*.skip".to_string()]).expect("filter"),
            options,
            compare::Walking {
                control: WalkControl {
                    threads: WalkThreads::fixed(4),
                    cancel: &AtomicBool::new(false),
                    hold: None,
                    counters: &WalkCounters::default(),
                },
                sink: None,
            },
        )
        .expect("compare");
        comparison.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        comparison
    }

    fn rsync(source: &Path, destination: &Path) {
        let status = Command::new("rsync")
            .args(["-aH", "--delete", "--exclude=*.skip"])
            .arg(format!("{}/", source.display()))
            .arg(format!("{}/", destination.display()))
            .status()
            .expect("rsync (apt-get install rsync)");
        assert!(status.success());
    }

    #[test]
    fn a_comparison_with_the_manifest_finds_what_the_walk_finds() {
        let root = tempfile::tempdir().expect("dir");
        let (source, destination) = (root.path().join("src"), root.path().join("dst"));
        for dir in ["a", "b/c", "gone"] {
            for i in 0..5 {
                write(&source.join(format!("{dir}/f{i}")), b"content");
            }
        }
        write(&source.join("odd/\u{e9}\nx"), b"odd");
        write(&source.join(OsStr::from_bytes(b"odd/\xff")), b"not utf-8");
        write(&source.join("a/excluded.skip"), b"skip");
        std::os::unix::fs::symlink("a/f0", source.join("link")).expect("symlink");
        std::fs::hard_link(source.join("a/f0"), source.join("b/linked")).expect("link");
        std::fs::create_dir_all(&destination).expect("mkdir");
        write(&destination.join("only-here/file"), b"extra");

        // The first pass: compared with the destination's real listings, and recorded.
        let key = "k";
        let first_start = jiff::Timestamp::now();
        let writer =
            Arc::new(ManifestWriter::create(&destination, key, first_start).expect("create"));
        let recording = DestinationListings {
            trusted: None,
            recorded: Some(writer.clone()),
        };
        compared(
            &source,
            &destination,
            &options(recording, ChangedSince::DestinationCopy),
        );
        rsync(&source, &destination);
        writer.finish().expect("finish");

        // Users work on the source.
        write(&source.join("a/f1"), b"edited, longer");
        std::fs::remove_file(source.join("b/c/f2")).expect("rm");
        std::fs::remove_dir_all(source.join("gone")).expect("rm -r");
        write(&source.join("new/dir/file"), b"new");
        std::fs::set_permissions(source.join("a/f3"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::fs::remove_file(source.join("link")).expect("rm");
        std::os::unix::fs::symlink("a/f4", source.join("link")).expect("symlink");
        std::fs::remove_file(source.join("b/c/f3")).expect("rm");
        std::fs::hard_link(source.join("a/f2"), source.join("b/c/f3")).expect("link");

        let since = ChangedSince::Time {
            secs: first_start.as_second() - 1,
            nanos: 0,
        };
        let walked = compared(
            &source,
            &destination,
            &options(DestinationListings::default(), since),
        );
        let manifest = Manifest::load(&destination, key).expect("trusted");
        let trusted = compared(
            &source,
            &destination,
            &options(
                DestinationListings {
                    trusted: Some(Arc::new(manifest)),
                    recorded: None,
                },
                since,
            ),
        );
        assert_eq!(trusted.dirs, walked.dirs);
        assert_eq!(trusted.deletions, walked.deletions);
        assert_eq!(trusted.hard_links, walked.hard_links);
        assert_eq!(trusted.differences, walked.differences);
        assert_eq!(trusted.difference_count, walked.difference_count);
        assert_eq!(trusted.forced, walked.forced);
        assert_eq!(trusted.entries, walked.entries);
        assert!(walked.difference_count >= 6, "{:?}", walked.differences);
        assert_eq!(walked.deletions, vec![b"b/c/f2".to_vec(), b"gone".to_vec()]);
        // The trusted comparison read the destination's root only: a file added behind
        // the manifest's back deep in the tree is not seen.
        write(&destination.join("a/behind-its-back"), b"x");
        let manifest = Manifest::load(&destination, key).expect("still trusted");
        let blind = compared(
            &source,
            &destination,
            &options(
                DestinationListings {
                    trusted: Some(Arc::new(manifest)),
                    recorded: None,
                },
                since,
            ),
        );
        assert_eq!(blind.deletions, walked.deletions);
        let seen = compared(
            &source,
            &destination,
            &options(DestinationListings::default(), since),
        );
        assert!(seen.deletions.contains(&b"a/behind-its-back".to_vec()));
    }
}
