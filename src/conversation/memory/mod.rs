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
//!
//! What many conversations share (their origin: event, subscription, till; their last
//! decision with its messages) is kept once per shard ([`intern`]), so a conversation's
//! entry holds two pointers for it (GATEWAY.md 7: under 512 B per live conversation).

mod finished;
mod intern;
mod shard;
mod store;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{ConversationKey, Opening, StoreError};
use crate::config::{millis, DEFAULT_MAX_CONVERSATIONS};

use finished::{FinishedQueue, Seen};
use shard::{Entry, Shard};

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
            .map
            .get(key)
            .is_some_and(|e| e.last_seen_ms.saturating_add(self.inner.ttl_ms) <= now_ms);
        if expired {
            shard.map.remove(key);
            self.inner.held.fetch_sub(1, Ordering::AcqRel);
        }
        shard.map.get_mut(key)
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
                .map
                .get(&item.key)
                .is_some_and(|e| e.finished_seq == item.seq)
            {
                shard.map.remove(&item.key);
                return Ok(());
            }
        }
        Err(StoreError::Full {
            max: self.inner.max,
        })
    }

    /// Inserts a new conversation into `shard` with a slot already taken, unless a concurrent
    /// call created it while the shard was let go (then the slot is given back).
    fn insert_new(
        &self,
        shard: &mut Shard,
        key: ConversationKey,
        opening: Opening<'_>,
        now_ms: u64,
    ) {
        if self.live(shard, &key, now_ms).is_some() {
            self.inner.held.fetch_sub(1, Ordering::AcqRel);
        } else {
            let entry = shard.entry(opening, now_ms);
            shard.map.insert(key, entry);
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
            let map = &mut shard.map;
            let before = map.len();
            map.retain(|_, e| e.last_seen_ms.saturating_add(ttl) > now_ms);
            // Give memory back after a burst, not on every sweep.
            if map.capacity() > 64 && map.capacity() > 4 * map.len() {
                map.shrink_to_fit();
            }
            let gone = before - map.len();
            self.inner.held.fetch_sub(gone, Ordering::AcqRel);
            dropped += gone;
        }
        // Every item that finished before the TTL's horizon is stale now, unless duplicates
        // kept its conversation alive; the queue takes the lock first, then each shard's.
        self.inner
            .finished
            .prune(now_ms.saturating_sub(ttl), |item| {
                match self.shard(&item.key).map.get(&item.key) {
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

#[cfg(test)]
mod tests;
