//! A typing error, with the key it is about once a node has claimed it.

use std::fmt;

use serde::de;

use super::{KeyPath, Seg};

/// A typing error and the key it is about.
#[derive(Debug)]
pub(super) struct Error {
    pub(super) path: Option<KeyPath>,
    pub(super) message: String,
    /// Set for serde's "missing field" errors: which field.
    pub(super) missing: Option<&'static str>,
}

impl Error {
    pub(super) fn at(mut self, path: &[Seg]) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_vec());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            message: msg.to_string(),
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            path: None,
            message: format!("missing field `{field}`"),
            missing: Some(field),
        }
    }
}
