//! From YAML text to a validated [`Config`], collecting every problem with its file and key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

use super::env::substitute;
use super::raw::RawConfig;
use super::report::{yaml_problem, Report};
use super::tree::{self, show};
use super::validate::Validator;
use super::{Config, Problem, Problems, RuleCheck};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn load(
    path: &Path,
    env: Env<'_>,
    rules: Option<RuleCheck<'_>>,
) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::in_file(path, format!("cannot read config file: {e}")))?;
    from_text(path, &text, env, rules)
}

/// YAML, then `${VAR}`, then types, then values and references: each phase reports every
/// problem it finds, and a later phase still runs where an earlier one left something to
/// check. Rules are checked with `rules` only when the config has problems (otherwise
/// [`crate::runtime::Runtime::build`] compiles them), so one run shows everything.
pub(super) fn from_text(
    path: &Path,
    text: &str,
    env: Env<'_>,
    rules: Option<RuleCheck<'_>>,
) -> Result<Config, Problems> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| yaml_problem(path, &e))?;
    if doc.is_null() {
        doc = Value::Mapping(serde_yaml::Mapping::new());
    }
    if !doc.is_mapping() {
        return Err(Problem::in_file(
            path,
            "the config must be a mapping of sections like `server:` and `subscriptions:`",
        )
        .into());
    }
    let mut report = Report::new(path, text);
    let substituted = substitute(&mut doc, env);
    let mut hidden = HashSet::new();
    for (at, error) in substituted.failed {
        report.add_at_key(&at, error.to_string());
        hidden.insert(at);
    }
    let typed = tree::typed::<RawConfig>(&doc, hidden);
    report.add_found(typed.found);
    let Some(raw) = typed.value else {
        return Err(report.finish(&substituted.replaced));
    };
    let mut validator = Validator::new(path, typed.hidden.iter().map(|p| show(p)).collect());
    let config = validator.validate(raw);
    for problem in validator.problems {
        report.add(problem);
    }
    match config {
        Some(config) if report.is_empty() => Ok(config),
        _ => {
            if let Some(check) = rules {
                check_rules(&mut report, &doc, &validator.rules, check);
            }
            Err(report.finish(&substituted.replaced))
        }
    }
}

/// Adds the problems of every rule file read to `report`, so a config with problems shows
/// its rules' too.
fn check_rules(
    report: &mut Report<'_>,
    doc: &Value,
    rules: &[(String, PathBuf, Arc<str>)],
    check: RuleCheck<'_>,
) {
    let known = upstream_names(doc);
    let known = |name: &str| known.iter().any(|k| k == name);
    for (key, rule, source) in rules {
        report.add_rule_problems(key, check(rule, source, &known));
    }
}

/// The names under `upstreams:` as written, also those whose entry has a problem (a rule
/// naming one is not wrong).
fn upstream_names(doc: &Value) -> Vec<String> {
    doc.get("upstreams")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(tree::key_text).collect())
        .unwrap_or_default()
}
