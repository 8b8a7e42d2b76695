//! The host side of a node's workloads, kept true by the agent as felix keeps it: the node's
//! forwarding sysctls; for each local workload whose interface exists, its per-interface
//! sysctls (proxy ARP and friends), the /32 (/128) route to each address through its interface
//! and the permanent neighbour entry; and a blackhole route for each IPAM block the node owns.
//!
//! [`repair`] reads the routes and neighbours once, changes only what differs, and says what it
//! changed. Interfaces themselves are the CNI plugin's: a workload whose interface is missing is
//! left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::netlink::Netlink;
use crate::types::{MacAddr, NeighbourState, ROUTE_PROTOCOL, Route, RouteKind};
use crate::workload::WorkloadSpec;
use crate::{Result, sysctl};

/// One local workload as the host must see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostWorkload {
    /// The host-side interface (`cali…`).
    pub ifname: String,
    /// Its addresses (single-address networks: /32, /128).
    pub addresses: Vec<IpNet>,
    /// The pod side's MAC, when known: the static neighbour entry.
    pub mac: Option<MacAddr>,
}

/// Everything a node's host side must have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    pub workloads: Vec<HostWorkload>,
    /// The node's IPAM blocks: addresses of them no workload holds go nowhere. `None` when
    /// they are not known (blackhole routes are then left as they are).
    pub blackholes: Option<BTreeSet<IpNet>>,
}

/// Makes the host side match `want` in the namespace `nl` speaks to; returns what it changed,
/// one line each (empty when everything was right). Blackhole routes of ours for blocks the
/// node no longer owns are removed.
pub fn repair(nl: &Netlink, want: &HostState) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let interfaces: BTreeMap<String, u32> = nl
        .interfaces()?
        .into_iter()
        .map(|i| (i.name, i.index))
        .collect();
    let routes = nl.routes()?;
    let neighbours = nl.neighbours(None)?;
    let v6 = want
        .workloads
        .iter()
        .any(|w| w.addresses.iter().any(|a| a.addr().is_ipv6()));

    // Sysctls: node-wide, then per present interface.
    let mut sysctls: Vec<(String, &'static str)> = Vec::new();
    for w in &want.workloads {
        if !interfaces.contains_key(&w.ifname) {
            continue;
        }
        let mut spec = WorkloadSpec::new(&w.ifname);
        for a in &w.addresses {
            spec = match a.addr() {
                IpAddr::V4(ip) => spec.with_ipv4(ip),
                IpAddr::V6(ip) => spec.with_ipv6(ip),
            };
        }
        sysctls.extend(spec.host_sysctls());
    }
    sysctls.push(("net/ipv4/ip_forward".into(), "1"));
    if v6 {
        sysctls.push(("net/ipv6/conf/all/forwarding".into(), "1"));
    }
    let changed = nl.in_ns_same_thread(|| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (key, value) in &sysctls {
            if sysctl::ensure(key, value)? {
                out.push(format!("sysctl {key} set to {value}"));
            }
        }
        Ok(out)
    })??;
    done.extend(changed);

    for w in &want.workloads {
        let Some(&index) = interfaces.get(&w.ifname) else {
            continue;
        };
        for a in &w.addresses {
            let want = Route::workload(*a, &w.ifname);
            let to_pod = |r: &&Route| {
                r.dst == *a
                    && r.kind == RouteKind::Unicast
                    && r.gateway.is_none()
                    && r.dev.as_deref() == Some(w.ifname.as_str())
            };
            if !routes
                .iter()
                .filter(to_pod)
                .any(|r| r.metric == want.metric)
            {
                nl.replace_route(&want)?;
                done.push(format!("route {a} dev {} restored", w.ifname));
            }
            // The same route at another metric (made before routes had felix's metric, or by
            // hand) would be exported by BIRD: only ours stays.
            for stale in routes
                .iter()
                .filter(to_pod)
                .filter(|r| r.metric != want.metric)
            {
                nl.delete_route(stale)?;
                done.push(format!(
                    "route {a} dev {} at metric {} removed (workload routes use {})",
                    w.ifname,
                    stale.metric.unwrap_or(0),
                    crate::types::WORKLOAD_ROUTE_METRIC
                ));
            }
            if let Some(mac) = w.mac {
                let ip = a.addr();
                let has_neighbour = neighbours.iter().any(|n| {
                    n.ifindex == index
                        && n.ip == ip
                        && n.mac == Some(mac)
                        && n.state == NeighbourState::Permanent
                });
                if !has_neighbour {
                    nl.replace_permanent_neighbour(index, ip, mac)?;
                    done.push(format!(
                        "neighbour {ip} lladdr {mac} dev {} restored",
                        w.ifname
                    ));
                }
            }
        }
    }

    let Some(blackholes) = &want.blackholes else {
        return Ok(done);
    };
    for block in blackholes {
        let present = routes
            .iter()
            .any(|r| r.dst == *block && r.kind == RouteKind::Blackhole);
        if !present {
            nl.replace_blackhole_route(*block)?;
            done.push(format!("blackhole route {block} restored"));
        }
    }
    for r in &routes {
        if r.kind == RouteKind::Blackhole
            && r.protocol == ROUTE_PROTOCOL
            && !blackholes.contains(&r.dst)
        {
            nl.delete_blackhole_route(r.dst)?;
            done.push(format!(
                "blackhole route {} removed (block no longer ours)",
                r.dst
            ));
        }
    }
    Ok(done)
}
