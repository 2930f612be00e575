//! `events:`: how each event is answered, its rule file read, its forward checked against
//! `upstreams:`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Validator;
use crate::config::raw::RawEvent;
use crate::config::{Answer, Delivery, Event, Polling, Upstream};

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
        if ev.delivery == Delivery::Durable && ev.forward.is_none() {
            self.problem(
                format!("{key}.delivery"),
                "`durable` needs `forward:` (the upstream the deliveries go to)",
            );
        }
        let answer = self.answer(key, ev.rule, ev.respond, ev.forward.is_some())?;
        let polling = ev.polling.map(|p| Polling {
            timeout: p.timeout,
            timeout_message: p.timeout_message,
            pending_message: p.pending_message,
        });
        Some(Event {
            name,
            answer,
            forward: ev.forward,
            delivery: ev.delivery,
            hold: ev.hold,
            polling,
            unavailable_message: ev
                .unavailable_message
                .unwrap_or_else(|| "The back office is unavailable; please try again".into()),
        })
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
