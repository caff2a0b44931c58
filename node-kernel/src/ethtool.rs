//! Device features (offloads) through the kernel's ethtool generic netlink family: whether one
//! is active (`ethtool -k DEV`), switching one on or off (`ethtool -K DEV FEATURE on|off`).
//!
//! Features are named as `ethtool -k` names them (`tx-checksum-ip-generic`), and requests use
//! the bitset form "bits by name": `ETHTOOL_A_BITSET_BITS` → `ETHTOOL_A_BITSET_BITS_BIT` →
//! `ETHTOOL_A_BITSET_BIT_NAME` (and `ETHTOOL_A_BITSET_BIT_VALUE` when on), without
//! `ETHTOOL_A_BITSET_NOMASK`, so a change touches that one feature and no other. Replies are
//! asked for in the same form (no `ETHTOOL_FLAG_COMPACT_BITSETS`), so no string set is needed
//! to read them.
//!
//! The generic netlink header and the family lookup come from `netlink-packet-generic`; the
//! ethtool attributes themselves (a header nest and bitsets) are written and read here with
//! `netlink-packet-core`'s attribute helpers, as no crate of the same family types them
//! without an async runtime (docs/dependencies.md).

use std::io;

use netlink_packet_core::{
    DecodeError, Emitable, NLA_F_NESTED, NLA_HEADER_SIZE, NLA_TYPE_MASK, Nla, NlaBuffer,
    NlasIterator, Parseable, emit_u32, parse_string,
};
use netlink_packet_generic::constants::GENL_HDRLEN;
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use crate::socket::{Ethtool, GenericFamily, Socket};
use crate::transport::Transport;

/// The feature flannel's VXLAN devices may have turned off: with it on, some kernels and NICs
/// send VXLAN packets with bad inner checksums (flannel issues #1279 and #2152, usually worked
/// around by hand with `ethtool -K flannel.1 tx-checksum-ip-generic off`).
pub const TX_CHECKSUM_IP_GENERIC: &str = "tx-checksum-ip-generic";

// include/uapi/linux/ethtool_netlink.h
const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_MSG_FEATURES_GET: u8 = 11;
const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_MSG_FEATURES_GET_REPLY: u8 = 11;

const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_HEADER_FLAGS: u16 = 3;
const ETHTOOL_FLAG_OMIT_REPLY: u32 = 1 << 1;

const ETHTOOL_A_BITSET_NOMASK: u16 = 1;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_VALUE: u16 = 4;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BIT_VALUE: u16 = 3;

const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_HW: u16 = 2;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_FEATURES_ACTIVE: u16 = 4;

/// A feature the kernel kept as it was after being asked to change it: the device cannot
/// change it (it is not among the device's changeable features), or another setting or the
/// driver holds it. Carried inside the `io::Error` [`Socket::set_feature`] returns.
#[derive(Debug, thiserror::Error)]
#[error(
    "feature {feature} of {ifname} is still {still} after setting it {wanted}{why}",
    still = on_off(!*.wanted),
    wanted = on_off(*.wanted),
    why = if *.fixed { " (the device cannot change it)" } else { "" }
)]
pub struct FeatureUnchanged {
    /// The device.
    pub ifname: String,
    /// The feature, as `ethtool -k` names it.
    pub feature: String,
    /// The value that was asked for.
    pub wanted: bool,
    /// Whether the kernel lists the feature as one the device cannot change.
    pub fixed: bool,
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// One attribute of a request: the few kinds the features requests use.
#[derive(Debug, Clone)]
enum Attr {
    /// A nest of attributes (sent with `NLA_F_NESTED`, which the family's strict policy wants).
    Nest(u16, Vec<Attr>),
    /// A NUL-terminated string.
    Str(u16, String),
    /// A `u32` in host order.
    U32(u16, u32),
    /// A flag: present means set.
    Flag(u16),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Nest(_, inner) => inner.as_slice().buffer_len(),
            Attr::Str(_, s) => s.len() + 1,
            Attr::U32(..) => 4,
            Attr::Flag(_) => 0,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Nest(kind, _) => kind | NLA_F_NESTED,
            Attr::Str(kind, _) | Attr::U32(kind, _) | Attr::Flag(kind) => *kind,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Nest(_, inner) => inner.as_slice().emit(buffer),
            Attr::Str(_, s) => {
                // value_len() sized the buffer: the bytes, then the NUL.
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            // The buffer is exactly four bytes, so this cannot fail.
            Attr::U32(_, v) => drop(emit_u32(buffer, *v)),
            Attr::Flag(_) => {}
        }
    }
}

