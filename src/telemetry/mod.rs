//! Logs and metrics. Logs go to stderr through `tracing`, as text or JSON lines, with the
//! level from `RUST_LOG` (default `info`). Nothing here logs secrets, signatures or bodies
//! at info: call lines carry the event, subscription, a conversation key and outcomes.

pub mod escape;
pub mod metrics;

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
        .with_writer(std::io::stderr);
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
