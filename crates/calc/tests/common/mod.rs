//! Random clusters and flows for the property tests.
#![allow(dead_code)]

use gingham_calc::Snapshot;
use gingham_calc::eval::{Flow, PeerSpec};
use gingham_calc::incremental::Update;
use gingham_model::Resource;
use serde_json::{Value, json};

/// How many random clusters a property test runs: `PROPERTY_SEEDS`, or `default`.
pub fn property_seeds(default: u64) -> u64 {
    std::env::var("PROPERTY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resources of [`gen_cluster`]'s cluster.
pub fn cluster_resources(seed: u64) -> Vec<Resource> {
    let docs = gen_cluster(seed);
    let text: Vec<String> = docs.iter().map(ToString::to_string).collect();
    gingham_model::load_resources("random.json", &text.join("\n"))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

/// A random history of updates: the cluster of `seed` created in random order, then 25
/// replacements (drawn from two other clusters with overlapping names) and deletions. `None`
/// stands for "delete a random input that exists at that point" (see [`resolve_step`]).
pub fn update_steps(seed: u64, rng: &mut Rng) -> Vec<Option<Update>> {
    let mut pool = cluster_resources(seed);
    let mut steps = Vec::new();
    while !pool.is_empty() {
        let r = pool.swap_remove(rng.below(pool.len()));
        steps.push(Some(Update::Upsert(Box::new(r))));
    }
    let mut others = cluster_resources(seed + 10_000);
    others.extend(cluster_resources(seed + 20_000));
    for _ in 0..25 {
        if rng.chance(70) && !others.is_empty() {
            let r = others.swap_remove(rng.below(others.len()));
            steps.push(Some(Update::Upsert(Box::new(r))));
        } else {
            steps.push(None);
        }
    }
    steps
}

/// The update a step stands for, given the current inputs (by key), which it then updates;
/// `None` when it deletes and nothing is left.
pub fn resolve_step(
    step: Option<Update>,
    current: &mut std::collections::BTreeMap<String, Resource>,
    rng: &mut Rng,
) -> Option<Update> {
    let step = match step {
        Some(u) => u,
        None if current.is_empty() => return None,
        None => {
            let keys: Vec<&String> = current.keys().collect();
            let r = &current[keys[rng.below(keys.len())]];
            Update::Delete {
                kind: r.kind(),
                namespace: r.meta().namespace.clone(),
                name: r.meta().name.clone(),
            }
        }
    };
    match &step {
        Update::Upsert(r) => {
            current.insert(r.key(), (**r).clone());
        }
        Update::Delete {
            kind,
            namespace,
            name,
        } => {
            current.remove(&kind.key(namespace.as_deref(), name));
        }
    }
    Some(step)
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAMESPACES: &[&str] = &["ns0", "ns1", "ns2"];
const NODES: &[&str] = &["node-a", "node-b"];
const APPS: &[&str] = &["web", "db", "cache"];
const SELECTORS: &[&str] = &[
    "all()",
    "app == 'web'",
    "app == 'db'",
    "app in {'web', 'cache'}",
    "has(tier)",
    "!has(tier)",
    "tier != 'front'",
    "app == 'db' || tier == 'back'",
    "role == 'node'",
    "kind == 'partner'",
    "projectcalico.org/namespace == 'ns1'",
];
const NS_SELECTORS: &[&str] = &["", "", "team == 'blue'", "all()", "global()"];

fn gen_rule(r: &mut Rng) -> Value {
    let action = *r.pick(&["Allow", "Allow", "Allow", "Deny", "Pass", "Log"]);
    let mut rule = json!({ "action": action });
    let proto = *r.pick(&["", "TCP", "TCP", "UDP", "ICMP"]);
    if !proto.is_empty() {
        rule["protocol"] = json!(proto);
    }
    if r.chance(10) && proto.is_empty() {
        rule["notProtocol"] = json!("UDP");
    }
    let mut peer = serde_json::Map::new();
    if r.chance(50) {
        peer.insert("selector".into(), json!(r.pick(SELECTORS)));
    }
    if r.chance(20) {
        let ns = *r.pick(NS_SELECTORS);
        if !ns.is_empty() {
            peer.insert("namespaceSelector".into(), json!(ns));
        }
    }
    if r.chance(15) {
        peer.insert("notSelector".into(), json!(r.pick(SELECTORS)));
    }
    if r.chance(15) {
        peer.insert(
            "nets".into(),
            json!([r.pick(&[
                "10.0.0.0/16",
                "10.9.0.0/16",
                "192.168.0.0/24",
                "10.0.1.0/24"
            ])]),
        );
    }
    if r.chance(10) {
        peer.insert(
            "notNets".into(),
            json!([r.pick(&["10.0.1.0/24", "10.0.0.0/24"])]),
        );
    }
    let mut dst = serde_json::Map::new();
    if (proto == "TCP" || proto == "UDP") && r.chance(60) {
        let port = match r.below(4) {
            0 => json!(80),
            1 => json!("50:90"),
            2 => json!("http"),
            _ => json!(53),
        };
        dst.insert("ports".into(), json!([port]));
    }
    if (proto == "TCP" || proto == "UDP") && r.chance(10) {
        dst.insert(
            "notPorts".into(),
            json!([r.pick(&[json!(443), json!("dns")])]),
        );
    }
    if proto.is_empty() && r.chance(15) {
        // Named ports are the only ports allowed without a protocol.
        dst.insert("ports".into(), json!(["http"]));
    }
    if r.chance(20) {
        dst.insert("selector".into(), json!(r.pick(SELECTORS)));
    }
    if !peer.is_empty() {
        rule["source"] = Value::Object(peer);
    }
    if !dst.is_empty() {
        rule["destination"] = Value::Object(dst);
    }
    rule
}

/// A random cluster as documents (Calico v3 only, so every object is explicit).
pub fn gen_cluster(seed: u64) -> Vec<Value> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut docs = Vec::new();
    // Namespace profiles (sometimes missing), with namespace labels to apply.
    for (i, ns) in NAMESPACES.iter().enumerate() {
        if r.chance(85) {
            let team = if i % 2 == 0 { "blue" } else { "red" };
            let ingress = if r.chance(80) { "Allow" } else { "Deny" };
            docs.push(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "Profile",
                "metadata": {"name": format!("kns.{ns}")},
                "spec": {
                    "ingress": [{"action": ingress}], "egress": [{"action": "Allow"}],
                    "labelsToApply": {"pcns.team": team, "pcns.projectcalico.org/name": ns}
                }
            }));
        }
    }
    // Workload endpoints.
    let n_wep = 3 + r.below(5);
    for i in 0..n_wep {
        let ns = *r.pick(NAMESPACES);
        let node = *r.pick(NODES);
        let mut labels = serde_json::Map::new();
        labels.insert("app".into(), json!(r.pick(APPS)));
        if r.chance(50) {
            labels.insert("tier".into(), json!(r.pick(&["front", "back"])));
        }
        labels.insert("projectcalico.org/namespace".into(), json!(ns));
        labels.insert("projectcalico.org/orchestrator".into(), json!("k8s"));
        let mut ports = Vec::new();
        if r.chance(50) {
            ports.push(json!({"name": "http", "protocol": "TCP", "port": r.pick(&[80u16, 8080])}));
        }
        if r.chance(30) {
            ports.push(json!({"name": "dns", "protocol": "UDP", "port": 53}));
        }
        let profiles: Vec<String> = if r.chance(90) {
            vec![format!("kns.{ns}")]
        } else {
            vec![]
        };
        let pod = format!("p{i}");
        let name = format!("{}-k8s-{pod}-eth0", node.replace('-', "--"));
        docs.push(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                "interfaceName": format!("cali{i:011}"),
                "ipNetworks": [format!("10.0.{}.{}/32", i % 2, 10 + i)],
                "profiles": profiles, "ports": ports
            }
        }));
    }
    // Host endpoints.
    for (i, node) in NODES.iter().enumerate() {
        if r.chance(40) {
            let profiles: Vec<&str> = if r.chance(50) {
                vec!["projectcalico-default-allow"]
            } else {
                vec![]
            };
            docs.push(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                "metadata": {"name": format!("{node}-eth0"), "labels": {"role": "node"}},
                "spec": {
                    "node": node, "interfaceName": if r.chance(50) { "*" } else { "eth0" },
                    "expectedIPs": [format!("192.168.0.{}", i + 1)], "profiles": profiles,
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80}]
                }
            }));
        }
        docs.push(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": node},
            "spec": {"bgp": {"ipv4Address": format!("192.168.0.{}/24", i + 1)}}
        }));
    }
    docs.push(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
        "metadata": {"name": "partners", "labels": {"kind": "partner"}},
        "spec": {"nets": ["10.9.0.0/16"]}
    }));
    docs.push(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "security"},
        "spec": {"order": 10, "defaultAction": if r.chance(50) { "Deny" } else { "Pass" }}
    }));
    // Policies.
    let n_pol = r.below(7);
    for i in 0..n_pol {
        let tier = if r.chance(30) { "security" } else { "default" };
        let name = if tier == "default" {
            format!("pol{i}")
        } else {
            format!("security.pol{i}")
        };
        let ingress: Vec<Value> = (0..r.below(3)).map(|_| gen_rule(&mut r)).collect();
        let egress: Vec<Value> = (0..r.below(3)).map(|_| gen_rule(&mut r)).collect();
        let mut spec = json!({
            "tier": tier,
            "selector": r.pick(SELECTORS),
            "ingress": ingress, "egress": egress,
        });
        if r.chance(60) {
            spec["order"] = json!(r.pick(&[10, 100, 100, 500]));
        }
        if r.chance(30) {
            spec["types"] = json!(r.pick(&[
                json!(["Ingress"]),
                json!(["Egress"]),
                json!(["Ingress", "Egress"])
            ]));
        }
        if r.chance(50) {
            docs.push(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": r.pick(NAMESPACES)}, "spec": spec
            }));
        } else {
            if r.chance(20) {
                spec["applyOnForward"] = json!(true);
            }
            docs.push(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": name}, "spec": spec
            }));
        }
    }
    docs
}

pub fn gen_flows(seed: u64, snap: &Snapshot) -> Vec<Flow> {
    let mut r = Rng(seed ^ 0xABCD_EF01_2345_6789);
    let mut peers: Vec<String> = snap.endpoints.iter().map(|e| e.name.clone()).collect();
    peers.extend(NODES.iter().map(|n| n.to_string()));
    peers.extend([
        "10.9.1.1".to_owned(),
        "203.0.113.9".to_owned(),
        "10.0.1.200".to_owned(),
    ]);
    (0..40)
        .map(|_| {
            let (protocol, port) = match r.below(5) {
                0 => (1, None),
                1 => (17, Some(*r.pick(&[53u16, 80]))),
                _ => (6, Some(*r.pick(&[80u16, 443, 8080, 22, 55]))),
            };
            Flow {
                src: PeerSpec::parse(r.pick(&peers).as_str()),
                dst: PeerSpec::parse(r.pick(&peers).as_str()),
                protocol,
                port,
                src_port: None,
                icmp: None,
                ipv6: false,
            }
        })
        .collect()
}
