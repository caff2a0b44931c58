//! The saved delegate configs: `<dataDir>/<containerID>`, directory 0700, file 0600, as the
//! Go plugin keeps them. Written atomically (temp file, fsync, rename), so a crash never
//! leaves a truncated config for DEL to choke on.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cni_common::validate;
use serde_json::{Map, Value};

use crate::error::FlannelError;

/// The container ID was validated by the skeleton, so it is a plain file name.
pub fn path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(id)
}

fn state_err(what: &str, path: &Path, e: std::io::Error) -> FlannelError {
    FlannelError::State(format!("{what} {}: {e}", path.display()))
}

/// Container IDs never start with `.`, so the temp name cannot be another container's.
fn tmp_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(format!(".{id}.tmp"))
}

pub fn save(data_dir: &Path, id: &str, bytes: &[u8]) -> Result<PathBuf, FlannelError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| state_err("cannot create", data_dir, e))?;
    let target = path(data_dir, id);
    let tmp = tmp_path(data_dir, id);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| state_err("cannot write", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| state_err("cannot write", &tmp, e))?;
    fs::rename(&tmp, &target).map_err(|e| state_err("cannot save", &target, e))?;
    Ok(target)
}

pub fn read(data_dir: &Path, id: &str) -> Result<Option<Vec<u8>>, FlannelError> {
    let p = path(data_dir, id);
    match fs::read(&p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err("cannot read", &p, e)),
    }
}

/// Removes the saved config, and a temp file a killed ADD may have left behind.
pub fn remove(data_dir: &Path, id: &str) -> Result<(), FlannelError> {
    let _ = fs::remove_file(tmp_path(data_dir, id));
    let p = path(data_dir, id);
    match fs::remove_file(&p) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(state_err("cannot remove", &p, e)),
        _ => Ok(()),
    }
}

/// The saved configs of `network`: (container ID, config).
pub fn list(data_dir: &Path, network: &str) -> Vec<(String, Map<String, Value>)> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Map<String, Value>)> = entries
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
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

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
}
