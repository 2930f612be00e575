//! What a call's untrusted bytes go through before any rule runs: the signature check, the
//! lenient JSON parse into the rule's `event` map, and the conversation key.
//!
//! Input: one byte giving the length of the `X-Mplus-Signature` value (0..=64), that value,
//! then the body. Beyond "never panics", it checks the properties the pipeline relies on:
//! the body's own signature verifies and a one-bit change does not; a parsed body has a
//! JSON form that parses strictly to the same key; `eventCounter` never changes the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollgate::body;
use pollgate::conversation::{ConversationKey, KeyPart};
use pollgate::signature::{Secret, SignatureError};
use rhai::{Dynamic, Map};

const EVENT: &str = "addSessionLine";

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 65).min(rest.len());
    let (header, raw) = rest.split_at(len);
    signature(header, raw);
    let Ok(event) = body::parse(raw) else {
        return;
    };
    key(&event);
});

fn signature(header: &[u8], raw: &[u8]) {
    let secret = Secret::from_key(b"pollgate-fuzz-secret");
    let signed = secret.sign(raw);
    // Whatever the header, verifying answers (no panic); only the real signature passes.
    let verdict = secret.verify(header, raw);
    if verdict.is_ok() {
        assert_eq!(
            header.trim_ascii(),
            signed.as_bytes(),
            "only the body's own signature verifies"
        );
    }
    assert_eq!(secret.verify(signed.as_bytes(), raw), Ok(()));
    if !raw.is_empty() {
        let mut changed = raw.to_vec();
        let bit = usize::from(header.first().copied().unwrap_or(0));
        changed[bit % raw.len()] ^= 1 << (bit % 8);
        assert_eq!(
            secret.verify(signed.as_bytes(), &changed),
            Err(SignatureError::Mismatch),
            "a one-bit change of the body is refused"
        );
    }
}

fn key(event: &Map) {
    let derive = |map: &Map| ConversationKey::derive(&KeyPart::ALL, "shop", EVENT, map);
    let key = derive(event);
    assert_eq!(derive(event), key, "derivation is stable");

    // The map's JSON (what a forward or the state store would carry) parses strictly into
    // a map with the same key: the lenient pass never produced something JSON cannot hold.
    let json = serde_json::to_vec(&Dynamic::from_map(event.clone()))
        .expect("a parsed body has a JSON form");
    let again = body::from_json(&json)
        .expect("its JSON parses strictly")
        .try_cast::<Map>()
        .expect("still an object");
    assert_eq!(derive(&again), key, "the key survives a JSON round trip");

    // `eventCounter` is never part of the key (MPLUS.md 5).
    let mut recounted = event.clone();
    let mut header = recounted
        .get("event")
        .and_then(|e| e.clone().try_cast::<Map>())
        .unwrap_or_default();
    let counter = header
        .get("eventCounter")
        .and_then(|c| c.as_int().ok())
        .unwrap_or(0);
    header.insert(
        "eventCounter".into(),
        Dynamic::from_int(counter.wrapping_add(1)),
    );
    recounted.insert("event".into(), Dynamic::from_map(header));
    assert_eq!(
        derive(&recounted),
        key,
        "eventCounter does not change the key"
    );
}
