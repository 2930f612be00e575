//! Forwarding (GATEWAY.md 5) as a till and a back end see it: the real gateway on
//! 127.0.0.1:0 forwards to local upstreams that record every request. Nothing sleeps:
//! slow upstreams are gated or delayed on their side, and every wait polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use pollgate::conversation::{ConversationKey, Opening};
use pollgate::signature::{Encoding, Secret};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The default `polling.pending_message`.
const PENDING: &str = "Waiting for the back office...";
/// The default `unavailable_message`.
const UNAVAILABLE: &str = "The back office is unavailable; please try again";
/// base64 of "upstream-secret".
const UPSTREAM_SECRET: &str = "dXBzdHJlYW0tc2VjcmV0";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One entry under `upstreams:` with extra `key: value` lines.
fn upstream(name: &str, url: &str, keys: &[&str]) -> String {
    let mut text = format!("  {name}:\n    url: {url}\n");
    for key in keys {
        text.push_str(&format!("    {key}\n"));
    }
    text
}

/// A polling `addSessionLine` forwarded to `backend` without a rule; `hold: None` leaves
/// the key out (the default).
fn polling_forward(url: &str, hold: Option<&str>, upstream_keys: &[&str]) -> String {
    let hold = hold.map(|h| format!("    hold: {h}\n")).unwrap_or_default();
    format!(
        "events:\n  addSessionLine:\n    forward: backend\n{hold}    polling: {{}}\nupstreams:\n{}",
        upstream("backend", url, upstream_keys)
    )
}

/// A polling event `name` with rule `rule` and optional config forward and hold.
fn rule_event(name: &str, rule: &str, forward: Option<&str>, hold: &str) -> String {
    let forward = forward
        .map(|f| format!("    forward: {f}\n"))
        .unwrap_or_default();
    format!("  {name}:\n    rule: {rule}\n{forward}    hold: {hold}\n    polling: {{}}\n")
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("upstream request without {name}"))
        .to_str()
        .unwrap()
}

fn customer_message(a: &Answer) -> Option<String> {
    a.json()
        .pointer("/polling/customerMessage")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Polls conversation `n` of `event` (eventCounter going up, as a till does) until the
/// answer says finished; returns that answer and how many calls it took.
async fn poll_until_finished(till: &Till, event: &str, n: u32) -> (Answer, u32) {
    let mut calls = 0;
    let answer = eventually("the final answer", || {
        calls += 1;
        let (till, counter) = (till.clone(), 100 + calls);
        let event = event.to_owned();
        async move {
            let a = till.call_json(&event, &body(n, counter)).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            assert!(a.is_signed());
            (a.finished() == Some(true)).then_some(a)
        }
    })
    .await;
    (answer, calls)
}

/// `GET /conversations` on the admin listener.
async fn conversations(gw: &Gateway) -> Vec<Value> {
    let bytes = client()
        .get(gw.admin_url("/conversations"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The conversation key the gateway derives for `raw` sent as `event`.
fn conversation_key(gw: &Gateway, event: &str, raw: &[u8]) -> String {
    let rt = gw.gateway.runtime.load();
    let parsed = pollgate::body::parse(raw).unwrap();
    ConversationKey::derive(&rt.config.state.key, SUBSCRIPTION, event, &parsed).to_string()
}

fn upstream_metric(name: &str, outcome: &str) -> String {
    format!("pollgate_upstream_requests_total{{upstream=\"{name}\",outcome=\"{outcome}\"}}")
}

async fn wait_for_requests(up: &MockUpstream, n: usize) {
    eventually(&format!("{n} upstream request(s)"), || async {
        (up.count() >= n).then_some(())
    })
    .await;
}

/// Calls `till` for the same conversation `n` from `calls` tasks at once.
async fn concurrent_calls(till: &Till, event: &str, n: u32, calls: u32) -> Vec<Answer> {
    let tasks: Vec<_> = (1..=calls)
        .map(|counter| {
            let (till, event) = (till.clone(), event.to_owned());
            tokio::spawn(async move { till.call_json(&event, &body(n, counter)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// An upstream answering `200` with a chunked JSON object of about `size` bytes, sent in
/// pieces of 512 without `Content-Length`.
async fn chunked_upstream(size: usize) -> MockUpstream {
    MockUpstream::start(move |_| {
        MockReply::json(200, json!({"pad": "x".repeat(size)})).chunked(512)
    })
    .await
}

// ---------------------------------------------------------------------------------------
// What the upstream receives
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn forwards_the_original_bytes_with_path_headers_and_the_subscription_signature() {
    let up = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Coffee noted"}}),
        )
    })
    .await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("5s"), &[]), &[]).await;
    // Duplicate keys, a trailing comma, odd spacing: the gateway reparses it leniently,
    // but the back end must get exactly what the till sent.
    let raw = read_fixture("mplus/examples/polling-addSessionLine.doc.json");
    assert!(
        serde_json::from_slice::<Value>(&raw).is_err(),
        "not strict JSON"
    );

    let a = gw.till().call("addSessionLine", raw.clone()).await;
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({"polling": {"finished": true, "message": "Coffee noted"}})
    );

    let got = up.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/mplus/addSessionLine");
    assert_eq!(r.body, raw, "the till's body, byte for byte");
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "x-mplus-subscription-id"), SUBSCRIPTION);
    secret()
        .verify(header(r, "x-mplus-signature").as_bytes(), &r.body)
        .expect("signed with the subscription's secret");
    let listed = conversations(&gw).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        header(r, "idempotency-key"),
        listed[0]["key"].as_str().unwrap()
    );
    assert_eq!(
        header(r, "idempotency-key"),
        conversation_key(&gw, "addSessionLine", &raw)
    );
    gw.stop().await;
}

#[tokio::test]
async fn signs_forwards_with_the_upstreams_own_secret_when_it_has_one() {
    let up = MockUpstream::start(|_| MockReply::json(200, json!({}))).await;
    let config = format!(
        "events:\n  addSessionLine:\n    forward: b64\n    hold: 5s\n    polling: {{}}\n  startPayment:\n    forward: text\n    hold: 5s\n    polling: {{}}\nupstreams:\n{}{}",
        upstream("b64", &up.url(), &[&format!("secret: {UPSTREAM_SECRET}"), "encoding: base64"]),
        upstream("text", &up.url(), &["secret: back-office-text", "encoding: utf8"]),
    );
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .finished(),
        Some(true)
    );
    assert_eq!(
        till.call_json("startPayment", &body(1, 1)).await.finished(),
        Some(true)
    );

    let got = up.requests();
    assert_eq!(got.len(), 2);
    let by_path: HashMap<_, _> = got.iter().map(|r| (r.path.as_str(), r)).collect();
    let b64 = by_path["/mplus/addSessionLine"];
    let text = by_path["/mplus/startPayment"];
    let upstream_b64 = Secret::decode(UPSTREAM_SECRET, Encoding::Base64).unwrap();
    let upstream_text = Secret::decode("back-office-text", Encoding::Utf8).unwrap();
    for (r, own) in [(b64, &upstream_b64), (text, &upstream_text)] {
        let sig = header(r, "x-mplus-signature").as_bytes();
        own.verify(sig, &r.body)
            .unwrap_or_else(|e| panic!("{}: not signed with the upstream's secret: {e}", r.path));
        assert!(
            secret().verify(sig, &r.body).is_err(),
            "{}: signed with the subscription's secret instead",
            r.path
        );
        assert_eq!(header(r, "x-mplus-subscription-id"), SUBSCRIPTION);
    }
}

