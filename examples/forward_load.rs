//! Load probe for forwarding (GATEWAY.md 5): 1000 polling conversations at once, each
//! forwarded once to a slow upstream behind `max_connections: 32`.
//!
//! The gateway runs in this process (`pollgate::App` on 127.0.0.1:0) with a local upstream
//! that answers after 500 ms and counts the TCP connections it holds open and the requests
//! it serves at once. Every conversation polls (as a till does) until it is finished.
//! Prints the figures and exits 1 if a bound is broken: more than 32 upstream connections
//! or requests at once, anything but exactly one upstream request per conversation, an
//! unfinished or wrong answer, or the whole run taking longer than its deadline.
//!
//! `cargo run --release --example forward_load`

#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pollgate::config::Config;
use pollgate::conversation::ConversationStore;
use pollgate::signature::{Encoding, Secret, SUBSCRIPTION_HEADER};
use pollgate::App;
use serde_json::json;
use tokio::net::TcpListener;
use upstream::{MockReply, MockUpstream};

const CONVERSATIONS: usize = 1000;
const MAX_CONNECTIONS: usize = 32;
const UPSTREAM_DELAY: Duration = Duration::from_millis(500);
/// A till's pause between polls that were answered "keep polling".
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The whole run, start to finish.
const DEADLINE: Duration = Duration::from_secs(110);
const SUBSCRIPTION: &str = "shop";
/// base64 of "demo-secret-for-pollgate-examples".
const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";
const FINAL_MESSAGE: &str = "Back office says yes";

fn config(upstream: &str) -> Result<Config, Error> {
    let text = format!(
        r"
subscriptions:
  {SUBSCRIPTION}:
    secret: {SECRET}
watch: false
events:
  addSessionLine:
    forward: backend
    hold: 1s
    polling:
      timeout: 100s
upstreams:
  backend:
    url: http://{upstream}/mplus
    timeout: 10s
    retries: 2
    max_connections: {MAX_CONNECTIONS}
"
    );
    let path = std::env::temp_dir().join("pollgate-forward-load.yaml");
    Ok(Config::from_text(path, &text, &|_| None)?)
}

/// Conversation `n`'s body with `counter` as eventCounter.
fn body(n: usize, counter: u32) -> Bytes {
    let value = json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": counter,
                  "eventTimestamp": "2026-03-02T09:15:00.000+01:00"},
        "sender": {"branchNumber": 3, "workplaceNumber": n / 100, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"},
        "session": {"sessionId": format!("00000000-0000-4000-8000-{n:012}"), "lines": []},
        "addSessionLine": {"line": {"lineId": format!("line-{n}"), "articleNumber": 1017, "priceIncl": 4.25, "quantity": 1, "text": "Cappuccino"}}
    });
    Bytes::from(value.to_string())
}

/// How one conversation went.
struct Outcome {
    polls: u32,
    took: Duration,
    message: Option<String>,
}

