//! The suite on Redis with two handles (two replicas), and what only the Redis mailbox
//! has: its key layout.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::{body, run, till, T0, TTL};
use crate::push::{PushMailbox, RedisMailbox, Wakers};

async fn test_redis(prefix: &str) -> Option<RedisMailbox> {
    let url = std::env::var("POLLGATE_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let wakers = Wakers::new(Gauge::default());
    match RedisMailbox::connect(&url, prefix, Duration::from_secs(2), wakers).await {
        Ok(mailbox) => Some(mailbox),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but there is no Redis at {url} (set POLLGATE_TEST_REDIS): {e}")
        }
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: no Redis at {url} ({e})");
            None
        }
    }
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
