//! `rediss://` (GATEWAY.md 11): pollgate reaches a TLS-only redis-server whose certificate a
//! private CA signed, trusting that CA through `state.ca`, as an ACL user whose password is in
//! the URL and never reaches the log; a CA that did not sign Redis's certificate is refused,
//! and `/readyz` says so. The same over a Redis Cluster whose nodes speak TLS only (to
//! clients, on the cluster bus and for replication): two pollgate replicas share a
//! conversation through it.
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
    let q = refused_with_another_ca(
        &config(redis.port),
        &format!(
            "outbox unavailable: Redis at rediss://pollgate:***@127.0.0.1:{}/0: invalid peer certificate: BadSignature",
            redis.port
        ),
    )
    .await;
    assert!(!q.log().contains(PASSWORD), "{}", q.log());
}

/// pollgate started on `config` trusting a CA that did not sign Redis's certificate: no
/// connection is trusted, `/readyz` answers 503 with exactly `reason`, and a till gets the
/// store-failure answer. The process, for more checks.
async fn refused_with_another_ca(config: &str, reason: &str) -> Process {
    let other = Pki::new();
    let other_ca = other.read("ca.pem");
    let files = [("rule.rhai", RULE), ("ca.pem", other_ca.as_str())];
    let q = Process::start_in(tempfile::tempdir().unwrap(), config, &files, true).await;
    let r = client()
        .get(format!("http://{}/readyz", q.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let why: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(why["reason"], reason);
    let refused = q.till().call_json("addSessionLine", &body(5, 1)).await;
    assert_eq!(
        refused.message().as_deref(),
        Some(pollgate::error_answer::STORE_DOWN_MESSAGE)
    );
    q
}

/// `state:` for the TLS cluster's nodes, trusting `ca.pem`.
fn cluster_config(cluster: &PrivateCluster) -> String {
    format!(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n\
         state:\n  store: redis\n  cluster: true\n  url: [{}]\n  ca: ca.pem\n  prefix: tlsc\n  timeout: 2s\n",
        cluster.urls().join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_carries_a_conversation_across_replicas_and_an_unknown_ca_is_refused() {
    if !redis_installed() {
        skip_outside_ci("redis-server is not installed");
        return;
    }
    // Every node speaks TLS only: to clients, on the cluster bus and for replication.
    let pki = Pki::new();
    let cluster = PrivateCluster::start(Some(&pki)).await;
    let config = cluster_config(&cluster);
    let ca = pki.read("ca.pem");
    let files = [("rule.rhai", RULE), ("ca.pem", ca.as_str())];
    let a = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;
    let b = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;
    for n in 1..=4 {
        let p = if n % 2 == 0 { &b } else { &a };
        let answer = p.till().call_json("addSessionLine", &body(6, n)).await;
        assert_eq!(answer.message(), Some(format!("attempt {n}")), "{answer:?}");
    }
    // The conversation is in the cluster, on one primary.
    let primary = cluster.primary_with("tlsc:conv:*");
    let keys = cluster.cli(primary, &["--scan", "--pattern", "tlsc:conv:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");

    // A CA that did not sign the nodes' certificate: no node is trusted, pollgate says why
    // and serves the fallback.
    refused_with_another_ca(
        &config,
        &format!(
            "outbox unavailable: Redis at {}: cannot connect to any node: invalid peer certificate: BadSignature",
            cluster.urls().join(", ")
        ),
    )
    .await;
}
