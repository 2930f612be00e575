//! Request bodies: strict JSON first, then the lenient reading MPLUS.md 7 asks for.
//!
//! The documented examples carry duplicate keys (last one wins, as in every JSON map
//! reader here), trailing commas and comments. The lenient pass copies the body without
//! comments and trailing commas (outside strings) and parses that strictly; the signature
//! was already checked over the original bytes.

mod wanted;

use std::fmt;

use rhai::{Array, Dynamic, ImmutableString, Map};
use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

pub use wanted::Wanted;

/// Why a body is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is JSON but not an object")]
    NotAnObject,
}

/// Parses a request body into the map a rule sees as `event`.
pub fn parse(body: &[u8]) -> Result<Map, BodyError> {
    parse_wanted(body, &Wanted::All)
}

/// Parses a request body, building only the parts `wanted` names: the rest is checked as
/// JSON exactly as [`parse`] checks it, and skipped.
pub fn parse_wanted(body: &[u8], wanted: &Wanted) -> Result<Map, BodyError> {
    let value = match picked(body, wanted) {
        Ok(value) => value,
        Err(strict) => {
            let cleaned = strip_comments_and_trailing_commas(body)
                .ok_or_else(|| BodyError::InvalidJson(strict.to_string()))?;
            picked(&cleaned, wanted).map_err(|_| BodyError::InvalidJson(strict.to_string()))?
        }
    };
    value.try_cast::<Map>().ok_or(BodyError::NotAnObject)
}

/// Strict JSON into a [`Dynamic`] of the parts `wanted` names, as [`from_json`] builds them.
fn picked(bytes: &[u8], wanted: &Wanted) -> Result<Dynamic, serde_json::Error> {
    fn read<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        wanted: &Wanted,
    ) -> Result<Dynamic, serde_json::Error> {
        let value = Pick(wanted).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
    // One UTF-8 check of the whole body costs less than serde_json's check of every string;
    // a body that is not UTF-8 takes the byte path, which reports it exactly as before.
    match std::str::from_utf8(bytes) {
        Ok(text) => read(serde_json::Deserializer::from_str(text), wanted),
        Err(_) => read(serde_json::Deserializer::from_slice(bytes), wanted),
    }
}

/// Strict JSON straight into a [`Dynamic`]: the same values as `serde_json::from_slice::<Dynamic>`
/// (integers that fit `i64` as ints, others and fractions as floats, `null` as `()`, duplicate
/// keys last-wins), built directly instead of through Rhai's own `Deserialize`, which copies
/// every key into a `String` and then rebuilds every map it has just built.
pub fn from_json(bytes: &[u8]) -> Result<Dynamic, serde_json::Error> {
    picked(bytes, &Wanted::All)
}

/// A JSON value as the [`Dynamic`] a rule sees.
struct Json(Dynamic);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(JsonVisitor(&Wanted::All))
            .map(Json)
    }
}

/// A JSON value with only the wanted parts of its objects built (see [`Wanted`]).
struct Pick<'w>(&'w Wanted);

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Dynamic;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Dynamic, D::Error> {
        deserializer.deserialize_any(JsonVisitor(self.0))
    }
}

