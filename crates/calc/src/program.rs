//! The per-endpoint programs a node enforces, and the IP sets they use: what the dataplane
//! renders (nftables chains and sets). Selectors are resolved once into IP sets shared by every
//! rule that uses them, as felix does; rules then only test set membership.
//!
//! [`program_verdict`] runs programs the way the dataplane will; the property tests hold it equal
//! to the reference evaluator ([`Snapshot::verdict`]) on random clusters and flows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gingham_model::{Action, Port};
use gingham_selector::Selector;
use ipnet::IpNet;
use serde::Serialize;

use crate::eval::{Outcome, Verdict};
use crate::snapshot::{
    Chain, CompiledRule, Direction, Endpoint, EndpointKind, Entity, NetSet, Policy, PolicyRef,
    Snapshot,
};

/// Names an IP set: `s:<selector id>` for a selector's addresses, `n:<port name>:<selector id>`
/// for a named port's (address, protocol, port) triples.
pub type SetId = String;

/// The members of one IP set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IpSet {
    /// For selector sets: the CIDRs of matching endpoints and network sets.
    pub nets: BTreeSet<IpNet>,
    /// For named-port sets: (address, protocol, port).
    pub ports: BTreeSet<(IpNet, u8, u16)>,
}

/// One side of a rule with selectors replaced by set references.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SideProgram {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub set: Option<SetId>,
    pub not_set: Option<SetId>,
    /// Numeric port ranges.
    pub ports: Vec<(u16, u16)>,
    /// Named-port sets (OR-ed with `ports`).
    pub port_sets: Vec<SetId>,
    pub not_ports: Vec<(u16, u16)>,
    pub not_port_sets: Vec<SetId>,
    /// Matches nothing (a rule on Kubernetes Services).
    pub never: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleProgram {
    pub index: usize,
    pub action: Action,
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<(Option<u8>, Option<u8>)>,
    pub not_icmp: Option<(Option<u8>, Option<u8>)>,
    pub source: SideProgram,
    pub destination: SideProgram,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyProgram {
    pub policy: PolicyRef,
    pub rules: Vec<RuleProgram>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierProgram {
    pub tier: String,
    pub policies: Vec<PolicyProgram>,
    /// Deny (end-of-tier drop) or Pass.
    pub default_action: Action,
}

/// How the profiles part of a program ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ProfileProgram {
    Rules {
        profile: String,
        rules: Vec<RuleProgram>,
    },
    /// The profile does not exist: drop (felix's default-drop profile).
    Missing { profile: String },
}

/// One direction of one endpoint in one mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainProgram {
    pub tiers: Vec<TierProgram>,
    /// Empty with `profiles_apply` means "no profiles: drop".
    pub profiles: Vec<ProfileProgram>,
    /// Whether profiles (and the final drop) follow the tiers; false for forward, preDNAT and
    /// untracked chains, which let unmatched packets continue.
    pub profiles_apply: bool,
    /// Whether end-of-tier drops apply (false for preDNAT and untracked chains).
    pub end_of_tier: bool,
    /// A tier that does not exist has policies selecting the endpoint: everything is dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_tier: Option<String>,
    /// The policies in that tier that select the endpoint (what `explain` names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_tier_policies: Vec<PolicyRef>,
}

/// Everything one endpoint enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointProgram {
    /// The endpoint's display name (`ns/pod`, `node/hep`).
    pub endpoint: String,
    /// The interface the dataplane attaches the program to (`cali…`, `eth0`, `*`).
    pub interface: String,
    /// A host endpoint (the node's own interfaces) rather than a workload.
    pub host: bool,
    pub ingress: ChainProgram,
    pub egress: ChainProgram,
    /// Host endpoints only: applyOnForward, preDNAT and doNotTrack chains.
    pub forward_ingress: Option<ChainProgram>,
    pub forward_egress: Option<ChainProgram>,
    pub pre_dnat_ingress: Option<ChainProgram>,
    pub untracked_ingress: Option<ChainProgram>,
    pub untracked_egress: Option<ChainProgram>,
}

/// The desired dataplane state of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeProgram {
    /// By endpoint key ([`Endpoint::key`]).
    pub endpoints: BTreeMap<String, EndpointProgram>,
    pub sets: BTreeMap<SetId, IpSet>,
}

