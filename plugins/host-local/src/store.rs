//! The lease store on disk, byte-compatible with the Go host-local plugin, plus an owner
//! index so that no operation reads every lease.
//!
//! Shared with Go (same files, same bytes, same lock):
//! - `<dir>/<ip>`: `<containerID>\r\n<ifname>`, no newline, mode 0600 (legacy: `<containerID>`);
//! - `<dir>/last_reserved_ip.<set>`: the set's last reserved address;
//! - `<dir>/lock`: `flock`ed for every operation, so both plugins can run side by side.
//!
//! Ours alone, in `<dir>/.cni-rs/` (Go walks it but nothing in it ever matches a lease):
//! - `owners/<containerID>/<ifname>` (or `:legacy`): the addresses that attachment holds;
//! - `state`: present only while the owner index is complete, and holding a fingerprint of the
//!   `last_reserved_ip.*` files. Every Go ADD rewrites `last_reserved_ip.0`, so a changed
//!   fingerprint means Go added leases we have not indexed: the index is rebuilt from a full
//!   scan. Our own mutations remove `state` first and write it back last, so a crash mid-way
//!   also forces a rebuild. Index entries are only hints: a lease is always re-read before it
//!   is trusted or removed, so leases Go released meanwhile are harmless.
//!
//! Leases are written to a temporary file, synced and hard-linked into place, so a lease is
//! never seen empty or half-written; an empty lease found under the lock (a crash of the Go
//! plugin mid-write) is garbage and is reclaimed.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cni_common::validate;

use crate::allocator::{Leases, Owner};
use crate::error::HostLocalError;

const LOCK: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.";
const TMP: &str = ".cni-rs-tmp";
const META: &str = ".cni-rs";
const OWNERS: &str = "owners";
const STATE: &str = "state";
/// Owner-record name for leases written before ifnames were recorded. Never an ifname: those
/// cannot contain `:`.
const LEGACY: &str = ":legacy";
/// First line of our files: contains a space, so it never equals a container ID, and no
/// `\r\n`, so it never equals a lease.
const OWNER_HEADER: &str = "cni-rs owner v1";
const STATE_HEADER: &str = "cni-rs state v1";

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

    /// The owner-record path components, when the owner's names are safe as file names.
    fn record_key(&self) -> Option<(String, String)> {
        let (id, leaf) = match self {
            LeaseOwner::Attachment { id, ifname } => {
                validate::interface_name(ifname).ok()?;
                (id, ifname.as_str())
            }
            LeaseOwner::Legacy { id } => (id, LEGACY),
            LeaseOwner::Empty | LeaseOwner::Unknown => return None,
        };
        validate::is_valid_identifier(id).then(|| (id.clone(), leaf.to_owned()))
    }
}

/// The exact bytes the Go plugin writes.
fn lease_bytes(owner: Owner<'_>) -> String {
    format!("{}\r\n{}", owner.id.trim(), owner.ifname)
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One network's lease directory, locked for as long as the value lives.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    set_count: usize,
    /// The index was changed and `state` removed; [`DiskStore::commit`] writes it back.
    dirty: bool,
    _lock: File,
}

type Store<T> = Result<T, HostLocalError>;

impl DiskStore {
    /// Opens the network directory, creating it (mode 0755, as Go does), and locks it.
    pub fn open(dir: &Path, set_count: usize) -> Store<DiskStore> {
        fs::create_dir_all(dir)
            .map_err(|e| HostLocalError::store("cannot create lease directory", dir, e))?;
        Self::open_locked(dir, set_count)
    }

