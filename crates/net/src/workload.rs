//! Calico-style plumbing of one workload (pod): a veth pair between the host namespace and the
//! pod's namespace, routed point-to-point with proxy ARP, with no bridge and no address on the
//! host side.
//!
//! What [`WorkloadPlumbing::setup`] leaves behind, for a pod with 10.65.0.5 and fd00:65::5:
//!
//! ```text
//! host namespace                               pod namespace
//!   caliXXXXXXXXXXX  (no IP, ee:ee:ee:ee:ee:ee)  <== veth ==>  eth0 10.65.0.5/32, fd00:65::5/128
//!   10.65.0.5 dev cali... scope link              169.254.1.1 dev eth0 scope link
//!   fd00:65::5 dev cali...                         default via 169.254.1.1 dev eth0
//!   neigh 10.65.0.5 lladdr <eth0 MAC> PERMANENT    default via fe80::ecee:eeff:feee:eeee dev eth0
//!   sysctls: proxy_arp=1 route_localnet=1 forwarding=1 neigh proxy_delay=0
//!            (v6) proxy_ndp=1 forwarding=1 accept_ra=0 accept_dad=0; ip_forward=1
//! ```
//!
//! The host answers the pod's ARP for 169.254.1.1 by proxy ARP, which the kernel does only when
//! the host itself has a route covering 169.254.1.1 (normally its default route). The static
//! neighbour entry means the host never has to ARP for the pod, so the first packet to a new
//! pod is not lost.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;

use crate::error::{NetError, Result, invalid};
use crate::netlink::{Netlink, VethSpec, validate_ifname};
use crate::netns::NetnsRef;
use crate::sysctl;
use crate::types::{Interface, MacAddr, NeighbourState, Route, RouteKind, RouteScope};

/// The pod's IPv4 next hop: a link-local address nobody owns, answered by proxy ARP.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The pod's IPv6 next hop: the host-side veth's link-local address, derived from its MAC.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// What to plumb for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// The host-side interface name, e.g. from [`crate::host_ifname`].
    pub host_ifname: String,
    /// The interface name inside the pod, normally `eth0`.
    pub container_ifname: String,
    /// The pod's IPv4 address, installed as a /32.
    pub ipv4: Option<Ipv4Addr>,
    /// The pod's IPv6 address, installed as a /128.
    pub ipv6: Option<Ipv6Addr>,
    /// The MTU of both veth ends (the kernel default, 1500, if `None`).
    pub mtu: Option<u32>,
}

impl WorkloadSpec {
    /// A spec for host interface `host_ifname` and pod interface `eth0`, with no addresses yet.
    pub fn new(host_ifname: &str) -> WorkloadSpec {
        WorkloadSpec {
            host_ifname: host_ifname.to_owned(),
            container_ifname: "eth0".to_owned(),
            ipv4: None,
            ipv6: None,
            mtu: None,
        }
    }

    /// Sets the IPv4 address.
    pub fn with_ipv4(mut self, ip: Ipv4Addr) -> WorkloadSpec {
        self.ipv4 = Some(ip);
        self
    }

    /// Sets the IPv6 address.
    pub fn with_ipv6(mut self, ip: Ipv6Addr) -> WorkloadSpec {
        self.ipv6 = Some(ip);
        self
    }

    /// Sets the MTU.
    pub fn with_mtu(mut self, mtu: u32) -> WorkloadSpec {
        self.mtu = Some(mtu);
        self
    }

