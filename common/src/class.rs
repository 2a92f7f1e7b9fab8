//! Closed sets that the sensor assigns and the aggregator reads: transport
//! protocol of a port row, packet class, and scanning-tool fingerprint.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Protocol of a port row. For ICMP the "port" is the ICMP type; for any other
/// IP protocol (`Ip`) it is the IP protocol number.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Proto {
    /// TCP; port = destination port.
    Tcp = 0,
    /// UDP; port = destination port.
    Udp = 1,
    /// ICMPv4; port = ICMP type.
    Icmp = 2,
    /// ICMPv6; port = ICMPv6 type.
    Icmpv6 = 3,
    /// Any other IP protocol; port = IP protocol number.
    #[default]
    Ip = 4,
}

impl Proto {
    /// Every protocol, in wire order.
    pub const ALL: [Proto; 5] = [
        Proto::Tcp,
        Proto::Udp,
        Proto::Icmp,
        Proto::Icmpv6,
        Proto::Ip,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Ip => "ip",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Proto> {
        Proto::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a packet arriving at a darknet most likely is. The darknet never sends,
/// so anything that looks like a reply is backscatter from spoofed traffic.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PacketClass {
    /// TCP with SYN and without ACK: a scan probe (or a connection attempt).
    TcpSyn = 0,
    /// A reply to a packet the darknet never sent: TCP SYN-ACK or RST; ICMPv4
    /// types 0, 3, 4, 5, 11, 12, 14, 16, 18; ICMPv6 types 1-4 and 129.
    Backscatter = 1,
    /// Any UDP datagram.
    Udp = 2,
    /// ICMP echo request (IPv4 type 8, IPv6 type 128): a ping sweep.
    IcmpEcho = 3,
    /// Any other ICMP message.
    IcmpOther = 4,
    /// TCP that is neither a SYN probe nor backscatter (ACK scans, FIN/NULL/Xmas scans).
    TcpOther = 5,
    /// Any other IP protocol, and non-first fragments.
    #[default]
    Other = 6,
}

impl PacketClass {
    /// Number of classes.
    pub const COUNT: usize = 7;
    /// Every class, in index order.
    pub const ALL: [PacketClass; 7] = [
        PacketClass::TcpSyn,
        PacketClass::Backscatter,
        PacketClass::Udp,
        PacketClass::IcmpEcho,
        PacketClass::IcmpOther,
        PacketClass::TcpOther,
        PacketClass::Other,
    ];

    /// Index in `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PacketClass::TcpSyn => "tcp_syn",
            PacketClass::Backscatter => "backscatter",
            PacketClass::Udp => "udp",
            PacketClass::IcmpEcho => "icmp_echo",
            PacketClass::IcmpOther => "icmp_other",
            PacketClass::TcpOther => "tcp_other",
            PacketClass::Other => "other",
        }
    }
}

/// A scanning tool recognisable from header fields alone.
///
/// A source carries a fingerprint in a window only when *every* TCP packet
/// it sent in that window matches the rule: one packet matches the ZMap rule
/// by chance once in 65,536, so single matches must not label a source. The
/// Mirai, ZMap and Masscan rules read IPv4 fields, so only IPv4 sources can
/// carry them; the Nmap rule holds over IPv6 too.
///
/// New fingerprints are added at the end: readers of this version leave out
/// names (JSON) and counts or bits (binary form) they do not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Fingerprint {
    /// Mirai and its descendants: TCP sequence number == destination IPv4
    /// address (Mirai's `scanner.c`).
    Mirai = 0,
    /// ZMap before 2024: IPv4 ID == 54321. ZMap randomises the ID since March
    /// 2024, so watch `fingerprints.zmap` in summaries fade.
    Zmap = 1,
    /// Masscan: IPv4 ID == (dst_ip ^ dst_port ^ seq) & 0xffff.
    Masscan = 2,
    /// Nmap's SYN scan (`-sS`, its default as root): a SYN without ACK,
    /// TCP window 1024 and a lone MSS option of 1460 (bytes `02 04 05 b4`).
    /// Every probe in `testdata/realscan/nmap.pcap` and `nmap6.pcap` (nmap
    /// 7.93) has them; Masscan 1.3.2's probes have window 1024 and no
    /// options, ZMap's window 65535, and an operating system's SYN carries
    /// more options (SACK, timestamps, window scale). Later Masscan versions
    /// send the same window and option: a source that also meets the
    /// Masscan rule is labelled Masscan only.
    Nmap = 3,
}

impl Fingerprint {
    /// Number of fingerprints.
    pub const COUNT: usize = 4;
    /// Every fingerprint, in bit order.
    pub const ALL: [Fingerprint; Fingerprint::COUNT] = [
        Fingerprint::Mirai,
        Fingerprint::Zmap,
        Fingerprint::Masscan,
        Fingerprint::Nmap,
    ];

    /// The bit of this fingerprint in a [`FingerprintSet`].
    #[inline]
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fingerprint::Mirai => "mirai",
            Fingerprint::Zmap => "zmap",
            Fingerprint::Masscan => "masscan",
            Fingerprint::Nmap => "nmap",
        }
    }
}

/// A set of fingerprints as bits (see [`Fingerprint::bit`]); on the wire, a
/// list of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FingerprintSet(pub u8);

impl FingerprintSet {
    /// True when no fingerprint is in the set.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// True when `f` is in the set.
    #[inline]
    pub const fn has(self, f: Fingerprint) -> bool {
        self.0 & f.bit() != 0
    }

