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
        format!("{FILE}: state.url: `http://127.0.0.1:6379` is not a redis:// or rediss:// URL")
    );
}

#[test]
fn a_rediss_url_with_a_private_ca_loads_the_ca_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = with_subscription(
        "state:\n  store: redis\n  url: rediss://pollgate:s3cret@redis.internal:6380/0\n  ca: ca.pem\n",
    );
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path, &|_| None).unwrap();
    let Store::Redis { server, .. } = &config.state.store else {
        panic!("{:?}", config.state.store)
    };
    let ca = server.ca.as_ref().unwrap();
    assert_eq!(
        (ca.path.clone(), ca.pem.clone()),
        (dir.path().join("ca.pem"), pem.as_bytes().to_vec())
    );
    assert_eq!(
        server.shown(),
        "rediss://pollgate:***@redis.internal:6380/0"
    );
}

#[test]
fn a_missing_or_non_pem_ca_is_refused_naming_state_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.txt"), "not a certificate\n").unwrap();
    let path = dir.path().join("pollgate.yaml");
    for (ca, why) in [
        (
            "missing.pem",
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                dir.path().join("missing.pem").display()
            ),
        ),
        (
            "ca.txt",
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                dir.path().join("ca.txt").display()
            ),
        ),
    ] {
        let text = with_subscription(&format!(
            "state:\n  store: redis\n  url: rediss://127.0.0.1:6380\n  ca: {ca}\n"
        ));
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path, &|_| None).unwrap_err().to_string();
        assert_eq!(e, format!("{}: state.ca: {why}", path.display()));
    }
}

#[test]
fn a_ca_without_rediss_and_cluster_keys_without_redis_are_refused() {
    let text =
        with_subscription("state:\n  store: redis\n  url: redis://127.0.0.1:6379\n  ca: ca.pem\n");
    assert_eq!(
        problem(&text),
        format!(
            "{FILE}: state.ca: trusts a CA for rediss:// URLs, and state.url is redis:// (no TLS)"
        )
    );
    let text = with_subscription("state:\n  cluster: true\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.cluster: needs `store: redis`")
    );
}

#[test]
fn a_list_of_urls_is_a_cluster_and_each_node_is_checked() {
    let text = with_subscription(
        "state:\n  store: redis\n  url: [redis://127.0.0.1:7000, redis://127.0.0.1:7001]\n",
    );
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.url: a list of URLs is the nodes of a Redis Cluster: add `cluster: true`, or give one URL")
    );
    let text = with_subscription(
        "state:\n  store: redis\n  cluster: true\n  url: [redis://127.0.0.1:7000, 127.0.0.1:7001]\n",
    );
    assert_eq!(
        problem(&text),
        format!("{FILE}: state.url[1]: `127.0.0.1:7001` is not a redis:// or rediss:// URL")
    );
    let text = with_subscription(
        "state:\n  store: redis\n  cluster: true\n  url: [redis://127.0.0.1:7000, redis://127.0.0.1:7001]\n",
    );
    let state = parse(&text).unwrap().state;
    assert!(
        matches!(&state.store, Store::Redis { server, .. } if server.cluster && server.urls == ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]),
        "{:?}",
        state.store
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
        matches!(&state.store, Store::Redis { server, prefix, .. } if server.urls == ["redis://127.0.0.1:6379"] && !server.cluster && server.ca.is_none() && prefix == "value"),
        "{:?}",
        state.store
    );
}

#[test]
fn a_bad_duration_is_reported_with_its_full_key_at_its_line() {
    let text = with_subscription("state:\n  ttl: forever\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}:5:3: state.ttl: `forever` is not a duration like 250ms, 2s, 10m or 1h 30m (units: ms, s, m, h, d)")
    );
}

#[test]
fn a_bare_number_is_not_a_duration_and_names_its_own_key_and_line() {
    let text = with_subscription(
        "upstreams:\n  approvals:\n    url: http://127.0.0.1:9000\n    timeout: 10\n",
    );
    assert_eq!(
        problem(&text),
        format!("{FILE}:7:5: upstreams.approvals.timeout: `10` is not a duration: give a unit, like 10s or 10ms")
    );
}

