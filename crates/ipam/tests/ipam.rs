//! Behaviour of the IPAM client against an in-memory store.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use common::{ip, mem, net, pool, raw, req};
use gingham_datastore::Datastore;
use gingham_ipam::stored::{affinity_key, block_key, handle_key};
use gingham_ipam::{
    AllocationStatus, AssignIpRequest, AssignRequest, Error, Ipam, IpamConfig, PoolSpec, Use,
};

fn ips(a: &[gingham_ipam::Assigned]) -> Vec<String> {
    a.iter().map(|a| a.ip.to_string()).collect()
}

fn strict() -> IpamConfig {
    IpamConfig {
        strict_affinity: true,
        ..IpamConfig::default()
    }
}

/// A clock the test moves by hand.
fn fake_clock(start: u64) -> (Arc<AtomicU64>, gingham_ipam::Clock) {
    let t = Arc::new(AtomicU64::new(start));
    let t2 = t.clone();
    (
        t,
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(t2.load(Ordering::SeqCst))),
    )
}

#[test]
fn first_assignment_claims_a_block_and_stores_calicos_layout() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("default-ipv4-ippool", "10.244.0.0/26")];
    let r = ipam
        .auto_assign(&req("k8s-pod-network.c1", "n1", 2, &pools))
        .unwrap();
    assert_eq!(ips(&r.v4), ["10.244.0.0", "10.244.0.1"]);
    assert_eq!(r.v4[0].block, net("10.244.0.0/26"));
    assert_eq!(r.v4[0].pool, "default-ipv4-ippool");
    assert!(!r.v4[0].borrowed);
    assert_eq!(ipam.blocks_for_node("n1").unwrap(), [net("10.244.0.0/26")]);

    assert_eq!(
        raw(&s, "/calico/ipam/v2/host/n1/ipv4/block/10.244.0.0-26").as_deref(),
        Some(r#"{"state":"confirmed","deleted":false}"#)
    );
    assert_eq!(
        raw(&s, "/calico/ipam/v2/handle/k8s-pod-network.c1").as_deref(),
        Some(r#"{"block":{"10.244.0.0/26":2},"deleted":false}"#)
    );
    let block: serde_json::Value = serde_json::from_str(
        &raw(&s, "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26").unwrap(),
    )
    .unwrap();
    assert_eq!(block["cidr"], "10.244.0.0/26");
    assert_eq!(block["affinity"], "host:n1");
    assert_eq!(block["allocations"][0], 0);
    assert_eq!(block["allocations"][1], 0);
    assert!(block["allocations"][2].is_null());
    assert_eq!(block["allocations"].as_array().unwrap().len(), 64);
    assert_eq!(block["unallocated"][0], 2);
    assert_eq!(block["unallocated"].as_array().unwrap().len(), 62);
    assert_eq!(block["attributes"][0]["handle_id"], "k8s-pod-network.c1");
    assert_eq!(block["attributes"][0]["secondary"]["node"], "n1");
    assert_eq!(block["deleted"], false);
    assert!(block["sequenceNumber"].as_u64().unwrap() > 0);
    assert!(block["sequenceNumberForAllocation"]["1"].is_u64());
    assert!(
        block["affinity_claim_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

#[test]
fn addresses_come_in_order_from_the_start_of_the_nodes_block() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.1.0.0/16")];
    let first = ipam.auto_assign(&req("h0", "n1", 1, &pools)).unwrap().v4[0].clone();
    assert_eq!(
        first.ip,
        first.block.network(),
        "the first address is the block's first"
    );
    for i in 1..5u32 {
        let a = ipam
            .auto_assign(&req(&format!("h{i}"), "n1", 1, &pools))
            .unwrap();
        let want = u32::from(match first.ip {
            std::net::IpAddr::V4(v) => v,
            _ => unreachable!(),
        }) + i;
        assert_eq!(a.v4[0].ip, std::net::IpAddr::V4(want.into()));
        assert_eq!(a.v4[0].block, first.block);
    }
    // Another node starts elsewhere in the pool.
    let other = ipam.auto_assign(&req("x", "n2", 1, &pools)).unwrap().v4[0].clone();
    assert_ne!(other.block, first.block);
    assert_eq!(ipam.blocks_for_node("n2").unwrap(), [other.block]);
}

#[test]
fn a_full_block_makes_the_node_claim_another() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/25")];
    let a = ipam.auto_assign(&req("a", "n1", 64, &pools)).unwrap();
    assert_eq!(a.v4.len(), 64);
    assert_eq!(ipam.blocks_for_node("n1").unwrap().len(), 1);
    let b = ipam.auto_assign(&req("b", "n1", 1, &pools)).unwrap();
    assert_ne!(b.v4[0].block, a.v4[0].block);
    let mut blocks = ipam.blocks_for_node("n1").unwrap();
    blocks.sort();
    assert_eq!(blocks, [net("10.0.0.0/26"), net("10.0.0.64/26")]);
    // One request can span blocks.
    let s = mem();
    let ipam = Ipam::new(&s);
    let c = ipam.auto_assign(&req("c", "n1", 100, &pools)).unwrap();
    assert_eq!(c.v4.len(), 100);
    assert_eq!(
        raw(&s, &handle_key("c")).unwrap(),
        if c.v4[0].block == net("10.0.0.0/26") {
            r#"{"block":{"10.0.0.0/26":64,"10.0.0.64/26":36},"deleted":false}"#
        } else {
            r#"{"block":{"10.0.0.0/26":36,"10.0.0.64/26":64},"deleted":false}"#
        }
    );
}

#[test]
fn borrowing_and_strict_affinity() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/26")];
    ipam.auto_assign(&req("a", "n1", 1, &pools)).unwrap();
    // n2 cannot claim a block (there is only one) and borrows from n1's.
    let b = ipam.auto_assign(&req("b", "n2", 1, &pools)).unwrap();
    assert_eq!(ips(&b.v4), ["10.0.0.1"]);
    assert!(b.v4[0].borrowed);
    assert!(ipam.blocks_for_node("n2").unwrap().is_empty());

    ipam.set_config(strict()).unwrap();
    let e = ipam.auto_assign(&req("c", "n2", 1, &pools)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no free IPv4 address in pools p (10.0.0.0/26) for node n2: all blocks affine to the node are full, every block of the pools is claimed, and strict affinity forbids borrowing (assigned 0 of 1 requested)"
    );
    assert!(ipam.get_allocation(ip("10.0.0.2")).unwrap() == AllocationStatus::NotAssigned);
    // The owner itself still gets addresses.
    ipam.auto_assign(&req("d", "n1", 1, &pools)).unwrap();
}

#[test]
fn exhaustion_is_all_or_nothing_and_says_why() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("default-ipv4-ippool", "10.244.0.0/30").with_block_size(30)];
    ipam.auto_assign(&req("a", "n1", 2, &pools)).unwrap();
    let e = ipam.auto_assign(&req("b", "n1", 3, &pools)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no free IPv4 address in pools default-ipv4-ippool (10.244.0.0/30) for node n1: all blocks affine to the node are full, every block of the pools is claimed, and no other block has a free address to borrow (assigned 2 of 3 requested)"
    );
    assert!(matches!(e, Error::Exhausted { .. }));
    // Nothing of the failed request remains.
    assert_eq!(raw(&s, &handle_key("b")), None);
    for a in ["10.244.0.2", "10.244.0.3"] {
        assert_eq!(
            ipam.get_allocation(ip(a)).unwrap(),
            AllocationStatus::NotAssigned
        );
    }
    let ok = ipam.auto_assign(&req("c", "n1", 2, &pools)).unwrap();
    assert_eq!(ips(&ok.v4), ["10.244.0.2", "10.244.0.3"]);
}

