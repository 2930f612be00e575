//! `X-Mplus-Signature`: base64 of HMAC-SHA256 over the exact body bytes (MPLUS.md 2).
//!
//! A [`Secret`] holds the key already absorbed into an HMAC state, so signing and verifying
//! clone a small state instead of re-hashing the key on every call.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries signatures, on requests and on answers.
pub const SIGNATURE_HEADER: &str = "x-mplus-signature";

/// The header that names the subscription whose secret signs a call (and its forwards).
pub const SUBSCRIPTION_HEADER: &str = "x-mplus-subscription-id";

/// How the text shown in the back office becomes the HMAC key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The key is the base64-decoded secret (the back office's default).
    #[default]
    Base64,
    /// The key is the secret's UTF-8 bytes as written.
    Utf8,
}

/// Why a secret could not be turned into a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error("secret is not valid base64 (set `encoding: utf8` to use the text as it is)")]
    NotBase64,
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("X-Mplus-Signature is not base64")]
    NotBase64,
    #[error("X-Mplus-Signature does not match the body")]
    Mismatch,
}

/// A subscription's or upstream's shared secret, ready to sign and verify.
#[derive(Clone)]
pub struct Secret {
    mac: HmacSha256,
    key: Box<[u8]>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// Decodes the secret as the back office shows it.
    pub fn decode(text: &str, encoding: Encoding) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = match encoding {
            Encoding::Base64 => B64.decode(text).map_err(|_| SecretError::NotBase64)?,
            Encoding::Utf8 => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self::from_key(&key))
    }

    /// A secret from raw key bytes.
    pub fn from_key(key: &[u8]) -> Self {
        // HMAC takes keys of any length; the error case cannot happen for `Hmac<Sha256>`.
        let mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        Self {
            mac,
            key: key.into(),
        }
    }

    /// Whether this secret has exactly these key bytes (used to spot the demo secret).
    pub fn has_key(&self, key: &[u8]) -> bool {
        *self.key == *key
    }

    /// The `X-Mplus-Signature` value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(body);
        B64.encode(mac.finalize().into_bytes())
    }

    /// Checks a received `X-Mplus-Signature` value against the raw body, in constant time.
    pub fn verify(&self, header: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let header = header.trim_ascii();
        // A valid signature is 44 base64 characters (32 bytes); anything longer cannot match.
        if header.len() > 64 {
            return Err(SignatureError::Mismatch);
        }
        let mut decoded = [0u8; 48];
        let len = B64
            .decode_slice(header, &mut decoded)
            .map_err(|_| SignatureError::NotBase64)?;
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.verify_slice(&decoded[..len])
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        secret_encoding: Encoding,
        body: Option<String>,
        body_file: Option<String>,
        signature: String,
    }

    const MPLUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mplus");

    fn vectors() -> Vec<(Vector, Vec<u8>)> {
        let text = std::fs::read_to_string(format!("{MPLUS}/vectors.json"))
            .unwrap_or_else(|e| panic!("fixture {MPLUS}/vectors.json: {e}"));
        let parsed: Vectors = serde_json::from_str(&text).expect("vectors.json parses");
        parsed
            .vectors
            .into_iter()
            .map(|v| {
                let body = match (&v.body, &v.body_file) {
                    (Some(body), _) => body.clone().into_bytes(),
                    (None, Some(file)) => std::fs::read(format!("{MPLUS}/{file}"))
                        .unwrap_or_else(|e| panic!("fixture {MPLUS}/{file}: {e}")),
                    (None, None) => panic!("vector {} has no body", v.name),
                };
                (v, body)
            })
            .collect()
    }

    #[test]
    fn every_shared_vector_signs_and_verifies() {
        let all = vectors();
        assert!(
            all.len() >= 7,
            "expected the shared vectors, got {}",
            all.len()
        );
        for (v, body) in all {
            let secret = Secret::decode(&v.secret, v.secret_encoding).expect("secret decodes");
            assert_eq!(secret.sign(&body), v.signature, "vector {}", v.name);
            assert_eq!(
                secret.verify(v.signature.as_bytes(), &body),
                Ok(()),
                "vector {}",
                v.name
            );
        }
    }

    #[test]
    fn verify_trims_surrounding_whitespace() {
        let (v, body) = vectors().remove(0);
        let secret = Secret::decode(&v.secret, v.secret_encoding).expect("secret");
        let padded = format!("  {}\t", v.signature);
        assert_eq!(secret.verify(padded.as_bytes(), &body), Ok(()));
    }

    #[test]
    fn verify_refuses_changed_body_wrong_key_and_garbage() {
        let (v, body) = vectors().remove(0);
        let secret = Secret::decode(&v.secret, v.secret_encoding).expect("secret");
        let sig = v.signature.as_bytes();
        assert_eq!(secret.verify(sig, b"tesT"), Err(SignatureError::Mismatch));
        let other = Secret::decode(&v.secret, Encoding::Utf8).expect("secret");
        assert_eq!(other.verify(sig, &body), Err(SignatureError::Mismatch));
        assert_eq!(
            secret.verify(b"not base64!", &body),
            Err(SignatureError::NotBase64)
        );
        assert_eq!(secret.verify(b"", &body), Err(SignatureError::Mismatch));
        assert_eq!(
            secret.verify(b"dGVzdA==", &body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secret.verify(&[b'A'; 200], &body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secrets_that_cannot_be_keys_are_refused() {
        assert_eq!(
            Secret::decode("  ", Encoding::Base64).unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            Secret::decode("not*base64", Encoding::Base64).unwrap_err(),
            SecretError::NotBase64
        );
        assert!(Secret::decode("not*base64", Encoding::Utf8).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let secret = Secret::decode("c2VjcmV0", Encoding::Base64).expect("secret");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
    }
}
