//! The lab's underlay, built over netlink (`gingham-net`), never in the root namespace:
//!
//! - flat lab: an underlay namespace with one bridge `br0` (172.31.0.254/24, every node's
//!   gateway); node `i` is 172.31.0.`i+1`/24 on `eth0`, a veth onto the bridge;
//! - rack lab: the underlay namespace holds a bridge per rack (`br<r>`); a router namespace
//!   plugs into each (`r<r>`) with the rack's first host address, forwards between them, and
//!   is the gateway of the rack's nodes (the following addresses); an external host hangs off
//!   the router on a link of its own (`ext`).
//!
//! Pod routes, when the lab makes them (`networking: none`, or no agents): each node's blocks
//! via that node on the nodes of its segment (same rack, or the flat subnet), and on the router
//! when it takes static pod routes; a pod whose address is in a block affine to another node
//! (borrowed) gets a /32 via its node everywhere else. They carry protocol
//! [`LAB_ROUTE_PROTOCOL`] and are reconciled: what is no longer wanted goes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use gingham_net::{Netlink, NetnsRef, Route, VethSpec};
use ipnet::{IpNet, Ipv4Net};

use super::spec::{FLAT_GATEWAY, FLAT_SUBNET, Plan};
use super::state::{ExternalState, NodeState, RackState, RouterState, State, save_state};

/// The protocol of the pod routes the lab makes (`proto static` in `ip route`): not the
/// agent's, not BIRD's.
pub(super) const LAB_ROUTE_PROTOCOL: u8 = 4;
/// The protocol of the underlay's own routes (default routes, the external host's):
/// `proto boot`, as `ip route add` gives.
const UNDERLAY_ROUTE_PROTOCOL: u8 = 3;
/// The bridge of a flat lab.
const FLAT_BRIDGE: &str = "br0";
/// The router's interface towards the external host.
const ROUTER_EXTERNAL_IF: &str = "ext";

fn netlink(ns: &str) -> Result<Netlink> {
    Netlink::open(&NetnsRef::named(ns)).with_context(|| format!("netlink in {ns}"))
}

/// Creates a named network namespace with its loopback up.
pub(super) fn new_netns(name: &str) -> Result<Netlink> {
    gingham_net::create_netns(name).with_context(|| format!("creating namespace {name}"))?;
    let nl = netlink(name)?;
    nl.set_up("lo")
        .with_context(|| format!("bringing lo up in {name}"))?;
    Ok(nl)
}

/// Deletes a named network namespace if it exists.
pub(super) fn remove_netns(name: &str) -> Result<()> {
    gingham_net::delete_netns(name).with_context(|| format!("deleting namespace {name}"))
}

fn net(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(addr, len).expect("a prefix length up to 32"))
}

fn parse_v4(s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .with_context(|| format!("{s:?} in the lab state is not an IPv4 address"))
}

/// The switches (and, with racks, the router): recorded in the state before they are made.
pub(super) fn build_underlay(dir: &Path, state: &mut State, plan: &Plan) -> Result<()> {
    let lab = &plan.name;
    let underlay = format!("gl-{lab}-u");
    state.underlay = Some(underlay.clone());
    let router_ns = format!("gl-{lab}-r");
    if !plan.racks.is_empty() {
        state.router = Some(RouterState {
            netns: router_ns.clone(),
            racks: plan
                .racks
                .iter()
                .enumerate()
                .map(|(r, rack)| RackState {
                    name: rack.name.clone(),
                    subnet: rack.subnet.to_string(),
                    gateway: rack.gateway.to_string(),
                    ifname: format!("r{r}"),
                })
                .collect(),
            static_pod_routes: plan.static_pod_routes,
            bird_pid: None,
            as_number: plan.router_as,
        });
    }
    save_state(dir, state)?;
    let u = new_netns(&underlay)?;
    if plan.racks.is_empty() {
        let flat: Ipv4Net = FLAT_SUBNET.parse().expect("a subnet");
        u.add_bridge(FLAT_BRIDGE)?;
        u.add_address(FLAT_BRIDGE, net(FLAT_GATEWAY, flat.prefix_len()))?;
        u.set_up(FLAT_BRIDGE)?;
        return Ok(());
    }
    let router = new_netns(&router_ns)?;
    gingham_net::sysctl::write_in(&NetnsRef::named(&router_ns), "net/ipv4/ip_forward", "1")
        .context("turning forwarding on in the router")?;
    for (r, rack) in plan.racks.iter().enumerate() {
        let bridge = format!("br{r}");
        u.add_bridge(&bridge)?;
        u.set_up(&bridge)?;
        let leg = format!("r{r}");
        let port = format!("rtr{r}");
        router.add_veth(&VethSpec {
            up: true,
            peer_up: true,
            peer_netns: Some(NetnsRef::named(&underlay)),
            ..VethSpec::new(&leg, &port)
        })?;
        u.set_master(&port, &bridge)?;
        router.add_address(&leg, net(rack.gateway, rack.subnet.prefix_len()))?;
    }
    Ok(())
}

