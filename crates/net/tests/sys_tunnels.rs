//! System tests of the tunnel devices and cluster routes ([`gingham_net::routes::sync`]) in
//! namespaces the tests make (root needed): what is created, that a second pass changes
//! nothing, that what someone else changed or removed is put back, that an incompatible device
//! is recreated, that what is no longer wanted goes, and that routes this project does not own
//! are left alone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use gingham_net::routes::{ClusterRoute, ClusterRoutes, Via, ipip_support, sync};
use gingham_net::vxlan::{Vtep, VxlanDevice, vtep_mac};
use gingham_net::{Netlink, NetnsRef};
use gingham_testkit::netns::TestNetns;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A node namespace with `up0` (192.168.40.1/24, MTU 1500) towards a peer namespace.
fn node() -> (TestNetns, TestNetns) {
    let n = TestNetns::new("tun");
    let peer = TestNetns::new("tunp");
    gingham_testkit::netns::wire_to_underlay(&n, &peer, "p0", "192.168.40.1/24", "192.168.40.2/24");
    (n, peer)
}

fn want() -> ClusterRoutes {
    let vtep = Vtep {
        tunnel_ip: "10.250.1.1".parse().unwrap(),
        mac: vtep_mac("node-b"),
        host_ip: "192.168.40.2".parse().unwrap(),
    };
    ClusterRoutes {
        local: Some("192.168.40.1".parse().unwrap()),
        vxlan: Some(VxlanDevice::calico(
            v4("192.168.40.1"),
            v4("10.250.0.1"),
            vtep_mac("node-a"),
        )),
        vteps: BTreeSet::from([vtep]),
        ipip: None,
        routes: BTreeSet::from([
            ClusterRoute {
                dst: "10.250.1.0/26".parse().unwrap(),
                via: Via::Vxlan("10.250.1.1".parse().unwrap()),
            },
            ClusterRoute {
                dst: "10.250.2.0/26".parse().unwrap(),
                via: Via::Underlay("192.168.40.2".parse().unwrap()),
            },
            ClusterRoute {
                dst: "10.250.3.7/32".parse().unwrap(),
                via: Via::VxlanDevice,
            },
        ]),
        pools: BTreeSet::from(["10.250.0.0/16".parse().unwrap()]),
        ..Default::default()
    }
}

