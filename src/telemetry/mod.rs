//! Logs and metrics. Logs go to stderr through `tracing`, as text or JSON lines, with the
//! level from `RUST_LOG` (default `info`). Nothing here logs secrets, signatures or bodies
//! at info: call lines carry the event, subscription, a conversation key and outcomes.

pub mod escape;
pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub use metrics::{EventMetrics, Metrics, Outcome, UpstreamOutcome};

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour());
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Colours only on a terminal: `serve > serve.log 2>&1`, pipes and log collectors get plain
/// text. `NO_COLOR` (no-color.org) turns them off on a terminal too.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
