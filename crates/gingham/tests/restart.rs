//! The agent restarts without a gap: killed (SIGKILL) under steady traffic, an established TCP
//! connection keeps echoing through the restart, not one forbidden connection gets through
//! while it is down or starting, and the restarted agent finds the kernel as it should be (the
//! ruleset afterwards equals the one before, and it sent nothing). A system test (root, nft).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn ok(args: &[&str]) -> String {
    common::ok_in(args, None)
}

const LAB: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.245.0.0/16}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: app, labels: {app: web}}, spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}, {containerPort: 81}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: good, namespace: app, labels: {access: 'yes'}}, spec: {nodeName: node-b}}
- {apiVersion: v1, kind: Pod, metadata: {name: bad, namespace: app}, spec: {nodeName: node-b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-good, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {access: 'yes'}}}]
    ports: [{port: 80}]
";

fn ruleset(dir: &str, node: &str) -> String {
    let json = ok(&[
        "lab", "exec", "--dir", dir, node, "--", "nft", "-j", "list", "table", "inet", "gingham",
    ]);
    gingham_dataplane::canonical(&json).expect("a readable listing")
}

fn metric(dir: &str, node: &str, name: &str) -> Option<f64> {
    let script =
        "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    let out = common::gingham_in(
        &[
            "lab", "exec", "--dir", dir, node, "--", "bash", "-c", script,
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .and_then(|v| v.parse().ok())
}

/// Starts `gingham lab traffic` inside a pod, in the background.
fn traffic(dir: &str, from: &str, to_ip: &str, port: u16, extra: &[&str]) -> std::process::Child {
    let port = port.to_string();
    let mut args = vec![
        "lab",
        "exec",
        "--dir",
        dir,
        from,
        "--",
        env!("CARGO_BIN_EXE_gingham"),
        "lab",
        "traffic",
        to_ip,
        "--port",
        &port,
        "--seconds",
        "6",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(&args)
        .env_remove("GINGHAM_DATASTORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn report(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sys_agent_restart_keeps_connections_and_lets_nothing_forbidden_through() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("nft");
    let lab = common::lab_up("r", "{nodes: [node-a, node-b]}", LAB);
    let (d, up) = (lab.dir.as_str(), &lab.up);
    let ip_of = |pod: &str| {
        up.lines()
            .find(|l| l.contains(pod))
            .and_then(|l| l.split_whitespace().last())
            .expect("the pod's address")
            .to_owned()
    };
    let (web_ip, good_ip) = (ip_of("app/web"), ip_of("app/good"));

    // The table to compare with later, once node-a's agent has programmed every write (the
    // last pods are started after it first programmed): good's address is in web's policy's set.
    common::wait_programmed(d);
    let before = ruleset(d, "node-a");
    assert!(before.contains(&good_ip), "{before}");
    assert!(before.contains("chain forward"), "{before}");

    // Steady traffic: one held connection that is allowed, and new connections that are not
    // (from the wrong pod, and to the wrong port from the right one).
    let held = traffic(d, "app/good", &web_ip, 80, &[]);
    let wrong_pod = traffic(
        d,
        "app/bad",
        &web_ip,
        80,
        &["--new-connections", "--interval-ms", "10"],
    );
    let wrong_port = traffic(
        d,
        "app/good",
        &web_ip,
        81,
        &["--new-connections", "--interval-ms", "10"],
    );
    let allowed_new = traffic(
        d,
        "app/good",
        &web_ip,
        80,
        &["--new-connections", "--interval-ms", "50"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The node that enforces web's ingress loses its agent, then gets it back.
    let restarted = ok(&["lab", "restart-agent", "--dir", d, "node-a"]);
    assert!(restarted.contains("restarted"), "{restarted}");
    // And the other node's, for good measure (it polices the clients' egress).
    ok(&["lab", "restart-agent", "--dir", d, "node-b"]);

    let held = report(held);
    assert_eq!(held["failed"], 0, "the held connection broke: {held}");
    assert!(held["ok"].as_u64().unwrap() > 100, "{held}");
    for (what, r) in [
        ("from the wrong pod", report(wrong_pod)),
        ("to the wrong port", report(wrong_port)),
    ] {
        assert_eq!(r["ok"], 0, "a forbidden connection {what} got through: {r}");
        assert!(r["failed"].as_u64().unwrap() > 10, "{what}: {r}");
    }
    let allowed_new = report(allowed_new);
    assert_eq!(allowed_new["failed"], 0, "{allowed_new}");

    // The restarted agent read the kernel, found it right, and sent nothing.
    assert_eq!(
        metric(d, "node-a", "gingham_agent_last_apply_commands"),
        Some(0.0)
    );
    assert_eq!(
        metric(d, "node-a", "gingham_agent_kernel_reads_total"),
        Some(1.0)
    );
    assert_eq!(ruleset(d, "node-a"), before);
}
