//! HyperLogLog distinct-count sketch whose registers travel in summaries so
//! the aggregator can merge distinct counts across sensors and windows.
//!
//! We own this code rather than take a crate because the register layout, the
//! precision and the hash are a wire contract between independently upgraded
//! sensors and aggregators; a crate's internal layout could change under us.
//!
//! - Precision `P = 12`: 4,096 registers, standard error 1.04/√4096 ≈ 1.6 %.
//! - Hash: [`hash_addr`], a fixed bijective mixer (SplitMix64's finaliser), so
//!   two IPv4 addresses never collide.
//! - Small sketches stay *sparse* (sorted `(register, value)` pairs), so the
//!   thousands of quiet ports in a window cost a few bytes each; a sketch turns
//!   dense once the sparse form would be larger than the 4 KiB register array.
//! - Estimate: Ertl's improved estimator ("New cardinality estimation
//!   algorithms for HyperLogLog sketches", 2017), accurate over the whole range
//!   without bias tables.
//! - Wire form: base64 of a tag byte (1 = sparse, 2 = dense) then the pairs
//!   (`u16` big-endian register, `u8` value) or the 4,096 registers; the empty
//!   sketch is the empty string.

use crate::addr::Addr;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Register-index bits.
pub const P: u32 = 12;
/// Number of registers.
pub const M: usize = 1 << P;
/// Largest register value (64 - P leading zeros + 1).
const Q: u32 = 64 - P;
const SPARSE_MAX: usize = M / 4;
const TAG_SPARSE: u8 = 1;
const TAG_DENSE: u8 = 2;

/// SplitMix64's finaliser: a bijection on `u64` with good avalanche.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The wire-contract hash of an address, used for sketches and for sharding.
#[inline]
pub const fn hash_addr(a: Addr) -> u64 {
    mix64(mix64(a.0 as u64 ^ 0x9e37_79b9_7f4a_7c15) ^ (a.0 >> 64) as u64)
}

/// The inverse of `x ^ (x >> s)` for `0 < s < 64`.
const fn unxorshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    let mut known = s;
    while known < 64 {
        x = y ^ (x >> s);
        known += s;
    }
    x
}

/// The inverse of an odd `c` modulo 2^64 (Newton's iteration: each step
/// doubles the correct low bits, from 3).
const fn inverse_mod_2_64(c: u64) -> u64 {
    let mut x = c;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The inverse of [`mix64`].
#[inline]
pub const fn unmix64(mut z: u64) -> u64 {
    z = unxorshift(z, 31).wrapping_mul(inverse_mod_2_64(0x94d0_49bb_1331_11eb));
    z = unxorshift(z, 27).wrapping_mul(inverse_mod_2_64(0xbf58_476d_1ce4_e5b9));
    unxorshift(z, 30)
}

/// The IPv4 address whose [`hash_addr`] is `h`, if `h` is one's (the hash is
/// a bijection on IPv4 addresses). Some IPv6 address's hash also decodes to
/// an IPv4 address, with probability 2^-32 for each.
#[inline]
pub const fn v4_of_hash(h: u64) -> Option<u32> {
    let low = unmix64(unmix64(h)) ^ 0x9e37_79b9_7f4a_7c15;
    if low >> 32 == 0xffff {
        Some(low as u32)
    } else {
        None
    }
}

/// Why a wire sketch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HllError {
    /// Not base64.
    #[error("sketch is not valid base64")]
    Base64,
    /// Unknown tag, wrong length, or a register out of range.
    #[error("sketch is malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// Sorted by register; entry = register << 8 | value.
    Sparse(Vec<u32>),
    Dense(Box<[u8; M]>),
}

/// A HyperLogLog sketch (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hll {
    repr: Repr,
}

impl Default for Hll {
    fn default() -> Self {
        Hll::new()
    }
}

#[inline]
fn split(hash: u64) -> (u32, u8) {
    let idx = (hash >> Q) as u32;
    let rest = hash << P;
    let rho = (rest.leading_zeros().min(Q) + 1) as u8;
    (idx, rho)
}

impl Hll {
    /// An empty sketch.
    pub const fn new() -> Hll {
        Hll {
            repr: Repr::Sparse(Vec::new()),
        }
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        matches!(&self.repr, Repr::Sparse(v) if v.is_empty())
    }

