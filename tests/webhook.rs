//! The webhook listener as a till sees it (GATEWAY.md 3, 4 and 6): the checks in order with
//! their exact answers, body limits, routing, the documented example, error requests,
//! polling conversations, replays, timeouts, rule failures and fixed answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use pollgate::error_answer::RULE_FAILED_MESSAGE;
use pollgate::signature::{Encoding, Secret};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// ---- helpers ----

/// A scanCode body (non-polling event in the configs below).
fn scan_body() -> Bytes {
    Bytes::from(read_fixture("mplus/examples/scanCode.json"))
}

/// A gateway whose `scanCode` answers with a fixed map: enough for the checks, which all
/// happen before any rule.
async fn plain_gateway() -> Gateway {
    Gateway::start(
        "events:\n  scanCode:\n    respond: {scanCode: {recognized: false}}\n",
        &[],
    )
    .await
}

/// Asserts a refusal: the status, exactly `{"error": {"code", "message"}}`, JSON, and signed
/// with the subscription's secret (or not signed at all when the subscription is unknown).
#[track_caller]
fn assert_refused(a: &Answer, status: u16, code: &str, message: &str, signed: bool) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        a.json(),
        json!({"error": {"code": code, "message": message}}),
        "exact error body"
    );
    if signed {
        assert!(a.is_signed(), "signed with the subscription secret: {a:?}");
    } else {
        assert_eq!(a.signature, None, "no subscription, so no signature");
    }
}

/// Asserts a `200` JSON answer, signed, equal to `expected`.
#[track_caller]
fn assert_answer(a: &Answer, expected: &Value) {
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert!(a.is_signed(), "signed: {a:?}");
    assert_eq!(&a.json(), expected);
}

/// The headers of a well-formed call of `till` for `body`.
fn signed_headers(body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        (SUBSCRIPTION_HEADER.into(), SUBSCRIPTION.into()),
        ("x-mplus-signature".into(), secret().sign(body)),
    ]
}

async fn send_with(till: &Till, event: &str, body: Bytes, headers: &[(String, String)]) -> Answer {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    till.send(event, body, &headers).await
}

/// Headers minus `name`, or with `name` set to `value`.
fn with_header(body: &[u8], name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = signed_headers(body)
        .into_iter()
        .filter(|(k, _)| k != name)
        .collect();
    if let Some(value) = value {
        headers.push((name.into(), value.into()));
    }
    headers
}

/// Sends raw bytes on a fresh connection and reads one HTTP/1.1 answer (head and a
/// Content-Length body), with a deadline. The request need not be complete: this is how a
/// test shows that an answer comes before the body was read to the end.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        read_answer(&mut stream).await
    })
    .await
    .expect("an answer within 10s")
}

/// An addSessionLine body with these identity fields.
fn identity_body(counter: u32, timestamp: &str, session: &str) -> Value {
    let mut b = body(1, counter);
    b["event"]["eventTimestamp"] = json!(timestamp);
    b["session"]["sessionId"] = json!(session);
    b
}

const POLLING_EVENT: &str =
    "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling:\n      timeout: 120s\n";

/// A gateway with a polling `addSessionLine` run by `rule`.
async fn polling_gateway(rule: &str) -> Gateway {
    Gateway::start(POLLING_EVENT, &[("rule.rhai", rule)]).await
}

// ---- GATEWAY.md 6: the checks, in order ----

#[tokio::test]
async fn refuses_a_call_without_subscription_id_unsigned() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = with_header(&body, SUBSCRIPTION_HEADER, None);
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "NO_SUBSCRIPTION_ID",
        "X-Mplus-Subscription-Id header is missing",
        false,
    );
}

#[tokio::test]
async fn refuses_an_unknown_subscription_id_unsigned() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = with_header(&body, SUBSCRIPTION_HEADER, Some("other-shop"));
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "INVALID_SUBSCRIPTION_ID",
        "X-Mplus-Subscription-Id is not a known subscription",
        false,
    );
}

#[tokio::test]
async fn refuses_a_call_without_signature_signed() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = with_header(&body, "x-mplus-signature", None);
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "NO_SIGNATURE",
        "X-Mplus-Signature header is missing",
        true,
    );
}

#[tokio::test]
async fn refuses_a_signature_made_with_another_key() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let other = Secret::decode("b3RoZXIta2V5", Encoding::Base64).unwrap();
    let headers = with_header(&body, "x-mplus-signature", Some(&other.sign(&body)));
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "INVALID_SIGNATURE",
        "X-Mplus-Signature does not match the body",
        true,
    );
}

#[tokio::test]
async fn refuses_a_signature_that_is_not_base64() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = with_header(&body, "x-mplus-signature", Some("not base64 at all!"));
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "INVALID_SIGNATURE",
        "X-Mplus-Signature is not base64",
        true,
    );
}

#[tokio::test]
async fn refuses_a_body_changed_by_one_byte_after_signing() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = signed_headers(&body);
    let mut changed = body.to_vec();
    let at = changed.iter().position(|&b| b == b'3').unwrap();
    changed[at] = b'4';
    let a = send_with(&gw.till(), "scanCode", Bytes::from(changed), &headers).await;
    assert_refused(
        &a,
        400,
        "INVALID_SIGNATURE",
        "X-Mplus-Signature does not match the body",
        true,
    );
}

