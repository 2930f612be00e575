//! Properties of the parsers every call goes through (GATEWAY.md 12), over generated input:
//! JSON to the Rhai values rules see and back, the lenient reading of bodies, signatures,
//! and conversation keys. The fuzz targets in `fuzz/` check the same things on raw bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pollgate::body;
use pollgate::conversation::{ConversationKey, KeyPart};
use pollgate::signature::Secret;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rhai::{Dynamic, Map};
use serde_json::{json, Value};

// ---- generators ----

/// Any string, escapes, quotes, control characters and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(|chars| chars.into_iter().collect())
}

/// A finite float (JSON has no NaN or infinity).
fn float() -> impl Strategy<Value = f64> {
    any::<f64>().prop_map(|f| if f.is_finite() { f } else { 0.5 })
}

/// Any JSON value a till, a back end or a rule's `state` can hold: integers in i64 (Rhai's
/// integer), finite floats, strings, and nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        float().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A call body shaped like MPLUS.md's, with every part of the key generated.
fn call_body() -> impl Strategy<Value = Value> {
    (
        (any::<i64>(), any::<i64>(), text()),
        (text(), text(), any::<i64>()),
        (json_value(), json_value()),
    )
        .prop_map(
            |((branch, workplace, instance), (session, timestamp, counter), (object, extra))| {
                json!({
                    "event": {"eventCounter": counter, "eventTimestamp": timestamp, "eventBlocking": true},
                    "sender": {"branchNumber": branch, "workplaceNumber": workplace, "instanceId": instance},
                    "session": {"sessionId": session, "lines": []},
                    "addSessionLine": object,
                    "extra": extra,
                })
            },
        )
}

// ---- a lenient writer: the same value as MPLUS.md's examples spell it ----

/// Writes `value` as JSON with the liberties the documented examples take, chosen by
/// `choices`: comments between tokens (some holding `,`, `]` and `}`), trailing commas,
/// members in reverse order, and duplicate keys whose last value is the real one.
fn lenient(value: &Value, choices: &[u8]) -> String {
    let mut out = String::new();
    let mut next = choices.iter().copied().cycle();
    write_lenient(value, &mut next, &mut out);
    out
}

fn write_lenient(value: &Value, next: &mut impl Iterator<Item = u8>, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for item in items {
                filler(pick(next), out);
                write_lenient(item, next, out);
                out.push(',');
            }
            if !items.is_empty() && pick(next).is_multiple_of(2) {
                out.pop(); // no trailing comma this time
            }
            filler(pick(next), out);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut members: Vec<_> = map.iter().collect();
            if pick(next) % 2 == 1 {
                members.reverse();
            }
            for (key, item) in &members {
                let key = serde_json::to_string(key).unwrap();
                if pick(next).is_multiple_of(5) {
                    // A duplicate before the real member: the last one wins.
                    out.push_str(&format!("{key}: \"decoy\","));
                }
                filler(pick(next), out);
                out.push_str(&key);
                out.push(':');
                write_lenient(item, next, out);
                out.push(',');
            }
            if !members.is_empty() && pick(next).is_multiple_of(2) {
                out.pop();
            }
            filler(pick(next), out);
            out.push('}');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap()),
    }
}

fn pick(next: &mut impl Iterator<Item = u8>) -> u8 {
    next.next().unwrap_or(0)
}

fn filler(choice: u8, out: &mut String) {
    out.push_str(match choice % 6 {
        0 => "",
        1 => " ",
        2 => "\n  ",
        3 => "/* a comment, ] } */",
        4 => "// to the end of the line, } ]\n",
        _ => "\t/**/ ",
    });
}

// ---- helpers ----

fn as_object(value: &Value) -> Map {
    body::parse(&serde_json::to_vec(value).unwrap()).expect("an object parses")
}

/// What a rule value is as JSON.
fn to_value(map: Map) -> Value {
    serde_json::to_value(Dynamic::from_map(map)).expect("JSON form")
}

fn derive(map: &Map) -> ConversationKey {
    ConversationKey::derive(&KeyPart::ALL, "shop", "addSessionLine", map)
}

/// Every path to a value inside `value`'s objects (arrays end a path).
fn paths_of(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            prefix.push(key.clone());
            out.push(prefix.clone());
            paths_of(inner, prefix, out);
            prefix.pop();
        }
    }
}

/// Some of `value`'s paths, as `choices` picks them, and one that is not there.
fn some_paths(value: &Value, choices: &[bool]) -> body::Wanted {
    let mut all = Vec::new();
    paths_of(value, &mut Vec::new(), &mut all);
    all.push(vec!["not there".to_owned(), "at all".to_owned()]);
    all.iter()
        .zip(choices.iter().cycle())
        .filter(|(_, &take)| take)
        .fold(body::Wanted::none(), |w, (path, _)| {
            w.union(body::Wanted::path(path))
        })
}

/// What of `value` a call built with `wanted` should hold: `wanted`'s paths as they are
/// in `value`, objects on the way with only the keys asked for, other values whole.
fn projected(value: &Value, wanted: &body::Wanted) -> Value {
    match (value, wanted) {
        (Value::Object(map), body::Wanted::Fields(fields)) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| fields.get(k).map(|w| (k.clone(), projected(v, w))))
                .collect(),
        ),
        _ => value.clone(),
    }
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    changed[bit / 8 % bytes.len()] ^= 1 << (bit % 8);
    changed
}

