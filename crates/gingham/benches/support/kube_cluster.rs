//! `gingham lab apiserver` (the Kubernetes API double) and `gingham kube-controllers` as
//! processes on one SQLite datastore, driven by the real kubectl: shared by the kube benchmark
//! and the kube-controllers tests (each uses part of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `gingham` process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the process is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// Starts `gingham ARGS --datastore sqlite:DB` (logging at `GINGHAM_LOG`, default warn); returns
/// it with the first line it printed.
pub fn start(args: &[&str], db: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(args)
        .arg("--datastore")
        .arg(format!("sqlite:{}", db.display()))
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("KUBECONFIG")
        .env(
            "GINGHAM_LOG",
            std::env::var("GINGHAM_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gingham starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reads");
    (Process(child), line.trim().to_owned())
}

/// The API double and the controllers on one fresh SQLite datastore in `dir`.
pub struct Cluster {
    // Fields drop in order: the controllers stop before the API server they watch.
    pub ctl: Process,
    pub api: Process,
    pub kubeconfig: PathBuf,
    /// The controllers' health server.
    pub health: SocketAddr,
    /// The datastore both serve.
    pub client: gingham_api::Client,
}

impl Cluster {
    /// Starts both and waits (at most `ready_within`) until the controllers are ready.
    pub fn start(dir: &Path, ready_within: Duration) -> Cluster {
        let db = dir.join("gingham.db");
        let kubeconfig = dir.join("kubeconfig");
        let kc = kubeconfig.to_str().expect("utf-8");
        let (api, url) = start(
            &[
                "lab",
                "apiserver",
                "--listen",
                "127.0.0.1:0",
                "--kubeconfig",
                kc,
            ],
            &db,
        );
        assert!(url.starts_with("http://"), "{url}");
        let (ctl, health) = start(
            &[
                "kube-controllers",
                "--kubeconfig",
                kc,
                "--health-listen",
                "127.0.0.1:0",
            ],
            &db,
        );
        let health: SocketAddr = health
            .strip_prefix("health: http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the health address first: {health:?}"));
        until("the controllers ready", ready_within, || {
            gingham_health::http_get(health, "/readiness")
                .is_ok_and(|r| r.starts_with("HTTP/1.0 200"))
        });
        let store = gingham_datastore_sqlite::SqliteStore::open(&db).expect("opens");
        Cluster {
            ctl,
            api,
            kubeconfig,
            health,
            client: gingham_api::Client::new(Arc::new(store)),
        }
    }

    /// Runs kubectl against the API double (its cache in `dir`), failing unless it succeeds.
    pub fn kubectl(&self, dir: &Path, args: &[&str]) -> Output {
        let out = Command::new(gingham_testkit::require_tool("kubectl"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", dir)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Polls every 5 ms until `f` holds (failing after `within`); returns how long it took.
pub fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}
