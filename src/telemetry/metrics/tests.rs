use super::*;

#[test]
fn exports_the_contract_names_with_bounded_labels() {
    let m = Metrics::new();
    m.event("addSessionLine", &[])
        .call(Outcome::KeepPolling, Duration::from_millis(1));
    m.event("addSessionLine", &[])
        .rule(Duration::from_micros(5), true);
    m.upstream(
        "backend",
        UpstreamOutcome::Success,
        Some(Duration::from_millis(3)),
    );
    m.reload(true);
    m.set_conversations(3);
    m.store_full();
    let text = m.encode();
    for needle in [
        r#"pollgate_requests_total{event="addSessionLine",outcome="keep_polling"} 1"#,
        r#"pollgate_request_duration_seconds_count{event="addSessionLine"} 1"#,
        r#"pollgate_rule_errors_total{event="addSessionLine"} 1"#,
        r#"pollgate_upstream_requests_total{upstream="backend",outcome="success"} 1"#,
        "pollgate_conversations_active 3",
        r#"pollgate_reloads_total{result="ok"} 1"#,
        concat!(
            r#"pollgate_build_info{version=""#,
            env!("CARGO_PKG_VERSION"),
            r#""} 1"#
        ),
        "pollgate_store_full_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

fn request_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("pollgate_requests_total{"))
        .collect()
}

#[test]
fn outcomes_are_listed_in_declaration_order() {
    // EventMetrics indexes its handles with `outcome as usize`.
    for (i, outcome) in Outcome::ALL.iter().enumerate() {
        assert_eq!(*outcome as usize, i, "{outcome:?}");
    }
}

#[test]
fn requests_list_only_the_declared_outcomes_sorted_and_others_once_they_happen() {
    let m = Metrics::new();
    let _none = m.event("none", Outcome::NO_EVENT);
    let scan = m.event("scanCode", &Outcome::of_event(false, true));
    let text = m.encode();
    assert_eq!(
        request_series(&text),
        [
            r#"pollgate_requests_total{event="none",outcome="method_not_allowed"} 0"#,
            r#"pollgate_requests_total{event="none",outcome="not_found"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="answered"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="bad_request"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="body_timeout"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="deadline"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="error_request"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="overloaded"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="rejected"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="replayed"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="rule_error"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="store_error"} 0"#,
            r#"pollgate_requests_total{event="scanCode",outcome="too_large"} 0"#,
        ]
    );
    // An outcome nobody expected for the label is still counted.
    scan.call(Outcome::Finished, Duration::ZERO);
    assert!(m
        .encode()
        .contains(r#"pollgate_requests_total{event="scanCode",outcome="finished"} 1"#));
}
