//! Comparing an answer with a call's `expect` (see the module docs of [`super`]).

use serde_json::Value;

/// How an expectation's maps are compared with the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// The keys named must match; others may be there too.
    Subset,
    /// The keys named must match and no others may be there.
    Exact,
}

/// The first difference between what was expected and the answer, as a sentence.
pub(super) fn mismatch(expect: &Value, got: &Value, at: &str, how: Match) -> Option<String> {
    let here = if at.is_empty() {
        "the answer".to_owned()
    } else {
        at.to_owned()
    };
    let path = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (expect, got) {
        (Value::Object(e), Value::Object(g)) => {
            // `{}` as a subset would match any object: it means an empty one.
            let how = if e.is_empty() { Match::Exact } else { how };
            let named = e.iter().find_map(|(k, ev)| match g.get(k) {
                Some(gv) => mismatch(ev, gv, &path(k), how),
                None if ev.is_null() => None,
                None => Some(format!("expected {} = {ev}, but it is missing", path(k))),
            });
            named.or_else(|| match how {
                Match::Subset => None,
                Match::Exact => g.iter().find(|(k, _)| !e.contains_key(*k)).map(|(k, gv)| {
                    format!(
                        "expected no {} (the expectation is exact), got {gv}",
                        path(k)
                    )
                }),
            })
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => e
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (ev, gv))| mismatch(ev, gv, &format!("{here}[{i}]"), how)),
        (Value::Number(e), Value::Number(g)) if e.as_f64() == g.as_f64() => None,
        (e, g) if e == g => None,
        (e, g) => Some(format!("expected {here} = {e}, got {g}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{mismatch, Match};
    use serde_json::json;

    #[test]
    fn expectations_match_subsets_and_name_the_first_difference() {
        let got = json!({"polling": {"finished": false, "message": "wait"}, "x": [1, 2.0]});
        let subset = |expect| mismatch(&expect, &got, "", Match::Subset);
        assert_eq!(subset(json!({"polling": {"finished": false}})), None);
        assert_eq!(subset(json!({"x": [1.0, 2]})), None);
        assert_eq!(
            subset(json!({"polling": {"finished": true}})).as_deref(),
            Some("expected polling.finished = true, got false")
        );
        assert_eq!(
            subset(json!({"scanCode": {}})).as_deref(),
            Some("expected scanCode = {}, but it is missing")
        );
        assert_eq!(subset(json!({"polling": {"customerMessage": null}})), None);
    }

    #[test]
    fn an_exact_expectation_names_a_key_the_answer_should_not_have() {
        let got =
            json!({"scanCode": {"recognized": true, "relationNumber": 1}, "x": [{"a": 1, "b": 2}]});
        let exact = |expect| mismatch(&expect, &got, "", Match::Exact);
        assert_eq!(
            exact(
                json!({"scanCode": {"recognized": true, "relationNumber": 1.0}, "x": [{"a": 1, "b": 2}]})
            ),
            None
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true}, "x": [{"a": 1, "b": 2}]})).as_deref(),
            Some("expected no scanCode.relationNumber (the expectation is exact), got 1")
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true, "relationNumber": 1}, "x": [{"a": 1}]}))
                .as_deref(),
            Some("expected no x[0].b (the expectation is exact), got 2")
        );
        assert_eq!(
            exact(json!({"scanCode": {"recognized": true, "relationNumber": 1}})).as_deref(),
            Some("expected no x (the expectation is exact), got [{\"a\":1,\"b\":2}]")
        );
        assert_eq!(
            exact(
                json!({"scanCode": {"recognized": true, "relationNumber": 1, "message": null}, "x": [{"a": 1, "b": 2}]})
            ),
            None,
            "null still expects a key to be absent"
        );
    }

    #[test]
    fn an_empty_expectation_matches_only_an_empty_answer() {
        let recognized = json!({"scanCode": {"recognized": true}});
        assert_eq!(
            mismatch(&json!({}), &recognized, "", Match::Subset).as_deref(),
            Some("expected no scanCode (the expectation is exact), got {\"recognized\":true}")
        );
        assert_eq!(
            mismatch(&json!({"scanCode": {}}), &recognized, "", Match::Subset).as_deref(),
            Some("expected no scanCode.recognized (the expectation is exact), got true")
        );
        assert_eq!(mismatch(&json!({}), &json!({}), "", Match::Subset), None);
        assert_eq!(
            mismatch(&json!({}), &json!(null), "", Match::Subset).as_deref(),
            Some("expected the answer = {}, got null")
        );
    }
}
