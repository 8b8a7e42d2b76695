//! The reachability matrix: for every client and server endpoint, whether a connection to the
//! server's port is allowed, decided by the reference evaluator.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use serde::Serialize;

use crate::eval::{Flow, FlowError, ICMP, ICMPV6, protocol_name};
use crate::input::PodPorts;
use crate::snapshot::{CompiledRule, EndpointKind, LabelSet, Snapshot};

/// One matrix, in the stable JSON schema of `gingham reach -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub port: Option<u16>,
    pub protocol: String,
    /// Rows and columns, in order.
    pub endpoints: Vec<String>,
    /// client → server → allowed.
    pub allowed: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Matrix {
    pub fn get(&self, from: &str, to: &str) -> Option<bool> {
        self.allowed.get(from)?.get(to).copied()
    }
}

/// The endpoints a matrix covers: every workload with an address and every host endpoint, by name.
pub fn matrix_endpoints(snap: &Snapshot) -> Vec<String> {
    snap.endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Host || !e.ips.is_empty())
        .map(|e| e.name.clone())
        .collect()
}

/// The matrix for one protocol and port (no port for ICMP and other port-less protocols).
///
/// Endpoints that no verdict can tell apart ([`classes`]: workloads with the same node,
/// namespace, labels, profiles and named ports, whose addresses fall in the same CIDRs of every
/// rule, network set, pool and failsafe entry) share their row and column: the evaluator
/// decides one flow per pair of classes (and each endpoint's flow to itself), and the cells of
/// the other members are copies. [`matrix_each`] decides every cell instead; both agree.
pub fn matrix(
    snap: &Snapshot,
    endpoints: &[String],
    protocol: u8,
    port: Option<u16>,
) -> Result<Matrix, FlowError> {
    let grid = Grid::decide(snap, endpoints, protocol, port)?;
    let mut allowed = BTreeMap::new();
    for (i, from) in endpoints.iter().enumerate() {
        let row: BTreeMap<String, bool> = endpoints
            .iter()
            .enumerate()
            .map(|(j, to)| (to.clone(), grid.allowed(i, j)))
            .collect();
        allowed.insert(from.clone(), row);
    }
    Ok(Matrix {
        port,
        protocol: protocol_name(protocol),
        endpoints: endpoints.to_vec(),
        allowed,
    })
}

/// The cells of a matrix by position in its endpoint list: one verdict per pair of classes
/// ([`classes`]) and one per endpoint's flow to itself.
pub struct Grid {
    class: Vec<usize>,
    /// class → class → allowed (None: the class has one member, so no such flow exists).
    table: Vec<Vec<Option<bool>>>,
    itself: Vec<bool>,
}

impl Grid {
    /// Decides the cells of `endpoints` × `endpoints` with the reference evaluator.
    pub fn decide(
        snap: &Snapshot,
        endpoints: &[String],
        protocol: u8,
        port: Option<u16>,
    ) -> Result<Grid, FlowError> {
        let class = classes(snap, endpoints);
        let count = class.iter().max().map_or(0, |m| m + 1);
        // Up to two members of each class: a flow between two members of one class needs both.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (i, &c) in class.iter().enumerate() {
            if members[c].len() < 2 {
                members[c].push(i);
            }
        }
        let cell = |from: usize, to: usize| {
            allowed(snap, &endpoints[from], &endpoints[to], protocol, port)
        };
        let table = in_parallel(&(0..count).collect::<Vec<_>>(), |&c1| {
            let from = members[c1][0];
            (0..count)
                .map(|c2| {
                    let to = if c1 == c2 {
                        members[c2].get(1).copied()
                    } else {
                        Some(members[c2][0])
                    };
                    to.map(|to| cell(from, to)).transpose()
                })
                .collect()
        })?;
        let itself = in_parallel(&(0..endpoints.len()).collect::<Vec<_>>(), |&i| cell(i, i))?;
        Ok(Grid {
            class,
            table,
            itself,
        })
    }

    /// Whether the `i`th endpoint may connect to the `j`th.
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        if i == j {
            self.itself[i]
        } else {
            self.table[self.class[i]][self.class[j]].unwrap_or(false)
        }
    }
}

