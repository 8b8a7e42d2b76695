//! `gingham lint` as users run it: on files and on the datastore, its JSON and exit status,
//! `--ignore`; each code on a file set that triggers it and one that must not; the seed stories
//! (the broken state names the code and the fix, the fixed state is clean); no error or warning
//! on the agreement test's policy sets nor on the examples.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::gingham_in;
use common::policy_sets::{SETS, namespaces_and_pods};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lint")
        .join(name)
        .display()
        .to_string()
}

fn example(name: &str) -> String {
    root().join("examples").join(name).display().to_string()
}

/// `gingham lint -f F... -o json [extra...]`.
fn lint(files: &[String], extra: &[&str]) -> Output {
    let mut args: Vec<&str> = vec!["lint"];
    for f in files {
        args.extend(["-f", f.as_str()]);
    }
    args.extend(["-o", "json"]);
    args.extend(extra);
    gingham_in(&args, None)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The findings of a run, after checking the JSON's shape and that the exit status is 1
/// exactly when an error was found.
fn findings(o: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(o)));
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["findings"], "{v}");
    let list = v["findings"].as_array().unwrap().clone();
    for f in &list {
        let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["code", "severity", "resource", "message", "fix"],
            "{f}"
        );
        assert!(
            ["error", "warning", "info"].contains(&f["severity"].as_str().unwrap()),
            "{f}"
        );
    }
    let errors = list.iter().any(|f| f["severity"] == "error");
    assert_eq!(
        o.status.code(),
        Some(if errors { 1 } else { 0 }),
        "{v} {}",
        stderr(o)
    );
    list
}

