//! The CNI plugin: what `gingham` does when a container runtime runs it with `CNI_COMMAND` set
//! (installed as `gingham` in the CNI bin directory), or as `gingham-ipam` (IPAM only).
//!
//! ADD: allocate from Calico-style block IPAM, plumb the veth (host side `cali…`, created directly
//! in the pod namespace), write the WorkloadEndpoint, print the result. A failure undoes what
//! this call did, and only that: it releases the addresses it allocated, never others the
//! container's handle holds. A repeated ADD for a container and interface that already has its
//! endpoint returns that endpoint's result (the same addresses) or an error, never a second
//! address, as Calico's plugin does. Names (node, container ID, interface, Kubernetes namespace
//! and pod) are checked before the datastore is touched. DEL: idempotent; works when the
//! namespace or the endpoint is already gone; removes the endpoint before releasing its
//! addresses, so an interrupted DEL leaves a leak, never an endpoint listing an address IPAM
//! may hand out again. CHECK: the plumbing, the endpoint and the allocation are all there.
//! Errors are CNI JSON on stdout.
//!
//! The "host" is the network namespace the plugin runs in, as for every CNI plugin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use gingham_api::{Client, WriteMode};
use gingham_cni::{
    CniError, CniResult, Command, ErrorCode, Interface, Invocation, IpConfig, NetConf, PodAddresses,
};
use gingham_datastore::Datastore;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_datastore_kdd::k8s_backed::POD_ENDPOINT;
use gingham_ipam::{AssignIpRequest, AssignRequest, Ipam, PoolSpec, Use};
use gingham_model::endpoint::{WorkloadEndpoint, WorkloadEndpointSpec};
use gingham_model::meta::ObjectMeta;
use gingham_model::{Kind, Resource};
use gingham_net::{NetnsRef, WorkloadPlumbing, WorkloadSpec};
use ipnet::IpNet;

use crate::datastore::DatastoreUrl;

/// Calico's file with the node name, written by calico/node.
const NODENAME_FILE: &str = "/var/lib/calico/nodename";

/// The annotation on a WorkloadEndpoint that records the container ID exactly as the runtime
/// gave it (Calico records it under this key on pods), for container IDs that a Calico
/// `spec.containerID` cannot hold as they are (upper case, `_`, `.`).
pub const CONTAINER_ID_ANNOTATION: &str = gingham_model::k8s::ANNOTATION_CONTAINER_ID;

/// The container ID the runtime used for an endpoint: the annotation when present, else
/// `spec.containerID`.
pub fn runtime_container_id(w: &WorkloadEndpoint) -> &str {
    w.metadata
        .annotations
        .get(CONTAINER_ID_ANNOTATION)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(&w.spec.container_id)
}

/// The `spec.containerID` (and so the WorkloadEndpoint name segment) for a runtime's container
/// ID. An ID Calico accepts in a resource name (lower-case alphanumerics and inner `-`) is used
/// as it is, exactly as Calico's plugin does. Any other ID the CNI spec allows (upper case, `_`,
/// `.`) would make an invalid resource name, so it becomes its lower-cased form with other
/// characters as `-`, followed by `-` and 16 hex digits of a hash of the original, keeping IDs
/// that differ only in case or punctuation apart.
pub fn calico_container_id(raw: &str) -> String {
    let b = raw.as_bytes();
    let calico_ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if calico_ok {
        return raw.to_owned();
    }
    let folded: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let folded = folded.trim_matches('-');
    let hash = fnv1a(raw);
    if folded.is_empty() {
        format!("{hash:016x}")
    } else {
        format!("{folded}-{hash:016x}")
    }
}

/// Calico's rule for a network name (it becomes part of every IPAM handle).
fn check_network_name(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::InvalidConfig,
        format!(
            "network configuration field `name` {name:?} is not a valid network name (valid: letters, digits, '_', '.' and '-')"
        ),
    ))
}

/// A missing network namespace means the container is gone: CNI error 3 (the runtime need not
/// clean up).
fn netns_must_exist(netns: &Path) -> Result<(), CniError> {
    if netns.exists() {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::UnknownContainer,
        format!(
            "CNI_NETNS={} does not exist: the container is gone or was never started",
            netns.display()
        ),
    ))
}

/// Runs the plugin for one invocation; returns what to print on stdout and the exit code.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8], ipam_only: bool) -> (String, u8) {
    let inv = match Invocation::parse(env, stdin) {
        Ok(inv) => inv,
        Err(e) => return (e.to_json(), 1),
    };
    let version = inv.version().to_owned();
    // One call at a time per container on this host: a runtime that times out may run ADD
    // again (or DEL) while the first call still works on the same addresses and interfaces.
    let _lock = match inv.command {
        Command::Add | Command::Del | Command::Check => inv
            .conf
            .as_ref()
            .and_then(|c| lock_container(&format!("{}.{}", c.name, inv.container_id))),
        _ => None,
    };
    let result = match inv.command {
        Command::Version => return (gingham_cni::version_document(&version), 0),
        Command::Add if ipam_only => ipam_add(&inv),
        Command::Add => add(&inv),
        Command::Del if ipam_only => ipam_del(&inv).map(|()| None),
        Command::Del => del(&inv).map(|()| None),
        Command::Check if ipam_only => Ok(None),
        Command::Check => check(&inv).map(|()| None),
        // Ready when the datastore answers.
        Command::Status => conf(&inv)
            .and_then(open_store)
            .and_then(|s| s.revision().map_err(store_error))
            .map(|_| None),
        Command::Gc => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "GC is not implemented yet; use `gingham ipam check` to find leaked addresses",
        )),
    };
    match result {
        Ok(Some(r)) => (r.to_json(&version).to_string(), 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (e.in_version(&version).to_json(), 1),
    }
}

/// Where the per-container locks live (`GINGHAM_CNI_LOCK_DIR` overrides).
const LOCK_DIR: &str = "/run/gingham/cni-locks";

/// Lock files: containers hash into this many, so the directory stays small.
const LOCK_BUCKETS: u64 = 256;

/// Takes this host's lock for a container's calls (held until the returned file is dropped,
/// released by the kernel if the plugin dies). Best effort, as Calico's IPAM lock: without a
/// usable lock directory the call goes on unlocked, with a warning.
fn lock_container(handle: &str) -> Option<std::fs::File> {
    let dir = std::env::var_os("GINGHAM_CNI_LOCK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| LOCK_DIR.into());
    let bucket = fnv1a(handle) % LOCK_BUCKETS;
    let path = dir.join(format!("{bucket:03}.lock"));
    let locked = std::fs::create_dir_all(&dir).and_then(|()| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok(f)
    });
    match locked {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot take the container's lock; going on without it");
            None
        }
    }
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike std's hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn conf(inv: &Invocation) -> Result<&NetConf, CniError> {
    inv.conf
        .as_ref()
        .ok_or_else(|| CniError::new(ErrorCode::Decode, "no network configuration on stdin"))
}

