//! How pollgate opens a Redis connection, for the conversation store, the outbox and the
//! push mailbox alike, and the push mailbox's wake-up subscription.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Why no connection was made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    BadUrl(String),
    Connecting(String),
    TimedOut(Duration),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(e) => write!(f, "bad Redis URL: {e}"),
            Self::Connecting(e) => write!(f, "connecting: {e}"),
            Self::TimedOut(timeout) => write!(f, "no connection within {timeout:?}"),
        }
    }
}

/// A connection manager for `url`, made within `timeout`; every command it sends is bounded
/// by `timeout` too. One quick retry absorbs a blip; beyond that a command fails and the next
/// one triggers a fresh reconnect, rather than queueing calls behind a long backoff.
pub(crate) async fn connect(
    url: &str,
    timeout: Duration,
) -> Result<ConnectionManager, ConnectError> {
    let client = redis::Client::open(url).map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| ConnectError::TimedOut(timeout))?
        .map_err(|e| ConnectError::Connecting(e.to_string()))
}

/// A subscription to `channel` on its own connection (pub/sub takes a connection over),
/// made within `timeout`.
pub(crate) async fn subscribe(
    url: &str,
    timeout: Duration,
    channel: &str,
) -> Result<redis::aio::PubSub, ConnectError> {
    let client = redis::Client::open(url).map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    tokio::time::timeout(timeout, subscribing)
        .await
        .map_err(|_| ConnectError::TimedOut(timeout))?
        .map_err(|e| ConnectError::Connecting(e.to_string()))
}
