//! Per-window statistics with bounded memory.
//!
//! A [`Shard`] owns the state of the sources hashed to it, so it needs no lock.
//! At a window's close a shard's state becomes a [`Partial`]
//! ([`Shard::take_partial`], which empties the state for reuse; the pipeline
//! runs it on the merger thread, see [`crate::pipeline`]); partials merge in
//! any order (sums, set unions, sketch unions) and the merged partial becomes
//! the wire [`Summary`].
//!
//! Exactness and memory: a shard tracks at most `source_cap` sources and
//! `pair_budget` exact set entries (per-port destinations, per-source
//! destinations and ports). Below both, every count is exact (distinct
//! sources per port are summed across shards, which is exact because a source
//! lives in one shard only). Past them, new sources are counted into
//! HyperLogLog sketches and a space-saving heavy-hitter table, a port's
//! destination set that must grow turns into a sketch, and a source's
//! further destinations go into a sketch of their own; totals of packets and
//! bytes stay exact, and `truncation.exact` turns false.
//!
//! Layout (the per-packet path allocates nothing): each tracked source is a
//! 64-byte slot of counters found through an address → slot table; its
//! first port and destination sit in the slot, the rest in two shard-wide
//! pair tables keyed by slot. The IPv4 and pair tables are our own
//! (open addressing) so their buckets can be prefetched before the lookups
//! ([`Shard::add_batch`]). Ports live in a dense vector found through a
//! direct table over every port key, and a port's destinations become a
//! bitmap over the darknet's IPv4 space ([`PortDsts`]) once that is smaller
//! than a set. Window close empties every table in place, so the next window
//! reuses the memory; it builds a shard's source rows directly in the
//! summary's order.

use crate::classify::source_fingerprints;
use crate::record::{split_port_key, Observation, FP_ELIGIBLE};
use darkscope_common::hll::{hash_addr, v4_of_hash, Hll};
use darkscope_common::wire::{
    CaptureHealth, ClassTotals, FingerprintCounts, HeavySource, PortCount, PortRow, SensorInfo,
    SourceRow, Summary, TopPorts, Totals, Truncation, Window, SCHEMA,
};
use darkscope_common::{
    Addr, ClassSet, Fingerprint, FingerprintSet, PacketClass, PrefixSet, Timestamp,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// Memory bounds of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sources tracked exactly per window.
    pub source_cap: usize,
    /// Exact distinct-set entries per window.
    pub pair_budget: usize,
    /// Heavy hitters kept among untracked sources.
    pub heavy: usize,
}

impl Limits {
    /// Splits whole-sensor limits across `shards` shards.
    pub fn per_shard(source_cap: usize, pair_budget: usize, shards: usize) -> Limits {
        let n = shards.max(1);
        Limits {
            source_cap: source_cap.div_ceil(n),
            pair_budget: pair_budget.div_ceil(n),
            heavy: 100,
        }
    }
}

#[derive(Debug)]
struct Budget {
    used: usize,
    limit: usize,
    exhausted: bool,
}

impl Budget {
    #[inline]
    fn take(&mut self) -> bool {
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            self.exhausted = true;
            false
        }
    }
}

/// A distinct counter: exact while the shard's budget lasts, then a sketch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Distinct {
    /// Nothing seen.
    #[default]
    Empty,
    /// One element (no allocation: most sources send to one address).
    One(u64),
    /// Exact set of element hashes.
    Set(FxHashSet<u64>),
    /// Estimated.
    Sketch(Box<Hll>),
}

impl Distinct {
    /// Adds an element hash; true when it was certainly new.
    #[inline]
    fn insert(&mut self, h: u64, budget: &mut Budget) -> bool {
        match self {
            Distinct::Empty => {
                if budget.take() {
                    *self = Distinct::One(h);
                    true
                } else {
                    let mut s = Hll::new();
                    s.insert_hash(h);
                    *self = Distinct::Sketch(Box::new(s));
                    false
                }
            }
            Distinct::One(x) => {
                if *x == h {
                    return false;
                }
                if budget.take() {
                    let mut s = FxHashSet::default();
                    s.insert(*x);
                    s.insert(h);
                    *self = Distinct::Set(s);
                    true
                } else {
                    let mut s = Hll::new();
                    s.insert_hash(*x);
                    s.insert_hash(h);
                    budget.used -= 1;
                    *self = Distinct::Sketch(Box::new(s));
                    false
                }
            }
            Distinct::Set(s) => {
                if s.contains(&h) {
                    return false;
                }
                if budget.take() {
                    s.insert(h);
                    true
                } else {
                    let mut sk = Hll::new();
                    for &x in s.iter() {
                        sk.insert_hash(x);
                    }
                    sk.insert_hash(h);
                    budget.used -= s.len();
                    *self = Distinct::Sketch(Box::new(sk));
                    false
                }
            }
            Distinct::Sketch(sk) => {
                sk.insert_hash(h);
                false
            }
        }
    }

    /// The count (exact unless a sketch).
    pub fn count(&self) -> u64 {
        match self {
            Distinct::Empty => 0,
            Distinct::One(_) => 1,
            Distinct::Set(s) => s.len() as u64,
            Distinct::Sketch(sk) => sk.estimate(),
        }
    }

    /// Elements held exactly (0 for a sketch).
    fn exact_len(&self) -> usize {
        match self {
            Distinct::Empty | Distinct::Sketch(_) => 0,
            Distinct::One(_) => 1,
            Distinct::Set(s) => s.len(),
        }
    }

    /// True unless this is a sketch.
    pub fn is_exact(&self) -> bool {
        !matches!(self, Distinct::Sketch(_))
    }

    fn into_sketch(self) -> Hll {
        match self {
            Distinct::Empty => Hll::new(),
            Distinct::One(x) => {
                let mut s = Hll::new();
                s.insert_hash(x);
                s
            }
            Distinct::Set(set) => {
                let mut s = Hll::new();
                for x in set {
                    s.insert_hash(x);
                }
                s
            }
            Distinct::Sketch(s) => *s,
        }
    }

    /// Union with `other` (merging is never budgeted: it only runs at window close).
    pub fn merge(&mut self, other: Distinct) {
        let mine = std::mem::take(self);
        *self = match (mine, other) {
            (Distinct::Empty, o) | (o, Distinct::Empty) => o,
            (Distinct::Sketch(mut a), b) | (b, Distinct::Sketch(mut a)) => {
                a.merge(&b.into_sketch());
                Distinct::Sketch(a)
            }
            (Distinct::One(a), Distinct::One(b)) if a == b => Distinct::One(a),
            (Distinct::One(a), Distinct::One(b)) => Distinct::Set([a, b].into_iter().collect()),
            (Distinct::Set(mut s), Distinct::One(x)) | (Distinct::One(x), Distinct::Set(mut s)) => {
                s.insert(x);
                Distinct::Set(s)
            }
            (Distinct::Set(mut a), Distinct::Set(b)) => {
                if a.len() < b.len() {
                    let mut b = b;
                    b.extend(a);
                    Distinct::Set(b)
                } else {
                    a.extend(b);
                    Distinct::Set(a)
                }
            }
        };
    }
}

/// A numbering `0..size` of the darknet's IPv4 addresses (block after
/// block, in the order configured), so that a set of darknet addresses can
/// be a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V4Space {
    /// (first address, addresses, index of the first address).
    blocks: Vec<(u32, u64, u64)>,
    size: u64,
}

impl V4Space {
    /// The numbering of `darknet`'s IPv4 blocks (none: no bitmaps).
    pub fn new(darknet: &PrefixSet) -> V4Space {
        let mut space = V4Space::default();
        for p in darknet.prefixes() {
            if let Some(net) = p.ipv4_net() {
                space.blocks.push((net, p.ipv4_addresses(), space.size));
                space.size += p.ipv4_addresses();
            }
        }
        if space.size > 1 << 32 {
            // Overlapping blocks: no numbering (validation refuses them).
            space = V4Space::default();
        }
        space
    }

