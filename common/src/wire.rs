//! The summary a sensor sends per window: one JSON document, `schema` 1.
//!
//! The idempotency key is `(sensor.id, window.start)`: an aggregator stores a
//! retried upload once. Distinct counts in `ports[]` and `totals` are exact
//! unless `truncation.exact` is false; the `*_hll` sketches let the
//! aggregator merge distinct sources across sensors and windows.

use crate::class::{ClassSet, Fingerprint, FingerprintSet, Member, PacketClass, Proto};
use crate::hll::Hll;
use crate::time::{Timestamp, TimestampFormatter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The schema version this build writes and accepts.
pub const SCHEMA: u32 = 1;

/// One sensor's observations over one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Wire schema version ([`SCHEMA`]).
    pub schema: u32,
    /// Who observed.
    pub sensor: SensorInfo,
    /// When: `[start, end)`.
    pub window: Window,
    /// Capture health over the window.
    pub capture: CaptureHealth,
    /// Darknet packets per class.
    pub classes: ClassTotals,
    /// Number of sources carrying each fingerprint in this window.
    pub fingerprints: FingerprintCounts,
    /// Darknet packet, byte and distinct-source totals.
    pub totals: Totals,
    /// How far the bounded tables had to fall back to sketches.
    pub truncation: Truncation,
    /// One row per (protocol, destination port / ICMP type), most packets first.
    pub ports: Vec<PortRow>,
    /// One row per tracked source, most packets first.
    pub sources: Vec<SourceRow>,
}

impl Summary {
    /// The idempotency key: sensor id and window start.
    pub fn key(&self) -> (&str, Timestamp) {
        (&self.sensor.id, self.window.start)
    }
}

/// The sensor's identity as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorInfo {
    /// Sensor id (unique per aggregator).
    pub id: String,
    /// ISO 3166-1 alpha-2 country of the monitored blocks.
    pub country: String,
    /// Monitored prefixes.
    pub darknet: Vec<String>,
    /// Number of monitored IPv4 addresses.
    pub monitored_ipv4: u64,
}

/// A half-open time window `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

/// Capture health counters for one window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHealth {
    /// Frames read from libpcap (live: libpcap's received count).
    pub received: u64,
    /// Dropped by the kernel because the buffer was full (live only).
    pub kernel_dropped: u64,
    /// Dropped by the interface or driver (live only).
    pub if_dropped: u64,
    /// Dropped by the sensor's own pipeline because a queue was full (live only).
    pub pipeline_dropped: u64,
    /// Frames that could not be decoded, by reason.
    pub malformed: BTreeMap<String, u64>,
    /// Well-formed frames that carry no IP packet (ARP, LLDP, ...).
    pub non_ip: u64,
    /// IP packets whose destination is outside the darknet.
    pub not_darknet: u64,
    /// Darknet packets from excluded sources (known research scanners), left
    /// out of every statistic.
    #[serde(default)]
    pub excluded: u64,
    /// Summaries the sensor's spool evicted (oldest first) since the last summary.
    #[serde(default)]
    pub spool_evicted: u64,
}

/// Darknet packets per [`PacketClass`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // field names are the class names, documented on PacketClass
pub struct ClassTotals {
    pub tcp_syn: u64,
    pub backscatter: u64,
    pub udp: u64,
    pub icmp_echo: u64,
    pub icmp_other: u64,
    pub tcp_other: u64,
    pub other: u64,
}

impl ClassTotals {
    /// From counts indexed by [`PacketClass::index`].
    pub fn from_array(a: [u64; PacketClass::COUNT]) -> ClassTotals {
        ClassTotals {
            tcp_syn: a[0],
            backscatter: a[1],
            udp: a[2],
            icmp_echo: a[3],
            icmp_other: a[4],
            tcp_other: a[5],
            other: a[6],
        }
    }

    /// Counts indexed by [`PacketClass::index`].
    pub fn to_array(&self) -> [u64; PacketClass::COUNT] {
        [
            self.tcp_syn,
            self.backscatter,
            self.udp,
            self.icmp_echo,
            self.icmp_other,
            self.tcp_other,
            self.other,
        ]
    }

    /// Sum over classes.
    pub fn total(&self) -> u64 {
        self.to_array().iter().sum()
    }
}

