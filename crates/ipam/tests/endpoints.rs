//! `ipam check` against the workload endpoints: an address an endpoint lists must be held by a
//! handle of the endpoint's container, and no two endpoints may list one address (issue 11).

mod common;

use common::{ip, mem, pool, req};
use gingham_ipam::{EndpointClaim, Ipam, handle_is_for_container};

fn claim(endpoint: &str, container: &str, ips: &[std::net::IpAddr]) -> EndpointClaim {
    EndpointClaim {
        endpoint: endpoint.into(),
        container_id: container.into(),
        ips: ips.to_vec(),
    }
}

#[test]
fn endpoints_and_handles_must_agree() {
    let s = mem();
    let ipam = Ipam::new(&s);
    let pools = [pool("p", "10.0.0.0/24")];
    let a = ipam
        .auto_assign(&req("net.c2", "n1", 1, &pools))
        .unwrap()
        .v4[0]
        .ip;
    let b = ipam
        .auto_assign(&req("net.c3", "n1", 1, &pools))
        .unwrap()
        .v4[0]
        .ip;
    let nodes = ["n1".to_owned()];
    let live = |_: &str, _: &_| true;

    let ok = ipam
        .check_with_endpoints(
            &live,
            &nodes,
            &[claim("ns/c2", "c2", &[a]), claim("ns/c3", "c3", &[b])],
        )
        .unwrap();
    assert!(ok.is_clean(), "{ok:?}");

    // The state: c2's endpoint still lists the address IPAM now holds for c3, and c3's
    // endpoint lists it too.
    let bad = ipam
        .check_with_endpoints(
            &live,
            &nodes,
            &[claim("ns/c2", "c2", &[b]), claim("ns/c3", "c3", &[b])],
        )
        .unwrap();
    assert!(!bad.is_clean());
    assert_eq!(bad.endpoint_mismatches.len(), 1, "{bad:?}");
    let m = &bad.endpoint_mismatches[0];
    assert_eq!((m.endpoint.as_str(), m.ip), ("ns/c2", b));
    assert!(m.problem.contains("net.c3"), "{}", m.problem);
    assert_eq!(bad.shared_addresses.len(), 1);
    assert_eq!(bad.shared_addresses[0].ip, b);
    assert_eq!(bad.shared_addresses[0].endpoints, ["ns/c2", "ns/c3"]);

    // An endpoint listing a free address, or one outside every block.
    let free = ip("10.0.0.50");
    let bad = ipam
        .check_with_endpoints(
            &live,
            &nodes,
            &[claim("ns/c4", "c4", &[free, ip("10.9.0.1")])],
        )
        .unwrap();
    assert_eq!(bad.endpoint_mismatches.len(), 2, "{bad:?}");
    assert!(bad.endpoint_mismatches[0].problem.contains("free"));
    assert!(bad.endpoint_mismatches[1].problem.contains("no block"));
}

#[test]
fn handles_belong_to_containers() {
    assert!(handle_is_for_container("k8s-pod-network.abc", "abc"));
    assert!(handle_is_for_container("abc", "abc"));
    assert!(handle_is_for_container("net.ctr.x", "ctr.x"));
    assert!(!handle_is_for_container("k8s-pod-network.xabc", "abc"));
    assert!(!handle_is_for_container("k8s-pod-network.abc", ""));
    assert!(!handle_is_for_container("k8s-pod-network.abc", "ab"));
}
