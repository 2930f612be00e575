//! A verified call's way to its answer: conversation lookup, replay of finished answers,
//! polling timeout, forwards and `hold`, the rule, and the compare-and-set that records
//! what the call changed. The HTTP layer signs and sends what this returns.

mod answer;
mod shape;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use rhai::{Dynamic, Map};
use tokio::time::Instant;

pub use answer::{error_bytes, Answer, CallNote};
use shape::{decode_state, encode_state, fail_safe, reply_answer, shape, to_json, Decision};
pub use verify::{signature_present, subscription, verify, Refusal, Verified, SUBSCRIPTION_HEADER};

use crate::conversation::{
    Clock, Commit, ConversationKey, ConversationStore, FinalAnswer, ForwardState, Snapshot, Store,
    Update,
};
use crate::rules::{finish_answer, Input, Verdict};
use crate::runtime::{CompiledEvent, How, Runtime};
use crate::telemetry::escape::{self, loggable};
use crate::telemetry::{Metrics, Outcome};
use crate::upstream::{budget, Forwarder, Outgoing};

/// The cashier's message when a polling event's rule failed.
pub const RULE_FAILED_MESSAGE: &str = "This step could not be checked; please continue";
/// The cashier's message while the conversation store cannot be reached.
pub const STORE_DOWN_MESSAGE: &str = "The gateway cannot reach its state store; retrying";
/// How long before `server.request_timeout` a held call stops waiting and answers.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// How many times a call decides again after another call changed the conversation. Calls
/// of one conversation rarely overlap (a till polls one call at a time); this bounds a storm
/// of duplicates, with a short random pause between rounds so they spread out.
const MAX_CONFLICTS: usize = 64;
/// Added to the upstream budget a non-polling call waits by default: the forward's own
/// overhead (connection, request, recording the reply) beyond its timeouts and backoff.
const NON_POLLING_HOLD_SLACK: Duration = Duration::from_secs(1);

/// Everything that outlives a config generation: the store, forwards, clock, metrics,
/// and the current generation itself. A cheap-clone handle.
#[derive(Clone)]
pub struct Gateway {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub store: Store,
    pub forwarder: Forwarder,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(runtime: Runtime, store: Store, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let forwarder = Forwarder::new(store.clone(), clock, metrics.clone());
        Self {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            store,
            forwarder,
            clock,
            metrics,
        }
    }

    /// Answers a verified call, using the generation it started with.
    pub async fn answer(&self, rt: &Arc<Runtime>, call: Verified) -> Answer {
        let Some(event) = rt.event(&call.event_name) else {
            return Answer::json(
                200,
                Bytes::from_static(b"{}"),
                Outcome::Unconfigured,
                CallNote::default(),
            );
        };
        if is_error_request(&call.body) {
            return self.error_request(rt, event, call).await;
        }
        let key = ConversationKey::derive(
            &rt.config.state.key,
            &call.subscription.id,
            &call.event_name,
            &call.body,
        );
        let started = Instant::now();
        match self
            .store
            .begin(key, &call.event_name, self.clock.now_ms())
            .await
        {
            Ok(snapshot) => self.converse(rt, event, call, key, snapshot, started).await,
            Err(e) => self.store_failure(event, key, &e),
        }
    }

