//! A rule that failed ([`RuleError`]): where, and what went wrong, both in full for the
//! rule's author and as a summary free of the call's values for the logs.

use std::fmt;

use rhai::{Dynamic, EvalAltResult};

use super::api::{ApiError, Reject, OPERATION_LIMIT};
use super::eval::Verdict;
use super::Rule;

/// A rule that failed: syntax, runtime error or a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// `file:line:col`.
    pub location: String,
    /// Rhai's whole message, which may quote values of the call (`Error parsing integer
    /// number 'ABCDEFGH'`): for the rule's author (`pollgate test`, debug logs).
    pub message: String,
    /// What went wrong without any value of the call: what is logged above debug.
    pub summary: String,
}

impl RuleError {
    pub(super) fn new(location: String, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            location,
            summary: message.clone(),
            message,
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

pub(super) fn failure(
    rule: &Rule,
    err: EvalAltResult,
    timeout: std::time::Duration,
) -> Result<Verdict, RuleError> {
    let outer_position = err.position();
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(.., nested, _) = inner {
        inner = *nested;
    }
    if let EvalAltResult::ErrorRuntime(value, _) = &inner {
        if let Some(reject) = value.read_lock::<Reject>() {
            return Ok(Verdict::Reject(reject.clone()));
        }
    }
    let position = match inner.take_position() {
        p if p.is_none() => outer_position,
        p => p,
    };
    let limit = |token: &Dynamic| {
        if token.clone().into_immutable_string().ok().as_deref() == Some(OPERATION_LIMIT) {
            "operation limit exceeded (limits.max_operations)".to_owned()
        } else {
            format!("time limit exceeded (limits.timeout = {timeout:?})")
        }
    };
    let (message, summary) = match &inner {
        EvalAltResult::ErrorTerminated(token, _) => (limit(token), limit(token)),
        EvalAltResult::ErrorRuntime(value, _) if value.is::<ApiError>() => {
            let api = value.clone().cast::<ApiError>().0;
            (api.clone(), api)
        }
        EvalAltResult::ErrorTooManyOperations(..) => {
            let m = "operation limit exceeded (limits.max_operations)".to_owned();
            (m.clone(), m)
        }
        other => (other.to_string(), summary(other)),
    };
    Err(RuleError {
        location: format!(
            "{}:{}:{}",
            rule.file().display(),
            position.line().unwrap_or(0),
            position.position().unwrap_or(0)
        ),
        message,
        summary,
    })
}

/// A runtime error's kind, without the values Rhai quotes in its message.
fn summary(err: &EvalAltResult) -> String {
    use EvalAltResult as E;
    match err {
        E::ErrorRuntime(value, _) => match value.read_lock::<ApiError>() {
            Some(api) => api.0.clone(),
            None => "the rule threw an error".into(),
        },
        // Names and types from the rule's code, never the call's values.
        E::ErrorVariableExists(..)
        | E::ErrorForbiddenVariable(..)
        | E::ErrorVariableNotFound(..)
        | E::ErrorPropertyNotFound(..)
        | E::ErrorFunctionNotFound(..)
        | E::ErrorMismatchDataType(..)
        | E::ErrorMismatchOutputType(..)
        | E::ErrorAssignmentToConstant(..)
        | E::ErrorDataTooLarge(..)
        | E::ErrorStackOverflow(..)
        | E::ErrorTooManyVariables(..)
        | E::ErrorTooManyOperations(..)
        | E::ErrorTerminated(..)
        | E::ErrorUnboundThis(..)
        | E::ErrorParsing(..) => err.to_string(),
        E::ErrorArithmetic(..) => {
            "arithmetic error (a number that does not parse, overflow or division by zero)".into()
        }
        E::ErrorIndexNotFound(..) => "index not found".into(),
        E::ErrorArrayBounds(..) => "array index out of bounds".into(),
        E::ErrorStringBounds(..) => "string index out of bounds".into(),
        E::ErrorBitFieldBounds(..) => "bit-field index out of bounds".into(),
        E::ErrorIndexingType(..) => "indexing a value that cannot be indexed".into(),
        E::ErrorFor(..) => "`for` over a value that cannot be iterated".into(),
        E::ErrorDotExpr(..) => "error in a property access".into(),
        _ => "runtime error".into(),
    }
}
