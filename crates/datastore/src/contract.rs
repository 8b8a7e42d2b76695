//! The contract test suite: one set of checks that every backend must pass unchanged.
//!
//! A backend's test file implements [`Harness`] (how to open more clients of one fresh store,
//! how to restart it, how a child process reaches it) and expands [`contract_tests!`]
//! (crate::contract_tests) into a module of `#[test]`s:
//!
//! ```ignore
//! gingham_datastore::contract_tests!(sqlite, SqliteHarness::new(), child: SqliteHarness::from_env);
//! ```
//!
//! Backends whose tests need an external tool put `sys_` in the module name (for example
//! `sys_etcd`), so the CI counts them as system tests.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::{Compare, Datastore, Error, Event, EventKind, Op, Revision, Txn, TxnOutcome};

/// A fresh store under test and the ways to reach it.
pub trait Harness {
    /// A new client of the store (a new connection where the backend has connections).
    fn connect(&self) -> Box<dyn Datastore>;
    /// Stops the store and starts it again on the same data (closes and reopens a file, restarts
    /// a server). Clients made before may fail afterwards; tests make new ones.
    fn restart(&mut self);
    /// Environment variables that let a child process open the same store with the backend's
    /// `from_env` function; `None` when the backend lives in one process only.
    fn child_env(&self) -> Option<Vec<(String, String)>>;
    /// What the backend promises beyond the single-key contract; every backend that keeps
    /// etcd's semantics keeps the default, [`Promises::ETCD`].
    fn promises(&self) -> Promises {
        Promises::ETCD
    }
}

/// The parts of etcd's semantics a backend may not have (the Kubernetes datastore keeps each
/// key as one Kubernetes object: a transaction writes several objects, each at its own
/// resourceVersion, and Kubernetes keeps no creation revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promises {
    /// Every write of a transaction lands at one revision.
    pub one_revision_per_txn: bool,
    /// `create_revision` is the revision of the key's creation.
    pub create_revision: bool,
}

impl Promises {
    /// etcd's: all of them.
    pub const ETCD: Promises = Promises {
        one_revision_per_txn: true,
        create_revision: true,
    };
}

const CHILD_ROLE: &str = "GINGHAM_CONTRACT_CHILD";
const CHILD_ID: &str = "GINGHAM_CONTRACT_CHILD_ID";
/// Increments each child process makes to the shared counter.
const CHILD_INCREMENTS: usize = 15;
const CHILD_PROCESSES: usize = 3;
const WAIT: Duration = Duration::from_secs(10);

fn u64_value(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .expect("counter is text")
        .parse()
        .expect("counter is a number")
}

/// Reads the next event, failing the test if none comes within [`WAIT`].
fn next_event(w: &mut Box<dyn crate::Watch>) -> Event {
    match w.next(WAIT) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("no event within {WAIT:?}"),
        Err(e) => panic!("watch failed: {e}"),
    }
}

/// Reads events until `n` have arrived.
fn collect(w: &mut Box<dyn crate::Watch>, n: usize) -> Vec<Event> {
    (0..n).map(|_| next_event(w)).collect()
}