    async fn converse(
        &self,
        rt: &Arc<Runtime>,
        event: &CompiledEvent,
        call: Verified,
        key: ConversationKey,
        mut snapshot: Snapshot,
        started: Instant,
    ) -> Answer {
        let attempt = snapshot.attempt;
        let mut note = CallNote {
            key: Some(key),
            attempt,
            forward: "",
        };
        let mut body = Some(Dynamic::from_map(call.body));
        for _ in 0..MAX_CONFLICTS {
            if let Some(done) = &snapshot.finished {
                return Answer::json(done.status, done.body.clone(), Outcome::Replayed, note);
            }
            let decision = match self
                .decide(
                    rt,
                    event,
                    &call.raw,
                    &call.subscription.id,
                    &call.event_name,
                    key,
                    &mut snapshot,
                    &mut body,
                    started,
                )
                .await
            {
                Ok(decision) => decision,
                Err(e) => return self.store_failure(event, key, &e),
            };
            note.forward = forward_note(&snapshot);
            let bytes = to_json(decision.body);
            let state = decision.state.map(|s| encode_state(&s));
            let limit = rt.config.limits.max_answer_bytes;
            let state_len = state
                .as_ref()
                .and_then(|s| s.as_ref())
                .map_or(0, Bytes::len);
            if bytes.len() > limit || state_len > limit {
                tracing::error!(event = %event.config.name, %key, answer = bytes.len(), state = state_len, "rule result over limits.max_answer_bytes ({limit})");
                event.metrics.rule(Duration::ZERO, true);
                let fail = fail_safe(event);
                return Answer::json(fail.status, to_json(fail.body), fail.outcome, note);
            }
            if decision.outcome == Outcome::RuleError {
                // Fail-safe answers are not remembered: a retry after a fix runs the rule again.
                return Answer::json(decision.status, bytes, decision.outcome, note);
            }
            let update = Update {
                state,
                finished: decision.finished.then(|| FinalAnswer {
                    status: decision.status,
                    body: bytes.clone(),
                }),
            };
            match self
                .store
                .commit(key, snapshot.version, update, self.clock.now_ms())
                .await
            {
                Ok(Commit::Saved) => {
                    return Answer::json(decision.status, bytes, decision.outcome, note)
                }
                Ok(Commit::Conflict(newer)) => {
                    snapshot = Snapshot { attempt, ..newer };
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..500))).await;
                }
                Err(e) => return self.store_failure(event, key, &e),
            }
        }
        tracing::warn!(%key, "conversation changed under this call {MAX_CONFLICTS} times; answering without saving");
        self.store_failure(
            event,
            key,
            &crate::conversation::StoreError::Corrupt("too many concurrent updates".into()),
        )
    }

    /// One decision: timeout, forwards and hold, then the rule (again after `hold` if the
    /// rule asked for a new forward).
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        rt: &Arc<Runtime>,
        event: &CompiledEvent,
        raw: &Bytes,
        subscription: &str,
        event_name: &str,
        key: ConversationKey,
        snapshot: &mut Snapshot,
        body: &mut Option<Dynamic>,
        started: Instant,
    ) -> Result<Decision, crate::conversation::StoreError> {
        let now = self.clock.now_ms();
        let elapsed_ms = now.saturating_sub(snapshot.first_seen_ms);
        if let Some(polling) = &event.config.polling {
            if Duration::from_millis(elapsed_ms) >= polling.timeout {
                return Ok(Decision {
                    status: 200,
                    body: finish_answer(true, &polling.timeout_message, ""),
                    outcome: Outcome::TimedOut,
                    finished: true,
                    state: None,
                });
            }
        }
        if let Some(upstream) = &event.config.forward {
            if forward_due(snapshot, upstream, now) {
                self.start_forward(
                    rt,
                    key,
                    upstream,
                    raw.clone(),
                    subscription,
                    event_name,
                    snapshot,
                )
                .await?;
            }
        }
        self.hold(rt, event, key, snapshot, started).await?;
        let mut decision = self
            .evaluate(
                rt,
                event,
                subscription,
                event_name,
                key,
                snapshot,
                body,
                elapsed_ms,
            )
            .await;
        if let Some(requested) = decision.1.take() {
            for request in requested {
                let bytes = request.body.map_or_else(|| raw.clone(), Bytes::from);
                self.start_forward(
                    rt,
                    key,
                    &request.upstream,
                    bytes,
                    subscription,
                    event_name,
                    snapshot,
                )
                .await?;
            }
            if self.hold(rt, event, key, snapshot, started).await? {
                decision = self
                    .evaluate(
                        rt,
                        event,
                        subscription,
                        event_name,
                        key,
                        snapshot,
                        body,
                        elapsed_ms,
                    )
                    .await;
            }
        }
        Ok(decision.0)
    }

    /// Waits for pending forwards up to the event's hold (counted from the call's start);
    /// true when it waited and something may have changed.
    async fn hold(
        &self,
        rt: &Runtime,
        event: &CompiledEvent,
        key: ConversationKey,
        snapshot: &mut Snapshot,
        started: Instant,
    ) -> Result<bool, crate::conversation::StoreError> {
        let hold = match event.config.hold {
            Some(hold) => hold,
            None if event.config.polling.is_some() => Duration::ZERO,
            // The budget counts the upstream's timeouts and backoff only; without slack the
            // hold ends just before a timed-out forward does, and the till gets `{}`
            // instead of the unavailable answer.
            None => snapshot
                .pending()
                .filter_map(|name| rt.config.upstreams.get(name))
                .map(|up| budget(up) + NON_POLLING_HOLD_SLACK)
                .max()
                .unwrap_or_default(),
        };
        // Answer before the last-resort deadline, so the till gets a signed answer.
        let hold = hold.min(
            rt.config
                .server
                .request_timeout
                .saturating_sub(DEADLINE_MARGIN),
        );
        if hold.is_zero() || snapshot.pending().next().is_none() {
            return Ok(false);
        }
        if let Some(newer) = self.forwarder.wait(key, started + hold).await? {
            snapshot.forwards = newer.forwards;
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_forward(
        &self,
        rt: &Arc<Runtime>,
        key: ConversationKey,
        upstream: &str,
        body: Bytes,
        subscription: &str,
        event_name: &str,
        snapshot: &mut Snapshot,
    ) -> Result<(), crate::conversation::StoreError> {
        let Some(config) = rt.config.upstreams.get(upstream) else {
            return Ok(());
        };
        let secret = match &config.secret {
            Some(secret) => secret,
            None => match rt.config.subscriptions.get(subscription) {
                Some(sub) => &sub.secret,
                None => return Ok(()),
            },
        };
        let outgoing = Outgoing {
            upstream: upstream.to_owned(),
            event: event_name.to_owned(),
            signature: secret.sign(&body),
            body,
            subscription: subscription.to_owned(),
            idempotency_key: key.to_string(),
        };
        self.forwarder
            .start(rt.upstreams.clone(), key, budget(config), outgoing)
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

    /// Runs the event's rule (or fixed answer, or reply mapping) and shapes the answer.
    /// Also returns forwards the rule asked for that are not started yet.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate(
        &self,
        rt: &Runtime,
        event: &CompiledEvent,
        subscription: &str,
        event_name: &str,
        key: ConversationKey,
        snapshot: &Snapshot,
        body: &mut Option<Dynamic>,
        elapsed_ms: u64,
    ) -> (Decision, Option<Vec<crate::rules::ForwardRequest>>) {
        let pending = snapshot.pending().next().is_some();
        match &event.how {
            How::Respond(map) => (shape(event, map.clone(), pending, None), None),
            How::Reply => (reply_answer(event, snapshot, pending), None),
            How::Rule(rule) => {
                let state = decode_state(snapshot.state.as_deref());
                let input = Input {
                    event: body.take().unwrap_or_default(),
                    name: event_name.to_owned(),
                    subscription: subscription.to_owned(),
                    received_at: Clock::rfc3339(self.clock.now_ms()),
                    attempt: snapshot.attempt,
                    elapsed_ms,
                    key: key.to_hex(),
                    state,
                    forwards: forward_views(snapshot, self.clock.now_ms()),
                    upstreams: Some(rt.upstream_names.clone()),
                };
                let t = std::time::Instant::now();
                let evaluation = rt.engine.run(rule, input).await;
                *body = Some(evaluation.event);
                let failed = evaluation.verdict.is_err();
                event.metrics.rule(t.elapsed(), failed);
                let requested = (!evaluation.requested.is_empty()).then_some(evaluation.requested);
                let decision = match evaluation.verdict {
                    Ok(Verdict::Answer(map)) => shape(
                        event,
                        map,
                        pending || requested.is_some(),
                        Some(evaluation.state),
                    ),
                    Ok(Verdict::Reject(reject)) => Decision {
                        status: 400,
                        body: answer::error_body(&reject.code, &reject.message),
                        outcome: Outcome::Rejected,
                        finished: true,
                        state: Some(evaluation.state),
                    },
                    Err(error) => {
                        log_rule_error(&event.config.name, Some(key), &error);
                        fail_safe(event)
                    }
                };
                (decision, requested)
            }
        }
    }

    /// MPLUS.md 6: log, count, let the rule see it, answer `{}`, never forward.
    async fn error_request(&self, rt: &Runtime, event: &CompiledEvent, call: Verified) -> Answer {
        let (code, message) = error_fields(&call.body);
        tracing::warn!(event = %call.event_name, subscription = %call.subscription.id, error_code = %code, error_message = %message, "till reported an error in an earlier answer");
        if let How::Rule(rule) = &event.how {
            let input = Input {
                event: Dynamic::from_map(call.body),
                name: call.event_name.clone(),
                subscription: call.subscription.id.clone(),
                received_at: Clock::rfc3339(self.clock.now_ms()),
                attempt: 1,
                elapsed_ms: 0,
                key: String::new(),
                state: Map::new(),
                forwards: Vec::new(),
                upstreams: None,
            };
            if let Err(error) = rt.engine.run(rule, input).await.verdict {
                log_rule_error(&call.event_name, None, &error);
                event.metrics.rule(Duration::ZERO, true);
            }
        }
        Answer::json(
            200,
            Bytes::from_static(b"{}"),
            Outcome::ErrorRequest,
            CallNote::default(),
        )
    }

    fn store_failure(
        &self,
        event: &CompiledEvent,
        key: ConversationKey,
        error: &crate::conversation::StoreError,
    ) -> Answer {
        tracing::error!(event = %event.config.name, %key, "conversation store failed: {error}");
        if matches!(error, crate::conversation::StoreError::Full { .. }) {
            self.metrics.store_full();
        }
        let body = if event.config.polling.is_some() {
            finish_answer(false, STORE_DOWN_MESSAGE, "")
        } else {
            Map::new()
        };
        let bytes = to_json(body);
        Answer::json(
            200,
            bytes,
            Outcome::StoreError,
            CallNote {
                key: Some(key),
                attempt: 0,
                forward: "",
            },
        )
    }
}

/// A failed rule at ERROR with its location and a summary free of the call's values (a
/// Rhai message may quote them); the whole message at debug, for the rule's author.
fn log_rule_error(event: &str, key: Option<ConversationKey>, error: &crate::rules::RuleError) {
    let key = key.map(|k| k.to_hex()).unwrap_or_default();
    tracing::error!(event, key, location = %error.location, "rule failed: {}", error.summary);
    let message = crate::telemetry::escape::loggable(&error.message, 1024);
    tracing::debug!(event, key, location = %error.location, "rule failed: {message}");
}

fn is_error_request(body: &Map) -> bool {
    body.get("error").is_some_and(Dynamic::is_map)
}

fn error_fields(body: &Map) -> (String, String) {
    let Some(error) = body
        .get("error")
        .and_then(|e| e.as_map_ref().ok().map(|m| m.clone()))
    else {
        return (String::new(), String::new());
    };
    // Escaped and cut for the log line: the till's text must not forge or flood lines.
    let text = |k: &str| {
        error.get(k).map_or_else(String::new, |v| {
            loggable(&v.to_string(), escape::ERROR_FIELD_MAX_CHARS)
        })
    };
    (text("code"), text("message"))
}

/// Whether the forward to `upstream` should be (re)started: never started, or its sender's
/// lease ran out without a reply (that replica died; resend with the same Idempotency-Key).
fn forward_due(snapshot: &Snapshot, upstream: &str, now_ms: u64) -> bool {
    match snapshot.forward(upstream) {
        None => true,
        Some(ForwardState::Pending { lease_until_ms }) => *lease_until_ms <= now_ms,
        Some(ForwardState::Done(_)) => false,
    }
}

/// What `forward(name)` shows the rule; a forward whose lease ran out is left out, so the
/// rule's `forward()` call starts it again.
fn forward_views(snapshot: &Snapshot, now_ms: u64) -> Vec<(String, Option<Dynamic>)> {
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

fn forward_note(snapshot: &Snapshot) -> &'static str {
    if snapshot.forwards.is_empty() {
        ""
    } else if snapshot.pending().next().is_some() {
        "pending"
    } else {
        "done"
    }
}
