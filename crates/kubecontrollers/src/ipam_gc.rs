//! IPAM garbage collection, as calico-kube-controllers' node controller does it:
//!
//! - an allocation of a pod (attributes `namespace` and `pod`) is *valid* while the pod exists
//!   on the allocation's node and holds the address (or has not reported addresses yet);
//! - an invalid allocation on a node that Kubernetes still has is a *candidate* leak, confirmed
//!   once it has stayed invalid for the grace period; on a node that is gone it is confirmed at
//!   once;
//! - a confirmed leak is looked at once more (the pod read again from the API server when its
//!   node exists) and released only while every address of its handle is a confirmed leak, and
//!   only while the handle still holds it;
//! - a node that Kubernetes no longer has and that holds no valid allocation gives up its
//!   tunnel addresses and its block affinities. Allocations that are neither a pod's nor a
//!   tunnel's (unknown owners) are never released and keep their node's blocks.
//!
//! [`Gc::plan`] is pure (the cluster as the caches see it in, what to release out); the caller
//! re-checks and releases (see [`release`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use gingham_ipam::{
    ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TYPE, AllocationInfo, Ipam, TUNNEL_TYPES,
};
use gingham_model::Node;
use gingham_model::k8s::{self, K8sPod};

use crate::reconcile::kubernetes_node_name;

/// Calico's default leak grace period (`LeakGracePeriod`, 15 minutes).
pub const DEFAULT_LEAK_GRACE: Duration = Duration::from_secs(15 * 60);

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub handle: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// The Calico node it is used on: its `node` attribute, else its block's affinity.
    pub node: Option<String>,
}

impl Allocation {
    pub fn from_info(a: AllocationInfo) -> Self {
        let node = a.attrs.get(ATTR_NODE).cloned().or_else(|| {
            a.block_affinity
                .as_deref()
                .and_then(|s| s.strip_prefix("host:"))
                .map(str::to_owned)
        });
        Allocation {
            ip: a.ip,
            handle: a.handle_id,
            attrs: a.attrs,
            node,
        }
    }

    /// The pod it was given to: (namespace, name).
    pub fn pod(&self) -> Option<(&str, &str)> {
        let ns = self.attrs.get(ATTR_NAMESPACE).filter(|s| !s.is_empty())?;
        let pod = self.attrs.get(ATTR_POD).filter(|s| !s.is_empty())?;
        Some((ns, pod))
    }

    pub fn is_tunnel(&self) -> bool {
        self.attrs
            .get(ATTR_TYPE)
            .is_some_and(|t| TUNNEL_TYPES.contains(&t.as_str()))
    }

    fn id(&self) -> (IpAddr, Option<String>) {
        (self.ip, self.handle.clone())
    }
}

/// The cluster as the controller's caches see it.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), K8sPod>,
    /// Kubernetes node names.
    pub k8s_nodes: BTreeSet<String>,
    /// Calico Nodes by name.
    pub calico_nodes: BTreeMap<String, Node>,
    /// Calico nodes holding a block affinity.
    pub affinity_nodes: BTreeSet<String>,
}

/// What a Calico node in IPAM is to Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeOf {
    /// A Kubernetes node of this name (which may be gone).
    Kubernetes(String),
    /// The Calico Node itself is gone.
    Gone,
    /// Not a Kubernetes node: left alone.
    Other,
}

fn node_of(cnode: &str, cluster: &Cluster) -> NodeOf {
    match cluster.calico_nodes.get(cnode) {
        None => NodeOf::Gone,
        Some(n) => match kubernetes_node_name(n) {
            Some(k) => NodeOf::Kubernetes(k.to_owned()),
            None => NodeOf::Other,
        },
    }
}

/// Whether an allocation is still in use. `knode`: the Kubernetes node of the allocation's
/// Calico node (`None` when that Calico Node is gone); `pod`: the pod its attributes name, as
/// last read.
pub fn allocation_is_valid(a: &Allocation, knode: Option<&str>, pod: Option<&K8sPod>) -> bool {
    if a.is_tunnel() {
        return knode.is_some();
    }
    if a.pod().is_none() {
        // Not a pod's, or from before the attributes: nothing to be sure of.
        return true;
    }
    let Some(pod) = pod else {
        return false;
    };
    if let Some(k) = knode
        && !pod.spec.node_name.is_empty()
        && pod.spec.node_name != k
    {
        // Rescheduled elsewhere: this node's allocation is not the pod's any more.
        return false;
    }
    if pod.status.pod_ip.is_empty() || pod.status.pod_ips.is_empty() {
        // The kubelet has not reported the pod's addresses yet.
        return true;
    }
    match k8s::pod_to_workload_endpoint(pod) {
        Err(_) => true,
        Ok(Err(_)) => false,
        Ok(Ok(w)) => w.spec.ip_networks.iter().any(|n| n.addr() == a.ip),
    }
}

/// A leak ready for release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub allocation: Allocation,
    /// The Kubernetes node of the allocation when it exists: the pod is read again from the API
    /// server before release. `None`: the node is gone and the caches suffice.
    pub recheck_on: Option<String>,
}

/// What one pass decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcPlan {
    pub confirmed: Vec<Confirmed>,
    /// Calico nodes, gone from Kubernetes with no valid allocation, whose affinities go.
    pub release_nodes: Vec<String>,
    /// Allocations waiting out the grace period.
    pub candidates: usize,
}

