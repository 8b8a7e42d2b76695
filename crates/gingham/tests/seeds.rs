//! The seed stories (`../shared/seeds/`) reproduced with real packets in a lab with the agent,
//! each symptom first and then the fix; `gingham explain` names the cause of each blocked flow.
//! A system test: root, iproute2, nftables.

mod common;

use std::time::{Duration, Instant};

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    common::ok_in(args, stdin)
}

struct Lab {
    dir: String,
    ds: String,
    ips: std::collections::BTreeMap<String, String>,
}

impl Lab {
    /// Whether a TCP connection from `from` (a pod or a node) to `to` (a pod) on `port` succeeds.
    fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        let ip = &self.ips[to];
        let out = ok(
            &[
                "lab",
                "exec",
                "--dir",
                &self.dir,
                from,
                "--",
                env!("CARGO_BIN_EXE_gingham"),
                "lab",
                "connect",
                "--protocol",
                "TCP",
                "--port",
                &port.to_string(),
                "--timeout-ms",
                "500",
                ip,
            ],
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[ip.as_str()] == true
    }

    /// Waits (the agents follow the datastore) until the connection has the expected outcome.
    fn expect(&self, from: &str, to: &str, port: u16, allowed: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connects(from, to, port) != allowed {
            assert!(
                Instant::now() < deadline,
                "{from} -> {to}:{port} should be {}",
                if allowed { "allowed" } else { "blocked" }
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn apply(&self, yaml: &str) {
        ok(&["apply", "-f", "-", "--datastore", &self.ds], Some(yaml));
    }

    fn delete(&self, yaml: &str) {
        ok(&["delete", "-f", "-", "--datastore", &self.ds], Some(yaml));
    }

    fn explain(&self, from: &str, to: &str, port: u16) -> String {
        common::explain(&self.ds, from, to, port)
    }
}

const CLUSTER: &str = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Namespace, metadata: {name: kube-system}}
- apiVersion: v1
  kind: Namespace
  metadata:
    name: test
    annotations: {net.beta.kubernetes.io/network-policy: '{"ingress": {"isolation": "DefaultDeny"}}'}
- {apiVersion: v1, kind: Pod, metadata: {name: web-a, namespace: default}, spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: web-b, namespace: default}, spec: {nodeName: node-b, containers: [{name: w, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: node-b}}
- apiVersion: v1
  kind: Pod
  metadata: {name: kubernetes-dashboard, namespace: kube-system, labels: {k8s-app: kubernetes-dashboard}}
  spec: {nodeName: node-a, containers: [{name: d, ports: [{containerPort: 22}, {containerPort: 8443}]}]}
- {apiVersion: v1, kind: Pod, metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}, spec: {nodeName: node-b, containers: [{name: c, ports: [{containerPort: 22}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: nginx, namespace: test, labels: {run: nginx}}, spec: {nodeName: node-a, containers: [{name: n, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: access, namespace: test, labels: {access: "true"}}, spec: {nodeName: node-b}}
- {apiVersion: v1, kind: Pod, metadata: {name: no-access, namespace: test}, spec: {nodeName: node-b}}
"#;

#[test]
fn sys_seed_stories_with_real_packets() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let made = common::lab_up("s", "{nodes: [node-a, node-b]}", CLUSTER);
    let (dir, ds, up) = (made.dir.clone(), made.ds.clone(), made.up.clone());
    let ips = up
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (pod, _node, ip) = (w.next()?, w.next()?, w.next()?);
            pod.contains('/').then(|| (pod.to_owned(), ip.to_owned()))
        })
        .collect();
    let lab = Lab { dir, ds, ips };

    // (d) Seed 003: the pod's default route via 169.254.1.1 works at once (proxy ARP answers, the
    // first packet is not lost).
    assert!(
        lab.connects("default/client", "default/web-a", 80),
        "first connection of a fresh pod"
    );

    // (a) Seed 000: with an isolation policy that only lets nodes in, a node cannot reach a pod on
    // another node: its address belongs to no endpoint. Its own pods stay reachable.
    let isolation = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: allow-from-nodes}\nspec:\n  selector: projectcalico.org/namespace == 'default'\n  ingress: [{action: Allow, source: {selector: role == 'node'}}]\n";
    lab.apply(isolation);
    lab.expect("node-a", "default/web-b", 80, false);
    lab.expect("node-b", "default/web-b", 80, true);
    lab.expect("default/client", "default/web-b", 80, false);
    let why = lab.explain("node-a", "default/web-b", 80);
    assert!(
        why.contains("DENIED") && why.contains("HostEndpoint"),
        "{why}"
    );
    // The fix: a host endpoint for node-a with its address and the label the policy allows.
    let hep = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-a-eth0, labels: {role: node}}\nspec: {node: node-a, interfaceName: eth0, expectedIPs: [172.31.0.1], profiles: [projectcalico-default-allow]}\n";
    lab.apply(hep);
    lab.expect("node-a", "default/web-b", 80, true);
    assert!(
        lab.explain("node-a", "default/web-b", 80)
            .contains("ALLOWED")
    );
    lab.delete(hep);
    lab.delete(isolation);

    // (b) Seed 001: the DefaultDeny namespace and the beta `access-nginx` policy.
    lab.expect("test/no-access", "test/nginx", 80, false);
    let access = "kind: NetworkPolicy\napiVersion: extensions/v1beta1\nmetadata: {name: access-nginx, namespace: test}\nspec:\n  podSelector: {matchLabels: {run: nginx}}\n  ingress: [{from: [{podSelector: {matchLabels: {access: \"true\"}}}]}]\n";
    lab.apply(access);
    lab.expect("test/access", "test/nginx", 80, true);
    lab.expect("test/no-access", "test/nginx", 80, false);
    assert!(
        lab.explain("test/no-access", "test/nginx", 80)
            .contains("end of tier default")
    );
    lab.delete(access);

    // (c) Seed 002: the GlobalNetworkPolicy denying TCP 22 to the dashboard also isolates it.
    lab.expect(
        "default/client",
        "kube-system/kubernetes-dashboard",
        22,
        true,
    );
    let ssh = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-ssh-dashboard}\nspec:\n  selector: k8s-app == 'kubernetes-dashboard'\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}]\n";
    lab.apply(ssh);
    lab.expect(
        "default/client",
        "kube-system/kubernetes-dashboard",
        22,
        false,
    );
    lab.expect(
        "default/client",
        "kube-system/kubernetes-dashboard",
        8443,
        false,
    );
    lab.expect("default/client", "kube-system/coredns", 22, true);
    let why = lab.explain("default/client", "kube-system/kubernetes-dashboard", 22);
    assert!(
        why.contains("Denied by rule 0 of GlobalNetworkPolicy deny-ssh-dashboard"),
        "{why}"
    );
    // The fix for "deny only 22": a trailing Allow.
    lab.apply(&ssh.replace(
        "ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}]",
        "ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}, {action: Allow}]",
    ));
    lab.expect(
        "default/client",
        "kube-system/kubernetes-dashboard",
        8443,
        true,
    );
    lab.expect(
        "default/client",
        "kube-system/kubernetes-dashboard",
        22,
        false,
    );

    // (e) Seed 004 (the missing namespace profile) is in the agreement test.
}
