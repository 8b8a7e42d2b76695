//! The kinds that live in Kubernetes' own objects: Calico Node fields as Node annotations,
//! WorkloadEndpoints from Pods, and the read-only `knp.`/`kns.`/`ksa.` resources.
//!
//! Pure conversions (no I/O) between Gingham's datastore keys and values and the Kubernetes
//! objects that hold them in the Kubernetes datastore, with the behaviour of Calico v3.33's KDD
//! backend (libcalico-go `lib/backend/k8s/resources/{node,workloadendpoint,profile}.go` and
//! `lib/backend/k8s/conversion/`):
//!
//! - **Node** `nodes/<name>` is the Kubernetes Node `<name>`: Calico's fields are its
//!   `projectcalico.org/*` annotations ([`calico_node_from_k8s`]); a write is a merge patch of
//!   those annotations ([`k8s_node_patch_for`]); a delete removes them
//!   ([`k8s_node_delete_patch`]). The Kubernetes Node itself is never created or deleted.
//! - **WorkloadEndpoint** `workloadendpoints/<ns>/<node>-k8s-<pod>-eth0` is the Pod `<ns>/<pod>`
//!   ([`workload_endpoints_from_pod`], through [`gingham_model::k8s::pod_to_workload_endpoint`]);
//!   a write patches the Pod's `cni.projectcalico.org/podIP`, `podIPs` and `containerID`
//!   annotations ([`pod_patch_for_workload_endpoint`]), a delete sets the IP annotations to `""`
//!   ([`pod_patch_for_workload_endpoint_delete`]), as Calico's CNI plugin does in KDD mode.
//! - **NetworkPolicy** `networkpolicies/<ns>/knp.default.<name>` is the Kubernetes
//!   NetworkPolicy `<ns>/<name>` ([`policy_from_network_policy`]), read-only.
//! - **Profile** `profiles/kns.<ns>` is the Namespace `<ns>`, `profiles/ksa.<ns>.<sa>` the
//!   ServiceAccount `<ns>/<sa>` ([`profile_from_namespace`], [`profile_from_service_account`]),
//!   read-only. Other profiles have no home in this datastore (Calico's KDD profile client
//!   refuses every write).
//!
//! Values are the bytes every Gingham backend holds ([`Resource::to_stored`]), without
//! `resourceVersion` (the store's revision is the object's `metadata.resourceVersion`); `uid`
//! and `creationTimestamp` are the Kubernetes object's, as in Calico's KDD.
//!
//! The store classifies a key with [`k8s_backed_kind`], finds what to list or watch for a prefix
//! with [`list_sources`], converts objects with [`kvs_from_object`] / [`value_for_key`] (and
//! [`object_keys`], every key an object can hold, so that a watch can report deletions), and
//! refuses writes with [`K8sBacked::check_write`]. [`store`] does the requests.
//!
//! Where this differs from Calico's KDD backend, and why:
//! - Calico's node client refuses Create and Delete. Here a delete removes the Calico Node's
//!   annotations (the Kubernetes Node stays); a create still needs the Kubernetes Node.
//! - Calico's v3 client shows a WorkloadEndpoint for every scheduled pod off the host network;
//!   here, as Felix's syncer filters them, only pods with an address that have not finished, so
//!   that the datastore contract holds (after the CNI plugin's DEL deletes the key, it is gone).
//! - Calico's CNI patch carries no resourceVersion; here every write is conditional on the
//!   revision its comparison read (a kubelet status update in between makes the writer retry).
//! - The model's Namespace conversion honours the old DefaultDeny annotation, and profile UIDs
//!   are the objects' own (Calico converts them); the model's pod conversion leaves out init
//!   containers' named ports, QoS annotations and `generateName`; host-local IPAM's static tunnel
//!   address (`usePodCIDR`) is not done.

use std::collections::BTreeMap;

use gingham_model::k8s::{
    self, ANNOTATION_CONTAINER_ID, ANNOTATION_POD_IP, ANNOTATION_POD_IPS, K8S_ORCHESTRATOR,
    K8S_POLICY_PREFIX, K8sNamespace, K8sNetworkPolicy, K8sPod, K8sServiceAccount,
    NAMESPACE_PROFILE_PREFIX, SERVICE_ACCOUNT_PROFILE_PREFIX,
};
use gingham_model::node::{
    NodeAddress, NodeBgpSpec, NodeInterface, NodeSpec, NodeStatus, NodeWireguardSpec, OrchRef,
};
use gingham_model::{AsNumber, Kind, Labels, Node, ObjectMeta, Resource, cidr};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

// ===== Calico's Node annotations (libcalico-go lib/backend/k8s/resources/node.go) =====

/// The node's BGP IPv4 address and subnet (`spec.bgp.ipv4Address`).
pub const NODE_IPV4_ADDRESS: &str = "projectcalico.org/IPv4Address";
/// The node's BGP IPv6 address and subnet (`spec.bgp.ipv6Address`).
pub const NODE_IPV6_ADDRESS: &str = "projectcalico.org/IPv6Address";
/// The IP-in-IP tunnel address (`spec.bgp.ipv4IPIPTunnelAddr`).
pub const NODE_IPV4_IPIP_TUNNEL_ADDR: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
/// The IPv4 VXLAN tunnel address (`spec.ipv4VXLANTunnelAddr`).
pub const NODE_IPV4_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
/// The IPv4 VXLAN device's MAC (`spec.vxlanTunnelMACAddr`).
pub const NODE_VXLAN_TUNNEL_MAC: &str = "projectcalico.org/VXLANTunnelMACAddr";
/// The IPv6 VXLAN tunnel address (`spec.ipv6VXLANTunnelAddr`).
pub const NODE_IPV6_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv6VXLANTunnelAddr";
/// The IPv6 VXLAN device's MAC (`spec.vxlanTunnelMACAddrV6`).
pub const NODE_VXLAN_TUNNEL_MAC_V6: &str = "projectcalico.org/VXLANTunnelMACAddrV6";
/// The node's AS number (`spec.bgp.asNumber`).
pub const NODE_AS_NUMBER: &str = "projectcalico.org/ASNumber";
/// The route-reflector cluster id (`spec.bgp.routeReflectorClusterID`).
pub const NODE_RR_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";
/// The WireGuard interface's IPv4 address (`spec.wireguard.interfaceIPv4Address`).
pub const NODE_WIREGUARD_IPV4_ADDR: &str = "projectcalico.org/IPv4WireguardInterfaceAddr";
/// The WireGuard interface's IPv6 address (`spec.wireguard.interfaceIPv6Address`).
pub const NODE_WIREGUARD_IPV6_ADDR: &str = "projectcalico.org/IPv6WireguardInterfaceAddr";
/// The WireGuard public key (`status.wireguardPublicKey`).
pub const NODE_WIREGUARD_PUBLIC_KEY: &str = "projectcalico.org/WireguardPublicKey";
/// The IPv6 WireGuard public key (`status.wireguardPublicKeyV6`).
pub const NODE_WIREGUARD_PUBLIC_KEY_V6: &str = "projectcalico.org/WireguardPublicKeyV6";
/// The node's interfaces and their addresses, a JSON list (`spec.interfaces`).
pub const NODE_INTERFACES: &str = "projectcalico.org/Interfaces";
/// The Calico Node's own labels (JSON), those that are not the Kubernetes Node's.
pub const NODE_CALICO_LABELS: &str = "projectcalico.org/labels";
/// The Calico Node's own annotations (JSON).
pub const NODE_CALICO_ANNOTATIONS: &str = "projectcalico.org/annotations";
/// On the Calico Node read from Kubernetes: the Kubernetes Node's labels (JSON), so that a
/// write can tell inherited labels from the Calico Node's own.
pub const NODE_KUBE_LABELS: &str = "projectcalico.org/kube-labels";

