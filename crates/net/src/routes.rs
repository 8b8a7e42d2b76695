//! Routes to other nodes' pods, as felix's route managers program them, and the tunnel devices
//! they go through ([`crate::vxlan`]).
//!
//! [`ClusterRoutes`] says everything a node must have: the VXLAN device and one entry per remote
//! VTEP, the IPIP device, and a route per remote block (or borrowed address). [`sync`] reads the
//! kernel once, changes only what differs, removes what this project programmed earlier and no
//! longer wants (routes of protocol [`ROUTE_PROTOCOL`] through a gateway or a tunnel device,
//! neighbours and FDB entries on the VXLAN device), and says what it changed.
//!
//! The routes' owner is recognised as felix recognises its own: protocol 80 for routes via a
//! gateway, and the device for routes on the tunnel devices. The local workloads' /32 routes
//! (protocol 80 too, but without a gateway, on `cali…` devices) and the blackholes are the host
//! plumbing's ([`crate::host`]) and never touched here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::error::{NetError, Result};
use crate::netlink::Netlink;
use crate::types::{Interface, MAIN_TABLE, NeighbourState, ROUTE_PROTOCOL, Route, RouteKind};
use crate::vxlan::{
    IPIP_DEVICE, IPIP_OVERHEAD, IpipDevice, VXLAN_DEVICE, VXLAN_OVERHEAD, Vtep, VxlanDevice,
};

/// How a route to other nodes' pods leaves this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// Encapsulated in VXLAN: `via <remote tunnel address> dev vxlan.calico onlink`.
    Vxlan(Ipv4Addr),
    /// Straight onto the VXLAN device (a remote tunnel address outside the node's blocks):
    /// `dev vxlan.calico scope link`.
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
            Via::Vxlan(gw) => write!(f, "{} via {gw} dev {VXLAN_DEVICE} onlink", self.dst),
            Via::VxlanDevice => write!(f, "{} dev {VXLAN_DEVICE} scope link", self.dst),
            Via::Ipip(gw) => write!(f, "{} via {gw} dev {IPIP_DEVICE} onlink", self.dst),
            Via::Underlay(gw) => write!(f, "{} via {gw} onlink", self.dst),
        }
    }
}

/// Everything a node's routes to other nodes' pods need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRoutes {
    /// The node's own address on the underlay: the interface holding it carries the
    /// unencapsulated routes and the tunnels.
    pub local: Option<IpAddr>,
    /// `None`: no VXLAN device (an existing `vxlan.calico` is deleted).
    pub vxlan: Option<VxlanDevice>,
    /// The remote VTEPs (neighbour and FDB entries on the VXLAN device).
    pub vteps: BTreeSet<Vtep>,
    /// `None`: IPIP is not wanted (an existing `tunl0` is left alone, as felix does, minus our
    /// address).
    pub ipip: Option<IpipDevice>,
    pub routes: BTreeSet<ClusterRoute>,
}

/// Whether `r` is one of ours: see the module documentation.
fn owned(r: &Route) -> bool {
    r.protocol == ROUTE_PROTOCOL
        && r.table == MAIN_TABLE
        && r.kind == RouteKind::Unicast
        && (r.gateway.is_some()
            || matches!(r.dev.as_deref(), Some(VXLAN_DEVICE) | Some(IPIP_DEVICE)))
}

