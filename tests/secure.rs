//! Encrypted wires and secret rotation (GATEWAY.md 10), on the real server:
//! `subscriptions.X.previous_secrets` and `server.tls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pollgate::signature::{Encoding, Secret};

/// base64 of "new-rotation-secret"; the demo secret [`SECRET`] is the previous one.
const NEW_SECRET: &str = "bmV3LXJvdGF0aW9uLXNlY3JldA==";

fn rotating() -> String {
    format!(
        "subscriptions:\n  {SUBSCRIPTION}:\n    secret: {NEW_SECRET}\n    previous_secrets: [{SECRET}]\nevents:\n  \"*\":\n    respond: {{ok: true}}\n"
    )
}

fn till_with(gw: &Gateway, secret: &str, encoding: Encoding) -> Till {
    Till {
        secret: Secret::decode(secret, encoding).unwrap(),
        ..gw.till()
    }
}

#[tokio::test]
async fn each_answer_is_signed_with_the_secret_that_verified_its_call() {
    let gw = Gateway::start(&rotating(), &[]).await;
    let on_previous = till_with(&gw, SECRET, Encoding::Base64)
        .call("scanCode", &b"{\"a\":1}"[..])
        .await;
    assert_eq!(on_previous.status, 200);
    assert_eq!(&on_previous.body[..], br#"{"ok":true}"#);
    // HMAC-SHA256 of {"ok":true} with "demo-secret-for-pollgate-examples".
    assert_eq!(
        on_previous.signature.as_deref(),
        Some("fIfGs30AaPRqs5bM5tjXiEMY2dDMOKxzuWcPCUqepGA=")
    );
    let on_new = till_with(&gw, NEW_SECRET, Encoding::Base64)
        .call("scanCode", &b"{\"a\":2}"[..])
        .await;
    assert_eq!(on_new.status, 200);
    // The same body with "new-rotation-secret".
    assert_eq!(
        on_new.signature.as_deref(),
        Some("SUHfbg1BLE5W1rw51NsLxHSh29W2sQZLM/d7uU3vUKU=")
    );
}

#[tokio::test]
async fn a_call_signed_with_neither_secret_is_refused_signed_with_the_current_one() {
    let gw = Gateway::start(&rotating(), &[]).await;
    let r = till_with(&gw, "other-secret", Encoding::Utf8)
        .call("scanCode", &b"{\"a\":1}"[..])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        &r.body[..],
        br#"{"error":{"code":"INVALID_SIGNATURE","message":"X-Mplus-Signature does not match the body"}}"#
    );
    assert_eq!(
        r.signature.as_deref(),
        Some("zCFeMMqey4sQzIdSgZ7UpfHkYWxBfOVOaAN6vIU7vdg=")
    );
}
