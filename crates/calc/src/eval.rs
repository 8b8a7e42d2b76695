//! The reference evaluator: the verdict for one flow, with a trace of every tier, policy and rule
//! consulted. Written to be obviously right rather than fast; the agent's rendered rules, `reach`
//! and `explain` are all checked against it.

use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use gingham_model::{Action, Port};
use gingham_selector::Selector;
use serde::Serialize;

use crate::snapshot::{
    Chain, CompiledRule, Direction, Endpoint, EndpointKind, Entity, NodeInfo, Policy, PolicyRef,
    Snapshot,
};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const SCTP: u8 = 132;

/// A peer of a flow, as named by a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// `namespace/pod` or `node/host-endpoint`.
    Endpoint(String),
    /// A node's own network stack (the host), by node name.
    Node(String),
    /// An address; resolved to the endpoint or node that owns it, else outside the cluster.
    Ip(IpAddr),
}

impl PeerSpec {
    /// Parses `ns/pod`, `node/hep`, an IP address, or a bare node name.
    pub fn parse(s: &str) -> PeerSpec {
        if let Ok(ip) = s.parse::<IpAddr>() {
            PeerSpec::Ip(ip)
        } else if s.contains('/') {
            PeerSpec::Endpoint(s.to_owned())
        } else {
            PeerSpec::Node(s.to_owned())
        }
    }
}

/// A flow to evaluate.
#[derive(Clone, Debug)]
pub struct Flow {
    pub src: PeerSpec,
    pub dst: PeerSpec,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP...).
    pub protocol: u8,
    /// Destination port (TCP/UDP/SCTP).
    pub port: Option<u16>,
    /// Source port, when rules look at it; `None` means an ephemeral port no rule names.
    pub src_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// Prefer IPv6 addresses of the peers.
    pub ipv6: bool,
}

impl Flow {
    pub fn tcp(src: &str, dst: &str, port: u16) -> Flow {
        Flow::new(src, dst, TCP, Some(port))
    }

    pub fn new(src: &str, dst: &str, protocol: u8, port: Option<u16>) -> Flow {
        Flow {
            src: PeerSpec::parse(src),
            dst: PeerSpec::parse(dst),
            protocol,
            port,
            src_port: None,
            icmp: None,
            ipv6: false,
        }
    }

    /// A flow between two endpoints named by their keys (as the matrix names them).
    pub fn between_endpoints(src: &str, dst: &str, protocol: u8, port: Option<u16>) -> Flow {
        Flow {
            src: PeerSpec::Endpoint(src.to_owned()),
            dst: PeerSpec::Endpoint(dst.to_owned()),
            ..Flow::new(src, dst, protocol, port)
        }
    }
}

/// A resolved peer.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    Workload(&'a Endpoint),
    HostEndpoint(&'a Endpoint),
    /// A node without (or not through) a host endpoint.
    Node(&'a NodeInfo),
    External(IpAddr),
}

impl<'a> Peer<'a> {
    pub fn node(&self) -> Option<&'a str> {
        match self {
            Peer::Workload(e) | Peer::HostEndpoint(e) => Some(e.node.as_str()),
            Peer::Node(n) => Some(n.name.as_str()),
            Peer::External(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Peer::Workload(e) => format!("pod {}", e.name),
            Peer::HostEndpoint(e) => format!("host endpoint {}", e.name),
            Peer::Node(n) => format!("node {}", n.name),
            Peer::External(ip) => format!("{ip} (outside the cluster)"),
        }
    }

    fn is_host(&self) -> bool {
        matches!(self, Peer::HostEndpoint(_) | Peer::Node(_))
    }
}

/// Why a workload's packet to its own host is dropped (the step `explain` shows).
pub const ENDPOINT_TO_HOST_DROP: &str =
    "DefaultEndpointToHostAction is Drop (felix's default): workloads may not reach their own host";

/// Where in the packet's path a decision was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// Egress policy of the source workload.
    WorkloadEgress,
    /// Felix's `DefaultEndpointToHostAction` for a workload talking to its own host.
    EndpointToHost,
    /// doNotTrack policy of the source host endpoint.
    UntrackedEgress,
    /// Host endpoint policy for traffic leaving the source host.
    HostEgress,
    /// applyOnForward policy of the source node's host endpoint, for forwarded traffic.
    ForwardEgress,
    /// doNotTrack policy of the destination host endpoint.
    UntrackedIngress,
    /// preDNAT policy of the destination node's host endpoint.
    PreDnatIngress,
    /// applyOnForward policy of the destination node's host endpoint, for forwarded traffic.
    ForwardIngress,
    /// Host endpoint policy for traffic to the destination host itself.
    HostIngress,
    /// Ingress policy of the destination workload.
    WorkloadIngress,
}

