//! The admin listener (GATEWAY.md 6): health, readiness, metrics, live conversations and
//! reload. It has its own address and is never served on the webhook port. Every endpoint
//! is in its OpenAPI document (`admin/openapi.json`, served at `GET /openapi.json`).

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response};
use http_body_util::Full;
use serde::Serialize;

mod deliveries;
mod openapi;
mod push;

use super::conversation_detail::Detail;
use super::json_response;
use super::overload::BodyBudget;
use super::{bearer, origin};
use crate::conversation::{ConversationKey, ConversationStore, Till};
use crate::error_answer::AdminError;
use crate::gateway::Gateway;
use crate::reload::Reloader;

/// What the admin endpoints need.
#[derive(Clone)]
pub struct AdminState {
    pub gateway: Gateway,
    pub reloader: Reloader,
    /// False until config and store are ready, and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// The webhook listener's body budget, for `pollgate_buffered_bytes`.
    pub budget: BodyBudget,
}

/// `GET /conversations` lists this many without `?limit=`, and never more (a list of
/// millions would be a multi-megabyte answer built in memory).
const MAX_LIST_LIMIT: usize = 1000;

/// Answers one admin request.
pub async fn handle<B>(
    state: AdminState,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if let Err(refusal) = origin::check(req.headers()) {
        return Ok(error(&AdminError::CrossOrigin(refusal.to_string())));
    }
    let path = req.uri().path();
    let runtime = state.gateway.runtime.load();
    if let Err(refused) = bearer::check(&runtime.config.admin, path, req.headers()) {
        return Ok(error(&AdminError::Unauthorized(refused)));
    }
    drop(runtime);
    if path == "/push" || path.starts_with("/push/") {
        let (parts, body) = req.into_parts();
        let (path, query) = (parts.uri.path(), parts.uri.query());
        return Ok(push::route(&state, &parts.method, path, query, &parts.headers, body).await);
    }
    let response = match (req.method(), path) {
        (&Method::GET, "/") => super::console::page(),
        (&Method::GET, "/openapi.json") => openapi::document(),
        (&Method::GET, "/status") => json(200, &state.reloader.status()),
        (&Method::GET, "/healthz") => json(200, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readyz(&state).await,
        (&Method::GET, "/metrics") => metrics(&state).await,
        (&Method::GET, "/conversations") => conversations(&state, req.uri().query()).await,
        (&Method::POST, "/reload") => reload(&state).await,
        (&Method::GET, _) if path.starts_with("/conversations/") => {
            conversation(&state, &path["/conversations/".len()..]).await
        }
        (method, p) if p == "/deliveries" || p.starts_with("/deliveries/") => {
            deliveries::route(&state, method, p, req.uri().query()).await
        }
        (
            _,
            "/" | "/openapi.json" | "/status" | "/healthz" | "/readyz" | "/metrics"
            | "/conversations",
        ) => error(&AdminError::MethodNotAllowed("GET")),
        (_, "/reload") => error(&AdminError::MethodNotAllowed("POST")),
        (_, _) if path.starts_with("/conversations/") => {
            error(&AdminError::MethodNotAllowed("GET"))
        }
        _ => error(&AdminError::NotFound),
    };
    Ok(response)
}

pub(super) fn json(status: u16, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_response(status, Bytes::from(body), None)
}

pub(super) fn error(error: &AdminError) -> Response<Full<Bytes>> {
    let mut response = json_response(error.status(), error.body(), None);
    if let Some(allow) = error.allow() {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(challenge) = error.challenge() {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

async fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    if !state.ready.load(Ordering::Acquire) {
        return json(
            503,
            &serde_json::json!({"status": "not ready", "reason": "starting or shutting down"}),
        );
    }
    if let Some(outbox) = &state.gateway.outbox {
        let trouble = tokio::time::timeout(Duration::from_secs(2), outbox.trouble()).await;
        let reason = match trouble {
            Ok(None) => None,
            Ok(Some(why)) => Some(why),
            Err(_) => Some("the outbox did not answer within 2s".to_owned()),
        };
        if let Some(reason) = reason {
            return json(
                503,
                &serde_json::json!({"status": "not ready", "outbox": outbox.queue().kind(), "reason": reason}),
            );
        }
    }
    let store = &state.gateway.store;
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => json(
            200,
            &serde_json::json!({"status": "ready", "store": store.kind()}),
        ),
        Ok(Err(e)) => json(
            503,
            &serde_json::json!({"status": "not ready", "store": store.kind(), "reason": e.to_string()}),
        ),
        Err(_) => json(
            503,
            &serde_json::json!({"status": "not ready", "store": store.kind(), "reason": "store did not answer within 2s"}),
        ),
    }
}

async fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let gateway = &state.gateway;
    let active = gateway.store.active(gateway.clock.now_ms());
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), active).await {
        gateway.metrics.set_conversations(n);
    }
    gateway.metrics.set_buffered_bytes(state.budget.in_use());
    if let Some(outbox) = &gateway.outbox {
        let _ = tokio::time::timeout(Duration::from_secs(2), outbox.observe()).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(gateway.metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn conversations(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let limit = match list_limit(query, MAX_LIST_LIMIT, MAX_LIST_LIMIT) {
        Ok(limit) => limit,
        Err(e) => return error(&e),
    };
    let event = query_value(query, "event");
    let till = match query_value(query, "till").map(|t| TillFilter::parse(&t)) {
        None => None,
        Some(Ok(till)) => Some(till),
        Some(Err(e)) => return error(&e),
    };
    // With a filter, the newest MAX_LIST_LIMIT are filtered, then cut to `limit`.
    let fetch = if event.is_some() || till.is_some() {
        MAX_LIST_LIMIT
    } else {
        limit
    };
    let gateway = &state.gateway;
    match gateway.store.list(gateway.clock.now_ms(), fetch).await {
        Ok(mut list) => {
            list.retain(|c| {
                event.as_deref().is_none_or(|e| c.event == e)
                    && till.is_none_or(|t| t.keeps(c.till))
            });
            list.truncate(limit);
            json(200, &list)
        }
        Err(e) => error(&AdminError::StoreUnavailable(e.to_string())),
    }
}

/// `?till=BRANCH/WORKPLACE` (one till) or `?till=BRANCH` (every till of a branch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TillFilter {
    branch: u32,
    workplace: Option<u32>,
}

impl TillFilter {
    fn parse(text: &str) -> Result<Self, AdminError> {
        let number = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u32>().ok())
                .flatten()
        };
        let (branch, workplace) = match text.split_once('/') {
            None => (number(text), Some(None)),
            Some((b, w)) => (number(b), number(w).map(Some)),
        };
        match (branch, workplace) {
            (Some(branch), Some(workplace)) => Ok(Self { branch, workplace }),
            _ => Err(AdminError::BadQuery(format!(
                "till: `{}` is not BRANCH/WORKPLACE or BRANCH (whole numbers, e.g. till=12/3)",
                crate::telemetry::escape::loggable(text, 64)
            ))),
        }
    }

    fn keeps(self, till: Till) -> bool {
        till.branch == Some(self.branch) && self.workplace.is_none_or(|w| till.workplace == Some(w))
    }
}

