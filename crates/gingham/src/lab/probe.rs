//! Real packets: one connection attempt (`lab connect`, inside a namespace), a probe matrix
//! over every pod (`lab probe`), and one attempt between pods, nodes, the router and the
//! external host (`lab try`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gingham_calc::eval::{parse_protocol, protocol_name};
use gingham_calc::reach::Matrix;
use serde::{Deserialize, Serialize};

use super::state::{PodState, State, load_state};
use super::{ConnectArgs, ProbeArgs, TryArgs, TryFormat, self_exe};
use crate::Exit;
use crate::reach_cmd::MatrixFormat;

/// What one connection attempt with real packets found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Outcome {
    /// The server answered.
    Connected,
    /// The packet reached the destination and nothing listens there (TCP reset, ICMP port
    /// unreachable): policy let it through.
    Refused,
    /// Nothing came back: dropped (policy drops, it never rejects) or lost.
    NoAnswer,
}

impl Outcome {
    /// Whether the packet reached the destination, i.e. policy allowed it (reach's `allowed`).
    pub fn reached(self) -> bool {
        matches!(self, Outcome::Connected | Outcome::Refused)
    }

    /// The mark in a probe matrix; reached outcomes look like reach's `✓`.
    fn mark(self) -> &'static str {
        match self {
            Outcome::Connected => "✓",
            Outcome::Refused => "(✓)",
            Outcome::NoAnswer => "✗",
        }
    }

    /// `lab try`'s exit code for this outcome (documented in its help).
    fn exit(self) -> Exit {
        match self {
            Outcome::Connected => Exit::Ok,
            Outcome::Refused => Exit::Code(EXIT_REFUSED),
            Outcome::NoAnswer => Exit::Code(EXIT_NO_ANSWER),
        }
    }
}

/// The legend printed under a probe matrix.
const PROBE_LEGEND: &str = "✓ connected · (✓) refused: reached, nothing listens on the port (policy let it through) · ✗ no answer: dropped";

/// `lab try`'s exit code when the connection is refused (reached, nothing listens).
const EXIT_REFUSED: u8 = 3;
/// `lab try`'s exit code when nothing answers (dropped or lost).
const EXIT_NO_ANSWER: u8 = 4;

/// One connection attempt as `lab connect` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Attempt {
    outcome: Outcome,
    /// The source address the server saw (it says so in its greeting), when it answered.
    peer: Option<IpAddr>,
}

/// The source address a server's greeting names: `NAME PEER_IP:PORT`.
fn greeting_peer(greeting: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(greeting).ok()?;
    let last = text.split_whitespace().last()?;
    last.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// One TCP or UDP connection attempt to `addr`, classified.
fn attempt(proto: u8, addr: SocketAddr, timeout: Duration, udp_source_port: u16) -> Attempt {
    use std::io::ErrorKind;
    let classify = |e: &std::io::Error| match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        _ => Outcome::NoAnswer,
    };
    let no_answer = Attempt {
        outcome: Outcome::NoAnswer,
        peer: None,
    };
    match proto {
        6 => match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut s) => {
                // The server greets with its name and the address it sees us from.
                let _ = s.set_read_timeout(Some(timeout));
                let mut greeting = Vec::new();
                let mut byte = [0u8; 1];
                while greeting.len() < 1024 {
                    match s.read(&mut byte) {
                        Ok(1) if byte[0] != b'\n' => greeting.push(byte[0]),
                        _ => break,
                    }
                }
                if greeting.is_empty() {
                    return no_answer;
                }
                Attempt {
                    outcome: Outcome::Connected,
                    peer: greeting_peer(&greeting),
                }
            }
            Err(e) => Attempt {
                outcome: classify(&e),
                peer: None,
            },
        },
        17 => {
            // The port handed out, or any port if that one is taken here.
            let socket = match UdpSocket::bind(("0.0.0.0", udp_source_port))
                .or_else(|_| UdpSocket::bind(("0.0.0.0", 0)))
            {
                Ok(s) => s,
                Err(_) => return no_answer,
            };
            let _ = socket.set_read_timeout(Some(timeout));
            // A connected socket: an ICMP port unreachable comes back as ECONNREFUSED.
            if let Err(e) = socket.connect(addr).and_then(|()| socket.send(b"probe")) {
                return Attempt {
                    outcome: classify(&e),
                    peer: None,
                };
            }
            let mut buf = [0u8; 1500];
            match socket.recv(&mut buf) {
                Ok(n) => Attempt {
                    outcome: Outcome::Connected,
                    peer: greeting_peer(&buf[..n]),
                },
                Err(e) => Attempt {
                    outcome: classify(&e),
                    peer: None,
                },
            }
        }
        _ => no_answer,
    }
}

