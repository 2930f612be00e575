//! One shard of the memory store: its map, what it keeps of a conversation, the values its
//! conversations share, and the hasher that takes the keys' own bits.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use super::intern::Interner;
use crate::conversation::{
    ConversationKey, FinalAnswer, ForwardState, Opening, Origin, Said, Snapshot,
};

pub(super) type Map = HashMap<ConversationKey, Entry, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
pub(super) struct Shard {
    pub(super) map: Map,
    origins: Interner<Origin>,
    said: Interner<Said>,
}

impl Shard {
    /// A new conversation's entry, its origin shared with the shard's others.
    pub(super) fn entry(&mut self, opening: Opening<'_>, now_ms: u64) -> Entry {
        Entry::new(self.origins.intern(opening.into()), now_ms)
    }

    /// The shared copy of `said`.
    pub(super) fn said(&mut self, said: Said) -> Arc<Said> {
        self.said.intern(said)
    }
}

pub(super) struct Entry {
    pub(super) origin: Arc<Origin>,
    pub(super) said: Option<Arc<Said>>,
    pub(super) first_seen_ms: u64,
    pub(super) last_seen_ms: u64,
    pub(super) version: u64,
    pub(super) attempts: u32,
    pub(super) state: Option<Bytes>,
    pub(super) finished: Option<FinalAnswer>,
    pub(super) forwards: Vec<(Arc<str>, ForwardState)>,
    /// The number its item in the finished queue carries; 0 while not finished.
    pub(super) finished_seq: u64,
}

impl Entry {
    fn new(origin: Arc<Origin>, now_ms: u64) -> Self {
        Self {
            origin,
            said: None,
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

    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            attempt: self.attempts,
            first_seen_ms: self.first_seen_ms,
            state: self.state.clone(),
            finished: self.finished.clone(),
            forwards: self.forwards.clone(),
            origin: Arc::clone(&self.origin),
            said: self.said.clone(),
        }
    }
}

/// Keys are SHA-256 prefixes already; their `Hash` writes one u64, taken as it is.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

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
