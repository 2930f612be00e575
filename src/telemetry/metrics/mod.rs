//! Prometheus metrics (GATEWAY.md 6). Labels are bounded: event names from config (`"*"`,
//! `unconfigured` and `none` for the rest), upstream names from config, fixed outcomes.
//!
//! Families are resolved to plain handles when a config generation is built, so a call
//! only touches atomics: no label hashing or string building on the hot path.

mod labels;
mod outcome;
mod push;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use labels::{
    seconds_histogram, EventLabels, HistogramFamily, RequestCounters, ResultLabels, UpstreamLabels,
    UpstreamOutcomeLabels, UpstreamStatusLabels, VersionLabels,
};
pub use outcome::{Outcome, UpstreamOutcome};

/// Every metric pollgate exports; one per process, shared by all config generations.
pub struct Metrics {
    registry: Registry,
    requests: RequestCounters,
    duration: HistogramFamily<EventLabels>,
    rule_errors: Family<EventLabels, Counter>,
    rule_duration: HistogramFamily<EventLabels>,
    upstream_requests: Family<UpstreamOutcomeLabels, Counter>,
    upstream_duration: HistogramFamily<UpstreamLabels>,
    conversations_active: Gauge,
    reloads: Family<ResultLabels, Counter>,
    forwards_in_flight: Gauge,
    config_generation: Gauge<u64, AtomicU64>,
    buffered_bytes: Gauge<u64, AtomicU64>,
    store_full: Counter,
    deliveries: Family<UpstreamStatusLabels, Gauge>,
    delivery_attempts: Family<UpstreamOutcomeLabels, Counter>,
    delivery_oldest: Family<UpstreamLabels, Gauge<f64, AtomicU64>>,
    outbox_errors: Counter,
    push: push::PushMetrics,
}

