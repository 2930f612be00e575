//! Durable delivery (GATEWAY.md 8): the queue of events a back end must get even while it
//! is down, and the workers that deliver them.
//!
//! [`Outbox`] is the seam; [`EmbeddedOutbox`] keeps the queue in a crash-safe embedded
//! database under `outbox.path` (the memory store's companion), [`RedisOutbox`] in Redis
//! (any replica delivers). [`Queue`] picks one from config. Both pass one conformance
//! suite. The pipeline only [`Outbox::enqueue`]s; [`worker`] delivers.
//!
//! A delivery's id derives from its conversation key and upstream ([`DeliveryId::of`]), so
//! a duplicate call queues nothing: one delivery per conversation and upstream.
//!
//! Claims: a worker [`Outbox::claim`]s due deliveries with a lease; until it ends nobody
//! else gets them. A worker that dies (a replica's `kill -9`) leaves its claims to run
//! out, and the deliveries are due again (at least once).

#[cfg(test)]
mod conformance;
mod embedded;
mod record;
mod redis;
pub mod retry;
pub mod worker;

use std::future::Future;

pub use embedded::EmbeddedOutbox;
pub use record::{Delivery, DeliveryId, NewDelivery, Status};
pub use redis::RedisOutbox;
pub use worker::Deliverer;

/// Why the outbox could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox unavailable: {0}")]
    Unavailable(String),
    #[error("outbox timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("outbox record is corrupt: {0}")]
    Corrupt(String),
}

/// How many of an upstream's deliveries are pending and dead, and when the oldest pending
/// one was queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    pub oldest_queued_ms: Option<u64>,
}

/// A failed attempt's consequence, as the worker decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again at `next_ms`.
    Retry { next_ms: u64, error: String },
    /// Give up; kept as dead until retried or deleted.
    Dead { error: String },
}

/// Where durable deliveries wait. Every method is atomic per delivery; what a method
/// changes has reached durable storage (or Redis) when it returns `Ok`.
pub trait Outbox: Send + Sync + 'static {
    /// Queues `delivery` unless one with its id is there already (pending or dead): true
    /// when it was queued now.
    fn enqueue(
        &self,
        delivery: NewDelivery,
    ) -> impl Future<Output = Result<bool, OutboxError>> + Send;

    /// Up to `limit` pending deliveries of `upstream` that are due at `now_ms` and not
    /// claimed, oldest due first, each claimed until `now_ms + lease_ms`.
    fn claim(
        &self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, OutboxError>> + Send;

    /// When the next pending delivery of `upstream` is due (its claim's end if claimed).
    fn next_due(
        &self,
        upstream: &str,
    ) -> impl Future<Output = Result<Option<u64>, OutboxError>> + Send;

    /// A claimed delivery arrived: it is gone.
    fn delivered(
        &self,
        upstream: &str,
        id: DeliveryId,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// A claimed delivery's attempt failed: one more attempt counted, and retried or dead.
    fn failed(
        &self,
        upstream: &str,
        id: DeliveryId,
        failure: Failure,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Gives back a claim without an attempt (shutdown): due again at once.
    fn release(
        &self,
        upstream: &str,
        id: DeliveryId,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// One delivery, pending or dead.
    fn get(
        &self,
        upstream: &str,
        id: DeliveryId,
    ) -> impl Future<Output = Result<Option<Delivery>, OutboxError>> + Send;

    /// Deliveries of `upstream` with `status`: pending by due time, dead by death, at most
    /// `limit`.
    fn list(
        &self,
        upstream: &str,
        status: Status,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, OutboxError>> + Send;

    /// Makes a delivery due at `now_ms`; a dead one starts afresh (age and attempts).
    /// False when there is none with that id.
    fn retry(
        &self,
        upstream: &str,
        id: DeliveryId,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, OutboxError>> + Send;

    /// Every dead delivery of `upstream` starts afresh; how many did.
    fn retry_dead(
        &self,
        upstream: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// Forgets a delivery; false when there is none with that id.
    fn delete(
        &self,
        upstream: &str,
        id: DeliveryId,
    ) -> impl Future<Output = Result<bool, OutboxError>> + Send;

    /// Pending and dead deliveries of `upstream`.
    fn counts(&self, upstream: &str) -> impl Future<Output = Result<Counts, OutboxError>> + Send;

    /// Whether the outbox answers.
    fn ping(&self) -> impl Future<Output = Result<(), OutboxError>> + Send;
}

/// The configured outbox: a cheap-clone handle.
#[derive(Clone)]
pub enum Queue {
    Embedded(EmbeddedOutbox),
    Redis(RedisOutbox),
}

impl Queue {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis(_) => "redis",
        }
    }

    /// Whether other processes may queue for the same upstreams (so a worker also looks
    /// now and then, not only when this process queues).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $call:expr) => {
        match $self {
            Queue::Embedded($q) => $call.await,
            Queue::Redis($q) => $call.await,
        }
    };
}

impl Outbox for Queue {
    async fn enqueue(&self, delivery: NewDelivery) -> Result<bool, OutboxError> {
        dispatch!(self, q => q.enqueue(delivery))
    }

    async fn claim(
        &self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        dispatch!(self, q => q.claim(upstream, now_ms, lease_ms, limit))
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<u64>, OutboxError> {
        dispatch!(self, q => q.next_due(upstream))
    }

    async fn delivered(&self, upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        dispatch!(self, q => q.delivered(upstream, id))
    }

    async fn failed(
        &self,
        upstream: &str,
        id: DeliveryId,
        failure: Failure,
    ) -> Result<(), OutboxError> {
        dispatch!(self, q => q.failed(upstream, id, failure))
    }

    async fn release(&self, upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        dispatch!(self, q => q.release(upstream, id))
    }

    async fn get(&self, upstream: &str, id: DeliveryId) -> Result<Option<Delivery>, OutboxError> {
        dispatch!(self, q => q.get(upstream, id))
    }

    async fn list(
        &self,
        upstream: &str,
        status: Status,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        dispatch!(self, q => q.list(upstream, status, limit))
    }

    async fn retry(
        &self,
        upstream: &str,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<bool, OutboxError> {
        dispatch!(self, q => q.retry(upstream, id, now_ms))
    }

    async fn retry_dead(&self, upstream: &str, now_ms: u64) -> Result<u64, OutboxError> {
        dispatch!(self, q => q.retry_dead(upstream, now_ms))
    }

    async fn delete(&self, upstream: &str, id: DeliveryId) -> Result<bool, OutboxError> {
        dispatch!(self, q => q.delete(upstream, id))
    }

    async fn counts(&self, upstream: &str) -> Result<Counts, OutboxError> {
        dispatch!(self, q => q.counts(upstream))
    }

    async fn ping(&self) -> Result<(), OutboxError> {
        dispatch!(self, q => q.ping())
    }
}
