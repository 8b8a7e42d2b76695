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
use common::policy_sets::SETS;

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
