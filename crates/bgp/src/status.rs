//! What `calicoctl node status` reads from BIRD: the BGP peers in BIRD 1.x's answer to
//! `show protocols` on its control socket, and the table it prints.
//!
//! BIRD's control protocol answers with numbered lines: four digits, then `-` when more lines of
//! the same reply follow, or a space on the reply's last line. `0001` is the greeting, `2002` the
//! headings of a table, `1002` its first row; further rows begin with a space; `0000` ends a
//! successful reply and codes from `8000` up end a failed one. Only protocols named as Calico's
//! confd names BGP sessions (`Mesh_`, `Global_`, `Node_` followed by the peer's address with
//! `_` for its separators) are peers; their address is read back from the name.

use std::fmt;

/// Which BIRD: `bird` (IPv4) or `bird6` (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    /// Both BIRDs, as Calico runs them.
    pub const BOTH: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

    /// The daemon's program: `bird` or `bird6`.
    pub fn daemon(self) -> &'static str {
        match self {
            IpVersion::V4 => "bird",
            IpVersion::V6 => "bird6",
        }
    }

    /// The file name of the daemon's control socket in the node's run directory (Calico:
    /// `/var/run/calico/bird.ctl`, `bird6.ctl`).
    pub fn socket_name(self) -> &'static str {
        match self {
            IpVersion::V4 => "bird.ctl",
            IpVersion::V6 => "bird6.ctl",
        }
    }

    /// The configuration file the daemon is started on (one of [`crate::FILE_NAMES`]; it
    /// includes the others of its version).
    pub fn config_name(self) -> &'static str {
        match self {
            IpVersion::V4 => "bird.cfg",
            IpVersion::V6 => "bird6.cfg",
        }
    }

    /// `4` or `6`, as in "IPv4 BGP status".
    pub fn number(self) -> u8 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }
    fn separator(self) -> &'static str {
        match self {
            IpVersion::V4 => ".",
            IpVersion::V6 => ":",
        }
    }
}

/// How a peering came about, from the protocol name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PeerType {
    /// `Mesh_`: the node-to-node mesh.
    #[serde(rename = "node-to-node mesh")]
    Mesh,
    /// `Global_`: a BGPPeer without a node or nodeSelector.
    #[serde(rename = "global")]
    Global,
    /// `Node_`: a BGPPeer for this node (node, nodeSelector or peerSelector).
    #[serde(rename = "node specific")]
    NodeSpecific,
}

impl PeerType {
    fn from_prefix(prefix: &str) -> Option<PeerType> {
        match prefix {
            "Mesh" => Some(PeerType::Mesh),
            "Global" => Some(PeerType::Global),
            "Node" => Some(PeerType::NodeSpecific),
            _ => None,
        }
    }
    /// The words `calicoctl node status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Mesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
        }
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One BGP session of BIRD, as `show protocols` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The peer's address, from the protocol name (`Mesh_10_0_0_2` → `10.0.0.2`).
    pub peer_address: String,
    pub peer_type: PeerType,
    /// BIRD's protocol state (`up`, `start`, `down`...).
    pub state: String,
    /// When the state last changed, as BIRD prints it.
    pub since: String,
    /// The BGP state and what BIRD adds (`Established`, `Active Socket: Connection refused`).
    pub info: String,
}

/// BIRD's answer could not be read as a `show protocols` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error(
        "unknown BIRD table output format (headings {0:?}; BIRD 1.x prints `name proto table state since info`)"
    )]
    UnknownFormat(String),
    #[error("unexpected output line from BIRD: {0:?}")]
    UnexpectedLine(String),
    #[error("BIRD answered with an error: {0:?}")]
    Bird(String),
}

/// The headings BIRD 1.x prints over its protocol table.
const EXPECTED_HEADINGS: [&str; 6] = ["name", "proto", "table", "state", "since", "info"];

/// The request to send on the control socket.
pub const SHOW_PROTOCOLS: &str = "show protocols\n";

/// Whether `line` ends the answer to a request: `0000` (done) or an error code (`8xxx`,
/// `9xxx`) followed by a space or nothing. The greeting (`0001`) does not.
pub fn ends_reply(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    if b.get(4) == Some(&b'-') {
        return false;
    }
    &line[..4] == "0000" || matches!(b[0], b'8' | b'9')
}

/// The reply code of `line` if it is the last line of a reply (four digits followed by a space
/// or nothing), as BIRD ends every reply, the greeting (`0001`) included.
pub fn last_line_code(line: &str) -> Option<u16> {
    let b = line.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) || b.get(4).is_some_and(|c| *c != b' ')
    {
        return None;
    }
    line[..4].parse().ok()
}

