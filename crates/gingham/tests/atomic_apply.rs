//! `gingham apply` of a 10,000-resource file is all-or-nothing on etcd and on SQLite, however it
//! is interrupted: the process killed (kill -9) at 20 random points of its write, etcd stopped
//! mid-way, etcd frozen mid-way. After each interruption the next reader (the same code as
//! `gingham get`) sees the whole previous generation of the file or the whole new one.
//!
//! The kill points are fractions of the bytes the apply writes (`wchar` in /proc/PID/io: its
//! requests to etcd, or its writes to the SQLite file), drawn from a fixed seed printed at the
//! start, against a full apply measured first.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_datastore::Datastore;
use gingham_datastore::atomic::{Atomic, INTENT_KEY};
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_datastore_sqlite::SqliteStore;
use gingham_model::Kind;
use gingham_testkit::etcd::EtcdServer;

const RESOURCES: usize = 10_000;
const NAMESPACE: &str = "bulk";
const SEED: u64 = 0x5eed_0011;

/// A small deterministic generator (xorshift64*), so the points are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Generation `g` of the file: every policy has `order: g` (JSON, the quickest to parse).
fn write_generation(dir: &Path, g: u32) -> PathBuf {
    let mut text = String::with_capacity(RESOURCES * 256);
    text.push_str(r#"{"apiVersion":"v1","kind":"List","items":["#);
    for i in 0..RESOURCES {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{{"name":"allow-{i}","namespace":"{NAMESPACE}"}},"spec":{{"order":{g},"selector":"app == 'svc-{i}'","ingress":[{{"action":"Allow","protocol":"TCP","destination":{{"ports":[80,443]}}}}]}}}}"#
        ));
    }
    text.push_str("]}");
    let path = dir.join(format!("generation-{g}.json"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_apply(ds: &str, file: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["--datastore", ds, "apply", "-f"])
        .arg(file)
        .env_remove("GINGHAM_DATASTORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Bytes the process has written so far (to files and sockets).
fn written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `child` until it has written `bytes` (then returns true) or exits (false).
fn wait_written(child: &mut Child, bytes: u64) -> bool {
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if written(child.id()).is_some_and(|w| w >= bytes) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Runs a full apply, returning the bytes it wrote (last sample before it exited).
fn calibrate(ds: &str, file: &Path) -> u64 {
    let started = Instant::now();
    let mut child = spawn_apply(ds, file);
    let mut last = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(w) = written(child.id()) {
            last = w;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "full apply of {RESOURCES} resources on {ds}: {:.2}s, {last} bytes written",
        started.elapsed().as_secs_f64()
    );
    last
}

/// The generation the next reader sees, checking that the file is there whole (`None`: none
/// of it). The reader is the one every gingham command uses (it settles a pending write first).
fn observed_generation(store: &Arc<dyn Datastore>) -> Option<u32> {
    let reader = Atomic::wrap(store.clone());
    let listing = reader
        .list(&Kind::NetworkPolicy.key_prefix(Some(NAMESPACE)))
        .expect("the reader lists the policies");
    if listing.kvs.is_empty() {
        return None;
    }
    assert_eq!(listing.kvs.len(), RESOURCES, "part of the file is stored");
    let orders: std::collections::BTreeSet<u32> = listing
        .kvs
        .iter()
        .map(|kv| {
            let v = String::from_utf8_lossy(&kv.value);
            let at = v.find(r#""order":"#).expect("a stored order") + 8;
            let digits: String = v[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a number")
        })
        .collect();
    assert_eq!(orders.len(), 1, "a mix of generations: {orders:?}");
    orders.first().copied()
}

/// What the interruption left in the raw store, before any reader settled it.
fn raw_state(raw: &dyn Datastore) -> String {
    match raw.get(INTENT_KEY) {
        Ok(Some(kv)) => format!(
            "intent {}",
            String::from_utf8_lossy(&kv.value)
                .split_whitespace()
                .next()
                .unwrap_or("?")
        ),
        Ok(None) => "no intent".into(),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// Which generations a reader may see after generation `g` was interrupted: the one before
/// (`current`), `g` itself, or an earlier interrupted one whose commit request reached etcd just
/// after the reader looked (a request in flight when its writer died is applied or not, and may
/// land after the next read).
struct Generations {
    current: u32,
    late: Vec<u32>,
}

impl Generations {
    fn check(&mut self, g: u32, seen: Option<u32>, what: &str) -> &'static str {
        let seen = seen.unwrap_or_else(|| panic!("{what}: the file is gone"));
        let verdict = if seen == g {
            "all of it"
        } else if seen == self.current {
            "none of it"
        } else if self.late.contains(&seen) {
            "an earlier interrupted write, committed late"
        } else {
            panic!(
                "{what}: generation {seen}, expected {} or {g} (or one of {:?})",
                self.current, self.late
            )
        };
        if seen != g {
            self.late.push(g);
        }
        self.late.retain(|&l| l > seen);
        self.current = seen;
        verdict
    }
}

/// Kills `gingham apply` at 20 random points and checks all-or-nothing after each (the next
/// reader is `gingham get` at every fourth point, the library's reader at the others).
fn kill_at_random_points(ds: &str, raw: &dyn Datastore, reader: &Arc<dyn Datastore>) {
    let dir = tempfile::tempdir().unwrap();
    let first = write_generation(dir.path(), 1);
    let total = calibrate(ds, &first);
    assert_eq!(observed_generation(reader), Some(1));
    println!("kill points: seed {SEED:#x}");
    let mut rng = Rng(SEED);
    let mut gens = Generations {
        current: 1,
        late: Vec::new(),
    };
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for point in 0..20 {
        let g = point + 2;
        let file = write_generation(dir.path(), g);
        let at = (rng.fraction() * total as f64) as u64;
        let mut child = spawn_apply(ds, &file);
        let killed = wait_written(&mut child, at);
        if killed {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        let left = raw_state(raw);
        if point % 4 == 0 {
            // Here the next reader is `gingham get`: it completes a committed write.
            let names = common::ok_in(
                &[
                    "--datastore",
                    ds,
                    "get",
                    "networkpolicy",
                    "-n",
                    NAMESPACE,
                    "-o",
                    "name",
                ],
                None,
            );
            assert!(
                [0, RESOURCES].contains(&names.lines().count()),
                "point {point}: gingham get shows {} policies",
                names.lines().count()
            );
            assert!(
                !raw_state(raw).contains("committed"),
                "gingham get completed the committed write"
            );
        }
        let seen = observed_generation(reader);
        let verdict = gens.check(g, seen, &format!("point {point}"));
        println!(
            "point {point:2}: killed at {at} of {total} bytes ({}), left {left}: the reader sees {verdict}",
            if killed { "killed" } else { "finished first" }
        );
        assert!(killed || status.success());
        *outcomes.entry(format!("{left} -> {verdict}")).or_default() += 1;
    }
    println!("outcomes: {outcomes:?}");
    assert!(
        outcomes.keys().any(|k| k.ends_with("none of it"))
            && outcomes.keys().any(|k| k.ends_with("all of it")),
        "the points cover both sides of the commit: {outcomes:?}"
    );
}

fn etcd_store(server: &EtcdServer) -> Arc<dyn Datastore> {
    Arc::new(
        EtcdStore::connect(EtcdConfig {
            endpoints: vec![server.endpoint()],
            ..EtcdConfig::default()
        })
        .unwrap(),
    )
}

#[test]
fn sys_apply_killed_at_random_points_is_all_or_nothing_on_etcd() {
    gingham_testkit::require_tool("etcd");
    let server = EtcdServer::start();
    let raw = etcd_store(&server);
    kill_at_random_points(&format!("etcd:{}", server.endpoint()), raw.as_ref(), &raw);
    // Nothing of the protocol is left once a reader has run.
    assert!(raw.get(INTENT_KEY).unwrap().is_none());
}

#[test]
fn sys_apply_killed_at_random_points_is_all_or_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let ds = format!("sqlite:{}", db.display());
    common::ok_in(&["--datastore", &ds, "get", "networkpolicy"], None);
    let store: Arc<dyn Datastore> = Arc::new(SqliteStore::open(&db).unwrap());
    kill_at_random_points(&ds, store.as_ref(), &store);
}

/// etcd stopped (then restarted) or frozen (SIGSTOP, then SIGCONT) in the middle of the write.
#[test]
fn sys_apply_with_etcd_stopped_or_frozen_midway_is_all_or_nothing() {
    gingham_testkit::require_tool("etcd");
    let mut server = EtcdServer::start();
    let ds = format!("etcd:{}", server.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let total = calibrate(&ds, &write_generation(dir.path(), 1));
    let mut rng = Rng(SEED ^ 0xe7cd);
    let mut gens = Generations {
        current: 1,
        late: Vec::new(),
    };
    for (round, how) in ["stop", "freeze", "stop", "freeze"].iter().enumerate() {
        let g = round as u32 + 2;
        let file = write_generation(dir.path(), g);
        // Within the write phase: past the first quarter of the bytes (the request that reads
        // the current state comes first).
        let at = ((0.25 + 0.7 * rng.fraction()) * total as f64) as u64;
        let mut child = spawn_apply(&ds, &file);
        let interrupted = wait_written(&mut child, at);
        let started = Instant::now();
        if interrupted {
            match *how {
                "stop" => server.stop(),
                _ => server.freeze(),
            }
        }
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed();
        match *how {
            "stop" => server.restart(),
            _ => server.thaw(),
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "round {round} ({how} at {at} of {total} bytes): apply exited with {} after {:.1}s: {}",
            out.status,
            took.as_secs_f64(),
            stderr.trim()
        );
        if interrupted && !out.status.success() {
            assert!(
                stderr.contains("etcd") && !stderr.contains("Status {"),
                "the error names etcd, in words: {stderr}"
            );
        }
        let raw = etcd_store(&server);
        let left = raw_state(raw.as_ref());
        let seen = observed_generation(&raw);
        let verdict = gens.check(g, seen, &format!("round {round}"));
        println!("  left {left}; the reader sees {verdict}");
    }
}

/// Six identical applies at once, without resourceVersion: every one succeeds.
#[test]
fn sys_concurrent_identical_applies_succeed() {
    gingham_testkit::require_tool("etcd");
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("g.db").display());
    let file = dir.path().join("race.yaml");
    // More than one etcd transaction holds (128 operations).
    let yaml: String = (0..200)
        .map(|i| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: race-{i}}}\nspec: {{selector: app == 'r{i}'}}\n---\n"
            )
        })
        .collect();
    std::fs::write(&file, yaml).unwrap();
    for ds in [format!("etcd:{}", server.endpoint()), sqlite] {
        let children: Vec<Child> = (0..6).map(|_| spawn_apply(&ds, &file)).collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{ds}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let listed = common::ok_in(
            &[
                "--datastore",
                &ds,
                "get",
                "globalnetworkpolicy",
                "-o",
                "name",
            ],
            None,
        );
        assert_eq!(listed.lines().count(), 200, "{ds}");
    }
}
