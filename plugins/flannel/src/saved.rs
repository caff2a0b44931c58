//! The saved delegate configs: `<dataDir>/<containerID>`, directory 0700, file 0600, as the
//! Go plugin keeps them. Written atomically (temp file, fsync, rename), so a crash never
//! leaves a truncated config for DEL to choke on.

use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use cni_common::fsutil::{remove_if_exists, write_private};
use cni_common::validate;
use serde_json::{Map, Value};

use crate::error::FlannelError;

/// The saved delegate configs as flannel's logic sees them, each in a directory (`dataDir`)
/// under its container ID. [`DiskConfigs`] keeps them in files; the unit tests use a fake.
pub trait SavedConfigs {
    /// Saves `bytes` as `id`'s config in `dir`, whole or not at all; returns where.
    fn save(&self, dir: &Path, id: &str, bytes: &[u8]) -> Result<PathBuf, FlannelError>;

    /// `id`'s saved config; `None` when there is none.
    fn read(&self, dir: &Path, id: &str) -> Result<Option<Vec<u8>>, FlannelError>;

    /// Removes `id`'s saved config; one that is already gone is not an error.
    fn remove(&self, dir: &Path, id: &str) -> Result<(), FlannelError>;

    /// Removes the temp file of an ADD killed before its save completed, if there is one.
    fn remove_temp(&self, dir: &Path, id: &str) -> Result<(), FlannelError>;

    /// The saved configs of `network` (container ID, config), sorted by container ID. Files
    /// that are not a saved config of that network are skipped; no directory means none.
    fn list(&self, dir: &Path, network: &str) -> Result<Vec<Saved>, FlannelError>;
}

/// One saved config: the container ID and the delegate config.
pub type Saved = (String, Map<String, Value>);

/// The container ID was validated by the skeleton, so it is a plain file name.
pub fn path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(id)
}

/// Container IDs never start with `.`, so the temp name cannot be another container's.
fn tmp_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(format!(".{id}.tmp"))
}

/// The saved configs as files, `<dataDir>/<containerID>`, in the Go plugin's format.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskConfigs;

impl SavedConfigs for DiskConfigs {
    fn save(&self, data_dir: &Path, id: &str, bytes: &[u8]) -> Result<PathBuf, FlannelError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| FlannelError::state("cannot create", data_dir, e))?;
        let target = path(data_dir, id);
        let tmp = tmp_path(data_dir, id);
        // Synced before the rename, so that after a crash the name holds the whole config
        // or none (a temp file left by a crash is removed by DEL).
        write_private(&tmp, bytes)
            .and_then(|f| f.sync_all())
            .map_err(|e| FlannelError::state("cannot write", &tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| FlannelError::state("cannot save", &target, e))?;
        Ok(target)
    }

    fn read(&self, data_dir: &Path, id: &str) -> Result<Option<Vec<u8>>, FlannelError> {
        let p = path(data_dir, id);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FlannelError::state("cannot read", &p, e)),
        }
    }

    fn remove(&self, data_dir: &Path, id: &str) -> Result<(), FlannelError> {
        let p = path(data_dir, id);
        remove_if_exists(&p).map_err(|e| FlannelError::state("cannot remove", &p, e))
    }

    fn remove_temp(&self, data_dir: &Path, id: &str) -> Result<(), FlannelError> {
        let p = tmp_path(data_dir, id);
        remove_if_exists(&p).map_err(|e| FlannelError::state("cannot remove", &p, e))
    }

    fn list(&self, data_dir: &Path, network: &str) -> Result<Vec<Saved>, FlannelError> {
        let entries = match fs::read_dir(data_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FlannelError::state("cannot list", data_dir, e)),
        };
        // An entry that cannot be read or parsed is not a saved config of this network as far
        // as GC can tell, and GC must not remove what it cannot tell: it is skipped.
        let mut out: Vec<Saved> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate::is_valid_identifier(id))
            .filter_map(|id| {
                let bytes = fs::read(path(data_dir, &id)).ok()?;
                let map: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
                (map.get("name").and_then(Value::as_str) == Some(network)).then_some((id, map))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn save(dir: &Path, id: &str, bytes: &[u8]) -> Result<PathBuf, FlannelError> {
        DiskConfigs.save(dir, id, bytes)
    }

    fn read(dir: &Path, id: &str) -> Result<Option<Vec<u8>>, FlannelError> {
        DiskConfigs.read(dir, id)
    }

    fn list(dir: &Path, network: &str) -> Vec<(String, Map<String, Value>)> {
        DiskConfigs.list(dir, network).unwrap()
    }

    /// DEL's removal: the saved config and a temp file of a killed ADD.
    fn remove(dir: &Path, id: &str) -> Result<(), FlannelError> {
        DiskConfigs.remove_temp(dir, id)?;
        DiskConfigs.remove(dir, id)
    }

    #[test]
    fn modes_and_atomic_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flannel");
        save(&dir, "c1", br#"{"name":"cbr0"}"#).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("c1");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&dir, "c1").unwrap().unwrap(), br#"{"name":"cbr0"}"#);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "temp file left");
        assert_eq!(list(&dir, "cbr0").len(), 1);
        assert!(list(&dir, "other").is_empty());
        remove(&dir, "c1").unwrap();
        remove(&dir, "c1").unwrap();
        // An ADD killed between writing and renaming leaves its temp file: DEL removes it.
        fs::write(dir.join(".c2.tmp"), b"{").unwrap();
        remove(&dir, "c2").unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(read(&dir, "c1").unwrap(), None);
    }

    #[test]
    fn errors_keep_the_path_and_the_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let not_a_dir = tmp.path().join("file");
        fs::write(&not_a_dir, b"").unwrap();
        match save(&not_a_dir, "c1", b"{}").unwrap_err() {
            FlannelError::State { what, path, .. } => {
                assert_eq!((what, path), ("cannot create", not_a_dir.clone()));
            }
            other => panic!("{other:?}"),
        }
        let e = DiskConfigs.list(&not_a_dir, "cbr0").unwrap_err();
        assert!(matches!(&e, FlannelError::State { path, .. } if *path == not_a_dir));
        assert!(std::error::Error::source(&e).is_some());
        // A dataDir nothing was ever saved in has no configs.
        assert!(list(&tmp.path().join("none"), "cbr0").is_empty());
    }

    #[test]
    fn list_skips_what_is_not_a_saved_config_of_the_network() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        save(dir, "b", br#"{"name":"cbr0"}"#).unwrap();
        save(dir, "a", br#"{"name":"cbr0"}"#).unwrap();
        fs::write(dir.join(".c.tmp"), br#"{"name":"cbr0"}"#).unwrap();
        fs::write(dir.join("d"), b"not json").unwrap();
        fs::write(dir.join("e"), br#"{"name":"other"}"#).unwrap();
        fs::create_dir(dir.join("f")).unwrap();
        let ids: Vec<String> = list(dir, "cbr0").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
