//! CIDR prefixes for the monitored darknet blocks, and a set of them with a
//! membership test cheap enough for the per-packet path.

use crate::addr::Addr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a prefix string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// No `/len` part.
    #[error("'{0}' is not a CIDR prefix (expected ADDRESS/LENGTH, e.g. 198.19.0.0/16)")]
    MissingLength(String),
    /// The address part does not parse.
    #[error("'{0}': bad address")]
    BadAddress(String),
    /// The length is not a number or is too long for the family.
    #[error("'{0}': prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    BadLength(String),
    /// Bits set past the prefix length (`198.19.1.0/16`): almost always a typo.
    #[error("'{0}': address has bits set beyond the prefix length (did you mean {1}?)")]
    HostBits(String, String),
    /// An empty list.
    #[error("no darknet prefix given")]
    Empty,
}

/// An IPv4 or IPv6 prefix, kept in the 128-bit [`Addr`] space (IPv4 prefixes
/// are prefixes of the IPv4-mapped range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    net: u128,
    mask: u128,
    /// Prefix length in the address's own family (0-32 for IPv4).
    len: u8,
    v4: bool,
}

impl Prefix {
    /// True when `a` lies inside this prefix.
    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        a.0 & self.mask == self.net
    }

    /// Prefix length in its own family.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (the whole family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True for an IPv4 prefix.
    pub fn is_v4(&self) -> bool {
        self.v4
    }

    /// The first address of an IPv4 prefix, as a `u32`.
    pub fn ipv4_net(&self) -> Option<u32> {
        self.v4.then_some(self.net as u32)
    }

    /// The prefix of length `len` (in `ip`'s family) that holds `ip`: its
    /// host bits cleared. `None` if `len` is too long for the family.
    pub fn covering(ip: IpAddr, len: u8) -> Option<Prefix> {
        let (v4, bits, fam_len) = match ip {
            IpAddr::V4(_) => (true, 32u32, len as u32 + 96),
            IpAddr::V6(_) => (false, 128u32, len as u32),
        };
        if len as u32 > bits {
            return None;
        }
        let mask = if fam_len == 0 {
            0
        } else {
            u128::MAX << (128 - fam_len)
        };
        let net = Addr::from(ip).0 & mask;
        Some(Prefix { net, mask, len, v4 })
    }

    /// The first address, in the prefix's own family.
    pub fn network(&self) -> IpAddr {
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(self.net as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.net))
        }
    }

    /// Number of IPv4 addresses covered (0 for IPv6 prefixes).
    pub fn ipv4_addresses(&self) -> u64 {
        if self.v4 {
            1u64 << (32 - self.len as u32)
        } else {
            0
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let s = s.trim();
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::MissingLength(s.to_string()))?;
        let ip: IpAddr = a
            .parse()
            .map_err(|_| PrefixError::BadAddress(s.to_string()))?;
        let len: u8 = l
            .parse()
            .map_err(|_| PrefixError::BadLength(s.to_string()))?;
        let p = Prefix::covering(ip, len).ok_or_else(|| PrefixError::BadLength(s.to_string()))?;
        if p.net != Addr::from(ip).0 {
            return Err(PrefixError::HostBits(s.to_string(), p.to_string()));
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Addr(self.net), self.len)
    }
}

/// The monitored blocks of one sensor. Membership is a linear scan: sensors
/// watch a handful of blocks, and a scan of a few masks beats any tree there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSet {
    prefixes: Vec<Prefix>,
}

impl PrefixSet {
    /// Builds a set from prefixes.
    pub fn new(prefixes: Vec<Prefix>) -> PrefixSet {
        PrefixSet { prefixes }
    }

    /// Parses a comma-separated list such as `198.19.0.0/16,2001:db8:dead::/48`.
    pub fn parse_list(s: &str) -> Result<PrefixSet, PrefixError> {
        let prefixes = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Prefix>, _>>()?;
        if prefixes.is_empty() {
            return Err(PrefixError::Empty);
        }
        Ok(PrefixSet { prefixes })
    }

    /// True when `a` is inside any prefix.
    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        self.prefixes.iter().any(|p| p.contains(a))
    }

    /// The prefixes.
    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }

    /// Total IPv4 addresses monitored (overlaps are not double counted only
    /// if the operator lists disjoint blocks, which validation demands).
    pub fn ipv4_addresses(&self) -> u64 {
        self.prefixes.iter().map(Prefix::ipv4_addresses).sum()
    }

    /// The first pair of overlapping prefixes, if any.
    pub fn overlap(&self) -> Option<(Prefix, Prefix)> {
        for (i, a) in self.prefixes.iter().enumerate() {
            for b in &self.prefixes[i + 1..] {
                let m = a.mask & b.mask;
                if a.net & m == b.net & m {
                    return Some((*a, *b));
                }
            }
        }
        None
    }

    /// The prefixes as strings, for the summary.
    pub fn to_strings(&self) -> Vec<String> {
        self.prefixes.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn v4_and_v6_membership() {
        let set = PrefixSet::parse_list("198.19.0.0/16, 2001:db8:dead::/48").unwrap();
        assert!(set.contains(a("198.19.255.1")));
        assert!(!set.contains(a("198.18.1.2")));
        assert!(set.contains(a("2001:db8:dead:1::5")));
        assert!(!set.contains(a("ff02::16")));
        assert_eq!(set.ipv4_addresses(), 65536);
        assert_eq!(set.to_strings(), ["198.19.0.0/16", "2001:db8:dead::/48"]);
    }

    #[test]
    fn v4_prefix_never_matches_v6_addresses() {
        let set = PrefixSet::parse_list("0.0.0.0/0").unwrap();
        assert!(set.contains(a("1.2.3.4")));
        assert!(!set.contains(a("2001:db8::1")));
    }

    #[test]
    fn bad_prefixes_are_explained() {
        assert_eq!(
            "198.19.0.0".parse::<Prefix>(),
            Err(PrefixError::MissingLength("198.19.0.0".into()))
        );
        assert!(matches!(
            "198.19.0.0/33".parse::<Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        assert!(matches!(
            "198.319.0.0/16".parse::<Prefix>(),
            Err(PrefixError::BadAddress(_))
        ));
        let e = "198.19.1.0/16".parse::<Prefix>().unwrap_err();
        assert!(e.to_string().contains("198.19.0.0/16"), "{e}");
        assert_eq!(PrefixSet::parse_list(" , "), Err(PrefixError::Empty));
    }

    #[test]
    fn overlap_is_found() {
        let set = PrefixSet::parse_list("198.19.0.0/16,198.19.4.0/24").unwrap();
        assert!(set.overlap().is_some());
        let set = PrefixSet::parse_list("198.19.0.0/16,198.18.0.0/16").unwrap();
        assert!(set.overlap().is_none());
    }
}
