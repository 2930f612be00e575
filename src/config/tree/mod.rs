//! The config document as a YAML tree, typed into the [`super::raw`] structs with every
//! problem collected rather than the first.
//!
//! `${VAR}` is substituted in the tree's scalars before they are typed (GATEWAY.md 2), so a
//! scalar may be a string where a number, a boolean or an enum is wanted: the deserializer
//! here reads such strings as YAML would have read them unquoted (`retries: ${N:-2}`).
//!
//! serde stops at the first error of a struct, so typing runs in passes: a pass that fails
//! at a key records the problem and hides that key from the next pass (its field takes its
//! default, or its entry drops out). Unknown keys are skipped and recorded as they are met,
//! using the field list serde hands to `deserialize_struct`.

mod access;
mod error;
mod node;

use std::cell::RefCell;
use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use error::Error;
use node::{Ctx, Node};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value is: `upstreams.approvals.timeout`, `state.key[1]`.
pub(super) type KeyPath = Vec<Seg>;

/// `upstreams.approvals.timeout`, as problems name keys.
pub(super) fn show(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A mapping key as text (keys are strings in a config, but YAML allows `1:`).
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

/// A problem met while typing the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// A key that is not one of its section's fields; `path` is the key itself.
    UnknownKey { path: KeyPath, message: String },
    /// A value of the wrong type or form (or a section missing a required key).
    Value { path: KeyPath, message: String },
}

/// The outcome of typing: the value (`None` when the root itself is wrong), what was
/// found, and the keys that were hidden because of it.
pub(super) struct Typed<T> {
    pub value: Option<T>,
    pub found: Vec<Found>,
    pub hidden: HashSet<KeyPath>,
}

/// Types `doc` as `T`, hiding `hidden` (keys already known to be wrong) from the start.
pub(super) fn typed<T: DeserializeOwned>(doc: &Value, mut hidden: HashSet<KeyPath>) -> Typed<T> {
    let mut found: Vec<Found> = Vec::new();
    loop {
        let (result, unknown) = pass::<T>(doc, &hidden);
        for unknown in unknown {
            if !found.contains(&unknown) {
                found.push(unknown);
            }
        }
        let error = match result {
            Ok(value) => {
                return Typed {
                    value: Some(value),
                    found,
                    hidden,
                }
            }
            Err(error) => error,
        };
        let path = error.path.unwrap_or_default();
        let consequence = error.missing.is_some_and(|field| {
            let mut child = path.clone();
            child.push(Seg::Key(field.to_owned()));
            hidden.contains(&child)
        });
        if !consequence {
            found.push(Found::Value {
                path: path.clone(),
                message: error.message,
            });
        }
        if path.is_empty() || !hidden.insert(path) {
            return Typed {
                value: None,
                found,
                hidden,
            };
        }
    }
}

/// One pass over `doc`, skipping `hidden`: the value or the first error, and the unknown
/// keys met on the way.
fn pass<T: DeserializeOwned>(
    doc: &Value,
    hidden: &HashSet<KeyPath>,
) -> (Result<T, Error>, Vec<Found>) {
    let ctx = Ctx {
        hidden,
        unknown: RefCell::new(Vec::new()),
    };
    let result = T::deserialize(Node {
        value: doc,
        path: Vec::new(),
        ctx: &ctx,
    });
    (result, ctx.unknown.into_inner())
}
