//! One evaluation of a rule: the scope of GATEWAY.md 4.1 in, the answer of 4.3 out.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult, ImmutableString, Map, Scope};

use super::api::{Context, ContextGuard, ForwardRequest, ForwardView, Reject};
use super::{Rule, RuleEngine};

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
    pub message: String,
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

impl RuleEngine {
    /// Runs `rule` once. Synchronous and bounded by the engine's limits.
    pub fn evaluate(&self, rule: &Rule, input: Input) -> Evaluation {
        // Shared (not copied) between the context, for `log`, and `meta`/`poll`.
        let name = ImmutableString::from(input.name);
        let key = ImmutableString::from(input.key);
        let guard = ContextGuard::set(Context {
            deadline: Instant::now() + self.limits().timeout,
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

        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast);
        let requested = guard.take().map(|c| c.requested).unwrap_or_default();
        let event = scope.remove::<Dynamic>("event").unwrap_or_default();
        let state = scope.remove::<Dynamic>("state").unwrap_or_default();

        let verdict = match result {
            Ok(value) => answer(rule, value),
            Err(err) => failure(rule, *err, self.limits().timeout),
        };
        let (verdict, state) = match state.try_cast::<Map>() {
            Some(state) => (verdict, state),
            None => (
                verdict.and(Err(RuleError {
                    location: format!("{}", rule.file().display()),
                    message: "`state` must stay a map".into(),
                })),
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
}

fn answer(rule: &Rule, value: Dynamic) -> Result<Verdict, RuleError> {
    if value.is_unit() {
        return Ok(Verdict::Answer(Map::new()));
    }
    let type_name = value.type_name();
    value
        .try_cast::<Map>()
        .map(Verdict::Answer)
        .ok_or_else(|| RuleError {
            location: format!("{}", rule.file().display()),
            message: format!("the rule returned {type_name}; it must return a map or ()"),
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
    let message = match &inner {
        EvalAltResult::ErrorTerminated(..) => {
            format!("time limit exceeded (limits.timeout = {timeout:?})")
        }
        EvalAltResult::ErrorTooManyOperations(..) => {
            "operation limit exceeded (limits.max_operations)".into()
        }
        other => other.to_string(),
    };
    Err(RuleError {
        location: format!(
            "{}:{}:{}",
            rule.file().display(),
            position.line().unwrap_or(0),
            position.position().unwrap_or(0)
        ),
        message,
    })
}