/// An ethtool request: the command, then its attributes after the generic netlink header.
#[derive(Debug)]
struct Request {
    cmd: u8,
    attrs: Vec<Attr>,
}

impl GenlFamily for Request {
    fn family_name() -> &'static str {
        Ethtool::NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for Request {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

/// `ETHTOOL_A_FEATURES_HEADER`: the device by name, and the request flags.
fn header(ifname: &str, flags: u32) -> Attr {
    Attr::Nest(
        ETHTOOL_A_FEATURES_HEADER,
        vec![
            Attr::Str(ETHTOOL_A_HEADER_DEV_NAME, ifname.to_owned()),
            Attr::U32(ETHTOOL_A_HEADER_FLAGS, flags),
        ],
    )
}

/// A name the kernel will read as a C string: a NUL inside would cut it short.
fn checked<'a>(what: &str, name: &'a str) -> io::Result<&'a str> {
    if name.is_empty() || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {name:?}"),
        ));
    }
    Ok(name)
}

/// The `ETHTOOL_MSG_FEATURES_SET` request changing `feature` of `ifname` alone.
fn set_request(ifname: &str, feature: &str, on: bool) -> GenlMessage<Request> {
    let mut bit = vec![Attr::Str(ETHTOOL_A_BITSET_BIT_NAME, feature.to_owned())];
    if on {
        bit.push(Attr::Flag(ETHTOOL_A_BITSET_BIT_VALUE));
    }
    let wanted = Attr::Nest(
        ETHTOOL_A_FEATURES_WANTED,
        vec![Attr::Nest(
            ETHTOOL_A_BITSET_BITS,
            vec![Attr::Nest(ETHTOOL_A_BITSET_BITS_BIT, bit)],
        )],
    );
    GenlMessage::from_payload(Request {
        cmd: ETHTOOL_MSG_FEATURES_SET,
        // The kernel's reply would tell what did not take; the features are read afterwards
        // instead, so the ACK is the only answer.
        attrs: vec![header(ifname, ETHTOOL_FLAG_OMIT_REPLY), wanted],
    })
}

/// The `ETHTOOL_MSG_FEATURES_GET` request for `ifname`, bitsets by name.
fn get_request(ifname: &str) -> GenlMessage<Request> {
    GenlMessage::from_payload(Request {
        cmd: ETHTOOL_MSG_FEATURES_GET,
        attrs: vec![header(ifname, 0)],
    })
}

/// The attributes inside `buf`, as (type without flags, value).
fn attributes(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    NlasIterator::new(buf).map(|nla| {
        let nla: NlaBuffer<&[u8]> = nla?;
        let (kind, len) = (nla.kind() & NLA_TYPE_MASK, usize::from(nla.length()));
        // new_checked() saw the length within the buffer; the value is what follows the header.
        let value = nla
            .into_inner()
            .get(NLA_HEADER_SIZE..len)
            .ok_or_else(|| DecodeError::from("attribute shorter than its header"))?;
        Ok((kind, value))
    })
}

/// A bitset in its by-name form: the bits listed, each with its `VALUE` flag.
#[derive(Debug, Default, PartialEq, Eq)]
struct Bitset {
    /// `ETHTOOL_A_BITSET_NOMASK`: a list of the bits that are set, nothing else.
    nomask: bool,
    /// The bits listed, by name, with whether `ETHTOOL_A_BITSET_BIT_VALUE` came with each.
    bits: Vec<(String, bool)>,
}

