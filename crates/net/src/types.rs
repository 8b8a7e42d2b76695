//! Plain value types shared by the netlink session and the workload plumbing: MAC addresses,
//! interfaces, routes and neighbours as this crate reports and accepts them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{NetError, invalid};

/// The route protocol number marking routes this project owns (`proto 80`, the number Calico's
/// felix uses), so they can be found and cleaned up later.
pub const ROUTE_PROTOCOL: u8 = 80;

/// The metric of the host's route to each local workload: felix's
/// `ipv4NormalRoutePriority`/`ipv6NormalRoutePriority` default (1024). BIRD's aggregation filter
/// (`bird_aggr.cfg`) exports a route inside the node's own block only if its metric is below
/// this (an elevated route, such as a migrating VM's), so normal workload routes stay covered
/// by their block's advertisement.
pub const WORKLOAD_ROUTE_METRIC: u32 = 1024;

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// The kernel's local routing table (addresses of this host; not normally listed).
pub const LOCAL_TABLE: u32 = 255;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ee:ee:ee:ee:ee:ee`, the MAC Calico gives every host-side workload interface.
    pub const CALICO_HOST: MacAddr = MacAddr([0xee; 6]);

    /// Builds one from a byte slice of length 6.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// The modified EUI-64 IPv6 link-local address the kernel derives from this MAC
    /// (`ee:ee:ee:ee:ee:ee` gives `fe80::ecee:eeff:feee:eeee`).
    pub fn ipv6_link_local(&self) -> std::net::Ipv6Addr {
        let m = self.0;
        std::net::Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
            u16::from_be_bytes([m[2], 0xff]),
            u16::from_be_bytes([0xfe, m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            invalid(
                "MAC address",
                s,
                "write six hex bytes separated by ':', e.g. ee:ee:ee:ee:ee:ee",
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// An interface as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The hardware address, if the interface has one.
    pub mac: Option<MacAddr>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub up: bool,
    /// Whether the lower layer reports carrier (`IFF_LOWER_UP`); a veth has it only when both
    /// ends are up.
    pub lower_up: bool,
    /// The link kind, such as `veth` or `bridge` (`None` for physical devices and loopback).
    pub kind: Option<String>,
    /// For a veth, the index of its peer (in the peer's namespace); for a VLAN, its parent.
    pub link: Option<u32>,
    /// The index of the bridge (or other controller) this interface is attached to.
    pub master: Option<u32>,
    /// Addresses with their prefix lengths, in the order the kernel lists them.
    pub addresses: Vec<IpNet>,
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward to a gateway or out of a device.
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop with an ICMP "unreachable".
    Unreachable,
    /// Drop with an ICMP "administratively prohibited".
    Prohibit,
    /// Deliver locally.
    Local,
    /// Any other kernel route type, by number.
    Other(u8),
}

impl RouteKind {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            RouteKind::Unicast => 1,
            RouteKind::Local => 2,
            RouteKind::Blackhole => 6,
            RouteKind::Unreachable => 7,
            RouteKind::Prohibit => 8,
            RouteKind::Other(n) => n,
        }
    }

    pub(crate) fn from_u8(n: u8) -> RouteKind {
        match n {
            1 => RouteKind::Unicast,
            2 => RouteKind::Local,
            6 => RouteKind::Blackhole,
            7 => RouteKind::Unreachable,
            8 => RouteKind::Prohibit,
            n => RouteKind::Other(n),
        }
    }
}

/// How far a route's destination is (the kernel's route scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteScope {
    /// Anywhere (routes via gateways, blackholes).
    Universe,
    /// Directly attached to the device (`scope link`).
    Link,
    /// This host only.
    Host,
    /// Any other scope, by number.
    Other(u8),
}

impl RouteScope {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            RouteScope::Universe => 0,
            RouteScope::Link => 253,
            RouteScope::Host => 254,
            RouteScope::Other(n) => n,
        }
    }

    pub(crate) fn from_u8(n: u8) -> RouteScope {
        match n {
            0 => RouteScope::Universe,
            253 => RouteScope::Link,
            254 => RouteScope::Host,
            n => RouteScope::Other(n),
        }
    }
}

/// A route, both as a request (what to install) and as read back from the kernel.
///
/// The constructors fill in the usual values: protocol [`ROUTE_PROTOCOL`], the main table, and
/// the scope that matches the kind of route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix.
    pub dst: IpNet,
    /// What the route does.
    pub kind: RouteKind,
    /// The next hop, if any; it must be of the same family as `dst`.
    pub gateway: Option<IpAddr>,
    /// The output interface's name, if any.
    pub dev: Option<String>,
    /// Whether the gateway is taken to be on the link even without a covering route.
    pub onlink: bool,
    /// The route scope.
    pub scope: RouteScope,
    /// The route protocol number (who owns the route).
    pub protocol: u8,
    /// The routing table.
    pub table: u32,
    /// The metric (priority), if set.
    pub metric: Option<u32>,
}

impl Route {
    fn base(dst: IpNet, kind: RouteKind, scope: RouteScope) -> Route {
        Route {
            dst: dst.trunc(),
            kind,
            gateway: None,
            dev: None,
            onlink: false,
            scope,
            protocol: ROUTE_PROTOCOL,
            table: MAIN_TABLE,
            metric: None,
        }
    }

    /// `blackhole DST`: drop traffic to `dst` (used for a node's own IPAM blocks).
    pub fn blackhole(dst: IpNet) -> Route {
        Route::base(dst, RouteKind::Blackhole, RouteScope::Universe)
    }

    /// `DST dev DEV scope link`: `dst` is directly reachable out of `dev`.
    pub fn link(dst: IpNet, dev: &str) -> Route {
        Route {
            dev: Some(dev.to_owned()),
            ..Route::base(dst, RouteKind::Unicast, RouteScope::Link)
        }
    }

    /// The host's route to a local workload's address: `DST dev CALI… scope link metric 1024`.
    pub fn workload(dst: IpNet, dev: &str) -> Route {
        Route::link(dst, dev).with_metric(WORKLOAD_ROUTE_METRIC)
    }

    /// `DST via GATEWAY [dev DEV]`.
    pub fn via(dst: IpNet, gateway: IpAddr, dev: Option<&str>) -> Route {
        Route {
            gateway: Some(gateway),
            dev: dev.map(str::to_owned),
            ..Route::base(dst, RouteKind::Unicast, RouteScope::Universe)
        }
    }

    /// Marks the gateway as on-link (`onlink`).
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Sets the route protocol number.
    pub fn with_protocol(mut self, protocol: u8) -> Route {
        self.protocol = protocol;
        self
    }

    /// Sets the routing table.
    pub fn with_table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// Sets the metric.
    pub fn with_metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    /// Whether `addr` falls inside this route's destination.
    pub fn covers(&self, addr: IpAddr) -> bool {
        self.dst.contains(&addr)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => f.write_str("blackhole ")?,
            RouteKind::Unreachable => f.write_str("unreachable ")?,
            RouteKind::Prohibit => f.write_str("prohibit ")?,
            RouteKind::Local => f.write_str("local ")?,
            RouteKind::Other(n) => write!(f, "type {n} ")?,
        }
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " proto {}", self.protocol)?;
        match self.scope {
            RouteScope::Universe => {}
            RouteScope::Link => f.write_str(" scope link")?,
            RouteScope::Host => f.write_str(" scope host")?,
            RouteScope::Other(n) => write!(f, " scope {n}")?,
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// The state of a neighbour (ARP/NDP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighbourState {
    /// Static: never expires or gets re-resolved.
    Permanent,
    /// Static without link-layer resolution.
    Noarp,
    /// Recently confirmed.
    Reachable,
    /// Known but not recently confirmed.
    Stale,
    /// Waiting before probing.
    Delay,
    /// Being probed.
    Probe,
    /// Resolution in progress.
    Incomplete,
    /// Resolution failed.
    Failed,
    /// Anything else, by the kernel's bit value.
    Other(u16),
}

impl fmt::Display for NeighbourState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeighbourState::Other(n) => write!(f, "state 0x{n:x}"),
            s => write!(f, "{}", format!("{s:?}").to_uppercase()),
        }
    }
}

/// A neighbour (ARP or NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface index the entry belongs to.
    pub ifindex: u32,
    /// The IP address.
    pub ip: IpAddr,
    /// The resolved MAC, if any.
    pub mac: Option<MacAddr>,
    /// The entry's state.
    pub state: NeighbourState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        for (s, ok) in [
            ("ee:ee:ee:ee:ee:ee", true),
            ("00:1a:2B:3c:4d:5e", true),
            ("0:1:2:3:4:5", true),
            ("ee:ee:ee:ee:ee", false),
            ("ee:ee:ee:ee:ee:ee:ee", false),
            ("ee-ee-ee-ee-ee-ee", false),
            ("eee:ee:ee:ee:ee:e", false),
            ("zz:ee:ee:ee:ee:ee", false),
            ("", false),
        ] {
            assert_eq!(s.parse::<MacAddr>().is_ok(), ok, "{s:?}");
        }
        let m: MacAddr = "00:1a:2B:3c:4d:5e".parse().unwrap();
        assert_eq!(m.to_string(), "00:1a:2b:3c:4d:5e");
    }

    #[test]
    fn calico_host_mac_gives_the_well_known_link_local() {
        assert_eq!(
            MacAddr::CALICO_HOST.ipv6_link_local(),
            "fe80::ecee:eeff:feee:eeee"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
        let m: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.ipv6_link_local().to_string(), "fe80::42:acff:fe11:2");
    }

    #[test]
    fn routes_print_like_iproute2() {
        let cases = [
            (
                Route::blackhole("10.65.0.0/26".parse().unwrap()),
                "blackhole 10.65.0.0/26 proto 80",
            ),
            (
                Route::link("10.65.0.5/32".parse().unwrap(), "cali1"),
                "10.65.0.5/32 dev cali1 proto 80 scope link",
            ),
            (
                Route::via(
                    "0.0.0.0/0".parse().unwrap(),
                    "169.254.1.1".parse().unwrap(),
                    Some("eth0"),
                )
                .with_metric(5)
                .onlink(),
                "default via 169.254.1.1 dev eth0 proto 80 metric 5 onlink",
            ),
            (
                Route::blackhole("fd00::/122".parse().unwrap())
                    .with_table(100)
                    .with_protocol(12),
                "blackhole fd00::/122 table 100 proto 12",
            ),
        ];
        for (route, text) in cases {
            assert_eq!(route.to_string(), text);
        }
    }

    #[test]
    fn constructors_truncate_host_bits() {
        assert_eq!(
            Route::blackhole("10.65.0.7/26".parse().unwrap())
                .dst
                .to_string(),
            "10.65.0.0/26"
        );
    }

    proptest::proptest! {
        #[test]
        fn mac_display_round_trips(bytes: [u8; 6]) {
            let m = MacAddr(bytes);
            proptest::prop_assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        }

        #[test]
        fn route_kind_and_scope_numbers_round_trip(n: u8) {
            proptest::prop_assert_eq!(RouteKind::from_u8(n).to_u8(), n);
            proptest::prop_assert_eq!(RouteScope::from_u8(n).to_u8(), n);
        }
    }
}
