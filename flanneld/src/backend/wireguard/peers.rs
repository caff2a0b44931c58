//! A peer lease read as a WireGuard peer, Go's way: the public key and port from
//! `BackendData` (`BackendV6Data` for IPv6), the endpoint from `PublicIP` (or `PublicIPv6`),
//! the peer's subnet(s) as allowed IPs. Which of them a device takes depends on the mode.

use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use node_kernel::wireguard::WgPeer;
use serde::Deserialize;
use serde_json::Value;

use super::keys::Key;
use crate::iface::ExternalInterface;
use crate::lease::Lease;

/// The `Mode` key: how the families share devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One device per family (`flannel-wg`, `flannel-wg-v6`), each with its own port.
    Separate,
    /// One device for both; each peer reached over the family likelier to connect.
    Auto,
    /// One device for both, peers reached over IPv4.
    Ipv4,
    /// One device for both, peers reached over IPv6.
    Ipv6,
}

impl Mode {
    /// Go's values, compared as Go compares them (exactly).
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "separate" => Some(Mode::Separate),
            "auto" => Some(Mode::Auto),
            "ipv4" => Some(Mode::Ipv4),
            "ipv6" => Some(Mode::Ipv6),
            _ => None,
        }
    }
}

/// What a device takes of a lease.
#[derive(Debug)]
pub struct Spec<'a> {
    /// The device carries IPv4 subnets.
    pub v4: bool,
    /// The device carries IPv6 subnets.
    pub v6: bool,
    /// The device is `separate` mode's IPv6 one (key and port from `BackendV6Data`).
    pub separate_v6: bool,
    /// The mode.
    pub mode: Mode,
    /// The device's own port: a lease without `Port` (older Go flannel) means the same.
    pub own_port: u16,
    /// The node's external interface (auto mode's choice).
    pub ext: &'a ExternalInterface,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Data {
    #[serde(rename = "PublicKey")]
    public_key: String,
    #[serde(rename = "Port")]
    port: u16,
}

fn data(v: Option<&Value>, field: &str) -> Result<Option<(Key, u16)>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let d: Data = cni_common::gojson::from_value(v)
        .map_err(|e| format!("{field}: {}", crate::log::bounded(&e.to_string())))?;
    let key = Key::parse(&d.public_key).map_err(|e| format!("{field}.PublicKey: {e}"))?;
    Ok(Some((key, d.port)))
}

/// The peer device `spec` gets from `lease`; `None` when the lease has nothing for it.
pub fn peer_of(lease: &Lease, spec: &Spec<'_>) -> Result<Option<WgPeer>, String> {
    let a = &lease.attrs;
    let v4 = data(a.backend_data.as_ref(), "BackendData")?;
    let v6 = data(a.backend_v6_data.as_ref(), "BackendV6Data")?;
    let port = |p: u16| if p == 0 { spec.own_port } else { p };
    let endpoint4 =
        |d: Option<(Key, u16)>| d.map(|(_, p)| SocketAddr::new(IpAddr::V4(a.public_ip), port(p)));
    let endpoint6 =
        |d: Option<(Key, u16)>| Some(SocketAddr::new(IpAddr::V6(a.public_ipv6?), port(d?.1)));
    if spec.mode == Mode::Separate {
        let (subnet, d, endpoint) = if spec.separate_v6 {
            let Some(sn) = lease.subnet.v6 else {
                return Ok(None);
            };
            let e = endpoint6(v6).ok_or("no PublicIPv6 or BackendV6Data for its IPv6 subnet")?;
            (IpNetwork::V6(sn), v6, e)
        } else {
            let Some(sn) = lease.subnet.v4 else {
                return Ok(None);
            };
            let e = endpoint4(v4).ok_or("no BackendData")?;
            (IpNetwork::V4(sn), v4, e)
        };
        let Some((key, _)) = d else {
            return Ok(None);
        };
        return Ok(Some(WgPeer::new(key.0, Some(endpoint), vec![subnet])));
    }
    let mut subnets = Vec::new();
    if spec.v4
        && let Some(sn) = lease.subnet.v4
    {
        subnets.push(IpNetwork::V4(sn));
    }
    if spec.v6
        && let Some(sn) = lease.subnet.v6
    {
        subnets.push(IpNetwork::V6(sn));
    }
    if subnets.is_empty() {
        return Ok(None);
    }
    // Go takes the IPv6 data's key when the lease has IPv6 (both carry the node's one key).
    let with_v6 = spec.v6 && lease.subnet.v6.is_some();
    let (key, _) =
        if with_v6 { v6.or(v4) } else { v4.or(v6) }.ok_or("no BackendData with a PublicKey")?;
    let over_v6 = match spec.mode {
        Mode::Ipv6 => true,
        Mode::Auto => select_v6(lease, spec.ext),
        _ => false,
    };
    let endpoint = if over_v6 {
        endpoint6(v6.or(v4)).ok_or("no PublicIPv6 to reach it over IPv6")?
    } else {
        endpoint4(v4.or(v6)).ok_or("no BackendData")?
    };
    Ok(Some(WgPeer::new(key.0, Some(endpoint), subnets)))
}

/// Go's `selectMode`: IPv4 when the peer has no IPv6 address, or a public IPv4 one; IPv6
/// when both ends have public (not unique-local) IPv6 addresses; else IPv4.
fn select_v6(lease: &Lease, ext: &ExternalInterface) -> bool {
    let Some(ip6) = lease.attrs.public_ipv6 else {
        return false;
    };
    if !lease.attrs.public_ip.is_private() {
        return false;
    }
    !ip6.is_unique_local() && ext.public_ipv6.is_some_and(|own| !own.is_unique_local())
}
