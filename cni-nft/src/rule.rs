//! The rules our plugins write, as a small typed vocabulary: each [`Match`] and [`Action`]
//! knows how `nft` spells it (its `Display`, used in snapshots, errors and the test that
//! feeds the text to `nft -f`) and how the kernel runs it ([`crate::encode`]).

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// The kernel's interface name size (IFNAMSIZ), NUL included.
pub const IFNAMSIZ: usize = cni_common::validate::IFNAME_MAX + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Source,
    Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Sctp => 132,
        }
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`
    Family { v4: bool },
    /// `ip saddr 10.0.0.0/8`, `ip6 daddr != fd00::1` (a full-length prefix is one address).
    Addr { dir: Dir, op: Op, net: IpNetwork },
    /// `tcp dport 8080`, with the `meta l4proto tcp` it implies.
    Dport { proto: L4, port: u16 },
    /// `iifname "eth0"` (`dir` Source) or `oifname != "eth0"` (Destination).
    Ifname { dir: Dir, op: Op, name: String },
    /// `meta mark 0x4000`
    Mark { op: Op, value: u32 },
    /// `meta mark & 0x00004000 == 0x00004000`: every bit of `bits` set in the mark, whatever
    /// the other bits (iptables' `-m mark --mark 0x4000/0x4000`, kube-proxy's masquerade mark).
    MarkBits { bits: u32 },
    /// `fib daddr type local`: addressed to this node.
    LocalDestination,
    /// `ct status dnat`: the connection was DNATed.
    Dnated,
    /// `ether saddr != 02:00:00:00:00:01`
    EtherSource { op: Op, mac: [u8; 6] },
}

/// What a rule does when every match holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `dnat ip to 10.1.0.5:80`
    Dnat {
        to: IpAddr,
        port: u16,
    },
    Masquerade,
    /// `masquerade fully-random`: source ports fully randomized (`--random-fully`).
    MasqueradeFullyRandom,
    Drop,
    /// `accept`
    Accept,
    /// `return`: back to the calling chain (in a base chain: its policy).
    Return,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

impl Rule {
    pub fn new(matches: Vec<Match>, action: Action) -> Self {
        Rule { matches, action }
    }
}

/// An address's bytes in network order, as the kernel compares and loads them.
pub fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether an interface name fits the kernel's limit (and so a name match can be written).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() < IFNAMSIZ && !name.contains('\0')
}

fn op(o: Op) -> &'static str {
    match o {
        Op::Eq => "",
        Op::Neq => "!= ",
    }
}

fn l3(v4: bool) -> &'static str {
    if v4 { "ip" } else { "ip6" }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Family { v4 } => {
                write!(f, "meta nfproto {}", if *v4 { "ipv4" } else { "ipv6" })
            }
            Match::Addr { dir, op: o, net } => {
                let field = match dir {
                    Dir::Source => "saddr",
                    Dir::Destination => "daddr",
                };
                write!(f, "{} {field} {}", l3(net.is_ipv4()), op(*o))?;
                if net.prefix() == if net.is_ipv4() { 32 } else { 128 } {
                    write!(f, "{}", net.ip())
                } else {
                    write!(f, "{}/{}", net.network(), net.prefix())
                }
            }
            Match::Dport { proto, port } => write!(f, "{} dport {port}", proto.name()),
            Match::Ifname { dir, op: o, name } => {
                let key = match dir {
                    Dir::Source => "iifname",
                    Dir::Destination => "oifname",
                };
                write!(f, "{key} {}\"{name}\"", op(*o))
            }
            Match::Mark { op: o, value } => write!(f, "meta mark {}0x{value:08x}", op(*o)),
            Match::MarkBits { bits } => {
                write!(f, "meta mark & 0x{bits:08x} == 0x{bits:08x}")
            }
            Match::LocalDestination => f.write_str("fib daddr type local"),
            Match::Dnated => f.write_str("ct status dnat"),
            Match::EtherSource { op: o, mac } => {
                write!(f, "ether saddr {}", op(*o))?;
                for (i, b) in mac.iter().enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Dnat {
                to: IpAddr::V4(a),
                port,
            } => write!(f, "dnat ip to {a}:{port}"),
            Action::Dnat {
                to: IpAddr::V6(a),
                port,
            } => write!(f, "dnat ip6 to [{a}]:{port}"),
            Action::Masquerade => f.write_str("masquerade"),
            Action::MasqueradeFullyRandom => f.write_str("masquerade fully-random"),
            Action::Drop => f.write_str("drop"),
            Action::Accept => f.write_str("accept"),
            Action::Return => f.write_str("return"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_nft_writes_them() {
        let rule = Rule::new(
            vec![
                Match::Family { v4: true },
                Match::Addr {
                    dir: Dir::Source,
                    op: Op::Neq,
                    net: "10.1.2.3/8".parse().unwrap(),
                },
                Match::Addr {
                    dir: Dir::Destination,
                    op: Op::Eq,
                    net: "fd00::5/128".parse().unwrap(),
                },
                Match::Dport {
                    proto: L4::Udp,
                    port: 53,
                },
                Match::Ifname {
                    dir: Dir::Source,
                    op: Op::Eq,
                    name: "eth0".into(),
                },
                Match::Mark {
                    op: Op::Neq,
                    value: 0x4000,
                },
                Match::LocalDestination,
                Match::Dnated,
                Match::EtherSource {
                    op: Op::Neq,
                    mac: [2, 0, 0, 0, 0, 0xab],
                },
            ],
            Action::Dnat {
                to: "fd00::5".parse().unwrap(),
                port: 80,
            },
        );
        assert_eq!(
            rule.to_string(),
            "meta nfproto ipv4 ip saddr != 10.0.0.0/8 ip6 daddr fd00::5 udp dport 53 \
             iifname \"eth0\" meta mark != 0x00004000 fib daddr type local ct status dnat \
             ether saddr != 02:00:00:00:00:ab dnat ip6 to [fd00::5]:80"
        );
        assert_eq!(
            Rule::new(vec![Match::MarkBits { bits: 0x4000 }], Action::Return).to_string(),
            "meta mark & 0x00004000 == 0x00004000 return"
        );
        assert_eq!(
            Action::MasqueradeFullyRandom.to_string(),
            "masquerade fully-random"
        );
        assert_eq!(Action::Accept.to_string(), "accept");
        let to = "10.1.0.5".parse().unwrap();
        assert_eq!(
            Action::Dnat { to, port: 8 }.to_string(),
            "dnat ip to 10.1.0.5:8"
        );
    }

    #[test]
    fn interface_names_must_fit_the_kernel() {
        assert!(valid_ifname("veth0123456789a"));
        assert!(!valid_ifname("veth0123456789ab"));
        assert!(!valid_ifname(""));
    }
}