#[tokio::test]
async fn accepts_a_signature_with_surrounding_whitespace() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let padded = format!(" {} ", secret().sign(&body));
    let headers = with_header(&body, "x-mplus-signature", Some(&padded));
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_answer(&a, &json!({"scanCode": {"recognized": false}}));
}

#[tokio::test]
async fn refuses_a_call_without_content_type() {
    let gw = plain_gateway().await;
    let body = scan_body();
    let headers = with_header(&body, "content-type", None);
    let a = send_with(&gw.till(), "scanCode", body, &headers).await;
    assert_refused(
        &a,
        400,
        "NO_CONTENT_TYPE",
        "Content-Type header is missing",
        true,
    );
}

#[tokio::test]
async fn refuses_a_content_type_other_than_json() {
    let gw = plain_gateway().await;
    for content_type in [
        "text/plain",
        "application/jsonx",
        "application/x-www-form-urlencoded",
    ] {
        let body = scan_body();
        let headers = with_header(&body, "content-type", Some(content_type));
        let a = send_with(&gw.till(), "scanCode", body, &headers).await;
        assert_refused(
            &a,
            400,
            "INVALID_CONTENT_TYPE",
            "Content-Type must be application/json",
            true,
        );
    }
}

#[tokio::test]
async fn accepts_json_content_type_with_parameters() {
    let gw = plain_gateway().await;
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json;charset=UTF-8",
    ] {
        let body = scan_body();
        let headers = with_header(&body, "content-type", Some(content_type));
        let a = send_with(&gw.till(), "scanCode", body, &headers).await;
        assert_answer(&a, &json!({"scanCode": {"recognized": false}}));
    }
}

#[tokio::test]
async fn refuses_a_body_that_is_not_json() {
    let gw = plain_gateway().await;
    let a = gw.till().call("scanCode", &b"{\"event\": "[..]).await;
    assert_refused(&a, 400, "INVALID_JSON", "the body is not valid JSON", true);
    let a = gw.till().call("scanCode", &b""[..]).await;
    assert_refused(&a, 400, "INVALID_JSON", "the body is not valid JSON", true);
}

#[tokio::test]
async fn refuses_json_that_is_not_an_object() {
    let gw = plain_gateway().await;
    for body in [&b"[1, 2]"[..], b"\"addSessionLine\"", b"42", b"null"] {
        let a = gw.till().call("scanCode", body).await;
        assert_refused(
            &a,
            400,
            "INVALID_DATA",
            "the body is not a JSON object",
            true,
        );
    }
}

