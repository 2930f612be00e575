//! Rule evaluation: the scope, the API, the return rules, the limits.

use std::time::{Duration, Instant};

use rhai::{Dynamic, Map};
use serde_json::{json, Value};

use super::*;

const FILE: &str = "rules/test.rhai";

fn engine() -> RuleEngine {
    RuleEngine::new(&Limits::default())
}

fn compile(engine: &RuleEngine, source: &str) -> Rule {
    engine
        .compile(Path::new(FILE), source)
        .unwrap_or_else(|p| panic!("rule compiles: {p}"))
}

fn dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).expect("JSON converts to Dynamic")
}

fn to_json(map: Map) -> Value {
    rhai::serde::from_dynamic(&Dynamic::from_map(map)).expect("a map converts to JSON")
}

/// A first call of a conversation with a small addSessionLine body and forwarding on.
fn input() -> Input {
    Input {
        event: dynamic(&json!({
            "event": {"eventCounter": 7, "eventTimestamp": "2026-03-02T09:15:07.480+01:00"},
            "addSessionLine": {"line": {"articleNumber": 2001, "text": "Red wine"}},
            "unknownField": [1, 2]
        })),
        name: "addSessionLine".into(),
        subscription: "shop".into(),
        received_at: "2026-03-02T08:15:07.512Z".into(),
        attempt: 1,
        elapsed_ms: 0,
        key: "0123456789abcdef0123456789abcdef".into(),
        state: Map::new(),
        forwards: Vec::new(),
        upstreams: Some(Arc::from(vec!["approvals".to_owned()])),
        push: Dynamic::UNIT,
    }
}

fn run(source: &str, input: Input) -> Evaluation {
    let engine = engine();
    let rule = compile(&engine, source);
    engine.evaluate(&rule, input)
}

/// The answer of a rule that must succeed, as JSON.
fn answer_of(source: &str, input: Input) -> Value {
    match run(source, input).verdict {
        Ok(Verdict::Answer(map)) => to_json(map),
        Ok(Verdict::Reject(r)) => panic!("rule rejected: {r:?}"),
        Err(e) => panic!("rule failed: {e}"),
    }
}

/// The error of a rule that must fail.
fn error_of_with(engine: &RuleEngine, source: &str, input: Input) -> RuleError {
    let rule = compile(engine, source);
    match engine.evaluate(&rule, input).verdict {
        Err(e) => e,
        Ok(v) => panic!("rule was expected to fail, got {v:?}"),
    }
}

fn error_of(source: &str) -> RuleError {
    error_of_with(&engine(), source, input())
}

// ---- compiling ----

#[test]
fn compile_errors_say_file_line_and_column() {
    let err = engine()
        .compile(Path::new("bad.rhai"), "let x = ;")
        .unwrap_err();
    assert!(err.to_string().starts_with("bad.rhai:1:"), "{err}");
}

#[test]
fn compile_error_names_the_exact_line_and_column_of_the_mistake() {
    let source = "let a = 1;\nlet b = a +;\n";
    let err = engine()
        .compile(Path::new("rules/broken.rhai"), source)
        .unwrap_err();
    assert_eq!(err.file, Path::new("rules/broken.rhai"));
    assert_eq!(err.position, Some((2, 12)), "{err}");
    assert_eq!(
        err.to_string(),
        format!("rules/broken.rhai:2:12: {}", err.message)
    );
    assert!(!err.message.is_empty());
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

#[test]
fn eval_is_disabled() {
    let err = engine()
        .compile(Path::new(FILE), "let x = 1;\neval(\"40 + 2\")")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{FILE}:2:1: reserved keyword 'eval' is disabled")
    );
}

#[test]
fn import_is_not_available() {
    let err = engine()
        .compile(Path::new(FILE), r#"import "secrets" as s; s::x"#)
        .unwrap_err();
    assert!(err.to_string().starts_with(&format!("{FILE}:1:")), "{err}");
}

// ---- what a rule sees ----

#[test]
fn rule_sees_the_whole_event_with_unknown_fields() {
    let answer = answer_of(
        r#"#{ text: event.addSessionLine.line.text, counter: event.event.eventCounter,
             unknown: event.unknownField.len(), missing: event.nothing == () }"#,
        input(),
    );
    assert_eq!(
        answer,
        json!({"text": "Red wine", "counter": 7, "unknown": 2, "missing": true})
    );
}

