//! Hostile clients against the real server (GATEWAY.md 12): bodies that never end, heads
//! that never end, idle sockets, more connections than allowed, and more sockets than file
//! descriptors. Every attack uses real TCP sockets on 127.0.0.1, bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SCAN: &str = "events:\n  scanCode:\n    respond: {}\n";

/// A request head for `scanCode` with the `shop` subscription and some signature (no
/// secret needed: the attacks below never get as far as the signature check).
fn head(length: Option<usize>) -> String {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".into(),
    };
    format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\n{framing}\r\n\r\n",
        secret().sign(b"anything")
    )
}

/// A complete, correctly signed `scanCode` call.
fn signed_call() -> Vec<u8> {
    let body = br#"{"event": {"eventCounter": 1}}"#;
    let mut request = format!(
        "POST /webhooks/scanCode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Mplus-Subscription-Id: {SUBSCRIPTION}\r\nX-Mplus-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        secret().sign(body),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

async fn connect(gw: &Gateway, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// [`read_answer`] within 10 s.
async fn answer_within_10s(stream: &mut TcpStream) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), read_answer(stream))
        .await
        .expect("an answer within 10s")
}

/// True once the server closed `stream` (EOF or reset); false if it is still open after
/// `within`. Whatever the server still sends first is skipped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[track_caller]
fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.error_code().as_deref(), Some(code), "{:?}", a.body);
    assert!(
        a.is_signed(),
        "signed with the subscription's secret: {a:?}"
    );
    assert_eq!(a.headers["connection"], "close");
}

async fn wait_for_metric(gw: &Gateway, series: &str, value: f64) {
    eventually(&format!("{series} = {value}"), || async move {
        (gw.metric(series).await == value).then_some(())
    })
    .await;
}

// ---- the body budget ----

#[tokio::test]
async fn a_call_over_the_buffered_budget_gets_503_signed_without_its_body_being_read() {
    let gw = Gateway::start(
        &format!("server:\n  max_body_bytes: 1000\n  max_buffered_bytes: 2KiB\n  body_timeout: 30s\n{SCAN}"),
        &[],
    )
    .await;
    // Two calls stall one byte short of their declared 1000: 2000 of 2048 bytes reserved.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut request = head(Some(1000)).into_bytes();
        request.extend_from_slice(&[b' '; 999]);
        stalled.push(connect(&gw, &request).await);
    }
    wait_for_metric(&gw, "pollgate_buffered_bytes", 2000.0).await;

    // 100 more bytes do not fit: refused from the head alone (its body is never sent, and
    // body_timeout is 30 s, so only an answer that does not read it arrives in time).
    let mut third = connect(&gw, head(Some(100)).as_bytes()).await;
    let a = answer_within_10s(&mut third).await;
    assert_error(&a, 503, "OVERLOADED");
    assert!(closed_within(&mut third, Duration::from_secs(10)).await);
    let overloaded = r#"pollgate_requests_total{event="scanCode",outcome="overloaded"}"#;
    assert_eq!(gw.metric(overloaded).await, 1.0);

    // A stalled call gone gives its bytes back, and tills get through again.
    drop(stalled.pop());
    wait_for_metric(&gw, "pollgate_buffered_bytes", 1000.0).await;
    let mut till = connect(&gw, &signed_call()).await;
    let a = answer_within_10s(&mut till).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.is_signed());
}

