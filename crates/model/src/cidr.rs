//! IP addresses and networks as Calico writes them, with serde helpers.
//!
//! Calico accepts "an IP or a CIDR" almost everywhere a network is expected; a bare address means
//! the full-length prefix (/32 or /128). These helpers parse that form into [`ipnet::IpNet`]
//! (keeping any host bits, so validation can tell the user about them) and always serialise the
//! CIDR form.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// Parses `"10.0.0.0/24"`, `"10.0.0.1"` (= /32) or IPv6 equivalents. Host bits are kept.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if t.contains('/') {
        t.parse::<IpNet>().map_err(|_| {
            format!("{s:?} is not a valid CIDR (valid: e.g. 10.0.0.0/24, 10.0.0.1 or fd00::/64)")
        })
    } else {
        t.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{s:?} is not a valid IP address or CIDR (valid: e.g. 10.0.0.0/24, 10.0.0.1 or fd00::/64)"
            )
        })
    }
}

/// Parses a single IP address.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address (valid: e.g. 10.0.0.1 or fd00::1)"))
}

/// Whether the network has no host bits set (10.0.0.0/24, not 10.0.0.1/24).
pub fn is_masked(n: &IpNet) -> bool {
    n.trunc() == *n
}

/// Whether the network is the IPv4 or IPv6 catch-all (`0.0.0.0/0`, `::/0`).
pub fn is_catch_all(n: &IpNet) -> bool {
    n.prefix_len() == 0
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

struct NetVisitor;

impl Visitor<'_> for NetVisitor {
    type Value = IpNet;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP address or CIDR string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<IpNet, E> {
        parse_net(s).map_err(E::custom)
    }
}

struct IpVisitor;

impl Visitor<'_> for IpVisitor {
    type Value = IpAddr;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP address string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<IpAddr, E> {
        parse_ip(s).map_err(E::custom)
    }
}

/// A network deserialised with [`parse_net`]; used inside sequence helpers so that each element
/// keeps its index in error paths.
struct NetDe(IpNet);

impl<'de> Deserialize<'de> for NetDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(NetVisitor).map(NetDe)
    }
}

struct IpDe(IpAddr);

impl<'de> Deserialize<'de> for IpDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(IpVisitor).map(IpDe)
    }
}

/// Serde helpers for `IpNet` fields.
pub mod net {
    use super::*;

    /// Serialises the CIDR form.
    pub fn serialize<S: Serializer>(n: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    /// Deserialises an IP or CIDR.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        d.deserialize_str(NetVisitor)
    }
}

/// Serde helpers for `Option<IpNet>` fields.
pub mod net_opt {
    use super::*;

    /// Serialises the CIDR form.
    pub fn serialize<S: Serializer>(n: &Option<IpNet>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => s.collect_str(n),
            None => s.serialize_none(),
        }
    }

    /// Deserialises an IP or CIDR.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
        Option::<NetDe>::deserialize(d).map(|o| o.map(|n| n.0))
    }
}

/// Serde helpers for `Vec<IpNet>` fields.
pub mod nets {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Serialises each network in CIDR form.
    pub fn serialize<S: Serializer>(v: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for n in v {
            seq.serialize_element(&n.to_string())?;
        }
        seq.end()
    }

    /// Deserialises a list of IPs or CIDRs.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<NetDe>::deserialize(d).map(|v| v.into_iter().map(|n| n.0).collect())
    }
}

/// Serde helpers for `Option<IpAddr>` fields.
pub mod ip_opt {
    use super::*;

    /// Serialises the address.
    pub fn serialize<S: Serializer>(n: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => s.collect_str(n),
            None => s.serialize_none(),
        }
    }

    /// Deserialises an address.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        Option::<IpDe>::deserialize(d).map(|o| o.map(|n| n.0))
    }
}

/// Serde helpers for `Vec<IpAddr>` fields.
pub mod ips {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Serialises each address.
    pub fn serialize<S: Serializer>(v: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for n in v {
            seq.serialize_element(&n.to_string())?;
        }
        seq.end()
    }

    /// Deserialises a list of addresses.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
        Vec::<IpDe>::deserialize(d).map(|v| v.into_iter().map(|n| n.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(parse_net("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net("fd00::1").unwrap().to_string(), "fd00::1/128");
        let n = parse_net("10.0.20.64/25").unwrap();
        assert!(!is_masked(&n));
        assert_eq!(n.trunc().to_string(), "10.0.20.0/25");
        assert!(parse_net("10.0.0.300").is_err());
        assert!(parse_net("10.0.0.0/33").is_err());
    }

    #[test]
    fn overlap() {
        let a = parse_net("169.254.0.0/16").unwrap();
        assert!(overlaps(&a, &parse_net("169.0.0.0/8").unwrap()));
        assert!(overlaps(&a, &parse_net("169.254.3.0/24").unwrap()));
        assert!(!overlaps(&a, &parse_net("10.0.0.0/8").unwrap()));
    }
}
