//! nf_tables: transactions (one datagram, all or nothing) and rule listings. The messages'
//! bodies are the caller's (cni-nft builds them); their types are named here.

use std::io;

use netlink_packet_core::{DecodeError, Emitable, NLM_F_REQUEST, Parseable};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::kinds::{NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, nfnl};
use crate::socket::{Netfilter, Socket};
use crate::transport::Transport;

/// An nf_tables operation (nf_tables.h `NFT_MSG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftOp {
    /// NFT_MSG_NEWTABLE
    NewTable,
    /// NFT_MSG_NEWCHAIN
    NewChain,
    /// NFT_MSG_DELCHAIN
    DeleteChain,
    /// NFT_MSG_NEWRULE
    NewRule,
    /// NFT_MSG_DELRULE
    DeleteRule,
}

impl NftOp {
    fn kind(self) -> u16 {
        let msg = match self {
            NftOp::NewTable => 0,
            NftOp::NewChain => 3,
            NftOp::DeleteChain => 5,
            NftOp::NewRule => 6,
            NftOp::DeleteRule => 8,
        };
        nfnl(NFNL_SUBSYS_NFTABLES, msg)
    }
}

const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

/// One command of a transaction: the operation, its extra flags (`NLM_F_CREATE`...), the
/// message.
pub type NftCommand<'a> = (NftOp, u16, &'a NetfilterMessage);

/// A rule of a listing: its family (from the nfgenmsg header) and its raw attributes.
#[derive(Debug, Clone)]
pub struct DumpedRule {
    /// The table family, as the kernel numbers it.
    pub family: u8,
    /// The rule's netlink attributes, unparsed.
    pub attributes: Vec<u8>,
}

impl Parseable<[u8]> for DumpedRule {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let header = NetfilterHeader::parse(buf)?;
        Ok(DumpedRule {
            family: header.family.into(),
            attributes: buf.get(4..).unwrap_or_default().to_vec(),
        })
    }
}

fn batch_marker(begin: bool) -> NetfilterMessage {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let control = if begin {
        ControlMessage::BatchBegin
    } else {
        ControlMessage::BatchEnd
    };
    NetfilterMessage::new(header, control)
}

impl<T: Transport> Socket<Netfilter, T> {
    /// Applies `commands` as one transaction: BATCH_BEGIN, the commands, BATCH_END, in one
    /// datagram. The kernel applies it while `send` runs, all or nothing, and answers only
    /// with errors (no ACK is asked for), so once sent the errors are already queued and are
    /// read without blocking, as nft does. `Ok(Err((i, e)))`: command `i` was refused.
    pub fn nft_transaction(
        &self,
        commands: &[NftCommand<'_>],
    ) -> io::Result<Result<(), (usize, io::Error)>> {
        let (begin, end) = (batch_marker(true), batch_marker(false));
        let mut parts: Vec<(u16, u16, &dyn Emitable)> = Vec::with_capacity(commands.len() + 2);
        parts.push((NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, &begin));
        parts.extend(
            commands
                .iter()
                .map(|(op, flags, m)| (op.kind(), NLM_F_REQUEST | flags, *m as &dyn Emitable)),
        );
        parts.push((NFNL_MSG_BATCH_END, NLM_F_REQUEST, &end));
        let seqs = self.send_batch(&parts)?;
        let errors = self.queued_errors()?;
        let Some((seq, error)) = errors.into_iter().next() else {
            return Ok(Ok(()));
        };
        // seqs[0] is BATCH_BEGIN: commands start at index 1.
        let index = seqs
            .iter()
            .position(|s| *s == seq)
            .map_or(usize::MAX, |i| i.wrapping_sub(1));
        Ok(Err((index, error)))
    }

    /// The rules `request` (a GETRULE message naming family and table) selects.
    pub fn nft_rules(&self, request: &NetfilterMessage) -> io::Result<Vec<DumpedRule>> {
        self.dump(
            nfnl(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE),
            nfnl(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE),
            request,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use netlink_packet_netfilter::nftables::{NfTablesMessage, TableAttribute, TableMessage};
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

    /// A NEWTABLE message for the transaction tests.
    pub fn table(name: &str) -> NetfilterMessage {
        NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
            NfTablesMessage::NewTable(TableMessage {
                attributes: vec![TableAttribute::Name(name.to_owned())],
            }),
        )
    }
}