// ---------------------------------------------------------------------------------------
// One forward per conversation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sends_one_forward_across_many_polls_of_one_conversation() {
    let (up, gate) = MockUpstream::start_gated(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Age checked"}}),
        )
    })
    .await;
    // No `hold`: a polling event answers at once while its forward is pending.
    let gw = Gateway::start(&polling_forward(&up.url(), None, &[]), &[]).await;
    let till = gw.till();
    for counter in 1..=25 {
        let a = till.call_json("addSessionLine", &body(7, counter)).await;
        assert!(a.is_signed());
        assert_eq!(a.finished(), Some(false), "poll {counter}: {:?}", a.body);
        assert_eq!(a.message().as_deref(), Some(PENDING));
    }
    wait_for_requests(&up, 1).await;
    let pending = conversations(&gw).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["attempts"], 25);
    assert_eq!(pending[0]["pending_forwards"], json!(["backend"]));

    gate.open();
    let (done, calls) = poll_until_finished(&till, "addSessionLine", 7).await;
    assert_eq!(done.message().as_deref(), Some("Age checked"));
    assert_eq!(up.count(), 1, "one forward for {} polls", 25 + calls);
    let done_list = conversations(&gw).await;
    assert_eq!(done_list[0]["finished"], true);
    assert_eq!(done_list[0]["pending_forwards"], json!([]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_forward_for_concurrent_duplicate_calls() {
    let (up, gate) = MockUpstream::start_gated(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Checked once"}}),
        )
    })
    .await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("0s"), &[]), &[]).await;
    let till = gw.till();

    for a in concurrent_calls(&till, "addSessionLine", 3, 20).await {
        assert!(a.is_signed());
        assert_eq!(a.finished(), Some(false), "{:?}", a.body);
    }
    wait_for_requests(&up, 1).await;
    gate.open();
    let (done, _) = poll_until_finished(&till, "addSessionLine", 3).await;
    assert_eq!(done.message().as_deref(), Some("Checked once"));

    // Duplicates of the finished conversation, again all at once: the same bytes.
    for a in concurrent_calls(&till, "addSessionLine", 3, 20).await {
        assert_eq!(a.body, done.body);
        assert_eq!(a.signature, done.signature);
    }
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_one_forward_per_conversation_for_100_concurrent_conversations() {
    let up = MockUpstream::start(|n| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": format!("reply {n}")}}),
        )
    })
    .await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("10s"), &[]), &[]).await;
    let till = gw.till();
    let tasks: Vec<_> = (0..100u32)
        .map(|n| {
            let till = till.clone();
            tokio::spawn(async move {
                let first = till.call_json("addSessionLine", &body(n, 1)).await;
                let again = till.call_json("addSessionLine", &body(n, 2)).await;
                (n, first, again)
            })
        })
        .collect();
    let mut answers = HashMap::new();
    for task in tasks {
        let (n, first, again) = task.await.unwrap();
        assert!(first.is_signed());
        assert_eq!(first.finished(), Some(true), "conversation {n}");
        assert_eq!(again.body, first.body, "conversation {n} replayed");
        answers.insert(n, first.message().unwrap());
    }

    let got = up.requests();
    assert_eq!(got.len(), 100, "one forward per conversation");
    // Which request (by its arrival index, hence its reply) belongs to which conversation.
    let index_of_key: HashMap<&str, usize> = got
        .iter()
        .enumerate()
        .map(|(i, r)| (header(r, "idempotency-key"), i))
        .collect();
    assert_eq!(index_of_key.len(), 100, "distinct Idempotency-Keys");
    for n in 0..100u32 {
        let raw = serde_json::to_vec(&body(n, 1)).unwrap();
        let key = conversation_key(&gw, "addSessionLine", &raw);
        let i = index_of_key[key.as_str()];
        let parsed: Value = serde_json::from_slice(&got[i].body).unwrap();
        assert_eq!(parsed["session"], body(n, 1)["session"], "conversation {n}");
        assert_eq!(
            answers[&n],
            format!("reply {i}"),
            "conversation {n}'s own reply"
        );
    }
    assert_eq!(conversations(&gw).await.len(), 100);
    assert_eq!(
        gw.metric(&upstream_metric("backend", "success")).await,
        100.0
    );
}

