//! `state.url`, `state.cluster` and `state.ca` with `store: redis` (GATEWAY.md 11): the
//! URLs parse, a list of nodes is a cluster's, and a private CA's file is read now, so
//! `pollgate check` names a missing or broken one.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::Validator;
use crate::config::raw::{RawState, RawUrls};
use crate::config::{RedisCa, RedisServer};

impl Validator<'_> {
    /// The Redis to use; `None` (with the problems recorded) when it cannot be.
    pub(super) fn redis_server(
        &mut self,
        url: Option<RawUrls>,
        cluster: bool,
        ca: Option<&str>,
    ) -> Option<RedisServer> {
        let urls = match url {
            None => {
                self.problem("state.url", "`store: redis` needs `url: redis://host:6379`");
                return None;
            }
            Some(RawUrls::One(url)) => vec![("state.url".to_owned(), url)],
            Some(RawUrls::Many(_)) if !cluster => {
                self.problem(
                    "state.url",
                    "a list of URLs is the nodes of a Redis Cluster: add `cluster: true`, or give one URL",
                );
                return None;
            }
            Some(RawUrls::Many(urls)) if urls.is_empty() => {
                self.problem("state.url", "`cluster: true` needs at least one node URL");
                return None;
            }
            Some(RawUrls::Many(urls)) => urls
                .into_iter()
                .enumerate()
                .map(|(i, url)| (format!("state.url[{i}]"), url))
                .collect(),
        };
        let mut ok = true;
        for (key, url) in &urls {
            ok &= self.redis_url(key, url);
        }
        let tls = urls
            .iter()
            .filter(|(_, u)| u.starts_with("rediss://"))
            .count();
        if ok && tls != 0 && tls != urls.len() {
            self.problem(
                "state.url",
                "the cluster's nodes mix redis:// and rediss://; use one for all",
            );
            ok = false;
        }
        let ca = match ca {
            None => None,
            Some(_) if ok && tls == 0 => {
                self.problem(
                    "state.ca",
                    "trusts a CA for rediss:// URLs, and state.url is redis:// (no TLS)",
                );
                return None;
            }
            Some(file) => Some(self.redis_ca(file)?),
        };
        ok.then(|| RedisServer {
            urls: urls.into_iter().map(|(_, url)| url).collect(),
            cluster,
            ca,
        })
    }

    /// Whether `url` is a Redis URL the client can use; records why not.
    fn redis_url(&mut self, key: &str, url: &str) -> bool {
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            self.problem(key, format!("`{url}` is not a redis:// or rediss:// URL"));
            return false;
        }
        match redis::IntoConnectionInfo::into_connection_info(url) {
            Ok(_) => true,
            Err(e) => {
                self.problem(key, format!("`{url}` is not a usable Redis URL ({e})"));
                false
            }
        }
    }

    /// `state.ca`, relative to the config file's folder: read and checked to hold at least
    /// one PEM certificate.
    fn redis_ca(&mut self, file: &str) -> Option<RedisCa> {
        let path = self.dir.join(file);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.problem("state.ca", format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .count();
        if certificates == 0 {
            self.problem(
                "state.ca",
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            return None;
        }
        Some(RedisCa { path, pem })
    }

    /// `cluster` and `ca` mean nothing without `store: redis`; saying so beats ignoring them.
    pub(super) fn redis_only(&mut self, raw: &RawState) {
        if raw.cluster {
            self.problem("state.cluster", "needs `store: redis`");
        }
        if raw.ca.is_some() {
            self.problem("state.ca", "needs `store: redis` with a rediss:// URL");
        }
    }
}