impl NodeProgram {
    /// Missing objects that close local endpoints, each with the endpoints it closes: tiers
    /// that do not exist but hold policies selecting them, and profiles that do not exist.
    pub fn problems(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ep in self.endpoints.values() {
            let chains = [&ep.ingress, &ep.egress]
                .into_iter()
                .chain(ep.forward_ingress.as_ref())
                .chain(ep.forward_egress.as_ref())
                .chain(ep.pre_dnat_ingress.as_ref())
                .chain(ep.untracked_ingress.as_ref())
                .chain(ep.untracked_egress.as_ref());
            for chain in chains {
                let mut missing: Vec<String> = chain
                    .missing_tier
                    .iter()
                    .map(|t| format!("tier {t} does not exist"))
                    .collect();
                if chain.profiles_apply {
                    // A missing profile matters when packets reach it: no profile before it
                    // allows everything.
                    for p in &chain.profiles {
                        match p {
                            ProfileProgram::Missing { profile } => {
                                missing.push(format!("profile {profile} does not exist"));
                                break;
                            }
                            ProfileProgram::Rules { rules, .. } => {
                                if rules.first().is_some_and(RuleProgram::allows_everything) {
                                    break;
                                }
                            }
                        }
                    }
                }
                for m in missing {
                    out.entry(m).or_default().insert(ep.endpoint.clone());
                }
            }
        }
        out
    }
}

impl RuleProgram {
    /// An Allow rule without any criterion.
    pub fn allows_everything(&self) -> bool {
        self.action == Action::Allow
            && self.ip_version.is_none()
            && self.protocol.is_none()
            && self.not_protocol.is_none()
            && self.icmp.is_none()
            && self.not_icmp.is_none()
            && self.source == SideProgram::default()
            && self.destination == SideProgram::default()
    }
}

/// What an IP set holds, before its members are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetSpec {
    /// Addresses of endpoints and network sets matching the selector.
    Selector(Selector),
    /// (address, protocol, port) of endpoints declaring the named port (and matching the
    /// selector, when there is one).
    NamedPort {
        name: String,
        selector: Option<Selector>,
    },
}

impl SetSpec {
    pub fn id(&self) -> SetId {
        match self {
            SetSpec::Selector(s) => format!("s:{}", s.unique_id()),
            SetSpec::NamedPort { name, selector } => format!(
                "n:{name}:{}",
                selector
                    .as_ref()
                    .map_or_else(|| "all".to_owned(), Selector::unique_id)
            ),
        }
    }

    /// The selector an endpoint or network set must match to be in the set (`None`: any,
    /// for a named port without one).
    pub fn selector(&self) -> Option<&Selector> {
        match self {
            SetSpec::Selector(s) => Some(s),
            SetSpec::NamedPort { selector, .. } => selector.as_ref(),
        }
    }

    /// What one endpoint contributes.
    pub fn endpoint_members(&self, e: &Endpoint) -> IpSet {
        let mut set = IpSet::default();
        match self {
            SetSpec::Selector(sel) => {
                if sel.matches(&e.effective_labels) {
                    set.nets.extend(e.ips.iter().copied());
                }
            }
            SetSpec::NamedPort { name, selector } => {
                if selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&e.effective_labels))
                {
                    for p in e.ports.iter().filter(|p| &p.name == name) {
                        for ip in &e.ips {
                            set.ports.insert((*ip, p.protocol, p.port));
                        }
                    }
                }
            }
        }
        set
    }

    /// What one network set contributes.
    pub fn netset_members(&self, n: &NetSet) -> IpSet {
        let mut set = IpSet::default();
        if let SetSpec::Selector(sel) = self
            && sel.matches(&n.labels)
        {
            set.nets.extend(n.nets.iter().copied());
        }
        set
    }

    /// The members over a whole snapshot.
    pub fn members(&self, snap: &Snapshot) -> IpSet {
        let mut set = IpSet::default();
        for e in &snap.endpoints {
            set.extend(self.endpoint_members(e));
        }
        for n in &snap.netsets {
            set.extend(self.netset_members(n));
        }
        set
    }
}

impl IpSet {
    pub fn extend(&mut self, other: IpSet) {
        self.nets.extend(other.nets);
        self.ports.extend(other.ports);
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.ports.is_empty()
    }
}