#[test]
fn dual_stack_failure_releases_the_ipv4_part() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let mut r = req("h", "n1", 1, &[pool("v4", "10.0.0.0/26")]);
    r.num_v6 = 1;
    r.pools_v6 = vec![pool("v6", "fd00::/122").with_block_size(122)];
    r.pools_v6[0].disabled = true;
    let e = ipam.auto_assign(&r).unwrap_err();
    assert!(matches!(e, Error::NoPool { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "none of the pools is enabled and selects the node (pools: v6 (fd00::/122) disabled)"
        ),
        "{e}"
    );
    assert_eq!(raw(&s, &handle_key("h")), None);
    assert_eq!(
        ipam.get_allocation(ip("10.0.0.0")).unwrap(),
        AllocationStatus::NotAssigned
    );
}

#[test]
fn ipv6_uses_122_blocks_and_calicos_v6_keys() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let mut r = req("h", "n1", 1, &[pool("v4", "10.0.0.0/26")]);
    r.num_v6 = 2;
    r.pools_v6 = vec![pool("v6", "fd00:10::/122")];
    let got = ipam.auto_assign(&r).unwrap();
    assert_eq!(ips(&got.v6), ["fd00:10::", "fd00:10::1"]);
    assert_eq!(got.v6[0].block, net("fd00:10::/122"));
    assert!(raw(&s, "/calico/ipam/v2/assignment/ipv6/block/fd00:10::-122").is_some());
    assert!(raw(&s, "/calico/ipam/v2/host/n1/ipv6/block/fd00:10::-122").is_some());
    assert_eq!(
        raw(&s, &handle_key("h")).unwrap(),
        r#"{"block":{"10.0.0.0/26":1,"fd00:10::/122":2},"deleted":false}"#
    );
    assert_eq!(
        ipam.blocks_for_node("n1").unwrap(),
        [net("10.0.0.0/26"), net("fd00:10::/122")]
    );
    let released = ipam.release_by_handle("h").unwrap();
    assert_eq!(released.len(), 3);
    // A /64 pool walks lazily and still finds a block.
    let mut r = req("h6", "n1", 0, &[]);
    r.num_v6 = 1;
    r.pools_v6 = vec![pool("big", "fd01::/64")];
    let got = ipam.auto_assign(&r).unwrap();
    assert_eq!(got.v6[0].block.prefix_len(), 122);
    assert!(net("fd01::/64").contains(&got.v6[0].ip));
}

