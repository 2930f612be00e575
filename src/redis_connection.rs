//! How pollgate talks to Redis (GATEWAY.md 11), for the conversation store, the outbox and
//! the push mailboxes alike: one [`RedisConnection`] type, made from `state:`, and the push
//! mailbox's wake-up subscription ([`subscribe`]).
//!
//! [`RedisConnection::open`] needs no Redis: it builds the client from URLs and certificates
//! already checked with the config, and [`watch`] reaches Redis in the background, again and
//! again with a growing pause while it is away. So pollgate starts while Redis is down
//! (`/readyz` says why it is not ready, tills get the store-failure answer), and carries on
//! as soon as Redis is back, with no restart. Every failure is told once, naming the URL
//! (its password shown as `***`, the user name kept: it says which ACL user was refused).
//!
//! One Redis (`redis://`, `rediss://`) is reached through a [`ConnectionManager`], which
//! reconnects after a broken connection; a Redis Cluster through the redis crate's cluster
//! client, which follows MOVED and ASK redirects and learns the new primary after a
//! failover; a script on one slot (every call's) goes the short way instead, straight to
//! a connection to the primary serving its slot ([`direct`]). All are multiplexed: clones
//! share the connection, and the commands of many calls travel together.

mod direct;
mod nodes;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value};

use crate::config::RedisServer;
pub(crate) use nodes::Node;

/// Why no client could be made of the config (URLs and certificates are checked when it is
/// loaded, so this is rare).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectError(String);

/// A connection to the configured Redis or Redis Cluster; clones share it.
#[derive(Clone)]
pub(crate) struct RedisConnection {
    inner: Arc<Shared>,
}

struct Shared {
    /// The URLs, passwords hidden, for every message.
    shown: String,
    /// What this connection is for (`the conversation store`), for the log.
    purpose: &'static str,
    timeout: Duration,
    link: Link,
    /// Why Redis did not answer last time [`watch`] looked; `None` while it answers. A std
    /// mutex: held only to read or replace the text, never across an `.await`.
    trouble: Mutex<Option<String>>,
    /// True once [`watch`] first looked (answered or not): a cluster's command sent before
    /// then waits for that look instead of failing on a connection not made yet.
    looked: tokio::sync::watch::Sender<bool>,
}

enum Link {
    /// Replaced by [`watch`] when the manager is stuck on a failure it does not retry
    /// (a refused AUTH), so fixing Redis's side is enough.
    Single {
        manager: ArcSwap<ConnectionManager>,
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    /// Empty until the cluster first answers; [`watch`] fills it, and the slot table of
    /// the short way to each primary ([`direct`]).
    Cluster {
        connection: ArcSwapOption<ClusterConnection>,
        client: ClusterClient,
        /// Boxed: far larger than the other variant's fields.
        direct: Box<direct::Direct>,
    },
}

impl Link {
    fn single(
        server: &RedisServer,
        certificates: TlsCertificates,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let url = server.urls.first().map_or("", String::as_str);
        let client = match &server.ca {
            Some(_) => redis::Client::build_with_tls(url, certificates)?,
            None => redis::Client::open(url)?,
        };
        let config = manager_config(timeout);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Link::Single {
            manager: ArcSwap::from_pointee(manager),
            client,
            config,
        })
    }

    fn cluster(
        server: &RedisServer,
        certificates: TlsCertificates,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let mut builder = ClusterClientBuilder::new(server.urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // A redirect or a reconnect within a call; beyond that the call fails and the
            // next one tries afresh.
            .retries(2);
        // The short way's connections, like a single Redis's.
        let config = manager_config(timeout);
        let url = server.urls.first().map_or("", String::as_str);
        let ca = server.ca.is_some().then(|| certificates.clone());
        let direct = Box::new(direct::Direct::new(url, ca, config)?);
        if server.ca.is_some() {
            builder = builder.certs(certificates);
        }
        Ok(Link::Cluster {
            connection: ArcSwapOption::empty(),
            client: builder.build()?,
            direct,
        })
    }
}

impl RedisConnection {
    /// A connection to `server` for `purpose`, every command bounded by `timeout`; returns
    /// at once, with a task reaching Redis in the background (so inside a Tokio runtime).
    pub(crate) fn open(
        server: &RedisServer,
        purpose: &'static str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let certificates = TlsCertificates {
            client_tls: None,
            root_cert: server.ca.as_ref().map(|ca| ca.pem.clone()),
        };
        let link = if server.cluster {
            Link::cluster(server, certificates, timeout)
        } else {
            Link::single(server, certificates, timeout)
        }
        .map_err(|e| ConnectError(e.to_string()))?;
        let connection = Self {
            inner: Arc::new(Shared {
                shown: server.shown(),
                purpose,
                timeout,
                link,
                trouble: Mutex::new(Some("not connected yet".into())),
                looked: tokio::sync::watch::Sender::new(false),
            }),
        };
        tokio::spawn(watch::watch(Arc::downgrade(&connection.inner)));
        Ok(connection)
    }

