//! Address arithmetic shared by the IPAM code: families, addresses as integers, block CIDRs and
//! sets of address ranges (used for IPReservations and for counting pool space).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An IP family. Calico keeps IPv4 and IPv6 blocks and affinities under separate key prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(net.addr())
    }

    /// The number of bits of an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The version number, 4 or 6.
    pub fn version(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    /// The path segment Calico uses in keys: `ipv4` or `ipv6`.
    pub fn segment(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPv{}", self.version())
    }
}

/// The address as an unsigned integer (IPv4 addresses occupy the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]; IPv4 values are truncated to 32 bits.
pub fn from_u128(v: u128, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The first and last address of a network, as integers.
pub fn range(net: &IpNet) -> (u128, u128) {
    let first = to_u128(net.network());
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let last = if host_bits >= 128 {
        u128::MAX
    } else {
        first | ((1u128 << host_bits) - 1)
    };
    (first, last)
}

/// The number of addresses in a network, saturating at `u128::MAX` for an IPv6 /0.
pub fn size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

/// The block of `block_size` bits that contains `ip`.
pub fn block_containing(ip: IpAddr, block_size: u8) -> IpNet {
    IpNet::new(ip, block_size)
        .expect("block size was validated against the address family")
        .trunc()
}

/// The `index`-th block of `block_size` bits inside `pool`.
pub fn nth_block(pool: &IpNet, block_size: u8, index: u128) -> IpNet {
    let family = Family::of_net(pool);
    let step_bits = u32::from(family.bits() - block_size);
    let base = to_u128(pool.network());
    let offset = if step_bits >= 128 {
        0
    } else {
        index << step_bits
    };
    IpNet::new(from_u128(base + offset, family), block_size)
        .expect("block size was validated against the address family")
}

/// The number of blocks of `block_size` bits in `pool` (saturating).
pub fn block_count(pool: &IpNet, block_size: u8) -> u128 {
    let bits = u32::from(block_size - pool.prefix_len());
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

/// A set of inclusive address ranges of one family, kept sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut s = Self::new();
        for n in nets {
            let (a, b) = range(n);
            s.ranges.push((a, b));
        }
        s.normalize();
        s
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The merged ranges, in order.
    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.ranges = out;
    }

    pub fn contains(&self, v: u128) -> bool {
        let i = self.ranges.partition_point(|&(_, b)| b < v);
        self.ranges.get(i).is_some_and(|&(a, _)| a <= v)
    }

    /// True if every address of `[a, b]` is in the set.
    pub fn covers(&self, a: u128, b: u128) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e < a);
        self.ranges.get(i).is_some_and(|&(s, e)| s <= a && e >= b)
    }

    /// True if some address of `[a, b]` is in the set.
    pub fn overlaps(&self, a: u128, b: u128) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e < a);
        self.ranges.get(i).is_some_and(|&(s, _)| s <= b)
    }

    /// How many addresses of `[a, b]` are in the set (saturating).
    pub fn count_within(&self, a: u128, b: u128) -> u128 {
        let mut total: u128 = 0;
        let i = self.ranges.partition_point(|&(_, e)| e < a);
        for &(s, e) in &self.ranges[i..] {
            if s > b {
                break;
            }
            let lo = s.max(a);
            let hi = e.min(b);
            total = total.saturating_add((hi - lo).saturating_add(1));
        }
        total
    }

    /// Adds the range `[a, b]`.
    pub fn insert(&mut self, a: u128, b: u128) {
        self.ranges.push((a, b));
        self.normalize();
    }
}

/// The IPReservations that apply to a request, split by family.
#[derive(Clone, Debug, Default)]
pub struct Reservations {
    v4: RangeSet,
    v6: RangeSet,
}

impl Reservations {
    pub fn new(cidrs: &[IpNet]) -> Self {
        Self {
            v4: RangeSet::from_nets(cidrs.iter().filter(|n| Family::of_net(n) == Family::V4)),
            v6: RangeSet::from_nets(cidrs.iter().filter(|n| Family::of_net(n) == Family::V6)),
        }
    }

    pub fn set(&self, family: Family) -> &RangeSet {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        self.set(Family::of(ip)).contains(to_u128(ip))
    }

    pub fn matches_whole(&self, net: &IpNet) -> bool {
        let (a, b) = range(net);
        self.set(Family::of_net(net)).covers(a, b)
    }

    pub fn matches_some(&self, net: &IpNet) -> bool {
        let (a, b) = range(net);
        self.set(Family::of_net(net)).overlaps(a, b)
    }

    /// How many addresses of `net` are reserved.
    pub fn count_in(&self, net: &IpNet) -> u128 {
        let (a, b) = range(net);
        self.set(Family::of_net(net)).count_within(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_blocks() {
        let cases = [
            ("10.0.0.0/26", 0x0a00_0000u128, 0x0a00_003fu128),
            ("10.0.0.64/26", 0x0a00_0040, 0x0a00_007f),
            ("0.0.0.0/0", 0, 0xffff_ffff),
        ];
        for (n, a, b) in cases {
            assert_eq!(range(&net(n)), (a, b), "{n}");
        }
        assert_eq!(size(&net("fd00::/122")), 64);
        assert_eq!(size(&net("::/0")), u128::MAX);
        assert_eq!(
            block_containing("10.1.2.77".parse().unwrap(), 26),
            net("10.1.2.64/26")
        );
        assert_eq!(nth_block(&net("10.1.0.0/16"), 26, 5), net("10.1.1.64/26"));
        assert_eq!(block_count(&net("10.1.0.0/16"), 26), 1024);
        assert_eq!(nth_block(&net("fd00::/120"), 122, 3), net("fd00::c0/122"));
    }

    #[test]
    fn range_set_counts() {
        let s = RangeSet::from_nets(&[net("10.0.0.0/30"), net("10.0.0.2/31"), net("10.0.0.8/29")]);
        let (a, b) = range(&net("10.0.0.0/28"));
        assert_eq!(s.count_within(a, b), 12);
        assert!(s.contains(a + 3));
        assert!(!s.contains(a + 4));
        assert!(s.covers(a + 8, a + 15));
        assert!(!s.covers(a, a + 8));
        assert!(s.overlaps(a + 5, a + 8));
        assert!(!s.overlaps(a + 4, a + 7));
    }
}