impl Bitset {
    fn parse(buf: &[u8]) -> Result<Bitset, DecodeError> {
        let mut set = Bitset::default();
        for attr in attributes(buf) {
            match attr? {
                (ETHTOOL_A_BITSET_NOMASK, _) => set.nomask = true,
                (ETHTOOL_A_BITSET_VALUE, _) => {
                    return Err(DecodeError::from(
                        "compact bitset where bits by name were asked for",
                    ));
                }
                (ETHTOOL_A_BITSET_BITS, bits) => {
                    for bit in attributes(bits) {
                        if let (ETHTOOL_A_BITSET_BITS_BIT, bit) = bit? {
                            set.bits.push(Self::bit(bit)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(set)
    }

    fn bit(buf: &[u8]) -> Result<(String, bool), DecodeError> {
        let mut name = None;
        let mut value = false;
        for attr in attributes(buf) {
            match attr? {
                (ETHTOOL_A_BITSET_BIT_NAME, n) => name = Some(parse_string(n)?),
                (ETHTOOL_A_BITSET_BIT_VALUE, _) => value = true,
                _ => {}
            }
        }
        name.map(|n| (n, value))
            .ok_or_else(|| DecodeError::from("bitset bit without a name"))
    }

    /// Whether `name` is listed, and with its `VALUE` flag.
    fn listed(&self, name: &str) -> Option<bool> {
        self.bits.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Whether bit `name` is set: in a list, being listed; otherwise its value.
    fn is_set(&self, name: &str) -> bool {
        match self.listed(name) {
            Some(value) => self.nomask || value,
            None => false,
        }
    }
}

/// The `ETHTOOL_MSG_FEATURES_GET` reply, as far as it is read.
#[derive(Debug, PartialEq, Eq)]
struct Features {
    /// `ETHTOOL_A_FEATURES_HW`: every feature the kernel knows (its mask), set where the
    /// device can change it.
    hw: Bitset,
    /// `ETHTOOL_A_FEATURES_ACTIVE`: the features in effect.
    active: Bitset,
}

impl Features {
    /// Whether `feature` is active; `None` when the kernel does not know the name.
    fn active(&self, feature: &str) -> Option<bool> {
        self.hw.listed(feature)?;
        Some(self.active.is_set(feature))
    }

    /// Whether the device cannot change `feature`.
    fn fixed(&self, feature: &str) -> bool {
        self.hw.listed(feature) == Some(false)
    }
}

impl Parseable<[u8]> for Features {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let header = GenlHeader::parse(buf)?;
        if header.cmd != ETHTOOL_MSG_FEATURES_GET_REPLY {
            return Err(DecodeError::from(format!(
                "ethtool reply of command {} where FEATURES_GET_REPLY was expected",
                header.cmd
            )));
        }
        let (mut hw, mut active) = (None, None);
        for attr in attributes(buf.get(GENL_HDRLEN..).unwrap_or_default()) {
            match attr? {
                (ETHTOOL_A_FEATURES_HW, v) => hw = Some(Bitset::parse(v)?),
                (ETHTOOL_A_FEATURES_ACTIVE, v) => active = Some(Bitset::parse(v)?),
                _ => {}
            }
        }
        match (hw, active) {
            (Some(hw), Some(active)) => Ok(Features { hw, active }),
            _ => Err(DecodeError::from(
                "ethtool features reply without ETHTOOL_A_FEATURES_HW or _ACTIVE",
            )),
        }
    }
}

impl<T: Transport> Socket<Ethtool, T> {
    /// Whether `feature` (as `ethtool -k` names it, e.g. [`TX_CHECKSUM_IP_GENERIC`]) is
    /// active on `ifname`; `None` when the kernel has no feature of that name. An unknown
    /// device is `ENODEV`.
    pub fn feature_active(&self, ifname: &str, feature: &str) -> io::Result<Option<bool>> {
        checked("feature name", feature)?;
        Ok(self.features(ifname)?.active(feature))
    }

    /// Switches `feature` of `ifname` on or off, leaving every other feature as asked before
    /// (`ethtool -K IFNAME FEATURE on|off`), then reads it back. The kernel's refusal is its
    /// errno (`ENODEV` for an unknown device, `EOPNOTSUPP` or `EINVAL` for an unknown
    /// feature name, `EPERM` without `CAP_NET_ADMIN`); a feature that is not in the wanted
    /// state afterwards (the device cannot change it, or the driver holds it) is an error
    /// carrying [`FeatureUnchanged`].
    pub fn set_feature(&self, ifname: &str, feature: &str, on: bool) -> io::Result<()> {
        checked("interface name", ifname)?;
        checked("feature name", feature)?;
        let family = self.family_id()?;
        self.ack(family, 0, &set_request(ifname, feature, on))?;
        let features = self.features(ifname)?;
        match features.active(feature) {
            Some(now) if now == on => Ok(()),
            Some(_) => Err(io::Error::other(FeatureUnchanged {
                ifname: ifname.to_owned(),
                feature: feature.to_owned(),
                wanted: on,
                fixed: features.fixed(feature),
            })),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the kernel took feature {feature} of {ifname} but does not list it"),
            )),
        }
    }

    /// The device's features (`ETHTOOL_MSG_FEATURES_GET`).
    fn features(&self, ifname: &str) -> io::Result<Features> {
        checked("interface name", ifname)?;
        let family = self.family_id()?;
        self.get(family, family, &get_request(ifname))?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no ethtool features reply for {ifname}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_generic::constants::{
        CTRL_ATTR_FAMILY_NAME, CTRL_CMD_GETFAMILY, GENL_ID_CTRL,
    };
    use nix::libc::{ENODEV, ENOENT, EOPNOTSUPP};

    use super::*;
    use crate::fake::{FakeReply, FakeTransport};
    use crate::link::{LinkId, VxlanSpec};
    use crate::socket::{EthtoolSocket, RouteSocket};

    const FAMILY: u16 = 27;

    fn socket() -> Socket<Ethtool, FakeTransport> {
        Socket::with_transport(FakeTransport::new())
    }

    fn bytes(m: &impl Emitable) -> Vec<u8> {
        let mut v = vec![0; m.buffer_len()];
        m.emit(&mut v);
        v
    }

    /// nlctrl's answer naming `FAMILY` (with an attribute the crate's parser would not know).
    fn family_reply() -> FakeReply {
        FakeReply::generic_family("ethtool", FAMILY)
    }

    fn bit(name: &str, value: bool) -> Attr {
        let mut bit = vec![
            Attr::U32(1, 0),
            Attr::Str(ETHTOOL_A_BITSET_BIT_NAME, name.into()),
        ];
        if value {
            bit.push(Attr::Flag(ETHTOOL_A_BITSET_BIT_VALUE));
        }
        Attr::Nest(ETHTOOL_A_BITSET_BITS_BIT, bit)
    }

    /// A features reply as the kernel writes it: HW lists every known feature with the mask
    /// (value set where changeable), ACTIVE lists the active ones (NOMASK).
    fn features_payload(hw: &[(&str, bool)], active: &[&str]) -> Vec<u8> {
        let hw = Attr::Nest(
            ETHTOOL_A_FEATURES_HW,
            vec![
                Attr::U32(2, 64),
                Attr::Nest(
                    ETHTOOL_A_BITSET_BITS,
                    hw.iter().map(|(n, v)| bit(n, *v)).collect(),
                ),
            ],
        );
        let active = Attr::Nest(
            ETHTOOL_A_FEATURES_ACTIVE,
            vec![
                Attr::Flag(ETHTOOL_A_BITSET_NOMASK),
                Attr::U32(2, 64),
                Attr::Nest(
                    ETHTOOL_A_BITSET_BITS,
                    active.iter().map(|n| bit(n, false)).collect(),
                ),
            ],
        );
        bytes(&GenlMessage::from_payload(Request {
            cmd: ETHTOOL_MSG_FEATURES_GET_REPLY,
            attrs: vec![header("vx0", 0), hw, active],
        }))
    }

    fn features_reply(hw: &[(&str, bool)], active: &[&str]) -> FakeReply {
        FakeReply::Message {
            kind: FAMILY,
            payload: features_payload(hw, active),
        }
    }

    /// The attributes of `buf` with their raw type (flags kept).
    fn raw(buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(buf)
            .map(|n| {
                let n = n.unwrap();
                let nested = if n.nested_flag() { NLA_F_NESTED } else { 0 };
                (n.kind() | nested, n.value().to_vec())
            })
            .collect()
    }

    fn only(buf: &[u8], kind: u16) -> Vec<u8> {
        let found: Vec<_> = raw(buf).into_iter().filter(|(k, _)| *k == kind).collect();
        assert_eq!(found.len(), 1, "one attribute {kind:#x} in {buf:?}");
        found.into_iter().next().unwrap().1
    }

    const N: u16 = NLA_F_NESTED;

    /// Decodes a FEATURES_SET request: (device name, header flags, bit name, value flag).
    fn decode_set(payload: &[u8]) -> (String, u32, String, bool) {
        let genl = GenlHeader::parse(payload).unwrap();
        assert_eq!((genl.cmd, genl.version), (ETHTOOL_MSG_FEATURES_SET, 1));
        let attrs = &payload[GENL_HDRLEN..];
        let header = only(attrs, ETHTOOL_A_FEATURES_HEADER | N);
        let dev = parse_string(&only(&header, ETHTOOL_A_HEADER_DEV_NAME)).unwrap();
        let flags = u32::from_ne_bytes(only(&header, ETHTOOL_A_HEADER_FLAGS).try_into().unwrap());
        let wanted = only(attrs, ETHTOOL_A_FEATURES_WANTED | N);
        let kinds: Vec<u16> = raw(&wanted).iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [ETHTOOL_A_BITSET_BITS | N],
            "no NOMASK, no compact form"
        );
        let bits = only(&wanted, ETHTOOL_A_BITSET_BITS | N);
        let bit = only(&bits, ETHTOOL_A_BITSET_BITS_BIT | N);
        let name = parse_string(&only(&bit, ETHTOOL_A_BITSET_BIT_NAME)).unwrap();
        let value = raw(&bit)
            .iter()
            .any(|(k, v)| *k == ETHTOOL_A_BITSET_BIT_VALUE && v.is_empty());
        (dev, flags, name, value)
    }

    #[test]
    fn setting_a_feature_resolves_the_family_once_and_names_one_bit() {
        let s = socket();
        s.transport()
            .reply(family_reply())
            .reply(FakeReply::Ack)
            .reply(features_reply(
                &[(TX_CHECKSUM_IP_GENERIC, true), ("tx-scatter-gather", true)],
                &["tx-scatter-gather"],
            ));
        s.set_feature("flannel.1", TX_CHECKSUM_IP_GENERIC, false)
            .unwrap();
        s.transport().reply(FakeReply::Ack).reply(features_reply(
            &[(TX_CHECKSUM_IP_GENERIC, true)],
            &[TX_CHECKSUM_IP_GENERIC],
        ));
        s.set_feature("flannel.1", TX_CHECKSUM_IP_GENERIC, true)
            .unwrap();

        let sent = s.transport().sent();
        let kinds: Vec<u16> = sent.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [GENL_ID_CTRL, FAMILY, FAMILY, FAMILY, FAMILY]);

        let lookup = &sent[0];
        assert_eq!(lookup.flags, NLM_F_REQUEST);
        assert_eq!(
            GenlHeader::parse(&lookup.payload).unwrap().cmd,
            CTRL_CMD_GETFAMILY
        );
        let name = only(&lookup.payload[GENL_HDRLEN..], CTRL_ATTR_FAMILY_NAME);
        assert_eq!(name, b"ethtool\0");

        assert_eq!(sent[1].flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(
            decode_set(&sent[1].payload),
            (
                "flannel.1".to_owned(),
                ETHTOOL_FLAG_OMIT_REPLY,
                TX_CHECKSUM_IP_GENERIC.to_owned(),
                false
            )
        );
        assert!(decode_set(&sent[3].payload).3, "VALUE flag when on");

        // Read back with a plain GET, bits by name (no COMPACT_BITSETS flag).
        let get = &sent[2];
        assert_eq!(get.flags, NLM_F_REQUEST);
        assert_eq!(
            GenlHeader::parse(&get.payload).unwrap().cmd,
            ETHTOOL_MSG_FEATURES_GET
        );
        let header = only(&get.payload[GENL_HDRLEN..], ETHTOOL_A_FEATURES_HEADER | N);
        assert_eq!(only(&header, ETHTOOL_A_HEADER_FLAGS), 0u32.to_ne_bytes());
        assert_eq!(only(&header, ETHTOOL_A_HEADER_DEV_NAME), b"flannel.1\0");
    }

    #[test]
    fn the_kernels_refusal_is_its_errno() {
        let s = socket();
        s.transport()
            .reply(family_reply())
            .reply(FakeReply::Errno(ENODEV));
        let e = s
            .set_feature("nope0", TX_CHECKSUM_IP_GENERIC, false)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENODEV));
        s.transport().reply(FakeReply::Errno(EOPNOTSUPP));
        let e = s.set_feature("vx0", "no-such-feature", false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(EOPNOTSUPP));
        s.transport().reply(FakeReply::Errno(ENODEV));
        let e = s
            .feature_active("nope0", TX_CHECKSUM_IP_GENERIC)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENODEV));
    }

