//! A [`Refusal`] as the webhook listener sends it: its status and body from
//! [`crate::error_answer`], signed when the request names a known subscription, with the
//! headers it calls for, and the [`CallRecord`] telemetry reads.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION};
use http::Response;
use http_body_util::Full;

use super::json_response;
use super::webhook::Addressee;
use crate::error_answer::Refusal;
use crate::pipeline::CallNote;

pub(super) fn refused(refusal: Refusal, to: &Addressee) -> Response<Full<Bytes>> {
    // A refused call was not verified: signed with the subscription's current secret.
    let signer = to.subscription.as_deref().map(|s| &s.secret);
    let mut response = json_response(refusal.status(), refusal.body(), signer);
    let headers = response.headers_mut();
    if refusal.closes_connection() {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(allow) = refusal.allow() {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    let record = to.record(refusal.outcome(), CallNote::default());
    response.extensions_mut().insert(record);
    response
}