/// The garbage collector's memory: when each invalid allocation was first seen.
#[derive(Debug)]
pub struct Gc {
    grace: Duration,
    first_seen: HashMap<(IpAddr, Option<String>), Instant>,
}

impl Gc {
    pub fn new(grace: Duration) -> Self {
        Gc {
            grace,
            first_seen: HashMap::new(),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// One pass over every allocation at `now`.
    pub fn plan(&mut self, now: Instant, allocations: &[Allocation], cluster: &Cluster) -> GcPlan {
        let mut by_node: BTreeMap<&str, Vec<&Allocation>> = cluster
            .affinity_nodes
            .iter()
            .map(|n| (n.as_str(), Vec::new()))
            .collect();
        for a in allocations {
            if let Some(n) = &a.node {
                by_node.entry(n.as_str()).or_default().push(a);
            }
        }
        let mut out = GcPlan::default();
        let mut seen = BTreeSet::new();
        let mut unconfirmed_handles: BTreeSet<Option<String>> = BTreeSet::new();
        let mut confirmed = Vec::new();
        for (cnode, allocs) in by_node {
            let knode = match node_of(cnode, cluster) {
                NodeOf::Other => {
                    for a in &allocs {
                        unconfirmed_handles.insert(a.handle.clone());
                    }
                    continue;
                }
                NodeOf::Gone => None,
                NodeOf::Kubernetes(k) => Some(k),
            };
            let exists = knode
                .as_ref()
                .is_some_and(|k| cluster.k8s_nodes.contains(k));
            let mut can_release_node = true;
            let mut tunnels = Vec::new();
            for a in allocs {
                if a.is_tunnel() {
                    tunnels.push(a);
                    continue;
                }
                let Some((ns, pod)) = a.pod() else {
                    tracing::debug!(ip = %a.ip, node = cnode, "allocation of an unknown owner: its node's blocks stay");
                    can_release_node = false;
                    unconfirmed_handles.insert(a.handle.clone());
                    continue;
                };
                let p = cluster.pods.get(&(ns.to_owned(), pod.to_owned()));
                if allocation_is_valid(a, knode.as_deref(), p) {
                    can_release_node = false;
                    unconfirmed_handles.insert(a.handle.clone());
                    continue;
                }
                seen.insert(a.id());
                let first = *self.first_seen.entry(a.id()).or_insert(now);
                if !exists || now.duration_since(first) >= self.grace {
                    confirmed.push(Confirmed {
                        allocation: a.clone(),
                        recheck_on: if exists { knode.clone() } else { None },
                    });
                } else {
                    out.candidates += 1;
                    unconfirmed_handles.insert(a.handle.clone());
                }
            }
            if exists {
                for a in tunnels {
                    unconfirmed_handles.insert(a.handle.clone());
                }
            } else if can_release_node {
                for a in tunnels {
                    confirmed.push(Confirmed {
                        allocation: a.clone(),
                        recheck_on: None,
                    });
                }
                out.release_nodes.push(cnode.to_owned());
            } else {
                for a in tunnels {
                    unconfirmed_handles.insert(a.handle.clone());
                }
            }
        }
        // Forget allocations that are gone or valid again.
        self.first_seen.retain(|id, _| seen.contains(id));
        // A handle is released whole or not at all.
        out.confirmed = confirmed
            .into_iter()
            .filter(|c| !unconfirmed_handles.contains(&c.allocation.handle))
            .collect();
        out
    }

    /// Forgets an allocation (released, or valid on a second look).
    pub fn forget(&mut self, a: &Allocation) {
        self.first_seen.remove(&a.id());
    }
}

/// What a release did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    pub addresses: Vec<IpAddr>,
    pub nodes: Vec<String>,
}

/// Releases the confirmed leaks of `plan` that `still_leaked` confirms on a second look (by
/// handle, only while the handle holds them), then the affinities of the released nodes.
pub fn release(
    ipam: &Ipam<'_>,
    gc: &mut Gc,
    plan: &GcPlan,
    still_leaked: &mut dyn FnMut(&Confirmed) -> bool,
) -> Result<Released, gingham_ipam::Error> {
    let mut by_handle: BTreeMap<Option<String>, Vec<&Confirmed>> = BTreeMap::new();
    for c in &plan.confirmed {
        by_handle
            .entry(c.allocation.handle.clone())
            .or_default()
            .push(c);
    }
    let mut out = Released::default();
    for (handle, leaks) in by_handle {
        if !leaks.iter().all(|c| still_leaked(c)) {
            tracing::info!(
                ?handle,
                "a leaked address is in use again after a second look; kept"
            );
            for c in &leaks {
                gc.forget(&c.allocation);
            }
            continue;
        }
        let ips: Vec<IpAddr> = leaks.iter().map(|c| c.allocation.ip).collect();
        let r = ipam.release_ips_of_handle(&ips, handle.as_deref())?;
        for c in &leaks {
            gc.forget(&c.allocation);
        }
        if !r.released.is_empty() {
            tracing::info!(?handle, ips = ?r.released, "released leaked addresses");
        }
        out.addresses.extend(r.released);
    }
    for node in &plan.release_nodes {
        let blocks = ipam.release_host_affinities(node, true)?;
        if !blocks.is_empty() {
            tracing::info!(%node, ?blocks, "released the block affinities of a deleted node");
        }
        out.nodes.push(node.clone());
    }
    Ok(out)
}

#[cfg(test)]
#[path = "ipam_gc_tests.rs"]
mod tests;
