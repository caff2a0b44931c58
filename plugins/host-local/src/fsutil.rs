//! File helpers shared by the lease store and the owner index (creating a private file and
//! removing one that may be gone are `cni_common::fsutil`'s).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Rewrites `path` in place (mode 0600 when created): the new bytes over the old ones, then
/// the length cut to fit. Truncating to zero first would free the file's block and allocate
/// a new one on every write; on a filesystem mounted with `discard` each free is also a
/// synchronous discard request to the device, made while the network's lock is held.
pub fn overwrite_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    rewrite(&mut f, bytes)
}

/// Puts `bytes` at the start of the open file `f`, then cuts it to their length.
pub fn rewrite(f: &mut File, bytes: &[u8]) -> io::Result<()> {
    f.seek(SeekFrom::Start(0))?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn overwrite_keeps_the_file_and_leaves_only_the_new_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("last_reserved_ip.0");
        overwrite_file(&path, b"10.10.0.12").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        overwrite_file(&path, b"10.10.0.9").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"10.10.0.9");
        overwrite_file(&path, b"10.10.0.100").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"10.10.0.100");
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());
    }
}