#[test]
fn reservations_are_never_handed_out() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/26")];
    let mut r = req("a", "n1", 3, &pools);
    r.reservations = vec![net("10.0.0.0/30"), net("10.0.0.5/32")];
    let got = ipam.auto_assign(&r).unwrap();
    assert_eq!(ips(&got.v4), ["10.0.0.4", "10.0.0.6", "10.0.0.7"]);

    let e = ipam
        .assign_ip(&AssignIpRequest {
            ip: Some(ip("10.0.0.5")),
            handle_id: "b".into(),
            node: "n1".into(),
            pools: pools.to_vec(),
            reservations: r.reservations.clone(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.0.0.5 is reserved by an IPReservation (10.0.0.5/32) and cannot be assigned"
    );
    let usage = ipam.show(&pools, &r.reservations).unwrap();
    let p = &usage.pools[0];
    assert_eq!((p.total, p.in_use, p.reserved, p.free), (64, 3, 5, 56));
    let b = &p.blocks[0];
    assert_eq!((b.total, b.in_use, b.reserved, b.free), (64, 3, 5, 56));
    // A wholly reserved pool yields nothing.
    let mut r = req("c", "n2", 1, &[pool("q", "10.9.0.0/26")]);
    r.reservations = vec![net("10.9.0.0/24")];
    assert!(matches!(
        ipam.auto_assign(&r).unwrap_err(),
        Error::Exhausted { .. }
    ));
}

#[test]
fn assigning_a_specific_address() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let mut disabled = pool("off", "10.9.0.0/24");
    disabled.disabled = true;
    let mut lb = pool("lb", "10.8.0.0/24");
    lb.allowed_uses = vec![Use::LoadBalancer];
    let pools = vec![pool("p", "10.0.0.0/24"), disabled, lb];
    let base = AssignIpRequest {
        handle_id: "h1".into(),
        node: "n1".into(),
        pools: pools.clone(),
        ..Default::default()
    };
    let a = ipam
        .assign_ip(&AssignIpRequest {
            ip: Some(ip("10.0.0.77")),
            ..base.clone()
        })
        .unwrap();
    assert_eq!(a.block, net("10.0.0.64/26"));
    assert_eq!(ipam.blocks_for_node("n1").unwrap(), [net("10.0.0.64/26")]);
    let cases: [(&str, &str, &str); 4] = [
        (
            "10.0.0.77",
            "h2",
            "10.0.0.77 is already in use by handle h1",
        ),
        (
            "10.9.0.1",
            "h2",
            "10.9.0.1 is not in any enabled IP pool (enabled pools: p (10.0.0.0/24), lb (10.8.0.0/24))",
        ),
        (
            "192.168.0.1",
            "h2",
            "192.168.0.1 is not in any enabled IP pool (enabled pools: p (10.0.0.0/24), lb (10.8.0.0/24))",
        ),
        (
            "10.8.0.1",
            "h2",
            "10.8.0.1 is in IP pool lb, whose allowedUses (LoadBalancer) do not include Workload",
        ),
    ];
    for (addr, handle, want) in cases {
        let e = ipam
            .assign_ip(&AssignIpRequest {
                ip: Some(ip(addr)),
                handle_id: handle.into(),
                ..base.clone()
            })
            .unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    // The auto-assigner skips the taken address.
    let got = ipam.auto_assign(&req("h3", "n1", 1, &pools[..1])).unwrap();
    assert_eq!(got.v4[0].block, net("10.0.0.64/26"));
    assert_ne!(got.v4[0].ip, ip("10.0.0.77"));
    // With strict affinity another node may not take an address of n1's block.
    ipam.set_config(strict()).unwrap();
    let e = ipam
        .assign_ip(&AssignIpRequest {
            ip: Some(ip("10.0.0.78")),
            node: "n2".into(),
            handle_id: "h4".into(),
            ..base.clone()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.0.0.78 is in block 10.0.0.64/26, which has affinity host:n1; strict affinity forbids assigning it to node n2"
    );
}

#[test]
fn release_by_handle_and_by_address() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/26")];
    let a = ipam.auto_assign(&req("a", "n1", 2, &pools)).unwrap();
    ipam.auto_assign(&req("b", "n1", 1, &pools)).unwrap();

    let out = ipam
        .release_ips(&[a.v4[0].ip, ip("10.0.0.50"), ip("192.0.2.1")])
        .unwrap();
    assert_eq!(out.released, [a.v4[0].ip]);
    assert_eq!(out.not_allocated, [ip("192.0.2.1"), ip("10.0.0.50")]);
    assert_eq!(
        raw(&s, &handle_key("a")).unwrap(),
        r#"{"block":{"10.0.0.0/26":1},"deleted":false}"#
    );
    // Releasing again changes nothing.
    let again = ipam.release_ips(&[a.v4[0].ip]).unwrap();
    assert!(again.released.is_empty());

    assert_eq!(ipam.release_by_handle("a").unwrap(), [a.v4[1].ip]);
    assert_eq!(raw(&s, &handle_key("a")), None);
    assert!(ipam.release_by_handle("a").unwrap().is_empty());
    assert!(ipam.release_by_handle("never-existed").unwrap().is_empty());
    assert_eq!(ipam.ips_by_handle("b").unwrap(), [ip("10.0.0.2")]);

    // The last address of an affine block leaves the block in place.
    ipam.release_by_handle("b").unwrap();
    assert!(raw(&s, &block_key(&net("10.0.0.0/26"))).is_some());
    assert_eq!(ipam.blocks_for_node("n1").unwrap(), [net("10.0.0.0/26")]);
    assert_eq!(
        ipam.release_empty_blocks("n1").unwrap(),
        [net("10.0.0.0/26")]
    );
    assert!(raw(&s, &block_key(&net("10.0.0.0/26"))).is_none());
    assert!(raw(&s, &affinity_key("n1", &net("10.0.0.0/26"))).is_none());
    assert!(ipam.blocks_for_node("n1").unwrap().is_empty());
}

#[test]
fn released_addresses_are_reused_last() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/26")];
    for h in ["a", "b", "c"] {
        ipam.auto_assign(&req(h, "n1", 1, &pools)).unwrap();
    }
    ipam.release_by_handle("a").unwrap();
    let d = ipam.auto_assign(&req("d", "n1", 1, &pools)).unwrap();
    assert_eq!(ips(&d.v4), ["10.0.0.3"]);
}