/// Number of sources that carry each fingerprint in the window, indexed by
/// [`Fingerprint`]. JSON: an object with a count per fingerprint name (a
/// name this version does not know is left out on reading, a missing one
/// is 0). Binary form: the counts as a list in bit order (a reader keeps
/// the ones it knows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FingerprintCounts(pub [u64; Fingerprint::COUNT]);

impl std::ops::Index<Fingerprint> for FingerprintCounts {
    type Output = u64;
    fn index(&self, f: Fingerprint) -> &u64 {
        &self.0[f as usize]
    }
}

impl std::ops::IndexMut<Fingerprint> for FingerprintCounts {
    fn index_mut(&mut self, f: Fingerprint) -> &mut u64 {
        &mut self.0[f as usize]
    }
}

impl Serialize for FingerprintCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_map(Fingerprint::ALL.iter().map(|f| (f.as_str(), self[*f])))
        } else {
            s.collect_seq(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for FingerprintCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FingerprintCounts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count per fingerprint")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<FingerprintCounts, A::Error> {
                let mut c = FingerprintCounts::default();
                while let Some(name) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match <Fingerprint as Member>::named(&name) {
                        Some(f) => c[f] = m.next_value()?,
                        None => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(c)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FingerprintCounts, A::Error> {
                // Every element is read, so what follows stays in place.
                let mut c = FingerprintCounts::default();
                let mut i = 0;
                while let Some(n) = seq.next_element::<u64>()? {
                    if let Some(slot) = c.0.get_mut(i) {
                        *slot = n;
                    }
                    i += 1;
                }
                Ok(c)
            }
        }
        if d.is_human_readable() {
            d.deserialize_map(V)
        } else {
            d.deserialize_seq(V)
        }
    }
}

/// Darknet totals for the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Darknet packets.
    pub packets: u64,
    /// Darknet bytes (IP length).
    pub bytes: u64,
    /// Distinct source addresses (exact unless `truncation.exact` is false).
    pub sources: u64,
    /// Sketch of all sources, for merging across sensors and windows.
    pub sources_hll: Hll,
}

/// What the bounded tables did in this window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Truncation {
    /// True when every distinct count in this summary is exact.
    pub exact: bool,
    /// The configured cap on tracked sources.
    pub source_cap: u64,
    /// Estimated distinct sources that arrived after the cap was reached and got no row.
    pub sources_untracked: u64,
    /// Packets from those sources (exact; they are in every total).
    pub packets_untracked: u64,
    /// The heaviest untracked sources (space-saving): `packets` overcounts by at most `error`.
    pub heavy: Vec<HeavySource>,
}

/// A heavy hitter among untracked sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeavySource {
    /// Source address.
    pub ip: IpAddr,
    /// Upper bound of its packets.
    pub packets: u64,
    /// `packets - error` is a lower bound.
    pub error: u64,
}

/// Traffic to one (protocol, port) in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortRow {
    /// Protocol.
    pub proto: Proto,
    /// Destination port, ICMP type, or IP protocol number (see [`Proto`]).
    pub port: u16,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP length).
    pub bytes: u64,
    /// Distinct source addresses.
    pub sources: u64,
    /// Distinct darknet destination addresses.
    pub destinations: u64,
    /// Sketch of the sources, for merging distinct counts.
    pub sources_hll: Hll,
}

/// A (protocol, port) and a packet count, for a source's top ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCount {
    /// Protocol.
    pub proto: Proto,
    /// Port (see [`PortRow::port`]).
    pub port: u16,
    /// Packets this source sent there.
    pub packets: u64,
}

impl PortCount {
    /// The `n` busiest ports of a per-port packet tally, busiest first (ties
    /// by protocol, then port, so the order is stable).
    pub fn busiest(
        tally: impl IntoIterator<Item = ((Proto, u16), u64)>,
        n: usize,
    ) -> Vec<PortCount> {
        let mut v: Vec<PortCount> = tally
            .into_iter()
            .map(|((proto, port), packets)| PortCount {
                proto,
                port,
                packets,
            })
            .collect();
        v.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then(a.proto.cmp(&b.proto))
                .then(a.port.cmp(&b.port))
        });
        v.truncate(n);
        v
    }
}

