//! The pure part of the controllers: Kubernetes objects in, the Calico resources they call for
//! out, and the difference with what the datastore holds. Level-based, as Calico's resync:
//! every pass compares the whole set, so a missed event, a restart or a relist converges.

use std::collections::{BTreeMap, BTreeSet};

use gingham_api::{ApiError, Client, WriteMode};
use gingham_model::k8s::{
    self, K8S_ORCHESTRATOR, K8sNamespace, K8sNetworkPolicy, K8sPod, K8sServiceAccount,
};
use gingham_model::{Kind, Node, Resource, WorkloadEndpoint};

/// The Calico resources one controller owns: those of its kind whose names carry its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Kubernetes NetworkPolicy → NetworkPolicy `knp.default.<name>`.
    Policies,
    /// Namespace → Profile `kns.<namespace>`.
    Namespaces,
    /// ServiceAccount → Profile `ksa.<namespace>.<name>`.
    ServiceAccounts,
}

impl Owner {
    pub const ALL: [Owner; 3] = [Owner::Policies, Owner::Namespaces, Owner::ServiceAccounts];

    /// The Calico kind written.
    pub fn kind(self) -> Kind {
        match self {
            Owner::Policies => Kind::NetworkPolicy,
            Owner::Namespaces | Owner::ServiceAccounts => Kind::Profile,
        }
    }

    /// The name prefix of the resources this controller owns.
    pub fn prefix(self) -> &'static str {
        match self {
            Owner::Policies => k8s::K8S_POLICY_PREFIX,
            Owner::Namespaces => k8s::NAMESPACE_PROFILE_PREFIX,
            Owner::ServiceAccounts => k8s::SERVICE_ACCOUNT_PROFILE_PREFIX,
        }
    }

    /// Whether `r` is this controller's.
    pub fn owns(self, r: &Resource) -> bool {
        r.kind() == self.kind() && r.name().starts_with(self.prefix())
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Owner::Policies => "networkpolicy",
            Owner::Namespaces => "namespace",
            Owner::ServiceAccounts => "serviceaccount",
        }
    }
}

/// What the Kubernetes objects call for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Desired {
    pub resources: Vec<Resource>,
    /// Resources whose Kubernetes object could not be converted (or converts to something
    /// invalid): the stored copy, if any, is left as it is, as Calico's controller leaves it.
    pub keep: BTreeSet<(Option<String>, String)>,
    /// Why, one line per object.
    pub problems: Vec<String>,
}

impl Desired {
    fn push(&mut self, r: Resource) {
        let problems = gingham_model::validate(&r);
        if problems.is_empty() {
            self.resources.push(r);
        } else {
            self.refuse(
                r.meta().namespace.clone(),
                r.name().to_owned(),
                format!(
                    "{} {} would not be valid: {}",
                    r.kind(),
                    r.name(),
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
        }
    }

    /// Adds another set (of the same owner).
    pub fn merge(&mut self, other: Desired) {
        self.resources.extend(other.resources);
        self.keep.extend(other.keep);
        self.problems.extend(other.problems);
    }

    /// Records an object that cannot be converted: its stored resource (`name`) stays.
    pub fn refuse(&mut self, namespace: Option<String>, name: String, why: String) {
        tracing::warn!(%why, "a Kubernetes object cannot be converted; its Calico resource is left as it is");
        self.keep.insert((namespace, name));
        self.problems.push(why);
    }
}

/// NetworkPolicies → `knp.default.<name>` policies.
pub fn desired_policies<'a>(nps: impl IntoIterator<Item = &'a K8sNetworkPolicy>) -> Desired {
    let mut out = Desired::default();
    for np in nps {
        match k8s::network_policy_to_calico(np) {
            Ok(p) => out.push(Resource::NetworkPolicy(p)),
            Err(e) => {
                let ns = np
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let why = format!("Kubernetes NetworkPolicy {ns}/{}: {e}", np.metadata.name);
                out.refuse(
                    Some(ns),
                    format!("{}{}", k8s::K8S_POLICY_PREFIX, np.metadata.name),
                    why,
                );
            }
        }
    }
    out
}

/// Namespaces → `kns.<namespace>` profiles.
pub fn desired_namespace_profiles<'a>(nss: impl IntoIterator<Item = &'a K8sNamespace>) -> Desired {
    let mut out = Desired::default();
    for ns in nss {
        out.push(Resource::Profile(k8s::namespace_to_profile(ns)));
    }
    out
}

