//! One suite every [`ConversationStore`] must pass (STYLE.md 6), run against the memory
//! store always and against Redis when one answers.
//!
//! Each check uses fresh random keys, so checks (and parallel runs sharing a Redis) never
//! see each other's conversations. Time is passed in as `now_ms`; nothing sleeps.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::{
    Commit, ConversationKey, ConversationStore, FinalAnswer, ForwardState, MemoryStore, RedisStore,
    Reply, Snapshot, Update,
};

/// A point in time the checks count from (ms); Redis TTLs run on the server's own clock.
const T0: u64 = 1_700_000_000_000;

/// Runs every check against `store`.
pub(crate) async fn run<S: ConversationStore + Clone>(store: &S) {
    load_without_begin_is_none(store).await;
    begin_counts_attempts_and_keeps_first_seen(store).await;
    commit_with_current_version_saves_state_and_answer(store).await;
    commit_without_state_leaves_it_and_empty_state_clears_it(store).await;
    stale_commit_conflicts_with_newer_snapshot(store).await;
    commit_on_unknown_conversation_fails(store).await;
    final_answer_comes_back_byte_for_byte(store).await;
    forward_is_claimed_once_by_concurrent_claimers(store).await;
    forward_is_claimed_again_only_after_lease_expires(store).await;
    renewed_lease_keeps_others_from_claiming(store).await;
    completed_forward_is_done_with_identical_reply(store).await;
    forwards_of_unknown_conversation_are_not_recorded(store).await;
    concurrent_begins_lose_no_attempt(store).await;
    concurrent_commit_loops_lose_no_update(store).await;
    list_and_count_see_conversations_newest_first(store).await;
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

async fn load_without_begin_is_none<S: ConversationStore>(store: &S) {
    assert!(store.load(fresh_key()).await.unwrap().is_none());
}

async fn begin_counts_attempts_and_keeps_first_seen<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    for (attempt, now) in [(1, T0), (2, T0 + 1_000), (3, T0 + 2_500)] {
        let s = store.begin(key, "addSessionLine", now).await.unwrap();
        assert_eq!(s.attempt, attempt);
        assert_eq!(s.first_seen_ms, T0, "first_seen stays at the first call");
        assert_eq!(s.version, 0, "begin does not bump the version");
        assert!(s.state.is_none() && s.finished.is_none() && s.forwards.is_empty());
    }
    let loaded = store.load(key).await.unwrap().unwrap();
    assert_eq!(loaded.attempt, 3, "load does not count a call");
}

