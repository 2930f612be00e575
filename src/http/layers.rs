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
        let timeout = self.layer.timeout + push_hold(&to);
        // Boxed as it is, not in an `async` block: a block keeps the handler's future twice
        // (captured, and moved into the awaited timeout), and a held backgroundPoll call
        // keeps it for its whole hold (GATEWAY.md 7, 9).
        Box::pin(Timed {
            call: tokio::time::timeout(timeout, self.inner.call(req)),
            to,
            started,
            timeout,
        })
    }
}

pin_project_lite::pin_project! {
    /// One call under its deadline; counted and logged when it ends.
    struct Timed<F> {
        #[pin]
        call: tokio::time::Timeout<F>,
        to: Addressee,
        started: Instant,
        timeout: Duration,
    }
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>>,
{
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match std::task::ready!(this.call.poll(cx)) {
            Ok(response) => response?,
            Err(_) => {
                let timeout = *this.timeout;
                tracing::error!("a call outlived server.request_timeout ({timeout:?})");
                refused(Refusal::Deadline, this.to)
            }
        };
        let elapsed = this.started.elapsed();
        if let Some(record) = response.extensions_mut().remove::<CallRecord>() {
            record.metrics.call(record.outcome, elapsed);
            if this.to.rt.config.server.access_log {
                log_call(&record, response.status().as_u16(), elapsed);
            }
        }
        Poll::Ready(Ok(response))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer's future is the handler's and a few fields, not twice the handler's (as an
    /// `async` block awaiting it would be): a held backgroundPoll call keeps it for its
    /// whole hold (GATEWAY.md 7: 10,000 held calls in under 256 MB).
    #[tokio::test]
    async fn the_layers_future_keeps_the_handlers_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pollgate.yaml");
        let yaml = "server: {listen: '127.0.0.1:0'}\nadmin: {listen: '127.0.0.1:0'}\n\
                    subscriptions:\n  s: {secret: 'c2VjcmV0'}\n";
        std::fs::write(&path, yaml).expect("config");
        let config = crate::config::Config::load(&path, &|_| None).expect("config loads");
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let runtime = Runtime::build(config, &metrics, 1).expect("runtime");
        let layer = CallLayer {
            timeout: Duration::from_secs(1),
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
        };
        let handler = |_req: Request<()>| async {
            let buffer = [1u8; 4096];
            tokio::task::yield_now().await;
            let mut response = Response::new(Full::new(Bytes::copy_from_slice(&buffer[..2])));
            *response.status_mut() = http::StatusCode::ACCEPTED;
            Ok::<_, Infallible>(response)
        };
        let own = std::mem::size_of_val(&handler(Request::new(())));
        let mut calls = layer.layer(tower::service_fn(handler));
        let mut call = calls.call(Request::new(()));
        let size = std::mem::size_of_val(&*call);
        assert!(size < own + 512, "{size} bytes to time a {own}-byte call");
        let response = call.as_mut().await.expect("infallible");
        assert_eq!(response.status(), 202);
    }
}
