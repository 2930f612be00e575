//! The conversation key (GATEWAY.md 3, MPLUS.md 5): which calls are the same conversation.
//!
//! A SHA-256 over the configured parts, cut to 128 bits and written as 32 hex characters:
//! the same on every replica, short enough to be a Redis key and an `Idempotency-Key`.
//! `eventCounter` is never a part: tills may reset it or change it between polls.

use std::fmt;

use rhai::{Dynamic, Map};
use sha2::{Digest, Sha256};

use crate::body::Wanted;
use crate::config::KeyPart;

/// A conversation's identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConversationKey([u8; 16]);

impl std::hash::Hash for ConversationKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The key is already a cryptographic hash: eight of its bytes are a fine hash.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl ConversationKey {
    /// Derives the key of a call from its parsed body.
    pub fn derive(parts: &[KeyPart], subscription: &str, event_name: &str, body: &Map) -> Self {
        let mut h = Sha256::new();
        for &part in parts {
            h.update([part as u8]);
            match (part, location(part, event_name)) {
                (KeyPart::Subscription, _) => feed_str(&mut h, subscription),
                (KeyPart::Event, _) => feed_str(&mut h, event_name),
                (_, Some((object, Some(name)))) => feed_field(&mut h, body, object, name),
                (_, Some((value, None))) => feed_opt(&mut h, body.get(value)),
                (_, None) => {}
            }
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }

    /// The parts of a body [`derive`](Self::derive) reads.
    pub fn reads(parts: &[KeyPart], event_name: &str) -> Wanted {
        parts
            .iter()
            .filter_map(|&part| location(part, event_name))
            .fold(Wanted::none(), |wanted, (at, field)| {
                let path: &[&str] = match &field {
                    Some(name) => &[at, name],
                    None => &[at],
                };
                wanted.union(Wanted::path(path))
            })
    }

    /// The key from its 32-character hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut key = [0u8; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(key))
    }

    /// The 32 hex digits of the key. Written by hand, not through `fmt`: this runs on every
    /// call (the rule's `poll.key`, the access log), where `to_string` cost ~0.4 µs.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(32);
        for &b in &self.0 {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        text
    }

    /// A key from its raw bytes (as [`ConversationKey::as_bytes`] gives them).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationKey({self})")
    }
}

/// Feeds `body.object.name` (or its absence).
/// Where a part is in the body: a field of an object, or a value of its own (`None`: the
/// part is not in the body).
fn location(part: KeyPart, event_name: &str) -> Option<(&str, Option<&'static str>)> {
    match part {
        KeyPart::Subscription | KeyPart::Event => None,
        KeyPart::Branch => Some(("sender", Some("branchNumber"))),
        KeyPart::Workplace => Some(("sender", Some("workplaceNumber"))),
        KeyPart::Instance => Some(("sender", Some("instanceId"))),
        KeyPart::Session => Some(("session", Some("sessionId"))),
        KeyPart::Timestamp => Some(("event", Some("eventTimestamp"))),
        KeyPart::Object => Some((event_name, None)),
        KeyPart::Dialog => Some(("dialog", None)),
    }
}

fn feed_field(h: &mut Sha256, body: &Map, object: &str, name: &str) {
    match body.get(object).and_then(|o| o.as_map_ref().ok()) {
        Some(map) => feed_opt(h, map.get(name)),
        None => feed_opt(h, None),
    }
}

fn feed_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn feed_opt(h: &mut Sha256, value: Option<&Dynamic>) {
    match value {
        None => h.update([0]),
        Some(v) => feed(h, v),
    }
}

/// A canonical, type-tagged walk: equal JSON values feed equal bytes (maps are sorted).
fn feed(h: &mut Sha256, value: &Dynamic) {
    if let Ok(b) = value.as_bool() {
        h.update([1, u8::from(b)]);
    } else if let Ok(i) = value.as_int() {
        h.update([2]);
        h.update(i.to_le_bytes());
    } else if let Ok(f) = value.as_float() {
        h.update([3]);
        h.update(f.to_bits().to_le_bytes());
    } else if let Ok(s) = value.as_immutable_string_ref() {
        h.update([4]);
        feed_str(h, &s);
    } else if let Ok(items) = value.as_array_ref() {
        h.update([5]);
        h.update((items.len() as u64).to_le_bytes());
        for item in items.iter() {
            feed(h, item);
        }
    } else if let Ok(map) = value.as_map_ref() {
        h.update([6]);
        h.update((map.len() as u64).to_le_bytes());
        for (k, v) in map.iter() {
            feed_str(h, k);
            feed(h, v);
        }
    } else {
        // `null` and anything else JSON cannot produce.
        h.update([7]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Map {
        serde_json::from_str::<Dynamic>(json)
            .expect("json")
            .try_cast::<Map>()
            .expect("map")
    }

    fn key(json: &str) -> ConversationKey {
        ConversationKey::derive(&KeyPart::ALL, "sub", "addSessionLine", &body(json))
    }

    const BASE: &str = r#"{"event":{"eventCounter":1,"eventTimestamp":"T1"},"sender":{"branchNumber":1,"workplaceNumber":2,"instanceId":"i"},"session":{"sessionId":"s"},"addSessionLine":{"lineId":"l","priceIncl":2.5}}"#;

    #[test]
    fn event_counter_does_not_change_the_key() {
        let other = BASE.replace(r#""eventCounter":1"#, r#""eventCounter":7"#);
        assert_eq!(key(BASE), key(&other));
    }

    #[test]
    fn timestamp_session_till_and_object_change_the_key() {
        for (from, to) in [
            ("\"T1\"", "\"T2\""),
            ("\"sessionId\":\"s\"", "\"sessionId\":\"\""),
            ("\"workplaceNumber\":2", "\"workplaceNumber\":3"),
            ("\"lineId\":\"l\"", "\"lineId\":\"m\""),
        ] {
            let other = BASE.replace(from, to);
            assert_ne!(other, BASE);
            assert_ne!(key(BASE), key(&other), "changing {from} to {to}");
        }
    }

    #[test]
    fn field_order_and_number_spelling_do_not_change_the_key() {
        let reordered = r#"{"addSessionLine":{"priceIncl":2.50,"lineId":"l"},"session":{"sessionId":"s"},"sender":{"instanceId":"i","workplaceNumber":2,"branchNumber":1},"event":{"eventTimestamp":"T1","eventCounter":9}}"#;
        assert_eq!(key(BASE), key(reordered));
    }

    #[test]
    fn configured_parts_limit_what_counts() {
        let parts = [KeyPart::Subscription, KeyPart::Session];
        let a = ConversationKey::derive(&parts, "sub", "x", &body(BASE));
        let b = ConversationKey::derive(&parts, "sub", "x", &body(&BASE.replace("T1", "T2")));
        assert_eq!(a, b);
    }

    #[test]
    fn hex_form_round_trips() {
        let k = key(BASE);
        let text = k.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(k.to_hex(), text);
        for hex in [
            "00000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffff",
            "a0b1c2d3e4f5061728394a5b6c7d8e9f",
        ] {
            assert_eq!(
                ConversationKey::from_hex(hex)
                    .map(|k| k.to_string())
                    .as_deref(),
                Some(hex)
            );
        }
        assert_eq!(ConversationKey::from_hex(&text), Some(k));
        assert_eq!(ConversationKey::from_hex("zz"), None);
    }
}
