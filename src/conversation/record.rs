//! What a store keeps of one conversation, and the values passed in and out of it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{ConversationKey, Reply};
use crate::telemetry::Outcome;

/// A conversation as one call sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Bumped by every successful [`super::ConversationStore::commit`].
    pub version: u64,
    /// 1 on the first call, then 2, 3, ...
    pub attempt: u32,
    pub first_seen_ms: u64,
    /// The rule's `state` map as JSON; `None` while empty.
    pub state: Option<Bytes>,
    /// The final answer, once the conversation finished.
    pub finished: Option<FinalAnswer>,
    /// Forwards by upstream name.
    pub forwards: Vec<(Arc<str>, ForwardState)>,
    /// Event, subscription and till, as the first call gave them.
    pub origin: Arc<Origin>,
    /// What the last recorded decision was and said; `None` before the first one.
    pub said: Option<Arc<Said>>,
}

impl Snapshot {
    /// The forward to `upstream`, if one was started.
    pub fn forward(&self, upstream: &str) -> Option<&ForwardState> {
        self.forwards
            .iter()
            .find(|(name, _)| &**name == upstream)
            .map(|(_, state)| state)
    }

    /// Names of forwards still waiting for a reply.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        pending(&self.forwards)
    }
}

/// Names of the forwards among `forwards` still waiting for a reply.
pub(crate) fn pending(forwards: &[(Arc<str>, ForwardState)]) -> impl Iterator<Item = &str> {
    forwards
        .iter()
        .filter(|(_, s)| matches!(s, ForwardState::Pending { .. }))
        .map(|(name, _)| &**name)
}

/// An answer given once and replayed byte for byte to later calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalAnswer {
    pub status: u16,
    pub body: Bytes,
}

/// A forward's progress.
#[derive(Debug, Clone)]
pub enum ForwardState {
    /// Sent (or being sent) by whoever holds the lease.
    Pending {
        lease_until_ms: u64,
    },
    Done(Arc<Reply>),
}

/// The till a call comes from (MPLUS.md 3: `sender.branchNumber`,
/// `sender.workplaceNumber`); a number the call lacks (or that is not a whole number from 0
/// to 4294967295) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Till {
    pub branch: Option<u32>,
    pub workplace: Option<u32>,
}

/// What the first call of a conversation tells about it, as [`super::ConversationStore::begin`]
/// takes it (borrowed: the store copies it only for a new conversation).
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    pub event: &'a str,
    pub subscription: &'a str,
    pub till: Till,
}

impl<'a> Opening<'a> {
    /// An opening that knows only the event (tests, tools).
    pub fn event(event: &'a str) -> Self {
        Self {
            event,
            subscription: "",
            till: Till::default(),
        }
    }
}

/// [`Opening`] as a store keeps it. Many conversations share one (the memory store interns
/// them), so it sits behind an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub event: Box<str>,
    pub subscription: Box<str>,
    pub till: Till,
}

impl From<Opening<'_>> for Origin {
    fn from(o: Opening<'_>) -> Self {
        Self {
            event: o.event.into(),
            subscription: o.subscription.into(),
            till: o.till,
        }
    }
}

/// A message kept in a record is cut to this many bytes (at a character boundary): the
/// console shows a line, and a conversation's record stays small (GATEWAY.md 7).
pub const MAX_SAID_BYTES: usize = 256;

/// The last decision recorded for a conversation: how the call ended (the
/// `pollgate_requests_total{outcome}` names: `finished`, `keep_polling`, `answered`,
/// `rejected`, `rule_error`, `timeout`) and the cashier's `message` and `customerMessage`
/// it answered (empty when it had none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Said {
    pub decision: Outcome,
    pub message: Box<str>,
    pub customer_message: Box<str>,
}