#[test]
fn releasing_an_affine_blocks_last_borrowed_address_and_non_affine_blocks() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/26")];
    ipam.auto_assign(&req("a", "n1", 1, &pools)).unwrap();
    ipam.auto_assign(&req("b", "n2", 1, &pools)).unwrap();
    // Node n1 goes away: its affinity is released but the block keeps n2's address.
    assert_eq!(
        ipam.release_host_affinities("n1", false).unwrap(),
        [net("10.0.0.0/26")]
    );
    let block: serde_json::Value =
        serde_json::from_str(&raw(&s, &block_key(&net("10.0.0.0/26"))).unwrap()).unwrap();
    assert!(block["affinity"].is_null());
    // Releasing the last address of a block without affinity deletes the block.
    ipam.release_by_handle("a").unwrap();
    ipam.release_by_handle("b").unwrap();
    assert!(raw(&s, &block_key(&net("10.0.0.0/26"))).is_none());
    let report = ipam.check(&|_, _| true, &["n2".into()]).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn block_limit_per_host() {
    let s = mem();
    let ipam = Ipam::new(&s);
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1,
        ..IpamConfig::default()
    })
    .unwrap();
    let pools = [pool("p", "10.0.0.0/25")];
    ipam.auto_assign(&req("a", "n1", 64, &pools)).unwrap();
    let e = ipam.auto_assign(&req("b", "n1", 1, &pools)).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "node n1 needs a new IPv4 IPAM block but already owns 1 and the limit is 1"
        ),
        "{e}"
    );
    // A per-request limit applies too.
    let s = mem();
    let ipam = Ipam::new(&s);
    let mut r = req("a", "n1", 65, &pools);
    r.max_blocks_per_host = Some(1);
    assert!(matches!(
        ipam.auto_assign(&r).unwrap_err(),
        Error::BlockLimit { .. }
    ));
}

