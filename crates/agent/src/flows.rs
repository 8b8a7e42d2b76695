//! Flow logs of dropped traffic (and, with `flowLogsAllowed`, of allowed flows): the packets
//! the table's flow log rules send to NFLOG group [`FLOW_LOG_GROUP`] (rate-limited per rule in
//! the kernel, see `gingham_dataplane`'s
//! `render/flowlog.rs`) are read on a thread of their own, decoded (IPv4/IPv6, TCP/UDP/ICMP),
//! given their endpoints' names and the cause in `explain`'s words, and written as JSON lines
//! to [`FILE`] in the run directory, rotated at [`MAX_BYTES`] (one older file kept: the logs
//! never take more than twice that).
//!
//! The reader never slows programming: the netlink reader hands packets to the writer through
//! a bounded queue and drops (and counts, `gingham_agent_flow_logs_dropped_total`) what does
//! not fit; the policy manager only swaps an `Arc` of what the writer needs to name things
//! ([`FlowView`]) after it installs a table.
//!
//! NFLOG is read with a small reader over `netlink-sys` (the socket the workspace already
//! uses): the netlink-packet-netfilter crate is pinned to netlink-packet-core 0.7 and
//! netlink-sys 0.8 while the workspace is on 0.9, and the few attributes needed here (prefix,
//! payload) are a short read.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use gingham_calc::Snapshot;
use gingham_calc::eval::protocol_name;
use gingham_calc::program::{EndpointProgram, IpSet, NodeProgram, SetId};
pub use gingham_dataplane::render::FLOW_LOG_GROUP;
use gingham_dataplane::render::{Interfaces, flow_cause};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

/// The flow log in the run directory; the rotated one is `FILE` + `.1`.
pub const FILE: &str = "flows.jsonl";
/// Size at which the log is rotated.
pub const MAX_BYTES: u64 = 1 << 20;
/// Packets waiting for the writer; more are dropped and counted.
const QUEUE: usize = 1024;

/// A record's verdict: the flow was dropped.
pub const DENIED: &str = "denied";
/// A record's verdict: an Allow rule let the flow through (logged with `flowLogsAllowed`).
pub const ALLOWED: &str = "allowed";

/// One flow record (a JSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub node: String,
    /// [`DENIED`] or [`ALLOWED`].
    pub verdict: String,
    /// Endpoint names (`ns/pod`, `node/hep`, `node NAME`), when known.
    pub src: Option<String>,
    pub dst: Option<String>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
    /// `ingress` or `egress`, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direction: Option<String>,
    /// The cause in `explain`'s words.
    pub cause: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<usize>,
}

/// What the writer needs to name a packet's decision and endpoints: the local programs the
/// table was rendered from (their sets only as far as which families are empty: stage chain
/// names depend on it, see `Renderer::set_families`) and every known address.
#[derive(Default)]
pub struct FlowView {
    pub programs: NodeProgram,
    pub names: HashMap<IpAddr, String>,
}

impl FlowView {
    pub fn new(
        endpoints: &BTreeMap<String, EndpointProgram>,
        sets: BTreeMap<SetId, IpSet>,
        snap: &Snapshot,
    ) -> FlowView {
        let mut names = HashMap::new();
        for n in snap.nodes.values() {
            for ip in n.ips.iter().chain(&n.tunnel_ips) {
                names.insert(*ip, format!("node {}", n.name));
            }
        }
        for e in &snap.endpoints {
            for net in &e.ips {
                if net.prefix_len() == net.max_prefix_len() {
                    names.insert(net.addr(), e.name.clone());
                }
            }
        }
        FlowView {
            programs: NodeProgram {
                endpoints: endpoints.clone(),
                sets,
            },
            names,
        }
    }
}

/// Shared between the policy manager (which swaps in a new view) and the writer.
pub type SharedView = Arc<Mutex<Arc<FlowView>>>;

/// A packet as NFLOG handed it over.
struct Logged {
    prefix: String,
    payload: Vec<u8>,
    /// Interface indexes in and out, when the packet had them.
    input: Option<u32>,
    output: Option<u32>,
    at: jiff::Timestamp,
}

/// The decoded headers.
#[derive(Debug, PartialEq, Eq)]
pub struct Headers {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// IPv4 or IPv6 header and the TCP/UDP ports (ICMP: none); `None` for what is not IP.
pub fn decode(packet: &[u8]) -> Option<Headers> {
    let version = packet.first()? >> 4;
    let (src, dst, protocol, l4) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let a: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(a),
                IpAddr::from(b),
                *packet.get(9)?,
                packet.get(ihl..)?,
            )
        }
        6 => {
            let a: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(a),
                IpAddr::from(b),
                *packet.get(6)?,
                packet.get(40..)?,
            )
        }
        _ => return None,
    };
    let port = |r: std::ops::Range<usize>| {
        l4.get(r)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .filter(|_| matches!(protocol, 6 | 17 | 132))
    };
    Some(Headers {
        src,
        dst,
        protocol,
        src_port: port(0..2),
        dst_port: port(2..4),
    })
}

