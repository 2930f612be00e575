//! `GET /openapi.json` on the admin listener: the OpenAPI 3.1 document of every admin
//! endpoint, written by hand beside the handlers (`openapi.json`) and built into the binary.
//! Open like `/healthz` (`http::bearer`): it holds no secrets, and a back end's developer
//! fetches it before having a token. `tests/openapi.rs` keeps it true: every route in it and
//! no other, and schemathesis against the real server.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use http_body_util::Full;

const DOCUMENT: &str = include_str!("openapi.json");

pub(super) fn document() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A new binary may serve another document at the same address.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_of_this_version() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let openapi = doc["openapi"].as_str().unwrap();
        assert!(openapi.starts_with("3.1."), "{openapi}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }
}
