//! Types shared by the darkscope sensor and aggregator: the versioned summary
//! wire format ([`wire`]), packet classes and tool fingerprints ([`class`]),
//! darknet prefixes ([`prefix`]), the address encoding ([`addr`]) and the
//! mergeable distinct-count sketch ([`hll`]), and prefix-preserving address
//! anonymisation for sharing between aggregators ([`anon`]).
//!
//! Everything here is part of the sensor↔aggregator contract: changing a
//! field, a hash or a register layout needs a new `schema` version.

pub mod addr;
pub mod anon;
pub mod class;
pub mod hll;
pub mod prefix;
pub mod time;
pub mod wire;

pub use addr::Addr;
pub use class::{ClassSet, Fingerprint, FingerprintSet, PacketClass, Proto};
pub use hll::Hll;
pub use prefix::{Prefix, PrefixError, PrefixSet};
pub use time::Timestamp;
pub use wire::Summary;
