//! `upstreams:`: the back ends forwards go to, their URLs parsed and secrets decoded.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::raw::{RawDurable, RawUpstream};
use crate::config::{Durable, Upstream};

impl Validator<'_> {
    pub(super) fn upstreams(
        &mut self,
        raw: BTreeMap<String, RawUpstream>,
    ) -> BTreeMap<String, Upstream> {
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
            let durable = self.durable(&key, &up.durable);
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
                        durable,
                    },
                );
            }
        }
        out
    }

    /// `upstreams.X.durable`, every bound checked.
    fn durable(&mut self, key: &str, raw: &RawDurable) -> Durable {
        let at = |k: &str| format!("{key}.durable.{k}");
        for (k, value) in [
            ("max_age", raw.max_age),
            ("backoff.min", raw.backoff.min),
            ("lease", raw.lease),
        ] {
            if value.is_zero() {
                self.problem(at(k), "must be more than 0");
            }
        }
        if raw.backoff.max < raw.backoff.min {
            self.problem(
                at("backoff.max"),
                format!(
                    "{:?} is less than backoff.min ({:?})",
                    raw.backoff.max, raw.backoff.min
                ),
            );
        }
        Durable {
            max_age: raw.max_age,
            backoff_min: raw.backoff.min,
            backoff_max: raw.backoff.max.max(raw.backoff.min),
            lease: raw.lease,
        }
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
}
