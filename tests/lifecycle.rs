//! The real `pollgate serve` process: SIGHUP reloads, SIGTERM drains held calls and exits 0;
//! and shutdown's one grace, shared by held calls and background forwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn sighup_reloads_the_rules() {
    let p = Process::serve(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n",
        &[("rule.rhai", "finish(\"old\")")],
    )
    .await;
    let till = p.till();
    assert_eq!(
        till.call_json("addSessionLine", &body(1, 1))
            .await
            .message()
            .as_deref(),
        Some("old")
    );
    std::fs::write(p.dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
    p.signal("HUP");
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
    let p = Process::serve(&config, &[]).await;
    let till = p.till();
    let held = tokio::spawn(async move { till.call_json("startPayment", &body(1, 1)).await });
    eventually("the forward to reach the upstream", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    p.signal("TERM");
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(answer.message().as_deref(), Some("approved"));
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test]
async fn access_log_has_one_line_per_call_without_secrets_signatures_or_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (closed_port().await.port(), closed_port().await.port());
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  access_log: true\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\nevents:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n"
    );
    std::fs::write(dir.path().join("pollgate.yaml"), config).unwrap();
    std::fs::write(dir.path().join("rule.rhai"), "keep_polling(\"wait\")").unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(dir.path().join("pollgate.yaml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{admin}/readyz");
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
    let till = Till {
        base: format!("http://127.0.0.1:{port}/webhooks"),
        secret: secret(),
        subscription: SUBSCRIPTION.into(),
        client: client(),
    };
    let body = body(77, 1);
    let signature = secret().sign(&serde_json::to_vec(&body).unwrap());
    for _ in 0..2 {
        assert_eq!(till.call_json("addSessionLine", &body).await.status, 200);
    }
    let lines = eventually("two access lines", || {
        let path = log_path.clone();
        async move {
            let text = std::fs::read_to_string(path).ok()?;
            let calls: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["target"] == "pollgate::access")
                .collect();
            (calls.len() == 2).then_some((calls, text))
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (calls, text) = lines;
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call["level"], "INFO");
        assert_eq!(call["event"], "addSessionLine");
        assert_eq!(call["subscription"], SUBSCRIPTION);
        assert_eq!(call["attempt"], i as u64 + 1);
        assert_eq!(call["decision"], "keep_polling");
        assert_eq!(call["status"], 200);
        assert_eq!(call["key"].as_str().unwrap().len(), 32);
        assert!(call["duration_us"].is_u64());
    }
    assert!(!text.contains(SECRET) && !text.contains(&signature) && !text.contains("Cappuccino"));
}

/// `pollgate serve` on free ports with `config` (after listen lines, `watch: false` and the
/// `shop` subscription), text logs at info into a file; the child, its webhook address and
/// the log's path. The folder must outlive the child.
async fn serve_logging(
    dir: &std::path::Path,
    config: &str,
) -> (std::process::Child, String, std::path::PathBuf) {
    let (port, admin) = (closed_port().await.port(), closed_port().await.port());
    let text = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  access_log: true\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
    );
    std::fs::write(dir.join("pollgate.yaml"), text).unwrap();
    let log_path = dir.join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["serve", "--config"])
        .arg(dir.join("pollgate.yaml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_ready_at(admin).await;
    (child, format!("127.0.0.1:{port}"), log_path)
}

/// The log once it has `n` lines containing `needle`.
async fn log_with(path: &std::path::Path, needle: &str, n: usize) -> String {
    eventually(&format!("{n} log lines with {needle:?}"), || async move {
        let text = std::fs::read_to_string(path).ok()?;
        (text.lines().filter(|l| l.contains(needle)).count() >= n).then_some(text)
    })
    .await
}

#[tokio::test]
async fn an_error_requests_code_and_message_are_logged_escaped_and_cut_to_256_characters() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) =
        serve_logging(dir.path(), "events:\n  addSessionLine:\n    respond: {}\n").await;
    let prefix = "line one\nFORGED ERROR pollgate: admin token leaked ";
    let mut call = body(1, 1);
    call["error"] = serde_json::json!({
        "code": "BAD\r\nCODE",
        "message": format!("{prefix}{}", "x".repeat(1000)),
    });
    let till = Till {
        base: format!("http://{addr}/webhooks"),
        secret: secret(),
        subscription: SUBSCRIPTION.into(),
        client: client(),
    };
    assert_eq!(till.call_json("addSessionLine", &call).await.status, 200);
    let text = log_with(&log, "till reported an error", 1).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a newline in the message started a line:\n{text}"
    );
    let escaped = prefix.replace('\n', "\\n");
    let expected = format!("{escaped}{}…", "x".repeat(255 - escaped.len()));
    assert_eq!(expected.chars().count(), 256);
    let line = text.lines().find(|l| l.contains("till reported")).unwrap();
    assert!(
        line.ends_with(&format!(" error_message={expected}")),
        "{line}"
    );
    assert!(line.contains(" error_code=BAD\\r\\nCODE "), "{line}");
}

