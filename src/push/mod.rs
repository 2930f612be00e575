//! Pushing to a till (GATEWAY.md 9): a till's mailbox of messages from back ends, taken
//! one per backgroundPoll conversation.
//!
//! [`PushMailbox`] is the seam; [`MemoryMailbox`] keeps messages in this process,
//! [`RedisMailbox`] shares them between replicas (a list per till, and a pub/sub wake-up
//! that reaches whichever replica holds the till's call). [`Mailbox`] picks one from
//! config; [`Push`] is the gateway's handle around it: metrics, the hold of a call
//! ([`hold`]) and the release of held calls on reload and shutdown.

mod hold;
mod memory;
mod message;
mod redis;
mod wakers;

#[cfg(test)]
mod conformance;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use hold::{Push, MAX_LISTED};
pub use memory::MemoryMailbox;
pub use message::{Message, MessageId, Till};
pub use redis::RedisMailbox;
pub use wakers::Wakers;

/// Why the mailbox could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    #[error("push mailbox unavailable: {0}")]
    Unavailable(String),
    #[error("push mailbox timed out after {0:?}")]
    Timeout(Duration),
    #[error("push mailbox record is corrupt: {0}")]
    Corrupt(String),
}

/// A till's pending messages, oldest first, and how many expired ones were dropped while
/// looking.
#[derive(Debug, Default)]
pub struct Pending {
    pub messages: Vec<Message>,
    pub expired: u64,
}

/// The whole mailbox at a scrape: messages pending, and expired ones dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub pending: u64,
    pub expired: u64,
}

/// Every till's pending messages (the console's and `GET /push`'s list), newest first, and
/// how many expired ones were dropped while looking.
#[derive(Debug, Default)]
pub struct Every {
    pub messages: Vec<(Till, Message)>,
    pub expired: u64,
}

impl Every {
    /// Keeps the `limit` newest, newest first (ties by id, so the order is stable).
    fn newest_first(&mut self, limit: usize) {
        self.messages
            .sort_unstable_by_key(|(_, m)| std::cmp::Reverse((m.queued_ms, m.id.0)));
        self.messages.truncate(limit);
    }
}

/// Where pushed messages live. Every method is atomic per till; a push wakes every call
/// held for its till on any handle of the same mailbox (every replica, for Redis).
pub trait PushMailbox: Send + Sync + 'static {
    /// Queues `body` (a JSON object's bytes) for `till`, expiring at `expires_ms`.
    fn push(
        &self,
        till: &Till,
        body: Bytes,
        now_ms: u64,
        expires_ms: u64,
    ) -> impl Future<Output = Result<Message, PushError>> + Send;

    /// The till's unexpired messages, oldest first, at most `limit`; expired ones are
    /// dropped on the way.
    fn pending(
        &self,
        till: &Till,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Pending, PushError>> + Send;

    /// Removes one message (delivered or withdrawn); false when it is not there.
    fn remove(
        &self,
        till: &Till,
        id: MessageId,
    ) -> impl Future<Output = Result<bool, PushError>> + Send;

    /// Drops every expired message of every till and counts what is left.
    fn sweep(&self, now_ms: u64) -> impl Future<Output = Result<Swept, PushError>> + Send;

    /// Every till's unexpired messages, newest first, at most `limit`; expired ones are
    /// dropped on the way.
    fn every(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Every, PushError>> + Send;

    /// The wakers of calls held on this handle.
    fn wakers(&self) -> &Wakers;
}

/// The configured mailbox: a cheap-clone handle.
#[derive(Clone)]
pub enum Mailbox {
    Memory(MemoryMailbox),
    Redis(RedisMailbox),
}

/// As the conversation store's: the Redis arm's futures are boxed, so they do not size
/// every held call's future.
macro_rules! dispatch {
    ($self:ident, $m:ident => $call:expr) => {
        match $self {
            Mailbox::Memory($m) => $call.await,
            Mailbox::Redis($m) => Box::pin($call).await,
        }
    };
}

impl PushMailbox for Mailbox {
    async fn push(
        &self,
        till: &Till,
        body: Bytes,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Message, PushError> {
        dispatch!(self, m => m.push(till, body, now_ms, expires_ms))
    }

    async fn pending(&self, till: &Till, now_ms: u64, limit: usize) -> Result<Pending, PushError> {
        dispatch!(self, m => m.pending(till, now_ms, limit))
    }

    async fn remove(&self, till: &Till, id: MessageId) -> Result<bool, PushError> {
        dispatch!(self, m => m.remove(till, id))
    }

    async fn sweep(&self, now_ms: u64) -> Result<Swept, PushError> {
        dispatch!(self, m => m.sweep(now_ms))
    }

    async fn every(&self, now_ms: u64, limit: usize) -> Result<Every, PushError> {
        dispatch!(self, m => m.every(now_ms, limit))
    }

    fn wakers(&self) -> &Wakers {
        match self {
            Self::Memory(m) => m.wakers(),
            Self::Redis(m) => m.wakers(),
        }
    }
}

impl Mailbox {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}
