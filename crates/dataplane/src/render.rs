//! Rendering: a node's programs and IP sets as one nftables table, `inet gingham`.
//!
//! Layout (pure text; [`render`] does no I/O):
//! - `forward` (hook forward): established/related accepted first; then the egress chain of the
//!   workload the packet comes from, looked up in a verdict map keyed by interface; then the
//!   ingress chain of the workload it goes to, the same way. Each endpoint chain either drops
//!   or sets the *accept* mark bit and returns; a packet from or to a `cali*` interface that did
//!   not get the bit is dropped, so an endpoint whose program is not installed yet is closed.
//! - `input` (hook input): workload traffic goes (goto) to `wl-to-host`: the sending workload's
//!   egress chain, then felix's DefaultEndpointToHostAction (Return leaves our rules).
//! - Host endpoints (only on nodes that have one): normal policy at the end of `input` and in
//!   `output`, applyOnForward in `forward`, preDNAT in `pre-dnat` (prerouting, priority -150),
//!   doNotTrack in `raw-in`/`raw-out` (priority -300, `notrack` on Allow). Each goes through a
//!   dispatch chain `hd-*`: failsafe ports, then the interface's chain by verdict map `hm-*`
//!   (goto), then the wildcard endpoint's.
//! - Endpoint chains `e…` walk tiers (`t…` chains: one jump per policy, leaving the tier on
//!   Pass, dropping at its end unless its default action is Pass), then the profiles.
//! - Policy and profile chains (`p…`) are shared by every endpoint that uses them: a rule's
//!   Allow sets the accept bit and returns, Deny drops, Pass sets the pass bit and returns, Log
//!   logs with a prefix naming the policy and goes on. Every rule has a counter.
//! - Selector IP sets are interval sets per family (`s4…`, `s6…`); named ports are sets of
//!   address . protocol . port (`n4…`, `n6…`).

use std::collections::{BTreeMap, BTreeSet};

use gingham_calc::program::{
    ChainProgram, EndpointProgram, NodeProgram, ProfileProgram, RuleProgram, SideProgram,
};
use gingham_calc::snapshot::{Failsafe, FelixSettings};
use gingham_model::Action;
use ipnet::IpNet;

use crate::table::{Base, Chain, Rule, Set, SetKind, Table, short_hash};

/// The table Gingham owns; nothing else is ever touched.
pub const TABLE: &str = "gingham";
/// Mark bits: a stage allowed the packet / a policy passed it to the next tier.
pub const MARK_ACCEPT: u32 = 0x0001_0000;
pub const MARK_PASS: u32 = 0x0002_0000;
const MARK_OURS: u32 = MARK_ACCEPT | MARK_PASS;