    /// Checks names, addresses and MTU, with a message saying what would be valid.
    pub fn validate(&self) -> Result<()> {
        validate_ifname(&self.host_ifname)?;
        validate_ifname(&self.container_ifname)?;
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err(invalid(
                "workload spec",
                &self.host_ifname,
                "give at least one of ipv4 and ipv6",
            ));
        }
        if let Some(ip) = self.ipv4
            && (ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
        {
            return Err(invalid(
                "pod IPv4 address",
                ip.to_string(),
                "use a unicast, non-loopback address",
            ));
        }
        if let Some(ip) = self.ipv6
            && (ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_loopback()
                || ip.is_unicast_link_local())
        {
            return Err(invalid(
                "pod IPv6 address",
                ip.to_string(),
                "use a global or unique-local unicast address",
            ));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(invalid(
                "MTU",
                mtu.to_string(),
                "use a value from 68 to 65535",
            ));
        }
        Ok(())
    }

    /// The pod's addresses as host prefixes (/32 and /128).
    pub fn addresses(&self) -> Vec<IpNet> {
        let v4 = self
            .ipv4
            .map(|ip| IpNet::new(IpAddr::V4(ip), 32).expect("32 is a valid prefix"));
        let v6 = self
            .ipv6
            .map(|ip| IpNet::new(IpAddr::V6(ip), 128).expect("128 is a valid prefix"));
        v4.into_iter().chain(v6).collect()
    }

    /// The sysctls (key, value) the host namespace must have for this workload.
    pub fn host_sysctls(&self) -> Vec<(String, &'static str)> {
        let i = &self.host_ifname;
        let mut out = vec![
            (format!("net/ipv4/conf/{i}/proxy_arp"), "1"),
            (format!("net/ipv4/conf/{i}/route_localnet"), "1"),
            (format!("net/ipv4/conf/{i}/forwarding"), "1"),
            (format!("net/ipv4/neigh/{i}/proxy_delay"), "0"),
        ];
        if self.ipv6.is_some() {
            out.extend([
                (format!("net/ipv6/conf/{i}/proxy_ndp"), "1"),
                (format!("net/ipv6/conf/{i}/forwarding"), "1"),
                (format!("net/ipv6/conf/{i}/accept_ra"), "0"),
                (format!("net/ipv6/conf/{i}/accept_dad"), "0"),
            ]);
        }
        out
    }

    /// The node-wide sysctls (key, value) the host namespace must have.
    pub fn node_sysctls(&self) -> Vec<(String, &'static str)> {
        let mut out = vec![("net/ipv4/ip_forward".to_owned(), "1")];
        if self.ipv6.is_some() {
            out.push(("net/ipv6/conf/all/forwarding".to_owned(), "1"));
        }
        out
    }

    /// The routes the pod must have, in order of installation.
    pub fn container_routes(&self) -> Vec<Route> {
        let dev = self.container_ifname.as_str();
        let mut out = Vec::new();
        if self.ipv4.is_some() {
            out.push(Route::link(IpNet::from(IpAddr::V4(GATEWAY_V4)), dev));
            out.push(Route::via(
                IpNet::V4(Default::default()),
                IpAddr::V4(GATEWAY_V4),
                Some(dev),
            ));
        }
        if self.ipv6.is_some() {
            out.push(Route::via(
                IpNet::V6(Default::default()),
                IpAddr::V6(GATEWAY_V6),
                Some(dev),
            ));
        }
        out
    }

    /// The routes the host must have to the pod.
    pub fn host_routes(&self) -> Vec<Route> {
        self.addresses()
            .into_iter()
            .map(|a| Route::workload(a, &self.host_ifname))
            .collect()
    }
}

/// What [`WorkloadPlumbing::setup`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadResult {
    /// The host-side interface name.
    pub host_ifname: String,
    /// Its index in the host namespace.
    pub host_ifindex: u32,
    /// Its MAC (always `ee:ee:ee:ee:ee:ee`).
    pub host_mac: MacAddr,
    /// The pod-side interface name.
    pub container_ifname: String,
    /// Its index in the pod namespace.
    pub container_ifindex: u32,
    /// Its MAC, chosen by the kernel.
    pub container_mac: MacAddr,
}

