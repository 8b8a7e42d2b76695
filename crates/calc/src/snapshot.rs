//! A snapshot of the cluster as the policy engine sees it: endpoints with their effective labels,
//! network sets, nodes, tiers, and policies and profiles compiled to matchable form (selectors
//! parsed and folded the way felix folds them).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use gingham_model::defaults::{NAMESPACE_LABEL, SERVICE_ACCOUNT_LABEL};
use gingham_model::k8s::{
    NAMESPACE_LABEL_PREFIX, NAMESPACE_PROFILE_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX,
};
use gingham_model::policy::{DEFAULT_TIER, DEFAULT_TIER_ORDER, infer_types};
use gingham_model::{
    Action, EntityRule, FelixConfiguration, PolicyType, Port, ProtoPort, Resource, Rule,
    StagedAction,
};
use gingham_selector::{Interner, Selector};
use ipnet::IpNet;
use serde::Serialize;

/// Calico's built-in profile that allows everything (used by automatic host endpoints).
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

/// Felix's default failsafe ports.
const FAILSAFE_IN: &[(&str, u16)] = &[
    ("TCP", 22),
    ("UDP", 68),
    ("TCP", 179),
    ("TCP", 2379),
    ("TCP", 2380),
    ("TCP", 5473),
    ("TCP", 6443),
    ("TCP", 6666),
    ("TCP", 6667),
];
const FAILSAFE_OUT: &[(&str, u16)] = &[
    ("UDP", 53),
    ("UDP", 67),
    ("TCP", 179),
    ("TCP", 2379),
    ("TCP", 2380),
    ("TCP", 5473),
    ("TCP", 6443),
    ("TCP", 6666),
    ("TCP", 6667),
];

/// Traffic direction relative to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EndpointKind {
    Workload,
    Host,
}

/// A compact, sorted, shared label set (endpoints are many; a map per endpoint costs more than
/// its labels, and an endpoint whose profiles add nothing shares one set for both uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(std::sync::Arc<[(Box<str>, Box<str>)]>);

