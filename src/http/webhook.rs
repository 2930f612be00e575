//! The webhook handler: routing, reading the body between the pipeline's checks before and
//! after it, and signing the pipeline's answer.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;

use super::json_response;
use super::layers::CallRecord;
use super::overload::{read_body, BodyBudget, BodyError, BodyLimits};
use super::refusal::refused;
use crate::config::Subscription;
use crate::error_answer::Refusal;
use crate::gateway::Gateway;
use crate::pipeline::{self, Answer, CallNote};
use crate::runtime::Runtime;
use crate::telemetry::{EventMetrics, Outcome};

/// Who a request is for, from its head alone: the generation it is answered with, its
/// route, what any answer to it is counted under and signed with, even one given before
/// (or instead of) the handler's own.
#[derive(Clone)]
pub struct Addressee {
    /// The generation loaded when the call came in; the handler answers with it too.
    pub rt: Arc<Runtime>,
    /// The event name of a POST to a valid event path; else why it is no event's call
    /// (`NotFound`, `MethodNotAllowed`), counted under `event="none"`.
    pub route: Result<String, Refusal>,
    pub metrics: Arc<EventMetrics>,
    /// The subscription named by the headers, when it is a known one: every answer is
    /// signed with it, a 404 or 405 too.
    pub subscription: Option<Arc<Subscription>>,
}

impl Addressee {
    pub fn of(rt: Arc<Runtime>, method: &Method, path: &str, headers: &HeaderMap) -> Self {
        let subscription = pipeline::subscription(&rt, headers).ok();
        let route = match event_name(path, &rt.config.server.base_path) {
            None => Err(Refusal::NotFound),
            Some(_) if method != Method::POST => Err(Refusal::MethodNotAllowed),
            Some(event) => Ok(event.to_owned()),
        };
        let metrics = match &route {
            Ok(event) => rt
                .event(event)
                .map_or_else(|| rt.unconfigured.clone(), |e| e.metrics.clone()),
            Err(_) => rt.no_event.clone(),
        };
        Self {
            rt,
            route,
            metrics,
            subscription,
        }
    }

    /// What telemetry records for an answer with `outcome`.
    pub fn record(&self, outcome: Outcome, note: CallNote) -> CallRecord {
        CallRecord {
            metrics: self.metrics.clone(),
            outcome,
            event: self.route.as_ref().ok().cloned(),
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
    let (mut parts, body) = req.into_parts();
    let to = parts.extensions.remove::<Addressee>().unwrap_or_else(|| {
        let rt = gateway.runtime.load_full();
        Addressee::of(rt, &parts.method, parts.uri.path(), &parts.headers)
    });
    let response = match call(&gateway, &budget, &to, &mut parts, body).await {
        Ok((sub, signer, answer)) => {
            let signer = sub.signer(signer);
            let mut response = json_response(answer.status, answer.body, Some(signer));
            let record = to.record(answer.outcome, answer.note);
            response.extensions_mut().insert(record);
            response
        }
        Err(refusal) => refused(refusal, &to),
    };
    Ok(response)
}

/// Routes a request, reads its body between the pipeline's checks before and after it,
/// and has the pipeline answer it; the answer, the subscription and which of its secrets
/// signs it.
///
/// The head's path and headers are dropped once the checks are done: they are slices of
/// the buffer hyper read the call into, which would stay allocated (8 KiB) for as long as
/// the call runs, a held backgroundPoll call's whole hold (GATEWAY.md 7, 9). Replaced in
/// place (neither replacement allocates), so the call's future holds no second head.
async fn call<B>(
    gateway: &Gateway,
    budget: &BodyBudget,
    to: &Addressee,
    parts: &mut Parts,
    body: B,
) -> Result<(Arc<Subscription>, usize, Answer), Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let event_name = to.route.as_deref().map_err(|refusal| *refusal)?;
    let rt = &*to.rt;
    let server = &rt.config.server;
    let max = server.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Refusal::TooLarge { max });
    }
    let head = pipeline::check_head(rt, event_name, &parts.headers)?;
    let limits = BodyLimits {
        max_bytes: max as u64,
        budget: server.max_buffered_bytes,
        timeout: server.body_timeout,
    };
    let (raw, reservation) = read_body(body, declared, budget, limits)
        .await
        .map_err(|e| unread(e, max))?;
    let verified = pipeline::check_body(head, &parts.headers, raw);
    // Checked bytes no longer count as a body being read.
    drop(reservation);
    parts.headers = HeaderMap::new();
    parts.uri = Uri::default();
    let verified = verified?;
    let sub = verified.subscription().clone();
    let signer = verified.signer();
    // Boxed: held inline, the pipeline's future (4 KB, measured) is copied with every
    // future around it (layers, hyper's dispatcher), several times a call.
    let answer = Box::pin(pipeline::answer(gateway, rt, verified));
    Ok((sub, signer, answer.await))
}

