//! Timestamps: microseconds since the Unix epoch inside, RFC 3339 on the wire.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as u64)
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This time as a [`SystemTime`].
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }

    /// Parses an RFC 3339 timestamp such as `2026-11-21T10:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, humantime::TimestampError> {
        let t = humantime::parse_rfc3339_weak(s)?;
        Ok(Timestamp(
            t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64,
        ))
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

impl Timestamp {
    /// RFC 3339 in UTC into `buf` (`2026-11-21T10:00:00Z`, with `.ffffff`
    /// when there are microseconds); returns the used length. Hand-rolled
    /// because summaries format two timestamps per source row.
    pub fn format_into(self, buf: &mut [u8; 27]) -> usize {
        write_minute(buf, self.0 / 60_000_000);
        write_seconds(buf, self.0 % 60_000_000)
    }
}

/// Writes `v` as `width` decimal digits at `buf[at..]`.
fn put(buf: &mut [u8], at: usize, v: u64, width: usize) {
    let mut v = v;
    for i in (0..width).rev() {
        buf[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:` of `minute` (minutes since the epoch) into `buf[..17]`.
fn write_minute(buf: &mut [u8; 27], minute: u64) {
    let (y, mo, d) = civil_from_days((minute / 1440) as i64);
    let in_day = minute % 1440;
    buf[..17].copy_from_slice(b"0000-00-00T00:00:");
    put(buf, 0, y.clamp(0, 9999) as u64, 4);
    put(buf, 5, mo as u64, 2);
    put(buf, 8, d as u64, 2);
    put(buf, 11, in_day / 60, 2);
    put(buf, 14, in_day % 60, 2);
}

/// `SS[.ffffff]Z` of `us` (microseconds within the minute) into `buf[17..]`;
/// returns the whole timestamp's length.
fn write_seconds(buf: &mut [u8; 27], us: u64) -> usize {
    put(buf, 17, us / 1_000_000, 2);
    let micros = us % 1_000_000;
    if micros == 0 {
        buf[19] = b'Z';
        return 20;
    }
    buf[19] = b'.';
    put(buf, 20, micros, 6);
    buf[26] = b'Z';
    27
}

/// Formats timestamps as [`Timestamp::format_into`] does, remembering the
/// date, hour and minute of the last one: a window's timestamps share
/// them, so most need only their seconds and microseconds written.
#[derive(Clone, Debug, Default)]
pub struct TimestampFormatter {
    minute: Option<u64>,
    buf: [u8; 27],
}

impl TimestampFormatter {
    /// `t` in RFC 3339, as [`Timestamp::format_into`] writes it.
    pub fn format(&mut self, t: Timestamp) -> &[u8] {
        let minute = t.0 / 60_000_000;
        if self.minute != Some(minute) {
            write_minute(&mut self.buf, minute);
            self.minute = Some(minute);
        }
        let n = write_seconds(&mut self.buf, t.0 % 60_000_000);
        &self.buf[..n]
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 27];
        let n = self.format_into(&mut buf);
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// RFC 3339 text in JSON; microseconds as an integer in the binary form.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_u64(self.0);
        }
        let mut buf = [0u8; 27];
        let n = self.format_into(&mut buf);
        s.serialize_str(std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return u64::deserialize(d).map(Timestamp);
        }
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The formatter that remembers the last minute writes what
        /// `format_into` writes, whatever the sequence of timestamps.
        #[test]
        fn formatter_writes_what_format_into_writes(
            ts in proptest::collection::vec((0u64..253_402_300_799, 0u64..120, prop_oneof![Just(0u64), 0u64..1_000_000]), 1..50)
        ) {
            let mut f = TimestampFormatter::default();
            let mut last = 0;
            for (secs, step, micros) in ts {
                // Runs within a minute as well as jumps anywhere.
                let secs = if step < 60 { last - last % 60 + step } else { secs };
                last = secs;
                let t = Timestamp(secs * 1_000_000 + micros);
                let mut buf = [0u8; 27];
                let n = t.format_into(&mut buf);
                prop_assert_eq!(f.format(t), &buf[..n]);
            }
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp(1_700_000_000_000_000);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        let u = Timestamp(1_700_000_000_123_456);
        assert_eq!(Timestamp::parse_rfc3339(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn formatting_agrees_with_humantime() {
        let mut x = 0x9e37_79b9u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = Timestamp(x % 8_000_000_000_000_000); // up to year 2223
            let want = if t.0 % 1_000_000 == 0 {
                humantime::format_rfc3339_seconds(t.to_system()).to_string()
            } else {
                humantime::format_rfc3339_micros(t.to_system()).to_string()
            };
            assert_eq!(t.to_string(), want);
        }
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(951_782_400_000_001).to_string(),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn bad_timestamp_is_an_error() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
