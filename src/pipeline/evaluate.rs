//! The decision itself: the event's rule (or its fixed answer, the reply mapping, or the
//! pushed message) run
//! over what the conversation knows, and error requests (MPLUS.md 6), which a rule sees
//! but which never start a conversation.

use std::time::Duration;

use bytes::Bytes;
use rhai::{Dynamic, Map};

use super::shape::{decode_state, fail_safe, reply_answer, shape, Decision};
use super::{forwards, Answer, Call, CallNote};
use crate::conversation::{Clock, ConversationKey, Snapshot};
use crate::error_answer::error_map;
use crate::gateway::Gateway;
use crate::rules::{ForwardRequest, Input, RuleError, Verdict};
use crate::runtime::{CompiledEvent, How, Runtime};
use crate::telemetry::escape::{self, loggable};
use crate::telemetry::Outcome;

impl Call<'_> {
    /// Runs the event's rule (or fixed answer, or reply mapping) and shapes the answer.
    /// Also returns forwards the rule asked for that are not started yet.
    pub(super) async fn evaluate(
        &self,
        snapshot: &Snapshot,
        body: &mut Option<Dynamic>,
        elapsed_ms: u64,
        push: Dynamic,
    ) -> (Decision, Option<Vec<ForwardRequest>>) {
        let event = self.event;
        let pending = snapshot.pending().next().is_some();
        let durable = event.config.is_durable();
        let rule = match &event.how {
            How::Respond(map) => return (shape(event, map.clone(), pending, None), None),
            // A durable event's answer never waits for the back end: `{}` when no rule.
            How::Reply if durable => return (shape(event, Map::new(), false, None), None),
            How::Reply => return (reply_answer(event, snapshot, pending), None),
            How::Push => return (super::push::pushed_answer(push), None),
            How::Rule(rule) => rule,
        };
        let now_ms = self.gateway.clock.now_ms();
        let input = Input {
            attempt: snapshot.attempt,
            elapsed_ms,
            key: self.key.to_hex(),
            state: decode_state(snapshot.state.as_deref()),
            // A durable event's forward is queued, never a reply the rule can read.
            forwards: if durable {
                Vec::new()
            } else {
                forwards::views(snapshot, now_ms)
            },
            upstreams: Some(self.rt.upstream_names.clone()),
            push,
            ..input(self.gateway, self.name, self.subscription, body.take())
        };
        let t = std::time::Instant::now();
        let evaluation = self.rt.engine.run(rule, input).await;
        *body = Some(evaluation.event);
        event.metrics.rule(t.elapsed(), evaluation.verdict.is_err());
        let requested = (!evaluation.requested.is_empty()).then_some(evaluation.requested);
        let decision = match evaluation.verdict {
            Ok(Verdict::Answer(map)) => shape(
                event,
                map,
                pending || (requested.is_some() && !durable),
                Some(evaluation.state),
            ),
            Ok(Verdict::Reject(reject)) => Decision {
                status: 400,
                body: error_map(&reject.code, &reject.message),
                outcome: Outcome::Rejected,
                finished: true,
                state: Some(evaluation.state),
                taken: None,
            },
            Err(error) => {
                log_rule_error(&event.config.name, Some(self.key), &error);
                fail_safe(event)
            }
        };
        (decision, requested)
    }
}

/// MPLUS.md 6: log, count, let the rule see it, answer `{}`, never forward.
pub(super) async fn error_request(
    gateway: &Gateway,
    rt: &Runtime,
    event: &CompiledEvent,
    subscription: &str,
    name: &str,
    body: Map,
) -> Answer {
    let (code, message) = error_fields(&body);
    tracing::warn!(event = %name, subscription = %subscription, error_code = %code, error_message = %message, "till reported an error in an earlier answer");
    if let How::Rule(rule) = &event.how {
        let input = input(gateway, name, subscription, Some(Dynamic::from_map(body)));
        if let Err(error) = rt.engine.run(rule, input).await.verdict {
            log_rule_error(name, None, &error);
            event.metrics.rule(Duration::ZERO, true);
        }
    }
    let empty = Bytes::from_static(b"{}");
    Answer::json(200, empty, Outcome::ErrorRequest, CallNote::default())
}

/// A rule's input as an error request sees it: the call, and no conversation (attempt 1,
/// no key, no state, no forwards, and `forward` turned off).
fn input(gateway: &Gateway, name: &str, subscription: &str, event: Option<Dynamic>) -> Input {
    Input {
        event: event.unwrap_or_default(),
        name: name.to_owned(),
        subscription: subscription.to_owned(),
        received_at: Clock::rfc3339(gateway.clock.now_ms()),
        attempt: 1,
        elapsed_ms: 0,
        key: String::new(),
        state: Map::new(),
        forwards: Vec::new(),
        upstreams: None,
        push: Dynamic::UNIT,
    }
}

/// A failed rule at ERROR with its location and a summary free of the call's values (a
/// Rhai message may quote them); the whole message at debug, for the rule's author.
fn log_rule_error(event: &str, key: Option<ConversationKey>, error: &RuleError) {
    let key = key.map(|k| k.to_hex()).unwrap_or_default();
    tracing::error!(event, key, location = %error.location, "rule failed: {}", error.summary);
    let message = loggable(&error.message, 1024);
    tracing::debug!(event, key, location = %error.location, "rule failed: {message}");
}

pub(super) fn is_error_request(body: &Map) -> bool {
    body.get("error").is_some_and(Dynamic::is_map)
}

/// The error's code and message, escaped and cut for the log line: the till's text must
/// not forge or flood lines.
fn error_fields(body: &Map) -> (String, String) {
    let Some(error) = body.get("error").and_then(|e| e.as_map_ref().ok()) else {
        return (String::new(), String::new());
    };
    let text = |k: &str| {
        error.get(k).map_or_else(String::new, |v| {
            loggable(&v.to_string(), escape::ERROR_FIELD_MAX_CHARS)
        })
    };
    (text("code"), text("message"))
}
