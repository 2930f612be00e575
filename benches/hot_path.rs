//! The per-call hot path (GATEWAY.md 7: verify, parse, rule, sign under 10 µs per call).
//!
//! - `stages/<body>/…`: each stage alone (`parse` builds the whole body, `parse_read` only
//!   what the bench rule and the conversation key read, as a call does), and `sequence`
//!   (all of them as one call sequence), for the documented (lenient) addSessionLine
//!   example and for the strict 483-byte load-test body (the shared bench's `gen_body.py`,
//!   body 0, byte for byte).
//! - `pipeline/…`: both checks, `pipeline::answer` and signing the answer, without
//!   HTTP, on a memory store holding 10 000 open conversations (the load test's steady
//!   state: every call is a poll of a live conversation that stays open).
//!
//! `cargo bench --bench hot_path -- --noplot` (a filter such as `stages/strict_483` runs
//! part of it). For repeatable instruction counts, run one bench's routine without criterion:
//! `HOT_PATH_ONLY=stages/strict_483/sequence HOT_PATH_ITERS=2000 valgrind --tool=callgrind
//! target/release/deps/hot_path-…` at two counts; the difference per call is the cost.
//! (Valgrind's CPU has no SHA extensions, so HMAC and key derivation count in software
//! there: compare those stages by time, the rest by instructions.)

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use rhai::{Dynamic, Map};
use sha2::{Digest, Sha256};

use pollgate::config::Config;
use pollgate::conversation::{Clock, ConversationKey, KeyPart, MemoryStore, Store};
use pollgate::gateway::Gateway;
use pollgate::pipeline::{self, Verified};
use pollgate::rules::{Input, Rule, RuleEngine, Verdict};
use pollgate::runtime::Runtime;
use pollgate::signature::{Encoding, Secret, SIGNATURE_HEADER};
use pollgate::telemetry::Metrics;

/// The load test's secret (`gen_body.py`): base64 of `secret-key-for-bench`.
const SECRET_B64: &str = "c2VjcmV0LWtleS1mb3ItYmVuY2g=";
const SUBSCRIPTION: &str = "bench";
const EVENT: &str = "addSessionLine";
/// Distinct conversations the pipeline bench cycles through, as `BODIES` in the load test.
const CONVERSATIONS: usize = 10_000;

/// A realistic ten-line rule: an age check on the article, messages with interpolation.
/// The load-test bodies (article 1, eventCounter 1) take the last branch: keep polling.
const TEN_LINE_RULE: &str = r#"const RESTRICTED = [2001, 2002, 2003, 3101];   // 18+ articles
let line = event.addSessionLine ?? #{};
let article = line.articleNumber ?? 0;
let counter = event.event?.eventCounter ?? 0;
if RESTRICTED.contains(article) {
    keep_polling(`Age check: ask for ID (18+) for ${line.text ?? "this article"}`, "Please show your ID")
} else if counter >= 3 {
    finish(`${meta.name}: ${line.text} (article ${article}) done after ${counter} polls`, "Thank you")
} else {
    keep_polling(`${meta.name}: ${line.text} (article ${article}), poll ${counter}`, "Please wait")
}
"#;

