//! `gingham node status`: what `calicoctl node status` prints. Whether the agent and BIRD run
//! (processes in this network namespace), then the BGP peers BIRD and BIRD6 report on their
//! control sockets (`show protocols`), parsed by `gingham_bgp::status`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use gingham_agent::Config;
use gingham_agent::bgp::BirdSupervisor;
use gingham_bgp::status::{self, IpVersion, Peer};

use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Whether this node's agent and BIRD run, and BIRD's BGP peers with their state (as
    /// `calicoctl node status`). Processes are looked for in this network namespace.
    Status(StatusArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// BIRD's control socket (default: bird.ctl in the run directory; without one,
    /// /var/run/calico/bird.ctl, then /var/run/bird/bird.ctl).
    #[arg(long, env = "GINGHAM_BIRD_SOCKET")]
    pub bird_socket: Option<PathBuf>,
    /// BIRD6's control socket (default: bird6.ctl in the run directory; without one,
    /// /var/run/calico/bird6.ctl, then /var/run/bird/bird6.ctl).
    #[arg(long, env = "GINGHAM_BIRD6_SOCKET")]
    pub bird6_socket: Option<PathBuf>,
    /// The node's run directory, where its agent runs BIRD (the agent's --run-dir).
    #[arg(long, env = Config::RUN_DIR_ENV)]
    pub run_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
}

/// How long to wait for each line of BIRD's answer (calicoctl's time-out).
const BIRD_TIMEOUT: Duration = Duration::from_secs(2);

/// The message (and error) when the agent is not running, as calicoctl's.
const AGENT_NOT_RUNNING: &str = "Calico process is not running.";

pub fn run(cmd: &NodeCmd) -> Result<Exit> {
    match cmd {
        NodeCmd::Status(a) => node_status(a),
    }
}

/// One BIRD's part of the status.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BirdStatus {
    running: bool,
    /// Why the peers could not be read (BIRD running but its socket unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    peers: Vec<Peer>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeStatus {
    agent_running: bool,
    ipv4: BirdStatus,
    ipv6: BirdStatus,
}

fn node_status(a: &StatusArgs) -> Result<Exit> {
    let procs = processes_here();
    let agent = procs.iter().any(|argv| is_agent(argv));
    let bird4 = procs
        .iter()
        .any(|argv| is_named(argv, IpVersion::V4.daemon()));
    let bird6 = procs
        .iter()
        .any(|argv| is_named(argv, IpVersion::V6.daemon()));
    let query = |running: bool, ip: IpVersion, socket: &Option<PathBuf>| -> Result<BirdStatus> {
        if !agent || !running {
            return Ok(BirdStatus {
                running,
                error: None,
                peers: Vec::new(),
            });
        }
        match connect(ip, socket.as_deref(), a.run_dir.as_deref()) {
            Ok((stream, path)) => {
                let peers = query_peers(stream, ip).with_context(|| {
                    format!("error executing command: BIRD socket {}", path.display())
                })?;
                Ok(BirdStatus {
                    running,
                    error: None,
                    peers,
                })
            }
            Err(e) => Ok(BirdStatus {
                running,
                error: Some(e),
                peers: Vec::new(),
            }),
        }
    };
    let status = NodeStatus {
        agent_running: agent,
        ipv4: query(bird4, IpVersion::V4, &a.bird_socket)?,
        ipv6: query(bird6, IpVersion::V6, &a.bird6_socket)?,
    };
    match a.output {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(if agent { Exit::Ok } else { Exit::UserError })
        }
        Format::Table => {
            if !agent {
                anyhow::bail!(AGENT_NOT_RUNNING);
            }
            print!("{}", table_text(&status));
            Ok(Exit::Ok)
        }
    }
}

/// The text `calicoctl node status` prints for a running agent.
fn table_text(s: &NodeStatus) -> String {
    let mut out = String::from("Calico process is running.\n");
    if !s.ipv4.running && !s.ipv6.running {
        out.push_str("\nThe BGP backend process (BIRD) is not running.\n");
    } else {
        for (b, ip, name) in [
            (&s.ipv4, IpVersion::V4, "bird"),
            (&s.ipv6, IpVersion::V6, "bird6"),
        ] {
            let n = ip.number();
            if !b.running {
                out.push_str(&format!(
                    "\nINFO: BIRDv{n} process: '{name}' is not running.\n"
                ));
                continue;
            }
            out.push_str(&format!("\nIPv{n} BGP status\n"));
            if let Some(e) = &b.error {
                out.push_str(&format!("Error querying BIRD: {e}\n"));
            } else if b.peers.is_empty() {
                out.push_str(&format!("No IPv{n} peers found.\n"));
            } else {
                out.push_str(&status::peer_table(&b.peers));
            }
        }
    }
    out.push('\n');
    out
}

/// BIRD's own default run directory (a BIRD not started by an agent).
const BIRD_RUN_DIR: &str = "/var/run/bird";