async fn commit_with_current_version_saves_state_and_answer<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    let s = store.begin(key, "e", T0).await.unwrap();
    let update = Update {
        state: state(r#"{"step":1}"#),
        finished: None,
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
    };
    assert!(matches!(
        store.commit(key, 1, update, T0 + 2).await.unwrap(),
        Commit::Saved
    ));
    let s = store.begin(key, "e", T0 + 3).await.unwrap();
    assert_eq!((s.version, s.attempt), (2, 2));
    assert_eq!(s.state.as_deref(), Some(&br#"{"step":2}"#[..]));
    assert_eq!(s.finished, Some(answer));
}

async fn commit_without_state_leaves_it_and_empty_state_clears_it<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
    let set = Update {
        state: state("{\"a\":1}"),
        finished: None,
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
    };
    store.commit(key, 2, clear, T0).await.unwrap();
    let s = store.load(key).await.unwrap().unwrap();
    assert_eq!((s.version, s.state), (3, None));
}

async fn stale_commit_conflicts_with_newer_snapshot<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    let first = store.begin(key, "e", T0).await.unwrap();
    let second = store.begin(key, "e", T0 + 1).await.unwrap();
    let winner = Update {
        state: state(r#"{"by":"second"}"#),
        finished: None,
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

async fn commit_on_unknown_conversation_fails<S: ConversationStore>(store: &S) {
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
    };
    let result = store.commit(key, 0, update, T0 + 1).await;
    assert!(result.is_err(), "a commit on an unknown conversation fails");
    let left = store.load(key).await;
    assert!(
        matches!(left, Ok(None)),
        "a commit never creates a conversation, not even part of one: {left:?}"
    );
    let created = store.begin(key, "e", T0 + 2).await.unwrap();
    assert_eq!(
        (created.attempt, created.version),
        (1, 0),
        "the first begin finds nothing left by the failed commits"
    );
    assert!(created.state.is_none() && created.finished.is_none());
}

async fn final_answer_comes_back_byte_for_byte<S: ConversationStore>(store: &S) {
    let mut body = b"{\"message\":\"caf\xc3\xa9\"}\r\n\0".to_vec();
    body.extend((0..=255u8).rev());
    body.extend_from_slice(b":12:"); // colons after the status must survive too
    for (status, body) in [(200, Bytes::from(body)), (503, Bytes::new())] {
        let key = fresh_key();
        store.begin(key, "e", T0).await.unwrap();
        let answer = FinalAnswer { status, body };
        let update = Update {
            state: None,
            finished: Some(answer.clone()),
        };
        store.commit(key, 0, update, T0).await.unwrap();
        let again = store.begin(key, "e", T0 + 1).await.unwrap();
        assert_eq!(again.finished, Some(answer));
        assert!(again.state.is_none());
    }
}

async fn forward_is_claimed_once_by_concurrent_claimers<S: ConversationStore + Clone>(store: &S) {
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
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

async fn forward_is_claimed_again_only_after_lease_expires<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
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

async fn renewed_lease_keeps_others_from_claiming<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
    assert!(store
        .claim_forward(key, "backend", T0, T0 + 1_000)
        .await
        .unwrap());
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

async fn completed_forward_is_done_with_identical_reply<S: ConversationStore>(store: &S) {
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
    assert!(store
        .claim_forward(key, "backend", T0, T0 + 1_000)
        .await
        .unwrap());
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

async fn forwards_of_unknown_conversation_are_not_recorded<S: ConversationStore>(store: &S) {
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

async fn concurrent_begins_lose_no_attempt<S: ConversationStore + Clone>(store: &S) {
    const TASKS: u32 = 40;
    let key = fresh_key();
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move { store.begin(key, "e", T0 + u64::from(i)).await });
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

async fn concurrent_commit_loops_lose_no_update<S: ConversationStore + Clone>(store: &S) {
    const TASKS: u64 = 8;
    const EACH: u64 = 5;
    let key = fresh_key();
    store.begin(key, "e", T0).await.unwrap();
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

async fn list_and_count_see_conversations_newest_first<S: ConversationStore>(store: &S) {
    // Later than every other check's conversation, so these two are the newest.
    let t = T0 + 3_600_000;
    let (old, new) = (fresh_key(), fresh_key());
    store.begin(old, "orderPaid", t).await.unwrap();
    store.begin(old, "orderPaid", t + 500).await.unwrap();
    store
        .claim_forward(old, "backend", t + 500, t + 60_000)
        .await
        .unwrap();
    store.begin(new, "addSessionLine", t + 1_000).await.unwrap();
    let done = Update {
        state: None,
        finished: Some(FinalAnswer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        }),
    };
    store.commit(new, 0, done, t + 1_000).await.unwrap();

    assert!(store.count().await.unwrap() >= 2);
    let now = t + 2_000;
    let all = store.list(now, 10_000).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].age_ms <= w[1].age_ms),
        "newest first"
    );
    let find = |key: ConversationKey| {
        let hex = key.to_string();
        all.iter().position(|s| s.key == hex).expect("listed")
    };
    let (o, n) = (&all[find(old)], &all[find(new)]);
    assert!(find(new) < find(old));
    assert_eq!(
        (o.event.as_str(), o.attempts, o.finished),
        ("orderPaid", 2, false)
    );
    assert_eq!((o.age_ms, o.idle_ms), (2_000, 1_500));
    assert_eq!(o.pending_forwards, ["backend"]);
    assert_eq!(
        (n.event.as_str(), n.attempts, n.finished),
        ("addSessionLine", 1, true)
    );
    assert!(n.pending_forwards.is_empty());

    let top = store.list(now, 1).await.unwrap();
    assert_eq!(top.len(), 1, "limit is respected");
    assert_eq!(top[0].key, new.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_conformance() {
    run(&MemoryStore::new(Duration::from_secs(24 * 3600))).await;
}

#[tokio::test]
async fn memory_store_forgets_conversations_after_ttl() {
    let store = MemoryStore::new(Duration::from_millis(1_000));
    let (key, other) = (fresh_key(), fresh_key());
    store.begin(key, "e", T0).await.unwrap();
    store.begin(other, "e", T0 + 500).await.unwrap();
    assert_eq!(store.sweep(T0 + 999), 0);
    assert_eq!(store.sweep(T0 + 1_000), 1, "idle for a whole TTL");
    assert!(store.load(key).await.unwrap().is_none());
    assert_eq!(store.count().await.unwrap(), 1);
    // A call after the TTL starts a new conversation, even before a sweep.
    let s = store.begin(other, "e", T0 + 1_500).await.unwrap();
    assert_eq!((s.attempt, s.first_seen_ms), (1, T0 + 1_500));
}

/// The Redis under test, or `None` (test skipped) when none answers outside CI.
async fn test_redis(ttl: Duration) -> Option<RedisStore> {
    let url = std::env::var("POLLGATE_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    match RedisStore::connect(&url, &prefix, ttl, Duration::from_secs(2)).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but there is no Redis at {url} (set POLLGATE_TEST_REDIS): {e}")
        }
        Err(e) => {
            // Straight to the process's stderr: the test harness captures `eprintln!` of a
            // passing test, and a skip nobody sees is a pass nobody earned.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: no Redis at {url} ({e})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_conformance() {
    // Keys carry a 10-minute TTL, so even a failed run cleans up after itself.
    let Some(store) = test_redis(Duration::from_secs(600)).await else {
        return;
    };
    run(&store).await;
    assert!(store.remove_all().await.unwrap() > 0);
    assert_eq!(store.count().await.unwrap(), 0);
}

async fn pttl(store: &RedisStore, key: ConversationKey) -> i64 {
    store
        .query(::redis::cmd("PTTL").arg(store.key_name(key)))
        .await
        .unwrap()
}

/// Shortens the key's TTL, so the next write can be seen to refresh it.
async fn shorten_ttl(store: &RedisStore, key: ConversationKey) {
    let set: i64 = store
        .query(::redis::cmd("PEXPIRE").arg(store.key_name(key)).arg(5_000))
        .await
        .unwrap();
    assert_eq!(set, 1);
}

#[tokio::test]
async fn redis_every_write_refreshes_the_ttl() {
    const TTL_MS: i64 = 600_000;
    let Some(store) = test_redis(Duration::from_secs(600)).await else {
        return;
    };
    let key = fresh_key();
    let fresh = |ms: i64| ms > 5_000 && ms <= TTL_MS;

    store.begin(key, "e", T0).await.unwrap();
    assert!(fresh(pttl(&store, key).await), "after begin");
    shorten_ttl(&store, key).await;
    store.begin(key, "e", T0 + 1).await.unwrap();
    assert!(fresh(pttl(&store, key).await), "after a second begin");

    shorten_ttl(&store, key).await;
    store
        .commit(key, 0, Update::default(), T0 + 2)
        .await
        .unwrap();
    assert!(fresh(pttl(&store, key).await), "after commit");

    shorten_ttl(&store, key).await;
    assert!(store.claim_forward(key, "b", T0, T0 + 1).await.unwrap());
    assert!(fresh(pttl(&store, key).await), "after claim_forward");

    shorten_ttl(&store, key).await;
    store.complete_forward(key, "b", &reply()).await.unwrap();
    assert!(fresh(pttl(&store, key).await), "after complete_forward");

    // A refused claim, a stale commit and a load write nothing, and the key keeps a TTL.
    store.claim_forward(key, "b", T0, T0 + 1).await.unwrap();
    store.commit(key, 0, Update::default(), T0).await.unwrap();
    store.load(key).await.unwrap();
    assert!(pttl(&store, key).await > 0);

    // Writes to a missing conversation create no key (which would have no TTL).
    let gone = fresh_key();
    store.claim_forward(gone, "b", T0, T0 + 1).await.unwrap();
    store.complete_forward(gone, "b", &reply()).await.unwrap();
    assert_eq!(pttl(&store, gone).await, -2, "no key");
    store.remove_all().await.unwrap();
}

#[tokio::test]
async fn redis_keys_follow_the_documented_layout() {
    let Some(store) = test_redis(Duration::from_secs(600)).await else {
        return;
    };
    let key = fresh_key();
    store.begin(key, "addSessionLine", T0).await.unwrap();
    let name = store.key_name(key);
    assert!(name.starts_with("pollgate-test-") && name.ends_with(&format!(":conv:{key}")));
    let kind: String = store.query(::redis::cmd("TYPE").arg(&name)).await.unwrap();
    assert_eq!(kind, "hash");
    let event: String = store
        .query(::redis::cmd("HGET").arg(&name).arg("ev"))
        .await
        .unwrap();
    assert_eq!(event, "addSessionLine");

    // A field that does not decode is reported as corrupt, not as a panic or a default.
    let _: i64 = store
        .query(::redis::cmd("HSET").arg(&name).arg("v").arg("not a number"))
        .await
        .unwrap();
    assert!(matches!(
        store.load(key).await,
        Err(super::StoreError::Corrupt(_))
    ));
    store.remove_all().await.unwrap();
}

#[tokio::test]
async fn redis_store_reconnects_after_losing_its_connection() {
    let Some(store) = test_redis(Duration::from_secs(600)).await else {
        return;
    };
    let id: i64 = store.query(::redis::cmd("CLIENT").arg("ID")).await.unwrap();
    // Redis answers OK and then closes this very connection.
    let _: ::redis::Value = store
        .query(
            ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .arg("SKIPME")
                .arg("no"),
        )
        .await
        .unwrap();
    // The command that finds the connection dead may fail; a later one must not.
    let mut answered = false;
    for _ in 0..5 {
        if store.ping().await.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the store reconnected");
    let key = fresh_key();
    assert_eq!(store.begin(key, "e", T0).await.unwrap().attempt, 1);
    let new_id: i64 = store.query(::redis::cmd("CLIENT").arg("ID")).await.unwrap();
    assert_ne!(id, new_id, "a new connection");
    store.remove_all().await.unwrap();
}

#[tokio::test]
async fn redis_connect_fails_fast_when_nobody_answers() {
    // A port that was just free: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    // A listener that never answers: the connection opens, the handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}", silent.local_addr().unwrap());
    for url in [closed_url, silent_url] {
        let attempt = RedisStore::connect(
            &url,
            "p",
            Duration::from_secs(60),
            Duration::from_millis(300),
        );
        let result = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .unwrap_or_else(|_| panic!("connect to {url} hung"));
        assert!(
            matches!(result, Err(super::StoreError::Unavailable(_))),
            "{url}: {result:?}"
        );
    }
}