/// The value of `?name=value`, percent-decoded as every HTTP client encodes it (`till=12%2F3`
/// is `12/3`); the first, when the query names it more than once.
pub(super) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| (k == name).then_some(v))
}

/// `?limit=N`: `default` without it; a whole number from 1, taken as `max` above `max` (so a
/// script asking for "everything" gets the most there is). Anything else is `INVALID_QUERY`.
pub(super) fn list_limit(
    query: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, AdminError> {
    let Some(text) = query_value(query, "limit") else {
        return Ok(default);
    };
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<usize>() {
        Ok(n) if digits && n >= 1 => Ok(n.min(max)),
        // Only digits, yet no usize: a number larger than any list.
        Err(_) if digits => Ok(max),
        _ => Err(AdminError::BadQuery(format!(
            "limit: `{}` is not a number from 1 to {max}",
            crate::telemetry::escape::loggable(&text, 64)
        ))),
    }
}

async fn conversation(state: &AdminState, key: &str) -> Response<Full<Bytes>> {
    let Some(parsed) = ConversationKey::from_hex(key) else {
        return error(&AdminError::NoConversation);
    };
    let gateway = &state.gateway;
    match gateway.store.load(parsed).await {
        Ok(Some(snapshot)) => json(200, &Detail::new(parsed, &snapshot, gateway.clock.now_ms())),
        Ok(None) => error(&AdminError::NoConversation),
        Err(e) => error(&AdminError::StoreUnavailable(e.to_string())),
    }
}

async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    match state.reloader.reload("POST /reload").await {
        Ok(generation) => json(
            200,
            &serde_json::json!({"ok": true, "generation": generation}),
        ),
        Err(problems) => {
            let errors: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
            json(422, &serde_json::json!({"ok": false, "errors": errors}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_by_their_whole_name_and_percent_decoded() {
        assert_eq!(
            query_value(Some("limit=5&event=scanCode"), "event").as_deref(),
            Some("scanCode")
        );
        assert_eq!(query_value(Some("events=x"), "event"), None);
        assert_eq!(query_value(None, "event"), None);
        assert_eq!(
            query_value(Some("till=12%2F3&till=1"), "till").as_deref(),
            Some("12/3")
        );
        assert_eq!(query_value(Some("event="), "event").as_deref(), Some(""));
    }

    #[test]
    fn a_till_filter_is_branch_and_workplace_or_a_whole_branch() {
        let one = TillFilter::parse("12/3").unwrap();
        let branch = TillFilter::parse("12").unwrap();
        let till = |b, w| Till {
            branch: Some(b),
            workplace: Some(w),
        };
        assert!(one.keeps(till(12, 3)));
        assert!(!one.keeps(till(12, 4)));
        assert!(!one.keeps(till(1, 3)));
        assert!(branch.keeps(till(12, 4)));
        assert!(!branch.keeps(Till::default()));
        for bad in [
            "",
            "x",
            "12/",
            "/3",
            "12/3/4",
            "-1/2",
            "+1",
            "4294967296/1",
            "1 /2",
        ] {
            assert!(TillFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_limit_is_a_whole_number_from_1_capped_at_the_maximum() {
        let limit = |q| list_limit(Some(q), 100, 1000);
        assert_eq!(list_limit(None, 100, 1000), Ok(100));
        assert_eq!(limit("limit=5"), Ok(5));
        assert_eq!(limit("limit=%35"), Ok(5));
        assert_eq!(limit("x=1&limit=1000000000"), Ok(1000));
        assert_eq!(limit("limit=99999999999999999999999"), Ok(1000));
        for bad in [
            "limit=0",
            "limit=",
            "limit=ten",
            "limit=-1",
            "limit=+5",
            "limit=1.5",
        ] {
            assert!(limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            limit("limit=ten").unwrap_err().message(),
            "limit: `ten` is not a number from 1 to 1000"
        );
    }
}
