//! A call's way through the gateway. First the checks of GATEWAY.md 6 ([`check_head`],
//! [`check_body`]; [`Verified`] is made only there), then a verified call's way to its
//! answer ([`answer`]), one stage a file:
//!
//! - `converse`: the conversation loop: begin, replay of a finished answer, the
//!   compare-and-set that records what the call changed (again on a conflict);
//! - `forwards`: starting forwards, and `hold` (waiting for their replies);
//! - `evaluate`: the rule, the fixed answer or the reply mapping, and error requests;
//! - `push`: a push channel's call: held until its till has a message (GATEWAY.md 9);
//! - `shape`: `polling.finished`, the reply mapping's answers, state and JSON encoding.
//!
//! The HTTP layer signs and sends what [`answer`] returns.

mod answer;
mod checks;
mod converse;
mod evaluate;
mod forwards;
mod push;
mod shape;

use std::time::Duration;

use bytes::Bytes;
use rhai::Dynamic;
use tokio::time::Instant;

pub use answer::{Answer, CallNote};
pub use checks::{body_reads, check_body, check_head, subscription, Head, Verified};

use crate::conversation::{ConversationKey, Snapshot, StoreError};
use crate::gateway::Gateway;
use crate::rules::{finish_answer, ForwardRequest};
use crate::runtime::{CompiledEvent, Runtime};
use crate::telemetry::Outcome;
use shape::Decision;

/// A verified call of a configured event on its way to an answer: what every stage reads.
/// What changes during the call (the conversation's snapshot, the event body the rule
/// reads) is passed alongside.
struct Call<'a> {
    gateway: &'a Gateway,
    /// The generation the call started with; it keeps it to its end.
    rt: &'a Runtime,
    event: &'a CompiledEvent,
    /// The event's name as the till called it (`event` may be the `"*"` fallback).
    name: &'a str,
    subscription: &'a str,
    /// The body as it came: forwarded byte for byte.
    raw: Bytes,
    key: ConversationKey,
    started: Instant,
    /// False when the till does not wait for the answer (`event.eventBlocking: false`):
    /// answered at once, never held (GATEWAY.md 5).
    blocking: bool,
}

/// Answers a verified call with the generation `rt` it started with.
pub async fn answer(gateway: &Gateway, rt: &Runtime, verified: Verified) -> Answer {
    let Verified {
        subscription,
        event_name,
        raw,
        body,
        ..
    } = verified;
    let Some(event) = rt.event(&event_name) else {
        let empty = Bytes::from_static(b"{}");
        return Answer::json(200, empty, Outcome::Unconfigured, CallNote::default());
    };
    if evaluate::is_error_request(&body) {
        return evaluate::error_request(gateway, rt, event, &subscription.id, &event_name, body)
            .await;
    }
    let key = ConversationKey::derive(&rt.config.state.key, &subscription.id, &event_name, &body);
    let blocking = is_blocking(&body);
    let call = Call {
        gateway,
        rt,
        event,
        name: &event_name,
        subscription: &subscription.id,
        raw,
        key,
        started: Instant::now(),
        blocking,
    };
    call.converse(body).await
}

/// Whether the till waits for the answer: anything but `event.eventBlocking: false`.
fn is_blocking(body: &rhai::Map) -> bool {
    let Some(event) = body.get("event").and_then(|e| e.as_map_ref().ok()) else {
        return true;
    };
    event
        .get("eventBlocking")
        .is_none_or(|b| b.as_bool() != Ok(false))
}

impl Call<'_> {
    /// One decision: the polling timeout, forwards and `hold`, then the rule (again after
    /// another `hold` if the rule asked for a new forward).
    async fn decide(
        &self,
        snapshot: &mut Snapshot,
        body: &mut Option<Dynamic>,
    ) -> Result<Decision, StoreError> {
        let now = self.gateway.clock.now_ms();
        let elapsed_ms = now.saturating_sub(snapshot.first_seen_ms);
        if let Some(channel) = self.event.config.push {
            return self
                .push_decision(channel, snapshot, body, elapsed_ms)
                .await;
        }
        // Boxed: the call's future is sized for its largest branch, and a push channel's
        // call is held at the line above for up to `push.hold`; forwards and rules are
        // boxed off it so that 10,000 held calls stay small (GATEWAY.md 7).
        Box::pin(self.decide_call(snapshot, body, now, elapsed_ms)).await
    }

    /// A decision of any event but a push channel.
    async fn decide_call(
        &self,
        snapshot: &mut Snapshot,
        body: &mut Option<Dynamic>,
        now: u64,
        elapsed_ms: u64,
    ) -> Result<Decision, StoreError> {
        if let Some(polling) = &self.event.config.polling {
            if Duration::from_millis(elapsed_ms) >= polling.timeout {
                return Ok(timed_out(&polling.timeout_message));
            }
        }
        let durable = self.event.config.is_durable();
        let mut queued = Vec::new();
        if let Some(upstream) = &self.event.config.forward {
            if durable {
                if self.queue(upstream, self.raw.clone(), snapshot).await? {
                    queued.push(upstream.clone());
                }
            } else if forwards::due(snapshot, upstream, now) {
                self.start_forward(upstream, self.raw.clone(), snapshot)
                    .await?;
            }
        }
        self.hold(snapshot).await?;
        let (mut decision, requested) = self
            .evaluate(snapshot, body, elapsed_ms, Dynamic::UNIT)
            .await;
        if durable {
            return self
                .queue_requested(decision, requested, queued, snapshot)
                .await;
        }
        if let Some(requested) = requested {
            for request in requested {
                let bytes = request.body.map_or_else(|| self.raw.clone(), Bytes::from);
                self.start_forward(&request.upstream, bytes, snapshot)
                    .await?;
            }
            if self.hold(snapshot).await? {
                (decision, _) = self
                    .evaluate(snapshot, body, elapsed_ms, Dynamic::UNIT)
                    .await;
            }
        }
        Ok(decision)
    }
}

impl Call<'_> {
    /// A durable event's rest: what the rule asked to forward is queued before the answer,
    /// which never waits for the back end. A conversation that goes on remembers what it
    /// queued, so its next calls queue nothing; a finished one replays its answer and
    /// never gets this far.
    async fn queue_requested(
        &self,
        decision: Decision,
        requested: Option<Vec<ForwardRequest>>,
        mut queued: Vec<String>,
        snapshot: &mut Snapshot,
    ) -> Result<Decision, StoreError> {
        for request in requested.into_iter().flatten() {
            let bytes = request.body.map_or_else(|| self.raw.clone(), Bytes::from);
            if self.queue(&request.upstream, bytes, snapshot).await? {
                queued.push(request.upstream);
            }
        }
        if !decision.finished {
            self.mark_queued(&queued).await?;
        }
        Ok(decision)
    }
}

/// `polling.timeout` passed: the conversation finishes with the timeout message.
fn timed_out(message: &str) -> Decision {
    Decision {
        status: 200,
        body: finish_answer(true, message, ""),
        outcome: Outcome::TimedOut,
        finished: true,
        state: None,
        taken: None,
    }
}