/// One thing the evaluator looked at.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Note {
        text: String,
    },
    TierStart {
        tier: String,
        policies: Vec<PolicyRef>,
    },
    /// A rule matched: Allow/Deny decide, Pass leaves the tier, Log continues.
    RuleMatched {
        policy: PolicyRef,
        rule: usize,
        action: Action,
    },
    PolicyNoMatch {
        policy: PolicyRef,
    },
    /// The tier's policies selected the endpoint but none decided: the tier's default action.
    EndOfTier {
        tier: String,
        action: Action,
    },
    NoProfiles,
    ProfileMissing {
        profile: String,
    },
    /// Policies selecting the endpoint are in a tier that does not exist: closed.
    TierMissing {
        tier: String,
        policies: Vec<PolicyRef>,
    },
    ProfileRuleMatched {
        profile: String,
        rule: usize,
        action: Action,
    },
    ProfileNoMatch {
        profile: String,
    },
    /// Every profile was consulted and none allowed.
    ProfilesExhausted,
    /// No applyOnForward / preDNAT / doNotTrack policy decided: the stage lets the packet on.
    DefaultContinue,
    Failsafe {
        protocol: u8,
        port: u16,
    },
}

/// What a stage concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    /// No decision here; the packet goes on to the next stage.
    Continue,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    pub kind: StageKind,
    /// The endpoint whose policy this is (`ns/pod`, `node/hep`).
    pub endpoint: String,
    /// The endpoint's unique key (see [`Endpoint::key`]).
    pub endpoint_key: String,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
}

/// The verdict for a flow and how it was reached.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub src: String,
    pub dst: String,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub protocol: u8,
    pub port: Option<u16>,
    /// Facts about the path (tunnel source addresses, unpoliced hops...).
    pub notes: Vec<String>,
    pub stages: Vec<Stage>,
    /// Whether the flow would be allowed if every staged policy were enforced; present only when
    /// staged policies exist.
    pub staged_allowed: Option<bool>,
}

impl Verdict {
    /// The stage that decided, if a policy stage did (the last one evaluated).
    pub fn deciding_stage(&self) -> Option<&Stage> {
        self.stages
            .iter()
            .rev()
            .find(|s| s.outcome != Outcome::Continue)
    }
}

/// Failure to resolve a flow's peers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error(
        "{0:?} is not a known pod (namespace/pod), host endpoint (node/name), node or IP address"
    )]
    UnknownPeer(String),
    #[error("{0:?} has no IPv{1} address")]
    NoAddress(String, u8),
    #[error("{0:?} names both a pod and a host endpoint; use the IP address instead")]
    Ambiguous(String),
}

/// The context rules are matched in.
struct Packet<'a> {
    snap: &'a Snapshot,
    /// Which policy list the verdict runs ([`View`]), and the memo of what it selects.
    view: View,
    selections: Option<&'a Selections>,
    /// Whether stages and steps are recorded (off: only the verdict matters).
    trace: bool,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    protocol: u8,
    port: Option<u16>,
    src_port: Option<u16>,
    icmp: Option<(u8, u8)>,
}