/// Every annotation of a Kubernetes Node that holds a Calico Node field (what a delete removes).
pub const NODE_ANNOTATIONS: &[&str] = &[
    NODE_CALICO_LABELS,
    NODE_CALICO_ANNOTATIONS,
    NODE_IPV4_ADDRESS,
    NODE_IPV6_ADDRESS,
    NODE_IPV4_IPIP_TUNNEL_ADDR,
    NODE_IPV4_VXLAN_TUNNEL_ADDR,
    NODE_VXLAN_TUNNEL_MAC,
    NODE_IPV6_VXLAN_TUNNEL_ADDR,
    NODE_VXLAN_TUNNEL_MAC_V6,
    NODE_AS_NUMBER,
    NODE_RR_CLUSTER_ID,
    NODE_WIREGUARD_IPV4_ADDR,
    NODE_WIREGUARD_IPV6_ADDR,
    NODE_WIREGUARD_PUBLIC_KEY,
    NODE_WIREGUARD_PUBLIC_KEY_V6,
    NODE_INTERFACES,
];

/// The only endpoint (interface) of a pod's WorkloadEndpoint in Calico's KDD.
pub const POD_ENDPOINT: &str = "eth0";

// ===== Errors =====

/// Why a key or value of a Kubernetes-backed kind cannot be read or written.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum K8sBackedError {
    /// A write to a resource that is a view of a Kubernetes object.
    #[error(
        "{what} is read-only in the Kubernetes datastore: it is {object} seen through Calico; change the {kind} instead ({hint})",
        kind = object.kind.kind()
    )]
    ReadOnly {
        /// The resource, e.g. `NetworkPolicy default/knp.default.web`.
        what: String,
        /// The Kubernetes object that holds it.
        object: K8sObjectRef,
        /// How to change it, e.g. a kubectl command.
        hint: String,
    },
    /// A key of a Kubernetes-backed kind that no Kubernetes object can hold.
    #[error("{key}: {why}")]
    Unbacked {
        /// The datastore key.
        key: String,
        /// Why, and what is valid.
        why: String,
    },
    /// A write that needs a Kubernetes object that does not exist.
    #[error(
        "{what} cannot be written: there is no {object} in Kubernetes ({why})",
        what = what
    )]
    NoObject {
        /// The resource.
        what: String,
        /// The object it would live in.
        object: K8sObjectRef,
        /// What to do.
        why: String,
    },
    /// A value given to a write is not a valid resource of the key's kind, or does not match
    /// the key.
    #[error("{key}: the value to write is not valid: {message}")]
    BadValue {
        /// The datastore key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A Kubernetes object could not be converted.
    #[error("{object}: cannot be read as a Calico resource: {path}: {message}")]
    Convert {
        /// The object.
        object: K8sObjectRef,
        /// The object's field at fault (may be empty).
        path: String,
        /// What is wrong.
        message: String,
    },
}

// ===== Kubernetes objects =====

/// The Kubernetes kinds that hold Calico resources in KDD (besides Calico's CRDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum K8sObjectKind {
    /// core/v1 Node (cluster scope).
    Node,
    /// core/v1 Pod.
    Pod,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// core/v1 Namespace (cluster scope).
    Namespace,
    /// core/v1 ServiceAccount.
    ServiceAccount,
}

impl K8sObjectKind {
    /// Every kind.
    pub const ALL: [K8sObjectKind; 5] = [
        K8sObjectKind::Node,
        K8sObjectKind::Pod,
        K8sObjectKind::NetworkPolicy,
        K8sObjectKind::Namespace,
        K8sObjectKind::ServiceAccount,
    ];

    /// `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            K8sObjectKind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    /// `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            K8sObjectKind::Node => "Node",
            K8sObjectKind::Pod => "Pod",
            K8sObjectKind::NetworkPolicy => "NetworkPolicy",
            K8sObjectKind::Namespace => "Namespace",
            K8sObjectKind::ServiceAccount => "ServiceAccount",
        }
    }

    /// The resource plural in the API's paths.
    pub fn plural(self) -> &'static str {
        match self {
            K8sObjectKind::Node => "nodes",
            K8sObjectKind::Pod => "pods",
            K8sObjectKind::NetworkPolicy => "networkpolicies",
            K8sObjectKind::Namespace => "namespaces",
            K8sObjectKind::ServiceAccount => "serviceaccounts",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            K8sObjectKind::Pod | K8sObjectKind::NetworkPolicy | K8sObjectKind::ServiceAccount
        )
    }

    /// The subresource Calico's KDD clients write Calico's annotations through: `status` for
    /// Nodes (`UpdateStatus`, so that calico-node needs only `nodes/status`) and Pods (the CNI
    /// plugin patches `pods/status`); `None` for read-only kinds.
    pub fn write_subresource(self) -> Option<&'static str> {
        match self {
            K8sObjectKind::Node | K8sObjectKind::Pod => Some("status"),
            _ => None,
        }
    }
}

/// One Kubernetes object: kind, namespace (namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct K8sObjectRef {
    /// The kind.
    pub kind: K8sObjectKind,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl K8sObjectRef {
    fn cluster(kind: K8sObjectKind, name: &str) -> K8sObjectRef {
        K8sObjectRef {
            kind,
            namespace: None,
            name: name.to_owned(),
        }
    }

    fn namespaced(kind: K8sObjectKind, namespace: &str, name: &str) -> K8sObjectRef {
        K8sObjectRef {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for K8sObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "Kubernetes {} {ns}/{}", self.kind.kind(), self.name),
            None => write!(f, "Kubernetes {} {}", self.kind.kind(), self.name),
        }
    }
}

// ===== Keys =====

