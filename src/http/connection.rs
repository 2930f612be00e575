//! Time bounds on one connection (GATEWAY.md 12): request headers within
//! `server.header_timeout` (from connect, or from the first byte of a later request), and a
//! keep-alive connection idle at most `server.idle_timeout`. Body and call bounds are the
//! handler's and the deadline layer's; while a call runs, nothing here closes it.
//!
//! hyper's own `header_read_timeout` is not used: it starts when the connection goes idle
//! after an answer, not at the next request's first byte, so it would close every
//! keep-alive connection after the header timeout instead of the idle timeout. Instead, a
//! [`Phase`] is kept by three observers: the socket (first byte of a request), the service
//! (the headers are complete; the answer is made) and the answer body (taken by hyper, so
//! the connection is idle). A made answer the client does not take within the idle
//! timeout closes the connection too.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection time bounds of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the listener stops accepting.
    pub max_connections: usize,
}

const HEADERS: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
/// The answer is made but hyper has not taken all of it: a client that never reads
/// would otherwise hold the connection busy forever.
const SENDING: u8 = 3;

/// Where one connection is: reading a request head, serving a call, handing over its
/// answer, or idle between calls; and since when.
#[derive(Debug)]
pub struct Phase {
    state: AtomicU8,
    /// Milliseconds from `opened` to the start of the current state.
    since_ms: AtomicU64,
    opened: Instant,
}

impl Phase {
    /// A fresh connection: its first request's head is due `header_timeout` from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(HEADERS),
            since_ms: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    fn set(&self, state: u8) {
        let since = crate::config::millis(self.opened.elapsed());
        self.since_ms.store(since, Ordering::Release);
        self.state.store(state, Ordering::Release);
    }

    /// The head of a call is complete; its bounds are the handler's now.
    pub fn busy(&self) {
        self.set(BUSY);
    }

    /// The answer is made; the client has `idle_timeout` to take it.
    pub fn answered(&self) {
        self.set(SENDING);
    }

