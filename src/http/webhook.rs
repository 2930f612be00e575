//! The webhook handler: routing, body limits, the checks of GATEWAY.md 6, the pipeline,
//! and signing the answer.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::Full;

use super::json_response;
use super::layers::CallRecord;
use super::overload::{read_body, BodyBudget, BodyError, BodyLimits};
use super::refusal::{closing, refused, too_large};
use crate::config::Subscription;
use crate::pipeline::{self, error_bytes, Answer, CallNote, Gateway, Refusal};
use crate::runtime::Runtime;
use crate::telemetry::{EventMetrics, Outcome};

/// Who a request is for, from its head alone: what any answer to it is counted under and
/// signed with, even one given before (or instead of) the handler's own.
#[derive(Clone)]
pub struct Addressee {
    /// The event name, when the path is a valid event path.
    pub event: Option<String>,
    pub metrics: Arc<EventMetrics>,
    /// The subscription named by the headers, when it is a known one.
    pub subscription: Option<Arc<Subscription>>,
}

impl Addressee {
    pub fn of(rt: &Runtime, path: &str, headers: &HeaderMap) -> Self {
        let Some(event) = event_name(path, &rt.config.server.base_path) else {
            return Self {
                event: None,
                metrics: rt.no_event.clone(),
                subscription: None,
            };
        };
        let metrics = rt
            .event(event)
            .map_or_else(|| rt.unconfigured.clone(), |e| e.metrics.clone());
        Self {
            event: Some(event.to_owned()),
            metrics,
            subscription: pipeline::subscription(rt, headers).ok(),
        }
    }

    /// What telemetry records for an answer with `outcome`.
    pub fn record(&self, outcome: Outcome, note: CallNote) -> CallRecord {
        CallRecord {
            metrics: self.metrics.clone(),
            outcome,
            event: self.event.clone(),
            subscription: self.subscription.clone(),
            note,
        }
    }
}

/// Answers one request on the webhook listener.
pub async fn handle<B>(
    gateway: Gateway,
    budget: BodyBudget,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rt = gateway.runtime.load_full();
    let server = &rt.config.server;
    let Some(event_name) = event_name(req.uri().path(), &server.base_path) else {
        return Ok(not_found(
            &rt,
            req.headers(),
            Outcome::NotFound,
            "NOT_FOUND",
            "no webhook here; events are POSTed to {base_path}/{eventName}",
        ));
    };
    if req.method() != Method::POST {
        let mut response = not_found(
            &rt,
            req.headers(),
            Outcome::MethodNotAllowed,
            "METHOD_NOT_ALLOWED",
            "webhooks are POST only",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    let event_name = event_name.to_owned();
    let (mut parts, body) = req.into_parts();
    let to = parts
        .extensions
        .remove::<Addressee>()
        .unwrap_or_else(|| Addressee::of(&rt, parts.uri.path(), &parts.headers));
    let record = |outcome| to.record(outcome, CallNote::default());
    let max = server.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let sub = to.subscription.as_deref();
        return Ok(too_large(max, sub, record(Outcome::TooLarge)));
    }
    let checks = pipeline::subscription(&rt, &parts.headers)
        .and_then(|sub| pipeline::signature_present(&parts.headers, &sub).map(|()| sub));
    let sub = match checks {
        Ok(sub) => sub,
        Err(refusal) => return Ok(refused(&refusal, record(Outcome::BadRequest))),
    };
    let limits = BodyLimits {
        max_bytes: max as u64,
        budget: server.max_buffered_bytes,
        timeout: server.body_timeout,
    };
    let (raw, reservation) = match read_body(body, declared, &budget, limits).await {
        Ok(read) => read,
        Err(e) => return Ok(unread(&e, max, &sub, record)),
    };
    let verified = pipeline::verify(sub, &event_name, &parts.headers, raw);
    // Checked bytes no longer count as a body being read.
    drop(reservation);
    let verified = match verified {
        Ok(verified) => verified,
        Err(refusal) => return Ok(refused(&refusal, record(Outcome::BadRequest))),
    };
    let sub = verified.subscription().clone();
    let Answer {
        status,
        body,
        outcome,
        note,
    } = gateway.answer(&rt, verified).await;
    let mut response = json_response(status, body, Some(&sub));
    response.extensions_mut().insert(to.record(outcome, note));
    Ok(response)
}

/// The answer to a call whose body could not be read in full.
fn unread(
    error: &BodyError,
    max: usize,
    sub: &Arc<Subscription>,
    record: impl Fn(Outcome) -> CallRecord,
) -> Response<Full<Bytes>> {
    match error {
        BodyError::TooLarge => too_large(max, Some(sub), record(Outcome::TooLarge)),
        BodyError::Overloaded => closing(
            503,
            "OVERLOADED",
            "the gateway is reading too many bodies at once; please retry",
            Some(sub),
            record(Outcome::Overloaded),
        ),
        BodyError::TimedOut => closing(
            408,
            "REQUEST_TIMEOUT",
            "the body did not arrive within server.body_timeout",
            Some(sub),
            record(Outcome::BodyTimeout),
        ),
        BodyError::Broken(e) => {
            tracing::debug!("request body broken off: {e}");
            let refusal = Refusal {
                code: "INVALID_JSON",
                message: "the body could not be read".into(),
                subscription: Some(sub.clone()),
            };
            refused(&refusal, record(Outcome::BadRequest))
        }
    }
}

/// `{base_path}/{eventName}` → `eventName`: one segment of `[A-Za-z0-9_.-]{1,64}`, taken as
/// written. Never percent-decoded, so `add%53essionLine` is no alias of `addSessionLine`
/// (and no way around a name's own rule to the fallback's).
fn event_name<'a>(path: &'a str, base_path: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base_path)?.strip_prefix('/')?;
    let valid = (1..=64).contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    valid.then_some(rest)
}

