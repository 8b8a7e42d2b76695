//! Validation, as Calico's validator and CRD schema rules apply it.
//!
//! [`validate`] checks one (defaulted) resource on its own and returns every problem found, each
//! with the field path and a message saying what is wrong and what would be valid. Checks that
//! need other resources (tier exists, pools do not overlap) are not done here.

use std::collections::HashSet;
use std::net::IpAddr;

use gingham_selector::Selector;
use ipnet::IpNet;

use crate::bgp::{BgpConfigurationSpec, BgpPeerSpec};
use crate::bgpfilter::{
    BLOCK_AFFINITY_STATES, BgpFilterAction, BgpFilterRule, BgpFilterSpec, BlockAffinitySpec,
    MAX_BGP_FILTER_PRIORITY,
};
use crate::cidr;
use crate::endpoint::{HostEndpointSpec, WorkloadEndpoint};
use crate::error::{ValidationError, path_with_key, quote};
use crate::felix::{FelixConfigurationSpec, is_duration};
use crate::meta::{Labels, ObjectMeta};
use crate::names;
use crate::node::NodeSpec;
use crate::policy::{
    DEFAULT_TIER_ORDER, KUBE_ADMIN_TIER_ORDER, KUBE_BASELINE_TIER_ORDER, StagedAction, Tier,
};
use crate::pool::{AllowedUse, IpPoolSpec};
use crate::port::{Port, check_port_name};
use crate::resource::Resource;
use crate::rule::{Action, EntityRule, IcmpFields, PolicyType, Rule};

/// Maximum total size of a resource's annotations (keys plus values).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Maximum rules per direction in a policy.
pub const MAX_RULES: usize = 1024;
/// Maximum length of a selector.
pub const MAX_SELECTOR_LEN: usize = 1024;
/// Maximum nets/notNets entries in one entity rule.
pub const MAX_NETS: usize = 256;
/// Maximum ports/notPorts entries in one entity rule.
pub const MAX_PORTS: usize = 50;

/// Collects problems.
#[derive(Default)]
struct V {
    errs: Vec<ValidationError>,
}

