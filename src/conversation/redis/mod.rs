//! Conversations in Redis, shared by every pollgate process pointed at the same server.
//!
//! # Key layout
//!
//! One hash per conversation at `{prefix}:conv:{key as 32 hex chars}`, with short field
//! names because Redis stores them once per conversation:
//!
//! | field       | value                                                              |
//! |-------------|--------------------------------------------------------------------|
//! | `ev`        | event name                                                         |
//! | `fs` / `ls` | first / last call, Unix milliseconds                               |
//! | `v`         | version, bumped by every saved commit                              |
//! | `n`         | attempts                                                           |
//! | `st`        | the rule's state (JSON bytes); absent while empty                  |
//! | `fa`        | final answer: `{status}:` then the body, byte for byte             |
//! | `fw:{name}` | a forward: `p:{lease_until_ms}` while pending, `d:{reply JSON}` done |
//!
//! Every write sets `PEXPIRE ttl` in the same script, so no key ever lives without a TTL
//! and Redis itself forgets idle conversations (no sweeper).
//!
//! Memory: about 270 bytes a conversation while every value fits Redis's compact
//! encoding (`hash-max-listpack-value`, 64 bytes by default); a longer state, answer or
//! reply turns the hash into a table, about 900 bytes with a 100-byte answer and reply.
//!
//! # Why Lua scripts
//!
//! Each method is a read-decide-write on one conversation ("create if missing, then count",
//! "write if the version still matches", "claim if free or the lease ran out"). A script
//! runs atomically on the server, so several pollgate processes racing on one conversation
//! need one round trip each and no `WATCH`/`MULTI` retry loops. Scripts are hashed once
//! ([`Script`]), loaded at connect so a broken script fails at startup, and re-loaded by
//! `EVALSHA`'s `NOSCRIPT` fallback after a Redis restart.
//!
//! `list` and `count` walk the keys with `SCAN`, bounded (see each); the admin summaries
//! script reads a page of keys at once, which is fine on the single server (or primary)
//! that [`ConnectionManager`] talks to (Redis Cluster is not supported).
//!
//! Every command is bounded by the configured timeout ([`StoreError::Timeout`]); Redis
//! errors become [`StoreError::Unavailable`]. A command that finds the connection broken
//! makes the [`ConnectionManager`] reconnect in the background, so while Redis is down
//! calls fail fast, and once it is back the next command (or the one after) works again.

mod scripts;

use scripts::{BEGIN, CLAIM, COMMIT, COMPLETE, RENEW, SUMMARIES};

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, RedisResult, Script, Value};
use bytes::Bytes;

use super::{
    Commit, ConversationKey, ConversationStore, FinalAnswer, ForwardState, Reply, Snapshot,
    StoreError, Summary, Update,
};
use crate::config::millis;

/// `SCAN ... COUNT` hint: slots Redis examines per call.
const SCAN_COUNT: usize = 1000;
/// `list` stops after this many conversations found (or `LIST_MAX_CALLS` SCAN calls).
const LIST_MAX_KEYS: usize = 4096;
const LIST_MAX_CALLS: usize = 64;
/// `count` walks at most this many SCAN calls (about 256k keys examined).
const COUNT_MAX_CALLS: usize = 256;

/// A Redis-backed store; clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// `{prefix}:conv:`, the start of every conversation key.
    key_prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    scripts: Scripts,
}

struct Scripts {
    begin: Script,
    commit: Script,
    claim: Script,
    renew: Script,
    complete: Script,
    summaries: Script,
}