    /// Opens the directory only if it exists: DEL and CHECK have nothing to do without it.
    pub fn open_existing(dir: &Path, set_count: usize) -> Store<Option<DiskStore>> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Self::open_locked(dir, set_count).map(Some),
            Ok(_) => Err(HostLocalError::store(
                "not a directory:",
                dir,
                io::Error::from(ErrorKind::InvalidInput),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HostLocalError::store("cannot open lease directory", dir, e)),
        }
    }

    fn open_locked(dir: &Path, set_count: usize) -> Store<DiskStore> {
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
        let mut store = DiskStore {
            dir: dir.to_owned(),
            set_count: set_count.max(1),
            dirty: false,
            _lock: lock,
        };
        let saved = read_if_exists(&store.meta(STATE)).unwrap_or(None);
        if saved.as_deref() != Some(store.fingerprint().as_bytes()) {
            store.rebuild_index()?;
        }
        Ok(store)
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(META).join(name)
    }

    fn record_path(&self, id: &str, leaf: &str) -> PathBuf {
        self.dir.join(META).join(OWNERS).join(id).join(leaf)
    }

    fn err(&self, what: &'static str, path: &Path, e: io::Error) -> HostLocalError {
        HostLocalError::store(what, path, e)
    }

    /// What Go's ADD always changes: the `last_reserved_ip.*` files.
    fn fingerprint(&self) -> String {
        let mut out = format!("{STATE_HEADER}\n");
        for set in 0..self.set_count {
            let path = self.dir.join(format!("{LAST_RESERVED}{set}"));
            let meta = fs::metadata(&path).ok();
            let content = fs::read(&path).unwrap_or_default();
            match meta {
                Some(m) => out.push_str(&format!(
                    "{set} {} {}.{} {} {}\n",
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.len(),
                    String::from_utf8_lossy(&content).escape_debug()
                )),
                None => out.push_str(&format!("{set} none\n")),
            }
        }
        out
    }

    /// Removes `state` before the first change, so a crash mid-way forces a rebuild.
    fn begin_change(&mut self) -> Store<()> {
        if !self.dirty {
            let state = self.meta(STATE);
            remove_if_exists(&state).map_err(|e| self.err("cannot invalidate", &state, e))?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Records that the index is complete again. Failing here only costs a rebuild later.
    pub fn commit(mut self) {
        if self.dirty {
            let state = self.meta(STATE);
            if let Err(e) = write_file(&state, self.fingerprint().as_bytes()) {
                eprintln!("host-local: cannot write {}: {e}", state.display());
            }
            self.dirty = false;
        }
    }

    /// Reads every lease of the directory, reclaiming empty ones and stale temp files.
    pub fn scan(&mut self) -> Store<Vec<(IpAddr, LeaseOwner)>> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| self.err("cannot list", &self.dir.clone(), e))?;
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == TMP {
                self.begin_change()?;
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
                    self.begin_change()?;
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

    /// Rewrites the owner index from a full scan.
    fn rebuild_index(&mut self) -> Store<()> {
        let leases = self.scan()?;
        self.write_index(&leases)
    }

    fn write_index(&mut self, leases: &[(IpAddr, LeaseOwner)]) -> Store<()> {
        self.begin_change()?;
        let owners = self.dir.join(META).join(OWNERS);
        match fs::remove_dir_all(&owners) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(self.err("cannot clear", &owners, e));
            }
            _ => {}
        }
        let mut records: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for (ip, owner) in leases {
            if let Some(key) = owner.record_key() {
                records.entry(key).or_default().push(*ip);
            }
        }
        fs::create_dir_all(&owners).map_err(|e| self.err("cannot create", &owners, e))?;
        for ((id, leaf), ips) in records {
            self.write_record(&id, &leaf, &ips)?;
        }
        Ok(())
    }

    fn read_record(&self, id: &str, leaf: &str) -> Vec<IpAddr> {
        let mut text = String::new();
        let path = self.record_path(id, leaf);
        match File::open(&path).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) => text
                .lines()
                .skip(1)
                .filter_map(|l| l.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn write_record(&mut self, id: &str, leaf: &str, ips: &[IpAddr]) -> Store<()> {
        self.begin_change()?;
        let path = self.record_path(id, leaf);
        if ips.is_empty() {
            remove_if_exists(&path).map_err(|e| self.err("cannot remove", &path, e))?;
            if let Some(parent) = path.parent() {
                // Fails while other interfaces of the container remain: that is fine.
                let _ = fs::remove_dir(parent);
            }
            return Ok(());
        }
        let mut text = format!("{OWNER_HEADER}\n");
        for ip in ips {
            text.push_str(&format!("{ip}\n"));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| self.err("cannot create", parent, e))?;
        }
        write_file(&path, text.as_bytes()).map_err(|e| self.err("cannot write", &path, e))?;
        Ok(())
    }

    fn lease_owner(&self, ip: IpAddr) -> Option<LeaseOwner> {
        fs::read(self.dir.join(ip.to_string()))
            .ok()
            .map(|b| LeaseOwner::parse(&b))
    }

    /// Index entries of `leaf` for `owner`, re-read from the leases and filtered by `keep`.
    fn verified(
        &self,
        owner: Owner<'_>,
        leaf: &str,
        keep: impl Fn(&LeaseOwner) -> bool,
    ) -> Vec<IpAddr> {
        self.read_record(owner.id, leaf)
            .into_iter()
            .filter(|ip| self.lease_owner(*ip).is_some_and(|o| keep(&o)))
            .collect()
    }

    fn remove_lease(&mut self, ip: IpAddr) -> Store<()> {
        self.begin_change()?;
        let path = self.dir.join(ip.to_string());
        remove_if_exists(&path).map_err(|e| self.err("cannot remove lease", &path, e))
    }

    /// DEL: releases every lease of the attachment; if it has none, the container's legacy
    /// leases (Go's rule). Returns what was released.
    pub fn release(&mut self, owner: Owner<'_>) -> Store<Vec<IpAddr>> {
        for (leaf, legacy) in [(owner.ifname, false), (LEGACY, true)] {
            let ips = self.verified(owner, leaf, |o| {
                if legacy {
                    o.matches_legacy(owner)
                } else {
                    o.matches(owner)
                }
            });
            if !self.read_record(owner.id, leaf).is_empty() {
                self.write_record(owner.id, leaf, &[])?;
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

    /// GC: releases every lease whose attachment `keep` rejects. Returns what was released.
    pub fn retain(&mut self, keep: impl Fn(&LeaseOwner) -> bool) -> Store<Vec<IpAddr>> {
        let leases = self.scan()?;
        let (kept, dropped): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(_, o)| keep(o));
        for (ip, _) in &dropped {
            self.remove_lease(*ip)?;
        }
        self.write_index(&kept)?;
        Ok(dropped.into_iter().map(|(ip, _)| ip).collect())
    }
}

impl Leases for DiskStore {
    fn reserve(&mut self, ip: IpAddr, owner: Owner<'_>, set: usize) -> Store<bool> {
        self.begin_change()?;
        let path = self.dir.join(ip.to_string());
        let tmp = self.dir.join(TMP);
        let file = write_file(&tmp, lease_bytes(owner).as_bytes())
            .map_err(|e| self.err("cannot write lease", &tmp, e))?;
        file.sync_data()
            .map_err(|e| self.err("cannot sync lease", &tmp, e))?;
        drop(file);
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
        let mut ips = self.read_record(owner.id, owner.ifname);
        ips.push(ip);
        self.write_record(owner.id, owner.ifname, &ips)?;
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        write_file(&last, ip.to_string().as_bytes())
            .map_err(|e| self.err("cannot write", &last, e))?;
        Ok(true)
    }

    fn unreserve(&mut self, ip: IpAddr, owner: Owner<'_>) -> Store<()> {
        if self.lease_owner(ip).is_some_and(|o| o.matches(owner)) {
            self.remove_lease(ip)?;
        }
        let mut ips = self.read_record(owner.id, owner.ifname);
        ips.retain(|x| *x != ip);
        self.write_record(owner.id, owner.ifname, &ips)
    }

    fn last_reserved(&mut self, set: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?;
        text.trim().parse().ok()
    }

    fn owned(&mut self, owner: Owner<'_>) -> Store<Vec<IpAddr>> {
        let mut ips = self.verified(owner, owner.ifname, |o| o.matches(owner));
        ips.extend(self.verified(owner, LEGACY, |o| o.matches_legacy(owner)));
        Ok(ips)
    }
}

#[cfg(test)]
mod tests;
