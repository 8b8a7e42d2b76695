//! Host-side interface names for workloads, computed the way Calico does so that names match
//! what Calico's tools and users expect.

use sha1::{Digest, Sha1};

/// The usual prefix of host-side workload interfaces.
pub const DEFAULT_PREFIX: &str = "cali";

/// The host-side interface name for pod `pod` in Kubernetes namespace `namespace`:
/// `prefix` followed by the first 11 hex characters of SHA-1(`"<namespace>.<pod>"`).
///
/// With the usual four-character prefix the result is 15 bytes, the most Linux allows; a longer
/// prefix gives a name the kernel rejects (setup then reports it).
pub fn host_ifname(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}{}", &hex[..11])
}

/// The host-side interface name for a workload known only by its container ID (non-Kubernetes
/// CNI use): `prefix` followed by the first 11 characters of the ID.
pub fn host_ifname_for_container(prefix: &str, container_id: &str) -> String {
    let head: String = container_id.chars().take(11).collect();
    format!("{prefix}{head}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_hash_like_calico() {
        // Expected values computed independently with coreutils:
        // `printf %s default.nginx | sha1sum`.
        for (ns, pod, want) in [
            ("default", "nginx", "calic440f455693"),
            ("kube-system", "coredns-5d78c9869d-abcde", "cali4d5f75c480c"),
        ] {
            assert_eq!(host_ifname("cali", ns, pod), want);
        }
        assert_eq!(host_ifname("gh", "default", "nginx"), "ghc440f455693");
    }

    #[test]
    fn container_ids_are_cut_to_eleven_characters() {
        for (id, want) in [
            ("0123456789abcdef0123", "cali0123456789a"),
            ("abc", "caliabc"),
            ("", "cali"),
        ] {
            assert_eq!(host_ifname_for_container(DEFAULT_PREFIX, id), want);
        }
    }

    proptest::proptest! {
        #[test]
        fn pod_names_fit_in_ifnamsiz(ns in "[a-z0-9-]{1,63}", pod in "[a-z0-9.-]{1,253}") {
            let name = host_ifname(DEFAULT_PREFIX, &ns, &pod);
            proptest::prop_assert_eq!(name.len(), 15);
            proptest::prop_assert!(crate::netlink::validate_ifname(&name).is_ok());
        }
    }
}