    /// The index of IPv4 address `a`, if the darknet holds it.
    #[inline]
    fn index(&self, a: u32) -> Option<u64> {
        self.blocks
            .iter()
            .find(|&&(net, n, _)| (a.wrapping_sub(net) as u64) < n)
            .map(|&(net, _, at)| at + a.wrapping_sub(net) as u64)
    }

    /// The index of the darknet address whose [`hash_addr`] is `h`.
    fn index_of_hash(&self, h: u64) -> Option<u64> {
        v4_of_hash(h).and_then(|a| self.index(a))
    }

    /// The address at index `i`.
    fn addr_at(&self, i: u64) -> Addr {
        let &(net, _, at) = self
            .blocks
            .iter()
            .rev()
            .find(|b| b.2 <= i)
            .expect("an index below size is in a block");
        Addr::v4(net.wrapping_add((i - at) as u32))
    }

    /// Exact set entries at which a set costs more memory than a bitmap
    /// (an entry takes at least 16 bytes; the bitmap a bit per address).
    fn bitmap_pays_at(&self) -> usize {
        if self.size == 0 {
            usize::MAX
        } else {
            (self.size / 128).max(1) as usize
        }
    }
}

/// A bitmap over a [`V4Space`] and its count of set bits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits {
    words: Box<[u64]>,
    count: u64,
    space: Arc<V4Space>,
}

impl Bits {
    fn new(space: Arc<V4Space>) -> Bits {
        Bits {
            words: vec![0; space.size.div_ceil(64) as usize].into_boxed_slice(),
            count: 0,
            space,
        }
    }

    #[inline]
    fn set(&mut self, i: u64) {
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        if self.words[w] & b == 0 {
            self.words[w] |= b;
            self.count += 1;
        }
    }

    /// Moves the darknet IPv4 addresses out of `d` into the bitmap.
    fn absorb(&mut self, d: &mut Distinct) {
        match d {
            Distinct::One(h) => {
                if let Some(i) = self.space.index_of_hash(*h) {
                    self.set(i);
                    *d = Distinct::Empty;
                }
            }
            Distinct::Set(s) => {
                s.retain(|&h| match self.space.index_of_hash(h) {
                    Some(i) => {
                        self.set(i);
                        false
                    }
                    None => true,
                });
                if s.is_empty() {
                    *d = Distinct::Empty;
                } else {
                    s.shrink_to_fit();
                }
            }
            Distinct::Empty | Distinct::Sketch(_) => {}
        }
    }
}

/// A port's distinct destinations: a [`Distinct`] of address hashes whose
/// darknet IPv4 addresses move to a bitmap over the darknet once the set
/// would take more memory than the bitmap. A port that a scan sweeps across
/// a /16 then holds 8 KiB of bits instead of a megabyte of hash set, and a
/// packet's test touches one word that stays in cache instead of a random
/// bucket. Exact either way; the entries already charged to the pair budget
/// stay charged (they pay for the bitmap) and the bitmap costs nothing more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortDsts {
    bits: Option<Box<Bits>>,
    /// Everything not in `bits`.
    rest: Distinct,
}

impl PortDsts {
    /// Adds destination `dst`, whose hash is `h`.
    #[inline]
    fn insert(&mut self, dst: Addr, h: u64, space: &Arc<V4Space>, budget: &mut Budget) {
        if let Some(b) = &mut self.bits {
            if let Some(i) = dst.as_v4().and_then(|a| space.index(a)) {
                b.set(i);
                return;
            }
        }
        self.rest.insert(h, budget);
        if self.bits.is_none() && self.rest.exact_len() >= space.bitmap_pays_at() {
            let mut b = Bits::new(space.clone());
            b.absorb(&mut self.rest);
            self.bits = Some(Box::new(b));
        }
    }

    /// The count (exact unless [`PortDsts::is_exact`] is false).
    pub fn count(&self) -> u64 {
        self.bits.as_ref().map_or(0, |b| b.count) + self.rest.count()
    }

    /// True unless part of the count is estimated.
    pub fn is_exact(&self) -> bool {
        self.rest.is_exact()
    }

    /// Union with `other`.
    pub fn merge(&mut self, other: PortDsts) {
        self.rest.merge(other.rest);
        self.bits = match (self.bits.take(), other.bits) {
            (None, b) | (b, None) => b,
            (Some(mut a), Some(b)) => {
                for (x, y) in a.words.iter_mut().zip(b.words.iter()) {
                    *x |= y;
                }
                a.count = a.words.iter().map(|w| w.count_ones() as u64).sum();
                Some(a)
            }
        };
        let Some(bits) = &mut self.bits else { return };
        if let Distinct::Sketch(sk) = &mut self.rest {
            // An estimate either way: fold the bits into the sketch, which
            // may hold some of the same addresses.
            for (w, &word) in bits.words.iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    let i = w as u64 * 64 + word.trailing_zeros() as u64;
                    sk.insert_hash(hash_addr(bits.space.addr_at(i)));
                    word &= word - 1;
                }
            }
            self.bits = None;
        } else {
            bits.absorb(&mut self.rest);
        }
    }
}

/// `SourceAcc::sketch` when the source has no overflow sketch.
const NO_SKETCH: u32 = u32::MAX;

/// `Shard::port_of` for a port not seen this window.
const NO_PORT: u32 = u32::MAX;

/// Port keys there can be ([`Observation::port_key`]: protocol << 16 | port).
const PORT_KEYS: usize = darkscope_common::Proto::ALL.len() << 16;

/// The slot of a source past the source cap.
const UNTRACKED: u32 = u32::MAX;

/// One tracked source's counters: fixed size and heap-free. Its first port
/// and first destination live here (most sources send to one of each); the
/// rest are entries of the shard-wide pair tables, keyed by the source's slot.
/// One cache line, aligned to one: the per-packet update touches one line.
#[derive(Debug)]
#[repr(align(64))]
struct SourceAcc {
    packets: u64,
    bytes: u64,
    first: u64,
    last: u64,
    /// Packets to `port0`, its first port.
    port0_packets: u64,
    /// Hash of its first destination (valid when `n_dsts > 0`).
    dst0: u64,
    /// Its first port, as an index into `Shard::ports`.
    port0: u32,
    /// Distinct destinations recorded exactly (`dst0` included).
    n_dsts: u32,
    /// Index in `Shard::dst_sketches` of the destinations that found the
    /// pair budget spent, or [`NO_SKETCH`].
    sketch: u32,
    classes: u8,
    /// AND of fingerprint bits over its TCP packets (starts all-ones).
    fp_and: u8,
    /// OR of FP_ELIGIBLE: it sent at least one TCP packet.
    fp_seen: u8,
}

const _: () = assert!(std::mem::size_of::<SourceAcc>() == 64);

#[derive(Debug, Default)]
struct PortAcc {
    packets: u64,
    bytes: u64,
    /// Distinct tracked sources (exact; sources are partitioned by shard).
    sources: u64,
    dsts: PortDsts,
    /// Sources whose pair with this port could not be recorded exactly.
    overflow: Option<Box<Hll>>,
}

/// Space-saving heavy hitters, pruned in bulk: when the table holds `2k`
/// entries the lower half is dropped and the largest dropped count becomes the
/// error floor of newcomers. O(1) amortised per packet.
#[derive(Debug, Default)]
struct SpaceSaving {
    k: usize,
    map: FxHashMap<Addr, (u64, u64)>,
    floor: u64,
}

