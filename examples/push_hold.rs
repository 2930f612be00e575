//! Probe for held backgroundPoll calls (GATEWAY.md 7, 9): 10,000 tills each holding a
//! backgroundPoll call on one `pollgate serve` process at once.
//!
//! Starts the binary (`POLLGATE_BIN`, else `target/release/pollgate`) on loopback with a
//! push channel, opens one connection per till and sends its signed call, waits until the
//! gateway reports every call held, and reads the process's resident memory (VmRSS) before
//! and with the calls held. Then it pushes a message to 100 of the tills (each must get
//! its own at once), sends SIGTERM, and times how long the gateway takes to answer every
//! other held call `{"polling": {"finished": false}}` and exit. Exits 1 when RSS with the
//! calls held is 256 MiB or more, or an answer is wrong or late.
//!
//! `cargo build --release && cargo run --release --example push_hold [TILLS]`
//! (default 10000; needs `ulimit -n` above the number of tills, in this tool and the
//! gateway alike).

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollgate::signature::{Encoding, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const SUBSCRIPTION: &str = "shop";
/// base64 of "demo-secret-for-pollgate-examples".
const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";
const PUSHED: usize = 100;
const MAX_RSS: u64 = 256 * 1024 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The soft limit of open files of this process.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(u64::MAX)
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Kills the gateway if the probe ends early.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One till's call, sent on its own connection; its answer's body. `connecting` paces the
/// connects, so 10,000 at once do not overflow the listen backlog.
async fn till_call(
    port: u16,
    workplace: usize,
    secret: Secret,
    connecting: Arc<Semaphore>,
) -> Result<Value, Error> {
    let body = json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": 1,
                  "eventTimestamp": "2026-03-02T09:16:31.000+01:00"},
        "sender": {"branchNumber": 1, "workplaceNumber": workplace, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"}
    })
    .to_string();
    let head = format!(
        "POST /webhooks/backgroundPoll HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-mplus-subscription-id: {SUBSCRIPTION}\r\nx-mplus-signature: {}\r\ncontent-length: {}\r\n\r\n",
        secret.sign(body.as_bytes()),
        body.len()
    );
    let permit = connecting.acquire_owned().await?;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    drop(permit);
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(format!("till {workplace}: connection closed before an answer").into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        if buf.len() >= end + 4 + length {
            return Ok(serde_json::from_slice(&buf[end + 4..end + 4 + length])?);
        }
    }
}

async fn held(client: &reqwest::Client, admin: &str) -> f64 {
    let Ok(r) = client.get(format!("{admin}/metrics")).send().await else {
        return -1.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("pollgate_push_held_calls "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

async fn run() -> Result<bool, Error> {
    pollgate::upstream::install_crypto_provider();
    let tills: usize = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let limit = open_files_limit();
    if limit < tills as u64 + 200 {
        return Err(format!(
            "`ulimit -n` is {limit}: raise it above {} for {tills} tills",
            tills + 200
        )
        .into());
    }
    let bin = std::env::var("POLLGATE_BIN").unwrap_or_else(|_| "target/release/pollgate".into());
    let dir = tempfile::tempdir()?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  max_connections: {}\nadmin:\n  listen: 127.0.0.1:{admin_port}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\nevents:\n  backgroundPoll:\n    push: {{hold: 300s, ttl: 10m}}\n",
        tills + 100
    );
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, config)?;
    let child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&path)
        .env(
            "RUST_LOG",
            std::env::var("POLLGATE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let pid = child.id();
    let mut gateway = Gateway(child);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    while held(&client, &admin).await < 0.0 {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the gateway did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_idle = rss_bytes(pid);
    let secret = Secret::decode(SECRET, Encoding::Base64)?;
    // Connects at once at most; more overflow the listen backlog on a busy 2-core box.
    let connecting = Arc::new(Semaphore::new(32));
    let mut calls: Vec<_> = (0..tills)
        .map(|w| tokio::spawn(till_call(port, w, secret.clone(), connecting.clone())))
        .collect();
    let opened = Instant::now();
    while held(&client, &admin).await < tills as f64 {
        if let Some(failed) = calls.iter().position(tokio::task::JoinHandle::is_finished) {
            let why = match calls.swap_remove(failed).await {
                Ok(Ok(answer)) => format!("answered {answer}"),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            return Err(format!("till {failed}'s call ended before any push: {why}").into());
        }
        if opened.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "only {} of {tills} calls held after 120 s",
                held(&client, &admin).await
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_held = opened.elapsed();
    let rss_held = rss_bytes(pid);
    for w in 0..PUSHED.min(tills) {
        let r = client
            .post(format!("{admin}/push/{SUBSCRIPTION}/1/{w}"))
            .header("content-type", "application/json")
            .body(json!({"externalCardScan": {"cardNumber": format!("card-{w}")}}).to_string())
            .send()
            .await?;
        if r.status() != 202 {
            return Err(format!("push to till {w} answered {}", r.status()).into());
        }
    }
    let mut calls = calls.into_iter();
    let mut ok = true;
    for w in 0..PUSHED.min(tills) {
        let answer = calls.next().ok_or("no call")?.await??;
        if answer["externalCardScan"]["cardNumber"] != format!("card-{w}") {
            println!("till {w} got {answer}");
            ok = false;
        }
    }
    let stopping = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let mut unfinished = 0;
    for call in calls {
        if call.await?? != json!({"polling": {"finished": false}}) {
            unfinished += 1;
        }
    }
    let answered = stopping.elapsed();
    let exit = tokio::task::spawn_blocking(move || gateway.0.wait()).await??;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "tills holding a backgroundPoll call: {tills} (all held {:.1} s after the first call)",
        all_held.as_secs_f64()
    );
    println!(
        "gateway RSS: {:.1} MiB idle, {:.1} MiB with every call held ({:.1} KiB a held call)",
        mib(rss_idle),
        mib(rss_held),
        (rss_held.saturating_sub(rss_idle)) as f64 / 1024.0 / tills as f64
    );
    println!("pushed to {PUSHED} tills: each got its own message");
    println!(
        "SIGTERM: the other {} held calls answered finished:false within {:.3} s; exit {exit}",
        tills - PUSHED.min(tills),
        answered.as_secs_f64()
    );
    if unfinished > 0 {
        println!("FAIL: {unfinished} calls answered something else");
        ok = false;
    }
    if rss_held >= MAX_RSS {
        println!("FAIL: RSS {:.1} MiB is over 256 MiB", mib(rss_held));
        ok = false;
    }
    Ok(ok && exit.success())
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
