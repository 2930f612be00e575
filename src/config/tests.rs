//! Config validation: every problem names the file and the key.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_owned())
}

#[test]
fn the_shipped_example_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/pollgate.yaml");
    let config = Config::load(path, &|_| None).expect("rules/pollgate.yaml loads");
    assert!(config.events.contains_key("*"));
    assert!(config.subscriptions["example_subscription"].is_demo);
}

/// The config file name every problem below names.
const FILE: &str = "conf/pollgate.yaml";

/// A subscription with the demo secret, so a snippet only needs what it tests.
const SUBSCRIPTION: &str =
    "subscriptions:\n  shop:\n    secret: ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz\n";

fn parse(text: &str) -> Result<Config, Problems> {
    Config::from_text(FILE, text, &env)
}

/// The problems of `text` exactly as a user sees them, one line each.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(problems) => {
            let shown = problems.to_string();
            let lines: Vec<String> = shown.lines().map(str::to_owned).collect();
            assert_eq!(lines.len(), problems.0.len(), "one line a problem: {shown}");
            lines
        }
    }
}

/// The one problem of `text` as the user sees it.
fn problem(text: &str) -> String {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

/// `text` after the demo subscription.
fn with_subscription(text: &str) -> String {
    format!("{SUBSCRIPTION}{text}")
}

#[test]
fn unknown_top_level_key_is_reported_with_line_and_column() {
    let text = format!("{SUBSCRIPTION}servr:\n  listen: 127.0.0.1:8080\n");
    let shown = problem(&text);
    assert!(
        shown.starts_with(&format!(
            "{FILE}:4:1: unknown field `servr`, expected one of "
        )),
        "{shown}"
    );
    assert!(shown.contains("`server`"), "names the known keys: {shown}");
}

#[test]
fn unknown_nested_key_is_reported_with_line_and_column() {
    let text = with_subscription("server:\n  listen: 127.0.0.1:8080\n  max_body: 10\n");
    let shown = problem(&text);
    assert!(
        shown.starts_with(&format!(
            "{FILE}:6:3: server: unknown field `max_body`, expected one of "
        )),
        "{shown}"
    );
    assert!(shown.contains("`max_body_bytes`"), "{shown}");
}

#[test]
fn unknown_key_inside_an_event_is_reported_with_line_and_column() {
    let text = with_subscription(
        "events:\n  scanCode:\n    respond: {}\n    polling: {timeout: 1s, timout_message: x}\n",
    );
    let shown = problem(&text);
    assert_eq!(
        shown,
        format!("{FILE}:7:28: events.scanCode.polling: unknown field `timout_message`, expected one of `timeout`, `timeout_message`, `pending_message`")
    );
}

#[test]
fn missing_rule_file_names_the_key_and_the_resolved_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = with_subscription("events:\n  scanCode:\n    rule: scanCode.rhai\n");
    let err = Config::from_text(&path, &text, &env).unwrap_err();
    let missing = dir.path().join("scanCode.rhai");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: events.scanCode.rule: cannot read rule file {}: No such file or directory (os error 2)",
            path.display(),
            missing.display()
        )
    );
}

#[test]
fn rule_and_respond_together_are_refused() {
    let text = with_subscription("events:\n  scanCode:\n    rule: a.rhai\n    respond: {}\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: events.scanCode: has both `rule` and `respond`; choose one")
    );
}

#[test]
fn an_event_without_rule_respond_or_forward_is_refused() {
    let text = with_subscription("events:\n  scanCode:\n    hold: 1s\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: events.scanCode: needs `rule`, `respond` or `forward`")
    );
}

#[test]
fn a_respond_that_is_not_a_map_is_refused() {
    let text = with_subscription("events:\n  scanCode:\n    respond: [1, 2]\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: events.scanCode.respond: must be a map (the answer body)")
    );
}

#[test]
fn a_secret_that_is_not_base64_is_refused() {
    let text = "subscriptions:\n  shop:\n    secret: \"not*base64!\"\n";
    assert_eq!(
        problem(text),
        format!("{FILE}: subscriptions.shop.secret: secret is not valid base64 (set `encoding: utf8` to use the text as it is)")
    );
}

#[test]
fn the_same_secret_text_is_accepted_as_utf8() {
    let text = "subscriptions:\n  shop:\n    secret: \"not*base64!\"\n    encoding: utf8\n";
    let config = parse(text).unwrap();
    assert!(config.subscriptions["shop"].secret.has_key(b"not*base64!"));
}

#[test]
fn an_empty_secret_is_refused() {
    for secret in ["\"\"", "\"   \""] {
        let text = format!("subscriptions:\n  shop:\n    secret: {secret}\n");
        assert_eq!(
            problem(&text),
            format!("{FILE}: subscriptions.shop.secret: secret is empty"),
            "secret: {secret}"
        );
    }
}

#[test]
fn a_config_without_subscriptions_is_refused() {
    assert_eq!(
        problem("events: {}\n"),
        format!("{FILE}: subscriptions: no subscription is configured; no till could call")
    );
}

