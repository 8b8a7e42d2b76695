//! The intent protocol of `atomic::Atomic` over the in-memory store with etcd-like limits: a
//! writer that dies at any step leaves a store that the next reader or writer shows whole.

use std::sync::Arc;
use std::time::Duration;

use gingham_datastore::atomic::{Atomic, AtomicOptions, INTENT_KEY, PLAN_PREFIX, STATE_PREFIX};
use gingham_datastore::mem::{Dying, MemStore};
use gingham_datastore::{Compare, Datastore, Listing, Op, Txn, TxnLimits, TxnOutcome};

const LIMITS: TxnLimits = TxnLimits {
    max_ops: 10,
    max_bytes: 1000,
};

fn fast() -> AtomicOptions {
    AtomicOptions {
        heartbeat: Duration::from_millis(10),
        stale_after: Duration::from_millis(100),
        wait_limit: Duration::from_secs(10),
    }
}

const N: usize = 40;

/// Generation `g` of the data: keys 0..N with value `g`, and in odd generations key `N` too.
fn generation(g: u32, current: &Listing) -> Txn {
    let mut txn = Txn::new();
    for i in 0..N {
        let key = format!("/data/k{i:03}");
        txn.compares
            .push(match current.kvs.iter().find(|kv| kv.key == key) {
                Some(kv) => Compare::ModRevision {
                    key: key.clone(),
                    revision: kv.mod_revision,
                },
                None => Compare::Absent { key: key.clone() },
            });
        txn.ops.push(Op::Put {
            key,
            value: format!("generation {g} {}", "x".repeat(20)).into_bytes(),
        });
    }
    let extra = format!("/data/k{N:03}");
    txn.ops.push(if g % 2 == 1 {
        Op::Put {
            key: extra,
            value: format!("generation {g}").into_bytes(),
        }
    } else {
        Op::Delete { key: extra }
    });
    txn
}

/// The generation every data key shows, panicking if they disagree.
fn whole_generation(listing: &Listing) -> Option<u32> {
    let gens: Vec<u32> = listing
        .kvs
        .iter()
        .map(|kv| {
            let v = String::from_utf8_lossy(&kv.value);
            v.split_whitespace().nth(1).unwrap().parse().unwrap()
        })
        .collect();
    let &g = gens.first()?;
    assert!(
        gens.iter().all(|&x| x == g),
        "a half-applied write: {gens:?}"
    );
    let expected = if g % 2 == 1 { N + 1 } else { N };
    assert_eq!(listing.kvs.len(), expected, "generation {g}: {listing:?}");
    Some(g)
}

#[test]
fn a_writer_that_dies_at_any_step_leaves_all_or_nothing() {
    let mut budget = 0;
    let mut deaths = 0;
    loop {
        let mem = MemStore::new().with_limits(LIMITS);
        let healthy = Atomic::new(Arc::new(mem.clone()), fast());
        // Generation 1, written whole.
        let empty = healthy.list("/data/").unwrap();
        assert!(healthy.txn(&generation(1, &empty)).unwrap().committed());
        let before = healthy.list("/data/").unwrap();
        assert_eq!(whole_generation(&before), Some(1));

        // Generation 2, by a process that dies after `budget` writes.
        let dying = Atomic::new(Arc::new(Dying::new(Arc::new(mem.clone()), budget)), fast());
        let died = dying.txn(&generation(2, &before)).is_err();
        if !died {
            // The whole protocol fits the budget: every step has been a death point.
            assert!(deaths > 5, "the write takes several transactions");
            break;
        }
        deaths += 1;

        // A reader sees generation 1 or 2, whole.
        let reader = Atomic::new(Arc::new(mem.clone()), fast());
        let seen = whole_generation(&reader.list("/data/").unwrap()).unwrap();
        // Single reads agree with the listing.
        let one = reader.get("/data/k000").unwrap().unwrap();
        assert!(String::from_utf8_lossy(&one.value).starts_with(&format!("generation {seen} ")));

        // The next writer settles the intent and writes generation 3.
        let writer = Atomic::new(Arc::new(mem.clone()), fast());
        let now = writer.list("/data/").unwrap();
        assert!(writer.txn(&generation(3, &now)).unwrap().committed());
        assert_eq!(whole_generation(&writer.list("/data/").unwrap()), Some(3));
        // Nothing of the protocol is left behind.
        let leftovers = mem.list(PLAN_PREFIX).unwrap().kvs.len()
            + usize::from(mem.get(INTENT_KEY).unwrap().is_some());
        assert_eq!(leftovers, 0, "after a death at step {budget}");
        budget += 1;
    }
}

