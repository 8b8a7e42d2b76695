//! The reachability matrix: for every client and server endpoint, whether a connection to the
//! server's port is allowed, decided by the reference evaluator.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use serde::Serialize;

use crate::eval::{Endpoints, Evaluator, Flow, FlowError, ICMP, ICMPV6, protocol_name};
use crate::input::PodPorts;
use crate::snapshot::{CompiledRule, EndpointKind, LabelSet, Snapshot};

/// One matrix, in the stable JSON schema of `gingham reach -o json`: `port`, `protocol`,
/// `endpoints` (rows and columns, in order) and `allowed` (client → server → allowed, by name).
///
/// The cells are kept by position ([`Grid`]: one verdict per pair of classes), not as a map of
/// names: a million cells cost nothing to hold, and names are written only when printed.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub port: Option<u16>,
    pub protocol: String,
    /// Rows and columns, in order.
    pub endpoints: Vec<String>,
    cells: Grid,
    /// Each name's position in `endpoints` (the last, should a name repeat).
    at: HashMap<String, usize>,
}

impl Matrix {
    /// A matrix whose cell (`i`, `j`) is `allowed(i, j)` (positions in `endpoints`).
    pub fn from_fn(
        port: Option<u16>,
        protocol: String,
        endpoints: Vec<String>,
        allowed: impl Fn(usize, usize) -> bool,
    ) -> Matrix {
        let n = endpoints.len();
        let cells = match Grid::every_cell(n, |i| {
            Ok::<_, std::convert::Infallible>((0..n).map(|j| allowed(i, j)).collect())
        }) {
            Ok(cells) => cells,
            Err(never) => match never {},
        };
        Matrix::new(port, protocol, endpoints, cells)
    }

    fn new(port: Option<u16>, protocol: String, endpoints: Vec<String>, cells: Grid) -> Matrix {
        let at = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.clone(), i))
            .collect();
        Matrix {
            port,
            protocol,
            endpoints,
            cells,
            at,
        }
    }

    /// Whether `from` may connect to `to` (None: not in the matrix).
    pub fn get(&self, from: &str, to: &str) -> Option<bool> {
        Some(self.cells.allowed(*self.at.get(from)?, *self.at.get(to)?))
    }

    /// Whether the `i`th endpoint may connect to the `j`th.
    pub fn allowed_at(&self, i: usize, j: usize) -> bool {
        self.cells.allowed(i, j)
    }

    /// How many cells are allowed.
    pub fn allowed_count(&self) -> usize {
        let n = self.endpoints.len();
        (0..n)
            .map(|i| (0..n).filter(|&j| self.cells.allowed(i, j)).count())
            .sum()
    }

    /// The positions of the rows (and columns) JSON names, in name order: each name once.
    fn by_name(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.endpoints.len())
            .filter(|&i| self.at.get(&self.endpoints[i]) == Some(&i))
            .collect();
        order.sort_unstable_by(|&a, &b| self.endpoints[a].cmp(&self.endpoints[b]));
        order
    }
}

/// Equal when port, protocol and endpoints are, and every cell.
impl PartialEq for Matrix {
    fn eq(&self, other: &Matrix) -> bool {
        let n = self.endpoints.len();
        self.port == other.port
            && self.protocol == other.protocol
            && self.endpoints == other.endpoints
            && (0..n).all(|i| (0..n).all(|j| self.allowed_at(i, j) == other.allowed_at(i, j)))
    }
}

impl Eq for Matrix {}

impl Serialize for Matrix {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        /// One row, or all of them, by name.
        struct Rows<'a> {
            m: &'a Matrix,
            order: &'a [usize],
            row: Option<usize>,
        }
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut map = ser.serialize_map(Some(self.order.len()))?;
                for &k in self.order {
                    let key = &self.m.endpoints[k];
                    match self.row {
                        Some(i) => map.serialize_entry(key, &self.m.allowed_at(i, k))?,
                        None => map.serialize_entry(
                            key,
                            &Rows {
                                row: Some(k),
                                ..*self
                            },
                        )?,
                    }
                }
                map.end()
            }
        }
        let order = self.by_name();
        let mut st = ser.serialize_struct("Matrix", 4)?;
        st.serialize_field("port", &self.port)?;
        st.serialize_field("protocol", &self.protocol)?;
        st.serialize_field("endpoints", &self.endpoints)?;
        st.serialize_field(
            "allowed",
            &Rows {
                m: self,
                order: &order,
                row: None,
            },
        )?;
        st.end()
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
    Ok(matrices(snap, endpoints, &[(protocol, port)])?.remove(0))
}

/// The cells of a matrix by position in its endpoint list: one verdict per pair of classes
/// ([`classes`]) and one per endpoint's flow to itself.
#[derive(Clone, Debug)]
pub struct Grid {
    class: Vec<usize>,
    count: usize,
    /// class × class (row-major) → allowed (None: the class has one member, so no such flow
    /// exists).
    table: Vec<Option<bool>>,
    itself: Vec<bool>,
}

