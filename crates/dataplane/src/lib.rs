//! The dataplane: the policy engine's desired state made real in the kernel.
//!
//! [`render`] turns a node's programs and IP sets into the desired [`Table`] (pure). A
//! [`Programmer`] keeps a record of what is installed and sends only the difference, as one
//! atomic transaction, through a [`Backend`]: [`Nft`] for the kernel, [`Recording`] for tests.
//! The kernel is read once, when the programmer has no record (start, after an error, or on
//! the periodic consistency check), and reconciled without flushing.
//!
//! Incremental transactions go to the kernel as nf_tables netlink batches built by [`nl`]
//! (libnftables would first list the whole table, so its cost grows with the table); whatever
//! [`nl`] cannot encode, and full loads, go as `nft` scripts through libnftables.
//!
//! [`iptables`] renders the same programs in Calico felix's iptables layout and programs them
//! with `iptables-restore` and `ipset`: the peer the benchmarks compare with. The [`Dataplane`]
//! trait (render and install; [`NftDataplane`], [`IptDataplane`]) lets callers swap the two.

pub mod counters;
pub mod iptables;
mod libnft;
pub mod nl;
pub mod render;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gingham_calc::incremental::Change;
use gingham_calc::program::NodeProgram;
use std::io::Write;
use std::process::{Command, Stdio};

pub use counters::{ChainOrigin, Hits, Origins, Owner, RuleOrigin, rule_hits};
pub use render::{Rendered, Renderer, Settings, TABLE, Touched, Tunnels, VXLAN_PORT, render};
pub use table::{Edit, Edits, Op, Position, Script, Table, canonical};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run nft: {0} (install nftables)")]
    Spawn(std::io::Error),
    #[error("nft refused the transaction: {0}")]
    Refused(String),
    #[error("nf_tables netlink transaction: {0}")]
    Netlink(#[from] nl::NlError),
}

/// Which way a transaction went to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    /// Nothing was sent.
    #[default]
    None,
    /// An nft script (libnftables or the `nft` command).
    Text,
    /// An nf_tables netlink batch built by [`nl`].
    Netlink,
}

/// How an incremental transaction went: its path, and the kernel's handles of the rules it
/// added, as far as they are known (the index of each one's op in the script, its handle).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    pub path: Path,
    pub added: Vec<(usize, u64)>,
}

impl Ran {
    fn text() -> Ran {
        Ran {
            path: Path::Text,
            added: Vec::new(),
        }
    }
}

/// Where transactions go and where the installed table is read from.
pub trait Backend {
    /// Runs one script as one atomic transaction.
    fn run(&mut self, script: &str) -> Result<(), Error>;
    /// Runs an incremental transaction whose result is `desired`: as a netlink batch when
    /// the backend can and every op encodes, else as [`Backend::run`] of its text.
    fn run_incremental(&mut self, script: &Script, desired: &Table) -> Result<Ran, Error> {
        let _ = desired;
        self.run(&script.text).map(|()| Ran::text())
    }
    /// The installed table as `nft -j list table inet gingham` prints it; `None` if absent.
    fn read(&mut self) -> Result<Option<String>, Error>;
    /// Reads the installed table as [`Backend::read`] does, from another thread (the metrics
    /// server reads the hit counters at scrape time); `None` when this backend has no kernel.
    fn reader(&self) -> Option<TableReader> {
        None
    }
}

/// Reads the installed table (`nft -j list table`) from any thread.
pub type TableReader = Box<dyn FnMut() -> Result<Option<String>, Error> + Send>;

/// The kernel, through `nft`, in the network namespace of the calling thread or, for tests
/// and benchmarks, in a named one (`ip netns exec`). Transactions in the calling thread's
/// namespace run in-process through libnftables when it loads (the library `nft` itself
/// uses); otherwise, and for reads, `nft` is spawned.
#[derive(Debug)]
pub struct Nft {
    netns: Option<String>,
    lib: Option<libnft::LibNft>,
    /// Whether loading libnftables was tried (or is not wanted).
    lib_tried: bool,
    /// Incremental transactions go as netlink batches when they encode.
    netlink: bool,
    socket: Option<nl::Socket>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            netns: None,
            lib: None,
            lib_tried: false,
            netlink: true,
            socket: None,
        }
    }
}

