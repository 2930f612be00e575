//! The memory store's outbox: a redb database in `outbox.path` (one file,
//! `outbox.redb`), ACID with an fsync on every commit, so a queued delivery survives
//! `kill -9` and power loss once [`Outbox::enqueue`] returned.
//!
//! # Group commit
//!
//! Every change goes to one writer thread. It takes all the changes waiting at that
//! moment, applies them in one write transaction and commits it once (one fsync), then
//! answers each: a burst of concurrent calls costs one sync, not one each. Reads (claims,
//! listings, counts) use read transactions beside it and never wait for the writer.
//!
//! # Tables
//!
//! | table          | key                      | value                    |
//! |----------------|--------------------------|--------------------------|
//! | `deliveries`   | id (16 bytes)            | [`record::encode`]       |
//! | `due/{U}`      | (next attempt ms, id)    | () — pending, by due time |
//! | `age/{U}`      | (queued ms, id)          | () — pending, by age     |
//! | `dead/{U}`     | (queued ms, id)          | () — dead                |
//!
//! One set of index tables per upstream `U`, so counts are a table's length and the
//! oldest pending delivery its first entry.
//!
//! Claims are kept in memory only: this file has one process (redb locks it), and a
//! process that dies takes its claims with it, so after a restart every pending delivery
//! is due again (at least once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use redb::{ReadTransaction, WriteTransaction};
use tokio::sync::oneshot;

use super::record::{decode, encode};
use super::{Counts, Delivery, DeliveryId, Failure, NewDelivery, Outbox, OutboxError, Status};

const DELIVERIES: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("deliveries");

type Index<'a> = TableDefinition<'a, (u64, &'static [u8]), ()>;
type IndexTable = redb::ReadOnlyTable<(u64, &'static [u8]), ()>;
type RecordTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// At most this many changes go into one transaction.
const MAX_BATCH: usize = 4096;

/// One change, applied inside the writer's transaction; its number is the answer
/// (a bool as 0 or 1, or a count).
type Change = Box<dyn FnOnce(&WriteTransaction) -> Result<u64, OutboxError> + Send>;

struct Job {
    change: Change,
    done: oneshot::Sender<Result<u64, OutboxError>>,
}

/// A cheap-clone handle on the embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// Commits made (each one fsync): group commit keeps this far below the changes.
    commits: Arc<AtomicU64>,
    writer: Mutex<mpsc::Sender<Job>>,
    /// Claimed deliveries and when their claim ends. A std lock: held for map updates
    /// only, never across an await.
    claims: Mutex<HashMap<DeliveryId, u64>>,
    path: PathBuf,
}

fn storage(e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Unavailable(e.into().to_string())
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox in the folder `path`, creating the folder if needed.
    /// A database left by a crash is recovered here.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(path).map_err(|e| {
            OutboxError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let file = path.join("outbox.redb");
        let db = Database::create(&file).map_err(|e| {
            OutboxError::Unavailable(format!("cannot open {}: {e}", file.display()))
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || write_loop(&writer_db, &rx, &counted))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                writer: Mutex::new(tx),
                claims: Mutex::default(),
                path: file,
            }),
        })
    }

    /// Commits made so far (each one fsync).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.path
    }

    /// Applies `change` in the writer's next transaction; answers once it is synced.
    async fn write(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<u64, OutboxError> + Send + 'static,
    ) -> Result<u64, OutboxError> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            change: Box::new(change),
            done,
        };
        let sent = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
            return Err(OutboxError::Unavailable("the outbox writer stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(OutboxError::Unavailable("the outbox writer stopped".into())))
    }

    fn read(&self) -> Result<ReadTransaction, OutboxError> {
        self.inner.db.begin_read().map_err(storage)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, u64>> {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unclaim(&self, id: DeliveryId) {
        self.claims().remove(&id);
    }
}

/// The writer thread: one transaction and one commit for everything waiting.
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>, commits: &AtomicU64) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let error = storage(e);
                for job in batch {
                    let _ = job.done.send(Err(error.clone()));
                }
                continue;
            }
        };
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            answers.push(((job.change)(&txn), job.done));
        }
        // A change that failed inside the transaction fails the whole batch: its half-made
        // writes must not be committed. The others' callers see an error too and retry.
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err().cloned());
        let outcome = match failed {
            Some(error) => {
                let _ = txn.abort();
                Err(error)
            }
            None => {
                commits.fetch_add(1, Ordering::Relaxed);
                txn.commit().map_err(storage)
            }
        };
        for (answer, done) in answers {
            let _ = done.send(match &outcome {
                Ok(()) => answer,
                Err(e) => Err(e.clone()),
            });
        }
    }
}

fn index_name(kind: &str, upstream: &str) -> String {
    format!("{kind}/{upstream}")
}