impl LabelSet {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<String, String>> for LabelSet {
    fn from(m: BTreeMap<String, String>) -> Self {
        LabelSet(
            m.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

impl gingham_selector::Labels for LabelSet {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A port an endpoint declares by name (a container port, a host endpoint port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

/// A workload or host endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// `namespace/pod` for workloads, `node/name` for host endpoints.
    pub name: String,
    /// Unique: `WorkloadEndpoint/<namespace>/<resource name>` or `HostEndpoint/<name>`.
    pub key: String,
    pub kind: EndpointKind,
    /// The resource's own name (WorkloadEndpoint or HostEndpoint).
    pub resource: String,
    pub namespace: Option<String>,
    pub node: String,
    pub interface: String,
    /// The endpoint's own labels.
    pub labels: LabelSet,
    /// Own labels over labels inherited from its profiles (`labelsToApply`): what selectors see.
    pub effective_labels: LabelSet,
    pub ips: Vec<IpNet>,
    pub ports: Vec<NamedPort>,
    pub profiles: Vec<String>,
}

impl Endpoint {
    /// The first address of the family, if any.
    pub fn ip(&self, v6: bool) -> Option<IpAddr> {
        self.ips.iter().map(IpNet::addr).find(|a| a.is_ipv6() == v6)
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.ips.iter().any(|n| n.contains(&ip))
    }
}

/// A NetworkSet or GlobalNetworkSet.
#[derive(Clone, Debug, Serialize)]
pub struct NetSet {
    pub name: String,
    pub namespace: Option<String>,
    /// Own labels (with `projectcalico.org/namespace` for namespaced sets).
    pub own_labels: LabelSet,
    /// What selectors see: a namespaced set also carries its namespace profile's labels
    /// (`pcns.*`), so `namespaceSelector` applies to it as to pods.
    pub labels: LabelSet,
    pub nets: Vec<IpNet>,
}

impl NetSet {
    /// The profiles whose labels a set inherits.
    pub fn profiles(&self) -> Vec<String> {
        self.namespace
            .iter()
            .map(|ns| format!("{NAMESPACE_PROFILE_PREFIX}{ns}"))
            .collect()
    }
}

/// A node: its addresses on the underlay and its tunnel addresses.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// IPIP or VXLAN tunnel address: the source of host traffic to pods on other nodes.
    pub tunnel_ips: Vec<IpAddr>,
    /// The subnets of its BGP addresses (`spec.bgp.ipv4Address`, `ipv6Address`): a
    /// CrossSubnet pool encapsulates only between nodes that share none.
    pub subnets: Vec<ipnet::IpNet>,
    /// The node's pod CIDRs: Kubernetes' (`status.podCIDRs`) and its IPAM blocks
    /// (BlockAffinity resources).
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

/// How a pool carries pod traffic between nodes: what decides whether a host's packets to a
/// pod of another node leave through the tunnel (from the tunnel address).
#[derive(Clone, Debug, Serialize)]
pub struct PoolEncap {
    /// The IPPool's name.
    pub name: String,
    pub cidr: ipnet::IpNet,
    /// IPIP or VXLAN `Always`.
    pub always: bool,
    /// IPIP or VXLAN `CrossSubnet` (and neither `Always`).
    pub cross_subnet: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct TierInfo {
    pub name: String,
    pub order: Option<f64>,
    /// What happens when policies of the tier selected the endpoint but none decided.
    pub default_action: Action,
    /// A Tier resource exists (the default tier always does). Policies in a tier that does
    /// not exist cannot be ordered, so endpoints they select are closed (fail closed).
    pub exists: bool,
}

impl TierInfo {
    /// A Tier resource's entry.
    pub fn of(t: &gingham_model::Tier) -> TierInfo {
        TierInfo {
            name: t.metadata.name.clone(),
            order: t.spec.order,
            default_action: t.spec.default_action.unwrap_or(Action::Deny),
            exists: true,
        }
    }
}

/// The tiers in felix's order: every tier that exists (`tiers`, by name) or that one of
/// `policies` is in; the default tier always.
pub fn tier_list<'p>(
    mut tiers: BTreeMap<String, TierInfo>,
    policies: impl IntoIterator<Item = &'p Policy>,
) -> Vec<TierInfo> {
    for p in policies {
        tiers.entry(p.tier.clone()).or_insert_with(|| TierInfo {
            name: p.tier.clone(),
            order: (p.tier == DEFAULT_TIER).then_some(DEFAULT_TIER_ORDER),
            default_action: Action::Deny,
            exists: p.tier == DEFAULT_TIER,
        });
    }
    tiers
        .entry(DEFAULT_TIER.to_owned())
        .or_insert_with(|| TierInfo {
            name: DEFAULT_TIER.to_owned(),
            order: Some(DEFAULT_TIER_ORDER),
            default_action: Action::Deny,
            exists: true,
        });
    let mut tiers: Vec<TierInfo> = tiers.into_values().collect();
    tiers.sort_by(|a, b| {
        OrderKey(a.order)
            .cmp(&OrderKey(b.order))
            .then_with(|| a.name.cmp(&b.name))
    });
    tiers
}

/// What a NetworkPolicy named `name` is compiled as: Kubernetes NetworkPolicies are stored as
/// Calico ones named `knp.default.*`.
pub fn network_policy_kind(name: &str) -> PolicyKind {
    if name.starts_with("knp.default.") {
        PolicyKind::KubernetesNetworkPolicy
    } else {
        PolicyKind::NetworkPolicy
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PolicyKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    /// A Kubernetes NetworkPolicy (stored as a Calico NetworkPolicy named `knp.default.*`).
    KubernetesNetworkPolicy,
    /// A staged Kubernetes NetworkPolicy, named as the policy it stages (`knp.default.*`).
    StagedKubernetesNetworkPolicy,
}

/// Names a policy in traces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            PolicyKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            PolicyKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            PolicyKind::KubernetesNetworkPolicy => "Kubernetes NetworkPolicy",
            PolicyKind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// One side (source or destination) of a rule, compiled.
#[derive(Clone, Debug, Default)]
pub struct Entity {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    /// The selector folded with the namespace selector and service accounts.
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
    /// The rule names Kubernetes Services, which the engine cannot resolve without them.
    pub services: bool,
    /// The selector as the rule wrote it (before folding), for display.
    pub written_selector: Box<str>,
}

/// A rule, compiled.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub index: usize,
    pub action: Action,
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<(Option<u8>, Option<u8>)>,
    pub not_icmp: Option<(Option<u8>, Option<u8>)>,
    pub source: Entity,
    pub destination: Entity,
    /// The rule has an HTTP match (enforced only by an L7 proxy; evaluated without it).
    /// No copy of the original rule is kept: a compiled rule holds only what it matches on
    /// and what is displayed of it.
    pub http: bool,
}

/// A policy, compiled.
#[derive(Clone, Debug)]
pub struct Policy {
    pub id: PolicyRef,
    pub tier: String,
    pub order: Option<f64>,
    pub selector: Selector,
    pub ingress_type: bool,
    pub egress_type: bool,
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
    pub staged: Option<StagedAction>,
    pub apply_on_forward: bool,
    pub pre_dnat: bool,
    pub do_not_track: bool,
}

impl Entity {
    fn share_selectors(&mut self, interner: &mut Interner) {
        for s in [&mut self.selector, &mut self.not_selector] {
            if let Some(sel) = s.take() {
                *s = Some(interner.intern(sel));
            }
        }
    }
}

impl Policy {
    /// Replaces its selectors with the interner's copies of equal ones, so that policies
    /// with the same selectors (say, the same app label in the same namespace) share them.
    pub fn share_selectors(&mut self, interner: &mut Interner) {
        self.selector = interner.intern(std::mem::take(&mut self.selector));
        for r in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            r.source.share_selectors(interner);
            r.destination.share_selectors(interner);
        }
    }

    pub fn rules(&self, dir: Direction) -> &[CompiledRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn has_type(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress_type,
            Direction::Egress => self.egress_type,
        }
    }

    /// Whether the policy can select this kind of endpoint at all (namespaced policies select
    /// only workloads of their namespace; that is folded into the selector too).
    pub fn selects(&self, ep: &Endpoint) -> bool {
        if self.id.namespace.is_some() && ep.kind == EndpointKind::Host {
            return false;
        }
        self.selector.matches(&ep.effective_labels)
    }

    /// Felix's sort key inside a tier: order (absent = last), then name.
    pub fn sort_key(&self) -> (OrderKey, String) {
        let name = match &self.id.namespace {
            Some(ns) => format!("{ns}/{}", self.id.name),
            None => self.id.name.clone(),
        };
        (OrderKey(self.order), name)
    }
}

/// Which of an endpoint's chains a policy stage is, and so which policies it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// Workload policy, or host endpoint policy for the host's own traffic; then profiles.
    Normal,
    /// applyOnForward policies of a host endpoint, for forwarded traffic; allow when none applies.
    Forward,
    /// preDNAT policies: no end-of-tier drop.
    PreDnat,
    /// doNotTrack policies: no end-of-tier drop.
    Untracked,
}

impl Chain {
    /// Whether policy `p` belongs in this chain of endpoint `ep`.
    pub fn admits(self, p: &Policy, ep: &Endpoint) -> bool {
        let host = ep.kind == EndpointKind::Host;
        match self {
            Chain::Normal => !host || (!p.pre_dnat && !p.do_not_track),
            Chain::Forward => host && p.apply_on_forward && !p.pre_dnat && !p.do_not_track,
            Chain::PreDnat => host && p.pre_dnat,
            Chain::Untracked => host && p.do_not_track,
        }
    }

    /// Whether a tier whose policies decided nothing drops the packet.
    pub fn end_of_tier(self) -> bool {
        matches!(self, Chain::Normal | Chain::Forward)
    }

    /// Whether profiles (and the final drop) follow the tiers.
    pub fn profiles_apply(self) -> bool {
        self == Chain::Normal
    }
}

/// An `order` where absent sorts last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OrderKey(pub Option<f64>);

impl Eq for OrderKey {}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let a = self.0.unwrap_or(f64::INFINITY);
        let b = other.0.unwrap_or(f64::INFINITY);
        a.total_cmp(&b)
    }
}

#[derive(Clone, Debug)]
pub struct ProfileInfo {
    pub name: String,
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
    pub labels_to_apply: BTreeMap<String, String>,
}

impl ProfileInfo {
    pub fn rules(&self, dir: Direction) -> &[CompiledRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A failsafe port entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failsafe {
    pub protocol: u8,
    pub port: u16,
    pub net: Option<IpNet>,
}

/// The IP pools as felix's masquerade manager sees them: every pool's CIDR (`all`), and the
/// CIDRs of pools with `natOutgoing: true` (`masq`). Disabled pools stay in both: their
/// addresses may still be in use. Traffic from a `masq` pool to a destination outside every
/// pool is masqueraded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NatPools {
    pub all: std::collections::BTreeSet<IpNet>,
    pub masq: std::collections::BTreeSet<IpNet>,
}

impl NatPools {
    /// The pools of IPPool resources (others are ignored; a pool without a CIDR is skipped).
    pub fn from_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> NatPools {
        let mut p = NatPools::default();
        for r in resources {
            if let Resource::IpPool(pool) = r
                && let Some(cidr) = pool.spec.cidr
            {
                p.all.insert(cidr);
                if pool.spec.nat_outgoing {
                    p.masq.insert(cidr);
                }
            }
        }
        p
    }
}

/// Felix settings the engine needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FelixSettings {
    pub failsafe_inbound: Vec<Failsafe>,
    pub failsafe_outbound: Vec<Failsafe>,
    /// `Drop` (felix's default), `Accept` or `Return`.
    pub default_endpoint_to_host_action: String,
}

impl Default for FelixSettings {
    fn default() -> Self {
        let conv = |list: &[(&str, u16)]| {
            list.iter()
                .map(|(p, port)| Failsafe {
                    protocol: proto_number(p),
                    port: *port,
                    net: None,
                })
                .collect()
        };
        Self {
            failsafe_inbound: conv(FAILSAFE_IN),
            failsafe_outbound: conv(FAILSAFE_OUT),
            default_endpoint_to_host_action: "Drop".into(),
        }
    }
}

impl FelixSettings {
    /// Felix's settings from FelixConfiguration resources (others are ignored).
    pub fn from_resources(resources: &[Resource]) -> FelixSettings {
        let mut s = FelixSettings::default();
        for r in resources {
            if let Resource::FelixConfiguration(f) = r {
                s.apply(f);
            }
        }
        s
    }