#[test]
fn configuration_rules() {
    let s = mem();
    let ipam = Ipam::new(&s);
    assert_eq!(ipam.config().unwrap(), IpamConfig::default());
    let cases = [
        (
            IpamConfig {
                strict_affinity: false,
                auto_allocate_blocks: false,
                ..IpamConfig::default()
            },
            "invalid IPAM configuration: strictAffinity and autoAllocateBlocks cannot both be false (a node could then get no address at all)",
        ),
        (
            IpamConfig {
                max_blocks_per_host: 3,
                ..IpamConfig::default()
            },
            "invalid IPAM configuration: maxBlocksPerHost 3 requires strictAffinity=true",
        ),
        (
            IpamConfig {
                ip_cooldown_seconds: 5000,
                ..IpamConfig::default()
            },
            "invalid IPAM configuration: ipCooldownSeconds 5000 is too large (valid: 0-1200)",
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(ipam.set_config(cfg).unwrap_err().to_string(), want);
    }
    let cfg = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 4,
        ip_cooldown_seconds: 0,
    };
    ipam.set_config(cfg).unwrap();
    assert_eq!(ipam.config().unwrap(), cfg);
    assert_eq!(
        raw(&s, "/calico/ipam/v2/config").unwrap(),
        r#"{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4}"#
    );
    // With automatic block allocation off, a node without blocks gets nothing.
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
        ..IpamConfig::default()
    })
    .unwrap();
    let e = ipam
        .auto_assign(&req("a", "n1", 1, &[pool("p", "10.0.0.0/24")]))
        .unwrap_err();
    assert!(e.to_string().contains("autoAllocateBlocks=false"), "{e}");
}