#[test]
fn a_missing_variable_names_the_variable_and_the_key() {
    let text = "subscriptions:\n  shop:\n    secret: ${MPLUS_SECRET}\n";
    assert_eq!(
        problem(text),
        format!("{FILE}: subscriptions.shop.secret: environment variable MPLUS_SECRET is not set (set it, or write ${{MPLUS_SECRET:-default}})")
    );
}

#[test]
fn set_variables_and_defaults_are_substituted() {
    let text = with_subscription(
        "server:\n  listen: ${UNSET:-127.0.0.1:8181}\n  base_path: /${SET}/hooks\nadmin:\n  listen: ${UNSET_TOO:-127.0.0.1:9191}\n",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8181".parse().unwrap());
    assert_eq!(config.server.base_path, "/value/hooks");
    assert_eq!(config.admin.listen, "127.0.0.1:9191".parse().unwrap());
}

#[test]
fn a_set_variable_wins_over_its_default() {
    let text = with_subscription("server:\n  base_path: /${SET:-fallback}\n");
    assert_eq!(parse(&text).unwrap().server.base_path, "/value");
}

#[test]
fn a_malformed_variable_reference_is_refused() {
    let text = with_subscription("server:\n  base_path: /${OPEN\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: server.base_path: malformed variable reference `${{OPEN`")
    );
}

#[test]
fn a_bad_listen_address_is_refused() {
    let text =
        with_subscription("server:\n  listen: localhost\nadmin:\n  listen: 127.0.0.1:99999\n");
    assert_eq!(
        problems(&text),
        vec![
            format!("{FILE}: server.listen: `localhost` is not an address like 127.0.0.1:8080"),
            format!(
                "{FILE}: admin.listen: `127.0.0.1:99999` is not an address like 127.0.0.1:8080"
            ),
        ]
    );
}

#[test]
fn a_bad_base_path_is_refused() {
    for base in ["webhooks", "/a//b", "/hooks?x=1"] {
        let text = with_subscription(&format!("server:\n  base_path: \"{base}\"\n"));
        assert_eq!(
            problem(&text),
            format!("{FILE}: server.base_path: `{base}` is not a path like /webhooks"),
        );
    }
}

#[test]
fn a_trailing_slash_on_base_path_is_dropped() {
    let text = with_subscription("server:\n  base_path: /webhooks/\n");
    assert_eq!(parse(&text).unwrap().server.base_path, "/webhooks");
}

#[test]
fn an_upstream_url_that_is_not_http_is_refused() {
    let text = with_subscription("upstreams:\n  backend:\n    url: ftp://127.0.0.1/mplus\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: upstreams.backend.url: `ftp://127.0.0.1/mplus` is not an http:// or https:// URL")
    );
}

#[test]
fn an_unparsable_upstream_url_is_refused() {
    let text = with_subscription("upstreams:\n  backend:\n    url: not a url\n");
    assert_eq!(
        problem(&text),
        format!(
            "{FILE}: upstreams.backend.url: `not a url` is not a URL (relative URL without a base)"
        )
    );
}

#[test]
fn an_upstream_url_loses_its_trailing_slash() {
    let text = with_subscription("upstreams:\n  backend:\n    url: http://127.0.0.1:9000/mplus/\n");
    let config = parse(&text).unwrap();
    assert_eq!(
        config.upstreams["backend"].url.as_str(),
        "http://127.0.0.1:9000/mplus"
    );
}

#[test]
fn forward_to_an_unknown_upstream_is_refused() {
    let text = with_subscription(
        "upstreams:\n  backend:\n    url: http://127.0.0.1:9000\nevents:\n  startPayment:\n    forward: approvals\n",
    );
    assert_eq!(
        problem(&text),
        format!("{FILE}: events.startPayment.forward: unknown upstream `approvals` (not under `upstreams:`)")
    );
}

#[test]
fn forward_alone_answers_with_the_reply() {
    let text = with_subscription(
        "upstreams:\n  backend:\n    url: http://127.0.0.1:9000\nevents:\n  startPayment:\n    forward: backend\n",
    );
    let config = parse(&text).unwrap();
    let event = &config.events["startPayment"];
    assert!(matches!(event.answer, Answer::Reply));
    assert_eq!(event.forward.as_deref(), Some("backend"));
}

#[test]
fn redis_store_without_url_is_refused() {
    let text = with_subscription("state:\n  store: redis\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.url: `store: redis` needs `url: redis://host:6379`")
    );
}

#[test]
fn redis_store_with_a_non_redis_url_is_refused() {
    let text = with_subscription("state:\n  store: redis\n  url: http://127.0.0.1:6379\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.url: `http://127.0.0.1:6379` is not a redis:// URL")
    );
}

#[test]
fn redis_store_with_url_and_prefix_loads() {
    let text = with_subscription(
        "state:\n  store: redis\n  url: redis://127.0.0.1:6379\n  prefix: ${SET}\n  ttl: 10m\n",
    );
    let state = parse(&text).unwrap().state;
    assert_eq!(state.ttl, Duration::from_secs(600));
    assert!(
        matches!(&state.store, Store::Redis { url, prefix, .. } if url == "redis://127.0.0.1:6379" && prefix == "value"),
        "{:?}",
        state.store
    );
}