/// A datastore key of a kind that lives in Kubernetes' own objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K8sBacked {
    /// `nodes/<name>`: the Kubernetes Node's Calico annotations. Writable (a patch of those
    /// annotations); the Kubernetes Node must exist.
    Node {
        /// The node name (Calico's and Kubernetes').
        name: String,
    },
    /// `workloadendpoints/<ns>/<node>-k8s-<pod>-eth0`: the Pod. Writable (a patch of the
    /// pod's IP and container-id annotations); the Pod must exist.
    WorkloadEndpoint {
        /// The namespace.
        namespace: String,
        /// The WorkloadEndpoint's name.
        name: String,
        /// The node named in it.
        node: String,
        /// The pod.
        pod: String,
    },
    /// `networkpolicies/<ns>/knp.default.<name>`: the Kubernetes NetworkPolicy. Read-only.
    KubernetesNetworkPolicy {
        /// The namespace.
        namespace: String,
        /// The Kubernetes NetworkPolicy's name (without `knp.default.`).
        name: String,
    },
    /// `profiles/kns.<ns>`: the Namespace. Read-only.
    NamespaceProfile {
        /// The namespace.
        namespace: String,
    },
    /// `profiles/ksa.<ns>.<sa>`: the ServiceAccount. Read-only.
    ServiceAccountProfile {
        /// The namespace.
        namespace: String,
        /// The ServiceAccount.
        name: String,
    },
    /// A key of a Kubernetes-backed kind (Profile, WorkloadEndpoint) that no Kubernetes object
    /// holds: it never exists, and writes are refused with `why`.
    Unbacked {
        /// The datastore key.
        key: String,
        /// Why nothing can hold it, and what is valid.
        why: String,
    },
}

/// Classifies a datastore key: `Some` for the kinds KDD keeps in Kubernetes' own objects
/// (every Node, WorkloadEndpoint and Profile key, NetworkPolicy keys named `knp.default.*`),
/// `None` for everything else (Calico's CRDs, IPAM, keys outside Gingham's layout).
pub fn k8s_backed_kind(key: &str) -> Option<K8sBacked> {
    let (kind, namespace, name) = Kind::parse_key(key)?;
    match kind {
        Kind::Node => Some(K8sBacked::Node { name }),
        Kind::NetworkPolicy => {
            let np = name.strip_prefix(K8S_POLICY_PREFIX)?;
            Some(K8sBacked::KubernetesNetworkPolicy {
                namespace: namespace?,
                name: np.to_owned(),
            })
        }
        Kind::Profile => Some(classify_profile(key, &name)),
        Kind::WorkloadEndpoint => Some(classify_endpoint(key, namespace?, name)),
        _ => None,
    }
}

fn classify_profile(key: &str, name: &str) -> K8sBacked {
    if let Some(ns) = name.strip_prefix(NAMESPACE_PROFILE_PREFIX)
        && !ns.is_empty()
        && !ns.contains('.')
    {
        return K8sBacked::NamespaceProfile {
            namespace: ns.to_owned(),
        };
    }
    // Namespace names are DNS labels (no dots), so the first dot ends the namespace.
    if let Some(rest) = name.strip_prefix(SERVICE_ACCOUNT_PROFILE_PREFIX)
        && let Some((ns, sa)) = rest.split_once('.')
        && !ns.is_empty()
        && !sa.is_empty()
    {
        return K8sBacked::ServiceAccountProfile {
            namespace: ns.to_owned(),
            name: sa.to_owned(),
        };
    }
    K8sBacked::Unbacked {
        key: key.to_owned(),
        why: format!(
            "in the Kubernetes datastore a Profile is a Namespace ({NAMESPACE_PROFILE_PREFIX}<namespace>) or a ServiceAccount ({SERVICE_ACCOUNT_PROFILE_PREFIX}<namespace>.<serviceaccount>) seen through Calico; Profile {} cannot be stored (use a NetworkPolicy or GlobalNetworkPolicy instead)",
            gingham_model::quote(name)
        ),
    }
}

fn classify_endpoint(key: &str, namespace: String, name: String) -> K8sBacked {
    let parts = split_endpoint_name(&name);
    if let [node, orch, pod, endpoint] = parts.as_slice()
        && orch == K8S_ORCHESTRATOR
        && endpoint == POD_ENDPOINT
        && !node.is_empty()
        && !pod.is_empty()
    {
        return K8sBacked::WorkloadEndpoint {
            namespace,
            node: node.clone(),
            pod: pod.clone(),
            name,
        };
    }
    K8sBacked::Unbacked {
        key: key.to_owned(),
        why: format!(
            "in the Kubernetes datastore a WorkloadEndpoint is a Pod's {POD_ENDPOINT}, named <node>-{K8S_ORCHESTRATOR}-<pod>-{POD_ENDPOINT} (each '-' inside a part doubled); {} is not such a name",
            gingham_model::quote(&name)
        ),
    }
}

/// Splits a WorkloadEndpoint name at its single dashes (a doubled dash is a dash inside a part),
/// as Calico's name parser does.
fn split_endpoint_name(name: &str) -> Vec<String> {
    let b = name.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'-' {
            if i + 1 < b.len() && b[i + 1] == b'-' {
                i += 2;
                continue;
            }
            parts.push(name[start..i].replace("--", "-"));
            start = i + 1;
        }
        i += 1;
    }
    parts.push(name[start..].replace("--", "-"));
    parts
}

impl K8sBacked {
    /// The Kubernetes object that holds the resource (`None`: nothing can).
    pub fn object(&self) -> Option<K8sObjectRef> {
        Some(match self {
            K8sBacked::Node { name } => K8sObjectRef::cluster(K8sObjectKind::Node, name),
            K8sBacked::WorkloadEndpoint { namespace, pod, .. } => {
                K8sObjectRef::namespaced(K8sObjectKind::Pod, namespace, pod)
            }
            K8sBacked::KubernetesNetworkPolicy { namespace, name } => {
                K8sObjectRef::namespaced(K8sObjectKind::NetworkPolicy, namespace, name)
            }
            K8sBacked::NamespaceProfile { namespace } => {
                K8sObjectRef::cluster(K8sObjectKind::Namespace, namespace)
            }
            K8sBacked::ServiceAccountProfile { namespace, name } => {
                K8sObjectRef::namespaced(K8sObjectKind::ServiceAccount, namespace, name)
            }
            K8sBacked::Unbacked { .. } => return None,
        })
    }

    /// Whether writes are refused (views of Kubernetes objects, and unbacked keys).
    pub fn is_read_only(&self) -> bool {
        !matches!(
            self,
            K8sBacked::Node { .. } | K8sBacked::WorkloadEndpoint { .. }
        )
    }

