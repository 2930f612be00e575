//! `pollgate test`: rule test cases (GATEWAY.md 4.5) run through the real pipeline, with
//! a memory store, pretend upstream replies and tokio's paused clock, so `after: 30s` and
//! a reply `delay` take no real time and no network is used.
//!
//! A test file:
//!
//! ```yaml
//! config: ../pollgate.yaml          # optional; default: the --config file
//! cases:
//!   - name: loyalty card is recognized
//!     event: scanCode
//!     subscription: example_subscription  # optional; default: the first one
//!     body_file: bodies/scanCode.json     # or `body:` inline
//!     upstreams:                          # pretend replies, by upstream name
//!       loyalty: {status: 200, body: {points: 10}, delay: 2s}
//!     forwards: {loyalty: 1}              # optional: forwards sent, by upstream
//!     calls:
//!       - expect: {scanCode: {recognized: true}}
//!       - after: 3s                       # time that passes before this call
//!         status: 200
//!         expect: {polling: {finished: true}}
//! ```
//!
//! `expect` matches when every key it names has the given value in the answer (maps are
//! compared key by key, arrays element by element, numbers by value); `null` expects the
//! key to be absent (or null).
//!
//! The config a file's cases run against: the file's `config:`, else `--config` (or
//! `$POLLGATE_CONFIG`), else `rules/pollgate.yaml` if it exists, else a `pollgate.yaml`
//! beside the test file, else one in the test file's parent folder, so `pollgate test
//! tests/x.yaml` works inside the rules folder too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{parse_duration, Config, Problem, DEFAULT_CONFIG_PATH};
use crate::conversation::{Clock, MemoryStore, Reply, Store};
use crate::pipeline::{self, Gateway};
use crate::runtime::Runtime;
use crate::signature::SIGNATURE_HEADER;
use crate::telemetry::Metrics;
use crate::upstream::{Outgoing, SendFuture, UpstreamClient};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    config: Option<PathBuf>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    event: String,
    subscription: Option<String>,
    body: Option<Value>,
    body_file: Option<PathBuf>,
    #[serde(default)]
    upstreams: BTreeMap<String, Pretend>,
    forwards: Option<BTreeMap<String, u32>>,
    calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    after: Option<String>,
    body: Option<Value>,
    body_file: Option<PathBuf>,
    #[serde(default = "ok_status")]
    status: u16,
    expect: Option<Value>,
}

fn ok_status() -> u16 {
    200
}

/// A pretend upstream reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pretend {
    #[serde(default = "ok_status")]
    status: u16,
    #[serde(default)]
    body: Value,
    delay: Option<String>,
    /// No HTTP answer at all (status 0), e.g. "connection refused".
    error: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    /// Failed cases, and test files that could not be run (each counts once).
    pub failed: usize,
    /// Of `failed`: test files that could not be read.
    pub broken_files: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        match self.broken_files {
            0 => Ok(()),
            1 => write!(f, " (1 test file could not be run)"),
            n => write!(f, " ({n} test files could not be run)"),
        }
    }
}

/// Runs the test files at `paths` (files or folders; none: the `tests` folder beside the
/// config) against `config` (`None`: not given, looked up; see the module's docs). Prints
/// a line per case to `out` and a problem with a file to `err`, once, counting the file as
/// failed; `Err` when there is nothing to run.
pub fn run(
    config: Option<&Path>,
    paths: &[PathBuf],
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<Summary, Vec<Problem>> {
    let files = test_files(config, paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| {
            vec![Problem::in_file(
                &files[0],
                format!("cannot start the test runtime: {e}"),
            )]
        })?;
    let mut summary = Summary::default();
    for file in files {
        let _ = writeln!(out, "{}", file.display());
        match runtime.block_on(run_file(config, &file, out)) {
            Ok(s) => {
                summary.passed += s.passed;
                summary.failed += s.failed;
            }
            Err(problem) => {
                let _ = out.flush();
                let _ = writeln!(err, "{problem}");
                summary.failed += 1;
                summary.broken_files += 1;
            }
        }
    }
    Ok(summary)
}

/// The config for a test file in `file_dir` that names none (see the module's docs).
fn config_for(file_dir: &Path, given: Option<&Path>) -> PathBuf {
    let dir = if file_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        file_dir
    };
    // `tests` → `.`, `rules/tests` → `rules`, but `.` and `..` → `./..`, `../..`.
    let parent = match dir.components().next_back() {
        Some(std::path::Component::Normal(_)) => dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        _ => dir.join(".."),
    };
    lookup(given, &[dir.to_path_buf(), parent])
}

