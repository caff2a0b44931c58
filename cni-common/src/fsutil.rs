//! File helpers for the plugins' state on disk (host-local's leases, flannel's saved configs).
//!
//! Only the steps the plugins really share live here; each plugin keeps its own guarantees on
//! top of them: host-local writes a lease to a temp file, unsynced, and hard-links it into
//! place (`EEXIST` = the address is taken); flannel writes its saved config to a temp file,
//! syncs it and renames it over the old one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` with mode 0600 (or truncates it, keeping its mode) and writes `bytes`.
///
/// Nothing is synced: the open file is returned so that a caller that needs the bytes on disk
/// before its next step (a rename) can `sync_all` it.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

/// Removes the file at `path`; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn write_private_creates_0600_and_truncates() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_private(&path, b"a longer text").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let f = write_private(&path, b"short").unwrap();
        f.sync_all().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn write_private_keeps_the_mode_of_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_private(&path, b"y").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn remove_if_exists_ignores_only_a_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, b"x").unwrap();
        remove_if_exists(&path).unwrap();
        assert!(!path.exists());
        remove_if_exists(&path).unwrap();
        // A directory is not a file to remove: that error is reported.
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        assert!(remove_if_exists(&dir).is_err());
    }
}