    /// `Ok` when the key may be written (created, updated or deleted); else the error to give
    /// the caller, naming the Kubernetes object to change instead.
    pub fn check_write(&self) -> Result<(), K8sBackedError> {
        let read_only = |what: String, object: K8sObjectRef, hint: String| {
            Err(K8sBackedError::ReadOnly { what, object, hint })
        };
        match self {
            K8sBacked::Node { .. } | K8sBacked::WorkloadEndpoint { .. } => Ok(()),
            K8sBacked::Unbacked { key, why } => Err(K8sBackedError::Unbacked {
                key: key.clone(),
                why: why.clone(),
            }),
            K8sBacked::KubernetesNetworkPolicy { namespace, name } => read_only(
                format!("NetworkPolicy {namespace}/{K8S_POLICY_PREFIX}{name}"),
                K8sObjectRef::namespaced(K8sObjectKind::NetworkPolicy, namespace, name),
                format!("kubectl edit networkpolicy -n {namespace} {name}"),
            ),
            K8sBacked::NamespaceProfile { namespace } => read_only(
                format!("Profile {NAMESPACE_PROFILE_PREFIX}{namespace}"),
                K8sObjectRef::cluster(K8sObjectKind::Namespace, namespace),
                format!("kubectl label namespace {namespace} KEY=VALUE"),
            ),
            K8sBacked::ServiceAccountProfile { namespace, name } => read_only(
                format!("Profile {SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{name}"),
                K8sObjectRef::namespaced(K8sObjectKind::ServiceAccount, namespace, name),
                format!("kubectl label serviceaccount -n {namespace} {name} KEY=VALUE"),
            ),
        }
    }

    /// The error for a write (create or update) when the object that would hold it does not
    /// exist: KDD never creates Kubernetes Nodes or Pods (kubelet registers nodes, and pods are
    /// created through Kubernetes).
    pub fn missing_object(&self) -> Option<K8sBackedError> {
        let object = self.object()?;
        let (what, why) = match self {
            K8sBacked::Node { name } => (
                format!("Node {name}"),
                "in the Kubernetes datastore a Calico Node is the Kubernetes Node's projectcalico.org/ annotations: register the node with Kubernetes (kubelet) first".to_owned(),
            ),
            K8sBacked::WorkloadEndpoint { namespace, name, .. } => (
                format!("WorkloadEndpoint {namespace}/{name}"),
                "in the Kubernetes datastore a WorkloadEndpoint is a Pod: create the pod through Kubernetes".to_owned(),
            ),
            _ => return self.check_write().err(),
        };
        Some(K8sBackedError::NoObject { what, object, why })
    }
}

// ===== Listing =====

/// What to list (or watch) in Kubernetes for a datastore prefix: objects of `kind`, in
/// `namespace` or in all namespaces (`None`). The conversions of those objects are a superset
/// of the keys under the prefix: filter them with `key.starts_with(prefix)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSource {
    /// The kind to list.
    pub kind: K8sObjectKind,
    /// Only this namespace (namespaced kinds), or all.
    pub namespace: Option<String>,
}

/// The Kubernetes objects whose conversions may have keys under `prefix` (empty when none
/// can). NetworkPolicies here are only the Kubernetes ones (`knp.default.*`); Calico's own
/// are CRDs.
pub fn list_sources(prefix: &str) -> Vec<ListSource> {
    let mut out = Vec::new();
    // (Calico kind, the objects behind it, the fixed start of the name if any)
    let kinds: [(Kind, &[K8sObjectKind]); 4] = [
        (Kind::Node, &[K8sObjectKind::Node]),
        (Kind::WorkloadEndpoint, &[K8sObjectKind::Pod]),
        (Kind::NetworkPolicy, &[K8sObjectKind::NetworkPolicy]),
        (
            Kind::Profile,
            &[K8sObjectKind::Namespace, K8sObjectKind::ServiceAccount],
        ),
    ];
    for (kind, objects) in kinds {
        let kind_prefix = kind.key_prefix(None);
        if kind_prefix.starts_with(prefix) {
            out.extend(objects.iter().map(|&k| ListSource {
                kind: k,
                namespace: None,
            }));
            continue;
        }
        let Some(rest) = prefix.strip_prefix(&kind_prefix) else {
            continue;
        };
        if kind.is_namespaced() {
            // rest = "<ns>/<name start>" or a start of the namespace.
            let (namespace, name) = match rest.split_once('/') {
                Some((ns, name)) => (Some(ns.to_owned()), name),
                None => (None, ""),
            };
            if kind == Kind::NetworkPolicy && !compatible(name, K8S_POLICY_PREFIX) {
                continue;
            }
            out.push(ListSource {
                kind: objects[0],
                namespace,
            });
        } else if kind == Kind::Profile {
            if compatible(rest, NAMESPACE_PROFILE_PREFIX) {
                out.push(ListSource {
                    kind: K8sObjectKind::Namespace,
                    namespace: None,
                });
            }
            if compatible(rest, SERVICE_ACCOUNT_PROFILE_PREFIX) {
                let namespace = rest
                    .strip_prefix(SERVICE_ACCOUNT_PROFILE_PREFIX)
                    .and_then(|r| r.split_once('.'))
                    .map(|(ns, _)| ns.to_owned());
                out.push(ListSource {
                    kind: K8sObjectKind::ServiceAccount,
                    namespace,
                });
            }
        } else {
            out.push(ListSource {
                kind: objects[0],
                namespace: None,
            });
        }
    }
    out
}

/// Whether a name starting with `start` can begin with `fixed` (or the other way round).
fn compatible(start: &str, fixed: &str) -> bool {
    start.starts_with(fixed) || fixed.starts_with(start)
}

// ===== Objects to keys and values =====

