//! A synchronous netlink session bound to one network namespace.
//!
//! [`Netlink`] wraps an rtnetlink connection and a small current-thread tokio runtime that
//! drives it, so every method blocks until the kernel has answered. The socket is opened inside
//! the chosen namespace (see [`in_netns_same_thread`]) and stays bound to it; the session can
//! then be used from any thread.
//!
//! Because the methods block on their own runtime, do not call them from inside an async task;
//! use `tokio::task::spawn_blocking` there.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState as NlNeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use nix::errno::Errno;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{NetError, Result, errno_of, invalid};
use crate::netns::{NetnsRef, in_netns, in_netns_same_thread};
use crate::types::{
    Interface, LOCAL_TABLE, MAIN_TABLE, MacAddr, Neighbour, NeighbourState, Route, RouteKind,
    RouteScope,
};

/// What to create with [`Netlink::add_veth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// The name of the end created in the session's namespace.
    pub name: String,
    /// Its MAC (random if `None`).
    pub mac: Option<MacAddr>,
    /// Whether to bring it up at creation.
    pub up: bool,
    /// The name of the peer end.
    pub peer_name: String,
    /// The peer's MAC (random if `None`).
    pub peer_mac: Option<MacAddr>,
    /// Whether to bring the peer up (right after creation).
    pub peer_up: bool,
    /// Where the peer is created; `None` means the session's namespace. The peer is created
    /// directly there, never moved afterwards.
    pub peer_netns: Option<NetnsRef>,
    /// MTU for both ends (kernel default if `None`).
    pub mtu: Option<u32>,
}

impl VethSpec {
    /// A pair `name` / `peer_name`, both down, the peer in the session's namespace.
    pub fn new(name: &str, peer_name: &str) -> VethSpec {
        VethSpec {
            name: name.to_owned(),
            mac: None,
            up: false,
            peer_name: peer_name.to_owned(),
            peer_mac: None,
            peer_up: false,
            peer_netns: None,
            mtu: None,
        }
    }
}

