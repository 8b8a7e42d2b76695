//! A Calico-style iptables rendering of the same programs the nft [`Renderer`](crate::Renderer)
//! renders: the peer every per-packet and programming figure is compared with, and the start of
//! an iptables backend.
//!
//! The layout is felix's (IPv4 filter table, workload endpoints):
//! - hooks: `FORWARD` jumps to `cali-FORWARD` first and, at its end, accepts what policy
//!   accepted (the accept mark) and marks the rest; `INPUT` jumps to `cali-INPUT`.
//! - `cali-FORWARD` clears the scratch marks, sends traffic from a workload interface to
//!   `cali-from-wl-dispatch` and traffic to one to `cali-to-wl-dispatch`, then the (empty)
//!   host endpoint forward dispatch and CIDR block chains.
//! - The dispatch chains go (`-g`) to the endpoint's chain by interface name, in felix's shallow
//!   tree: interfaces sharing the next character after the common prefix get a child chain
//!   `cali-from-wl-dispatch-<char>`; an unknown interface is dropped.
//! - `cali-fw-<iface>` (from the workload: egress) and `cali-tw-<iface>` (to it: ingress) start
//!   with conntrack (`RELATED,ESTABLISHED` accepted, `INVALID` dropped), clear the accept and
//!   pass marks, then walk the tiers (`cali-pi-*` / `cali-po-*` per policy, returning when one
//!   set the accept mark, dropping at the tier's end unless a policy passed) and the profiles
//!   (`cali-pri-*` / `cali-pro-*`), and drop when nothing accepted. Egress chains first drop
//!   VXLAN and IPIP packets from the workload, as felix does by default.
//! - Policy rules: Allow sets the accept mark and returns, Pass sets the pass mark and returns,
//!   Deny drops, Log logs. Selectors and named ports are ipsets (`cali40s:<hash>`, hash:net;
//!   `cali40n:<hash>`, hash:ip,port) matched with `-m set --match-set`. A rule iptables cannot
//!   express in one line (several CIDRs, more than 15 ports, port alternatives) becomes one line
//!   per alternative. Every rule carries a `cali:<hash>` comment, as felix's do.
//!
//! Not rendered (yet): host endpoints, IPv6 (an `ip6tables` table), `cali-OUTPUT`.
//!
//! [`IptRenderer`] keeps the desired [`IptTable`] up to date from the calculator's changes and
//! says which chains and sets they touched; [`IptProgrammer`] applies the difference as felix
//! does: `ipset restore` for new sets and members, one `iptables-restore --noflush` with only the
//! changed chains, then `ipset restore` destroying sets nothing references any more.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

use gingham_calc::incremental::{Change, apply_changes};
use gingham_calc::program::{
    ChainProgram, IpSet, NodeProgram, ProfileProgram, RuleProgram, SideProgram,
};
use gingham_calc::snapshot::PolicyKind;
use gingham_model::Action;
use ipnet::{IpNet, Ipv4Net};
use sha2::{Digest, Sha256};

use crate::Applied;
use crate::render::{MARK_ACCEPT, MARK_PASS, Settings, Touched};

/// felix's scratch marks (match blocks); cleared with the others on entry.
const MARK_SCRATCH0: u32 = 0x0004_0000;
const MARK_SCRATCH1: u32 = 0x0008_0000;
const MARK_ALL: u32 = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH0 | MARK_SCRATCH1;

/// iptables' limit on chain names.
pub const MAX_CHAIN_NAME: usize = 28;
/// ipset's limit on set names.
const MAX_SET_NAME: usize = 31;
/// `multiport` takes at most 15 ports (a range counts twice).
const MULTIPORT_MAX: usize = 15;

pub const CHAIN_FORWARD: &str = "cali-FORWARD";
pub const CHAIN_INPUT: &str = "cali-INPUT";
pub const CHAIN_FROM_WL_DISPATCH: &str = "cali-from-wl-dispatch";
pub const CHAIN_TO_WL_DISPATCH: &str = "cali-to-wl-dispatch";
const CHAIN_WL_TO_HOST: &str = "cali-wl-to-host";
const CHAIN_FROM_HEP_FORWARD: &str = "cali-from-hep-forward";
const CHAIN_TO_HEP_FORWARD: &str = "cali-to-hep-forward";
const CHAIN_FROM_HOST_ENDPOINT: &str = "cali-from-host-endpoint";
const CHAIN_CIDR_BLOCK: &str = "cali-cidr-block";
/// Prefixes of felix's chains: to and from workloads, policy in and out, profile in and out.
pub const PREFIX_TO_WL: &str = "cali-tw-";
pub const PREFIX_FROM_WL: &str = "cali-fw-";
pub const PREFIX_POLICY_IN: &str = "cali-pi-";
pub const PREFIX_POLICY_OUT: &str = "cali-po-";
pub const PREFIX_PROFILE_IN: &str = "cali-pri-";
pub const PREFIX_PROFILE_OUT: &str = "cali-pro-";
/// Every chain and set this rendering owns starts with these.
const CHAIN_OWNED: &str = "cali-";
const SET_OWNED: &str = "cali4";
/// felix's main IPv4 ipset prefix, then `s:` (selector) or `n:` (named port).
const SET_PREFIX: &str = "cali40";
const VXLAN_PORT: u16 = crate::render::VXLAN_PORT;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {tool}: {source} (install iptables and ipset)")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} refused the input: {message}")]
    Refused { tool: String, message: String },
}

/// Which iptables: the nf_tables one (`iptables-nft-restore`, Calico's choice on current
/// distributions) or the legacy x_tables one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Nft,
    Legacy,
}

impl Flavour {
    pub fn restore_tool(self) -> &'static str {
        match self {
            Flavour::Nft => "iptables-nft-restore",
            Flavour::Legacy => "iptables-legacy-restore",
        }
    }

    pub fn save_tool(self) -> &'static str {
        match self {
            Flavour::Nft => "iptables-nft-save",
            Flavour::Legacy => "iptables-legacy-save",
        }
    }
}

