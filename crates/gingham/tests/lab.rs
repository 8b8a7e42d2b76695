//! `gingham lab` end to end: two nodes and six pods in network namespaces, real packets between
//! them, and nothing left behind afterwards. A system test (root, iproute2).

mod common;

use common::Down;
use std::process::{Command, Output};

fn gingham(args: &[&str]) -> Output {
    common::gingham_in(args, None)
}

fn ok(args: &[&str]) -> String {
    common::ok_in(args, None)
}

fn lab_yaml(name: &str, annotated: bool) -> String {
    let mut y = format!(
        "apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {{nodes: [node-a, node-b]}}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.244.0.0/16}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n"
    );
    if annotated {
        y.push_str("---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: special}\nspec: {cidr: 10.250.0.0/24, blockSize: 28}\n");
    }
    for i in 1..=6 {
        // p5 asks for the special pool, p6 for one address, with Calico's pod annotations.
        let ann = match (annotated, i) {
            (true, 5) => ", annotations: {cni.projectcalico.org/ipv4pools: '[\"special\"]'}",
            (true, 6) => ", annotations: {cni.projectcalico.org/ipAddrs: '[\"10.244.77.77\"]'}",
            _ => "",
        };
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop, labels: {{app: a{}}}{ann}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 53, protocol: UDP}}]}}]}}\n",
            i % 2
        ));
    }
    y
}

