//! `array.contains(value)`, in place of Rhai's own for the values JSON has.
//!
//! Rhai's compares every element through a full call of the `==` operator (a function
//! lookup and a clone of `value` per element): a quarter of a short rule's time went to
//! `RESTRICTED.contains(article)` over four numbers. Numbers, strings, booleans and
//! characters are compared here directly, exactly as Rhai's `==` compares them (an integer
//! equals a float of the same value, a one-character string that character; values of
//! other kinds are not equal); anything else (maps, arrays, `()`, custom types) still
//! goes through `==` as before.

use rhai::{Array, Dynamic, EvalAltResult, NativeCallContext, FLOAT};

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_fn("contains", contains);
}

// Rhai hands native functions their arguments by value.
#[allow(clippy::needless_pass_by_value)]
fn contains(
    ctx: NativeCallContext<'_>,
    array: &mut Array,
    value: Dynamic,
) -> Result<bool, Box<EvalAltResult>> {
    for item in array.iter_mut() {
        let equal = match primitive_eq(item, &value) {
            Some(equal) => equal,
            None => operator_eq(&ctx, item, &value)?,
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `a == b` for two primitive values; `None` when either is not one.
fn primitive_eq(a: &Dynamic, b: &Dynamic) -> Option<bool> {
    if !is_primitive(a) || !is_primitive(b) {
        return None;
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return Some(x == y);
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return Some(x == y);
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return Some(x == y);
    }
    // Two primitives of different kinds: Rhai's `==` has no such overload, and `contains`
    // takes values of different types as not equal.
    Some(false)
}

fn is_primitive(v: &Dynamic) -> bool {
    !v.is_shared() && (v.is_int() || v.is_float() || v.is_string() || v.is_bool() || v.is_char())
}

/// A string or a character as text: Rhai compares `"a" == 'a'` as equal.
fn text(v: &Dynamic) -> Option<rhai::ImmutableString> {
    match v.as_char() {
        Ok(c) => Some(c.to_string().into()),
        Err(_) => v.as_immutable_string_ref().ok().map(|s| s.clone()),
    }
}

/// An integer or a float as a float: Rhai compares `1 == 1.0` as equal.
#[allow(clippy::cast_precision_loss)]
fn number(v: &Dynamic) -> Option<FLOAT> {
    match (v.as_int(), v.as_float()) {
        (Ok(n), _) => Some(n as FLOAT),
        (_, Ok(f)) => Some(f),
        _ => None,
    }
}

/// What Rhai's own `contains` does for one element: the `==` operator, false for values
/// of different types it has no overload for.
fn operator_eq(
    ctx: &NativeCallContext<'_>,
    item: &mut Dynamic,
    value: &Dynamic,
) -> Result<bool, Box<EvalAltResult>> {
    match ctx.call_native_fn_raw("==", true, &mut [item, &mut value.clone()]) {
        Ok(equal) => Ok(equal.as_bool().unwrap_or(false)),
        Err(err) => match *err {
            EvalAltResult::ErrorFunctionNotFound(ref signature, ..)
                if signature.starts_with("==") && item.type_id() != value.type_id() =>
            {
                Ok(false)
            }
            _ => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Limits;

    /// Every pair of these, as Rhai's own `contains` answers it and as ours does.
    const VALUES: [&str; 14] = [
        "1", "1.0", "2", "-0.0", "0", "\"1\"", "\"a\"", "\"\"", "true", "false", "'a'", "()",
        "#{a: 1}", "[1]",
    ];

    #[test]
    fn contains_answers_as_rhai_does_for_every_pair_of_json_values() {
        let ours = super::super::configured_engine(&Limits::default());
        let rhai = rhai::Engine::new();
        for a in VALUES {
            for b in VALUES {
                let script = format!("[0, {a}, 5].contains({b})");
                let expected = rhai.eval::<bool>(&script).unwrap();
                assert_eq!(ours.eval::<bool>(&script).unwrap(), expected, "{script}");
            }
        }
        let constant = "const R = [2001, 2002]; R.contains(2002) && !R.contains(3)";
        assert!(ours.eval::<bool>(constant).unwrap());
    }
}
