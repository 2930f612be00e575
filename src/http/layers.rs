//! The tower layer around the webhook handler: [`CallLayer`], one layer doing, outermost
//! first:
//!
//! 1. telemetry: every answer is counted and logged once, 404s and deadline answers
//!    included. It reads the [`CallRecord`] the handler (or the deadline) leaves in the
//!    response's extensions and removes it;
//! 2. the deadline: a last-resort bound on one call (`server.request_timeout`), inside
//!    telemetry so its answers are counted too (under the call's event, and signed when
//!    the subscription is known, like every other answer). The pipeline's own bounds (rule
//!    limits, hold, upstream budgets, store timeouts) normally answer long before. A push
//!    channel's call gets its `push.hold` on top (GATEWAY.md 9).
//!
//! One layer, not two: each boxed its future, and both read the call's head.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

use arc_swap::ArcSwap;

use crate::config::Subscription;
use crate::error_answer::Refusal;
use crate::pipeline::CallNote;
use crate::runtime::Runtime;
use crate::telemetry::{EventMetrics, Outcome};

use super::refusal::refused;
use super::webhook::Addressee;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the handler tells telemetry about a call.
#[derive(Clone)]
pub struct CallRecord {
    pub metrics: Arc<EventMetrics>,
    pub outcome: Outcome,
    pub event: Option<String>,
    pub subscription: Option<Arc<Subscription>>,
    pub note: CallNote,
}

/// Counts every call, logs one line per call when the config in use says
/// `server.access_log: true` (read per call, so a reload switches it), and answers a call
/// that outlives `timeout`.
#[derive(Clone)]
pub struct CallLayer {
    pub timeout: Duration,
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl<S> Layer<S> for CallLayer {
    type Service = Calls<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Calls {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    layer: CallLayer,
}

impl<S, B> Service<Request<B>> for Calls<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        // Read from the head now: the request itself moves into the handler, which reuses
        // this instead of looking it up again.
        let rt = self.layer.runtime.load_full();
        let to = Addressee::of(rt, req.method(), req.uri().path(), req.headers());
        req.extensions_mut().insert(to.clone());
        let future = self.inner.call(req);
        let timeout = self.layer.timeout + push_hold(&to);
        Box::pin(async move {
            let mut response = match tokio::time::timeout(timeout, future).await {
                Ok(response) => response?,
                Err(_) => {
                    tracing::error!("a call outlived server.request_timeout ({timeout:?})");
                    refused(Refusal::Deadline, &to)
                }
            };
            let elapsed = started.elapsed();
            if let Some(record) = response.extensions_mut().remove::<CallRecord>() {
                record.metrics.call(record.outcome, elapsed);
                if to.rt.config.server.access_log {
                    log_call(&record, response.status().as_u16(), elapsed);
                }
            }
            Ok(response)
        })
    }
}

/// A push channel's call may hold for `push.hold` before its work even starts: its
/// deadline is `server.request_timeout` beyond that.
fn push_hold(to: &Addressee) -> Duration {
    to.route
        .as_deref()
        .ok()
        .and_then(|event| to.rt.event(event))
        .and_then(|event| event.config.push)
        .map_or(Duration::ZERO, |push| push.hold)
}

fn log_call(record: &CallRecord, status: u16, elapsed: Duration) {
    if !tracing::enabled!(target: "pollgate::access", tracing::Level::INFO) {
        return;
    }
    let event = record.event.as_deref().unwrap_or("-");
    let subscription = record.subscription.as_ref().map_or("-", |s| s.id.as_str());
    let key = record.note.key_text();
    tracing::info!(
        target: "pollgate::access",
        event,
        subscription,
        key = %key,
        attempt = record.note.attempt,
        decision = record.outcome.label(),
        status,
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        forward = record.note.forward,
        "call"
    );
}