/// The answer to `configure`: `Ok` when BIRD took the new configuration (`0003` reconfigured,
/// `0004` in progress, `0005` queued, `0019`/`0020` nothing to do / OK), else BIRD's message.
pub fn configure_outcome(reply: &str) -> Result<(), String> {
    let last = reply
        .lines()
        .rev()
        .find(|l| last_line_code(l).is_some())
        .unwrap_or("");
    match last_line_code(last) {
        Some(3 | 4 | 5 | 19 | 20) => Ok(()),
        _ => Err(reply
            .lines()
            .filter(|l| !l.starts_with("0001"))
            .map(|l| l.get(5..).unwrap_or(l).trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ")),
    }
}

/// The BGP peers in BIRD's answer to `show protocols` (the greeting may come first), in BIRD's
/// order. Non-BGP protocols and BGP protocols not named as confd names peers are left out.
pub fn parse_show_protocols(reply: &str, ip: IpVersion) -> Result<Vec<Peer>, StatusError> {
    let mut peers = Vec::new();
    for line in reply.lines() {
        if line.is_empty() {
            continue;
        }
        let code = line.get(..4).unwrap_or("");
        let rest = line.get(5..).unwrap_or("");
        if let Some(row) = line.strip_prefix(' ') {
            peers.extend(parse_row(row, ip));
        } else if code == "0000" {
            break;
        } else if code == "0001" {
            // The greeting.
        } else if code == "2002" {
            let headings: Vec<&str> = rest.split_whitespace().collect();
            if headings != EXPECTED_HEADINGS {
                return Err(StatusError::UnknownFormat(rest.trim().to_string()));
            }
        } else if code == "1002" {
            peers.extend(parse_row(rest, ip));
        } else if ends_reply(line) {
            return Err(StatusError::Bird(line.to_string()));
        } else {
            return Err(StatusError::UnexpectedLine(line.to_string()));
        }
    }
    Ok(peers)
}

fn parse_row(row: &str, ip: IpVersion) -> Option<Peer> {
    let cols: Vec<&str> = row.split_whitespace().collect();
    if cols.len() < 6 || cols[1] != "BGP" {
        return None;
    }
    let (prefix, address) = cols[0].split_once('_')?;
    let peer_type = PeerType::from_prefix(prefix)?;
    if address.is_empty() {
        return None;
    }
    Some(Peer {
        peer_address: address.replace('_', ip.separator()),
        peer_type,
        state: cols[3].to_string(),
        since: cols[4].to_string(),
        info: cols[5..].join(" "),
    })
}

/// The peers as `calicoctl node status` prints them: a table with a border, headings in capitals
/// and centred, cells left-aligned; every line ends with a newline.
pub fn peer_table(peers: &[Peer]) -> String {
    let headings = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let rows: Vec<[&str; 5]> = peers
        .iter()
        .map(|p| {
            [
                p.peer_address.as_str(),
                p.peer_type.as_str(),
                p.state.as_str(),
                p.since.as_str(),
                p.info.as_str(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headings[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |cells: [&str; 5], centre: bool| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(&widths) {
            let pad = w - cell.chars().count();
            let left = if centre { pad / 2 } else { 0 };
            s.push(' ');
            s.push_str(&" ".repeat(left));
            s.push_str(cell);
            s.push_str(&" ".repeat(pad - left));
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    let mut out = border.clone();
    out.push_str(&line(headings, true));
    out.push_str(&border);
    for r in rows {
        out.push_str(&line(r, false));
    }
    out.push_str(&border);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from BIRD 1.6.8 (Debian `bird`) running `gingham bgp render`'s configuration for
    // node-a of a three-node mesh (node-b up, node-c not running) with a global BGPPeer and a
    // node-a BGPPeer on port 1790, both unreachable; the Local_Workload_ row is added by hand.
    const V4: &str = "0001 BIRD 1.6.8 ready.\n\
2002-name     proto    table    state  since       info\n\
1002-kernel1  Kernel   master   up     01:48:08    \n \
device1  Device   master   up     01:48:08    \n \
direct1  Direct   master   up     01:48:08    \n \
Global_10_77_0_254 BGP      master   start  01:48:08    Connect       Socket: No route to host\n \
Mesh_10_77_0_2 BGP      master   up     01:48:11    Established   \n \
Mesh_10_77_0_3 BGP      master   start  01:48:08    Passive       \n \
Node_10_77_0_253_port_1790 BGP      master   start  01:48:08    Connect       Socket: No route to host\n \
Local_Workload_10_0_0_5 BGP      master   start  01:48:08    Idle\n\
0000 \n";

    #[test]
    fn bgp_sessions_named_as_confd_names_them_are_peers() {
        let peers = parse_show_protocols(V4, IpVersion::V4).unwrap();
        let got: Vec<_> = peers
            .iter()
            .map(|p| {
                (
                    p.peer_address.as_str(),
                    p.peer_type,
                    p.state.as_str(),
                    p.since.as_str(),
                    p.info.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "10.77.0.254",
                    PeerType::Global,
                    "start",
                    "01:48:08",
                    "Connect Socket: No route to host"
                ),
                ("10.77.0.2", PeerType::Mesh, "up", "01:48:11", "Established"),
                ("10.77.0.3", PeerType::Mesh, "start", "01:48:08", "Passive"),
                // As calicoctl: the port suffix is not stripped.
                (
                    "10.77.0.253.port.1790",
                    PeerType::NodeSpecific,
                    "start",
                    "01:48:08",
                    "Connect Socket: No route to host"
                ),
            ]
        );
    }

    #[test]
    fn ipv6_addresses_take_colons() {
        let reply = "0001 BIRD 1.6.8 ready.\n\
2002-name     proto    table    state  since       info\n\
1002-Mesh_fd80_24e2_f998_72d7__2 BGP master up 2016-11-21 Established\n\
0000 \n";
        let peers = parse_show_protocols(reply, IpVersion::V6).unwrap();
        assert_eq!(peers[0].peer_address, "fd80:24e2:f998:72d7::2");
        assert_eq!(peers[0].peer_type, PeerType::Mesh);
    }

    #[test]
    fn no_peers_is_an_empty_list() {
        let reply = "0001 BIRD 1.6.8 ready.\n\
2002-name     proto    table    state  since       info\n\
1002-kernel1  Kernel   master   up     01:50:02    \n\
0000 \n";
        assert_eq!(parse_show_protocols(reply, IpVersion::V4).unwrap(), []);
    }

    #[test]
    fn bird2_headings_and_stray_lines_are_errors() {
        let bird2 = "0001 BIRD 2.0.12 ready.\n\
2002-Name       Proto      Table      State  Since         Info\n\
0000 \n";
        assert!(matches!(
            parse_show_protocols(bird2, IpVersion::V4),
            Err(StatusError::UnknownFormat(_))
        ));
        assert!(matches!(
            parse_show_protocols("0001 BIRD 1.6.8 ready.\nhello\n", IpVersion::V4),
            Err(StatusError::UnexpectedLine(l)) if l == "hello"
        ));
        assert!(matches!(
            parse_show_protocols("0001 BIRD 1.6.8 ready.\n9001 Syntax error\n", IpVersion::V4),
            Err(StatusError::Bird(_))
        ));
    }

    #[test]
    fn configure_replies() {
        // BIRD 1.6.8's answers.
        let ok = "0001 BIRD 1.6.8 ready.\n0002-Reading configuration from /r/bird/bird.cfg\n0003 Reconfigured\n";
        assert_eq!(configure_outcome(ok), Ok(()));
        let bad = "0001 BIRD 1.6.8 ready.\n0002-Reading configuration from /r/bird/bird.cfg\n8002 /r/bird/bird.cfg:3:1 syntax error\n";
        assert_eq!(
            configure_outcome(bad),
            Err(
                "Reading configuration from /r/bird/bird.cfg: /r/bird/bird.cfg:3:1 syntax error"
                    .into()
            )
        );
        assert_eq!(last_line_code("0003 Reconfigured"), Some(3));
        assert_eq!(last_line_code("0002-Reading"), None);
        assert_eq!(last_line_code("0000"), Some(0));
        assert_eq!(last_line_code(" Mesh_1 BGP"), None);
    }

    #[test]
    fn replies_end_at_0000_or_an_error_code() {
        assert!(ends_reply("0000 "));
        assert!(ends_reply("0000"));
        assert!(ends_reply("9001 Syntax error"));
        assert!(ends_reply("8003 Access denied"));
        assert!(!ends_reply("0001 BIRD 1.6.8 ready."));
        assert!(!ends_reply("2002-name proto"));
        assert!(!ends_reply("1002-kernel1 Kernel"));
        assert!(!ends_reply(" Mesh_10_0_0_2 BGP"));
    }

    #[test]
    fn the_table_is_calicoctls() {
        let peers = [Peer {
            peer_address: "172.17.8.102".into(),
            peer_type: PeerType::Mesh,
            state: "up".into(),
            since: "23:30:04".into(),
            info: "Established".into(),
        }];
        assert_eq!(
            peer_table(&peers),
            "+--------------+-------------------+-------+----------+-------------+\n\
             | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n\
             +--------------+-------------------+-------+----------+-------------+\n\
             | 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |\n\
             +--------------+-------------------+-------+----------+-------------+\n"
        );
    }
}
