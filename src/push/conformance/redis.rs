//! The suite on Redis with two handles (two replicas), and what only the Redis mailbox
//! has: its key layout.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::{body, run, till, T0, TTL};
use crate::config::RedisServer;
use crate::push::{PushMailbox, RedisMailbox, Wakers};
use crate::redis_connection::testing;

/// A mailbox on the tests' Redis (or `cluster`), or `None` after saying the test is skipped.
async fn on(server: Option<RedisServer>, prefix: &str) -> Option<RedisMailbox> {
    let what = if server.as_ref().is_none_or(|s| s.cluster) {
        "Redis Cluster"
    } else {
        "Redis"
    };
    testing::or_skip(server.clone(), what).await?;
    let server = server?;
    let wakers = Wakers::new(Gauge::default());
    let mailbox = RedisMailbox::connect(&server, prefix, Duration::from_secs(2), wakers);
    Some(mailbox.await.expect("a mailbox on an answering Redis"))
}

async fn test_redis(prefix: &str) -> Option<RedisMailbox> {
    on(Some(testing::single()), prefix).await
}

fn prefix() -> String {
    format!("pollgate-test-{:016x}", fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mailbox_passes_conformance_across_two_replicas() {
    let prefix = prefix();
    let (Some(a), Some(b)) = (test_redis(&prefix).await, test_redis(&prefix).await) else {
        return;
    };
    run(&a, &b).await;
    a.remove_all().await.unwrap();
    assert_eq!(a.sweep(T0).await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mailbox_passes_conformance_across_two_replicas_on_a_cluster() {
    let prefix = prefix();
    let Some(a) = on(testing::cluster(), &prefix).await else {
        return;
    };
    let Some(b) = on(testing::cluster(), &prefix).await else {
        return;
    };
    run(&a, &b).await;
    a.remove_all().await.unwrap();
    assert_eq!(a.sweep(T0).await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_tills_messages_sit_under_one_hash_tag_and_expire_with_the_newest() {
    let prefix = prefix();
    let Some(mailbox) = test_redis(&prefix).await else {
        return;
    };
    let t = till();
    mailbox.push(&t, body(1), T0, T0 + TTL).await.unwrap();
    let key = mailbox.key_of(&t);
    assert_eq!(key, format!("{{{prefix}:push:{}}}:q", t.tag()));
    let mut conn = mailbox.conn();
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= TTL as i64, "{ttl}");
    mailbox.remove_all().await.unwrap();
}