impl SpaceSaving {
    fn add(&mut self, a: Addr) {
        if let Some(e) = self.map.get_mut(&a) {
            e.0 += 1;
            return;
        }
        if self.map.len() >= 2 * self.k.max(1) {
            let mut counts: Vec<u64> = self.map.values().map(|e| e.0).collect();
            let (_, kth, _) = counts.select_nth_unstable_by(self.k.max(1), |a, b| b.cmp(a));
            let cut = *kth;
            let mut dropped_max = self.floor;
            self.map.retain(|_, e| {
                let keep = e.0 > cut;
                if !keep {
                    dropped_max = dropped_max.max(e.0);
                }
                keep
            });
            self.floor = dropped_max;
        }
        self.map.insert(a, (self.floor + 1, self.floor));
    }

    fn top(&self, n: usize) -> Vec<HeavySource> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter(|(_, e)| e.0 > e.1)
            .map(|(a, e)| HeavySource {
                ip: a.to_ip(),
                packets: e.0,
                error: e.1,
            })
            .collect();
        sort_heavy(&mut v);
        v.truncate(n);
        v
    }
}

fn sort_heavy(v: &mut [HeavySource]) {
    v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
}

/// One shard's statistics for the current window.
#[derive(Debug)]
pub struct Shard {
    limits: Limits,
    space: Arc<V4Space>,
    budget: Budget,
    classes: [u64; PacketClass::COUNT],
    packets: u64,
    bytes: u64,
    /// Port key → index into `ports` ([`NO_PORT`] if none this window): a
    /// direct table over every key (1.3 MB), one read and no hashing a packet.
    port_of: Vec<u32>,
    /// The window's ports, in order of first packet, and their keys.
    ports: Vec<PortAcc>,
    port_keys: Vec<u32>,
    /// Tracked IPv4 sources → their slot in `accs` and `addrs`.
    sources4: OpenTable<Source4>,
    /// IPv6 sources → slot (IPv4 ones have their own, 4× smaller table).
    sources6: FxHashMap<u128, u32>,
    accs: Vec<SourceAcc>,
    addrs: Vec<Addr>,
    /// (slot, port index) → packets, for every port of a source after its first.
    src_ports: OpenTable<Pair<u64>>,
    /// (slot, destination hash), for every destination of a source after its first.
    src_dsts: OpenTable<Pair<()>>,
    /// Destinations of sources that found the pair budget spent.
    dst_sketches: Vec<Hll>,
    /// (port key << 32 | [`Hll::entry`] of a source's hash) for every
    /// (source, port) pair, to build the ports' source sketches (window close
    /// only; kept for its memory).
    port_entries: Vec<u64>,
    /// `port_entries` grouped by port ([`group_by_index`]; window close
    /// only, kept for their memory).
    port_grouped: Vec<u32>,
    port_ends: Vec<u32>,
    /// (port index, packets) of `src_ports` grouped by slot (likewise).
    extra_ports: Vec<(u32, u64)>,
    extra_ends: Vec<u32>,
    untracked_hll: Hll,
    untracked_packets: u64,
    heavy: SpaceSaving,
}

impl Shard {
    /// An empty shard; `space` numbers the darknet's IPv4 addresses.
    pub fn new(limits: Limits, space: Arc<V4Space>) -> Shard {
        Shard {
            limits,
            space,
            budget: Budget {
                used: 0,
                limit: limits.pair_budget,
                exhausted: false,
            },
            classes: [0; PacketClass::COUNT],
            packets: 0,
            bytes: 0,
            port_of: Vec::new(),
            ports: Vec::new(),
            port_keys: Vec::new(),
            sources4: OpenTable::default(),
            sources6: FxHashMap::default(),
            accs: Vec::new(),
            addrs: Vec::new(),
            src_ports: OpenTable::default(),
            src_dsts: OpenTable::default(),
            dst_sketches: Vec::new(),
            port_entries: Vec::new(),
            port_grouped: Vec::new(),
            port_ends: Vec::new(),
            extra_ports: Vec::new(),
            extra_ends: Vec::new(),
            untracked_hll: Hll::new(),
            untracked_packets: 0,
            heavy: SpaceSaving {
                k: limits.heavy,
                ..Default::default()
            },
        }
    }

    /// Accounts one darknet packet.
    pub fn add(&mut self, r: &Observation) {
        self.add_batch(std::slice::from_ref(r));
    }

    /// Accounts a batch of darknet packets, a chunk at a time: first each
    /// packet's source slot, then the counters. The slot lookups do not
    /// depend on one another, and each step asks for the memory of the next
    /// ahead of time (the next chunk's table buckets, this chunk's slots),
    /// so the cache misses overlap instead of coming one after another.
    /// Same result as one packet at a time.
    pub fn add_batch(&mut self, rs: &[Observation]) {
        const CHUNK: usize = 32;
        let mut slots = [0u32; CHUNK];
        let mut dsts = [0u64; CHUNK];
        for (i, chunk) in rs.chunks(CHUNK).enumerate() {
            // The next chunk's table buckets start loading now.
            for r in rs.iter().skip((i + 1) * CHUNK).take(CHUNK) {
                if let Some(a) = r.src.as_v4() {
                    self.sources4.prefetch(Source4::hash_of(a));
                }
            }
            for ((r, slot), dst) in chunk.iter().zip(&mut slots).zip(&mut dsts) {
                let new;
                (*slot, new) = self.slot_of(r);
                *dst = hash_addr(r.dst);
                // A known source's counters, and where its pair with this
                // destination would be (a scanner's next packets go to new
                // destinations).
                let pi = self.port_of.get(r.port_key as usize).copied();
                if let Some(acc) = self.accs.get(*slot as usize).filter(|_| !new) {
                    prefetch(acc);
                    self.src_dsts.prefetch_pair(*slot, *dst);
                    if let Some(pi) = pi.filter(|&pi| pi != NO_PORT) {
                        self.src_ports.prefetch_pair(*slot, pi as u64);
                    }
                }
                if let Some(p) = pi.and_then(|pi| self.ports.get(pi as usize)) {
                    prefetch(p);
                }
            }
            for ((r, &slot), &dst) in chunk.iter().zip(&slots).zip(&dsts) {
                self.account(r, slot, dst);
            }
        }
    }

    /// The slot of `r`'s source, added if new and under the cap, or
    /// [`UNTRACKED`].
    #[inline]
    fn slot_of(&mut self, r: &Observation) -> (u32, bool) {
        // One probe whether the source is known or new.
        let next = self.accs.len() as u32;
        let room = self.accs.len() < self.limits.source_cap;
        let (slot, new) = match r.src.as_v4() {
            Some(a) => self.sources4.slot(a, next, room),
            None => slot_in(&mut self.sources6, r.src.0, next, room),
        };
        if new {
            self.addrs.push(r.src);
            self.accs.push(SourceAcc {
                packets: 0,
                bytes: 0,
                first: r.ts,
                last: r.ts,
                port0_packets: 0,
                dst0: 0,
                port0: NO_PORT,
                n_dsts: 0,
                sketch: NO_SKETCH,
                classes: 0,
                fp_and: 0xff,
                fp_seen: 0,
            });
        }
        (slot, new)
    }

