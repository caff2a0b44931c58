//! The lease store on disk, byte-compatible with the Go host-local plugin, plus an owner
//! index so that no operation reads every lease.
//!
//! Shared with Go (same files, same bytes, same lock):
//! - `<dir>/<ip>`: `<containerID>\r\n<ifname>`, no newline, mode 0600 (legacy: `<containerID>`);
//! - `<dir>/last_reserved_ip.<set>`: the set's last reserved address;
//! - `<dir>/lock`: `flock`ed for every operation, so both plugins can run side by side.
//!
//! Ours alone: the owner index ([`crate::index`]) in `<dataDir>/.cni-rs-index/<network>/`,
//! complete as of a fingerprint of the `last_reserved_ip.*` files. Every Go ADD rewrites
//! `last_reserved_ip.0`, so a changed fingerprint means Go added leases we have not indexed,
//! and the index is rebuilt from one full scan. Leases Go released meanwhile are harmless: a
//! lease is always re-read before it is trusted or removed.
//!
//! Leases are written to a temporary file (not synced, as Go's are not) and hard-linked into
//! place, so a lease is never seen empty or half-written; an empty lease found under the lock
//! (a crash of the Go plugin mid-write) is garbage and is reclaimed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cni_common::fsutil::{remove_if_exists, write_private};
use cni_common::validate;

use crate::allocator::{Leases, Owner};
use crate::error::HostLocalError;
use crate::fsutil::overwrite_file;
use crate::index::{Entry, LEGACY, OwnerIndex};

const LOCK: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.";
const TMP: &str = ".cni-rs-tmp";
/// Changes whenever the index format does, so an old index is rebuilt, never misread.
const STATE_HEADER: &str = "cni-rs state v1 buckets=256";

/// Who a lease file says holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOwner {
    Attachment {
        id: String,
        ifname: String,
    },
    /// Written before ifnames were recorded: only the container ID.
    Legacy {
        id: String,
    },
    /// Empty or blank: a write that never finished.
    Empty,
    /// Not text we understand; kept, since we cannot tell whose it is.
    Unknown,
}

impl LeaseOwner {
    pub fn parse(bytes: &[u8]) -> LeaseOwner {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return LeaseOwner::Unknown;
        };
        let text = text.trim();
        if text.is_empty() {
            return LeaseOwner::Empty;
        }
        match text.split_once("\r\n") {
            Some((id, ifname)) => LeaseOwner::Attachment {
                id: id.trim().to_owned(),
                ifname: ifname.to_owned(),
            },
            None => LeaseOwner::Legacy {
                id: text.to_owned(),
            },
        }
    }

    fn matches(&self, owner: Owner<'_>) -> bool {
        matches!(self, LeaseOwner::Attachment { id, ifname } if id == owner.id && ifname == owner.ifname)
    }

    fn matches_legacy(&self, owner: Owner<'_>) -> bool {
        matches!(self, LeaseOwner::Legacy { id } if id == owner.id)
    }

    /// The index entry for this lease, when the owner's names are safe to index.
    fn entry(&self, ip: IpAddr) -> Option<Entry> {
        let (id, leaf) = match self {
            LeaseOwner::Attachment { id, ifname } => {
                validate::interface_name(ifname).ok()?;
                (id, ifname.as_str())
            }
            LeaseOwner::Legacy { id } => (id, LEGACY),
            LeaseOwner::Empty | LeaseOwner::Unknown => return None,
        };
        validate::is_valid_identifier(id).then(|| Entry {
            id: id.clone(),
            leaf: leaf.to_owned(),
            ip,
        })
    }
}

/// The exact bytes the Go plugin writes.
fn lease_bytes(owner: Owner<'_>) -> String {
    format!("{}\r\n{}", owner.id.trim(), owner.ifname)
}

/// One network's lease directory, locked for as long as the value lives.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    set_count: usize,
    index: OwnerIndex,
    _lock: File,
}

type Store<T> = Result<T, HostLocalError>;

impl DiskStore {
    /// Opens the network directory `dir`, creating it (mode 0755, as Go does), and locks it.
    /// `index` is where the owner index lives.
    pub fn open(dir: &Path, index: &Path, set_count: usize) -> Store<DiskStore> {
        fs::create_dir_all(dir)
            .map_err(|e| HostLocalError::store("cannot create lease directory", dir, e))?;
        Self::open_locked(dir, index, set_count)
    }

