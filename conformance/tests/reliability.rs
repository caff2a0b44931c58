//! Reliability of the flannel → portmap chain: a storm of parallel pods, SIGKILL at random
//! points of ADD, and faults of the node (full or read-only state, missing plugins, vanished
//! namespaces and bridges, a changed subnet, garbage in the lease directory).
//!
//! `CNI_STORM_PODS` (default 200) and `CNI_CRASH_TRIALS` (default 20; run 100+ for the long
//! variant, `scripts/reliability.sh`) size the two long tests.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conformance::OutcomeExt;
use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conformance::chain::Attachment;
use conformance::flannel::{conflist, leases, names_in, testdata, write_subnet_env};
use conformance::{Chain, Node, TestNetns};
use serde_json::{Value, json};

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random number below `n`, without a dependency for it.
fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}

fn chain(node: &Node, port: Option<u16>) -> Chain {
    let mappings = match port {
        Some(p) => json!([{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]),
        None => json!([]),
    };
    Chain::new(conflist(node, "1.0.0")).with_capability_args(json!({"portMappings": mappings}))
}

/// Nothing of the suite remains on the node: no veth, lease, saved config, marker or rule.
fn assert_clean(node: &Node, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.host().sh("ip", &["link"]).contains("veth") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let links = node.host().sh("ip", &["-o", "link"]);
    assert!(!links.contains("veth"), "{when}: veth left\n{links}");
    assert!(
        leases(node).is_empty(),
        "{when}: leases left {:?}",
        leases(node)
    );
    assert!(
        names_in(node, "flannel").is_empty(),
        "{when}: saved configs left"
    );
    assert!(
        names_in(node, "portmap").is_empty(),
        "{when}: portmap markers left"
    );
    let rules = node.host().sh("nft", &["list", "ruleset"]);
    assert!(
        !rules.contains("dnat") && !rules.contains("masquerade"),
        "{when}: rules left\n{rules}"
    );
}

/// Every lease file holds `<id>\r\n<ifname>`: none empty or half-written.
fn assert_leases_well_formed(node: &Node) {
    for name in leases(node) {
        let text = fs::read_to_string(node.dir().join("ipam/cbr0").join(&name)).unwrap();
        let ok = text
            .split_once("\r\n")
            .is_some_and(|(id, ifname)| !id.is_empty() && ifname == "eth0");
        assert!(ok, "lease {name} is not well formed: {text:?}");
    }
}

#[test]
fn storm_of_parallel_pods() {
    let pods = env_number("CNI_STORM_PODS", 200);
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    for round in 0..3 {
        let next = Mutex::new(0usize);
        let added: Mutex<Vec<(Attachment, TestNetns, Value, Chain)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    loop {
                        let i = {
                            let mut n = next.lock().unwrap();
                            *n += 1;
                            *n - 1
                        };
                        if i >= pods {
                            break;
                        }
                        let c = chain(&node, Some(20000 + u16::try_from(i).unwrap()));
                        let (id, ns) = node.container();
                        let att = Attachment::new(&id, &ns.path_str(), "eth0");
                        let r = c
                            .add(&node, &att)
                            .unwrap_or_else(|e| panic!("round {round} ADD {i}: {:?}", e.outcome));
                        added.lock().unwrap().push((att, ns, r, c));
                    }
                });
            }
        });
        let added = added.into_inner().unwrap();
        let ips: HashSet<String> = added
            .iter()
            .map(|(_, _, r, _)| r["ips"][0]["address"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ips.len(), pods, "round {round}: an address was given twice");
        assert_eq!(leases(&node).len(), pods);
        let queue = Mutex::new(added);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    loop {
                        let Some((att, ns, r, c)) = queue.lock().unwrap().pop() else {
                            break;
                        };
                        c.del(&node, &att, Some(&r))
                            .unwrap_or_else(|e| panic!("round {round} DEL: {:?}", e.outcome));
                        drop(ns);
                    }
                });
            }
        });
        assert_clean(&node, &format!("after storm round {round}"));
    }
}

