//! Same-origin only on the admin listener. A page in the operator's browser may send
//! requests to `127.0.0.1:9090` (a form POST with `Content-Type: text/plain` needs no CORS
//! preflight), so `POST /reload` and the rest would otherwise be open to any web site the
//! operator visits. Tools (curl, Prometheus, back ends) send neither header and pass.

use http::header::{HOST, ORIGIN};
use http::HeaderMap;

/// Why a request looks like it came from another site's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CrossOrigin {
    #[error("the Origin header does not match the Host header")]
    OriginMismatch,
    #[error("Sec-Fetch-Site says the request comes from another site")]
    FetchSite,
}

/// `Ok` unless the browser headers say the request comes from a page of another origin:
/// an `Origin` that is not `http(s)://{Host}`, or a `Sec-Fetch-Site` other than
/// `same-origin` and `none` (typed in the address bar); `same-site` is refused too, as a
/// page on another port of the same host is same-site.
pub fn check(headers: &HeaderMap) -> Result<(), CrossOrigin> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if !site.eq_ignore_ascii_case(b"same-origin") && !site.eq_ignore_ascii_case(b"none") {
            return Err(CrossOrigin::FetchSite);
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(HOST).map(|h| h.as_bytes().trim_ascii());
    let origin = origin.as_bytes().trim_ascii();
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    match (authority, host) {
        (Some(authority), Some(host))
            if !host.is_empty() && authority.eq_ignore_ascii_case(host) =>
        {
            Ok(())
        }
        _ => Err(CrossOrigin::OriginMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn tools_without_browser_headers_pass() {
        assert_eq!(check(&headers(&[("host", "127.0.0.1:9090")])), Ok(()));
    }

    #[test]
    fn a_page_of_the_admin_listener_itself_passes() {
        let same = [
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(check(&headers(&same)), Ok(()));
    }

    #[test]
    fn another_origin_or_site_is_refused() {
        let evil = [
            ("host", "127.0.0.1:9090"),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(check(&headers(&evil)), Err(CrossOrigin::OriginMismatch));
        let other_port = [
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:3000"),
        ];
        assert_eq!(
            check(&headers(&other_port)),
            Err(CrossOrigin::OriginMismatch)
        );
        let null = [("host", "127.0.0.1:9090"), ("origin", "null")];
        assert_eq!(check(&headers(&null)), Err(CrossOrigin::OriginMismatch));
        let no_host = [("origin", "http://127.0.0.1:9090")];
        assert_eq!(check(&headers(&no_host)), Err(CrossOrigin::OriginMismatch));
        for site in ["cross-site", "same-site"] {
            let fetch = [("host", "127.0.0.1:9090"), ("sec-fetch-site", site)];
            assert_eq!(
                check(&headers(&fetch)),
                Err(CrossOrigin::FetchSite),
                "{site}"
            );
        }
    }
}
