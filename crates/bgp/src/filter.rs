//! BGPFilter (`projectcalico.org/v3`): import and export rules of BGP sessions, rendered as the
//! BIRD functions confd writes (`'bgp_<name>_importFilterV4'` ...) and called from the
//! sessions of the BGPPeers that name them.

use std::fmt::Write as _;

use gingham_model::AsNumber;
use ipnet::IpNet;
use serde::Deserialize;

use crate::view::BIRD_INT_MAX;

/// BIRD's longest symbol.
const MAX_BIRD_SYMBOL: usize = 64;

/// A BGPFilter resource.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilter {
    /// `projectcalico.org/v3`.
    #[serde(default, rename = "apiVersion")]
    pub api_version: String,
    /// `BGPFilter`.
    #[serde(default)]
    pub kind: String,
    /// Metadata (only the name is used).
    #[serde(default)]
    pub metadata: gingham_model::ObjectMeta,
    /// Specification.
    #[serde(default)]
    pub spec: BgpFilterSpec,
}

/// The rules of a [`BgpFilter`], per direction and family.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpFilterSpec {
    /// Rules for IPv4 routes sent to peers.
    #[serde(default, rename = "exportV4")]
    pub export_v4: Vec<BgpFilterRule>,
    /// Rules for IPv4 routes received from peers.
    #[serde(default, rename = "importV4")]
    pub import_v4: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes sent to peers.
    #[serde(default, rename = "exportV6")]
    pub export_v6: Vec<BgpFilterRule>,
    /// Rules for IPv6 routes received from peers.
    #[serde(default, rename = "importV6")]
    pub import_v6: Vec<BgpFilterRule>,
}

/// One rule: match conditions, operations and an action.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpFilterRule {
    /// The network routes are compared with (with `matchOperator`).
    #[serde(default)]
    pub cidr: String,
    /// Prefix lengths accepted inside `cidr`.
    #[serde(default)]
    pub prefix_length: Option<PrefixLength>,
    /// `RemotePeers`: routes learned from BGP peers.
    #[serde(default)]
    pub source: String,
    /// Routes out of interfaces matching this pattern.
    #[serde(default)]
    pub interface: String,
    /// `Equal`, `NotEqual`, `In`, `NotIn`.
    #[serde(default)]
    pub match_operator: String,
    /// `eBGP` or `iBGP`: only on such sessions.
    #[serde(default)]
    pub peer_type: String,
    /// Routes carrying this community.
    #[serde(default)]
    pub communities: Option<CommunityMatch>,
    /// Routes whose AS path starts with these AS numbers.
    #[serde(default, rename = "asPathPrefix")]
    pub as_path_prefix: Vec<AsNumber>,
    /// Routes with this priority (kernel metric).
    #[serde(default)]
    pub priority: Option<i64>,
    /// `Accept` or `Reject`.
    #[serde(default)]
    pub action: String,
    /// Changes made to matching routes before the action.
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// `prefixLength` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest prefix.
    #[serde(default)]
    pub min: Option<i32>,
    /// Longest prefix.
    #[serde(default)]
    pub max: Option<i32>,
}

/// `communities` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunityMatch {
    /// One community value (`aa:nn` or `aa:nn:mm`).
    #[serde(default)]
    pub values: Vec<String>,
}

/// One operation of a rule; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// Add a community.
    #[serde(default)]
    pub add_community: Option<ValueOf<String>>,
    /// Prepend AS numbers to the path.
    #[serde(default, rename = "prependASPath")]
    pub prepend_as_path: Option<Prefix>,
    /// Set the priority.
    #[serde(default)]
    pub set_priority: Option<ValueOf<i64>>,
}

/// `{value: ...}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueOf<T> {
    /// The value.
    pub value: T,
}

/// `{prefix: [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefix {
    /// AS numbers.
    pub prefix: Vec<AsNumber>,
}

fn community_parts(v: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = v.split(':').collect();
    ((parts.len() == 2 || parts.len() == 3)
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    .then_some(parts)
}

fn priority_ok(p: i64) -> bool {
    (1..=2_147_483_646).contains(&p)
}

impl BgpFilter {
    /// Every problem with the filter, as `field: what is wrong (valid: ...)`.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.metadata.name.is_empty() {
            out.push("metadata.name: required".to_string());
        }
        for (field, rules, v6) in [
            ("spec.exportV4", &self.spec.export_v4, false),
            ("spec.importV4", &self.spec.import_v4, false),
            ("spec.exportV6", &self.spec.export_v6, true),
            ("spec.importV6", &self.spec.import_v6, true),
        ] {
            for (i, r) in rules.iter().enumerate() {
                r.validate(&format!("{field}[{i}]"), v6, &mut out);
            }
        }
        out
    }
}

