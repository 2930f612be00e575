//! What a store keeps of one conversation, and the values passed in and out of it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{ConversationKey, Reply};

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

/// What a call writes back.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// `Some(new)` replaces the rule's state (`Some(None)` clears it).
    pub state: Option<Option<Bytes>>,
    pub finished: Option<FinalAnswer>,
}

impl Update {
    /// Whether writing this would change `snapshot` (beyond its version): a call that keeps
    /// polling with the state as it was has nothing to write, so it saves the store a round
    /// trip. Every field is named, so a new one must say whether it changes the record.
    pub fn changes(&self, snapshot: &Snapshot) -> bool {
        let Update { state, finished } = self;
        finished.is_some()
            || state
                .as_ref()
                .is_some_and(|new| new.as_deref() != snapshot.state.as_deref())
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
    pub attempts: u32,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub finished: bool,
    pub pending_forwards: Vec<String>,
}

impl Summary {
    pub(crate) fn new(
        key: ConversationKey,
        event: &str,
        now_ms: u64,
        first_seen_ms: u64,
        last_seen_ms: u64,
    ) -> Self {
        Self {
            key: key.to_string(),
            event: event.to_owned(),
            attempts: 0,
            age_ms: now_ms.saturating_sub(first_seen_ms),
            idle_ms: now_ms.saturating_sub(last_seen_ms),
            finished: false,
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
