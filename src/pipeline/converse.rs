//! The conversation loop: begin the conversation, replay its final answer once there is
//! one, else decide and record the decision with a compare-and-set, deciding again when
//! another call of the same conversation changed it first.

use std::time::Duration;

use bytes::Bytes;
use rhai::{Dynamic, Map};

use super::shape::{encode_state, fail_safe, to_json, Decision};
use super::{forwards, Answer, Call, CallNote};
use crate::conversation::{
    Commit, ConversationStore, FinalAnswer, Opening, Said, Snapshot, StoreError, Update,
};
use crate::error_answer::Fallback;
use crate::telemetry::Outcome;

/// How many times a call decides again after another call changed the conversation. Calls
/// of one conversation rarely overlap (a till polls one call at a time); this bounds a storm
/// of duplicates, with a short random pause between rounds so they spread out.
const MAX_CONFLICTS: usize = 64;

impl Call<'_> {
    pub(super) async fn converse(&self, body: Map) -> Answer {
        let store = &self.gateway.store;
        let clock = &self.gateway.clock;
        let opening = Opening {
            event: self.name,
            subscription: self.subscription,
            till: self.till,
        };
        let mut snapshot = match store.begin(self.key, opening, clock.now_ms()).await {
            Ok(snapshot) => snapshot,
            Err(e) => return self.store_failure(&e),
        };
        let attempt = snapshot.attempt;
        let mut note = CallNote {
            key: Some(self.key),
            attempt,
            forward: "",
        };
        let mut body = Some(Dynamic::from_map(body));
        for _ in 0..MAX_CONFLICTS {
            if let Some(done) = &snapshot.finished {
                return Answer::json(done.status, done.body.clone(), Outcome::Replayed, note);
            }
            let mut decision = match self.decide(&mut snapshot, &mut body).await {
                Ok(decision) => decision,
                Err(e) => return self.store_failure(&e),
            };
            note.forward = forwards::note(&snapshot);
            let taken = decision.taken.take();
            let (answer, update) = self.settle(decision, note);
            // Nothing to remember (the state as it was, not finished): no write, so no
            // compare-and-set either. Attempts were counted by `begin`; a call that changes
            // something still writes by compare-and-set and decides again on a conflict.
            let Some(update) = update.filter(|u| u.changes(&snapshot)) else {
                return answer;
            };
            let saved = store
                .commit(self.key, snapshot.version, update, clock.now_ms())
                .await;
            if answer.outcome == Outcome::RuleError {
                // Only what a fail-safe answer said is recorded, at best: whatever the
                // store answers, the answer is the fail-safe one and the rule ran once.
                return answer;
            }
            match saved {
                Ok(Commit::Saved) => {
                    if let Some((till, id)) = taken {
                        self.take(&till, id).await;
                    }
                    return answer;
                }
                Ok(Commit::Conflict(newer)) => {
                    snapshot = Snapshot { attempt, ..newer };
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..500))).await;
                }
                Err(e) => return self.store_failure(&e),
            }
        }
        tracing::warn!(key = %self.key, "conversation changed under this call {MAX_CONFLICTS} times; answering without saving");
        self.store_failure(&StoreError::Corrupt("too many concurrent updates".into()))
    }

    /// The decision as the answer to send and the update that records it: a fail-safe
    /// answer records only that the rule failed (what it said), never state or a final
    /// answer, so a retry after a fix runs the rule again.
    fn settle(&self, decision: Decision, note: CallNote) -> (Answer, Option<Update>) {
        let event = self.event;
        let said = said(decision.outcome, &decision.body);
        let bytes = to_json(decision.body);
        let state = decision.state.map(|s| encode_state(&s));
        let limit = self.rt.config.limits.max_answer_bytes;
        let state_len = state
            .as_ref()
            .and_then(|s| s.as_ref())
            .map_or(0, Bytes::len);
        if bytes.len() > limit || state_len > limit {
            tracing::error!(event = %event.config.name, key = %self.key, answer = bytes.len(), state = state_len, "rule result over limits.max_answer_bytes ({limit})");
            event.metrics.rule(Duration::ZERO, true);
            let fail = fail_safe(event);
            let said = self::said(fail.outcome, &fail.body);
            return (
                Answer::json(fail.status, to_json(fail.body), fail.outcome, note),
                Some(Update::said(said)),
            );
        }
        let answer = Answer::json(decision.status, bytes.clone(), decision.outcome, note);
        if decision.outcome == Outcome::RuleError {
            return (answer, Some(Update::said(said)));
        }
        let update = Update {
            state,
            finished: decision.finished.then(|| FinalAnswer {
                status: decision.status,
                body: bytes,
            }),
            said: Some(said),
        };
        (answer, Some(update))
    }

    fn store_failure(&self, error: &StoreError) -> Answer {
        let event = &self.event.config;
        match error {
            StoreError::Outbox(_) => {
                tracing::error!(event = %event.name, key = %self.key, "durable delivery not queued: {error}");
            }
            StoreError::Full { .. } => {
                tracing::error!(event = %event.name, key = %self.key, "conversation store failed: {error}");
                self.gateway.metrics.store_full();
            }
            _ => {
                tracing::error!(event = %event.name, key = %self.key, "conversation store failed: {error}");
            }
        }
        let fallback = Fallback::StoreDown;
        let note = CallNote {
            key: Some(self.key),
            attempt: 0,
            forward: "",
        };
        let body = to_json(fallback.body(event.polling.is_some()));
        Answer::json(200, body, fallback.outcome(), note)
    }
}

/// What an answer said: `outcome`'s name with the cashier's `message` and `customerMessage`
/// of its `polling` object, else of the first top-level object that has them (`scanCode`,
/// a rejection's `error`).
fn said(outcome: Outcome, body: &Map) -> Said {
    let text = |object: &Map, name: &str| {
        object
            .get(name)
            .and_then(|v| v.clone().into_immutable_string().ok())
    };
    let messages = |object: &Map| {
        let (m, c) = (text(object, "message"), text(object, "customerMessage"));
        (m.is_some() || c.is_some()).then(|| (m.unwrap_or_default(), c.unwrap_or_default()))
    };
    let polling = body.get("polling").and_then(|p| p.read_lock::<Map>());
    let found = polling.as_deref().and_then(messages).or_else(|| {
        body.values()
            .find_map(|v| v.read_lock::<Map>().as_deref().and_then(messages))
    });
    let (message, customer) = found.unwrap_or_default();
    Said::new(outcome, &message, &customer)
}
