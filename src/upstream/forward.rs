//! Background forwards: claimed once per conversation and upstream in the store, sent by a
//! task that outlives the call that started it, and waited for (up to `hold`) by any call
//! of the conversation, in this process or, through the store, in another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Outgoing, UpstreamClient};
use crate::config::millis;
use crate::conversation::{Clock, ConversationKey, ConversationStore, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;

/// How often a waiter re-reads the store when the forward runs in another process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lease slack beyond the upstream's own budget before another replica may resend.
const LEASE_SLACK: Duration = Duration::from_secs(2);

type InFlight = HashMap<(ConversationKey, Arc<str>), watch::Receiver<bool>>;

/// Starts and tracks background forwards; a cheap-clone handle.
#[derive(Clone)]
pub struct Forwarder {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Forwards this process is sending; waiters here are woken at once when one ends.
    in_flight: Arc<Mutex<InFlight>>,
    tasks: TaskTracker,
}

impl Forwarder {
    pub fn new(store: Store, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            clock,
            metrics,
            in_flight: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// Claims the forward and, if this call won the claim, sends it in the background.
    /// Returns whether this call started it.
    pub async fn start(
        &self,
        client: Arc<dyn UpstreamClient>,
        key: ConversationKey,
        budget: Duration,
        outgoing: Outgoing,
    ) -> Result<bool, StoreError> {
        let name: Arc<str> = outgoing.upstream.as_str().into();
        // A forward this process is still sending is alive whatever its lease says: it may
        // wait for one of the upstream's `max_connections` longer than the lease foresaw.
        // Claiming it again would send it twice.
        if self.lock().contains_key(&(key, name.clone())) {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        let lease = now + millis(budget + LEASE_SLACK);
        if !self
            .store
            .claim_forward(key, &outgoing.upstream, now, lease)
            .await?
        {
            return Ok(false);
        }
        let (done_tx, done_rx) = watch::channel(false);
        self.lock().insert((key, name.clone()), done_rx);
        let this = self.clone();
        self.metrics.forwards_in_flight().inc();
        let lease_len = budget + LEASE_SLACK;
        self.tasks.spawn(async move {
            let send = client.send(outgoing);
            tokio::pin!(send);
            // Renew the lease while the forward runs (it may queue for a connection longer
            // than its budget): only a dead process lets its lease run out.
            let every = lease_len / 3;
            let mut renew = tokio::time::interval_at(Instant::now() + every, every);
            let reply = loop {
                tokio::select! {
                    reply = &mut send => break reply,
                    _ = renew.tick() => {
                        let until = this.clock.now_ms() + millis(lease_len);
                        if let Err(e) = this.store.renew_forward(key, &name, until).await {
                            tracing::warn!(%key, upstream = %name, error = %e, "cannot renew forward lease");
                        }
                    }
                }
            };
            this.record(key, &name, &reply).await;
            this.lock().remove(&(key, name));
            this.metrics.forwards_in_flight().dec();
            let _ = done_tx.send(true);
        });
        Ok(true)
    }

    /// Writes the reply to the store, retrying briefly so a store hiccup does not lose it.
    async fn record(
        &self,
        key: ConversationKey,
        upstream: &str,
        reply: &crate::conversation::Reply,
    ) {
        for attempt in 0..5u32 {
            match self.store.complete_forward(key, upstream, reply).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(%key, upstream, attempt, error = %e, "cannot record forward reply; retrying");
                    tokio::time::sleep(super::backoff(attempt)).await;
                }
            }
        }
        tracing::error!(%key, upstream, "forward reply lost: the store kept failing; the lease will expire and the forward be resent");
    }

    /// Waits until none of the conversation's forwards is pending or `deadline` passes;
    /// returns the conversation as it then is.
    pub async fn wait(
        &self,
        key: ConversationKey,
        deadline: Instant,
    ) -> Result<Option<Snapshot>, StoreError> {
        loop {
            let snapshot = self.store.load(key).await?;
            let Some(pending) = snapshot
                .as_ref()
                .and_then(|s| s.pending().next().map(Arc::<str>::from))
            else {
                return Ok(snapshot);
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(snapshot);
            }
            let local = self.lock().get(&(key, pending)).cloned();
            match local {
                Some(mut done) => {
                    let _ = tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await;
                }
                None => tokio::time::sleep_until(deadline.min(now + POLL_INTERVAL)).await,
            }
        }
    }

    /// Background forwards still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Waits up to `grace` for background forwards to finish (graceful shutdown).
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
