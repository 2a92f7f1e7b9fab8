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

/// An error with its causes, joined by `": "`: an HTTP client's own text
/// ("error sending request for url …") leaves out why (timed out, refused),
/// which is what an operator reading the log needs. A cause whose text is
/// already in what came before is left out.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_joined_once_each() {
        let timed_out = E("operation timed out", None);
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "client error: operation timed out",
                Some(Box::new(timed_out)),
            ))),
        );
        assert_eq!(
            super::causes(&e),
            "error sending request: client error: operation timed out"
        );
        assert_eq!(super::causes(&E("alone", None)), "alone");
    }
}
