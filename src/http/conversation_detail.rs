//! `GET /conversations/{key}` (GATEWAY.md 10): one conversation as JSON, from what the store
//! keeps of it: its event, subscription and till, attempts, age, the last decision and its
//! messages, the size of the rule's state, each forward and its reply's outcome, and the
//! final answer once finished. Never secrets, signatures or the call's body.

use serde::Serialize;
use serde_json::Value;

use crate::conversation::{ConversationKey, ForwardState, LastSaid, Snapshot, Till};

/// One conversation as the admin listener shows it.
#[derive(Debug, Serialize)]
pub(super) struct Detail {
    key: String,
    event: String,
    subscription: String,
    till: Till,
    attempts: u32,
    age_ms: u64,
    finished: bool,
    /// As in `GET /conversations`: the last decision and its messages, `null` if none.
    #[serde(flatten)]
    last: LastSaid,
    /// Bytes of the rule's `state` map as stored (0 while empty).
    state_bytes: usize,
    forwards: Vec<Forward>,
    /// `{status, body}` of the answer replayed to later calls; `null` while going on.
    final_answer: Option<FinalAnswer>,
}

#[derive(Debug, Serialize)]
struct Forward {
    upstream: String,
    /// `pending` or `done`.
    status: &'static str,
    /// For `done`: whether the back end's answer was a 2xx, its HTTP status (0: none came),
    /// why it failed, and how long it took. Not the reply's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct FinalAnswer {
    status: u16,
    body: Value,
}

impl Detail {
    pub(super) fn new(key: ConversationKey, snapshot: &Snapshot, now_ms: u64) -> Self {
        let forwards = snapshot
            .forwards
            .iter()
            .map(|(name, state)| forward(name, state))
            .collect();
        let final_answer = snapshot.finished.as_ref().map(|answer| FinalAnswer {
            status: answer.status,
            body: serde_json::from_slice(&answer.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into())),
        });
        let origin = &snapshot.origin;
        Self {
            key: key.to_hex(),
            event: origin.event.to_string(),
            subscription: origin.subscription.to_string(),
            till: origin.till,
            last: snapshot.said.as_deref().into(),
            attempts: snapshot.attempt,
            age_ms: now_ms.saturating_sub(snapshot.first_seen_ms),
            finished: snapshot.finished.is_some(),
            state_bytes: snapshot.state.as_ref().map_or(0, |s| s.len()),
            forwards,
            final_answer,
        }
    }
}

fn forward(name: &str, state: &ForwardState) -> Forward {
    match state {
        ForwardState::Pending { .. } => Forward {
            upstream: name.to_owned(),
            status: "pending",
            ok: None,
            http_status: None,
            error: None,
            elapsed_ms: None,
        },
        ForwardState::Done(reply) => Forward {
            upstream: name.to_owned(),
            status: "done",
            ok: Some(reply.ok),
            http_status: Some(reply.status),
            error: reply.error.clone(),
            elapsed_ms: Some(reply.elapsed_ms),
        },
    }
}
