//! Test harness: the real gateway on 127.0.0.1:0 (the same `App::build(..).serve(..)` that
//! `main` runs), a till that signs its calls, and mock upstreams that record what they get.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    unreachable_pub
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pollgate::config::Config;
use pollgate::shutdown::{self, Trigger};
pub use pollgate::signature::SUBSCRIPTION_HEADER;
use pollgate::signature::{Encoding, Secret};
use pollgate::App;
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod cluster;
mod pki;
mod redis;
mod upstream;
// Not every test binary uses the mock upstream or a private Redis.
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use pki::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use upstream::*;
pub mod webdriver;

/// The shipped demo secret (base64 of "demo-secret-for-pollgate-examples").
pub const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";
pub const SUBSCRIPTION: &str = "shop";

/// A file under `tests/fixtures` (copies of the team's shared protocol files; see its README).
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// The bytes of a fixture; a missing one panics naming the path it looked for.
pub fn read_fixture(path: &str) -> Vec<u8> {
    let full = fixture(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// The marker `.ci/run` counts in the test log: a test that cannot run here prints
/// `skipped: WHY` and returns, and the totals line shows how many did.
pub const SKIP_MARKER: &str = "skipped:";

/// Reports a test that cannot run on this machine (`why`: what is missing), or fails it
/// when the `CI` variable is set, since CI provides everything the suite needs. The line
/// goes straight to the process's stderr: the test harness captures `eprintln!` of a
/// passing test, and a skip nobody sees is a pass nobody earned.
pub fn skip_outside_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}, and CI needs it (.ci/run provides it)"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{SKIP_MARKER} {why}");
}

/// A running gateway. Stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub gateway: pollgate::gateway::Gateway,
    trigger: Trigger,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Writes `files` (name, content) and `pollgate.yaml` = `config` into a fresh folder and
    /// starts the gateway on it. `config` gets `server`/`admin` listen lines and the `shop`
    /// subscription prepended unless it has its own.
    pub async fn start(config: &str, files: &[(&str, &str)]) -> Self {
        Self::start_with_env(config, files, HashMap::new()).await
    }

    pub async fn start_with_env(
        config: &str,
        files: &[(&str, &str)],
        env: HashMap<String, String>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let mut text = String::new();
        if !config.contains("subscriptions:") {
            text.push_str(&format!(
                "subscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n"
            ));
        }
        if !config.contains("watch:") {
            text.push_str("watch: false\n");
        }
        text.push_str(config);
        let path = dir.path().join("pollgate.yaml");
        std::fs::write(&path, &text).unwrap();
        let lookup = move |name: &str| env.get(name).cloned();
        let config =
            Config::load(&path, &lookup).unwrap_or_else(|e| panic!("config:\n{text}\n{e}"));
        // Built before binding, as `main` does.
        let app = App::build(config, Arc::new(lookup)).await.unwrap();
        let webhook = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (webhook.local_addr().unwrap(), admin.local_addr().unwrap());
        let gateway = app.gateway().clone();
        let (trigger, shutdown) = shutdown::channel();
        let task = tokio::spawn(app.serve(webhook, admin, shutdown));
        let gw = Self {
            addr,
            admin: admin_addr,
            dir,
            gateway,
            trigger,
            task: Some(task),
        };
        gw.wait_ready().await;
        gw
    }

    /// Polls /readyz until 200, with a deadline.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client().get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway not ready in 10s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, event: &str) -> String {
        format!("http://{}/webhooks/{event}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A till calling this gateway with the `shop` subscription.
    pub fn till(&self) -> Till {
        Till {
            base: format!("http://{}/webhooks", self.addr),
            secret: secret(),
            subscription: SUBSCRIPTION.into(),
            client: client(),
        }
    }

    /// Begins shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.trigger.fire();
    }

    /// Stops accepting and waits for the gateway to drain.
    pub async fn stop(mut self) {
        self.trigger.fire();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("gateway stops")
                .unwrap();
        }
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one exported series (`name{labels}`); a missing one fails the test
    /// (see [`metric_value`]), the message naming the test's line that asked.
    #[track_caller]
    pub fn metric(&self, series: &str) -> impl std::future::Future<Output = f64> + '_ {
        let series = series.to_owned();
        let caller = std::panic::Location::caller();
        async move { metric_value_at(&self.metrics().await, &series, caller) }
    }

    /// The value of a series that may legitimately not be exported yet (one created on
    /// first use), 0 when absent. Only for those: a renamed metric reads as 0 here.
    pub async fn metric_or_zero(&self, series: &str) -> f64 {
        metric_or_zero(&self.metrics().await, series)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.trigger.fire();
    }
}

