//! The BGP manager: what confd and runit do in calico-node when the networking backend is
//! `bird`.
//!
//! On a resync and on every change the BIRD configuration reads (Nodes, BGPConfigurations,
//! BGPPeers, BGPFilters, IPPools and this node's block affinities), the manager renders the six
//! files Calico's confd writes ([`gingham_bgp::render`]). When the text changed it stages them,
//! has `bird -p -c` and `bird6 -p -c` check them, and only then moves them into place and tells
//! the running daemons to load them (`configure` on their control sockets). A configuration BIRD
//! rejects is never loaded: the previous one stays, and `/readiness` says why until a later
//! configuration is accepted.
//!
//! The manager also keeps `bird` and `bird6` running, as runit does: children of the agent, in
//! the foreground, with their control sockets in the node's run directory, started again with a
//! growing back-off when they die (found on the agent's ticks), and killed with the agent. BIRD
//! runs with graceful restart (`-R`, and `graceful restart` in the rendered kernel and BGP
//! protocols, the kernel protocol with `persist`): a BIRD that crashes leaves its routes in the
//! kernel and its peers keep the routes they learned from it while it comes back.
//!
//! Processes and files are effects of a [`Supervisor`]: [`BirdSupervisor`] runs the real
//! daemons, [`RecordingSupervisor`] keeps what was asked (for tests).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gingham_bgp::status::{self, IpVersion};
use gingham_bgp::{Input, Options};
use gingham_datastore::Datastore;
use gingham_model::{Kind, Resource};

use crate::{Config, Error, Health, Manager, Networking, Update};

/// The stored kinds the BIRD configuration is rendered from (block affinities, a view of IPAM's
/// keys, come on top: [`input_from`]).
pub const INPUT_KINDS: [Kind; 5] = [
    Kind::Node,
    Kind::BgpConfiguration,
    Kind::BgpPeer,
    Kind::BgpFilter,
    Kind::IpPool,
];

/// The renderer's input from `resources` (those of [`INPUT_KINDS`]; others are ignored) and
/// the block affinities of IPAM in `store`.
pub fn input_from(
    resources: impl IntoIterator<Item = Resource>,
    store: &dyn Datastore,
) -> Result<Input, gingham_api::ApiError> {
    let mut input = Input::default();
    let wanted = resources
        .into_iter()
        .filter(|r| INPUT_KINDS.contains(&r.kind()))
        .collect();
    gingham_bgp::load::add_resources(&mut input, wanted);
    let (affinities, _) = gingham_api::block_affinities(store)?;
    gingham_bgp::load::add_resources(&mut input, affinities);
    Ok(input)
}

/// The renderer's input as the datastore holds it now (what `gingham bgp render` reads without
/// files).
pub fn input_from_datastore(store: &dyn Datastore) -> Result<Input, gingham_api::ApiError> {
    let mut resources = Vec::new();
    for kind in INPUT_KINDS {
        resources.extend(gingham_api::list(store, kind, None)?.0);
    }
    input_from(resources, store)
}

/// Adds the local workloads of `<prefix>/endpoint-status/*` (felix's endpoint status files; a
/// missing directory means none) to `input`. Files that cannot be read are skipped, as confd
/// skips them; the returned warnings say which and why.
pub fn read_endpoint_status(prefix: &Path, input: &mut Input) -> std::io::Result<Vec<String>> {
    let dir = prefix.join("endpoint-status");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut warnings = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = std::fs::read_to_string(&p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
            .and_then(|t| gingham_bgp::load::local_workload(&name, &t));
        match parsed {
            Ok(w) => input.local_workloads.push(w),
            Err(e) => warnings.push(format!("{e}; skipped")),
        }
    }
    Ok(warnings)
}

/// What went wrong with BIRD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BirdError {
    /// The program is not on PATH.
    #[error(
        "{program} is not installed: no {program} on PATH (install the Debian package bird, which has bird and bird6)"
    )]
    Missing { program: &'static str },
    /// BIRD refused the configuration (`bird -p -c`, or `configure`), with its message.
    #[error("BIRD rejected the configuration: {0}")]
    Rejected(String),
    /// Anything else (files, sockets, processes).
    #[error("{0}")]
    Failed(String),
}

