//! What `reach` predicts is what packets do: a lab of nine pods (namespaces x, y, z; pods a, b,
//! c; every pod serving TCP and UDP on ports 80 and 81) with the agent on every node, and policy
//! sets applied one after another. After each, `gingham lab probe` (real packets) must equal
//! `gingham reach` (the policy engine) on every pair, for TCP 80, TCP 81 and UDP 81. On one
//! flat subnet, and across two racks routed by VXLAN and by BGP.
//! A system test: root, iproute2, nftables; BIRD for the BGP lab.

mod common;

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    common::ok_in(args, stdin)
}

use common::Fabric;

/// The lab's documents: pods a, b, c in namespaces x, y, z (the lab schedules them over the
/// nodes in turn), one pool and what the fabric needs.
fn cluster(f: Fabric) -> String {
    let mut y = format!("{}{}", f.pool("pods", "10.244.0.0/16", ""), f.docs());
    for ns in ["x", "y", "z"] {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        ));
        for pod in ["a", "b", "c"] {
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec: {{containers: [{{name: s, ports: [{{name: http, containerPort: 80}}, {{name: alt, containerPort: 81}}, {{containerPort: 80, protocol: UDP}}, {{name: alt-udp, containerPort: 81, protocol: UDP}}]}}]}}\n---\n"
            ));
        }
    }
    y.trim_end_matches("---\n").to_owned()
}

/// Policy sets: Kubernetes NetworkPolicy features and Calico ones. `{yb}` is y/b's address.
const SETS: &[(&str, &str)] = &[
    ("no policy", ""),
    (
        "deny all ingress in x",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    ),
    (
        "deny all egress in y",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-out, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress]}\n",
    ),
    (
        "x only from x",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: same-ns, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]\n",
    ),
    (
        "x/a from pod=b anywhere (one peer)",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-anywhere, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]\n",
    ),
    (
        "x/a from namespace y or from x/c (two peers)",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: two-peers, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: c}}}]}]\n",
    ),
    (
        "x/a TCP 80 only",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: tcp80, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80}]}]\n",
    ),
    (
        "x/a TCP 80-81 by endPort",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: endport, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{protocol: TCP, port: 80, endPort: 81}]}]\n",
    ),
    (
        "x/a UDP 81 only",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: udp81, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{protocol: UDP, port: 81}]}]\n",
    ),
    (
        "x/a from pod In (b, c)",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: in-bc, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]\n",
    ),
    (
        "x/a from a block except y/b",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ipblock, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [\"{yb}/32\"]}}]}]\n",
    ),
    (
        "x/a egress only to y on TCP 80",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: egress-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]\n",
    ),
    (
        "x/b from y and, by another policy, from z",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-z, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]\n",
    ),
    (
        "x/a to the named port http only",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: http}]}]\n",
    ),
    (
        "Calico: deny TCP 81 to every c, then allow",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-81-c}\nspec:\n  order: 10\n  selector: pod == 'c'\n  ingress:\n  - {action: Deny, protocol: TCP, destination: {ports: [81]}}\n  - {action: Allow}\n",
    ),
    (
        "Calico: z from everything but pod a (notSelector)",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: not-a, namespace: z}\nspec:\n  selector: all()\n  ingress:\n  - {action: Allow, source: {notSelector: pod == 'a'}}\n",
    ),
    (
        "Calico: a tier passing x, dropping the rest",
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.pass-x}\nspec:\n  tier: sec\n  selector: all()\n  types: [Ingress]\n  ingress:\n  - {action: Pass, source: {namespaceSelector: ns == 'x'}}\n",
    ),
    (
        "Calico: Log then Deny UDP to b",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: log-b}\nspec:\n  selector: pod == 'b'\n  ingress:\n  - {action: Log}\n  - {action: Deny, protocol: UDP}\n  - {action: Allow, protocol: TCP}\n",
    ),
    (
        "Calico: c only from a GlobalNetworkSet holding y/b",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: trusted, labels: {role: trusted}}\nspec: {nets: [\"{yb}/32\"]}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: c-trusted}\nspec:\n  selector: pod == 'c'\n  ingress:\n  - {action: Allow, source: {selector: role == 'trusted'}}\n",
    ),
    (
        "Calico: Deny before Allow at equal order",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a-deny-y}\nspec:\n  order: 50\n  selector: pod == 'a'\n  ingress: [{action: Deny, source: {namespaceSelector: ns == 'y'}}]\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: b-allow-all}\nspec:\n  order: 50\n  selector: pod == 'a'\n  ingress: [{action: Allow}]\n",
    ),
];

/// Once the agents have programmed every write so far, the packets agree with `reach` on
/// every pair (or the test fails with both matrices); every server listens, so each cell is
/// connected or no-answer.
fn agree(d: &str, ds: &str, what: &str) {
    common::wait_programmed(d);
    for (proto, port) in [("TCP", 80), ("TCP", 81), ("UDP", 81)] {
        let port_s = port.to_string();
        let reach = ok(
            &[
                "reach",
                "--datastore",
                ds,
                "--protocol",
                proto,
                "--port",
                &port_s,
                "-o",
                "json",
            ],
            None,
        );
        let want: serde_json::Value = serde_json::from_str(&reach).unwrap();
        let got = common::probe(d, proto, port);
        let endpoints: Vec<&str> = want["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(endpoints.len(), 9, "{reach}");
        let same = std::panic::catch_unwind(|| {
            common::assert_probe(what, &got, &endpoints, &|from, to| {
                if want["allowed"][from][to] == true {
                    "connected"
                } else {
                    "no-answer"
                }
            })
        });
        if same.is_err() {
            let table = |args: &[&str]| ok(args, None);
            panic!(
                "{what}, {proto}/{port}: packets disagree with reach\nreach:\n{}\nprobe:\n{}",
                table(&[
                    "reach",
                    "--datastore",
                    ds,
                    "--protocol",
                    proto,
                    "--port",
                    &port_s
                ]),
                table(&[
                    "lab",
                    "probe",
                    "--dir",
                    d,
                    "--protocol",
                    proto,
                    "--port",
                    &port_s,
                    "--timeout-ms",
                    "500"
                ])
            );
        }
    }
}

/// How policy sets are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `gingham apply` and `gingham delete`, to the datastore.
    Gingham,
    /// A lab with `spec.kubernetes: true`: Kubernetes NetworkPolicies with `kubectl apply`
    /// and `kubectl delete` (kube-controllers writes their Calico policies), Calico resources
    /// with `gingham`.
    Kubectl,
}

