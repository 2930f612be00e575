//! The real `pollgate serve` process: SIGHUP reloads, SIGTERM drains held calls and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A `pollgate serve` child process, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    admin: String,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn free_port() -> u16 {
    closed_port().await.port()
}

async fn serve(config: &str, files: &[(&str, &str)]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let (port, admin) = (free_port().await, free_port().await);
    let text = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shutdown_grace: 10s\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
    );
    let path = dir.path().join("pollgate.yaml");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Serve {
        child,
        addr: format!("127.0.0.1:{port}"),
        admin: format!("127.0.0.1:{admin}"),
        dir,
    };
    let url = format!("http://{}/readyz", s.admin);
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
    s
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn till(s: &Serve) -> Till {
    Till {
        base: format!("http://{}/webhooks", s.addr),
        secret: secret(),
        subscription: SUBSCRIPTION.into(),
        client: client(),
    }
}

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let s = serve(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n",
        &[("rule.rhai", "finish(\"old\")")],
    )
    .await;
    let till = till(&s);
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    std::fs::write(s.dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
    signal(&s.child, "HUP");
    let mut n = 10;
    eventually("SIGHUP to reload the rule", || {
        n += 1;
        let till = till.clone();
        async move {
            (till
                .call_json("addSessionLine", &body(n, 1))
                .await
                .message()
                .as_deref()
                == Some("new"))
            .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_answers_the_held_call_and_exits_zero() {
    let upstream = MockUpstream::start(|_| {
        MockReply::json(
            200,
            serde_json::json!({"polling": {"finished": true, "message": "approved"}}),
        )
        .after(Duration::from_millis(1500))
    })
    .await;
    let config = format!(
        "events:\n  startPayment:\n    forward: backend\n    hold: 5s\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n",
        upstream.url()
    );
    let mut s = serve(&config, &[]).await;
    let till = till(&s);
    let held = tokio::spawn(async move { till.call_json("startPayment", &body(1, 1)).await });
    eventually("the forward to reach the upstream", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    signal(&s.child, "TERM");
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(answer.message().as_deref(), Some("approved"));
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pollgate did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}
