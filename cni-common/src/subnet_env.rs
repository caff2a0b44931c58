//! `subnet.env`, the file flanneld writes (`/run/flannel/subnet.env`): `KEY=VALUE` lines.
//! Its one reader, for everyone who reads it: the flannel plugin, as Go's plugin reads it
//! ([`parse`], strict: a bad line is an error naming it), flanneld, its own previous subnets
//! as Go flanneld reads them back ([`previous_subnets`], godotenv's leniency), and the tests.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// What the flannel plugin takes from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// The cluster networks (IPv4 then IPv6), masked, without duplicates.
    pub networks: Vec<IpNetwork>,
    pub subnet_v4: Option<IpNetwork>,
    pub subnet_v6: Option<IpNetwork>,
    pub mtu: u32,
    pub ip_masq: bool,
}

fn masked(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

fn cidr(line: usize, key: &str, value: &str) -> Result<IpNetwork, String> {
    value
        .parse::<IpNetwork>()
        .ok()
        .filter(|_| value.contains('/'))
        .map(masked)
        .ok_or_else(|| format!("line {line}: {key}={value} is not a CIDR"))
}

/// Parses the file's text; errors name the offending line.
pub fn parse(text: &str) -> Result<SubnetEnv, String> {
    let mut nets_v4: Vec<IpNetwork> = Vec::new();
    let mut nets_v6: Vec<IpNetwork> = Vec::new();
    let (mut have_v4_net, mut have_v6_net) = (false, false);
    let (mut subnet_v4, mut subnet_v6) = (None, None);
    let (mut mtu, mut ip_masq) = (None, None);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = raw.split_once('=') else {
            return Err(format!(
                "line {line}: expected KEY=VALUE, found \"{}\"",
                raw.escape_debug()
            ));
        };
        match key {
            "FLANNEL_NETWORK" | "FLANNEL_IPV6_NETWORK" => {
                let v6 = key == "FLANNEL_IPV6_NETWORK";
                let list = if v6 { &mut nets_v6 } else { &mut nets_v4 };
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let net = cidr(line, key, part)?;
                    if net.is_ipv6() != v6 {
                        return Err(format!("line {line}: {key}={part} is of the wrong family"));
                    }
                    if !list.contains(&net) {
                        list.push(net);
                    }
                }
                if v6 {
                    have_v6_net = true;
                } else {
                    have_v4_net = true;
                }
            }
            "FLANNEL_SUBNET" => subnet_v4 = Some(cidr(line, key, value)?),
            "FLANNEL_IPV6_SUBNET" => subnet_v6 = Some(cidr(line, key, value)?),
            "FLANNEL_MTU" => {
                mtu =
                    Some(value.parse::<u32>().map_err(|_| {
                        format!("line {line}: FLANNEL_MTU={value} is not a number")
                    })?);
            }
            "FLANNEL_IPMASQ" => ip_masq = Some(value == "true"),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    if !have_v4_net && !have_v6_net {
        missing.push("FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK");
    }
    if subnet_v4.is_none() && subnet_v6.is_none() {
        missing.push("FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET");
    }
    if mtu.is_none() {
        missing.push("FLANNEL_MTU");
    }
    if ip_masq.is_none() {
        missing.push("FLANNEL_IPMASQ");
    }
    if !missing.is_empty() {
        return Err(format!("is missing {}", missing.join(", ")));
    }
    nets_v4.extend(nets_v6);
    Ok(SubnetEnv {
        networks: nets_v4,
        subnet_v4,
        subnet_v6,
        mtu: mtu.unwrap_or_default(),
        ip_masq: ip_masq.unwrap_or_default(),
    })
}

/// The subnets a previous run of flanneld wrote (`FLANNEL_SUBNET`, `FLANNEL_IPV6_SUBNET`),
/// masked, read as Go flanneld reads them back (godotenv: optional quotes, `export `); a value
/// that is missing, unparsable or lists several subnets gives `None` for that family.
pub fn previous_subnets(text: &str) -> (Option<Ipv4Network>, Option<Ipv6Network>) {
    let (mut v4, mut v6) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        if v.contains(',') {
            continue;
        }
        match k.trim() {
            "FLANNEL_SUBNET" => {
                v4 = v
                    .parse::<Ipv4Network>()
                    .ok()
                    .and_then(|n| Ipv4Network::new(n.network(), n.prefix()).ok())
            }
            "FLANNEL_IPV6_SUBNET" => {
                v6 = v
                    .parse::<Ipv6Network>()
                    .ok()
                    .and_then(|n| Ipv6Network::new(n.network(), n.prefix()).ok())
            }
            _ => {}
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flanneld_output() {
        let env = parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(
            env.networks,
            ["10.244.0.0/16".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(env.subnet_v4, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(env.subnet_v6, None);
        assert_eq!((env.mtu, env.ip_masq), (1450, true));
    }

    #[test]
    fn dual_stack_lists_and_masking() {
        let env = parse(
            "FLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16,10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n\
             FLANNEL_IPV6_NETWORK=fd44::/56\nFLANNEL_IPV6_SUBNET=fd44:0:0:3::1/64\n\
             FLANNEL_MTU=1472\nFLANNEL_IPMASQ=True\n",
        )
        .unwrap();
        let nets: Vec<String> = env.networks.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.1.0.0/16", "10.2.0.0/16", "fd44::/56"]);
        assert_eq!(env.subnet_v6, Some("fd44:0:0:3::/64".parse().unwrap()));
        assert!(!env.ip_masq, "only the exact string true counts");
    }

    #[test]
    fn errors_name_the_line_or_the_missing_keys() {
        assert_eq!(
            parse("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=oops\n").unwrap_err(),
            "line 2: FLANNEL_SUBNET=oops is not a CIDR"
        );
        assert_eq!(
            parse("FLANNEL_MTU=x\n").unwrap_err(),
            "line 1: FLANNEL_MTU=x is not a number"
        );
        assert_eq!(
            parse("garbage\n").unwrap_err(),
            "line 1: expected KEY=VALUE, found \"garbage\""
        );
        assert_eq!(
            parse("FLANNEL_SUBNET=10.1.17.1/24\n").unwrap_err(),
            "is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_MTU, FLANNEL_IPMASQ"
        );
    }
}