/// Polls conversation `n` until finished, as a till does.
async fn converse(client: reqwest::Client, url: String, secret: Secret, n: usize) -> Outcome {
    let started = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let body = body(n, polls);
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .header(SUBSCRIPTION_HEADER, SUBSCRIPTION)
            .header("x-mplus-signature", secret.sign(&body))
            .body(body)
            .send()
            .await;
        let json: Option<serde_json::Value> = match answer {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
            Err(_) => None,
        };
        let polling = json.as_ref().and_then(|j| j.get("polling"));
        if polling.and_then(|p| p.get("finished")) == Some(&json!(true)) {
            let message = polling
                .and_then(|p| p.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned);
            return Outcome {
                polls,
                took: started.elapsed(),
                message,
            };
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Resident set size of this process, from /proc/self/status.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(DEADLINE, run()).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("FAIL: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("FAIL: the run took longer than {DEADLINE:?}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(true) when every bound held.
async fn run() -> Result<bool, Error> {
    pollgate::upstream::install_crypto_provider();
    let (upstream, gate) = MockUpstream::start_gated(|_| {
        let answer = json!({"polling": {"finished": true, "message": FINAL_MESSAGE}});
        MockReply::json(200, answer).after(UPSTREAM_DELAY)
    })
    .await;
    gate.open();

    let app = App::build(
        config(&upstream.addr.to_string())?,
        Arc::new(|_: &str| None),
    )
    .await?;
    let gateway = app.gateway().clone();
    let webhook = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/addSessionLine", webhook.local_addr()?);
    let (trigger, shutdown) = pollgate::shutdown::channel();
    let server = tokio::spawn(app.serve(webhook, admin, shutdown));

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let secret = Secret::decode(SECRET, Encoding::Base64)?;
    let rss_before = rss_bytes();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONVERSATIONS)
        .map(|n| tokio::spawn(converse(client.clone(), url.clone(), secret.clone(), n)))
        .collect();
    let mut outcomes = Vec::with_capacity(CONVERSATIONS);
    for task in tasks {
        outcomes.push(task.await?);
    }
    let total = started.elapsed();
    let rss_after = rss_bytes();
    let live = gateway.store.count().await.unwrap_or(0);
    trigger.fire();
    let _ = server.await;
    // The tills' and the gateway's connections are closed now; the store still holds
    // every conversation (freed memory may stay with the allocator, so this is an upper
    // bound for the store's share).
    drop(client);
    let rss_closed = rss_bytes();

    let requests = upstream.count();
    let keys = idempotency_keys(&upstream);
    let max_conns = upstream.max_open_connections();
    let max_active = gate.max_active();
    let wrong = outcomes
        .iter()
        .filter(|o| o.message.as_deref() != Some(FINAL_MESSAGE))
        .count();
    let polls: u32 = outcomes.iter().map(|o| o.polls).sum();
    let mut took: Vec<_> = outcomes.iter().map(|o| o.took).collect();
    took.sort();
    let per_conversation = rss_after.saturating_sub(rss_before) / CONVERSATIONS as u64;
    let text = gateway.metrics.encode();

    println!("forward_load: {CONVERSATIONS} polling conversations, upstream {UPSTREAM_DELAY:?} per reply, max_connections {MAX_CONNECTIONS}");
    println!("  total time                         {total:.2?}");
    println!(
        "  ideal time (ceil(n/32) x delay)    {:.2?}",
        UPSTREAM_DELAY * CONVERSATIONS.div_ceil(MAX_CONNECTIONS) as u32
    );
    println!(
        "  conversation time p50 / p99 / max  {:.2?} / {:.2?} / {:.2?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1]
    );
    println!("  till calls (polls)                 {polls}");
    println!("  upstream requests total            {requests} (distinct Idempotency-Keys {keys})");
    println!(
        "  upstream connections opened        {}",
        upstream.connections()
    );
    println!("  max concurrent upstream conns      {max_conns}");
    println!("  max concurrent upstream requests   {max_active}");
    println!(
        "  gateway upstream success / retry   {} / {}",
        metric(
            &text,
            "pollgate_upstream_requests_total{upstream=\"backend\",outcome=\"success\"}"
        ),
        metric(
            &text,
            "pollgate_upstream_requests_total{upstream=\"backend\",outcome=\"retry\"}"
        )
    );
    println!("  live conversations in the store    {live}");
    println!(
        "  RSS before / after                 {} KiB / {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    println!("  RSS growth per conversation        {per_conversation} bytes (whole process: gateway, store, tills, upstream)");
    println!(
        "  RSS after connections closed       {} KiB ({} bytes per conversation, store kept)",
        rss_closed / 1024,
        rss_closed.saturating_sub(rss_before) / CONVERSATIONS as u64
    );

    let mut ok = true;
    let mut check = |holds: bool, what: String| {
        if !holds {
            eprintln!("FAIL: {what}");
            ok = false;
        }
    };
    check(
        max_conns <= MAX_CONNECTIONS,
        format!("{max_conns} upstream connections open at once (max {MAX_CONNECTIONS})"),
    );
    check(
        max_active <= MAX_CONNECTIONS,
        format!("{max_active} upstream requests at once (max {MAX_CONNECTIONS})"),
    );
    check(
        requests == CONVERSATIONS,
        format!("{requests} upstream requests for {CONVERSATIONS} conversations"),
    );
    check(
        keys == CONVERSATIONS,
        format!("{keys} distinct Idempotency-Keys for {CONVERSATIONS} conversations"),
    );
    check(
        wrong == 0,
        format!("{wrong} conversations finished without the upstream's answer"),
    );
    Ok(ok)
}

/// How many distinct `Idempotency-Key`s the upstream received.
fn idempotency_keys(upstream: &MockUpstream) -> usize {
    let requests = upstream.requests();
    let keys: HashSet<&[u8]> = requests
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key"))
        .map(|key| key.as_bytes())
        .collect();
    keys.len()
}
