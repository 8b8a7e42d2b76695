//! Ports in rules: a number, a `"min:max"` range, or a named port.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The valid port spellings, for error messages.
pub const PORT_VALID: &str =
    "a port number 1-65535, a range \"min:max\", or a port name such as \"http\"";

/// A port match. A single port is a range whose ends are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// Ports `min..=max`; a single port has `min == max`.
    Range {
        /// First port of the range.
        min: u16,
        /// Last port of the range.
        max: u16,
    },
    /// A named port, resolved against the ports endpoints declare.
    Named(String),
}

impl Port {
    /// A single numeric port.
    pub fn single(p: u16) -> Port {
        Port::Range { min: p, max: p }
    }

    /// Whether this is a named port.
    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }

    /// Parses Calico's string form: digits, `min:max`, or a name (`[a-zA-Z0-9_.-]{1,128}`).
    pub fn parse(s: &str) -> Result<Port, String> {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if digits(s) {
            return s
                .parse::<u16>()
                .map(Port::single)
                .map_err(|_| format!("port {s} is out of range (valid: {PORT_VALID})"));
        }
        if let Some((a, b)) = s.split_once(':')
            && digits(a)
            && digits(b)
        {
            let min = a.parse::<u16>().map_err(|_| {
                format!("invalid minimum port number in range {s:?} (valid: 1-65535)")
            })?;
            let max = b.parse::<u16>().map_err(|_| {
                format!("invalid maximum port number in range {s:?} (valid: 1-65535)")
            })?;
            if min > max {
                return Err(format!(
                    "port range {s:?} is invalid: the minimum port ({min}) is greater than the maximum ({max})"
                ));
            }
            return Ok(Port::Range { min, max });
        }
        let name_ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name_ok {
            Ok(Port::Named(s.to_string()))
        } else {
            Err(format!("{s:?} is not a valid port (valid: {PORT_VALID})"))
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PORT_VALID)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Port, E> {
                Port::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Port, E> {
                u16::try_from(n).map(Port::single).map_err(|_| {
                    E::custom(format!("port {n} is out of range (valid: {PORT_VALID})"))
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Port, E> {
                u64::try_from(n)
                    .map_err(|_| {
                        E::custom(format!("port {n} is out of range (valid: {PORT_VALID})"))
                    })
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Port, E> {
                Err(E::custom(format!(
                    "{n} is not a valid port (valid: {PORT_VALID})"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks a Kubernetes port name (IANA service name): at most 15 characters, lower-case letters,
/// digits and `-`, at least one letter, no leading, trailing or doubled `-`.
pub fn check_port_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{name:?} is not a valid port name: {why} (valid: at most 15 lower-case letters, digits and '-', with at least one letter)"
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 15 {
        return bad("it is longer than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("it contains characters other than a-z, 0-9 and '-'");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return bad("it contains no letter");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it starts or ends with '-'");
    }
    if name.contains("--") {
        return bad("it contains \"--\"");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, Port)] = &[
            ("80", Port::single(80)),
            (
                "8080:8090",
                Port::Range {
                    min: 8080,
                    max: 8090,
                },
            ),
            ("http", Port::Named("http".into())),
            ("0", Port::single(0)),
        ];
        for (s, want) in ok {
            assert_eq!(Port::parse(s).as_ref(), Ok(want), "{s}");
            assert_eq!(want.to_string(), *s);
        }
        for bad in ["90:80", "70000", "1:70000", "a b", ""] {
            assert!(Port::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        assert!(check_port_name("http").is_ok());
        assert!(check_port_name("metrics-9").is_ok());
        for bad in ["HTTP", "123", "a--b", "-a", "averyveryverylongname"] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }
}
