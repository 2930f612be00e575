//! What of `event` a rule reads, found in its compiled AST, so a call builds only that
//! (see [`crate::body::Wanted`]).
//!
//! Every use of the variable `event` is looked at. A chain of property names or string
//! indexes from it (`event.event?.eventCounter`, `event["session"].lines`) reads the value
//! at that path, whole; the chain stops at anything else (a method call, an integer or
//! computed index), and what it has reached so far is read whole. Any other use (`event`
//! passed to a function, printed, captured by a closure, used as an index) reads all of
//! it. The rule cannot tell the difference: every path it can reach is there exactly as
//! the till sent it, and every object on the way has every key the rule asks for.
//!
//! A function's own variable called `event` is counted too: that can only add to what is
//! built, never take from it.

use rhai::{ASTFlags, ASTNode, Expr, AST};

use crate::body::Wanted;

/// The parts of `event` that `ast` can read.
pub(super) fn event_reads(ast: &AST) -> Wanted {
    let mut wanted = Wanted::none();
    ast.walk(&mut |nodes: &[ASTNode<'_>]| {
        let Some((ASTNode::Expr(var @ Expr::Variable(v, ..)), above)) = nodes.split_last() else {
            return true;
        };
        if v.1 != "event" {
            return true;
        }
        let read = match above {
            [.., outer, parent] if inside_chain(outer, parent) => Wanted::All,
            [.., parent] => chain_from(parent, var).map_or(Wanted::All, |(rest, step, whole)| {
                Wanted::path(&path(rest, step, whole))
            }),
            [] => Wanted::All,
        };
        wanted = std::mem::replace(&mut wanted, Wanted::All).union(read);
        // Nothing can take back `All`.
        wanted != Wanted::All
    });
    wanted
}

/// What a chain step is: a property name (after `.`) or an index value (inside `[]`).
#[derive(Clone, Copy)]
enum Step {
    Property,
    Index,
}

/// Where the chain `parent` that starts at `var` goes on: its rest, what the rest's first
/// step is, and whether that rest is all of it (`[`...`]` holding a whole expression).
fn chain_from<'a>(parent: &ASTNode<'a>, var: &Expr) -> Option<(&'a Expr, Step, bool)> {
    let ASTNode::Expr(parent) = parent else {
        return None;
    };
    match parent {
        Expr::Dot(x, flags, _) if std::ptr::eq(&x.lhs, var) => {
            Some((&x.rhs, Step::Property, flags.contains(ASTFlags::BREAK)))
        }
        Expr::Index(x, flags, _) if std::ptr::eq(&x.lhs, var) => {
            Some((&x.rhs, Step::Index, flags.contains(ASTFlags::BREAK)))
        }
        _ => None,
    }
}

/// Whether `parent` goes on an outer chain (`a[event].b`: there `event` is an index value,
/// and `.b` belongs to `a[event]`). Inside `[`...`]` that holds a whole expression
/// (`a[event.b]`), `parent` is a chain of its own.
fn inside_chain(outer: &ASTNode<'_>, parent: &ASTNode<'_>) -> bool {
    let ASTNode::Expr(parent) = parent else {
        return false;
    };
    match outer {
        ASTNode::Expr(Expr::Dot(x, flags, _) | Expr::Index(x, flags, _)) => {
            std::ptr::eq(&x.rhs, *parent) && !flags.contains(ASTFlags::BREAK)
        }
        _ => false,
    }
}

/// The keys a chain's rest names, up to the first step that is not a key.
fn path(mut rest: &Expr, mut step: Step, mut whole: bool) -> Vec<&str> {
    let mut keys = Vec::new();
    loop {
        match rest {
            Expr::Dot(x, flags, _) | Expr::Index(x, flags, _) if !whole => {
                let Some(k) = key(&x.lhs, step) else {
                    return keys;
                };
                keys.push(k);
                step = match rest {
                    Expr::Dot(..) => Step::Property,
                    _ => Step::Index,
                };
                whole = flags.contains(ASTFlags::BREAK);
                rest = &x.rhs;
            }
            last => {
                keys.extend(key(last, step));
                return keys;
            }
        }
    }
}

/// A step that names a key: a property, or a string constant as an index.
fn key(expr: &Expr, step: Step) -> Option<&str> {
    match (expr, step) {
        (Expr::Property(p, _), Step::Property) => Some(p.2.as_str()),
        (Expr::StringConstant(s, _), Step::Index) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Limits;
    use crate::rules::RuleEngine;

    fn reads(source: &str) -> Wanted {
        let engine = RuleEngine::new(&Limits::default());
        let rule = engine
            .compile(Path::new("r.rhai"), source)
            .expect("compiles");
        rule.event_reads()
    }

    fn paths(list: &[&[&str]]) -> Wanted {
        list.iter()
            .fold(Wanted::none(), |w, p| w.union(Wanted::path(p)))
    }

    #[test]
    fn property_chains_read_their_paths() {
        assert_eq!(
            reads("let c = event.event?.eventCounter ?? 0; if c > 2 { #{} } else { () }"),
            paths(&[&["event", "eventCounter"]])
        );
        assert_eq!(
            reads(r#"`${event.sender.branchNumber}/${event["sender"]["workplaceNumber"]}`"#),
            paths(&[&["sender", "branchNumber"], &["sender", "workplaceNumber"]])
        );
        assert_eq!(reads("1 + 1"), Wanted::none());
    }

    #[test]
    fn a_chain_stops_at_what_is_not_a_key() {
        assert_eq!(
            reads("event.session.lines.len() + event.session.lines[0].quantity"),
            paths(&[&["session", "lines"]])
        );
        assert_eq!(
            reads("let k = \"x\"; event.session[k]"),
            paths(&[&["session"]])
        );
        assert_eq!(reads("event.keys()"), Wanted::All);
    }

    #[test]
    fn any_other_use_reads_everything() {
        for source in [
            "event",
            "let e = event; e.x",
            "print(event); 1",
            "to_json(event)",
            "`${event}`",
            "let f = || event.x; f.call()",
            "fn g(e) { e.a } g(event)",
            "state[event]",
            "state[event].a",
            "\"x\" in event",
        ] {
            assert_eq!(reads(source), Wanted::All, "{source}");
        }
        // A chain of its own inside an index of something else reads its path.
        assert_eq!(reads("let m = #{}; m[event.a.b]"), paths(&[&["a", "b"]]));
        assert_eq!(reads(r#"event["a"]["b"] + event[1]"#), Wanted::All);
        assert_eq!(reads(r#"event["a"]["b"]"#), paths(&[&["a", "b"]]));
        assert_eq!(reads(r#"event["a"]["x".len]"#), paths(&[&["a"]]));
    }
}