impl Grid {
    /// Decides the cells of `endpoints` × `endpoints`: one verdict per pair of classes, by the
    /// reference evaluator's walk ([`Evaluator::allowed`]: what each endpoint's stages select
    /// worked out once per endpoint, no trace recorded). [`Decider`] decides several probes.
    pub fn decide(
        snap: &Snapshot,
        endpoints: &[String],
        protocol: u8,
        port: Option<u16>,
    ) -> Result<Grid, FlowError> {
        Decider::new(snap, endpoints).grid(protocol, port)
    }

    /// [`Grid::decide`] as it was before the [`Evaluator`]: every class pair's verdict with its
    /// full trace ([`Snapshot::verdict`]). Kept as the benchmark's baseline.
    #[doc(hidden)]
    pub fn decide_traced(
        snap: &Snapshot,
        endpoints: &[String],
        protocol: u8,
        port: Option<u16>,
    ) -> Result<Grid, FlowError> {
        Grid::by_classes(snap, endpoints, |from, to| {
            allowed(snap, &endpoints[from], &endpoints[to], protocol, port)
        })
    }

    /// Every cell decided by [`Snapshot::verdict`] (no classes).
    fn each(
        snap: &Snapshot,
        endpoints: &[String],
        protocol: u8,
        port: Option<u16>,
    ) -> Result<Grid, FlowError> {
        let rows: Vec<usize> = (0..endpoints.len()).collect();
        let decided = in_parallel(&rows, |&i| {
            endpoints
                .iter()
                .map(|to| allowed(snap, &endpoints[i], to, protocol, port))
                .collect::<Result<Vec<bool>, FlowError>>()
        })?;
        Grid::every_cell(endpoints.len(), |i| Ok(decided[i].clone()))
    }

    /// A grid with each of `n` endpoints in its own class and row `i` from `row(i)`.
    fn every_cell<E>(n: usize, row: impl Fn(usize) -> Result<Vec<bool>, E>) -> Result<Grid, E> {
        let mut table = Vec::with_capacity(n * n);
        let mut itself = Vec::with_capacity(n);
        for i in 0..n {
            let r = row(i)?;
            itself.push(r[i]);
            table.extend(
                r.into_iter()
                    .enumerate()
                    .map(|(j, v)| (i != j).then_some(v)),
            );
        }
        Ok(Grid {
            class: (0..n).collect(),
            count: n,
            table,
            itself,
        })
    }

    /// One `cell(from, to)` per pair of classes and per endpoint to itself.
    fn by_classes(
        snap: &Snapshot,
        endpoints: &[String],
        cell: impl Fn(usize, usize) -> Result<bool, FlowError> + Sync,
    ) -> Result<Grid, FlowError> {
        Grid::by_these_classes(classes(snap, endpoints), cell)
    }

    /// [`Grid::by_classes`] with the classes of the endpoints (`class[i]` the `i`th one's).
    fn by_these_classes(
        class: Vec<usize>,
        cell: impl Fn(usize, usize) -> Result<bool, FlowError> + Sync,
    ) -> Result<Grid, FlowError> {
        let count = class.iter().max().map_or(0, |m| m + 1);
        // Up to two members of each class: a flow between two members of one class needs both.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (i, &c) in class.iter().enumerate() {
            if members[c].len() < 2 {
                members[c].push(i);
            }
        }
        let rows = in_parallel(&(0..count).collect::<Vec<_>>(), |&c1| {
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
                .collect::<Result<Vec<_>, _>>()
        })?;
        let itself = in_parallel(&(0..class.len()).collect::<Vec<_>>(), |&i| cell(i, i))?;
        Ok(Grid {
            class,
            count,
            table: rows.into_iter().flatten().collect(),
            itself,
        })
    }

    /// Whether the `i`th endpoint may connect to the `j`th.
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        if i == j {
            self.itself[i]
        } else {
            self.between(self.class[i], self.class[j])
        }
    }

    /// The class of the `i`th endpoint.
    pub fn class(&self, i: usize) -> usize {
        self.class[i]
    }

    /// Whether a member of class `c1` may connect to another endpoint, of class `c2`.
    pub fn between(&self, c1: usize, c2: usize) -> bool {
        self.table[c1 * self.count + c2].unwrap_or(false)
    }
}

/// Grids of one snapshot's endpoints for several probes, sharing what does not depend on the
/// probe: the classes, the endpoints resolved, and what each endpoint's stages select.
pub struct Decider<'s> {
    eval: Evaluator<'s>,
    eps: Endpoints<'s>,
    class: Vec<usize>,
}