/// A flow record for a logged packet; `None` when the prefix is not a flow log's.
fn record(node: &str, view: &FlowView, logged: &Logged) -> Option<FlowRecord> {
    let input = logged.input.and_then(interface_name);
    let output = logged.output.and_then(interface_name);
    let via = Interfaces {
        input: input.as_deref(),
        output: output.as_deref(),
    };
    let cause = flow_cause(&view.programs, &logged.prefix, via)?;
    let h = decode(&logged.payload)?;
    let name = |ip: &IpAddr| view.names.get(ip).cloned();
    Some(FlowRecord {
        time: logged.at.to_string(),
        node: node.to_owned(),
        verdict: if cause.allowed { ALLOWED } else { DENIED }.into(),
        src: name(&h.src),
        dst: name(&h.dst),
        src_ip: h.src,
        dst_ip: h.dst,
        protocol: protocol_name(h.protocol),
        src_port: h.src_port,
        port: h.dst_port,
        direction: cause
            .ingress
            .map(|i| if i { "ingress" } else { "egress" }.to_owned()),
        cause: cause.cause,
        stage: cause.stage,
        tier: cause.tier,
        policy: cause.policy,
        profile: cause.profile,
        rule: cause.rule,
    })
}

/// The log files of a run directory, oldest first.
pub fn files(run_dir: &Path) -> [PathBuf; 2] {
    [run_dir.join(format!("{FILE}.1")), run_dir.join(FILE)]
}

/// Appends JSON lines, rotating at `max` bytes.
struct Writer {
    path: PathBuf,
    rotated: PathBuf,
    max: u64,
    file: Option<std::fs::File>,
    size: u64,
}

impl Writer {
    fn new(run_dir: &Path, max: u64) -> Writer {
        let [rotated, path] = files(run_dir);
        Writer {
            path,
            rotated,
            max,
            file: None,
            size: 0,
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.file.is_some() && self.size + len > self.max {
            self.file = None;
            std::fs::rename(&self.path, &self.rotated)?;
        }
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
            if self.size + len > self.max && self.size > 0 {
                self.file = None;
                std::fs::rename(&self.path, &self.rotated)?;
                return self.write(line);
            }
        }
        if let Some(f) = &mut self.file {
            f.write_all(format!("{line}\n").as_bytes())?;
            self.size += len;
        }
        Ok(())
    }
}

/// The running flow logger's handles.
pub struct FlowLogger {
    pub view: SharedView,
}

/// Starts the NFLOG reader and the writer threads; the returned view is for the policy
/// manager to keep up to date.
pub fn start(node: &str, run_dir: &Path, dropped: Counter) -> std::io::Result<FlowLogger> {
    let socket = open()?;
    let view: SharedView = Arc::default();
    let (tx, rx) = sync_channel::<Logged>(QUEUE);
    std::fs::create_dir_all(run_dir)?;
    let writer = Writer::new(run_dir, MAX_BYTES);
    let node = node.to_owned();
    let v = view.clone();
    std::thread::Builder::new()
        .name("flow-log-writer".into())
        .spawn(move || write_loop(&node, &v, rx, writer))?;
    std::thread::Builder::new()
        .name("flow-log-reader".into())
        .spawn(move || read_loop(&socket, &tx, &dropped))?;
    Ok(FlowLogger { view })
}

fn write_loop(node: &str, view: &SharedView, rx: Receiver<Logged>, mut writer: Writer) {
    for logged in rx {
        let v = view.lock().map(|v| v.clone()).unwrap_or_default();
        let Some(rec) = record(node, &v, &logged) else {
            continue;
        };
        let Ok(line) = serde_json::to_string(&rec) else {
            continue;
        };
        if let Err(e) = writer.write(&line) {
            tracing::warn!(error = %e, "cannot write the flow log");
        }
    }
}