/// A file under `tests/fixtures` (copies of the team's shared files; see its README).
fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// `gen_body.py`'s body `i` (eventCounter 1); body 0 is the original benchmark body.
fn bench_body(i: usize) -> Vec<u8> {
    let (session, line) = if i == 0 {
        (
            "f2fa2d23-8133-417a-a28c-d35728951ef7".to_owned(),
            "c686f63d-46a7-498e-b421-c72e5cb7136b".to_owned(),
        )
    } else {
        (
            uuid(&format!("load/{i}/session")),
            uuid(&format!("load/{i}/line")),
        )
    };
    // 2018-08-09T16:37:06.225 + i seconds; 10 000 bodies stay within the day.
    let secs = 16 * 3600 + 37 * 60 + 6 + i;
    let ts = format!(
        "2018-08-09T{:02}:{:02}:{:02}.225+02:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let branch = 1 + (i / 9) % 9;
    let workplace = 1 + i % 9;
    format!(
        concat!(
            r#"{{"event":{{"eventBlocking":true,"eventCounter":1,"eventTimestamp":"{ts}"}},"#,
            r#""sender":{{"branchNumber":{branch},"workplaceNumber":{workplace},"employeeNumber":1}},"#,
            r#""session":{{"sessionId":"{session}","lines":[{{"lineId":"{line}","articleNumber":1,"#,
            r#""priceIncl":2.50,"quantity":1,"text":"Coffee"}}]}},"#,
            r#""addSessionLine":{{"lineId":"{line}","#,
            r#""articleNumber":1,"priceIncl":2.50,"quantity":1,"text":"Coffee"}}}}"#
        ),
        ts = ts,
        branch = branch,
        workplace = workplace,
        session = session,
        line = line
    )
    .into_bytes()
}

/// Python's `uuid.UUID(bytes=sha256(text)[:16], version=4)`.
fn uuid(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn secret() -> Secret {
    Secret::decode(SECRET_B64, Encoding::Base64).expect("bench secret")
}

/// Guards against the generator drifting from `gen_body.py` (signatures it wrote).
fn check_bodies(secret: &Secret) {
    for (i, sig) in [
        (0, "c07e8zFiwVNTQSgm8KJfP4BR+XuKnnx7Ws4bHRQH6VI="),
        (1, "Nu9GmH2s+MSchQMAMy5ivWbL+Sl7MSlBxwZpMkXHwQQ="),
        (9999, "+P2PRMCescxa5J7YvyreCiNDZSlzaWuuHDK9Lg40aYk="),
    ] {
        let body = bench_body(i);
        assert_eq!(body.len(), 483, "body {i}");
        assert_eq!(secret.sign(&body), sig, "body {i} differs from gen_body.py");
    }
}

/// The rule input as the pipeline's `evaluate` builds it for a first poll.
fn input(event: Dynamic, key: ConversationKey, now_ms: u64) -> Input {
    Input {
        event,
        name: EVENT.to_owned(),
        subscription: SUBSCRIPTION.to_owned(),
        received_at: Clock::rfc3339(now_ms),
        attempt: 1,
        elapsed_ms: 0,
        // As the pipeline writes it (`CallNote::key_text` shares its code).
        key: pollgate::pipeline::CallNote {
            key: Some(key),
            ..Default::default()
        }
        .key_text(),
        state: Map::new(),
        forwards: Vec::new(),
        upstreams: Some(Arc::from(Vec::<String>::new())),
        push: Dynamic::UNIT,
    }
}

fn answer_map(verdict: Result<Verdict, pollgate::rules::RuleError>) -> Map {
    match verdict {
        Ok(Verdict::Answer(map)) => map,
        other => panic!("the bench rule must answer: {:?}", other.map(|_| ())),
    }
}

/// The stages measured on their own, in the order a call goes through them.
const STAGES: [&str; 8] = [
    "verify",
    "parse",
    "parse_read",
    "key_derive",
    "rule_ten_line",
    "rule_bench",
    "serialise_sign",
    "sequence",
];

/// One request body and what the stages before a given stage made of it.
struct Body {
    label: &'static str,
    bytes: Vec<u8>,
    signature: String,
    map: Map,
    key: ConversationKey,
    answer: Dynamic,
}

/// What the stage benches share: the secret, the engine and both rules, the two bodies.
struct Stages {
    /// What a call of the bench rule builds of a body (`parse_read`; `parse` builds all).
    bench_reads: pollgate::body::Wanted,
    /// What a call of the ten-line rule builds (`sequence`).
    ten_line_reads: pollgate::body::Wanted,
    secret: Secret,
    engine: RuleEngine,
    ten_line: Rule,
    bench_rule: Rule,
    now_ms: u64,
    bodies: Vec<Body>,
}

impl Stages {
    fn new() -> Self {
        let secret = secret();
        check_bodies(&secret);
        let engine = RuleEngine::new(&pollgate::config::Limits::default());
        let ten_line = engine
            .compile(Path::new("ten_line.rhai"), TEN_LINE_RULE)
            .expect("ten-line rule compiles");
        let bench_rule_path = fixture("bench/addSessionLine.rhai");
        let bench_rule_source = std::fs::read_to_string(&bench_rule_path).expect("bench rule");
        let bench_rule = engine
            .compile(&bench_rule_path, &bench_rule_source)
            .expect("bench rule compiles");
        let doc = std::fs::read(fixture("mplus/examples/polling-addSessionLine.doc.json"))
            .expect("documented example");
        let now_ms = Clock::system().now_ms();
        let bodies = [("doc_example", doc), ("strict_483", bench_body(0))]
            .into_iter()
            .map(|(label, bytes)| {
                let map = pollgate::body::parse(&bytes).expect("body parses");
                let key = ConversationKey::derive(&KeyPart::ALL, SUBSCRIPTION, EVENT, &map);
                let event = Dynamic::from_map(map.clone());
                let answer = answer_map(
                    engine
                        .evaluate(&ten_line, input(event, key, now_ms))
                        .verdict,
                );
                Body {
                    label,
                    signature: secret.sign(&bytes),
                    bytes,
                    map,
                    key,
                    answer: Dynamic::from_map(answer),
                }
            })
            .collect();
        Self {
            ten_line_reads: pipeline::body_reads(
                &KeyPart::ALL,
                EVENT,
                &pollgate::runtime::How::Rule(ten_line.clone()),
            ),
            bench_reads: pipeline::body_reads(
                &KeyPart::ALL,
                EVENT,
                &pollgate::runtime::How::Rule(bench_rule.clone()),
            ),
            secret,
            engine,
            ten_line,
            bench_rule,
            now_ms,
            bodies,
        }
    }

    /// One call of `stage` on `body`.
    fn routine<'a>(&'a self, body: &'a Body, stage: &str) -> Box<dyn FnMut() + 'a> {
        let Self {
            secret,
            engine,
            ten_line,
            now_ms,
            ..
        } = self;
        let now_ms = *now_ms;
        match stage {
            "verify" => Box::new(move || {
                secret
                    .verify(black_box(body.signature.as_bytes()), black_box(&body.bytes))
                    .expect("valid signature");
            }),
            "parse" => Box::new(move || {
                black_box(pollgate::body::parse(black_box(&body.bytes)).expect("body parses"));
            }),
            "parse_read" => Box::new(move || {
                let read = pollgate::body::parse_wanted(black_box(&body.bytes), &self.bench_reads);
                black_box(read.expect("body parses"));
            }),
            "key_derive" => Box::new(move || {
                black_box(ConversationKey::derive(
                    &KeyPart::ALL,
                    SUBSCRIPTION,
                    EVENT,
                    black_box(&body.map),
                ));
            }),
            "rule_ten_line" | "rule_bench" => {
                let rule = if stage == "rule_bench" {
                    &self.bench_rule
                } else {
                    ten_line
                };
                // The body travels in and out of the evaluation as in the pipeline; the
                // input is built per call as the pipeline's `evaluate` builds it.
                let mut event = Some(Dynamic::from_map(body.map.clone()));
                Box::new(move || {
                    let input = input(event.take().unwrap_or_default(), body.key, now_ms);
                    let evaluation = engine.evaluate(rule, input);
                    event = Some(evaluation.event);
                    black_box(evaluation.verdict).expect("rule answers");
                })
            }
            "serialise_sign" => Box::new(move || {
                let bytes = serde_json::to_vec(black_box(&body.answer)).expect("serialises");
                black_box(secret.sign(&bytes));
            }),
            "sequence" => Box::new(move || {
                let bytes = black_box(&body.bytes);
                secret
                    .verify(body.signature.as_bytes(), bytes)
                    .expect("valid signature");
                let map =
                    pollgate::body::parse_wanted(bytes, &self.ten_line_reads).expect("body parses");
                let key = ConversationKey::derive(&KeyPart::ALL, SUBSCRIPTION, EVENT, &map);
                let ev = engine.evaluate(ten_line, input(Dynamic::from_map(map), key, now_ms));
                let answer = Dynamic::from_map(answer_map(ev.verdict));
                let out = serde_json::to_vec(&answer).expect("serialises");
                black_box(secret.sign(&out));
            }),
            other => panic!("no stage {other}"),
        }
    }
}

fn bench_stages(c: &mut Criterion) {
    let stages = Stages::new();
    for body in &stages.bodies {
        let mut group = c.benchmark_group(format!("stages/{}", body.label));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for stage in STAGES {
            let mut routine = stages.routine(body, stage);
            group.bench_function(stage, |b| b.iter(&mut routine));
        }
        group.finish();
    }
}

/// A gateway with a memory store for the bench subscription and one polling event (its
/// timeout 1 h rather than the load test's 120 s, so a long run cannot time conversations out).
fn gateway(dir: &Path, rule_source: &str) -> Gateway {
    std::fs::write(dir.join("rule.rhai"), rule_source).expect("write rule");
    let yaml = format!(
        "server: {{listen: '127.0.0.1:0'}}\nadmin: {{listen: '127.0.0.1:0'}}\n\
         subscriptions:\n  {SUBSCRIPTION}: {{secret: '{SECRET_B64}'}}\n\
         events:\n  {EVENT}:\n    rule: rule.rhai\n    polling: {{timeout: 1h}}\n"
    );
    let path = dir.join("pollgate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let config = Config::load(&path, &|_| None).expect("bench config loads");
    let ttl = config.state.ttl;
    let metrics = Arc::new(Metrics::new());
    let runtime = Runtime::build(config, &metrics, 1).expect("bench config builds");
    Gateway::new(
        runtime,
        Store::Memory(MemoryStore::new(ttl)),
        Clock::system(),
        metrics,
    )
}

/// Signed calls to `gen_body.py`'s 10 000 bodies, as wrk sends them.
fn calls() -> Vec<(HeaderMap, Bytes)> {
    let secret = secret();
    (0..CONVERSATIONS)
        .map(|i| {
            let body = bench_body(i);
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(
                pollgate::signature::SUBSCRIPTION_HEADER,
                HeaderValue::from_static(SUBSCRIPTION),
            );
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&secret.sign(&body)).expect("header value"),
            );
            (headers, Bytes::from(body))
        })
        .collect()
}

/// Both checks of GATEWAY.md 6, as the webhook handler makes them.
fn verified(rt: &pollgate::runtime::Runtime, headers: &HeaderMap, raw: &Bytes) -> Verified {
    pipeline::check_head(rt, EVENT, headers)
        .and_then(|head| pipeline::check_body(head, headers, raw.clone()))
        .expect("call verifies")
}

/// The whole call without HTTP: the checks, `pipeline::answer`, signing the answer.
struct PipelineBench<'a> {
    tokio: tokio::runtime::Runtime,
    gateway: Gateway,
    sub: Arc<pollgate::config::Subscription>,
    calls: &'a [(HeaderMap, Bytes)],
    next: usize,
    opened: bool,
    _dir: tempfile::TempDir,
}

