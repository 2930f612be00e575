//! The functions a rule may call (GATEWAY.md 4.2), and the per-evaluation context they use.
//!
//! Rhai native functions cannot borrow from the caller, so the evaluation running on this
//! thread publishes its context in a thread-local for the duration of the (synchronous)
//! evaluation. [`ContextGuard`] sets and clears it.

use std::cell::RefCell;
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use crate::telemetry::escape::loggable;

/// A rule asked for a forward that has not been started yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRequest {
    pub upstream: String,
    /// The rule's body, as JSON; `None` forwards the till's body bytes.
    pub body: Option<Vec<u8>>,
}

/// `reject(code, msg)`: carried out of the evaluation as a Rhai runtime error value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: String,
    pub message: String,
}

/// What `forward(name)` sees of one upstream.
#[derive(Debug, Clone)]
pub(crate) enum ForwardView {
    Pending,
    Done(Dynamic),
}

/// The context of the evaluation running on this thread.
pub(crate) struct Context {
    pub deadline: Instant,
    /// Operations counted here, not by Rhai: Rhai restarts its count inside callbacks
    /// (a sort's comparator, say), so its own limit can be escaped.
    pub operations: u64,
    /// `limits.max_operations`; 0 is unlimited.
    pub max_operations: u64,
    /// Why the evaluation was stopped; once set, every later operation stops too, so a
    /// native function that swallows the error (Rhai's `sort` does) cannot carry on.
    pub stopped: Option<&'static str>,
    /// `limits.max_state_depth`, for forward bodies.
    pub max_depth: usize,
    /// A first slice on the caller's thread: the limits above are the slice's, and hitting
    /// either stops the evaluation as [`SLICE`] (it is run again on the pool).
    pub slice: bool,
    /// `log(msg)` lines, written when the evaluation ends (a slice that ran out writes
    /// none, so a rule run again logs once). At most [`MAX_LOG_LINES`].
    pub logs: Vec<ImmutableString>,
    pub logs_dropped: usize,
    pub event: ImmutableString,
    pub key: ImmutableString,
    /// Forwards known to the conversation, by upstream name.
    pub forwards: Vec<(String, ForwardView)>,
    /// Upstream names a rule may forward to; `None` when forwarding is off (error requests).
    pub upstreams: Option<std::sync::Arc<[String]>>,
    pub requested: Vec<ForwardRequest>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Publishes a context for this thread's evaluation; takes it back when dropped.
pub(crate) struct ContextGuard(());

impl ContextGuard {
    pub(crate) fn set(context: Context) -> Self {
        CONTEXT.with(|c| *c.borrow_mut() = Some(context));
        Self(())
    }

    /// Ends the evaluation and returns what the rule did to the context.
    pub(crate) fn take(self) -> Option<Context> {
        CONTEXT.with(|c| c.borrow_mut().take())
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.borrow_mut().take());
    }
}

/// Why an evaluation was stopped (the token of Rhai's `ErrorTerminated`).
pub(super) const TIME_LIMIT: &str = "time limit";
pub(super) const OPERATION_LIMIT: &str = "operation limit";
pub(super) const SLICE: &str = "slice";
/// How many operations pass between two looks at the clock: often enough that an
/// expensive operation (one on large data costs microseconds) cannot run far past it.
const CLOCK_EVERY: u64 = 8;
/// `log` lines kept per evaluation: a loop of `log` calls cannot fill memory or the log.
const MAX_LOG_LINES: usize = 100;

/// Rhai's progress callback: counts the operation and says whether to stop.
pub(super) fn progress() -> Option<&'static str> {
    CONTEXT.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let c = c.as_mut()?;
        if c.stopped.is_none() {
            c.operations += 1;
            if c.max_operations > 0 && c.operations > c.max_operations {
                c.stopped = Some(if c.slice { SLICE } else { OPERATION_LIMIT });
            } else if c.operations % CLOCK_EVERY == 0 && Instant::now() >= c.deadline {
                c.stopped = Some(if c.slice { SLICE } else { TIME_LIMIT });
            }
        }
        c.stopped
    })
}

/// An error the rule API raises itself: its message carries names from the rule's code,
/// never values from the call, so it may be logged in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub String);

