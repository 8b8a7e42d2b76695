//! Routes to other nodes' pods, as felix's route managers program them, and the tunnel devices
//! they go through ([`crate::vxlan`]).
//!
//! [`ClusterRoutes`] says everything a node must have: the VXLAN device and one entry per remote
//! VTEP, the IPIP device, and a route per remote block (or borrowed address). [`sync`] reads the
//! kernel once, changes only what differs, removes what this project programmed earlier and no
//! longer wants (see below; neighbours and FDB entries on the VXLAN devices), and says what
//! it changed.
//!
//! A route is ours when it has protocol [`ROUTE_PROTOCOL`] in the main table and either goes
//! through a tunnel device, or goes through a gateway to somewhere inside an IP pool
//! ([`ClusterRoutes::pools`]) or to a destination an earlier pass wanted (so the routes of a
//! pool that is gone go too). Anything else, such as a default route someone made with the
//! same protocol number, is left alone. The local workloads' /32 routes (protocol 80 too, but
//! without a gateway, on `cali…` devices) and the blackholes are the host plumbing's
//! ([`crate::host`]) and never touched here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::error::{NetError, Result};
use crate::netlink::Netlink;
use crate::types::{Interface, MAIN_TABLE, NeighbourState, ROUTE_PROTOCOL, Route, RouteKind};
use crate::vxlan::{
    IPIP_DEVICE, IPIP_OVERHEAD, IpipDevice, VXLAN_DEVICE, VXLAN_V6_DEVICE, Vtep, VxlanDevice,
};

/// How a route to other nodes' pods leaves this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// Encapsulated in VXLAN: `via <remote tunnel address> dev vxlan.calico onlink`
    /// (`vxlan-v6.calico` for IPv6).
    Vxlan(IpAddr),
    /// Straight onto the VXLAN device of the destination's family (a remote tunnel address
    /// outside the node's blocks): `dev vxlan.calico scope link`.
    VxlanDevice,
    /// Encapsulated in IPIP: `via <remote node address> dev tunl0 onlink`.
    Ipip(Ipv4Addr),
    /// Unencapsulated, to a node on the same subnet: `via <node address> dev <underlay> onlink`.
    Underlay(IpAddr),
}

/// One route to other nodes' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterRoute {
    pub dst: IpNet,
    pub via: Via,
}

impl fmt::Display for ClusterRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Via::Vxlan(gw) => write!(f, "{} via {gw} dev {} onlink", self.dst, vxlan_device(gw)),
            Via::VxlanDevice => write!(
                f,
                "{} dev {} scope link",
                self.dst,
                vxlan_device(self.dst.addr())
            ),
            Via::Ipip(gw) => write!(f, "{} via {gw} dev {IPIP_DEVICE} onlink", self.dst),
            Via::Underlay(gw) => write!(f, "{} via {gw} onlink", self.dst),
        }
    }
}

/// Everything a node's routes to other nodes' pods need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRoutes {
    /// The node's own IPv4 address on the underlay: the interface holding it carries the
    /// unencapsulated IPv4 routes and the IPv4 tunnels.
    pub local: Option<IpAddr>,
    /// The same for IPv6.
    pub local_v6: Option<IpAddr>,
    /// `None`: no VXLAN device (an existing `vxlan.calico` is deleted).
    pub vxlan: Option<VxlanDevice>,
    /// `None`: no IPv6 VXLAN device (an existing `vxlan-v6.calico` is deleted).
    pub vxlan_v6: Option<VxlanDevice>,
    /// The remote VTEPs (neighbour and FDB entries on the VXLAN device of their family).
    pub vteps: BTreeSet<Vtep>,
    /// `None`: IPIP is not wanted (an existing `tunl0` is left alone, as felix does, minus our
    /// address).
    pub ipip: Option<IpipDevice>,
    pub routes: BTreeSet<ClusterRoute>,
    /// Every IP pool's CIDR: where routes through a gateway may be ours.
    pub pools: BTreeSet<IpNet>,
}

