//! The nftables rules of one attachment, in `inet cni_rs_hostport`:
//! - `pre-<hash>` (nat prerouting) and `out-<hash>` (nat output, for the node itself): per
//!   mapping and family, `[conditions] [fib daddr type local | ip daddr hostIP] proto dport
//!   hostPort dnat to container:port`;
//! - `masq-<hash>` (nat postrouting, with `snat`): masquerade of DNATed connections coming
//!   from the container's own subnet (hairpin, and other pods on the same bridge) and, for
//!   IPv4, from 127.0.0.0/8 (the node's localhost); with `masqAll`, from anywhere.

use std::net::IpAddr;

use cni_nft::{Action, BaseChain, Batch, Dir, Family, Hook, L4, Match, Op, Rule, Tag};
use ipnetwork::IpNetwork;

use crate::config::{Mapping, PortmapConf, Protocol};

pub const TABLE: &str = "cni_rs_hostport";
pub const PREFIXES: [&str; 3] = ["pre", "out", "masq"];

pub fn chains(tag: &Tag<'_>) -> [BaseChain; 3] {
    let chain = |prefix: &str, hook: Hook| BaseChain {
        family: Family::Inet,
        table: TABLE,
        name: tag.chain(prefix),
        hook,
    };
    [
        chain("pre", Hook::NAT_PREROUTING),
        chain("out", Hook::NAT_OUTPUT),
        chain("masq", Hook::NAT_POSTROUTING),
    ]
}

fn l4(p: Protocol) -> L4 {
    match p {
        Protocol::Tcp => L4::Tcp,
        Protocol::Udp => L4::Udp,
        Protocol::Sctp => L4::Sctp,
    }
}

fn host(addr: IpAddr) -> IpNetwork {
    IpNetwork::from(addr)
}

/// The DNAT rule of one mapping for a container address, or `None` when the mapping's
/// hostIP is of the other family.
pub fn dnat_rule(conf: &PortmapConf, m: &Mapping, container: IpAddr) -> Option<Rule> {
    let v4 = container.is_ipv4();
    if m.host_ip.is_some_and(|h| h.is_ipv4() != v4) {
        return None;
    }
    let mut matches = vec![Match::Family { v4 }];
    matches.extend(if v4 {
        conf.conditions_v4.iter().cloned()
    } else {
        conf.conditions_v6.iter().cloned()
    });
    matches.push(match m.host_ip {
        Some(ip) => Match::Addr {
            dir: Dir::Destination,
            op: Op::Eq,
            net: host(ip),
        },
        None => Match::LocalDestination,
    });
    matches.push(Match::Dport {
        proto: l4(m.protocol),
        port: m.host_port,
    });
    Some(Rule::new(
        matches,
        Action::Dnat {
            to: container,
            port: m.container_port,
        },
    ))
}

/// The masquerade rules for one container address (with its subnet).
pub fn masquerade_rules(conf: &PortmapConf, container: IpNetwork) -> Vec<Rule> {
    let v4 = container.is_ipv4();
    let to_container = Match::Addr {
        dir: Dir::Destination,
        op: Op::Eq,
        net: host(container.ip()),
    };
    let from = |net: IpNetwork| {
        Rule::new(
            vec![
                Match::Family { v4 },
                Match::Dnated,
                Match::Addr {
                    dir: Dir::Source,
                    op: Op::Eq,
                    net,
                },
                to_container.clone(),
            ],
            Action::Masquerade,
        )
    };
    if conf.masq_all {
        return vec![Rule::new(
            vec![Match::Family { v4 }, Match::Dnated, to_container.clone()],
            Action::Masquerade,
        )];
    }
    // The container's prefix: Match::Addr compares its network part.
    let mut rules = vec![from(container)];
    if v4 {
        let localhost = IpNetwork::new(IpAddr::from([127, 0, 0, 0]), 8).unwrap_or(container);
        rules.push(from(localhost));
    }
    rules
}

/// The ADD transaction: the attachment's three chains written from scratch.
pub fn add_batch(conf: &PortmapConf, tag: &Tag<'_>, containers: &[IpNetwork]) -> Batch {
    let mut batch = Batch::new();
    let comment = tag.comment();
    let dnat: Vec<Rule> = containers
        .iter()
        .flat_map(|c| {
            conf.mappings
                .iter()
                .filter_map(|m| dnat_rule(conf, m, c.ip()))
        })
        .collect();
    let masq: Vec<Rule> = if conf.snat {
        containers
            .iter()
            .flat_map(|c| masquerade_rules(conf, *c))
            .collect()
    } else {
        Vec::new()
    };
    let [pre, out, post] = chains(tag);
    pre.replace(&mut batch, &comment, dnat.clone());
    out.replace(&mut batch, &comment, dnat);
    if masq.is_empty() {
        post.remove(&mut batch);
    } else {
        post.replace(&mut batch, &comment, masq);
    }
    batch
}

/// The DEL transaction: removes the three chains whether or not they exist.
pub fn del_batch(tag: &Tag<'_>) -> Batch {
    let mut batch = Batch::new();
    for chain in chains(tag) {
        chain.remove(&mut batch);
    }
    batch
}

#[cfg(test)]
mod tests {
    use cni_common::NetConf;

    use super::*;

    #[test]
    fn transaction_for_a_dual_stack_pod() {
        let json = r#"{"cniVersion":"1.0.0","name":"cbr0","type":"portmap",
            "runtimeConfig":{"portMappings":[
              {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
              {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"192.0.2.1"}]}}"#;
        let conf = PortmapConf::load(&NetConf::parse(json.as_bytes()).unwrap()).unwrap();
        let tag = Tag {
            network: "cbr0",
            container_id: "ctr1",
            ifname: "eth0",
        };
        let ips = [
            "10.1.17.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ];
        let batch = add_batch(&conf, &tag, &ips);
        insta::assert_snapshot!(batch.to_string());
        // The IPv4 hostIP mapping is skipped for the IPv6 address.
        let v6 = dnat_rule(&conf, &conf.mappings[1], "fd00::5".parse().unwrap());
        assert!(v6.is_none());
    }
}
