//! The seed stories (`../shared/seeds/`) reproduced with real packets in a lab with the agent,
//! each symptom first and then the fix; `gingham explain` names the cause of each blocked flow.
//! On one flat subnet and across two racks routed by VXLAN and by BGP.
//! A system test: root, iproute2, nftables; BIRD for the BGP lab.

mod common;

use common::Fabric;

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    common::ok_in(args, stdin)
}

struct Lab {
    dir: String,
    ds: String,
}

impl Lab {
    /// What one TCP connection from `from` (a pod or a node) to `to` (a pod) on `port` does.
    fn outcome(&self, from: &str, to: &str, port: u16) -> String {
        common::try_outcome(&self.dir, from, to, "TCP", port)
    }

    /// Asserts what each flow does, once the agents have programmed every write so far. Each
    /// blocked flow shows up in `gingham flows --denied` within 1 s with the cause `explain`
    /// gives; flows that get through are not logged.
    fn expect(&self, flows: &[(&str, &str, u16, &str)]) {
        common::wait_programmed(&self.dir);
        for (from, to, port, want) in flows {
            if *want == "no-answer" {
                let record = common::try_denied_and_flow(&self.dir, from, to, *port);
                let explained = self.explain(from, to, *port);
                assert_eq!(
                    record["cause"].as_str().unwrap_or_default(),
                    common::explain_cause(&explained),
                    "{from} -> {to}:{port}: the flow log's cause is not explain's:\n{record:#}\n{explained}"
                );
                continue;
            }
            let since = jiff::Timestamp::now();
            assert_eq!(
                self.outcome(from, to, *port),
                *want,
                "{from} -> {to}:{port}"
            );
            let logged: Vec<_> = common::flows(&self.dir, false)
                .into_iter()
                .filter(|r| common::flow_is(r, from, to, *port, since))
                .collect();
            assert!(
                logged.is_empty(),
                "{from} -> {to}:{port} got through, yet was logged: {logged:#?}"
            );
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

/// The seed's cluster: the pods of node B (node-b on a flat subnet, node-c in the other rack in
/// a rack lab) are in the text as `NODE_B`.
const CLUSTER: &str = r#"apiVersion: v1
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
- {apiVersion: v1, kind: Pod, metadata: {name: web-b, namespace: default}, spec: {nodeName: NODE_B, containers: [{name: w, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: NODE_B}}
- apiVersion: v1
  kind: Pod
  metadata: {name: kubernetes-dashboard, namespace: kube-system, labels: {k8s-app: kubernetes-dashboard}}
  spec: {nodeName: node-a, containers: [{name: d, ports: [{containerPort: 22}, {containerPort: 8443}]}]}
- {apiVersion: v1, kind: Pod, metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}, spec: {nodeName: NODE_B, containers: [{name: c, ports: [{containerPort: 22}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: nginx, namespace: test, labels: {run: nginx}}, spec: {nodeName: node-a, containers: [{name: n, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: access, namespace: test, labels: {access: "true"}}, spec: {nodeName: NODE_B}}
- {apiVersion: v1, kind: Pod, metadata: {name: no-access, namespace: test}, spec: {nodeName: NODE_B}}
"#;

#[test]
fn sys_seed_stories_with_real_packets() {
    seed_stories(Fabric::Flat, "s");
}

/// The same stories across two racks routed by VXLAN (node B is node-c, in the other rack).
#[test]
fn sys_seed_stories_with_real_packets_in_a_vxlan_lab() {
    seed_stories(Fabric::Vxlan, "v");
}

/// The same stories across two racks routed by BGP (node B is node-c, in the other rack).
#[test]
fn sys_seed_stories_with_real_packets_in_a_bird_lab() {
    seed_stories(Fabric::Bird, "b");
}

fn seed_stories(f: Fabric, prefix: &str) {
    f.require();
    let far = f.far_node();
    let made = common::lab_up(
        prefix,
        &f.spec(""),
        &format!(
            "{}{}{}",
            f.pool("pods", "10.244.0.0/16", ""),
            f.docs(),
            CLUSTER.replace("NODE_B", far)
        ),
    );
    f.wait_converged(&made.dir);
    let lab = Lab {
        dir: made.dir.clone(),
        ds: made.ds.clone(),
    };
    const C: &str = "connected";
    const R: &str = "refused";
    const N: &str = "no-answer";

    // (d) Seed 003: the pod's default route via 169.254.1.1 works at once (proxy ARP answers, the
    // first packet is not lost).
    assert_eq!(
        lab.outcome("default/client", "default/web-a", 80),
        C,
        "first connection of a fresh pod"
    );

    // (a) Seed 000: with an isolation policy that only lets nodes in, a node cannot reach a pod on
    // another node: its address belongs to no endpoint. Its own pods stay reachable.
    let isolation = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: allow-from-nodes}\nspec:\n  selector: projectcalico.org/namespace == 'default'\n  ingress: [{action: Allow, source: {selector: role == 'node'}}]\n";
    lab.apply(isolation);
    lab.expect(&[
        ("node-a", "default/web-b", 80, N),
        (far, "default/web-b", 80, C),
        ("default/client", "default/web-b", 80, N),
    ]);
    let why = lab.explain("node-a", "default/web-b", 80);
    assert!(
        why.contains("DENIED") && why.contains("HostEndpoint"),
        "{why}"
    );
    // The fix: a host endpoint for node-a with its addresses and the label the policy allows:
    // its address on the underlay, and its tunnel address (VXLAN across racks) that it sends
    // from to pods beyond the tunnel.
    let state = common::lab_state(&lab.dir);
    let mut ips = vec![state["nodes"][0]["ip"].as_str().unwrap().to_owned()];
    assert_eq!(state["nodes"][0]["name"], "node-a");
    let node: serde_json::Value = serde_json::from_str(&ok(
        &[
            "get",
            "node",
            "node-a",
            "-o",
            "json",
            "--datastore",
            &lab.ds,
        ],
        None,
    ))
    .unwrap();
    ips.extend(
        node["spec"]["ipv4VXLANTunnelAddr"]
            .as_str()
            .map(str::to_owned),
    );
    assert_eq!(ips.len(), if f == Fabric::Vxlan { 2 } else { 1 }, "{node}");
    let hep = &format!(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: node-a-eth0, labels: {{role: node}}}}\nspec: {{node: node-a, interfaceName: eth0, expectedIPs: [{}], profiles: [projectcalico-default-allow]}}\n",
        ips.join(", ")
    );
    lab.apply(hep);
    lab.expect(&[
        ("node-a", "default/web-b", 80, C),
        // Reached, nothing listens: policy let it through.
        ("node-a", "default/web-b", 81, R),
        ("default/client", "default/web-b", 80, N),
    ]);
    assert!(
        lab.explain("node-a", "default/web-b", 80)
            .contains("ALLOWED")
    );
    lab.delete(hep);
    lab.delete(isolation);

    // (b) Seed 001: the DefaultDeny namespace and the beta `access-nginx` policy.
    lab.expect(&[
        ("test/no-access", "test/nginx", 80, N),
        ("test/access", "test/nginx", 80, N),
        ("default/client", "default/web-b", 80, C),
    ]);
    let access = "kind: NetworkPolicy\napiVersion: extensions/v1beta1\nmetadata: {name: access-nginx, namespace: test}\nspec:\n  podSelector: {matchLabels: {run: nginx}}\n  ingress: [{from: [{podSelector: {matchLabels: {access: \"true\"}}}]}]\n";
    lab.apply(access);
    lab.expect(&[
        ("test/access", "test/nginx", 80, C),
        // Every port is open to test/access: where nothing listens, it is refused; a policy
        // never rejects, so test/no-access gets no answer there either.
        ("test/access", "test/nginx", 81, R),
        ("test/no-access", "test/nginx", 80, N),
        ("test/no-access", "test/nginx", 81, N),
    ]);
    assert!(
        lab.explain("test/no-access", "test/nginx", 80)
            .contains("end of tier default")
    );
    lab.delete(access);

    // (c) Seed 002: the GlobalNetworkPolicy denying TCP 22 to the dashboard also isolates it.
    lab.expect(&[
        ("test/access", "test/nginx", 80, N),
        ("default/client", "kube-system/kubernetes-dashboard", 22, C),
    ]);
    let ssh = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-ssh-dashboard}\nspec:\n  selector: k8s-app == 'kubernetes-dashboard'\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}]\n";
    lab.apply(ssh);
    lab.expect(&[
        ("default/client", "kube-system/kubernetes-dashboard", 22, N),
        (
            "default/client",
            "kube-system/kubernetes-dashboard",
            8443,
            N,
        ),
        ("default/client", "kube-system/coredns", 22, C),
    ]);
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
    lab.expect(&[
        (
            "default/client",
            "kube-system/kubernetes-dashboard",
            8443,
            C,
        ),
        ("default/client", "kube-system/kubernetes-dashboard", 22, N),
    ]);

    // (e) Seed 004 (the missing namespace profile) is in the agreement test.
}
