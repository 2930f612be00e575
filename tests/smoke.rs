#![allow(clippy::unwrap_used)]
mod common;
use common::*;

#[tokio::test]
async fn harness_starts_a_gateway_and_answers_a_signed_call() {
    let gw = Gateway::start(
        "events:\n  addSessionLine:\n    respond: {}\n    polling: {}\n",
        &[],
    )
    .await;
    let a = gw.till().call_json("addSessionLine", &body(1, 1)).await;
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    assert_eq!(a.json(), serde_json::json!({"polling": {"finished": true}}));
    gw.stop().await;
}
