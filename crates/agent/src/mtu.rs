//! The pod MTU, as felix decides it (`felix/dataplane/linux/int_dataplane.go`: `findHostMTU`,
//! `ConfigureDefaultMTUs`, `determinePodMTU`, `writeMTUFile`), and the file the CNI plugin reads
//! it from when its network configuration sets no `mtu` (Calico's `/var/lib/calico/mtu`; ours is
//! [`FILE`] in the agent's run directory).
//!
//! The host's MTU is the smallest MTU of the interfaces that are up and match
//! FelixConfiguration's `mtuIfacePattern` ([`DEFAULT_IFACE_PATTERN`]), or
//! [`UNDETECTED_HOST_MTU`] when none matches. Each tunnel's MTU is FelixConfiguration's
//! (`vxlanMTU`, `vxlanMTUV6`, `ipipMTU`) or the host's minus the tunnel's overhead. A tunnel is
//! enabled while an IP pool uses it (FelixConfiguration's `vxlanEnabled` / `ipipEnabled`
//! override that, for IPv4), and the pod MTU is the smallest MTU of the enabled tunnels, or the
//! host's when none is.

use std::io::Write;
use std::path::{Path, PathBuf};

use gingham_model::{FelixConfigurationSpec, IpPool, IpipMode, VxlanMode};
use gingham_net::vxlan::{IPIP_OVERHEAD, VXLAN_OVERHEAD, VXLAN_V6_OVERHEAD};

/// The MTU file's name in the agent's run directory.
pub const FILE: &str = "mtu";

/// Felix's default `mtuIfacePattern`: the names of a host's external interfaces.
pub const DEFAULT_IFACE_PATTERN: &str = "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)";

/// The host MTU felix assumes when no interface matches the pattern (the smallest among
/// common cloud providers).
pub const UNDETECTED_HOST_MTU: u32 = 1460;

/// The MTU file of an agent whose run directory is `run_dir`.
pub fn file_in(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE)
}

/// The MTU of each tunnel device (used or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelMtus {
    pub vxlan: u32,
    pub vxlan_v6: u32,
    pub ipip: u32,
}

/// Which tunnels the pools use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encaps {
    pub vxlan: bool,
    pub vxlan_v6: bool,
    pub ipip: bool,
}

fn configured(v: Option<i64>) -> Option<u32> {
    v.and_then(|m| u32::try_from(m).ok()).filter(|m| *m > 0)
}

impl TunnelMtus {
    /// FelixConfiguration's MTUs, else the host's minus each tunnel's overhead.
    pub fn of(host: u32, felix: Option<&FelixConfigurationSpec>) -> TunnelMtus {
        let set = |pick: fn(&FelixConfigurationSpec) -> Option<i64>, overhead: u32| {
            configured(felix.and_then(pick)).unwrap_or(host.saturating_sub(overhead))
        };
        TunnelMtus {
            vxlan: set(|s| s.vxlan_mtu, VXLAN_OVERHEAD),
            vxlan_v6: set(|s| s.vxlan_mtu_v6, VXLAN_V6_OVERHEAD),
            ipip: set(|s| s.ipip_mtu, IPIP_OVERHEAD),
        }
    }
}

impl Encaps {
    /// Felix's encapsulation calculator: a tunnel is enabled while a pool uses it, unless
    /// FelixConfiguration says otherwise (`vxlanEnabled`, `ipipEnabled`; IPv4 only).
    pub fn of<'a>(
        pools: impl IntoIterator<Item = &'a IpPool>,
        felix: Option<&FelixConfigurationSpec>,
    ) -> Encaps {
        let mut e = Encaps::default();
        for p in pools {
            let Some(cidr) = p.spec.cidr else { continue };
            if p.spec.vxlan() != VxlanMode::Never {
                if cidr.addr().is_ipv6() {
                    e.vxlan_v6 = true;
                } else {
                    e.vxlan = true;
                }
            }
            if p.spec.ipip() != IpipMode::Never {
                e.ipip = true;
            }
        }
        if let Some(v) = felix.and_then(|s| s.vxlan_enabled) {
            e.vxlan = v;
        }
        if let Some(v) = felix.and_then(|s| s.ipip_enabled) {
            e.ipip = v;
        }
        e
    }
}

