//! Benchmark for pushing to tills (GATEWAY.md 7, 9): how long a message pushed for a till
//! whose backgroundPoll call is held takes to reach the till.
//!
//! Each round, a till's call is held (the gateway reports it held), then a back end sends
//! `POST /push/...` and the clock runs until the till has its answer: the push request,
//! the mailbox, the wake-up, the answer and its signature all count. Two set-ups, in this
//! process on loopback: the memory store (one gateway), and the Redis store with two
//! gateways (the call held by one, the push sent to the other, so the wake-up crosses
//! Redis pub/sub). Prints p50, p99 and max per set-up; exits 1 when a p99 misses its goal
//! (10 ms memory, 25 ms Redis) or an answer is wrong.
//!
//! `cargo run --release --example push_latency [ROUNDS] [REDIS_URL]`
//! (default 2000 rounds and redis://127.0.0.1:6379; the Redis part is skipped when none
//! answers).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollgate::config::Config;
use pollgate::gateway::Gateway;
use pollgate::push::PushMailbox;
use pollgate::signature::{Encoding, Secret, SUBSCRIPTION_HEADER};
use pollgate::App;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SUBSCRIPTION: &str = "shop";
/// base64 of "demo-secret-for-pollgate-examples".
const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A gateway started in this process: its handle and URLs.
struct Started {
    gateway: Gateway,
    webhook: String,
    admin: String,
    _stop: pollgate::shutdown::Trigger,
}

async fn start(state: &str) -> Result<Started, Error> {
    let text = format!(
        "subscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\nwatch: false\n{state}events:\n  backgroundPoll:\n    push: {{hold: 20s, ttl: 10m}}\n"
    );
    let path = std::env::temp_dir().join("pollgate-push-latency.yaml");
    let config = Config::from_text(path, &text, &|_| None)?;
    let app = App::build(config, Arc::new(|_: &str| None)).await?;
    let gateway = app.gateway().clone();
    let webhook = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let urls = (
        format!("http://{}/webhooks/backgroundPoll", webhook.local_addr()?),
        format!("http://{}", admin.local_addr()?),
    );
    let (stop, shutdown) = pollgate::shutdown::channel();
    tokio::spawn(app.serve(webhook, admin, shutdown));
    Ok(Started {
        gateway,
        webhook: urls.0,
        admin: urls.1,
        _stop: stop,
    })
}

fn poll_body(round: usize) -> Vec<u8> {
    json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": round,
                  "eventTimestamp": format!("2026-03-02T09:16:31.{:03}+01:00", round % 1000)},
        "sender": {"branchNumber": 1, "workplaceNumber": round, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"}
    })
    .to_string()
    .into_bytes()
}

/// Push→answer latency of each round: the till calls `holder`, the back end pushes to
/// `pusher`.
async fn measure(
    holder: &Started,
    pusher: &Started,
    rounds: usize,
) -> Result<Vec<Duration>, Error> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let back_end = reqwest::Client::builder().no_proxy().build()?;
    let secret = Secret::decode(SECRET, Encoding::Base64)?;
    let wakers = holder.gateway.push.mailbox().wakers().clone();
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let body = poll_body(round);
        let call = client
            .post(&holder.webhook)
            .header("content-type", "application/json")
            .header(SUBSCRIPTION_HEADER, SUBSCRIPTION)
            .header("x-mplus-signature", secret.sign(&body))
            .body(body)
            .send();
        let call = tokio::spawn(call);
        let deadline = Instant::now() + Duration::from_secs(5);
        while wakers.held() < 1 {
            if Instant::now() > deadline {
                return Err(format!("round {round}: the call was never held").into());
            }
            tokio::task::yield_now().await;
        }
        let message = json!({"externalCardScan": {"cardNumber": format!("6012-{round}")}});
        let pushed = Instant::now();
        let answer = back_end
            .post(format!("{}/push/{SUBSCRIPTION}/1/{round}", pusher.admin))
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
            .await?;
        if answer.status() != 202 {
            return Err(format!("round {round}: push answered {}", answer.status()).into());
        }
        let response = call.await??;
        let bytes = response.bytes().await?;
        latencies.push(pushed.elapsed());
        let value: Value = serde_json::from_slice(&bytes)?;
        if value["externalCardScan"] != message["externalCardScan"] {
            return Err(format!("round {round}: the till got {value}").into());
        }
        while wakers.held() > 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(latencies)
}

/// Prints p50/p99/max; true when p99 is within `goal`.
fn report(name: &str, mut latencies: Vec<Duration>, goal: Duration) -> bool {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let (p50, p99, max) = (at(0.50), at(0.99), latencies[latencies.len() - 1]);
    let ok = p99 <= goal;
    println!(
        "{name:<28} rounds {:>5}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  goal p99 < {} ms: {}",
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        goal.as_millis(),
        if ok { "met" } else { "MISSED" }
    );
    ok
}

async fn run() -> Result<bool, Error> {
    pollgate::upstream::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let redis = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let memory = start("").await?;
    let mut ok = report(
        "memory, one gateway",
        measure(&memory, &memory, rounds).await?,
        Duration::from_millis(10),
    );
    let prefix = format!("pollgate-bench-{:016x}", fastrand::u64(..));
    let state = format!("state:\n  store: redis\n  url: {redis}\n  prefix: {prefix}\n");
    match (start(&state).await, start(&state).await) {
        (Ok(a), Ok(b)) => {
            ok &= report(
                "redis, across two gateways",
                measure(&a, &b, rounds).await?,
                Duration::from_millis(25),
            );
        }
        (Err(e), _) | (_, Err(e)) => println!("redis: skipped ({e})"),
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(600), run()).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("FAIL: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("FAIL: the run took longer than 600 s");
            ExitCode::FAILURE
        }
    }
}