fn store_error(e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Datastore, format!("datastore: {e}"))
}

/// Where the network configuration keeps the datastore.
enum Location {
    /// Calico's `datastore_type: etcdv3` (or `etcd_endpoints`) with its `etcd_*` fields.
    Etcd(EtcdConfig),
    /// Calico's `datastore_type: kubernetes`: the API server from the `kubernetes` section
    /// (`kubeconfig`, `k8s_api_root`), else `KUBECONFIG` or in-cluster.
    Kubernetes,
    /// Our `datastore` URL, else `GINGHAM_DATASTORE`/`DATASTORE_TYPE`, else the default file.
    Url(DatastoreUrl),
}

impl Location {
    /// The datastore the network configuration names: `datastore` (a Gingham URL) first, then
    /// Calico's `datastore_type` (`etcdv3` with `etcd_endpoints` and the `etcd_*_file` fields,
    /// or `kubernetes` with the `kubernetes` section), else `GINGHAM_DATASTORE`, else the
    /// default SQLite file.
    fn of(conf: &NetConf) -> Result<Location, CniError> {
        let kind = conf.datastore_type.as_deref().unwrap_or_default();
        if !matches!(kind, "" | "etcdv3" | "etcd" | "kubernetes") {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "network configuration field datastore_type {kind:?} is not a datastore type (valid: etcdv3, kubernetes, or a `datastore` URL)"
                ),
            ));
        }
        if conf.datastore.is_none() {
            if kind == "kubernetes" {
                return Ok(Location::Kubernetes);
            }
            if conf.etcd_endpoints.is_some() || matches!(kind, "etcdv3" | "etcd") {
                let mut cfg = EtcdConfig::from_env();
                if let Some(eps) = &conf.etcd_endpoints {
                    cfg.endpoints = eps.split(',').map(|s| s.trim().to_owned()).collect();
                }
                cfg.ca_cert_file = conf.etcd_ca_cert_file.clone().or(cfg.ca_cert_file);
                cfg.cert_file = conf.etcd_cert_file.clone().or(cfg.cert_file);
                cfg.key_file = conf.etcd_key_file.clone().or(cfg.key_file);
                return Ok(Location::Etcd(cfg));
            }
        }
        DatastoreUrl::resolve(conf.datastore.as_deref())
            .map(Location::Url)
            .map_err(|e| CniError::new(ErrorCode::InvalidConfig, format!("datastore: {e:#}")))
    }

    /// Whether this is the Kubernetes datastore, where a WorkloadEndpoint is its pod.
    fn is_kubernetes(&self) -> bool {
        matches!(
            self,
            Location::Kubernetes | Location::Url(DatastoreUrl::Kubernetes(_))
        )
    }

    fn open(self, conf: &NetConf) -> Result<Arc<dyn Datastore>, CniError> {
        match self {
            Location::Etcd(cfg) => Ok(Arc::new(EtcdStore::connect(cfg).map_err(store_error)?)),
            Location::Kubernetes => Ok(Arc::new(crate::cni_k8s::kdd_store(conf)?)),
            Location::Url(url) => url.open().map_err(|e| store_error(format!("{e:#}"))),
        }
    }
}

/// The datastore named by the network configuration ([`Location::of`]).
fn open_store(conf: &NetConf) -> Result<Arc<dyn Datastore>, CniError> {
    Location::of(conf)?.open(conf)
}

/// The node name as Calico's plugin finds it: `nodename` in the config, the file named by
/// `nodename_file` (or Calico's), then the host name.
fn node_name(conf: &NetConf) -> Result<String, CniError> {
    let (name, source) = found_node_name(conf)?;
    if let Err(e) = gingham_ipam::check_node(&name) {
        let why = match e {
            gingham_ipam::Error::Invalid(why) => why,
            other => other.to_string(),
        };
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!("{source}: {why}"),
        ));
    }
    Ok(name)
}

/// The node name and where it was found (for messages).
fn found_node_name(conf: &NetConf) -> Result<(String, String), CniError> {
    if let Some(n) = conf.nodename.as_deref().filter(|n| !n.is_empty()) {
        return Ok((
            n.to_owned(),
            "network configuration field `nodename`".into(),
        ));
    }
    let file = conf.nodename_file.as_deref().unwrap_or(NODENAME_FILE);
    if let Ok(n) = std::fs::read_to_string(file)
        && !n.trim().is_empty()
    {
        return Ok((n.trim().to_owned(), format!("node name file {file}")));
    }
    // Calico lower-cases the host name.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| (h.trim().to_lowercase(), "host name".to_owned()))
        .map_err(|e| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("cannot find the node name: {e}"),
            )
        })
}

/// Who the workload is. Made (and every name in it checked) before the datastore is touched.
struct Workload {
    handle: String,
    node: String,
    /// Kubernetes namespace and pod, when the runtime passed them.
    k8s: Option<(String, String)>,
    /// The container ID as the runtime gave it.
    container_id: String,
    /// The container ID as the WorkloadEndpoint holds it ([`calico_container_id`]).
    calico_id: String,
    ifname: String,
}

