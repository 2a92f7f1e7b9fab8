//! Frame bytes → [`PacketRecord`], with `etherparse` slices (no copies).
//!
//! Promises:
//! - [`decode`] never panics and never allocates, whatever the bytes: every
//!   length is checked by `etherparse` before a field is read, and the few
//!   fields read here by hand (SLL protocol, quoted ports) are read with
//!   `get`, not indexing.
//! - A frame is a [`Decoded::Packet`], [`Decoded::NonIp`] (well-formed, but no
//!   IP inside: ARP, LLDP...), or [`Decoded::Malformed`] with a reason.
//! - Link types: Ethernet (with 802.1Q / QinQ tags), Linux cooked capture v1
//!   and v2, raw IP, BSD loopback. Frames of any other link type are
//!   malformed with reason `unsupported_link`.
//! - IPv4 and IPv6 (extension headers skipped); TCP, UDP, ICMPv4, ICMPv6 and
//!   the header quoted inside ICMP errors. Non-first fragments and other IP
//!   protocols become records with [`Proto::Ip`] keyed by protocol number.
//! - Truncation by snaplen is tolerated (lax slicing): what the caplen holds
//!   is decoded; the IP length fields still give the packet's real size.

use crate::record::PacketRecord;
use darkscope_common::{Addr, Proto};
use etherparse::{
    err::Layer, EtherType, Icmpv4Slice, Icmpv6Slice, IpNumber, LaxIpPayloadSlice, LaxIpSlice,
    LaxIpv4Slice, LaxIpv6Slice, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};

/// Link-layer types the decoder understands (libpcap `LINKTYPE_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1).
    Ethernet,
    /// `LINKTYPE_LINUX_SLL` (113): 16-byte cooked header, e.g. `tcpdump -i any`.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): 20-byte cooked header.
    LinuxSll2,
    /// `LINKTYPE_RAW` (101; also DLT 12 and 14), `LINKTYPE_IPV4` (228), `LINKTYPE_IPV6` (229).
    RawIp,
    /// `LINKTYPE_NULL` (0) and `LINKTYPE_LOOP` (108): 4-byte family header.
    Null,
    /// Anything else: every frame counts as malformed (`unsupported_link`).
    Unsupported(i32),
}

impl LinkType {
    /// Maps a libpcap link-type number.
    pub fn from_dlt(dlt: i32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            12 | 14 | 101 | 228 | 229 => LinkType::RawIp,
            0 | 108 => LinkType::Null,
            other => LinkType::Unsupported(other),
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Link header (Ethernet, VLAN tag, cooked header) cut short.
    TruncatedLink,
    /// The capture's link type is not supported.
    UnsupportedLink,
    /// IPv4/IPv6 header invalid or cut short.
    BadIp,
    /// An IPv6 extension header (or IPv4 AH) invalid or cut short.
    BadIpExtension,
    /// TCP, UDP or ICMP header cut short.
    TruncatedTransport,
}

impl Malformed {
    /// Every reason, in index order.
    pub const ALL: [Malformed; 5] = [
        Malformed::TruncatedLink,
        Malformed::UnsupportedLink,
        Malformed::BadIp,
        Malformed::BadIpExtension,
        Malformed::TruncatedTransport,
    ];

    /// Index in [`Malformed::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason's name in summaries and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::TruncatedLink => "truncated_link",
            Malformed::UnsupportedLink => "unsupported_link",
            Malformed::BadIp => "bad_ip",
            Malformed::BadIpExtension => "bad_ip_extension",
            Malformed::TruncatedTransport => "truncated_transport",
        }
    }
}

/// What a frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An IP packet (timestamp and class not yet set).
    Packet(PacketRecord),
    /// A well-formed frame without IP.
    NonIp,
    /// A frame that could not be decoded.
    Malformed(Malformed),
}

/// What a frame turned out to be, its record (if IP) written elsewhere
/// (see [`decode_into`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An IP packet.
    Packet,
    /// A well-formed frame without IP.
    NonIp,
    /// A frame that could not be decoded.
    Malformed(Malformed),
}

/// Decodes one frame of link type `link`.
pub fn decode(link: LinkType, frame: &[u8]) -> Decoded {
    let mut r = PacketRecord::default();
    let kind = decode_into(link, frame, &mut r);
    Decoded::new(kind, r)
}

