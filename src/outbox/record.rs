//! What the outbox keeps per delivery, and its compact encoding for the embedded store.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::conversation::ConversationKey;

/// A delivery's identity: the conversation key and the upstream, hashed, so the same
/// conversation queues one delivery per upstream whoever queues it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId([u8; 16]);

impl DeliveryId {
    pub fn of(key: ConversationKey, upstream: &str) -> Self {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(upstream.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize()[..16]);
        Self(id)
    }

    /// The id from its 32-character hex form (`None` for anything else).
    pub fn from_hex(text: &str) -> Option<Self> {
        ConversationKey::from_hex(text).map(|k| Self(*k.as_bytes()))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn bytes(self) -> [u8; 16] {
        self.0
    }

    pub fn to_hex(self) -> String {
        ConversationKey::from_bytes(self.0).to_hex()
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({self})")
    }
}

/// Pending (due now or later, perhaps claimed) or dead (kept for an operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Dead,
}

impl Status {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// What the pipeline queues.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub upstream: String,
    pub event: String,
    pub key: ConversationKey,
    /// The calling subscription: whose secret signs the delivery when the upstream has none.
    pub subscription: String,
    /// The bytes to POST: the till's body, or the rule's.
    pub body: Bytes,
    pub now_ms: u64,
}

impl NewDelivery {
    pub fn id(&self) -> DeliveryId {
        DeliveryId::of(self.key, &self.upstream)
    }
}

/// A queued delivery as the outbox has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub upstream: String,
    pub event: String,
    pub key: ConversationKey,
    pub subscription: String,
    pub body: Bytes,
    pub status: Status,
    /// When it was queued (or retried afresh); `max_age` counts from here.
    pub queued_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_ms: u64,
    pub last_error: Option<String>,
}

impl Delivery {
    pub fn new(new: NewDelivery) -> Self {
        Self {
            id: new.id(),
            upstream: new.upstream,
            event: new.event,
            key: new.key,
            subscription: new.subscription,
            body: new.body,
            status: Status::Pending,
            queued_ms: new.now_ms,
            attempts: 0,
            next_ms: new.now_ms,
            last_error: None,
        }
    }

    /// Due now, counted afresh: what an operator's retry of a dead delivery does.
    pub fn revive(&mut self, now_ms: u64) {
        if self.status == Status::Dead {
            self.queued_ms = now_ms;
            self.attempts = 0;
            self.last_error = None;
        }
        self.status = Status::Pending;
        self.next_ms = now_ms;
    }
}

/// Everything but the body, as JSON (small, readable in a debugger).
#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    upstream: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    key: String,
    #[serde(borrow)]
    subscription: Cow<'a, str>,
    status: Status,
    queued_ms: u64,
    attempts: u32,
    next_ms: u64,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    last_error: Option<Cow<'a, str>>,
}

/// `[meta length: u32 LE][meta JSON][body bytes]`.
pub(super) fn encode(d: &Delivery) -> Vec<u8> {
    let meta = Meta {
        upstream: Cow::Borrowed(&d.upstream),
        event: Cow::Borrowed(&d.event),
        key: d.key.to_hex(),
        subscription: Cow::Borrowed(&d.subscription),
        status: d.status,
        queued_ms: d.queued_ms,
        attempts: d.attempts,
        next_ms: d.next_ms,
        last_error: d.last_error.as_deref().map(Cow::Borrowed),
    };
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + meta.len() + d.body.len());
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&d.body);
    out
}

pub(super) fn decode(id: DeliveryId, bytes: &[u8]) -> Result<Delivery, String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("shorter than its header")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("shorter than its metadata".into());
    }
    let (meta, body) = rest.split_at(len);
    let meta: Meta<'_> = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    let key = ConversationKey::from_hex(&meta.key).ok_or("bad conversation key")?;
    Ok(Delivery {
        id,
        upstream: meta.upstream.into_owned(),
        event: meta.event.into_owned(),
        key,
        subscription: meta.subscription.into_owned(),
        body: Bytes::copy_from_slice(body),
        status: meta.status,
        queued_ms: meta.queued_ms,
        attempts: meta.attempts,
        next_ms: meta.next_ms,
        last_error: meta.last_error.map(Cow::into_owned),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_delivery_survives_its_encoding_byte_for_byte() {
        let key = ConversationKey::from_hex("0123456789abcdeffedcba9876543210").unwrap();
        let mut d = Delivery::new(NewDelivery {
            upstream: "erp".into(),
            event: "completeSession".into(),
            key,
            subscription: "shop".into(),
            body: Bytes::from_static(b"{\"a\":\"\\u00e9\"}\n\x00"),
            now_ms: 7,
        });
        d.last_error = Some("503 \"x\"".into());
        let back = decode(d.id, &encode(&d)).unwrap();
        assert_eq!(back, d);
        assert_eq!(DeliveryId::from_hex(&d.id.to_hex()), Some(d.id));
        assert_ne!(DeliveryId::of(key, "erp"), DeliveryId::of(key, "crm"));
        assert!(decode(d.id, b"\x05\0\0\0{").is_err());
    }
}
