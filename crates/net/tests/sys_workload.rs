//! System tests of workload plumbing in real network namespaces (root needed).
//!
//! Topology built by each test (every namespace unique to the test, deleted on drop):
//!
//! ```text
//!   pod A ns: eth0 10.65.0.2/32 fd00:65::2/128 ──veth── caliA ┐
//!                                                             ├ node ns ── uplink 192.0.2.2/24 ──veth── peer ns 192.0.2.1/24
//!   pod B ns: eth0 10.65.0.3/32 fd00:65::3/128 ──veth── caliB ┘    default via 192.0.2.1
//! ```
//!
//! The peer namespace gives the node a default route, which proxy ARP needs.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use gingham_net::{
    MacAddr, NeighbourState, Netlink, NetnsRef, Problem, Route, RouteKind, RouteScope,
    VethPlacement, VethSpec, WorkloadPlumbing, WorkloadSpec, check_workload, in_netns,
    setup_workload, sysctl, teardown_workload,
};
use gingham_testkit::netns::TestNetns;
use ipnet::IpNet;

const POD_A_V4: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);
const POD_B_V4: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 3);
const POD_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2);
const POD_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 3);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A node namespace with an uplink to a peer namespace, and optionally a default route.
struct Node {
    node: TestNetns,
    _peer: TestNetns,
}

impl Node {
    fn new(tag: &str, default_route: bool) -> Node {
        let node = TestNetns::new(&format!("{tag}-n"));
        let peer = TestNetns::new(&format!("{tag}-p"));
        let nl = Netlink::open(&NetnsRef::path(node.path())).unwrap();
        let mut veth = VethSpec::new("uplink", "down");
        veth.up = true;
        veth.peer_up = true;
        veth.peer_netns = Some(NetnsRef::path(peer.path()));
        nl.add_veth(&veth).unwrap();
        nl.add_address("uplink", net("192.0.2.2/24")).unwrap();
        nl.add_address("uplink", net("fd00:ff::2/64")).unwrap();
        if default_route {
            nl.replace_route_via(
                net("0.0.0.0/0"),
                "192.0.2.1".parse().unwrap(),
                "uplink",
                false,
            )
            .unwrap();
        }
        let pl = Netlink::open(&NetnsRef::path(peer.path())).unwrap();
        pl.add_address("down", net("192.0.2.1/24")).unwrap();
        pl.add_address("down", net("fd00:ff::1/64")).unwrap();
        Node { node, _peer: peer }
    }

    fn ns(&self) -> NetnsRef {
        NetnsRef::path(self.node.path())
    }
}

