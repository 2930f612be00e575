//! What forwarding adds to a polling conversation (GATEWAY.md 5), through the real HTTP
//! server: a gateway on 127.0.0.1:0 and a local mock upstream that answers at once, both
//! on a tokio runtime inside the bench. Each iteration is one new conversation.
//!
//! - `polling_conversation/without_forward`: two calls, a rule answers "keep polling" then
//!   "finished" (the baseline: two signed calls, two rule runs, the store).
//! - `polling_conversation/with_forward`: the same two calls; the first also starts the
//!   forward and holds for its reply, the second reads the reply and finishes. The
//!   difference to the baseline is the forward: claim, sign, background task, HTTP to
//!   the upstream, record, wake the held call.
//! - `polling_conversation/reply_mapping`: no rule, `hold: 1s`: the first call starts the
//!   forward and answers with the reply; the second is a replay of that final answer.
//!
//! `cargo bench --bench forward -- --noplot`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{body, Gateway, MockReply, MockUpstream, Till};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const RULE: &str = r#"
let reply = forward("backend");
if poll.attempt == 1 || reply == () {
    keep_polling("Asking the back office")
} else {
    finish(reply.body.message)
}
"#;

const BASELINE_RULE: &str = r#"
if poll.attempt == 1 { keep_polling("Asking the back office") } else { finish("Done") }
"#;

fn config(url: &str) -> String {
    format!(
        "events:
  withoutForward:
    rule: baseline.rhai
    polling: {{}}
  withForward:
    rule: forward.rhai
    forward: backend
    hold: 1s
    polling: {{}}
  replyMapping:
    forward: backend
    hold: 1s
    polling: {{}}
upstreams:
  backend:
    url: {url}
    timeout: 2s
    retries: 0
"
    )
}

/// An upstream that answers every request at once. (The mock skips the timer for no delay:
/// tokio's timer has millisecond ticks, and a zero sleep made `with_forward` measure about
/// 2.2 ms instead of 0.45 ms.)
async fn fast_upstream() -> MockUpstream {
    MockUpstream::start(|_| {
        MockReply::json(
            200,
            json!({"polling": {"finished": true, "message": "Checked"}}),
        )
    })
    .await
}

/// One conversation of two calls: the first must keep polling (or, with
/// `first_finishes`, already be final), the second must be finished.
async fn conversation(till: &Till, event: &str, n: u32, first_finishes: bool) {
    let first = till.call_json(event, &body(n, 1)).await;
    assert_eq!(first.finished(), Some(first_finishes), "{event} call 1");
    let second = till.call_json(event, &body(n, 2)).await;
    assert_eq!(second.finished(), Some(true), "{event} call 2");
}

fn forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (upstream, gw) = rt.block_on(async {
        let upstream = fast_upstream().await;
        let files = [("baseline.rhai", BASELINE_RULE), ("forward.rhai", RULE)];
        let gw = Gateway::start(&config(&upstream.url()), &files).await;
        (upstream, gw)
    });
    let till = gw.till();
    let next = AtomicU32::new(0);

    let mut group = c.benchmark_group("polling_conversation");
    for (name, event, first_finishes) in [
        ("without_forward", "withoutForward", false),
        ("with_forward", "withForward", false),
        ("reply_mapping", "replyMapping", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        conversation(&till, event, n, first_finishes).await;
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    let forwards = upstream.count();
    let conversations = next.load(Ordering::Relaxed);
    eprintln!("forward bench: {conversations} conversations, {forwards} upstream requests");
    rt.block_on(gw.stop());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = forward
}
criterion_main!(benches);
