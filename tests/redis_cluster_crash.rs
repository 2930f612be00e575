//! pollgate on a Redis Cluster whose primaries crash (GATEWAY.md 11): a private cluster of
//! three primaries with a replica each (tests/common/cluster.rs), two `pollgate serve`
//! replicas on it, and a `kill -9` of every primary holding a conversation whose forward is
//! in flight, an upstream's durable queue or a till's mailbox, each taken over by its
//! replica. Attempts carry on through the other pollgate, the forward is sent once, each
//! durable delivery arrives, and the pushed message is delivered.
//!
//! Redis replicates asynchronously: a write the replica had not received when its primary
//! crashed is lost in the failover. The test waits for the replica to hold every write
//! before each kill, so what it shows is what a failover keeps, not what it may lose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A backgroundPoll call of till 3/2 (its `n`-th).
fn poll_body(n: u32) -> Value {
    json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": n, "eventTimestamp": format!("2026-03-02T09:16:{:02}.000+01:00", n % 60)},
        "sender": {"branchNumber": 3, "workplaceNumber": 2, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"}
    })
}

async fn admin(p: &Process, path: &str) -> Value {
    let r = client()
        .get(format!("http://{}{path}", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn push(p: &Process, card: &str) {
    let r = client()
        .post(format!("http://{}/push/shop/3/2", p.admin))
        .body(json!({"externalCardScan": {"cardNumber": card}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "push {card}");
}

async fn held_calls(p: &Process) -> f64 {
    let r = client()
        .get(format!("http://{}/metrics", p.admin))
        .send()
        .await
        .unwrap();
    metric_or_zero(&r.text().await.unwrap(), "pollgate_push_held_calls")
}

/// Calls until an answer is not the store-failure one (a call just after a failover may
/// still reach the dead primary once), each call with the next event counter.
async fn call_through(till: &Till, n: u32, counter: &mut u32) -> Answer {
    eventually("an answer past the failover", || {
        *counter += 1;
        let body = body(n, *counter);
        async move {
            let answer = till.call_json("startPayment", &body).await;
            (answer.message().as_deref() != Some(pollgate::error_answer::STORE_DOWN_MESSAGE))
                .then_some(answer)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarantees_hold_when_the_primaries_holding_them_are_killed() {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return;
    }
    let mut cluster = PrivateCluster::start(None).await;
    let prefix = "crash";
    let (backend, gate) =
        MockUpstream::start_gated(|_| MockReply::json(200, json!({"manager": "Sam"}))).await;
    let erp_addr = closed_port().await;
    let config = format!(
        "events:\n  startPayment:\n    rule: rule.rhai\n    polling: {{}}\n  completeSession:\n    forward: erp\n    delivery: durable\n  backgroundPoll:\n    push: {{hold: 10s, ttl: 10m}}\n\
         upstreams:\n  backend:\n    url: {}\n  erp:\n    url: http://{erp_addr}/mplus\n    timeout: 2s\n    durable: {{backoff: {{min: 100ms, max: 300ms}}, lease: 1s}}\n\
         state:\n  store: redis\n  cluster: true\n  url: [{}]\n  prefix: {prefix}\n  ttl: 5m\n  timeout: 2s\n",
        backend.url(),
        cluster.urls().join(", ")
    );
    let files = [("rule.rhai", APPROVAL_RULE)];
    let a = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;
    let b = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;

    // What the crashes must not lose: a conversation whose forward is on its way (the back
    // end holds it), three durable deliveries queued while their upstream is down, and a
    // message pushed to a till that has not fetched it yet.
    let first = a.till().call_json("startPayment", &body(1, 1)).await;
    assert_eq!(first.message().as_deref(), Some("waiting, attempt 1"));
    eventually("the forward to be sent", || async {
        (gate.active() == 1).then_some(())
    })
    .await;
    for n in 1..=3 {
        let queued = a
            .till()
            .call_json("completeSession", &complete_session(n))
            .await;
        assert_eq!((queued.status, &queued.body[..]), (200, &b"{}"[..]));
    }
    push(&a, "before-the-crash").await;

    // Kill -9 each primary holding any of them (one to three nodes), once its replica has
    // every write, and wait for the replica to take over.
    let patterns = [
        format!("{prefix}:conv:*"),
        format!("{{{prefix}:outbox:erp}}*"),
        format!("{{{prefix}:push:*"),
    ];
    let mut doomed: Vec<u16> = patterns.iter().map(|p| cluster.primary_with(p)).collect();
    doomed.sort_unstable();
    doomed.dedup();
    for &primary in &doomed {
        let replica = cluster.replica_in_sync(primary).await;
        cluster.kill(primary);
        cluster.promoted(replica).await;
    }
    for pattern in &patterns {
        assert!(
            !doomed.contains(&cluster.primary_with(pattern)),
            "{pattern} moved to a promoted replica"
        );
    }

    // The conversation's attempts go on through both pollgates; the forward sent before
    // the crash is the one that answers.
    let mut counter = 1;
    for n in 2..=3 {
        let till = if n % 2 == 0 { b.till() } else { a.till() };
        let answer = call_through(&till, 1, &mut counter).await;
        assert_eq!(answer.message(), Some(format!("waiting, attempt {n}")));
    }
    gate.open();
    let last = eventually("the approval", || async {
        let answer = b.till().call_json("startPayment", &body(1, 99)).await;
        (answer.finished() == Some(true)).then_some(answer)
    })
    .await;
    assert_eq!(last.message().as_deref(), Some("approved by Sam"));
    assert_eq!(backend.count(), 1, "one forward across the crash");

    // The queued deliveries are all still there, and the back end gets each once: no
    // delivery was on its way when the primary died (the upstream was down), so nothing is
    // sent twice.
    let listed = admin(&b, "/deliveries?limit=1000").await;
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let erp = MockUpstream::start_at(erp_addr, |_| MockReply::json(200, json!({}))).await;
    eventually("the three deliveries", || async {
        let listed = admin(&b, "/deliveries?limit=1000").await;
        listed.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let keys: HashSet<String> = erp
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!((keys.len(), erp.count()), (3, 3), "each delivered once");

    // The message pushed before the crash reaches its till through the other pollgate, and
    // a push after it wakes a call held by either (the wake-up subscription of one that was
    // on a killed node subscribed again).
    let fetched = b.till().call_json("backgroundPoll", &poll_body(1)).await;
    assert_eq!(
        fetched.json()["externalCardScan"]["cardNumber"],
        "before-the-crash"
    );
    for (holder, pusher, n) in [(&a, &b, 2), (&b, &a, 3)] {
        let till = holder.till();
        let call =
            tokio::spawn(async move { till.call_json("backgroundPoll", &poll_body(n)).await });
        eventually("the call to be held", || async {
            (held_calls(holder).await == 1.0).then_some(())
        })
        .await;
        let card = format!("after-the-crash-{n}");
        let pushed = Instant::now();
        push(pusher, &card).await;
        let answer = call.await.unwrap();
        assert_eq!(answer.json()["externalCardScan"]["cardNumber"], card);
        // Woken, not found when the 10 s hold ran out.
        assert!(
            pushed.elapsed() < Duration::from_secs(5),
            "{:?}",
            pushed.elapsed()
        );
    }
}