impl Nft {
    pub fn in_netns(name: &str) -> Nft {
        Nft {
            netns: Some(name.to_owned()),
            ..Nft::default()
        }
    }

    /// Always spawns `nft` (the baseline the benchmarks compare the library with).
    pub fn spawning() -> Nft {
        Nft {
            lib_tried: true,
            ..Nft::default()
        }
    }

    /// Every transaction as an nft script, none as a netlink batch (the baseline the
    /// benchmarks and tests compare the netlink path with).
    pub fn text_only(mut self) -> Nft {
        self.netlink = false;
        self
    }

    /// Whether transactions run in-process (after the first one).
    pub fn in_process(&self) -> bool {
        self.lib.is_some()
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new("nft"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
        }
    }
}

impl Backend for Nft {
    fn run(&mut self, script: &str) -> Result<(), Error> {
        if self.netns.is_none() && !self.lib_tried {
            self.lib_tried = true;
            self.lib = libnft::LibNft::open();
            tracing::debug!(in_process = self.lib.is_some(), "libnftables");
        }
        if let Some(lib) = &mut self.lib {
            return lib.run(script).map_err(Error::Refused);
        }
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(Error::Spawn)?;
        let out = child.wait_with_output().map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(())
    }

    fn run_incremental(&mut self, script: &Script, desired: &Table) -> Result<Ran, Error> {
        if !self.netlink {
            return self.run(&script.text).map(|()| Ran::text());
        }
        match nl::encode(&script.ops, desired) {
            Ok(batch) if batch.bytes() <= nl::MAX_BATCH => {
                if self.socket.is_none() {
                    self.socket = Some(nl::Socket::open(self.netns.as_deref())?);
                }
                let socket = self.socket.as_mut().expect("opened above");
                let added = socket.commit(&batch)?;
                Ok(Ran {
                    path: Path::Netlink,
                    added,
                })
            }
            Ok(_) => self.run(&script.text).map(|()| Ran::text()),
            Err(why) => {
                tracing::debug!(%why, "transaction through libnftables");
                self.run(&script.text).map(|()| Ran::text())
            }
        }
    }

    fn read(&mut self) -> Result<Option<String>, Error> {
        let out = self
            .command()
            .args(["-j", "list", "table", "inet", TABLE])
            .stdin(Stdio::null())
            .output()
            .map_err(Error::Spawn)?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        Err(Error::Refused(err.trim().to_owned()))
    }

    fn reader(&self) -> Option<TableReader> {
        // Reads always spawn `nft` (libnftables is only used for transactions).
        let mut nft = Nft {
            netns: self.netns.clone(),
            lib_tried: true,
            ..Nft::default()
        };
        Some(Box::new(move || nft.read()))
    }
}

/// Keeps every script it is given; reads return `kernel` (for tests).
#[derive(Debug, Default)]
pub struct Recording {
    pub scripts: Vec<String>,
    pub kernel: Option<String>,
    /// Reads done.
    pub reads: usize,
}

impl Backend for Recording {
    fn run(&mut self, script: &str) -> Result<(), Error> {
        self.scripts.push(script.to_owned());
        Ok(())
    }

