//! The problems of one config load, from every phase, put in file order (GATEWAY.md 2):
//! each is placed at its key's line (or its nearest ancestor's) in the config file, and a
//! rule file's problems at the line of the `rule:` key naming the file, in their own order.
//! A YAML syntax error, which stops loading, is shaped here too.

use std::path::Path;

use super::locate::locate;
use super::tree::{show, Found, KeyPath, Seg};
use super::{Problem, Problems};

/// Where a problem sorts: its place in the config file, then its place in a rule file.
type Place = ((usize, usize), (usize, usize));

const NOWHERE: (usize, usize) = (usize::MAX, usize::MAX);

pub(super) struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<(Place, Problem)>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            problems: Vec::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// A problem about the value at `path`, shown with its key.
    pub(super) fn add_at_key(&mut self, path: &[Seg], message: String) {
        let problem = Problem::at_key(self.file, show(path), message);
        let place = self.place(path);
        self.problems.push(((place, (0, 0)), problem));
    }

    /// What typing found, shown at its line and column.
    pub(super) fn add_found(&mut self, found: Vec<Found>) {
        for found in found {
            let (path, key, message) = match found {
                // Shown as serde shows it: the section, then "unknown field".
                Found::UnknownKey { path, message } => {
                    let section = show(&path[..path.len().saturating_sub(1)]);
                    (path, section, message)
                }
                Found::Value { path, message } => {
                    let key = show(&path);
                    (path, key, message)
                }
            };
            let at = locate(self.text, &path);
            let problem = Problem {
                file: self.file.to_path_buf(),
                position: at,
                key: (!key.is_empty()).then_some(key),
                message,
            };
            let place = at.unwrap_or_else(|| self.place(&path));
            self.problems.push(((place, (0, 0)), problem));
        }
    }

    /// A problem of the values, named by its key (`events.scanCode.forward`).
    pub(super) fn add(&mut self, problem: Problem) {
        let place = match (&problem.position, &problem.key) {
            (Some(at), _) => *at,
            (None, Some(key)) => self.place(&split(key)),
            (None, None) => NOWHERE,
        };
        self.problems.push(((place, (0, 0)), problem));
    }

    /// The problems of the rule file named at `key` (`events.scanCode.rule`).
    pub(super) fn add_rule_problems(&mut self, key: &str, problems: Vec<Problem>) {
        let place = self.place(&split(key));
        for problem in problems {
            let inner = problem.position.unwrap_or(NOWHERE);
            self.problems.push(((place, inner), problem));
        }
    }

    /// Every problem in file order, values that came from the environment not shown.
    pub(super) fn finish(mut self, replaced: &[(String, String, String)]) -> Problems {
        self.problems.sort_by_key(|(place, _)| *place);
        Problems(
            self.problems
                .into_iter()
                .map(|(_, problem)| hide_substituted(problem, replaced))
                .collect(),
        )
    }

    /// The line and column of `path`, else of its nearest ancestor that the text has.
    fn place(&self, path: &[Seg]) -> (usize, usize) {
        (1..=path.len())
            .rev()
            .find_map(|len| locate(self.text, &path[..len]))
            .unwrap_or(NOWHERE)
    }
}

/// `events.scanCode.forward` as a path (event and upstream names rarely hold dots).
fn split(key: &str) -> KeyPath {
    key.split('.').map(|k| Seg::Key(k.to_owned())).collect()
}

/// A problem about a value expanded from `${VAR}` quotes the value as written, since the
/// environment's value may be a secret (a password in a URL).
fn hide_substituted(mut problem: Problem, replaced: &[(String, String, String)]) -> Problem {
    let Some(key) = &problem.key else {
        return problem;
    };
    for (at, written, expanded) in replaced {
        if at == key && !expanded.is_empty() && problem.message.contains(expanded.as_str()) {
            problem.message = format!(
                "{} (the value from the environment is not shown)",
                problem.message.replace(expanded.as_str(), written)
            );
        }
    }
    problem
}

pub(super) fn yaml_problem(path: &Path, error: &serde_yaml::Error) -> Problem {
    // serde_yaml (and libyaml inside the message) write " at line L column C"; the
    // position goes to the front instead.
    let message = without_positions(&error.to_string());
    match error.location() {
        Some(at) => Problem::at_position(path, at.line(), at.column(), message),
        None => Problem::in_file(path, message),
    }
}

fn without_positions(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line = digits(after);
        match after[line..].strip_prefix(" column ") {
            Some(tail) if line > 0 && digits(tail) > 0 => rest = &tail[digits(tail)..],
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
