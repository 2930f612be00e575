//! Shaping answers (GATEWAY.md 4.3, 5): `polling.finished` where a polling answer lacks it,
//! the reply mapping for events without a rule, the fail-safe answer, and JSON encoding.

use bytes::Bytes;
use rhai::{Dynamic, Map};

use crate::conversation::{ForwardState, Snapshot};
use crate::error_answer::Fallback;
use crate::push::{MessageId, Till};
use crate::rules::finish_answer;
use crate::runtime::CompiledEvent;
use crate::telemetry::Outcome;

/// The state of one decision within a call.
pub(super) struct Decision {
    pub(super) status: u16,
    pub(super) body: Map,
    pub(super) outcome: Outcome,
    /// Final answers are remembered and replayed.
    pub(super) finished: bool,
    pub(super) state: Option<Map>,
    /// A pushed message this decision delivers: taken from the mailbox once the answer is
    /// saved as the conversation's final one (GATEWAY.md 9).
    pub(super) taken: Option<(Till, MessageId)>,
}

/// GATEWAY.md 4.3: a polling event's answer always has `polling.finished`.
pub(super) fn shape(
    event: &CompiledEvent,
    mut body: Map,
    pending: bool,
    state: Option<Map>,
) -> Decision {
    let Some(polling) = &event.config.polling else {
        return Decision {
            status: 200,
            body,
            outcome: Outcome::Answered,
            finished: !pending,
            state,
            taken: None,
        };
    };
    let finished = match body.get_mut("polling") {
        Some(p) => ensure_finished(p),
        None if pending => {
            body.extend(finish_answer(false, &polling.pending_message, ""));
            false
        }
        None => {
            body.extend(finish_answer(true, "", ""));
            true
        }
    };
    let outcome = if finished {
        Outcome::Finished
    } else {
        Outcome::KeepPolling
    };
    Decision {
        status: 200,
        body,
        outcome,
        finished,
        state,
        taken: None,
    }
}

/// No rule: a 2xx JSON object reply is the answer; anything else is "unavailable".
pub(super) fn reply_answer(event: &CompiledEvent, snapshot: &Snapshot, pending: bool) -> Decision {
    let reply = event
        .config
        .forward
        .as_deref()
        .and_then(|up| match snapshot.forward(up) {
            Some(ForwardState::Done(reply)) => Some(reply.clone()),
            _ => None,
        });
    let body = match reply {
        Some(reply) if reply.ok && reply.body.is_object() => rhai::serde::to_dynamic(&reply.body)
            .ok()
            .and_then(Dynamic::try_cast::<Map>),
        _ => None,
    };
    match body {
        Some(body) => shape(event, body, false, None),
        None if pending && event.config.polling.is_some() => shape(event, Map::new(), true, None),
        // A non-polling event whose reply did not come in time: unavailable, but not
        // remembered (pending), so a retry gets the reply once it is there.
        None if pending => {
            let unavailable = finish_answer(true, &event.config.unavailable_message, "");
            shape(event, unavailable, true, None)
        }
        None => shape(
            event,
            finish_answer(true, &event.config.unavailable_message, ""),
            false,
            None,
        ),
    }
}

/// The rule failed: the fail-safe answer (GATEWAY.md 4.4).
pub(super) fn fail_safe(event: &CompiledEvent) -> Decision {
    let fallback = Fallback::RuleFailed;
    Decision {
        status: 200,
        body: fallback.body(event.config.polling.is_some()),
        outcome: fallback.outcome(),
        finished: false,
        state: None,
        taken: None,
    }
}

/// Reads `polling.finished`, adding `finished: true` where it is missing or not a bool, and
/// replacing a `polling` that is not a map: no till is left polling by accident.
pub(super) fn ensure_finished(polling: &mut Dynamic) -> bool {
    if let Ok(mut map) = polling.as_map_mut() {
        if let Some(Ok(finished)) = map.get("finished").map(Dynamic::as_bool) {
            return finished;
        }
        map.insert("finished".into(), true.into());
        return true;
    }
    let mut map = Map::new();
    map.insert("finished".into(), true.into());
    *polling = Dynamic::from_map(map);
    true
}

/// The saved `state`; one that cannot be read back (written by an older version without the
/// depth limit) is logged, never silently taken for `{}`.
pub(super) fn decode_state(bytes: Option<&[u8]>) -> Map {
    let Some(bytes) = bytes else {
        return Map::new();
    };
    match crate::body::from_json(bytes).map(Dynamic::try_cast::<Map>) {
        Ok(Some(state)) => state,
        Ok(None) => {
            tracing::error!("saved `state` is not a map; the rule sees `#{{}}`");
            Map::new()
        }
        Err(e) => {
            tracing::error!(
                "saved `state` cannot be read back ({:?} error at column {}); the rule sees `#{{}}`",
                e.classify(),
                e.column()
            );
            Map::new()
        }
    }
}

pub(super) fn encode_state(state: &Map) -> Option<Bytes> {
    if state.is_empty() {
        return None;
    }
    serde_json::to_vec(&Dynamic::from_map(state.clone()))
        .ok()
        .map(Bytes::from)
}

/// An answer body as JSON bytes.
pub(super) fn to_json(body: Map) -> Bytes {
    Bytes::from(serde_json::to_vec(&Dynamic::from_map(body)).unwrap_or_else(|_| b"{}".to_vec()))
}