impl Workload {
    fn of(inv: &Invocation, conf: &NetConf) -> Result<Workload, CniError> {
        check_network_name(&conf.name)?;
        gingham_cni::check_container_id(&inv.container_id)?;
        gingham_cni::check_ifname(&inv.ifname)?;
        let k8s = inv.k8s_args().map(|k| (k.namespace, k.pod));
        if let Some((ns, pod)) = &k8s {
            if !gingham_model::names::is_dns_label(ns) {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_ARGS K8S_POD_NAMESPACE={ns:?} is not a valid namespace (valid: a DNS-1123 label)"
                    ),
                ));
            }
            if !gingham_model::names::is_dns_subdomain(pod) {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_ARGS K8S_POD_NAME={pod:?} is not a valid pod name (valid: a DNS-1123 subdomain)"
                    ),
                ));
            }
        }
        let w = Workload {
            handle: format!("{}.{}", conf.name, inv.container_id),
            node: node_name(conf)?,
            k8s,
            container_id: inv.container_id.clone(),
            calico_id: calico_container_id(&inv.container_id),
            ifname: inv.ifname.clone(),
        };
        // The endpoint segment of the WorkloadEndpoint name is the interface name.
        if !gingham_model::names::is_dns_subdomain(&w.ifname) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_IFNAME={:?} cannot name a Calico WorkloadEndpoint (valid: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)",
                    w.ifname
                ),
            ));
        }
        let name = w.endpoint_name()?;
        if !gingham_model::names::is_dns_subdomain(&name) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "the WorkloadEndpoint name {name:?} made from the node, container and interface names is not a valid name (valid: a DNS-1123 subdomain of at most 253 characters)"
                ),
            ));
        }
        Ok(w)
    }

    /// Why this workload can have no WorkloadEndpoint in the Kubernetes datastore, where an
    /// endpoint is its pod's `eth0` and lives in the pod's annotations (as in Calico).
    fn kdd_problem(&self) -> Option<CniError> {
        if self.k8s.is_none() {
            return Some(CniError::new(
                ErrorCode::InvalidEnvironment,
                "datastore_type \"kubernetes\" keeps a WorkloadEndpoint in its pod's annotations, and CNI_ARGS names no pod (K8S_POD_NAMESPACE and K8S_POD_NAME, as a kubelet passes them)",
            ));
        }
        if self.ifname != POD_ENDPOINT {
            return Some(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_IFNAME={:?}: in the Kubernetes datastore a pod's WorkloadEndpoint is its {POD_ENDPOINT} (valid: {POD_ENDPOINT})",
                    self.ifname
                ),
            ));
        }
        None
    }

    fn host_ifname(&self) -> String {
        match &self.k8s {
            Some((ns, pod)) => gingham_net::host_ifname("cali", ns, pod),
            None => gingham_net::host_ifname_for_container("cali", &self.container_id),
        }
    }

    fn namespace(&self) -> String {
        self.k8s
            .as_ref()
            .map_or_else(|| "default".to_owned(), |(ns, _)| ns.clone())
    }

    fn endpoint_name(&self) -> Result<String, CniError> {
        let (orch, workload) = match &self.k8s {
            Some((_, pod)) => ("k8s", pod.as_str()),
            None => ("cni", self.calico_id.as_str()),
        };
        gingham_model::names::workload_endpoint_name(&self.node, orch, workload, &self.ifname)
            .map_err(|e| CniError::new(ErrorCode::InvalidEnvironment, e))
    }
}

/// The pools IPAM may use on this node, from the stored IPPools (narrowed to the pools the
/// network configuration names, if any).
fn pools(
    client: &Client,
    node: &str,
    conf: &NetConf,
) -> Result<(Vec<PoolSpec>, Vec<IpNet>), CniError> {
    let node_labels = match client.get(Kind::Node, None, node) {
        Ok(Resource::Node(n)) => n.metadata.labels.clone(),
        _ => Default::default(),
    };
    let wanted: Vec<String> = conf
        .ipam
        .as_ref()
        .map(|i| i.ipv4_pools.iter().chain(&i.ipv6_pools).cloned().collect())
        .unwrap_or_default();
    let (mut pools, reserved) =
        crate::ipam_cmd::stored_pools(client, Some(&node_labels)).map_err(store_error)?;
    if !wanted.is_empty() {
        pools.retain(|p| {
            wanted
                .iter()
                .any(|w| *w == p.name || w.parse::<IpNet>().ok() == Some(p.cidr))
        });
    }
    Ok((pools, reserved))
}

fn ipam_error(e: gingham_ipam::Error) -> CniError {
    use gingham_ipam::Error as E;
    let code = match &e {
        // No address for this workload: pools full, no usable pool, the requested address
        // taken, reserved, cooling down or outside every pool.
        E::Exhausted { .. }
        | E::NoPool { .. }
        | E::BlockLimit { .. }
        | E::InUse { .. }
        | E::CoolingDown { .. }
        | E::NotInPool { .. }
        | E::UseNotAllowed { .. }
        | E::Reserved { .. } => ErrorCode::IpamExhausted,
        _ => ErrorCode::Datastore,
    };
    CniError::new(code, format!("IPAM: {e}"))
}

/// The addresses CNI_ARGS `IP=` requests (a comma-separated list), if any.
fn requested_in_args(inv: &Invocation) -> Result<Option<Vec<IpAddr>>, CniError> {
    let Some(requested) = inv.args.get("IP") else {
        return Ok(None);
    };
    requested
        .split(',')
        .map(|one| {
            one.trim().parse().map_err(|_| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("CNI_ARGS IP={one} is not an IP address"),
                )
            })
        })
        .collect::<Result<Vec<IpAddr>, _>>()
        .map(Some)
}

/// Allocates the workload's addresses: the `requested` ones (CNI_ARGS `IP=`, the pod's
/// `ipAddrs`), else automatically.
fn allocate(
    store: &Arc<dyn Datastore>,
    client: &Client,
    requested: Option<&[IpAddr]>,
    conf: &NetConf,
    w: &Workload,
) -> Result<Vec<IpAddr>, CniError> {
    let (pools, reservations) = pools(client, &w.node, conf)?;
    let ipam = Ipam::new(store.as_ref());
    let mut attrs = BTreeMap::from([
        ("node".to_owned(), w.node.clone()),
        ("timestamp".to_owned(), gingham_api::now_rfc3339()),
    ]);
    if let Some((ns, pod)) = &w.k8s {
        attrs.insert("namespace".into(), ns.clone());
        attrs.insert("pod".into(), pod.clone());
    }
    if let Some(requested) = requested {
        let mut out = Vec::new();
        for &ip in requested {
            let req = AssignIpRequest {
                ip: Some(ip),
                handle_id: w.handle.clone(),
                attrs: attrs.clone(),
                node: w.node.clone(),
                pools: pools.clone(),
                reservations: reservations.clone(),
                intended_use: Use::Workload,
            };
            match ipam.assign_ip(&req) {
                Ok(a) => out.push(a.ip),
                Err(e) => {
                    // Only what this call took: the handle may hold the addresses of another
                    // interface of the same container.
                    release_own(store, &w.handle, &out);
                    return Err(ipam_error(e));
                }
            }
        }
        return Ok(out);
    }
    let ipam_conf = conf.ipam.clone().unwrap_or_default();
    let (v4, v6): (Vec<PoolSpec>, Vec<PoolSpec>) =
        pools.into_iter().partition(|p| p.cidr.addr().is_ipv4());
    let num_v4 = usize::from(ipam_conf.assign_ipv4() && !v4.is_empty());
    // Dual stack by default: an IPv6 address whenever an IPv6 pool can serve this node (Calico
    // needs `assign_ipv6: "true"`; that and `"false"` are still honoured).
    let want_v6 = match &ipam_conf.assign_ipv6 {
        None => true,
        Some(_) => ipam_conf.assign_ipv6(),
    };
    let num_v6 = usize::from(want_v6 && !v6.is_empty());
    if num_v4 + num_v6 == 0 {
        return Err(CniError::new(
            ErrorCode::IpamExhausted,
            format!(
                "no usable IP pool for node {}: create an IPPool (gingham apply -f pool.yaml) or check its nodeSelector and disabled fields",
                w.node
            ),
        ));
    }
    let req = AssignRequest {
        handle_id: w.handle.clone(),
        attrs,
        node: w.node.clone(),
        num_v4,
        num_v6,
        pools_v4: v4,
        pools_v6: v6,
        reservations,
        max_blocks_per_host: None,
        intended_use: Use::Workload,
    };
    let got = ipam.auto_assign(&req).map_err(ipam_error)?;
    Ok(got.v4.iter().chain(&got.v6).map(|a| a.ip).collect())
}

