//! Durable delivery's costs (GATEWAY.md 7, 8), against the real `pollgate serve` binary:
//!
//! 1. the server CPU per call of a durable event (queued in the outbox before the answer)
//!    against the same call without delivery (goal: at most 1.5x, thanks to group commit);
//! 2. the drain rate: the deliveries those calls queued while the back end held every
//!    request, delivered to a fast local back end once it answers (goal: at least 5,000 a
//!    second), timed until the back end has received the last of them.
//!
//! Each call is a new conversation (a completeSession), `CONCURRENCY` tills at once. The
//! server's CPU is read from `/proc/{pid}/stat` before and after the calls; the load
//! generator and the back end run in this process, not in the server's.
//!
//! `cargo build --release && cargo run --release --example durable_load`
//! (`POLLGATE_BIN` names another binary; `CALLS`, `CONCURRENCY`; `REDIS=redis://...`
//! adds the Redis store's two runs; `ONLY=embedded` keeps the runs whose name has that).

#[path = "../tests/common/upstream.rs"]
mod upstream;

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pollgate::signature::{Encoding, Secret, SUBSCRIPTION_HEADER};
use serde_json::json;
use upstream::{MockReply, MockUpstream};

/// base64 of "demo-secret-for-pollgate-examples".
const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Server {
    child: Child,
    webhook: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start(binary: &PathBuf, config: &str) -> Result<Server, Error> {
    let dir = tempfile::tempdir()?;
    let (port, admin) = (free_port()?, free_port()?);
    let text = format!(
        "server:\n  listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\n\
         subscriptions:\n  shop:\n    secret: {SECRET}\n{config}"
    );
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, text)?;
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&path)
        .env(
            "RUST_LOG",
            std::env::var("SERVER_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let server = Server {
        child,
        webhook: format!("http://127.0.0.1:{port}/webhooks/completeSession"),
        admin: format!("http://127.0.0.1:{admin}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", server.admin)).send().await {
            if r.status() == 200 {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not become ready".into())
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn body(run: u64, n: usize) -> Bytes {
    let value = json!({
        "event": {"eventBlocking": true, "eventCounter": 1, "eventTimestamp": format!("2026-03-02T12:00:00.000+01:00")},
        "sender": {"branchNumber": 4, "workplaceNumber": 2, "instanceId": format!("{run:016x}")},
        "session": {"sessionId": format!("00000000-0000-4000-8000-{n:012}"), "total": 23.75,
                    "lines": [{"articleNumber": 1017, "priceIncl": 4.25, "quantity": 1, "text": "Cappuccino"}]},
        "completeSession": {"receiptNumber": n}
    });
    Bytes::from(value.to_string())
}

/// `calls` calls, `concurrency` at a time; the server's CPU seconds they took.
async fn load(server: &Server, calls: usize, concurrency: usize) -> Result<(f64, Duration), Error> {
    let secret = Secret::decode(SECRET, Encoding::Base64)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let run = fastrand::u64(..);
    let before = cpu_seconds(server.child.id())?;
    let started = Instant::now();
    let mut tills = Vec::new();
    for _ in 0..concurrency {
        let (client, next, secret, url) = (
            client.clone(),
            next.clone(),
            secret.clone(),
            server.webhook.clone(),
        );
        tills.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= calls {
                    return Ok::<(), reqwest::Error>(());
                }
                let body = body(run, n);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SUBSCRIPTION_HEADER, "shop")
                    .header("x-mplus-signature", secret.sign(&body))
                    .body(body)
                    .send()
                    .await?;
                assert_eq!(r.status(), 200);
                assert_eq!(&r.bytes().await?[..], b"{}");
            }
        }));
    }
    for till in tills {
        till.await??;
    }
    let elapsed = started.elapsed();
    Ok((cpu_seconds(server.child.id())? - before, elapsed))
}

/// The pending deliveries the server's metrics show.
async fn pending(server: &Server) -> Result<f64, Error> {
    let text = reqwest::get(format!("{}/metrics", server.admin))
        .await?
        .text()
        .await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("pollgate_deliveries{") && l.contains("status=\"pending\""))
        .ok_or("no pending gauge")?;
    Ok(line.rsplit(' ').next().unwrap_or("0").parse()?)
}