// ---- properties ----

proptest! {
    // A failing case is saved beside this file (tests/properties.regressions) and tried
    // first on later runs; the default looks for a lib.rs, which integration tests lack.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_json_value_reads_back_as_itself_through_from_json_and_serde(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let dynamic = body::from_json(&bytes).expect("its own JSON");
        let back = serde_json::to_value(&dynamic).expect("JSON form");
        prop_assert_eq!(&back, &value);
        // And the bytes are stable from there on.
        let again = serde_json::to_vec(&body::from_json(&serde_json::to_vec(&dynamic).unwrap()).unwrap()).unwrap();
        prop_assert_eq!(again, serde_json::to_vec(&dynamic).unwrap());
    }

    #[test]
    fn any_json_object_reads_back_as_itself_through_the_request_parse(value in json_object()) {
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        prop_assert_eq!(to_value(body::parse(&pretty).expect("parses")), value);
    }

    #[test]
    fn comments_trailing_commas_order_and_duplicates_do_not_change_what_is_read(
        value in json_object(),
        choices in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = lenient(&value, &choices);
        let map = body::parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e} for the lenient text {text}"));
        prop_assert_eq!(to_value(map), value, "read from {}", text);
    }

    #[test]
    fn signing_then_verifying_any_bytes_succeeds(
        key in prop::collection::vec(any::<u8>(), 1..80),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let secret = Secret::from_key(&key);
        let signature = secret.sign(&body);
        prop_assert_eq!(secret.verify(signature.as_bytes(), &body), Ok(()));
    }

    #[test]
    fn any_one_bit_change_of_body_signature_or_key_fails_verification(
        key in prop::collection::vec(any::<u8>(), 1..80),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        bit in any::<usize>(),
    ) {
        let secret = Secret::from_key(&key);
        let signature = secret.sign(&body);
        prop_assert!(secret.verify(signature.as_bytes(), &flip(&body, bit)).is_err(), "body bit");
        prop_assert!(secret.verify(&flip(signature.as_bytes(), bit), &body).is_err(), "signature bit");
        let other = Secret::from_key(&flip(&key, bit));
        prop_assert!(other.verify(signature.as_bytes(), &body).is_err(), "key bit");
    }

    #[test]
    fn key_derivation_is_stable_and_ignores_event_counter_and_spelling(
        call in call_body(),
        counter in any::<i64>(),
        choices in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let key = derive(&as_object(&call));
        prop_assert_eq!(derive(&as_object(&call)), key, "stable");
        let mut recounted = call;
        recounted["event"]["eventCounter"] = json!(counter);
        prop_assert_eq!(derive(&as_object(&recounted)), key, "eventCounter is not a part");
        // Member order, comments, trailing commas and decoy duplicates: the same call.
        let spelled = lenient(&recounted, &choices);
        prop_assert_eq!(derive(&body::parse(spelled.as_bytes()).unwrap()), key, "spelled {}", spelled);
    }

    #[test]
    fn a_different_event_timestamp_or_till_is_a_different_conversation(
        call in call_body(),
        other in text(),
        workplace in any::<i64>(),
    ) {
        let key = derive(&as_object(&call));
        if call["event"]["eventTimestamp"] != json!(other) {
            let mut later = call.clone();
            later["event"]["eventTimestamp"] = json!(other);
            prop_assert_ne!(derive(&as_object(&later)), key);
        }
        if call["sender"]["workplaceNumber"] != json!(workplace) {
            let mut elsewhere = call;
            elsewhere["sender"]["workplaceNumber"] = json!(workplace);
            prop_assert_ne!(derive(&as_object(&elsewhere)), key);
        }
    }

    #[test]
    fn a_body_built_in_part_holds_what_was_wanted_exactly_as_sent(
        value in json_object(),
        choices in prop::collection::vec(any::<bool>(), 1..16),
        spelling in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let wanted = some_paths(&value, &choices);
        let text = lenient(&value, &spelling);
        let map = body::parse_wanted(text.as_bytes(), &wanted).expect("parses");
        prop_assert_eq!(to_value(map), projected(&value, &wanted), "read from {}", text);
    }

    #[test]
    fn a_body_built_in_part_is_refused_exactly_when_the_whole_is(
        value in json_object(),
        choices in prop::collection::vec(any::<bool>(), 1..16),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let wanted = some_paths(&value, &choices);
        let mut bytes = serde_json::to_vec(&value).unwrap();
        let at = cut.index(bytes.len());
        bytes[at] = byte;
        prop_assert_eq!(
            body::parse_wanted(&bytes, &wanted).is_ok(),
            body::parse(&bytes).is_ok(),
            "{:?}", String::from_utf8_lossy(&bytes)
        );
        bytes.truncate(at);
        prop_assert_eq!(body::parse_wanted(&bytes, &wanted).is_ok(), body::parse(&bytes).is_ok());
    }

    #[test]
    fn the_key_of_a_body_built_with_what_the_key_reads_is_the_key_of_the_whole(
        call in call_body(),
        spelling in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = lenient(&call, &spelling);
        let reads = ConversationKey::reads(&KeyPart::ALL, "addSessionLine");
        let part = body::parse_wanted(text.as_bytes(), &reads).unwrap();
        prop_assert_eq!(derive(&part), derive(&as_object(&call)));
    }
}
