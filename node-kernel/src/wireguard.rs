//! Kernel WireGuard devices through their generic netlink family (`wireguard`, the API `wg(8)`
//! and Go's wgctrl speak): a device's key, port and peers set (`WG_CMD_SET_DEVICE`) and read
//! back (`WG_CMD_GET_DEVICE`). The messages are netlink-packet-wireguard's; the device itself
//! is a link of kind `wireguard` ([`crate::link::wireguard`]). A kernel without the module
//! has no such family: nlctrl answers `ENOENT`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnetwork::IpNetwork;
use netlink_packet_core::{DecodeError, Emitable, Parseable, ParseableParametrized};
use netlink_packet_generic::{GenlHeader, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};

use crate::socket::{Socket, Wireguard};
use crate::transport::Transport;

/// A WireGuard key (private, public or preshared): 32 bytes.
pub type Key = [u8; 32];

/// A peer as configured or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// Its public key.
    pub public_key: Key,
    /// The preshared key mixed into its handshakes, if any.
    pub preshared_key: Option<Key>,
    /// Where its packets go (and last came from).
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds; 0 is off.
    pub keepalive: u16,
    /// The networks routed to it (and accepted from it).
    pub allowed_ips: Vec<IpNetwork>,
    /// Time since the epoch of its last handshake (read back only; `None` never).
    pub last_handshake: Option<Duration>,
}

impl WgPeer {
    /// A peer to configure (nothing read back).
    pub fn new(public_key: Key, endpoint: Option<SocketAddr>, allowed_ips: Vec<IpNetwork>) -> Self {
        WgPeer {
            public_key,
            preshared_key: None,
            endpoint,
            keepalive: 0,
            allowed_ips,
            last_handshake: None,
        }
    }

    /// Whether `have` (read back from a device) is configured as this wanted peer: key,
    /// preshared key, endpoint, keepalive and the same allowed IPs in any order.
    pub fn is_met_by(&self, have: &WgPeer) -> bool {
        let sorted = |v: &[IpNetwork]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        self.public_key == have.public_key
            && self.preshared_key.unwrap_or_default() == have.preshared_key.unwrap_or_default()
            && self.endpoint == have.endpoint
            && self.keepalive == have.keepalive
            && sorted(&self.allowed_ips) == sorted(&have.allowed_ips)
    }
}

/// A device's configuration as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgDevice {
    /// Its public key, if a private key is set.
    pub public_key: Option<Key>,
    /// Its UDP port (0: none yet).
    pub listen_port: u16,
    /// Its peers.
    pub peers: Vec<WgPeer>,
}

/// One change to a device's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Adds the peer or updates it in place, its allowed IPs replaced by these.
    Set(WgPeer),
    /// Removes the peer with this public key (absent is no error).
    Remove(Key),
}

/// The device settings of one `WG_CMD_SET_DEVICE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSettings {
    /// The private key to set.
    pub private_key: Option<Key>,
    /// The UDP port to listen on.
    pub listen_port: Option<u16>,
    /// Removes every peer not named in this change.
    pub replace_peers: bool,
}

/// The message `wg` sends to change a device: its settings and the peer changes, in order.
pub fn set_message(
    ifname: &str,
    settings: &DeviceSettings,
    peers: &[PeerChange],
) -> WireguardMessage {
    let mut attributes = vec![WireguardAttribute::IfName(ifname.to_owned())];
    if let Some(key) = settings.private_key {
        attributes.push(WireguardAttribute::PrivateKey(key));
    }
    if let Some(port) = settings.listen_port {
        attributes.push(WireguardAttribute::ListenPort(port));
    }
    if settings.replace_peers {
        attributes.push(WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers,
        ));
    }
    if !peers.is_empty() {
        attributes.push(WireguardAttribute::Peers(
            peers.iter().map(peer_attributes).collect(),
        ));
    }
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes,
    }
}

fn peer_attributes(change: &PeerChange) -> WireguardPeer {
    let p = match change {
        PeerChange::Remove(key) => {
            return WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]);
        }
        PeerChange::Set(p) => p,
    };
    let mut attrs = vec![
        WireguardPeerAttribute::PublicKey(p.public_key),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        // Zero clears a key set before (the kernel's rule), so a PSK taken out of the
        // config goes.
        WireguardPeerAttribute::PresharedKey(p.preshared_key.unwrap_or_default()),
        WireguardPeerAttribute::PersistentKeepalive(p.keepalive),
    ];
    if let Some(endpoint) = p.endpoint {
        attrs.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    let ips = p
        .allowed_ips
        .iter()
        .map(|net| {
            let family = match net.ip() {
                IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
            };
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(family),
                WireguardAllowedIpAttr::IpAddr(net.network()),
                WireguardAllowedIpAttr::Cidr(net.prefix()),
            ])
        })
        .collect();
    attrs.push(WireguardPeerAttribute::AllowedIps(ips));
    WireguardPeer(attrs)
}

