//! Go flanneld's iptables-mode rules (`pkg/trafficmngr/iptables`), written into a test
//! namespace with Debian's iptables as a node that ran Go flanneld has them: the state a
//! node moved from Go to ours starts with.

use rig::netns::TestNetns;

/// Writes Go's rules for a node whose lease was `pod` in `network` with `tool`
/// (`iptables-nft`, `iptables-legacy`): nat `FLANNEL-POSTRTG` and filter `FLANNEL-FWD`,
/// each jumped to from its built-in chain, every rule with Go's comment; and, beside them,
/// someone else's jump (`nat POSTROUTING -j KUBE-POSTROUTING`) that must stay.
pub fn write(ns: &TestNetns, tool: &str, network: &str, pod: &str) {
    let masq = ["-m", "comment", "--comment", "flanneld masq"];
    let fwd = ["-m", "comment", "--comment", "flanneld forward"];
    let run = |args: &[&str]| {
        ns.sh(tool, args);
    };
    run(&["-t", "nat", "-N", "FLANNEL-POSTRTG"]);
    run(&[
        &["-t", "nat", "-A", "POSTROUTING"][..],
        &masq,
        &["-j", "FLANNEL-POSTRTG"],
    ]
    .concat());
    let postrtg: [&[&str]; 6] = [
        &["-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN"],
        &["-s", pod, "-d", network, "-j", "RETURN"],
        &["-s", network, "-d", pod, "-j", "RETURN"],
        &["!", "-s", network, "-d", pod, "-j", "RETURN"],
        &[
            "-s",
            network,
            "!",
            "-d",
            "224.0.0.0/4",
            "-j",
            "MASQUERADE",
            "--random-fully",
        ],
        &[
            "!",
            "-s",
            network,
            "-d",
            network,
            "-j",
            "MASQUERADE",
            "--random-fully",
        ],
    ];
    for rule in postrtg {
        run(&[&["-t", "nat", "-A", "FLANNEL-POSTRTG"][..], rule, &masq].concat());
    }
    run(&["-t", "filter", "-N", "FLANNEL-FWD"]);
    run(&[
        &["-t", "filter", "-A", "FORWARD"][..],
        &fwd,
        &["-j", "FLANNEL-FWD"],
    ]
    .concat());
    for dir in ["-s", "-d"] {
        run(&[
            &["-t", "filter", "-A", "FLANNEL-FWD", dir, network][..],
            &fwd,
            &["-j", "ACCEPT"],
        ]
        .concat());
    }
    // kubelet may have made the chain already.
    let _ = ns.run(tool, &["-t", "nat", "-N", "KUBE-POSTROUTING"]);
    run(&["-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"]);
}

/// `<tool>-save` of the namespace.
pub fn saved(ns: &TestNetns, tool: &str) -> String {
    ns.sh(&format!("{tool}-save"), &[])
}

/// Whether `tool` is installed.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
