//! Running one test file: each case gets a fresh gateway (memory store, pretend upstreams,
//! the rule engine on this thread) and its calls go through the same checks and pipeline
//! as a till's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde_json::Value;

use super::expect::{mismatch, Match};
use super::file::{check_call_form, load_body, Call, Case, TestFile};
use super::find::config_for;
use super::pretend::PretendUpstreams;
use super::Summary;
use crate::config::{parse_duration, Config, Problem, Subscription};
use crate::conversation::{Clock, MemoryStore, Store};
use crate::gateway::Gateway;
use crate::outbox::{EmbeddedOutbox, Queue};
use crate::pipeline::{self, Answer};
use crate::runtime::Runtime;
use crate::signature::{SIGNATURE_HEADER, SUBSCRIPTION_HEADER};
use crate::telemetry::Metrics;

pub(super) async fn run_file(
    given_config: Option<&Path>,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
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
    if let Ok(config) = Config::load(&config_path, env) {
        unknown_upstreams(file, &tests, &config)?;
    }
    let mut summary = Summary::default();
    for case in &tests.cases {
        match run_case(&config_path, dir, case, env).await {
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

/// Runs one case; the number of calls it made.
async fn run_case(
    config_path: &Path,
    dir: &Path,
    case: &Case,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let config = Config::load(config_path, env).map_err(|e| e.to_string())?;
    let pretend = Arc::new(PretendUpstreams::new(&case.upstreams)?);
    let (gateway, sub) = case_gateway(config, case, pretend.clone())?;
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
        let answer = send(&gateway, &sub, &case.event, &body)
            .await
            .map_err(|why| format!("call {n}: {why}"))?;
        check_answer(n, call, &answer, &answers)?;
        answers.push((answer.status, answer.body));
    }
    // Let background forwards finish before counting them.
    gateway.forwarder.drain(Duration::from_secs(3600)).await;
    for (name, count) in case.forwards.iter().flatten() {
        let sent = pretend.sent(name);
        if sent != *count {
            return Err(format!(
                "expected {count} forward(s) to `{name}`, {sent} were sent"
            ));
        }
    }
    Ok(case.calls.len())
}

/// A fresh gateway for a case, and the subscription its calls are signed for.
fn case_gateway(
    config: Config,
    case: &Case,
    pretend: Arc<PretendUpstreams>,
) -> Result<(Gateway, Arc<Subscription>), String> {
    let metrics = Arc::new(Metrics::new());
    let ttl = config.state.ttl;
    let mut runtime =
        Runtime::build_with(config, &metrics, 1, pretend).map_err(|e| e.to_string())?;
    runtime.engine.run_inline();
    let subscriptions = &runtime.config.subscriptions;
    let sub = match &case.subscription {
        Some(id) => subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no subscription `{id}` in the config"))?,
        None => {
            let first = subscriptions
                .keys()
                .min()
                .ok_or("the config has no subscription")?;
            subscriptions[first].clone()
        }
    };
    let store = Store::Memory(MemoryStore::new(ttl));
    let durable = runtime.config.events.values().any(|e| e.is_durable());
    let mut gateway = Gateway::new(runtime, store, Clock::system(), metrics);
    if durable {
        // Durable events are queued as in `serve` (so their answers are the same), in an
        // outbox that lives as long as the case and delivers nothing.
        let outbox = EmbeddedOutbox::in_memory().map_err(|e| e.to_string())?;
        gateway = gateway.with_outbox(Queue::Embedded(outbox));
    }
    Ok((gateway, sub))
}

/// One call as a till makes it: signed, through both checks and the pipeline.
async fn send(
    gateway: &Gateway,
    sub: &Subscription,
    event: &str,
    body: &Bytes,
) -> Result<Answer, String> {
    let value = |text: &str| HeaderValue::from_str(text).map_err(|e| e.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(SUBSCRIPTION_HEADER, value(&sub.id)?);
    headers.insert(SIGNATURE_HEADER, value(&sub.secret.sign(body))?);
    let rt = gateway.runtime.load_full();
    let verified = pipeline::check_head(&rt, event, &headers)
        .and_then(|head| pipeline::check_body(head, &headers, body.clone()))
        .map_err(|refusal| format!("the body was refused: {refusal}"))?;
    Ok(pipeline::answer(gateway, &rt, verified).await)
}

/// The answer against the call's `status`, `expect` and `same_as`.
fn check_answer(
    n: usize,
    call: &Call,
    answer: &Answer,
    earlier: &[(u16, Bytes)],
) -> Result<(), String> {
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
    if let Some(same_as) = call.same_as {
        let (status, body) = &earlier[same_as - 1];
        if *status != answer.status || *body != answer.body {
            return Err(format!(
                "call {n}: expected the same answer as call {same_as}, byte for byte\n\
                 call {same_as}: {status} {}\ncall {n}: {} {}",
                String::from_utf8_lossy(body),
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    Ok(())
}
