//! cni-nft writes nf_tables netlink messages itself: here every kind of match and action
//! it knows goes to the kernel both ways, through cni-nft and as text through `nft -f`, and
//! the kernel must hold the same bytecode for both.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::Stdio;

use cni_nft::{Action, BaseChain, Batch, Dir, Family, Hook, L4, Match, Op, Rule, Tag};
use conformance::Node;
use conformance::netns::TestNetns;
use node_kernel::Netns;

const TABLE: &str = "cni_rs_probe";

fn net(s: &str) -> ipnetwork::IpNetwork {
    s.parse().unwrap()
}

fn addr(dir: Dir, op: Op, s: &str) -> Match {
    Match::Addr {
        dir,
        op,
        net: net(s),
    }
}

fn chain(family: Family, name: &str, hook: Hook) -> BaseChain {
    BaseChain {
        family,
        table: TABLE,
        name: name.to_owned(),
        hook,
    }
}

/// Every match and action of the vocabulary, in the chains they are valid in.
fn every_rule() -> Batch {
    let tag = Tag {
        network: "cbr0",
        container_id: "ctr1",
        ifname: "eth0",
    };
    let comment = tag.comment();
    let mut batch = Batch::new();
    let dnat = vec![
        Rule::new(
            vec![
                Match::Family { v4: true },
                Match::LocalDestination,
                Match::Dport {
                    proto: L4::Tcp,
                    port: 8080,
                },
            ],
            Action::Dnat {
                to: "10.1.17.5".parse().unwrap(),
                port: 80,
            },
        ),
        Rule::new(
            vec![
                Match::Family { v4: false },
                addr(Dir::Source, Op::Neq, "fd00::/12"),
                addr(Dir::Destination, Op::Eq, "fd00::1/128"),
                Match::Dport {
                    proto: L4::Udp,
                    port: 53,
                },
            ],
            Action::Dnat {
                to: "fd00::5".parse().unwrap(),
                port: 5353,
            },
        ),
        Rule::new(
            vec![
                Match::Family { v4: true },
                Match::Ifname {
                    dir: Dir::Source,
                    op: Op::Neq,
                    name: "eth0".into(),
                },
                Match::Mark {
                    op: Op::Eq,
                    value: 0x4000,
                },
                addr(Dir::Source, Op::Eq, "10.0.0.0/8"),
                Match::Dport {
                    proto: L4::Sctp,
                    port: 9,
                },
            ],
            Action::Dnat {
                to: "10.1.17.6".parse().unwrap(),
                port: 9,
            },
        ),
    ];
    chain(Family::Inet, "pre", Hook::NAT_PREROUTING).replace(&mut batch, &comment, dnat.clone());
    chain(Family::Inet, "out", Hook::NAT_OUTPUT).replace(&mut batch, &comment, dnat);
    let masq = vec![
        Rule::new(
            vec![
                Match::Family { v4: true },
                Match::Dnated,
                addr(Dir::Source, Op::Eq, "10.1.17.0/24"),
                addr(Dir::Destination, Op::Eq, "10.1.17.5/32"),
            ],
            Action::Masquerade,
        ),
        // Without an explicit family match: the dependency nft adds is ours to add too.
        Rule::new(
            vec![
                addr(Dir::Source, Op::Eq, "10.1.17.5/32"),
                addr(Dir::Destination, Op::Neq, "10.1.16.0/23"),
                addr(Dir::Destination, Op::Neq, "224.0.0.0/4"),
                Match::Ifname {
                    dir: Dir::Destination,
                    op: Op::Eq,
                    name: "cni0".into(),
                },
            ],
            Action::Masquerade,
        ),
        Rule::new(
            vec![
                addr(Dir::Source, Op::Eq, "fd00::5/128"),
                addr(Dir::Destination, Op::Neq, "ff00::/8"),
            ],
            Action::Masquerade,
        ),
    ];
    chain(Family::Inet, "post", Hook::NAT_POSTROUTING).replace(&mut batch, &comment, masq);
    let spoof = vec![Rule::new(
        vec![
            Match::Ifname {
                dir: Dir::Source,
                op: Op::Eq,
                name: "veth0123abcd".into(),
            },
            Match::EtherSource {
                op: Op::Neq,
                mac: [2, 0, 0, 0, 0, 0xab],
            },
        ],
        Action::Drop,
    )];
    chain(Family::Bridge, "spoof", Hook::BRIDGE_PREROUTING).replace(&mut batch, &comment, spoof);
    // flanneld's vocabulary: `ip`/`ip6` tables (no family check), the kube-proxy mark bit,
    // return, accept, masquerade fully-random, a forward filter chain.
    let flannel = |v4: bool| {
        let (network, pod, multicast) = if v4 {
            ("10.5.0.0/16", "10.5.7.0/24", "224.0.0.0/4")
        } else {
            ("fc00:5::/48", "fc00:5:0:7::/64", "ff00::/8")
        };
        vec![
            Rule::new(vec![Match::MarkBits { bits: 0x4000 }], Action::Return),
            Rule::new(
                vec![
                    addr(Dir::Source, Op::Eq, pod),
                    addr(Dir::Destination, Op::Eq, network),
                ],
                Action::Return,
            ),
            Rule::new(
                vec![
                    addr(Dir::Source, Op::Neq, network),
                    addr(Dir::Destination, Op::Eq, pod),
                ],
                Action::Return,
            ),
            Rule::new(
                vec![
                    addr(Dir::Source, Op::Eq, network),
                    addr(Dir::Destination, Op::Neq, multicast),
                ],
                Action::MasqueradeFullyRandom,
            ),
            Rule::new(
                vec![
                    addr(Dir::Source, Op::Neq, network),
                    addr(Dir::Destination, Op::Eq, network),
                ],
                Action::Masquerade,
            ),
        ]
    };
    for (family, v4) in [(Family::Ip, true), (Family::Ip6, false)] {
        chain(family, "postrtg", Hook::NAT_POSTROUTING).replace(
            &mut batch,
            "flanneld masq",
            flannel(v4),
        );
        let network = if v4 { "10.5.0.0/16" } else { "fc00:5::/48" };
        chain(family, "forward", Hook::FILTER_FORWARD).replace(
            &mut batch,
            "flanneld forward",
            vec![
                Rule::new(vec![addr(Dir::Source, Op::Eq, network)], Action::Accept),
                Rule::new(
                    vec![addr(Dir::Destination, Op::Eq, network)],
                    Action::Accept,
                ),
            ],
        );
    }
    batch
}