#[test]
fn months_years_and_spelled_out_units_are_not_durations() {
    for (written, why) in [
        (
            "1M",
            "months and years are not accepted; write days, like 30d",
        ),
        (
            "2y",
            "months and years are not accepted; write days, like 30d",
        ),
        ("10 seconds", "units: ms, s, m, h, d"),
        ("1.5s", "units: ms, s, m, h, d"),
        ("\"\"", "units: ms, s, m, h, d"),
    ] {
        let text = with_subscription(&format!("limits:\n  timeout: {written}\n"));
        let shown = written.trim_matches('"');
        assert_eq!(
            problem(&text),
            format!("{FILE}:5:3: limits.timeout: `{shown}` is not a duration like 250ms, 2s, 10m or 1h 30m ({why})"),
            "{written}"
        );
    }
}

#[test]
fn durations_combine_short_units() {
    for (written, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("2s", Duration::from_secs(2)),
        ("10m", Duration::from_secs(600)),
        ("1h 30m", Duration::from_secs(5400)),
        ("1h30m", Duration::from_secs(5400)),
        ("2d", Duration::from_secs(2 * 86_400)),
        ("1s 500ms", Duration::from_millis(1500)),
    ] {
        assert_eq!(parse_duration(written), Ok(expected), "{written}");
    }
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
fn max_state_depth_outside_what_state_can_be_read_back_with_is_refused() {
    for depth in ["0", "101"] {
        let text = with_subscription(&format!("limits:\n  max_state_depth: {depth}\n"));
        assert_eq!(
            problem(&text),
            format!("{FILE}: limits.max_state_depth: must be between 1 and 100 (deeper state could not be read back)")
        );
    }
    let text = with_subscription("limits:\n  max_state_depth: 100\n");
    assert_eq!(parse(&text).expect("valid").limits.max_state_depth, 100);
}

/// An environment with a few more variables than [`env`].
fn env_with(name: &str) -> Option<String> {
    match name {
        "ENC" => Some("utf8".into()),
        "RETRIES" => Some("5".into()),
        "EMPTY" => Some(String::new()),
        "REDIS_URL" => Some("http://:hunter2@10.0.0.5:6379".into()),
        "WATCH" => Some("false".into()),
        _ => env(name),
    }
}

const UPSTREAM: &str = "upstreams:\n  backend:\n    url: http://127.0.0.1:9000\n";

#[test]
fn variables_are_substituted_before_values_are_typed() {
    let text = "subscriptions:\n  shop:\n    secret: ${SET}\n    encoding: ${ENC:-base64}\nupstreams:\n  backend:\n    url: http://127.0.0.1:9000\n    retries: ${RETRIES:-2}\n    timeout: ${UNSET:-3s}\nwatch: ${WATCH}\n";
    let config = Config::from_text(FILE, text, &env_with).expect("valid");
    assert!(config.subscriptions["shop"].secret.has_key(b"value"));
    assert_eq!(config.upstreams["backend"].retries, 5);
    assert_eq!(config.upstreams["backend"].timeout, Duration::from_secs(3));
    assert!(!config.watch);
    // Unset, the defaults are typed the same way.
    let text = format!(
        "subscriptions:\n  shop:\n    secret: ZGVtbw==\n    encoding: ${{UNSET:-base64}}\n{UPSTREAM}    retries: ${{UNSET:-2}}\n"
    );
    let config = Config::from_text(FILE, &text, &env).expect("valid");
    assert!(config.subscriptions["shop"].secret.has_key(b"demo"));
    assert_eq!(config.upstreams["backend"].retries, 2);
}

#[test]
fn a_colon_dash_default_covers_an_empty_variable_and_a_dash_default_does_not() {
    let text = with_subscription("server:\n  base_path: /${EMPTY:-hooks}\n");
    let config = Config::from_text(FILE, &text, &env_with).expect("valid");
    assert_eq!(config.server.base_path, "/hooks");
    let text = with_subscription("server:\n  base_path: /x${EMPTY-hooks}\n");
    let config = Config::from_text(FILE, &text, &env_with).expect("valid");
    assert_eq!(config.server.base_path, "/x");
    let text = with_subscription("server:\n  base_path: /x${UNSET-hooks}\n");
    let config = Config::from_text(FILE, &text, &env_with).expect("valid");
    assert_eq!(config.server.base_path, "/xhooks");
}

#[test]
fn a_missing_variable_in_a_typed_value_names_the_variable_and_the_key() {
    let text = with_subscription(&format!("{UPSTREAM}    retries: ${{RETRIES}}\n"));
    assert_eq!(
        problem(&text),
        format!("{FILE}: upstreams.backend.retries: environment variable RETRIES is not set (set it, or write ${{RETRIES:-default}})")
    );
}

#[test]
fn a_wrong_value_from_the_environment_is_not_shown() {
    let text = with_subscription("state:\n  store: redis\n  url: ${REDIS_URL}\n");
    let shown = Config::from_text(FILE, &text, &env_with)
        .unwrap_err()
        .to_string();
    assert_eq!(
        shown,
        format!("{FILE}: state.url: `${{REDIS_URL}}` is not a redis:// or rediss:// URL (the value from the environment is not shown)")
    );
    assert!(!shown.contains("hunter2"));
}

#[test]
fn a_wrong_type_names_its_key_at_its_line() {
    let text = with_subscription(&format!("{UPSTREAM}    retries: many\n"));
    assert_eq!(
        problem(&text),
        format!(
            "{FILE}:7:5: upstreams.backend.retries: invalid type: string \"many\", expected u32"
        )
    );
}

#[test]
fn a_section_missing_a_required_key_is_reported_at_the_section() {
    let text = with_subscription("upstreams:\n  backend:\n    timeout: 1s\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}:5:3: upstreams.backend: missing field `url`")
    );
}

