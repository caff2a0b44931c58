//! `address`/`dst` fields: CIDR notation with the host part kept (`10.1.2.3/24`).
//! A bare IP is rejected, as Go's parser does, instead of being read as a /32.

use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(net: &IpNetwork, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(net)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

pub fn parse(s: &str) -> Result<IpNetwork, String> {
    if !s.contains('/') {
        return Err(format!("invalid CIDR address: {s}"));
    }
    IpNetwork::from_str(s).map_err(|e| format!("invalid CIDR address: {s}: {e}"))
}