/// Checks that `name` is a valid Linux interface name.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(invalid("interface name", name, reason));
    if name.is_empty() || name.len() > 15 {
        return bad("it must be 1 to 15 bytes long");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return bad("it must not contain '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// A netlink session in one network namespace. See the module documentation.
pub struct Netlink {
    rt: Arc<tokio::runtime::Runtime>,
    handle: rtnetlink::Handle,
    ns: NetnsRef,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

fn nl_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Netlink {
    /// Opens a session in `ns`.
    pub fn open(ns: &NetnsRef) -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| NetError::Io {
                what: "start the netlink runtime",
                source,
            })?;
        Self::open_on(Arc::new(rt), ns)
    }

    /// Opens another session, in `ns`, sharing this one's runtime (cheaper than [`Netlink::open`]).
    pub fn open_sibling(&self, ns: &NetnsRef) -> Result<Netlink> {
        Self::open_on(self.rt.clone(), ns)
    }

    fn open_on(rt: Arc<tokio::runtime::Runtime>, ns: &NetnsRef) -> Result<Netlink> {
        let (conn, handle, _) = in_netns_same_thread(ns, || {
            // The socket registers with the runtime's reactor as it is created.
            let _entered = rt.enter();
            rtnetlink::new_connection()
        })?
        .map_err(|source| NetError::Io {
            what: "open a netlink socket",
            source,
        })?;
        rt.spawn(conn);
        Ok(Netlink {
            rt,
            handle,
            ns: ns.clone(),
        })
    }

    /// The namespace this session works in.
    pub fn netns(&self) -> &NetnsRef {
        &self.ns
    }

    /// The raw rtnetlink handle, for requests this type does not wrap. Drive its futures with
    /// [`Netlink::block_on`].
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Runs a future on the session's runtime until it completes.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs `f` inside this session's namespace on a dedicated thread (see [`in_netns`]).
    pub fn in_ns<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        in_netns(&self.ns, f)
    }

    /// Runs `f` on the calling thread switched into this session's namespace (see
    /// [`in_netns_same_thread`]); the cheap way to read or write a few sysctls.
    pub fn in_ns_same_thread<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R,
    {
        in_netns_same_thread(&self.ns, f)
    }

    // ===== links =====

    /// Interface `name` without its addresses (one request; `addresses` is left empty), or
    /// `None` if it does not exist.
    pub fn link(&self, name: &str) -> Result<Option<Interface>> {
        Ok(self.raw_link_message(name)?.as_ref().map(interface_from))
    }

    fn raw_link_message(&self, name: &str) -> Result<Option<LinkMessage>> {
        validate_ifname(name)?;
        let req = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match self.block_on(req.try_collect::<Vec<_>>()) {
            Ok(mut v) => Ok(v.pop()),
            Err(e) if errno_of(&e) == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(nl_err(format!("get link {name}"))(e)),
        }
    }

    fn no_such(&self, name: &str) -> NetError {
        NetError::NoSuchInterface {
            name: name.to_owned(),
            netns: self.ns.to_string(),
        }
    }

    /// The index of interface `name`, or `None` if it does not exist.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.raw_link_message(name)?.map(|m| m.header.index))
    }

    fn require_index(&self, name: &str) -> Result<u32> {
        self.link_index(name)?.ok_or_else(|| self.no_such(name))
    }

    /// Interface `name` with its addresses, or `None` if it does not exist.
    pub fn interface(&self, name: &str) -> Result<Option<Interface>> {
        let Some(mut iface) = self.link(name)? else {
            return Ok(None);
        };
        iface.addresses = self.addresses_of(iface.index)?;
        Ok(Some(iface))
    }

    /// Every interface in the namespace with its addresses, ordered by index.
    pub fn interfaces(&self) -> Result<Vec<Interface>> {
        let links = self
            .block_on(self.handle.link().get().execute().try_collect::<Vec<_>>())
            .map_err(nl_err("list links"))?;
        let mut by_index: HashMap<u32, Vec<IpNet>> = HashMap::new();
        for a in self.address_messages()? {
            if let Some(net) = address_of(&a) {
                by_index.entry(a.header.index).or_default().push(net);
            }
        }
        let mut out: Vec<Interface> = links
            .iter()
            .map(|m| {
                let mut i = interface_from(m);
                i.addresses = by_index.remove(&i.index).unwrap_or_default();
                i
            })
            .collect();
        out.sort_by_key(|i| i.index);
        Ok(out)
    }

    fn index_names(&self) -> Result<HashMap<u32, String>> {
        let links = self
            .block_on(self.handle.link().get().execute().try_collect::<Vec<_>>())
            .map_err(nl_err("list links"))?;
        Ok(links
            .iter()
            .map(|m| (m.header.index, interface_from(m).name))
            .collect())
    }

    /// Creates a veth pair as described by `spec`. With `peer_netns` set, the peer is created
    /// directly in that namespace (one netlink request, no move afterwards).
    pub fn add_veth(&self, spec: &VethSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        validate_ifname(&spec.peer_name)?;
        let peer_file = spec.peer_netns.as_ref().map(NetnsRef::open).transpose()?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.clone());
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(f) = &peer_file {
            peer = peer.setns_by_fd(f.as_raw_fd());
        }
        let mut link = LinkVeth::new(&spec.name, &spec.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mac) = spec.mac {
            link = link.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            link = link.mtu(mtu);
        }
        if spec.up {
            link = link.up();
        }
        let res = self.block_on(self.handle.link().add(link.build()).execute());
        drop(peer_file);
        res.map_err(nl_err(format!(
            "create veth {} (peer {})",
            spec.name, spec.peer_name
        )))?;
        tracing::debug!(name = %spec.name, peer = %spec.peer_name, "created veth pair");
        // The kernel cannot bring the peer up within the creating request (the pair is not
        // linked yet at that point), so that takes a second request in the peer's namespace.
        if spec.peer_up {
            let up = match &spec.peer_netns {
                None => self.set_up(&spec.peer_name),
                Some(ns) => self
                    .open_sibling(ns)
                    .and_then(|p| p.set_up(&spec.peer_name)),
            };
            if let Err(e) = up {
                let _ = self.delete_link(&spec.name);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Creates a bridge named `name` (down).
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        validate_ifname(name)?;
        self.block_on(
            self.handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute(),
        )
        .map_err(nl_err(format!("create bridge {name}")))
    }

    /// Attaches interface `name` to bridge `bridge`.
    pub fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        let br = self.require_index(bridge)?;
        validate_ifname(name)?;
        let msg = LinkUnspec::new_with_name(name).controller(br).build();
        self.block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err(format!("attach {name} to {bridge}")))
    }

    fn set_link(&self, name: &str, what: &str, b: LinkMessageBuilder<LinkUnspec>) -> Result<()> {
        validate_ifname(name)?;
        match self.block_on(self.handle.link().set(b.build()).execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(Errno::ENODEV as i32) => Err(self.no_such(name)),
            Err(e) => Err(nl_err(format!("{what} {name}"))(e)),
        }
    }

    /// Brings interface `name` up.
    pub fn set_up(&self, name: &str) -> Result<()> {
        self.set_link(name, "set up", LinkUnspec::new_with_name(name).up())
    }

    /// Takes interface `name` down.
    pub fn set_down(&self, name: &str) -> Result<()> {
        self.set_link(name, "set down", LinkUnspec::new_with_name(name).down())
    }

    /// Sets the MTU of interface `name`.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.set_link(name, "set mtu of", LinkUnspec::new_with_name(name).mtu(mtu))
    }

    /// Sets the MAC of interface `name`.
    pub fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        self.set_link(
            name,
            "set mac of",
            LinkUnspec::new_with_name(name).address(mac.0.to_vec()),
        )
    }

    /// Moves interface `name` into namespace `ns`, renaming it to `new_name` on the way if given.
    pub fn move_to_netns(&self, name: &str, ns: &NetnsRef, new_name: Option<&str>) -> Result<()> {
        if let Some(n) = new_name {
            validate_ifname(n)?;
        }
        let file = ns.open()?;
        // The new name travels in IFLA_IFNAME, so the link is addressed by index.
        let index = self.require_index(name)?;
        let mut b = LinkUnspec::new_with_index(index).setns_by_fd(file.as_raw_fd());
        if let Some(n) = new_name {
            b = b.name(n.to_owned());
        }
        let res = self.set_link(name, &format!("move to {ns}:"), b);
        drop(file);
        res
    }

    /// Deletes interface `name`; returns `false` if it did not exist. Deleting one end of a
    /// veth deletes the other, and the kernel removes the routes and neighbours through it.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        validate_ifname(name)?;
        let msg = LinkUnspec::new_with_name(name).build();
        match self.block_on(self.handle.link().del_with_message(msg).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(Errno::ENODEV as i32) => Ok(false),
            Err(e) => Err(nl_err(format!("delete link {name}"))(e)),
        }
    }

    // ===== addresses =====

    fn address_messages(&self) -> Result<Vec<AddressMessage>> {
        self.block_on(
            self.handle
                .address()
                .get()
                .execute()
                .try_collect::<Vec<_>>(),
        )
        .map_err(nl_err("list addresses"))
    }

    fn addresses_of(&self, index: u32) -> Result<Vec<IpNet>> {
        let req = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let msgs = self
            .block_on(req.try_collect::<Vec<_>>())
            .map_err(nl_err("list addresses"))?;
        Ok(msgs.iter().filter_map(address_of).collect())
    }

    /// Adds `addr` (with its prefix length) to interface `name`; adding one that is already
    /// there is not an error. IPv6 addresses skip duplicate address detection, so they are
    /// usable at once.
    pub fn add_address(&self, name: &str, addr: IpNet) -> Result<()> {
        let index = self.require_index(name)?;
        self.add_address_index(index, addr)
    }

    pub(crate) fn add_address_index(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .replace();
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.block_on(req.execute())
            .map_err(nl_err(format!("add address {addr} (ifindex {index})")))
    }

    /// Removes `addr` from interface `name`; returns `false` if it was not there.
    pub fn delete_address(&self, name: &str, addr: IpNet) -> Result<bool> {
        let index = self.require_index(name)?;
        let req = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr.addr());
        let msgs = self
            .block_on(req.execute().try_collect::<Vec<_>>())
            .map_err(nl_err("list addresses"))?;
        let Some(msg) = msgs
            .into_iter()
            .find(|m| m.header.prefix_len == addr.prefix_len())
        else {
            return Ok(false);
        };
        match self.block_on(self.handle.address().del(msg).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(Errno::EADDRNOTAVAIL as i32) => Ok(false),
            Err(e) => Err(nl_err(format!("delete address {addr} from {name}"))(e)),
        }
    }

    // ===== routes =====

    fn route_message(
        &self,
        route: &Route,
        for_delete: bool,
        oif: Option<u32>,
    ) -> Result<RouteMessage> {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(route.dst.addr());
        m.header.destination_prefix_length = route.dst.prefix_len();
        m.header.table = if route.table < 256 {
            route.table as u8
        } else {
            RouteHeader::RT_TABLE_UNSPEC
        };
        m.header.protocol = RouteProtocol::from(route.protocol);
        // For deletes, scope "nowhere" matches any scope, as with `ip route del`.
        m.header.scope = if for_delete {
            255u8.into()
        } else {
            route.scope.to_u8().into()
        };
        m.header.kind = route.kind.to_u8().into();
        if route.onlink {
            m.header.flags.insert(RouteFlags::Onlink);
        }
        if route.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.addr(),
                )));
        }
        if let Some(gw) = route.gateway {
            if gw.is_ipv4() != route.dst.addr().is_ipv4() {
                return Err(invalid(
                    "route gateway",
                    gw.to_string(),
                    format!(
                        "it must be of the same IP family as the destination {}",
                        route.dst
                    ),
                ));
            }
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        match (oif, &route.dev) {
            (Some(index), _) => m.attributes.push(RouteAttribute::Oif(index)),
            (None, Some(dev)) => m
                .attributes
                .push(RouteAttribute::Oif(self.require_index(dev)?)),
            (None, None) => {}
        }
        if let Some(metric) = route.metric {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        m.attributes.push(RouteAttribute::Table(route.table));
        Ok(m)
    }

    /// Adds `route`; fails if an equal route already exists.
    pub fn add_route(&self, route: &Route) -> Result<()> {
        let m = self.route_message(route, false, None)?;
        self.block_on(self.handle.route().add(m).execute())
            .map_err(nl_err(format!("add route {route}")))
    }

    /// Adds `route`, replacing any route to the same destination in the same table.
    pub fn replace_route(&self, route: &Route) -> Result<()> {
        self.replace_route_oif(route, None)
    }

    /// Like [`Netlink::replace_route`], with the output device given by index (saves a lookup).
    pub(crate) fn replace_route_oif(&self, route: &Route, oif: Option<u32>) -> Result<()> {
        let m = self.route_message(route, false, oif)?;
        self.block_on(self.handle.route().add(m).replace().execute())
            .map_err(nl_err(format!("replace route {route}")))
    }

    /// Deletes the route matching `route` (destination, table, kind, protocol, and the
    /// gateway and device if given); returns `false` if there was none.
    pub fn delete_route(&self, route: &Route) -> Result<bool> {
        let m = match self.route_message(route, true, None) {
            Ok(m) => m,
            // A route through a device that is gone is gone too.
            Err(NetError::NoSuchInterface { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.block_on(self.handle.route().del(m).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(Errno::ESRCH as i32) => Ok(false),
            Err(e) => Err(nl_err(format!("delete route {route}"))(e)),
        }
    }

    /// Installs (or replaces) `blackhole CIDR` with our protocol in the main table.
    pub fn replace_blackhole_route(&self, cidr: IpNet) -> Result<()> {
        self.replace_route(&Route::blackhole(cidr))
    }

    /// Deletes our `blackhole CIDR`; returns `false` if there was none.
    pub fn delete_blackhole_route(&self, cidr: IpNet) -> Result<bool> {
        self.delete_route(&Route::blackhole(cidr))
    }

    /// Installs (or replaces) `CIDR via GATEWAY dev DEV [onlink]` with our protocol.
    pub fn replace_route_via(
        &self,
        cidr: IpNet,
        gateway: IpAddr,
        dev: &str,
        onlink: bool,
    ) -> Result<()> {
        let mut r = Route::via(cidr, gateway, Some(dev));
        r.onlink = onlink;
        self.replace_route(&r)
    }

    /// Every IPv4 and IPv6 route outside the kernel's `local` table, with device names.
    pub fn routes(&self) -> Result<Vec<Route>> {
        let names = self.index_names()?;
        let mut out = Vec::new();
        for version in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let msg = match version {
                rtnetlink::IpVersion::V4 => {
                    rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
                }
                rtnetlink::IpVersion::V6 => {
                    rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
                }
            };
            let msgs = self
                .block_on(
                    self.handle
                        .route()
                        .get(msg)
                        .execute()
                        .try_collect::<Vec<_>>(),
                )
                .map_err(nl_err("list routes"))?;
            out.extend(
                msgs.iter()
                    .filter_map(|m| route_from(m, &names))
                    .filter(|r| r.table != LOCAL_TABLE),
            );
        }
        Ok(out)
    }

    /// The routes (outside the `local` table) with protocol number `protocol`.
    pub fn routes_with_protocol(&self, protocol: u8) -> Result<Vec<Route>> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| r.protocol == protocol)
            .collect())
    }

    /// The route the kernel picks for `dst` (`ip route get`), or `None` when it has none
    /// (network unreachable). The kernel answers a lookup that ends in a blackhole, unreachable
    /// or prohibit route with an error instead of the route; for those, the most specific such
    /// route of the main table is returned.
    pub fn route_get(&self, dst: IpAddr) -> Result<Option<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        match self.block_on(self.handle.route().get(m).execute().try_collect::<Vec<_>>()) {
            Ok(v) => {
                let names = self.index_names()?;
                Ok(v.iter().find_map(|m| route_from(m, &names)))
            }
            Err(e) if errno_of(&e) == Some(Errno::ENETUNREACH as i32) => Ok(None),
            Err(e)
                if matches!(
                    errno_of(&e),
                    Some(n) if n == Errno::EINVAL as i32 || n == Errno::EHOSTUNREACH as i32 || n == Errno::EACCES as i32
                ) =>
            {
                let dropping = self
                    .routes()?
                    .into_iter()
                    .filter(|r| {
                        r.table == MAIN_TABLE
                            && r.kind != RouteKind::Unicast
                            && r.dst.contains(&dst)
                    })
                    .max_by_key(|r| r.dst.prefix_len());
                match dropping {
                    Some(r) => Ok(Some(r)),
                    None => Err(nl_err(format!("route get {dst}"))(e)),
                }
            }
            Err(e) => Err(nl_err(format!("route get {dst}"))(e)),
        }
    }

    // ===== neighbours =====

    /// Installs (or replaces) a PERMANENT neighbour entry `ip -> mac` on interface `ifindex`.
    pub fn replace_permanent_neighbour(
        &self,
        ifindex: u32,
        ip: IpAddr,
        mac: MacAddr,
    ) -> Result<()> {
        let req = self
            .handle
            .neighbours()
            .add(ifindex, ip)
            .state(NlNeighbourState::Permanent)
            .link_layer_address(&mac.0)
            .replace();
        self.block_on(req.execute()).map_err(nl_err(format!(
            "add neighbour {ip} lladdr {mac} (ifindex {ifindex})"
        )))
    }

    /// Deletes the neighbour entry for `ip` on interface `ifindex`; returns `false` if absent.
    pub fn delete_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<bool> {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(ip);
        m.header.ifindex = ifindex;
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        match self.block_on(self.handle.neighbours().del(m).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(Errno::ENOENT as i32) => Ok(false),
            Err(e) => Err(nl_err(format!("delete neighbour {ip} (ifindex {ifindex})"))(e)),
        }
    }

    /// The IPv4 and IPv6 neighbour entries, optionally only those on interface `ifindex`.
    pub fn neighbours(&self, ifindex: Option<u32>) -> Result<Vec<Neighbour>> {
        let msgs = self
            .block_on(
                self.handle
                    .neighbours()
                    .get()
                    .execute()
                    .try_collect::<Vec<_>>(),
            )
            .map_err(nl_err("list neighbours"))?;
        Ok(msgs
            .iter()
            .filter(|m| ifindex.is_none_or(|i| m.header.ifindex == i))
            .filter_map(neighbour_from)
            .collect())
    }
}