    #[inline]
    fn account(&mut self, r: &Observation, slot: u32, dst_hash: u64) {
        self.classes[r.class.index()] += 1;
        self.packets += 1;
        self.bytes += r.ip_len as u64;
        let key = r.port_key as usize;
        if self.port_of.len() <= key {
            self.port_of.resize(PORT_KEYS.max(key + 1), NO_PORT);
        }
        let pi = match self.port_of[key] {
            NO_PORT => {
                let pi = self.ports.len() as u32;
                self.port_of[key] = pi;
                self.ports.push(PortAcc::default());
                self.port_keys.push(key as u32);
                pi
            }
            pi => pi,
        };
        let port = &mut self.ports[pi as usize];
        port.packets += 1;
        port.bytes += r.ip_len as u64;
        port.dsts
            .insert(r.dst, dst_hash, &self.space, &mut self.budget);
        if slot == UNTRACKED {
            self.untracked_packets += 1;
            self.untracked_hll.insert_hash(r.src_hash);
            self.heavy.add(r.src);
            port.overflow
                .get_or_insert_with(Default::default)
                .insert_hash(r.src_hash);
            return;
        }
        let src = &mut self.accs[slot as usize];
        src.packets += 1;
        src.bytes += r.ip_len as u64;
        src.first = src.first.min(r.ts);
        src.last = src.last.max(r.ts);
        src.classes |= 1 << r.class.index();
        if r.fp & FP_ELIGIBLE != 0 {
            src.fp_and &= r.fp;
            src.fp_seen = FP_ELIGIBLE;
        }
        // The (source, port) pair: new, known, or new with the budget spent.
        if src.packets == 1 {
            src.port0 = pi;
            src.port0_packets = 1;
            port.sources += 1;
        } else if src.port0 == pi {
            src.port0_packets += 1;
        } else {
            let key = pi as u64;
            match self.src_ports.lookup(slot, key) {
                Ok(i) => self.src_ports.entries[i].val += 1,
                Err(i) if self.budget.take() => {
                    self.src_ports.put(i, Pair { slot, key, val: 1 });
                    port.sources += 1;
                }
                Err(_) => port
                    .overflow
                    .get_or_insert_with(Default::default)
                    .insert_hash(r.src_hash),
            }
        }
        // The (source, destination) pair.
        let vacancy = if src.n_dsts == 0 {
            None
        } else if src.dst0 == dst_hash {
            return;
        } else {
            match self.src_dsts.lookup(slot, dst_hash) {
                Ok(_) => return,
                Err(i) => Some(i),
            }
        };
        if self.budget.take() {
            match vacancy {
                None => src.dst0 = dst_hash,
                Some(i) => self.src_dsts.put(
                    i,
                    Pair {
                        slot,
                        key: dst_hash,
                        val: (),
                    },
                ),
            }
            src.n_dsts += 1;
        } else {
            if src.sketch == NO_SKETCH {
                src.sketch = self.dst_sketches.len() as u32;
                self.dst_sketches.push(Hll::new());
            }
            self.dst_sketches[src.sketch as usize].insert_hash(dst_hash);
        }
    }

    /// Darknet packets accounted in the current window.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Ends the window: returns its partial result and resets the shard.
    /// The tables are drained, not replaced: the next window reuses their
    /// memory (traffic changes slowly, and a fresh table costs page faults
    /// and rehashing as it grows). After a spike, a table four times larger
    /// than its window needed shrinks back to that size. The source rows
    /// are built in `rows` (emptied first), so a vector from an earlier
    /// window lends its memory.
    pub fn take_partial(&mut self, mut rows: Vec<SourceRow>) -> Partial {
        let mut exact = !self.budget.exhausted && self.untracked_packets == 0;
        let (n_ports, n_sources) = (self.ports.len(), self.accs.len());
        let n_sources6 = self.sources6.len();
        let mut ports: Vec<(u32, PortPartial)> = self
            .ports
            .drain(..)
            .zip(&self.port_keys)
            .map(|(p, &k)| {
                exact &= p.dsts.is_exact();
                let sources_exact = p.overflow.is_none();
                let pp = PortPartial {
                    packets: p.packets,
                    bytes: p.bytes,
                    sources: p.sources,
                    sources_exact,
                    sources_hll: p.overflow.map(|b| *b).unwrap_or_default(),
                    dsts: p.dsts,
                };
                (k, pp)
            })
            .collect();
        let untracked_hll = std::mem::take(&mut self.untracked_hll);
        let mut sources_hll = untracked_hll.clone();
        let mut fingerprints = [0u64; Fingerprint::COUNT];
        rows.clear();
        rows.reserve(self.accs.len());
        // Multi-port sources' further ports, grouped by slot.
        let (mut extra, mut extra_ends) = (
            std::mem::take(&mut self.extra_ports),
            std::mem::take(&mut self.extra_ends),
        );
        group_by_index(
            self.src_ports.iter(),
            self.accs.len(),
            |p| (p.slot as usize, (p.key as u32, p.val)),
            &mut extra,
            &mut extra_ends,
        );
        // Rows are built in the summary's order, so they never move again;
        // the slots are read out of order, each asked for a few rows ahead.
        let order = summary_order(
            self.accs
                .iter()
                .zip(&self.addrs)
                .map(|(s, &a)| (s.packets, a)),
        );
        const AHEAD: usize = 8;
        for (j, &slot) in order.iter().enumerate() {
            if let Some(&ahead) = order.get(j + AHEAD) {
                prefetch(&self.accs[ahead as usize]);
                prefetch(&self.addrs[ahead as usize]);
                prefetch(&extra_ends[ahead as usize]);
            }
            let slot = slot as usize;
            let (s, addr) = (&self.accs[slot], self.addrs[slot]);
            let h = hash_addr(addr);
            sources_hll.insert_hash(h);
            let entry = Hll::entry(h) as u64;
            let mut top = TopAcc::default();
            top.add(self.port_keys[s.port0 as usize], s.port0_packets);
            self.port_entries.push((s.port0 as u64) << 32 | entry);
            let mut n_ports = 1;
            for &(pi, c) in &extra[group_range(&extra_ends, slot)] {
                n_ports += 1;
                top.add(self.port_keys[pi as usize], c);
                self.port_entries.push((pi as u64) << 32 | entry);
            }
            let mut destinations = s.n_dsts as u64;
            if let Some(sk) = self.dst_sketches.get(s.sketch as usize) {
                destinations += sk.estimate();
                exact = false;
            }
            let fps = if s.fp_seen != 0 {
                source_fingerprints(s.fp_and)
            } else {
                FingerprintSet(0)
            };
            for f in fps.iter() {
                fingerprints[f as usize] += 1;
            }
            rows.push(SourceRow {
                ip: addr.to_ip(),
                packets: s.packets,
                bytes: s.bytes,
                ports: n_ports,
                destinations,
                top_ports: top.into_top_ports(),
                classes: ClassSet(s.classes),
                fingerprints: fps,
                first_seen: Timestamp(s.first),
                last_seen: Timestamp(s.last),
            });
        }
        self.extra_ports = extra;
        self.extra_ends = extra_ends;
        // The (source, port) pairs grouped by port (ports are numbered densely).
        let (mut grouped, mut end) = (
            std::mem::take(&mut self.port_grouped),
            std::mem::take(&mut self.port_ends),
        );
        group_by_index(
            self.port_entries.iter(),
            ports.len(),
            |&e| ((e >> 32) as usize, e as u32),
            &mut grouped,
            &mut end,
        );
        for (i, (_, p)) in ports.iter_mut().enumerate() {
            let group = &mut grouped[group_range(&end, i)];
            if group.is_empty() {
                continue;
            }
            let sk = Hll::from_unsorted_entries(group);
            if p.sources_hll.is_empty() {
                p.sources_hll = sk;
            } else {
                p.sources_hll.merge(&sk);
            }
        }
        self.port_entries.clear();
        self.port_ends = end;
        self.port_grouped = grouped;
        let partial = Partial {
            classes: self.classes,
            packets: self.packets,
            bytes: self.bytes,
            ports,
            sources: rows,
            sources_sorted: true,
            fingerprints,
            sources_hll,
            untracked_hll,
            untracked_packets: self.untracked_packets,
            heavy: self.heavy.top(self.limits.heavy),
            heavy_k: self.limits.heavy,
            exact,
        };
        self.sources4.clear();
        self.sources6.clear();
        self.accs.clear();
        self.addrs.clear();
        self.src_dsts.clear();
        self.src_ports.clear();
        self.dst_sketches.clear();
        for &k in &self.port_keys {
            self.port_of[k as usize] = NO_PORT;
        }
        self.port_keys.clear();
        if oversized(self.ports.capacity(), n_ports) {
            self.ports.shrink_to(n_ports);
            self.port_keys.shrink_to(n_ports);
        }
        shrink_map(&mut self.sources6, n_sources6);
        if oversized(self.accs.capacity(), n_sources) {
            self.accs.shrink_to(n_sources);
            self.addrs.shrink_to(n_sources);
        }
        let kept = Shard::new(self.limits, self.space.clone());
        let old = std::mem::replace(self, kept);
        self.port_of = old.port_of;
        self.ports = old.ports;
        self.port_keys = old.port_keys;
        self.sources4 = old.sources4;
        self.sources6 = old.sources6;
        self.accs = old.accs;
        self.addrs = old.addrs;
        self.src_ports = old.src_ports;
        self.src_dsts = old.src_dsts;
        self.dst_sketches = old.dst_sketches;
        self.port_entries = old.port_entries;
        self.port_grouped = old.port_grouped;
        self.port_ends = old.port_ends;
        self.extra_ports = old.extra_ports;
        self.extra_ends = old.extra_ends;
        partial
    }
}

