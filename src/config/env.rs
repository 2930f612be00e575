//! `${NAME}` and `${NAME:-default}` substitution in config strings.
//!
//! The process environment is read here and nowhere else in config loading: callers pass a
//! lookup function, so tests hand in a map instead of setting process variables.

use std::fmt;

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

/// Replaces every `${NAME}` / `${NAME:-default}` in `input` using `lookup`.
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
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if !is_valid_name(name) {
                return Err(EnvError::Malformed(format!("${{{reference}}}")));
            }
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(EnvError::Missing(name.to_owned())),
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
        assert_eq!(expand("${EMPTY:-d}", &env).as_deref(), Ok(""));
        assert_eq!(expand("a$$b $x", &env).as_deref(), Ok("a$b $x"));
        assert_eq!(expand("plain", &env).as_deref(), Ok("plain"));
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
    }
}