/// Every (key, value) one Kubernetes object holds, given as its JSON (as a list, a watch event
/// or a `DynamicObject` carries it): one for Nodes, Namespaces, ServiceAccounts and
/// NetworkPolicies, zero or one for Pods.
pub fn kvs_from_object(
    kind: K8sObjectKind,
    object: &Value,
) -> Result<Vec<(String, Vec<u8>)>, K8sBackedError> {
    fn typed<T: DeserializeOwned>(kind: K8sObjectKind, v: &Value) -> Result<T, K8sBackedError> {
        serde_json::from_value(v.clone()).map_err(|e| K8sBackedError::Convert {
            object: K8sObjectRef {
                kind,
                namespace: v
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                name: v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            path: String::new(),
            message: e.to_string(),
        })
    }
    Ok(match kind {
        K8sObjectKind::Node => vec![calico_node_from_k8s(&typed(kind, object)?)?],
        K8sObjectKind::Pod => workload_endpoints_from_pod(&typed(kind, object)?)?,
        K8sObjectKind::NetworkPolicy => {
            vec![policy_from_network_policy(&typed(kind, object)?)?]
        }
        K8sObjectKind::Namespace => vec![profile_from_namespace(&typed(kind, object)?)?],
        K8sObjectKind::ServiceAccount => {
            vec![profile_from_service_account(&typed(kind, object)?)?]
        }
    })
}

/// The value of `key` held by `object` (of `kind`, as JSON), as the store's `get` reads it:
/// `None` when the object holds no such key now (a pod without addresses yet, a pod on
/// another node than the key names).
pub fn value_for_key(
    key: &str,
    kind: K8sObjectKind,
    object: &Value,
) -> Result<Option<Vec<u8>>, K8sBackedError> {
    Ok(kvs_from_object(kind, object)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

/// Every key `object` (of `kind`, as JSON) can hold, whether or not it holds it now: what a
/// watch must report deleted when the object is deleted or stops holding it (a pod whose
/// addresses the CNI plugin took back). A pod's key is fixed once it is scheduled.
pub fn object_keys(kind: K8sObjectKind, object: &Value) -> Vec<String> {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let name = s("/metadata/name");
    let ns = match s("/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    if name.is_empty() {
        return Vec::new();
    }
    match kind {
        K8sObjectKind::Node => vec![Kind::Node.key(None, name)],
        K8sObjectKind::NetworkPolicy => {
            vec![Kind::NetworkPolicy.key(Some(ns), &format!("{K8S_POLICY_PREFIX}{name}"))]
        }
        K8sObjectKind::Namespace => {
            vec![Kind::Profile.key(None, &format!("{NAMESPACE_PROFILE_PREFIX}{name}"))]
        }
        K8sObjectKind::ServiceAccount => {
            vec![Kind::Profile.key(None, &k8s::service_account_profile_name(ns, name))]
        }
        K8sObjectKind::Pod => {
            let host_network = object
                .pointer("/spec/hostNetwork")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let node = s("/spec/nodeName");
            if host_network || node.is_empty() {
                return Vec::new();
            }
            gingham_model::names::workload_endpoint_name(node, K8S_ORCHESTRATOR, name, POD_ENDPOINT)
                .map(|w| vec![Kind::WorkloadEndpoint.key(Some(ns), &w)])
                .unwrap_or_default()
        }
    }
}

fn object_ref(
    kind: K8sObjectKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> K8sObjectRef {
    K8sObjectRef {
        kind,
        namespace: if kind.is_namespaced() {
            Some(
                meta.namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
            )
        } else {
            None
        },
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// A typed Kubernetes object as the model's conversion reads it (its JSON without
/// `apiVersion`/`kind`), as the controllers decode them.
fn decode<K: serde::Serialize, T: DeserializeOwned>(
    object: K8sObjectRef,
    obj: &K,
) -> Result<T, K8sBackedError> {
    let convert = |message: String| K8sBackedError::Convert {
        object: object.clone(),
        path: String::new(),
        message,
    };
    let mut v = serde_json::to_value(obj).map_err(|e| convert(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    serde_json::from_value(v).map_err(|e| convert(e.to_string()))
}

fn stored(r: Resource) -> (String, Vec<u8>) {
    let meta = r.meta();
    let key = r.kind().key(meta.namespace.as_deref(), &meta.name);
    (key, r.to_stored())
}

fn time_string(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<String> {
    t.as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// Kubernetes NetworkPolicy `<ns>/<name>` → (`networkpolicies/<ns>/knp.default.<name>`, the
/// Calico NetworkPolicy), through [`gingham_model::k8s::network_policy_to_calico`].
pub fn policy_from_network_policy(
    np: &netv1::NetworkPolicy,
) -> Result<(String, Vec<u8>), K8sBackedError> {
    let object = object_ref(K8sObjectKind::NetworkPolicy, &np.metadata);
    let model: K8sNetworkPolicy = decode(object.clone(), np)?;
    let p = k8s::network_policy_to_calico(&model).map_err(|e| K8sBackedError::Convert {
        object,
        path: e.path,
        message: e.message,
    })?;
    Ok(stored(Resource::NetworkPolicy(p)))
}

/// Namespace `<ns>` → (`profiles/kns.<ns>`, the Profile), through
/// [`gingham_model::k8s::namespace_to_profile`].
pub fn profile_from_namespace(ns: &corev1::Namespace) -> Result<(String, Vec<u8>), K8sBackedError> {
    let object = object_ref(K8sObjectKind::Namespace, &ns.metadata);
    let model: K8sNamespace = decode(object.clone(), ns)?;
    if model.metadata.name.is_empty() {
        return Err(K8sBackedError::Convert {
            object,
            path: "metadata.name".into(),
            message: "a Namespace needs a name".into(),
        });
    }
    Ok(stored(Resource::Profile(k8s::namespace_to_profile(&model))))
}

/// ServiceAccount `<ns>/<sa>` → (`profiles/ksa.<ns>.<sa>`, the Profile), through
/// [`gingham_model::k8s::service_account_to_profile`]; `uid` and `creationTimestamp` are the
/// ServiceAccount's, as Calico's KDD gives them.
pub fn profile_from_service_account(
    sa: &corev1::ServiceAccount,
) -> Result<(String, Vec<u8>), K8sBackedError> {
    let object = object_ref(K8sObjectKind::ServiceAccount, &sa.metadata);
    let model: K8sServiceAccount = decode(object.clone(), sa)?;
    if model.metadata.name.is_empty() {
        return Err(K8sBackedError::Convert {
            object,
            path: "metadata.name".into(),
            message: "a ServiceAccount needs a name".into(),
        });
    }
    let mut p = k8s::service_account_to_profile(&model);
    p.metadata.uid = model.metadata.uid.clone();
    p.metadata.creation_timestamp = model.metadata.creation_timestamp.clone();
    Ok(stored(Resource::Profile(p)))
}

// ===== Pods =====

/// Whether Calico's CNI plugin has taken the pod's addresses back (at DEL it sets the
/// `podIP` annotation to `""`) while the pod is being deleted; or the pod has finished.
/// (Calico's `IsFinished`, conversion.go.)
fn pod_finished(pod: &corev1::Pod) -> bool {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let ip_removed = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_POD_IP))
        .is_some_and(String::is_empty);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (deleting && ip_removed) || matches!(phase, Some("Succeeded" | "Failed" | "Completed"))
}

/// Whether the pod has an address (Calico's `HasIPAddress`: `status.podIP` or the CNI's
/// `podIP` annotation).
fn pod_has_ip(pod: &corev1::Pod) -> bool {
    let status_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|s| !s.is_empty());
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_POD_IP))
        .is_some_and(|s| !s.is_empty());
    status_ip || annotated
}

/// Pod → its WorkloadEndpoint (`workloadendpoints/<ns>/<node>-k8s-<pod>-eth0`), through
/// [`gingham_model::k8s::pod_to_workload_endpoint`]. Empty, as Felix sees pods in Calico's KDD,
/// for host-network pods, unscheduled pods, pods without an address yet (neither
/// `status.podIP` nor the CNI's `cni.projectcalico.org/podIP`), and finished pods (phase
/// Succeeded/Failed, or being deleted with the `podIP` annotation emptied by the CNI's DEL):
/// so an endpoint exists exactly between the CNI plugin's ADD and DEL.
pub fn workload_endpoints_from_pod(
    pod: &corev1::Pod,
) -> Result<Vec<(String, Vec<u8>)>, K8sBackedError> {
    if pod_finished(pod) || !pod_has_ip(pod) {
        return Ok(Vec::new());
    }
    let object = object_ref(K8sObjectKind::Pod, &pod.metadata);
    let model: K8sPod = decode(object.clone(), pod)?;
    let convert = |e: gingham_model::ConvertError| K8sBackedError::Convert {
        object: object.clone(),
        path: e.path,
        message: e.message,
    };
    match k8s::pod_to_workload_endpoint(&model).map_err(convert)? {
        Ok(w) => Ok(vec![stored(Resource::WorkloadEndpoint(w))]),
        // Host-network and unscheduled pods have no endpoint.
        Err(_) => Ok(Vec::new()),
    }
}

/// The JSON merge patch of a Pod's annotations (`value` `null` removes one).
fn annotations_patch(annotations: Map<String, Value>) -> Value {
    let mut metadata = Map::new();
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    json!({ "metadata": Value::Object(metadata) })
}

/// Adds preconditions to a patch made here: `metadata.resourceVersion` (the write fails with
/// 409 Conflict unless the object is still at that version) and `metadata.uid` (the write fails
/// unless it is still the same object, e.g. not a pod re-created under the same name), as
/// Calico's KDD clients make them.
pub fn with_preconditions(
    mut patch: Value,
    resource_version: Option<&str>,
    uid: Option<&str>,
) -> Value {
    if let Some(meta) = patch.as_object_mut().and_then(|p| {
        p.entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    }) {
        if let Some(rv) = resource_version {
            meta.insert("resourceVersion".into(), Value::String(rv.to_owned()));
        }
        if let Some(uid) = uid {
            meta.insert("uid".into(), Value::String(uid.to_owned()));
        }
    }
    patch
}

fn endpoint_key(key: &str) -> Result<(K8sObjectRef, String, String), K8sBackedError> {
    match k8s_backed_kind(key) {
        Some(b @ K8sBacked::WorkloadEndpoint { .. }) => {
            let object = b.object().expect("a WorkloadEndpoint is a pod");
            let K8sBacked::WorkloadEndpoint { node, pod, .. } = b else {
                unreachable!("matched above")
            };
            Ok((object, node, pod))
        }
        Some(other) => Err(other
            .check_write()
            .err()
            .unwrap_or_else(|| K8sBackedError::Unbacked {
                key: key.to_owned(),
                why: "not a WorkloadEndpoint key".into(),
            })),
        None => Err(K8sBackedError::Unbacked {
            key: key.to_owned(),
            why: format!(
                "not a WorkloadEndpoint key (valid: {}<namespace>/<name>)",
                Kind::WorkloadEndpoint.key_prefix(None)
            ),
        }),
    }
}

/// A WorkloadEndpoint write (create or update of `key` with `value`) as Calico's KDD client
/// makes it for the CNI plugin: the Pod and the JSON merge patch of its annotations
/// `cni.projectcalico.org/podIP` (first address), `podIPs` (all, comma separated) and
/// `containerID` (the runtime's container ID). Everything else in a WorkloadEndpoint comes from
/// the Pod itself (labels, service account, ports...) and is not written. No addresses: an
/// empty patch, as Calico's.
///
/// Calico patches the `status` subresource ([`K8sObjectKind::write_subresource`]) without a
/// resourceVersion precondition (kubelet updates pod status all the time); add one with
/// [`with_preconditions`] where a compare needs it.
pub fn pod_patch_for_workload_endpoint(
    key: &str,
    value: &[u8],
) -> Result<(K8sObjectRef, Value), K8sBackedError> {
    let (object, node, pod) = endpoint_key(key)?;
    let bad = |message: String| K8sBackedError::BadValue {
        key: key.to_owned(),
        message,
    };
    let w = match Resource::from_stored(Kind::WorkloadEndpoint, value) {
        Ok(Resource::WorkloadEndpoint(w)) => w,
        Ok(_) => return Err(bad("not a WorkloadEndpoint".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    let checks = [
        (
            "spec.orchestrator",
            w.spec.orchestrator.as_str(),
            K8S_ORCHESTRATOR,
        ),
        ("spec.node", w.spec.node.as_str(), node.as_str()),
        ("spec.pod", w.spec.pod.as_str(), pod.as_str()),
        ("spec.endpoint", w.spec.endpoint.as_str(), POD_ENDPOINT),
        (
            "metadata.namespace",
            w.metadata.namespace.as_deref().unwrap_or_default(),
            object.namespace.as_deref().unwrap_or_default(),
        ),
    ];
    for (path, got, want) in checks {
        if got != want {
            return Err(bad(format!(
                "{path} is {} but the key names {} (in the Kubernetes datastore a WorkloadEndpoint is its pod's)",
                gingham_model::quote(got),
                gingham_model::quote(want)
            )));
        }
    }
    let mut annotations = Map::new();
    if let Some(first) = w.spec.ip_networks.first() {
        let all: Vec<String> = w.spec.ip_networks.iter().map(ToString::to_string).collect();
        annotations.insert(ANNOTATION_POD_IP.into(), Value::String(first.to_string()));
        annotations.insert(ANNOTATION_POD_IPS.into(), Value::String(all.join(",")));
        // The runtime's container ID: Gingham's CNI keeps it in this annotation of the
        // endpoint when `spec.containerID` had to be rewritten into a valid name.
        let container_id = w
            .metadata
            .annotations
            .get(ANNOTATION_CONTAINER_ID)
            .filter(|s| !s.is_empty())
            .unwrap_or(&w.spec.container_id);
        if !container_id.is_empty() {
            annotations.insert(
                ANNOTATION_CONTAINER_ID.into(),
                Value::String(container_id.clone()),
            );
        }
    }
    Ok((object, annotations_patch(annotations)))
}

/// A WorkloadEndpoint delete as Calico's KDD client makes it: the Pod's `podIP` and `podIPs`
/// annotations set to `""` (the signal that the CNI plugin's DEL took the addresses back; the
/// container ID stays, so that a repeated DEL can tell which instance of the pod it sees). The
/// pod is not deleted. Calico adds the caller's resourceVersion and uid preconditions
/// ([`with_preconditions`]).
pub fn pod_patch_for_workload_endpoint_delete(
    key: &str,
) -> Result<(K8sObjectRef, Value), K8sBackedError> {
    let (object, _, _) = endpoint_key(key)?;
    let mut annotations = Map::new();
    annotations.insert(ANNOTATION_POD_IP.into(), Value::String(String::new()));
    annotations.insert(ANNOTATION_POD_IPS.into(), Value::String(String::new()));
    Ok((object, annotations_patch(annotations)))
}

// ===== Nodes =====

fn annotation<'a>(node: &'a corev1::Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// An annotation's value when `valid` accepts it; an invalid one is ignored (logged), as
/// Calico's `getAnnotation` does.
fn valid_annotation<T>(
    node: &corev1::Node,
    key: &str,
    valid: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let raw = annotation(node, key)?;
    let parsed = valid(raw);
    if parsed.is_none() {
        tracing::info!(node = ?node.metadata.name, annotation = key, value = raw, "invalid Calico annotation on the Kubernetes Node; ignored");
    }
    parsed
}

/// An IPv4 address, or an IPv4 network whose address is its network address (Calico's
/// `ValidateIPv4Network`); the value as given.
fn ipv4_network(s: &str) -> Option<String> {
    let n = cidr::parse_net(s).ok()?;
    (n.addr().is_ipv4() && n.addr() == n.network()).then(|| s.to_owned())
}

fn ipv6_network(s: &str) -> Option<String> {
    let n = cidr::parse_net(s).ok()?;
    (n.addr().is_ipv6() && n.addr() == n.network()).then(|| s.to_owned())
}

/// A MAC address: six (or eight, or twenty) hex octets separated by `:` or `-`, or groups of
/// four hex digits separated by `.`, as Go's `net.ParseMAC` reads them.
fn mac(s: &str) -> Option<String> {
    let octets = |sep: char, width: usize| {
        let parts: Vec<&str> = s.split(sep).collect();
        let n = parts.len() * width / 2;
        (matches!(n, 6 | 8 | 20)
            && parts
                .iter()
                .all(|p| p.len() == width && p.bytes().all(|b| b.is_ascii_hexdigit())))
        .then(|| s.to_owned())
    };
    octets(':', 2)
        .or_else(|| octets('-', 2))
        .or_else(|| octets('.', 4))
}

fn json_map<T: DeserializeOwned>(node: &corev1::Node, key: &str) -> Option<T> {
    let raw = annotation(node, key)?;
    match serde_json::from_str(raw) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(node = ?node.metadata.name, annotation = key, error = %e, "unreadable Calico annotation on the Kubernetes Node; ignored");
            None
        }
    }
}

/// Kubernetes Node → (`nodes/<name>`, the Calico Node), as Calico's KDD reads it
/// (`K8sNodeToCalico`, without host-local IPAM's static tunnel address):
///
/// - `metadata`: the name, `uid` and `creationTimestamp` of the Kubernetes Node; labels are the
///   Calico Node's own (annotation `projectcalico.org/labels`) overlaid with the Kubernetes
///   Node's, which win; annotations are the Calico Node's own (`projectcalico.org/annotations`)
///   plus `projectcalico.org/kube-labels`, the Kubernetes labels as JSON, so that a write can
///   tell them apart ([`k8s_node_patch_for`]);
/// - `spec.bgp` (only when something is set), `spec.wireguard`, the VXLAN fields and
///   `status.wireguardPublicKey[V6]` from the `projectcalico.org/` annotations; an annotation
///   that is not valid for its field is ignored, as Calico does;
/// - `spec.orchRefs`: `[{nodeName: <name>, orchestrator: k8s}]`;
/// - `spec.addresses`: the BGP addresses (`CalicoNodeIP`), then the Kubernetes Node's
///   `InternalIP` and `ExternalIP` addresses; `spec.interfaces` from `projectcalico.org/Interfaces`
///   (addresses that are not IPs dropped); `status.podCIDRs` from `spec.podCIDRs`.
pub fn calico_node_from_k8s(node: &corev1::Node) -> Result<(String, Vec<u8>), K8sBackedError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(K8sBackedError::Convert {
            object: K8sObjectRef::cluster(K8sObjectKind::Node, ""),
            path: "metadata.name".into(),
            message: "a Node needs a name".into(),
        });
    }
    let mut meta = ObjectMeta {
        uid: node.metadata.uid.clone(),
        creation_timestamp: time_string(&node.metadata.creation_timestamp),
        ..ObjectMeta::named(name.clone())
    };
    if let Some(labels) = json_map::<Labels>(node, NODE_CALICO_LABELS) {
        meta.labels = labels;
    }
    if let Some(annotations) = json_map::<Labels>(node, NODE_CALICO_ANNOTATIONS) {
        meta.annotations = annotations;
    }
    let k8s_labels = &node.metadata.labels;
    for (k, v) in k8s_labels.iter().flatten() {
        meta.labels.insert(k.clone(), v.clone());
    }
    meta.annotations.insert(
        NODE_KUBE_LABELS.to_owned(),
        serde_json::to_string(k8s_labels).unwrap_or_else(|_| "null".into()),
    );

    let bgp = NodeBgpSpec {
        as_number: annotation(node, NODE_AS_NUMBER).and_then(|s| match AsNumber::parse(s) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::info!(node = %name, annotation = NODE_AS_NUMBER, error = %e, "invalid AS number annotation; ignored");
                None
            }
        }),
        ipv4_address: valid_annotation(node, NODE_IPV4_ADDRESS, |s| {
            cidr::parse_net(s).ok().filter(|n| n.addr().is_ipv4())
        }),
        ipv6_address: valid_annotation(node, NODE_IPV6_ADDRESS, |s| {
            cidr::parse_net(s).ok().filter(|n| n.addr().is_ipv6())
        }),
        ipv4_ipip_tunnel_addr: valid_annotation(node, NODE_IPV4_IPIP_TUNNEL_ADDR, ipv4_network)
            .unwrap_or_default(),
        route_reflector_cluster_id: valid_annotation(node, NODE_RR_CLUSTER_ID, ipv4_network)
            .unwrap_or_default(),
    };
    let wireguard = NodeWireguardSpec {
        interface_ipv4_address: valid_annotation(node, NODE_WIREGUARD_IPV4_ADDR, ipv4_network)
            .unwrap_or_default(),
        interface_ipv6_address: valid_annotation(node, NODE_WIREGUARD_IPV6_ADDR, ipv6_network)
            .unwrap_or_default(),
    };

    let mut addresses = Vec::new();
    for a in [bgp.ipv4_address, bgp.ipv6_address].into_iter().flatten() {
        addresses.push(NodeAddress {
            address: a.to_string(),
            type_: "CalicoNodeIP".into(),
        });
    }
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
            addresses.push(NodeAddress {
                address: a.address.clone(),
                type_: a.type_.clone(),
            });
        }
    }

    let mut interfaces: Vec<NodeInterface> = json_map(node, NODE_INTERFACES).unwrap_or_default();
    for iface in &mut interfaces {
        iface
            .addresses
            .retain(|a| a.parse::<std::net::IpAddr>().is_ok());
    }

    let status = NodeStatus {
        wireguard_public_key: annotation(node, NODE_WIREGUARD_PUBLIC_KEY)
            .unwrap_or_default()
            .to_owned(),
        wireguard_public_key_v6: annotation(node, NODE_WIREGUARD_PUBLIC_KEY_V6)
            .unwrap_or_default()
            .to_owned(),
        pod_cidrs: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default(),
    };

    let calico = Node {
        metadata: meta,
        spec: NodeSpec {
            bgp: (!bgp.is_empty()).then_some(bgp),
            ipv4_vxlan_tunnel_addr: valid_annotation(
                node,
                NODE_IPV4_VXLAN_TUNNEL_ADDR,
                ipv4_network,
            )
            .unwrap_or_default(),
            vxlan_tunnel_mac_addr: valid_annotation(node, NODE_VXLAN_TUNNEL_MAC, mac)
                .unwrap_or_default(),
            ipv6_vxlan_tunnel_addr: valid_annotation(
                node,
                NODE_IPV6_VXLAN_TUNNEL_ADDR,
                ipv6_network,
            )
            .unwrap_or_default(),
            vxlan_tunnel_mac_addr_v6: valid_annotation(node, NODE_VXLAN_TUNNEL_MAC_V6, mac)
                .unwrap_or_default(),
            orch_refs: vec![OrchRef {
                node_name: name,
                orchestrator: K8S_ORCHESTRATOR.into(),
            }],
            wireguard: (wireguard != NodeWireguardSpec::default()).then_some(wireguard),
            addresses,
            interfaces,
        },
        status: (status != NodeStatus::default()).then_some(status),
    };
    Ok(stored(Resource::Node(calico)))
}

