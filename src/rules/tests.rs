//! Rule evaluation: the scope, the API, the return rules, the limits.

use super::*;

#[test]
fn compile_errors_say_file_line_and_column() {
    let engine = RuleEngine::new(&Limits::default());
    let err = engine
        .compile(Path::new("bad.rhai"), "let x = ;")
        .unwrap_err();
    assert!(err.to_string().starts_with("bad.rhai:1:"), "{err}");
}
