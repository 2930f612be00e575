//! `rediss://` (GATEWAY.md 11): pollgate reaches a TLS-only redis-server whose certificate a
//! private CA signed, trusting that CA through `state.ca`, as an ACL user whose password is in
//! the URL and never reaches the log; a CA that did not sign Redis's certificate is refused,
//! and `/readyz` says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

const PASSWORD: &str = "tls-redis-pw-3141";

fn config(port: u16) -> String {
    format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n\
         state:\n  store: redis\n  url: rediss://pollgate:{PASSWORD}@127.0.0.1:{port}/0\n  ca: ca.pem\n  prefix: tls\n  timeout: 2s\n"
    )
}

const RULE: &str = "keep_polling(`attempt ${poll.attempt}`)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_carries_conversations_and_an_unknown_ca_is_refused() {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return;
    }
    let pki = Pki::new();
    let mut redis = PrivateRedis::planned_tls(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &pki.path("ca.pem"),
    )
    .await;
    redis.start().await;
    // An ACL user of its own for pollgate, with a password.
    let acl = format!(">{PASSWORD}");
    let made = redis.cli(&[
        "ACL", "SETUSER", "pollgate", "on", &acl, "~*", "&*", "+@all",
    ]);
    assert_eq!(made.as_deref(), Some("OK"));

    let ca = pki.read("ca.pem");
    let files = [("rule.rhai", RULE), ("ca.pem", ca.as_str())];
    let p = Process::serve_in(
        tempfile::tempdir().unwrap(),
        &config(redis.port),
        &files,
        true,
    )
    .await;
    let till = p.till();
    for n in 1..=2 {
        let a = till.call_json("addSessionLine", &body(4, n)).await;
        assert_eq!(a.message(), Some(format!("attempt {n}")), "{a:?}");
    }
    // The conversation is in that Redis, reached over TLS only.
    let keys = redis.cli(&["--scan", "--pattern", "tls:conv:*"]).unwrap();
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!p.log().contains(PASSWORD), "{}", p.log());

    // Another CA of the same name: its signature does not verify Redis's certificate, so
    // the handshake fails, pollgate says why and serves the fallback.
    let other = Pki::new();
    let other_ca = other.read("ca.pem");
    let files = [("rule.rhai", RULE), ("ca.pem", other_ca.as_str())];
    let q = Process::start_in(
        tempfile::tempdir().unwrap(),
        &config(redis.port),
        &files,
        true,
    )
    .await;
    let r = client()
        .get(format!("http://{}/readyz", q.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let why: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        why["reason"],
        format!(
            "outbox unavailable: Redis at rediss://pollgate:***@127.0.0.1:{}/0: invalid peer certificate: BadSignature",
            redis.port
        )
    );
    let refused = q.till().call_json("addSessionLine", &body(5, 1)).await;
    assert_eq!(
        refused.message().as_deref(),
        Some(pollgate::error_answer::STORE_DOWN_MESSAGE)
    );
    assert!(!q.log().contains(PASSWORD), "{}", q.log());
}