/// The matrix with every cell decided by the evaluator (no classes): what [`matrix`] must equal.
pub fn matrix_each(
    snap: &Snapshot,
    endpoints: &[String],
    protocol: u8,
    port: Option<u16>,
) -> Result<Matrix, FlowError> {
    let rows = in_parallel(endpoints, |from| {
        endpoints
            .iter()
            .map(|to| Ok((to.clone(), allowed(snap, from, to, protocol, port)?)))
            .collect::<Result<BTreeMap<String, bool>, FlowError>>()
    })?;
    Ok(Matrix {
        port,
        protocol: protocol_name(protocol),
        endpoints: endpoints.to_vec(),
        allowed: endpoints.iter().cloned().zip(rows).collect(),
    })
}

/// Whether the reference evaluator lets `from` connect to `to`.
fn allowed(
    snap: &Snapshot,
    from: &str,
    to: &str,
    protocol: u8,
    port: Option<u16>,
) -> Result<bool, FlowError> {
    let flow = Flow::between_endpoints(from, to, protocol, port);
    match snap.verdict(&flow) {
        Ok(v) => Ok(v.allowed),
        // An endpoint without an IPv4 address cannot take part in an IPv4 flow.
        Err(FlowError::NoAddress(..)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `f` over `items`, split over the machine's cores (items are independent), in order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, FlowError> + Sync,
) -> Result<Vec<R>, FlowError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = items.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<R>, FlowError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                sc.spawn(move || part.iter().map(f).collect::<Result<Vec<_>, _>>())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reach worker panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// What policy can see of a workload: two workloads with equal keys get the same verdict as
/// the source (and as the destination) of any flow with other endpoints.
#[derive(PartialEq, Eq, Hash)]
struct ClassKey<'a> {
    node: &'a str,
    namespace: Option<&'a str>,
    labels: &'a LabelSet,
    effective_labels: &'a LabelSet,
    profiles: &'a [String],
    ports: Vec<(&'a str, u8, u16)>,
    /// Whether the address is in each CIDR of [`cidrs`].
    within: Vec<bool>,
}

/// The class of each of `endpoints` (numbered from 0 in order of first appearance): workloads
/// policy cannot tell apart share one; host endpoints, names that are ambiguous, and workloads
/// whose IPv4 address another endpoint or a node also has are alone in theirs.
pub fn classes(snap: &Snapshot, endpoints: &[String]) -> Vec<usize> {
    let cidrs = cidrs(snap);
    let node_ips: HashSet<IpAddr> = snap
        .nodes
        .values()
        .flat_map(|n| n.ips.iter().chain(&n.tunnel_ips).copied())
        .collect();
    let key = |name: &str| -> Option<ClassKey<'_>> {
        let mut named = snap.endpoints_named(name);
        let e = named.next()?;
        if named.next().is_some() || e.kind != EndpointKind::Workload {
            return None;
        }
        let ip = e.ip(false)?;
        if node_ips.contains(&ip) || snap.endpoints_with_ip(ip).nth(1).is_some() {
            return None;
        }
        let mut ports: Vec<(&str, u8, u16)> = e
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol, p.port))
            .collect();
        ports.sort_unstable();
        Some(ClassKey {
            node: &e.node,
            namespace: e.namespace.as_deref(),
            labels: &e.labels,
            effective_labels: &e.effective_labels,
            profiles: &e.profiles,
            ports,
            within: cidrs.iter().map(|c| c.contains(&ip)).collect(),
        })
    };
    let mut seen: HashMap<ClassKey<'_>, usize> = HashMap::new();
    let mut next = 0;
    endpoints
        .iter()
        .map(|name| {
            let class = match key(name) {
                Some(k) => *seen.entry(k).or_insert(next),
                None => next,
            };
            if class == next {
                next += 1;
            }
            class
        })
        .collect()
}

