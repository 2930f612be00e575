//! `state.max_conversations` through the real gateway (GATEWAY.md 12): at the cap a new
//! conversation evicts the oldest finished one; with none finished it gets the signed
//! store-failure answer and `pollgate_store_full_total` counts it, while the conversations
//! already going on keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pollgate::error_answer::STORE_DOWN_MESSAGE;

/// Two conversations fill the store; a polling rule that finishes on the second call, and
/// a non-polling fallback with a fixed answer.
const CONFIG: &str = "\
state:
  max_conversations: 2
events:
  addSessionLine:
    rule: line.rhai
    polling: {timeout: 1h}
  \"*\":
    respond: {ok: true}
";

const RULE: &str = r#"if poll.attempt >= 2 { finish("done") } else { keep_polling("waiting") }"#;

const FULL: &str = "pollgate_store_full_total";
const POLLING_STORE_ERRORS: &str =
    r#"pollgate_requests_total{event="addSessionLine",outcome="store_error"}"#;

#[track_caller]
fn assert_polling(a: &Answer, finished: bool, message: &str) {
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.is_signed(), "signed: {a:?}");
    assert_eq!(
        a.json(),
        serde_json::json!({"polling": {"finished": finished, "message": message}})
    );
}

#[tokio::test]
async fn a_full_store_refuses_new_conversations_and_keeps_the_live_ones_working() {
    let gw = Gateway::start(CONFIG, &[("line.rhai", RULE)]).await;
    let till = gw.till();
    assert_eq!(gw.metric(FULL).await, 0.0, "exported from the start");

    assert_polling(
        &till.call_json("addSessionLine", &body(1, 1)).await,
        false,
        "waiting",
    );
    assert_polling(
        &till.call_json("addSessionLine", &body(2, 1)).await,
        false,
        "waiting",
    );

    // Both conversations are going on, so there is nothing to evict: the till gets exactly
    // the store-failure answer, signed, and keeps polling.
    let refused = till.call_json("addSessionLine", &body(3, 1)).await;
    assert_eq!(refused.status, 200);
    assert!(refused.is_signed(), "signed: {refused:?}");
    let expected =
        format!(r#"{{"polling":{{"finished":false,"message":"{STORE_DOWN_MESSAGE}"}}}}"#);
    assert_eq!(refused.body, expected.as_bytes(), "exact bytes");
    assert_eq!(gw.metric(FULL).await, 1.0);
    assert_eq!(gw.metric(POLLING_STORE_ERRORS).await, 1.0);

    // A non-polling event's conversation is refused too, with `{}`.
    let scan = till
        .call("scanCode", read_fixture("mplus/examples/scanCode.json"))
        .await;
    assert_eq!((scan.status, &scan.body[..]), (200, &b"{}"[..]));
    assert!(scan.is_signed());
    assert_eq!(gw.metric(FULL).await, 2.0);

    // The live conversations go on: the first one's second call finishes it.
    assert_polling(
        &till.call_json("addSessionLine", &body(1, 2)).await,
        true,
        "done",
    );
    // Two held (the cap), one of them finished: only the other is active.
    assert_eq!(gw.metric("pollgate_conversations_active").await, 1.0);

    // Now a finished one can make room: the refused conversation starts (attempt 1) ...
    assert_polling(
        &till.call_json("addSessionLine", &body(3, 2)).await,
        false,
        "waiting",
    );
    // ... and the other live one was not touched: its second call finishes it.
    assert_polling(
        &till.call_json("addSessionLine", &body(2, 2)).await,
        true,
        "done",
    );
    assert_eq!(gw.metric(FULL).await, 2.0, "nothing more was refused");
    // The third goes on; the second finished (the first made room).
    assert_eq!(gw.metric("pollgate_conversations_active").await, 1.0);
}
