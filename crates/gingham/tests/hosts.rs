//! Host endpoints enforced by the agent, with real packets between lab nodes and pods: the
//! node's own traffic (input/output), forwarded traffic (applyOnForward), preDNAT, doNotTrack
//! (untracked, in both directions), failsafe ports before everything, wildcard (`*`) host
//! endpoints, and traffic from a host to its own pods, which is never policed. At every step
//! each flow must do what `gingham explain` (the reference evaluator) says.
//! A system test: root, iproute2, nftables.

mod common;

use common::ok_in;

struct Lab {
    dir: String,
    ds: String,
}

/// (from, to, port): nodes are `node-a`, `node-b`; pods `default/web` (node-a) and
/// `default/client` (node-b).
type Flow = (&'static str, &'static str, u16);

const FLOWS: &[Flow] = &[
    ("node-b", "node-a", 80),
    ("node-b", "node-a", 22),
    ("node-b", "node-a", 8080),
    ("node-b", "node-a", 9101),
    ("node-a", "node-b", 80),
    ("node-a", "node-b", 179),
    ("default/client", "default/web", 80),
    ("default/client", "default/web", 8080),
    ("node-a", "default/web", 8080),
    ("default/web", "node-b", 80),
    ("default/web", "node-a", 80),
];

impl Lab {
    /// Whether the flow connects (every flow's server listens: no refused here).
    fn connects(&self, (from, to, port): Flow) -> bool {
        let outcome = common::try_outcome(&self.dir, from, to, "TCP", port);
        assert_ne!(outcome, "refused", "{from} -> {to}:{port}: nothing listens");
        outcome == "connected"
    }

    /// The reference evaluator's verdict, with its explanation.
    fn predicted(&self, (from, to, port): Flow) -> (bool, String) {
        let text = common::explain(&self.ds, from, to, port);
        (text.contains("ALLOWED"), text)
    }

    /// Once the agents have programmed every write so far, every flow does what the evaluator
    /// predicts; returns the verdicts.
    fn agree(&self, step: &str) -> Vec<bool> {
        common::wait_programmed(&self.dir);
        let mut out = Vec::new();
        for &flow in FLOWS {
            let (allowed, why) = self.predicted(flow);
            assert_eq!(
                self.connects(flow),
                allowed,
                "{step}: {flow:?} should be {} as explain says:\n{why}",
                if allowed { "allowed" } else { "blocked" }
            );
            out.push(allowed);
        }
        out
    }

    fn expect(&self, step: &str, verdicts: &[bool], flow: Flow, allowed: bool) {
        let i = FLOWS
            .iter()
            .position(|f| *f == flow)
            .expect("a listed flow");
        assert_eq!(verdicts[i], allowed, "{step}: {flow:?}");
    }

    fn apply(&self, yaml: &str) {
        ok_in(&["apply", "-f", "-", "--datastore", &self.ds], Some(yaml));
    }

    fn delete(&self, yaml: &str) {
        ok_in(&["delete", "-f", "-", "--datastore", &self.ds], Some(yaml));
    }
}

const CLUSTER: &str = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.245.0.0/16}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: default}, spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}, {containerPort: 8080}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: node-b}}
"#;

const HEP: &str = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-a-eth0, labels: {role: node}}\nspec: {node: node-a, interfaceName: eth0, expectedIPs: [172.31.0.1]}\n";

const ALLOW_HTTP: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: allow-http}\nspec:\n  selector: role == 'node'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]\n  egress: [{action: Allow}]\n";

const FORWARD: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: forward-no-8080}\nspec:\n  selector: role == 'node'\n  applyOnForward: true\n  types: [Ingress]\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}, {action: Allow}]\n";

const PRE_DNAT: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: prednat-no-node-b}\nspec:\n  selector: role == 'node'\n  preDNAT: true\n  applyOnForward: true\n  types: [Ingress]\n  ingress: [{action: Deny, source: {nets: [172.31.0.2/32]}}]\n";

const UNTRACKED: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: untracked-9101}\nspec:\n  selector: role == 'node'\n  doNotTrack: true\n  applyOnForward: true\n  ingress: [{action: Allow, protocol: TCP, source: {nets: [172.31.0.0/24]}, destination: {ports: [9101, 9102]}}]\n  egress: [{action: Allow, protocol: TCP, source: {ports: [9101, 9102]}}]\n";

const WILDCARD: &str = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-a-all, labels: {role: node}}\nspec: {node: node-a, interfaceName: '*', expectedIPs: [172.31.0.1]}\n";

