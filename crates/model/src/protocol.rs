//! IP protocols as Calico's v3 API spells them: a case-sensitive name or a number 1-255.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The valid protocol spellings, for error messages.
pub const PROTOCOL_VALID: &str = "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255";

/// An IP protocol in a rule (`protocol`, `notProtocol`) or an endpoint port.
///
/// Names keep the form they were written in (`TCP` stays a name, `6` stays a number) so that a
/// resource serialises back exactly; [`Protocol::number`] gives the IANA number for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `TCP` (6).
    Tcp,
    /// `UDP` (17).
    Udp,
    /// `ICMP` (1).
    Icmp,
    /// `ICMPv6` (58).
    IcmpV6,
    /// `SCTP` (132).
    Sctp,
    /// `UDPLite` (136).
    UdpLite,
    /// A protocol given by number, 1-255.
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::IcmpV6 => 58,
            Protocol::Sctp => 132,
            Protocol::UdpLite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// The protocol name if this is one of the named protocols.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Tcp => Some("TCP"),
            Protocol::Udp => Some("UDP"),
            Protocol::Icmp => Some("ICMP"),
            Protocol::IcmpV6 => Some("ICMPv6"),
            Protocol::Sctp => Some("SCTP"),
            Protocol::UdpLite => Some("UDPLite"),
            Protocol::Number(_) => None,
        }
    }

    /// Whether rules with this protocol may match on ports (TCP, UDP and SCTP, by name or number).
    pub fn supports_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132)
    }

    /// Whether this is ICMP (by name or as number 1).
    pub fn is_icmp(self) -> bool {
        self.number() == 1
    }

    /// Whether this is ICMPv6 (by name or as number 58).
    pub fn is_icmpv6(self) -> bool {
        self.number() == 58
    }

    /// Parses a v3 protocol: an exact (case-sensitive) name or a decimal number 1-255.
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "TCP" => return Ok(Protocol::Tcp),
            "UDP" => return Ok(Protocol::Udp),
            "ICMP" => return Ok(Protocol::Icmp),
            "ICMPv6" => return Ok(Protocol::IcmpV6),
            "SCTP" => return Ok(Protocol::Sctp),
            "UDPLite" => return Ok(Protocol::UdpLite),
            _ => {}
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u64>() {
                Ok(n) => Protocol::from_number(n),
                Err(_) => Err(invalid(s)),
            };
        }
        Err(invalid(s))
    }

    /// Parses a protocol case-insensitively (the legacy v1 and Kubernetes spellings `tcp`, `udp`...).
    pub fn parse_any_case(s: &str) -> Result<Protocol, String> {
        for p in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Icmp,
            Protocol::IcmpV6,
            Protocol::Sctp,
            Protocol::UdpLite,
        ] {
            if p.name().is_some_and(|n| n.eq_ignore_ascii_case(s)) {
                return Ok(p);
            }
        }
        Protocol::parse(s)
    }

    /// A protocol from its number; 0 and values above 255 are rejected as Calico does.
    pub fn from_number(n: u64) -> Result<Protocol, String> {
        match u8::try_from(n) {
            Ok(0) | Err(_) => Err(format!(
                "protocol number {n} is out of range (valid: {PROTOCOL_VALID})"
            )),
            Ok(n) => Ok(Protocol::Number(n)),
        }
    }
}

fn invalid(s: &str) -> String {
    let mut msg = format!("{s:?} is not a valid protocol (valid: {PROTOCOL_VALID})");
    let names = ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"];
    if let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(s)) {
        msg.push_str(&format!("; names are case-sensitive, did you mean {name}?"));
    }
    msg
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.number()),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            p => s.serialize_str(p.name().unwrap_or_default()),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a protocol ({PROTOCOL_VALID})")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Protocol, E> {
                Protocol::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Protocol, E> {
                Protocol::from_number(n).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Protocol, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "protocol number {n} is out of range (valid: {PROTOCOL_VALID})"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Protocol, E> {
                Err(E::custom(format!(
                    "{n} is not a valid protocol (valid: {PROTOCOL_VALID})"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<Protocol, ()>)] = &[
            ("TCP", Ok(Protocol::Tcp)),
            ("UDPLite", Ok(Protocol::UdpLite)),
            ("ICMPv6", Ok(Protocol::IcmpV6)),
            ("6", Ok(Protocol::Number(6))),
            ("255", Ok(Protocol::Number(255))),
            ("0", Err(())),
            ("256", Err(())),
            ("tcp", Err(())),
            ("tcpx", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(Protocol::parse(input).map_err(|_| ()), *want, "{input}");
        }
    }

    #[test]
    fn case_hint() {
        let e = Protocol::parse("tcp").unwrap_err();
        assert!(e.contains("did you mean TCP"), "{e}");
    }

    #[test]
    fn number_semantics() {
        assert!(Protocol::Number(6).supports_ports());
        assert!(Protocol::Sctp.supports_ports());
        assert!(!Protocol::Icmp.supports_ports());
        assert!(Protocol::Number(58).is_icmpv6());
    }
}
