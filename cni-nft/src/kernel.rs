//! Transactions and listings over a NETLINK_NETFILTER socket in the calling thread's
//! namespace.
//!
//! A transaction is one datagram: BATCH_BEGIN, a message per command, BATCH_END. The kernel
//! applies it while `send` runs, all or nothing, and answers only with errors (no ACK is
//! asked for), so once `send` returns the errors are already queued and reading without
//! blocking collects them, as nft does. A missing kernel module (nat chains, `fib`) is
//! loaded by the kernel itself, which then replays the batch.

use std::io;

use netlink_packet_core::{NLA_TYPE_MASK, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook as HookAttribute, HookNumber, InetHookNumber,
    NfTablesMessage, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use node_kernel::NetfilterSocket;
use node_kernel::nft::NftOp;

use crate::encode::{comment_udata, expressions, udata_comment};
use crate::{BaseChain, Batch, Command, Failure, Family, HookPoint, Listed, RunError};

// include/uapi/linux/netfilter.h
const NF_ACCEPT: u32 = 1;

fn proto_family(f: Family) -> NetfilterProtoFamily {
    match f {
        Family::Inet => NetfilterProtoFamily::Inet,
        Family::Bridge => NetfilterProtoFamily::Bridge,
        Family::Ip => NetfilterProtoFamily::IPv4,
        Family::Ip6 => NetfilterProtoFamily::IPv6,
    }
}

fn nft_message(family: Family, m: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(proto_family(family), 0, 0), m)
}

fn chain_id(c: &BaseChain) -> Vec<ChainAttribute> {
    vec![
        ChainAttribute::Table(c.table.to_owned()),
        ChainAttribute::Name(c.name.clone()),
    ]
}

fn rule_in(c: &BaseChain, mut attrs: Vec<RuleAttribute>) -> RuleMessage {
    let mut all = vec![
        RuleAttribute::Table(c.table.to_owned()),
        RuleAttribute::Chain(c.name.clone()),
    ];
    all.append(&mut attrs);
    RuleMessage { attributes: all }
}

/// One command as (operation, flags, message).
fn message(c: &Command) -> (NftOp, u16, NetfilterMessage) {
    match c {
        Command::AddTable(family, table) => (
            NftOp::NewTable,
            NLM_F_CREATE,
            nft_message(
                *family,
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![TableAttribute::Name((*table).to_owned())],
                }),
            ),
        ),
        Command::AddChain(chain) => {
            let point = match chain.hook.point {
                HookPoint::Prerouting => InetHookNumber::PreRouting,
                HookPoint::Output => InetHookNumber::LocalOut,
                HookPoint::Postrouting => InetHookNumber::PostRouting,
                HookPoint::Forward => InetHookNumber::Forward,
            };
            let mut attributes = chain_id(chain);
            attributes.extend([
                ChainAttribute::Hook(vec![
                    HookAttribute::Number(HookNumber::Inet(point)),
                    // The kernel reads the priority as a signed 32-bit number.
                    HookAttribute::Priority(chain.hook.priority.cast_unsigned()),
                ]),
                ChainAttribute::Policy(NF_ACCEPT),
                ChainAttribute::Type(chain.hook.chain_type().to_owned()),
            ]);
            (
                NftOp::NewChain,
                NLM_F_CREATE,
                nft_message(
                    chain.family,
                    NfTablesMessage::NewChain(ChainMessage { attributes }),
                ),
            )
        }
        // A rule deletion naming no rule empties the chain.
        Command::FlushChain(chain) => (
            NftOp::DeleteRule,
            0,
            nft_message(
                chain.family,
                NfTablesMessage::DeleteRule(rule_in(chain, Vec::new())),
            ),
        ),
        Command::AddRule(chain, rule, comment) => (
            NftOp::NewRule,
            NLM_F_CREATE | NLM_F_APPEND,
            nft_message(
                chain.family,
                NfTablesMessage::NewRule(rule_in(
                    chain,
                    vec![
                        RuleAttribute::Expressions(expressions(chain.family, rule)),
                        RuleAttribute::UserData(comment_udata(comment)),
                    ],
                )),
            ),
        ),
        Command::DeleteChain(chain) => (
            NftOp::DeleteChain,
            0,
            nft_message(
                chain.family,
                NfTablesMessage::DeleteChain(ChainMessage {
                    attributes: chain_id(chain),
                }),
            ),
        ),
    }
}

