//! The network configuration a runtime passes on stdin, with the fields Calico's CNI plugin
//! understands (`datastore_type`, `etcd_endpoints`, `nodename`, `mtu`, `ipam`, `policy`,
//! `kubernetes`, `log_level`) plus our `datastore` URL.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{CniError, ErrorCode};

/// The network configuration (one plugin's entry of a conflist, with `cniVersion` and `name`
/// filled in by the runtime).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Our datastore URL (`sqlite:PATH`, `etcd`, `etcd:URL`, `kubernetes:KUBECONFIG`); overrides
    /// `datastore_type`.
    #[serde(default)]
    pub datastore: Option<String>,
    /// Calico's `datastore_type`: `etcdv3` (with the `etcd_*` fields) or `kubernetes` (the API
    /// server from the `kubernetes` section, else `KUBECONFIG` or in-cluster).
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<String>,
    /// The node this plugin runs on (Calico: defaults to the hostname).
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: Option<IpamConfig>,
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// Calico's `feature_control` (`ip_addrs_no_ipam`, `floating_ips`).
    #[serde(default)]
    pub feature_control: FeatureControl,
    #[serde(default)]
    pub container_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: Option<serde_json::Value>,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<serde_json::Value>,
    /// Every other field, kept for plugins that chain.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl NetConf {
    /// Decodes and checks the required fields, with a CNI error naming the bad field.
    pub fn from_value(v: &serde_json::Value) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("invalid network configuration: {e}"),
            )
        })?;
        let version = if conf.cni_version.is_empty() {
            "1.0.0"
        } else {
            conf.cni_version.as_str()
        };
        if conf.name.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "invalid network configuration: `name` is required",
            )
            .in_version(version));
        }
        if conf.cni_version.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "invalid network configuration: `cniVersion` is required",
            ));
        }
        Ok(conf)
    }
}

/// The `ipam` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct IpamConfig {
    /// `gingham-ipam` (also accepts Calico's `calico-ipam`) or `host-local`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Calico spells these as strings ("true"/"false").
    #[serde(default)]
    pub assign_ipv4: Option<serde_json::Value>,
    #[serde(default)]
    pub assign_ipv6: Option<serde_json::Value>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// host-local: the subnet (or `usePodCidr`).
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn truthy(v: &Option<serde_json::Value>, default: bool) -> bool {
    match v {
        None => default,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(_) => default,
    }
}

impl IpamConfig {
    /// IPv4 is assigned unless `assign_ipv4` is "false" (Calico's default).
    pub fn assign_ipv4(&self) -> bool {
        truthy(&self.assign_ipv4, true)
    }
    /// IPv6 is assigned only when `assign_ipv6` is "true" (Calico's default).
    pub fn assign_ipv6(&self) -> bool {
        truthy(&self.assign_ipv6, false)
    }
}

/// The `policy` section (`{"type": "k8s"}`); with type `k8s` the plugin reads the pod and its
/// namespace from the Kubernetes API at ADD. The `k8s_*` fields override the kubeconfig's, as
/// Calico's do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PolicyConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub k8s_api_root: Option<String>,
    #[serde(default)]
    pub k8s_auth_token: Option<String>,
    #[serde(default)]
    pub k8s_client_certificate: Option<String>,
    #[serde(default)]
    pub k8s_client_key: Option<String>,
    #[serde(default)]
    pub k8s_certificate_authority: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The `kubernetes` section: where the API server is (for `policy: {type: k8s}` and for
/// `datastore_type: kubernetes`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct KubernetesConfig {
    /// A kubeconfig file.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The API server's URL (overrides the kubeconfig's; Calico also accepts the old form
    /// ending in `/api/v1/`).
    #[serde(default)]
    pub k8s_api_root: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Calico's `feature_control`: features a pod annotation may only use when enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FeatureControl {
    /// `cni.projectcalico.org/ipAddrsNoIpam` is honoured.
    #[serde(default)]
    pub ip_addrs_no_ipam: bool,
    /// `cni.projectcalico.org/floatingIPs` is honoured.
    #[serde(default)]
    pub floating_ips: bool,
}

impl NetConf {
    /// Whether ADD reads the pod from the Kubernetes API (`policy: {type: k8s}`).
    pub fn k8s_policy(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.kind == "k8s")
    }

    /// The API server's URL from the configuration, if it names one (`kubernetes.k8s_api_root`
    /// wins over `policy.k8s_api_root`), without the old `/api/...` suffix.
    pub fn k8s_api_root(&self) -> Option<String> {
        let from_k8s = self
            .kubernetes
            .as_ref()
            .and_then(|k| k.k8s_api_root.clone());
        let from_policy = self.policy.as_ref().and_then(|p| p.k8s_api_root.clone());
        from_k8s
            .filter(|s| !s.is_empty())
            .or(from_policy.filter(|s| !s.is_empty()))
            .map(|s| match s.split_once("/api/") {
                Some((root, _)) => root.to_owned(),
                None => s,
            })
    }

    /// The kubeconfig file the configuration names, if any.
    pub fn kubeconfig(&self) -> Option<&str> {
        self.kubernetes
            .as_ref()
            .and_then(|k| k.kubeconfig.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// Whether this IPAM is Calico's (ours): the pool and address annotations apply only then.
    pub fn calico_ipam(&self) -> bool {
        matches!(
            self.ipam.as_ref().map(|i| i.kind.as_str()),
            None | Some("" | "gingham-ipam" | "calico-ipam")
        )
    }
}

/// The Kubernetes arguments a kubelet passes in `CNI_ARGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K8sArgs {
    pub namespace: String,
    pub pod: String,
    pub infra_container_id: Option<String>,
    pub uid: Option<String>,
}

impl K8sArgs {
    pub fn from_args(args: &BTreeMap<String, String>) -> Option<Self> {
        let namespace = args.get("K8S_POD_NAMESPACE").filter(|s| !s.is_empty())?;
        let pod = args.get("K8S_POD_NAME").filter(|s| !s.is_empty())?;
        Some(Self {
            namespace: namespace.clone(),
            pod: pod.clone(),
            infra_container_id: args.get("K8S_POD_INFRA_CONTAINER_ID").cloned(),
            uid: args.get("K8S_POD_UID").cloned(),
        })
    }
}