impl<'s> Decider<'s> {
    pub fn new(snap: &'s Snapshot, endpoints: &[String]) -> Decider<'s> {
        let eval = Evaluator::new(snap);
        let eps = eval.endpoints(endpoints);
        Decider {
            eval,
            eps,
            class: classes(snap, endpoints),
        }
    }

    /// [`Grid::decide`] for one protocol and port.
    pub fn grid(&self, protocol: u8, port: Option<u16>) -> Result<Grid, FlowError> {
        Grid::by_these_classes(self.class.clone(), |from, to| {
            no_address_denies(
                self.eval
                    .allowed_between(&self.eps, from, to, protocol, port),
            )
        })
    }

    /// The evaluator the grids use, for verdicts with their trace.
    pub fn evaluator(&self) -> &Evaluator<'s> {
        &self.eval
    }
}

/// [`matrix`] for each of `probes` (protocol, port), sharing the work they have in common
/// ([`Decider`]).
pub fn matrices(
    snap: &Snapshot,
    endpoints: &[String],
    probes: &[(u8, Option<u16>)],
) -> Result<Vec<Matrix>, FlowError> {
    let decider = Decider::new(snap, endpoints);
    probes
        .iter()
        .map(|&(protocol, port)| {
            Ok(Matrix::new(
                port,
                protocol_name(protocol),
                endpoints.to_vec(),
                decider.grid(protocol, port)?,
            ))
        })
        .collect()
}

/// The matrix with every cell decided by [`Snapshot::verdict`] with its trace (no classes, no
/// [`Evaluator`]): what [`matrix`] must equal.
pub fn matrix_each(
    snap: &Snapshot,
    endpoints: &[String],
    protocol: u8,
    port: Option<u16>,
) -> Result<Matrix, FlowError> {
    let cells = Grid::each(snap, endpoints, protocol, port)?;
    Ok(Matrix::new(
        port,
        protocol_name(protocol),
        endpoints.to_vec(),
        cells,
    ))
}

/// Today's path before the compact matrix, kept as the benchmark's baseline: class pairs
/// decided with full traces ([`Grid::decide_traced`]), every cell then copied into a map of
/// names.
#[doc(hidden)]
pub fn matrix_as_map(
    snap: &Snapshot,
    endpoints: &[String],
    protocol: u8,
    port: Option<u16>,
) -> Result<BTreeMap<String, BTreeMap<String, bool>>, FlowError> {
    let grid = Grid::decide_traced(snap, endpoints, protocol, port)?;
    let mut allowed = BTreeMap::new();
    for (i, from) in endpoints.iter().enumerate() {
        let row: BTreeMap<String, bool> = endpoints
            .iter()
            .enumerate()
            .map(|(j, to)| (to.clone(), grid.allowed(i, j)))
            .collect();
        allowed.insert(from.clone(), row);
    }
    Ok(allowed)
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
    no_address_denies(snap.verdict(&flow).map(|v| v.allowed))
}

/// An endpoint without an IPv4 address cannot take part in an IPv4 flow: denied.
fn no_address_denies(verdict: Result<bool, FlowError>) -> Result<bool, FlowError> {
    match verdict {
        Err(FlowError::NoAddress(..)) => Ok(false),
        other => other,
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
    render_cells(m, &|i, j| if m.allowed_at(i, j) { "✓" } else { "✗" })
}

/// The table of [`render_table`] with the mark of each cell (at most 3 characters) chosen by
/// `mark(from, to)`: `gingham lab probe` shows what the packets did in reach's layout.
pub fn render_table_with(m: &Matrix, mark: &dyn Fn(&str, &str) -> &'static str) -> String {
    render_cells(m, &|i, j| mark(&m.endpoints[i], &m.endpoints[j]))
}

/// The table with the mark of cell (`i`, `j`) from `mark(i, j)`.
fn render_cells(m: &Matrix, mark: &dyn Fn(usize, usize) -> &'static str) -> String {
    use std::fmt::Write;
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
    let n = m.endpoints.len();
    let mut out = String::with_capacity((n + 2) * (width + 5 * n + 1));
    let _ = write!(out, "{corner:<width$}");
    for i in 0..n {
        let _ = write!(out, "  {:>3}", i + 1);
    }
    out.push('\n');
    // Each distinct mark padded once, as `format!("  {:>3}")` pads it.
    let mut padded: Vec<(&'static str, String)> = Vec::new();
    for (i, from) in m.endpoints.iter().enumerate() {
        let _ = write!(out, "{from:<width$}");
        for j in 0..n {
            let mark = mark(i, j);
            match padded.iter().find(|(k, _)| *k == mark) {
                Some((_, p)) => out.push_str(p),
                None => {
                    let p = format!("  {mark:>3}");
                    out.push_str(&p);
                    padded.push((mark, p));
                }
            }
        }
        out.push('\n');
    }
    out.push_str("columns: ");
    for (i, e) in m.endpoints.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{} {e}", i + 1);
    }
    out.push('\n');
    out
}