/// Builds programs; with `resolve`, also the members of the sets they use.
pub(crate) struct Builder<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) sets: BTreeMap<SetId, IpSet>,
    /// Every set the built programs reference.
    pub(crate) specs: BTreeMap<SetId, SetSpec>,
    pub(crate) resolve: bool,
    /// The policies given to [`Builder::endpoint`] are known to select the endpoint (the
    /// incremental calculator's, worked out for its labels): they are not matched again.
    pub(crate) preselected: bool,
    /// Policy selectors matched against endpoints while building.
    pub(crate) matched: usize,
}

impl<'a> Builder<'a> {
    pub(crate) fn new(snap: &'a Snapshot, resolve: bool) -> Self {
        Builder {
            snap,
            sets: BTreeMap::new(),
            specs: BTreeMap::new(),
            resolve,
            preselected: false,
            matched: 0,
        }
    }

    fn register(&mut self, spec: SetSpec) -> SetId {
        let id = spec.id();
        if !self.specs.contains_key(&id) {
            if self.resolve {
                self.sets.insert(id.clone(), spec.members(self.snap));
            }
            self.specs.insert(id.clone(), spec);
        }
        id
    }

    fn selector_set(&mut self, sel: &Selector) -> SetId {
        self.register(SetSpec::Selector(sel.clone()))
    }

    fn named_port_set(&mut self, name: &str, sel: Option<&Selector>) -> SetId {
        self.register(SetSpec::NamedPort {
            name: name.to_owned(),
            selector: sel.cloned(),
        })
    }

    fn side(&mut self, e: &Entity) -> SideProgram {
        let mut side = SideProgram {
            nets: e.nets.clone(),
            not_nets: e.not_nets.clone(),
            never: e.services,
            ..SideProgram::default()
        };
        side.set = e.selector.as_ref().map(|s| self.selector_set(s));
        side.not_set = e.not_selector.as_ref().map(|s| self.selector_set(s));
        for p in &e.ports {
            match p {
                Port::Range { min, max } => side.ports.push((*min, *max)),
                Port::Named(n) => {
                    let id = self.named_port_set(n, e.selector.as_ref());
                    side.port_sets.push(id);
                }
            }
        }
        for p in &e.not_ports {
            match p {
                Port::Range { min, max } => side.not_ports.push((*min, *max)),
                Port::Named(n) => {
                    let id = self.named_port_set(n, e.selector.as_ref());
                    side.not_port_sets.push(id);
                }
            }
        }
        side
    }

    fn rule(&mut self, r: &CompiledRule) -> RuleProgram {
        RuleProgram {
            index: r.index,
            action: r.action,
            ip_version: r.ip_version,
            protocol: r.protocol,
            not_protocol: r.not_protocol,
            icmp: r.icmp,
            not_icmp: r.not_icmp,
            source: self.side(&r.source),
            destination: self.side(&r.destination),
        }
    }

    fn chain<P: std::borrow::Borrow<Policy>>(
        &mut self,
        policies: &[P],
        ep: &Endpoint,
        dir: Direction,
        kind: Chain,
    ) -> ChainProgram {
        let (missing_tier, missing_tier_policies) =
            match self.snap.missing_tier(policies, ep, dir, kind) {
                Some((tier, policies)) => (Some(tier), policies),
                None => (None, Vec::new()),
            };
        let mut tiers = Vec::new();
        let mut matched = 0;
        for tier in &self.snap.tiers {
            let mut selected: Vec<&Policy> = policies
                .iter()
                .map(P::borrow)
                .filter(|p| {
                    p.tier == tier.name
                        && p.has_type(dir)
                        && kind.admits(p, ep)
                        && (self.preselected || {
                            matched += 1;
                            p.selects(ep)
                        })
                })
                .collect();
            if selected.is_empty() {
                continue;
            }
            selected.sort_by_key(|p| p.sort_key());
            let policies = selected
                .into_iter()
                .map(|p| PolicyProgram {
                    policy: p.id.clone(),
                    rules: p.rules(dir).iter().map(|r| self.rule(r)).collect(),
                })
                .collect();
            tiers.push(TierProgram {
                tier: tier.name.clone(),
                policies,
                default_action: tier.default_action,
            });
        }
        self.matched += matched;
        let profiles_apply = kind.profiles_apply();
        let profiles = if profiles_apply {
            let mut out = Vec::new();
            for name in &ep.profiles {
                match self.snap.profiles.get(name) {
                    Some(p) => {
                        let rules = p.rules(dir).iter().map(|r| self.rule(r)).collect();
                        out.push(ProfileProgram::Rules {
                            profile: name.clone(),
                            rules,
                        });
                    }
                    None => {
                        out.push(ProfileProgram::Missing {
                            profile: name.clone(),
                        });
                        break;
                    }
                }
            }
            out
        } else {
            Vec::new()
        };
        ChainProgram {
            tiers,
            profiles,
            profiles_apply,
            end_of_tier: kind.end_of_tier(),
            missing_tier,
            missing_tier_policies,
        }
    }

