//! `array.sort(comparer)` and `sort_by`, in place of Rhai's own.
//!
//! Rhai's sort ignores the comparer's errors: a comparer stopped by the time or operation
//! limit reads as "equal" and the sort goes on calling it, n log n times, nesting sorts
//! inside comparers included. This one stops calling the comparer at its first error and
//! returns that error, so a limit ends the sort at once.

use std::cmp::Ordering;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, Position};

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("sort", sort_by)
        .register_fn("sort_by", sort_by);
}

// Rhai hands native functions their arguments by value.
#[allow(clippy::needless_pass_by_value)]
fn sort_by(
    ctx: NativeCallContext<'_>,
    array: &mut Array,
    comparer: FnPtr,
) -> Result<(), Box<EvalAltResult>> {
    if array.len() <= 1 {
        return Ok(());
    }
    let mut failed: Option<Box<EvalAltResult>> = None;
    let sorted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        array.sort_by(|x, y| {
            if failed.is_some() {
                return Ordering::Equal;
            }
            match comparer.call_raw(&ctx, None, [x.clone(), y.clone()]) {
                Ok(v) => order(&v).unwrap_or_else(|| x.type_id().cmp(&y.type_id())),
                Err(e) => {
                    failed = Some(e);
                    Ordering::Equal
                }
            }
        });
    }));
    if let Some(e) = failed {
        return Err(e);
    }
    // `slice::sort_by` may panic when the comparer is not a total order.
    sorted.map_err(|_| {
        Box::new(EvalAltResult::ErrorRuntime(
            "error in comparer for sorting".into(),
            Position::NONE,
        ))
    })
}

/// Rhai's meaning of a comparer's result: a number's sign, or `true` for "before".
fn order(value: &Dynamic) -> Option<Ordering> {
    if let Ok(n) = value.as_int() {
        return Some(n.cmp(&0));
    }
    value.as_bool().ok().map(|before| {
        if before {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    })
}