/// An entry of an [`OpenTable`].
trait TableEntry: Copy {
    /// The empty entry.
    fn empty() -> Self;
    fn is_empty(&self) -> bool;
    /// Its hash (the bucket is the top bits).
    fn hash(&self) -> u64;
}

/// A hash table with open addressing and linear probing, at most half
/// full. Our own rather than a `HashMap`, so that a lookup's bucket is known
/// before the lookup and can be prefetched (see [`Shard::add_batch`]).
#[derive(Debug)]
struct OpenTable<E> {
    /// A power of two long (or empty).
    entries: Vec<E>,
    len: usize,
    /// 64 - log2(entries.len()).
    shift: u32,
}

impl<E> Default for OpenTable<E> {
    fn default() -> Self {
        OpenTable {
            entries: Vec::new(),
            len: 0,
            shift: 64,
        }
    }
}

impl<E: TableEntry> OpenTable<E> {
    #[inline]
    fn bucket(&self, hash: u64) -> Option<usize> {
        hash.checked_shr(self.shift)
            .map(|b| b as usize)
            .filter(|_| !self.entries.is_empty())
    }

    /// Starts loading the bucket of `hash`.
    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(e) = self.bucket(hash).and_then(|b| self.entries.get(b)) {
            prefetch(e);
        }
    }

    /// The index of the entry `is` picks, probing from `hash`'s bucket,
    /// or of the empty entry where it would go.
    #[inline]
    fn find(&self, hash: u64, is: impl Fn(&E) -> bool) -> Result<usize, usize> {
        let Some(mut i) = self.bucket(hash) else {
            return Err(0);
        };
        let mask = self.entries.len() - 1;
        loop {
            let e = &self.entries[i];
            if e.is_empty() {
                return Err(i);
            }
            if is(e) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for one more entry (call before [`OpenTable::find`] when the
    /// entry may be added).
    #[inline]
    fn reserve_one(&mut self) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.resize((self.len + 1) * 2);
        }
    }

    /// Puts `e` at `i`, an empty entry [`OpenTable::find`] returned.
    #[inline]
    fn put(&mut self, i: usize, e: E) {
        self.entries[i] = e;
        self.len += 1;
    }

    /// Reallocates for at least `want` buckets (and 1,024), entries kept.
    fn resize(&mut self, want: usize) {
        let n = want.max(1024).next_power_of_two();
        let old = std::mem::replace(&mut self.entries, vec![E::empty(); n]);
        self.shift = 64 - n.trailing_zeros();
        let mask = n - 1;
        for e in old.into_iter().filter(|e| !e.is_empty()) {
            let mut i = (e.hash() >> self.shift) as usize;
            while !self.entries[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.entries[i] = e;
        }
    }

    /// The entries (in no particular order).
    fn iter(&self) -> impl Iterator<Item = &E> + Clone {
        self.entries.iter().filter(|e| !e.is_empty())
    }

    /// Empties the table, keeping its memory; shrinks it if it was
    /// [`oversized`] for what it held.
    fn clear(&mut self) {
        let used = self.len;
        self.entries.fill(E::empty());
        self.len = 0;
        if oversized(self.entries.len(), 2 * used) {
            self.resize(2 * used);
        }
    }
}

/// An IPv4 source address and its slot + 1 (0: empty).
#[derive(Clone, Copy, Debug)]
struct Source4(u64);

impl Source4 {
    #[inline]
    fn hash_of(a: u32) -> u64 {
        // Fibonacci hashing: the bucket is the top bits of a product.
        (a as u64 ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl TableEntry for Source4 {
    fn empty() -> Source4 {
        Source4(0)
    }
    fn is_empty(&self) -> bool {
        self.0 == 0
    }
    fn hash(&self) -> u64 {
        Source4::hash_of(self.0 as u32)
    }
}

impl OpenTable<Source4> {
    /// `a`'s slot, and whether it was added just now (as `next`, when there
    /// is `room`); [`UNTRACKED`] when it is new and there is none.
    #[inline]
    fn slot(&mut self, a: u32, next: u32, room: bool) -> (u32, bool) {
        self.reserve_one();
        match self.find(Source4::hash_of(a), |e| e.0 as u32 == a) {
            Ok(i) => ((self.entries[i].0 >> 32) as u32 - 1, false),
            Err(_) if !room => (UNTRACKED, false),
            Err(i) => {
                self.put(i, Source4((next as u64 + 1) << 32 | a as u64));
                (next, true)
            }
        }
    }
}

/// A (source slot, key) pair and its value: a source's further ports
/// (key: port index, value: packets) or destinations (key: address hash).
#[derive(Clone, Copy, Debug)]
struct Pair<V> {
    slot: u32,
    key: u64,
    val: V,
}

impl<V> Pair<V> {
    #[inline]
    fn hash_of(slot: u32, key: u64) -> u64 {
        (key ^ (slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }
}

impl<V: Copy + Default> TableEntry for Pair<V> {
    fn empty() -> Pair<V> {
        Pair {
            slot: UNTRACKED,
            key: 0,
            val: V::default(),
        }
    }
    fn is_empty(&self) -> bool {
        self.slot == UNTRACKED
    }
    fn hash(&self) -> u64 {
        Pair::<V>::hash_of(self.slot, self.key)
    }
}

impl<V: Copy + Default> OpenTable<Pair<V>> {
    /// Starts loading the bucket of (`slot`, `key`).
    #[inline]
    fn prefetch_pair(&self, slot: u32, key: u64) {
        self.prefetch(Pair::<V>::hash_of(slot, key));
    }

    /// One probe for (`slot`, `key`): `Ok` with the index of its entry, or
    /// `Err` with the empty entry where [`OpenTable::put`] may add it (room
    /// for one more is made first, so the index stays valid).
    #[inline]
    fn lookup(&mut self, slot: u32, key: u64) -> Result<usize, usize> {
        self.reserve_one();
        self.find(Pair::<V>::hash_of(slot, key), |e| {
            e.slot == slot && e.key == key
        })
    }
}

/// Groups `items` by a dense index below `n` with a counting sort (two
/// passes, no comparisons), keeping what `split` gives for each: afterwards
/// group i is `out[group_range(ends, i)]`.
fn group_by_index<T, U: Copy + Default>(
    items: impl Iterator<Item = T> + Clone,
    n: usize,
    split: impl Fn(T) -> (usize, U),
    out: &mut Vec<U>,
    ends: &mut Vec<u32>,
) {
    ends.clear();
    ends.resize(n, 0);
    for t in items.clone() {
        ends[split(t).0] += 1;
    }
    let mut at = 0;
    for e in ends.iter_mut() {
        (*e, at) = (at, at + *e);
    }
    out.clear();
    out.resize(at as usize, U::default());
    for t in items {
        let (i, u) = split(t);
        out[ends[i] as usize] = u;
        ends[i] += 1;
    }
}

/// Where group `i` of [`group_by_index`] lies.
#[inline]
fn group_range(ends: &[u32], i: usize) -> std::ops::Range<usize> {
    let start = i.checked_sub(1).map_or(0, |j| ends[j]);
    start as usize..ends[i] as usize
}

/// Asks the CPU to start loading `x`'s cache line, without waiting for it
/// (a hint; nothing on targets other than x86-64).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    safe_arch::prefetch_t0(x);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// True when a drained table or vector with room for `capacity` held only
/// `used` this window: more than four times too big (a spike window's size
/// is not kept for ever).
fn oversized(capacity: usize, used: usize) -> bool {
    capacity > 4 * used.max(1024)
}

/// Shrinks a drained table that is [`oversized`].
fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut FxHashMap<K, V>, used: usize) {
    if oversized(m.capacity(), used) {
        m.shrink_to(used);
    }
}

/// `key`'s slot in `table`, and whether it was added just now (as `next`,
/// when there is `room`); [`UNTRACKED`] when it is new and there is none.
#[inline]
fn slot_in<K: std::hash::Hash + Eq>(
    table: &mut FxHashMap<K, u32>,
    key: K,
    next: u32,
    room: bool,
) -> (u32, bool) {
    match table.entry(key) {
        Entry::Occupied(e) => (*e.get(), false),
        Entry::Vacant(e) if room => (*e.insert(next), true),
        Entry::Vacant(_) => (UNTRACKED, false),
    }
}

/// A source's busiest ports so far, busiest first (ties: lower key first),
/// without allocating.
#[derive(Default)]
struct TopAcc {
    top: [(u32, u64); TopPorts::CAP],
    n: usize,
}

impl TopAcc {
    fn add(&mut self, k: u32, c: u64) {
        let better = |a: (u32, u64), b: (u32, u64)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
        if self.n < self.top.len() {
            self.top[self.n] = (k, c);
            self.n += 1;
        } else if better((k, c), self.top[self.n - 1]) {
            self.top[self.n - 1] = (k, c);
        } else {
            return;
        }
        let mut i = self.n - 1;
        while i > 0 && better(self.top[i], self.top[i - 1]) {
            self.top.swap(i, i - 1);
            i -= 1;
        }
    }

    fn into_top_ports(self) -> TopPorts {
        let mut t = TopPorts::default();
        for &(k, c) in &self.top[..self.n] {
            let (proto, port) = split_port_key(k);
            t.push(PortCount {
                proto,
                port,
                packets: c,
            });
        }
        t
    }
}

/// One port's partial result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPartial {
    packets: u64,
    bytes: u64,
    sources: u64,
    sources_exact: bool,
    sources_hll: Hll,
    dsts: PortDsts,
}

/// A shard's (or several merged shards') result for one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partial {
    classes: [u64; PacketClass::COUNT],
    packets: u64,
    bytes: u64,
    /// (port key, its partial), each key once, in no particular order.
    ports: Vec<(u32, PortPartial)>,
    sources: Vec<SourceRow>,
    /// `sources` is in the summary's order (one shard's rows are).
    sources_sorted: bool,
    fingerprints: [u64; Fingerprint::COUNT],
    sources_hll: Hll,
    untracked_hll: Hll,
    untracked_packets: u64,
    heavy: Vec<HeavySource>,
    heavy_k: usize,
    exact: bool,
}

/// Identity of the sensor and window a summary is built for.
#[derive(Clone, Debug)]
pub struct SummaryMeta {
    /// Sensor identity.
    pub sensor: SensorInfo,
    /// The window.
    pub window: Window,
    /// Capture health over the window.
    pub capture: CaptureHealth,
    /// Whole-sensor source cap (for the truncation report).
    pub source_cap: u64,
}

impl Partial {
    /// The neutral element of [`Partial::merge`].
    pub fn empty() -> Partial {
        Partial {
            exact: true,
            sources_sorted: true,
            ..Default::default()
        }
    }

    /// Darknet packets in this partial.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Merges `other` into `self`. Commutative and associative: the summary
    /// does not depend on the order in which shards finish.
    pub fn merge(&mut self, other: Partial) {
        for (a, b) in self.classes.iter_mut().zip(other.classes) {
            *a += b;
        }
        self.packets += other.packets;
        self.bytes += other.bytes;
        if self.ports.is_empty() {
            self.ports = other.ports;
        } else {
            self.merge_ports(other.ports);
        }
        if self.sources.is_empty() {
            // The first partial's rows become the summary's: no copy.
            self.sources = other.sources;
            self.sources_sorted = other.sources_sorted;
        } else if !other.sources.is_empty() {
            self.sources.extend(other.sources);
            self.sources_sorted = false;
        }
        for (a, b) in self.fingerprints.iter_mut().zip(other.fingerprints) {
            *a += b;
        }
        self.sources_hll.merge(&other.sources_hll);
        self.untracked_hll.merge(&other.untracked_hll);
        self.untracked_packets += other.untracked_packets;
        self.heavy.extend(other.heavy);
        sort_heavy(&mut self.heavy);
        self.heavy_k = self.heavy_k.max(other.heavy_k);
        self.heavy.truncate(self.heavy_k);
        self.exact &= other.exact;
    }

    /// Adds `other`'s ports: sums and unions where both have a port.
    fn merge_ports(&mut self, other: Vec<(u32, PortPartial)>) {
        let mut at: FxHashMap<u32, usize> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, i))
            .collect();
        for (k, p) in other {
            match at.get(&k) {
                None => {
                    at.insert(k, self.ports.len());
                    self.ports.push((k, p));
                }
                Some(&i) => {
                    let q = &mut self.ports[i].1;
                    q.packets += p.packets;
                    q.bytes += p.bytes;
                    q.sources += p.sources;
                    q.sources_exact &= p.sources_exact;
                    q.sources_hll.merge(&p.sources_hll);
                    q.dsts.merge(p.dsts);
                }
            }
        }
    }

    /// Builds the wire summary.
    pub fn into_summary(self, meta: SummaryMeta) -> Summary {
        let exact = self.exact;
        let mut ports: Vec<PortRow> = self
            .ports
            .into_iter()
            .map(|(k, p)| {
                let (proto, port) = split_port_key(k);
                PortRow {
                    proto,
                    port,
                    packets: p.packets,
                    bytes: p.bytes,
                    sources: if p.sources_exact {
                        p.sources
                    } else {
                        p.sources_hll.estimate()
                    },
                    destinations: p.dsts.count(),
                    sources_hll: p.sources_hll,
                }
            })
            .collect();
        ports.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then(a.proto.cmp(&b.proto))
                .then(a.port.cmp(&b.port))
        });
        let sources = if self.sources_sorted {
            self.sources
        } else {
            sort_sources(self.sources)
        };
        Summary {
            schema: SCHEMA,
            sensor: meta.sensor,
            window: meta.window,
            capture: meta.capture,
            classes: ClassTotals::from_array(self.classes),
            fingerprints: FingerprintCounts(self.fingerprints),
            totals: Totals {
                packets: self.packets,
                bytes: self.bytes,
                sources: if self.untracked_packets == 0 {
                    sources.len() as u64
                } else {
                    self.sources_hll.estimate()
                },
                sources_hll: self.sources_hll,
            },
            truncation: Truncation {
                exact,
                source_cap: meta.source_cap,
                sources_untracked: self.untracked_hll.estimate(),
                packets_untracked: self.untracked_packets,
                heavy: self.heavy,
            },
            ports,
            sources,
        }
    }
}

