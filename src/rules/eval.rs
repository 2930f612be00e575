//! One evaluation of a rule: the scope of GATEWAY.md 4.1 in, the answer of 4.3 out.

use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Scope};

use super::api::{write_logs, Context, ContextGuard, ForwardRequest, ForwardView, Reject, SLICE};
use super::failure::{failure, RuleError};
use super::value::check_map;
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
    /// A push channel's message for this call (GATEWAY.md 9); `()` for none.
    pub push: Dynamic,
}

/// What the rule decided.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The answer body (GATEWAY.md 4.3), before pollgate adds `polling` where needed.
    Answer(Map),
    /// `reject(code, msg)`.
    Reject(Reject),
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
    /// the gateway uses [`RuleEngine::run`].
    pub fn evaluate(&self, rule: &Rule, input: Input) -> Evaluation {
        evaluate(&self.engine, self.limits(), rule, input)
    }
}

/// A first, short run of a rule on the caller's thread (see [`super::RuleEngine::run`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slice {
    pub(super) operations: u64,
    pub(super) time: std::time::Duration,
}

/// How a slice ended.
pub(super) enum Sliced {
    Ended(Evaluation),
    /// The slice ran out; the call's input, as it came, for a run on the pool.
    Spent(Input),
}

/// One whole evaluation, with its answer and `state` checked (JSON form, depth) before
/// they leave this thread: a value too deep to handle is dropped here.
pub(super) fn evaluate(engine: &Engine, limits: &Limits, rule: &Rule, input: Input) -> Evaluation {
    match run(engine, limits, rule, input, None) {
        Sliced::Ended(evaluation) => checked(limits, rule, evaluation),
        // Only a slice can be spent.
        Sliced::Spent(_) => Evaluation::overrun(rule, limits.timeout),
    }
}

/// A slice of an evaluation: ended (and checked) within `slice`, or spent.
pub(super) fn evaluate_slice(
    engine: &Engine,
    limits: &Limits,
    rule: &Rule,
    input: Input,
    slice: Slice,
) -> Sliced {
    match run(engine, limits, rule, input, Some(slice)) {
        Sliced::Ended(evaluation) => Sliced::Ended(checked(limits, rule, evaluation)),
        spent => spent,
    }
}

fn checked(limits: &Limits, rule: &Rule, mut evaluation: Evaluation) -> Evaluation {
    let file = || rule.file().display().to_string();
    if let Ok(Verdict::Answer(answer)) = &evaluation.verdict {
        if let Err(e) = check_map(answer, limits.max_state_depth) {
            evaluation.verdict = Err(RuleError::new(file(), format!("the answer {e}")));
        }
    }
    if evaluation.verdict.is_ok() {
        if let Err(e) = check_map(&evaluation.state, limits.max_state_depth) {
            evaluation.verdict = Err(RuleError::new(file(), format!("`state` {e}")));
        }
    }
    if evaluation.verdict.is_err() {
        evaluation.state = Map::new();
        evaluation.requested.clear();
    }
    evaluation
}

/// The call's strings as the rule sees them, each shared (not copied) between the
/// context (`log`), `meta` and `poll`, and what a spent slice gives back.
struct Names {
    name: ImmutableString,
    subscription: ImmutableString,
    received_at: ImmutableString,
    key: ImmutableString,
}

fn run(
    engine: &Engine,
    limits: &Limits,
    rule: &Rule,
    input: Input,
    slice: Option<Slice>,
) -> Sliced {
    let Input {
        event,
        name,
        subscription,
        received_at,
        attempt,
        elapsed_ms,
        key,
        state,
        forwards,
        upstreams,
        push,
    } = input;
    let names = Names {
        name: name.into(),
        subscription: subscription.into(),
        received_at: received_at.into(),
        key: key.into(),
    };
    // A slice keeps the state as it came, to hand it back if it runs out.
    let kept = slice.map(|_| state.clone());
    let guard = ContextGuard::set(context(limits, slice, &names, forwards, upstreams));
    let mut scope = scope(event, &names, attempt, elapsed_ms, state, push);
    let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast);
    let context = guard.take();
    let event = scope.remove::<Dynamic>("event").unwrap_or_default();
    if let (Some(state), Some(context)) = (kept, context.as_ref()) {
        if context.slice && context.stopped == Some(SLICE) {
            let poll = (attempt, elapsed_ms);
            let push = scope.remove::<Dynamic>("push").unwrap_or_default();
            let mut input = given_back(event, &names, poll, state, context);
            input.push = push;
            return Sliced::Spent(input);
        }
    }
    if let Some(context) = &context {
        write_logs(context);
    }
    let requested = context.map(|c| c.requested).unwrap_or_default();
    let state = scope.remove::<Dynamic>("state").unwrap_or_default();
    Sliced::Ended(ended(rule, limits, result, state, requested, event))
}

