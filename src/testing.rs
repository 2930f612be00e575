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
//! key to be absent (or null). Extra keys in the answer are fine, except:
//!
//! - `exact: true` on a call: the answer has exactly the keys `expect` names, at every
//!   level, and no others (`null` still expects a key to be absent or null);
//! - an empty map `{}` expects an empty object, wherever it appears (as a subset it would
//!   match any object, so `expect: {}` means the answer is exactly `{}`);
//! - `same_as: N` on a call: its status and body equal call N's (an earlier call of the
//!   case, counted from 1) byte for byte, e.g. a repeated call replaying its answer.
//!
//! ```yaml
//!     calls:
//!       - expect: {scanCode: {recognized: false}}
//!         exact: true                     # and nothing else in the answer
//!       - same_as: 1                      # the same bytes as call 1
//! ```
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
    /// `expect` names every key of the answer: none may be missing or extra.
    #[serde(default)]
    exact: bool,
    /// The number (from 1) of an earlier call whose status and body this call's must equal.
    same_as: Option<usize>,
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
    let mut answers: Vec<(u16, Bytes)> = Vec::with_capacity(case.calls.len());
    for (i, call) in case.calls.iter().enumerate() {
        let n = i + 1;
        check_call_form(n, call)?;
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
            let how = if call.exact {
                Match::Exact
            } else {
                Match::Subset
            };
            if let Some(mismatch) = mismatch(expect, &got, "", how) {
                return Err(format!("call {n}: {mismatch}\nanswer: {got}"));
            }
        }
        if let Some(earlier) = call.same_as {
            let (status, body) = &answers[earlier - 1];
            if *status != answer.status || *body != answer.body {
                return Err(format!(
                    "call {n}: expected the same answer as call {earlier}, byte for byte\n\
                     call {earlier}: {status} {}\ncall {n}: {} {}",
                    String::from_utf8_lossy(body),
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
            }
        }
        answers.push((answer.status, answer.body));
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

/// A call's `exact:` and `same_as:` must make sense before it is sent: an `exact` without
/// `expect` or a `same_as` naming no earlier call would check nothing.
fn check_call_form(n: usize, call: &Call) -> Result<(), String> {
    if call.exact && call.expect.is_none() {
        return Err(format!(
            "call {n}: `exact: true` needs an `expect:` to compare"
        ));
    }
    match call.same_as {
        Some(earlier) if earlier == 0 || earlier >= n => Err(format!(
            "call {n}: `same_as: {earlier}` names no earlier call (calls count from 1)"
        )),
        _ => Ok(()),
    }
}

/// How an expectation's maps are compared with the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// The keys named must match; others may be there too.
    Subset,
    /// The keys named must match and no others may be there.
    Exact,
}

/// The first difference between what was expected and the answer, as a sentence.
fn mismatch(expect: &Value, got: &Value, at: &str, how: Match) -> Option<String> {
    let here = if at.is_empty() {
        "the answer".to_owned()
    } else {
        at.to_owned()
    };
    let path = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (expect, got) {
        (Value::Object(e), Value::Object(g)) => {
            // `{}` as a subset would match any object: it means an empty one.
            let how = if e.is_empty() { Match::Exact } else { how };
            let named = e.iter().find_map(|(k, ev)| match g.get(k) {
                Some(gv) => mismatch(ev, gv, &path(k), how),
                None if ev.is_null() => None,
                None => Some(format!("expected {} = {ev}, but it is missing", path(k))),
            });
            named.or_else(|| match how {
                Match::Subset => None,
                Match::Exact => g.iter().find(|(k, _)| !e.contains_key(*k)).map(|(k, gv)| {
                    format!(
                        "expected no {} (the expectation is exact), got {gv}",
                        path(k)
                    )
                }),
            })
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => e
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (ev, gv))| mismatch(ev, gv, &format!("{here}[{i}]"), how)),
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
                let error = format!(
                    "the test case pretends no reply for upstream `{}`",
                    outgoing.upstream
                );
                return Reply::failed(error, 0);
            };
            tokio::time::sleep(delay).await;
            let elapsed_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            match pretend.error {
                Some(error) => Reply::failed(error, elapsed_ms),
                None => Reply::answered(pretend.status, pretend.body, elapsed_ms),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{mismatch, run, Match, Summary};
    use serde_json::json;

    #[test]
    fn expectations_match_subsets_and_name_the_first_difference() {
        let got = json!({"polling": {"finished": false, "message": "wait"}, "x": [1, 2.0]});
        let subset = |expect| mismatch(&expect, &got, "", Match::Subset);
        assert_eq!(subset(json!({"polling": {"finished": false}})), None);
        assert_eq!(subset(json!({"x": [1.0, 2]})), None);
        assert_eq!(
            subset(json!({"polling": {"finished": true}})).as_deref(),
            Some("expected polling.finished = true, got false")
        );
        assert_eq!(
            subset(json!({"scanCode": {}})).as_deref(),
            Some("expected scanCode = {}, but it is missing")
        );
        assert_eq!(subset(json!({"polling": {"customerMessage": null}})), None);
    }

    #[test]
    fn an_exact_expectation_names_a_key_the_answer_should_not_have() {
        let got =
            json!({"scanCode": {"recognized": true, "relationNumber": 1}, "x": [{"a": 1, "b": 2}]});
        let exact = |expect| mismatch(&expect, &got, "", Match::Exact);
        assert_eq!(
            exact(
                json!({"scanCode": {"recognized": true, "relationNumber": 1.0}, "x": [{"a": 1, "b": 2}]})
            ),
            None
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true}, "x": [{"a": 1, "b": 2}]})).as_deref(),
            Some("expected no scanCode.relationNumber (the expectation is exact), got 1")
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true, "relationNumber": 1}, "x": [{"a": 1}]}))
                .as_deref(),
            Some("expected no x[0].b (the expectation is exact), got 2")
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true, "relationNumber": 1}})).as_deref(),
            Some("expected no x (the expectation is exact), got [{\"a\":1,\"b\":2}]")
        );
        assert_eq!(
            exact(
                json!({"scanCode": {"recognized": true, "relationNumber": 1, "message": null}, "x": [{"a": 1, "b": 2}]})
            ),
            None,
            "null still expects a key to be absent"
        );
    }

    #[test]
    fn an_empty_expectation_matches_only_an_empty_answer() {
        let recognized = json!({"scanCode": {"recognized": true}});
        assert_eq!(
            mismatch(&json!({}), &recognized, "", Match::Subset).as_deref(),
            Some("expected no scanCode (the expectation is exact), got {\"recognized\":true}")
        );
        assert_eq!(
            mismatch(&json!({"scanCode": {}}), &recognized, "", Match::Subset).as_deref(),
            Some("expected no scanCode.recognized (the expectation is exact), got true")
        );
        assert_eq!(mismatch(&json!({}), &json!({}), "", Match::Subset), None);
        assert_eq!(
            mismatch(&json!({}), &json!(null), "", Match::Subset).as_deref(),
            Some("expected the answer = {}, got null")
        );
    }

    const CONFIG: &str = "subscriptions:\n  shop:\n    secret: ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz\n\
        events:\n  scanCode:\n    rule: scan.rhai\n  addSessionLine:\n    rule: wait.rhai\n    polling: {}\n";

    /// Runs `cases` (a test file) against [`CONFIG`]; the summary and what was printed.
    fn run_cases(cases: &str) -> (Summary, String) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("pollgate.yaml", CONFIG),
            (
                "scan.rhai",
                "#{scanCode: #{recognized: true, relationNumber: 1}}",
            ),
            ("wait.rhai", "keep_polling(`attempt ${poll.attempt}`)"),
            ("cases.yaml", cases),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = run(
            Some(&dir.path().join("pollgate.yaml")),
            &[dir.path().join("cases.yaml")],
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(String::from_utf8(err).unwrap(), "");
        (summary, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_case_expecting_an_exact_answer_fails_on_an_extra_key_and_says_which() {
        let (summary, out) = run_cases(
            "cases:\n\
             - name: the whole answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"1\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true, relationNumber: 1}}\n      exact: true\n\
             - name: part of the answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"2\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true}}\n      exact: true\n\
             - name: an empty answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"3\"}}\n  calls:\n\
             \x20   - expect: {}\n\
             - name: exact with nothing to compare\n  event: scanCode\n  body: {scanCode: {scannedCode: \"4\"}}\n  calls:\n\
             \x20   - exact: true\n",
        );
        assert_eq!((summary.passed, summary.failed), (1, 3), "{out}");
        assert!(out.contains("  ok   the whole answer (1 call)\n"), "{out}");
        assert!(
            out.contains(
                "  FAIL part of the answer\n       call 1: expected no scanCode.relationNumber (the expectation is exact), got 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL an empty answer\n       call 1: expected no scanCode (the expectation is exact), got {\"recognized\":true,\"relationNumber\":1}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL exact with nothing to compare\n       call 1: `exact: true` needs an `expect:` to compare\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_call_same_as_an_earlier_one_fails_when_its_answer_differs_and_shows_both() {
        let (summary, out) = run_cases(
            "cases:\n\
             - name: a replayed answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"1\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true}}\n    - same_as: 1\n\
             - name: a polling answer that changes\n  event: addSessionLine\n  body: {addSessionLine: {line: {lineId: \"a\"}}}\n  calls:\n\
             \x20   - expect: {polling: {finished: false}}\n    - same_as: 1\n\
             - name: a call compared with itself\n  event: scanCode\n  body: {scanCode: {scannedCode: \"2\"}}\n  calls:\n\
             \x20   - same_as: 1\n",
        );
        assert_eq!((summary.passed, summary.failed), (1, 2), "{out}");
        assert!(
            out.contains("  ok   a replayed answer (2 calls)\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL a polling answer that changes\n       call 2: expected the same answer as call 1, byte for byte\n\
                 \x20      call 1: 200 {\"polling\":{\"finished\":false,\"message\":\"attempt 1\"}}\n\
                 \x20      call 2: 200 {\"polling\":{\"finished\":false,\"message\":\"attempt 2\"}}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL a call compared with itself\n       call 1: `same_as: 1` names no earlier call (calls count from 1)\n"
            ),
            "{out}"
        );
    }
}