/// The summary's order of sources (busiest first, ties by address, IPv4
/// before IPv6; addresses are unique, so the order is total) for sources
/// given as (packets, address): position j holds source `order[j]`. An
/// IPv4 source's key is one `u128` (packets, address, index), cheaper to
/// compare than a tuple; IPv6 sources are sorted apart and merged in.
fn summary_order(sources: impl ExactSizeIterator<Item = (u64, Addr)>) -> Vec<u32> {
    let mut v4: Vec<u128> = Vec::with_capacity(sources.len());
    let mut v6: Vec<(u64, u128, u32)> = Vec::new();
    for (i, (packets, a)) in sources.enumerate() {
        let busy = !packets; // descending packets, as an ascending key
        match a.as_v4() {
            Some(a) => v4.push((busy as u128) << 64 | (a as u128) << 32 | i as u128),
            None => v6.push((busy, a.0, i as u32)),
        }
    }
    v4.sort_unstable();
    v6.sort_unstable();
    let mut order: Vec<u32> = Vec::with_capacity(v4.len() + v6.len());
    let mut b = v6.iter().peekable();
    for &k in &v4 {
        while let Some(&&(busy, _, i)) = b.peek() {
            if busy >= (k >> 64) as u64 {
                break;
            }
            order.push(i);
            b.next();
        }
        order.push(k as u32);
    }
    order.extend(b.map(|k| k.2));
    order
}