/// Reads one delivery inside a transaction; a record that does not decode is corrupt.
fn load(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    id: DeliveryId,
) -> Result<Option<Delivery>, OutboxError> {
    let raw = id_bytes(id);
    let Some(value) = table.get(&raw[..]).map_err(storage)? else {
        return Ok(None);
    };
    decode(id, value.value())
        .map(Some)
        .map_err(|e| OutboxError::Corrupt(format!("delivery {id}: {e}")))
}

fn id_bytes(id: DeliveryId) -> [u8; 16] {
    id.bytes()
}

/// Writes `d` and its index entries (the record is new or its old entries are removed).
fn put(txn: &WriteTransaction, d: &Delivery) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    let mut records = txn.open_table(DELIVERIES).map_err(storage)?;
    records.insert(&raw[..], &encode(d)[..]).map_err(storage)?;
    match d.status {
        Status::Pending => {
            index_insert(txn, "due", &d.upstream, d.next_ms, &raw)?;
            index_insert(txn, "age", &d.upstream, d.queued_ms, &raw)?;
        }
        Status::Dead => index_insert(txn, "dead", &d.upstream, d.queued_ms, &raw)?,
    }
    Ok(())
}

/// Removes `d`'s index entries (and the record itself with `record`).
fn unput(txn: &WriteTransaction, d: &Delivery, record: bool) -> Result<(), OutboxError> {
    let raw = id_bytes(d.id);
    match d.status {
        Status::Pending => {
            index_remove(txn, "due", &d.upstream, d.next_ms, &raw)?;
            index_remove(txn, "age", &d.upstream, d.queued_ms, &raw)?;
        }
        Status::Dead => index_remove(txn, "dead", &d.upstream, d.queued_ms, &raw)?,
    }
    if record {
        let mut records = txn.open_table(DELIVERIES).map_err(storage)?;
        records.remove(&raw[..]).map_err(storage)?;
    }
    Ok(())
}

fn index_insert(
    txn: &WriteTransaction,
    kind: &str,
    upstream: &str,
    at: u64,
    id: &[u8; 16],
) -> Result<(), OutboxError> {
    let name = index_name(kind, upstream);
    let mut table = txn.open_table(Index::new(&name)).map_err(storage)?;
    table.insert((at, &id[..]), ()).map_err(storage)?;
    Ok(())
}

fn index_remove(
    txn: &WriteTransaction,
    kind: &str,
    upstream: &str,
    at: u64,
    id: &[u8; 16],
) -> Result<(), OutboxError> {
    let name = index_name(kind, upstream);
    let mut table = txn.open_table(Index::new(&name)).map_err(storage)?;
    table.remove((at, &id[..])).map_err(storage)?;
    Ok(())
}

/// Applies `f` to the delivery `id` inside the writer's transaction: `f` gets it as it
/// is (`None` if missing) and returns it as it should be (`None`: delete).
fn change_one(
    txn: &WriteTransaction,
    id: DeliveryId,
    f: impl FnOnce(Delivery) -> Option<Delivery>,
) -> Result<u64, OutboxError> {
    let old = {
        let records = txn.open_table(DELIVERIES).map_err(storage)?;
        load(&records, id)?
    };
    let Some(old) = old else {
        return Ok(0);
    };
    unput(txn, &old, true)?;
    if let Some(new) = f(old) {
        put(txn, &new)?;
    }
    Ok(1)
}