    /// `e` as one sentence for a message or `/readyz`: what failed, where.
    pub(crate) fn explain(&self, e: &RedisError) -> String {
        format!("Redis at {}: {e}", self.inner.shown)
    }

    /// Whether this is a Redis Cluster's connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.inner.link, Link::Cluster { .. })
    }

    /// The bound on each command.
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The cluster's connection (`None` for a single Redis), or why there is none yet. Before
    /// the first look at the cluster (just after start), it waits for that look, at most the
    /// command timeout: a till calling in the first milliseconds is served, not failed.
    async fn cluster(&self) -> RedisResult<Option<ClusterConnection>> {
        let Link::Cluster { connection, .. } = &self.inner.link else {
            return Ok(None);
        };
        if let Some(connection) = connection.load().as_deref() {
            return Ok(Some(connection.clone()));
        }
        let mut looked = self.inner.looked.subscribe();
        // Timed out or the watch gone: the connection (or its absence) says the rest.
        let _ = tokio::time::timeout(self.inner.timeout, looked.wait_for(|done| *done)).await;
        match connection.load().as_deref() {
            Some(connection) => Ok(Some(connection.clone())),
            None => Err(self.not_connected()),
        }
    }

    /// The error of a command sent before the cluster ever answered: the last reason, as
    /// [`watch`] told it (an I/O error, so the caller sees Redis as unreachable).
    fn not_connected(&self) -> RedisError {
        let why = self
            .inner
            .trouble
            .lock()
            .map(|t| t.clone().unwrap_or_default())
            .unwrap_or_default();
        RedisError::from(std::io::Error::other(why))
    }
}

/// A subscription to `channel` on a connection of its own (pub/sub takes a connection
/// over), each attempt within `timeout`: to the one Redis, or to the first node of a
/// cluster that takes it (a cluster hands every `PUBLISH` to all its nodes). Why not, as
/// one sentence naming the URLs (passwords hidden).
pub(crate) async fn subscribe(
    server: &RedisServer,
    timeout: Duration,
    channel: &str,
) -> Result<redis::aio::PubSub, String> {
    let mut why = Vec::new();
    for url in &server.urls {
        match subscribe_at(url, server, timeout, channel).await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => why.push(e),
        }
    }
    Err(format!("Redis at {}: {}", server.shown(), why.join("; ")))
}

async fn subscribe_at(
    url: &str,
    server: &RedisServer,
    timeout: Duration,
    channel: &str,
) -> Result<redis::aio::PubSub, String> {
    let client = match &server.ca {
        Some(ca) => redis::Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.pem.clone()),
            },
        ),
        None => redis::Client::open(url),
    }
    .map_err(|e| e.to_string())?;
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, RedisError>(pubsub)
    };
    match tokio::time::timeout(timeout, subscribing).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Each command goes to the connection of the moment: the manager [`watch`] may have