// nfnetlink_log (linux/netfilter/nfnetlink_log.h).
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
/// How many packets the kernel gathers before it sends them (its default is 100, or a second's
/// wait): 1, so that a record follows its drop at once. The rules' rate limit bounds the rate.
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
/// The interface indexes a packet came in by and was going out by (big-endian u32).
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Bytes of each packet copied: enough for the IPv6 header and the ports.
const COPY_RANGE: u32 = 128;

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend((len as u16).to_ne_bytes());
    buf.extend(kind.to_ne_bytes());
    buf.extend(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn open() -> std::io::Result<netlink_sys::Socket> {
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    // A big receive buffer rides out bursts; what overflows is counted as dropped.
    let _ = socket.set_rx_buf_sz(4 << 20);
    let config = |attrs: &[(u16, Vec<u8>)]| {
        // nfgenmsg: AF_UNSPEC, version 0, the group (big-endian).
        let mut body = vec![0, 0];
        body.extend(FLOW_LOG_GROUP.to_be_bytes());
        for (k, v) in attrs {
            attr(&mut body, *k, v);
        }
        let mut msg = Vec::new();
        let len = 16 + body.len();
        msg.extend((len as u32).to_ne_bytes());
        msg.extend(((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
        // NLM_F_REQUEST | NLM_F_ACK
        msg.extend(5u16.to_ne_bytes());
        msg.extend(1u32.to_ne_bytes());
        msg.extend(0u32.to_ne_bytes());
        msg.extend(body);
        msg
    };
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend([NFULNL_COPY_PACKET, 0]);
    for msg in [
        config(&[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])]),
        config(&[(NFULA_CFG_MODE, mode)]),
        config(&[(NFULA_CFG_QTHRESH, 1u32.to_be_bytes().to_vec())]),
    ] {
        socket.send(&msg, 0)?;
        let mut buf = Vec::with_capacity(4096);
        socket.recv(&mut buf, 0)?;
        // NLMSG_ERROR with a non-zero error: the kernel refused.
        if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(-err));
            }
        }
    }
    Ok(socket)
}

fn read_loop(socket: &netlink_sys::Socket, tx: &SyncSender<Logged>, dropped: &Counter) {
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        match socket.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(105) => {
                // ENOBUFS: the kernel dropped messages we were too slow for.
                dropped.inc();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "flow log reader stopped");
                return;
            }
        }
        let at = jiff::Timestamp::now();
        for logged in parse(&buf, at) {
            match tx.try_send(logged) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.inc();
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// An interface index attribute's value.
fn ifindex(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// An interface's name by its index, in the reader's network namespace (the node's).
fn interface_name(index: u32) -> Option<String> {
    let name = nix::net::if_::if_indextoname(index).ok()?;
    name.into_string().ok()
}

/// The packets in a datagram of netlink messages.
fn parse(mut buf: &[u8], at: jiff::Timestamp) -> Vec<Logged> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        let msg = &buf[16..len];
        if kind == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET) && msg.len() >= 4 {
            let mut attrs = &msg[4..];
            let (mut prefix, mut payload) = (None, None);
            let (mut input, mut output) = (None, None);
            while attrs.len() >= 4 {
                let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                let akind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let value = &attrs[4..alen];
                match akind {
                    NFULA_PREFIX => {
                        let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                        prefix = Some(String::from_utf8_lossy(&value[..end]).into_owned());
                    }
                    NFULA_PAYLOAD => payload = Some(value.to_vec()),
                    NFULA_IFINDEX_INDEV => input = ifindex(value),
                    NFULA_IFINDEX_OUTDEV => output = ifindex(value),
                    _ => {}
                }
                attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
            }
            if let (Some(prefix), Some(payload)) = (prefix, payload) {
                out.push(Logged {
                    prefix,
                    payload,
                    input,
                    output,
                    at,
                });
            }
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ipv4_tcp_and_ipv6_udp() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        v4.extend([0x30, 0x39, 0, 80]);
        let h = decode(&v4).unwrap();
        assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (h.protocol, h.src_port, h.dst_port),
            (6, Some(12345), Some(80))
        );
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend("fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend([0, 53, 0x01, 0xbb]);
        let h = decode(&v6).unwrap();
        assert_eq!(
            (h.protocol, h.src_port, h.dst_port),
            (17, Some(53), Some(443))
        );
        // ICMP: no ports.
        let mut icmp = v4.clone();
        icmp[9] = 1;
        assert_eq!(decode(&icmp).unwrap().dst_port, None);
        assert_eq!(decode(&[0x12]), None);
    }

    #[test]
    fn rotation_keeps_the_log_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(dir.path(), 1000);
        for i in 0..500 {
            w.write(&format!("{{\"n\":{i}}}")).unwrap();
        }
        let [old, new] = files(dir.path());
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&new) <= 1000 && size(&old) <= 1000);
        let last = std::fs::read_to_string(&new).unwrap();
        assert!(last.ends_with("{\"n\":499}\n"));
    }
}