/// The value of the series `series` (`name{labels}`, exactly as exported) in a Prometheus
/// exposition. A missing series fails the test, naming it and listing the series of that
/// metric that are there (or every metric name when there is none): a renamed metric or a
/// changed label must not read as 0.
#[track_caller]
pub fn metric_value(text: &str, series: &str) -> f64 {
    metric_value_at(text, series, std::panic::Location::caller())
}

fn metric_value_at(text: &str, series: &str, caller: &std::panic::Location<'_>) -> f64 {
    if let Some(value) = series_value(text, series) {
        return value;
    }
    let name = series.split(['{', ' ']).next().unwrap_or(series);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let same: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect();
    let there = if same.is_empty() {
        let mut names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        names.dedup();
        format!(
            "no `{name}` series at all; the metrics there are:\n  {}",
            names.join("\n  ")
        )
    } else {
        format!("the `{name}` series there are:\n  {}", same.join("\n  "))
    };
    panic!("{caller}: no metric series `{series}`; {there}")
}

/// Like [`metric_value`], but 0 when the series is absent: only for a series that may
/// legitimately not be exported (yet).
pub fn metric_or_zero(text: &str, series: &str) -> f64 {
    series_value(text, series).unwrap_or(0.0)
}

/// The value of the line `series VALUE` in a Prometheus exposition, if there is one.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

pub fn secret() -> Secret {
    Secret::decode(SECRET, Encoding::Base64).unwrap()
}

pub fn client() -> reqwest::Client {
    pollgate::upstream::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An answer as the till sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    /// True when signed with the test secret over the exact body bytes.
    pub fn is_signed(&self) -> bool {
        self.signature
            .as_ref()
            .is_some_and(|s| secret().verify(s.as_bytes(), &self.body).is_ok())
    }

    pub fn finished(&self) -> Option<bool> {
        self.json()
            .pointer("/polling/finished")
            .and_then(Value::as_bool)
    }

    pub fn message(&self) -> Option<String> {
        self.json()
            .pointer("/polling/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn error_code(&self) -> Option<String> {
        self.json()
            .pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// A till: signs bodies with its secret and posts them.
#[derive(Clone)]
pub struct Till {
    pub base: String,
    pub secret: Secret,
    pub subscription: String,
    pub client: reqwest::Client,
}

impl Till {
    pub async fn call(&self, event: &str, body: impl Into<Bytes>) -> Answer {
        let body = body.into();
        let sig = self.secret.sign(&body);
        self.send(
            event,
            body,
            &[
                ("content-type", "application/json"),
                (SUBSCRIPTION_HEADER, &self.subscription.clone()),
                ("x-mplus-signature", &sig),
            ],
        )
        .await
    }

    pub async fn call_json(&self, event: &str, body: &Value) -> Answer {
        self.call(event, serde_json::to_vec(body).unwrap()).await
    }

    /// A POST with exactly these headers (for bad-input tests).
    pub async fn send(&self, event: &str, body: Bytes, headers: &[(&str, &str)]) -> Answer {
        let mut req = self
            .client
            .post(format!("{}/{event}", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.unwrap()).await
    }
}

pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let signature = headers
        .get("x-mplus-signature")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.bytes().await.unwrap();
    Answer {
        status,
        signature,
        content_type,
        body,
        headers,
    }
}

/// An addSessionLine body for conversation `n`, with `counter` as eventCounter.
pub fn body(n: u32, counter: u32) -> Value {
    serde_json::json!({
        "event": {"eventBlocking": true, "eventPolling": true, "eventCounter": counter, "eventTimestamp": format!("2026-03-02T09:15:{:02}.{:03}+01:00", n % 60, n % 1000)},
        "sender": {"branchNumber": 3, "workplaceNumber": 2, "instanceId": "6f1c2b7e-0d3a-4c55-9a0e-2b8f4d1e7c90"},
        "session": {"sessionId": format!("00000000-0000-4000-8000-{n:012}"), "lines": []},
        "addSessionLine": {"line": {"lineId": format!("line-{n}"), "articleNumber": 1017, "priceIncl": 4.25, "quantity": 1, "text": "Cappuccino"}}
    })
}

/// Polls `check` until it returns Some, with a deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port with nothing listening (for connection-refused tests).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A `pollgate serve` child process on free loopback ports; killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub addr: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Process {
    /// Writes `config` (after listen lines, `watch: false` and the `shop` subscription) and
    /// `files` into a fresh folder, starts `pollgate serve` on it and waits for /readyz.
    pub async fn serve(config: &str, files: &[(&str, &str)]) -> Self {
        Self::serve_in(tempfile::tempdir().unwrap(), config, files, false).await
    }

    /// Like [`Process::serve`] in the folder `dir` (a second run over what the first one
    /// left, such as its outbox), on fresh ports; with `log`, stderr goes to
    /// `dir/serve.log` (appended), so a failing test can show it.
    pub async fn serve_in(
        dir: tempfile::TempDir,
        config: &str,
        files: &[(&str, &str)],
        log: bool,
    ) -> Self {
        let p = Self::spawn_in(dir, config, files, log).await;
        p.wait_ready().await;
        p
    }

    /// The child started, not waited for.
    async fn spawn_in(
        dir: tempfile::TempDir,
        config: &str,
        files: &[(&str, &str)],
        log: bool,
    ) -> Self {
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let (port, admin) = (closed_port().await.port(), closed_port().await.port());
        let text = format!(
            "server:\n  listen: 127.0.0.1:{port}\n  shutdown_grace: 10s\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
        );
        let path = dir.path().join("pollgate.yaml");
        std::fs::write(&path, text).unwrap();
        let stderr = if log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("serve.log"))
                .unwrap();
            std::process::Stdio::from(file)
        } else {
            std::process::Stdio::null()
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin}"),
            dir,
        }
    }

    /// Like [`Process::serve_in`], waiting only until the admin listener answers (ready or
    /// not): for a start while something it needs is missing.
    pub async fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        files: &[(&str, &str)],
        log: bool,
    ) -> Self {
        let p = Self::spawn_in(dir, config, files, log).await;
        let url = format!("http://{}/readyz", p.admin);
        eventually("pollgate serve to answer /readyz", || {
            let url = url.clone();
            async move { client().get(url).send().await.ok().map(|_| ()) }
        })
        .await;
        p
    }

    /// Polls /readyz until 200, with a deadline.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        eventually("pollgate serve to be ready", || {
            let url = url.clone();
            async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// A till calling this process.
    pub fn till(&self) -> Till {
        Till {
            base: format!("http://{}/webhooks", self.addr),
            secret: secret(),
            subscription: SUBSCRIPTION.into(),
            client: client(),
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; gives back its folder for another run.
    pub async fn exit(mut self) -> (Option<i32>, tempfile::TempDir) {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.exit_code().await, dir)
    }

    /// What the process logged (with `serve_in(.., log: true)`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub async fn exit_code(mut self) -> Option<i32> {
        let mut child = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true").spawn().unwrap(),
        );
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status.code();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "pollgate did not exit"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP/1.1 answer (head and Content-Length body) from `stream`.
pub async fn read_answer(stream: &mut tokio::net::TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "connection closed before an answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let length: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "connection closed inside the answer body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        signature: header("x-mplus-signature"),
        content_type: header("content-type"),
        body: Bytes::copy_from_slice(&buf[head_end..head_end + length]),
        headers,
    }
}