/// The message `wg show` sends (with `NLM_F_DUMP`) to read a device.
pub fn get_message(ifname: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(ifname.to_owned())],
    }
}

/// One message of the kernel's answer to `WG_CMD_GET_DEVICE` (a device with many peers
/// comes in several, each carrying the next peers).
#[derive(Debug)]
struct DeviceReply(WireguardMessage);

impl Parseable<[u8]> for DeviceReply {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let header = GenlHeader::parse(buf)?;
        let rest = buf
            .get(header.buffer_len()..)
            .ok_or_else(|| DecodeError::buffer_too_small(buf.len(), header.buffer_len()))?;
        WireguardMessage::parse_with_param(rest, header).map(DeviceReply)
    }
}

/// The peers and settings of the answer's messages, merged.
fn device_of(replies: Vec<DeviceReply>) -> WgDevice {
    let mut dev = WgDevice::default();
    for DeviceReply(msg) in replies {
        for attr in msg.attributes {
            match attr {
                WireguardAttribute::PublicKey(k) => dev.public_key = Some(k),
                WireguardAttribute::ListenPort(p) => dev.listen_port = p,
                WireguardAttribute::Peers(peers) => {
                    for WireguardPeer(attrs) in peers {
                        merge_peer(&mut dev.peers, attrs);
                    }
                }
                _ => {}
            }
        }
    }
    dev
}

/// Adds a peer read back, or (a peer continued from the previous message: the same key
/// again) its further allowed IPs.
fn merge_peer(peers: &mut Vec<WgPeer>, attrs: Vec<WireguardPeerAttribute>) {
    let Some(key) = attrs.iter().find_map(|a| match a {
        WireguardPeerAttribute::PublicKey(k) => Some(*k),
        _ => None,
    }) else {
        return;
    };
    if peers.last().is_none_or(|p| p.public_key != key) {
        peers.push(WgPeer::new(key, None, Vec::new()));
    }
    let Some(peer) = peers.last_mut() else {
        return;
    };
    for a in attrs {
        match a {
            WireguardPeerAttribute::PresharedKey(k) => {
                peer.preshared_key = (k != Key::default()).then_some(k)
            }
            WireguardPeerAttribute::Endpoint(e) => peer.endpoint = Some(e),
            WireguardPeerAttribute::PersistentKeepalive(k) => peer.keepalive = k,
            WireguardPeerAttribute::LastHandshake(t) => {
                let secs = u64::try_from(t.seconds).unwrap_or(0);
                let nanos = u32::try_from(t.nano_seconds).unwrap_or(0);
                let since = Duration::new(secs, nanos);
                peer.last_handshake = (!since.is_zero()).then_some(since);
            }
            WireguardPeerAttribute::AllowedIps(ips) => {
                peer.allowed_ips.extend(ips.iter().filter_map(allowed_ip));
            }
            _ => {}
        }
    }
}

fn allowed_ip(ip: &WireguardAllowedIp) -> Option<IpNetwork> {
    let addr = ip.0.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::IpAddr(a) => Some(*a),
        _ => None,
    })?;
    let cidr = ip.0.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::Cidr(c) => Some(*c),
        _ => None,
    })?;
    IpNetwork::new(addr, cidr).ok()
}

impl<T: Transport> Socket<Wireguard, T> {
    /// Changes the kernel device `ifname` (`ENODEV` when there is none): its settings, then
    /// the peer changes, one message each (a message is bounded by the socket's buffer, and
    /// a peer's allowed IPs are few here).
    pub fn set_device(
        &self,
        ifname: &str,
        settings: &DeviceSettings,
        peers: &[PeerChange],
    ) -> io::Result<()> {
        let family = self.family_id()?;
        let first = GenlMessage::from_payload(set_message(ifname, settings, &[]));
        self.ack(family, 0, &first)?;
        for change in peers {
            let msg = set_message(
                ifname,
                &DeviceSettings::default(),
                std::slice::from_ref(change),
            );
            self.ack(family, 0, &GenlMessage::from_payload(msg))?;
        }
        Ok(())
    }

    /// The kernel device `ifname`'s public key, port and peers.
    pub fn device(&self, ifname: &str) -> io::Result<WgDevice> {
        let family = self.family_id()?;
        let query = GenlMessage::from_payload(get_message(ifname));
        let replies: Vec<DeviceReply> = self.dump(family, family, &query)?;
        Ok(device_of(replies))
    }
}

#[cfg(test)]
mod tests;