/// The pod MTU: the smallest MTU of the enabled tunnels, or the host's when none is.
pub fn pod_mtu(host: u32, tunnels: &TunnelMtus, encaps: &Encaps) -> u32 {
    [
        (encaps.ipip, tunnels.ipip),
        (encaps.vxlan, tunnels.vxlan),
        (encaps.vxlan_v6, tunnels.vxlan_v6),
    ]
    .into_iter()
    .filter(|(on, mtu)| *on && *mtu > 0)
    .map(|(_, mtu)| mtu)
    .min()
    .unwrap_or(host)
}

/// The MTU file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MtuFileError {
    #[error("cannot read the MTU file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the MTU file {path} holds {text:?}, not an MTU (valid: a whole number, 68-65535)")]
    Invalid { path: PathBuf, text: String },
}

/// The MTU in the file at `path`; `None` if there is no such file.
pub fn read(path: &Path) -> Result<Option<u32>, MtuFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MtuFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    match text.trim().parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(Some(m)),
        _ => Err(MtuFileError::Invalid {
            path: path.to_owned(),
            text: text.chars().take(40).collect(),
        }),
    }
}

/// Writes `mtu` to the file at `path` (a whole file at once: written beside it, then renamed,
/// so a reader never sees a part of it).
pub fn write(path: &Path, mtu: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let staged = path.with_extension("new");
    {
        let mut f = std::fs::File::create(&staged)?;
        write!(f, "{mtu}")?;
        f.sync_all()?;
    }
    std::fs::rename(&staged, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, vxlan: &str, ipip: &str) -> IpPool {
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: \"{cidr}\", vxlanMode: {vxlan}, ipipMode: {ipip}}}\n"
        );
        match gingham_model::load::load_resources("p.yaml", &yaml)
            .expect("valid pool")
            .remove(0)
        {
            gingham_model::Resource::IpPool(p) => p,
            other => panic!("not a pool: {other:?}"),
        }
    }

    #[test]
    fn the_pod_mtu_is_felixs() {
        let host = 1500;
        let mtus = TunnelMtus::of(host, None);
        assert_eq!(
            mtus,
            TunnelMtus {
                vxlan: 1450,
                vxlan_v6: 1430,
                ipip: 1480
            }
        );
        let mtu = |pools: &[IpPool]| pod_mtu(host, &mtus, &Encaps::of(pools, None));
        assert_eq!(mtu(&[]), 1500, "no pool: the host's");
        assert_eq!(mtu(&[pool("10.0.0.0/16", "Never", "Never")]), 1500);
        assert_eq!(mtu(&[pool("10.0.0.0/16", "Always", "Never")]), 1450);
        assert_eq!(mtu(&[pool("10.0.0.0/16", "CrossSubnet", "Never")]), 1450);
        assert_eq!(mtu(&[pool("10.0.0.0/16", "Never", "Always")]), 1480);
        assert_eq!(mtu(&[pool("fd00::/48", "Always", "Never")]), 1430);
        assert_eq!(
            mtu(&[
                pool("10.0.0.0/16", "Never", "CrossSubnet"),
                pool("10.1.0.0/16", "Always", "Never")
            ]),
            1450,
            "the smallest enabled tunnel"
        );
    }

    #[test]
    fn felix_configuration_overrides_mtus_and_encapsulation() {
        let mut spec = FelixConfigurationSpec {
            vxlan_mtu: Some(1400),
            ..Default::default()
        };
        let mtus = TunnelMtus::of(9000, Some(&spec));
        assert_eq!((mtus.vxlan, mtus.ipip), (1400, 8980));
        let vxlan = [pool("10.0.0.0/16", "Always", "Never")];
        assert_eq!(pod_mtu(9000, &mtus, &Encaps::of(&vxlan, Some(&spec))), 1400);
        spec.vxlan_enabled = Some(false);
        assert_eq!(pod_mtu(9000, &mtus, &Encaps::of(&vxlan, Some(&spec))), 9000);
        spec.ipip_enabled = Some(true);
        assert_eq!(pod_mtu(9000, &mtus, &Encaps::of(&vxlan, Some(&spec))), 8980);
        spec.vxlan_mtu = Some(0);
        assert_eq!(TunnelMtus::of(9000, Some(&spec)).vxlan, 8950, "0: unset");
    }

    #[test]
    fn the_file_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_in(&dir.path().join("run"));
        assert_eq!(read(&path).unwrap(), None, "no file: no MTU");
        write(&path, 1450).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1450");
        assert_eq!(read(&path).unwrap(), Some(1450));
        std::fs::write(&path, "big\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("holds \"big\\n\", not an MTU"), "{e}");
        std::fs::write(&path, "20").unwrap();
        assert!(read(&path).is_err(), "below IPv4's minimum");
    }
}