#[test]
fn sigkill_at_random_points_of_add() {
    let trials = env_number("CNI_CRASH_TRIALS", 20);
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let mut killed = 0;
    for trial in 0..trials {
        let c = chain(&node, Some(30000 + u16::try_from(trial % 1000).unwrap()));
        let (id, mut ns) = node.container();
        let att = Attachment::new(&id, &ns.path_str(), "eth0");
        // Which plugin dies: flannel (with the bridge and host-local it runs) or portmap.
        let victim = random_below(2) as usize;
        let prev = if victim == 1 {
            match c.add_prefix(&node, &att, 1) {
                Ok(p) => Some(p),
                Err(e) => panic!("trial {trial}: flannel ADD failed: {:?}", e.outcome),
            }
        } else {
            None
        };
        let plugin = c.list()["plugins"][victim]["type"]
            .as_str()
            .unwrap()
            .to_owned();
        let child = node
            .plugin(&plugin)
            .command("ADD")
            .container(&id, &ns.path_str())
            .config(&c.request_config(victim, prev.as_ref()))
            .spawn();
        std::thread::sleep(Duration::from_micros(random_below(15_000)));
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        if nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).is_ok() {
            killed += 1;
        }
        let _ = child.wait_with_output();
        assert_leases_well_formed(&node);
        // The runtime's DEL after a failed ADD: no cached result, then the netns goes.
        c.del(&node, &att, None)
            .unwrap_or_else(|e| panic!("trial {trial}: DEL after SIGKILL failed: {:?}", e.outcome));
        ns.delete();
        assert_clean(&node, &format!("trial {trial} ({plugin} killed)"));
        // The next pod works.
        if trial % 5 == 4 {
            let next = chain(&node, None);
            let (id2, ns2) = node.container();
            let att2 = Attachment::new(&id2, &ns2.path_str(), "eth0");
            let r = next.add(&node, &att2).unwrap();
            next.del(&node, &att2, Some(&r)).unwrap();
        }
    }
    assert!(
        killed > 0,
        "no plugin was ever killed: the test proves nothing"
    );
}

#[test]
fn sigterm_during_a_state_change_leaves_no_half_state() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    for trial in 0..10 {
        let c = chain(&node, None);
        let (id, mut ns) = node.container();
        let att = Attachment::new(&id, &ns.path_str(), "eth0");
        let child = node
            .plugin("flannel")
            .command("ADD")
            .container(&id, &ns.path_str())
            .config(&c.request_config(0, None))
            .spawn();
        std::thread::sleep(Duration::from_micros(random_below(10_000)));
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait_with_output();
        assert_leases_well_formed(&node);
        c.del(&node, &att, None)
            .unwrap_or_else(|e| panic!("trial {trial}: {:?}", e.outcome));
        ns.delete();
        assert_clean(&node, &format!("SIGTERM trial {trial}"));
    }
}

