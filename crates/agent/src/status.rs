//! Endpoint status files: felix's status file reporter (`felix/statusrep/
//! status_file_reporter.go`, `libcalico-go/lib/epstatusfile`). One file per local workload
//! endpoint in `<prefix>/endpoint-status/` (the prefix is `CALICO_ENDPOINT_STATUS_PATH_PREFIX`,
//! Calico's `/var/run/calico`), named `<orchestrator> <workload> <endpoint>` (each part
//! URL-path-escaped, the workload `namespace/pod`), holding its interface, MAC, addresses and
//! the BGPPeer whose `localWorkloadSelector` selects it (felix's `ActiveBGPPeerCalculator`: of
//! the BGPPeers that apply to this node, the first by name). The BGP renderer reads them to
//! peer with local workloads, as confd does.
//!
//! Files are written when an endpoint appears or changes and removed when it goes; what is in
//! the directory at start is read once, so a restarted agent changes only what differs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use gingham_datastore::Datastore;
use gingham_model::{BgpPeer, Kind, Resource, WorkloadEndpoint};
use gingham_selector::{LayeredLabels, Selector};

use crate::{Error, Health, Manager, Update};

/// The directory under the prefix, as felix names it.
pub const DIR: &str = "endpoint-status";

/// One file's content, with felix's JSON field names and order (empty fields left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iface_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv4_nets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6_nets: Vec<String>,
    #[serde(rename = "bgpPeerName", skip_serializing_if = "String::is_empty")]
    pub bgp_peer_name: String,
}

/// Go's `url.PathEscape`: everything but unreserved characters and `$&+:=@` as `%XX`.
fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// felix's file name for an endpoint (`names.WorkloadEndpointKeyToStatusFilename`).
pub fn file_name(w: &WorkloadEndpoint) -> String {
    let ns = w.metadata.namespace.as_deref().unwrap_or("");
    let workload = if w.spec.pod.is_empty() {
        &w.spec.workload
    } else {
        &w.spec.pod
    };
    [
        path_escape(&w.spec.orchestrator),
        path_escape(&format!("{ns}/{workload}")),
        path_escape(&w.spec.endpoint),
    ]
    .join(" ")
}

pub struct StatusManager {
    health: Health,
    node: String,
    /// Where `endpoint-status/` goes (`None`: no files are written).
    prefix: Option<PathBuf>,
    node_labels: Option<BTreeMap<String, String>>,
    peers: BTreeMap<String, BgpPeer>,
    profiles: BTreeMap<String, BTreeMap<String, String>>,
    /// Local workload endpoints, by key.
    endpoints: BTreeMap<String, WorkloadEndpoint>,
    /// What the directory holds, by file name (`None`: not read yet).
    written: Option<BTreeMap<String, String>>,
    due: bool,
}

impl StatusManager {
    pub fn new(node: &str, health: Health) -> Self {
        StatusManager {
            health,
            node: node.to_owned(),
            prefix: None,
            node_labels: None,
            peers: BTreeMap::new(),
            profiles: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            written: None,
            due: true,
        }
    }

    /// Writes the files under `prefix` (the agent's binary: `CALICO_ENDPOINT_STATUS_PATH_PREFIX`
    /// or its run directory).
    pub fn set_prefix(&mut self, prefix: PathBuf) {
        self.prefix = Some(prefix);
        self.written = None;
        self.due = true;
    }

    fn take(&mut self, key: &str, r: &Resource) {
        match r {
            Resource::WorkloadEndpoint(w) if w.spec.node == self.node => {
                self.endpoints.insert(key.to_owned(), w.clone());
            }
            Resource::WorkloadEndpoint(_) => {
                self.endpoints.remove(key);
            }
            Resource::BgpPeer(p) => {
                self.peers.insert(p.metadata.name.clone(), p.clone());
            }
            Resource::Profile(p) => {
                self.profiles
                    .insert(p.metadata.name.clone(), p.spec.labels_to_apply.clone());
            }
            Resource::Node(n) if n.metadata.name == self.node => {
                self.node_labels = Some(n.metadata.labels.clone());
            }
            _ => {}
        }
    }