impl Decoded {
    /// The answer for a frame of `kind` whose record is `r`.
    fn new(kind: Kind, r: PacketRecord) -> Decoded {
        match kind {
            Kind::Packet => Decoded::Packet(r),
            Kind::NonIp => Decoded::NonIp,
            Kind::Malformed(m) => Decoded::Malformed(m),
        }
    }
}

/// [`decode`] writing the record into `r` (all of it, timestamp and class
/// left at their defaults, when the answer is [`Kind::Packet`]): the
/// capture loop's hot path, which moves no record by value.
pub fn decode_into(link: LinkType, frame: &[u8], r: &mut PacketRecord) -> Kind {
    if link == LinkType::Ethernet {
        if let Some(k) = fast_ethernet(frame, r) {
            return k;
        }
    }
    slow(link, frame, r)
}

/// The common case without building a whole `LaxSlicedPacket` (a large
/// struct etherparse moves by value from layer to layer, which was about a
/// quarter of the capture thread's time): Ethernet II, at most two VLAN tags, then
/// an IP header whose extension headers are sound. Anything else (`None`)
/// takes the general path; both give the same answer (tested frame by frame).
fn fast_ethernet(frame: &[u8], r: &mut PacketRecord) -> Option<Kind> {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut et = EtherType(be16(12)?);
    let mut at = 14;
    for _ in 0..2 {
        if matches!(
            et,
            EtherType::VLAN_TAGGED_FRAME
                | EtherType::PROVIDER_BRIDGING
                | EtherType::VLAN_DOUBLE_TAGGED_FRAME
        ) {
            et = EtherType(be16(at + 2)?);
            at += 4;
        }
    }
    if et != EtherType::IPV4 && et != EtherType::IPV6 {
        return None;
    }
    let (ip, stop) = LaxIpSlice::from_slice(frame.get(at..)?).ok()?;
    if stop.is_some() {
        return None;
    }
    let payload = match &ip {
        LaxIpSlice::Ipv4(ip) => ipv4(ip, r),
        LaxIpSlice::Ipv6(ip) => ipv6(ip, r),
    };
    Some(match payload {
        Some(payload) => transport_from_payload(r, payload),
        None => Kind::Packet,
    })
}

/// The general path: etherparse's lax slicing of the whole frame.
fn slow(link: LinkType, frame: &[u8], r: &mut PacketRecord) -> Kind {
    let sliced = match link {
        LinkType::Ethernet => match LaxSlicedPacket::from_ethernet(frame) {
            Ok(p) => p,
            Err(_) => return Kind::Malformed(Malformed::TruncatedLink),
        },
        LinkType::LinuxSll | LinkType::LinuxSll2 => {
            // Protocol (an EtherType) sits at bytes 14..16 of SLL and 0..2 of SLL2.
            let (proto_at, header) = if link == LinkType::LinuxSll {
                (14, 16)
            } else {
                (0, 20)
            };
            let (Some(p), Some(rest)) = (frame.get(proto_at..proto_at + 2), frame.get(header..))
            else {
                return Kind::Malformed(Malformed::TruncatedLink);
            };
            let et = EtherType(u16::from_be_bytes([p[0], p[1]]));
            LaxSlicedPacket::from_ether_type(et, rest)
        }
        LinkType::RawIp => from_ip(frame),
        LinkType::Null => match frame.get(4..) {
            Some(rest) => from_ip(rest),
            None => return Kind::Malformed(Malformed::TruncatedLink),
        },
        LinkType::Unsupported(_) => return Kind::Malformed(Malformed::UnsupportedLink),
    };
    from_sliced(&sliced, r)
}

fn from_ip(bytes: &[u8]) -> LaxSlicedPacket<'_> {
    match LaxSlicedPacket::from_ip(bytes) {
        Ok(p) => p,
        // An empty result with an IP-layer stop error: `from_sliced` reports BadIp.
        Err(_) => LaxSlicedPacket {
            link: None,
            link_exts: Default::default(),
            net: None,
            transport: None,
            stop_err: Some((
                etherparse::err::packet::SliceError::Len(etherparse::err::LenError {
                    required_len: 20,
                    len: bytes.len(),
                    len_source: etherparse::LenSource::Slice,
                    layer: Layer::IpHeader,
                    layer_start_offset: 0,
                }),
                Layer::IpHeader,
            )),
        },
    }
}

fn is_link_layer(l: Layer) -> bool {
    matches!(
        l,
        Layer::LinuxSllHeader
            | Layer::Ethernet2Header
            | Layer::EtherPayload
            | Layer::VlanHeader
            | Layer::MacsecHeader
            | Layer::MacsecPacket
    )
}