/// Single-key operations: create, get, update with and without CAS, put, delete, and their errors.
pub fn single_key_operations(h: &mut dyn Harness) {
    let p = h.promises();
    let s = h.connect();
    // (value, create revision, mod revision, version); the create revision only where kept.
    let meta = |kv: &crate::KeyValue| {
        (
            kv.value.clone(),
            p.create_revision.then_some(kv.create_revision),
            kv.mod_revision,
            kv.version,
        )
    };
    let k = "/contract/single/a";
    let r1 = s.create(k, b"one").unwrap();
    let kv = s.get(k).unwrap().expect("created key is readable");
    assert_eq!(
        meta(&kv),
        (b"one".to_vec(), p.create_revision.then_some(r1), r1, 1)
    );
    assert!(matches!(s.create(k, b"again"), Err(Error::AlreadyExists { key }) if key == k));

    let r2 = s.update(k, b"two", None).unwrap();
    assert!(r2 > r1);
    let r3 = s.update(k, b"three", Some(r2)).unwrap();
    assert!(r3 > r2);
    match s.update(k, b"stale", Some(r2)) {
        Err(Error::Conflict {
            key,
            expected,
            found,
        }) => assert_eq!((key.as_str(), expected, found), (k, r2, r3)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let kv = s.get(k).unwrap().unwrap();
    assert_eq!(
        meta(&kv),
        (b"three".to_vec(), p.create_revision.then_some(r1), r3, 3)
    );
    assert!(matches!(
        s.update("/contract/single/missing", b"x", None),
        Err(Error::NotFound { .. })
    ));

    // Binary values round-trip.
    let binary: Vec<u8> = (0..=255u8).collect();
    let r4 = s.put("/contract/single/bin", &binary).unwrap();
    assert_eq!(
        s.get("/contract/single/bin").unwrap().unwrap().value,
        binary
    );
    let r5 = s.put("/contract/single/bin", b"").unwrap();
    assert!(r5 > r4);
    let kv = s.get("/contract/single/bin").unwrap().unwrap();
    assert_eq!((kv.value.len(), kv.version), (0, 2));

    match s.delete(k, Some(r2)) {
        Err(Error::Conflict {
            expected, found, ..
        }) => assert_eq!((expected, found), (r2, r3)),
        other => panic!("stale delete must conflict, got {other:?}"),
    }
    let gone = s.delete(k, Some(r3)).unwrap();
    assert_eq!(gone.value, b"three");
    assert_eq!(s.get(k).unwrap(), None);
    assert!(matches!(s.delete(k, None), Err(Error::NotFound { .. })));

    // A key created again starts a new life.
    let r6 = s.create(k, b"new").unwrap();
    let kv = s.get(k).unwrap().unwrap();
    assert_eq!(
        (p.create_revision.then_some(kv.create_revision), kv.version),
        (p.create_revision.then_some(r6), 1)
    );
    assert!(s.revision().unwrap() >= r6);
}

/// Listing by prefix: key order, prefix boundaries, the revision of the read.
pub fn list_by_prefix(h: &mut dyn Harness) {
    let s = h.connect();
    for k in ["/l/b/2", "/l/a/1", "/l/b/1", "/l/ab", "/l/b", "/m/b/1"] {
        s.put(k, k.as_bytes()).unwrap();
    }
    let rev = s.revision().unwrap();
    let listing = s.list("/l/b/").unwrap();
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/b/1", "/l/b/2"]);
    assert_eq!(listing.revision, rev);
    let all = s.list("/l/").unwrap();
    let keys: Vec<&str> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a/1", "/l/ab", "/l/b", "/l/b/1", "/l/b/2"]);
    assert!(s.list("/nothing/").unwrap().kvs.is_empty());
    for kv in &all.kvs {
        assert_eq!(kv.value, kv.key.as_bytes());
    }
}

/// Transactions: all or nothing, which comparisons failed, one revision per commit.
pub fn transactions(h: &mut dyn Harness) {
    let p = h.promises();
    let s = h.connect();
    let ra = s.put("/t/a", b"a1").unwrap();
    s.put("/t/gone", b"x").unwrap();

    // One failing comparison among good ones: nothing is written.
    let bad = Txn::new()
        .when(Compare::ModRevision {
            key: "/t/a".into(),
            revision: ra,
        })
        .when(Compare::Absent { key: "/t/a".into() })
        .when(Compare::Exists {
            key: "/t/none".into(),
        })
        .then(Op::Put {
            key: "/t/b".into(),
            value: b"b".to_vec(),
        })
        .then(Op::Delete {
            key: "/t/gone".into(),
        });
    let before = s.revision().unwrap();
    match s.txn(&bad).unwrap() {
        TxnOutcome::Failed { failed_keys } => {
            let got: BTreeSet<&str> = failed_keys.iter().map(String::as_str).collect();
            assert_eq!(got, BTreeSet::from(["/t/a", "/t/none"]));
        }
        other => panic!("expected a failed transaction, got {other:?}"),
    }
    assert_eq!(s.revision().unwrap(), before);
    assert_eq!(s.get("/t/b").unwrap(), None);
    assert!(s.get("/t/gone").unwrap().is_some());

    // All comparisons hold: every operation lands at one new revision.
    let good = Txn::new()
        .when(Compare::ModRevision {
            key: "/t/a".into(),
            revision: ra,
        })
        .when(Compare::Absent { key: "/t/b".into() })
        .when(Compare::Exists {
            key: "/t/gone".into(),
        })
        .then(Op::Put {
            key: "/t/a".into(),
            value: b"a2".to_vec(),
        })
        .then(Op::Put {
            key: "/t/b".into(),
            value: b"b".to_vec(),
        })
        .then(Op::Delete {
            key: "/t/gone".into(),
        })
        .then(Op::Delete {
            key: "/t/never-existed".into(),
        });
    let TxnOutcome::Committed { revision } = s.txn(&good).unwrap() else {
        panic!("transaction should commit")
    };
    if p.one_revision_per_txn {
        assert_eq!(revision, before + 1, "one revision per transaction");
    } else {
        assert!(revision > before);
    }
    assert_eq!(s.revision().unwrap(), revision);
    let a = s.get("/t/a").unwrap().unwrap();
    let b = s.get("/t/b").unwrap().unwrap();
    // Where each write has its own revision, they lie between the start and the reported one.
    let at = |r: Revision| {
        if p.one_revision_per_txn {
            r == revision
        } else {
            r > before && r <= revision
        }
    };
    assert!(at(a.mod_revision) && at(b.mod_revision), "{a:?} {b:?}");
    assert_eq!((a.version, a.value.as_slice()), (2, b"a2".as_slice()));
    if p.create_revision {
        assert_eq!(b.create_revision, b.mod_revision);
    }
    assert_eq!(s.get("/t/gone").unwrap(), None);

    // A transaction of only comparisons commits without a new revision.
    let read_only = Txn::new().when(Compare::Exists { key: "/t/a".into() });
    assert_eq!(
        s.txn(&read_only).unwrap(),
        TxnOutcome::Committed { revision }
    );

    // The largest transaction the backend allows works in one piece.
    let before_big = s.revision().unwrap();
    let limits = s.txn_limits();
    let n = limits.max_ops.min(100);
    let mut big = Txn::new();
    for i in 0..n {
        big = big.then(Op::Put {
            key: format!("/t/big/{i:04}"),
            value: vec![b'x'; 64],
        });
    }
    let TxnOutcome::Committed { revision: rbig } = s.txn(&big).unwrap() else {
        panic!("big transaction should commit")
    };
    let listing = s.list("/t/big/").unwrap();
    assert_eq!(listing.kvs.len(), n);
    assert!(listing.kvs.iter().all(|kv| if p.one_revision_per_txn {
        kv.mod_revision == rbig
    } else {
        kv.mod_revision > before_big && kv.mod_revision <= rbig
    }));
}

/// Watches: events after a revision, in order, filtered by prefix, deletes carrying the old value,
/// transaction events in operation order; timeouts leave the watch usable.
pub fn watch_events(h: &mut dyn Harness) {
    let p = h.promises();
    let writer = h.connect();
    let watcher = h.connect();
    writer.put("/w/before", b"0").unwrap();
    let start = writer.revision().unwrap();
    let mut w = watcher.watch("/w/", start).unwrap();
    assert!(
        w.next(Duration::from_millis(50)).unwrap().is_none(),
        "nothing yet"
    );

    let r1 = writer.put("/w/a", b"1").unwrap();
    writer.put("/other/x", b"ignored").unwrap();
    let r2 = writer.update("/w/a", b"2", Some(r1)).unwrap();
    let txn = Txn::new()
        .then(Op::Put {
            key: "/w/c".into(),
            value: b"c".to_vec(),
        })
        .then(Op::Delete { key: "/w/a".into() })
        .then(Op::Put {
            key: "/w/b".into(),
            value: b"b".to_vec(),
        });
    let TxnOutcome::Committed { revision: r3 } = writer.txn(&txn).unwrap() else {
        panic!("txn should commit")
    };

    let events = collect(&mut w, 5);
    // Where each write of a transaction has its own revision, they rise in operation order
    // up to the reported one.
    let txn_revs: Vec<Revision> = if p.one_revision_per_txn {
        vec![r3; 3]
    } else {
        let revs: Vec<Revision> = events[2..].iter().map(Event::revision).collect();
        assert!(revs[0] > r2 && revs.windows(2).all(|w| w[0] < w[1]) && revs[2] == r3);
        revs
    };
    let summary: Vec<(EventKind, &str, Revision)> = events
        .iter()
        .map(|e| (e.kind, e.kv.key.as_str(), e.revision()))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, "/w/a", r1),
            (EventKind::Put, "/w/a", r2),
            (EventKind::Put, "/w/c", txn_revs[0]),
            (EventKind::Delete, "/w/a", txn_revs[1]),
            (EventKind::Put, "/w/b", txn_revs[2]),
        ]
    );
    assert_eq!(events[1].kv.value, b"2");
    assert_eq!(events[1].kv.version, 2);
    let prev = events[3]
        .prev
        .as_ref()
        .expect("delete events carry the old value");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (b"2".as_slice(), r2)
    );
    assert!(w.next(Duration::from_millis(50)).unwrap().is_none());

    // A watch from a revision in the middle sees exactly what came after it.
    let mut mid = watcher.watch("/w/", r2).unwrap();
    let later: Vec<Revision> = collect(&mut mid, 3).iter().map(Event::revision).collect();
    assert_eq!(later, txn_revs);
    assert!(mid.next(Duration::from_millis(50)).unwrap().is_none());
}