struct Run {
    name: &'static str,
    store: String,
    durable: bool,
}

async fn measure(
    binary: &PathBuf,
    run: &Run,
    calls: usize,
    concurrency: usize,
) -> Result<f64, Error> {
    let (erp, gate) = MockUpstream::start_gated(|_| MockReply::raw(200, "{}")).await;
    let event = if run.durable {
        "    forward: erp\n    delivery: durable\n    respond: {}\n"
    } else {
        "    respond: {}\n"
    };
    let config = format!(
        "{}upstreams:\n  erp:\n    url: {}\n    timeout: 60s\n    max_connections: 32\n\
         events:\n  completeSession:\n{event}",
        run.store,
        erp.url()
    );
    let server = start(binary, &config).await?;
    let (cpu, elapsed) = load(&server, calls, concurrency).await?;
    let per_call = cpu / calls as f64 * 1e6;
    println!(
        "{:<28} {calls} calls in {:.2} s ({:.0}/s), server CPU {:.1} µs per call",
        run.name,
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        per_call
    );
    if run.durable {
        let queued = pending(&server).await?;
        let started = Instant::now();
        let too_long = || -> Result<(), Error> {
            if started.elapsed() > Duration::from_secs(120) {
                return Err("the outbox did not drain within 120 s".into());
            }
            Ok(())
        };
        gate.open();
        // The drain is timed by the back end's own count (every delivery has arrived),
        // read here in the process; `/metrics` is read only after that, and seldom: with
        // the Redis store each scrape walks the keyspace to count live conversations,
        // which on a two-core machine slowed the very drain it watched.
        while (erp.count() as f64) < queued {
            too_long()?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed().as_secs_f64();
        while pending(&server).await? > 0.0 {
            too_long()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{:<28} drained {queued} deliveries in {took:.2} s: {:.0} deliveries/s ({} requests seen; none pending {:.1} s after the gate opened)",
            "",
            queued / took,
            erp.count(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(per_call)
}

/// Deletes this run's keys from a Redis others share (conversations live `state.ttl`).
fn forget(url: &str, prefix: &str) -> Result<(), Error> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    for pattern in [format!("{prefix}:*"), format!("{{{prefix}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern.replace('{', "\\{"))
            .query(&mut conn)?;
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("DEL").arg(chunk).query(&mut conn)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable_load: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> Result<(), Error> {
    pollgate::upstream::install_crypto_provider();
    let binary = PathBuf::from(
        std::env::var("POLLGATE_BIN").unwrap_or_else(|_| "target/release/pollgate".into()),
    );
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (calls, concurrency) = (number("CALLS", 20_000), number("CONCURRENCY", 32));
    let outbox_dir = tempfile::tempdir()?;
    let mut runs = vec![
        Run {
            name: "memory, no delivery",
            store: String::new(),
            durable: false,
        },
        Run {
            name: "memory + embedded outbox",
            store: format!("outbox:\n  path: {}\n", outbox_dir.path().display()),
            durable: true,
        },
    ];
    let mut redis_prefix = None;
    if let Ok(url) = std::env::var("REDIS") {
        let prefix = format!("pollgate-bench-{:08x}", fastrand::u32(..));
        redis_prefix = Some(prefix.clone());
        let store = format!("state:\n  store: redis\n  url: {url}\n  prefix: {prefix}\n");
        runs.push(Run {
            name: "redis, no delivery",
            store: store.clone(),
            durable: false,
        });
        runs.push(Run {
            name: "redis + redis outbox",
            store,
            durable: true,
        });
    }
    if let Ok(only) = std::env::var("ONLY") {
        runs.retain(|r| r.name.contains(only.as_str()));
    }
    let mut figures = Vec::new();
    for run in &runs {
        figures.push(measure(&binary, run, calls, concurrency).await?);
    }
    if let (Ok(url), Some(prefix)) = (std::env::var("REDIS"), &redis_prefix) {
        forget(&url, prefix)?;
    }
    for pair in figures.chunks(2) {
        if let [plain, durable] = pair {
            println!("durable / plain CPU per call: {:.2}x", durable / plain);
        }
    }
    Ok(())
}
