//! Conversations (GATEWAY.md 3): what pollgate remembers between the polls of one event.
//!
//! [`ConversationStore`] is the seam; [`MemoryStore`] keeps conversations in this process,
//! [`RedisStore`] shares them between replicas. [`Store`] picks one from config. Every
//! change is atomic per conversation: attempts are counted by [`ConversationStore::begin`],
//! the rule's state and the final answer are written by a compare-and-set on `version`,
//! and each forward is claimed once with an expiring lease.

mod clock;
#[cfg(test)]
pub(crate) mod conformance;
mod key;
mod memory;
mod record;
mod redis;
mod reply;

use std::future::Future;

pub use clock::Clock;
pub use key::ConversationKey;
pub use memory::MemoryStore;
// The parts are config (`state.key`); re-exported beside the key they make.
pub use crate::config::KeyPart;
pub use record::{Commit, FinalAnswer, ForwardState, Snapshot, Summary, Update};
pub use redis::RedisStore;
pub use reply::Reply;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conversation store unavailable: {0}")]
    Unavailable(String),
    #[error("conversation store timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("conversation record is corrupt: {0}")]
    Corrupt(String),
    /// `state.max_conversations` reached with no finished conversation to make room for a
    /// new one (GATEWAY.md 12); conversations already held go on.
    #[error("conversation store is full: all {max} conversations (state.max_conversations) are still going on")]
    Full { max: usize },
    /// The outbox could not queue a durable delivery (GATEWAY.md 8): the call is answered
    /// like any other store failure.
    #[error("the outbox cannot accept the delivery: {0}")]
    Outbox(String),
}

impl StoreError {
    /// The conversation expired between `begin` and `commit` (a TTL shorter than a call).
    pub(crate) fn expired_during_call() -> Self {
        Self::Corrupt("conversation expired during the call".into())
    }
}

/// Where conversations live. Implementations must make each method atomic per conversation.
pub trait ConversationStore: Send + Sync + 'static {
    /// Counts a new call: creates the conversation if needed, adds one to its attempts,
    /// refreshes its TTL, and returns it as it now is.
    fn begin(
        &self,
        key: ConversationKey,
        event: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// The conversation as it is, without counting a call.
    fn load(
        &self,
        key: ConversationKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Writes the rule's state and, once finished, the final answer, if nobody else wrote
    /// since `version`; otherwise returns the newer conversation.
    fn commit(
        &self,
        key: ConversationKey,
        version: u64,
        update: Update,
        now_ms: u64,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Claims the right to send the forward to `upstream`: true for exactly one caller,
    /// unless that caller's lease ran out without a reply.
    fn claim_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Extends the lease of a forward its claimer is still sending (a forward may queue for
    /// a connection longer than its lease foresaw); false once it is no longer pending.
    fn renew_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records the reply of a claimed forward.
    fn complete_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        reply: &Reply,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Live conversations, newest first, at most `limit`.
    fn list(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Summary>, StoreError>> + Send;

    /// How many conversations are live.
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store: a cheap-clone handle.
#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// The Redis arm is boxed: a Redis command's future is large, and inline it would size
/// every call's future, memory-store calls and held calls included (an allocation per
/// command is nothing beside a network round trip).
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Memory($s) => $call.await,
            Store::Redis($s) => Box::pin($call).await,
        }
    };
}

impl ConversationStore for Store {
    async fn begin(
        &self,
        key: ConversationKey,
        event: &str,
        now_ms: u64,
    ) -> Result<Snapshot, StoreError> {
        dispatch!(self, s => s.begin(key, event, now_ms))
    }

    async fn load(&self, key: ConversationKey) -> Result<Option<Snapshot>, StoreError> {
        dispatch!(self, s => s.load(key))
    }

    async fn commit(
        &self,
        key: ConversationKey,
        version: u64,
        update: Update,
        now_ms: u64,
    ) -> Result<Commit, StoreError> {
        dispatch!(self, s => s.commit(key, version, update, now_ms))
    }

    async fn claim_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.claim_forward(key, upstream, now_ms, lease_until_ms))
    }

    async fn renew_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew_forward(key, upstream, lease_until_ms))
    }

    async fn complete_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        reply: &Reply,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.complete_forward(key, upstream, reply))
    }

    async fn list(&self, now_ms: u64, limit: usize) -> Result<Vec<Summary>, StoreError> {
        dispatch!(self, s => s.list(now_ms, limit))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping())
    }
}