#[test]
fn pool_selection_errors() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let mut other_nodes = pool("rack2", "10.0.0.0/24");
    other_nodes.node_selector_matches = false;
    let mut tunnel_only = pool("tun", "10.1.0.0/24");
    tunnel_only.allowed_uses = vec![Use::Tunnel];
    let cases: Vec<(Vec<PoolSpec>, &str)> = vec![
        (
            vec![],
            "no usable IPv4 IP pool for node n1: no pools are configured",
        ),
        (
            vec![other_nodes],
            "no usable IPv4 IP pool for node n1: none of the pools is enabled and selects the node (pools: rack2 (10.0.0.0/24) nodeSelector does not match)",
        ),
        (
            vec![tunnel_only.clone()],
            "no usable IPv4 IP pool for node n1: no pool that selects the node allows use Workload (pools: tun (10.1.0.0/24))",
        ),
        (
            vec![pool("bad", "10.0.0.1/24")],
            "IP pool bad: cidr 10.0.0.1/24 has host bits set; use 10.0.0.0/24",
        ),
        (
            vec![pool("v6", "fd00::/120")],
            "invalid IPAM request: pool v6 (fd00::/120) is given as an IPv4 pool",
        ),
    ];
    for (pools, want) in cases {
        let e = ipam.auto_assign(&req("h", "n1", 1, &pools)).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    let mut r = req("h", "n1", 1, &[tunnel_only]);
    r.intended_use = Use::Tunnel;
    ipam.auto_assign(&r).unwrap();
    let e = ipam
        .auto_assign(&req("", "n1", 1, &[pool("p", "10.2.0.0/24")]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid IPAM request: handle_id is empty; every allocation needs an owner handle"
    );
}

#[test]
fn cooldown_delays_reuse() {
    let s = mem();
    let (t, clock) = fake_clock(1_800_000_000);
    let ipam = Ipam::new(&s).with_clock(clock);
    ipam.set_config(IpamConfig {
        ip_cooldown_seconds: 60,
        ..IpamConfig::default()
    })
    .unwrap();
    let pools = [pool("p", "10.0.0.0/31").with_block_size(31)];
    ipam.auto_assign(&req("a", "n1", 1, &pools)).unwrap();
    ipam.auto_assign(&req("b", "n1", 1, &pools)).unwrap();
    ipam.release_by_handle("a").unwrap();
    assert_eq!(
        ipam.get_allocation(ip("10.0.0.0")).unwrap(),
        AllocationStatus::CoolingDown {
            ip: ip("10.0.0.0"),
            block: net("10.0.0.0/31")
        }
    );
    assert!(matches!(
        ipam.auto_assign(&req("c", "n1", 1, &pools)).unwrap_err(),
        Error::Exhausted { .. }
    ));
    t.fetch_add(61, Ordering::SeqCst);
    let c = ipam.auto_assign(&req("c", "n1", 1, &pools)).unwrap();
    assert_eq!(ips(&c.v4), ["10.0.0.0"]);
}

#[test]
fn empty_blocks_of_other_nodes_are_reclaimed_after_a_minute() {
    let s = mem();
    let (t, clock) = fake_clock(1_800_000_000);
    let ipam = Ipam::new(&s).with_clock(clock);
    ipam.set_config(strict()).unwrap();
    let pools = [pool("p", "10.0.0.0/26")];
    ipam.auto_assign(&req("a", "n1", 1, &pools)).unwrap();
    ipam.release_by_handle("a").unwrap();
    assert!(matches!(
        ipam.auto_assign(&req("b", "n2", 1, &pools)).unwrap_err(),
        Error::Exhausted { .. }
    ));
    t.fetch_add(61, Ordering::SeqCst);
    let b = ipam.auto_assign(&req("b", "n2", 1, &pools)).unwrap();
    assert_eq!(ips(&b.v4), ["10.0.0.0"]);
    assert_eq!(ipam.blocks_for_node("n2").unwrap(), [net("10.0.0.0/26")]);
    assert!(ipam.blocks_for_node("n1").unwrap().is_empty());
    assert!(
        ipam.check(&|_, _| true, &["n1".into(), "n2".into()])
            .unwrap()
            .is_clean()
    );
}

#[test]
fn blocks_of_pools_that_stop_selecting_the_node_are_released_when_empty() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let a = pool("a", "10.0.0.0/26");
    let b = pool("b", "10.1.0.0/26");
    ipam.auto_assign(&req("x", "n1", 1, std::slice::from_ref(&a)))
        .unwrap();
    ipam.release_by_handle("x").unwrap();
    let mut a_off = a.clone();
    a_off.node_selector_matches = false;
    let got = ipam.auto_assign(&req("y", "n1", 1, &[a_off, b])).unwrap();
    assert_eq!(ips(&got.v4), ["10.1.0.0"]);
    assert_eq!(ipam.blocks_for_node("n1").unwrap(), [net("10.1.0.0/26")]);
}

