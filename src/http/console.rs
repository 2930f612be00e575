//! The operator's console (GATEWAY.md 10): one page at `GET /` of the admin listener, HTML,
//! CSS and JavaScript in one file built into the binary, with no external assets (it works
//! on a shop's offline network) and no build step. The page loads without a token; every
//! data request it makes (`/conversations`, `/conversations/{key}`, `/status`, `/metrics`)
//! sends the bearer token it asked for, kept in the tab's sessionStorage.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use http_body_util::Full;

const PAGE: &str = include_str!("console/index.html");

/// Inline script and style only, requests to this listener only, never framed.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}
