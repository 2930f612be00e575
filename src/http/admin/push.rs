//! `/push/{subscription}/{branch}/{workplace}` on the admin listener (GATEWAY.md 9): push a
//! message to a till (POST), list its pending messages (GET), withdraw one
//! (`DELETE .../{id}`); and `GET /push`, every till's pending messages (the console's list).

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method};
use http_body_util::Full;
use serde::Serialize;

use super::{error, json, AdminState};
use crate::config::PUSH_EVENT;
use crate::conversation::Clock;
use crate::error_answer::AdminError;
use crate::http::overload::{read_body, BodyError, BodyLimits};
use crate::push::{Message, MessageId, PushError, Till, MAX_LISTED};

type Answer = http::Response<Full<Bytes>>;

/// One pending message of `GET /push`: its till, then the message as a till's list shows it.
#[derive(Serialize)]
struct TillEntry {
    subscription: String,
    branch: String,
    workplace: String,
    #[serde(flatten)]
    message: Entry,
}

/// One pending message as the list shows it.
#[derive(Serialize)]
struct Entry {
    id: String,
    queued_at: String,
    expires_at: String,
    body: serde_json::Value,
}

fn entry(m: &Message) -> Entry {
    Entry {
        id: m.id.to_string(),
        queued_at: Clock::rfc3339(m.queued_ms),
        expires_at: Clock::rfc3339(m.expires_ms),
        body: serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null),
    }
}

/// Answers a request under `/push`.
pub(super) async fn route<B>(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: B,
) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    if parts.is_empty() {
        return match *method {
            Method::GET => every(state, query).await,
            _ => error(&AdminError::MethodNotAllowed("GET")),
        };
    }
    let (till, id) = match parts.as_slice() {
        [sub, branch, workplace] => ((*sub, *branch, *workplace), None),
        [sub, branch, workplace, id] => ((*sub, *branch, *workplace), Some(*id)),
        _ => return error(&AdminError::NotFound),
    };
    match (method, id) {
        (&Method::GET | &Method::POST, None) | (&Method::DELETE, Some(_)) => {}
        (_, None) => return error(&AdminError::MethodNotAllowed("GET, POST")),
        (_, Some(_)) => return error(&AdminError::MethodNotAllowed("DELETE")),
    }
    let till = match self::till(state, till) {
        Ok(till) => till,
        Err(e) => return error(&e),
    };
    match (method, id) {
        (&Method::POST, _) => push(state, &till, headers, body).await,
        (&Method::DELETE, Some(id)) => withdraw(state, &till, id).await,
        _ => list(state, &till).await,
    }
}

/// The till a path names: a configured subscription, and a branch and a workplace as a
/// till's calls can name them.
fn till(
    state: &AdminState,
    (sub, branch, workplace): (&str, &str, &str),
) -> Result<Till, AdminError> {
    if !state
        .gateway
        .runtime
        .load()
        .config
        .subscriptions
        .contains_key(sub)
    {
        return Err(AdminError::NoSubscription(sub.to_owned()));
    }
    for (name, part) in [("branch", branch), ("workplace", workplace)] {
        let valid = (1..=64).contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(AdminError::BadTill(format!(
                "{name}: `{}` is not a {name} number (1 to 64 of A-Z a-z 0-9 _ . -)",
                crate::telemetry::escape::loggable(part, 64)
            )));
        }
    }
    Ok(Till::new(sub, branch, workplace))
}

fn unavailable(e: &PushError) -> Answer {
    error(&AdminError::StoreUnavailable(e.to_string()))
}

async fn push<B>(state: &AdminState, till: &Till, headers: &HeaderMap, body: B) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (ttl, server) = {
        let rt = state.gateway.runtime.load();
        let channel = rt.event(PUSH_EVENT).and_then(|e| e.config.push);
        let server = &rt.config.server;
        let limits = BodyLimits {
            max_bytes: server.max_body_bytes as u64,
            budget: server.max_buffered_bytes,
            timeout: server.body_timeout,
        };
        (channel.map(|c| c.ttl), limits)
    };
    let Some(ttl) = ttl else {
        return error(&AdminError::PushOff);
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let raw = match read_body(body, declared, &state.budget, server).await {
        Ok((raw, _reservation)) => raw,
        Err(e) => return error(&unread(&e, server.max_bytes)),
    };
    let value = match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(value) if value.is_object() => value,
        Ok(_) => {
            return error(&AdminError::BadPush {
                code: "INVALID_DATA",
                why: "the body must be a JSON object of answer objects, e.g. {\"externalCardScan\": {...}}".into(),
            })
        }
        Err(e) => {
            return error(&AdminError::BadPush {
                code: "INVALID_JSON",
                why: format!("the body is not valid JSON: {e}"),
            })
        }
    };
    let compact = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    match state.gateway.push.push(till, compact, ttl).await {
        Ok(m) => {
            tracing::debug!(message = %m.id, branch = %till.branch, workplace = %till.workplace, "message pushed");
            json(
                202,
                &serde_json::json!({"id": m.id.to_string(), "expires_at": Clock::rfc3339(m.expires_ms)}),
            )
        }
        Err(e) => unavailable(&e),
    }
}

/// Why a pushed body could not be read.
fn unread(e: &BodyError, max: u64) -> AdminError {
    match e {
        BodyError::TooLarge => AdminError::BadPush {
            code: "PAYLOAD_TOO_LARGE",
            why: format!("the body is over server.max_body_bytes ({max})"),
        },
        BodyError::Overloaded => {
            AdminError::StoreUnavailable("too many bodies being read; try again".into())
        }
        BodyError::TimedOut => AdminError::BadPush {
            code: "REQUEST_TIMEOUT",
            why: "the body did not arrive within server.body_timeout".into(),
        },
        BodyError::Broken(_) => AdminError::BadPush {
            code: "INVALID_JSON",
            why: "the body was broken off".into(),
        },
    }
}

/// `GET /push`: every till's pending messages, newest first.
async fn every(state: &AdminState, query: Option<&str>) -> Answer {
    let limit = match super::list_limit(query, 100, MAX_LISTED) {
        Ok(limit) => limit,
        Err(e) => return error(&e),
    };
    match state.gateway.push.every(limit).await {
        Ok(messages) => {
            let entries: Vec<TillEntry> = messages
                .into_iter()
                .map(|(till, m)| TillEntry {
                    subscription: till.subscription,
                    branch: till.branch,
                    workplace: till.workplace,
                    message: entry(&m),
                })
                .collect();
            json(200, &entries)
        }
        Err(e) => unavailable(&e),
    }
}

async fn list(state: &AdminState, till: &Till) -> Answer {
    match state.gateway.push.pending(till, MAX_LISTED).await {
        Ok(messages) => json(200, &messages.iter().map(entry).collect::<Vec<_>>()),
        Err(e) => unavailable(&e),
    }
}

async fn withdraw(state: &AdminState, till: &Till, text: &str) -> Answer {
    let Some(id) = MessageId::from_hex(text) else {
        return error(&AdminError::NoMessage(text.to_owned()));
    };
    match state.gateway.push.withdraw(till, id).await {
        Ok(true) => json(
            200,
            &serde_json::json!({"id": id.to_string(), "status": "withdrawn"}),
        ),
        Ok(false) => error(&AdminError::NoMessage(text.to_owned())),
        Err(e) => unavailable(&e),
    }
}
