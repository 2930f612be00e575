//! The tower layers around the webhook handler. The stack, outermost first:
//!
//! 1. [`Telemetry`]: outermost, so every answer is counted and logged once, 404s and
//!    deadline answers included. It reads the [`CallRecord`] the handler leaves in the
//!    response's extensions and removes it.
//! 2. [`Deadline`]: a last-resort bound on one call (`server.request_timeout`); inside
//!    telemetry so its answers are counted too (under the call's event, and signed when
//!    the subscription is known, like every other answer). The pipeline's own bounds (rule
//!    limits, hold, upstream budgets, store timeouts) normally answer long before.

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

/// Counts every call; logs one line per call when the config in use says
/// `server.access_log: true` (read per call, so a reload switches it).
#[derive(Clone)]
pub struct TelemetryLayer {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            runtime: self.runtime.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    runtime: Arc<ArcSwap<Runtime>>,
}

impl<S, B> Service<Request<B>> for Telemetry<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let future = self.inner.call(req);
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let mut response = future.await?;
            let elapsed = started.elapsed();
            if let Some(record) = response.extensions_mut().remove::<CallRecord>() {
                record.metrics.call(record.outcome, elapsed);
                if runtime.load().config.server.access_log {
                    log_call(&record, response.status().as_u16(), elapsed);
                }
            }
            Ok(response)
        })
    }
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

#[derive(Clone)]
pub struct DeadlineLayer {
    pub timeout: Duration,
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S, B> Service<Request<B>> for Deadline<S>
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
        // Read from the head now: the request itself moves into the handler, which reuses
        // this instead of looking it up again.
        let to = Addressee::of(&self.layer.runtime.load(), req.uri().path(), req.headers());
        req.extensions_mut().insert(to.clone());
        let future = self.inner.call(req);
        let timeout = self.layer.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::error!("a call outlived server.request_timeout ({timeout:?})");
                    Ok(refused(Refusal::Deadline, &to))
                }
            }
        })
    }
}
