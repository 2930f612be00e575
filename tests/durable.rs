//! Durable delivery (GATEWAY.md 8) through the real gateway to real local HTTP back ends:
//! queued before the answer, retried on 5xx, 408, 429 (honouring `Retry-After`), dead on
//! other 4xx or past `max_age`, one delivery per conversation, the admin endpoints with
//! their exact answers, and non-blocking calls answered at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{client, eventually, Gateway, MockReply, MockUpstream};
use serde_json::{json, Value};

/// A completeSession body for conversation `n` (`blocking`: `event.eventBlocking`).
fn complete(n: u32, blocking: bool) -> Value {
    json!({
        "event": {"eventBlocking": blocking, "eventCounter": 1, "eventTimestamp": format!("2026-03-02T10:00:{:02}.{:03}+01:00", n % 60, n % 1000)},
        "sender": {"branchNumber": 3, "workplaceNumber": 2, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"},
        "session": {"sessionId": format!("00000000-0000-4000-8000-{n:012}"), "total": 12.5},
        "completeSession": {"receiptNumber": n}
    })
}

/// A config with one durable event to `erp` at `url`, backing off `min`..`max`.
fn config(url: &str, min: &str, max: &str, max_age: &str) -> String {
    format!(
        "outbox:\n  path: outbox\n\
         upstreams:\n  erp:\n    url: {url}\n    timeout: 2s\n    durable: {{max_age: {max_age}, backoff: {{min: {min}, max: {max}}}, lease: 5s}}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    )
}

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = client().get(gw.admin_url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

async fn send(gw: &Gateway, method: reqwest::Method, path: &str) -> (u16, String) {
    let r = client()
        .request(method, gw.admin_url(path))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn deliveries(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, body) = get_json(gw, &format!("/deliveries{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_answering_503_then_200_gets_the_event_with_the_same_key_twice() {
    let erp = MockUpstream::start(|n| {
        if n == 0 {
            MockReply::json(503, json!({"busy": true}))
        } else {
            MockReply::json(200, json!({"booked": true}))
        }
    })
    .await;
    let gw = Gateway::start(&config(&erp.url(), "50ms", "100ms", "1h"), &[]).await;
    let body = serde_json::to_vec(&complete(1, true)).unwrap();
    let answer = gw.till().call("completeSession", body.clone()).await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"{}"[..]));
    assert!(answer.is_signed());
    eventually("two attempts", || async {
        (erp.count() >= 2).then_some(())
    })
    .await;
    eventually("nothing pending", || async {
        deliveries(&gw, "").await.is_empty().then_some(())
    })
    .await;
    let got = erp.requests();
    assert_eq!(got.len(), 2, "delivered once it was 200");
    let keys: HashSet<_> = got
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys.len(), 1, "the same Idempotency-Key on every attempt");
    for r in &got {
        assert_eq!(r.path, "/mplus/completeSession");
        assert_eq!(&r.body[..], &body[..], "the till's bytes");
        let signature = r.headers["x-mplus-signature"].to_str().unwrap();
        assert!(common::secret()
            .verify(signature.as_bytes(), &r.body)
            .is_ok());
        assert_eq!(r.headers[common::SUBSCRIPTION_HEADER], "shop");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let m = gw.metrics().await;
    let v = |s: &str| common::metric_value(&m, s);
    assert_eq!(
        v(r#"pollgate_delivery_attempts_total{upstream="erp",outcome="retry"}"#),
        1.0
    );
    assert_eq!(
        v(r#"pollgate_delivery_attempts_total{upstream="erp",outcome="delivered"}"#),
        1.0
    );
    assert_eq!(
        v(r#"pollgate_deliveries{upstream="erp",status="pending"}"#),
        0.0
    );
    assert_eq!(
        v(r#"pollgate_deliveries{upstream="erp",status="dead"}"#),
        0.0
    );
    assert_eq!(
        v(r#"pollgate_delivery_oldest_pending_seconds{upstream="erp"}"#),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_no_sooner_than_it_asks() {
    let erp = MockUpstream::start(|n| {
        if n == 0 {
            MockReply::json(429, json!({})).header("retry-after", "1")
        } else {
            MockReply::json(204, json!({}))
        }
    })
    .await;
    let gw = Gateway::start(&config(&erp.url(), "20ms", "50ms", "1h"), &[]).await;
    gw.till()
        .call_json("completeSession", &complete(2, true))
        .await;
    eventually("the first attempt", || async {
        (erp.count() >= 1).then_some(())
    })
    .await;
    let first = Instant::now();
    // The backoff alone would retry within 50 ms; Retry-After asks for a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while erp.count() < 2 {
        assert!(Instant::now() < deadline, "no second attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "{:?}",
        first.elapsed()
    );
    eventually("delivered", || async {
        deliveries(&gw, "").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_dead_at_once_and_kept_until_an_operator_retries_it() {
    let erp = MockUpstream::start(MockReply::unprocessable_once).await;
    let gw = Gateway::start(&config(&erp.url(), "20ms", "50ms", "1h"), &[]).await;
    gw.till()
        .call_json("completeSession", &complete(3, true))
        .await;
    let dead = eventually("a dead delivery", || async {
        deliveries(&gw, "?status=dead").await.pop()
    })
    .await;
    assert_eq!(erp.count(), 1, "a 422 is not retried");
    let id = dead["id"].as_str().unwrap().to_owned();
    let keys: Vec<&str> = dead
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "age_ms",
            "attempts",
            "event",
            "id",
            "key",
            "last_error",
            "next_attempt",
            "status",
            "upstream"
        ]
    );
    assert_eq!(
        (
            &dead["upstream"],
            &dead["event"],
            &dead["status"],
            &dead["attempts"],
            &dead["last_error"],
            &dead["next_attempt"]
        ),
        (
            &json!("erp"),
            &json!("completeSession"),
            &json!("dead"),
            &json!(1),
            &json!("answered 422"),
            &Value::Null
        )
    );
    assert_eq!(
        dead["key"],
        erp.requests()[0].headers["idempotency-key"]
            .to_str()
            .unwrap()
    );
    assert!(deliveries(&gw, "?status=pending").await.is_empty());
    let m = gw.metrics().await;
    assert_eq!(
        common::metric_value(&m, r#"pollgate_deliveries{upstream="erp",status="dead"}"#),
        1.0
    );
    assert_eq!(
        common::metric_value(
            &m,
            r#"pollgate_delivery_attempts_total{upstream="erp",outcome="dead"}"#
        ),
        1.0
    );

    let (status, body) = send(
        &gw,
        reqwest::Method::POST,
        &format!("/deliveries/{id}/retry"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(r#"{{"id":"{id}","status":"pending","upstream":"erp"}}"#)
    );
    eventually("sent again", || async { (erp.count() == 2).then_some(()) }).await;
    eventually("delivered", || async {
        deliveries(&gw, "").await.is_empty().then_some(())
    })
    .await;
    let (status, body) = send(
        &gw,
        reqwest::Method::POST,
        &format!("/deliveries/{id}/retry"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"code":"NOT_FOUND","message":"no delivery `{id}` (GET /deliveries lists them)"}}}}"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_still_failing_at_max_age_is_dead() {
    let erp = MockUpstream::start(|_| MockReply::json(503, json!({}))).await;
    let gw = Gateway::start(&config(&erp.url(), "50ms", "100ms", "400ms"), &[]).await;
    gw.till()
        .call_json("completeSession", &complete(4, true))
        .await;
    let dead = eventually("dead after max_age", || async {
        deliveries(&gw, "?status=dead").await.pop()
    })
    .await;
    assert_eq!(dead["last_error"], "answered 503; max_age (400ms) passed");
    assert!(dead["attempts"].as_u64().unwrap() >= 2, "{dead}");
    assert_eq!(dead["attempts"].as_u64().unwrap() as usize, erp.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_retries_all_deletes_and_refuses_bad_queries_exactly() {
    let erp = MockUpstream::start(|_| MockReply::json(400, json!({}))).await;
    let gw = Gateway::start(&config(&erp.url(), "20ms", "50ms", "1h"), &[]).await;
    for n in 10..13 {
        gw.till()
            .call_json("completeSession", &complete(n, true))
            .await;
    }
    eventually("three dead", || async {
        (deliveries(&gw, "?status=dead&upstream=erp").await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(deliveries(&gw, "?limit=2").await.len(), 2);
    let (status, body) = send(&gw, reqwest::Method::POST, "/deliveries/retry?upstream=erp").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"retried":3,"upstream":"erp"}"#)
    );
    eventually("sent again and dead again", || async {
        (erp.count() == 6 && deliveries(&gw, "?status=dead").await.len() == 3).then_some(())
    })
    .await;
    let id = deliveries(&gw, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = send(&gw, reqwest::Method::DELETE, &format!("/deliveries/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(r#"{{"id":"{id}","status":"deleted","upstream":"erp"}}"#)
    );
    assert_eq!(deliveries(&gw, "").await.len(), 2);
    let (status, _) = send(&gw, reqwest::Method::DELETE, &format!("/deliveries/{id}")).await;
    assert_eq!(status, 404);

    let bad = |code: &str, message: &str| {
        format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
    };
    for (method, path, want_status, want) in [
        (
            reqwest::Method::GET,
            "/deliveries?status=maybe",
            400,
            bad("INVALID_QUERY", "status: `maybe` is not pending or dead"),
        ),
        (
            reqwest::Method::GET,
            "/deliveries?limit=0",
            400,
            bad("INVALID_QUERY", "limit: `0` is not a number from 1 to 1000"),
        ),
        (
            reqwest::Method::GET,
            "/deliveries?limit=ten",
            400,
            bad(
                "INVALID_QUERY",
                "limit: `ten` is not a number from 1 to 1000",
            ),
        ),
        (
            reqwest::Method::GET,
            "/deliveries?upstream=crm",
            400,
            bad(
                "INVALID_QUERY",
                "upstream: no upstream `crm` (not under `upstreams:`)",
            ),
        ),
        (
            reqwest::Method::POST,
            "/deliveries/retry",
            400,
            bad(
                "INVALID_QUERY",
                "upstream: give the upstream whose dead deliveries to retry (?upstream=NAME)",
            ),
        ),
        (
            reqwest::Method::POST,
            "/deliveries/nothex/retry",
            404,
            bad(
                "NOT_FOUND",
                "no delivery `nothex` (GET /deliveries lists them)",
            ),
        ),
        (
            reqwest::Method::POST,
            "/deliveries",
            405,
            bad("METHOD_NOT_ALLOWED", "use GET"),
        ),
        (
            reqwest::Method::GET,
            "/deliveries/retry",
            405,
            bad("METHOD_NOT_ALLOWED", "use POST"),
        ),
        (
            reqwest::Method::GET,
            &format!("/deliveries/{id}"),
            405,
            bad("METHOD_NOT_ALLOWED", "use DELETE"),
        ),
    ] {
        let (status, body) = send(&gw, method.clone(), path).await;
        assert_eq!((status, body), (want_status, want), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_duplicate_and_the_polls_of_one_conversation_queue_one_delivery() {
    // Always busy, and a long backoff: what was queued stays pending to be counted.
    let erp = MockUpstream::start(|_| MockReply::json(503, json!({}))).await;
    let mut text = config(&erp.url(), "1h", "1h", "24h");
    text.push_str(
        "  addSessionLine:\n    forward: erp\n    delivery: durable\n    rule: line.rhai\n    polling: {}\n",
    );
    let rule = "if poll.attempt < 3 { keep_polling(\"wait\") } else { finish(\"ok\") }";
    let gw = Gateway::start(&text, &[("line.rhai", rule)]).await;
    let till = gw.till();
    let body = complete(20, true);
    let first = till.call_json("completeSession", &body).await;
    let again = till.call_json("completeSession", &body).await;
    assert_eq!(first.body, again.body, "the final answer, replayed");
    let line = common::body(21, 1);
    for _ in 0..3 {
        till.call_json("addSessionLine", &line).await;
    }
    till.call_json("addSessionLine", &line).await; // replayed
    let pending = deliveries(&gw, "?status=pending").await;
    let events: Vec<&str> = pending
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{pending:?}");
    assert!(events.contains(&"completeSession") && events.contains(&"addSessionLine"));
    eventually("one attempt each", || async {
        (erp.count() == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_forward_on_a_durable_event_queues_its_body_and_returns_unit() {
    let erp = MockUpstream::start(|_| MockReply::json(200, json!({}))).await;
    let crm = MockUpstream::start(|_| MockReply::json(200, json!({}))).await;
    let text = format!(
        "outbox:\n  path: data/outbox\n\
         upstreams:\n  erp:\n    url: {}\n  crm:\n    url: {}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n    rule: done.rhai\n",
        erp.url(),
        crm.url()
    );
    // `erp` gets the till's body (the event's `forward:`), `crm` the rule's.
    let rule = r#"let r = forward("crm", #{ receipt: event.completeSession.receiptNumber });
let e = forward("erp");
if r == () && e == () { #{ seen: "unit" } } else { #{ seen: "reply" } }"#;
    let gw = Gateway::start(&text, &[("done.rhai", rule)]).await;
    let body = complete(30, true);
    let answer = gw.till().call_json("completeSession", &body).await;
    assert_eq!(answer.json(), json!({"seen": "unit"}));
    eventually("delivered to both", || async {
        (erp.count() == 1 && crm.count() == 1).then_some(())
    })
    .await;
    let to_crm = &crm.requests()[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&to_crm.body).unwrap(),
        json!({"receipt": 30})
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&erp.requests()[0].body).unwrap(),
        body
    );
    assert!(gw.dir.path().join("data/outbox/queue").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_blocking_call_is_answered_at_once_while_the_back_end_hangs() {
    let (erp, gate) = MockUpstream::start_gated(|_| MockReply::json(200, json!({"ok": 1}))).await;
    let text = format!(
        "upstreams:\n  erp:\n    url: {}\n    timeout: 20s\n    retries: 0\n\
         events:\n  completeSession:\n    forward: erp\n",
        erp.url()
    );
    let gw = Gateway::start(&text, &[]).await;
    let started = Instant::now();
    let answer = gw
        .till()
        .call_json("completeSession", &complete(40, false))
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held {:?}",
        started.elapsed()
    );
    eventually("the forward runs in the background", || async {
        (gate.active() == 1).then_some(())
    })
    .await;
    gate.open();
    eventually("and ends", || async {
        (gw.metric_or_zero("pollgate_forwards_in_flight").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_redis_when_conversations_do() {
    let url =
        std::env::var("POLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .is_err()
    {
        common::skip_outside_ci(&format!("no Redis at {url}"));
        return;
    }
    let erp =
        MockUpstream::start(|n| MockReply::json(if n == 0 { 500 } else { 200 }, json!({}))).await;
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    let text = format!(
        "state:\n  store: redis\n  url: {url}\n  prefix: {prefix}\n\
         upstreams:\n  erp:\n    url: {}\n    durable: {{backoff: {{min: 20ms, max: 50ms}}}}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n",
        erp.url()
    );
    let gw = Gateway::start(&text, &[]).await;
    let answer = gw
        .till()
        .call_json("completeSession", &complete(50, true))
        .await;
    assert_eq!(&answer.body[..], b"{}");
    eventually("delivered after a 500", || async {
        (erp.count() == 2 && deliveries(&gw, "").await.is_empty()).then_some(())
    })
    .await;
    let ready = get_json(&gw, "/readyz").await;
    assert_eq!(ready.0, 200, "{ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_that_cannot_accept_is_a_signed_store_failure_counted_and_shown_in_readyz() {
    // A Redis of this test's own, for failures the shared one must not see.
    if !common::redis_installed() {
        common::skip_outside_ci("no redis-server to start a private Redis");
        return;
    }
    let mut redis = common::PrivateRedis::planned(false).await;
    redis.start().await;
    // This user may touch conversations but not the outbox: every enqueue is refused.
    let made = redis.cli(&[
        "ACL",
        "SETUSER",
        "pg",
        "on",
        ">pw",
        "~pollgate:conv:*",
        "+@all",
    ]);
    assert_eq!(made.as_deref(), Some("OK"));
    let erp = MockUpstream::start(|_| MockReply::json(200, json!({}))).await;
    let text = format!(
        "state:\n  store: redis\n  url: redis://pg:pw@127.0.0.1:{}\n\
         upstreams:\n  erp:\n    url: {}\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n    polling: {{}}\n",
        redis.port,
        erp.url()
    );
    let gw = Gateway::start(&text, &[]).await;
    let answer = gw
        .till()
        .call_json("completeSession", &complete(60, true))
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(
        answer.json(),
        json!({"polling": {"finished": false, "message": "The gateway cannot reach its state store; retrying"}})
    );
    let (status, ready) = get_json(&gw, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        (&ready["status"], &ready["outbox"]),
        (&json!("not ready"), &json!("redis"))
    );
    assert_eq!(
        ready["reason"],
        format!("outbox unavailable: Redis at redis://pg:***@127.0.0.1:{}: NoPerm: this user has no permissions to access one of the keys used as arguments", redis.port)
    );
    let m = gw.metrics().await;
    assert_eq!(
        common::metric_value(&m, "pollgate_outbox_errors_total"),
        1.0
    );
    assert_eq!(
        common::metric_value(
            &m,
            r#"pollgate_requests_total{event="completeSession",outcome="store_error"}"#
        ),
        1.0
    );
    // Fixed: the till's retry is queued and delivered, and readiness comes back.
    let fixed = redis.cli(&["ACL", "SETUSER", "pg", "allkeys"]);
    assert_eq!(fixed.as_deref(), Some("OK"));
    let answer = gw
        .till()
        .call_json("completeSession", &complete(60, true))
        .await;
    assert_eq!(answer.finished(), Some(true));
    eventually("delivered", || async { (erp.count() == 1).then_some(()) }).await;
    assert_eq!(get_json(&gw, "/readyz").await.0, 200);
}