#[test]
fn every_unknown_key_is_reported_in_file_order() {
    let text = "\
servr:
  listen: 127.0.0.1:8080
subscriptions:
  shop:
    secret: ZGVtbw==
    encodng: utf8
upstreams:
  backend:
    url: http://127.0.0.1:9000
    retry: 2
";
    assert_eq!(
        problems(text),
        vec![
            format!("{FILE}:1:1: unknown field `servr`, expected one of `server`, `admin`, `subscriptions`, `events`, `upstreams`, `state`, `limits`, `watch`, `outbox`"),
            format!("{FILE}:6:5: subscriptions.shop: unknown field `encodng`, expected one of `secret`, `previous_secrets`, `encoding`"),
            format!("{FILE}:10:5: upstreams.backend: unknown field `retry`, expected one of `url`, `timeout`, `retries`, `secret`, `encoding`, `max_connections`, `max_reply_bytes`, `durable`"),
        ]
    );
}

#[test]
fn typos_values_references_variables_and_rule_syntax_are_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scan.rhai"), "let x = ;\nfinish()\n").unwrap();
    std::fs::write(dir.path().join("pay.rhai"), "forward(\"codez\")\n").unwrap();
    let path = dir.path().join("pollgate.yaml");
    let text = "\
server:
  listn: 127.0.0.1:8080
  shutdown_grace: 10
subscriptions:
  shop:
    secret: ${MPLUS_SECRET}
events:
  scanCode:
    rule: scan.rhai
    hold: 1M
  startPayment:
    rule: pay.rhai
    forward: aprovals
upstreams:
  approvals:
    url: http://127.0.0.1:9000
    timout: 1s
";
    // A stand-in for rules::check (config does not depend on rules).
    let check = |rule: &std::path::Path, source: &str, known: &dyn Fn(&str) -> bool| {
        let mut found = Vec::new();
        if source.contains("= ;") {
            found.push(Problem::at_position(rule, 1, 9, "syntax error"));
        }
        if source.contains("codez") && !known("codez") {
            found.push(Problem::at_position(rule, 1, 1, "unknown upstream `codez`"));
        }
        assert!(known("approvals"));
        found
    };
    let err = Config::from_text_checking(&path, text, &env, &check).unwrap_err();
    let (f, scan, pay) = (
        path.display(),
        dir.path().join("scan.rhai"),
        dir.path().join("pay.rhai"),
    );
    assert_eq!(
        err.to_string().lines().collect::<Vec<_>>(),
        vec![
            format!("{f}:2:3: server: unknown field `listn`, expected one of `listen`, `base_path`, `max_body_bytes`, `request_timeout`, `shutdown_grace`, `access_log`, `header_timeout`, `body_timeout`, `idle_timeout`, `max_connections`, `max_buffered_bytes`, `tls`"),
            format!("{f}:3:3: server.shutdown_grace: `10` is not a duration: give a unit, like 10s or 10ms"),
            format!("{f}: subscriptions.shop.secret: environment variable MPLUS_SECRET is not set (set it, or write ${{MPLUS_SECRET:-default}})"),
            format!("{}:1:9: syntax error", scan.display()),
            format!("{f}:10:5: events.scanCode.hold: `1M` is not a duration like 250ms, 2s, 10m or 1h 30m (months and years are not accepted; write days, like 30d)"),
            format!("{}:1:1: unknown upstream `codez`", pay.display()),
            format!("{f}: events.startPayment.forward: unknown upstream `aprovals` (not under `upstreams:`)"),
            format!("{f}:17:5: upstreams.approvals: unknown field `timout`, expected one of `url`, `timeout`, `retries`, `secret`, `encoding`, `max_connections`, `max_reply_bytes`, `durable`"),
        ]
    );
}

