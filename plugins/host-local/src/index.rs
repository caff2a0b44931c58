//! The owner index: which addresses each attachment holds, so that DEL, CHECK and the
//! duplicate check read a few hundred bytes instead of every lease.
//!
//! It lives in `<dataDir>/.cni-rs-index/<network>/`, outside the network directory, so the
//! Go plugin never sees it (no network name starts with `.`):
//! - `owners/<bucket>`: lines `<containerID> <ifname|:legacy> <ip>` for the containers whose
//!   ID hashes to that bucket. A fixed set of files rewritten in place: on ext4 allocating a
//!   new inode costs far more than rewriting a small file, so nothing here is created per pod.
//! - `state`: the fingerprint under which the index is complete. It is spoiled before the
//!   first change of an operation and rewritten after the last, so an operation that dies
//!   half-way leaves an index that the next one rebuilds.
//!
//! Entries are hints: the caller re-reads a lease before trusting or removing it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{overwrite_file, rewrite};

const OWNERS: &str = "owners";
const STATE: &str = "state";
const BUCKETS: u32 = 256;
/// Names the leases written before ifnames were recorded. Never an ifname: those cannot
/// contain `:`.
pub const LEGACY: &str = ":legacy";
const HEADER: &str = "cni-rs owners v1";

/// One address held by one attachment (`leaf` is the ifname, or [`LEGACY`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub id: String,
    pub leaf: String,
    pub ip: IpAddr,
}

#[derive(Debug, Default)]
struct Bucket {
    entries: Vec<Entry>,
    changed: bool,
}

#[derive(Debug)]
pub struct OwnerIndex {
    dir: PathBuf,
    state: File,
    saved: Vec<u8>,
    dirty: bool,
    buckets: BTreeMap<u32, Bucket>,
}

/// FNV-1a: stable across builds and machines, which std's hasher is not promised to be.
fn bucket_of(id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    hash % BUCKETS
}

/// The entries of a bucket file (its first line is the header).
pub fn parse_bucket(text: &str) -> Vec<Entry> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let mut words = line.split(' ');
    let (id, leaf, ip) = (words.next()?, words.next()?, words.next()?);
    Some(Entry {
        id: id.to_owned(),
        leaf: leaf.to_owned(),
        ip: ip.parse().ok()?,
    })
}

