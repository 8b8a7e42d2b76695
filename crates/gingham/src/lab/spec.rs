//! The `Lab` document (`apiVersion: gingham.dev/v1`): its name, nodes or racks, the ports every
//! node serves, how pods are routed, the router and the external host. Unknown fields are
//! refused, as for every other kind.

use std::net::Ipv4Addr;

use anyhow::Result;
use gingham_agent::Networking;
use gingham_calc::eval::parse_protocol;
use gingham_model::bgp::AsNumber;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use super::probe::{EXTERNAL, ROUTER};

/// The apiVersion of the `Lab` document.
const LAB_API_VERSION: &str = "gingham.dev/v1";

/// The flat lab's subnet: node `i` is `.i+1`, the bridge (every node's gateway) `.254`.
pub(super) const FLAT_SUBNET: &str = "172.31.0.0/24";
/// The flat lab's gateway (the underlay bridge's address).
pub(super) const FLAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 254);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabDoc {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    /// `Lab` (how the document was recognised).
    #[serde(rename = "kind", default)]
    _kind: String,
    #[serde(default)]
    metadata: LabMeta,
    #[serde(default)]
    spec: LabSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabMeta {
    /// 1-6 lowercase letters or digits: it prefixes network namespace names.
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabSpec {
    /// Node names of a flat lab (default: node-1, node-2).
    #[serde(default)]
    nodes: Vec<String>,
    /// Racks: each its own subnet, joined by the router.
    #[serde(default)]
    racks: Vec<RackSpec>,
    /// Ports every node's host listens on: `80` is TCP, `"UDP/53"` names the protocol.
    #[serde(default)]
    node_ports: Vec<Value>,
    /// bird, vxlan or none (default: none for a flat lab, bird with racks).
    #[serde(default)]
    networking: Option<String>,
    #[serde(default)]
    router: Option<RouterSpec>,
    #[serde(default)]
    external: Option<ExternalSpec>,
    /// Serve the Kubernetes API (the lab's kubeconfig), run kube-controllers and a kubelet's
    /// share: Pods, Namespaces, ServiceAccounts and NetworkPolicies go through the API.
    #[serde(default)]
    kubernetes: bool,
    /// Every node's agent logs the flows Allow rules let through too (`--flow-logs-allowed`).
    #[serde(default)]
    flow_logs_allowed: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RackSpec {
    name: String,
    subnet: String,
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RouterSpec {
    /// The router runs BIRD with this AS and a BGP session per node.
    #[serde(default)]
    as_number: Option<AsNumber>,
    /// Whether the router gets the lab's static routes to the pods' blocks and borrowed
    /// addresses (default: true with `networking: none`; only valid with it).
    #[serde(default)]
    static_pod_routes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalSpec {
    address: String,
}

/// One rack as the lab builds it.
#[derive(Debug, Clone)]
pub(super) struct Rack {
    pub name: String,
    pub subnet: Ipv4Net,
    /// The router's address in the rack: the subnet's first host address.
    pub gateway: Ipv4Addr,
}

/// One node as the lab builds it.
#[derive(Debug, Clone)]
pub(super) struct PlannedNode {
    pub name: String,
    /// Index into [`Plan::racks`].
    pub rack: Option<usize>,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// A Lab document, checked and laid out.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub name: String,
    pub nodes: Vec<PlannedNode>,
    pub racks: Vec<Rack>,
    pub node_ports: Vec<PortSpec>,
    pub networking: Networking,
    /// The router's BIRD AS, if it runs BIRD.
    pub router_as: Option<u32>,
    /// Whether the router holds the lab's static pod routes.
    pub static_pod_routes: bool,
    pub external: Option<Ipv4Addr>,
    /// `spec.kubernetes`.
    pub kubernetes: bool,
    /// `spec.flowLogsAllowed`.
    pub flow_logs_allowed: bool,
}

/// A problem in a Lab document, in the form of every other load error.
fn lab_error(
    source: &str,
    document: usize,
    doc: &Value,
    path: &str,
    message: String,
) -> anyhow::Error {
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    anyhow::Error::new(gingham_model::LoadError {
        source_name: source.to_owned(),
        document: Some(document),
        item: None,
        object: Some(format!("Lab {name}").trim_end().to_owned()),
        path: path.to_owned(),
        message,
    })
}

/// Whether `s` is a valid label value (a rack's name becomes the Nodes' `rack` label).
fn label_value_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Reads one Lab document (`document`: its 1-based number in `source`).
pub(super) fn parse_lab(source: &str, document: usize, doc: &Value) -> Result<Plan> {
    let err = |path: &str, message: String| lab_error(source, document, doc, path, message);
    let lab: LabDoc = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        err(&path, e.into_inner().to_string())
    })?;
    if let Some(v) = &lab.api_version
        && v != LAB_API_VERSION
    {
        return Err(err(
            "apiVersion",
            format!("{v:?} is not the Lab's apiVersion (valid: {LAB_API_VERSION})"),
        ));
    }
    let name = lab.metadata.name.clone().unwrap_or_else(|| "lab".into());
    if name.is_empty()
        || name.len() > 6
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(err(
            "metadata.name",
            format!(
                "{name:?} must be 1-6 lowercase letters or digits (it prefixes network namespace names)"
            ),
        ));
    }
    let spec = lab.spec;
    let mut node_ports = Vec::new();
    for (i, p) in spec.node_ports.iter().enumerate() {
        let port = node_port(p).ok_or_else(|| {
            err(
                &format!("spec.nodePorts[{i}]"),
                format!("{p} is not a port (valid: 80 for TCP, or \"UDP/53\", \"TCP/22\")"),
            )
        })?;
        node_ports.push(port);
    }
    let with_racks = !spec.racks.is_empty();
    let networking = match &spec.networking {
        Some(n) => n
            .parse::<Networking>()
            .map_err(|e| err("spec.networking", e))?,
        None if with_racks => Networking::Bird,
        None => Networking::None,
    };
    if !with_racks {
        for (field, given) in [
            ("spec.router", spec.router.is_some()),
            ("spec.external", spec.external.is_some()),
        ] {
            if given {
                return Err(err(
                    field,
                    "needs spec.racks (the router joins the racks; a flat lab has none)".into(),
                ));
            }
        }
    }
    let mut racks = Vec::new();
    let mut nodes = Vec::new();
    if with_racks {
        if !spec.nodes.is_empty() {
            return Err(err(
                "spec.nodes",
                "a lab with spec.racks names its nodes in each rack's nodes, not in spec.nodes"
                    .into(),
            ));
        }
        for (r, rack) in spec.racks.iter().enumerate() {
            let at = |f: &str| format!("spec.racks[{r}].{f}");
            if !label_value_ok(&rack.name) {
                return Err(err(
                    &at("name"),
                    format!(
                        "{:?} is not a valid rack name (it is the Nodes' `rack` label value: 1-63 letters, digits, '-', '_', '.')",
                        rack.name
                    ),
                ));
            }
            if racks.iter().any(|x: &Rack| x.name == rack.name) {
                return Err(err(
                    &at("name"),
                    format!("rack {:?} is named twice", rack.name),
                ));
            }
            let subnet: Ipv4Net = rack.subnet.parse().map_err(|_| {
                err(
                    &at("subnet"),
                    format!(
                        "{:?} is not an IPv4 subnet (valid: e.g. 10.0.1.0/24)",
                        rack.subnet
                    ),
                )
            })?;
            if subnet != subnet.trunc() {
                return Err(err(
                    &at("subnet"),
                    format!("{subnet} has host bits set (valid: {})", subnet.trunc()),
                ));
            }
            if let Some(other) = racks
                .iter()
                .find(|x: &&Rack| x.subnet.contains(&subnet) || subnet.contains(&x.subnet))
            {
                return Err(err(
                    &at("subnet"),
                    format!(
                        "{subnet} overlaps rack {}'s subnet {}",
                        other.name, other.subnet
                    ),
                ));
            }
            if rack.nodes.is_empty() {
                return Err(err(&at("nodes"), "a rack needs at least one node".into()));
            }
            // The router takes the first host address, the nodes the following ones.
            let hosts = subnet.hosts().count();
            if hosts < rack.nodes.len() + 1 {
                return Err(err(
                    &at("subnet"),
                    format!(
                        "{subnet} has {hosts} host addresses: too few for the router and {} nodes",
                        rack.nodes.len()
                    ),
                ));
            }
            let mut addrs = subnet.hosts();
            let gateway = addrs.next().expect("counted");
            racks.push(Rack {
                name: rack.name.clone(),
                subnet,
                gateway,
            });
            for node in &rack.nodes {
                nodes.push(PlannedNode {
                    name: node.clone(),
                    rack: Some(r),
                    ip: addrs.next().expect("counted"),
                    prefix_len: subnet.prefix_len(),
                    gateway,
                });
            }
        }
    } else {
        let flat: Ipv4Net = FLAT_SUBNET.parse().expect("a subnet");
        let names = if spec.nodes.is_empty() {
            vec!["node-1".to_owned(), "node-2".to_owned()]
        } else {
            spec.nodes.clone()
        };
        if names.len() > 250 {
            return Err(err(
                "spec.nodes",
                format!("{} nodes: a flat lab holds at most 250", names.len()),
            ));
        }
        for (i, node) in names.iter().enumerate() {
            let last = u8::try_from(i + 1).expect("at most 250");
            let [a, b, c, _] = flat.network().octets();
            nodes.push(PlannedNode {
                name: node.clone(),
                rack: None,
                ip: Ipv4Addr::new(a, b, c, last),
                prefix_len: flat.prefix_len(),
                gateway: FLAT_GATEWAY,
            });
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.name == n.name) {
            return Err(err("spec", format!("node {:?} is named twice", n.name)));
        }
    }
    if with_racks
        && let Some(n) = nodes
            .iter()
            .find(|n| [ROUTER, EXTERNAL].contains(&n.name.as_str()))
    {
        return Err(err(
            "spec.racks",
            format!(
                "a node cannot be named {:?}: `lab try` and `lab exec` name the router and the external host so",
                n.name
            ),
        ));
    }
    let router = spec.router.unwrap_or_default();
    let static_pod_routes = match router.static_pod_routes {
        Some(true) if networking != Networking::None => {
            return Err(err(
                "spec.router.staticPodRoutes",
                format!(
                    "the lab routes pods itself only with `networking: none` (this lab: {}; the router learns pod routes by BGP)",
                    networking.name()
                ),
            ));
        }
        Some(v) => v,
        None => networking == Networking::None,
    };
    let external = match spec.external {
        Some(e) => {
            let a: Ipv4Addr = e.address.parse().map_err(|_| {
                err(
                    "spec.external.address",
                    format!("{:?} is not an IPv4 address", e.address),
                )
            })?;
            if let Some(r) = racks.iter().find(|r| r.subnet.contains(&a)) {
                return Err(err(
                    "spec.external.address",
                    format!(
                        "{a} is in rack {}'s subnet {}: the external host is beyond the router",
                        r.name, r.subnet
                    ),
                ));
            }
            Some(a)
        }
        None => None,
    };
    Ok(Plan {
        name,
        nodes,
        racks,
        node_ports,
        networking,
        router_as: router.as_number.map(|a| a.0),
        static_pod_routes,
        external,
        kubernetes: spec.kubernetes,
        flow_logs_allowed: spec.flow_logs_allowed,
    })
}

/// One entry of a Lab document's `spec.nodePorts`: `80` is TCP, `UDP/53` names the protocol.
fn node_port(p: &Value) -> Option<PortSpec> {
    let entry = match p {
        Value::Number(n) => (6, n.as_u64().and_then(|n| u16::try_from(n).ok())?),
        Value::String(text) => {
            let (proto, port) = text.split_once('/')?;
            let proto = parse_protocol(proto).filter(|p| *p == 6 || *p == 17)?;
            (proto, port.parse().ok()?)
        }
        _ => return None,
    };
    (entry.1 != 0).then_some(entry)
}

/// (protocol number, port).
pub(super) type PortSpec = (u8, u16);

/// Whether a document is the lab's own (`kind: Lab`), which only `gingham lab` reads.
pub(crate) fn is_lab(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Lab")
}

/// The lab's plan from its Lab document (without one: `lab`, two nodes on a flat subnet, no
/// ports). At most one Lab document.
pub(super) fn lab_plan(all_docs: &[(String, Vec<Value>)]) -> Result<Plan> {
    let mut found: Option<(String, usize)> = None;
    let mut plan = None;
    for (source, docs) in all_docs {
        for (i, d) in docs.iter().enumerate().filter(|(_, d)| is_lab(d)) {
            if let Some((first, n)) = &found {
                return Err(lab_error(
                    source,
                    i + 1,
                    d,
                    "",
                    format!("a second Lab document (a lab has one: {first} document {n})"),
                ));
            }
            found = Some((source.clone(), i + 1));
            plan = Some(parse_lab(source, i + 1, d)?);
        }
    }
    match plan {
        Some(p) => Ok(p),
        None => parse_lab("", 0, &serde_json::json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(spec: &str) -> Result<Plan> {
        let docs = gingham_model::load::parse_documents(&format!(
            "apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: t}}\nspec: {spec}\n"
        ))
        .unwrap();
        parse_lab("lab.yaml", 1, &docs[0])
    }

    #[test]
    fn racks_lay_out_router_and_nodes() {
        let p = plan("{racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a, b]}, {name: r2, subnet: 10.1.2.0/29, nodes: [c]}]}").unwrap();
        assert_eq!(p.networking, Networking::Bird, "racks default to bird");
        assert!(!p.static_pod_routes);
        let got: Vec<(String, String, String)> = p
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    format!("{}/{}", n.ip, n.prefix_len),
                    n.gateway.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), "10.1.1.2/24".into(), "10.1.1.1".into()),
                ("b".into(), "10.1.1.3/24".into(), "10.1.1.1".into()),
                ("c".into(), "10.1.2.2/29".into(), "10.1.2.1".into()),
            ]
        );
        let flat = plan("{nodes: [a]}").unwrap();
        assert_eq!(
            flat.networking,
            Networking::None,
            "flat labs default to none"
        );
        assert_eq!(flat.nodes[0].ip, Ipv4Addr::new(172, 31, 0, 1));
        assert_eq!(flat.nodes[0].gateway, FLAT_GATEWAY);
        let none = plan("{networking: none, racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}")
            .unwrap();
        assert!(
            none.static_pod_routes,
            "with none, the router gets the lab's routes"
        );
    }

    #[test]
    fn bad_racks_are_refused_naming_the_field() {
        for (spec, want) in [
            (
                "{racks: [{name: r1, subnet: 10.1.1.0/30, nodes: [a, b]}]}",
                "spec.racks[0].subnet: 10.1.1.0/30 has 2 host addresses: too few for the router and 2 nodes",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.0.0/16, nodes: [a]}, {name: r2, subnet: 10.1.2.0/24, nodes: [b]}]}",
                "spec.racks[1].subnet: 10.1.2.0/24 overlaps rack r1's subnet 10.1.0.0/16",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.1.1/24, nodes: [a]}]}",
                "spec.racks[0].subnet: 10.1.1.1/24 has host bits set",
            ),
            (
                "{racks: [{name: r1, subnet: nope, nodes: [a]}]}",
                "spec.racks[0].subnet: \"nope\" is not an IPv4 subnet",
            ),
            (
                "{racks: [{name: 'r 1', subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.racks[0].name: \"r 1\" is not a valid rack name",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}, {name: r1, subnet: 10.1.2.0/24, nodes: [b]}]}",
                "spec.racks[1].name: rack \"r1\" is named twice",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}, {name: r2, subnet: 10.1.2.0/24, nodes: [a]}]}",
                "spec: node \"a\" is named twice",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.1.0/24}]}",
                "spec.racks[0].nodes: a rack needs at least one node",
            ),
            (
                "{nodes: [x], racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.nodes: a lab with spec.racks names its nodes in each rack",
            ),
            (
                "{racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a], spine: s}]}",
                "spec.racks[0].spine: unknown field `spine`",
            ),
            (
                "{networking: calico, racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.networking: networking backend \"calico\" is not one of bird, vxlan, none",
            ),
            (
                "{router: {asNumber: 65000}}",
                "spec.router: needs spec.racks",
            ),
            (
                "{external: {address: 203.0.113.9}}",
                "spec.external: needs spec.racks",
            ),
            (
                "{networking: bird, router: {staticPodRoutes: true}, racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.router.staticPodRoutes: the lab routes pods itself only with `networking: none`",
            ),
            (
                "{external: {address: 10.1.1.9}, racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.external.address: 10.1.1.9 is in rack r1's subnet 10.1.1.0/24",
            ),
            (
                "{external: {address: x}, racks: [{name: r1, subnet: 10.1.1.0/24, nodes: [a]}]}",
                "spec.external.address: \"x\" is not an IPv4 address",
            ),
        ] {
            let e = format!("{:#}", plan(spec).unwrap_err());
            assert!(
                e.contains("lab.yaml: document 1 (Lab t): ") && e.contains(want),
                "{spec}: {e}"
            );
        }
    }
}
