//! `gingham_calc::lint` on snapshots: for each code, input that triggers it and input that must
//! not (the fixed state, or a near miss).

use gingham_calc::Snapshot;
use gingham_calc::input::prepare_documents;
use gingham_calc::lint::{self, Finding, Severity};

fn snap(yaml: &str) -> Snapshot {
    let mut docs = gingham_model::load::parse_documents(yaml).unwrap();
    prepare_documents(&mut docs);
    let json: Vec<String> = docs.iter().map(ToString::to_string).collect();
    let loaded =
        gingham_model::load("test.yaml", &json.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(
        &loaded
            .into_iter()
            .flat_map(|d| d.resources)
            .collect::<Vec<_>>(),
    )
}

fn findings(yaml: &str) -> Vec<Finding> {
    lint::lint(&snap(yaml))
}

fn with_code(yaml: &str, code: &str) -> Vec<Finding> {
    findings(yaml)
        .into_iter()
        .filter(|f| f.code == code)
        .collect()
}

/// Fails unless nothing of severity error or warning is found, showing what was.
fn assert_clean(what: &str, yaml: &str) {
    let bad: Vec<Finding> = findings(yaml)
        .into_iter()
        .filter(|f| f.severity != Severity::Info)
        .collect();
    assert!(bad.is_empty(), "{what}: {bad:#?}");
}

const NODES: &str = "apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 192.168.0.1/24, ipv4IPIPTunnelAddr: 10.244.1.1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-2}
spec: {bgp: {ipv4Address: 192.168.0.2/24, ipv4IPIPTunnelAddr: 10.244.2.1}}
---
";

const PODS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: default, labels: {app: web}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: default, labels: {app: web}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.10}
---
";

const FROM_NODES: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-from-nodes}
spec:
  selector: has(projectcalico.org/namespace)
  ingress: [{action: Allow, source: {selector: role == 'node'}}]
---
";

fn hep(node: &str, ips: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {node}-eth0, labels: {{role: node}}}}\nspec: {{node: {node}, interfaceName: eth0, expectedIPs: [{ips}], profiles: [projectcalico-default-allow]}}\n---\n"
    )
}

#[test]
fn missing_host_endpoint_names_the_nodes_and_their_addresses() {
    let f = with_code(
        &format!("{NODES}{PODS}{FROM_NODES}"),
        lint::MISSING_HOST_ENDPOINT,
    );
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f[0].resource, "GlobalNetworkPolicy allow-from-nodes");
    assert!(f[0].message.contains("node-1, node-2"), "{}", f[0].message);
    assert!(
        f[0].fix.contains("node-1: 192.168.0.1, 10.244.1.1") && f[0].fix.contains("HostEndpoint"),
        "{}",
        f[0].fix
    );
}

/// Seed 000 with IPIP: host endpoints for the nodes' own addresses are not enough, the tunnel
/// address is the source toward pods on other nodes.
#[test]
fn missing_host_endpoint_counts_tunnel_addresses() {
    let yaml = format!(
        "{NODES}{PODS}{FROM_NODES}{}{}",
        hep("node-1", "192.168.0.1"),
        hep("node-2", "192.168.0.2")
    );
    let f = with_code(&yaml, lint::MISSING_HOST_ENDPOINT);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].fix.contains("node-1: 10.244.1.1;") && f[0].fix.contains("node-2: 10.244.2.1"),
        "{}",
        f[0].fix
    );
    let fixed = format!(
        "{NODES}{PODS}{FROM_NODES}{}{}",
        hep("node-1", "192.168.0.1, 10.244.1.1"),
        hep("node-2", "192.168.0.2, 10.244.2.1")
    );
    assert_clean("host endpoints with tunnel addresses", &fixed);
}

#[test]
fn missing_host_endpoint_spares_selectors_of_pods() {
    // A Kubernetes NetworkPolicy whose peers are pods.
    let k8s = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
";
    assert_clean("k8s policy", &format!("{NODES}{PODS}{k8s}"));
    // A Calico policy whose source selector matches pods.
    let calico = FROM_NODES.replace("role == 'node'", "app == 'web'");
    assert_clean("calico policy", &format!("{NODES}{PODS}{calico}"));
    // A selector matching nothing in a namespaced policy is not about hosts.
    let ns = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-nodes, namespace: default}
spec:
  selector: all()
  ingress: [{action: Allow, source: {selector: role == 'node'}}]
";
    assert!(with_code(&format!("{NODES}{PODS}{ns}"), lint::MISSING_HOST_ENDPOINT).is_empty());
}

