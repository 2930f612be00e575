//! Walking this store's keys with `SCAN`, bounded, for the admin listing and the count: on
//! the one Redis, or on each primary of a Redis Cluster in turn (the bounds are for the
//! whole walk).

use ::redis::Value;

use super::decode::{corrupt, strings, summary};
use super::RedisStore;
use crate::conversation::{ConversationKey, StoreError, Summary};
use crate::redis_connection::Node;

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

    async fn scan(
        &self,
        node: &Node,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.bounded(self.inner.conn.query_on(node, &cmd)).await
    }

    /// The nodes a walk visits: the one Redis, or each primary of the cluster.
    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.bounded(self.inner.conn.key_nodes()).await
    }

    /// `script` once per key of `names` (on a cluster a script's keys must share a slot),
    /// all in one pipeline to `node`, which holds them: each run's answer, in order.
    async fn each_key_on(
        &self,
        node: &Node,
        script: &::redis::Script,
        names: &[&[u8]],
    ) -> Result<Vec<Value>, StoreError> {
        // A pipeline does not load a missing script by itself.
        let mut conn = self.inner.conn.clone();
        self.bounded(script.load_async(&mut conn)).await?;
        let mut pipeline = ::redis::pipe();
        for name in names {
            pipeline
                .cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(1)
                .arg(*name);
        }
        self.bounded(self.inner.conn.pipeline_on(node, &pipeline))
            .await
    }

    /// Summaries for one SCAN page of `node`; keys that expired meanwhile are skipped. A
    /// single Redis reads the page in one script; a cluster one script per key (a script's
    /// keys must share a slot), all in one pipeline to the node holding them.
    async fn summaries(
        &self,
        node: &Node,
        names: &[Vec<u8>],
        now_ms: u64,
    ) -> Result<Vec<Summary>, StoreError> {
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
        let script = &self.inner.scripts.summaries;
        let rows = if self.inner.conn.is_cluster() {
            let names: Vec<&[u8]> = keys.iter().map(|(_, name)| name.as_slice()).collect();
            let answers = self.each_key_on(node, script, &names).await?;
            let mut rows = Vec::with_capacity(answers.len());
            for answer in answers {
                let Value::Array(mut one) = answer else {
                    return Err(corrupt("summaries: not an array"));
                };
                rows.push(one.pop().unwrap_or(Value::Array(Vec::new())));
            }
            rows
        } else {
            let mut invocation = script.prepare_invoke();
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
            rows
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
        let mut calls = 0;
        'nodes: for node in self.nodes().await? {
            let mut cursor = 0;
            while calls < LIST_MAX_CALLS && out.len() < LIST_MAX_KEYS {
                calls += 1;
                let (next, names) = self.scan(&node, cursor, &pattern).await?;
                out.extend(self.summaries(&node, &names, now_ms).await?);
                cursor = next;
                if cursor == 0 {
                    continue 'nodes;
                }
            }
            break;
        }
        // SCAN may return a key twice while Redis resizes its table.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(Summary::newest_first(out, limit))
    }

    /// `count`: the keys of at most `COUNT_MAX_CALLS` SCAN calls.
    pub(super) async fn count_keys(&self) -> Result<u64, StoreError> {
        self.count_pages(|_, names| async move { Ok(names.len() as u64) })
            .await
    }

    /// `active`: like `count_keys`, the keys without a final answer. A single Redis counts a
    /// page in one script; a cluster one script per key (a script's keys must share a
    /// slot), all in one pipeline to the node holding them.
    pub(super) async fn count_active(&self) -> Result<u64, StoreError> {
        self.count_pages(|node, names| async move {
            if names.is_empty() {
                return Ok(0);
            }
            let script = &self.inner.scripts.active;
            let mut conn = self.inner.conn.clone();
            if !self.inner.conn.is_cluster() {
                let mut invocation = script.prepare_invoke();
                for name in &names {
                    invocation.key(name.as_slice());
                }
                return self
                    .bounded(invocation.invoke_async::<u64>(&mut conn))
                    .await;
            }
            let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            self.each_key_on(&node, script, &names)
                .await?
                .into_iter()
                .map(|answer| match answer {
                    Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
                    _ => Err(corrupt("active: not an integer")),
                })
                .sum()
        })
        .await
    }

    /// The sum of `counted` over the pages of at most `COUNT_MAX_CALLS` SCAN calls, on the
    /// one Redis or on each primary in turn.
    async fn count_pages<F, Fut>(&self, counted: F) -> Result<u64, StoreError>
    where
        F: Fn(Node, Vec<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Result<u64, StoreError>>,
    {
        let pattern = self.pattern();
        let mut total = 0u64;
        let mut calls = 0;
        'nodes: for node in self.nodes().await? {
            let mut cursor = 0;
            while calls < COUNT_MAX_CALLS {
                calls += 1;
                let (next, names) = self.scan(&node, cursor, &pattern).await?;
                total += counted(node.clone(), names).await?;
                cursor = next;
                if cursor == 0 {
                    continue 'nodes;
                }
            }
            break;
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
        for node in self.nodes().await? {
            let mut cursor = 0;
            loop {
                let (next, names) = self.scan(&node, cursor, &pattern).await?;
                // One key a command: on a cluster every conversation has its own slot.
                for name in &names {
                    let mut cmd = ::redis::cmd("UNLINK");
                    cmd.arg(name.as_slice());
                    removed += self.query::<usize>(&cmd).await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(removed)
    }
}
