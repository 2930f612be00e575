//! Forwards and `hold`: starting a conversation's forward to an upstream (once, whoever
//! sends it), waiting up to the event's `hold` for replies, and what the rule and the
//! access log are told about forwards.

use std::time::Duration;

use bytes::Bytes;
use rhai::Dynamic;

use std::sync::{Arc, LazyLock};

use super::Call;
use crate::conversation::{ConversationStore, ForwardState, Reply, Snapshot, StoreError};
use crate::outbox::NewDelivery;
use crate::upstream::{budget, Outgoing};

/// How long before `server.request_timeout` a held call stops waiting and answers.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// Added to the upstream budget a non-polling call waits by default: the forward's own
/// overhead (connection, request, recording the reply) beyond its timeouts and backoff.
const NON_POLLING_HOLD_SLACK: Duration = Duration::from_secs(1);

impl Call<'_> {
    /// Starts the conversation's forward of `body` to `upstream` and marks it pending in
    /// `snapshot`. An upstream or subscription the generation does not have is no forward.
    pub(super) async fn start_forward(
        &self,
        upstream: &str,
        body: Bytes,
        snapshot: &mut Snapshot,
    ) -> Result<(), StoreError> {
        let rt = self.rt;
        let Some(config) = rt.config.upstreams.get(upstream) else {
            return Ok(());
        };
        let secret = match &config.secret {
            Some(secret) => secret,
            None => match rt.config.subscriptions.get(self.subscription) {
                Some(sub) => &sub.secret,
                None => return Ok(()),
            },
        };
        let outgoing = Outgoing {
            upstream: upstream.to_owned(),
            event: self.name.to_owned(),
            signature: secret.sign(&body),
            body,
            subscription: self.subscription.to_owned(),
            idempotency_key: self.key.to_string(),
        };
        self.gateway
            .forwarder
            .start(rt.upstreams.clone(), self.key, budget(config), outgoing)
            .await?;
        // Whoever sends it, the forward is now pending (or done) for this conversation.
        let pending = ForwardState::Pending {
            lease_until_ms: u64::MAX,
        };
        match snapshot
            .forwards
            .iter_mut()
            .find(|(name, _)| &**name == upstream)
        {
            Some((_, state @ ForwardState::Pending { .. })) => *state = pending,
            Some(_) => {}
            None => snapshot.forwards.push((upstream.into(), pending)),
        }
        Ok(())
    }

    /// Queues the durable delivery of `body` to `upstream` (GATEWAY.md 8) unless this
    /// conversation queued it already; true when it was queued by this call. The outbox's
    /// id makes a race of two calls (or a decision taken again) queue one delivery.
    pub(super) async fn queue(
        &self,
        upstream: &str,
        body: Bytes,
        snapshot: &mut Snapshot,
    ) -> Result<bool, StoreError> {
        if snapshot.forward(upstream).is_some() || !self.rt.config.upstreams.contains_key(upstream)
        {
            return Ok(false);
        }
        let Some(outbox) = &self.gateway.outbox else {
            return Err(StoreError::Outbox(
                "no outbox is open (outbox.path takes effect at the next restart)".into(),
            ));
        };
        let delivery = NewDelivery {
            upstream: upstream.to_owned(),
            event: self.name.to_owned(),
            key: self.key,
            subscription: self.subscription.to_owned(),
            body,
            now_ms: self.gateway.clock.now_ms(),
        };
        outbox
            .enqueue(delivery)
            .await
            .map_err(|e| StoreError::Outbox(e.to_string()))?;
        snapshot
            .forwards
            .push((upstream.into(), ForwardState::Done(queued_reply())));
        Ok(true)
    }

    /// Marks `upstreams` queued in the conversation, so its later calls (polls,
    /// duplicates) queue nothing.
    pub(super) async fn mark_queued(&self, upstreams: &[String]) -> Result<(), StoreError> {
        let store = &self.gateway.store;
        let now = self.gateway.clock.now_ms();
        for upstream in upstreams {
            if store
                .claim_forward(self.key, upstream, now, u64::MAX)
                .await?
            {
                store
                    .complete_forward(self.key, upstream, &queued_reply())
                    .await?;
            }
        }
        Ok(())
    }

    /// Waits for pending forwards up to the event's hold (counted from the call's start);
    /// true when it waited and something may have changed.
    pub(super) async fn hold(&self, snapshot: &mut Snapshot) -> Result<bool, StoreError> {
        let hold = self.hold_for(snapshot);
        if hold.is_zero() || snapshot.pending().next().is_none() {
            return Ok(false);
        }
        let until = self.started + hold;
        if let Some(newer) = Box::pin(self.gateway.forwarder.wait(self.key, until)).await? {
            snapshot.forwards = newer.forwards;
        }
        Ok(true)
    }

    /// The event's `hold`; by default none for polling events (the till polls again) and
    /// the pending upstreams' budget for the others. Always short of the call's deadline.
    fn hold_for(&self, snapshot: &Snapshot) -> Duration {
        let config = &self.rt.config;
        if !self.blocking {
            return Duration::ZERO;
        }
        let hold = match self.event.config.hold {
            Some(hold) => hold,
            None if self.event.config.polling.is_some() => Duration::ZERO,
            // The budget counts the upstream's timeouts and backoff only; without slack the
            // hold ends just before a timed-out forward does, and the till gets `{}`
            // instead of the unavailable answer.
            None => snapshot
                .pending()
                .filter_map(|name| config.upstreams.get(name))
                .map(|up| budget(up) + NON_POLLING_HOLD_SLACK)
                .max()
                .unwrap_or_default(),
        };
        // Answer before the last-resort deadline, so the till gets a signed answer.
        let deadline = config
            .server
            .request_timeout
            .saturating_sub(DEADLINE_MARGIN);
        hold.min(deadline)
    }
}

