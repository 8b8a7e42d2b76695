//! The CNI protocol as a container runtime speaks it: the `CNI_*` environment, the network
//! configuration on stdin, and the result, error and version documents on stdout.
//!
//! Supports spec versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0: results are produced in the
//! version the configuration asks for. This crate does no I/O and knows nothing of networking:
//! the plugin (in the `gingham` binary) reads the environment and stdin, calls [`Invocation::parse`],
//! does the work and prints what this crate renders.

mod config;
mod k8s;
mod result;

pub use config::{FeatureControl, IpamConfig, K8sArgs, KubernetesConfig, NetConf, PolicyConfig};
pub use k8s::{PodAddresses, PodPlan};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Spec versions this plugin accepts, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            _ => return None,
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Version => "VERSION",
            Self::Status => "STATUS",
            Self::Gc => "GC",
        })
    }
}

/// Well-known error codes from the spec; 100 and above are the plugin's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    LimitedConnectivity = 51,
    /// No address could be allocated (pools exhausted, requested IP unavailable).
    IpamExhausted = 100,
    /// The datastore could not be read or written.
    Datastore = 101,
    /// Setting up or tearing down the interfaces failed.
    Dataplane = 102,
    /// The Kubernetes API server could not be read (unreachable, or the pod or namespace is
    /// not there).
    Kubernetes = 103,
}

/// A CNI error document, printed on stdout with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            cni_version: "1.0.0".into(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// Sets the version the error is reported in (the configuration's, when known).
    pub fn in_version(mut self, v: &str) -> Self {
        self.cni_version = v.to_owned();
        self
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error documents serialise")
    }
}

/// The answer to `VERSION`.
pub fn version_document(requested: &str) -> String {
    serde_json::json!({"cniVersion": requested_or_latest(requested), "supportedVersions": SUPPORTED_VERSIONS})
        .to_string()
}

fn requested_or_latest(v: &str) -> &str {
    if SUPPORTED_VERSIONS.contains(&v) {
        v
    } else {
        "1.1.0"
    }
}

/// Compares two dotted versions numerically.
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(v) >= parse(min)
}

/// Everything a runtime handed the plugin for one call.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// Path of the container's network namespace (absent on some DELs and on VERSION/STATUS/GC).
    pub netns: Option<String>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
    pub path: Vec<String>,
    /// The parsed network configuration (absent for VERSION).
    pub conf: Option<NetConf>,
    /// The raw configuration, for fields plugins chain through.
    pub raw_conf: serde_json::Value,
}

impl Invocation {
    /// Parses the environment (as key/value pairs) and the configuration bytes from stdin.
    pub fn parse(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<Self, CniError> {
        let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let command = get("CNI_COMMAND").ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "CNI_COMMAND is not set")
        })?;
        let command = Command::parse(command).ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_COMMAND={command} is not a CNI command (valid: ADD, DEL, CHECK, VERSION, STATUS, GC)"
                ),
            )
        })?;
        let args = parse_cni_args(get("CNI_ARGS").unwrap_or(""))?;
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut inv = Invocation {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or("").to_owned(),
            netns: get("CNI_NETNS").map(str::to_owned),
            ifname: get("CNI_IFNAME").unwrap_or("").to_owned(),
            args,
            path,
            conf: None,
            raw_conf: serde_json::Value::Null,
        };
        if command == Command::Version {
            // VERSION may come with only {"cniVersion": ...} on stdin.
            inv.raw_conf = serde_json::from_slice(stdin).unwrap_or(serde_json::Value::Null);
            return Ok(inv);
        }
        let raw: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("the network configuration on stdin is not JSON: {e}"),
            )
        })?;
        let conf = NetConf::from_value(&raw)?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion {} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if command == Command::Check && !version_at_least(&conf.cni_version, "0.4.0") {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
                    conf.cni_version
                ),
            )
            .in_version(&conf.cni_version));
        }
        if matches!(command, Command::Status | Command::Gc)
            && !version_at_least(&conf.cni_version, "1.1.0")
        {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "{command} needs cniVersion 1.1.0, the configuration says {}",
                    conf.cni_version
                ),
            )
            .in_version(&conf.cni_version));
        }
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_container && inv.container_id.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_CONTAINERID is required for {command}"),
            )
            .in_version(&conf.cni_version));
        }
        if needs_container {
            check_container_id(&inv.container_id)
                .and_then(|()| check_ifname(&inv.ifname))
                .map_err(|e| e.in_version(&conf.cni_version))?;
        }
        if matches!(command, Command::Add | Command::Check) && inv.netns.is_none() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_NETNS is required for {command}"),
            )
            .in_version(&conf.cni_version));
        }
        inv.conf = Some(conf);
        inv.raw_conf = raw;
        Ok(inv)
    }

    /// The Kubernetes arguments a kubelet passes in `CNI_ARGS`, when present.
    pub fn k8s_args(&self) -> Option<K8sArgs> {
        K8sArgs::from_args(&self.args)
    }

    /// The version results and errors are reported in.
    pub fn version(&self) -> &str {
        self.conf
            .as_ref()
            .map(|c| c.cni_version.as_str())
            .unwrap_or("1.0.0")
    }
}

