//! `limits:` (GATEWAY.md 4.4): the bounds on one rule evaluation, read as written (they
//! need no expanding), with their defaults and their allowed ranges.

use std::time::Duration;

use serde::Deserialize;

use super::units::duration;

/// The deepest `limits.max_state_depth`: saved state is read back by a JSON reader that
/// refuses more than 128 levels, so deeper state would be lost.
const MAX_STATE_DEPTH: usize = 100;

/// Bounds on one rule evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Bound on the JSON of a rule's answer and of its `state` (Rhai does not bound maps
    /// grown key by key, so the result is measured).
    pub max_answer_bytes: usize,
    /// Nesting of `state` and of answers (GATEWAY.md 12); deeper is a rule error.
    pub max_state_depth: usize,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_answer_bytes: 256 * 1024,
            max_state_depth: 32,
            timeout: Duration::from_millis(50),
        }
    }
}

impl Limits {
    /// What is out of range, as (key, message).
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.timeout.is_zero() {
            problems.push(("limits.timeout", "must be more than 0".to_owned()));
        }
        if !(1..=MAX_STATE_DEPTH).contains(&self.max_state_depth) {
            problems.push((
                "limits.max_state_depth",
                format!(
                    "must be between 1 and {MAX_STATE_DEPTH} (deeper state could not be read back)"
                ),
            ));
        }
        problems
    }
}
