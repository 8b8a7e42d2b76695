//! Hit counters of policy rules, from the agents' /metrics (`gingham_rule_packets_total`,
//! `gingham_rule_bytes_total`), summed across the nodes that answered: `get -o wide`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Result, bail};
use gingham_agent::health::{RULE_BYTES, RULE_COUNTERS_READ, RULE_PACKETS};

/// One policy rule, as the agents label it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleKey {
    /// `networkpolicy`, `globalnetworkpolicy`...
    pub kind: String,
    /// `namespace/name` or `name`.
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub rule: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of the nodes that answered, and why the others did not.
#[derive(Debug, Default)]
pub struct NodeHits {
    pub answered: Vec<String>,
    pub missing: Vec<(String, String)>,
    pub hits: BTreeMap<RuleKey, Hits>,
}

impl NodeHits {
    /// The rule's hits summed over the nodes that answered; `None` when none did.
    pub fn get(&self, key: &RuleKey) -> Option<Hits> {
        if self.answered.is_empty() {
            return None;
        }
        Some(self.hits.get(key).copied().unwrap_or_default())
    }

    /// What a reader must know about where the numbers come from (for stderr), if anything.
    pub fn note(&self) -> Option<String> {
        if self.missing.is_empty() {
            return None;
        }
        let why: Vec<String> = self
            .missing
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        Some(if self.answered.is_empty() {
            format!(
                "hit counters unavailable (shown as -): no agent answered ({})",
                why.join("; ")
            )
        } else {
            format!(
                "hit counters are from {} of {} nodes; missing {}",
                self.answered.len(),
                self.answered.len() + self.missing.len(),
                why.join("; ")
            )
        })
    }

    fn add(&mut self, node: String, metrics: Result<String>) {
        match metrics.and_then(|t| parse(&t)) {
            Ok(hits) => {
                for (k, h) in hits {
                    let total = self.hits.entry(k).or_default();
                    total.packets += h.packets;
                    total.bytes += h.bytes;
                }
                self.answered.push(node);
            }
            Err(e) => self.missing.push((node, format!("{e:#}"))),
        }
    }
}

/// From every node of the lab at `dir`.
pub fn from_lab(dir: &Path) -> Result<NodeHits> {
    let mut out = NodeHits::default();
    for (node, metrics) in crate::lab::agents_metrics(dir)? {
        out.add(node, metrics);
    }
    Ok(out)
}

/// From the agent of this node, on 127.0.0.1:`port`.
pub fn from_local(port: u16) -> NodeHits {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut out = NodeHits::default();
    let metrics = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(gingham_health::http_get(addr, "/metrics")?))
        .map_err(|e| anyhow::anyhow!("the agent does not answer on {addr}: {e}"));
    out.add("this node".into(), metrics);
    out
}

/// The rule counters in an agent's /metrics. An error when the agent could not read them (or
/// is too old to have them): absent counters are not zeros.
pub fn parse(text: &str) -> Result<BTreeMap<RuleKey, Hits>> {
    let read = text.lines().find_map(|l| {
        l.strip_prefix(RULE_COUNTERS_READ)?
            .strip_prefix(' ')?
            .trim()
            .parse::<f64>()
            .ok()
    });
    match read {
        None => bail!("the agent does not report hit counters ({RULE_COUNTERS_READ})"),
        Some(v) if v != 1.0 => {
            bail!("the agent could not read its rules' counters (see its log)")
        }
        Some(_) => {}
    }
    let packets = format!("{RULE_PACKETS}_total{{");
    let bytes = format!("{RULE_BYTES}_total{{");
    let mut out: BTreeMap<RuleKey, Hits> = BTreeMap::new();
    for line in text.lines() {
        let (rest, is_packets) = match (line.strip_prefix(&packets), line.strip_prefix(&bytes)) {
            (Some(r), _) => (r, true),
            (_, Some(r)) => (r, false),
            _ => continue,
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            bail!("unreadable metric line {line:?}");
        };
        let labels =
            parse_labels(labels).ok_or_else(|| anyhow::anyhow!("unreadable labels in {line:?}"))?;
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let key = RuleKey {
            kind: label("kind"),
            policy: label("policy"),
            direction: label("direction"),
            rule: label("rule")
                .parse()
                .map_err(|_| anyhow::anyhow!("rule is not a number in {line:?}"))?,
        };
        let value: u64 = value
            .trim()
            .parse::<f64>()
            .map(|v| v as u64)
            .map_err(|_| anyhow::anyhow!("unreadable value in {line:?}"))?;
        let h = out.entry(key).or_default();
        if is_packets {
            h.packets = value;
        } else {
            h.bytes = value;
        }
    }
    Ok(out)
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escapes).
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        };
        out.insert(key.to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rule_counters_and_refuses_missing_ones() {
        let text = "HTTP/1.1 200 OK\r\n\r\n# TYPE gingham_rule_counters_read gauge\n\
            gingham_rule_counters_read 1\n\
            gingham_rule_packets_total{kind=\"networkpolicy\",tier=\"default\",policy=\"default/web\",rule=\"1\",direction=\"ingress\"} 12\n\
            gingham_rule_bytes_total{kind=\"networkpolicy\",tier=\"default\",policy=\"default/web\",rule=\"1\",direction=\"ingress\"} 720\n\
            # EOF\n";
        let hits = parse(text).unwrap();
        let key = RuleKey {
            kind: "networkpolicy".into(),
            policy: "default/web".into(),
            direction: "ingress".into(),
            rule: 1,
        };
        assert_eq!(
            hits,
            BTreeMap::from([(
                key.clone(),
                Hits {
                    packets: 12,
                    bytes: 720
                }
            )])
        );
        let err = parse(&text.replace("read 1", "read 0")).unwrap_err();
        assert!(err.to_string().contains("could not read"), "{err}");
        assert!(parse("x 1\n").is_err());
        let mut nodes = NodeHits::default();
        assert_eq!(nodes.get(&key), None);
        nodes.add("a".into(), Ok(text.into()));
        nodes.add("b".into(), Ok(text.into()));
        nodes.add("c".into(), Err(anyhow::anyhow!("down")));
        assert_eq!(nodes.get(&key).map(|h| h.packets), Some(24));
        assert_eq!(
            nodes.note().as_deref(),
            Some("hit counters are from 2 of 3 nodes; missing c: down")
        );
    }
}