impl Said {
    /// `decision` with both messages cut to [`MAX_SAID_BYTES`].
    pub fn new(decision: Outcome, message: &str, customer_message: &str) -> Self {
        Self {
            decision,
            message: cut(message).into(),
            customer_message: cut(customer_message).into(),
        }
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_SAID_BYTES {
        return text;
    }
    let mut end = MAX_SAID_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What a call writes back.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// `Some(new)` replaces the rule's state (`Some(None)` clears it).
    pub state: Option<Option<Bytes>>,
    pub finished: Option<FinalAnswer>,
    /// `Some` replaces the last decision.
    pub said: Option<Said>,
}

impl Update {
    /// An update that records only what a decision said.
    pub fn said(said: Said) -> Self {
        Self {
            said: Some(said),
            ..Self::default()
        }
    }
}

impl Update {
    /// Whether writing this would change `snapshot` (beyond its version): a call that keeps
    /// polling with the state as it was has nothing to write, so it saves the store a round
    /// trip. Every field is named, so a new one must say whether it changes the record.
    pub fn changes(&self, snapshot: &Snapshot) -> bool {
        let Update {
            state,
            finished,
            said,
        } = self;
        finished.is_some()
            || state
                .as_ref()
                .is_some_and(|new| new.as_deref() != snapshot.state.as_deref())
            // What the console shows as the last decision and message.
            || said
                .as_ref()
                .is_some_and(|new| snapshot.said.as_deref() != Some(new))
    }
}

/// The result of a compare-and-set.
#[derive(Debug)]
pub enum Commit {
    Saved,
    /// Someone wrote first: this is the conversation now (the caller decides again).
    Conflict(Snapshot),
}

/// One live conversation, for `GET /conversations` (no bodies, no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub key: String,
    pub event: String,
    pub subscription: String,
    pub till: Till,
    pub attempts: u32,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub finished: bool,
    #[serde(flatten)]
    pub last: LastSaid,
    pub pending_forwards: Vec<String>,
}

/// [`Said`] as the admin listener shows it: `decision`, `message` and `customer_message`,
/// each `null` when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LastSaid {
    pub decision: Option<&'static str>,
    pub message: Option<String>,
    pub customer_message: Option<String>,
}

impl From<Option<&Said>> for LastSaid {
    fn from(said: Option<&Said>) -> Self {
        let Some(said) = said else {
            return Self::default();
        };
        let text = |t: &str| (!t.is_empty()).then(|| t.to_owned());
        Self {
            decision: Some(said.decision.label()),
            message: text(&said.message),
            customer_message: text(&said.customer_message),
        }
    }
}

impl Summary {
    pub(crate) fn new(
        key: ConversationKey,
        origin: &Origin,
        now_ms: u64,
        first_seen_ms: u64,
        last_seen_ms: u64,
    ) -> Self {
        Self {
            key: key.to_string(),
            event: origin.event.to_string(),
            subscription: origin.subscription.to_string(),
            till: origin.till,
            attempts: 0,
            age_ms: now_ms.saturating_sub(first_seen_ms),
            idle_ms: now_ms.saturating_sub(last_seen_ms),
            finished: false,
            last: LastSaid::default(),
            pending_forwards: Vec::new(),
        }
    }

    /// The `limit` youngest of `summaries`, youngest first: what `list` answers.
    pub(crate) fn newest_first(mut summaries: Vec<Summary>, limit: usize) -> Vec<Summary> {
        summaries.sort_by_key(|s| s.age_ms);
        summaries.truncate(limit);
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_kept_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let said = Said::new(Outcome::KeepPolling, &long, "short");
        assert_eq!(said.message.len(), MAX_SAID_BYTES);
        assert_eq!(&*said.message, "é".repeat(128));
        assert_eq!(&*said.customer_message, "short");
        let odd = format!("a{long}");
        assert_eq!(
            Said::new(Outcome::Finished, &odd, "").message.len(),
            MAX_SAID_BYTES - 1
        );
    }

    #[test]
    fn the_listing_shows_no_decision_as_nulls_and_empty_messages_as_null() {
        assert_eq!(LastSaid::from(None), LastSaid::default());
        let said = Said::new(Outcome::TimedOut, "", "Bye");
        assert_eq!(
            LastSaid::from(Some(&said)),
            LastSaid {
                decision: Some("timeout"),
                message: None,
                customer_message: Some("Bye".into()),
            }
        );
    }
}