fn is_ext_layer(l: Layer) -> bool {
    matches!(
        l,
        Layer::IpAuthHeader
            | Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader
    )
}

fn from_sliced(p: &LaxSlicedPacket<'_>, r: &mut PacketRecord) -> Kind {
    let stop = p.stop_err.as_ref().map(|(_, layer)| *layer);
    let payload = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => ipv4(ip, r),
        Some(LaxNetSlice::Ipv6(ip)) => ipv6(ip, r),
        Some(LaxNetSlice::Arp(_)) => return Kind::NonIp,
        None => {
            return match stop {
                Some(l) if is_link_layer(l) => Kind::Malformed(Malformed::TruncatedLink),
                Some(_) => Kind::Malformed(Malformed::BadIp),
                None => Kind::NonIp,
            }
        }
    };
    let Some(payload) = payload else {
        return Kind::Packet;
    };
    if let Some(l) = stop {
        if is_ext_layer(l) {
            return Kind::Malformed(Malformed::BadIpExtension);
        }
    }
    match &p.transport {
        Some(t) => transport(r, t),
        // IPv4 first fragments: lax slicing stops at fragments, the header is there.
        None => transport_from_payload(r, payload),
    }
}

/// Writes the record's IPv4 fields (all others reset) and returns the
/// payload to decode further, or nothing for a non-first fragment (the
/// record is then complete).
fn ipv4<'a>(ip: &'a LaxIpv4Slice<'_>, r: &mut PacketRecord) -> Option<&'a LaxIpPayloadSlice<'a>> {
    let h = ip.header();
    *r = PacketRecord {
        src: Addr::v4(u32::from_be_bytes(h.source())),
        dst: Addr::v4(u32::from_be_bytes(h.destination())),
        ip_len: h.total_len() as u32,
        ip_id: h.identification(),
        ttl: h.ttl(),
        ..Default::default()
    };
    if ip.is_payload_fragmented() && h.fragments_offset().value() != 0 {
        other_proto(r, h.protocol());
        return None;
    }
    Some(ip.payload())
}

/// [`ipv4`] for IPv6.
fn ipv6<'a>(ip: &'a LaxIpv6Slice<'_>, r: &mut PacketRecord) -> Option<&'a LaxIpPayloadSlice<'a>> {
    let h = ip.header();
    *r = PacketRecord {
        src: Addr::v6(h.source()),
        dst: Addr::v6(h.destination()),
        ip_len: h.payload_length() as u32 + 40,
        ttl: h.hop_limit(),
        ..Default::default()
    };
    if ip.is_payload_fragmented() {
        other_proto(r, ip.payload().ip_number);
        return None;
    }
    Some(ip.payload())
}

fn other_proto(r: &mut PacketRecord, n: IpNumber) {
    r.proto = Proto::Ip;
    r.dport = n.0 as u16;
}

fn transport_from_payload(r: &mut PacketRecord, payload: &LaxIpPayloadSlice<'_>) -> Kind {
    let bytes = payload.payload;
    let t = match payload.ip_number {
        IpNumber::TCP => TcpSlice::from_slice(bytes).ok().map(TransportSlice::Tcp),
        IpNumber::UDP => UdpSlice::from_slice_lax(bytes)
            .ok()
            .map(TransportSlice::Udp),
        IpNumber::ICMP => Icmpv4Slice::from_slice(bytes)
            .ok()
            .map(TransportSlice::Icmpv4),
        IpNumber::IPV6_ICMP => Icmpv6Slice::from_slice(bytes)
            .ok()
            .map(TransportSlice::Icmpv6),
        n => {
            other_proto(r, n);
            return Kind::Packet;
        }
    };
    match t {
        Some(t) => transport(r, &t),
        None => Kind::Malformed(Malformed::TruncatedTransport),
    }
}

