//! Durable delivery across process deaths (GATEWAY.md 8), with the real binary: a backlog
//! survives `kill -9` and is delivered after a restart over the same outbox; SIGTERM lets
//! deliveries in flight finish or leaves them queued, sending none twice; on Redis, a
//! replica killed mid-delivery has its deliveries taken over after the lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{client, closed_port, complete_session, eventually, MockReply, MockUpstream, Process};
use serde_json::{json, Value};

fn durable_config(url: &str, extra: &str) -> String {
    format!(
        "{extra}upstreams:\n  erp:\n    url: {url}\n    timeout: 2s\n    durable: {{backoff: {{min: 100ms, max: 300ms}}, lease: 1s}}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    )
}

async fn deliveries(admin: &str) -> Vec<Value> {
    let r = client()
        .get(format!("http://{admin}/deliveries?limit=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_slice::<Value>(&r.bytes().await.unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Sends `range`'s completeSession calls to `p` at once; each answered `200 {}`.
async fn queue(p: &Process, range: std::ops::Range<u32>) {
    let calls: Vec<_> = range
        .map(|n| {
            let till = p.till();
            tokio::spawn(async move {
                till.call_json("completeSession", &complete_session(n))
                    .await
            })
        })
        .collect();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"{}"[..]));
        assert!(answer.is_signed());
    }
}

fn keys(erp: &MockUpstream) -> HashSet<String> {
    erp.requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_survives_kill_9_and_is_delivered_after_the_restart() {
    const N: u32 = 100;
    let down = closed_port().await;
    let config = durable_config(&format!("http://{down}/mplus"), "outbox:\n  path: outbox\n");
    let p = Process::serve_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    queue(&p, 0..N).await;
    assert_eq!(deliveries(&p.admin).await.len(), N as usize, "{}", p.log());
    p.signal("KILL");
    let (code, dir) = p.exit().await;
    assert_eq!(code, None, "killed by a signal");

    let erp = MockUpstream::start_at(down, |_| MockReply::json(200, json!({}))).await;
    let p = Process::serve_in(dir, &config, &[], true).await;
    eventually("every queued event delivered", || async {
        (keys(&erp).len() == N as usize).then_some(())
    })
    .await;
    eventually("nothing left pending", || async {
        deliveries(&p.admin).await.is_empty().then_some(())
    })
    .await;
    assert!(erp.count() >= N as usize);
}

/// Polls until `p`'s `/readyz` no longer answers 200 (shutdown has begun).
async fn until_unready(p: &Process) {
    let url = format!("http://{}/readyz", p.admin);
    eventually("readiness to go", || {
        let url = url.clone();
        async move {
            match client().get(url).send().await {
                Ok(r) if r.status() == 200 => None,
                _ => Some(()),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_deliveries_in_flight_finish_and_sends_none_twice() {
    let (erp, gate) = MockUpstream::start_gated(|_| MockReply::json(200, json!({}))).await;
    let config = durable_config(&erp.url(), "outbox:\n  path: outbox\n");
    let p = Process::serve_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    queue(&p, 0..5).await;
    eventually("five deliveries in flight", || async {
        (gate.active() == 5).then_some(())
    })
    .await;
    p.signal("TERM");
    until_unready(&p).await;
    gate.open();
    let (code, dir) = p.exit().await;
    assert_eq!(code, Some(0));
    assert_eq!(erp.count(), 5);
    let p = Process::serve_in(dir, &config, &[], true).await;
    assert!(
        deliveries(&p.admin).await.is_empty(),
        "all five were recorded as delivered"
    );
    assert_eq!(erp.count(), 5, "and none is sent again");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_deliveries_that_cannot_finish_queued_for_the_next_start() {
    let (erp, gate) = MockUpstream::start_gated(|_| MockReply::json(200, json!({}))).await;
    let config = durable_config(&erp.url(), "outbox:\n  path: outbox\n");
    let p = Process::serve_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    queue(&p, 0..3).await;
    eventually("three in flight", || async {
        (gate.active() == 3).then_some(())
    })
    .await;
    p.signal("TERM");
    // The back end never answers: each attempt times out (2 s), is counted, and stays queued.
    let (code, dir) = p.exit().await;
    assert_eq!(code, Some(0));
    assert_eq!(erp.count(), 3, "each sent once by that process");
    gate.open();
    let p = Process::serve_in(dir, &config, &[], true).await;
    eventually("delivered after the restart", || async {
        deliveries(&p.admin).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(keys(&erp).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_has_its_deliveries_taken_over_after_the_lease() {
    let url =
        std::env::var("POLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .is_err()
    {
        common::skip_outside_ci(&format!("no Redis at {url}"));
        return;
    }
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    let (erp, gate) = MockUpstream::start_gated(|_| MockReply::json(200, json!({}))).await;
    let state = format!("state:\n  store: redis\n  url: {url}\n  prefix: {prefix}\n");
    let config = durable_config(&erp.url(), &state);
    let a = Process::serve_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    queue(&a, 0..4).await;
    eventually("replica A sending all four", || async {
        (gate.active() == 4).then_some(())
    })
    .await;
    let b = Process::serve_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    a.signal("KILL");
    drop(a);
    gate.open();
    eventually("replica B delivered them after A's lease", || async {
        deliveries(&b.admin).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(keys(&erp).len(), 4);
    assert!(
        erp.count() >= 8,
        "each sent by A, then again by B: {}",
        erp.count()
    );
}
