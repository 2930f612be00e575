//! The one mock upstream of the tests, benches and examples: a local HTTP server on
//! 127.0.0.1:0 that records every request, answers as told, and counts what it holds at
//! once (requests and connections). Self-contained, so a bench or example can include just
//! this file: `#[path = "../tests/common/upstream.rs"] mod upstream;`.
// Each includer uses part of it; `json` takes its body by value like `serde_json::json!`.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// What a mock upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// How a mock upstream answers its n-th request (0-based).
pub type Behaviour = Arc<dyn Fn(usize) -> MockReply + Send + Sync>;

/// One mock answer.
#[derive(Clone)]
pub struct MockReply {
    pub status: u16,
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the body in pieces of this many bytes without `Content-Length` (chunked).
    pub chunks: Option<usize>,
    /// Extra headers (`Retry-After`, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl MockReply {
    /// A back end that refuses its first request with a 422 (which makes a durable
    /// delivery dead at once) and takes every later one: a dead delivery an operator can
    /// retry.
    pub fn unprocessable_once(n: usize) -> Self {
        if n == 0 {
            Self::json(422, serde_json::json!({"error": "unknown article"}))
        } else {
            Self::json(200, serde_json::json!({}))
        }
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self::raw(status, serde_json::to_vec(&body).unwrap())
    }

    pub fn raw(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            chunks: None,
            headers: Vec::new(),
        }
    }

    /// The answer with one more header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The body in pieces of `size` bytes whose total nobody knows in advance, so the
    /// gateway's reply cap has to count while it reads.
    pub fn chunked(mut self, size: usize) -> Self {
        self.chunks = Some(size);
        self
    }

    fn response(self) -> Response<Either<Full<Bytes>, Chunks>> {
        let body = match self.chunks {
            None => Either::Left(Full::new(self.body)),
            Some(size) => Either::Right(Chunks(
                self.body.chunks(size).map(Bytes::copy_from_slice).collect(),
            )),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = hyper::StatusCode::from_u16(self.status).unwrap();
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value.parse().unwrap());
        }
        resp
    }
}

/// A body of chunks without a size hint: hyper sends it chunked.
pub struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// How many of something are held now, the most ever held at once, and how many came.
#[derive(Default)]
struct Tally {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

impl Tally {
    /// Counts one in; it counts until the guard drops.
    fn enter(self: &Arc<Self>) -> Held {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        self.total.fetch_add(1, SeqCst);
        Held(self.clone())
    }
}

/// One request or connection in a [`Tally`]; counted out when dropped, even when the
/// client gave up and the reply future was dropped.
struct Held(Arc<Tally>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, SeqCst);
    }
}

/// Holds the replies of a [`MockUpstream::start_gated`] upstream until [`Gate::open`], and
/// counts the requests it holds at once (for "one forward" and connection-cap tests that
/// must not depend on how fast a reply comes).
#[derive(Clone)]
pub struct Gate {
    open: Arc<tokio::sync::watch::Sender<bool>>,
    requests: Arc<Tally>,
}

impl Gate {
    fn new() -> Self {
        Self {
            open: Arc::new(tokio::sync::watch::channel(false).0),
            requests: Arc::default(),
        }
    }

    /// Lets every held and later reply go.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Requests received and not yet answered.
    pub fn active(&self) -> usize {
        self.requests.now.load(SeqCst)
    }

    /// The most requests ever received and not yet answered at one time.
    pub fn max_active(&self) -> usize {
        self.requests.max.load(SeqCst)
    }

    /// Counts a request in, waits for the gate; the request counts until the guard drops.
    async fn pass(&self) -> Held {
        let held = self.requests.enter();
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        held
    }
}

/// A local HTTP upstream on 127.0.0.1:0 that records every request.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Tally>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start(behaviour: impl Fn(usize) -> MockReply + Send + Sync + 'static) -> Self {
        // The gated server with its gate open from the start: one server to maintain.
        let (upstream, gate) = Self::start_gated(behaviour).await;
        gate.open();
        upstream
    }

    /// Like [`MockUpstream::start`], but each reply waits until the returned gate opens
    /// (then for its own `delay`).
    pub async fn start_gated(
        behaviour: impl Fn(usize) -> MockReply + Send + Sync + 'static,
    ) -> (Self, Gate) {
        Self::start_gated_at("127.0.0.1:0".parse().unwrap(), behaviour).await
    }

    /// Like [`MockUpstream::start`] on a given address (a back end that comes back on the
    /// port the gateway was told about).
    pub async fn start_at(
        addr: SocketAddr,
        behaviour: impl Fn(usize) -> MockReply + Send + Sync + 'static,
    ) -> Self {
        let (upstream, gate) = Self::start_gated_at(addr, behaviour).await;
        gate.open();
        upstream
    }

    pub async fn start_gated_at(
        addr: SocketAddr,
        behaviour: impl Fn(usize) -> MockReply + Send + Sync + 'static,
    ) -> (Self, Gate) {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            received: Arc::default(),
            behaviour: Arc::new(behaviour),
            gate: Gate::new(),
            connections: Arc::default(),
        };
        let upstream = Self {
            addr,
            received: server.received.clone(),
            connections: server.connections.clone(),
            task: tokio::spawn(server.clone().accept(listener)),
        };
        (upstream, server.gate)
    }

    pub fn url(&self) -> String {
        format!("http://{}/mplus", self.addr)
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.total.load(SeqCst)
    }

    /// The most TCP connections ever open at one time.
    pub fn max_open_connections(&self) -> usize {
        self.connections.max.load(SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the accept loop and every connection share.
#[derive(Clone)]
struct Server {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
    gate: Gate,
    connections: Arc<Tally>,
}

impl Server {
    async fn accept(self, listener: TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(self.clone().connection(stream));
        }
    }

    async fn connection(self, stream: TcpStream) {
        let _open = self.connections.enter();
        let svc = hyper::service::service_fn(move |req| self.clone().answer(req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    }

    async fn answer(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<Either<Full<Bytes>, Chunks>>, Infallible> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let n = {
            let mut rec = self.received.lock().unwrap();
            rec.push(Received {
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body,
            });
            rec.len() - 1
        };
        let reply = (self.behaviour)(n);
        let _held = self.gate.pass().await;
        // No timer for no delay: tokio's timer ticks in milliseconds, which a bench sees.
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        Ok(reply.response())
    }
}
