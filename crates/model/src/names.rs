//! Name rules and name computations: DNS names, Kubernetes label keys and values, Calico's
//! policy-name forms, workload-endpoint names, host-side interface names and the legacy v1
//! name normalisation.

use std::net::IpAddr;

use ipnet::IpNet;
use sha1::{Digest, Sha1};

/// Maximum length of a DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;
/// Maximum length of a DNS-1123 label.
pub const MAX_LABEL: usize = 63;

/// The DNS-1123 label format, for messages.
pub const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
/// The DNS-1123 subdomain format, for messages.
pub const SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` matches the DNS-1123 label format (no length limit applied).
pub fn matches_label_format(s: &str) -> bool {
    label_chars_ok(s)
}

/// Whether `s` is a DNS-1123 label (at most 63 characters).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_LABEL && label_chars_ok(s)
}

/// Whether `s` matches the DNS-1123 subdomain format (dot-separated labels; no length limit).
pub fn matches_subdomain_format(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(label_chars_ok)
}

/// Whether `s` is a DNS-1123 subdomain (at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && matches_subdomain_format(s)
}

/// Calico's (v3.32+) NetworkPolicy name rule: a label, `label.label`, or `knp.default.<subdomain>` /
/// `ossg.default.<subdomain>`.
pub fn is_network_policy_name(s: &str) -> bool {
    for prefix in ["knp.default.", "ossg.default."] {
        if let Some(rest) = s.strip_prefix(prefix)
            && matches_subdomain_format(rest)
        {
            return true;
        }
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| label_chars_ok(p))
}

/// Calico's GlobalNetworkPolicy name rule: a label optionally with one dot (`label.label`).
pub fn is_global_network_policy_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| label_chars_ok(p))
}

fn k8s_name_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Checks a Kubernetes qualified name (label or annotation key): `[prefix/]name` where the prefix
/// is a DNS subdomain and the name is at most 63 characters of `[A-Za-z0-9_.-]` starting and
/// ending alphanumeric.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let q = crate::error::quote(key);
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!("{q}: the prefix before '/' must not be empty"));
        }
        if !is_dns_subdomain(p) {
            return Err(format!(
                "{q}: the prefix {} must be a lower-case DNS subdomain (e.g. example.com)",
                crate::error::quote(p)
            ));
        }
        if name.contains('/') {
            return Err(format!("{q}: a key may contain at most one '/'"));
        }
    }
    if name.is_empty() {
        return Err(format!("{q}: the name part must not be empty"));
    }
    if name.len() > MAX_LABEL {
        return Err(format!("{q}: the name part must be at most 63 characters"));
    }
    if !k8s_name_part_ok(name) {
        return Err(format!(
            "{q}: the name part must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a Kubernetes label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting
/// and ending alphanumeric.
pub fn check_label_value(v: &str) -> Result<(), String> {
    let q = crate::error::quote(v);
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > MAX_LABEL {
        return Err(format!("value {q} must be at most 63 characters"));
    }
    if !k8s_name_part_ok(v) {
        return Err(format!(
            "value {q} must be empty or consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// Computes a workload endpoint's name from its identifiers, as Calico does: the segments
/// `<node>-<orchestrator>-<pod|containerID|workload>-<endpoint>` (libnetwork repeats the
/// orchestrator), each with `-` doubled. Every segment must be set and must not start or end
/// with `-`.
pub fn workload_endpoint_name(
    node: &str,
    orchestrator: &str,
    workload_id: &str,
    endpoint: &str,
) -> Result<String, String> {
    let (third_field, third) = match orchestrator {
        "k8s" => ("pod", workload_id),
        "cni" => ("containerID", workload_id),
        "libnetwork" => ("orchestrator", orchestrator),
        _ => ("workload", workload_id),
    };
    let segments = [
        ("node", node),
        ("orchestrator", orchestrator),
        (third_field, third),
        ("endpoint", endpoint),
    ];
    let mut parts = Vec::with_capacity(4);
    for (field, value) in segments {
        if value.is_empty() {
            return Err(format!(
                "spec.{field} must be set to compute the WorkloadEndpoint name"
            ));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(format!(
                "spec.{field} {value:?} must not begin or end with '-'"
            ));
        }
        parts.push(value.replace('-', "--"));
    }
    Ok(parts.join("-"))
}

/// The host-side interface name Calico's CNI plugin gives a pod: `cali` followed by the first 11
/// hex digits of SHA-1(`<namespace>.<pod>`).
pub fn pod_interface_name(namespace: &str, pod: &str) -> String {
    pod_interface_name_with_prefix("cali", namespace, pod)
}

/// [`pod_interface_name`] with another prefix (Felix `interfacePrefix`, first entry).
pub fn pod_interface_name_with_prefix(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}{}", &hex[..11])
}

/// Legacy v1 name normalisation: lower-case, `/` → `.`, runs of other invalid characters → `-`,
/// runs of `.`/`-` containing a dot → `.`, leading and trailing `.`/`-` removed.
pub fn normalize_v1_name(name: &str) -> String {
    let lower = name.to_lowercase().replace('/', ".");
    // Runs of characters outside [-.a-z0-9] become a single '-'.
    let mut s = String::with_capacity(lower.len());
    let mut in_bad = false;
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
            s.push(c);
            in_bad = false;
        } else if !in_bad {
            s.push('-');
            in_bad = true;
        }
    }
    // Runs of '.'/'-' that contain at least one '.' become a single '.'.
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '.' || chars[i] == '-' {
            let start = i;
            while i < chars.len() && (chars[i] == '.' || chars[i] == '-') {
                i += 1;
            }
            let run = &chars[start..i];
            if run.contains(&'.') {
                out.push('.');
            } else {
                out.extend(run);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.trim_matches(|c| c == '.' || c == '-').to_string()
}

/// Appends `-<first 8 hex of SHA-1(original)>` when `converted` differs from `original`.
pub fn qualify_v1_name(original: &str, converted: &str) -> String {
    if original == converted {
        return original.to_string();
    }
    let digest = hex::encode(Sha1::digest(original.as_bytes()));
    format!("{converted}-{}", &digest[..8])
}

/// v1 → v3 name conversion (normalise, then qualify if changed).
pub fn convert_v1_name(name: &str) -> String {
    qualify_v1_name(name, &normalize_v1_name(name))
}

/// v1 → v3 name conversion with dots turned into dashes (used for policy names).
pub fn convert_v1_name_no_dots(name: &str) -> String {
    qualify_v1_name(name, &normalize_v1_name(name).replace('.', "-"))
}

/// A resource name derived from a CIDR: `10.1.0.0/16` → `10-1-0-0-16`.
pub fn cidr_to_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// A resource name derived from an IP: IPv4 dots become dashes; IPv6 is written as eight
/// 4-digit hex groups joined by dashes.
pub fn ip_to_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns() {
        assert!(is_dns_label("a-b"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("A"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn policy_names() {
        for ok in [
            "allow-tcp",
            "default.allow",
            "knp.default.foo.bar",
            "ossg.default.x",
        ] {
            assert!(is_network_policy_name(ok), "{ok}");
        }
        for bad in ["a.b.c", "Allow", "knp.default.", "-x"] {
            assert!(!is_network_policy_name(bad), "{bad}");
        }
        assert!(is_global_network_policy_name("deny-ssh"));
        assert!(is_global_network_policy_name("tier1.deny-ssh"));
        assert!(!is_global_network_policy_name("a.b.c"));
    }

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "projectcalico.org/namespace",
            "calico/k8s_ns",
            "k8s_ns.default",
            "A_b",
        ] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "a/b/c",
            "XXXXXX.com/appName",
            "-a",
            &"a".repeat(64),
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("83380476").is_ok());
        assert!(check_label_value("a b").is_err());
    }

    #[test]
    fn wep_names() {
        assert_eq!(
            workload_endpoint_name("rack1-host1", "k8s", "frontend-5gs43", "eth0").unwrap(),
            "rack1--host1-k8s-frontend--5gs43-eth0"
        );
        assert_eq!(
            workload_endpoint_name("h", "libnetwork", "ignored", "ep").unwrap(),
            "h-libnetwork-libnetwork-ep"
        );
        assert!(workload_endpoint_name("", "k8s", "p", "eth0").is_err());
        assert!(workload_endpoint_name("n", "k8s", "-p", "eth0").is_err());
    }

    #[test]
    fn v1_names() {
        assert_eq!(normalize_v1_name("Foo_Bar/baz"), "foo-bar.baz");
        assert_eq!(normalize_v1_name("a.-.b"), "a.b");
        assert_eq!(normalize_v1_name("--a--"), "a");
        assert_eq!(convert_v1_name("kns.default"), "kns.default");
        let c = convert_v1_name_no_dots("lijiaocn-space.isolation-access-rules");
        assert!(
            c.starts_with("lijiaocn-space-isolation-access-rules-"),
            "{c}"
        );
        assert_eq!(c.len(), "lijiaocn-space-isolation-access-rules-".len() + 8);
    }

    #[test]
    fn derived_names() {
        assert_eq!(cidr_to_name(&"10.1.0.0/16".parse().unwrap()), "10-1-0-0-16");
        assert_eq!(ip_to_name(&"192.168.1.1".parse().unwrap()), "192-168-1-1");
        assert_eq!(
            ip_to_name(&"2001:db8::1".parse().unwrap()),
            "2001-0db8-0000-0000-0000-0000-0000-0001"
        );
        assert_eq!(pod_interface_name("default", "x").len(), 15);
    }
}
