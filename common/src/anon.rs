//! Prefix-preserving address anonymisation: Crypto-PAn (Xu, Fan, Ammar and
//! Moon, ICNP 2002), for IPv4 and IPv6, with a per-deployment 32-byte key.
//!
//! The promise: two addresses that share their first `k` bits share the
//! first `k` bits of their anonymised forms, and nothing else is revealed
//! without the key. So a monitored block `198.19.0.0/16` leaves as some
//! `x.y.0.0/16`, and blocks that nest or share a prefix still do after
//! anonymisation. Output matches the reference implementation and the
//! widely used `yacryptopan` (same key layout: bytes 0-15 the AES-128 key,
//! bytes 16-31 the pad material).
//!
//! A property of the algorithm, not of this code: the AES input for bit `i`
//! is the address's first `i` bits followed by the pad, so where an address
//! bit equals the pad's, two positions share an input and flip together.
//! The flips are correlated, and a `/k` prefix comes out unchanged under a
//! fraction (1/2)(3/4)^(k-1) of keys: about 1 key in 150 for a `/16`, 1 in
//! 1,300 for a `/24`, never in practice for an IPv6 `/48`. An anonymised
//! block is a pseudonym that hides which block it is under almost every
//! key, not a secret that never matches the original.
//!
//! Cost: one AES block per address bit (32 for IPv4, 128 for IPv6). It runs
//! on a handful of sensor prefixes per export, never per packet.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A Crypto-PAn anonymiser bound to one key.
#[derive(Clone)]
pub struct CryptoPan {
    cipher: Aes128,
    pad: u128,
}

impl std::fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("CryptoPan(..)")
    }
}

impl CryptoPan {
    /// An anonymiser for `key` (bytes 0-15: AES key; 16-31: pad material).
    pub fn new(key: &[u8; 32]) -> CryptoPan {
        let cipher = Aes128::new(GenericArray::from_slice(&key[..16]));
        let mut pad = GenericArray::clone_from_slice(&key[16..]);
        cipher.encrypt_block(&mut pad);
        let mut p = [0u8; 16];
        p.copy_from_slice(&pad);
        CryptoPan {
            cipher,
            pad: u128::from_be_bytes(p),
        }
    }

    /// Anonymises the top `bits` bits of `addr` (left-aligned in 128 bits).
    fn flips(&self, addr: u128, bits: u32) -> u128 {
        let mut result = 0u128;
        for pos in 0..bits {
            // The first `pos` bits come from the address, the rest from the pad.
            let keep = if pos == 0 {
                0
            } else {
                u128::MAX << (128 - pos)
            };
            let input = (addr & keep) | (self.pad & !keep);
            let mut block = GenericArray::from(input.to_be_bytes());
            self.cipher.encrypt_block(&mut block);
            result |= ((block[0] >> 7) as u128) << (127 - pos);
        }
        result
    }

    /// The anonymised form of an IPv4 address.
    pub fn v4(&self, a: Ipv4Addr) -> Ipv4Addr {
        let x = (u32::from(a) as u128) << 96;
        Ipv4Addr::from(((x ^ self.flips(x, 32)) >> 96) as u32)
    }

    /// The anonymised form of an IPv6 address.
    pub fn v6(&self, a: Ipv6Addr) -> Ipv6Addr {
        let x = u128::from(a);
        Ipv6Addr::from(x ^ self.flips(x, 128))
    }

    /// The anonymised form of an address of either family.
    pub fn ip(&self, a: IpAddr) -> IpAddr {
        match a {
            IpAddr::V4(v) => IpAddr::V4(self.v4(v)),
            IpAddr::V6(v) => IpAddr::V6(self.v6(v)),
        }
    }

    /// The anonymised form of a block: its network address anonymised and
    /// cut to the same length (prefix preservation makes the result
    /// independent of the host bits). A key leaves about 1 `/16` in 150
    /// unchanged (module doc): compare the result with `p` to know.
    pub fn block(&self, p: &crate::Prefix) -> crate::Prefix {
        crate::Prefix::covering(self.ip(p.network()), p.len()).expect("same family, same length")
    }