/// Checks `CNI_CONTAINERID` as the spec defines it: an alphanumeric character, then any of
/// alphanumerics, `_`, `.` and `-`.
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    let b = id.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::InvalidEnvironment,
        format!(
            "CNI_CONTAINERID={:?} is not a valid container ID (valid: an alphanumeric character, then alphanumerics, '_', '.' or '-')",
            shorten(id)
        ),
    ))
}

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks `CNI_IFNAME` (required for ADD, DEL and CHECK) as the kernel and libcni do: 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or white space.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is required (the interface to create inside the container)".to_owned())
    } else if name.len() > MAX_IFNAME_LEN {
        Some(format!(
            "is {} bytes long (valid: at most {MAX_IFNAME_LEN})",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("cannot be '.' or '..'".to_owned())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("contains '/', ':', white space or a control character".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME={:?} {p}", shorten(name)),
        )),
    }
}

/// A value cut to a length an error message can carry.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let head: String = s.chars().take(MAX).collect();
    format!("{head}… ({} bytes)", s.len())
}

/// Parses `CNI_ARGS` (`K=V;K=V`).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_ARGS entry {part:?} is not KEY=VALUE"),
            )
        })?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"gingham",
        "datastore":"sqlite:/tmp/x.db","mtu":1450,"nodename":"n1",
        "ipam":{"type":"gingham-ipam","assign_ipv6":"true","ipv4_pools":["default-ipv4-ippool"]},
        "policy":{"type":"k8s"},"kubernetes":{"kubeconfig":"/etc/cni/net.d/kubeconfig"}}"#;

    #[test]
    fn parses_a_kubelet_add() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u1",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]);
        let inv = Invocation::parse(&e, CONF.as_bytes()).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        let k8s = inv.k8s_args().unwrap();
        assert_eq!(
            (k8s.namespace.as_str(), k8s.pod.as_str()),
            ("default", "web-1")
        );
        let conf = inv.conf.unwrap();
        assert_eq!(conf.mtu, Some(1450));
        assert_eq!(conf.datastore.as_deref(), Some("sqlite:/tmp/x.db"));
        let ipam = conf.ipam.unwrap();
        assert_eq!(ipam.kind, "gingham-ipam");
        assert!(ipam.assign_ipv4());
        assert!(ipam.assign_ipv6());
        assert_eq!(ipam.ipv4_pools, vec!["default-ipv4-ippool"]);
    }

    #[test]
    fn rejects_bad_environment_with_codes() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u32);
        let cases: &[Case] = &[
            (&[], "{}", ErrorCode::InvalidEnvironment as u32),
            (&[("CNI_COMMAND", "FOO")], "{}", 4),
            (
                &[("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/x")],
                CONF,
                4, // no container id
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                ],
                CONF,
                4, // no netns
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                "not json",
                6,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                r#"{"cniVersion":"9.9.9","name":"n","type":"gingham"}"#,
                1,
            ),
            (
                &[
                    ("CNI_COMMAND", "CHECK"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                r#"{"cniVersion":"0.3.1","name":"n","type":"gingham"}"#,
                1,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                r#"{"cniVersion":"1.0.0","type":"gingham"}"#,
                7, // no name
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                r#"{"cniVersion":"1.0.0","name":"n","type":"gingham","mtu":"big"}"#,
                7,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                    ("CNI_ARGS", "novalue"),
                ],
                CONF,
                4,
            ),
        ];
        for (e, stdin, code) in cases {
            let err = Invocation::parse(&env(e), stdin.as_bytes()).unwrap_err();
            assert_eq!(err.code, *code, "{e:?} {stdin}: {err}");
            assert!(!err.msg.is_empty());
        }
    }

    #[test]
    fn ifname_and_container_id_are_checked_as_the_spec_says() {
        let base = |id: &str, ifname: Option<&str>| {
            let mut e = env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", "/x"),
            ]);
            if let Some(i) = ifname {
                e.insert("CNI_IFNAME".into(), i.into());
            }
            Invocation::parse(&e, CONF.as_bytes())
        };
        // Valid per the spec, including upper case, '_' and '.'.
        for id in ["ctrA", "ctr_x", "a.b-c", "0", "ABC123"] {
            assert!(base(id, Some("eth0")).is_ok(), "{id}");
        }
        for id in ["-x", "_x", ".x", "a/b", "a b", "a:b", "é"] {
            let err = base(id, Some("eth0")).unwrap_err();
            assert_eq!(err.code, 4, "{id}: {err}");
            assert!(err.msg.contains("CNI_CONTAINERID"), "{err}");
        }
        // CNI_IFNAME is required (no silent eth0).
        let err = base("c", None).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_IFNAME"), "{err}");
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            let err = base("c", Some(bad)).unwrap_err();
            assert_eq!(err.code, 4, "{bad:?}: {err}");
            assert!(err.msg.contains("CNI_IFNAME"), "{err}");
        }
        assert!(base("c", Some("fifteen-chars-x")).is_ok());
        // DEL needs it too; VERSION does not.
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")]);
        assert_eq!(Invocation::parse(&e, CONF.as_bytes()).unwrap_err().code, 4);
        let e = env(&[("CNI_COMMAND", "VERSION")]);
        assert!(Invocation::parse(&e, b"{}").is_ok());
    }

    #[test]
    fn version_document_lists_versions() {
        let v: serde_json::Value = serde_json::from_str(&version_document("0.4.0")).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let v: serde_json::Value = serde_json::from_str(&version_document("")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn error_json_shape() {
        let e = CniError::new(ErrorCode::IpamExhausted, "no free address")
            .with_details("pool p")
            .in_version("0.4.0");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"0.4.0","code":100,"msg":"no free address","details":"pool p"})
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.0.0", "0.4.0"));
        assert!(version_at_least("0.10.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
    }
}