/// `#{polling: #{finished, message, customerMessage}}`, empty messages left out.
pub fn finish_answer(finished: bool, message: &str, customer_message: &str) -> Map {
    let mut polling = Map::new();
    polling.insert("finished".into(), finished.into());
    if !message.is_empty() {
        polling.insert("message".into(), message.into());
    }
    if !customer_message.is_empty() {
        polling.insert("customerMessage".into(), customer_message.into());
    }
    let mut answer = Map::new();
    answer.insert("polling".into(), Dynamic::from_map(polling));
    answer
}

fn runtime_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(ApiError(message)),
        Position::NONE,
    ))
}

fn forward(upstream: &str, body: Option<Dynamic>) -> Result<Dynamic, Box<EvalAltResult>> {
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(ctx) = c.as_mut() else {
            return Ok(Dynamic::UNIT);
        };
        let Some(upstreams) = &ctx.upstreams else {
            // An error request never repeats side effects (MPLUS.md 6).
            return Ok(Dynamic::UNIT);
        };
        if !upstreams.iter().any(|u| u == upstream) {
            return Err(runtime_error(format!(
                "forward(\"{upstream}\"): no such upstream under `upstreams:`"
            )));
        }
        if let Some((_, view)) = ctx.forwards.iter().find(|(name, _)| name == upstream) {
            return Ok(match view {
                ForwardView::Pending => Dynamic::UNIT,
                ForwardView::Done(reply) => reply.clone(),
            });
        }
        if !ctx.requested.iter().any(|r| r.upstream == upstream) {
            let body = match body {
                None => None,
                Some(body) => {
                    super::value::check_json(&body, ctx.max_depth).map_err(|e| {
                        runtime_error(format!("the body of forward(\"{upstream}\", ..) {e}"))
                    })?;
                    Some(
                        serde_json::to_vec(&body)
                            .map_err(|e| runtime_error(format!("forward body is not JSON: {e}")))?,
                    )
                }
            };
            ctx.requested.push(ForwardRequest {
                upstream: upstream.to_owned(),
                body,
            });
        }
        Ok(Dynamic::UNIT)
    })
}

fn log(message: ImmutableString) {
    CONTEXT.with(|c| match c.try_borrow_mut().ok().as_deref_mut() {
        Some(Some(ctx)) if ctx.logs.len() < MAX_LOG_LINES => ctx.logs.push(message),
        Some(Some(ctx)) => ctx.logs_dropped += 1,
        _ => {
            let message = loggable(&message, LOG_LINE_MAX_CHARS);
            tracing::info!(target: "pollgate::rule", "{message}");
        }
    });
}

/// The most characters of one `log` line a rule writes.
const LOG_LINE_MAX_CHARS: usize = 1024;

/// Writes an ended evaluation's `log` lines, escaped (a rule may log the call's values; a
/// `\n` in them must not start a forged line) and cut to [`LOG_LINE_MAX_CHARS`].
pub(super) fn write_logs(ctx: &Context) {
    for line in &ctx.logs {
        let line = loggable(line, LOG_LINE_MAX_CHARS);
        tracing::info!(target: "pollgate::rule", event = %ctx.event, key = %ctx.key, "{line}");
    }
    if ctx.logs_dropped > 0 {
        tracing::info!(target: "pollgate::rule", event = %ctx.event, key = %ctx.key, "{} more log lines of this evaluation dropped", ctx.logs_dropped);
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("finish", || finish_answer(true, "", ""))
        .register_fn("finish", |m: ImmutableString| finish_answer(true, &m, ""))
        .register_fn("finish", |m: ImmutableString, c: ImmutableString| {
            finish_answer(true, &m, &c)
        })
        .register_fn("keep_polling", || finish_answer(false, "", ""))
        .register_fn("keep_polling", |m: ImmutableString| {
            finish_answer(false, &m, "")
        })
        .register_fn("keep_polling", |m: ImmutableString, c: ImmutableString| {
            finish_answer(false, &m, &c)
        })
        .register_fn("forward", |u: ImmutableString| forward(&u, None))
        .register_fn("forward", |u: ImmutableString, body: Dynamic| {
            forward(&u, Some(body))
        })
        .register_fn(
            "reject",
            |code: ImmutableString,
             message: ImmutableString|
             -> Result<Dynamic, Box<EvalAltResult>> {
                let reject = Reject {
                    code: code.to_string(),
                    message: message.to_string(),
                };
                Err(Box::new(EvalAltResult::ErrorRuntime(
                    Dynamic::from(reject),
                    Position::NONE,
                )))
            },
        )
        .register_fn("log", log)
        .register_fn("log", |m: Dynamic| log(m.to_string().into()));
}