fn transport(r: &mut PacketRecord, t: &TransportSlice<'_>) -> Kind {
    match t {
        TransportSlice::Tcp(tcp) => {
            r.proto = Proto::Tcp;
            r.sport = tcp.source_port();
            r.dport = tcp.destination_port();
            r.seq = tcp.sequence_number();
            r.tcp_flags = tcp.header_slice().get(13).copied().unwrap_or(0);
            r.tcp_window = tcp.window_size();
            let opts = tcp.options();
            r.tcp_opts_len = opts.len() as u8;
            let mut head = [0u8; 4];
            let n = opts.len().min(4);
            head[..n].copy_from_slice(&opts[..n]);
            r.tcp_opts = u32::from_be_bytes(head);
        }
        TransportSlice::Udp(udp) => {
            r.proto = Proto::Udp;
            r.sport = udp.source_port();
            r.dport = udp.destination_port();
        }
        TransportSlice::Icmpv4(icmp) => {
            r.proto = Proto::Icmp;
            r.dport = icmp.type_u8() as u16;
            r.icmp_code = icmp.code_u8();
            if matches!(icmp.type_u8(), 3 | 4 | 5 | 11 | 12) {
                quoted(r, icmp.payload());
            }
        }
        TransportSlice::Icmpv6(icmp) => {
            r.proto = Proto::Icmpv6;
            r.dport = icmp.type_u8() as u16;
            r.icmp_code = icmp.code_u8();
            if (1..=4).contains(&icmp.type_u8()) {
                quoted(r, icmp.payload());
            }
        }
        TransportSlice::Igmp(_) => other_proto(r, IpNumber::IGMP),
    }
    Kind::Packet
}