/// A small write that arrives while a large one is committed but not yet applied waits for it
/// (completing it) instead of slipping in between its batches.
#[test]
fn small_writes_do_not_interleave_with_a_pending_large_one() {
    let mem = MemStore::new().with_limits(LIMITS);
    let healthy = Atomic::new(Arc::new(mem.clone()), fast());
    let empty = healthy.list("/data/").unwrap();
    assert!(healthy.txn(&generation(1, &empty)).unwrap().committed());
    let before = healthy.list("/data/").unwrap();
    // Kill the writer of generation 2 right after its commit point: find that step.
    let mut budget = 0;
    loop {
        let dying = Atomic::new(Arc::new(Dying::new(Arc::new(mem.clone()), budget)), fast());
        let _ = dying.txn(&generation(2, &before));
        let intent = mem.get(INTENT_KEY).unwrap();
        if intent.is_some_and(|kv| kv.value.starts_with(b"committed")) {
            break;
        }
        // Roll back the preparing intent left behind and try one step later.
        healthy.settle().unwrap();
        budget += 1;
        assert!(budget < 100);
    }
    // Without the layer, the store is half written right now.
    let raw = mem.list("/data/").unwrap();
    assert!(
        raw.kvs
            .iter()
            .any(|kv| kv.value.starts_with(b"generation 1 ")),
        "the test stops before the batches"
    );
    // A small write through the layer completes generation 2 first.
    let rev = healthy.put("/data/k005", b"generation 2 small").unwrap();
    assert!(rev > 0);
    let after = healthy.list("/data/").unwrap();
    assert_eq!(after.kvs.len(), N, "generation 2 deletes the extra key");
    assert!(
        after
            .kvs
            .iter()
            .all(|kv| kv.value.starts_with(b"generation 2 ")),
        "{after:?}"
    );
    assert_eq!(
        healthy.get("/data/k005").unwrap().unwrap().value,
        b"generation 2 small"
    );
    assert!(
        mem.list(STATE_PREFIX)
            .unwrap()
            .kvs
            .iter()
            .all(|kv| kv.key != INTENT_KEY)
    );
}

/// A large write whose conditions no longer hold writes nothing and names the keys.
#[test]
fn a_large_write_with_a_failed_condition_writes_nothing() {
    let mem = MemStore::new().with_limits(LIMITS);
    let store = Atomic::new(Arc::new(mem.clone()), fast());
    let empty = store.list("/data/").unwrap();
    let txn = generation(1, &empty);
    store.put("/data/k007", b"generation 0 sneaked in").unwrap();
    let before = mem.revision().unwrap();
    match store.txn(&txn).unwrap() {
        TxnOutcome::Failed { failed_keys } => assert_eq!(failed_keys, ["/data/k007"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.list("/data/").unwrap().kvs.len(), 1);
    assert!(mem.get(INTENT_KEY).unwrap().is_none());
    assert!(mem.list(PLAN_PREFIX).unwrap().kvs.is_empty());
    assert!(
        mem.revision().unwrap() > before,
        "the lock was taken and released"
    );
}

/// Large writers at once wait for each other: each commits or fails a condition, never half.
#[test]
fn concurrent_large_writers_never_interleave() {
    let mem = MemStore::new().with_limits(LIMITS);
    let a = Arc::new(Atomic::new(Arc::new(mem.clone()), fast()));
    let b = Atomic::new(Arc::new(mem.clone()), fast());
    let empty = a.list("/data/").unwrap();
    assert!(a.txn(&generation(1, &empty)).unwrap().committed());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mem = mem.clone();
            std::thread::spawn(move || {
                let s = Atomic::new(Arc::new(mem), fast());
                let mut committed = 0;
                for _ in 0..5 {
                    let cur = s.list("/data/").unwrap();
                    let g = whole_generation(&cur).unwrap();
                    if s.txn(&generation(g + 1, &cur)).unwrap().committed() {
                        committed += 1;
                    }
                }
                committed
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total >= 5, "some writes commit ({total})");
    whole_generation(&b.list("/data/").unwrap()).unwrap();
}
