//! The checks of GATEWAY.md 6, in order: [`check_head`] before the body is read, then
//! [`check_body`] over its bytes. [`Verified`] can only be made here, so nothing downstream
//! can see a call whose signature was not checked. The webhook handler and `pollgate test`
//! both go through these two calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use rhai::Map;

use crate::body::{self, BodyError, Wanted};
use crate::config::{KeyPart, Subscription};
use crate::conversation::ConversationKey;
use crate::error_answer::Refusal;
use crate::runtime::{How, Runtime};
use crate::signature::{SIGNATURE_HEADER, SUBSCRIPTION_HEADER};

/// A call whose headers passed the checks that come before its body.
pub struct Head {
    subscription: Arc<Subscription>,
    event_name: String,
    /// What of the body to build: `None` for an event that is not configured (answered
    /// `{}` whatever it holds).
    reads: Option<Arc<Wanted>>,
}

/// A call whose subscription, signature, content type and body were all checked.
pub struct Verified {
    pub(super) subscription: Arc<Subscription>,
    pub(super) event_name: String,
    pub(super) raw: Bytes,
    pub(super) body: Map,
    /// Which of the subscription's secrets verified the call ([`Subscription::verify`]).
    pub(super) signer: usize,
}

impl Verified {
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.subscription
    }

    pub fn event_name(&self) -> &str {
        &self.event_name
    }

    /// Which of the subscription's secrets verified the call: its answer is signed with it
    /// ([`Subscription::signer`]), so a till still on a previous secret can check it.
    pub fn signer(&self) -> usize {
        self.signer
    }
}

/// What of a body a call of `event_name` answered by `how` needs built: what the conversation
/// key reads (`parts`), the error of an error request (MPLUS.md 6), whether the till waits
/// (`event.eventBlocking`), the till it comes from (`sender`: the conversation's record
/// names it, GATEWAY.md 10, and a push channel is addressed by it, 9), and what the rule
/// reads. The `"*"` event answers calls of any name, whose own object may be a key part:
/// all of it.
pub fn body_reads(parts: &[KeyPart], event_name: &str, how: &How) -> Wanted {
    if event_name == "*" {
        return Wanted::All;
    }
    let wanted = ConversationKey::reads(parts, event_name)
        .union(Wanted::path(&["error"]))
        .union(Wanted::path(&["event", "eventBlocking"]))
        .union(Wanted::path(&["sender", "branchNumber"]))
        .union(Wanted::path(&["sender", "workplaceNumber"]));
    match how {
        How::Rule(rule) => wanted.union(rule.event_reads()),
        How::Respond(_) | How::Reply | How::Push => wanted,
    }
}

/// The subscription named by the headers (the first two checks).
pub fn subscription(runtime: &Runtime, headers: &HeaderMap) -> Result<Arc<Subscription>, Refusal> {
    let id = headers
        .get(SUBSCRIPTION_HEADER)
        .ok_or(Refusal::NoSubscriptionId)?;
    let id = std::str::from_utf8(id.as_bytes().trim_ascii()).unwrap_or("");
    runtime
        .config
        .subscriptions
        .get(id)
        .cloned()
        .ok_or(Refusal::InvalidSubscriptionId)
}

/// The checks before the body is read: the subscription, and that a signature is there.
pub fn check_head(
    runtime: &Runtime,
    event_name: &str,
    headers: &HeaderMap,
) -> Result<Head, Refusal> {
    let subscription = subscription(runtime, headers)?;
    if !headers.contains_key(SIGNATURE_HEADER) {
        return Err(Refusal::NoSignature);
    }
    Ok(Head {
        subscription,
        event_name: event_name.to_owned(),
        reads: runtime.event(event_name).map(|e| e.reads.clone()),
    })
}

/// The remaining checks, over the raw body bytes: signature, content type, JSON object.
pub fn check_body(head: Head, headers: &HeaderMap, raw: Bytes) -> Result<Verified, Refusal> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map_or(&b""[..], |v| v.as_bytes());
    let signer = head
        .subscription
        .verify(signature, &raw)
        .map_err(Refusal::InvalidSignature)?;
    let content_type = headers.get(CONTENT_TYPE).ok_or(Refusal::NoContentType)?;
    let essence = content_type
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    if !essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
    {
        return Err(Refusal::InvalidContentType);
    }
    let reads = head
        .reads
        .as_deref()
        .unwrap_or(const { &Wanted::Fields(BTreeMap::new()) });
    let body = body::parse_wanted(&raw, reads).map_err(|e| match e {
        BodyError::InvalidJson(_) => Refusal::InvalidJson,
        BodyError::NotAnObject => Refusal::InvalidData,
    })?;
    Ok(Verified {
        subscription: head.subscription,
        event_name: head.event_name,
        raw,
        body,
        signer,
    })
}