#[test]
fn missing_profile_only_where_it_is_consulted() {
    // Seed 004: the namespace object (and so kns.ns1) is missing.
    let broken = "apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns1}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10}
";
    let f = with_code(broken, lint::MISSING_PROFILE);
    // kns.ns1 drops everything; ksa.ns1.default after it is never consulted.
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].resource, "Profile kns.ns1");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("pod ns1/a"), "{}", f[0].message);
    assert!(f[0].fix.contains("calico-kube-controllers"), "{}", f[0].fix);
    let fixed = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns1}}\n---\n{broken}");
    assert_clean("namespace present", &fixed);
}

#[test]
fn missing_profile_flags_a_bare_endpoint_no_policy_selects() {
    let wep = "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--2-cni-abc123-eth0
  namespace: ns2
  labels: {projectcalico.org/namespace: ns2, app: bare}
spec: {node: node-2, orchestrator: cni, containerID: abc123, endpoint: eth0, interfaceName: cali0123456789a, ipNetworks: [10.244.2.13/32]}
---
";
    let f = with_code(wep, lint::MISSING_PROFILE);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        f[0].resource,
        "WorkloadEndpoint ns2/node--2-cni-abc123-eth0"
    );
    let policed = format!(
        "{wep}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bare}}\nspec:\n  selector: app == 'bare'\n  ingress: [{{action: Allow}}]\n  egress: [{{action: Allow}}]\n"
    );
    assert!(with_code(&policed, lint::MISSING_PROFILE).is_empty());
}

const DASHBOARD: &str = "apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: kubernetes-dashboard, namespace: kube-system, labels: {k8s-app: kubernetes-dashboard}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.11}
---
";

const DENY_SSH: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-ssh-dashboard}
spec:
  selector: k8s-app == 'kubernetes-dashboard'
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [22]}}
";

#[test]
fn deny_only_isolates_the_dashboard() {
    let f = with_code(&format!("{DASHBOARD}{DENY_SSH}"), lint::DENY_ONLY_ISOLATES);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].resource, "GlobalNetworkPolicy deny-ssh-dashboard");
    assert!(
        f[0].message
            .contains("pod kube-system/kubernetes-dashboard")
            && f[0].message.contains("TCP port 22"),
        "{}",
        f[0].message
    );
    assert!(f[0].fix.contains("- action: Allow"), "{}", f[0].fix);
    // The fix: a trailing Allow.
    let fixed = format!("{DASHBOARD}{DENY_SSH}  - {{action: Allow}}\n");
    assert_clean("trailing allow", &fixed);
    // Another policy already selects the dashboard: it was isolated before.
    let other = format!(
        "{DASHBOARD}{DENY_SSH}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: allow-dashboard}}\nspec:\n  order: 10\n  selector: k8s-app == 'kubernetes-dashboard'\n  ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [8443]}}}}]\n"
    );
    assert!(with_code(&other, lint::DENY_ONLY_ISOLATES).is_empty());
    // In a tier whose default action is Pass, nothing is dropped at its end.
    let pass = format!(
        "{DASHBOARD}apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: sec}}\nspec: {{order: 10, defaultAction: Pass}}\n---\n{}",
        DENY_SSH
            .replace("name: deny-ssh-dashboard", "name: sec.deny-ssh-dashboard")
            .replace("spec:\n", "spec:\n  tier: sec\n")
    );
    assert!(
        with_code(&pass, lint::DENY_ONLY_ISOLATES).is_empty(),
        "{pass}"
    );
}

#[test]
fn selector_matches_nothing_for_policies_and_rules() {
    let yaml = format!(
        "{DASHBOARD}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: typo}}\nspec:\n  selector: k8s-app == 'kubernetes-dashbord'\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: rules}}\nspec:\n  selector: k8s-app == 'kube-dns'\n  ingress:\n  - {{action: Deny, source: {{selector: app == 'nope'}}}}\n  - {{action: Allow, source: {{selector: app == 'nada'}}}}\n  - {{action: Allow, source: {{selector: k8s-app == 'kubernetes-dashboard'}}}}\n"
    );
    let f = with_code(&yaml, lint::SELECTOR_MATCHES_NOTHING);
    let got: Vec<(&str, Severity)> = f
        .iter()
        .map(|f| (f.resource.as_str(), f.severity))
        .collect();
    assert_eq!(
        got,
        [
            ("GlobalNetworkPolicy rules", Severity::Warning),
            ("GlobalNetworkPolicy typo", Severity::Warning),
            ("GlobalNetworkPolicy rules", Severity::Info),
        ],
        "{f:#?}"
    );
    assert!(f[0].message.contains("app == 'nada'"), "{f:#?}");
    // Policies given without any workload are not judged.
    let alone = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: typo}\nspec:\n  selector: k8s-app == 'x'\n";
    assert!(findings(alone).is_empty());
}