    /// Applies one FelixConfiguration: the global `default` object; per-node `node.<name>`
    /// objects are not modelled per node (the global one wins).
    pub fn apply(&mut self, f: &FelixConfiguration) {
        if f.metadata.name != "default" {
            return;
        }
        if let Some(v) = &f.spec.failsafe_inbound_host_ports {
            self.failsafe_inbound = convert_failsafe(v);
        }
        if let Some(v) = &f.spec.failsafe_outbound_host_ports {
            self.failsafe_outbound = convert_failsafe(v);
        }
        if let Some(v) = &f.spec.default_endpoint_to_host_action {
            // Validation accepts any case (`ACCEPT` in Calico's older docs).
            self.default_endpoint_to_host_action = match v.to_ascii_lowercase().as_str() {
                "accept" => "Accept",
                "return" => "Return",
                _ => "Drop",
            }
            .into();
        }
    }
}

fn proto_number(p: &str) -> u8 {
    match p.to_ascii_uppercase().as_str() {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
    }
}

fn convert_failsafe(list: &[ProtoPort]) -> Vec<Failsafe> {
    list.iter()
        .map(|p| Failsafe {
            protocol: proto_number(&p.protocol),
            port: p.port,
            net: p.net.parse().ok(),
        })
        .collect()
}

/// Something in the input the engine could not use fully; reported, never fatal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning(pub String);

/// The whole cluster as the engine sees it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub endpoints: Vec<Endpoint>,
    pub netsets: Vec<NetSet>,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Sorted by order (absent last), then name.
    pub tiers: Vec<TierInfo>,
    /// Enforced policies.
    pub policies: Vec<Policy>,
    /// The policy set as it would be if every staged policy were enforced (Set replaces or adds,
    /// Delete removes); `None` when there are no staged policies.
    pub staged_view: Option<Vec<Policy>>,
    pub profiles: BTreeMap<String, ProfileInfo>,
    pub felix: FelixSettings,
    /// The IP pools' encapsulation, in the order they were given.
    pub pools: Vec<PoolEncap>,
    pub warnings: Vec<Warning>,
    /// Lookups by name and address, rebuilt by [`Snapshot::reindex`].
    pub index: EndpointIndex,
}