#[tokio::test]
async fn unsigned_requests_put_at_most_128_characters_of_any_value_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) =
        serve_logging(dir.path(), "events:\n  \"*\":\n    respond: {}\n").await;
    let long = "q".repeat(4096);
    for (event, subscription) in [(long.as_str(), SUBSCRIPTION), ("scanCode", long.as_str())] {
        let r = client()
            .post(format!("http://{addr}/webhooks/{event}"))
            .header(SUBSCRIPTION_HEADER, subscription)
            .header("x-mplus-signature", "c2ln")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = log_with(&log, "call", 2).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains(&"q".repeat(129)), "{text}");
}

/// A `pollgate serve --config pollgate.yaml` child started *inside* its config folder with
/// stdout and stderr redirected to `serve.log` there, as a user does with `> serve.log 2>&1`.
struct LoggingIntoItsFolder {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    admin: u16,
}

impl LoggingIntoItsFolder {
    async fn start(config: &str, files: &[(&str, &str)], rust_log: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let (port, admin) = (closed_port().await.port(), closed_port().await.port());
        let text = format!(
            "server:\n  listen: 127.0.0.1:{port}\n  access_log: true\nadmin:\n  listen: 127.0.0.1:{admin}\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
        );
        std::fs::write(dir.path().join("pollgate.yaml"), text).unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
            .args(["serve", "--config", "pollgate.yaml"])
            .current_dir(dir.path())
            .env("RUST_LOG", rust_log)
            .env_remove("NO_COLOR")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Self {
            child,
            dir,
            port,
            admin,
        };
        eventually("pollgate serve to be ready", || async {
            client()
                .get(format!("http://127.0.0.1:{}/readyz", p.admin))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
        p
    }

    fn till(&self) -> Till {
        Till {
            base: format!("http://127.0.0.1:{}/webhooks", self.port),
            secret: secret(),
            subscription: SUBSCRIPTION.into(),
            client: client(),
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, series)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap()
    }

    /// Replaces `name` the way editors and `git pull` do: written elsewhere, renamed over it.
    fn replace(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }
}

impl Drop for LoggingIntoItsFolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const UNCHANGED: &str = "config and rule files unchanged; not reloading";

#[tokio::test]
async fn serve_logging_into_its_config_folder_reloads_only_when_config_or_rules_change() {
    let p = LoggingIntoItsFolder::start(
        "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n",
        &[("rule.rhai", "finish(\"old\")")],
        "info,pollgate=debug",
    )
    .await;
    let till = p.till();
    // Calls write access lines into serve.log; notes.txt is another file in the folder.
    for n in 0..5 {
        assert_eq!(
            till.call_json("addSessionLine", &body(n, 1)).await.status,
            200
        );
    }
    std::fs::write(p.dir.path().join("notes.txt"), "a note").unwrap();
    // The rule's own bytes again: seen, compared, and no reload.
    p.replace("rule.rhai", "finish(\"old\")");
    eventually("the unchanged rule to be noticed", || async {
        p.log().contains(UNCHANGED).then_some(())
    })
    .await;
    assert_eq!(p.metric("pollgate_config_generation").await, 1.0);

    // A real change: one reload.
    p.replace("rule.rhai", "finish(\"new\")");
    eventually("the changed rule to be reloaded", || async {
        (p.metric("pollgate_config_generation").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(
        till.call_json("addSessionLine", &body(100, 1))
            .await
            .message()
            .as_deref(),
        Some("new")
    );
    // More log lines (the reload's own among them), then the same bytes once more: the
    // second "unchanged" line shows the watcher has looked at everything before it.
    for n in 10..15 {
        assert_eq!(
            till.call_json("addSessionLine", &body(n, 1)).await.status,
            200
        );
    }
    p.replace("rule.rhai", "finish(\"new\")");
    eventually("the second unchanged rule to be noticed", || async {
        (p.log().matches(UNCHANGED).count() >= 2).then_some(())
    })
    .await;
    // Proving that nothing more happens takes time: for four debounce periods (1 s), the
    // reload's own log lines and the calls' do not make the watcher look again (a watcher
    // that took every file in the folder for an input would, every 250 ms, for ever).
    let quiet_until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < quiet_until {
        let log = p.log();
        assert_eq!(log.matches(UNCHANGED).count(), 2, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = p.log();
    assert_eq!(log.matches(UNCHANGED).count(), 2, "{log}");
    assert_eq!(log.matches("config reloaded").count(), 1, "{log}");
    assert_eq!(p.metric("pollgate_config_generation").await, 2.0);
    assert_eq!(
        p.metric(r#"pollgate_reloads_total{result="ok"}"#).await,
        1.0
    );
    assert_eq!(
        p.metric(r#"pollgate_reloads_total{result="error"}"#).await,
        0.0
    );
    // Not a terminal: no colour codes in the file.
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// `pollgate serve` on free ports with `config`, JSON logs at info into a file; the child,
/// a till calling it and the log's path. The folder must outlive the child.
async fn serve_json_logging(
    dir: &std::path::Path,
    config: &str,
    files: &[(&str, &str)],
) -> (std::process::Child, Till, std::path::PathBuf) {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let (port, admin) = (closed_port().await.port(), closed_port().await.port());
    let text = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  access_log: true\nadmin:\n  listen: 127.0.0.1:{admin}\nwatch: false\nsubscriptions:\n  {SUBSCRIPTION}:\n    secret: {SECRET}\n{config}"
    );
    std::fs::write(dir.join("pollgate.yaml"), text).unwrap();
    let log_path = dir.join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(dir.join("pollgate.yaml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_ready_at(admin).await;
    let till = Till {
        base: format!("http://127.0.0.1:{port}/webhooks"),
        secret: secret(),
        subscription: SUBSCRIPTION.into(),
        client: client(),
    };
    (child, till, log_path)
}

/// The JSON log lines once there are `n` of `target`.
async fn json_lines(path: &std::path::Path, target: &str, n: usize) -> Vec<serde_json::Value> {
    eventually(&format!("{n} log lines of {target}"), || async move {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.iter().filter(|l| l["target"] == target).count() >= n).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn rule_logs_carry_the_event_and_key_and_rule_errors_their_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let logging =
        "log(`article ${event.addSessionLine.line.articleNumber}`);\nfinish(\"logged\")\n";
    // Line 2, column 9: `parse_int` of the session id fails, and Rhai's message quotes it.
    let failing =
        "let ok = true;\nlet n = parse_int(event.session.sessionId);\nfinish(\"never\")\n";
    let config = "events:\n  addSessionLine:\n    rule: logging.rhai\n    polling: {}\n  scanCode:\n    rule: failing.rhai\n";
    let (mut child, till, log) = serve_json_logging(
        dir.path(),
        config,
        &[("logging.rhai", logging), ("failing.rhai", failing)],
    )
    .await;
    let logged = till.call_json("addSessionLine", &body(5, 1)).await;
    assert!(logged.is_signed());
    assert_eq!(
        logged.json(),
        serde_json::json!({"polling": {"finished": true, "message": "logged"}})
    );
    let failed = till.call_json("scanCode", &body(6, 1)).await;
    assert_eq!((failed.status, failed.is_signed()), (200, true));
    assert_eq!(failed.json(), serde_json::json!({}));

    let lines = json_lines(&log, "pollgate::access", 2).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let key_of = |event: &str| {
        let access = lines
            .iter()
            .find(|l| l["target"] == "pollgate::access" && l["event"] == event)
            .unwrap_or_else(|| panic!("no access line for {event}:\n{text}"));
        access["key"].as_str().unwrap().to_owned()
    };
    let rule_log: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "pollgate::rule")
        .collect();
    assert_eq!(rule_log.len(), 1, "{text}");
    assert_eq!(rule_log[0]["level"], "INFO");
    assert_eq!(rule_log[0]["message"], "article 1017");
    assert_eq!(rule_log[0]["event"], "addSessionLine");
    assert_eq!(rule_log[0]["key"], key_of("addSessionLine"));

    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["event"], "scanCode");
    assert_eq!(errors[0]["key"], key_of("scanCode"));
    let location = format!("{}:2:9", dir.path().join("failing.rhai").display());
    assert_eq!(errors[0]["location"], location.as_str(), "{text}");
    assert_eq!(
        errors[0]["message"],
        "rule failed: arithmetic error (a number that does not parse, overflow or division by zero)"
    );
    let session = body(6, 1)["session"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !text.contains(&session),
        "the call's values stay out of the log at info: {text}"
    );
}

#[tokio::test]
async fn after_sigterm_new_connections_are_refused_while_the_held_call_still_gets_its_answer() {
    let (upstream, gate, config) = gated_payment().await;
    let p = Process::serve(&config, &[]).await;
    let held = hold_payment(p.till(), &gate).await;
    p.signal("TERM");
    // The reply is still held at the gate, so the call is draining for as long as this takes.
    // A connection made while the listener closes may be reset rather than refused (the
    // kernel resets what was still in its accept queue): only a refusal ends the wait.
    let addr = p.addr.clone();
    eventually("a new connection to be refused", || {
        let addr = addr.clone();
        async move {
            match tokio::net::TcpStream::connect(&addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        !held.is_finished(),
        "the held call was answered before its reply came"
    );
    assert_eq!(gate.active(), 1);

    gate.open();
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.is_signed());
    assert_eq!(
        answer.json(),
        serde_json::json!({"polling": {"finished": true, "message": "approved"}})
    );
    assert_eq!(upstream.count(), 1);
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test]
async fn shutdown_gives_held_calls_and_background_forwards_one_grace_together() {
    const GRACE: Duration = Duration::from_secs(2);
    // The gate never opens, so both the held call and its forward last the whole grace.
    let (_upstream, gate, config) = gated_payment().await;
    let gw = Gateway::start(
        &format!("server:\n  shutdown_grace: {}s\n{config}", GRACE.as_secs()),
        &[],
    )
    .await;
    let held = hold_payment(gw.till(), &gate).await;
    let stopping = std::time::Instant::now();
    gw.stop().await;
    let took = stopping.elapsed();
    assert!(
        took >= GRACE,
        "the held call got its grace: stopped after {took:?}"
    );
    // Waiting for the calls and then again for the forwards would take two graces.
    assert!(
        took < GRACE + GRACE / 2,
        "one grace for calls and forwards together, not one each: stopped after {took:?}"
    );
    assert_eq!(
        gate.active(),
        1,
        "the forward was still running at the deadline"
    );
    held.abort();
}

/// An upstream that holds every forward until its gate opens, and the config of a polling
/// `startPayment` forwarded to it and held up to 30 s.
async fn gated_payment() -> (MockUpstream, Gate, String) {
    let (upstream, gate) = MockUpstream::start_gated(|_| {
        MockReply::json(
            200,
            serde_json::json!({"polling": {"finished": true, "message": "approved"}}),
        )
    })
    .await;
    let config = format!(
        "events:\n  startPayment:\n    forward: backend\n    hold: 30s\n    polling: {{}}\nupstreams:\n  backend:\n    url: {}\n",
        upstream.url()
    );
    (upstream, gate, config)
}

/// Starts a `startPayment` call and waits until its forward is held at the gate.
async fn hold_payment(till: Till, gate: &Gate) -> tokio::task::JoinHandle<Answer> {
    let held = tokio::spawn(async move { till.call_json("startPayment", &body(1, 1)).await });
    eventually("the forward to be held at the upstream", || async {
        (gate.active() == 1).then_some(())
    })
    .await;
    held
}