#[tokio::test]
async fn caps_concurrent_upstream_requests_at_max_connections() {
    let (up, gate) = MockUpstream::start_gated(|_| MockReply::json(200, json!({}))).await;
    let gw = Gateway::start(
        &polling_forward(&up.url(), None, &["max_connections: 2"]),
        &[],
    )
    .await;
    let till = gw.till();
    for n in 0..10 {
        let a = till.call_json("addSessionLine", &body(n, 1)).await;
        assert_eq!(a.finished(), Some(false));
    }
    eventually("10 forwards in flight, 2 at the upstream", || async {
        let in_flight = gw.metric("pollgate_forwards_in_flight").await;
        (in_flight == 10.0 && gate.active() == 2).then_some(())
    })
    .await;
    gate.open();
    for n in 0..10 {
        poll_until_finished(&till, "addSessionLine", n).await;
    }
    assert_eq!(up.count(), 10);
    assert!(gate.max_active() <= 2, "max {}", gate.max_active());
}

#[tokio::test]
async fn a_forward_queued_behind_max_connections_is_not_sent_twice() {
    // One connection and 30 conversations: every forward is started (and its lease taken)
    // by its first call, then they queue for the connection. Each reply takes at least
    // 100ms, so the last ones queue about 3s, longer than their lease (the upstream's
    // budget of 200ms plus the slack); the polls meanwhile must not resend them.
    let up = MockUpstream::start(|n| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": format!("reply {n}")}}),
        )
        .after(Duration::from_millis(100))
    })
    .await;
    let gw = Gateway::start(
        &polling_forward(
            &up.url(),
            None,
            &["max_connections: 1", "timeout: 200ms", "retries: 0"],
        ),
        &[],
    )
    .await;
    let till = gw.till();
    let clock = gw.gateway.clock;
    let started_ms = clock.now_ms();
    for n in 0..30 {
        let a = till.call_json("addSessionLine", &body(n, 1)).await;
        assert_eq!(a.finished(), Some(false), "conversation {n}");
    }
    // Polls every open conversation until all are finished. The deadline is for progress
    // (a reply arriving or a conversation finishing), not for the whole queue, so a slow
    // machine takes longer without failing, and a stalled queue still fails.
    let mut open: HashSet<u32> = (0..30).collect();
    let (mut counter, mut seen) = (1, (0, open.len()));
    let mut progress_deadline = Instant::now() + Duration::from_secs(10);
    while !open.is_empty() {
        counter += 1;
        for n in open.clone() {
            let a = till.call_json("addSessionLine", &body(n, counter)).await;
            assert_eq!(a.status, 200);
            if a.finished() == Some(true) {
                open.remove(&n);
            }
        }
        if (up.count(), open.len()) != seen {
            seen = (up.count(), open.len());
            progress_deadline = Instant::now() + Duration::from_secs(10);
        }
        assert!(
            Instant::now() < progress_deadline,
            "no progress for 10s: {} requests, {} open",
            seen.0,
            seen.1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.count(), 30, "one forward per conversation");
    // The case this test is about happened: the queue outlived a lease (200ms + 2s slack).
    let queued_ms = clock.now_ms() - started_ms;
    assert!(queued_ms > 2_200, "the queue drained in {queued_ms}ms");
}

#[tokio::test]
async fn a_forward_whose_sender_died_is_resent_once_its_lease_ran_out() {
    use pollgate::conversation::ConversationStore;
    let up = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Resent"}}),
        )
    })
    .await;
    let gw = Gateway::start(
        &polling_forward(&up.url(), None, &["timeout: 200ms", "retries: 0"]),
        &[],
    )
    .await;
    let raw = serde_json::to_vec(&body(1, 1)).unwrap();
    let hex = conversation_key(&gw, "addSessionLine", &raw);
    let key = ConversationKey::from_hex(&hex).unwrap();
    // Another replica took the conversation's forward and died: its lease is live for an
    // hour, so no machine is slow enough to see it run out before this test says so.
    let (store, clock) = (&gw.gateway.store, gw.gateway.clock);
    store
        .begin(key, Opening::event("addSessionLine"), clock.now_ms())
        .await
        .unwrap();
    assert!(store
        .claim_forward(key, "backend", clock.now_ms(), clock.now_ms() + 3_600_000)
        .await
        .unwrap());

    let till = gw.till();
    for counter in 1..=3 {
        let a = till.call_json("addSessionLine", &body(1, counter)).await;
        assert_eq!(a.finished(), Some(false), "poll {counter}: {:?}", a.body);
    }
    assert_eq!(
        gw.metric("pollgate_forwards_in_flight").await,
        0.0,
        "a live lease is left alone"
    );
    assert_eq!(
        up.count(),
        0,
        "nothing sent under another replica's live lease"
    );

    // The lease runs out (set to now, as time would): the next poll resends the forward.
    assert!(store
        .renew_forward(key, "backend", clock.now_ms())
        .await
        .unwrap());
    let (done, _) = poll_until_finished(&till, "addSessionLine", 1).await;
    assert_eq!(done.message().as_deref(), Some("Resent"));
    let got = up.requests();
    assert_eq!(got.len(), 1, "resent once");
    assert_eq!(header(&got[0], "idempotency-key"), hex);
}

