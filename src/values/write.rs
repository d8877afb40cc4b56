//! Replacing a file so that a reader (or a crash) sees either the old text or the new one,
//! never half of it, and so that the file keeps its owner, group and mode.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// Why a file was not replaced. In every case nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The file's mode does not let the runner write it.
    #[error(
        "{path} is read-only (mode {mode:04o}, {owner}) for the runner ({runner}); nothing was \
         written: make it writable for the runner if it is meant to change"
    )]
    ReadOnly {
        /// The path as given.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// Its owner and group, as [`describe_owner`] says them.
        owner: String,
        /// Who runs runbook.
        runner: String,
    },
    /// Replacing the file would give it another owner or group, which the runner cannot set.
    #[error(
        "cannot keep the owner of {path} ({owner}) when replacing it as {runner}: {source}; \
         nothing was written: run as its owner, or give the file to the runner"
    )]
    Owner {
        /// The path as given.
        path: String,
        /// Its owner and group.
        owner: String,
        /// Who runs runbook.
        runner: String,
        /// Why `fchown` failed.
        source: std::io::Error,
    },
    /// Someone changed the file since it was read.
    #[error("{path} changed while it was being edited; nothing was written")]
    Changed {
        /// The path as given.
        path: String,
    },
    /// Reading, writing or renaming failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Replaces the file at `path` (following symlinks) by `text`: writes a temporary file in
/// the same directory with the same owner, group and mode, fsyncs it, renames it over the
/// file and fsyncs the directory. Fails without writing when the file's mode says the runner
/// may not write it, when its owner or group cannot be kept, or when the file no longer
/// holds `expected` (someone changed it since it was read).
pub fn write_atomically(path: &Path, text: &str, expected: &str) -> Result<(), WriteError> {
    let shown = path.display().to_string();
    let io = |source| WriteError::Io {
        path: shown.clone(),
        source,
    };
    let target = std::fs::canonicalize(path).map_err(io)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let metadata = std::fs::metadata(&target).map_err(io)?;
    // The rename below needs only the directory to be writable, so the file's own mode has
    // to be checked here; root may write anything, so open() would not tell either.
    check_mode(path, &metadata)?;
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    temp.write_all(text.as_bytes()).map_err(io)?;
    // The temporary file is the runner's: give it the file's owner and group (only what
    // differs, so that a runner in the file's group may keep it), then its mode, since a
    // change of owner clears the set-user-ID and set-group-ID bits.
    let created = temp.as_file().metadata().map_err(io)?;
    let uid = (created.uid() != metadata.uid()).then_some(metadata.uid());
    let gid = (created.gid() != metadata.gid()).then_some(metadata.gid());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(temp.as_file(), uid, gid).map_err(|source| {
            WriteError::Owner {
                path: shown.clone(),
                owner: describe_owner(metadata.uid(), metadata.gid()),
                runner: describe_runner(),
                source,
            }
        })?;
    }
    temp.as_file()
        .set_permissions(metadata.permissions())
        .map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    if std::fs::read(&target).map_err(io)? != expected.as_bytes() {
        return Err(WriteError::Changed { path: shown });
    }
    temp.persist(&target).map_err(|error| io(error.error))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Fails as [`write_atomically`] would when the mode bits of the file at `path` (symlinks
/// followed) say the runner may not write it; for `plan`, which writes nothing.
pub fn check_writable(path: &Path) -> Result<(), WriteError> {
    let metadata = std::fs::metadata(path).map_err(|source| WriteError::Io {
        path: path.display().to_string(),
        source,
    })?;
    check_mode(path, &metadata)
}

fn check_mode(path: &Path, metadata: &Metadata) -> Result<(), WriteError> {
    if mode_allows_writing(metadata) {
        return Ok(());
    }
    Err(WriteError::ReadOnly {
        path: path.display().to_string(),
        mode: metadata.mode() & 0o7777,
        owner: describe_owner(metadata.uid(), metadata.gid()),
        runner: describe_runner(),
    })
}

/// Whether the file's mode bits let the runner write it: the owner's write bit when the
/// runner owns the file, the group's when it is in the file's group, else the others'. Root
/// is held to the owner's bit: the kernel would let it write anything, and a file someone
/// made read-only is not to be rewritten because runbook runs as root. ACLs are not read.
fn mode_allows_writing(metadata: &Metadata) -> bool {
    let mode = metadata.mode();
    let runner = Uid::effective();
    if runner.is_root() || runner.as_raw() == metadata.uid() {
        return mode & 0o200 != 0;
    }
    let group = Gid::from_raw(metadata.gid());
    let in_group = Gid::effective() == group
        || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&group));
    if in_group {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}

/// `owner alice (uid 1000), group staff (gid 50)`; a number alone when it has no name.
fn describe_owner(uid: u32, gid: u32) -> String {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let group = Group::from_gid(Gid::from_raw(gid)).ok().flatten();
    let user = user.map_or(format!("uid {uid}"), |user| {
        format!("{} (uid {uid})", user.name)
    });
    let group = group.map_or(format!("gid {gid}"), |group| {
        format!("{} (gid {gid})", group.name)
    });
    format!("owner {user}, group {group}")
}

/// Who runs runbook: `root (uid 0)`.
fn describe_runner() -> String {
    let uid = Uid::effective();
    match User::from_uid(uid).ok().flatten() {
        Some(user) => format!("{} (uid {uid})", user.name),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn keeps_the_mode_follows_symlinks_and_refuses_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.values.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        write_atomically(&link, "a: 2\n", "a: 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a: 2\n");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(mode_of(&file), 0o640);

        let error = write_atomically(&file, "a: 3\n", "a: 1\n").unwrap_err();
        assert!(error.to_string().contains("changed while"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a: 2\n");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file is left behind");
    }

    #[test]
    fn a_file_without_the_write_bit_is_refused_even_for_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.values.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        let error = write_atomically(&file, "a: 2\n", "a: 1\n").unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, WriteError::ReadOnly { mode: 0o444, .. }),
            "{message}"
        );
        assert!(message.contains("mode 0444"), "{message}");
        assert!(
            message.contains(&format!("uid {}", Uid::effective())),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a: 1\n");
        assert_eq!(mode_of(&file), 0o444);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn owners_are_described_by_name_and_number() {
        assert_eq!(
            describe_owner(0, 0),
            "owner root (uid 0), group root (gid 0)"
        );
        assert_eq!(
            describe_owner(4_000_000, 4_000_000),
            "owner uid 4000000, group gid 4000000"
        );
    }
}
