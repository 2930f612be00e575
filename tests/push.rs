//! Pushing to tills (GATEWAY.md 9) on the real server: a held backgroundPoll call is
//! answered the moment a message is pushed, messages reach only their till, oldest first,
//! one per conversation, a retry gets the same one, withdrawn and expired ones never
//! arrive, a till gone mid-hold takes nothing, tokens guard `/push`, held calls end on
//! reload and SIGTERM, and a push through one Redis replica reaches a call held by another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHANNEL: &str = "events:\n  backgroundPoll:\n    push: {hold: 10s, ttl: 10m}\n";

/// A backgroundPoll call of till `branch`/`workplace`; `n` makes it its own conversation.
fn poll_body(branch: u32, workplace: u32, n: u32) -> Value {
    json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": n, "eventTimestamp": format!("2026-03-02T09:16:{:02}.{:03}+01:00", n % 60, n % 1000)},
        "sender": {"branchNumber": branch, "workplaceNumber": workplace, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"}
    })
}

fn card(number: &str) -> Value {
    json!({"externalCardScan": {"cardNumber": number, "cardType": "giftcard"}})
}

async fn push(gw: &Gateway, path: &str, body: &Value) -> (u16, Value) {
    push_with(&client(), gw, path, body).await
}

/// [`push`] with a client of the caller's (building one costs tens of ms in a debug build).
async fn push_with(
    client: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let r = client
        .post(gw.admin_url(&format!("/push/{path}")))
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// `GET path` on the admin listener: the status and the JSON answer.
async fn admin_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = client().get(gw.admin_url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

async fn pending(gw: &Gateway, path: &str) -> Vec<Value> {
    let (status, listed) = admin_get(gw, &format!("/push/{path}")).await;
    assert_eq!(status, 200);
    serde_json::from_value(listed).unwrap()
}

/// Waits until the gateway holds `n` calls.
async fn held(gw: &Gateway, n: f64) {
    eventually(&format!("{n} held calls"), || async move {
        (gw.metric("pollgate_push_held_calls").await == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_held_call_is_answered_the_moment_a_message_is_pushed() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let till = gw.till();
    let call =
        tokio::spawn(async move { till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await });
    held(&gw, 1.0).await;
    let pushed_at = Instant::now();
    let (status, answer) = push(&gw, "shop/3/2", &card("6012-0001")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["id"].as_str().unwrap().len(), 32);
    assert!(answer["expires_at"].as_str().unwrap().ends_with('Z'));
    let a = call.await.unwrap();
    assert!(pushed_at.elapsed() < Duration::from_secs(2));
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    assert_eq!(
        a.json(),
        json!({"externalCardScan": {"cardNumber": "6012-0001", "cardType": "giftcard"}, "polling": {"finished": true}})
    );
    assert!(pending(&gw, "shop/3/2").await.is_empty());
    assert_eq!(
        gw.metric("pollgate_push_messages_total{outcome=\"queued\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("pollgate_push_messages_total{outcome=\"delivered\"}")
            .await,
        1.0
    );
    assert_eq!(gw.metric("pollgate_push_held_calls").await, 0.0);
    assert_eq!(gw.metric("pollgate_push_pending").await, 0.0);
}

#[tokio::test]
async fn with_nothing_pending_the_hold_ends_with_finished_false_even_past_request_timeout() {
    let config =
        "server:\n  request_timeout: 300ms\nevents:\n  backgroundPoll:\n    push: {hold: 700ms}\n";
    let gw = Gateway::start(config, &[]).await;
    let started = Instant::now();
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
}

#[tokio::test]
async fn another_workplace_branch_or_subscription_never_gets_the_message() {
    let config = "subscriptions:\n  shop: {secret: ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz}\n  other: {secret: ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz}\nevents:\n  backgroundPoll:\n    push: {hold: 300ms}\n";
    let gw = Gateway::start(config, &[]).await;
    for path in ["shop/3/9", "shop/9/2", "other/3/2"] {
        assert_eq!(push(&gw, path, &card(path)).await.0, 202);
    }
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
    for path in ["shop/3/9", "shop/9/2", "other/3/2"] {
        let list = pending(&gw, path).await;
        assert_eq!(list.len(), 1, "{path}");
        assert_eq!(list[0]["body"], card(path));
    }
    let mut other = gw.till();
    other.subscription = "other".into();
    let a = other.call_json("backgroundPoll", &poll_body(3, 2, 2)).await;
    assert_eq!(a.json()["externalCardScan"]["cardNumber"], "other/3/2");
}

#[tokio::test]
async fn messages_come_oldest_first_one_per_conversation_and_a_retry_gets_the_same_one() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    for n in ["1", "2", "3"] {
        assert_eq!(push(&gw, "shop/3/2", &card(n)).await.0, 202);
    }
    let list = pending(&gw, "shop/3/2").await;
    let numbers: Vec<&Value> = list
        .iter()
        .map(|m| &m["body"]["externalCardScan"]["cardNumber"])
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let till = gw.till();
    let first = till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await;
    assert_eq!(first.json()["externalCardScan"]["cardNumber"], "1");
    let retry = till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await;
    assert_eq!(
        retry.body, first.body,
        "a retried call gets the same message again"
    );
    let second = till.call_json("backgroundPoll", &poll_body(3, 2, 2)).await;
    assert_eq!(second.json()["externalCardScan"]["cardNumber"], "2");
    assert_eq!(pending(&gw, "shop/3/2").await.len(), 1);
}

#[tokio::test]
async fn a_withdrawn_message_never_arrives() {
    let config = "events:\n  backgroundPoll:\n    push: {hold: 200ms}\n";
    let gw = Gateway::start(config, &[]).await;
    let (_, pushed) = push(&gw, "shop/3/2", &card("1")).await;
    let id = pushed["id"].as_str().unwrap();
    let url = gw.admin_url(&format!("/push/shop/3/2/{id}"));
    let r = client().delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap(),
        json!({"id": id, "status": "withdrawn"})
    );
    let again = client().delete(&url).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&again.bytes().await.unwrap()).unwrap()["error"]["code"],
        "NOT_FOUND"
    );
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
    assert_eq!(
        gw.metric("pollgate_push_messages_total{outcome=\"withdrawn\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_message_not_delivered_within_ttl_expires_and_is_counted() {
    let config = "events:\n  backgroundPoll:\n    push: {hold: 200ms, ttl: 100ms}\n";
    let gw = Gateway::start(config, &[]).await;
    let (_, pushed) = push(&gw, "shop/3/2", &card("1")).await;
    let queued = pushed["expires_at"].as_str().unwrap().to_owned();
    assert!(!queued.is_empty());
    eventually("the message to expire", || async {
        pending(&gw, "shop/3/2").await.is_empty().then_some(())
    })
    .await;
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
    assert_eq!(
        gw.metric("pollgate_push_messages_total{outcome=\"expired\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_till_gone_mid_hold_takes_nothing() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let body = serde_json::to_vec(&poll_body(3, 2, 1)).unwrap();
    let signature = secret().sign(&body);
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/backgroundPoll HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{SUBSCRIPTION_HEADER}: {SUBSCRIPTION}\r\nx-mplus-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &body)
        .await
        .unwrap();
    held(&gw, 1.0).await;
    drop(stream);
    held(&gw, 0.0).await;
    assert_eq!(push(&gw, "shop/3/2", &card("1")).await.0, 202);
    assert_eq!(pending(&gw, "shop/3/2").await.len(), 1, "nobody took it");
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 2))
        .await;
    assert_eq!(a.json()["externalCardScan"]["cardNumber"], "1");
}

#[tokio::test]
async fn a_rule_sees_the_message_as_push_and_takes_it_only_when_it_finishes() {
    let rule = r#"
if push == () { return keep_polling("nothing yet"); }
if push.externalCardScan.cardNumber == "wait" { return keep_polling("not this one"); }
let a = push;
a.polling = #{finished: true, message: `card ${push.externalCardScan.cardNumber}`};
a
"#;
    let config = "events:\n  backgroundPoll:\n    rule: poll.rhai\n    push: {hold: 200ms}\n";
    let gw = Gateway::start(config, &[("poll.rhai", rule)]).await;
    let till = gw.till();
    let empty = till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await;
    assert_eq!(
        empty.json(),
        json!({"polling": {"finished": false, "message": "nothing yet"}})
    );
    push(&gw, "shop/3/2", &card("wait")).await;
    let kept = till.call_json("backgroundPoll", &poll_body(3, 2, 2)).await;
    assert_eq!(
        kept.json(),
        json!({"polling": {"finished": false, "message": "not this one"}})
    );
    assert_eq!(
        pending(&gw, "shop/3/2").await.len(),
        1,
        "an unfinished answer takes nothing"
    );
    let list = pending(&gw, "shop/3/2").await;
    let id = list[0]["id"].as_str().unwrap();
    client()
        .delete(gw.admin_url(&format!("/push/shop/3/2/{id}")))
        .send()
        .await
        .unwrap();
    push(&gw, "shop/3/2", &card("7")).await;
    let done = till.call_json("backgroundPoll", &poll_body(3, 2, 3)).await;
    assert_eq!(
        done.json(),
        json!({"externalCardScan": {"cardNumber": "7", "cardType": "giftcard"}, "polling": {"finished": true, "message": "card 7"}})
    );
    assert!(pending(&gw, "shop/3/2").await.is_empty());
}

#[tokio::test]
async fn bad_pushes_get_the_exact_error() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let url = gw.admin_url("/push/shop/3/2");
    let cases: [(&str, u16, &str); 3] = [
        ("[1, 2]", 400, "INVALID_DATA"),
        ("{\"externalCardScan\": ", 400, "INVALID_JSON"),
        ("\"text\"", 400, "INVALID_DATA"),
    ];
    for (body, status, code) in cases {
        let r = client().post(&url).body(body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()["error"]["code"],
            code,
            "{body}"
        );
    }
    let (status, answer) = push(&gw, "nobody/3/2", &card("1")).await;
    assert_eq!(status, 404);
    assert_eq!(
        answer,
        json!({"error": {"code": "NOT_FOUND", "message": "no subscription `nobody` (not under `subscriptions:`)"}})
    );
    let (status, answer) = push(&gw, "shop/3/a%20b", &card("1")).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "INVALID_TILL");
    let r = client().put(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    let r = client()
        .get(gw.admin_url("/push/shop/3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .delete(format!("{url}/not-an-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(pending(&gw, "shop/3/2").await.is_empty());
}

#[tokio::test]
async fn a_push_without_a_push_channel_is_refused() {
    let gw = Gateway::start("events:\n  \"*\":\n    respond: {}\n", &[]).await;
    let (status, answer) = push(&gw, "shop/3/2", &card("1")).await;
    assert_eq!(status, 409);
    assert_eq!(answer["error"]["code"], "PUSH_NOT_CONFIGURED");
}

#[tokio::test]
async fn the_push_token_opens_only_push_and_the_admin_token_everything() {
    let config = format!("admin:\n  token: adm-token\n  push_token: psh-token\n{CHANNEL}");
    let gw = Gateway::start(&config, &[]).await;
    let url = gw.admin_url("/push/shop/3/2");
    let send = |token: Option<&'static str>| {
        let mut r = client()
            .post(&url)
            .body(serde_json::to_vec(&card("1")).unwrap());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(send(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(send(Some("psh-token")).await.unwrap().status(), 202);
    assert_eq!(send(Some("adm-token")).await.unwrap().status(), 202);
    let list = client()
        .get(&url)
        .bearer_auth("psh-token")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&list.bytes().await.unwrap())
            .unwrap()
            .len(),
        2
    );
    for path in ["/conversations", "/metrics", "/reload"] {
        let r = client()
            .get(gw.admin_url(path))
            .bearer_auth("psh-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth("adm-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_reload_answers_held_calls_at_once() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let till = gw.till();
    let call =
        tokio::spawn(async move { till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await });
    held(&gw, 1.0).await;
    let started = Instant::now();
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let a = call.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
}

#[tokio::test]
async fn many_held_calls_are_each_answered_with_their_own_message() {
    const TILLS: u32 = 300;
    let config = "events:\n  backgroundPoll:\n    push: {hold: 60s}\n";
    let gw = Gateway::start(config, &[]).await;
    let mut calls = Vec::new();
    for w in 0..TILLS {
        let till = gw.till();
        calls.push(tokio::spawn(async move {
            till.call_json("backgroundPoll", &poll_body(1, w, w)).await
        }));
    }
    held(&gw, f64::from(TILLS)).await;
    let back_end = client();
    for w in 0..TILLS {
        let (status, _) = push_with(
            &back_end,
            &gw,
            &format!("shop/1/{w}"),
            &card(&w.to_string()),
        )
        .await;
        assert_eq!(status, 202);
    }
    for (w, call) in calls.into_iter().enumerate() {
        let a = call.await.unwrap();
        assert_eq!(
            a.json()["externalCardScan"]["cardNumber"],
            w.to_string(),
            "{}",
            a.json()
        );
    }
    held(&gw, 0.0).await;
}

#[tokio::test]
async fn sigterm_answers_held_calls_at_once() {
    let p = Process::serve("events:\n  backgroundPoll:\n    push: {hold: 30s}\n", &[]).await;
    let till = p.till();
    let call =
        tokio::spawn(async move { till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await });
    let metrics = format!("http://{}/metrics", p.admin);
    eventually("the call to be held", || {
        let metrics = metrics.clone();
        async move {
            let text = client().get(metrics).send().await.ok()?.text().await.ok()?;
            (metric_value(&text, "pollgate_push_held_calls") == 1.0).then_some(())
        }
    })
    .await;
    let started = Instant::now();
    p.signal("TERM");
    let a = call.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    assert_eq!(a.json(), json!({"polling": {"finished": false}}));
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_push_through_one_redis_replica_reaches_a_call_held_by_another() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let config = format!(
        "state:\n  store: redis\n  url: {url}\n  prefix: {}\n{CHANNEL}",
        unique_prefix()
    );
    let (a, b) = (
        Gateway::start(&config, &[]).await,
        Gateway::start(&config, &[]).await,
    );
    let till = b.till();
    let call =
        tokio::spawn(async move { till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await });
    held(&b, 1.0).await;
    assert_eq!(push(&a, "shop/3/2", &card("via-a")).await.0, 202);
    let answer = call.await.unwrap();
    assert_eq!(answer.json()["externalCardScan"]["cardNumber"], "via-a");
    assert!(pending(&a, "shop/3/2").await.is_empty());
    assert_eq!(
        b.metric("pollgate_push_messages_total{outcome=\"delivered\"}")
            .await,
        1.0
    );
    // The retry through the other replica gets the same message.
    let retry = a
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert_eq!(retry.body, answer.body);
}

#[tokio::test]
async fn simulate_keeps_polling_background_poll_and_prints_each_pushed_message() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let simulate = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["simulate", "--url", &format!("http://{}/webhooks", gw.addr)])
        .args([
            "--event",
            "backgroundPoll",
            "--secret",
            SECRET,
            "--subscription",
            "shop",
        ])
        .args(["--max-polls", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let delivered = "pollgate_push_messages_total{outcome=\"delivered\"}";
    for (n, number) in ["6012-0001", "6012-0002"].into_iter().enumerate() {
        eventually("simulate's call to be held", || async {
            let text = gw.metrics().await;
            let ready = metric_value(&text, delivered) == n as f64
                && metric_value(&text, "pollgate_push_held_calls") == 1.0;
            ready.then_some(())
        })
        .await;
        // `simulate` is the till of branch 1, workplace 1.
        assert_eq!(push(&gw, "shop/1/1", &card(number)).await.0, 202);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || simulate.wait_with_output()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for number in ["6012-0001", "6012-0002"] {
        let line = format!(
            "   pushed message:   {{\"externalCardScan\":{{\"cardNumber\":\"{number}\",\"cardType\":\"giftcard\"}}}}"
        );
        assert!(stdout.lines().any(|l| l == line), "{line}\n{stdout}");
    }
    assert!(
        stdout.ends_with("stopped after --max-polls 2: 2 pushed messages arrived\n"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_demo_back_end_pushes_a_kiosks_gift_card_scan_to_its_till() {
    let config = format!("admin:\n  push_token: kiosk-token\n{CHANNEL}");
    let gw = Gateway::start(&config, &[]).await;
    let addr = closed_port().await;
    let admin = format!("http://{}", gw.admin);
    // The binary, as an operator runs it (its own process, its own TLS provider set-up).
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args([
            "demo-backend",
            "--listen",
            &addr.to_string(),
            "--push-to",
            &admin,
        ])
        .env("POLLGATE_PUSH_TOKEN", "kiosk-token")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/giftcard/shop/3/2");
    let r = eventually("the demo back end to answer", || {
        let url = url.clone();
        async move {
            client()
                .post(url)
                .body(r#"{"cardNumber": "6012-0001"}"#)
                .send()
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(r.status(), 202);
    let a = gw
        .till()
        .call_json("backgroundPoll", &poll_body(3, 2, 1))
        .await;
    assert_eq!(
        a.json(),
        json!({"externalCardScan": {"cardNumber": "6012-0001", "balance": 44.0, "currency": "EUR"}, "polling": {"finished": true}})
    );
    let bad = client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let _ = demo.kill();
    let _ = demo.wait();
}

#[tokio::test]
async fn the_shipped_push_rule_shows_the_cashier_the_card() {
    let rule = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/push/backgroundPoll.rhai"),
    )
    .unwrap();
    let config = "events:\n  backgroundPoll:\n    rule: poll.rhai\n    push: {hold: 200ms}\n";
    let gw = Gateway::start(config, &[("poll.rhai", &rule)]).await;
    let till = gw.till();
    let empty = till.call_json("backgroundPoll", &poll_body(3, 2, 1)).await;
    assert_eq!(empty.json(), json!({"polling": {"finished": false}}));
    push(&gw, "shop/3/2", &card("6012-0001")).await;
    let a = till.call_json("backgroundPoll", &poll_body(3, 2, 2)).await;
    assert_eq!(
        a.json(),
        json!({"externalCardScan": {"cardNumber": "6012-0001", "cardType": "giftcard"}, "polling": {"finished": true, "message": "Gift card 6012-0001"}})
    );
}

#[tokio::test]
async fn a_push_over_max_body_bytes_is_413() {
    let config = format!("server:\n  max_body_bytes: 100\n{CHANNEL}");
    let gw = Gateway::start(&config, &[]).await;
    let (status, answer) = push(&gw, "shop/3/2", &card(&"9".repeat(200))).await;
    assert_eq!(status, 413);
    assert_eq!(
        answer,
        json!({"error": {"code": "PAYLOAD_TOO_LARGE", "message": "the body is over server.max_body_bytes (100)"}})
    );
    assert!(pending(&gw, "shop/3/2").await.is_empty());
}

#[tokio::test]
async fn get_push_lists_every_tills_pending_messages_newest_first() {
    let gw = Gateway::start(CHANNEL, &[]).await;
    let (_, first) = push(&gw, "shop/3/2", &card("1")).await;
    let (_, second) = push(&gw, "shop/4/1", &card("2")).await;
    let (_, third) = push(&gw, "shop/3/2", &card("3")).await;
    let (status, listed) = admin_get(&gw, "/push").await;
    assert_eq!(status, 200);
    let listed: Vec<Value> = serde_json::from_value(listed).unwrap();
    let mut tills: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap(),
                m["branch"].as_str().unwrap(),
                m["workplace"].as_str().unwrap(),
            )
        })
        .collect();
    // Newest first; pushed within a millisecond, two may tie on queued_at.
    let queued: Vec<&str> = listed
        .iter()
        .map(|m| m["queued_at"].as_str().unwrap())
        .collect();
    assert!(queued.windows(2).all(|w| w[0] >= w[1]), "{queued:?}");
    let mut expected = vec![
        (first["id"].as_str().unwrap(), "3", "2"),
        (second["id"].as_str().unwrap(), "4", "1"),
        (third["id"].as_str().unwrap(), "3", "2"),
    ];
    tills.sort_unstable();
    expected.sort_unstable();
    assert_eq!(tills, expected);
    let newest = listed
        .iter()
        .find(|m| m["id"] == third["id"])
        .unwrap()
        .clone();
    assert_eq!(
        newest,
        json!({
            "subscription": "shop", "branch": "3", "workplace": "2",
            "id": third["id"], "queued_at": newest["queued_at"], "expires_at": third["expires_at"],
            "body": card("3"),
        })
    );

    let (status, one) = admin_get(&gw, "/push?limit=1").await;
    assert_eq!(
        (status, one.as_array().unwrap().as_slice()),
        (200, &listed[..1])
    );
    assert_eq!(
        admin_get(&gw, "/push?limit=none").await,
        (
            400,
            json!({"error": {"code": "INVALID_QUERY", "message": "limit: `none` is not a number from 1 to 1000"}})
        )
    );
    let r = client().post(gw.admin_url("/push")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}