    fn read(&mut self) -> Result<Option<String>, Error> {
        self.reads += 1;
        Ok(self.kernel.clone())
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// nft commands sent (0: the kernel already matched).
    pub commands: usize,
    /// Size of the transaction.
    pub bytes: usize,
    /// The kernel was read first (no record, or a consistency check).
    pub read_kernel: bool,
    /// The table was replaced whole (a set's type or a base chain changed, or the installed
    /// table could not be read).
    pub replaced: bool,
    /// How the transaction went to the kernel.
    pub path: Path,
    /// Time spent in the backend's transaction: encoding the batch (or libnftables parsing the
    /// script) and the kernel's commit, or the restore commands (not the diff before it).
    pub kernel: Duration,
}

/// Installs desired tables through a backend, sending only what changed.
pub struct Programmer<B> {
    backend: B,
    installed: Option<Table>,
}

impl<B: Backend> Programmer<B> {
    pub fn new(backend: B) -> Self {
        Programmer {
            backend,
            installed: None,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The record of what is installed (`None` until the first sync, and after an error).
    pub fn installed(&self) -> Option<&Table> {
        self.installed.as_ref()
    }

    /// Makes the kernel hold `desired`. Without a record of what is installed, reads the
    /// kernel first and reconciles (no flush: what already matches is left alone). On error
    /// the record is dropped, so the next sync reads the kernel again.
    pub fn sync(&mut self, desired: Table) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let installed = match self.installed.take() {
            Some(t) => Some(t),
            None => {
                applied.read_kernel = true;
                match self.backend.read()? {
                    None => Some(Table::default()),
                    Some(json) => Table::from_kernel(&json, &desired),
                }
            }
        };
        let script = match installed.as_ref().and_then(|t| t.diff(&desired)) {
            Some(s) => s,
            None => {
                applied.replaced = true;
                desired.replace_script()
            }
        };
        if !script.is_empty() {
            let t = Instant::now();
            self.backend.run(&script.text)?;
            applied.kernel = t.elapsed();
            applied.path = Path::Text;
        }
        applied.commands = script.commands;
        applied.bytes = script.text.len();
        let mut record = desired;
        if let Some(read) = installed.filter(|_| !applied.replaced) {
            record.keep_handles(&read);
        }
        self.installed = Some(record);
        Ok(applied)
    }

    /// Makes the kernel hold `desired`, knowing that only the `touched` chains and sets can
    /// differ from the last sync: only those are compared and recorded, so the cost follows
    /// the size of the change rather than the table's. Without a record (or when everything
    /// is touched) this is [`Programmer::sync`].
    pub fn sync_touched(&mut self, desired: &Table, touched: &Touched) -> Result<Applied, Error> {
        let Some(installed) = self.installed.as_mut().filter(|_| !touched.all) else {
            return self.sync(desired.clone());
        };
        let chains: BTreeSet<&str> = touched.chains.iter().map(String::as_str).collect();
        let sets: BTreeSet<&str> = touched.sets.iter().map(String::as_str).collect();
        let Some(script) = installed.diff_edited(desired, &chains, &sets, &touched.edits) else {
            // A set's type or a hook changed: the whole table is replaced.
            return self.sync(desired.clone());
        };
        let mut ran = Ran::default();
        let t = Instant::now();
        if !script.is_empty() {
            match self.backend.run_incremental(&script, desired) {
                Ok(r) => ran = r,
                Err(e) => {
                    self.installed = None;
                    return Err(e);
                }
            }
        }
        let kernel = t.elapsed();
        let path = ran.path;
        installed.copy_edited(desired, &chains, &sets, &touched.edits);
        installed.record_handles(&script.ops, script.handles, &ran.added);
        if installed.links != desired.links {
            installed.links.clone_from(&desired.links);
        }
        Ok(Applied {
            commands: script.commands,
            bytes: script.text.len(),
            path,
            kernel,
            ..Applied::default()
        })
    }

    /// The periodic consistency check: forget the record, read the kernel, repair any drift.
    pub fn check(&mut self, desired: Table) -> Result<Applied, Error> {
        self.installed = None;
        self.sync(desired)
    }
}

/// What went wrong in a [`Dataplane`]: the nft or the iptables path.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Nft(#[from] Error),
    #[error(transparent)]
    Iptables(#[from] iptables::Error),
}

/// A node's programs made real: rendered, then installed (the nft table, or the Calico-style
/// iptables peer), so that benchmarks and tests can swap one for the other.
pub trait Dataplane {
    /// Renders `program` from scratch and installs it (cold start: the kernel is read first).
    fn install(
        &mut self,
        program: NodeProgram,
        settings: Settings,
    ) -> Result<Applied, DataplaneError>;
    /// Applies the calculator's changes: renders what they touch, installs the difference.
    fn update(&mut self, changes: &[Change]) -> Result<Applied, DataplaneError>;
    /// Chains, IP sets and set members of the desired state.
    fn counts(&self) -> (usize, usize, usize);
    /// How long the last [`Dataplane::update`] spent rendering (before the kernel).
    fn last_render(&self) -> Duration;
}

/// The nft table through a [`Programmer`].
pub struct NftDataplane<B> {
    rendering: Duration,
    renderer: Option<Renderer>,
    programmer: Programmer<B>,
    /// The node's interfaces, when the workload dispatch maps are keyed by index.
    links: Option<BTreeMap<String, u32>>,
}

impl<B: Backend> NftDataplane<B> {
    pub fn new(backend: B) -> Self {
        NftDataplane::with_links(backend, None)
    }

