//! IP pools as IPAM sees them, and the order in which a node walks a pool's blocks.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::addr::{self, Family};
use crate::error::{Error, Result};

/// What an address is for (`IPPool.spec.allowedUses`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Use {
    #[default]
    Workload,
    Tunnel,
    LoadBalancer,
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Use::Workload => "Workload",
            Use::Tunnel => "Tunnel",
            Use::LoadBalancer => "LoadBalancer",
        })
    }
}

/// The parts of an IPPool that IPAM needs. The caller (which owns the resource model and the
/// selector engine) evaluates the pool's node selector for the node in question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the pool's blocks (26 / 122 by default).
    pub block_size: u8,
    pub disabled: bool,
    /// Whether `spec.nodeSelector` (and namespace selector, if any) selects the node.
    pub node_selector_matches: bool,
    /// `spec.allowedUses`; Calico's default is `[Workload, Tunnel]`.
    pub allowed_uses: Vec<Use>,
}

impl PoolSpec {
    /// An enabled pool selecting every node, allowed for workloads and tunnels, with the default
    /// block size of its family.
    pub fn new(name: impl Into<String>, cidr: IpNet) -> Self {
        let block_size = match Family::of_net(&cidr) {
            Family::V4 => 26,
            Family::V6 => 122,
        };
        Self {
            name: name.into(),
            cidr,
            block_size,
            disabled: false,
            node_selector_matches: true,
            allowed_uses: vec![Use::Workload, Use::Tunnel],
        }
    }

    pub fn with_block_size(mut self, block_size: u8) -> Self {
        self.block_size = block_size;
        self
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Checks the pool the way Calico validates an IPPool.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidPool {
            name: self.name.clone(),
            reason,
        };
        if self.cidr != self.cidr.trunc() {
            return Err(bad(format!(
                "cidr {} has host bits set; use {}",
                self.cidr,
                self.cidr.trunc()
            )));
        }
        let (lo, hi) = match self.family() {
            Family::V4 => (20, 32),
            Family::V6 => (116, 128),
        };
        if !(lo..=hi).contains(&self.block_size) {
            return Err(bad(format!(
                "blockSize {} is out of range for {} (valid: {lo}-{hi})",
                self.block_size,
                self.family()
            )));
        }
        if self.cidr.prefix_len() > self.block_size {
            return Err(bad(format!(
                "cidr {} is smaller than one block (blockSize {}); use a prefix of /{} or shorter",
                self.cidr, self.block_size, self.block_size
            )));
        }
        Ok(())
    }

    pub fn allows(&self, u: Use) -> bool {
        self.allowed_uses.contains(&u)
    }

    /// `name (cidr)`, as error messages show a pool.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.cidr)
    }

    pub fn num_blocks(&self) -> u128 {
        addr::block_count(&self.cidr, self.block_size)
    }

    /// The index of the block with the given CIDR inside this pool.
    pub fn block_index(&self, block: &IpNet) -> u128 {
        let step = u32::from(self.family().bits() - self.block_size);
        let off = addr::to_u128(block.network()) - addr::to_u128(self.cidr.network());
        if step >= 128 { 0 } else { off >> step }
    }

    /// Where `node` starts walking this pool's blocks. Like Calico, the start is random but
    /// seeded by the node name, so that a node keeps picking the same area and concurrent
    /// requests on one node converge on the same block; single-address blocks use the clock.
    pub fn walk_start(&self, node: &str) -> u128 {
        let n = self.num_blocks();
        let seed = if self.block_size == self.family().bits() {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        } else {
            u64::from(fnv1_32(node.as_bytes()))
        };
        let r = (u128::from(splitmix64(seed)) << 64) | u128::from(splitmix64(seed ^ 0x5bd1_e995));
        if n == u128::MAX { r } else { r % n }
    }

    /// Every block of the pool, starting at the node's start and wrapping around.
    pub fn walk(&self, node: &str) -> impl Iterator<Item = IpNet> + '_ {
        let n = self.num_blocks();
        let start = self.walk_start(node);
        (0..n).map(move |i| {
            let idx = if n == u128::MAX {
                start.wrapping_add(i)
            } else {
                (start + i) % n
            };
            addr::nth_block(&self.cidr, self.block_size, idx)
        })
    }

    /// Orders existing blocks of this pool as [`PoolSpec::walk`] would visit them.
    pub fn walk_position(&self, node: &str, block: &IpNet) -> u128 {
        let n = self.num_blocks();
        let start = self.walk_start(node);
        let i = self.block_index(block);
        if n == u128::MAX {
            i.wrapping_sub(start)
        } else {
            (i + n - start) % n
        }
    }
}

/// 32-bit FNV-1 (the hash Calico seeds its block search with).
fn fnv1_32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(b);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages() {
        let cases = [
            ("10.0.0.1/16", 26, "has host bits set; use 10.0.0.0/16"),
            (
                "10.0.0.0/16",
                19,
                "blockSize 19 is out of range for IPv4 (valid: 20-32)",
            ),
            ("fd00::/64", 26, "out of range for IPv6 (valid: 116-128)"),
            ("10.0.0.0/28", 26, "smaller than one block"),
        ];
        for (cidr, bs, want) in cases {
            let p = PoolSpec::new("p", cidr.parse().unwrap()).with_block_size(bs);
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{cidr}/{bs}: {e}");
        }
        PoolSpec::new("p", "10.0.0.0/16".parse().unwrap())
            .validate()
            .unwrap();
    }

    #[test]
    fn walk_covers_every_block_once_and_is_stable_per_node() {
        let p = PoolSpec::new("p", "10.0.0.0/22".parse().unwrap());
        let a: Vec<IpNet> = p.walk("node-a").collect();
        assert_eq!(a.len(), 16);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert_eq!(a, p.walk("node-a").collect::<Vec<_>>());
        for (i, b) in a.iter().enumerate() {
            assert_eq!(p.walk_position("node-a", b), i as u128);
        }
        // A huge IPv6 pool walks lazily.
        let v6 = PoolSpec::new("v6", "fd00::/48".parse().unwrap());
        assert_eq!(v6.walk("n").take(3).count(), 3);
    }
}
