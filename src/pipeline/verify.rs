//! The checks of GATEWAY.md 6, in order. [`Verified`] can only be made here, so nothing
//! downstream can see a call whose signature was not checked.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use rhai::Map;

use crate::body::{self, BodyError};
use crate::config::Subscription;
use crate::runtime::Runtime;
pub use crate::signature::SUBSCRIPTION_HEADER;
use crate::signature::{SignatureError, SIGNATURE_HEADER};

/// A call whose subscription, signature, content type and body were all checked.
pub struct Verified {
    pub(super) subscription: Arc<Subscription>,
    pub(super) event_name: String,
    pub(super) raw: Bytes,
    pub(super) body: Map,
}

impl Verified {
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.subscription
    }

    pub fn event_name(&self) -> &str {
        &self.event_name
    }
}

/// A failed check: `400 {"error": {"code", "message"}}`, signed when the subscription is known.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub subscription: Option<Arc<Subscription>>,
}

impl Refusal {
    fn new(
        code: &'static str,
        message: impl Into<String>,
        subscription: Option<&Arc<Subscription>>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            subscription: subscription.cloned(),
        }
    }
}

/// The subscription named by the headers (the first two checks).
pub fn subscription(runtime: &Runtime, headers: &HeaderMap) -> Result<Arc<Subscription>, Refusal> {
    let Some(id) = headers.get(SUBSCRIPTION_HEADER) else {
        return Err(Refusal::new(
            "NO_SUBSCRIPTION_ID",
            "X-Mplus-Subscription-Id header is missing",
            None,
        ));
    };
    let id = std::str::from_utf8(id.as_bytes().trim_ascii()).unwrap_or("");
    match runtime.config.subscriptions.get(id) {
        Some(sub) => Ok(sub.clone()),
        None => Err(Refusal::new(
            "INVALID_SUBSCRIPTION_ID",
            "X-Mplus-Subscription-Id is not a known subscription",
            None,
        )),
    }
}

/// The signature header is there (checked before the body is read).
pub fn signature_present(headers: &HeaderMap, sub: &Arc<Subscription>) -> Result<(), Refusal> {
    if headers.contains_key(SIGNATURE_HEADER) {
        Ok(())
    } else {
        Err(Refusal::new(
            "NO_SIGNATURE",
            "X-Mplus-Signature header is missing",
            Some(sub),
        ))
    }
}

/// The remaining checks, over the raw body bytes.
pub fn verify(
    sub: Arc<Subscription>,
    event_name: &str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<Verified, Refusal> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map_or(&b""[..], |v| v.as_bytes());
    if let Err(e) = sub.secret.verify(signature, &raw) {
        let message = match e {
            SignatureError::NotBase64 => "X-Mplus-Signature is not base64",
            SignatureError::Mismatch => "X-Mplus-Signature does not match the body",
        };
        return Err(Refusal::new("INVALID_SIGNATURE", message, Some(&sub)));
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return Err(Refusal::new(
            "NO_CONTENT_TYPE",
            "Content-Type header is missing",
            Some(&sub),
        ));
    };
    let essence = content_type
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    if !essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
    {
        return Err(Refusal::new(
            "INVALID_CONTENT_TYPE",
            "Content-Type must be application/json",
            Some(&sub),
        ));
    }
    let body = match body::parse(&raw) {
        Ok(body) => body,
        Err(BodyError::InvalidJson(_)) => {
            return Err(Refusal::new(
                "INVALID_JSON",
                "the body is not valid JSON",
                Some(&sub),
            ));
        }
        Err(BodyError::NotAnObject) => {
            return Err(Refusal::new(
                "INVALID_DATA",
                "the body is not a JSON object",
                Some(&sub),
            ));
        }
    };
    Ok(Verified {
        subscription: sub,
        event_name: event_name.to_owned(),
        raw,
        body,
    })
}