impl<'a> PipelineBench<'a> {
    fn new(calls: &'a [(HeaderMap, Bytes)], rule_source: &str) -> Self {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let gateway = tokio.block_on(async { gateway(dir.path(), rule_source) });
        let sub = gateway.runtime.load().config.subscriptions[SUBSCRIPTION].clone();
        Self {
            tokio,
            gateway,
            sub,
            calls,
            next: 0,
            opened: false,
            _dir: dir,
        }
    }

    /// `iters` calls, cycling through the bodies; the time they took.
    fn run(&mut self, iters: u64) -> Duration {
        if !self.opened {
            // Open every conversation first: measured calls are polls of live ones.
            self.opened = true;
            self.run(self.calls.len() as u64);
        }
        let Self {
            tokio,
            gateway,
            sub,
            calls,
            next,
            ..
        } = self;
        tokio.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let (headers, raw) = &calls[*next % calls.len()];
                *next += 1;
                let rt = gateway.runtime.load_full();
                let answer = pipeline::answer(gateway, &rt, verified(&rt, headers, raw)).await;
                debug_assert_eq!(answer.status, 200);
                black_box(sub.secret.sign(&answer.body));
            }
            start.elapsed()
        })
    }

    /// The conversations are still open (eventCounter 1 keeps polling).
    fn check_still_polling(&mut self) {
        let (headers, raw) = &self.calls[0];
        let rt = self.gateway.runtime.load_full();
        let verified = verified(&rt, headers, raw);
        let answer = self
            .tokio
            .block_on(pipeline::answer(&self.gateway, &rt, verified));
        assert!(
            std::str::from_utf8(&answer.body).is_ok_and(|s| s.contains(r#""finished":false"#)),
            "the conversation finished: {:?}",
            answer.body
        );
    }
}

fn bench_rule_source() -> String {
    std::fs::read_to_string(fixture("bench/addSessionLine.rhai")).expect("bench rule")
}

fn bench_pipeline(c: &mut Criterion) {
    let calls = calls();
    let bench_rule = bench_rule_source();
    let mut group = c.benchmark_group("pipeline");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, source) in [
        ("ten_line_rule", TEN_LINE_RULE),
        ("bench_rule", bench_rule.as_str()),
    ] {
        let mut bench = PipelineBench::new(&calls, source);
        group.bench_function(format!("verify_answer_sign/{name}"), |b| {
            b.iter_custom(|iters| bench.run(iters));
        });
        if bench.opened {
            bench.check_still_polling();
        }
    }
    group.finish();
}

