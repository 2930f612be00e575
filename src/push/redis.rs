//! The Redis mailbox: every replica pushes into and delivers from the same Redis.
//!
//! # Key layout
//!
//! One key per till, `{prefix:push:T}:q` (T: the till's [`Till::tag`]), so every script
//! touches one slot (ready for Redis Cluster): a list of JSON records
//! `{"id", "q" (queued ms), "x" (expires ms), "b" (the body's text)}`, oldest first. The
//! key expires with its newest message, so a till that never calls again leaves nothing.
//!
//! # The wake-up
//!
//! A push publishes the till's tag on `prefix:push:wake` in the same script. Each replica
//! subscribes to it (one connection of its own) and wakes the calls it holds for that
//! till. Pub/sub reaches every replica at once (on a Redis Cluster too), costs a held call
//! nothing, and a replica that held nothing for the till ignores the message. A replica
//! whose subscription broke resubscribes and wakes every call it holds, so they look again
//! for what they may have missed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Every, Message, MessageId, Pending, PushError, PushMailbox, Swept, Till, Wakers};
use crate::config::RedisServer;
use crate::redis_connection::RedisConnection;

/// KEYS: the till's list. ARGV: record, ttl ms, wake channel, till tag.
const PUSH: &str = r"
redis.call('RPUSH', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// KEYS: the till's list. ARGV: now, limit. `[expired, record, ...]`: expired records are
/// removed on the way; at most `limit` records.
const PENDING: &str = r"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {0}
for _, rec in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local m = cjson.decode(rec)
  if tonumber(m.x) <= now then
    redis.call('LREM', KEYS[1], 1, rec)
    out[1] = out[1] + 1
  elseif #out <= limit then
    out[#out + 1] = rec
  end
end
return out
";

/// KEYS: the till's list. ARGV: id. 1 when removed.
const REMOVE: &str = r"
for _, rec in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if cjson.decode(rec).id == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, rec)
    return 1
  end
end
return 0
";

/// How long a broken wake-up subscription waits before trying again, at most.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(30);

/// A record as stored.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    id: String,
    q: u64,
    x: u64,
    b: Cow<'a, str>,
    #[serde(default)]
    s: Cow<'a, str>,
    #[serde(default)]
    br: Cow<'a, str>,
    #[serde(default)]
    w: Cow<'a, str>,
}