    /// The program of `ep` under `policies` (all of them, or those known to select it).
    pub(crate) fn endpoint<P: std::borrow::Borrow<Policy>>(
        &mut self,
        policies: &[P],
        ep: &Endpoint,
    ) -> EndpointProgram {
        let host = ep.kind == EndpointKind::Host;
        let opt = |b: &mut Self, dir, kind| host.then(|| b.chain(policies, ep, dir, kind));
        EndpointProgram {
            endpoint: ep.name.clone(),
            interface: ep.interface.clone(),
            host,
            ingress: self.chain(policies, ep, Direction::Ingress, Chain::Normal),
            egress: self.chain(policies, ep, Direction::Egress, Chain::Normal),
            forward_ingress: opt(self, Direction::Ingress, Chain::Forward),
            forward_egress: opt(self, Direction::Egress, Chain::Forward),
            pre_dnat_ingress: opt(self, Direction::Ingress, Chain::PreDnat),
            untracked_ingress: opt(self, Direction::Ingress, Chain::Untracked),
            untracked_egress: opt(self, Direction::Egress, Chain::Untracked),
        }
    }
}

impl Snapshot {
    /// The programs of every endpoint on `node` (all endpoints with `None`) and the IP sets
    /// they reference, under the enforced policies.
    pub fn node_program(&self, node: Option<&str>) -> NodeProgram {
        let mut b = Builder::new(self, true);
        let mut endpoints = BTreeMap::new();
        for ep in &self.endpoints {
            if node.is_some_and(|n| n != ep.node) {
                continue;
            }
            endpoints.insert(ep.key.clone(), b.endpoint(&self.policies, ep));
        }
        NodeProgram {
            endpoints,
            sets: b.sets,
        }
    }
}

/// A packet as the dataplane sees it.
struct Packet<'a> {
    sets: &'a BTreeMap<SetId, IpSet>,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    protocol: u8,
    port: Option<u16>,
    src_port: Option<u16>,
}

