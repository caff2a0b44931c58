//! Unit tests of ADD (with its rollback at every failure point), DEL, CHECK, GC and STATUS
//! on the in-memory fakes: no root, no kernel, no binaries.

use std::path::PathBuf;

use cni_common::env::{Command, Environment};
use cni_common::error::code;
use cni_common::version::Version;
use cni_common::{CniError, CniResult, Invocation, NetConf};
use cni_nft::{FakeFirewall, Firewall, Tag};
use nix::libc::{EEXIST, EPERM};

use crate::error::BridgeError;
use crate::fake::{FakeIpam, FakeNode, HOST, NETNS};
use crate::firewall;
use crate::node::{Deps, LinkKind};
use crate::{add, check, status, teardown};

/// Dual stack, bridge as gateway, masquerade and spoof check.
const FULL: &str =
    r#","ipam":{"type":"host-local"},"isDefaultGateway":true,"ipMasq":true,"macspoofchk":true"#;
/// What the IPAM plugin gives.
const LEASE: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24"},{"address":"fd01::5/64"}],"routes":[{"dst":"10.9.0.0/16"}]}"#;

fn inv_for(command: Command, id: &str, extra: &str) -> Invocation {
    let json = format!(r#"{{"cniVersion":"1.1.0","name":"net1","type":"bridge"{extra}}}"#);
    Invocation {
        env: Environment {
            command,
            container_id: id.into(),
            netns: Some(PathBuf::from(NETNS)),
            ifname: "eth0".into(),
            args: String::new(),
            path: vec![PathBuf::from("/opt/cni/bin")],
            netns_override: false,
        },
        config: NetConf::parse(json.as_bytes()).unwrap(),
    }
}

fn inv(command: Command, extra: &str) -> Invocation {
    inv_for(command, "ctr1", extra)
}

fn tag(id: &str) -> Tag<'_> {
    Tag {
        network: "net1",
        container_id: id,
        ifname: "eth0",
    }
}

struct Rig {
    node: FakeNode,
    fw: FakeFirewall,
    ipam: FakeIpam,
}

impl Rig {
    fn new() -> Rig {
        let node = FakeNode::new();
        let ipam = FakeIpam::new(&node, LEASE);
        Rig {
            node,
            fw: FakeFirewall::new(),
            ipam,
        }
    }