/// The Redis mailbox; clones share one connection and one subscription.
#[derive(Clone)]
pub struct RedisMailbox {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConnection,
    prefix: String,
    timeout: Duration,
    wakers: Wakers,
    push: Script,
    pending: Script,
    remove: Script,
    /// The subscription's task; it ends with the mailbox.
    listener: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisMailbox {
    /// The mailbox on `server` (commands and the wake-up subscription); keys start with
    /// `{prefix:push:`. Every command is bounded by `timeout`. Needs no Redis yet: the
    /// connection reaches it in the background (GATEWAY.md 11).
    pub(crate) async fn connect(
        server: &RedisServer,
        prefix: &str,
        timeout: Duration,
        wakers: Wakers,
    ) -> Result<Self, PushError> {
        let conn = RedisConnection::open(server, "the push mailbox", timeout)
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        let channel = wake_channel(prefix);
        // Without the subscription (a Redis user without pub/sub rights, say), pushes still
        // arrive, at the held call's next look: when its hold ends.
        let first = match crate::redis_connection::subscribe(server, timeout, &channel).await {
            Ok(subscription) => Some(subscription),
            Err(e) => {
                tracing::error!("push wake-up subscription to {channel} failed ({e}); a message pushed through another replica reaches a held call only when its hold ends; retrying");
                None
            }
        };
        let listener = tokio::spawn(listen(
            first,
            server.clone(),
            channel,
            timeout,
            wakers.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                prefix: prefix.to_owned(),
                timeout,
                wakers,
                push: Script::new(PUSH),
                pending: Script::new(PENDING),
                remove: Script::new(REMOVE),
                listener: listener.abort_handle(),
            }),
        })
    }

    fn key(&self, till: &Till) -> String {
        format!("{{{}:push:{}}}:q", self.inner.prefix, till.tag())
    }

    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, PushError> {
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(PushError::Timeout(timeout)),
            Ok(Err(e)) => Err(PushError::Unavailable(self.inner.conn.explain(&e))),
            Err(_) => Err(PushError::Timeout(timeout)),
        }
    }

    /// Runs PENDING on `key`.
    async fn pending_at(
        &self,
        key: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<(u64, Vec<String>), PushError> {
        let mut conn = self.inner.conn.clone();
        let mut invocation = self.inner.pending.key(key);
        invocation.arg(now_ms).arg(limit);
        let mut out: Vec<::redis::Value> = self.bounded(invocation.invoke_async(&mut conn)).await?;
        if out.is_empty() {
            return Err(PushError::Corrupt("PENDING answered nothing".into()));
        }
        let expired: u64 = ::redis::from_redis_value(out.remove(0))
            .map_err(|e| PushError::Corrupt(e.to_string()))?;
        let records = out
            .into_iter()
            .map(::redis::from_redis_value::<String>)
            .collect::<Result<_, _>>()
            .map_err(|e| PushError::Corrupt(e.to_string()))?;
        Ok((expired, records))
    }

    /// Every till key of this prefix, deleted (tests clean up after themselves).
    #[cfg(test)]
    pub(crate) async fn remove_all(&self) -> Result<(), PushError> {
        let mut conn = self.inner.conn.clone();
        for key in self.keys().await? {
            let _: i64 = self
                .bounded(::redis::cmd("DEL").arg(key).query_async(&mut conn))
                .await?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn key_of(&self, till: &Till) -> String {
        self.key(till)
    }

    #[cfg(test)]
    pub(crate) fn conn(&self) -> RedisConnection {
        self.inner.conn.clone()
    }

    /// Every till key of this prefix (SCAN, so a large keyspace is walked in steps).
    async fn keys(&self) -> Result<Vec<String>, PushError> {
        let escaped: String = self
            .inner
            .prefix
            .chars()
            .flat_map(|c| {
                let glob = matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}');
                glob.then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect();
        let pattern = format!("\\{{{escaped}:push:*\\}}:q");
        let conn = &self.inner.conn;
        let mut keys = Vec::new();
        let nodes = self.bounded(conn.key_nodes()).await?;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, found): (u64, Vec<String>) =
                    self.bounded(conn.query_on(&node, &scan)).await?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

fn wake_channel(prefix: &str) -> String {
    format!("{prefix}:push:wake")
}

fn decode(record: &str) -> Result<Message, PushError> {
    decode_with_till(record).map(|(_, message)| message)
}

fn decode_with_till(record: &str) -> Result<(Till, Message), PushError> {
    let r: Record<'_> =
        serde_json::from_str(record).map_err(|e| PushError::Corrupt(e.to_string()))?;
    let id = MessageId::from_hex(&r.id)
        .ok_or_else(|| PushError::Corrupt(format!("message id `{}`", r.id)))?;
    let till = Till::new(&r.s, &r.br, &r.w);
    let message = Message {
        id,
        body: Bytes::from(r.b.into_owned()),
        queued_ms: r.q,
        expires_ms: r.x,
    };
    Ok((till, message))
}

impl PushMailbox for RedisMailbox {
    async fn push(
        &self,
        till: &Till,
        body: Bytes,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Message, PushError> {
        let text = std::str::from_utf8(&body)
            .map_err(|_| PushError::Corrupt("a pushed body must be UTF-8 JSON".into()))?;
        let id = MessageId::random();
        let record = serde_json::to_string(&Record {
            id: id.to_string(),
            q: now_ms,
            x: expires_ms,
            b: text.into(),
            s: till.subscription.as_str().into(),
            br: till.branch.as_str().into(),
            w: till.workplace.as_str().into(),
        })
        .map_err(|e| PushError::Corrupt(e.to_string()))?;
        let mut conn = self.inner.conn.clone();
        let mut invocation = self.inner.push.key(self.key(till));
        invocation
            .arg(record)
            .arg(expires_ms.saturating_sub(now_ms).max(1))
            .arg(wake_channel(&self.inner.prefix))
            .arg(till.tag());
        let _: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(Message {
            id,
            body,
            queued_ms: now_ms,
            expires_ms,
        })
    }

    async fn pending(&self, till: &Till, now_ms: u64, limit: usize) -> Result<Pending, PushError> {
        let (expired, records) = self.pending_at(&self.key(till), now_ms, limit).await?;
        let messages = records
            .iter()
            .map(|r| decode(r))
            .collect::<Result<_, _>>()?;
        Ok(Pending { messages, expired })
    }

    async fn remove(&self, till: &Till, id: MessageId) -> Result<bool, PushError> {
        let mut conn = self.inner.conn.clone();
        let mut invocation = self.inner.remove.key(self.key(till));
        invocation.arg(id.to_string());
        let removed: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(removed == 1)
    }

    async fn sweep(&self, now_ms: u64) -> Result<Swept, PushError> {
        let mut swept = Swept::default();
        for key in self.keys().await? {
            let (expired, left) = self.pending_at(&key, now_ms, usize::MAX >> 1).await?;
            swept.expired += expired;
            swept.pending += left.len() as u64;
        }
        Ok(swept)
    }

    async fn every(&self, now_ms: u64, limit: usize) -> Result<Every, PushError> {
        let mut every = Every::default();
        for key in self.keys().await? {
            let (expired, records) = self.pending_at(&key, now_ms, usize::MAX >> 1).await?;
            every.expired += expired;
            for record in &records {
                every.messages.push(decode_with_till(record)?);
            }
        }
        every.newest_first(limit);
        Ok(every)
    }

    fn wakers(&self) -> &Wakers {
        &self.inner.wakers
    }
}

/// Wakes the calls held for each till tag published on `channel`; resubscribes (with a
/// growing pause) when the subscription breaks.
async fn listen(
    first: Option<::redis::aio::PubSub>,
    server: RedisServer,
    channel: String,
    timeout: Duration,
    wakers: Wakers,
) {
    let mut pause = Duration::from_millis(50);
    let mut subscription = match first {
        Some(subscription) => subscription,
        None => resubscribe(&server, &channel, timeout, &mut pause).await,
    };
    loop {
        {
            let mut messages = subscription.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(tag) = std::str::from_utf8(message.get_payload_bytes()) {
                    wakers.wake(tag);
                }
            }
        }
        tracing::warn!("push wake-up subscription lost; subscribing again");
        subscription = resubscribe(&server, &channel, timeout, &mut pause).await;
        // What was pushed while it was down woke nobody: every held call looks again.
        wakers.wake_all();
    }
}

/// A new subscription, after a pause that grows while attempts fail.
async fn resubscribe(
    server: &RedisServer,
    channel: &str,
    timeout: Duration,
    pause: &mut Duration,
) -> ::redis::aio::PubSub {
    loop {
        tokio::time::sleep(*pause).await;
        match crate::redis_connection::subscribe(server, timeout, channel).await {
            Ok(s) => {
                *pause = Duration::from_millis(50);
                return s;
            }
            Err(e) => {
                tracing::warn!("push wake-up subscription: {e}");
                *pause = (*pause * 2).min(RESUBSCRIBE_MAX);
            }
        }
    }
}