fn spec(host: &str, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> WorkloadSpec {
    let s = WorkloadSpec::new(host).with_ipv4(v4);
    match v6 {
        Some(v6) => s.with_ipv6(v6),
        None => s,
    }
}

fn read_sysctl(ns: &TestNetns, key: &str) -> String {
    ns.exec_ok(&["cat", &format!("/proc/sys/{key}")])
        .trim()
        .to_owned()
}

#[test]
fn sys_setup_installs_everything_on_both_sides() {
    gingham_testkit::require_root();
    let node = Node::new("setup", true);
    let pod = TestNetns::new("setup-pod");
    let s = spec("caliaaaaaaaaaa1", POD_A_V4, Some(POD_A_V6)).with_mtu(1440);
    let r = setup_workload(&node.ns(), &pod.path(), &s).unwrap();

    assert_eq!(r.host_ifname, "caliaaaaaaaaaa1");
    assert_eq!(r.host_mac, MacAddr::CALICO_HOST);
    assert_eq!(r.container_ifname, "eth0");
    assert_ne!(r.container_mac, MacAddr::CALICO_HOST);

    // The host side, read back through our own API.
    let host = Netlink::open(&node.ns()).unwrap();
    let cali = host.interface("caliaaaaaaaaaa1").unwrap().unwrap();
    assert_eq!(cali.index, r.host_ifindex);
    assert_eq!(cali.mac, Some(MacAddr::CALICO_HOST));
    assert_eq!(cali.kind.as_deref(), Some("veth"));
    assert_eq!(cali.mtu, Some(1440));
    assert!(cali.up && cali.lower_up, "{cali:?}");
    assert_eq!(
        cali.link,
        Some(r.container_ifindex),
        "the veth peer is the pod's eth0"
    );
    assert!(
        cali.addresses
            .iter()
            .all(|a| a.addr() == IpAddr::V6(gingham_net::GATEWAY_V6)),
        "host side has only its link-local: {:?}",
        cali.addresses
    );
    let routes = host
        .routes_with_protocol(gingham_net::ROUTE_PROTOCOL)
        .unwrap();
    // IPv6 routes have no scope in the kernel; IPv4 ones must be `scope link`.
    for (dst, scope) in [
        ("10.65.0.2/32", RouteScope::Link),
        ("fd00:65::2/128", RouteScope::Universe),
    ] {
        assert!(
            routes.iter().any(|rt| rt.dst == net(dst)
                && rt.dev.as_deref() == Some("caliaaaaaaaaaa1")
                && rt.scope == scope
                && rt.kind == RouteKind::Unicast),
            "host route to {dst} in {routes:#?}"
        );
    }
    let neigh = host.neighbours(Some(r.host_ifindex)).unwrap();
    for ip in [IpAddr::V4(POD_A_V4), IpAddr::V6(POD_A_V6)] {
        let n = neigh
            .iter()
            .find(|n| n.ip == ip)
            .unwrap_or_else(|| panic!("neighbour {ip} in {neigh:?}"));
        assert_eq!(n.mac, Some(r.container_mac));
        assert_eq!(n.state, NeighbourState::Permanent);
    }

    // The host side, read back independently with iproute2 and /proc.
    let text = node
        .node
        .exec_ok(&["ip", "neigh", "show", "dev", "caliaaaaaaaaaa1"]);
    assert!(
        text.contains(&format!("10.65.0.2 lladdr {} PERMANENT", r.container_mac)),
        "{text}"
    );
    assert!(
        text.contains(&format!("fd00:65::2 lladdr {} PERMANENT", r.container_mac)),
        "{text}"
    );
    let text = node
        .node
        .exec_ok(&["ip", "-4", "route", "show", "dev", "caliaaaaaaaaaa1"]);
    assert_eq!(text.trim(), "10.65.0.2 proto 80 scope link metric 1024");
    for (key, want) in [
        ("net/ipv4/conf/caliaaaaaaaaaa1/proxy_arp", "1"),
        ("net/ipv4/conf/caliaaaaaaaaaa1/route_localnet", "1"),
        ("net/ipv4/conf/caliaaaaaaaaaa1/forwarding", "1"),
        ("net/ipv4/neigh/caliaaaaaaaaaa1/proxy_delay", "0"),
        ("net/ipv6/conf/caliaaaaaaaaaa1/proxy_ndp", "1"),
        ("net/ipv6/conf/caliaaaaaaaaaa1/forwarding", "1"),
        ("net/ipv6/conf/caliaaaaaaaaaa1/accept_ra", "0"),
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
    ] {
        assert_eq!(read_sysctl(&node.node, key), want, "{key}");
    }

    // The pod side.
    let text = pod.exec_ok(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(text.contains("inet 10.65.0.2/32"), "{text}");
    assert!(text.contains("mtu 1440"), "{text}");
    let text = pod.exec_ok(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    let line = text
        .lines()
        .find(|l| l.contains("inet6 fd00:65::2/128"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "the address is usable at once: {text}"
    );
    let text = pod.exec_ok(&["ip", "-4", "route"]);
    assert!(text.contains("default via 169.254.1.1 dev eth0"), "{text}");
    assert!(
        text.contains("169.254.1.1 dev eth0 proto 80 scope link"),
        "{text}"
    );
    let text = pod.exec_ok(&["ip", "-6", "route"]);
    assert!(
        text.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{text}"
    );
    let text = pod.exec_ok(&["ip", "link", "show", "lo"]);
    assert!(text.contains("UP"), "{text}");
    let text = pod.exec_ok(&["ip", "link", "show", "eth0"]);
    assert!(text.contains(&r.container_mac.to_string()), "{text}");

    assert!(check_workload(&node.ns(), &pod.path(), &s).unwrap().is_ok());
}

/// Runs `ping` once with a one-second deadline; returns whether it got a reply.
fn ping_once(from: &TestNetns, to: IpAddr) -> bool {
    let target = to.to_string();
    let mut args = vec!["ping", "-c1", "-W1", "-n", "-q"];
    if to.is_ipv6() {
        args.insert(1, "-6");
    }
    args.push(&target);
    from.exec(&args).status.success()
}

#[test]
fn sys_pods_reach_each_other_on_the_first_packet() {
    gingham_testkit::require_root();
    let node = Node::new("ping", true);
    let a = TestNetns::new("ping-a");
    let b = TestNetns::new("ping-b");
    let plumbing = WorkloadPlumbing::new(&node.ns()).unwrap();
    plumbing
        .setup(
            &a.path(),
            &spec("caliaaaaaaaaaa2", POD_A_V4, Some(POD_A_V6)),
        )
        .unwrap();
    plumbing
        .setup(
            &b.path(),
            &spec("calibbbbbbbbbb2", POD_B_V4, Some(POD_B_V6)),
        )
        .unwrap();

    // The very first try must succeed: no ARP/NDP towards the pods is needed, and the host
    // answers the pods' own resolution of their gateway at once.
    assert!(
        ping_once(&a, IpAddr::V4(POD_B_V4)),
        "first IPv4 ping A -> B was lost"
    );
    assert!(
        ping_once(&b, IpAddr::V6(POD_A_V6)),
        "first IPv6 ping B -> A was lost"
    );
    assert!(ping_once(&b, IpAddr::V4(POD_A_V4)));
    assert!(ping_once(&a, IpAddr::V6(POD_B_V6)));
    // The node reaches its pods too.
    assert!(ping_once(&node.node, IpAddr::V4(POD_A_V4)));

    // TCP both ways, using std sockets opened inside the pods' namespaces.
    for (server, client, addr) in [
        (&b, &a, SocketAddr::new(IpAddr::V4(POD_B_V4), 7001)),
        (&a, &b, SocketAddr::new(IpAddr::V6(POD_A_V6), 7002)),
    ] {
        let listener = in_netns(&NetnsRef::path(server.path()), || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let server_thread = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(b"pong!").unwrap();
            (buf, peer.ip())
        });
        let reply = in_netns(&NetnsRef::path(client.path()), || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
            s.write_all(b"ping!").unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            buf
        })
        .unwrap();
        let (got, peer_ip) = server_thread.join().unwrap();
        assert_eq!(&got, b"ping!");
        assert_eq!(&reply, b"pong!");
        let want_peer = if addr.is_ipv4() {
            IpAddr::V4(POD_A_V4)
        } else {
            IpAddr::V6(POD_B_V6)
        };
        assert_eq!(
            peer_ip, want_peer,
            "the source address survives the node (no NAT)"
        );
    }

    // And with netcat, as an outside program would.
    let nc_server = std::thread::spawn({
        let path = b.path();
        move || {
            std::process::Command::new("ip")
                .args(["netns", "exec"])
                .arg(path.file_name().unwrap())
                .args(["nc", "-l", "-N", "-w", "5", "10.65.0.3", "7003"])
                .output()
                .unwrap()
        }
    });
    let mut delivered = false;
    for _ in 0..50 {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo hello-nc | ip netns exec {} nc -N -w 2 10.65.0.3 7003",
                    a.name()
                ),
            ])
            .output()
            .unwrap();
        if out.status.success() {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = nc_server.join().unwrap();
    assert!(delivered, "nc client never connected");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-nc");
}

#[test]
fn sys_teardown_removes_everything_and_is_idempotent() {
    gingham_testkit::require_root();
    let node = Node::new("down", true);
    let pod = TestNetns::new("down-pod");
    let s = spec("caliaaaaaaaaaa3", POD_A_V4, Some(POD_A_V6));
    setup_workload(&node.ns(), &pod.path(), &s).unwrap();

    assert!(teardown_workload(&node.ns(), "caliaaaaaaaaaa3").unwrap());
    assert!(
        !teardown_workload(&node.ns(), "caliaaaaaaaaaa3").unwrap(),
        "second teardown finds nothing"
    );

    let host = Netlink::open(&node.ns()).unwrap();
    assert!(host.link("caliaaaaaaaaaa3").unwrap().is_none());
    let routes = host
        .routes_with_protocol(gingham_net::ROUTE_PROTOCOL)
        .unwrap();
    assert!(
        routes.iter().all(|r| r.dst.prefix_len() < 32),
        "only the default route is left: {routes:?}"
    );
    assert!(
        host.neighbours(None)
            .unwrap()
            .iter()
            .all(|n| n.ip != IpAddr::V4(POD_A_V4))
    );
    let podnl = Netlink::open(&NetnsRef::path(pod.path())).unwrap();
    assert!(
        podnl.link("eth0").unwrap().is_none(),
        "the pod end went with the host end"
    );

    // The pod can be plumbed again afterwards.
    setup_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert!(check_workload(&node.ns(), &pod.path(), &s).unwrap().is_ok());
}

#[test]
fn sys_check_reports_what_is_broken() {
    gingham_testkit::require_root();
    let node = Node::new("check", true);
    let pod = TestNetns::new("check-pod");
    let s = spec("caliaaaaaaaaaa4", POD_A_V4, None);
    let r = setup_workload(&node.ns(), &pod.path(), &s).unwrap();
    let report = check_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert!(report.is_ok(), "{report}");

    // Break proxy ARP and delete the host route, as in seed 003's investigation.
    sysctl::write_in(&node.ns(), "net/ipv4/conf/caliaaaaaaaaaa4/proxy_arp", "0").unwrap();
    let host = Netlink::open(&node.ns()).unwrap();
    assert!(
        host.delete_route(&Route::workload(net("10.65.0.2/32"), "caliaaaaaaaaaa4"))
            .unwrap()
    );
    let report = check_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert_eq!(
        report.problems,
        vec![
            Problem::Sysctl {
                key: "net/ipv4/conf/caliaaaaaaaaaa4/proxy_arp".into(),
                want: "1".into(),
                actual: Some("0".into()),
            },
            Problem::HostRouteMissing {
                want: Route::workload(net("10.65.0.2/32"), "caliaaaaaaaaaa4")
            },
        ],
        "{report}"
    );
    assert!(
        report.to_string().contains("proxy_arp is 0, want 1"),
        "{report}"
    );

    // Also lose the neighbour entry and the node's default route.
    assert!(
        host.delete_neighbour(r.host_ifindex, IpAddr::V4(POD_A_V4))
            .unwrap()
    );
    assert!(
        !host
            .delete_neighbour(r.host_ifindex, IpAddr::V4(POD_A_V4))
            .unwrap()
    );
    assert!(
        host.delete_route(&Route::via(
            net("0.0.0.0/0"),
            "192.0.2.1".parse().unwrap(),
            None
        ))
        .unwrap()
    );
    let report = check_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert!(
        report
            .problems
            .contains(&Problem::NoHostRouteToGateway { found: None }),
        "{report}"
    );
    assert!(
        report.problems.contains(&Problem::Neighbour {
            dev: "caliaaaaaaaaaa4".into(),
            ip: IpAddr::V4(POD_A_V4),
            want_mac: r.container_mac,
            found: None,
        }),
        "{report}"
    );
    assert_eq!(report.problems.len(), 4, "{report}");

    // Deleting the pod's default route shows up on the pod side.
    pod.exec_ok(&["ip", "route", "del", "default"]);
    let report = check_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert!(report.problems.iter().any(
        |p| matches!(p, Problem::ContainerRouteMissing { want } if want.dst.prefix_len() == 0)
    ));

    // A missing interface is reported, not an error.
    teardown_workload(&node.ns(), "caliaaaaaaaaaa4").unwrap();
    let report = check_workload(&node.ns(), &pod.path(), &s).unwrap();
    assert!(report.problems.contains(&Problem::HostInterfaceMissing {
        name: "caliaaaaaaaaaa4".into()
    }));
    assert!(
        report
            .problems
            .contains(&Problem::ContainerInterfaceMissing {
                name: "eth0".into()
            })
    );
}

/// Seed 003: with no route covering 169.254.1.1 on the host, proxy ARP stays silent and the pod
/// cannot send anything; the check names the cause, and adding a default route fixes it.
#[test]
fn sys_without_a_host_default_route_proxy_arp_is_silent() {
    gingham_testkit::require_root();
    let node = Node::new("seed3", false);
    let a = TestNetns::new("seed3-a");
    let b = TestNetns::new("seed3-b");
    let sa = spec("caliaaaaaaaaaa5", POD_A_V4, None);
    setup_workload(&node.ns(), &a.path(), &sa).unwrap();
    setup_workload(
        &node.ns(),
        &b.path(),
        &spec("calibbbbbbbbbb5", POD_B_V4, None),
    )
    .unwrap();

    assert!(
        !ping_once(&a, IpAddr::V4(POD_B_V4)),
        "no ARP reply is expected without a host route"
    );
    let report = check_workload(&node.ns(), &a.path(), &sa).unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::NoHostRouteToGateway { found: None }],
        "{report}"
    );

    let host = Netlink::open(&node.ns()).unwrap();
    host.replace_route_via(
        net("0.0.0.0/0"),
        "192.0.2.1".parse().unwrap(),
        "uplink",
        false,
    )
    .unwrap();
    // The pod's failed ARP entry for its gateway is retried on the next packet.
    let ok = (0..3).any(|_| ping_once(&a, IpAddr::V4(POD_B_V4)));
    assert!(ok, "with a default route on the host the pods can talk");
    assert!(check_workload(&node.ns(), &a.path(), &sa).unwrap().is_ok());
}

