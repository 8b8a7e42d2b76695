//! The custom resource definitions of Calico's Kubernetes datastore (KDD): group
//! `crd.projectcalico.org`, version `v1`, one CRD per kind KDD stores, derived from the kind
//! table ([`Kind`]) plus IPAM's own kinds, which are no `projectcalico.org/v3` resources.
//! `gingham manifests crds` renders them; `deploy/crds.yaml` is that output.

use crate::kind::Kind;

/// The API group of Calico's CRDs.
pub const CRD_GROUP: &str = "crd.projectcalico.org";
/// Their version.
pub const CRD_VERSION: &str = "v1";

/// One CRD: its kind, plural and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrdKind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl CrdKind {
    /// `<plural>.crd.projectcalico.org`.
    pub fn crd_name(&self) -> String {
        format!("{}.{CRD_GROUP}", self.plural)
    }

    /// The singular: the kind in lower case, as Calico names them.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }
}

/// Kinds KDD stores that have no `projectcalico.org/v3` resource here: IPAM's blocks, handles
/// and configuration, kube-controllers' configuration and the node status requests.
pub const KDD_ONLY: &[CrdKind] = &[
    CrdKind {
        kind: "IPAMBlock",
        plural: "ipamblocks",
        namespaced: false,
    },
    CrdKind {
        kind: "IPAMHandle",
        plural: "ipamhandles",
        namespaced: false,
    },
    CrdKind {
        kind: "IPAMConfig",
        plural: "ipamconfigs",
        namespaced: false,
    },
    CrdKind {
        kind: "KubeControllersConfiguration",
        plural: "kubecontrollersconfigurations",
        namespaced: false,
    },
    CrdKind {
        kind: "CalicoNodeStatus",
        plural: "caliconodestatuses",
        namespaced: false,
    },
];

impl Kind {
    /// Whether KDD stores this kind as a CRD. WorkloadEndpoints are the pods, Nodes the
    /// Kubernetes Nodes (with Calico's annotations) and Profiles the Namespaces and
    /// ServiceAccounts, so they have none; BlockAffinity is IPAM's affinity CRD.
    pub fn is_kdd_crd(self) -> bool {
        !matches!(self, Kind::WorkloadEndpoint | Kind::Node | Kind::Profile)
    }
}

/// Every CRD of the Kubernetes datastore, sorted by plural.
pub fn kdd_crds() -> Vec<CrdKind> {
    let mut all: Vec<CrdKind> = Kind::ALL
        .iter()
        .filter(|k| k.is_kdd_crd())
        .map(|k| CrdKind {
            kind: k.name(),
            plural: k.plural(),
            namespaced: k.is_namespaced(),
        })
        .chain(KDD_ONLY.iter().copied())
        .collect();
    all.sort_by_key(|c| c.plural);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdd_has_calicos_crds() {
        let names: Vec<String> = kdd_crds().iter().map(CrdKind::crd_name).collect();
        for want in [
            "bgpfilters.crd.projectcalico.org",
            "blockaffinities.crd.projectcalico.org",
            "ipamblocks.crd.projectcalico.org",
            "ipamhandles.crd.projectcalico.org",
            "networkpolicies.crd.projectcalico.org",
            "tiers.crd.projectcalico.org",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("workloadendpoints.")));
        let np = kdd_crds()
            .into_iter()
            .find(|c| c.kind == "NetworkPolicy")
            .unwrap();
        assert!(np.namespaced);
    }
}
