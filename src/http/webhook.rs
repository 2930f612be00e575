//! The webhook handler: routing, body limits, the checks of GATEWAY.md 6, the pipeline,
//! and signing the answer.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};

use super::json_response;
use super::layers::CallRecord;
use crate::config::Subscription;
use crate::pipeline::{self, error_bytes, Answer, CallNote, Gateway, Refusal};
use crate::runtime::Runtime;
use crate::telemetry::Outcome;

/// Answers one request on the webhook listener.
pub async fn handle<B>(
    gateway: Gateway,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rt = gateway.runtime.load_full();
    let Some(event_name) = event_name(req.uri().path(), &rt.config.server.base_path) else {
        return Ok(not_found(
            &rt,
            Outcome::NotFound,
            "NOT_FOUND",
            "no webhook here; events are POSTed to {base_path}/{eventName}",
        ));
    };
    if req.method() != Method::POST {
        let mut response = not_found(
            &rt,
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
    let metrics = rt
        .event(&event_name)
        .map_or_else(|| rt.unconfigured.clone(), |e| e.metrics.clone());
    let record = |outcome, subscription: Option<Arc<Subscription>>, note| CallRecord {
        metrics: metrics.clone(),
        outcome,
        event: Some(event_name.clone()),
        subscription,
        note,
    };

    let (parts, body) = req.into_parts();
    let max = rt.config.server.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let sub = pipeline::subscription(&rt, &parts.headers).ok();
        return Ok(too_large(
            max,
            sub.as_deref(),
            record(Outcome::TooLarge, sub.clone(), CallNote::default()),
        ));
    }
    let checks = pipeline::subscription(&rt, &parts.headers)
        .and_then(|sub| pipeline::signature_present(&parts.headers, &sub).map(|()| sub));
    let sub = match checks {
        Ok(sub) => sub,
        Err(refusal) => {
            let sub = refusal.subscription.clone();
            return Ok(refused(
                &refusal,
                record(Outcome::BadRequest, sub, CallNote::default()),
            ));
        }
    };
    let raw = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(too_large(
                max,
                Some(&sub),
                record(Outcome::TooLarge, Some(sub.clone()), CallNote::default()),
            ));
        }
        Err(e) => {
            tracing::debug!("request body broken off: {e}");
            let refusal = Refusal {
                code: "INVALID_JSON",
                message: "the body could not be read".into(),
                subscription: Some(sub.clone()),
            };
            return Ok(refused(
                &refusal,
                record(Outcome::BadRequest, Some(sub), CallNote::default()),
            ));
        }
    };
    let verified = match pipeline::verify(sub, &event_name, &parts.headers, raw) {
        Ok(verified) => verified,
        Err(refusal) => {
            let sub = refusal.subscription.clone();
            return Ok(refused(
                &refusal,
                record(Outcome::BadRequest, sub, CallNote::default()),
            ));
        }
    };
    let sub = verified.subscription().clone();
    let Answer {
        status,
        body,
        outcome,
        note,
    } = gateway.answer(&rt, verified).await;
    let mut response = json_response(status, body, Some(&sub));
    response
        .extensions_mut()
        .insert(record(outcome, Some(sub), note));
    Ok(response)
}

/// `{base_path}/{eventName}` → `eventName` (one non-empty segment).
fn event_name<'a>(path: &'a str, base_path: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base_path)?.strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// 404 or 405: no event's call, counted under `event="none"`.
fn not_found(rt: &Runtime, outcome: Outcome, code: &str, message: &str) -> Response<Full<Bytes>> {
    let status = if outcome == Outcome::MethodNotAllowed {
        405
    } else {
        404
    };
    let mut response = json_response(status, error_bytes(code, message), None);
    response.extensions_mut().insert(CallRecord {
        metrics: rt.no_event.clone(),
        outcome,
        event: None,
        subscription: None,
        note: CallNote::default(),
    });
    response
}

fn too_large(max: usize, sub: Option<&Subscription>, record: CallRecord) -> Response<Full<Bytes>> {
    let message = format!("the body is larger than max_body_bytes ({max})");
    let mut response = json_response(413, error_bytes("PAYLOAD_TOO_LARGE", &message), sub);
    // The rest of the body is never read, so this connection cannot carry another call.
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response.extensions_mut().insert(record);
    response
}

fn refused(refusal: &Refusal, record: CallRecord) -> Response<Full<Bytes>> {
    let body = error_bytes(refusal.code, &refusal.message);
    let mut response = json_response(400, body, refusal.subscription.as_deref());
    response.extensions_mut().insert(record);
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
}
