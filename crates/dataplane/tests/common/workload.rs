//! A Kubernetes pod's WorkloadEndpoint as YAML, for the tests that build their own clusters
//! (namespace ns0, profile kns.ns0).

/// The WorkloadEndpoint of `pod` on `node` (interface `iface`, addresses `nets` as CIDRs,
/// `labels` as YAML flow-map entries), as one YAML document ending with `---`.
pub fn workload_yaml(node: &str, pod: &str, labels: &str, iface: &str, nets: &[&str]) -> String {
    let nets = nets
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-eth0
  namespace: ns0
  labels: {{{labels}, projectcalico.org/namespace: ns0, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {pod}
  endpoint: eth0
  interfaceName: {iface}
  ipNetworks: [{nets}]
  profiles: [kns.ns0]
---
"
    )
}
