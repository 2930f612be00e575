//! The config file exactly as written: serde structs with `deny_unknown_fields`, strings
//! not yet expanded. [`super::load`] turns this into a validated [`super::Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::units::{duration, optional_duration};
use super::Limits;
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
    pub limits: Limits,
    #[serde(default)]
    pub watch: Option<bool>,
    #[serde(default)]
    pub outbox: RawOutbox,
}

/// `outbox:` (GATEWAY.md 8): where the memory store's durable deliveries are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbox {
    pub path: Option<String>,
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
    pub tls: Option<RawTls>,
}

/// `server.tls`: PEM files, relative to the config file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: String,
    pub key: String,
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
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub listen: String,
    /// Bearer token for every admin endpoint but `/healthz` and `/readyz`.
    pub token: Option<String>,
    /// Bearer token for the `/push` endpoints only.
    pub push_token: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            token: None,
            push_token: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscription {
    pub secret: String,
    /// Secrets still accepted while tills move to `secret` (rotation).
    #[serde(default)]
    pub previous_secrets: Vec<String>,
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
    #[serde(default)]
    pub delivery: DeliveryKind,
    /// backgroundPoll only: tills get pushed messages on their calls (GATEWAY.md 9).
    pub push: Option<RawPush>,
}

/// `events.backgroundPoll.push`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPush {
    #[serde(default = "default_push_hold", deserialize_with = "duration")]
    pub hold: Duration,
    #[serde(default = "default_push_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
}

fn default_push_hold() -> Duration {
    Duration::from_secs(20)
}

fn default_push_ttl() -> Duration {
    Duration::from_secs(600)
}

/// `events.X.delivery`: the forward tied to the call, or queued durably (GATEWAY.md 8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    #[default]
    Call,
    Durable,
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
    #[serde(default)]
    pub durable: RawDurable,
}

/// `upstreams.X.durable`: how durable deliveries to the upstream are retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDurable {
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    pub backoff: RawBackoff,
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
}

impl Default for RawDurable {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            backoff: RawBackoff::default(),
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBackoff {
    #[serde(deserialize_with = "duration")]
    pub min: Duration,
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
}

impl Default for RawBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
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
    pub url: Option<RawUrls>,
    pub cluster: bool,
    pub ca: Option<String>,
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
            cluster: false,
            ca: None,
            prefix: "pollgate".into(),
            ttl: Duration::from_secs(15 * 60),
            key: None,
            timeout: Duration::from_secs(2),
            max_conversations: super::DEFAULT_MAX_CONVERSATIONS,
        }
    }
}

/// `state.url`: one URL, or (with `state.cluster: true`) the nodes of a Redis Cluster.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawUrls {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    #[default]
    Memory,
    Redis,
}