fn socket() -> Result<NetfilterSocket, RunError> {
    NetfilterSocket::current().map_err(|e| {
        RunError::Unavailable(Failure {
            command: None,
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Errnos that mean the kernel lacks nf_tables or a part of it our rules need (a chain
/// type, an expression): a transaction that creates everything it names fails with them
/// only then.
fn unavailable(e: &io::Error) -> bool {
    use nix::libc::{EAFNOSUPPORT, ENOENT, EOPNOTSUPP, EPROTONOSUPPORT};
    matches!(
        e.raw_os_error(),
        Some(EOPNOTSUPP | EPROTONOSUPPORT | EAFNOSUPPORT | ENOENT)
    )
}

/// Applies `batch` as one transaction.
pub(crate) fn commit(batch: &Batch) -> Result<(), RunError> {
    let nl = socket()?;
    let messages: Vec<(NftOp, u16, NetfilterMessage)> =
        batch.commands.iter().map(message).collect();
    let commands: Vec<_> = messages.iter().map(|(op, f, m)| (*op, *f, m)).collect();
    let outcome = nl.nft_transaction(&commands).map_err(|source| {
        RunError::Failed(Failure {
            command: Some("nf_tables transaction".into()),
            source,
        })
    })?;
    let Err((index, error)) = outcome else {
        return Ok(());
    };
    let command = batch
        .commands
        .get(index)
        .map_or_else(|| "nf_tables transaction".to_owned(), ToString::to_string);
    let unavailable = unavailable(&error);
    let failure = Failure {
        command: Some(command),
        source: error,
    };
    Err(if unavailable {
        RunError::Unavailable(failure)
    } else {
        RunError::Failed(failure)
    })
}

/// A rule as a listing would show it once the kernel holds it: its message written out and
/// read back by the listing's own parser (for [`crate::FakeFirewall`]).
#[cfg(any(test, feature = "fake"))]
pub(crate) fn as_listed(chain: &BaseChain, rule: &crate::Rule, comment: &str) -> Listed {
    use netlink_packet_core::Emitable;
    let message = rule_in(
        chain,
        vec![
            RuleAttribute::Expressions(expressions(chain.family, rule)),
            RuleAttribute::UserData(comment_udata(comment)),
        ],
    );
    let attributes = message.attributes.as_slice();
    let mut bytes = vec![0; attributes.buffer_len()];
    attributes.emit(&mut bytes);
    listed(chain.family, &bytes)
}

/// Every rule of `table`; an absent table has none.
pub(crate) fn list_rules(family: Family, table: &str) -> Result<Vec<Listed>, RunError> {
    let nl = socket()?;
    let request = nft_message(
        family,
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(table.to_owned())],
        }),
    );
    let dumped = match nl.nft_rules(&request) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(Vec::new()),
        Err(source) if unavailable(&source) => {
            return Err(RunError::Unavailable(Failure {
                command: None,
                source,
            }));
        }
        Err(source) => {
            return Err(RunError::Failed(Failure {
                command: None,
                source,
            }));
        }
    };
    let want: u8 = proto_family(family).into();
    Ok(dumped
        .into_iter()
        .filter(|d| d.family == want)
        .map(|d| listed(family, &d.attributes))
        .collect())
}

// The few attributes a listing reads (nf_tables.h).
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// The attributes of `buf` as (type, value), nesting flags cleared; a malformed attribute
/// ends the walk.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?);
        let value = buf.get(4..len)?;
        buf = buf.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((kind & NLA_TYPE_MASK, value))
    })
}

fn text(value: &[u8]) -> String {
    let value = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(value).into_owned()
}

/// Reads only the chain, the comment and the compared or loaded values: parsing every
/// expression type into typed messages costs 25 KB in each binary that lists.
fn listed(family: Family, rule: &[u8]) -> Listed {
    let mut out = Listed {
        family,
        chain: String::new(),
        comment: String::new(),
        values: Vec::new(),
    };
    for (kind, value) in attrs(rule) {
        match kind {
            NFTA_RULE_CHAIN => out.chain = text(value),
            NFTA_RULE_USERDATA => out.comment = udata_comment(value).unwrap_or_default(),
            NFTA_RULE_EXPRESSIONS => {
                for (_, expr) in attrs(value) {
                    collect_values(expr, &mut out.values);
                }
            }
            _ => {}
        }
    }
    out
}

/// The data a `cmp` compares with or an `immediate` loads.
fn collect_values(expr: &[u8], values: &mut Vec<Vec<u8>>) {
    let mut name = String::new();
    let mut data: &[u8] = &[];
    for (kind, value) in attrs(expr) {
        match kind {
            NFTA_EXPR_NAME => name = text(value),
            NFTA_EXPR_DATA => data = value,
            _ => {}
        }
    }
    let wanted = match name.as_str() {
        "cmp" => NFTA_CMP_DATA,
        "immediate" => NFTA_IMMEDIATE_DATA,
        _ => return,
    };
    for (kind, nested) in attrs(data) {
        if kind == wanted {
            values.extend(
                attrs(nested)
                    .filter(|(k, _)| *k == NFTA_DATA_VALUE)
                    .map(|(_, v)| v.to_vec()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut out = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        out.extend_from_slice(value);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    #[test]
    fn a_listed_rule_yields_chain_comment_and_values() {
        let cmp = [
            nla(NFTA_EXPR_NAME, b"cmp\0"),
            nla(
                NFTA_EXPR_DATA | 0x8000,
                &[
                    nla(1, &[0, 0, 0, 1]),
                    nla(
                        NFTA_CMP_DATA | 0x8000,
                        &nla(NFTA_DATA_VALUE, &[10, 1, 0, 5]),
                    ),
                ]
                .concat(),
            ),
        ]
        .concat();
        let masq = nla(NFTA_EXPR_NAME, b"masq\0");
        let exprs = [nla(1 | 0x8000, &cmp), nla(1 | 0x8000, &masq)].concat();
        let rule = [
            nla(1, b"t\0"),
            nla(NFTA_RULE_CHAIN, b"c\0"),
            nla(NFTA_RULE_EXPRESSIONS | 0x8000, &exprs),
            nla(
                NFTA_RULE_USERDATA,
                &comment_udata("net: n, id: c1, if: eth0"),
            ),
        ]
        .concat();
        let got = listed(Family::Inet, &rule);
        assert_eq!(got.chain, "c");
        assert_eq!(got.comment, "net: n, id: c1, if: eth0");
        assert_eq!(got.values, [vec![10, 1, 0, 5]]);
    }

    #[test]
    fn malformed_attributes_end_the_walk_without_panic() {
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0, "length below the header");
        assert_eq!(attrs(&[40, 0, 1, 0, 1]).count(), 0, "length past the end");
        assert_eq!(attrs(&[4, 0, 1, 0, 9]).count(), 1, "a cut tail is dropped");
        let got = listed(Family::Inet, &[0xff; 64]);
        assert!(got.chain.is_empty() && got.values.is_empty());
    }
}
