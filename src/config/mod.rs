//! The validated configuration (GATEWAY.md 2): plain data, built by [`Config::load`] before
//! any port is bound. Every `${VAR}` is expanded, every secret decoded, every URL parsed and
//! every reference checked here; rules are compiled by [`crate::rules`] from the sources
//! read here.

mod env;
mod key_part;
mod limits;
mod load;
mod locate;
mod problem;
pub(crate) mod raw;
mod report;
#[cfg(test)]
mod tests;
mod token;
mod tree;
mod units;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use env::{expand, process_env, EnvError};
pub use key_part::KeyPart;
pub use limits::Limits;
pub use problem::{Problem, Problems};
pub use token::Token;
pub use units::{millis, parse_duration, parse_size};

use crate::signature::{Secret, SignatureError};

/// The base64 demo secret of the shipped example config and of the team's shared `mplus` signature vectors (copied to `tests/fixtures/mplus`).
pub const DEMO_SECRET_KEY: &[u8] = b"demo-secret-for-pollgate-examples";

/// `state.max_conversations` when the config does not say (GATEWAY.md 12).
pub const DEFAULT_MAX_CONVERSATIONS: usize = 1_000_000;

/// Where the config comes from when neither `--config` nor `$POLLGATE_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "rules/pollgate.yaml";

/// `url` with its password (if any) shown as `***`, for messages and logs.
pub fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// A loaded, validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, as given.
    pub path: PathBuf,
    /// The folder relative paths are resolved against (and that reload watches).
    pub dir: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub subscriptions: HashMap<String, Arc<Subscription>>,
    pub events: BTreeMap<String, Event>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub state: State,
    pub limits: Limits,
    /// Watch the rules folder and reload on changes.
    pub watch: bool,
    /// `outbox.path`, resolved against the config's folder: the folder of the memory
    /// store's durable queue (GATEWAY.md 8).
    pub outbox: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Without a trailing slash; events arrive at `{base_path}/{eventName}`.
    pub base_path: String,
    pub max_body_bytes: usize,
    /// Last-resort bound on one call, held calls included.
    pub request_timeout: Duration,
    /// How long shutdown waits for calls in flight and background forwards.
    pub shutdown_grace: Duration,
    /// One info line per call (target `pollgate::access`).
    pub access_log: bool,
    /// Complete request headers within this, from connect or from the first byte of a
    /// later request on the connection.
    pub header_timeout: Duration,
    /// The whole request body within this, from the end of its headers.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open webhook connections at most; beyond this, new ones wait in the backlog.
    pub max_connections: usize,
    /// Request bodies being read, all calls together (GATEWAY.md 12).
    pub max_buffered_bytes: u64,
    /// `server.tls`: HTTPS with this certificate and key; `None`: plain HTTP.
    pub tls: Option<crate::tls::Tls>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `admin.token`: required by every endpoint but `/healthz` and `/readyz` (and the
    /// console page itself). Always set when `listen` is not a loopback address.
    pub token: Option<Token>,
    /// `admin.push_token`: opens the `/push` endpoints only.
    pub push_token: Option<Token>,
}

/// A till subscription: its id (the `X-Mplus-Subscription-Id` value) and secret.
#[derive(Debug)]
pub struct Subscription {
    pub id: String,
    /// Signs forwards, and answers to calls that could not be verified.
    pub secret: Secret,
    /// Still accepted when verifying calls, during a rotation (GATEWAY.md 10).
    pub previous_secrets: Vec<Secret>,
    /// True when the secret is the shipped demo secret.
    pub is_demo: bool,
}

impl Subscription {
    /// Checks a call's `X-Mplus-Signature` against `secret`, then each previous secret;
    /// the index of the one that matched (0: `secret`, i: `previous_secrets[i - 1]`), whose
    /// secret signs the answer. A mismatch of all is the current secret's error.
    pub fn verify(&self, header: &[u8], body: &[u8]) -> Result<usize, SignatureError> {
        let current = self.secret.verify(header, body);
        if current.is_ok() || self.previous_secrets.is_empty() {
            return current.map(|()| 0);
        }
        self.previous_secrets
            .iter()
            .position(|s| s.verify(header, body).is_ok())
            .map(|i| i + 1)
            .ok_or(SignatureError::Mismatch)
    }

    /// The secret at an index [`Subscription::verify`] returned; the current one otherwise.
    pub fn signer(&self, index: usize) -> &Secret {
        index
            .checked_sub(1)
            .and_then(|i| self.previous_secrets.get(i))
            .unwrap_or(&self.secret)
    }
}

/// How one event (or `"*"`) is answered.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub answer: Answer,
    /// The upstream every call of this event is forwarded to, once per conversation.
    pub forward: Option<String>,
    /// How long a call may wait for a pending forward before answering; `None`: 0 for
    /// polling events, the upstream's whole budget (plus 1 s) for others (GATEWAY.md 5).
    /// Never past `server.request_timeout`.
    pub hold: Option<Duration>,
    pub polling: Option<Polling>,
    /// The cashier's message when a forward without a rule fails.
    pub unavailable_message: String,
    /// Whether the event's forwards are tied to the call or queued durably.
    pub delivery: Delivery,
    /// backgroundPoll as a channel for pushed messages (GATEWAY.md 9). Such an event is a
    /// polling event whose `polling.timeout` never comes.
    pub push: Option<PushChannel>,
}