    /// [`CryptoPan::block`] of a CIDR prefix `addr/len` in text; `None` if
    /// `s` is not a prefix.
    pub fn prefix(&self, s: &str) -> Option<String> {
        let p: crate::Prefix = s.parse().ok()?;
        Some(self.block(&p).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> [u8; 32] {
        *b"32-char-str-for-AES-key-and-pad."
    }

    /// The examples published with yacryptopan (an independent
    /// implementation we did not write), for the same key.
    #[test]
    fn matches_the_published_reference_outputs() {
        let c = CryptoPan::new(&key());
        assert_eq!(
            c.ip("192.0.2.1".parse().unwrap()).to_string(),
            "192.0.125.244"
        );
        assert_eq!(
            c.ip("2001:db8::1".parse().unwrap()).to_string(),
            "27fe:8bc7:fee:1e:1e1f:f0fe:f0e1:83fd"
        );
    }

    #[test]
    fn prefixes_keep_their_length_and_nesting() {
        let c = CryptoPan::new(&[7u8; 32]);
        let outer = c.prefix("198.19.0.0/16").unwrap();
        let inner = c.prefix("198.19.77.0/24").unwrap();
        assert!(outer.ends_with("/16") && inner.ends_with("/24"));
        let o: crate::Prefix = outer.parse().unwrap();
        let i: crate::Addr = inner
            .split('/')
            .next()
            .unwrap()
            .parse::<IpAddr>()
            .unwrap()
            .into();
        assert!(o.contains(i), "{inner} must stay inside {outer}");
        assert_ne!(outer, "198.19.0.0/16");
        assert!(c.prefix("2001:db8:dead::/48").unwrap().ends_with("/48"));
        assert_eq!(c.prefix("not a prefix"), None);
    }

    /// The algorithm's correlated flips: over 30,000 keys, 198.19.0.0/16
    /// stays itself for about (1/2)(3/4)^15 of them (≈ 200), far more than
    /// the 0.46 that independent bits would give. Deterministic keys, so
    /// the count is fixed; it moves if the construction changes.
    #[test]
    fn a_block_stays_itself_under_the_fraction_the_algorithm_predicts() {
        let n = 30_000u32;
        let same = (0..n)
            .filter(|i| {
                let mut k = [0u8; 32];
                for (j, b) in k.iter_mut().enumerate() {
                    *b = (i.wrapping_mul(2_654_435_761) >> (j % 4 * 8)) as u8 ^ j as u8;
                }
                k[..4].copy_from_slice(&i.to_le_bytes());
                let block: crate::Prefix = "198.19.0.0/16".parse().unwrap();
                let pan = CryptoPan::new(&k);
                let kept = pan.block(&block) == block;
                assert_eq!(
                    kept,
                    pan.prefix("198.19.0.0/16").unwrap() == "198.19.0.0/16"
                );
                kept
            })
            .count() as f64;
        let expected = f64::from(n) * 0.5 * 0.75f64.powi(15);
        assert!(
            (expected * 0.7..expected * 1.3).contains(&same),
            "{same} of {n} keys left the block as it was; the algorithm predicts {expected:.0}"
        );
    }

    fn common_prefix(a: u128, b: u128) -> u32 {
        (a ^ b).leading_zeros()
    }

    proptest! {
        /// Prefix preservation: the anonymised forms share exactly as many
        /// leading bits as the originals (and the map is one-to-one).
        #[test]
        fn v4_shares_exactly_the_original_prefix(a: u32, b: u32) {
            let c = CryptoPan::new(&key());
            let (x, y) = (c.v4(a.into()), c.v4(b.into()));
            let k = (a ^ b).leading_zeros();
            prop_assert_eq!((u32::from(x) ^ u32::from(y)).leading_zeros(), k);
        }

        #[test]
        fn v6_shares_exactly_the_original_prefix(a: u128, bits in 0u32..128, flip: u128) {
            // b shares at least `bits` leading bits with a.
            let b = a ^ (flip >> bits);
            let c = CryptoPan::new(&[42u8; 32]);
            let (x, y) = (u128::from(c.v6(a.into())), u128::from(c.v6(b.into())));
            prop_assert_eq!(common_prefix(x, y), common_prefix(a, b));
        }
    }
}