#[test]
fn shadowed_rules_within_a_policy_and_across_policies() {
    let same = format!(
        "{DASHBOARD}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  selector: all()\n  ingress:\n  - {{action: Allow, protocol: TCP, destination: {{ports: ['1:1000']}}}}\n  - {{action: Deny, protocol: TCP, destination: {{ports: [22]}}}}\n  - {{action: Deny, protocol: UDP, destination: {{ports: [22]}}}}\n  - {{action: Allow}}\n"
    );
    let f = with_code(&same, lint::SHADOWED_RULE);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].message
            .starts_with("ingress rule 1 (Deny) can never match")
            && f[0].message.contains("rule 0 (Allow) of the same policy"),
        "{}",
        f[0].message
    );
    // Across policies: an earlier policy selecting every endpoint and allowing everything.
    let across = format!(
        "{DASHBOARD}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: first}}\nspec:\n  order: 10\n  selector: has(k8s-app)\n  ingress: [{{action: Allow}}]\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: second}}\nspec:\n  order: 20\n  selector: k8s-app == 'kube-dns'\n  ingress: [{{action: Deny, protocol: TCP}}]\n"
    );
    let f = with_code(&across, lint::SHADOWED_RULE);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].resource, "GlobalNetworkPolicy second");
    assert!(
        f[0].message.contains("GlobalNetworkPolicy first"),
        "{}",
        f[0].message
    );
    // The earlier policy selects fewer endpoints: the later rule still matters.
    let narrower = across.replace(
        "selector: has(k8s-app)",
        "selector: k8s-app == 'kubernetes-dashboard'",
    );
    assert!(with_code(&narrower, lint::SHADOWED_RULE).is_empty());
    // The same rules in the other order shadow nothing.
    let ordered = format!(
        "{DASHBOARD}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  selector: all()\n  ingress:\n  - {{action: Deny, protocol: TCP, destination: {{ports: [22]}}}}\n  - {{action: Allow, protocol: TCP, destination: {{ports: ['1:1000']}}}}\n  - {{action: Allow, source: {{nets: [10.0.0.0/8]}}}}\n  - {{action: Allow, source: {{nets: [10.1.0.0/16]}}, protocol: UDP}}\n"
    );
    let f = with_code(&ordered, lint::SHADOWED_RULE);
    // Only the last: 10.1.0.0/16 lies inside 10.0.0.0/8, which allows every protocol.
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].message.starts_with("ingress rule 3"), "{f:#?}");
}

#[test]
fn missing_tier_closes_what_its_policies_select() {
    let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.allow}\nspec:\n  tier: sec\n  selector: all()\n  ingress: [{action: Allow}]\n";
    let f = with_code(&format!("{DASHBOARD}{policy}"), lint::MISSING_TIER);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("tier sec"), "{}", f[0].message);
    assert!(f[0].fix.contains("kind: Tier"), "{}", f[0].fix);
    let tier = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n---\n";
    assert_clean("tier exists", &format!("{DASHBOARD}{tier}{policy}"));
}

const HOST: &str = "apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 192.168.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-1-eth0, labels: {role: node}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [192.168.0.1]}
---
";

fn host_policy(ports: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: host}}\nspec:\n  selector: role == 'node'\n  ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{ports}]}}}}]\n  egress: [{{action: Allow}}]\n---\n"
    )
}

const FAILSAFE_OFF: &str = "apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {failsafeInboundHostPorts: []}
---
";

#[test]
fn failsafe_lockout_with_failsafe_ports_on_and_off() {
    // On: the policy would drop failsafe traffic without them (a warning).
    let on = format!("{HOST}{}", host_policy("80"));
    let f = with_code(&on, lint::FAILSAFE_LOCKOUT);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].resource, "HostEndpoint node-1-eth0");
    assert!(
        f[0].message.contains("TCP/22 in") && f[0].message.contains("TCP/2379 in"),
        "{}",
        f[0].message
    );
    // Outbound too: a policy that allows the host nothing out.
    let closed = host_policy("80").replace(
        "  egress: [{action: Allow}]\n",
        "  egress: [{action: Deny}]\n",
    );
    let f = with_code(&format!("{HOST}{closed}"), lint::FAILSAFE_LOCKOUT);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].message.contains("UDP/53 out") && f[0].message.contains("TCP/2379 out"),
        "{}",
        f[0].message
    );
    // Off: SSH, etcd and the API server are dropped now (an error).
    let off = format!("{HOST}{}{FAILSAFE_OFF}", host_policy("80"));
    let f = with_code(&off, lint::FAILSAFE_LOCKOUT);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(
        f[0].message.contains("SSH (TCP/22)") && f[0].message.contains("TCP/6443"),
        "{}",
        f[0].message
    );
    // Off, and the policy allows them.
    let allowed = format!("{HOST}{}{FAILSAFE_OFF}", host_policy("22, 2379, 6443"));
    assert!(with_code(&allowed, lint::FAILSAFE_LOCKOUT).is_empty());
    // A host endpoint whose profile allows everything.
    let open = HOST.replace(
        "expectedIPs: [192.168.0.1]}",
        "expectedIPs: [192.168.0.1], profiles: [projectcalico-default-allow]}",
    );
    assert_clean("open host endpoint", &open);
}

