//! System tests of namespaces, sysctls, routes and lab topologies (root needed). Every test
//! works only in namespaces it creates.

use gingham_net::{
    NetError, Netlink, NetnsRef, ROUTE_PROTOCOL, Route, RouteKind, VethSpec, create_netns,
    delete_netns, in_netns, in_netns_same_thread, netns_exists, sysctl,
};
use gingham_testkit::netns::TestNetns;
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// Deletes a namespace made by `create_netns` even if the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = delete_netns(&self.0);
    }
}

#[test]
fn sys_named_namespaces_are_created_entered_and_deleted() {
    gingham_testkit::require_root();
    let name = format!("gh-t-own-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let ns = create_netns(&name).unwrap();
    assert_eq!(ns, NetnsRef::named(&name));
    assert!(netns_exists(&name));
    assert!(matches!(create_netns(&name), Err(NetError::NetnsExists(n)) if n == name));

    // iproute2 sees it and can use it.
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &name, "ip", "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        links.lines().count(),
        1,
        "a new namespace has only lo: {links}"
    );

    // Code run inside it is in another namespace; the caller stays where it was.
    let here = netns_inode();
    let there = in_netns(&ns, netns_inode).unwrap();
    assert_ne!(here, there);
    assert_eq!(netns_inode(), here);
    assert_eq!(
        in_netns(&ns, netns_inode).unwrap(),
        there,
        "the same namespace every time"
    );
    // The same-thread variant switches in and back out, also when the closure panics.
    assert_eq!(in_netns_same_thread(&ns, netns_inode).unwrap(), there);
    assert_eq!(netns_inode(), here);
    let caught = std::panic::catch_unwind(|| in_netns_same_thread(&ns, || panic!("inside")));
    assert!(caught.is_err());
    assert_eq!(
        netns_inode(),
        here,
        "a panic inside does not leave the thread in the namespace"
    );
    let opened = ns.open().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(opened.metadata().unwrap().ino(), there);

    delete_netns(&name).unwrap();
    assert!(!netns_exists(&name));
    delete_netns(&name).unwrap();
    assert!(
        in_netns(&ns, || ()).is_err(),
        "a deleted namespace cannot be entered"
    );
}