fn codes(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

/// No finding of severity error or warning.
fn assert_clean(what: &str, list: &[Value]) {
    let bad: Vec<&Value> = list.iter().filter(|f| f["severity"] != "info").collect();
    assert!(bad.is_empty(), "{what}: {bad:#?}");
}

const CODES: &[&str] = &[
    "missing-host-endpoint",
    "missing-profile",
    "deny-only-isolates",
    "selector-matches-nothing",
    "shadowed-rule",
    "missing-tier",
    "failsafe-lockout",
    "pool-mismatch",
    "duplicate-address",
];

/// Each code on `tests/data/lint/CODE.yaml` (over the cluster of `pods.yaml`): found, alone; on
/// `CODE-fixed.yaml`: nothing at all.
#[test]
fn each_code_is_found_and_its_fix_is_clean() {
    let pods = data("pods.yaml");
    assert_eq!(
        findings(&lint(std::slice::from_ref(&pods), &[])),
        Vec::<Value>::new()
    );
    for code in CODES {
        let broken = findings(&lint(&[pods.clone(), data(&format!("{code}.yaml"))], &[]));
        assert_eq!(codes(&broken), [*code], "{code}: {broken:#?}");
        assert!(
            !broken[0]["resource"].as_str().unwrap().is_empty()
                && !broken[0]["message"].as_str().unwrap().is_empty()
                && !broken[0]["fix"].as_str().unwrap().is_empty(),
            "{broken:#?}"
        );
        let fixed = findings(&lint(
            &[pods.clone(), data(&format!("{code}-fixed.yaml"))],
            &[],
        ));
        assert_eq!(fixed, Vec::<Value>::new(), "{code} fixed");
    }
}

#[test]
fn ignore_leaves_out_a_code_and_refuses_unknown_ones() {
    let files = [data("pods.yaml"), data("missing-host-endpoint.yaml")];
    let o = lint(&files, &["--ignore", "missing-host-endpoint"]);
    assert_eq!(findings(&o), Vec::<Value>::new());
    assert_eq!(o.status.code(), Some(0));
    // Repeatable.
    let files = [
        data("pods.yaml"),
        data("missing-tier.yaml"),
        data("shadowed-rule.yaml"),
    ];
    let o = lint(&files, &["--ignore", "missing-tier"]);
    assert_eq!(codes(&findings(&o)), ["shadowed-rule"]);
    assert_eq!(o.status.code(), Some(0), "a warning alone exits 0");
    let o = lint(
        &files,
        &["--ignore", "missing-tier", "--ignore", "shadowed-rule"],
    );
    assert_eq!(findings(&o), Vec::<Value>::new());
    // An unknown code: a usage error listing the valid ones.
    let o = lint(&files, &["--ignore", "missing-tiers"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for code in CODES {
        assert!(stderr(&o).contains(code), "{}", stderr(&o));
    }
}

#[test]
fn the_table_shows_code_resource_message_and_fix() {
    let files = [data("pods.yaml"), data("deny-only-isolates.yaml")];
    let mut args = vec!["lint"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let o = gingham_in(&args, None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("SEVERITY  CODE"), "{text}");
    assert!(
        text.contains("error     deny-only-isolates  GlobalNetworkPolicy deny-ssh-dashboard"),
        "{text}"
    );
    assert!(text.contains("fix: If it was meant"), "{text}");
    assert!(text.ends_with("1 finding: 1 error\n"), "{text}");
    let o = gingham_in(&["lint", "-f", &data("pods.yaml")], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no findings\n");
    assert_eq!(o.status.code(), Some(0));
    // The help lists the codes.
    let o = gingham_in(&["lint", "--help"], None);
    let help = String::from_utf8_lossy(&o.stdout);
    for code in CODES {
        assert!(help.contains(code), "{help}");
    }
}

/// Finds `code` in a broken state with a fix that contains `fix`.
fn assert_names(what: &str, list: &[Value], code: &str, fix: &str) {
    assert!(
        list.iter()
            .any(|f| f["code"] == code && f["fix"].as_str().unwrap().contains(fix)),
        "{what}: no {code} with a fix containing {fix:?}: {list:#?}"
    );
}

/// The seed stories (`../shared/seeds/`): lint names each broken state's cause and fix, and the
/// fixed state is clean. Seed 001 is policy working as meant (clean both ways) and seed 003 is
/// not about policy.
#[test]
fn seed_stories_broken_and_fixed() {
    let s = |f: &str| example(&format!("lab/seeds/{f}"));
    let lab = s("cluster.yaml");
    // 000: nodes without host endpoints (a lab's nodes; and with IPIP tunnel addresses).
    let broken = findings(&lint(&[lab.clone(), s("000-isolation.yaml")], &[]));
    assert_names("000 lab", &broken, "missing-host-endpoint", "HostEndpoint");
    assert_eq!(
        findings(&lint(
            &[
                lab.clone(),
                s("000-isolation.yaml"),
                s("000-fix-host-endpoint.yaml")
            ],
            &[]
        )),
        Vec::<Value>::new()
    );
    let ipip = example("reach/nodes-without-host-endpoints.yaml");
    let broken = findings(&lint(std::slice::from_ref(&ipip), &[]));
    assert_names(
        "000 ipip",
        &broken,
        "missing-host-endpoint",
        "node-1: 192.168.0.1, 10.244.1.1",
    );
    assert_clean(
        "000 ipip fixed",
        &findings(&lint(&[ipip, data("seed-000-fix.yaml")], &[])),
    );
    // 001: the DefaultDeny namespace is meant; access-nginx lets access=true in.
    assert_clean("001", &findings(&lint(std::slice::from_ref(&lab), &[])));
    assert_clean(
        "001 access-nginx",
        &findings(&lint(&[lab.clone(), s("001-access-nginx.yaml")], &[])),
    );
    // 002: denying TCP 22 isolates the dashboard; a trailing Allow.
    let broken = findings(&lint(&[lab.clone(), s("002-deny-ssh-dashboard.yaml")], &[]));
    assert_names("002", &broken, "deny-only-isolates", "- action: Allow");
    assert_eq!(codes(&broken), ["deny-only-isolates"]);
    assert_eq!(
        findings(&lint(&[lab.clone(), s("002-fix.yaml")], &[])),
        Vec::<Value>::new()
    );
    let broken = findings(&lint(&[example("reach/dashboard.yaml")], &[]));
    assert_names(
        "002 reach",
        &broken,
        "deny-only-isolates",
        "- action: Allow",
    );
    // 002, the customer's canal cluster: a node's subnet outside the pool.
    let broken = findings(&lint(&[example("lint/seed-002-canal-subnets.yaml")], &[]));
    assert_names("002 canal", &broken, "pool-mismatch", "subnet.env");
    assert_eq!(
        findings(&lint(
            &[example("lint/seed-002-canal-subnets-fixed.yaml")],
            &[]
        )),
        Vec::<Value>::new()
    );
    // 004: the namespace profile does not exist.
    let missing = example("reach/missing-profile.yaml");
    let broken = findings(&lint(std::slice::from_ref(&missing), &[]));
    assert_names("004", &broken, "missing-profile", "calico-kube-controllers");
    assert_eq!(
        findings(&lint(&[missing, data("seed-004-fix.yaml")], &[])),
        Vec::<Value>::new()
    );
}

/// The agreement test's 20 policy sets over its cluster (pods with addresses, on two nodes,
/// inside the pool): no error and no warning.
#[test]
fn no_false_positives_on_the_agreement_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = gingham_model::load::parse_documents(&namespaces_and_pods()).unwrap();
    let mut yb = String::new();
    for (i, d) in docs.iter_mut().filter(|d| d["kind"] == "Pod").enumerate() {
        let ip = format!("10.244.{}.{}", i % 2 + 1, 10 + i);
        if d["metadata"]["namespace"] == "y" && d["metadata"]["name"] == "b" {
            yb = ip.clone();
        }
        d["spec"]["nodeName"] = format!("node-{}", i % 2 + 1).into();
        d["status"] = serde_json::json!({"podIP": ip});
    }
    let cluster: Vec<String> = docs.iter().map(ToString::to_string).collect();
    let cluster = format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.244.0.0/16}}\n---\n{}",
        cluster.join("\n---\n")
    );
    let cluster_file = dir.path().join("cluster.yaml");
    std::fs::write(&cluster_file, cluster).unwrap();
    assert_eq!(SETS.len(), 20);
    for (i, (what, yaml)) in SETS.iter().enumerate() {
        let mut files = vec![cluster_file.display().to_string()];
        if !yaml.is_empty() {
            let f = dir.path().join(format!("set-{i}.yaml"));
            std::fs::write(&f, yaml.replace("{yb}", &yb)).unwrap();
            files.push(f.display().to_string());
        }
        assert_clean(what, &findings(&lint(&files, &[])));
    }
}

/// Every file under examples/ is linted in a set: the broken states of the seed stories name
/// their codes, everything else is clean.
#[test]
fn examples_are_clean_but_the_seed_stories_broken_states() {
    let e = |f: &str| example(f);
    let sets: Vec<(Vec<String>, &[&str])> = vec![
        (vec![e("demo/resources.yaml")], &[]),
        (vec![e("demo/legacy-v1-policy.yaml")], &[]),
        (vec![e("lab/cluster.yaml")], &[]),
        (vec![e("lab/cluster.yaml"), e("lab/open-web.yaml")], &[]),
        (vec![e("lab/racks.yaml")], &[]),
        (vec![e("lab/kubernetes.yaml")], &[]),
        (
            vec![
                e("lab/kubernetes.yaml"),
                e("lab/kubernetes-access-nginx.yaml"),
            ],
            &[],
        ),
        (
            vec![
                e("lab/seeds/cluster.yaml"),
                e("lab/seeds/000-isolation.yaml"),
            ],
            &["missing-host-endpoint"],
        ),
        (
            vec![
                e("lab/seeds/cluster.yaml"),
                e("lab/seeds/000-isolation.yaml"),
                e("lab/seeds/000-fix-host-endpoint.yaml"),
            ],
            &[],
        ),
        (
            vec![
                e("lab/seeds/cluster.yaml"),
                e("lab/seeds/001-access-nginx.yaml"),
            ],
            &[],
        ),
        (
            vec![
                e("lab/seeds/cluster.yaml"),
                e("lab/seeds/002-deny-ssh-dashboard.yaml"),
            ],
            &["deny-only-isolates"],
        ),
        (
            vec![e("lab/seeds/cluster.yaml"), e("lab/seeds/002-fix.yaml")],
            &[],
        ),
        (vec![e("reach/dashboard.yaml")], &["deny-only-isolates"]),
        (
            vec![e("reach/missing-profile.yaml")],
            &["missing-profile", "missing-profile"],
        ),
        (
            vec![e("reach/nodes-without-host-endpoints.yaml")],
            &["missing-host-endpoint"],
        ),
        (
            vec![e("lint/seed-002-canal-subnets.yaml")],
            &["pool-mismatch", "pool-mismatch"],
        ),
        (vec![e("lint/seed-002-canal-subnets-fixed.yaml")], &[]),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (files, want) in &sets {
        let list = findings(&lint(files, &[]));
        let got: Vec<String> = list
            .iter()
            .filter(|f| f["severity"] != "info")
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, *want, "{files:?}: {list:#?}");
        covered.extend(files.iter().cloned());
    }
    // A new example must be added above.
    let mut all = Vec::new();
    let mut dirs = vec![root().join("examples")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                all.push(p.display().to_string());
            }
        }
    }
    let missing: Vec<&String> = all.iter().filter(|p| !covered.contains(*p)).collect();
    assert!(missing.is_empty(), "examples not linted here: {missing:?}");
}