/// One ipset: its type and members, as `ipset restore` spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipset {
    /// `hash:net` or `hash:ip,port`.
    pub kind: &'static str,
    pub members: BTreeSet<String>,
}

/// The desired state in iptables terms: the filter table's `cali-*` chains (each rule as the
/// text after `-A <chain>`) and the ipsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IptTable {
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, Ipset>,
}

impl IptTable {
    /// The whole table as `iptables-restore --noflush` input (no hooks).
    pub fn restore_text(&self) -> String {
        let changes: Vec<(&str, Option<&Vec<String>>)> = self
            .chains
            .iter()
            .map(|(n, r)| (n.as_str(), Some(r)))
            .collect();
        restore_input(&changes, &[])
    }

    /// The whole table's ipsets as `ipset restore` input.
    pub fn ipset_text(&self) -> String {
        let mut out = String::new();
        for (name, set) in &self.sets {
            create_set(&mut out, name, set);
        }
        out
    }

    /// Rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

fn create_set(out: &mut String, name: &str, set: &Ipset) {
    out.push_str(&format!(
        "create {name} {} family inet maxelem 1048576\nflush {name}\n",
        set.kind
    ));
    for m in &set.members {
        out.push_str(&format!("add {name} {m}\n"));
    }
}

/// `iptables-restore --noflush` input rewriting the given chains (`None`: delete it) and adding
/// the given hook rules (`-I`/`-A` lines). Declaring a chain flushes it; deletions come last, so
/// the chains that jumped to them have been rewritten first.
fn restore_input(chains: &[(&str, Option<&Vec<String>>)], hooks: &[String]) -> String {
    let mut out = String::from("*filter\n");
    for (name, _) in chains {
        out.push_str(&format!(":{name} - [0:0]\n"));
    }
    for (name, rules) in chains {
        for r in rules.iter().copied().flatten() {
            out.push_str(&format!("-A {name} {r}\n"));
        }
    }
    for (name, rules) in chains {
        if rules.is_none() {
            out.push_str(&format!("-X {name}\n"));
        }
    }
    for h in hooks {
        out.push_str(h);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// felix's length-limited names: `prefix + suffix` when it fits, else the prefix, `_` and a hash
/// of the suffix.
fn limited(prefix: &str, suffix: &str, max: usize) -> String {
    let fits = prefix.len() + suffix.len() <= max
        && !(prefix.len() + suffix.len() == max && suffix.starts_with('_'));
    if fits {
        return format!("{prefix}{suffix}");
    }
    let hash = hex::encode(Sha256::digest(suffix.as_bytes()));
    let keep = max.saturating_sub(prefix.len() + 1);
    format!("{prefix}_{}", &hash[..keep.min(hash.len())])
}

/// A rule with felix's `cali:<hash>` comment (the hash of its chain, position and text).
fn commented(chain: &str, index: usize, spec: &str) -> String {
    let h = hex::encode(&Sha256::digest(format!("{chain}\n{index}\n{spec}").as_bytes())[..8]);
    format!("-m comment --comment \"cali:{h}\" {spec}")
}

fn with_comments(chain: &str, specs: Vec<String>) -> Vec<String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| commented(chain, i, s))
        .collect()
}

fn set_xmark(bits: u32, mask: u32) -> String {
    format!("-j MARK --set-xmark 0x{bits:x}/0x{mask:x}")
}

fn mark_set(bit: u32) -> String {
    format!("-m mark --mark 0x{bit:x}/0x{bit:x}")
}

fn mark_clear(bit: u32) -> String {
    format!("-m mark --mark 0x0/0x{bit:x}")
}

/// The felix policy id in a chain name: `<kind>/<namespace>/<name>` or `<kind>/<name>`.
fn policy_id(p: &gingham_calc::snapshot::PolicyRef) -> String {
    let kind = match p.kind {
        PolicyKind::NetworkPolicy => "np",
        PolicyKind::GlobalNetworkPolicy => "gnp",
        PolicyKind::StagedNetworkPolicy => "snp",
        PolicyKind::StagedGlobalNetworkPolicy => "sgnp",
        PolicyKind::KubernetesNetworkPolicy => "knp",
        PolicyKind::StagedKubernetesNetworkPolicy => "sknp",
    };
    match &p.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", p.name),
        None => format!("{kind}/{}", p.name),
    }
}

/// A policy's chain for one direction: `cali-pi-<id>` (ingress) or `cali-po-<id>`.
pub fn policy_chain(p: &gingham_calc::snapshot::PolicyRef, ingress: bool) -> String {
    let prefix = if ingress {
        PREFIX_POLICY_IN
    } else {
        PREFIX_POLICY_OUT
    };
    limited(prefix, &policy_id(p), MAX_CHAIN_NAME)
}

/// A profile's chain for one direction: `cali-pri-<name>` (ingress) or `cali-pro-<name>`.
pub fn profile_chain(profile: &str, ingress: bool) -> String {
    let prefix = if ingress {
        PREFIX_PROFILE_IN
    } else {
        PREFIX_PROFILE_OUT
    };
    limited(prefix, profile, MAX_CHAIN_NAME)
}

/// A workload's chain: `cali-tw-<iface>` (to it: ingress) or `cali-fw-<iface>` (from it).
pub fn endpoint_chain(interface: &str, ingress: bool) -> String {
    let prefix = if ingress {
        PREFIX_TO_WL
    } else {
        PREFIX_FROM_WL
    };
    limited(prefix, interface, MAX_CHAIN_NAME)
}