/// The `projectcalico.org/` annotations a Calico Node's fields make (`None`: absent).
fn node_annotations(node: &Node) -> BTreeMap<&'static str, Option<String>> {
    let s = &node.spec;
    let bgp = s.bgp.clone().unwrap_or_default();
    let wg = s.wireguard.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let json_of = |m: &Labels| {
        (!m.is_empty())
            .then(|| serde_json::to_string(m).ok())
            .flatten()
    };
    let mut out = BTreeMap::new();
    out.insert(NODE_CALICO_LABELS, json_of(&node.metadata.labels));
    out.insert(NODE_CALICO_ANNOTATIONS, json_of(&node.metadata.annotations));
    out.insert(NODE_IPV4_ADDRESS, bgp.ipv4_address.map(|n| n.to_string()));
    out.insert(NODE_IPV6_ADDRESS, bgp.ipv6_address.map(|n| n.to_string()));
    out.insert(NODE_IPV4_IPIP_TUNNEL_ADDR, text(&bgp.ipv4_ipip_tunnel_addr));
    out.insert(NODE_AS_NUMBER, bgp.as_number.map(|n| n.to_string()));
    out.insert(NODE_RR_CLUSTER_ID, text(&bgp.route_reflector_cluster_id));
    out.insert(NODE_IPV4_VXLAN_TUNNEL_ADDR, text(&s.ipv4_vxlan_tunnel_addr));
    out.insert(NODE_VXLAN_TUNNEL_MAC, text(&s.vxlan_tunnel_mac_addr));
    out.insert(NODE_IPV6_VXLAN_TUNNEL_ADDR, text(&s.ipv6_vxlan_tunnel_addr));
    out.insert(NODE_VXLAN_TUNNEL_MAC_V6, text(&s.vxlan_tunnel_mac_addr_v6));
    out.insert(NODE_WIREGUARD_IPV4_ADDR, text(&wg.interface_ipv4_address));
    out.insert(NODE_WIREGUARD_IPV6_ADDR, text(&wg.interface_ipv6_address));
    out.insert(
        NODE_WIREGUARD_PUBLIC_KEY,
        text(&status.wireguard_public_key),
    );
    out.insert(
        NODE_WIREGUARD_PUBLIC_KEY_V6,
        text(&status.wireguard_public_key_v6),
    );
    out.insert(
        NODE_INTERFACES,
        (!s.interfaces.is_empty())
            .then(|| serde_json::to_string(&s.interfaces).ok())
            .flatten(),
    );
    out
}

