//! The push metrics (GATEWAY.md 9): messages by what happened to them, pending messages
//! (read at a scrape) and calls held now.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::OutcomeLabels;
use super::Metrics;

/// What can happen to a pushed message.
pub(super) const OUTCOMES: [&str; 4] = ["queued", "delivered", "expired", "withdrawn"];

#[derive(Default)]
pub(super) struct PushMetrics {
    messages: Family<OutcomeLabels, Counter>,
    pending: Gauge,
    held: Gauge,
}

impl PushMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        for outcome in OUTCOMES {
            let _ = self.messages.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        registry.register(
            "push_messages",
            "Pushed messages by outcome (queued, delivered, expired, withdrawn)",
            self.messages.clone(),
        );
        registry.register(
            "push_pending",
            "Pushed messages waiting for their till (read at each scrape)",
            self.pending.clone(),
        );
        registry.register(
            "push_held_calls",
            "backgroundPoll calls this process holds now, waiting for a message",
            self.held.clone(),
        );
    }
}

impl Metrics {
    /// Counts `n` messages with `outcome` (one of [`OUTCOMES`]).
    pub fn push_message(&self, outcome: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.push
            .messages
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    pub fn set_push_pending(&self, n: u64) {
        self.push.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The held-calls gauge, for the mailbox's wakers to count with.
    pub fn push_held_calls(&self) -> Gauge {
        self.push.held.clone()
    }
}