/// replaced, or the cluster's once it answered (a script on one slot straight to the
/// primary serving it, when the slot table knows it: [`direct`]).
impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &self.inner.link {
            Link::Single { manager, .. } => {
                let mut manager = ConnectionManager::clone(&manager.load());
                Box::pin(async move { manager.req_packed_command(cmd).await })
            }
            Link::Cluster { .. } => Box::pin(async move {
                if let Link::Cluster { direct, .. } = &self.inner.link {
                    if let Some(conn) = direct.connection_for(cmd) {
                        if let Some(answer) = direct.send(conn, cmd).await {
                            return answer;
                        }
                    }
                }
                let mut connection = self.cluster().await?.ok_or_else(|| self.not_connected())?;
                connection.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &self.inner.link {
            Link::Single { manager, .. } => {
                let mut manager = ConnectionManager::clone(&manager.load());
                Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
            }
            Link::Cluster { .. } => Box::pin(async move {
                let mut connection = self.cluster().await?.ok_or_else(|| self.not_connected())?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner.link {
            Link::Single { manager, .. } => manager.load().get_db(),
            Link::Cluster { .. } => 0,
        }
    }
}

/// The Redis the unit tests use: `POLLGATE_TEST_REDIS` (else the local one), and the
/// cluster `.ci/run` starts, named by `POLLGATE_TEST_CLUSTER` (`host:port,...`).
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use super::RedisConnection;
    use crate::config::RedisServer;

    pub(crate) fn single() -> RedisServer {
        let url = std::env::var("POLLGATE_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        RedisServer {
            urls: vec![url],
            cluster: false,
            ca: None,
        }
    }

    pub(crate) fn cluster() -> Option<RedisServer> {
        let nodes = std::env::var("POLLGATE_TEST_CLUSTER").ok()?;
        Some(RedisServer {
            urls: nodes.split(',').map(|n| format!("redis://{n}")).collect(),
            cluster: true,
            ca: None,
        })
    }

    /// A connection to `server` once it answered a PING (within a few seconds), or why not.
    pub(crate) async fn answering(server: &RedisServer) -> Result<RedisConnection, String> {
        let conn = RedisConnection::open(server, "the tests", Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = conn.clone();
            match redis::cmd("PING").query_async::<()>(&mut c).await {
                Ok(()) => return Ok(conn),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(conn.explain(&e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// [`answering`] for the tests' Redis, or `None` after saying the test is skipped (a
    /// failure under CI, which provides one).
    pub(crate) async fn or_skip(
        server: Option<RedisServer>,
        what: &str,
    ) -> Option<RedisConnection> {
        let why = match server {
            None => format!("{what}: not configured (POLLGATE_TEST_CLUSTER)"),
            Some(server) => match answering(&server).await {
                Ok(conn) => return Some(conn),
                Err(e) => format!("{what}: {e}"),
            },
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no {why} (.ci/run provides it)"
        );
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: no {why}");
        None
    }
}

/// A connection's settings, for a single Redis and for each of a cluster's primaries: one
/// quick retry absorbs a blip; beyond that a command fails and the next one triggers a
/// fresh reconnect, rather than queueing calls behind a long backoff.
fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{testing, RedisConnection};

    /// A till calling the moment pollgate starts: the command waits for the cluster's first
    /// connection instead of failing with "no connection yet".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_command_sent_right_after_open_waits_for_the_connection() {
        if testing::or_skip(testing::cluster(), "Redis Cluster")
            .await
            .is_none()
        {
            return;
        }
        let server = testing::cluster().expect("configured");
        for _ in 0..5 {
            let conn = RedisConnection::open(&server, "the tests", Duration::from_secs(2))
                .expect("a client");
            let mut c = conn.clone();
            let answer = redis::cmd("PING").query_async::<String>(&mut c).await;
            assert_eq!(answer.expect("answered"), "PONG");
        }
    }

    /// Once the slot table is known, a script goes straight to its slot's primary, and
    /// finds there what the cluster client wrote to that key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_script_on_one_slot_takes_the_short_way_to_its_primary() {
        let Some(conn) = testing::or_skip(testing::cluster(), "Redis Cluster").await else {
            return;
        };
        let super::Link::Cluster { direct, .. } = &conn.inner.link else {
            panic!("a cluster's connection");
        };
        let key = format!("pollgate-test-direct-{:016x}", fastrand::u64(..));
        let mut script = redis::cmd("EVAL");
        script
            .arg("return redis.call('GET', KEYS[1])")
            .arg(1)
            .arg(&key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while direct.connection_for(&script).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no slot table");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut c = conn.clone();
        redis::cmd("SET")
            .arg(&key)
            .arg("written")
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut c)
            .await
            .expect("SET");
        let before = direct.short.load(std::sync::atomic::Ordering::Relaxed);
        let read: String = script.query_async(&mut c).await.expect("EVAL");
        assert_eq!(read, "written");
        let after = direct.short.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(after - before, 1);
    }
}
