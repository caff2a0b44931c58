//! portmap's logic against an in-memory firewall and kernel: no root, no namespaces.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::Path;

use cni_common::env::Environment;
use cni_common::{CniError, Command, Invocation, NetConf};
use cni_nft::{FakeFirewall, Teardown};

use super::*;
use crate::host::Host;

/// The kernel knobs, recorded.
#[derive(Debug, Default)]
struct FakeHost {
    localnet: RefCell<Vec<IpAddr>>,
    flushed: RefCell<Vec<Vec<u16>>>,
    localnet_fails: bool,
}

impl Host for FakeHost {
    fn enable_route_localnet(&self, container: IpAddr) -> Result<(), PortmapError> {
        if self.localnet_fails {
            return Err(node_kernel::NetnsError::Sysctl {
                key: "net/ipv4/conf/veth0/route_localnet".into(),
                source: std::io::Error::from_raw_os_error(nix::libc::EROFS),
            }
            .into());
        }
        self.localnet.borrow_mut().push(container);
        Ok(())
    }

    fn flush_udp_conntrack(&self, ports: &[u16]) -> std::io::Result<usize> {
        self.flushed.borrow_mut().push(ports.to_vec());
        Ok(0)
    }
}

const PREV: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},
    {"name":"eth0","sandbox":"/run/netns/p"}],
    "ips":[{"address":"10.1.0.5/24","interface":2},{"address":"fd00::5/64","interface":2}]}"#;

fn inv(command: Command, dir: &Path, extra: &str, id: &str) -> Invocation {
    let json = format!(
        r#"{{"cniVersion":"1.0.0","name":"net","type":"portmap","stateDir":"{}"{extra}}}"#,
        dir.display()
    );
    Invocation {
        env: Environment {
            command,
            container_id: id.into(),
            netns: Some("/run/netns/p".into()),
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
            netns_override: false,
        },
        config: NetConf::parse_with(json.as_bytes(), cni_common::config::Strictness::ForDel)
            .unwrap(),
    }
}

fn with_mappings(mappings: &str, prev: bool) -> String {
    let prev = if prev {
        format!(r#","prevResult":{PREV}"#)
    } else {
        String::new()
    };
    format!(r#","runtimeConfig":{{"portMappings":{mappings}}}{prev}"#)
}

const HTTP: &str = r#"[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]"#;
const DNS: &str = r#"[{"HostPort":5353,"ContainerPort":53,"Protocol":"udp"}]"#;

fn setup() -> (tempfile::TempDir, FakeFirewall, FakeHost) {
    (
        tempfile::tempdir().unwrap(),
        FakeFirewall::new(),
        FakeHost::default(),
    )
}

fn markers(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn add_without_mappings_touches_nothing() {
    let (dir, fw, host) = setup();
    let i = inv(
        Command::Add,
        dir.path(),
        &format!(r#","prevResult":{PREV}"#),
        "c1",
    );
    let out = add(&i, &fw, &host).unwrap();
    assert_eq!(out.ips.len(), 2, "prevResult passes through");
    assert!(fw.applied().is_empty());
    assert!(host.flushed.borrow().is_empty() && host.localnet.borrow().is_empty());
    assert_eq!(markers(dir.path()), 0);
}

#[test]
fn add_needs_a_prev_result() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, false), "c1");
    let e = CniError::from(add(&i, &fw, &host).unwrap_err());
    assert_eq!(e.code(), 7);
    assert_eq!(e.to_string(), "must be called as chained plugin");
}

#[test]
fn add_writes_the_marker_then_three_chains_in_one_transaction() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    add(&i, &fw, &host).unwrap();
    assert_eq!(fw.applied().len(), 1, "one transaction");
    let conf = PortmapConf::load(&i.config).unwrap();
    let t = tag(&conf, &i);
    let [pre, out, masq] = rules::chains(&t);
    // One DNAT rule per family in each of prerouting and output.
    assert_eq!(fw.rules_in(&pre.name), 2);
    assert_eq!(fw.rules_in(&out.name), 2);
    assert!(fw.rules_in(&masq.name) > 0);
    assert_eq!(markers(dir.path()), 1);
    let listed = fw.list(cni_nft::Family::Inet, rules::TABLE).unwrap();
    assert!(listed.iter().all(|r| r.comment == t.comment()));
}