/// The ipset of a program's set id: `cali40s:<hash>` (selectors, hash:net) or `cali40n:<hash>`
/// (named ports, hash:ip,port).
pub fn set_name(id: &str) -> String {
    let letter = if id.starts_with("n:") { "n" } else { "s" };
    let prefix = format!("{SET_PREFIX}{letter}:");
    let hash = hex::encode(Sha256::digest(id.as_bytes()));
    let keep = MAX_SET_NAME - prefix.len();
    format!("{prefix}{}", &hash[..keep])
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

fn v4(n: &IpNet) -> Option<Ipv4Net> {
    match n {
        IpNet::V4(n) => Some(*n),
        IpNet::V6(_) => None,
    }
}

/// An IPv4 net as hash:net members (which cannot hold /0).
fn net_members(n: &Ipv4Net) -> Vec<String> {
    if n.prefix_len() == 0 {
        vec!["0.0.0.0/1".into(), "128.0.0.0/1".into()]
    } else {
        vec![n.trunc().to_string()]
    }
}

fn set_members(id: &str, set: &IpSet) -> BTreeSet<String> {
    if id.starts_with("n:") {
        set.ports
            .iter()
            .filter(|(n, p, _)| v4(n).is_some() && matches!(p, 6 | 17 | 132 | 136))
            .map(|(n, p, port)| format!("{},{}:{port}", n.addr(), proto_name(*p)))
            .collect()
    } else {
        set.nets
            .iter()
            .filter_map(v4)
            .flat_map(|n| net_members(&n))
            .collect()
    }
}

fn render_set(id: &str, set: &IpSet) -> Ipset {
    Ipset {
        kind: if id.starts_with("n:") {
            "hash:ip,port"
        } else {
            "hash:net"
        },
        members: set_members(id, set),
    }
}

/// `multiport` lists of at most 15 ports each.
fn multiport_lists(ranges: &[(u16, u16)]) -> Vec<String> {
    let mut lists = Vec::new();
    let (mut cur, mut used) = (Vec::new(), 0);
    for (a, b) in ranges {
        let (text, cost) = if a == b {
            (a.to_string(), 1)
        } else {
            (format!("{a}:{b}"), 2)
        };
        if used + cost > MULTIPORT_MAX {
            lists.push(cur.join(","));
            cur.clear();
            used = 0;
        }
        cur.push(text);
        used += cost;
    }
    if !cur.is_empty() {
        lists.push(cur.join(","));
    }
    lists
}

/// The matches of one side that every alternative has (`None`: the side never matches IPv4),
/// and the side's alternatives (positive CIDRs; ports or named-port sets).
struct SideMatch {
    common: Vec<String>,
    nets: Vec<String>,
    ports: Vec<String>,
}

fn side_match(s: &SideProgram, src: bool) -> Option<SideMatch> {
    if s.never {
        return None;
    }
    let (flag, range, dir, ports) = if src {
        ("-s", "--src-range", "src", "--sports")
    } else {
        ("-d", "--dst-range", "dst", "--dports")
    };
    let mut nets = Vec::new();
    if !s.nets.is_empty() {
        nets = s
            .nets
            .iter()
            .filter_map(v4)
            .map(|n| format!("{flag} {}", n.trunc()))
            .collect();
        if nets.is_empty() {
            return None;
        }
    }
    let mut common = Vec::new();
    for n in s.not_nets.iter().filter_map(v4) {
        let n = n.trunc();
        common.push(format!(
            "-m iprange ! {range} {}-{}",
            n.network(),
            n.broadcast()
        ));
    }
    if let Some(id) = &s.set {
        common.push(format!("-m set --match-set {} {dir}", set_name(id)));
    }
    if let Some(id) = &s.not_set {
        common.push(format!("-m set ! --match-set {} {dir}", set_name(id)));
    }
    for list in multiport_lists(&s.not_ports) {
        common.push(format!("-m multiport ! {ports} {list}"));
    }
    for id in &s.not_port_sets {
        common.push(format!("-m set ! --match-set {} {dir},{dir}", set_name(id)));
    }
    let mut alts: Vec<String> = multiport_lists(&s.ports)
        .into_iter()
        .map(|l| format!("-m multiport {ports} {l}"))
        .collect();
    alts.extend(
        s.port_sets
            .iter()
            .map(|id| format!("-m set --match-set {} {dir},{dir}", set_name(id))),
    );
    Some(SideMatch {
        common,
        nets,
        ports: alts,
    })
}

/// Every combination of one element of each non-empty list.
fn combinations(lists: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for l in lists.iter().filter(|l| !l.is_empty()) {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                l.iter().map(move |x| {
                    let mut v = prefix.clone();
                    v.push(x.clone());
                    v
                })
            })
            .collect();
    }
    out
}

