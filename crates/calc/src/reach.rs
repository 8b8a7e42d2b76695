//! The reachability matrix: for every client and server endpoint, whether a connection to the
//! server's port is allowed, decided by the reference evaluator.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::eval::{Flow, FlowError, ICMP, ICMPV6, PeerSpec, protocol_name};
use crate::input::PodPorts;
use crate::snapshot::{EndpointKind, Snapshot};

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
pub fn matrix(
    snap: &Snapshot,
    endpoints: &[String],
    protocol: u8,
    port: Option<u16>,
) -> Result<Matrix, FlowError> {
    // Rows are independent: split them over the machine's cores.
    let row = |from: &String| -> Result<BTreeMap<String, bool>, FlowError> {
        let mut row = BTreeMap::new();
        for to in endpoints {
            let flow = Flow {
                src: PeerSpec::Endpoint(from.clone()),
                dst: PeerSpec::Endpoint(to.clone()),
                protocol,
                port,
                src_port: None,
                icmp: None,
                ipv6: false,
            };
            let ok = match snap.verdict(&flow) {
                Ok(v) => v.allowed,
                // An endpoint without an IPv4 address cannot take part in an IPv4 flow.
                Err(FlowError::NoAddress(..)) => false,
                Err(e) => return Err(e),
            };
            row.insert(to.clone(), ok);
        }
        Ok(row)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = endpoints.len().div_ceil(threads).max(1);
    type Rows = Vec<(String, BTreeMap<String, bool>)>;
    let rows: Vec<Result<Rows, FlowError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = endpoints
            .chunks(chunk)
            .map(|part| {
                let row = &row;
                sc.spawn(move || {
                    part.iter()
                        .map(|from| row(from).map(|r| (from.clone(), r)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reach worker panicked"))
            .collect()
    });
    let mut allowed = BTreeMap::new();
    for part in rows {
        allowed.extend(part?);
    }
    Ok(Matrix {
        port,
        protocol: protocol_name(protocol),
        endpoints: endpoints.to_vec(),
        allowed,
    })
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
