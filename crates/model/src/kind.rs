//! Resource kinds: names, plurals, scope, calicoctl aliases and datastore key prefixes.

use std::fmt;

/// The API group and version of every Calico resource.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// The etcd prefix under which v3 resources live.
pub const KEY_ROOT: &str = "/calico/resources/v3/projectcalico.org";

/// A Calico v3 resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `NetworkPolicy` (namespaced).
    NetworkPolicy,
    /// `GlobalNetworkPolicy`.
    GlobalNetworkPolicy,
    /// `StagedNetworkPolicy` (namespaced).
    StagedNetworkPolicy,
    /// `StagedGlobalNetworkPolicy`.
    StagedGlobalNetworkPolicy,
    /// `StagedKubernetesNetworkPolicy` (namespaced): a Kubernetes NetworkPolicy, staged.
    StagedKubernetesNetworkPolicy,
    /// `Tier`.
    Tier,
    /// `Profile`.
    Profile,
    /// `HostEndpoint`.
    HostEndpoint,
    /// `WorkloadEndpoint` (namespaced).
    WorkloadEndpoint,
    /// `NetworkSet` (namespaced).
    NetworkSet,
    /// `GlobalNetworkSet`.
    GlobalNetworkSet,
    /// `IPPool`.
    IpPool,
    /// `IPReservation`.
    IpReservation,
    /// `Node`.
    Node,
    /// `FelixConfiguration`.
    FelixConfiguration,
    /// `BGPConfiguration`.
    BgpConfiguration,
    /// `BGPPeer`.
    BgpPeer,
    /// `ClusterInformation`.
    ClusterInformation,
    /// `BGPFilter`.
    BgpFilter,
    /// `BlockAffinity`: computed from IPAM's keys, never stored as a resource (see
    /// [`Kind::is_stored`]).
    BlockAffinity,
}

