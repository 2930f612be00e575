//! `upstreams:`: the back ends forwards go to, their URLs parsed and secrets decoded.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::raw::RawUpstream;
use crate::config::Upstream;

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
}
