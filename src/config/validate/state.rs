//! `state:`: the conversation store, its TTL and the parts of the conversation key.

use super::Validator;
use crate::config::raw::{RawState, StoreKind};
use crate::config::{KeyPart, State, Store};

impl Validator<'_> {
    pub(super) fn state(&mut self, mut raw: RawState) -> Option<State> {
        if raw.store == StoreKind::Memory {
            self.redis_only(&raw);
        }
        let key = self.key_parts(raw.key.take());
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
            StoreKind::Redis => Store::Redis {
                server: self.redis_server(raw.url, raw.cluster, raw.ca.as_deref())?,
                prefix: raw.prefix,
                timeout: raw.timeout,
            },
        };
        Some(State {
            store,
            ttl: raw.ttl,
            key,
        })
    }

    /// `state.key`: which parts of a call identify its conversation (all by default).
    fn key_parts(&mut self, names: Option<Vec<String>>) -> Vec<KeyPart> {
        match names {
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
        }
    }
}
