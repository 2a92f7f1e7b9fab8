//! Packet classes and tool fingerprints from header fields alone.
//!
//! Classes follow CAIDA's backscatter definition (see [`PacketClass`]).
//! Fingerprint rules are evaluated per packet here; whether a *source* carries
//! a fingerprint (every TCP packet matched) is decided in `stats`.

use crate::record::{PacketRecord, FP_ELIGIBLE};
use darkscope_common::{Fingerprint, FingerprintSet, PacketClass, Proto};

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The class of a decoded packet.
pub fn class_of(r: &PacketRecord) -> PacketClass {
    match r.proto {
        Proto::Tcp => {
            let f = r.tcp_flags;
            if f & (SYN | ACK) == SYN {
                PacketClass::TcpSyn
            } else if f & (SYN | ACK) == SYN | ACK || f & RST != 0 {
                PacketClass::Backscatter
            } else {
                PacketClass::TcpOther
            }
        }
        Proto::Udp => PacketClass::Udp,
        Proto::Icmp => match r.dport {
            8 => PacketClass::IcmpEcho,
            0 | 3 | 4 | 5 | 11 | 12 | 14 | 16 | 18 => PacketClass::Backscatter,
            _ => PacketClass::IcmpOther,
        },
        Proto::Icmpv6 => match r.dport {
            128 => PacketClass::IcmpEcho,
            1..=4 | 129 => PacketClass::Backscatter,
            _ => PacketClass::IcmpOther,
        },
        Proto::Ip => PacketClass::Other,
    }
}

/// Nmap's SYN probe: window 1024 and a lone MSS 1460 option.
const NMAP_WINDOW: u16 = 1024;
const NMAP_OPTIONS: u32 = 0x0204_05b4;

/// Fingerprint rule matches of one packet, with [`FP_ELIGIBLE`] set for TCP.
/// The Mirai, ZMap and Masscan rules read IPv4 fields; over IPv6 only the
/// Nmap rule can match.
pub fn fingerprint_bits(r: &PacketRecord) -> u8 {
    if r.proto != Proto::Tcp {
        return 0;
    }
    let mut bits = FP_ELIGIBLE;
    if r.tcp_flags & (SYN | ACK) == SYN
        && r.tcp_window == NMAP_WINDOW
        && r.tcp_opts_len == 4
        && r.tcp_opts == NMAP_OPTIONS
    {
        bits |= Fingerprint::Nmap.bit();
    }
    let Some(dst) = r.dst.as_v4() else {
        return bits;
    };
    if r.seq == dst {
        bits |= Fingerprint::Mirai.bit();
    }
    if r.ip_id == 54321 {
        bits |= Fingerprint::Zmap.bit();
    }
    if r.ip_id == ((dst ^ r.dport as u32 ^ r.seq) & 0xffff) as u16 {
        bits |= Fingerprint::Masscan.bit();
    }
    bits
}

/// The fingerprints of a source from the AND of its TCP packets' rule bits.
/// Masscan after 1.3.2 sends the same window and MSS option as Nmap's SYN
/// scan, so a source whose every probe also has Masscan's IP ID relation (a
/// 16-bit match per packet, which Nmap's random IDs meet once in 65,536) is
/// Masscan, not Nmap. Over IPv6, where that relation does not exist, such a
/// Masscan looks like Nmap.
#[inline]
pub fn source_fingerprints(and_bits: u8) -> FingerprintSet {
    let mut bits = and_bits & FingerprintSet::all().0;
    if bits & Fingerprint::Masscan.bit() != 0 {
        bits &= !Fingerprint::Nmap.bit();
    }
    FingerprintSet(bits)
}

