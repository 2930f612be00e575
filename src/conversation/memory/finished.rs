//! The memory store's finished conversations in the order they went quiet, so that at
//! `state.max_conversations` the oldest one is found in O(1) instead of by a scan.
//!
//! Lazy deletion: an item names a conversation and the sequence number it was queued
//! under; a conversation that expired, was evicted or came back as a new conversation
//! under the same key no longer carries that number, so its item is skipped when it
//! reaches the front. [`FinishedQueue::prune`] drops such items during the periodic sweep,
//! so the queue stays proportional to the finished conversations held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::conversation::ConversationKey;

/// How many items one prune step looks at before letting calls at the queue again.
const PRUNE_BATCH: usize = 1024;

/// One finished conversation, as queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Finished {
    pub(super) key: ConversationKey,
    /// Matches the conversation's own number while the item is current.
    pub(super) seq: u64,
    /// When it finished (or, after a prune moved it back, when it was last called).
    pub(super) at_ms: u64,
}

/// What [`FinishedQueue::prune`] learns about an old item from the conversation's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// The conversation is gone or was queued again under another number.
    Stale,
    /// Still held: duplicates kept calling it until `last_seen_ms`.
    Held { last_seen_ms: u64 },
}

/// Finished conversations, oldest first. Its lock is std's (never held across `.await`,
/// a push or pop is a few words) and is never taken while a shard lock is held, except by
/// `prune`, which takes it first: one lock order, so no deadlock.
#[derive(Debug, Default)]
pub(super) struct FinishedQueue {
    items: Mutex<VecDeque<Finished>>,
    next_seq: AtomicU64,
}

impl FinishedQueue {
    /// A fresh number for a conversation that just finished (never 0, which means "not queued").
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn push(&self, item: Finished) {
        self.lock().push_back(item);
    }

    /// The oldest item, current or not; the caller checks it against its shard.
    pub(super) fn pop_front(&self) -> Option<Finished> {
        self.lock().pop_front()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Looks at the items older than `cutoff_ms` from the front, asking `seen` about each:
    /// stale ones are dropped, conversations still held (kept alive by duplicates) move to
    /// the back under their last call. Stops at the first newer item. Returns how many
    /// items were dropped.
    pub(super) fn prune(&self, cutoff_ms: u64, seen: impl Fn(&Finished) -> Seen) -> usize {
        let mut dropped = 0;
        // Each item is looked at once per prune, even when it moves to the back.
        let mut budget = self.len();
        while budget > 0 {
            let mut items = self.lock();
            for _ in 0..PRUNE_BATCH.min(budget) {
                budget -= 1;
                let Some(front) = items.front().copied() else {
                    return dropped;
                };
                if front.at_ms >= cutoff_ms {
                    return dropped;
                }
                items.pop_front();
                match seen(&front) {
                    Seen::Stale => dropped += 1,
                    Seen::Held { last_seen_ms } => items.push_back(Finished {
                        at_ms: last_seen_ms,
                        ..front
                    }),
                }
            }
            // Give memory back after a burst, not on every prune.
            if items.capacity() > 64 && items.capacity() > 4 * items.len() {
                items.shrink_to_fit();
            }
        }
        dropped
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Finished>> {
        // A panic elsewhere cannot leave a VecDeque half-changed; keep serving it.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8, seq: u64, at_ms: u64) -> Finished {
        let mut bytes = [0u8; 16];
        bytes[0] = n;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Finished {
            key: ConversationKey::from_hex(&hex).expect("hex key"),
            seq,
            at_ms,
        }
    }

    #[test]
    fn items_come_out_oldest_first_with_fresh_numbers() {
        let queue = FinishedQueue::default();
        let (a, b) = (queue.next_seq(), queue.next_seq());
        assert!(a > 0 && b > a, "numbers are fresh and never 0");
        queue.push(item(1, a, 10));
        queue.push(item(2, b, 20));
        assert_eq!(queue.pop_front(), Some(item(1, a, 10)));
        assert_eq!(queue.pop_front(), Some(item(2, b, 20)));
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn prune_drops_stale_items_moves_held_ones_back_and_stops_at_newer_ones() {
        let queue = FinishedQueue::default();
        queue.push(item(1, 1, 10)); // gone
        queue.push(item(2, 2, 20)); // still held, called again at 95
        queue.push(item(3, 3, 30)); // gone
        queue.push(item(4, 4, 100)); // newer than the cutoff: not looked at
        queue.push(item(5, 5, 40)); // behind a newer item: left for the next prune
        let dropped = queue.prune(50, |f| match f.seq {
            2 => Seen::Held { last_seen_ms: 95 },
            4 => panic!("items at or past the cutoff are not looked at"),
            _ => Seen::Stale,
        });
        assert_eq!(dropped, 2);
        let rest: Vec<_> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(rest, [item(4, 4, 100), item(5, 5, 40), item(2, 2, 95)]);
    }

    #[test]
    fn prune_looks_at_each_item_once_even_when_all_are_held() {
        let queue = FinishedQueue::default();
        for n in 0..3000u64 {
            queue.push(item((n % 200) as u8, n + 1, n));
        }
        let looked = std::cell::Cell::new(0);
        let dropped = queue.prune(u64::MAX, |f| {
            looked.set(looked.get() + 1);
            Seen::Held {
                last_seen_ms: f.at_ms,
            }
        });
        assert_eq!((dropped, looked.get(), queue.len()), (0, 3000, 3000));
    }
}
