//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field selectors
//! (`metadata.name=x,spec.nodeName!=y`) as kube-apiserver parses them.

use serde_json::Value;

use crate::resources::Resource;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn set_values(s: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("{whole:?}: expected a parenthesised set of values"))?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    for v in &vals {
        if !valid_value(v) {
            return Err(format!("{whole:?}: invalid label value {v:?}"));
        }
    }
    Ok(vals)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = parse_requirement(&part)?;
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// Whether an object with these labels (`metadata.labels`) matches.
    pub fn matches(&self, labels: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.get(&r.key).and_then(Value::as_str);
            match &r.op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let bad_key = |k: &str| format!("{part:?}: invalid label key {k:?}");
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        return Ok(Requirement {
            key: key.into(),
            op: Op::NotExists,
        });
    }
    for (sep, make) in [
        ("!=", Op::NotEq as fn(String) -> Op),
        ("==", Op::Eq as fn(String) -> Op),
        ("=", Op::Eq as fn(String) -> Op),
    ] {
        if let Some((k, v)) = part.split_once(sep) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) {
                return Err(bad_key(k));
            }
            if !valid_value(v) {
                return Err(format!("{part:?}: invalid label value {v:?}"));
            }
            return Ok(Requirement {
                key: k.into(),
                op: make(v.into()),
            });
        }
    }
    for (sep, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = part.split_once(sep) {
            let k = k.trim();
            if !valid_key(k) {
                return Err(bad_key(k));
            }
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: {sep} needs an integer"))?;
            return Ok(Requirement {
                key: k.into(),
                op: if gt { Op::Gt(n) } else { Op::Lt(n) },
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0];
        let rest = words[1].trim_start();
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        if let Some(set) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::NotIn(set_values(set, part)?),
            });
        }
        if let Some(set) = rest.strip_prefix("in") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::In(set_values(set, part)?),
            });
        }
        return Err(format!(
            "{part:?}: unknown operator (valid: =, ==, !=, in, notin, exists as KEY, !KEY, >, <)"
        ));
    }
    if !valid_key(part) {
        return Err(bad_key(part));
    }
    Ok(Requirement {
        key: part.into(),
        op: Op::Exists,
    })
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

/// The fields a resource can be selected by, beyond `metadata.name` and `metadata.namespace`
/// (kube-apiserver's field label conversions).
fn extra_fields(resource: &Resource) -> &'static [&'static str] {
    if resource.custom {
        return &[];
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, resource: &Resource) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let (field, neq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid field selector {part:?}: expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE"
                ));
            };
            let field = field.trim();
            if !(field == "metadata.name"
                || field == "metadata.namespace"
                || extra_fields(resource).contains(&field))
            {
                let mut valid = vec!["metadata.name", "metadata.namespace"];
                valid.extend_from_slice(extra_fields(resource));
                return Err(format!(
                    "field label not supported: {field} (valid for {}: {})",
                    resource.qualified(),
                    valid.join(", ")
                ));
            }
            reqs.push((field.to_owned(), neq, value.trim().to_owned()));
        }
        Ok(Self { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(field, neq, want)| {
            let mut v = obj;
            for part in field.split('.') {
                v = &v[part];
            }
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
                    "false".into()
                }
                _ => String::new(),
            };
            (have == *want) != *neq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_as_kubernetes() {
        let labels = json!({"app": "web", "tier": "front", "n": "5"});
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (db, web)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app in (web,db),tier", true),
            ("n>4", true),
            ("n<4", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&labels), want, "{sel}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
    }
}