impl V {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errs.push(ValidationError::new(path, msg));
    }

    /// Checks a selector: it must parse, fit in 1024 characters, and (unless `global_ok`) not use
    /// `global()`.
    fn selector(&mut self, path: &str, text: &str, global_ok: GlobalUse) -> Option<Selector> {
        if text.len() > MAX_SELECTOR_LEN {
            // Too long to be valid: say so once, without echoing it whole.
            self.err(
                path,
                format!(
                    "selector {} is {} characters long (valid: at most {MAX_SELECTOR_LEN})",
                    quote(text),
                    text.len()
                ),
            );
            return None;
        }
        match Selector::parse(text) {
            Ok(s) => {
                match global_ok {
                    GlobalUse::Never if text.contains("global(") => self.err(
                        path,
                        "global() can only be used as the whole of an entity rule's namespaceSelector",
                    ),
                    GlobalUse::OnlyAlone if s.contains_global() && !s.is_global() => self.err(
                        path,
                        "global() cannot be combined with other selectors (valid: exactly \"global()\")",
                    ),
                    _ => {}
                }
                Some(s)
            }
            Err(e) => {
                self.err(path, format!("invalid selector {}: {e}", quote(text)));
                None
            }
        }
    }

    fn meta(&mut self, m: &ObjectMeta) {
        if m.name.is_empty() {
            self.err("metadata.name", "a name is required");
        } else if m.name.len() > names::MAX_SUBDOMAIN {
            self.err(
                "metadata.name",
                format!(
                    "name is too long by {} bytes (valid: at most 253 characters)",
                    m.name.len() - 253
                ),
            );
        } else if !names::matches_subdomain_format(&m.name) {
            self.err(
                "metadata.name",
                format!(
                    "{:?} is not a valid name: it must consist of lower case alphanumeric characters, '-' or '.' (regex: {})",
                    m.name,
                    names::SUBDOMAIN_FMT
                ),
            );
        }
        self.labels("metadata.labels", &m.labels);
        self.annotations("metadata.annotations", &m.annotations);
    }

    fn namespace(&mut self, m: &ObjectMeta) {
        let ns = m.namespace_or_empty();
        if !names::is_dns_label(ns) {
            self.err(
                "metadata.namespace",
                format!(
                    "{ns:?} is not a valid namespace (valid: a DNS label, regex {}, at most 63 characters)",
                    names::LABEL_FMT
                ),
            );
        }
    }

    fn labels(&mut self, path: &str, labels: &Labels) {
        for (k, v) in labels {
            if let Err(e) = names::check_qualified_name(k) {
                self.err(path_with_key(path, k), format!("invalid label key {e}"));
            }
            if let Err(e) = names::check_label_value(v) {
                self.err(path_with_key(path, k), format!("invalid label {e}"));
            }
        }
    }

    fn annotations(&mut self, path: &str, ann: &Labels) {
        let mut total = 0;
        for (k, v) in ann {
            if let Err(e) = names::check_qualified_name(&k.to_lowercase()) {
                self.err(
                    path_with_key(path, k),
                    format!("invalid annotation key {e}"),
                );
            }
            total += k.len() + v.len();
        }
        if total > MAX_ANNOTATIONS_BYTES {
            self.err(
                path,
                format!(
                    "total size of annotations is too large by {} bytes (valid: at most 256 KiB)",
                    total - MAX_ANNOTATIONS_BYTES
                ),
            );
        }
    }

    fn name_list(&mut self, path: &str, list: &[String], what: &str) {
        for (i, n) in list.iter().enumerate() {
            if !names::is_dns_subdomain(n) {
                self.err(
                    format!("{path}[{i}]"),
                    format!("{n:?} is not a valid {what} name (valid: a lower-case DNS subdomain)"),
                );
            }
        }
    }

    fn optional_name(&mut self, path: &str, value: &str, what: &str) {
        if !value.is_empty() && !names::is_dns_subdomain(value) {
            self.err(
                path,
                format!("{value:?} is not a valid {what} (valid: a lower-case DNS subdomain)"),
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GlobalUse {
    Never,
    OnlyAlone,
}

/// Validates one resource (after [`crate::apply_defaults`]). Returns every problem found.
pub fn validate(resource: &Resource) -> Vec<ValidationError> {
    let mut v = V::default();
    if resource.kind().is_namespaced() {
        v.namespace(resource.metadata());
    }
    match resource {
        Resource::NetworkPolicy(p) => {
            policy_name(&mut v, &p.metadata.name, false);
            v.labels("metadata.labels", &p.metadata.labels);
            v.annotations("metadata.annotations", &p.metadata.annotations);
            let s = &p.spec;
            policy_common(
                &mut v,
                &PolicyParts {
                    tier: &s.tier,
                    selector: &s.selector,
                    sa_selector: &s.service_account_selector,
                    ns_selector: None,
                    types: &s.types,
                    ingress: &s.ingress,
                    egress: &s.egress,
                    global: false,
                },
            );
        }
        Resource::StagedNetworkPolicy(p) => {
            policy_name(&mut v, &p.metadata.name, false);
            v.labels("metadata.labels", &p.metadata.labels);
            v.annotations("metadata.annotations", &p.metadata.annotations);
            let s = &p.spec;
            if s.staged_action == Some(StagedAction::Delete) {
                if !(s.order.is_none()
                    && s.ingress.is_empty()
                    && s.egress.is_empty()
                    && s.selector.is_empty()
                    && s.types.is_empty()
                    && s.service_account_selector.is_empty()
                    && s.performance_hints.is_empty())
                {
                    v.err(
                        "spec",
                        "with stagedAction Delete every spec field except tier must be empty",
                    );
                }
            } else {
                policy_common(
                    &mut v,
                    &PolicyParts {
                        tier: &s.tier,
                        selector: &s.selector,
                        sa_selector: &s.service_account_selector,
                        ns_selector: None,
                        types: &s.types,
                        ingress: &s.ingress,
                        egress: &s.egress,
                        global: false,
                    },
                );
            }
        }
        Resource::GlobalNetworkPolicy(p) => {
            policy_name(&mut v, &p.metadata.name, true);
            v.labels("metadata.labels", &p.metadata.labels);
            v.annotations("metadata.annotations", &p.metadata.annotations);
            let s = &p.spec;
            policy_common(
                &mut v,
                &PolicyParts {
                    tier: &s.tier,
                    selector: &s.selector,
                    sa_selector: &s.service_account_selector,
                    ns_selector: Some(&s.namespace_selector),
                    types: &s.types,
                    ingress: &s.ingress,
                    egress: &s.egress,
                    global: true,
                },
            );
            host_flags(
                &mut v,
                s.do_not_track,
                s.pre_dnat,
                s.apply_on_forward,
                &s.egress,
                &s.types,
            );
        }
        Resource::StagedGlobalNetworkPolicy(p) => {
            policy_name(&mut v, &p.metadata.name, true);
            v.labels("metadata.labels", &p.metadata.labels);
            v.annotations("metadata.annotations", &p.metadata.annotations);
            let s = &p.spec;
            if s.staged_action == Some(StagedAction::Delete) {
                if !(s.order.is_none()
                    && s.ingress.is_empty()
                    && s.egress.is_empty()
                    && s.selector.is_empty()
                    && s.types.is_empty()
                    && !s.do_not_track
                    && !s.pre_dnat
                    && !s.apply_on_forward
                    && s.service_account_selector.is_empty()
                    && s.namespace_selector.is_empty()
                    && s.performance_hints.is_empty())
                {
                    v.err(
                        "spec",
                        "with stagedAction Delete every spec field except tier must be empty",
                    );
                }
            } else {
                policy_common(
                    &mut v,
                    &PolicyParts {
                        tier: &s.tier,
                        selector: &s.selector,
                        sa_selector: &s.service_account_selector,
                        ns_selector: Some(&s.namespace_selector),
                        types: &s.types,
                        ingress: &s.ingress,
                        egress: &s.egress,
                        global: true,
                    },
                );
                host_flags(
                    &mut v,
                    s.do_not_track,
                    s.pre_dnat,
                    s.apply_on_forward,
                    &s.egress,
                    &s.types,
                );
            }
        }
        Resource::StagedKubernetesNetworkPolicy(p) => {
            v.meta(&p.metadata);
            // Valid when the Kubernetes NetworkPolicy it stages converts and validates.
            match p.to_calico() {
                Err(e) => v.err(e.path, e.message),
                Ok(np) => {
                    let name = np.metadata.name.clone();
                    for e in validate(&Resource::NetworkPolicy(np)) {
                        v.err(
                            e.path,
                            format!(
                                "{} (in the policy it stages, NetworkPolicy {name})",
                                e.message
                            ),
                        );
                    }
                }
            }
        }
        Resource::Tier(t) => tier(&mut v, t),
        Resource::Profile(p) => {
            v.meta(&p.metadata);
            rules(
                &mut v,
                "spec.ingress",
                &p.spec.ingress,
                Direction::Ingress,
                false,
            );
            rules(
                &mut v,
                "spec.egress",
                &p.spec.egress,
                Direction::Egress,
                false,
            );
            v.labels("spec.labelsToApply", &p.spec.labels_to_apply);
        }
        Resource::HostEndpoint(h) => {
            v.meta(&h.metadata);
            host_endpoint(&mut v, &h.spec);
        }
        Resource::WorkloadEndpoint(w) => {
            v.meta(&w.metadata);
            workload_endpoint(&mut v, w);
        }
        Resource::NetworkSet(s) => {
            v.meta(&s.metadata);
            netset_labels(&mut v, &s.metadata);
        }
        Resource::GlobalNetworkSet(s) => {
            v.meta(&s.metadata);
            netset_labels(&mut v, &s.metadata);
        }
        Resource::IpPool(p) => {
            v.meta(&p.metadata);
            ip_pool(&mut v, &p.spec);
        }
        Resource::IpReservation(r) => v.meta(&r.metadata),
        Resource::Node(n) => {
            v.meta(&n.metadata);
            node(&mut v, &n.spec);
        }
        Resource::FelixConfiguration(f) => {
            v.meta(&f.metadata);
            felix(&mut v, &f.spec);
        }
        Resource::BgpConfiguration(b) => {
            v.meta(&b.metadata);
            bgp_configuration(&mut v, &b.spec);
        }
        Resource::BgpPeer(b) => {
            v.meta(&b.metadata);
            bgp_peer(&mut v, &b.spec);
        }
        Resource::ClusterInformation(c) => v.meta(&c.metadata),
        Resource::BgpFilter(f) => {
            v.meta(&f.metadata);
            bgp_filter(&mut v, &f.spec);
        }
        Resource::BlockAffinity(a) => {
            v.meta(&a.metadata);
            block_affinity(&mut v, &a.spec);
        }
    }
    v.errs
}

fn policy_name(v: &mut V, name: &str, global: bool) {
    if name.is_empty() {
        v.err("metadata.name", "a name is required");
        return;
    }
    if name.len() > names::MAX_SUBDOMAIN {
        v.err(
            "metadata.name",
            format!(
                "name is too long by {} bytes (valid: at most 253 characters)",
                name.len() - 253
            ),
        );
        return;
    }
    let ok = if global {
        names::is_global_network_policy_name(name)
    } else {
        names::is_network_policy_name(name)
    };
    if !ok {
        let valid = if global {
            "a lower-case DNS label, optionally with one dot (e.g. deny-ssh or tier1.deny-ssh)"
        } else {
            "a lower-case DNS label, optionally with one dot, or knp.default.<name> (e.g. allow-tcp)"
        };
        v.err(
            "metadata.name",
            format!("{name:?} is not a valid policy name (valid: {valid})"),
        );
    }
}

struct PolicyParts<'a> {
    tier: &'a str,
    selector: &'a str,
    sa_selector: &'a str,
    ns_selector: Option<&'a str>,
    types: &'a [PolicyType],
    ingress: &'a [Rule],
    egress: &'a [Rule],
    global: bool,
}

fn policy_common(v: &mut V, p: &PolicyParts<'_>) {
    if !p.tier.is_empty() && !names::is_dns_label(p.tier) {
        v.err(
            "spec.tier",
            format!(
                "{:?} is not a valid tier name (valid: a lower-case DNS label)",
                p.tier
            ),
        );
    }
    v.selector("spec.selector", p.selector, GlobalUse::Never);
    v.selector(
        "spec.serviceAccountSelector",
        p.sa_selector,
        GlobalUse::Never,
    );
    if let Some(ns) = p.ns_selector {
        v.selector("spec.namespaceSelector", ns, GlobalUse::Never);
    }
    let mut seen = HashSet::new();
    for t in p.types {
        if !seen.insert(*t) {
            v.err(
                "spec.types",
                format!(
                    "'{t}' type specified more than once (valid: Ingress and/or Egress, each once)"
                ),
            );
        }
    }
    for (dir, list, path) in [
        (Direction::Ingress, p.ingress, "spec.ingress"),
        (Direction::Egress, p.egress, "spec.egress"),
    ] {
        if list.len() > MAX_RULES {
            v.err(
                path,
                format!("{} rules (valid: at most {MAX_RULES})", list.len()),
            );
        }
        rules(v, path, list, dir, p.global);
    }
}

fn host_flags(
    v: &mut V,
    dnt: bool,
    pre_dnat: bool,
    aof: bool,
    egress: &[Rule],
    types: &[PolicyType],
) {
    if dnt && pre_dnat {
        v.err("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
    }
    if pre_dnat && !egress.is_empty() {
        v.err("spec.egress", "a preDNAT policy cannot have egress rules");
    }
    if pre_dnat && types.contains(&PolicyType::Egress) {
        v.err(
            "spec.types",
            "a preDNAT policy cannot have the Egress type (valid: [Ingress])",
        );
    }
    if (dnt || pre_dnat) && !aof {
        v.err(
            "spec.applyOnForward",
            "applyOnForward must be true if either preDNAT or doNotTrack is true",
        );
    }
}

fn tier(v: &mut V, t: &Tier) {
    let name = &t.metadata.name;
    if name.is_empty() {
        v.err("metadata.name", "a name is required");
    } else if name.len() > names::MAX_LABEL {
        v.err(
            "metadata.name",
            format!(
                "name is too long by {} bytes (valid: at most 63 characters)",
                name.len() - 63
            ),
        );
    } else if !names::matches_label_format(name) {
        v.err(
            "metadata.name",
            format!(
                "{name:?} is not a valid tier name: it must consist of lower case alphanumeric characters or '-' (regex: {})",
                names::LABEL_FMT
            ),
        );
    }
    v.labels("metadata.labels", &t.metadata.labels);
    v.annotations("metadata.annotations", &t.metadata.annotations);
    let reserved: &[(&str, f64, Action)] = &[
        ("default", DEFAULT_TIER_ORDER, Action::Deny),
        ("kube-admin", KUBE_ADMIN_TIER_ORDER, Action::Pass),
        ("kube-baseline", KUBE_BASELINE_TIER_ORDER, Action::Pass),
    ];
    for (rname, order, action) in reserved {
        if name == rname {
            if t.spec.order != Some(*order) {
                v.err(
                    "spec.order",
                    format!("the {rname} tier's order must be {order}"),
                );
            }
            if t.spec.default_action != Some(*action) {
                v.err(
                    "spec.defaultAction",
                    format!("the {rname} tier must have default action {action}"),
                );
            }
        }
    }
    if let Some(a) = t.spec.default_action
        && !matches!(a, Action::Deny | Action::Pass)
    {
        v.err(
            "spec.defaultAction",
            format!("{a} is not valid here (valid: Deny, Pass)"),
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

fn rules(v: &mut V, path: &str, list: &[Rule], dir: Direction, global: bool) {
    for (i, r) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        rule(v, &p, r);
        match dir {
            Direction::Egress => {
                if r.source.services.is_some() {
                    v.err(
                        format!("{p}.source.services"),
                        "services are not allowed in an egress rule's source (valid: destination)",
                    );
                }
                if r.http.is_some() {
                    v.err(
                        format!("{p}.http"),
                        "HTTP matches are not allowed in egress rules",
                    );
                }
                if global
                    && let Some(s) = &r.destination.services
                    && s.namespace.is_empty()
                {
                    v.err(
                        format!("{p}.destination.services.namespace"),
                        "a global policy's service match must specify a namespace",
                    );
                }
            }
            Direction::Ingress => {
                if r.destination.services.is_some() {
                    v.err(
                        format!("{p}.destination.services"),
                        "services are not allowed in an ingress rule's destination (valid: source)",
                    );
                }
                if global
                    && let Some(s) = &r.source.services
                    && s.namespace.is_empty()
                {
                    v.err(
                        format!("{p}.source.services.namespace"),
                        "a global policy's service match must specify a namespace",
                    );
                }
            }
        }
    }
}

fn rule(v: &mut V, p: &str, r: &Rule) {
    if let Some(ipv) = r.ip_version
        && ipv != 4
        && ipv != 6
    {
        v.err(
            format!("{p}.ipVersion"),
            format!("{ipv} is not a valid IP version (valid: 4, 6)"),
        );
    }
    // Ports need a protocol that has ports; without a protocol only named ports are allowed.
    for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
        for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
            if ports.is_empty() {
                continue;
            }
            match r.protocol {
                Some(proto) if !proto.supports_ports() => v.err(
                    format!("{p}.{side}.{field}"),
                    format!("protocol {proto} has no ports: rules that specify ports must set protocol to TCP, UDP or SCTP"),
                ),
                None => {
                    for (i, port) in ports.iter().enumerate() {
                        if !port.is_named() {
                            v.err(
                                format!("{p}.{side}.{field}[{i}]"),
                                format!("numeric port {port} needs a protocol: rules with a numeric port or port range must set protocol to TCP, UDP or SCTP"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(icmp) = &r.icmp {
        match r.protocol {
            Some(proto) if proto.is_icmp() || proto.is_icmpv6() => {}
            _ => v.err(
                format!("{p}.icmp"),
                "ICMP fields require protocol ICMP or ICMPv6",
            ),
        }
        icmp_fields(v, &format!("{p}.icmp"), icmp);
    }
    if let Some(icmp) = &r.not_icmp {
        icmp_fields(v, &format!("{p}.notICMP"), icmp);
    }
    for (field, proto) in [("protocol", r.protocol), ("notProtocol", r.not_protocol)] {
        if let (Some(proto), Some(ipv)) = (proto, r.ip_version) {
            if proto.is_icmp() && ipv != 4 {
                v.err(
                    format!("{p}.ipVersion"),
                    format!("{field} ICMP requires ipVersion 4"),
                );
            }
            if proto.is_icmpv6() && ipv != 6 {
                v.err(
                    format!("{p}.ipVersion"),
                    format!("{field} ICMPv6 requires ipVersion 6"),
                );
            }
        }
    }
    // All networks of a rule must be one family, agreeing with ipVersion.
    let mut seen_v4 = false;
    let mut seen_v6 = false;
    for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
        for (field, nets, negated) in [("nets", &e.nets, false), ("notNets", &e.not_nets, true)] {
            let fp = format!("{p}.{side}.{field}");
            if nets.len() > MAX_NETS {
                v.err(
                    &fp,
                    format!("{} entries (valid: at most {MAX_NETS})", nets.len()),
                );
            }
            let mut v4 = false;
            let mut v6 = false;
            for (i, n) in nets.iter().enumerate() {
                match n {
                    IpNet::V4(_) => v4 = true,
                    IpNet::V6(_) => v6 = true,
                }
                if !cidr::is_masked(n) {
                    v.err(
                        format!("{fp}[{i}]"),
                        format!(
                            "{n} has host bits set (valid: a masked network such as {})",
                            n.trunc()
                        ),
                    );
                }
                if negated && cidr::is_catch_all(n) {
                    v.err(
                        format!("{fp}[{i}]"),
                        format!("catch-all {n} in notNets matches no traffic and is rejected"),
                    );
                }
            }
            if let Some(ipv) = r.ip_version
                && ((v4 && ipv != 4) || (v6 && ipv != 6))
            {
                v.err(
                    &fp,
                    format!("the CIDR family does not match ipVersion {ipv}"),
                );
            }
            if (v4 && (v6 || seen_v6)) || (v6 && seen_v4) {
                v.err(
                    &fp,
                    "the rule mixes IPv4 and IPv6 CIDRs (valid: one family per rule)",
                );
            }
            seen_v4 |= v4;
            seen_v6 |= v6;
        }
        entity(v, &format!("{p}.{side}"), e);
    }
    if let Some(h) = &r.http {
        if r.action != Action::Allow {
            v.err(
                format!("{p}.http"),
                "HTTP matches are only valid on Allow rules",
            );
        }
        if let Some(proto) = r.protocol
            && proto.number() != 6
        {
            v.err(
                format!("{p}.protocol"),
                "rules with an HTTP match must have protocol TCP or none",
            );
        }
        let mut seen = HashSet::new();
        for m in &h.methods {
            if !seen.insert(m) {
                v.err(
                    format!("{p}.http.methods"),
                    format!("method {m:?} is listed more than once"),
                );
            }
        }
        for (i, path) in h.paths.iter().enumerate() {
            let pp = format!("{p}.http.paths[{i}]");
            if !path.exact.is_empty() && !path.prefix.is_empty() {
                v.err(&pp, "set exactly one of exact or prefix, not both");
            }
            let val = if path.exact.is_empty() {
                &path.prefix
            } else {
                &path.exact
            };
            if val.is_empty() {
                v.err(&pp, "set exactly one of exact or prefix");
            } else if !val.starts_with('/') || val.contains(['?', '#', ' ']) {
                v.err(
                    &pp,
                    format!("invalid path {val:?} (valid: starts with '/', no '?', '#' or spaces)"),
                );
            }
        }
    }
    if let Some(m) = &r.metadata {
        v.annotations(&format!("{p}.metadata.annotations"), &m.annotations);
    }
    if r.destination.services.is_some()
        && (!r.destination.ports.is_empty() || !r.destination.not_ports.is_empty())
    {
        v.err(
            format!("{p}.destination"),
            "ports and notPorts cannot be specified with a destination service match (the service's ports are used)",
        );
    }
}

fn icmp_fields(v: &mut V, p: &str, f: &IcmpFields) {
    if f.code.is_some() && f.type_.is_none() {
        v.err(format!("{p}.code"), "an ICMP code needs an ICMP type");
    }
    if let Some(t) = f.type_
        && t > 254
    {
        v.err(
            format!("{p}.type"),
            format!("ICMP type {t} is out of range (valid: 0-254)"),
        );
    }
}

fn entity(v: &mut V, p: &str, e: &EntityRule) {
    v.selector(&format!("{p}.selector"), &e.selector, GlobalUse::Never);
    v.selector(
        &format!("{p}.notSelector"),
        &e.not_selector,
        GlobalUse::Never,
    );
    v.selector(
        &format!("{p}.namespaceSelector"),
        &e.namespace_selector,
        GlobalUse::OnlyAlone,
    );
    for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
        if ports.len() > MAX_PORTS {
            v.err(
                format!("{p}.{field}"),
                format!("{} entries (valid: at most {MAX_PORTS})", ports.len()),
            );
        }
        for (i, port) in ports.iter().enumerate() {
            let pp = format!("{p}.{field}[{i}]");
            match port {
                Port::Range { min, max } => {
                    if *min == 0 || *max == 0 {
                        v.err(pp, "port 0 is invalid (valid: port numbers 1-65535)");
                    } else if min > max {
                        v.err(
                            pp,
                            format!("port range {min}:{max} has its minimum above its maximum"),
                        );
                    }
                }
                Port::Named(n) => {
                    if let Err(e) = check_port_name(n) {
                        v.err(pp, e);
                    }
                }
            }
        }
    }
    if let Some(sa) = &e.service_accounts {
        v.selector(
            &format!("{p}.serviceAccounts.selector"),
            &sa.selector,
            GlobalUse::Never,
        );
    }
    if let Some(s) = &e.services {
        let sp = format!("{p}.services");
        if s.name.is_empty() {
            v.err(
                format!("{sp}.name"),
                "a service match must specify a service name",
            );
        }
        v.optional_name(&format!("{sp}.name"), &s.name, "service name");
        v.optional_name(&format!("{sp}.namespace"), &s.namespace, "namespace");
        if !e.namespace_selector.is_empty() {
            v.err(
                &sp,
                "cannot specify namespaceSelector and services on the same rule",
            );
        }
        if !e.selector.is_empty() || !e.not_selector.is_empty() {
            v.err(
                &sp,
                "cannot specify selector/notSelector and services on the same rule",
            );
        }
        if e.service_accounts.is_some() {
            v.err(
                &sp,
                "cannot specify serviceAccounts and services on the same rule",
            );
        }
        if !e.nets.is_empty() || !e.not_nets.is_empty() {
            v.err(
                &sp,
                "cannot specify nets/notNets and services on the same rule",
            );
        }
    }
}

fn valid_iface(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn host_endpoint(v: &mut V, s: &HostEndpointSpec) {
    if s.node.is_empty() {
        v.err("spec.node", "node must be specified");
    } else {
        v.optional_name("spec.node", &s.node, "node name");
    }
    if s.interface_name.is_empty() && s.expected_ips.is_empty() {
        v.err(
            "spec",
            "at least one of interfaceName or expectedIPs must be specified",
        );
    }
    if !s.interface_name.is_empty() && s.interface_name != "*" && !valid_iface(&s.interface_name) {
        v.err(
            "spec.interfaceName",
            format!(
                "{:?} is not a valid interface name (valid: \"*\" or 1-15 characters of [a-zA-Z0-9_.-])",
                s.interface_name
            ),
        );
    }
    v.name_list("spec.profiles", &s.profiles, "profile");
    for (i, port) in s.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        if let Err(e) = check_port_name(&port.name) {
            v.err(format!("{p}.name"), e);
        }
        if !port.protocol.supports_ports() {
            v.err(
                format!("{p}.protocol"),
                format!(
                    "protocol {} has no ports (valid: TCP, UDP, SCTP)",
                    port.protocol
                ),
            );
        }
        if port.port == 0 {
            v.err(format!("{p}.port"), "port 0 is invalid (valid: 1-65535)");
        }
    }
}

fn valid_mac(s: &str) -> bool {
    // Accepts the colon or dash forms of 6-, 8- and 20-octet addresses, and the dotted form,
    // as Go's net.ParseMAC does.
    let groups: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else {
        let g: Vec<&str> = s.split('.').collect();
        return matches!(g.len(), 3 | 4 | 10)
            && g.iter()
                .all(|x| x.len() == 4 && x.bytes().all(|b| b.is_ascii_hexdigit()));
    };
    matches!(groups.len(), 6 | 8 | 20)
        && groups
            .iter()
            .all(|x| x.len() == 2 && x.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn workload_endpoint(v: &mut V, w: &WorkloadEndpoint) {
    let s = &w.spec;
    let id = match s.orchestrator.as_str() {
        "k8s" => &s.pod,
        "cni" => &s.container_id,
        _ => &s.workload,
    };
    match names::workload_endpoint_name(&s.node, &s.orchestrator, id, &s.endpoint) {
        Ok(expected) => {
            if !w.metadata.name.is_empty() && w.metadata.name != expected {
                v.err(
                    "metadata.name",
                    format!(
                        "the WorkloadEndpoint name {:?} does not match the identifiers in its spec (valid: {expected:?})",
                        w.metadata.name
                    ),
                );
            }
        }
        Err(e) => v.err(
            "spec",
            format!("cannot compute the WorkloadEndpoint name: {e}"),
        ),
    }
    v.optional_name("spec.orchestrator", &s.orchestrator, "orchestrator");
    v.optional_name("spec.workload", &s.workload, "workload");
    v.optional_name("spec.node", &s.node, "node name");
    v.optional_name("spec.pod", &s.pod, "pod name");
    v.optional_name("spec.endpoint", &s.endpoint, "endpoint name");
    v.optional_name(
        "spec.serviceAccountName",
        &s.service_account_name,
        "service account name",
    );
    if !s.container_id.is_empty() {
        let b = s.container_id.as_bytes();
        let ok = b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            v.err(
                "spec.containerID",
                format!(
                    "{:?} is not a valid container id (valid: alphanumerics and '-')",
                    s.container_id
                ),
            );
        }
    }
    for (i, n) in s.ip_networks.iter().enumerate() {
        if n.prefix_len() != n.max_prefix_len() {
            v.err(
                format!("spec.ipNetworks[{i}]"),
                format!("{n} contains multiple addresses (valid: a single address, /32 or /128)"),
            );
        }
    }
    if let Some(gw) = s.ipv4_gateway
        && !gw.is_ipv4()
    {
        v.err("spec.ipv4Gateway", format!("{gw} is not an IPv4 address"));
    }
    if let Some(gw) = s.ipv6_gateway
        && !gw.is_ipv6()
    {
        v.err("spec.ipv6Gateway", format!("{gw} is not an IPv6 address"));
    }
    for (i, nat) in s.ip_nats.iter().enumerate() {
        let p = format!("spec.ipNATs[{i}]");
        let int = cidr::parse_ip(&nat.internal_ip);
        let ext = cidr::parse_ip(&nat.external_ip);
        if let Err(e) = &int {
            v.err(format!("{p}.internalIP"), e.clone());
        }
        if let Err(e) = &ext {
            v.err(format!("{p}.externalIP"), e.clone());
        }
        if let (Ok(a), Ok(b)) = (int, ext) {
            if a.is_ipv4() != b.is_ipv4() {
                v.err(&p, "internalIP and externalIP must be the same IP version");
            }
            if !s.ip_networks.iter().any(|n| n.contains(&a)) {
                v.err(
                    format!("{p}.internalIP"),
                    format!("{a} is not one of the endpoint's ipNetworks"),
                );
            }
        }
    }
    v.name_list("spec.profiles", &s.profiles, "profile");
    if !valid_iface(&s.interface_name) {
        v.err(
            "spec.interfaceName",
            format!(
                "{:?} is not a valid interface name (valid: 1-15 characters of [a-zA-Z0-9_.-])",
                s.interface_name
            ),
        );
    }
    if !s.mac.is_empty() && !valid_mac(&s.mac) {
        v.err(
            "spec.mac",
            format!(
                "{:?} is not a valid MAC address (valid: e.g. ca:fe:1d:52:bb:e9)",
                s.mac
            ),
        );
    }
    for (i, port) in s.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        if !port.name.is_empty()
            && let Err(e) = check_port_name(&port.name)
        {
            v.err(format!("{p}.name"), e);
        }
        if port.name.is_empty() && port.host_port == 0 {
            v.err(
                format!("{p}.name"),
                "a port needs a name unless it has a hostPort",
            );
        }
        if !port.protocol.supports_ports() {
            v.err(
                format!("{p}.protocol"),
                format!(
                    "protocol {} has no ports (valid: TCP, UDP, SCTP)",
                    port.protocol
                ),
            );
        }
        if port.port == 0 {
            v.err(format!("{p}.port"), "port 0 is invalid (valid: 1-65535)");
        }
        if !port.host_ip.is_empty() && cidr::parse_net(&port.host_ip).is_err() {
            v.err(
                format!("{p}.hostIP"),
                format!("{:?} is not a valid IP address", port.host_ip),
            );
        }
    }
}

fn netset_labels(v: &mut V, m: &ObjectMeta) {
    if m.labels.contains_key(crate::defaults::NAMESPACE_LABEL) {
        v.err(
            format!("metadata.labels.{}", crate::defaults::NAMESPACE_LABEL),
            "projectcalico.org/namespace is not a valid label name here (Calico sets it from the namespace)",
        );
    }
}

fn ip_pool(v: &mut V, s: &IpPoolSpec) {
    let Some(cidr) = s.cidr else {
        v.err(
            "spec.cidr",
            "an IPPool CIDR must be specified (e.g. 192.168.0.0/16)",
        );
        return;
    };
    if !cidr::is_masked(&cidr) {
        v.err(
            "spec.cidr",
            format!(
                "IPPool CIDR {cidr} is not strictly masked (valid: {})",
                cidr.trunc()
            ),
        );
    }
    let masked = cidr.trunc();
    let link_local: IpNet = match cidr {
        IpNet::V4(_) => "169.254.0.0/16".parse().unwrap_or(masked),
        IpNet::V6(_) => "fe80::/10".parse().unwrap_or(masked),
    };
    if cidr::overlaps(&masked, &link_local) {
        v.err(
            "spec.cidr",
            format!("IPPool CIDR {cidr} overlaps with the link-local range {link_local}"),
        );
    }
    let v4 = matches!(cidr, IpNet::V4(_));
    let default_bs = if v4 { 26 } else { 122 };
    let bs = s.block_size.unwrap_or(default_bs);
    let (lo, hi) = if v4 { (20, 32) } else { (116, 128) };
    if !(lo..=hi).contains(&bs) {
        v.err(
            "spec.blockSize",
            format!("block size {bs} is out of range (valid: 20-32 for IPv4 pools, 116-128 for IPv6 pools)"),
        );
    } else if !s.disabled && cidr.prefix_len() > bs {
        v.err(
            "spec.cidr",
            format!(
                "the pool /{} is smaller than one block /{bs}: it must be equal to or larger than the block size",
                cidr.prefix_len()
            ),
        );
    }
    if !v4 && s.ipip().enabled() {
        v.err(
            "spec.ipipMode",
            "IPIP is not supported on IPv6 pools (valid: Never)",
        );
    }
    if s.ipip().enabled() && s.vxlan().enabled() {
        v.err(
            "spec.ipipMode",
            "ipipMode and vxlanMode cannot both be enabled",
        );
    }
    let lb = s.allowed_uses.contains(&AllowedUse::LoadBalancer);
    if lb {
        if s.ipip().enabled() || s.vxlan().enabled() {
            v.err(
                "spec",
                "a LoadBalancer IP pool cannot have IPIP or VXLAN enabled",
            );
        }
        if s.allowed_uses
            .iter()
            .any(|u| *u != AllowedUse::LoadBalancer)
        {
            v.err(
                "spec.allowedUses",
                "LoadBalancer cannot be combined with Workload or Tunnel",
            );
        }
        if s.disable_bgp_export {
            v.err(
                "spec.disableBGPExport",
                "LoadBalancer IP pools cannot disable BGP export",
            );
        }
        if s.node_selector != "all()" {
            v.err(
                "spec.nodeSelector",
                "an IP pool with allowedUse LoadBalancer must have nodeSelector all()",
            );
        }
    }
    if s.allowed_uses.contains(&AllowedUse::Tunnel) && !s.namespace_selector.is_empty() {
        v.err(
            "spec.namespaceSelector",
            "an IP pool with allowedUse Tunnel cannot have a namespaceSelector",
        );
    }
    let mut seen = HashSet::new();
    for u in &s.allowed_uses {
        if !seen.insert(*u) {
            v.err("spec.allowedUses", format!("{u} is listed more than once"));
        }
    }
    v.selector("spec.nodeSelector", &s.node_selector, GlobalUse::Never);
    v.selector(
        "spec.namespaceSelector",
        &s.namespace_selector,
        GlobalUse::Never,
    );
}

fn node(v: &mut V, s: &NodeSpec) {
    if let Some(b) = &s.bgp {
        if b.is_empty() {
            v.err("spec.bgp", "spec.bgp should not be empty (omit it instead)");
        }
        if let Some(IpNet::V6(n)) = b.ipv4_address {
            v.err(
                "spec.bgp.ipv4Address",
                format!("{n} is not an IPv4 address"),
            );
        }
        if let Some(IpNet::V4(n)) = b.ipv6_address {
            v.err(
                "spec.bgp.ipv6Address",
                format!("{n} is not an IPv6 address"),
            );
        }
        for (field, val) in [
            ("ipv4IPIPTunnelAddr", &b.ipv4_ipip_tunnel_addr),
            ("routeReflectorClusterID", &b.route_reflector_cluster_id),
        ] {
            if !val.is_empty() && !matches!(val.parse::<IpAddr>(), Ok(IpAddr::V4(_))) {
                v.err(
                    format!("spec.bgp.{field}"),
                    format!("{val:?} is not an IPv4 address"),
                );
            }
        }
    }
    for (field, val, want_v4) in [
        ("ipv4VXLANTunnelAddr", &s.ipv4_vxlan_tunnel_addr, true),
        ("ipv6VXLANTunnelAddr", &s.ipv6_vxlan_tunnel_addr, false),
    ] {
        if !val.is_empty() && !matches!(val.parse::<IpAddr>(), Ok(ip) if ip.is_ipv4() == want_v4) {
            let fam = if want_v4 { "IPv4" } else { "IPv6" };
            v.err(
                format!("spec.{field}"),
                format!("{val:?} is not an {fam} address"),
            );
        }
    }
    for (field, val) in [
        ("vxlanTunnelMACAddr", &s.vxlan_tunnel_mac_addr),
        ("vxlanTunnelMACAddrV6", &s.vxlan_tunnel_mac_addr_v6),
    ] {
        if !val.is_empty() && !valid_mac(val) {
            v.err(
                format!("spec.{field}"),
                format!("{val:?} is not a valid MAC address"),
            );
        }
    }
    for (i, a) in s.addresses.iter().enumerate() {
        if cidr::parse_net(&a.address).is_err() {
            v.err(
                format!("spec.addresses[{i}].address"),
                format!("{:?} is not a valid IP or CIDR", a.address),
            );
        }
        if !a.type_.is_empty()
            && !matches!(
                a.type_.as_str(),
                "CalicoNodeIP" | "InternalIP" | "ExternalIP"
            )
        {
            v.err(
                format!("spec.addresses[{i}].type"),
                format!(
                    "{:?} is not valid (valid: CalicoNodeIP, InternalIP, ExternalIP)",
                    a.type_
                ),
            );
        }
    }
}

fn felix(v: &mut V, s: &FelixConfigurationSpec) {
    for (json, check, value) in s.checked_fields() {
        if let Some(msg) = check.apply(value) {
            v.err(format!("spec.{json}"), msg);
        }
    }
    for (field, list) in [
        ("failsafeInboundHostPorts", &s.failsafe_inbound_host_ports),
        ("failsafeOutboundHostPorts", &s.failsafe_outbound_host_ports),
    ] {
        for (i, pp) in list.iter().flatten().enumerate() {
            let p = format!("spec.{field}[{i}]");
            if !["TCP", "UDP", "SCTP"]
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&pp.protocol))
            {
                v.err(
                    format!("{p}.protocol"),
                    format!("{:?} is not valid (valid: TCP, UDP, SCTP)", pp.protocol),
                );
            }
            if !pp.net.is_empty() && cidr::parse_net(&pp.net).is_err() {
                v.err(
                    format!("{p}.net"),
                    format!("{:?} is not a valid CIDR", pp.net),
                );
            }
        }
    }
    if let Some(ranges) = &s.kube_node_port_ranges {
        if ranges.len() > 7 {
            v.err(
                "spec.kubeNodePortRanges",
                "the node port ranges list is too long (valid: at most 7)",
            );
        }
        for (i, r) in ranges.iter().enumerate() {
            if r.is_named() {
                v.err(
                    format!("spec.kubeNodePortRanges[{i}]"),
                    "node port ranges cannot contain named ports",
                );
            }
        }
    }
    if let Some(list) = &s.external_nodes_list {
        for (i, c) in list.iter().enumerate() {
            match cidr::parse_net(c) {
                Ok(IpNet::V4(_)) => {}
                Ok(IpNet::V6(_)) => v.err(
                    format!("spec.externalNodesList[{i}]"),
                    "IPv6 CIDRs are not supported here",
                ),
                Err(e) => v.err(format!("spec.externalNodesList[{i}]"), e),
            }
        }
    }
    for (field, val, fam) in [
        ("natOutgoingAddress", &s.nat_outgoing_address, None),
        (
            "deviceRouteSourceAddress",
            &s.device_route_source_address,
            Some(true),
        ),
        (
            "deviceRouteSourceAddressIPv6",
            &s.device_route_source_address_ipv6,
            Some(false),
        ),
    ] {
        if let Some(val) = val
            && !val.is_empty()
        {
            match val.parse::<IpAddr>() {
                Ok(ip) if fam.is_none_or(|v4| ip.is_ipv4() == v4) => {}
                _ => v.err(
                    format!("spec.{field}"),
                    format!("{val:?} is not a valid IP address"),
                ),
            }
        }
    }
    if let Some(region) = &s.openstack_region
        && !region.is_empty()
        && (region.len() > 63 - "openstack-region-".len() || !names::is_dns_label(region))
    {
        v.err(
            "spec.openstackRegion",
            "must be a DNS label of at most 46 characters",
        );
    }
    if s.route_table_range.is_some() && s.route_table_ranges.is_some() {
        v.err(
            "spec.routeTableRange",
            "routeTableRange and routeTableRanges cannot both be set",
        );
    }
    if let Some(r) = &s.route_table_range
        && !(r.min >= 1 && r.max >= r.min && r.max <= 250)
    {
        v.err(
            "spec.routeTableRange",
            "invalid range (valid: 1 <= min <= max <= 250)",
        );
    }
    if let Some(list) = &s.route_table_ranges {
        for (i, r) in list.iter().enumerate() {
            if !(r.min >= 1 && r.max >= r.min && r.max <= i64::from(u32::MAX)) {
                v.err(
                    format!("spec.routeTableRanges[{i}]"),
                    "invalid range (valid: 1 <= min <= max <= 4294967295)",
                );
            }
        }
    }
    if let Some(list) = &s.health_timeout_overrides {
        for (i, o) in list.iter().enumerate() {
            if !is_duration(&o.timeout) {
                v.err(
                    format!("spec.healthTimeoutOverrides[{i}].timeout"),
                    format!("{:?} is not a valid duration", o.timeout),
                );
            }
        }
    }
    for (field, port) in [
        ("healthPort", s.health_port),
        ("prometheusMetricsPort", s.prometheus_metrics_port),
        ("vxlanPort", s.vxlan_port),
    ] {
        if let Some(p) = port
            && !(1..=65535).contains(&p)
        {
            v.err(
                format!("spec.{field}"),
                format!("{p} is out of range (valid: 1-65535)"),
            );
        }
    }
    if let Some(selector) = &s.node_selector {
        v.selector("spec.nodeSelector", selector, GlobalUse::Never);
    }
}

fn community_ok(value: &str) -> bool {
    let parts: Vec<&str> = value.split(':').collect();
    match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    }
}

fn bgp_configuration(v: &mut V, s: &BgpConfigurationSpec) {
    if !s.log_severity_screen.is_empty()
        && !["Trace", "Debug", "Info", "Warning", "Error", "Fatal"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(&s.log_severity_screen))
    {
        v.err(
            "spec.logSeverityScreen",
            format!(
                "{:?} is not valid (valid: Trace, Debug, Info, Warning, Error, Fatal)",
                s.log_severity_screen
            ),
        );
    }
    if s.listen_port == Some(0) {
        v.err("spec.listenPort", "port 0 is invalid (valid: 1-65535)");
    }
    for (i, c) in s.communities.iter().enumerate() {
        if c.name.is_empty() || !names::is_dns_subdomain(&c.name) {
            v.err(
                format!("spec.communities[{i}].name"),
                "a community needs a lower-case DNS name",
            );
        }
        if !community_ok(&c.value) {
            v.err(
                format!("spec.communities[{i}].value"),
                format!("{:?} is not a valid community (valid: aa:nn with 16-bit parts, or aa:nn:mm with 32-bit parts)", c.value),
            );
        }
    }
    if !s.communities.is_empty() && s.prefix_advertisements.is_empty() {
        v.err(
            "spec.communities",
            "communities are defined but not used in prefixAdvertisements",
        );
    }
    for (i, pa) in s.prefix_advertisements.iter().enumerate() {
        if pa.cidr.is_none() {
            v.err(
                format!("spec.prefixAdvertisements[{i}].cidr"),
                "a CIDR is required",
            );
        }
        for (j, c) in pa.communities.iter().enumerate() {
            if !community_ok(c) && !s.communities.iter().any(|d| &d.name == c) {
                v.err(
                    format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                    format!(
                        "{c:?} is neither a community value nor the name of a defined community"
                    ),
                );
            }
        }
    }
    if s.node_to_node_mesh_enabled == Some(false) {
        if s.node_mesh_password.is_some() {
            v.err(
                "spec.nodeMeshPassword",
                "cannot be set when nodeToNodeMeshEnabled is false",
            );
        }
        if s.node_mesh_max_restart_time.is_some() {
            v.err(
                "spec.nodeMeshMaxRestartTime",
                "cannot be set when nodeToNodeMeshEnabled is false",
            );
        }
    }
    if let Some(d) = &s.node_mesh_max_restart_time
        && !is_duration(d)
    {
        v.err(
            "spec.nodeMeshMaxRestartTime",
            format!("{d:?} is not a valid duration"),
        );
    }
}

fn peer_ip_ok(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return sa.port() != 0;
    }
    false
}

fn bgp_peer(v: &mut V, s: &BgpPeerSpec) {
    v.optional_name("spec.node", &s.node, "node name");
    if !s.node.is_empty() && !s.node_selector.is_empty() {
        v.err("spec.node", "node and nodeSelector cannot both be set");
    }
    if !s.peer_ip.is_empty() && !s.peer_selector.is_empty() {
        v.err("spec.peerIP", "peerIP and peerSelector cannot both be set");
    }
    if !s.peer_ip.is_empty() && !peer_ip_ok(&s.peer_ip) {
        v.err(
            "spec.peerIP",
            format!(
                "{:?} is not valid (valid: an IP, <IPv4>:<port> or [<IPv6>]:<port>)",
                s.peer_ip
            ),
        );
    }
    let asn = s.as_number.map(|a| a.0).unwrap_or(0);
    if asn != 0 && !s.peer_selector.is_empty() {
        v.err(
            "spec.asNumber",
            "asNumber must be empty when peerSelector is set",
        );
    }
    if !s.local_workload_selector.is_empty() {
        if asn == 0 {
            v.err(
                "spec.asNumber",
                "asNumber is required when localWorkloadSelector is set",
            );
        }
        if !s.peer_ip.is_empty() {
            v.err(
                "spec.peerIP",
                "peerIP must be empty when localWorkloadSelector is set",
            );
        }
        if !s.peer_selector.is_empty() {
            v.err(
                "spec.peerSelector",
                "peerSelector must be empty when localWorkloadSelector is set",
            );
        }
    }
    if !s.reachable_by.is_empty() {
        if s.peer_ip.is_empty() {
            v.err(
                "spec.reachableBy",
                "reachableBy must be empty when peerIP is empty",
            );
        } else if s.reachable_by.parse::<IpAddr>().is_err() {
            v.err(
                "spec.reachableBy",
                format!("{:?} is not a valid IP address", s.reachable_by),
            );
        }
    }
    if s.keep_original_next_hop && s.next_hop_mode.is_some() {
        v.err(
            "spec.keepOriginalNextHop",
            "keepOriginalNextHop and nextHopMode cannot both be set; use nextHopMode",
        );
    }
    v.name_list("spec.filters", &s.filters, "BGPFilter");
    for (field, sel) in [
        ("nodeSelector", &s.node_selector),
        ("peerSelector", &s.peer_selector),
        ("localWorkloadSelector", &s.local_workload_selector),
    ] {
        v.selector(&format!("spec.{field}"), sel, GlobalUse::Never);
    }
    for (field, d) in [
        ("maxRestartTime", &s.max_restart_time),
        ("keepaliveTime", &s.keepalive_time),
    ] {
        if let Some(d) = d
            && !is_duration(d)
        {
            v.err(
                format!("spec.{field}"),
                format!("{d:?} is not a valid duration"),
            );
        }
    }
    if !s.source_address.is_empty() && !matches!(s.source_address.as_str(), "UseNodeIP" | "None") {
        v.err(
            "spec.sourceAddress",
            format!(
                "{:?} is not valid (valid: UseNodeIP, None)",
                s.source_address
            ),
        );
    }
}

/// The most operations one BGPFilter rule may have (Calico's CRD limit).
pub const MAX_BGP_FILTER_OPERATIONS: usize = 10;

fn bgp_filter(v: &mut V, s: &BgpFilterSpec) {
    for (field, rules, v6) in [
        ("exportV4", &s.export_v4, false),
        ("importV4", &s.import_v4, false),
        ("exportV6", &s.export_v6, true),
        ("importV6", &s.import_v6, true),
    ] {
        for (i, r) in rules.iter().enumerate() {
            bgp_filter_rule(v, &format!("spec.{field}[{i}]"), r, v6);
        }
    }
}

fn valid_filter_interface(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*' | b'-'))
}

fn bgp_filter_rule(v: &mut V, at: &str, r: &BgpFilterRule, v6: bool) {
    let (family, top, example) = if v6 {
        ("IPv6", 128, "fd00:10::/64")
    } else {
        ("IPv4", 32, "10.0.0.0/8")
    };
    if !r.cidr.is_empty() {
        match r.cidr.parse::<IpNet>() {
            Ok(n) if n.addr().is_ipv6() == v6 => {}
            _ => v.err(
                format!("{at}.cidr"),
                format!(
                    "{:?} is not an {family} CIDR (valid: e.g. {example})",
                    r.cidr
                ),
            ),
        }
    }
    if r.cidr.is_empty() != r.match_operator.is_none() {
        let missing = if r.cidr.is_empty() {
            "cidr"
        } else {
            "matchOperator"
        };
        v.err(
            format!("{at}.{missing}"),
            "cidr and matchOperator must both be set or both be empty",
        );
    }
    if let Some(pl) = &r.prefix_length {
        if r.cidr.is_empty() {
            v.err(
                format!("{at}.prefixLength"),
                "cidr is required when prefixLength is set",
            );
        }
        for (f, n) in [("min", pl.min), ("max", pl.max)] {
            if let Some(n) = n
                && !(0..=top).contains(&n)
            {
                v.err(
                    format!("{at}.prefixLength.{f}"),
                    format!("{n} is out of range (valid: 0-{top})"),
                );
            }
        }
        // Calico's validator checks each bound alone; BIRD refuses an empty range
        // (`{30,20}`), which would stop every later configuration of the node from loading.
        if let (Some(min), Some(max)) = (pl.min, pl.max)
            && min > max
        {
            v.err(
                format!("{at}.prefixLength.min"),
                format!("min {min} is greater than max {max} (valid: min <= max, a range of prefix lengths BIRD accepts)"),
            );
        }
    }
    if !r.interface.is_empty() && !valid_filter_interface(&r.interface) {
        v.err(
            format!("{at}.interface"),
            format!(
                "{:?} is not valid (valid: 1-15 characters of letters, digits, '_', '.', '-', and '*' as a wildcard)",
                r.interface
            ),
        );
    }
    if let Some(c) = &r.communities {
        if c.values.len() != 1 {
            v.err(
                format!("{at}.communities.values"),
                format!("{} values given (valid: exactly one)", c.values.len()),
            );
        }
        for (i, val) in c.values.iter().enumerate() {
            if !community_ok(val) {
                v.err(
                    format!("{at}.communities.values[{i}]"),
                    format!("{val:?} is not a valid community (valid: aa:nn with 16-bit parts, or aa:nn:mm with 32-bit parts)"),
                );
            }
        }
    }
    if let Some(p) = r.priority
        && !(1..=MAX_BGP_FILTER_PRIORITY).contains(&p)
    {
        v.err(
            format!("{at}.priority"),
            format!("{p} is out of range (valid: 1-{MAX_BGP_FILTER_PRIORITY})"),
        );
    }
    if !r.operations.is_empty() && r.action != BgpFilterAction::Accept {
        v.err(
            format!("{at}.operations"),
            "operations may only be used with action Accept",
        );
    }
    if r.operations.len() > MAX_BGP_FILTER_OPERATIONS {
        v.err(
            format!("{at}.operations"),
            format!(
                "{} operations (valid: at most {MAX_BGP_FILTER_OPERATIONS})",
                r.operations.len()
            ),
        );
    }
    for (i, op) in r.operations.iter().enumerate() {
        let at = format!("{at}.operations[{i}]");
        let set = usize::from(op.add_community.is_some())
            + usize::from(op.prepend_as_path.is_some())
            + usize::from(op.set_priority.is_some());
        if set != 1 {
            v.err(
                at.clone(),
                "exactly one operation must be set (valid: addCommunity, prependASPath or setPriority)",
            );
        }
        if let Some(c) = &op.add_community
            && !community_ok(&c.value)
        {
            v.err(
                format!("{at}.addCommunity.value"),
                format!("{:?} is not a valid community (valid: aa:nn with 16-bit parts, or aa:nn:mm with 32-bit parts)", c.value),
            );
        }
        if let Some(p) = &op.prepend_as_path
            && p.prefix.is_empty()
        {
            v.err(
                format!("{at}.prependASPath.prefix"),
                "give at least one AS number",
            );
        }
        if let Some(p) = &op.set_priority
            && !(1..=MAX_BGP_FILTER_PRIORITY).contains(&p.value)
        {
            v.err(
                format!("{at}.setPriority.value"),
                format!(
                    "{} is out of range (valid: 1-{MAX_BGP_FILTER_PRIORITY})",
                    p.value
                ),
            );
        }
    }
}

fn block_affinity(v: &mut V, s: &BlockAffinitySpec) {
    if s.node.is_empty() {
        v.err("spec.node", "a node name is required");
    }
    if s.cidr.parse::<IpNet>().is_err() {
        v.err(
            "spec.cidr",
            format!("{:?} is not a CIDR (valid: e.g. 10.244.0.0/26)", s.cidr),
        );
    }
    if !BLOCK_AFFINITY_STATES.contains(&s.state.as_str()) {
        v.err(
            "spec.state",
            format!(
                "{:?} is not valid (valid: confirmed, pending, pendingDeletion)",
                s.state
            ),
        );
    }
}