/// Events written by several clients at once arrive once each, in strictly ordered revisions,
/// and a watch resumed from the last revision seen continues without loss or repeats.
pub fn watch_across_writers_and_resume(h: &mut dyn Harness) {
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    let start = h.connect().revision().unwrap();
    let watcher = h.connect();
    let mut w = watcher.watch("/x/", start).unwrap();
    let writers: Vec<Box<dyn Datastore>> = (0..WRITERS).map(|_| h.connect()).collect();
    std::thread::scope(|sc| {
        for (i, s) in writers.iter().enumerate() {
            sc.spawn(move || {
                for j in 0..EACH {
                    s.put(&format!("/x/{i}/{j:03}"), b"v").unwrap();
                }
            });
        }
    });
    // Read half, drop the watch, resume from the last revision seen.
    let total = WRITERS * EACH;
    let mut seen = collect(&mut w, total / 2);
    let last = seen.last().unwrap().revision();
    drop(w);
    let mut resumed = watcher.watch("/x/", last).unwrap();
    seen.extend(collect(&mut resumed, total - total / 2));
    assert!(resumed.next(Duration::from_millis(100)).unwrap().is_none());

    let revs: Vec<Revision> = seen.iter().map(Event::revision).collect();
    assert!(
        revs.windows(2).all(|p| p[0] < p[1]),
        "revisions strictly increase: {revs:?}"
    );
    let keys: BTreeSet<&str> = seen.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(keys.len(), total, "every write seen exactly once");
    // Per writer, its own writes are in its order.
    for i in 0..WRITERS {
        let mine: Vec<&str> = seen
            .iter()
            .map(|e| e.kv.key.as_str())
            .filter(|k| k.starts_with(&format!("/x/{i}/")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted);
    }
}

/// Compare-and-swap under contention: threads on separate clients increment one counter with
/// read-modify-write retries; no increment is lost.
pub fn cas_contention(h: &mut dyn Harness) {
    const THREADS: usize = 6;
    const EACH: usize = 20;
    h.connect().create("/cas/counter", b"0").unwrap();
    let clients: Vec<Box<dyn Datastore>> = (0..THREADS).map(|_| h.connect()).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let conflicts: usize = std::thread::scope(|sc| {
        let handles: Vec<_> = clients
            .iter()
            .map(|s| {
                let barrier = barrier.clone();
                sc.spawn(move || {
                    barrier.wait();
                    (0..EACH)
                        .map(|_| increment(s.as_ref(), "/cas/counter"))
                        .sum::<usize>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let kv = h.connect().get("/cas/counter").unwrap().unwrap();
    assert_eq!(u64_value(&kv.value), (THREADS * EACH) as u64);
    assert_eq!(kv.version, (THREADS * EACH + 1) as i64);
    // Contention must actually have happened for the test to mean something on fast backends;
    // it usually does, but a slow machine may serialise the threads, so only report it.
    eprintln!("cas_contention: {conflicts} conflicts retried");
}

/// Increments a decimal counter with CAS; returns how many conflicts were retried.
fn increment(s: &dyn Datastore, key: &str) -> usize {
    let mut conflicts = 0;
    loop {
        let kv = s.get(key).unwrap().expect("counter exists");
        let next = u64_value(&kv.value) + 1;
        match s.update(key, next.to_string().as_bytes(), Some(kv.mod_revision)) {
            Ok(_) => return conflicts,
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("increment: {e}"),
        }
    }
}

/// Compaction: watches from before the compaction point fail with [`Error::Compacted`]; the
/// caller recovers by listing and watching from the listing's revision.
pub fn compaction(h: &mut dyn Harness) {
    let s = h.connect();
    let r1 = s.put("/c/a", b"1").unwrap();
    let r2 = s.put("/c/a", b"2").unwrap();
    let r3 = s.put("/c/b", b"3").unwrap();
    s.compact(r3).unwrap();
    match s.watch("/c/", r1) {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, r1);
            assert!(compacted >= r3, "reports the compaction point");
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(mut w) => match w.next(WAIT) {
            Err(Error::Compacted { .. }) => {}
            other => panic!("a watch from a compacted revision must fail, got {other:?}"),
        },
    }
    // Data survives compaction.
    let listing = s.list("/c/").unwrap();
    assert_eq!(listing.kvs.len(), 2);
    assert_eq!(listing.kvs[0].mod_revision, r2);
    // Recover: watch from the listing's revision.
    let mut w = s.watch("/c/", listing.revision).unwrap();
    let r4 = s.put("/c/a", b"4").unwrap();
    assert_eq!(next_event(&mut w).revision(), r4);
    // The revision at the compaction point is still watchable.
    let mut w = s.watch("/c/", r3 - 1).unwrap();
    assert_eq!(next_event(&mut w).revision(), r3);
    // Compacting to an older revision again is harmless.
    s.compact(r2).unwrap();
}

/// After a restart the data, the revision counter and the history are still there, and a watch
/// from a revision before the restart resumes.
pub fn restart_and_resume(h: &mut dyn Harness) {
    let (r1, r2) = {
        let s = h.connect();
        let r1 = s.put("/r/a", b"1").unwrap();
        let r2 = s.put("/r/b", b"2").unwrap();
        (r1, r2)
    };
    h.restart();
    let s = h.connect();
    assert_eq!(s.get("/r/a").unwrap().unwrap().mod_revision, r1);
    assert!(s.revision().unwrap() >= r2);
    let r3 = s.put("/r/c", b"3").unwrap();
    assert!(r3 > r2, "revisions keep increasing after a restart");
    let mut w = s.watch("/r/", r1).unwrap();
    let revs: Vec<Revision> = collect(&mut w, 2).iter().map(Event::revision).collect();
    assert_eq!(revs, [r2, r3]);
}

/// Several processes write at once (CAS increments and new keys) while this one watches.
/// `child_test` is the full name of the expanded child test (see [`contract_tests!`]).
pub fn processes_write_concurrently(h: &mut dyn Harness, child_test: &str) {
    let env = h
        .child_env()
        .expect("processes_write_concurrently needs a backend reachable from other processes");
    let s = h.connect();
    s.create("/p/counter", b"0").unwrap();
    let start = s.revision().unwrap();
    let mut w = s.watch("/p/keys/", start).unwrap();
    let exe = std::env::current_exe().expect("test binary path");
    let spawned: Vec<_> = (0..CHILD_PROCESSES)
        .map(|id| {
            Command::new(&exe)
                .args([child_test, "--exact", "--ignored", "--nocapture"])
                .env(CHILD_ROLE, "writer")
                .env(CHILD_ID, id.to_string())
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child test process")
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = CHILD_PROCESSES * CHILD_INCREMENTS;
    let kv = s.get("/p/counter").unwrap().unwrap();
    assert_eq!(
        u64_value(&kv.value),
        total as u64,
        "no increment lost across processes"
    );
    let events = collect(&mut w, total);
    let keys: BTreeSet<&str> = events.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(keys.len(), total);
    let revs: Vec<Revision> = events.iter().map(Event::revision).collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]));
}

/// The body of the child process of [`processes_write_concurrently`]; does nothing unless run
/// as that child.
pub fn child_writer(open: fn() -> Box<dyn Datastore>) {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("writer") {
        return;
    }
    let id: usize = std::env::var(CHILD_ID).unwrap().parse().unwrap();
    let s = open();
    let deadline = Instant::now() + Duration::from_secs(60);
    for j in 0..CHILD_INCREMENTS {
        increment(s.as_ref(), "/p/counter");
        s.create(&format!("/p/keys/{id}/{j:03}"), b"v").unwrap();
        assert!(Instant::now() < deadline, "child {id} too slow");
    }
}

/// Expands to a module of `#[test]`s running the whole contract against a backend.
///
/// `contract_tests!(name, make_harness)` runs the in-process checks; add
/// `child: open_from_env` (a `fn() -> Box<dyn Datastore>` that opens the store a child process
/// was pointed at through [`Harness::child_env`]) to run the multi-process check too.
#[macro_export]
macro_rules! contract_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::contract_tests!(@tests $make);
        }
    };
    ($module:ident, $make:expr, child: $open:path) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::contract_tests!(@tests $make);

            #[test]
            fn processes_write_concurrently() {
                $crate::contract::processes_write_concurrently(
                    &mut $make,
                    concat!(stringify!($module), "::contract_child"),
                );
            }

            /// Not a test on its own: the child process of `processes_write_concurrently`.
            #[test]
            #[ignore = "runs only as the child of processes_write_concurrently"]
            fn contract_child() {
                $crate::contract::child_writer($open);
            }
        }
    };
    (@tests $make:expr) => {
        #[test]
        fn single_key_operations() {
            $crate::contract::single_key_operations(&mut $make);
        }
        #[test]
        fn list_by_prefix() {
            $crate::contract::list_by_prefix(&mut $make);
        }
        #[test]
        fn transactions() {
            $crate::contract::transactions(&mut $make);
        }
        #[test]
        fn watch_events() {
            $crate::contract::watch_events(&mut $make);
        }
        #[test]
        fn watch_across_writers_and_resume() {
            $crate::contract::watch_across_writers_and_resume(&mut $make);
        }
        #[test]
        fn cas_contention() {
            $crate::contract::cas_contention(&mut $make);
        }
        #[test]
        fn compaction() {
            $crate::contract::compaction(&mut $make);
        }
        #[test]
        fn restart_and_resume() {
            $crate::contract::restart_and_resume(&mut $make);
        }
    };
}
