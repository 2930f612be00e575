//! Wall-clock milliseconds that follow tokio's clock, so tests and `pollgate test` can
//! pause and advance time (`tokio::time::pause`) instead of sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::millis;

/// Milliseconds since the Unix epoch: the system time at start plus tokio's elapsed time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    /// A clock starting at the current system time.
    pub fn system() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis);
        Self::starting_at(base_ms)
    }

    /// A clock that reads `base_ms` now.
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            base: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let elapsed = millis(self.base.elapsed());
        self.base_ms.saturating_add(elapsed)
    }

    /// `now` as RFC 3339 with milliseconds, for `meta.received_at`.
    pub fn rfc3339(ms: u64) -> String {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_millis(time).to_string()
    }
}
