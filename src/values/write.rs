//! Replacing a file so that a reader (or a crash) sees either the old text or the new one,
//! never half of it.

use std::io::Write;
use std::path::Path;

/// Replaces the file at `path` (following symlinks) by `text`: writes a temporary file in
/// the same directory with the same permissions, fsyncs it, renames it over the file and
/// fsyncs the directory. Fails without writing when the file no longer holds `expected`
/// (someone changed it since it was read).
pub fn write_atomically(path: &Path, text: &str, expected: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(&target)?.permissions();
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().set_permissions(permissions)?;
    temp.as_file().sync_all()?;
    if std::fs::read(&target)? != expected.as_bytes() {
        return Err(std::io::Error::other(format!(
            "{} changed while it was being edited; nothing was written",
            path.display()
        )));
    }
    temp.persist(&target).map_err(|error| error.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        let error = write_atomically(&file, "a: 3\n", "a: 1\n").unwrap_err();
        assert!(error.to_string().contains("changed while"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a: 2\n");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file is left behind");
    }
}
