//! Pretend upstreams: the test case's replies instead of the network, counting what was
//! sent to each.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::file::Pretend;
use crate::config::parse_duration;
use crate::conversation::Reply;
use crate::upstream::{Outgoing, SendFuture, UpstreamClient};

/// Upstream replies from the test case instead of the network.
pub(super) struct PretendUpstreams {
    replies: HashMap<String, (Pretend, Duration)>,
    sent: std::sync::Mutex<HashMap<String, AtomicU32>>,
}

impl PretendUpstreams {
    pub(super) fn new(replies: &BTreeMap<String, Pretend>) -> Result<Self, String> {
        let mut out = HashMap::new();
        for (name, pretend) in replies {
            let delay = pretend
                .delay
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or_default();
            out.insert(name.clone(), (pretend.clone(), delay));
        }
        Ok(Self {
            replies: out,
            sent: std::sync::Mutex::default(),
        })
    }

    pub(super) fn sent(&self, upstream: &str) -> u32 {
        let sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.get(upstream).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

impl UpstreamClient for PretendUpstreams {
    fn send(&self, outgoing: Outgoing) -> SendFuture<'_> {
        {
            let mut sent = self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sent.entry(outgoing.upstream.clone())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
        let reply = self.replies.get(&outgoing.upstream).cloned();
        Box::pin(async move {
            let Some((pretend, delay)) = reply else {
                let error = format!(
                    "the test case pretends no reply for upstream `{}`",
                    outgoing.upstream
                );
                return Reply::failed(error, 0);
            };
            tokio::time::sleep(delay).await;
            let elapsed_ms = crate::config::millis(delay);
            match pretend.error {
                Some(error) => Reply::failed(error, elapsed_ms),
                None => Reply::answered(pretend.status, pretend.body, elapsed_ms),
            }
        })
    }
}
