//! Delivering what the outbox holds: one worker per upstream claims due deliveries (as
//! many as the upstream's `max_connections` allows at once), sends each like a forward
//! (one attempt, same headers, signature and `Idempotency-Key` every time), and records
//! the result. A worker sleeps until something is queued here, a send ends, or the next
//! delivery is due; with Redis it also looks every [`SHARED_LOOK_EVERY`], since other
//! replicas queue too. What is queued while the worker waits for its sends wakes nobody:
//! the next send that ends does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::retry::{judge, Verdict};
use super::{Delivery, DeliveryId, Failure, NewDelivery, Outbox, OutboxError, Queue};
use crate::config::{millis, Upstream};
use crate::conversation::Clock;
use crate::runtime::Runtime;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::upstream::{Attempted, Outgoing};

/// How often a worker on a shared (Redis) outbox looks for deliveries other replicas
/// queued or gave up.
pub const SHARED_LOOK_EVERY: Duration = Duration::from_secs(1);
/// The pause after the outbox itself failed, before a worker tries again.
const OUTBOX_TROUBLE_PAUSE: Duration = Duration::from_secs(1);
/// A claim outlasts one attempt by this much at least, so it never ends mid-attempt.
const LEASE_SLACK: Duration = Duration::from_secs(1);

/// The outbox and its workers: a cheap-clone handle the pipeline queues through.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    runtime: Arc<ArcSwap<Runtime>>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// One wake-up and connection count per upstream with a worker. Std locks: map
    /// updates only, never held across an await.
    workers: Mutex<HashMap<String, Arc<Signal>>>,
    /// Deliveries being sent now, by id (given back at shutdown if still running).
    sending: Mutex<HashMap<DeliveryId, String>>,
    /// Why the last enqueue failed, until one succeeds again (`/readyz` says it).
    trouble: Mutex<Option<String>>,
    stop: Mutex<Option<Shutdown>>,
    tasks: TaskTracker,
}

/// How a worker is woken, and its free connections (which tell whether waking it would
/// make it claim anything).
struct Signal {
    wake: Notify,
    permits: Arc<Semaphore>,
    max: usize,
}

