//! The agent keeps the host side of its workloads true: a pod's /32 route, its static
//! neighbour entry, its interface's proxy ARP and the node's blackhole route for its IPAM block
//! are put back after someone removes them (every `routeRefreshInterval`), and the pod is
//! reachable again. A system test: root, iproute2, nftables.

mod common;

use std::time::{Duration, Instant};

use common::ok_in;

const CLUSTER: &str = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.246.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {routeRefreshInterval: 1s}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: default}, spec: {nodeName: node-a, containers: [{name: w, ports: [{containerPort: 80}]}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: default}, spec: {nodeName: node-b}}
"#;

fn on_node(dir: &str, cmd: &str) -> String {
    ok_in(
        &["lab", "exec", "--dir", dir, "node-a", "--", "sh", "-c", cmd],
        None,
    )
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connects(dir: &str) -> bool {
    common::gingham_in(
        &[
            "lab",
            "try",
            "--dir",
            dir,
            "default/client",
            "default/web",
            "--port",
            "80",
            "--timeout-ms",
            "500",
        ],
        None,
    )
    .status
    .success()
}

#[test]
fn sys_the_agent_repairs_workload_plumbing() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    gingham_testkit::require_tool("nft");
    let lab = common::lab_up("w", "{nodes: [node-a, node-b]}", CLUSTER);
    let (dir, up) = (lab.dir.clone(), lab.up.clone());
    let ip = up
        .lines()
        .find(|l| l.contains("default/web"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("the web pod's address")
        .to_owned();
    assert!(connects(&dir));

    // The agent, not the lab, made the blackhole route for node-a's block.
    until("the agent's blackhole route", || {
        on_node(&dir, "ip route show type blackhole").contains("10.246.")
    });
    let block = on_node(&dir, "ip route show type blackhole")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let route = on_node(&dir, &format!("ip -o route get {ip}"));
    let iface = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .expect("the pod's interface")
        .to_owned();
    assert!(iface.starts_with("cali"), "{route}");
    let neighbour = format!("ip neigh show {ip} dev {iface}");
    assert!(on_node(&dir, &neighbour).contains("PERMANENT"));

    // The route has felix's normal workload metric, which BIRD does not export.
    assert!(
        on_node(&dir, "ip route")
            .contains(&format!("{ip} dev {iface} proto 80 scope link metric 1024")),
        "{}",
        on_node(&dir, "ip route")
    );

    // Break it all; and a copy of the route at metric 0 (BIRD would export it) appears.
    on_node(
        &dir,
        &format!(
            "ip route del {ip}/32 dev {iface} && ip neigh del {ip} dev {iface} && \
             echo 0 > /proc/sys/net/ipv4/conf/{iface}/proxy_arp && ip route del blackhole {block} && \
             ip route add {ip}/32 dev {iface} metric 0"
        ),
    );
    assert!(!on_node(&dir, "ip route").contains("metric 1024"));

    // The agent puts everything back, and the pod answers again.
    until("the /32 route, at metric 1024 only", || {
        let routes = on_node(&dir, &format!("ip route show {ip}/32"));
        routes.trim() == format!("{ip} dev {iface} proto 80 scope link metric 1024")
    });
    until("the static neighbour", || {
        on_node(&dir, &neighbour).contains("PERMANENT")
    });
    until("proxy ARP", || {
        on_node(
            &dir,
            &format!("cat /proc/sys/net/ipv4/conf/{iface}/proxy_arp"),
        )
        .trim()
            == "1"
    });
    until("the blackhole route", || {
        on_node(&dir, "ip route show type blackhole").contains(&block)
    });
    until("the pod reachable", || connects(&dir));
    let log = std::fs::read_to_string(format!("{dir}/agent-node-a.log")).unwrap();
    assert!(log.contains("host plumbing repaired"), "{log}");
}
