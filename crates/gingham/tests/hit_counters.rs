//! Hit counters with real packets in a lab: N connections matching a policy rule raise that
//! rule's packet count by at least N, both in `gingham get ... -o wide --lab DIR` (summed over
//! the nodes' agents) and in the agent's `gingham_rule_packets_total` metric, and no other
//! rule's count moves. A system test (root, iproute2, nftables).

mod common;

use std::collections::BTreeMap;

const N: u64 = 5;

const DOCS: &str = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}, {containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-b, containers: [{name: c}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: counted}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80]}
  - action: Allow
    protocol: TCP
    destination: {ports: [8080]}
  - action: Deny
    protocol: TCP
    destination: {ports: [9090]}
  egress:
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-out, namespace: shop}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
"#;

/// Per (policy, direction, rule): packets, from `gingham get KIND -o wide --lab DIR`.
fn wide(lab: &common::TestLab, kind: &str) -> BTreeMap<(String, String, String), u64> {
    let out = common::gingham_in(
        &[
            "get",
            kind,
            "-A",
            "-o",
            "wide",
            "--lab",
            &lab.dir,
            "--datastore",
            &lab.ds,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "get {kind} -o wide: {text}{err}");
    // Every node's agent answered: no note about missing counters.
    assert!(err.is_empty(), "get {kind} -o wide: {err}");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[header.len() - 5..],
        ["DIRECTION", "RULE", "ACTION", "PACKETS", "BYTES"],
        "{text}"
    );
    let namespaced = header[0] == "NAMESPACE";
    lines
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let name = if namespaced {
                format!("{}/{}", w[0], w[1])
            } else {
                w[0].to_owned()
            };
            let n = w.len();
            let packets = w[n - 2]
                .parse()
                .unwrap_or_else(|_| panic!("no packet count in {l:?}:\n{text}"));
            ((name, w[n - 5].to_owned(), w[n - 4].to_owned()), packets)
        })
        .collect()
}

/// Every policy rule's packets in the lab, both kinds.
fn all_rules(lab: &common::TestLab) -> BTreeMap<(String, String, String), u64> {
    let mut m = wide(lab, "globalnetworkpolicy");
    m.extend(wide(lab, "networkpolicy"));
    m
}

/// Node `node`'s `gingham_rule_packets_total` series (labels → value), from its agent's
/// /metrics on the node's loopback.
fn metric(lab: &common::TestLab, node: &str) -> BTreeMap<String, u64> {
    let get =
        "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    let text = common::lab_exec_ok(&lab.dir, node, &["bash", "-c", get]);
    assert!(
        text.lines().any(|l| l == "gingham_rule_counters_read 1"),
        "{text}"
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("gingham_rule_packets_total"))
        .map(|l| {
            let (labels, v) = l.rsplit_once(' ').unwrap();
            (labels.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn connect(lab: &common::TestLab, port: u16, outcome: &str) {
    for _ in 0..N {
        assert_eq!(
            common::try_outcome(&lab.dir, "shop/client", "shop/web", "TCP", port),
            outcome
        );
    }
}

/// Asserts that only `moved` rules changed, each by at least N.
fn assert_moved(
    before: &BTreeMap<(String, String, String), u64>,
    after: &BTreeMap<(String, String, String), u64>,
    moved: &[(&str, &str, &str)],
) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, b) in before {
        let a = after[k];
        let expected = moved
            .iter()
            .any(|(p, d, r)| k.0 == *p && k.1 == *d && k.2 == *r);
        if expected {
            assert!(a >= b + N, "{k:?}: {b} -> {a}, want at least +{N}");
        } else {
            assert_eq!(a, *b, "{k:?} moved: {b} -> {a}");
        }
    }
}

#[test]
fn sys_rule_hit_counters_count_real_connections() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    gingham_testkit::require_tool("bash");
    let lab = common::lab_up("h", "{nodes: [node-a, node-b]}", DOCS);
    common::wait_programmed(&lab.dir);

    let before = all_rules(&lab);
    let rules: Vec<String> = before
        .keys()
        .map(|(p, d, r)| format!("{p} {d} {r}"))
        .collect();
    assert_eq!(
        rules,
        [
            "counted egress 0",
            "counted ingress 0",
            "counted ingress 1",
            "counted ingress 2",
            "shop/client-out egress 0",
        ]
    );
    let series = |m: &BTreeMap<String, u64>, dir: &str, rule: &str| {
        m.iter()
            .find(|(l, _)| {
                l.contains("policy=\"counted\"")
                    && l.contains(&format!("direction=\"{dir}\""))
                    && l.contains(&format!("rule=\"{rule}\""))
            })
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no series for counted {dir} {rule} in {m:?}"))
    };
    let metric_before = metric(&lab, "node-a");

    // N connections to port 80: `counted` ingress rule 0 (on node-a) and `client-out` egress
    // rule 0 (on node-b) count them; nothing else moves.
    connect(&lab, 80, "connected");
    let after = all_rules(&lab);
    assert_moved(
        &before,
        &after,
        &[
            ("counted", "ingress", "0"),
            ("shop/client-out", "egress", "0"),
        ],
    );
    let metric_after = metric(&lab, "node-a");
    assert!(series(&metric_after, "ingress", "0") >= series(&metric_before, "ingress", "0") + N);
    for (labels, v) in &metric_before {
        if !(labels.contains("policy=\"counted\"")
            && labels.contains("direction=\"ingress\"")
            && labels.contains("rule=\"0\""))
        {
            assert_eq!(metric_after[labels], *v, "{labels} moved on node-a");
        }
    }

    // N connections to the denied port: only the Deny rule (and the client's egress) counts.
    connect(&lab, 9090, "no-answer");
    let denied = all_rules(&lab);
    assert_moved(
        &after,
        &denied,
        &[
            ("counted", "ingress", "2"),
            ("shop/client-out", "egress", "0"),
        ],
    );

    // Without its agents, the lab's counters are said to be unavailable, not zero.
    let state = common::lab_state(&lab.dir);
    for node in state["nodes"].as_array().unwrap() {
        let pid = node["agent_pid"].as_u64().unwrap();
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    common::wait_until("agents stopped", 10, || {
        let out = common::gingham_in(
            &[
                "get",
                "gnp",
                "counted",
                "-o",
                "wide",
                "--lab",
                &lab.dir,
                "--datastore",
                &lab.ds,
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !err.contains("hit counters unavailable (shown as -): no agent answered") {
            return Err(err);
        }
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert!(
            rows.iter().all(|r| {
                let w: Vec<&str> = r.split_whitespace().collect();
                w[w.len() - 2..] == ["-", "-"]
            }),
            "{text}"
        );
        Ok(())
    });
}