/// How the veth pair is made. [`VethPlacement::InPlace`] is what setup uses; the other exists
/// to measure the difference (see `benches/plumbing.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VethPlacement {
    /// Create the pair from the host side with the peer placed directly in the pod namespace.
    #[default]
    InPlace,
    /// Create both ends in the host namespace, then move (and rename) the peer into the pod.
    MoveAfterCreate,
}

/// One thing [`WorkloadPlumbing::check`] found different from what setup would leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The host-side interface does not exist.
    HostInterfaceMissing {
        /// Its expected name.
        name: String,
    },
    /// The host-side interface exists but is not a veth.
    HostInterfaceNotVeth {
        /// Its name.
        name: String,
        /// Its actual kind.
        kind: Option<String>,
    },
    /// An interface is administratively down.
    InterfaceDown {
        /// "host" or "pod".
        side: &'static str,
        /// Its name.
        name: String,
    },
    /// The host-side interface's MAC is not `ee:ee:ee:ee:ee:ee`.
    HostMac {
        /// Its name.
        name: String,
        /// Its actual MAC.
        actual: Option<MacAddr>,
    },
    /// The host-side interface has an address it should not have.
    HostHasAddress {
        /// Its name.
        name: String,
        /// The stray address.
        addr: IpNet,
    },
    /// An interface's MTU differs from the spec.
    Mtu {
        /// "host" or "pod".
        side: &'static str,
        /// Its name.
        name: String,
        /// The MTU in the spec.
        want: u32,
        /// The actual MTU.
        actual: Option<u32>,
    },
    /// The pod interface is not the host interface's veth peer.
    PeerMismatch {
        /// The host-side interface.
        host: String,
        /// The pod-side interface.
        container: String,
    },
    /// A sysctl in the host namespace has the wrong value (or is missing).
    Sysctl {
        /// The key.
        key: String,
        /// The value setup writes.
        want: String,
        /// The actual value (`None` if the key does not exist).
        actual: Option<String>,
    },
    /// The host has no usable route covering 169.254.1.1, so proxy ARP will not answer the
    /// pod's ARP requests for its gateway.
    NoHostRouteToGateway {
        /// What the host's lookup found instead, if anything.
        found: Option<Route>,
    },
    /// A route on the host is missing.
    HostRouteMissing {
        /// The route that should be there.
        want: Route,
    },
    /// The host's neighbour entry for the pod is missing or wrong.
    Neighbour {
        /// The host-side interface.
        dev: String,
        /// The pod's IP.
        ip: IpAddr,
        /// The pod's MAC.
        want_mac: MacAddr,
        /// The entry found, as (MAC, state), if any.
        found: Option<(Option<MacAddr>, NeighbourState)>,
    },
    /// The pod-side interface does not exist.
    ContainerInterfaceMissing {
        /// Its expected name.
        name: String,
    },
    /// The pod interface lacks one of its addresses.
    ContainerAddressMissing {
        /// The pod interface.
        name: String,
        /// The missing address.
        addr: IpNet,
    },
    /// A route in the pod is missing.
    ContainerRouteMissing {
        /// The route that should be there.
        want: Route,
    },
    /// The pod's loopback interface is down.
    LoopbackDown,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HostInterfaceMissing { name } => {
                write!(f, "host interface {name} does not exist")
            }
            Problem::HostInterfaceNotVeth { name, kind } => {
                write!(
                    f,
                    "host interface {name} is a {} device, not a veth",
                    kind.as_deref().unwrap_or("physical")
                )
            }
            Problem::InterfaceDown { side, name } => write!(f, "{side} interface {name} is down"),
            Problem::HostMac { name, actual } => match actual {
                Some(m) => write!(
                    f,
                    "host interface {name} has MAC {m}, want {}",
                    MacAddr::CALICO_HOST
                ),
                None => write!(
                    f,
                    "host interface {name} has no MAC, want {}",
                    MacAddr::CALICO_HOST
                ),
            },
            Problem::HostHasAddress { name, addr } => {
                write!(
                    f,
                    "host interface {name} has address {addr}; the host side must have none"
                )
            }
            Problem::Mtu {
                side,
                name,
                want,
                actual,
            } => match actual {
                Some(a) => write!(f, "{side} interface {name} has MTU {a}, want {want}"),
                None => write!(f, "{side} interface {name} reports no MTU, want {want}"),
            },
            Problem::PeerMismatch { host, container } => {
                write!(
                    f,
                    "pod interface {container} is not the veth peer of host interface {host}"
                )
            }
            Problem::Sysctl { key, want, actual } => match actual {
                Some(a) => write!(f, "sysctl {key} is {a}, want {want}"),
                None => write!(f, "sysctl {key} does not exist, want {want}"),
            },
            Problem::NoHostRouteToGateway { found } => {
                write!(
                    f,
                    "the host has no usable route covering {GATEWAY_V4}, so proxy ARP will not answer the pod's \
                     ARP for its gateway (add a default route on the host)"
                )?;
                if let Some(r) = found {
                    write!(f, "; lookup found: {r}")?;
                }
                Ok(())
            }
            Problem::HostRouteMissing { want } => write!(f, "host route missing: {want}"),
            Problem::Neighbour {
                dev,
                ip,
                want_mac,
                found,
            } => match found {
                None => write!(
                    f,
                    "host neighbour entry missing: {ip} lladdr {want_mac} dev {dev} PERMANENT"
                ),
                Some((mac, state)) => {
                    let mac = mac.map_or_else(|| "none".to_owned(), |m| m.to_string());
                    write!(
                        f,
                        "host neighbour entry {ip} dev {dev} is lladdr {mac} {state}, want lladdr {want_mac} PERMANENT"
                    )
                }
            },
            Problem::ContainerInterfaceMissing { name } => {
                write!(f, "pod interface {name} does not exist")
            }
            Problem::ContainerAddressMissing { name, addr } => {
                write!(f, "pod interface {name} lacks address {addr}")
            }
            Problem::ContainerRouteMissing { want } => write!(f, "pod route missing: {want}"),
            Problem::LoopbackDown => f.write_str("pod interface lo is down"),
        }
    }
}

