//! JSON to the Rhai values rules see and back (`body::from_json`, then serde): what every
//! request body, forward reply and stored `state` goes through.
//!
//! Checks: `from_json` accepts exactly what serde_json accepts; the values are serde_json's
//! (integers beyond i64 become floats, as Rhai has no wider integer); and writing them out
//! and reading them back is stable: the second JSON is byte for byte the first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollgate::body;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let dynamic = body::from_json(data);
    let reference = serde_json::from_slice::<Value>(data);
    assert_eq!(
        dynamic.is_ok(),
        reference.is_ok(),
        "from_json and serde_json disagree on whether this is JSON"
    );
    let (Ok(dynamic), Ok(reference)) = (dynamic, reference) else {
        return;
    };
    let value = serde_json::to_value(&dynamic).expect("a value read from JSON has a JSON form");
    assert_eq!(
        value,
        as_rhai_reads_it(reference),
        "the same value as serde_json's"
    );

    let first = serde_json::to_vec(&dynamic).expect("serialises");
    let again = body::from_json(&first).expect("its own JSON reads back");
    let second = serde_json::to_vec(&again).expect("serialises again");
    assert_eq!(first, second, "the round trip is stable");
});

/// serde_json's value with integers beyond `i64` as floats, as `from_json` reads them.
fn as_rhai_reads_it(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(as_rhai_reads_it).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, as_rhai_reads_it(v)))
                .collect(),
        ),
        other => other,
    }
}