/// A source's busiest ports, busiest first: a fixed array, so a source row
/// costs no allocation. On the wire, a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopPorts {
    len: u8,
    items: [PortCount; TopPorts::CAP],
}

impl TopPorts {
    /// Most ports kept.
    pub const CAP: usize = 5;

    /// Appends `p` if there is room; false otherwise.
    pub fn push(&mut self, p: PortCount) -> bool {
        if (self.len as usize) < Self::CAP {
            self.items[self.len as usize] = p;
            self.len += 1;
            true
        } else {
            false
        }
    }
}

impl std::ops::Deref for TopPorts {
    type Target = [PortCount];
    fn deref(&self) -> &[PortCount] {
        &self.items[..self.len as usize]
    }
}

impl Serialize for TopPorts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for TopPorts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopPorts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of at most 5 ports")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TopPorts, A::Error> {
                let mut t = TopPorts::default();
                while let Some(p) = seq.next_element::<PortCount>()? {
                    if !t.push(p) {
                        return Err(serde::de::Error::custom("top_ports lists at most 5 ports"));
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_seq(V)
    }
}

/// What one source did in the window.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SourceRow {
    /// Source address.
    pub ip: IpAddr,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP length).
    pub bytes: u64,
    /// Distinct (protocol, port) pairs it sent to.
    pub ports: u64,
    /// Distinct darknet addresses it sent to.
    pub destinations: u64,
    /// Its busiest ports (at most [`TopPorts::CAP`]).
    pub top_ports: TopPorts,
    /// Classes of its packets.
    pub classes: ClassSet,
    /// Fingerprints it carries (every IPv4 TCP packet matched); omitted
    /// from JSON when none.
    #[serde(default)]
    pub fingerprints: FingerprintSet,
    /// First packet time.
    pub first_seen: Timestamp,
    /// Last packet time.
    pub last_seen: Timestamp,
}

/// Field by field; JSON leaves out an empty fingerprint list, the binary
/// form (fields by position) always has it.
impl Serialize for SourceRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let fingerprints = !s.is_human_readable() || !self.fingerprints.is_empty();
        let mut st = s.serialize_struct("SourceRow", 9 + usize::from(fingerprints))?;
        st.serialize_field("ip", &self.ip)?;
        st.serialize_field("packets", &self.packets)?;
        st.serialize_field("bytes", &self.bytes)?;
        st.serialize_field("ports", &self.ports)?;
        st.serialize_field("destinations", &self.destinations)?;
        st.serialize_field("top_ports", &self.top_ports)?;
        st.serialize_field("classes", &self.classes)?;
        if fingerprints {
            st.serialize_field("fingerprints", &self.fingerprints)?;
        } else {
            st.skip_field("fingerprints")?;
        }
        st.serialize_field("first_seen", &self.first_seen)?;
        st.serialize_field("last_seen", &self.last_seen)?;
        st.end()
    }
}

impl SourceRow {
    /// Appends the row's JSON, byte for byte what `serde_json` writes
    /// (checked by a property test), several times faster: a busy window
    /// has hundreds of thousands of rows and they are most of its bytes.
    /// `ts` formats its timestamps (it remembers the last minute written).
    fn write_json(&self, l: &mut Chunk, ts: &mut TimestampFormatter) {
        l.put(b"{\"ip\":\"");
        match self.ip {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        l.byte(b'.');
                    }
                    l.num(o as u64);
                }
            }
            IpAddr::V6(a) => {
                use std::fmt::Write;
                let _ = write!(l, "{a}");
            }
        }
        l.field(b"\",\"packets\":", self.packets);
        l.field(b",\"bytes\":", self.bytes);
        l.field(b",\"ports\":", self.ports);
        l.field(b",\"destinations\":", self.destinations);
        l.put(b",\"top_ports\":[");
        for (i, p) in self.top_ports.iter().enumerate() {
            if i > 0 {
                l.byte(b',');
            }
            l.put(b"{\"proto\":\"");
            l.put(p.proto.as_str().as_bytes());
            l.field(b"\",\"port\":", p.port as u64);
            l.field(b",\"packets\":", p.packets);
            l.byte(b'}');
        }
        l.put(b"],\"classes\":");
        l.names(self.classes.iter().map(PacketClass::as_str));
        if !self.fingerprints.is_empty() {
            l.put(b",\"fingerprints\":");
            l.names(self.fingerprints.iter().map(|f| f.as_str()));
        }
        l.put(b",\"first_seen\":\"");
        let at = l.len;
        l.put(ts.format(self.first_seen));
        let first = at..l.len;
        l.put(b"\",\"last_seen\":\"");
        if self.last_seen == self.first_seen {
            // Most sources send one packet: copy, not format, the time.
            let n = first.len();
            l.buf.copy_within(first, l.len);
            l.len += n;
        } else {
            l.put(ts.format(self.last_seen));
        }
        l.put(b"\"}");
    }
}

