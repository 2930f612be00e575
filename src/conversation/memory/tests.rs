//! The memory store's cap (GATEWAY.md 12): what is evicted, what is refused, and that the
//! bookkeeping behind it (the held count, the finished queue) stays exact.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::MemoryStore;
use crate::conversation::conformance::fresh_key;
use crate::conversation::{
    Commit, ConversationKey, ConversationStore, FinalAnswer, Opening, StoreError, Update,
};

const T0: u64 = 1_700_000_000_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

fn finishing() -> Update {
    Update {
        state: None,
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(br#"{"polling":{"finished":true}}"#),
        }),
        said: None,
    }
}

/// Starts a conversation and finishes it at `now`.
async fn finished(store: &MemoryStore, now: u64) -> ConversationKey {
    let key = fresh_key();
    let s = store.begin(key, Opening::event("e"), now).await.unwrap();
    let saved = store
        .commit(key, s.version, finishing(), now)
        .await
        .unwrap();
    assert!(matches!(saved, Commit::Saved));
    key
}

async fn going_on(store: &MemoryStore, now: u64) -> ConversationKey {
    let key = fresh_key();
    store.begin(key, Opening::event("e"), now).await.unwrap();
    key
}

async fn held(store: &MemoryStore, key: ConversationKey) -> bool {
    store.load(key).await.unwrap().is_some()
}

/// The cheap count behind the cap agrees with what the shards hold.
async fn assert_count_is_exact(store: &MemoryStore) {
    let counted = store.count().await.unwrap();
    let held = store.inner.held.load(std::sync::atomic::Ordering::Acquire) as u64;
    assert_eq!(held, counted, "the held count drifted from the shards");
}

#[tokio::test]
async fn at_the_cap_a_new_conversation_evicts_the_oldest_finished_one() {
    let store = MemoryStore::bounded(DAY, 3);
    let oldest = finished(&store, T0).await;
    let live = going_on(&store, T0 + 1).await;
    let newer = finished(&store, T0 + 2).await;

    let first = going_on(&store, T0 + 3).await;
    assert!(
        !held(&store, oldest).await,
        "the oldest finished one made room"
    );
    assert!(held(&store, live).await && held(&store, newer).await && held(&store, first).await);

    let second = going_on(&store, T0 + 4).await;
    assert!(
        !held(&store, newer).await,
        "then the next oldest finished one"
    );
    assert!(
        held(&store, live).await,
        "a conversation going on is never evicted"
    );
    assert!(held(&store, second).await);
    assert_eq!(store.count().await.unwrap(), 3);
    assert_count_is_exact(&store).await;
}

