//! Forwarding to back ends (GATEWAY.md 5): the HTTP client with its pools, timeouts and
//! retries ([`client`]), and the background forwards that outlive the call that started
//! them, sent once per conversation ([`forward`]).

mod client;
mod forward;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub use client::{install_crypto_provider, HttpUpstreams};
pub use forward::Forwarder;

use crate::config::Upstream;
use crate::conversation::Reply;

/// One forward as it goes out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub upstream: String,
    pub event: String,
    pub body: Bytes,
    pub subscription: String,
    /// `X-Mplus-Signature` over `body` with the upstream's secret.
    pub signature: String,
    /// The conversation key.
    pub idempotency_key: String,
}

/// The boxed future of [`UpstreamClient::send`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// The boxed future of [`UpstreamClient::attempt`].
pub type AttemptFuture<'a> = Pin<Box<dyn Future<Output = Attempted> + Send + 'a>>;

/// One request's result, as a durable delivery needs it (GATEWAY.md 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// An HTTP answer, with its `Retry-After` if it had one.
    Answered {
        status: u16,
        retry_after: Option<String>,
    },
    /// No answer: cannot connect, timed out, broken off.
    Failed { error: String },
}

/// What sends forwards: HTTP in the gateway, pretend replies in `pollgate test`.
pub trait UpstreamClient: Send + Sync + 'static {
    /// Sends the forward, retries included, and always comes back with a reply.
    fn send(&self, outgoing: Outgoing) -> SendFuture<'_>;

    /// Sends it once, without retries (a durable delivery retries on its own schedule).
    /// By default: [`UpstreamClient::send`]'s reply, without `Retry-After`.
    fn attempt(&self, outgoing: Outgoing) -> AttemptFuture<'_> {
        Box::pin(async move {
            let reply = self.send(outgoing).await;
            match (reply.status, reply.error) {
                (0, error) => Attempted::Failed {
                    error: error.unwrap_or_else(|| "no answer".into()),
                },
                (status, _) => Attempted::Answered {
                    status,
                    retry_after: None,
                },
            }
        })
    }
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pause before retry `n` (0-based): exponential, capped, with jitter in [50 %, 100 %].
pub fn backoff(n: u32) -> Duration {
    let full = BACKOFF_BASE.saturating_mul(1 << n.min(16)).min(BACKOFF_MAX);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The longest all pauses of `retries` retries can add up to.
pub fn backoff_ceiling(retries: u32) -> Duration {
    (0..retries)
        .map(|n| BACKOFF_BASE.saturating_mul(1 << n.min(16)).min(BACKOFF_MAX))
        .sum()
}

/// The longest a forward to `upstream` can take, retries and backoff included.
pub fn budget(upstream: &Upstream) -> Duration {
    let attempts = upstream.retries + 1;
    upstream.timeout * attempts + backoff_ceiling(upstream.retries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_documented_figures_with_jitter() {
        // README: 100 ms, 200 ms, 400 ms, ... capped at 2 s, jittered to 50-100 %.
        let documented_ms = [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000];
        for (n, full_ms) in (0u32..).zip(documented_ms) {
            let full = Duration::from_millis(full_ms);
            for _ in 0..50 {
                let b = backoff(n);
                assert!(
                    b >= full / 2 && b <= full,
                    "retry {n}: {b:?} outside {full:?}"
                );
            }
        }
        assert!(
            backoff(40) <= Duration::from_secs(2),
            "a huge retry count stays capped"
        );
        assert_eq!(backoff_ceiling(0), Duration::ZERO);
        assert_eq!(backoff_ceiling(3), Duration::from_millis(100 + 200 + 400));
        assert_eq!(
            backoff_ceiling(7),
            Duration::from_millis(100 + 200 + 400 + 800 + 1600 + 2000 + 2000)
        );
    }
}
