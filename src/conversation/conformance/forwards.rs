//! Checks of forward leases: claimed once, renewed, completed, expired.

use tokio::task::JoinSet;

use super::{fresh_key, lease_of, reply, T0};
use crate::conversation::{ConversationKey, ConversationStore, ForwardState, Opening, Reply};

pub(super) async fn forward_is_claimed_once_by_concurrent_claimers<S: ConversationStore + Clone>(
    store: &S,
) {
    let key = fresh_key();
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.claim_forward(key, "backend", T0, T0 + 10_000).await });
    }
    let mut won = 0;
    while let Some(result) = tasks.join_next().await {
        won += usize::from(result.unwrap().unwrap());
    }
    assert_eq!(won, 1, "exactly one of 20 concurrent claimers wins");
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!(lease_of(&s, "backend"), Some(T0 + 10_000));
    assert_eq!(s.pending().collect::<Vec<_>>(), ["backend"]);
}

pub(super) async fn forward_is_claimed_again_only_after_lease_expires<S: ConversationStore>(
    store: &S,
) {
    let key = fresh_key();
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    let claim = |now, until| store.claim_forward(key, "backend", now, until);
    assert!(claim(T0, T0 + 1_000).await.unwrap());
    assert!(
        !claim(T0 + 999, T0 + 5_000).await.unwrap(),
        "lease still held"
    );
    assert!(
        claim(T0 + 1_000, T0 + 3_000).await.unwrap(),
        "lease ran out"
    );
    assert!(
        !claim(T0 + 2_000, T0 + 9_000).await.unwrap(),
        "the new lease holds"
    );
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!(lease_of(&s, "backend"), Some(T0 + 3_000));
    // Another upstream of the same conversation has its own lease.
    assert!(store
        .claim_forward(key, "audit", T0 + 2_000, T0 + 4_000)
        .await
        .unwrap());
}

pub(super) async fn renewed_lease_keeps_others_from_claiming<S: ConversationStore>(store: &S) {
    let key = with_claimed_backend(store).await;
    assert!(store
        .renew_forward(key, "backend", T0 + 5_000)
        .await
        .unwrap());
    assert!(
        !store
            .claim_forward(key, "backend", T0 + 2_000, T0 + 9_000)
            .await
            .unwrap(),
        "the renewed lease holds past the first one"
    );
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!(lease_of(&s, "backend"), Some(T0 + 5_000));
    let reply = Reply::answered(200, serde_json::json!({}), 1);
    store
        .complete_forward(key, "backend", &reply)
        .await
        .unwrap();
    assert!(
        !store
            .renew_forward(key, "backend", T0 + 9_000)
            .await
            .unwrap(),
        "a done forward is not renewed"
    );
    assert!(
        !store.renew_forward(key, "other", T0 + 9_000).await.unwrap(),
        "nothing to renew"
    );
    assert!(!store
        .renew_forward(fresh_key(), "backend", T0 + 9_000)
        .await
        .unwrap());
}

pub(super) async fn completed_forward_is_done_with_identical_reply<S: ConversationStore>(
    store: &S,
) {
    let key = with_claimed_backend(store).await;
    assert!(store
        .claim_forward(key, "audit", T0, T0 + 1_000)
        .await
        .unwrap());
    let sent = reply();
    store.complete_forward(key, "backend", &sent).await.unwrap();
    let s = store.load(key).await.unwrap().unwrap();
    match s.forward("backend") {
        Some(ForwardState::Done(got)) => assert_eq!(**got, sent),
        other => panic!("expected Done, got {other:?}"),
    }
    assert_eq!(s.pending().collect::<Vec<_>>(), ["audit"]);
    assert_eq!(s.forwards.len(), 2);
    assert!(
        !store
            .claim_forward(key, "backend", T0 + 100_000, T0 + 200_000)
            .await
            .unwrap(),
        "a forward with a reply is never sent again"
    );
    let failed = Reply::failed("connect timeout".into(), 10_000);
    store.complete_forward(key, "audit", &failed).await.unwrap();
    let s = store.load(key).await.unwrap().unwrap();
    assert!(matches!(s.forward("audit"), Some(ForwardState::Done(r)) if **r == failed));
    assert_eq!(s.pending().count(), 0);
}

pub(super) async fn forwards_of_unknown_conversation_are_not_recorded<S: ConversationStore>(
    store: &S,
) {
    let key = fresh_key();
    assert!(!store
        .claim_forward(key, "backend", T0, T0 + 1_000)
        .await
        .unwrap());
    store
        .complete_forward(key, "backend", &reply())
        .await
        .unwrap();
    assert!(
        store.load(key).await.unwrap().is_none(),
        "nothing is created"
    );
}

/// A new conversation whose forward to `backend` is claimed at `T0` until `T0 + 1_000`.
async fn with_claimed_backend<S: ConversationStore>(store: &S) -> ConversationKey {
    let key = fresh_key();
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    assert!(store
        .claim_forward(key, "backend", T0, T0 + 1_000)
        .await
        .unwrap());
    key
}
