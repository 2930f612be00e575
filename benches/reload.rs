//! A reload of 100 rule files (GATEWAY.md 7: under 100 ms): what `Reloader::reload` does
//! off the call path, `Config::load` then `Runtime::build`, for a config with 100 events,
//! each with its own ten-line rule file.
//!
//! `cargo bench --bench reload -- --noplot`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use pollgate::config::Config;
use pollgate::runtime::Runtime;
use pollgate::telemetry::Metrics;

const EVENTS: usize = 100;

/// Event `i`'s ten-line rule: an age check on its own article list, interpolated messages.
fn rule(i: usize) -> String {
    format!(
        r#"const RESTRICTED = [{a}, {b}, {c}];   // 18+ articles of event {i}
let line = event.addSessionLine ?? #{{}};
let article = line.articleNumber ?? 0;
let counter = event.event?.eventCounter ?? 0;
if RESTRICTED.contains(article) {{
    keep_polling(`Age check {i}: ask for ID (18+) for ${{line.text ?? "this article"}}`, "Please show your ID")
}} else if counter >= 3 {{
    finish(`${{meta.name}}: ${{line.text}} (article ${{article}}) done after ${{counter}} polls`, "Thank you")
}} else {{
    keep_polling(`${{meta.name}}: ${{line.text}} (article ${{article}}), poll ${{counter}}`, "Please wait")
}}
"#,
        a = 2000 + i,
        b = 3000 + i,
        c = 4000 + i,
    )
}

/// Writes `pollgate.yaml` and `rules/event_NNN.rhai` into `dir`; returns the config path.
fn write_config(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules folder");
    let mut yaml = String::from(
        "server: {listen: '127.0.0.1:0'}\nadmin: {listen: '127.0.0.1:0'}\n\
         subscriptions:\n  bench: {secret: 'c2VjcmV0LWtleS1mb3ItYmVuY2g='}\nevents:\n",
    );
    for i in 0..EVENTS {
        let name = format!("event_{i:03}");
        std::fs::write(rules.join(format!("{name}.rhai")), rule(i)).expect("rule file");
        yaml.push_str(&format!(
            "  {name}:\n    rule: rules/{name}.rhai\n    polling: {{timeout: 120s}}\n"
        ));
    }
    let path = dir.join("pollgate.yaml");
    std::fs::write(&path, yaml).expect("config file");
    path
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn bench_reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path());
    // One Metrics for the process, as in the server: a reload resolves existing labels.
    let metrics = Arc::new(Metrics::new());
    let first = Config::load(&path, &no_env).expect("config loads");
    assert_eq!(first.events.len(), EVENTS);
    let built = Runtime::build(first.clone(), &metrics, 1).expect("config builds");
    assert_eq!(built.events.len(), EVENTS);

    let mut group = c.benchmark_group("reload_100_rules");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("config_load_and_runtime_build", |b| {
        let mut generation = 1;
        b.iter(|| {
            generation += 1;
            let config = Config::load(&path, &no_env).expect("config loads");
            Runtime::build(config, &metrics, generation).expect("config builds")
        });
    });
    group.bench_function("config_load", |b| {
        b.iter(|| Config::load(black_box(&path), &no_env).expect("config loads"));
    });
    group.bench_function("runtime_build", |b| {
        b.iter_batched(
            || first.clone(),
            |config| Runtime::build(config, &metrics, 2).expect("config builds"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);
