//! From YAML text to a validated [`Config`], collecting every problem with its file and key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

use super::env::substitute;
use super::raw::{RawConfig, RawEvent, RawServer, RawSize, RawState, RawUpstream, StoreKind};
use super::report::{yaml_problem, Report};
use super::tree::{self, show};
use super::units::parse_size;
use super::{
    Admin, Answer, Config, Event, KeyPart, Limits, Polling, Problem, Problems, RuleCheck, Server,
    State, Store, Subscription, Upstream, DEMO_SECRET_KEY,
};
use crate::signature::Secret;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn load(
    path: &Path,
    env: Env<'_>,
    rules: Option<RuleCheck<'_>>,
) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::in_file(path, format!("cannot read config file: {e}")))?;
    from_text(path, &text, env, rules)
}

/// YAML, then `${VAR}`, then types, then values and references: each phase reports every
/// problem it finds, and a later phase still runs where an earlier one left something to
/// check. Rules are checked with `rules` only when the config has problems (otherwise
/// [`crate::runtime::Runtime::build`] compiles them), so one run shows everything.
pub(super) fn from_text(
    path: &Path,
    text: &str,
    env: Env<'_>,
    rules: Option<RuleCheck<'_>>,
) -> Result<Config, Problems> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| yaml_problem(path, &e))?;
    if doc.is_null() {
        doc = Value::Mapping(serde_yaml::Mapping::new());
    }
    if !doc.is_mapping() {
        return Err(Problem::in_file(
            path,
            "the config must be a mapping of sections like `server:` and `subscriptions:`",
        )
        .into());
    }
    let mut report = Report::new(path, text);
    let substituted = substitute(&mut doc, env);
    let mut hidden = HashSet::new();
    for (at, error) in substituted.failed {
        report.add_at_key(&at, error.to_string());
        hidden.insert(at);
    }
    let typed = tree::typed::<RawConfig>(&doc, hidden);
    report.add_found(typed.found);
    let Some(raw) = typed.value else {
        return Err(report.finish(&substituted.replaced));
    };
    let mut validator = Validator {
        file: path,
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        hidden: typed.hidden.iter().map(|p| show(p)).collect(),
        problems: Vec::new(),
        rules: Vec::new(),
    };
    let config = validator.validate(raw);
    for problem in validator.problems {
        report.add(problem);
    }
    match config {
        Some(config) if report.is_empty() => Ok(config),
        _ => {
            if let Some(check) = rules {
                let known = upstream_names(&doc);
                let known = |name: &str| known.iter().any(|k| k == name);
                for (key, rule, source) in &validator.rules {
                    report.add_rule_problems(key, check(rule, source, &known));
                }
            }
            Err(report.finish(&substituted.replaced))
        }
    }
}

/// The names under `upstreams:` as written, also those whose entry has a problem (a rule
/// naming one is not wrong).
fn upstream_names(doc: &Value) -> Vec<String> {
    doc.get("upstreams")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(tree::key_text).collect())
        .unwrap_or_default()
}

struct Validator<'a> {
    file: &'a Path,
    dir: PathBuf,
    /// Keys whose values had a problem while typing (shown as `upstreams.x.timeout`): they
    /// hold defaults or are gone, so what follows from that is not reported again.
    hidden: Vec<String>,
    problems: Vec<Problem>,
    /// Every rule file read: the key naming it, its path and its source.
    rules: Vec<(String, PathBuf, Arc<str>)>,
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

    fn secret(
        &mut self,
        key: &str,
        text: &str,
        encoding: crate::signature::Encoding,
    ) -> Option<Secret> {
        match Secret::decode(text, encoding) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    /// The config, when `raw` has no problem of its own (they are in `self.problems`).
    fn validate(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.address("server.listen", &raw.server.listen);
        let admin = self.address("admin.listen", &raw.admin.listen);
        let base_path = self.base_path(&raw.server.base_path);
        let max_buffered_bytes = self.server_limits(&raw.server);
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
        if raw.subscriptions.is_empty() && !self.lost_inside("subscriptions") {
            self.problem(
                "subscriptions",
                "no subscription is configured; no till could call",
            );
        }
        let upstreams = self.upstreams(raw.upstreams);
        let events = self.events(raw.events, &upstreams);
        let state = self.state(raw.state);
        let limits = self.limits(raw.limits);
        if !self.problems.is_empty() {
            return None;
        }
        let (Some(listen), Some(admin), Some(base_path), Some(state), Some(max_buffered_bytes)) =
            (listen, admin, base_path, state, max_buffered_bytes)
        else {
            // A problem was recorded here, or while typing (and not repeated here).
            return None;
        };
        Some(Config {
            path: self.file.to_path_buf(),
            dir: self.dir.clone(),
            server: Server {
                listen,
                base_path,
                max_body_bytes: raw.server.max_body_bytes,
                request_timeout: raw.server.request_timeout,
                shutdown_grace: raw.server.shutdown_grace,
                access_log: raw.server.access_log,
                header_timeout: raw.server.header_timeout,
                body_timeout: raw.server.body_timeout,
                idle_timeout: raw.server.idle_timeout,
                max_connections: raw.server.max_connections,
                max_buffered_bytes,
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
            if !upstreams.contains_key(up) && !self.is_hidden(&format!("upstreams.{up}")) {
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
                let path = self.dir.join(rule);
                match std::fs::read_to_string(&path) {
                    Ok(source) => {
                        let source: Arc<str> = source.into();
                        self.rules
                            .push((format!("{key}.rule"), path.clone(), source.clone()));
                        Answer::Rule { path, source }
                    }
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
                if !self.lost_inside(key) {
                    self.problem(key, "needs `rule`, `respond` or `forward`");
                }
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
                if url.starts_with("rediss://") {
                    self.problem("state.url", "rediss:// (TLS) is not supported; reach Redis over a private network or a TLS tunnel with redis://");
                    return None;
                }
                if !url.starts_with("redis://") {
                    self.problem("state.url", format!("`{url}` is not a redis:// URL"));
                    return None;
                }
                Store::Redis {
                    url,
                    prefix: raw.prefix,
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

    fn limits(&mut self, limits: Limits) -> Limits {
        for (key, message) in limits.problems() {
            self.problem(key, message);
        }
        limits
    }
}