#[tokio::test]
async fn with_nothing_finished_a_new_conversation_is_refused_and_the_others_still_commit() {
    let store = MemoryStore::bounded(DAY, 2);
    let (a, b) = (going_on(&store, T0).await, going_on(&store, T0).await);

    let refused = store.begin(fresh_key(), Opening::event("e"), T0 + 1).await;
    assert!(
        matches!(refused, Err(StoreError::Full { max: 2 })),
        "{refused:?}"
    );
    assert_eq!(
        store.count().await.unwrap(),
        2,
        "the refused one takes no room"
    );

    // Both conversations go on: a second call, a state change, and the final answer.
    let s = store.begin(a, Opening::event("e"), T0 + 2).await.unwrap();
    assert_eq!(s.attempt, 2);
    let step = Update {
        state: Some(Some(Bytes::from_static(br#"{"step":2}"#))),
        finished: None,
        said: None,
    };
    assert!(matches!(
        store.commit(a, s.version, step, T0 + 2).await.unwrap(),
        Commit::Saved
    ));
    let s = store.begin(b, Opening::event("e"), T0 + 3).await.unwrap();
    assert!(matches!(
        store
            .commit(b, s.version, finishing(), T0 + 3)
            .await
            .unwrap(),
        Commit::Saved
    ));

    // Now one has finished, so the next new conversation takes its place.
    let c = going_on(&store, T0 + 4).await;
    assert!(!held(&store, b).await && held(&store, a).await && held(&store, c).await);
    let a_now = store.load(a).await.unwrap().unwrap();
    assert_eq!(a_now.state.as_deref(), Some(&br#"{"step":2}"#[..]));
    assert_count_is_exact(&store).await;
}

#[tokio::test]
async fn a_conversation_reborn_under_the_same_key_is_not_evicted_by_its_old_queue_item() {
    let store = MemoryStore::bounded(Duration::from_millis(1_000), 2);
    let key = finished(&store, T0).await;
    // After the TTL the same key is a new conversation that has not finished.
    let reborn = store
        .begin(key, Opening::event("e"), T0 + 2_000)
        .await
        .unwrap();
    assert_eq!(reborn.attempt, 1);
    let other = going_on(&store, T0 + 2_000).await;

    let refused = store
        .begin(fresh_key(), Opening::event("e"), T0 + 2_001)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Full { .. })),
        "{refused:?}"
    );
    assert!(held(&store, key).await && held(&store, other).await);
    assert_count_is_exact(&store).await;
}

#[tokio::test]
async fn a_finished_conversation_called_again_stays_finished_and_evictable() {
    let store = MemoryStore::bounded(DAY, 2);
    let done = finished(&store, T0).await;
    let live = going_on(&store, T0 + 1).await;
    // A duplicate replays the answer: still finished, still the one to evict.
    let again = store
        .begin(done, Opening::event("e"), T0 + 2)
        .await
        .unwrap();
    assert!(again.finished.is_some());
    let new = going_on(&store, T0 + 3).await;
    assert!(!held(&store, done).await && held(&store, live).await && held(&store, new).await);
}

#[tokio::test]
async fn sweep_forgets_the_queue_items_of_forgotten_conversations() {
    let store = MemoryStore::bounded(Duration::from_millis(1_000), 10_000);
    for i in 0..2_000 {
        finished(&store, T0 + i % 10).await;
    }
    // Duplicates keep this one alive past the others' TTL.
    let kept = finished(&store, T0).await;
    store
        .begin(kept, Opening::event("e"), T0 + 900)
        .await
        .unwrap();
    assert_eq!(store.inner.finished.len(), 2_001);

    assert_eq!(store.sweep(T0 + 1_600), 2_000);
    assert_eq!(
        store.inner.finished.len(),
        1,
        "only the conversation still held is queued"
    );
    assert_count_is_exact(&store).await;
    // And it is still the one evicted at the cap.
    let small = MemoryStore::bounded(DAY, 1);
    let first = finished(&small, T0).await;
    small.sweep(T0 + 1);
    going_on(&small, T0 + 2).await;
    assert!(!held(&small, first).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_conversations_never_go_past_the_cap() {
    const MAX: usize = 64;
    let store = MemoryStore::bounded(DAY, MAX);
    let live: Vec<ConversationKey> = {
        let mut keys = Vec::new();
        for _ in 0..MAX / 2 {
            keys.push(going_on(&store, T0).await);
        }
        keys
    };
    let mut tasks = JoinSet::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut full = 0;
            for i in 0..200u64 {
                let key = fresh_key();
                let now = T0 + t * 1_000 + i;
                match store.begin(key, Opening::event("e"), now).await {
                    // Half of them finish, so there is room to make, and races on it.
                    Ok(s) if i % 2 == 0 => {
                        store
                            .commit(key, s.version, finishing(), now)
                            .await
                            .unwrap();
                    }
                    Ok(_) => {}
                    Err(StoreError::Full { .. }) => full += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            full
        });
    }
    while let Some(full) = tasks.join_next().await {
        full.unwrap();
    }
    assert!(store.count().await.unwrap() <= MAX as u64);
    assert_count_is_exact(&store).await;
    for key in live {
        assert!(
            held(&store, key).await,
            "a conversation going on was evicted"
        );
    }
}

/// GATEWAY.md 7: what many conversations have in common is kept once, not per conversation.
#[tokio::test]
async fn conversations_of_one_till_share_their_origin_and_their_last_words() {
    use crate::conversation::{Said, Till};
    use crate::telemetry::Outcome;
    let store = MemoryStore::new(DAY);
    let opening = Opening {
        event: "addSessionLine",
        subscription: "shop",
        till: Till {
            branch: Some(12),
            workplace: Some(3),
        },
    };
    let mut seen = Vec::new();
    // Enough keys that several land in one shard.
    for i in 0..256 {
        let key = fresh_key();
        let s = store.begin(key, opening, T0 + i).await.unwrap();
        let said = Update::said(Said::new(Outcome::KeepPolling, "ID check", ""));
        store.commit(key, s.version, said, T0 + i).await.unwrap();
        seen.push(store.load(key).await.unwrap().unwrap());
    }
    let shared = |a: &crate::conversation::Snapshot, b: &crate::conversation::Snapshot| {
        std::sync::Arc::ptr_eq(&a.origin, &b.origin)
            && std::sync::Arc::ptr_eq(a.said.as_ref().unwrap(), b.said.as_ref().unwrap())
    };
    let sharing = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| seen[..*i].iter().any(|t| shared(s, t)))
        .count();
    // 256 conversations over 64 shards: all but one a shard share a copy.
    assert!(sharing >= 256 - 64, "only {sharing} share");
}