impl Packet<'_> {
    fn in_set(&self, id: &SetId, ip: IpAddr) -> bool {
        self.sets
            .get(id)
            .is_some_and(|s| s.nets.iter().any(|n| n.contains(&ip)))
    }

    fn in_port_set(&self, id: &SetId, ip: IpAddr, port: u16) -> bool {
        self.sets.get(id).is_some_and(|s| {
            s.ports
                .iter()
                .any(|(n, pr, p)| n.contains(&ip) && *pr == self.protocol && *p == port)
        })
    }

    fn side(&self, s: &SideProgram, ip: IpAddr, port: Option<u16>) -> bool {
        if s.never {
            return false;
        }
        if !s.nets.is_empty() && !s.nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if s.not_nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if s.set.as_ref().is_some_and(|id| !self.in_set(id, ip)) {
            return false;
        }
        if s.not_set.as_ref().is_some_and(|id| self.in_set(id, ip)) {
            return false;
        }
        let port_match = |ranges: &[(u16, u16)], sets: &[SetId]| {
            port.is_some_and(|p| {
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&p))
                    || sets.iter().any(|id| self.in_port_set(id, ip, p))
            })
        };
        if (!s.ports.is_empty() || !s.port_sets.is_empty()) && !port_match(&s.ports, &s.port_sets) {
            return false;
        }
        if (!s.not_ports.is_empty() || !s.not_port_sets.is_empty())
            && port_match(&s.not_ports, &s.not_port_sets)
        {
            return false;
        }
        true
    }

    fn rule(&self, r: &RuleProgram) -> bool {
        if r.ip_version
            .is_some_and(|v| (v == 6) != self.src_ip.is_ipv6())
        {
            return false;
        }
        if r.protocol.is_some_and(|p| p != self.protocol) || r.not_protocol == Some(self.protocol) {
            return false;
        }
        let is_icmp = self.protocol == 1 || self.protocol == 58;
        // The packets compared carry no ICMP type: a type-specific rule never matches them.
        if let Some((t, _)) = r.icmp
            && (!is_icmp || t.is_some())
        {
            return false;
        }
        if let Some((t, _)) = r.not_icmp
            && is_icmp
            && t.is_none()
        {
            return false;
        }
        self.side(&r.source, self.src_ip, self.src_port)
            && self.side(&r.destination, self.dst_ip, self.port)
    }

    /// Runs one chain: the dataplane's version of the evaluator's endpoint stage.
    fn chain(&self, c: &ChainProgram) -> Outcome {
        if c.missing_tier.is_some() {
            return Outcome::Deny;
        }
        for tier in &c.tiers {
            let mut passed = false;
            'policies: for p in &tier.policies {
                for r in &p.rules {
                    if !self.rule(r) {
                        continue;
                    }
                    match r.action {
                        Action::Allow => return Outcome::Allow,
                        Action::Deny => return Outcome::Deny,
                        Action::Log => {}
                        Action::Pass => {
                            passed = true;
                            break 'policies;
                        }
                    }
                }
            }
            if !passed && c.end_of_tier && tier.default_action != Action::Pass {
                return Outcome::Deny;
            }
        }
        if !c.profiles_apply {
            return Outcome::Continue;
        }
        for p in &c.profiles {
            match p {
                ProfileProgram::Missing { .. } => return Outcome::Deny,
                ProfileProgram::Rules { rules, .. } => {
                    for r in rules {
                        if !self.rule(r) {
                            continue;
                        }
                        match r.action {
                            Action::Allow => return Outcome::Allow,
                            Action::Deny => return Outcome::Deny,
                            Action::Log => {}
                            Action::Pass => break,
                        }
                    }
                }
            }
        }
        Outcome::Deny
    }
}

/// One endpoint stage of a verdict, decided twice: by the reference evaluator and by the
/// endpoint's program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageCheck {
    pub kind: crate::eval::StageKind,
    pub endpoint: String,
    pub reference: Outcome,
    pub program: Outcome,
}

/// Re-runs every policy stage of a verdict with the programs. The path between stages (which
/// stages a packet meets) is shared logic, so when every stage agrees the verdicts agree.
pub fn check_stages(program: &NodeProgram, reference: &Verdict) -> Vec<StageCheck> {
    use crate::eval::StageKind as K;
    let (Some(src_ip), Some(dst_ip)) = (reference.src_ip, reference.dst_ip) else {
        return Vec::new();
    };
    let pkt = Packet {
        sets: &program.sets,
        src_ip,
        dst_ip,
        protocol: reference.protocol,
        port: reference.port,
        src_port: None,
    };
    let mut out = Vec::new();
    for stage in &reference.stages {
        // Failsafe ports are decided before any chain.
        if stage
            .steps
            .iter()
            .any(|s| matches!(s, crate::eval::Step::Failsafe { .. }))
        {
            continue;
        }
        let Some(ep) = program.endpoints.get(&stage.endpoint_key) else {
            continue;
        };
        let chain = match stage.kind {
            K::WorkloadEgress | K::HostEgress => Some(&ep.egress),
            K::WorkloadIngress | K::HostIngress => Some(&ep.ingress),
            K::ForwardEgress => ep.forward_egress.as_ref(),
            K::ForwardIngress => ep.forward_ingress.as_ref(),
            K::PreDnatIngress => ep.pre_dnat_ingress.as_ref(),
            K::UntrackedIngress => ep.untracked_ingress.as_ref(),
            K::UntrackedEgress => ep.untracked_egress.as_ref(),
            K::EndpointToHost => None,
        };
        if let Some(c) = chain {
            out.push(StageCheck {
                kind: stage.kind,
                endpoint: stage.endpoint.clone(),
                reference: stage.outcome,
                program: pkt.chain(c),
            });
        }
    }
    out
}