#[test]
fn sys_setup_replaces_a_stale_interface_and_cleans_up_on_failure() {
    gingham_testkit::require_root();
    let node = Node::new("stale", true);
    let old_pod = TestNetns::new("stale-old");
    let new_pod = TestNetns::new("stale-new");
    let s = spec("caliaaaaaaaaaa6", POD_A_V4, None);
    setup_workload(&node.ns(), &old_pod.path(), &s).unwrap();
    // The same host name again (a retried CNI ADD): the stale pair is replaced.
    setup_workload(&node.ns(), &new_pod.path(), &s).unwrap();
    assert!(
        check_workload(&node.ns(), &new_pod.path(), &s)
            .unwrap()
            .is_ok()
    );
    assert!(
        Netlink::open(&NetnsRef::path(old_pod.path()))
            .unwrap()
            .link("eth0")
            .unwrap()
            .is_none()
    );

    // A pod that already has an eth0 makes setup fail, and nothing is left on the host.
    let busy = TestNetns::new("stale-busy");
    busy.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0",
    ]);
    let err = setup_workload(
        &node.ns(),
        &busy.path(),
        &spec("caliaaaaaaaaaa7", POD_B_V4, None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("caliaaaaaaaaaa7"), "{err}");
    assert!(
        Netlink::open(&node.ns())
            .unwrap()
            .link("caliaaaaaaaaaa7")
            .unwrap()
            .is_none()
    );

    // Bad input is refused before anything happens.
    let err =
        setup_workload(&node.ns(), &busy.path(), &WorkloadSpec::new("cali-no-ip")).unwrap_err();
    assert!(
        err.to_string().contains("at least one of ipv4 and ipv6"),
        "{err}"
    );
}