impl OwnerIndex {
    pub fn open(dir: &Path) -> io::Result<OwnerIndex> {
        fs::create_dir_all(dir.join(OWNERS))?;
        let mut state = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(STATE))?;
        let mut saved = Vec::new();
        state.read_to_end(&mut saved)?;
        Ok(OwnerIndex {
            dir: dir.to_owned(),
            state,
            saved,
            dirty: false,
            buckets: BTreeMap::new(),
        })
    }

    /// Whether the index is complete for the lease directory with this fingerprint.
    pub fn is_current(&self, fingerprint: &str) -> bool {
        self.saved == fingerprint.as_bytes()
    }

    /// Spoils `state` before the first change, so a crash mid-way forces a rebuild.
    pub fn begin_change(&mut self) -> io::Result<()> {
        if !self.dirty {
            self.state.write_all_at(b"!", 0)?;
            self.dirty = true;
        }
        Ok(())
    }

    fn bucket_path(&self, bucket: u32) -> PathBuf {
        self.dir.join(OWNERS).join(format!("{bucket:02x}"))
    }

    fn bucket(&mut self, id: &str) -> io::Result<&mut Bucket> {
        let key = bucket_of(id);
        if !self.buckets.contains_key(&key) {
            let entries = match fs::read_to_string(self.bucket_path(key)) {
                Ok(text) => parse_bucket(&text),
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            self.buckets.insert(
                key,
                Bucket {
                    entries,
                    changed: false,
                },
            );
        }
        self.buckets
            .get_mut(&key)
            .ok_or_else(|| io::Error::other("bucket vanished"))
    }

    pub fn lookup(&mut self, id: &str, leaf: &str) -> io::Result<Vec<IpAddr>> {
        Ok(self
            .bucket(id)?
            .entries
            .iter()
            .filter(|e| e.id == id && e.leaf == leaf)
            .map(|e| e.ip)
            .collect())
    }

    pub fn insert(&mut self, entry: Entry) -> io::Result<()> {
        self.begin_change()?;
        let bucket = self.bucket(&entry.id)?;
        if !bucket.entries.contains(&entry) {
            bucket.entries.push(entry);
            bucket.changed = true;
        }
        Ok(())
    }

    /// Removes the entries of (`id`, `leaf`), all of them or only `ip`'s.
    pub fn remove(&mut self, id: &str, leaf: &str, ip: Option<IpAddr>) -> io::Result<()> {
        self.begin_change()?;
        let bucket = self.bucket(id)?;
        let before = bucket.entries.len();
        bucket
            .entries
            .retain(|e| !(e.id == id && e.leaf == leaf && ip.is_none_or(|ip| e.ip == ip)));
        bucket.changed |= bucket.entries.len() != before;
        Ok(())
    }

    /// Replaces the whole index (after a full scan).
    pub fn replace_all(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        self.begin_change()?;
        self.buckets.clear();
        for key in 0..BUCKETS {
            if self.bucket_path(key).exists() {
                self.buckets.insert(
                    key,
                    Bucket {
                        entries: Vec::new(),
                        changed: true,
                    },
                );
            }
        }
        for entry in entries {
            let bucket = self.buckets.entry(bucket_of(&entry.id)).or_default();
            bucket.entries.push(entry);
            bucket.changed = true;
        }
        Ok(())
    }

    /// Writes the changed buckets, then `state` with `fingerprint`.
    pub fn commit(&mut self, fingerprint: &str) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        for (key, bucket) in &self.buckets {
            if bucket.changed {
                let mut text = format!("{HEADER}\n");
                for e in &bucket.entries {
                    text.push_str(&format!("{} {} {}\n", e.id, e.leaf, e.ip));
                }
                overwrite_file(&self.bucket_path(*key), text.as_bytes())?;
            }
        }
        rewrite(&mut self.state, fingerprint.as_bytes())?;
        self.dirty = false;
        self.saved = fingerprint.as_bytes().to_vec();
        for bucket in self.buckets.values_mut() {
            bucket.changed = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, ip: &str) -> Entry {
        Entry {
            id: id.into(),
            leaf: "eth0".into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn survives_reopen_only_after_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut idx = OwnerIndex::open(tmp.path()).unwrap();
        assert!(!idx.is_current("fp1"));
        idx.insert(entry("a", "10.0.0.2")).unwrap();
        idx.insert(entry("a", "fd00::2")).unwrap();
        idx.commit("fp1").unwrap();
        let mut idx = OwnerIndex::open(tmp.path()).unwrap();
        assert!(idx.is_current("fp1"));
        assert_eq!(idx.lookup("a", "eth0").unwrap().len(), 2);
        idx.remove("a", "eth0", Some("10.0.0.2".parse().unwrap()))
            .unwrap();
        drop(idx); // dies before commit
        let mut idx = OwnerIndex::open(tmp.path()).unwrap();
        assert!(
            !idx.is_current("fp1"),
            "a change that never committed left a valid state"
        );
        idx.replace_all(vec![entry("b", "10.0.0.3")]).unwrap();
        idx.commit("fp2").unwrap();
        let mut idx = OwnerIndex::open(tmp.path()).unwrap();
        assert!(idx.is_current("fp2"));
        assert!(idx.lookup("a", "eth0").unwrap().is_empty());
        assert_eq!(idx.lookup("b", "eth0").unwrap().len(), 1);
    }

    #[test]
    fn buckets_are_stable() {
        // Changing the hash would orphan every index on disk: pin a few values.
        assert_eq!(bucket_of(""), 0xc5);
        assert_eq!(bucket_of("a"), 0x2c);
        assert_eq!(
            bucket_of("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            bucket_of("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        );
    }
}