    fn deps(&self) -> Deps<'_, FakeNode, FakeIpam> {
        Deps {
            node: &self.node,
            firewall: &self.fw,
            ipam: &self.ipam,
        }
    }

    fn add(&self, extra: &str) -> Result<CniResult, BridgeError> {
        add::add(&self.deps(), &inv(Command::Add, extra))
    }

    fn del(&self, extra: &str) -> Result<(), BridgeError> {
        teardown::del(&self.deps(), &inv(Command::Del, extra))
    }

    fn check(&self, extra: &str, prev: &CniResult) -> Result<(), BridgeError> {
        let prev = prev.encode(Version::V1_0_0).unwrap();
        check::check(
            &self.deps(),
            &inv(Command::Check, &format!(r#"{extra},"prevResult":{prev}"#)),
        )
    }

    fn logged(&self, prefix: &str) -> bool {
        self.node.at(prefix).is_some()
    }

    /// What a failed ADD must leave: the bridge (and its gateway addresses) only, no
    /// container interface, no host veth, no firewall chains; IPAM released iff it was
    /// asked.
    fn assert_rolled_back(&self, ipam_asked: bool) {
        assert!(
            self.node.container().links.is_empty(),
            "{:?}",
            self.node.log()
        );
        let host = self.node.host();
        assert!(
            host.links.iter().all(|l| l.link.kind == LinkKind::Bridge),
            "{host:?}"
        );
        assert!(self.fw.chains().is_empty(), "{:?}", self.fw.chains());
        assert_eq!(self.logged("ipam DEL"), ipam_asked, "{:?}", self.node.log());
    }
}

fn cni(e: BridgeError) -> CniError {
    CniError::from(e)
}

// ---- ADD ----

#[test]
fn add_runs_its_steps_in_order() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    let at = |p: &str| {
        rig.node
            .at(p)
            .unwrap_or_else(|| panic!("{p} not in {:?}", rig.node.log()))
    };
    let order = [
        at("host add_bridge cni0"),
        at("host write net/ipv6/conf/cni0/accept_ra=0"),
        at("host set_up cni0"),
        at("ctr add_veth eth0 veth"),
        at("host attach_port veth"),
        at("ipam ADD"),
        at("ctr write net/ipv6/conf/eth0/disable_ipv6=0"),
        at("ctr add_address eth0 10.1.0.5/24"),
        at("ctr set_up eth0"),
        at("ctr add_route 10.9.0.0/16"),
        at("host add_address cni0 10.1.0.1/24"),
        at("host set_mac cni0"),
        at("host write net/ipv4/ip_forward=1"),
        at("host write net/ipv6/conf/all/forwarding=1"),
    ];
    assert!(order.is_sorted(), "{order:?} in {:#?}", rig.node.log());
    let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names[0], "cni0");
    assert!(names[1].starts_with("veth") && names[1].len() == 12);
    assert_eq!(
        (names[2], r.interfaces[2].sandbox.as_str()),
        ("eth0", NETNS)
    );
    let ips: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
    assert_eq!(ips, ["10.1.0.5/24", "fd01::5/64"]);
    // Both default routes and the IPAM route are in the container.
    assert_eq!(rig.node.container().routes.len(), 3);
    assert_eq!(rig.fw.rules_in(&firewall::masq_chain(&tag("ctr1")).name), 3);
    assert_eq!(r.interfaces[0].mac, "0a:58:00:00:00:0a");
}

#[test]
fn a_missing_ipam_binary_is_found_before_anything_is_created() {
    let mut rig = Rig::new();
    rig.ipam.missing = true;
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::DELEGATE);
    assert!(rig.node.log().is_empty(), "{:?}", rig.node.log());
    assert!(rig.node.host().links.is_empty());
}

#[test]
fn an_existing_bridge_is_reused() {
    let rig = Rig::new();
    let index = rig.node.put_link(HOST, "cni0", LinkKind::Bridge);
    rig.add(FULL).unwrap();
    assert!(!rig.logged("host add_bridge"));
    let host = rig.node.host();
    let veth = host.links.iter().find(|l| l.link.kind == LinkKind::Veth);
    assert_eq!(veth.unwrap().link.controller, Some(index));
}

#[test]
fn a_link_of_the_bridge_name_that_is_no_bridge_is_a_conflict() {
    let rig = Rig::new();
    rig.node.put_link(HOST, "cni0", LinkKind::Veth);
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::CONFLICT);
    assert_eq!(e.to_string(), "\"cni0\" already exists but is not a bridge");
    assert!(rig.node.log().is_empty(), "{:?}", rig.node.log());
}

#[test]
fn a_bridge_the_kernel_refuses_keeps_errno_and_name() {
    let rig = Rig::new();
    rig.node.fail("add_bridge", EPERM);
    let e = rig.add(FULL).unwrap_err();
    assert!(
        matches!(&e, BridgeError::Netlink(k) if k.errno() == Some(EPERM)),
        "{e:?}"
    );
    let e = cni(e);
    assert_eq!(e.code(), code::NETLINK);
    assert!(
        e.to_string()
            .starts_with("failed to create bridge \"cni0\": ")
    );
}

#[test]
fn the_host_veth_name_is_retried_when_taken() {
    let rig = Rig::new();
    rig.node.fail("add_veth", EEXIST);
    rig.node.fail("add_veth", EEXIST);
    rig.add(FULL).unwrap();
    assert_eq!(rig.node.container().links.len(), 1);
}

