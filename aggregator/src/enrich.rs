//! Offline enrichment: IP → AS number, AS name and country, from an
//! `ip2asn`-style table (iptoasn.com's `ip2asn-combined.tsv`, plain or
//! gzipped): one range per line, tab-separated
//! `range_start  range_end  AS_number  country_code  AS_description`,
//! IPv4 and IPv6 mixed. Rows with AS number 0 ("Not routed") are skipped.
//! Lookups are a binary search over the sorted ranges.
//!
//! Or from MaxMind-format databases (`maxminddb`): a `.mmdb` ASN database
//! (GeoLite2-ASN and compatible) in place of the TSV, and optionally a
//! country database (GeoLite2-Country and compatible) whose located country
//! then replaces the AS's registration country.

use darkscope_common::Addr;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::Path;

/// What the table says about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsInfo<'a> {
    /// AS number.
    pub asn: u32,
    /// ISO country code of the AS registration (may be empty or `None`).
    pub country: &'a str,
    /// AS name.
    pub name: &'a str,
}

/// Why a table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The file could not be read.
    #[error("cannot read ASN table '{path}': {err}")]
    Io {
        /// The file.
        path: String,
        /// The cause (in the message, so not also a `source()`).
        err: std::io::Error,
    },
    /// A line is not a valid range.
    #[error("ASN table line {line}: {msg}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Two ranges overlap.
    #[error("ASN table: ranges overlap around {0}")]
    Overlap(String),
    /// A `.mmdb` file could not be opened.
    #[error("cannot open MaxMind database '{path}': {msg}")]
    Mmdb {
        /// The file.
        path: String,
        /// The cause.
        msg: String,
    },
}

struct Range {
    start: u128,
    end: u128,
    asn: u32,
    country: [u8; 2],
    name: u32,
}

/// A loaded IP → ASN (and country) table.
#[derive(Default)]
pub struct AsnTable {
    ranges: Vec<Range>,
    names: Vec<String>,
    asn_db: Option<maxminddb::Reader<Vec<u8>>>,
    country_db: Option<maxminddb::Reader<Vec<u8>>>,
}