    /// A dataplane whose workload dispatch maps are keyed by the indexes of the node's
    /// interfaces `links` (as the agent's are), or by name (`None`).
    pub fn with_links(backend: B, links: Option<BTreeMap<String, u32>>) -> Self {
        NftDataplane {
            rendering: Duration::ZERO,
            renderer: None,
            programmer: Programmer::new(backend),
            links,
        }
    }

    pub fn renderer(&self) -> Option<&Renderer> {
        self.renderer.as_ref()
    }
}

impl<B: Backend> Dataplane for NftDataplane<B> {
    fn install(
        &mut self,
        program: NodeProgram,
        settings: Settings,
    ) -> Result<Applied, DataplaneError> {
        let mut renderer = Renderer::with_links(program, settings, self.links.clone());
        let all = renderer.take_touched();
        let applied = self.programmer.sync_touched(renderer.table(), &all)?;
        self.renderer = Some(renderer);
        Ok(applied)
    }

    fn update(&mut self, changes: &[Change]) -> Result<Applied, DataplaneError> {
        let renderer = self
            .renderer
            .get_or_insert_with(|| Renderer::new(NodeProgram::default(), Settings::default()));
        let t = Instant::now();
        renderer.apply(changes);
        let touched = renderer.take_touched();
        self.rendering = t.elapsed();
        Ok(self.programmer.sync_touched(renderer.table(), &touched)?)
    }

    fn last_render(&self) -> Duration {
        self.rendering
    }

    fn counts(&self) -> (usize, usize, usize) {
        self.renderer.as_ref().map_or((0, 0, 0), Renderer::counts)
    }
}

/// The Calico-style iptables rendering through an [`iptables::IptProgrammer`].
pub struct IptDataplane<B> {
    rendering: Duration,
    renderer: Option<iptables::IptRenderer>,
    programmer: iptables::IptProgrammer<B>,
}

impl<B: iptables::IptBackend> IptDataplane<B> {
    pub fn new(backend: B) -> Self {
        IptDataplane {
            rendering: Duration::ZERO,
            renderer: None,
            programmer: iptables::IptProgrammer::new(backend),
        }
    }

    pub fn renderer(&self) -> Option<&iptables::IptRenderer> {
        self.renderer.as_ref()
    }
}

impl<B: iptables::IptBackend> Dataplane for IptDataplane<B> {
    fn install(
        &mut self,
        program: NodeProgram,
        settings: Settings,
    ) -> Result<Applied, DataplaneError> {
        let mut renderer = iptables::IptRenderer::new(program, settings);
        let all = renderer.take_touched();
        let applied = self.programmer.sync_touched(renderer.table(), &all)?;
        self.renderer = Some(renderer);
        Ok(applied)
    }

    fn update(&mut self, changes: &[Change]) -> Result<Applied, DataplaneError> {
        let renderer = self.renderer.get_or_insert_with(|| {
            iptables::IptRenderer::new(NodeProgram::default(), Settings::default())
        });
        let t = Instant::now();
        renderer.apply(changes);
        let touched = renderer.take_touched();
        self.rendering = t.elapsed();
        Ok(self.programmer.sync_touched(renderer.table(), &touched)?)
    }

    fn last_render(&self) -> Duration {
        self.rendering
    }

    fn counts(&self) -> (usize, usize, usize) {
        self.renderer
            .as_ref()
            .map_or((0, 0, 0), iptables::IptRenderer::counts)
    }
}
