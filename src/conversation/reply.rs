//! An upstream's reply as the store keeps it and rules see it, and the two ways one comes
//! about: an HTTP answer, or a failure before any usable answer.

use serde::{Deserialize, Serialize};

/// An upstream's reply as rules see it (GATEWAY.md 4.2): `#{ ok, status, body, error, elapsed_ms }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// True for a 2xx answer.
    pub ok: bool,
    /// The HTTP status; 0 when no HTTP answer came.
    pub status: u16,
    /// The parsed JSON body, or the body as a string when it is not JSON.
    pub body: serde_json::Value,
    /// Why there was no usable answer.
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

impl Reply {
    /// An HTTP answer: ok for a 2xx, otherwise with an error naming the status.
    pub fn answered(status: u16, body: serde_json::Value, elapsed_ms: u64) -> Self {
        let ok = (200..300).contains(&status);
        Self {
            ok,
            status,
            body,
            error: (!ok).then(|| format!("upstream answered HTTP {status}")),
            elapsed_ms,
        }
    }

    /// No usable HTTP answer (status 0, no body), and why.
    pub fn failed(error: String, elapsed_ms: u64) -> Self {
        Self {
            ok: false,
            status: 0,
            body: serde_json::Value::Null,
            error: Some(error),
            elapsed_ms,
        }
    }
}
