//! Every error answer pollgate gives, in one place: its status, code and message, and
//! whether it is signed.
//!
//! - [`Refusal`]: the webhook listener's `{"error": {"code", "message"}}` answers (the checks
//!   of GATEWAY.md 6, routing, reading the body, the last-resort deadline). Signed when the
//!   call names a known subscription, like every answer to a till.
//! - [`Fallback`]: what a till is told when a rule or the store fails: `200`, so it goes on.
//! - [`AdminError`]: the admin listener's error answers, never signed (no till reads them).
//!
//! A rule's own `reject(code, message)` is shaped by [`error_map`].

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use rhai::{Dynamic, Map};

use crate::rules::finish_answer;
use crate::signature::SignatureError;
use crate::telemetry::Outcome;

/// The cashier's message when a polling event's rule failed.
pub const RULE_FAILED_MESSAGE: &str = "This step could not be checked; please continue";
/// The cashier's message while the conversation store cannot be reached.
pub const STORE_DOWN_MESSAGE: &str = "The gateway cannot reach its state store; retrying";

/// A webhook request answered with an error instead of going through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    // The checks of GATEWAY.md 6, in their order.
    NoSubscriptionId,
    InvalidSubscriptionId,
    NoSignature,
    InvalidSignature(SignatureError),
    NoContentType,
    InvalidContentType,
    InvalidJson,
    InvalidData,
    // Routing.
    NotFound,
    MethodNotAllowed,
    // Reading the body.
    /// Over `server.max_body_bytes`, declared or read.
    TooLarge {
        max: usize,
    },
    /// The client broke the body off.
    BodyBroken,
    /// The body did not arrive within `server.body_timeout`.
    BodyTimeout,
    /// Bodies being read were at `server.max_buffered_bytes`.
    Overloaded,
    /// The call outlived `server.request_timeout` (the last resort of `http::layers`).
    Deadline,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTimeout => 408,
            Self::TooLarge { .. } => 413,
            Self::Overloaded | Self::Deadline => 503,
            _ => 400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::NoSubscriptionId => "NO_SUBSCRIPTION_ID",
            Self::InvalidSubscriptionId => "INVALID_SUBSCRIPTION_ID",
            Self::NoSignature => "NO_SIGNATURE",
            Self::InvalidSignature(_) => "INVALID_SIGNATURE",
            Self::NoContentType => "NO_CONTENT_TYPE",
            Self::InvalidContentType => "INVALID_CONTENT_TYPE",
            Self::InvalidJson | Self::BodyBroken => "INVALID_JSON",
            Self::InvalidData => "INVALID_DATA",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::TooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::BodyTimeout => "REQUEST_TIMEOUT",
            Self::Overloaded => "OVERLOADED",
            Self::Deadline => "TIMEOUT",
        }
    }

    pub fn message(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::NoSubscriptionId => "X-Mplus-Subscription-Id header is missing",
            Self::InvalidSubscriptionId => "X-Mplus-Subscription-Id is not a known subscription",
            Self::NoSignature => "X-Mplus-Signature header is missing",
            Self::InvalidSignature(e) => return Cow::Owned(e.to_string()),
            Self::NoContentType => "Content-Type header is missing",
            Self::InvalidContentType => "Content-Type must be application/json",
            Self::InvalidJson => "the body is not valid JSON",
            Self::InvalidData => "the body is not a JSON object",
            Self::NotFound => "no webhook here; events are POSTed to {base_path}/{eventName}",
            Self::MethodNotAllowed => "webhooks are POST only",
            Self::TooLarge { max } => {
                return Cow::Owned(format!("the body is larger than max_body_bytes ({max})"))
            }
            Self::BodyBroken => "the body could not be read",
            Self::BodyTimeout => "the body did not arrive within server.body_timeout",
            Self::Overloaded => "the gateway is reading too many bodies at once; please retry",
            Self::Deadline => "the gateway could not answer in time",
        })
    }

    /// What the call counts as in `pollgate_requests_total`.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::NotFound => Outcome::NotFound,
            Self::MethodNotAllowed => Outcome::MethodNotAllowed,
            Self::TooLarge { .. } => Outcome::TooLarge,
            Self::BodyTimeout => Outcome::BodyTimeout,
            Self::Overloaded => Outcome::Overloaded,
            Self::Deadline => Outcome::Deadline,
            _ => Outcome::BadRequest,
        }
    }

    /// Given before the body was read to its end, so the connection cannot carry another
    /// call: the answer says `Connection: close`.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::BodyTimeout | Self::Overloaded
        )
    }

    /// The `Allow` header of a `405`.
    pub fn allow(self) -> Option<&'static str> {
        (self == Self::MethodNotAllowed).then_some("POST")
    }

    /// The answer body, before signing.
    pub fn body(self) -> Bytes {
        error_bytes(self.code(), &self.message())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.message())
    }
}

