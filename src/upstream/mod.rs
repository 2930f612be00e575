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

/// What sends forwards: HTTP in the gateway, pretend replies in `pollgate test`.
pub trait UpstreamClient: Send + Sync + 'static {
    /// Sends the forward, retries included, and always comes back with a reply.
    fn send(&self, outgoing: Outgoing) -> SendFuture<'_>;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for n in 0..8 {
            let full = BACKOFF_BASE.saturating_mul(1 << n).min(BACKOFF_MAX);
            let b = backoff(n);
            assert!(b >= full / 2 && b <= full, "retry {n}: {b:?}");
        }
        assert_eq!(backoff_ceiling(0), Duration::ZERO);
        assert_eq!(backoff_ceiling(3), Duration::from_millis(100 + 200 + 400));
    }
}