// ---------------------------------------------------------------------------------------
// hold
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn holds_a_slow_forward_then_gives_the_final_answer_on_a_later_call() {
    let (up, gate) = MockUpstream::start_gated(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Manager said yes"}}),
        )
    })
    .await;
    let config = format!(
        "events:\n  addSessionLine:\n    forward: backend\n    hold: 150ms\n    polling:\n      pending_message: Asking the manager\nupstreams:\n{}",
        upstream("backend", &up.url(), &[])
    );
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();

    let started = Instant::now();
    let first = till.call_json("addSessionLine", &body(1, 1)).await;
    let took = started.elapsed();
    assert_eq!(first.finished(), Some(false));
    assert_eq!(first.message().as_deref(), Some("Asking the manager"));
    assert!(took >= Duration::from_millis(150), "held only {took:?}");
    assert!(took < Duration::from_secs(3), "held {took:?}");

    gate.open();
    let (done, _) = poll_until_finished(&till, "addSessionLine", 1).await;
    assert_eq!(done.message().as_deref(), Some("Manager said yes"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn keeps_polling_with_the_rules_message_while_the_forward_is_pending() {
    let (up, gate) =
        MockUpstream::start_gated(|_| MockReply::json(200, json!({"verdict": "adult"}))).await;
    let rule = r#"
        let reply = forward("backend");
        if reply == () {
            keep_polling("Checking the customer's age", "One moment please")
        } else {
            finish(`Checked: ${reply.body.verdict}`)
        }
    "#;
    let config = format!(
        "events:\n{}upstreams:\n{}",
        rule_event("addSessionLine", "check.rhai", Some("backend"), "100ms"),
        upstream("backend", &up.url(), &[])
    );
    let gw = Gateway::start(&config, &[("check.rhai", rule)]).await;
    let till = gw.till();
    let first = till.call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(first.finished(), Some(false));
    assert_eq!(
        first.message().as_deref(),
        Some("Checking the customer's age")
    );
    assert_eq!(
        customer_message(&first).as_deref(),
        Some("One moment please")
    );
    // The forward started on the first call, before the rule ran (config `forward:`).
    wait_for_requests(&up, 1).await;
    gate.open();
    let (done, _) = poll_until_finished(&till, "addSessionLine", 1).await;
    assert_eq!(done.message().as_deref(), Some("Checked: adult"));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn answers_on_the_first_call_when_the_reply_comes_within_hold() {
    let up = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Quick"}}),
        )
        .after(Duration::from_millis(100))
    })
    .await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("5s"), &[]), &[]).await;
    let started = Instant::now();
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    let took = started.elapsed();
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({"polling": {"finished": true, "message": "Quick"}})
    );
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(
        took < Duration::from_secs(4),
        "answered when the reply came, not after hold: {took:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Retries, timeouts, unusable replies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retries_server_errors_and_answers_with_the_success() {
    let up = MockUpstream::start(|n| {
        if n < 2 {
            MockReply::json(503, json!({"error": "busy"}))
        } else {
            MockReply::json(
                200,
                json!({"polling": {"finished": true, "message": "Third time lucky"}}),
            )
        }
    })
    .await;
    let gw = Gateway::start(
        &polling_forward(&up.url(), Some("10s"), &["retries: 2", "timeout: 2s"]),
        &[],
    )
    .await;
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(a.message().as_deref(), Some("Third time lucky"));
    assert_eq!(a.finished(), Some(true));

    let got = up.requests();
    assert_eq!(got.len(), 3, "two retries");
    for r in &got[1..] {
        assert_eq!(r.body, got[0].body);
        assert_eq!(
            header(r, "idempotency-key"),
            header(&got[0], "idempotency-key")
        );
        assert_eq!(
            header(r, "x-mplus-signature"),
            header(&got[0], "x-mplus-signature")
        );
    }
    assert_eq!(gw.metric(&upstream_metric("backend", "retry")).await, 2.0);
    assert_eq!(gw.metric(&upstream_metric("backend", "success")).await, 1.0);
}

#[tokio::test]
async fn answers_unavailable_after_retries_when_the_upstream_refuses_connections() {
    let port = closed_port().await;
    let gw = Gateway::start(
        &polling_forward(
            &format!("http://{port}/mplus"),
            None,
            &["retries: 2", "timeout: 1s"],
        ),
        &[],
    )
    .await;
    let till = gw.till();
    let first = till.call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(first.finished(), Some(false));
    let (done, _) = poll_until_finished(&till, "addSessionLine", 1).await;
    assert_eq!(
        done.json(),
        json!({"polling": {"finished": true, "message": UNAVAILABLE}})
    );
    assert_eq!(gw.metric(&upstream_metric("backend", "retry")).await, 2.0);
    assert_eq!(gw.metric(&upstream_metric("backend", "failure")).await, 1.0);
}