impl Kind {
    /// Every kind.
    pub const ALL: &'static [Kind] = &[
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::StagedNetworkPolicy,
        Kind::StagedGlobalNetworkPolicy,
        Kind::StagedKubernetesNetworkPolicy,
        Kind::Tier,
        Kind::Profile,
        Kind::HostEndpoint,
        Kind::WorkloadEndpoint,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::IpPool,
        Kind::IpReservation,
        Kind::Node,
        Kind::FelixConfiguration,
        Kind::BgpConfiguration,
        Kind::BgpPeer,
        Kind::ClusterInformation,
        Kind::BgpFilter,
        Kind::BlockAffinity,
    ];

    /// The canonical kind name, as written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::StagedNetworkPolicy => "StagedNetworkPolicy",
            Kind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            Kind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
            Kind::Tier => "Tier",
            Kind::Profile => "Profile",
            Kind::HostEndpoint => "HostEndpoint",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::NetworkSet => "NetworkSet",
            Kind::GlobalNetworkSet => "GlobalNetworkSet",
            Kind::IpPool => "IPPool",
            Kind::IpReservation => "IPReservation",
            Kind::Node => "Node",
            Kind::FelixConfiguration => "FelixConfiguration",
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::BgpPeer => "BGPPeer",
            Kind::ClusterInformation => "ClusterInformation",
            Kind::BgpFilter => "BGPFilter",
            Kind::BlockAffinity => "BlockAffinity",
        }
    }

    /// Calico's resource plural (lower case), used in datastore keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networkpolicies",
            Kind::GlobalNetworkPolicy => "globalnetworkpolicies",
            Kind::StagedNetworkPolicy => "stagednetworkpolicies",
            Kind::StagedGlobalNetworkPolicy => "stagedglobalnetworkpolicies",
            Kind::StagedKubernetesNetworkPolicy => "stagedkubernetesnetworkpolicies",
            Kind::Tier => "tiers",
            Kind::Profile => "profiles",
            Kind::HostEndpoint => "hostendpoints",
            Kind::WorkloadEndpoint => "workloadendpoints",
            Kind::NetworkSet => "networksets",
            Kind::GlobalNetworkSet => "globalnetworksets",
            Kind::IpPool => "ippools",
            Kind::IpReservation => "ipreservations",
            Kind::Node => "nodes",
            Kind::FelixConfiguration => "felixconfigurations",
            Kind::BgpConfiguration => "bgpconfigurations",
            Kind::BgpPeer => "bgppeers",
            Kind::ClusterInformation => "clusterinformations",
            Kind::BgpFilter => "bgpfilters",
            Kind::BlockAffinity => "blockaffinities",
        }
    }

    /// Whether resources of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::NetworkPolicy
                | Kind::StagedNetworkPolicy
                | Kind::StagedKubernetesNetworkPolicy
                | Kind::WorkloadEndpoint
                | Kind::NetworkSet
        )
    }

    /// Whether resources of this kind are stored under their own key. BlockAffinity is not:
    /// IPAM's affinity keys are the one source of truth, and the resource is a view of them.
    pub fn is_stored(self) -> bool {
        !matches!(self, Kind::BlockAffinity)
    }

    /// The names calicoctl accepts on its command line for this kind (lower case).
    pub fn cli_names(self) -> &'static [&'static str] {
        match self {
            Kind::NetworkPolicy => &[
                "networkpolicy",
                "networkpolicies",
                "policy",
                "np",
                "policies",
                "pol",
                "pols",
            ],
            Kind::GlobalNetworkPolicy => &[
                "globalnetworkpolicy",
                "globalnetworkpolicies",
                "gnp",
                "gnps",
            ],
            Kind::StagedNetworkPolicy => &[
                "stagednetworkpolicy",
                "stagednetworkpolicies",
                "stagedpolicy",
                "snp",
                "stagedpolicies",
                "spol",
                "spols",
            ],
            Kind::StagedGlobalNetworkPolicy => &[
                "stagedglobalnetworkpolicy",
                "stagedglobalnetworkpolicies",
                "sgnp",
                "sgnps",
            ],
            Kind::StagedKubernetesNetworkPolicy => &[
                "stagedkubernetesnetworkpolicy",
                "stagedkubernetesnetworkpolicies",
                "sknp",
                "sknps",
            ],
            Kind::Tier => &["tier", "tiers"],
            Kind::Profile => &["profile", "profiles", "pro", "pros"],
            Kind::HostEndpoint => &["hostendpoint", "hostendpoints", "hep", "heps"],
            Kind::WorkloadEndpoint => &["workloadendpoint", "workloadendpoints", "wep", "weps"],
            Kind::NetworkSet => &["networkset", "networksets", "netset", "netsets"],
            Kind::GlobalNetworkSet => &[
                "globalnetworkset",
                "globalnetworksets",
                "gnetset",
                "gnetsets",
            ],
            Kind::IpPool => &["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
            Kind::IpReservation => &[
                "ipreservation",
                "ipreservations",
                "reservation",
                "reservations",
            ],
            Kind::Node => &["node", "nodes", "no", "nos"],
            Kind::FelixConfiguration => &[
                "felixconfiguration",
                "felixconfigurations",
                "felixconfig",
                "felixconfigs",
            ],
            Kind::BgpConfiguration => &[
                "bgpconfiguration",
                "bgpconfigurations",
                "bgpconfig",
                "bgpconfigs",
            ],
            Kind::BgpPeer => &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
            Kind::ClusterInformation => &[
                "clusterinformation",
                "clusterinformations",
                "clusterinfo",
                "clusterinfos",
            ],
            Kind::BgpFilter => &["bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs"],
            Kind::BlockAffinity => &["blockaffinity", "blockaffinities"],
        }
    }

    /// Resolves a calicoctl command-line kind name (any case), e.g. `gnp`, `Policies`, `hep`.
    pub fn from_cli_name(s: &str) -> Option<Kind> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.cli_names().contains(&lower.as_str()))
    }

    /// Resolves the exact kind name written in a manifest (`kind: GlobalNetworkPolicy`).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == s)
    }

    /// All kind names joined for error messages.
    pub fn valid_names() -> String {
        Kind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The datastore key prefix for listing, always ending in `/`:
    /// `/calico/resources/v3/projectcalico.org/<plural>/` or, for a namespaced kind with a
    /// namespace, `/calico/resources/v3/projectcalico.org/<plural>/<namespace>/`.
    pub fn key_prefix(self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.is_namespaced() => format!("{KEY_ROOT}/{}/{ns}/", self.plural()),
            _ => format!("{KEY_ROOT}/{}/", self.plural()),
        }
    }

    /// The datastore key of one resource.
    pub fn key(self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// Parses a datastore key back into kind, namespace and name.
    pub fn parse_key(key: &str) -> Option<(Kind, Option<String>, String)> {
        let rest = key.strip_prefix(KEY_ROOT)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let plural = parts.next()?;
        let kind = Kind::ALL.iter().copied().find(|k| k.plural() == plural)?;
        let parts: Vec<&str> = parts.collect();
        match (kind.is_namespaced(), parts.as_slice()) {
            (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => {
                Some((kind, Some(ns.to_string()), name.to_string()))
            }
            (false, [name]) if !name.is_empty() => Some((kind, None, name.to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_table() {
        let cases = [
            ("policy", Kind::NetworkPolicy),
            ("Policies", Kind::NetworkPolicy),
            ("np", Kind::NetworkPolicy),
            ("GNP", Kind::GlobalNetworkPolicy),
            ("hep", Kind::HostEndpoint),
            ("wep", Kind::WorkloadEndpoint),
            ("ipp", Kind::IpPool),
            ("pool", Kind::IpPool),
            ("pro", Kind::Profile),
            ("tier", Kind::Tier),
            ("netset", Kind::NetworkSet),
            ("globalnetworkset", Kind::GlobalNetworkSet),
            ("node", Kind::Node),
            ("felixconfig", Kind::FelixConfiguration),
            ("bgpconfig", Kind::BgpConfiguration),
            ("bgpp", Kind::BgpPeer),
            ("ipreservation", Kind::IpReservation),
            ("clusterinformation", Kind::ClusterInformation),
            ("bgpfilter", Kind::BgpFilter),
            ("BGPFilters", Kind::BgpFilter),
            ("bgpf", Kind::BgpFilter),
            ("blockaffinities", Kind::BlockAffinity),
        ];
        for (s, k) in cases {
            assert_eq!(Kind::from_cli_name(s), Some(k), "{s}");
        }
        assert_eq!(Kind::from_cli_name("nonsense"), None);
    }

    #[test]
    fn no_alias_is_shared() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            for n in k.cli_names() {
                assert!(seen.insert(*n), "{n} used twice");
            }
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            Kind::NetworkPolicy.key(Some("default"), "allow-tcp"),
            "/calico/resources/v3/projectcalico.org/networkpolicies/default/allow-tcp"
        );
        assert_eq!(
            Kind::GlobalNetworkPolicy.key(None, "deny-ssh"),
            "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/deny-ssh"
        );
        assert_eq!(
            Kind::WorkloadEndpoint.key_prefix(None),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/"
        );
        let k = Kind::IpPool.key(None, "default-ipv4-ippool");
        assert_eq!(
            Kind::parse_key(&k),
            Some((Kind::IpPool, None, "default-ipv4-ippool".into()))
        );
        let k = Kind::NetworkSet.key(Some("ns1"), "a");
        assert_eq!(
            Kind::parse_key(&k),
            Some((Kind::NetworkSet, Some("ns1".into()), "a".into()))
        );
    }
}