/// An index table in a read transaction; `None` when nothing was ever written to it.
fn read_index(
    txn: &ReadTransaction,
    kind: &str,
    upstream: &str,
) -> Result<Option<IndexTable>, OutboxError> {
    let name = index_name(kind, upstream);
    match txn.open_table(Index::new(&name)) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

fn read_records(txn: &ReadTransaction) -> Result<Option<RecordTable>, OutboxError> {
    match txn.open_table(DELIVERIES) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

fn id_of(raw: &[u8]) -> Option<DeliveryId> {
    <[u8; 16]>::try_from(raw).ok().map(DeliveryId::from_bytes)
}

impl EmbeddedOutbox {
    /// Ids in the index `kind/upstream` in key order, with their key time, while `keep`
    /// says so (it sees each and decides whether to go on).
    fn scan(
        &self,
        kind: &str,
        upstream: &str,
        mut keep: impl FnMut(u64, DeliveryId) -> bool,
    ) -> Result<(), OutboxError> {
        let txn = self.read()?;
        let Some(index) = read_index(&txn, kind, upstream)? else {
            return Ok(());
        };
        for entry in index.iter().map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (at, raw) = key.value();
            if let Some(id) = id_of(raw) {
                if !keep(at, id) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn load_many(&self, ids: &[DeliveryId]) -> Result<Vec<Delivery>, OutboxError> {
        let txn = self.read()?;
        let Some(records) = read_records(&txn)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = load(&records, *id)? {
                out.push(d);
            }
        }
        Ok(out)
    }
}

impl Outbox for EmbeddedOutbox {
    async fn enqueue(&self, delivery: NewDelivery) -> Result<bool, OutboxError> {
        let d = Delivery::new(delivery);
        let queued = self
            .write(move |txn| {
                let raw = id_bytes(d.id);
                let exists = txn
                    .open_table(DELIVERIES)
                    .map_err(storage)?
                    .get(&raw[..])
                    .map_err(storage)?
                    .is_some();
                if exists {
                    return Ok(0);
                }
                put(txn, &d)?;
                Ok(1)
            })
            .await?;
        Ok(queued == 1)
    }

    async fn claim(
        &self,
        upstream: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let mut ids = Vec::new();
        {
            let mut claims = self.claims();
            self.scan("due", upstream, |at, id| {
                if at > now_ms || ids.len() >= limit {
                    return false;
                }
                if claims.get(&id).is_none_or(|until| *until <= now_ms) {
                    claims.insert(id, now_ms.saturating_add(lease_ms));
                    ids.push(id);
                }
                true
            })?;
        }
        self.load_many(&ids)
    }

    async fn next_due(&self, upstream: &str) -> Result<Option<u64>, OutboxError> {
        let claims = self.claims().clone();
        let mut next: Option<u64> = None;
        self.scan("due", upstream, |at, id| match claims.get(&id) {
            // Claimed: due again when the claim ends (if it is not settled first).
            Some(until) => {
                next = Some(next.map_or(*until, |n| n.min(*until)));
                true
            }
            None => {
                next = Some(next.map_or(at, |n| n.min(at)));
                false
            }
        })?;
        Ok(next)
    }

    async fn delivered(&self, _upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        let result = self.write(move |txn| change_one(txn, id, |_| None)).await;
        self.unclaim(id);
        result.map(|_| ())
    }

    async fn failed(
        &self,
        _upstream: &str,
        id: DeliveryId,
        failure: Failure,
    ) -> Result<(), OutboxError> {
        let result = self
            .write(move |txn| {
                change_one(txn, id, |mut d| {
                    d.attempts += 1;
                    match failure {
                        Failure::Retry { next_ms, error } => {
                            d.next_ms = next_ms;
                            d.last_error = Some(error);
                        }
                        Failure::Dead { error } => {
                            d.status = Status::Dead;
                            d.last_error = Some(error);
                        }
                    }
                    Some(d)
                })
            })
            .await;
        self.unclaim(id);
        result.map(|_| ())
    }

    async fn release(&self, _upstream: &str, id: DeliveryId) -> Result<(), OutboxError> {
        self.unclaim(id);
        Ok(())
    }

    async fn get(&self, _upstream: &str, id: DeliveryId) -> Result<Option<Delivery>, OutboxError> {
        Ok(self.load_many(&[id])?.pop())
    }

    async fn list(
        &self,
        upstream: &str,
        status: Status,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let kind = match status {
            Status::Pending => "due",
            Status::Dead => "dead",
        };
        let mut ids = Vec::new();
        self.scan(kind, upstream, |_, id| {
            ids.push(id);
            ids.len() < limit
        })?;
        ids.truncate(limit);
        self.load_many(&ids)
    }

    async fn retry(
        &self,
        _upstream: &str,
        id: DeliveryId,
        now_ms: u64,
    ) -> Result<bool, OutboxError> {
        let found = self
            .write(move |txn| {
                change_one(txn, id, |mut d| {
                    d.revive(now_ms);
                    Some(d)
                })
            })
            .await?;
        Ok(found == 1)
    }

    async fn retry_dead(&self, upstream: &str, now_ms: u64) -> Result<u64, OutboxError> {
        let mut ids = Vec::new();
        self.scan("dead", upstream, |_, id| {
            ids.push(id);
            true
        })?;
        self.write(move |txn| {
            let mut n = 0;
            for id in ids {
                n += change_one(txn, id, |mut d| {
                    (d.status == Status::Dead).then(|| {
                        d.revive(now_ms);
                        d
                    })
                })?;
            }
            Ok(n)
        })
        .await
    }

    async fn delete(&self, _upstream: &str, id: DeliveryId) -> Result<bool, OutboxError> {
        let found = self.write(move |txn| change_one(txn, id, |_| None)).await?;
        self.unclaim(id);
        Ok(found == 1)
    }

    async fn counts(&self, upstream: &str) -> Result<Counts, OutboxError> {
        let txn = self.read()?;
        let len = |kind: &str| -> Result<u64, OutboxError> {
            match read_index(&txn, kind, upstream)? {
                Some(t) => t.len().map_err(storage),
                None => Ok(0),
            }
        };
        let oldest = match read_index(&txn, "age", upstream)? {
            Some(t) => t.first().map_err(storage)?.map(|(k, _)| k.value().0),
            None => None,
        };
        Ok(Counts {
            pending: len("due")?,
            dead: len("dead")?,
            oldest_queued_ms: oldest,
        })
    }

    async fn ping(&self) -> Result<(), OutboxError> {
        self.read().map(|_| ())
    }
}