impl PortRow {
    /// Appends the row's JSON, byte for byte what `serde_json` writes (see
    /// [`SourceRow::write_json`]); `scratch` is lent for the sketch's bytes.
    fn write_json(&self, l: &mut Chunk, scratch: &mut Vec<u8>) {
        l.put(b"{\"proto\":\"");
        l.put(self.proto.as_str().as_bytes());
        l.field(b"\",\"port\":", self.port as u64);
        l.field(b",\"packets\":", self.packets);
        l.field(b",\"bytes\":", self.bytes);
        l.field(b",\"sources\":", self.sources);
        l.field(b",\"destinations\":", self.destinations);
        l.put(b",\"sources_hll\":\"");
        l.len += self.sources_hll.write_wire(&mut l.buf[l.len..], scratch);
        l.put(b"\"}");
    }
}

const _: () = assert!(
    Chunk::ROW_ROOM >= 256 + Hll::WIRE_MAX,
    "room for a port row"
);

/// The next chunk of a summary's JSON: rows are written straight into it
/// (no copy per row) and it goes to the writer whenever it holds
/// [`Chunk::FLUSH_AT`] bytes, so there is always [`Chunk::ROW_ROOM`] left
/// for the next row.
struct Chunk {
    buf: Box<[u8]>,
    len: usize,
}

impl Chunk {
    /// Bytes written at a time.
    const FLUSH_AT: usize = 1 << 18;
    /// Room for the longest row: a source row with a 45-character IPv6
    /// address, every number at 20 digits, five top ports, every class and
    /// fingerprint (~720 bytes, checked by a test), or a port row with a
    /// dense sketch (~5,600 bytes).
    const ROW_ROOM: usize = 8192;

    fn new() -> Chunk {
        Chunk {
            buf: vec![0; Chunk::FLUSH_AT + Chunk::ROW_ROOM].into_boxed_slice(),
            len: 0,
        }
    }