/// Positions in `Snapshot::endpoints` by display name and by address.
#[derive(Clone, Debug, Default)]
pub struct EndpointIndex {
    by_name: std::collections::HashMap<String, Vec<usize>>,
    /// Endpoints by the address of each single-address network (/32, /128).
    by_ip: std::collections::HashMap<IpAddr, Vec<usize>>,
    /// Endpoints with wider networks, checked one by one.
    wide: Vec<usize>,
    /// The host endpoint that polices each node (see [`Snapshot::host_endpoint_of`]).
    host_of_node: std::collections::HashMap<String, usize>,
}

impl Snapshot {
    /// Builds the snapshot from resources (as loaded by `gingham_model::load`, Kubernetes
    /// objects already converted).
    pub fn build(resources: &[Resource]) -> Snapshot {
        let mut s = Snapshot::default();
        let mut staged = Vec::new();
        let mut tiers: BTreeMap<String, TierInfo> = BTreeMap::new();
        let mut weps = Vec::new();
        let mut heps = Vec::new();
        for r in resources {
            match r {
                Resource::NetworkPolicy(p) => {
                    let kind = network_policy_kind(&p.metadata.name);
                    s.add_policy(namespaced_raw!(p, kind, None), &mut staged);
                }
                Resource::GlobalNetworkPolicy(p) => {
                    let raw = global_raw!(p, PolicyKind::GlobalNetworkPolicy, None);
                    s.add_policy(raw, &mut staged);
                }
                Resource::StagedNetworkPolicy(p) => {
                    let action = Some(p.spec.staged_action.unwrap_or(StagedAction::Set));
                    let raw = namespaced_raw!(p, PolicyKind::StagedNetworkPolicy, action);
                    s.add_policy(raw, &mut staged);
                }
                Resource::StagedGlobalNetworkPolicy(p) => {
                    let action = Some(p.spec.staged_action.unwrap_or(StagedAction::Set));
                    let raw = global_raw!(p, PolicyKind::StagedGlobalNetworkPolicy, action);
                    s.add_policy(raw, &mut staged);
                }
                Resource::StagedKubernetesNetworkPolicy(p) => match p.to_calico() {
                    Ok(np) => {
                        let action = Some(p.spec.staged_action.unwrap_or(StagedAction::Set));
                        let kind = PolicyKind::StagedKubernetesNetworkPolicy;
                        s.add_policy(namespaced_raw!(np, kind, action), &mut staged);
                    }
                    Err(e) => s.warnings.push(Warning(format!(
                        "StagedKubernetesNetworkPolicy {}/{} ignored: {e}",
                        p.metadata.namespace_or_empty(),
                        p.metadata.name
                    ))),
                },
                Resource::Tier(t) => {
                    tiers.insert(t.metadata.name.clone(), TierInfo::of(t));
                }
                Resource::Profile(p) => {
                    let where_ = format!("Profile {}", p.metadata.name);
                    let info = ProfileInfo {
                        name: p.metadata.name.clone(),
                        ingress: s.compile_rules(
                            &where_,
                            Direction::Ingress,
                            &p.spec.ingress,
                            None,
                        ),
                        egress: s.compile_rules(&where_, Direction::Egress, &p.spec.egress, None),
                        labels_to_apply: p
                            .spec
                            .labels_to_apply
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    };
                    s.profiles.insert(p.metadata.name.clone(), info);
                }
                Resource::WorkloadEndpoint(w) => weps.push(w),
                Resource::HostEndpoint(h) => heps.push(h),
                Resource::NetworkSet(n) => {
                    let ns = n.metadata.namespace_or_empty().to_owned();
                    let mut labels: BTreeMap<String, String> = n
                        .metadata
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    labels.insert(NAMESPACE_LABEL.to_owned(), ns.clone());
                    s.netsets.push(NetSet {
                        name: format!("{ns}/{}", n.metadata.name),
                        namespace: Some(ns),
                        own_labels: LabelSet::from(labels.clone()),
                        labels: LabelSet::from(labels),
                        nets: n.spec.nets.clone(),
                    });
                }
                Resource::GlobalNetworkSet(n) => {
                    let labels: BTreeMap<String, String> = n
                        .metadata
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    s.netsets.push(NetSet {
                        name: n.metadata.name.clone(),
                        namespace: None,
                        own_labels: LabelSet::from(labels.clone()),
                        labels: LabelSet::from(labels),
                        nets: n.spec.nets.clone(),
                    });
                }
                Resource::Node(n) => {
                    let info = s.nodes.entry(n.metadata.name.clone()).or_default();
                    info.name = n.metadata.name.clone();
                    if let Some(bgp) = &n.spec.bgp {
                        info.ips.extend(bgp.ipv4_address.map(|a| a.addr()));
                        info.ips.extend(bgp.ipv6_address.map(|a| a.addr()));
                        info.subnets.extend(
                            bgp.ipv4_address
                                .iter()
                                .chain(&bgp.ipv6_address)
                                .map(|a| a.trunc()),
                        );
                        info.tunnel_ips
                            .extend(bgp.ipv4_ipip_tunnel_addr.parse::<IpAddr>().ok());
                    }
                    info.tunnel_ips
                        .extend(n.spec.ipv4_vxlan_tunnel_addr.parse::<IpAddr>().ok());
                    let cidrs = n.status.iter().flat_map(|st| &st.pod_cidrs);
                    info.pod_cidrs
                        .extend(cidrs.filter_map(|c| gingham_model::cidr::parse_net(c).ok()));
                    for a in &n.spec.addresses {
                        if let Ok(net) = gingham_model::cidr::parse_net(&a.address) {
                            let ip = net.addr();
                            if !info.ips.contains(&ip) {
                                info.ips.push(ip);
                            }
                        }
                    }
                }
                Resource::BlockAffinity(b) if !b.spec.deleted => {
                    if let Ok(net) = gingham_model::cidr::parse_net(&b.spec.cidr) {
                        let info = s.nodes.entry(b.spec.node.clone()).or_default();
                        info.name = b.spec.node.clone();
                        info.pod_cidrs.push(net);
                    }
                }
                Resource::FelixConfiguration(f) => s.apply_felix(f),
                Resource::IpPool(pool) => {
                    use gingham_model::pool::{IpipMode, VxlanMode};
                    if let Some(cidr) = pool.spec.cidr {
                        let (ipip, vxlan) = (pool.spec.ipip(), pool.spec.vxlan());
                        let always = ipip == IpipMode::Always || vxlan == VxlanMode::Always;
                        s.pools.push(PoolEncap {
                            name: pool.metadata.name.clone(),
                            cidr,
                            always,
                            cross_subnet: !always
                                && (ipip == IpipMode::CrossSubnet
                                    || vxlan == VxlanMode::CrossSubnet),
                        });
                    }
                }
                _ => {}
            }
        }
        if !s.profiles.contains_key(DEFAULT_ALLOW_PROFILE) {
            let allow = |dir| CompiledRule::simple(0, Action::Allow, dir);
            s.profiles.insert(
                DEFAULT_ALLOW_PROFILE.to_owned(),
                ProfileInfo {
                    name: DEFAULT_ALLOW_PROFILE.to_owned(),
                    ingress: vec![allow(Direction::Ingress)],
                    egress: vec![allow(Direction::Egress)],
                    labels_to_apply: BTreeMap::new(),
                },
            );
        }
        s.tiers = tier_list(tiers, s.policies.iter().chain(staged.iter()));

        for w in weps {
            let spec = &w.spec;
            let ns = w.metadata.namespace_or_empty().to_owned();
            let display_pod = if spec.pod.is_empty() {
                w.metadata.name.clone()
            } else {
                spec.pod.clone()
            };
            let labels: BTreeMap<String, String> = w
                .metadata
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut labels = labels;
            labels
                .entry(NAMESPACE_LABEL.to_owned())
                .or_insert_with(|| ns.clone());
            if !spec.service_account_name.is_empty() {
                labels
                    .entry(SERVICE_ACCOUNT_LABEL.to_owned())
                    .or_insert_with(|| spec.service_account_name.clone());
            }
            let ports = spec
                .ports
                .iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| NamedPort {
                    name: p.name.clone(),
                    protocol: p.protocol.number(),
                    port: p.port,
                })
                .collect();
            let ep = s.endpoint(
                format!("{ns}/{display_pod}"),
                EndpointKind::Workload,
                w.metadata.name.clone(),
                Some(ns),
                spec.node.clone(),
                spec.interface_name.clone(),
                labels,
                spec.ip_networks.clone(),
                ports,
                spec.profiles.clone(),
            );
            s.endpoints.push(ep);
        }
        for h in heps {
            let spec = &h.spec;
            let ports = spec
                .ports
                .iter()
                .map(|p| NamedPort {
                    name: p.name.clone(),
                    protocol: p.protocol.number(),
                    port: p.port,
                })
                .collect();
            let labels = h
                .metadata
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let ep = s.endpoint(
                format!("{}/{}", spec.node, h.metadata.name),
                EndpointKind::Host,
                h.metadata.name.clone(),
                None,
                spec.node.clone(),
                spec.interface_name.clone(),
                labels,
                spec.expected_ips
                    .iter()
                    .map(|ip| IpNet::from(*ip))
                    .collect(),
                ports,
                spec.profiles.clone(),
            );
            s.endpoints.push(ep);
        }
        // Nodes known only through their endpoints.
        for ep in &s.endpoints {
            if !ep.node.is_empty() && !s.nodes.contains_key(&ep.node) {
                s.nodes.insert(
                    ep.node.clone(),
                    NodeInfo {
                        name: ep.node.clone(),
                        ..NodeInfo::default()
                    },
                );
            }
        }
        s.endpoints
            .sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.key.cmp(&b.key)));
        for i in 0..s.netsets.len() {
            let labels = s.effective_labels(&s.netsets[i].own_labels, &s.netsets[i].profiles());
            s.netsets[i].labels = labels;
        }
        s.reindex();
        if !staged.is_empty() {
            let mut view = s.policies.clone();
            for sp in staged {
                let enforced_kind = match sp.id.kind {
                    PolicyKind::StagedNetworkPolicy => PolicyKind::NetworkPolicy,
                    PolicyKind::StagedKubernetesNetworkPolicy => {
                        PolicyKind::KubernetesNetworkPolicy
                    }
                    _ => PolicyKind::GlobalNetworkPolicy,
                };
                view.retain(|p| {
                    !(p.id.kind == enforced_kind
                        && p.id.namespace == sp.id.namespace
                        && p.id.name == sp.id.name)
                });
                if sp.staged != Some(StagedAction::Delete) {
                    view.push(sp);
                }
            }
            s.staged_view = Some(view);
        }
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        &self,
        name: String,
        kind: EndpointKind,
        resource: String,
        namespace: Option<String>,
        node: String,
        interface: String,
        labels: BTreeMap<String, String>,
        ips: Vec<IpNet>,
        ports: Vec<NamedPort>,
        profiles: Vec<String>,
    ) -> Endpoint {
        let labels = LabelSet::from(labels);
        let effective = self.effective_labels(&labels, &profiles);
        let key = match (&kind, &namespace) {
            (EndpointKind::Workload, Some(ns)) => format!("WorkloadEndpoint/{ns}/{resource}"),
            (EndpointKind::Workload, None) => format!("WorkloadEndpoint/{resource}"),
            (EndpointKind::Host, _) => format!("HostEndpoint/{resource}"),
        };
        Endpoint {
            name,
            key,
            kind,
            resource,
            namespace,
            node,
            interface,
            labels,
            effective_labels: effective,
            ips,
            ports,
            profiles,
        }
    }

    /// Own labels over the labels the profiles apply; earlier profiles win over later ones.
    pub fn effective_labels(&self, own: &LabelSet, profiles: &[String]) -> LabelSet {
        let inherited = profiles.iter().any(|p| {
            self.profiles
                .get(p)
                .is_some_and(|i| !i.labels_to_apply.is_empty())
        });
        if !inherited {
            return own.clone();
        }
        let mut effective = BTreeMap::new();
        for p in profiles.iter().rev() {
            if let Some(info) = self.profiles.get(p) {
                for (k, v) in &info.labels_to_apply {
                    effective.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in own.iter() {
            effective.insert(k.to_owned(), v.to_owned());
        }
        LabelSet::from(effective)
    }

    fn apply_felix(&mut self, f: &FelixConfiguration) {
        self.felix.apply(f);
    }

    fn add_policy(&mut self, raw: RawPolicy<'_>, staged: &mut Vec<Policy>) {
        let id = PolicyRef {
            kind: raw.kind,
            namespace: raw.namespace.clone(),
            name: raw.name.clone(),
        };
        let where_ = id.to_string();
        let mut parts = Vec::new();
        match self.parse_selector(&where_, "spec.selector", raw.selector) {
            Some(sel) => parts.push(sel),
            None if raw.selector.trim().is_empty() => parts.push(Selector::all()),
            None => return,
        }
        if let Some(ns) = &raw.namespace {
            parts.push(namespace_is(ns));
        }
        if !raw.namespace_selector.trim().is_empty() {
            match self.parse_selector(&where_, "spec.namespaceSelector", raw.namespace_selector) {
                Some(sel) => parts.push(fold_namespace_selector(&sel)),
                None => return,
            }
        }
        if !raw.sa_selector.trim().is_empty() {
            match self.parse_selector(&where_, "spec.serviceAccountSelector", raw.sa_selector) {
                Some(sel) => parts.push(sel.with_key_prefix(SERVICE_ACCOUNT_LABEL_PREFIX)),
                None => return,
            }
        }
        let selector = Selector::and_all(parts.iter());
        let types = if raw.types.is_empty() {
            infer_types(raw.ingress, raw.egress)
        } else {
            raw.types.to_vec()
        };
        let ns = raw.namespace.as_deref();
        let policy = Policy {
            tier: if raw.tier.is_empty() {
                DEFAULT_TIER.to_owned()
            } else {
                raw.tier.clone()
            },
            order: raw.order,
            selector,
            ingress_type: types.contains(&PolicyType::Ingress),
            egress_type: types.contains(&PolicyType::Egress),
            ingress: self.compile_rules(&where_, Direction::Ingress, raw.ingress, ns),
            egress: self.compile_rules(&where_, Direction::Egress, raw.egress, ns),
            staged: raw.staged,
            apply_on_forward: raw.flags.0 || raw.flags.1 || raw.flags.2,
            pre_dnat: raw.flags.1,
            do_not_track: raw.flags.2,
            id,
        };
        if policy.staged.is_some() {
            staged.push(policy);
        } else {
            self.policies.push(policy);
        }
    }

    fn parse_selector(&mut self, where_: &str, field: &str, text: &str) -> Option<Selector> {
        if text.trim().is_empty() {
            return None;
        }
        match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                self.warnings.push(Warning(format!(
                    "{where_}: {field}: {e}; the policy is ignored"
                )));
                None
            }
        }
    }

    fn compile_rules(
        &mut self,
        where_: &str,
        dir: Direction,
        rules: &[Rule],
        namespace: Option<&str>,
    ) -> Vec<CompiledRule> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("{where_}: {dir} rule {i}");
                if r.http.is_some() {
                    self.warnings.push(Warning(format!(
                        "{at}: http matches are enforced only by an L7 proxy; the rule is evaluated without them"
                    )));
                }
                CompiledRule {
                    index: i,
                    action: r.action,
                    ip_version: r.ip_version,
                    protocol: r.protocol.map(|p| p.number()),
                    not_protocol: r.not_protocol.map(|p| p.number()),
                    icmp: r.icmp.map(|i| (i.type_, i.code)),
                    not_icmp: r.not_icmp.map(|i| (i.type_, i.code)),
                    source: self.compile_entity(&at, "source", &r.source, namespace),
                    destination: self.compile_entity(&at, "destination", &r.destination, namespace),
                    http: r.http.is_some(),
                }
            })
            .collect()
    }

    fn compile_entity(
        &mut self,
        at: &str,
        side: &str,
        e: &EntityRule,
        namespace: Option<&str>,
    ) -> Entity {
        let mut out = Entity {
            nets: e.nets.clone(),
            not_nets: e.not_nets.clone(),
            ports: e.ports.clone(),
            not_ports: e.not_ports.clone(),
            services: e.services.is_some(),
            written_selector: e.selector.as_str().into(),
            ..Entity::default()
        };
        if out.services {
            self.warnings.push(Warning(format!(
                "{at}: {side}.services needs Kubernetes Services, which are not modelled; the rule matches nothing"
            )));
        }
        let uses_selector = !e.selector.trim().is_empty()
            || !e.namespace_selector.trim().is_empty()
            || e.service_accounts.is_some();
        if uses_selector {
            let mut parts = Vec::new();
            let mut ok = true;
            if !e.namespace_selector.trim().is_empty() {
                match self.parse_selector(
                    at,
                    &format!("{side}.namespaceSelector"),
                    &e.namespace_selector,
                ) {
                    Some(s) => parts.push(fold_namespace_selector(&s)),
                    None => ok = false,
                }
            } else if let Some(ns) = namespace {
                parts.push(namespace_is(ns));
            }
            if let Some(sa) = &e.service_accounts {
                if !sa.names.is_empty() {
                    let names: Vec<String> = sa.names.iter().map(|n| format!("'{n}'")).collect();
                    let text = format!("{SERVICE_ACCOUNT_LABEL} in {{{}}}", names.join(", "));
                    match Selector::parse(&text) {
                        Ok(s) => parts.push(s),
                        Err(_) => ok = false,
                    }
                }
                if !sa.selector.trim().is_empty() {
                    match self.parse_selector(
                        at,
                        &format!("{side}.serviceAccounts.selector"),
                        &sa.selector,
                    ) {
                        Some(s) => parts.push(s.with_key_prefix(SERVICE_ACCOUNT_LABEL_PREFIX)),
                        None => ok = false,
                    }
                }
            }
            if !e.selector.trim().is_empty() {
                match self.parse_selector(at, &format!("{side}.selector"), &e.selector) {
                    Some(s) => parts.push(s),
                    None => ok = false,
                }
            }
            out.selector = Some(if ok {
                Selector::and_all(parts.iter())
            } else {
                // An unparsable selector matches nothing (validation normally prevents this).
                Selector::parse("has(gingham.invalid/selector) && !has(gingham.invalid/selector)")
                    .unwrap_or_else(|_| Selector::all())
            });
        }
        if !e.not_selector.trim().is_empty() {
            out.not_selector =
                self.parse_selector(at, &format!("{side}.notSelector"), &e.not_selector);
        }
        out
    }

    /// Rebuilds the lookup index after `endpoints` changed.
    pub fn reindex(&mut self) {
        let mut index = EndpointIndex::default();
        for (i, e) in self.endpoints.iter().enumerate() {
            index.by_name.entry(e.name.clone()).or_default().push(i);
            let mut wide = false;
            for net in &e.ips {
                if net.prefix_len() == net.max_prefix_len() {
                    index.by_ip.entry(net.addr()).or_default().push(i);
                } else {
                    wide = true;
                }
            }
            if wide {
                index.wide.push(i);
            }
            if e.kind == EndpointKind::Host {
                // A wildcard (`*`) one first, then the first by name.
                let better = match index.host_of_node.get(&e.node) {
                    None => true,
                    Some(&j) => {
                        let o = &self.endpoints[j];
                        (e.interface != "*", &e.name) < (o.interface != "*", &o.name)
                    }
                };
                if better {
                    index.host_of_node.insert(e.node.clone(), i);
                }
            }
        }
        self.index = index;
    }

    /// The position of `ep` in `endpoints`, if it is one of them (this very value, not an
    /// equal one).
    pub fn position(&self, ep: &Endpoint) -> Option<usize> {
        let size = std::mem::size_of::<Endpoint>().max(1);
        let offset =
            (ep as *const Endpoint as usize).checked_sub(self.endpoints.as_ptr() as usize)?;
        let i = offset / size;
        (offset % size == 0 && self.endpoints.get(i).is_some_and(|e| std::ptr::eq(e, ep)))
            .then_some(i)
    }

    /// Every endpoint with this display name.
    pub fn endpoints_named(&self, name: &str) -> impl Iterator<Item = &Endpoint> {
        self.index
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.endpoints[i])
    }

    /// Every endpoint that has `ip`.
    pub fn endpoints_with_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Endpoint> {
        self.index
            .by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .chain(self.index.wide.iter())
            .map(|&i| &self.endpoints[i])
            .filter(move |e| e.has_ip(ip))
    }

    pub fn endpoint_by_name(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints_named(name).next()
    }

    /// The host endpoint that polices a node's own traffic: a wildcard (`*`) one first, then
    /// the first by name.
    pub fn host_endpoint_of(&self, node: &str) -> Option<&Endpoint> {
        self.index
            .host_of_node
            .get(node)
            .map(|&i| &self.endpoints[i])
    }

    /// The endpoint owning `ip`, if any (workloads first).
    pub fn endpoint_with_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        let mut found = self.endpoints_with_ip(ip);
        let first = found.next()?;
        if first.kind == EndpointKind::Workload {
            return Some(first);
        }
        found
            .find(|e| e.kind == EndpointKind::Workload)
            .or(Some(first))
    }

    /// Whether `selector` matches some endpoint or network set that has `ip` (felix's IP sets).
    pub fn ip_matches_selector(&self, ip: IpAddr, selector: &Selector) -> bool {
        self.endpoints_with_ip(ip)
            .any(|e| selector.matches(&e.effective_labels))
            || self
                .netsets
                .iter()
                .any(|n| n.nets.iter().any(|net| net.contains(&ip)) && selector.matches(&n.labels))
    }

    /// Whether an endpoint with `ip`, matching `selector` (if any), declares port `name` as
    /// `protocol`/`port` (felix's named-port IP sets).
    pub fn named_port_matches(
        &self,
        ip: IpAddr,
        name: &str,
        protocol: u8,
        port: u16,
        selector: Option<&Selector>,
    ) -> bool {
        self.endpoints_with_ip(ip).any(|e| {
            e.ports
                .iter()
                .any(|p| p.name == name && p.protocol == protocol && p.port == port)
                && selector.is_none_or(|s| s.matches(&e.effective_labels))
        })
    }
}