/// Whether `r` is one of ours: see the module documentation.
fn owned(r: &Route, pools: &BTreeSet<IpNet>, earlier: &BTreeSet<IpNet>) -> bool {
    let tunnel = matches!(
        r.dev.as_deref(),
        Some(VXLAN_DEVICE) | Some(VXLAN_V6_DEVICE) | Some(IPIP_DEVICE)
    );
    let cluster = r.gateway.is_some()
        && r.dst.prefix_len() > 0
        && (earlier.contains(&r.dst) || pools.iter().any(|p| p.contains(&r.dst)));
    r.protocol == ROUTE_PROTOCOL
        && r.table == MAIN_TABLE
        && r.kind == RouteKind::Unicast
        && (tunnel || cluster)
}

/// The VXLAN device of `addr`'s family.
fn vxlan_device(addr: IpAddr) -> &'static str {
    if addr.is_ipv6() {
        VXLAN_V6_DEVICE
    } else {
        VXLAN_DEVICE
    }
}

/// The interface holding `addr`.
fn holding(interfaces: &[Interface], addr: IpAddr) -> Option<&Interface> {
    interfaces
        .iter()
        .find(|i| i.addresses.iter().any(|a| a.addr() == addr))
}

/// The host's MTU as felix detects it: the smallest MTU of the interfaces that are up (carrier
/// too) and whose name `matches` (felix's `mtuIfacePattern`); `None` when none does.
pub fn host_mtu(nl: &Netlink, matches: impl Fn(&str) -> bool) -> Result<Option<u32>> {
    Ok(nl
        .interfaces()?
        .iter()
        .filter(|i| i.up && i.lower_up && matches(&i.name))
        .filter_map(|i| i.mtu)
        .min())
}

