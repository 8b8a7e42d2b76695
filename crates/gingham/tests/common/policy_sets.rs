//! The agreement test's cluster and its 20 policy sets, one copy for every test that uses them
//! (`agreement`: packets against `reach`; `lint`: no false positives; `diff`: `diff` and
//! `apply --dry-run` against two `reach` runs). The pods they are written for: a, b, c (label
//! `pod`) in namespaces x, y, z (label `ns`), each serving TCP and UDP on ports 80 and 81 (named
//! `http` TCP 80, `alt` TCP 81, `alt-udp` UDP 81).

/// Namespaces x, y, z (labelled `ns: <name>`), each with pods a, b, c (labelled `pod: <name>`)
/// with [`CONTAINERS`]; no node, no address (the lab places and addresses them).
pub fn namespaces_and_pods() -> String {
    let mut y = String::new();
    for ns in ["x", "y", "z"] {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        ));
        for pod in ["a", "b", "c"] {
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec: {{containers: {CONTAINERS}}}\n---\n"
            ));
        }
    }
    y.trim_end_matches("---\n").to_owned()
}

/// Policy sets: Kubernetes NetworkPolicy features and Calico ones. `{yb}` is y/b's address.
pub const SETS: &[(&str, &str)] = &[
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

/// The containers of every pod the sets are written for.
pub const CONTAINERS: &str = "[{name: s, ports: [{name: http, containerPort: 80}, {name: alt, containerPort: 81}, {containerPort: 80, protocol: UDP}, {name: alt-udp, containerPort: 81, protocol: UDP}]}]";

/// The pods as documents for questions answered from policy alone (`reach -f`, `diff`,
/// `apply`): x/a, x/b, ... z/c at 10.244.0.1, 10.244.0.2, ..., on node-1 and node-2 in turn.
pub fn offline_cluster() -> String {
    let mut y = String::new();
    let mut n = 0;
    for ns in ["x", "y", "z"] {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        ));
        for pod in ["a", "b", "c"] {
            n += 1;
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec: {{nodeName: node-{}, containers: {CONTAINERS}}}\nstatus: {{podIP: {}}}\n---\n",
                1 + n % 2,
                offline_address(ns, pod)
            ));
        }
    }
    y.trim_end_matches("---\n").to_owned()
}

/// The address of a pod of [`offline_cluster`].
pub fn offline_address(ns: &str, pod: &str) -> String {
    let n = ["x", "y", "z"].iter().position(|x| *x == ns).unwrap() * 3
        + ["a", "b", "c"].iter().position(|p| *p == pod).unwrap()
        + 1;
    format!("10.244.0.{n}")
}

/// A set's documents for [`offline_cluster`] (`{yb}` filled in).
pub fn offline_set(yaml: &str) -> String {
    yaml.replace("{yb}", &offline_address("y", "b"))
}
