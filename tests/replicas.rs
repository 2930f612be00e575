//! Several `pollgate serve` processes sharing conversations through one Redis
//! (GATEWAY.md 3): any replica answers any call, each forward is sent once, a dead
//! replica's forward is taken over, and Redis trouble is an answer, not a hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The `state:` of replicas on Redis at `url`; `timeout` bounds each Redis command (short
/// where Redis goes away, long where only a loaded machine would make it run out).
fn redis_state(url: &str, prefix: &str, timeout: &str) -> String {
    format!(
        "state:\n  store: redis\n  url: {url}\n  prefix: {prefix}\n  ttl: 5m\n  timeout: {timeout}\n"
    )
}

#[tokio::test]
async fn a_till_alternating_between_two_replicas_sees_one_conversation_and_one_forward() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let upstream = MockUpstream::start(|_| {
        MockReply::json(200, json!({"manager": "Sam"})).after(Duration::from_millis(600))
    })
    .await;
    let config = format!(
        "events:\n  startPayment:\n    rule: rule.rhai\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n{}",
        upstream.url(),
        redis_state(&url, &unique_prefix(), "5s")
    );
    let a = Process::serve(&config, &[("rule.rhai", APPROVAL_RULE)]).await;
    let b = Process::serve(&config, &[("rule.rhai", APPROVAL_RULE)]).await;
    let tills = [a.till(), b.till()];
    let mut attempt = 0;
    let last = loop {
        let till = &tills[attempt % 2];
        attempt += 1;
        let answer = till
            .call_json("startPayment", &body(1, attempt as u32))
            .await;
        assert_eq!(answer.status, 200);
        assert!(answer.is_signed());
        if answer.finished() == Some(true) {
            break answer;
        }
        assert_eq!(
            answer.message(),
            Some(format!("waiting, attempt {attempt}"))
        );
        assert!(attempt < 200, "never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last.message().as_deref(), Some("approved by Sam"));
    assert_eq!(
        upstream.count(),
        1,
        "exactly one upstream request across both replicas"
    );
    // Both replicas now give the same final answer, byte for byte.
    let from_a = tills[0].call_json("startPayment", &body(1, 99)).await;
    let from_b = tills[1].call_json("startPayment", &body(1, 100)).await;
    assert_eq!(from_a.body, last.body);
    assert_eq!(from_b.body, last.body);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn concurrent_calls_on_both_replicas_lose_no_update() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let rule =
        "state.n = (state.n ?? 0) + 1;\nkeep_polling(`n=${state.n} attempt=${poll.attempt}`)";
    let config = format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n{}",
        redis_state(&url, &unique_prefix(), "5s")
    );
    let a = Process::serve(&config, &[("rule.rhai", rule)]).await;
    let b = Process::serve(&config, &[("rule.rhai", rule)]).await;
    let mut calls = Vec::new();
    for i in 0..40u32 {
        let till = if i % 2 == 0 { a.till() } else { b.till() };
        calls.push(tokio::spawn(async move {
            till.call_json("addSessionLine", &body(5, i)).await
        }));
    }
    // Each call is one attempt (1 to 40, in whatever order the replicas counted them) and
    // saved one increment on top of all the others: no two calls see the same n, and none
    // is skipped.
    let (mut counts, mut attempts) = (Vec::new(), Vec::new());
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.finished(), Some(false));
        let message = answer.message().unwrap();
        let (n, attempt) = message
            .strip_prefix("n=")
            .and_then(|rest| rest.split_once(" attempt="))
            .and_then(|(n, a)| Some((n.parse::<u32>().ok()?, a.parse::<u32>().ok()?)))
            .unwrap_or_else(|| panic!("not `n=N attempt=A`: {message:?}"));
        counts.push(n);
        attempts.push(attempt);
    }
    counts.sort_unstable();
    attempts.sort_unstable();
    let each: Vec<u32> = (1..=40).collect();
    assert_eq!(counts, each, "every call's update was saved, once");
    assert_eq!(attempts, each, "every call was counted, once");
    let last = a.till().call_json("addSessionLine", &body(5, 41)).await;
    assert_eq!(last.message().as_deref(), Some("n=41 attempt=41"));
}

