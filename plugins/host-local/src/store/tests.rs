use std::os::unix::fs::PermissionsExt;

use super::*;

fn owner(id: &str) -> Owner<'_> {
    Owner { id, ifname: "eth0" }
}

/// The index lives beside the network directory, as `<dataDir>/.cni-rs-index/<network>`.
fn idx(dir: &Path) -> PathBuf {
    dir.parent().unwrap().join(".cni-rs-index").join("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn reserve(dir: &Path, addr: &str, id: &str) {
    let mut s = DiskStore::open(dir, &idx(dir), 1).unwrap();
    assert!(s.reserve(ip(addr), owner(id), 0).unwrap());
    s.commit();
}

/// Writes a lease the way the Go plugin does: no index, last_reserved_ip rewritten in place.
fn go_reserve(dir: &Path, addr: &str, content: &str) {
    fs::write(dir.join(addr), content).unwrap();
    fs::write(dir.join("last_reserved_ip.0"), addr).unwrap();
}

#[test]
fn files_are_byte_compatible_with_go() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    reserve(&dir, "10.1.2.3", "c-1.1.0");
    let lease = dir.join("10.1.2.3");
    assert_eq!(fs::read(&lease).unwrap(), b"c-1.1.0\r\neth0");
    assert_eq!(
        fs::metadata(&lease).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"10.1.2.3"
    );
    assert!(dir.join("lock").exists());
    assert!(!dir.join(TMP).exists());
}

#[test]
fn reserve_is_exclusive_and_release_is_by_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    assert!(s.reserve(ip("10.0.0.2"), owner("a"), 0).unwrap());
    assert!(!s.reserve(ip("10.0.0.2"), owner("b"), 0).unwrap());
    assert!(s.reserve(ip("fd00::2"), owner("a"), 0).unwrap());
    assert_eq!(s.owned(owner("a")).unwrap().len(), 2);
    assert_eq!(s.release(owner("b")).unwrap(), Vec::<IpAddr>::new());
    let mut released = s.release(owner("a")).unwrap();
    released.sort();
    assert_eq!(released, [ip("10.0.0.2"), ip("fd00::2")]);
    assert!(s.release(owner("a")).unwrap().is_empty());
    s.commit();
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["last_reserved_ip.0", "lock"]);
}

#[test]
fn leases_written_by_go_are_found_after_a_go_add() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    reserve(&dir, "10.0.0.2", "ours");
    // Go adds a lease: the fingerprint of last_reserved_ip.0 changes, the index is rebuilt.
    go_reserve(&dir, "10.0.0.3", "theirs\r\neth0");
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    assert_eq!(s.owned(owner("theirs")).unwrap(), [ip("10.0.0.3")]);
    assert_eq!(s.release(owner("theirs")).unwrap(), [ip("10.0.0.3")]);
    s.commit();
    assert!(!dir.join("10.0.0.3").exists());
}

#[test]
fn a_directory_from_the_go_plugin_is_indexed_on_first_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    fs::create_dir_all(&dir).unwrap();
    go_reserve(&dir, "10.0.0.5", "old\r\neth0");
    fs::write(dir.join("10.0.0.6"), "legacy-id").unwrap();
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    assert_eq!(s.release(owner("old")).unwrap(), [ip("10.0.0.5")]);
    // No lease of (legacy-id, eth0): the container's legacy lease is released instead.
    assert_eq!(s.owned(owner("legacy-id")).unwrap(), [ip("10.0.0.6")]);
    assert_eq!(s.release(owner("legacy-id")).unwrap(), [ip("10.0.0.6")]);
}

#[test]
fn index_entries_are_verified_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    reserve(&dir, "10.0.0.2", "a");
    // Go releases it (no fingerprint change) and the address is taken by hand by someone
    // else without touching last_reserved_ip: the stale index entry must not be trusted.
    fs::write(dir.join("10.0.0.2"), "b\r\neth0").unwrap();
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    assert!(s.owned(owner("a")).unwrap().is_empty());
    assert!(s.release(owner("a")).unwrap().is_empty());
    assert!(dir.join("10.0.0.2").exists(), "b's lease was removed");
}

#[test]
fn a_crash_mid_change_forces_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    reserve(&dir, "10.0.0.2", "a");
    let state = idx(&dir).join("state");
    assert!(
        fs::read(&state)
            .unwrap()
            .starts_with(STATE_HEADER.as_bytes())
    );
    {
        let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
        s.reserve(ip("10.0.0.3"), owner("b"), 0).unwrap();
        // Dropped without commit, as if killed: the index of b was never written.
    }
    assert!(
        fs::read(&state).unwrap().starts_with(b"!"),
        "state not spoiled"
    );
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    assert_eq!(s.owned(owner("b")).unwrap(), [ip("10.0.0.3")]);
    assert_eq!(s.owned(owner("a")).unwrap(), [ip("10.0.0.2")]);
}

#[test]
fn only_go_format_files_stay_in_the_lease_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    reserve(&dir, "10.0.0.2", "a");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["10.0.0.2", "last_reserved_ip.0", "lock"]);
}

#[test]
fn empty_lease_files_are_reclaimed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10.0.0.2"), "").unwrap();
    fs::write(dir.join("10.0.0.3"), " \n").unwrap();
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    // The open's rebuild scan removed both.
    assert!(!dir.join("10.0.0.2").exists());
    fs::write(dir.join("10.0.0.4"), "").unwrap();
    assert!(s.reserve(ip("10.0.0.4"), owner("a"), 0).unwrap());
    assert_eq!(fs::read(dir.join("10.0.0.4")).unwrap(), b"a\r\neth0");
}

#[test]
fn unsafe_owner_names_in_leases_are_not_used_as_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("10.0.0.2"), "../../escape\r\neth0").unwrap();
    fs::write(dir.join("10.0.0.3"), "x\r\n../../y").unwrap();
    let s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    s.commit();
    assert!(!tmp.path().join("escape").exists());
    assert!(!idx(&dir).join("y").exists());
    // GC can still sweep them.
    let mut s = DiskStore::open(&dir, &idx(&dir), 1).unwrap();
    let mut gone = s.retain(|_| false).unwrap();
    gone.sort();
    assert_eq!(gone, [ip("10.0.0.2"), ip("10.0.0.3")]);
}

#[test]
fn lease_owner_parsing() {
    assert_eq!(
        LeaseOwner::parse(b"  id1 \r\neth0\n"),
        LeaseOwner::Attachment {
            id: "id1".into(),
            ifname: "eth0".into()
        }
    );
    assert_eq!(
        LeaseOwner::parse(b"id1"),
        LeaseOwner::Legacy { id: "id1".into() }
    );
    assert_eq!(LeaseOwner::parse(b"\n"), LeaseOwner::Empty);
    assert_eq!(LeaseOwner::parse(&[0xff, 0xfe]), LeaseOwner::Unknown);
}