impl Snapshot {
    fn resolve(&self, spec: &PeerSpec) -> Result<Peer<'_>, FlowError> {
        match spec {
            PeerSpec::Ip(ip) => {
                if let Some(e) = self.endpoint_with_ip(*ip) {
                    return Ok(match e.kind {
                        EndpointKind::Workload => Peer::Workload(e),
                        EndpointKind::Host => Peer::HostEndpoint(e),
                    });
                }
                if let Some(n) = self
                    .nodes
                    .values()
                    .find(|n| n.ips.contains(ip) || n.tunnel_ips.contains(ip))
                {
                    return Ok(Peer::Node(n));
                }
                Ok(Peer::External(*ip))
            }
            PeerSpec::Node(name) => self
                .nodes
                .get(name)
                .map(Peer::Node)
                .ok_or_else(|| FlowError::UnknownPeer(name.clone())),
            PeerSpec::Endpoint(name) => {
                let mut found = self.endpoints_named(name);
                let first = found
                    .next()
                    .ok_or_else(|| FlowError::UnknownPeer(name.clone()))?;
                if found.next().is_some() {
                    return Err(FlowError::Ambiguous(name.clone()));
                }
                Ok(match first.kind {
                    EndpointKind::Workload => Peer::Workload(first),
                    EndpointKind::Host => Peer::HostEndpoint(first),
                })
            }
        }
    }

    /// Whether a host's packets from `src`'s node to the pod `dst` (on another node) go
    /// through the tunnel: the pod's pool encapsulates always, or CrossSubnet and the two
    /// nodes share no subnet (or their subnets are unknown). A pod address in no pool (the
    /// pools are not known) keeps the tunnel whenever the node has a tunnel address.
    fn tunneled(&self, src: &Peer<'_>, dst: &Peer<'_>, v6: bool) -> bool {
        let Peer::Workload(pod) = dst else {
            return false;
        };
        let Some(pool) = pod
            .ip(v6)
            .and_then(|ip| self.pools.iter().find(|p| p.cidr.contains(&ip)))
        else {
            return true;
        };
        if pool.always {
            return true;
        }
        if !pool.cross_subnet {
            return false;
        }
        let subnets = |n: Option<&str>| {
            n.and_then(|n| self.nodes.get(n))
                .map(|n| n.subnets.clone())
                .unwrap_or_default()
        };
        let (from, to) = (subnets(src.node()), subnets(dst.node()));
        !from.iter().any(|s| to.contains(s)) || from.is_empty()
    }

    /// The address a peer uses; hosts talking to pods on other nodes use their tunnel address
    /// when they have one (felix masquerades host traffic onto the tunnel), as seed 000 shows.
    fn address(
        &self,
        peer: &Peer<'_>,
        spec: &PeerSpec,
        v6: bool,
        toward_remote_pod: bool,
        notes: &mut Vec<String>,
    ) -> Result<IpAddr, FlowError> {
        if let PeerSpec::Ip(ip) = spec {
            return Ok(*ip);
        }
        let fam = if v6 { 6 } else { 4 };
        let name = || match spec {
            PeerSpec::Endpoint(n) | PeerSpec::Node(n) => n.clone(),
            PeerSpec::Ip(ip) => ip.to_string(),
        };
        match peer {
            Peer::Workload(e) => e.ip(v6).ok_or_else(|| FlowError::NoAddress(name(), fam)),
            Peer::HostEndpoint(e) => {
                let node = self.nodes.get(&e.node);
                if toward_remote_pod
                    && let Some(t) =
                        node.and_then(|n| n.tunnel_ips.iter().find(|i| i.is_ipv6() == v6))
                {
                    notes.push(format!(
                        "node {} sends to pods on other nodes from its tunnel address {t}",
                        e.node
                    ));
                    return Ok(*t);
                }
                e.ip(v6)
                    .or_else(|| {
                        node.and_then(|n| n.ips.iter().copied().find(|i| i.is_ipv6() == v6))
                    })
                    .ok_or_else(|| FlowError::NoAddress(name(), fam))
            }
            Peer::Node(n) => {
                if toward_remote_pod
                    && let Some(t) = n.tunnel_ips.iter().find(|i| i.is_ipv6() == v6)
                {
                    notes.push(format!(
                        "node {} sends to pods on other nodes from its tunnel address {t}",
                        n.name
                    ));
                    return Ok(*t);
                }
                n.ips
                    .iter()
                    .copied()
                    .find(|i| i.is_ipv6() == v6)
                    .or_else(|| self.host_endpoint_of(&n.name).and_then(|h| h.ip(v6)))
                    .ok_or_else(|| FlowError::NoAddress(name(), fam))
            }
            Peer::External(ip) => Ok(*ip),
        }
    }

    /// The verdict for `flow` under the enforced policies (and, when staged policies exist, what
    /// it would be with them).
    pub fn verdict(&self, flow: &Flow) -> Result<Verdict, FlowError> {
        self.verdict_in(flow, None)
    }

    fn verdict_in(
        &self,
        flow: &Flow,
        selections: Option<&Selections>,
    ) -> Result<Verdict, FlowError> {
        let mut v = self.verdict_with(flow, View::Enforced, selections, true)?;
        if self.staged_view.is_some() {
            v.staged_allowed = Some(
                self.verdict_with(flow, View::Staged, selections, false)?
                    .allowed,
            );
        }
        Ok(v)
    }

    /// The policy list of a view (the staged view falls back to the enforced policies when
    /// there are no staged ones).
    fn view_policies(&self, view: View) -> &[Policy] {
        match (view, &self.staged_view) {
            (View::Staged, Some(staged)) => staged,
            _ => &self.policies,
        }
    }

    /// The verdict under one view; `trace` off records no stages or steps (the
    /// verdict's `allowed` is the same either way: the same walk decides it).
    fn verdict_with(
        &self,
        flow: &Flow,
        view: View,
        selections: Option<&Selections>,
        trace: bool,
    ) -> Result<Verdict, FlowError> {
        let src = self.resolve(&flow.src)?;
        let dst = self.resolve(&flow.dst)?;
        let ends = Ends {
            src_spec: &flow.src,
            dst_spec: &flow.dst,
            src,
            dst,
            protocol: flow.protocol,
            port: flow.port,
            src_port: flow.src_port,
            icmp: flow.icmp,
            ipv6: flow.ipv6,
        };
        self.verdict_between(ends, view, selections, trace)
    }

    /// [`Snapshot::verdict_with`] once the peers are resolved.
    fn verdict_between(
        &self,
        flow: Ends<'_, '_>,
        view: View,
        selections: Option<&Selections>,
        trace: bool,
    ) -> Result<Verdict, FlowError> {
        let policies = self.view_policies(view);
        let (src_spec, dst_spec, src, dst) = (flow.src_spec, flow.dst_spec, flow.src, flow.dst);
        // A host endpoint named as a destination stands for its node.
        let mut notes = Vec::new();
        let same_node = src.node().is_some() && src.node() == dst.node();
        let dst_is_remote_pod = matches!(dst, Peer::Workload(_)) && !same_node;
        let tunneled = dst_is_remote_pod && self.tunneled(&src, &dst, flow.ipv6);
        let src_ip = self.address(&src, src_spec, flow.ipv6, tunneled, &mut notes)?;
        let dst_ip = self.address(&dst, dst_spec, flow.ipv6, false, &mut notes)?;
        let pkt = Packet {
            snap: self,
            view,
            selections,
            trace,
            src_ip,
            dst_ip,
            protocol: flow.protocol,
            port: flow.port,
            src_port: flow.src_port,
            icmp: flow.icmp,
        };
        let describe = |p: &Peer<'_>| if trace { p.describe() } else { String::new() };
        let mut out = Verdict {
            allowed: false,
            src: describe(&src),
            dst: describe(&dst),
            src_ip: Some(src_ip),
            dst_ip: Some(dst_ip),
            protocol: flow.protocol,
            port: flow.port,
            notes,
            stages: Vec::new(),
            staged_allowed: None,
        };
        let itself = match (&src, &dst) {
            (Peer::Workload(a), Peer::Workload(b)) => std::ptr::eq(*a, *b),
            (Peer::HostEndpoint(_) | Peer::Node(_), Peer::HostEndpoint(_) | Peer::Node(_)) => {
                same_node
            }
            _ => false,
        };
        if itself {
            out.notes.push(
                "a workload or host talking to itself never leaves its network namespace: not policed"
                    .into(),
            );
            out.allowed = true;
            return Ok(out);
        }
        let allowed = self.walk_path(&pkt, policies, &src, &dst, same_node, &mut out);
        out.allowed = allowed;
        Ok(out)
    }

    /// Walks the packet's path; returns whether it arrives.
    fn walk_path(
        &self,
        pkt: &Packet<'_>,
        policies: &[Policy],
        src: &Peer<'_>,
        dst: &Peer<'_>,
        same_node: bool,
        out: &mut Verdict,
    ) -> bool {
        let run = |kind, ep: &Endpoint, dir, mode, out: &mut Verdict| -> Outcome {
            let mut steps = Steps {
                on: pkt.trace,
                steps: Vec::new(),
            };
            let outcome = self.endpoint_stage(pkt, policies, ep, dir, mode, &mut steps);
            if pkt.trace {
                out.stages.push(Stage {
                    kind,
                    endpoint: ep.name.clone(),
                    endpoint_key: ep.key.clone(),
                    steps: steps.steps,
                    outcome,
                });
            }
            outcome
        };

        // Leaving the source.
        match src {
            Peer::Workload(ep) => {
                if run(
                    StageKind::WorkloadEgress,
                    ep,
                    Direction::Egress,
                    Chain::Normal,
                    out,
                ) == Outcome::Deny
                {
                    return false;
                }
                if same_node && dst.is_host() {
                    let action = self.felix.default_endpoint_to_host_action.as_str();
                    let (outcome, text) = match action {
                        "Accept" => (
                            Outcome::Allow,
                            "DefaultEndpointToHostAction is Accept: workloads may reach their own host",
                        ),
                        "Return" => (
                            Outcome::Allow,
                            "DefaultEndpointToHostAction is Return: the packet leaves Gingham's rules for the host's own firewall (host endpoint policy does not apply)",
                        ),
                        _ => (Outcome::Deny, ENDPOINT_TO_HOST_DROP),
                    };
                    out.stages.push(Stage {
                        kind: StageKind::EndpointToHost,
                        endpoint: ep.name.clone(),
                        endpoint_key: ep.key.clone(),
                        steps: vec![Step::Note { text: text.into() }],
                        outcome,
                    });
                    return outcome == Outcome::Allow;
                } else if !same_node
                    && let Some(hep) = self.host_endpoint_of(&ep.node)
                    && run(
                        StageKind::ForwardEgress,
                        hep,
                        Direction::Egress,
                        Chain::Forward,
                        out,
                    ) == Outcome::Deny
                {
                    return false;
                }
            }
            Peer::HostEndpoint(_) | Peer::Node(_) => {
                let node = src.node().unwrap_or_default();
                if same_node && matches!(dst, Peer::Workload(_)) {
                    out.notes.push(format!(
                        "traffic from node {node} to its own pods is never policed (felix lets the host reach local workloads)"
                    ));
                    return true;
                }
                match self.host_endpoint_of(node) {
                    None => out.notes.push(format!(
                        "node {node} has no host endpoint: its outgoing traffic is not policed"
                    )),
                    Some(hep) => {
                        if let Some(f) =
                            self.failsafe(&self.felix.failsafe_outbound, pkt, pkt.dst_ip)
                        {
                            out.stages.push(Stage {
                                kind: StageKind::HostEgress,
                                endpoint: hep.name.clone(),
                                endpoint_key: hep.key.clone(),
                                steps: vec![f],
                                outcome: Outcome::Allow,
                            });
                        } else {
                            match run(
                                StageKind::UntrackedEgress,
                                hep,
                                Direction::Egress,
                                Chain::Untracked,
                                out,
                            ) {
                                Outcome::Deny => return false,
                                Outcome::Allow => {}
                                Outcome::Continue => {
                                    if run(
                                        StageKind::HostEgress,
                                        hep,
                                        Direction::Egress,
                                        Chain::Normal,
                                        out,
                                    ) == Outcome::Deny
                                    {
                                        return false;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Peer::External(_) => {}
        }

        // Arriving at the destination.
        match dst {
            Peer::Workload(ep) => {
                if !same_node && let Some(hep) = self.host_endpoint_of(&ep.node) {
                    match run(
                        StageKind::PreDnatIngress,
                        hep,
                        Direction::Ingress,
                        Chain::PreDnat,
                        out,
                    ) {
                        Outcome::Deny => return false,
                        Outcome::Allow => {}
                        Outcome::Continue => {
                            if run(
                                StageKind::ForwardIngress,
                                hep,
                                Direction::Ingress,
                                Chain::Forward,
                                out,
                            ) == Outcome::Deny
                            {
                                return false;
                            }
                        }
                    }
                }
                run(
                    StageKind::WorkloadIngress,
                    ep,
                    Direction::Ingress,
                    Chain::Normal,
                    out,
                ) == Outcome::Allow
            }
            Peer::HostEndpoint(_) | Peer::Node(_) => {
                let node = dst.node().unwrap_or_default();
                let Some(hep) = self.host_endpoint_of(node) else {
                    out.notes.push(format!(
                        "node {node} has no host endpoint: traffic to it is not policed"
                    ));
                    return true;
                };
                if let Some(f) = self.failsafe(&self.felix.failsafe_inbound, pkt, pkt.src_ip) {
                    out.stages.push(Stage {
                        kind: StageKind::HostIngress,
                        endpoint: hep.name.clone(),
                        endpoint_key: hep.key.clone(),
                        steps: vec![f],
                        outcome: Outcome::Allow,
                    });
                    return true;
                }
                match run(
                    StageKind::UntrackedIngress,
                    hep,
                    Direction::Ingress,
                    Chain::Untracked,
                    out,
                ) {
                    Outcome::Deny => return false,
                    Outcome::Allow => return true,
                    Outcome::Continue => {}
                }
                match run(
                    StageKind::PreDnatIngress,
                    hep,
                    Direction::Ingress,
                    Chain::PreDnat,
                    out,
                ) {
                    Outcome::Deny => return false,
                    Outcome::Allow => return true,
                    Outcome::Continue => {}
                }
                run(
                    StageKind::HostIngress,
                    hep,
                    Direction::Ingress,
                    Chain::Normal,
                    out,
                ) == Outcome::Allow
            }
            Peer::External(_) => true,
        }
    }

    /// A failsafe entry covering the packet, as a step.
    fn failsafe(
        &self,
        list: &[crate::snapshot::Failsafe],
        pkt: &Packet<'_>,
        remote: IpAddr,
    ) -> Option<Step> {
        let port = pkt.port?;
        list.iter()
            .find(|f| {
                f.protocol == pkt.protocol
                    && f.port == port
                    && f.net.is_none_or(|n| n.contains(&remote))
            })
            .map(|f| Step::Failsafe {
                protocol: f.protocol,
                port: f.port,
            })
    }

    /// The first tier that does not exist yet has policies selecting the endpoint here, with
    /// those policies (in felix's order within a tier, whatever order `policies` is in): their
    /// place among the tiers cannot be known, so the endpoint is closed.
    pub(crate) fn missing_tier<P: std::borrow::Borrow<Policy>>(
        &self,
        policies: &[P],
        ep: &Endpoint,
        dir: Direction,
        mode: Chain,
    ) -> Option<(String, Vec<PolicyRef>)> {
        self.tiers.iter().filter(|t| !t.exists).find_map(|t| {
            let mut selecting: Vec<&Policy> = policies
                .iter()
                .map(P::borrow)
                .filter(|p| {
                    p.tier == t.name && p.has_type(dir) && mode.admits(p, ep) && p.selects(ep)
                })
                .collect();
            selecting.sort_by_cached_key(|p| (p.sort_key(), p.id.to_string()));
            let selecting: Vec<PolicyRef> = selecting.into_iter().map(|p| p.id.clone()).collect();
            (!selecting.is_empty()).then(|| (t.name.clone(), selecting))
        })
    }

    /// What one stage of an endpoint runs: the first tier that does not exist but has
    /// policies selecting the endpoint (closed), else each tier whose policies select it, with
    /// those policies in felix's order.
    fn selection(
        &self,
        policies: &[Policy],
        ep: &Endpoint,
        dir: Direction,
        mode: Chain,
    ) -> Selection {
        if let Some((tier, policies)) = self.missing_tier(policies, ep, dir, mode) {
            return Selection::TierMissing { tier, policies };
        }
        let tiers = self
            .tiers
            .iter()
            .enumerate()
            .filter_map(|(t, tier)| {
                let mut in_tier: Vec<usize> = policies
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.tier == tier.name
                            && p.has_type(dir)
                            && mode.admits(p, ep)
                            && p.selects(ep)
                    })
                    .map(|(i, _)| i)
                    .collect();
                in_tier.sort_by_cached_key(|&i| policies[i].sort_key());
                (!in_tier.is_empty()).then_some((t, in_tier))
            })
            .collect();
        Selection::Tiers(tiers)
    }

    /// One endpoint, one direction: tiers, then (in normal mode) profiles.
    fn endpoint_stage(
        &self,
        pkt: &Packet<'_>,
        policies: &[Policy],
        ep: &Endpoint,
        dir: Direction,
        mode: Chain,
        steps: &mut Steps,
    ) -> Outcome {
        let computed;
        let selection = match pkt
            .selections
            .and_then(|s| s.get(self, pkt.view, ep, dir, mode))
        {
            Some(s) => s,
            None => {
                computed = self.selection(policies, ep, dir, mode);
                &computed
            }
        };
        let tiers = match selection {
            Selection::TierMissing { tier, policies } => {
                steps.push(|| Step::TierMissing {
                    tier: tier.clone(),
                    policies: policies.clone(),
                });
                return Outcome::Deny;
            }
            Selection::Tiers(tiers) => tiers,
        };
        for (t, in_tier) in tiers {
            let tier = &self.tiers[*t];
            steps.push(|| Step::TierStart {
                tier: tier.name.clone(),
                policies: in_tier.iter().map(|&i| policies[i].id.clone()).collect(),
            });
            let mut passed = false;
            'policies: for p in in_tier.iter().map(|&i| &policies[i]) {
                for r in p.rules(dir) {
                    if !pkt.matches(r) {
                        continue;
                    }
                    steps.push(|| Step::RuleMatched {
                        policy: p.id.clone(),
                        rule: r.index,
                        action: r.action,
                    });
                    match r.action {
                        Action::Allow => return Outcome::Allow,
                        Action::Deny => return Outcome::Deny,
                        Action::Log => continue,
                        Action::Pass => {
                            passed = true;
                            break 'policies;
                        }
                    }
                }
                steps.push(|| Step::PolicyNoMatch {
                    policy: p.id.clone(),
                });
            }
            if passed {
                continue;
            }
            // preDNAT and doNotTrack stages have no end-of-tier drop: unmatched packets go on.
            if mode.end_of_tier() {
                steps.push(|| Step::EndOfTier {
                    tier: tier.name.clone(),
                    action: tier.default_action,
                });
                if tier.default_action != Action::Pass {
                    return Outcome::Deny;
                }
            }
        }
        if !mode.profiles_apply() {
            steps.push(|| Step::DefaultContinue);
            return Outcome::Continue;
        }
        if ep.profiles.is_empty() {
            steps.push(|| Step::NoProfiles);
            return Outcome::Deny;
        }
        for name in &ep.profiles {
            let Some(profile) = self.profiles.get(name) else {
                steps.push(|| Step::ProfileMissing {
                    profile: name.clone(),
                });
                return Outcome::Deny;
            };
            let mut decided = None;
            for r in profile.rules(dir) {
                if !pkt.matches(r) {
                    continue;
                }
                steps.push(|| Step::ProfileRuleMatched {
                    profile: name.clone(),
                    rule: r.index,
                    action: r.action,
                });
                match r.action {
                    Action::Allow => return Outcome::Allow,
                    Action::Deny => return Outcome::Deny,
                    Action::Log => continue,
                    Action::Pass => {
                        decided = Some(());
                        break;
                    }
                }
            }
            if decided.is_none() {
                steps.push(|| Step::ProfileNoMatch {
                    profile: name.clone(),
                });
            }
        }
        steps.push(|| Step::ProfilesExhausted);
        Outcome::Deny
    }
}

/// The steps of one stage, when the trace is on.
struct Steps {
    on: bool,
    steps: Vec<Step>,
}

impl Steps {
    fn push(&mut self, step: impl FnOnce() -> Step) {
        if self.on {
            self.steps.push(step());
        }
    }
}

/// Which policy list a verdict runs: the enforced policies, or the view with every staged
/// policy enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Enforced,
    Staged,
}

/// What one stage of an endpoint runs ([`Snapshot::selection`]).
#[derive(Debug)]
enum Selection {
    /// A tier that does not exist has these policies selecting the endpoint: closed.
    TierMissing {
        tier: String,
        policies: Vec<PolicyRef>,
    },
    /// Each tier (position in `Snapshot::tiers`) with the policies (positions in the view's
    /// policy list) selecting the endpoint, in order.
    Tiers(Vec<(usize, Vec<usize>)>),
}

/// Each endpoint's [`Selection`]s, computed on first use and then shared: for many verdicts
/// over one snapshot (`reach`, `diff`), where matching every policy's selector against both
/// endpoints of every flow would cost most of the time.
struct Selections {
    /// By endpoint, view, direction and chain ([`Selections::slot`]).
    slots: Vec<OnceLock<Selection>>,
}

const CHAINS: [Chain; 4] = [
    Chain::Normal,
    Chain::Forward,
    Chain::PreDnat,
    Chain::Untracked,
];

impl Selections {
    fn new(snap: &Snapshot) -> Selections {
        Selections {
            slots: (0..snap.endpoints.len() * 2 * 2 * CHAINS.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The selection for `ep` (an endpoint of `snap`: anything else gets `None`).
    fn get(
        &self,
        snap: &Snapshot,
        view: View,
        ep: &Endpoint,
        dir: Direction,
        mode: Chain,
    ) -> Option<&Selection> {
        let i = snap.position(ep)?;
        let chain = CHAINS.iter().position(|&c| c == mode)?;
        let slot = ((i * 2 + view as usize) * 2 + dir as usize) * CHAINS.len() + chain;
        Some(
            self.slots
                .get(slot)?
                .get_or_init(|| snap.selection(snap.view_policies(view), ep, dir, mode)),
        )
    }
}

/// Many verdicts over one snapshot: what each endpoint's stages select is worked out once per
/// endpoint instead of once per flow. The verdicts are [`Snapshot::verdict`]'s: the same walk.
pub struct Evaluator<'s> {
    snap: &'s Snapshot,
    selections: Selections,
}

impl<'s> Evaluator<'s> {
    pub fn new(snap: &'s Snapshot) -> Evaluator<'s> {
        Evaluator {
            snap,
            selections: Selections::new(snap),
        }
    }

    /// [`Snapshot::verdict`], with its trace.
    pub fn verdict(&self, flow: &Flow) -> Result<Verdict, FlowError> {
        self.snap.verdict_in(flow, Some(&self.selections))
    }

    /// Whether the enforced policies allow `flow`: [`Snapshot::verdict`]'s `allowed`, without
    /// recording the trace or evaluating the staged view.
    pub fn allowed(&self, flow: &Flow) -> Result<bool, FlowError> {
        Ok(self
            .snap
            .verdict_with(flow, View::Enforced, Some(&self.selections), false)?
            .allowed)
    }

    /// Endpoints named as a flow names them ([`Flow::between_endpoints`]), each resolved once
    /// for [`Evaluator::allowed_between`].
    pub fn endpoints(&self, names: &[String]) -> Endpoints<'s> {
        let specs: Vec<PeerSpec> = names
            .iter()
            .map(|n| PeerSpec::Endpoint(n.clone()))
            .collect();
        let peers = specs.iter().map(|s| self.snap.resolve(s)).collect();
        Endpoints { specs, peers }
    }

    /// [`Evaluator::allowed`] for the flow between the `from`th and the `to`th of `eps`:
    /// the same as for `Flow::between_endpoints(names[from], names[to], protocol, port)`.
    pub fn allowed_between(
        &self,
        eps: &Endpoints<'s>,
        from: usize,
        to: usize,
        protocol: u8,
        port: Option<u16>,
    ) -> Result<bool, FlowError> {
        let src = eps.peers[from].clone()?;
        let dst = eps.peers[to].clone()?;
        let flow = Ends {
            src_spec: &eps.specs[from],
            dst_spec: &eps.specs[to],
            src,
            dst,
            protocol,
            port,
            src_port: None,
            icmp: None,
            ipv6: false,
        };
        Ok(self
            .snap
            .verdict_between(flow, View::Enforced, Some(&self.selections), false)?
            .allowed)
    }
}

/// Endpoints resolved once ([`Evaluator::endpoints`]).
pub struct Endpoints<'s> {
    specs: Vec<PeerSpec>,
    peers: Vec<Result<Peer<'s>, FlowError>>,
}

/// A [`Flow`] whose peers are resolved: what a verdict reads.
struct Ends<'f, 's> {
    src_spec: &'f PeerSpec,
    dst_spec: &'f PeerSpec,
    src: Peer<'s>,
    dst: Peer<'s>,
    protocol: u8,
    port: Option<u16>,
    src_port: Option<u16>,
    icmp: Option<(u8, u8)>,
    ipv6: bool,
}

impl Packet<'_> {
    fn v6(&self) -> bool {
        self.src_ip.is_ipv6()
    }

    /// Whether every criterion of the rule holds.
    fn matches(&self, r: &CompiledRule) -> bool {
        if let Some(v) = r.ip_version
            && (v == 6) != self.v6()
        {
            return false;
        }
        if r.protocol.is_some_and(|p| p != self.protocol) {
            return false;
        }
        if r.not_protocol.is_some_and(|p| p == self.protocol) {
            return false;
        }
        let is_icmp = self.protocol == ICMP || self.protocol == ICMPV6;
        if let Some(m) = r.icmp
            && !(is_icmp && icmp_matches(m, self.icmp))
        {
            return false;
        }
        if let Some(m) = r.not_icmp
            && is_icmp
            && icmp_matches(m, self.icmp)
        {
            return false;
        }
        self.entity_matches(&r.source, self.src_ip, self.src_port)
            && self.entity_matches(&r.destination, self.dst_ip, self.port)
    }

    fn entity_matches(&self, e: &Entity, ip: IpAddr, port: Option<u16>) -> bool {
        if e.services {
            return false;
        }
        if !e.nets.is_empty() && !e.nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if e.not_nets.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        if let Some(sel) = &e.selector
            && !self.snap.ip_matches_selector(ip, sel)
        {
            return false;
        }
        if let Some(sel) = &e.not_selector
            && self.snap.ip_matches_selector(ip, sel)
        {
            return false;
        }
        if !e.ports.is_empty() && !self.port_in(&e.ports, ip, port, e.selector.as_ref()) {
            return false;
        }
        if !e.not_ports.is_empty() && self.port_in(&e.not_ports, ip, port, e.selector.as_ref()) {
            return false;
        }
        true
    }

    fn port_in(
        &self,
        ports: &[Port],
        ip: IpAddr,
        port: Option<u16>,
        sel: Option<&Selector>,
    ) -> bool {
        let Some(port) = port else {
            return false;
        };
        ports.iter().any(|p| match p {
            Port::Range { min, max } => (*min..=*max).contains(&port),
            Port::Named(name) => self
                .snap
                .named_port_matches(ip, name, self.protocol, port, sel),
        })
    }
}

fn icmp_matches(rule: (Option<u8>, Option<u8>), pkt: Option<(u8, u8)>) -> bool {
    let Some((t, c)) = pkt else {
        // A rule on a specific type never matches a packet whose type is unknown.
        return rule.0.is_none();
    };
    rule.0.is_none_or(|rt| rt == t) && rule.1.is_none_or(|rc| rc == c)
}

/// The name of a protocol number as Calico writes it.
pub fn protocol_name(p: u8) -> String {
    match p {
        TCP => "TCP".into(),
        UDP => "UDP".into(),
        ICMP => "ICMP".into(),
        ICMPV6 => "ICMPv6".into(),
        SCTP => "SCTP".into(),
        136 => "UDPLite".into(),
        n => n.to_string(),
    }
}

/// Parses a protocol name (any case) or number.
pub fn parse_protocol(s: &str) -> Option<u8> {
    match s.to_ascii_uppercase().as_str() {
        "TCP" => Some(TCP),
        "UDP" => Some(UDP),
        "ICMP" => Some(ICMP),
        "ICMPV6" => Some(ICMPV6),
        "SCTP" => Some(SCTP),
        "UDPLITE" => Some(136),
        n => n.parse().ok().filter(|&v: &u8| v > 0),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Continue => "continue",
        })
    }
}