#[test]
fn reads_and_repairs_data_left_by_calico() {
    let s = mem();
    // A block with one allocation, null attributes elsewhere, and a pending affinity, as a
    // Calico client might leave them after a crash between its claim steps.
    let block = r#"{"cidr":"10.0.0.0/30","affinity":"host:n1","allocations":[0,null,null,null],"unallocated":[1,2,3],"attributes":[{"handle_id":"old\r\neth0","secondary":{"node":"n1"}}],"sequenceNumber":5,"sequenceNumberForAllocation":null,"deleted":false}"#;
    s.put(
        "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-30",
        block.as_bytes(),
    )
    .unwrap();
    s.put(
        "/calico/ipam/v2/host/n1/ipv4/block/10.0.0.0-30",
        br#"{"state":"pending","deleted":false}"#,
    )
    .unwrap();
    s.put(
        "/calico/ipam/v2/handle/old",
        br#"{"block":{"10.0.0.0/30":1},"deleted":false}"#,
    )
    .unwrap();
    let ipam = Ipam::new(&s);
    assert!(ipam.blocks_for_node("n1").unwrap().is_empty());
    let pools = [pool("p", "10.0.0.0/30").with_block_size(30)];
    let got = ipam.auto_assign(&req("new", "n1", 1, &pools)).unwrap();
    assert_eq!(ips(&got.v4), ["10.0.0.1"]);
    assert_eq!(
        raw(&s, "/calico/ipam/v2/host/n1/ipv4/block/10.0.0.0-30").unwrap(),
        r#"{"state":"confirmed","deleted":false}"#
    );
    match ipam.get_allocation(ip("10.0.0.0")).unwrap() {
        AllocationStatus::InUse(info) => {
            assert_eq!(info.handle_id.as_deref(), Some("old"));
            assert_eq!(info.block_affinity.as_deref(), Some("host:n1"));
        }
        other => panic!("{other:?}"),
    }
    // The malformed handle is sanitized when releasing.
    assert_eq!(
        ipam.release_by_handle("old\r\neth0").unwrap(),
        [ip("10.0.0.0")]
    );
    assert!(ipam.check(&|_, _| true, &["n1".into()]).unwrap().is_clean());
}