#[test]
fn add_sets_route_localnet_for_the_ipv4_address_only_with_snat() {
    let (dir, fw, host) = setup();
    add(
        &inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1"),
        &fw,
        &host,
    )
    .unwrap();
    assert_eq!(
        *host.localnet.borrow(),
        ["10.1.0.5".parse::<IpAddr>().unwrap()]
    );
    let (dir, fw, host) = setup();
    let no_snat = format!(r#","snat":false{}"#, with_mappings(HTTP, true));
    add(&inv(Command::Add, dir.path(), &no_snat, "c1"), &fw, &host).unwrap();
    assert!(host.localnet.borrow().is_empty());
}

#[test]
fn a_sysctl_failure_is_a_kernel_error_not_a_config_error() {
    let (dir, fw, _) = setup();
    let host = FakeHost {
        localnet_fails: true,
        ..FakeHost::default()
    };
    let e = add(
        &inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1"),
        &fw,
        &host,
    )
    .unwrap_err();
    let code = CniError::from(e).code();
    assert_eq!(code, 100, "sysctls are namespace state, not config");
}

#[test]
fn udp_mappings_flush_conntrack_of_their_ports_on_add_and_del() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(DNS, true), "c1");
    add(&i, &fw, &host).unwrap();
    del(&i, &fw, &host).unwrap();
    assert_eq!(*host.flushed.borrow(), [vec![5353], vec![5353]]);
}

#[test]
fn add_for_another_interface_maps_nothing() {
    let (dir, fw, host) = setup();
    let mut i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    i.env.ifname = "net1".into();
    add(&i, &fw, &host).unwrap();
    assert!(fw.applied().is_empty());
}

#[test]
fn a_failed_transaction_leaves_the_marker_for_del() {
    let (dir, fw, host) = setup();
    fw.fail_next("EPERM");
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    let e = CniError::from(add(&i, &fw, &host).unwrap_err());
    assert_eq!(e.code(), 105);
    assert_eq!(markers(dir.path()), 1, "DEL must still find the attachment");
    // The runtime's DEL without mappings finds it by the marker.
    let d = inv(Command::Del, dir.path(), "", "c1");
    del(&d, &fw, &host).unwrap();
    assert_eq!(markers(dir.path()), 0);
    assert_eq!(fw.applied().len(), 1, "the teardown ran");
}

#[test]
fn del_removes_chains_and_marker_and_twice_is_fine() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    add(&i, &fw, &host).unwrap();
    let d = inv(Command::Del, dir.path(), "", "c1");
    del(&d, &fw, &host).unwrap();
    assert!(fw.chains().is_empty());
    assert_eq!(markers(dir.path()), 0);
    let before = fw.applied().len();
    del(&d, &fw, &host).unwrap();
    assert_eq!(
        fw.applied().len(),
        before,
        "no marker, no mappings: no transaction"
    );
}

#[test]
fn del_with_mappings_but_no_marker_still_tears_down() {
    let (dir, fw, host) = setup();
    let d = inv(Command::Del, dir.path(), &with_mappings(HTTP, false), "c1");
    del(&d, &fw, &host).unwrap();
    assert_eq!(fw.applied().len(), 1);
}

#[test]
fn del_with_an_unreadable_config_removes_by_name() {
    let (dir, fw, host) = setup();
    add(
        &inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1"),
        &fw,
        &host,
    )
    .unwrap();
    let broken = inv(
        Command::Del,
        dir.path(),
        r#","runtimeConfig":{"portMappings":7}"#,
        "c1",
    );
    del(&broken, &fw, &host).unwrap();
    assert!(fw.chains().is_empty());
}

