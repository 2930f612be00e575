//! One evaluation of a rule: the scope of GATEWAY.md 4.1 in, the answer of 4.3 out.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Scope};

use super::api::{
    ApiError, Context, ContextGuard, ForwardRequest, ForwardView, Reject, OPERATION_LIMIT,
};
use super::value::check_json;
use super::{Rule, RuleEngine};
use crate::config::Limits;

/// What a rule sees.
pub struct Input {
    /// The request body (a map); read-only in the rule.
    pub event: Dynamic,
    pub name: String,
    pub subscription: String,
    pub received_at: String,
    pub attempt: u32,
    pub elapsed_ms: u64,
    pub key: String,
    pub state: Map,
    /// Forwards already started for this conversation: `None` = pending, else the reply map.
    pub forwards: Vec<(String, Option<Dynamic>)>,
    /// Upstreams the rule may forward to; `None` turns `forward` off (error requests).
    pub upstreams: Option<Arc<[String]>>,
}

/// What the rule decided.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The answer body (GATEWAY.md 4.3), before pollgate adds `polling` where needed.
    Answer(Map),
    /// `reject(code, msg)`.
    Reject(Reject),
}

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
    fn new(location: String, message: impl Into<String>) -> Self {
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

/// The result of one evaluation.
pub struct Evaluation {
    pub verdict: Result<Verdict, RuleError>,
    /// The rule's `state` after the evaluation (meaningful when the verdict is Ok).
    pub state: Map,
    /// Forwards the rule asked for that had not been started.
    pub requested: Vec<ForwardRequest>,
    /// The request body, handed back so a second evaluation needs no copy.
    pub event: Dynamic,
}

impl Evaluation {
    /// The evaluation the watchdog gave up on.
    pub(super) fn overrun(rule: &Rule, timeout: std::time::Duration) -> Self {
        Self {
            verdict: Err(RuleError::new(
                rule.file().display().to_string(),
                format!("time limit exceeded (limits.timeout = {timeout:?})"),
            )),
            state: Map::new(),
            requested: Vec::new(),
            event: Dynamic::UNIT,
        }
    }
}

impl RuleEngine {
    /// Runs `rule` once on this thread. Synchronous and bounded by the engine's limits;
    /// the gateway uses [`RuleEngine::run`], which runs it on a rule thread.
    pub fn evaluate(&self, rule: &Rule, input: Input) -> Evaluation {
        evaluate(&self.engine, self.limits(), rule, input)
    }
}

/// One evaluation, with its answer and `state` checked (JSON form, depth) before they leave
/// this thread: a value too deep to handle is dropped here.
pub(super) fn evaluate(engine: &Engine, limits: &Limits, rule: &Rule, input: Input) -> Evaluation {
    let mut evaluation = evaluate_unchecked(engine, limits, rule, input);
    let file = || rule.file().display().to_string();
    if let Ok(Verdict::Answer(answer)) = &evaluation.verdict {
        if let Err(e) = check_json(&Dynamic::from_map(answer.clone()), limits.max_state_depth) {
            evaluation.verdict = Err(RuleError::new(file(), format!("the answer {e}")));
        }
    }
    if evaluation.verdict.is_ok() {
        let state = Dynamic::from_map(std::mem::take(&mut evaluation.state));
        match check_json(&state, limits.max_state_depth) {
            Ok(()) => evaluation.state = state.cast::<Map>(),
            Err(e) => evaluation.verdict = Err(RuleError::new(file(), format!("`state` {e}"))),
        }
    }
    if evaluation.verdict.is_err() {
        evaluation.state = Map::new();
        evaluation.requested.clear();
    }
    evaluation
}

fn evaluate_unchecked(engine: &Engine, limits: &Limits, rule: &Rule, input: Input) -> Evaluation {
    // Shared (not copied) between the context, for `log`, and `meta`/`poll`.
    let name = ImmutableString::from(input.name);
    let key = ImmutableString::from(input.key);
    let guard = ContextGuard::set(Context {
        deadline: Instant::now() + limits.timeout,
        operations: 0,
        max_operations: limits.max_operations,
        stopped: None,
        max_depth: limits.max_state_depth,
        event: name.clone(),
        key: key.clone(),
        forwards: input
            .forwards
            .into_iter()
            .map(|(name, reply)| {
                let view = reply.map_or(ForwardView::Pending, ForwardView::Done);
                (name, view)
            })
            .collect(),
        upstreams: input.upstreams,
        requested: Vec::new(),
    });

    let mut meta = Map::new();
    meta.insert("name".into(), name.into());
    meta.insert("subscription".into(), input.subscription.into());
    meta.insert("received_at".into(), input.received_at.into());
    let mut poll = Map::new();
    poll.insert(
        "attempt".into(),
        Dynamic::from_int(i64::from(input.attempt)),
    );
    poll.insert(
        "elapsed_ms".into(),
        Dynamic::from_int(i64::try_from(input.elapsed_ms).unwrap_or(i64::MAX)),
    );
    poll.insert("key".into(), key.into());

    let mut scope = Scope::new();
    scope.push_constant_dynamic("event", input.event);
    // `from_map`, not `push_constant(.., map)`: Rhai's generic conversion of a `Map`
    // rebuilds it entry by entry.
    scope.push_constant_dynamic("meta", Dynamic::from_map(meta));
    scope.push_constant_dynamic("poll", Dynamic::from_map(poll));
    scope.push_dynamic("state", Dynamic::from_map(input.state));

    let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast);
    let requested = guard.take().map(|c| c.requested).unwrap_or_default();
    let event = scope.remove::<Dynamic>("event").unwrap_or_default();
    let state = scope.remove::<Dynamic>("state").unwrap_or_default();

    let verdict = match result {
        Ok(value) => answer(rule, value),
        Err(err) => failure(rule, *err, limits.timeout),
    };
    let (verdict, state) = match state.try_cast::<Map>() {
        Some(state) => (verdict, state),
        None => (
            verdict.and(Err(RuleError::new(
                rule.file().display().to_string(),
                "`state` must stay a map",
            ))),
            Map::new(),
        ),
    };
    Evaluation {
        verdict,
        state,
        requested,
        event,
    }
}

fn answer(rule: &Rule, value: Dynamic) -> Result<Verdict, RuleError> {
    if value.is_unit() {
        return Ok(Verdict::Answer(Map::new()));
    }
    let type_name = value.type_name();
    value.try_cast::<Map>().map(Verdict::Answer).ok_or_else(|| {
        RuleError::new(
            rule.file().display().to_string(),
            format!("the rule returned {type_name}; it must return a map or ()"),
        )
    })
}

fn failure(
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
