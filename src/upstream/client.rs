//! The HTTP upstream client: one reqwest pool per upstream, a semaphore that caps its
//! connections, a timeout per attempt, retries with backoff, and a cap on the reply size.

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use tokio::sync::Semaphore;

use super::{backoff, AttemptFuture, Attempted, Outgoing, SendFuture, UpstreamClient};
use crate::config::millis;
use crate::config::Upstream;
use crate::conversation::Reply;
use crate::signature::{SIGNATURE_HEADER, SUBSCRIPTION_HEADER};
use crate::telemetry::{Metrics, UpstreamOutcome};

/// HTTP clients for every configured upstream.
pub struct HttpUpstreams {
    upstreams: HashMap<String, Pool>,
    metrics: Arc<Metrics>,
}

struct Pool {
    config: Upstream,
    client: reqwest::Client,
    /// One permit per connection the pool may use: reqwest alone would open a new
    /// connection for every concurrent request.
    permits: Arc<Semaphore>,
}

/// One attempt's result before it becomes a [`Reply`].
enum Attempt {
    Answer {
        status: u16,
        body: serde_json::Value,
    },
    Failed {
        error: String,
        retry: bool,
    },
}

/// Installs rustls' ring provider once per process; every reqwest client needs one.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl HttpUpstreams {
    pub fn new(
        upstreams: &std::collections::BTreeMap<String, Upstream>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        install_crypto_provider();
        let mut pools = HashMap::new();
        for (name, config) in upstreams {
            let client = reqwest::Client::builder()
                .connect_timeout(config.timeout)
                .pool_max_idle_per_host(config.max_connections)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .no_proxy()
                // A redirect would re-send the signed body, perhaps to another host.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("pollgate/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("upstreams.{name}: cannot build HTTP client: {e}"))?;
            pools.insert(
                name.clone(),
                Pool {
                    permits: Arc::new(Semaphore::new(config.max_connections)),
                    config: config.clone(),
                    client,
                },
            );
        }
        Ok(Self {
            upstreams: pools,
            metrics,
        })
    }

    async fn send_with_retries(&self, out: Outgoing) -> Reply {
        let started = Instant::now();
        let Some(pool) = self.upstreams.get(&out.upstream) else {
            let error = format!("unknown upstream `{}`", out.upstream);
            return Reply::failed(error, millis(started.elapsed()));
        };
        let mut retry = 0;
        loop {
            let attempt_started = Instant::now();
            let attempt = pool.attempt(&out).await;
            let elapsed = attempt_started.elapsed();
            let retryable = match &attempt {
                Attempt::Answer { status, .. } => *status >= 500,
                Attempt::Failed { retry, .. } => *retry,
            };
            if !retryable || retry >= pool.config.retries {
                return self.reply(&out.upstream, attempt, started, elapsed);
            }
            if let Attempt::Failed { error, .. } = &attempt {
                tracing::debug!(upstream = %out.upstream, %error, retry, "upstream attempt failed; retrying");
            }
            self.metrics
                .upstream(&out.upstream, UpstreamOutcome::Retry, Some(elapsed));
            tokio::time::sleep(backoff(retry)).await;
            retry += 1;
        }
    }
}

impl HttpUpstreams {
    fn reply(
        &self,
        upstream: &str,
        attempt: Attempt,
        started: Instant,
        elapsed: Duration,
    ) -> Reply {
        match attempt {
            Attempt::Answer { status, body } => {
                let reply = Reply::answered(status, body, millis(started.elapsed()));
                let outcome = if reply.ok {
                    UpstreamOutcome::Success
                } else {
                    UpstreamOutcome::Status
                };
                self.metrics.upstream(upstream, outcome, Some(elapsed));
                reply
            }
            Attempt::Failed { error, .. } => {
                self.metrics
                    .upstream(upstream, UpstreamOutcome::Failure, Some(elapsed));
                Reply::failed(error, millis(started.elapsed()))
            }
        }
    }
}

