//! The runtime's result cache, in libcni's layout: `<dir>/results/<network>-<containerID>-<ifname>`,
//! a `cniCacheV1` entry holding the final ADD result that CHECK and DEL need as `prevResult`,
//! and the attachment it belongs to (what GC sends as the attachments still in use).

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::exec::Attachment;

/// A cache directory (libcni's default is `/var/lib/cni`).
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

impl Cache {
    /// The cache below `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    fn results(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// The entry of `att` on `network`.
    pub fn path(&self, network: &str, att: &Attachment) -> PathBuf {
        self.results()
            .join(format!("{network}-{}-{}", att.container_id, att.ifname))
    }

    /// Stores ADD's final `result` for `att` on `network`, with the capability arguments it
    /// was added with (directory 0700, file 0600, as libcni writes them).
    pub fn save(
        &self,
        network: &str,
        att: &Attachment,
        capability_args: &Map<String, Value>,
        result: &Value,
    ) -> Result<(), Error> {
        let results = self.results();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&results)
            .map_err(io_error("create", &results))?;
        let path = self.path(network, att);
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "ifName": att.ifname,
            "networkName": network,
            "netns": att.netns,
            "capabilityArgs": capability_args,
            "result": result,
        });
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(entry.to_string().as_bytes()))
            .map_err(io_error("write", &path))
    }

    /// The cached result of `att` on `network`; `None` when nothing is cached.
    pub fn load(&self, network: &str, att: &Attachment) -> Result<Option<Value>, Error> {
        let path = self.path(network, att);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let entry = parse_entry(&path, &text)?;
        Ok(entry.get("result").cloned())
    }

    /// Removes the entry of `att` on `network`; an entry already gone is no error.
    pub fn remove(&self, network: &str, att: &Attachment) -> Result<(), Error> {
        let path = self.path(network, att);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// The attachments cached for `network`. An entry that cannot be read is an error: GC
    /// releases whatever is not listed, so a silently skipped entry would release a pod.
    pub fn attachments(&self, network: &str) -> Result<Vec<Attachment>, Error> {
        let results = self.results();
        let entries = match std::fs::read_dir(&results) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &results)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_error("read", &results))?.path();
            let text = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
            let entry = parse_entry(&path, &text)?;
            let text = |key: &str| entry.get(key).and_then(Value::as_str);
            if text("networkName") != Some(network) {
                continue;
            }
            if let (Some(id), Some(ifname)) = (text("containerId"), text("ifName")) {
                found.push(Attachment::new(
                    id,
                    text("netns").unwrap_or_default(),
                    ifname,
                ));
            }
        }
        Ok(found)
    }
}

fn parse_entry(path: &Path, text: &str) -> Result<Map<String, Value>, Error> {
    serde_json::from_str(text).map_err(|source| Error::CacheEntry {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment::new(id, &format!("/run/netns/{id}"), "eth0")
    }

    #[test]
    fn save_load_remove_in_libcni_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let caps: Map<String, Value> =
            serde_json::from_value(json!({"portMappings": [{"hostPort": 80}]})).unwrap();
        let result = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(cache.load("net", &att("c1")).unwrap(), None);
        cache.save("net", &att("c1"), &caps, &result).unwrap();
        let path = dir.path().join("results").join("net-c1-eth0");
        assert_eq!(cache.path("net", &att("c1")), path);
        let entry: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            entry,
            json!({"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0",
                "networkName": "net", "netns": "/run/netns/c1",
                "capabilityArgs": {"portMappings": [{"hostPort": 80}]}, "result": result})
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(cache.load("net", &att("c1")).unwrap(), Some(result));
        cache.remove("net", &att("c1")).unwrap();
        cache.remove("net", &att("c1")).unwrap();
        assert_eq!(cache.load("net", &att("c1")).unwrap(), None);
    }

    #[test]
    fn attachments_of_one_network_and_refusal_of_broken_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        assert!(cache.attachments("net").unwrap().is_empty());
        let none = Map::new();
        cache.save("net", &att("a"), &none, &json!({})).unwrap();
        cache.save("net", &att("b"), &none, &json!({})).unwrap();
        cache.save("other", &att("c"), &none, &json!({})).unwrap();
        let mut ids: Vec<String> = cache
            .attachments("net")
            .unwrap()
            .into_iter()
            .map(|a| a.container_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        std::fs::write(cache.path("net", &att("a")), "{ torn").unwrap();
        let err = cache.attachments("net").unwrap_err();
        assert!(matches!(err, Error::CacheEntry { .. }), "{err}");
        assert!(matches!(
            cache.load("net", &att("a")),
            Err(Error::CacheEntry { .. })
        ));
    }
}
