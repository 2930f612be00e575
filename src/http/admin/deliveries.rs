//! `/deliveries` on the admin listener (GATEWAY.md 8): list the outbox, retry one or every
//! dead delivery of an upstream, delete one.

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use serde::Serialize;

use super::{error, json, list_limit, query_value, AdminState};
use crate::conversation::Clock;
use crate::error_answer::AdminError;
use crate::outbox::{Deliverer, Delivery, DeliveryId, Outbox, OutboxError, Status};

type Answer = http::Response<Full<Bytes>>;

/// `GET /deliveries` lists this many without `?limit=`, and never more than the cap.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// One delivery as the list shows it: no body, no secrets.
#[derive(Serialize)]
struct Entry<'a> {
    id: String,
    upstream: &'a str,
    event: &'a str,
    key: String,
    status: Status,
    attempts: u32,
    last_error: Option<&'a str>,
    /// RFC 3339; `null` for a dead delivery.
    next_attempt: Option<String>,
    age_ms: u64,
}

fn entry(d: &Delivery, now_ms: u64) -> Entry<'_> {
    Entry {
        id: d.id.to_hex(),
        upstream: &d.upstream,
        event: &d.event,
        key: d.key.to_hex(),
        status: d.status,
        attempts: d.attempts,
        last_error: d.last_error.as_deref(),
        next_attempt: (d.status == Status::Pending).then(|| Clock::rfc3339(d.next_ms)),
        age_ms: now_ms.saturating_sub(d.queued_ms),
    }
}

/// Answers a request under `/deliveries`.
pub(super) async fn route(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Answer {
    let rest = path.strip_prefix("/deliveries").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    match (method, parts.as_slice()) {
        (&Method::GET, []) => list(state, query).await,
        (_, []) => error(&AdminError::MethodNotAllowed("GET")),
        (&Method::POST, ["retry"]) => retry_dead(state, query).await,
        (_, ["retry"]) => error(&AdminError::MethodNotAllowed("POST")),
        (&Method::POST, [id, "retry"]) => by_id(state, id, Action::Retry).await,
        (_, [_, "retry"]) => error(&AdminError::MethodNotAllowed("POST")),
        (&Method::DELETE, [id]) => by_id(state, id, Action::Delete).await,
        (_, [_]) => error(&AdminError::MethodNotAllowed("DELETE")),
        _ => error(&AdminError::NotFound),
    }
}

/// `?upstream=U` checked against the config; `None` when not given.
fn upstream_param(state: &AdminState, query: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(name) = query_value(query, "upstream") else {
        return Ok(None);
    };
    let rt = state.gateway.runtime.load();
    if rt.config.upstreams.contains_key(name.as_ref()) {
        Ok(Some(name.into_owned()))
    } else {
        Err(AdminError::BadQuery(format!(
            "upstream: no upstream `{}` (not under `upstreams:`)",
            crate::telemetry::escape::loggable(&name, 64)
        )))
    }
}

struct ListQuery {
    statuses: Vec<Status>,
    upstreams: Vec<String>,
    limit: usize,
}

fn list_query(state: &AdminState, query: Option<&str>) -> Result<ListQuery, AdminError> {
    let statuses = match query_value(query, "status") {
        None => vec![Status::Pending, Status::Dead],
        Some(text) => vec![Status::parse(&text).ok_or_else(|| {
            AdminError::BadQuery(format!(
                "status: `{}` is not pending or dead",
                crate::telemetry::escape::loggable(&text, 64)
            ))
        })?],
    };
    let limit = list_limit(query, DEFAULT_LIMIT, MAX_LIMIT)?;
    let upstreams = match upstream_param(state, query)? {
        Some(name) => vec![name],
        None => all_upstreams(state),
    };
    Ok(ListQuery {
        statuses,
        upstreams,
        limit,
    })
}

fn all_upstreams(state: &AdminState) -> Vec<String> {
    let rt = state.gateway.runtime.load();
    rt.config.upstreams.keys().cloned().collect()
}

fn unavailable(e: &OutboxError) -> Answer {
    error(&AdminError::StoreUnavailable(e.to_string()))
}

async fn list(state: &AdminState, query: Option<&str>) -> Answer {
    let q = match list_query(state, query) {
        Ok(q) => q,
        Err(e) => return error(&e),
    };
    let Some(outbox) = &state.gateway.outbox else {
        return json(200, &Vec::<()>::new());
    };
    let mut found = Vec::new();
    'all: for status in &q.statuses {
        for upstream in &q.upstreams {
            let left = q.limit - found.len();
            match outbox.queue().list(upstream, *status, left).await {
                Ok(list) => found.extend(list),
                Err(e) => return unavailable(&e),
            }
            if found.len() >= q.limit {
                break 'all;
            }
        }
    }
    let now = state.gateway.clock.now_ms();
    let entries: Vec<Entry<'_>> = found.iter().map(|d| entry(d, now)).collect();
    json(200, &entries)
}

async fn retry_dead(state: &AdminState, query: Option<&str>) -> Answer {
    let upstream = match upstream_param(state, query) {
        Ok(Some(name)) => name,
        Ok(None) => {
            return error(&AdminError::BadQuery(
                "upstream: give the upstream whose dead deliveries to retry (?upstream=NAME)"
                    .into(),
            ))
        }
        Err(e) => return error(&e),
    };
    let Some(outbox) = &state.gateway.outbox else {
        return json(
            200,
            &serde_json::json!({"upstream": upstream, "retried": 0}),
        );
    };
    let now = state.gateway.clock.now_ms();
    match outbox.queue().retry_dead(&upstream, now).await {
        Ok(n) => {
            outbox.wake(&upstream);
            json(
                200,
                &serde_json::json!({"upstream": upstream, "retried": n}),
            )
        }
        Err(e) => unavailable(&e),
    }
}

enum Action {
    Retry,
    Delete,
}

async fn by_id(state: &AdminState, text: &str, action: Action) -> Answer {
    let not_found = || error(&AdminError::NoDelivery(text.to_owned()));
    let (Some(id), Some(outbox)) = (DeliveryId::from_hex(text), &state.gateway.outbox) else {
        return not_found();
    };
    let upstream = match find(state, outbox, id).await {
        Ok(Some(upstream)) => upstream,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(&e),
    };
    let queue = outbox.queue();
    let now = state.gateway.clock.now_ms();
    let (done, status) = match action {
        Action::Retry => (queue.retry(&upstream, id, now).await, "pending"),
        Action::Delete => (queue.delete(&upstream, id).await, "deleted"),
    };
    match done {
        Ok(true) => {
            if matches!(action, Action::Retry) {
                outbox.wake(&upstream);
            }
            json(
                200,
                &serde_json::json!({"id": id.to_hex(), "upstream": upstream, "status": status}),
            )
        }
        Ok(false) => not_found(),
        Err(e) => unavailable(&e),
    }
}

/// The upstream whose queue holds `id` (ids are per upstream; there are few upstreams).
async fn find(
    state: &AdminState,
    outbox: &Deliverer,
    id: DeliveryId,
) -> Result<Option<String>, OutboxError> {
    for upstream in all_upstreams(state) {
        if outbox.queue().get(&upstream, id).await?.is_some() {
            return Ok(Some(upstream));
        }
    }
    Ok(None)
}