/// ServiceAccounts → `ksa.<namespace>.<name>` profiles.
pub fn desired_service_account_profiles<'a>(
    sas: impl IntoIterator<Item = &'a K8sServiceAccount>,
) -> Desired {
    let mut out = Desired::default();
    for sa in sas {
        out.push(Resource::Profile(k8s::service_account_to_profile(sa)));
    }
    out
}

/// What to write and delete so that the datastore holds what is desired.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Missing or different resources (applied: created or replaced).
    pub writes: Vec<Resource>,
    /// Orphans: resources with the controller's prefix whose Kubernetes object is gone.
    pub deletes: Vec<(Kind, Option<String>, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deletes.is_empty()
    }
}

/// The resource as a comparison sees it: without the fields the datastore sets.
fn comparable(r: &Resource) -> Resource {
    let mut r = r.clone();
    let m = r.meta_mut();
    m.resource_version = None;
    m.uid = None;
    m.creation_timestamp = None;
    r
}

/// The difference between `desired` and the `stored` resources of `owner`'s kind (others of
/// the kind are not looked at).
pub fn plan(owner: Owner, desired: &Desired, stored: &[Resource]) -> Plan {
    let key = |r: &Resource| (r.meta().namespace.clone(), r.name().to_owned());
    let stored: BTreeMap<_, _> = stored
        .iter()
        .filter(|r| owner.owns(r))
        .map(|r| (key(r), r))
        .collect();
    let mut out = Plan::default();
    let mut wanted = BTreeSet::new();
    for r in &desired.resources {
        let k = key(r);
        let same = stored
            .get(&k)
            .is_some_and(|s| comparable(s) == comparable(r));
        if !same {
            out.writes.push(r.clone());
        }
        wanted.insert(k);
    }
    for (k, r) in stored {
        if !wanted.contains(&k) && !desired.keep.contains(&k) {
            out.deletes.push((r.kind(), k.0, k.1));
        }
    }
    out
}

/// What a pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub deleted: usize,
}