    /// Opens the directory only if it exists: DEL and CHECK have nothing to do without it.
    pub fn open_existing(dir: &Path, index: &Path, set_count: usize) -> Store<Option<DiskStore>> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Self::open_locked(dir, index, set_count).map(Some),
            Ok(_) => Err(HostLocalError::store(
                "not a directory:",
                dir,
                io::Error::from(ErrorKind::InvalidInput),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HostLocalError::store("cannot open lease directory", dir, e)),
        }
    }

    fn open_locked(dir: &Path, index: &Path, set_count: usize) -> Store<DiskStore> {
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| HostLocalError::store("cannot open lock file", &lock_path, e))?;
        lock.lock()
            .map_err(|e| HostLocalError::store("cannot lock", &lock_path, e))?;
        let owner_index = OwnerIndex::open(index)
            .map_err(|e| HostLocalError::store("cannot open owner index", index, e))?;
        let mut store = DiskStore {
            dir: dir.to_owned(),
            set_count: set_count.max(1),
            index: owner_index,
            _lock: lock,
        };
        if !store.index.is_current(&store.fingerprint()) {
            cni_common::debug_log!(
                "owner index of {} is stale: rebuilding from a scan",
                dir.display()
            );
            let leases = store.scan()?;
            store.reindex(&leases)?;
        }
        Ok(store)
    }

    fn err(&self, what: &'static str, path: &Path, e: io::Error) -> HostLocalError {
        HostLocalError::store(what, path, e)
    }

    fn index_err(&self, e: io::Error) -> HostLocalError {
        HostLocalError::store("cannot update the owner index of", &self.dir, e)
    }

    /// What Go's ADD always changes: the `last_reserved_ip.*` files.
    fn fingerprint(&self) -> String {
        let mut out = format!("{STATE_HEADER}\n");
        for set in 0..self.set_count {
            let path = self.dir.join(format!("{LAST_RESERVED}{set}"));
            match (fs::metadata(&path), fs::read(&path)) {
                (Ok(m), Ok(content)) => out.push_str(&format!(
                    "{set} {} {}.{} {} {}\n",
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.len(),
                    String::from_utf8_lossy(&content).escape_debug()
                )),
                _ => out.push_str(&format!("{set} none\n")),
            }
        }
        out
    }

    fn begin_change(&mut self) -> Store<()> {
        self.index.begin_change().map_err(|e| self.index_err(e))
    }

    /// Records that the index is complete again. Failing here only costs a rebuild later.
    pub fn commit(mut self) {
        let fingerprint = self.fingerprint();
        if let Err(e) = self.index.commit(&fingerprint) {
            eprintln!("host-local: cannot save the owner index: {e}");
        }
    }

    /// Reads every lease of the directory, reclaiming empty ones and stale temp files.
    pub fn scan(&mut self) -> Store<Vec<(IpAddr, LeaseOwner)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| self.err("cannot list", &self.dir, e))?;
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == TMP {
                remove_if_exists(&entry.path()).ok();
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let Ok(bytes) = fs::read(entry.path()) else {
                continue;
            };
            match LeaseOwner::parse(&bytes) {
                LeaseOwner::Empty => {
                    eprintln!(
                        "host-local: reclaiming empty lease file {}",
                        entry.path().display()
                    );
                    remove_if_exists(&entry.path()).ok();
                }
                owner => leases.push((ip, owner)),
            }
        }
        Ok(leases)
    }

    fn reindex(&mut self, leases: &[(IpAddr, LeaseOwner)]) -> Store<()> {
        let entries = leases.iter().filter_map(|(ip, o)| o.entry(*ip)).collect();
        self.index
            .replace_all(entries)
            .map_err(|e| self.index_err(e))
    }

    fn lease_owner(&self, ip: IpAddr) -> Option<LeaseOwner> {
        fs::read(self.dir.join(ip.to_string()))
            .ok()
            .map(|b| LeaseOwner::parse(&b))
    }

    /// The indexed addresses of (`owner.id`, `leaf`) whose lease still says `keep`.
    fn verified(
        &mut self,
        owner: Owner<'_>,
        leaf: &str,
        keep: impl Fn(&LeaseOwner) -> bool,
    ) -> Store<Vec<IpAddr>> {
        let ips = self
            .index
            .lookup(owner.id, leaf)
            .map_err(|e| self.index_err(e))?;
        Ok(ips
            .into_iter()
            .filter(|ip| self.lease_owner(*ip).is_some_and(|o| keep(&o)))
            .collect())
    }

    fn remove_lease(&mut self, ip: IpAddr) -> Store<()> {
        self.begin_change()?;
        let path = self.dir.join(ip.to_string());
        remove_if_exists(&path).map_err(|e| self.err("cannot remove lease", &path, e))
    }

    /// DEL: releases every lease of the attachment; if it has none, the container's legacy
    /// leases (Go's rule). Returns what was released.
    pub fn release(&mut self, owner: Owner<'_>) -> Store<Vec<IpAddr>> {
        let legacy = Owner {
            id: owner.id,
            ifname: LEGACY,
        };
        for (leaf, is_legacy) in [(owner.ifname, false), (LEGACY, true)] {
            let ips = self.verified(owner, leaf, |o| {
                if is_legacy {
                    o.matches_legacy(owner)
                } else {
                    o.matches(owner)
                }
            })?;
            let indexed = if is_legacy { legacy } else { owner };
            if !self
                .index
                .lookup(indexed.id, indexed.ifname)
                .map_err(|e| self.index_err(e))?
                .is_empty()
            {
                self.index
                    .remove(indexed.id, indexed.ifname, None)
                    .map_err(|e| self.index_err(e))?;
            }
            if !ips.is_empty() {
                for ip in &ips {
                    self.remove_lease(*ip)?;
                }
                return Ok(ips);
            }
        }
        Ok(Vec::new())
    }

    /// GC: releases every lease whose owner `keep` rejects. Returns what was released.
    pub fn retain(&mut self, keep: impl Fn(&LeaseOwner) -> bool) -> Store<Vec<IpAddr>> {
        let leases = self.scan()?;
        let (kept, dropped): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(_, o)| keep(o));
        for (ip, _) in &dropped {
            self.remove_lease(*ip)?;
        }
        self.reindex(&kept)?;
        Ok(dropped.into_iter().map(|(ip, _)| ip).collect())
    }
}

