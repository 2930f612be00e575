//! Rhai rules (GATEWAY.md 4): one engine with the rule API and the limits, one compiled
//! AST per event, and the evaluation of a rule for one call.
//!
//! Rules cannot reach files, sockets or processes: Rhai has no such functions, the
//! `no_module` build removes `import`, `eval` is disabled, and `print`/`debug` go to the log.

mod api;
mod eval;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use rhai::{Engine, AST};

pub use api::{finish_answer, ForwardRequest, Reject};
pub use eval::{Evaluation, Input, RuleError, Verdict};

use crate::config::{Limits, Problem};

/// A compiled rule file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path: Arc<Path>,
    ast: AST,
}

impl Rule {
    /// The file name as shown in errors.
    pub fn file(&self) -> &Path {
        &self.path
    }
}

/// The engine every rule runs in: the rule API registered, the limits set.
pub struct RuleEngine {
    engine: Engine,
    limits: Limits,
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
        engine.on_print(|text| tracing::debug!(target: "pollgate::rule", "print: {text}"));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "pollgate::rule", "debug {}:{pos}: {text}", source.unwrap_or("rule"));
        });
        // The wall-clock bound: checked every 256 operations against the deadline of the
        // evaluation running on this thread.
        engine.on_progress(|ops| {
            if ops % 256 == 0 && api::past_deadline() {
                Some("time limit".into())
            } else {
                None
            }
        });
        api::register(&mut engine);
        Self {
            engine,
            limits: limits.clone(),
        }
    }

    /// Compiles a rule; a syntax error is `file:line:col: message`.
    pub fn compile(&self, path: &Path, source: &str) -> Result<Rule, Problem> {
        let mut ast = self.engine.compile(source).map_err(|e| {
            let pos = e.position();
            Problem::at_position(
                path,
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
                e.err_type().to_string(),
            )
        })?;
        ast.set_source(path.display().to_string());
        Ok(Rule {
            path: Arc::from(path),
            ast,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
