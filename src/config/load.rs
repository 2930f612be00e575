//! From YAML text to a validated [`Config`], collecting every problem with its file and key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawConfig, RawEvent, RawLimits, RawState, RawUpstream, StoreKind};
use super::{
    expand, Admin, Answer, Config, Event, Limits, Polling, Problem, Problems, Server, State, Store,
    Subscription, Upstream, DEMO_SECRET_KEY,
};
use crate::conversation::KeyPart;
use crate::signature::Secret;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn load(path: &Path, env: Env<'_>) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::in_file(path, format!("cannot read config file: {e}")))?;
    from_text(path, &text, env)
}

pub(super) fn from_text(path: &Path, text: &str, env: Env<'_>) -> Result<Config, Problems> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| yaml_problem(path, &e))?;
    Validator {
        file: path,
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        env,
        problems: Vec::new(),
    }
    .validate(raw)
}

fn yaml_problem(path: &Path, error: &serde_yaml::Error) -> Problem {
    let message = error.to_string();
    // serde_yaml appends " at line L column C"; move the position to the front.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head)
        .to_owned();
    match error.location() {
        Some(at) => Problem::at_position(path, at.line(), at.column(), message),
        None => Problem::in_file(path, message),
    }
}

struct Validator<'a> {
    file: &'a Path,
    dir: PathBuf,
    env: Env<'a>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::at_key(self.file, key, message));
    }

    /// Expands `${VAR}` in a string value; a problem (and `None`) when it cannot.
    fn expand(&mut self, key: &str, value: &str) -> Option<String> {
        match expand(value, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    fn address(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        let value = self.expand(key, value)?;
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

    fn secret(
        &mut self,
        key: &str,
        text: &str,
        encoding: crate::signature::Encoding,
    ) -> Option<Secret> {
        let text = self.expand(key, text)?;
        match Secret::decode(&text, encoding) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    fn validate(mut self, raw: RawConfig) -> Result<Config, Problems> {
        let listen = self.address("server.listen", &raw.server.listen);
        let admin = self.address("admin.listen", &raw.admin.listen);
        let base_path = self.base_path(&raw.server.base_path);
        if raw.server.max_body_bytes == 0 {
            self.problem("server.max_body_bytes", "must be at least 1");
        }
        let mut subscriptions = HashMap::new();
        for (id, sub) in &raw.subscriptions {
            let key = format!("subscriptions.{id}.secret");
            if let Some(secret) = self.secret(&key, &sub.secret, sub.encoding) {
                let is_demo = secret.has_key(DEMO_SECRET_KEY);
                let id = id.clone();
                subscriptions.insert(
                    id.clone(),
                    Arc::new(Subscription {
                        id,
                        secret,
                        is_demo,
                    }),
                );
            }
        }
        if raw.subscriptions.is_empty() {
            self.problem(
                "subscriptions",
                "no subscription is configured; no till could call",
            );
        }
        let upstreams = self.upstreams(raw.upstreams);
        let events = self.events(raw.events, &upstreams);
        let state = self.state(raw.state);
        let limits = self.limits(&raw.limits);
        if !self.problems.is_empty() {
            return Err(Problems(self.problems));
        }
        let (Some(listen), Some(admin), Some(base_path), Some(state)) =
            (listen, admin, base_path, state)
        else {
            unreachable!("every None above recorded a problem")
        };
        Ok(Config {
            path: self.file.to_path_buf(),
            dir: self.dir,
            server: Server {
                listen,
                base_path,
                max_body_bytes: raw.server.max_body_bytes,
                request_timeout: raw.server.request_timeout,
                shutdown_grace: raw.server.shutdown_grace,
                access_log: raw.server.access_log,
            },
            admin: Admin { listen: admin },
            subscriptions,
            events,
            upstreams,
            state,
            limits,
            watch: raw.watch.unwrap_or(true),
        })
    }

    fn base_path(&mut self, value: &str) -> Option<String> {
        let value = self.expand("server.base_path", value)?;
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

    fn upstreams(&mut self, raw: BTreeMap<String, RawUpstream>) -> BTreeMap<String, Upstream> {
        let mut out = BTreeMap::new();
        for (name, up) in raw {
            let key = format!("upstreams.{name}");
            let url = self.url(&format!("{key}.url"), &up.url);
            let secret = match &up.secret {
                Some(text) => self.secret(&format!("{key}.secret"), text, up.encoding),
                None => None,
            };
            if up.max_connections == 0 {
                self.problem(format!("{key}.max_connections"), "must be at least 1");
            }
            if up.timeout.is_zero() {
                self.problem(format!("{key}.timeout"), "must be more than 0");
            }
            if let Some(url) = url {
                out.insert(
                    name.clone(),
                    Upstream {
                        name,
                        url,
                        timeout: up.timeout,
                        retries: up.retries.min(10),
                        secret,
                        max_connections: up.max_connections.max(1),
                        max_reply_bytes: up.max_reply_bytes,
                    },
                );
            }
        }
        out
    }

    fn url(&mut self, key: &str, value: &str) -> Option<reqwest::Url> {
        let value = self.expand(key, value)?;
        match reqwest::Url::parse(value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                let mut url = url;
                let path = url.path().trim_end_matches('/').to_owned();
                url.set_path(&path);
                Some(url)
            }
            Ok(_) => {
                self.problem(key, format!("`{value}` is not an http:// or https:// URL"));
                None
            }
            Err(e) => {
                self.problem(key, format!("`{value}` is not a URL ({e})"));
                None
            }
        }
    }

    fn events(
        &mut self,
        raw: BTreeMap<String, RawEvent>,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> BTreeMap<String, Event> {
        let mut out = BTreeMap::new();
        for (name, ev) in raw {
            let key = format!("events.{name}");
            if let Some(event) = self.event(&key, name.clone(), ev, upstreams) {
                out.insert(name, event);
            }
        }
        out
    }

    fn event(
        &mut self,
        key: &str,
        name: String,
        ev: RawEvent,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> Option<Event> {
        if let Some(up) = &ev.forward {
            if !upstreams.contains_key(up) {
                self.problem(
                    format!("{key}.forward"),
                    format!("unknown upstream `{up}` (not under `upstreams:`)"),
                );
            }
        }
        let answer = match (ev.rule, ev.respond, &ev.forward) {
            (Some(_), Some(_), _) => {
                self.problem(key, "has both `rule` and `respond`; choose one");
                return None;
            }
            (Some(rule), None, _) => {
                let rule = self.expand(&format!("{key}.rule"), &rule)?;
                let path = self.dir.join(rule);
                match std::fs::read_to_string(&path) {
                    Ok(source) => Answer::Rule {
                        path,
                        source: source.into(),
                    },
                    Err(e) => {
                        self.problem(
                            format!("{key}.rule"),
                            format!("cannot read rule file {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, Some(body), _) => {
                if !body.is_object() {
                    self.problem(format!("{key}.respond"), "must be a map (the answer body)");
                    return None;
                }
                Answer::Respond(body)
            }
            (None, None, Some(_)) => Answer::Reply,
            (None, None, None) => {
                self.problem(key, "needs `rule`, `respond` or `forward`");
                return None;
            }
        };
        let polling = ev.polling.map(|p| Polling {
            timeout: p.timeout,
            timeout_message: p.timeout_message,
            pending_message: p.pending_message,
        });
        Some(Event {
            name,
            answer,
            forward: ev.forward,
            hold: ev.hold,
            polling,
            unavailable_message: ev
                .unavailable_message
                .unwrap_or_else(|| "The back office is unavailable; please try again".into()),
        })
    }

    fn state(&mut self, raw: RawState) -> Option<State> {
        let key = match raw.key {
            None => KeyPart::ALL.to_vec(),
            Some(names) => {
                let mut parts = Vec::new();
                for name in names {
                    match KeyPart::parse(&name) {
                        Some(part) => parts.push(part),
                        None => self.problem(
                            "state.key",
                            format!("unknown key part `{name}` (known: {})", KeyPart::names()),
                        ),
                    }
                }
                parts
            }
        };
        if raw.ttl.is_zero() {
            self.problem("state.ttl", "must be more than 0");
        }
        if raw.max_conversations == 0 {
            self.problem("state.max_conversations", "must be at least 1");
        }
        let store = match raw.store {
            StoreKind::Memory => Store::Memory {
                max_conversations: raw.max_conversations,
            },
            StoreKind::Redis => {
                let Some(url) = raw.url else {
                    self.problem("state.url", "`store: redis` needs `url: redis://host:6379`");
                    return None;
                };
                let url = self.expand("state.url", &url)?;
                if url.starts_with("rediss://") {
                    self.problem("state.url", "rediss:// (TLS) is not supported; reach Redis over a private network or a TLS tunnel with redis://");
                    return None;
                }
                if !url.starts_with("redis://") {
                    self.problem("state.url", format!("`{url}` is not a redis:// URL"));
                    return None;
                }
                let prefix = self.expand("state.prefix", &raw.prefix)?;
                Store::Redis {
                    url,
                    prefix,
                    timeout: raw.timeout,
                }
            }
        };
        Some(State {
            store,
            ttl: raw.ttl,
            key,
        })
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        if raw.timeout.is_zero() {
            self.problem("limits.timeout", "must be more than 0");
        }
        limits(raw)
    }
}

pub(super) fn limits(raw: &RawLimits) -> Limits {
    Limits {
        max_operations: raw.max_operations,
        max_call_levels: raw.max_call_levels,
        max_expr_depth: raw.max_expr_depth,
        max_string_size: raw.max_string_size,
        max_array_size: raw.max_array_size,
        max_map_size: raw.max_map_size,
        max_answer_bytes: raw.max_answer_bytes,
        timeout: raw.timeout,
    }
}
