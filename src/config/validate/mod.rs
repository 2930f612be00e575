//! The values of a typed config, checked: addresses, paths, secrets, bounds and
//! references, each problem recorded under its key. The sections with the most to check
//! have their own files.

mod events;
mod outbox;
mod redis;
mod state;
mod upstreams;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawAdmin, RawConfig, RawServer, RawSize, RawSubscription, RawTls};
use super::units::parse_size;
use super::{Admin, Config, Limits, Problem, Server, Subscription, Token, DEMO_SECRET_KEY};
use crate::signature::{Encoding, Secret};

pub(super) struct Validator<'a> {
    file: &'a Path,
    dir: PathBuf,
    /// Keys whose values had a problem while typing (shown as `upstreams.x.timeout`): they
    /// hold defaults or are gone, so what follows from that is not reported again.
    hidden: Vec<String>,
    pub(super) problems: Vec<Problem>,
    /// Every rule file read: the key naming it, its path and its source.
    pub(super) rules: Vec<(String, PathBuf, Arc<str>)>,
}

impl<'a> Validator<'a> {
    /// A validator for the config file `file`, whose `hidden` keys had problems while typing.
    pub(super) fn new(file: &'a Path, hidden: Vec<String>) -> Self {
        Self {
            file,
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            hidden,
            problems: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        if !self.is_hidden(&key) {
            self.problems.push(Problem::at_key(self.file, key, message));
        }
    }

    /// Whether `key`, or a section it is in, had a problem while typing.
    fn is_hidden(&self, key: &str) -> bool {
        self.hidden.iter().any(|h| {
            key.strip_prefix(h.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// Whether something inside `key` had a problem while typing (so `key` may lack it).
    fn lost_inside(&self, key: &str) -> bool {
        self.hidden.iter().any(|h| {
            h.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    fn address(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!("`{value}` is not an address like 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    /// `admin:`; off loopback without `admin.token` the endpoints would be open to the
    /// network, so that is a problem, not a warning.
    fn admin(&mut self, raw: &RawAdmin) -> Option<Admin> {
        let listen = self.address("admin.listen", &raw.listen)?;
        let token = raw.token.as_deref().and_then(Token::new);
        let push_token = raw.push_token.as_deref().and_then(Token::new);
        if token.is_none() && !listen.ip().is_loopback() {
            self.problem(
                "admin.token",
                format!(
                    "admin.listen ({listen}) is not a loopback address and no admin.token is set; set a token, or listen on 127.0.0.1"
                ),
            );
            return None;
        }
        Some(Admin {
            listen,
            token,
            push_token,
        })
    }

    fn secret(&mut self, key: &str, text: &str, encoding: Encoding) -> Option<Secret> {
        match Secret::decode(text, encoding) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    /// The config, when `raw` has no problem of its own (they are in `self.problems`).
    pub(super) fn validate(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.address("server.listen", &raw.server.listen);
        let admin = self.admin(&raw.admin);
        let base_path = self.base_path(&raw.server.base_path);
        let max_buffered_bytes = self.server_limits(&raw.server);
        let tls = self.tls(raw.server.tls.as_ref());
        let subscriptions = self.subscriptions(&raw.subscriptions);
        let upstreams = self.upstreams(raw.upstreams);
        let events = self.events(raw.events, &upstreams);
        let store_kind = raw.state.store;
        let state = self.state(raw.state);
        let outbox = self.outbox(raw.outbox, store_kind, &events);
        let limits = self.limits(raw.limits);
        if !self.problems.is_empty() {
            return None;
        }
        let (
            Some(listen),
            Some(admin),
            Some(base_path),
            Some(state),
            Some(max_buffered_bytes),
            Some(tls),
        ) = (listen, admin, base_path, state, max_buffered_bytes, tls)
        else {
            // A problem was recorded here, or while typing (and not repeated here).
            return None;
        };
        Some(Config {
            path: self.file.to_path_buf(),
            dir: self.dir.clone(),
            server: Server {
                tls,
                ..server(&raw.server, listen, base_path, max_buffered_bytes)
            },
            admin,
            subscriptions,
            events,
            upstreams,
            state,
            limits,
            watch: raw.watch.unwrap_or(true),
            outbox,
        })
    }

    fn subscriptions(
        &mut self,
        raw: &BTreeMap<String, RawSubscription>,
    ) -> HashMap<String, Arc<Subscription>> {
        let mut subscriptions = HashMap::new();
        for (id, sub) in raw {
            let key = format!("subscriptions.{id}.secret");
            let secret = self.secret(&key, &sub.secret, sub.encoding);
            let previous: Vec<Option<Secret>> = (sub.previous_secrets.iter().enumerate())
                .map(|(i, text)| {
                    let key = format!("subscriptions.{id}.previous_secrets[{i}]");
                    self.secret(&key, text, sub.encoding)
                })
                .collect();
            let (Some(secret), Some(previous_secrets)) =
                (secret, previous.into_iter().collect::<Option<Vec<_>>>())
            else {
                continue;
            };
            let is_demo = secret.has_key(DEMO_SECRET_KEY);
            let id = id.clone();
            subscriptions.insert(
                id.clone(),
                Arc::new(Subscription {
                    id,
                    secret,
                    previous_secrets,
                    is_demo,
                }),
            );
        }
        if raw.is_empty() && !self.lost_inside("subscriptions") {
            self.problem(
                "subscriptions",
                "no subscription is configured; no till could call",
            );
        }
        subscriptions
    }

    /// The size and time bounds of `server:` (GATEWAY.md 12); the buffered-bytes budget
    /// when it is valid.
    fn server_limits(&mut self, raw: &RawServer) -> Option<u64> {
        if raw.max_body_bytes == 0 {
            self.problem("server.max_body_bytes", "must be at least 1");
        }
        for (key, value) in [
            ("server.header_timeout", raw.header_timeout),
            ("server.body_timeout", raw.body_timeout),
            ("server.idle_timeout", raw.idle_timeout),
        ] {
            if value.is_zero() {
                self.problem(key, "must be more than 0");
            }
        }
        if raw.max_connections == 0 {
            self.problem("server.max_connections", "must be at least 1");
        }
        let budget = match &raw.max_buffered_bytes {
            RawSize::Bytes(n) => Ok(*n),
            RawSize::Text(text) => parse_size(text),
        };
        match budget {
            Err(message) => {
                self.problem("server.max_buffered_bytes", message);
                None
            }
            // A budget smaller than one body would refuse calls the body limit allows.
            Ok(n) if n < raw.max_body_bytes as u64 => {
                self.problem(
                    "server.max_buffered_bytes",
                    format!(
                        "{n} is less than server.max_body_bytes ({}); one allowed body must fit",
                        raw.max_body_bytes
                    ),
                );
                None
            }
            Ok(n) => Some(n),
        }
    }

    /// `server.tls`, read and checked now (`Some(None)`: plain HTTP).
    fn tls(&mut self, raw: Option<&RawTls>) -> Option<Option<crate::tls::Tls>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let (cert, key) = (self.dir.join(&raw.cert), self.dir.join(&raw.key));
        match crate::tls::load(&cert, &key) {
            Ok(tls) => Some(Some(tls)),
            Err(e) => {
                self.problem(e.config_key(), e.to_string());
                None
            }
        }
    }

    fn base_path(&mut self, value: &str) -> Option<String> {
        let trimmed = value.trim_end_matches('/');
        if !value.starts_with('/') || trimmed.contains("//") || trimmed.contains(['?', '#']) {
            self.problem(
                "server.base_path",
                format!("`{value}` is not a path like /webhooks"),
            );
            return None;
        }
        Some(trimmed.to_owned())
    }

    fn limits(&mut self, limits: Limits) -> Limits {
        for (key, message) in limits.problems() {
            self.problem(key, message);
        }
        limits
    }
}

/// `server:` once its address, path and budget are known to be valid.
fn server(
    raw: &RawServer,
    listen: SocketAddr,
    base_path: String,
    max_buffered_bytes: u64,
) -> Server {
    Server {
        listen,
        base_path,
        max_body_bytes: raw.max_body_bytes,
        request_timeout: raw.request_timeout,
        shutdown_grace: raw.shutdown_grace,
        access_log: raw.access_log,
        header_timeout: raw.header_timeout,
        body_timeout: raw.body_timeout,
        idle_timeout: raw.idle_timeout,
        max_connections: raw.max_connections,
        max_buffered_bytes,
        tls: None,
    }
}