#[test]
fn sys_sysctls_are_per_namespace() {
    gingham_testkit::require_root();
    let a = TestNetns::new("sysctl-a");
    let b = TestNetns::new("sysctl-b");
    let (na, nb) = (NetnsRef::path(a.path()), NetnsRef::path(b.path()));
    sysctl::write_in(&na, "net/ipv4/ip_forward", "1").unwrap();
    sysctl::write_in(&nb, "net/ipv4/ip_forward", "0").unwrap();
    assert_eq!(sysctl::read_in(&na, "net/ipv4/ip_forward").unwrap(), "1");
    assert_eq!(sysctl::read_in(&nb, "net/ipv4/ip_forward").unwrap(), "0");
    assert_eq!(
        a.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let wrote = in_netns(&na, || sysctl::ensure("net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert!(!wrote, "ensure does not rewrite an equal value");
    let err = sysctl::write_in(&na, "net/ipv4/conf/gh-nope/proxy_arp", "1").unwrap_err();
    assert!(
        err.to_string().contains("net/ipv4/conf/gh-nope/proxy_arp"),
        "{err}"
    );
}

#[test]
fn sys_blackhole_and_gateway_routes() {
    gingham_testkit::require_root();
    let ns = TestNetns::new("routes");
    let nl = Netlink::open(&NetnsRef::path(ns.path())).unwrap();
    let mut veth = VethSpec::new("r0", "r1");
    veth.up = true;
    veth.peer_up = true;
    nl.add_veth(&veth).unwrap();
    nl.add_address("r0", net("192.0.2.2/24")).unwrap();
    nl.add_address("r0", net("192.0.2.2/24")).unwrap(); // adding twice is fine

    // Blackholes for a v4 and a v6 block; replacing is idempotent.
    for cidr in ["10.66.0.0/26", "10.66.0.0/26", "fd00:66::/122"] {
        nl.replace_blackhole_route(net(cidr)).unwrap();
    }
    // A route via a gateway on the connected subnet, and one via an on-link gateway outside it.
    nl.replace_route_via(
        net("10.67.0.0/16"),
        "192.0.2.9".parse().unwrap(),
        "r0",
        false,
    )
    .unwrap();
    nl.replace_route_via(
        net("10.68.0.0/16"),
        "203.0.113.1".parse().unwrap(),
        "r0",
        true,
    )
    .unwrap();
    let err = nl
        .replace_route_via(
            net("10.69.0.0/16"),
            "203.0.113.1".parse().unwrap(),
            "r0",
            false,
        )
        .unwrap_err();
    assert!(
        err.netlink_errno().is_some(),
        "without onlink an off-subnet gateway is refused: {err}"
    );
    // A route that belongs to someone else (protocol static) is not ours.
    nl.replace_route(&Route::blackhole(net("10.70.0.0/24")).with_protocol(4))
        .unwrap();

    let ours = nl.routes_with_protocol(ROUTE_PROTOCOL).unwrap();
    let mut texts: Vec<String> = ours.iter().map(ToString::to_string).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "10.67.0.0/16 via 192.0.2.9 dev r0 proto 80",
            "10.68.0.0/16 via 203.0.113.1 dev r0 proto 80 onlink",
            "blackhole 10.66.0.0/26 proto 80",
            "blackhole fd00:66::/122 proto 80 metric 1024",
        ]
    );
    let ip = ns.exec_ok(&["ip", "route", "show", "proto", "80"]);
    // `ip route show proto 80` lists exactly ours (and leaves out the protocol it filtered on).
    assert!(ip.contains("blackhole 10.66.0.0/26"), "{ip}");
    assert!(
        ip.contains("10.68.0.0/16 via 203.0.113.1 dev r0 onlink"),
        "{ip}"
    );
    assert!(!ip.contains("10.70.0.0"), "{ip}");

    // Lookups: a blackholed address, a routed one, and an unroutable one.
    let hit = nl.route_get("10.66.0.5".parse().unwrap()).unwrap().unwrap();
    assert_eq!(hit.kind, RouteKind::Blackhole);
    assert_eq!(hit.dst, net("10.66.0.0/26"));
    let hit = nl
        .route_get("fd00:66::1".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(hit.kind, RouteKind::Blackhole);
    let hit = nl.route_get("10.67.1.1".parse().unwrap()).unwrap().unwrap();
    assert_eq!(hit.gateway, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(hit.dev.as_deref(), Some("r0"));
    assert_eq!(nl.route_get("198.51.100.1".parse().unwrap()).unwrap(), None);

    // Deletes report whether something was there.
    assert!(nl.delete_blackhole_route(net("10.66.0.0/26")).unwrap());
    assert!(!nl.delete_blackhole_route(net("10.66.0.0/26")).unwrap());
    assert!(nl.delete_blackhole_route(net("fd00:66::/122")).unwrap());
    assert!(
        !nl.delete_blackhole_route(net("10.70.0.0/24")).unwrap(),
        "another protocol's route is left alone"
    );
    assert!(
        nl.delete_route(&Route::via(
            net("10.68.0.0/16"),
            "203.0.113.1".parse().unwrap(),
            Some("r0")
        ))
        .unwrap()
    );
    assert!(
        !nl.delete_route(&Route::link(net("10.71.0.0/16"), "gh-gone"))
            .unwrap()
    );
    assert_eq!(nl.routes_with_protocol(ROUTE_PROTOCOL).unwrap().len(), 1);

    // Addresses come and go.
    assert!(nl.delete_address("r0", net("192.0.2.2/24")).unwrap());
    assert!(!nl.delete_address("r0", net("192.0.2.2/24")).unwrap());
    assert!(matches!(
        nl.add_address("gh-nope", net("192.0.2.3/24")),
        Err(NetError::NoSuchInterface { .. })
    ));
}

/// The topology `gingham lab` builds: an underlay namespace with a bridge and one veth per node
/// namespace; nodes reach each other across the bridge.
#[test]
fn sys_lab_underlay_bridge_connects_nodes() {
    gingham_testkit::require_root();
    let underlay = TestNetns::new("lab-u");
    let nodes = [TestNetns::new("lab-n1"), TestNetns::new("lab-n2")];
    let u = Netlink::open(&NetnsRef::path(underlay.path())).unwrap();
    u.add_bridge("br0").unwrap();
    u.set_up("br0").unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let port = format!("p{i}");
        let mut veth = VethSpec::new(&port, "eth0");
        veth.up = true;
        veth.peer_netns = Some(NetnsRef::path(node.path()));
        veth.mtu = Some(1500);
        u.add_veth(&veth).unwrap();
        u.set_master(&port, "br0").unwrap();
        let n = Netlink::open(&NetnsRef::path(node.path())).unwrap();
        n.add_address("eth0", net(&format!("172.31.0.{}/24", i + 1)))
            .unwrap();
        n.add_address("eth0", net(&format!("fd00:31::{}/64", i + 1)))
            .unwrap();
        n.set_up("eth0").unwrap();
    }

    let ifs = u.interfaces().unwrap();
    let br = ifs.iter().find(|i| i.name == "br0").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    for port in ["p0", "p1"] {
        let p = ifs.iter().find(|i| i.name == port).unwrap();
        assert_eq!(p.kind.as_deref(), Some("veth"));
        assert_eq!(p.master, Some(br.index));
        assert!(p.up);
    }
    assert!(
        ifs.iter()
            .any(|i| i.name == "lo" && i.up && i.addresses.contains(&net("127.0.0.1/8")))
    );

    let n1 = Netlink::open(&NetnsRef::path(nodes[0].path())).unwrap();
    let eth0 = n1.interface("eth0").unwrap().unwrap();
    assert!(eth0.addresses.contains(&net("172.31.0.1/24")));
    assert!(eth0.addresses.contains(&net("fd00:31::1/64")));
    assert!(eth0.mac.is_some());

    let ok = nodes[0]
        .exec(&["ping", "-c1", "-W2", "-n", "172.31.0.2"])
        .status
        .success();
    assert!(ok, "node 1 reaches node 2 over the underlay bridge");
    let ok = nodes[1]
        .exec(&["ping", "-6", "-c1", "-W2", "-n", "fd00:31::1"])
        .status
        .success();
    assert!(ok, "and over IPv6");

    // Moving a link into another namespace (and renaming it) works as a building block too.
    let mut veth = VethSpec::new("mv0", "mv1");
    veth.up = true;
    u.add_veth(&veth).unwrap();
    u.move_to_netns("mv1", &NetnsRef::path(nodes[1].path()), Some("extra0"))
        .unwrap();
    assert!(u.link("mv1").unwrap().is_none());
    let n2 = Netlink::open(&NetnsRef::path(nodes[1].path())).unwrap();
    let moved = n2.link("extra0").unwrap().unwrap();
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    assert!(u.delete_link("mv0").unwrap());
    assert!(
        n2.link("extra0").unwrap().is_none(),
        "the peer goes with it"
    );
    assert!(!u.delete_link("mv0").unwrap());
}
