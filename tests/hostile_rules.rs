//! GATEWAY.md 12: nothing a rule does crashes pollgate, stalls it or escapes its limits.
//! Each test attacks the real `pollgate serve` process with a signed call to a hostile rule.

mod common;

use common::*;
use serde_json::json;

const FAIL_SAFE: &str = "This step could not be checked; please continue";

fn polling_event(name: &str, rule: &str) -> String {
    format!("  {name}:\n    rule: {rule}\n    polling:\n      timeout: 120s\n")
}

async fn healthz(p: &Process) -> u16 {
    client()
        .get(format!("http://{}/healthz", p.admin))
        .send()
        .await
        .expect("the admin listener answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn data_nested_in_a_sort_comparator_gets_the_fail_safe_answer_and_the_process_lives() {
    let config = format!(
        "events:\n{}{}",
        polling_event("addSessionLine", "nest.rhai"),
        polling_event("scanCode", "count.rhai"),
    );
    let nest = "let x = []; let t = []; for i in 0..500 { t.push((i * 7919) % 10007); }\n\
                t.sort(|p, q| { x = [#{a: take(x)}]; p - q }); ()";
    let count = "state.n = (state.n ?? 0) + 1; keep_polling(`call ${state.n}`)";
    let p = Process::serve(&config, &[("nest.rhai", nest), ("count.rhai", count)]).await;
    let till = p.till();
    // A live conversation of the memory store, before the attack.
    let scan = body(1, 1);
    assert_eq!(
        till.call_json("scanCode", &scan).await.message().as_deref(),
        Some("call 1")
    );

    let answer = till.call_json("addSessionLine", &body(2, 1)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(
        answer.json(),
        json!({"polling": {"finished": true, "message": FAIL_SAFE}})
    );

    // Same process: the earlier conversation kept its state.
    assert_eq!(
        till.call_json("scanCode", &body(1, 2))
            .await
            .message()
            .as_deref(),
        Some("call 2")
    );
    assert_eq!(healthz(&p).await, 200);
}

#[tokio::test]
async fn a_loop_nesting_data_under_large_limits_is_answered_and_the_process_lives() {
    let config = format!(
        "limits:\n  max_operations: 100000000\n  timeout: 2s\nevents:\n{}",
        polling_event("addSessionLine", "nest.rhai"),
    );
    let nest = "let x = []; for i in 0..8000 { x = [#{a: take(x)}]; }\nlet same = x == x;\nfinish(`built ${same}`)";
    let p = Process::serve(&config, &[("nest.rhai", nest)]).await;
    let answer = p.till().call_json("addSessionLine", &body(3, 1)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    let message = answer.message().unwrap_or_default();
    assert!(
        message == "built true" || message == FAIL_SAFE,
        "unexpected answer {}",
        answer.json()
    );
    assert_eq!(healthz(&p).await, 200);
}

#[tokio::test]
async fn nested_sorts_are_stopped_by_the_time_limit_not_answered_as_a_success() {
    let config = format!(
        "limits:\n  max_operations: 0\n  timeout: 50ms\nevents:\n{}",
        polling_event("addSessionLine", "sorts.rhai"),
    );
    let sorts = "let big = []; for i in 0..1500 { big.push((i * 7919) % 10007); }\n\
                 big.sort(|a, b| {\n\
                   let s = []; for i in 0..1000 { s.push((i * 31) % 1009); }\n\
                   s.sort(|c, d| c - d); s.sort(|c, d| d - c); a - b });\n\
                 finish(\"sorted\")";
    let p = Process::serve(&config, &[("sorts.rhai", sorts)]).await;
    let till = p.till();
    let calls: Vec<_> = (0..2)
        .map(|n| {
            let till = till.clone();
            tokio::spawn(async move { till.call_json("addSessionLine", &body(10 + n, 1)).await })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("the call task");
        assert_eq!(
            answer.json(),
            json!({"polling": {"finished": true, "message": FAIL_SAFE}})
        );
        assert!(answer.is_signed());
    }
    let metrics = client()
        .get(format!("http://{}/metrics", p.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert_eq!(
        metric_value(
            &metrics,
            "pollgate_rule_errors_total{event=\"addSessionLine\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn rules_stuck_at_their_limits_never_delay_healthz_or_other_events() {
    // More spinning rules than rule threads, each held for a whole second by its limit.
    let config = format!(
        "limits:\n  max_operations: 0\n  timeout: 1s\nevents:\n{}  startSession:\n    respond: {{\"ok\": true}}\n",
        polling_event("addSessionLine", "spin.rhai"),
    );
    let p = Process::serve(&config, &[("spin.rhai", "loop {}")]).await;
    let till = p.till();
    let spinning: Vec<_> = (0..6)
        .map(|n| {
            let till = till.clone();
            tokio::spawn(async move { till.call_json("addSessionLine", &body(20 + n, 1)).await })
        })
        .collect();
    // Wait until every spinning call has begun its conversation (its rule is running or
    // queued for a rule thread), then ask for health and another event's answer.
    let list = format!("http://{}/conversations", p.admin);
    eventually("the spinning calls to reach the gateway", || {
        let list = list.clone();
        async move {
            let text = client().get(list).send().await.ok()?.bytes().await.ok()?;
            let live: serde_json::Value = serde_json::from_slice(&text).ok()?;
            (live.as_array()?.len() == 6).then_some(())
        }
    })
    .await;
    assert_eq!(healthz(&p).await, 200);
    let other = till.call_json("startSession", &body(30, 1)).await;
    assert_eq!(other.json(), json!({"ok": true}));
    assert!(
        spinning.iter().any(|c| !c.is_finished()),
        "health and another event were answered only after the spinning rules ended"
    );
    for call in spinning {
        let answer = call.await.expect("the call task");
        assert_eq!(
            answer.json(),
            json!({"polling": {"finished": true, "message": FAIL_SAFE}})
        );
    }
}

#[tokio::test]
async fn values_without_a_json_form_or_too_deep_are_rule_errors_not_type_names() {
    let config = format!(
        "limits:\n  max_state_depth: 2\nevents:\n{}{}",
        polling_event("addSessionLine", "time.rhai"),
        polling_event("scanCode", "deep.rhai"),
    );
    let time = "let a = finish(\"ok\"); a.t = timestamp(); a";
    let deep = "state.a = #{b: #{c: 1}}; keep_polling(\"saved\")";
    let p = Process::serve(&config, &[("time.rhai", time), ("deep.rhai", deep)]).await;
    let till = p.till();
    let answer = till.call_json("addSessionLine", &body(40, 1)).await;
    assert_eq!(
        answer.json(),
        json!({"polling": {"finished": true, "message": FAIL_SAFE}})
    );
    assert!(!String::from_utf8_lossy(&answer.body).contains("Instant"));
    let answer = till.call_json("scanCode", &body(41, 1)).await;
    assert_eq!(
        answer.json(),
        json!({"polling": {"finished": true, "message": FAIL_SAFE}})
    );
}
