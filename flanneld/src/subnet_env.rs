//! `subnet.env` as Go flanneld writes it (`WriteSubnetFile` in `pkg/subnet/subnet.go`) and
//! reads it back at start (`-subnet-file`'s previous `FLANNEL_SUBNET`/`FLANNEL_IPV6_SUBNET`).

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::config::NetworkConfig;
use crate::subnet::SubnetKey;

/// The file's text: `FLANNEL_NETWORK`/`FLANNEL_SUBNET` when IPv4 is on, the IPv6 pair when
/// IPv6 is on, then `FLANNEL_MTU` and `FLANNEL_IPMASQ` (Go's `%t`); the subnets with their
/// first address (`.1`), every line `\n`-terminated.
pub fn render(config: &NetworkConfig, ip_masq: bool, subnet: &SubnetKey, mtu: u32) -> String {
    let mut s = String::new();
    if let (Some(v4), Some(sn4)) = (&config.v4, subnet.v4) {
        let first = Ipv4Addr::from(u32::from(sn4.ip()).wrapping_add(1));
        s += &format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={first}/{}\n",
            v4.network,
            sn4.prefix()
        );
    }
    if let (Some(v6), Some(sn6)) = (&config.v6, subnet.v6) {
        let first = Ipv6Addr::from(u128::from(sn6.ip()).wrapping_add(1));
        s += &format!(
            "FLANNEL_IPV6_NETWORK={}\nFLANNEL_IPV6_SUBNET={first}/{}\n",
            v6.network,
            sn6.prefix()
        );
    }
    s += &format!("FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n");
    s
}

/// Writes `bytes` at `path` atomically, mode 0644 ([`crate::files::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::files::write_atomic(path, bytes, 0o644)
}

/// The subnets a previous run wrote ([`cni_common::subnet_env::previous_subnets`]); a
/// missing or unreadable file gives none.
pub fn previous(path: &Path) -> (Option<Ipv4Network>, Option<Ipv6Network>) {
    match fs::read_to_string(path) {
        Ok(text) => cni_common::subnet_env::previous_subnets(&text),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn bytes_as_go_writes_them() {
        let c = NetworkConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .unwrap();
        let sn = SubnetKey::parse("10.5.72.0-24").unwrap();
        assert_eq!(
            render(&c, false, &sn, 1450),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        let c = NetworkConfig::parse(
            br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:cafe:42::/56"}"#,
        )
        .unwrap();
        let sn = SubnetKey::parse("10.5.72.0-24&2001:cafe:42::-64").unwrap();
        assert_eq!(
            render(&c, true, &sn, 1500),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n\
             FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"
        );
    }

    #[test]
    fn atomic_write_0644_and_previous_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        write_atomic(&path, b"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\n").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
        let (v4, v6) = previous(&path);
        assert_eq!(v4.unwrap().to_string(), "10.5.72.0/24");
        assert_eq!(v6.unwrap().to_string(), "fc00:0:0:5::/64");
        fs::write(&path, "FLANNEL_SUBNET=\"10.5.9.1/24\"\n").unwrap();
        assert_eq!(previous(&path).0.unwrap().to_string(), "10.5.9.0/24");
        fs::write(&path, "FLANNEL_SUBNET=10.5.9.1/24,10.6.9.1/24\n").unwrap();
        assert_eq!(previous(&path), (None, None));
        assert_eq!(previous(&dir.path().join("none")), (None, None));
    }
}