/// `404` or `405`: no event's call, counted under `event="none"`. Signed when the headers
/// name a known subscription, like every answer to a call of one.
fn not_found(
    rt: &Runtime,
    headers: &HeaderMap,
    outcome: Outcome,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let status = if outcome == Outcome::MethodNotAllowed {
        405
    } else {
        404
    };
    let subscription = pipeline::subscription(rt, headers).ok();
    let body = error_bytes(code, message);
    let mut response = json_response(status, body, subscription.as_deref());
    response.extensions_mut().insert(CallRecord {
        metrics: rt.no_event.clone(),
        outcome,
        event: None,
        subscription,
        note: CallNote::default(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::event_name;

    #[test]
    fn event_name_is_the_one_segment_after_the_base_path() {
        assert_eq!(
            event_name("/webhooks/addSessionLine", "/webhooks"),
            Some("addSessionLine")
        );
        assert_eq!(event_name("/webhooks/", "/webhooks"), None);
        assert_eq!(event_name("/webhooks", "/webhooks"), None);
        assert_eq!(event_name("/webhooks/a/b", "/webhooks"), None);
        assert_eq!(event_name("/webhooksX/a", "/webhooks"), None);
        assert_eq!(event_name("/a", ""), Some("a"));
    }

    #[test]
    fn event_names_outside_the_safe_alphabet_or_over_64_bytes_are_no_event() {
        assert_eq!(event_name("/w/a.b_c-D9", "/w"), Some("a.b_c-D9"));
        assert_eq!(
            event_name(&format!("/w/{}", "a".repeat(64)), "/w").map(str::len),
            Some(64)
        );
        assert_eq!(event_name(&format!("/w/{}", "a".repeat(65)), "/w"), None);
        for bad in ["add%53essionLine", "a b", "a\nb", "é", "a+b", "a;b"] {
            assert_eq!(event_name(&format!("/w/{bad}"), "/w"), None, "{bad}");
        }
    }
}