/// A finished run's verdict, with its `state` (which must have stayed a map).
fn ended(
    rule: &Rule,
    limits: &Limits,
    result: Result<Dynamic, Box<EvalAltResult>>,
    state: Dynamic,
    requested: Vec<ForwardRequest>,
    event: Dynamic,
) -> Evaluation {
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

/// The evaluation's context: its limits (a slice's, or the whole run's), and what the
/// rule API reads and collects.
fn context(
    limits: &Limits,
    slice: Option<Slice>,
    names: &Names,
    forwards: Vec<(String, Option<Dynamic>)>,
    upstreams: Option<Arc<[String]>>,
) -> Context {
    let (max_operations, time) = match slice {
        Some(slice) => (slice.operations, slice.time.min(limits.timeout)),
        None => (limits.max_operations, limits.timeout),
    };
    Context {
        deadline: Instant::now() + time,
        operations: 0,
        max_operations,
        stopped: None,
        max_depth: limits.max_state_depth,
        slice: slice.is_some(),
        logs: Vec::new(),
        logs_dropped: 0,
        event: names.name.clone(),
        key: names.key.clone(),
        forwards: forwards
            .into_iter()
            .map(|(name, reply)| {
                let view = reply.map_or(ForwardView::Pending, ForwardView::Done);
                (name, view)
            })
            .collect(),
        upstreams,
        requested: Vec::new(),
    }
}

/// The scope of GATEWAY.md 4.1: `event`, `meta`, `poll`, `state`, and `push` (GATEWAY.md 9).
fn scope(
    event: Dynamic,
    names: &Names,
    attempt: u32,
    elapsed_ms: u64,
    state: Map,
    push: Dynamic,
) -> Scope<'static> {
    let mut meta = Map::new();
    meta.insert("name".into(), names.name.clone().into());
    meta.insert("subscription".into(), names.subscription.clone().into());
    meta.insert("received_at".into(), names.received_at.clone().into());
    let mut poll = Map::new();
    poll.insert("attempt".into(), Dynamic::from_int(i64::from(attempt)));
    poll.insert(
        "elapsed_ms".into(),
        Dynamic::from_int(i64::try_from(elapsed_ms).unwrap_or(i64::MAX)),
    );
    poll.insert("key".into(), names.key.clone().into());
    let mut scope = Scope::new();
    scope.push_constant_dynamic("event", event);
    // `from_map`, not `push_constant(.., map)`: Rhai's generic conversion of a `Map`
    // rebuilds it entry by entry.
    scope.push_constant_dynamic("meta", Dynamic::from_map(meta));
    scope.push_constant_dynamic("poll", Dynamic::from_map(poll));
    scope.push_dynamic("state", Dynamic::from_map(state));
    scope.push_constant_dynamic("push", push);
    scope
}

/// A spent slice's input, as it came, for a run on the pool.
fn given_back(
    event: Dynamic,
    names: &Names,
    (attempt, elapsed_ms): (u32, u64),
    state: Map,
    context: &Context,
) -> Input {
    let forwards = context
        .forwards
        .iter()
        .map(|(name, view)| {
            let reply = match view {
                ForwardView::Pending => None,
                ForwardView::Done(reply) => Some(reply.clone()),
            };
            (name.clone(), reply)
        })
        .collect();
    Input {
        event,
        name: names.name.to_string(),
        subscription: names.subscription.to_string(),
        received_at: names.received_at.to_string(),
        attempt,
        elapsed_ms,
        key: names.key.to_string(),
        state,
        forwards,
        upstreams: context.upstreams.clone(),
        push: Dynamic::UNIT,
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
