//! Flow logs under a flood: 10,000 denied packets a second from a lab pod neither grow the
//! flow log beyond its bound (the kernel's per-rule rate limit, then the rotated file) nor
//! stall the agent's programming. The seed stories' blocked flows and their causes are
//! checked in `seeds.rs`.
//! A system test: root, iproute2, nftables, bash.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Fabric;

const CLUSTER: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: flooder, namespace: default}, spec: {nodeName: node-a}}
- {apiVersion: v1, kind: Pod, metadata: {name: target, namespace: default, labels: {app: target}}, spec: {nodeName: node-a, containers: [{name: t, ports: [{containerPort: 80}]}]}}
"#;

const DENY: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: deny-target, namespace: default}\nspec:\n  selector: app == 'target'\n  ingress: [{action: Deny}]\n";

#[test]
fn sys_flow_log_flood_stays_bounded_and_programming_goes_on() {
    Fabric::Flat.require();
    gingham_testkit::require_tool("bash");
    let lab = common::flat_lab("q", "{nodes: [node-a, node-b]}", CLUSTER);
    common::ok_in(&["apply", "-f", "-", "--datastore", &lab.ds], Some(DENY));
    common::wait_programmed(&lab.dir);
    let target = common::pod_address(&lab, "default/target");
    let started = jiff::Timestamp::now();

    // At least 10,000 UDP packets a second for 4 s (250 every 10 ms at most, from bash's /dev/udp: ping
    // throttles itself when nothing answers), all denied by deny-target's Deny rule.
    let seconds = 4;
    let script = format!(
        "exec 3<>/dev/udp/{target}/9; n=0; end=$((SECONDS+{seconds})); \
         while [ $SECONDS -lt $end ]; do for i in {{1..250}}; do echo x >&3; done; n=$((n+250)); sleep 0.01; done; echo sent $n"
    );
    let flood = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["lab", "exec", "--dir", &lab.dir, "default/flooder", "--"])
        .args(["bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // During the flood a policy change is programmed: the agent's programmed revision (`lab
    // wait`) reaches the write, and packets show it (port 81 is let through: refused).
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    common::ok_in(
        &["apply", "-f", "-", "--datastore", &lab.ds],
        Some(&DENY.replace(
            "ingress: [{action: Deny}]",
            "ingress: [{action: Allow, protocol: TCP, destination: {ports: [81]}}, {action: Deny}]",
        )),
    );
    common::wait_programmed(&lab.dir);
    let programmed = t.elapsed();
    assert_eq!(
        common::try_outcome(&lab.dir, "default/flooder", "default/target", "TCP", 81),
        "refused",
        "the change made during the flood is not in force"
    );
    assert!(
        programmed < Duration::from_secs(3),
        "programming a change took {programmed:?} during the flood"
    );

    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the flood's count: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        sent >= 10_000 * seconds,
        "the flood sent only {sent} packets in {seconds} s"
    );

    // The kernel let at most 10 a second (and a burst of 20) of them through to the log.
    let logged = common::flows(&lab.dir, true)
        .into_iter()
        .filter(|r| {
            r["protocol"] == "UDP"
                && r["port"] == 9
                && r["dst"] == "default/target"
                && r["src"] == "default/flooder"
                && r["time"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t >= started)
        })
        .collect::<Vec<_>>();
    eprintln!(
        "flood: {sent} packets in {seconds} s, {} flow records, a change programmed in {programmed:?}",
        logged.len()
    );
    assert!(!logged.is_empty(), "the flood was not logged");
    assert!(
        logged.len() as u64 <= 10 * (seconds + 2) + 20,
        "{} records of {sent} denied packets",
        logged.len()
    );
    assert!(
        logged.iter().all(|r| r["cause"]
            == "NetworkPolicy default/deny-target: rule 0 (Deny) matched"
            || r["cause"] == "NetworkPolicy default/deny-target: rule 1 (Deny) matched"),
        "{logged:#?}"
    );
    // And the files stay within their bound.
    let state = common::lab_state(&lab.dir);
    for n in state["nodes"].as_array().unwrap() {
        let run = std::path::Path::new(&lab.dir)
            .join("run")
            .join(n["name"].as_str().unwrap());
        for f in gingham_agent::flows::files(&run) {
            let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            assert!(
                size <= gingham_agent::flows::MAX_BYTES,
                "{} is {size} bytes",
                f.display()
            );
        }
    }
}