/// A daemon as the supervisor last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonState {
    /// Not started (or its exit already reported).
    Stopped,
    Running,
    /// It exited (reported once; then it is [`DaemonState::Stopped`]), and how.
    Exited(String),
}

/// The process and file effects of the BGP manager.
pub trait Supervisor {
    /// Writes the candidate files, replacing earlier candidates.
    fn stage(&mut self, files: &[(&'static str, String)]) -> Result<(), BirdError>;
    /// Checks the candidate configuration of `ip` (`bird -p -c`, `bird6 -p -c`).
    fn check(&mut self, ip: IpVersion) -> Result<(), BirdError>;
    /// Moves the candidates to where the daemons read their configuration.
    fn install(&mut self) -> Result<(), BirdError>;
    /// Starts the daemon on the installed configuration.
    fn start(&mut self, ip: IpVersion) -> Result<(), BirdError>;
    /// Whether the daemon runs.
    fn state(&mut self, ip: IpVersion) -> DaemonState;
    /// Has the running daemon load the installed configuration.
    fn reload(&mut self, ip: IpVersion) -> Result<(), BirdError>;
    /// Stops the daemon as an administrator would (SIGTERM: BIRD closes its sessions, so its
    /// peers drop its routes at once), if it runs.
    fn stop(&mut self, ip: IpVersion);
}

/// The real daemons, children of the agent, their files in the node's run directory:
/// `<run_dir>/bird/` holds the installed configuration (candidates in
/// `<run_dir>/bird/candidate/`), `<run_dir>/bird.ctl` and `<run_dir>/bird6.ctl` are the
/// control sockets. Dropping it kills the daemons; so does the agent's death (the children
/// are started with a parent-death signal), so no BIRD outlives its agent.
pub struct BirdSupervisor {
    run_dir: PathBuf,
    children: BTreeMap<u8, Child>,
}

/// How long to wait for each line of BIRD's answer on its control socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

impl BirdSupervisor {
    pub fn new(run_dir: &Path) -> Self {
        BirdSupervisor {
            run_dir: run_dir.to_path_buf(),
            children: BTreeMap::new(),
        }
    }

    /// Where the installed configuration is.
    pub fn config_dir(run_dir: &Path) -> PathBuf {
        run_dir.join("bird")
    }

    /// The control socket of `ip`'s daemon.
    pub fn socket(run_dir: &Path, ip: IpVersion) -> PathBuf {
        run_dir.join(ip.socket_name())
    }

    fn staging(&self) -> PathBuf {
        Self::config_dir(&self.run_dir).join("candidate")
    }

    fn failed(what: String) -> impl FnOnce(std::io::Error) -> BirdError {
        move |e| BirdError::Failed(format!("{what}: {e}"))
    }

    fn spawn_error(program: &'static str, e: std::io::Error) -> BirdError {
        if e.kind() == std::io::ErrorKind::NotFound {
            BirdError::Missing { program }
        } else {
            BirdError::Failed(format!("cannot run {program}: {e}"))
        }
    }
}

impl Supervisor for BirdSupervisor {
    fn stage(&mut self, files: &[(&'static str, String)]) -> Result<(), BirdError> {
        let dir = self.staging();
        std::fs::create_dir_all(&dir)
            .map_err(Self::failed(format!("cannot create {}", dir.display())))?;
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(Self::failed(format!("cannot write {}", path.display())))?;
        }
        Ok(())
    }

    fn check(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        let program = ip.daemon();
        let out = Command::new(program)
            .arg("-p")
            .arg("-c")
            .arg(self.staging().join(ip.config_name()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Self::spawn_error(program, e))?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let text = text.trim();
        Err(BirdError::Rejected(if text.is_empty() {
            format!("{program} -p exited with {}", out.status)
        } else {
            text.to_owned()
        }))
    }

    fn install(&mut self) -> Result<(), BirdError> {
        let live = Self::config_dir(&self.run_dir);
        for name in gingham_bgp::FILE_NAMES {
            let (from, to) = (self.staging().join(name), live.join(name));
            std::fs::rename(&from, &to).map_err(Self::failed(format!(
                "cannot move {} into place",
                from.display()
            )))?;
        }
        Ok(())
    }

    fn start(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        let program = ip.daemon();
        let dir = Self::config_dir(&self.run_dir);
        let mut cmd = Command::new(program);
        // -f: foreground (a child of the agent); -R: graceful restart recovery, as calico-node
        // runs it.
        cmd.arg("-f")
            .arg("-R")
            .arg("-c")
            .arg(dir.join(ip.config_name()))
            .arg("-s")
            .arg(Self::socket(&self.run_dir, ip))
            .current_dir(&dir)
            .stdin(Stdio::null());
        // The daemon dies with the agent, however the agent ends (no orphan keeps the socket
        // and the BGP port from the next agent's BIRD).
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and
        // exec; it allocates nothing and touches no lock.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| Self::spawn_error(program, e))?;
        tracing::info!(program, pid = child.id(), "started");
        self.children.insert(ip.number(), child);
        Ok(())
    }

    fn state(&mut self, ip: IpVersion) -> DaemonState {
        let Some(child) = self.children.get_mut(&ip.number()) else {
            return DaemonState::Stopped;
        };
        match child.try_wait() {
            Ok(None) => DaemonState::Running,
            Ok(Some(status)) => {
                self.children.remove(&ip.number());
                DaemonState::Exited(status.to_string())
            }
            Err(e) => {
                self.children.remove(&ip.number());
                DaemonState::Exited(format!("cannot be waited for: {e}"))
            }
        }
    }

    fn reload(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        let socket = Self::socket(&self.run_dir, ip);
        let reply = request(&socket, "configure").map_err(|e| {
            BirdError::Failed(format!(
                "cannot reach {} on {}: {e}",
                ip.daemon(),
                socket.display()
            ))
        })?;
        status::configure_outcome(&reply).map_err(BirdError::Rejected)
    }

    fn stop(&mut self, ip: IpVersion) {
        if let Some(child) = self.children.remove(&ip.number()) {
            Self::stop_child(ip, child);
        }
    }
}

/// How long a stopped BIRD has to close its sessions before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl BirdSupervisor {
    fn stop_child(ip: IpVersion, mut child: Child) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::info!(program = ip.daemon(), "stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for BirdSupervisor {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one command on BIRD's control socket and returns the whole answer (the greeting
/// first), up to its last line.
pub fn request(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut reply = String::new();
    let mut read_reply = |reply: &mut String| -> std::io::Result<()> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let last = status::last_line_code(line.trim_end_matches('\n')).is_some();
            reply.push_str(&line);
            if last {
                return Ok(());
            }
        }
    };
    read_reply(&mut reply)?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    read_reply(&mut reply)?;
    Ok(reply)
}

/// Keeps what was asked of it, for tests: the staged files, the checks, installs, starts and
/// reloads. `reject` makes the next checks fail with that message; `missing` makes every start
/// and check fail as a missing program would; [`RecordingSupervisor::crash`] makes a running
/// daemon exit.
#[derive(Debug, Default)]
pub struct RecordingSupervisor {
    /// The files of each `stage`, in order.
    pub staged: Vec<Vec<(&'static str, String)>>,
    /// The installed files.
    pub installed: Option<Vec<(&'static str, String)>>,
    pub checks: Vec<IpVersion>,
    pub starts: Vec<IpVersion>,
    pub reloads: Vec<IpVersion>,
    pub stops: Vec<IpVersion>,
    pub reject: Option<String>,
    /// Makes `configure` on the running daemons fail with that message.
    pub reject_reload: Option<String>,
    pub missing: bool,
    running: BTreeSet<u8>,
    crashed: BTreeSet<u8>,
}

impl RecordingSupervisor {
    /// The daemon dies (as with SIGKILL).
    pub fn crash(&mut self, ip: IpVersion) {
        if self.running.remove(&ip.number()) {
            self.crashed.insert(ip.number());
        }
    }
}

impl Supervisor for RecordingSupervisor {
    fn stage(&mut self, files: &[(&'static str, String)]) -> Result<(), BirdError> {
        self.staged.push(files.to_vec());
        Ok(())
    }

    fn check(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        self.checks.push(ip);
        if self.missing {
            return Err(BirdError::Missing {
                program: ip.daemon(),
            });
        }
        match &self.reject {
            Some(m) => Err(BirdError::Rejected(m.clone())),
            None => Ok(()),
        }
    }

    fn install(&mut self) -> Result<(), BirdError> {
        self.installed = self.staged.last().cloned();
        Ok(())
    }

    fn start(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        if self.missing {
            return Err(BirdError::Missing {
                program: ip.daemon(),
            });
        }
        self.starts.push(ip);
        self.running.insert(ip.number());
        Ok(())
    }

    fn state(&mut self, ip: IpVersion) -> DaemonState {
        if self.crashed.remove(&ip.number()) {
            DaemonState::Exited("signal: 9 (SIGKILL)".into())
        } else if self.running.contains(&ip.number()) {
            DaemonState::Running
        } else {
            DaemonState::Stopped
        }
    }

    fn reload(&mut self, ip: IpVersion) -> Result<(), BirdError> {
        self.reloads.push(ip);
        match &self.reject_reload {
            Some(m) => Err(BirdError::Rejected(m.clone())),
            None => Ok(()),
        }
    }

    fn stop(&mut self, ip: IpVersion) {
        if self.running.remove(&ip.number()) {
            self.stops.push(ip);
        }
    }
}

/// How often the daemons are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait before a daemon that died is started again; it doubles up to
/// [`MAX_BACKOFF`] while the daemon keeps dying within [`STABLE_RUN`] of its start.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// One daemon's supervision.
#[derive(Debug)]
struct Daemon {
    ip: IpVersion,
    /// Not started again before this.
    next_start: Option<Instant>,
    backoff: Duration,
    started: Option<Instant>,
    /// A configuration was installed since the daemon started or was last told.
    reload: bool,
    problem: Option<String>,
}

impl Daemon {
    fn new(ip: IpVersion) -> Self {
        Daemon {
            ip,
            next_start: None,
            backoff: MIN_BACKOFF,
            started: None,
            reload: false,
            problem: None,
        }
    }

    /// The daemon died or could not start at `now`: wait before the next start.
    fn back_off(&mut self, now: Instant) {
        let ran_long = self
            .started
            .is_some_and(|s| now.saturating_duration_since(s) >= STABLE_RUN);
        if ran_long {
            self.backoff = MIN_BACKOFF;
        }
        self.next_start = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.started = None;
    }
}

type Files = Vec<(&'static str, String)>;

pub struct BgpManager<S> {
    health: Health,
    node: String,
    /// BIRD runs only with the `bird` networking backend.
    active: bool,
    router_id: Option<String>,
    /// Where endpoint status files are (`<prefix>/endpoint-status/`).
    endpoint_status_prefix: PathBuf,
    supervisor: S,
    /// The resources of [`INPUT_KINDS`], by key.
    resources: BTreeMap<String, Resource>,
    /// The keys of this node's workload endpoints (their endpoint status files are read).
    local_endpoints: BTreeSet<String>,
    /// Something the configuration reads changed since the last rendering.
    dirty: bool,
    /// Renderings done (for tests: a relevant change renders, an irrelevant one does not).
    renders: u64,
    /// The files BIRD loaded last.
    installed: Option<Files>,
    /// The last files BIRD rejected: not checked again until the rendering changes.
    rejected: Option<Files>,
    config_problem: Option<String>,
    /// Render again at this time (an error that may pass: IPAM unreadable, BIRD missing).
    retry: Option<Instant>,
    daemons: [Daemon; 2],
    last_check: Instant,
    /// Renderer warnings already logged.
    warned: BTreeSet<String>,
}

impl<S: Supervisor> BgpManager<S> {
    pub fn new(config: &Config, supervisor: S, health: Health) -> Self {
        BgpManager {
            health,
            node: config.node.clone(),
            active: config.networking == Networking::Bird,
            router_id: None,
            endpoint_status_prefix: config.run_dir.clone(),
            supervisor,
            resources: BTreeMap::new(),
            local_endpoints: BTreeSet::new(),
            dirty: true,
            renders: 0,
            installed: None,
            rejected: None,
            config_problem: None,
            retry: None,
            daemons: IpVersion::BOTH.map(Daemon::new),
            last_check: Instant::now(),
            warned: BTreeSet::new(),
        }
    }

    /// `CALICO_ROUTER_ID`: an IPv4 address, or `hash`; `None`: the node's IPv4 address.
    pub fn set_router_id(&mut self, router_id: Option<String>) {
        self.router_id = router_id.filter(|r| !r.is_empty());
        self.dirty = true;
    }

    /// Where felix's endpoint status files are read (`<prefix>/endpoint-status/`; the run
    /// directory by default, as `CALICO_ENDPOINT_STATUS_PATH_PREFIX` in Calico).
    pub fn set_endpoint_status_prefix(&mut self, prefix: PathBuf) {
        self.endpoint_status_prefix = prefix;
        self.dirty = true;
    }

    pub fn supervisor(&self) -> &S {
        &self.supervisor
    }

    pub fn supervisor_mut(&mut self) -> &mut S {
        &mut self.supervisor
    }

    /// How many times the configuration was rendered.
    pub fn renders(&self) -> u64 {
        self.renders
    }

    /// The files BIRD loaded last.
    pub fn installed(&self) -> Option<&[(&'static str, String)]> {
        self.installed.as_deref()
    }

    /// Renders, checks and loads the configuration if its text changed.
    fn render(&mut self, store: &dyn Datastore, now: Instant) {
        self.dirty = false;
        self.retry = None;
        self.renders += 1;
        let mut input = match input_from(self.resources.values().cloned(), store) {
            Ok(i) => i,
            Err(e) => {
                self.config_problem = Some(format!("cannot read IPAM's block affinities: {e}"));
                self.retry = Some(now + CHECK_INTERVAL);
                return;
            }
        };
        let mut warnings = match read_endpoint_status(&self.endpoint_status_prefix, &mut input) {
            Ok(w) => w,
            Err(e) => vec![format!(
                "cannot read {}: {e}; no local workload peers",
                self.endpoint_status_prefix
                    .join("endpoint-status")
                    .display()
            )],
        };
        let opts = Options {
            node_name: self.node.clone(),
            router_id: self.router_id.clone(),
        };
        let rendered = match gingham_bgp::render(&input, &opts) {
            Ok(r) => r,
            Err(e @ gingham_bgp::RenderError::NodeNotFound(_)) if self.installed.is_some() => {
                // The node left the cluster: BIRD stops speaking for it (its peers, the
                // route reflectors and top-of-rack routers included, drop its routes) until
                // the Node exists again.
                tracing::warn!(error = %e, "this node's Node resource is gone; stopping BIRD");
                for d in &mut self.daemons {
                    self.supervisor.stop(d.ip);
                    *d = Daemon::new(d.ip);
                }
                self.installed = None;
                self.rejected = None;
                self.config_problem = Some(format!("BIRD stopped: {e}"));
                return;
            }
            Err(e) => {
                self.config_problem = Some(format!("cannot render the BIRD configuration: {e}"));
                return;
            }
        };
        warnings.extend(rendered.warnings);
        for w in warnings {
            if self.warned.insert(w.clone()) {
                tracing::warn!(warning = %w, "BIRD configuration");
            }
        }
        let files = rendered.files;
        if self.installed.as_ref() == Some(&files) {
            self.config_problem = None;
            return;
        }
        if self.rejected.as_ref() == Some(&files) {
            return;
        }
        let checked = self.supervisor.stage(&files).and_then(|()| {
            IpVersion::BOTH
                .into_iter()
                .try_for_each(|ip| self.supervisor.check(ip))
        });
        if let Err(e) = checked {
            self.config_problem = Some(e.to_string());
            match e {
                BirdError::Rejected(_) => {
                    tracing::error!(error = %e, "configuration not loaded; the previous one stays");
                    self.rejected = Some(files);
                }
                _ => self.retry = Some(now + MAX_BACKOFF),
            }
            return;
        }
        if let Err(e) = self.supervisor.install() {
            self.config_problem = Some(e.to_string());
            self.retry = Some(now + CHECK_INTERVAL);
            return;
        }
        let first = self.installed.is_none();
        self.installed = Some(files);
        self.rejected = None;
        self.config_problem = None;
        tracing::info!(first, "BIRD configuration written");
        for d in &mut self.daemons {
            d.reload = true;
        }
    }

    /// Starts the daemons that do not run (once a configuration is installed), respecting
    /// their back-off.
    fn supervise(&mut self, now: Instant) {
        self.last_check = now;
        if self.installed.is_none() {
            return;
        }
        let mut refused = Vec::new();
        for d in &mut self.daemons {
            let program = d.ip.daemon();
            match self.supervisor.state(d.ip) {
                DaemonState::Running => {
                    if d.started
                        .is_some_and(|s| now.saturating_duration_since(s) >= STABLE_RUN)
                    {
                        d.backoff = MIN_BACKOFF;
                    }
                    d.problem = None;
                    if d.reload {
                        match self.supervisor.reload(d.ip) {
                            Ok(()) => {
                                d.reload = false;
                                tracing::info!(program, "configuration loaded");
                            }
                            Err(e @ BirdError::Rejected(_)) => {
                                // Checked, yet refused: said until a later configuration
                                // is loaded.
                                d.reload = false;
                                tracing::error!(program, error = %e, "reloading failed");
                                refused.push(format!("reloading {program}: {e}"));
                            }
                            Err(e) => {
                                // A daemon that is still starting may not answer yet: told
                                // again on the next check.
                                tracing::error!(program, error = %e, "reloading failed");
                                d.problem = Some(format!("reloading {program}: {e}"));
                            }
                        }
                    }
                    continue;
                }
                DaemonState::Exited(how) => {
                    d.back_off(now);
                    tracing::error!(program, exit = %how, restart_in = ?d.next_start.map(|t| t - now), "BIRD exited; restarting");
                    d.problem = Some(format!("{program} exited ({how}); restarting it"));
                }
                DaemonState::Stopped => {}
            }
            if d.next_start.is_some_and(|t| now < t) {
                continue;
            }
            match self.supervisor.start(d.ip) {
                Ok(()) => {
                    d.started = Some(now);
                    d.next_start = None;
                    d.reload = false;
                    d.problem = None;
                }
                Err(e) => {
                    d.back_off(now);
                    d.problem = Some(e.to_string());
                }
            }
        }
        if !refused.is_empty() {
            self.config_problem = Some(refused.join("; "));
        }
    }

    fn publish(&self) {
        let problems: Vec<String> = self
            .config_problem
            .iter()
            .chain(self.daemons.iter().filter_map(|d| d.problem.as_ref()))
            .cloned()
            .collect();
        self.health
            .state()
            .set_problem("bgp", (!problems.is_empty()).then(|| problems.join("; ")));
    }
}

impl<S: Supervisor> Manager for BgpManager<S> {
    fn resync(&mut self, resources: &[Resource]) {
        self.resources = resources
            .iter()
            .filter(|r| INPUT_KINDS.contains(&r.kind()))
            .map(|r| (r.key(), r.clone()))
            .collect();
        self.local_endpoints = resources
            .iter()
            .filter(|r| matches!(r, Resource::WorkloadEndpoint(w) if w.spec.node == self.node))
            .map(Resource::key)
            .collect();
        self.dirty = true;
    }

    fn on_update(&mut self, update: &Update) {
        if update.kind == Kind::WorkloadEndpoint {
            // A local workload may have come, gone or changed: its endpoint status file (which
            // the status manager writes before this manager applies) is read again.
            let local = |r: &Resource| matches!(r, Resource::WorkloadEndpoint(w) if w.spec.node == self.node);
            let before = self.local_endpoints.remove(&update.key);
            if update.resource.as_ref().is_some_and(local) {
                self.local_endpoints.insert(update.key.clone());
            }
            self.dirty |= before || self.local_endpoints.contains(&update.key);
            return;
        }
        if update.kind == Kind::Profile {
            // Profile labels decide which local workloads a localWorkloadSelector selects.
            self.dirty |= !self.local_endpoints.is_empty();
            return;
        }
        if !INPUT_KINDS.contains(&update.kind) {
            return;
        }
        let changed = match &update.resource {
            Some(r) => {
                self.resources
                    .insert(update.key.clone(), r.clone())
                    .as_ref()
                    != Some(r)
            }
            None => self.resources.remove(&update.key).is_some(),
        };
        self.dirty |= changed;
    }

    fn on_ipam(&mut self, key: &str) {
        // The renderer reads this node's block affinities.
        self.dirty |= gingham_ipam::stored::parse_affinity_key(key)
            .is_some_and(|(node, _)| node == self.node);
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.active {
            return None;
        }
        let next = self.last_check + CHECK_INTERVAL;
        Some(self.retry.map_or(next, |r| r.min(next)))
    }

    fn apply(&mut self, store: &dyn Datastore, now: Instant) -> Result<(), Error> {
        if !self.active {
            return Ok(());
        }
        if self.dirty || self.retry.is_some_and(|r| now >= r) {
            self.render(store, now);
        }
        self.supervise(now);
        self.publish();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