#[test]
fn rule_sees_meta_name_subscription_and_received_at() {
    let answer = answer_of(
        "#{ name: meta.name, subscription: meta.subscription, received_at: meta.received_at }",
        input(),
    );
    assert_eq!(
        answer,
        json!({"name": "addSessionLine", "subscription": "shop", "received_at": "2026-03-02T08:15:07.512Z"})
    );
}

#[test]
fn rule_sees_poll_attempt_elapsed_ms_and_key() {
    let mut input = input();
    input.attempt = 3;
    input.elapsed_ms = 2500;
    let answer = answer_of(
        "#{ attempt: poll.attempt, elapsed: poll.elapsed_ms, key: poll.key }",
        input,
    );
    assert_eq!(
        answer,
        json!({"attempt": 3, "elapsed": 2500, "key": "0123456789abcdef0123456789abcdef"})
    );
}

#[test]
fn state_changes_come_back_and_feed_the_next_call() {
    let engine = engine();
    let rule = compile(
        &engine,
        "state.count = (state.count ?? 0) + 1; state.seen = `${state.seen ?? \"\"}x`; #{ count: state.count }",
    );
    let first = engine.evaluate(&rule, input());
    assert!(matches!(first.verdict, Ok(Verdict::Answer(_))));
    assert_eq!(
        to_json(first.state.clone()),
        json!({"count": 1, "seen": "x"})
    );

    let mut next = input();
    next.attempt = 2;
    next.state = first.state;
    let second = engine.evaluate(&rule, next);
    let Ok(Verdict::Answer(answer)) = second.verdict else {
        panic!("second call failed");
    };
    assert_eq!(to_json(answer), json!({"count": 2}));
    assert_eq!(to_json(second.state), json!({"count": 2, "seen": "xx"}));
}

#[test]
fn state_that_stops_being_a_map_is_an_error() {
    let err = error_of("state = 5; ()");
    assert_eq!(err.location, FILE);
    assert_eq!(err.message, "`state` must stay a map");
}