const CANAL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: canal}
spec: {cidr: 10.1.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: old}
spec: {bgp: {ipv4Address: 10.5.2.205/16}}
status: {podCIDRs: [172.17.247.0/24]}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system}
spec: {nodeName: old}
status: {podIP: 172.17.247.3}
";

#[test]
fn pool_mismatch_for_pod_cidrs_addresses_and_overlaps() {
    let f = with_code(CANAL, lint::POOL_MISMATCH);
    let got: Vec<(&str, Severity)> = f
        .iter()
        .map(|f| (f.resource.as_str(), f.severity))
        .collect();
    assert_eq!(
        got,
        [
            ("Node old", Severity::Error),
            (
                "WorkloadEndpoint kube-system/old-k8s-coredns-eth0",
                Severity::Warning
            ),
        ],
        "{f:#?}"
    );
    assert!(f[0].message.contains("172.17.247.0/24"), "{}", f[0].message);
    assert_clean(
        "the subnet agrees",
        &CANAL
            .replace("172.17.247.0/24", "10.1.49.0/24")
            .replace("172.17.247.3", "10.1.49.3"),
    );
    // An IPAM block affine to the node, outside every pool.
    let block = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {{name: old-172-18-0-0-26}}\nspec: {{node: old, cidr: 172.18.0.0/26, state: confirmed}}\n",
        CANAL
            .replace("172.17.247.0/24", "10.1.49.0/24")
            .replace("172.17.247.3", "10.1.49.3")
    );
    let f = with_code(&block, lint::POOL_MISMATCH);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].message.contains("172.18.0.0/26"), "{}", f[0].message);
    // Overlapping pools.
    let overlap = format!(
        "{CANAL}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: wide}}\nspec: {{cidr: 10.0.0.0/8}}\n"
    );
    let f = with_code(&overlap, lint::POOL_MISMATCH);
    assert!(
        f.iter()
            .any(|f| f.resource == "IPPool canal" && f.message.contains("IPPool wide")),
        "{f:#?}"
    );
    // Without pools, addresses are not judged.
    let no_pool = CANAL
        .replacen("kind: IPPool", "kind: GlobalNetworkSet", 1)
        .replace("spec: {cidr: 10.1.0.0/16}", "spec: {nets: [10.1.0.0/16]}");
    assert!(
        with_code(&no_pool, lint::POOL_MISMATCH).is_empty(),
        "{no_pool}"
    );
}

#[test]
fn duplicate_address_between_endpoints() {
    let yaml = format!(
        "{PODS}apiVersion: v1\nkind: Pod\nmetadata: {{name: web-c, namespace: default, labels: {{app: web}}}}\nspec: {{nodeName: node-2}}\nstatus: {{podIP: 10.244.2.10}}\n"
    );
    let f = with_code(&yaml, lint::DUPLICATE_ADDRESS);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(
        f[0].message.contains("10.244.2.10") && f[0].message.contains("default/web-c"),
        "{}",
        f[0].message
    );
    assert_clean(
        "distinct addresses",
        &yaml.replacen(
            "status: {podIP: 10.244.2.10}\n",
            "status: {podIP: 10.244.2.11}\n",
            1,
        ),
    );
    // Two host endpoints of one node listing its address (eth0 and a wildcard) are fine.
    let heps = format!(
        "{}apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: node-1-all, labels: {{role: node}}}}\nspec: {{node: node-1, interfaceName: '*', expectedIPs: [192.168.0.1], profiles: [projectcalico-default-allow]}}\n",
        hep("node-1", "192.168.0.1")
    );
    assert!(with_code(&heps, lint::DUPLICATE_ADDRESS).is_empty());
}

#[test]
fn codes_are_stable_and_unique() {
    let codes: Vec<&str> = lint::CODES.iter().map(|c| c.0).collect();
    assert_eq!(
        codes,
        [
            "missing-host-endpoint",
            "missing-profile",
            "deny-only-isolates",
            "selector-matches-nothing",
            "shadowed-rule",
            "missing-tier",
            "failsafe-lockout",
            "pool-mismatch",
            "duplicate-address",
        ]
    );
    let json = serde_json::to_value(Finding {
        code: lint::MISSING_TIER,
        severity: Severity::Error,
        resource: "r".into(),
        message: "m".into(),
        fix: "f".into(),
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"code": "missing-tier", "severity": "error", "resource": "r", "message": "m", "fix": "f"})
    );
}
