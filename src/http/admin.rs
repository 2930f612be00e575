//! The admin listener (GATEWAY.md 6): health, readiness, metrics, live conversations and
//! reload. It has its own address and is never served on the webhook port.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::Full;
use serde::Serialize;

use super::json_response;
use crate::conversation::ConversationStore;
use crate::pipeline::Gateway;
use crate::reload::Reloader;

/// What the admin endpoints need.
#[derive(Clone)]
pub struct AdminState {
    pub gateway: Gateway,
    pub reloader: Reloader,
    /// False until config and store are ready, and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
}

const DEFAULT_LIST_LIMIT: usize = 1000;

/// Answers one admin request.
pub async fn handle<B>(
    state: AdminState,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let response = match (req.method(), path) {
        (&Method::GET, "/healthz") => json(200, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readyz(&state).await,
        (&Method::GET, "/metrics") => metrics(&state).await,
        (&Method::GET, "/conversations") => conversations(&state, req.uri().query()).await,
        (&Method::POST, "/reload") => reload(&state).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/conversations") => not_allowed("GET"),
        (_, "/reload") => not_allowed("POST"),
        _ => json(
            404,
            &serde_json::json!({"error": {"code": "NOT_FOUND", "message": "admin endpoints: /healthz /readyz /metrics /conversations /reload"}}),
        ),
    };
    Ok(response)
}

fn json(status: u16, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_response(status, Bytes::from(body), None)
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = json(
        405,
        &serde_json::json!({"error": {"code": "METHOD_NOT_ALLOWED", "message": format!("use {allow}")}}),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

async fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    if !state.ready.load(Ordering::Acquire) {
        return json(
            503,
            &serde_json::json!({"status": "not ready", "reason": "starting or shutting down"}),
        );
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
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), gateway.store.count()).await {
        gateway.metrics.set_conversations(n);
    }
    let mut response = Response::new(Full::new(Bytes::from(gateway.metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn conversations(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let limit = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_LIST_LIMIT);
    let gateway = &state.gateway;
    match gateway.store.list(gateway.clock.now_ms(), limit).await {
        Ok(list) => json(200, &list),
        Err(e) => json(
            503,
            &serde_json::json!({"error": {"code": "STORE_UNAVAILABLE", "message": e.to_string()}}),
        ),
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
