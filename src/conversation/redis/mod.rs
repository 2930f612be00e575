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
//! | `sb`        | subscription id, from the first call                               |
//! | `tb` / `tw` | till: `sender.branchNumber` / `sender.workplaceNumber`; `''` if none |
//! | `dc`        | the last decision (`keep_polling`, `finished`, ...)                |
//! | `ms` / `cm` | the last decision's `message` / `customerMessage`; `''` if none    |
//! | `w`         | write mark: random at creation, bumped by every write but a call's count |
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
//! `list`, `count` and `active` walk the keys with `SCAN`, bounded (see each), on the one
//! Redis or on every primary of a Redis Cluster; the admin summaries script reads a page of
//! keys at once on a single Redis, and one key per script on a cluster, where a script's keys
//! must share a slot. Each conversation is one key, so every other script touches one slot
//! and conversations spread over the cluster's primaries.
//!
//! Every command is bounded by the configured timeout ([`StoreError::Timeout`]); Redis
//! errors become [`StoreError::Unavailable`], naming the URL. The [`RedisConnection`]
//! reconnects by itself (GATEWAY.md 11), so while Redis is down calls fail fast, and once
//! it is back the next command (or the one after) works again. Scripts are sent by hash and
//! loaded on first use (`EVALSHA`'s `NOSCRIPT` fallback), also after a Redis restart.

mod cache;
mod decode;
mod scan;
mod scripts;
mod store;

use std::sync::Arc;
use std::time::Duration;

use ::redis::{FromRedisValue, RedisResult, Script, ToRedisArgs};

use super::{ConversationKey, StoreError};
use crate::config::millis;
use crate::redis_connection::RedisConnection;
use scripts::{ACTIVE, BEGIN, CLAIM, COMMIT, COMPLETE, RENEW, SUMMARIES};

/// A Redis-backed store; clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConnection,
    /// `{prefix}:conv:`, the start of every conversation key.
    key_prefix: String,
    ttl_ms: u64,
    scripts: Scripts,
    cache: cache::Cache,
}

struct Scripts {
    begin: Script,
    commit: Script,
    claim: Script,
    renew: Script,
    complete: Script,
    summaries: Script,
    active: Script,
}

impl std::fmt::Debug for RedisStore {
    // What this store is, not the connection manager's internals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.inner.key_prefix)
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("timeout", &self.inner.conn.timeout())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `conn` (whose timeout bounds every command); conversations live `ttl`
    /// after their last write. Needs no Redis yet: outages, at start or later, are answers
    /// until Redis is back.
    pub(crate) fn new(conn: RedisConnection, prefix: &str, ttl: Duration) -> RedisStore {
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                key_prefix: format!("{prefix}:conv:"),
                // PEXPIRE 0 would delete the key at once.
                ttl_ms: millis(ttl).max(1),
                scripts: Scripts {
                    begin: Script::new(BEGIN),
                    commit: Script::new(COMMIT),
                    claim: Script::new(CLAIM),
                    renew: Script::new(RENEW),
                    complete: Script::new(COMPLETE),
                    summaries: Script::new(SUMMARIES),
                    active: Script::new(ACTIVE),
                },
                cache: cache::Cache::new(),
            }),
        }
    }

    /// The TTL this store applies.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_ms)
    }

    /// Runs one Redis command under the timeout, mapping its errors.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.conn.timeout();
        match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(timeout)),
            Ok(Err(e)) => Err(StoreError::Unavailable(self.inner.conn.explain(&e))),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    /// Runs `script` on the conversation `key` with `args` (a tuple, in ARGV order),
    /// bounded and mapped like every command.
    async fn invoke<T: FromRedisValue>(
        &self,
        script: &Script,
        key: ConversationKey,
        args: impl ToRedisArgs,
    ) -> Result<T, StoreError> {
        let mut invocation = script.key(self.key_name(key));
        invocation.arg(args);
        let mut conn = self.inner.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// Calls answered from the snapshot cache so far.
    #[cfg(test)]
    pub(crate) fn cache_hits(&self) -> u64 {
        self.inner
            .cache
            .hits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn key_name(&self, key: ConversationKey) -> String {
        format!("{}{key}", self.inner.key_prefix)
    }
}
