//! What a rule hands back (its answer, its `state`, a forward's body) must have a JSON form
//! and stay within `limits.max_state_depth` (GATEWAY.md 12). Rhai's serde support writes a
//! value without one (a timestamp, a function pointer) as its Rust type name, and state
//! nested deeper than the JSON reader's own bound would be saved and then lost; both are
//! rule errors instead.

use rhai::Dynamic;

/// Checks `value` (depth 1 at the top; each array or map inside adds one). The recursion is
/// bounded by `max_depth`, whatever the value's real depth. The message names types and
/// limits only, never the value's content, so it may be logged.
pub(crate) fn check_json(value: &Dynamic, max_depth: usize) -> Result<(), String> {
    walk(value, 1, max_depth)
}

/// [`check_json`] of a map, without wrapping (copying) it in a `Dynamic`.
pub(crate) fn check_map(map: &rhai::Map, max_depth: usize) -> Result<(), String> {
    if max_depth == 0 {
        return Err(format!(
            "is nested deeper than limits.max_state_depth ({max_depth})"
        ));
    }
    map.values().try_for_each(|v| walk(v, 2, max_depth))
}

fn walk(value: &Dynamic, depth: usize, max_depth: usize) -> Result<(), String> {
    if value.is_shared() {
        // A value captured by a closure: look through the lock at what it holds.
        return walk(&value.flatten_clone(), depth, max_depth);
    }
    if value.is_unit()
        || value.is_bool()
        || value.is_int()
        || value.is_float()
        || value.is_string()
        || value.is_char()
        || value.is_blob()
    {
        return Ok(());
    }
    let too_deep = || format!("is nested deeper than limits.max_state_depth ({max_depth})");
    if let Ok(array) = value.as_array_ref() {
        if depth > max_depth {
            return Err(too_deep());
        }
        return array.iter().try_for_each(|v| walk(v, depth + 1, max_depth));
    }
    if let Ok(map) = value.as_map_ref() {
        if depth > max_depth {
            return Err(too_deep());
        }
        return map.values().try_for_each(|v| walk(v, depth + 1, max_depth));
    }
    Err(format!(
        "holds a value of type {}, which has no JSON form",
        value.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use rhai::{Array, Map};

    use super::*;

    fn nested(levels: usize) -> Dynamic {
        let mut value = Dynamic::from_int(1);
        for _ in 0..levels {
            value = Dynamic::from_array(vec![value]);
        }
        value
    }

    #[test]
    fn json_values_pass() {
        let mut map = Map::new();
        map.insert(
            "a".into(),
            Dynamic::from_array(Array::from([1.into(), "x".into()])),
        );
        map.insert("b".into(), Dynamic::UNIT);
        map.insert("c".into(), Dynamic::from_float(1.5));
        map.insert("d".into(), true.into());
        assert_eq!(check_json(&Dynamic::from_map(map), 32), Ok(()));
    }

    #[test]
    fn depth_counts_each_array_and_map() {
        assert_eq!(check_json(&nested(3), 3), Ok(()));
        assert_eq!(
            check_json(&nested(4), 3),
            Err("is nested deeper than limits.max_state_depth (3)".into())
        );
    }

    #[test]
    fn very_deep_values_are_refused_without_deep_recursion() {
        // Far deeper than a test thread's stack could walk recursively.
        let deep = nested(200_000);
        assert!(check_json(&deep, 32).is_err());
        // Dropping it recursively would overflow this thread's stack: unwind it by hand.
        let mut value = deep;
        while let Some(mut array) = value.try_cast::<Array>() {
            value = array.pop().unwrap_or_default();
        }
    }

    #[test]
    fn values_without_a_json_form_are_named_by_type() {
        let mut map = Map::new();
        map.insert("t".into(), Dynamic::from(std::time::Instant::now()));
        let err = check_json(&Dynamic::from_map(map), 32).expect_err("a timestamp");
        assert_eq!(
            err,
            "holds a value of type timestamp, which has no JSON form"
        );
        let fn_ptr = Dynamic::from(rhai::FnPtr::new("f").expect("a valid name"));
        assert_eq!(
            check_json(&fn_ptr, 32),
            Err("holds a value of type Fn, which has no JSON form".into())
        );
    }
}
