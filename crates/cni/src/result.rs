//! The result document of ADD (and the `prevResult` of later calls), rendered in the version the
//! configuration asked for: 1.x results carry no `version` on IPs; 0.3.x/0.4.0 results do.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{CniError, ErrorCode, version_at_least};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for interfaces inside the container; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A result in its version-independent form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// Renders the result for `version` (one of the supported versions).
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let old = !version_at_least(version, "1.0.0");
        let ips: Vec<serde_json::Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).expect("ip configs serialise");
                if old {
                    let fam = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    v["version"] = serde_json::Value::String(fam.into());
                }
                v
            })
            .collect();
        let mut doc = serde_json::json!({
            "cniVersion": version,
            "interfaces": self.interfaces,
            "ips": ips,
        });
        if !self.routes.is_empty() {
            doc["routes"] = serde_json::to_value(&self.routes).expect("routes serialise");
        }
        doc["dns"] = serde_json::to_value(&self.dns).expect("dns serialises");
        doc
    }

    /// Reads a result (for example a `prevResult`) of any supported version.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, CniError> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            interfaces: Vec<Interface>,
            #[serde(default)]
            ips: Vec<RawIp>,
            #[serde(default)]
            routes: Vec<Route>,
            #[serde(default)]
            dns: Dns,
        }
        #[derive(Deserialize)]
        struct RawIp {
            address: IpNet,
            #[serde(default)]
            gateway: Option<IpAddr>,
            #[serde(default)]
            interface: Option<usize>,
        }
        let raw: Raw = serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("cannot decode a CNI result: {e}"),
            )
        })?;
        Ok(Self {
            interfaces: raw.interfaces,
            ips: raw
                .ips
                .into_iter()
                .map(|i| IpConfig {
                    address: i.address,
                    gateway: i.gateway,
                    interface: i.interface,
                })
                .collect(),
            routes: raw.routes,
            dns: raw.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                sandbox: Some("/var/run/netns/p".into()),
            }],
            ips: vec![
                IpConfig {
                    address: "10.244.0.5/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00::5/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn renders_each_version() {
        let r = sample();
        let v1 = r.to_json("1.0.0");
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][0]["address"], "10.244.0.5/32");
        let v03 = r.to_json("0.3.1");
        assert_eq!(v03["ips"][0]["version"], "4");
        assert_eq!(v03["ips"][1]["version"], "6");
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert_eq!(CniResult::from_json(&r.to_json(v)).unwrap(), r, "{v}");
        }
    }
}
