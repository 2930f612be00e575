//! What the pipeline hands back to the HTTP layer: status, exact body bytes, and what
//! happened, for the access log and metrics.

use bytes::Bytes;

use crate::conversation::ConversationKey;
use crate::telemetry::Outcome;

/// Facts about a call for its log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallNote {
    pub key: Option<ConversationKey>,
    pub attempt: u32,
    /// `""`, `"pending"` or `"done"`.
    pub forward: &'static str,
}

/// The answer to send, before signing.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub outcome: Outcome,
    pub note: CallNote,
}

impl CallNote {
    /// The conversation key as hex, `""` without one (the access log's `key`).
    pub fn key_text(&self) -> String {
        self.key
            .as_ref()
            .map(ConversationKey::to_hex)
            .unwrap_or_default()
    }
}

impl Answer {
    pub fn json(status: u16, body: Bytes, outcome: Outcome, note: CallNote) -> Self {
        Self {
            status,
            body,
            outcome,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_the_key_in_hex_or_empty() {
        let key = ConversationKey::from_hex("0123456789abcdeffedcba9876543210").expect("hex key");
        let note = CallNote {
            key: Some(key),
            ..CallNote::default()
        };
        assert_eq!(note.key_text(), "0123456789abcdeffedcba9876543210");
        assert_eq!(CallNote::default().key_text(), "");
    }
}
