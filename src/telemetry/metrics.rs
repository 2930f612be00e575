//! Prometheus metrics (GATEWAY.md 6). Labels are bounded: event names from config (`"*"`,
//! `unconfigured` and `none` for the rest), upstream names from config, fixed outcomes.
//!
//! Families are resolved to plain handles when a config generation is built, so a call
//! only touches atomics: no label hashing or string building on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// How a call ended, as counted in `pollgate_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A polling conversation finished (this call's answer says `finished: true`).
    Finished,
    /// A polling conversation goes on.
    KeepPolling,
    /// A non-polling event answered.
    Answered,
    /// A finished conversation's answer, replayed.
    Replayed,
    /// The rule called `reject`.
    Rejected,
    /// The rule failed; the fail-safe answer was given.
    RuleError,
    /// `polling.timeout` passed.
    TimedOut,
    /// An event neither configured nor covered by `"*"`.
    Unconfigured,
    /// The till reported a problem with an earlier answer (MPLUS.md 6).
    ErrorRequest,
    /// The conversation store failed.
    StoreError,
    /// A check of GATEWAY.md 6 failed (400).
    BadRequest,
    /// Body over `max_body_bytes` (413).
    TooLarge,
    /// Not a webhook path (404).
    NotFound,
    /// A webhook path, but not a POST (405).
    MethodNotAllowed,
    /// The call outlived `server.request_timeout`.
    Deadline,
    /// Bodies being read were at `server.max_buffered_bytes` (503).
    Overloaded,
    /// The body did not arrive within `server.body_timeout` (408).
    BodyTimeout,
}

impl Outcome {
    pub const ALL: [Self; 17] = [
        Self::Finished,
        Self::KeepPolling,
        Self::Answered,
        Self::Replayed,
        Self::Rejected,
        Self::RuleError,
        Self::TimedOut,
        Self::Unconfigured,
        Self::ErrorRequest,
        Self::StoreError,
        Self::BadRequest,
        Self::TooLarge,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Deadline,
        Self::Overloaded,
        Self::BodyTimeout,
    ];

    /// What a request that is not an event's call can end with (label `none`).
    pub const NO_EVENT: &'static [Self] = &[Self::NotFound, Self::MethodNotAllowed];

    /// What a call of an event neither configured nor covered by `"*"` can end with
    /// (label `unconfigured`): its body is read and checked, then `{}`.
    pub const UNCONFIGURED: &'static [Self] = &[
        Self::Unconfigured,
        Self::BadRequest,
        Self::TooLarge,
        Self::Overloaded,
        Self::BodyTimeout,
    ];

    /// What a call of a configured event can end with: a polling event finishes, keeps
    /// polling or times out, another is answered; only a rule rejects. Any answer can be
    /// too large (rule_error), replayed, or meet a store failure.
    pub fn of_event(polling: bool, rule: bool) -> Vec<Self> {
        let mut outcomes = vec![
            Self::BadRequest,
            Self::TooLarge,
            Self::Overloaded,
            Self::BodyTimeout,
            Self::Deadline,
            Self::ErrorRequest,
            Self::Replayed,
            Self::RuleError,
            Self::StoreError,
        ];
        if polling {
            outcomes.extend([Self::Finished, Self::KeepPolling, Self::TimedOut]);
        } else {
            outcomes.push(Self::Answered);
        }
        if rule {
            outcomes.push(Self::Rejected);
        }
        outcomes
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::KeepPolling => "keep_polling",
            Self::Answered => "answered",
            Self::Replayed => "replayed",
            Self::Rejected => "rejected",
            Self::RuleError => "rule_error",
            Self::TimedOut => "timeout",
            Self::Unconfigured => "unconfigured",
            Self::ErrorRequest => "error_request",
            Self::StoreError => "store_error",
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Deadline => "deadline",
            Self::Overloaded => "overloaded",
            Self::BodyTimeout => "body_timeout",
        }
    }
}

/// How a forward ended, as counted in `pollgate_upstream_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// 2xx.
    Success,
    /// Another HTTP status, after retries.
    Status,
    /// No usable HTTP answer (refused, timeout, reply too large), after retries.
    Failure,
    /// One attempt that will be retried.
    Retry,
}

impl UpstreamOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Status => "status",
            Self::Failure => "failure",
            Self::Retry => "retry",
        }
    }
}

/// Ordered by event, then outcome: the order `/metrics` lists them in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct EventOutcomeLabels {
    event: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// `pollgate_requests_total`: a counter family that lists its series sorted (a `Family`
/// lists them in hash order, different on every start). A std lock: it is taken when a
/// generation is built and on each scrape, never on a call's path (calls hold handles).
#[derive(Clone, Debug, Default)]
struct RequestCounters(Arc<RwLock<BTreeMap<EventOutcomeLabels, Counter>>>);

impl RequestCounters {
    fn get_or_create(&self, event: &str, outcome: Outcome) -> Counter {
        let labels = EventOutcomeLabels {
            event: event.to_owned(),
            outcome: outcome.label().to_owned(),
        };
        if let Some(c) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return c.clone();
        }
        let mut series = self.0.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels).or_default().clone()
    }
}