/// Sets `class` and `fp` on a decoded record.
#[inline]
pub fn classify(r: &mut PacketRecord) {
    r.class = class_of(r);
    r.fp = fingerprint_bits(r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::Addr;

    fn tcp(flags: u8) -> PacketRecord {
        PacketRecord {
            proto: Proto::Tcp,
            tcp_flags: flags,
            src: Addr::v4(0xc612_0102),
            dst: Addr::v4(0xc613_0001),
            ..Default::default()
        }
    }

    #[test]
    fn tcp_classes() {
        assert_eq!(class_of(&tcp(SYN)), PacketClass::TcpSyn);
        assert_eq!(class_of(&tcp(SYN | 0x40 | 0x80)), PacketClass::TcpSyn); // ECN SYN
        assert_eq!(class_of(&tcp(SYN | ACK)), PacketClass::Backscatter);
        assert_eq!(class_of(&tcp(RST)), PacketClass::Backscatter);
        assert_eq!(class_of(&tcp(RST | ACK)), PacketClass::Backscatter);
        assert_eq!(class_of(&tcp(ACK)), PacketClass::TcpOther);
        assert_eq!(class_of(&tcp(0)), PacketClass::TcpOther); // NULL scan
        assert_eq!(class_of(&tcp(0x29)), PacketClass::TcpOther); // Xmas
    }

    #[test]
    fn icmp_classes() {
        let icmp = |proto, t| PacketRecord {
            proto,
            dport: t,
            ..Default::default()
        };
        assert_eq!(class_of(&icmp(Proto::Icmp, 8)), PacketClass::IcmpEcho);
        assert_eq!(class_of(&icmp(Proto::Icmp, 0)), PacketClass::Backscatter);
        assert_eq!(class_of(&icmp(Proto::Icmp, 3)), PacketClass::Backscatter);
        assert_eq!(class_of(&icmp(Proto::Icmp, 13)), PacketClass::IcmpOther);
        assert_eq!(class_of(&icmp(Proto::Icmpv6, 128)), PacketClass::IcmpEcho);
        assert_eq!(
            class_of(&icmp(Proto::Icmpv6, 129)),
            PacketClass::Backscatter
        );
        assert_eq!(class_of(&icmp(Proto::Icmpv6, 1)), PacketClass::Backscatter);
        assert_eq!(class_of(&icmp(Proto::Icmpv6, 135)), PacketClass::IcmpOther);
        assert_eq!(class_of(&icmp(Proto::Ip, 47)), PacketClass::Other);
    }

    #[test]
    fn fingerprint_rules() {
        let mut r = tcp(SYN);
        r.seq = 0xc613_0001; // == dst: Mirai
        r.ip_id = 1;
        let b = fingerprint_bits(&r);
        assert!(b & FP_ELIGIBLE != 0);
        assert!(b & Fingerprint::Mirai.bit() != 0);
        assert!(b & Fingerprint::Zmap.bit() == 0);

        let mut z = tcp(SYN);
        z.ip_id = 54321;
        z.seq = 7;
        assert_eq!(fingerprint_bits(&z), FP_ELIGIBLE | Fingerprint::Zmap.bit());

        let mut m = tcp(SYN);
        m.dport = 445;
        m.seq = 0xdead_beef;
        m.ip_id = ((0xc613_0001u32 ^ 445 ^ 0xdead_beef) & 0xffff) as u16;
        assert_eq!(
            fingerprint_bits(&m),
            FP_ELIGIBLE | Fingerprint::Masscan.bit()
        );

        // IPv6 TCP is eligible, but only the Nmap rule can match; non-TCP
        // never is.
        let mut v6 = tcp(SYN);
        v6.dst = Addr::v6([0x20, 1, 0xd, 0xb8, 0xde, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(fingerprint_bits(&v6), FP_ELIGIBLE);
        let mut u = tcp(0);
        u.proto = Proto::Udp;
        assert_eq!(fingerprint_bits(&u), 0);
    }

    #[test]
    fn a_masscan_with_nmaps_window_and_mss_is_masscan() {
        // Masscan's template after 1.3.2: window 1024, MSS 1460, and its ID.
        let mut m = tcp(SYN);
        (m.dport, m.seq) = (445, 0xdead_beef);
        m.ip_id = ((0xc613_0001u32 ^ 445 ^ 0xdead_beef) & 0xffff) as u16;
        (m.tcp_window, m.tcp_opts_len, m.tcp_opts) = (1024, 4, 0x0204_05b4);
        let bits = fingerprint_bits(&m);
        assert_eq!(
            bits,
            FP_ELIGIBLE | Fingerprint::Masscan.bit() | Fingerprint::Nmap.bit()
        );
        assert_eq!(
            source_fingerprints(bits),
            FingerprintSet(Fingerprint::Masscan.bit())
        );
        // Nmap's probe: a random ID.
        m.ip_id ^= 0x5555;
        assert_eq!(
            source_fingerprints(fingerprint_bits(&m)),
            FingerprintSet(Fingerprint::Nmap.bit())
        );
        // Unknown bits (FP_ELIGIBLE) are never a fingerprint.
        assert_eq!(source_fingerprints(0xff).0 & FP_ELIGIBLE, 0);
    }

    #[test]
    fn nmap_rule_needs_window_1024_and_a_lone_mss_1460_on_a_syn() {
        let nmap = |flags, window, opts_len, opts| {
            let mut r = tcp(flags);
            r.seq = 0x1234_5678;
            r.ip_id = 0x4321;
            (r.tcp_window, r.tcp_opts_len, r.tcp_opts) = (window, opts_len, opts);
            fingerprint_bits(&r) & Fingerprint::Nmap.bit() != 0
        };
        assert!(nmap(SYN, 1024, 4, 0x0204_05b4));
        // With the ECN bits too.
        assert!(nmap(SYN | 0x40 | 0x80, 1024, 4, 0x0204_05b4));
        // Masscan 1.3.2: window 1024 and no options.
        assert!(!nmap(SYN, 1024, 0, 0));
        // Another MSS, another window, more options (an OS's SYN), no SYN.
        assert!(!nmap(SYN, 1024, 4, 0x0204_0218));
        assert!(!nmap(SYN, 2048, 4, 0x0204_05b4));
        assert!(!nmap(SYN, 1024, 8, 0x0204_05b4));
        assert!(!nmap(SYN | ACK, 1024, 4, 0x0204_05b4));
        assert!(!nmap(RST, 1024, 4, 0x0204_05b4));
        // Over IPv6 too.
        let mut v6 = tcp(SYN);
        v6.dst = Addr::v6([0x20, 1, 0xd, 0xb8, 0xde, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        (v6.tcp_window, v6.tcp_opts_len, v6.tcp_opts) = (1024, 4, 0x0204_05b4);
        assert_eq!(fingerprint_bits(&v6), FP_ELIGIBLE | Fingerprint::Nmap.bit());
    }
}
