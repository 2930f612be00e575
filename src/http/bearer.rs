//! Who may use which admin endpoint (GATEWAY.md 10): `admin.token` opens every endpoint,
//! `admin.push_token` only `/push/...`; `/healthz`, `/readyz`, the console page (which
//! asks for the token itself) and the OpenAPI document (no secrets in it) are open, so
//! probes, the page's first load and an integrator's first look need none.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::config::Admin;
use crate::error_answer::Unauthorized;

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Open,
    /// `admin.token` or `admin.push_token`.
    Push,
    /// `admin.token` only.
    Admin,
}

fn door(path: &str) -> Door {
    match path {
        "/healthz" | "/readyz" | "/" | "/openapi.json" => Door::Open,
        _ if path == "/push" || path.starts_with("/push/") => Door::Push,
        _ => Door::Admin,
    }
}

/// `Ok` when the request may reach `path` with the tokens of `admin`.
pub(super) fn check(admin: &Admin, path: &str, headers: &HeaderMap) -> Result<(), Unauthorized> {
    let door = door(path);
    let Some(token) = &admin.token else {
        // No admin.token: only loopback listens (config refuses the rest). A push_token
        // alone still guards /push, so a back end's token is never decoration.
        return match (door, &admin.push_token) {
            (Door::Push, Some(push)) => presented(headers).and_then(|p| {
                push.matches(p)
                    .then_some(())
                    .ok_or(Unauthorized::WrongToken)
            }),
            _ => Ok(()),
        };
    };
    if door == Door::Open {
        return Ok(());
    }
    let presented = presented(headers)?;
    if token.matches(presented) {
        return Ok(());
    }
    match (&admin.push_token, door) {
        (Some(push), Door::Push) if push.matches(presented) => Ok(()),
        (Some(push), Door::Admin) if push.matches(presented) => Err(Unauthorized::PushOnly),
        _ => Err(Unauthorized::WrongToken),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn presented(headers: &HeaderMap) -> Result<&[u8], Unauthorized> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(Unauthorized::NoToken)?
        .as_bytes()
        .trim_ascii();
    let (scheme, token) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|i| value.split_at(i))
        .ok_or(Unauthorized::NotBearer)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Unauthorized::NotBearer);
    }
    Ok(token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Token;
    use http::HeaderValue;

    fn admin(token: Option<&str>, push: Option<&str>) -> Admin {
        Admin {
            listen: "127.0.0.1:9090".parse().unwrap(),
            token: token.and_then(Token::new),
            push_token: push.and_then(Token::new),
        }
    }

    fn bearer(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_admin_token_opens_everything_the_push_token_only_push() {
        let a = admin(Some("adm"), Some("psh"));
        assert_eq!(check(&a, "/conversations", &bearer("Bearer adm")), Ok(()));
        assert_eq!(check(&a, "/push/s/1/2", &bearer("bearer adm")), Ok(()));
        assert_eq!(check(&a, "/push/s/1/2", &bearer("Bearer psh")), Ok(()));
        assert_eq!(
            check(&a, "/reload", &bearer("Bearer psh")),
            Err(Unauthorized::PushOnly)
        );
        assert_eq!(
            check(&a, "/reload", &bearer("Bearer nope")),
            Err(Unauthorized::WrongToken)
        );
        assert_eq!(
            check(&a, "/reload", &bearer("Basic YWRtOg==")),
            Err(Unauthorized::NotBearer)
        );
        assert_eq!(
            check(&a, "/metrics", &HeaderMap::new()),
            Err(Unauthorized::NoToken)
        );
        for open in ["/healthz", "/readyz", "/", "/openapi.json"] {
            assert_eq!(check(&a, open, &HeaderMap::new()), Ok(()), "{open}");
        }
    }

    #[test]
    fn without_an_admin_token_only_a_push_token_guards_push() {
        let a = admin(None, Some("psh"));
        assert_eq!(check(&a, "/reload", &HeaderMap::new()), Ok(()));
        assert_eq!(
            check(&a, "/push/s/1/2", &HeaderMap::new()),
            Err(Unauthorized::NoToken)
        );
        assert_eq!(check(&a, "/push/s/1/2", &bearer("Bearer psh")), Ok(()));
        assert_eq!(
            check(&admin(None, None), "/push/x", &HeaderMap::new()),
            Ok(())
        );
    }
}