/// The IPAM plugin the configuration names when it is not ours (`host-local`, ...): as Calico's
/// plugin does, we delegate to it, found in CNI_PATH.
fn delegated_ipam(conf: &NetConf) -> Option<&str> {
    let t = conf.ipam.as_ref()?.kind.as_str();
    (!matches!(t, "" | "gingham-ipam" | "calico-ipam")).then_some(t)
}

/// Runs the delegated IPAM plugin with this invocation's environment and configuration.
fn delegate(inv: &Invocation, plugin: &str, command: &str) -> Result<serde_json::Value, CniError> {
    let bin = inv
        .path
        .iter()
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "the IPAM plugin {plugin:?} is not in CNI_PATH ({})",
                    inv.path.join(":")
                ),
            )
        })?;
    let args: Vec<String> = inv.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut child = std::process::Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", inv.netns.as_deref().unwrap_or_default())
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", inv.path.join(":"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(ErrorCode::Io, format!("running {}: {e}", bin.display())))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let _ = stdin.write_all(inv.raw_conf.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(ErrorCode::Io, format!("running {}: {e}", bin.display())))?;
    let value: serde_json::Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("{plugin} printed something that is not JSON: {e}"),
            )
        })?
    };
    if !out.status.success() {
        let msg = value["msg"].as_str().unwrap_or("failed without a message");
        // Whatever the delegate's own code, for the runtime this is an IPAM failure.
        return Err(CniError::new(
            ErrorCode::IpamExhausted,
            format!("{plugin} {command}: {msg}"),
        ));
    }
    Ok(value)
}

/// Releases the addresses one ADD allocated (its failure path), while `handle` holds them.
fn release_own(store: &Arc<dyn Datastore>, handle: &str, ips: &[IpAddr]) {
    if ips.is_empty() {
        return;
    }
    if let Err(e) = Ipam::new(store.as_ref()).release_ips_of_handle(ips, Some(handle)) {
        tracing::error!(%handle, ?ips, error = %e, "could not release the addresses of a failed ADD; `gingham ipam check` reports them");
    }
}

fn ipam_add(inv: &Invocation) -> Result<Option<CniResult>, CniError> {
    let conf = conf(inv)?;
    let w = Workload::of(inv, conf)?;
    let store = open_store(conf)?;
    let client = Client::new(store.clone());
    // A repeated ADD returns what the container already holds.
    let held = Ipam::new(store.as_ref())
        .ips_by_handle(&w.handle)
        .map_err(ipam_error)?;
    let ips = if held.is_empty() {
        let requested = requested_in_args(inv)?;
        allocate(&store, &client, requested.as_deref(), conf, &w)?
    } else {
        held
    };
    Ok(Some(CniResult {
        ips: ips
            .iter()
            .map(|ip| IpConfig {
                address: IpNet::from(*ip),
                gateway: None,
                interface: None,
            })
            .collect(),
        ..CniResult::default()
    }))
}

fn ipam_del(inv: &Invocation) -> Result<(), CniError> {
    let conf = conf(inv)?;
    let w = Workload::of(inv, conf)?;
    let store = open_store(conf)?;
    Ipam::new(store.as_ref())
        .release_by_handle(&w.handle)
        .map(|_| ())
        .map_err(ipam_error)
}

fn netns_path(inv: &Invocation) -> Result<&Path, CniError> {
    inv.netns
        .as_deref()
        .map(Path::new)
        .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set"))
}

/// The pod MTU: the network configuration's `mtu`, else (absent or 0, Calico's
/// `__CNI_MTU__`) the one the node's agent wrote to the MTU file in its run directory
/// (`GINGHAM_RUN_DIR`, default Calico's), else the kernel's default. Calico's
/// `require_mtu_file: true` makes a missing file an error.
fn pod_mtu(conf: &NetConf) -> Result<Option<u32>, CniError> {
    if let Some(mtu) = conf.mtu.filter(|m| *m != 0) {
        return Ok(Some(mtu));
    }
    let run_dir = std::env::var_os(gingham_agent::Config::RUN_DIR_ENV).map_or_else(
        || gingham_agent::Config::DEFAULT_RUN_DIR.into(),
        std::path::PathBuf::from,
    );
    let path = gingham_agent::mtu::file_in(&run_dir);
    let invalid = |e: String| CniError::new(ErrorCode::InvalidConfig, e);
    let found = gingham_agent::mtu::read(&path).map_err(|e| invalid(e.to_string()))?;
    let required = conf
        .other
        .get("require_mtu_file")
        .is_some_and(|v| v.as_bool() == Some(true));
    if found.is_none() && required {
        return Err(invalid(format!(
            "require_mtu_file is true and the MTU file {} does not exist (the node's agent writes it)",
            path.display()
        )));
    }
    Ok(found)
}

fn spec_for(w: &Workload, ips: &[IpAddr], conf: &NetConf) -> Result<WorkloadSpec, CniError> {
    let mut spec = WorkloadSpec::new(&w.host_ifname());
    spec.container_ifname = w.ifname.clone();
    for ip in ips {
        match ip {
            IpAddr::V4(a) => spec = spec.with_ipv4(*a),
            IpAddr::V6(a) => spec = spec.with_ipv6(*a),
        }
    }
    if let Some(mtu) = pod_mtu(conf)? {
        spec = spec.with_mtu(mtu);
    }
    Ok(spec)
}

