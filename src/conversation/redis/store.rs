//! [`ConversationStore`] on Redis: each change is one of the [`super::scripts`], run on the
//! conversation's hash; reads decode what the hash holds ([`super::decode`]).

use ::redis::Value;
use bytes::Bytes;

use super::decode::{corrupt, encode_answer, marked_snapshot, snapshot};
use super::RedisStore;
use crate::conversation::{
    Commit, ConversationKey, ConversationStore, Opening, Reply, Snapshot, StoreError, Summary,
    Update,
};

impl ConversationStore for RedisStore {
    async fn begin(
        &self,
        key: ConversationKey,
        opening: Opening<'_>,
        now_ms: u64,
    ) -> Result<Snapshot, StoreError> {
        let number = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        let cached = self.inner.cache.get(&key);
        let known = cached
            .as_ref()
            .map(|(mark, _)| mark.to_string())
            .unwrap_or_default();
        let args = (
            opening.event,
            now_ms,
            self.inner.ttl_ms,
            opening.subscription,
            number(opening.till.branch),
            number(opening.till.workplace),
            // A new conversation's first mark: random, so a conversation made again after
            // its key expired never matches a snapshot of the one before.
            fastrand::u64(..1 << 52),
            known,
        );
        match self.invoke(&self.inner.scripts.begin, key, args).await? {
            Value::Int(attempt) => {
                #[cfg(test)]
                self.inner
                    .cache
                    .hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (_, mut snapshot) =
                    cached.ok_or_else(|| corrupt("begin answered a count to no snapshot"))?;
                snapshot.attempt = u32::try_from(attempt)
                    .map_err(|_| corrupt(format!("attempt count {attempt}")))?;
                Ok(snapshot)
            }
            record => match marked_snapshot(record) {
                Ok(Some((snapshot, mark))) => {
                    match mark {
                        Some(mark) => self.inner.cache.put(key, mark, snapshot.clone()),
                        None => self.inner.cache.forget(&key),
                    }
                    Ok(snapshot)
                }
                Ok(None) => Err(corrupt("begin returned nothing")),
                Err(e) => {
                    self.inner.cache.forget(&key);
                    Err(e)
                }
            },
        }
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
        let (said_op, decision, message, customer_message) = match &update.said {
            None => ("k", "", "", ""),
            Some(said) => (
                "s",
                said.decision.label(),
                &*said.message,
                &*said.customer_message,
            ),
        };
        let ttl_ms = self.inner.ttl_ms;
        let args = (
            version,
            now_ms,
            ttl_ms,
            state_op,
            &state[..],
            final_op,
            answer,
            said_op,
            decision,
            message,
            customer_message,
        );
        match self.invoke(&self.inner.scripts.commit, key, args).await? {
            Value::Int(1) => Ok(Commit::Saved),
            Value::Nil => Err(StoreError::expired_during_call()),
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
        let (field, lease) = forward_lease(upstream, lease_until_ms);
        let args = (field, now_ms, lease, self.inner.ttl_ms);
        let answer = self.invoke(&self.inner.scripts.claim, key, args).await?;
        yes_or_no(answer, |other| {
            format!("forward `{upstream}` has an unreadable lease ({other:?})")
        })
    }

    async fn renew_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let (field, lease) = forward_lease(upstream, lease_until_ms);
        let args = (field, lease, self.inner.ttl_ms);
        let answer = self.invoke(&self.inner.scripts.renew, key, args).await?;
        yes_or_no(answer, |other| {
            format!("renewing forward `{upstream}` answered {other:?}")
        })
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
        let args = (format!("fw:{upstream}"), value, self.inner.ttl_ms);
        self.invoke::<Value>(&self.inner.scripts.complete, key, args)
            .await?;
        Ok(())
    }

    /// Newest first among at most `LIST_MAX_KEYS` conversations: with more live than that,
    /// this is a sample (SCAN order), which is what an admin listing needs, bounded.
    async fn list(&self, now_ms: u64, limit: usize) -> Result<Vec<Summary>, StoreError> {
        self.list_sample(now_ms, limit).await
    }

    /// Counted with SCAN, not a counter: Redis expires keys silently, so a counter kept
    /// beside them would drift. Exact while the database holds fewer than about
    /// `COUNT_MAX_CALLS * SCAN_COUNT` keys (then a lower bound, to keep the walk bounded);
    /// a key SCAN returns twice during a table resize is counted twice.
    async fn count(&self) -> Result<u64, StoreError> {
        self.count_keys().await
    }

    /// Bounded like `count`; each SCAN page is checked by one script (no `fa` field).
    async fn active(&self, _now_ms: u64) -> Result<u64, StoreError> {
        self.count_active().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        self.bounded(::redis::cmd("PING").query_async::<Value>(&mut conn))
            .await?;
        Ok(())
    }
}

/// A forward's hash field and the value that marks it pending until `lease_until_ms`.
fn forward_lease(upstream: &str, lease_until_ms: u64) -> (String, String) {
    (format!("fw:{upstream}"), format!("p:{lease_until_ms}"))
}

/// A script's 1 or 0 as true or false; anything else is corrupt, described by `what`.
fn yes_or_no(answer: Value, what: impl FnOnce(&Value) -> String) -> Result<bool, StoreError> {
    match answer {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        other => Err(corrupt(what(&other))),
    }
}