    #[test]
    fn a_kernel_without_the_family_is_enoent_and_asked_again_next_time() {
        let s = socket();
        s.transport().reply(FakeReply::Errno(ENOENT));
        let e = s.feature_active("vx0", TX_CHECKSUM_IP_GENERIC).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOENT));
        s.transport()
            .reply(family_reply())
            .reply(features_reply(&[(TX_CHECKSUM_IP_GENERIC, true)], &[]));
        assert_eq!(
            s.feature_active("vx0", TX_CHECKSUM_IP_GENERIC).unwrap(),
            Some(false)
        );
    }

    #[test]
    fn a_get_reply_reads_as_active_inactive_or_unknown() {
        let s = socket();
        let hw = [(TX_CHECKSUM_IP_GENERIC, true), ("rx-checksum", false)];
        s.transport()
            .reply(family_reply())
            .reply(features_reply(&hw, &[TX_CHECKSUM_IP_GENERIC]))
            .reply(features_reply(&hw, &["rx-checksum"]))
            .reply(features_reply(&hw, &["rx-checksum"]));
        assert_eq!(
            s.feature_active("vx0", TX_CHECKSUM_IP_GENERIC).unwrap(),
            Some(true)
        );
        assert_eq!(
            s.feature_active("vx0", TX_CHECKSUM_IP_GENERIC).unwrap(),
            Some(false)
        );
        assert_eq!(s.feature_active("vx0", "no-such-feature").unwrap(), None);
    }

    #[test]
    fn a_feature_that_did_not_change_is_an_error_saying_so() {
        let s = socket();
        s.transport()
            .reply(family_reply())
            .reply(FakeReply::Ack)
            .reply(features_reply(
                &[(TX_CHECKSUM_IP_GENERIC, false)],
                &[TX_CHECKSUM_IP_GENERIC],
            ));
        let e = s
            .set_feature("vx0", TX_CHECKSUM_IP_GENERIC, false)
            .unwrap_err();
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<FeatureUnchanged>())
            .unwrap();
        assert!(inner.fixed && !inner.wanted);
        assert_eq!(
            e.to_string(),
            "feature tx-checksum-ip-generic of vx0 is still on after setting it off \
             (the device cannot change it)"
        );
    }

    #[test]
    fn a_compact_bitset_or_a_missing_one_is_a_decode_error() {
        let mut compact = vec![ETHTOOL_MSG_FEATURES_GET_REPLY, 1, 0, 0];
        let value = Attr::Nest(ETHTOOL_A_BITSET_VALUE, vec![]);
        for kind in [ETHTOOL_A_FEATURES_HW, ETHTOOL_A_FEATURES_ACTIVE] {
            compact.extend(bytes(&Attr::Nest(kind, vec![value.clone()])));
        }
        assert!(Features::parse(&compact).is_err());
        let missing = vec![ETHTOOL_MSG_FEATURES_GET_REPLY, 1, 0, 0];
        assert!(Features::parse(&missing).is_err());
        assert!(Features::parse(&[1]).is_err());
    }

    #[test]
    fn names_the_kernel_would_cut_short_are_refused_before_sending() {
        let s = socket();
        assert!(
            s.set_feature("vx\0x", TX_CHECKSUM_IP_GENERIC, true)
                .is_err()
        );
        assert!(s.feature_active("vx0", "").is_err());
        assert!(s.transport().sent().is_empty());
    }

    /// Runs `f` on a thread of its own moved into a new, empty network namespace. Nothing
    /// pins that namespace, so it (and every device made in it) goes away when the thread
    /// ends, also when `f` panics. Processes the thread starts inherit its namespace. `None`
    /// (the test is skipped) where namespaces cannot be made (not root).
    fn in_private_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let ino = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let thread = std::thread::spawn(move || {
            let host = ino();
            match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                Err(nix::errno::Errno::EPERM) => return None,
                other => other.unwrap(),
            }
            assert_ne!(ino(), host, "still in the machine's own namespace");
            Some(f())
        });
        match thread.join() {
            Ok(None) => {
                eprintln!("skipped: cannot create a network namespace (needs CAP_SYS_ADMIN)");
                None
            }
            Ok(some) => some,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `ethtool -k vx0`'s word for `feature`, when ethtool is installed.
    fn ethtool_says(feature: &str) -> Option<String> {
        let out = match std::process::Command::new("ethtool")
            .args(["-k", "vx0"])
            .output()
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            other => other.unwrap(),
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{feature}: ")))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned());
        Some(line.unwrap_or_else(|| panic!("ethtool -k lists no {feature}:\n{text}")))
    }

    #[test]
    fn a_vxlan_devices_checksum_offload_goes_off_and_on_in_a_private_netns() {
        in_private_netns(|| {
            let route = RouteSocket::current().unwrap();
            let lo = route
                .link(LinkId::Name("lo"))
                .unwrap()
                .unwrap()
                .header
                .index;
            route
                .create_link(&crate::link::vxlan(&VxlanSpec {
                    name: "vx0".into(),
                    vni: 5,
                    link: lo,
                    local: "127.0.0.1".parse().unwrap(),
                    port: 8472,
                    gbp: false,
                    learning: false,
                    mtu: 1450,
                    mac: [2, 0, 0, 0, 0, 5],
                }))
                .unwrap();
            let ethtool = EthtoolSocket::current().unwrap();
            let f = TX_CHECKSUM_IP_GENERIC;
            assert_eq!(ethtool.feature_active("vx0", f).unwrap(), Some(true));
            let cross_check = ethtool_says(f);
            if cross_check.is_none() {
                eprintln!("ethtool is not installed: cross-check skipped");
            }
            assert!(matches!(cross_check.as_deref(), None | Some("on")));

            ethtool.set_feature("vx0", f, false).unwrap();
            assert_eq!(ethtool.feature_active("vx0", f).unwrap(), Some(false));
            assert!(matches!(ethtool_says(f).as_deref(), None | Some("off")));
            // Only that feature changed: the device still checksums what it receives.
            assert_eq!(
                ethtool.feature_active("vx0", "rx-checksum").unwrap(),
                Some(true)
            );

            ethtool.set_feature("vx0", f, true).unwrap();
            assert_eq!(ethtool.feature_active("vx0", f).unwrap(), Some(true));
            assert!(matches!(ethtool_says(f).as_deref(), None | Some("on")));

            assert_eq!(
                ethtool.feature_active("vx0", "no-such-feature").unwrap(),
                None
            );
            let e = ethtool
                .set_feature("vx0", "no-such-feature", false)
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(EOPNOTSUPP), "{e}");
            // Off and fixed on a VXLAN device: the kernel ACKs and keeps it off.
            let e = ethtool
                .set_feature("vx0", "tx-checksum-ipv4", true)
                .unwrap_err();
            let unchanged = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<FeatureUnchanged>());
            assert!(matches!(unchanged, Some(u) if u.fixed && u.wanted), "{e}");
            let e = ethtool.set_feature("nope0", f, false).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(ENODEV), "{e}");
            let e = ethtool.feature_active("nope0", f).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(ENODEV), "{e}");
        });
    }
}