impl UpstreamClient for HttpUpstreams {
    fn send(&self, outgoing: Outgoing) -> SendFuture<'_> {
        Box::pin(self.send_with_retries(outgoing))
    }

    fn attempt(&self, outgoing: Outgoing) -> AttemptFuture<'_> {
        Box::pin(self.attempt_once(outgoing))
    }
}

impl HttpUpstreams {
    /// One request, bounded by the upstream's timeout from the wait for a connection to
    /// the end of the reply (which is read, up to `max_reply_bytes`, and dropped).
    async fn attempt_once(&self, out: Outgoing) -> Attempted {
        let Some(pool) = self.upstreams.get(&out.upstream) else {
            return Attempted::Failed {
                error: format!("unknown upstream `{}`", out.upstream),
            };
        };
        let started = Instant::now();
        let timeout = pool.config.timeout;
        let attempted = match tokio::time::timeout(timeout, pool.deliver(&out)).await {
            Ok(attempted) => attempted,
            Err(_) => Attempted::Failed {
                error: format!("no answer within {timeout:?}"),
            },
        };
        let outcome = match &attempted {
            Attempted::Answered { status, .. } if (200..300).contains(status) => {
                UpstreamOutcome::Success
            }
            Attempted::Answered { .. } => UpstreamOutcome::Status,
            Attempted::Failed { .. } => UpstreamOutcome::Failure,
        };
        self.metrics
            .upstream(&out.upstream, outcome, Some(started.elapsed()));
        attempted
    }
}

impl Pool {
    async fn attempt(&self, out: &Outgoing) -> Attempt {
        // Closed only when the pool is dropped, which cannot happen while `self` lives.
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Failed {
                error: "upstream pool closed".into(),
                retry: false,
            };
        };
        match tokio::time::timeout(self.config.timeout, self.exchange(out)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Failed {
                error: format!("no answer within {:?}", self.config.timeout),
                retry: true,
            },
        }
    }

    /// The forward's request: `POST {url}/{event}` with the signed body and the headers
    /// of GATEWAY.md 5, the same for a forward and a durable delivery.
    fn request(&self, out: &Outgoing) -> reqwest::RequestBuilder {
        let mut url = self.config.url.clone();
        url.path_segments_mut()
            .map(|mut p| {
                p.push(&out.event);
            })
            .ok();
        self.client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(SUBSCRIPTION_HEADER, &out.subscription)
            .header(SIGNATURE_HEADER, &out.signature)
            .header("idempotency-key", &out.idempotency_key)
            .body(out.body.clone())
    }

    /// One delivery attempt: a connection permit, the request, the status and
    /// `Retry-After`; the reply body is read (so the connection can be reused) and dropped.
    async fn deliver(&self, out: &Outgoing) -> Attempted {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempted::Failed {
                error: "upstream pool closed".into(),
            };
        };
        let mut response = match self.request(out).send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempted::Failed {
                    error: send_error(&e),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > self.config.max_reply_bytes {
                break;
            }
        }
        Attempted::Answered {
            status,
            retry_after,
        }
    }

    async fn exchange(&self, out: &Outgoing) -> Attempt {
        let request = self.request(out);
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed {
                    error: send_error(&e),
                    retry: true,
                }
            }
        };
        let status = response.status().as_u16();
        let limit = self.config.max_reply_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Attempt::Failed {
                error: format!("reply larger than max_reply_bytes ({limit})"),
                retry: false,
            };
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Attempt::Failed {
                            error: format!("reply larger than max_reply_bytes ({limit})"),
                            retry: false,
                        };
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Attempt::Failed {
                        error: format!("reply broken off: {}", root_cause(&e)),
                        retry: true,
                    }
                }
            }
        }
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Attempt::Answer { status, body }
    }
}

/// Why a request got no answer, as a delivery's or forward's error says it.
fn send_error(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}: {}", root_cause(e))
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