impl BgpFilterRule {
    fn validate(&self, at: &str, v6: bool, out: &mut Vec<String>) {
        if !matches!(self.action.as_str(), "Accept" | "Reject") {
            out.push(format!(
                "{at}.action: {:?} is not valid (valid: Accept, Reject)",
                self.action
            ));
        }
        let family = if v6 { "IPv6" } else { "IPv4" };
        if !self.cidr.is_empty() {
            match self.cidr.parse::<IpNet>() {
                Ok(n) if n.addr().is_ipv6() == v6 => {}
                _ => out.push(format!(
                    "{at}.cidr: {:?} is not an {family} CIDR",
                    self.cidr
                )),
            }
        }
        if self.cidr.is_empty() != self.match_operator.is_empty() {
            out.push(format!(
                "{at}: cidr and matchOperator must be given together"
            ));
        }
        if !self.match_operator.is_empty()
            && !matches!(
                self.match_operator.as_str(),
                "Equal" | "NotEqual" | "In" | "NotIn"
            )
        {
            out.push(format!(
                "{at}.matchOperator: {:?} is not valid (valid: Equal, NotEqual, In, NotIn)",
                self.match_operator
            ));
        }
        if let Some(pl) = &self.prefix_length {
            let top = if v6 { 128 } else { 32 };
            if self.cidr.is_empty() {
                out.push(format!("{at}.prefixLength: needs a cidr"));
            }
            for (f, v) in [("min", pl.min), ("max", pl.max)] {
                if let Some(v) = v
                    && !(0..=top).contains(&v)
                {
                    out.push(format!(
                        "{at}.prefixLength.{f}: {v} is out of range (valid: 0-{top})"
                    ));
                }
            }
        }
        if !self.source.is_empty() && self.source != "RemotePeers" {
            out.push(format!(
                "{at}.source: {:?} is not valid (valid: RemotePeers)",
                self.source
            ));
        }
        if !self.peer_type.is_empty() && !matches!(self.peer_type.as_str(), "eBGP" | "iBGP") {
            out.push(format!(
                "{at}.peerType: {:?} is not valid (valid: eBGP, iBGP)",
                self.peer_type
            ));
        }
        if self.interface.contains('"') {
            out.push(format!("{at}.interface: must not contain a quote"));
        }
        if let Some(c) = &self.communities
            && (c.values.len() != 1 || community_parts(&c.values[0]).is_none())
        {
            out.push(format!(
                "{at}.communities.values: give exactly one community (valid: aa:nn or aa:nn:mm)"
            ));
        }
        if let Some(p) = self.priority
            && !priority_ok(p)
        {
            out.push(format!(
                "{at}.priority: {p} is out of range (valid: 1-2147483646)"
            ));
        }
        for (i, op) in self.operations.iter().enumerate() {
            let at = format!("{at}.operations[{i}]");
            let set = usize::from(op.add_community.is_some())
                + usize::from(op.prepend_as_path.is_some())
                + usize::from(op.set_priority.is_some());
            if set != 1 {
                out.push(format!(
                    "{at}: set exactly one of addCommunity, prependASPath, setPriority"
                ));
            }
            if let Some(c) = &op.add_community
                && community_parts(&c.value).is_none()
            {
                out.push(format!(
                    "{at}.addCommunity.value: {:?} is not a community (valid: aa:nn or aa:nn:mm)",
                    c.value
                ));
            }
            if let Some(p) = &op.set_priority
                && !priority_ok(p.value)
            {
                out.push(format!(
                    "{at}.setPriority.value: {} is out of range (valid: 1-2147483646)",
                    p.value
                ));
            }
        }
    }