/// The interface holding `addr`.
fn holding<'a>(interfaces: &'a [Interface], addr: IpAddr) -> Option<&'a Interface> {
    interfaces
        .iter()
        .find(|i| i.addresses.iter().any(|a| a.addr() == addr))
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
/// line each.
pub fn sync(nl: &Netlink, want: &ClusterRoutes) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let interfaces = nl.interfaces()?;
    let parent = want.local.and_then(|a| holding(&interfaces, a)).cloned();

    // The VXLAN device.
    let vxlan_index = match &want.vxlan {
        None => {
            if nl.link(VXLAN_DEVICE)?.is_some() {
                nl.delete_link(VXLAN_DEVICE)?;
                done.push(format!("{VXLAN_DEVICE} deleted (no VXLAN pool)"));
            }
            None
        }
        Some(dev) => match &parent {
            None => {
                tracing::warn!(address = %dev.local, "no interface holds the node's address; the VXLAN device waits for it");
                None
            }
            Some(p) => Some(ensure_vxlan(nl, dev, p, &mut done)?),
        },
    };

    // Its neighbours and forwarding entries.
    if let Some(index) = vxlan_index {
        sync_vteps(nl, index, &want.vteps, &mut done)?;
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
            let mut route = match r.via {
                Via::Vxlan(gw) => {
                    vxlan_index?;
                    Route::via(r.dst, IpAddr::V4(gw), Some(VXLAN_DEVICE)).onlink()
                }
                Via::VxlanDevice => {
                    vxlan_index?;
                    Route::link(r.dst, VXLAN_DEVICE)
                }
                Via::Ipip(gw) => {
                    if !ipip_up {
                        return None;
                    }
                    Route::via(r.dst, IpAddr::V4(gw), Some(IPIP_DEVICE)).onlink()
                }
                Via::Underlay(gw) => match &parent {
                    Some(p) => Route::via(r.dst, gw, Some(&p.name)).onlink(),
                    None => Route::via(r.dst, gw, None),
                },
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
    for r in present.iter().filter(|r| owned(r)) {
        if !wanted.iter().any(|w| same(w, r)) && nl.delete_route(r)? {
            done.push(format!("route {r} removed"));
        }
    }
    for w in &wanted {
        if !present.iter().any(|r| owned(r) && same(w, r)) {
            nl.replace_route(w)?;
            done.push(format!("route {w} programmed"));
        }
    }
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
        .or_else(|| parent.mtu.map(|m| m.saturating_sub(VXLAN_OVERHEAD)));
    if let Some(mtu) = mtu
        && link.mtu != Some(mtu)
    {
        nl.set_mtu(&dev.name, mtu)?;
        done.push(format!("{} mtu set to {mtu}", dev.name));
    }
    let address = IpNet::new(IpAddr::V4(dev.address), 32).expect("/32 is valid");
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

/// Makes `address` the only IPv4 address of `link`.
fn ensure_only_address(
    nl: &Netlink,
    link: &Interface,
    address: IpNet,
    done: &mut Vec<String>,
) -> Result<()> {
    for a in link.addresses.iter().filter(|a| a.addr().is_ipv4()) {
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
    index: u32,
    vteps: &BTreeSet<Vtep>,
    done: &mut Vec<String>,
) -> Result<()> {
    let neighbours: Vec<_> = nl
        .neighbours(Some(index))?
        .into_iter()
        .filter(|n| n.ip.is_ipv4())
        .collect();
    let fdb = nl.fdb_entries(index)?;
    // Unwanted first: a remote node that changed its MAC or address leaves old entries.
    for n in &neighbours {
        let wanted = vteps
            .iter()
            .any(|v| IpAddr::V4(v.tunnel_ip) == n.ip && Some(v.mac) == n.mac);
        if !wanted && n.state == NeighbourState::Permanent && nl.delete_neighbour(index, n.ip)? {
            done.push(format!("neighbour {} dev {VXLAN_DEVICE} removed", n.ip));
        }
    }
    for e in &fdb {
        let wanted = vteps
            .iter()
            .any(|v| v.mac == e.mac && e.dst == Some(IpAddr::V4(v.host_ip)));
        if !wanted && nl.delete_fdb(index, e.mac, e.dst)? {
            done.push(format!("fdb {} dev {VXLAN_DEVICE} removed", e.mac));
        }
    }
    for v in vteps {
        let has_neighbour = neighbours.iter().any(|n| {
            n.ip == IpAddr::V4(v.tunnel_ip)
                && n.mac == Some(v.mac)
                && n.state == NeighbourState::Permanent
        });
        if !has_neighbour {
            nl.replace_permanent_neighbour(index, IpAddr::V4(v.tunnel_ip), v.mac)?;
            done.push(format!(
                "neighbour {} lladdr {} dev {VXLAN_DEVICE} programmed",
                v.tunnel_ip, v.mac
            ));
        }
        let has_fdb = fdb
            .iter()
            .any(|e| e.mac == v.mac && e.dst == Some(IpAddr::V4(v.host_ip)) && e.permanent);
        if !has_fdb {
            nl.replace_fdb(index, v.mac, IpAddr::V4(v.host_ip))?;
            done.push(format!(
                "fdb {} dst {} dev {VXLAN_DEVICE} programmed",
                v.mac, v.host_ip
            ));
        }
    }
    Ok(())
}