/// Writes the plan: every write in one all-or-nothing apply, then the deletions (one already
/// gone is not an error: someone else removed it).
pub fn apply(client: &Client, plan: &Plan) -> Result<Applied, ApiError> {
    let mut out = Applied::default();
    if !plan.writes.is_empty() {
        client.write_all(&plan.writes, WriteMode::Apply)?;
        out.written = plan.writes.len();
    }
    for (kind, ns, name) in &plan.deletes {
        match client.delete(*kind, ns.as_deref(), name, None) {
            Ok(_) => out.deleted += 1,
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One pass of an owning controller: the stored resources of its kind are listed, compared
/// with `desired` and brought in line.
pub fn sync(client: &Client, owner: Owner, desired: &Desired) -> Result<Applied, ApiError> {
    let (stored, _) = client.list(owner.kind(), None)?;
    let p = plan(owner, desired, &stored);
    if !p.is_empty() {
        tracing::info!(
            controller = owner.name(),
            writes = p.writes.len(),
            deletes = p.deletes.len(),
            "bringing the datastore in line with Kubernetes"
        );
    }
    apply(client, &p)
}

// ===== Pods =====

/// The endpoints whose labels, service account or profiles no longer match their pod, as
/// they should be. Endpoints are matched to pods by namespace, pod name and node; an endpoint
/// without a pod, or a pod without an endpoint, is left alone (the CNI plugin creates and
/// deletes endpoints, never this controller).
pub fn pod_updates<'a>(
    pods: impl IntoIterator<Item = &'a K8sPod>,
    endpoints: &[WorkloadEndpoint],
) -> Vec<WorkloadEndpoint> {
    let mut desired: BTreeMap<(String, String, String), WorkloadEndpoint> = BTreeMap::new();
    for pod in pods {
        match k8s::pod_to_workload_endpoint(pod) {
            Ok(Ok(w)) => {
                let ns = w.metadata.namespace.clone().unwrap_or_default();
                desired.insert((ns, w.spec.pod.clone(), w.spec.node.clone()), w);
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(
                pod = %pod.metadata.name,
                error = %e,
                "a pod cannot be converted; its endpoint keeps its labels"
            ),
        }
    }
    let mut out = Vec::new();
    for w in endpoints {
        if w.spec.orchestrator != K8S_ORCHESTRATOR {
            continue;
        }
        let key = (
            w.metadata.namespace.clone().unwrap_or_default(),
            w.spec.pod.clone(),
            w.spec.node.clone(),
        );
        let Some(d) = desired.get(&key) else {
            continue;
        };
        let mut n = w.clone();
        n.metadata.labels = d.metadata.labels.clone();
        n.spec.service_account_name = d.spec.service_account_name.clone();
        n.spec.profiles = d.spec.profiles.clone();
        if &n != w {
            out.push(n);
        }
    }
    out
}

/// Writes each endpoint update on its own, only over the version read (a concurrent CNI
/// change or deletion wins; the next pass looks again). Returns how many were written.
pub fn apply_pod_updates(client: &Client, updates: &[WorkloadEndpoint]) -> usize {
    let mut written = 0;
    for w in updates {
        let r = Resource::WorkloadEndpoint(w.clone());
        match client.write_all(std::slice::from_ref(&r), WriteMode::Replace) {
            Ok(_) => written += 1,
            Err(e @ (ApiError::NotFound { .. } | ApiError::Conflict { .. })) => {
                tracing::debug!(error = %e, "endpoint changed meanwhile; the next pass looks again");
            }
            Err(e) => tracing::warn!(error = %e, "cannot update an endpoint's labels"),
        }
    }
    written
}

/// One pass of the pod controller.
pub fn sync_pods<'a>(
    client: &Client,
    pods: impl IntoIterator<Item = &'a K8sPod>,
) -> Result<usize, ApiError> {
    let (stored, _) = client.list(Kind::WorkloadEndpoint, None)?;
    let endpoints: Vec<WorkloadEndpoint> = stored
        .into_iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .collect();
    let updates = pod_updates(pods, &endpoints);
    if !updates.is_empty() {
        tracing::info!(
            endpoints = updates.len(),
            "relabelling endpoints after their pods"
        );
    }
    Ok(apply_pod_updates(client, &updates))
}

// ===== Nodes =====

/// The Kubernetes name of a Calico Node: its `k8s` orchestrator reference. `None`: not a
/// Kubernetes node (Calico's controller leaves those alone).
pub fn kubernetes_node_name(node: &Node) -> Option<&str> {
    node.spec
        .orch_refs
        .iter()
        .find(|r| r.orchestrator == K8S_ORCHESTRATOR)
        .map(|r| {
            if r.node_name.is_empty() {
                node.metadata.name.as_str()
            } else {
                r.node_name.as_str()
            }
        })
}

/// Calico Nodes of Kubernetes nodes that are gone: (Calico name, Kubernetes name).
pub fn stale_nodes(calico: &[Node], kubernetes: &BTreeSet<String>) -> Vec<(String, String)> {
    calico
        .iter()
        .filter_map(|n| {
            let k = kubernetes_node_name(n)?;
            (!kubernetes.contains(k)).then(|| (n.metadata.name.clone(), k.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
