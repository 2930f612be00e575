//! The `pollgate` binary as a user runs it (GATEWAY.md 1): `check`, `sign`, `test`,
//! `simulate` against a real `pollgate serve`, `--help` and usage errors with their exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The shipped demo secret (base64 of "demo-secret-for-pollgate-examples").
const SECRET: &str = "ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz";

/// How long any one command may take before the test fails (and the child is killed).
const DEADLINE: Duration = Duration::from_secs(30);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/fixtures` (copies of the team's shared protocol files).
fn fixture(path: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures").join(path)
}

fn shipped_config() -> PathBuf {
    manifest_dir().join("rules/pollgate.yaml")
}

/// `pollgate ARGS` in the repo root, without the variables that would change its defaults.
fn pollgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pollgate"));
    cmd.args(args)
        .current_dir(manifest_dir())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    for var in [
        "POLLGATE_CONFIG",
        "MPLUS_SECRET",
        "POLLGATE_LISTEN",
        "POLLGATE_ADMIN",
        "APPROVALS_URL",
        "POLLGATE_HEALTHCHECK_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A child process that is killed when the guard goes out of scope, pass or fail.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished command left.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` to its end with `stdin` as input, failing the test after [`DEADLINE`].
fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Run {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the pollgate binary starts");
    let mut guard = ChildGuard(child);
    {
        let mut input = guard.0.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
    } // closed: the child sees the end of its input
      // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = guard.0.stdout.take().unwrap();
    let mut err = guard.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "pollgate {:?} did not exit within {DEADLINE:?}",
            cmd.get_args().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(cmd: Command) -> Run {
    run_with_input(cmd, b"")
}

/// A loopback port that was free a moment ago (the listener is dropped).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp folder with `files` (name, content).
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn config_text(listen: &str, admin: &str, events: &str) -> String {
    format!(
        "server:\n  listen: {listen}\nadmin:\n  listen: {admin}\nwatch: false\nsubscriptions:\n  shop:\n    secret: {SECRET}\n{events}"
    )
}

// ---- check ----

#[test]
fn check_accepts_the_shipped_config() {
    let r = run(pollgate(&["check", "--config", "rules/pollgate.yaml"]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(r.stdout.starts_with("rules/pollgate.yaml: ok ("), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn check_uses_the_default_config_path_and_the_environment_variable() {
    let r = run(pollgate(&["check"]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(r.stdout.starts_with("rules/pollgate.yaml: ok"), "{r:?}");

    let dir = folder(&[(
        "pollgate.yaml",
        &config_text(
            "127.0.0.1:0",
            "127.0.0.1:0",
            "events:\n  scanCode:\n    respond: {}\n",
        ),
    )]);
    let path = dir.path().join("pollgate.yaml");
    let mut cmd = pollgate(&["check"]);
    cmd.env("POLLGATE_CONFIG", &path);
    let r = run(cmd);
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(
        r.stdout.starts_with(&format!(
            "{}: ok (1 event, 1 subscription, 0 upstreams)\n",
            path.display()
        )),
        "{r:?}"
    );
}

#[test]
fn check_reports_a_broken_rule_as_file_line_column_message() {
    let dir = folder(&[
        (
            "pollgate.yaml",
            &config_text(
                "127.0.0.1:0",
                "127.0.0.1:0",
                "events:\n  scanCode:\n    rule: broken.rhai\n",
            ),
        ),
        ("broken.rhai", "let a = 1;\nlet b = a +;\n"),
    ]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    let rule = dir.path().join("broken.rhai");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line a problem: {r:?}");
    let prefix = format!("{}:2:12: ", rule.display());
    assert!(lines[0].starts_with(&prefix), "{r:?}");
    assert!(lines[0].len() > prefix.len(), "a message follows: {r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
}

#[test]
fn check_reports_a_bad_config_as_file_key_message() {
    let dir = folder(&[(
        "pollgate.yaml",
        &config_text(
            "127.0.0.1:0",
            "nowhere",
            "events:\n  scanCode:\n    forward: backend\n",
        ),
    )]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    let file = config.display();
    assert_eq!(
        r.stderr,
        format!(
            "{file}: admin.listen: `nowhere` is not an address like 127.0.0.1:8080\n\
             {file}: events.scanCode.forward: unknown upstream `backend` (not under `upstreams:`)\n"
        ),
        "{r:?}"
    );
}

#[test]
fn check_and_serve_refuse_an_admin_listener_off_loopback_without_a_token() {
    let dir = folder(&[(
        "pollgate.yaml",
        &config_text(
            "127.0.0.1:0",
            "0.0.0.0:0",
            "events:\n  \"*\":\n    respond: {}\n",
        ),
    )]);
    let config = dir.path().join("pollgate.yaml");
    let expected = format!(
        "{}: admin.token: admin.listen (0.0.0.0:0) is not a loopback address and no admin.token is set; set a token, or listen on 127.0.0.1",
        config.display()
    );
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(r.stderr, format!("{expected}\n"), "{r:?}");
    let r = run(pollgate(&["serve", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(r.stderr.contains(&expected), "{r:?}");
}

#[test]
fn check_reports_a_yaml_mistake_with_line_and_column() {
    let dir = folder(&[(
        "pollgate.yaml",
        &config_text("127.0.0.1:0", "127.0.0.1:0", "evnts: {}\n"),
    )]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stderr
            .starts_with(&format!("{}:9:1: unknown field `evnts`", config.display())),
        "{r:?}"
    );
}

#[test]
fn check_reports_typos_wrong_values_missing_variables_and_rule_errors_in_one_run() {
    let dir = folder(&[
        (
            "pollgate.yaml",
            "server:\n  listn: 127.0.0.1:0\nsubscriptions:\n  shop:\n    secret: ${MPLUS_SECRET}\n    encodng: utf8\nevents:\n  scanCode:\n    rule: scan.rhai\n  startPayment:\n    rule: pay.rhai\nupstreams:\n  approvals:\n    url: http://127.0.0.1:9000\n    timeout: 10\n    retries: ${RETRIES:-2}\n    timout: 1s\n",
        ),
        ("scan.rhai", "let a = 1;\nlet b = a +;\n"),
        (
            "pay.rhai",
            "// forward(\"nope\") in a comment is no call\nlet reply = forward(\"codez\");\nfinish()\n",
        ),
    ]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    let (file, scan, pay) = (
        config.display(),
        dir.path().join("scan.rhai"),
        dir.path().join("pay.rhai"),
    );
    assert_eq!(
        r.stderr,
        format!(
            "{file}:2:3: server: unknown field `listn`, expected one of `listen`, `base_path`, `max_body_bytes`, `request_timeout`, `shutdown_grace`, `access_log`, `header_timeout`, `body_timeout`, `idle_timeout`, `max_connections`, `max_buffered_bytes`, `tls`\n\
             {file}: subscriptions.shop.secret: environment variable MPLUS_SECRET is not set (set it, or write ${{MPLUS_SECRET:-default}})\n\
             {file}:6:5: subscriptions.shop: unknown field `encodng`, expected one of `secret`, `previous_secrets`, `encoding`\n\
             {}:2:12: Unexpected ';'\n\
             {}:2:13: forward(\"codez\"): unknown upstream `codez` (not under `upstreams:`)\n\
             {file}:15:5: upstreams.approvals.timeout: `10` is not a duration: give a unit, like 10s or 10ms\n\
             {file}:17:5: upstreams.approvals: unknown field `timout`, expected one of `url`, `timeout`, `retries`, `secret`, `encoding`, `max_connections`, `max_reply_bytes`, `durable`\n",
            scan.display(),
            pay.display(),
        ),
        "{r:?}"
    );
}

#[test]
fn check_refuses_a_rule_forwarding_to_an_unknown_upstream_at_the_call() {
    let dir = folder(&[
        (
            "pollgate.yaml",
            &config_text(
                "127.0.0.1:0",
                "127.0.0.1:0",
                "events:\n  startPayment:\n    rule: pay.rhai\nupstreams:\n  approvals:\n    url: http://127.0.0.1:9000\n",
            ),
        ),
        (
            "pay.rhai",
            "let ok = forward(\"approvals\");\nlet s = \"forward(\\\"x\\\")\";\nif ok == () {\n    forward(\"codez\", #{a: 1})\n}\nfinish()\n",
        ),
    ]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "{}:4:5: forward(\"codez\"): unknown upstream `codez` (not under `upstreams:`)\n",
            dir.path().join("pay.rhai").display()
        ),
        "{r:?}"
    );
}

#[test]
fn check_types_values_after_substituting_variables() {
    let dir = folder(&[(
        "pollgate.yaml",
        &format!(
            "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nsubscriptions:\n  shop:\n    secret: {SECRET}\n    encoding: ${{ENC:-base64}}\nupstreams:\n  approvals:\n    url: http://127.0.0.1:9000\n    retries: ${{RETRIES:-2}}\n    timeout: ${{TIMEOUT:-3s}}\nevents:\n  startPayment:\n    forward: approvals\n"
        ),
    )]);
    let config = dir.path().join("pollgate.yaml");
    let mut cmd = pollgate(&["check", "--config", config.to_str().unwrap()]);
    cmd.env("TIMEOUT", "").env("RETRIES", "4");
    let r = run(cmd);
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "{}: ok (1 event, 1 subscription, 1 upstream)\nnote: subscription shop uses the public demo secret\n",
            config.display()
        ),
        "{r:?}"
    );
    let mut cmd = pollgate(&["check", "--config", config.to_str().unwrap()]);
    cmd.env("ENC", "bas64");
    let r = run(cmd);
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!("{}:8:5: subscriptions.shop.encoding: unknown variant `${{ENC:-base64}}`, expected `base64` or `utf8` (the value from the environment is not shown)\n", config.display()),
        "{r:?}"
    );
}

#[test]
fn check_names_state_ca_when_the_ca_file_is_missing_or_not_pem() {
    let dir = folder(&[("not-a-ca.pem", "hello\n")]);
    for (ca, why) in [
        (
            "missing.pem",
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                dir.path().join("missing.pem").display()
            ),
        ),
        (
            "not-a-ca.pem",
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                dir.path().join("not-a-ca.pem").display()
            ),
        ),
    ] {
        let text = config_text(
            "127.0.0.1:0",
            "127.0.0.1:0",
            &format!("state:\n  store: redis\n  url: rediss://pollgate:s3cret@127.0.0.1:1/0\n  ca: {ca}\n"),
        );
        let config = dir.path().join("pollgate.yaml");
        std::fs::write(&config, text).unwrap();
        let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
        assert_eq!(r.code(), Some(1), "{r:?}");
        assert_eq!(
            r.stderr,
            format!("{}: state.ca: {why}\n", config.display()),
            "{r:?}"
        );
    }
}

#[test]
fn check_reports_a_missing_config_file() {
    let r = run(pollgate(&[
        "check",
        "--config",
        "/nonexistent/pollgate.yaml",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "/nonexistent/pollgate.yaml: cannot read config file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn check_never_binds_a_port() {
    // Both ports are held by this test: anything that binds them would fail.
    let webhook = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = folder(&[(
        "pollgate.yaml",
        &config_text(
            &webhook.local_addr().unwrap().to_string(),
            &admin.local_addr().unwrap().to_string(),
            "events:\n  scanCode:\n    respond: {}\n",
        ),
    )]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    // And serve, which does bind, refuses the same config: the ports really are taken.
    let r = run(pollgate(&["serve", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(r.stderr.contains("cannot listen on"), "{r:?}");
}

#[test]
fn serve_compiles_every_rule_before_it_binds_a_port() {
    // Both ports are held by this test: a serve that bound before compiling would report
    // them taken instead of the broken rule.
    let webhook = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = folder(&[
        (
            "pollgate.yaml",
            &config_text(
                &webhook.local_addr().unwrap().to_string(),
                &admin.local_addr().unwrap().to_string(),
                "events:\n  scanCode:\n    rule: broken.rhai\n",
            ),
        ),
        ("broken.rhai", "let a = 1;\nlet b = a +;\n"),
    ]);
    let config = dir.path().join("pollgate.yaml");
    let r = run(pollgate(&["serve", "--config", config.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    let prefix = format!(
        "pollgate: {}:2:12: ",
        dir.path().join("broken.rhai").display()
    );
    assert!(r.stderr.lines().any(|l| l.starts_with(&prefix)), "{r:?}");
    assert!(!r.stderr.contains("cannot listen on"), "{r:?}");
}

// ---- sign ----

struct Vector {
    name: String,
    secret: String,
    encoding: String,
    body: Vec<u8>,
    body_file: Option<PathBuf>,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(fixture("mplus/vectors.json"))
        .unwrap_or_else(|e| panic!("fixture tests/fixtures/mplus/vectors.json: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap();
    json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let body_file = v["body_file"].as_str().map(|f| fixture("mplus").join(f));
            let body = match (&body_file, v["body"].as_str()) {
                (Some(file), _) => std::fs::read(file).unwrap(),
                (None, Some(body)) => body.as_bytes().to_vec(),
                (None, None) => panic!("vector without a body"),
            };
            Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                secret: v["secret"].as_str().unwrap().to_owned(),
                encoding: v["secret_encoding"].as_str().unwrap().to_owned(),
                body,
                body_file,
                signature: v["signature"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[test]
fn sign_prints_every_vectors_signature_from_stdin() {
    let all = vectors();
    assert!(all.iter().any(|v| v.encoding == "utf8"));
    assert!(all.iter().any(|v| v.encoding == "base64"));
    for v in all {
        let r = run_with_input(
            pollgate(&["sign", "--secret", &v.secret, "--encoding", &v.encoding]),
            &v.body,
        );
        assert_eq!(r.code(), Some(0), "{}: {r:?}", v.name);
        assert_eq!(r.stdout, format!("{}\n", v.signature), "{}", v.name);
    }
}

#[test]
fn sign_prints_every_vectors_signature_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in vectors().into_iter().enumerate() {
        let file = v.body_file.clone().unwrap_or_else(|| {
            let path = dir.path().join(format!("body-{i}"));
            std::fs::write(&path, &v.body).unwrap();
            path
        });
        let r = run(pollgate(&[
            "sign",
            "--secret",
            &v.secret,
            "--encoding",
            &v.encoding,
            file.to_str().unwrap(),
        ]));
        assert_eq!(r.code(), Some(0), "{}: {r:?}", v.name);
        assert_eq!(r.stdout, format!("{}\n", v.signature), "{}", v.name);
    }
}

#[test]
fn sign_defaults_to_base64_and_reads_the_secret_from_the_environment() {
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "public-receiver-test-vector")
        .unwrap();
    let r = run_with_input(pollgate(&["sign", "--secret", &v.secret]), &v.body);
    assert_eq!(r.stdout, format!("{}\n", v.signature), "{r:?}");

    let mut cmd = pollgate(&["sign"]);
    cmd.env("MPLUS_SECRET", &v.secret);
    let r = run_with_input(cmd, &v.body);
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert_eq!(r.stdout, format!("{}\n", v.signature), "{r:?}");
}

// ---- usage errors ----

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["sign"],
        &["sign", "--secret", SECRET, "--encoding", "rot13"],
        &["check", "--no-such-flag"],
        &["simulate"],
        &["simulate", "--event", "scanCode", "--interval", "soon"],
        &["simulate", "--event", "scanCode", "--max-polls", "many"],
        &["simulate", "--event", "scanCode", "--fresh"],
    ];
    for args in cases {
        let r = run(pollgate(args));
        assert_eq!(r.code(), Some(2), "pollgate {args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "pollgate {args:?} says why: {r:?}");
    }
}

#[test]
fn sign_with_a_secret_that_is_not_base64_is_a_usage_error() {
    let r = run(pollgate(&["sign", "--secret", "not*base64!"]));
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert_eq!(
        r.stderr,
        "--secret: the secret is not valid base64 (pass --encoding utf8 to use the text as it is)\n"
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn sign_of_a_missing_file_exits_2_naming_the_file() {
    let r = run(pollgate(&[
        "sign",
        "--secret",
        SECRET,
        "/nonexistent/body.json",
    ]));
    assert_eq!(r.code(), Some(2), "{r:?}");
    assert!(r.stderr.starts_with("/nonexistent/body.json: "), "{r:?}");
}

// ---- help ----

#[test]
fn help_of_the_top_level_lists_every_command() {
    for flag in ["--help", "-h"] {
        let r = run(pollgate(&[flag]));
        assert_eq!(r.code(), Some(0), "{r:?}");
        for command in ["serve", "check", "sign", "simulate", "test"] {
            assert!(
                r.stdout.contains(command),
                "{flag} mentions {command}: {r:?}"
            );
        }
    }
    let r = run(pollgate(&["--version"]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(r.stdout.starts_with("pollgate "), "{r:?}");
}

#[test]
fn help_of_each_command_mentions_its_options() {
    let commands: &[(&str, &[&str])] = &[
        ("serve", &["--config", "--log-format"]),
        ("check", &["--config"]),
        ("sign", &["--secret", "--encoding", "[FILE]"]),
        (
            "simulate",
            &[
                "--url",
                "--event",
                "--secret",
                "--encoding",
                "--subscription",
                "--body",
                "--interval",
                "--max-polls",
            ],
        ),
        ("test", &["--config", "[PATHS]..."]),
        ("healthcheck", &["--url"]),
        (
            "demo-backend",
            &["--listen", "--delay", "--approve-up-to", "--secret"],
        ),
    ];
    for (command, options) in commands {
        let r = run(pollgate(&[command, "--help"]));
        assert_eq!(r.code(), Some(0), "{command} --help: {r:?}");
        assert!(
            r.stdout.contains(&format!("Usage: pollgate {command}")),
            "{command}: {r:?}"
        );
        for option in *options {
            assert!(
                r.stdout.contains(option),
                "{command} --help mentions {option}: {r:?}"
            );
        }
        let r = run(pollgate(&["help", command]));
        assert_eq!(r.code(), Some(0), "help {command}: {r:?}");
    }
}

// ---- test ----

#[test]
fn test_passes_on_the_shipped_rule_tests() {
    let r = run(pollgate(&["test"]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(!r.stdout.contains("FAIL"), "{r:?}");
    let summary = r.stdout.lines().last().unwrap();
    assert!(summary.ends_with(" passed, 0 failed"), "{r:?}");
    assert!(!summary.starts_with("0 passed"), "{r:?}");
}

#[test]
fn test_fails_with_a_fail_line_for_a_failing_case() {
    let shipped = shipped_config();
    let file = format!(
        "config: {}\ncases:\n  - name: an ordinary code passes\n    event: scanCode\n    body: {{scanCode: {{scannedCode: \"8712345678906\"}}}}\n    calls:\n      - expect: {{scanCode: {{recognized: false}}}}\n  - name: this case expects the wrong answer\n    event: scanCode\n    body: {{scanCode: {{scannedCode: \"8712345678906\"}}}}\n    calls:\n      - expect: {{scanCode: {{recognized: true}}}}\n",
        shipped.display()
    );
    let dir = folder(&[("cases.yaml", &file)]);
    let path = dir.path().join("cases.yaml");
    let r = run(pollgate(&["test", path.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stdout.contains("  ok   an ordinary code passes (1 call)"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("  FAIL this case expects the wrong answer\n       call 1: expected scanCode.recognized = true, got false"),
        "{r:?}"
    );
    assert!(r.stdout.ends_with("1 passed, 1 failed\n"), "{r:?}");
}

#[test]
fn test_refuses_a_case_naming_an_unknown_upstream() {
    let file = format!(
        "config: {}\ncases:\n  - name: approved by a manager\n    event: scanCode\n    body: {{scanCode: {{scannedCode: \"1\"}}}}\n    upstreams:\n      aprovals: {{status: 200, body: {{approved: true}}}}\n    calls:\n      - expect: {{}}\n",
        shipped_config().display()
    );
    let dir = folder(&[("cases.yaml", &file)]);
    let path = dir.path().join("cases.yaml");
    let r = run(pollgate(&["test", path.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "{}: case `approved by a manager`: upstreams: unknown upstream `aprovals` (the config {} has: approvals)\n",
            path.display(),
            shipped_config().display()
        ),
        "{r:?}"
    );
}

#[test]
fn test_reports_an_unreadable_test_file() {
    let dir = folder(&[("cases.yaml", "cases:\n  - name: x\n    evnt: scanCode\n")]);
    let path = dir.path().join("cases.yaml");
    let r = run(pollgate(&["test", path.to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stderr.starts_with(&format!("{}:3:5: ", path.display())),
        "{r:?}"
    );
    assert!(r.stderr.contains("evnt"), "{r:?}");
}

#[test]
fn test_prints_a_broken_files_error_once_runs_the_other_files_and_sums_up() {
    let shipped = shipped_config();
    let good = format!(
        "config: {}\ncases:\n  - name: an ordinary code passes\n    event: scanCode\n    body: {{scanCode: {{scannedCode: \"8712345678906\"}}}}\n    calls:\n      - expect: {{scanCode: {{recognized: false}}}}\n",
        shipped.display()
    );
    let dir = folder(&[
        ("a-broken.yaml", "cases:\n  - name: [unclosed\n"),
        ("b-good.yaml", &good),
    ]);
    let r = run(pollgate(&["test", dir.path().to_str().unwrap()]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    let broken = dir.path().join("a-broken.yaml");
    assert_eq!(r.stderr.lines().count(), 1, "the error once: {r:?}");
    assert!(
        r.stderr.starts_with(&format!("{}:2:", broken.display())),
        "{r:?}"
    );
    assert!(!r.stdout.contains("ERROR"), "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "{}\n{}\n  ok   an ordinary code passes (1 call)\n1 passed, 1 failed (1 test file could not be run)\n",
            broken.display(),
            dir.path().join("b-good.yaml").display()
        ),
        "{r:?}"
    );
}

/// A rules folder of its own: `pollgate.yaml`, a rule, and `tests/cases.yaml` naming no config.
fn rules_folder() -> tempfile::TempDir {
    let config = config_text(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "events:\n  scanCode:\n    rule: scan.rhai\n",
    );
    folder(&[
        ("rules/pollgate.yaml", &config),
        ("rules/scan.rhai", "#{ scanCode: #{ recognized: true } }"),
        (
            "rules/tests/cases.yaml",
            "cases:\n  - name: every code is recognized\n    event: scanCode\n    body: {scanCode: {scannedCode: \"1\"}}\n    calls:\n      - expect: {scanCode: {recognized: true}}\n",
        ),
    ])
}

#[test]
fn test_inside_the_rules_folder_finds_the_config_beside_or_above_the_test_files() {
    let dir = rules_folder();
    let rules = dir.path().join("rules");
    for (cwd, args) in [
        (dir.path().to_path_buf(), vec!["test"]),
        (
            dir.path().to_path_buf(),
            vec!["test", "rules/tests/cases.yaml"],
        ),
        (rules.clone(), vec!["test"]),
        (rules.clone(), vec!["test", "tests/cases.yaml"]),
        (rules.clone(), vec!["test", "tests"]),
        (rules.join("tests"), vec!["test", "cases.yaml"]),
        (rules.join("tests"), vec!["test", "."]),
    ] {
        let mut cmd = pollgate(&args);
        cmd.current_dir(&cwd);
        let r = run(cmd);
        assert_eq!(r.code(), Some(0), "in {}: {args:?}: {r:?}", cwd.display());
        assert!(
            r.stdout
                .ends_with("  ok   every code is recognized (1 call)\n1 passed, 0 failed\n"),
            "in {}: {args:?}: {r:?}",
            cwd.display()
        );
    }
}

#[test]
fn test_with_a_config_option_uses_it_over_the_lookup() {
    let dir = rules_folder();
    let other = folder(&[(
        "pollgate.yaml",
        &config_text(
            "127.0.0.1:0",
            "127.0.0.1:0",
            "events:\n  scanCode:\n    respond: {scanCode: {recognized: false}}\n",
        ),
    )]);
    let mut cmd = pollgate(&[
        "test",
        "--config",
        other.path().join("pollgate.yaml").to_str().unwrap(),
        "tests/cases.yaml",
    ]);
    cmd.current_dir(dir.path().join("rules"));
    let r = run(cmd);
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(r.stdout.ends_with("0 passed, 1 failed\n"), "{r:?}");
}

// ---- simulate against a real `pollgate serve` ----

/// A `pollgate serve` child on free loopback ports, killed on drop.
struct Served {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    webhook: u16,
}

impl Served {
    fn start(events: &str, files: &[(&str, &str)]) -> Self {
        let (webhook, admin) = (free_port(), free_port());
        let config = config_text(
            &format!("127.0.0.1:{webhook}"),
            &format!("127.0.0.1:{admin}"),
            events,
        );
        let mut all = vec![("pollgate.yaml", config.as_str())];
        all.extend_from_slice(files);
        let dir = folder(&all);
        let child = pollgate(&[
            "serve",
            "--config",
            dir.path().join("pollgate.yaml").to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pollgate serve starts");
        let mut child = ChildGuard(child);
        wait_ready(&mut child, admin);
        Self {
            _child: child,
            _dir: dir,
            webhook,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks", self.webhook)
    }
}

/// Polls the admin `/readyz` until it answers 200, with a deadline.
fn wait_ready(child: &mut ChildGuard, admin: u16) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("pollgate serve exited early: {status}");
        }
        if readyz(admin).is_some_and(|status| status == 200) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "pollgate serve not ready in {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status of `GET /readyz`, if anything answers.
fn readyz(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

const SIMULATED: &str = "events:\n  addSessionLine:\n    rule: id-check.rhai\n    polling: {}\n  pollExternalPayment:\n    rule: forever.rhai\n    polling: {}\n";

const ID_CHECK: &str = r#"
if poll.attempt < 3 {
    keep_polling(`Ask for ID (${poll.attempt})`, "Please show your ID")
} else {
    finish("Age checked", "Thank you")
}
"#;

fn simulated() -> Served {
    Served::start(
        SIMULATED,
        &[
            ("id-check.rhai", ID_CHECK),
            ("forever.rhai", r#"keep_polling("Still waiting")"#),
        ],
    )
}

#[test]
fn simulate_follows_a_conversation_to_its_end_and_prints_the_messages() {
    let served = simulated();
    let body = fixture("mplus/examples/addSessionLine.json");
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "addSessionLine",
        "--secret",
        SECRET,
        "--subscription",
        "shop",
        "--body",
        body.to_str().unwrap(),
        "--interval",
        "10ms",
    ]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    for line in [
        "cashier screen:   Ask for ID (1)",
        "cashier screen:   Ask for ID (2)",
        "customer display: Please show your ID",
        "cashier screen:   Age checked",
        "customer display: Thank you",
        "finished after 3 calls",
    ] {
        assert!(r.stdout.contains(line), "prints {line:?}: {r:?}");
    }
    assert_eq!(r.stderr, "", "{r:?}");

    // The same body again is the same (finished) conversation: the final answer, once.
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "addSessionLine",
        "--secret",
        SECRET,
        "--subscription",
        "shop",
        "--body",
        body.to_str().unwrap(),
    ]));
    assert_eq!(r.code(), Some(0), "{r:?}");
    assert!(r.stdout.contains("finished after 1 call\n"), "{r:?}");
    assert!(r.stdout.contains("Age checked"), "{r:?}");
}

#[test]
fn simulate_fresh_starts_a_new_conversation_each_run_and_without_it_the_second_run_replays() {
    let served = simulated();
    let body = fixture("mplus/examples/addSessionLine.json");
    let (url, body) = (served.url(), body.to_str().unwrap().to_owned());
    let simulate = |fresh: bool| {
        let mut args = vec![
            "simulate",
            "--event",
            "addSessionLine",
            "--url",
            &url,
            "--subscription",
            "shop",
            "--body",
            &body,
            "--interval",
            "10ms",
        ];
        if fresh {
            args.push("--fresh");
        }
        run(pollgate(&args))
    };
    // As the README walks through it: --fresh twice, then without it twice.
    for (fresh, calls) in [(true, 3), (true, 3), (false, 3), (false, 1)] {
        let r = simulate(fresh);
        assert_eq!(r.code(), Some(0), "{r:?}");
        let last = if calls == 1 { "call" } else { "calls" };
        assert!(
            r.stdout
                .ends_with(&format!("finished after {calls} {last}\n")),
            "--fresh {fresh}: {r:?}"
        );
    }
}

#[test]
fn simulate_with_a_wrong_secret_prints_the_gateways_invalid_signature_error() {
    let served = simulated();
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "addSessionLine",
        "--secret",
        "b3RoZXIta2V5",
        "--subscription",
        "shop",
        "--interval",
        "10ms",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    // The gateway refused the call: that is what went wrong, not the answer's signature
    // (signed with the real secret, which this till does not have).
    assert!(
        r.stdout
            .contains("<- 400 {\"error\":{\"code\":\"INVALID_SIGNATURE\""),
        "{r:?}"
    );
    assert_eq!(
        r.stderr,
        "pollgate simulate: error answer 400 INVALID_SIGNATURE: X-Mplus-Signature does not match the body; check --secret and --encoding: the gateway verifies with the subscription's secret in its config\n",
        "{r:?}"
    );
}

#[test]
fn simulate_with_an_unknown_subscription_prints_the_gateways_error() {
    let served = simulated();
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "addSessionLine",
        "--secret",
        SECRET,
        "--subscription",
        "nobody",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "pollgate simulate: error answer 400 INVALID_SUBSCRIPTION_ID: X-Mplus-Subscription-Id is not a known subscription; check --subscription: `nobody` is not a subscription in the gateway's config\n",
        "{r:?}"
    );
}

#[test]
fn simulate_prints_a_rules_rejection_and_checks_its_signature() {
    let served = Served::start(
        "events:\n  scanCode:\n    rule: reject.rhai\n",
        &[(
            "reject.rhai",
            r#"reject("INVALID_ARTICLE", "no such article")"#,
        )],
    );
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "scanCode",
        "--secret",
        SECRET,
        "--subscription",
        "shop",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr, "pollgate simulate: error answer 400 INVALID_ARTICLE: no such article\n",
        "{r:?}"
    );
}

#[test]
fn simulate_exits_1_on_the_gateways_signed_invalid_data_answer() {
    let served = simulated();
    let dir = folder(&[("array.json", "[1, 2, 3]")]);
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "addSessionLine",
        "--secret",
        SECRET,
        "--subscription",
        "shop",
        "--body",
        dir.path().join("array.json").to_str().unwrap(),
        "--interval",
        "10ms",
    ]));
    // The answer is signed with the right secret, so its signature is fine: the error
    // answer itself is the failure.
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert!(
        r.stdout.contains(
            "<- 400 {\"error\":{\"code\":\"INVALID_DATA\",\"message\":\"the body is not a JSON object\"}}"
        ),
        "{r:?}"
    );
    assert_eq!(
        r.stderr,
        "pollgate simulate: error answer 400 INVALID_DATA: the body is not a JSON object\n",
        "{r:?}"
    );
}

#[test]
fn simulate_with_a_secret_that_is_not_base64_names_the_encoding_option() {
    let r = run(pollgate(&[
        "simulate",
        "--event",
        "scanCode",
        "--secret",
        "not*base64!",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "pollgate simulate: --secret: the secret is not valid base64 (pass --encoding utf8 to use the text as it is)\n",
        "{r:?}"
    );
}

#[test]
fn simulate_gives_up_after_max_polls() {
    let served = simulated();
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &served.url(),
        "--event",
        "pollExternalPayment",
        "--secret",
        SECRET,
        "--subscription",
        "shop",
        "--interval",
        "10ms",
        "--max-polls",
        "3",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stdout.matches("cashier screen:   Still waiting").count(),
        3,
        "{r:?}"
    );
    assert!(r.stdout.contains("(call 3)"), "{r:?}");
    assert!(!r.stdout.contains("(call 4)"), "{r:?}");
    assert_eq!(
        r.stderr, "pollgate simulate: not finished after --max-polls 3\n",
        "{r:?}"
    );
}

#[test]
fn simulate_reports_an_unreachable_gateway() {
    let port = free_port();
    let r = run(pollgate(&[
        "simulate",
        "--url",
        &format!("http://127.0.0.1:{port}/webhooks"),
        "--event",
        "scanCode",
    ]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "pollgate simulate: cannot reach http://127.0.0.1:{port}/webhooks/scanCode: client error (Connect): tcp connect error: Connection refused (os error 111)\n"
        ),
        "{r:?}"
    );
}

#[test]
fn healthcheck_of_a_gateway_that_is_down_says_why() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let r = run(pollgate(&["healthcheck", "--url", &url]));
    assert_eq!(r.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!("healthcheck: cannot reach {url}: client error (Connect): tcp connect error: Connection refused (os error 111)\n"),
        "{r:?}"
    );
}
