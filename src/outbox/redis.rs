//! The Redis store's outbox: every replica queues into and delivers from the same Redis.
//!
//! # Key layout
//!
//! Every key of one upstream's queue shares the hash tag `{prefix:outbox:U}`, so a script
//! touches one slot, and on a Redis Cluster the upstreams' queues spread over the primaries:
//!
//! | key                          | what                                               |
//! |------------------------------|----------------------------------------------------|
//! | `{prefix:outbox:U}:d:{id}`   | hash: `ev`, `k`, `sub`, `b` (body), `q` (queued ms), `n` (attempts), `nx` (next attempt ms), `e` (last error), `st` (`p`/`d`) |
//! | `{prefix:outbox:U}:due`      | sorted set: pending ids by due time (a claim moves the score to the claim's end) |
//! | `{prefix:outbox:U}:age`      | sorted set: pending ids by queued time             |
//! | `{prefix:outbox:U}:dead`     | sorted set: dead ids by queued time                |
//!
//! A claim ([`CLAIM`]) takes the due ids and moves their score to `now + lease` in one
//! script: no other replica sees them until then. A replica that dies mid-delivery never
//! settles its claims, so they come due again when the lease ends and another replica
//! sends them (same `Idempotency-Key`). Deliveries have no TTL: they stay until delivered
//! or deleted (dead ones too), which is the point.
//!
//! # Acknowledgements in batches
//!
//! [`Outbox::delivered`] is the one call per delivery on a busy queue (claims come in
//! batches already). Its calls go to one task that takes every acknowledgement waiting,
//! removes them with one [`DELIVERED_MANY`] script per upstream, and answers each once
//! Redis has run it: while one script is on its way the next acknowledgements gather, so a
//! fast drain costs a script per many deliveries, not one each, and a lone one waits for
//! nobody.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::redis::{FromRedisValue, Script, Value};
use bytes::Bytes;

use super::{Counts, Delivery, DeliveryId, Failure, NewDelivery, Outbox, OutboxError, Status};
use crate::conversation::ConversationKey;
use crate::redis_connection::RedisConnection;

mod scripts;
use scripts::{
    CLAIM, COUNTS, DELETE, DELIVERED_MANY, ENQUEUE, FAILED, LIST, RELEASE, RETRY, RETRY_DEAD,
};
use tokio::sync::{mpsc, oneshot};

/// At most this many acknowledgements go into one script.
const MAX_ACKS: usize = 512;

/// The Redis outbox; clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConnection,
    prefix: String,
    scripts: [Script; 9],
    acks: mpsc::UnboundedSender<Ack>,
    /// Acknowledging scripts run so far.
    #[cfg_attr(not(test), allow(dead_code))]
    ack_scripts: Arc<AtomicU64>,
}

/// One delivered delivery waiting for [`Acker`] to remove it.
struct Ack {
    upstream: String,
    id: DeliveryId,
    done: oneshot::Sender<Result<(), OutboxError>>,
}

/// The task that removes delivered deliveries in batches; ends with the outbox's last
/// handle.
struct Acker {
    conn: RedisConnection,
    prefix: String,
    script: Script,
    scripts_run: Arc<AtomicU64>,
}

impl Acker {
    async fn run(self, mut acks: mpsc::UnboundedReceiver<Ack>) {
        while let Some(first) = acks.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_ACKS {
                match acks.try_recv() {
                    Ok(ack) => batch.push(ack),
                    Err(_) => break,
                }
            }
            let mut by_upstream: Vec<(String, Vec<Ack>)> = Vec::new();
            for ack in batch {
                match by_upstream.iter_mut().find(|(u, _)| *u == ack.upstream) {
                    Some((_, group)) => group.push(ack),
                    None => by_upstream.push((ack.upstream.clone(), vec![ack])),
                }
            }
            for (upstream, group) in by_upstream {
                let result = self.remove(&upstream, &group).await;
                for ack in group {
                    let _ = ack.done.send(result.clone());
                }
            }
        }
    }

    async fn remove(&self, upstream: &str, group: &[Ack]) -> Result<(), OutboxError> {
        let k = Keys {
            base: base(&self.prefix, upstream),
        };
        let mut invocation = self.script.prepare_invoke();
        invocation.key(k.due()).key(k.age()).key(k.dead());
        invocation.arg(k.record_prefix());
        for ack in group {
            invocation.arg(ack.id.to_hex());
        }
        let mut conn = self.conn.clone();
        self.scripts_run.fetch_add(1, Ordering::Relaxed);
        let _: i64 = bounded(&self.conn, invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }
}

