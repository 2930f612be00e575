//! Checks only the Redis store has: its TTLs, its key layout, reconnecting, and failing fast.

use std::time::Duration;

use super::{fresh_key, reply, run, T0};
use crate::conversation::{
    Commit, ConversationKey, ConversationStore, ForwardState, Opening, RedisStore, StoreError,
    Update,
};
use crate::redis_connection::testing;

/// The Redis under test, or `None` (test skipped) when none answers outside CI.
async fn test_redis(ttl: Duration) -> Option<RedisStore> {
    let conn = testing::or_skip(Some(testing::single()), "Redis").await?;
    Some(on(conn, ttl))
}

fn on(conn: crate::redis_connection::RedisConnection, ttl: Duration) -> RedisStore {
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    RedisStore::new(conn, &prefix, ttl)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_conformance_on_a_cluster() {
    let Some(conn) = testing::or_skip(testing::cluster(), "Redis Cluster").await else {
        return;
    };
    let store = on(conn, Duration::from_secs(600));
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

    store.begin(key, Opening::event("e"), T0).await.unwrap();
    assert!(fresh(pttl(&store, key).await), "after begin");
    shorten_ttl(&store, key).await;
    store.begin(key, Opening::event("e"), T0 + 1).await.unwrap();
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
    store
        .begin(key, Opening::event("addSessionLine"), T0)
        .await
        .unwrap();
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
    assert!(matches!(store.load(key).await, Err(StoreError::Corrupt(_))));
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
    assert_eq!(
        store
            .begin(key, Opening::event("e"), T0)
            .await
            .unwrap()
            .attempt,
        1
    );
    let new_id: i64 = store.query(::redis::cmd("CLIENT").arg("ID")).await.unwrap();
    assert_ne!(id, new_id, "a new connection");
    store.remove_all().await.unwrap();
}

#[tokio::test]
async fn redis_calls_fail_fast_naming_the_url_when_nobody_answers() {
    // A port that was just free: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    // A listener that never answers: the connection opens, the handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}", silent.local_addr().unwrap());
    for url in [closed_url, silent_url] {
        let server = crate::config::RedisServer {
            urls: vec![url.clone()],
            cluster: false,
            ca: None,
        };
        let conn = crate::redis_connection::RedisConnection::open(
            &server,
            "the tests",
            Duration::from_millis(300),
        )
        .unwrap();
        let store = RedisStore::new(conn, "p", Duration::from_secs(60));
        let attempt = store.begin(fresh_key(), Opening::event("e"), T0);
        let result = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .unwrap_or_else(|_| panic!("a call to {url} hung"));
        match result {
            Err(StoreError::Unavailable(why)) => {
                assert!(why.starts_with(&format!("Redis at {url}: ")), "{why}")
            }
            Err(StoreError::Timeout(t)) => assert_eq!(t, Duration::from_millis(300)),
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// Two replicas, each with its cache of snapshots: a poll nobody wrote since is answered
/// from the cache (Redis sends the count only), and every write on either replica (commit,
/// claim, renew, complete) is seen by the other's next call; a conversation made again
/// after its key went is new, not the cached one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_never_see_a_stale_snapshot_from_their_cache() {
    let Some(conn) = testing::or_skip(Some(testing::single()), "Redis").await else {
        return;
    };
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    let ttl = Duration::from_secs(600);
    let a = RedisStore::new(conn.clone(), &prefix, ttl);
    let b = RedisStore::new(conn, &prefix, ttl);
    let key = fresh_key();
    let opening = || Opening::event("startPayment");
    let state = |json: &str| Some(Some(bytes::Bytes::copy_from_slice(json.as_bytes())));
    let first = a.begin(key, opening(), T0).await.unwrap();
    assert_eq!(first.attempt, 1);
    let update = Update {
        state: state(r#"{"step":1}"#),
        ..Update::default()
    };
    assert!(matches!(
        a.commit(key, first.version, update, T0).await.unwrap(),
        Commit::Saved
    ));
    let second = a.begin(key, opening(), T0 + 1).await.unwrap();
    let hits = a.cache_hits();
    let third = a.begin(key, opening(), T0 + 2).await.unwrap();
    assert_eq!(
        a.cache_hits(),
        hits + 1,
        "nothing was written: from the cache"
    );
    assert_eq!(third.attempt, 3);
    assert_eq!(
        (third.version, &third.state),
        (second.version, &second.state)
    );

    // b commits: a's next call reads it, and its cache is right again after.
    let on_b = b.begin(key, opening(), T0 + 3).await.unwrap();
    assert_eq!(on_b.attempt, 4);
    let update = Update {
        state: state(r#"{"step":2}"#),
        ..Update::default()
    };
    assert!(matches!(
        b.commit(key, on_b.version, update, T0 + 3).await.unwrap(),
        Commit::Saved
    ));
    let fifth = a.begin(key, opening(), T0 + 4).await.unwrap();
    assert_eq!(fifth.attempt, 5);
    assert_eq!(fifth.state.as_deref(), Some(&br#"{"step":2}"#[..]));
    assert_eq!(fifth.version, on_b.version + 1);

    // Forwards: b's claim, renewal and reply each show on a's next call.
    assert!(b.claim_forward(key, "erp", T0, T0 + 100).await.unwrap());
    assert_eq!(
        super::lease_of(&a.begin(key, opening(), T0 + 5).await.unwrap(), "erp"),
        Some(T0 + 100)
    );
    assert!(b.renew_forward(key, "erp", T0 + 900).await.unwrap());
    assert_eq!(
        super::lease_of(&a.begin(key, opening(), T0 + 6).await.unwrap(), "erp"),
        Some(T0 + 900)
    );
    b.complete_forward(key, "erp", &reply()).await.unwrap();
    let done = a.begin(key, opening(), T0 + 7).await.unwrap();
    assert!(matches!(done.forward("erp"), Some(ForwardState::Done(r)) if **r == reply()));
    let hits = a.cache_hits();
    let again = a.begin(key, opening(), T0 + 8).await.unwrap();
    assert_eq!(a.cache_hits(), hits + 1);
    assert!(matches!(again.forward("erp"), Some(ForwardState::Done(_))));

    // The key gone (expired) and the conversation begun again: a new one.
    let _: i64 = a
        .query(::redis::cmd("DEL").arg(a.key_name(key)))
        .await
        .unwrap();
    let anew = a.begin(key, opening(), T0 + 9).await.unwrap();
    assert_eq!((anew.attempt, anew.version, anew.state), (1, 0, None));
    assert!(anew.forwards.is_empty());
    a.remove_all().await.unwrap();
}
