//! pollgate and a Redis that is not there yet, goes away and comes back (GATEWAY.md 11),
//! with the real binary and a private redis-server: it starts without Redis, says why it
//! is not ready, answers tills with the signed store-failure answer, and carries on by
//! itself once Redis answers, also after a Redis restart (append-only file on, so
//! conversations and queued deliveries are still there). The password never reaches the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use pollgate::error_answer::STORE_DOWN_MESSAGE;
use serde_json::{json, Value};

const PASSWORD: &str = "s3cret-redis-pw";

/// A private Redis that wants [`PASSWORD`] for the default user, not started yet.
async fn redis_with_password() -> Option<PrivateRedis> {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return None;
    }
    let mut redis = PrivateRedis::planned(true).await;
    redis.require_password(PASSWORD);
    Some(redis)
}

fn state(redis: &PrivateRedis) -> String {
    format!(
        "state:\n  store: redis\n  url: redis://default:{PASSWORD}@127.0.0.1:{}/0\n  prefix: outage\n  timeout: 300ms\n",
        redis.port
    )
}

/// What the URL looks like in every message: the password hidden.
fn shown(redis: &PrivateRedis) -> String {
    format!("redis://default:***@127.0.0.1:{}/0", redis.port)
}

async fn readyz(p: &Process) -> (u16, Value) {
    let r = client()
        .get(format!("http://{}/readyz", p.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// Calls `event` with `body` until the answer is not the store-failure one.
async fn until_answered(till: &Till, event: &str, body: &Value) -> Answer {
    eventually("a call that reaches Redis", || async {
        let a = till.call_json(event, body).await;
        (a.message().as_deref() != Some(STORE_DOWN_MESSAGE)).then_some(a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollgate_starts_without_redis_and_carries_on_once_it_is_up_and_after_it_restarts() {
    let Some(mut redis) = redis_with_password().await else {
        return;
    };
    let config = format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n{}",
        state(&redis)
    );
    let rule = "keep_polling(`attempt ${poll.attempt}`)";
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start_in(dir, &config, &[("rule.rhai", rule)], true).await;

    // No Redis: not ready, saying why once and where, and tills keep polling.
    let (status, why) = readyz(&p).await;
    assert_eq!(status, 503);
    assert_eq!(
        why,
        json!({
            "status": "not ready",
            "outbox": "redis",
            "reason": format!("outbox unavailable: Redis at {}: Connection refused (os error 111)", shown(&redis)),
        })
    );
    let till = p.till();
    let down = till.call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(
        (down.status, down.is_signed(), down.finished()),
        (200, true, Some(false)),
        "{down:?}"
    );
    assert_eq!(down.message().as_deref(), Some(STORE_DOWN_MESSAGE));

    // Redis comes: ready without a restart, and the conversation begins.
    redis.start().await;
    p.wait_ready().await;
    let first = until_answered(&till, "addSessionLine", &body(1, 2)).await;
    assert_eq!(first.message().as_deref(), Some("attempt 1"));
    let second = till.call_json("addSessionLine", &body(1, 3)).await;
    assert_eq!(second.message().as_deref(), Some("attempt 2"));

    // Redis is killed (-9) and started again over its append-only file: the same
    // conversation goes on counting.
    redis.kill();
    let gone = till.call_json("addSessionLine", &body(1, 4)).await;
    assert_eq!(gone.message().as_deref(), Some(STORE_DOWN_MESSAGE));
    redis.start().await;
    let back = until_answered(&till, "addSessionLine", &body(1, 5)).await;
    assert_eq!(back.message().as_deref(), Some("attempt 3"));
    p.wait_ready().await;

    let log = p.log();
    assert!(!log.contains(PASSWORD), "the password in the log:\n{log}");
    assert!(
        log.contains(&format!(
            "the conversation store cannot reach Redis at {}: Connection refused (os error 111); trying again",
            shown(&redis)
        )),
        "{log}"
    );
}

async fn pending(p: &Process) -> usize {
    let r = client()
        .get(format!("http://{}/deliveries?limit=1000", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    list.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_deliveries_wait_for_redis_and_survive_its_restart() {
    let Some(mut redis) = redis_with_password().await else {
        return;
    };
    let erp_addr = closed_port().await;
    let config = format!(
        "{}upstreams:\n  erp:\n    url: http://{erp_addr}/mplus\n    timeout: 2s\n    durable: {{backoff: {{min: 100ms, max: 300ms}}, lease: 1s}}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n",
        state(&redis)
    );
    let p = Process::start_in(tempfile::tempdir().unwrap(), &config, &[], true).await;
    assert_eq!(readyz(&p).await.0, 503);

    // Without Redis nothing can be queued: the till's answer is the signed fallback, and
    // the worker keeps trying to claim without getting stuck.
    let till = p.till();
    let refused = till
        .call_json("completeSession", &complete_session(1))
        .await;
    assert!(refused.is_signed(), "{refused:?}");

    redis.start().await;
    p.wait_ready().await;
    for n in 1..=3 {
        let queued = till
            .call_json("completeSession", &complete_session(n))
            .await;
        assert_eq!((queued.status, &queued.body[..]), (200, &b"{}"[..]));
    }
    assert_eq!(pending(&p).await, 3);

    // Redis restarts (kill -9, append-only file kept) while the back end is still down.
    redis.kill();
    redis.start().await;
    p.wait_ready().await;
    assert_eq!(pending(&p).await, 3, "the queue survived the restart");

    // The back end comes up: the worker, reconnected by itself, delivers each once.
    let erp = MockUpstream::start_at(erp_addr, |_| MockReply::json(200, json!({}))).await;
    eventually("the three deliveries", || async {
        (pending(&p).await == 0).then_some(())
    })
    .await;
    let keys: HashSet<String> = erp
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(!p.log().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_reported_and_pollgate_gets_in_once_redis_accepts_it() {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return;
    }
    // Redis wants another password than the one pollgate has.
    let mut redis = PrivateRedis::planned(false).await;
    redis.require_password("not-the-configured-one");
    redis.start().await;
    let config = format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n{}",
        state(&redis)
    );
    let rule = "keep_polling(`attempt ${poll.attempt}`)";
    let p = Process::start_in(
        tempfile::tempdir().unwrap(),
        &config,
        &[("rule.rhai", rule)],
        true,
    )
    .await;
    let (status, why) = readyz(&p).await;
    assert_eq!(status, 503);
    assert_eq!(
        why["reason"],
        format!(
            "outbox unavailable: Redis at {}: Password authentication failed - AuthenticationFailed",
            shown(&redis)
        )
    );
    let down = p.till().call_json("addSessionLine", &body(2, 1)).await;
    assert_eq!(down.message().as_deref(), Some(STORE_DOWN_MESSAGE));

    // The operator fixes Redis's side (this private server's password): pollgate gets in
    // by itself, without a restart.
    let set = redis.cli(&["CONFIG", "SET", "requirepass", PASSWORD]);
    assert_eq!(set.as_deref(), Some("OK"));
    p.wait_ready().await;
    let first = until_answered(&p.till(), "addSessionLine", &body(2, 2)).await;
    assert_eq!(first.message().as_deref(), Some("attempt 1"));
    assert!(!p.log().contains(PASSWORD), "{}", p.log());
}
