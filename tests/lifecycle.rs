//! The real `pollgate serve` process: SIGHUP reloads, SIGTERM drains held calls and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let p = Process::serve(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n",
        &[("rule.rhai", "finish(\"old\")")],
    )
    .await;
    let till = p.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    std::fs::write(p.dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
    p.signal("HUP");
    let mut n = 10;
    eventually("SIGHUP to reload the rule", || {
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
}

#[tokio::test]
async fn sigterm_answers_the_held_call_and_exits_zero() {
    let upstream = MockUpstream::start(|_| {
        MockReply::json(
            200,
            serde_json::json!({"polling": {"finished": true, "message": "approved"}}),
        )
        .after(Duration::from_millis(1500))
    })
    .await;
    let config = format!(
        "events:\n  startPayment:\n    forward: backend\n    hold: 5s\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n",
        upstream.url()
    );
    let p = Process::serve(&config, &[]).await;
    let till = p.till();
    let held = tokio::spawn(async move { till.call_json("startPayment", &body(1, 1)).await });
    eventually("the forward to reach the upstream", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    p.signal("TERM");
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(answer.message().as_deref(), Some("approved"));
    assert_eq!(p.exit_code().await, Some(0));
}