// ===== message decoding =====

fn interface_from(m: &LinkMessage) -> Interface {
    let mut i = Interface {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        kind: None,
        link: None,
        master: None,
        addresses: Vec::new(),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => i.name = n.clone(),
            LinkAttribute::Address(b) => i.mac = MacAddr::from_slice(b),
            LinkAttribute::Mtu(v) => i.mtu = Some(*v),
            LinkAttribute::Link(v) => i.link = Some(*v),
            LinkAttribute::Controller(v) => i.master = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        i.kind = Some(match k {
                            InfoKind::Other(s) => s.clone(),
                            k => k.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    i
}

fn address_of(m: &AddressMessage) -> Option<IpNet> {
    let addr = m
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })?;
    IpNet::new(addr, m.header.prefix_len).ok()
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_from(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let v4 = match m.header.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    let mut dst_addr: Option<IpAddr> = None;
    let mut table = u32::from(m.header.table);
    let mut r = Route {
        dst: IpNet::default(),
        kind: RouteKind::from_u8(m.header.kind.into()),
        gateway: None,
        dev: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        scope: RouteScope::from_u8(m.header.scope.into()),
        protocol: m.header.protocol.into(),
        table: 0,
        metric: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_addr = route_addr(d),
            RouteAttribute::Gateway(g) => r.gateway = route_addr(g),
            RouteAttribute::Oif(i) => {
                r.dev = Some(names.get(i).cloned().unwrap_or_else(|| format!("if{i}")))
            }
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            _ => {}
        }
    }
    let addr = dst_addr.unwrap_or(if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    r.dst = IpNet::new(addr, m.header.destination_prefix_length).ok()?;
    r.table = table;
    // The kernel attaches IPv6 blackhole (and similar) routes to `lo`; that says nothing about
    // the route, and IPv4 ones have no device, so it is dropped for both families alike.
    if !matches!(
        r.kind,
        RouteKind::Unicast | RouteKind::Local | RouteKind::Other(_)
    ) {
        r.dev = None;
    }
    Some(r)
}

fn neighbour_from(m: &NeighbourMessage) -> Option<Neighbour> {
    let ip = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => MacAddr::from_slice(b),
        _ => None,
    });
    let state = match m.header.state {
        NlNeighbourState::Permanent => NeighbourState::Permanent,
        NlNeighbourState::Noarp => NeighbourState::Noarp,
        NlNeighbourState::Reachable => NeighbourState::Reachable,
        NlNeighbourState::Stale => NeighbourState::Stale,
        NlNeighbourState::Delay => NeighbourState::Delay,
        NlNeighbourState::Probe => NeighbourState::Probe,
        NlNeighbourState::Incomplete => NeighbourState::Incomplete,
        NlNeighbourState::Failed => NeighbourState::Failed,
        other => NeighbourState::Other(other.into()),
    };
    Some(Neighbour {
        ifindex: m.header.ifindex,
        ip,
        mac,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_validated() {
        for (name, ok) in [
            ("eth0", true),
            ("cali1234567890a", true),
            ("cali1234567890ab", false),
            ("", false),
            ("a b", false),
            ("a/b", false),
            ("a:b", false),
            ("..", false),
            ("eth0.100", true),
        ] {
            assert_eq!(validate_ifname(name).is_ok(), ok, "{name:?}");
        }
    }
}