#[test]
fn the_veth_error_keeps_its_errno_after_the_last_try() {
    let rig = Rig::new();
    for _ in 0..10 {
        rig.node.fail("add_veth", EEXIST);
    }
    let e = rig.add(FULL).unwrap_err();
    match &e {
        BridgeError::Veth { ifname, source, .. } => {
            assert_eq!(ifname, "eth0");
            assert_eq!(source.raw_os_error(), Some(EEXIST));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("failed to create veth pair eth0/veth")
    );
    rig.assert_rolled_back(false);
}

#[test]
fn an_existing_container_interface_is_a_conflict() {
    let rig = Rig::new();
    rig.node.put_link(HOST + 1, "eth0", LinkKind::Veth);
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::CONFLICT);
    assert!(
        e.to_string()
            .starts_with("interface \"eth0\" already exists")
    );
    assert!(!rig.logged("ctr add_veth"));
}

#[test]
fn the_port_gets_hairpin_isolation_and_vlans() {
    let rig = Rig::new();
    rig.add(r#","hairpinMode":true,"portIsolation":true,"vlan":100,"vlanTrunk":[{"id":200}]"#)
        .unwrap();
    let host = rig.node.host();
    let port = host
        .links
        .iter()
        .find(|l| l.link.kind == LinkKind::Veth)
        .unwrap();
    assert!(port.hairpin && port.isolated && port.link.up);
    assert_eq!(port.vlans, [100, 200]);
    assert_eq!(
        port.link.controller,
        host.named("cni0").map(|b| b.link.index)
    );
}

#[test]
fn a_different_gateway_address_on_the_bridge_is_a_conflict() {
    let rig = Rig::new();
    let br = rig.node.put_link(HOST, "cni0", LinkKind::Bridge);
    rig.node.put_address(HOST, br, "10.7.0.1/24");
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::CONFLICT);
    assert!(
        e.to_string().starts_with(
            "failed to set bridge addr: \"cni0\" already has an IP address different from 10.1.0.1/24"
        ),
        "{e}"
    );
    assert!(e.to_string().contains("ip addr del 10.7.0.1/24 dev cni0"));
    rig.assert_rolled_back(true);
    assert_eq!(rig.node.host().addrs.len(), 1, "the old address stays");
}