fn add(inv: &Invocation) -> Result<Option<CniResult>, CniError> {
    let conf = conf(inv)?;
    let netns = netns_path(inv)?;
    netns_must_exist(netns)?;
    let w = Workload::of(inv, conf)?;
    let location = Location::of(conf)?;
    if location.is_kubernetes()
        && let Some(e) = w.kdd_problem()
    {
        return Err(e);
    }
    let store = location.open(conf).map_err(|e| CniError {
        msg: format!("{}; nothing was allocated", e.msg),
        ..e
    })?;
    let client = Client::new(store.clone());
    let name = w.endpoint_name()?;
    let ns = w.namespace();
    let stored = match client.get(Kind::WorkloadEndpoint, Some(&ns), &name) {
        Ok(Resource::WorkloadEndpoint(e)) => Some(e),
        Ok(_) | Err(gingham_api::ApiError::NotFound { .. }) => None,
        Err(e) => return Err(store_error(e)),
    };
    // ADD again for an attachment that exists: its result, never a second address.
    if let Some(e) = &stored
        && runtime_container_id(e) == w.container_id
        && !e.spec.ip_networks.is_empty()
    {
        return existing_attachment(&store, &client, e.clone(), &w, netns, conf).map(Some);
    }
    // Calico's `policy: {type: k8s}`: the pod and its namespace from the API server, before
    // anything is allocated (an API server that cannot be reached fails ADD here).
    let pod_info = match (&w.k8s, conf.k8s_policy()) {
        (Some((ns, pod)), true) => Some(crate::cni_k8s::lookup(conf, &w.node, ns, pod)?),
        _ => None,
    };
    // The pool and family annotations rewrite the IPAM section, as Calico's plugin does.
    let mut planned = conf.clone();
    if let Some(info) = &pod_info {
        info.plan.apply_to(&mut planned);
    }
    let conf = &planned;
    let mut requested = requested_in_args(inv)?;
    let mut no_ipam: Option<Vec<IpAddr>> = None;
    match pod_info.as_ref().map(|i| &i.plan.addresses) {
        Some(PodAddresses::Requested(ips)) => requested = Some(ips.clone()),
        Some(PodAddresses::NoIpam(ips)) => no_ipam = Some(ips.clone()),
        Some(PodAddresses::Ipam) | None => {}
    }
    // A new sandbox of a pod whose endpoint an older sandbox wrote, with `ipAddrs`: as Calico's
    // plugin does, the older sandbox's addresses are released first, or the requested ones
    // would be in use. Only what the older container's handle holds goes.
    if let (Some(PodAddresses::Requested(_)), Some(old)) = (
        pod_info.as_ref().map(|i| &i.plan.addresses),
        stored
            .as_ref()
            .filter(|e| runtime_container_id(e) != w.container_id),
    ) {
        let old_handle = format!("{}.{}", conf.name, runtime_container_id(old));
        let ips: Vec<IpAddr> = old.spec.ip_networks.iter().map(IpNet::addr).collect();
        tracing::info!(endpoint = %name, %old_handle, ?ips, "ipAddrs: releasing the addresses of the pod's previous sandbox");
        Ipam::new(store.as_ref())
            .release_ips_of_handle(&ips, Some(&old_handle))
            .map_err(ipam_error)?;
    }
    let delegated = delegated_ipam(conf);
    // The addresses this call allocates (and releases again if it fails); addresses the handle
    // already held are reused and never released here.
    let mut own: Vec<IpAddr> = Vec::new();
    let ips = match delegated {
        // `ipAddrsNoIpam`: the addresses as given, IPAM bypassed.
        _ if no_ipam.is_some() => no_ipam.clone().unwrap_or_default(),
        None => {
            let orphaned = orphaned_addresses(&store, &client, &w, &name)?;
            if orphaned.is_empty() {
                own = allocate(&store, &client, requested.as_deref(), conf, &w)?;
                own.clone()
            } else {
                tracing::info!(handle = %w.handle, ips = ?orphaned, "reusing the addresses an earlier, unfinished ADD of this container allocated");
                orphaned
            }
        }
        Some(plugin) => delegate(inv, plugin, "ADD")?["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str()?.parse::<IpNet>().ok())
            .map(|n| n.addr())
            .collect(),
    };
    let undo_ipam = || match delegated {
        _ if no_ipam.is_some() => {}
        None => release_own(&store, &w.handle, &own),
        Some(plugin) => {
            if let Err(e) = delegate(inv, plugin, "DEL") {
                tracing::error!(error = %e, "the delegated IPAM plugin could not release a failed ADD's addresses");
            }
        }
    };
    let plumbing = WorkloadPlumbing::new(&NetnsRef::Current).map_err(|e| {
        undo_ipam();
        CniError::new(ErrorCode::Dataplane, format!("netlink: {e}"))
    })?;
    let spec = spec_for(&w, &ips, conf).inspect_err(|_| undo_ipam())?;
    let plumbed = match plumbing.setup(netns, &spec) {
        Ok(p) => p,
        Err(e) => {
            undo_ipam();
            return Err(CniError::new(
                ErrorCode::Dataplane,
                format!(
                    "setting up {} in {}: {e}",
                    spec.host_ifname,
                    netns.display()
                ),
            ));
        }
    };
    let undo = |err: CniError| {
        let _ = plumbing.teardown(&spec.host_ifname);
        undo_ipam();
        err
    };
    let wep = workload_endpoint(
        stored,
        &w,
        &ips,
        &spec,
        &plumbed.container_mac.to_string(),
        conf,
        pod_info.as_ref(),
    )
    .map_err(undo)?;
    if let Err(e) = client.write_all(&[wep], WriteMode::Apply) {
        // A write whose answer was lost (etcd stopped after committing) may have stored the
        // endpoint: then its addresses must stay allocated (DEL releases them). Undo only when
        // the endpoint is certainly absent.
        return Err(match client.get(Kind::WorkloadEndpoint, Some(&ns), &name) {
            Err(gingham_api::ApiError::NotFound { .. }) => undo(store_error(e)),
            _ => {
                tracing::warn!(endpoint = %name, "writing the endpoint failed and whether it was stored is unknown; keeping its addresses for DEL to release");
                store_error(e)
            }
        });
    }
    Ok(Some(attachment_result(
        &spec,
        &w,
        netns,
        plumbed.host_mac.to_string(),
        plumbed.container_mac.to_string(),
        &ips,
    )))
}

/// ADD's result: the host and container interfaces, and the addresses on the container's.
fn attachment_result(
    spec: &WorkloadSpec,
    w: &Workload,
    netns: &Path,
    host_mac: String,
    container_mac: String,
    ips: &[IpAddr],
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: spec.host_ifname.clone(),
                mac: host_mac,
                sandbox: None,
            },
            Interface {
                name: w.ifname.clone(),
                mac: container_mac,
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: ips
            .iter()
            .map(|ip| IpConfig {
                address: IpNet::from(*ip),
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        ..CniResult::default()
    }
}

/// The result of an ADD repeated for an attachment whose endpoint exists: the endpoint's
/// addresses (which IPAM must still hold for the container), if its plumbing is still as set
/// up. If the plumbing is gone (neither interface exists, e.g. after an interrupted DEL) or
/// differs (an ADD killed while plumbing), the container's veth is set up again with the same
/// addresses, as Calico's plugin does. Addresses are never released here: the container may
/// still use them.
fn existing_attachment(
    store: &Arc<dyn Datastore>,
    client: &Client,
    mut e: WorkloadEndpoint,
    w: &Workload,
    netns: &Path,
    conf: &NetConf,
) -> Result<CniResult, CniError> {
    let ips: Vec<IpAddr> = e.spec.ip_networks.iter().map(IpNet::addr).collect();
    let listed = ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let what = format!(
        "container {} already has interface {} with {listed} (WorkloadEndpoint {}/{})",
        w.container_id,
        w.ifname,
        e.metadata.namespace_or_empty(),
        e.metadata.name
    );
    if delegated_ipam(conf).is_none() {
        let held = Ipam::new(store.as_ref())
            .ips_by_handle(&w.handle)
            .map_err(ipam_error)?;
        // Addresses given by `ipAddrsNoIpam` were never IPAM's: nothing to compare.
        let no_ipam = held.is_empty() && conf.feature_control.ip_addrs_no_ipam;
        if let Some(ip) = ips.iter().find(|ip| !no_ipam && !held.contains(ip)) {
            return Err(CniError::new(
                ErrorCode::Datastore,
                format!(
                    "{what}, but IPAM no longer holds {ip} for handle {} (released by hand?); DEL the container and ADD it again",
                    w.handle
                ),
            ));
        }
    }
    let spec = spec_for(w, &ips, conf)?;
    let plumbing = WorkloadPlumbing::new(&NetnsRef::Current)
        .map_err(|e| CniError::new(ErrorCode::Dataplane, format!("netlink: {e}")))?;
    let report = plumbing.check(netns, &spec).map_err(|err| {
        CniError::new(
            ErrorCode::Dataplane,
            format!(
                "{what}, and checking it in {} failed: {err}; DEL it before adding it again",
                netns.display()
            ),
        )
    })?;
    let missing = |f: fn(&gingham_net::Problem) -> bool| report.problems.iter().any(f);
    let mut container_mac = e.spec.mac.clone();
    let mut host_mac = String::new();
    if !report.is_ok() {
        let gone = missing(|p| matches!(p, gingham_net::Problem::HostInterfaceMissing { .. }))
            && missing(|p| matches!(p, gingham_net::Problem::ContainerInterfaceMissing { .. }));
        if gone {
            tracing::info!(container = %w.container_id, ifname = %w.ifname, ips = %listed, "ADD repeated for an attachment whose interfaces are gone; setting them up again with its addresses");
        } else {
            // Half set up (an ADD killed while plumbing) or changed by hand: as Calico's
            // plugin does, the container's own veth is removed and made again, with the
            // addresses it already holds.
            tracing::warn!(container = %w.container_id, ifname = %w.ifname, ips = %listed, problems = %problems_text(&report), "ADD repeated for an attachment whose plumbing differs; setting it up again with its addresses");
            plumbing.teardown(&spec.host_ifname).map_err(|err| {
                CniError::new(
                    ErrorCode::Dataplane,
                    format!(
                        "{what}, but its plumbing in {} differs ({}) and removing {} failed: {err}",
                        netns.display(),
                        problems_text(&report),
                        spec.host_ifname
                    ),
                )
            })?;
        }
        let plumbed = plumbing.setup(netns, &spec).map_err(|err| {
            CniError::new(
                ErrorCode::Dataplane,
                format!(
                    "setting up {} in {} again: {err}",
                    spec.host_ifname,
                    netns.display()
                ),
            )
        })?;
        container_mac = plumbed.container_mac.to_string();
        host_mac = plumbed.host_mac.to_string();
        e.metadata.resource_version = None;
        e.spec.mac = container_mac.clone();
        e.spec.interface_name = spec.host_ifname.clone();
        if let Err(err) = client.write_all(&[Resource::WorkloadEndpoint(e)], WriteMode::Apply) {
            let _ = plumbing.teardown(&spec.host_ifname);
            return Err(store_error(err));
        }
    } else {
        tracing::info!(container = %w.container_id, ifname = %w.ifname, ips = %listed, "ADD repeated for an existing attachment; returning its result");
    }
    Ok(attachment_result(
        &spec,
        w,
        netns,
        host_mac,
        container_mac,
        &ips,
    ))
}

/// A plumbing check's problems in words.
fn problems_text(report: &gingham_net::WorkloadCheck) -> String {
    report
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The addresses the container's handle holds that none of its other endpoints (other
/// interfaces) lists: left by an ADD of this attachment that stopped before writing its
/// endpoint.
fn orphaned_addresses(
    store: &Arc<dyn Datastore>,
    client: &Client,
    w: &Workload,
    name: &str,
) -> Result<Vec<IpAddr>, CniError> {
    let held = Ipam::new(store.as_ref())
        .ips_by_handle(&w.handle)
        .map_err(ipam_error)?;
    if held.is_empty() {
        return Ok(held);
    }
    let others = addresses_of_other_interfaces(client, w, name)?;
    Ok(held.into_iter().filter(|ip| !others.contains(ip)).collect())
}

/// The addresses listed by the container's endpoints other than `name`.
fn addresses_of_other_interfaces(
    client: &Client,
    w: &Workload,
    name: &str,
) -> Result<Vec<IpAddr>, CniError> {
    let (weps, _) = client
        .list(Kind::WorkloadEndpoint, Some(&w.namespace()))
        .map_err(store_error)?;
    Ok(weps
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(e)
                if e.metadata.name != name
                    && e.spec.node == w.node
                    && runtime_container_id(e) == w.container_id =>
            {
                Some(e.spec.ip_networks.iter().map(IpNet::addr))
            }
            _ => None,
        })
        .flatten()
        .collect())
}

/// The WorkloadEndpoint for a plumbed workload. An endpoint already stored under the same name
/// (written when the pod was applied, with its labels and ports) keeps those and gains the
/// interface, MAC and addresses.
fn workload_endpoint(
    existing: Option<WorkloadEndpoint>,
    w: &Workload,
    ips: &[IpAddr],
    spec: &WorkloadSpec,
    mac: &str,
    conf: &NetConf,
    pod: Option<&crate::cni_k8s::PodInfo>,
) -> Result<Resource, CniError> {
    let name = w.endpoint_name()?;
    let ns = w.namespace();
    let mut wep = existing.unwrap_or_else(|| {
        let (orchestrator, profiles) = match &w.k8s {
            Some((ns, _)) => (
                "k8s",
                vec![format!("kns.{ns}"), format!("ksa.{ns}.default")],
            ),
            None => ("cni", vec![conf.name.clone()]),
        };
        let mut labels = BTreeMap::from([
            ("projectcalico.org/namespace".to_owned(), ns.clone()),
            (
                "projectcalico.org/orchestrator".to_owned(),
                orchestrator.to_owned(),
            ),
        ]);
        if w.k8s.is_some() {
            labels.insert("projectcalico.org/serviceaccount".into(), "default".into());
        }
        WorkloadEndpoint {
            metadata: ObjectMeta {
                labels: labels.into_iter().collect(),
                ..ObjectMeta::namespaced(ns.clone(), name.clone())
            },
            spec: WorkloadEndpointSpec {
                orchestrator: orchestrator.to_owned(),
                profiles,
                ..WorkloadEndpointSpec::default()
            },
        }
    });
    wep.metadata.resource_version = None;
    let s = &mut wep.spec;
    s.node = w.node.clone();
    s.endpoint = w.ifname.clone();
    if let Some((_, pod)) = &w.k8s {
        s.pod = pod.clone();
        s.workload = String::new();
    }
    s.container_id = w.calico_id.clone();
    if w.calico_id == w.container_id {
        wep.metadata.annotations.remove(CONTAINER_ID_ANNOTATION);
    } else {
        wep.metadata
            .annotations
            .insert(CONTAINER_ID_ANNOTATION.to_owned(), w.container_id.clone());
    }
    let s = &mut wep.spec;
    s.interface_name = spec.host_ifname.clone();
    s.mac = mac.to_owned();
    s.ip_networks = ips.iter().map(|ip| IpNet::from(*ip)).collect();
    // From the API server: what the pod is now, whatever an earlier endpoint said.
    if let Some(info) = pod {
        wep.metadata.labels = info.labels.clone().into_iter().collect();
        let s = &mut wep.spec;
        s.profiles = info.profiles.clone();
        s.ports = info.ports.clone();
        s.service_account_name = info.service_account.clone();
        s.allow_spoofed_source_prefixes = info.allow_spoofed_source_prefixes.clone();
        s.ip_nats = floating_ips(&info.plan.floating_ips, ips, &name)?;
    }
    let mut r = Resource::WorkloadEndpoint(wep);
    gingham_model::apply_defaults_in(&mut r, &ns);
    let problems = gingham_model::validate(&r);
    if let Some(p) = problems.first() {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!(
                "the WorkloadEndpoint {name} would be invalid: {}: {}",
                p.path, p.message
            ),
        ));
    }
    Ok(r)
}