#[test]
fn sys_lab_up_probe_down() {
    gingham_testkit::require_root();
    gingham_testkit::require_tool("ip");
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("t{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab");
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let file = tmp.path().join("lab.yaml");
    std::fs::write(&file, lab_yaml(&name, true)).unwrap();
    let d = dir.to_str().unwrap();

    let up = ok(&[
        "lab",
        "up",
        "-f",
        file.to_str().unwrap(),
        "--dir",
        d,
        "--datastore",
        &ds,
    ]);
    let guard = Down(d.to_owned());
    assert!(up.contains("2 nodes, 6 pods"), "{up}");
    // Calico's pod annotations: a pool by name, and a specific address.
    let line = |pod: &str| {
        up.lines()
            .find(|l| l.contains(pod))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("shop/p5").contains("10.250.0."), "{up}");
    assert!(line("shop/p6").contains("10.244.77.77"), "{up}");
    let pods = [
        "shop/p1", "shop/p2", "shop/p3", "shop/p4", "shop/p5", "shop/p6",
    ];
    {
        // Every pod reaches every pod on TCP 80 and UDP 53 (same node and across nodes).
        for (proto, port) in [("TCP", 80), ("UDP", 53)] {
            let m = common::probe(d, proto, port);
            assert_eq!(m["protocol"], proto);
            common::assert_probe(&format!("{proto}/{port}"), &m, &pods, &|_, _| "connected");
        }
        // A port nobody listens on is refused: the packets reach the pods (no policy drops
        // them), so `allowed` stays true, as reach says.
        for (proto, port) in [("TCP", 81), ("UDP", 54)] {
            let m = common::probe(d, proto, port);
            common::assert_probe(&format!("{proto}/{port}"), &m, &pods, &|_, _| "refused");
        }
        // The table: a mark per outcome and the legend.
        let table = ok(&[
            "lab",
            "probe",
            "--dir",
            d,
            "--port",
            "81",
            "--timeout-ms",
            "500",
        ]);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("shop/")).collect();
        assert_eq!(rows.len(), 6, "{table}");
        assert!(
            rows.iter().all(|r| r.matches("(✓)").count() == 6),
            "{table}"
        );
        assert!(
            table.contains("(✓) refused: reached, nothing listens on the port"),
            "{table}"
        );
        // `lab try` in words, with its exit code and the source address the server saw.
        let p1 = line("shop/p1")
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned();
        let p2 = line("shop/p2")
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned();
        let out = gingham(&[
            "lab", "try", "--dir", d, "shop/p1", "shop/p2", "--port", "80",
        ]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&out.stdout).ends_with(": connected\n"),
            "{out:?}"
        );
        let out = gingham(&[
            "lab", "try", "--dir", d, "shop/p1", "shop/p2", "--port", "81",
        ]);
        assert_eq!(out.status.code(), Some(3));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.ends_with(&format!(": refused: nothing listens on {p2}:81/TCP\n")),
            "{text}"
        );
        for (proto, port) in [("TCP", "80"), ("UDP", "53")] {
            let json = ok(&[
                "lab",
                "try",
                "--dir",
                d,
                "shop/p1",
                "shop/p2",
                "--protocol",
                proto,
                "--port",
                port,
                "-o",
                "json",
            ]);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"from": "shop/p1", "to": "shop/p2", "address": p2,
                    "port": port.parse::<u16>().unwrap(), "protocol": proto,
                    "outcome": "connected", "peer": p1}),
            );
        }
        // `lab wait` waits for every agent: while node-a's agent is stopped, a write is not
        // programmed there and `lab wait` fails naming it; once it runs again `lab wait`
        // returns, and both agents report a programmed revision at or past the write.
        {
            let state: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
                    .unwrap();
            let pid = state["nodes"][0]["agent_pid"].as_u64().unwrap().to_string();
            let signal = |sig: &str| {
                assert!(
                    Command::new("kill")
                        .args([sig, &pid])
                        .status()
                        .unwrap()
                        .success()
                );
            };
            /// Lets the agent run again however the test ends.
            struct Cont(String);
            impl Drop for Cont {
                fn drop(&mut self) {
                    let _ = Command::new("kill").args(["-CONT", &self.0]).status();
                }
            }
            let cont = Cont(pid.clone());
            signal("-STOP");
            let harmless = tmp.path().join("harmless.yaml");
            std::fs::write(
                &harmless,
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: selects-nothing}\nspec: {selector: nothing-has == 'this', ingress: [{action: Deny}]}\n",
            )
            .unwrap();
            ok(&[
                "apply",
                "-f",
                harmless.to_str().unwrap(),
                "--datastore",
                &ds,
            ]);
            let store =
                gingham_datastore_sqlite::SqliteStore::open(tmp.path().join("g.db")).unwrap();
            let written = gingham_datastore::Datastore::revision(&store).unwrap();
            let out = gingham(&["lab", "wait", "--dir", d, "--timeout-ms", "1000"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("node-a"), "{err}");
            signal("-CONT");
            drop(cont);
            ok(&["lab", "wait", "--dir", d]);
            for node in ["node-a", "node-b"] {
                let script = "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
                let out = gingham(&["lab", "exec", "--dir", d, node, "--", "bash", "-c", script]);
                let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
                let programmed = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("gingham_agent_datastore_revision "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("{node}: {metrics}"));
                assert!(
                    programmed >= written as f64,
                    "{node}: {programmed} < {written}"
                );
            }
            ok(&[
                "delete",
                "-f",
                harmless.to_str().unwrap(),
                "--datastore",
                &ds,
            ]);
            common::wait_programmed(d);
        }
        // The agents report health and metrics on the nodes' loopback.
        let get = |path: &str| {
            let script = format!(
                "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
            );
            let out = gingham(&[
                "lab", "exec", "--dir", d, "node-a", "--", "bash", "-c", &script,
            ]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let ready = get("/readiness");
        assert!(
            ready.contains("200 OK") && ready.contains("ready"),
            "{ready}"
        );
        let metrics = get("/metrics");
        assert!(
            metrics.contains("gingham_agent_programs_total"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gingham_agent_local_endpoints 3"),
            "{metrics}"
        );
        // Bad input never crashes the agent: an unreadable stored policy is skipped, reported on
        // /readiness, and the node keeps working; once it is gone the agent is ready again.
        let store = gingham_datastore_sqlite::SqliteStore::open(tmp.path().join("g.db")).unwrap();
        let bad = "/calico/resources/v3/projectcalico.org/networkpolicies/shop/garbage";
        gingham_datastore::Datastore::put(&store, bad, b"{not json").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let r = get("/readiness");
            if r.contains("503") {
                assert!(r.contains("networkpolicies/shop/garbage"), "{r}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "readiness never reported it: {r}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(get("/liveness").contains("200 OK"));
        let m = common::probe(d, "TCP", 80);
        common::assert_probe("an unreadable policy", &m, &pods, &|_, _| "connected");
        gingham_datastore::Datastore::delete(&store, bad, None).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !get("/readiness").contains("200 OK") {
            assert!(
                std::time::Instant::now() < deadline,
                "ready again once the bad value is gone"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // A policy in a tier that does not exist closes the endpoints it selects (its place
        // among the tiers is unknown); /readiness names the tier; other pods are unaffected; a
        // selector over a label nothing has changes nothing. Creating the tier opens them.
        let ghost = tmp.path().join("ghost.yaml");
        std::fs::write(
            &ghost,
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: ghost.watch-a0}\nspec: {tier: ghost, selector: app == 'a0', types: [Ingress], ingress: [{action: Pass}]}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: nobody}\nspec: {selector: nothing-has == 'this', ingress: [{action: Deny}], egress: [{action: Deny}]}\n",
        )
        .unwrap();
        ok(&["apply", "-f", ghost.to_str().unwrap(), "--datastore", &ds]);
        common::wait_programmed(d);
        let readiness = |node: &str| {
            let script = "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET /readiness HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
            let out = gingham(&["lab", "exec", "--dir", d, node, "--", "bash", "-c", script]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (a, b) = (readiness("node-a"), readiness("node-b"));
            if a.contains("503") || b.contains("503") {
                let r = if a.contains("503") { a } else { b };
                assert!(
                    r.contains("tier ghost does not exist (closes shop/p"),
                    "{r}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never reported: {a} {b}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // The pods the ghost-tier policy selects (app a0: p2, p4, p6) take nothing in, but
        // from themselves (their own address never leaves the pod). A policy drops: no
        // answer, even on a port where nothing listens (refused only where policy allows).
        let closed =
            |from: &str, to: &str| from != to && ["shop/p2", "shop/p4", "shop/p6"].contains(&to);
        let m = common::probe(d, "TCP", 80);
        common::assert_probe("ghost tier, TCP 80", &m, &pods, &|from, to| {
            if closed(from, to) {
                "no-answer"
            } else {
                "connected"
            }
        });
        let m = common::probe(d, "TCP", 81);
        common::assert_probe("ghost tier, TCP 81", &m, &pods, &|from, to| {
            if closed(from, to) {
                "no-answer"
            } else {
                "refused"
            }
        });
        assert_eq!(
            common::try_outcome(d, "shop/p1", "shop/p2", "TCP", 81),
            "no-answer"
        );
        let out = gingham(&[
            "lab", "try", "--dir", d, "shop/p1", "shop/p2", "--port", "80",
        ]);
        assert_eq!(out.status.code(), Some(4));
        assert!(
            String::from_utf8_lossy(&out.stdout).ends_with(": no answer (dropped)\n"),
            "{out:?}"
        );
        let explained = ok(&[
            "explain",
            "--from",
            "shop/p1",
            "--to",
            "shop/p2",
            "--port",
            "80",
            "--datastore",
            &ds,
        ]);
        assert!(explained.contains("tier ghost"), "{explained}");
        let tier = tmp.path().join("tier.yaml");
        std::fs::write(
            &tier,
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: ghost}\nspec: {order: 50}\n",
        )
        .unwrap();
        ok(&["apply", "-f", tier.to_str().unwrap(), "--datastore", &ds]);
        common::wait_programmed(d);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(readiness("node-a").contains("200 OK") && readiness("node-b").contains("200 OK")) {
            assert!(
                std::time::Instant::now() < deadline,
                "ready once the tier exists"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let m = common::probe(d, "TCP", 80);
        common::assert_probe("the tier exists", &m, &pods, &|_, _| "connected");
        // Each node blackholes its own blocks and routes the other's via that node.
        let routes = gingham(&["lab", "exec", "--dir", d, "node-a", "--", "ip", "route"]);
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        assert!(routes.contains("blackhole 10.244."), "{routes}");
        assert!(routes.contains("via 172.31.0.2"), "{routes}");
        // exec runs in the pod.
        let out = gingham(&[
            "lab", "exec", "--dir", d, "shop/p1", "--", "ip", "-4", "-o", "addr", "show", "eth0",
        ]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("inet 10.244."));
        // The pods' endpoints are stored with their addresses and labels.
        let weps = ok(&["get", "wep", "-n", "shop", "-o", "json", "--datastore", &ds]);
        let v: serde_json::Value = serde_json::from_str(&weps).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        assert!(items.iter().all(|w| {
            w["spec"]["ipNetworks"]
                .as_array()
                .is_some_and(|n| n.len() == 1)
        }));
        assert!(
            items
                .iter()
                .all(|w| w["metadata"]["labels"]["app"].is_string())
        );

        // A new pod joins, p1 is relabelled (and asked onto another node, which a running pod
        // does not do), p2 is deleted: as controllers and the kubelet would.
        let more = tmp.path().join("more.yaml");
        std::fs::write(
            &more,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p7, namespace: shop}\nspec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: shop, labels: {app: changed}}\nspec: {nodeName: node-b}\n",
        )
        .unwrap();
        // A Lab document with an unknown field is refused by `lab apply` too: nothing applied.
        let bad = tmp.path().join("bad-lab.yaml");
        std::fs::write(
            &bad,
            "apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {name: x}\nspec: {spines: 2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p8, namespace: shop}\nspec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n",
        )
        .unwrap();
        let out = gingham(&["lab", "apply", "--dir", d, "-f", bad.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("document 1 (Lab x): spec.spines: unknown field `spines`, expected one of `nodes`, `racks`, `nodePorts`, `networking`, `router`, `external`")
                && err.contains("nothing was applied"),
            "{err}"
        );
        let weps = ok(&["get", "wep", "-n", "shop", "-o", "json", "--datastore", &ds]);
        assert!(!weps.contains("\"p8\""), "{weps}");
        let applied = ok(&["lab", "apply", "--dir", d, "-f", more.to_str().unwrap()]);
        assert!(applied.contains("pod shop/p7 started"), "{applied}");
        ok(&["lab", "delete", "--dir", d, "shop/p2"]);
        let weps = ok(&["get", "wep", "-n", "shop", "-o", "json", "--datastore", &ds]);
        let v: serde_json::Value = serde_json::from_str(&weps).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 6, "p7 in, p2 out: {weps}");
        let p1s: Vec<_> = items.iter().filter(|w| w["spec"]["pod"] == "p1").collect();
        assert_eq!(p1s.len(), 1, "p1 stays one pod on its node: {weps}");
        assert_eq!(p1s[0]["metadata"]["labels"]["app"], "changed");
        assert_eq!(p1s[0]["spec"]["node"], "node-a");
        assert_eq!(
            p1s[0]["spec"]["ipNetworks"].as_array().map(Vec::len),
            Some(1),
            "still plugged in"
        );
        common::wait_programmed(d);
        let m = common::probe(d, "TCP", 80);
        let now = [
            "shop/p1", "shop/p3", "shop/p4", "shop/p5", "shop/p6", "shop/p7",
        ];
        common::assert_probe("p7 in, p2 out", &m, &now, &|_, _| "connected");
        let check = ok(&["ipam", "check", "--datastore", &ds]);
        assert!(check.contains(" 6 allocations"), "{check}");
    }
    // Simulate a crash's debris: one pod's namespace already gone.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let gone = state["pods"][0]["netns"].as_str().unwrap().to_owned();
    let _ = Command::new("ip").args(["netns", "del", &gone]).status();
    let down = gingham(&["lab", "down", "--dir", d]);
    drop(guard);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(common::leftovers(&name, &dir), Vec::<String>::new());
    let check = ok(&["ipam", "check", "--datastore", &ds]);
    assert!(check.contains("0 blocks, 0 allocations"), "{check}");
}

#[test]
fn sys_lab_up_that_fails_cleans_up() {
    gingham_testkit::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("f{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab");
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    // The pool is too small for the pods: the third ADD fails after two pods were made.
    let yaml = lab_yaml(&name, false).replace(
        "spec: {cidr: 10.244.0.0/16}",
        "spec: {cidr: 10.244.0.0/31, blockSize: 31}",
    );
    let file = tmp.path().join("lab.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = gingham(&[
        "lab",
        "up",
        "-f",
        file.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--datastore",
        &ds,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IPAM"), "{err}");
    assert_eq!(common::leftovers(&name, &dir), Vec::<String>::new());
}

/// The same lab on etcd: the nodes reach this host's etcd through the lab's proxy on their own
/// loopback (the host's network is not touched).
#[test]
fn sys_lab_on_etcd() {
    gingham_testkit::require_root();
    let server = gingham_testkit::etcd::EtcdServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("e{}", std::process::id() % 100_000);
    let dir = tmp.path().join("lab");
    let d = dir.to_str().unwrap();
    let ds = format!("etcd:{}", server.endpoint());
    let file = tmp.path().join("lab.yaml");
    std::fs::write(&file, lab_yaml(&name, false)).unwrap();
    let up = ok(&[
        "lab",
        "up",
        "-f",
        file.to_str().unwrap(),
        "--dir",
        d,
        "--datastore",
        &ds,
    ]);
    let guard = Down(d.to_owned());
    assert!(up.contains("2 nodes, 6 pods"), "{up}");
    // The agents follow etcd through the proxy; `lab wait` reads their revision against it.
    common::wait_programmed(d);
    let m = common::probe(d, "TCP", 80);
    let pods = [
        "shop/p1", "shop/p2", "shop/p3", "shop/p4", "shop/p5", "shop/p6",
    ];
    common::assert_probe("on etcd", &m, &pods, &|_, _| "connected");
    // `lab exec` on a node hands commands the datastore as the node reaches it: etcd through
    // the lab's proxy on the node's loopback.
    let names = ok(&[
        "lab",
        "exec",
        "--dir",
        d,
        "node-b",
        "--",
        env!("CARGO_BIN_EXE_gingham"),
        "get",
        "nodes",
        "-o",
        "name",
    ]);
    assert!(
        names.contains("node-a") && names.contains("node-b"),
        "{names}"
    );
    let env = ok(&[
        "lab",
        "exec",
        "--dir",
        d,
        "node-b",
        "--",
        "sh",
        "-c",
        "echo $GINGHAM_DATASTORE",
    ]);
    assert_eq!(env.trim(), "etcd:http://127.0.0.1:2379");
    let check = ok(&["ipam", "check", "--datastore", &ds]);
    assert!(check.contains(" 6 allocations"), "{check}");
    let down = gingham(&["lab", "down", "--dir", d]);
    drop(guard);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(common::leftovers(&name, &dir), Vec::<String>::new());
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l.contains("lab proxy") && l.contains(&format!("gl-{name}-"))),
        "the proxy is gone"
    );
    let check = ok(&["ipam", "check", "--datastore", &ds]);
    assert!(check.contains("0 blocks, 0 allocations"), "{check}");
}

/// A Lab document with a field it does not have is refused, naming the file, the document, the
/// field and the valid ones; nothing is made.
#[test]
fn lab_document_refuses_unknown_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    for (doc, field, valid) in [
        (
            "spec: {nodes: [node-a], spines: 3}",
            "spec.spines: unknown field `spines`",
            "expected one of `nodes`, `racks`, `nodePorts`, `networking`, `router`, `external`",
        ),
        (
            "spec: {nodes: [node-a]}\nkubernetes: {version: 1.30}",
            "kubernetes: unknown field `kubernetes`",
            "`apiVersion`, `kind`, `metadata`, `spec`",
        ),
        (
            "spec: {racks: [{name: r1, subnet: 10.1.1.0/30, nodes: [a, b]}]}",
            "spec.racks[0].subnet: 10.1.1.0/30 has 2 host addresses",
            "too few for the router and 2 nodes",
        ),
        (
            "spec: {networking: flannel}",
            "spec.networking: networking backend \"flannel\" is not one of",
            "bird, vxlan, none",
        ),
        (
            "spec: {nodePorts: [80, SCTP/9]}",
            "spec.nodePorts[1]: \"SCTP/9\" is not a port",
            "valid: 80 for TCP, or \"UDP/53\"",
        ),
    ] {
        let file = tmp.path().join("lab.yaml");
        std::fs::write(
            &file,
            format!("apiVersion: gingham.dev/v1\nkind: Lab\nmetadata: {{name: u1}}\n{doc}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n"),
        )
        .unwrap();
        let out = gingham(&[
            "lab",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--datastore",
            &ds,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let want = format!("{}: document 1 (Lab u1): {field}", file.display());
        assert!(err.contains(&want) && err.contains(valid), "{err}");
        assert!(!dir.exists(), "nothing made: {err}");
        assert!(!tmp.path().join("g.db").exists(), "nothing written: {err}");
    }
}

/// `lab try --help` documents its exit codes.
#[test]
fn lab_try_documents_its_exit_codes() {
    let help = ok(&["lab", "try", "--help"]);
    assert!(
        help.contains("Exit codes: 0 connected, 3 refused, 4 no answer, 1 error"),
        "{help}"
    );
    assert!(help.contains("refused: nothing listens on"), "{help}");
}

/// `lab up --help` documents the Lab document: racks, the networking backend and who routes
/// pods with `none`, the router and its BIRD, the external host.
#[test]
fn lab_up_documents_the_lab_document() {
    let help = ok(&["lab", "up", "--help"]);
    for want in [
        "`spec.racks: [{name, subnet, nodes: [NAME...]}]`",
        "`spec.networking: bird | vxlan | none`",
        "With `none`, the lab routes pods itself",
        "`spec.router: {asNumber: N, staticPodRoutes: BOOL}`",
        "`spec.external: {address: A}`",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
}
