//! The concurrency tests on SQLite: several connections to one database file in one process, and
//! several processes (this test binary re-runs itself as the children).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use common::{assign_and_release_concurrently, pool, req};
use gingham_datastore::Datastore;
use gingham_datastore_sqlite::SqliteStore;
use gingham_ipam::Ipam;

const CHILD_DB: &str = "GINGHAM_IPAM_TEST_CHILD_DB";
const CHILD_ID: &str = "GINGHAM_IPAM_TEST_CHILD_ID";
const CHILD_MODE: &str = "GINGHAM_IPAM_TEST_CHILD_MODE";
const PROCESSES: usize = 4;
const PER_PROCESS: usize = 12;

fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

#[test]
fn fifty_threads_on_five_sqlite_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipam.db");
    let stores: Vec<SqliteStore> = (0..5).map(|_| open(&path)).collect();
    let refs: Vec<&dyn Datastore> = stores.iter().map(|s| s as &dyn Datastore).collect();
    assign_and_release_concurrently(&refs, &["n1"], &[pool("p", "10.0.0.0/24")], 1);
    assign_and_release_concurrently(&refs, &["n1", "n2"], &[pool("p", "10.0.0.0/25")], 2);
}

/// Runs only as a child of `processes_share_one_sqlite_database` (it does nothing otherwise):
/// assigns or releases `PER_PROCESS` addresses from several threads and prints what it got.
#[test]
#[ignore = "runs only as the child of processes_share_one_sqlite_database"]
fn child_process_worker() {
    let (Ok(db), Ok(id), Ok(mode)) = (
        std::env::var(CHILD_DB),
        std::env::var(CHILD_ID),
        std::env::var(CHILD_MODE),
    ) else {
        return;
    };
    let store = open(std::path::Path::new(&db));
    let pools = [pool("p", "10.0.0.0/25")];
    let node = format!("n{}", id.parse::<usize>().unwrap() % 2);
    std::thread::scope(|sc| {
        for i in 0..PER_PROCESS {
            let (store, pools, node, id, mode) = (&store, &pools, &node, &id, &mode);
            sc.spawn(move || {
                let ipam = Ipam::new(store);
                let handle = format!("proc{id}-{i}");
                if mode == "assign" {
                    let r = ipam.auto_assign(&req(&handle, node, 1, pools)).unwrap();
                    println!("ASSIGNED {} {handle}", r.v4[0].ip);
                } else {
                    let got = ipam.release_by_handle(&handle).unwrap();
                    assert_eq!(got.len(), 1, "{handle}");
                    println!("RELEASED {} {handle}", got[0]);
                }
            });
        }
    });
}

fn run_children(db: &std::path::Path, mode: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|k| {
            Command::new(&exe)
                .args([
                    "child_process_worker",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, db)
                .env(CHILD_ID, k.to_string())
                .env(CHILD_MODE, mode)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All children run at once; wait for them only after starting every one.
    let mut lines = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        lines.extend(
            stdout
                .lines()
                // libtest may print its own "test ... " prefix on the same line.
                .filter_map(|l| {
                    ["ASSIGNED ", "RELEASED "]
                        .iter()
                        .find_map(|tag| l.find(tag).map(|at| l[at..].to_owned()))
                }),
        );
    }
    lines
}

#[test]
fn processes_share_one_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ipam.db");
    drop(open(&db));
    let assigned = run_children(&db, "assign");
    let ips: Vec<IpAddr> = assigned
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ips.len(), PROCESSES * PER_PROCESS);
    let distinct: BTreeSet<IpAddr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), ips.len(), "an address was handed out twice");

    let store = open(&db);
    let ipam = Ipam::new(&store);
    let nodes = ["n0".to_owned(), "n1".to_owned()];
    let report = ipam.check(&|_, _| true, &nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, ips.len());

    let released = run_children(&db, "release");
    assert_eq!(released.len(), ips.len());
    let report = ipam.check(&|_, _| true, &nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocations, 0);
    assert_eq!(report.handles, 0);
}
