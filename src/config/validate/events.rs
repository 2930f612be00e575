//! `events:`: how each event is answered, its rule file read, its forward checked against
//! `upstreams:`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Validator;
use crate::config::raw::RawEvent;
use crate::config::raw::RawPush;
use crate::config::{Answer, Delivery, Event, Polling, PushChannel, Upstream, PUSH_EVENT};

impl Validator<'_> {
    pub(super) fn events(
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
        mut ev: RawEvent,
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
        if ev.delivery == Delivery::Durable && ev.forward.is_none() {
            self.problem(
                format!("{key}.delivery"),
                "`durable` needs `forward:` (the upstream the deliveries go to)",
            );
        }
        let push = ev.push.take().map(|raw| self.push(key, &name, raw, &ev));
        if push.is_some() && ev.rule.is_none() && ev.respond.is_none() && ev.forward.is_none() {
            return Some(Event::push_channel(name, push));
        }
        let answer = self.answer(key, ev.rule, ev.respond, ev.forward.is_some())?;
        let mut polling = ev.polling.map(|p| Polling {
            timeout: p.timeout,
            timeout_message: p.timeout_message,
            pending_message: p.pending_message,
        });
        if push.is_some() {
            polling = Some(Polling::endless());
        }
        Some(Event {
            name,
            answer,
            forward: ev.forward,
            delivery: ev.delivery,
            hold: ev.hold,
            polling,
            push,
            unavailable_message: ev
                .unavailable_message
                .unwrap_or_else(|| "The back office is unavailable; please try again".into()),
        })
    }

    /// `push:` (GATEWAY.md 9), checked against what it cannot go with: a push channel's
    /// answer is the pushed message (or its rule's), its hold is its own, and it polls as
    /// long as the till runs.
    fn push(&mut self, key: &str, name: &str, raw: RawPush, ev: &RawEvent) -> PushChannel {
        if name != PUSH_EVENT {
            self.problem(
                format!("{key}.push"),
                format!("only {PUSH_EVENT} carries pushed messages (MPLUS.md 5)"),
            );
        }
        if raw.ttl.is_zero() {
            self.problem(format!("{key}.push.ttl"), "must be more than 0");
        }
        let clashes = [
            (
                "polling",
                ev.polling.is_some(),
                "a push channel polls as long as the till runs, with no polling.timeout",
            ),
            (
                "forward",
                ev.forward.is_some(),
                "a push channel answers with pushed messages, not a back end's reply",
            ),
            (
                "respond",
                ev.respond.is_some(),
                "a push channel answers with pushed messages; shape them with a rule",
            ),
            (
                "hold",
                ev.hold.is_some(),
                "a push channel's hold is push.hold",
            ),
        ];
        for (part, given, why) in clashes {
            if given {
                self.problem(format!("{key}.{part}"), format!("not with `push:`: {why}"));
            }
        }
        PushChannel {
            hold: raw.hold,
            ttl: raw.ttl,
        }
    }

    /// Where the event's answer comes from: its rule file (read here), its fixed answer or
    /// its forward's reply.
    fn answer(
        &mut self,
        key: &str,
        rule: Option<String>,
        respond: Option<serde_json::Value>,
        forward: bool,
    ) -> Option<Answer> {
        let answer = match (rule, respond, forward) {
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
            (None, None, true) => Answer::Reply,
            (None, None, false) => {
                if !self.lost_inside(key) {
                    self.problem(key, "needs `rule`, `respond` or `forward`");
                }
                return None;
            }
        };
        Some(answer)
    }
}