#[test]
fn a_yaml_syntax_error_stops_at_its_line() {
    let text = with_subscription("server:\n  listen: [1\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}:6:1: did not find expected ',' or ']', while parsing a flow sequence")
    );
}

#[test]
fn a_url_is_shown_without_its_password() {
    assert_eq!(
        without_password("redis://pollgate:s3cret@10.0.0.5:6379/0"),
        "redis://pollgate:***@10.0.0.5:6379/0"
    );
    assert_eq!(
        without_password("redis://:s3cret@10.0.0.5:6379"),
        "redis://:***@10.0.0.5:6379"
    );
    assert_eq!(
        without_password("redis://10.0.0.5:6379"),
        "redis://10.0.0.5:6379"
    );
}

#[test]
fn an_empty_section_holds_the_defaults_and_a_section_that_is_not_a_mapping_is_refused() {
    let text = with_subscription("server:\nlimits:\nevents:\n");
    let config = parse(&text).expect("empty sections are defaults");
    assert_eq!(config.server.base_path, "/webhooks");
    let text = with_subscription("server: fast\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}:4:1: server: invalid type: string \"fast\", expected a section with the keys `listen`, `base_path`, `max_body_bytes`, `request_timeout`, `shutdown_grace`, `access_log`, `header_timeout`, `body_timeout`, `idle_timeout`, `max_connections`, `max_buffered_bytes`, `tls`")
    );
    assert_eq!(
        problem("- server\n- subscriptions\n"),
        format!(
            "{FILE}: the config must be a mapping of sections like `server:` and `subscriptions:`"
        )
    );
}

#[test]
fn overload_bounds_have_their_defaults() {
    let config = parse(SUBSCRIPTION).unwrap();
    let server = &config.server;
    assert_eq!(server.header_timeout, Duration::from_secs(10));
    assert_eq!(server.body_timeout, Duration::from_secs(10));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections, 10_000);
    assert_eq!(server.max_buffered_bytes, 64 * 1024 * 1024);
}

#[test]
fn buffered_bytes_are_read_as_bytes_or_with_binary_units() {
    for (written, bytes) in [
        ("2097152", 2 << 20),
        ("2048KiB", 2 << 20),
        ("2MiB", 2 << 20),
        ("1 GiB", 1 << 30),
        ("1048576B", 1 << 20),
    ] {
        let text = with_subscription(&format!("server:\n  max_buffered_bytes: {written}\n"));
        assert_eq!(
            parse(&text).unwrap().server.max_buffered_bytes,
            bytes,
            "{written}"
        );
    }
}

#[test]
fn a_bad_or_too_small_buffer_budget_names_its_key() {
    let text = with_subscription("server:\n  max_buffered_bytes: 64MB\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: server.max_buffered_bytes: `64MB` is not a size like 1048576, 512KiB, 64MiB or 1GiB")
    );
    let text = with_subscription("server:\n  max_body_bytes: 2048\n  max_buffered_bytes: 1KiB\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: server.max_buffered_bytes: 1024 is less than server.max_body_bytes (2048); one allowed body must fit")
    );
}

#[test]
fn zero_connection_bounds_are_refused() {
    let text = with_subscription(
        "server:\n  header_timeout: 0s\n  body_timeout: 0s\n  idle_timeout: 0s\n  max_connections: 0\n",
    );
    assert_eq!(
        problems(&text),
        vec![
            format!("{FILE}: server.header_timeout: must be more than 0"),
            format!("{FILE}: server.body_timeout: must be more than 0"),
            format!("{FILE}: server.idle_timeout: must be more than 0"),
            format!("{FILE}: server.max_connections: must be at least 1"),
        ]
    );
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

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let text = with_subscription("admin:\n  listen: 0.0.0.0:9090\n");
    assert_eq!(
        problem(&text),
        format!("{FILE}: admin.token: admin.listen (0.0.0.0:9090) is not a loopback address and no admin.token is set; set a token, or listen on 127.0.0.1")
    );
    let empty = with_subscription("admin:\n  listen: \"[::]:9090\"\n  token: ${UNSET:-}\n");
    assert_eq!(
        problem(&empty),
        format!("{FILE}: admin.token: admin.listen ([::]:9090) is not a loopback address and no admin.token is set; set a token, or listen on 127.0.0.1")
    );
    let set = with_subscription("admin:\n  listen: 0.0.0.0:9090\n  token: ${SET}\n");
    let config = parse(&set).unwrap();
    let token = config.admin.token.as_ref().unwrap();
    assert!(token.matches(b"value"));
    assert!(
        !format!("{config:?}").contains("value"),
        "the token is never in Debug output"
    );
}