/// The parts of a (staged) NetworkPolicy the engine reads.
macro_rules! namespaced_raw {
    ($p:expr, $kind:expr, $staged:expr) => {
        RawPolicy {
            kind: $kind,
            namespace: Some($p.metadata.namespace_or_empty().to_owned()),
            name: $p.metadata.name.clone(),
            tier: $p.spec.tier.clone(),
            order: $p.spec.order,
            selector: &$p.spec.selector,
            namespace_selector: "",
            sa_selector: &$p.spec.service_account_selector,
            types: &$p.spec.types,
            ingress: &$p.spec.ingress,
            egress: &$p.spec.egress,
            flags: (false, false, false),
            staged: $staged,
        }
    };
}

/// The parts of a (staged) GlobalNetworkPolicy the engine reads.
macro_rules! global_raw {
    ($p:expr, $kind:expr, $staged:expr) => {
        RawPolicy {
            kind: $kind,
            namespace: None,
            name: $p.metadata.name.clone(),
            tier: $p.spec.tier.clone(),
            order: $p.spec.order,
            selector: &$p.spec.selector,
            namespace_selector: &$p.spec.namespace_selector,
            sa_selector: &$p.spec.service_account_selector,
            types: &$p.spec.types,
            ingress: &$p.spec.ingress,
            egress: &$p.spec.egress,
            flags: (
                $p.spec.apply_on_forward,
                $p.spec.pre_dnat,
                $p.spec.do_not_track,
            ),
            staged: $staged,
        }
    };
}
use {global_raw, namespaced_raw};

