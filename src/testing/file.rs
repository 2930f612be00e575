//! The test file's form: cases, their calls and pretend upstream replies, and the checks
//! a case's form gets before anything is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestFile {
    pub(super) config: Option<PathBuf>,
    pub(super) cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Case {
    pub(super) name: String,
    pub(super) event: String,
    pub(super) subscription: Option<String>,
    pub(super) body: Option<Value>,
    pub(super) body_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) upstreams: BTreeMap<String, Pretend>,
    pub(super) forwards: Option<BTreeMap<String, u32>>,
    pub(super) calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Call {
    pub(super) after: Option<String>,
    pub(super) body: Option<Value>,
    pub(super) body_file: Option<PathBuf>,
    #[serde(default = "ok_status")]
    pub(super) status: u16,
    pub(super) expect: Option<Value>,
    /// `expect` names every key of the answer: none may be missing or extra.
    #[serde(default)]
    pub(super) exact: bool,
    /// The number (from 1) of an earlier call whose status and body this call's must equal.
    pub(super) same_as: Option<usize>,
}

fn ok_status() -> u16 {
    200
}

/// A pretend upstream reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pretend {
    #[serde(default = "ok_status")]
    pub(super) status: u16,
    #[serde(default)]
    pub(super) body: Value,
    pub(super) delay: Option<String>,
    /// No HTTP answer at all (status 0), e.g. "connection refused".
    pub(super) error: Option<String>,
}

pub(super) fn load_body(
    dir: &Path,
    inline: Option<&Value>,
    file: Option<&Path>,
) -> Result<Option<Bytes>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err("give `body` or `body_file`, not both".into()),
        (Some(value), None) => serde_json::to_vec(value)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| e.to_string()),
        (None, Some(file)) => {
            let path = dir.join(file);
            std::fs::read(&path)
                .map(|b| Some(Bytes::from(b)))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// A call's `exact:` and `same_as:` must make sense before it is sent: an `exact` without
/// `expect` or a `same_as` naming no earlier call would check nothing.
pub(super) fn check_call_form(n: usize, call: &Call) -> Result<(), String> {
    if call.exact && call.expect.is_none() {
        return Err(format!(
            "call {n}: `exact: true` needs an `expect:` to compare"
        ));
    }
    match call.same_as {
        Some(earlier) if earlier == 0 || earlier >= n => Err(format!(
            "call {n}: `same_as: {earlier}` names no earlier call (calls count from 1)"
        )),
        _ => Ok(()),
    }
}
