//! One shard of the memory store: its map, what it keeps of a conversation, and the hasher
//! that takes the keys' own bits.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::conversation::{ConversationKey, FinalAnswer, ForwardState, Snapshot};

pub(super) type Shard = HashMap<ConversationKey, Entry, BuildHasherDefault<KeyHasher>>;

pub(super) struct Entry {
    pub(super) event: Arc<str>,
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
    pub(super) fn new(event: &str, now_ms: u64) -> Self {
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

    pub(super) fn snapshot(&self) -> Snapshot {
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