/// Whether a worker with `free` of `max` connections free waits for its sends instead of
/// claiming: claims come in batches, so while sends are running it waits until a quarter
/// of the connections are free (a send that ends wakes it), and a busy queue costs one
/// claim per several deliveries, not one each.
fn waits_for_sends(free: usize, max: usize) -> bool {
    let in_flight = max.saturating_sub(free);
    free == 0 || (in_flight > 0 && free < (max / 4).max(1))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Deliverer {
    pub fn new(
        queue: Queue,
        runtime: Arc<ArcSwap<Runtime>>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue,
                runtime,
                clock,
                metrics,
                workers: Mutex::default(),
                sending: Mutex::default(),
                trouble: Mutex::default(),
                stop: Mutex::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Starts a worker for every configured upstream (a backlog left by the last run is
    /// delivered at once); workers stop claiming at `stop`.
    pub fn start(&self, stop: Shutdown) {
        *lock(&self.inner.stop) = Some(stop);
        let names = self.inner.runtime.load().upstream_names.clone();
        for name in names.iter() {
            self.wake(name);
        }
    }

    /// Queues `delivery` durably and wakes its upstream's worker; true when it was new.
    pub async fn enqueue(&self, delivery: NewDelivery) -> Result<bool, OutboxError> {
        let upstream = delivery.upstream.clone();
        match self.inner.queue.enqueue(delivery).await {
            Ok(queued) => {
                if lock(&self.inner.trouble).take().is_some() {
                    tracing::info!("the outbox accepts deliveries again");
                }
                if queued {
                    self.wake_for_new(&upstream);
                }
                Ok(queued)
            }
            Err(e) => {
                self.inner.metrics.outbox_error();
                *lock(&self.inner.trouble) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Why the outbox cannot accept deliveries now, if it cannot.
    pub async fn trouble(&self) -> Option<String> {
        if let Err(e) = self.inner.queue.ping().await {
            return Some(e.to_string());
        }
        lock(&self.inner.trouble).clone()
    }

    /// Sets the delivery gauges of every configured upstream (for `/metrics`).
    pub async fn observe(&self) {
        let names = self.inner.runtime.load().upstream_names.clone();
        let now = self.inner.clock.now_ms();
        for name in names.iter() {
            if let Ok(counts) = self.inner.queue.counts(name).await {
                let oldest = counts
                    .oldest_queued_ms
                    .map_or(0.0, |q| now.saturating_sub(q) as f64 / 1000.0);
                self.inner
                    .metrics
                    .set_deliveries(name, counts.pending, counts.dead, oldest);
            }
        }
    }

    /// Wakes `upstream`'s worker for a delivery queued now, unless it would not claim
    /// anything: with its connections busy, the next send that ends wakes it, and a busy
    /// queue then costs no wake-up per queued delivery.
    fn wake_for_new(&self, upstream: &str) {
        if let Some(signal) = lock(&self.inner.workers).get(upstream) {
            if waits_for_sends(signal.permits.available_permits(), signal.max) {
                return;
            }
        }
        self.wake(upstream);
    }

    /// Wakes `upstream`'s worker, starting it first if there is none (and not stopping).
    pub fn wake(&self, upstream: &str) {
        let mut workers = lock(&self.inner.workers);
        if let Some(signal) = workers.get(upstream) {
            signal.wake.notify_one();
            return;
        }
        let Some(stop) = lock(&self.inner.stop).clone() else {
            return;
        };
        if stop.is_fired() {
            return;
        }
        let max = self
            .inner
            .runtime
            .load()
            .config
            .upstreams
            .get(upstream)
            .map_or(1, |u| u.max_connections);
        let signal = Arc::new(Signal {
            wake: Notify::new(),
            permits: Arc::new(Semaphore::new(max)),
            max,
        });
        workers.insert(upstream.to_owned(), signal.clone());
        let worker = Worker {
            deliverer: self.clone(),
            upstream: upstream.to_owned(),
            signal,
        };
        self.inner.tasks.spawn(worker.run(stop));
    }

    /// After `stop`: waits up to `grace` for the sends in flight; the ones still running
    /// then are given back to the outbox (due again at once, for another replica or the
    /// next start). Nothing is lost, and this process sends nothing twice.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok()
        {
            return true;
        }
        let left: Vec<(DeliveryId, String)> = lock(&self.inner.sending).drain().collect();
        for (id, upstream) in &left {
            let _ = self.inner.queue.release(upstream, *id).await;
        }
        tracing::warn!(
            deliveries = left.len(),
            "deliveries still in flight after the shutdown grace; they stay queued"
        );
        false
    }
}

/// One upstream's delivery loop.
struct Worker {
    deliverer: Deliverer,
    upstream: String,
    signal: Arc<Signal>,
}

impl Worker {
    async fn run(self, mut stop: Shutdown) {
        let (permits, max) = (&self.signal.permits, self.signal.max);
        while !stop.is_fired() {
            let wait = match self.round(permits, max).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "cannot claim deliveries");
                    Some(Instant::now() + OUTBOX_TROUBLE_PAUSE)
                }
            };
            let Some(wait) = wait else { continue };
            tokio::select! {
                () = self.signal.wake.notified() => {}
                () = tokio::time::sleep_until(wait) => {}
                () = stop.wait() => {}
            }
        }
    }

    /// Claims what is due (as many as there are free connections) and sends it; returns
    /// when to look again (`None`: at once, there may be more due).
    async fn round(
        &self,
        permits: &Arc<Semaphore>,
        max: usize,
    ) -> Result<Option<Instant>, OutboxError> {
        let inner = &self.deliverer.inner;
        let far = Instant::now() + Duration::from_secs(3600);
        let free = permits.available_permits();
        let rt = inner.runtime.load_full();
        let Some(config) = rt.config.upstreams.get(&self.upstream) else {
            // No longer configured: its deliveries wait (a reload may bring it back).
            return Ok(Some(far));
        };
        if waits_for_sends(free, max) {
            return Ok(Some(far));
        }
        let now = inner.clock.now_ms();
        let lease = millis(config.durable.lease.max(config.timeout + LEASE_SLACK));
        let claimed = inner.queue.claim(&self.upstream, now, lease, free).await?;
        let full = claimed.len() == free;
        for delivery in claimed {
            // Still being sent here (its claim ran out while an attempt dragged on): this
            // process never sends one delivery twice at once.
            if lock(&inner.sending).contains_key(&delivery.id) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            lock(&inner.sending).insert(delivery.id, self.upstream.clone());
            let send = Send {
                deliverer: self.deliverer.clone(),
                signal: self.signal.clone(),
            };
            inner.tasks.spawn(send.run(delivery, permit));
        }
        if full {
            return Ok(None);
        }
        self.next_look(far).await.map(Some)
    }

    /// When the next pending delivery is due (`far` with none); with a shared outbox at
    /// most [`SHARED_LOOK_EVERY`] from now.
    async fn next_look(&self, far: Instant) -> Result<Instant, OutboxError> {
        let inner = &self.deliverer.inner;
        let mut until = match inner.queue.next_due(&self.upstream).await? {
            Some(ms) => {
                let now = inner.clock.now_ms();
                Instant::now() + Duration::from_millis(ms.saturating_sub(now))
            }
            None => far,
        };
        if inner.queue.is_shared() {
            until = until.min(Instant::now() + SHARED_LOOK_EVERY);
        }
        Ok(until)
    }
}

/// One attempt of one delivery.
struct Send {
    deliverer: Deliverer,
    signal: Arc<Signal>,
}

impl Send {
    async fn run(self, d: Delivery, _permit: OwnedSemaphorePermit) {
        let inner = &self.deliverer.inner;
        let rt = inner.runtime.load_full();
        let verdict = match rt.config.upstreams.get(&d.upstream) {
            Some(config) => match outgoing(&rt, config, &d) {
                Some(out) => {
                    let attempted = rt.upstreams.attempt(out).await;
                    let now = inner.clock.now_ms();
                    judge(
                        &attempted,
                        &config.durable,
                        d.attempts + 1,
                        d.queued_ms,
                        now,
                    )
                }
                None => not_configured(config, &d, inner.clock.now_ms()),
            },
            None => Verdict::Failed(Failure::Retry {
                next_ms: inner.clock.now_ms() + 60_000,
                error: format!("upstream `{}` is not configured", d.upstream),
            }),
        };
        inner.metrics.delivery_attempt(&d.upstream, verdict.label());
        // The connection is free for the next delivery while this result is synced: the
        // delivery stays in `sending` (so it is not claimed again here) until then.
        drop(_permit);
        self.signal.wake.notify_one();
        self.settle(&d, verdict).await;
        lock(&inner.sending).remove(&d.id);
    }

    /// Records the verdict, retrying briefly so an outbox hiccup does not resend it.
    async fn settle(&self, d: &Delivery, verdict: Verdict) {
        let queue = &self.deliverer.inner.queue;
        match &verdict {
            Verdict::Failed(Failure::Dead { error }) => {
                tracing::warn!(upstream = %d.upstream, event = %d.event, id = %d.id, key = %d.key, attempts = d.attempts + 1, %error, "delivery is dead (kept; retry it with POST /deliveries/{{id}}/retry)");
            }
            Verdict::Failed(Failure::Retry { error, .. }) => {
                tracing::debug!(upstream = %d.upstream, id = %d.id, %error, "delivery failed; retrying later");
            }
            Verdict::Delivered => {
                tracing::debug!(upstream = %d.upstream, id = %d.id, "delivered");
            }
        }
        for attempt in 0..5u32 {
            let result = match &verdict {
                Verdict::Delivered => queue.delivered(&d.upstream, d.id).await,
                Verdict::Failed(f) => queue.failed(&d.upstream, d.id, f.clone()).await,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(id = %d.id, attempt, error = %e, "cannot record a delivery's result; retrying");
                    tokio::time::sleep(crate::upstream::backoff(attempt)).await;
                }
            }
        }
        tracing::error!(id = %d.id, "a delivery's result could not be recorded; it will be sent again");
    }
}

/// The delivery as a forward: signed with the upstream's secret, else its subscription's.
fn outgoing(rt: &Runtime, config: &Upstream, d: &Delivery) -> Option<Outgoing> {
    let secret = match &config.secret {
        Some(secret) => secret,
        None => &rt.config.subscriptions.get(&d.subscription)?.secret,
    };
    Some(Outgoing {
        upstream: d.upstream.clone(),
        event: d.event.clone(),
        signature: secret.sign(&d.body),
        body: d.body.clone(),
        subscription: d.subscription.clone(),
        idempotency_key: d.key.to_hex(),
    })
}

/// The subscription that would sign it is gone: retried like a failed attempt, so a
/// reload that brings it back delivers it, and `max_age` ends it otherwise.
fn not_configured(config: &Upstream, d: &Delivery, now_ms: u64) -> Verdict {
    let attempted = Attempted::Failed {
        error: format!(
            "subscription `{}` is not configured, so nothing can sign the delivery",
            d.subscription
        ),
    };
    judge(
        &attempted,
        &config.durable,
        d.attempts + 1,
        d.queued_ms,
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::waits_for_sends;

    #[test]
    fn a_worker_claims_when_idle_or_a_quarter_of_its_connections_are_free() {
        assert!(!waits_for_sends(1, 1), "one connection, free");
        assert!(waits_for_sends(0, 1));
        assert!(!waits_for_sends(32, 32), "nothing in flight");
        assert!(waits_for_sends(7, 32), "25 in flight, 7 free");
        assert!(!waits_for_sends(8, 32));
        assert!(!waits_for_sends(2, 3), "a quarter of 3 is at least 1");
    }
}