/// The hash tag of one upstream's queue.
fn base(prefix: &str, upstream: &str) -> String {
    format!("{{{prefix}:outbox:{upstream}}}")
}

/// One command under `conn`'s timeout, its errors naming the URL.
async fn bounded<T>(
    conn: &RedisConnection,
    command: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, OutboxError> {
    let timeout = conn.timeout();
    match tokio::time::timeout(timeout, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_timeout() => Err(OutboxError::Timeout(timeout)),
        Ok(Err(e)) => Err(OutboxError::Unavailable(conn.explain(&e))),
        Err(_) => Err(OutboxError::Timeout(timeout)),
    }
}

/// The keys of one upstream's queue.
struct Keys {
    base: String,
}

impl Keys {
    fn due(&self) -> String {
        format!("{}:due", self.base)
    }
    fn age(&self) -> String {
        format!("{}:age", self.base)
    }
    fn dead(&self) -> String {
        format!("{}:dead", self.base)
    }
    /// The start of every record key; a script adds the id.
    fn record_prefix(&self) -> String {
        format!("{}:d:", self.base)
    }
    fn record(&self, id: DeliveryId) -> String {
        format!("{}:d:{id}", self.base)
    }
}

impl RedisOutbox {
    /// An outbox on `conn` (whose timeout bounds every command); keys start with
    /// `{prefix:outbox:`. Needs no Redis yet: scripts load on first use.
    pub(crate) fn new(conn: RedisConnection, prefix: &str) -> Self {
        let scripts = [
            ENQUEUE, CLAIM, FAILED, RELEASE, RETRY, RETRY_DEAD, DELETE, LIST, COUNTS,
        ]
        .map(Script::new);
        let acker = Acker {
            conn: conn.clone(),
            prefix: prefix.to_owned(),
            script: Script::new(DELIVERED_MANY),
            scripts_run: Arc::default(),
        };
        let (acks, waiting) = mpsc::unbounded_channel();
        let outbox = Self {
            inner: Arc::new(Inner {
                conn,
                prefix: prefix.to_owned(),
                scripts,
                acks,
                ack_scripts: acker.scripts_run.clone(),
            }),
        };
        tokio::spawn(acker.run(waiting));
        outbox
    }

    fn keys(&self, upstream: &str) -> Keys {
        Keys {
            base: base(&self.inner.prefix, upstream),
        }
    }

    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, OutboxError> {
        bounded(&self.inner.conn, command).await
    }

    /// Runs script number `which` with `keys` and `args`.
    async fn run<T: FromRedisValue>(
        &self,
        which: usize,
        keys: &[String],
        args: &[&[u8]],
    ) -> Result<T, OutboxError> {
        let mut invocation = self.inner.scripts[which].prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.inner.conn.clone();
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// The acknowledging scripts run so far (each removes a batch of delivered ones).
    #[cfg(test)]
    pub(crate) fn ack_scripts(&self) -> u64 {
        self.inner.ack_scripts.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn inner_conn(&self) -> RedisConnection {
        self.inner.conn.clone()
    }

    /// Every key of this prefix's outboxes, deleted (tests clean up after themselves).
    #[cfg(test)]
    pub(crate) async fn remove_upstream(&self, upstream: &str) -> Result<(), OutboxError> {
        let keys = self.keys(upstream);
        let pattern = format!("{}*", keys.base.replace('{', "\\{").replace('}', "\\}"));
        let mut conn = self.inner.conn.clone();
        let found: Vec<String> = self
            .bounded(::redis::cmd("KEYS").arg(pattern).query_async(&mut conn))
            .await?;
        for key in found {
            let _: i64 = self
                .bounded(::redis::cmd("DEL").arg(key).query_async(&mut conn))
                .await?;
        }
        Ok(())
    }
}

const I_ENQUEUE: usize = 0;
const I_CLAIM: usize = 1;
const I_FAILED: usize = 2;
const I_RELEASE: usize = 3;
const I_RETRY: usize = 4;
const I_RETRY_DEAD: usize = 5;
const I_DELETE: usize = 6;
const I_LIST: usize = 7;
const I_COUNTS: usize = 8;

fn num(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

impl Outbox for RedisOutbox {
    async fn enqueue(&self, d: NewDelivery) -> Result<bool, OutboxError> {
        let id = d.id();
        let k = self.keys(&d.upstream);
        let keys = [k.due(), k.age(), k.dead(), k.record(id)];
        let (idh, key, now) = (id.to_hex(), d.key.to_hex(), num(d.now_ms));
        let args: [&[u8]; 6] = [
            idh.as_bytes(),
            d.event.as_bytes(),
            key.as_bytes(),
            d.subscription.as_bytes(),
            &d.body,
            &now,
        ];
        let queued: i64 = self.run(I_ENQUEUE, &keys, &args).await?;
        Ok(queued == 1)
    }

    async fn claim(
        &self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let k = self.keys(upstream);
        let until = num(now_ms.saturating_add(lease_ms));
        let (now, limit) = (num(now_ms), num(limit as u64));
        let prefix = k.record_prefix();
        let args: [&[u8]; 4] = [&now, &until, &limit, prefix.as_bytes()];
        let found: Value = self.run(I_CLAIM, &[k.due()], &args).await?;
        records(upstream, found)
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<u64>, OutboxError> {
        let mut conn = self.inner.conn.clone();
        let first: Vec<(String, f64)> = self
            .bounded(
                ::redis::cmd("ZRANGE")
                    .arg(self.keys(upstream).due())
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(first.first().map(|(_, score)| *score as u64))
    }

    async fn delivered(&self, upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        let (done, answer) = oneshot::channel();
        let ack = Ack {
            upstream: upstream.to_owned(),
            id,
            done,
        };
        let stopped = || OutboxError::Unavailable("the acknowledging task stopped".into());
        self.inner.acks.send(ack).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn failed(
        &self,
        upstream: &str,
        id: DeliveryId,
        failure: Failure,
    ) -> Result<(), OutboxError> {
        let k = self.keys(upstream);
        let keys = [k.due(), k.age(), k.dead(), k.record(id)];
        let (mode, next, error) = match failure {
            Failure::Retry { next_ms, error } => ("r", next_ms, error),
            Failure::Dead { error } => ("d", 0, error),
        };
        let (idh, next) = (id.to_hex(), num(next));
        let args: [&[u8]; 4] = [idh.as_bytes(), &next, error.as_bytes(), mode.as_bytes()];
        let _: i64 = self.run(I_FAILED, &keys, &args).await?;
        Ok(())
    }

    async fn release(&self, upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        let k = self.keys(upstream);
        let now = num(now_ms());
        let idh = id.to_hex();
        let args: [&[u8]; 2] = [idh.as_bytes(), &now];
        let _: i64 = self.run(I_RELEASE, &[k.due(), k.record(id)], &args).await?;
        Ok(())
    }

    async fn get(&self, upstream: &str, id: DeliveryId) -> Result<Option<Delivery>, OutboxError> {
        let mut conn = self.inner.conn.clone();
        let fields: Vec<Vec<u8>> = self
            .bounded(
                ::redis::cmd("HGETALL")
                    .arg(self.keys(upstream).record(id))
                    .query_async(&mut conn),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode(upstream, id, &fields).map(Some)
    }

    async fn list(
        &self,
        upstream: &str,
        status: Status,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let k = self.keys(upstream);
        let set = match status {
            Status::Pending => k.due(),
            Status::Dead => k.dead(),
        };
        let (limit, prefix) = (num(limit as u64), k.record_prefix());
        let args: [&[u8]; 2] = [&limit, prefix.as_bytes()];
        let found: Value = self.run(I_LIST, &[set], &args).await?;
        records(upstream, found)
    }

    async fn retry(
        &self,
        upstream: &str,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<bool, OutboxError> {
        let k = self.keys(upstream);
        let keys = [k.due(), k.age(), k.dead(), k.record(id)];
        let (idh, now) = (id.to_hex(), num(now_ms));
        let args: [&[u8]; 2] = [idh.as_bytes(), &now];
        let found: i64 = self.run(I_RETRY, &keys, &args).await?;
        Ok(found == 1)
    }

    async fn retry_dead(&self, upstream: &str, now_ms: u64) -> Result<u64, OutboxError> {
        let k = self.keys(upstream);
        let keys = [k.due(), k.age(), k.dead()];
        let (now, prefix) = (num(now_ms), k.record_prefix());
        let args: [&[u8]; 2] = [&now, prefix.as_bytes()];
        let n: u64 = self.run(I_RETRY_DEAD, &keys, &args).await?;
        Ok(n)
    }

    async fn delete(&self, upstream: &str, id: DeliveryId) -> Result<bool, OutboxError> {
        let k = self.keys(upstream);
        let keys = [k.due(), k.age(), k.dead(), k.record(id)];
        let idh = id.to_hex();
        let found: i64 = self.run(I_DELETE, &keys, &[idh.as_bytes()]).await?;
        Ok(found == 1)
    }

    async fn counts(&self, upstream: &str) -> Result<Counts, OutboxError> {
        let k = self.keys(upstream);
        let (pending, dead, oldest): (u64, u64, Option<u64>) = self
            .run(I_COUNTS, &[k.due(), k.age(), k.dead()], &[])
            .await?;
        Ok(Counts {
            pending,
            dead,
            oldest_queued_ms: oldest,
        })
    }

    async fn ping(&self) -> Result<(), OutboxError> {
        let mut conn = self.inner.conn.clone();
        let _: String = self
            .bounded(::redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

/// Wall-clock ms (releases make a claim due "now" by the replicas' shared notion of it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, crate::config::millis)
}

/// A script's `[id, [field, value, ...], id, ...]` as deliveries.
fn records(upstream: &str, value: Value) -> Result<Vec<Delivery>, OutboxError> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(id), Some(fields)) = (items.next(), items.next()) {
        let id: String = FromRedisValue::from_redis_value(id)
            .map_err(|e| OutboxError::Corrupt(e.to_string()))?;
        let fields: Vec<Vec<u8>> = FromRedisValue::from_redis_value(fields)
            .map_err(|e| OutboxError::Corrupt(e.to_string()))?;
        let Some(id) = DeliveryId::from_hex(&id) else {
            return Err(OutboxError::Corrupt(format!("bad delivery id `{id}`")));
        };
        if !fields.is_empty() {
            out.push(decode(upstream, id, &fields)?);
        }
    }
    Ok(out)
}

/// A record hash's fields (flat: name, value, ...) as a delivery.
fn decode(upstream: &str, id: DeliveryId, fields: &[Vec<u8>]) -> Result<Delivery, OutboxError> {
    let corrupt = |what: &str| OutboxError::Corrupt(format!("delivery {id}: {what}"));
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv[0] == name.as_bytes())
            .and_then(|kv| kv.get(1))
    };
    let text = |name: &str| -> Result<String, OutboxError> {
        let raw = field(name).ok_or_else(|| corrupt(&format!("no `{name}`")))?;
        String::from_utf8(raw.clone()).map_err(|_| corrupt(&format!("`{name}` is not text")))
    };
    let number = |name: &str| -> Result<u64, OutboxError> {
        text(name)?
            .parse()
            .map_err(|_| corrupt(&format!("`{name}` is not a number")))
    };
    let key = ConversationKey::from_hex(&text("k")?).ok_or_else(|| corrupt("bad `k`"))?;
    Ok(Delivery {
        id,
        upstream: upstream.to_owned(),
        event: text("ev")?,
        key,
        subscription: text("sub")?,
        body: Bytes::from(field("b").cloned().unwrap_or_default()),
        status: if text("st")? == "d" {
            Status::Dead
        } else {
            Status::Pending
        },
        queued_ms: number("q")?,
        attempts: u32::try_from(number("n")?).unwrap_or(u32::MAX),
        next_ms: number("nx")?,
        last_error: field("e").map(|e| String::from_utf8_lossy(e).into_owned()),
    })
}
