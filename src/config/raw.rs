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
            timeout: Duration::from_millis(50),
        }
    }
}

/// Parses `250ms`, `2s`, `10m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 250ms, 2s or 10m ({e})"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