/// Source rows in the summary's order (see [`summary_order`]): sorts keys,
/// then puts each ~160-byte row in place by following the permutation's
/// cycles (in place: a second copy of a busy window's rows would cost tens
/// of megabytes). Only for rows merged from several shards: a shard's own
/// rows are built in this order.
fn sort_sources(mut rows: Vec<SourceRow>) -> Vec<SourceRow> {
    let mut perm = summary_order(rows.iter().map(|r| (r.packets, Addr::from(r.ip))));
    // Position j takes row perm[j]. Each cycle is followed once: its first
    // row is set aside and the others move up one at a time into the hole
    // the previous move left (one copy per row; a swap is three).
    for start in 0..perm.len() {
        if perm[start] as usize == start {
            continue;
        }
        let first = rows[start].clone();
        let mut j = start;
        loop {
            let next = perm[j] as usize;
            perm[j] = j as u32;
            if next == start {
                rows[j] = first;
                break;
            }
            rows[j] = rows[next].clone();
            j = next;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use darkscope_common::Proto;
    use proptest::prelude::*;

    fn meta() -> SummaryMeta {
        SummaryMeta {
            sensor: SensorInfo {
                id: "t".into(),
                country: "ZZ".into(),
                darknet: vec![],
                monitored_ipv4: 0,
            },
            window: Window {
                start: Timestamp(0),
                end: Timestamp(60_000_000),
            },
            capture: CaptureHealth::default(),
            source_cap: 1000,
        }
    }

    fn record(src: u32, dst: u32, port: u16, proto: u8, flags: u8, ts: u64) -> Observation {
        let mut r = crate::record::PacketRecord {
            ts,
            src: Addr::v4(src),
            dst: Addr::v4(0xc613_0000 | dst),
            ip_len: 40 + port as u32 % 7,
            seq: if flags & 1 == 1 { 0xc613_0000 | dst } else { 5 },
            dport: port,
            proto: Proto::ALL[proto as usize % 4],
            tcp_flags: flags,
            ..Default::default()
        };
        r.src_hash = hash_addr(r.src);
        classify(&mut r);
        r.observation()
    }

    fn records() -> impl Strategy<Value = Vec<Observation>> {
        proptest::collection::vec(
            (
                0u32..40,
                0u32..60,
                0u16..12,
                0u8..4,
                any::<u8>(),
                0u64..60_000_000,
            )
                .prop_map(|(s, d, p, pr, f, t)| record(s, d, p, pr, f, t)),
            0..400,
        )
    }

    /// The IPv4 numbering of `darknet` (e.g. `"198.19.0.0/26"`; `""`: none).
    fn space(darknet: &str) -> Arc<V4Space> {
        Arc::new(match darknet {
            "" => V4Space::default(),
            d => V4Space::new(&PrefixSet::parse_list(d).unwrap()),
        })
    }

    fn shard(limits: Limits) -> Shard {
        Shard::new(limits, space(""))
    }

    fn shard_partials(rs: &[Observation], n: usize, limits: Limits) -> Vec<Partial> {
        partials_in(rs, n, limits, "")
    }

    fn partials_in(rs: &[Observation], n: usize, limits: Limits, darknet: &str) -> Vec<Partial> {
        let space = space(darknet);
        let mut shards: Vec<Shard> = (0..n).map(|_| Shard::new(limits, space.clone())).collect();
        for r in rs {
            let i = (((r.src_hash >> 32) * n as u64) >> 32) as usize;
            shards[i].add(r);
        }
        shards
            .iter_mut()
            .map(|s| s.take_partial(Vec::new()))
            .collect()
    }

    fn merged(parts: Vec<Partial>) -> Summary {
        let mut acc = Partial::empty();
        for p in parts {
            acc.merge(p);
        }
        acc.into_summary(meta())
    }

    const ROOMY: Limits = Limits {
        source_cap: 1000,
        pair_budget: 100_000,
        heavy: 10,
    };

    proptest! {
        #[test]
        fn merge_order_does_not_matter_and_sharding_changes_nothing(rs in records(), n in 1usize..6, rot in 0usize..6) {
            let parts = shard_partials(&rs, n, ROOMY);
            let mut rotated = parts.clone();
            rotated.rotate_left(rot % n.max(1));
            let mut reversed = parts.clone();
            reversed.reverse();
            let a = merged(parts);
            prop_assert_eq!(&a, &merged(rotated));
            prop_assert_eq!(&a, &merged(reversed));
            // N shards give the same summary as one.
            let one = merged(shard_partials(&rs, 1, ROOMY));
            prop_assert_eq!(&a, &one);
            // Totals are preserved.
            prop_assert_eq!(a.totals.packets, rs.len() as u64);
            prop_assert_eq!(a.classes.total(), rs.len() as u64);
            prop_assert_eq!(a.ports.iter().map(|p| p.packets).sum::<u64>(), rs.len() as u64);
            prop_assert_eq!(a.sources.iter().map(|s| s.packets).sum::<u64>(), rs.len() as u64);
            prop_assert!(a.truncation.exact);
        }

        /// A port's destinations in a bitmap over the darknet count the same
        /// as in a set: whether the darknet holds all test destinations (a
        /// bitmap from the first, or from the fourth, so that one shard's set
        /// meets another's bitmap), half of them (bitmap and set side by
        /// side) or none, in any number of shards.
        #[test]
        fn destination_bitmaps_count_what_sets_count(rs in records(), n in 1usize..4, darknet in prop_oneof![Just("198.19.0.0/26"), Just("198.19.0.0/23"), Just("198.19.0.32/27,198.19.0.16/28"), Just("10.0.0.0/8")]) {
            let sets = merged(shard_partials(&rs, 1, ROOMY));
            prop_assert_eq!(&merged(partials_in(&rs, n, ROOMY, darknet)), &sets);
            prop_assert_eq!(&merged(partials_in(&rs, 1, ROOMY, darknet)), &sets);
        }

        /// Window close drains the tables for reuse: whatever the previous
        /// window held, the next window's summary is what a fresh shard gives.
        #[test]
        fn a_reused_shard_forgets_the_last_window(before in records(), rs in records(), tight in any::<bool>()) {
            let limits = if tight { Limits { source_cap: 3, pair_budget: 20, heavy: 2 } } else { ROOMY };
            let mut reused = shard(limits);
            for r in &before {
                reused.add(r);
            }
            let _ = reused.take_partial(Vec::new());
            let mut fresh = shard(limits);
            for r in &rs {
                reused.add(r);
                fresh.add(r);
            }
            prop_assert_eq!(
                reused.take_partial(Vec::new()).into_summary(meta()),
                fresh.take_partial(Vec::new()).into_summary(meta())
            );
        }

        #[test]
        fn sources_sort_busiest_first_then_by_address(rows in proptest::collection::vec((any::<bool>(), any::<u32>(), prop_oneof![1u64..4, any::<u64>()]), 0..300)) {
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<SourceRow> = rows
                .into_iter()
                .filter(|r| seen.insert((r.0, r.1)))
                .map(|(v6, a, packets)| SourceRow {
                    ip: if v6 { Addr::v6(((0x2001u128 << 112) | a as u128).to_be_bytes()).to_ip() } else { Addr::v4(a).to_ip() },
                    packets,
                    bytes: 0,
                    ports: 1,
                    destinations: 1,
                    top_ports: TopPorts::default(),
                    classes: ClassSet(0),
                    fingerprints: FingerprintSet(0),
                    first_seen: Timestamp(0),
                    last_seen: Timestamp(0),
                })
                .collect();
            let mut expected = rows.clone();
            expected.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
            prop_assert_eq!(sort_sources(rows), expected);
        }

        /// The shard's own hash tables find what was put in, across growth
        /// and emptying (as a `HashMap` does).
        #[test]
        fn open_tables_behave_like_maps(ops in proptest::collection::vec((0u32..60, 0u64..60), 0..3000), clear_at in 0usize..3000) {
            let mut t: OpenTable<Pair<u64>> = OpenTable::default();
            let mut m = std::collections::HashMap::new();
            for (i, &(slot, key)) in ops.iter().enumerate() {
                if i == clear_at {
                    t.clear();
                    m.clear();
                }
                match t.lookup(slot, key) {
                    Ok(i) => t.entries[i].val += 1,
                    Err(i) => {
                        prop_assert!(!m.contains_key(&(slot, key)));
                        t.put(i, Pair { slot, key, val: 1 });
                    }
                }
                *m.entry((slot, key)).or_insert(0u64) += 1;
            }
            let mut got: Vec<_> = t.iter().map(|p| ((p.slot, p.key), p.val)).collect();
            got.sort_unstable();
            let mut want: Vec<_> = m.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(got.len(), want.len());
            prop_assert_eq!(got, want);
        }

        #[test]
        fn tight_limits_keep_packet_totals_exact(rs in records(), n in 1usize..4, darknet in prop_oneof![Just(""), Just("198.19.0.0/23")]) {
            let tight = Limits { source_cap: 3, pair_budget: 20, heavy: 2 };
            let a = merged(partials_in(&rs, n, tight, darknet));
            prop_assert_eq!(a.totals.packets, rs.len() as u64);
            prop_assert_eq!(a.ports.iter().map(|p| p.packets).sum::<u64>(), rs.len() as u64);
            let tracked: u64 = a.sources.iter().map(|s| s.packets).sum();
            prop_assert_eq!(tracked + a.truncation.packets_untracked, rs.len() as u64);
            prop_assert!(a.sources.len() <= 3 * n);
        }
    }

    #[test]
    fn exact_distinct_counts_per_port() {
        let mut s = shard(ROOMY);
        // 3 sources to port 23 over 4 destinations; one source also to 2323.
        for (src, dst, port) in [
            (1, 1, 23),
            (1, 2, 23),
            (2, 1, 23),
            (3, 4, 23),
            (3, 3, 2323),
            (3, 3, 23),
        ] {
            s.add(&record(src, dst, port, 0, 0x02, 0));
        }
        let sum = s.take_partial(Vec::new()).into_summary(meta());
        let p23 = sum.ports.iter().find(|p| p.port == 23).unwrap();
        assert_eq!((p23.packets, p23.sources, p23.destinations), (5, 3, 4));
        let src3 = sum
            .sources
            .iter()
            .find(|r| r.ip.to_string() == "0.0.0.3")
            .unwrap();
        assert_eq!((src3.packets, src3.ports, src3.destinations), (3, 2, 2));
        assert_eq!(src3.top_ports[0].port, 23);
    }

    /// A scan of a whole /16 on one port takes an 8 KiB bitmap, not 65,536
    /// budgeted set entries: the count stays exact on a budget that a set
    /// would have run out of (each source's own destination takes an entry
    /// too: 65,536 of the 70,000).
    #[test]
    fn a_port_swept_across_the_darknet_stays_exact_on_a_small_budget() {
        let limits = Limits {
            source_cap: 100_000,
            pair_budget: 70_000,
            heavy: 2,
        };
        let sweep = |s: &mut Shard| {
            for i in 0..65_536u32 {
                // One packet per source, each to another address.
                let mut r = record(0x0100_0000 + i, 0, 23, 0, 0x02, i as u64);
                r.dst = Addr::v4(0xc613_0000 | i);
                s.add(&r);
            }
        };
        let mut with = Shard::new(limits, space("198.19.0.0/16"));
        sweep(&mut with);
        let sum = with.take_partial(Vec::new()).into_summary(meta());
        assert!(sum.truncation.exact);
        assert_eq!(sum.ports[0].destinations, 65_536);
        let mut without = shard(limits);
        sweep(&mut without);
        let sum = without.take_partial(Vec::new()).into_summary(meta());
        assert!(!sum.truncation.exact, "a set runs out of budget");
    }

    /// Past the pair budget a source's further destinations are estimated
    /// (and the summary says it is not exact); its packets stay exact.
    #[test]
    fn destinations_past_the_budget_are_estimated() {
        let mut s = shard(Limits {
            source_cap: 10,
            pair_budget: 100,
            heavy: 2,
        });
        for dst in 0..2000 {
            s.add(&record(1, dst, 23, 0, 0x02, dst as u64));
        }
        let sum = s.take_partial(Vec::new()).into_summary(meta());
        assert!(!sum.truncation.exact);
        let src = &sum.sources[0];
        assert_eq!(src.packets, 2000);
        let err = (src.destinations as f64 - 2000.0).abs() / 2000.0;
        assert!(
            err < 0.05,
            "estimated {} destinations of 2000",
            src.destinations
        );
    }

    #[test]
    fn fingerprint_needs_every_packet() {
        let mut s = shard(ROOMY);
        // Source 1: both SYNs have seq == dst (Mirai). Source 2: one of two.
        s.add(&record(1, 5, 23, 0, 0x03, 0));
        s.add(&record(1, 6, 23, 0, 0x03, 1));
        s.add(&record(2, 5, 23, 0, 0x03, 0));
        s.add(&record(2, 6, 23, 0, 0x02, 1));
        let sum = s.take_partial(Vec::new()).into_summary(meta());
        assert_eq!(sum.fingerprints[Fingerprint::Mirai], 1);
        let one = sum
            .sources
            .iter()
            .find(|r| r.ip.to_string() == "0.0.0.1")
            .unwrap();
        assert_eq!(one.fingerprints, FingerprintSet(Fingerprint::Mirai.bit()));
    }

    #[test]
    fn space_saving_finds_the_heavy_hitter() {
        let mut ss = SpaceSaving {
            k: 4,
            ..Default::default()
        };
        for i in 0..10_000u32 {
            ss.add(Addr::v4(i % 500 + 10));
            if i % 3 == 0 {
                ss.add(Addr::v4(1));
            }
        }
        let top = ss.top(1);
        assert_eq!(top[0].ip.to_string(), "0.0.0.1");
        assert!(top[0].packets - top[0].error <= 3334 && top[0].packets >= 3334);
    }
}
