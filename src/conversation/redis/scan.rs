//! Walking this store's keys with `SCAN`, bounded, for the admin listing and the count.

use ::redis::Value;

use super::decode::{corrupt, strings, summary};
use super::RedisStore;
use crate::conversation::{ConversationKey, StoreError, Summary};

/// `SCAN ... COUNT` hint: slots Redis examines per call.
const SCAN_COUNT: usize = 1000;
/// `list` stops after this many conversations found (or `LIST_MAX_CALLS` SCAN calls).
const LIST_MAX_KEYS: usize = 4096;
const LIST_MAX_CALLS: usize = 64;
/// `count` walks at most this many SCAN calls (about 256k keys examined).
const COUNT_MAX_CALLS: usize = 256;

impl RedisStore {
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

    /// `list`: newest first among at most `LIST_MAX_KEYS` conversations.
    pub(super) async fn list_sample(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Summary>, StoreError> {
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
        Ok(Summary::newest_first(out, limit))
    }

    /// `count`: the keys of at most `COUNT_MAX_CALLS` SCAN calls.
    pub(super) async fn count_keys(&self) -> Result<u64, StoreError> {
        self.count_pages(|names| async move { Ok(names.len() as u64) })
            .await
    }

    /// `active`: like `count_keys`, the keys without a final answer.
    pub(super) async fn count_active(&self) -> Result<u64, StoreError> {
        self.count_pages(|names| async move {
            if names.is_empty() {
                return Ok(0);
            }
            let mut invocation = self.inner.scripts.active.prepare_invoke();
            for name in &names {
                invocation.key(name.as_slice());
            }
            let mut conn = self.inner.conn.clone();
            self.bounded(invocation.invoke_async::<u64>(&mut conn))
                .await
        })
        .await
    }

    /// The sum of `counted` over the pages of at most `COUNT_MAX_CALLS` SCAN calls.
    async fn count_pages<F, Fut>(&self, counted: F) -> Result<u64, StoreError>
    where
        F: Fn(Vec<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Result<u64, StoreError>>,
    {
        let pattern = self.pattern();
        let mut total = 0u64;
        let mut cursor = 0;
        for _ in 0..COUNT_MAX_CALLS {
            let (next, names) = self.scan(cursor, &pattern).await?;
            total += counted(names).await?;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(total)
    }
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
