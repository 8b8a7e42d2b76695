//! Rendering: a node's programs and IP sets as one nftables table, `inet gingham`.
//!
//! Layout (pure text; [`render`] and [`Renderer`] do no I/O), built so that a new flow meets as
//! few rules as possible:
//! - `forward` (hook forward): conntrack first (two rules: established and related accepted,
//!   invalid dropped; [`CONNTRACK`]). Then the egress stage of the workload it comes from and the ingress stage
//!   of the one it goes to, each one lookup in a verdict map keyed by interface (`wl-egress`,
//!   `wl-ingress`), after a test of the interface's name prefix: another node's or the
//!   outside's interface goes on after that test; the maps' catch-all elements drop a `cali*`
//!   interface that has no program yet (fail closed). A stage no policy selects whose profile
//!   allows everything is just the map's verdict (`continue`, `accept`); otherwise the
//!   workload's stage chain returns (egress) or accepts (ingress) when a rule allows, and drops
//!   at its end. Keyed by interface index (as the agent has them), each map is backed by one
//!   keyed by name, looked up by the next rule when the index misses; the egress pair sits in
//!   `wl-from` (jumped to; its elements `goto` the stage or `return`), so that both maps reach
//!   a stage at one depth (see [`WL_FROM`]).
//! - `input` (hook input): workload traffic goes (goto) to `wl-to-host`: the sending workload's
//!   egress stage, then felix's DefaultEndpointToHostAction (Return leaves our rules).
//! - Host endpoints (only on nodes that have one): normal policy at the end of `input` and in
//!   `output`, applyOnForward in `forward`, preDNAT in `pre-dnat` (prerouting, priority -150),
//!   doNotTrack in `raw-in`/`raw-out` (priority -300, `notrack` on Allow). Each goes through a
//!   dispatch chain `hd-*`: failsafe ports, then the interface's chain by verdict map `hm-*`
//!   (goto), then the wildcard endpoint's.
//! - A workload's stage chain `w…` (shared by the workloads with the same stage, named by what
//!   it holds, rules included) holds the rules of its tiers and profiles that have no Pass rule
//!   itself, in order: an Allow is the stage's verdict at once (`accept` at ingress, `return`
//!   to the caller at egress), a Deny drops, a Log logs and goes on, the end of a tier drops
//!   (unless its default action is Pass). No jump, no mark bit: a new flow meets the rules and
//!   nothing else. A tier with a Pass rule keeps a chain of its own (`w…<k>`: one jump per
//!   policy, leaving the tier on Pass, dropping at its end unless its default action is Pass),
//!   as does a profile with one, and the stage then clears and tests our mark bits (and clears
//!   them again before it allows: our bits never leave a workload's stage).
//! - Host endpoint chains `e…` walk every tier that way (`e…0`, `e…1` chains), then the
//!   profiles.
//! - Policy and profile chains (`p…`, `r…`), for host endpoints and for tiers and profiles with
//!   a Pass rule, are shared by every endpoint that uses them: a rule's Allow sets the accept
//!   bit and returns, Deny drops, Pass sets the pass bit and returns, Log logs with a prefix
//!   naming the policy and goes on. Every rule has a counter.
//! - Selector IP sets are plain sets of addresses (`h4…`, `h6…`) or interval sets when they
//!   hold prefixes (`s4…`, `s6…`); named ports are sets of address . protocol . port (`n4…`,
//!   `n6…`).
//! - A rule is rendered only for the families in which it can match: one whose selector (or
//!   every named-port alternative) names a set with no member of a family has no rule in that
//!   family (in a cluster without IPv6 workloads, no `meta nfproto ipv6` twin of a selector
//!   rule). Negated sets (`!= @set`) match everything when empty and are rendered as they
//!   are. When a family of a set gains its first member or loses its last, the endpoints whose
//!   rules name the set are placed again (their stage chains' names say which families of their
//!   sets are empty, so shared stage chains stay right).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use gingham_calc::incremental::{Change, apply_changes};
use gingham_calc::program::{
    ChainProgram, EndpointProgram, IpSet, NodeProgram, ProfileProgram, RuleProgram, SetId,
    SideProgram, TierProgram,
};
use gingham_calc::snapshot::{Direction, Failsafe, FelixSettings, NatPools};
use gingham_model::Action;
use ipnet::IpNet;

use crate::counters::{ChainOrigin, Origins, Owner};
use crate::table::{Base, Chain, Edits, IFACE_INDEX, Rule, Set, SetKind, Table, short_hash};

mod flowlog;
use flowlog::log_rule;
pub use flowlog::{FLOW_LOG_GROUP, FlowCause, Interfaces, flow_cause};

/// The table Gingham owns; nothing else is ever touched.
pub const TABLE: &str = "gingham";
/// Mark bits: a stage allowed the packet / a policy passed it to the next tier.
pub const MARK_ACCEPT: u32 = 0x0001_0000;
pub const MARK_PASS: u32 = 0x0002_0000;
const MARK_OURS: u32 = MARK_ACCEPT | MARK_PASS;

/// The statement that clears our mark bits (and no other bit of the mark).
fn clear_ours() -> String {
    format!("meta mark set meta mark & 0x{:08x}", !MARK_OURS)
}

/// Node-wide settings the table needs besides the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Felix's settings: failsafe ports, DefaultEndpointToHostAction (`Drop`, `Accept`,
    /// `Return`).
    pub felix: FelixSettings,
    /// Interface name prefix of workloads.
    pub workload_prefix: String,
    /// The IP pools, for natOutgoing.
    pub pools: NatPools,
    /// The tunnels between nodes: which are on, and who may send them.
    pub tunnels: Tunnels,
    /// Log new flows that a policy or profile Allow rule lets through, too (the agent's
    /// `flowLogsAllowed`); dropped flows are always logged.
    pub flow_logs_allowed: bool,
}

/// The tunnels between nodes, as felix filters them: IPIP and VXLAN packets are accepted only
/// from other nodes (felix's `all-hosts-net` and `all-vxlan-net` IP sets), host endpoint
/// policy never blocks them, and (beyond felix, which tracks them) outer VXLAN packets between
/// nodes skip conntrack: each new connection inside the tunnel has its own outer UDP source
/// port, so tracking the outer packets would create two more conntrack entries per connection
/// on each node for nothing the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnels {
    /// An IPv4 pool uses IPIP (felix's `IPIPEnabled`).
    pub ipip: bool,
    /// An IPv4 (IPv6) pool uses VXLAN (felix's `VXLANEnabled`, `VXLANEnabledV6`).
    pub vxlan: bool,
    pub vxlan_v6: bool,
    /// FelixConfiguration `vxlanPort` (4789).
    pub vxlan_port: u16,
    /// `all-hosts-net`: every node's address, and `externalNodesList`.
    pub hosts: BTreeSet<IpNet>,
    /// `all-vxlan-net`: the underlay address of every other node that has a VTEP, and
    /// `externalNodesList`.
    pub vxlan_sources: BTreeSet<IpNet>,
}

/// Calico's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            ipip: false,
            vxlan: false,
            vxlan_v6: false,
            vxlan_port: VXLAN_PORT,
            hosts: BTreeSet::new(),
            vxlan_sources: BTreeSet::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            felix: FelixSettings::default(),
            workload_prefix: "cali".into(),
            pools: NatPools::default(),
            tunnels: Tunnels::default(),
            flow_logs_allowed: false,
        }
    }
}

/// Where an endpoint's chain for one direction and mode is hooked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Normal ingress: workloads in `forward` (to the pod), hosts in `input`.
    In,
    /// Normal egress: workloads in `forward`/`input` (from the pod), hosts in `output`.
    Out,
    /// Host endpoints, applyOnForward: forwarded traffic arriving by / leaving by the interface.
    ForwardIn,
    ForwardOut,
    /// Host endpoints, preDNAT (prerouting, before DNAT).
    PreDnat,
    /// Host endpoints, doNotTrack (prerouting / output at raw priority, before conntrack).
    UntrackedIn,
    UntrackedOut,
}

impl Mode {
    const HOST: [Mode; 7] = [
        Mode::In,
        Mode::Out,
        Mode::ForwardIn,
        Mode::ForwardOut,
        Mode::PreDnat,
        Mode::UntrackedIn,
        Mode::UntrackedOut,
    ];