/// Node-wide settings the table needs besides the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Felix's settings: failsafe ports, DefaultEndpointToHostAction (`Drop`, `Accept`,
    /// `Return`).
    pub felix: FelixSettings,
    /// Interface name prefix of workloads.
    pub workload_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            felix: FelixSettings::default(),
            workload_prefix: "cali".into(),
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
    for family in rule_families(r) {
        let mut base = Vec::new();
        match family {
            Family::V4 => base.push("meta nfproto ipv4".to_owned()),
            Family::V6 => base.push("meta nfproto ipv6".to_owned()),
        }
        if let Some(p) = r.protocol {
            base.push(format!("meta l4proto {p}"));
        }
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
            for id in &s.port_sets {
                alts.push(format!(
                    "{} {dir}addr . meta l4proto . th {dir}port @{}",
                    family.ip(),
                    names.get(id, family)
                ));
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

fn action_text(a: Action) -> &'static str {
    match a {
        Action::Allow => "meta mark set meta mark | 0x00010000 return",
        Action::Deny => "drop",
        Action::Pass => "meta mark set meta mark | 0x00020000 return",
        // Log goes on to the next rule.
        Action::Log => "",
    }
}

/// The rules of one policy or profile for one direction.
fn rules_chain(label: &str, rules: &[RuleProgram], names: &SetNames) -> Chain {
    let mut out = Vec::new();
    for r in rules {
        let prefix = if r.action == Action::Log {
            // nft log prefixes are at most 127 characters.
            let mut p = format!("gingham {label} rule {}: ", r.index);
            p.truncate(120);
            p
        } else {
            String::new()
        };
        for line in rule_lines(r, action_text(r.action), &prefix, names) {
            out.push(Rule::new(line, format!("{label} rule {}", r.index)));
        }
    }
    Chain::regular(out)
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
/// kind is a new set and the rules using it are rewritten.
struct SetNames(BTreeMap<(String, u8), String>);

impl SetNames {
    fn get(&self, id: &str, family: Family) -> String {
        self.0
            .get(&(id.to_owned(), family as u8))
            .cloned()
            .unwrap_or_else(|| format!("missing-set-{}", short_hash(id)))
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

/// Renders a node's programs as the desired table (pure).
pub fn render(program: &NodeProgram, settings: &Settings) -> Rendered {
    let mut table = Table::default();
    let mut set_members = 0usize;
    let mut names = SetNames(BTreeMap::new());
    for (id, set) in &program.sets {
        for family in [Family::V4, Family::V6] {
            let (letter, key, kind, members): (&str, String, SetKind, BTreeSet<String>) =
                if id.starts_with("n:") {
                    let members = set
                        .ports
                        .iter()
                        .filter(|(n, _, _)| Family::of(n) == family)
                        .map(|(n, proto, port)| format!("{} . {proto} . {port}", n.addr()))
                        .collect();
                    (
                        "n",
                        format!("{} . inet_proto . inet_service", family.addr_type()),
                        SetKind::Plain,
                        members,
                    )
                } else {
                    let nets: Vec<&IpNet> = set
                        .nets
                        .iter()
                        .filter(|n| Family::of(n) == family)
                        .collect();
                    if nets.iter().all(|n| n.prefix_len() == n.max_prefix_len()) {
                        let members = nets.iter().map(|n| n.addr().to_string()).collect();
                        ("h", family.addr_type().to_owned(), SetKind::Plain, members)
                    } else {
                        let members = nets.iter().map(ToString::to_string).collect();
                        (
                            "s",
                            family.addr_type().to_owned(),
                            SetKind::Interval,
                            members,
                        )
                    }
                };
            let name = format!("{letter}{}{}", family.tag(), short_hash(id));
            set_members += members.len();
            names.0.insert((id.clone(), family as u8), name.clone());
            table.sets.insert(name, Set::new(key, kind, members));
        }
    }
    // Shared policy and profile chains.
    for ep in program.endpoints.values() {
        for (mode, chain) in Mode::of(ep) {
            let dir = mode.dir();
            for t in &chain.tiers {
                for p in &t.policies {
                    let name = format!("p{}{dir}", short_hash(&format!("{:?}", p.policy)));
                    table
                        .chains
                        .entry(name)
                        .or_insert_with(|| rules_chain(&p.policy.to_string(), &p.rules, &names));
                }
            }
            for p in &chain.profiles {
                if let ProfileProgram::Rules { profile, rules } = p {
                    let name = format!("r{}{dir}", short_hash(profile));
                    table.chains.entry(name).or_insert_with(|| {
                        rules_chain(&format!("profile {profile}"), rules, &names)
                    });
                }
            }
        }
    }
    // Endpoint chains and the dispatch maps.
    let mut egress_map = BTreeSet::new();
    let mut ingress_map = BTreeSet::new();
    let mut hosts = HostDispatch::default();
    for (key, ep) in &program.endpoints {
        if ep.host {
            for (mode, chain) in Mode::of(ep) {
                let always_continues = !matches!(mode, Mode::In | Mode::Out)
                    && chain.tiers.is_empty()
                    && chain.missing_tier.is_none();
                if always_continues {
                    continue;
                }
                let name = format!("e{}{}", short_hash(key), mode.suffix());
                endpoint_chain(&name, ep, chain, mode.dir(), &mut table);
                hosts.add(mode, &ep.interface, name);
            }
            hosts.any = true;
            continue;
        }
        for (mode, chain) in Mode::of(ep) {
            let name = format!("e{}{}", short_hash(key), mode.suffix());
            endpoint_chain(&name, ep, chain, mode.dir(), &mut table);
            let entry = format!("\"{}\" : jump {name}", ep.interface);
            if mode == Mode::In {
                ingress_map.insert(entry);
            } else {
                egress_map.insert(entry);
            }
        }
    }
    table.sets.insert(
        "wl-egress".into(),
        Set::new("ifname", SetKind::Verdict, egress_map),
    );
    table.sets.insert(
        "wl-ingress".into(),
        Set::new("ifname", SetKind::Verdict, ingress_map),
    );
    let maps = 2 + if hosts.any { Mode::HOST.len() } else { 0 };
    base_chains(&mut table, settings, &hosts);
    Rendered {
        chains: table.chains.len(),
        sets: table.sets.len() - maps,
        set_members,
        table,
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

/// The base chains (hooks) and the host endpoint dispatch chains.
fn base_chains(table: &mut Table, settings: &Settings, hosts: &HostDispatch) {
    let prefix = &settings.workload_prefix;
    let clear = format!("meta mark set meta mark & 0x{:08x}", !MARK_OURS);
    let not_accepted = format!("meta mark & 0x{MARK_ACCEPT:08x} == 0");
    let accepted = format!("meta mark & 0x{MARK_ACCEPT:08x} != 0");
    let r = |text: String, note: &str| Rule::new(text, note);
    let mut forward = vec![
        r("ct state established,related accept".into(), ""),
        r("ct state invalid drop".into(), ""),
    ];
    if hosts.any {
        // Forwarded traffic arriving by a host endpoint, unless its preDNAT policy allowed it.
        forward.push(r(
            format!("{not_accepted} jump hd-fi"),
            "host endpoint forward ingress",
        ));
    }
    forward.extend([
        r(clear.clone(), ""),
        r("iifname vmap @wl-egress".into(), "workload egress"),
        r(
            format!("iifname \"{prefix}*\" {not_accepted} counter drop"),
            "workload without a program",
        ),
        r(clear.clone(), ""),
        r("oifname vmap @wl-ingress".into(), "workload ingress"),
        r(
            format!("oifname \"{prefix}*\" {not_accepted} counter drop"),
            "workload without a program",
        ),
        r(clear.clone(), ""),
    ]);
    if hosts.any {
        forward.push(r("jump hd-fe".into(), "host endpoint forward egress"));
        forward.push(r(clear.clone(), ""));
    }
    table
        .chains
        .insert("forward".into(), Chain::base(base("forward", 10), forward));

    // Workload to its own host: the workload's egress, then DefaultEndpointToHostAction.
    // Reached by goto, so Return leaves our input chain (the host's own firewall decides).
    let mut to_host = vec![
        r(clear.clone(), ""),
        r("iifname vmap @wl-egress".into(), "workload egress"),
        r(
            format!("{not_accepted} counter drop"),
            "workload without a program",
        ),
    ];
    match settings.felix.default_endpoint_to_host_action.as_str() {
        "Accept" => to_host.push(r(
            format!("{clear} accept"),
            "DefaultEndpointToHostAction Accept",
        )),
        "Return" => to_host.push(r(
            format!("{clear} return"),
            "DefaultEndpointToHostAction Return",
        )),
        _ => to_host.push(r("counter drop".into(), "DefaultEndpointToHostAction Drop")),
    }
    table
        .chains
        .insert("wl-to-host".into(), Chain::regular(to_host));
    let mut input = vec![
        r("ct state established,related accept".into(), ""),
        r("ct state invalid drop".into(), ""),
        r(
            format!("iifname \"{prefix}*\" goto wl-to-host"),
            "workload to host",
        ),
    ];
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
    let output = vec![
        r("ct state established,related accept".into(), ""),
        r(format!("{accepted} accept"), "allowed by untracked policy"),
        r(
            format!("oifname \"{prefix}*\" accept"),
            "the host to its own workloads",
        ),
        r("oifname \"lo\" accept".into(), "the host to itself"),
        r(clear.clone(), ""),
        r("jump hd-e".into(), "host endpoint egress"),
    ];
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
        r("ct state established,related accept".into(), ""),
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

/// One stage of an endpoint chain (a tier or a profile): jump to it, return if it accepted,
/// forget a Pass before the next stage.
fn jump_stage(main: &mut Vec<Rule>, target: &str, note: String) {
    main.push(Rule::new(format!("jump {target}"), note));
    main.push(Rule::new(
        format!("meta mark & 0x{MARK_ACCEPT:08x} != 0 return"),
        "",
    ));
    main.push(Rule::new(
        format!("meta mark set meta mark & 0x{:08x}", !MARK_PASS),
        "",
    ));
}

/// One endpoint's chain for one direction, with its tier chains.
fn endpoint_chain(
    name: &str,
    ep: &EndpointProgram,
    chain: &ChainProgram,
    dir: &str,
    table: &mut Table,
) {
    if let Some(tier) = &chain.missing_tier {
        // Fail closed: the policies' place among the tiers is unknown.
        let drop = Rule::new("counter drop", format!("tier {tier} does not exist"));
        table
            .chains
            .insert(name.to_owned(), Chain::regular(vec![drop]));
        return;
    }
    let mut main = Vec::new();
    for (k, tier) in chain.tiers.iter().enumerate() {
        let tname = format!("{name}{k}");
        let mut rules = Vec::new();
        for p in &tier.policies {
            let pname = format!("p{}{dir}", short_hash(&format!("{:?}", p.policy)));
            rules.push(Rule::new(format!("jump {pname}"), p.policy.to_string()));
            rules.push(Rule::new(
                format!("meta mark & 0x{MARK_OURS:08x} != 0 return"),
                "",
            ));
        }
        if chain.end_of_tier && tier.default_action != Action::Pass {
            rules.push(Rule::new(
                "counter drop",
                format!("end of tier {}", tier.tier),
            ));
        }
        table.chains.insert(tname.clone(), Chain::regular(rules));
        jump_stage(&mut main, &tname, format!("tier {}", tier.tier));
    }
    if chain.profiles_apply {
        for p in &chain.profiles {
            match p {
                ProfileProgram::Missing { profile } => {
                    main.push(Rule::new(
                        "counter drop",
                        format!("profile {profile} does not exist"),
                    ));
                    break;
                }
                ProfileProgram::Rules { profile, .. } => {
                    let target = format!("r{}{dir}", short_hash(profile));
                    jump_stage(&mut main, &target, format!("profile {profile}"));
                }
            }
        }
        main.push(Rule::new(
            "counter drop",
            format!("no policy or profile allowed ({})", ep.endpoint),
        ));
    }
    table.chains.insert(name.to_owned(), Chain::regular(main));
}
