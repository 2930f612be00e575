//! A bearer token of the admin listener (`admin.token`, `admin.push_token`; GATEWAY.md 10).
//! Kept as the SHA-256 of its text, so a presented token is compared digest to digest in
//! constant time: neither its bytes nor its length show in how long a refusal takes, and
//! the token itself is in no `Debug` output or log.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// The token written in the config, trimmed; `None` when empty (an unset
    /// `${ADMIN_TOKEN:-}` means no token, which off loopback is refused at load).
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self {
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&digest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_its_own_text_only_and_never_prints_it() {
        let token = Token::new(" s3cret-token ").unwrap();
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "Token([redacted])");
        assert_eq!(Token::new("  "), None);
    }
}