    /// The BIRD statement of the rule (validated input).
    fn statement(&self, v6: bool) -> String {
        let mut conds = Vec::new();
        if !self.cidr.is_empty() {
            let op = match self.match_operator.as_str() {
                "Equal" => "=",
                "NotEqual" => "!=",
                "In" => "~",
                _ => "!~",
            };
            let target = match (&self.prefix_length, self.cidr.parse::<IpNet>()) {
                (Some(pl), Ok(n)) => {
                    let top = if v6 { 128 } else { 32 };
                    let lo = pl.min.map_or(i32::from(n.prefix_len()), |m| {
                        m.max(i32::from(n.prefix_len()))
                    });
                    let hi = pl.max.map_or(top, |m| m.min(top));
                    format!("[ {}{{{lo},{hi}}} ]", self.cidr)
                }
                _ => self.cidr.clone(),
            };
            conds.push(format!("(net {op} {target})"));
        }
        if !self.source.is_empty() {
            conds.push("((defined(source))&&(source ~ [ RTS_BGP ]))".to_string());
        }
        if !self.interface.is_empty() {
            conds.push(format!(
                "((defined(ifname))&&(ifname ~ \"{}\"))",
                self.interface
            ));
        }
        if let Some(parts) = self
            .communities
            .as_ref()
            .and_then(|c| c.values.first())
            .and_then(|v| community_parts(v))
        {
            conds.push(if parts.len() == 2 {
                format!("(({}, {}) ~ bgp_community)", parts[0], parts[1])
            } else {
                format!(
                    "(({}, {}, {}) ~ bgp_large_community)",
                    parts[0], parts[1], parts[2]
                )
            });
        }
        if !self.as_path_prefix.is_empty() {
            let asns: Vec<String> = self.as_path_prefix.iter().map(|a| a.to_string()).collect();
            conds.push(format!("(bgp_path ~ [= {} * =])", asns.join(" ")));
        }
        if let Some(p) = self.priority {
            conds.push(format!(
                "(defined(bgp_local_pref)&&(bgp_local_pref = {}))",
                BIRD_INT_MAX - p
            ));
        }
        let mut body = Vec::new();
        for op in &self.operations {
            if let Some(parts) = op
                .add_community
                .as_ref()
                .and_then(|c| community_parts(&c.value))
            {
                body.push(if parts.len() == 2 {
                    format!("bgp_community.add(({}, {}));", parts[0], parts[1])
                } else {
                    format!(
                        "bgp_large_community.add(({}, {}, {}));",
                        parts[0], parts[1], parts[2]
                    )
                });
            } else if let Some(p) = &op.prepend_as_path {
                // BIRD prepends one at a time: the last prepended ends up first.
                for a in p.prefix.iter().rev() {
                    body.push(format!("bgp_path.prepend({a});"));
                }
            } else if let Some(p) = &op.set_priority {
                body.push(format!("bgp_local_pref = {};", BIRD_INT_MAX - p.value));
            }
        }
        body.push(format!("{};", self.action.to_lowercase()));
        let body = body.join(" ");
        let rule = if conds.is_empty() {
            body
        } else {
            format!("if ({}) then {{ {body} }}", conds.join("&&"))
        };
        match self.peer_type.as_str() {
            "iBGP" => format!("if (is_same_as) then {{ {rule} }}"),
            "eBGP" => format!("if (!is_same_as) then {{ {rule} }}"),
            _ => rule,
        }
    }
}

/// `name`, or (when too long for a BIRD symbol with the fixed parts of the function name) its
/// start, `_` and the first 16 upper-case hex digits of its SHA-256.
fn symbol_name(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let max = MAX_BIRD_SYMBOL - "bgp__importFilterV4".len();
    if name.len() <= max {
        return name.to_string();
    }
    let hash = Sha256::digest(name.as_bytes());
    let mut hex = String::new();
    for b in hash.iter().take(8) {
        let _ = write!(hex, "{b:02X}");
    }
    let keep = max - 17;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hex}", &name[..cut])
}

impl BgpFilter {
    fn rules(&self, import: bool, version: u8) -> &[BgpFilterRule] {
        match (import, version) {
            (true, 4) => &self.spec.import_v4,
            (false, 4) => &self.spec.export_v4,
            (true, _) => &self.spec.import_v6,
            (false, _) => &self.spec.export_v6,
        }
    }

    /// The call of this filter's function in a session's import or export filter, if it has
    /// rules for that direction and family.
    pub(crate) fn call(&self, import: bool, version: u8, same_as: bool) -> Option<String> {
        let rules = self.rules(import, version);
        if rules.is_empty() {
            return None;
        }
        let dir = if import { "import" } else { "export" };
        let name = format!(
            "'bgp_{}_{dir}FilterV{version}'",
            symbol_name(&self.metadata.name)
        );
        Some(if rules.iter().any(|r| !r.peer_type.is_empty()) {
            format!("{name}({same_as});")
        } else {
            format!("{name}();")
        })
    }
}

/// The lines of the "BGP Filters" section: one function per filter and direction with rules
/// for `version`, filters in name order.
pub(crate) fn functions(filters: &[&BgpFilter], version: u8) -> Vec<String> {
    let mut lines = Vec::new();
    for f in filters {
        let dirs: Vec<(&str, &[BgpFilterRule])> = [("import", true), ("export", false)]
            .into_iter()
            .map(|(d, imp)| (d, f.rules(imp, version)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        if dirs.is_empty() {
            continue;
        }
        lines.push(format!("# v{version} BGPFilter {}", f.metadata.name));
        for (dir, rules) in dirs {
            let name = format!(
                "'bgp_{}_{dir}FilterV{version}'",
                symbol_name(&f.metadata.name)
            );
            if rules.iter().any(|r| !r.peer_type.is_empty()) {
                lines.push(format!("function {name}(bool is_same_as) {{"));
            } else {
                lines.push(format!("function {name}() {{"));
            }
            for r in rules {
                lines.push(format!("  {}", r.statement(version == 6)));
            }
            lines.push("}".to_string());
        }
    }
    if lines.is_empty() {
        lines.push(format!("# No v{version} BGPFilters configured"));
    }
    lines
}