/// Without -f, lint reads the datastore (as reach does), IPAM's block affinities included.
#[test]
fn lint_reads_the_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", dir.path().join("g.db").display());
    let ipip = example("reach/nodes-without-host-endpoints.yaml");
    common::ok_in(&["apply", "-f", &ipip, "--datastore", &ds], None);
    let o = gingham_in(&["lint", "-o", "json", "--datastore", &ds], None);
    let list = findings(&o);
    assert_eq!(codes(&list), ["missing-host-endpoint"], "{list:#?}");
    common::ok_in(
        &[
            "apply",
            "-f",
            &data("seed-000-fix.yaml"),
            "--datastore",
            &ds,
        ],
        None,
    );
    let o = gingham_in(&["lint", "-o", "json", "--datastore", &ds], None);
    assert_eq!(findings(&o), Vec::<Value>::new());
}

#[test]
fn bad_input_names_the_file_and_document() {
    let o = gingham_in(&["lint", "-f", "/nonexistent/policy.yaml"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/policy.yaml"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let bad = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bad-second-doc.yaml")
        .display()
        .to_string();
    let o = gingham_in(&["lint", "-f", &bad], None);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad-second-doc.yaml: document 2 (GlobalNetworkPolicy broken-policy): spec.ingress[0].protocol"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata: {name: [a\n").unwrap();
    let o = gingham_in(&["lint", "-f", f.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("broken.yaml"), "{}", stderr(&o));
}

/// Lint from a lab's datastore agrees with real packets (seed 000): the isolation policy is
/// found and node-a's traffic to a pod on another node gets no answer; host endpoints for the
/// nodes' own addresses fix it on a flat subnet, while across VXLAN racks lint still names
/// the tunnel addresses and the packets are still dropped; with the tunnel addresses too, lint
/// is clean and the packets connect.
fn lint_agrees_with_packets(f: common::Fabric, prefix: &str) {
    f.require();
    let far = f.far_node();
    let docs = format!(
        "{}{}apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Namespace, metadata: {{name: default}}}}\n- {{apiVersion: v1, kind: Pod, metadata: {{name: web-a, namespace: default}}, spec: {{nodeName: node-a, containers: [{{name: w, ports: [{{containerPort: 80}}]}}]}}}}\n- {{apiVersion: v1, kind: Pod, metadata: {{name: web-b, namespace: default}}, spec: {{nodeName: {far}, containers: [{{name: w, ports: [{{containerPort: 80}}]}}]}}}}\n",
        f.pool("pods", "10.244.0.0/16", ""),
        f.docs()
    );
    let lab = common::lab_up(prefix, &f.spec(""), &docs);
    f.wait_converged(&lab.dir);
    let ds = lab.ds.as_str();
    let lint_ds = || {
        findings(&gingham_in(
            &["lint", "-o", "json", "--datastore", ds],
            None,
        ))
    };
    let outcome = || common::try_outcome(&lab.dir, "node-a", "default/web-b", "TCP", 80);
    assert_clean("no policy", &lint_ds());
    common::ok_in(
        &[
            "apply",
            "-f",
            &example("lab/seeds/000-isolation.yaml"),
            "--datastore",
            ds,
        ],
        None,
    );
    common::wait_programmed(&lab.dir);
    assert_eq!(codes(&lint_ds()), ["missing-host-endpoint"]);
    assert_eq!(outcome(), "no-answer");
    // Each node's addresses: its own, then its tunnel address (VXLAN).
    let state = common::lab_state(&lab.dir);
    let nodes: Vec<(String, String, Option<String>)> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap().to_owned();
            let node: Value = serde_json::from_str(&common::ok_in(
                &["get", "node", &name, "-o", "json", "--datastore", ds],
                None,
            ))
            .unwrap();
            let tunnel = node["spec"]["ipv4VXLANTunnelAddr"]
                .as_str()
                .map(str::to_owned);
            (name, n["ip"].as_str().unwrap().to_owned(), tunnel)
        })
        .collect();
    let heps = |with_tunnel: bool| -> String {
        nodes
            .iter()
            .map(|(name, ip, tunnel)| {
                let mut ips = vec![ip.clone()];
                if with_tunnel {
                    ips.extend(tunnel.clone());
                }
                format!(
                    "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {name}-eth0, labels: {{role: node}}}}\nspec: {{node: {name}, interfaceName: eth0, expectedIPs: [{}], profiles: [projectcalico-default-allow]}}\n---\n",
                    ips.join(", ")
                )
            })
            .collect()
    };
    common::ok_in(&["apply", "-f", "-", "--datastore", ds], Some(&heps(false)));
    common::wait_programmed(&lab.dir);
    let tunnel_a = nodes[0].2.clone();
    assert_eq!(nodes[0].0, "node-a");
    assert_eq!(tunnel_a.is_some(), f == common::Fabric::Vxlan, "{nodes:?}");
    match &tunnel_a {
        None => {
            assert_eq!(lint_ds(), Vec::<Value>::new());
            assert_eq!(outcome(), "connected");
        }
        Some(t) => {
            let list = lint_ds();
            assert_names(
                "tunnel",
                &list,
                "missing-host-endpoint",
                &format!("node-a: {t}"),
            );
            assert_eq!(outcome(), "no-answer");
            common::ok_in(&["apply", "-f", "-", "--datastore", ds], Some(&heps(true)));
            common::wait_programmed(&lab.dir);
            assert_eq!(lint_ds(), Vec::<Value>::new());
            assert_eq!(outcome(), "connected");
        }
    }
}

#[test]
fn sys_lint_agrees_with_packets_in_a_lab() {
    lint_agrees_with_packets(common::Fabric::Flat, "l");
}

#[test]
fn sys_lint_agrees_with_packets_in_a_vxlan_lab() {
    lint_agrees_with_packets(common::Fabric::Vxlan, "m");
}