impl Verdict {
    /// One line: `allow` or `deny`, and what decided, e.g.
    /// `deny (workload-ingress default/nginx: end of tier default)`. Stable: tests compare it.
    pub fn summary(&self) -> String {
        let word = if self.allowed { "allow" } else { "deny" };
        let Some(stage) = self.deciding_stage() else {
            let why = self
                .notes
                .last()
                .map(|n| short_note(n))
                .unwrap_or_else(|| "nothing polices this path".into());
            return format!("{word} ({why})");
        };
        let kind = serde_json::to_value(stage.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let what = match stage.steps.last() {
            Some(Step::RuleMatched {
                policy,
                rule,
                action,
            }) => format!("rule {rule} {action} of {policy}"),
            Some(Step::EndOfTier { tier, .. }) => format!("end of tier {tier}"),
            Some(Step::NoProfiles) => "no profile".into(),
            Some(Step::ProfileMissing { profile }) => format!("profile {profile} missing"),
            Some(Step::TierMissing { tier, .. }) => format!("tier {tier} missing"),
            Some(Step::ProfileRuleMatched {
                profile,
                rule,
                action,
            }) => format!("rule {rule} {action} of profile {profile}"),
            Some(Step::ProfilesExhausted) => "no profile rule matched".into(),
            Some(Step::Failsafe { protocol, port }) => {
                format!("failsafe {}/{port}", protocol_name(*protocol))
            }
            Some(Step::Note { text }) => short_note(text),
            Some(Step::DefaultContinue)
            | Some(Step::PolicyNoMatch { .. })
            | Some(Step::ProfileNoMatch { .. })
            | Some(Step::TierStart { .. })
            | None => "default".into(),
        };
        let staged = match self.staged_allowed {
            Some(s) if s != self.allowed => {
                format!("; staged: {}", if s { "allow" } else { "deny" })
            }
            _ => String::new(),
        };
        format!("{word} ({kind} {}: {what}{staged})", stage.endpoint)
    }
}

/// The first clause of a note, for summaries.
fn short_note(n: &str) -> String {
    n.split([':', '(']).next().unwrap_or(n).trim().to_owned()
}