#[tokio::test]
async fn checks_run_in_the_documented_order() {
    let gw = plain_gateway().await;
    let till = gw.till();
    let not_json = Bytes::from_static(b"[not json");

    // Unknown subscription beats a missing signature.
    let headers = vec![
        ("content-type".to_owned(), "text/plain".to_owned()),
        (SUBSCRIPTION_HEADER.to_owned(), "other".to_owned()),
    ];
    let a = send_with(&till, "scanCode", not_json.clone(), &headers).await;
    assert_eq!(a.error_code().as_deref(), Some("INVALID_SUBSCRIPTION_ID"));

    // A missing signature beats a bad content type and a bad body.
    let headers = with_header(&not_json, "x-mplus-signature", None);
    let headers: Vec<_> = headers
        .into_iter()
        .map(|(k, v)| {
            if k == "content-type" {
                (k, "text/plain".into())
            } else {
                (k, v)
            }
        })
        .collect();
    let a = send_with(&till, "scanCode", not_json.clone(), &headers).await;
    assert_eq!(a.error_code().as_deref(), Some("NO_SIGNATURE"));

    // A bad signature beats a bad content type and a bad body.
    let headers = with_header(&not_json, "x-mplus-signature", Some("AAAA"));
    let headers: Vec<_> = headers
        .into_iter()
        .map(|(k, v)| {
            if k == "content-type" {
                (k, "text/plain".into())
            } else {
                (k, v)
            }
        })
        .collect();
    let a = send_with(&till, "scanCode", not_json.clone(), &headers).await;
    assert_refused(
        &a,
        400,
        "INVALID_SIGNATURE",
        "X-Mplus-Signature does not match the body",
        true,
    );

    // A missing content type beats a bad body.
    let headers = with_header(&not_json, "content-type", None);
    let a = send_with(&till, "scanCode", not_json.clone(), &headers).await;
    assert_eq!(a.error_code().as_deref(), Some("NO_CONTENT_TYPE"));

    // A bad content type beats a bad body.
    let headers = with_header(&not_json, "content-type", Some("text/json"));
    let a = send_with(&till, "scanCode", not_json.clone(), &headers).await;
    assert_eq!(a.error_code().as_deref(), Some("INVALID_CONTENT_TYPE"));

    // Bad JSON is INVALID_JSON, not INVALID_DATA.
    let a = till.call("scanCode", not_json).await;
    assert_eq!(a.error_code().as_deref(), Some("INVALID_JSON"));

    let bad = gw
        .metric(r#"pollgate_requests_total{event="scanCode",outcome="bad_request"}"#)
        .await;
    assert_eq!(bad, 6.0, "every refusal is counted");
}

// ---- body limits ----

const SMALL_LIMIT: &str = "server:\n  max_body_bytes: 64\nevents:\n  scanCode:\n    respond: {}\n";

#[tokio::test]
async fn answers_413_for_a_declared_length_over_the_limit_without_reading_the_body() {
    let gw = Gateway::start(SMALL_LIMIT, &[]).await;
    // Only the head is sent: the answer must come without waiting for the 100 kB body.
    let head = format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nContent-Length: 100000\r\n\r\n",
        secret().sign(b"whatever")
    );
    let a = raw_exchange(gw.addr, head.as_bytes()).await;
    assert_refused(
        &a,
        413,
        "PAYLOAD_TOO_LARGE",
        "the body is larger than max_body_bytes (64)",
        true,
    );
    assert_eq!(a.headers["connection"], "close");
    let too_large = gw
        .metric(r#"pollgate_requests_total{event="scanCode",outcome="too_large"}"#)
        .await;
    assert_eq!(too_large, 1.0);
}

#[tokio::test]
async fn answers_413_unsigned_when_the_subscription_is_unknown() {
    let gw = Gateway::start(SMALL_LIMIT, &[]).await;
    let head = "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: nobody\r\nContent-Length: 100000\r\n\r\n";
    let a = raw_exchange(gw.addr, head.as_bytes()).await;
    assert_refused(
        &a,
        413,
        "PAYLOAD_TOO_LARGE",
        "the body is larger than max_body_bytes (64)",
        false,
    );
}

#[tokio::test]
async fn answers_413_for_a_chunked_body_over_the_limit_before_it_ends() {
    let gw = Gateway::start(SMALL_LIMIT, &[]).await;
    // No Content-Length: two chunks of 50 bytes cross the 64-byte limit, and the body's
    // last chunk is never sent, so only an answer given before the end can arrive.
    let chunk = format!("{{\"pad\": \"{}\"}}", "x".repeat(39));
    assert_eq!(chunk.len(), 50);
    let request = format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n{chunk}\r\n32\r\n{chunk}\r\n",
        secret().sign(chunk.as_bytes())
    );
    let a = raw_exchange(gw.addr, request.as_bytes()).await;
    assert_refused(
        &a,
        413,
        "PAYLOAD_TOO_LARGE",
        "the body is larger than max_body_bytes (64)",
        true,
    );
}

/// A JSON object of exactly `len` bytes.
fn object_of(len: usize) -> Vec<u8> {
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(len - 10)).into_bytes();
    assert_eq!(body.len(), len);
    body
}