    /// felix's `bgpPeerSelectsLocalNode`: a peer for this node, by name or node selector.
    fn applies_here(&self, p: &BgpPeer) -> bool {
        if !p.spec.node.is_empty() {
            return p.spec.node == self.node;
        }
        let labels = self.node_labels.clone().unwrap_or_default();
        Selector::parse(&p.spec.node_selector).is_ok_and(|s| s.matches(&labels))
    }

    /// The BGPPeer that peers with `w`: of those applying here whose localWorkloadSelector
    /// selects it (with the labels its profiles give), the first by name.
    fn peer_of(&self, w: &WorkloadEndpoint) -> String {
        let parents: Vec<&BTreeMap<String, String>> = w
            .spec
            .profiles
            .iter()
            .filter_map(|p| self.profiles.get(p))
            .collect();
        let own = &w.metadata.labels;
        let labels = LayeredLabels::with_parents(
            own,
            parents.iter().map(|p| *p as &dyn gingham_selector::Labels),
        );
        self.peers
            .values()
            .filter(|p| !p.spec.local_workload_selector.is_empty() && self.applies_here(p))
            .find(|p| {
                Selector::parse(&p.spec.local_workload_selector).is_ok_and(|s| s.matches(&labels))
            })
            .map(|p| p.metadata.name.clone())
            .unwrap_or_default()
    }

    /// The files the directory should hold.
    fn desired(&self) -> BTreeMap<String, String> {
        self.endpoints
            .values()
            .filter(|w| !w.spec.interface_name.is_empty())
            .map(|w| {
                let nets = |v6: bool| -> Vec<String> {
                    w.spec
                        .ip_networks
                        .iter()
                        .filter(|n| n.addr().is_ipv6() == v6)
                        .map(ToString::to_string)
                        .collect()
                };
                let status = EndpointStatus {
                    iface_name: w.spec.interface_name.clone(),
                    mac: w.spec.mac.clone(),
                    ipv4_nets: nets(false),
                    ipv6_nets: nets(true),
                    bgp_peer_name: self.peer_of(w),
                };
                let json = serde_json::to_string(&status).expect("plain strings serialize");
                (file_name(w), json)
            })
            .collect()
    }

    fn sync(&mut self) -> Result<(), String> {
        let Some(prefix) = &self.prefix else {
            return Ok(());
        };
        let dir = prefix.join(DIR);
        let written = match self.written.take() {
            Some(w) => w,
            None => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let mut found = BTreeMap::new();
                for e in std::fs::read_dir(&dir)
                    .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                    .flatten()
                {
                    if e.path().is_file() {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        found.insert(e.file_name().to_string_lossy().into_owned(), text);
                    }
                }
                found
            }
        };
        let want = self.desired();
        let mut now = written.clone();
        let mut result = Ok(());
        for (name, text) in &want {
            if written.get(name) != Some(text) {
                match std::fs::write(dir.join(name), text) {
                    Ok(()) => {
                        now.insert(name.clone(), text.clone());
                    }
                    Err(e) => {
                        result = Err(format!("cannot write {}: {e}", dir.join(name).display()))
                    }
                }
            }
        }
        for name in written.keys().filter(|n| !want.contains_key(*n)) {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {
                    now.remove(name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    now.remove(name);
                }
                Err(e) => result = Err(format!("cannot remove {}: {e}", dir.join(name).display())),
            }
        }
        self.written = Some(now);
        result
    }
}

impl Manager for StatusManager {
    fn resync(&mut self, resources: &[Resource]) {
        self.endpoints.clear();
        self.peers.clear();
        self.profiles.clear();
        self.node_labels = None;
        for r in resources {
            self.take(&r.key(), r);
        }
        self.due = true;
    }

