//! What one decoded packet becomes: a [`PacketRecord`] with every header
//! field the classifier reads, filled in place on the capture thread, and
//! the smaller [`Observation`] that the statistics need, which travels in
//! recycled batches from the capture thread to the shards. Both are `Copy`
//! and hold no pointers.

use darkscope_common::{Addr, PacketClass, Proto};

/// `PacketRecord::fp` bit: the packet is TCP, so fingerprint rules apply.
pub const FP_ELIGIBLE: u8 = 0x80;

/// One decoded darknet packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    /// Capture time, µs since the Unix epoch.
    pub ts: u64,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// [`darkscope_common::hll::hash_addr`] of `src`, computed once.
    pub src_hash: u64,
    /// IP packet length (IPv4 total length; IPv6 payload length + 40).
    pub ip_len: u32,
    /// TCP sequence number (0 otherwise).
    pub seq: u32,
    /// Source port (0 if none).
    pub sport: u16,
    /// Destination port, ICMP type, or IP protocol number (see [`Proto`]).
    pub dport: u16,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    /// For ICMP errors: destination port of the quoted packet.
    pub quoted_dport: u16,
    /// Protocol of the port key.
    pub proto: Proto,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 ...).
    pub tcp_flags: u8,
    /// TCP window (0 otherwise).
    pub tcp_window: u16,
    /// Length of the TCP options in bytes (0 otherwise).
    pub tcp_opts_len: u8,
    /// The first four bytes of the TCP options, big-endian, zero-padded.
    pub tcp_opts: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// ICMP code (0 otherwise).
    pub icmp_code: u8,
    /// For ICMP errors: IP protocol of the quoted packet (0 if none).
    pub quoted_proto: u8,
    /// Class, set by [`crate::classify`].
    pub class: PacketClass,
    /// Fingerprint rule matches ([`darkscope_common::Fingerprint::bit`]) and [`FP_ELIGIBLE`].
    pub fp: u8,
}

impl PacketRecord {
    /// The port-table key: protocol and port packed into one `u32`.
    #[inline]
    pub fn port_key(&self) -> u32 {
        (self.proto as u32) << 16 | self.dport as u32
    }

    /// What the statistics need of a classified record.
    #[inline]
    pub fn observation(&self) -> Observation {
        Observation {
            ts: self.ts,
            src: self.src,
            dst: self.dst,
            src_hash: self.src_hash,
            ip_len: self.ip_len,
            port_key: self.port_key(),
            class: self.class,
            fp: self.fp,
        }
    }
}

/// One classified darknet packet as the statistics shards see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Capture time, µs since the Unix epoch.
    pub ts: u64,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// [`darkscope_common::hll::hash_addr`] of `src`.
    pub src_hash: u64,
    /// IP packet length.
    pub ip_len: u32,
    /// Protocol and port ([`PacketRecord::port_key`]).
    pub port_key: u32,
    /// Class.
    pub class: PacketClass,
    /// Fingerprint rule matches and [`FP_ELIGIBLE`].
    pub fp: u8,
}

// Batches of observations cross threads: one a cache line.
const _: () = assert!(std::mem::size_of::<Observation>() <= 64);

/// Splits a key made by [`PacketRecord::port_key`].
pub fn split_port_key(k: u32) -> (Proto, u16) {
    let proto = Proto::ALL
        .get((k >> 16) as usize)
        .copied()
        .unwrap_or(Proto::Ip);
    (proto, k as u16)
}