/// The outcome of [`WorkloadPlumbing::check`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadCheck {
    /// Everything that differs; empty when the plumbing is as setup leaves it.
    pub problems: Vec<Problem>,
}

impl WorkloadCheck {
    /// Whether nothing differs.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for WorkloadCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return f.write_str("workload plumbing is as expected");
        }
        for (n, p) in self.problems.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "- {p}")?;
        }
        Ok(())
    }
}

/// Plumbs workloads from one host namespace; keeps its netlink session for reuse.
#[derive(Debug)]
pub struct WorkloadPlumbing {
    host: Netlink,
}

impl WorkloadPlumbing {
    /// Opens a netlink session in the host namespace `host_ns`.
    pub fn new(host_ns: &NetnsRef) -> Result<WorkloadPlumbing> {
        Ok(WorkloadPlumbing {
            host: Netlink::open(host_ns)?,
        })
    }

    /// The session in the host namespace.
    pub fn host(&self) -> &Netlink {
        &self.host
    }

    /// Plumbs the workload whose namespace file is `pod_netns`; see the module documentation
    /// for the result. A stale host interface of the same name is deleted first. On failure,
    /// whatever was created is removed again.
    pub fn setup(&self, pod_netns: &Path, spec: &WorkloadSpec) -> Result<WorkloadResult> {
        self.setup_with(pod_netns, spec, VethPlacement::InPlace)
    }