/// `events.backgroundPoll.push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushChannel {
    /// How long a call with nothing pending waits for a message.
    pub hold: Duration,
    /// How long a message waits for its till before it expires.
    pub ttl: Duration,
}

/// The one event that carries pushed messages (MPLUS.md 5).
pub const PUSH_EVENT: &str = "backgroundPoll";

pub use raw::DeliveryKind as Delivery;

impl Event {
    /// A push channel without a rule: the pushed message is the answer.
    pub(crate) fn push_channel(name: String, push: Option<PushChannel>) -> Self {
        Self {
            name,
            answer: Answer::Push,
            forward: None,
            hold: None,
            polling: Some(Polling::endless()),
            unavailable_message: String::new(),
            delivery: Delivery::Call,
            push,
        }
    }

    /// Whether this event's forwards go through the outbox (GATEWAY.md 8).
    pub fn is_durable(&self) -> bool {
        self.delivery == Delivery::Durable
    }
}

/// Where an event's answer comes from.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A Rhai rule file, read but not yet compiled.
    Rule { path: PathBuf, source: Arc<str> },
    /// A fixed answer body.
    Respond(serde_json::Value),
    /// No rule: the forward's reply is the answer (GATEWAY.md 5).
    Reply,
    /// No rule: the pushed message is the answer (GATEWAY.md 9).
    Push,
}

#[derive(Debug, Clone)]
pub struct Polling {
    pub timeout: Duration,
    pub timeout_message: String,
    pub pending_message: String,
}

impl Polling {
    /// A push channel's polling: it never times out (GATEWAY.md 9).
    pub(crate) fn endless() -> Self {
        Self {
            timeout: Duration::MAX,
            timeout_message: String::new(),
            pending_message: String::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// Base URL without a trailing slash; events go to `{url}/{eventName}`.
    pub url: reqwest::Url,
    pub timeout: Duration,
    pub retries: u32,
    /// `None`: sign with the calling subscription's secret.
    pub secret: Option<Secret>,
    pub max_connections: usize,
    pub max_reply_bytes: usize,
    pub durable: Durable,
}

/// How durable deliveries to one upstream are retried (GATEWAY.md 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Counted from queueing; past it a failed delivery is dead.
    pub max_age: Duration,
    /// Every pause between attempts is at least this.
    pub backoff_min: Duration,
    /// The exponential backoff stops growing here (a `Retry-After` may ask for longer).
    pub backoff_max: Duration,
    /// With Redis: how long a replica's claim on a delivery lasts.
    pub lease: Duration,
}

impl Default for Durable {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct State {
    pub store: Store,
    pub ttl: Duration,
    /// Which parts of a call identify its conversation.
    pub key: Vec<KeyPart>,
}

/// The conversation store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Memory {
        /// At this many, a new conversation evicts the oldest finished one, or is refused
        /// when none has finished (GATEWAY.md 12). Redis bounds itself with `maxmemory`.
        max_conversations: usize,
    },
    Redis {
        server: RedisServer,
        prefix: String,
        /// Bound on each Redis command, so Redis trouble is an answer, not a hang.
        timeout: Duration,
    },
}

/// Where Redis is (`state.url`, `state.cluster`, `state.ca`; GATEWAY.md 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisServer {
    /// One `redis://` or `rediss://` URL; with `cluster`, the nodes the cluster is learnt
    /// from (any one that answers will do).
    pub urls: Vec<String>,
    pub cluster: bool,
    /// `state.ca`: a private CA trusted for `rediss://` instead of the system's roots.
    pub ca: Option<RedisCa>,
}

/// A CA certificate file, read and checked when the config is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCa {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for RedisCa {
    // The path is what an operator recognises; the bytes are noise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// The URLs for messages and logs, each password shown as `***`.
    pub fn shown(&self) -> String {
        let shown: Vec<String> = self.urls.iter().map(|u| without_password(u)).collect();
        shown.join(", ")
    }
}

/// Checks one rule file while a config with problems is loaded, so that its problems are
/// reported in the same run: the file, its source, and whether an upstream name is under
/// `upstreams:`. [`crate::rules::check`] is the one pollgate uses (config does not depend
/// on rules).
pub type RuleCheck<'a> = &'a dyn Fn(&Path, &str, &dyn Fn(&str) -> bool) -> Vec<Problem>;

impl Config {
    /// Reads and validates the config file at `path`, expanding `${VAR}` with `env`.
    pub fn load(
        path: impl Into<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Problems> {
        load::load(&path.into(), env, None)
    }

    /// As [`Config::load`]; when the config has problems, every rule file it names is
    /// checked with `rules` too, and its problems are reported with the config's.
    pub fn load_checking(
        path: impl Into<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
        rules: RuleCheck<'_>,
    ) -> Result<Self, Problems> {
        load::load(&path.into(), env, Some(rules))
    }

    /// Parses config text as if read from `path` (whose folder anchors relative paths).
    pub fn from_text(
        path: impl Into<PathBuf>,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Problems> {
        load::from_text(&path.into(), text, env, None)
    }

    /// As [`Config::from_text`], checking rules as [`Config::load_checking`] does.
    pub fn from_text_checking(
        path: impl Into<PathBuf>,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        rules: RuleCheck<'_>,
    ) -> Result<Self, Problems> {
        load::from_text(&path.into(), text, env, Some(rules))
    }

    /// The event config for `name`: its own, else `"*"`, else none.
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.get(name).or_else(|| self.events.get("*"))
    }
}