/// `HOT_PATH_ONLY=<bench id> HOT_PATH_ITERS=<n>`: runs that bench's routine n times without
/// criterion, for instruction counts that do not depend on the machine's load, e.g.
/// `valgrind --tool=callgrind` at n and 2n: the difference / n is the cost of one call.
fn only(id: &str, iters: u64) {
    if let Some(name) = id.strip_prefix("pipeline/verify_answer_sign/") {
        let calls = calls();
        let bench_rule = bench_rule_source();
        let source = if name == "bench_rule" {
            bench_rule.as_str()
        } else {
            TEN_LINE_RULE
        };
        let mut bench = PipelineBench::new(&calls, source);
        bench.run(iters);
        bench.check_still_polling();
        return;
    }
    let (label, stage) = id
        .strip_prefix("stages/")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("HOT_PATH_ONLY: no bench {id}"));
    let stages = Stages::new();
    let body = stages
        .bodies
        .iter()
        .find(|b| b.label == label)
        .unwrap_or_else(|| panic!("HOT_PATH_ONLY: no body {label}"));
    let mut routine = stages.routine(body, stage);
    for _ in 0..iters {
        routine();
    }
}

criterion_group!(benches, bench_stages, bench_pipeline);

fn main() {
    // As on the gateway's own worker threads (`pollgate serve`): a stack marked as large
    // enough for a rule's first slice, so quick rules run where the call does.
    use pollgate::rules::inline;
    std::thread::Builder::new()
        .stack_size(inline::WORKER_STACK)
        .spawn(|| {
            inline::mark_thread(inline::WORKER_STACK);
            run();
        })
        .expect("the bench thread starts")
        .join()
        .expect("the bench ran");
}

fn run() {
    if let Ok(id) = std::env::var("HOT_PATH_ONLY") {
        let iters = std::env::var("HOT_PATH_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        only(&id, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