/// A Calico Node write (update of `nodes/<name>` with `value`) as Calico's KDD client makes it
/// (`mergeCalicoNodeIntoK8sNode`): the JSON merge patch of `existing`'s `projectcalico.org/`
/// annotations, each set from its field or removed when the field is empty. The Kubernetes
/// Node's labels are never written: labels the Calico Node inherited from it (listed in its
/// `projectcalico.org/kube-labels` annotation) are left out, the others are the Calico Node's
/// own and go to `projectcalico.org/labels`. `orchRefs`, `addresses` and `status.podCIDRs`
/// come from the Kubernetes Node and are not written.
///
/// Calico writes through the `status` subresource ([`K8sObjectKind::write_subresource`]);
/// add a resourceVersion precondition with [`with_preconditions`].
pub fn k8s_node_patch_for(value: &[u8], existing: &corev1::Node) -> Result<Value, K8sBackedError> {
    let name = existing.metadata.name.clone().unwrap_or_default();
    let key = Kind::Node.key(None, &name);
    let bad = |message: String| K8sBackedError::BadValue {
        key: key.clone(),
        message,
    };
    let mut node = match Resource::from_stored(Kind::Node, value) {
        Ok(Resource::Node(n)) => n,
        Ok(_) => return Err(bad("not a Node".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    if node.metadata.name != name {
        return Err(bad(format!(
            "metadata.name is {} but the Kubernetes Node is {}",
            gingham_model::quote(&node.metadata.name),
            gingham_model::quote(&name)
        )));
    }
    // Undo what reading added: the inherited Kubernetes labels and the bookkeeping annotation.
    if let Some(raw) = node.metadata.annotations.remove(NODE_KUBE_LABELS) {
        let inherited: Option<Labels> = serde_json::from_str(&raw).map_err(|e| {
            bad(format!(
                "metadata.annotations.{NODE_KUBE_LABELS} is not a JSON map of labels: {e}"
            ))
        })?;
        for (k, v) in inherited.iter().flatten() {
            if node.metadata.labels.get(k).is_some_and(|mine| mine != v) {
                tracing::warn!(node = %name, label = %k, "a change to a label the Kubernetes Node sets is ignored (change the Kubernetes Node's label instead)");
            }
            node.metadata.labels.remove(k);
        }
    }
    let current = existing.metadata.annotations.clone().unwrap_or_default();
    let mut annotations = Map::new();
    for (k, want) in node_annotations(&node) {
        match want {
            Some(v) => {
                if current.get(k) != Some(&v) {
                    annotations.insert(k.to_owned(), Value::String(v));
                }
            }
            None => {
                if current.contains_key(k) {
                    annotations.insert(k.to_owned(), Value::Null);
                }
            }
        }
    }
    Ok(annotations_patch(annotations))
}

/// What deleting the Calico Node `nodes/<name>` does in KDD here: the JSON merge patch removing
/// every `projectcalico.org/` annotation that holds a Calico Node field from the Kubernetes Node,
/// which stays (it belongs to Kubernetes; reading it again gives a bare Calico Node with its
/// `orchRefs` and addresses). Calico's own KDD node client refuses deletes altogether
/// (`Delete` is not supported; calicoctl's cleanup around it still runs).
pub fn k8s_node_delete_patch(existing: &corev1::Node) -> Value {
    let current = existing.metadata.annotations.clone().unwrap_or_default();
    let annotations: Map<String, Value> = NODE_ANNOTATIONS
        .iter()
        .filter(|k| current.contains_key(**k))
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    annotations_patch(annotations)
}

pub mod store;

#[cfg(test)]
mod tests;