    /// Appends `items` as the elements of a JSON array, each written by
    /// `write`, going out to `w` as the chunk fills.
    fn elements<T, W: std::io::Write>(
        &mut self,
        w: &mut W,
        items: &[T],
        mut write: impl FnMut(&T, &mut Chunk),
    ) -> std::io::Result<()> {
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            write(x, self);
            self.flush(w, false)?;
        }
        Ok(())
    }

    /// Writes the chunk out if it is full enough (and always when `all`).
    fn flush<W: std::io::Write>(&mut self, w: &mut W, all: bool) -> std::io::Result<()> {
        if all || self.len >= Chunk::FLUSH_AT {
            w.write_all(&self.buf[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }

    #[inline]
    fn put(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `key` (the JSON between the last value and this one), then `v`.
    #[inline]
    fn field(&mut self, key: &[u8], v: u64) {
        self.put(key);
        self.num(v);
    }

    /// Decimal digits of `v`, written in place.
    #[inline]
    fn num(&mut self, mut v: u64) {
        let digits = v.checked_ilog10().unwrap_or(0) as usize + 1;
        let end = self.len + digits;
        for d in self.buf[self.len..end].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len = end;
    }

    fn names<'a>(&mut self, it: impl Iterator<Item = &'a str>) {
        self.byte(b'[');
        for (i, s) in it.enumerate() {
            if i > 0 {
                self.byte(b',');
            }
            self.byte(b'"');
            self.put(s.as_bytes());
            self.byte(b'"');
        }
        self.byte(b']');
    }
}

impl std::fmt::Write for Chunk {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

impl Summary {
    /// Writes the JSON document, byte for byte what `serde_json::to_writer`
    /// writes, with the port and source rows written by hand (their own
    /// `write_json`) straight into a bounded chunk (a window's JSON can be
    /// tens of megabytes).
    pub fn write_json<W: std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        let rows = std::mem::take(&mut self.sources);
        let ports = std::mem::take(&mut self.ports);
        let head = serde_json::to_vec(&*self);
        self.sources = rows;
        self.ports = ports;
        let mut buf = head?;
        // `ports` then `sources` end the document; should that change,
        // serde writes it all.
        const TAIL: &[u8] = b"\"ports\":[],\"sources\":[]}";
        if !buf.ends_with(TAIL) {
            return serde_json::to_writer(w, &*self).map_err(Into::into);
        }
        buf.truncate(buf.len() - TAIL.len());
        buf.extend_from_slice(b"\"ports\":[");
        w.write_all(&buf)?;
        let mut c = Chunk::new();
        let mut scratch = Vec::new();
        c.elements(w, &self.ports, |p, c| p.write_json(c, &mut scratch))?;
        c.put(b"],\"sources\":[");
        let mut ts = TimestampFormatter::default();
        c.elements(w, &self.sources, |r, c| r.write_json(c, &mut ts))?;
        c.put(b"]}");
        c.flush(w, true)
    }
}

/// Media type of a summary's binary form as this version writes it (layout
/// [`BinaryLayout::V2`]): the same fields as the JSON document, in
/// declaration order, in postcard's format (varint integers, raw sketch
/// bytes, microsecond timestamps, sets as bit bytes, fingerprint counts as
/// a list). Sensors upload this by default; JSON stays accepted everywhere.
pub const BINARY_MEDIA_TYPE: &str = "application/vnd.darkscope.summary.v2+postcard";

/// Media type of the first binary layout ([`BinaryLayout::V1`]), still read.
pub const BINARY_V1_MEDIA_TYPE: &str = "application/vnd.darkscope.summary+postcard";

/// Layouts of the binary form. Each has its own media type, so an
/// aggregator never reads one layout as another: one that does not know a
/// layout reads the body as JSON, refuses it, and the sensor sends JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryLayout {
    /// Releases up to 0.1.0: fingerprint counts as three fixed fields
    /// (Mirai, ZMap, Masscan).
    V1,
    /// Fingerprint counts as a list, so fingerprints added later need no
    /// new layout; set bits a reader does not know are left out.
    V2,
}

impl BinaryLayout {
    /// The layout this version writes.
    pub const CURRENT: BinaryLayout = BinaryLayout::V2;

    /// Its media type.
    pub const fn media_type(self) -> &'static str {
        match self {
            BinaryLayout::V1 => BINARY_V1_MEDIA_TYPE,
            BinaryLayout::V2 => BINARY_MEDIA_TYPE,
        }
    }

    /// The layout a `Content-Type` names (parameters and case ignored), if
    /// it names one.
    pub fn of_media_type(content_type: &str) -> Option<BinaryLayout> {
        let t = content_type.split(';').next().unwrap_or("").trim();
        [BinaryLayout::V1, BinaryLayout::V2]
            .into_iter()
            .find(|l| t.eq_ignore_ascii_case(l.media_type()))
    }
}

/// Why a binary summary could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BinaryError {
    /// Another schema version (the first field).
    #[error("schema version {0}")]
    Schema(u64),
    /// Not a well-formed summary of this schema.
    #[error("{0}")]
    Format(String),
}

impl Summary {
    /// The binary form ([`BINARY_MEDIA_TYPE`]).
    pub fn to_binary(&self) -> Result<Vec<u8>, BinaryError> {
        postcard::to_stdvec(self).map_err(|e| BinaryError::Format(e.to_string()))
    }

    /// Reads the binary form this version writes ([`BinaryLayout::CURRENT`]).
    pub fn from_binary(b: &[u8]) -> Result<Summary, BinaryError> {
        Summary::from_binary_as(b, BinaryLayout::CURRENT)
    }

