//! Sensor credentials: random bearer tokens, stored only as SHA-256 digests.
//! A token is shown once, at creation; the database cannot give it back.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix that makes a darkscope token recognisable (e.g. to secret scanners).
pub const TOKEN_PREFIX: &str = "dst_";

/// A new random token (256 bits).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// The digest stored for a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// The token in an `Authorization: Bearer ...` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The password of an `Authorization: Basic ...` header value (TAXII
/// clients send tokens this way; the user name is ignored).
pub fn basic_password(header: &str) -> Option<String> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, pass) = text.split_once(':')?;
    (!pass.is_empty()).then(|| pass.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_carries_the_token_as_password() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("isp:dst_secret")
        );
        assert_eq!(basic_password(&h).as_deref(), Some("dst_secret"));
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(basic_password("Bearer x"), None);
        let empty = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("isp:")
        );
        assert_eq!(basic_password(&empty), None);
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(token_hash(&a), token_hash(&format!("{a}\n")));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
