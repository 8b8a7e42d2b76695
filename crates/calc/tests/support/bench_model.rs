//! The cluster model of the agent's benchmarks (`gingham`'s `benches/agent.rs`) and of the
//! calculator's memory test: 100 namespaces with their profiles, 1,000 workload endpoints on 10
//! nodes (one per namespace on each node), and P namespaced policies, each selecting one app
//! label in its namespace and allowing TCP from a role. YAML text, loaded by the includer.

pub const NAMESPACES: usize = 100;
pub const ENDPOINTS: usize = 1000;

/// The namespaces' profiles, each allowing everything (as Kubernetes namespaces' do).
pub fn profiles() -> String {
    (0..NAMESPACES)
        .map(|n| {
            format!(
                "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.ns{n}}}
spec:
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
---
"
            )
        })
        .collect()
}

/// Endpoint `i` of the model's layout (namespace, node), with these labels, interface and
/// address.
pub fn endpoint(i: usize, labels: &str, iface: &str, ip: &str) -> String {
    let ns = i % NAMESPACES;
    let node = format!("node{}", (i / NAMESPACES) % 10);
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-pod{i}-eth0
  namespace: ns{ns}
  labels: {{{labels}, projectcalico.org/namespace: ns{ns}, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: pod{i}
  endpoint: eth0
  interfaceName: {iface}
  ipNetworks: [{ip}/32]
  profiles: [kns.ns{ns}]
---
"
    )
}

/// Endpoint `i` of the model with role `role`.
pub fn model_endpoint(i: usize, role: usize) -> String {
    endpoint(
        i,
        &format!("app: a{}, role: r{role}", (i / NAMESPACES) % 10),
        &format!("cali{i:011}"),
        &format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255),
    )
}

/// Policy `j`, allowing TCP to `port`.
pub fn policy(j: usize, port: u16) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: pol{j}, namespace: ns{ns}}}
spec:
  order: {j}
  selector: app == 'a{app}'
  ingress:
  - action: Allow
    protocol: TCP
    source: {{selector: role == 'r{role}'}}
    destination: {{ports: [{port}]}}
---
",
        ns = j % NAMESPACES,
        app = (j / NAMESPACES) % 10,
        role = j % 20,
    )
}

/// Policies `range`, each to its port of 80..85.
pub fn policies(range: std::ops::Range<usize>) -> String {
    range.map(|j| policy(j, 80 + (j % 5) as u16)).collect()
}

/// Profiles, endpoints and `p` policies.
pub fn model_text(p: usize) -> String {
    let mut text = profiles();
    text.extend((0..ENDPOINTS).map(|i| model_endpoint(i, i % 20)));
    text.push_str(&policies(0..p));
    text
}