#[test]
fn force_address_replaces_the_old_gateway() {
    let rig = Rig::new();
    let br = rig.node.put_link(HOST, "cni0", LinkKind::Bridge);
    rig.node.put_address(HOST, br, "10.7.0.1/24");
    rig.add(&format!(r#"{FULL},"forceAddress":true"#)).unwrap();
    let addrs: Vec<String> = rig
        .node
        .host()
        .addrs
        .iter()
        .map(|a| a.net.to_string())
        .collect();
    assert_eq!(addrs, ["10.1.0.1/24", "fd01::1/64"]);
}

#[test]
fn firewall_rules_only_when_asked_for() {
    let rig = Rig::new();
    rig.add(r#","ipam":{"type":"host-local"},"macspoofchk":true"#)
        .unwrap();
    let chain = firewall::spoof_chain(&tag("ctr1")).name;
    assert_eq!(rig.fw.chains(), std::slice::from_ref(&chain));
    assert_eq!(rig.fw.rules_in(&chain), 1);
    let plain = Rig::new();
    plain.add(r#","ipam":{"type":"host-local"}"#).unwrap();
    assert!(plain.fw.applied().is_empty());
}

#[test]
fn l2_only_sets_the_container_link_up_and_asks_no_ipam() {
    let rig = Rig::new();
    let r = rig.add(r#","ipMasq":true"#).unwrap();
    assert!(r.ips.is_empty());
    assert!(rig.node.container().links[0].link.up);
    assert!(!rig.logged("ipam"));
    assert!(rig.fw.applied().is_empty(), "nothing to masquerade");
}

#[test]
fn add_waits_until_the_port_forwards() {
    let rig = Rig::new();
    rig.node.forward_after(Some(5));
    rig.add(FULL).unwrap();
}

#[test]
fn a_port_that_never_forwards_fails_and_rolls_back() {
    let rig = Rig::new();
    rig.node.forward_after(None);
    let e = rig.add(FULL).unwrap_err();
    assert!(
        matches!(&e, BridgeError::PortNotForwarding { state, .. } if state.is_some()),
        "{e:?}"
    );
    assert_eq!(cni(e).code(), code::NETLINK);
    rig.assert_rolled_back(true);
}

#[test]
fn failed_duplicate_address_detection_rolls_back() {
    let rig = Rig::new();
    rig.node.dad_fails();
    let e = cni(rig.add(&format!(r#"{FULL},"enabledad":true"#)).unwrap_err());
    assert_eq!(e.code(), code::CONFLICT);
    rig.assert_rolled_back(true);
}

#[test]
fn optional_sysctls_do_not_fail_add_but_required_ones_do() {
    let rig = Rig::new();
    rig.node.fail("write net/ipv6/conf/cni0/accept_ra", EPERM);
    rig.node.fail("write net/ipv4/conf/eth0/arp_notify", EPERM);
    rig.add(FULL).unwrap();
    let rig = Rig::new();
    rig.node
        .fail("write net/ipv6/conf/eth0/keep_addr_on_down", EPERM);
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::NAMESPACE);
    assert!(e.to_string().contains("keep_addr_on_down"), "{e}");
    rig.assert_rolled_back(true);
}

// ---- ADD rollback at every failure point ----

/// Fails `step` once and checks what was undone.
fn rolls_back(step: &str, ipam_asked: bool) {
    let rig = Rig::new();
    rig.node.fail(step, EPERM);
    let e = rig.add(&format!(r#"{FULL},"vlan":0,"vlanTrunk":[{{"id":7}}]"#));
    assert!(e.is_err(), "{step}");
    rig.assert_rolled_back(ipam_asked);
    assert_eq!(
        rig.logged("ctr del_link"),
        rig.logged("ctr add_veth"),
        "{step}: the veth goes iff it was made: {:?}",
        rig.node.log()
    );
}

#[test]
fn rollback_when_attaching_the_port_fails() {
    rolls_back("attach_port", false);
}

#[test]
fn rollback_when_the_port_vlans_fail() {
    rolls_back("set_port_vlans", false);
}

#[test]
fn rollback_when_the_container_sysctls_cannot_be_entered() {
    rolls_back("enter", true);
}

#[test]
fn rollback_when_a_container_address_fails() {
    rolls_back("add_address", true);
}

#[test]
fn rollback_when_a_container_route_fails() {
    rolls_back("add_route", true);
}

#[test]
fn rollback_when_pinning_the_bridge_mac_fails() {
    rolls_back("set_mac", true);
}

#[test]
fn rollback_when_forwarding_cannot_be_enabled() {
    rolls_back("write net/ipv4/ip_forward", true);
}

#[test]
fn rollback_when_the_host_veth_cannot_be_read() {
    // The lookups: bridge, bridge again after creating it, container ifname, container veth,
    // host veth: the fifth fails.
    let rig = Rig::new();
    rig.node.fail_nth("by_name", 5, EPERM);
    let e = rig.add(FULL).unwrap_err();
    assert!(e.to_string().starts_with("failed to look up veth"), "{e}");
    rig.assert_rolled_back(false);
    assert!(rig.logged("ctr del_link eth0"));
}

#[test]
fn rollback_when_ipam_add_fails() {
    let rig = Rig::new();
    rig.ipam.fail(Command::Add);
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), 11, "the delegate's code is kept");
    // IPAM ADD failed: nothing to release.
    rig.assert_rolled_back(false);
    assert!(rig.logged("ctr del_link eth0"));
}

#[test]
fn rollback_when_the_firewall_fails() {
    let rig = Rig::new();
    rig.fw.fail_next("EPERM");
    let e = cni(rig.add(FULL).unwrap_err());
    assert_eq!(e.code(), code::FIREWALL);
    rig.assert_rolled_back(true);
    assert_eq!(rig.fw.applied().len(), 1, "the chains' removal ran");
}

#[test]
fn a_failing_rollback_step_does_not_stop_the_others() {
    let rig = Rig::new();
    rig.node.forward_after(None);
    rig.ipam.fail(Command::Del);
    assert!(rig.add(FULL).is_err());
    assert!(rig.logged("ipam DEL") && rig.logged("ctr del_link eth0"));
    assert!(rig.fw.chains().is_empty());
}

// ---- DEL ----

#[test]
fn del_removes_interface_rules_and_lease() {
    let rig = Rig::new();
    rig.add(FULL).unwrap();
    rig.del(FULL).unwrap();
    assert!(rig.node.container().links.is_empty());
    assert!(
        rig.node
            .host()
            .links
            .iter()
            .all(|l| l.link.kind == LinkKind::Bridge)
    );
    assert!(rig.fw.chains().is_empty());
    assert!(rig.logged("ipam DEL"));
    rig.del(FULL).unwrap();
}

#[test]
fn del_with_the_netns_gone_still_removes_rules_and_lease() {
    let rig = Rig::new();
    rig.add(FULL).unwrap();
    rig.node.remove_netns();
    rig.del(FULL).unwrap();
    assert!(rig.fw.chains().is_empty());
    assert!(rig.logged("ipam DEL"));
    let mut inv = inv(Command::Del, FULL);
    inv.env.netns = None;
    teardown::del(&rig.deps(), &inv).unwrap();
}

#[test]
fn del_without_ipam_or_interface() {
    let rig = Rig::new();
    rig.del(r#","ipMasq":true"#).unwrap();
    assert!(!rig.logged("ipam"));
    assert!(!rig.logged("ctr del_link"));
}

#[test]
fn del_without_nftables_succeeds() {
    let node = FakeNode::new();
    let rig = Rig {
        ipam: FakeIpam::new(&node, LEASE),
        node,
        fw: FakeFirewall::without_nftables(),
    };
    rig.del(FULL).unwrap();
    assert!(rig.logged("ipam DEL"));
}

#[test]
fn del_runs_every_step_when_ipam_del_fails() {
    let rig = Rig::new();
    rig.add(FULL).unwrap();
    rig.ipam.fail(Command::Del);
    let e = cni(rig.del(FULL).unwrap_err());
    assert_eq!((e.code(), e.to_string().as_str()), (11, "ipam busy"));
    assert!(rig.node.container().links.is_empty());
    assert!(rig.fw.chains().is_empty());
}

#[test]
fn del_reports_every_failure_with_the_first_code() {
    let rig = Rig::new();
    rig.add(FULL).unwrap();
    rig.node.fail("del_link", EPERM);
    rig.fw.fail_next("EBUSY");
    rig.ipam.fail(Command::Del);
    let e = rig.del(FULL).unwrap_err();
    assert!(
        matches!(&e, BridgeError::Teardown(all) if all.len() == 3),
        "{e:?}"
    );
    let e = cni(e);
    assert_eq!(e.code(), code::NETLINK);
    let msg = e.to_string();
    assert!(msg.starts_with("failed to delete link"), "{msg}");
    assert!(
        msg.contains("failed to remove firewall rules: EBUSY") && msg.ends_with("; ipam busy"),
        "{msg}"
    );
}

// ---- CHECK ----

#[test]
fn check_passes_after_add() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.check(FULL, &r).unwrap();
    assert!(rig.logged("ipam CHECK"));
}

fn check_fails(rig: &Rig, prev: &CniResult, expected: &str) {
    let e = cni(rig.check(FULL, prev).unwrap_err());
    assert_eq!(e.code(), code::CHECK_FAILED, "{e}");
    assert!(e.to_string().starts_with(expected), "{e}");
}

#[test]
fn check_finds_the_interface_missing() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.node.edit(HOST + 1, |ns| ns.links.clear());
    check_fails(
        &rig,
        &r,
        "CNI created interface in container eth0 not found",
    );
}

#[test]
fn check_finds_an_address_missing() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.node.edit(HOST + 1, |ns| {
        ns.addrs.remove(1);
    });
    check_fails(&rig, &r, "address fd01::5/64 is missing");
}

#[test]
fn check_finds_a_route_missing() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.node.edit(HOST + 1, |ns| ns.routes.clear());
    check_fails(&rig, &r, "route 10.9.0.0/16 via - is missing");
}

#[test]
fn check_finds_the_masquerade_rule_missing() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.fw
        .teardown(&firewall::del_batch(&tag("ctr1"), true, false))
        .unwrap();
    check_fails(&rig, &r, "masquerade rule for 10.1.0.5 is missing");
}

#[test]
fn check_finds_the_spoof_rule_missing() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.fw
        .teardown(&firewall::del_batch(&tag("ctr1"), false, true))
        .unwrap();
    check_fails(&rig, &r, "MAC spoof-check rule is missing");
}

#[test]
fn check_finds_the_host_veth_off_the_bridge() {
    let rig = Rig::new();
    let r = rig.add(FULL).unwrap();
    rig.node.edit(HOST, |ns| {
        for l in &mut ns.links {
            l.link.controller = None;
        }
    });
    check_fails(&rig, &r, "CNI veth created for bridge cni0 was not found");
}

#[test]
fn check_of_an_l2_only_network_asks_no_ipam() {
    let rig = Rig::new();
    let r = rig.add("").unwrap();
    rig.check("", &r).unwrap();
    assert!(!rig.logged("ipam"));
    let e = cni(check::check(&rig.deps(), &inv(Command::Check, "")).unwrap_err());
    assert_eq!(e.to_string(), "Required prevResult missing");
}

// ---- GC and STATUS ----

#[test]
fn gc_removes_stale_chains_keeps_valid_ones_and_forwards() {
    let rig = Rig::new();
    for id in ["keep", "stale"] {
        add::add(&rig.deps(), &inv_for(Command::Add, id, FULL)).unwrap();
        // The next attachment is another container's, in a namespace of its own.
        rig.node
            .edit(HOST + 1, |ns| *ns = crate::fake::FakeNs::default());
    }
    assert_eq!(rig.fw.chains().len(), 4);
    let valid = r#","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]"#;
    teardown::gc(
        &rig.deps(),
        &inv_for(Command::Gc, "", &format!("{FULL}{valid}")),
    )
    .unwrap();
    let keep = firewall::masq_chain(&tag("keep")).name;
    assert_eq!(rig.fw.chains(), [keep.clone(), keep]);
    assert!(rig.logged("ipam GC"));
}

#[test]
fn gc_failure_to_list_is_a_firewall_error() {
    let rig = Rig::new();
    rig.fw.fail_next("EPERM");
    let e = cni(teardown::gc(&rig.deps(), &inv_for(Command::Gc, "", FULL)).unwrap_err());
    assert_eq!(e.code(), code::FIREWALL);
    assert!(!rig.logged("ipam GC"));
}

#[test]
fn status_asks_ipam_and_keeps_its_code() {
    let rig = Rig::new();
    status::status(&rig.deps(), &inv(Command::Status, FULL)).unwrap();
    assert!(rig.logged("ipam STATUS"));
    rig.ipam.fail(Command::Status);
    let e = cni(status::status(&rig.deps(), &inv(Command::Status, FULL)).unwrap_err());
    assert_eq!(e.code(), 11);
    let l2 = Rig::new();
    status::status(&l2.deps(), &inv(Command::Status, "")).unwrap();
    assert!(l2.node.log().is_empty());
}