fn seconds_family<L: Clone + std::hash::Hash + Eq>() -> HistogramFamily<L> {
    HistogramFamily::new_with_constructor(seconds_histogram as fn() -> Histogram)
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let reloads: Family<ResultLabels, Counter> = Family::default();
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        let mut metrics = Self {
            registry: Registry::with_prefix("pollgate"),
            requests: RequestCounters::default(),
            duration: seconds_family(),
            rule_errors: Family::default(),
            rule_duration: seconds_family(),
            upstream_requests: Family::default(),
            upstream_duration: seconds_family(),
            conversations_active: Gauge::default(),
            reloads,
            forwards_in_flight: Gauge::default(),
            config_generation: Gauge::default(),
            buffered_bytes: Gauge::default(),
            store_full: Counter::default(),
            deliveries: Family::default(),
            delivery_attempts: Family::default(),
            delivery_oldest: Family::default(),
            outbox_errors: Counter::default(),
            push: push::PushMetrics::default(),
        };
        metrics.register();
        metrics
    }

    /// Registers every family, in the order `/metrics` lists them.
    fn register(&mut self) {
        let registry = &mut self.registry;
        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running pollgate's version (always 1)",
            build_info,
        );
        registry.register(
            "requests",
            "Webhook calls by event and outcome",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to answer, by event",
            self.duration.clone(),
        );
        registry.register(
            "rule_errors",
            "Rule evaluations that failed, by event",
            self.rule_errors.clone(),
        );
        registry.register(
            "rule_evaluation_duration_seconds",
            "Time spent evaluating rules, by event",
            self.rule_duration.clone(),
        );
        self.register_upstreams_and_gauges();
    }

    fn register_upstreams_and_gauges(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "upstream_requests",
            "Forward attempts by upstream and outcome",
            self.upstream_requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time per forward attempt, by upstream",
            self.upstream_duration.clone(),
        );
        registry.register(
            "conversations_active",
            "Conversations the store remembers",
            self.conversations_active.clone(),
        );
        registry.register("reloads", "Config reloads by result", self.reloads.clone());
        registry.register(
            "forwards_in_flight",
            "Forwards this process is sending now",
            self.forwards_in_flight.clone(),
        );
        registry.register(
            "config_generation",
            "Generation of the config in use (1 at start, +1 per good reload)",
            self.config_generation.clone(),
        );
        registry.register(
            "buffered_bytes",
            "Request body bytes reserved now (at most server.max_buffered_bytes)",
            self.buffered_bytes.clone(),
        );
        registry.register(
            "store_full",
            "New conversations refused because state.max_conversations was reached with none finished to evict",
            self.store_full.clone(),
        );
        self.register_deliveries();
    }

    fn register_deliveries(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "deliveries",
            "Durable deliveries in the outbox, by upstream and status (pending, dead)",
            self.deliveries.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Durable delivery attempts by upstream and outcome (delivered, retry, dead)",
            self.delivery_attempts.clone(),
        );
        registry.register(
            "delivery_oldest_pending_seconds",
            "Age of the oldest pending durable delivery, by upstream (0 with none)",
            self.delivery_oldest.clone(),
        );
        registry.register(
            "outbox_errors",
            "Calls whose durable delivery the outbox could not accept (answered as a store failure)",
            self.outbox_errors.clone(),
        );
        self.push.register(registry);
    }

    /// Creates an upstream's delivery series at zero.
    pub fn declare_deliveries(&self, upstream: &str) {
        for outcome in ["delivered", "retry", "dead"] {
            let _ = self
                .delivery_attempts
                .get_or_create(&UpstreamOutcomeLabels {
                    upstream: upstream.to_owned(),
                    outcome: outcome.to_owned(),
                });
        }
        self.set_deliveries(upstream, 0, 0, 0.0);
    }

    /// The outbox's counts for one upstream, as read at a scrape.
    pub fn set_deliveries(&self, upstream: &str, pending: u64, dead: u64, oldest_seconds: f64) {
        for (status, n) in [("pending", pending), ("dead", dead)] {
            self.deliveries
                .get_or_create(&UpstreamStatusLabels {
                    upstream: upstream.to_owned(),
                    status: status.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.delivery_oldest
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .set(oldest_seconds);
    }

    /// Counts one delivery attempt (`outcome`: delivered, retry, dead).
    pub fn delivery_attempt(&self, upstream: &str, outcome: &str) {
        self.delivery_attempts
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: upstream.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a call whose delivery the outbox could not accept.
    pub fn outbox_error(&self) {
        self.outbox_errors.inc();
    }

    /// The handles for one event label. The `outcomes` that can happen for it are listed at
    /// zero from now on; any other is listed once it happens.
    pub fn event(&self, event: &str, outcomes: &[Outcome]) -> Arc<EventMetrics> {
        let labels = EventLabels {
            event: event.to_owned(),
        };
        let requests = Outcome::ALL.map(|o| {
            let cell = OnceLock::new();
            if outcomes.contains(&o) {
                let _ = cell.set(self.requests.get_or_create(event, o));
            }
            cell
        });
        Arc::new(EventMetrics {
            event: event.to_owned(),
            family: self.requests.clone(),
            requests,
            duration: self.duration.get_or_create(&labels).clone(),
            rule_errors: self.rule_errors.get_or_create(&labels).clone(),
            rule_duration: self.rule_duration.get_or_create(&labels).clone(),
        })
    }

    /// Counts one forward attempt or result.
    pub fn upstream(&self, upstream: &str, outcome: UpstreamOutcome, elapsed: Option<Duration>) {
        self.upstream_requests
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: upstream.to_owned(),
                outcome: outcome.label().to_owned(),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.upstream_duration
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Creates an upstream's series at zero, so dashboards see them before the first forward.
    pub fn declare_upstream(&self, upstream: &str) {
        for outcome in [
            UpstreamOutcome::Success,
            UpstreamOutcome::Status,
            UpstreamOutcome::Failure,
            UpstreamOutcome::Retry,
        ] {
            let _ = self
                .upstream_requests
                .get_or_create(&UpstreamOutcomeLabels {
                    upstream: upstream.to_owned(),
                    outcome: outcome.label().to_owned(),
                });
        }
        let _ = self.upstream_duration.get_or_create(&UpstreamLabels {
            upstream: upstream.to_owned(),
        });
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn set_generation(&self, generation: u64) {
        self.config_generation.set(generation);
    }

    pub fn set_conversations(&self, n: u64) {
        self.conversations_active
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_buffered_bytes(&self, n: u64) {
        self.buffered_bytes.set(n);
    }

    /// Counts a new conversation refused by a full store (GATEWAY.md 12).
    pub fn store_full(&self) {
        self.store_full.inc();
    }

    pub fn forwards_in_flight(&self) -> &Gauge {
        &self.forwards_in_flight
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Pre-resolved handles for one event label.
#[derive(Debug)]
pub struct EventMetrics {
    event: String,
    family: RequestCounters,
    /// By `Outcome as usize`; set at creation for the outcomes declared, on first use for
    /// the others.
    requests: [OnceLock<Counter>; Outcome::ALL.len()],
    duration: Histogram,
    rule_errors: Counter,
    rule_duration: Histogram,
}

impl EventMetrics {
    pub fn call(&self, outcome: Outcome, elapsed: Duration) {
        self.requests[outcome as usize]
            .get_or_init(|| self.family.get_or_create(&self.event, outcome))
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn rule(&self, elapsed: Duration, failed: bool) {
        self.rule_duration.observe(elapsed.as_secs_f64());
        if failed {
            self.rule_errors.inc();
        }
    }
}

#[cfg(test)]
mod tests;
