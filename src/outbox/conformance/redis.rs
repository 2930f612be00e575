//! The suite on Redis, and what only the Redis outbox has: its key layout.

use super::{new, run};
use crate::outbox::{Outbox, RedisOutbox};
use crate::redis_connection::testing;

/// The Redis under test, or `None` (test skipped) when none answers outside CI.
async fn test_redis() -> Option<(RedisOutbox, String)> {
    let conn = testing::or_skip(Some(testing::single()), "Redis").await?;
    Some(on(conn))
}

fn on(conn: crate::redis_connection::RedisConnection) -> (RedisOutbox, String) {
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    (RedisOutbox::new(conn, &prefix), prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outbox_passes_conformance() {
    let Some((outbox, _)) = test_redis().await else {
        return;
    };
    conformance_on(&outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outbox_passes_conformance_on_a_cluster() {
    let Some(conn) = testing::or_skip(testing::cluster(), "Redis Cluster").await else {
        return;
    };
    conformance_on(&on(conn).0).await;
}

/// The suite, on upstream names of this run, cleaned up after.
async fn conformance_on(outbox: &RedisOutbox) {
    let run_id = format!("{:08x}", fastrand::u32(..));
    let names = std::sync::Mutex::new(Vec::new());
    let upstream = |name: &str| {
        let full = format!("{name}-{run_id}");
        names.lock().unwrap().push(full.clone());
        full
    };
    run(outbox, &upstream).await;
    let names = names.lock().unwrap().clone();
    for name in names {
        outbox.remove_upstream(&name).await.unwrap();
        outbox
            .remove_upstream(&format!("{name}-other"))
            .await
            .unwrap();
        outbox
            .remove_upstream(&format!("{name}-elsewhere"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn redis_outbox_keys_share_one_hash_tag_per_upstream() {
    let Some((outbox, prefix)) = test_redis().await else {
        return;
    };
    let d = new("erp", super::T0);
    outbox.enqueue(d.clone()).await.unwrap();
    let mut conn = outbox.inner_conn();
    let pattern = format!("{{{prefix}:outbox:erp}}*");
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(pattern.replace('{', "\\{").replace('}', "\\}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let tag = format!("{{{prefix}:outbox:erp}}");
    assert_eq!(
        keys,
        [
            format!("{tag}:age"),
            format!("{tag}:d:{}", d.id()),
            format!("{tag}:due"),
        ]
    );
    outbox.remove_upstream("erp").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outbox_acknowledges_concurrent_deliveries_in_few_scripts_and_all_of_them() {
    let Some((outbox, _)) = test_redis().await else {
        return;
    };
    let (up, other) = ("erp", "crm");
    for _ in 0..300 {
        outbox.enqueue(new(up, super::T0)).await.unwrap();
    }
    outbox.enqueue(new(other, super::T0)).await.unwrap();
    outbox.enqueue(new(other, super::T0)).await.unwrap();
    let mut claimed = outbox
        .claim(up, super::T0, super::LEASE, 1000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 300);
    claimed.extend(
        outbox
            .claim(other, super::T0, super::LEASE, 1)
            .await
            .unwrap(),
    );
    // Two upstreams' acknowledgements at once: each goes to its own queue.
    let calls: Vec<_> = claimed
        .into_iter()
        .map(|d| {
            let o = outbox.clone();
            tokio::spawn(async move { o.delivered(&d.upstream, d.id).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        outbox.counts(up).await.unwrap(),
        crate::outbox::Counts::default()
    );
    let left = outbox.counts(other).await.unwrap();
    assert_eq!((left.pending, left.dead), (1, 0));
    let scripts = outbox.ack_scripts();
    assert!(scripts < 100, "{scripts} scripts for 301 acknowledgements");
    // Acknowledging one again (a retried settle) is harmless.
    let again = outbox
        .claim(other, super::T0, super::LEASE, 1)
        .await
        .unwrap();
    outbox.delivered(other, again[0].id).await.unwrap();
    outbox.delivered(other, again[0].id).await.unwrap();
    assert_eq!(outbox.counts(other).await.unwrap().pending, 0);
    outbox.remove_upstream(up).await.unwrap();
    outbox.remove_upstream(other).await.unwrap();
}