/// Polls `http://127.0.0.1:{admin_port}/readyz` until 200, with a deadline.
pub async fn wait_ready_at(admin_port: u16) {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    eventually("pollgate serve to be ready", || {
        let url = url.clone();
        async move {
            let ready = client().get(url).send().await.ok()?;
            (ready.status() == 200).then_some(())
        }
    })
    .await;
}

/// The Redis the tests use (`POLLGATE_TEST_REDIS`, else the local one).
pub fn redis_url() -> String {
    std::env::var("POLLGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether a Redis answers at `url`; in CI a missing Redis fails the test instead.
pub async fn redis_available(url: &str) -> bool {
    let ok = match ::redis::Client::open(url) {
        Ok(client) => tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .is_ok_and(|c| c.is_ok()),
        Err(_) => false,
    };
    if !ok {
        skip_outside_ci(&format!("no Redis at {url}"));
    }
    ok
}

pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pollgate-test-{}-{nanos}", std::process::id())
}

/// A completeSession body of receipt `n`, a conversation of its own (the durable and Redis
/// tests queue one delivery each).
pub fn complete_session(n: u32) -> Value {
    json!({
        "event": {"eventBlocking": true, "eventCounter": 1, "eventTimestamp": format!("2026-03-02T11:00:{:02}.{:03}+01:00", n % 60, n % 1000)},
        "sender": {"branchNumber": 7, "workplaceNumber": 1, "instanceId": "0a1b2c3d-0000-4000-8000-000000000001"},
        "session": {"sessionId": format!("00000000-0000-4000-9000-{n:012}")},
        "completeSession": {"receiptNumber": n}
    })
}

/// A rule that forwards to `backend` and finishes with the reply's manager (the replica and
/// cluster tests check that one forward serves the whole conversation).
pub const APPROVAL_RULE: &str = r#"
let reply = forward("backend");
if reply == () {
    keep_polling(`waiting, attempt ${poll.attempt}`)
} else {
    finish(`approved by ${reply.body.manager}`)
}
"#;