impl std::fmt::Debug for RedisStore {
    // What this store is, not the connection manager's internals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.inner.key_prefix)
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` and loads the scripts, all within `timeout`; conversations live
    /// `ttl` after their last write. Later outages are survived: the connection is
    /// re-established on the next command.
    pub async fn connect(
        url: &str,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let client = ::redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        // One quick retry absorbs a blip; beyond that, fail the command and let the next
        // one trigger a fresh reconnect rather than queueing calls behind a long backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn =
            match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(StoreError::Unavailable(format!("connecting: {e}"))),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "no connection within {timeout:?}"
                    )))
                }
            };
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                key_prefix: format!("{prefix}:conv:"),
                // PEXPIRE 0 would delete the key at once.
                ttl_ms: millis(ttl).max(1),
                timeout,
                scripts: Scripts {
                    begin: Script::new(BEGIN),
                    commit: Script::new(COMMIT),
                    claim: Script::new(CLAIM),
                    renew: Script::new(RENEW),
                    complete: Script::new(COMPLETE),
                    summaries: Script::new(SUMMARIES),
                },
            }),
        };
        store.load_scripts().await?;
        Ok(store)
    }

    /// The TTL this store applies.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_ms)
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let s = &self.inner.scripts;
        for script in [
            &s.begin,
            &s.commit,
            &s.claim,
            &s.renew,
            &s.complete,
            &s.summaries,
        ] {
            let mut conn = self.inner.conn.clone();
            self.bounded(script.load_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Runs one Redis command under the timeout, mapping its errors.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(redis_error(&e, timeout)),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    pub(crate) fn key_name(&self, key: ConversationKey) -> String {
        format!("{}{key}", self.inner.key_prefix)
    }

    /// `SCAN` pattern for this prefix's conversations (glob characters escaped).
    fn pattern(&self) -> String {
        let mut out = String::with_capacity(self.inner.key_prefix.len() + 1);
        for c in self.inner.key_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('*');
        out
    }

    async fn scan(&self, cursor: u64, pattern: &str) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let mut conn = self.inner.conn.clone();
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Summaries for one SCAN page; keys that expired meanwhile are skipped.
    async fn summaries(&self, names: &[Vec<u8>], now_ms: u64) -> Result<Vec<Summary>, StoreError> {
        let keys: Vec<(ConversationKey, &Vec<u8>)> = names
            .iter()
            .filter_map(|name| {
                let hex = name.strip_prefix(self.inner.key_prefix.as_bytes())?;
                let key = ConversationKey::from_hex(std::str::from_utf8(hex).ok()?)?;
                Some((key, name))
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.inner.scripts.summaries.prepare_invoke();
        for (_, name) in &keys {
            invocation.key(name.as_slice());
        }
        let mut conn = self.inner.conn.clone();
        let rows = self
            .bounded(invocation.invoke_async::<Value>(&mut conn))
            .await?;
        let Value::Array(rows) = rows else {
            return Err(corrupt("summaries: not an array"));
        };
        let mut out = Vec::with_capacity(rows.len());
        for ((key, _), row) in keys.into_iter().zip(rows) {
            let row = strings(row)?;
            if let Some(summary) = summary(key, row, now_ms)? {
                out.push(summary);
            }
        }
        Ok(out)
    }
}

impl ConversationStore for RedisStore {
    async fn begin(
        &self,
        key: ConversationKey,
        event: &str,
        now_ms: u64,
    ) -> Result<Snapshot, StoreError> {
        let mut invocation = self.inner.scripts.begin.key(self.key_name(key));
        invocation.arg(event).arg(now_ms).arg(self.inner.ttl_ms);
        let mut conn = self.inner.conn.clone();
        let record = self.bounded(invocation.invoke_async(&mut conn)).await?;
        snapshot(record)?.ok_or_else(|| corrupt("begin returned nothing"))
    }

    async fn load(&self, key: ConversationKey) -> Result<Option<Snapshot>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(self.key_name(key));
        let mut conn = self.inner.conn.clone();
        let record = self.bounded(cmd.query_async(&mut conn)).await?;
        snapshot(record)
    }

    async fn commit(
        &self,
        key: ConversationKey,
        version: u64,
        update: Update,
        now_ms: u64,
    ) -> Result<Commit, StoreError> {
        let (state_op, state) = match update.state {
            None => ("k", Bytes::new()),
            Some(None) => ("c", Bytes::new()),
            Some(Some(state)) => ("s", state),
        };
        let (final_op, answer) = match &update.finished {
            None => ("k", Vec::new()),
            Some(answer) => ("s", encode_answer(answer)),
        };
        let mut invocation = self.inner.scripts.commit.key(self.key_name(key));
        invocation
            .arg(version)
            .arg(now_ms)
            .arg(self.inner.ttl_ms)
            .arg(state_op)
            .arg(&state[..])
            .arg(final_op)
            .arg(answer);
        let mut conn = self.inner.conn.clone();
        match self.bounded(invocation.invoke_async(&mut conn)).await? {
            Value::Int(1) => Ok(Commit::Saved),
            Value::Nil => Err(StoreError::Corrupt(
                "conversation expired during the call".into(),
            )),
            record @ Value::Array(_) => match snapshot(record)? {
                Some(newer) => Ok(Commit::Conflict(newer)),
                None => Err(corrupt("conflict without a record")),
            },
            other => Err(corrupt(format!("commit answered {other:?}"))),
        }
    }

    async fn claim_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.inner.scripts.claim.key(self.key_name(key));
        invocation
            .arg(format!("fw:{upstream}"))
            .arg(now_ms)
            .arg(format!("p:{lease_until_ms}"))
            .arg(self.inner.ttl_ms);
        let mut conn = self.inner.conn.clone();
        match self.bounded(invocation.invoke_async(&mut conn)).await? {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(corrupt(format!(
                "forward `{upstream}` has an unreadable lease ({other:?})"
            ))),
        }
    }

    async fn renew_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.inner.scripts.renew.key(self.key_name(key));
        invocation
            .arg(format!("fw:{upstream}"))
            .arg(format!("p:{lease_until_ms}"))
            .arg(self.inner.ttl_ms);
        let mut conn = self.inner.conn.clone();
        match self.bounded(invocation.invoke_async(&mut conn)).await? {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(corrupt(format!(
                "renewing forward `{upstream}` answered {other:?}"
            ))),
        }
    }

    async fn complete_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        reply: &Reply,
    ) -> Result<(), StoreError> {
        let mut value = b"d:".to_vec();
        serde_json::to_writer(&mut value, reply)
            .map_err(|e| corrupt(format!("reply does not serialize: {e}")))?;
        let mut invocation = self.inner.scripts.complete.key(self.key_name(key));
        invocation
            .arg(format!("fw:{upstream}"))
            .arg(value)
            .arg(self.inner.ttl_ms);
        let mut conn = self.inner.conn.clone();
        self.bounded(invocation.invoke_async::<Value>(&mut conn))
            .await?;
        Ok(())
    }

    /// Newest first among at most `LIST_MAX_KEYS` conversations: with more live than that,
    /// this is a sample (SCAN order), which is what an admin listing needs, bounded.
    async fn list(&self, now_ms: u64, limit: usize) -> Result<Vec<Summary>, StoreError> {
        let pattern = self.pattern();
        let mut out = Vec::new();
        let mut cursor = 0;
        for _ in 0..LIST_MAX_CALLS {
            let (next, names) = self.scan(cursor, &pattern).await?;
            out.extend(self.summaries(&names, now_ms).await?);
            cursor = next;
            if cursor == 0 || out.len() >= LIST_MAX_KEYS {
                break;
            }
        }
        // SCAN may return a key twice while Redis resizes its table.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        out.sort_by_key(|s| s.age_ms);
        out.truncate(limit);
        Ok(out)
    }

    /// Counted with SCAN, not a counter: Redis expires keys silently, so a counter kept
    /// beside them would drift. Exact while the database holds fewer than about
    /// `COUNT_MAX_CALLS * SCAN_COUNT` keys (then a lower bound, to keep the walk bounded);
    /// a key SCAN returns twice during a table resize is counted twice.
    async fn count(&self) -> Result<u64, StoreError> {
        let pattern = self.pattern();
        let mut total = 0u64;
        let mut cursor = 0;
        for _ in 0..COUNT_MAX_CALLS {
            let (next, names) = self.scan(cursor, &pattern).await?;
            total += names.len() as u64;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(total)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        self.bounded(::redis::cmd("PING").query_async::<Value>(&mut conn))
            .await?;
        Ok(())
    }
}

fn redis_error(e: &RedisError, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(timeout)
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt(message.into())
}

fn encode_answer(answer: &FinalAnswer) -> Vec<u8> {
    let mut out = format!("{}:", answer.status).into_bytes();
    out.extend_from_slice(&answer.body);
    out
}

fn decode_answer(value: &[u8]) -> Result<FinalAnswer, StoreError> {
    let colon = value
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| corrupt("final answer without status"))?;
    Ok(FinalAnswer {
        status: number(&value[..colon], "fa")?,
        body: Bytes::copy_from_slice(&value[colon + 1..]),
    })
}

fn decode_forward(upstream: &[u8], value: &[u8]) -> Result<(Arc<str>, ForwardState), StoreError> {
    let name: Arc<str> = std::str::from_utf8(upstream)
        .map_err(|_| corrupt("forward name is not UTF-8"))?
        .into();
    let state = if let Some(lease) = value.strip_prefix(b"p:") {
        ForwardState::Pending {
            lease_until_ms: number(lease, "fw")?,
        }
    } else if let Some(json) = value.strip_prefix(b"d:") {
        let reply: Reply = serde_json::from_slice(json)
            .map_err(|e| corrupt(format!("forward `{name}` reply: {e}")))?;
        ForwardState::Done(Arc::new(reply))
    } else {
        return Err(corrupt(format!(
            "forward `{name}` is neither pending nor done"
        )));
    };
    Ok((name, state))
}

fn number<T: std::str::FromStr>(text: &[u8], field: &str) -> Result<T, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| corrupt(format!("field `{field}` is not a number")))
}

/// An array of bulk strings, as HGETALL and the scripts return them.
fn strings(value: Value) -> Result<Vec<Vec<u8>>, StoreError> {
    let Value::Array(items) = value else {
        return Err(corrupt(format!("expected an array, got {value:?}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            other => Err(corrupt(format!("expected a string, got {other:?}"))),
        })
        .collect()
}

/// A conversation from its hash fields; `None` for an empty (missing) hash.
fn snapshot(record: Value) -> Result<Option<Snapshot>, StoreError> {
    let fields = strings(record)?;
    if fields.is_empty() {
        return Ok(None);
    }
    if fields.len() % 2 != 0 {
        return Err(corrupt("odd number of hash fields"));
    }
    let (mut version, mut attempt, mut first_seen_ms) = (None, None, None);
    let mut snapshot = Snapshot {
        version: 0,
        attempt: 0,
        first_seen_ms: 0,
        state: None,
        finished: None,
        forwards: Vec::new(),
    };
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_slice() {
            b"v" => version = Some(number(&value, "v")?),
            b"n" => attempt = Some(number(&value, "n")?),
            b"fs" => first_seen_ms = Some(number(&value, "fs")?),
            b"st" => snapshot.state = Some(Bytes::from(value)),
            b"fa" => snapshot.finished = Some(decode_answer(&value)?),
            other => {
                if let Some(upstream) = other.strip_prefix(b"fw:") {
                    snapshot.forwards.push(decode_forward(upstream, &value)?);
                }
                // `ev`, `ls` and fields from newer versions are not part of a snapshot.
            }
        }
    }
    let (Some(version), Some(attempt), Some(first_seen_ms)) = (version, attempt, first_seen_ms)
    else {
        return Err(corrupt("conversation lacks `v`, `n` or `fs`"));
    };
    snapshot.version = version;
    snapshot.attempt = attempt;
    snapshot.first_seen_ms = first_seen_ms;
    // Hash order is not insertion order once Redis converts a hash to a table.
    snapshot.forwards.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(snapshot))
}

/// A [`SUMMARIES`] row; `None` when the key expired between SCAN and the script.
fn summary(
    key: ConversationKey,
    row: Vec<Vec<u8>>,
    now_ms: u64,
) -> Result<Option<Summary>, StoreError> {
    if row.is_empty() {
        return Ok(None);
    }
    if row.len() < 5 {
        return Err(corrupt("short summary row"));
    }
    let mut row = row.into_iter();
    let mut next = || row.next().unwrap_or_default();
    let event = String::from_utf8_lossy(&next()).into_owned();
    let first_seen: u64 = number(&next(), "fs")?;
    let last_seen: u64 = number(&next(), "ls")?;
    let attempts: u32 = number(&next(), "n")?;
    let finished = next() == b"1";
    let mut s = Summary::new(key, &event, now_ms, first_seen, last_seen);
    s.attempts = attempts;
    s.finished = finished;
    s.pending_forwards = row
        .map(|name| String::from_utf8_lossy(&name).into_owned())
        .collect();
    s.pending_forwards.sort();
    Ok(Some(s))
}

/// Raw access for the conformance tests: TTLs, cleanup.
#[cfg(test)]
impl RedisStore {
    pub(crate) async fn query<T: ::redis::FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// Deletes every key under this store's prefix; returns how many.
    pub(crate) async fn remove_all(&self) -> Result<usize, StoreError> {
        let pattern = self.pattern();
        let mut removed = 0;
        let mut cursor = 0;
        loop {
            let (next, names) = self.scan(cursor, &pattern).await?;
            if !names.is_empty() {
                let mut cmd = ::redis::cmd("UNLINK");
                for name in &names {
                    cmd.arg(name.as_slice());
                }
                removed += self.query::<usize>(&cmd).await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(removed);
            }
        }
    }
}