/// Whether the forward to `upstream` should be (re)started: never started, or its sender's
/// lease ran out without a reply (that replica died; resend with the same Idempotency-Key).
pub(super) fn due(snapshot: &Snapshot, upstream: &str, now_ms: u64) -> bool {
    match snapshot.forward(upstream) {
        None => true,
        Some(ForwardState::Pending { lease_until_ms }) => *lease_until_ms <= now_ms,
        Some(ForwardState::Done(_)) => false,
    }
}

/// What `forward(name)` shows the rule; a forward whose lease ran out is left out, so the
/// rule's `forward()` call starts it again.
pub(super) fn views(snapshot: &Snapshot, now_ms: u64) -> Vec<(String, Option<Dynamic>)> {
    snapshot
        .forwards
        .iter()
        .filter_map(|(name, state)| match state {
            ForwardState::Pending { lease_until_ms } if *lease_until_ms <= now_ms => None,
            ForwardState::Pending { .. } => Some((name.to_string(), None)),
            ForwardState::Done(reply) => {
                Some((name.to_string(), rhai::serde::to_dynamic(&**reply).ok()))
            }
        })
        .collect()
}

/// The access log's `forward`: `""`, `"pending"` or `"done"`.
pub(super) fn note(snapshot: &Snapshot) -> &'static str {
    if snapshot.forwards.is_empty() {
        ""
    } else if snapshot.pending().next().is_some() {
        "pending"
    } else {
        "done"
    }
}

/// What the conversation keeps for a durable delivery once it is queued (never shown to
/// the rule: a durable event's `forward()` is `()`). One for every call: a JSON object
/// made and dropped at each durable call showed in its profile.
static QUEUED: LazyLock<Arc<Reply>> =
    LazyLock::new(|| Arc::new(Reply::answered(202, serde_json::json!({"queued": true}), 0)));

fn queued_reply() -> Arc<Reply> {
    QUEUED.clone()
}