#[tokio::test]
async fn killing_the_replica_that_sends_a_forward_lets_the_other_resend_it_and_finish() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    // The first request never gets an answer in time (its sender dies); the resend does.
    let upstream = MockUpstream::start(|n| {
        if n == 0 {
            MockReply::json(200, json!({"manager": "Nobody"})).after(Duration::from_secs(60))
        } else {
            MockReply::json(200, json!({"manager": "Sam"}))
        }
    })
    .await;
    let config = format!(
        "events:\n  startPayment:\n    rule: rule.rhai\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n    timeout: 1s\n    retries: 0\n{}",
        upstream.url(),
        redis_state(&url, &unique_prefix(), "5s")
    );
    let a = Process::serve(&config, &[("rule.rhai", APPROVAL_RULE)]).await;
    let b = Process::serve(&config, &[("rule.rhai", APPROVAL_RULE)]).await;
    let first = a.till().call_json("startPayment", &body(2, 1)).await;
    assert_eq!(first.finished(), Some(false));
    eventually("the forward to reach the upstream", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    a.signal("KILL");
    let till = b.till();
    let mut n = 1;
    let done = eventually("the surviving replica to finish the conversation", || {
        n += 1;
        let till = till.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let answer = till.call_json("startPayment", &body(2, n)).await;
            (answer.finished() == Some(true)).then_some(answer)
        }
    })
    .await;
    assert_eq!(done.message().as_deref(), Some("approved by Sam"));
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        2,
        "sent once by the dead replica, once again by the survivor"
    );
    assert_eq!(
        requests[0].headers["idempotency-key"],
        requests[1].headers["idempotency-key"]
    );
}

#[tokio::test]
async fn redis_trouble_is_a_signed_answer_and_conversations_continue_when_it_returns() {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return;
    }
    let mut redis = PrivateRedis::planned(false).await;
    redis.start().await;
    let rule = "keep_polling(`attempt ${poll.attempt}`)";
    let config = format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n{}",
        redis_state(&redis.url(), "outage", "300ms")
    );
    let gw = Gateway::start(&config, &[("rule.rhai", rule)]).await;
    let till = gw.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(9, 1))
            .await
            .message()
            .as_deref(),
        Some("attempt 1")
    );

    // Redis stops answering (the process is stopped, its sockets stay open) until this test
    // lets it go on: each call still gets a signed answer while it is stopped, bounded by
    // `state.timeout`, not by how long Redis stays stopped.
    redis.freeze();
    let answer = till.call_json("addSessionLine", &body(9, 2)).await;
    assert_eq!(
        (answer.status, answer.is_signed(), answer.finished()),
        (200, true, Some(false))
    );
    assert_eq!(
        answer.message().as_deref(),
        Some(pollgate::error_answer::STORE_DOWN_MESSAGE)
    );
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        gw.metric(r#"pollgate_requests_total{event="addSessionLine",outcome="store_error"}"#)
            .await,
        1.0
    );
    redis.thaw();

    // Redis answers again: the same conversation continues where it was.
    let mut n = 2;
    let resumed = eventually("the conversation to continue after the pause", || {
        n += 1;
        let till = till.clone();
        async move {
            let a = till.call_json("addSessionLine", &body(9, n)).await;
            (a.message().as_deref() != Some(pollgate::error_answer::STORE_DOWN_MESSAGE))
                .then_some(a)
        }
    })
    .await;
    let attempt: u32 = resumed
        .message()
        .unwrap()
        .trim_start_matches("attempt ")
        .parse()
        .unwrap();
    assert!(attempt >= 2, "attempts carried on: {attempt}");

    // Redis stopped and started again (it keeps nothing on disk): calls work again.
    redis.kill();
    let down = till.call_json("addSessionLine", &body(10, 1)).await;
    assert_eq!(
        down.message().as_deref(),
        Some(pollgate::error_answer::STORE_DOWN_MESSAGE)
    );
    redis.start().await;
    let back = eventually("calls to work after Redis restarted", || {
        let till = till.clone();
        async move {
            let a = till.call_json("addSessionLine", &body(10, 2)).await;
            (a.message().as_deref() != Some(pollgate::error_answer::STORE_DOWN_MESSAGE))
                .then_some(a)
        }
    })
    .await;
    assert_eq!(back.message().as_deref(), Some("attempt 1"));
    eventually("readiness to return", || async {
        (client()
            .get(gw.admin_url("/readyz"))
            .send()
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
}