/// The answer a till gets when pollgate cannot decide: `200`, never remembered, so a retry
/// decides again once the rule or the store works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The rule failed (GATEWAY.md 4.4): a polling till finishes and the cashier goes on.
    RuleFailed,
    /// The conversation store failed: a polling till keeps polling until it is back.
    StoreDown,
}

impl Fallback {
    /// The body for an event that polls or not: non-polling events get `{}`.
    pub fn body(self, polling: bool) -> Map {
        match (self, polling) {
            (_, false) => Map::new(),
            (Self::RuleFailed, true) => finish_answer(true, RULE_FAILED_MESSAGE, ""),
            (Self::StoreDown, true) => finish_answer(false, STORE_DOWN_MESSAGE, ""),
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Self::RuleFailed => Outcome::RuleError,
            Self::StoreDown => Outcome::StoreError,
        }
    }
}

/// Why an admin request's bearer token was refused (`401`, GATEWAY.md 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No `Authorization` header.
    NoToken,
    /// An `Authorization` header of another scheme than `Bearer`.
    NotBearer,
    /// A bearer token that is neither `admin.token` nor, where it counts, `admin.push_token`.
    WrongToken,
    /// `admin.push_token` on an endpoint outside `/push`.
    PushOnly,
}

impl Unauthorized {
    fn message(self) -> &'static str {
        match self {
            Self::NoToken => "this endpoint needs an Authorization: Bearer <admin.token> header",
            Self::NotBearer => "the Authorization header must be Bearer <admin.token>",
            Self::WrongToken => "the bearer token is not valid here",
            Self::PushOnly => "admin.push_token opens only the /push endpoints",
        }
    }

    /// The `WWW-Authenticate` header (RFC 6750 3): a token that was sent and refused says so.
    pub fn challenge(self) -> &'static str {
        match self {
            Self::NoToken | Self::NotBearer => "Bearer",
            Self::WrongToken => "Bearer error=\"invalid_token\"",
            Self::PushOnly => "Bearer error=\"insufficient_scope\"",
        }
    }
}

/// An admin request answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// The bearer token is missing or wrong.
    Unauthorized(Unauthorized),
    /// A browser page of another site sent it (`http::origin` says why).
    CrossOrigin(String),
    NotFound,
    /// `GET /conversations/{key}` of a key the store does not hold (or not a key at all).
    NoConversation,
    /// The path exists for the other method.
    MethodNotAllowed(&'static str),
    /// The conversation store failed to list.
    StoreUnavailable(String),
    /// A query value that is not allowed (`?status=maybe`), and why.
    BadQuery(String),
    /// No delivery has this id (GATEWAY.md 8).
    NoDelivery(String),
    /// A push for a subscription the config does not have (GATEWAY.md 9).
    NoSubscription(String),
    /// A push path's branch or workplace that no till can have, and why.
    BadTill(String),
    /// A pushed body that is not JSON (`INVALID_JSON`) or not an object (`INVALID_DATA`).
    BadPush {
        code: &'static str,
        why: String,
    },
    /// A push while no event is a push channel: no till would ever get it.
    PushOff,
    /// No pending message of the till has this id.
    NoMessage(String),
}