/// One rule's IPv4 matches as iptables match strings, one per alternative (empty: the rule never
/// matches IPv4 traffic).
fn rule_matches(r: &RuleProgram) -> Vec<String> {
    if r.ip_version == Some(6) || r.protocol == Some(58) {
        return Vec::new();
    }
    let (Some(src), Some(dst)) = (
        side_match(&r.source, true),
        side_match(&r.destination, false),
    ) else {
        return Vec::new();
    };
    let needs_ports = [&src.ports, &dst.ports].iter().any(|p| !p.is_empty())
        || !r.source.not_ports.is_empty()
        || !r.destination.not_ports.is_empty();
    // The protocol comes first (multiport needs it); ports without one mean TCP, UDP or SCTP.
    let mut protocols: Vec<Vec<String>> = Vec::new();
    match (r.protocol, r.not_protocol) {
        (Some(p), Some(n)) if p == n => return Vec::new(),
        (Some(p), _) => protocols.push(vec![format!("-p {}", proto_name(p))]),
        (None, Some(n)) if !needs_ports && r.icmp.is_none() => {
            protocols.push(vec![format!("! -p {}", proto_name(n))]);
        }
        (None, n) => {
            if r.icmp.is_some() {
                protocols.push(vec!["-p icmp".into()]);
            } else if needs_ports {
                let all = [6u8, 17, 132]
                    .into_iter()
                    .filter(|p| Some(*p) != n)
                    .map(|p| format!("-p {}", proto_name(p)))
                    .collect();
                protocols.push(all);
            }
        }
    }
    let mut common = Vec::new();
    if let Some((t, c)) = r.icmp {
        if r.protocol.is_some_and(|p| p != 1) {
            return Vec::new();
        }
        match (t, c) {
            (Some(t), Some(c)) => common.push(format!("-m icmp --icmp-type {t}/{c}")),
            (Some(t), None) => common.push(format!("-m icmp --icmp-type {t}")),
            _ => {}
        }
    }
    let mut not_icmp = Vec::new();
    if let Some((Some(t), c)) = r.not_icmp {
        let protocol_is =
            |p: u8| r.protocol == Some(p) || (r.protocol.is_none() && r.icmp.is_some() && p == 1);
        if protocol_is(1) {
            common.push(match c {
                Some(c) => format!("-m icmp ! --icmp-type {t}/{c}"),
                None => format!("-m icmp ! --icmp-type {t}"),
            });
        } else if r.protocol.is_none() {
            // Not ICMP at all, or ICMP of another type (and code).
            let mut alts = vec!["! -p icmp".to_owned()];
            alts.push(match c {
                Some(c) => format!("-p icmp -m icmp ! --icmp-type {t}/{c}"),
                None => format!("-p icmp -m icmp ! --icmp-type {t}"),
            });
            not_icmp = alts;
        }
    }
    let protocols: Vec<String> = protocols.into_iter().flatten().collect();
    if !protocols.is_empty() && !not_icmp.is_empty() {
        if r.not_protocol.is_some_and(|n| n != 1) && !needs_ports {
            // "Not protocol N and not ICMP type T" needs two `-p` in one line.
            tracing::warn!(
                rule = r.index,
                "notProtocol with notICMP: not rendered for iptables"
            );
            return Vec::new();
        }
        // The protocols listed are not ICMP: the notICMP match holds.
        not_icmp.clear();
    }
    common.extend(src.common);
    common.extend(dst.common);
    let lists = [
        protocols, not_icmp, src.nets, dst.nets, src.ports, dst.ports,
    ];
    // The protocol alternatives come first on each line; then the fixed matches.
    combinations(&lists[..4])
        .into_iter()
        .flat_map(|head| {
            let common = common.clone();
            combinations(&lists[4..]).into_iter().map(move |ports| {
                let mut parts = head.clone();
                // Nets before sets and ports; the protocol (first) before multiport.
                parts.extend(common.iter().cloned());
                parts.extend(ports);
                parts.join(" ")
            })
        })
        .collect()
}

/// The rules of one policy or profile chain.
fn rules_chain(rules: &[RuleProgram], label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        let alts = rule_matches(r);
        if alts.is_empty() {
            continue;
        }
        let m = |a: &str| {
            if a.is_empty() {
                String::new()
            } else {
                format!("{a} ")
            }
        };
        match r.action {
            Action::Allow | Action::Pass => {
                let bit = if r.action == Action::Allow {
                    MARK_ACCEPT
                } else {
                    MARK_PASS
                };
                for a in &alts {
                    out.push(format!("{}{}", m(a), set_xmark(bit, bit)));
                }
                out.push(format!("{} -j RETURN", mark_set(bit)));
            }
            Action::Deny => {
                for a in &alts {
                    out.push(format!("{}-j DROP", m(a)));
                }
            }
            Action::Log => {
                // iptables takes at most 29 characters.
                let prefix: String = format!("calico-packet {label} {}: ", r.index)
                    .chars()
                    .take(29)
                    .collect();
                for a in &alts {
                    out.push(format!("{}-j LOG --log-prefix \"{prefix}\"", m(a)));
                }
            }
        }
    }
    // A trailing accept-mark RETURN is kept: it is what says "accepted" to the caller (felix
    // trims only RETURNs that have no effect).
    out
}

/// A workload endpoint's chain for one direction, felix's skeleton.
fn workload_chain(chain: &ChainProgram, ingress: bool) -> Vec<String> {
    let mut rules = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned(),
        "-m conntrack --ctstate INVALID -j DROP".to_owned(),
        set_xmark(0, MARK_ACCEPT | MARK_PASS),
    ];
    if !ingress {
        rules.push(format!("-p udp -m udp --dport {VXLAN_PORT} -j DROP"));
        rules.push("-p ipencap -j DROP".to_owned());
    }
    if chain.missing_tier.is_some() {
        rules.push("-j DROP".to_owned());
        return rules;
    }
    for tier in &chain.tiers {
        rules.push(set_xmark(0, MARK_PASS));
        for p in &tier.policies {
            rules.push(format!(
                "{} -j {}",
                mark_clear(MARK_PASS),
                policy_chain(&p.policy, ingress)
            ));
            rules.push(format!("{} -j RETURN", mark_set(MARK_ACCEPT)));
        }
        if chain.end_of_tier && tier.default_action != Action::Pass {
            rules.push(format!("{} -j DROP", mark_clear(MARK_PASS)));
        }
    }
    if chain.profiles_apply {
        for p in &chain.profiles {
            match p {
                ProfileProgram::Missing { .. } => {
                    rules.push("-j DROP".to_owned());
                    return rules;
                }
                ProfileProgram::Rules { profile, .. } => {
                    rules.push(format!("-j {}", profile_chain(profile, ingress)));
                    rules.push(format!("{} -j RETURN", mark_set(MARK_ACCEPT)));
                }
            }
        }
        rules.push("-j DROP".to_owned());
    }
    rules
}

/// felix's dispatch tree for one direction: the root chain and its children.
fn dispatch_chains(root: &str, ifaces: &[&str], ingress: bool) -> Vec<(String, Vec<String>)> {
    let flag = if ingress { "-o" } else { "-i" };
    let end = "-j DROP".to_owned();
    let common = common_prefix(ifaces);
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in ifaces {
        let prefix = if name.len() > common.len() {
            name[..common.len() + 1].to_owned()
        } else {
            common.clone()
        };
        groups.entry(prefix).or_default().push(name);
    }
    let mut out = Vec::new();
    let mut root_rules = Vec::new();
    let target = |n: &str| format!("{flag} {n} -g {}", endpoint_chain(n, ingress));
    for (prefix, names) in groups {
        if names.len() > 1 {
            let child = format!("{root}-{}", &prefix[common.len()..]);
            root_rules.push(format!("{flag} {prefix}+ -g {child}"));
            let mut rules: Vec<String> = names.iter().map(|n| target(n)).collect();
            rules.push(end.clone());
            out.push((child, rules));
        } else {
            root_rules.push(target(names[0]));
        }
    }
    root_rules.push(end);
    out.push((root.to_owned(), root_rules));
    out
}

fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    let mut len = first.len();
    for n in &names[1..] {
        len = len.min(
            first
                .bytes()
                .zip(n.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    first[..len].to_owned()
}

/// The static chains (no dispatch).
fn static_chains(settings: &Settings) -> Vec<(String, Vec<String>)> {
    let wl = format!("{}+", settings.workload_prefix);
    let forward = vec![
        set_xmark(0, MARK_ALL & !MARK_ACCEPT),
        format!("{} -j {CHAIN_FROM_HEP_FORWARD}", mark_clear(MARK_ACCEPT)),
        format!("-i {wl} -j {CHAIN_FROM_WL_DISPATCH}"),
        format!("-o {wl} -j {CHAIN_TO_WL_DISPATCH}"),
        format!("-j {CHAIN_TO_HEP_FORWARD}"),
        format!("-j {CHAIN_CIDR_BLOCK}"),
    ];
    let input = vec![
        format!("-i {wl} -g {CHAIN_WL_TO_HOST}"),
        format!("{} -j ACCEPT", mark_set(MARK_ACCEPT)),
        set_xmark(0, MARK_ALL),
        format!("-j {CHAIN_FROM_HOST_ENDPOINT}"),
        format!("{} -j ACCEPT", mark_set(MARK_ACCEPT)),
    ];
    let to_host_action = match settings.felix.default_endpoint_to_host_action.as_str() {
        "Accept" => "-j ACCEPT",
        "Return" => "-j RETURN",
        _ => "-j DROP",
    };
    let wl_to_host = vec![
        format!("-j {CHAIN_FROM_WL_DISPATCH}"),
        to_host_action.to_owned(),
    ];
    vec![
        (CHAIN_FORWARD.into(), forward),
        (CHAIN_INPUT.into(), input),
        (CHAIN_WL_TO_HOST.into(), wl_to_host),
        (CHAIN_FROM_HEP_FORWARD.into(), Vec::new()),
        (CHAIN_TO_HEP_FORWARD.into(), Vec::new()),
        (CHAIN_FROM_HOST_ENDPOINT.into(), Vec::new()),
        (CHAIN_CIDR_BLOCK.into(), Vec::new()),
    ]
}

/// The rules felix puts in the kernel's own chains: `(chain, rule, insert at the top)`.
pub fn hooks() -> Vec<(&'static str, String, bool)> {
    vec![
        ("FORWARD", format!("-j {CHAIN_FORWARD}"), true),
        ("INPUT", format!("-j {CHAIN_INPUT}"), true),
        (
            "FORWARD",
            format!("{} -j ACCEPT", mark_set(MARK_ACCEPT)),
            false,
        ),
        ("FORWARD", set_xmark(MARK_ACCEPT, MARK_ACCEPT), false),
    ]
}

/// The hook rules as restore lines, with their comments (the comment's hash finds them again).
fn hook_lines() -> Vec<(String, String)> {
    hooks()
        .into_iter()
        .enumerate()
        .map(|(i, (chain, rule, insert))| {
            let text = commented(chain, i, &rule);
            let hash = text.split('"').nth(1).unwrap_or_default().to_owned();
            let line = if insert {
                format!("-I {chain} 1 {text}")
            } else {
                format!("-A {chain} {text}")
            };
            (hash, line)
        })
        .collect()
}

/// What one endpoint put in the table.
struct Placed {
    owned: Vec<String>,
    shared: Vec<String>,
    interface: Option<String>,
}

/// The desired iptables state of a node, kept up to date from the calculator's changes as the
/// nft [`Renderer`](crate::Renderer) is: a change re-renders only the chains and sets it
/// touches (an endpoint's chains, the policy and profile chains they jump to, the dispatch
/// chains when the interfaces change, a set's members).
pub struct IptRenderer {
    settings: Settings,
    program: NodeProgram,
    table: IptTable,
    placed: HashMap<String, Placed>,
    users: HashMap<String, usize>,
    fresh: HashSet<String>,
    /// Workload interfaces with a program, and how many endpoints claim each.
    interfaces: BTreeMap<String, usize>,
    dispatch: Vec<String>,
    touched: Touched,
}

impl IptRenderer {
    pub fn new(program: NodeProgram, settings: Settings) -> IptRenderer {
        let mut r = IptRenderer {
            settings,
            program,
            table: IptTable::default(),
            placed: HashMap::new(),
            users: HashMap::new(),
            fresh: HashSet::new(),
            interfaces: BTreeMap::new(),
            dispatch: Vec::new(),
            touched: Touched::default(),
        };
        r.render_all();
        r
    }

    pub fn table(&self) -> &IptTable {
        &self.table
    }

    pub fn program(&self) -> &NodeProgram {
        &self.program
    }

    /// Chains, ipsets and their members.
    pub fn counts(&self) -> (usize, usize, usize) {
        let members = self.table.sets.values().map(|s| s.members.len()).sum();
        (self.table.chains.len(), self.table.sets.len(), members)
    }

    /// What changed since the last call (everything, the first time).
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// New node settings: the static chains are rendered again (the workload prefix,
    /// DefaultEndpointToHostAction).
    pub fn set_settings(&mut self, settings: Settings) {
        if settings == self.settings {
            return;
        }
        self.settings = settings;
        for (name, rules) in static_chains(&self.settings) {
            self.insert_chain(name, rules);
        }
    }

    /// Applies the calculator's changes, in its order.
    pub fn apply(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        apply_changes(&mut self.program, changes);
        self.fresh.clear();
        let mut sets = BTreeSet::new();
        let mut endpoints = BTreeSet::new();
        for c in changes {
            match c {
                Change::SetAdded { id, .. }
                | Change::SetRemoved { id }
                | Change::SetUpdated { id, .. } => {
                    sets.insert(id.as_str());
                }
                Change::ProgramSet { endpoint, .. } | Change::ProgramRemoved { endpoint } => {
                    endpoints.insert(endpoint.as_str());
                }
            }
        }
        for id in sets {
            self.render_set(id);
        }
        let before: Vec<String> = self.interfaces.keys().cloned().collect();
        for key in endpoints {
            self.unplace(key);
            self.place(key);
        }
        if self.interfaces.keys().ne(before.iter()) {
            self.render_dispatch();
        }
    }

    fn render_all(&mut self) {
        self.table = IptTable::default();
        self.placed.clear();
        self.users.clear();
        self.fresh.clear();
        self.interfaces.clear();
        self.dispatch.clear();
        let ids: Vec<String> = self.program.sets.keys().cloned().collect();
        for id in &ids {
            self.render_set(id);
        }
        let keys: Vec<String> = self.program.endpoints.keys().cloned().collect();
        for key in &keys {
            self.place(key);
        }
        for (name, rules) in static_chains(&self.settings) {
            let rules = with_comments(&name, rules);
            self.table.chains.insert(name, rules);
        }
        self.render_dispatch();
        self.touched = Touched {
            all: true,
            ..Touched::default()
        };
    }

    fn render_set(&mut self, id: &str) {
        let name = set_name(id);
        match self.program.sets.get(id) {
            Some(set) => {
                self.table.sets.insert(name.clone(), render_set(id, set));
            }
            None => {
                self.table.sets.remove(&name);
            }
        }
        self.touched.sets.insert(name);
    }

    fn insert_chain(&mut self, name: String, rules: Vec<String>) {
        let rules = with_comments(&name, rules);
        self.table.chains.insert(name.clone(), rules);
        self.touched.chains.insert(name);
    }

    fn place(&mut self, key: &str) {
        let Some(ep) = self.program.endpoints.get(key).cloned() else {
            return;
        };
        if ep.host || ep.interface.is_empty() {
            // Host endpoints are not rendered by this peer (module docs).
            return;
        }
        let mut placed = Placed {
            owned: Vec::new(),
            shared: Vec::new(),
            interface: Some(ep.interface.clone()),
        };
        for (ingress, chain) in [(true, &ep.ingress), (false, &ep.egress)] {
            let name = endpoint_chain(&ep.interface, ingress);
            self.insert_chain(name.clone(), workload_chain(chain, ingress));
            placed.owned.push(name);
            if chain.missing_tier.is_some() {
                continue;
            }
            let mut shared: Vec<(String, String, &Vec<RuleProgram>)> = Vec::new();
            for t in &chain.tiers {
                for p in &t.policies {
                    shared.push((
                        policy_chain(&p.policy, ingress),
                        policy_id(&p.policy),
                        &p.rules,
                    ));
                }
            }
            if chain.profiles_apply {
                for p in &chain.profiles {
                    let ProfileProgram::Rules { profile, rules } = p else {
                        break;
                    };
                    shared.push((profile_chain(profile, ingress), profile.clone(), rules));
                }
            }
            for (n, label, rules) in shared {
                if self.fresh.insert(n.clone()) {
                    self.insert_chain(n.clone(), rules_chain(rules, &label));
                }
                *self.users.entry(n.clone()).or_default() += 1;
                placed.shared.push(n);
            }
        }
        *self.interfaces.entry(ep.interface.clone()).or_default() += 1;
        self.placed.insert(key.to_owned(), placed);
    }

    fn unplace(&mut self, key: &str) {
        let Some(placed) = self.placed.remove(key) else {
            return;
        };
        if let Some(iface) = &placed.interface
            && let Some(n) = self.interfaces.get_mut(iface)
        {
            *n -= 1;
            if *n == 0 {
                self.interfaces.remove(iface);
            }
        }
        for n in placed.owned {
            // Another endpoint may claim the same interface (and so the same chain names).
            let still = placed
                .interface
                .as_ref()
                .is_some_and(|i| self.interfaces.contains_key(i));
            if !still {
                self.table.chains.remove(&n);
            }
            self.touched.chains.insert(n);
        }
        for n in placed.shared {
            let users = self.users.entry(n.clone()).or_default();
            *users = users.saturating_sub(1);
            if *users == 0 {
                self.users.remove(&n);
                self.table.chains.remove(&n);
                self.touched.chains.insert(n);
            }
        }
    }

    fn render_dispatch(&mut self) {
        for n in std::mem::take(&mut self.dispatch) {
            self.table.chains.remove(&n);
            self.touched.chains.insert(n);
        }
        let ifaces: Vec<&str> = self.interfaces.keys().map(String::as_str).collect();
        let mut chains = dispatch_chains(CHAIN_FROM_WL_DISPATCH, &ifaces, false);
        chains.extend(dispatch_chains(CHAIN_TO_WL_DISPATCH, &ifaces, true));
        for (n, rules) in chains {
            self.dispatch.push(n.clone());
            self.insert_chain(n, rules);
        }
    }
}

/// Renders a node's programs as the desired iptables state (pure).
pub fn render_iptables(program: &NodeProgram, settings: &Settings) -> IptTable {
    IptRenderer::new(program.clone(), settings.clone()).table
}

/// Where `iptables-restore` and `ipset restore` inputs go.
pub trait IptBackend {
    /// `iptables-restore --noflush` of the input.
    fn restore(&mut self, input: &str) -> Result<(), Error>;
    /// `ipset -exist restore` of the input.
    fn ipset(&mut self, input: &str) -> Result<(), Error>;
    /// `iptables-save -t filter`.
    fn save(&mut self) -> Result<String, Error>;
    /// The names of the ipsets present.
    fn set_names(&mut self) -> Result<Vec<String>, Error>;
}

/// The kernel, through iptables and ipset: of a named network namespace (`ip netns exec`), or
/// of the calling thread's (the tools are spawned directly and inherit it).
#[derive(Clone, Debug)]
pub struct Iptables {
    netns: Option<String>,
    flavour: Flavour,
}

impl Iptables {
    pub fn in_netns(name: &str, flavour: Flavour) -> Iptables {
        Iptables {
            netns: Some(name.to_owned()),
            flavour,
        }
    }

    /// The calling thread's network namespace.
    pub fn current(flavour: Flavour) -> Iptables {
        Iptables {
            netns: None,
            flavour,
        }
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        let tool = args.first().copied().unwrap_or_default().to_owned();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(args);
                c
            }
            None => {
                let mut c = Command::new(&tool);
                c.args(&args[1..]);
                c
            }
        };
        let mut child = command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                tool: tool.clone(),
                source,
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| Error::Spawn {
                    tool: tool.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            tool: tool.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Refused {
                tool,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl IptBackend for Iptables {
    fn restore(&mut self, input: &str) -> Result<(), Error> {
        self.run(&[self.flavour.restore_tool(), "--noflush"], Some(input))
            .map(drop)
    }

    fn ipset(&mut self, input: &str) -> Result<(), Error> {
        self.run(&["ipset", "-exist", "restore"], Some(input))
            .map(drop)
    }

    fn save(&mut self) -> Result<String, Error> {
        self.run(&[self.flavour.save_tool(), "-t", "filter"], None)
    }

    fn set_names(&mut self) -> Result<Vec<String>, Error> {
        let out = self.run(&["ipset", "list", "-n"], None)?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// Keeps every input it is given (for tests); the kernel it reports is `saved` and `sets`.
#[derive(Debug, Default)]
pub struct IptRecording {
    pub restores: Vec<String>,
    pub ipsets: Vec<String>,
    pub saved: String,
    pub sets: Vec<String>,
}

impl IptBackend for IptRecording {
    fn restore(&mut self, input: &str) -> Result<(), Error> {
        self.restores.push(input.to_owned());
        Ok(())
    }

    fn ipset(&mut self, input: &str) -> Result<(), Error> {
        self.ipsets.push(input.to_owned());
        Ok(())
    }

    fn save(&mut self) -> Result<String, Error> {
        Ok(self.saved.clone())
    }

    fn set_names(&mut self) -> Result<Vec<String>, Error> {
        Ok(self.sets.clone())
    }
}

/// Installs desired iptables states, sending only what changed: felix's way (sets first, then
/// one `iptables-restore --noflush` of the changed chains, then removed sets).
pub struct IptProgrammer<B> {
    backend: B,
    installed: Option<IptTable>,
}

impl<B: IptBackend> IptProgrammer<B> {
    pub fn new(backend: B) -> Self {
        IptProgrammer {
            backend,
            installed: None,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn installed(&self) -> Option<&IptTable> {
        self.installed.as_ref()
    }

    /// Makes the kernel hold `desired`. Without a record, reads the kernel (`iptables-save`,
    /// `ipset list -n`) and rewrites every chain and set of ours, deleting those not desired and
    /// adding missing hooks; with one, sends the difference. On error the record is dropped.
    pub fn sync(&mut self, desired: &IptTable) -> Result<Applied, Error> {
        match self.installed.take() {
            Some(installed) => {
                let chains: BTreeSet<String> = installed
                    .chains
                    .keys()
                    .chain(desired.chains.keys())
                    .cloned()
                    .collect();
                let sets: BTreeSet<String> = installed
                    .sets
                    .keys()
                    .chain(desired.sets.keys())
                    .cloned()
                    .collect();
                self.installed = Some(installed);
                let chains = chains.iter().map(String::as_str).collect();
                let sets = sets.iter().map(String::as_str).collect();
                self.send_diff(desired, &chains, &sets)
            }
            None => self.full(desired),
        }
    }

    /// As [`IptProgrammer::sync`], knowing that only the touched chains and sets can differ.
    pub fn sync_touched(
        &mut self,
        desired: &IptTable,
        touched: &Touched,
    ) -> Result<Applied, Error> {
        if self.installed.is_none() || touched.all {
            self.installed = None;
            return self.sync(desired);
        }
        let chains: BTreeSet<&str> = touched.chains.iter().map(String::as_str).collect();
        let sets: BTreeSet<&str> = touched.sets.iter().map(String::as_str).collect();
        self.send_diff(desired, &chains, &sets)
    }

    fn full(&mut self, desired: &IptTable) -> Result<Applied, Error> {
        let saved = self.backend.save()?;
        let present: BTreeSet<String> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(CHAIN_OWNED))
            .map(str::to_owned)
            .collect();
        let hooks: Vec<String> = hook_lines()
            .into_iter()
            .filter(|(hash, _)| !saved.contains(hash.as_str()))
            .map(|(_, line)| line)
            .collect();
        let old_sets: Vec<String> = self
            .backend
            .set_names()?
            .into_iter()
            .filter(|n| n.starts_with(SET_OWNED) && !desired.sets.contains_key(n))
            .collect();
        let mut chains: Vec<(&str, Option<&Vec<String>>)> = desired
            .chains
            .iter()
            .map(|(n, r)| (n.as_str(), Some(r)))
            .collect();
        chains.extend(
            present
                .iter()
                .filter(|n| !desired.chains.contains_key(*n))
                .map(|n| (n.as_str(), None)),
        );
        let sets = desired.ipset_text();
        let restore = restore_input(&chains, &hooks);
        let destroy: String = old_sets.iter().map(|n| format!("destroy {n}\n")).collect();
        self.send(&sets, &restore, &destroy)?;
        self.installed = Some(desired.clone());
        Ok(Applied {
            commands: chains.len() + desired.sets.len() + old_sets.len() + hooks.len(),
            bytes: sets.len() + restore.len() + destroy.len(),
            read_kernel: true,
            replaced: true,
            ..Applied::default()
        })
    }

    fn send(&mut self, sets: &str, restore: &str, destroy: &str) -> Result<(), Error> {
        let r = (|| {
            if !sets.is_empty() {
                self.backend.ipset(sets)?;
            }
            if !restore.is_empty() {
                self.backend.restore(restore)?;
            }
            if !destroy.is_empty() {
                self.backend.ipset(destroy)?;
            }
            Ok(())
        })();
        if r.is_err() {
            self.installed = None;
        }
        r
    }

    fn send_diff(
        &mut self,
        desired: &IptTable,
        chains: &BTreeSet<&str>,
        sets: &BTreeSet<&str>,
    ) -> Result<Applied, Error> {
        let Some(installed) = self.installed.as_ref() else {
            return self.full(desired);
        };
        let mut set_text = String::new();
        let mut destroy = String::new();
        let mut commands = 0;
        for name in sets {
            match (installed.sets.get(*name), desired.sets.get(*name)) {
                (None, Some(new)) => {
                    create_set(&mut set_text, name, new);
                    commands += 1;
                }
                (Some(_), None) => {
                    destroy.push_str(&format!("destroy {name}\n"));
                    commands += 1;
                }
                (Some(old), Some(new)) if old != new => {
                    if old.kind != new.kind {
                        // Not produced by this renderer (a set's kind follows its id).
                        destroy.push_str(&format!("destroy {name}\n"));
                        create_set(&mut set_text, name, new);
                    }
                    for m in old.members.difference(&new.members) {
                        set_text.push_str(&format!("del {name} {m}\n"));
                        commands += 1;
                    }
                    for m in new.members.difference(&old.members) {
                        set_text.push_str(&format!("add {name} {m}\n"));
                        commands += 1;
                    }
                }
                _ => {}
            }
        }
        let changed: Vec<(&str, Option<&Vec<String>>)> = chains
            .iter()
            .filter(|n| installed.chains.get(**n) != desired.chains.get(**n))
            .map(|n| (*n, desired.chains.get(*n)))
            .collect();
        commands += changed.len();
        let restore = if changed.is_empty() {
            String::new()
        } else {
            restore_input(&changed, &[])
        };
        let t = std::time::Instant::now();
        self.send(&set_text, &restore, &destroy)?;
        let kernel = t.elapsed();
        let installed = self.installed.as_mut().expect("checked above");
        for n in chains {
            match desired.chains.get(*n) {
                Some(r) => {
                    installed.chains.insert((*n).to_owned(), r.clone());
                }
                None => {
                    installed.chains.remove(*n);
                }
            }
        }
        for n in sets {
            match desired.sets.get(*n) {
                Some(s) => {
                    installed.sets.insert((*n).to_owned(), s.clone());
                }
                None => {
                    installed.sets.remove(*n);
                }
            }
        }
        Ok(Applied {
            commands,
            bytes: set_text.len() + restore.len() + destroy.len(),
            kernel,
            ..Applied::default()
        })
    }

    /// The periodic consistency check: forget the record, read the kernel, rewrite ours.
    pub fn check(&mut self, desired: &IptTable) -> Result<Applied, Error> {
        self.installed = None;
        self.sync(desired)
    }
}

/// `iptables-restore` input (for the no-table baseline of benchmarks) that removes everything
/// this rendering installs: the hooks, every `cali-*` chain (named in `table`); and the
/// matching `ipset restore` input destroying its sets.
pub fn removal(table: &IptTable) -> (String, String) {
    let mut out = String::from("*filter\n");
    for (i, (chain, rule, _)) in hooks().into_iter().enumerate() {
        out.push_str(&format!("-D {chain} {}\n", commented(chain, i, &rule)));
    }
    for n in table.chains.keys() {
        out.push_str(&format!(":{n} - [0:0]\n"));
    }
    for n in table.chains.keys() {
        out.push_str(&format!("-X {n}\n"));
    }
    out.push_str("COMMIT\n");
    let sets = table
        .sets
        .keys()
        .map(|n| format!("destroy {n}\n"))
        .collect();
    (out, sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_hashed_to_the_chain_limit() {
        assert_eq!(
            limited(PREFIX_PROFILE_IN, "ksa.default.default", MAX_CHAIN_NAME),
            "cali-pri-ksa.default.default"
        );
        let long = limited(PREFIX_PROFILE_IN, "ksa.office-test.default", MAX_CHAIN_NAME);
        assert_eq!(long.len(), MAX_CHAIN_NAME);
        assert!(long.starts_with("cali-pri-_"), "{long}");
        assert!(set_name("s:abc").len() <= MAX_SET_NAME);
        assert!(set_name("s:abc").starts_with("cali40s:"));
        assert!(set_name("n:http:abc").starts_with("cali40n:"));
    }

    #[test]
    fn new_settings_rewrite_only_the_static_chains() {
        let mut r = IptRenderer::new(NodeProgram::default(), Settings::default());
        r.take_touched();
        let mut settings = Settings::default();
        settings.felix.default_endpoint_to_host_action = "Accept".into();
        r.set_settings(settings.clone());
        let touched = r.take_touched();
        assert!(touched.chains.contains(CHAIN_WL_TO_HOST), "{touched:?}");
        assert!(!touched.chains.contains(CHAIN_FROM_WL_DISPATCH));
        assert_eq!(
            r.table(),
            &render_iptables(&NodeProgram::default(), &settings)
        );
        assert!(r.table().chains[CHAIN_WL_TO_HOST][1].ends_with("-j ACCEPT"));
    }

    #[test]
    fn multiport_lists_hold_at_most_fifteen_ports() {
        let ports: Vec<(u16, u16)> = (1..=20).map(|p| (p, p)).collect();
        let lists = multiport_lists(&ports);
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].split(',').count(), 15);
        assert_eq!(multiport_lists(&[(1, 5), (7, 7)]), ["1:5,7"]);
    }

    #[test]
    fn dispatch_is_a_shallow_tree_by_the_next_character() {
        let chains = dispatch_chains(
            CHAIN_FROM_WL_DISPATCH,
            &["calia1", "calia2", "calib1"],
            false,
        );
        let names: Vec<&str> = chains.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cali-from-wl-dispatch-a", "cali-from-wl-dispatch"]);
        assert_eq!(
            chains[1].1,
            [
                "-i calia+ -g cali-from-wl-dispatch-a",
                "-i calib1 -g cali-fw-calib1",
                "-j DROP"
            ]
        );
        assert_eq!(
            chains[0].1,
            [
                "-i calia1 -g cali-fw-calia1",
                "-i calia2 -g cali-fw-calia2",
                "-j DROP"
            ]
        );
    }
}