#[test]
fn sys_host_endpoints_with_real_packets() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let made = common::lab_up(
        "h",
        "{nodes: [node-a, node-b], nodePorts: [22, 80, 179, 8080, 9101, 9102]}",
        CLUSTER,
    );
    let lab = Lab {
        dir: made.dir.clone(),
        ds: made.ds.clone(),
    };

    // No host endpoint: the nodes are not policed; only workload-to-own-host is dropped
    // (DefaultEndpointToHostAction Drop).
    let open = lab.agree("no host endpoint");
    assert_eq!(open.iter().filter(|a| !**a).count(), 1, "{open:?}");
    lab.expect(
        "no host endpoint",
        &open,
        ("default/web", "node-a", 80),
        false,
    );

    // A host endpoint with no policy and no profile: node-a's own traffic is denied both ways
    // except the failsafe ports; forwarded traffic and its own pods are untouched.
    lab.apply(HEP);
    let step = "bare host endpoint";
    let v = lab.agree(step);
    lab.expect(step, &v, ("node-b", "node-a", 80), false);
    lab.expect(step, &v, ("node-b", "node-a", 22), true);
    lab.expect(step, &v, ("node-a", "node-b", 80), false);
    lab.expect(step, &v, ("node-a", "node-b", 179), true);
    lab.expect(step, &v, ("default/client", "default/web", 8080), true);
    lab.expect(step, &v, ("node-a", "default/web", 8080), true);
    lab.expect(step, &v, ("default/web", "node-b", 80), true);

    // Normal policy: HTTP in, anything out.
    lab.apply(ALLOW_HTTP);
    let step = "allow-http";
    let v = lab.agree(step);
    lab.expect(step, &v, ("node-b", "node-a", 80), true);
    lab.expect(step, &v, ("node-b", "node-a", 8080), false);
    lab.expect(step, &v, ("node-a", "node-b", 80), true);

    // applyOnForward: forwarded traffic into node-a's pods is policed at its host endpoint.
    lab.apply(FORWARD);
    let step = "applyOnForward";
    let v = lab.agree(step);
    lab.expect(step, &v, ("default/client", "default/web", 8080), false);
    lab.expect(step, &v, ("default/client", "default/web", 80), true);
    lab.expect(step, &v, ("node-a", "default/web", 8080), true);

    // preDNAT: node-b is denied before anything else, except on failsafe ports; pods on
    // node-b (other source addresses) are not.
    lab.apply(PRE_DNAT);
    let step = "preDNAT";
    let v = lab.agree(step);
    lab.expect(step, &v, ("node-b", "node-a", 80), false);
    lab.expect(step, &v, ("node-b", "node-a", 22), true);
    lab.expect(step, &v, ("default/client", "default/web", 80), true);
    lab.delete(PRE_DNAT);
    lab.delete(FORWARD);

    // doNotTrack: 9101 is allowed untracked (both ways, as untracked replies need their own
    // rule) while normal policy still refuses it.
    let step = "doNotTrack";
    let v = lab.agree("before doNotTrack");
    lab.expect(step, &v, ("node-b", "node-a", 9101), false);
    lab.apply(UNTRACKED);
    let v = lab.agree(step);
    lab.expect(step, &v, ("node-b", "node-a", 9101), true);
    lab.expect(step, &v, ("node-b", "node-a", 8080), false);
    // Untracked for real: node-a's conntrack table knows the HTTP connections, not those to
    // 9102 (a port no other step allows).
    common::wait_programmed(&lab.dir);
    assert!(lab.connects(("node-b", "node-a", 9102)));
    let table = ok_in(
        &[
            "lab",
            "exec",
            "--dir",
            &lab.dir,
            "node-a",
            "--",
            "cat",
            "/proc/net/nf_conntrack",
        ],
        None,
    );
    assert!(table.contains("dport=80 "), "{table}");
    assert!(!table.contains("dport=9102 "), "{table}");

    // A wildcard host endpoint polices every interface the same way.
    lab.delete(HEP);
    lab.apply(WILDCARD);
    let step = "wildcard";
    let v = lab.agree(step);
    lab.expect(step, &v, ("node-b", "node-a", 80), true);
    lab.expect(step, &v, ("node-b", "node-a", 8080), false);
    lab.expect(step, &v, ("node-b", "node-a", 22), true);
    lab.expect(step, &v, ("node-a", "default/web", 8080), true);

    // Everything removed: back to the start.
    lab.delete(WILDCARD);
    lab.delete(UNTRACKED);
    lab.delete(ALLOW_HTTP);
    assert_eq!(lab.agree("all removed"), open);
}
