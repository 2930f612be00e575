//! `${NAME}`, `${NAME:-default}` and `${NAME-default}` substitution in config scalars
//! (GATEWAY.md 2): `:-` uses the default when NAME is unset or empty, `-` only when it is
//! unset, as shells and compose do.
//!
//! The process environment is read here and nowhere else in config loading: callers pass a
//! lookup function, so tests hand in a map instead of setting process variables.

use std::fmt;

use serde_yaml::Value;

use super::tree::{key_text, show, KeyPath, Seg};

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `${NAME}` without a default, and NAME is not set.
    Missing(String),
    /// `${` without a closing `}`, or an empty or malformed name.
    Malformed(String),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(
                f,
                "environment variable {name} is not set (set it, or write ${{{name}:-default}})"
            ),
            Self::Malformed(text) => write!(f, "malformed variable reference `{text}`"),
        }
    }
}

/// Replaces every `${NAME}` / `${NAME:-default}` / `${NAME-default}` in `input` using
/// `lookup`.
/// `$$` stands for a literal `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| EnvError::Malformed(rest[at..].to_owned()))?;
            let reference = &body[..end];
            let (name, default) = split_reference(reference)
                .ok_or_else(|| EnvError::Malformed(format!("${{{reference}}}")))?;
            match (lookup(name), default) {
                (Some(value), Default::IfEmpty(default)) if value.is_empty() => {
                    out.push_str(default);
                }
                (Some(value), _) => out.push_str(&value),
                (None, Default::IfEmpty(default) | Default::IfUnset(default)) => {
                    out.push_str(default);
                }
                (None, Default::None) => return Err(EnvError::Missing(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What follows the name in a reference.
enum Default<'a> {
    None,
    /// `:-default`: when the variable is unset or empty.
    IfEmpty(&'a str),
    /// `-default`: only when the variable is unset.
    IfUnset(&'a str),
}

/// `NAME`, `NAME:-default` or `NAME-default`; `None` when malformed.
fn split_reference(reference: &str) -> Option<(&str, Default<'_>)> {
    let end = reference
        .find(|c: char| c != '_' && !c.is_ascii_alphanumeric())
        .unwrap_or(reference.len());
    let (name, rest) = reference.split_at(end);
    if !is_valid_name(name) {
        return None;
    }
    let default = if rest.is_empty() {
        Default::None
    } else if let Some(default) = rest.strip_prefix(":-") {
        Default::IfEmpty(default)
    } else if let Some(default) = rest.strip_prefix('-') {
        Default::IfUnset(default)
    } else {
        return None;
    };
    Some((name, default))
}

/// What [`substitute`] did.
#[derive(Debug, Default)]
pub(super) struct Substituted {
    /// Values that could not be expanded, and why.
    pub failed: Vec<(KeyPath, EnvError)>,
    /// Values that changed: the key (`upstreams.x.url`), the text as written and the
    /// expanded text (kept out of problems: it may be a secret).
    pub replaced: Vec<(String, String, String)>,
}

/// Expands `${VAR}` in every string scalar of `doc` (mapping keys stay as written).
pub(super) fn substitute(doc: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let mut out = Substituted::default();
    walk(doc, &mut Vec::new(), lookup, &mut out);
    out
}

fn walk(
    value: &mut Value,
    path: &mut KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Substituted,
) {
    match value {
        Value::String(text) if text.contains('$') => match expand(text, lookup) {
            Ok(expanded) => {
                if expanded != *text {
                    let written = std::mem::replace(text, expanded.clone());
                    out.replaced.push((show(path), written, expanded));
                }
            }
            Err(e) => out.failed.push((path.clone(), e)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, path, lookup, out);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(Seg::Key(key_text(key)));
                walk(item, path, lookup, out);
                path.pop();
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, out),
        _ => {}
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The real process environment, for `main`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(expand("x${SECRET}y", &env).as_deref(), Ok("xabcy"));
        assert_eq!(expand("${NOPE:-d:e}", &env).as_deref(), Ok("d:e"));
        assert_eq!(expand("a$$b $x", &env).as_deref(), Ok("a$b $x"));
        assert_eq!(expand("plain", &env).as_deref(), Ok("plain"));
    }

    #[test]
    fn a_colon_dash_default_covers_unset_and_empty_variables_a_dash_default_only_unset_ones() {
        assert_eq!(expand("${EMPTY:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand("${NOPE:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand("${EMPTY-d}", &env).as_deref(), Ok(""));
        assert_eq!(expand("${NOPE-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand("${SECRET-d}", &env).as_deref(), Ok("abc"));
        assert_eq!(expand("${NOPE:-}", &env).as_deref(), Ok(""));
        assert_eq!(expand("${EMPTY}", &env).as_deref(), Ok(""));
    }

    #[test]
    fn missing_variable_without_default_is_an_error_naming_it() {
        let err = expand("${MPLUS_SECRET}", &env).unwrap_err();
        assert_eq!(err, EnvError::Missing("MPLUS_SECRET".into()));
        assert!(err.to_string().contains("MPLUS_SECRET is not set"));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(matches!(
            expand("${OPEN", &env),
            Err(EnvError::Malformed(_))
        ));
        assert!(matches!(expand("${1X}", &env), Err(EnvError::Malformed(_))));
        assert!(matches!(expand("${}", &env), Err(EnvError::Malformed(_))));
        assert!(matches!(
            expand("${A:=b}", &env),
            Err(EnvError::Malformed(_))
        ));
    }
}