#[test]
fn event_is_read_only() {
    let err = error_of(r#"event.addSessionLine = "changed"; ()"#);
    assert!(err.location.starts_with(&format!("{FILE}:1:")), "{err}");
    assert!(err.message.contains("event"), "{err}");

    let err = error_of("event = #{}; ()");
    assert!(err.message.contains("event"), "{err}");
}

#[test]
fn evaluation_hands_the_event_back_unchanged() {
    let evaluation = run("()", input());
    let back: Value = rhai::serde::from_dynamic(&evaluation.event).unwrap();
    assert_eq!(back["addSessionLine"]["line"]["text"], "Red wine");
}

// ---- what a rule may call ----

#[test]
fn finish_with_zero_one_and_two_messages_leaves_empty_ones_out() {
    let cases = [
        ("finish()", json!({"polling": {"finished": true}})),
        (
            r#"finish("ok")"#,
            json!({"polling": {"finished": true, "message": "ok"}}),
        ),
        (
            r#"finish("ok", "thanks")"#,
            json!({"polling": {"finished": true, "message": "ok", "customerMessage": "thanks"}}),
        ),
        (
            r#"finish("", "thanks")"#,
            json!({"polling": {"finished": true, "customerMessage": "thanks"}}),
        ),
        (
            r#"finish("ok", "")"#,
            json!({"polling": {"finished": true, "message": "ok"}}),
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(answer_of(source, input()), expected, "{source}");
    }
}

#[test]
fn keep_polling_with_zero_one_and_two_messages_leaves_empty_ones_out() {
    let cases = [
        ("keep_polling()", json!({"polling": {"finished": false}})),
        (
            r#"keep_polling("wait")"#,
            json!({"polling": {"finished": false, "message": "wait"}}),
        ),
        (
            r#"keep_polling("wait", "one moment")"#,
            json!({"polling": {"finished": false, "message": "wait", "customerMessage": "one moment"}}),
        ),
        (
            r#"keep_polling("", "")"#,
            json!({"polling": {"finished": false}}),
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(answer_of(source, input()), expected, "{source}");
    }
}

#[test]
fn helper_answers_can_be_extended() {
    let answer = answer_of(
        r#"let a = finish("ok"); a.lineChanges = [#{ lineId: "l-1" }]; a"#,
        input(),
    );
    assert_eq!(
        answer,
        json!({"polling": {"finished": true, "message": "ok"}, "lineChanges": [{"lineId": "l-1"}]})
    );
}

#[test]
fn reject_ends_the_rule_with_its_code_and_message() {
    let evaluation = run(
        r#"state.before = true; reject("INVALID_ARTICLE", "no such article"); state.after = true; finish()"#,
        input(),
    );
    let Ok(Verdict::Reject(reject)) = evaluation.verdict else {
        panic!("expected a reject, got {:?}", evaluation.verdict);
    };
    assert_eq!(
        reject,
        Reject {
            code: "INVALID_ARTICLE".into(),
            message: "no such article".into()
        }
    );
    // Nothing after the reject ran.
    assert_eq!(to_json(evaluation.state), json!({"before": true}));
}

#[test]
fn reject_from_inside_a_function_is_still_a_reject() {
    let source = r#"
        fn check(article) {
            if article == 2001 { reject("INVALID_ARTICLE", `article ${article} is blocked`); }
            article
        }
        fn outer(a) { check(a) }
        outer(event.addSessionLine.line.articleNumber);
        finish()
    "#;
    let evaluation = run(source, input());
    let Ok(Verdict::Reject(reject)) = evaluation.verdict else {
        panic!("expected a reject, got {:?}", evaluation.verdict);
    };
    assert_eq!(reject.code, "INVALID_ARTICLE");
    assert_eq!(reject.message, "article 2001 is blocked");
}

#[test]
fn unit_result_is_an_empty_answer() {
    assert_eq!(answer_of("()", input()), json!({}));
    assert_eq!(answer_of("let x = 1;", input()), json!({}));
    assert_eq!(answer_of("", input()), json!({}));
}

#[test]
fn a_result_that_is_not_a_map_is_an_error() {
    for (source, type_name) in [("42", "i64"), (r#""done""#, "string"), ("[1]", "array")] {
        let err = error_of(source);
        assert_eq!(err.location, FILE, "{source}");
        assert_eq!(
            err.message,
            format!("the rule returned {type_name}; it must return a map or ()"),
            "{source}"
        );
    }
}

#[test]
fn runtime_errors_name_file_line_and_column() {
    let err = error_of("let a = 1;\nlet b = no_such_function(a);\nb");
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
    assert!(err.message.contains("no_such_function"), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{}: {}", err.location, err.message)
    );
}

/// The info lines of target `pollgate::rule` written while `f` runs on this thread.
fn rule_log_lines(f: impl FnOnce()) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("the buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().expect("the buffer").clone()).expect("UTF-8");
    text.lines()
        .filter(|l| l.contains("pollgate::rule"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn log_accepts_text_and_other_values() {
    let lines = rule_log_lines(|| {
        assert_eq!(
            answer_of(r#"log("hello"); log(42); log(#{a: 1}); ()"#, input()),
            json!({})
        );
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, text) in lines.iter().zip(["hello", "42", "#{\"a\": 1}"]) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(
            line.contains(&format!("pollgate::rule: {text} event=")),
            "{line} should say {text}"
        );
        assert!(line.contains("event=addSessionLine"), "{line}");
        assert!(
            line.contains("key=0123456789abcdef0123456789abcdef"),
            "{line}"
        );
    }
}

#[test]
fn log_lines_are_escaped_so_a_value_cannot_forge_a_line() {
    let lines = rule_log_lines(|| {
        answer_of(r#"log("till says\nINFO forged line"); ()"#, input());
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(r"till says\nINFO forged line"),
        "{}",
        lines[0]
    );
}

#[test]
fn log_keeps_at_most_a_hundred_lines_an_evaluation() {
    let lines = rule_log_lines(|| {
        answer_of("for i in 0..150 { log(i); } ()", input());
    });
    assert_eq!(lines.len(), 101, "{lines:#?}");
    assert!(
        lines[99].contains("pollgate::rule: 99 event="),
        "{}",
        lines[99]
    );
    assert!(
        lines[100].contains("pollgate::rule: 50 more log lines of this evaluation dropped"),
        "{}",
        lines[100]
    );
}

// ---- forward ----

#[test]
fn forward_records_a_request_when_new_and_returns_unit() {
    let evaluation = run(
        r#"let r = forward("approvals"); let again = forward("approvals"); #{ first: r == (), second: again == () }"#,
        input(),
    );
    let Ok(Verdict::Answer(answer)) = evaluation.verdict else {
        panic!("{:?}", evaluation.verdict);
    };
    assert_eq!(to_json(answer), json!({"first": true, "second": true}));
    assert_eq!(
        evaluation.requested,
        vec![ForwardRequest {
            upstream: "approvals".into(),
            body: None
        }],
        "asked twice, requested once"
    );
}

#[test]
fn forward_with_a_body_records_the_body_as_json() {
    let evaluation = run(
        r#"forward("approvals", #{ total: 300, who: meta.subscription }); ()"#,
        input(),
    );
    assert!(evaluation.verdict.is_ok());
    let [request] = evaluation.requested.as_slice() else {
        panic!("one request: {:?}", evaluation.requested);
    };
    assert_eq!(request.upstream, "approvals");
    let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body, json!({"total": 300, "who": "shop"}));
}

#[test]
fn forward_returns_unit_while_the_forward_is_pending() {
    let mut input = input();
    input.forwards = vec![("approvals".into(), None)];
    let evaluation = run(r#"#{ pending: forward("approvals") == () }"#, input);
    let Ok(Verdict::Answer(answer)) = evaluation.verdict else {
        panic!("{:?}", evaluation.verdict);
    };
    assert_eq!(to_json(answer), json!({"pending": true}));
    assert!(
        evaluation.requested.is_empty(),
        "a pending forward is not requested again"
    );
}

#[test]
fn forward_returns_the_reply_map_once_done() {
    let reply = json!({"ok": true, "status": 200, "body": {"approved": true, "manager": "Ann"}, "error": null, "elapsed_ms": 12});
    let mut input = input();
    input.forwards = vec![("approvals".into(), Some(dynamic(&reply)))];
    let evaluation = run(
        r#"let r = forward("approvals"); #{ ok: r.ok, status: r.status, manager: r.body.manager, error: r.error == (), elapsed: r.elapsed_ms }"#,
        input,
    );
    let Ok(Verdict::Answer(answer)) = evaluation.verdict else {
        panic!("{:?}", evaluation.verdict);
    };
    assert_eq!(
        to_json(answer),
        json!({"ok": true, "status": 200, "manager": "Ann", "error": true, "elapsed": 12})
    );
    assert!(evaluation.requested.is_empty());
}

#[test]
fn forward_is_a_no_op_when_forwarding_is_off() {
    let mut input = input();
    input.upstreams = None;
    let evaluation = run(
        r#"#{ a: forward("approvals") == (), b: forward("nowhere", #{}) == () }"#,
        input,
    );
    let Ok(Verdict::Answer(answer)) = evaluation.verdict else {
        panic!("{:?}", evaluation.verdict);
    };
    assert_eq!(to_json(answer), json!({"a": true, "b": true}));
    assert!(evaluation.requested.is_empty());
}

#[test]
fn forward_to_an_unknown_upstream_is_an_error() {
    let err = error_of(r#"forward("nowhere")"#);
    assert!(err.location.starts_with(&format!("{FILE}:1:")), "{err}");
    assert!(
        err.message
            .contains("forward(\"nowhere\"): no such upstream under `upstreams:`"),
        "{err}"
    );
}

// ---- limits ----

#[test]
fn an_infinite_loop_is_stopped_by_the_operation_limit() {
    let limits = Limits {
        max_operations: 10_000,
        timeout: Duration::from_secs(30), // generous: only the operation count can stop it
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let started = Instant::now();
    let err = error_of_with(&engine, "let x = 0;\nloop { x += 1; }", input());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err.message,
        "operation limit exceeded (limits.max_operations)"
    );
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_default_limits_in_bounded_time() {
    let started = Instant::now();
    let err = error_of("loop {}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.message.contains("limit exceeded"), "{err}");
    assert!(err.location.starts_with(&format!("{FILE}:1:")), "{err}");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_wall_clock_without_an_operation_limit() {
    let limits = Limits {
        max_operations: 0, // unlimited: only the clock can stop it
        timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let started = Instant::now();
    let err = error_of_with(&engine, "let x = 0;\nloop { x += 1; }", input());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.message, "time limit exceeded (limits.timeout = 20ms)");
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
}

#[test]
fn deep_recursion_is_stopped() {
    let err = error_of("fn down(n) { down(n + 1) }\ndown(0)");
    assert!(err.location.starts_with(&format!("{FILE}:")), "{err}");
    assert_eq!(err.message, "Stack overflow");
}

#[test]
fn huge_strings_are_stopped() {
    let err = error_of("let s = \"xxxxxxxx\";\nloop { s += s; }");
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
    assert_eq!(err.message, "Length of string too large");
}

#[test]
fn huge_arrays_are_stopped() {
    let err = error_of("let a = [1, 2, 3, 4];\nloop { a += a; }");
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
    assert_eq!(err.message, "Size of array/BLOB too large");
}

#[test]
fn huge_maps_are_stopped() {
    let limits = Limits {
        max_map_size: 10,
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let err = error_of_with(
        &engine,
        "let m = #{};\nfor i in 0..100 { let one = #{}; one[`k${i}`] = i; m += one; }\nm",
        input(),
    );
    assert!(err.location.starts_with(&format!("{FILE}:2:")), "{err}");
    assert_eq!(err.message, "Size of object map too large");
}

#[test]
fn an_engine_keeps_working_after_a_rule_hit_a_limit() {
    let engine = engine();
    let bad = compile(&engine, "loop {}");
    let good = compile(&engine, "finish()");
    assert!(engine.evaluate(&bad, input()).verdict.is_err());
    let Ok(Verdict::Answer(answer)) = engine.evaluate(&good, input()).verdict else {
        panic!("the good rule failed after the bad one");
    };
    assert_eq!(to_json(answer), json!({"polling": {"finished": true}}));
}

// ---- hostile rules (GATEWAY.md 12) ----

fn run_on_pool(engine: &RuleEngine, source: &str, input: Input) -> Evaluation {
    let rule = compile(engine, source);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(engine.run(&rule, input))
}

fn pool_error(engine: &RuleEngine, source: &str) -> RuleError {
    match run_on_pool(engine, source, input()).verdict {
        Err(e) => e,
        Ok(v) => panic!("expected a rule error, got {v:?}"),
    }
}

#[test]
fn rules_run_on_the_pool_with_stacks_sized_for_the_size_limits() {
    let engine = engine();
    let Ok(Verdict::Answer(answer)) = run_on_pool(&engine, "#{ok: 1}", input()).verdict else {
        panic!("the rule failed on the pool");
    };
    assert_eq!(to_json(answer), json!({"ok": 1}));
    // 10,000 arrays + 10,000 maps of nesting at 16 KiB a level.
    assert_eq!(engine.pool_size().stack_bytes, 20_000 * 16 * 1024);
    assert!(engine.pool_size().threads >= 2);
}

#[test]
fn data_nested_inside_a_sort_comparator_does_not_overflow_the_stack() {
    // GATEWAY.md 12 / issue 8: this aborted the process with a stack overflow.
    let source = "let x = []; let t = []; for i in 0..500 { t.push((i * 7919) % 10007); }\n\
                  t.sort(|p, q| { x = [#{a: take(x)}]; p - q }); ()";
    let started = Instant::now();
    let err = pool_error(&engine(), source);
    assert!(
        err.message.starts_with("time limit exceeded") || err.message.contains("too large"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn deeply_nested_data_is_built_compared_printed_and_dropped_without_overflow() {
    // Small size limits keep the test quick; the stack is sized from them.
    let limits = Limits {
        max_operations: 0,
        max_array_size: 1_500,
        max_map_size: 1_500,
        max_string_size: 10_000_000,
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let source = "let x = []; for i in 0..1490 { x = [#{a: take(x)}]; }\n\
                  let same = x == x; let text = x.to_string(); let y = x; y.push(1);\n\
                  #{same: same, length: text.len() > 0}";
    let Ok(Verdict::Answer(answer)) = run_on_pool(&engine, source, input()).verdict else {
        panic!("the deep rule failed");
    };
    assert_eq!(to_json(answer), json!({"same": true, "length": true}));
}

#[test]
fn a_sort_comparator_cannot_escape_the_time_limit() {
    let limits = Limits {
        max_operations: 0,
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let source = "let big = []; for i in 0..1500 { big.push((i * 7919) % 10007); }\n\
                  big.sort(|a, b| {\n\
                    let s = []; for i in 0..1000 { s.push((i * 31) % 1009); }\n\
                    s.sort(|c, d| c - d); s.sort(|c, d| d - c); a - b });\n\
                  finish(\"sorted\")";
    let started = Instant::now();
    let err = pool_error(&engine, source);
    assert_eq!(err.message, "time limit exceeded (limits.timeout = 50ms)");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_sort_comparator_cannot_escape_the_operation_limit() {
    let limits = Limits {
        max_operations: 10_000,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let err = pool_error(
        &engine,
        "let t = []; for i in 0..100 { t.push(i); }\nt.sort(|a, b| { let n = 0; loop { n += 1; } })",
    );
    assert_eq!(
        err.message,
        "operation limit exceeded (limits.max_operations)"
    );
}

#[test]
fn the_builtin_sort_still_sorts_with_a_comparer() {
    let answer = answer_of(
        "let t = [3, 1, 2]; t.sort(|a, b| a - b); let u = [1, 3, 2]; u.sort_by(|a, b| a > b);\n#{t: t, u: u}",
        input(),
    );
    assert_eq!(answer, json!({"t": [1, 2, 3], "u": [3, 2, 1]}));
}

#[test]
fn an_answer_value_without_a_json_form_is_a_rule_error() {
    let err = error_of("#{t: timestamp()}");
    assert_eq!(err.location, FILE);
    assert_eq!(
        err.message,
        "the answer holds a value of type timestamp, which has no JSON form"
    );
    let err = error_of("state.f = Fn(\"finish\"); finish()");
    assert_eq!(
        err.message,
        "`state` holds a value of type Fn, which has no JSON form"
    );
}

#[test]
fn state_deeper_than_max_state_depth_is_a_rule_error() {
    let limits = Limits {
        max_state_depth: 4,
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let rule = compile(&engine, "state.a = #{b: #{c: 1}}; finish()");
    assert!(engine.evaluate(&rule, input()).verdict.is_ok());
    let evaluation = engine.evaluate(
        &compile(
            &engine,
            "state.a = #{b: #{c: #{d: 1}}}; state.a.b.c.d = [1]; finish()",
        ),
        input(),
    );
    let err = evaluation.verdict.expect_err("too deep");
    assert_eq!(
        err.message,
        "`state` is nested deeper than limits.max_state_depth (4)"
    );
    assert!(
        evaluation.state.is_empty(),
        "a failed rule's state is not kept"
    );
}

#[test]
fn an_answer_deeper_than_max_state_depth_is_a_rule_error() {
    let limits = Limits {
        max_state_depth: 2,
        ..Limits::default()
    };
    let engine = RuleEngine::new(&limits);
    let err = error_of_with(&engine, "#{a: #{b: #{c: 1}}}", input());
    assert_eq!(
        err.message,
        "the answer is nested deeper than limits.max_state_depth (2)"
    );
}

#[test]
fn a_rule_error_summary_never_quotes_the_calls_values() {
    let mut call = input();
    let mut event = call.event.clone().cast::<Map>();
    event.insert("code".into(), "ABCDEFGH".into());
    call.event = Dynamic::from_map(event);
    let engine = engine();
    let err = error_of_with(&engine, "parse_int(event.code)", call);
    assert!(err.message.contains("ABCDEFGH"), "{err}");
    assert!(!err.summary.contains("ABCDEFGH"), "{}", err.summary);
    assert_eq!(
        err.summary,
        "arithmetic error (a number that does not parse, overflow or division by zero)"
    );
    let thrown = error_of("throw event.event.eventTimestamp");
    assert_eq!(thrown.summary, "the rule threw an error");
    let api = error_of(r#"forward("nowhere")"#);
    assert_eq!(
        api.summary,
        "forward(\"nowhere\"): no such upstream under `upstreams:`"
    );
}

/// Runs `f` on a thread marked like the gateway's workers (a stack for a slice).
fn on_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(inline::WORKER_STACK)
        .spawn(move || {
            inline::mark_thread(inline::WORKER_STACK);
            f()
        })
        .expect("a worker thread")
        .join()
        .expect("the worker thread ran")
}

#[test]
fn a_quick_rule_on_a_worker_thread_needs_no_rule_thread() {
    let (answer, started) = on_worker(|| {
        let engine = engine();
        let evaluation = run_on_pool(&engine, "keep_polling(\"quick\")", input());
        (
            evaluation.verdict.map(|v| format!("{v:?}")),
            engine.pool_started(),
        )
    });
    assert!(answer.is_ok());
    assert!(!started, "a quick rule went to the pool");
}

#[test]
fn a_rule_past_its_slice_runs_again_from_the_start_on_the_pool() {
    let (result, started) = on_worker(|| {
        // Well past the slice (1 000 operations), far inside a time limit no load reaches:
        // this is about the slice, not the limit.
        let engine = RuleEngine::new(&Limits {
            timeout: std::time::Duration::from_secs(10),
            ..Limits::default()
        });
        let source = "state.n = (state.n ?? 0) + 1; forward(\"approvals\");\n\
                      let x = 0; for i in 0..2000 { x += i; }\n\
                      finish(`sum ${x}`)";
        let evaluation = run_on_pool(&engine, source, input());
        let answer = match evaluation.verdict {
            Ok(Verdict::Answer(map)) => to_json(map),
            other => panic!("the rule failed: {other:?}"),
        };
        let state = to_json(evaluation.state);
        (
            (answer, state, evaluation.requested.len()),
            engine.pool_started(),
        )
    });
    assert!(started, "a long rule stayed on the worker");
    let (answer, state, requested) = result;
    assert_eq!(
        answer,
        json!({"polling": {"finished": true, "message": "sum 1999000"}})
    );
    // The spent slice left no trace: state counted once, the forward asked for once.
    assert_eq!(state, json!({"n": 1}));
    assert_eq!(requested, 1);
}

#[test]
fn hostile_rules_on_a_worker_thread_are_stopped_by_their_limits() {
    let err = on_worker(|| {
        let source = "let x = []; let t = []; for i in 0..500 { t.push((i * 7919) % 10007); }\n\
                      t.sort(|p, q| { x = [#{a: take(x)}]; p - q }); ()";
        pool_error(&engine(), source)
    });
    assert!(
        err.message.starts_with("time limit exceeded") || err.message.contains("too large"),
        "{err}"
    );
}

#[test]
fn deep_input_compared_on_a_worker_thread_does_not_overflow() {
    // Whether the slice ends on the worker or runs out there (a debug build is slow) and
    // the rule goes to the pool, 360 levels of comparison fit the stacks.
    let verdict = on_worker(|| {
        let mut deep = json!(1);
        for _ in 0..120 {
            deep = json!({"a": [deep]});
        }
        let mut call = input();
        call.event = dynamic(&deep);
        let source =
            "let x = [event, event, #{b: event}]; #{same: x == x, text: x.to_string().len() > 0}";
        // A debug build on a loaded machine is slow: time is not what this tests.
        let limits = Limits {
            timeout: Duration::from_secs(20),
            ..Limits::default()
        };
        run_on_pool(&RuleEngine::new(&limits), source, call)
            .verdict
            .map(|v| format!("{v:?}"))
    });
    assert!(verdict.is_ok(), "{verdict:?}");
}

#[test]
fn forward_calls_naming_an_unknown_upstream_are_found_at_the_call_and_nowhere_else() {
    let source = "// forward(\"in_a_comment\")\nlet s = \"forward(\\\"in_a_string\\\")\";\nlet a = forward(\"approvals\");\nif a == () {\n    forward(\"codez\", #{x: 1});\n}\nfn helper() { forward(\"in_a_function\") }\nlet name = \"computed\";\nforward(name);\nfinish()\n";
    let known = |name: &str| name == "approvals";
    let shown: Vec<String> = compile(&engine(), source)
        .unknown_upstreams(&known)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        vec![
            format!("{FILE}:5:5: forward(\"codez\"): unknown upstream `codez` (not under `upstreams:`)"),
            format!("{FILE}:7:15: forward(\"in_a_function\"): unknown upstream `in_a_function` (not under `upstreams:`)"),
        ]
    );
    // The same check without an engine, for a config that has problems of its own.
    let checked: Vec<String> = check(Path::new(FILE), source, &known)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(checked, shown);
    assert_eq!(
        check(Path::new(FILE), "let x = ;", &known)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![format!("{FILE}:1:9: Unexpected ';'")]
    );
}
