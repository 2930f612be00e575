//! A push channel's call (GATEWAY.md 9): the till's oldest pending message, held for up to
//! `push.hold` when there is none; the message (or the rule's answer with it) as the
//! conversation's final answer; and taking the message once that answer is saved.

use std::time::Duration;

use rhai::{Dynamic, Map};

use super::shape::{ensure_finished, Decision};
use super::Call;
use crate::config::PushChannel;
use crate::conversation::{Snapshot, StoreError};
use crate::push::{MessageId, Till};
use crate::rules::finish_answer;
use crate::runtime::How;
use crate::telemetry::Outcome;

impl Call<'_> {
    /// Waits for the till's message (unless the till does not wait), then decides: the
    /// message itself, or the rule's answer with it as `push` (`()` when the hold ended
    /// with none). A message is taken only with an answer that finishes the conversation.
    pub(super) async fn push_decision(
        &self,
        channel: PushChannel,
        snapshot: &Snapshot,
        body: &mut Option<Dynamic>,
        elapsed_ms: u64,
    ) -> Result<Decision, StoreError> {
        let unnamed;
        let till = match &self.mailbox {
            Some(till) => till,
            None => {
                unnamed = Till::new(self.subscription, "", "");
                &unnamed
            }
        };
        let hold = if self.blocking {
            channel.hold
        } else {
            Duration::ZERO
        };
        let message = self
            .gateway
            .push
            .next(till, self.started + hold)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let pushed = match &message {
            Some(m) => match crate::body::parse(&m.body) {
                Ok(map) => Dynamic::from_map(map),
                Err(e) => {
                    return Err(StoreError::Corrupt(format!(
                        "pushed message {} is not a JSON object: {e:?}",
                        m.id
                    )))
                }
            },
            None => Dynamic::UNIT,
        };
        let mut decision = match &self.event.how {
            // Boxed, like the other events' decisions (see `decide`).
            How::Rule(_) => {
                Box::pin(self.evaluate(snapshot, body, elapsed_ms, pushed))
                    .await
                    .0
            }
            _ => pushed_answer(pushed),
        };
        if decision.finished && decision.outcome != Outcome::RuleError {
            decision.taken = message.map(|m| (till.clone(), m.id));
        }
        Ok(decision)
    }

    /// Takes a delivered message. When the mailbox cannot, the message stays and is
    /// delivered again (at least once).
    pub(super) async fn take(&self, till: &Till, id: MessageId) {
        if let Err(e) = self.gateway.push.delivered(till, id).await {
            tracing::warn!(key = %self.key, message = %id, "pushed message delivered but not taken from the mailbox: {e}");
        }
    }
}

/// A push channel's answer without a rule: the pushed message with `polling.finished: true`
/// (its own `polling` keeps its messages), or `{"polling": {"finished": false}}` without one.
pub(super) fn pushed_answer(pushed: Dynamic) -> Decision {
    let Some(mut body) = pushed.try_cast::<Map>() else {
        return Decision {
            status: 200,
            body: finish_answer(false, "", ""),
            outcome: Outcome::KeepPolling,
            finished: false,
            state: None,
            taken: None,
        };
    };
    match body.get_mut("polling") {
        Some(polling) => {
            ensure_finished(polling);
            if let Ok(mut map) = polling.as_map_mut() {
                map.insert("finished".into(), true.into());
            }
        }
        None => body.extend(finish_answer(true, "", "")),
    }
    Decision {
        status: 200,
        body,
        outcome: Outcome::Finished,
        finished: true,
        state: None,
        taken: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(d: &Decision) -> serde_json::Value {
        serde_json::from_slice(&super::super::shape::to_json(d.body.clone())).unwrap()
    }

    #[test]
    fn a_pushed_message_is_the_answer_with_finished_true() {
        let map = crate::body::parse(br#"{"externalCardScan":{"cardNumber":"6012"}}"#).unwrap();
        let d = pushed_answer(Dynamic::from_map(map));
        assert!(d.finished);
        assert_eq!(
            json(&d),
            serde_json::json!({"externalCardScan": {"cardNumber": "6012"}, "polling": {"finished": true}})
        );
    }

    #[test]
    fn a_pushed_polling_keeps_its_messages_but_finishes() {
        let map = crate::body::parse(br#"{"polling":{"finished":false,"message":"Card ready"}}"#)
            .unwrap();
        let d = pushed_answer(Dynamic::from_map(map));
        assert_eq!(
            json(&d),
            serde_json::json!({"polling": {"finished": true, "message": "Card ready"}})
        );
    }

    #[test]
    fn no_message_keeps_the_till_polling() {
        let d = pushed_answer(Dynamic::UNIT);
        assert!(!d.finished);
        assert_eq!(
            json(&d),
            serde_json::json!({"polling": {"finished": false}})
        );
    }
}
