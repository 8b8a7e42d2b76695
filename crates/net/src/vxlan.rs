//! Tunnel devices as felix makes them: the VXLAN device `vxlan.calico` (VNI 4096, UDP port
//! 4789, the node's address as source, learning off, MTU of the underlay interface minus 50,
//! the node's tunnel address as a /32, a MAC derived from the node's name) and its IPv6 twin
//! `vxlan-v6.calico` (MTU minus 70, a /128, the MAC derived from `<name>-v6`), their
//! per-remote-node entries (a permanent neighbour `tunnel address -> MAC` and a permanent FDB
//! entry `MAC -> node address`), and the IPIP device `tunl0` (which needs the kernel's `ipip`
//! module).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
    NeighbourState as NlNeighbourState,
};
use nix::errno::Errno;
use rtnetlink::{LinkIpIp, LinkVxlan};
use sha1::{Digest, Sha1};

use crate::error::{NetError, Result, errno_of};
use crate::netlink::Netlink;
use crate::types::MacAddr;

/// Calico's IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// Calico's IPv6 VXLAN device.
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.calico";
/// Calico's VXLAN network identifier (FelixConfiguration `vxlanVNI`).
pub const VXLAN_VNI: u32 = 4096;
/// Calico's VXLAN UDP port (FelixConfiguration `vxlanPort`).
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN over IPv4 takes from the underlay's MTU.
pub const VXLAN_OVERHEAD: u32 = 50;
/// What VXLAN over IPv6 takes from the underlay's MTU.
pub const VXLAN_V6_OVERHEAD: u32 = 70;
/// The kernel's IPIP fallback device, which Calico uses.
pub const IPIP_DEVICE: &str = "tunl0";
/// What IPIP takes from the underlay's MTU.
pub const IPIP_OVERHEAD: u32 = 20;

/// The VTEP MAC Calico derives for a node that sets no `vxlanTunnelMACAddr`: `0x66` (`f`)
/// followed by the first five bytes of the SHA-1 of the node's name.
pub fn vtep_mac(node: &str) -> MacAddr {
    let d = Sha1::digest(node.as_bytes());
    MacAddr([0x66, d[0], d[1], d[2], d[3], d[4]])
}

/// The IPv6 VTEP MAC Calico derives: [`vtep_mac`] of `<node>-v6`.
pub fn vtep_mac_v6(node: &str) -> MacAddr {
    vtep_mac(&format!("{node}-v6"))
}

/// The VXLAN device a node needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The node's own address: the tunnel's source, and how its underlay interface is found.
    /// Its family is the device's.
    pub local: IpAddr,
    pub mac: MacAddr,
    /// The node's tunnel address (installed as a /32 or /128).
    pub address: IpAddr,
    /// `None`: the underlay interface's MTU minus [`VXLAN_OVERHEAD`] ([`VXLAN_V6_OVERHEAD`]).
    pub mtu: Option<u32>,
}

impl VxlanDevice {
    /// Calico's device for a node with address `local`, tunnel address `address` and VTEP MAC
    /// `mac`.
    pub fn calico(local: Ipv4Addr, address: Ipv4Addr, mac: MacAddr) -> VxlanDevice {
        VxlanDevice {
            name: VXLAN_DEVICE.into(),
            vni: VXLAN_VNI,
            port: VXLAN_PORT,
            local: IpAddr::V4(local),
            mac,
            address: IpAddr::V4(address),
            mtu: None,
        }
    }

    /// Calico's IPv6 device (`vxlan-v6.calico`).
    pub fn calico_v6(local: Ipv6Addr, address: Ipv6Addr, mac: MacAddr) -> VxlanDevice {
        VxlanDevice {
            name: VXLAN_V6_DEVICE.into(),
            local: IpAddr::V6(local),
            address: IpAddr::V6(address),
            ..VxlanDevice::calico(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, mac)
        }
    }

    /// What the encapsulation takes from the underlay's MTU.
    pub fn overhead(&self) -> u32 {
        if self.local.is_ipv6() {
            VXLAN_V6_OVERHEAD
        } else {
            VXLAN_OVERHEAD
        }
    }
}

/// A remote node's VXLAN tunnel endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vtep {
    /// The remote node's tunnel address.
    pub tunnel_ip: IpAddr,
    /// Its device's MAC.
    pub mac: MacAddr,
    /// The remote node's address on the underlay (where the UDP packets go).
    pub host_ip: IpAddr,
}

/// The IPIP device a node needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpipDevice {
    /// The node's IPIP tunnel address (installed as a /32).
    pub address: Ipv4Addr,
    /// `None`: the underlay interface's MTU minus [`IPIP_OVERHEAD`].
    pub mtu: Option<u32>,
}

/// What an existing VXLAN device is, as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    /// The underlay interface's index.
    pub link: Option<u32>,
    pub learning: Option<bool>,
    /// Whether the outer UDP header of IPv4 packets carries a checksum.
    pub udp_csum: Option<bool>,
}

/// A bridge forwarding entry of a VXLAN device (`bridge fdb show dev …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: MacAddr,
    /// The remote endpoint the MAC is reached at.
    pub dst: Option<IpAddr>,
    pub permanent: bool,
}

fn nl_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