fn open_mmdb(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, EnrichError> {
    let r = maxminddb::Reader::open_readfile(path).map_err(|e| EnrichError::Mmdb {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    log::info!(
        "MaxMind database {}: {} ({} nodes, built {})",
        path.display(),
        r.metadata.database_type,
        r.metadata.node_count,
        r.metadata.build_epoch
    );
    Ok(r)
}

fn mmdb_decode<'a, T: serde::Deserialize<'a>>(
    db: &'a maxminddb::Reader<Vec<u8>>,
    a: Addr,
) -> Option<T> {
    db.lookup(a.to_ip()).ok()?.decode::<T>().ok()?
}

impl AsnTable {
    /// Loads a table from a file: an ip2asn TSV (`.gz` is decompressed) or a
    /// MaxMind ASN database (`.mmdb`).
    pub fn load(path: &Path) -> Result<AsnTable, EnrichError> {
        if path.extension().is_some_and(|e| e == "mmdb") {
            return Ok(AsnTable {
                asn_db: Some(open_mmdb(path)?),
                ..Default::default()
            });
        }
        let io = |err| EnrichError::Io {
            path: path.display().to_string(),
            err,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let t = AsnTable::parse(BufReader::new(r))?;
        log::info!(
            "ASN table {}: {} ranges, {} AS names",
            path.display(),
            t.ranges.len(),
            t.names.len()
        );
        Ok(t)
    }

    /// Parses a table.
    pub fn parse(r: impl BufRead) -> Result<AsnTable, EnrichError> {
        let mut t = AsnTable::default();
        let mut names: rustc_hash::FxHashMap<String, u32> = Default::default();
        for (i, line) in r.lines().enumerate() {
            let bad = |msg: String| EnrichError::Line { line: i + 1, msg };
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                return Err(bad(format!(
                    "expected 'start<TAB>end<TAB>asn<TAB>country<TAB>name', got '{}'",
                    line.chars().take(80).collect::<String>()
                )));
            }
            let ip = |s: &str| {
                s.trim()
                    .parse::<IpAddr>()
                    .map(|a| Addr::from(a).0)
                    .map_err(|_| bad(format!("'{s}' is not an IP address")))
            };
            let (start, end) = (ip(f[0])?, ip(f[1])?);
            let asn: u32 = f[2]
                .trim()
                .trim_start_matches("AS")
                .parse()
                .map_err(|_| bad(format!("'{}' is not an AS number", f[2])))?;
            if start > end {
                return Err(bad(format!(
                    "range start {} is after its end {}",
                    f[0], f[1]
                )));
            }
            if asn == 0 {
                continue;
            }
            let cc = f[3].trim().as_bytes();
            let country = if cc.len() == 2 && cc.iter().all(u8::is_ascii_alphabetic) {
                [cc[0].to_ascii_uppercase(), cc[1].to_ascii_uppercase()]
            } else {
                [0, 0]
            };
            let name = f.get(4).map(|s| s.trim()).unwrap_or("");
            let next = names.len() as u32;
            let name = *names.entry(name.to_string()).or_insert(next);
            t.ranges.push(Range {
                start,
                end,
                asn,
                country,
                name,
            });
        }
        t.names = vec![String::new(); names.len()];
        for (n, i) in names {
            t.names[i as usize] = n;
        }
        t.ranges.sort_unstable_by_key(|r| r.start);
        if let Some(w) = t.ranges.windows(2).find(|w| w[1].start <= w[0].end) {
            return Err(EnrichError::Overlap(Addr(w[1].start).to_string()));
        }
        Ok(t)
    }

    /// Also reads a MaxMind country database (`.mmdb`): its located
    /// country replaces the AS's registration country.
    pub fn with_country_db(mut self, path: &Path) -> Result<AsnTable, EnrichError> {
        self.country_db = Some(open_mmdb(path)?);
        Ok(self)
    }

    /// Number of TSV ranges (a MaxMind database counts as one).
    pub fn len(&self) -> usize {
        self.ranges.len() + usize::from(self.asn_db.is_some())
    }

    /// True when the table can answer nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.country_db.is_none()
    }

    /// The AS (and country) of an address; AS 0 when only the country is
    /// known.
    pub fn lookup(&self, a: Addr) -> Option<AsInfo<'_>> {
        let mut info = match &self.asn_db {
            Some(db) => mmdb_decode::<maxminddb::geoip2::Asn<'_>>(db, a).and_then(|x| {
                Some(AsInfo {
                    asn: x.autonomous_system_number?,
                    country: "",
                    name: x.autonomous_system_organization.unwrap_or(""),
                })
            }),
            None => self.range(a),
        };
        if let Some(db) = &self.country_db {
            let cc = mmdb_decode::<maxminddb::geoip2::Country<'_>>(db, a)
                .and_then(|c| c.country.iso_code.or(c.registered_country.iso_code))
                .filter(|c| c.len() == 2);
            match (&mut info, cc) {
                (Some(i), Some(cc)) => i.country = cc,
                (None, Some(cc)) => {
                    info = Some(AsInfo {
                        asn: 0,
                        country: cc,
                        name: "",
                    })
                }
                _ => {}
            }
        }
        info
    }

    fn range(&self, a: Addr) -> Option<AsInfo<'_>> {
        let i = self.ranges.partition_point(|r| r.start <= a.0);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (a.0 <= r.end).then(|| AsInfo {
            asn: r.asn,
            country: std::str::from_utf8(&r.country)
                .ok()
                .filter(|c| !c.starts_with('\0'))
                .unwrap_or(""),
            name: &self.names[r.name as usize],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    const TABLE: &str = "198.18.0.0\t198.18.0.255\t64500\tJP\tEXAMPLE-ONE\n\
        198.18.1.0\t198.18.1.255\t0\tNone\tNot routed\n\
        198.18.2.0\t198.18.3.255\t64501\tde\tEXAMPLE TWO, Inc.\n\
        2001:db8::\t2001:db8:ffff:ffff:ffff:ffff:ffff:ffff\t64502\tFR\tEX-V6\n";

    #[test]
    fn looks_up_ranges_v4_and_v6() {
        let t = AsnTable::parse(TABLE.as_bytes()).unwrap();
        assert_eq!(t.len(), 3);
        let x = t.lookup(a("198.18.0.7")).unwrap();
        assert_eq!((x.asn, x.country, x.name), (64500, "JP", "EXAMPLE-ONE"));
        assert_eq!(t.lookup(a("198.18.1.7")), None, "not routed");
        assert_eq!(t.lookup(a("198.18.3.255")).unwrap().country, "DE");
        assert_eq!(t.lookup(a("198.18.4.0")), None);
        assert_eq!(t.lookup(a("2001:db8:1::9")).unwrap().asn, 64502);
        assert_eq!(t.lookup(a("10.0.0.1")), None);
    }

    #[test]
    fn bad_tables_name_the_line() {
        let e = AsnTable::parse("1.0.0.0\tnope\t1\tUS\tX\n".as_bytes())
            .err()
            .unwrap();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = AsnTable::parse(
            "1.0.0.0\t1.0.0.255\t1\tUS\tX\n1.0.0.9\t1.0.1.0\t2\tUS\tY\n".as_bytes(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("overlap"), "{e}");
        let gz = tempfile::NamedTempFile::with_suffix(".tsv.gz").unwrap();
        let mut w = flate2::write::GzEncoder::new(
            std::fs::File::create(gz.path()).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut w, TABLE.as_bytes()).unwrap();
        w.finish().unwrap();
        assert_eq!(AsnTable::load(gz.path()).unwrap().len(), 3);
        assert!(AsnTable::load(Path::new("/nonexistent.tsv")).is_err());
    }
}
