//! Rhai rules (GATEWAY.md 4): one engine with the rule API and the limits, one compiled
//! AST per event, and the evaluation of a rule for one call.
//!
//! Rules cannot reach files, sockets or processes: Rhai has no such functions, the
//! `no_module` build removes `import`, `eval` is disabled, and `print`/`debug` go to the log.
//! Evaluations run on [`pool`]'s threads, never on the HTTP threads.

mod api;
mod contains;
mod eval;
mod failure;
mod forwards;
pub mod inline;
pub mod pool;
mod reads;
mod sort;
#[cfg(test)]
mod tests;
mod value;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Engine, AST};

use crate::telemetry::escape::loggable;

pub use api::{finish_answer, ApiError, ForwardRequest, Reject};
pub use eval::{Evaluation, Input, Verdict};
pub use failure::RuleError;
use pool::{PoolSize, RulePool};

use crate::config::{Limits, Problem};

/// A compiled rule file (cheap to clone: evaluations on the pool share it).
#[derive(Debug, Clone)]
pub struct Rule {
    pub path: Arc<Path>,
    ast: Arc<AST>,
}

impl Rule {
    /// The file name as shown in errors.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// The parts of `event` the rule can read (the body builds only those).
    pub fn event_reads(&self) -> crate::body::Wanted {
        reads::event_reads(&self.ast)
    }

    /// Its `forward("name")` calls naming an upstream `known` does not have.
    pub fn unknown_upstreams(&self, known: &dyn Fn(&str) -> bool) -> Vec<Problem> {
        forwards::unknown_upstreams(&self.path, &self.ast, known)
    }
}

/// Checks a rule without a [`RuleEngine`] (no threads are started): its syntax, and its
/// `forward("name")` calls against `known`. For reporting a config's every problem at once.
pub fn check(path: &Path, source: &str, known: &dyn Fn(&str) -> bool) -> Vec<Problem> {
    let engine = configured_engine(&Limits::default());
    match compile(&engine, path, source) {
        Ok(ast) => forwards::unknown_upstreams(path, &ast, known),
        Err(problem) => vec![problem],
    }
}

fn compile(engine: &Engine, path: &Path, source: &str) -> Result<AST, Problem> {
    let mut ast = engine.compile(source).map_err(|e| {
        let pos = e.position();
        Problem::at_position(
            path,
            pos.line().unwrap_or(0),
            pos.position().unwrap_or(0),
            e.err_type().to_string(),
        )
    })?;
    ast.set_source(path.display().to_string());
    Ok(ast)
}

/// The engine rules run in: the rule API registered and the limits set.
fn configured_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(1_000)
        .set_max_functions(1_000);
    engine.disable_symbol("eval");
    engine.on_print(|text| {
        let text = loggable(text, 1024);
        tracing::debug!(target: "pollgate::rule", "print: {text}");
    });
    engine.on_debug(|text, source, pos| {
        let text = loggable(text, 1024);
        tracing::debug!(target: "pollgate::rule", "debug {}:{pos}: {text}", source.unwrap_or("rule"));
    });
    // The operation count and the wall-clock bound of the evaluation on this thread.
    engine.on_progress(|_| api::progress().map(Into::into));
    api::register(&mut engine);
    sort::register(&mut engine);
    contains::register(&mut engine);
    engine
}

/// How long past `limits.timeout` the watchdog waits for an evaluation stuck in a native
/// function before answering its call fail-safe (GATEWAY.md 12: within 50 ms).
const OVERRUN_GRACE: Duration = Duration::from_millis(40);
/// Stack per level of data nesting the size limits allow: Rhai's equality of nested
/// arrays, the largest user, takes about 4 KiB a level in a release build.
const STACK_PER_LEVEL: usize = 16 * 1024;
const MIN_STACK: usize = 16 << 20;
const MAX_STACK: usize = 1 << 30;
/// The slice a rule gets on the caller's thread: well under a millisecond.
const SLICE: eval::Slice = eval::Slice {
    operations: 1_000,
    time: Duration::from_micros(500),
};
/// Data a slice cannot build but can be given: the event and forward replies (JSON, at
/// most 128 levels each) inside one another.
const INPUT_LEVELS: usize = 256;

