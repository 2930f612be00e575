//! The gateway's shared handle: everything that outlives a config generation (the store,
//! the forwarder, the clock, the metrics, the push mailbox) and the current generation itself. The HTTP
//! handlers, the pipeline, the admin endpoints and the reloader all hold one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::conversation::{Clock, Store};
use crate::outbox::{Deliverer, Queue};
use crate::push::{Mailbox, MemoryMailbox, Push};
use crate::runtime::Runtime;
use crate::telemetry::Metrics;
use crate::upstream::Forwarder;

/// A cheap-clone handle; every part is shared, none is copied.
#[derive(Clone)]
pub struct Gateway {
    /// The generation in use; a reload swaps it whole. A call loads it once, at its start,
    /// and keeps that generation to its end.
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub store: Store,
    pub forwarder: Forwarder,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Durable deliveries (GATEWAY.md 8): there with the Redis store, or with
    /// `outbox.path`; `None` otherwise (no event can be durable then).
    pub outbox: Option<Deliverer>,
    /// Pushed messages for tills (GATEWAY.md 9): in memory unless
    /// [`Gateway::with_mailbox`] says otherwise.
    pub push: Push,
}

impl Gateway {
    pub fn new(runtime: Runtime, store: Store, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let forwarder = Forwarder::new(store.clone(), clock, metrics.clone());
        let mailbox = Mailbox::Memory(MemoryMailbox::new(metrics.push_held_calls()));
        Self {
            push: Push::new(mailbox, clock, metrics.clone()),
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            store,
            forwarder,
            clock,
            metrics,
            outbox: None,
        }
    }

    /// The same gateway with pushed messages in `mailbox`.
    pub fn with_mailbox(mut self, mailbox: Mailbox) -> Self {
        self.push = Push::new(mailbox, self.clock, self.metrics.clone());
        self
    }

    /// The same gateway with durable deliveries through `queue`.
    pub fn with_outbox(mut self, queue: Queue) -> Self {
        for name in self.runtime.load().config.upstreams.keys() {
            self.metrics.declare_deliveries(name);
        }
        self.outbox = Some(Deliverer::new(
            queue,
            self.runtime.clone(),
            self.clock,
            self.metrics.clone(),
        ));
        self
    }
}
