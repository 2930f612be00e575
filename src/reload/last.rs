//! What the console and `GET /status` show of reloading: when the generation in use was
//! loaded, and the last reload's trigger, result and problems.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// The last reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `POST /reload`, `SIGHUP`, or the file change that caused it.
    pub trigger: String,
    pub ok: bool,
    /// One line a problem, as `pollgate check` prints them (empty when `ok`).
    pub errors: Vec<String>,
}

/// The generation in use and the last reload, as one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    /// Unix milliseconds the generation in use was loaded at.
    pub loaded_at_ms: u64,
    pub last_reload: Option<LastReload>,
}

/// Shared between the reloader and the admin listener. A std lock: held only to copy a
/// few fields, never across `.await`.
#[derive(Debug, Clone)]
pub(super) struct History(Arc<Mutex<(u64, Option<LastReload>)>>);

impl History {
    pub(super) fn new(loaded_at_ms: u64) -> Self {
        Self(Arc::new(Mutex::new((loaded_at_ms, None))))
    }

    pub(super) fn record(&self, last: LastReload) {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.ok {
            guard.0 = last.at_ms;
        }
        guard.1 = Some(last);
    }

    pub(super) fn status(&self, generation: u64) -> ReloadStatus {
        let guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ReloadStatus {
            generation,
            loaded_at_ms: guard.0,
            last_reload: guard.1.clone(),
        }
    }
}