#[tokio::test]
async fn answers_unavailable_when_every_attempt_times_out() {
    let up = MockUpstream::start(|_| {
        MockReply::json(200, json!({"polling": {"finished": true}})).after(Duration::from_secs(5))
    })
    .await;
    let config = format!(
        "events:\n  addSessionLine:\n    forward: backend\n    unavailable_message: Kitchen offline; ask a colleague\n    polling: {{}}\nupstreams:\n{}",
        upstream("backend", &up.url(), &["timeout: 200ms", "retries: 1"])
    );
    let gw = Gateway::start(&config, &[]).await;
    let started = Instant::now();
    let (done, _) = poll_until_finished(&gw.till(), "addSessionLine", 1).await;
    assert_eq!(
        done.message().as_deref(),
        Some("Kitchen offline; ask a colleague")
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up before the 5s replies: {:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 2, "both attempts reached the upstream");
    assert_eq!(gw.metric(&upstream_metric("backend", "failure")).await, 1.0);
}

#[tokio::test]
async fn the_timeout_applies_to_each_attempt_not_to_the_whole_forward() {
    let up = MockUpstream::start(|n| {
        let reply = MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Second attempt"}}),
        );
        if n == 0 {
            reply.after(Duration::from_secs(5))
        } else {
            reply.after(Duration::from_millis(100))
        }
    })
    .await;
    let gw = Gateway::start(
        &polling_forward(&up.url(), Some("5s"), &["timeout: 300ms", "retries: 1"]),
        &[],
    )
    .await;
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(a.message().as_deref(), Some("Second attempt"));
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn unusable_replies_without_a_rule_are_answered_unavailable() {
    let garbage =
        MockUpstream::start(|_| MockReply::raw(200, "<html>502 Bad Gateway</html>")).await;
    let big = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true}, "pad": "x".repeat(600)}),
        )
    })
    .await;
    let chunked = chunked_upstream(600).await;
    let array = MockUpstream::start(|_| MockReply::json(200, json!([1, 2, 3]))).await;
    let client_error = MockUpstream::start(|_| {
        MockReply::json(404, json!({"polling": {"finished": true, "message": "no"}}))
    })
    .await;
    let cases = [
        ("garbage", garbage.url()),
        ("big", big.url()),
        ("chunked", chunked.url()),
        ("array", array.url()),
        ("clientError", client_error.url()),
    ];
    let mut config = String::from("events:\n");
    let mut upstreams = String::from("upstreams:\n");
    for (name, url) in &cases {
        config.push_str(&format!(
            "  {name}:\n    forward: {name}\n    hold: 5s\n    polling: {{}}\n"
        ));
        upstreams.push_str(&upstream(
            name,
            url,
            &["retries: 2", "max_reply_bytes: 512"],
        ));
    }
    config.push_str(&upstreams);
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    for (name, _) in &cases {
        let a = till.call_json(name, &body(1, 1)).await;
        assert!(a.is_signed());
        assert_eq!(
            a.json(),
            json!({"polling": {"finished": true, "message": UNAVAILABLE}}),
            "{name}"
        );
    }
    // None of these is worth a retry: the upstream answered.
    for (name, up) in [
        ("garbage", &garbage),
        ("big", &big),
        ("array", &array),
        ("clientError", &client_error),
    ] {
        assert_eq!(up.count(), 1, "{name}");
    }
    assert_eq!(chunked.count(), 1, "chunked");
}

#[tokio::test]
async fn rules_see_replies_as_documented() {
    let ok = MockUpstream::start(|_| MockReply::json(200, json!({"approved": true}))).await;
    let garbage =
        MockUpstream::start(|_| MockReply::raw(200, "<html>502 Bad Gateway</html>")).await;
    let big = MockUpstream::start(|_| MockReply::json(200, json!({"pad": "x".repeat(600)}))).await;
    let chunked = chunked_upstream(600).await;
    let failing = MockUpstream::start(|_| MockReply::json(503, json!({"error": "busy"}))).await;
    let refused = format!("http://{}/mplus", closed_port().await);
    let cases = [
        ("ok", ok.url()),
        ("garbage", garbage.url()),
        ("big", big.url()),
        ("chunked", chunked.url()),
        ("failing", failing.url()),
        ("refused", refused),
    ];
    // One rule for every event: forward to the upstream named like the event and show
    // the reply map in the answer.
    let rule = r#"
        let reply = forward(meta.name);
        if reply == () { return keep_polling(); }
        let answer = finish("seen");
        answer.reply = reply;
        answer.reply_type = type_of(reply.body);
        answer
    "#;
    let mut config = String::from("events:\n");
    let mut upstreams = String::from("upstreams:\n");
    for (name, url) in &cases {
        config.push_str(&rule_event(name, "reply.rhai", None, "5s"));
        upstreams.push_str(&upstream(
            name,
            url,
            &["retries: 1", "max_reply_bytes: 512"],
        ));
    }
    config.push_str(&upstreams);
    let gw = Gateway::start(&config, &[("reply.rhai", rule)]).await;
    let till = gw.till();
    let mut seen = HashMap::new();
    for (name, _) in &cases {
        let a = till.call_json(name, &body(1, 1)).await;
        assert_eq!(a.finished(), Some(true), "{name}: {:?}", a.body);
        let json = a.json();
        assert!(json["reply"]["elapsed_ms"].is_u64(), "{name}: {json}");
        seen.insert(*name, json);
    }
    let reply = |name: &str| seen[name]["reply"].clone();
    let error = |name: &str| reply(name)["error"].as_str().unwrap_or_default().to_owned();

    assert_eq!(reply("ok")["ok"], true);
    assert_eq!(reply("ok")["status"], 200);
    assert_eq!(reply("ok")["body"], json!({"approved": true}));
    assert_eq!(reply("ok")["error"], Value::Null);

    // Not JSON: the body reaches the rule as a string.
    assert_eq!(reply("garbage")["ok"], true);
    assert_eq!(reply("garbage")["status"], 200);
    assert_eq!(reply("garbage")["body"], "<html>502 Bad Gateway</html>");
    assert_eq!(seen["garbage"]["reply_type"], "string");
    assert_eq!(reply("garbage")["error"], Value::Null);

    // Over max_reply_bytes, announced or chunked: no usable HTTP answer.
    for name in ["big", "chunked"] {
        assert_eq!(reply(name)["ok"], false, "{name}");
        assert_eq!(reply(name)["status"], 0, "{name}");
        assert_eq!(reply(name)["body"], Value::Null, "{name}");
        assert!(
            error(name).contains("max_reply_bytes"),
            "{name}: {}",
            error(name)
        );
    }

    // A 5xx after the retries: the status and body are there, and why it is not ok.
    assert_eq!(reply("failing")["ok"], false);
    assert_eq!(reply("failing")["status"], 503);
    assert_eq!(reply("failing")["body"], json!({"error": "busy"}));
    assert!(error("failing").contains("503"), "{}", error("failing"));
    assert_eq!(failing.count(), 2, "one retry");

    assert_eq!(reply("refused")["ok"], false);
    assert_eq!(reply("refused")["status"], 0);
    assert!(error("refused").contains("connect"), "{}", error("refused"));
}

