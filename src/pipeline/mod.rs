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

use crate::conversation::{ConversationKey, Snapshot, StoreError, Till};
use crate::gateway::Gateway;
use crate::rules::{finish_answer, ForwardRequest};
use crate::runtime::{CompiledEvent, How, Runtime};
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
    /// `sender.branchNumber` and `sender.workplaceNumber`, for the admin listing.
    till: Till,
    /// A push channel's call: the till whose pushed messages it takes (GATEWAY.md 9).
    mailbox: Option<crate::push::Till>,
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
        let error =
            evaluate::error_request(gateway, rt, event, &subscription.id, &event_name, body);
        return Box::pin(error).await;
    }
    let (mut raw, mut body, mut mailbox) = (raw, body, None);
    if event.config.push.is_some() {
        // A push channel's call may be held (GATEWAY.md 7, 9) and keeps only what it needs:
        // it forwards nothing, so none of the body's bytes (a slice of the buffer hyper read
        // the call into, 8 KiB, kept allocated while any slice is), and without a rule
        // nothing reads the event once its till is known.
        raw = Bytes::new();
        mailbox = Some(crate::push::Till::of_call(&subscription.id, &body));
    }
    let key = ConversationKey::derive(&rt.config.state.key, &subscription.id, &event_name, &body);
    let blocking = is_blocking(&body);
    let till = till(&body);
    if matches!(event.how, How::Push) {
        body = rhai::Map::new();
    }
    let call = Call {
        gateway,
        rt,
        event,
        name: &event_name,
        subscription: &subscription.id,
        raw,
        key,
        till,
        mailbox,
        started: Instant::now(),
        blocking,
    };
    call.converse(body).await
}

/// The till a call comes from (MPLUS.md 3): `sender.branchNumber` and
/// `sender.workplaceNumber`, each kept when it is a whole number that fits a `u32`.
fn till(body: &rhai::Map) -> Till {
    let Some(sender) = body.get("sender").and_then(|s| s.as_map_ref().ok()) else {
        return Till::default();
    };
    let number = |name: &str| {
        let value = sender.get(name)?;
        let n = value.as_int().ok().or_else(|| {
            // `12.0` from a lenient parse of `12.0` is still branch 12.
            let f = value.as_float().ok()?;
            (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
        })?;
        u32::try_from(n).ok()
    };
    Till {
        branch: number("branchNumber"),
        workplace: number("workplaceNumber"),
    }
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
    ///
    /// The stages most calls never reach (queueing, starting a forward) are boxed where
    /// they are awaited, so their futures do not swell the future every call carries.
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
                if Box::pin(self.queue(upstream, self.raw.clone(), snapshot)).await? {
                    queued.push(upstream.clone());
                }
            } else if forwards::due(snapshot, upstream, now) {
                Box::pin(self.start_forward(upstream, self.raw.clone(), snapshot)).await?;
            }
        }
        self.hold(snapshot).await?;
        let (mut decision, requested) = self
            .evaluate(snapshot, body, elapsed_ms, Dynamic::UNIT)
            .await;
        if durable {
            let rest = self.queue_requested(decision, requested, queued, snapshot);
            return Box::pin(rest).await;
        }
        if let Some(requested) = requested {
            for request in requested {
                let bytes = request.body.map_or_else(|| self.raw.clone(), Bytes::from);
                Box::pin(self.start_forward(&request.upstream, bytes, snapshot)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(branch: Dynamic, workplace: Dynamic) -> rhai::Map {
        let mut sender = rhai::Map::new();
        sender.insert("branchNumber".into(), branch);
        sender.insert("workplaceNumber".into(), workplace);
        let mut body = rhai::Map::new();
        body.insert("sender".into(), Dynamic::from_map(sender));
        body
    }

    #[test]
    fn a_till_is_the_senders_whole_numbers_that_fit_a_u32() {
        let t = |b: Dynamic, w: Dynamic| {
            let till = till(&sender(b, w));
            (till.branch, till.workplace)
        };
        assert_eq!(
            t(Dynamic::from_int(12), Dynamic::from_int(3)),
            (Some(12), Some(3))
        );
        assert_eq!(
            t(Dynamic::from_float(12.0), Dynamic::from_float(3.5)),
            (Some(12), None)
        );
        assert_eq!(
            t(Dynamic::from_int(-1), Dynamic::from_int(1 << 32)),
            (None, None)
        );
        assert_eq!(t("12".into(), Dynamic::UNIT), (None, None));
        assert_eq!(till(&rhai::Map::new()), Till::default());
    }
}