/// A JSON value read and checked as [`Json`] reads it (numbers in range, strings' escapes),
/// and not built. (serde's `IgnoredAny` would only check the syntax.)
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Skip, A::Error> {
        while access.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A map key, kept inline by Rhai's key type when short (no `String` on the way).
struct Key(<Map as MapTypes>::Key);

/// Names the key type of [`Map`], which Rhai does not export.
trait MapTypes {
    type Key;
}

impl<K, V> MapTypes for std::collections::BTreeMap<K, V> {
    type Key = K;
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Builds a JSON value; of an object, only the keys its [`Wanted`] names (arrays and other
/// values whole).
struct JsonVisitor<'w>(&'w Wanted);

impl<'de> Visitor<'de> for JsonVisitor<'_> {
    type Value = Dynamic;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Dynamic, E> {
        Ok(Dynamic::from_bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Dynamic, E> {
        // As Rhai's own deserializer: too large for an int becomes a float.
        Ok(i64::try_from(v).map_or_else(|_| Dynamic::from_float(v as f64), Dynamic::from_int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Dynamic, E> {
        Ok(Dynamic::from(ImmutableString::from(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Dynamic, E> {
        Ok(Dynamic::from(ImmutableString::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut array = Array::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Json(item)) = seq.next_element()? {
            array.push(item);
        }
        Ok(Dynamic::from_array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        while let Some(Key(key)) = access.next_key()? {
            match self.0.field(&key) {
                Some(wanted) => {
                    let value = access.next_value_seed(Pick(wanted))?;
                    map.insert(key, value);
                }
                None => {
                    access.next_value::<Skip>()?;
                }
            }
        }
        Ok(Dynamic::from_map(map))
    }
}

/// The body without `//` and `/* */` comments and without commas before `}` or `]`;
/// `None` when there is nothing to clean (so the strict error stands).
pub fn strip_comments_and_trailing_commas(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'"' => {
                let end = string_end(input, i);
                out.extend_from_slice(&input[i..end]);
                i = end;
            }
            b'/' if input.get(i + 1) == Some(&b'/') => {
                changed = true;
                while i < input.len() && input[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if input.get(i + 1) == Some(&b'*') => {
                changed = true;
                i += 2;
                while i < input.len() && !(input[i] == b'*' && input.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(input.len());
                out.push(b' ');
            }
            b',' if next_significant(input, i + 1).is_some_and(|c| c == b'}' || c == b']') => {
                changed = true;
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Index just past the string starting at `start` (a `"`), honouring escapes.
fn string_end(input: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    input.len()
}

/// The next byte that is not whitespace or inside a comment.
fn next_significant(input: &[u8], mut i: usize) -> Option<u8> {
    while i < input.len() {
        match input[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'/' if input.get(i + 1) == Some(&b'/') => {
                while i < input.len() && input[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if input.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < input.len() && !(input[i] == b'*' && input.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b => return Some(b),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(map: &Map, path: &[&str]) -> Dynamic {
        let mut value = Dynamic::from(map.clone());
        for p in path {
            let next = value
                .as_map_ref()
                .expect("map")
                .get(*p)
                .cloned()
                .expect("field");
            value = next;
        }
        value
    }

    #[test]
    fn documented_polling_example_is_accepted() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mplus/examples/polling-addSessionLine.doc.json"
        ))
        .expect("fixture tests/fixtures/mplus/examples/polling-addSessionLine.doc.json");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&body).is_err(),
            "has defects"
        );
        let map = parse(&body).expect("lenient parse");
        assert_eq!(get(&map, &["event", "eventBlocking"]).as_bool(), Ok(true));
        assert_eq!(get(&map, &["sender", "employeeNumber"]).as_int(), Ok(1));
        assert_eq!(
            get(&map, &["addSessionLine", "priceIncl"]).as_float(),
            Ok(2.5)
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let map = parse(br#"{"a": 1, "a": 2}"#).expect("parse");
        assert_eq!(get(&map, &["a"]).as_int(), Ok(2));
    }

    #[test]
    fn comments_and_trailing_commas_are_ignored_outside_strings() {
        let body = br#"{
            // line comment
            "url": "http://x/*not a comment*/", /* block */
            "list": [1, 2, ],
            "s": "a, }",
        }"#;
        let map = parse(body).expect("parse");
        assert_eq!(get(&map, &["url"]).to_string(), "http://x/*not a comment*/");
        assert_eq!(get(&map, &["s"]).to_string(), "a, }");
        assert_eq!(get(&map, &["list"]).as_array_ref().map(|a| a.len()), Ok(2));
    }

    #[test]
    fn floats_read_back_exactly_from_the_json_they_are_written_as() {
        // Found by tests/properties.rs: read one ulp off before serde_json's float_roundtrip.
        for text in [
            "-2.968598686598755e-299",
            "-2.9458739425981818e265",
            "2.5",
            "1e-320",
        ] {
            let value = from_json(text.as_bytes()).expect("a float");
            let written = serde_json::to_string(&value).expect("JSON form");
            let again = from_json(written.as_bytes()).expect("reads back");
            assert_eq!(
                value.as_float().map(f64::to_bits),
                again.as_float().map(f64::to_bits),
                "{text} written as {written}"
            );
            assert_eq!(
                value.as_float(),
                text.parse::<f64>().map_err(|_| ""),
                "{text}"
            );
        }
    }

    #[test]
    fn broken_json_and_non_objects_are_refused() {
        assert!(matches!(
            parse(br#"{"event": "#),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(br#"{"a" 1}"#),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(parse(b"[1,2,3]"), Err(BodyError::NotAnObject)));
        assert!(matches!(parse(b"\"text\""), Err(BodyError::NotAnObject)));
        assert!(matches!(parse(b""), Err(BodyError::InvalidJson(_))));
    }

    #[test]
    fn a_part_not_built_is_still_checked_as_the_whole_body_is() {
        let wanted = Wanted::path(&["a"]);
        // Out of range, a bad escape, a control character, not UTF-8: in a part the call
        // does not build, each is refused with the very error of the whole body's reading.
        for body in [
            &br#"{"a": 1, "skipped": 1e999}"#[..],
            br#"{"a": 1, "skipped": "\q"}"#,
            b"{\"a\": 1, \"skipped\": \"\x01\"}",
            b"{\"a\": 1, \"skipped\": \"\xff\"}",
        ] {
            let whole = parse(body).expect_err("refused whole");
            assert!(matches!(whole, BodyError::InvalidJson(_)), "{whole:?}");
            assert_eq!(
                parse_wanted(body, &wanted).expect_err("refused in part"),
                whole
            );
        }
        let part = parse_wanted(
            br#"{"a": {"b": 1, "c": [2]}, "skipped": {"x": 1e300}}"#,
            &wanted,
        )
        .expect("valid");
        assert_eq!(
            serde_json::to_string(&Dynamic::from_map(part)).unwrap(),
            r#"{"a":{"b":1,"c":[2]}}"#
        );
    }
}