    fn on_update(&mut self, update: &Update) {
        match (&update.resource, update.kind) {
            (Some(r), _) => self.take(&update.key, r),
            (None, Kind::WorkloadEndpoint) => {
                self.endpoints.remove(&update.key);
            }
            (None, Kind::BgpPeer) => {
                self.peers.remove(&update.name);
            }
            (None, Kind::Profile) => {
                self.profiles.remove(&update.name);
            }
            (None, Kind::Node) if update.name == self.node => self.node_labels = None,
            _ => return,
        }
        self.due |= matches!(
            update.kind,
            Kind::WorkloadEndpoint | Kind::BgpPeer | Kind::Profile | Kind::Node
        );
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn apply(&mut self, _store: &dyn Datastore, _now: Instant) -> Result<(), Error> {
        if !std::mem::take(&mut self.due) {
            return Ok(());
        }
        if let Err(e) = self.sync() {
            self.due = true;
            self.health.metrics.errors.inc();
            tracing::error!(error = %e, "endpoint status files");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Resource {
        gingham_model::load::load_resources("test.yaml", text)
            .expect("valid test input")
            .remove(0)
    }

    #[test]
    fn names_are_escaped_as_go_path_escape_does() {
        assert_eq!(path_escape("default/router-1"), "default%2Frouter-1");
        assert_eq!(path_escape("a b;c,d?e"), "a%20b%3Bc%2Cd%3Fe");
        assert_eq!(path_escape("$&+:=@~._-"), "$&+:=@~._-");
        assert_eq!(path_escape("é"), "%C3%A9");
    }

    /// felix's ActiveBGPPeerCalculator: peers for this node (by name or node selector) whose
    /// localWorkloadSelector selects the endpoint, with its profiles' labels; the first by name.
    #[test]
    fn the_peer_named_is_the_first_that_applies_and_selects() {
        let mut m = StatusManager::new("node-a", Health::default());
        let resources = [
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-a, labels: {rack: r1}}\nspec: {}\n",
            "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.default}\nspec: {labelsToApply: {pcns.tier: edge}}\n",
            // Selects by a label the profile gives, but for another node.
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: a-elsewhere}\nspec: {node: node-b, localWorkloadSelector: \"pcns.tier == 'edge'\", asNumber: 65100}\n",
            // A node selector that does not match node-a.
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: b-rack2}\nspec: {nodeSelector: \"rack == 'r2'\", localWorkloadSelector: all(), asNumber: 65100}\n",
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: d-rack1}\nspec: {nodeSelector: \"rack == 'r1'\", localWorkloadSelector: \"pcns.tier == 'edge'\", asNumber: 65100}\n",
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: c-everywhere}\nspec: {localWorkloadSelector: \"app == 'router'\", asNumber: 65100}\n",
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--a-k8s-r-eth0, namespace: default, labels: {app: router}}\nspec: {node: node-a, orchestrator: k8s, pod: r, endpoint: eth0, interfaceName: cali1, ipNetworks: [10.0.0.1/32, \"fd00::1/128\"], profiles: [kns.default]}\n",
        ]
        .map(one);
        m.resync(&resources);
        let want = m.desired();
        assert_eq!(
            want.get("k8s default%2Fr eth0").map(String::as_str),
            Some(
                r#"{"ifaceName":"cali1","ipv4Nets":["10.0.0.1/32"],"ipv6Nets":["fd00::1/128"],"bgpPeerName":"c-everywhere"}"#
            ),
            "{want:?}"
        );
        // Without c-everywhere, d-rack1 selects it through the profile's label.
        m.on_update(&Update {
            key: resources[5].key(),
            kind: Kind::BgpPeer,
            namespace: None,
            name: "c-everywhere".into(),
            resource: None,
        });
        assert!(m.desired()["k8s default%2Fr eth0"].ends_with(r#""bgpPeerName":"d-rack1"}"#));
    }
}
