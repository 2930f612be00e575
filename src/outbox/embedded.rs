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
//! | `queue`        | sequence number (u64)    | id (16 bytes), then [`record::encode`] |
//! | `due:{U}`      | (next attempt ms, seq)   | () — pending, by due time |
//! | `age:{U}`      | (queued ms, seq)         | () — pending, by age     |
//! | `dead:{U}`     | (queued ms, seq)         | () — dead                |
//!
//! One set of index tables per upstream `U`, so counts are a table's length and the
//! oldest pending delivery its first entry.
//!
//! Records are keyed by a sequence number given in queueing order (one more than the
//! highest in the file), not by their id: a delivery's id is a hash, and keyed by it each
//! insert of a group commit would dirty another leaf page of the tree, each one more page
//! to write and sync. In queueing order a commit's inserts land on the last page or two,
//! and deliveries settle roughly in that order too. The id-to-sequence map (for
//! idempotence and the by-id calls) is kept in memory, built from the records at open
//! (24 bytes and a hash slot per delivery) and changed by the writer only once a commit
//! succeeded.
//!
//! This layout replaced an id-keyed `deliveries` table before any release; a file with
//! that table is refused at open rather than silently ignored.
//!
//! Claims are kept in memory only: this file has one process (redb locks it), and a
//! process that dies takes its claims with it, so after a restart every pending delivery
//! is due again (at least once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use redb::ReadTransaction;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::oneshot;

mod queue;
mod tables;
#[cfg(test)]
mod tests;

use tables::Tables;

use super::{DeliveryId, OutboxError};

pub(super) const RECORDS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("queue");
/// The id-keyed table of the layout before this one (never released).
const OLD_RECORDS: &str = "deliveries";

pub(super) type Index<'a> = TableDefinition<'a, (u64, u64), ()>;
pub(super) type IndexTable = redb::ReadOnlyTable<(u64, u64), ()>;
pub(super) type RecordTable = redb::ReadOnlyTable<u64, &'static [u8]>;

/// Which sequence number holds each delivery's record.
pub(super) type Ids = Mutex<HashMap<DeliveryId, u64>>;

/// At most this many changes go into one transaction.
const MAX_BATCH: usize = 4096;
/// After the changes waiting, the writer waits this long for more before it commits, and
/// again while more keep coming (up to [`MAX_LINGER`]): a commit costs an fsync and most of
/// a millisecond of CPU, so the calls answered by the last commit, which come back with
/// their next changes within a few hundred microseconds, are worth waiting for.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
const MAX_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// One change, applied inside the writer's transaction; its number is the answer
/// (a bool as 0 or 1, or a count).
type Change = Box<dyn FnOnce(&mut Tables<'_>) -> Result<u64, OutboxError> + Send>;

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
    /// Claimed deliveries (by sequence number) and when their claim ends. Std locks, here
    /// and in `ids`: held for map updates only, never across an await.
    claims: Mutex<HashMap<u64, u64>>,
    /// Every delivery's sequence number, as committed.
    ids: Arc<Ids>,
    path: PathBuf,
}

pub(super) fn storage(e: impl Into<redb::Error>) -> OutboxError {
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
        Self::with_db(db, file)
    }

    /// An outbox in memory, gone with the process: for `pollgate test`, whose durable
    /// events are queued (and never delivered) like in `serve`.
    pub fn in_memory() -> Result<Self, OutboxError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Self::with_db(db, PathBuf::from("(memory)"))
    }

    fn with_db(db: Database, file: PathBuf) -> Result<Self, OutboxError> {
        let (ids, next_seq) = read_ids(&db, &file)?;
        let ids = Arc::new(Mutex::new(ids));
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let writer_ids = ids.clone();
        std::thread::Builder::new()
            .name("pollgate-outbox".into())
            .spawn(move || write_loop(&writer_db, &rx, &counted, &writer_ids, next_seq))
            .map_err(|e| OutboxError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                writer: Mutex::new(tx),
                claims: Mutex::default(),
                ids,
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
        change: impl FnOnce(&mut Tables<'_>) -> Result<u64, OutboxError> + Send + 'static,
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

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The sequence number holding `id`'s record, if it is committed.
    fn seq_of(&self, id: DeliveryId) -> Option<u64> {
        self.inner
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Ends the claim on what was `seq` (looked up before the change that settled it).
    fn unclaim(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.claims().remove(&seq);
        }
    }
}

/// The id-to-sequence map of the records in `db`, and the next sequence number.
fn read_ids(db: &Database, file: &Path) -> Result<(HashMap<DeliveryId, u64>, u64), OutboxError> {
    let txn = db.begin_read().map_err(storage)?;
    let old = txn
        .list_tables()
        .map_err(storage)?
        .any(|t| t.name() == OLD_RECORDS);
    if old {
        return Err(OutboxError::Unavailable(format!(
            "{} has the outbox layout of an unreleased development build; move it away",
            file.display()
        )));
    }
    let records = match txn.open_table(RECORDS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((HashMap::new(), 0)),
        Err(e) => return Err(storage(e)),
    };
    let mut ids = HashMap::new();
    let mut next = 0;
    for entry in records.iter().map_err(storage)? {
        let (seq, value) = entry.map_err(storage)?;
        let seq = seq.value();
        let id = tables::split(value.value())
            .map(|(id, _)| id)
            .ok_or_else(|| OutboxError::Corrupt(format!("record {seq}: no id")))?;
        ids.insert(id, seq);
        next = seq + 1;
    }
    Ok((ids, next))
}

/// The changes for one transaction: `first`, everything waiting, and what comes while the
/// writer lingers.
fn gather(first: Job, jobs: &mpsc::Receiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    let until = std::time::Instant::now() + MAX_LINGER;
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match jobs.recv_timeout(LINGER.min(left)) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
    }
    batch
}

/// The writer thread: one transaction and one commit for everything waiting.
fn write_loop(
    db: &Database,
    jobs: &mpsc::Receiver<Job>,
    commits: &AtomicU64,
    ids: &Ids,
    mut next_seq: u64,
) {
    while let Ok(first) = jobs.recv() {
        let batch = gather(first, jobs);
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
        let staged = {
            let mut tables = Tables::new(&txn, ids, next_seq);
            for job in batch {
                answers.push(((job.change)(&mut tables), job.done));
            }
            tables.finish()
        };
        // Sequence numbers are never given twice, even when this batch is not committed.
        next_seq = staged.next_seq;
        // A change that failed inside the transaction fails the whole batch: its half-made
        // writes must not be committed. The others' callers see an error too and retry.
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err().cloned());
        let outcome = match failed {
            Some(error) => {
                let _ = txn.abort();
                Err(error)
            }
            None => {
                let n = commits.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1024) {
                    tracing::debug!(commits = n, batch = answers.len(), "outbox group commit");
                }
                let committed = txn.commit().map_err(storage);
                if committed.is_ok() {
                    staged.apply(ids);
                }
                committed
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
