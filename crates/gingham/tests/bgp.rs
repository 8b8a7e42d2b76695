//! `gingham bgp render`: from files and from the datastore, NODENAME and CALICO_ROUTER_ID,
//! and bad input. The expected text is the renderer's table of cases (crates/bgp/tests/data).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bgp/tests/data")
}

/// Runs gingham with a clean BGP environment plus `env`.
fn gingham(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gingham"));
    c.args(args)
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("NODENAME")
        .env_remove("CALICO_ROUTER_ID")
        // Not this machine's endpoint status files.
        .env(
            "CALICO_ENDPOINT_STATUS_PATH_PREFIX",
            "/nonexistent/gingham-test",
        );
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `gingham bgp render [--node NODE] FROM... --out OUT`, where FROM is `-f FILE`s or
/// `--datastore DS`.
fn render(node: Option<&str>, from: &[&str], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut args = vec!["bgp", "render"];
    if let Some(n) = node {
        args.extend(["--node", n]);
    }
    args.extend_from_slice(from);
    args.extend(["--out", out.to_str().unwrap()]);
    gingham(&args, env)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_same_files(out_dir: &Path, expected_dir: &Path) {
    for name in gingham_bgp::FILE_NAMES {
        let got = std::fs::read_to_string(out_dir.join(name)).unwrap();
        let want = std::fs::read_to_string(expected_dir.join(name)).unwrap();
        if let Some(d) = gingham_bgp::diff_ignoring_blank_lines(&got, &want) {
            panic!("{name}: {d}");
        }
    }
}

#[test]
fn bgp_render_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("confd");
    let input = cases().join("mesh-3-nodes/input.yaml");
    let o = render(Some("node-b"), &["-f", input.to_str().unwrap()], &out, &[]);
    ok(&o);
    assert_same_files(&out, &cases().join("mesh-3-nodes/node-b"));
}

#[test]
fn bgp_render_reads_nodename_and_router_id_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let input = cases().join("mesh-options/input.yaml");
    let o = render(
        None,
        &["-f", input.to_str().unwrap()],
        tmp.path(),
        &[("NODENAME", "node-a"), ("CALICO_ROUTER_ID", "hash")],
    );
    ok(&o);
    assert_same_files(tmp.path(), &cases().join("mesh-options/node-a"));
}

#[test]
fn bgp_render_reads_endpoint_status_files() {
    let tmp = tempfile::tempdir().unwrap();
    let case = cases().join("local-workloads");
    let input = case.join("input.yaml");
    let o = render(
        Some("node-a"),
        &["-f", input.to_str().unwrap()],
        tmp.path(),
        &[("CALICO_ENDPOINT_STATUS_PATH_PREFIX", case.to_str().unwrap())],
    );
    ok(&o);
    assert_same_files(tmp.path(), &case.join("node-a"));
}

#[test]
fn bgp_render_from_the_datastore() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let input = cases().join("global-peer/input.yaml");
    ok(&gingham(
        &["apply", "--datastore", &ds, "-f", input.to_str().unwrap()],
        &[],
    ));
    let out = tmp.path().join("confd");
    let o = render(Some("node-c"), &["--datastore", &ds], &out, &[]);
    ok(&o);
    assert_same_files(&out, &cases().join("global-peer/node-c"));

    // Block affinities as IPAM stores them: confirmed and pending blocks of node-c, and one of
    // node-a. Only node-c's confirmed block is blackholed and aggregated.
    {
        use gingham_datastore::Datastore;
        let store = gingham_datastore_sqlite::SqliteStore::open(tmp.path().join("g.db")).unwrap();
        for (node, cidr, state) in [
            ("node-c", "10.244.5.0/26", "confirmed"),
            ("node-c", "10.244.6.0/26", "pending"),
            ("node-a", "10.244.7.0/26", "confirmed"),
        ] {
            let key = gingham_ipam::stored::affinity_key(node, &cidr.parse().unwrap());
            store
                .create(&key, format!("{{\"state\":\"{state}\"}}").as_bytes())
                .unwrap();
        }
    }
    ok(&render(Some("node-c"), &["--datastore", &ds], &out, &[]));
    let aggr = std::fs::read_to_string(out.join("bird_aggr.cfg")).unwrap();
    assert!(aggr.contains("   route 10.244.5.0/26 blackhole;"), "{aggr}");
    assert!(
        aggr.contains("      # Block 10.244.5.0/26 is confirmed"),
        "{aggr}"
    );
    assert!(!aggr.contains("10.244.6.0"), "{aggr}");
    assert!(!aggr.contains("10.244.7.0"), "{aggr}");
    // The missing password secret of BGPPeer tor is reported, as confd logs it.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BGPPeer tor: the password secret is missing"),
        "{err}"
    );
}

#[test]
fn bgp_render_bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("confd");
    let input = cases().join("mesh-3-nodes/input.yaml");
    // An unknown node.
    let o = render(Some("node-x"), &["-f", input.to_str().unwrap()], &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("node \"node-x\" not found"), "{err}");
    assert!(!out.exists());
    // A BGPPeer whose peerIP is not an address: the file is named, nothing is written.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.300, asNumber: 65000}\n",
    )
    .unwrap();
    let o = render(
        Some("node-b"),
        &["-f", input.to_str().unwrap(), "-f", bad.to_str().unwrap()],
        &out,
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml: document 1 (BGPPeer p): spec.peerIP"),
        "{err}"
    );
    assert!(err.contains("nothing was rendered"), "{err}");
    assert!(!out.exists());
}

/// BGPFilters stored in the datastore (applied like any resource) are rendered as from files:
/// the `filters` case, applied then rendered without -f, gives the same six files.
#[test]
fn bgp_render_reads_bgp_filters_from_the_datastore() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = format!("sqlite:{}", tmp.path().join("g.db").display());
    let case = cases().join("filters");
    let input = case.join("input.yaml");
    ok(&gingham(
        &["apply", "--datastore", &ds, "-f", input.to_str().unwrap()],
        &[],
    ));
    let out = tmp.path().join("confd");
    ok(&render(Some("node-a"), &["--datastore", &ds], &out, &[]));
    assert_same_files(&out, &case.join("node-a"));
    let bird = std::fs::read_to_string(out.join("bird.cfg")).unwrap();
    assert!(bird.contains("# v4 BGPFilter "), "{bird}");
}
