//! The VTEP data of a vxlan lease (`BackendData`/`BackendV6Data`: `{"VNI":1,"VtepMAC":"..."}`),
//! as Go writes it and as a peer's is checked before any backend programs it. Part of the
//! lease's wire format, shared by the peer checks, the vxlan backend and the kube subnet
//! manager (which reads the node's own VtepMAC back from its annotation).

use serde::Deserialize;
use serde_json::Value;

/// The vxlan backend's `BackendType`.
pub const VXLAN: &str = "vxlan";

/// A random locally administered unicast MAC (Go's `pkg/mac`), chosen before the device is
/// created so that no udev/systemd MACAddressPolicy changes it afterwards.
pub fn random_mac() -> [u8; 6] {
    use std::io::Read;
    let mut mac = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac));
    if read.is_err() {
        let mut pick = crate::subnet::Pick::seeded();
        for b in &mut mac {
            *b = (pick.below(256) & 0xff) as u8;
        }
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// A MAC as Go's `net.HardwareAddr.String()` writes it.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Refuses a peer's VtepMAC that is not another node's unicast MAC: the all-zero MAC is the
/// VXLAN FDB's default entry (every unknown destination flooded to that peer), a multicast
/// or broadcast one cannot be a neighbour's address, and ours would loop. Go takes any.
pub fn check_vtep_mac(mac: &[u8; 6], own: &[u8; 6]) -> Result<(), String> {
    if *mac == [0; 6] {
        return Err(
            "VtepMAC 00:00:00:00:00:00 is the all-zero MAC (the FDB's default entry)".into(),
        );
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "VtepMAC {} is a multicast/broadcast MAC",
            mac_string(mac)
        ));
    }
    if mac == own {
        return Err(format!("VtepMAC {} is this node's own", mac_string(mac)));
    }
    Ok(())
}

/// A peer's `BackendData` (or `BackendV6Data`, named by `field`) decoded: its VNI and a
/// VTEP MAC that passes [`check_vtep_mac`] against `own`. The one reading of it, for the
/// check before the backend ([`check_peer_data`]), for programming (the vxlan backend) and
/// for the MAC a kube node stored.
pub fn decode_vtep(
    data: Option<&Value>,
    field: &str,
    own: &[u8; 6],
) -> Result<(i64, [u8; 6]), String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Data {
        #[serde(rename = "VNI")]
        vni: i64,
        #[serde(rename = "VtepMAC")]
        vtep_mac: String,
    }
    let data = data.ok_or_else(|| format!("no {field}"))?;
    if !data.is_object() {
        return Err(format!(
            "{field} {} is not an object",
            crate::log::bounded(&data.to_string())
        ));
    }
    let d: Data = cni_common::gojson::from_value(data)
        .map_err(|e| format!("{field}: {}", crate::log::bounded(&e.to_string())))?;
    let mac = parse_mac(&d.vtep_mac.to_ascii_lowercase()).ok_or_else(|| {
        format!(
            "VtepMAC {} is not a MAC address",
            crate::log::shown(&d.vtep_mac)
        )
    })?;
    check_vtep_mac(&mac, own)?;
    Ok((d.vni, mac))
}

/// Whether a peer lease's `field` (`BackendData`, or `BackendV6Data` in an IPv6-only
/// network) is one this backend can program (an object with a `VtepMAC` that passes
/// [`check_vtep_mac`] against `own_mac`); checked before the lease reaches the backend
/// (`crate::peer`), so a bad one is never handed to it.
pub fn check_peer_data(
    data: Option<&Value>,
    field: &str,
    own_mac: Option<&str>,
) -> Result<(), String> {
    let own = own_mac
        .and_then(|m| parse_mac(&m.to_ascii_lowercase()))
        .unwrap_or([0; 6]);
    decode_vtep(data, field, &own).map(|_| ())
}