#[test]
fn admin_tokens_are_optional_on_loopback() {
    let config = parse(&with_subscription(
        "admin:\n  listen: 127.0.0.1:9090\n  push_token: p\n",
    ))
    .unwrap();
    assert!(config.admin.token.is_none());
    assert!(config.admin.push_token.as_ref().unwrap().matches(b"p"));
    let ipv6 = parse(&with_subscription("admin:\n  listen: \"[::1]:9090\"\n")).unwrap();
    assert!(ipv6.admin.token.is_none());
}

#[test]
fn previous_secrets_are_decoded_like_the_secret_each_problem_under_its_index() {
    let text = "subscriptions:\n  shop:\n    secret: bmV3\n    previous_secrets: [b2xk, \"not base64!\", \"\"]\n";
    assert_eq!(
        problems(text),
        vec![
            format!("{FILE}: subscriptions.shop.previous_secrets[1]: secret is not valid base64 (set `encoding: utf8` to use the text as it is)"),
            format!("{FILE}: subscriptions.shop.previous_secrets[2]: secret is empty"),
        ]
    );
    let ok = "subscriptions:\n  shop:\n    secret: new\n    encoding: utf8\n    previous_secrets: [old]\n";
    let config = parse(ok).unwrap();
    let shop = &config.subscriptions["shop"];
    let signed_old = crate::signature::Secret::from_key(b"old").sign(b"{}");
    assert_eq!(shop.verify(signed_old.as_bytes(), b"{}"), Ok(1));
    assert_eq!(shop.signer(1).sign(b"{}"), signed_old);
    let signed_new = shop.secret.sign(b"{}");
    assert_eq!(shop.verify(signed_new.as_bytes(), b"{}"), Ok(0));
}

#[test]
fn push_makes_background_poll_a_polling_channel_with_its_own_hold_and_ttl() {
    let text = with_subscription("events:\n  backgroundPoll:\n    push: {hold: 15s, ttl: 2m}\n");
    let config = parse(&text).expect("loads");
    let event = &config.events["backgroundPoll"];
    let push = event.push.expect("a push channel");
    assert_eq!(
        (push.hold, push.ttl),
        (Duration::from_secs(15), Duration::from_secs(120))
    );
    assert_eq!(
        event.polling.as_ref().map(|p| p.timeout),
        Some(Duration::MAX)
    );
    assert!(matches!(event.answer, Answer::Push));
    let defaults = parse(&with_subscription(
        "events:\n  backgroundPoll:\n    push: {}\n",
    ))
    .unwrap();
    let push = defaults.events["backgroundPoll"].push.unwrap();
    assert_eq!(
        (push.hold, push.ttl),
        (Duration::from_secs(20), Duration::from_secs(600))
    );
}

#[test]
fn bad_push_config_names_the_key() {
    let text = with_subscription(
        "upstreams:\n  b: {url: 'http://127.0.0.1:9/x'}\nevents:\n  backgroundPoll:\n    forward: b\n    hold: 1s\n    polling: {timeout: 5s}\n    push: {hold: 1s, ttl: 0s}\n  scanCode:\n    respond: {}\n    push: {}\n",
    );
    assert_eq!(
        problems(&text),
        [
            format!("{FILE}: events.backgroundPoll.forward: not with `push:`: a push channel answers with pushed messages, not a back end's reply"),
            format!("{FILE}: events.backgroundPoll.hold: not with `push:`: a push channel's hold is push.hold"),
            format!("{FILE}: events.backgroundPoll.polling: not with `push:`: a push channel polls as long as the till runs, with no polling.timeout"),
            format!("{FILE}: events.backgroundPoll.push.ttl: must be more than 0"),
            format!("{FILE}: events.scanCode.respond: not with `push:`: a push channel answers with pushed messages; shape them with a rule"),
            format!("{FILE}: events.scanCode.push: only backgroundPoll carries pushed messages (MPLUS.md 5)"),
        ]
    );
    assert!(problem(&with_subscription(
        "events:\n  backgroundPoll:\n    push: {hold: 5}\n"
    ))
    .contains("events.backgroundPoll.push.hold"));
    assert!(problem(&with_subscription(
        "events:\n  backgroundPoll:\n    push: {wait: 5s}\n"
    ))
    .contains("unknown field `wait`"));
}
