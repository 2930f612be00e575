//! The admin listener, metrics and hot reload (GATEWAY.md 6), on the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const POLLING: &str = "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n";

async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let r = client().get(gw.admin_url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post_reload(gw: &Gateway) -> (u16, Value) {
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    (
        r.status().as_u16(),
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_port_only() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish()")]).await;
    assert_eq!(
        get(&gw, "/healthz").await,
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    assert_eq!(
        get(&gw, "/readyz").await,
        (200, r#"{"status":"ready","store":"memory"}"#.to_owned())
    );
    for path in ["/healthz", "/readyz", "/metrics", "/conversations"] {
        let r = client()
            .get(format!("http://{}{path}", gw.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            404,
            "{path} must not be served on the webhook port"
        );
    }
    let r = client()
        .post(format!("http://{}/reload", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client().get(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(get(&gw, "/nope").await.0, 404);
}

#[tokio::test]
async fn readiness_goes_false_when_shutdown_begins_while_held_calls_finish() {
    let upstream = MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "done"}}),
        )
        .after(std::time::Duration::from_millis(800))
    })
    .await;
    let config = format!("events:\n  startPayment:\n    forward: backend\n    hold: 5s\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n", upstream.url());
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    let held = tokio::spawn(async move { till.call_json("startPayment", &body(1, 1)).await });
    eventually("the forward to start", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    gw.begin_stop();
    eventually("readiness to go false", || async {
        (get(&gw, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    let answer = held.await.unwrap();
    assert_eq!(
        (answer.status, answer.message().as_deref()),
        (200, Some("done"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn metrics_move_with_calls_rule_errors_and_reloads() {
    let gw = Gateway::start(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n  scanCode:\n    rule: broken.rhai\n",
        &[("rule.rhai", "keep_polling(\"wait\")"), ("broken.rhai", "no_such_function()")],
    )
    .await;
    let till = gw.till();
    for n in 0..3 {
        assert_eq!(
            till.call_json("addSessionLine", &body(n, 1)).await.status,
            200
        );
    }
    assert_eq!(
        till.call("scanCode", r#"{"scanCode":{}}"#).await.json(),
        json!({})
    );
    let _ = till.send("addSessionLine", "{}".into(), &[]).await;
    let text = gw.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_requests_total{event="addSessionLine",outcome="keep_polling"}"#
        ),
        3.0
    );
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_requests_total{event="scanCode",outcome="rule_error"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_requests_total{event="addSessionLine",outcome="bad_request"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(&text, r#"pollgate_rule_errors_total{event="scanCode"}"#),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_request_duration_seconds_count{event="addSessionLine"}"#
        ),
        4.0
    );
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_rule_evaluation_duration_seconds_count{event="addSessionLine"}"#
        ),
        3.0
    );
    assert_eq!(metric_value(&text, "pollgate_conversations_active"), 4.0);
    assert_eq!(metric_value(&text, "pollgate_config_generation"), 1.0);
    assert!(text.contains(r#"pollgate_reloads_total{result="error"} 0"#));
    // Labels are bounded: the raw event name of an unconfigured event never appears.
    let _ = till.call("someUnknownEvent", "{}").await;
    let text = gw.metrics().await;
    assert!(!text.contains("someUnknownEvent"));
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_requests_total{event="unconfigured",outcome="unconfigured"}"#
        ),
        1.0
    );
    let r = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn metrics_list_the_request_series_that_can_happen_sorted_with_a_405_of_its_own() {
    let gw = Gateway::start(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n  completeSession:\n    respond: {}\n",
        &[("rule.rhai", "finish()")],
    )
    .await;
    // A GET on a webhook path: 405, counted as such (not as a 404).
    let r = client().get(gw.url("addSessionLine")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let text = gw.metrics().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pollgate_requests_total{"))
        .collect();
    let expected: Vec<String> = [
        ("addSessionLine", "bad_request", 0),
        ("addSessionLine", "body_timeout", 0),
        ("addSessionLine", "deadline", 0),
        ("addSessionLine", "error_request", 0),
        ("addSessionLine", "finished", 0),
        ("addSessionLine", "keep_polling", 0),
        ("addSessionLine", "overloaded", 0),
        ("addSessionLine", "rejected", 0),
        ("addSessionLine", "replayed", 0),
        ("addSessionLine", "rule_error", 0),
        ("addSessionLine", "store_error", 0),
        ("addSessionLine", "timeout", 0),
        ("addSessionLine", "too_large", 0),
        ("completeSession", "answered", 0),
        ("completeSession", "bad_request", 0),
        ("completeSession", "body_timeout", 0),
        ("completeSession", "deadline", 0),
        ("completeSession", "error_request", 0),
        ("completeSession", "overloaded", 0),
        ("completeSession", "replayed", 0),
        ("completeSession", "rule_error", 0),
        ("completeSession", "store_error", 0),
        ("completeSession", "too_large", 0),
        ("none", "method_not_allowed", 1),
        ("none", "not_found", 0),
        ("unconfigured", "bad_request", 0),
        ("unconfigured", "body_timeout", 0),
        ("unconfigured", "overloaded", 0),
        ("unconfigured", "too_large", 0),
        ("unconfigured", "unconfigured", 0),
    ]
    .iter()
    .map(|(event, outcome, n)| {
        format!(r#"pollgate_requests_total{{event="{event}",outcome="{outcome}"}} {n}"#)
    })
    .collect();
    assert_eq!(series, expected, "{text}");
    assert!(
        text.contains(&format!(
            "# TYPE pollgate_build_info gauge\npollgate_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn with_a_fallback_event_no_call_is_counted_as_unconfigured() {
    let gw = Gateway::start("events:\n  \"*\":\n    respond: {}\n", &[]).await;
    let _ = gw.till().call("someEvent", "{}").await;
    let text = gw.metrics().await;
    assert!(
        !text.contains(r#"pollgate_requests_total{event="unconfigured""#),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            r#"pollgate_requests_total{event="*",outcome="answered"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn conversations_lists_live_conversations_without_bodies_or_secrets() {
    let gw = Gateway::start(
        POLLING,
        &[(
            "rule.rhai",
            "if poll.attempt < 2 { keep_polling(\"wait\") } else { finish(\"done\") }",
        )],
    )
    .await;
    let till = gw.till();
    till.call_json("addSessionLine", &body(7, 1)).await;
    till.call_json("addSessionLine", &body(8, 1)).await;
    till.call_json("addSessionLine", &body(8, 2)).await;
    let (status, text) = get(&gw, "/conversations").await;
    assert_eq!(status, 200);
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(list.len(), 2);
    for c in &list {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "age_ms",
                "attempts",
                "customer_message",
                "decision",
                "event",
                "finished",
                "idle_ms",
                "key",
                "message",
                "pending_forwards",
                "subscription",
                "till"
            ]
        );
        assert_eq!(c["event"], "addSessionLine");
        assert_eq!(c["subscription"], "shop");
        assert_eq!(c["till"], json!({"branch": 3, "workplace": 2}));
        assert_eq!(c["customer_message"], Value::Null);
        assert_eq!(c["key"].as_str().unwrap().len(), 32);
        let said = (c["finished"] == true).then_some(("finished", "done"));
        let (decision, message) = said.unwrap_or(("keep_polling", "wait"));
        assert_eq!(
            (c["decision"].as_str(), c["message"].as_str()),
            (Some(decision), Some(message))
        );
    }
    let finished: Vec<(u64, bool)> = list
        .iter()
        .map(|c| {
            (
                c["attempts"].as_u64().unwrap(),
                c["finished"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        finished.contains(&(2, true)) && finished.contains(&(1, false)),
        "{finished:?}"
    );
    assert!(!text.contains(SECRET) && !text.contains("Cappuccino"));
    let (_, filtered) = get(&gw, "/conversations?event=addSessionLine&limit=5").await;
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&filtered).unwrap().len(),
        2
    );
    let (_, none) = get(&gw, "/conversations?event=scanCode").await;
    assert_eq!(none, "[]");
    let (_, limited) = get(&gw, "/conversations?limit=1").await;
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&limited).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn post_reload_swaps_in_the_new_rule_for_the_next_call() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish(\"old\")")]).await;
    let till = gw.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    std::fs::write(gw.dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
    assert_eq!(
        post_reload(&gw).await,
        (200, json!({"ok": true, "generation": 2}))
    );
    assert_eq!(
        till.call_json("addSessionLine", &body(2, 1))
            .await
            .message()
            .as_deref(),
        Some("new")
    );
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        1.0
    );
    assert_eq!(gw.metric("pollgate_config_generation").await, 2.0);
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_rules_and_says_why() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish(\"old\")")]).await;
    std::fs::write(gw.dir.path().join("rule.rhai"), "finish(\"new\"\nlet = ;").unwrap();
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 422);
    assert_eq!(answer["ok"], false);
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    let error = errors[0].as_str().unwrap();
    let rule = gw.dir.path().join("rule.rhai");
    assert!(
        error.starts_with(&format!("{}:2:", rule.display())),
        "{error}"
    );
    assert_eq!(
        gw.till()
            .call_json("addSessionLine", &body(3, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="error"}"#).await,
        1.0
    );
    assert_eq!(gw.metric("pollgate_config_generation").await, 1.0);

    // A broken config file is refused the same way, naming the file and key.
    std::fs::write(gw.dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
    let config = gw.dir.path().join("pollgate.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("rule: rule.rhai", "rule: missing.rhai"),
    )
    .unwrap();
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 422);
    let error = answer["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{}: events.addSessionLine.rule: cannot read rule file",
            config.display()
        )),
        "{error}"
    );
    assert_eq!(
        gw.till()
            .call_json("addSessionLine", &body(4, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
}

#[tokio::test]
async fn a_change_in_the_rules_folder_reloads_by_itself() {
    let gw = Gateway::start(
        &format!("watch: true\n{POLLING}"),
        &[("rule.rhai", "finish(\"old\")")],
    )
    .await;
    let till = gw.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    // Replace the file the way editors and `git pull` do: write elsewhere, rename over it.
    let tmp = gw.dir.path().join(".rule.rhai.tmp");
    std::fs::write(&tmp, "finish(\"new\")").unwrap();
    std::fs::rename(&tmp, gw.dir.path().join("rule.rhai")).unwrap();
    let mut n = 100;
    eventually("the watcher to reload the changed rule", || {
        n += 1;
        let till = till.clone();
        async move {
            (till
                .call_json("addSessionLine", &body(n, 1))
                .await
                .message()
                .as_deref()
                == Some("new"))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn calls_during_repeated_reloads_never_fail() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish(\"v0\")")]).await;
    let till = gw.till();
    let calls = tokio::spawn(async move {
        let mut answers = Vec::new();
        for n in 0..300 {
            let a = till.call_json("addSessionLine", &body(n, 1)).await;
            answers.push((a.status, a.is_signed(), a.finished(), a.message()));
        }
        answers
    });
    for generation in 1..=20 {
        std::fs::write(
            gw.dir.path().join("rule.rhai"),
            format!("finish(\"v{generation}\")"),
        )
        .unwrap();
        assert_eq!(post_reload(&gw).await.0, 200);
    }
    let answers = calls.await.unwrap();
    assert_eq!(answers.len(), 300);
    for (status, signed, finished, message) in answers {
        assert_eq!((status, signed, finished), (200, true, Some(true)));
        assert!(message.unwrap().starts_with('v'));
    }
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        20.0
    );
}

/// Writes generation `generation` of the 100 rules `e0.rhai`..`e99.rhai`.
fn write_hundred_rules(dir: &std::path::Path, generation: u32) {
    for i in 0..100 {
        std::fs::write(
            dir.join(format!("e{i}.rhai")),
            format!("finish(\"e{i} v{generation}\")"),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_100_rule_files_while_calls_run_loses_no_call() {
    let config: String = std::iter::once("events:\n".to_owned())
        .chain((0..100).map(|i| format!("  e{i}:\n    rule: e{i}.rhai\n    polling: {{}}\n")))
        .collect();
    let rules: Vec<(String, String)> = (0..100)
        .map(|i| (format!("e{i}.rhai"), format!("finish(\"e{i} v0\")")))
        .collect();
    let files: Vec<(&str, &str)> = rules
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let gw = Gateway::start(&config, &files).await;

    // One till calls the 100 events in turn, a new conversation each call, until told to
    // stop; `answered` lets the reloads wait for calls between them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = {
        let (till, stop, answered) = (gw.till(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let event = format!("e{}", n % 100);
                let a = till.call_json(&event, &body(n, 1)).await;
                assert_eq!(
                    (a.status, a.is_signed(), a.finished()),
                    (200, true, Some(true)),
                    "call {n}: {:?}",
                    a.body
                );
                let message = a.message().unwrap();
                let generation = message
                    .strip_prefix(&format!("{event} v"))
                    .unwrap_or_else(|| panic!("call {n} to {event}: {message:?}"));
                seen.push(generation.parse::<u32>().unwrap());
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                n += 1;
            }
            seen
        })
    };
    for generation in 1..=5 {
        write_hundred_rules(gw.dir.path(), generation);
        assert_eq!(
            post_reload(&gw).await,
            (200, json!({"ok": true, "generation": generation + 1}))
        );
        // Calls answered after this reload, before the next one starts (or the caller
        // failed: its panic is reported below).
        let before = answered.load(std::sync::atomic::Ordering::SeqCst);
        eventually("calls to go on after the reload", || async {
            (calls.is_finished()
                || answered.load(std::sync::atomic::Ordering::SeqCst) >= before + 20)
                .then_some(())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = calls.await.unwrap();
    assert!(seen.len() >= 100, "{} calls", seen.len());
    // One till, one call at a time: once a call saw a generation, none later sees an older one.
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "generations went back: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&5));
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        5.0
    );
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="error"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn refuses_requests_from_other_sites_pages_with_403() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish()")]).await;
    // A form on evil.example posting to the admin listener: text/plain needs no preflight.
    let r = client()
        .post(gw.admin_url("/reload"))
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "CROSS_ORIGIN");
    let r = client()
        .get(gw.admin_url("/conversations"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        gw.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        0.0,
        "nothing reloaded"
    );
    // The listener's own origin, and tools that send no Origin, pass.
    let r = client()
        .post(gw.admin_url("/reload"))
        .header("origin", format!("http://{}", gw.admin))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(post_reload(&gw).await.0, 200);
}

#[tokio::test]
async fn the_conversation_list_is_capped_at_1000_whatever_the_limit() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "keep_polling()")]).await;
    let mut tills = Vec::new();
    for part in 0..5u32 {
        let till = gw.till();
        tills.push(tokio::spawn(async move {
            for n in part * 201..(part + 1) * 201 {
                assert_eq!(
                    till.call_json("addSessionLine", &body(n, 1)).await.status,
                    200
                );
            }
        }));
    }
    for till in tills {
        till.await.unwrap();
    }
    for path in ["/conversations?limit=1000000000", "/conversations"] {
        let (status, text) = get(&gw, path).await;
        assert_eq!(status, 200);
        let list: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(list.len(), 1000, "{path}");
    }
}

#[tokio::test]
async fn admin_error_answers_are_exact_and_unsigned() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish()")]).await;
    let exact = |r: &reqwest::Response, status: u16| {
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(
            r.headers().get("x-mplus-signature").is_none(),
            "no till reads admin answers: never signed"
        );
    };
    let r = client().get(gw.admin_url("/nope")).send().await.unwrap();
    exact(&r, 404);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"code":"NOT_FOUND","message":"admin endpoints: /healthz /readyz /metrics /conversations /deliveries /push /reload (every one, with its answers: GET /openapi.json)"}}"#
    );
    for (method, path, allow) in [
        (reqwest::Method::GET, "/reload", "POST"),
        (reqwest::Method::POST, "/metrics", "GET"),
        (reqwest::Method::DELETE, "/conversations", "GET"),
    ] {
        let r = client()
            .request(method, gw.admin_url(path))
            .send()
            .await
            .unwrap();
        exact(&r, 405);
        assert_eq!(r.headers()["allow"], allow, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            format!(r#"{{"error":{{"code":"METHOD_NOT_ALLOWED","message":"use {allow}"}}}}"#)
        );
    }
    let r = client()
        .post(gw.admin_url("/reload"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    exact(&r, 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"code":"CROSS_ORIGIN","message":"Sec-Fetch-Site says the request comes from another site; the admin endpoints refuse requests from other sites' pages"}}"#
    );
}

const TOKENS: &str = "admin:\n  token: ${ADMIN_TOKEN}\n  push_token: push-only\nevents:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n";

async fn with_tokens() -> Gateway {
    let env = [("ADMIN_TOKEN".to_owned(), "the-admin-token".to_owned())].into();
    Gateway::start_with_env(TOKENS, &[("rule.rhai", "finish()")], env).await
}

async fn admin_request(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = client().request(method, gw.admin_url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn with_admin_token_every_endpoint_but_health_and_readiness_needs_it() {
    let gw = with_tokens().await;
    for path in ["/healthz", "/readyz"] {
        let r = admin_request(&gw, reqwest::Method::GET, path, None).await;
        assert_eq!(r.status(), 200, "{path} stays open for probes");
    }
    for (method, path) in [
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::GET, "/conversations"),
        (reqwest::Method::POST, "/reload"),
        (reqwest::Method::GET, "/nope"),
    ] {
        let r = admin_request(&gw, method.clone(), path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(r.headers().get("x-mplus-signature").is_none());
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"error":{"code":"UNAUTHORIZED","message":"this endpoint needs an Authorization: Bearer <admin.token> header"}}"#
        );
        let ok = admin_request(&gw, method, path, Some("Bearer the-admin-token")).await;
        assert_ne!(ok.status(), 401, "{path} with the token");
    }
    let ok = admin_request(
        &gw,
        reqwest::Method::GET,
        "/metrics",
        Some("bearer  the-admin-token "),
    )
    .await;
    assert_eq!(ok.status(), 200, "the scheme is case-insensitive");
}

#[tokio::test]
async fn a_wrong_or_push_only_token_gets_401_with_the_exact_reason() {
    let gw = with_tokens().await;
    let cases = [
        (
            "Bearer the-admin-tokeN",
            r#"Bearer error="invalid_token""#,
            "the bearer token is not valid here",
        ),
        (
            "Basic dGhlLWFkbWluLXRva2Vu",
            "Bearer",
            "the Authorization header must be Bearer <admin.token>",
        ),
        (
            "Bearer push-only",
            r#"Bearer error="insufficient_scope""#,
            "admin.push_token opens only the /push endpoints",
        ),
    ];
    for (authorization, challenge, message) in cases {
        let r = admin_request(&gw, reqwest::Method::POST, "/reload", Some(authorization)).await;
        assert_eq!(r.status(), 401, "{authorization}");
        assert_eq!(
            r.headers()["www-authenticate"],
            challenge,
            "{authorization}"
        );
        assert_eq!(
            r.text().await.unwrap(),
            format!(r#"{{"error":{{"code":"UNAUTHORIZED","message":"{message}"}}}}"#)
        );
    }
    // The push token opens /push: the till's (empty) list of pending messages.
    let r = admin_request(
        &gw,
        reqwest::Method::GET,
        "/push/shop/1/2",
        Some("Bearer push-only"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
}

#[tokio::test]
async fn one_conversation_by_its_key_shows_attempts_state_and_final_answer() {
    let gw = Gateway::start(
        POLLING,
        &[(
            "rule.rhai",
            "state.seen = poll.attempt; if poll.attempt < 2 { keep_polling(\"wait\") } else { finish(\"done\") }",
        )],
    )
    .await;
    let till = gw.till();
    till.call_json("addSessionLine", &body(7, 1)).await;
    let (_, text) = get(&gw, "/conversations").await;
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let key = list[0]["key"].as_str().unwrap().to_owned();
    let (status, text) = get(&gw, &format!("/conversations/{key}")).await;
    assert_eq!(status, 200, "{text}");
    let going: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(going["key"], key.as_str());
    assert_eq!(going["event"], "addSessionLine");
    assert_eq!(going["subscription"], "shop");
    assert_eq!(going["till"], json!({"branch": 3, "workplace": 2}));
    assert_eq!(going["decision"], "keep_polling");
    assert_eq!(going["message"], "wait");
    assert_eq!(going["customer_message"], Value::Null);
    assert_eq!(going["attempts"], 1);
    assert_eq!(going["finished"], false);
    assert_eq!(going["state_bytes"], br#"{"seen":1}"#.len());
    assert_eq!(going["forwards"], json!([]));
    assert_eq!(going["final_answer"], Value::Null);

    till.call_json("addSessionLine", &body(7, 2)).await;
    let (_, text) = get(&gw, &format!("/conversations/{key}")).await;
    let done: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["finished"], true);
    assert_eq!(
        (&done["decision"], &done["message"]),
        (&json!("finished"), &json!("done"))
    );
    assert_eq!(done["final_answer"]["status"], 200);
    assert_eq!(
        done["final_answer"]["body"]["polling"],
        json!({"finished": true, "message": "done"})
    );
    assert!(!text.contains(SECRET) && !text.contains("Cappuccino"));

    let missing = r#"{"error":{"code":"NO_CONVERSATION","message":"no live conversation has this key (32 hex digits, as GET /conversations lists them)"}}"#;
    for path in [
        "/conversations/00000000000000000000000000000000",
        "/conversations/not-a-key",
    ] {
        assert_eq!(get(&gw, path).await, (404, missing.to_owned()), "{path}");
    }
    let r = client()
        .delete(gw.admin_url(&format!("/conversations/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}

#[tokio::test]
async fn status_shows_the_generation_and_the_last_reload_with_its_errors() {
    let gw = Gateway::start(POLLING, &[("rule.rhai", "finish()")]).await;
    let (status, text) = get(&gw, "/status").await;
    assert_eq!(status, 200);
    let fresh: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fresh["generation"], 1);
    assert_eq!(fresh["last_reload"], Value::Null);
    assert!(fresh["loaded_at_ms"].as_u64().unwrap() > 0);

    std::fs::write(gw.dir.path().join("rule.rhai"), "let x = ;").unwrap();
    let (code, reload) = post_reload(&gw).await;
    assert_eq!(code, 422);
    let (_, text) = get(&gw, "/status").await;
    let failed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(failed["generation"], 1, "the last good generation goes on");
    assert_eq!(failed["loaded_at_ms"], fresh["loaded_at_ms"]);
    let last = &failed["last_reload"];
    assert_eq!(last["ok"], false);
    assert_eq!(last["trigger"], "POST /reload");
    assert_eq!(last["errors"], reload["errors"]);

    std::fs::write(gw.dir.path().join("rule.rhai"), "finish()").unwrap();
    assert_eq!(post_reload(&gw).await.0, 200);
    let (_, text) = get(&gw, "/status").await;
    let ok: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ok["generation"], 2);
    assert_eq!(ok["last_reload"]["ok"], true);
    assert_eq!(ok["last_reload"]["errors"], json!([]));
}