fn nft_f(ns: &TestNetns, script: &str) {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f refused:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bytecode(ns: &TestNetns) -> String {
    ns.sh("nft", &["--debug=netlink", "list", "ruleset"])
}

fn in_ns<T>(ns: &TestNetns, f: impl FnOnce() -> T) -> T {
    Netns::open(ns.path()).unwrap().run(f).unwrap()
}

#[test]
fn rules_written_over_netlink_are_the_rules_nft_writes_for_the_same_text() {
    let node = Node::new();
    let (_, ours) = node.container();
    let (_, theirs) = node.container();
    let batch = every_rule();

    in_ns(&ours, || cni_nft::apply(&batch, "probe")).unwrap();
    nft_f(&theirs, &batch.to_string());
    let written = bytecode(&ours);
    assert!(
        written.contains("[ nat dnat ip6 addr_min reg 1 "),
        "{written}"
    );
    assert_eq!(written, bytecode(&theirs));

    // Listing reads back chains, comments and the values compared with.
    let listed = in_ns(&ours, || cni_nft::list(Family::Inet, TABLE)).unwrap();
    assert_eq!(listed.len(), 9);
    assert!(
        listed
            .iter()
            .all(|r| cni_nft::parse_comment(&r.comment) == Some(("cbr0", "ctr1", "eth0")))
    );
    let pod = [10, 1, 17, 5].to_vec();
    assert!(
        listed
            .iter()
            .any(|r| r.chain == "post" && r.values.contains(&pod))
    );
    let bridge = in_ns(&ours, || cni_nft::list(Family::Bridge, TABLE)).unwrap();
    assert_eq!(bridge.len(), 1);
    assert_eq!(bridge[0].chain, "spoof");
    let ip = in_ns(&ours, || cni_nft::list(Family::Ip, TABLE)).unwrap();
    assert_eq!(ip.len(), 7);
    assert!(ip.iter().all(|r| r.comment.starts_with("flanneld ")));
    assert!(
        written.contains("[ masq flags 0x10 ]") && written.contains("[ immediate reg 0 return ]"),
        "{written}"
    );

    // Writing the same transaction again replaces, never duplicates (as with nft; the
    // listing shows rule handles, so both sides write twice).
    in_ns(&ours, || cni_nft::apply(&batch, "probe")).unwrap();
    nft_f(&theirs, &batch.to_string());
    assert_eq!(bytecode(&ours), bytecode(&theirs));
    assert_eq!(
        in_ns(&ours, || cni_nft::list(Family::Inet, TABLE))
            .unwrap()
            .len(),
        9
    );
}

#[test]
fn removal_works_whether_or_not_the_chains_exist_and_absent_tables_list_empty() {
    let node = Node::new();
    let (_, ns) = node.container();
    let pre = chain(Family::Inet, "pre", Hook::NAT_PREROUTING);
    let spoof = chain(Family::Bridge, "spoof", Hook::BRIDGE_PREROUTING);
    assert!(
        in_ns(&ns, || cni_nft::list(Family::Inet, TABLE))
            .unwrap()
            .is_empty()
    );

    let mut remove = Batch::new();
    pre.remove(&mut remove);
    spoof.remove(&mut remove);
    in_ns(&ns, || cni_nft::apply_teardown(&remove, "probe")).unwrap();
    in_ns(&ns, || cni_nft::apply(&every_rule(), "probe")).unwrap();
    in_ns(&ns, || cni_nft::apply_teardown(&remove, "probe")).unwrap();
    in_ns(&ns, || cni_nft::apply_teardown(&remove, "probe")).unwrap();
    let left = ns.sh("nft", &["list", "ruleset"]);
    assert!(
        !left.contains("chain pre") && !left.contains("chain spoof"),
        "{left}"
    );
    assert!(
        left.contains("chain out"),
        "only what was named goes: {left}"
    );
}

#[test]
fn a_refused_transaction_changes_nothing_and_names_the_command() {
    let node = Node::new();
    let (_, ns) = node.container();
    let mut batch = every_rule();
    // A masquerade in a prerouting chain is refused by the kernel.
    chain(Family::Inet, "bad", Hook::NAT_PREROUTING).replace(
        &mut batch,
        "c",
        vec![Rule::new(vec![], Action::Masquerade)],
    );
    let err = in_ns(&ns, || cni_nft::apply(&batch, "probe")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("probe: add rule inet cni_rs_probe bad masquerade"),
        "{err}"
    );
    assert_eq!(ns.sh("nft", &["list", "ruleset"]), "", "all or nothing");
}
