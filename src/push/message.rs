//! What a mailbox holds: a [`Till`] (subscription, branch, workplace) and its
//! [`Message`]s, each with a [`MessageId`].

use std::fmt;

use bytes::Bytes;
use rhai::{Dynamic, Map};
use sha2::{Digest, Sha256};

/// One till, as a push addresses it and as its backgroundPoll calls name it
/// (`X-Mplus-Subscription-Id`, `sender.branchNumber`, `sender.workplaceNumber`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Till {
    pub subscription: String,
    pub branch: String,
    pub workplace: String,
}

impl Till {
    pub fn new(subscription: &str, branch: &str, workplace: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            branch: branch.to_owned(),
            workplace: workplace.to_owned(),
        }
    }

    /// The till that sent a call with `body`: its branch and workplace numbers as text
    /// (a number as its decimal digits, a string as it is; missing ones are `""`, which
    /// no push path can name).
    pub fn of_call(subscription: &str, body: &Map) -> Self {
        let sender = body.get("sender").and_then(|s| s.as_map_ref().ok());
        let part = |name: &str| {
            sender
                .as_ref()
                .and_then(|s| s.get(name))
                .map_or_else(String::new, text)
        };
        Self {
            subscription: subscription.to_owned(),
            branch: part("branchNumber"),
            workplace: part("workplaceNumber"),
        }
    }

    /// A fixed-length name of the till, safe in a Redis key's hash tag whatever the
    /// subscription's id holds: 32 hex digits of SHA-256 over its three parts.
    pub fn tag(&self) -> String {
        let mut hash = Sha256::new();
        for part in [&self.subscription, &self.branch, &self.workplace] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A sender number as the till's address text.
fn text(value: &Dynamic) -> String {
    if let Ok(n) = value.as_int() {
        return n.to_string();
    }
    if let Ok(f) = value.as_float() {
        if f.fract() == 0.0 && f.abs() < 1e15 {
            return format!("{f:.0}");
        }
    }
    value.clone().into_string().unwrap_or_default()
}

/// A message's id: 128 random bits, shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub u128);

impl MessageId {
    pub fn random() -> Self {
        Self(fastrand::u128(..))
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(text, 16).ok().map(Self))
            .flatten()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One pushed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    /// The JSON object the back end pushed, byte for byte.
    pub body: Bytes,
    pub queued_ms: u64,
    pub expires_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_names_its_till_by_subscription_branch_and_workplace() {
        let body =
            crate::body::parse(br#"{"sender":{"branchNumber":3,"workplaceNumber":"2"}}"#).unwrap();
        assert_eq!(Till::of_call("shop", &body), Till::new("shop", "3", "2"));
        let none = crate::body::parse(b"{}").unwrap();
        assert_eq!(Till::of_call("shop", &none), Till::new("shop", "", ""));
    }

    #[test]
    fn tags_are_32_hex_digits_and_tell_the_parts_apart() {
        let a = Till::new("shop", "12", "3").tag();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, Till::new("shop", "1", "23").tag());
        assert_eq!(a, Till::new("shop", "12", "3").tag());
    }

    #[test]
    fn message_ids_read_back_from_their_hex() {
        let id = MessageId::random();
        assert_eq!(MessageId::from_hex(&id.to_string()), Some(id));
        assert_eq!(MessageId::from_hex("xyz"), None);
        assert_eq!(MessageId::from_hex(&"g".repeat(32)), None);
    }
}