    /// Like [`WorkloadPlumbing::setup`], choosing how the veth pair is made.
    pub fn setup_with(
        &self,
        pod_netns: &Path,
        spec: &WorkloadSpec,
        placement: VethPlacement,
    ) -> Result<WorkloadResult> {
        spec.validate()?;
        let pod_ns = NetnsRef::path(pod_netns);
        let pod = self.host.open_sibling(&pod_ns)?;
        if self.host.delete_link(&spec.host_ifname)? {
            tracing::warn!(ifname = %spec.host_ifname, "deleted a stale host-side interface before setup");
        }
        self.create_veth(&pod, &pod_ns, spec, placement)?;
        match self.plumb(&pod, spec) {
            Ok(r) => {
                tracing::info!(
                    host_ifname = %r.host_ifname,
                    container_mac = %r.container_mac,
                    ipv4 = ?spec.ipv4,
                    ipv6 = ?spec.ipv6,
                    "workload plumbed"
                );
                Ok(r)
            }
            Err(e) => {
                if let Err(cleanup) = self.host.delete_link(&spec.host_ifname) {
                    tracing::warn!(error = %cleanup, "could not remove a half-plumbed workload interface");
                }
                Err(e)
            }
        }
    }

    fn create_veth(
        &self,
        pod: &Netlink,
        pod_ns: &NetnsRef,
        spec: &WorkloadSpec,
        placement: VethPlacement,
    ) -> Result<()> {
        let mut veth = VethSpec::new(&spec.host_ifname, &spec.container_ifname);
        veth.mac = Some(MacAddr::CALICO_HOST);
        veth.mtu = spec.mtu;
        match placement {
            VethPlacement::InPlace => {
                veth.peer_netns = Some(pod_ns.clone());
                self.host.add_veth(&veth)?;
                if let Err(e) = pod.set_up(&spec.container_ifname) {
                    let _ = self.host.delete_link(&spec.host_ifname);
                    return Err(e);
                }
                Ok(())
            }
            VethPlacement::MoveAfterCreate => {
                // A temporary peer name unique in the host namespace: the host name with its
                // first character replaced.
                let tmp: String = std::iter::once('t')
                    .chain(spec.host_ifname.chars().skip(1))
                    .collect();
                veth.peer_name.clone_from(&tmp);
                self.host.add_veth(&veth)?;
                let moved = self
                    .host
                    .move_to_netns(&tmp, pod_ns, Some(&spec.container_ifname))
                    .and_then(|()| pod.set_up(&spec.container_ifname));
                if let Err(e) = moved {
                    let _ = self.host.delete_link(&spec.host_ifname);
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    fn plumb(&self, pod: &Netlink, spec: &WorkloadSpec) -> Result<WorkloadResult> {
        let host_if = &spec.host_ifname;
        // Host-side settings go in before the interface comes up, so that IPv6 never starts
        // duplicate address detection on its link-local address.
        let host_sysctls = spec.host_sysctls();
        let node_sysctls = spec.node_sysctls();
        self.host.in_ns_same_thread(|| -> Result<()> {
            for (k, v) in &host_sysctls {
                sysctl::write(k, v)?;
            }
            for (k, v) in &node_sysctls {
                sysctl::ensure(k, v)?;
            }
            Ok(())
        })??;
        self.host.set_up(host_if)?;

        let host_link = self
            .host
            .link(host_if)?
            .ok_or_else(|| self.no_such(host_if))?;
        let cont_link =
            pod.link(&spec.container_ifname)?
                .ok_or_else(|| NetError::NoSuchInterface {
                    name: spec.container_ifname.clone(),
                    netns: pod.netns().to_string(),
                })?;
        let container_mac = cont_link.mac.ok_or_else(|| {
            invalid(
                "pod interface",
                &spec.container_ifname,
                "it has no MAC address; a veth always has one",
            )
        })?;

        // The pod side: loopback, addresses, then routes (the gateway route first, since the
        // default route needs it).
        pod.set_up("lo")?;
        for addr in spec.addresses() {
            pod.add_address_index(cont_link.index, addr)?;
        }
        for route in spec.container_routes() {
            pod.replace_route_oif(&route, Some(cont_link.index))?;
        }

        // The host side: a route and a static neighbour entry per pod address.
        for route in spec.host_routes() {
            self.host.replace_route_oif(&route, Some(host_link.index))?;
        }
        for addr in spec.addresses() {
            self.host
                .replace_permanent_neighbour(host_link.index, addr.addr(), container_mac)?;
        }

        Ok(WorkloadResult {
            host_ifname: host_if.clone(),
            host_ifindex: host_link.index,
            host_mac: host_link.mac.unwrap_or(MacAddr::CALICO_HOST),
            container_ifname: spec.container_ifname.clone(),
            container_ifindex: cont_link.index,
            container_mac,
        })
    }

    fn no_such(&self, name: &str) -> NetError {
        NetError::NoSuchInterface {
            name: name.to_owned(),
            netns: self.host.netns().to_string(),
        }
    }

    /// Removes a workload's plumbing: deletes the host-side veth, which takes the pod end with
    /// it, and the kernel drops the routes and neighbour entries through it. Returns whether
    /// there was anything to delete; an absent interface is not an error.
    pub fn teardown(&self, host_ifname: &str) -> Result<bool> {
        let existed = self.host.delete_link(host_ifname)?;
        tracing::info!(host_ifname, existed, "workload unplumbed");
        Ok(existed)
    }

    /// Reads back everything setup installs for `spec` and reports what differs.
    pub fn check(&self, pod_netns: &Path, spec: &WorkloadSpec) -> Result<WorkloadCheck> {
        spec.validate()?;
        let mut problems = Vec::new();
        let host_if = &spec.host_ifname;
        let host_link = self.host.interface(host_if)?;

        // Per-interface sysctls only mean something while the interface exists; the node-wide
        // ones are always checked.
        let mut wanted = if host_link.is_some() {
            spec.host_sysctls()
        } else {
            Vec::new()
        };
        wanted.extend(spec.node_sysctls());
        let actual = self.host.in_ns_same_thread(|| {
            wanted
                .iter()
                .map(|(k, _)| sysctl::read_opt(k))
                .collect::<Result<Vec<_>>>()
        })??;

        match &host_link {
            None => problems.push(Problem::HostInterfaceMissing {
                name: host_if.clone(),
            }),
            Some(l) => {
                if l.kind.as_deref() != Some("veth") {
                    problems.push(Problem::HostInterfaceNotVeth {
                        name: host_if.clone(),
                        kind: l.kind.clone(),
                    });
                }
                if !l.up {
                    problems.push(Problem::InterfaceDown {
                        side: "host",
                        name: host_if.clone(),
                    });
                }
                if l.mac != Some(MacAddr::CALICO_HOST) {
                    problems.push(Problem::HostMac {
                        name: host_if.clone(),
                        actual: l.mac,
                    });
                }
                for a in &l.addresses {
                    let link_local =
                        matches!(a.addr(), IpAddr::V6(v6) if v6.is_unicast_link_local());
                    if !link_local {
                        problems.push(Problem::HostHasAddress {
                            name: host_if.clone(),
                            addr: *a,
                        });
                    }
                }
                mtu_problem(&mut problems, "host", l, spec.mtu);
            }
        }
        for ((key, want), actual) in wanted.iter().zip(actual) {
            if actual.as_deref() != Some(*want) {
                problems.push(Problem::Sysctl {
                    key: key.clone(),
                    want: (*want).to_owned(),
                    actual,
                });
            }
        }

        if spec.ipv4.is_some() {
            match self.host.route_get(IpAddr::V4(GATEWAY_V4))? {
                Some(r)
                    if r.kind == RouteKind::Unicast
                        && r.dev.as_deref() != Some(host_if.as_str()) => {}
                found => problems.push(Problem::NoHostRouteToGateway { found }),
            }
        }

        let pod = self.host.open_sibling(&NetnsRef::path(pod_netns))?;
        let cont_link = pod.interface(&spec.container_ifname)?;
        match &cont_link {
            None => problems.push(Problem::ContainerInterfaceMissing {
                name: spec.container_ifname.clone(),
            }),
            Some(c) => {
                if !c.up {
                    problems.push(Problem::InterfaceDown {
                        side: "pod",
                        name: c.name.clone(),
                    });
                }
                mtu_problem(&mut problems, "pod", c, spec.mtu);
                if let Some(h) = &host_link
                    && (h.link != Some(c.index) || c.link != Some(h.index))
                {
                    problems.push(Problem::PeerMismatch {
                        host: host_if.clone(),
                        container: c.name.clone(),
                    });
                }
                for addr in spec.addresses() {
                    if !c.addresses.contains(&addr) {
                        problems.push(Problem::ContainerAddressMissing {
                            name: c.name.clone(),
                            addr,
                        });
                    }
                }
            }
        }
        if pod.link("lo")?.is_some_and(|lo| !lo.up) {
            problems.push(Problem::LoopbackDown);
        }
        if cont_link.is_some() {
            let routes = pod.routes()?;
            for want in spec.container_routes() {
                if !routes.iter().any(|r| same_route(r, &want)) {
                    problems.push(Problem::ContainerRouteMissing { want });
                }
            }
        }

        if let Some(h) = &host_link {
            let routes = self.host.routes()?;
            for want in spec.host_routes() {
                if !routes.iter().any(|r| same_route(r, &want)) {
                    problems.push(Problem::HostRouteMissing { want });
                }
            }
            if let Some(c) = &cont_link
                && let Some(want_mac) = c.mac
            {
                let neighbours = self.host.neighbours(Some(h.index))?;
                for addr in spec.addresses() {
                    let ip = addr.addr();
                    let found = neighbours.iter().find(|n| n.ip == ip);
                    let good = found.is_some_and(|n| {
                        n.mac == Some(want_mac) && n.state == NeighbourState::Permanent
                    });
                    if !good {
                        problems.push(Problem::Neighbour {
                            dev: host_if.clone(),
                            ip,
                            want_mac,
                            found: found.map(|n| (n.mac, n.state)),
                        });
                    }
                }
            }
        }
        Ok(WorkloadCheck { problems })
    }
}

fn mtu_problem(problems: &mut Vec<Problem>, side: &'static str, l: &Interface, want: Option<u32>) {
    if let Some(want) = want
        && l.mtu != Some(want)
    {
        problems.push(Problem::Mtu {
            side,
            name: l.name.clone(),
            want,
            actual: l.mtu,
        });
    }
}

/// Whether `have` does what `want` asks: same destination, kind, gateway, device, table and
/// (for IPv4; the kernel keeps no scope for IPv6 routes) scope. The protocol and metric are
/// not compared, so routes made by hand (or by Calico) count too.
fn same_route(have: &Route, want: &Route) -> bool {
    let scope_ok =
        want.dst.addr().is_ipv6() || want.scope == RouteScope::Universe || have.scope == want.scope;
    have.dst == want.dst
        && have.kind == want.kind
        && have.gateway == want.gateway
        && have.dev == want.dev
        && have.table == want.table
        && scope_ok
}

/// Plumbs one workload from `host_ns`; see [`WorkloadPlumbing::setup`].
pub fn setup_workload(
    host_ns: &NetnsRef,
    pod_netns: &Path,
    spec: &WorkloadSpec,
) -> Result<WorkloadResult> {
    WorkloadPlumbing::new(host_ns)?.setup(pod_netns, spec)
}

/// Removes one workload's plumbing; see [`WorkloadPlumbing::teardown`].
pub fn teardown_workload(host_ns: &NetnsRef, host_ifname: &str) -> Result<bool> {
    WorkloadPlumbing::new(host_ns)?.teardown(host_ifname)
}

/// Reports how one workload's plumbing differs from the spec; see [`WorkloadPlumbing::check`].
pub fn check_workload(
    host_ns: &NetnsRef,
    pod_netns: &Path,
    spec: &WorkloadSpec,
) -> Result<WorkloadCheck> {
    WorkloadPlumbing::new(host_ns)?.check(pod_netns, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        WorkloadSpec::new("cali1234567890a")
            .with_ipv4("10.65.0.5".parse().unwrap())
            .with_ipv6("fd00:65::5".parse().unwrap())
    }

    #[test]
    fn gateway_v6_is_the_link_local_of_the_host_mac() {
        assert_eq!(GATEWAY_V6, MacAddr::CALICO_HOST.ipv6_link_local());
    }

    #[test]
    fn specs_are_validated() {
        let cases: Vec<(WorkloadSpec, bool)> = vec![
            (spec(), true),
            (
                WorkloadSpec::new("cali1").with_ipv4("10.0.0.1".parse().unwrap()),
                true,
            ),
            (WorkloadSpec::new("cali1"), false),
            (
                WorkloadSpec::new("cali1234567890ab").with_ipv4("10.0.0.1".parse().unwrap()),
                false,
            ),
            (
                WorkloadSpec::new("cali1").with_ipv4("0.0.0.0".parse().unwrap()),
                false,
            ),
            (
                WorkloadSpec::new("cali1").with_ipv4("224.0.0.1".parse().unwrap()),
                false,
            ),
            (
                WorkloadSpec::new("cali1").with_ipv6("fe80::1".parse().unwrap()),
                false,
            ),
            (
                WorkloadSpec::new("cali1").with_ipv6("::1".parse().unwrap()),
                false,
            ),
            (spec().with_mtu(1440), true),
            (spec().with_mtu(10), false),
            (spec().with_mtu(70000), false),
        ];
        for (s, ok) in cases {
            assert_eq!(s.validate().is_ok(), ok, "{s:?}");
        }
    }

    #[test]
    fn the_spec_lists_what_setup_installs() {
        let s = spec();
        let routes: Vec<String> = s
            .container_routes()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            routes,
            [
                "169.254.1.1/32 dev eth0 proto 80 scope link",
                "default via 169.254.1.1 dev eth0 proto 80",
                "default via fe80::ecee:eeff:feee:eeee dev eth0 proto 80",
            ]
        );
        let routes: Vec<String> = s.host_routes().iter().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            [
                "10.65.0.5/32 dev cali1234567890a proto 80 scope link metric 1024",
                "fd00:65::5/128 dev cali1234567890a proto 80 scope link metric 1024"
            ]
        );
        let keys: Vec<String> = s
            .host_sysctls()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert!(keys.contains(&"net/ipv4/conf/cali1234567890a/proxy_arp=1".to_owned()));
        assert!(keys.contains(&"net/ipv4/neigh/cali1234567890a/proxy_delay=0".to_owned()));
        assert!(keys.contains(&"net/ipv6/conf/cali1234567890a/accept_ra=0".to_owned()));
        let v4_only = WorkloadSpec::new("cali1").with_ipv4("10.0.0.1".parse().unwrap());
        assert_eq!(v4_only.host_sysctls().len(), 4);
        assert_eq!(v4_only.node_sysctls().len(), 1);
    }

    #[test]
    fn problems_read_as_one_line_each() {
        let p = Problem::Sysctl {
            key: "net/ipv4/conf/cali1/proxy_arp".into(),
            want: "1".into(),
            actual: Some("0".into()),
        };
        assert_eq!(
            p.to_string(),
            "sysctl net/ipv4/conf/cali1/proxy_arp is 0, want 1"
        );
        let check = WorkloadCheck {
            problems: vec![p, Problem::LoopbackDown],
        };
        assert_eq!(
            check.to_string(),
            "- sysctl net/ipv4/conf/cali1/proxy_arp is 0, want 1\n- pod interface lo is down"
        );
        assert!(!check.is_ok());
        assert!(WorkloadCheck::default().is_ok());
    }
}