impl AdminError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) => 401,
            Self::CrossOrigin(_) => 403,
            Self::NotFound
            | Self::NoConversation
            | Self::NoDelivery(_)
            | Self::NoSubscription(_)
            | Self::NoMessage(_) => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::BadPush {
                code: "PAYLOAD_TOO_LARGE",
                ..
            } => 413,
            Self::BadPush {
                code: "REQUEST_TIMEOUT",
                ..
            } => 408,
            Self::BadQuery(_) | Self::BadTill(_) | Self::BadPush { .. } => 400,
            Self::PushOff => 409,
            Self::StoreUnavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::CrossOrigin(_) => "CROSS_ORIGIN",
            Self::NotFound => "NOT_FOUND",
            Self::NoConversation => "NO_CONVERSATION",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            Self::BadQuery(_) => "INVALID_QUERY",
            Self::NoDelivery(_) | Self::NoSubscription(_) | Self::NoMessage(_) => "NOT_FOUND",
            Self::BadTill(_) => "INVALID_TILL",
            Self::BadPush { code, .. } => code,
            Self::PushOff => "PUSH_NOT_CONFIGURED",
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Self::Unauthorized(why) => Cow::Borrowed(why.message()),
            Self::CrossOrigin(why) => Cow::Owned(format!(
                "{why}; the admin endpoints refuse requests from other sites' pages"
            )),
            Self::NotFound => Cow::Borrowed(
                "admin endpoints: /healthz /readyz /metrics /conversations /deliveries /push /reload (every one, with its answers: GET /openapi.json)",
            ),
            Self::NoConversation => Cow::Borrowed(
                "no live conversation has this key (32 hex digits, as GET /conversations lists them)",
            ),
            Self::MethodNotAllowed(allow) => Cow::Owned(format!("use {allow}")),
            Self::StoreUnavailable(why) | Self::BadQuery(why) => Cow::Owned(why.clone()),
            Self::NoDelivery(id) => Cow::Owned(format!(
                "no delivery `{}` (GET /deliveries lists them)",
                crate::telemetry::escape::loggable(id, 64)
            )),
            Self::NoSubscription(id) => Cow::Owned(format!(
                "no subscription `{}` (not under `subscriptions:`)",
                crate::telemetry::escape::loggable(id, 64)
            )),
            Self::NoMessage(id) => Cow::Owned(format!(
                "no pending message `{}` for this till (GET the till's path lists them)",
                crate::telemetry::escape::loggable(id, 64)
            )),
            Self::BadTill(why) | Self::BadPush { why, .. } => Cow::Owned(why.clone()),
            Self::PushOff => Cow::Borrowed(
                "no event is a push channel (events.backgroundPoll.push), so no till would get it",
            ),
        }
    }

    /// The `Allow` header of a `405`.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            Self::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` header of a `401`.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized(why) => Some(why.challenge()),
            _ => None,
        }
    }

    pub fn body(&self) -> Bytes {
        error_bytes(self.code(), &self.message())
    }
}

/// `{"error": {"code", "message"}}` as a map: a rule's `reject(code, message)`.
pub fn error_map(code: &str, message: &str) -> Map {
    let mut error = Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    let mut body = Map::new();
    body.insert("error".into(), Dynamic::from_map(error));
    body
}

/// `{"error": {"code", "message"}}` as bytes.
pub fn error_bytes(code: &str, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: Error<'a>,
    }
    let body = Body {
        error: Error { code, message },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_bodies_are_the_contract_error_shape() {
        let body = Refusal::TooLarge { max: 10 }.body();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"PAYLOAD_TOO_LARGE","message":"the body is larger than max_body_bytes (10)"}}"#
        );
        assert_eq!(
            Refusal::InvalidSignature(SignatureError::Mismatch).to_string(),
            "INVALID_SIGNATURE X-Mplus-Signature does not match the body"
        );
    }

    #[test]
    fn only_answers_given_before_the_body_ends_close_the_connection() {
        let closing: Vec<Refusal> = [
            Refusal::NoSignature,
            Refusal::BodyBroken,
            Refusal::TooLarge { max: 1 },
            Refusal::BodyTimeout,
            Refusal::Overloaded,
            Refusal::Deadline,
        ]
        .into_iter()
        .filter(|r| r.closes_connection())
        .collect();
        assert_eq!(
            closing,
            [
                Refusal::TooLarge { max: 1 },
                Refusal::BodyTimeout,
                Refusal::Overloaded
            ]
        );
    }

    #[test]
    fn fallbacks_say_finished_or_not_only_to_polling_events() {
        let text = |m: Map| serde_json::to_string(&Dynamic::from_map(m)).unwrap();
        assert_eq!(text(Fallback::StoreDown.body(false)), "{}");
        assert_eq!(
            text(Fallback::StoreDown.body(true)),
            format!(r#"{{"polling":{{"finished":false,"message":"{STORE_DOWN_MESSAGE}"}}}}"#)
        );
        assert_eq!(
            text(Fallback::RuleFailed.body(true)),
            format!(r#"{{"polling":{{"finished":true,"message":"{RULE_FAILED_MESSAGE}"}}}}"#)
        );
    }

    #[test]
    fn admin_errors_name_their_code_and_method() {
        let e = AdminError::MethodNotAllowed("GET");
        assert_eq!(
            (e.status(), e.allow(), &e.body()[..]),
            (
                405,
                Some("GET"),
                &br#"{"error":{"code":"METHOD_NOT_ALLOWED","message":"use GET"}}"#[..]
            )
        );
    }
}
