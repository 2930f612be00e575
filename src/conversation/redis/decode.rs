//! Reading what Redis holds: a conversation's hash fields into a [`Snapshot`], a summaries
//! row into a [`Summary`], and the field encodings of final answers and forwards.

use std::sync::Arc;

use ::redis::Value;
use bytes::Bytes;

use crate::conversation::{
    ConversationKey, FinalAnswer, ForwardState, Origin, Reply, Said, Snapshot, StoreError, Summary,
    Till,
};
use crate::telemetry::Outcome;

pub(super) fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt(message.into())
}

pub(super) fn encode_answer(answer: &FinalAnswer) -> Vec<u8> {
    let mut out = format!("{}:", answer.status).into_bytes();
    out.extend_from_slice(&answer.body);
    out
}

fn decode_answer(value: &[u8]) -> Result<FinalAnswer, StoreError> {
    let colon = value
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| corrupt("final answer without status"))?;
    Ok(FinalAnswer {
        status: number(&value[..colon], "fa")?,
        body: Bytes::copy_from_slice(&value[colon + 1..]),
    })
}

fn decode_forward(upstream: &[u8], value: &[u8]) -> Result<(Arc<str>, ForwardState), StoreError> {
    let name: Arc<str> = std::str::from_utf8(upstream)
        .map_err(|_| corrupt("forward name is not UTF-8"))?
        .into();
    let state = if let Some(lease) = value.strip_prefix(b"p:") {
        ForwardState::Pending {
            lease_until_ms: number(lease, "fw")?,
        }
    } else if let Some(json) = value.strip_prefix(b"d:") {
        let reply: Reply = serde_json::from_slice(json)
            .map_err(|e| corrupt(format!("forward `{name}` reply: {e}")))?;
        ForwardState::Done(Arc::new(reply))
    } else {
        return Err(corrupt(format!(
            "forward `{name}` is neither pending nor done"
        )));
    };
    Ok((name, state))
}

fn number<T: std::str::FromStr>(text: &[u8], field: &str) -> Result<T, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| corrupt(format!("field `{field}` is not a number")))
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A till number: `''` when the call had none.
fn till_number(text: &[u8], field: &str) -> Result<Option<u32>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    number(text, field).map(Some)
}

/// The `dc`, `ms` and `cm` fields; no `dc` (or an empty one) means no decision yet.
#[derive(Default)]
struct SaidFields {
    decision: Vec<u8>,
    message: Vec<u8>,
    customer_message: Vec<u8>,
}

impl SaidFields {
    fn decode(&self) -> Result<Option<Said>, StoreError> {
        if self.decision.is_empty() {
            return Ok(None);
        }
        let decision = Outcome::from_label(&text(&self.decision))
            .ok_or_else(|| corrupt("field `dc` is not a decision"))?;
        Ok(Some(Said::new(
            decision,
            &text(&self.message),
            &text(&self.customer_message),
        )))
    }
}

/// An array of bulk strings, as HGETALL and the scripts return them.
pub(super) fn strings(value: Value) -> Result<Vec<Vec<u8>>, StoreError> {
    let Value::Array(items) = value else {
        return Err(corrupt(format!("expected an array, got {value:?}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            other => Err(corrupt(format!("expected a string, got {other:?}"))),
        })
        .collect()
}

/// A conversation from its hash fields; `None` for an empty (missing) hash.
pub(super) fn snapshot(record: Value) -> Result<Option<Snapshot>, StoreError> {
    Ok(marked_snapshot(record)?.map(|(snapshot, _)| snapshot))
}

/// [`snapshot`], with the write mark `w` it was read at (`None` for a hash written before
/// marks were kept).
pub(super) fn marked_snapshot(
    record: Value,
) -> Result<Option<(Snapshot, Option<u64>)>, StoreError> {
    let fields = strings(record)?;
    if fields.is_empty() {
        return Ok(None);
    }
    if fields.len() % 2 != 0 {
        return Err(corrupt("odd number of hash fields"));
    }
    let (mut version, mut attempt, mut first_seen_ms, mut mark) = (None, None, None, None);
    let mut snapshot = Snapshot {
        version: 0,
        attempt: 0,
        first_seen_ms: 0,
        state: None,
        finished: None,
        forwards: Vec::new(),
        origin: Arc::default(),
        said: None,
    };
    let mut origin = Origin::default();
    let mut said = SaidFields::default();
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_slice() {
            b"v" => version = Some(number(&value, "v")?),
            b"n" => attempt = Some(number(&value, "n")?),
            b"fs" => first_seen_ms = Some(number(&value, "fs")?),
            b"w" => mark = Some(number(&value, "w")?),
            b"st" => snapshot.state = Some(Bytes::from(value)),
            b"fa" => snapshot.finished = Some(decode_answer(&value)?),
            b"ev" => origin.event = text(&value).into(),
            b"sb" => origin.subscription = text(&value).into(),
            b"tb" => origin.till.branch = till_number(&value, "tb")?,
            b"tw" => origin.till.workplace = till_number(&value, "tw")?,
            b"dc" => said.decision = value,
            b"ms" => said.message = value,
            b"cm" => said.customer_message = value,
            other => {
                if let Some(upstream) = other.strip_prefix(b"fw:") {
                    snapshot.forwards.push(decode_forward(upstream, &value)?);
                }
                // `ls` and fields from newer versions are not part of a snapshot.
            }
        }
    }
    snapshot.origin = Arc::new(origin);
    snapshot.said = said.decode()?.map(Arc::new);
    let (Some(version), Some(attempt), Some(first_seen_ms)) = (version, attempt, first_seen_ms)
    else {
        return Err(corrupt("conversation lacks `v`, `n` or `fs`"));
    };
    snapshot.version = version;
    snapshot.attempt = attempt;
    snapshot.first_seen_ms = first_seen_ms;
    // Hash order is not insertion order once Redis converts a hash to a table.
    snapshot.forwards.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some((snapshot, mark)))
}

/// A [`super::scripts::SUMMARIES`] row; `None` when the key expired between SCAN and the script.
pub(super) fn summary(
    key: ConversationKey,
    row: Vec<Vec<u8>>,
    now_ms: u64,
) -> Result<Option<Summary>, StoreError> {
    if row.is_empty() {
        return Ok(None);
    }
    if row.len() < 11 {
        return Err(corrupt("short summary row"));
    }
    let mut row = row.into_iter();
    let mut next = || row.next().unwrap_or_default();
    let event = next();
    let first_seen: u64 = number(&next(), "fs")?;
    let last_seen: u64 = number(&next(), "ls")?;
    let attempts: u32 = number(&next(), "n")?;
    let finished = next() == b"1";
    let origin = Origin {
        event: text(&event).into(),
        subscription: text(&next()).into(),
        till: Till {
            branch: till_number(&next(), "tb")?,
            workplace: till_number(&next(), "tw")?,
        },
    };
    let said = SaidFields {
        decision: next(),
        message: next(),
        customer_message: next(),
    };
    let mut s = Summary::new(key, &origin, now_ms, first_seen, last_seen);
    s.attempts = attempts;
    s.finished = finished;
    s.last = said.decode()?.as_ref().into();
    s.pending_forwards = row
        .map(|name| String::from_utf8_lossy(&name).into_owned())
        .collect();
    s.pending_forwards.sort();
    Ok(Some(s))
}