impl Leases for DiskStore {
    fn reserve(&mut self, ip: IpAddr, owner: Owner<'_>, set: usize) -> Store<bool> {
        self.begin_change()?;
        let path = self.dir.join(ip.to_string());
        let tmp = self.dir.join(TMP);
        // Linked into place only once written, so no reader ever sees it empty or half
        // written. Not synced (nor is the Go plugin's): a sync only matters after a power
        // loss, which no container survives, and an empty lease left by one is reclaimed.
        write_private(&tmp, lease_bytes(owner).as_bytes())
            .map_err(|e| self.err("cannot write lease", &tmp, e))?;
        let mut linked = fs::hard_link(&tmp, &path);
        if matches!(&linked, Err(e) if e.kind() == ErrorKind::AlreadyExists)
            && self.lease_owner(ip) == Some(LeaseOwner::Empty)
        {
            eprintln!("host-local: reclaiming empty lease file {}", path.display());
            remove_if_exists(&path).map_err(|e| self.err("cannot remove lease", &path, e))?;
            linked = fs::hard_link(&tmp, &path);
        }
        remove_if_exists(&tmp).map_err(|e| self.err("cannot remove", &tmp, e))?;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(self.err("cannot create lease", &path, e)),
        }
        self.index
            .insert(Entry {
                id: owner.id.to_owned(),
                leaf: owner.ifname.to_owned(),
                ip,
            })
            .map_err(|e| self.index_err(e))?;
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        overwrite_file(&last, ip.to_string().as_bytes())
            .map_err(|e| self.err("cannot write", &last, e))?;
        Ok(true)
    }

    fn unreserve(&mut self, ip: IpAddr, owner: Owner<'_>) -> Store<()> {
        if self.lease_owner(ip).is_some_and(|o| o.matches(owner)) {
            self.remove_lease(ip)?;
        }
        self.index
            .remove(owner.id, owner.ifname, Some(ip))
            .map_err(|e| self.index_err(e))
    }

    fn last_reserved(&mut self, set: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?;
        text.trim().parse().ok()
    }

    fn owned(&mut self, owner: Owner<'_>) -> Store<Vec<IpAddr>> {
        let mut ips = self.verified(owner, owner.ifname, |o| o.matches(owner))?;
        ips.extend(self.verified(owner, LEGACY, |o| o.matches_legacy(owner))?);
        Ok(ips)
    }
}

#[cfg(test)]
mod tests;
