//! The last snapshot this process read of each recent conversation, with the write mark
//! (`w`) it was read at: a poll of a conversation nobody wrote since comes back from
//! [`super::scripts::BEGIN`] as just its attempt count, so Redis does not turn the whole hash
//! into a reply and this process does not parse it (the common case: a till polling while
//! its rule keeps saying the same).
//!
//! Only a cache of what Redis said: every write script bumps `w`, on any replica, and BEGIN
//! compares it atomically with the mark sent, so a stale entry is never used, only replaced.
//! Bounded: a full shard forgets one entry for each new one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::conversation::{ConversationKey, Snapshot};

const SHARDS: usize = 16;
/// Entries per shard; 65,536 in all, a few MB at most.
const PER_SHARD: usize = 4096;

pub(super) struct Cache {
    shards: Vec<Mutex<HashMap<ConversationKey, (u64, Snapshot)>>>,
    /// Calls answered from the cache (tests only: an atomic per call is not free).
    #[cfg(test)]
    pub(super) hits: std::sync::atomic::AtomicU64,
}

impl Cache {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            #[cfg(test)]
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(
        &self,
        key: &ConversationKey,
    ) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, (u64, Snapshot)>> {
        let index = usize::from(key.as_bytes()[15]) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The mark and snapshot last read of `key`.
    pub(super) fn get(&self, key: &ConversationKey) -> Option<(u64, Snapshot)> {
        self.shard(key).get(key).cloned()
    }

    /// Keeps `snapshot`, read at write mark `mark`.
    pub(super) fn put(&self, key: ConversationKey, mark: u64, snapshot: Snapshot) {
        let mut shard = self.shard(&key);
        if shard.len() >= PER_SHARD && !shard.contains_key(&key) {
            if let Some(old) = shard.keys().next().copied() {
                shard.remove(&old);
            }
        }
        shard.insert(key, (mark, snapshot));
    }

    /// Forgets `key` (its hash is gone or unreadable).
    pub(super) fn forget(&self, key: &ConversationKey) {
        self.shard(key).remove(key);
    }
}
