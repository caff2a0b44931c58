//! The nftables rules of one attachment, in `inet cni_rs_hostport`:
//! - `pre-<hash>` (nat prerouting) and `out-<hash>` (nat output, for the node itself): per
//!   mapping and family, `[conditions] [fib daddr type local | ip daddr hostIP] proto dport
//!   hostPort dnat to container:port`;
//! - `masq-<hash>` (nat postrouting, with `snat`): masquerade of DNATed connections coming
//!   from the container's own subnet (hairpin, and other pods on the same bridge) and, for
//!   IPv4, from 127.0.0.0/8 (the node's localhost); with `masqAll`, from anywhere.

use std::collections::HashSet;
use std::net::IpAddr;

use cni_nft::nftables::batch::Batch;
use cni_nft::nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
};
use cni_nft::nftables::schema::Nftables;
use cni_nft::nftables::stmt::{NAT, NATFamily, Operator, Statement};
use cni_nft::nftables::types::NfFamily;
use cni_nft::{BaseChain, Hook, Tag, matches, payload, prefix, string};
use ipnetwork::IpNetwork;

use crate::config::{Mapping, PortmapConf};

pub const TABLE: &str = "cni_rs_hostport";
pub const PREFIXES: [&str; 3] = ["pre", "out", "masq"];

pub fn chains(tag: &Tag<'_>) -> [BaseChain; 3] {
    let chain = |prefix: &str, hook: Hook| BaseChain {
        family: NfFamily::INet,
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

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn family_match(v4: bool) -> Statement<'static> {
    matches(
        meta(MetaKey::Nfproto),
        Operator::EQ,
        string(if v4 { "ipv4" } else { "ipv6" }),
    )
}

fn local_destination() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([FibFlag::Daddr]),
        })),
        Operator::EQ,
        string("local"),
    )
}

fn dnated() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "status".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        string("dnat"),
    )
}

fn l3(v4: bool) -> &'static str {
    if v4 { "ip" } else { "ip6" }
}

/// The DNAT rule of one mapping for a container address, or `None` when the mapping's
/// hostIP is of the other family.
pub fn dnat_rule(
    conf: &PortmapConf,
    m: &Mapping,
    container: IpAddr,
) -> Option<Vec<Statement<'static>>> {
    let v4 = container.is_ipv4();
    if m.host_ip.is_some_and(|h| h.is_ipv4() != v4) {
        return None;
    }
    let mut rule = if v4 {
        conf.conditions_v4.clone()
    } else {
        conf.conditions_v6.clone()
    };
    rule.push(family_match(v4));
    match m.host_ip {
        Some(ip) => rule.push(matches(
            payload(l3(v4), "daddr"),
            Operator::EQ,
            string(ip.to_string()),
        )),
        None => rule.push(local_destination()),
    }
    rule.push(matches(
        payload(m.protocol.as_str(), "dport"),
        Operator::EQ,
        Expression::Number(u32::from(m.host_port)),
    ));
    rule.push(Statement::DNAT(Some(NAT {
        addr: Some(string(container.to_string())),
        family: Some(if v4 { NATFamily::IP } else { NATFamily::IP6 }),
        port: Some(Expression::Number(u32::from(m.container_port))),
        flags: None,
    })));
    Some(rule)
}

/// The masquerade rules for one container address (with its subnet).
pub fn masquerade_rules(conf: &PortmapConf, container: IpNetwork) -> Vec<Vec<Statement<'static>>> {
    let v4 = container.is_ipv4();
    let to_container = matches(
        payload(l3(v4), "daddr"),
        Operator::EQ,
        string(container.ip().to_string()),
    );
    let from = |source: Expression<'static>| {
        vec![
            family_match(v4),
            dnated(),
            matches(payload(l3(v4), "saddr"), Operator::EQ, source),
            to_container.clone(),
            Statement::Masquerade(None),
        ]
    };
    if conf.masq_all {
        return vec![vec![
            family_match(v4),
            dnated(),
            to_container.clone(),
            Statement::Masquerade(None),
        ]];
    }
    let mut rules = vec![from(prefix(
        container.network().to_string(),
        container.prefix(),
    ))];
    if v4 {
        rules.push(from(prefix("127.0.0.0".to_owned(), 8)));
    }
    rules
}

/// The ADD transaction: the attachment's three chains written from scratch.
pub fn add_batch(conf: &PortmapConf, tag: &Tag<'_>, containers: &[IpNetwork]) -> Nftables<'static> {
    let mut batch = Batch::new();
    let comment = tag.comment();
    let dnat: Vec<Vec<Statement<'static>>> = containers
        .iter()
        .flat_map(|c| {
            conf.mappings
                .iter()
                .filter_map(|m| dnat_rule(conf, m, c.ip()))
        })
        .collect();
    let masq: Vec<Vec<Statement<'static>>> = if conf.snat {
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
    batch.to_nftables()
}

/// The DEL transaction: removes the three chains whether or not they exist.
pub fn del_batch(tag: &Tag<'_>) -> Nftables<'static> {
    let mut batch = Batch::new();
    for chain in chains(tag) {
        chain.remove(&mut batch);
    }
    batch.to_nftables()
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
        insta::assert_snapshot!(serde_json::to_string_pretty(&batch).unwrap());
        // The IPv4 hostIP mapping is skipped for the IPv6 address.
        let v6 = dnat_rule(&conf, &conf.mappings[1], "fd00::5".parse().unwrap());
        assert!(v6.is_none());
    }
}