/// Node `i` of the plan: its namespace and its leg on its subnet's bridge, default route via
/// its gateway. Recorded in the state before it is made.
pub(super) fn add_node(dir: &Path, state: &mut State, plan: &Plan, i: usize) -> Result<()> {
    let node = &plan.nodes[i];
    let ns = format!("gl-{}-n{i}", plan.name);
    state.nodes.push(NodeState {
        name: node.name.clone(),
        netns: ns.clone(),
        ip: node.ip.to_string(),
        prefix_len: node.prefix_len,
        gateway: node.gateway.to_string(),
        rack: node.rack.map(|r| plan.racks[r].name.clone()),
        agent_pid: None,
        server_pid: None,
    });
    save_state(dir, state)?;
    let underlay = state.underlay.clone().context("no underlay")?;
    let nl = new_netns(&ns)?;
    let port = format!("n{i}");
    nl.add_veth(&VethSpec {
        up: false,
        peer_up: true,
        peer_netns: Some(NetnsRef::named(&underlay)),
        ..VethSpec::new("eth0", &port)
    })?;
    nl.add_address("eth0", net(node.ip, node.prefix_len))?;
    nl.set_up("eth0")?;
    let bridge = match node.rack {
        Some(r) => format!("br{r}"),
        None => FLAT_BRIDGE.to_owned(),
    };
    netlink(&underlay)?.set_master(&port, &bridge)?;
    nl.add_route(
        &Route::via(
            "0.0.0.0/0".parse().expect("a prefix"),
            IpAddr::V4(node.gateway),
            Some("eth0"),
        )
        .with_protocol(UNDERLAY_ROUTE_PROTOCOL),
    )?;
    Ok(())
}

/// The external host: `address`/32 on its `eth0`, a link of its own to the router (`ext`),
/// its default route via the router (onlink), and the router's route to it.
pub(super) fn build_external(dir: &Path, state: &mut State, address: Ipv4Addr) -> Result<()> {
    let router = state
        .router
        .clone()
        .context("an external host needs the router")?;
    let ns = format!("gl-{}-x", state.name);
    state.external = Some(ExternalState {
        netns: ns.clone(),
        address: address.to_string(),
        servers: Vec::new(),
    });
    save_state(dir, state)?;
    let x = new_netns(&ns)?;
    x.add_veth(&VethSpec {
        up: false,
        peer_up: true,
        peer_netns: Some(NetnsRef::named(&router.netns)),
        ..VethSpec::new("eth0", ROUTER_EXTERNAL_IF)
    })?;
    x.add_address("eth0", net(address, 32))?;
    x.set_up("eth0")?;
    // The router answers for its own addresses on every link: its first rack address is the
    // external host's next hop.
    let gateway = parse_v4(&router.racks[0].gateway)?;
    x.add_route(
        &Route::via(
            "0.0.0.0/0".parse().expect("a prefix"),
            IpAddr::V4(gateway),
            Some("eth0"),
        )
        .onlink()
        .with_protocol(UNDERLAY_ROUTE_PROTOCOL),
    )?;
    netlink(&router.netns)?.add_route(
        &Route::link(net(address, 32), ROUTER_EXTERNAL_IF).with_protocol(UNDERLAY_ROUTE_PROTOCOL),
    )?;
    Ok(())
}