struct RawPolicy<'a> {
    kind: PolicyKind,
    namespace: Option<String>,
    name: String,
    tier: String,
    order: Option<f64>,
    selector: &'a str,
    namespace_selector: &'a str,
    sa_selector: &'a str,
    types: &'a [PolicyType],
    ingress: &'a [Rule],
    egress: &'a [Rule],
    /// applyOnForward, preDNAT, doNotTrack.
    flags: (bool, bool, bool),
    staged: Option<StagedAction>,
}

/// `projectcalico.org/namespace == '<ns>'`.
fn namespace_is(ns: &str) -> Selector {
    Selector::parse(&format!("{NAMESPACE_LABEL} == '{ns}'")).unwrap_or_else(|_| Selector::all())
}

/// A namespace selector as felix folds it: `all()` means any namespaced endpoint, `global()` only
/// non-namespaced ones, anything else applies to the namespace's labels (`pcns.` prefix).
fn fold_namespace_selector(sel: &Selector) -> Selector {
    let text = if sel.is_all() {
        format!("has({NAMESPACE_LABEL})")
    } else if sel.is_global() {
        format!("!has({NAMESPACE_LABEL})")
    } else {
        return sel.with_key_prefix(NAMESPACE_LABEL_PREFIX);
    };
    Selector::parse(&text).unwrap_or_else(|_| Selector::all())
}

impl CompiledRule {
    /// A rule with only an action.
    pub fn simple(index: usize, action: Action, _dir: Direction) -> CompiledRule {
        CompiledRule {
            index,
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: Entity::default(),
            destination: Entity::default(),
            http: false,
        }
    }
}
