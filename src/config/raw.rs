//! The config file exactly as written: serde structs with `deny_unknown_fields`, strings
//! not yet expanded. [`super::load`] turns this into a validated [`super::Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::signature::Encoding;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub subscriptions: BTreeMap<String, RawSubscription>,
    #[serde(default)]
    pub events: BTreeMap<String, RawEvent>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub watch: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub listen: String,
    pub base_path: String,
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    pub access_log: bool,
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_buffered_bytes: RawSize,
}

/// A size as written: a number of bytes, or text like `64MiB` (checked in [`super::load`],
/// so a bad one is reported with its key).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            base_path: "/webhooks".into(),
            max_body_bytes: 1_048_576,
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            access_log: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_buffered_bytes: RawSize::Bytes(64 * 1024 * 1024),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscription {
    pub secret: String,
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvent {
    pub rule: Option<String>,
    pub respond: Option<serde_json::Value>,
    pub forward: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub hold: Option<Duration>,
    pub polling: Option<RawPolling>,
    pub unavailable_message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolling {
    #[serde(default = "default_polling_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_timeout_message")]
    pub timeout_message: String,
    #[serde(default = "default_pending_message")]
    pub pending_message: String,
}

fn default_polling_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_timeout_message() -> String {
    "No answer from the back office; please try again".into()
}

fn default_pending_message() -> String {
    "Waiting for the back office...".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: String,
    #[serde(default = "default_upstream_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    pub secret: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: usize,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retries() -> u32 {
    2
}

fn default_max_connections() -> usize {
    32
}

fn default_max_reply_bytes() -> usize {
    1_048_576
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawState {
    pub store: StoreKind,
    pub url: Option<String>,
    pub prefix: String,
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    pub key: Option<Vec<String>>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub max_conversations: usize,
}

impl Default for RawState {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            url: None,
            prefix: "pollgate".into(),
            ttl: Duration::from_secs(15 * 60),
            key: None,
            timeout: Duration::from_secs(2),
            max_conversations: crate::conversation::DEFAULT_MAX_CONVERSATIONS,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_answer_bytes: usize,
    pub max_state_depth: usize,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_answer_bytes: 256 * 1024,
            max_state_depth: 32,
            timeout: Duration::from_millis(50),
        }
    }
}

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (binary units; `B` alone is bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size like 1048576, 512KiB, 64MiB or 1GiB"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is not a size like 1048576, 512KiB, 64MiB or 1GiB"))
}

/// Parses `250ms`, `2s`, `10m`, `1h 30m`, `1d`: whole numbers with the units ms, s, m, h
/// and d, several summed. A bare number is refused (seconds or milliseconds?), and so are
/// months and years (`1M` would be a month) and spelled-out units (`10 seconds`): one short
/// spelling each, the way the examples write them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a duration: give a unit, like {trimmed}s or {trimmed}ms"
        ));
    }
    let refuse =
        |why: &str| format!("`{text}` is not a duration like 250ms, 2s, 10m or 1h 30m ({why})");
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    if rest.is_empty() {
        return Err(refuse("units: ms, s, m, h, d"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| refuse("units: ms, s, m, h, d"))?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "M" | "y" | "mon" | "month" | "months" | "year" | "years" | "yr" | "yrs" => {
                return Err(refuse(
                    "months and years are not accepted; write days, like 30d",
                ));
            }
            _ => return Err(refuse("units: ms, s, m, h, d")),
        };
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| refuse("too long"))?;
        total = total.checked_add(part).ok_or_else(|| refuse("too long"))?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