#[test]
fn sys_move_after_create_gives_the_same_result() {
    gingham_testkit::require_root();
    let node = Node::new("move", true);
    let a = TestNetns::new("move-a");
    let b = TestNetns::new("move-b");
    let plumbing = WorkloadPlumbing::new(&node.ns()).unwrap();
    let sa = spec("caliaaaaaaaaaa8", POD_A_V4, Some(POD_A_V6));
    plumbing
        .setup_with(&a.path(), &sa, VethPlacement::MoveAfterCreate)
        .unwrap();
    plumbing
        .setup(
            &b.path(),
            &spec("calibbbbbbbbbb8", POD_B_V4, Some(POD_B_V6)),
        )
        .unwrap();
    assert!(plumbing.check(&a.path(), &sa).unwrap().is_ok());
    assert!(ping_once(&a, IpAddr::V4(POD_B_V4)));
    assert!(ping_once(&a, IpAddr::V6(POD_B_V6)));
}

#[test]
fn sys_setup_from_the_current_namespace() {
    gingham_testkit::require_root();
    // Run the whole thing on a thread that lives in the node namespace, the way a CNI plugin
    // runs in the host's namespace and passes `NetnsRef::Current`.
    let node = Node::new("cur", true);
    let pod = TestNetns::new("cur-pod");
    let s = spec("caliaaaaaaaaaa9", POD_A_V4, Some(POD_A_V6));
    let pod_path = pod.path();
    let report = in_netns(&node.ns(), || {
        setup_workload(&NetnsRef::Current, &pod_path, &s).unwrap();
        check_workload(&NetnsRef::Current, &pod_path, &s).unwrap()
    })
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        read_sysctl(&node.node, "net/ipv4/conf/caliaaaaaaaaaa9/proxy_arp"),
        "1"
    );
}
