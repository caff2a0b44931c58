//! The sysctls the bridge reads and writes, typed: each key is built in one place.

use std::fmt;

/// One sysctl of a network namespace, per interface where it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sysctl<'a> {
    /// `net/ipv6/conf/<dev>/accept_ra`: router advertisements configure the interface.
    AcceptRa(&'a str),
    /// `net/ipv6/conf/<dev>/accept_dad`: duplicate address detection.
    AcceptDad(&'a str),
    /// `net/ipv6/conf/<dev>/enhanced_dad`: DAD with a nonce (RFC 7527).
    EnhancedDad(&'a str),
    /// `net/ipv6/conf/<dev>/disable_ipv6`.
    DisableIpv6(&'a str),
    /// `net/ipv6/conf/<dev>/keep_addr_on_down`.
    KeepAddrOnDown(&'a str),
    /// `net/ipv4/conf/<dev>/arp_notify`: gratuitous ARP when the link comes up.
    ArpNotify(&'a str),
    /// `net/ipv4/ip_forward`.
    Ipv4Forward,
    /// `net/ipv6/conf/all/forwarding`.
    Ipv6Forwarding,
}

impl Sysctl<'_> {
    /// Forwarding of one family.
    pub fn forwarding(v4: bool) -> Sysctl<'static> {
        if v4 {
            Sysctl::Ipv4Forward
        } else {
            Sysctl::Ipv6Forwarding
        }
    }

    /// The key below `/proc/sys`, `/`-separated.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Sysctl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (family, dev, knob) = match *self {
            Sysctl::AcceptRa(dev) => ("ipv6", dev, "accept_ra"),
            Sysctl::AcceptDad(dev) => ("ipv6", dev, "accept_dad"),
            Sysctl::EnhancedDad(dev) => ("ipv6", dev, "enhanced_dad"),
            Sysctl::DisableIpv6(dev) => ("ipv6", dev, "disable_ipv6"),
            Sysctl::KeepAddrOnDown(dev) => ("ipv6", dev, "keep_addr_on_down"),
            Sysctl::ArpNotify(dev) => ("ipv4", dev, "arp_notify"),
            Sysctl::Ipv4Forward => return f.write_str("net/ipv4/ip_forward"),
            Sysctl::Ipv6Forwarding => return f.write_str("net/ipv6/conf/all/forwarding"),
        };
        write!(f, "net/{family}/conf/{dev}/{knob}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            Sysctl::AcceptRa("cni0").key(),
            "net/ipv6/conf/cni0/accept_ra"
        );
        assert_eq!(
            Sysctl::ArpNotify("eth0").key(),
            "net/ipv4/conf/eth0/arp_notify"
        );
        assert_eq!(Sysctl::forwarding(true).key(), "net/ipv4/ip_forward");
        assert_eq!(
            Sysctl::forwarding(false).key(),
            "net/ipv6/conf/all/forwarding"
        );
    }
}