/// Where BIRD's control socket may be, in the order tried: the given path, else the one in the
/// given run directory (where the agent runs BIRD), else Calico's then BIRD's default.
fn socket_candidates(ip: IpVersion, given: Option<&Path>, run_dir: Option<&Path>) -> Vec<PathBuf> {
    match (given, run_dir) {
        (Some(p), _) => vec![p.to_path_buf()],
        (None, Some(dir)) => vec![BirdSupervisor::socket(dir, ip)],
        (None, None) => [Config::DEFAULT_RUN_DIR, BIRD_RUN_DIR]
            .into_iter()
            .map(|d| BirdSupervisor::socket(Path::new(d), ip))
            .collect(),
    }
}

/// Connects to BIRD's control socket: the given path, else the one in the given run directory,
/// else Calico's then BIRD's default.
fn connect(
    ip: IpVersion,
    given: Option<&Path>,
    run_dir: Option<&Path>,
) -> std::result::Result<(UnixStream, PathBuf), String> {
    let mut last = String::new();
    for path in socket_candidates(ip, given, run_dir) {
        match UnixStream::connect(&path) {
            Ok(s) => return Ok((s, path)),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot connect to BIRD");
                last = format!(
                    "unable to connect to BIRDv{} socket: {}: {}",
                    ip.number(),
                    path.display(),
                    crate::output::io_error_words(&e)
                );
            }
        }
    }
    Err(last)
}

/// Sends `show protocols` and reads the answer up to its last line.
fn query_peers(mut stream: UnixStream, ip: IpVersion) -> Result<Vec<Peer>> {
    stream.set_read_timeout(Some(BIRD_TIMEOUT))?;
    stream
        .write_all(status::SHOW_PROTOCOLS.as_bytes())
        .context("unable to write to BIRD socket")?;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .context("reading BIRD's answer")?;
        if n == 0 {
            break;
        }
        let end = status::ends_reply(line.trim_end_matches('\n'));
        reply.push_str(&line);
        if end {
            break;
        }
    }
    Ok(status::parse_show_protocols(&reply, ip)?)
}

/// The command lines of the processes in this network namespace (every process when namespaces
/// cannot be compared, e.g. without the right to read another user's).
fn processes_here() -> Vec<Vec<String>> {
    let own_ns = std::fs::read_link("/proc/self/ns/net").ok();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = entry.path();
        if let (Some(own), Ok(theirs)) = (&own_ns, std::fs::read_link(p.join("ns/net")))
            && *own != theirs
        {
            continue;
        }
        // Gone since listed, or a kernel thread: no command line.
        let Ok(raw) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.is_empty() {
            out.push(argv);
        }
    }
    out
}

fn program(argv: &[String]) -> &str {
    argv.first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("")
}

/// `bird`, `/usr/sbin/bird`...: the program's file name is `name`.
fn is_named(argv: &[String], name: &str) -> bool {
    program(argv) == name
}

/// `gingham [GLOBAL OPTIONS] agent ...`: the first word after the global options (`--datastore`
/// and `--log`, with their values) is `agent`.
fn is_agent(argv: &[String]) -> bool {
    if program(argv) != "gingham" {
        return false;
    }
    let mut words = argv.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--datastore" | "--log" => {
                words.next();
            }
            w if w.starts_with("--datastore=") || w.starts_with("--log=") => {}
            w => return w == "agent",
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn sockets_are_looked_for_in_the_run_directory() {
        let paths = |ip, given: Option<&str>, run: Option<&str>| {
            socket_candidates(ip, given.map(Path::new), run.map(Path::new))
        };
        assert_eq!(
            paths(IpVersion::V4, None, None),
            [
                PathBuf::from("/var/run/calico/bird.ctl"),
                PathBuf::from("/var/run/bird/bird.ctl")
            ]
        );
        assert_eq!(
            paths(IpVersion::V6, None, Some("/tmp/n1")),
            [PathBuf::from("/tmp/n1/bird6.ctl")]
        );
        assert_eq!(
            paths(IpVersion::V4, Some("/x.ctl"), Some("/tmp/n1")),
            [PathBuf::from("/x.ctl")]
        );
    }

    #[test]
    fn the_agent_is_found_after_global_options() {
        assert!(is_agent(&argv("gingham agent --node a")));
        assert!(is_agent(&argv(
            "/usr/bin/gingham --datastore sqlite:/x agent --node a"
        )));
        assert!(is_agent(&argv(
            "gingham --log=debug --datastore=etcd agent"
        )));
        assert!(!is_agent(&argv("gingham node status")));
        assert!(!is_agent(&argv("gingham --datastore agent get nodes")));
        assert!(!is_agent(&argv("calico-node -felix")));
        assert!(is_named(&argv("/usr/sbin/bird -c x"), "bird"));
        assert!(!is_named(&argv("/usr/sbin/bird6 -c x"), "bird"));
    }
}