    /// Suffix of the endpoint chain's name.
    fn suffix(self) -> &'static str {
        match self {
            Mode::In => "i",
            Mode::Out => "e",
            Mode::ForwardIn => "fi",
            Mode::ForwardOut => "fe",
            Mode::PreDnat => "di",
            Mode::UntrackedIn => "ui",
            Mode::UntrackedOut => "ue",
        }
    }

    /// The policy direction: `i` (ingress rules) or `e` (egress rules).
    fn dir(self) -> &'static str {
        match self {
            Mode::In | Mode::ForwardIn | Mode::PreDnat | Mode::UntrackedIn => "i",
            Mode::Out | Mode::ForwardOut | Mode::UntrackedOut => "e",
        }
    }

    /// The interface a packet is dispatched on.
    fn ifname(self) -> &'static str {
        if self.dir() == "i" {
            "iifname"
        } else {
            "oifname"
        }
    }

    fn program(self, ep: &EndpointProgram) -> Option<&ChainProgram> {
        match self {
            Mode::In => Some(&ep.ingress),
            Mode::Out => Some(&ep.egress),
            Mode::ForwardIn => ep.forward_ingress.as_ref(),
            Mode::ForwardOut => ep.forward_egress.as_ref(),
            Mode::PreDnat => ep.pre_dnat_ingress.as_ref(),
            Mode::UntrackedIn => ep.untracked_ingress.as_ref(),
            Mode::UntrackedOut => ep.untracked_egress.as_ref(),
        }
    }

    /// The chains an endpoint has.
    fn of(ep: &EndpointProgram) -> Vec<(Mode, &ChainProgram)> {
        let modes: &[Mode] = if ep.host {
            &Mode::HOST
        } else {
            &[Mode::In, Mode::Out]
        };
        modes
            .iter()
            .filter_map(|m| m.program(ep).map(|c| (*m, c)))
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
    fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// The family a rule is limited to, if any: its ipVersion, or the family of its CIDRs.
fn rule_families(r: &RuleProgram) -> Vec<Family> {
    if let Some(v) = r.ip_version {
        return vec![if v == 6 { Family::V6 } else { Family::V4 }];
    }
    let nets: Vec<&IpNet> = r
        .source
        .nets
        .iter()
        .chain(&r.source.not_nets)
        .chain(&r.destination.nets)
        .chain(&r.destination.not_nets)
        .collect();
    if let Some(first) = nets.first() {
        return vec![Family::of(first)];
    }
    match r.protocol {
        Some(1) => vec![Family::V4],
        Some(58) => vec![Family::V6],
        _ => vec![Family::V4, Family::V6],
    }
}

fn ports(ranges: &[(u16, u16)]) -> String {
    let v: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    format!("{{ {} }}", v.join(", "))
}

/// The match expression of one side of a rule for one family, or `None` if it can never match.
fn side(s: &SideProgram, dir: &str, family: Family, names: &SetNames) -> Option<Vec<String>> {
    if s.never {
        return None;
    }
    let ip = family.ip();
    let mut out = Vec::new();
    let fam_nets = |nets: &[IpNet]| -> Vec<String> {
        nets.iter()
            .filter(|n| Family::of(n) == family)
            .map(ToString::to_string)
            .collect()
    };
    if !s.nets.is_empty() {
        let mine = fam_nets(&s.nets);
        if mine.is_empty() {
            return None;
        }
        out.push(format!("{ip} {dir}addr {{ {} }}", mine.join(", ")));
    }
    let not = fam_nets(&s.not_nets);
    if !not.is_empty() {
        out.push(format!("{ip} {dir}addr != {{ {} }}", not.join(", ")));
    }
    if let Some(id) = &s.set {
        if names.no_members(id, family) {
            // Elided: the set has no member of this family, so the rule never matches in it.
            return None;
        }
        out.push(format!("{ip} {dir}addr @{}", names.get(id, family)));
    }
    if let Some(id) = &s.not_set {
        out.push(format!("{ip} {dir}addr != @{}", names.get(id, family)));
    }
    if !s.not_ports.is_empty() {
        out.push(format!("th {dir}port != {}", ports(&s.not_ports)));
    }
    for id in &s.not_port_sets {
        out.push(format!(
            "{ip} {dir}addr . meta l4proto . th {dir}port != @{}",
            names.get(id, family)
        ));
    }
    Some(out)
}

/// One rule as nft rule lines (several when the rule's port alternatives or families need it).
fn rule_lines(r: &RuleProgram, action: &str, log_prefix: &str, names: &SetNames) -> Vec<String> {
    let mut lines = Vec::new();
    'family: for family in rule_families(r) {
        // The protocol before the family: a packet of the rule's family always passes the
        // family test, so the protocol, where the rules of a stage differ, rejects a packet one
        // load and compare sooner (a UDP packet meeting a stage's TCP rules).
        let mut base = Vec::new();
        if let Some(p) = r.protocol {
            base.push(format!("meta l4proto {p}"));
        }
        base.push(format!("meta nfproto {}", family.nfproto()));
        if let Some(p) = r.not_protocol {
            base.push(format!("meta l4proto != {p}"));
        }
        let icmp = if family == Family::V4 {
            "icmp"
        } else {
            "icmpv6"
        };
        if let Some((t, c)) = r.icmp {
            base.push(format!(
                "meta l4proto {}",
                if family == Family::V4 { 1 } else { 58 }
            ));
            if let Some(t) = t {
                base.push(format!("{icmp} type {t}"));
            }
            if let Some(c) = c {
                base.push(format!("{icmp} code {c}"));
            }
        }
        let Some(src) = side(&r.source, "s", family, names) else {
            continue;
        };
        let Some(dst) = side(&r.destination, "d", family, names) else {
            continue;
        };
        base.extend(src);
        base.extend(dst);
        // Port alternatives: numeric ranges or named-port sets, OR-ed: one line each.
        let mut alternatives: Vec<Option<String>> = Vec::new();
        for (dir, s) in [("s", &r.source), ("d", &r.destination)] {
            if s.ports.is_empty() && s.port_sets.is_empty() {
                continue;
            }
            let mut alts = Vec::new();
            if !s.ports.is_empty() {
                alts.push(format!("th {dir}port {}", ports(&s.ports)));
            }
            // A named-port set with no member of this family is an alternative that never
            // matches: left out, and the family with it when no alternative is left.
            for id in s
                .port_sets
                .iter()
                .filter(|id| !names.no_members(id, family))
            {
                alts.push(format!(
                    "{} {dir}addr . meta l4proto . th {dir}port @{}",
                    family.ip(),
                    names.get(id, family)
                ));
            }
            if alts.is_empty() {
                continue 'family;
            }
            if alternatives.is_empty() {
                alternatives = alts.into_iter().map(Some).collect();
            } else {
                // Both sides have port alternatives: every combination.
                let mut combined = Vec::new();
                for a in &alternatives {
                    for b in &alts {
                        combined.push(Some(format!("{} {b}", a.clone().unwrap_or_default())));
                    }
                }
                alternatives = combined;
            }
        }
        // notICMP: "not (ICMP of this type [and code])" is one of these alternatives.
        if let Some((t, c)) = r.not_icmp {
            let proto = if family == Family::V4 { 1 } else { 58 };
            let mut nots = vec![format!("meta l4proto != {proto}")];
            match (t, c) {
                (Some(t), None) => nots.push(format!("meta l4proto {proto} {icmp} type != {t}")),
                (Some(t), Some(c)) => {
                    nots.push(format!("meta l4proto {proto} {icmp} type != {t}"));
                    nots.push(format!(
                        "meta l4proto {proto} {icmp} type {t} {icmp} code != {c}"
                    ));
                }
                _ => {}
            }
            alternatives = if alternatives.is_empty() {
                nots.into_iter().map(Some).collect()
            } else {
                alternatives
                    .iter()
                    .flat_map(|a| {
                        nots.iter()
                            .map(move |n| Some(format!("{} {n}", a.clone().unwrap_or_default())))
                    })
                    .collect()
            };
        }
        if alternatives.is_empty() {
            alternatives.push(None);
        }
        for alt in alternatives {
            let mut parts = base.clone();
            if let Some(a) = alt {
                parts.push(a);
            }
            parts.push("counter".into());
            if !log_prefix.is_empty() {
                parts.push(format!("log prefix \"{log_prefix}\""));
            }
            parts.push(action.to_owned());
            lines.push(parts.join(" "));
        }
    }
    lines
}

/// What an Allow rule of a policy or profile chain does: set the accept bit and go back to the
/// tier or endpoint chain that jumped to it.
const ALLOW_IN_CHAIN: &str = "meta mark set meta mark | 0x00010000 return";
/// What a Pass rule does: set the pass bit and go back (its tier chain then leaves the tier).
const PASS_IN_CHAIN: &str = "meta mark set meta mark | 0x00020000 return";

fn action_text(a: Action, allow: &str) -> &str {
    match a {
        Action::Allow => allow,
        Action::Deny => "drop",
        Action::Pass => PASS_IN_CHAIN,
        // Log goes on to the next rule.
        Action::Log => "",
    }
}

/// The rules of one policy or profile for one direction, appended to `out`, with the owner
/// and policy rule index of each nft rule recorded by its id in `origins` (hit counters). An
/// Allow rule does `allow`: in a policy or profile chain it marks and returns, inlined in a
/// workload's stage chain it is the stage's verdict (`accept`, `return`). Deny rules, and Allow
/// rules when `log_allowed`, are each preceded by their flow log rule, tagged with `tag_chain`
/// (the policy or profile chain's name, which [`flow_cause`] recomputes from the programs,
/// wherever the rule sits).
#[allow(clippy::too_many_arguments)]
fn policy_rules(
    label: &str,
    tag_chain: &str,
    owner: &Owner,
    rules: &[RuleProgram],
    names: &SetNames,
    log_allowed: bool,
    allow: &str,
    out: &mut Vec<Rule>,
    origins: &mut HashMap<String, (Owner, usize)>,
) {
    for r in rules {
        let prefix = if r.action == Action::Log {
            // nft log prefixes are at most 127 characters.
            let mut p = format!("gingham {label} rule {}: ", r.index);
            p.truncate(120);
            p
        } else {
            String::new()
        };
        let action = action_text(r.action, allow);
        let logged = match r.action {
            Action::Deny => Some(flowlog::Verdict::Denied),
            Action::Allow if log_allowed => Some(flowlog::Verdict::Allowed),
            _ => None,
        };
        for line in rule_lines(r, action, &prefix, names) {
            if let Some(verdict) = logged
                && let Some(matches) = line.strip_suffix(&format!("counter {action}"))
            {
                // The flow log's rule belongs to the same policy rule (it has no counter, so
                // the hit counters count the packet once).
                let log = log_rule(matches, &flowlog::rule_tag(verdict, tag_chain, r.index));
                origins.insert(log.id().to_owned(), (owner.clone(), r.index));
                out.push(log);
            }
            let rule = Rule::new(line, format!("{label} rule {}", r.index));
            origins.insert(rule.id().to_owned(), (owner.clone(), r.index));
            out.push(rule);
        }
    }
}

/// What the renderer produces: the table, and its size for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub table: Table,
    pub chains: usize,
    pub sets: usize,
    pub set_members: usize,
}

impl Rendered {
    /// A script that installs the table from scratch, replacing any table of ours atomically.
    pub fn script(&self) -> String {
        self.table.replace_script().text
    }
}

/// Set names per (set id, family): the kind of set is part of the name, so a set that changes
/// kind is a new set and the rules using it are rewritten. And which of them have no member:
/// a rule that matches such a set (not its negation) can never match in that family, so it is
/// not rendered for it (see [`NoMembers`]).
#[derive(Default)]
struct SetNames {
    names: HashMap<(String, u8), String>,
    empty: HashSet<(String, u8)>,
}

impl SetNames {
    fn get(&self, id: &str, family: Family) -> String {
        self.names
            .get(&(id.to_owned(), family as u8))
            .cloned()
            .unwrap_or_else(|| format!("missing-set-{}", short_hash(id)))
    }
}

/// Which sets have no member of a family: a positive match on such a set (`@set`, a named-port
/// alternative) never matches in that family, so the rule (or the alternative) is not
/// rendered for it. The renderer knows it from its rendered sets; [`flow_cause`] from the
/// programs' sets (both give the same answer, so stage chain names agree).
trait NoMembers {
    fn no_members(&self, id: &str, family: Family) -> bool;
}

impl NoMembers for SetNames {
    fn no_members(&self, id: &str, family: Family) -> bool {
        !self.empty.is_empty() && self.empty.contains(&(id.to_owned(), family as u8))
    }
}

impl NoMembers for BTreeMap<SetId, IpSet> {
    fn no_members(&self, id: &str, family: Family) -> bool {
        let Some(set) = self.get(id) else {
            return false;
        };
        if id.starts_with("n:") {
            !set.ports.iter().any(|(n, _, _)| Family::of(n) == family)
        } else {
            !set.nets.iter().any(|n| Family::of(n) == family)
        }
    }
}

fn base(hook: &str, priority: i32) -> Base {
    Base {
        kind: "filter".into(),
        hook: hook.into(),
        priority,
        policy: "accept".into(),
    }
}

/// The nft shape of one IP set for one family: its name's letter, key type and kind. Host
/// addresses make a plain set (`h`), any prefix an interval set (`s`), named ports a set of
/// address . protocol . port (`n`).
fn set_shape(id: &str, set: &IpSet, family: Family) -> (&'static str, String, SetKind) {
    if id.starts_with("n:") {
        return (
            "n",
            format!("{} . inet_proto . inet_service", family.addr_type()),
            SetKind::Plain,
        );
    }
    let hosts_only = set
        .nets
        .iter()
        .filter(|n| Family::of(n) == family)
        .all(|n| n.prefix_len() == n.max_prefix_len());
    if hosts_only {
        ("h", family.addr_type().to_owned(), SetKind::Plain)
    } else {
        ("s", family.addr_type().to_owned(), SetKind::Interval)
    }
}

/// A set's members of one family as nft elements of the given shape.
fn set_elements(set: &IpSet, family: Family, letter: &str) -> BTreeSet<String> {
    match letter {
        "n" => set
            .ports
            .iter()
            .filter(|(n, _, _)| Family::of(n) == family)
            .map(|(n, proto, port)| format!("{} . {proto} . {port}", n.addr()))
            .collect(),
        "h" => set
            .nets
            .iter()
            .filter(|n| Family::of(n) == family)
            .map(|n| n.addr().to_string())
            .collect(),
        _ => set
            .nets
            .iter()
            .filter(|n| Family::of(n) == family)
            .map(ToString::to_string)
            .collect(),
    }
}

fn set_name(letter: &str, family: Family, id: &str) -> String {
    format!("{letter}{}{}", family.tag(), short_hash(id))
}

/// A host endpoint's chain for one mode (its own: host endpoints are few, and the host
/// dispatch names them).
fn endpoint_chain_name(key: &str, mode: Mode) -> String {
    format!("e{}{}", short_hash(key), mode.suffix())
}

/// What a stage chain's name takes from one policy's or profile's rules in one direction: a
/// digest of them, and the sets they match positively (whose empty families the name adds).
struct Digest {
    hash: String,
    sets: Vec<SetId>,
    /// The rules it was computed from.
    rules: Vec<RuleProgram>,
    /// The last batch that asked for it.
    used: u64,
    /// How many placed endpoints use it ([`Digests::hold_asked`]).
    users: usize,
    /// The rules these put in a stage chain when inlined, as last rendered (see [`Block`]):
    /// they go with the digest when the rules change.
    block: RefCell<Option<Block>>,
}

/// The digests of the policies and profiles, by direction and owner: each checked once per
/// batch, not once per endpoint (every endpoint's program holds the same rules for one policy
/// or profile in one direction, as the shared policy chains already rely on), and computed
/// again only when its rules differ from the ones it was computed from. A digest lives while a
/// placed endpoint uses it: one that no endpoint holds at the end of a batch is dropped when
/// the next begins (an endpoint placed again within a batch keeps its digests and their
/// blocks). Dropping them by age instead (unused for 64 batches) dropped nearly all of them at
/// once in a steady state: a 4 ms pause at 10,000 policies, then 4 ms more in the next update
/// while the allocator took the memory back (`scripts/bench agent`, p99 of every operation).
#[derive(Default)]
struct Digests {
    digests: HashMap<DigestKey, Digest>,
    batch: u64,
    /// Digests that lost their last user (or were made without one) in this batch.
    unheld: Vec<DigestKey>,
    /// The digests asked for since the last [`Digests::hold_asked`].
    asked: Vec<DigestKey>,
}