impl EncodeMetric for RequestCounters {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let series = self.0.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, counter) in series.iter() {
            counter.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcomeLabels {
    upstream: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric pollgate exports; one per process, shared by all config generations.
pub struct Metrics {
    registry: Registry,
    requests: RequestCounters,
    duration: HistogramFamily<EventLabels>,
    rule_errors: Family<EventLabels, Counter>,
    rule_duration: HistogramFamily<EventLabels>,
    upstream_requests: Family<UpstreamOutcomeLabels, Counter>,
    upstream_duration: HistogramFamily<UpstreamLabels>,
    conversations_active: Gauge,
    reloads: Family<ResultLabels, Counter>,
    forwards_in_flight: Gauge,
    config_generation: Gauge<u64, AtomicU64>,
    buffered_bytes: Gauge<u64, AtomicU64>,
    store_full: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pollgate");
        let requests = RequestCounters::default();
        let duration =
            HistogramFamily::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let rule_errors = Family::default();
        let rule_duration =
            HistogramFamily::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let upstream_requests = Family::default();
        let upstream_duration =
            HistogramFamily::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let conversations_active = Gauge::default();
        let reloads: Family<ResultLabels, Counter> = Family::default();
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        let forwards_in_flight = Gauge::default();
        let config_generation = Gauge::default();
        let buffered_bytes = Gauge::default();
        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running pollgate's version (always 1)",
            build_info,
        );
        let store_full = Counter::default();
        registry.register(
            "requests",
            "Webhook calls by event and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to answer, by event",
            duration.clone(),
        );
        registry.register(
            "rule_errors",
            "Rule evaluations that failed, by event",
            rule_errors.clone(),
        );
        registry.register(
            "rule_evaluation_duration_seconds",
            "Time spent evaluating rules, by event",
            rule_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Forward attempts by upstream and outcome",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time per forward attempt, by upstream",
            upstream_duration.clone(),
        );
        registry.register(
            "conversations_active",
            "Conversations the store remembers",
            conversations_active.clone(),
        );
        registry.register("reloads", "Config reloads by result", reloads.clone());
        registry.register(
            "forwards_in_flight",
            "Forwards this process is sending now",
            forwards_in_flight.clone(),
        );
        registry.register(
            "config_generation",
            "Generation of the config in use (1 at start, +1 per good reload)",
            config_generation.clone(),
        );
        registry.register(
            "buffered_bytes",
            "Request body bytes reserved now (at most server.max_buffered_bytes)",
            buffered_bytes.clone(),
        );
        registry.register(
            "store_full",
            "New conversations refused because state.max_conversations was reached with none finished to evict",
            store_full.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            rule_errors,
            rule_duration,
            upstream_requests,
            upstream_duration,
            conversations_active,
            reloads,
            forwards_in_flight,
            config_generation,
            buffered_bytes,
            store_full,
        }
    }

    /// The handles for one event label. The `outcomes` that can happen for it are listed at
    /// zero from now on; any other is listed once it happens.
    pub fn event(&self, event: &str, outcomes: &[Outcome]) -> Arc<EventMetrics> {
        let labels = EventLabels {
            event: event.to_owned(),
        };
        let requests = Outcome::ALL.map(|o| {
            let cell = OnceLock::new();
            if outcomes.contains(&o) {
                let _ = cell.set(self.requests.get_or_create(event, o));
            }
            cell
        });
        Arc::new(EventMetrics {
            event: event.to_owned(),
            family: self.requests.clone(),
            requests,
            duration: self.duration.get_or_create(&labels).clone(),
            rule_errors: self.rule_errors.get_or_create(&labels).clone(),
            rule_duration: self.rule_duration.get_or_create(&labels).clone(),
        })
    }

    /// Counts one forward attempt or result.
    pub fn upstream(&self, upstream: &str, outcome: UpstreamOutcome, elapsed: Option<Duration>) {
        self.upstream_requests
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: upstream.to_owned(),
                outcome: outcome.label().to_owned(),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.upstream_duration
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Creates an upstream's series at zero, so dashboards see them before the first forward.
    pub fn declare_upstream(&self, upstream: &str) {
        for outcome in [
            UpstreamOutcome::Success,
            UpstreamOutcome::Status,
            UpstreamOutcome::Failure,
            UpstreamOutcome::Retry,
        ] {
            let _ = self
                .upstream_requests
                .get_or_create(&UpstreamOutcomeLabels {
                    upstream: upstream.to_owned(),
                    outcome: outcome.label().to_owned(),
                });
        }
        let _ = self.upstream_duration.get_or_create(&UpstreamLabels {
            upstream: upstream.to_owned(),
        });
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn set_generation(&self, generation: u64) {
        self.config_generation.set(generation);
    }

    pub fn set_conversations(&self, n: u64) {
        self.conversations_active
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_buffered_bytes(&self, n: u64) {
        self.buffered_bytes.set(n);
    }

    /// Counts a new conversation refused by a full store (GATEWAY.md 12).
    pub fn store_full(&self) {
        self.store_full.inc();
    }

    pub fn forwards_in_flight(&self) -> &Gauge {
        &self.forwards_in_flight
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Pre-resolved handles for one event label.
#[derive(Debug)]
pub struct EventMetrics {
    event: String,
    family: RequestCounters,
    /// By `Outcome as usize`; set at creation for the outcomes declared, on first use for
    /// the others.
    requests: [OnceLock<Counter>; Outcome::ALL.len()],
    duration: Histogram,
    rule_errors: Counter,
    rule_duration: Histogram,
}

impl EventMetrics {
    pub fn call(&self, outcome: Outcome, elapsed: Duration) {
        self.requests[outcome as usize]
            .get_or_init(|| self.family.get_or_create(&self.event, outcome))
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn rule(&self, elapsed: Duration, failed: bool) {
        self.rule_duration.observe(elapsed.as_secs_f64());
        if failed {
            self.rule_errors.inc();
        }
    }
}

#[cfg(test)]
mod tests {
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
}