    /// Adds an element given by its 64-bit hash (see [`hash_addr`]).
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        let (idx, rho) = split(hash);
        self.set_max(idx, rho);
    }

    /// Adds an address.
    #[inline]
    pub fn insert(&mut self, a: Addr) {
        self.insert_hash(hash_addr(a));
    }

    fn set_max(&mut self, idx: u32, rho: u8) {
        match &mut self.repr {
            Repr::Dense(r) => {
                let slot = &mut r[idx as usize];
                if *slot < rho {
                    *slot = rho;
                }
            }
            Repr::Sparse(v) => {
                match v.binary_search_by_key(&idx, |e| e >> 8) {
                    Ok(i) => {
                        if (v[i] & 0xff) < rho as u32 {
                            v[i] = idx << 8 | rho as u32;
                        }
                    }
                    Err(i) => v.insert(i, idx << 8 | rho as u32),
                }
                if v.len() > SPARSE_MAX {
                    self.densify();
                }
            }
        }
    }

    fn densify(&mut self) {
        if let Repr::Sparse(v) = &self.repr {
            let mut r = Box::new([0u8; M]);
            for e in v {
                r[(e >> 8) as usize] = (e & 0xff) as u8;
            }
            self.repr = Repr::Dense(r);
        }
    }

    /// The register entry an element hash sets: register << 8 | value, so
    /// that entries sort by register, then value (see
    /// [`Hll::from_unsorted_entries`]).
    #[inline]
    pub fn entry(hash: u64) -> u32 {
        let (idx, rho) = split(hash);
        idx << 8 | rho as u32
    }

    /// The sketch of the elements whose [`Hll::entry`]s `sorted` holds in
    /// ascending order (repeats allowed): with one pass, no sort, the same
    /// sketch as inserting each element.
    fn from_entries(sorted: impl IntoIterator<Item = u32>) -> Hll {
        let mut v: Vec<u32> = Vec::new();
        for e in sorted {
            match v.last_mut() {
                // Same register: the later entry has the larger value.
                Some(last) if *last >> 8 == e >> 8 => *last = e,
                _ => v.push(e),
            }
        }
        let mut h = Hll {
            repr: Repr::Sparse(v),
        };
        if let Repr::Sparse(v) = &h.repr {
            if v.len() > SPARSE_MAX {
                h.densify();
            }
        }
        h
    }

    /// The sketch of the elements whose [`Hll::entry`]s `entries` holds, in
    /// any order (reordered in place): a few are sorted and read in one
    /// pass, many go straight into registers. The same sketch as inserting
    /// each element (how summaries build per-port sketches).
    pub fn from_unsorted_entries(entries: &mut [u32]) -> Hll {
        if entries.len() <= 4 * SPARSE_MAX {
            entries.sort_unstable();
            return Hll::from_entries(entries.iter().copied());
        }
        let mut r = Box::new([0u8; M]);
        for &e in entries.iter() {
            let (i, v) = ((e >> 8) as usize % M, (e & 0xff) as u8);
            r[i] = r[i].max(v);
        }
        if r.iter().filter(|&&v| v != 0).count() > SPARSE_MAX {
            return Hll {
                repr: Repr::Dense(r),
            };
        }
        let v = (0..M as u32)
            .filter(|&i| r[i as usize] != 0)
            .map(|i| i << 8 | r[i as usize] as u32)
            .collect();
        Hll {
            repr: Repr::Sparse(v),
        }
    }

    /// Merges `other` into `self` (register-wise max): the sketch of the union.
    pub fn merge(&mut self, other: &Hll) {
        match &other.repr {
            Repr::Sparse(v) => {
                if let Repr::Sparse(mine) = &mut self.repr {
                    // Both sorted by register: one linear merge.
                    let mut out = Vec::with_capacity(mine.len() + v.len());
                    let (mut i, mut j) = (0, 0);
                    while i < mine.len() && j < v.len() {
                        let (a, b) = (mine[i], v[j]);
                        match (a >> 8).cmp(&(b >> 8)) {
                            std::cmp::Ordering::Less => {
                                out.push(a);
                                i += 1;
                            }
                            std::cmp::Ordering::Greater => {
                                out.push(b);
                                j += 1;
                            }
                            std::cmp::Ordering::Equal => {
                                out.push(a.max(b));
                                i += 1;
                                j += 1;
                            }
                        }
                    }
                    out.extend_from_slice(&mine[i..]);
                    out.extend_from_slice(&v[j..]);
                    *mine = out;
                    if mine.len() > SPARSE_MAX {
                        self.densify();
                    }
                } else {
                    for e in v {
                        self.set_max(e >> 8, (e & 0xff) as u8);
                    }
                }
            }
            Repr::Dense(o) => {
                self.densify();
                if let Repr::Dense(r) = &mut self.repr {
                    for (a, b) in r.iter_mut().zip(o.iter()) {
                        *a = (*a).max(*b);
                    }
                }
            }
        }
    }

    /// Register histogram: `c[k]` = number of registers holding `k`.
    fn histogram(&self) -> [u32; Q as usize + 2] {
        let mut c = [0u32; Q as usize + 2];
        match &self.repr {
            Repr::Sparse(v) => {
                c[0] = (M - v.len()) as u32;
                for e in v {
                    c[(e & 0xff) as usize] += 1;
                }
            }
            Repr::Dense(r) => {
                for &x in r.iter() {
                    c[x as usize] += 1;
                }
            }
        }
        c
    }

    /// The estimated number of distinct elements.
    pub fn estimate(&self) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let c = self.histogram();
        let m = M as f64;
        let q = Q as usize;
        let mut z = m * tau(1.0 - c[q + 1] as f64 / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + c[k] as f64);
        }
        z += m * sigma(c[0] as f64 / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        (alpha_inf * m * m / z).round() as u64
    }

    /// The wire form's bytes before base64 (for binary storage).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        self.bytes_into(&mut b);
        b
    }

    /// Appends [`Hll::to_bytes`] to `b`.
    fn bytes_into(&self, b: &mut Vec<u8>) {
        match &self.repr {
            Repr::Sparse(v) if v.is_empty() => {}
            Repr::Sparse(v) => {
                let at = b.len();
                b.resize(at + 1 + 3 * v.len(), 0);
                b[at] = TAG_SPARSE;
                // Register (big-endian u16), value: the entry's low 3 bytes.
                for (o, &e) in b[at + 1..].chunks_exact_mut(3).zip(v) {
                    o.copy_from_slice(&e.to_be_bytes()[1..]);
                }
            }
            Repr::Dense(r) => {
                b.reserve(1 + M);
                b.push(TAG_DENSE);
                b.extend_from_slice(&r[..]);
            }
        }
    }

    /// Longest wire form: base64 of a dense sketch.
    pub const WIRE_MAX: usize = 4 * (1 + M).div_ceil(3);

    /// Writes the wire form ([`Hll::to_wire`]) at the start of `out` and
    /// returns its length (at most [`Hll::WIRE_MAX`]; 0 if `out` is too
    /// short), the raw bytes built in `scratch` (lent, emptied first): no
    /// allocation once it has grown.
    pub fn write_wire(&self, out: &mut [u8], scratch: &mut Vec<u8>) -> usize {
        scratch.clear();
        self.bytes_into(scratch);
        base64::engine::general_purpose::STANDARD
            .encode_slice(&scratch[..], out)
            .unwrap_or(0)
    }

    /// The wire form (base64; empty for an empty sketch).
    pub fn to_wire(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_bytes())
    }

    /// Parses the wire form, validating every register.
    pub fn from_wire(s: &str) -> Result<Hll, HllError> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| HllError::Base64)?;
        Hll::from_bytes(&b)
    }

    /// Parses the bytes made by [`Hll::to_bytes`], validating every register.
    pub fn from_bytes(b: &[u8]) -> Result<Hll, HllError> {
        let Some((&tag, body)) = b.split_first() else {
            return Ok(Hll::new());
        };
        let check = |v: u8| {
            if v as u32 > Q + 1 {
                Err(HllError::Malformed("register value out of range"))
            } else {
                Ok(v)
            }
        };
        match tag {
            TAG_SPARSE => {
                if body.len() % 3 != 0 || body.len() / 3 > SPARSE_MAX {
                    return Err(HllError::Malformed("bad sparse length"));
                }
                let mut v = Vec::with_capacity(body.len() / 3);
                for ch in body.chunks_exact(3) {
                    let idx = u16::from_be_bytes([ch[0], ch[1]]) as u32;
                    if idx as usize >= M {
                        return Err(HllError::Malformed("register index out of range"));
                    }
                    let r = check(ch[2])?;
                    if r > 0 {
                        v.push(idx << 8 | r as u32);
                    }
                }
                // Written sorted; anything else is put in order (largest value wins).
                if !v.windows(2).all(|w| w[0] >> 8 < w[1] >> 8) {
                    v.sort_unstable_by(|a, b| b.cmp(a));
                    v.dedup_by_key(|e| *e >> 8);
                    v.reverse();
                }
                Ok(Hll {
                    repr: Repr::Sparse(v),
                })
            }
            TAG_DENSE => {
                if body.len() != M {
                    return Err(HllError::Malformed("bad dense length"));
                }
                let mut r = Box::new([0u8; M]);
                for (d, &s) in r.iter_mut().zip(body) {
                    *d = check(s)?;
                }
                Ok(Hll {
                    repr: Repr::Dense(r),
                })
            }
            _ => Err(HllError::Malformed("unknown tag")),
        }
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

/// Base64 text in JSON; the same bytes, raw, in the binary form.
impl Serialize for Hll {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_wire())
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Hll {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Hll;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("sketch bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Hll, E> {
                Hll::from_bytes(b).map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Hll::from_wire(&s).map_err(serde::de::Error::custom)
        } else {
            d.deserialize_bytes(Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sketch_from_sorted_entries_is_the_sketch_of_its_elements() {
        for n in [0u32, 1, 5, 900, 1025, 5000] {
            let hashes: Vec<u64> = (0..n).map(|i| hash_addr(Addr::v4(i % 3000))).collect();
            let mut entries: Vec<u32> = hashes.iter().map(|&h| Hll::entry(h)).collect();
            entries.sort_unstable();
            let mut one_by_one = Hll::new();
            hashes.iter().for_each(|&h| one_by_one.insert_hash(h));
            assert_eq!(Hll::from_entries(entries), one_by_one, "{n} elements");
        }
    }

    #[test]
    fn a_sketch_from_unsorted_entries_is_the_sketch_of_its_elements() {
        // Few, many, and many repeating a few addresses (a sparse sketch
        // from more entries than a sparse one holds).
        for (n, distinct) in [
            (0u32, 1u32),
            (7, 7),
            (3000, 3000),
            (5000, 5000),
            (20_000, 9),
        ] {
            let hashes: Vec<u64> = (0..n).map(|i| hash_addr(Addr::v4(i % distinct))).collect();
            let mut entries: Vec<u32> = hashes.iter().rev().map(|&h| Hll::entry(h)).collect();
            let mut one_by_one = Hll::new();
            hashes.iter().for_each(|&h| one_by_one.insert_hash(h));
            assert_eq!(
                Hll::from_unsorted_entries(&mut entries),
                one_by_one,
                "{n} of {distinct}"
            );
        }
    }

    #[test]
    fn the_wire_form_written_in_place_is_to_wire() {
        let (mut out, mut scratch) = (vec![0; Hll::WIRE_MAX], Vec::new());
        for n in [0u32, 1, 2, 3, 50, 5000] {
            let mut h = Hll::new();
            (0..n).for_each(|i| h.insert(Addr::v4(i)));
            let len = h.write_wire(&mut out, &mut scratch);
            assert_eq!(&out[..len], h.to_wire().as_bytes(), "{n} elements");
        }
        // A dense sketch's is the longest there is.
        let mut dense = Hll::new();
        (0..100_000).for_each(|i| dense.insert(Addr::v4(i)));
        assert_eq!(dense.to_wire().len(), Hll::WIRE_MAX);
    }

    #[test]
    fn an_ipv4_address_comes_back_from_its_hash() {
        for a in [0u32, 1, 0xc613_0001, 0xffff_ffff, 0x0a00_0000] {
            assert_eq!(v4_of_hash(hash_addr(Addr::v4(a))), Some(a));
        }
        let mut x = 0x1234_5678u64;
        for _ in 0..10_000 {
            x = mix64(x);
            assert_eq!(unmix64(mix64(x)), x);
            assert_eq!(v4_of_hash(hash_addr(Addr::v4(x as u32))), Some(x as u32));
            let v6 = Addr(0x2001_0db8u128 << 96 | x as u128);
            assert_eq!(v4_of_hash(hash_addr(v6)), None);
        }
    }

    fn sketch(range: std::ops::Range<u32>) -> Hll {
        let mut h = Hll::new();
        for i in range {
            h.insert(Addr::v4(i));
        }
        h
    }

    #[test]
    fn estimates_within_four_standard_errors() {
        for n in [1u32, 10, 100, 1_000, 5_000, 20_000, 100_000, 1_000_000] {
            let e = sketch(0..n).estimate() as f64;
            let err = (e - n as f64).abs() / n as f64;
            assert!(err < 0.065, "n={n} estimate={e} err={err}");
        }
    }

    #[test]
    fn small_counts_are_near_exact() {
        for n in [0u32, 1, 2, 3, 50] {
            assert_eq!(sketch(0..n).estimate(), n as u64, "n={n}");
        }
    }

    #[test]
    fn batch_insert_equals_one_by_one() {
        for n in [0u32, 1, 9, 900, 3000] {
            let mut a = sketch(0..n);
            a.insert(Addr::v4(7));
            let mut b = Hll::new();
            b.insert(Addr::v4(7));
            let mut entries: Vec<u32> =
                (0..n).map(|i| Hll::entry(hash_addr(Addr::v4(i)))).collect();
            b.merge(&Hll::from_unsorted_entries(&mut entries));
            assert_eq!(a, b, "n={n}");
        }
    }

    #[test]
    fn sparse_merge_and_unsorted_wire_form() {
        let mut a = sketch(0..300);
        let b = sketch(200..700);
        a.merge(&b);
        assert_eq!(a, sketch(0..700));
        // Unsorted, duplicated sparse entries decode to the same sketch.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let x = Hll::from_wire(&b64(&[TAG_SPARSE, 0, 9, 2, 0, 3, 1, 0, 9, 5])).unwrap();
        let mut y = Hll::new();
        y.set_max(3, 1);
        y.set_max(9, 5);
        assert_eq!(x, y);
    }

    #[test]
    fn merge_is_union() {
        let mut a = sketch(0..30_000);
        let b = sketch(20_000..50_000);
        a.merge(&b);
        let whole = sketch(0..50_000);
        assert_eq!(a, whole);
    }

    #[test]
    fn wire_round_trip_sparse_and_dense() {
        for n in [0u32, 7, 5_000] {
            let h = sketch(0..n);
            let back = Hll::from_wire(&h.to_wire()).unwrap();
            assert_eq!(back, h);
        }
    }

    #[test]
    fn hostile_wire_forms_are_refused() {
        assert_eq!(Hll::from_wire("!!!"), Err(HllError::Base64));
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert!(Hll::from_wire(&b64(&[9, 0])).is_err());
        assert!(Hll::from_wire(&b64(&[TAG_SPARSE, 0xff, 0xff, 1])).is_err());
        assert!(Hll::from_wire(&b64(&[TAG_SPARSE, 0, 1, 200])).is_err());
        assert!(Hll::from_wire(&b64(&[TAG_DENSE, 1, 2])).is_err());
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in proptest::collection::vec(any::<u32>(), 0..3000),
                                b in proptest::collection::vec(any::<u32>(), 0..3000)) {
            let mk = |v: &[u32]| { let mut h = Hll::new(); for &x in v { h.insert(Addr::v4(x)); } h };
            let (ha, hb) = (mk(&a), mk(&b));
            let mut ab = ha.clone(); ab.merge(&hb);
            let mut ba = hb.clone(); ba.merge(&ha);
            prop_assert_eq!(ab.estimate(), ba.estimate());
            let mut all = a.clone(); all.extend(&b);
            let mut d1 = mk(&all); d1.densify();
            let mut d2 = ab.clone(); d2.densify();
            prop_assert_eq!(d1, d2);
        }
    }
}
