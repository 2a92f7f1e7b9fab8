//! Turning an upload into a validated [`Summary`]: bounded decompression
//! (zstd, gzip or none; a body that inflates past the limit is refused, so a
//! decompression bomb costs at most `limit` bytes), then schema and
//! consistency checks. Nothing here touches storage.

use darkscope_common::wire::{BinaryError, BinaryLayout, Summary, SCHEMA};
use darkscope_common::Timestamp;
use std::io::Read;

/// Why an upload was refused (each maps to a 4xx).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// Larger than the limit after decompression (413).
    #[error("summary is larger than {0} bytes after decompression")]
    TooLarge(usize),
    /// Unknown or corrupt content encoding (400/415).
    #[error("{0}")]
    Encoding(String),
    /// Not JSON (or not the binary form), or not a summary (400).
    #[error("not a valid summary: {0}")]
    Json(String),
    /// A schema version this aggregator does not read (400).
    #[error("unsupported schema version {0} (this aggregator accepts {SCHEMA})")]
    Schema(u64),
    /// Well-formed but inconsistent or out of range (400).
    #[error("invalid summary: {0}")]
    Invalid(String),
}

/// Decompresses `body` per its `Content-Encoding`, refusing more than `limit` bytes.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, IngestError> {
    let enc = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match enc.as_str() {
        "identity" | "" => {
            if body.len() > limit {
                return Err(IngestError::TooLarge(limit));
            }
            return Ok(body.to_vec());
        }
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| IngestError::Encoding(format!("bad zstd stream: {e}")))?,
        ),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(body)),
        other => {
            return Err(IngestError::Encoding(format!(
                "unsupported Content-Encoding '{other}' (use zstd, gzip or none)"
            )))
        }
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Encoding(format!("corrupt {enc} body: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge(limit));
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct Head {
    schema: Option<serde_json::Value>,
}

/// Parses and checks a summary. The body is parsed once; only when that
/// fails is its `schema` field read on its own, so a summary of another
/// version gets the version error rather than whatever field first differs.
pub fn parse(bytes: &[u8]) -> Result<Summary, IngestError> {
    match serde_json::from_slice::<Summary>(bytes) {
        Ok(s) if s.schema == SCHEMA => {
            validate(&s)?;
            Ok(s)
        }
        Ok(s) => Err(IngestError::Schema(s.schema as u64)),
        Err(e) => {
            let head: Head =
                serde_json::from_slice(bytes).map_err(|_| IngestError::Json(e.to_string()))?;
            match head.schema.as_ref().and_then(|v| v.as_u64()) {
                Some(v) if v != SCHEMA as u64 => Err(IngestError::Schema(v)),
                None => Err(IngestError::Json(
                    "missing or non-numeric field `schema`".into(),
                )),
                Some(_) => Err(IngestError::Json(e.to_string())),
            }
        }
    }
}

/// Parses and checks a summary in a binary form (the current layout, or
/// an earlier layout).
pub fn parse_binary(bytes: &[u8], layout: BinaryLayout) -> Result<Summary, IngestError> {
    let s = Summary::from_binary_as(bytes, layout).map_err(|e| match e {
        BinaryError::Schema(v) => IngestError::Schema(v),
        BinaryError::Format(m) => IngestError::Json(format!("binary form: {m}")),
    })?;
    validate(&s)?;
    Ok(s)
}

/// Parses a body by its content type: a binary layout
/// ([`BinaryLayout::of_media_type`]) or, for anything else, JSON.
pub fn parse_as(content_type: Option<&str>, bytes: &[u8]) -> Result<Summary, IngestError> {
    match content_type.and_then(BinaryLayout::of_media_type) {
        Some(layout) => parse_binary(bytes, layout),
        None => parse(bytes),
    }
}

fn invalid(msg: impl Into<String>) -> IngestError {
    IngestError::Invalid(msg.into())
}

/// Windows starting before 2000-01-01 are refused: a sensor that booted
/// without a clock (1970) must not file years of data in the wrong place.
pub const EARLIEST_WINDOW_US: u64 = 946_684_800_000_000;

/// Consistency and range checks a summary must pass before it is stored.
pub fn validate(s: &Summary) -> Result<(), IngestError> {
    let id = &s.sensor.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(invalid(
            "sensor.id must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    let w = s.window;
    if w.end <= w.start || w.end.0 - w.start.0 > 86_400_000_000 {
        return Err(invalid("window must satisfy start < end <= start + 1 day"));
    }
    if w.start.0 > Timestamp::now().0 + 86_400_000_000 {
        return Err(invalid(
            "window starts more than a day in the future: the sensor's clock is wrong (check NTP)",
        ));
    }
    if w.start.0 < EARLIEST_WINDOW_US {
        return Err(invalid(
            "window starts before 2000: the sensor's clock is wrong (check NTP)",
        ));
    }
    if s.ports.len() > 5 * 65_536 {
        return Err(invalid("too many port rows"));
    }
    if s.classes.total() != s.totals.packets {
        return Err(invalid(format!(
            "class totals ({}) do not add up to totals.packets ({})",
            s.classes.total(),
            s.totals.packets
        )));
    }
    let port_packets: u64 = s.ports.iter().map(|p| p.packets).sum();
    if port_packets != s.totals.packets {
        return Err(invalid(format!(
            "port rows ({port_packets} packets) do not add up to totals.packets ({})",
            s.totals.packets
        )));
    }
    if let Some(r) = s
        .sources
        .iter()
        .find(|r| r.first_seen > r.last_seen || r.packets == 0)
    {
        return Err(invalid(format!("source row {} is inconsistent", r.ip)));
    }
    let tracked: u64 = s.sources.iter().map(|r| r.packets).sum();
    if tracked + s.truncation.packets_untracked != s.totals.packets {
        return Err(invalid(
            "source rows and untracked packets do not add up to totals.packets",
        ));
    }
    Ok(())
}

/// A small valid summary (sensor `s-1`, one source 192.0.2.1 with 3
/// packets to tcp/23), as JSON: for tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn example_json() -> Vec<u8> {
    let s = serde_json::json!({
        "schema": 1,
        "sensor": {"id": "s-1", "country": "JP", "darknet": ["198.19.0.0/16"], "monitored_ipv4": 65536},
        "window": {"start": "2025-11-21T00:00:00Z", "end": "2025-11-21T00:01:00Z"},
        "capture": {"received": 3, "kernel_dropped": 0, "if_dropped": 0, "pipeline_dropped": 0,
                    "malformed": {}, "non_ip": 0, "not_darknet": 0},
        "classes": {"tcp_syn": 3, "backscatter": 0, "udp": 0, "icmp_echo": 0, "icmp_other": 0, "tcp_other": 0, "other": 0},
        "fingerprints": {"mirai": 0, "zmap": 0, "masscan": 0},
        "totals": {"packets": 3, "bytes": 120, "sources": 1, "sources_hll": ""},
        "truncation": {"exact": true, "source_cap": 10, "sources_untracked": 0, "packets_untracked": 0, "heavy": []},
        "ports": [{"proto": "tcp", "port": 23, "packets": 3, "bytes": 120, "sources": 1, "destinations": 2, "sources_hll": ""}],
        "sources": [{"ip": "192.0.2.1", "packets": 3, "bytes": 120, "ports": 1, "destinations": 2,
                     "top_ports": [{"proto": "tcp", "port": 23, "packets": 3}], "classes": ["tcp_syn"],
                     "first_seen": "2025-11-21T00:00:01Z", "last_seen": "2025-11-21T00:00:02Z"}]
    });
    serde_json::to_vec(&s).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::wire::BINARY_MEDIA_TYPE;
    use std::io::Write;

    #[test]
    fn zstd_and_gzip_round_trip_and_bombs_are_refused() {
        let doc = vec![b'{'; 10_000];
        let z = zstd::encode_all(&doc[..], 3).unwrap();
        assert_eq!(decode_body(Some("zstd"), &z, 20_000).unwrap(), doc);
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(&doc).unwrap();
        let g = g.finish().unwrap();
        assert_eq!(decode_body(Some("gzip"), &g, 20_000).unwrap(), doc);
        // 64 MiB of zeros compress to a few KiB: refused at the limit.
        let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decode_body(Some("zstd"), &bomb, 1 << 20),
            Err(IngestError::TooLarge(1 << 20))
        );
        assert!(matches!(
            decode_body(Some("br"), &z, 20_000),
            Err(IngestError::Encoding(_))
        ));
        assert!(matches!(
            decode_body(Some("zstd"), b"not zstd", 20_000),
            Err(IngestError::Encoding(_))
        ));
        assert_eq!(
            decode_body(None, &doc, 100),
            Err(IngestError::TooLarge(100))
        );
    }

    use proptest::prelude::*;

    #[test]
    fn the_valid_example_is_accepted() {
        parse(&example_json()).unwrap();
    }

    /// A newer sensor that knows a fingerprint (or class) this aggregator
    /// does not is still heard: the summary is stored without that name.
    #[test]
    fn names_from_a_newer_sensor_are_tolerated() {
        let mut doc: serde_json::Value = serde_json::from_slice(&example_json()).unwrap();
        doc["fingerprints"]["zgrab"] = 1.into();
        doc["sources"][0]["fingerprints"] = serde_json::json!(["zgrab"]);
        doc["sources"][0]["classes"] = serde_json::json!(["tcp_syn", "quic_initial"]);
        let s = parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert!(s.sources[0].fingerprints.is_empty());
        assert_eq!(s.sources[0].classes.iter().count(), 1);
        assert_eq!(s.totals.packets, 3);
    }

    proptest! {
        /// Hostile uploads: any corruption of a valid document (bytes
        /// flipped, cut, spliced) gives a clean error or a consistent
        /// summary, never a panic.
        #[test]
        fn corrupted_summaries_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = example_json();
            for (i, v) in flips {
                let at = i.index(b.len());
                b[at] = v;
            }
            let n = cut.index(b.len() + 1);
            b.truncate(n.max(b.len() / 2));
            if let Ok(s) = parse(&b) {
                prop_assert!(validate(&s).is_ok());
            }
            let _ = decode_body(Some("zstd"), &b, 1 << 16);
            let _ = decode_body(Some("gzip"), &b, 1 << 16);
        }
    }

    #[test]
    fn the_binary_form_is_read_by_content_type_and_validated() {
        let s = parse(&example_json()).unwrap();
        let b = s.to_binary().unwrap();
        for ct in [
            BINARY_MEDIA_TYPE,
            "Application/Vnd.Darkscope.Summary.V2+Postcard; charset=binary",
        ] {
            assert_eq!(parse_as(Some(ct), &b).unwrap(), s);
        }
        // Binary sent as JSON (or JSON as binary) is refused, not misread.
        assert!(matches!(parse_as(None, &b), Err(IngestError::Json(_))));
        assert!(matches!(
            parse_as(Some(BINARY_MEDIA_TYPE), &example_json()),
            Err(IngestError::Json(_) | IngestError::Schema(_))
        ));
        // The same consistency checks as JSON.
        let mut bad = s.clone();
        bad.totals.packets += 1;
        assert!(matches!(
            parse_binary(&bad.to_binary().unwrap(), BinaryLayout::CURRENT),
            Err(IngestError::Invalid(_))
        ));
        let mut other = s;
        other.schema = 9;
        assert_eq!(
            parse_binary(&other.to_binary().unwrap(), BinaryLayout::CURRENT),
            Err(IngestError::Schema(9))
        );
    }

    #[test]
    fn schema_version_is_checked_first() {
        assert_eq!(
            parse(br#"{"schema": 2, "x": 1}"#),
            Err(IngestError::Schema(2))
        );
        // A summary that parses in full but names another version.
        let mut other: serde_json::Value = serde_json::from_slice(&example_json()).unwrap();
        other["schema"] = 7.into();
        assert_eq!(
            parse(&serde_json::to_vec(&other).unwrap()),
            Err(IngestError::Schema(7))
        );
        assert!(parse(&example_json()).is_ok());
        assert!(matches!(parse(br#"{"x": 1}"#), Err(IngestError::Json(_))));
        assert!(matches!(parse(b"not json"), Err(IngestError::Json(_))));
        assert!(matches!(
            parse(br#"{"schema": 1}"#),
            Err(IngestError::Json(_))
        ));
    }
}