impl Netlink {
    /// The VXLAN settings of interface `name`, or `None` if it does not exist or is no VXLAN
    /// device.
    pub fn vxlan_info(&self, name: &str) -> Result<Option<VxlanInfo>> {
        crate::netlink::validate_ifname(name)?;
        let req = self
            .handle()
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let msgs = match self.block_on(req.try_collect::<Vec<_>>()) {
            Ok(v) => v,
            Err(e) if errno_of(&e) == Some(Errno::ENODEV as i32) => return Ok(None),
            Err(e) => return Err(nl_err(format!("get link {name}"))(e)),
        };
        let Some(m) = msgs.first() else {
            return Ok(None);
        };
        for a in &m.attributes {
            let LinkAttribute::LinkInfo(infos) = a else {
                continue;
            };
            for info in infos {
                let LinkInfo::Data(InfoData::Vxlan(v)) = info else {
                    continue;
                };
                let mut out = VxlanInfo::default();
                for x in v {
                    match x {
                        InfoVxlan::Id(id) => out.vni = Some(*id),
                        InfoVxlan::Port(p) => out.port = Some(*p),
                        InfoVxlan::Local(l) => out.local = Some(IpAddr::V4(*l)),
                        InfoVxlan::Local6(l) => out.local = Some(IpAddr::V6(*l)),
                        InfoVxlan::Link(l) => out.link = Some(*l),
                        InfoVxlan::Learning(l) => out.learning = Some(*l),
                        InfoVxlan::UDPCsum(c) => out.udp_csum = Some(*c),
                        _ => {}
                    }
                }
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Creates the VXLAN device `dev` over the underlay interface `parent` (by index): learning
    /// off, down; the caller sets the MTU, address and state. Over IPv4 the outer UDP header
    /// carries no checksum (`noudpcsum`), as on Calico's `vxlan.calico`: the inner packet has
    /// its own, and computing the outer one in software costs every packet.
    pub fn add_vxlan(&self, dev: &VxlanDevice, parent: u32) -> Result<()> {
        crate::netlink::validate_ifname(&dev.name)?;
        let msg = LinkVxlan::new(&dev.name, dev.vni).port(dev.port);
        let msg = match dev.local {
            IpAddr::V4(l) => msg.local(l).udp_csum(false),
            IpAddr::V6(l) => msg.local6(l),
        };
        let msg = msg
            .dev(parent)
            .learning(false)
            .address(dev.mac.0.to_vec())
            .build();
        self.block_on(self.handle().link().add(msg).execute())
            .map_err(nl_err(format!(
                "create vxlan device {} (vni {}, port {})",
                dev.name, dev.vni, dev.port
            )))
    }

    /// Creates the IPIP device `name`. On a kernel without the `ipip` module this fails (the
    /// kernel does not know the link type); when the module loads it makes `tunl0` itself, so
    /// asking for `tunl0` then answers "exists", which is not an error here.
    pub fn add_ipip(&self, name: &str) -> Result<()> {
        crate::netlink::validate_ifname(name)?;
        let msg = LinkIpIp::new(name).build();
        match self.block_on(self.handle().link().add(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(Errno::EEXIST as i32) => Ok(()),
            Err(e) => Err(nl_err(format!("create ipip device {name}"))(e)),
        }
    }

    /// The bridge forwarding entries of interface `ifindex`.
    pub fn fdb_entries(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        let msgs = self
            .block_on(
                self.handle()
                    .neighbours()
                    .get()
                    .set_address_family(AddressFamily::Bridge)
                    .execute()
                    .try_collect::<Vec<_>>(),
            )
            .map_err(nl_err("list fdb entries"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Bridge && m.header.ifindex == ifindex)
            .filter_map(fdb_from)
            .collect())
    }

    /// Installs (or replaces) the permanent entry `mac -> dst` on interface `ifindex`
    /// (`bridge fdb replace MAC dev DEV dst DST self permanent`).
    pub fn replace_fdb(&self, ifindex: u32, mac: MacAddr, dst: IpAddr) -> Result<()> {
        let req = self
            .handle()
            .neighbours()
            .add_bridge(ifindex, &mac.0)
            .flags(NeighbourFlags::Own)
            .state(NlNeighbourState::Permanent)
            .destination(dst)
            .replace();
        self.block_on(req.execute()).map_err(nl_err(format!(
            "add fdb {mac} dst {dst} (ifindex {ifindex})"
        )))
    }

    /// Deletes the entry `mac [-> dst]` of interface `ifindex`; returns `false` if absent.
    pub fn delete_fdb(&self, ifindex: u32, mac: MacAddr, dst: Option<IpAddr>) -> Result<bool> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = ifindex;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        if let Some(d) = dst {
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::from(d)));
        }
        match self.block_on(self.handle().neighbours().del(m).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(Errno::ENOENT as i32) => Ok(false),
            Err(e) => Err(nl_err(format!("delete fdb {mac} (ifindex {ifindex})"))(e)),
        }
    }
}

fn fdb_from(m: &NeighbourMessage) -> Option<FdbEntry> {
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => MacAddr::from_slice(b),
        _ => None,
    })?;
    let dst = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    });
    Some(FdbEntry {
        ifindex: m.header.ifindex,
        mac,
        dst,
        permanent: m.header.state == NlNeighbourState::Permanent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vtep_mac_is_calicos() {
        // Calico's own example (felix/calc/vxlan_resolver.go, docs): kube-master.
        assert_eq!(vtep_mac("kube-master").to_string(), "66:f5:05:4e:7b:4e");
    }
}