/// Right after a lab comes up, a denied connection's record is in `gingham flows --denied` by
/// the time `lab try` returns (the kernel sends each logged packet at once, not in batches of
/// 100 or after a second), and it names both endpoints: their addresses were learned after the
/// table was programmed (a pod's endpoint gets its address in a later write that changes no
/// rule), and the flow log's names follow every endpoint change, not only reprogramming.
/// Two pods alike (CLUSTER's list goes on) and a policy that lets only TCP 443 in to them.
const ALIKE: &str = r#"- {apiVersion: v1, kind: Pod, metadata: {name: alike-1, namespace: default, labels: {app: alike}}, spec: {nodeName: node-a}}
- {apiVersion: v1, kind: Pod, metadata: {name: alike-2, namespace: default, labels: {app: alike}}, spec: {nodeName: node-a}}
"#;
const ONLY_443: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: only-443, namespace: default}\nspec:\n  selector: app == 'alike'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}]\n";

#[test]
fn sys_a_denied_flow_is_logged_at_once_with_its_endpoints_names() {
    Fabric::Flat.require();
    let lab = common::flat_lab(
        "n",
        "{nodes: [node-a, node-b]}",
        // The policy is in the lab from the start: nothing is programmed after the pods came.
        &format!("{CLUSTER}{ALIKE}---\n{DENY}---\n{ONLY_443}"),
    );
    common::wait_programmed(&lab.dir);
    assert_eq!(
        common::try_outcome(&lab.dir, "default/flooder", "default/target", "TCP", 80),
        "no-answer"
    );
    // No waiting: the try's own timeout is all the time the record gets.
    let out = common::ok_in(
        &["flows", "--dir", &lab.dir, "--denied", "-o", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let target = common::pod_address(&lab, "default/target");
    let found = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst_ip"] == target.as_str() && r["port"] == 80)
        .unwrap_or_else(|| panic!("no record of the denied try yet: {out}"));
    assert_eq!(
        (found["src"].as_str(), found["dst"].as_str()),
        (Some("default/flooder"), Some("default/target")),
        "{found}"
    );

    // Two pods alike share their ingress stage's chain; a drop at its end of tier names the
    // pod the packet was going to (the later one in name order, not the first sharing it).
    assert_eq!(
        common::try_outcome(&lab.dir, "default/flooder", "default/alike-2", "TCP", 80),
        "no-answer"
    );
    let out = common::ok_in(
        &["flows", "--dir", &lab.dir, "--denied", "-o", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let alike = common::pod_address(&lab, "default/alike-2");
    let found = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst_ip"] == alike.as_str() && r["port"] == 80)
        .unwrap_or_else(|| panic!("no record of the denied try to alike-2 yet: {out}"));
    assert_eq!(found["tier"], "default", "{found}");
    let stage = found["stage"].as_str().unwrap_or_default();
    assert!(stage.contains("default/alike-2"), "{found}");
}

const ALLOWED_CLUSTER: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default, labels: {app: client}}, spec: {nodeName: node-a}}
- {apiVersion: v1, kind: Pod, metadata: {name: other, namespace: default}, spec: {nodeName: node-a}}
- {apiVersion: v1, kind: Pod, metadata: {name: target, namespace: default, labels: {app: target}}, spec: {nodeName: node-a, containers: [{name: t, ports: [{containerPort: 80}]}]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-client, namespace: default}
spec:
  selector: app == 'target'
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [80]}}]
"#;

/// A lab whose policy lets `client` reach `target` on port 80 and nobody else; with
/// `spec.flowLogsAllowed` when `allowed`.
fn allowed_lab(prefix: &str, allowed: bool) -> common::TestLab {
    Fabric::Flat.require();
    let spec = format!("{{nodes: [node-a, node-b], flowLogsAllowed: {allowed}}}");
    let lab = common::flat_lab(prefix, &spec, ALLOWED_CLUSTER);
    common::wait_programmed(&lab.dir);
    lab
}

