//! Felix (policy agent) configuration.
//!
//! The field list of [`FelixConfigurationSpec`] follows Calico's `FelixConfigurationSpec`
//! (projectcalico.org/v3) one for one: every field is optional, named exactly as Calico names it,
//! and unknown fields are rejected. The list and the value checks attached to each field (allowed
//! values, durations, numeric ranges) were transcribed mechanically from Calico's API schema and
//! live in `felix_fields.rs`; the checks run in validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::port::Port;

/// Felix configuration: `default` (cluster-wide) or `node.<nodename>` (per node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FelixConfiguration {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: FelixConfigurationSpec,
}

/// A failsafe port: traffic to/from it on host endpoints is never denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtoPort {
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The port.
    pub port: u16,
    /// Optional CIDR restricting the remote side.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub net: String,
}

/// A per-reporter health timeout override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    /// Reporter name.
    pub name: String,
    /// Timeout (duration).
    pub timeout: String,
}

/// A range of routing-table ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableRange {
    /// First table.
    pub min: i64,
    /// Last table.
    pub max: i64,
}

/// An integer or a string (for DSCP values such as `46` or `"EF"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// Integer form.
    Int(i64),
    /// String form.
    Str(String),
}

/// eBPF conntrack timeouts (each a duration or `Auto`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BpfConntrackTimeouts {
    /// Grace period for new flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_grace_period: Option<String>,
    /// SYN sent.
    #[serde(
        rename = "tcpSynSent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_syn_sent: Option<String>,
    /// Established.
    #[serde(
        rename = "tcpEstablished",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_established: Option<String>,
    /// FINs seen.
    #[serde(
        rename = "tcpFinsSeen",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_fins_seen: Option<String>,
    /// Reset seen.
    #[serde(
        rename = "tcpResetSeen",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_reset_seen: Option<String>,
    /// UDP.
    #[serde(
        rename = "udpTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_timeout: Option<String>,
    /// Other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_timeout: Option<String>,
    /// ICMP.
    #[serde(
        rename = "icmpTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_timeout: Option<String>,
}

/// A value check attached to a Felix field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// No check beyond the type.
    None,
    /// One of these strings, compared case-insensitively (Calico's `(?i)` patterns).
    OneOfCi(&'static [&'static str]),
    /// Exactly one of these strings.
    OneOf(&'static [&'static str]),
    /// A Go-style duration such as `90s`, `1m30s` or `500ms`.
    Duration,
    /// An integer in this inclusive range.
    Range(i64, i64),
}

/// Access to a field value for [`Check`]s.
pub(crate) trait CheckValue {
    fn check_str(&self) -> Option<&str> {
        None
    }
    fn check_int(&self) -> Option<i64> {
        None
    }
}

impl CheckValue for String {
    fn check_str(&self) -> Option<&str> {
        Some(self)
    }
}
impl CheckValue for i64 {
    fn check_int(&self) -> Option<i64> {
        Some(*self)
    }
}
impl CheckValue for u16 {
    fn check_int(&self) -> Option<i64> {
        Some(i64::from(*self))
    }
}
impl CheckValue for bool {}
impl CheckValue for Port {}
impl<T> CheckValue for Vec<T> {}
impl CheckValue for BTreeMap<String, String> {}
impl CheckValue for RouteTableRange {}
impl CheckValue for IntOrString {}
impl CheckValue for BpfConntrackTimeouts {}

impl Check {
    /// Checks one value; returns the problem as "what is wrong and what is valid".
    pub(crate) fn apply(self, v: &dyn CheckValue) -> Option<String> {
        match self {
            Check::None => None,
            Check::OneOfCi(all) | Check::OneOf(all) => {
                let s = v.check_str()?;
                let ci = matches!(self, Check::OneOfCi(_));
                let ok = s.is_empty()
                    || all.iter().any(|a| {
                        if ci {
                            a.eq_ignore_ascii_case(s)
                        } else {
                            *a == s
                        }
                    });
                (!ok).then(|| format!("{s:?} is not valid (valid: {})", all.join(", ")))
            }
            Check::Duration => {
                let s = v.check_str()?;
                (!is_duration(s)).then(|| {
                    format!("{s:?} is not a valid duration (valid: e.g. 90s, 1m30s, 500ms, 1h)")
                })
            }
            Check::Range(lo, hi) => {
                let n = v.check_int()?;
                (!(lo..=hi).contains(&n)).then(|| {
                    if hi == i64::MAX {
                        format!("{n} is out of range (valid: {lo} or more)")
                    } else {
                        format!("{n} is out of range (valid: {lo}-{hi})")
                    }
                })
            }
        }
    }
}

/// Whether `s` is a Go duration: one or more `<number><unit>` groups, units ns, us, µs, ms, s, m, h
/// (`0` alone is also accepted, as Go does).
pub fn is_duration(s: &str) -> bool {
    parse_duration(s).is_some()
}

/// Parses a Go duration (`90s`, `1m30s`, `500ms`, `0`); negative durations are `None`, as
/// are malformed ones.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let negative = s.starts_with('-');
    let mut rest = s.strip_prefix(['+', '-']).unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let (unit, seconds) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("μs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .filter(|(u, _)| rest.starts_with(u))
        .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];
        total += value * seconds;
    }
    if negative && total > 0.0 {
        // Validation accepts a sign (Go does); a negative interval means nothing here.
        return Some(std::time::Duration::ZERO);
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

macro_rules! felix_spec {
    ( $( $field:ident : $ty:ty = $json:literal => $check:expr , )* ) => {
        /// Felix settings; see the module documentation.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FelixConfigurationSpec {
            $(
                #[allow(missing_docs)]
                #[serde(rename = $json, default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl FelixConfigurationSpec {
            /// Every set field with its JSON name and check.
            pub(crate) fn checked_fields(&self) -> Vec<(&'static str, Check, &dyn CheckValue)> {
                #[allow(unused_imports)]
                use Check::*;
                let mut out: Vec<(&'static str, Check, &dyn CheckValue)> = Vec::new();
                $(
                    if let Some(v) = &self.$field {
                        out.push(($json, $check, v as &dyn CheckValue));
                    }
                )*
                out
            }

            /// The JSON names of every field, in Calico's order.
            pub fn field_names() -> &'static [&'static str] {
                &[ $( $json, )* ]
            }
        }
    };
}

include!("felix_fields.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in ["90s", "1m30s", "500ms", "1h", "0", "1.5s", "2h45m"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "90", "s", "1x", "1.2.3s", "abc"] {
            assert!(!is_duration(bad), "{bad}");
        }
        assert_eq!(
            parse_duration("1m30s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
    }

    #[test]
    fn field_count() {
        assert!(FelixConfigurationSpec::field_names().len() > 150);
        assert!(FelixConfigurationSpec::field_names().contains(&"failsafeInboundHostPorts"));
    }
}