/// Why a call's body could not be read in full.
fn unread(error: BodyError, max: usize) -> Refusal {
    match error {
        BodyError::TooLarge => Refusal::TooLarge { max },
        BodyError::Overloaded => Refusal::Overloaded,
        BodyError::TimedOut => Refusal::BodyTimeout,
        BodyError::Broken(e) => {
            tracing::debug!("request body broken off: {e}");
            Refusal::BodyBroken
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use super::{event_name, Gateway};

    /// A gateway over a memory store, from `events` (YAML under `events:`) with the files
    /// in `files`; its folder must outlive it.
    fn gateway(events: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Gateway) {
        use crate::config::Config;
        use crate::conversation::{Clock, MemoryStore, Store};
        use crate::telemetry::Metrics;

        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("file");
        }
        let path = dir.path().join("pollgate.yaml");
        let yaml = format!(
            "server: {{listen: '127.0.0.1:0'}}\nadmin: {{listen: '127.0.0.1:0'}}\n\
             subscriptions:\n  s: {{secret: 'c2VjcmV0'}}\nevents:\n{events}"
        );
        std::fs::write(&path, yaml).expect("config");
        let config = Config::load(&path, &|_| None).expect("config loads");
        let ttl = config.state.ttl;
        let metrics = Arc::new(Metrics::new());
        let runtime = crate::runtime::Runtime::build(config, &metrics, 1).expect("runtime");
        let store = Store::Memory(MemoryStore::new(ttl));
        let gateway = Gateway::new(runtime, store, Clock::system(), metrics);
        (dir, gateway)
    }

    /// The future of one webhook call is moved several times a call (the layer's box,
    /// hyper's dispatcher), so its size is a cost every call pays: the pipeline's stages
    /// that most calls never reach are boxed, and the pipeline once (measured in a release
    /// build, the layer's inner future: 15.9 KB before, 1.5 KB after). In this test's debug
    /// build the handler's future is 1,632 bytes, 2.8 KB with the pipeline inline; a held
    /// backgroundPoll call keeps it for its whole hold (GATEWAY.md 7).
    #[test]
    fn a_webhook_calls_future_stays_small() {
        let events = "  addSessionLine: {rule: rule.rhai, polling: {timeout: 1h}}\n";
        let (_dir, gateway) = gateway(events, &[("rule.rhai", "finish(\"ok\", \"\")")]);
        let request = http::Request::post("/webhooks/addSessionLine")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let call = super::handle(gateway, super::BodyBudget::default(), request);
        let size = std::mem::size_of_val(&call);
        assert!(size <= 1792, "a webhook call's future is {size} bytes");
    }

    /// hyper reads a call into one buffer and hands out its head (path, header values) and
    /// body as slices of it. A held backgroundPoll call keeps none of them, so the buffer
    /// (8 KiB) is not kept allocated for the whole hold (GATEWAY.md 7: 10,000 held calls
    /// in under 256 MB).
    #[tokio::test(start_paused = true)]
    async fn a_held_call_keeps_no_slice_of_the_buffer_it_was_read_into() {
        use std::task::Poll;

        use http::HeaderValue;

        use crate::push::PushMailbox;

        let (_dir, gateway) = gateway("  backgroundPoll: {push: {hold: 1h}}\n", &[]);
        let body =
            br#"{"event":{"eventBlocking":true},"sender":{"branchNumber":1,"workplaceNumber":2}}"#;
        let signature =
            crate::signature::Secret::decode("c2VjcmV0", crate::signature::Encoding::Base64)
                .expect("secret")
                .sign(body);
        // One buffer for the whole call, as hyper reads it.
        let path = "/webhooks/backgroundPoll";
        let mut read = bytes::BytesMut::new();
        for part in [
            path.as_bytes(),
            b"s",
            b"application/json",
            signature.as_bytes(),
            body,
        ] {
            read.extend_from_slice(part);
        }
        let buffer = read.freeze();
        let mut at = 0;
        let mut slice = |len: usize| {
            at += len;
            buffer.slice(at - len..at)
        };
        let uri = http::Uri::from_maybe_shared(slice(path.len())).expect("uri");
        let mut request = http::Request::post(uri);
        for (name, len) in [
            ("x-mplus-subscription-id", 1),
            ("content-type", 16),
            ("x-mplus-signature", signature.len()),
        ] {
            let value = HeaderValue::from_maybe_shared(slice(len)).expect("header value");
            request = request.header(name, value);
        }
        let request = request
            .body(http_body_util::Full::new(slice(body.len())))
            .expect("request");
        let held = gateway.push.mailbox().wakers().clone();
        let mut call = std::pin::pin!(super::handle(
            gateway.clone(),
            super::BodyBudget::default(),
            request
        ));
        let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the call holds");
        assert_eq!(held.held(), 1);
        assert!(
            buffer.is_unique(),
            "a held call keeps a slice of the buffer it was read into"
        );
    }

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