/// Calico's `floatingIPs`: each external address NATed to the pod's address of its family.
fn floating_ips(
    floating: &[String],
    ips: &[IpAddr],
    endpoint: &str,
) -> Result<Vec<gingham_model::endpoint::IpNat>, CniError> {
    floating
        .iter()
        .map(|f| {
            let v6 = f.contains(':');
            let internal = ips.iter().find(|ip| ip.is_ipv6() == v6).ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "annotation {}: floating IP {f} needs an {} address on {endpoint}, which has none",
                        gingham_model::k8s::ANNOTATION_FLOATING_IPS,
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                )
            })?;
            Ok(gingham_model::endpoint::IpNat {
                internal_ip: internal.to_string(),
                external_ip: f.clone(),
            })
        })
        .collect()
}

fn del(inv: &Invocation) -> Result<(), CniError> {
    let conf = conf(inv)?;
    let w = Workload::of(inv, conf)?;
    let location = Location::of(conf)?;
    // A workload the Kubernetes datastore can hold no endpoint for (its ADD was refused) has
    // none to remove.
    let may_have_endpoint = !location.is_kubernetes() || w.kdd_problem().is_none();
    let store = location.open(conf)?;
    let client = Client::new(store.clone());
    // Each step tolerates what is already gone, so DEL can be repeated. The endpoint goes
    // before the addresses: interrupted in between, DEL leaves a leak (found by `ipam check`,
    // released by the next DEL), never an endpoint listing an address IPAM may hand out again.
    let name = w.endpoint_name()?;
    // A Kubernetes endpoint is named after the pod, not the container: a DEL for an older
    // sandbox of a pod that runs again must leave the running sandbox's endpoint and veth
    // alone (as Calico's plugin does), and only release what its own handle holds.
    let stored = if may_have_endpoint {
        match client.get(Kind::WorkloadEndpoint, Some(&w.namespace()), &name) {
            Ok(Resource::WorkloadEndpoint(e)) => Some(e),
            Ok(_) | Err(gingham_api::ApiError::NotFound { .. }) => None,
            Err(e) => return Err(store_error(e)),
        }
    } else {
        None
    };
    let another_sandboxs = stored
        .as_ref()
        .is_some_and(|e| runtime_container_id(e) != w.container_id);
    if another_sandboxs {
        tracing::warn!(endpoint = %name, container = %w.container_id, "DEL for a container whose pod's endpoint belongs to another container; leaving the endpoint and its veth");
    } else {
        let plumbing = WorkloadPlumbing::new(&NetnsRef::Current)
            .map_err(|e| CniError::new(ErrorCode::Dataplane, format!("netlink: {e}")))?;
        plumbing.teardown(&w.host_ifname()).map_err(|e| {
            CniError::new(
                ErrorCode::Dataplane,
                format!("removing {}: {e}", w.host_ifname()),
            )
        })?;
        if may_have_endpoint {
            match client.delete(Kind::WorkloadEndpoint, Some(&w.namespace()), &name, None) {
                Ok(_) | Err(gingham_api::ApiError::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
    }
    match delegated_ipam(conf) {
        None => {
            let ipam = Ipam::new(store.as_ref());
            let held = ipam.ips_by_handle(&w.handle).map_err(ipam_error)?;
            if held.is_empty() {
                // Nothing allocated; still drop an empty handle record.
                ipam.release_by_handle(&w.handle).map_err(ipam_error)?;
                return Ok(());
            }
            // Addresses another interface of the same container lists stay.
            let keep = addresses_of_other_interfaces(&client, &w, &name)?;
            if keep.is_empty() {
                ipam.release_by_handle(&w.handle).map_err(ipam_error)?;
            } else {
                let mine: Vec<IpAddr> = held.into_iter().filter(|ip| !keep.contains(ip)).collect();
                ipam.release_ips_of_handle(&mine, Some(&w.handle))
                    .map_err(ipam_error)?;
            }
        }
        Some(plugin) => {
            delegate(inv, plugin, "DEL")?;
        }
    }
    Ok(())
}

fn check(inv: &Invocation) -> Result<(), CniError> {
    let conf = conf(inv)?;
    let netns = netns_path(inv)?;
    netns_must_exist(netns)?;
    let w = Workload::of(inv, conf)?;
    let store = open_store(conf)?;
    let client = Client::new(store.clone());
    let ips = match delegated_ipam(conf) {
        None => Ipam::new(store.as_ref())
            .ips_by_handle(&w.handle)
            .map_err(ipam_error)?,
        // The delegated plugin keeps its own records; the endpoint says what it gave.
        Some(_) => match client.get(
            Kind::WorkloadEndpoint,
            Some(&w.namespace()),
            &w.endpoint_name()?,
        ) {
            Ok(Resource::WorkloadEndpoint(e)) => {
                e.spec.ip_networks.iter().map(IpNet::addr).collect()
            }
            _ => Vec::new(),
        },
    };
    if ips.is_empty() {
        return Err(CniError::new(
            ErrorCode::Datastore,
            format!("no address is allocated to {}", w.handle),
        ));
    }
    let spec = spec_for(&w, &ips, conf)?;
    let plumbing = WorkloadPlumbing::new(&NetnsRef::Current)
        .map_err(|e| CniError::new(ErrorCode::Dataplane, format!("netlink: {e}")))?;
    let report = plumbing
        .check(netns, &spec)
        .map_err(|e| CniError::new(ErrorCode::Dataplane, format!("checking: {e}")))?;
    if !report.is_ok() {
        return Err(CniError::new(
            ErrorCode::Dataplane,
            format!(
                "the workload's plumbing is not as set up: {}",
                problems_text(&report)
            ),
        ));
    }
    let name = w.endpoint_name()?;
    client
        .get(Kind::WorkloadEndpoint, Some(&w.namespace()), &name)
        .map_err(|e| CniError::new(ErrorCode::Datastore, format!("{e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_datastore_type_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let conf = NetConf::from_value(&serde_json::json!({"cniVersion": "1.0.0", "name": "n",
            "type": "gingham", "datastore_type": "consul",
            "datastore": format!("sqlite:{}", dir.path().join("g.db").display())}))
        .unwrap();
        let e = open_store(&conf).err().expect("refused");
        assert_eq!(e.code, ErrorCode::InvalidConfig as u32);
        assert!(
            e.msg.contains("datastore_type \"consul\"")
                && e.msg.contains("valid: etcdv3, kubernetes"),
            "{}",
            e.msg
        );
        assert!(!dir.path().join("g.db").exists(), "nothing opened");
    }

    #[test]
    fn datastore_type_kubernetes_is_the_kubernetes_datastore() {
        let conf = |v: serde_json::Value| {
            let mut base =
                serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "gingham"});
            base.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            NetConf::from_value(&base).unwrap()
        };
        let kdd = conf(serde_json::json!({"datastore_type": "kubernetes",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}}));
        assert!(Location::of(&kdd).unwrap().is_kubernetes());
        let url = conf(serde_json::json!({"datastore": "kubernetes:/k"}));
        assert!(Location::of(&url).unwrap().is_kubernetes());
        // Our `datastore` URL wins over Calico's field, as for etcd.
        let both =
            conf(serde_json::json!({"datastore_type": "kubernetes", "datastore": "sqlite:/x.db"}));
        assert!(!Location::of(&both).unwrap().is_kubernetes());
        let etcd = conf(serde_json::json!({"datastore_type": "etcdv3"}));
        assert!(matches!(Location::of(&etcd).unwrap(), Location::Etcd(_)));
    }

    #[test]
    fn on_kdd_only_a_pods_eth0_is_added_and_it_is_refused_before_the_datastore() {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network",
            "type": "gingham", "nodename": "node-a", "datastore_type": "kubernetes",
            "kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}});
        let add = |ifname: &str, args: &str| {
            let env = BTreeMap::from(
                [
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c1"),
                    ("CNI_NETNS", "/proc/self/ns/net"),
                    ("CNI_IFNAME", ifname),
                    ("CNI_ARGS", args),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            let inv = Invocation::parse(&env, conf.to_string().as_bytes()).unwrap();
            add(&inv).expect_err("refused")
        };
        let pod = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web";
        // Not a pod, or not its eth0: refused before the kubeconfig is even read.
        for (ifname, args, says) in [
            ("eth0", "", "CNI_ARGS names no pod"),
            ("net1", pod, "CNI_IFNAME=\"net1\""),
        ] {
            let e = add(ifname, args);
            assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32, "{}", e.msg);
            assert!(e.msg.contains(says), "{}", e.msg);
        }
        // A pod's eth0 goes on to the datastore.
        let e = add("eth0", pod);
        assert!(e.msg.contains("/nonexistent/kubeconfig"), "{}", e.msg);
        assert!(e.msg.contains("nothing was allocated"), "{}", e.msg);
    }

    #[test]
    fn container_ids_calico_accepts_are_kept() {
        for id in ["c0ffee", "abc-123", "0"] {
            assert_eq!(calico_container_id(id), id);
        }
    }

    #[test]
    fn other_spec_container_ids_map_to_distinct_valid_names() {
        let ids = [
            "ctrA", "ctra-x", "ctr_x", "ctr.x", "CTR-X", "ctr-x-", "a_", "A",
        ];
        let mapped: Vec<String> = ids.iter().map(|i| calico_container_id(i)).collect();
        for (id, m) in ids.iter().zip(&mapped) {
            assert!(
                gingham_model::names::is_dns_label(m),
                "{id} -> {m} is not a valid name segment"
            );
            let name =
                gingham_model::names::workload_endpoint_name("node-1", "cni", m, "eth0").unwrap();
            assert!(gingham_model::names::is_dns_subdomain(&name), "{name}");
        }
        assert_eq!(
            calico_container_id("ctrA"),
            calico_container_id("ctrA"),
            "stable"
        );
        assert!(calico_container_id("ctrA").starts_with("ctra-"));
        let distinct: std::collections::BTreeSet<&String> = mapped.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{mapped:?}");
        // Never equal to the ID a Calico-valid container would keep.
        assert_ne!(calico_container_id("ctrA"), "ctra");
    }
}