// ---------------------------------------------------------------------------------------
// Rules and forwards
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rule_builds_its_answer_from_the_reply_body() {
    let up = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"article": "Rioja", "ageLimit": 18, "lineChanges": [{"lineId": "line-1", "text": "Rioja (18+)"}]}),
        )
    })
    .await;
    let rule = r#"
        let reply = forward("backend");
        if reply == () { return keep_polling("Looking it up"); }
        if !reply.ok { return finish("Back office unavailable"); }
        let answer = finish(`${reply.body.article} needs ${reply.body.ageLimit}+`, "ID please");
        answer.lineChanges = reply.body.lineChanges;
        answer
    "#;
    let config = format!(
        "events:\n{}upstreams:\n{}",
        rule_event("addSessionLine", "age.rhai", None, "5s"),
        upstream("backend", &up.url(), &[])
    );
    let gw = Gateway::start(&config, &[("age.rhai", rule)]).await;
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({
            "polling": {"finished": true, "message": "Rioja needs 18+", "customerMessage": "ID please"},
            "lineChanges": [{"lineId": "line-1", "text": "Rioja (18+)"}]
        })
    );
    assert_eq!(up.count(), 1);
    // The rule forwarded the till's own bytes.
    assert_eq!(
        up.requests()[0].body,
        Bytes::from(serde_json::to_vec(&body(1, 1)).unwrap())
    );
}

#[tokio::test]
async fn a_rules_forward_with_a_body_sends_that_body() {
    let up = MockUpstream::start(|_| MockReply::json(200, json!({"message": "Logged"}))).await;
    let rule = r#"
        let reply = forward("backend", #{
            kind: "age-check",
            session: event.session.sessionId,
            article: event.addSessionLine.line.articleNumber,
        });
        if reply == () { keep_polling() } else { finish(reply.body.message) }
    "#;
    let config = format!(
        "events:\n{}upstreams:\n{}",
        rule_event("addSessionLine", "custom.rhai", None, "5s"),
        upstream("backend", &up.url(), &[])
    );
    let gw = Gateway::start(&config, &[("custom.rhai", rule)]).await;
    let raw = serde_json::to_vec(&body(4, 1)).unwrap();
    let a = gw.till().call("addSessionLine", raw.clone()).await;
    assert_eq!(a.message().as_deref(), Some("Logged"));

    let got = up.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/mplus/addSessionLine");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"kind": "age-check", "session": "00000000-0000-4000-8000-000000000004", "article": 1017})
    );
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "x-mplus-subscription-id"), SUBSCRIPTION);
    secret()
        .verify(header(r, "x-mplus-signature").as_bytes(), &r.body)
        .expect("the rule's body is signed");
    assert_eq!(
        header(r, "idempotency-key"),
        conversation_key(&gw, "addSessionLine", &raw)
    );
}

// ---------------------------------------------------------------------------------------
// Without a rule: the reply is the answer
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_polling_events_reply_without_polling_gets_finished_true() {
    let lines = json!([{"lineId": "line-1", "text": "Cappuccino (oat)"}]);
    let reply = json!({"lineChanges": lines});
    let up = MockUpstream::start(move |_| MockReply::json(200, reply.clone())).await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("5s"), &[]), &[]).await;
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({"lineChanges": lines, "polling": {"finished": true}})
    );
}