/// Whether the kernel can make IPIP tunnels: `Ok(())`, or why not. Creating `tunl0` loads the
/// `ipip` module where there is one (which makes the device itself).
pub fn ipip_support(nl: &Netlink) -> Result<std::result::Result<(), String>> {
    if nl.link(IPIP_DEVICE)?.is_some() {
        return Ok(Ok(()));
    }
    match nl.add_ipip(IPIP_DEVICE) {
        Ok(()) => Ok(Ok(())),
        Err(e @ NetError::Netlink { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Makes the node's tunnels and cluster routes match `want`; returns what it changed, one
/// line each. `earlier`: the destinations an earlier pass wanted (see the module
/// documentation); updated to this pass's.
pub fn sync(
    nl: &Netlink,
    want: &ClusterRoutes,
    earlier: &mut BTreeSet<IpNet>,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let interfaces = nl.interfaces()?;
    let parent = want.local.and_then(|a| holding(&interfaces, a)).cloned();
    let parent_v6 = want.local_v6.and_then(|a| holding(&interfaces, a)).cloned();

    // The VXLAN devices and their neighbours and forwarding entries.
    let mut vxlan_up = [false, false];
    for (i, (name, dev, parent)) in [
        (VXLAN_DEVICE, &want.vxlan, &parent),
        (VXLAN_V6_DEVICE, &want.vxlan_v6, &parent_v6),
    ]
    .into_iter()
    .enumerate()
    {
        let index = match dev {
            None => {
                if nl.link(name)?.is_some() {
                    nl.delete_link(name)?;
                    done.push(format!("{name} deleted (no VXLAN pool)"));
                }
                None
            }
            Some(dev) => match parent {
                None => {
                    tracing::warn!(address = %dev.local, device = name, "no interface holds the node's address; the VXLAN device waits for it");
                    None
                }
                Some(p) => Some(ensure_vxlan(nl, dev, p, &mut done)?),
            },
        };
        if let Some(index) = index {
            let v6 = i == 1;
            let vteps: BTreeSet<Vtep> = want
                .vteps
                .iter()
                .filter(|v| v.tunnel_ip.is_ipv6() == v6)
                .copied()
                .collect();
            sync_vteps(nl, name, index, v6, &vteps, &mut done)?;
            vxlan_up[i] = true;
        }
    }

    // The IPIP device.
    let ipip_up = match (&want.ipip, &parent) {
        (Some(dev), Some(p)) => {
            ensure_ipip(nl, dev, p, &mut done)?;
            true
        }
        _ => false,
    };

    // The routes: what is ours and unwanted goes first, then what is missing comes.
    let wanted: Vec<Route> = want
        .routes
        .iter()
        .filter_map(|r| {
            let up = |a: IpAddr| vxlan_up[usize::from(a.is_ipv6())];
            let mut route = match r.via {
                Via::Vxlan(gw) => {
                    if !up(gw) || gw.is_ipv6() != r.dst.addr().is_ipv6() {
                        return None;
                    }
                    Route::via(r.dst, gw, Some(vxlan_device(gw))).onlink()
                }
                Via::VxlanDevice => {
                    if !up(r.dst.addr()) {
                        return None;
                    }
                    Route::link(r.dst, vxlan_device(r.dst.addr()))
                }
                Via::Ipip(gw) => {
                    if !ipip_up {
                        return None;
                    }
                    Route::via(r.dst, IpAddr::V4(gw), Some(IPIP_DEVICE)).onlink()
                }
                Via::Underlay(gw) => {
                    if gw.is_ipv6() != r.dst.addr().is_ipv6() {
                        return None;
                    }
                    let parent = if gw.is_ipv6() { &parent_v6 } else { &parent };
                    match parent {
                        Some(p) => Route::via(r.dst, gw, Some(&p.name)).onlink(),
                        None => Route::via(r.dst, gw, None),
                    }
                }
            };
            route.protocol = ROUTE_PROTOCOL;
            Some(route)
        })
        .collect();
    let same = |a: &Route, b: &Route| {
        a.dst == b.dst
            && a.gateway == b.gateway
            && a.onlink == b.onlink
            && (a.dev.is_none() || a.dev == b.dev)
    };
    let present = nl.routes()?;
    let ours = |r: &Route| owned(r, &want.pools, earlier);
    for r in present.iter().filter(|r| ours(r)) {
        if !wanted.iter().any(|w| same(w, r)) && nl.delete_route(r)? {
            done.push(format!("route {r} removed"));
        }
    }
    for w in &wanted {
        if !present.iter().any(|r| ours(r) && same(w, r)) {
            nl.replace_route(w)?;
            done.push(format!("route {w} programmed"));
        }
    }
    *earlier = want.routes.iter().map(|r| r.dst).collect();
    Ok(done)
}

fn ensure_vxlan(
    nl: &Netlink,
    dev: &VxlanDevice,
    parent: &Interface,
    done: &mut Vec<String>,
) -> Result<u32> {
    let fits = |i: &crate::vxlan::VxlanInfo| {
        i.vni == Some(dev.vni)
            && i.port == Some(dev.port)
            && i.local == Some(dev.local)
            && i.link == Some(parent.index)
            && i.learning != Some(true)
            && (dev.local.is_ipv6() || i.udp_csum != Some(true))
    };
    match nl.vxlan_info(&dev.name)? {
        Some(i) if fits(&i) => {}
        found => {
            if found.is_some() || nl.link(&dev.name)?.is_some() {
                nl.delete_link(&dev.name)?;
                done.push(format!(
                    "{} deleted (not the device wanted: {found:?})",
                    dev.name
                ));
            }
            nl.add_vxlan(dev, parent.index)?;
            done.push(format!(
                "{} created (vni {}, port {}, local {}, dev {})",
                dev.name, dev.vni, dev.port, dev.local, parent.name
            ));
        }
    }
    let link = nl
        .interface(&dev.name)?
        .ok_or_else(|| NetError::NoSuchInterface {
            name: dev.name.clone(),
            netns: nl.netns().to_string(),
        })?;
    if link.mac != Some(dev.mac) {
        nl.set_mac(&dev.name, dev.mac)?;
        done.push(format!("{} mac set to {}", dev.name, dev.mac));
    }
    let mtu = dev
        .mtu
        .or_else(|| parent.mtu.map(|m| m.saturating_sub(dev.overhead())));
    if let Some(mtu) = mtu
        && link.mtu != Some(mtu)
    {
        nl.set_mtu(&dev.name, mtu)?;
        done.push(format!("{} mtu set to {mtu}", dev.name));
    }
    let address = IpNet::from(dev.address);
    ensure_only_address(nl, &link, address, done)?;
    if !link.up {
        nl.set_up(&dev.name)?;
        done.push(format!("{} set up", dev.name));
    }
    Ok(link.index)
}

fn ensure_ipip(
    nl: &Netlink,
    dev: &IpipDevice,
    parent: &Interface,
    done: &mut Vec<String>,
) -> Result<()> {
    if nl.link(IPIP_DEVICE)?.is_none() {
        nl.add_ipip(IPIP_DEVICE)?;
        done.push(format!("{IPIP_DEVICE} created"));
    }
    let link = nl
        .interface(IPIP_DEVICE)?
        .ok_or_else(|| NetError::NoSuchInterface {
            name: IPIP_DEVICE.into(),
            netns: nl.netns().to_string(),
        })?;
    let mtu = dev
        .mtu
        .or_else(|| parent.mtu.map(|m| m.saturating_sub(IPIP_OVERHEAD)));
    if let Some(mtu) = mtu
        && link.mtu != Some(mtu)
    {
        nl.set_mtu(IPIP_DEVICE, mtu)?;
        done.push(format!("{IPIP_DEVICE} mtu set to {mtu}"));
    }
    let address = IpNet::new(IpAddr::V4(dev.address), 32).expect("/32 is valid");
    ensure_only_address(nl, &link, address, done)?;
    if !link.up {
        nl.set_up(IPIP_DEVICE)?;
        done.push(format!("{IPIP_DEVICE} set up"));
    }
    Ok(())
}

/// Makes `address` the only address of its family on `link` (IPv6 link-local ones aside).
fn ensure_only_address(
    nl: &Netlink,
    link: &Interface,
    address: IpNet,
    done: &mut Vec<String>,
) -> Result<()> {
    let link_local = |a: &IpNet| match a.addr() {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    };
    for a in link
        .addresses
        .iter()
        .filter(|a| a.addr().is_ipv6() == address.addr().is_ipv6() && !link_local(a))
    {
        if *a != address {
            nl.delete_address(&link.name, *a)?;
            done.push(format!("address {a} removed from {}", link.name));
        }
    }
    if !link.addresses.contains(&address) {
        nl.add_address(&link.name, address)?;
        done.push(format!("address {address} added to {}", link.name));
    }
    Ok(())
}

fn sync_vteps(
    nl: &Netlink,
    device: &str,
    index: u32,
    v6: bool,
    vteps: &BTreeSet<Vtep>,
    done: &mut Vec<String>,
) -> Result<()> {
    let neighbours: Vec<_> = nl
        .neighbours(Some(index))?
        .into_iter()
        .filter(|n| n.ip.is_ipv6() == v6)
        .collect();
    let fdb = nl.fdb_entries(index)?;
    // Unwanted first: a remote node that changed its MAC or address leaves old entries.
    for n in &neighbours {
        let wanted = vteps
            .iter()
            .any(|v| v.tunnel_ip == n.ip && Some(v.mac) == n.mac);
        if !wanted && n.state == NeighbourState::Permanent && nl.delete_neighbour(index, n.ip)? {
            done.push(format!("neighbour {} dev {device} removed", n.ip));
        }
    }
    for e in &fdb {
        let wanted = vteps
            .iter()
            .any(|v| v.mac == e.mac && e.dst == Some(v.host_ip));
        if !wanted && nl.delete_fdb(index, e.mac, e.dst)? {
            done.push(format!("fdb {} dev {device} removed", e.mac));
        }
    }
    for v in vteps {
        let has_neighbour = neighbours.iter().any(|n| {
            n.ip == v.tunnel_ip && n.mac == Some(v.mac) && n.state == NeighbourState::Permanent
        });
        if !has_neighbour {
            nl.replace_permanent_neighbour(index, v.tunnel_ip, v.mac)?;
            done.push(format!(
                "neighbour {} lladdr {} dev {device} programmed",
                v.tunnel_ip, v.mac
            ));
        }
        let has_fdb = fdb
            .iter()
            .any(|e| e.mac == v.mac && e.dst == Some(v.host_ip) && e.permanent);
        if !has_fdb {
            nl.replace_fdb(index, v.mac, v.host_ip)?;
            done.push(format!(
                "fdb {} dst {} dev {device} programmed",
                v.mac, v.host_ip
            ));
        }
    }
    Ok(())
}
