//! One suite every [`ConversationStore`] must pass (STYLE.md 6), run against the memory
//! store always and against Redis when one answers.
//!
//! Each check uses fresh random keys, so checks (and parallel runs sharing a Redis) never
//! see each other's conversations. Time is passed in as `now_ms`; nothing sleeps.

#![allow(clippy::unwrap_used)]

mod commits;
mod concurrency;
mod forwards;
mod listing;
mod redis;

use std::time::Duration;

use bytes::Bytes;

use super::{
    ConversationKey, ConversationStore, ForwardState, MemoryStore, Opening, Reply, Snapshot,
};

/// A point in time the checks count from (ms); Redis TTLs run on the server's own clock.
const T0: u64 = 1_700_000_000_000;

/// Runs every check against `store`.
pub(crate) async fn run<S: ConversationStore + Clone>(store: &S) {
    commits::load_without_begin_is_none(store).await;
    commits::begin_counts_attempts_and_keeps_first_seen(store).await;
    commits::commit_with_current_version_saves_state_and_answer(store).await;
    commits::commit_without_state_leaves_it_and_empty_state_clears_it(store).await;
    commits::stale_commit_conflicts_with_newer_snapshot(store).await;
    commits::commit_on_unknown_conversation_fails(store).await;
    commits::final_answer_comes_back_byte_for_byte(store).await;
    forwards::forward_is_claimed_once_by_concurrent_claimers(store).await;
    forwards::forward_is_claimed_again_only_after_lease_expires(store).await;
    forwards::renewed_lease_keeps_others_from_claiming(store).await;
    forwards::completed_forward_is_done_with_identical_reply(store).await;
    forwards::forwards_of_unknown_conversation_are_not_recorded(store).await;
    concurrency::concurrent_begins_lose_no_attempt(store).await;
    concurrency::concurrent_commit_loops_lose_no_update(store).await;
    listing::list_and_count_see_conversations_newest_first(store).await;
    listing::origin_and_last_decision_are_kept_read_and_listed(store).await;
    listing::active_counts_only_unfinished_conversations(store).await;
    store.ping().await.expect("ping");
}

pub(crate) fn fresh_key() -> ConversationKey {
    ConversationKey::from_hex(&format!("{:032x}", fastrand::u128(..))).unwrap()
}

fn state(json: &str) -> Option<Option<Bytes>> {
    Some(Some(Bytes::copy_from_slice(json.as_bytes())))
}

fn reply() -> Reply {
    let body = serde_json::json!({"orderId": "A-1", "lines": [1, 2.5, null], "nested": {"é": "ü"}});
    Reply::answered(201, body, 42)
}

fn lease_of(snapshot: &Snapshot, upstream: &str) -> Option<u64> {
    match snapshot.forward(upstream) {
        Some(ForwardState::Pending { lease_until_ms }) => Some(*lease_until_ms),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_conformance() {
    run(&MemoryStore::new(Duration::from_secs(24 * 3600))).await;
}

#[tokio::test]
async fn memory_store_forgets_conversations_after_ttl() {
    let store = MemoryStore::new(Duration::from_millis(1_000));
    let (key, other) = (fresh_key(), fresh_key());
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    store
        .begin(other, Opening::event("e"), T0 + 500)
        .await
        .unwrap();
    assert_eq!(store.sweep(T0 + 999), 0);
    assert_eq!(store.sweep(T0 + 1_000), 1, "idle for a whole TTL");
    assert!(store.load(key).await.unwrap().is_none());
    assert_eq!(store.count().await.unwrap(), 1);
    // A call after the TTL starts a new conversation, even before a sweep.
    let s = store
        .begin(other, Opening::event("e"), T0 + 1_500)
        .await
        .unwrap();
    assert_eq!((s.attempt, s.first_seen_ms), (1, T0 + 1_500));
}