#[test]
fn check_reports_leaks_gone_nodes_and_mismatches() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/24")];
    ipam.auto_assign(&req("live", "n1", 1, &pools)).unwrap();
    ipam.auto_assign(&req("dead", "n1", 1, &pools)).unwrap();
    ipam.auto_assign(&req("other", "n2", 1, &pools)).unwrap();
    let nodes = ["n1".to_owned(), "n2".to_owned()];
    let report = ipam.check(&|_, _| true, &nodes).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.blocks, report.allocations, report.handles),
        (2, 3, 3)
    );

    let live = |h: &str, attrs: &BTreeMap<String, String>| {
        assert_eq!(attrs["pod"], h);
        h != "dead"
    };
    let report = ipam.check(&live, &nodes[..1]).unwrap();
    assert_eq!(report.leaked.len(), 1);
    assert_eq!(report.leaked[0].handle_id.as_deref(), Some("dead"));
    assert_eq!(report.blocks_of_missing_nodes.len(), 1);
    assert_eq!(report.blocks_of_missing_nodes[0].node, "n2");
    assert_eq!(report.affinities_of_missing_nodes.len(), 1);

    // Tamper with a handle record and an affinity.
    let n1_block = ipam.blocks_for_node("n1").unwrap()[0];
    s.put(
        &handle_key("live"),
        format!(r#"{{"block":{{"{n1_block}":3}},"deleted":false}}"#).as_bytes(),
    )
    .unwrap();
    s.delete(&handle_key("other"), None).unwrap();
    s.put(
        &affinity_key("n2", &n1_block),
        br#"{"state":"confirmed","deleted":false}"#,
    )
    .unwrap();
    let report = ipam.check(&|_, _| true, &nodes).unwrap();
    let mut mismatches: Vec<(String, i64, i64)> = report
        .handle_mismatches
        .iter()
        .map(|m| (m.handle_id.clone(), m.recorded, m.actual))
        .collect();
    mismatches.sort();
    assert_eq!(
        mismatches,
        [("live".to_owned(), 3, 1), ("other".to_owned(), 0, 1)]
    );
    assert_eq!(report.affinity_problems.len(), 1);
    assert_eq!(
        report.affinity_problems[0].problem,
        "the block is affine to node n1"
    );
}

#[test]
fn show_counts_pools_blocks_and_orphans() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/24")];
    ipam.auto_assign(&req("a", "n1", 3, &pools)).unwrap();
    ipam.auto_assign(&req("b", "n2", 2, &pools)).unwrap();
    ipam.auto_assign(&req("c", "n3", 1, &[pool("gone", "10.5.0.0/26")]))
        .unwrap();
    let usage = ipam.show(&pools, &[]).unwrap();
    let p = &usage.pools[0];
    assert_eq!((p.total, p.in_use, p.reserved, p.free), (256, 5, 0, 251));
    assert_eq!(p.blocks.len(), 2);
    let mut per_block: Vec<(u64, u64)> = p.blocks.iter().map(|b| (b.in_use, b.free)).collect();
    per_block.sort();
    assert_eq!(per_block, [(2, 62), (3, 61)]);
    assert_eq!(usage.orphan_blocks.len(), 1);
    assert_eq!(usage.orphan_blocks[0].cidr, net("10.5.0.0/26"));
    // Reserved addresses are not free, whether or not a block covers them.
    let usage = ipam.show(&pools, &[net("10.0.0.0/30")]).unwrap();
    let p = &usage.pools[0];
    assert_eq!(p.reserved, 4);
    let reserved_free = ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .iter()
        .filter(|a| ipam.get_allocation(ip(a)).unwrap() == AllocationStatus::NotAssigned)
        .count() as u128;
    assert_eq!(p.free, 256 - 5 - reserved_free);
}

#[test]
fn assign_request_defaults() {
    let r = AssignRequest::default();
    assert_eq!(r.intended_use, Use::Workload);
}
