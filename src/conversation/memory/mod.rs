//! Conversations in this process: a sharded map behind std mutexes.
//!
//! std (not tokio) mutexes because every critical section is a few field updates with no
//! `.await` inside; sharding keeps two cores from queueing on one lock. Expired
//! conversations are dropped by [`MemoryStore::sweep`], which the app runs periodically,
//! and ignored on access, so memory stays proportional to the live conversations.
//!
//! The number held is capped (`state.max_conversations`, GATEWAY.md 12): at the cap a new
//! conversation takes the place of the oldest finished one ([`finished`] finds it without a
//! scan); with none finished it is refused with [`StoreError::Full`]. Conversations still
//! going on are never evicted, so a flood of new ones cannot break a till mid-conversation.

mod finished;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Commit, ConversationKey, ConversationStore, FinalAnswer, ForwardState, Reply, Snapshot,
    StoreError, Summary, Update,
};
use crate::config::{millis, DEFAULT_MAX_CONVERSATIONS};

use finished::{Finished, FinishedQueue, Seen};

const SHARDS: usize = 64;

/// The in-process store; clones share the same conversations.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    ttl_ms: u64,
    /// Conversations held in all shards, so the cap is checked without locking every shard.
    /// A slot is taken before an insert and handed from an evicted conversation straight
    /// to the new one, so concurrent calls never overshoot the cap.
    held: AtomicUsize,
    max: usize,
    finished: FinishedQueue,
}

type Shard = HashMap<ConversationKey, Entry, BuildHasherDefault<KeyHasher>>;

struct Entry {
    event: Arc<str>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    version: u64,
    attempts: u32,
    state: Option<Bytes>,
    finished: Option<FinalAnswer>,
    forwards: Vec<(Arc<str>, ForwardState)>,
    /// The number its item in the finished queue carries; 0 while not finished.
    finished_seq: u64,
}

impl Entry {
    fn new(event: &str, now_ms: u64) -> Self {
        Self {
            event: event.into(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            version: 0,
            attempts: 0,
            state: None,
            finished: None,
            forwards: Vec::new(),
            finished_seq: 0,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            attempt: self.attempts,
            first_seen_ms: self.first_seen_ms,
            state: self.state.clone(),
            finished: self.finished.clone(),
            forwards: self.forwards.clone(),
        }
    }
}

/// Keys are SHA-256 prefixes already; their `Hash` writes one u64, taken as it is.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl MemoryStore {
    /// A store that forgets conversations `ttl` after their last call and holds at most
    /// [`DEFAULT_MAX_CONVERSATIONS`].
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, DEFAULT_MAX_CONVERSATIONS)
    }

    /// A store that holds at most `max_conversations` (at least one).
    pub fn bounded(ttl: Duration, max_conversations: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                ttl_ms: millis(ttl),
                held: AtomicUsize::new(0),
                max: max_conversations.max(1),
                finished: FinishedQueue::default(),
            }),
        }
    }

    fn shard(&self, key: &ConversationKey) -> MutexGuard<'_, Shard> {
        let index = usize::from(key.as_bytes()[15]) % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update of plain fields; the
        // map itself is still consistent, so keep serving it.
        self.inner.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live<'a>(
        &self,
        shard: &'a mut Shard,
        key: &ConversationKey,
        now_ms: u64,
    ) -> Option<&'a mut Entry> {
        let expired = shard
            .get(key)
            .is_some_and(|e| e.last_seen_ms.saturating_add(self.inner.ttl_ms) <= now_ms);
        if expired {
            shard.remove(key);
            self.inner.held.fetch_sub(1, Ordering::AcqRel);
        }
        shard.get_mut(key)
    }

    /// Takes a slot for a new conversation if the cap allows.
    fn take_slot(&self) -> bool {
        let max = self.inner.max;
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Evicts the oldest finished conversation and keeps its slot for the caller, who must
    /// hold no shard lock (the victim may live in any shard, the caller's own included).
    fn evict_oldest_finished(&self) -> Result<(), StoreError> {
        while let Some(item) = self.inner.finished.pop_front() {
            let mut shard = self.shard(&item.key);
            if shard
                .get(&item.key)
                .is_some_and(|e| e.finished_seq == item.seq)
            {
                shard.remove(&item.key);
                return Ok(());
            }
        }
        Err(StoreError::Full {
            max: self.inner.max,
        })
    }

    /// Inserts a new conversation into `shard` with a slot already taken, unless a concurrent
    /// call created it while the shard was let go (then the slot is given back).
    fn insert_new(&self, shard: &mut Shard, key: ConversationKey, event: &str, now_ms: u64) {
        if self.live(shard, &key, now_ms).is_some() {
            self.inner.held.fetch_sub(1, Ordering::AcqRel);
        } else {
            shard.insert(key, Entry::new(event, now_ms));
        }
    }

    /// Drops every conversation idle for longer than the TTL; returns how many.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let ttl = self.inner.ttl_ms;
        let mut dropped = 0;
        for shard in &self.inner.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, e| e.last_seen_ms.saturating_add(ttl) > now_ms);
            // Give memory back after a burst, not on every sweep.
            if shard.capacity() > 64 && shard.capacity() > 4 * shard.len() {
                shard.shrink_to_fit();
            }
            let gone = before - shard.len();
            self.inner.held.fetch_sub(gone, Ordering::AcqRel);
            dropped += gone;
        }
        // Every item that finished before the TTL's horizon is stale now, unless duplicates
        // kept its conversation alive; the queue takes the lock first, then each shard's.
        self.inner
            .finished
            .prune(now_ms.saturating_sub(ttl), |item| {
                match self.shard(&item.key).get(&item.key) {
                    Some(e) if e.finished_seq == item.seq => Seen::Held {
                        last_seen_ms: e.last_seen_ms,
                    },
                    _ => Seen::Stale,
                }
            });
        dropped
    }

    /// The most conversations this store holds.
    pub fn max_conversations(&self) -> usize {
        self.inner.max
    }

    /// The TTL this store applies.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_ms)
    }
}