pub(super) fn connect(args: &ConnectArgs) -> Result<Exit> {
    let proto = parse_protocol(&args.protocol).context("--protocol")?;
    if proto != 6 && proto != 17 {
        bail!("lab connect sends TCP or UDP (got {})", args.protocol);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let results: Vec<(IpAddr, Attempt)> = std::thread::scope(|sc| {
        let hs: Vec<_> = args
            .targets
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                let source = match args.udp_source_port {
                    0 => 0,
                    first => u16::try_from(i)
                        .ok()
                        .and_then(|i| first.checked_add(i))
                        .unwrap_or(0),
                };
                sc.spawn(move || {
                    let to = SocketAddr::new(ip, args.port);
                    (ip, attempt(proto, to, timeout, source))
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let map: BTreeMap<String, Attempt> = results
        .into_iter()
        .map(|(ip, a)| (ip.to_string(), a))
        .collect();
    println!("{}", serde_json::to_string(&map)?);
    Ok(Exit::Ok)
}

/// Runs `lab connect` inside `netns` towards `targets`; what each target did (a target
/// missing from the answer did not answer).
pub(super) fn connect_from(
    exe: &Path,
    netns: &str,
    proto: u8,
    port: u16,
    timeout_ms: u64,
    udp_source_port: u16,
    targets: &[String],
) -> Result<BTreeMap<String, Attempt>> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(exe)
        .args([
            "lab",
            "connect",
            "--protocol",
            &protocol_name(proto),
            "--port",
            &port.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
            "--udp-source-port",
            &udp_source_port.to_string(),
        ])
        .args(targets)
        .output()
        .context("cannot run `ip netns exec` (install iproute2)")?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "probing from {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The UDP source ports probes take turns on, far below the kernel's ephemeral range. A UDP
/// conntrack entry lives 30 s after its last packet (120 s for a stream): at one matrix of 81
/// probes a second the range comes round after two minutes.
const PROBE_UDP_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// The file in the lab directory that holds the next probe's UDP source port.
pub(super) const UDP_PORT_COUNTER: &str = "udp-source-port";

/// Hands out `n` consecutive UDP source ports that no probe of this lab used recently (a
/// counter in the lab directory, taken under a lock), so that a new probe is a new flow for
/// connection tracking rather than an old flow's reply direction that policy no longer sees.
pub(super) fn reserve_udp_ports(dir: &Path, n: usize) -> Result<u16> {
    let path = dir.join(UDP_PORT_COUNTER);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let span = PROBE_UDP_PORTS.end - PROBE_UDP_PORTS.start;
    let n = u16::try_from(n)
        .ok()
        .filter(|n| *n <= span)
        .with_context(|| {
            format!("{n} probe targets at once is more than {span} source ports can tell apart")
        })?;
    let mut first = text
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| PROBE_UDP_PORTS.contains(p))
        .unwrap_or(PROBE_UDP_PORTS.start);
    if first + n > PROBE_UDP_PORTS.end {
        first = PROBE_UDP_PORTS.start;
    }
    let next = first + n;
    file.set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)).map(drop))
        .and_then(|()| file.write_all(next.to_string().as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(first)
}

/// A probe matrix: reach's schema (`allowed`: the packet reached the destination, whether
/// it connected or was refused) and what each attempt found.
#[derive(Debug, Serialize)]
struct ProbeMatrix {
    #[serde(flatten)]
    matrix: Matrix,
    /// client → server → outcome.
    outcomes: BTreeMap<String, BTreeMap<String, Outcome>>,
}

impl ProbeMatrix {
    fn new(
        port: u16,
        proto: u8,
        endpoints: Vec<String>,
        outcomes: BTreeMap<String, BTreeMap<String, Outcome>>,
    ) -> Self {
        let reached = |i: usize, j: usize| {
            outcomes
                .get(&endpoints[i])
                .and_then(|row| row.get(&endpoints[j]))
                .is_some_and(|o| o.reached())
        };
        let matrix = Matrix::from_fn(Some(port), protocol_name(proto), endpoints.clone(), reached);
        ProbeMatrix { matrix, outcomes }
    }

    fn outcome(&self, from: &str, to: &str) -> Outcome {
        self.outcomes
            .get(from)
            .and_then(|r| r.get(to))
            .copied()
            .unwrap_or(Outcome::NoAnswer)
    }

    /// Reach's table with a mark per outcome, and the legend.
    fn render(&self) -> String {
        let mut out = gingham_calc::reach::render_table_with(&self.matrix, &|from, to| {
            self.outcome(from, to).mark()
        });
        out.push_str(PROBE_LEGEND);
        out.push('\n');
        out
    }
}

pub(super) fn probe(args: &ProbeArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let proto = parse_protocol(&args.protocol).with_context(|| {
        format!(
            "--protocol {:?} is not a protocol (valid: TCP, UDP)",
            args.protocol
        )
    })?;
    if proto != 6 && proto != 17 {
        bail!("lab probe sends TCP or UDP (got {})", args.protocol);
    }
    let ports: Vec<u16> = match args.port {
        Some(p) => vec![p],
        None => {
            let mut ports: Vec<u16> = state
                .pods
                .iter()
                .flat_map(|p| {
                    p.ports
                        .iter()
                        .filter(|(pr, _)| *pr == proto)
                        .map(|(_, n)| *n)
                })
                .collect();
            ports.sort_unstable();
            ports.dedup();
            if ports.is_empty() {
                bail!(
                    "no pod declares a {} port; name one with --port",
                    args.protocol
                );
            }
            ports
        }
    };
    let exe = self_exe()?;
    let mut pods: Vec<&PodState> = state.pods.iter().filter(|p| p.ip.is_some()).collect();
    pods.sort_by_key(|p| p.key());
    let endpoints: Vec<String> = pods.iter().map(|p| p.key()).collect();
    let targets: Vec<String> = pods.iter().filter_map(|p| p.ip.clone()).collect();
    let mut matrices = Vec::new();
    for port in ports {
        let udp_source_port = reserve_udp_ports(&args.lab.dir, targets.len())?;
        // One prober per client pod, all at once.
        let rows: Vec<Result<BTreeMap<String, Attempt>>> = std::thread::scope(|sc| {
            let hs: Vec<_> = pods
                .iter()
                .map(|client| {
                    let (exe, targets) = (&exe, &targets);
                    sc.spawn(move || {
                        connect_from(
                            exe,
                            &client.netns,
                            proto,
                            port,
                            args.timeout_ms,
                            udp_source_port,
                            targets,
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a prober thread panicked")))
                })
                .collect()
        });
        let mut outcomes = BTreeMap::new();
        for (client, row) in pods.iter().zip(rows) {
            let got = row?;
            let row = pods
                .iter()
                .map(|server| {
                    let outcome = server
                        .ip
                        .as_ref()
                        .and_then(|ip| got.get(ip))
                        .map_or(Outcome::NoAnswer, |a| a.outcome);
                    (server.key(), outcome)
                })
                .collect();
            outcomes.insert(client.key(), row);
        }
        matrices.push(ProbeMatrix::new(port, proto, endpoints.clone(), outcomes));
    }
    match args.output {
        MatrixFormat::Json if matrices.len() == 1 => {
            println!("{}", serde_json::to_string_pretty(&matrices[0])?)
        }
        MatrixFormat::Json => println!("{}", serde_json::to_string_pretty(&matrices)?),
        MatrixFormat::Table => {
            let tables: Vec<String> = matrices.iter().map(ProbeMatrix::render).collect();
            print!("{}", tables.join("\n"));
        }
    }
    Ok(Exit::Ok)
}

/// The name `lab try` and `lab exec` give the router.
pub(super) const ROUTER: &str = "router";
/// The name `lab try` and `lab exec` give the external host.
pub(super) const EXTERNAL: &str = "external";

/// Every name `lab try` and `lab exec` take in this lab.
fn valid_names(state: &State) -> String {
    names_of(state, |_| true)
}

/// The names of the pods `pod` keeps, the nodes, and the router and external host if the lab
/// has them.
fn names_of(state: &State, pod: impl Fn(&PodState) -> bool) -> String {
    let mut names: Vec<String> = state
        .pods
        .iter()
        .filter(|p| pod(p))
        .map(PodState::key)
        .chain(state.nodes.iter().map(|n| n.name.clone()))
        .collect();
    if state.router.is_some() {
        names.push(ROUTER.into());
    }
    if state.external.is_some() {
        names.push(EXTERNAL.into());
    }
    names.join(", ")
}

/// The network namespace of a pod, a node, the router or the external host, or an error
/// listing the valid names.
pub(super) fn netns_of(state: &State, target: &str) -> Result<String> {
    state
        .pods
        .iter()
        .find(|p| p.key() == target)
        .map(|p| p.netns.clone())
        .or_else(|| state.node(target).map(|n| n.netns.clone()))
        .or_else(|| {
            state
                .router
                .as_ref()
                .filter(|_| target == ROUTER)
                .map(|r| r.netns.clone())
        })
        .or_else(|| {
            state
                .external
                .as_ref()
                .filter(|_| target == EXTERNAL)
                .map(|x| x.netns.clone())
        })
        .with_context(|| {
            format!(
                "{target:?} is not a pod, node, router or external host of this lab (valid: {})",
                valid_names(state)
            )
        })
}

/// The router's address as seen from `from`: its address in the rack of `from`'s node, else
/// in the first rack. Nothing listens there: a try that reaches it is `refused`.
fn router_address(state: &State, from: &str) -> Option<String> {
    let router = state.router.as_ref()?;
    let node = state
        .pods
        .iter()
        .find(|p| p.key() == from)
        .map(|p| p.node.as_str())
        .unwrap_or(from);
    let rack = state.node(node).and_then(|n| n.rack.as_ref());
    router
        .racks
        .iter()
        .find(|r| Some(&r.name) == rack)
        .or(router.racks.first())
        .map(|r| r.gateway.clone())
}

pub(super) fn try_connect(args: &TryArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let from = netns_of(&state, &args.from)?;
    let external = state.external.as_ref().filter(|_| args.to == EXTERNAL);
    let ip = state
        .pods
        .iter()
        .find(|p| p.key() == args.to)
        .and_then(|p| p.ip.clone())
        .or_else(|| state.node(&args.to).map(|n| n.ip.clone()))
        .or_else(|| external.map(|x| x.address.clone()))
        .or_else(|| router_address(&state, &args.from).filter(|_| args.to == ROUTER))
        .with_context(|| {
            let names = names_of(&state, |p| p.ip.is_some());
            format!(
                "{:?} is not a pod (with an address), a node, the router or the external host of this lab (valid: {})",
                args.to, names
            )
        })?;
    let proto = parse_protocol(&args.protocol)
        .filter(|p| *p == 6 || *p == 17)
        .with_context(|| {
            format!(
                "--protocol {:?}: lab try sends TCP or UDP (valid: TCP, UDP)",
                args.protocol
            )
        })?;
    if external.is_some() {
        // The external host answers on every port `lab try` names.
        super::servers::ensure_external_server(&args.lab.dir, proto, args.port)?;
    }
    let got = connect_from(
        &self_exe()?,
        &from,
        proto,
        args.port,
        args.timeout_ms,
        reserve_udp_ports(&args.lab.dir, 1)?,
        std::slice::from_ref(&ip),
    )?;
    let attempt = got.get(&ip).cloned().unwrap_or(Attempt {
        outcome: Outcome::NoAnswer,
        peer: None,
    });
    let protocol = protocol_name(proto);
    match args.output {
        TryFormat::Json => println!(
            "{}",
            serde_json::json!({
                "from": args.from,
                "to": args.to,
                "address": ip,
                "port": args.port,
                "protocol": protocol,
                "outcome": attempt.outcome,
                "peer": attempt.peer,
            })
        ),
        TryFormat::Text => {
            let what = match attempt.outcome {
                Outcome::Connected => "connected".to_owned(),
                Outcome::Refused => {
                    format!("refused: nothing listens on {ip}:{}/{protocol}", args.port)
                }
                Outcome::NoAnswer => "no answer (dropped)".to_owned(),
            };
            println!(
                "{} -> {} ({ip}) {protocol}/{}: {what}",
                args.from, args.to, args.port
            );
        }
    }
    Ok(attempt.outcome.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes never share a UDP source port until the range comes round: a repeated port
    /// would let a probe ride on an earlier probe's conntrack entry, past a policy that now
    /// drops it (a flake of the agreement test in CI, x/a → z/a on UDP 81).
    #[test]
    fn probes_take_fresh_udp_source_ports_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let span = usize::from(PROBE_UDP_PORTS.end - PROBE_UDP_PORTS.start);
        let mut taken = 0;
        while taken + 9 <= span {
            let first = reserve_udp_ports(dir.path(), 9).unwrap();
            for p in first..first + 9 {
                assert!(PROBE_UDP_PORTS.contains(&p), "{p}");
                assert!(seen.insert(p), "port {p} handed out twice in one round");
            }
            taken += 9;
        }
        // The round ends: the range starts again rather than running past its end.
        assert_eq!(
            reserve_udp_ports(dir.path(), 9).unwrap(),
            PROBE_UDP_PORTS.start
        );
        assert!(reserve_udp_ports(dir.path(), span + 1).is_err());
    }
}
