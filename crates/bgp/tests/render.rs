//! Table-driven checks of the rendered BIRD configuration.
//!
//! Each case is a directory under `tests/data/` with an `input.yaml` (Calico v3 resources,
//! Kubernetes Secrets and BlockAffinity objects) and, per rendered node, the six files confd
//! writes for it (`<case>/<node>/bird.cfg`, ...), compared with blank lines ignored.
//! An `endpoint-status/` directory beside the input holds workload endpoint status files.
//! `UPDATE_EXPECTED=1` rewrites the expected files from the renderer (review the diff!).

use std::path::{Path, PathBuf};
use std::process::Command;

use gingham_bgp::{FILE_NAMES, Input, Options, Rendered};

/// `(case directory, node, CALICO_ROUTER_ID)`.
const CASES: &[(&str, &str, Option<&str>)] = &[
    // Mesh of three: passive towards higher addresses, blackholes and aggregation of the
    // node's blocks (pending ignored, /32 aggregated but not blackholed).
    ("mesh-3-nodes", "node-b", None),
    // AS numbers (node override), listen port (per node), bindMode NodeIP, debug logging,
    // restart time, mesh password from a secret, ignored interfaces, route priority, hash id.
    ("mesh-options", "node-a", Some("hash")),
    ("mesh-options", "node-c", None),
    // Mesh disabled, global peers: eBGP keepOriginalNextHop, TTL security, missing secret,
    // a peer that is a Calico node (passive if its address sorts higher), reverse peering.
    ("global-peer", "node-b", None),
    ("global-peer", "node-c", None),
    ("global-peer", "node-a", Some("10.255.0.1")),
    // Node-specific peers with ports (IPv4 and IPv6), local AS, next hop self/keep,
    // reachableBy, and a global peering that wins over the node-specific duplicate.
    ("node-peer-port", "node-b", None),
    ("node-peer-port", "node-a", None),
    // peerSelector / nodeSelector and the reverse sessions.
    ("peer-selector", "node-a", None),
    ("peer-selector", "node-c", None),
    // Route reflector: rr client on its sessions; clients peer only with it.
    ("route-reflector", "node-rr", None),
    ("route-reflector", "node-a", None),
    // IPv6: a dual-stack node and an IPv6-only node (router id from CALICO_ROUTER_ID).
    ("ipv6", "node-a", None),
    ("ipv6", "node-v6", Some("10.255.0.6")),
    // VXLAN, IPIP, unencapsulated, disableBGPExport and disabled pools.
    ("pools", "node-a", None),
    // Communities: global, and replaced by a node's own BGPConfiguration.
    ("communities", "node-a", None),
    ("communities", "node-b", None),
    // Service ranges from the default BGPConfiguration, and a node excluded from them.
    ("service-ranges", "node-a", None),
    ("service-ranges", "node-x", None),
    // Per-Service routes (confd's own test mesh/static-routes and its expected files):
    // externalTrafficPolicy Local with an endpoint on the node, IPv6, a slice of the wrong
    // family.
    ("static-routes", "kube-master", None),
    // BGPFilters: matches, operations, peer types, long names, a missing filter.
    ("filters", "node-a", None),
    // Local workloads that are BGP peers (localWorkloadSelector, endpoint status files).
    ("local-workloads", "node-a", None),
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn render_case(case: &str, node: &str, router_id: Option<&str>) -> Rendered {
    let path = data_dir().join(case).join("input.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut input = Input::default();
    gingham_bgp::load::add_text(&mut input, &path.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{case}: {}", e.join("\n")));
    // Workload endpoint status files, as felix writes them.
    if let Ok(entries) = std::fs::read_dir(data_dir().join(case).join("endpoint-status")) {
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            input
                .local_workloads
                .push(gingham_bgp::load::local_workload(&name, &text).unwrap());
        }
    }
    let opts = Options {
        node_name: node.to_string(),
        router_id: router_id.map(str::to_string),
        k8s_node_ref: None,
    };
    gingham_bgp::render(&input, &opts).unwrap_or_else(|e| panic!("{case}/{node}: {e}"))
}

#[test]
fn renders_what_confd_renders() {
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut failures = Vec::new();
    for (case, node, router_id) in CASES {
        let rendered = render_case(case, node, *router_id);
        let dir = data_dir().join(case).join(node);
        for (name, got) in &rendered.files {
            let path = dir.join(name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Some(d) = gingham_bgp::diff_ignoring_blank_lines(got, &want) {
                failures.push(format!("{case}/{node}/{name}: {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every node of every case (IPv4-less nodes with a router id), rendered.
fn every_rendering() -> Vec<(String, Rendered)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
        let mut input = Input::default();
        gingham_bgp::load::add_text(&mut input, &case, &text).unwrap();
        let nodes: Vec<String> = input
            .nodes
            .iter()
            .map(|n| n.metadata.name.clone())
            .collect();
        for node in nodes {
            let has_v4 = input.nodes.iter().any(|n| {
                n.metadata.name == node
                    && n.spec
                        .bgp
                        .as_ref()
                        .is_some_and(|b| b.ipv4_address.is_some())
            });
            let router_id = (!has_v4).then_some("10.255.255.1");
            out.push((
                format!("{case}/{node}"),
                render_case(&case, &node, router_id),
            ));
        }
    }
    out
}

/// Stock BIRD 1.6 (`bird`, `bird6`) parses every configuration rendered for every node of
/// every case, with the included files found beside the main file.
#[test]
fn sys_bird_accepts_every_rendered_config() {
    let bird = gingham_testkit::require_tool("bird");
    let bird6 = gingham_testkit::require_tool("bird6");
    let mut failures = Vec::new();
    let all = every_rendering();
    assert!(all.len() >= CASES.len(), "{} renderings", all.len());
    for (what, rendered) in &all {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in &rendered.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        assert_eq!(rendered.files.len(), FILE_NAMES.len());
        for (tool, file) in [(&bird, "bird.cfg"), (&bird6, "bird6.cfg")] {
            // Run from elsewhere: the includes must resolve beside the main file.
            let out = Command::new(tool)
                .arg("-p")
                .arg("-c")
                .arg(dir.path().join(file))
                .current_dir("/")
                .output()
                .unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "{what}: {} -p -c {file} failed: {}{}",
                    tool.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