impl ConversationStore for MemoryStore {
    async fn begin(
        &self,
        key: ConversationKey,
        event: &str,
        now_ms: u64,
    ) -> Result<Snapshot, StoreError> {
        let mut shard = self.shard(&key);
        if self.live(&mut shard, &key, now_ms).is_none() {
            if self.take_slot() {
                shard.insert(key, Entry::new(event, now_ms));
            } else {
                drop(shard);
                self.evict_oldest_finished()?;
                shard = self.shard(&key);
                self.insert_new(&mut shard, key, event, now_ms);
            }
        }
        let entry = shard
            .get_mut(&key)
            .ok_or_else(|| StoreError::Corrupt("entry vanished".into()))?;
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_seen_ms = now_ms;
        Ok(entry.snapshot())
    }

    async fn load(&self, key: ConversationKey) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.shard(&key).get(&key).map(Entry::snapshot))
    }

    async fn commit(
        &self,
        key: ConversationKey,
        version: u64,
        update: Update,
        now_ms: u64,
    ) -> Result<Commit, StoreError> {
        let mut shard = self.shard(&key);
        let Some(entry) = self.live(&mut shard, &key, now_ms) else {
            // Expired between begin and commit (a TTL shorter than a call): start afresh.
            return Err(StoreError::Corrupt(
                "conversation expired during the call".into(),
            ));
        };
        if entry.version != version {
            return Ok(Commit::Conflict(entry.snapshot()));
        }
        entry.version += 1;
        entry.last_seen_ms = now_ms;
        if let Some(state) = update.state {
            entry.state = state;
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
        if let Some(entry) = shard.get_mut(&key) {
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
            for (key, e) in shard.iter() {
                if e.last_seen_ms.saturating_add(ttl) <= now_ms {
                    continue;
                }
                let mut s = Summary::new(*key, &e.event, now_ms, e.first_seen_ms, e.last_seen_ms);
                s.attempts = e.attempts;
                s.finished = e.finished.is_some();
                s.pending_forwards = e
                    .forwards
                    .iter()
                    .filter(|(_, f)| matches!(f, ForwardState::Pending { .. }))
                    .map(|(n, _)| n.to_string())
                    .collect();
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.age_ms);
        out.truncate(limit);
        Ok(out)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let total: usize = self
            .inner
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum();
        Ok(total as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
