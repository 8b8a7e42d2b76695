//! The lab's processes: the nodes' agents (and waiting for them), the servers in pods, nodes
//! and the external host, the etcd proxy, the router's BIRD, and the traffic generator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::state::{NodeState, State, load_state, save_state};
use super::{
    AGENT_HEALTH_PORT, AGENT_REVISION_METRIC, ProxyArgs, ServeArgs, TrafficArgs, WaitArgs, self_exe,
};
use crate::Exit;
use crate::datastore::DatastoreUrl;

/// A node's agent's /metrics (OpenMetrics text, headers included), fetched in its namespace.
pub(crate) fn agent_metrics(node: &NodeState) -> Result<String> {
    let target = gingham_net::NetnsRef::named(&node.netns);
    let addr = SocketAddr::from(([127, 0, 0, 1], AGENT_HEALTH_PORT));
    // A socket keeps the namespace it was made in.
    let mut stream = gingham_net::in_netns(&target, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
    })
    .with_context(|| format!("entering {}", node.netns))?
    .with_context(|| format!("the agent of node {} does not answer on {addr}", node.name))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading the metrics of node {}'s agent", node.name))?;
    Ok(text)
}

/// The datastore revision a node's agent has programmed, from its /metrics.
pub(super) fn agent_revision(node: &NodeState) -> Result<i64> {
    let text = agent_metrics(node)?;
    text.lines()
        .filter(|l| {
            l.strip_prefix(AGENT_REVISION_METRIC)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .find_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .with_context(|| {
            format!(
                "the agent of node {} does not report {AGENT_REVISION_METRIC}",
                node.name
            )
        })
}

/// Whether a write the agents watch happened after `after`, up to `upto`.
fn watched_write_between(
    store: &dyn gingham_datastore::Datastore,
    after: i64,
    upto: i64,
) -> Result<bool> {
    // The writes `lab wait` waits for: every Calico resource (policy and endpoints). The agents
    // also follow IPAM, for routes; those are checked by what they do (a route, a probe).
    let prefix = format!("{}/", gingham_model::kind::KEY_ROOT);
    let mut watch = match store.watch(&prefix, after) {
        Ok(w) => w,
        // History forgotten: the agent must reach `upto` itself.
        Err(gingham_datastore::Error::Compacted { .. }) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    Ok(watch
        .next(Duration::from_millis(200))?
        .is_some_and(|e| e.revision() <= upto))
}

pub(super) fn wait(args: &WaitArgs) -> Result<Exit> {
    let state = load_state(&args.lab.dir)?;
    let store = DatastoreUrl::parse(&state.datastore)?.open()?;
    // Everything written so far; IPAM writes alone (routes, not policy) need not be reached.
    let target = store.revision()?;
    let deadline = std::time::Instant::now() + Duration::from_millis(args.timeout_ms);
    let agents: Vec<&NodeState> = state
        .nodes
        .iter()
        .filter(|n| n.agent_pid.is_some())
        .collect();
    loop {
        let mut behind = Vec::new();
        for node in &agents {
            let problem = match agent_revision(node) {
                Ok(r) if r >= target => continue,
                Ok(r) => match watched_write_between(store.as_ref(), r, target) {
                    Ok(false) => continue,
                    Ok(true) => format!("{} at revision {r}", node.name),
                    Err(e) => format!("{}: {e:#}", node.name),
                },
                Err(e) => format!("{e:#}"),
            };
            behind.push(problem);
        }
        if behind.is_empty() {
            println!("{} agents programmed up to revision {target}", agents.len());
            return Ok(Exit::Ok);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "agents behind the datastore (revision {target}) after {} ms: {}",
                args.timeout_ms,
                behind.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Default, Serialize)]
struct TrafficReport {
    /// Round trips through the held connection, or new connections that succeeded.
    ok: u64,
    /// Round trips that failed, or connection attempts that did not succeed.
    failed: u64,
    /// What went wrong first, if anything.
    first_error: Option<String>,
}

pub(super) fn traffic(args: &TrafficArgs) -> Result<Exit> {
    let addr = SocketAddr::new(args.target, args.port);
    let end = std::time::Instant::now() + Duration::from_secs_f64(args.seconds);
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_millis(500);
    let mut report = TrafficReport::default();
    let fail = |report: &mut TrafficReport, e: String| {
        report.failed += 1;
        report.first_error.get_or_insert(e);
    };
    if args.new_connections {
        while std::time::Instant::now() < end {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(_) => report.ok += 1,
                Err(e) => fail(&mut report, e.to_string()),
            }
            std::thread::sleep(interval);
        }
    } else {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        // The greeting: one line.
        let mut byte = [0u8; 1];
        while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {}
        while std::time::Instant::now() < end {
            let sent = (report.ok % 256) as u8;
            let round = stream
                .write_all(&[sent])
                .and_then(|()| stream.read_exact(&mut byte));
            match round {
                Ok(()) if byte[0] == sent => report.ok += 1,
                Ok(()) => fail(&mut report, format!("echo {} for {sent}", byte[0])),
                Err(e) => {
                    fail(&mut report, e.to_string());
                    break;
                }
            }
            std::thread::sleep(interval);
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(Exit::Ok)
}

/// Starts a node's agent inside the node namespace and waits until it has programmed the node.
pub(super) fn start_agent(exe: &Path, dir: &Path, state: &State, node: &NodeState) -> Result<u32> {
    let log_path = dir.join(format!("agent-{}.log", node.name));
    let log = std::fs::File::create(&log_path)?;
    let run_dir = State::run_dir(dir, &node.name);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(exe)
        .args([
            "agent",
            "--node",
            &node.name,
            "--datastore",
            &state.node_datastore,
            // Always explicit: the agent's own default is bird.
            "--networking",
            &state.networking,
            "--log",
            "info",
            "--health-port",
            &AGENT_HEALTH_PORT.to_string(),
        ])
        .arg("--run-dir")
        .arg(&run_dir)
        .args(state.flow_logs_allowed.then_some("--flow-logs-allowed"))
        .env_remove("GINGHAM_DATASTORE")
        .env_remove("CALICO_NETWORKING_BACKEND")
        .env_remove("GINGHAM_RUN_DIR")
        .env_remove(crate::agent::FLOW_LOGS_ALLOWED_ENV)
        // The user's Kubernetes cluster is not the lab's: its Secrets and Services are not
        // read by the lab's BIRD.
        .env_remove("KUBECONFIG")
        .env_remove(gingham_agent::bgp::kube::NAMESPACE_ENV)
        .env_remove(gingham_bgp::K8S_NODE_REF_ENV)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the agent")?;
    for _ in 0..500 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("programmed; watching") {
            return Ok(child.id());
        }
        if text.contains("error") {
            bail!("the agent of node {} failed: {text}", node.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the agent of node {} did not start; see {}",
        node.name,
        log_path.display()
    )
}

/// Starts the pod's server on its declared ports (detached); returns its pid.
pub(super) fn start_server(
    exe: &Path,
    dir: &Path,
    netns: &str,
    log_name: &str,
    name: &str,
    ports: &[(u8, u16)],
) -> Result<Option<u32>> {
    let tcp: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p == 6)
        .map(|(_, n)| n.to_string())
        .collect();
    let udp: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p == 17)
        .map(|(_, n)| n.to_string())
        .collect();
    if tcp.is_empty() && udp.is_empty() {
        return Ok(None);
    }
    let log = std::fs::File::create(dir.join(log_name))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(exe)
        .args(["lab", "serve", "--name", name]);
    if !tcp.is_empty() {
        cmd.args(["--tcp", &tcp.join(",")]);
    }
    if !udp.is_empty() {
        cmd.args(["--udp", &udp.join(",")]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the pod's server")?;
    // Wait until it listens, so a probe right after `lab up` finds it.
    for _ in 0..100 {
        let ready = std::fs::read_to_string(dir.join(log_name))
            .map(|s| s.contains("listening"))
            .unwrap_or(false);
        if ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(child.id()))
}

/// Starts the etcd proxy for the nodes and points the nodes' datastore at it.
pub(super) fn start_etcd_proxy(
    dir: &Path,
    state: &mut State,
    endpoints: Option<Vec<String>>,
) -> Result<()> {
    let endpoints =
        endpoints.unwrap_or_else(|| gingham_datastore_etcd::EtcdConfig::from_env().endpoints);
    let first = endpoints.first().context("no etcd endpoint")?;
    let upstream = first
        .strip_prefix("http://")
        .with_context(|| format!("the lab reaches etcd over plain http only (got {first})"))?
        .trim_end_matches('/')
        .to_owned();
    let exe = self_exe()?;
    let log = std::fs::File::create(dir.join("etcd-proxy.log"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["lab", "proxy", "--upstream", &upstream]);
    for n in &state.nodes {
        cmd.args(["--netns", &n.netns]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the etcd proxy")?;
    state.proxy_pid = Some(child.id());
    state.node_datastore = "etcd:http://127.0.0.1:2379".into();
    save_state(dir, state)?;
    for _ in 0..200 {
        let ready = std::fs::read_to_string(dir.join("etcd-proxy.log"))
            .map(|s| s.contains("listening"))
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the etcd proxy did not start; see {}",
        dir.join("etcd-proxy.log").display()
    )
}

/// Forwards connections made to 127.0.0.1:port inside each node namespace to the upstream,
/// reached from this process's own namespace. Sockets keep the namespace they were made in, so
/// one process serves every node.
pub(super) fn proxy(args: &ProxyArgs) -> Result<Exit> {
    let mut listeners = Vec::new();
    for ns in &args.netns {
        let target = gingham_net::NetnsRef::named(ns);
        let port = args.listen_port;
        let listener =
            gingham_net::in_netns(&target, move || TcpListener::bind(("127.0.0.1", port)))
                .with_context(|| format!("entering {ns}"))?
                .with_context(|| format!("listening on 127.0.0.1:{port} in {ns}"))?;
        listeners.push(listener);
    }
    println!(
        "listening in {} namespaces, forwarding to {}",
        args.netns.len(),
        args.upstream
    );
    std::thread::scope(|sc| {
        for listener in &listeners {
            let upstream = args.upstream.clone();
            sc.spawn(move || {
                for inbound in listener.incoming().flatten() {
                    let Ok(outbound) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (Ok(mut a_read), Ok(mut b_read)) =
                        (inbound.try_clone(), outbound.try_clone())
                    else {
                        continue;
                    };
                    let (mut a_write, mut b_write) = (inbound, outbound);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a_read, &mut b_write);
                        let _ = b_write.shutdown(std::net::Shutdown::Write);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut b_read, &mut a_write);
                        let _ = a_write.shutdown(std::net::Shutdown::Write);
                    });
                }
            });
        }
    });
    Ok(Exit::Ok)
}

pub(super) fn serve(args: &ServeArgs) -> Result<Exit> {
    let mut handles = Vec::new();
    for &port in &args.tcp {
        let listener =
            TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind TCP {port}"))?;
        let name = args.name.clone();
        handles.push(std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                // Greet with our name and the address the client comes from, then echo
                // whatever comes (long-lived connections in tests).
                let name = name.clone();
                std::thread::spawn(move || {
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|_| "-".to_owned(), |a| a.to_string());
                    let _ = stream.write_all(format!("{name} {peer}\n").as_bytes());
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for &port in &args.udp {
        let socket =
            UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("bind UDP {port}"))?;
        let name = args.name.clone();
        handles.push(std::thread::spawn(move || {
            // Answer each datagram with our name and the address it came from.
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(format!("{name} {from}\n").as_bytes(), from);
            }
        }));
    }
    println!("listening on TCP {:?} UDP {:?}", args.tcp, args.udp);
    for h in handles {
        let _ = h.join();
    }
    Ok(Exit::Ok)
}

/// The lock that serialises starting the external host's servers.
pub(super) const EXTERNAL_LOCK: &str = "external.lock";

/// The log of the external host's server on one port.
pub(super) fn external_log(proto: u8, port: u16) -> String {
    format!(
        "external-{}-{port}.log",
        gingham_calc::eval::protocol_name(proto)
    )
}

/// Starts the external host's server on `proto`/`port` unless one runs (the state is saved).
pub(super) fn ensure_external_server_in(
    dir: &Path,
    state: &mut State,
    exe: &Path,
    proto: u8,
    port: u16,
) -> Result<()> {
    let x = state
        .external
        .as_mut()
        .context("this lab has no external host")?;
    if x.servers.iter().any(|(p, n, _)| (*p, *n) == (proto, port)) {
        return Ok(());
    }
    let netns = x.netns.clone();
    let pid = start_server(
        exe,
        dir,
        &netns,
        &external_log(proto, port),
        &format!("{}/external", state.name),
        &[(proto, port)],
    )?
    .context("no port to serve")?;
    if let Some(x) = state.external.as_mut() {
        x.servers.push((proto, port, pid));
    }
    save_state(dir, state)
}

/// [`ensure_external_server_in`] for a running lab, under a lock so that two `lab try` at once
/// start one server.
pub(super) fn ensure_external_server(dir: &Path, proto: u8, port: u16) -> Result<()> {
    let path = dir.join(EXTERNAL_LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let mut state = load_state(dir)?;
    ensure_external_server_in(dir, &mut state, &self_exe()?, proto, port)
}

/// The router's BIRD's control socket, in the router's directory.
pub(super) const ROUTER_BIRD_SOCKET: &str = "bird.ctl";

/// A BIRD protocol name for a node (letters, digits and `_`).
fn bird_name(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("node_{clean}")
}

/// The router's BIRD configuration: a BGP session with every node of every rack (from the
/// router's address in that rack), importing what they announce into the kernel.
pub(super) fn router_bird_config(state: &State, router_as: u32, node_as: u32) -> Result<String> {
    let router = state.router.as_ref().context("this lab has no router")?;
    let id = &router
        .racks
        .first()
        .context("a router without racks")?
        .gateway;
    let mut conf = format!(
        "# The lab router's BIRD (gingham lab): BGP with every node, pod routes into the kernel.\n\
         router id {id};\n\n\
         protocol device {{\n  scan time 2;\n}}\n\n\
         protocol kernel {{\n  scan time 2;\n  import none;\n  export all;\n  merge paths on;\n}}\n"
    );
    for n in &state.nodes {
        let rack = router
            .racks
            .iter()
            .find(|r| Some(&r.name) == n.rack.as_ref())
            .with_context(|| format!("node {} is in no rack of the router", n.name))?;
        conf.push_str(&format!(
            "\nprotocol bgp {} {{\n  description \"node {} in rack {}\";\n  local {} as {router_as};\n  neighbor {} as {node_as};\n  source address {};\n  import all;\n  export none;\n  graceful restart;\n}}\n",
            bird_name(&n.name),
            n.name,
            rack.name,
            rack.gateway,
            n.ip,
            rack.gateway,
        ));
    }
    Ok(conf)
}

/// Writes the router's BIRD configuration, has BIRD check it (`bird -p`), and starts BIRD in
/// the router's namespace; waits for its control socket.
pub(super) fn start_router_bird(
    dir: &Path,
    state: &mut State,
    router_as: u32,
    node_as: u32,
) -> Result<()> {
    let rdir = State::router_dir(dir);
    std::fs::create_dir_all(&rdir).with_context(|| format!("cannot create {}", rdir.display()))?;
    let conf = rdir.join("bird.conf");
    let socket = rdir.join(ROUTER_BIRD_SOCKET);
    std::fs::write(&conf, router_bird_config(state, router_as, node_as)?)
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let check = Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&conf)
        .output()
        .context("cannot run `bird` (install Debian's bird package) for spec.router.asNumber")?;
    if !check.status.success() {
        bail!(
            "BIRD refuses the router's configuration {}: {}",
            conf.display(),
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    let netns = state.router.as_ref().context("no router")?.netns.clone();
    let log = std::fs::File::create(rdir.join("bird.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &netns, "bird", "-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the router's BIRD")?;
    if let Some(r) = state.router.as_mut() {
        r.bird_pid = Some(child.id());
    }
    save_state(dir, state)?;
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the router's BIRD did not open {}; see {}",
        socket.display(),
        rdir.join("bird.log").display()
    )
}