    /// The answer was handed to the socket: the connection waits for its next request.
    pub fn idle(&self) {
        self.set(IDLE);
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    fn bytes_read(&self) {
        // Socket, service and body all run in the connection's one task: no race here.
        if self.state.load(Ordering::Acquire) == IDLE {
            self.set(HEADERS);
        }
    }

    /// When the connection is due to close if nothing changes; `None` while a call runs.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let state = self.state.load(Ordering::Acquire);
        let since = self.opened + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        match state {
            HEADERS => Some(since + limits.header_timeout),
            IDLE | SENDING => Some(since + limits.idle_timeout),
            _ => None,
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs `connection` until it ends or its phase outlives its bound; then drops it, which
    /// closes the socket. Its output is `None` when it was closed for time.
    ///
    /// Every phase change happens while `connection` is polled (socket, service and answer
    /// body all run inside it), so the deadline is looked at right after each poll: no
    /// wake-ups of its own. The timer is only moved earlier; when it fires before the
    /// phase's own deadline it is moved on then, so a busy keep-alive connection touches
    /// the timer about once per timeout period, not per call.
    ///
    /// A future of its own rather than an `async fn`: an async fn keeps its argument and
    /// the pinned local it is moved into, twice the connection's size, and a connection
    /// may be held open a long time (a backgroundPoll call waiting for a pushed message,
    /// GATEWAY.md 7, 9).
    pub struct Bounded<F> {
        #[pin]
        connection: F,
        #[pin]
        timer: Sleep,
        armed: Instant,
        phase: Arc<Phase>,
        limits: ConnLimits,
    }
}

/// `connection` within the bounds of `limits`, as [`Phase`] says where it is.
pub fn bounded<F: Future>(connection: F, phase: Arc<Phase>, limits: ConnLimits) -> Bounded<F> {
    let armed = phase
        .deadline(&limits)
        .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
    Bounded {
        connection,
        timer: tokio::time::sleep_until(armed),
        armed,
        phase,
        limits,
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.connection.poll(cx) {
            return Poll::Ready(Some(out));
        }
        loop {
            // A call in progress: its bounds are the handler's. A timer still armed may
            // fire meanwhile; that only brings the next look.
            let Some(deadline) = this.phase.deadline(this.limits) else {
                return Poll::Pending;
            };
            if deadline < *this.armed {
                this.timer.as_mut().reset(deadline);
                *this.armed = deadline;
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired at `armed`, so the time is past it.
            if deadline <= *this.armed {
                return Poll::Ready(None);
            }
            this.timer.as_mut().reset(deadline);
            *this.armed = deadline;
        }
    }
}

/// A socket that tells its [`Phase`] when bytes arrive.
pub struct Watched<T> {
    inner: T,
    phase: Arc<Phase>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, phase: Arc<Phase>) -> Self {
        Self { inner, phase }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An answer body that marks its connection idle once hyper is done with it.
pub struct Tracked<B> {
    inner: B,
    phase: Arc<Phase>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, phase: Arc<Phase>) -> Self {
        Self { inner, phase }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.phase.idle();
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change of phase at so many seconds after connecting.
    type Step = (u64, fn(&Phase));

    const LIMITS: ConnLimits = ConnLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };

    /// How long a connection that never ends by itself lives, with `steps` applied to its
    /// phase at the given offsets (paused clock: no real time passes).
    async fn lifetime(steps: &[Step]) -> Duration {
        let phase = Phase::new();
        let started = Instant::now();
        let connection = async {
            for (at, step) in steps {
                tokio::time::sleep_until(started + Duration::from_secs(*at)).await;
                step(&phase);
            }
            std::future::pending::<()>().await;
        };
        // A bound that never comes fails here instead of hanging the test.
        let ended = tokio::time::timeout(
            Duration::from_secs(3600),
            bounded(connection, phase.clone(), LIMITS),
        );
        assert!(ended.await.expect("closed within an hour").is_none());
        started.elapsed()
    }

    /// A held connection's task is about the size of its connection, not twice it (as an
    /// `async fn` taking it would be): 10,000 held calls in under 256 MB (GATEWAY.md 7).
    #[tokio::test]
    async fn bounding_a_connection_keeps_it_once() {
        let connection = async {
            let buffer = [1u8; 4096];
            tokio::task::yield_now().await;
            buffer.iter().map(|&b| usize::from(b)).sum::<usize>()
        };
        let own = std::mem::size_of_val(&connection);
        let mut bounded = std::pin::pin!(bounded(connection, Phase::new(), LIMITS));
        let size = std::mem::size_of_val(&*bounded);
        assert!(
            size < own + 512,
            "{size} bytes to bound a {own}-byte connection"
        );
        assert_eq!(bounded.as_mut().await, Some(4096));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_due_within_the_header_timeout_of_connecting() {
        assert_eq!(lifetime(&[]).await, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_progress_is_never_cut_and_idleness_after_it_is() {
        let steps: &[Step] = &[(1, Phase::busy), (500, Phase::answered), (500, Phase::idle)];
        assert_eq!(lifetime(steps).await, Duration::from_secs(560));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_heads_time_counts_from_its_first_byte() {
        let steps: &[Step] = &[
            (1, Phase::busy),
            (1, Phase::answered),
            (1, Phase::idle),
            (55, Phase::bytes_read),
        ];
        assert_eq!(lifetime(steps).await, Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_the_client_never_takes_closes_after_the_idle_timeout() {
        let steps: &[Step] = &[(1, Phase::busy), (2, Phase::answered)];
        assert_eq!(lifetime(steps).await, Duration::from_secs(62));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_call_in_progress_do_not_start_a_head() {
        let steps: &[Step] = &[
            (1, Phase::busy),
            (30, Phase::bytes_read),
            (40, Phase::answered),
            (40, Phase::idle),
        ];
        assert_eq!(lifetime(steps).await, Duration::from_secs(100));
    }
}