/// With `flowLogsAllowed`, an allowed connection is logged within 1 s by both stages that let
/// it through, each with the rule `explain` names, and `--denied` still shows only drops.
#[test]
fn sys_allowed_flows_are_logged_when_the_agent_is_told_to() {
    let lab = allowed_lab("a", true);
    let since = jiff::Timestamp::now();
    assert_eq!(
        common::try_outcome(&lab.dir, "default/client", "default/target", "TCP", 80),
        "connected"
    );
    let explained = common::explain(&lab.ds, "default/client", "default/target", 80);
    let end = Instant::now() + Duration::from_secs(1);
    let (ingress, egress) = loop {
        let all: Vec<_> = common::flows(&lab.dir, false)
            .into_iter()
            .filter(|r| common::flow_is(r, "default/client", "default/target", 80, since))
            .collect();
        let of = |dir: &str| all.iter().find(|r| r["direction"] == dir).cloned();
        if let (Some(i), Some(e)) = (of("ingress"), of("egress")) {
            break (i, e);
        }
        assert!(
            Instant::now() < end,
            "the allowed flow's records are not both in `gingham flows` 1 s after the try: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The target's ingress: the policy's rule, as `explain` says (its last stage).
    assert_eq!(ingress["verdict"], "allowed", "{ingress:#}");
    assert_eq!(
        ingress["cause"].as_str().unwrap_or_default(),
        common::explain_cause(&explained),
        "{ingress:#}\n{explained}"
    );
    assert_eq!(
        (ingress["policy"].as_str(), ingress["rule"].as_u64()),
        (Some("NetworkPolicy default/allow-client"), Some(0)),
        "{ingress:#}"
    );
    // The client's egress: its namespace's profile, which allows everything.
    assert_eq!(egress["verdict"], "allowed", "{egress:#}");
    assert_eq!(egress["profile"], "kns.default", "{egress:#}");
    assert!(
        explained.contains(egress["cause"].as_str().unwrap_or("-")),
        "{egress:#}\n{explained}"
    );

    // Drops are logged as ever, and `--denied` shows nothing allowed.
    common::try_denied_and_flow(&lab.dir, "default/other", "default/target", 80);
    let denied = common::flows(&lab.dir, true);
    assert!(
        denied.iter().all(|r| r["verdict"] == "denied"),
        "{denied:#?}"
    );
}

/// Without `flowLogsAllowed`, an allowed connection leaves no record: the drop tried after it
/// on the same node is logged (so the reader has read past the allowed flow), it is not.
#[test]
fn sys_allowed_flows_are_not_logged_unless_turned_on() {
    let lab = allowed_lab("o", false);
    let since = jiff::Timestamp::now();
    assert_eq!(
        common::try_outcome(&lab.dir, "default/client", "default/target", "TCP", 80),
        "connected"
    );
    common::try_denied_and_flow(&lab.dir, "default/other", "default/target", 80);
    let all = common::flows(&lab.dir, false);
    let allowed: Vec<_> = all
        .iter()
        .filter(|r| {
            r["verdict"] != "denied"
                || common::flow_is(r, "default/client", "default/target", 80, since)
        })
        .collect();
    assert!(allowed.is_empty(), "logged while off: {allowed:#?}");
}

/// A policy in a tier that does not exist closes what it selects: the drop is logged with the
/// cause `explain` gives (the tier and its policies).
#[test]
fn sys_a_missing_tiers_drop_is_logged_with_explains_cause() {
    Fabric::Flat.require();
    let lab = common::flat_lab(
        "t",
        "{nodes: [node-a, node-b]}",
        &format!("{CLUSTER}---\n{IN_MISSING_TIER}"),
    );
    common::wait_programmed(&lab.dir);
    let record = common::try_denied_and_flow(&lab.dir, "default/flooder", "default/target", 80);
    let explained = common::explain(&lab.ds, "default/flooder", "default/target", 80);
    assert_eq!(
        record["cause"].as_str().unwrap_or_default(),
        common::explain_cause(&explained),
        "{record:#}\n{explained}"
    );
    assert_eq!(record["tier"], "security", "{record:#}");
}

const IN_MISSING_TIER: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.guard}\nspec:\n  tier: security\n  selector: app == 'target'\n  ingress: [{action: Allow}]\n";