#[tokio::test]
async fn a_non_polling_event_waits_for_its_forward_and_answers_with_the_reply() {
    let reply = json!({"scannedCode": {"recognized": true}, "relation": {"relationNumber": 42}});
    let expected = reply.clone();
    let up = MockUpstream::start(move |_| {
        MockReply::json(200, reply.clone()).after(Duration::from_millis(300))
    })
    .await;
    let config = format!(
        "events:\n  scanCode:\n    forward: backend\nupstreams:\n{}",
        upstream("backend", &up.url(), &["timeout: 5s", "retries: 0"])
    );
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    let started = Instant::now();
    let a = till.call_json("scanCode", &body(1, 1)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, 200);
    assert!(a.is_signed(), "signed with the till's secret");
    assert_eq!(a.json(), expected, "the reply as it is: no polling added");

    let again = till.call_json("scanCode", &body(1, 2)).await;
    assert_eq!(again.body, a.body);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_non_polling_event_whose_upstream_fails_gets_the_unavailable_answer() {
    let slow = MockUpstream::start(|_| {
        MockReply::json(200, json!({"late": true})).after(Duration::from_secs(5))
    })
    .await;
    let failing = MockUpstream::start(|_| MockReply::json(503, json!({"error": "busy"}))).await;
    let refused = format!("http://{}/mplus", closed_port().await);
    let config = format!(
        "events:\n  scanCode:\n    forward: refused\n  startSession:\n    forward: slow\n  completeSession:\n    forward: failing\nupstreams:\n{}{}{}",
        upstream("refused", &refused, &["retries: 1"]),
        // No retry: the call waits exactly one timeout, so it must not stop waiting first.
        upstream("slow", &slow.url(), &["timeout: 200ms", "retries: 0"]),
        upstream("failing", &failing.url(), &["retries: 1"]),
    );
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    for event in ["scanCode", "startSession", "completeSession"] {
        let started = Instant::now();
        let a = till.call_json(event, &body(1, 1)).await;
        assert!(a.is_signed());
        assert_eq!(
            a.json(),
            json!({"polling": {"finished": true, "message": UNAVAILABLE}}),
            "{event}"
        );
        // Bounded by the upstream's timeout and retries, not by the slow reply.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{event}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(slow.count(), 1);
    assert_eq!(failing.count(), 2);
}

/// A non-polling event waits the upstream's whole budget (`timeout * (retries + 1)` plus
/// backoff), but never past `server.request_timeout`: the till gets the signed unavailable
/// answer before the last-resort deadline would answer an unsigned 503.
#[tokio::test]
async fn a_non_polling_forward_is_answered_before_the_request_deadline() {
    let slow = MockUpstream::start(|_| {
        MockReply::json(200, json!({"late": true})).after(Duration::from_secs(5))
    })
    .await;
    let config = format!(
        "server:\n  request_timeout: 1s\nevents:\n  scanCode:\n    forward: backend\nupstreams:\n{}",
        upstream("backend", &slow.url(), &["timeout: 400ms", "retries: 2"])
    );
    let gw = Gateway::start(&config, &[]).await;
    let a = gw.till().call_json("scanCode", &body(1, 1)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({"polling": {"finished": true, "message": UNAVAILABLE}})
    );
}

// ---------------------------------------------------------------------------------------
// Error requests and finished conversations
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn error_requests_are_never_forwarded() {
    let up = MockUpstream::start(|_| MockReply::json(200, json!({}))).await;
    let rule = r#"
        let reply = forward("backend");
        if reply == () { keep_polling() } else { finish("forwarded") }
    "#;
    let config = format!(
        "events:\n  addSessionLine:\n    forward: backend\n    hold: 5s\n    polling: {{}}\n{}upstreams:\n{}",
        rule_event("startPayment", "pay.rhai", None, "5s"),
        upstream("backend", &up.url(), &[])
    );
    let gw = Gateway::start(&config, &[("pay.rhai", rule)]).await;
    let till = gw.till();
    for event in ["addSessionLine", "startPayment"] {
        let mut error = body(1, 1);
        error["error"] = json!({"code": "INVALID_LINE_ID", "message": "no such line"});
        for _ in 0..3 {
            let a = till.call_json(event, &error).await;
            assert_eq!(a.status, 200);
            assert!(a.is_signed());
            assert_eq!(a.json(), json!({}), "{event}");
        }
    }
    assert!(conversations(&gw).await.is_empty());
    // The same events without `error` are forwarded: the upstream sees only those.
    for event in ["addSessionLine", "startPayment"] {
        let a = till.call_json(event, &body(2, 1)).await;
        assert_eq!(a.finished(), Some(true), "{event}");
    }
    let got = up.requests();
    assert_eq!(got.len(), 2);
    for r in &got {
        let parsed: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(parsed.get("error").is_none(), "{}", r.path);
    }
    assert_eq!(gw.metric(&upstream_metric("backend", "success")).await, 2.0);
}

#[tokio::test]
async fn replays_the_final_answer_without_a_new_forward() {
    let up = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Done once"}}),
        )
    })
    .await;
    let gw = Gateway::start(&polling_forward(&up.url(), Some("5s"), &[]), &[]).await;
    let success = upstream_metric("backend", "success");
    let replayed = "pollgate_requests_total{event=\"addSessionLine\",outcome=\"replayed\"}";
    assert_eq!(gw.metric(&success).await, 0.0);

    let till = gw.till();
    let first = till.call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(first.message().as_deref(), Some("Done once"));
    assert_eq!(gw.metric(&success).await, 1.0);
    for counter in 2..=11 {
        let again = till.call_json("addSessionLine", &body(1, counter)).await;
        assert_eq!(again.body, first.body);
        assert_eq!(again.signature, first.signature);
    }
    assert_eq!(gw.metric(replayed).await, 10.0);
    assert_eq!(gw.metric(&success).await, 1.0);
    assert_eq!(up.count(), 1);
}

// ---------------------------------------------------------------------------------------
// `pollgate demo-backend` behind the shipped startPayment rule
// ---------------------------------------------------------------------------------------

/// Starts `pollgate demo-backend` in this process; returns its base URL.
async fn demo_backend(delay: Duration, secret: &str) -> (String, tokio::task::JoinHandle<()>) {
    use pollgate::cli::demo_backend::{serve, DemoBackendArgs};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let args = DemoBackendArgs {
        listen: addr,
        delay,
        approve_up_to: 1000.0,
        secret: Some(secret.into()),
        push_to: None,
        push_token: None,
    };
    let task = tokio::spawn(async move {
        serve(listener, args).await.unwrap();
    });
    (format!("http://{addr}/mplus"), task)
}

