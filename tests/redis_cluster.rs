//! pollgate on a Redis Cluster (GATEWAY.md 11), with the real binary: two replicas share
//! conversations, forward leases and durable deliveries through the cluster `.ci/run`
//! starts (`POLLGATE_TEST_CLUSTER`, see .ci/redis-cluster.sh), the admin listing walks
//! every primary, and when the primary holding a conversation or a queue fails over to its
//! replica, attempts carry on, the forward is sent once and each delivery arrives once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The cluster's node ports, or `None` after saying the test is skipped.
fn cluster() -> Option<Vec<u16>> {
    let Ok(nodes) = std::env::var("POLLGATE_TEST_CLUSTER") else {
        skip_outside_ci("no Redis Cluster (POLLGATE_TEST_CLUSTER; .ci/redis-cluster.sh start)");
        return None;
    };
    Some(
        nodes
            .split(',')
            .map(|n| n.rsplit(':').next().unwrap().parse().unwrap())
            .collect(),
    )
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "redis-cli -p {port} {args:?}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn role(port: u16) -> String {
    cli(port, &["ROLE"]).lines().next().unwrap_or("").to_owned()
}

/// The primary holding keys that match `pattern`.
fn primary_with(ports: &[u16], pattern: &str) -> u16 {
    ports
        .iter()
        .copied()
        .filter(|&p| role(p) == "master")
        .find(|&p| !cli(p, &["--scan", "--pattern", pattern]).is_empty())
        .unwrap_or_else(|| panic!("no primary holds {pattern}"))
}

/// Fails `primary` over to its replica (`CLUSTER FAILOVER`, the clean hand-over) and waits
/// until the roles have swapped; returns the new primary.
async fn fail_over(primary: u16) -> u16 {
    // A replica takes over only once it is in sync (a primary just demoted may still be
    // loading the new primary's data).
    let replica = eventually("a replica in sync", || async {
        let info = cli(primary, &["INFO", "replication"]);
        let line = info.lines().find_map(|l| l.strip_prefix("slave0:"))?;
        if !line.contains("state=online") {
            return None;
        }
        let port = line.split(',').find_map(|kv| kv.strip_prefix("port="))?;
        let port: u16 = port.parse().ok()?;
        cli(port, &["INFO", "replication"])
            .contains("master_link_status:up")
            .then_some(port)
    })
    .await;
    // A manual failover that did not start in time (the primary's pause ran out first) is
    // asked for again, up to three times.
    for _ in 0..3 {
        assert_eq!(cli(replica, &["CLUSTER", "FAILOVER"]), "OK");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            if role(replica) == "master" && role(primary) == "slave" {
                return replica;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    panic!("{replica} did not take over from {primary}");
}

fn state(ports: &[u16], prefix: &str) -> String {
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    format!(
        "state:\n  store: redis\n  cluster: true\n  url: [{}]\n  prefix: {prefix}\n  ttl: 5m\n  timeout: 2s\n",
        urls.join(", ")
    )
}

async fn admin_list(p: &Process, path: &str) -> Vec<Value> {
    let r = client()
        .get(format!("http://{}{path}", p.admin))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{path} {}", String::from_utf8_lossy(&bytes));
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    list.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarantees_hold_across_a_cluster_failover_and_the_listing_walks_every_primary() {
    let Some(ports) = cluster() else {
        return;
    };
    let prefix = format!("pollgate-test-{:016x}", fastrand::u64(..));
    let (backend, gate) =
        MockUpstream::start_gated(|_| MockReply::json(200, json!({"manager": "Sam"}))).await;
    let erp_addr = closed_port().await;
    let config = format!(
        "events:\n  startPayment:\n    rule: rule.rhai\n    polling: {{}}\n  completeSession:\n    forward: erp\n    delivery: durable\n\
         upstreams:\n  backend:\n    url: {}\n  erp:\n    url: http://{erp_addr}/mplus\n    timeout: 2s\n    durable: {{backoff: {{min: 100ms, max: 300ms}}, lease: 1s}}\n{}",
        backend.url(),
        state(&ports, &prefix)
    );
    let files = [("rule.rhai", APPROVAL_RULE)];
    let a = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;
    let b = Process::serve_in(tempfile::tempdir().unwrap(), &config, &files, true).await;

    // A conversation whose forward is on its way (the back end holds it) when the primary
    // holding the conversation fails over.
    let first = a.till().call_json("startPayment", &body(1, 1)).await;
    assert_eq!(first.message().as_deref(), Some("waiting, attempt 1"));
    eventually("the forward to be sent", || async {
        (gate.active() == 1).then_some(())
    })
    .await;
    let conversation = primary_with(&ports, &format!("{prefix}:conv:*"));
    let promoted = fail_over(conversation).await;
    assert_eq!(
        primary_with(&ports, &format!("{prefix}:conv:*")),
        promoted,
        "the conversation moved with its slot"
    );
    for n in 2..=3 {
        let till = if n % 2 == 0 { b.till() } else { a.till() };
        let answer = till.call_json("startPayment", &body(1, n)).await;
        assert_eq!(answer.message(), Some(format!("waiting, attempt {n}")));
    }
    gate.open();
    let last = eventually("the approval", || async {
        let answer = b.till().call_json("startPayment", &body(1, 9)).await;
        (answer.finished() == Some(true)).then_some(answer)
    })
    .await;
    assert_eq!(last.message().as_deref(), Some("approved by Sam"));
    assert_eq!(
        backend.count(),
        1,
        "one forward across replicas and the failover"
    );

    // Durable deliveries queued while the back end is down; their queue's primary fails
    // over; then the back end comes up and gets each once.
    for n in 1..=3 {
        let queued = a
            .till()
            .call_json("completeSession", &complete_session(n))
            .await;
        assert_eq!((queued.status, &queued.body[..]), (200, &b"{}"[..]));
    }
    let queue = primary_with(&ports, &format!("{{{prefix}:outbox:erp}}*"));
    fail_over(queue).await;
    assert_eq!(admin_list(&b, "/deliveries?limit=1000").await.len(), 3);
    let erp = MockUpstream::start_at(erp_addr, |_| MockReply::json(200, json!({}))).await;
    eventually("the three deliveries", || async {
        admin_list(&b, "/deliveries?limit=1000")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let keys: HashSet<String> = erp
        .requests()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!((keys.len(), erp.count()), (3, 3), "each delivered once");

    // The listing walks every primary: twelve conversations (so they are all but sure to
    // spread), each listed once, as many as the primaries hold between them.
    for n in 10..18 {
        b.till().call_json("startPayment", &body(n, 1)).await;
    }
    let listed = admin_list(&b, "/conversations").await;
    let mut held = Vec::new();
    for p in ports.iter().copied().filter(|&p| role(p) == "master") {
        let keys = cli(p, &["--scan", "--pattern", &format!("{prefix}:conv:*")]);
        held.push(keys.lines().count());
    }
    assert_eq!(listed.len(), 12, "{listed:?}");
    assert_eq!(held.iter().sum::<usize>(), 12, "{held:?}");
    assert!(held.iter().filter(|&&n| n > 0).count() >= 2, "{held:?}");
}
