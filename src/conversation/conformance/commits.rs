//! Checks of counting calls, the compare-and-set commit and the final answer.

use bytes::Bytes;

use super::{fresh_key, state, T0};
use crate::conversation::{Commit, ConversationStore, FinalAnswer, Opening, Update};

pub(super) async fn load_without_begin_is_none<S: ConversationStore>(store: &S) {
    assert!(store.load(fresh_key()).await.unwrap().is_none());
}

pub(super) async fn begin_counts_attempts_and_keeps_first_seen<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    for (attempt, now) in [(1, T0), (2, T0 + 1_000), (3, T0 + 2_500)] {
        let s = store
            .begin(key, Opening::event("addSessionLine"), now)
            .await
            .unwrap();
        assert_eq!(s.attempt, attempt);
        assert_eq!(s.first_seen_ms, T0, "first_seen stays at the first call");
        assert_eq!(s.version, 0, "begin does not bump the version");
        assert!(s.state.is_none() && s.finished.is_none() && s.forwards.is_empty());
    }
    let loaded = store.load(key).await.unwrap().unwrap();
    assert_eq!(loaded.attempt, 3, "load does not count a call");
}

pub(super) async fn commit_with_current_version_saves_state_and_answer<S: ConversationStore>(
    store: &S,
) {
    let key = fresh_key();
    let s = store.begin(key, Opening::event("e"), T0).await.unwrap();
    let update = Update {
        state: state(r#"{"step":1}"#),
        finished: None,
        said: None,
    };
    assert!(matches!(
        store.commit(key, s.version, update, T0 + 1).await.unwrap(),
        Commit::Saved
    ));
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(s.state.as_deref(), Some(&br#"{"step":1}"#[..]));
    assert!(s.finished.is_none());

    let answer = FinalAnswer {
        status: 200,
        body: Bytes::from_static(br#"{"finished":true}"#),
    };
    let update = Update {
        state: state(r#"{"step":2}"#),
        finished: Some(answer.clone()),
        said: None,
    };
    assert!(matches!(
        store.commit(key, 1, update, T0 + 2).await.unwrap(),
        Commit::Saved
    ));
    let s = store.begin(key, Opening::event("e"), T0 + 3).await.unwrap();
    assert_eq!((s.version, s.attempt), (2, 2));
    assert_eq!(s.state.as_deref(), Some(&br#"{"step":2}"#[..]));
    assert_eq!(s.finished, Some(answer));
}

pub(super) async fn commit_without_state_leaves_it_and_empty_state_clears_it<
    S: ConversationStore,
>(
    store: &S,
) {
    let key = fresh_key();
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    let set = Update {
        state: state("{\"a\":1}"),
        finished: None,
        said: None,
    };
    store.commit(key, 0, set, T0).await.unwrap();
    store.commit(key, 1, Update::default(), T0).await.unwrap();
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!(
        (s.version, s.state.as_deref()),
        (2, Some(&b"{\"a\":1}"[..]))
    );
    let clear = Update {
        state: Some(None),
        finished: None,
        said: None,
    };
    store.commit(key, 2, clear, T0).await.unwrap();
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!((s.version, s.state), (3, None));
}

pub(super) async fn stale_commit_conflicts_with_newer_snapshot<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    let first = store.begin(key, Opening::event("e"), T0).await.unwrap();
    let second = store.begin(key, Opening::event("e"), T0 + 1).await.unwrap();
    let winner = Update {
        state: state(r#"{"by":"second"}"#),
        finished: None,
        said: None,
    };
    let saved = store
        .commit(key, second.version, winner, T0 + 2)
        .await
        .unwrap();
    assert!(matches!(saved, Commit::Saved));

    let loser = Update {
        state: state(r#"{"by":"first"}"#),
        finished: Some(FinalAnswer {
            status: 500,
            body: Bytes::from_static(b"stale"),
        }),
        said: None,
    };
    let Commit::Conflict(newer) = store
        .commit(key, first.version, loser, T0 + 3)
        .await
        .unwrap()
    else {
        panic!("a stale version must conflict");
    };
    assert_eq!(newer.version, 1);
    assert_eq!(newer.attempt, 2);
    assert_eq!(newer.state.as_deref(), Some(&br#"{"by":"second"}"#[..]));
    assert!(newer.finished.is_none(), "the stale write is not applied");
    let now = store.load(key).await.unwrap().unwrap();
    assert_eq!(now.version, 1);
    assert_eq!(now.state, newer.state);
    assert!(now.finished.is_none());
}

pub(super) async fn commit_on_unknown_conversation_fails<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    let result = store.commit(key, 0, Update::default(), T0).await;
    assert!(result.is_err(), "a commit on an unknown conversation fails");
    // Not even a commit carrying state and a final answer may bring one into being.
    let update = Update {
        state: state(r#"{"n":1}"#),
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        }),
        said: None,
    };
    let result = store.commit(key, 0, update, T0 + 1).await;
    assert!(result.is_err(), "a commit on an unknown conversation fails");
    let left = store.load(key).await;
    assert!(
        matches!(left, Ok(None)),
        "a commit never creates a conversation, not even part of one: {left:?}"
    );
    let created = store.begin(key, Opening::event("e"), T0 + 2).await.unwrap();
    assert_eq!(
        (created.attempt, created.version),
        (1, 0),
        "the first begin finds nothing left by the failed commits"
    );
    assert!(created.state.is_none() && created.finished.is_none());
}

pub(super) async fn final_answer_comes_back_byte_for_byte<S: ConversationStore>(store: &S) {
    let mut body = b"{\"message\":\"caf\xc3\xa9\"}\r\n\0".to_vec();
    body.extend((0..=255u8).rev());
    body.extend_from_slice(b":12:"); // colons after the status must survive too
    for (status, body) in [(200, Bytes::from(body)), (503, Bytes::new())] {
        let key = fresh_key();
        store.begin(key, Opening::event("e"), T0).await.unwrap();
        let answer = FinalAnswer { status, body };
        let update = Update {
            state: None,
            finished: Some(answer.clone()),
            said: None,
        };
        store.commit(key, 0, update, T0).await.unwrap();
        let again = store.begin(key, Opening::event("e"), T0 + 1).await.unwrap();
        assert_eq!(again.finished, Some(answer));
        assert!(again.state.is_none());
    }
}