/// Reads the protocol and destination port of the packet quoted in an ICMP
/// error. RFC 792 guarantees only 8 bytes past the quoted IP header, which is
/// enough for TCP and UDP ports but not a whole TCP header, so the ports are
/// read directly.
fn quoted(r: &mut PacketRecord, bytes: &[u8]) {
    let Ok(q) = LaxSlicedPacket::from_ip(bytes) else {
        return;
    };
    let Some(p) = q.net.as_ref().and_then(|n| n.ip_payload_ref()) else {
        return;
    };
    r.quoted_proto = p.ip_number.0;
    if matches!(p.ip_number, IpNumber::TCP | IpNumber::UDP) {
        if let Some(b) = p.payload.get(2..4) {
            r.quoted_dport = u16::from_be_bytes([b[0], b[1]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    /// A scanner and a darknet address (2001:db8:dead::/48) over IPv6.
    const V6_SCANNER: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DARK: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0xde, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

    fn eth_tcp_syn(seq: u32) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([198, 18, 1, 2], [198, 19, 0, 7], 255)
            .tcp(40000, 445, seq, 1024)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn packet(d: Decoded) -> PacketRecord {
        match d {
            Decoded::Packet(r) => r,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn ethernet_ipv4_tcp_syn() {
        let r = packet(decode(LinkType::Ethernet, &eth_tcp_syn(0xc613_0007)));
        assert_eq!(r.src.to_string(), "198.18.1.2");
        assert_eq!(r.dst.to_string(), "198.19.0.7");
        assert_eq!((r.proto, r.sport, r.dport), (Proto::Tcp, 40000, 445));
        assert_eq!(r.tcp_flags, 0x02);
        assert_eq!(r.seq, 0xc613_0007);
        assert_eq!(r.ttl, 255);
        assert_eq!(r.ip_len, 40);
        assert_eq!((r.tcp_window, r.tcp_opts_len, r.tcp_opts), (1024, 0, 0));
    }

    #[test]
    fn tcp_window_and_the_first_option_bytes() {
        use etherparse::TcpOptionElement::{MaximumSegmentSize, SelectiveAcknowledgementPermitted};
        let frame = |opts: &[etherparse::TcpOptionElement]| {
            let b = PacketBuilder::ethernet2(MAC, MAC)
                .ipv6(V6_SCANNER, V6_DARK, 64)
                .tcp(40000, 22, 1, 1024)
                .syn()
                .options(opts)
                .unwrap();
            let mut v = Vec::new();
            b.write(&mut v, &[]).unwrap();
            packet(decode(LinkType::Ethernet, &v))
        };
        let r = frame(&[MaximumSegmentSize(1460)]);
        assert_eq!(
            (r.tcp_window, r.tcp_opts_len, r.tcp_opts),
            (1024, 4, 0x0204_05b4)
        );
        // Longer options: their length, and their first four bytes.
        let r = frame(&[MaximumSegmentSize(1460), SelectiveAcknowledgementPermitted]);
        assert_eq!((r.tcp_opts_len, r.tcp_opts), (8, 0x0204_05b4));
        // SACK permitted (2 bytes), padded with end-of-list bytes.
        let r = frame(&[SelectiveAcknowledgementPermitted]);
        assert_eq!((r.tcp_opts_len, r.tcp_opts), (4, 0x0402_0000));
    }

    #[test]
    fn vlan_and_qinq() {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([1, 2, 3, 4], [198, 19, 1, 1], 64)
            .udp(5353, 53)
            .write(&mut v, &[0; 12])
            .unwrap();
        let r = packet(decode(LinkType::Ethernet, &v));
        assert_eq!((r.proto, r.dport), (Proto::Udp, 53));

        let mut q = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .double_vlan(
                etherparse::VlanId::try_new(100).unwrap(),
                etherparse::VlanId::try_new(200).unwrap(),
            )
            .ipv6(V6_SCANNER, V6_DARK, 64)
            .tcp(1, 22, 0, 1024)
            .syn()
            .write(&mut q, &[])
            .unwrap();
        let r = packet(decode(LinkType::Ethernet, &q));
        assert_eq!(r.dst.to_string(), "2001:db8:dead::9");
        assert_eq!((r.proto, r.dport, r.ip_len), (Proto::Tcp, 22, 60));
    }

    #[test]
    fn linux_sll_and_sll2_and_raw_and_null() {
        let eth = eth_tcp_syn(1);
        let ip = &eth[14..];
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(ip);
        assert_eq!(packet(decode(LinkType::LinuxSll, &sll)).dport, 445);

        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&0x0800u16.to_be_bytes());
        sll2.extend_from_slice(ip);
        assert_eq!(packet(decode(LinkType::LinuxSll2, &sll2)).dport, 445);

        assert_eq!(packet(decode(LinkType::RawIp, ip)).dport, 445);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        assert_eq!(packet(decode(LinkType::Null, &null)).dport, 445);
        assert_eq!(LinkType::from_dlt(113), LinkType::LinuxSll);
        assert_eq!(LinkType::from_dlt(101), LinkType::RawIp);
    }

    #[test]
    fn icmp_error_quotes_the_original_header() {
        // A port-unreachable from a victim, quoting a UDP packet sent to it
        // from a (spoofed) darknet address.
        let mut inner = Vec::new();
        PacketBuilder::ipv4([198, 19, 3, 3], [203, 0, 113, 5], 64)
            .udp(1234, 27015)
            .write(&mut inner, &[])
            .unwrap();
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([203, 0, 113, 5], [198, 19, 3, 3], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut v, &inner)
            .unwrap();
        let r = packet(decode(LinkType::Ethernet, &v));
        assert_eq!((r.proto, r.dport, r.icmp_code), (Proto::Icmp, 3, 3));
        assert_eq!((r.quoted_proto, r.quoted_dport), (17, 27015));
    }

    #[test]
    fn arp_is_non_ip() {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0; 20]);
        assert_eq!(decode(LinkType::Ethernet, &f), Decoded::NonIp);
    }

    #[test]
    fn broken_frames_are_counted_by_reason() {
        let eth = eth_tcp_syn(1);
        assert_eq!(
            decode(LinkType::Ethernet, &eth[..10]),
            Decoded::Malformed(Malformed::TruncatedLink)
        );
        assert_eq!(
            decode(LinkType::Ethernet, &eth[..14 + 12]),
            Decoded::Malformed(Malformed::BadIp)
        );
        assert_eq!(
            decode(LinkType::Ethernet, &eth[..14 + 20 + 10]),
            Decoded::Malformed(Malformed::TruncatedTransport)
        );
        let mut bad_version = eth.clone();
        bad_version[14] = 0x75;
        assert_eq!(
            decode(LinkType::Ethernet, &bad_version),
            Decoded::Malformed(Malformed::BadIp)
        );
        let mut bad_ihl = eth.clone();
        bad_ihl[14] = 0x42;
        assert_eq!(
            decode(LinkType::Ethernet, &bad_ihl),
            Decoded::Malformed(Malformed::BadIp)
        );
        assert_eq!(
            decode(LinkType::Unsupported(147), &eth),
            Decoded::Malformed(Malformed::UnsupportedLink)
        );
        assert_eq!(
            decode(LinkType::LinuxSll, &[0; 15]),
            Decoded::Malformed(Malformed::TruncatedLink)
        );
        assert_eq!(
            decode(LinkType::RawIp, &[]),
            Decoded::Malformed(Malformed::BadIp)
        );
        assert_eq!(
            decode(LinkType::Null, &[2, 0]),
            Decoded::Malformed(Malformed::TruncatedLink)
        );
    }

    #[test]
    fn snaplen_truncated_packet_still_decodes() {
        // 60-byte snaplen cuts the payload, not the headers: lax slicing keeps it.
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([1, 1, 1, 1], [198, 19, 0, 1], 64)
            .udp(1, 161)
            .write(&mut v, &[7; 400])
            .unwrap();
        let r = packet(decode(LinkType::Ethernet, &v[..60]));
        assert_eq!((r.proto, r.dport, r.ip_len), (Proto::Udp, 161, 428));
    }

    #[test]
    fn non_first_fragment_is_keyed_by_protocol() {
        let mut v = eth_tcp_syn(1);
        // Fragment offset 185 (×8 bytes), MF clear; fix nothing else: lax slicing
        // does not verify the checksum.
        v[14 + 6] = 0x00;
        v[14 + 7] = 185;
        let r = packet(decode(LinkType::Ethernet, &v));
        assert_eq!((r.proto, r.dport), (Proto::Ip, 6));
    }

    /// Frames of every capture in testdata/ and of a generated IBR-like
    /// file (VLAN, QinQ, IPv6, GRE, ARP, truncated frames).
    fn sample_frames() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let generated = dir.path().join("ibr.pcap");
        let cfg = darkscope_benches::gen::GenConfig {
            packets: 20_000,
            sources: 2_000,
            truth: false,
            ..Default::default()
        };
        darkscope_benches::gen::generate(&cfg, &generated).unwrap();
        let mut files = vec![generated];
        for e in std::fs::read_dir("../testdata/realscan").unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "pcap") {
                files.push(p);
            }
        }
        let mut frames = Vec::new();
        for f in files {
            let mut cap = pcap::Capture::from_file(&f).unwrap();
            assert_eq!(
                cap.get_datalink(),
                pcap::Linktype::ETHERNET,
                "{}",
                f.display()
            );
            while let Ok(p) = cap.next_packet() {
                frames.push(p.data.to_vec());
            }
        }
        frames
    }

    /// The fast path's answer, decoded into a record left over from another
    /// frame (every field set): a packet's record must be all new.
    fn fast(f: &[u8]) -> Option<Decoded> {
        let mut r = PacketRecord {
            ts: 1,
            src: Addr::v4(2),
            dst: Addr::v4(3),
            src_hash: 4,
            ip_len: 5,
            seq: 6,
            sport: 7,
            dport: 8,
            ip_id: 9,
            quoted_dport: 10,
            proto: Proto::Icmpv6,
            tcp_flags: 11,
            tcp_window: 16,
            tcp_opts_len: 17,
            tcp_opts: 18,
            ttl: 12,
            icmp_code: 13,
            quoted_proto: 14,
            class: darkscope_common::PacketClass::Other,
            fp: 15,
        };
        fast_ethernet(f, &mut r).map(|k| Decoded::new(k, r))
    }

    fn general(f: &[u8]) -> Decoded {
        let mut r = PacketRecord::default();
        let k = slow(LinkType::Ethernet, f, &mut r);
        Decoded::new(k, r)
    }

    /// The fast path answers like the general one for every frame it takes,
    /// whole or cut at any length or with any byte changed, and it takes
    /// the common frames.
    #[test]
    fn fast_path_decodes_like_the_general_path() {
        let frames = sample_frames();
        let mut taken = 0;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rng = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for f in &frames {
            if let Some(fast) = fast(f) {
                taken += 1;
                assert_eq!(fast, general(f), "{f:02x?}");
            }
            let mut cut = f.clone();
            cut.truncate(rng() as usize % (f.len() + 1));
            let mut flipped = f.clone();
            if !flipped.is_empty() {
                let at = rng() as usize % flipped.len();
                flipped[at] ^= 1 << (rng() % 8);
            }
            for g in [cut, flipped] {
                if let Some(fast) = fast(&g) {
                    assert_eq!(fast, general(&g), "{g:02x?}");
                }
            }
        }
        assert!(
            taken * 10 > frames.len() * 9,
            "the fast path took {taken} of {} frames",
            frames.len()
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..400usize {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            // Make some of them look like IPv4/IPv6 so deeper layers get exercised.
            if len > 14 {
                buf[12] = 0x08;
                buf[13] = if len % 2 == 0 { 0x00 } else { 0xdd };
                buf[14] = if len % 2 == 0 { 0x45 } else { 0x60 };
            }
            for link in [
                LinkType::Ethernet,
                LinkType::LinuxSll,
                LinkType::RawIp,
                LinkType::Null,
            ] {
                let _ = decode(link, &buf);
            }
        }
    }
}
