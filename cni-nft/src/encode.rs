//! A [`Rule`] as the kernel's nf_tables expressions, register for register what `nft`
//! sends for the same text (`nft --debug=netlink`), so `nft list` shows our rules as we
//! wrote them. Matches on IP fields get the protocol check they depend on, as nft adds it.

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, Meta,
    MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};

use crate::Family;
use crate::rule::{Action, Dir, IFNAMSIZ, Match, Op, Rule, octets};

pub type Expr = ListAttribute<ExpressionAttribute>;

// include/uapi/linux/netfilter/nf_tables.h
const PAYLOAD_LL: u32 = 0;
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const FIB_DREG: u16 = 1;
const FIB_RESULT: u16 = 2;
const FIB_FLAGS: u16 = 3;
const FIB_RESULT_ADDRTYPE: u32 = 3;
const FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const CT_DREG: u16 = 1;
const CT_KEY: u16 = 2;
const CT_STATUS: u32 = 2;
const IPS_DST_NAT: u32 = 1 << 5;
const NAT_TYPE: u16 = 1;
const NAT_FAMILY: u16 = 2;
const NAT_REG_ADDR_MIN: u16 = 3;
const NAT_REG_PROTO_MIN: u16 = 5;
const NAT_FLAGS: u16 = 7;
const NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const MASQ_FLAGS: u16 = 1;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;
/// libnftnl's user data type for a rule comment (NFTNL_UDATA_RULE_COMMENT).
const UDATA_RULE_COMMENT: u8 = 0;

/// Expressions in the order they run.
#[derive(Default)]
struct Program {
    exprs: Vec<Expr>,
    /// The L3 protocol already checked, if any (nft's dependency tracking).
    family: Option<bool>,
}

impl Program {
    fn push(&mut self, e: Expressions) {
        self.exprs.push(e.into());
    }

    fn other(&mut self, name: &str, attrs: Vec<DefaultNla>) {
        self.push(Expressions::Other {
            expression_type: name.to_owned(),
            attributes: attrs,
        });
    }

    fn meta(&mut self, key: MetaKey) {
        self.push(Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(key),
        ]));
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.push(Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(base),
            Payload::Offset(offset),
            Payload::Len(len),
        ]));
    }

    fn cmp(&mut self, op: Op, data: Vec<u8>) {
        self.push(Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(match op {
                Op::Eq => Operator::Equal,
                Op::Neq => Operator::NotEqual,
            }),
            Cmp::Data(DataAttribute::Value(data)),
        ]));
    }

    fn mask(&mut self, mask: Vec<u8>) {
        let len = mask.len();
        self.push(Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(u32::try_from(len).unwrap_or(u32::MAX)),
            Bitwise::Mask(DataAttribute::Value(mask)),
            Bitwise::Xor(DataAttribute::Value(vec![0; len])),
        ]));
    }

    fn require_family(&mut self, table: Family, v4: bool) {
        if self.family == Some(v4) {
            return;
        }
        match table {
            Family::Inet => {
                self.meta(MetaKey::Nfproto);
                self.cmp(Op::Eq, vec![if v4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 }]);
            }
            Family::Bridge => {
                self.payload(PAYLOAD_LL, 12, 2);
                let ethertype = if v4 { ETH_P_IP } else { ETH_P_IPV6 };
                self.cmp(Op::Eq, ethertype.to_be_bytes().to_vec());
            }
            // The table's family is the protocol: nft adds no check.
            Family::Ip | Family::Ip6 => {}
        }
        self.family = Some(v4);
    }

    fn add_match(&mut self, table: Family, m: &Match) {
        match m {
            Match::Family { v4 } => {
                self.family = None;
                self.require_family(table, *v4);
            }
            Match::Addr { dir, op, net } => {
                let v4 = net.is_ipv4();
                self.require_family(table, v4);
                let (offset, size) = match (v4, dir) {
                    (true, Dir::Source) => (12, 4),
                    (true, Dir::Destination) => (16, 4),
                    (false, Dir::Source) => (8, 16),
                    (false, Dir::Destination) => (24, 16),
                };
                let bits = usize::from(net.prefix());
                let network = octets(net.network());
                if bits == size * 8 {
                    self.payload(PAYLOAD_NETWORK, offset, size as u32);
                    self.cmp(*op, octets(net.ip()));
                } else if bits > 0 && bits % 8 == 0 {
                    // A whole-byte prefix compares fewer bytes, as nft does.
                    self.payload(PAYLOAD_NETWORK, offset, (bits / 8) as u32);
                    self.cmp(*op, network[..bits / 8].to_vec());
                } else {
                    self.payload(PAYLOAD_NETWORK, offset, size as u32);
                    self.mask(prefix_mask(bits, size));
                    self.cmp(*op, network);
                }
            }
            Match::Dport { proto, port } => {
                self.meta(MetaKey::L4Proto);
                self.cmp(Op::Eq, vec![proto.number()]);
                self.payload(PAYLOAD_TRANSPORT, 2, 2);
                self.cmp(Op::Eq, port.to_be_bytes().to_vec());
            }
            Match::Ifname { dir, op, name } => {
                self.meta(match dir {
                    Dir::Source => MetaKey::Iifname,
                    Dir::Destination => MetaKey::Oifname,
                });
                let mut padded = name.as_bytes().to_vec();
                padded.resize(IFNAMSIZ, 0);
                self.cmp(*op, padded);
            }
            Match::Mark { op, value } => {
                self.meta(MetaKey::Mark);
                self.cmp(*op, value.to_ne_bytes().to_vec());
            }
            Match::MarkBits { bits } => {
                self.meta(MetaKey::Mark);
                self.mask(bits.to_ne_bytes().to_vec());
                self.cmp(Op::Eq, bits.to_ne_bytes().to_vec());
            }
            Match::LocalDestination => {
                self.other(
                    "fib",
                    vec![
                        be32(FIB_DREG, Register::Reg1.into()),
                        be32(FIB_RESULT, FIB_RESULT_ADDRTYPE),
                        be32(FIB_FLAGS, FIB_F_DADDR),
                    ],
                );
                self.cmp(Op::Eq, RTN_LOCAL.to_ne_bytes().to_vec());
            }
            Match::Dnated => {
                self.other(
                    "ct",
                    vec![
                        be32(CT_DREG, Register::Reg1.into()),
                        be32(CT_KEY, CT_STATUS),
                    ],
                );
                self.mask(IPS_DST_NAT.to_ne_bytes().to_vec());
                self.cmp(Op::Neq, vec![0; 4]);
            }
            Match::EtherSource { op, mac } => {
                self.payload(PAYLOAD_LL, 6, 6);
                self.cmp(*op, mac.to_vec());
            }
        }
    }

    fn add_action(&mut self, action: &Action) {
        match action {
            Action::Dnat { to, port } => {
                let family = if to.is_ipv4() {
                    NFPROTO_IPV4
                } else {
                    NFPROTO_IPV6
                };
                self.immediate(Register::Reg1, DataAttribute::Value(octets(*to)));
                self.immediate(
                    Register::Reg2,
                    DataAttribute::Value(port.to_be_bytes().to_vec()),
                );
                self.other(
                    "nat",
                    vec![
                        be32(NAT_TYPE, NAT_DNAT),
                        be32(NAT_FAMILY, u32::from(family)),
                        be32(NAT_REG_ADDR_MIN, Register::Reg1.into()),
                        be32(NAT_REG_PROTO_MIN, Register::Reg2.into()),
                        be32(NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
                    ],
                );
            }
            Action::Masquerade => {
                // No data at all, as nft sends it.
                self.exprs
                    .push(ListAttribute::Element(vec![ExpressionAttribute::Name(
                        "masq".to_owned(),
                    )]));
            }
            Action::MasqueradeFullyRandom => {
                self.other(
                    "masq",
                    vec![be32(MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY)],
                );
            }
            Action::Drop => self.verdict(Verdict::Other(NF_DROP)),
            Action::Accept => self.verdict(Verdict::Other(NF_ACCEPT)),
            Action::Return => self.verdict(Verdict::Return),
        }
    }

    fn verdict(&mut self, verdict: Verdict) {
        self.immediate(
            Register::Verdict,
            DataAttribute::Verdict(vec![VerdictAttribute::Code(verdict)]),
        );
    }

    fn immediate(&mut self, reg: Register, data: DataAttribute) {
        self.push(Expressions::Immediate(vec![
            Immediate::DestinationRegister(reg),
            Immediate::Data(data),
        ]));
    }
}

fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

/// `bits` leading one bits over `size` bytes.
fn prefix_mask(bits: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| {
            let ones = bits.saturating_sub(i * 8).min(8);
            if ones == 0 { 0 } else { 0xffu8 << (8 - ones) }
        })
        .collect()
}

/// The expressions of `rule` in a table of `family`.
pub fn expressions(family: Family, rule: &Rule) -> Vec<Expr> {
    let mut p = Program::default();
    for m in &rule.matches {
        p.add_match(family, m);
    }
    p.add_action(&rule.action);
    p.exprs
}

/// A comment as rule user data (libnftnl's TLV: type, length, NUL-terminated text).
pub fn comment_udata(comment: &str) -> Vec<u8> {
    // Comments are cut to [`crate::COMMENT_MAX`] bytes, so the length fits in its byte.
    let text = &comment.as_bytes()[..comment.len().min(crate::COMMENT_MAX)];
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(UDATA_RULE_COMMENT);
    out.push(u8::try_from(text.len() + 1).unwrap_or(u8::MAX));
    out.extend_from_slice(text);
    out.push(0);
    out
}

/// The comment in rule user data, if it has one.
pub fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *kind == UDATA_RULE_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &tail[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks_cover_whole_and_partial_bytes() {
        assert_eq!(prefix_mask(4, 4), [0xf0, 0, 0, 0]);
        assert_eq!(prefix_mask(12, 4), [0xff, 0xf0, 0, 0]);
        assert_eq!(prefix_mask(0, 4), [0, 0, 0, 0]);
        assert_eq!(prefix_mask(32, 4), [0xff; 4]);
    }

    #[test]
    fn comments_round_trip_through_user_data() {
        let udata = comment_udata("net: a, id: b, if: c");
        assert_eq!(udata[..2], [0, 21]);
        assert_eq!(
            udata_comment(&udata).as_deref(),
            Some("net: a, id: b, if: c")
        );
        assert_eq!(udata_comment(&[1, 2, b'x', 0]), None);
        assert_eq!(
            udata_comment(&[0, 9, b'x']),
            None,
            "a cut TLV is no comment"
        );
        let long = "x".repeat(300);
        assert_eq!(udata_comment(&comment_udata(&long)).unwrap().len(), 128);
    }
}