/// The engine every rule runs in: the rule API registered, the limits set, and the
/// threads evaluations run on.
pub struct RuleEngine {
    engine: Arc<Engine>,
    limits: Limits,
    pool: RulePool,
    /// The stack a thread needs to run a slice inline.
    inline_stack: usize,
    /// Evaluate on the calling thread (see [`RuleEngine::run_inline`]).
    inline: bool,
}

impl std::fmt::Debug for RuleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleEngine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl RuleEngine {
    /// An engine with the given limits.
    pub fn new(limits: &Limits) -> Self {
        let engine = configured_engine(limits);
        // An array or map inside another counts towards the same size limit (Rhai sums
        // nested data), so the deepest value a rule can build has this many levels.
        let levels = limits.max_array_size.saturating_add(limits.max_map_size);
        let size = PoolSize {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            stack_bytes: levels
                .saturating_mul(STACK_PER_LEVEL)
                .clamp(MIN_STACK, MAX_STACK),
        };
        Self {
            engine: Arc::new(engine),
            limits: limits.clone(),
            pool: RulePool::new(size, limits.timeout + OVERRUN_GRACE),
            inline_stack: inline::needed(
                SLICE.operations,
                INPUT_LEVELS + limits.max_state_depth,
                STACK_PER_LEVEL,
            ),
            inline: false,
        }
    }

    /// Makes [`run`](Self::run) evaluate on the calling thread, without the pool and its
    /// watchdog. For `pollgate test` only: it runs on tokio's paused clock, which jumps to
    /// the next timer whenever its one thread waits, so waiting for a rule thread would let
    /// simulated time pass during an evaluation (a pretend reply would arrive early).
    pub fn run_inline(&mut self) {
        self.inline = true;
    }

    /// Runs `rule` once. An evaluation that has not ended by `limits.timeout` plus a short
    /// grace is answered as a time-limit error.
    ///
    /// Handing every call to another thread and back costs two wake-ups, more than most
    /// rules take (a few microseconds). So on a thread with a stack known to be large
    /// enough (see [`inline`]), a rule first runs in a slice of [`SLICE`]: one that ends
    /// within it is answered at once; one that does not is stopped, nothing it did is
    /// kept (its `log` lines included), and it runs again from the start on the pool.
    pub async fn run(&self, rule: &Rule, input: Input) -> Evaluation {
        if self.inline {
            return self.evaluate(rule, input);
        }
        let input = if inline::stack_bytes() >= self.inline_stack {
            match eval::evaluate_slice(&self.engine, &self.limits, rule, input, SLICE) {
                eval::Sliced::Ended(evaluation) => return evaluation,
                eval::Sliced::Spent(input) => input,
            }
        } else {
            input
        };
        let engine = self.engine.clone();
        let limits = self.limits.clone();
        let job_rule = rule.clone();
        match self
            .pool
            .run(move || eval::evaluate(&engine, &limits, &job_rule, input))
            .await
        {
            Ok(evaluation) => evaluation,
            Err(pool::Overrun) => Evaluation::overrun(rule, self.limits.timeout),
        }
    }

    /// The rule threads' count and stack size.
    pub fn pool_size(&self) -> PoolSize {
        self.pool.size()
    }

    /// Whether any evaluation has gone to the rule threads yet.
    pub fn pool_started(&self) -> bool {
        self.pool.started()
    }

    /// Compiles a rule; a syntax error is `file:line:col: message`.
    pub fn compile(&self, path: &Path, source: &str) -> Result<Rule, Problem> {
        let ast = compile(&self.engine, path, source)?;
        Ok(Rule {
            path: Arc::from(path),
            ast: Arc::new(ast),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