/// Writes (`delete` false) or deletes a policy set; through kubectl, waits until the
/// controllers have written (or removed) every `knp.default.<name>`.
fn write_set(via: Via, lab: &common::TestLab, kubeconfig: &str, yaml: &str, delete: bool) {
    let ds = lab.ds.as_str();
    let verb = if delete { "delete" } else { "apply" };
    let docs = gingham_model::load::parse_documents(yaml).unwrap();
    let is_k8s = |d: &serde_json::Value| d["apiVersion"] == "networking.k8s.io/v1";
    let (k8s, calico): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| via == Via::Kubectl && is_k8s(d));
    let text = |docs: &[serde_json::Value]| {
        docs.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if !calico.is_empty() {
        ok(&[verb, "-f", "-", "--datastore", ds], Some(&text(&calico)));
    }
    if k8s.is_empty() {
        return;
    }
    common::kubectl(kubeconfig, &[verb, "-f", "-"], Some(&text(&k8s)));
    for d in &k8s {
        let ns = d["metadata"]["namespace"].as_str().unwrap();
        let name = format!("knp.default.{}", d["metadata"]["name"].as_str().unwrap());
        common::wait_until(
            &format!("{ns}/{name} {verb}d by the controllers"),
            5,
            || {
                let out = common::gingham_in(
                    &["get", "networkpolicy", "-n", ns, &name, "--datastore", ds],
                    None,
                );
                if out.status.success() != delete {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        );
    }
}

/// Brings up a lab on fabric `f`, then for each of `sets` (names of [`SETS`]; all when
/// empty) applies it, checks that packets agree with `reach`, and deletes it; then seed 004.
fn agreement(f: Fabric, prefix: &str, sets: &[&str]) {
    agreement_via(f, prefix, sets, Via::Gingham);
}

fn agreement_via(f: Fabric, prefix: &str, sets: &[&str], via: Via) {
    f.require();
    let extra = if via == Via::Kubectl {
        gingham_testkit::require_tool("kubectl");
        "kubernetes: true"
    } else {
        ""
    };
    let lab = common::lab_up(prefix, &f.spec(extra), &cluster(f));
    let kubeconfig = if via == Via::Kubectl {
        ok(&["lab", "kubeconfig", "--dir", &lab.dir], None)
            .trim()
            .to_owned()
    } else {
        String::new()
    };
    let (d, ds) = (lab.dir.as_str(), lab.ds.as_str());
    f.wait_converged(d);
    let yb = common::pod_address(&lab, "y/b");
    let mut ran = 0;
    for (what, yaml) in SETS {
        if !sets.is_empty() && !sets.contains(what) {
            continue;
        }
        ran += 1;
        let yaml = yaml.replace("{yb}", &yb);
        if !yaml.is_empty() {
            write_set(via, &lab, &kubeconfig, &yaml, false);
        }
        agree(d, ds, what);
        if !yaml.is_empty() {
            write_set(via, &lab, &kubeconfig, &yaml, true);
        }
    }
    assert_eq!(
        ran,
        if sets.is_empty() {
            SETS.len()
        } else {
            sets.len()
        },
        "{sets:?}"
    );
    if via == Via::Kubectl {
        // The controllers own the namespace profiles there (they would write kns.z back).
        return;
    }
    // Seed 004: the namespace profile of z disappears: z drops everything; restoring it fixes it.
    let profile = ok(
        &["get", "profile", "kns.z", "-o", "yaml", "--datastore", ds],
        None,
    );
    ok(&["delete", "profile", "kns.z", "--datastore", ds], None);
    agree(d, ds, "profile kns.z missing");
    let restored: String = profile
        .lines()
        .filter(|l| !l.trim_start().starts_with("resourceVersion:"))
        .map(|l| format!("{l}\n"))
        .collect();
    ok(&["apply", "-f", "-", "--datastore", ds], Some(&restored));
    agree(d, ds, "profile kns.z restored");
}

#[test]
fn sys_packets_agree_with_reach() {
    agreement(Fabric::Flat, "g", &[]);
}

/// The same sets in a lab that kubectl drives: Kubernetes NetworkPolicies applied and deleted
/// with `kubectl`, pods made by the lab's kubelet through the CNI plugin's Kubernetes path.
#[test]
fn sys_packets_agree_with_reach_through_kubectl() {
    agreement_via(Fabric::Flat, "q", &[], Via::Kubectl);
}

/// Across racks, pods routed by VXLAN (CrossSubnet: the tunnel between racks, plain routes
/// within one).
#[test]
fn sys_packets_agree_with_reach_in_a_vxlan_lab() {
    agreement(Fabric::Vxlan, "v", &[]);
}

/// Across racks, pods routed by BGP (the node mesh and the racks' router).
#[test]
fn sys_packets_agree_with_reach_in_a_bird_lab() {
    agreement(Fabric::Bird, "b", &[]);
}