/// Every CIDR a verdict may test an address against: rules' `nets` and `notNets` (enforced and
/// staged policies, profiles), network sets, IP pools (encapsulation) and failsafe entries.
fn cidrs(snap: &Snapshot) -> Vec<IpNet> {
    let mut out = BTreeSet::new();
    let mut rules = |rules: &[CompiledRule]| {
        for r in rules {
            for e in [&r.source, &r.destination] {
                out.extend(e.nets.iter().chain(&e.not_nets).copied());
            }
        }
    };
    for p in snap
        .policies
        .iter()
        .chain(snap.staged_view.iter().flatten())
    {
        rules(&p.ingress);
        rules(&p.egress);
    }
    for p in snap.profiles.values() {
        rules(&p.ingress);
        rules(&p.egress);
    }
    for n in &snap.netsets {
        out.extend(n.nets.iter().copied());
    }
    out.extend(snap.pools.iter().map(|p| p.cidr));
    let felix = &snap.felix;
    out.extend(
        felix
            .failsafe_inbound
            .iter()
            .chain(&felix.failsafe_outbound)
            .filter_map(|f| f.net),
    );
    out.into_iter().collect()
}

/// Every (protocol, port) the endpoints declare: pod container ports (from the input) and the
/// ports on workload and host endpoints.
pub fn declared_ports(snap: &Snapshot, pod_ports: &PodPorts) -> Vec<(u8, u16)> {
    let mut out = BTreeSet::new();
    for ports in pod_ports.values() {
        out.extend(ports.iter().copied());
    }
    for e in &snap.endpoints {
        out.extend(e.ports.iter().map(|p| (p.protocol, p.port)));
    }
    out.into_iter().collect()
}

/// The (protocol, port) pairs a reachability question covers (`reach`, `diff`): the port asked
/// for; without one, the protocol alone when it has no ports (ICMP, ICMPv6), else every port
/// the servers declare ([`declared_ports`]; empty when they declare none).
pub fn probes(protocol: u8, port: Option<u16>, declared: &[(u8, u16)]) -> Vec<(u8, Option<u16>)> {
    match port {
        Some(p) => vec![(protocol, Some(p))],
        None if matches!(protocol, ICMP | ICMPV6) => vec![(protocol, None)],
        None => declared.iter().map(|&(pr, p)| (pr, Some(p))).collect(),
    }
}

/// The matrix as a table: rows are clients, columns servers; `✓` allowed, `✗` denied.
pub fn render_table(m: &Matrix) -> String {
    render_table_with(m, &|from, to| {
        if m.get(from, to) == Some(true) {
            "✓"
        } else {
            "✗"
        }
    })
}

/// The table of [`render_table`] with the mark of each cell (at most 3 characters) chosen by
/// `mark(from, to)`: `gingham lab probe` shows what the packets did in reach's layout.
pub fn render_table_with(m: &Matrix, mark: &dyn Fn(&str, &str) -> &'static str) -> String {
    let title = match m.port {
        Some(p) => format!("{}/{p}", m.protocol),
        None => m.protocol.clone(),
    };
    let corner = format!("{title} from\\to");
    let width = m
        .endpoints
        .iter()
        .map(|e| e.chars().count())
        .chain([corner.chars().count()])
        .max()
        .unwrap_or(4);
    let mut out = format!("{corner:<width$}");
    for (i, _) in m.endpoints.iter().enumerate() {
        out.push_str(&format!("  {:>3}", i + 1));
    }
    out.push('\n');
    for (i, from) in m.endpoints.iter().enumerate() {
        let _ = i;
        out.push_str(&format!("{from:<width$}"));
        for to in &m.endpoints {
            out.push_str(&format!("  {:>3}", mark(from, to)));
        }
        out.push('\n');
    }
    out.push_str("columns: ");
    let cols: Vec<String> = m
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{} {e}", i + 1))
        .collect();
    out.push_str(&cols.join(", "));
    out.push('\n');
    out
}