    /// The members, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Fingerprint> {
        Fingerprint::ALL.into_iter().filter(move |f| self.has(*f))
    }

    /// The set of every fingerprint this version knows.
    pub fn all() -> FingerprintSet {
        FingerprintSet(<Fingerprint as Member>::known())
    }
}

/// A set of packet classes as bits (`1 << PacketClass::index()`); on the
/// wire, a list of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassSet(pub u8);

impl ClassSet {
    /// True when `c` is in the set.
    #[inline]
    pub const fn has(self, c: PacketClass) -> bool {
        self.0 & (1 << c as u8) != 0
    }

    /// The members, in index order.
    pub fn iter(self) -> impl Iterator<Item = PacketClass> {
        PacketClass::ALL.into_iter().filter(move |c| self.has(*c))
    }
}

/// One name in a set's JSON list, read as its bit: 0 for a name this
/// version does not know. Readers tolerate names added later (a newer
/// sensor's fingerprint, a newer peer's class), so such a sensor or peer is
/// not refused by an older aggregator: the name is left out, nothing else.
/// Anything but a string is still an error.
struct NameBit<T>(u8, std::marker::PhantomData<T>);

/// A member of a closed set kept as bits: its name and its bit.
pub(crate) trait Member: Copy + 'static {
    /// Every member.
    const ALL: &'static [Self];
    /// The wire name.
    fn name(self) -> &'static str;
    /// Its bit in the set.
    fn set_bit(self) -> u8;
    /// The member named `name`, if there is one.
    fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.name() == name)
    }
    /// The bit of the member named `name`, if there is one.
    fn bit_of(name: &str) -> Option<u8> {
        Self::named(name).map(Member::set_bit)
    }
    /// The bits of every member.
    fn known() -> u8 {
        Self::ALL.iter().fold(0, |acc, m| acc | m.set_bit())
    }
}

impl Member for Fingerprint {
    const ALL: &'static [Self] = &Fingerprint::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn set_bit(self) -> u8 {
        self.bit()
    }
}

impl Member for PacketClass {
    const ALL: &'static [Self] = &PacketClass::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn set_bit(self) -> u8 {
        1 << self as u8
    }
}

impl<'de, T: Member> Deserialize<'de> for NameBit<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: Member> serde::de::Visitor<'_> for V<T> {
            type Value = NameBit<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NameBit<T>, E> {
                let bit = T::bit_of(v).unwrap_or(0);
                Ok(NameBit(bit, std::marker::PhantomData))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Sets are lists of names in JSON and one byte of bits in the binary form;
/// reading a list folds it into bits without allocating. Members added
/// later are left out: unknown names (see [`NameBit`]) and unknown bits.
macro_rules! bitset_serde {
    ($set:ident, $item:ty) => {
        impl Serialize for $set {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_seq(self.iter())
                } else {
                    s.serialize_u8(self.0)
                }
            }
        }
        impl<'de> Deserialize<'de> for $set {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $set;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a list of names")
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<$set, A::Error> {
                        let mut bits = 0u8;
                        while let Some(NameBit(b, _)) = seq.next_element::<NameBit<$item>>()? {
                            bits |= b;
                        }
                        Ok($set(bits))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_seq(V)
                } else {
                    let bits = u8::deserialize(d)?;
                    Ok($set(bits & <$item as Member>::known()))
                }
            }
        }
    };
}
bitset_serde!(FingerprintSet, Fingerprint);
bitset_serde!(ClassSet, PacketClass);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_serialise_as_name_lists() {
        let c = ClassSet(1 << PacketClass::TcpSyn as u8 | 1 << PacketClass::Udp as u8);
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"["tcp_syn","udp"]"#);
        assert_eq!(serde_json::from_str::<ClassSet>(&j).unwrap(), c);
        let f = FingerprintSet(Fingerprint::Masscan.bit());
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, r#"["masscan"]"#);
        assert_eq!(serde_json::from_str::<FingerprintSet>(&j).unwrap(), f);
        // Every member reads back (the reader's names are the writer's).
        let all = FingerprintSet(Fingerprint::ALL.iter().fold(0, |a, f| a | f.bit()));
        let j = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<FingerprintSet>(&j).unwrap(), all);
        let all = ClassSet(PacketClass::ALL.iter().fold(0, |a, &c| a | 1 << c as u8));
        let j = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<ClassSet>(&j).unwrap(), all);
    }

    #[test]
    fn names_added_later_are_left_out_and_junk_is_refused() {
        // A newer sensor's fingerprint or class: the rest of the set stays.
        let f: FingerprintSet = serde_json::from_str(r#"["zgrab","masscan"]"#).unwrap();
        assert_eq!(f, FingerprintSet(Fingerprint::Masscan.bit()));
        let c: ClassSet = serde_json::from_str(r#"["tcp_syn","quic_initial"]"#).unwrap();
        assert_eq!(c, ClassSet(1 << PacketClass::TcpSyn as u8));
        // Not a list of names: still an error.
        assert!(serde_json::from_str::<FingerprintSet>(r#"[1]"#).is_err());
        assert!(serde_json::from_str::<ClassSet>(r#""tcp_syn""#).is_err());
        // The binary form: unknown bits are left out too.
        let b = postcard::to_stdvec(&(0x80u8 | Fingerprint::Nmap.bit())).unwrap();
        assert_eq!(
            postcard::from_bytes::<FingerprintSet>(&b).unwrap(),
            FingerprintSet(Fingerprint::Nmap.bit())
        );
    }
}
