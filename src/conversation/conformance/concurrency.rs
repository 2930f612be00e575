//! Checks that concurrent calls on one conversation lose no attempt and no update.

use std::collections::BTreeSet;

use tokio::task::JoinSet;

use super::{fresh_key, state, T0};
use crate::conversation::{Commit, ConversationStore, Opening, Update};

pub(super) async fn concurrent_begins_lose_no_attempt<S: ConversationStore + Clone>(store: &S) {
    const TASKS: u32 = 40;
    let key = fresh_key();
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .begin(key, Opening::event("e"), T0 + u64::from(i))
                .await
        });
    }
    let mut seen = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        seen.insert(result.unwrap().unwrap().attempt);
    }
    assert_eq!(
        seen,
        (1..=TASKS).collect(),
        "every call saw its own attempt number"
    );
    assert_eq!(store.load(key).await.unwrap().unwrap().attempt, TASKS);
}

pub(super) async fn concurrent_commit_loops_lose_no_update<S: ConversationStore + Clone>(
    store: &S,
) {
    const TASKS: u64 = 8;
    const EACH: u64 = 5;
    let key = fresh_key();
    store.begin(key, Opening::event("e"), T0).await.unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..EACH {
                let mut current = store.load(key).await.unwrap().unwrap();
                loop {
                    let counter = current.state.as_deref().map_or(0, |s| {
                        serde_json::from_slice::<serde_json::Value>(s).unwrap()["n"]
                            .as_u64()
                            .unwrap()
                    });
                    let next = serde_json::json!({ "n": counter + 1 }).to_string();
                    let update = Update {
                        state: state(&next),
                        finished: None,
                        said: None,
                    };
                    match store
                        .commit(key, current.version, update, T0)
                        .await
                        .unwrap()
                    {
                        Commit::Saved => break,
                        Commit::Conflict(newer) => {
                            assert!(newer.version > current.version);
                            conflicts += 1;
                            current = newer;
                        }
                    }
                }
            }
            conflicts
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let s = store.load(key).await.unwrap().unwrap();
    let expected = TASKS * EACH;
    assert_eq!(s.version, expected);
    let state: serde_json::Value = serde_json::from_slice(s.state.as_deref().unwrap()).unwrap();
    assert_eq!(
        state["n"].as_u64(),
        Some(expected),
        "no read-modify-write was lost"
    );
}
