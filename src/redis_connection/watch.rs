//! The task that keeps a [`super::RedisConnection`] reaching Redis: a `PING` now and then
//! while Redis answers, and while it does not, again after a pause that doubles up to
//! [`MAX_PAUSE`]. Each ping that finds the connection broken makes it reconnect, so Redis
//! coming back is noticed within a pause even when no call arrives. A change is logged once
//! (lost, with the reason; back), not once per ping.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::RedisError;

use super::{Link, Shared};

/// The first pause after a failure; doubled on each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How often a Redis that answers is looked at.
const HEALTHY_PAUSE: Duration = Duration::from_secs(1);
/// A cluster connection that failed this many pings in a row is made afresh from the
/// configured nodes (the cluster may have changed beyond what it knows).
const CLUSTER_REBUILD_AFTER: u32 = 3;

/// Runs until the connection's last handle is gone.
pub(super) async fn watch(shared: Weak<Shared>) {
    let shared_weak = shared.clone();
    let mut pause = FIRST_PAUSE;
    let mut failures = 0u32;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match check(&shared, failures).await {
            Ok(()) => {
                failures = 0;
                pause = FIRST_PAUSE;
                shared.recovered();
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                shared.failed(why);
            }
        }
        // Once: the commands waiting for the first look need to hear of it, no one after.
        shared
            .looked
            .send_if_modified(|looked| !std::mem::replace(looked, true));
        drop(shared);
        let wait = if failures == 0 { HEALTHY_PAUSE } else { pause };
        pause = (pause * 2).min(MAX_PAUSE);
        pause_for(&shared_weak, wait).await;
    }
}

/// One look: connects if needed, then pings; the reason when Redis did not answer.
async fn check(shared: &Arc<Shared>, failures: u32) -> Result<(), String> {
    let timeout = shared.timeout;
    let bounded = |e: Result<Result<(), RedisError>, tokio::time::error::Elapsed>| match e {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RedisError::from((
            redis::ErrorKind::Io,
            "no answer",
            format!("within {timeout:?}"),
        ))),
    };
    match &shared.link {
        Link::Single {
            manager,
            client,
            config,
        } => {
            let mut conn = ConnectionManager::clone(&manager.load());
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<()>(&mut conn);
            let result = bounded(tokio::time::timeout(timeout, ping).await);
            if let Err(e) = &result {
                // The manager retries broken connections by itself, but stays on a failure
                // that is not one (a refused AUTH, a wrong database): start afresh.
                if !e.is_io_error() && !e.is_timeout() {
                    if let Ok(fresh) =
                        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    {
                        manager.store(Arc::new(fresh));
                    }
                }
            }
            result.map_err(|e| e.to_string())
        }
        Link::Cluster {
            connection,
            client,
            direct,
        } => {
            let current = connection.load_full();
            let mut conn = match current {
                Some(conn) if failures < CLUSTER_REBUILD_AFTER => (*conn).clone(),
                _ => {
                    let made = tokio::time::timeout(timeout, client.get_async_connection())
                        .await
                        .map_err(|_| format!("no answer within {timeout:?}"))?
                        .map_err(|e| no_node(&e))?;
                    connection.store(Some(Arc::new(made.clone())));
                    made
                }
            };
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<()>(&mut conn);
            bounded(tokio::time::timeout(timeout, ping).await).map_err(|e| e.to_string())?;
            // The slot table of the short way: a failure here is no trouble of the
            // cluster's (the commands go the long way meanwhile), only a table not learnt.
            let mut ask = redis::cmd("CLUSTER");
            ask.arg("SLOTS");
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
            let slots = tokio::time::timeout(timeout, conn.route_command(ask, routing)).await;
            match slots {
                Ok(Ok(answer)) => {
                    if let Err(e) = direct.refresh(&answer) {
                        tracing::debug!("cluster slot table: {e}");
                        direct.clear();
                    }
                }
                _ => direct.clear(),
            }
            Ok(())
        }
    }
}

/// The pause before the next look: `wait`, or shorter (but at least [`FIRST_PAUSE`]) when
/// a cluster command missed the short way and its slot table is worth asking again.
async fn pause_for(shared: &Weak<Shared>, wait: Duration) {
    let missed = async {
        let Some(shared) = shared.upgrade() else {
            return std::future::pending().await;
        };
        let Link::Cluster { direct, .. } = &shared.link else {
            return std::future::pending().await;
        };
        if !direct.is_stale() {
            direct.miss.notified().await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = missed => tokio::time::sleep(FIRST_PAUSE.min(wait)).await,
    }
}

/// The cluster client's "Failed to create initial connections - Io: {why}" as one sentence:
/// it keeps the reason of the last node it tried (a refused connection, an untrusted
/// certificate), which is the one worth telling.
fn no_node(e: &RedisError) -> String {
    match e.detail() {
        Some(why)
            if e.to_string()
                .starts_with("Failed to create initial connections") =>
        {
            format!("cannot connect to any node: {why}")
        }
        _ => e.to_string(),
    }
}

impl Shared {
    fn recovered(&self) {
        let Ok(mut trouble) = self.trouble.lock() else {
            return;
        };
        if trouble.take().is_some() {
            tracing::info!("{} reaches Redis at {}", self.purpose, self.shown);
        }
    }

    fn failed(&self, why: String) {
        let Ok(mut trouble) = self.trouble.lock() else {
            return;
        };
        if trouble.as_deref() != Some(why.as_str()) {
            tracing::warn!(
                "{} cannot reach Redis at {}: {why}; trying again, backing off up to {MAX_PAUSE:?}",
                self.purpose,
                self.shown
            );
        }
        *trouble = Some(why);
    }
}