/// `given`, else the default path if it exists, else the first `pollgate.yaml` in `dirs`,
/// else the default path (so the error names it).
fn lookup(given: Option<&Path>, dirs: &[PathBuf]) -> PathBuf {
    if let Some(given) = given {
        return given.to_path_buf();
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    if default.is_file() {
        return default.to_path_buf();
    }
    dirs.iter()
        .map(|d| d.join("pollgate.yaml"))
        .find(|c| c.is_file())
        .unwrap_or_else(|| default.to_path_buf())
}

fn test_files(config: Option<&Path>, paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<Problem>> {
    let config = lookup(config, &[PathBuf::from(".")]);
    let default_dir = config.parent().unwrap_or(Path::new(".")).join("tests");
    let roots = if paths.is_empty() {
        vec![default_dir]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            let entries = std::fs::read_dir(&root)
                .map_err(|e| vec![Problem::in_file(&root, format!("cannot read folder: {e}"))])?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if root.is_file() {
            files.push(root);
        } else {
            return Err(vec![Problem::in_file(&root, "no such test file or folder")]);
        }
    }
    if files.is_empty() {
        return Err(vec![Problem::in_file(&config, "no rule test files found")]);
    }
    Ok(files)
}

async fn run_file(
    given_config: Option<&Path>,
    file: &Path,
    out: &mut dyn std::io::Write,
) -> Result<Summary, Problem> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Problem::in_file(file, format!("cannot read: {e}")))?;
    let tests: TestFile = serde_yaml::from_str(&text).map_err(|e| match e.location() {
        Some(at) => Problem::at_position(file, at.line(), at.column(), e.to_string()),
        None => Problem::in_file(file, e.to_string()),
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let config_path = tests
        .config
        .as_ref()
        .map_or_else(|| config_for(dir, given_config), |c| dir.join(c));
    if let Ok(config) = Config::load(&config_path, &crate::config::process_env) {
        unknown_upstreams(file, &tests, &config)?;
    }
    let mut summary = Summary::default();
    for case in &tests.cases {
        match run_case(&config_path, dir, case).await {
            Ok(calls) => {
                summary.passed += 1;
                let _ = writeln!(
                    out,
                    "  ok   {} ({calls} call{})",
                    case.name,
                    if calls == 1 { "" } else { "s" }
                );
            }
            Err(why) => {
                summary.failed += 1;
                let _ = writeln!(
                    out,
                    "  FAIL {}\n       {}",
                    case.name,
                    why.replace('\n', "\n       ")
                );
            }
        }
    }
    Ok(summary)
}

/// A case's pretend replies and expected forwards may only name upstreams the config has:
/// a misspelt name would pretend for an upstream no rule can reach, and pass unnoticed.
fn unknown_upstreams(file: &Path, tests: &TestFile, config: &Config) -> Result<(), Problem> {
    for case in &tests.cases {
        let named = case.upstreams.keys().map(|name| ("upstreams", name)).chain(
            case.forwards
                .iter()
                .flatten()
                .map(|(name, _)| ("forwards", name)),
        );
        for (key, name) in named {
            if !config.upstreams.contains_key(name) {
                let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
                return Err(Problem::in_file(
                    file,
                    format!(
                        "case `{}`: {key}: unknown upstream `{name}` (the config {} has: {})",
                        case.name,
                        config.path.display(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

async fn run_case(config_path: &Path, dir: &Path, case: &Case) -> Result<usize, String> {
    let config =
        Config::load(config_path, &crate::config::process_env).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let pretend = Arc::new(PretendUpstreams::new(&case.upstreams)?);
    let ttl = config.state.ttl;
    let mut runtime =
        Runtime::build_with(config, &metrics, 1, pretend.clone()).map_err(|e| e.to_string())?;
    runtime.engine.run_inline();
    let sub = match &case.subscription {
        Some(id) => runtime
            .config
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription `{id}` in the config"))?,
        None => {
            let mut ids: Vec<&String> = runtime.config.subscriptions.keys().collect();
            ids.sort();
            let first = ids.first().ok_or("the config has no subscription")?;
            runtime.config.subscriptions[*first].clone()
        }
    };
    let gateway = Gateway::new(
        runtime,
        Store::Memory(MemoryStore::new(ttl)),
        Clock::system(),
        metrics,
    );
    let mut body = load_body(dir, case.body.as_ref(), case.body_file.as_deref())?
        .ok_or("a case needs `body` or `body_file`")?;
    for (i, call) in case.calls.iter().enumerate() {
        let n = i + 1;
        if let Some(after) = &call.after {
            tokio::time::sleep(parse_duration(after)?).await;
        }
        if let Some(new) = load_body(dir, call.body.as_ref(), call.body_file.as_deref())? {
            body = new;
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sub.secret.sign(&body)).map_err(|e| e.to_string())?,
        );
        let verified = pipeline::verify(sub.clone(), &case.event, &headers, body.clone())
            .map_err(|r| format!("call {n}: the body was refused: {} {}", r.code, r.message))?;
        let rt = gateway.runtime.load_full();
        let answer = gateway.answer(&rt, verified).await;
        let got: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if answer.status != call.status {
            return Err(format!(
                "call {n}: expected status {}, got {}: {got}",
                call.status, answer.status
            ));
        }
        if let Some(expect) = &call.expect {
            if let Some(mismatch) = mismatch(expect, &got, "") {
                return Err(format!("call {n}: {mismatch}\nanswer: {got}"));
            }
        }
    }
    // Let background forwards finish before counting them.
    gateway.forwarder.drain(Duration::from_secs(3600)).await;
    if let Some(expected) = &case.forwards {
        for (name, count) in expected {
            let sent = pretend.sent(name);
            if sent != *count {
                return Err(format!(
                    "expected {count} forward(s) to `{name}`, {sent} were sent"
                ));
            }
        }
    }
    Ok(case.calls.len())
}

fn load_body(
    dir: &Path,
    inline: Option<&Value>,
    file: Option<&Path>,
) -> Result<Option<Bytes>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err("give `body` or `body_file`, not both".into()),
        (Some(value), None) => serde_json::to_vec(value)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| e.to_string()),
        (None, Some(file)) => {
            let path = dir.join(file);
            std::fs::read(&path)
                .map(|b| Some(Bytes::from(b)))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// The first difference between what was expected and the answer, as a sentence.
fn mismatch(expect: &Value, got: &Value, at: &str) -> Option<String> {
    let here = if at.is_empty() {
        "the answer".to_owned()
    } else {
        at.to_owned()
    };
    match (expect, got) {
        (Value::Object(e), Value::Object(g)) => e.iter().find_map(|(k, ev)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match g.get(k) {
                Some(gv) => mismatch(ev, gv, &path),
                None if ev.is_null() => None,
                None => Some(format!("expected {path} = {ev}, but it is missing")),
            }
        }),
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => e
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (ev, gv))| mismatch(ev, gv, &format!("{here}[{i}]"))),
        (Value::Number(e), Value::Number(g)) if e.as_f64() == g.as_f64() => None,
        (e, g) if e == g => None,
        (e, g) => Some(format!("expected {here} = {e}, got {g}")),
    }
}

/// Upstream replies from the test case instead of the network.
struct PretendUpstreams {
    replies: HashMap<String, (Pretend, Duration)>,
    sent: std::sync::Mutex<HashMap<String, AtomicU32>>,
}

impl PretendUpstreams {
    fn new(replies: &BTreeMap<String, Pretend>) -> Result<Self, String> {
        let mut out = HashMap::new();
        for (name, pretend) in replies {
            let delay = pretend
                .delay
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or_default();
            out.insert(name.clone(), (pretend.clone(), delay));
        }
        Ok(Self {
            replies: out,
            sent: std::sync::Mutex::default(),
        })
    }

    fn sent(&self, upstream: &str) -> u32 {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.get(upstream).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

impl UpstreamClient for PretendUpstreams {
    fn send(&self, outgoing: Outgoing) -> SendFuture<'_> {
        {
            let mut sent = self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sent.entry(outgoing.upstream.clone())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
        let reply = self.replies.get(&outgoing.upstream).cloned();
        Box::pin(async move {
            let Some((pretend, delay)) = reply else {
                return Reply {
                    ok: false,
                    status: 0,
                    body: Value::Null,
                    error: Some(format!(
                        "the test case pretends no reply for upstream `{}`",
                        outgoing.upstream
                    )),
                    elapsed_ms: 0,
                };
            };
            tokio::time::sleep(delay).await;
            let elapsed_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            match pretend.error {
                Some(error) => Reply {
                    ok: false,
                    status: 0,
                    body: Value::Null,
                    error: Some(error),
                    elapsed_ms,
                },
                None => Reply {
                    ok: (200..300).contains(&pretend.status),
                    status: pretend.status,
                    body: pretend.body,
                    error: (!(200..300).contains(&pretend.status))
                        .then(|| format!("upstream answered HTTP {}", pretend.status)),
                    elapsed_ms,
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::mismatch;
    use serde_json::json;

    #[test]
    fn expectations_match_subsets_and_name_the_first_difference() {
        let got = json!({"polling": {"finished": false, "message": "wait"}, "x": [1, 2.0]});
        assert_eq!(
            mismatch(&json!({"polling": {"finished": false}}), &got, ""),
            None
        );
        assert_eq!(mismatch(&json!({"x": [1.0, 2]}), &got, ""), None);
        assert_eq!(
            mismatch(&json!({"polling": {"finished": true}}), &got, "").as_deref(),
            Some("expected polling.finished = true, got false")
        );
        assert_eq!(
            mismatch(&json!({"scanCode": {}}), &got, "").as_deref(),
            Some("expected scanCode = {}, but it is missing")
        );
    }
}
