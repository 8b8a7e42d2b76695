//! BGPFilters (the model's [`BgpFilter`], validated there) rendered as the BIRD functions
//! confd writes (`'bgp_<name>_importFilterV4'` ...) and called from the sessions of the
//! BGPPeers that name them.

use std::fmt::Write as _;

use gingham_model::{
    BgpFilter, BgpFilterAction, BgpFilterMatchOperator, BgpFilterPeerType, BgpFilterRule,
};
use ipnet::IpNet;

use crate::view::BIRD_INT_MAX;

/// BIRD's longest symbol.
const MAX_BIRD_SYMBOL: usize = 64;

fn community_parts(v: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = v.split(':').collect();
    (parts.len() == 2 || parts.len() == 3).then_some(parts)
}

/// The BIRD statement of one rule (validated input).
fn statement(rule: &BgpFilterRule, v6: bool) -> String {
    let r = rule;
    {
        let mut conds = Vec::new();
        if !r.cidr.is_empty() {
            let op = match r.match_operator {
                Some(BgpFilterMatchOperator::Equal) => "=",
                Some(BgpFilterMatchOperator::NotEqual) => "!=",
                Some(BgpFilterMatchOperator::In) => "~",
                _ => "!~",
            };
            let target = match (&r.prefix_length, r.cidr.parse::<IpNet>()) {
                (Some(pl), Ok(n)) => {
                    let top = if v6 { 128 } else { 32 };
                    let lo = pl.min.map_or(i32::from(n.prefix_len()), |m| {
                        m.max(i32::from(n.prefix_len()))
                    });
                    let hi = pl.max.map_or(top, |m| m.min(top));
                    format!("[ {}{{{lo},{hi}}} ]", r.cidr)
                }
                _ => r.cidr.clone(),
            };
            conds.push(format!("(net {op} {target})"));
        }
        if r.source.is_some() {
            conds.push("((defined(source))&&(source ~ [ RTS_BGP ]))".to_string());
        }
        if !r.interface.is_empty() {
            conds.push(format!(
                "((defined(ifname))&&(ifname ~ \"{}\"))",
                r.interface
            ));
        }
        if let Some(parts) = r
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
        if !r.as_path_prefix.is_empty() {
            let asns: Vec<String> = r.as_path_prefix.iter().map(|a| a.to_string()).collect();
            conds.push(format!("(bgp_path ~ [= {} * =])", asns.join(" ")));
        }
        if let Some(p) = r.priority {
            conds.push(format!(
                "(defined(bgp_local_pref)&&(bgp_local_pref = {}))",
                BIRD_INT_MAX - p
            ));
        }
        let mut body = Vec::new();
        for op in &r.operations {
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
        body.push(
            match r.action {
                BgpFilterAction::Accept => "accept;",
                BgpFilterAction::Reject => "reject;",
            }
            .to_string(),
        );
        let body = body.join(" ");
        let rule = if conds.is_empty() {
            body
        } else {
            format!("if ({}) then {{ {body} }}", conds.join("&&"))
        };
        match r.peer_type {
            Some(BgpFilterPeerType::Ibgp) => format!("if (is_same_as) then {{ {rule} }}"),
            Some(BgpFilterPeerType::Ebgp) => format!("if (!is_same_as) then {{ {rule} }}"),
            None => rule,
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

/// The call of `filter`'s function in a session's import or export filter, if it has rules
/// for that direction and family.
pub(crate) fn call(filter: &BgpFilter, import: bool, version: u8, same_as: bool) -> Option<String> {
    {
        let rules = filter.spec.rules(import, version == 6);
        if rules.is_empty() {
            return None;
        }
        let dir = if import { "import" } else { "export" };
        let name = format!(
            "'bgp_{}_{dir}FilterV{version}'",
            symbol_name(&filter.metadata.name)
        );
        Some(if rules.iter().any(|r| r.peer_type.is_some()) {
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
            .map(|(d, imp)| (d, f.spec.rules(imp, version == 6)))
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
            if rules.iter().any(|r| r.peer_type.is_some()) {
                lines.push(format!("function {name}(bool is_same_as) {{"));
            } else {
                lines.push(format!("function {name}() {{"));
            }
            for r in rules {
                lines.push(format!("  {}", statement(r, version == 6)));
            }
            lines.push("}".to_string());
        }
    }
    if lines.is_empty() {
        lines.push(format!("# No v{version} BGPFilters configured"));
    }
    lines
}