/// The pod routes the lab wants, by namespace (every node's and the router's, empty when the
/// lab does not route pods).
fn wanted_routes(
    state: &State,
    store: &dyn gingham_datastore::Datastore,
) -> Result<BTreeMap<String, Vec<Route>>> {
    let mut want: BTreeMap<String, Vec<Route>> = state
        .nodes
        .iter()
        .map(|n| (n.netns.clone(), Vec::new()))
        .chain(state.router.iter().map(|r| (r.netns.clone(), Vec::new())))
        .collect();
    if !state.lab_routes {
        return Ok(want);
    }
    let router = state.router.as_ref().filter(|r| r.static_pod_routes);
    let via = |dst: Ipv4Net, gw: Ipv4Addr| {
        Route::via(IpNet::V4(dst), IpAddr::V4(gw), None).with_protocol(LAB_ROUTE_PROTOCOL)
    };
    let ipam = gingham_ipam::Ipam::new(store);
    let mut owners: Vec<(Ipv4Net, &NodeState)> = Vec::new();
    for n in &state.nodes {
        for block in ipam.blocks_for_node(&n.name)? {
            // The lab's underlay is IPv4.
            if let IpNet::V4(b) = block {
                owners.push((b, n));
            }
        }
    }
    for (block, n) in &owners {
        let n_ip = parse_v4(&n.ip)?;
        // As calico/node does: a blackhole for the node's own block, so its addresses that no
        // pod holds go nowhere. The agent, when it runs, owns these.
        if n.agent_pid.is_none() {
            want.entry(n.netns.clone())
                .or_default()
                .push(Route::blackhole(IpNet::V4(*block)).with_protocol(LAB_ROUTE_PROTOCOL));
        }
        for o in state
            .nodes
            .iter()
            .filter(|o| o.name != n.name && o.same_segment(n))
        {
            want.entry(o.netns.clone())
                .or_default()
                .push(via(*block, n_ip));
        }
        if let Some(r) = router {
            want.entry(r.netns.clone())
                .or_default()
                .push(via(*block, n_ip));
        }
    }
    // Borrowed addresses: a pod whose address is not in a block of its own node.
    for p in &state.pods {
        let Some(Ok(ip)) = p.ip.as_deref().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        let Some(holder) = state.node(&p.node) else {
            continue;
        };
        let owner = owners
            .iter()
            .filter(|(b, _)| b.contains(&ip))
            .max_by_key(|(b, _)| b.prefix_len())
            .map(|(_, n)| n.name.as_str());
        if owner == Some(holder.name.as_str()) {
            continue;
        }
        let host = Ipv4Net::new(ip, 32).expect("a /32");
        let holder_ip = parse_v4(&holder.ip)?;
        for o in state.nodes.iter().filter(|o| o.name != holder.name) {
            let gw = if o.same_segment(holder) {
                holder_ip
            } else {
                parse_v4(&o.gateway)?
            };
            want.entry(o.netns.clone()).or_default().push(via(host, gw));
        }
        if let Some(r) = router {
            want.entry(r.netns.clone())
                .or_default()
                .push(via(host, holder_ip));
        }
    }
    Ok(want)
}

/// Makes the lab's pod routes what they should be in every node and the router: adds the
/// missing, replaces the changed, removes what is no longer wanted.
pub(super) fn sync_routes(state: &State, store: &dyn gingham_datastore::Datastore) -> Result<()> {
    let same = |a: &Route, b: &Route| a.dst == b.dst && a.kind == b.kind && a.gateway == b.gateway;
    for (ns, want) in wanted_routes(state, store)? {
        let nl = netlink(&ns)?;
        for have in nl.routes_with_protocol(LAB_ROUTE_PROTOCOL)? {
            if !want.iter().any(|w| same(w, &have)) {
                nl.delete_route(&have)
                    .with_context(|| format!("removing {have} in {ns}"))?;
            }
        }
        for w in &want {
            nl.replace_route(w)
                .with_context(|| format!("adding {w} in {ns}"))?;
        }
    }
    Ok(())
}

/// Ends (TERM, then KILL) every process whose network namespace is the named one: what the
/// lab's processes started there (an agent's BIRD) goes with the namespace.
pub(super) fn kill_processes_in(netns: &str) {
    let Ok(target) = std::fs::metadata(Path::new("/run/netns").join(netns)) else {
        return;
    };
    let members = || -> Vec<String> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let ns = std::fs::metadata(e.path().join("ns/net")).ok()?;
                (ns.ino() == target.ino() && ns.dev() == target.dev()).then(|| pid.to_string())
            })
            .collect()
    };
    for signal in ["-TERM", "-KILL"] {
        let pids = members();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg(signal)
            .args(&pids)
            .stderr(std::process::Stdio::null())
            .status();
        for _ in 0..100 {
            if members().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