/// The shipped startPayment config (rules/pollgate.yaml) against `url`.
async fn payment_gateway(url: &str) -> Gateway {
    let rule = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/startPayment.rhai"),
    )
    .unwrap();
    let config = format!(
        "events:\n  startPayment:\n    rule: startPayment.rhai\n    hold: 1s\n    polling:\n      timeout: 120s\n      timeout_message: \"No manager answered; please try again\"\nupstreams:\n{}",
        upstream("approvals", url, &["timeout: 10s", "retries: 2"])
    );
    Gateway::start(&config, &[("startPayment.rhai", &rule)]).await
}

fn payment(n: u32, price: f64) -> Value {
    json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventTimestamp": format!("2026-03-02T09:31:{n:02}.000+01:00")},
        "sender": {"branchNumber": 1, "workplaceNumber": 1},
        "session": {"sessionId": format!("pay-{n}"), "lines": [{"lineId": "a", "priceIncl": price, "quantity": 1}]}
    })
}

#[tokio::test]
async fn demo_backend_approves_payments_under_its_limit_and_declines_larger_ones() {
    let (url, demo) = demo_backend(Duration::from_millis(50), SECRET).await;
    let gw = payment_gateway(&url).await;
    let till = gw.till();

    let small = till.call_json("startPayment", &payment(1, 12.5)).await;
    assert_eq!(small.json(), json!({"polling": {"finished": true}}));

    let approved = till.call_json("startPayment", &payment(2, 399.0)).await;
    assert!(approved.is_signed());
    assert_eq!(approved.finished(), Some(true));
    assert_eq!(approved.message().as_deref(), Some("Approved by Sam"));
    assert_eq!(
        customer_message(&approved).as_deref(),
        Some("Thank you for waiting")
    );

    let declined = till.call_json("startPayment", &payment(3, 1500.0)).await;
    assert_eq!(declined.finished(), Some(true));
    assert_eq!(
        declined.message().as_deref(),
        Some("Declined: over the branch limit of 1000.00")
    );
    assert_eq!(
        customer_message(&declined).as_deref(),
        Some("Please see the cashier")
    );
    // Only the two large payments reached the back end, each verified by its secret.
    assert_eq!(
        gw.metric(&upstream_metric("approvals", "success")).await,
        2.0
    );
    demo.abort();
}

#[tokio::test]
async fn demo_backend_slower_than_hold_keeps_the_till_polling_until_the_manager_decides() {
    let (url, demo) = demo_backend(Duration::from_millis(1500), SECRET).await;
    let gw = payment_gateway(&url).await;
    let till = gw.till();
    let first = till.call_json("startPayment", &payment(4, 399.0)).await;
    assert_eq!(first.finished(), Some(false));
    assert_eq!(
        first.message().as_deref(),
        Some("Waiting for a manager to approve 399.0")
    );
    let done = eventually("the manager's decision", || {
        let till = till.clone();
        async move {
            let a = till.call_json("startPayment", &payment(4, 399.0)).await;
            (a.finished() == Some(true)).then_some(a)
        }
    })
    .await;
    assert_eq!(done.message().as_deref(), Some("Approved by Sam"));
    assert_eq!(
        gw.metric(&upstream_metric("approvals", "success")).await,
        1.0
    );
    demo.abort();
}

#[tokio::test]
async fn demo_backend_refuses_a_forward_signed_with_another_secret() {
    // base64 of "another-secret": the demo back end expects a key the gateway does not use.
    let (url, demo) = demo_backend(Duration::from_millis(10), "YW5vdGhlci1zZWNyZXQ=").await;
    let gw = payment_gateway(&url).await;
    let a = gw
        .till()
        .call_json("startPayment", &payment(5, 399.0))
        .await;
    assert_eq!(a.finished(), Some(true));
    assert_eq!(
        a.message().as_deref(),
        Some("Approval service unavailable: ask a manager in person")
    );
    // 401 is an answer, not a reason to retry.
    assert_eq!(
        gw.metric(&upstream_metric("approvals", "status")).await,
        1.0
    );
    assert_eq!(gw.metric(&upstream_metric("approvals", "retry")).await, 0.0);
    demo.abort();
}

// ---------------------------------------------------------------------------------------
// Several gateways sharing one Redis
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_send_one_forward() {
    if !redis_installed() {
        skip_outside_ci("redis-server not found for the shared-store forward test");
        return;
    }
    let mut redis = PrivateRedis::planned(false).await;
    redis.start().await;
    let (up, gate) = MockUpstream::start_gated(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Once for both"}}),
        )
    })
    .await;
    let config = format!(
        "{}state:\n  store: redis\n  url: {}\n  prefix: forward-test\n",
        polling_forward(&up.url(), None, &[]),
        redis.url()
    );
    let (a, b) = (
        Gateway::start(&config, &[]).await,
        Gateway::start(&config, &[]).await,
    );
    let (till_a, till_b) = (a.till(), b.till());
    let mut tasks = Vec::new();
    for counter in 1..=10 {
        for till in [&till_a, &till_b] {
            let till = till.clone();
            tasks.push(tokio::spawn(async move {
                till.call_json("addSessionLine", &body(9, counter)).await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().finished(), Some(false));
    }
    wait_for_requests(&up, 1).await;
    gate.open();
    let (done, _) = poll_until_finished(&till_b, "addSessionLine", 9).await;
    assert_eq!(done.message().as_deref(), Some("Once for both"));
    let other = till_a.call_json("addSessionLine", &body(9, 50)).await;
    assert_eq!(other.body, done.body);
    assert_eq!(up.count(), 1, "one forward across both gateways");
    let keys: HashSet<_> = up
        .requests()
        .iter()
        .map(|r| header(r, "idempotency-key").to_owned())
        .collect();
    assert_eq!(keys.len(), 1);
}
