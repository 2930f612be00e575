//! HTTP: the webhook listener ([`webhook`]) behind its tower layer ([`layers`]), the admin
//! listener ([`admin`]), and the accept loop both share, with connection bounds
//! ([`connection`]), the body budget ([`overload`]) and graceful shutdown.

pub mod admin;
mod bearer;
pub mod connection;
mod console;
mod conversation_detail;
pub mod layers;
pub mod origin;
pub mod overload;
mod refusal;
pub mod webhook;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

use crate::shutdown::Shutdown;
use crate::signature::{Secret, SIGNATURE_HEADER};
use connection::{ConnLimits, Phase, Tracked, Watched};

/// A JSON answer, signed with `signer` when there is one (a subscription's secret).
pub fn json_response(status: u16, body: Bytes, signer: Option<&Secret>) -> Response<Full<Bytes>> {
    let signature = signer.map(|s| s.sign(&body));
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(signature) = signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(SIGNATURE_HEADER, signature);
    }
    response
}

/// The largest request head (request line and headers) a connection may send.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The first pause after a failed accept; it doubles while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The TLS config a new connection is served with, read per connection so that a reload's
/// certificate takes effect for the next one; `None` from it: plain HTTP.
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// Accepts connections until `shutdown`, at most `limits.max_connections` at once (at the
/// cap, new ones wait in the kernel's backlog), then lets open calls finish within `grace`.
/// With `tls`, each connection's handshake comes first, within `limits.header_timeout`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    mut shutdown: Shutdown,
    grace: Duration,
    limits: ConnLimits,
    tls: Option<TlsSource>,
) where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // Off: see `connection` for why hyper's own header timeout does not fit.
    builder.header_read_timeout(None);
    // hyper would buffer up to ~400 KiB of an unfinished head per connection; a till's
    // heads are well under 1 KiB. Larger ones get 431 and the connection closes.
    builder.max_header_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut accepting = Accepting::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = shutdown.wait() => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            stream = accepting.next(&listener) => stream,
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            builder: builder.clone(),
            watcher: graceful.watcher(),
            limits,
            slot,
        };
        // Each its own task: a plain connection's task is sized for the connection alone,
        // not for a TLS handshake too. Detached: the connection ends on its own.
        let service = service.clone();
        let task = match tls.as_ref().and_then(|source| source()) {
            None => tokio::spawn(conn.serve(stream, Phase::new(), service)),
            Some(config) => tokio::spawn(conn.handshake(stream, config, service)),
        };
        drop(task);
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "calls still open after the shutdown grace period ({grace:?}); closing them"
        );
    }
}

/// What one accepted connection is served with.
struct Conn {
    builder: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ConnLimits,
    /// Its place under `server.max_connections`, given back when it closes.
    slot: OwnedSemaphorePermit,
}

impl Conn {
    /// The TLS handshake, within `limits.header_timeout`; then the connection is served by
    /// a task of its own, so that this one's state (the handshake) is not kept as long as
    /// the connection is.
    async fn handshake<S>(self, stream: TcpStream, config: Arc<rustls::ServerConfig>, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        // The header timeout runs from here, so a slow handshake eats into it.
        let phase = Phase::new();
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(self.limits.header_timeout, handshake).await {
            Ok(Ok(stream)) => drop(tokio::spawn(self.serve(stream, phase, service))),
            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
            Err(_) => tracing::debug!("TLS handshake not done within the header timeout"),
        }
    }

    /// The connection's calls, within its bounds: a future made of the connection alone.
    /// No `async` wrapper: it would keep the connection twice (see [`connection::Bounded`]),
    /// and a connection may be held open a long time (a backgroundPoll call waiting for a
    /// pushed message, GATEWAY.md 7, 9).
    fn serve<IO, S>(
        self,
        io: IO,
        phase: Arc<Phase>,
        service: S,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let io = TokioIo::new(Watched::new(io, phase.clone()));
        let service = tracked(service, phase.clone());
        let connection = self
            .watcher
            .watch(self.builder.serve_connection(io, service));
        let slot = self.slot;
        connection::bounded(connection, phase, self.limits).map(move |ended| {
            match ended {
                Some(Err(e)) => tracing::debug!("connection ended: {e}"),
                Some(Ok(())) => {}
                None => tracing::debug!("connection closed: header or idle timeout"),
            }
            drop(slot);
        })
    }
}

/// An answer as hyper sends it: the body tells the connection when it is done.
type TrackedResponse = Response<Tracked<Full<Bytes>>>;

/// `service` as hyper calls it on one connection: the call marks the connection busy, and
/// its answer body marks it idle once sent.
fn tracked<S>(
    service: S,
    phase: Arc<Phase>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = TrackedResponse,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<TrackedResponse, Infallible>> + Send,
> + Send
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    hyper::service::service_fn(move |req| {
        phase.busy();
        let phase = phase.clone();
        // `map`, not an `async` block, which would keep the call's future twice.
        service.clone().oneshot(req).map(move |response| {
            let response = response?;
            phase.answered();
            Ok(response.map(|body| Tracked::new(body, phase)))
        })
    })
}

/// Accept errors (out of file descriptors, mostly) back off instead of spinning, and are
/// logged once per burst, not once per attempt: under a descriptor flood a warning per
/// failed accept would be its own flood.
#[derive(Default)]
struct Accepting {
    failures: u64,
}

impl Accepting {
    async fn next(&mut self, listener: &TcpListener) -> TcpStream {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if self.failures > 0 {
                        tracing::info!(failed = self.failures, "accepting connections again");
                        self.failures = 0;
                    }
                    return stream;
                }
                Err(e) => {
                    if self.failures == 0 {
                        tracing::warn!("accept failed: {e}; backing off until it succeeds (not logged again until then)");
                    }
                    self.failures += 1;
                    let doublings = u32::try_from(self.failures - 1).unwrap_or(u32::MAX).min(7);
                    let pause = (ACCEPT_BACKOFF_MIN * 2u32.pow(doublings)).min(ACCEPT_BACKOFF_MAX);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain connection's task is hyper's connection and its bounds: no TLS handshake
    /// beside it, no copy of it (GATEWAY.md 7: 10,000 held calls in under 256 MB).
    #[tokio::test]
    async fn a_plain_connections_task_is_its_connection_and_little_more() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = || async { TcpStream::connect(addr).await.expect("connect") };
        let service = tower::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        let phase = Phase::new();
        let io = TokioIo::new(Watched::new(connect().await, phase.clone()));
        let graceful = GracefulShutdown::new();
        let connection = graceful
            .watcher()
            .watch(http1::Builder::new().serve_connection(io, tracked(service, phase.clone())));
        let own = std::mem::size_of_val(&connection);
        let slots = Arc::new(Semaphore::new(1));
        let conn = Conn {
            builder: http1::Builder::new(),
            watcher: graceful.watcher(),
            limits: ConnLimits {
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                max_connections: 1,
            },
            slot: slots.try_acquire_owned().expect("a slot"),
        };
        let task = conn.serve(connect().await, phase, service);
        let size = std::mem::size_of_val(&task);
        assert!(size < own + 512, "{size} bytes for a {own}-byte connection");
    }
}