#[test]
fn a_bad_duration_is_reported_with_line_and_column() {
    let text = with_subscription("state:\n  ttl: forever\n");
    let shown = problem(&text);
    assert!(
        shown.starts_with(&format!(
            "{FILE}:5:3: state: `forever` is not a duration like 250ms, 2s or 10m ("
        )),
        "{shown}"
    );
}

#[test]
fn durations_are_read_as_written() {
    let text = with_subscription(
        "events:\n  addSessionLine:\n    respond: {}\n    hold: 250ms\n    polling:\n      timeout: 2s\nstate:\n  ttl: 10m\n",
    );
    let config = parse(&text).unwrap();
    let event = &config.events["addSessionLine"];
    assert_eq!(event.hold, Some(Duration::from_millis(250)));
    assert_eq!(
        event.polling.as_ref().unwrap().timeout,
        Duration::from_secs(2)
    );
    assert_eq!(config.state.ttl, Duration::from_secs(600));
}

#[test]
fn an_unknown_state_key_part_is_refused_with_the_known_parts() {
    let text = with_subscription("state:\n  key: [session, colour]\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.key: unknown key part `colour` (known: subscription, event, branch, workplace, instance, session, timestamp, object, dialog)")
    );
}

#[test]
fn zero_values_are_refused() {
    let text = with_subscription(
        "server:\n  max_body_bytes: 0\nstate:\n  ttl: 0s\n  max_conversations: 0\nlimits:\n  timeout: 0ms\n",
    );
    assert_eq!(
        problems(&text),
        vec![
            format!("{FILE}: server.max_body_bytes: must be at least 1"),
            format!("{FILE}: state.ttl: must be more than 0"),
            format!("{FILE}: state.max_conversations: must be at least 1"),
            format!("{FILE}: limits.timeout: must be more than 0"),
        ]
    );
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = "\
server:
  listen: nowhere
subscriptions:
  shop:
    secret: ${MPLUS_SECRET}
upstreams:
  backend:
    url: ftp://x
events:
  scanCode:
    forward: missing
  startPayment: {}
state:
  key: [colour]
";
    assert_eq!(
        problems(text),
        vec![
            format!("{FILE}: server.listen: `nowhere` is not an address like 127.0.0.1:8080"),
            format!("{FILE}: subscriptions.shop.secret: environment variable MPLUS_SECRET is not set (set it, or write ${{MPLUS_SECRET:-default}})"),
            format!("{FILE}: upstreams.backend.url: `ftp://x` is not an http:// or https:// URL"),
            format!("{FILE}: events.scanCode.forward: unknown upstream `missing` (not under `upstreams:`)"),
            format!("{FILE}: events.startPayment: needs `rule`, `respond` or `forward`"),
            format!("{FILE}: state.key: unknown key part `colour` (known: subscription, event, branch, workplace, instance, session, timestamp, object, dialog)"),
        ]
    );
}

#[test]
fn relative_rule_paths_are_resolved_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/scan.rhai"), "finish()").unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = with_subscription("events:\n  scanCode:\n    rule: rules/scan.rhai\n");
    // Loaded from another working directory's point of view: only the config's folder counts.
    let config = Config::from_text(&path, &text, &env).unwrap();
    assert_eq!(config.dir, dir.path());
    let Answer::Rule { path: rule, source } = &config.events["scanCode"].answer else {
        panic!("a rule");
    };
    assert_eq!(rule, &dir.path().join("rules/scan.rhai"));
    assert_eq!(&**source, "finish()");
}

#[test]
fn a_rule_path_may_come_from_a_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("value.rhai"), "()").unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = with_subscription("events:\n  \"*\":\n    rule: ${SET}.rhai\n");
    let config = Config::from_text(&path, &text, &env).unwrap();
    assert!(config.event("anyEvent").is_some(), "\"*\" covers any event");
    let Answer::Rule { path: rule, .. } = &config.events["*"].answer else {
        panic!("a rule");
    };
    assert_eq!(rule, &dir.path().join("value.rhai"));
}

#[test]
fn load_reports_an_unreadable_config_file() {
    let err = Config::load("/nonexistent/pollgate.yaml", &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/pollgate.yaml: cannot read config file: No such file or directory (os error 2)"
    );
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let config = parse(SUBSCRIPTION).unwrap();
    assert_eq!(config.server.base_path, "/webhooks");
    assert_eq!(config.server.max_body_bytes, 1_048_576);
    assert_eq!(config.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(
        config.state.store,
        Store::Memory {
            max_conversations: 1_000_000
        }
    );
    assert_eq!(config.state.ttl, Duration::from_secs(15 * 60));
    assert_eq!(config.state.key.len(), KeyPart::ALL.len());
    assert!(config.events.is_empty());
}

#[test]
fn max_conversations_is_read_for_the_memory_store() {
    let text = with_subscription("state:\n  store: memory\n  max_conversations: 2500\n");
    assert_eq!(
        parse(&text).unwrap().state.store,
        Store::Memory {
            max_conversations: 2500
        }
    );
}