type DigestKey = (&'static str, Owner);

impl Digests {
    fn of(&mut self, dir: &'static str, owner: Owner, rules: &[RuleProgram]) -> &Digest {
        let batch = self.batch;
        let key = (dir, owner);
        self.asked.push(key.clone());
        let (stale, users) = match self.digests.get_mut(&key) {
            Some(d) if d.used == batch => (false, d.users),
            Some(d) if d.rules == rules => {
                d.used = batch;
                (false, d.users)
            }
            Some(d) => (true, d.users),
            None => {
                self.unheld.push(key.clone());
                (true, 0)
            }
        };
        if stale {
            let mut sets: Vec<SetId> = rules.iter().flat_map(positive_sets).cloned().collect();
            sets.sort_unstable();
            sets.dedup();
            let digest = Digest {
                hash: short_hash(&format!("{:?}{rules:?}", key.1)),
                sets,
                rules: rules.to_vec(),
                used: batch,
                users,
                block: RefCell::new(None),
            };
            self.digests.insert(key.clone(), digest);
        }
        &self.digests[&key]
    }

    /// The endpoint being placed uses the digests asked for since the last call: counts it as
    /// their user, and returns them (for [`Digests::release`]).
    fn hold_asked(&mut self) -> Vec<DigestKey> {
        let keys = std::mem::take(&mut self.asked);
        for key in &keys {
            if let Some(d) = self.digests.get_mut(key) {
                d.users += 1;
            }
        }
        keys
    }

    /// An endpoint that used the digests `keys` was taken out.
    fn release(&mut self, keys: Vec<DigestKey>) {
        for key in keys {
            if let Some(d) = self.digests.get_mut(&key) {
                d.users = d.users.saturating_sub(1);
                if d.users == 0 {
                    self.unheld.push(key);
                }
            }
        }
    }

    /// Starts a batch: drops the digests no endpoint held at the end of the last one.
    fn next_batch(&mut self) {
        self.batch += 1;
        for key in std::mem::take(&mut self.unheld) {
            if self.digests.get(&key).is_some_and(|d| d.users == 0) {
                self.digests.remove(&key);
            }
        }
    }
}

/// Appends to `out` which families of `sets` have no member (`-4<id>`, `-6<id>`): the rules
/// matching them positively are left out of those families.
fn empty_families(out: &mut String, sets: &[SetId], empty: &dyn NoMembers) {
    use std::fmt::Write as _;
    for id in sets {
        for family in [Family::V4, Family::V6] {
            if empty.no_members(id, family) {
                let _ = write!(out, "-{}{id}", family.tag());
            }
        }
    }
}

/// The sets a rule matches positively (`@set`, named-port alternatives): the ones whose empty
/// families leave the rule (or the alternative) out of that family.
fn positive_sets(r: &RuleProgram) -> impl Iterator<Item = &SetId> {
    [&r.source, &r.destination]
        .into_iter()
        .flat_map(|s| s.set.iter().chain(&s.port_sets))
}

/// The chain an endpoint's stage is rendered in; adds to `deps` the sets its rules (inlined
/// or in the policy and profile chains it jumps to) match positively: when one of their
/// families gains its first member or loses its last, the stage is placed again.
///
/// A workload's stage chain is named by what it is made of (the tiers with their policies, the
/// profiles, how it ends, and which families of the sets they match have no member, i.e. which
/// rules are left out), not by the endpoint: workloads with the same stage share it, so a
/// policy that selects forty workloads alike adds one chain and forty dispatch map elements,
/// not forty chains. The rules are not part of the name: every endpoint's program holds the
/// same rules for one policy or profile in one direction, so the parts determine the content,
/// and a policy whose rules change rewrites its stages under their names, with no dispatch
/// map element moved. With the name comes a digest of the rules the stage holds (of each of
/// its policies' and profiles' rules, in order): a stage whose digest changed is rendered again
/// under its name. Host endpoints' chains are their own.
fn stage_chain_name(
    key: &str,
    ep: &EndpointProgram,
    mode: Mode,
    chain: &ChainProgram,
    empty: &dyn NoMembers,
    digests: &mut Digests,
    deps: &mut Vec<SetId>,
) -> (String, String) {
    use std::fmt::Write as _;
    let dir = mode.dir();
    let mut shape = format!(
        "{}|{:?}|{}|{}|",
        mode.suffix(),
        chain.missing_tier,
        chain.end_of_tier,
        chain.profiles_apply
    );
    let mut content = String::new();
    let mut add = |shape: &mut String, owner: Owner, rules: &[RuleProgram]| {
        let _ = write!(shape, "{owner:?}");
        let d = digests.of(dir, owner, rules);
        content.push_str(&d.hash);
        deps.extend(d.sets.iter().cloned());
        empty_families(shape, &d.sets, empty);
    };
    for t in &chain.tiers {
        let _ = write!(shape, "t{:?}{:?}", t.tier, t.default_action);
        for p in &t.policies {
            shape.push('p');
            let owner = Owner::Policy {
                tier: t.tier.clone(),
                policy: p.policy.clone(),
            };
            add(&mut shape, owner, &p.rules);
        }
    }
    for p in &chain.profiles {
        match p {
            ProfileProgram::Rules { profile, rules } => {
                shape.push('r');
                add(&mut shape, Owner::Profile(profile.clone()), rules);
            }
            ProfileProgram::Missing { profile } => {
                let _ = write!(shape, "m{profile:?}");
            }
        }
    }
    let name = if ep.host {
        endpoint_chain_name(key, mode)
    } else {
        format!("w{}{}", short_hash(&shape), mode.suffix())
    };
    (name, short_hash(&content))
}

fn policy_chain_name(policy: &impl std::fmt::Debug, dir: &str) -> String {
    format!("p{}{dir}", short_hash(&format!("{policy:?}")))
}

fn profile_chain_name(profile: &str, dir: &str) -> String {
    format!("r{}{dir}", short_hash(profile))
}

/// Workload dispatch: a map per direction from interface to the endpoint's chain (or straight
/// to a verdict).
const WL_EGRESS: &str = "wl-egress";
const WL_INGRESS: &str = "wl-ingress";
/// Where the dispatch maps send interfaces they do not list (only `cali*` ones reach the maps):
/// such a workload interface has no program yet and is dropped (fail closed).
const WL_FROM_OTHER: &str = "wl-from-other";
const WL_TO_OTHER: &str = "wl-to-other";
/// While the dispatch maps are keyed by interface index, each is backed by a map keyed by
/// name holding every element it would hold: an interface the index map does not list (the
/// renderer has not heard of it yet, or it was made again under its name with a new index)
/// misses it (a verdict map without a catch-all) and goes on to the next rule, which looks its
/// name up. So a workload meets its own verdict from the moment its interface exists, and
/// knowing the indexes only makes the lookup cheaper.
///
/// Both lookups sit in one chain, so that every stage chain is reached at one depth whichever
/// map names it: the kernel validates a table (at every commit that adds a rule or a jump) from
/// its base chains and skips a chain already validated from the same hook at the same or a
/// greater depth, so a name map behind a catch-all chain, one level deeper, made it walk every
/// stage twice (`scripts/bench agent`'s floor). The ingress lookups follow each other in
/// `forward` (their elements `goto`: ingress is the last stage). The egress ones are in
/// [`WL_FROM`], which `forward` and `wl-to-host` jump to; their elements `goto` the stage (or
/// are `return`), so an egress stage that allows returns to the rule after that jump, not to
/// the name lookup.
const WL_EGRESS_NAME: &str = "wl-egress-name";
const WL_INGRESS_NAME: &str = "wl-ingress-name";
const WL_FROM: &str = "wl-from";

/// The map keyed by name behind an index-keyed dispatch map.
fn name_map(map: &'static str) -> &'static str {
    if map == WL_EGRESS {
        WL_EGRESS_NAME
    } else {
        WL_INGRESS_NAME
    }
}

/// A workload stage that no policy selects and whose first profile's first rule allows
/// everything (Kubernetes namespace profiles): its verdict is known without any rule.
fn allows_all(chain: &ChainProgram) -> bool {
    chain.tiers.is_empty()
        && chain.missing_tier.is_none()
        && chain.profiles_apply
        && matches!(
            chain.profiles.first(),
            Some(ProfileProgram::Rules { rules, .. })
                if rules.first().is_some_and(RuleProgram::allows_everything)
        )
}

/// Host endpoint chains that would only return (no policy for the mode) are left out.
fn always_continues(mode: Mode, chain: &ChainProgram) -> bool {
    !matches!(mode, Mode::In | Mode::Out) && chain.tiers.is_empty() && chain.missing_tier.is_none()
}

/// Renders a node's programs as the desired table (pure).
pub fn render(program: &NodeProgram, settings: &Settings) -> Rendered {
    Renderer::new(program.clone(), settings.clone()).rendered()
}

/// What changed in the desired table since it was last taken: the names of chains and sets
/// that may differ (added, changed or removed), or everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub all: bool,
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    /// For sets of `sets` that only gained or lost elements: which ones, so that the
    /// programmer neither compares nor copies the whole set. A touched set without an edit
    /// is compared whole.
    pub edits: Edits,
}

/// What one endpoint put in the table.
struct Placed {
    host: bool,
    /// Its own chains (host endpoints): one per direction and mode, and their tier chains.
    owned: Vec<String>,
    /// The shared workload stage chains its dispatch map elements name (counted in `users`).
    stages: Vec<String>,
    /// The shared policy and profile chains they jump to (counted in `users`).
    shared: Vec<String>,
    /// Its claims in the workload dispatch maps (map, interface, verdict).
    entries: Vec<(&'static str, String, String)>,
    /// The sets its rules match positively (counted in `set_users`).
    sets: Vec<SetId>,
    /// The digests of the policies and profiles its stages hold (counted in their `users`).
    digests: Vec<DigestKey>,
}

/// The desired table of a node, kept up to date from the calculator's changes: a change
/// re-renders only the chains and sets it touches (an endpoint's chains and the shared chains
/// they jump to, a set's elements), and [`Renderer::take_touched`] says which, so the
/// programmer diffs only those. The hooks and host endpoint dispatch are rebuilt when a host
/// endpoint or the settings change; a set changing kind (host addresses to prefixes) renames it,
/// which re-renders everything. The result always equals [`render`] of the same programs.
pub struct Renderer {
    settings: Settings,
    program: NodeProgram,
    table: Table,
    names: SetNames,
    placed: HashMap<String, Placed>,
    /// How many endpoint stages use each shared chain (policy, profile or workload stage).
    users: HashMap<String, usize>,
    /// The tier chains of each shared workload stage chain.
    stage_parts: HashMap<String, Vec<String>>,
    /// The digest of the rules each shared workload stage chain was rendered with
    /// ([`stage_chain_name`]).
    stage_content: HashMap<String, String>,
    /// What the endpoints claim for each interface of a dispatch map: the verdict each wants,
    /// and how many want it. One verdict is the element; two endpoints that claim one
    /// interface with different verdicts close it (see [`Renderer::claim`]).
    claims: HashMap<(&'static str, String), BTreeMap<String, usize>>,
    /// Shared chains rendered during the current batch (each is rendered once per batch).
    fresh: HashSet<String>,
    /// The hooks, dispatch chains and maps last rendered by [`base_chains`].
    base_chains: Vec<String>,
    base_maps: Vec<String>,
    touched: Touched,
    /// Sets rendered whole since the last [`Renderer::take_touched`] (no edit is kept for
    /// them: the programmer compares them whole).
    whole_sets: HashSet<String>,
    /// Which policy or profile rule each rule of the shared chains came from (hit counters).
    origins: Origins,
    /// The endpoints whose rules match each set positively: placed again when a family of the
    /// set gains its first member or loses its last (their rules for it appear or go).
    set_users: HashMap<SetId, HashSet<String>>,
    /// Sets a family of which became empty or stopped being empty in the current batch.
    flips: BTreeSet<SetId>,
    /// The current batch's digests of policy and profile rules (stage chain names).
    digests: Digests,
    /// The workload dispatch maps are keyed by interface index (see [`Renderer::set_links`]),
    /// with the indexes the table holds (`Table::links`); otherwise by name.
    by_index: bool,
}

impl Renderer {
    pub fn new(program: NodeProgram, settings: Settings) -> Renderer {
        Renderer::with_links(program, settings, None)
    }

    /// A renderer whose workload dispatch maps are keyed by interface index when `links` (the
    /// node's interfaces: name to index) is given; see [`Renderer::set_links`].
    pub fn with_links(
        program: NodeProgram,
        settings: Settings,
        links: Option<BTreeMap<String, u32>>,
    ) -> Renderer {
        let mut r = Renderer {
            by_index: links.is_some(),
            settings,
            program,
            table: Table {
                links: links.unwrap_or_default(),
                ..Table::default()
            },
            names: SetNames::default(),
            placed: HashMap::new(),
            users: HashMap::new(),
            stage_parts: HashMap::new(),
            stage_content: HashMap::new(),
            claims: HashMap::new(),
            fresh: HashSet::new(),
            base_chains: Vec::new(),
            base_maps: Vec::new(),
            touched: Touched::default(),
            whole_sets: HashSet::new(),
            origins: Origins::new(),
            set_users: HashMap::new(),
            flips: BTreeSet::new(),
            digests: Digests::default(),
        };
        r.render_all();
        r
    }

    /// Keys the workload dispatch maps (`wl-egress`, `wl-ingress`) by interface index, given
    /// the node's interfaces (name to index), or by name (`None`). An index map is a cheaper
    /// lookup for every new flow of a workload (a 32-bit key in a fixed-size hash, against a
    /// 16-byte name in a resizable one: `scripts/bench agent` path mode), but it holds only
    /// interfaces that exist: a workload whose interface is not (yet) there has no element, so
    /// its packets, if any, meet the catch-all (dropped, as for a workload without a program);
    /// an interface deleted and created again under its name has a new index. The caller
    /// gives the links again when they change (the agent watches them); only the elements of
    /// interfaces whose index changed are touched. Switching between names and indexes
    /// renders everything again.
    pub fn set_links(&mut self, links: Option<BTreeMap<String, u32>>) {
        let new = match links {
            Some(new) if self.by_index => new,
            links => {
                if self.by_index || links.is_some() {
                    self.by_index = links.is_some();
                    self.table.links = links.unwrap_or_default();
                    self.render_all();
                }
                return;
            }
        };
        let old = &self.table.links;
        let changed: BTreeSet<String> = old
            .iter()
            .filter(|(name, index)| new.get(*name) != Some(*index))
            .chain(
                new.iter()
                    .filter(|(name, index)| old.get(*name) != Some(*index)),
            )
            .map(|(name, _)| name.clone())
            .collect();
        let affected: Vec<(&'static str, String)> = self
            .claims
            .keys()
            .filter(|(_, iface)| changed.contains(iface))
            .cloned()
            .collect();
        let before: Vec<Option<String>> = affected
            .iter()
            .map(|(map, iface)| self.index_element(map, iface))
            .collect();
        self.table.links = new;
        for ((map, iface), before) in affected.into_iter().zip(before) {
            let after = self.index_element(map, &iface);
            self.swap_element(map, before, after);
        }
    }

    /// The desired table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The programs the table is rendered from.
    pub fn program(&self) -> &NodeProgram {
        &self.program
    }

    /// Which policy or profile rule each rule of the shared chains came from.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The programs' sets as far as [`flow_cause`] needs them: for each set, one member (an
    /// unspecified address) of each family it has members of. Stage chain names say which
    /// families of their sets are empty, so recomputing them needs that and nothing more; this
    /// costs one entry per set, not a copy of every member.
    pub fn set_families(&self) -> BTreeMap<SetId, IpSet> {
        let unspecified = |family: Family| -> IpNet {
            match family {
                Family::V4 => IpNet::from(std::net::IpAddr::from([0u8; 4])),
                Family::V6 => IpNet::from(std::net::IpAddr::from([0u16; 8])),
            }
        };
        self.program
            .sets
            .keys()
            .map(|id| {
                let mut set = IpSet::default();
                for family in [Family::V4, Family::V6] {
                    if self.names.no_members(id, family) {
                        continue;
                    }
                    if id.starts_with("n:") {
                        set.ports.insert((unspecified(family), 0, 0));
                    } else {
                        set.nets.insert(unspecified(family));
                    }
                }
                (id.clone(), set)
            })
            .collect()
    }

    /// The table with its size.
    pub fn rendered(&self) -> Rendered {
        let (chains, sets, set_members) = self.counts();
        Rendered {
            table: self.table.clone(),
            chains,
            sets,
            set_members,
        }
    }

    /// Chains, IP sets (dispatch maps not counted) and their members.
    pub fn counts(&self) -> (usize, usize, usize) {
        let ip_sets = self.table.sets.values().filter(|s| s.key != "ifname");
        let (sets, members) = ip_sets.fold((0, 0), |(n, m), s| (n + 1, m + s.elements.len()));
        (self.table.chains.len(), sets, members)
    }

    /// What changed since the last call (everything, the first time).
    pub fn take_touched(&mut self) -> Touched {
        self.whole_sets.clear();
        std::mem::take(&mut self.touched)
    }

    /// Set `name` changed as a whole (rendered again, added or removed).
    fn touch_whole_set(&mut self, name: String) {
        self.touched.edits.remove(&name);
        self.whole_sets.insert(name.clone());
        self.touched.sets.insert(name);
    }

    /// Set `name` gained (`added`) or lost an element.
    fn touch_element(&mut self, name: &str, element: &str, added: bool) {
        if !self.whole_sets.contains(name) {
            let edit = self.touched.edits.entry(name.to_owned()).or_default();
            if added {
                edit.add(element);
            } else {
                edit.remove(element);
            }
        }
        if !self.touched.sets.contains(name) {
            self.touched.sets.insert(name.to_owned());
        }
    }

    pub fn set_settings(&mut self, settings: Settings) {
        if settings == self.settings {
            return;
        }
        if settings.flow_logs_allowed != self.settings.flow_logs_allowed {
            // Every policy and profile chain changes: render the table again.
            self.settings = settings;
            self.render_all();
            return;
        }
        let pools = settings.pools != self.settings.pools;
        let rest = settings.felix != self.settings.felix
            || settings.workload_prefix != self.settings.workload_prefix
            || settings.tunnels != self.settings.tunnels;
        self.settings = settings;
        if pools {
            self.render_nat();
        }
        if rest {
            self.render_base();
        }
    }

    /// Applies the calculator's changes, in its order.
    pub fn apply(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        apply_changes(&mut self.program, changes);
        self.fresh.clear();
        self.digests.next_batch();
        self.flips.clear();
        // Sets first: the rules of the endpoints placed below name them.
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        let mut endpoints: BTreeSet<String> = BTreeSet::new();
        for c in changes {
            match c {
                Change::SetAdded { id, .. } | Change::SetRemoved { id } => {
                    whole.insert(id);
                }
                Change::ProgramSet { endpoint, .. } | Change::ProgramRemoved { endpoint } => {
                    endpoints.insert(endpoint.clone());
                }
                Change::SetUpdated { .. } => {}
            }
        }
        for c in changes {
            if let Change::SetUpdated { id, added, removed } = c
                && !whole.contains(id.as_str())
                && !self.update_set(id, added, removed)
            {
                return self.render_all();
            }
        }
        for id in whole {
            if !self.render_set(id) {
                return self.render_all();
            }
        }
        // A set whose family gained its first member or lost its last: the rules matching it
        // in that family appear or go, in every stage (and policy chain) that holds them.
        for id in std::mem::take(&mut self.flips) {
            if let Some(users) = self.set_users.get(&id) {
                endpoints.extend(users.iter().cloned());
            }
        }
        let mut hosts = false;
        for key in &endpoints {
            hosts |= self.unplace(key);
            if let Some(ep) = self.program.endpoints.get(key) {
                hosts |= ep.host;
                self.place(key);
            }
        }
        if hosts {
            self.render_base();
        }
    }

    fn render_all(&mut self) {
        self.table = Table {
            links: std::mem::take(&mut self.table.links),
            ..Table::default()
        };
        self.names = SetNames::default();
        self.placed.clear();
        self.users.clear();
        self.stage_parts.clear();
        self.stage_content.clear();
        self.claims.clear();
        self.fresh.clear();
        self.base_chains.clear();
        self.base_maps.clear();
        self.origins.clear();
        self.set_users.clear();
        // Set names may have changed (a set changed kind): the digests' blocks are rendered
        // again.
        self.digests = Digests::default();
        let ids: Vec<String> = self.program.sets.keys().cloned().collect();
        for id in &ids {
            self.render_set(id);
        }
        // Interfaces without an element (not workloads, or workloads without a program) meet
        // the catch-all element.
        for (map, other) in [(WL_EGRESS, WL_FROM_OTHER), (WL_INGRESS, WL_TO_OTHER)] {
            let catch_all = BTreeSet::from([format!("* : jump {other}")]);
            let names = Set::new("ifname", SetKind::Verdict, catch_all);
            if self.by_index {
                // Not sized: a declared size makes the kernel keep a 32-bit-keyed map in its
                // fixed-size hash (a cheaper lookup, ~48 ns against ~69), but the validation
                // of every transaction that adds a rule or a jump walks all of its buckets
                // (131,072 for a size of 65,535: +0.27 ms per such update in `scripts/bench
                // agent`); a resizable one is walked by its elements. No catch-all: a miss
                // goes on to the name map's rule.
                let index = Set::new(IFACE_INDEX, SetKind::Verdict, BTreeSet::new());
                self.table.sets.insert(map.into(), index);
                self.table.sets.insert(name_map(map).into(), names);
            } else {
                self.table.sets.insert(map.into(), names);
            }
        }
        let keys: Vec<String> = self.program.endpoints.keys().cloned().collect();
        for key in &keys {
            self.place(key);
        }
        self.render_base();
        self.render_nat();
        self.flips.clear();
        self.touched = Touched {
            all: true,
            ..Touched::default()
        };
    }

    /// Renders one IP set whole (both families), or removes it if the program has no such set.
    /// False when the set was already rendered under another name (it changed kind).
    fn render_set(&mut self, id: &str) -> bool {
        for family in [Family::V4, Family::V6] {
            let key = (id.to_owned(), family as u8);
            let old = self.names.names.get(&key).cloned();
            let was_empty = self.names.empty.contains(&key);
            let Some(set) = self.program.sets.get(id) else {
                if was_empty {
                    self.names.empty.remove(&key);
                    self.flips.insert(id.to_owned());
                }
                if let Some(name) = old {
                    self.names.names.remove(&key);
                    self.table.sets.remove(&name);
                    self.touch_whole_set(name);
                }
                continue;
            };
            let (letter, key_type, kind) = set_shape(id, set, family);
            let name = set_name(letter, family, id);
            if old.as_ref().is_some_and(|o| *o != name) {
                return false;
            }
            let elements = set_elements(set, family, letter);
            if elements.is_empty() != was_empty {
                self.flips.insert(id.to_owned());
                if was_empty {
                    self.names.empty.remove(&key);
                } else {
                    self.names.empty.insert(key.clone());
                }
            }
            self.table
                .sets
                .insert(name.clone(), Set::new(key_type, kind, elements));
            self.names.names.insert(key, name.clone());
            self.touch_whole_set(name);
        }
        true
    }

    /// Edits one rendered IP set by its added and removed members. False when the set changes
    /// kind (or was not rendered).
    fn update_set(&mut self, id: &str, added: &IpSet, removed: &IpSet) -> bool {
        let Some(set) = self.program.sets.get(id) else {
            return false;
        };
        let mut changed = Vec::new();
        for family in [Family::V4, Family::V6] {
            let key = (id.to_owned(), family as u8);
            let Some(old) = self.names.names.get(&key) else {
                return false;
            };
            // The shape (host addresses or prefixes) follows from the old one and the change;
            // the whole set is looked at only when a prefix leaves a prefix set.
            let prefix =
                |n: &&IpNet| Family::of(n) == family && n.prefix_len() < n.max_prefix_len();
            let letter = match old.as_bytes().first() {
                Some(b'h') if added.nets.iter().any(|n| prefix(&n)) => "s",
                Some(b'h') => "h",
                Some(b's') if !removed.nets.iter().any(|n| prefix(&n)) => "s",
                _ => set_shape(id, set, family).0,
            };
            let name = set_name(letter, family, id);
            if *old != name {
                return false;
            }
            let Some(rendered) = self.table.sets.get_mut(&name) else {
                return false;
            };
            let gone = set_elements(removed, family, letter);
            let new = set_elements(added, family, letter);
            for e in gone {
                if rendered.elements.remove(&e) {
                    changed.push((name.clone(), e, false));
                }
            }
            for e in new {
                if !rendered.elements.contains(&e) {
                    rendered.elements.insert(e.clone());
                    changed.push((name.clone(), e, true));
                }
            }
            let now_empty = rendered.elements.is_empty();
            if now_empty != self.names.empty.contains(&key) {
                self.flips.insert(id.to_owned());
                if now_empty {
                    self.names.empty.insert(key);
                } else {
                    self.names.empty.remove(&key);
                }
            }
        }
        for (name, e, added) in changed {
            self.touch_element(&name, &e, added);
        }
        true
    }

    /// Renders one endpoint's chains, the shared chains they jump to and its dispatch map
    /// elements.
    fn place(&mut self, key: &str) {
        let Some(ep) = self.program.endpoints.get(key) else {
            return;
        };
        let mut placed = Placed {
            host: ep.host,
            owned: Vec::new(),
            stages: Vec::new(),
            shared: Vec::new(),
            entries: Vec::new(),
            sets: Vec::new(),
            digests: Vec::new(),
        };
        let mut entries = Vec::new();
        for (mode, chain) in Mode::of(ep) {
            if ep.host && always_continues(mode, chain) {
                continue;
            }
            let dir = mode.dir();
            let map = if mode == Mode::In {
                WL_INGRESS
            } else {
                WL_EGRESS
            };
            if !ep.host && allows_all(chain) && !self.settings.flow_logs_allowed {
                // No chain at all: the dispatch map's element is the verdict (unless the
                // flows the profile allows are logged: they go through its chain).
                entries.push((map, self.workload_element(mode, None)));
                continue;
            }
            let (name, content) = stage_chain_name(
                key,
                ep,
                mode,
                chain,
                &self.names,
                &mut self.digests,
                &mut placed.sets,
            );
            let on_accept = if !ep.host && mode == Mode::In {
                "accept"
            } else {
                "return"
            };
            let entry = (!ep.host).then(|| self.workload_element(mode, Some(&name)));
            let direction = if dir == "i" {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            if ep.host {
                let (chains, _) = endpoint_chain(&name, ep, chain, dir, on_accept, None);
                for (n, c) in chains {
                    self.table.chains.insert(n.clone(), c);
                    self.touched.chains.insert(n.clone());
                    placed.owned.push(n);
                }
            } else {
                // Shared by every workload with the same stage: rendered by the first, again
                // when its policies' rules changed, taken out with the last.
                let users = self.users.entry(name.clone()).or_default();
                *users += 1;
                if *users == 1 || self.stage_content.get(&name) != Some(&content) {
                    let inline = Inline {
                        names: &self.names,
                        log_allowed: self.settings.flow_logs_allowed,
                        digests: &self.digests,
                    };
                    let (chains, rules) =
                        endpoint_chain(&name, ep, chain, dir, on_accept, Some(&inline));
                    let old_parts = self.stage_parts.remove(&name).unwrap_or_default();
                    let mut parts = Vec::new();
                    for (n, c) in chains {
                        self.table.chains.insert(n.clone(), c);
                        self.touched.chains.insert(n.clone());
                        if n != name {
                            parts.push(n);
                        }
                    }
                    for gone in old_parts.into_iter().filter(|n| !parts.contains(n)) {
                        self.table.chains.remove(&gone);
                        self.touched.chains.insert(gone);
                    }
                    if !parts.is_empty() {
                        self.stage_parts.insert(name.clone(), parts);
                    }
                    if rules.is_empty() {
                        self.origins.remove(&name);
                    } else {
                        let origin = ChainOrigin { direction, rules };
                        self.origins.insert(name.clone(), origin);
                    }
                    self.stage_content.insert(name.clone(), content);
                }
                placed.stages.push(name.clone());
            }
            // The policy and profile chains the stage jumps to: every one for a host endpoint,
            // those with a Pass rule for a workload (the others are inlined).
            let mut shared = Vec::new();
            if chain.missing_tier.is_none() {
                for t in &chain.tiers {
                    if !ep.host && tier_inlinable(t) {
                        continue;
                    }
                    for p in &t.policies {
                        let label = p.policy.to_string();
                        let owner = Owner::Policy {
                            tier: t.tier.clone(),
                            policy: p.policy.clone(),
                        };
                        let name = policy_chain_name(&p.policy, dir);
                        shared.push((name, label, &p.rules, owner));
                    }
                }
                if chain.profiles_apply {
                    for p in &chain.profiles {
                        let ProfileProgram::Rules { profile, rules } = p else {
                            break;
                        };
                        if !ep.host && inlinable(rules) {
                            continue;
                        }
                        let label = format!("profile {profile}");
                        let owner = Owner::Profile(profile.clone());
                        shared.push((profile_chain_name(profile, dir), label, rules, owner));
                    }
                }
            }
            for (n, label, rules, owner) in shared {
                if self.fresh.insert(n.clone()) {
                    let log_allowed = self.settings.flow_logs_allowed;
                    let (mut out, mut by_id) = (Vec::new(), HashMap::new());
                    policy_rules(
                        &label,
                        &n,
                        &owner,
                        rules,
                        &self.names,
                        log_allowed,
                        ALLOW_IN_CHAIN,
                        &mut out,
                        &mut by_id,
                    );
                    let origin = ChainOrigin {
                        direction,
                        rules: by_id,
                    };
                    self.origins.insert(n.clone(), origin);
                    self.table.chains.insert(n.clone(), Chain::regular(out));
                    self.touched.chains.insert(n.clone());
                }
                *self.users.entry(n.clone()).or_default() += 1;
                placed.shared.push(n);
            }
            if let Some(verdict) = entry {
                entries.push((map, verdict));
            }
        }
        let iface = ep.interface.clone();
        for (map, verdict) in entries {
            self.claim(map, &iface, &verdict, true);
            placed.entries.push((map, iface.clone(), verdict));
        }
        placed.digests = self.digests.hold_asked();
        placed.sets.sort_unstable();
        placed.sets.dedup();
        for id in &placed.sets {
            let users = self.set_users.entry(id.clone()).or_default();
            users.insert(key.to_owned());
        }
        self.placed.insert(key.to_owned(), placed);
    }

    /// A workload's dispatch map verdict in `mode`: to its stage chain (`Some`), or past a stage
    /// that allows everything (`None`). Its ingress is a forwarded packet's last stage (`goto`,
    /// `accept`). Its egress is followed by the destination's ingress or the host's own input
    /// rules: keyed by name, `jump` and `continue`; keyed by index, the element sits in
    /// `wl-from` (see [`WL_FROM`]), the stage is that chain's tail (`goto`) and passing returns
    /// from it (`return`).
    fn workload_element(&self, mode: Mode, stage: Option<&str>) -> String {
        let (to_stage, past) = match mode {
            Mode::In => ("goto", "accept"),
            _ if self.by_index => ("goto", "return"),
            _ => ("jump", "continue"),
        };
        match stage {
            Some(chain) => format!("{to_stage} {chain}"),
            None => past.to_owned(),
        }
    }

    /// The verdict of a dispatch map's element for an interface, from what the endpoints claim.
    fn verdict(&self, map: &'static str, iface: &str) -> Option<String> {
        let claims = self.claims.get(&(map, iface.to_owned()))?;
        if claims.len() == 1 {
            claims.keys().next().cloned()
        } else {
            Some("drop".into())
        }
    }

    /// A dispatch map's element keyed by the interface's index (none while the interface does
    /// not exist, or while the maps are keyed by name).
    fn index_element(&self, map: &'static str, iface: &str) -> Option<String> {
        if !self.by_index {
            return None;
        }
        let index = self.table.links.get(iface)?;
        Some(format!("{index} : {}", self.verdict(map, iface)?))
    }

    /// The map keyed by name that holds `map`'s elements: the map itself, or the one behind
    /// it while it is keyed by index.
    fn names_of(&self, map: &'static str) -> &'static str {
        if self.by_index { name_map(map) } else { map }
    }

    /// Replaces a dispatch map's element `before` by `after` (either may be absent).
    fn swap_element(&mut self, map: &'static str, before: Option<String>, after: Option<String>) {
        if before == after {
            return;
        }
        let mut changed = Vec::new();
        if let Some(m) = self.table.sets.get_mut(map) {
            if let Some(old) = before
                && m.elements.remove(&old)
            {
                changed.push((old, false));
            }
            if let Some(new) = after
                && m.elements.insert(new.clone())
            {
                changed.push((new, true));
            }
        }
        self.touched.sets.insert(map.into());
        for (e, added) in changed {
            self.touch_element(map, &e, added);
        }
    }

    /// An endpoint claims (or gives up) `verdict` for its interface in a dispatch map. The
    /// map's element follows the claims: the one verdict claimed, or `drop` while endpoints
    /// claim the interface with different verdicts (two endpoints given one interface: which
    /// one the interface really is cannot be known, so it is closed, as an interface without
    /// a program is). Two elements with one key would make nft refuse every transaction.
    /// While the maps are keyed by index, both the index map and the name map behind it
    /// follow.
    fn claim(&mut self, map: &'static str, iface: &str, verdict: &str, add: bool) {
        let key = (map, iface.to_owned());
        let before = (self.verdict(map, iface), self.index_element(map, iface));
        let claims = self.claims.entry(key.clone()).or_default();
        if add {
            *claims.entry(verdict.to_owned()).or_default() += 1;
        } else if let Some(n) = claims.get_mut(verdict) {
            *n -= 1;
            if *n == 0 {
                claims.remove(verdict);
            }
        }
        if claims.is_empty() {
            self.claims.remove(&key);
        }
        let by_name = |verdict: Option<String>| verdict.map(|v| format!("\"{iface}\" : {v}"));
        let names = self.names_of(map);
        self.swap_element(names, by_name(before.0), by_name(self.verdict(map, iface)));
        let after = self.index_element(map, iface);
        self.swap_element(map, before.1, after);
    }

    /// Takes out what [`Renderer::place`] put in for an endpoint; returns whether it was a
    /// host endpoint.
    fn unplace(&mut self, key: &str) -> bool {
        let Some(placed) = self.placed.remove(key) else {
            return false;
        };
        for n in placed.owned {
            self.table.chains.remove(&n);
            self.touched.chains.insert(n);
        }
        for id in &placed.sets {
            if let Some(users) = self.set_users.get_mut(id) {
                users.remove(key);
                if users.is_empty() {
                    self.set_users.remove(id);
                }
            }
        }
        for (map, iface, verdict) in placed.entries {
            self.claim(map, &iface, &verdict, false);
        }
        self.digests.release(placed.digests);
        for n in placed.shared.into_iter().chain(placed.stages) {
            let users = self.users.entry(n.clone()).or_default();
            *users = users.saturating_sub(1);
            if *users == 0 {
                self.users.remove(&n);
                self.origins.remove(&n);
                self.stage_content.remove(&n);
                for part in self.stage_parts.remove(&n).unwrap_or_default() {
                    self.table.chains.remove(&part);
                    self.touched.chains.insert(part);
                }
                self.table.chains.remove(&n);
                self.touched.chains.insert(n);
            }
        }
        placed.host
    }

    /// Renders natOutgoing again: its sets and chain, or nothing when no pool has natOutgoing.
    fn render_nat(&mut self) {
        let mut part = Table::default();
        nat_outgoing(&mut part, &self.settings.pools);
        for n in NAT_SETS {
            let new = part.sets.remove(n);
            if self.table.sets.get(n) != new.as_ref() {
                self.touch_whole_set(n.into());
                match new {
                    Some(s) => self.table.sets.insert(n.into(), s),
                    None => self.table.sets.remove(n),
                };
            }
        }
        let new = part.chains.remove(NAT_CHAIN);
        if self.table.chains.get(NAT_CHAIN) != new.as_ref() {
            self.touched.chains.insert(NAT_CHAIN.into());
            match new {
                Some(c) => self.table.chains.insert(NAT_CHAIN.into(), c),
                None => self.table.chains.remove(NAT_CHAIN),
            };
        }
    }

    /// Renders the hooks and the host endpoint dispatch again.
    fn render_base(&mut self) {
        let mut hosts = HostDispatch::default();
        for (key, ep) in self.program.endpoints.iter().filter(|(_, e)| e.host) {
            hosts.any = true;
            for (mode, chain) in Mode::of(ep) {
                if !always_continues(mode, chain) {
                    hosts.add(mode, &ep.interface, endpoint_chain_name(key, mode));
                }
            }
        }
        let mut part = Table::default();
        base_chains(&mut part, &self.settings, &hosts, self.by_index);
        for n in self.base_chains.drain(..) {
            self.table.chains.remove(&n);
            self.touched.chains.insert(n);
        }
        for n in std::mem::take(&mut self.base_maps) {
            self.table.sets.remove(&n);
            self.touch_whole_set(n);
        }
        for (n, c) in part.chains {
            self.touched.chains.insert(n.clone());
            self.base_chains.push(n.clone());
            self.table.chains.insert(n, c);
        }
        for (n, s) in part.sets {
            self.touch_whole_set(n.clone());
            self.base_maps.push(n.clone());
            self.table.sets.insert(n, s);
        }
    }
}

/// The host endpoints' chains by mode: named interfaces (first endpoint wins an interface) and
/// the wildcard (`*`) one, which covers interfaces without a named endpoint.
#[derive(Default)]
struct HostDispatch {
    any: bool,
    named: BTreeMap<Mode, BTreeMap<String, String>>,
    wildcard: BTreeMap<Mode, String>,
}

impl HostDispatch {
    fn add(&mut self, mode: Mode, interface: &str, chain: String) {
        if interface == "*" {
            self.wildcard.entry(mode).or_insert(chain);
        } else if !interface.is_empty() {
            // An endpoint known only by its expected IPs is not attached to an interface.
            self.named
                .entry(mode)
                .or_default()
                .entry(interface.to_owned())
                .or_insert(chain);
        }
    }
}

/// Failsafe entries as rules: `ports` is `d` to match the destination port (the service) or
/// `s` for replies from it; `addr` the side the entry's net applies to.
fn failsafe_rules(
    list: &[Failsafe],
    ports: &str,
    addr: &str,
    pre: &str,
    verdict: &str,
) -> Vec<Rule> {
    list.iter()
        .map(|f| {
            let mut text = pre.to_owned();
            if let Some(net) = &f.net {
                let ip = Family::of(net).ip();
                text.push_str(&format!("{ip} {addr}addr {net} "));
            }
            text.push_str(&format!(
                "meta l4proto {} th {ports}port {} {verdict}",
                f.protocol, f.port
            ));
            let note = format!("failsafe {}/{}", f.protocol, f.port);
            Rule::new(text, note)
        })
        .collect()
}

/// natOutgoing, as felix's masquerade manager: per family, an interval set of every pool
/// (`all-pools4`, `all-pools6`) and one of the pools with natOutgoing (`masq-pools4`,
/// `masq-pools6`); the chain `nat-outgoing` (nat hook postrouting, priority srcnat)
/// masquerades traffic from a masq pool to a destination outside every pool.
const NAT_CHAIN: &str = "nat-outgoing";
const NAT_SETS: [&str; 4] = ["all-pools4", "masq-pools4", "all-pools6", "masq-pools6"];
/// nft's `srcnat` priority.
const PRIORITY_SRCNAT: i32 = 100;

/// The natOutgoing sets and chain, only when some pool has natOutgoing.
fn nat_outgoing(table: &mut Table, pools: &NatPools) {
    if pools.masq.is_empty() {
        return;
    }
    let mut rules = Vec::new();
    for family in [Family::V4, Family::V6] {
        let tag = family.tag();
        let (all, masq) = (format!("all-pools{tag}"), format!("masq-pools{tag}"));
        for (name, nets) in [(&all, &pools.all), (&masq, &pools.masq)] {
            let elements = nets
                .iter()
                .filter(|n| Family::of(n) == family)
                .map(ToString::to_string)
                .collect();
            let set = Set::new(family.addr_type(), SetKind::Interval, elements);
            table.sets.insert(name.clone(), set);
        }
        let ip = family.ip();
        rules.push(Rule::new(
            format!("{ip} saddr @{masq} {ip} daddr != @{all} counter masquerade"),
            "natOutgoing",
        ));
    }
    let hook = Base {
        kind: "nat".into(),
        hook: "postrouting".into(),
        priority: PRIORITY_SRCNAT,
        policy: "accept".into(),
    };
    table
        .chains
        .insert(NAT_CHAIN.into(), Chain::base(hook, rules));
}

/// The tunnels' rules: the head of `input` (and of `output`, used when the node has host
/// endpoints), their IP sets, and the raw chains that exempt outer VXLAN packets between nodes
/// from conntrack.
struct TunnelRules {
    input: Vec<Rule>,
    output: Vec<Rule>,
}

/// The chains that exempt outer VXLAN packets between nodes from conntrack.
const RAW_TUNNEL_IN: &str = "raw-tunnels-in";
const RAW_TUNNEL_OUT: &str = "raw-tunnels-out";

fn tunnel_rules(table: &mut Table, t: &Tunnels) -> TunnelRules {
    let mut out = TunnelRules {
        input: Vec::new(),
        output: Vec::new(),
    };
    let interval = |nets: &BTreeSet<IpNet>, family: Family| {
        let elements = nets
            .iter()
            .filter(|n| Family::of(n) == family)
            .map(ToString::to_string)
            .collect();
        Set::new(family.addr_type(), SetKind::Interval, elements)
    };
    if t.ipip {
        table
            .sets
            .insert("all-hosts4".into(), interval(&t.hosts, Family::V4));
        out.input.extend([
            Rule::new(
                "ip protocol 4 ip saddr @all-hosts4 accept",
                "IPIP from a node",
            ),
            Rule::new("ip protocol 4 counter drop", "IPIP from elsewhere"),
        ]);
        out.output.push(Rule::new(
            "ip protocol 4 ip daddr @all-hosts4 accept",
            "IPIP to a node",
        ));
    }
    let port = t.vxlan_port;
    let (mut raw_in, mut raw_out) = (Vec::new(), Vec::new());
    for (on, family) in [(t.vxlan, Family::V4), (t.vxlan_v6, Family::V6)] {
        if !on {
            continue;
        }
        let (ip, set) = (family.ip(), format!("all-vxlan{}", family.tag()));
        table
            .sets
            .insert(set.clone(), interval(&t.vxlan_sources, family));
        out.input.extend([
            Rule::new(
                format!("udp dport {port} {ip} saddr @{set} accept"),
                "VXLAN from a node",
            ),
            Rule::new(
                format!(
                    "meta nfproto {} udp dport {port} counter drop",
                    family.nfproto()
                ),
                "VXLAN from elsewhere",
            ),
        ]);
        out.output.push(Rule::new(
            format!("udp dport {port} {ip} daddr @{set} accept"),
            "VXLAN to a node",
        ));
        raw_in.push(Rule::new(
            format!("udp dport {port} {ip} saddr @{set} notrack"),
            "VXLAN from a node: untracked",
        ));
        raw_out.push(Rule::new(
            format!("udp dport {port} {ip} daddr @{set} notrack"),
            "VXLAN to a node: untracked",
        ));
    }
    if !raw_in.is_empty() {
        table.chains.insert(
            RAW_TUNNEL_IN.into(),
            Chain::base(base("prerouting", -300), raw_in),
        );
        table.chains.insert(
            RAW_TUNNEL_OUT.into(),
            Chain::base(base("output", -300), raw_out),
        );
    }
    out
}

/// Conntrack first: established and related flows are accepted, invalid ones dropped; only new
/// (and untracked) flows meet policy. Two rules rather than one `ct state vmap { established :
/// accept, related : accept, invalid : drop }`: a rule here is a load, a mask and a compare,
/// where the map's lookup in an anonymous set costs a new packet more than both (`scripts/bench
/// agent` path mode, "ct rule" / "ct invalid" / "ct vmap"); an established packet still leaves
/// at the first rule.
pub const CONNTRACK: [&str; 2] = [
    "ct state established,related accept",
    "ct state invalid drop",
];

fn conntrack_rules() -> impl Iterator<Item = Rule> {
    CONNTRACK.iter().map(|text| Rule::new(*text, ""))
}

/// The base chains (hooks) and the host endpoint dispatch chains.
fn base_chains(table: &mut Table, settings: &Settings, hosts: &HostDispatch, by_index: bool) {
    let prefix = &settings.workload_prefix;
    // The ingress dispatch map's key: the interface's index or its name.
    let oif = if by_index { "oif" } else { "oifname" };
    let clear = clear_ours();
    let not_accepted = format!("meta mark & 0x{MARK_ACCEPT:08x} == 0");
    let accepted = format!("meta mark & 0x{MARK_ACCEPT:08x} != 0");
    let r = |text: String, note: &str| Rule::new(text, note);
    let mut forward: Vec<Rule> = conntrack_rules().collect();
    if hosts.any {
        // Forwarded traffic arriving by a host endpoint, unless its preDNAT policy allowed it.
        forward.push(r(
            format!("{not_accepted} jump hd-fi"),
            "host endpoint forward ingress",
        ));
    }
    // A workload's egress chain returns if it accepts (or its map element is `continue`, or
    // `return` from `wl-from`); its ingress chain (or element) accepts. Only traffic to
    // something else goes on. The interface's prefix is tested before its map: a new flow to
    // or from another node or the outside meets one name test on that side instead of a map
    // lookup that misses and the catch-all chain (about 70 ns per node: issue 15's two-node
    // UDP figures). Keyed by index, an interface the index map does not list goes on to its
    // name's lookup (see [`WL_FROM`]).
    let egress = if by_index {
        table.chains.insert(
            WL_FROM.into(),
            Chain::regular(vec![
                r(format!("iif vmap @{WL_EGRESS}"), "workload egress"),
                r(
                    format!("iifname vmap @{WL_EGRESS_NAME}"),
                    "workload egress, not keyed by index",
                ),
            ]),
        );
        format!("jump {WL_FROM}")
    } else {
        format!("iifname vmap @{WL_EGRESS}")
    };
    forward.push(r(
        format!("iifname \"{prefix}*\" {egress}"),
        "workload egress",
    ));
    forward.push(r(
        format!("oifname \"{prefix}*\" {oif} vmap @{WL_INGRESS}"),
        "workload ingress",
    ));
    if by_index {
        forward.push(r(
            format!("oifname \"{prefix}*\" oifname vmap @{WL_INGRESS_NAME}"),
            "workload ingress, not keyed by index",
        ));
    }
    for name in [WL_FROM_OTHER, WL_TO_OTHER] {
        // Only a workload interface the maps do not list (no program yet) comes here.
        let drop = r("counter drop".into(), "workload without a program");
        let log = log_rule("", flowlog::NO_PROGRAM);
        table
            .chains
            .insert(name.into(), Chain::regular(vec![log, drop]));
    }
    // A workload's stage leaves no mark bit of ours behind (it clears them before its verdict),
    // so the hook clears them only around host endpoint policy: preDNAT's and `hd-fi`'s accept
    // bit before `hd-fe`, and what `hd-fe` set before the packet leaves. Without host
    // endpoints a new flow leaving the node meets no rule after the ingress name test.
    if hosts.any {
        forward.push(r(clear.clone(), ""));
        forward.push(r("jump hd-fe".into(), "host endpoint forward egress"));
        forward.push(r(clear.clone(), ""));
    }
    table
        .chains
        .insert("forward".into(), Chain::base(base("forward", 10), forward));

    // Workload to its own host: the workload's egress, then DefaultEndpointToHostAction.
    // Reached by goto, so Return leaves our input chain (the host's own firewall decides).
    let mut to_host = vec![r(egress, "workload egress")];
    match settings.felix.default_endpoint_to_host_action.as_str() {
        "Accept" => to_host.push(r(
            format!("{clear} accept"),
            "DefaultEndpointToHostAction Accept",
        )),
        "Return" => to_host.push(r(
            format!("{clear} return"),
            "DefaultEndpointToHostAction Return",
        )),
        _ => to_host.extend([
            log_rule("", flowlog::TO_HOST),
            r("counter drop".into(), "DefaultEndpointToHostAction Drop"),
        ]),
    }
    table
        .chains
        .insert("wl-to-host".into(), Chain::regular(to_host));
    let tunnels = tunnel_rules(table, &settings.tunnels);
    let mut input = tunnels.input;
    input.extend(conntrack_rules());
    input.extend([r(
        format!("iifname \"{prefix}*\" goto wl-to-host"),
        "workload to host",
    )]);
    if hosts.any {
        input.extend([
            r("iifname \"lo\" accept".into(), "the host to itself"),
            r(
                format!("{accepted} accept"),
                "allowed by untracked or preDNAT policy",
            ),
            r(clear.clone(), ""),
            r("jump hd-i".into(), "host endpoint ingress"),
        ]);
    }
    table
        .chains
        .insert("input".into(), Chain::base(base("input", 10), input));
    if !hosts.any {
        return;
    }

    let fs = &settings.felix;
    let output: Vec<Rule> = [
        r(CONNTRACK[0].into(), ""),
        r(format!("{accepted} accept"), "allowed by untracked policy"),
        r(
            format!("oifname \"{prefix}*\" accept"),
            "the host to its own workloads",
        ),
        r("oifname \"lo\" accept".into(), "the host to itself"),
    ]
    .into_iter()
    .chain(tunnels.output)
    .chain([
        r(clear.clone(), ""),
        r("jump hd-e".into(), "host endpoint egress"),
    ])
    .collect();
    table
        .chains
        .insert("output".into(), Chain::base(base("output", 10), output));
    // Untracked (doNotTrack) policy, at raw priority before conntrack: an Allow marks the
    // packet, which is then exempt from conntrack and accepted by every later chain. Only
    // traffic to and from the host itself.
    let untracked_allowed = r(
        format!("{accepted} notrack accept"),
        "untracked policy allowed",
    );
    let raw_in = vec![
        r(clear.clone(), ""),
        r(format!("iifname \"{prefix}*\" return"), ""),
        r("iifname \"lo\" return".into(), ""),
        r("fib daddr type != local return".into(), "forwarded traffic"),
        r("jump hd-ui".into(), "host endpoint untracked ingress"),
        untracked_allowed.clone(),
    ];
    table.chains.insert(
        "raw-in".into(),
        Chain::base(base("prerouting", -300), raw_in),
    );
    let raw_out = vec![
        r(clear.clone(), ""),
        r(format!("oifname \"{prefix}*\" return"), ""),
        r("oifname \"lo\" return".into(), ""),
        r("jump hd-ue".into(), "host endpoint untracked egress"),
        untracked_allowed,
    ];
    table
        .chains
        .insert("raw-out".into(), Chain::base(base("output", -300), raw_out));
    // preDNAT policy, at mangle priority before DNAT: an Allow skips the host endpoint's
    // normal and forward policy (workload policy still applies).
    let pre_dnat = vec![
        r(CONNTRACK[0].into(), ""),
        r(format!("{accepted} accept"), "allowed by untracked policy"),
        r(format!("iifname \"{prefix}*\" return"), ""),
        r("iifname \"lo\" return".into(), ""),
        r("jump hd-di".into(), "host endpoint preDNAT ingress"),
    ];
    table.chains.insert(
        "pre-dnat".into(),
        Chain::base(base("prerouting", -150), pre_dnat),
    );

    // Dispatch: failsafe ports first, then the endpoint of the interface (goto, so the
    // wildcard endpoint only sees interfaces without a named one).
    for mode in Mode::HOST {
        let (name, failsafe) = match mode {
            Mode::In => (
                "hd-i",
                failsafe_rules(&fs.failsafe_inbound, "d", "s", "", "accept"),
            ),
            Mode::Out => (
                "hd-e",
                failsafe_rules(&fs.failsafe_outbound, "d", "d", "", "accept"),
            ),
            Mode::ForwardIn => ("hd-fi", Vec::new()),
            Mode::ForwardOut => ("hd-fe", Vec::new()),
            Mode::PreDnat => (
                "hd-di",
                failsafe_rules(
                    &fs.failsafe_inbound,
                    "d",
                    "s",
                    "fib daddr type local ",
                    "return",
                ),
            ),
            Mode::UntrackedIn => {
                let mut v = failsafe_rules(&fs.failsafe_inbound, "d", "s", "", "return");
                v.extend(failsafe_rules(
                    &fs.failsafe_outbound,
                    "s",
                    "s",
                    "",
                    "return",
                ));
                ("hd-ui", v)
            }
            Mode::UntrackedOut => {
                let mut v = failsafe_rules(&fs.failsafe_outbound, "d", "d", "", "return");
                v.extend(failsafe_rules(&fs.failsafe_inbound, "s", "d", "", "return"));
                ("hd-ue", v)
            }
        };
        let ifname = mode.ifname();
        let map = format!("hm-{}", mode.suffix());
        let mut rules = failsafe;
        rules.push(r(format!("{ifname} \"{prefix}*\" return"), "workloads"));
        rules.push(r(format!("{ifname} vmap @{map}"), "named host endpoints"));
        if let Some(w) = hosts.wildcard.get(&mode) {
            rules.push(r(format!("goto {w}"), "wildcard host endpoint"));
        }
        table.chains.insert(name.into(), Chain::regular(rules));
        let entries = hosts
            .named
            .get(&mode)
            .into_iter()
            .flatten()
            .map(|(iface, chain)| format!("\"{iface}\" : goto {chain}"))
            .collect();
        table
            .sets
            .insert(map, Set::new("ifname", SetKind::Verdict, entries));
    }
}

/// One stage of an endpoint chain (a tier or a profile): jump to it, leave with `leave`
/// (`return`, `accept`, after clearing the bits for a workload) if it accepted, forget a Pass
/// before the next stage.
fn jump_stage(main: &mut Vec<Rule>, target: &str, note: String, leave: &str) {
    main.push(Rule::new(format!("jump {target}"), note));
    main.push(Rule::new(
        format!("meta mark & 0x{MARK_ACCEPT:08x} != 0 {leave}"),
        "",
    ));
    main.push(Rule::new(
        format!("meta mark set meta mark & 0x{:08x}", !MARK_PASS),
        "",
    ));
}

/// Whether a policy's or profile's rules can sit in a workload's stage chain: all but Pass,
/// which must leave the rest of its tier (or of its profile) and needs a chain of its own.
fn inlinable(rules: &[RuleProgram]) -> bool {
    !rules.iter().any(|r| r.action == Action::Pass)
}

/// A tier whose policies have no Pass rule is inlined in a workload's stage chain.
fn tier_inlinable(tier: &TierProgram) -> bool {
    tier.policies.iter().all(|p| inlinable(&p.rules))
}

/// What a workload's stage chain needs to hold its policies' and profiles' rules itself: the
/// set names and whether allowed flows are logged. Host endpoints' chains inline nothing.
struct Inline<'a> {
    names: &'a SetNames,
    log_allowed: bool,
    /// The digests of the policies' and profiles' rules, which keep their blocks.
    digests: &'a Digests,
}

/// The rules an inlined policy or profile puts in a stage chain, rendered once and kept in its
/// digest (by direction and owner) for every stage that holds it: a stage rendered again
/// because one of its policies changed copies the others' rules instead of rendering them
/// again, so its cost follows the change more than the stage's size.
struct Block {
    /// Which families of the rules' sets are empty, the verdict of an Allow and whether
    /// allowed flows are logged.
    key: String,
    rules: Vec<Rule>,
    origins: Vec<(String, (Owner, usize))>,
}

/// Puts the rules of an inlined policy or profile in `out` (and their origins): from its
/// block when that was rendered from the same rules in the same circumstances, else rendered
/// (and kept).
#[allow(clippy::too_many_arguments)]
fn inlined_rules(
    inl: &Inline,
    dir: &'static str,
    label: &str,
    tag_chain: &str,
    owner: Owner,
    rules: &[RuleProgram],
    on_accept: &str,
    out: &mut Vec<Rule>,
    origins: &mut HashMap<String, (Owner, usize)>,
) {
    // A stage's digests are all computed before it is rendered (its name needs them).
    let digest = inl.digests.digests.get(&(dir, owner.clone()));
    let key = digest.map(|d| {
        let mut key = format!("{on_accept}|{}|", inl.log_allowed);
        empty_families(&mut key, &d.sets, inl.names);
        key
    });
    if let (Some(d), Some(key)) = (digest, &key)
        && let Some(b) = d.block.borrow().as_ref().filter(|b| &b.key == key)
    {
        out.extend(b.rules.iter().cloned());
        origins.extend(b.origins.iter().cloned());
        return;
    }
    let (mut new, mut by_id) = (Vec::new(), HashMap::new());
    policy_rules(
        label,
        tag_chain,
        &owner,
        rules,
        inl.names,
        inl.log_allowed,
        on_accept,
        &mut new,
        &mut by_id,
    );
    out.extend(new.iter().cloned());
    origins.extend(by_id.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let (Some(d), Some(key)) = (digest, key) {
        *d.block.borrow_mut() = Some(Block {
            key,
            rules: new,
            origins: by_id.into_iter().collect(),
        });
    }
}

/// The rules of an endpoint chain, and the owner and policy rule index of each inlined
/// policy or profile rule (by rule id).
type Stage = (Vec<(String, Chain)>, HashMap<String, (Owner, usize)>);

/// One endpoint's chain for one direction, with its tier chains (named after it). What an
/// accepting stage does next is `on_accept`.
///
/// A workload's stage (`inline` given) holds the rules of every tier without a Pass rule
/// itself, in order: an Allow is the stage's verdict at once (`on_accept`), a Deny drops, a Log
/// logs and goes on, and the end of the tier drops (unless its default action is Pass); the
/// profiles without a Pass rule likewise. A tier or profile with a Pass rule keeps its chain:
/// a tier chain jumping to each policy's chain, which sets a mark bit on Allow or Pass and
/// returns; the stage then tests the accept bit. Only a stage that uses mark bits clears them
/// first, and a workload's clears them again before it leaves on an Allow, so that our bits
/// never leave the stage (a Pass is cleared after its tier; a drop needs nothing). Host
/// endpoints' chains are all of that second kind (entered through dispatch chains that have
/// cleared the bits); their accept bit is what the hooks after them test (untracked and
/// preDNAT policy), so it stays.
fn endpoint_chain(
    name: &str,
    ep: &EndpointProgram,
    chain: &ChainProgram,
    dir: &'static str,
    on_accept: &str,
    inline: Option<&Inline>,
) -> Stage {
    let mut origins = HashMap::new();
    if let Some(tier) = &chain.missing_tier {
        // Fail closed: the policies' place among the tiers is unknown.
        let log = log_rule("", &flowlog::tag(name));
        let drop = Rule::new("counter drop", format!("tier {tier} does not exist"));
        return (
            vec![(name.to_owned(), Chain::regular(vec![log, drop]))],
            origins,
        );
    }
    let inline_tier = |t: &TierProgram| inline.is_some() && tier_inlinable(t);
    let inline_profile = |rules: &[RuleProgram]| inline.is_some() && inlinable(rules);
    let profiles = chain.profiles.iter().map_while(|p| match p {
        ProfileProgram::Rules { rules, .. } => Some(rules),
        ProfileProgram::Missing { .. } => None,
    });
    let marks = chain.tiers.iter().any(|t| !inline_tier(t))
        || (chain.profiles_apply && profiles.into_iter().any(|r| !inline_profile(r)));
    let mut out = Vec::new();
    let mut main = Vec::new();
    if !ep.host && marks {
        main.push(Rule::new(clear_ours(), ""));
    }
    let leave = if ep.host {
        on_accept.to_owned()
    } else {
        format!("{} {on_accept}", clear_ours())
    };
    for (k, tier) in chain.tiers.iter().enumerate() {
        let tname = format!("{name}{k}");
        let end_drop = chain.end_of_tier && tier.default_action != Action::Pass;
        let end = |rules: &mut Vec<Rule>| {
            if end_drop {
                rules.push(log_rule("", &flowlog::tag(&tname)));
                rules.push(Rule::new(
                    "counter drop",
                    format!("end of tier {}", tier.tier),
                ));
            }
        };
        if let Some(inl) = inline
            && inline_tier(tier)
        {
            for p in &tier.policies {
                let owner = Owner::Policy {
                    tier: tier.tier.clone(),
                    policy: p.policy.clone(),
                };
                inlined_rules(
                    inl,
                    dir,
                    &p.policy.to_string(),
                    &policy_chain_name(&p.policy, dir),
                    owner,
                    &p.rules,
                    on_accept,
                    &mut main,
                    &mut origins,
                );
            }
            end(&mut main);
            continue;
        }
        let mut rules = Vec::new();
        for p in &tier.policies {
            let pname = policy_chain_name(&p.policy, dir);
            rules.push(Rule::new(format!("jump {pname}"), p.policy.to_string()));
            rules.push(Rule::new(
                format!("meta mark & 0x{MARK_OURS:08x} != 0 return"),
                "",
            ));
        }
        end(&mut rules);
        jump_stage(&mut main, &tname, format!("tier {}", tier.tier), &leave);
        out.push((tname, Chain::regular(rules)));
    }
    if chain.profiles_apply {
        for p in &chain.profiles {
            match p {
                ProfileProgram::Missing { profile } => {
                    main.push(log_rule("", &flowlog::tag(name)));
                    main.push(Rule::new(
                        "counter drop",
                        format!("profile {profile} does not exist"),
                    ));
                    break;
                }
                ProfileProgram::Rules { profile, rules } => {
                    if let Some(inl) = inline
                        && inline_profile(rules)
                    {
                        inlined_rules(
                            inl,
                            dir,
                            &format!("profile {profile}"),
                            &profile_chain_name(profile, dir),
                            Owner::Profile(profile.clone()),
                            rules,
                            on_accept,
                            &mut main,
                            &mut origins,
                        );
                        continue;
                    }
                    let target = profile_chain_name(profile, dir);
                    jump_stage(&mut main, &target, format!("profile {profile}"), &leave);
                }
            }
        }
        main.push(log_rule("", &flowlog::tag(name)));
        main.push(Rule::new(
            "counter drop",
            if ep.host {
                format!("no policy or profile allowed ({})", ep.endpoint)
            } else {
                "no policy or profile allowed".to_owned()
            },
        ));
    }
    out.push((name.to_owned(), Chain::regular(main)));
    (out, origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(all: &[&str], masq: &[&str]) -> NatPools {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        NatPools {
            all: nets(all),
            masq: nets(masq),
        }
    }

    fn with_pools(p: NatPools) -> Settings {
        Settings {
            pools: p,
            ..Settings::default()
        }
    }

    #[test]
    fn nat_outgoing_masquerades_from_masq_pools_to_outside_every_pool() {
        let p = pools(
            &["10.244.0.0/16", "10.9.0.0/24", "fd00:10::/64"],
            &["10.244.0.0/16", "fd00:10::/64"],
        );
        let t = render(&NodeProgram::default(), &with_pools(p)).table;
        let chain = &t.chains[NAT_CHAIN];
        assert_eq!(
            chain.base,
            Some(Base {
                kind: "nat".into(),
                hook: "postrouting".into(),
                priority: 100,
                policy: "accept".into(),
            })
        );
        let texts: Vec<&str> = chain.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "ip saddr @masq-pools4 ip daddr != @all-pools4 counter masquerade",
                "ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 counter masquerade",
            ]
        );
        let members = |n: &str| -> Vec<&str> {
            assert_eq!(t.sets[n].kind, SetKind::Interval, "{n}");
            t.sets[n].elements.iter().map(String::as_str).collect()
        };
        assert_eq!(members("all-pools4"), ["10.244.0.0/16", "10.9.0.0/24"]);
        assert_eq!(members("masq-pools4"), ["10.244.0.0/16"]);
        assert_eq!(members("all-pools6"), ["fd00:10::/64"]);
        assert_eq!(members("masq-pools6"), ["fd00:10::/64"]);
        assert_eq!(t.sets["all-pools6"].key, "ipv6_addr");
        let script = t.replace_script().text;
        assert!(
            script.contains(
                "add chain inet gingham nat-outgoing { type nat hook postrouting priority 100; policy accept; }"
            ),
            "{script}"
        );
    }

    fn with_tunnels(ipip: bool, vxlan: bool) -> Settings {
        let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect();
        Settings {
            tunnels: Tunnels {
                ipip,
                vxlan,
                hosts: nets(&["10.91.1.2/32", "10.91.2.2/32"]),
                vxlan_sources: nets(&["10.91.2.2/32"]),
                ..Tunnels::default()
            },
            ..Settings::default()
        }
    }

    fn texts(chain: &Chain) -> Vec<&str> {
        chain.rules.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn tunnels_are_accepted_only_from_nodes_and_outer_vxlan_is_untracked() {
        let t = render(&NodeProgram::default(), &with_tunnels(true, true)).table;
        assert_eq!(
            texts(&t.chains["input"])[..7],
            [
                "ip protocol 4 ip saddr @all-hosts4 accept",
                "ip protocol 4 counter drop",
                "udp dport 4789 ip saddr @all-vxlan4 accept",
                "meta nfproto ipv4 udp dport 4789 counter drop",
                CONNTRACK[0],
                CONNTRACK[1],
                "iifname \"cali*\" goto wl-to-host",
            ]
        );
        let members = |n: &str| -> Vec<&str> {
            assert_eq!(t.sets[n].kind, SetKind::Interval, "{n}");
            t.sets[n].elements.iter().map(String::as_str).collect()
        };
        assert_eq!(members("all-hosts4"), ["10.91.1.2/32", "10.91.2.2/32"]);
        assert_eq!(members("all-vxlan4"), ["10.91.2.2/32"]);
        assert!(!t.sets.contains_key("all-vxlan6"));
        let raw_in = &t.chains[RAW_TUNNEL_IN];
        assert_eq!(raw_in.base, Some(base("prerouting", -300)));
        assert_eq!(
            texts(raw_in),
            ["udp dport 4789 ip saddr @all-vxlan4 notrack"]
        );
        assert_eq!(t.chains[RAW_TUNNEL_OUT].base, Some(base("output", -300)));
        assert_eq!(
            texts(&t.chains[RAW_TUNNEL_OUT]),
            ["udp dport 4789 ip daddr @all-vxlan4 notrack"]
        );
        // Without host endpoints there is no output chain; the nft text is valid either way.
        assert!(!t.chains.contains_key("output"));
        let script = t.replace_script().text;
        assert!(script.contains("add chain inet gingham raw-tunnels-in { type filter hook prerouting priority -300; policy accept; }"), "{script}");
    }

    #[test]
    fn without_tunnels_there_are_no_tunnel_rules() {
        let t = render(&NodeProgram::default(), &with_tunnels(false, false)).table;
        assert_eq!(texts(&t.chains["input"])[..2], CONNTRACK);
        for n in ["all-hosts4", "all-vxlan4", "all-vxlan6"] {
            assert!(!t.sets.contains_key(n), "{n}");
        }
        assert!(!t.chains.contains_key(RAW_TUNNEL_IN));
        assert!(!t.chains.contains_key(RAW_TUNNEL_OUT));
    }

    #[test]
    fn without_a_nat_outgoing_pool_there_is_no_nat_chain() {
        let p = pools(&["10.244.0.0/16"], &[]);
        let t = render(&NodeProgram::default(), &with_pools(p)).table;
        assert!(!t.chains.contains_key(NAT_CHAIN));
        assert!(NAT_SETS.iter().all(|n| !t.sets.contains_key(*n)));
    }

    #[test]
    fn a_pool_change_touches_only_the_nat_sets_and_chain() {
        let mut r = Renderer::new(NodeProgram::default(), Settings::default());
        r.take_touched();
        r.set_settings(with_pools(pools(&["10.244.0.0/16"], &["10.244.0.0/16"])));
        let touched = r.take_touched();
        assert!(!touched.all);
        assert_eq!(
            touched.chains,
            BTreeSet::from([NAT_CHAIN.to_owned()]),
            "{touched:?}"
        );
        assert_eq!(touched.sets.len(), 4, "{touched:?}");
        // A second pool (say, disabled, without natOutgoing) changes only all-pools4.
        r.set_settings(with_pools(pools(
            &["10.244.0.0/16", "10.9.0.0/24"],
            &["10.244.0.0/16"],
        )));
        let touched = r.take_touched();
        assert!(touched.chains.is_empty(), "{touched:?}");
        assert_eq!(touched.sets, BTreeSet::from(["all-pools4".to_owned()]));
        assert_eq!(
            r.table(),
            &render(
                r.program(),
                &with_pools(pools(&["10.244.0.0/16", "10.9.0.0/24"], &["10.244.0.0/16"],))
            )
            .table
        );
        // natOutgoing turned off everywhere: the chain and sets go.
        r.set_settings(with_pools(pools(&["10.244.0.0/16"], &[])));
        let touched = r.take_touched();
        assert_eq!(touched.chains, BTreeSet::from([NAT_CHAIN.to_owned()]));
        assert!(!r.table().chains.contains_key(NAT_CHAIN));
    }

    /// A digest lives while a placed endpoint holds it: batches that place no endpoint keep
    /// every one (with its rendered block), however many there are; a policy taken out takes
    /// its digests with it at the next batch. Dropping them by age had dropped them all at once
    /// after 64 such batches (a 4 ms pause at 10,000 policies).
    #[test]
    fn digests_live_while_an_endpoint_holds_them() {
        use gingham_calc::incremental::{Calculator, Update};
        let yaml = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.web}\nspec:\n  ingress: [{action: Allow, protocol: TCP}]\n  egress: [{action: Allow}]\n---\n\
            apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db, namespace: web}\nspec:\n  selector: app == 'web'\n  ingress: [{action: Allow, protocol: TCP, source: {selector: role == 'db'}}]\n---\n\
            apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--a-k8s-pod0-eth0, namespace: web, labels: {app: web, role: db, projectcalico.org/namespace: web}}\nspec: {node: node-a, orchestrator: k8s, pod: pod0, endpoint: eth0, interfaceName: cali0000, ipNetworks: [10.0.0.1/32], profiles: [kns.web]}\n";
        let mut calc = Calculator::new("node-a");
        calc.load_all(gingham_model::load_resources("pods.yaml", yaml).unwrap());
        let mut r = Renderer::new(calc.state(), Settings::default());
        let policy_digests = |r: &Renderer| {
            r.digests
                .digests
                .keys()
                .filter(|(_, owner)| matches!(owner, Owner::Policy { .. }))
                .count()
        };
        assert_eq!(policy_digests(&r), 1, "the policy's ingress");
        let held = r.digests.digests.len();
        let set = r
            .program
            .sets
            .keys()
            .next()
            .expect("the selector's set")
            .clone();
        for _ in 0..200 {
            r.apply(&[Change::SetUpdated {
                id: set.clone(),
                added: IpSet::default(),
                removed: IpSet::default(),
            }]);
        }
        assert_eq!(r.digests.digests.len(), held, "kept while held");
        assert!(
            r.digests.digests.values().all(|d| d.users == 1),
            "one endpoint holds each"
        );

        let gone = calc.apply(Update::Delete {
            kind: gingham_model::Kind::NetworkPolicy,
            namespace: Some("web".into()),
            name: "db".into(),
        });
        r.apply(&gone);
        assert_eq!(policy_digests(&r), 1, "dropped when the next batch begins");
        // The next batch: the endpoint placed again as it is (not a full render, which
        // starts the digests afresh).
        let (key, ep) = r.program.endpoints.iter().next().unwrap();
        let again = Change::ProgramSet {
            endpoint: key.clone(),
            program: Box::new(ep.clone()),
        };
        r.apply(&[again]);
        assert_eq!(policy_digests(&r), 0, "the policy's digest went with it");
        assert_eq!(r.digests.digests.len(), held - 1);
        assert_eq!(
            r.table(),
            &render(&calc.state(), &Settings::default()).table
        );
    }
}
