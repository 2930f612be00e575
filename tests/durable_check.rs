//! `pollgate check` on the durable-delivery keys (GATEWAY.md 8): every mistake is one line
//! naming the file and the key, with exit code 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";

/// `pollgate check` on `config` (after a subscription) in a fresh folder: exit code, stderr.
fn check(config: &str) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = format!("subscriptions:\n  shop:\n    secret: {SECRET}\n{config}");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), stderr, dir)
}

const ERP: &str = "upstreams:\n  erp:\n    url: http://127.0.0.1:9/mplus\n";

#[test]
fn durable_without_forward_is_an_error_naming_the_key() {
    let (code, stderr, dir) = check(&format!(
        "{ERP}outbox:\n  path: outbox\nevents:\n  completeSession:\n    respond: {{}}\n    delivery: durable\n"
    ));
    let file = dir.path().join("pollgate.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}: events.completeSession.delivery: `durable` needs `forward:` (the upstream the deliveries go to)\n",
            file.display()
        )
    );
}

#[test]
fn durable_forward_to_an_unknown_upstream_is_an_error_naming_the_key() {
    let (code, stderr, dir) = check(
        "outbox:\n  path: outbox\nevents:\n  completeSession:\n    forward: erp\n    delivery: durable\n",
    );
    let file = dir.path().join("pollgate.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}: events.completeSession.forward: unknown upstream `erp` (not under `upstreams:`)\n",
            file.display()
        )
    );
}

#[test]
fn durable_with_the_memory_store_needs_an_outbox_path() {
    let (code, stderr, dir) = check(&format!(
        "{ERP}events:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    ));
    let file = dir.path().join("pollgate.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}: outbox.path: is required: events.completeSession.delivery is `durable` and state.store is memory (give a folder, like data/outbox)\n",
            file.display()
        )
    );
    // With Redis, the outbox is Redis: no path needed.
    let (code, stderr, _dir) = check(&format!(
        "{ERP}state:\n  store: redis\n  url: redis://127.0.0.1:6379\nevents:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    ));
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

#[test]
fn an_unwritable_outbox_path_is_an_error_naming_the_key() {
    let (code, stderr, dir) = check(&format!(
        "{ERP}outbox:\n  path: pollgate.yaml/outbox\nevents:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    ));
    let file = dir.path().join("pollgate.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{f}: outbox.path: cannot write to {f}/outbox: {f} is a file, not a folder\n",
            f = file.display()
        )
    );
    // A folder nobody can write in (as root too: /proc takes no new files).
    let (code, stderr, _dir) = check(&format!(
        "{ERP}outbox:\n  path: /proc/pollgate-outbox\nevents:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(": outbox.path: cannot write to /proc/pollgate-outbox: "),
        "{stderr}"
    );
    // A folder that does not exist yet is fine: serve creates it.
    let (code, stderr, dir) = check(&format!(
        "{ERP}outbox:\n  path: data/outbox\nevents:\n  completeSession:\n    forward: erp\n    delivery: durable\n"
    ));
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert!(!dir.path().join("data").exists(), "check creates nothing");
}

#[test]
fn bad_durable_values_and_unknown_keys_are_errors_naming_the_key() {
    let (code, stderr, dir) = check(
        "upstreams:\n  erp:\n    url: http://127.0.0.1:9/mplus\n    durable: {max_age: 0s, backoff: {min: 2s, max: 1s}, lease: 10}\n\
         outbox:\n  path: outbox\n  size: 1\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: later\n",
    );
    let f = dir.path().join("pollgate.yaml");
    let f = f.display();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{f}: upstreams.erp.durable.max_age: must be more than 0\n\
             {f}: upstreams.erp.durable.backoff.max: 1s is less than backoff.min (2s)\n\
             {f}:7:57: upstreams.erp.durable.lease: `10` is not a duration: give a unit, like 10s or 10ms\n\
             {f}:10:3: outbox: unknown field `size`, expected `path`\n\
             {f}:14:5: events.completeSession.delivery: unknown variant `later`, expected `call` or `durable`\n"
        )
    );
    let (code, stderr, dir) = check(
        "upstreams:\n  erp:\n    url: http://127.0.0.1:9/mplus\n    durable: {max_age: 0s, backoff: {min: 2s, max: 1s}}\n\
         outbox:\n  path: outbox\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n",
    );
    let f = dir.path().join("pollgate.yaml");
    let f = f.display();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{f}: upstreams.erp.durable.max_age: must be more than 0\n\
             {f}: upstreams.erp.durable.backoff.max: 1s is less than backoff.min (2s)\n"
        )
    );
}

#[test]
fn the_worked_example_config_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["check", "--config", "examples/durable/pollgate.yaml"])
        .current_dir(root)
        .env_remove("MPLUS_SECRET")
        .env_remove("BACKOFFICE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.as_ref()), (Some(0), ""));
}

#[test]
fn pollgate_test_answers_durable_events_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "subscriptions:\n  shop:\n    secret: {SECRET}\n{ERP}outbox:\n  path: outbox\n\
         events:\n  completeSession:\n    forward: erp\n    delivery: durable\n    rule: done.rhai\n"
    );
    std::fs::write(dir.path().join("pollgate.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("done.rhai"),
        "let r = forward(\"erp\"); #{ queued: r == () }",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/done.yaml"),
        "cases:\n  - name: answered at once, the forward queued\n    event: completeSession\n    body: {session: {sessionId: s1}}\n    calls:\n      - expect: {queued: true}\n        exact: true\n      - same_as: 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args(["test", "--config"])
        .arg(dir.path().join("pollgate.yaml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(
        !dir.path().join("outbox").exists(),
        "the test outbox is in memory"
    );
}