/// A chunked request for `body` in chunks of at most 50 bytes.
fn chunked_request(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        secret().sign(body)
    )
    .into_bytes();
    for chunk in body.chunks(50) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn accepts_a_body_of_exactly_max_body_bytes_and_answers_413_to_one_byte_more() {
    let gw = Gateway::start(SMALL_LIMIT, &[]).await;
    let till = gw.till();
    let (exact, over) = (object_of(64), object_of(65));

    assert_answer(&till.call("scanCode", exact.clone()).await, &json!({}));
    assert_answer(
        &raw_exchange(gw.addr, &chunked_request(&exact)).await,
        &json!({}),
    );
    for (how, a) in [
        (
            "with Content-Length",
            till.call("scanCode", over.clone()).await,
        ),
        (
            "chunked",
            raw_exchange(gw.addr, &chunked_request(&over)).await,
        ),
    ] {
        assert_eq!(a.status, 413, "{how}");
        assert_refused(
            &a,
            413,
            "PAYLOAD_TOO_LARGE",
            "the body is larger than max_body_bytes (64)",
            true,
        );
    }
    assert_eq!(
        gw.metric(r#"pollgate_requests_total{event="scanCode",outcome="too_large"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn accepts_a_chunked_body_within_the_limit() {
    let gw = Gateway::start(SMALL_LIMIT, &[]).await;
    let body = br#"{"event": {"eventCounter": 1}}"#;
    let request = format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        secret().sign(body),
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let a = raw_exchange(gw.addr, request.as_bytes()).await;
    assert_answer(&a, &json!({}));
}

// ---- routing ----

#[tokio::test]
async fn answers_404_for_paths_that_are_not_events() {
    let gw = plain_gateway().await;
    let body = scan_body();
    for path in [
        "/",
        "/webhooks",
        "/webhooks/",
        "/webhooks/a/b",
        "/other/scanCode",
    ] {
        let mut req = client()
            .post(format!("http://{}{path}", gw.addr))
            .body(body.clone());
        for (k, v) in signed_headers(&body) {
            req = req.header(k, v);
        }
        let a = answer(req.send().await.unwrap()).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(
            a.content_type.as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(a.error_code().as_deref(), Some("NOT_FOUND"), "{path}");
    }
}

#[tokio::test]
async fn answers_404_without_reading_the_body_for_event_names_outside_the_safe_alphabet() {
    let gw = Gateway::start(
        "server:\n  body_timeout: 30s\nevents:\n  \"*\":\n    respond: {fallback: true}\n",
        &[],
    )
    .await;
    let long = "a".repeat(4096);
    for name in [
        "add%53essionLine",
        "a+b",
        "caf%C3%A9",
        long.as_str(),
        &"b".repeat(65),
    ] {
        // The head declares a body that is never sent: only an answer that does not read
        // it arrives (body_timeout is 30 s, raw_exchange waits 10 s).
        let head = format!(
            "POST /webhooks/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nContent-Length: 500\r\n\r\n",
            secret().sign(b"whatever")
        );
        let a = raw_exchange(gw.addr, head.as_bytes()).await;
        assert_eq!(a.status, 404, "{}", &name[..name.len().min(20)]);
        assert_eq!(a.error_code().as_deref(), Some("NOT_FOUND"));
        assert!(a.is_signed(), "the subscription is known, so signed");
    }
    let not_found = gw
        .metric(r#"pollgate_requests_total{event="none",outcome="not_found"}"#)
        .await;
    assert_eq!(not_found, 5.0);
}

#[tokio::test]
async fn never_percent_decodes_an_event_name() {
    let gw = Gateway::start(
        "events:\n  addSessionLine:\n    respond: {own: true}\n  \"*\":\n    respond: {fallback: true}\n",
        &[],
    )
    .await;
    let till = gw.till();
    let body = serde_json::to_vec(&body(1, 1)).unwrap();
    assert_answer(
        &till.call("addSessionLine", body.clone()).await,
        &json!({"own": true}),
    );
    assert_answer(
        &till.call("a.b_c-D9", body.clone()).await,
        &json!({"fallback": true}),
    );
    let encoded = till.call("add%53essionLine", body).await;
    assert_eq!(encoded.status, 404, "neither the event nor the fallback");
    assert_eq!(encoded.error_code().as_deref(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn answers_405_with_allow_post_for_other_methods_on_an_event_path() {
    let gw = plain_gateway().await;
    let a = answer(client().get(gw.url("scanCode")).send().await.unwrap()).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST");
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(a.error_code().as_deref(), Some("METHOD_NOT_ALLOWED"));

    let a = answer(client().put(gw.url("scanCode")).send().await.unwrap()).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST");
}

// ---- the documented example ----

#[tokio::test]
async fn accepts_the_documented_polling_example_byte_for_byte() {
    let doc = read_fixture("mplus/examples/polling-addSessionLine.doc.json");
    // The shared vector for this file, so the gateway and the vectors agree on the bytes.
    let vector = "qvOQmz35OX1twmNoYUo1f2zf72JDy4P0rsh3cYs0Dp4=";
    assert_eq!(secret().sign(&doc), vector);

    let rule = r#"
        let line = event.addSessionLine;
        finish(`${line.text} ${line.priceIncl} by ${event.sender.employeeNumber}`, `${event.event.eventBlocking}`)
    "#;
    let gw = polling_gateway(rule).await;
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (SUBSCRIPTION_HEADER.to_owned(), SUBSCRIPTION.to_owned()),
        ("x-mplus-signature".to_owned(), vector.to_owned()),
    ];
    let a = send_with(&gw.till(), "addSessionLine", Bytes::from(doc), &headers).await;
    assert_answer(
        &a,
        &json!({"polling": {"finished": true, "message": "Coffee 2.5 by 1", "customerMessage": "true"}}),
    );
}

// ---- error requests (MPLUS.md 6) ----

#[tokio::test]
async fn answers_an_error_request_with_an_empty_object_and_leaves_the_conversation_alone() {
    // The rule fails on purpose when it sees the till's error, so the error counter shows
    // that the rule ran and saw `event.error` with its fields.
    let rule = r#"
        if event.error?.code == "INVALID_LINE_ID" { throw `till says ${event.error.message}`; }
        keep_polling(`attempt ${poll.attempt}`)
    "#;
    let gw = polling_gateway(rule).await;
    let till = gw.till();
    let normal = body(5, 1);
    let mut error = normal.clone();
    error["error"] = json!({"code": "INVALID_LINE_ID", "message": "line-5 does not exist"});

    let a = till.call_json("addSessionLine", &error).await;
    assert_answer(&a, &json!({}));
    assert_eq!(a.body.as_ref(), b"{}");
    let errors = r#"pollgate_rule_errors_total{event="addSessionLine"}"#;
    assert_eq!(gw.metric(errors).await, 1.0, "the rule saw event.error");
    assert_eq!(
        gw.metric(r#"pollgate_requests_total{event="addSessionLine",outcome="error_request"}"#)
            .await,
        1.0
    );

    // The same call without the error is the conversation's first call.
    let a = till.call_json("addSessionLine", &normal).await;
    assert_answer(
        &a,
        &json!({"polling": {"finished": false, "message": "attempt 1"}}),
    );
    assert_eq!(gw.metric(errors).await, 1.0, "a normal call does not fail");

    // An error request in the middle of the conversation does not count as an attempt.
    let a = till.call_json("addSessionLine", &error).await;
    assert_answer(&a, &json!({}));
    let a = till.call_json("addSessionLine", &normal).await;
    assert_eq!(a.message().as_deref(), Some("attempt 2"));
}

#[tokio::test]
async fn answers_an_error_request_with_an_empty_object_whatever_the_rule_returns() {
    let gw = polling_gateway(r#"reject("INVALID_ARTICLE", "no")"#).await;
    let mut b = body(6, 1);
    b["error"] = json!({"code": "INVALID_ARTICLE", "message": "x"});
    let a = gw.till().call_json("addSessionLine", &b).await;
    assert_answer(&a, &json!({}));
}

#[tokio::test]
async fn never_forwards_an_error_request() {
    let upstream = MockUpstream::start(|_| MockReply::json(200, json!({"ok": 1}))).await;
    let config = format!(
        "upstreams:\n  backend:\n    url: {}\n    retries: 0\n    timeout: 5s\nevents:\n  completeSession:\n    rule: rule.rhai\n",
        upstream.url()
    );
    let rule = r#"let r = forward("backend"); if r == () { #{ waiting: true } } else { #{ status: r.status } }"#;
    let gw = Gateway::start(&config, &[("rule.rhai", rule)]).await;
    let till = gw.till();
    let mut error = body(7, 1);
    error["error"] = json!({"code": "INVALID_RECEIPT_FOOTER_CODE", "message": "x"});
    assert_answer(&till.call_json("completeSession", &error).await, &json!({}));

    // A normal call forwards and (not polling) waits for the reply; by then a forward of
    // the earlier error request would have arrived first.
    let normal = body(7, 2);
    let a = till.call_json("completeSession", &normal).await;
    assert_answer(&a, &json!({"status": 200}));
    let received = upstream.requests();
    assert_eq!(received.len(), 1, "only the normal call was forwarded");
    assert_eq!(received[0].path, "/mplus/completeSession");
    let sent: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(sent.get("error"), None);
}

// ---- unconfigured events and "*" ----

#[tokio::test]
async fn answers_an_unconfigured_event_with_an_empty_object_and_counts_it() {
    let gw = plain_gateway().await;
    let a = gw.till().call_json("kitchenServeCourse", &body(1, 1)).await;
    assert_answer(&a, &json!({}));
    assert_eq!(a.body.as_ref(), b"{}");
    let counted = gw
        .metric(r#"pollgate_requests_total{event="unconfigured",outcome="unconfigured"}"#)
        .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn uses_the_fallback_rule_for_events_without_their_own() {
    let config =
        "events:\n  scanCode:\n    respond: {own: true}\n  \"*\":\n    rule: fallback.rhai\n";
    let rule = "#{ fallback: meta.name, subscription: meta.subscription }";
    let gw = Gateway::start(config, &[("fallback.rhai", rule)]).await;
    let till = gw.till();
    let a = till.call_json("kitchenServeCourse", &body(1, 1)).await;
    assert_answer(
        &a,
        &json!({"fallback": "kitchenServeCourse", "subscription": SUBSCRIPTION}),
    );
    let a = till.call_json("someEventNobodyKnows", &body(2, 1)).await;
    assert_answer(
        &a,
        &json!({"fallback": "someEventNobodyKnows", "subscription": SUBSCRIPTION}),
    );
    let a = till.call("scanCode", scan_body()).await;
    assert_answer(&a, &json!({"own": true}));
}

// ---- polling conversations (GATEWAY.md 3) ----

const COUNTING_RULE: &str = r#"
    state.calls = (state.calls ?? 0) + 1;
    if state.calls < 3 {
        keep_polling(`call ${state.calls} attempt ${poll.attempt}`, "One moment please")
    } else {
        finish(`done after ${state.calls} calls, attempt ${poll.attempt}`, "Thank you")
    }
"#;

#[tokio::test]
async fn runs_a_three_call_polling_conversation_with_state() {
    let gw = polling_gateway(COUNTING_RULE).await;
    let till = gw.till();
    let b = body(10, 1);
    let expected = [
        json!({"polling": {"finished": false, "message": "call 1 attempt 1", "customerMessage": "One moment please"}}),
        json!({"polling": {"finished": false, "message": "call 2 attempt 2", "customerMessage": "One moment please"}}),
        json!({"polling": {"finished": true, "message": "done after 3 calls, attempt 3", "customerMessage": "Thank you"}}),
    ];
    for want in &expected {
        assert_answer(&till.call_json("addSessionLine", &b).await, want);
    }
    // Another conversation starts from an empty state.
    let other = till.call_json("addSessionLine", &body(11, 1)).await;
    assert_eq!(other.message().as_deref(), Some("call 1 attempt 1"));
}

#[tokio::test]
async fn keeps_the_conversation_when_only_event_counter_changes() {
    let gw = polling_gateway("keep_polling(`attempt ${poll.attempt}`)").await;
    let till = gw.till();
    let stamp = "2026-03-02T09:15:01.001+01:00";
    let session = "00000000-0000-4000-8000-000000000001";
    for (counter, attempt) in [(1, 1), (2, 2), (7, 3), (1, 4)] {
        let a = till
            .call_json("addSessionLine", &identity_body(counter, stamp, session))
            .await;
        assert_eq!(
            a.message(),
            Some(format!("attempt {attempt}")),
            "eventCounter {counter}"
        );
    }
}

#[tokio::test]
async fn starts_a_new_conversation_when_event_timestamp_or_session_changes() {
    let gw = polling_gateway("keep_polling(`attempt ${poll.attempt}`)").await;
    let till = gw.till();
    let stamp = "2026-03-02T09:15:01.001+01:00";
    let session = "00000000-0000-4000-8000-000000000001";
    let attempt = |a: Answer| a.message().unwrap();

    let first = identity_body(1, stamp, session);
    assert_eq!(
        attempt(till.call_json("addSessionLine", &first).await),
        "attempt 1"
    );
    assert_eq!(
        attempt(till.call_json("addSessionLine", &first).await),
        "attempt 2"
    );

    let new_stamp = identity_body(1, "2026-03-02T09:15:01.002+01:00", session);
    assert_eq!(
        attempt(till.call_json("addSessionLine", &new_stamp).await),
        "attempt 1"
    );

    let new_session = identity_body(1, stamp, "00000000-0000-4000-8000-000000000002");
    assert_eq!(
        attempt(till.call_json("addSessionLine", &new_session).await),
        "attempt 1"
    );

    // The first conversation is still there.
    assert_eq!(
        attempt(till.call_json("addSessionLine", &first).await),
        "attempt 3"
    );
}

#[tokio::test]
async fn starts_a_new_conversation_when_branch_workplace_instance_subscription_or_event_changes() {
    let config = format!(
        "subscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n  other-shop:\n    secret: {SECRET}\nevents:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n  scanCode:\n    rule: rule.rhai\n    polling: {{}}\n"
    );
    let gw = Gateway::start(
        &config,
        &[("rule.rhai", "keep_polling(`attempt ${poll.attempt}`)")],
    )
    .await;
    let till = gw.till();
    let other_shop = Till {
        subscription: "other-shop".into(),
        ..gw.till()
    };
    let attempt = |a: Answer| {
        assert!(a.is_signed(), "{:?}", a.body);
        a.message().unwrap()
    };
    let first = body(1, 1);
    for n in 1..=2 {
        assert_eq!(
            attempt(till.call_json("addSessionLine", &first).await),
            format!("attempt {n}")
        );
    }

    let changed = |pointer: &str, value: Value| {
        let mut b = body(1, 1);
        *b.pointer_mut(pointer).unwrap() = value;
        b
    };
    for (what, changed) in [
        ("branchNumber", changed("/sender/branchNumber", json!(4))),
        (
            "workplaceNumber",
            changed("/sender/workplaceNumber", json!(3)),
        ),
        (
            "instanceId",
            changed(
                "/sender/instanceId",
                json!("0a1b2c3d-0000-4000-8000-000000000000"),
            ),
        ),
    ] {
        assert_eq!(
            attempt(till.call_json("addSessionLine", &changed).await),
            "attempt 1",
            "a new {what}"
        );
    }
    assert_eq!(
        attempt(other_shop.call_json("addSessionLine", &first).await),
        "attempt 1",
        "another subscription"
    );
    assert_eq!(
        attempt(till.call_json("scanCode", &first).await),
        "attempt 1",
        "another event name"
    );

    // The first conversation was counted apart from all of them.
    assert_eq!(
        attempt(till.call_json("addSessionLine", &first).await),
        "attempt 3"
    );
    assert_eq!(
        attempt(other_shop.call_json("addSessionLine", &first).await),
        "attempt 2"
    );
}

#[tokio::test]
async fn replays_final_answer_for_duplicate_call() {
    // The answer names the attempt: had the rule run again, it would say "attempt 2".
    let gw = polling_gateway(r#"finish(`finished at attempt ${poll.attempt}`, "Thanks")"#).await;
    let till = gw.till();
    let b = body(20, 1);
    let first = till.call_json("addSessionLine", &b).await;
    assert_answer(
        &first,
        &json!({"polling": {"finished": true, "message": "finished at attempt 1", "customerMessage": "Thanks"}}),
    );
    for counter in [1, 2] {
        let again = till.call_json("addSessionLine", &body(20, counter)).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body, first.body, "byte-identical body");
        assert_eq!(again.signature, first.signature, "identical signature");
    }
    let series = |outcome: &str| {
        format!(r#"pollgate_requests_total{{event="addSessionLine",outcome="{outcome}"}}"#)
    };
    assert_eq!(gw.metric(&series("finished")).await, 1.0);
    assert_eq!(gw.metric(&series("replayed")).await, 2.0);
}

#[tokio::test]
async fn a_duplicate_of_a_finished_conversation_does_not_run_the_rule() {
    // A rule that fails after its first run: a replay must not reach it.
    let rule = r#"if poll.attempt > 1 { no_such_function() } finish("once")"#;
    let gw = polling_gateway(rule).await;
    let till = gw.till();
    let b = body(21, 1);
    let first = till.call_json("addSessionLine", &b).await;
    let again = till.call_json("addSessionLine", &b).await;
    assert_eq!(again.body, first.body);
    assert_eq!(
        gw.metric(r#"pollgate_rule_errors_total{event="addSessionLine"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn finishes_with_the_timeout_message_once_polling_timeout_passed() {
    let config = "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {timeout: 200ms, timeout_message: \"Too late, try again\"}\n";
    let gw = Gateway::start(config, &[("rule.rhai", r#"keep_polling("Waiting")"#)]).await;
    let till = gw.till();
    let b = body(30, 1);
    let first = till.call_json("addSessionLine", &b).await;
    assert_answer(
        &first,
        &json!({"polling": {"finished": false, "message": "Waiting"}}),
    );

    let started = Instant::now();
    let timed_out = eventually("the timeout message", || {
        let (till, b) = (till.clone(), b.clone());
        async move {
            let a = till.call_json("addSessionLine", &b).await;
            (a.finished() == Some(true)).then_some(a)
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_answer(
        &timed_out,
        &json!({"polling": {"finished": true, "message": "Too late, try again"}}),
    );
    // The timeout is final: later calls get it again.
    let again = till.call_json("addSessionLine", &b).await;
    assert_eq!(again.body, timed_out.body);
    assert_eq!(
        gw.metric(r#"pollgate_requests_total{event="addSessionLine",outcome="timeout"}"#)
            .await,
        1.0
    );
}

// ---- rules that fail ----

/// A gateway with `loop {}` and an undefined function, each as a polling and a
/// non-polling event, plus a good event.
async fn failing_gateway() -> Gateway {
    let config = "\
events:
  addSessionLine:
    rule: loop.rhai
    polling: {}
  startPayment:
    rule: undefined.rhai
    polling: {}
  scanCode:
    rule: loop.rhai
  completeSession:
    rule: undefined.rhai
  printBill:
    rule: good.rhai
";
    Gateway::start(
        config,
        &[
            ("loop.rhai", "loop {}"),
            ("undefined.rhai", "let x = 1;\nno_such_function(x)"),
            ("good.rhai", "#{ printed: true }"),
        ],
    )
    .await
}

#[tokio::test]
async fn an_endless_rule_answers_the_fail_safe_in_bounded_time() {
    let gw = failing_gateway().await;
    let till = gw.till();
    let started = Instant::now();
    let polling = till.call_json("addSessionLine", &body(40, 1)).await;
    let plain = till.call_json("scanCode", &body(41, 1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_answer(
        &polling,
        &json!({"polling": {"finished": true, "message": RULE_FAILED_MESSAGE}}),
    );
    assert_answer(&plain, &json!({}));
    for event in ["addSessionLine", "scanCode"] {
        let series = format!(r#"pollgate_rule_errors_total{{event="{event}"}}"#);
        assert_eq!(gw.metric(&series).await, 1.0, "{event}");
    }
    let good = till.call_json("printBill", &body(42, 1)).await;
    assert_answer(&good, &json!({"printed": true}));
}

#[tokio::test]
async fn a_failing_rule_answers_the_fail_safe_and_is_counted() {
    let gw = failing_gateway().await;
    let till = gw.till();
    let polling = till.call_json("startPayment", &body(50, 1)).await;
    assert_answer(
        &polling,
        &json!({"polling": {"finished": true, "message": RULE_FAILED_MESSAGE}}),
    );
    let plain = till.call_json("completeSession", &body(51, 1)).await;
    assert_answer(&plain, &json!({}));
    for event in ["startPayment", "completeSession"] {
        let series = format!(r#"pollgate_rule_errors_total{{event="{event}"}}"#);
        assert_eq!(gw.metric(&series).await, 1.0, "{event}");
    }
    let outcome = gw
        .metric(r#"pollgate_requests_total{event="startPayment",outcome="rule_error"}"#)
        .await;
    assert_eq!(outcome, 1.0);

    // The fail-safe is not remembered: the same call runs the rule (and fails) again.
    let again = till.call_json("startPayment", &body(50, 1)).await;
    assert_eq!(again.body, polling.body);
    assert_eq!(
        gw.metric(r#"pollgate_rule_errors_total{event="startPayment"}"#)
            .await,
        2.0
    );
    let good = till.call_json("printBill", &body(52, 1)).await;
    assert_answer(&good, &json!({"printed": true}));
}

// ---- what a rule returns (GATEWAY.md 4.3) ----

#[tokio::test]
async fn adds_finished_true_to_a_polling_answer_without_polling() {
    let gw = polling_gateway(r#"#{ lineChanges: [#{ lineId: "line-60" }] }"#).await;
    let a = gw.till().call_json("addSessionLine", &body(60, 1)).await;
    assert_answer(
        &a,
        &json!({"lineChanges": [{"lineId": "line-60"}], "polling": {"finished": true}}),
    );
}

#[tokio::test]
async fn adds_finished_true_to_a_polling_object_without_it() {
    let gw = polling_gateway(r#"#{ polling: #{ message: "hi" } }"#).await;
    let a = gw.till().call_json("addSessionLine", &body(61, 1)).await;
    assert_answer(&a, &json!({"polling": {"finished": true, "message": "hi"}}));
}

#[tokio::test]
async fn a_unit_result_is_an_empty_answer_or_finished_for_polling() {
    let config = "events:\n  addSessionLine:\n    rule: unit.rhai\n    polling: {}\n  scanCode:\n    rule: unit.rhai\n";
    let gw = Gateway::start(config, &[("unit.rhai", "()")]).await;
    let till = gw.till();
    let a = till.call_json("addSessionLine", &body(62, 1)).await;
    assert_answer(&a, &json!({"polling": {"finished": true}}));
    let a = till.call("scanCode", scan_body()).await;
    assert_answer(&a, &json!({}));
}

#[tokio::test]
async fn reject_answers_400_with_the_rules_code_signed_and_replayed() {
    let rule = r#"reject("INVALID_ARTICLE", `article refused at attempt ${poll.attempt}`)"#;
    let gw = polling_gateway(rule).await;
    let till = gw.till();
    let b = body(70, 1);
    let first = till.call_json("addSessionLine", &b).await;
    assert_refused(
        &first,
        400,
        "INVALID_ARTICLE",
        "article refused at attempt 1",
        true,
    );
    let again = till.call_json("addSessionLine", &b).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body, first.body, "replayed, not run again");
    assert_eq!(again.signature, first.signature);
    let series = |outcome: &str| {
        format!(r#"pollgate_requests_total{{event="addSessionLine",outcome="{outcome}"}}"#)
    };
    assert_eq!(gw.metric(&series("rejected")).await, 1.0);
    assert_eq!(gw.metric(&series("replayed")).await, 1.0);
}

#[tokio::test]
async fn respond_gives_fixed_answers() {
    let config = "\
events:
  scanCode:
    respond: {scanCode: {recognized: false, message: Unknown card}}
  addSessionLine:
    respond: {lineChanges: []}
    polling: {}
  startSession:
    respond: {}
";
    let gw = Gateway::start(config, &[]).await;
    let till = gw.till();
    let a = till.call("scanCode", scan_body()).await;
    assert_answer(
        &a,
        &json!({"scanCode": {"recognized": false, "message": "Unknown card"}}),
    );
    let a = till.call_json("addSessionLine", &body(80, 1)).await;
    assert_answer(
        &a,
        &json!({"lineChanges": [], "polling": {"finished": true}}),
    );
    let a = till.call_json("startSession", &body(81, 1)).await;
    assert_answer(&a, &json!({}));
    assert_eq!(a.body.as_ref(), b"{}");
}

#[tokio::test]
async fn an_answer_or_state_over_max_answer_bytes_gets_the_fail_safe() {
    // Rhai does not bound maps grown key by key; pollgate measures the result instead.
    let grow = "let m = #{}; for i in 0..200 { m[`k${i}`] = i; } let a = keep_polling(\"x\"); a.big = m; a";
    let grow_state = "for i in 0..200 { state[`k${i}`] = i; } keep_polling(\"x\")";
    let gw = Gateway::start(
        "limits:\n  max_answer_bytes: 1000\nevents:\n  addSessionLine:\n    rule: grow.rhai\n    polling: {}\n  scanCode:\n    rule: state.rhai\n    polling: {}\n",
        &[("grow.rhai", grow), ("state.rhai", grow_state)],
    )
    .await;
    let till = gw.till();
    for event in ["addSessionLine", "scanCode"] {
        let answer = till.call_json(event, &body(1, 1)).await;
        assert_eq!(answer.status, 200);
        assert!(answer.is_signed());
        assert_eq!(
            answer.json(),
            json!({"polling": {"finished": true, "message": RULE_FAILED_MESSAGE}})
        );
        assert_eq!(
            gw.metric(&format!(r#"pollgate_rule_errors_total{{event="{event}"}}"#))
                .await,
            1.0
        );
    }
}

#[tokio::test]
async fn a_call_that_keeps_polling_with_the_state_as_it_was_writes_nothing() {
    use pollgate::conversation::{ConversationKey, ConversationStore};
    // The state changes on the second call only; the message on the fifth (what the
    // conversation last said is recorded for the console, so a new message is a change).
    let rule = "if poll.attempt == 2 { state.seen = true }\n\
                keep_polling(if poll.attempt < 5 { \"waiting\" } else { \"still waiting\" })";
    let gw = Gateway::start(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n",
        &[("rule.rhai", rule)],
    )
    .await;
    let till = gw.till();
    let store = &gw.gateway.store;
    let mut versions = Vec::new();
    for n in 1..=6 {
        let a = till.call_json("addSessionLine", &body(3, n)).await;
        let said = if n < 5 { "waiting" } else { "still waiting" };
        assert_eq!(a.message(), Some(said.to_owned()));
        let listed = store.list(gw.gateway.clock.now_ms(), 10).await.unwrap();
        let key = ConversationKey::from_hex(&listed[0].key).unwrap();
        let snapshot = store.load(key).await.unwrap().unwrap();
        versions.push((snapshot.attempt, snapshot.version));
    }
    // Attempts are counted on every call; only the calls that changed something wrote:
    // the first (what it said), the second (the state), the fifth (a new message).
    assert_eq!(versions, [(1, 1), (2, 2), (3, 2), (4, 2), (5, 3), (6, 3)]);
}
