//! The upstreams a rule names: every `forward("name")` whose name is a string literal is
//! checked against `upstreams:` when the rule is compiled, so `pollgate check` (and startup)
//! refuses a typo instead of the rule failing at its first call. A name computed at run
//! time can only be checked then.

use std::path::Path;

use rhai::{ASTNode, Expr, Stmt, AST};

use crate::config::Problem;

/// `forward("x")` calls in `ast` naming an upstream `known` does not have, as problems at
/// the call's line and column.
pub(super) fn unknown_upstreams(
    path: &Path,
    ast: &AST,
    known: &dyn Fn(&str) -> bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    ast.walk(&mut |nodes: &[ASTNode<'_>]| {
        // A call is an expression, or a statement of its own (`forward("x");`).
        let (call, at) = match nodes.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, at))) => (call, at),
            Some(ASTNode::Stmt(Stmt::FnCall(call, at))) => (call, at),
            _ => return true,
        };
        if call.name == "forward" {
            if let Some(Expr::StringConstant(name, _)) = call.args.first() {
                if !known(name) {
                    problems.push(Problem::at_position(
                        path,
                        at.line().unwrap_or(0),
                        at.position().unwrap_or(0),
                        format!("forward(\"{name}\"): unknown upstream `{name}` (not under `upstreams:`)"),
                    ));
                }
            }
        }
        true
    });
    problems
}
