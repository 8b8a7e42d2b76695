//! Rendering: a node's programs and IP sets as one nftables table, `inet gingham`.
//!
//! Layout (pure text; [`render`] does no I/O):
//! - `forward` (hook forward): established/related accepted first; then the egress chain of the
//!   workload the packet comes from, looked up in a verdict map keyed by interface; then the
//!   ingress chain of the workload it goes to, the same way. Each endpoint chain either drops
//!   or sets the *accept* mark bit and returns; a packet from or to a `cali*` interface that did
//!   not get the bit is dropped, so an endpoint whose program is not installed yet is closed.
//! - `input` (hook input): the egress chain of the sending workload, then felix's
//!   DefaultEndpointToHostAction for workload-to-host traffic.
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
    /// Felix's DefaultEndpointToHostAction: `Drop`, `Accept` or `Return`.
    pub endpoint_to_host: String,
    /// Interface name prefix of workloads.
    pub workload_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            endpoint_to_host: "Drop".into(),
            workload_prefix: "cali".into(),
        }
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
        for (dir, chain) in [("i", &ep.ingress), ("e", &ep.egress)] {
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
    for (key, ep) in &program.endpoints {
        if !ep.interface.starts_with(&settings.workload_prefix) {
            // Host endpoints are not rendered yet; their traffic is left alone.
            continue;
        }
        for (dir, chain) in [("i", &ep.ingress), ("e", &ep.egress)] {
            let name = format!("e{}{dir}", short_hash(key));
            endpoint_chain(&name, ep, chain, dir, &mut table);
            let entry = format!("\"{}\" : jump {name}", ep.interface);
            if dir == "i" {
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
    let prefix = &settings.workload_prefix;
    let clear = format!("meta mark set meta mark & 0x{:08x}", !MARK_OURS);
    let not_accepted = format!("meta mark & 0x{MARK_ACCEPT:08x} == 0");
    let r = |text: String, note: &str| Rule::new(text, note);
    let forward = vec![
        r("ct state established,related accept".into(), ""),
        r("ct state invalid drop".into(), ""),
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
    ];
    table
        .chains
        .insert("forward".into(), Chain::base(base("forward", 10), forward));
    let mut input = vec![
        r("ct state established,related accept".into(), ""),
        r("ct state invalid drop".into(), ""),
        r(clear.clone(), ""),
        r("iifname vmap @wl-egress".into(), "workload egress"),
        r(
            format!("iifname \"{prefix}*\" {not_accepted} counter drop"),
            "workload without a program",
        ),
    ];
    match settings.endpoint_to_host.as_str() {
        "Accept" => input.push(r(
            format!("iifname \"{prefix}*\" {clear} accept"),
            "DefaultEndpointToHostAction Accept",
        )),
        "Return" => {}
        _ => input.push(r(
            format!("iifname \"{prefix}*\" counter drop"),
            "DefaultEndpointToHostAction Drop",
        )),
    }
    input.push(r(clear, ""));
    table
        .chains
        .insert("input".into(), Chain::base(base("input", 10), input));
    Rendered {
        chains: table.chains.len(),
        sets: table.sets.len() - 2,
        set_members,
        table,
    }
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
        main.push(Rule::new(
            format!("jump {tname}"),
            format!("tier {}", tier.tier),
        ));
        main.push(Rule::new(
            format!("meta mark & 0x{MARK_ACCEPT:08x} != 0 return"),
            "",
        ));
        main.push(Rule::new(
            format!("meta mark set meta mark & 0x{:08x}", !MARK_PASS),
            "",
        ));
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
                    main.push(Rule::new(
                        format!("jump r{}{dir}", short_hash(profile)),
                        format!("profile {profile}"),
                    ));
                    main.push(Rule::new(
                        format!("meta mark & 0x{MARK_ACCEPT:08x} != 0 return"),
                        "",
                    ));
                    main.push(Rule::new(
                        format!("meta mark set meta mark & 0x{:08x}", !MARK_PASS),
                        "",
                    ));
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
