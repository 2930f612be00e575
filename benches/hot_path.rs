//! The per-call hot path (GATEWAY.md 7: verify, parse, rule, sign under 20 µs per call).
//!
//! - `stages/<body>/…`: each stage alone, and `sequence` (all of them as one call
//!   sequence), for the documented (lenient) addSessionLine example and for the strict
//!   483-byte load-test body (`../shared/bench/gen_body.py`, body 0, byte for byte).
//! - `pipeline/…`: `pipeline::verify` + `Gateway::answer` + signing the answer, without
//!   HTTP, on a memory store holding 10 000 open conversations (the load test's steady
//!   state: every call is a poll of a live conversation that stays open).
//!
//! `cargo bench --bench hot_path -- --noplot`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use rhai::{Dynamic, Map};
use sha2::{Digest, Sha256};

use pollgate::config::Config;
use pollgate::conversation::{Clock, ConversationKey, KeyPart, MemoryStore, Store};
use pollgate::pipeline::{self, Gateway};
use pollgate::rules::{Input, RuleEngine, Verdict};
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

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
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

/// The rule input as `Gateway::evaluate` builds it for a first poll.
fn input(event: Dynamic, key: ConversationKey, now_ms: u64) -> Input {
    Input {
        event,
        name: EVENT.to_owned(),
        subscription: SUBSCRIPTION.to_owned(),
        received_at: Clock::rfc3339(now_ms),
        attempt: 1,
        elapsed_ms: 0,
        key: key.to_string(),
        state: Map::new(),
        forwards: Vec::new(),
        upstreams: Some(Arc::from(Vec::<String>::new())),
    }
}

fn answer_map(verdict: Result<Verdict, pollgate::rules::RuleError>) -> Map {
    match verdict {
        Ok(Verdict::Answer(map)) => map,
        other => panic!("the bench rule must answer: {:?}", other.map(|_| ())),
    }
}

fn bench_stages(c: &mut Criterion) {
    let secret = secret();
    check_bodies(&secret);
    let engine = RuleEngine::new(&pollgate::config::Limits::default());
    let ten_line = engine
        .compile(Path::new("ten_line.rhai"), TEN_LINE_RULE)
        .expect("ten-line rule compiles");
    let bench_rule_path = shared("bench/pollgate/addSessionLine.rhai");
    let bench_rule_source = std::fs::read_to_string(&bench_rule_path).expect("bench rule");
    let bench_rule = engine
        .compile(&bench_rule_path, &bench_rule_source)
        .expect("bench rule compiles");
    let doc = std::fs::read(shared("mplus/examples/polling-addSessionLine.doc.json"))
        .expect("documented example");
    let now_ms = Clock::system().now_ms();

    for (label, body) in [("doc_example", doc), ("strict_483", bench_body(0))] {
        let signature = secret.sign(&body);
        let mut group = c.benchmark_group(format!("stages/{label}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));

        group.bench_function("verify", |b| {
            b.iter(|| {
                secret
                    .verify(black_box(signature.as_bytes()), black_box(&body))
                    .expect("valid signature");
            });
        });
        group.bench_function("parse", |b| {
            b.iter(|| pollgate::body::parse(black_box(&body)).expect("body parses"));
        });
        let map = pollgate::body::parse(&body).expect("body parses");
        group.bench_function("key_derive", |b| {
            b.iter(|| ConversationKey::derive(&KeyPart::ALL, SUBSCRIPTION, EVENT, black_box(&map)));
        });
        let key = ConversationKey::derive(&KeyPart::ALL, SUBSCRIPTION, EVENT, &map);
        for (name, rule) in [("rule_ten_line", &ten_line), ("rule_bench", &bench_rule)] {
            group.bench_function(name, |b| {
                // The body travels in and out of the evaluation as in the pipeline.
                let mut event = Some(Dynamic::from_map(map.clone()));
                b.iter(|| {
                    let ev =
                        engine.evaluate(rule, input(event.take().unwrap_or_default(), key, now_ms));
                    event = Some(ev.event);
                    ev.verdict
                });
            });
        }
        let answer = Dynamic::from_map(answer_map(
            engine
                .evaluate(
                    &ten_line,
                    input(Dynamic::from_map(map.clone()), key, now_ms),
                )
                .verdict,
        ));
        group.bench_function("serialise_sign", |b| {
            b.iter(|| {
                let bytes = serde_json::to_vec(black_box(&answer)).expect("answer serialises");
                secret.sign(&bytes)
            });
        });
        group.bench_function("sequence", |b| {
            b.iter(|| {
                let body = black_box(&body);
                secret
                    .verify(signature.as_bytes(), body)
                    .expect("valid signature");
                let map = pollgate::body::parse(body).expect("body parses");
                let key = ConversationKey::derive(&KeyPart::ALL, SUBSCRIPTION, EVENT, &map);
                let ev = engine.evaluate(&ten_line, input(Dynamic::from_map(map), key, now_ms));
                let answer = Dynamic::from_map(answer_map(ev.verdict));
                let bytes = serde_json::to_vec(&answer).expect("answer serialises");
                secret.sign(&bytes)
            });
        });
        group.finish();
    }
}

/// A gateway with a memory store for the bench subscription and one polling event.
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

fn bench_pipeline(c: &mut Criterion) {
    let secret = secret();
    let calls: Vec<(HeaderMap, Bytes)> = (0..CONVERSATIONS)
        .map(|i| {
            let body = bench_body(i);
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&secret.sign(&body)).expect("header value"),
            );
            (headers, Bytes::from(body))
        })
        .collect();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bench_rule =
        std::fs::read_to_string(shared("bench/pollgate/addSessionLine.rhai")).expect("bench rule");

    let mut group = c.benchmark_group("pipeline");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, source) in [
        ("ten_line_rule", TEN_LINE_RULE),
        ("bench_rule", bench_rule.as_str()),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let gateway = tokio.block_on(async { gateway(dir.path(), source) });
        let rt = gateway.runtime.load_full();
        let sub = rt.config.subscriptions[SUBSCRIPTION].clone();
        let mut next = 0usize;
        let gw = &gateway;
        let mut call = || {
            let (headers, raw) = &calls[next % CONVERSATIONS];
            next += 1;
            let sub = sub.clone();
            async move {
                let verified = pipeline::verify(sub.clone(), EVENT, headers, raw.clone())
                    .expect("call verifies");
                let rt = gw.runtime.load_full();
                let answer = gw.answer(&rt, verified).await;
                debug_assert_eq!(answer.status, 200);
                sub.secret.sign(&answer.body)
            }
        };
        // Open every conversation first: the measured calls are polls of live ones.
        tokio.block_on(async {
            for _ in 0..CONVERSATIONS {
                black_box(call().await);
            }
        });
        group.bench_function(format!("verify_answer_sign/{name}"), |b| {
            b.iter_custom(|iters| {
                tokio.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(call().await);
                    }
                    start.elapsed()
                })
            });
        });
        // Still open, never finished (eventCounter 1 keeps polling).
        let answer = tokio.block_on(async {
            let (headers, raw) = &calls[0];
            let verified =
                pipeline::verify(sub.clone(), EVENT, headers, raw.clone()).expect("verifies");
            gateway.answer(&rt, verified).await
        });
        assert!(
            std::str::from_utf8(&answer.body).is_ok_and(|s| s.contains(r#""finished":false"#)),
            "conversation finished: {:?}",
            answer.body
        );
    }
    group.finish();
}

criterion_group!(benches, bench_stages, bench_pipeline);
criterion_main!(benches);