    /// Reads a binary form of the given layout: the schema version first (so
    /// another version gets that error, not whatever field differs), then
    /// the whole summary, with nothing left over.
    pub fn from_binary_as(b: &[u8], layout: BinaryLayout) -> Result<Summary, BinaryError> {
        let (schema, _) = postcard::take_from_bytes::<u64>(b)
            .map_err(|e| BinaryError::Format(format!("no schema version: {e}")))?;
        if schema != SCHEMA as u64 {
            return Err(BinaryError::Schema(schema));
        }
        let v2;
        let b = match layout {
            BinaryLayout::V2 => b,
            BinaryLayout::V1 => {
                v2 = v1_to_v2(b)?;
                &v2[..]
            }
        };
        let (s, rest) = postcard::take_from_bytes::<Summary>(b)
            .map_err(|e| BinaryError::Format(e.to_string()))?;
        if !rest.is_empty() {
            return Err(BinaryError::Format(format!(
                "{} bytes after the summary",
                rest.len()
            )));
        }
        Ok(s)
    }
}

/// Layout 1 as layout 2: the two differ only in the fingerprint counts,
/// three fixed fields there and a list here, so the list's length (3, one
/// byte) goes in front of them.
fn v1_to_v2(b: &[u8]) -> Result<Vec<u8>, BinaryError> {
    let format = |e: postcard::Error| BinaryError::Format(e.to_string());
    type Head = (u64, SensorInfo, Window, CaptureHealth, ClassTotals);
    let (_, rest) = postcard::take_from_bytes::<Head>(b).map_err(format)?;
    let at = b.len() - rest.len();
    let mut out = Vec::with_capacity(b.len() + 1);
    out.extend_from_slice(&b[..at]);
    out.push(3);
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_port_row() -> impl Strategy<Value = PortRow> {
        (
            0usize..Proto::ALL.len(),
            any::<u16>(),
            any::<[u64; 4]>(),
            prop_oneof![0u32..3, 0u32..3000],
        )
            .prop_map(|(p, port, n, k)| {
                let mut sources_hll = Hll::new();
                (0..k).for_each(|i| sources_hll.insert(crate::Addr::v4(i ^ n[0] as u32)));
                PortRow {
                    proto: Proto::ALL[p],
                    port,
                    packets: n[0],
                    bytes: n[1],
                    sources: n[2],
                    destinations: n[3],
                    sources_hll,
                }
            })
    }

    fn any_row() -> impl Strategy<Value = SourceRow> {
        let port = (0usize..Proto::ALL.len(), any::<u16>(), any::<u64>()).prop_map(
            |(p, port, packets)| PortCount {
                proto: Proto::ALL[p],
                port,
                packets,
            },
        );
        (
            (any::<bool>(), any::<u128>()),
            any::<[u64; 4]>(),
            proptest::collection::vec(port, 0..=TopPorts::CAP),
            (any::<u8>(), 0u8..1 << Fingerprint::COUNT),
            (any::<u64>(), prop_oneof![Just(0u64), 0u64..1_000_000]),
        )
            .prop_map(|((v6, ip), n, ports, (classes, fps), (t, micros))| {
                let mut top_ports = TopPorts::default();
                for p in ports {
                    top_ports.push(p);
                }
                let t = (t % 253_402_300_799) * 1_000_000 + micros;
                SourceRow {
                    ip: if v6 {
                        IpAddr::from(ip.to_be_bytes())
                    } else {
                        IpAddr::from((ip as u32).to_be_bytes())
                    },
                    packets: n[0],
                    bytes: n[1],
                    ports: n[2],
                    destinations: n[3],
                    top_ports,
                    classes: ClassSet(classes & ((1 << PacketClass::COUNT) - 1)),
                    fingerprints: crate::class::FingerprintSet(fps),
                    first_seen: Timestamp(t),
                    last_seen: Timestamp(t.saturating_add(micros)),
                }
            })
    }

    proptest! {
        /// The hand-written JSON of port and source rows is serde_json's,
        /// byte for byte.
        #[test]
        fn summary_json_is_serde_json_byte_for_byte(rows in proptest::collection::vec(any_row(), 0..40), ports in proptest::collection::vec(any_port_row(), 0..6)) {
            let mut s = rich();
            s.sources = rows;
            s.ports = ports;
            let mut fast = Vec::new();
            s.write_json(&mut fast).unwrap();
            prop_assert_eq!(String::from_utf8(fast).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    /// The longest source row there can be fits the row buffer.
    #[test]
    fn the_longest_source_row_fits_and_is_serde_json() {
        let mut s = rich();
        let mut top_ports = TopPorts::default();
        for port in 0..TopPorts::CAP as u16 {
            top_ports.push(PortCount {
                proto: Proto::Icmpv6,
                port: u16::MAX - port,
                packets: u64::MAX,
            });
        }
        s.sources = vec![SourceRow {
            ip: IpAddr::from([0xffffu16; 8]),
            packets: u64::MAX,
            bytes: u64::MAX,
            ports: u64::MAX,
            destinations: u64::MAX,
            top_ports,
            classes: ClassSet((1 << PacketClass::COUNT) - 1),
            fingerprints: crate::class::FingerprintSet::all(),
            first_seen: Timestamp(253_402_300_799_999_999),
            last_seen: Timestamp(253_402_300_799_999_998),
        }];
        let mut fast = Vec::new();
        s.write_json(&mut fast).unwrap();
        assert_eq!(fast, serde_json::to_vec(&s).unwrap());
        let row = serde_json::to_vec(&s.sources[0]).unwrap();
        assert!(row.len() < Chunk::ROW_ROOM / 8, "{} bytes", row.len());
    }

    #[test]
    fn summary_json_of_a_large_window_is_serde_json() {
        let mut s = rich();
        let row = s.sources[0].clone();
        s.sources = (0..20_000u32)
            .map(|i| SourceRow {
                ip: IpAddr::from(i.to_be_bytes()),
                packets: i as u64,
                ..row.clone()
            })
            .collect();
        let mut fast = Vec::new();
        s.write_json(&mut fast).unwrap();
        assert_eq!(fast, serde_json::to_vec(&s).unwrap());
    }

    #[test]
    fn class_totals_array_round_trip() {
        let a = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(ClassTotals::from_array(a).to_array(), a);
        assert_eq!(ClassTotals::from_array(a).total(), 28);
        let j = serde_json::to_value(ClassTotals::from_array(a)).unwrap();
        for c in PacketClass::ALL {
            assert_eq!(j[c.as_str()], a[c.index()], "{}", c.as_str());
        }
    }

    /// A summary using every kind of field: IPv4 and IPv6 sources, one with
    /// fingerprints and one without, sparse and dense sketches, malformed
    /// reasons, heavy hitters, microsecond times.
    fn rich() -> Summary {
        use crate::class::{Fingerprint, FingerprintSet};
        use crate::Addr;
        let mut small = Hll::new();
        small.insert(Addr::v4(7));
        let mut big = Hll::new();
        for i in 0..50_000 {
            big.insert(Addr::v4(i));
        }
        let mut top = TopPorts::default();
        top.push(PortCount {
            proto: Proto::Tcp,
            port: 23,
            packets: 5,
        });
        let row = |ip: &str, fp: u8| SourceRow {
            ip: ip.parse().unwrap(),
            packets: 5,
            bytes: 200,
            ports: 1,
            destinations: 3,
            top_ports: top,
            classes: ClassSet(1),
            fingerprints: FingerprintSet(fp),
            first_seen: Timestamp(1_763_683_200_000_001),
            last_seen: Timestamp(1_763_683_259_999_999),
        };
        Summary {
            schema: SCHEMA,
            sensor: SensorInfo {
                id: "jp-1".into(),
                country: "JP".into(),
                darknet: vec!["198.19.0.0/16".into(), "2001:db8::/32".into()],
                monitored_ipv4: 65_536,
            },
            window: Window {
                start: Timestamp(1_763_683_200_000_000),
                end: Timestamp(1_763_683_260_000_000),
            },
            capture: CaptureHealth {
                received: 12,
                malformed: [("truncated_ipv4".to_string(), 2)].into(),
                excluded: 1,
                ..Default::default()
            },
            classes: ClassTotals::from_array([10, 0, 0, 0, 0, 0, 0]),
            fingerprints: FingerprintCounts([1, 0, 0, 2]),
            totals: Totals {
                packets: 10,
                bytes: 400,
                sources: 2,
                sources_hll: big,
            },
            truncation: Truncation {
                heavy: vec![HeavySource {
                    ip: "192.0.2.9".parse().unwrap(),
                    packets: 9,
                    error: 1,
                }],
                ..Default::default()
            },
            ports: vec![PortRow {
                proto: Proto::Tcp,
                port: 23,
                packets: 10,
                bytes: 400,
                sources: 2,
                destinations: 3,
                sources_hll: small,
            }],
            sources: vec![
                row("192.0.2.1", Fingerprint::Mirai.bit()),
                row("2001:db8::5", 0),
            ],
        }
    }

    #[test]
    fn binary_form_round_trips_and_is_small() {
        let s = rich();
        let b = s.to_binary().unwrap();
        assert_eq!(Summary::from_binary(&b).unwrap(), s);
        let json = serde_json::to_vec(&s).unwrap();
        assert!(
            b.len() < json.len() * 3 / 4,
            "{} vs {}",
            b.len(),
            json.len()
        );
        // JSON is unchanged by the binary form: no empty fingerprint list,
        // times as RFC 3339, sets as names, sketches as base64.
        let j: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            j["sources"][0]["fingerprints"],
            serde_json::json!(["mirai"])
        );
        assert!(j["sources"][1].get("fingerprints").is_none());
        assert_eq!(j["sources"][0]["classes"], serde_json::json!(["tcp_syn"]));
        assert_eq!(j["window"]["start"], "2025-11-21T00:00:00Z");
        assert!(j["ports"][0]["sources_hll"].is_string());
        assert_eq!(serde_json::from_slice::<Summary>(&json).unwrap(), s);
    }

    #[test]
    fn bad_binary_gets_an_error_never_a_panic() {
        let s = rich();
        let b = s.to_binary().unwrap();
        for cut in 0..b.len() {
            assert!(Summary::from_binary(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(
            Summary::from_binary(&longer),
            Err(BinaryError::Format(_))
        ));
        let mut other = s.clone();
        other.schema = 2;
        assert_eq!(
            Summary::from_binary(&other.to_binary().unwrap()),
            Err(BinaryError::Schema(2))
        );
        // Every single-byte corruption: an error or some summary, no panic.
        for i in 0..b.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = Summary::from_binary(&c);
            }
        }
    }

    #[test]
    fn fingerprint_counts_read_what_they_know() {
        // JSON: every name written, in bit order; unknown names left out,
        // missing ones 0, a count that is not a number refused.
        let c = FingerprintCounts([1, 2, 3, 4]);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"mirai":1,"zmap":2,"masscan":3,"nmap":4}"#
        );
        let r: FingerprintCounts =
            serde_json::from_str(r#"{"zgrab":9,"masscan":3,"zmap":2}"#).unwrap();
        assert_eq!(r, FingerprintCounts([0, 2, 3, 0]));
        assert!(serde_json::from_str::<FingerprintCounts>(r#"{"mirai":"1"}"#).is_err());
        assert!(serde_json::from_str::<FingerprintCounts>(r#"[1,2]"#).is_err());

        // Binary: a later version's longer list; the fields after it still
        // read in place.
        let s = rich();
        let b = s.to_binary().unwrap();
        type Head = (u64, SensorInfo, Window, CaptureHealth, ClassTotals);
        let (_, rest) = postcard::take_from_bytes::<Head>(&b).unwrap();
        let at = b.len() - rest.len();
        assert_eq!(b[at] as usize, Fingerprint::COUNT);
        let mut later = b[..at].to_vec();
        later.push(Fingerprint::COUNT as u8 + 2);
        later.extend_from_slice(&b[at + 1..at + 1 + Fingerprint::COUNT]);
        later.extend_from_slice(&[7, 0x80, 0x01]); // two more counts: 7 and 128
        later.extend_from_slice(&b[at + 1 + Fingerprint::COUNT..]);
        assert_eq!(Summary::from_binary(&later).unwrap(), s);
    }

    #[test]
    fn binary_layouts_have_their_own_media_types() {
        use BinaryLayout::*;
        assert_eq!(BinaryLayout::of_media_type(BINARY_MEDIA_TYPE), Some(V2));
        assert_eq!(
            BinaryLayout::of_media_type("Application/VND.darkscope.summary+postcard; q=1"),
            Some(V1)
        );
        assert_eq!(BinaryLayout::of_media_type("application/json"), None);
        // A layout-2 body read as layout 1 is an error (the list's length
        // is then read as the first count and the rest shifts), not a panic.
        let b = rich().to_binary().unwrap();
        assert!(Summary::from_binary_as(&b, V1).is_err());
    }
}
