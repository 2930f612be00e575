//! The bounded outcome labels: how a call ended and how a forward ended.

/// How a call ended, as counted in `pollgate_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The outcome whose [`Self::label`] is `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.label() == label)
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
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Status => "status",
            Self::Failure => "failure",
            Self::Retry => "retry",
        }
    }
}
