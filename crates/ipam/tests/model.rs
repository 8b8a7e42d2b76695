//! Property test: random assign/release sequences against a plain model of who holds what.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use common::{mem, pool, req};
use gingham_ipam::{AllocationStatus, AssignIpRequest, Error, Ipam, IpamConfig, PoolSpec};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Assign { node: usize, n: usize },
    AssignIp { node: usize, offset: u8 },
    ReleaseHandle { pick: usize },
    ReleaseIp { pick: usize, stray: bool },
    ReleaseEmptyBlocks { node: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 1..4usize).prop_map(|(node, n)| Step::Assign { node, n }),
        1 => (0..3usize, 0..32u8).prop_map(|(node, offset)| Step::AssignIp { node, offset }),
        2 => any::<usize>().prop_map(|pick| Step::ReleaseHandle { pick }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, stray)| Step::ReleaseIp { pick, stray }),
        1 => (0..3usize).prop_map(|node| Step::ReleaseEmptyBlocks { node }),
    ]
}

const NODES: [&str; 3] = ["n0", "n1", "n2"];

fn pools() -> Vec<PoolSpec> {
    // Four blocks of eight addresses: small enough to exhaust, claim and borrow often.
    vec![pool("p", "10.0.0.0/27").with_block_size(29)]
}

fn run(strict: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let s = mem();
    let ipam = Ipam::new(&s);
    if strict {
        ipam.set_config(IpamConfig {
            strict_affinity: true,
            ..IpamConfig::default()
        })
        .unwrap();
    }
    let pools = pools();
    let mut model: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (k, st) in steps.iter().enumerate() {
        let handle = format!("h{k}");
        match st {
            Step::Assign { node, n } => {
                match ipam.auto_assign(&req(&handle, NODES[*node], *n, &pools)) {
                    Ok(r) => {
                        prop_assert_eq!(r.v4.len(), *n);
                        for a in r.v4 {
                            prop_assert!(
                                model.insert(a.ip, handle.clone()).is_none(),
                                "{} handed out twice",
                                a.ip
                            );
                        }
                    }
                    Err(Error::Exhausted { .. }) | Err(Error::BlockLimit { .. }) => {
                        prop_assert!(ipam.ips_by_handle(&handle).unwrap().is_empty());
                        // Without strict affinity, exhaustion means fewer than n addresses
                        // were free.
                        if !strict {
                            prop_assert!(32 - model.len() < *n);
                        }
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Step::AssignIp { node, offset } => {
                let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, *offset));
                let r = ipam.assign_ip(&AssignIpRequest {
                    ip: Some(ip),
                    handle_id: handle.clone(),
                    node: NODES[*node].into(),
                    pools: pools.clone(),
                    ..Default::default()
                });
                match (r, model.get(&ip)) {
                    (Ok(_), None) => {
                        model.insert(ip, handle.clone());
                    }
                    (Err(Error::InUse { handle: h, .. }), Some(owner)) => {
                        prop_assert_eq!(h.as_deref(), Some(owner.as_str()));
                    }
                    (Err(Error::AffinityMismatch { .. }), _) if strict => {}
                    (r, owner) => {
                        return Err(TestCaseError::fail(format!(
                            "assign {ip}: {r:?} while the model says {owner:?}"
                        )));
                    }
                }
            }
            Step::ReleaseHandle { pick } => {
                let handles: Vec<String> = model.values().cloned().collect();
                let h = if handles.is_empty() {
                    "nobody".to_owned()
                } else {
                    handles[pick % handles.len()].clone()
                };
                let mut got = ipam.release_by_handle(&h).unwrap();
                got.sort();
                let want: Vec<IpAddr> = model
                    .iter()
                    .filter(|(_, v)| **v == h)
                    .map(|(k, _)| *k)
                    .collect();
                prop_assert_eq!(&got, &want);
                model.retain(|_, v| *v != h);
            }
            Step::ReleaseIp { pick, stray } => {
                let ip = if *stray || model.is_empty() {
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, (*pick % 40) as u8))
                } else {
                    *model.keys().nth(pick % model.len()).unwrap()
                };
                let out = ipam.release_ips(&[ip]).unwrap();
                if model.remove(&ip).is_some() {
                    prop_assert_eq!(out.released, vec![ip]);
                } else {
                    prop_assert_eq!(out.not_allocated, vec![ip]);
                }
            }
            Step::ReleaseEmptyBlocks { node } => {
                ipam.release_empty_blocks(NODES[*node]).unwrap();
            }
        }
        // The store agrees with the model after every step.
        let live = |h: &str, _: &BTreeMap<String, String>| model.values().any(|v| v == h);
        let nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        let report = ipam.check(&live, &nodes).unwrap();
        prop_assert!(report.is_clean(), "after {:?}: {:?}", st, report);
        prop_assert_eq!(report.allocations, model.len());
        let usage = ipam.show(&pools, &[]).unwrap();
        prop_assert_eq!(usage.pools[0].in_use, model.len() as u128);
        prop_assert_eq!(usage.pools[0].free, 32 - model.len() as u128);
        for (ip, h) in &model {
            match ipam.get_allocation(*ip).unwrap() {
                AllocationStatus::InUse(info) => {
                    prop_assert_eq!(info.handle_id.as_deref(), Some(h.as_str()))
                }
                other => return Err(TestCaseError::fail(format!("{ip}: {other:?}"))),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_model(
        strict in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        run(strict, &steps)?;
    }
}