/// A tmpfs of `size` at `dir` (unmounted on drop), for full and read-only data dirs.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        let opts = format!("size={size}");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        Tmpfs(dir)
    }

    fn read_only(&self) {
        nix::mount::mount(
            None::<&str>,
            &self.0,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_and_read_only_data_dirs_give_clear_errors_and_lose_nothing() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let ipam = node.dir().join("ipam");
    let fs_guard = Tmpfs::mount(ipam.clone(), "64k");
    let c = chain(&node, None);
    let first_ns = node.container();
    let first = Attachment::new(&first_ns.0, &first_ns.1.path_str(), "eth0");
    let r = c.add(&node, &first).unwrap();
    // Fill the filesystem to the last byte.
    let mut filler = fs::File::create(ipam.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let err = c.add(&node, &att).unwrap_err();
    let msg = err.outcome.err(104);
    assert!(msg.contains("No space left on device"), "{msg}");
    c.del(&node, &att, None).unwrap();
    assert_leases_well_formed(&node);
    assert_eq!(
        leases(&node).len(),
        1,
        "the full disk lost or duplicated a lease"
    );
    // Read-only: ADD fails clearly, DEL reports it cannot release (and keeps the saved config
    // so that a later DEL retries).
    fs::remove_file(ipam.join("filler")).unwrap();
    fs_guard.read_only();
    let err = c.add(&node, &att).unwrap_err();
    assert!(
        err.outcome.err(104).contains("Read-only file system"),
        "{:?}",
        err.outcome
    );
    let del = c.del(&node, &first, Some(&r)).unwrap_err();
    assert!(
        del.outcome.stdout.contains("Read-only file system"),
        "{:?}",
        del.outcome
    );
    assert_eq!(names_in(&node, "flannel"), [first.container_id.as_str()]);
    drop(fs_guard);
}

#[test]
fn node_faults_between_add_and_del() {
    let node = Node::new();
    write_subnet_env(&node, &testdata("subnet.env"));
    let c = chain(&node, Some(8080));

    // The netns is deleted before DEL.
    let (id, mut ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let r = c.add(&node, &att).unwrap();
    ns.delete();
    c.del(&node, &att, Some(&r)).unwrap();
    assert_clean(&node, "after DEL with the netns gone");

    // The bridge is deleted by hand: DEL still releases everything, the next ADD rebuilds it.
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let r = c.add(&node, &att).unwrap();
    node.host().sh("ip", &["link", "del", "cni0"]);
    c.del(&node, &att, Some(&r)).unwrap();
    drop(ns);
    assert_clean(&node, "after DEL with the bridge gone");
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let r = c.add(&node, &att).unwrap();
    assert!(
        node.host()
            .sh("ip", &["addr", "show", "cni0"])
            .contains("10.1.17.1/24")
    );

    // subnet.env changes between ADD and DEL: DEL works from the saved config.
    write_subnet_env(
        &node,
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.99.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
    );
    c.del(&node, &att, Some(&r)).unwrap();
    drop(ns);
    assert_clean(&node, "after DEL with a changed subnet.env");
    // The next ADD explains the stale bridge address and how to fix it.
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let msg = c.add(&node, &att).unwrap_err().outcome.err(107);
    assert!(
        msg.contains("already has an IP address different from 10.1.99.1/24"),
        "{msg}"
    );
    c.del(&node, &att, None).unwrap();
    drop(ns);
    write_subnet_env(&node, &testdata("subnet.env"));

    // A delegate missing from CNI_PATH: a clear error and nothing saved.
    let (id, ns) = node.container();
    let lonely = node.dir().join("lonely-bin");
    fs::create_dir_all(&lonely).unwrap();
    std::os::unix::fs::symlink(node.plugin_dir().join("flannel"), lonely.join("flannel")).unwrap();
    let out = node
        .plugin("flannel")
        .command("ADD")
        .container(&id, &ns.path_str())
        .env("CNI_PATH", &lonely.display().to_string())
        .config(&c.request_config(0, None))
        .run();
    assert!(
        out.err(102).starts_with("failed to find plugin \"bridge\""),
        "{out:?}"
    );
    assert!(names_in(&node, "flannel").is_empty());
    drop(ns);

    // Garbage in the lease directory: ADD and DEL work around it, and it stays.
    let dir = node.dir().join("ipam/cbr0");
    fs::write(dir.join("not-an-ip"), "x").unwrap();
    fs::write(dir.join("10.1.17.77"), [0xff, 0xfe, 0x00]).unwrap();
    fs::write(dir.join("10.1.17.78"), "").unwrap();
    fs::create_dir_all(dir.join("a-directory")).unwrap();
    let (id, ns) = node.container();
    let att = Attachment::new(&id, &ns.path_str(), "eth0");
    let r = c.add(&node, &att).unwrap();
    c.del(&node, &att, Some(&r)).unwrap();
    assert!(dir.join("not-an-ip").exists() && dir.join("a-directory").exists());
    assert!(
        dir.join("10.1.17.77").exists(),
        "an unreadable lease of someone else was removed"
    );
    drop(ns);
}