#[test]
fn del_on_a_kernel_without_nftables_succeeds() {
    let (dir, _, host) = setup();
    let fw = FakeFirewall::without_nftables();
    let d = inv(Command::Del, dir.path(), &with_mappings(HTTP, false), "c1");
    del(&d, &fw, &host).unwrap();
    assert!(matches!(
        fw.teardown(&rules::del_batch(&tag(
            &PortmapConf::load(&d.config).unwrap(),
            &d
        ))),
        Ok(Teardown::NoNftables(_))
    ));
}

#[test]
fn check_passes_as_added_and_fails_when_rules_are_missing() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    add(&i, &fw, &host).unwrap();
    let c = inv(Command::Check, dir.path(), &with_mappings(HTTP, true), "c1");
    check(&c, &fw).unwrap();
    // Another container's CHECK finds none of its rules.
    let other = inv(Command::Check, dir.path(), &with_mappings(HTTP, true), "c2");
    let e = CniError::from(check(&other, &fw).unwrap_err());
    assert_eq!(e.code(), 103);
    assert!(e.to_string().contains("missing from chain"), "{e}");
    // No mappings: nothing to check; no prevResult: an error.
    check(
        &inv(
            Command::Check,
            dir.path(),
            &format!(r#","prevResult":{PREV}"#),
            "c2",
        ),
        &fw,
    )
    .unwrap();
    assert!(check(&inv(Command::Check, dir.path(), "", "c2"), &fw).is_err());
}

#[test]
fn check_notices_a_missing_masquerade_chain() {
    let (dir, fw, host) = setup();
    let i = inv(Command::Add, dir.path(), &with_mappings(HTTP, true), "c1");
    add(&i, &fw, &host).unwrap();
    let conf = PortmapConf::load(&i.config).unwrap();
    let t = tag(&conf, &i);
    let [_, _, masq] = rules::chains(&t);
    let mut batch = cni_nft::Batch::new();
    masq.remove(&mut batch);
    fw.apply(&batch, "drop masq").unwrap();
    let e = check(
        &inv(Command::Check, dir.path(), &with_mappings(HTTP, true), "c1"),
        &fw,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("masquerade rules"), "{e}");
}

#[test]
fn gc_removes_stale_attachments_of_this_network_only() {
    let (dir, fw, host) = setup();
    for id in ["keep", "stale"] {
        add(
            &inv(Command::Add, dir.path(), &with_mappings(HTTP, true), id),
            &fw,
            &host,
        )
        .unwrap();
    }
    let other_net = inv(
        Command::Add,
        dir.path(),
        &with_mappings(HTTP, true),
        "elsewhere",
    );
    let mut other_net = other_net;
    other_net.config = NetConf::parse(
        format!(
            r#"{{"cniVersion":"1.0.0","name":"other","type":"portmap","stateDir":"{}"{}}}"#,
            dir.path().display(),
            with_mappings(HTTP, true)
        )
        .as_bytes(),
    )
    .unwrap();
    add(&other_net, &fw, &host).unwrap();
    let g = inv(
        Command::Gc,
        dir.path(),
        r#","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]"#,
        "",
    );
    gc(&g, &fw).unwrap();
    let chain_of = |id: &str, net: &str| {
        Tag {
            network: net,
            container_id: id,
            ifname: "eth0",
        }
        .chain("pre")
    };
    let chains = fw.chains();
    assert!(chains.contains(&chain_of("keep", "net")));
    assert!(!chains.contains(&chain_of("stale", "net")));
    assert!(chains.contains(&chain_of("elsewhere", "other")));
    assert_eq!(
        markers(dir.path()),
        2,
        "the stale marker went with its chains"
    );
}
