//! [`ConversationStore`] in memory: each method is one critical section on the
//! conversation's shard (and, for a new conversation at the cap, an eviction first).

use std::sync::Arc;

use super::finished::Finished;
use super::shard::Entry;
use super::MemoryStore;
use crate::conversation::record::pending;
use crate::conversation::{
    Commit, ConversationKey, ConversationStore, ForwardState, Opening, Reply, Snapshot, StoreError,
    Summary, Update,
};

impl ConversationStore for MemoryStore {
    async fn begin(
        &self,
        key: ConversationKey,
        opening: Opening<'_>,
        now_ms: u64,
    ) -> Result<Snapshot, StoreError> {
        let mut shard = self.shard(&key);
        if self.live(&mut shard, &key, now_ms).is_none() {
            if self.take_slot() {
                let entry = shard.entry(opening, now_ms);
                shard.map.insert(key, entry);
            } else {
                drop(shard);
                self.evict_oldest_finished()?;
                shard = self.shard(&key);
                self.insert_new(&mut shard, key, opening, now_ms);
            }
        }
        let entry = shard
            .map
            .get_mut(&key)
            .ok_or_else(|| StoreError::Corrupt("entry vanished".into()))?;
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_seen_ms = now_ms;
        Ok(entry.snapshot())
    }

    async fn load(&self, key: ConversationKey) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.shard(&key).map.get(&key).map(Entry::snapshot))
    }

    async fn commit(
        &self,
        key: ConversationKey,
        version: u64,
        update: Update,
        now_ms: u64,
    ) -> Result<Commit, StoreError> {
        let mut shard = self.shard(&key);
        let said = update.said.map(|said| shard.said(said));
        let Some(entry) = self.live(&mut shard, &key, now_ms) else {
            // Expired between begin and commit (a TTL shorter than a call): start afresh.
            return Err(StoreError::expired_during_call());
        };
        if entry.version != version {
            return Ok(Commit::Conflict(entry.snapshot()));
        }
        entry.version += 1;
        entry.last_seen_ms = now_ms;
        if let Some(state) = update.state {
            entry.state = state;
        }
        if said.is_some() {
            entry.said = said;
        }
        let mut newly_finished = None;
        if update.finished.is_some() {
            entry.finished = update.finished;
            if entry.finished_seq == 0 {
                entry.finished_seq = self.inner.finished.next_seq();
                newly_finished = Some(entry.finished_seq);
            }
        }
        drop(shard);
        // Queued after the shard lock is let go (the queue's lock comes first, see
        // `finished`); an evictor that misses it meanwhile finds the next oldest.
        if let Some(seq) = newly_finished {
            self.inner.finished.push(Finished {
                key,
                seq,
                at_ms: now_ms,
            });
        }
        Ok(Commit::Saved)
    }

    async fn claim_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut shard = self.shard(&key);
        let Some(entry) = self.live(&mut shard, &key, now_ms) else {
            return Ok(false);
        };
        let slot = entry
            .forwards
            .iter_mut()
            .find(|(name, _)| &**name == upstream);
        match slot {
            None => {
                entry
                    .forwards
                    .push((upstream.into(), ForwardState::Pending { lease_until_ms }));
                Ok(true)
            }
            Some((_, state)) => match state {
                ForwardState::Pending {
                    lease_until_ms: until,
                } if *until <= now_ms => {
                    *state = ForwardState::Pending { lease_until_ms };
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    async fn renew_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut shard = self.shard(&key);
        let slot = shard
            .map
            .get_mut(&key)
            .and_then(|e| e.forwards.iter_mut().find(|(name, _)| &**name == upstream));
        match slot {
            Some((_, state @ ForwardState::Pending { .. })) => {
                *state = ForwardState::Pending { lease_until_ms };
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete_forward(
        &self,
        key: ConversationKey,
        upstream: &str,
        reply: &Reply,
    ) -> Result<(), StoreError> {
        let mut shard = self.shard(&key);
        if let Some(entry) = shard.map.get_mut(&key) {
            let done = ForwardState::Done(Arc::new(reply.clone()));
            match entry
                .forwards
                .iter_mut()
                .find(|(name, _)| &**name == upstream)
            {
                Some((_, state)) => *state = done,
                None => entry.forwards.push((upstream.into(), done)),
            }
        }
        Ok(())
    }

    async fn list(&self, now_ms: u64, limit: usize) -> Result<Vec<Summary>, StoreError> {
        let ttl = self.inner.ttl_ms;
        let mut out = Vec::new();
        for shard in &self.inner.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, e) in &shard.map {
                if e.last_seen_ms.saturating_add(ttl) <= now_ms {
                    continue;
                }
                let mut s = Summary::new(*key, &e.origin, now_ms, e.first_seen_ms, e.last_seen_ms);
                s.attempts = e.attempts;
                s.finished = e.finished.is_some();
                s.last = e.said.as_deref().into();
                s.pending_forwards = pending(&e.forwards).map(str::to_owned).collect();
                out.push(s);
            }
        }
        Ok(Summary::newest_first(out, limit))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let total: usize = self
            .inner
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum();
        Ok(total as u64)
    }

    /// A walk over every shard, one lock at a time: exact, and cheap beside a scrape's
    /// interval (a few milliseconds for a million conversations).
    async fn active(&self, now_ms: u64) -> Result<u64, StoreError> {
        let ttl = self.inner.ttl_ms;
        let mut active = 0;
        for shard in &self.inner.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            active += shard
                .map
                .values()
                .filter(|e| e.finished.is_none() && e.last_seen_ms.saturating_add(ttl) > now_ms)
                .count();
        }
        Ok(active as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