#[test]
fn sys_vxlan_device_entries_and_routes_are_made_kept_and_removed() {
    gingham_testkit::require_root();
    let (n, _peer) = node();
    let nl = Netlink::open(&NetnsRef::path(n.path())).unwrap();
    let mut earlier = BTreeSet::new();
    let want = want();

    let done = sync(&nl, &want, &mut earlier).unwrap();
    assert!(!done.is_empty());
    let dev = n.exec_ok(&["ip", "-d", "link", "show", "vxlan.calico"]);
    for s in [
        "mtu 1450",
        "vxlan id 4096",
        "local 192.168.40.1",
        "dev up0",
        "dstport 4789",
        "nolearning",
        "noudpcsum",
        "state UNKNOWN",
    ] {
        assert!(dev.contains(s), "{s} in {dev}");
    }
    assert!(
        dev.contains(&vtep_mac("node-a").to_string()),
        "the derived MAC: {dev}"
    );
    let addr = n.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "vxlan.calico"]);
    assert!(addr.contains("10.250.0.1/32"), "{addr}");
    let neigh = n.exec_ok(&["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        neigh.contains(&format!(
            "10.250.1.1 lladdr {} PERMANENT",
            vtep_mac("node-b")
        )),
        "{neigh}"
    );
    let fdb = n.exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(
        fdb.contains(&format!(
            "{} dst 192.168.40.2 self permanent",
            vtep_mac("node-b")
        )),
        "{fdb}"
    );
    let routes = n.exec_ok(&["ip", "route"]);
    for r in [
        "10.250.1.0/26 via 10.250.1.1 dev vxlan.calico proto 80 onlink",
        "10.250.2.0/26 via 192.168.40.2 dev up0 proto 80 onlink",
        "10.250.3.7 dev vxlan.calico proto 80 scope link",
    ] {
        assert!(routes.contains(r), "{r} in\n{routes}");
    }

    // A second pass changes nothing.
    assert_eq!(
        sync(&nl, &want, &mut earlier).unwrap(),
        Vec::<String>::new()
    );

    // Changed or added by someone: put back; another owner's route stays.
    n.exec_ok(&["ip", "link", "set", "vxlan.calico", "mtu", "1300"]);
    n.exec_ok(&["ip", "route", "del", "10.250.1.0/26"]);
    n.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.250.9.0/26",
        "via",
        "192.168.40.2",
        "proto",
        "80",
    ]);
    n.exec_ok(&["ip", "route", "add", "10.250.8.0/26", "via", "192.168.40.2"]);
    // Someone's routes with our protocol number outside every pool are theirs.
    n.exec_ok(&[
        "ip",
        "route",
        "replace",
        "default",
        "via",
        "192.168.40.2",
        "proto",
        "80",
    ]);
    n.exec_ok(&[
        "ip",
        "route",
        "add",
        "172.31.0.0/16",
        "via",
        "192.168.40.2",
        "proto",
        "80",
    ]);
    let done = sync(&nl, &want, &mut earlier).unwrap();
    assert_eq!(done.len(), 3, "{done:?}");
    let routes = n.exec_ok(&["ip", "route"]);
    assert!(!routes.contains("10.250.9.0/26"), "{routes}");
    assert!(
        routes.contains("10.250.8.0/26 via 192.168.40.2 dev up0"),
        "{routes}"
    );
    assert!(routes.contains("10.250.1.0/26 via 10.250.1.1 dev vxlan.calico"));
    assert!(
        n.exec_ok(&["ip", "link", "show", "vxlan.calico"])
            .contains("mtu 1450")
    );

    // A device that is not the one wanted (another VNI) is made again.
    n.exec_ok(&["ip", "link", "del", "vxlan.calico"]);
    n.exec_ok(&[
        "ip",
        "link",
        "add",
        "vxlan.calico",
        "type",
        "vxlan",
        "id",
        "7",
        "dstport",
        "4789",
        "local",
        "192.168.40.1",
        "dev",
        "up0",
    ]);
    sync(&nl, &want, &mut earlier).unwrap();
    let dev = n.exec_ok(&["ip", "-d", "link", "show", "vxlan.calico"]);
    assert!(dev.contains("vxlan id 4096"), "{dev}");
    assert!(
        n.exec_ok(&["ip", "route"])
            .contains("10.250.1.0/26 via 10.250.1.1 dev vxlan.calico")
    );

    // The pool is gone: its routes go all the same (an earlier pass wanted them).
    let mut gone = want.clone();
    gone.pools.clear();
    gone.routes.retain(|r| r.via == Via::VxlanDevice);
    sync(&nl, &gone, &mut earlier).unwrap();
    let routes = n.exec_ok(&["ip", "route"]);
    assert!(!routes.contains("10.250.2.0/26"), "{routes}");
    sync(&nl, &want, &mut earlier).unwrap();

    // The remote node goes: its entries and routes go.
    let mut less = want.clone();
    less.vteps.clear();
    less.routes.retain(|r| r.via == Via::VxlanDevice);
    sync(&nl, &less, &mut earlier).unwrap();
    let neigh = n.exec_ok(&["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(!neigh.contains("10.250.1.1"), "{neigh}");
    let fdb = n.exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(!fdb.contains("192.168.40.2"), "{fdb}");
    let routes = n.exec_ok(&["ip", "route"]);
    assert!(
        !routes.contains("10.250.1.0/26") && !routes.contains("10.250.2.0/26"),
        "{routes}"
    );

    // No VXLAN pool: no device, and nothing of ours through it.
    let none = ClusterRoutes {
        local: want.local,
        ..Default::default()
    };
    sync(&nl, &none, &mut earlier).unwrap();
    assert!(!n.exec_ok(&["ip", "link"]).contains("vxlan.calico"));
    let routes = n.exec_ok(&["ip", "route"]);
    assert!(!routes.contains("10.250.3.7"), "{routes}");
    assert!(routes.contains("10.250.8.0/26"), "not ours, kept: {routes}");
}

#[test]
fn sys_ipip_support_is_what_the_kernel_can_do() {
    gingham_testkit::require_root();
    let probe = TestNetns::new("tunq");
    let kernel = probe
        .exec(&["ip", "link", "add", "gh-ipip", "type", "ipip"])
        .status
        .success();
    let (n, _peer) = node();
    let nl = Netlink::open(&NetnsRef::path(n.path())).unwrap();
    let mut earlier = BTreeSet::new();
    let answer = ipip_support(&nl).unwrap();
    assert_eq!(answer.is_ok(), kernel, "{answer:?}");
    if kernel {
        assert!(n.exec_ok(&["ip", "link"]).contains("tunl0"));
    } else {
        eprintln!("NOTE: no ipip module in this kernel: tunl0 cannot be made ({answer:?})");
        assert!(answer.unwrap_err().contains("ipip"));
        // IPIP routes are not attempted without the device; the rest still goes in.
        let mut w = want();
        w.routes.insert(ClusterRoute {
            dst: "10.250.5.0/26".parse().unwrap(),
            via: Via::Ipip(v4("192.168.40.2")),
        });
        sync(&nl, &w, &mut earlier).unwrap();
        let routes = n.exec_ok(&["ip", "route"]);
        assert!(!routes.contains("10.250.5.0/26"), "{routes}");
        assert!(routes.contains("10.250.1.0/26 via 10.250.1.1 dev vxlan.calico"));
    }
}

#[test]
fn sys_ipv6_vxlan_device_entries_and_routes() {
    gingham_testkit::require_root();
    let (n, peer) = node();
    n.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:40::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    peer.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:40::2/64",
        "dev",
        "p0",
        "nodad",
    ]);
    let nl = Netlink::open(&NetnsRef::path(n.path())).unwrap();
    let mut earlier = BTreeSet::new();
    let mac = gingham_net::vxlan::vtep_mac_v6("node-b");
    let want = ClusterRoutes {
        local: Some("192.168.40.1".parse().unwrap()),
        local_v6: Some("fd00:40::1".parse().unwrap()),
        vxlan_v6: Some(VxlanDevice::calico_v6(
            "fd00:40::1".parse().unwrap(),
            "fd00:250::1".parse().unwrap(),
            gingham_net::vxlan::vtep_mac_v6("node-a"),
        )),
        vteps: BTreeSet::from([Vtep {
            tunnel_ip: "fd00:250:1::1".parse().unwrap(),
            mac,
            host_ip: "fd00:40::2".parse().unwrap(),
        }]),
        routes: BTreeSet::from([
            ClusterRoute {
                dst: "fd00:250:1::/122".parse().unwrap(),
                via: Via::Vxlan("fd00:250:1::1".parse().unwrap()),
            },
            ClusterRoute {
                dst: "fd00:250:2::/122".parse().unwrap(),
                via: Via::Underlay("fd00:40::2".parse().unwrap()),
            },
        ]),
        pools: BTreeSet::from(["fd00:250::/32".parse().unwrap()]),
        ..Default::default()
    };
    sync(&nl, &want, &mut earlier).unwrap();
    let dev = n.exec_ok(&["ip", "-d", "link", "show", "vxlan-v6.calico"]);
    for s in [
        "mtu 1430",
        "vxlan id 4096",
        "local fd00:40::1",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(dev.contains(s), "{s} in {dev}");
    }
    let addr = n.exec_ok(&["ip", "-o", "-6", "addr", "show", "dev", "vxlan-v6.calico"]);
    assert!(addr.contains("fd00:250::1/128"), "{addr}");
    let neigh = n.exec_ok(&["ip", "-6", "neigh", "show", "dev", "vxlan-v6.calico"]);
    assert!(
        neigh.contains(&format!("fd00:250:1::1 lladdr {mac} PERMANENT")),
        "{neigh}"
    );
    let fdb = n.exec_ok(&["bridge", "fdb", "show", "dev", "vxlan-v6.calico"]);
    assert!(
        fdb.contains(&format!("{mac} dst fd00:40::2 self permanent")),
        "{fdb}"
    );
    let routes = n.exec_ok(&["ip", "-6", "route"]);
    for r in [
        "fd00:250:1::/122 via fd00:250:1::1 dev vxlan-v6.calico proto 80",
        "fd00:250:2::/122 via fd00:40::2 dev up0 proto 80",
    ] {
        assert!(routes.contains(r), "{r} in\n{routes}");
    }
    assert_eq!(
        sync(&nl, &want, &mut earlier).unwrap(),
        Vec::<String>::new(),
        "a second pass changes nothing"
    );
    // No IPv4 VXLAN device was asked for.
    assert!(!n.exec_ok(&["ip", "link"]).contains("vxlan.calico"));
}
