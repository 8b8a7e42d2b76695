//! Defaulting, as Calico's API server, client library and CRD defaults apply it on create.
//!
//! Applied once, before validation; applying it again changes nothing.

use crate::endpoint::WorkloadEndpoint;
use crate::meta::ObjectMeta;
use crate::names;
use crate::policy::{DEFAULT_TIER, StagedAction, TIER_LABEL, infer_types};
use crate::pool::{AllowedUse, AssignmentMode, IpPool, IpipMode, VxlanMode};
use crate::resource::Resource;
use crate::rule::Action;

/// The namespace namespaced resources go to when they name none (as calicoctl does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The label holding an endpoint's or network set's namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label holding an endpoint's orchestrator.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The label holding a pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";

fn default_namespace(meta: &mut ObjectMeta, namespace: &str) {
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some(namespace.to_string());
    }
}

fn default_tier(tier: &mut String, meta: &mut ObjectMeta) {
    if tier.is_empty() {
        *tier = DEFAULT_TIER.to_string();
    }
    meta.labels.insert(TIER_LABEL.to_string(), tier.clone());
}

/// Applies Calico's defaults in place:
/// - namespaced kinds without a namespace go to `default`;
/// - policies: tier `default`, the `projectcalico.org/tier` label, `types` inferred from the
///   rules when empty, staged policies' `stagedAction` `Set`;
/// - tiers: `defaultAction` `Deny`;
/// - IP pools: `blockSize` 26 (IPv4) / 122 (IPv6), `ipipMode`/`vxlanMode` `Never`,
///   `nodeSelector` `all()`, `allowedUses` `[Workload, Tunnel]`, `assignmentMode` `Automatic`;
/// - network sets and IP reservations: host bits of each CIDR masked off;
/// - workload endpoints: the name computed from the identifiers when missing, and the
///   namespace and orchestrator labels added.
pub fn apply_defaults(resource: &mut Resource) {
    apply_defaults_in(resource, DEFAULT_NAMESPACE);
}

/// [`apply_defaults`] with another namespace for namespaced resources that name none (what
/// calicoctl's `-n` does).
pub fn apply_defaults_in(resource: &mut Resource, namespace: &str) {
    if resource.kind().is_namespaced() {
        default_namespace(resource.metadata_mut(), namespace);
    }
    match resource {
        Resource::NetworkPolicy(p) => {
            default_tier(&mut p.spec.tier, &mut p.metadata);
            if p.spec.types.is_empty() {
                p.spec.types = infer_types(&p.spec.ingress, &p.spec.egress);
            }
        }
        Resource::GlobalNetworkPolicy(p) => {
            default_tier(&mut p.spec.tier, &mut p.metadata);
            if p.spec.types.is_empty() {
                p.spec.types = infer_types(&p.spec.ingress, &p.spec.egress);
            }
        }
        Resource::StagedNetworkPolicy(p) => {
            let action = *p.spec.staged_action.get_or_insert(StagedAction::Set);
            default_tier(&mut p.spec.tier, &mut p.metadata);
            if p.spec.types.is_empty() && action != StagedAction::Delete {
                p.spec.types = infer_types(&p.spec.ingress, &p.spec.egress);
            }
        }
        Resource::StagedGlobalNetworkPolicy(p) => {
            let action = *p.spec.staged_action.get_or_insert(StagedAction::Set);
            default_tier(&mut p.spec.tier, &mut p.metadata);
            if p.spec.types.is_empty() && action != StagedAction::Delete {
                p.spec.types = infer_types(&p.spec.ingress, &p.spec.egress);
            }
        }
        Resource::Tier(t) => {
            t.spec.default_action.get_or_insert(Action::Deny);
        }
        Resource::IpPool(p) => default_pool(p),
        Resource::NetworkSet(s) => mask_all(&mut s.spec.nets),
        Resource::GlobalNetworkSet(s) => mask_all(&mut s.spec.nets),
        Resource::IpReservation(r) => mask_all(&mut r.spec.reserved_cidrs),
        Resource::WorkloadEndpoint(w) => default_wep(w),
        _ => {}
    }
}

fn mask_all(nets: &mut [ipnet::IpNet]) {
    for n in nets {
        *n = n.trunc();
    }
}

fn default_pool(p: &mut IpPool) {
    let spec = &mut p.spec;
    if spec.block_size.is_none()
        && let Some(cidr) = spec.cidr
    {
        spec.block_size = Some(match cidr {
            ipnet::IpNet::V4(_) => 26,
            ipnet::IpNet::V6(_) => 122,
        });
    }
    spec.ipip_mode.get_or_insert(IpipMode::Never);
    spec.vxlan_mode.get_or_insert(VxlanMode::Never);
    if spec.node_selector.is_empty() {
        spec.node_selector = "all()".to_string();
    }
    if spec.allowed_uses.is_empty() {
        spec.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
    }
    spec.assignment_mode
        .get_or_insert(AssignmentMode::Automatic);
}

fn default_wep(w: &mut WorkloadEndpoint) {
    if w.metadata.name.is_empty() {
        let id = match w.spec.orchestrator.as_str() {
            "k8s" => &w.spec.pod,
            "cni" => &w.spec.container_id,
            _ => &w.spec.workload,
        };
        // A failure here is reported by validation, which recomputes the name.
        if let Ok(name) =
            names::workload_endpoint_name(&w.spec.node, &w.spec.orchestrator, id, &w.spec.endpoint)
        {
            w.metadata.name = name;
        }
    }
    let ns = w.metadata.namespace_or_empty().to_string();
    w.metadata.labels.insert(NAMESPACE_LABEL.to_string(), ns);
    if !w.spec.orchestrator.is_empty() {
        w.metadata
            .labels
            .insert(ORCHESTRATOR_LABEL.to_string(), w.spec.orchestrator.clone());
    }
}
