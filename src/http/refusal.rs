//! The webhook listener's error answers that come before the pipeline: each one JSON,
//! signed when the subscription is known, and carrying the [`CallRecord`] telemetry reads.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION};
use http::Response;
use http_body_util::Full;

use super::json_response;
use super::layers::CallRecord;
use crate::config::Subscription;
use crate::pipeline::{error_bytes, Refusal};

/// A failed check of GATEWAY.md 6: `400`.
pub(super) fn refused(refusal: &Refusal, record: CallRecord) -> Response<Full<Bytes>> {
    let body = error_bytes(refusal.code, &refusal.message);
    let mut response = json_response(400, body, refusal.subscription.as_deref());
    response.extensions_mut().insert(record);
    response
}

/// `413`: the body is over `max_body_bytes`.
pub(super) fn too_large(
    max: usize,
    sub: Option<&Subscription>,
    record: CallRecord,
) -> Response<Full<Bytes>> {
    let message = format!("the body is larger than max_body_bytes ({max})");
    closing(413, "PAYLOAD_TOO_LARGE", &message, sub, record)
}

/// An error answer given before the body was read to its end, so the connection cannot
/// carry another call: it says `Connection: close`.
pub(super) fn closing(
    status: u16,
    code: &str,
    message: &str,
    sub: Option<&Subscription>,
    record: CallRecord,
) -> Response<Full<Bytes>> {
    let mut response = json_response(status, error_bytes(code, message), sub);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response.extensions_mut().insert(record);
    response
}
