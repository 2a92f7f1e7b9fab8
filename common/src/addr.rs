//! One 128-bit form for IPv4 and IPv6 addresses, so records stay fixed-size and
//! `Copy`: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address as a `u128` (IPv4 is IPv4-mapped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub u128);

const V4_MAPPED: u128 = 0xffff_0000_0000;

impl Addr {
    /// The IPv4 address `a` in mapped form.
    #[inline]
    pub const fn v4(a: u32) -> Addr {
        Addr(V4_MAPPED | a as u128)
    }

    /// The IPv6 address given by its 16 bytes.
    #[inline]
    pub const fn v6(b: [u8; 16]) -> Addr {
        Addr(u128::from_be_bytes(b))
    }

    /// True when this is an IPv4 (mapped) address.
    #[inline]
    pub const fn is_v4(self) -> bool {
        self.0 >> 32 == 0xffff
    }

    /// The IPv4 address as a `u32`, if this is one.
    #[inline]
    pub const fn as_v4(self) -> Option<u32> {
        if self.is_v4() {
            Some(self.0 as u32)
        } else {
            None
        }
    }

    /// The standard-library form of this address.
    pub fn to_ip(self) -> IpAddr {
        match self.as_v4() {
            Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            None => IpAddr::V6(Ipv6Addr::from(self.0)),
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(a) => Addr::v4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Addr::v4(u32::from(v4)),
                None => Addr(u128::from(a)),
            },
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_and_displays_as_v4() {
        let a = Addr::v4(u32::from(Ipv4Addr::new(198, 19, 1, 2)));
        assert!(a.is_v4());
        assert_eq!(a.to_string(), "198.19.1.2");
        assert_eq!(Addr::from(a.to_ip()), a);
    }

    #[test]
    fn v6_is_not_v4() {
        let ip: IpAddr = "2001:db8:dead::1".parse().unwrap();
        let a = Addr::from(ip);
        assert!(!a.is_v4());
        assert_eq!(a.to_string(), "2001:db8:dead::1");
    }
}