#[tokio::test]
async fn a_chunked_body_reserves_as_it_arrives_and_gets_503_at_the_budget() {
    let gw = Gateway::start(
        &format!("server:\n  max_body_bytes: 1000\n  max_buffered_bytes: 1000\n  body_timeout: 30s\n{SCAN}"),
        &[],
    )
    .await;
    let mut request = head(Some(1000)).into_bytes();
    request.extend_from_slice(b"{");
    let _stalled = connect(&gw, &request).await;
    wait_for_metric(&gw, "pollgate_buffered_bytes", 1000.0).await;
    // The first chunk does not fit; the body's end is never sent.
    let mut request = head(None).into_bytes();
    request.extend_from_slice(b"a\r\n{\"a\": 12}\r\n");
    let mut chunked = connect(&gw, &request).await;
    assert_error(&answer_within_10s(&mut chunked).await, 503, "OVERLOADED");
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_signed_after_the_body_timeout() {
    let gw = Gateway::start(&format!("server:\n  body_timeout: 300ms\n{SCAN}"), &[]).await;
    let started = Instant::now();
    let mut request = head(Some(100)).into_bytes();
    request.extend_from_slice(&[b' '; 50]);
    let mut stalled = connect(&gw, &request).await;
    let a = answer_within_10s(&mut stalled).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_error(&a, 408, "REQUEST_TIMEOUT");
    assert!(closed_within(&mut stalled, Duration::from_secs(10)).await);
    let timed_out = r#"pollgate_requests_total{event="scanCode",outcome="body_timeout"}"#;
    assert_eq!(gw.metric(timed_out).await, 1.0);
    assert_eq!(gw.metric("pollgate_buffered_bytes").await, 0.0);
}

#[tokio::test]
async fn the_deadline_answer_is_signed_and_counted_under_the_calls_event() {
    // The body outlasts request_timeout, so the deadline layer answers, not the handler.
    let gw = Gateway::start(
        &format!("server:\n  request_timeout: 1s\n  body_timeout: 30s\n{SCAN}"),
        &[],
    )
    .await;
    let mut stalled = connect(&gw, head(Some(100)).as_bytes()).await;
    let a = answer_within_10s(&mut stalled).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.json(),
        json!({"error": {"code": "TIMEOUT", "message": "the gateway could not answer in time"}})
    );
    assert!(a.is_signed(), "signed: {a:?}");
    let deadline =
        |event: &str| format!(r#"pollgate_requests_total{{event="{event}",outcome="deadline"}}"#);
    assert_eq!(gw.metric(&deadline("scanCode")).await, 1.0);
    // `none` counts a deadline only once a call outside any event has one: until then the
    // series is legitimately absent, and absent or 0 both mean "not counted there".
    assert_eq!(gw.metric_or_zero(&deadline("none")).await, 0.0);
}

// ---- connection bounds ----

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_after_the_header_timeout() {
    let gw = Gateway::start(&format!("server:\n  header_timeout: 300ms\n{SCAN}"), &[]).await;
    let started = Instant::now();
    let mut silent = connect(&gw, b"").await;
    let mut slow = connect(&gw, b"POST /webhooks/scanCode HTTP/1.1\r\nHost: 1").await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "silent socket closed"
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "slow head closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431_and_the_connection_closes() {
    let gw = Gateway::start(SCAN, &[]).await;
    // The head never ends: only a limit on heads being read answers it.
    let padding = format!("X-Padding: {}\r\n", "p".repeat(20 * 1024));
    let mut big = connect(
        &gw,
        format!("{}{padding}", head(Some(2)).trim_end()).as_bytes(),
    )
    .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), big.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "closed within 10s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

/// Real time with short bounds (a paused clock does not mix with real sockets: it jumps
/// ahead while the kernel still holds bytes for the server). Head 1 s, idle 2 s.
#[tokio::test]
async fn a_keep_alive_connection_waits_up_to_the_idle_timeout_and_its_next_head_up_to_the_header_timeout(
) {
    let gw = Gateway::start(
        &format!(
            "server:
  header_timeout: 1s
  idle_timeout: 2s
{SCAN}"
        ),
        &[],
    )
    .await;
    let ms = Duration::from_millis;
    let mut conn = connect(&gw, &signed_call()).await;
    assert_eq!(answer_within_10s(&mut conn).await.status, 200);

    // Idle longer than the header timeout: the connection stays (hyper's own header
    // timeout restarts when a connection goes idle, so it would have closed it).
    assert!(
        !closed_within(&mut conn, ms(1500)).await,
        "open after 1.5 s idle"
    );
    conn.write_all(&signed_call()).await.unwrap();
    assert_eq!(answer_within_10s(&mut conn).await.status, 200);

    // Idle 1.6 s, then a head that takes 0.7 s: done 2.3 s after the last answer, past
    // the idle timeout, yet in time: the header timeout counts from the head's first byte.
    assert!(
        !closed_within(&mut conn, ms(1600)).await,
        "open after 1.6 s idle"
    );
    let call = signed_call();
    conn.write_all(&call[..10]).await.unwrap();
    assert!(
        !closed_within(&mut conn, ms(700)).await,
        "open 0.7 s into a head"
    );
    conn.write_all(&call[10..]).await.unwrap();
    assert_eq!(answer_within_10s(&mut conn).await.status, 200);

    // A head that takes longer than the header timeout is cut off.
    conn.write_all(&call[..10]).await.unwrap();
    assert!(closed_within(&mut conn, ms(3000)).await, "slow head closed");

    // An idle connection is closed after the idle timeout, not before.
    let mut idle = connect(&gw, &signed_call()).await;
    assert_eq!(answer_within_10s(&mut idle).await.status, 200);
    assert!(!closed_within(&mut idle, ms(1700)).await, "open at 1.7 s");
    assert!(closed_within(&mut idle, ms(3000)).await, "closed by 4.7 s");
}

#[tokio::test]
async fn at_max_connections_new_connections_wait_until_one_closes() {
    let gw = Gateway::start(&format!("server:\n  max_connections: 1\n{SCAN}"), &[]).await;
    let mut first = connect(&gw, &signed_call()).await;
    assert_eq!(answer_within_10s(&mut first).await.status, 200);
    // The first connection stays open (keep-alive): the second is not accepted.
    let mut second = connect(&gw, &signed_call()).await;
    let early = tokio::time::timeout(Duration::from_millis(500), read_answer(&mut second)).await;
    assert!(early.is_err(), "answered beyond max_connections: {early:?}");
    drop(first);
    assert_eq!(answer_within_10s(&mut second).await.status, 200);
}

// ---- out of file descriptors ----

/// `pollgate serve` limited to 64 file descriptors, with its stderr in a file.
struct Limited {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_with_64_descriptors(config: &str) -> Limited {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (closed_port().await.port(), closed_port().await.port());
    let text = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  header_timeout: 1s\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
    );
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, text).unwrap();
    let log = dir.path().join("stderr.log");
    let child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" serve --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_pollgate"))
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready_at(admin).await;
    Limited {
        child,
        port,
        log,
        _dir: dir,
    }
}

#[tokio::test]
async fn idle_sockets_beyond_the_descriptor_limit_do_not_lock_tills_out_or_flood_the_log() {
    let server = serve_with_64_descriptors(SCAN).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    // 150 sockets that never send a byte: far more than 64 descriptors hold.
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // The server runs out of descriptors, then frees them as the header timeout closes
    // the idle sockets: a till's call gets through.
    let till = Till {
        base: format!("http://{addr}/webhooks"),
        secret: secret(),
        subscription: SUBSCRIPTION.into(),
        client: client(),
    };
    let a = tokio::time::timeout(
        Duration::from_secs(20),
        till.call("scanCode", Bytes::from_static(br#"{"event": {}}"#)),
    )
    .await
    .expect("a till's call answered within 20s");
    assert_eq!(a.status, 200);
    assert!(a.is_signed());
    let log = std::fs::read_to_string(&server.log).unwrap();
    let failures = log.matches("accept failed").count();
    assert!(failures >= 1, "the descriptors ran out:\n{log}");
    assert!(
        failures <= 5,
        "one warning per burst, not per attempt ({failures}):\n{log}"
    );
    assert!(log.contains("accepting connections again"), "{log}");
    drop(idle);
}
